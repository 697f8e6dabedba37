//! The library folder on disk: where each file lives, and the small secret files.
//!
//! `publish` writes this layout and `serve` reads it; nginx configs, benchmarks and the demo
//! rely on it too, so every path is spelled here once:
//!
//! ```text
//! LIBRARY/credentials          `trackfs:<password>`, 0600, created when absent
//! LIBRARY/secret               HMAC secret for URL and token signing, 0600, created when absent
//! LIBRARY/catalog.pb           Catalog protobuf: albums, tracks, playlists, what publish saw
//! LIBRARY/audio/<file id>      ciphertext of the whole stored file
//! LIBRARY/heads/<file id>      first 128 KiB of the stored plaintext
//! LIBRARY/images/<file id>     cover pictures as they are (JPEG or PNG), not encrypted
//! LIBRARY/keys                 `<file id hex> <key hex>` per line, 0600
//! LIBRARY/lifetimes            longest URL/token lifetime a `serve` used, in seconds
//! ```
//!
//! Every write goes through a temporary file and a rename, so a reader (a running `serve`,
//! nginx) never sees half a file. Files named by their content (`audio`, `heads`, `images`)
//! never change; `catalog.pb` is written last and is the one switch from a library to the
//! next (see `docs/design.md`, "Publishing and live reload").

use crate::protocol::credentials::Credentials;
use crate::protocol::keyfile::{self, Keys};
use crate::protocol::model::FileId;
use crate::protocol::proto::library::Catalog;
use prost::Message;
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The user name in `LIBRARY/credentials`.
pub const USER: &str = "trackfs";

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl LibraryError {
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> LibraryError + '_ {
        move |source| LibraryError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn invalid(path: &Path, reason: impl Into<String>) -> LibraryError {
        LibraryError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Taken by `publish` while it writes (see `lock_for_writing`).
const LOCK_NAME: &str = ".publish.lock";

/// The paths of one library folder.
#[derive(Debug, Clone)]
pub struct Library {
    root: PathBuf,
}

impl Library {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Library { root: root.into() }
    }

    /// Every name a library folder holds.
    pub const OWN_NAMES: [&str; 12] = [
        LOCK_NAME,
        "credentials",
        "secret",
        "keys",
        "catalog.pb",
        "lifetimes",
        "audio",
        "heads",
        "images",
        // Written by trackfs before the catalog (v1): removed by the next publish.
        "library.pb",
        "albums",
        "tracks",
    ];

    /// Files of the v1 layout, replaced by `catalog.pb`.
    pub(crate) const LEGACY: [&str; 3] = ["library.pb", "albums", "tracks"];

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the folder already holds a library: every publish writes the secret first.
    pub fn exists(&self) -> bool {
        self.secret().is_file()
    }

    pub fn credentials(&self) -> PathBuf {
        self.root.join("credentials")
    }

    pub fn secret(&self) -> PathBuf {
        self.root.join("secret")
    }

    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    pub fn catalog(&self) -> PathBuf {
        self.root.join("catalog.pb")
    }

    pub fn lifetimes(&self) -> PathBuf {
        self.root.join("lifetimes")
    }

    pub fn image(&self, id: &FileId) -> PathBuf {
        self.root.join("images").join(id.to_hex())
    }

    pub fn audio(&self, id: &FileId) -> PathBuf {
        self.root.join("audio").join(id.to_hex())
    }

    pub fn head(&self, id: &FileId) -> PathBuf {
        self.root.join("heads").join(id.to_hex())
    }

    /// Creates the folder and its subfolders.
    pub fn create_dirs(&self) -> Result<(), LibraryError> {
        for dir in ["audio", "heads", "images"] {
            let path = self.root.join(dir);
            fs::create_dir_all(&path).map_err(LibraryError::io(&path))?;
        }
        Ok(())
    }

    /// Holds the library for one writer: two publishes at once would each write back the key
    /// file they read and lose the other's keys. The lock goes with the returned file.
    pub fn lock_for_writing(&self) -> Result<Option<fs::File>, LibraryError> {
        let path = self.root.join(LOCK_NAME);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(LibraryError::io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(LibraryError::io(&path)(e)),
        }
    }

    /// Creates `credentials` (`trackfs:<random password>`) and `secret` when absent; existing
    /// ones are never overwritten.
    pub fn ensure_secrets(&self) -> Result<(), LibraryError> {
        create_private_if_absent(&self.credentials(), || {
            format!("{USER}:{}\n", random_text(24))
        })?;
        create_private_if_absent(&self.secret(), || format!("{}\n", random_text(48)))
    }

    /// The user and password in `credentials`, read by the same rules as `mount` reads it.
    pub fn read_credentials(&self) -> Result<Credentials, LibraryError> {
        let path = self.credentials();
        let text = fs::read_to_string(&path).map_err(LibraryError::io(&path))?;
        Credentials::from_text(&text).map_err(|e| LibraryError::invalid(&path, e.to_string()))
    }

    /// The catalog of the last complete publish; `None` before the first.
    pub fn read_catalog(&self) -> Result<Option<Catalog>, LibraryError> {
        read_pb(&self.catalog())
    }

    /// Replaces the catalog in one rename: the moment a publish takes effect.
    pub(crate) fn write_catalog(&self, catalog: &Catalog) -> Result<(), LibraryError> {
        write_atomic(&self.catalog(), 0o644, |f| {
            f.write_all(&catalog.encode_to_vec())
        })
    }

    /// The longest URL or token lifetime a `serve` of this library announced.
    pub fn read_lifetimes(&self) -> Option<std::time::Duration> {
        let text = fs::read_to_string(self.lifetimes()).ok()?;
        text.trim().parse().ok().map(std::time::Duration::from_secs)
    }

    /// Records `lifetime` unless a longer one is recorded, so `publish` keeps what left the
    /// library for at least as long as any URL or token handed out for it stays valid.
    pub fn announce_lifetime(&self, lifetime: std::time::Duration) -> Result<(), LibraryError> {
        if self.read_lifetimes().is_some_and(|known| known >= lifetime) {
            return Ok(());
        }
        let text = format!("{}\n", lifetime.as_secs());
        write_atomic(&self.lifetimes(), 0o644, |f| f.write_all(text.as_bytes()))
    }

    /// The HMAC secret (the file's trimmed text, as bytes).
    pub fn read_secret(&self) -> Result<Vec<u8>, LibraryError> {
        let path = self.secret();
        let text = fs::read_to_string(&path).map_err(LibraryError::io(&path))?;
        let secret = text.trim();
        if secret.len() < 16 {
            return Err(LibraryError::invalid(
                &path,
                "secret is shorter than 16 bytes",
            ));
        }
        Ok(secret.as_bytes().to_vec())
    }

    /// The `keys` file; a missing file is an empty map.
    pub fn read_keys(&self) -> Result<Keys, LibraryError> {
        let path = self.keys();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Keys::new()),
            Err(e) => return Err(LibraryError::io(&path)(e)),
        };
        keyfile::parse(&text).map_err(|e| LibraryError::invalid(&path, e.to_string()))
    }

    /// Rewrites `keys` (0600) when its content would change.
    pub fn write_keys(&self, keys: &Keys) -> Result<bool, LibraryError> {
        write_if_changed(&self.keys(), keyfile::format(keys).as_bytes(), 0o600)
    }
}

