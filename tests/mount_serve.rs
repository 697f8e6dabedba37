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
