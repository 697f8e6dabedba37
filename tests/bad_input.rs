//! One test per bad input: each gets a clear message or errno, never a panic, wrong bytes or a
//! hang. A scripted origin (`support::liar`) serves exactly the malformed thing under test.

mod support;

use prost::Message;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use support::liar::{Answer, Liar, Request};
use support::Mount;
use trackfs::protocol::crypto::{apply_keystream, AudioKey};
use trackfs::protocol::proto::{library, metadata};

const PASSWORD: &str = "se:cret";

struct FakeTrack {
    gid: Vec<u8>,
    file: Vec<u8>,
    key: [u8; 16],
    plain: Vec<u8>,
    name: &'static str,
}

struct Fixture {
    tracks: Vec<FakeTrack>,
    album_gid: Vec<u8>,
}

fn mp3_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut v = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    v.extend((0..len.saturating_sub(10)).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v.truncate(len);
    v
}

fn fixture() -> Arc<Fixture> {
    let track = |n: u8, plain: Vec<u8>, name| FakeTrack {
        gid: vec![n; 16],
        file: vec![n; 20],
        key: [n; 16],
        plain,
        name,
    };
    Arc::new(Fixture {
        tracks: vec![
            track(1, mp3_bytes(700_000, 1), "Big One"),
            track(2, mp3_bytes(20_000, 2), "Small Two"),
            track(3, Vec::new(), "Empty"),
        ],
        album_gid: vec![9; 16],
    })
}

impl Fixture {
    fn album(&self) -> metadata::Album {
        metadata::Album {
            gid: Some(self.album_gid.clone()),
            name: Some("Album".into()),
            artist: vec![metadata::Artist {
                gid: None,
                name: Some("Artist".into()),
            }],
            disc: vec![metadata::Disc {
                number: Some(1),
                name: None,
                track: self
                    .tracks
                    .iter()
                    .map(|t| metadata::Track {
                        gid: Some(t.gid.clone()),
                        ..Default::default()
                    })
                    .collect(),
            }],
            ..Default::default()
        }
    }

    fn track_pb(&self, t: &FakeTrack, number: i32) -> metadata::Track {
        metadata::Track {
            gid: Some(t.gid.clone()),
            name: Some(t.name.into()),
            number: Some(number),
            file: vec![metadata::AudioFile {
                file_id: Some(t.file.clone()),
                format: Some(4),
            }],
            ..Default::default()
        }
    }

    fn find(&self, hex_id: &str, by_file: bool) -> Option<(usize, &FakeTrack)> {
        self.tracks
            .iter()
            .enumerate()
            .find(|(_, t)| hex::encode(if by_file { &t.file } else { &t.gid }) == hex_id)
    }

    fn cipher(&self, t: &FakeTrack) -> Vec<u8> {
        let mut data = t.plain.clone();
        apply_keystream(&AudioKey(t.key), 0, &mut data);
        data
    }

