//! The mount as a music library (issue 17): `cover.jpg`/`cover.png` with the picture's exact
//! bytes, `Playlists/<Name>.m3u8` whose entries open the right tracks, both kept by `cp -r` and
//! `rsync -a` and stable across remounts; a v1 origin mounts with neither; `publish` → `serve`
//! → mount of a folder with covers, embedded art and playlists gives the same; a scan of long
//! tracks with ffprobe fetches at most 1 MiB per track.

mod support;

use serde_json::Value;
use sha2::Digest;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::rust_origin::RustOrigin;
use support::{run, sha256_file, sources, walk_files, Mount, PythonOrigin};

fn v11_origin(extra: &[&str]) -> Option<PythonOrigin> {
    if !support::fuse_usable() || !support::require_tool("ffprobe") {
        return None;
    }
    let mut args = vec!["--protocol", "v1.1"];
    args.extend_from_slice(extra);
    Some(PythonOrigin::start(sources::music(), &args))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The paths a playlist file lists, relative to the mount's root, in order.
fn entries(root: &Path, playlist: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(root.join(playlist)).unwrap();
    assert!(text.starts_with("#EXTM3U\n"), "{playlist:?}: {text}");
    let dir = playlist.parent().unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let mut out = Vec::new();
    for pair in lines.chunks(2) {
        assert!(pair[0].starts_with("#EXTINF:"), "{playlist:?}: {text}");
        let relative = pair[1].strip_prefix("../").expect("relative to Playlists");
        assert!(dir.join(pair[1]).components().count() > 0);
        out.push(PathBuf::from(relative));
    }
    out
}

/// Per album of the manifest: where its cover must be (or `None`), and the source picture.
fn expected_covers(origin: &PythonOrigin) -> Vec<(PathBuf, Option<(String, PathBuf)>)> {
    let albums = origin.manifest["albums"].as_array().unwrap();
    albums
        .iter()
        .map(|a| {
            let dir = Path::new(a["artist"].as_str().unwrap()).join(a["name"].as_str().unwrap());
            let cover = a["cover"].as_object().map(|c| {
                let ext = c["ext"].as_str().unwrap().to_string();
                (ext, PathBuf::from(c["path"].as_str().unwrap()))
            });
            (dir, cover)
        })
        .collect()
}

fn check_covers(origin: &PythonOrigin, root: &Path) {
    let mut seen = (0, 0);
    for (dir, cover) in expected_covers(origin) {
        let pictures: Vec<String> = std::fs::read_dir(root.join(&dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("cover."))
            .collect();
        match cover {
            None => assert!(pictures.is_empty(), "{dir:?} has no picture: {pictures:?}"),
            Some((ext, source)) => {
                let name = format!("cover{ext}");
                assert_eq!(pictures, std::slice::from_ref(&name), "{dir:?}");
                let shown = root.join(&dir).join(&name);
                assert_eq!(
                    std::fs::metadata(&shown).unwrap().len(),
                    std::fs::metadata(&source).unwrap().len()
                );
                assert_eq!(sha256_file(&shown), sha256_file(&source), "{shown:?}");
                match ext.as_str() {
                    ".png" => seen.1 += 1,
                    _ => seen.0 += 1,
                }
            }
        }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "JPEG and PNG covers: {seen:?}");
}

/// Every playlist of the manifest: its file, its tracks in order, each opening with the
/// source's bytes.
fn check_playlists(origin: &PythonOrigin, root: &Path) {
    let tracks = origin.manifest["tracks"].as_array().unwrap();
    let by_gid: HashMap<&str, (PathBuf, &Value)> = origin
        .expected_files()
        .into_iter()
        .zip(tracks)
        .map(|((path, _), t)| (t["track_gid"].as_str().unwrap(), (path, &t["sha256"])))
        .collect();
    let playlists = origin.manifest["playlists"].as_array().unwrap();
    assert!(!playlists.is_empty());
    let mut names: Vec<String> = std::fs::read_dir(root.join("Playlists"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected_names = Vec::new();
    for p in playlists {
        let name = format!("{}.m3u8", p["name"].as_str().unwrap().replace('/', "_"));
        let file = Path::new("Playlists").join(&name);
        let wanted: Vec<&PathBuf> = p["track_gids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| &by_gid[g.as_str().unwrap()].0)
            .collect();
        let listed = entries(root, &file);
        assert_eq!(listed.iter().collect::<Vec<_>>(), wanted, "{name}");
        for path in &listed {
            let (_, sha) = by_gid
                .values()
                .find(|(p, _)| p == path)
                .expect("a listed track");
            assert_eq!(
                sha256_file(&root.join(path)),
                sha.as_str().unwrap(),
                "{path:?}"
            );
        }
        if wanted.is_empty() {
            assert_eq!(std::fs::read(root.join(&file)).unwrap(), b"#EXTM3U\n");
        }
        expected_names.push(name);
    }
    expected_names.sort();
    assert_eq!(names, expected_names);
}

#[test]
fn covers_and_playlists_of_a_v1_1_origin() {
    let Some(origin) = v11_origin(&[]) else {
        return;
    };
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let root = mount.path();
    check_covers(&origin, &root);
    check_playlists(&origin, &root);
    // The unicode, `:` and `/` name, the unknown track, episode and local file left out.
    let road = root.join("Playlists/Road trip ♫: Björk_Été — mix.m3u8");
    assert!(road.is_file(), "{:?}", walk_files(&root.join("Playlists")));
    // ffprobe reads a cover as a picture.
    let (dir, _) = expected_covers(&origin)
        .into_iter()
        .find(|(_, c)| c.as_ref().is_some_and(|(e, _)| e == ".jpg"))
        .unwrap();
    let cover_path = root.join(dir).join("cover.jpg");
    let out = run(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_name,width"])
            .args(["-of", "csv=p=0"])
            .arg(&cover_path),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mjpeg,640");
}

#[test]
fn cp_and_rsync_copy_a_complete_music_folder_stable_across_remounts() {
    let Some(origin) = v11_origin(&[]) else {
        return;
    };
    if !support::require_tool("rsync") {
        return;
    }
    let first = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let copies = tempfile::tempdir().unwrap();
    let (cp, rsync) = (copies.path().join("cp"), copies.path().join("rsync"));
    let source = first.path().join(".");
    let out = run(
        Command::new("cp").arg("-r").arg(&source).arg(&cp),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        Command::new("rsync")
            .args(["-a", "--exclude", ".trackfs"])
            .arg(format!("{}/", first.path().display()))
            .arg(&rsync),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for copy in [&cp, &rsync] {
        check_covers(&origin, copy);
        check_playlists(&origin, copy);
    }
    // Sizes, times and inode numbers of covers and playlists are the same after a remount.
    let stats = |root: &Path| -> Vec<(PathBuf, u64, u64, i64)> {
        walk_files(root)
            .into_iter()
            .filter(|p| !p.starts_with(".trackfs"))
            .map(|p| {
                let m = std::fs::metadata(root.join(&p)).unwrap();
                (p, m.ino(), m.len(), m.mtime())
            })
            .collect()
    };
    let before = stats(&first.path());
    drop(first);
    let second = Mount::start(&origin.url, &origin.credentials_file, &[]);
    assert_eq!(stats(&second.path()), before);
    assert!(before.iter().any(|(p, ..)| p.ends_with("cover.png")));
    assert!(before.iter().any(|(p, ..)| p.starts_with("Playlists")));
}

#[test]
fn old_style_covers_and_an_artist_called_playlists() {
    let Some(mut origin) = v11_origin(&["--cover-field", "cover"]) else {
        return;
    };
    origin.set_catalogue(&serde_json::json!({"sample_artist": "Playlists"}));
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let root = mount.path();
    check_covers(&origin, &root);
    // The artist keeps its folder; the playlists' folder gets a suffix.
    assert!(root.join("Playlists/Silence (no cover)").is_dir());
    let playlists = root.join("Playlists (2)");
    let road = playlists.join("Road trip ♫: Björk_Été — mix.m3u8");
    let text = std::fs::read_to_string(road).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(playlists.join(line).is_file(), "{line} resolves");
    }
}

#[test]
fn a_v1_origin_mounts_without_covers_or_playlists() {
    if !support::fuse_usable() {
        return;
    }
    let origin = PythonOrigin::start(sources::music(), &[]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let files = walk_files(&mount.path());
    assert!(!mount.path().join("Playlists").exists());
    assert!(files
        .iter()
        .all(|f| !f.to_string_lossy().contains("cover.")));
    assert_eq!(
        files.iter().filter(|f| !f.starts_with(".trackfs")).count(),
        origin.expected_files().len()
    );
}

/// `make_v11_source.py`'s folder plus an album whose only picture is embedded in its MP3.
fn publishable_folder(dir: &Path) -> (PathBuf, Vec<u8>) {
    let source = dir.join("source");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/make_v11_source.py");
    let out = run(
        Command::new("python3")
            .arg(script)
            .arg(sources::music())
            .arg(&source),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let art = dir.join("art.png");
    let out = run(
        Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "color=c=red:s=64x48:d=1",
            ])
            .args(["-frames:v", "1"])
            .arg(&art),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let album = source.join("Embedded/Art Inside");
    std::fs::create_dir_all(&album).unwrap();
    let out = run(
        Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i", "sine=f=200:d=3", "-i"])
            .arg(&art)
            .args([
                "-map",
                "0",
                "-map",
                "1",
                "-c:a",
                "libmp3lame",
                "-c:v",
                "copy",
            ])
            .args([
                "-id3v2_version",
                "3",
                "-metadata:s:v",
                "comment=Cover (front)",
            ])
            .arg(album.join("01 Inside.mp3")),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (source, std::fs::read(&art).unwrap())
}

#[test]
fn publish_serve_and_mount_a_folder_with_covers_embedded_art_and_playlists() {
    if !support::fuse_usable() || !support::require_tool("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (source, embedded) = publishable_folder(dir.path());
    let origin = RustOrigin::start(&source, &[]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let root = mount.path();
    let covers: Vec<PathBuf> = walk_files(&root)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("/cover."))
        .collect();
    // The first album (sorted) got cover.jpg, the second Folder.PNG: the same bytes.
    let shown = |name: &str| {
        let found = covers
            .iter()
            .find(|c| c.ends_with(name) && !c.starts_with("Embedded"));
        root.join(found.unwrap_or_else(|| panic!("no {name} in {covers:?}")))
    };
    let (jpg, png) = (shown("cover.jpg"), shown("cover.png"));
    assert!(std::fs::read(&jpg)
        .unwrap()
        .starts_with(&[0xff, 0xd8, 0xff]));
    let sources: Vec<PathBuf> = walk_files(&source)
        .into_iter()
        .filter(|f| {
            let n = f.file_name().unwrap().to_string_lossy().to_lowercase();
            n == "cover.jpg" || n == "folder.png"
        })
        .collect();
    let wanted: Vec<String> = sources
        .iter()
        .map(|s| sha256_file(&source.join(s)))
        .collect();
    assert!(
        wanted.contains(&sha256_file(&jpg)),
        "cover.jpg is the source's"
    );
    assert!(
        wanted.contains(&sha256_file(&png)),
        "cover.png is Folder.PNG's"
    );
    let inside = root.join("Embedded/Art Inside/cover.png");
    assert_eq!(
        sha256_file(&inside),
        sha256(&embedded),
        "the embedded picture"
    );
    // Playlists: every entry opens a track of the mount with its source's bytes.
    let mut names: Vec<String> = std::fs::read_dir(root.join("Playlists"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Empty.m3u8",
            "Everything.m3u8",
            "Road trip ♫ ünïcode: mix.m3u8"
        ]
    );
    assert_eq!(
        std::fs::read(root.join("Playlists/Empty.m3u8")).unwrap(),
        b"#EXTM3U\n"
    );
    let everything = entries(&root, Path::new("Playlists/Everything.m3u8"));
    let road = entries(&root, Path::new("Playlists/Road trip ♫ ünïcode: mix.m3u8"));
    assert_eq!(road.len(), 3, "the missing entry is left out: {road:?}");
    let tracks = everything.len();
    assert_eq!(tracks, sources::TRACKS.len(), "{everything:?}");
    assert_eq!(road[0], everything[0], "the last track first");
    assert_eq!(road[1], everything[tracks - 1], "then the first");
    let shown_sums: Vec<String> = everything
        .iter()
        .map(|p| sha256_file(&root.join(p)))
        .collect();
    let source_sums: Vec<String> = sources::TRACKS
        .iter()
        .map(|(p, _)| sha256_file(&sources::music().join(p)))
        .collect();
    for sum in &shown_sums {
        assert!(
            source_sums.contains(sum),
            "every entry opens a source track"
        );
    }
}

#[test]
fn an_ffprobe_scan_of_long_tracks_fetches_at_most_1_mib_per_track() {
    if !support::fuse_usable() || !support::require_tool("ffprobe") {
        return;
    }
    let origin = PythonOrigin::start(&sources::long_tracks(), &[]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let files = origin.expected_files();
    for (path, _) in &files {
        let out = run(
            Command::new("ffprobe")
                .args(["-v", "error", "-show_format", "-show_streams"])
                .arg(mount.path().join(path)),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let duration: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("duration=")?.parse().ok())
            .expect("a duration");
        assert!((duration - 300.0).abs() < 1.0, "{path:?}: {duration}");
    }
    let fetched = mount.stat("bytes_fetched");
    let per_track = fetched / files.len() as u64;
    assert!(
        per_track <= 1 << 20,
        "{per_track} bytes per track fetched ({fetched} for {} tracks)",
        files.len()
    );
}
