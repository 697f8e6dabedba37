//! Where a file's AES key comes from: a local key file owned by the user first, then the
//! origin's `/audiokey`, fetched once per file and kept for the session, and kept wrapped in
//! the disk cache (when there is one) for the next mount, also offline.

use crate::client::error::FetchError;
use crate::client::seams::ControlPlane;
use crate::protocol::crypto::AudioKey;
use crate::protocol::keyfile::Keys;
use crate::protocol::model::FileId;
use crate::readpath::disk::keys::WrappedKeys;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

pub struct KeyStore {
    local: Keys,
    fetched: Mutex<HashMap<FileId, Arc<OnceCell<AudioKey>>>>,
    control: Arc<dyn ControlPlane>,
    disk: Option<Arc<WrappedKeys>>,
}

impl KeyStore {
    pub fn new(local: Keys, control: Arc<dyn ControlPlane>) -> Self {
        KeyStore {
            local,
            fetched: Mutex::new(HashMap::new()),
            control,
            disk: None,
        }
    }

    /// Keys are also looked for in, and kept in, `disk`.
    pub fn with_disk(mut self, disk: Option<Arc<WrappedKeys>>) -> Self {
        self.disk = disk;
        self
    }

    async fn fetch(&self, file: FileId) -> Result<AudioKey, FetchError> {
        if let Some(key) = self.disk.as_ref().and_then(|d| d.get(file)) {
            return Ok(key);
        }
        let key = self.control.audio_key(file).await?;
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.put(file, &key) {
                tracing::debug!(%file, "disk cache: cannot keep the key: {e}");
            }
        }
        Ok(key)
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
}