    /// Every endpoint, answered as docs/protocol.md says.
    fn honest(&self, base: &str, req: &Request) -> Answer {
        let path = req.path.as_str();
        let tail = |prefix: &str| path.strip_prefix(prefix).map(str::to_string);
        if path == "/keymaster/token" {
            return Answer::ok(r#"{"accessToken":"tok","tokenType":"Bearer","expiresIn":3600}"#);
        }
        if path == "/library" {
            return Answer::ok(
                library::Library {
                    album_gid: vec![self.album_gid.clone()],
                }
                .encode_to_vec(),
            );
        }
        if tail("/metadata/4/album/").is_some() {
            return Answer::ok(self.album().encode_to_vec());
        }
        if let Some(id) = tail("/metadata/4/track/") {
            return match self.find(&id, false) {
                Some((i, t)) => Answer::ok(self.track_pb(t, i as i32 + 1).encode_to_vec()),
                None => Answer::status(404),
            };
        }
        if let Some(id) = tail("/storage-resolve/files/audio/interactive/") {
            let url = format!("{base}/audio/{id}?9999999999_sig");
            return Answer::resolved(url);
        }
        if let Some(id) = tail("/audiokey/") {
            return self
                .find(&id, true)
                .map_or(Answer::status(404), |(_, t)| Answer::ok(t.key.to_vec()));
        }
        if let Some(rest) = tail("/audio/") {
            let id = rest.split('?').next().unwrap_or("");
            return self.find(id, true).map_or(Answer::status(404), |(_, t)| {
                Answer::ranged(&self.cipher(t), req.range)
            });
        }
        Answer::status(404)
    }
}

/// Starts a liar that answers honestly except where `twist` returns an answer.
fn liar(
    fx: &Arc<Fixture>,
    twist: impl Fn(&Fixture, &Request) -> Option<Answer> + Send + Sync + 'static,
) -> Liar {
    let fx = fx.clone();
    Liar::start(move |base, req| twist(&fx, req).unwrap_or_else(|| fx.honest(base, req)))
}

fn credentials(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("credentials");
    support::write_private(&path, text);
    path
}

fn mount_error(origin: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), &format!("user:{PASSWORD}\n"));
    match Mount::try_start(origin, &creds, extra) {
        Ok(_) => panic!("the mount should have failed"),
        Err(log) => log,
    }
}

fn mount_ok(origin: &str, extra: &[&str]) -> (Mount, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), &format!("user:{PASSWORD}\n"));
    (Mount::start(origin, &creds, extra), dir)
}

fn track_path(mount: &Mount, name: &str, n: usize) -> std::path::PathBuf {
    mount
        .path()
        .join(format!("Artist/Album/{n:02} - {name}.mp3"))
}

#[test]
fn a_malformed_library_protobuf_fails_the_mount_with_a_message() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |_, r| {
        (r.path == "/library").then(|| Answer::ok(vec![0xff, 0xff, 0xff, 0x0f]))
    });
    let log = mount_error(&origin.url, &[]);
    assert!(
        log.contains("the library") && log.contains("malformed"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_truncated_album_protobuf_fails_the_mount_with_a_message() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |fx, r| {
        r.path.starts_with("/metadata/4/album/").then(|| {
            let bytes = fx.album().encode_to_vec();
            Answer::ok(bytes[..bytes.len() - 3].to_vec())
        })
    });
    let log = mount_error(&origin.url, &[]);
    assert!(
        log.contains("album metadata") && log.contains("malformed"),
        "{log}"
    );
}

#[test]
fn an_album_with_a_gid_of_the_wrong_length_fails_the_mount_naming_it() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |fx, r| {
        r.path.starts_with("/metadata/4/album/").then(|| {
            Answer::ok(
                metadata::Album {
                    gid: Some(vec![1; 3]),
                    ..fx.album()
                }
                .encode_to_vec(),
            )
        })
    });
    let log = mount_error(&origin.url, &[]);
    assert!(log.contains("must be 16 bytes, got 3"), "{log}");
}

#[test]
fn metadata_without_its_optional_gids_mounts_under_the_ids_asked_for() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |fx, r| {
        if r.path.starts_with("/metadata/4/album/") {
            let album = metadata::Album {
                gid: None,
                ..fx.album()
            };
            return Some(Answer::ok(album.encode_to_vec()));
        }
        let id = r.path.strip_prefix("/metadata/4/track/")?;
        let (n, t) = fx.find(id, false)?;
        let track = metadata::Track {
            gid: None,
            ..fx.track_pb(t, n as i32 + 1)
        };
        Some(Answer::ok(track.encode_to_vec()))
    });
    let (mount, _dir) = mount_ok(&origin.url, &[]);
    assert!(track_path(&mount, "Big One", 1).exists());
    assert!(track_path(&mount, "Small Two", 2).exists());
}

