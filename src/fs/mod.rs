//! The filesystem core: inodes, attributes, directory listings and reads, in domain terms.
//!
//! It never sees a fuser type (the adapter in `crate::fs::fuse` does the translation), so it can be
//! driven directly by tests without a mount. Reads are async; the adapter runs them on tokio so
//! the kernel's request loop never waits on the network.

pub mod diff;
pub mod fuse;
pub mod names;
pub(crate) mod playlists;
mod swap;
pub mod tree;

#[cfg(test)]
mod tests;

use crate::client::error::FetchError;
use crate::client::stats::Stats;
use crate::protocol::model::FileId;
use crate::readpath::block_cache::BlockCache;
use crate::readpath::images::ImageStore;
use crate::readpath::reader::{FileRef, Reader};
use bytes::Bytes;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio::sync::Semaphore;
use tree::{Ino, NodeKind, Tree};

/// Why an operation failed; [`FsError::errno`] is the one place errors become errno values.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("read-only file system")]
    ReadOnly,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("permission denied")]
    Denied,
    /// The file changed on the CDN since its size was learned: the kernel's cached pages and
    /// size no longer describe it (mountpoint-s3 answers the same for a changed object).
    #[error("stale file: {0}")]
    Stale(FetchError),
    /// The request was given up: the mount is shutting down, or handling it failed.
    #[error("request abandoned")]
    Abandoned,
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::Denied => libc::EACCES,
            FsError::Stale(_) => libc::ESTALE,
            FsError::Abandoned | FsError::Fetch(_) => libc::EIO,
        }
    }

    /// A failed read or size lookup: a file that changed is `Stale`, the rest `Fetch`.
    fn from_fetch(error: FetchError) -> FsError {
        match error {
            e @ FetchError::SizeChanged { .. } => FsError::Stale(e),
            e => FsError::Fetch(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    /// Contents never change (tracks, directories): the kernel may cache for long.
    pub immutable: bool,
}

/// How a file should be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Content-addressed: keep the kernel page cache across opens.
    Cached,
    /// Live contents (`.trackfs/stats`): bypass the page cache.
    Direct,
}

#[derive(Debug)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
}

/// Tracks probed in the background when a directory is listed (sizes for `ls -l`): those in
/// it and one level of subdirectories (an artist's albums), never a whole library because
/// someone listed its root.
const PROBE_LIMIT: usize = 1024;
const PROBE_DEPTH: usize = 1;
const PROBES_AT_ONCE: usize = 128;

pub struct FsCore {
    /// The tree shown now; a refresh swaps in a new one (`swap`).
    tree: RwLock<Arc<Tree>>,
    /// Tracks that left the tree, so files still open on them read on (`swap`).
    retired: Mutex<swap::Retired>,
    /// `.trackfs/changes` and `.trackfs/refresh` (`swap`).
    live: swap::Live,
    reader: Arc<Reader>,
    cache: Arc<BlockCache>,
    stats: Arc<Stats>,
    probes: Arc<Semaphore>,
    /// Cover pictures; `None` for a core without covers (then the tree has none either).
    images: Option<Arc<ImageStore>>,
}

/// What a request needs of a node, copied out of the tree (which a refresh may swap meanwhile).
#[derive(Debug, Clone)]
enum What {
    Dir,
    Stats,
    Changes,
    Refresh,
    Track(FileRef, u64),
    Cover { image: FileId, size: u64 },
    Playlist(Bytes),
}

impl What {
    fn of(kind: &NodeKind) -> What {
        match kind {
            NodeKind::Dir { .. } => What::Dir,
            NodeKind::Stats => What::Stats,
            NodeKind::Changes => What::Changes,
            NodeKind::Refresh => What::Refresh,
            NodeKind::Track { file, header } => What::Track(*file, *header),
            NodeKind::Cover { image, size } => What::Cover {
                image: *image,
                size: *size,
            },
            NodeKind::Playlist { text } => What::Playlist(text.clone()),
        }
    }
}

