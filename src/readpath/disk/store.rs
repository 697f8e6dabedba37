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
//!
//! Once closed (the mount is over; the next mount, maybe in this same process, may own the
//! directory), a store touches the directory no more: threads still stuck on a hung disk
//! place no piece, evict nothing and write no pins when it answers, and temporary names are
//! the store's own, so an old writer never moves the next mount's temporaries.

use super::block::{self, HEADER_LEN};
use super::dir::{self, DirError, DirLock};
use super::scan::{self, Found, Key};
use crate::client::stats::Stats;
use crate::protocol::model::FileId;
use lru::LruCache;
use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::SystemTime;

/// Bytes of ciphertext per stored piece: the reader's block, so every run it asks for is
/// made of whole pieces (the last piece of a file is shorter).
pub(crate) const BLOCK_SIZE: u64 = 256 << 10;

/// Stores opened by this process so far: with the pid, what makes temporary names a store's own.
static OPENED: AtomicU64 = AtomicU64::new(0);

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
    /// The opening scan is not in yet: `bytes` and the files' sizes are upper bounds (every
    /// piece stored by an earlier mount and not used since counts as a whole one).
    pub measuring: bool,
}

pub struct Store {
    root: PathBuf,
    bound: u64,
    state: Mutex<State>,
    writable: AtomicBool,
    /// Set by [`Store::close`]: the directory is no longer this store's.
    closed: AtomicBool,
    /// `<pid>-<store>`: temporary names no other store (of this process or another) uses.
    temp_prefix: String,
    next_temp: AtomicU64,
    /// Held while the pins change and their file is replaced: one change at a time, written
    /// in order, and never under the index's lock (a pin on a hung disk holds no read up).
    pins_file: Mutex<()>,
    /// Held by a writer from its rename to its piece's entry in the index, and by whatever
    /// removes or drops a piece (the evictor, the removal of a torn one, a read that failed)
    /// from its look to the removal: a piece written again meanwhile is not removed. A read
    /// only tries it, never waits for it (a writer's rename may hang on the disk).
    placing: Mutex<()>,
    pub(crate) stats: Arc<Stats>,
    /// Held until [`Store::close`]: then the next mount may open the directory.
    lock: Mutex<Option<DirLock>>,
    /// The opening scan of sizes and last uses, until it is settled into the index.
    scanning: Mutex<Option<JoinHandle<Vec<Found>>>>,
    /// Tests close it to make reads hang like a hung disk.
    #[cfg(test)]
    pub(crate) read_hold: super::test_hold::Hold,
    /// Tests close it to hang a writer between its temporary and the rename.
    #[cfg(test)]
    pub(crate) write_hold: super::test_hold::Hold,
    /// Tests close it to hang a read's dropping of a piece it found missing or damaged.
    #[cfg(test)]
    pub(crate) drop_hold: super::test_hold::Hold,
    /// Tests close it to hang the writing of the pins file.
    #[cfg(test)]
    pub(crate) pins_hold: super::test_hold::Hold,
    /// Tests close it to hang an eviction between choosing its victims and removing them.
    #[cfg(test)]
    pub(crate) evict_hold: super::test_hold::Hold,
    /// Tests close it to hang the removal of a torn piece between its check and its removal.
    #[cfg(test)]
    pub(crate) torn_hold: super::test_hold::Hold,
    /// Fired each time a thread finds `placing` taken and waits for it.
    #[cfg(test)]
    pub(crate) placing_waited: super::test_hold::Signal,
}

impl Store {
    /// Opens (creating) the store in `root`, the origin's own folder: takes the lock, drops
    /// what a crash left half-written, and lists the stored pieces; their sizes and order
    /// are read back by a thread of its own ([`scan`]), settled by the first eviction.
    pub fn open(root: &Path, bound: u64, stats: Arc<Stats>) -> Result<Store, DirError> {
        Store::open_counting(root, bound, stats, &AtomicU64::new(0))
    }

    /// The same, adding one to `steps` for each step done (each entry listed is one): who
    /// waits for it tells a slow disk, that goes on answering, from a hung one.
    pub(crate) fn open_counting(
        root: &Path,
        bound: u64,
        stats: Arc<Stats>,
        steps: &AtomicU64,
    ) -> Result<Store, DirError> {
        Store::open_with(root, bound, stats, steps, || ())
    }

    /// The same, the scan starting once `gate` returns (tests hold it like a hung disk).
    #[cfg(test)]
    pub(crate) fn open_gated(
        root: &Path,
        bound: u64,
        stats: Arc<Stats>,
        gate: impl FnOnce() + Send + 'static,
    ) -> Result<Store, DirError> {
        Store::open_with(root, bound, stats, &AtomicU64::new(0), gate)
    }