#[test]
fn a_broken_album_and_a_bad_library_entry_are_skipped_and_the_rest_mount() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let broken_gid = vec![8u8; 16];
    let broken = format!("/metadata/4/album/{}", hex::encode(&broken_gid));
    let origin = liar(&fx, move |fx, r| {
        if r.path == "/library" {
            let album_gid = vec![broken_gid.clone(), vec![7; 3], fx.album_gid.clone()];
            return Some(Answer::ok(library::Library { album_gid }.encode_to_vec()));
        }
        (r.path == broken).then(|| Answer::ok(vec![0x0a, 0x05, 0x01]))
    });
    let (mount, _dir) = mount_ok(&origin.url, &[]);
    assert!(track_path(&mount, "Big One", 1).exists());
    mount.assert_logged("skipping an album");
    mount.assert_logged("skipping a library entry");
}

#[test]
fn a_track_with_broken_metadata_is_skipped_and_the_rest_mount() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let broken = format!("/metadata/4/track/{}", hex::encode(&fx.tracks[1].gid));
    let origin = liar(&fx, move |_, r| {
        (r.path == broken).then(|| Answer::ok(vec![0x0a, 0x05, 0x01]))
    });
    let (mount, _dir) = mount_ok(&origin.url, &[]);
    assert!(track_path(&mount, "Big One", 1).exists());
    assert!(!track_path(&mount, "Small Two", 2).exists());
    mount.assert_logged("skipping a track");
}

#[test]
fn a_key_of_the_wrong_length_is_eio_with_a_message() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |_, r| {
        r.path
            .starts_with("/audiokey/")
            .then(|| Answer::ok(vec![1u8; 15]))
    });
    let (mount, _dir) = mount_ok(&origin.url, &[]);
    let error = std::fs::read(track_path(&mount, "Big One", 1)).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    mount.assert_logged("is 15 bytes, not 16");
}

#[test]
fn a_wrong_key_is_eio_not_noise() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |_, _| None);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    support::write_private(
        &keys,
        &format!("{} {}\n", hex::encode(&fx.tracks[0].file), "ab".repeat(16)),
    );
    let (mount, _d) = mount_ok(&origin.url, &["--keys", keys.to_str().unwrap()]);
    let error = std::fs::metadata(track_path(&mount, "Big One", 1)).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    mount.assert_logged("wrong key");
    // The other track (key from the origin) is unaffected.
    assert_eq!(
        std::fs::read(track_path(&mount, "Small Two", 2)).unwrap(),
        fx.tracks[1].plain
    );
}

#[test]
fn a_zero_length_file_is_an_empty_file() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |_, _| None);
    let (mount, _dir) = mount_ok(&origin.url, &[]);
    let path = track_path(&mount, "Empty", 3);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert!(std::fs::read(&path).unwrap().is_empty());
}

#[test]
fn an_absurd_content_range_total_is_eio() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |_, r| {
        r.path.starts_with("/audio/").then(|| Answer {
            status: 206,
            headers: vec![("Content-Range".into(), "bytes 0-9/99999999999999999".into())],
            body: vec![0; 10],
        })
    });
    let (mount, _dir) = mount_ok(&origin.url, &["--retries", "2"]);
    let error = std::fs::metadata(track_path(&mount, "Big One", 1)).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    mount.assert_logged("not plausible");
}

#[test]
fn a_cdn_that_lies_about_ranges_gives_eio_not_wrong_bytes() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |fx, r| {
        let (first, last) = (r.range?.0, r.range?.1?);
        (r.path.starts_with("/audio/") && first > 0).then(|| {
            // Announces the asked range but sends bytes from one block later.
            let cipher = fx.cipher(&fx.tracks[0]);
            let shifted = Answer::ranged(&cipher, Some((first + 1, Some(last + 1))));
            Answer {
                headers: vec![(
                    "Content-Range".into(),
                    format!("bytes {first}-{last}/{}", cipher.len()),
                )],
                ..shifted
            }
        })
    });
    let (mount, _dir) = mount_ok(&origin.url, &["--retries", "2"]);
    let file = std::fs::File::open(track_path(&mount, "Big One", 1)).unwrap();
    let mut buf = vec![0u8; 4096];
    let error = file.read_at(&mut buf, 600_000).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
}