/// Reads a protobuf file; a missing file is `None`, a malformed one an error naming it.
pub fn read_pb<M: Message + Default>(path: &Path) -> Result<Option<M>, LibraryError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LibraryError::io(path)(e)),
    };
    M::decode(bytes.as_slice())
        .map(Some)
        .map_err(|e| LibraryError::invalid(path, format!("not a valid protobuf: {e}")))
}

/// Random alphanumeric text from the OS generator.
pub fn random_text(len: usize) -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// `dir/.name.<suffix>`: where a file is written before it takes its name (a dot file, so
/// `publish` never takes it for music or for someone else's file).
fn hidden_sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{}.{suffix}", name.unwrap_or_default()))
}

/// Written whole to a temporary file first and then linked into place, so a crash never
/// leaves an empty secret behind (which later runs would keep, as it exists).
fn create_private_if_absent(
    path: &Path,
    make: impl FnOnce() -> String,
) -> Result<(), LibraryError> {
    if path.exists() {
        return Ok(());
    }
    let tmp = hidden_sibling(path, "new");
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(make().as_bytes())?;
            file.sync_all()
        })
        // A link fails when the name exists: someone else's secret is kept, never replaced.
        .and_then(|()| match fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        });
    let _ = fs::remove_file(&tmp);
    written.map_err(LibraryError::io(path))
}

/// Writes `bytes` to `path` through a temporary file and a rename, unless the file already
/// holds exactly these bytes. Returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, LibraryError> {
    match fs::read(path) {
        Ok(existing) if existing == bytes => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LibraryError::io(path)(e)),
    }
    write_atomic(path, mode, |file| file.write_all(bytes))?;
    Ok(true)
}

/// Creates `path` atomically: `fill` writes a temporary file next to it, which is then synced
/// and renamed over `path`.
pub fn write_atomic(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<(), LibraryError> {
    let tmp = hidden_sibling(path, "tmp");
    let result = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| {
            fill(&mut file)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(LibraryError::io(path)(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_by_the_rules_a_mount_reads_them_with() {
        let dir = tempfile::tempdir().unwrap();
        let lib = Library::new(dir.path());
        // A file a mount accepts: blank lines first, CRLF, spaces, a `:` in the password.
        let text = "\n  trackfs:pa:ss \r\n\n";
        fs::write(lib.credentials(), text).unwrap();
        let mounted = Credentials::from_text(text).unwrap();
        let read = lib.read_credentials().unwrap();
        assert_eq!((read.user, read.password), (mounted.user, mounted.password));
        fs::write(lib.credentials(), "trackfs:\n").unwrap();
        let error = lib.read_credentials().unwrap_err().to_string();
        assert!(error.contains("password after the `:` is empty"), "{error}");
    }
}
