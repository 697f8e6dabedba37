//! Where a file's AES key comes from: a local key file owned by the user first, then the
//! origin's `/audiokey`, fetched once per file and kept for the session, and kept wrapped in
//! the disk cache (when there is one) for the next mount, also offline.
//!
//! The disk is never waited on for long: a key is looked up there on a blocking thread for at
//! most `READ_WAIT` (past it, and while that lookup has not returned, keys come from the
//! origin as if none were stored; offline, where the origin cannot answer, the disk is waited
//! for instead), and kept there in the background, a few at a time
//! (`background`). Why: docs/design.md, "Disk cache", "Nothing outside the tier waits on the
//! disk either".

use crate::client::error::FetchError;
use crate::client::seams::ControlPlane;
use crate::client::stats::Stats;
use crate::protocol::crypto::AudioKey;
use crate::protocol::keyfile::Keys;
use crate::protocol::model::FileId;
use crate::readpath::background::Writes;
use crate::readpath::disk::keys::WrappedKeys;
use crate::readpath::disk::offline::Reachability;
use crate::readpath::disk::read::{ReadGuard, READ_WAIT};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// Keys being written to disk at once, at most (one small file each).
const KEY_WRITES: usize = 4;

pub struct KeyStore {
    local: Keys,
    fetched: Mutex<HashMap<FileId, Arc<OnceCell<AudioKey>>>>,
    control: Arc<dyn ControlPlane>,
    disk: Option<Arc<WrappedKeys>>,
    /// Lookups on disk: bounded, and skipped while the disk does not answer.
    disk_reads: ReadGuard,
    disk_writes: Writes,
    /// Offline the origin cannot give a key: a slow disk is then waited for, not skipped.
    reach: Option<Arc<Reachability>>,
    stats: Arc<Stats>,
}

impl KeyStore {
    pub fn new(local: Keys, control: Arc<dyn ControlPlane>) -> Self {
        KeyStore {
            local,
            fetched: Mutex::new(HashMap::new()),
            control,
            disk: None,
            disk_reads: ReadGuard::new(READ_WAIT),
            disk_writes: Writes::new(KEY_WRITES),
            reach: None,
            stats: Arc::default(),
        }
    }

    /// Whether the origin is known to be unreachable (the disk cache's gate): then a key kept
    /// on a slow disk is waited for, since `/audiokey` cannot answer instead.
    pub fn with_reachability(mut self, reach: Option<Arc<Reachability>>) -> Self {
        self.reach = reach;
        self
    }

    /// Keys are also looked for in, and kept in, `disk`; lookups that time out are counted
    /// in `stats`.
    pub fn with_disk(mut self, disk: Option<Arc<WrappedKeys>>, stats: Arc<Stats>) -> Self {
        self.disk = disk;
        self.stats = stats;
        self
    }

    async fn fetch(&self, file: FileId) -> Result<AudioKey, FetchError> {
        if let Some(key) = self.stored_key(file).await {
            return Ok(key);
        }
        let key = self.control.audio_key(file).await?;
        self.keep_on_disk(file, &key);
        Ok(key)
    }

    /// The key kept on disk, if the disk answers within the bound; offline, if it answers
    /// within 30 s in all (`disk::read::OFFLINE_WAIT`, as the tier waits for stored audio: a
    /// pinned track must play offline even from a disk that takes seconds to spin up).
    async fn stored_key(&self, file: FileId) -> Option<AudioKey> {
        let disk = self.disk.clone()?;
        let offline = self.reach.as_ref().is_some_and(|r| r.is_offline());
        if self.disk_reads.is_slow() && !offline {
            return None;
        }
        let read = move |_: &dyn Fn() -> bool| disk.get(file);
        match &self.reach {
            Some(reach) => {
                let waited = self
                    .disk_reads
                    .run_or_wait_offline(&self.stats, reach, 0, read);
                waited.await.flatten()
            }
            None => self.disk_reads.run(&self.stats, read).await.flatten(),
        }
    }

