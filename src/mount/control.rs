//! The control socket: how `trackfs pin`, `unpin` and `cache` talk to a running mount. The
//! mount itself is read-only, so the socket lives beside it, in the user's runtime directory
//! (`$XDG_RUNTIME_DIR/trackfs`, else `/tmp/trackfs-<uid>`, mode 0700), named after the
//! mountpoint: any path under the mount finds it. One JSON object per line each way: a
//! [`Request`], then zero or more `progress` answers and one final `done` or `error`.

use super::disk::Disk;
use crate::fs::tree::{NodeKind, Tree, ROOT};
use crate::fs::FsCore;
use crate::readpath::reader::FileRef;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Paths relative to the mountpoint: tracks, albums or artists.
    Pin {
        paths: Vec<String>,
    },
    Unpin {
        paths: Vec<String>,
    },
    Cache,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// Bytes stored of bytes to store, so far.
    Progress {
        done: u64,
        total: u64,
    },
    Done {
        message: String,
    },
    Error {
        message: String,
    },
}

/// Where the mount at `mountpoint` listens (the same for the mount and the commands).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    use sha2::Digest;
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.into());
    let hash = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    runtime_dir().join(format!("{}.sock", hex::encode(&hash[..8])))
}

fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("trackfs"),
        _ => std::env::temp_dir().join(format!("trackfs-{}", rustix::process::getuid().as_raw())),
    }
}

/// How old a socket nobody listens on must be before another mount removes it: far past the
/// moment between a starting mount's `bind` and its `listen`, when it refuses connections too.
const DEAD_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the sockets in `dir` that refuse connections (their mounts were killed, so their
/// own cleanup never ran) and are at least `age` old: else they pile up, one per killed
/// mountpoint, until the runtime directory is cleared at logout or reboot.
fn remove_dead_sockets(dir: &Path, age: std::time::Duration) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|elapsed| elapsed >= age);
        let refused = || {
            matches!(std::os::unix::net::UnixStream::connect(&path),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
        };
        if meta.file_type().is_socket() && old && refused() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The socket file, removed on drop (with its folder, when nothing else is in it).
pub(crate) struct Socket(PathBuf);

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Listens until `stop`.
pub(crate) fn serve(
    mountpoint: &Path,
    disk: Arc<Disk>,
    core: Arc<FsCore>,
    stop: CancellationToken,
) -> std::io::Result<Socket> {
    let path = socket_path(mountpoint);
    crate::readpath::disk::dir::make_private(&runtime_dir())?;
    // A socket left by a mount that was killed: nobody listens on it any more.
    let _ = std::fs::remove_file(&path);
    remove_dead_sockets(&runtime_dir(), DEAD_AFTER);
    let listener = UnixListener::bind(&path)?;
    let socket = Socket(path);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let (disk, core) = (disk.clone(), core.clone());
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &disk, &core).await {
                            tracing::debug!("control socket: {e}");
                        }
                    });
                }
            }
        }
    });
    Ok(socket)
}

async fn send(
    stream: &mut tokio::net::unix::OwnedWriteHalf,
    answer: &Answer,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn answer(stream: UnixStream, disk: &Disk, core: &FsCore) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(e) => {
            let message = format!("not a request: {e}");
            return send(&mut write, &Answer::Error { message }).await;
        }
    };
    let result = match request {
        Request::Cache => super::pins::report(disk, &core.tree()).await,
        Request::Unpin { paths } => match files_at(&core.tree(), &paths) {
            Ok(files) => super::pins::unpin(disk, &files).await,
            Err(e) => Err(e),
        },
        Request::Pin { paths } => match files_at(&core.tree(), &paths) {
            Ok(files) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let pinning = super::pins::pin(disk, &files, tx);
                tokio::pin!(pinning);
                loop {
                    tokio::select! {
                        result = &mut pinning => break result,
                        Some((done, total)) = rx.recv() => {
                            send(&mut write, &Answer::Progress { done, total }).await?;
                        }
                    }
                }
            }
            Err(e) => Err(e),
        },
    };
    let answer = match result {
        Ok(message) => Answer::Done { message },
        Err(message) => Answer::Error { message },
    };
    send(&mut write, &answer).await
}

/// The tracks at or below each path (relative to the mountpoint).
fn files_at(tree: &Tree, paths: &[String]) -> Result<Vec<FileRef>, String> {
    let mut files = Vec::new();
    for path in paths {
        let mut ino = ROOT;
        for part in Path::new(path).components() {
            let name = part.as_os_str().to_string_lossy();
            ino = tree
                .lookup(ino, &name)
                .ok_or_else(|| format!("{path}: no such track, album or artist in the mount"))?;
        }
        match tree.get(ino).map(|n| &n.kind) {
            Some(NodeKind::Stats) | None => return Err(format!("{path}: not a track or folder")),
            _ => files.extend(tree.tracks_below(ino, usize::MAX, usize::MAX)),
        }
    }
    files.sort_by_key(|f| f.id);
    files.dedup_by_key(|f| f.id);
    Ok(files)
}

/// The command side: sends `request` to the mount at `mountpoint`, calls `progress` with
/// each progress answer, and returns the final message.
pub async fn request(
    mountpoint: &Path,
    request: &Request,
    mut progress: impl FnMut(u64, u64),
) -> Result<String, String> {
    let socket = socket_path(mountpoint);
    let stream = UnixStream::connect(&socket).await.map_err(|e| {
        format!(
            "cannot reach the trackfs mount at {} ({e}); is it mounted, with a disk cache?",
            mountpoint.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        match serde_json::from_str::<Answer>(&line).map_err(|e| e.to_string())? {
            Answer::Progress { done, total } => progress(done, total),
            Answer::Done { message } => return Ok(message),
            Answer::Error { message } => return Err(message),
        }
    }
    Err("the mount closed the connection without an answer".into())
}

/// The trackfs mountpoint holding `path`, and `path` relative to it.
pub fn locate(path: &Path) -> Result<(PathBuf, PathBuf), String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let point = mounts
        .lines()
        .filter(|l| l.contains(" - fuse.trackfs ") || l.contains(" - fuse trackfs"))
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(super::unescape_mountinfo(p)))
        .filter(|p| canonical.starts_with(p))
        .max_by_key(|p| p.as_os_str().len())
        .ok_or_else(|| format!("{} is not under a trackfs mount", path.display()))?;
    let relative = canonical
        .strip_prefix(&point)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    Ok((point, relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_nobody_listens_on_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (dead, live, file) = (
            dir.path().join("dead.sock"),
            dir.path().join("live.sock"),
            dir.path().join("note.sock"),
        );
        // A listener dropped without its cleanup leaves its socket behind, refusing.
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let _listening = std::os::unix::net::UnixListener::bind(&live).unwrap();
        std::fs::write(&file, b"not a socket").unwrap();
        remove_dead_sockets(dir.path(), std::time::Duration::from_secs(3600));
        assert!(dead.exists(), "too young to be taken for dead");
        remove_dead_sockets(dir.path(), std::time::Duration::ZERO);
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(file.exists());
    }
}
