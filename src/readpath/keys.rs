//! Where a file's AES key comes from: a local key file owned by the user first, then the
//! origin's `/audiokey`, fetched once per file and kept for the session.

use crate::client::error::FetchError;
use crate::client::seams::ControlPlane;
use crate::protocol::crypto::AudioKey;
use crate::protocol::keyfile::Keys;
use crate::protocol::model::FileId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

pub struct KeyStore {
    local: Keys,
    fetched: Mutex<HashMap<FileId, Arc<OnceCell<AudioKey>>>>,
    control: Arc<dyn ControlPlane>,
}

impl KeyStore {
    pub fn new(local: Keys, control: Arc<dyn ControlPlane>) -> Self {
        KeyStore {
            local,
            fetched: Mutex::new(HashMap::new()),
            control,
        }
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
        cell.get_or_try_init(|| self.control.audio_key(file))
            .await
            .cloned()
    }
}
