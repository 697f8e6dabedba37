//! Secrets never reach logs, even at the most verbose level; loose permissions are warned
//! about; SIGTERM with reads in flight ends those reads with an error and unmounts.

mod support;

use prost::Message;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::liar::{Answer, Liar, Request};
use trackfs::protocol::crypto::{apply_keystream, AudioKey};
use trackfs::protocol::proto::{library, metadata};

const TOKEN: &str = "TOKENd3adb33f5ecret";
const SIGNATURE: &str = "SIGNATUREc0ffee99";
const PASSWORD: &str = "pa:ssWORDx7";
const KEY: [u8; 16] = [
    0x5a, 0x17, 0xc3, 0x99, 0x01, 0xfe, 0x42, 0x66, 0x88, 0x13, 0x37, 0xab, 0xcd, 0xef, 0x10, 0x20,
];

fn plain() -> Vec<u8> {
    let mut v = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    v.extend((0..900_000u32).map(|i| (i % 241) as u8));
    v
}

/// One album, one MP3 track; `stall_after_first_block` makes later CDN ranges hang.
fn origin(stall_after_first_block: bool) -> Liar {
    let cipher = {
        let mut c = plain();
        apply_keystream(&AudioKey(KEY), 0, &mut c);
        Arc::new(c)
    };
    Liar::start(move |base: &str, r: &Request| {
        let p = r.path.as_str();
        if p == "/keymaster/token" {
            return Answer::ok(format!(
                r#"{{"accessToken":"{TOKEN}","tokenType":"Bearer","expiresIn":3600}}"#
            ));
        }
        if p == "/library" {
            return Answer::ok(
                library::Library {
                    album_gid: vec![vec![1; 16]],
                }
                .encode_to_vec(),
            );
        }
        if p.starts_with("/metadata/4/album/") {
            return support::liar::album_b(&[2]);
        }
        if p.starts_with("/metadata/4/track/") {
            let file = metadata::AudioFile {
                file_id: Some(vec![3; 20]),
                format: Some(4),
            };
            let track = metadata::Track {
                gid: Some(vec![2; 16]),
                name: Some("T".into()),
                number: Some(1),
                file: vec![file],
                ..Default::default()
            };
            return Answer::ok(track.encode_to_vec());
        }
        if p.starts_with("/storage-resolve/") {
            let url = format!(
                "{}/audio/{}?9999999999_{SIGNATURE}",
                base,
                hex::encode([3u8; 20])
            );
            return Answer::resolved(url);
        }
        if p.starts_with("/audiokey/") {
            return Answer::ok(KEY.to_vec());
        }
        if p.starts_with("/audio/") {
            if stall_after_first_block && r.range.is_some_and(|(first, _)| first > 0) {
                std::thread::sleep(Duration::from_secs(30));
            }
            return Answer::ranged(&cipher, r.range);
        }
        Answer::status(404)
    })
}

#[test]
fn no_secret_reaches_the_log_at_the_most_verbose_level() {
    if !support::fuse_usable() {
        return;
    }
    let origin = origin(false);
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    support::write_private(&creds, &format!("user:{PASSWORD}\n"));
    let point = dir.path().join("mnt");
    std::fs::create_dir(&point).unwrap();
    let log_path = dir.path().join("log");
    let mut child = Command::new(support::TRACKFS)
        .args(["mount", &origin.url])
        .arg(&point)
        .arg("--credentials")
        .arg(&creds)
        .args(["--log-level", "trace"])
        .env("RUST_LOG", "trace")
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !support::is_mounted(&point) {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "not mounted"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let data = std::fs::read(point.join("A/B/01 - T.mp3")).unwrap();
    assert!(data == plain());
    support::terminate(&mut child, Duration::from_secs(10));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.lines().count() > 20,
        "expected a verbose log, got:\n{log}"
    );
    assert!(
        log.contains("<redacted>") || log.contains("/audio/"),
        "the log shows requests:\n{log}"
    );
    let key_hex = hex::encode(KEY);
    for (what, secret) in [
        ("token", TOKEN),
        ("signature", SIGNATURE),
        ("password", PASSWORD),
        ("key", key_hex.as_str()),
    ] {
        assert!(!log.contains(secret), "the {what} appears in the log");
    }
    assert!(
        !log.contains("cGE6c3NXT1JEeDc"),
        "the Basic auth header appears in the log"
    );
}

#[test]
fn credentials_readable_by_others_are_warned_about() {
    if !support::fuse_usable() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let origin = origin(false);
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(&creds, format!("user:{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mount = support::Mount::start(&origin.url, &creds, &[]);
    mount.assert_logged("chmod 600");
}

#[test]
fn sigterm_with_reads_in_flight_ends_them_and_unmounts() {
    if !support::fuse_usable() {
        return;
    }
    let origin = origin(true);
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    support::write_private(&creds, &format!("user:{PASSWORD}\n"));
    let mut mount = support::Mount::start(&origin.url, &creds, &[]);
    let path = mount.path().join("A/B/01 - T.mp3");
    let file = std::fs::File::open(&path).unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let started = Instant::now();
        let result = file.read_at(&mut buf, 800_000);
        (result.map_err(|e| e.raw_os_error()), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !reader.is_finished(),
        "the read should be stuck on the stalled CDN"
    );
    let point = mount.path();
    let status = mount.terminate().expect("trackfs exits");
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        mount.log_text()
    );
    let (result, elapsed) = reader.join().unwrap();
    assert!(
        result.is_err(),
        "an interrupted read must fail, not return data: {result:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "the read hung for {elapsed:?}"
    );
    assert!(!support::is_mounted(&point));
}

#[test]
fn sigint_while_the_origin_does_not_answer_stops_the_start_at_once() {
    // Accepts connections (the kernel's backlog does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    support::write_private(&creds, &format!("user:{PASSWORD}\n"));
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let mut child = Command::new(support::TRACKFS)
        .arg("mount")
        .arg(&url)
        .arg(&mountpoint)
        .arg("--credentials")
        .arg(&creds)
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // trackfs connects only once its signal handlers are in place: wait for that, not a
    // fixed time, or a slow start gets the default SIGINT (killed, nothing logged). The
    // connection stays open and unanswered.
    silent.set_nonblocking(true).unwrap();
    let connected_by = Instant::now() + Duration::from_secs(30);
    let _held = loop {
        match silent.accept() {
            Ok((stream, _)) => break stream,
            Err(_) if Instant::now() < connected_by => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("trackfs never connected to the origin: {e}");
            }
        }
    };
    std::thread::sleep(Duration::from_millis(100));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = child.try_wait().unwrap() else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("trackfs mount ignored SIGINT while starting");
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("interrupted"), "{log}");
    assert!(!support::is_mounted(&mountpoint));
}
