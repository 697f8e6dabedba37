//! Where a mount's disk cache lives and who may use it: `--disk-cache DIR` (default
//! `$XDG_CACHE_HOME/trackfs`, else `~/.cache/trackfs`), a subfolder per origin so two origins
//! never share file ids or keys, mode 0700, and a lock file so only one mount at a time writes
//! it (a second one is told which process holds it).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a cache directory cannot be used; each carries the errno a caller would report.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error(
        "the disk cache {dir} is in use by another trackfs mount (pid {pid}); unmount it, \
         or give this mount its own --disk-cache DIR (or --disk-cache off)"
    )]
    Locked { dir: String, pid: String },
    #[error("cannot use the disk cache {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

impl DirError {
    pub fn errno(&self) -> i32 {
        match self {
            DirError::Locked { .. } => libc::EBUSY,
            DirError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// The cache root from the `--disk-cache` flag: `off` disables, a path is taken as given, no
/// flag means the XDG default. `None` also when no home directory can be found.
pub fn cache_root(flag: Option<&Path>) -> Option<PathBuf> {
    match flag {
        Some(p) if p == Path::new("off") => None,
        Some(p) => Some(p.to_path_buf()),
        None => default_root(
            std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        ),
    }
}

fn default_root(xdg: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    // The XDG spec says a relative value is to be ignored.
    match xdg.filter(|x| x.is_absolute()) {
        Some(x) => Some(x.join("trackfs")),
        None => home
            .filter(|h| h.is_absolute())
            .map(|h| h.join(".cache").join("trackfs")),
    }
}

/// The subfolder for one origin and account: readable (scheme, host, port) plus a hash of the
/// whole URL and the user name, so `http://a/x` and `http://a/y` stay apart, and so do two
/// accounts' catalogues, while a person can still tell folders apart.
pub fn origin_folder(origin: &str, user: &str) -> String {
    use sha2::Digest;
    let normal = origin.trim().trim_end_matches('/');
    let readable: String = match url::Url::parse(normal) {
        Ok(u) => format!(
            "{}-{}-{}",
            u.scheme(),
            u.host_str().unwrap_or("nohost"),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => "origin".to_owned(),
    }
    .chars()
    .map(|c| match c {
        'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
        _ => '_',
    })
    .collect();
    let hash = sha2::Sha256::digest(format!("{normal}\n{user}").as_bytes());
    format!("{readable}-{}", hex::encode(&hash[..4]))
}

/// Creates `dir` (and parents) if needed and makes it 0700: it holds wrapped keys and the
/// catalogue, which are nobody else's business.
pub fn make_private(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Held for as long as a mount uses the directory; the kernel lets go when the process ends,
/// however it ends, so a `kill -9` leaves no stale lock behind.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Takes `dir`'s lock, writing this process's id into it for whoever comes second.
pub fn lock(dir: &Path) -> Result<DirLock, DirError> {
    let shown = || dir.display().to_string();
    let io = |source| DirError::Io {
        dir: shown(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(DirError::Locked {
                dir: shown(),
                pid: if pid.is_empty() { "unknown" } else { pid }.to_owned(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_follows_xdg_then_home() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(default_root(p("/x"), p("/h")), p("/x/trackfs"));
        assert_eq!(default_root(p("rel"), p("/h")), p("/h/.cache/trackfs"));
        assert_eq!(default_root(None, p("/h")), p("/h/.cache/trackfs"));
        assert_eq!(default_root(None, None), None);
        assert_eq!(cache_root(Some(Path::new("off"))), None);
        assert_eq!(cache_root(Some(Path::new("/c"))), p("/c"));
    }

    #[test]
    fn origins_get_folders_of_their_own() {
        let a = origin_folder("http://127.0.0.1:8080", "u");
        assert!(a.starts_with("http-127.0.0.1-8080-"), "{a}");
        assert_eq!(a, origin_folder("http://127.0.0.1:8080/", "u"));
        assert_ne!(a, origin_folder("http://127.0.0.1:8080", "v"));
        assert_ne!(a, origin_folder("http://127.0.0.1:8081", "u"));
        assert_ne!(a, origin_folder("http://127.0.0.1:8080/other", "u"));
        assert!(!origin_folder("not a url/../..", "../..").contains('/'));
    }

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        make_private(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let first = lock(dir.path()).unwrap();
        let second = lock(dir.path()).unwrap_err();
        let message = second.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert_eq!(second.errno(), libc::EBUSY);
        drop(first);
        lock(dir.path()).unwrap();
    }
}
