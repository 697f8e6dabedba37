//! The independent client (`tests/independent/client_check.py`, written from docs/protocol.md
//! alone) walks `trackfs serve` and checks every rule of the wire protocol: tokens, 401s, 404s,
//! 206/416/403, unaligned ranges decrypting to the sources, head files, expiry, and v1.1:
//! covers (`/image/`), the rootlist and playlists with base62 ids, ETags and 304s.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::rust_origin::RustOrigin;
use support::{sources, PythonOrigin};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/independent")
        .join(name)
}

/// The sample music plus what v1.1 publishes: a `cover.jpg`, a `Folder.PNG` and three
/// playlists (unicode and `:` in a name, BOM, CRLF, absolute and missing entries, an empty one).
fn music_with_covers_and_playlists() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let music = dir.path().join("music");
    let out = Command::new("python3")
        .arg(script("make_v11_source.py"))
        .arg(sources::music())
        .arg(&music)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "make_v11_source.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, music)
}

/// Runs client_check.py; returns its report (stdout and stderr) after asserting success.
fn check(url: &str, credentials: &Path, source: &Path, extra: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(script("client_check.py"))
        .args(["--origin", url, "--credentials"])
        .arg(credentials)
        .arg("--source")
        .arg(source)
        .args(extra)
        .output()
        .expect("python3 runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the independent client found problems:\n{report}"
    );
    eprintln!("{report}");
    report
}

fn tools_present() -> bool {
    support::require_tool("ffmpeg")
        && support::require_tool("openssl")
        && support::require_tool("python3")
}

#[test]
fn trackfs_serve_passes_the_independent_client() {
    if !tools_present() {
        return;
    }
    let (_dir, music) = music_with_covers_and_playlists();
    let origin = RustOrigin::start(&music, &["--url-ttl", "4", "--token-ttl", "4"]);
    let library = origin.library.to_str().unwrap().to_string();
    // trackfs serve speaks v1.1 and sends ETags: covers, playlists and 304s are required.
    check(
        &origin.url,
        &origin.credentials_file,
        &music,
        &[
            "--library",
            &library,
            "--v11",
            "require",
            "--etags",
            "require",
        ],
    );
}

#[test]
fn the_independent_origin_passes_its_own_client_in_v1_1() {
    // The two halves of the independent implementation agree with each other on v1.1, so a
    // failure against the Rust origin or client points at the Rust side.
    if !tools_present() {
        return;
    }
    let (_dir, music) = music_with_covers_and_playlists();
    let mut origin =
        PythonOrigin::start(&music, &["--protocol", "v1.1", "--etags", "--seed", "11"]);
    origin.set_catalogue(&serde_json::json!({
        "covers": "source", "playlists": "source", "sample_album": false
    }));
    let report = check(
        &origin.url,
        &origin.credentials_file,
        &music,
        &["--v11", "require", "--etags", "require", "--max-wait", "0"],
    );
    for wanted in ["cover ", "image ", "playlist-source ", "rootlist ", "etag "] {
        assert!(
            report.contains(wanted),
            "no {wanted:?} checks ran:\n{report}"
        );
    }
}

#[test]
fn trackfs_serve_etags_follow_a_republish() {
    // docs/protocol.md §8: a strong ETag changes with its answer, the /library one with
    // anything in the library, and an old ETag gets 304 only where nothing changed.
    if !tools_present() {
        return;
    }
    let (dir, music) = music_with_covers_and_playlists();
    let origin = RustOrigin::start(&music, &[]);
    let library = origin.library.to_str().unwrap().to_string();
    let state = dir.path().join("state.json");
    let state = state.to_str().unwrap();
    let strict = ["--v11", "require", "--etags", "require", "--max-wait", "0"];
    let first = ["--library", &library, "--state-out", state];
    check(
        &origin.url,
        &origin.credentials_file,
        &music,
        &[&first[..], &strict].concat(),
    );
    // A track gets new bytes (a new file at its path: the folder holds hard links to the
    // shared samples, so never write through them) and an album folder goes away.
    let track = music.join(sources::TRACKS[1].0);
    std::fs::remove_file(&track).unwrap();
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=f=880:d=2",
            "-c:a",
            "libmp3lame",
        ])
        .arg(&track)
        .status()
        .unwrap();
    assert!(made.success());
    let album = Path::new(sources::TRACKS[3].0).parent().unwrap();
    std::fs::remove_dir_all(music.join(album.parent().unwrap())).unwrap();
    let published = Command::new(support::TRACKFS)
        .arg("publish")
        .arg(&music)
        .arg(&origin.library)
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "publish again: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    let again = [
        "--library",
        &library,
        "--state-in",
        state,
        "--wait-for-change",
        "30",
    ];
    let second = check(
        &origin.url,
        &origin.credentials_file,
        &music,
        &[&again[..], &strict].concat(),
    );
    assert!(second.contains("etag-change "), "{second}");
}
