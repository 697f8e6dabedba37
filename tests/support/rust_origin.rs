//! `trackfs publish` + `trackfs serve` as child processes, stopped on drop.

use super::{terminate, TRACKFS};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RustOrigin {
    child: Child,
    pub url: String,
    pub library: PathBuf,
    pub credentials_file: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Publishes `source` into a fresh library folder and returns it (kept with the guard).
pub fn publish(source: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library");
    let out = Command::new(TRACKFS)
        .arg("publish")
        .arg(source)
        .arg(&library)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, library)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RustOrigin {
    /// Publishes `source` and serves it with `extra` flags (e.g. `--fault-rate 0.1`).
    pub fn start(source: &Path, extra: &[&str]) -> RustOrigin {
        let (dir, library) = publish(source);
        let port = free_port();
        let log = dir.path().join("serve.log");
        let child = Command::new(TRACKFS)
            .arg("serve")
            .arg(&library)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "trackfs serve did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        RustOrigin {
            child,
            url: format!("http://127.0.0.1:{port}"),
            credentials_file: library.join("credentials"),
            library,
            log,
            _dir: dir,
        }
    }
}

impl Drop for RustOrigin {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}
