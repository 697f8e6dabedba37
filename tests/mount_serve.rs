//! Real FUSE mounts of `trackfs publish` + `trackfs serve`, and of `trackfs demo`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::rust_origin::RustOrigin;
use support::{sources, Mount};

/// The mount's expected path for a source `Artist/Album/NN Title.ext` (or `D-NN Title.ext`).
fn mounted_name(relative: &str) -> String {
    let path = Path::new(relative);
    let file = path.file_name().unwrap().to_str().unwrap();
    let (number, title) = file.split_once(' ').unwrap();
    format!("{}/{number} - {title}", path.parent().unwrap().display())
}

#[test]
fn every_published_track_reads_back_exactly() {
    if !support::fuse_usable() || !support::require_tool("ffmpeg") {
        return;
    }
    let origin = RustOrigin::start(sources::music(), &[]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    for (relative, _) in sources::TRACKS {
        let source = sources::music().join(relative);
        let path = mount.path().join(mounted_name(relative));
        assert_eq!(
            std::fs::metadata(&path).map(|m| m.len()).ok(),
            Some(std::fs::metadata(&source).unwrap().len()),
            "{}",
            path.display()
        );
        assert_eq!(
            support::sha256_file(&path),
            support::sha256_file(&source),
            "{}",
            path.display()
        );
    }
}

#[test]
fn the_demo_mounts_a_playable_library_and_cleans_up_on_ctrl_c() {
    if !support::fuse_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let point = dir.path().join("demo");
    let mut child = std::process::Command::new(support::TRACKFS)
        .arg("demo")
        .arg(&point)
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !support::is_mounted(&point) {
        assert!(child.try_wait().unwrap().is_none(), "demo exited early");
        assert!(Instant::now() < deadline, "demo did not mount");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tracks: Vec<_> = support::walk_files(&point)
        .into_iter()
        .filter(|p| !p.starts_with(".trackfs"))
        .map(|p| point.join(p))
        .collect();
    assert!(tracks
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "ogg")));
    assert!(tracks
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "mp3")));
    for track in &tracks {
        let data = std::fs::read(track).unwrap();
        assert!(
            data.starts_with(b"OggS")
                || data.starts_with(b"ID3")
                || data.starts_with(b"fLaC")
                || data[0] == 0xff,
            "{}",
            track.display()
        );
    }
    if support::which("ffmpeg") {
        for track in &tracks {
            let ok = std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-i"])
                .arg(track)
                .args(["-f", "null", "-"])
                .status()
                .unwrap();
            assert!(ok.success(), "ffmpeg could not decode {}", track.display());
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "demo exit status {status}");
    assert!(!support::is_mounted(&point));
    assert!(
        !point.exists(),
        "the demo removes the mountpoint it created"
    );
}

#[test]
fn an_unmount_from_outside_ends_the_mount_process_cleanly() {
    if !support::fuse_usable() || !support::require_tool("ffmpeg") {
        return;
    }
    let origin = RustOrigin::start(sources::music(), &[]);
    let mut mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let status = std::process::Command::new("umount")
        .arg(mount.path())
        .status()
        .unwrap();
    assert!(status.success(), "umount failed");
    let exit = mount
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("trackfs exits once its mount is gone");
    assert!(exit.success(), "exit {exit}:\n{}", mount.log_text());
    mount.assert_logged("unmounted");
}

#[test]
fn trackfs_stats_prints_a_readable_table() {
    if !support::fuse_usable() || !support::require_tool("ffmpeg") {
        return;
    }
    let origin = RustOrigin::start(sources::music(), &[]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let (relative, _) = sources::TRACKS[0];
    std::fs::read(mount.path().join(mounted_name(relative))).unwrap();
    let out = std::process::Command::new(support::TRACKFS)
        .arg("stats")
        .arg(mount.path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in ["cache hit rate", "fetched from CDN", "retries", "errors"] {
        assert!(table.contains(row), "no {row:?} in:\n{table}");
    }
    // `trackfs stats | head -1` after head has gone: no panic, no error.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(support::TRACKFS)
        .arg("stats")
        .arg(mount.path())
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    let out = std::process::Command::new(support::TRACKFS)
        .arg("stats")
        .arg("/")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is trackfs mounted there?"));
}

#[test]
fn every_command_explains_itself_with_examples() {
    for args in [
        &["--help"][..],
        &["mount", "--help"],
        &["publish", "--help"],
        &["serve", "--help"],
        &["demo", "--help"],
        &["stats", "--help"],
    ] {
        let out = std::process::Command::new(support::TRACKFS)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Example"),
            "{args:?}:\n{text}"
        );
    }
}

#[test]
fn allow_other_lets_another_user_read() {
    if !support::fuse_usable()
        || !support::require_tool("ffmpeg")
        || unsafe { libc::geteuid() } != 0
    {
        return;
    }
    let origin = RustOrigin::start(sources::music(), &[]);
    let private = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let shared = Mount::start(&origin.url, &origin.credentials_file, &["--allow-other"]);
    let (relative, _) = sources::TRACKS[1];
    let name = mounted_name(relative);
    // `nobody` may not even look into a private mount, but reads a shared one.
    let as_nobody = |path: std::path::PathBuf| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(path)
            .output()
            .unwrap()
    };
    if !support::which("setpriv") {
        return;
    }
    // The temp dirs holding the mountpoints must be traversable by `nobody`.
    for m in [&private, &shared] {
        let parent = m.path().parent().unwrap().to_path_buf();
        std::fs::set_permissions(&parent, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    assert!(!as_nobody(private.path().join(&name)).status.success());
    let out = as_nobody(shared.path().join(&name));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        std::fs::read(sources::music().join(relative)).unwrap()
    );
    // A shared mount goes through fusermount3's auto-unmount watcher; SIGTERM still unmounts
    // it and exits, within the grace period (the watcher alone would leave it mounted).
    let mut shared = shared;
    let point = shared.path();
    let status = shared.terminate().expect("trackfs exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}: {}",
        shared.log_text()
    );
    assert!(!support::is_mounted(&point), "still mounted after SIGTERM");
}

#[test]
fn the_head_file_answers_the_start_of_a_file_whose_blocks_are_gone() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    if !support::fuse_usable() || !support::require_tool("ffmpeg") {
        return;
    }
    let origin = RustOrigin::start(sources::music(), &[]);
    let mount = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--cache-size", "1MiB"],
    );
    let (relative, _) = sources::TRACKS[2];
    let source = std::fs::read(sources::music().join(relative)).unwrap();
    let path = mount.path().join(mounted_name(relative));
    // Read through: the blocks a sequential reader passes leave the (tiny) cache.
    assert!(std::fs::read(&path).unwrap() == source);
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: a valid descriptor; drops the kernel's clean cached pages of this file.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let before = mount.stat("head_hits");
    let mut buf = vec![0u8; 4096];
    assert_eq!(file.read_at(&mut buf, 8192).unwrap(), 4096);
    assert_eq!(&buf[..], &source[8192..8192 + 4096]);
    assert!(
        mount.stat("head_hits") > before,
        "the start came from the head file"
    );
}
