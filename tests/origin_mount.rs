//! `trackfs publish` → `trackfs serve` → `trackfs mount` of a music folder with cover files,
//! embedded art and a playlist: the mount shows each album's cover with the published bytes and
//! the playlist as an `.m3u8` whose entries open the right tracks, in order.

#[path = "common/origin_fixture.rs"]
mod fixture;
mod support;

use fixture::{embed_cover, make_audio, make_picture};
use std::path::Path;
use support::rust_origin::RustOrigin;
use support::Mount;

fn mp3(path: &Path, hz: u32) {
    // Each track its own tone, so each has its own content.
    make_audio(path, "libmp3lame", &["-af", &format!("asetrate={hz}")]);
}

#[test]
fn covers_and_playlists_published_from_a_folder_show_in_the_mount() {
    if !support::fuse_usable() || !support::require_tool("ffmpeg") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    mp3(&s.join("Art/A/01 One.mp3"), 44100);
    mp3(&s.join("Art/A/02 Two.mp3"), 40000);
    make_picture(&s.join("Art/A/cover.jpg"), 640, 480);
    mp3(&s.join("Art/B/01 Three.mp3"), 36000);
    make_picture(&s.join("Art/B/front.png"), 300, 300);
    let work = tempfile::tempdir().unwrap();
    mp3(&work.path().join("plain.mp3"), 32000);
    make_picture(&work.path().join("art.png"), 200, 200);
    std::fs::create_dir_all(s.join("Art/C")).unwrap();
    embed_cover(
        &work.path().join("plain.mp3"),
        &work.path().join("art.png"),
        &s.join("Art/C/01 Four.mp3"),
    );
    let list = "#EXTM3U\r\nArt/B/01 Three.mp3\r\nArt/A/02 Two.mp3\r\nnot/there.mp3\r\nArt/A/01 One.mp3\r\n";
    std::fs::write(s.join("Road trip.m3u8"), list).unwrap();

    let origin = RustOrigin::start(s, &[]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let m = mount.path();
    let same = |mounted: &Path, source: &Path| {
        let got = std::fs::read(mounted).unwrap_or_else(|e| panic!("{}: {e}", mounted.display()));
        assert!(
            got == std::fs::read(source).unwrap(),
            "{}",
            mounted.display()
        );
    };
    same(&m.join("Art/A/cover.jpg"), &s.join("Art/A/cover.jpg"));
    same(&m.join("Art/B/cover.png"), &s.join("Art/B/front.png"));
    same(&m.join("Art/C/cover.png"), &work.path().join("art.png"));
    assert!(!m.join("Art/A/cover.png").exists());

    let lists: Vec<_> = std::fs::read_dir(m.join("Playlists"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert_eq!(lists[0].file_name().unwrap(), "Road trip.m3u8");
    let text = std::fs::read_to_string(&lists[0]).unwrap();
    let entries: Vec<_> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let sources = ["Art/B/01 Three.mp3", "Art/A/02 Two.mp3", "Art/A/01 One.mp3"];
    assert_eq!(entries.len(), sources.len(), "{text}");
    for (entry, source) in entries.iter().zip(sources) {
        same(&m.join("Playlists").join(entry), &s.join(source));
    }
}
