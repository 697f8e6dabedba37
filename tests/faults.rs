//! Byte-exact under faults: a hostile CDN (every fault kind), URLs expiring every 4 s, tokens
//! every 5 s, a dead first CDN URL and no head files, all at once, on real mounts.

mod support;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use support::{sources, Mount, PythonOrigin};

fn usable() -> bool {
    support::fuse_usable() && support::require_tool("ffmpeg")
}

const HOSTILE: &[&str] = &[
    "--fault-rate",
    "0.15",
    "--fault-kinds",
    "500,503,reset,truncate,stall,no-range",
    "--stall-ms",
    "2000",
    "--url-ttl",
    "4",
    "--token-ttl",
    "5",
    "--dead-first-cdn",
    "--no-head-files",
    "--seed",
    "11",
];

/// Reads in small chunks with pauses, so URLs and tokens expire in the middle of a file.
/// The file's pages are dropped from the kernel cache first, so the reads reach trackfs.
fn slow_read(path: &std::path::Path, chunk: usize, pause: Duration) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: a valid open descriptor; fadvise only drops clean cached pages.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = file
            .read_at(&mut buf, out.len() as u64)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
        std::thread::sleep(pause);
    }
}

#[test]
fn a_hostile_independent_cdn_still_gives_exact_bytes() {
    if !usable() {
        return;
    }
    let origin = PythonOrigin::start(sources::music(), HOSTILE);
    // A small cache and no disk cache, so blocks are fetched again (and again meet faults,
    // expired URLs and tokens) during the test.
    let mount = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--cache-size", "1MiB", "--disk-cache", "off"],
    );
    let started = Instant::now();
    for round in 0..2 {
        if round == 1 {
            // Every URL and token from round 0 is now expired.
            std::thread::sleep(Duration::from_secs(6));
        }
        for (relative, source) in origin.expected_files() {
            let path = mount.path().join(&relative);
            let got = if round == 0 {
                std::fs::read(&path).unwrap()
            } else {
                slow_read(&path, 256 << 10, Duration::from_millis(300))
            };
            assert!(
                got == std::fs::read(&source).unwrap(),
                "round {round}: wrong bytes in {}",
                relative.display()
            );
        }
    }
    assert!(
        started.elapsed() > Duration::from_secs(5),
        "the test must outlive a URL and a token"
    );
    assert!(
        mount.stat("retries") > 0,
        "faults were injected and retried"
    );
    // The first token is not a renewal: the mount's own renewal(s) count.
    assert!(mount.stat("token_renewals") >= 1, "the token was renewed");
    assert!(
        mount.stat("resolves") > origin.expected_files().len() as u64,
        "URLs were re-resolved"
    );
    assert!(
        mount.stat("failovers") > 0,
        "the dead first URL was passed over"
    );
}

#[test]
fn a_stall_longer_than_the_timeout_is_retried_not_a_hang() {
    if !usable() {
        return;
    }
    let origin = PythonOrigin::start(
        sources::music(),
        &[
            "--fault-rate",
            "0.5",
            "--fault-kinds",
            "stall",
            "--stall-ms",
            "30000",
            "--seed",
            "12",
            "--no-head-files",
        ],
    );
    let mount = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--stall-timeout", "1", "--retries", "12"],
    );
    let started = Instant::now();
    for (relative, source) in origin.expected_files() {
        let got = std::fs::read(mount.path().join(&relative)).unwrap();
        assert!(
            got == std::fs::read(&source).unwrap(),
            "wrong bytes in {}",
            relative.display()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "stalls were cut short, not waited out"
    );
    assert!(mount.stat("retries") > 0);
}

#[test]
fn a_cdn_that_always_fails_gives_eio_within_the_bound_and_the_mount_stays_up() {
    if !usable() {
        return;
    }
    let origin = PythonOrigin::start(
        sources::music(),
        &[
            "--fault-rate",
            "1.0",
            "--fault-kinds",
            "500,503",
            "--seed",
            "13",
        ],
    );
    let mount = Mount::start(&origin.url, &origin.credentials_file, &["--retries", "3"]);
    let (relative, _) = &origin.expected_files()[2];
    let started = Instant::now();
    let error = std::fs::read(mount.path().join(relative)).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gave up in {:?}",
        started.elapsed()
    );
    // The mount is still up: listings and the stats file work, and errors were counted.
    assert!(std::fs::read_dir(mount.path()).unwrap().count() >= 2);
    assert!(mount.stat("errors") > 0);
    assert!(support::is_mounted(&mount.path()));
}
