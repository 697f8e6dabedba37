//! The mount's side of the disk cache (docs/design.md, "Disk cache"): opening the origin's
//! cache folder, starting from the catalogue snapshot (always, when there is one: the refresh
//! task revalidates it at once, docs/design.md "Refresh"), with its covers and playlists, so
//! the tree is whole at once and offline; saving the snapshot once covers and playlists are
//! loaded and after each refresh that changed it, and closing it all at unmount so the next
//! mount can take the lock.
//!
//! Snapshots are written by one thread of their own, the latest asked for winning, and waited
//! for at most [`SAVE_WAIT`]: a hung disk never hangs an unmount or the refresh task
//! (docs/design.md, "Disk cache", "Nothing outside the tier waits on the disk either").
//! Opening the folder and loading the snapshot run on threads of their own too, waited for
//! while the disk answers (the open) or at most [`OPEN_WAIT`] (the load): a hung disk never
//! hangs `trackfs mount` either; it mounts without.

use super::{MountConfig, MountError};
use crate::catalogue::library::Extras;
use crate::catalogue::refresh::Catalogue;
use crate::catalogue::snapshot::{self, Snapshot};
use crate::client::error::FetchError;
use crate::client::seams::{ControlPlane, RangeSource};
use crate::client::stats::Stats;
use crate::protocol::model::{FileId, PlaylistId};
use crate::readpath::buffers::Buffers;
use crate::readpath::disk::dir::{self, DirError};
use crate::readpath::disk::keys::WrappedKeys;
use crate::readpath::disk::offline::{Gated, Reachability};
use crate::readpath::disk::store::{Store, BLOCK_SIZE};
use crate::readpath::disk::tier::DiskTier;
use crate::readpath::keys::KeyStore;
use crate::readpath::reader::Reader;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest a save of the catalogue snapshot is waited for (at unmount, after a refresh):
/// it is a small file written once and synced, a fraction of a second on any disk that
/// answers. Past it the save goes on alone and the snapshot saved before stays valid.
const SAVE_WAIT: Duration = Duration::from_secs(10);

/// The longest mount start waits for the disk cache with no sign of it going on: opening its
/// folder (made, locked, listed; each step and each entry listed is a sign, so a large cache
/// on a slow disk is waited for as long as it keeps answering), and loading the catalogue
/// snapshot (one small file: this long at most). Milliseconds on a disk that answers, a few
/// seconds for a spun-down one to wake; past it the disk is taken for hung (an NFS home gone
/// away) and the mount goes on from the network with one warning, rather than hanging before
/// anything is mounted and with no word.
pub(crate) const OPEN_WAIT: Duration = Duration::from_secs(10);

/// How many times per `OPEN_WAIT` the open's progress is looked at.
const LOOKS: u32 = 10;

/// Why a call on a thread of its own gave no answer.
#[derive(Debug, thiserror::Error)]
enum Unanswered {
    #[error("did not answer within {} s (a hung disk?)", .0.as_secs_f32())]
    Late(Duration),
    #[error("could not be opened (no thread: {0})")]
    NoThread(std::io::Error),
    #[error("could not be opened (its thread ended with no answer)")]
    Ended,
}

/// Spawns `work` on a thread named `name`, which sends its answer on `send` (when nobody
/// waits any more, the answer drops there: a store opened late releases its lock).
fn spawn_answering<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
    send: impl FnOnce(T) + Send + 'static,
) -> Result<(), Unanswered> {
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || send(work()));
    spawned.map(drop).map_err(Unanswered::NoThread)
}

