//! The block store: ciphertext pieces of fixed-size blocks, one file each
//! (`data/<2 hex>/<file id>.<block>`), written under a temporary name and renamed into
//! place, each with a checksummed header ([`super::block`]) that is verified on every read.
//! Why this layout (and its numbers): docs/design.md, "Disk cache".
//!
//! The least recently used order is the files' modification times: a hit sets it, a restart
//! reads it back, and there is no index file that a crash could tear. Eviction runs after a
//! write, on the writer's thread, never on a reader's; pinned files are evicted last, that is
//! never for the size bound (the pin wins and the rest of the cache makes room).

use super::block::{self, HEADER_LEN};
use super::dir::{self, DirError, DirLock};
use crate::client::stats::Stats;
use crate::protocol::model::FileId;
use bytes::{Bytes, BytesMut};
use lru::LruCache;
use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Bytes of ciphertext per stored piece: the reader's block, so every run it asks for is
/// made of whole pieces (the last piece of a file is shorter).
pub(crate) const BLOCK_SIZE: u64 = 256 << 10;

/// (file, block index).
type Key = (FileId, u64);

struct State {
    /// Stored bytes (header included) per piece, most recently used first.
    lru: LruCache<Key, u64>,
    bytes: u64,
    pinned: HashSet<FileId>,
}

/// What `trackfs cache` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub pinned_bytes: u64,
    pub bound: u64,
    /// Ciphertext bytes stored per file.
    pub files: HashMap<FileId, u64>,
    pub pinned: Vec<FileId>,
}

pub struct Store {
    root: PathBuf,
    bound: u64,
    state: Mutex<State>,
    writable: AtomicBool,
    next_temp: AtomicU64,
    pub(crate) stats: Arc<Stats>,
    /// Held until [`Store::close`]: then the next mount may open the directory.
    lock: Mutex<Option<DirLock>>,
    /// Tests close it to make reads hang like a hung disk.
    #[cfg(test)]
    pub(crate) read_hold: super::test_hold::Hold,
}

fn parse_name(name: &str) -> Option<Key> {
    let (id, block) = name.split_once('.')?;
    Some((FileId::from_hex(id).ok()?, block.parse().ok()?))
}

impl Store {
    /// Opens (creating) the store in `root`, the origin's own folder: takes the lock, drops
    /// what a crash left half-written, and reads back the pieces in least-recently-used order.
    pub fn open(root: &Path, bound: u64, stats: Arc<Stats>) -> Result<Store, DirError> {
        let io = |source| DirError::Io {
            dir: root.display().to_string(),
            source,
        };
        dir::make_private(root).map_err(io)?;
        let lock = dir::lock(root)?;
        let temp = root.join("tmp");
        // Whatever is here was being written when a mount ended: never believed, so gone.
        let _ = std::fs::remove_dir_all(&temp);
        std::fs::create_dir_all(&temp).map_err(io)?;
        std::fs::create_dir_all(root.join("data")).map_err(io)?;
        let mut found = scan(&root.join("data"));
        found.sort_by_key(|(_, _, modified)| *modified);
        let mut lru = LruCache::unbounded();
        let mut bytes = 0;
        for (key, len, _) in found {
            bytes += len;
            lru.put(key, len);
        }
        let store = Store {
            root: root.to_path_buf(),
            bound,
            state: Mutex::new(State {
                lru,
                bytes,
                pinned: read_pins(&root.join("pins")),
            }),
            writable: AtomicBool::new(true),
            next_temp: AtomicU64::new(0),
            stats,
            lock: Mutex::new(Some(lock)),
            #[cfg(test)]
            read_hold: Default::default(),
        };
        // The bound may have been lowered since the last mount.
        store.evict();
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, (file, block): Key) -> PathBuf {
        let hex = file.to_string();
        self.root
            .join("data")
            .join(&hex[..2])
            .join(format!("{hex}.{block}"))
    }

    pub fn contains(&self, file: FileId, block: u64) -> bool {
        self.lock().lru.contains(&(file, block))
    }

