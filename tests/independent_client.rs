//! The independent client (`tests/independent/client_check.py`, written from docs/protocol.md alone)
//! walks `trackfs serve` and checks every rule of the wire protocol: tokens, 401s, 404s,
//! 206/416/403, unaligned ranges decrypting to the sources, head files, expiry.

mod support;

use std::path::Path;
use std::process::Command;
use support::rust_origin::RustOrigin;
use support::sources;

fn check(origin: &RustOrigin, extra: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/client_check.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--origin", &origin.url, "--credentials"])
        .arg(&origin.credentials_file)
        .arg("--source")
        .arg(sources::music())
        .arg("--library")
        .arg(&origin.library)
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
}

#[test]
fn trackfs_serve_passes_the_independent_client() {
    if !support::require_tool("ffmpeg")
        || !support::require_tool("openssl")
        || !support::require_tool("python3")
    {
        return;
    }
    let origin = RustOrigin::start(sources::music(), &["--url-ttl", "4", "--token-ttl", "4"]);
    check(&origin, &[]);
}
