//! Audio keys kept on disk for offline playback, only ever wrapped: AES-256-GCM under a key
//! derived (HKDF-SHA256) from the credentials and the origin, with the file id as associated
//! data. So the cache directory alone decrypts nothing, a key cannot be moved onto another
//! file id, and the wrong credentials (or a flipped byte) make a miss, never a wrong key.

use crate::protocol::credentials::Credentials;
use crate::protocol::crypto::AudioKey;
use crate::protocol::model::FileId;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Changes with the format: a key of another version is a miss.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
/// version + nonce + 16-byte key + 16-byte tag.
const WRAPPED_LEN: usize = 1 + NONCE_LEN + 16 + 16;

pub struct WrappedKeys {
    dir: PathBuf,
    cipher: Aes256Gcm,
    next_temp: AtomicU64,
}

/// The wrapping key: nothing in the cache directory leads to it without the password.
fn wrapping_key(credentials: &Credentials, origin_folder: &str) -> Aes256Gcm {
    let mut secret = Vec::new();
    // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
    secret.extend_from_slice(&(credentials.user.len() as u64).to_le_bytes());
    secret.extend_from_slice(credentials.user.as_bytes());
    secret.extend_from_slice(credentials.password.as_bytes());
    let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"trackfs audio key wrap v1"), &secret);
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit (255 * 32), so this cannot fail.
    let _ = hkdf.expand(origin_folder.as_bytes(), &mut key);
    Aes256Gcm::new(&key.into())
}

impl WrappedKeys {
    /// Keys under `root/keys` (created), wrapped for these credentials.
    pub fn open(
        root: &Path,
        origin_folder: &str,
        credentials: &Credentials,
    ) -> std::io::Result<Self> {
        let dir = root.join("keys");
        super::dir::make_private(&dir)?;
        Ok(WrappedKeys {
            dir,
            cipher: wrapping_key(credentials, origin_folder),
            next_temp: AtomicU64::new(0),
        })
    }

    fn path(&self, file: FileId) -> PathBuf {
        self.dir.join(file.to_hex())
    }

    /// The key of `file` if one is stored and unwraps with these credentials for this file.
    pub fn get(&self, file: FileId) -> Option<AudioKey> {
        let stored = std::fs::read(self.path(file)).ok()?;
        if stored.len() != WRAPPED_LEN || stored[0] != VERSION {
            return None;
        }
        let nonce = Nonce::from_slice(&stored[1..1 + NONCE_LEN]);
        let payload = Payload {
            msg: &stored[1 + NONCE_LEN..],
            aad: &file.0,
        };
        match self.cipher.decrypt(nonce, payload) {
            Ok(key) => AudioKey::from_slice(&key).ok(),
            Err(_) => {
                tracing::debug!(%file, "a stored key does not unwrap with these credentials");
                None
            }
        }
    }

    /// Stores `key` wrapped, atomically (a temporary renamed into place).
    pub fn put(&self, file: FileId, key: &AudioKey) -> std::io::Result<()> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let payload = Payload {
            msg: &key.0,
            aad: &file.0,
        };
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| std::io::Error::other("cannot wrap a key"))?;
        let mut stored = Vec::with_capacity(WRAPPED_LEN);
        stored.push(VERSION);
        stored.extend_from_slice(&nonce);
        stored.extend_from_slice(&sealed);
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(".tmp{n}"));
        std::fs::write(&temp, &stored)
            .and_then(|()| std::fs::rename(&temp, self.path(file)))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(password: &str) -> Credentials {
        Credentials {
            user: "alice".into(),
            password: password.into(),
        }
    }

    const F: FileId = FileId([3; 20]);
    const KEY: AudioKey = AudioKey([0xab; 16]);

    #[test]
    fn a_key_comes_back_only_with_the_same_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let keys = WrappedKeys::open(dir.path(), "o", &creds("pw")).unwrap();
        assert_eq!(keys.get(F), None);
        keys.put(F, &KEY).unwrap();
        assert_eq!(keys.get(F), Some(KEY));
        let wrong = WrappedKeys::open(dir.path(), "o", &creds("other")).unwrap();
        assert_eq!(wrong.get(F), None);
        let other_origin = WrappedKeys::open(dir.path(), "p", &creds("pw")).unwrap();
        assert_eq!(other_origin.get(F), None);
    }

    #[test]
    fn the_stored_form_shows_no_key_and_cannot_be_moved_or_altered() {
        let dir = tempfile::tempdir().unwrap();
        let keys = WrappedKeys::open(dir.path(), "o", &creds("pw")).unwrap();
        keys.put(F, &KEY).unwrap();
        let stored = std::fs::read(keys.path(F)).unwrap();
        assert!(!stored.windows(4).any(|w| w == [0xab; 4]));
        let hex = String::from_utf8_lossy(&stored).to_lowercase();
        assert!(!hex.contains("abababab"));
        // Moved onto another file id: not believed.
        let g = FileId([4; 20]);
        std::fs::write(keys.path(g), &stored).unwrap();
        assert_eq!(keys.get(g), None);
        for at in 0..stored.len() {
            let mut bad = stored.clone();
            bad[at] ^= 1;
            std::fs::write(keys.path(F), &bad).unwrap();
            assert_eq!(keys.get(F), None, "byte {at}");
        }
    }
}
