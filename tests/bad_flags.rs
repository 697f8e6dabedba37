//! Bad flags and mountpoints: each gets a clear message and a non-zero exit before anything
//! is mounted or served, never a panic or a hang.

mod support;

use std::path::Path;
use std::process::Command;

fn credentials(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("credentials");
    support::write_private(&path, text);
    path
}

fn run_trackfs(args: &[&str]) -> (i32, String) {
    // A mount that fails on its origin has made its cache folder by then: never the user's.
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(support::TRACKFS)
        .args(args)
        .env("XDG_CACHE_HOME", cache.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_mountpoints_and_flags_get_messages_and_nonzero_exits() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), "user:pw\n");
    let c = creds.to_str().unwrap();
    let missing = dir.path().join("nope");
    let (code, err) = run_trackfs(&[
        "mount",
        "http://127.0.0.1:9",
        missing.to_str().unwrap(),
        "--credentials",
        c,
    ]);
    assert!(code != 0 && err.contains("does not exist"), "{err}");
    let (code, err) = run_trackfs(&["mount", "http://127.0.0.1:9", c, "--credentials", c]);
    assert!(code != 0 && err.contains("not a directory"), "{err}");
    let (code, err) = run_trackfs(&["mount", "http://127.0.0.1:9", "/proc", "--credentials", c]);
    assert!(code != 0 && err.contains("already a mountpoint"), "{err}");
    let (code, err) = run_trackfs(&[
        "mount",
        "http://127.0.0.1:9",
        dir.path().to_str().unwrap(),
        "--credentials",
        c,
    ]);
    assert!(code != 0 && err.contains("not empty"), "{err}");
    let d = dir.path().to_str().unwrap();
    let (code, err) = run_trackfs(&[
        "mount",
        "http://127.0.0.1:9",
        d,
        "--credentials",
        c,
        "--cache-size",
        "lots",
    ]);
    assert!(code != 0 && err.contains("not a size"), "{err}");
    let (code, err) = run_trackfs(&[
        "mount",
        "http://127.0.0.1:9",
        d,
        "--credentials",
        c,
        "--cache-size",
        "0",
    ]);
    assert!(code != 0 && err.contains("at least 1MiB"), "{err}");
    let (code, err) = run_trackfs(&["mount", "ftp://x", d, "--credentials", c]);
    assert!(code != 0 && err.contains("http"), "{err}");
    let (code, err) = run_trackfs(&[
        "mount",
        "http://127.0.0.1:9",
        d,
        "--credentials",
        "/nonexistent",
    ]);
    assert!(code != 0 && err.contains("credentials"), "{err}");
    let empty = credentials(&dir.path().join(".."), "no colon here\n");
    let (code, err) = run_trackfs(&[
        "mount",
        "http://127.0.0.1:9",
        d,
        "--credentials",
        empty.to_str().unwrap(),
    ]);
    assert!(code != 0 && err.contains("user:password"), "{err}");
    let (code, err) = run_trackfs(&[
        "mount",
        "http://127.0.0.1:9",
        d,
        "--credentials",
        c,
        "--format",
        "WAV",
    ]);
    assert!(code != 0 && err.contains("unknown format"), "{err}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let mountpoint = dir.path().join("m");
    std::fs::create_dir(&mountpoint).unwrap();
    let m = mountpoint.to_str().unwrap();
    let bad: &[(&[&str], &str)] = &[
        (
            &["--log-level", "bogus", "stats", "/"],
            "invalid value 'bogus'",
        ),
        (
            &[
                "mount",
                "http://127.0.0.1:9",
                m,
                "--credentials",
                dir.path().to_str().unwrap(),
            ],
            "is a folder",
        ),
        (
            &[
                "mount",
                "http://127.0.0.1:9",
                m,
                "--credentials",
                c,
                "--ca-cert",
                junk.to_str().unwrap(),
            ],
            "no PEM certificate",
        ),
        (
            &["serve", d, "--cdn-base", "notaurl"],
            "must be an http:// or https:// URL",
        ),
        (
            &["serve", d, "--token-ttl", "0"],
            "between 1 second and 10 years",
        ),
        (&["serve", d, "--latency", "61000"], "at most 30000 ms"),
        (
            &["serve", d, "--url-ttl", "18446744073709551615"],
            "between 1 second and 10 years",
        ),
        (
            &["serve", d, "--listen", "no-such-host.invalid:80"],
            "is not HOST:PORT",
        ),
        (&["demo", "/proc/nope/x"], "cannot create the mountpoint"),
    ];
    for (args, expected) in bad {
        let (code, err) = run_trackfs(args);
        assert!(code != 0 && err.contains(expected), "{args:?}: {err}");
    }
}

