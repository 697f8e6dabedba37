//! The block store: ciphertext pieces of fixed-size blocks, one file each
//! (`data/<2 hex>/<file id>.<block>`), written under a temporary name and renamed into
//! place, each with a checksummed header ([`super::block`]) that is verified on every read.
//! Why this layout (and its numbers): docs/design.md, "Disk cache".
//!
//! The least recently used order is the files' modification times: a hit sets it, a restart
//! reads it back (in the background, [`super::scan`]), and there is no index file that a
//! crash could tear. Eviction runs after a write, on the writer's thread, never on a reader's;
//! pinned files are evicted last, that is never for the size bound (the pin wins and the rest
//! of the cache makes room).

use super::block::{self, HEADER_LEN};
use super::dir::{self, DirError, DirLock};
use super::scan::{self, Found, Key};
use crate::client::stats::Stats;
use crate::protocol::model::FileId;
use bytes::{Bytes, BytesMut};
use lru::LruCache;
use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::SystemTime;

/// Bytes of ciphertext per stored piece: the reader's block, so every run it asks for is
/// made of whole pieces (the last piece of a file is shorter).
pub(crate) const BLOCK_SIZE: u64 = 256 << 10;

struct State {
    /// Stored bytes (header included) per piece, most recently used first.
    lru: LruCache<Key, u64>,
    bytes: u64,
    pinned: HashSet<FileId>,
    /// While the opening scan runs: the pieces read or written since (then most recent).
    touched: Option<HashSet<Key>>,
}

impl State {
    /// Marks `key` used now.
    fn touch(&mut self, key: Key) {
        if let Some(touched) = &mut self.touched {
            touched.insert(key);
        }
    }
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
    /// The opening scan of sizes and last uses, until it is settled into the index.
    scanning: Mutex<Option<JoinHandle<Vec<Found>>>>,
    /// Tests close it to make reads hang like a hung disk.
    #[cfg(test)]
    pub(crate) read_hold: super::test_hold::Hold,
}

impl Store {
    /// Opens (creating) the store in `root`, the origin's own folder: takes the lock, drops
    /// what a crash left half-written, and lists the stored pieces; their sizes and order
    /// are read back by a thread of its own ([`scan`]), settled by the first eviction.
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
        let keys = scan::list(&root.join("data"));
        let mut lru = LruCache::unbounded();
        for key in &keys {
            lru.put(*key, scan::WHOLE);
        }
        let mut bytes = scan::WHOLE * keys.len() as u64;
        let scan_root = root.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("trackfs-scan".into())
            .spawn(move || scan::sizes(&scan_root, keys));
        let (scanning, touched) = match spawned {
            Ok(handle) => (Some(handle), Some(HashSet::new())),
            // No thread to spare: the scan is done here.
            Err(_) => {
                let found = scan::sizes(root, lru.iter().map(|(k, _)| *k).collect());
                (lru, bytes) = scan::settled(&lru, found, &HashSet::new());
                (None, None)
            }
        };
        let settled = scanning.is_none();
        let store = Store {
            root: root.to_path_buf(),
            bound,
            state: Mutex::new(State {
                lru,
                bytes,
                pinned: read_pins(&root.join("pins")),
                touched,
            }),
            writable: AtomicBool::new(true),
            next_temp: AtomicU64::new(0),
            stats,
            lock: Mutex::new(Some(lock)),
            scanning: Mutex::new(scanning),
            #[cfg(test)]
            read_hold: Default::default(),
        };
        // The bound may have been lowered since the last mount (with a scan running,
        // `DiskTier::new` has it seen to, by `tidy`).
        if settled {
            store.evict();
        }
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: Key) -> PathBuf {
        scan::piece_path(&self.root, key)
    }

    /// Waits for the opening scan if it still runs, and rebuilds the index from it: sizes and
    /// order as stored, the pieces used since most recent. Blocking: never called by a read.
    fn settle(&self) {
        let mut scanning = self.scanning.lock().unwrap_or_else(|p| p.into_inner());
        let Some(handle) = scanning.take() else {
            return;
        };
        // A scan that panicked found nothing: every listed piece stays counted as whole.
        let found = handle.join().ok();
        let mut state = self.lock();
        let touched = state.touched.take().unwrap_or_default();
        if let Some(found) = found {
            (state.lru, state.bytes) = scan::settled(&state.lru, found, &touched);
        }
    }

    /// Waits for the opening scan, settles it and evicts down to the bound (which may have
    /// been lowered since the last mount): once as a mount begins, on a thread of its own.
    pub(crate) fn tidy(&self) {
        self.settle();
        self.evict();
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
            Ok((f, head, len))
        });
        let (f, head, len) = match found {
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
                let mut state = self.lock();
                state.touch(key);
                // Its size is known now (until the opening scan is in, it was a guess).
                if let Some(was) = state
                    .lru
                    .get_mut(&key)
                    .map(|was| std::mem::replace(was, len))
                {
                    state.bytes = state.bytes - was + len;
                }
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
                state.touch(key);
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
    /// Until the opening scan is in, the sizes counted are upper bounds and the order is not
    /// known: within the bound by them, nothing needs to go; past it, the scan is waited for.
    fn evict(&self) {
        if self.lock().bytes > self.bound {
            self.settle();
        }
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

    /// Lets `files` be evicted again (and evicts now if the cache is over its bound, once the
    /// opening scan is in). Blocking.
    pub fn unpin(&self, files: &[FileId]) -> std::io::Result<()> {
        self.change_pins(|pinned| {
            files.iter().for_each(|f| {
                pinned.remove(f);
            })
        })?;
        self.tidy();
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
        self.settle();
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