    fn open_with(
        root: &Path,
        bound: u64,
        stats: Arc<Stats>,
        steps: &AtomicU64,
        gate: impl FnOnce() + Send + 'static,
    ) -> Result<Store, DirError> {
        let io = |source| DirError::Io {
            dir: root.display().to_string(),
            source,
        };
        let step = || steps.fetch_add(1, Ordering::Relaxed);
        dir::make_private(root).map_err(io)?;
        step();
        let lock = dir::lock(root)?;
        step();
        let temp = root.join("tmp");
        // Whatever is here was being written when a mount ended: never believed, so gone.
        let _ = std::fs::remove_dir_all(&temp);
        step();
        std::fs::create_dir_all(&temp).map_err(io)?;
        std::fs::create_dir_all(root.join("data")).map_err(io)?;
        step();
        let keys = scan::list_counting(&root.join("data"), steps);
        let mut lru = LruCache::unbounded();
        for key in &keys {
            lru.put(*key, scan::WHOLE);
        }
        let mut bytes = scan::WHOLE * keys.len() as u64;
        let scan_root = root.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("trackfs-scan".into())
            .spawn(move || {
                gate();
                scan::sizes(&scan_root, keys)
            });
        let (scanning, touched) = match spawned {
            Ok(handle) => (Some(handle), Some(HashSet::new())),
            // No thread to spare: the scan is done here.
            Err(_) => {
                let found = scan::sizes(root, lru.iter().map(|(k, _)| *k).collect());
                let (found, short) = scan::split_short(found);
                short
                    .into_iter()
                    .for_each(|k| scan::remove_if_short(root, k));
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
            closed: AtomicBool::new(false),
            temp_prefix: format!(
                "{}-{}",
                std::process::id(),
                OPENED.fetch_add(1, Ordering::Relaxed)
            ),
            next_temp: AtomicU64::new(0),
            pins_file: Mutex::new(()),
            placing: Mutex::new(()),
            stats,
            lock: Mutex::new(Some(lock)),
            scanning: Mutex::new(scanning),
            #[cfg(test)]
            read_hold: Default::default(),
            #[cfg(test)]
            write_hold: Default::default(),
            #[cfg(test)]
            drop_hold: Default::default(),
            #[cfg(test)]
            pins_hold: Default::default(),
            #[cfg(test)]
            evict_hold: Default::default(),
            #[cfg(test)]
            torn_hold: Default::default(),
            #[cfg(test)]
            placing_waited: Default::default(),
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

    /// Takes `placing` (before the index's lock, never after).
    fn lock_placing(&self) -> MutexGuard<'_, ()> {
        #[cfg(test)]
        match self.placing.try_lock() {
            Ok(placing) => return placing,
            Err(TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(TryLockError::WouldBlock) => self.placing_waited.fire(),
        }
        self.placing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: Key) -> PathBuf {
        scan::piece_path(&self.root, key)
    }

    /// Waits for the opening scan if it still runs, and rebuilds the index from it: sizes and
    /// order as stored, the pieces used since most recent. Blocking: never called by a read.
    fn settle(&self) {
        let mut scanning = self.scanning.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = scanning.take() {
            self.settle_from(handle);
        }
    }

    /// Settles the opening scan if it has ended, without waiting for it (nor for a thread
    /// that waits for it): never blocks on the disk.
    fn settle_if_done(&self) {
        let mut scanning = match self.scanning.try_lock() {
            Ok(scanning) => scanning,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if scanning.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(handle) = scanning.take() {
                self.settle_from(handle);
            }
        }
    }

    /// Rebuilds the index from the scan's findings (called with `scanning` held), and removes
    /// the torn pieces it found, unless written since or the store is closed (the folder may
    /// be the next mount's by then). Not under the index's lock: a hung disk holds no read up.
    fn settle_from(&self, handle: JoinHandle<Vec<Found>>) {
        // A scan that panicked found nothing: every listed piece stays counted as whole.
        let Ok(found) = handle.join() else {
            self.lock().touched = None;
            return;
        };
        let (found, short) = scan::split_short(found);
        let touched = {
            let mut state = self.lock();
            let touched = state.touched.take().unwrap_or_default();
            (state.lru, state.bytes) = scan::settled(&state.lru, found, &touched);
            touched
        };
        for key in short.into_iter().filter(|k| !touched.contains(k)) {
            if self.is_closed() {
                return;
            }
            self.remove_torn(key);
        }
    }

    /// Removes a piece the scan found torn, if it still is: under `placing`, so a whole one
    /// a writer renames into its place meanwhile (a read's or a pin's fetch) is neither
    /// removed between the look and the removal nor, once indexed, removed at all.
    fn remove_torn(&self, key: Key) {
        let _placing = self.lock_placing();
        if self.is_closed() || self.contains(key.0, key.1) {
            return;
        }
        let path = self.path(key);
        if scan::is_short(&path) {
            #[cfg(test)]
            self.torn_hold.pass();
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Whether the opening scan is in (the sizes and order are the stored ones).
    fn is_settled(&self) -> bool {
        self.lock().touched.is_none()
    }

    /// Waits for the opening scan, settles it and evicts down to the bound (which may have
    /// been lowered since the last mount): once as a mount begins, on a thread of its own.
    /// Once the store is closed it evicts nothing.
    pub(crate) fn tidy(&self) {
        self.settle();
        self.evict();
    }

    pub fn contains(&self, file: FileId, block: u64) -> bool {
        self.lock().lru.contains(&(file, block))
    }

    /// Stops writing and lets go of the directory's lock: from now on nothing of this store
    /// touches the directory (it may be the next mount's).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.writable.store(false, Ordering::Relaxed);
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
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
            Ok(None) => return,
            Ok(Some((len, _placing))) => {
                self.stats.disk_bytes_written.add(data.len() as u64);
                let mut state = self.lock();
                state.touch(key);
                if let Some(old) = state.lru.put(key, len) {
                    state.bytes -= old;
                }
                state.bytes += len;
            }
            Err(e) => {
                if self.writable.swap(false, Ordering::Relaxed) && !self.is_closed() {
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

    /// Writes a piece under a temporary name and renames it into place: its stored size and
    /// the `placing` lock (held until it is in the index), or `None` when the store was
    /// closed meanwhile (then nothing is placed).
    fn write_piece(
        &self,
        key: Key,
        total: u64,
        data: &[u8],
    ) -> std::io::Result<Option<(u64, MutexGuard<'_, ()>)>> {
        let temp = self.temp_path();
        let header = block::header(key.0, key.1 * BLOCK_SIZE, total, data);
        let written = std::fs::File::create(&temp).and_then(|mut f| {
            f.write_all(&header)?;
            f.write_all(data)?;
            // The kernel's own timestamps are coarse (a few ms): pieces written in one burst
            // would tie, and their order would be lost at the next mount.
            f.set_modified(SystemTime::now())
        });
        #[cfg(test)]
        self.write_hold.pass();
        // Closed while the disk hung: the directory may be the next mount's now. (Closing
        // just after this check can still place this piece: a whole, checked one.)
        if self.is_closed() {
            let _ = std::fs::remove_file(&temp);
            return Ok(None);
        }
        let target = self.path(key);
        let placing = self.lock_placing();
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
        placed.map(|()| Some(((HEADER_LEN + data.len()) as u64, placing)))
    }

    /// A temporary name of this store's own.
    fn temp_path(&self) -> PathBuf {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{n}", self.temp_prefix);
        self.root.join("tmp").join(name)
    }

    /// Removes least recently used pieces of unpinned files until the store fits its bound.
    /// Until the opening scan is in, the sizes counted are upper bounds and the order is not
    /// known: within the bound by them, nothing needs to go; past it, the scan is waited for.
    /// Nothing once the store is closed (the pieces may be listed by the next mount).
    fn evict(&self) {
        if self.is_closed() {
            return;
        }
        if self.lock().bytes > self.bound {
            self.settle();
        }
        if self.is_closed() {
            return;
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
        #[cfg(test)]
        self.evict_hold.pass();
        for key in victims {
            let _placing = self.lock_placing();
            if self.is_closed() {
                return;
            }
            // Written again since it was chosen (a pin's fetch, a read): it stays.
            if self.contains(key.0, key.1) {
                continue;
            }
            let _ = std::fs::remove_file(self.path(key));
            self.stats.disk_evictions.incr();
        }
    }

    /// What is stored now. Never waits for the opening scan (it may hang on a hung disk,
    /// and this is asked from async code): until it is in, the figures are upper bounds and
    /// `measuring` says so.
    pub fn usage(&self) -> Usage {
        self.settle_if_done();
        let state = self.lock();
        let mut usage = Usage {
            bytes: state.bytes,
            bound: self.bound,
            pinned: state.pinned.iter().copied().collect(),
            measuring: state.touched.is_some(),
            ..Usage::default()
        };
        for ((file, _), len) in state.lru.iter() {
            // A torn piece may be shorter than a header (it fails its check when read).
            let data = len.saturating_sub(HEADER_LEN as u64);
            *usage.files.entry(*file).or_default() += data;
            if state.pinned.contains(file) {
                usage.pinned_bytes += len;
            }
        }
        usage
    }
}

#[path = "store_pins.rs"]
mod pins;
use pins::read_pins;

#[path = "store_read.rs"]
mod read;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
