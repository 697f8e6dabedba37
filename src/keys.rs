//! Where a file's AES key comes from: a local key file owned by the user first, then the
//! origin's `/audiokey`, fetched once per file and kept for the session.

use crate::client::api::Api;
use crate::client::error::FetchError;
use crate::crypto::AudioKey;
use crate::model::FileId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

pub struct KeyStore {
    local: HashMap<FileId, AudioKey>,
    fetched: Mutex<HashMap<FileId, Arc<OnceCell<AudioKey>>>>,
    api: Arc<Api>,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}, line {line}: {reason}")]
pub struct KeyFileError {
    pub path: String,
    pub line: usize,
    pub reason: String,
}

/// Parses a key file: `<file id hex> <key hex>` per line; `#` comments and blank lines allowed.
pub fn parse_key_file(path: &str, text: &str) -> Result<HashMap<FileId, AudioKey>, KeyFileError> {
    let mut keys = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let error = |reason: String| KeyFileError {
            path: path.to_string(),
            line: index + 1,
            reason,
        };
        let mut parts = line.split_whitespace();
        let (Some(id), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(error("expected `<file id hex> <key hex>`".into()));
        };
        let id = FileId::from_hex(&id.to_ascii_lowercase()).map_err(|e| error(e.to_string()))?;
        // Never echo the key itself in the message.
        let key = AudioKey::from_hex(key).map_err(|e| error(format!("bad key: {e}")))?;
        keys.insert(id, key);
    }
    Ok(keys)
}

impl KeyStore {
    pub fn new(local: HashMap<FileId, AudioKey>, api: Arc<Api>) -> Self {
        KeyStore {
            local,
            fetched: Mutex::new(HashMap::new()),
            api,
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
        cell.get_or_try_init(|| self.api.audio_key(file))
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_parse_and_errors_name_the_line_without_the_key() {
        let id = "ab".repeat(20);
        let text = format!("# keys\n{id} {}\n\n", "01".repeat(16));
        let keys = parse_key_file("k", &text).unwrap();
        assert_eq!(keys.len(), 1);
        let bad = format!("{id} 0102\n");
        let e = parse_key_file("k", &bad).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(!e.to_string().contains("0102"));
        assert!(parse_key_file("k", "nonsense").is_err());
    }
}
