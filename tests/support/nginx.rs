//! A private nginx serving a library's `audio/` folder, started with `scripts/nginx-cdn.sh` on a
//! free port and stopped by its PID (`nginx-cdn.sh --stop PID`) when the guard drops.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Nginx {
    pid: u32,
    pub port: u16,
    /// The private folder with nginx.conf, access.log and error.log.
    pub prefix: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nginx-cdn.sh")
}

/// A port that was free a moment ago (the caller must tolerate a rare race).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    /// Serves `library/audio/` at `http://127.0.0.1:PORT/audio/`.
    pub fn start(library: &Path, port: u16) -> Result<Nginx, String> {
        let out = Command::new("bash")
            .arg(script())
            .arg(library)
            .arg(port.to_string())
            .output()
            .map_err(|e| format!("running nginx-cdn.sh: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(format!("nginx-cdn.sh failed ({}): {stderr}", out.status));
        }
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("nginx-cdn.sh printed no PID; stderr: {stderr}"))?;
        let prefix = stderr
            .split("config, logs: ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .map(PathBuf::from)
            .unwrap_or_default();
        Ok(Nginx { pid, port, prefix })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests nginx answered with this status (from its access log).
    pub fn requests_with_status(&self, status: u16) -> usize {
        let log = std::fs::read_to_string(self.prefix.join("access.log")).unwrap_or_default();
        let wanted = format!("\" {status} ");
        log.lines()
            .filter(|l| l.contains("/audio/") && l.contains(&wanted))
            .count()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let stopped = Command::new("bash")
            .arg(script())
            .arg("--stop")
            .arg(self.pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            // SAFETY: plain kill(2) of the master PID this guard started.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGKILL);
            }
        }
    }
}