    /// A stored block's ciphertext and its file's total size, checked; `None` when it is not
    /// stored or fails its checks (then it is dropped, counted and logged).
    pub fn read(&self, file: FileId, block: u64) -> Option<(Bytes, u64)> {
        let mut out = BytesMut::new();
        let total = self.read_into(file, block, &mut out)?;
        Some((out.freeze(), total))
    }

    /// Appends a stored block's ciphertext to `out` (read straight into it: a reader's buffer,
    /// no copy) and gives its file's total size; `None`, with `out` as it was, when it is not
    /// stored or fails its checks (then it is dropped, counted and logged).
    pub fn read_into(&self, file: FileId, block: u64, out: &mut BytesMut) -> Option<u64> {
        #[cfg(test)]
        self.read_hold.pass();
        let key = (file, block);
        let path = self.path(key);
        let start = out.len();
        let mut header = [0u8; HEADER_LEN];
        let found = std::fs::File::open(&path).and_then(|mut f| {
            let len = f.metadata()?.len();
            // Any other length is a damaged piece: read what fits, and `verify` says so.
            let data = len.saturating_sub(HEADER_LEN as u64).min(BLOCK_SIZE + 1) as usize;
            let head = (len as usize).min(HEADER_LEN);
            f.read_exact(&mut header[..head])?;
            out.resize(start + data, 0);
            f.read_exact(&mut out[start..])?;
            Ok((f, head))
        });
        let (f, head) = match found {
            Ok(found) => found,
            Err(e) => {
                out.truncate(start);
                if e.kind() != ErrorKind::NotFound {
                    tracing::debug!("disk cache: cannot read {}: {e}", path.display());
                }
                self.forget(key);
                self.stats.disk_misses.incr();
                return None;
            }
        };
        match block::verify_parts(&header[..head], &out[start..], file, block * BLOCK_SIZE) {
            Ok(piece) => {
                // Recency lives in the file's time, so it survives a restart.
                let _ = f.set_modified(SystemTime::now());
                self.lock().lru.promote(&key);
                self.stats.disk_hits.incr();
                self.stats.disk_bytes_read.add(piece.len as u64);
                Some(piece.total)
            }
            Err(why) => {
                out.truncate(start);
                tracing::warn!(
                    "disk cache: dropping {} ({why}); it will be fetched again",
                    path.display()
                );
                self.stats.disk_checksum_failures.incr();
                let _ = std::fs::remove_file(&path);
                self.forget(key);
                self.stats.disk_misses.incr();
                None
            }
        }
    }

    fn forget(&self, key: Key) {
        let mut state = self.lock();
        if let Some(len) = state.lru.pop(&key) {
            state.bytes -= len;
        }
    }