/// `work` on a thread of its own, which counts its steps in the counter it is given: waited
/// for as long as `seen` (looking at that counter) finds it moved within `wait`; past a
/// `wait` with no step the thread goes on alone.
fn while_moving<T: Send + 'static>(
    name: &str,
    wait: Duration,
    mut seen: impl FnMut(&AtomicU64) -> u64,
    work: impl FnOnce(&AtomicU64) -> T + Send + 'static,
) -> Result<T, Unanswered> {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    let steps = Arc::new(AtomicU64::new(0));
    let (send, answer) = std::sync::mpsc::channel();
    let counted = steps.clone();
    spawn_answering(
        name,
        move || work(&counted),
        move |done| drop(send.send(done)),
    )?;
    let (mut last, mut moved) = (seen(&steps), Instant::now());
    loop {
        match answer.recv_timeout(wait / LOOKS) {
            Ok(done) => return Ok(done),
            Err(RecvTimeoutError::Disconnected) => return Err(Unanswered::Ended),
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = seen(&steps);
        if now != last {
            (last, moved) = (now, Instant::now());
        } else if moved.elapsed() >= wait {
            // An answer that came just now is still taken.
            return match answer.try_recv() {
                Ok(done) => Ok(done),
                Err(TryRecvError::Disconnected) => Err(Unanswered::Ended),
                Err(TryRecvError::Empty) => Err(Unanswered::Late(wait)),
            };
        }
    }
}

/// The same, waited for without holding a runtime thread.
async fn within_async<T: Send + 'static>(
    name: &str,
    wait: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unanswered> {
    let (send, answer) = tokio::sync::oneshot::channel();
    spawn_answering(name, work, move |done| drop(send.send(done)))?;
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(_)) => Err(Unanswered::Ended),
        Err(_) => Err(Unanswered::Late(wait)),
    }
}

/// What a mount starts from.
pub(crate) struct Start {
    pub catalogue: Catalogue,
    pub sizes: HashMap<FileId, u64>,
    /// When the snapshot started from was saved; `None`: fetched from the origin.
    pub from_snapshot: Option<std::time::SystemTime>,
    /// The snapshot's covers and playlists (none when fetched from the origin: the mount
    /// loads them then). Offline, only covers whose pictures are on disk.
    pub extras: Extras,
    pub playlist_etags: HashMap<PlaylistId, String>,
}

/// What the next snapshot holds; sizes learned meanwhile are asked of the reader.
#[derive(Default, Clone)]
struct Saved {
    catalogue: Catalogue,
    extras: Extras,
    playlist_etags: HashMap<PlaylistId, String>,
}

/// The disk cache of one mount.
pub(crate) struct Disk {
    pub folder: PathBuf,
    pub store: Arc<Store>,
    pub keys: Option<Arc<WrappedKeys>>,
    pub reach: Arc<Reachability>,
    tier: Mutex<Option<Arc<DiskTier>>>,
    saved: Mutex<Saved>,
    /// The snapshots being written: the refresh task and unmount may save at once, and the
    /// later state must be the one left on disk.
    saves: Arc<Saves>,
    /// How long a save is waited for (`SAVE_WAIT`; shorter in tests).
    save_wait: Duration,
    /// How long the snapshot's load is waited for (`OPEN_WAIT`; shorter in tests).
    open_wait: Duration,
    /// The control socket's calls into the store, bounded in time.
    pub(crate) calls: super::pins::Calls,
    /// The number of the change feed's last line (`Snapshot::last_change`): the snapshot's
    /// at first, then counted on by the refresh task.
    last_change: AtomicU64,
    reader: Mutex<Option<Arc<Reader>>>,
    key_store: Mutex<Option<Arc<KeyStore>>>,
}

/// Opens the origin's folder under `config.disk_cache`. `None` when the cache is off or
/// cannot be used (one warning; the mount goes on from the network), or goes [`OPEN_WAIT`]
/// with no step done; an error only when another mount holds it.
pub(crate) fn open(config: &MountConfig, stats: Arc<Stats>) -> Result<Option<Disk>, MountError> {
    open_within(config, stats, OPEN_WAIT)
}

/// The same, giving the disk `wait` per step (tests wait less).
pub(crate) fn open_within(
    config: &MountConfig,
    stats: Arc<Stats>,
    wait: Duration,
) -> Result<Option<Disk>, MountError> {
    open_watched(config, stats, wait, |steps| steps.load(Ordering::Relaxed))
}