/// Values out of range are refused by the flag parser (exit status 2, clap's message naming
/// the flag and the range), before the credentials are read or anything is mounted: the
/// mountpoint and credentials here are fine, only the flag is wrong.
#[test]
fn out_of_range_flag_values_are_refused_with_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), "user:pw\n");
    let mountpoint = dir.path().join("m");
    std::fs::create_dir(&mountpoint).unwrap();
    let (c, m) = (creds.to_str().unwrap(), mountpoint.to_str().unwrap());
    let mount = |extra: &[&str]| {
        let mut args = vec!["mount", "http://127.0.0.1:9", m, "--credentials", c];
        args.extend_from_slice(extra);
        run_trackfs(&args)
    };
    let refused: &[(&[&str], &str)] = &[
        (&["--kernel-read-ahead", "1TiB"], "between 4KiB and 64MiB"),
        (&["--kernel-read-ahead", "1k"], "between 4KiB and 64MiB"),
        (&["--retries", "1000000"], "at most 50"),
        (&["--retries=-1"], "not a whole number"),
        (&["--read-ahead", "64KiB"], "below the block size"),
        (&["--max-request", "128k"], "below the block size"),
        (
            &["--block-size", "1MiB", "--max-request", "512k"],
            "below the block size",
        ),
        (&["--block-size", "300k"], "power of two"),
        (&["--max-request", "1TiB"], "between 4KiB and 64MiB"),
        (&["--read-ahead", "2TiB"], "between 4KiB and 1GiB"),
        (&["--stall-timeout", "0"], "more than 0"),
        (&["--stall-timeout", "NaN"], "more than 0"),
        (&["--cache-size", "512k"], "at least 1MiB"),
    ];
    for (extra, expected) in refused {
        let (code, err) = mount(extra);
        assert_eq!(code, 2, "{extra:?} should be refused by the parser: {err}");
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(
            !err.contains("mountpoint") && !err.contains("credentials file"),
            "{extra:?} was refused for another reason: {err}"
        );
    }
    let serve_refused: &[(&[&str], &str)] = &[
        (&["--fault-rate", "1.5"], "between 0 and 1"),
        (&["--stall", "40000"], "at most 30000 ms"),
        (&["--extra-cdn-url", "ftp://x"], "http:// or https://"),
        (&["--cdn-base", "http://"], "http:// or https://"),
    ];
    for (extra, expected) in serve_refused {
        let mut args = vec!["serve", m];
        args.extend_from_slice(extra);
        let (code, err) = run_trackfs(&args);
        assert_eq!(code, 2, "{extra:?} should be refused by the parser: {err}");
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
    // The boundaries themselves are accepted: the mount then fails later, on the origin
    // (nothing listens on port 9), not on the flag. No disk cache: nothing is left in ~/.cache.
    let (code, err) = mount(&[
        "--disk-cache",
        "off",
        "--retries",
        "0",
        "--kernel-read-ahead",
        "0",
        "--block-size",
        "1MiB",
        "--max-request",
        "1MiB",
        "--read-ahead",
        "1MiB",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("invalid value"), "{err}");
}