impl FsCore {
    pub fn new(tree: Tree, reader: Arc<Reader>, cache: Arc<BlockCache>, stats: Arc<Stats>) -> Self {
        FsCore {
            tree: RwLock::new(Arc::new(tree)),
            retired: Mutex::default(),
            live: swap::Live::default(),
            reader,
            cache,
            stats,
            probes: Arc::new(Semaphore::new(PROBES_AT_ONCE)),
            images: None,
        }
    }

    /// The same, reading covers' bytes from `images`.
    pub fn with_images(mut self, images: Arc<ImageStore>) -> Self {
        self.images = Some(images);
        self
    }

    /// The tree shown now.
    pub fn tree(&self) -> Arc<Tree> {
        self.tree.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The node as the current tree has it, else as it was when it left (an open file).
    fn what(&self, ino: Ino) -> Option<(What, SystemTime)> {
        if let Some(node) = self.tree().get(ino) {
            return Some((What::of(&node.kind), node.mtime));
        }
        self.retired_node(ino)
    }

    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, FsError> {
        let tree = self.tree();
        match tree.get(parent).map(|n| &n.kind) {
            None => return Err(FsError::NotFound),
            Some(NodeKind::Dir { .. }) => {}
            Some(_) => return Err(FsError::NotDir),
        }
        let ino = tree.lookup(parent, name).ok_or(FsError::NotFound)?;
        self.getattr(ino).await
    }

    pub async fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        let (what, mtime) = self.what(ino).ok_or(FsError::NotFound)?;
        let (kind, size, immutable) = match what {
            What::Dir => (Kind::Dir, 0, true),
            What::Stats => (Kind::File, self.render_stats().len() as u64, false),
            What::Changes => (Kind::File, self.live.changes_len(), false),
            // Its contents come into being when it is read.
            What::Refresh => (Kind::File, 0, false),
            What::Track(file, header) => {
                (Kind::File, self.track_size(ino, file, header).await?, true)
            }
            What::Cover { size, .. } => (Kind::File, size, true),
            What::Playlist(text) => (Kind::File, text.len() as u64, true),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            mtime,
            immutable,
        })
    }

    /// The size the mount shows: the stored size minus the hidden header.
    async fn track_size(&self, ino: Ino, file: FileRef, header: u64) -> Result<u64, FsError> {
        let total = self.reader.size(file).await;
        let total = total.map_err(|e| self.report(ino, file, "cannot learn the size", e))?;
        Ok(total.saturating_sub(header))
    }

    /// The one place a failed read is logged: naming the track as the user sees it and its
    /// file id, at the error's own level. Below this, errors are returned, not logged.
    fn report(&self, ino: Ino, file: FileRef, what: &str, error: FetchError) -> FsError {
        let path = self.tree().path(ino);
        let file = file.id;
        match error.level() {
            tracing::Level::ERROR => tracing::error!(%file, "{path}: {what}: {error}"),
            _ => tracing::warn!(%file, "{path}: {what}: {error}"),
        }
        FsError::from_fetch(error)
    }

    /// Entries of a directory, `.` and `..` first. Also starts learning the sizes of the tracks
    /// below it, concurrently, so the `stat` calls of `ls -l` that follow find them known.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, FsError> {
        let tree = self.tree();
        let node = tree.get(ino).ok_or(FsError::NotFound)?;
        let NodeKind::Dir { children } = &node.kind else {
            return Err(FsError::NotDir);
        };
        let mut entries = vec![
            DirEntry {
                ino,
                kind: Kind::Dir,
                name: ".".into(),
            },
            DirEntry {
                ino: node.parent,
                kind: Kind::Dir,
                name: "..".into(),
            },
        ];
        for (name, &child) in children {
            let kind = match tree.get(child).map(|n| &n.kind) {
                Some(NodeKind::Dir { .. }) => Kind::Dir,
                _ => Kind::File,
            };
            entries.push(DirEntry {
                ino: child,
                kind,
                name: name.clone(),
            });
        }
        self.probe_sizes_below(&tree, ino);
        Ok(entries)
    }

    fn probe_sizes_below(&self, tree: &Tree, ino: Ino) {
        for file in tree.tracks_below(ino, PROBE_DEPTH, PROBE_LIMIT) {
            if self.reader.known_size(file.id).is_some() {
                continue;
            }
            let (reader, probes) = (self.reader.clone(), self.probes.clone());
            tokio::spawn(async move {
                let _permit = probes.acquire().await;
                if let Err(e) = reader.size(file).await {
                    tracing::debug!(file = %file.id, error = %e, "size probe failed");
                }
            });
        }
    }

    /// `access(2)` without `default_permissions`: everything is readable, directories are
    /// searchable, nothing is writable (the mount is read-only), no file is executable.
    pub fn access(&self, ino: Ino, write: bool, execute: bool) -> Result<(), FsError> {
        let (what, _) = self.what(ino).ok_or(FsError::NotFound)?;
        if write {
            return Err(FsError::ReadOnly);
        }
        match what {
            What::Dir => Ok(()),
            _ if execute => Err(FsError::Denied),
            _ => Ok(()),
        }
    }

    pub fn opendir(&self, ino: Ino) -> Result<(), FsError> {
        match self.tree().get(ino).ok_or(FsError::NotFound)?.kind {
            NodeKind::Dir { .. } => Ok(()),
            _ => Err(FsError::NotDir),
        }
    }

    pub fn open(&self, ino: Ino, write: bool) -> Result<OpenMode, FsError> {
        let (what, _) = self.what(ino).ok_or(FsError::NotFound)?;
        if write {
            return Err(FsError::ReadOnly);
        }
        match what {
            What::Dir => Err(FsError::IsDir),
            What::Stats | What::Changes | What::Refresh => Ok(OpenMode::Direct),
            What::Track(..) => {
                // The kernel takes the mount's read-ahead for this file once we answer.
                self.reader.before_open();
                Ok(OpenMode::Cached)
            }
            What::Cover { .. } | What::Playlist(_) => Ok(OpenMode::Cached),
        }
    }

    /// Once mounted: the kernel's read-ahead for each open (`readpath::kernel_window`).
    pub fn attach_kernel_window(&self, mountpoint: &std::path::Path) {
        self.reader.attach_kernel_window(mountpoint);
    }

    /// A file was closed (FLUSH): a track that was only looked at tells the kernel's
    /// read-ahead that a scanner is at work (`readpath::kernel_window`).
    pub fn closed(&self, ino: Ino) {
        if let Some((What::Track(file, _), _)) = self.what(ino) {
            self.reader.closed(file);
        }
    }

    /// Reads bytes of the file as the mount shows it: exactly `size` bytes except at the end.
    pub async fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let (what, _) = self.what(ino).ok_or(FsError::NotFound)?;
        tracing::trace!(ino, offset, size, "read");
        let data = match what {
            What::Dir => return Err(FsError::IsDir),
            // Not counted as served: reading the counters must not move them.
            What::Stats => return Ok(slice(Bytes::from(self.render_stats()), offset, size)),
            What::Changes => return Ok(slice(self.live.changes(), offset, size)),
            What::Refresh => return Ok(slice(self.refresh_text(offset).await, offset, size)),
            What::Playlist(text) => slice(text, offset, size),
            What::Cover { image, size: len } => {
                let images = self.images.as_ref().ok_or(FsError::NotFound)?;
                let bytes = images.get(image, Some(len)).await.inspect_err(|e| {
                    tracing::warn!(image = %image, "cover read failed: {e}");
                })?;
                slice(bytes, offset, size)
            }
            What::Track(file, header) => self
                .reader
                .read(file, offset + header, size as u64)
                .await
                .map_err(|e| self.report(ino, file, &format!("read at {offset} failed"), e))?,
        };
        self.stats.bytes_served.add(data.len() as u64);
        self.stats.reads.incr();
        Ok(data)
    }

    pub fn render_stats(&self) -> String {
        self.stats.render(self.cache.bytes(), self.cache.budget())
    }
}

/// Bytes `offset..offset+size` of a file held whole, short at its end.
fn slice(whole: Bytes, offset: u64, size: u32) -> Bytes {
    let start = offset.min(whole.len() as u64) as usize;
    let end = (start + size as usize).min(whole.len());
    whole.slice(start..end)
}

#[cfg(test)]
#[path = "library_tests.rs"]
mod library_tests;
