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
    let out = Command::new(support::TRACKFS).args(args).output().unwrap();
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