/// The same, `seen` looking at the count of the open's steps (tests count steps of their own).
fn open_watched(
    config: &MountConfig,
    stats: Arc<Stats>,
    wait: Duration,
    seen: impl FnMut(&AtomicU64) -> u64,
) -> Result<Option<Disk>, MountError> {
    let Some(root) = &config.disk_cache else {
        return Ok(None);
    };
    let origin = dir::origin_folder(&config.origin, &config.credentials.user);
    let folder = root.join(&origin);
    let (at, bound, credentials) = (
        folder.clone(),
        config.disk_cache_size,
        config.credentials.clone(),
    );
    let opening = move |steps: &AtomicU64| {
        let store = Store::open_counting(&at, bound, stats, steps)?;
        steps.fetch_add(1, Ordering::Relaxed);
        Ok::<_, DirError>((store, WrappedKeys::open(&at, &origin, &credentials)))
    };
    let (store, keys) = match while_moving("trackfs-open", wait, seen, opening) {
        Ok(Ok((store, keys))) => (Arc::new(store), keys),
        Ok(Err(e @ DirError::Locked { .. })) => return Err(MountError::Setup(e.to_string())),
        Ok(Err(e)) => {
            tracing::warn!("{e}; going on without a disk cache");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(
                "disk cache {} {e}; going on without a disk cache",
                folder.display()
            );
            return Ok(None);
        }
    };
    let keys = match keys {
        Ok(keys) => Some(Arc::new(keys)),
        Err(e) => {
            tracing::warn!("disk cache: audio keys will not be kept ({e})");
            None
        }
    };
    Ok(Some(Disk {
        folder,
        store,
        keys,
        reach: Arc::new(Reachability::new(&config.origin)),
        tier: Mutex::new(None),
        saved: Mutex::default(),
        saves: Arc::default(),
        save_wait: SAVE_WAIT,
        open_wait: wait,
        calls: super::pins::Calls::new(super::pins::ANSWER_WAIT),
        last_change: AtomicU64::new(0),
        reader: Mutex::new(None),
        key_store: Mutex::new(None),
    }))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Disk {
    /// The catalogue to start from: the snapshot when there is one (then `from_snapshot`; a
    /// warning when the origin cannot even be connected to), else from the origin. Returns
    /// the learned sizes too.
    pub async fn catalogue(
        &self,
        online: impl std::future::Future<Output = Result<Catalogue, FetchError>>,
    ) -> Result<Start, MountError> {
        let folder = self.folder.clone();
        let loading = move || {
            let saved_at = std::fs::metadata(folder.join(snapshot::FILE_NAME))
                .and_then(|m| m.modified())
                .ok();
            snapshot::load(&folder).map(|s| (s, saved_at))
        };
        let saved = match within_async("trackfs-load", self.open_wait, loading).await {
            Ok(Ok(saved)) => Some(saved),
            Ok(Err(snapshot::SnapshotError::Io(io)))
                if io.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Ok(Err(e)) => {
                tracing::warn!("{e}; it will be replaced");
                None
            }
            // Offline, the origin's own error then says why the mount cannot start.
            Err(e) => {
                tracing::warn!(
                    "disk cache: the catalogue snapshot in {} {e}; starting from the origin",
                    self.folder.display()
                );
                None
            }
        };
        if let Some((saved, saved_at)) = saved {
            if !self.reach.probe().await {
                tracing::warn!(
                    "the origin cannot be reached (no connection): starting from the catalogue \
                     saved in {}; only what is in the disk cache can be read until it is back",
                    self.folder.display()
                );
                self.reach.set_offline();
            }
            let catalogue = Catalogue {
                albums: saved.albums,
                etags: saved.etags,
            };
            let mut extras = saved.extras;
            if self.reach.is_offline() {
                // A cover that cannot be read would be a file that fails: not shown.
                extras
                    .covers
                    .retain(|file, info| self.has_picture(*file, info.size));
            }
            self.last_change.store(saved.last_change, Ordering::Relaxed);
            *lock(&self.saved) = Saved {
                catalogue: catalogue.clone(),
                extras: extras.clone(),
                playlist_etags: saved.playlist_etags.clone(),
            };
            return Ok(Start {
                catalogue,
                sizes: saved.sizes,
                from_snapshot: Some(saved_at.unwrap_or_else(std::time::SystemTime::now)),
                extras,
                playlist_etags: saved.playlist_etags,
            });
        }
        let catalogue = online.await?;
        lock(&self.saved).catalogue = catalogue.clone();
        Ok(Start {
            catalogue,
            sizes: HashMap::new(),
            from_snapshot: None,
            extras: Extras::default(),
            playlist_etags: HashMap::new(),
        })
    }

    /// Every piece of a picture of `size` bytes is on disk (not read: that is for its reads).
    fn has_picture(&self, file: FileId, size: u64) -> bool {
        (0..size.div_ceil(BLOCK_SIZE).max(1)).all(|piece| self.store.contains(file, piece))
    }

    /// Once a mount that started from the origin has loaded covers and playlists: the first
    /// snapshot, whole. Blocking (it writes a file).
    pub fn loaded(&self, extras: Extras, playlist_etags: HashMap<PlaylistId, String>) {
        let mut saved = lock(&self.saved);
        (saved.extras, saved.playlist_etags) = (extras, playlist_etags);
        drop(saved);
        self.save_or_warn();
    }

    /// After a refresh that changed the catalogue, its covers or playlists: the snapshot
    /// holds the new ones. Blocking (it writes a file).
    pub fn refreshed(
        &self,
        catalogue: Catalogue,
        extras: Extras,
        playlist_etags: HashMap<PlaylistId, String>,
    ) {
        *lock(&self.saved) = Saved {
            catalogue,
            extras,
            playlist_etags,
        };
        self.save_or_warn();
    }

    /// Saves what `saved` holds with every size the reader has learned (a small file, written
    /// at mount, after refreshes that changed something, and at unmount), waiting for it at
    /// most `save_wait`: whether it was written (or failed, with a warning) by then.
    fn save(&self) -> bool {
        let deadline = Instant::now() + self.save_wait;
        let mut state = lock(&self.saves.state);
        state.asked += 1;
        let number = state.asked;
        // Taken under the lock, so the numbers follow the states: the last asked is the last
        // state, and the one left on disk.
        state.next = Some((number, self.snapshot()));
        if !state.running {
            let (saves, folder) = (self.saves.clone(), self.folder.clone());
            let spawned = std::thread::Builder::new()
                .name("trackfs-save".into())
                .spawn(move || saves.run(&folder));
            if let Err(e) = spawned {
                tracing::warn!("disk cache: cannot save the catalogue (no thread: {e})");
                state.next = None;
                return true;
            }
            state.running = true;
        }
        while state.finished < number {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let (next, _) = self
                .saves
                .done
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
        }
        true
    }

    /// The same, with a warning when the disk did not answer in time.
    fn save_or_warn(&self) {
        if !self.save() {
            tracing::warn!(
                "disk cache: the catalogue snapshot was not saved within {} s (a hung disk?); \
                 the one saved before stays valid, and the next mount revalidates it",
                self.save_wait.as_secs_f32()
            );
        }
    }

    /// What the next snapshot holds (no I/O).
    fn snapshot(&self) -> Snapshot {
        let Saved {
            catalogue: Catalogue { albums, etags },
            extras,
            playlist_etags,
        } = lock(&self.saved).clone();
        let mut sizes = HashMap::new();
        if let Some(reader) = lock(&self.reader).as_ref() {
            let files = albums.iter().flat_map(|a| &a.tracks).flat_map(|t| &t.files);
            for file in files {
                if let Some(size) = reader.known_size(file.id) {
                    sizes.insert(file.id, size);
                }
            }
        }
        Snapshot {
            albums,
            sizes,
            etags,
            extras,
            playlist_etags,
            last_change: self.last_change(),
        }
    }

    /// The number of the change feed's last line as the snapshot has it (0: none).
    pub fn last_change(&self) -> u64 {
        self.last_change.load(Ordering::Relaxed)
    }

    /// The change feed's last line is now number `last`; saved with the next snapshot.
    pub fn changes_numbered_to(&self, last: u64) {
        self.last_change.store(last, Ordering::Relaxed);
    }

    /// The control plane as the read path sees it: failing at once while offline.
    pub fn gate(&self, control: Arc<dyn ControlPlane>) -> Arc<dyn ControlPlane> {
        Arc::new(Gated {
            inner: control,
            reach: self.reach.clone(),
        })
    }

    /// The disk tier over `cdn`, copying ciphertext into buffers from `buffers`.
    pub(crate) fn wrap(
        &self,
        cdn: Arc<dyn RangeSource>,
        buffers: Arc<Buffers>,
    ) -> Arc<dyn RangeSource> {
        let tier = DiskTier::new(self.store.clone(), cdn, self.reach.clone());
        let tier = Arc::new(tier.with_buffers(buffers));
        *lock(&self.tier) = Some(tier.clone());
        tier
    }

    /// The reader whose learned sizes go into the snapshot, and who learns the saved ones;
    /// the keys, which pinning fetches and keeps.
    pub fn attach(&self, reader: Arc<Reader>, keys: Arc<KeyStore>, sizes: &HashMap<FileId, u64>) {
        for (file, size) in sizes {
            reader.learn_size(*file, *size);
        }
        *lock(&self.reader) = Some(reader);
        *lock(&self.key_store) = Some(keys);
    }

    /// What pinning works with; `None` once closed.
    pub fn parts(&self) -> Option<(Arc<DiskTier>, Arc<Reader>, Arc<KeyStore>)> {
        let tier = lock(&self.tier).clone()?;
        let reader = lock(&self.reader).clone()?;
        let keys = lock(&self.key_store).clone()?;
        Some((tier, reader, keys))
    }

    /// At unmount: queued pieces written, the snapshot with the sizes learned, lock released.
    /// Blocking, and bounded however the disk behaves (`FLUSH_WAIT`, then `SAVE_WAIT`):
    /// called once the FUSE session is over.
    pub fn close(&self) {
        let tier = lock(&self.tier).take();
        let flushed = tier.as_ref().is_none_or(|tier| tier.flush());
        self.save_or_warn();
        // A save still running lands nowhere now: the next mount may save its own.
        lock(&self.saves.state).closed = true;
        match tier {
            Some(tier) if flushed => tier.close(),
            // Its flush would wait the bound out again: writing off and the lock released
            // at once; its writers stop with the tier.
            _ => self.store.close(),
        }
        lock(&self.reader).take();
        lock(&self.key_store).take();
    }
}

/// Snapshots asked for and written: by one thread at a time, which writes the latest asked
/// for and goes on while more are asked. So a disk that hangs holds one thread, and a later
/// save neither waits behind a stuck one for ever nor is overtaken by an older state.
#[derive(Default)]
struct Saves {
    state: Mutex<SaveState>,
    /// Told each time a save is finished.
    done: Condvar,
    /// Tests close it to make saves hang like a hung disk.
    #[cfg(test)]
    hold: crate::readpath::disk::test_hold::Hold,
}

#[derive(Default)]
struct SaveState {
    /// The number of the last save asked for.
    asked: u64,
    /// The number of the last save finished (written, failed, or dropped once closed).
    finished: u64,
    /// The latest snapshot asked for and not yet taken by the thread.
    next: Option<(u64, Snapshot)>,
    /// The thread is running.
    running: bool,
    /// The mount is closed (its lock released): what is written is not put in place.
    closed: bool,
}

impl Saves {
    /// The saving thread: writes the latest snapshot asked for until none is left.
    fn run(&self, folder: &Path) {
        loop {
            let (number, snapshot) = {
                let mut state = lock(&self.state);
                match state.next.take() {
                    Some(next) => next,
                    None => {
                        state.running = false;
                        return;
                    }
                }
            };
            #[cfg(test)]
            self.hold.pass();
            let closed = || lock(&self.state).closed;
            match snapshot::save_unless(folder, &snapshot, closed) {
                Ok(true) => {}
                Ok(false) => tracing::info!(
                    "disk cache: a catalogue snapshot finished after the mount was closed; \
                     not used"
                ),
                Err(e) => tracing::warn!("disk cache: cannot save the catalogue: {e}"),
            }
            lock(&self.state).finished = number;
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "disk_open_tests.rs"]
mod open_tests;
