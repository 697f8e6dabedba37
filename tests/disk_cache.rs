//! The disk cache through real FUSE mounts of `trackfs publish` + `trackfs serve` (issue 15):
//! what a mount read is there for the next one, also offline; nothing on disk is believed
//! unchecked; plaintext and keys never reach it; the bound, a full disk, the lock, the demo.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::disk::{picture, Serve, Tmpfs};
use support::fuse_and_ffmpeg as usable;
use support::rust_origin::RustOrigin;
use support::{copy_dir, sources, wait_for, Mount};

/// The mount's path for a source `Artist/Album/NN Title.ext` (or `D-NN Title.ext`).
fn mounted_name(relative: &str) -> String {
    let path = Path::new(relative);
    let file = path.file_name().unwrap().to_str().unwrap();
    let (number, title) = file.split_once(' ').unwrap();
    format!("{}/{number} - {title}", path.parent().unwrap().display())
}

fn cache_flag(dir: &Path) -> Vec<String> {
    vec!["--disk-cache".into(), dir.display().to_string()]
}

fn args(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// Reads every track and checks it against its source.
fn read_all_exactly(mount: &Mount) {
    read_exactly(mount, sources::TRACKS);
}

fn read_exactly(mount: &Mount, tracks: &[(&str, &str)]) {
    for (relative, _) in tracks {
        let path = mount.path().join(mounted_name(relative));
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let source = std::fs::read(sources::music().join(relative)).unwrap();
        assert!(data == source, "{} differs from its source", path.display());
    }
}

/// Flips one byte in the middle of every `step`-th stored piece under `dir`.
fn flip_pieces(dir: &Path, step: usize) -> usize {
    let pieces: Vec<PathBuf> = support::walk_files(dir)
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "data"))
        .step_by(step)
        .collect();
    for piece in &pieces {
        let path = dir.join(piece);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
    }
    pieces.len()
}

