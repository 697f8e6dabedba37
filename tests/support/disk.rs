//! For the disk cache's tests: `trackfs serve` on a given address (an origin that comes back
//! where it was), a small tmpfs (a full disk on demand), small pictures.

use super::{terminate, wait_for, TRACKFS};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `trackfs serve` of a published library on a given address, stopped on drop.
pub struct Serve(std::process::Child);

impl Serve {
    pub fn start(library: &Path, address: &str) -> Serve {
        let child = std::process::Command::new(TRACKFS)
            .arg("serve")
            .arg(library)
            .args(["--listen", address])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for(Duration::from_secs(30), "trackfs serve listening", || {
            std::net::TcpStream::connect(address).ok()
        });
        Serve(child)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        terminate(&mut self.0, Duration::from_secs(5));
    }
}

/// A small tmpfs (a full disk on demand), unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root, as FUSE tests do"
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A small picture made with ffmpeg, `jpg` or `png` by the name's extension.
pub fn picture(path: &Path, colour: &str) {
    let out = super::run(
        std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("color=c={colour}:s=64x48:d=1"))
            .args(["-frames:v", "1"])
            .arg(path),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "ffmpeg picture");
}