#[test]
fn a_file_whose_size_changes_is_estale_never_mixed_versions() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |fx, r| {
        let (first, last) = (r.range?.0, r.range?.1?);
        (r.path.starts_with("/audio/") && first > 0).then(|| {
            let mut cipher = fx.cipher(&fx.tracks[0]);
            cipher.extend_from_slice(&[0; 100]);
            Answer::ranged(&cipher, Some((first, Some(last))))
        })
    });
    let (mount, _dir) = mount_ok(&origin.url, &["--retries", "2"]);
    let file = std::fs::File::open(track_path(&mount, "Big One", 1)).unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        file.read_at(&mut buf, 600_000).unwrap_err().raw_os_error(),
        Some(libc::ESTALE)
    );
    mount.assert_logged("changed on the CDN");
}

#[test]
fn bad_credentials_fail_at_start_with_one_clear_message() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |_, r| {
        (r.path == "/keymaster/token").then(|| Answer::status(401))
    });
    let log = mount_error(&origin.url, &[]);
    assert!(log.contains("rejected the credentials"), "{log}");
    assert!(!log.contains(PASSWORD), "the password leaked: {log}");
}

#[test]
fn an_origin_that_is_down_fails_at_start() {
    if !support::fuse_usable() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = mount_error(&format!("http://127.0.0.1:{port}"), &[]);
    assert!(
        log.contains("cannot use the origin") && log.contains("no answer from"),
        "{log}"
    );
}

#[test]
fn a_format_no_track_has_fails_the_mount_and_one_some_lack_is_named() {
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let origin = liar(&fx, |fx, r| {
        let id = r.path.strip_prefix("/metadata/4/track/")?;
        let (n, t) = fx.find(id, false)?;
        let mut track = fx.track_pb(t, n as i32 + 1);
        if n == 1 {
            track.file[0].format = Some(0); // OGG_VORBIS_96 instead of MP3_320
        }
        Some(Answer::ok(track.encode_to_vec()))
    });
    let log = mount_error(&origin.url, &["--format", "FLAC_FLAC"]);
    assert!(
        log.contains("no track has a file in the formats asked for (--format FLAC_FLAC)")
            && log.contains("MP3_320,OGG_VORBIS_96"),
        "{log}"
    );
    let (mount, _dir) = mount_ok(&origin.url, &["--format", "MP3_320"]);
    assert!(track_path(&mount, "Big One", 1).exists());
    mount.assert_logged("1 track hidden: no file in the formats asked for (--format MP3_320); they come in OGG_VORBIS_96");
}

#[test]
fn an_origin_failing_mid_refresh_fails_trackfs_refresh_quietly_and_keeps_the_tree() {
    use std::sync::atomic::{AtomicBool, Ordering};
    if !support::fuse_usable() {
        return;
    }
    let fx = fixture();
    let broken = Arc::new(AtomicBool::new(false));
    let failing = broken.clone();
    // `/library` answers, then every metadata request is a 503.
    let origin = liar(&fx, move |_, r| {
        let fails = failing.load(Ordering::Relaxed) && r.path.starts_with("/metadata/");
        fails.then(|| Answer::status(503))
    });
    let flags = ["--refresh-interval", "off", "--retries", "2"];
    let (mount, _dir) = mount_ok(&origin.url, &flags);
    broken.store(true, Ordering::Relaxed);
    let out = support::run(
        std::process::Command::new(support::TRACKFS)
            .arg("refresh")
            .arg(mount.path()),
        std::time::Duration::from_secs(120),
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "trackfs refresh must fail: {text}");
    assert!(text.contains("kept as they were"), "{text}");
    assert!(track_path(&mount, "Big One", 1).exists(), "kept as it was");
    mount.assert_logged("refresh incomplete: ");
    let log = mount.log_text();
    assert!(!log.contains("trying again"), "retries are quiet:\n{log}");
}