/// Every regular file under `dir`, with its bytes.
fn cache_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    support::walk_files(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(dir.join(&p)).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Bytes of the stored pieces (`data/`) under `dir`.
fn stored_bytes(dir: &Path) -> u64 {
    cache_files(dir)
        .iter()
        .filter(|(p, _)| p.components().any(|c| c.as_os_str() == "data"))
        .map(|(_, b)| b.len() as u64)
        .sum()
}

#[test]
fn what_was_read_reads_again_offline_with_no_request_and_no_secret_on_disk() {
    if !usable() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let flags = cache_flag(cache.path());
    let origin = RustOrigin::start(sources::music(), &[]);
    let credentials = tempfile::tempdir().unwrap();
    let creds = credentials.path().join("credentials");
    std::fs::copy(&origin.credentials_file, &creds).unwrap();
    let keys = std::fs::read_to_string(origin.library.join("keys")).unwrap();
    let (unread, read) = sources::TRACKS.split_last().unwrap();
    {
        let mount = Mount::start(&origin.url, &creds, &args(&flags));
        read_exactly(&mount, read);
        assert!(mount.stat("disk_bytes_written") > 0);
    }
    let library = tempfile::tempdir().unwrap();
    copy_dir(&origin.library, library.path());
    let url = origin.url.clone();
    drop(origin);
    let mount = Mount::start(&url, &creds, &args(&flags));
    mount.assert_logged("cannot be reached");
    read_exactly(&mount, read);
    assert_eq!(mount.stat("cdn_requests"), 0);
    assert!(mount.stat("disk_hits") > 0);
    // Not cached and no origin: EIO (at once: the mount knows the origin is gone).
    let unread_path = mount.path().join(mounted_name(unread.0));
    let error = std::fs::read(&unread_path).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    // The origin comes back on its address: the mount notices and reads from it again.
    let _back = Serve::start(library.path(), url.trim_start_matches("http://"));
    let data = wait_for(
        Duration::from_secs(30),
        "a read with the origin back",
        || std::fs::read(&unread_path).ok(),
    );
    assert!(data == std::fs::read(sources::music().join(unread.0)).unwrap());
    drop(mount);

    // Nothing in the cache directory decrypts anything: no plaintext window, no key.
    let files = cache_files(cache.path());
    for (relative, _) in sources::TRACKS {
        let source = std::fs::read(sources::music().join(relative)).unwrap();
        for at in [source.len() / 3, source.len() / 2, source.len() - 64] {
            let window = &source[at..at + 48];
            for (path, bytes) in &files {
                assert!(
                    !bytes.windows(48).any(|w| w == window),
                    "plaintext of {relative} in {}",
                    path.display()
                );
            }
        }
    }
    for line in keys.lines() {
        let Some(key_hex) = line.split_whitespace().nth(1) else {
            continue;
        };
        let key = hex::decode(key_hex).unwrap();
        for (path, bytes) in &files {
            let text = String::from_utf8_lossy(bytes).to_lowercase();
            assert!(
                !text.contains(key_hex),
                "a key in hex in {}",
                path.display()
            );
            assert!(
                !bytes.windows(16).any(|w| w == key),
                "a raw key in {}",
                path.display()
            );
        }
    }
}

#[test]
fn flipped_bytes_on_disk_are_fetched_again_online_and_never_served_offline() {
    if !usable() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let flags = cache_flag(cache.path());
    let origin = RustOrigin::start(sources::music(), &[]);
    let creds = tempfile::tempdir().unwrap();
    let creds = creds.path().join("credentials");
    std::fs::copy(&origin.credentials_file, &creds).unwrap();
    drop(Mount::start(&origin.url, &creds, &args(&flags)).tap(read_all_exactly));
    assert!(flip_pieces(cache.path(), 1) > 0);
    let mount = Mount::start(&origin.url, &creds, &args(&flags));
    read_all_exactly(&mount);
    assert!(mount.stat("disk_checksum_failures") > 0);
    assert!(mount.stat("cdn_requests") > 0);
    drop(mount);
    // Offline, with every other piece damaged: exact bytes or EIO, never others.
    assert!(flip_pieces(cache.path(), 2) > 0);
    let url = origin.url.clone();
    drop(origin);
    let mount = Mount::start(&url, &creds, &args(&flags));
    let mut exact = 0;
    for (relative, _) in sources::TRACKS {
        let path = mount.path().join(mounted_name(relative));
        match std::fs::read(&path) {
            Ok(data) => {
                assert!(data == std::fs::read(sources::music().join(relative)).unwrap());
                exact += 1;
            }
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{}: {e}", path.display()),
        }
    }
    assert!(mount.stat("disk_checksum_failures") > 0);
    eprintln!("{exact} of {} tracks exact offline", sources::TRACKS.len());
}

#[test]
fn a_mount_killed_mid_read_leaves_a_cache_that_reads_exactly() {
    if !usable() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let flags = cache_flag(cache.path());
    let origin = RustOrigin::start(big_music(), &[]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &args(&flags));
    let point = mount.path();
    let reader = std::thread::spawn(move || {
        for file in support::walk_files(&point) {
            let _ = std::fs::read(point.join(file));
        }
    });
    wait_for(Duration::from_secs(60), "the first bytes written", || {
        (mount.stat("disk_bytes_written") > 0).then_some(())
    });
    // SAFETY: a plain kill(2) of the mount's own child process.
    unsafe { libc::kill(mount.pid() as i32, libc::SIGKILL) };
    let _ = reader.join();
    drop(mount);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &args(&flags));
    for file in big_tracks() {
        let path = mount.path().join(big_mounted_name(&file));
        assert!(std::fs::read(&path).unwrap() == std::fs::read(&file).unwrap());
    }
}

#[test]
fn the_size_bound_holds_after_reading_three_times_as_much() {
    if !usable() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let mut flags = cache_flag(cache.path());
    flags.extend(["--disk-cache-size".into(), "3MiB".into()]);
    let origin = RustOrigin::start(big_music(), &[]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &args(&flags));
    let mut read = 0;
    for file in big_tracks() {
        let path = mount.path().join(big_mounted_name(&file));
        read += std::fs::read(&path).unwrap().len();
    }
    assert!(read >= 9_000_000, "read only {read} bytes");
    drop(mount);
    let stored = stored_bytes(cache.path());
    assert!(stored > 0 && stored <= 3 << 20, "{stored} bytes stored");
}

#[test]
fn a_full_disk_still_gives_exact_bytes_from_the_network() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(dir.path(), "512k");
    let flags = cache_flag(dir.path());
    let origin = RustOrigin::start(sources::music(), &[]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &args(&flags));
    read_all_exactly(&mount);
    mount.assert_logged("cannot write");
    drop(mount);
}

#[test]
fn a_second_mount_on_one_cache_directory_is_told_who_holds_it() {
    if !usable() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let flags = cache_flag(cache.path());
    let origin = RustOrigin::start(sources::music(), &[]);
    let first = Mount::start(&origin.url, &origin.credentials_file, &args(&flags));
    let Err(log) = Mount::try_start(&origin.url, &origin.credentials_file, &args(&flags)) else {
        panic!("a second mount on the same cache directory started");
    };
    let pid = format!("pid {}", first.pid());
    assert!(
        log.contains("in use by another trackfs mount") && log.contains(&pid),
        "{log}"
    );
    // Once the first is gone, the directory is free.
    drop(first);
    Mount::start(&origin.url, &origin.credentials_file, &args(&flags));
}