    /// Stops writing and lets go of the directory's lock.
    pub fn close(&self) {
        self.writable.store(false, Ordering::Relaxed);
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// Stores one block (blocking I/O: call it off the async threads), then evicts down to
    /// the bound. The first failure to write (a full disk, a read-only or vanished directory)
    /// turns writing off for the rest of the mount, with one warning.
    pub fn write(&self, file: FileId, block: u64, total: u64, data: &[u8]) {
        if !self.is_writable() || self.contains(file, block) {
            return;
        }
        let key = (file, block);
        match self.write_piece(key, total, data) {
            Ok(len) => {
                self.stats.disk_bytes_written.add(data.len() as u64);
                let mut state = self.lock();
                if let Some(old) = state.lru.put(key, len) {
                    state.bytes -= old;
                }
                state.bytes += len;
            }
            Err(e) => {
                if self.writable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "disk cache {}: cannot write ({e}); it is off for this mount, reads go on from the network",
                        self.root.display()
                    );
                }
                return;
            }
        }
        self.evict();
    }

    fn write_piece(&self, key: Key, total: u64, data: &[u8]) -> std::io::Result<u64> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = self.root.join("tmp").join(n.to_string());
        let header = block::header(key.0, key.1 * BLOCK_SIZE, total, data);
        let written = std::fs::File::create(&temp).and_then(|mut f| {
            f.write_all(&header)?;
            f.write_all(data)?;
            // The kernel's own timestamps are coarse (a few ms): pieces written in one burst
            // would tie, and their order would be lost at the next mount.
            f.set_modified(SystemTime::now())
        });
        let target = self.path(key);
        let placed = written.and_then(|()| match std::fs::rename(&temp, &target) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let parent = target.parent().unwrap_or(&self.root);
                dir::make_private(parent)?;
                std::fs::rename(&temp, &target)
            }
            other => other,
        });
        if placed.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        placed.map(|()| (HEADER_LEN + data.len()) as u64)
    }

    /// Removes least recently used pieces of unpinned files until the store fits its bound.
    fn evict(&self) {
        let victims: Vec<Key> = {
            let mut state = self.lock();
            let mut excess = state.bytes.saturating_sub(self.bound);
            if excess == 0 {
                return;
            }
            let chosen: Vec<(Key, u64)> = state
                .lru
                .iter()
                .rev()
                .filter(|((file, _), _)| !state.pinned.contains(file))
                .take_while(|(_, len)| {
                    let more = excess > 0;
                    excess = excess.saturating_sub(**len);
                    more
                })
                .map(|(k, len)| (*k, *len))
                .collect();
            for (key, len) in &chosen {
                state.lru.pop(key);
                state.bytes -= len;
            }
            chosen.into_iter().map(|(k, _)| k).collect()
        };
        for key in victims {
            let _ = std::fs::remove_file(self.path(key));
            self.stats.disk_evictions.incr();
        }
    }

    /// Keeps `files` out of eviction, across restarts.
    pub fn pin(&self, files: &[FileId]) -> std::io::Result<()> {
        self.change_pins(|pinned| pinned.extend(files.iter().copied()))
    }

    /// Lets `files` be evicted again (and evicts now if the cache is over its bound).
    pub fn unpin(&self, files: &[FileId]) -> std::io::Result<()> {
        self.change_pins(|pinned| {
            files.iter().for_each(|f| {
                pinned.remove(f);
            })
        })?;
        self.evict();
        Ok(())
    }

    fn change_pins(&self, change: impl FnOnce(&mut HashSet<FileId>)) -> std::io::Result<()> {
        let mut state = self.lock();
        change(&mut state.pinned);
        let mut text: Vec<String> = state.pinned.iter().map(|f| f.to_string()).collect();
        text.sort();
        let temp = self.root.join("tmp").join("pins");
        std::fs::write(&temp, text.join("\n") + "\n")?;
        std::fs::rename(&temp, self.root.join("pins"))
    }

    pub fn is_pinned(&self, file: FileId) -> bool {
        self.lock().pinned.contains(&file)
    }

    pub fn usage(&self) -> Usage {
        let state = self.lock();
        let mut usage = Usage {
            bytes: state.bytes,
            bound: self.bound,
            pinned: state.pinned.iter().copied().collect(),
            ..Usage::default()
        };
        for ((file, _), len) in state.lru.iter() {
            let data = len - HEADER_LEN as u64;
            *usage.files.entry(*file).or_default() += data;
            if state.pinned.contains(file) {
                usage.pinned_bytes += len;
            }
        }
        usage
    }
}

/// Every stored piece under `data`: key, size on disk, last use. Names that are not pieces
/// (left by something else, or by an older version) are removed.
fn scan(data: &Path) -> Vec<(Key, u64, SystemTime)> {
    let mut found = Vec::new();
    let Ok(prefixes) = std::fs::read_dir(data) else {
        return found;
    };
    for prefix in prefixes.flatten() {
        let Ok(entries) = std::fs::read_dir(prefix.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let key = name.to_str().and_then(parse_name);
            match (key, entry.metadata()) {
                (Some(key), Ok(meta)) if meta.is_file() => {
                    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    found.push((key, meta.len(), modified));
                }
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    found
}

fn read_pins(path: &Path) -> HashSet<FileId> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| FileId::from_hex(l.trim()).ok())
        .collect()
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