    /// Keeps `key` on disk in the background (not while the disk does not answer, nor when
    /// enough keys are being written already: then it is asked for again next mount).
    fn keep_on_disk(&self, file: FileId, key: &AudioKey) {
        let Some(disk) = self.disk.clone() else {
            return;
        };
        if self.disk_reads.is_slow() {
            return;
        }
        let Some(turn) = self.disk_writes.start(file) else {
            tracing::debug!(%file, "disk cache: the key is not kept (the disk is busy)");
            return;
        };
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            if let Err(e) = disk.put(file, &key) {
                tracing::debug!(%file, "disk cache: cannot keep the key: {e}");
            }
        });
    }

    /// The key if it is already known, without I/O.
    pub fn cached(&self, file: FileId) -> Option<AudioKey> {
        if let Some(key) = self.local.get(&file) {
            return Some(key.clone());
        }
        let map = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&file)?.get().cloned()
    }

    pub async fn get(&self, file: FileId) -> Result<AudioKey, FetchError> {
        if let Some(key) = self.local.get(&file) {
            return Ok(key.clone());
        }
        let cell = {
            let mut map = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(file).or_default().clone()
        };
        cell.get_or_try_init(|| self.fetch(file)).await.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::doubles::{MemoryControlPlane, TrackSpec};
    use crate::protocol::model::AudioFormat;
    use std::sync::atomic::Ordering;

    fn control_with_one_file() -> (Arc<MemoryControlPlane>, FileId) {
        let control = Arc::new(MemoryControlPlane::new());
        let spec = TrackSpec::new(1, "T", AudioFormat::Mp3_320, vec![0u8; 64]);
        let (_, files) = control.add_album("A", "B", &[spec]);
        (control, files[0])
    }

    #[tokio::test]
    async fn a_key_is_fetched_once_per_file_however_many_ask() {
        let (control, file) = control_with_one_file();
        let keys = Arc::new(KeyStore::new(Keys::new(), control.clone()));
        assert!(keys.cached(file).is_none());
        let asks: Vec<_> = (0..8)
            .map(|_| {
                let keys = keys.clone();
                tokio::spawn(async move { keys.get(file).await })
            })
            .collect();
        for ask in asks {
            assert_eq!(ask.await.unwrap().unwrap(), control.key(file).unwrap());
        }
        assert_eq!(control.calls.audio_key.load(Ordering::Relaxed), 1);
        assert_eq!(keys.cached(file), control.key(file));
    }

    #[tokio::test]
    async fn a_local_key_wins_without_asking_the_origin() {
        let (control, file) = control_with_one_file();
        let local = Keys::from([(file, AudioKey([7; 16]))]);
        let keys = KeyStore::new(local, control.clone());
        assert_eq!(keys.get(file).await.unwrap(), AudioKey([7; 16]));
        assert_eq!(keys.cached(file), Some(AudioKey([7; 16])));
        assert_eq!(control.calls.audio_key.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_asked_again() {
        let (control, file) = control_with_one_file();
        control.fail(&file.0);
        let keys = KeyStore::new(Keys::new(), control.clone());
        assert!(keys.get(file).await.is_err());
        assert!(keys.cached(file).is_none());
        assert!(keys.get(file).await.is_err());
        assert_eq!(control.calls.audio_key.load(Ordering::Relaxed), 2);
    }

    fn wrapped(dir: &std::path::Path) -> Arc<WrappedKeys> {
        let credentials = crate::protocol::credentials::Credentials {
            user: "alice".into(),
            password: "pw".into(),
        };
        Arc::new(WrappedKeys::open(dir, "o", &credentials).unwrap())
    }

    #[tokio::test]
    async fn a_fetched_key_is_kept_wrapped_and_read_from_disk_by_the_next_mount() {
        let (control, file) = control_with_one_file();
        let dir = tempfile::tempdir().unwrap();
        let first = KeyStore::new(Keys::new(), control.clone())
            .with_disk(Some(wrapped(dir.path())), Arc::default());
        assert_eq!(first.get(file).await.unwrap(), control.key(file).unwrap());
        // Hang guard only: kept in the background.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while wrapped(dir.path()).get(file).is_none() {
            assert!(std::time::Instant::now() < deadline, "never kept");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let next = KeyStore::new(Keys::new(), control.clone())
            .with_disk(Some(wrapped(dir.path())), Arc::default());
        assert_eq!(next.get(file).await.unwrap(), control.key(file).unwrap());
        assert_eq!(control.calls.audio_key.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_key_file_that_hangs_falls_back_to_the_origin_and_frees_the_runtime() {
        let (control, file) = control_with_one_file();
        let dir = tempfile::tempdir().unwrap();
        let disk = wrapped(dir.path());
        let pipe = dir.path().join("keys").join(file.to_hex());
        crate::readpath::background::hung_file(&pipe);
        let stats = Arc::new(Stats::default());
        let (done, answer) = std::sync::mpsc::channel();
        let (asking, counted) = (control.clone(), stats.clone());
        std::thread::spawn(move || {
            // One runtime thread: a lookup made on it would freeze the runtime.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut keys = KeyStore::new(Keys::new(), asking).with_disk(Some(disk), counted);
            keys.disk_reads = ReadGuard::new(std::time::Duration::from_millis(50));
            let keys = Arc::new(keys);
            let got = runtime.block_on(keys.get(file));
            let slow = keys.disk_reads.is_slow();
            // A writer lets the abandoned lookup go, so the runtime can end.
            drop(std::fs::OpenOptions::new().write(true).open(&pipe));
            drop(runtime);
            let _ = done.send((got, slow));
        });
        // Hang guard only.
        let wait = std::time::Duration::from_secs(60);
        let (got, slow) = answer.recv_timeout(wait).expect("the key lookup hung");
        assert_eq!(got.unwrap(), control.key(file).unwrap());
        assert_eq!(control.calls.audio_key.load(Ordering::Relaxed), 1);
        assert!(
            slow,
            "the disk is skipped while the lookup is out, and nothing written"
        );
        assert_eq!(stats.disk_reads_timed_out.get(), 1);
    }

    #[test]
    fn offline_a_key_on_a_slow_disk_is_waited_for_not_skipped() {
        let (control, file) = control_with_one_file();
        let dir = tempfile::tempdir().unwrap();
        let disk = wrapped(dir.path());
        disk.put(file, &control.key(file).unwrap()).unwrap();
        // A named pipe in its place: the lookup hangs until a writer comes, as a disk that
        // spins up.
        let path = dir.path().join("keys").join(file.to_hex());
        let stored = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        crate::readpath::background::hung_file(&path);
        // Offline: an origin nobody listens on, known to be unreachable.
        let reach = Arc::new(Reachability::new("http://127.0.0.1:9"));
        reach.set_offline();
        let (done, answer) = std::sync::mpsc::channel();
        let asking = control.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let mut keys = KeyStore::new(Keys::new(), asking)
                .with_disk(Some(disk), Arc::default())
                .with_reachability(Some(reach));
            keys.disk_reads = ReadGuard::new(std::time::Duration::from_millis(20));
            let got = runtime.block_on(keys.get(file));
            let _ = done.send(got);
        });
        // Well past several bounds, the disk answers: the pipe's writer gives the stored key.
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut pipe| std::io::Write::write_all(&mut pipe, &stored))
            .unwrap();
        // Hang guard only.
        let got = answer
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the key lookup hung");
        assert_eq!(got.unwrap(), control.key(file).unwrap());
        assert_eq!(control.calls.audio_key.load(Ordering::Relaxed), 0);
    }
}