#[test]
fn the_demo_leaves_no_cache_directory_behind() {
    if !support::fuse_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (tmp, xdg, point) = (
        dir.path().join("tmp"),
        dir.path().join("xdg"),
        dir.path().join("m"),
    );
    std::fs::create_dir(&tmp).unwrap();
    let mut child = std::process::Command::new(support::TRACKFS)
        .arg("demo")
        .arg(&point)
        .env("TMPDIR", &tmp)
        .env("XDG_CACHE_HOME", &xdg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "the demo mounted", || {
        assert!(child.try_wait().unwrap().is_none(), "demo exited early");
        support::is_mounted(&point).then_some(())
    });
    for file in support::walk_files(&point) {
        std::fs::read(point.join(file)).unwrap();
    }
    let cached = support::walk_files(&tmp);
    assert!(
        cached
            .iter()
            .any(|p| p.to_string_lossy().contains("/data/")),
        "{cached:?}"
    );
    let status = support::terminate(&mut child, Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "left in TMPDIR"
    );
    assert!(!xdg.exists(), "the demo used the user's cache directory");
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}

impl Tap for Mount {}

/// Three long FLAC tracks of noise (about 10 MB in all), made once per target folder.
fn big_music() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("big-music-v1");
        if dir.exists() {
            return dir;
        }
        let building = dir.with_extension(format!("building-{}", std::process::id()));
        let album = building.join("Noise").join("Long");
        std::fs::create_dir_all(&album).unwrap();
        for n in 1..=3 {
            let status = std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
                .arg(format!("anoisesrc=d=30:c=pink:r=44100:a=0.5:s={n}"))
                .args(["-ac", "2", "-c:a", "flac"])
                .arg(album.join(format!("0{n} Noise {n}.flac")))
                .status()
                .unwrap();
            assert!(status.success());
        }
        if std::fs::rename(&building, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
        dir
    })
}

fn big_tracks() -> Vec<PathBuf> {
    let dir = big_music();
    support::walk_files(dir)
        .into_iter()
        .map(|p| dir.join(p))
        .collect()
}

fn big_mounted_name(source: &Path) -> String {
    let relative = source.strip_prefix(big_music()).unwrap();
    mounted_name(relative.to_str().unwrap())
}

#[test]
fn a_pinned_album_survives_eviction_pressure_and_plays_offline() {
    if !usable() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    copy_dir(sources::music(), source.path());
    copy_dir(big_music(), source.path());
    let cache = tempfile::tempdir().unwrap();
    let mut flags = cache_flag(cache.path());
    flags.extend(["--disk-cache-size".into(), "3MiB".into()]);
    let origin = RustOrigin::start(source.path(), &[]);
    let creds = tempfile::tempdir().unwrap();
    let creds = creds.path().join("credentials");
    std::fs::copy(&origin.credentials_file, &creds).unwrap();
    let album: Vec<_> = sources::TRACKS
        .iter()
        .filter(|(r, _)| r.starts_with("Björk/"))
        .collect();
    let album_dir = Path::new(album[0].0).parent().unwrap();
    let mount = Mount::start(&origin.url, &creds, &args(&flags));
    let out = support::run(
        std::process::Command::new(support::TRACKFS)
            .arg("pin")
            .arg(mount.path().join(album_dir)),
        Duration::from_secs(120),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("pinned {} track(s)", album.len())),
        "{said}"
    );
    // Pressure: three times the bound read through other albums.
    for file in big_tracks() {
        std::fs::read(mount.path().join(big_mounted_name(&file))).unwrap();
    }
    let out = support::run(
        std::process::Command::new(support::TRACKFS)
            .arg("cache")
            .arg(mount.path()),
        Duration::from_secs(30),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = report
        .lines()
        .find(|l| l.contains("Vespertine"))
        .unwrap_or_default();
    assert!(
        line.contains("100.0 %") && line.contains("(pinned)"),
        "{report}"
    );
    drop(mount);
    let url = origin.url.clone();
    drop(origin);
    let mount = Mount::start(&url, &creds, &args(&flags));
    mount.assert_logged("cannot be reached");
    for (relative, _) in &album {
        let data = std::fs::read(mount.path().join(mounted_name(relative))).unwrap();
        assert!(data == std::fs::read(sources::music().join(relative)).unwrap());
    }
    assert_eq!(mount.stat("cdn_requests"), 0);
    // Unpinned, the album may go: the bound holds again.
    let out = support::run(
        std::process::Command::new(support::TRACKFS)
            .arg("unpin")
            .arg(mount.path().join(album_dir)),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(mount);
    assert!(stored_bytes(cache.path()) <= 3 << 20);
}

/// The stored pieces of the picture whose bytes are `bytes` (its file id: the name `publish`
/// stored it under in the library's `images/`).
fn picture_pieces(library: &Path, cache: &Path, bytes: &[u8]) -> Vec<PathBuf> {
    let images = library.join("images");
    let id = support::walk_files(&images)
        .into_iter()
        .find(|p| std::fs::read(images.join(p)).unwrap() == bytes)
        .expect("the picture in the library")
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let pieces: Vec<PathBuf> = support::walk_files(cache)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&id))
        .map(|p| cache.join(p))
        .collect();
    assert!(!pieces.is_empty(), "picture {id} not in the disk cache");
    pieces
}

