//! A read waiting on one file's stalled CDN fetch holds up no other file: reads that must wait
//! are answered from tokio tasks, not on the kernel's request threads, so however few of
//! those a mount runs (`fs::fuse::spawn`), another file's reads go on.

mod support;

use prost::Message;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use support::liar::{Answer, Liar, Request};
use trackfs::protocol::crypto::{apply_keystream, AudioKey};
use trackfs::protocol::proto::{library, metadata};

const KEY: [u8; 16] = [
    0x11, 0x27, 0x3c, 0x99, 0x01, 0xfe, 0x42, 0x66, 0x88, 0x13, 0x37, 0xab, 0xcd, 0xef, 0x10, 0x20,
];
/// Track gids and their files: the first file's CDN ranges past its first block stall.
const TRACKS: [(u8, u8, &str); 2] = [(2, 3, "Stuck"), (4, 5, "Free")];

fn plain(seed: u32) -> Vec<u8> {
    let mut v = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    v.extend((0..900_000u32).map(|i| ((i + seed) % 241) as u8));
    v
}

fn origin() -> Liar {
    let cipher = |seed| {
        let mut c = plain(seed);
        apply_keystream(&AudioKey(KEY), 0, &mut c);
        c
    };
    let files = Arc::new([cipher(0), cipher(1)]);
    Liar::start(move |base: &str, r: &Request| {
        let p = r.path.as_str();
        if p == "/keymaster/token" {
            return Answer::ok(r#"{"accessToken":"t","tokenType":"Bearer","expiresIn":3600}"#);
        }
        if p == "/library" {
            let album_gid = vec![vec![1; 16]];
            return Answer::ok(library::Library { album_gid }.encode_to_vec());
        }
        if p.starts_with("/metadata/4/album/") {
            let gids: Vec<u8> = TRACKS.iter().map(|(gid, _, _)| *gid).collect();
            return support::liar::album_b(&gids);
        }
        if let Some(gid) = p.strip_prefix("/metadata/4/track/") {
            let Some((number, (gid, file, name))) = TRACKS
                .iter()
                .enumerate()
                .find(|(_, (g, _, _))| hex::encode([*g; 16]) == gid)
            else {
                return Answer::status(404);
            };
            let track = metadata::Track {
                gid: Some(vec![*gid; 16]),
                name: Some((*name).into()),
                number: Some(number as i32 + 1),
                file: vec![metadata::AudioFile {
                    file_id: Some(vec![*file; 20]),
                    format: Some(4),
                }],
                ..Default::default()
            };
            return Answer::ok(track.encode_to_vec());
        }
        if let Some(file) = p.strip_prefix("/storage-resolve/files/audio/interactive/") {
            return Answer::resolved(format!("{base}/audio/{file}"));
        }
        if p.starts_with("/audiokey/") {
            return Answer::ok(KEY.to_vec());
        }
        if let Some(file) = p.strip_prefix("/audio/") {
            let index = TRACKS
                .iter()
                .position(|(_, f, _)| hex::encode([*f; 20]) == file);
            let Some(index) = index else {
                return Answer::status(404);
            };
            if index == 0 && r.range.is_some_and(|(first, _)| first > 0) {
                std::thread::sleep(Duration::from_secs(60));
            }
            return Answer::ranged(&files[index], r.range);
        }
        Answer::status(404)
    })
}

/// The whole file, read through trackfs: its pages are dropped from the kernel's cache first.
fn read_uncached(path: &std::path::Path) -> Vec<u8> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut file = std::fs::File::open(path).unwrap();
    // SAFETY: a valid open descriptor; fadvise only drops clean cached pages.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn a_read_stuck_on_one_files_fetch_holds_up_no_other_file() {
    if !support::fuse_usable() {
        return;
    }
    let origin = origin();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    support::write_private(&creds, "user:password\n");
    let mount = support::Mount::start(&origin.url, &creds, &["--disk-cache", "off"]);
    let album = mount.path().join("A/B");
    let stuck = std::fs::File::open(album.join("01 - Stuck.mp3")).unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        stuck
            .read_at(&mut buf, 800_000)
            .map_err(|e| e.raw_os_error())
    });
    // Several rounds, each from trackfs (the kernel's cached pages dropped first), so the
    // kernel's request threads see more than one request each while the stuck read waits.
    for _ in 0..3 {
        let free = read_uncached(&album.join("02 - Free.mp3"));
        assert!(free == plain(1), "the other file's bytes, whole");
        let listing = std::fs::read_dir(&album).unwrap().count();
        assert_eq!(listing, 2);
    }
    assert!(
        !reader.is_finished(),
        "the read of the stalled file should still be waiting for its CDN"
    );
}