#[test]
fn offline_the_tree_keeps_its_covers_and_playlists() {
    if !usable() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    copy_dir(sources::music(), source.path());
    let (bjork, suite) = (
        Path::new(sources::TRACKS[0].0).parent().unwrap(),
        Path::new(sources::TRACKS[3].0).parent().unwrap(),
    );
    picture(&source.path().join(bjork).join("cover.jpg"), "red");
    picture(&source.path().join(suite).join("cover.png"), "blue");
    let entries: Vec<&str> = sources::TRACKS.iter().take(2).map(|(r, _)| *r).collect();
    std::fs::write(source.path().join("Mix.m3u8"), entries.join("\n") + "\n").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let flags = cache_flag(cache.path());
    let origin = RustOrigin::start(source.path(), &[]);
    let creds = tempfile::tempdir().unwrap();
    let creds = creds.path().join("credentials");
    std::fs::copy(&origin.credentials_file, &creds).unwrap();
    let (jpg, png) = (bjork.join("cover.jpg"), suite.join("cover.png"));
    let (online_jpg, online_mix) = {
        let mount = Mount::start(&origin.url, &creds, &args(&flags));
        let mix = std::fs::read_to_string(mount.path().join("Playlists/Mix.m3u8")).unwrap();
        let jpg = std::fs::read(mount.path().join(&jpg)).unwrap();
        assert!(std::fs::metadata(mount.path().join(&png)).is_ok());
        (jpg, mix)
    };
    assert!(online_jpg == std::fs::read(source.path().join(&jpg)).unwrap());
    assert_eq!(
        online_mix.lines().filter(|l| l.starts_with("../")).count(),
        2
    );
    // One picture leaves the disk cache (evicted, say): offline, its album shows no cover
    // rather than one that fails to read.
    let png_bytes = std::fs::read(source.path().join(&png)).unwrap();
    for piece in picture_pieces(&origin.library, cache.path(), &png_bytes) {
        std::fs::remove_file(piece).unwrap();
    }
    let url = origin.url.clone();
    drop(origin);

    let mount = Mount::start(&url, &creds, &args(&flags));
    mount.assert_logged("cannot be reached");
    let mix = std::fs::read_to_string(mount.path().join("Playlists/Mix.m3u8")).unwrap();
    assert_eq!(mix, online_mix);
    assert!(std::fs::read(mount.path().join(&jpg)).unwrap() == online_jpg);
    let suite_names: Vec<_> = std::fs::read_dir(mount.path().join(suite))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !suite_names.iter().any(|n| n.starts_with("cover.")),
        "{suite_names:?}"
    );
    assert_eq!(mount.stat("cdn_requests"), 0);
}

#[test]
fn a_damaged_or_newer_snapshot_is_one_warning_and_a_cold_start() {
    if !usable() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let flags = cache_flag(cache.path());
    let origin = RustOrigin::start(sources::music(), &[]);
    drop(Mount::start(
        &origin.url,
        &origin.credentials_file,
        &args(&flags),
    ));
    let snapshot = support::walk_files(cache.path())
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "catalogue"))
        .map(|p| cache.path().join(p))
        .expect("a snapshot after the first mount");
    let good = std::fs::read(&snapshot).unwrap();
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    let newer = b"trackfs-catalogue 99 00000000 0\n".to_vec();
    for (bytes, said) in [(damaged, "damaged"), (newer, "version 99")] {
        std::fs::write(&snapshot, bytes).unwrap();
        let mount = Mount::start(&origin.url, &origin.credentials_file, &args(&flags));
        mount.assert_logged(said);
        read_all_exactly(&mount);
        drop(mount);
        // Replaced by a good one.
        assert!(std::fs::read(&snapshot)
            .unwrap()
            .starts_with(b"trackfs-catalogue 3 "));
    }
}
