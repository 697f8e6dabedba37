//! `trackfs publish SRC LIBRARY`: encrypt a music folder into a CDN library.
//!
//! Each audio file becomes ciphertext under `audio/<file id>` (AES-128-CTR with its own key; Ogg
//! Vorbis files get the 167-byte header in front), a plaintext head file and a Track protobuf;
//! albums and the library index are merged with what is already there. File ids are SHA-1 of
//! the source bytes and known files keep their key, so publishing twice changes nothing.

use super::catalog::{self, CatalogChanges, StoredTrack};
use super::library::{write_atomic, write_if_changed, Library, LibraryError};
use super::scan::{self, ScanError};
use crate::protocol::crypto::{apply_keystream, AudioKey};
use crate::protocol::model::{Container, FileId, TrackId, OGG_HEADER_LEN};
use crate::units::format_size;
use indicatif::{ProgressBar, ProgressStyle};
use rand::RngCore;
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

/// Bytes of stored plaintext that go into a head file.
pub const HEAD_LEN: u64 = 128 * 1024;

const CHUNK: usize = 256 * 1024;

#[derive(Debug, Default, Clone)]
pub struct PublishOptions {
    /// Never draw a progress bar (it is only drawn on a terminal anyway).
    pub no_progress: bool,
}

/// A source file that was not published, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Default, Clone)]
pub struct PublishSummary {
    pub library: PathBuf,
    /// Tracks found in the source and stored (new or already there).
    pub tracks: usize,
    pub new_tracks: usize,
    pub albums: usize,
    pub new_albums: usize,
    /// Ciphertext bytes written in this run (0 when everything was already there).
    pub bytes_encrypted: u64,
    pub skipped: Vec<Skipped>,
}

impl fmt::Display for PublishSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "published {} tracks in {} albums to {} ({} new tracks, {} new albums, {} encrypted)",
            self.tracks,
            self.albums,
            self.library.display(),
            self.new_tracks,
            self.new_albums,
            format_size(self.bytes_encrypted),
        )?;
        match self.skipped.len() {
            0 => Ok(()),
            1 => write!(f, "; 1 file skipped"),
            n => write!(f, "; {n} files skipped"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("source folder {} does not exist", .0.display())]
    MissingSource(PathBuf),
    #[error("source {} is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("no Ogg Vorbis, MP3 or FLAC files found in {} ({skipped} files skipped)", path.display())]
    NothingToPublish { path: PathBuf, skipped: usize },
    #[error(
        "{} is not empty and not a trackfs library; publish into a new or empty folder",
        .0.display()
    )]
    NotALibrary(PathBuf),
    #[error("another `trackfs publish` is writing to {}; run this one after it", .0.display())]
    Busy(PathBuf),
    #[error("library: {0}")]
    Library(#[from] LibraryError),
}

/// Publishes every supported file under `src` into the library folder `dst`.
pub fn publish(
    src: &Path,
    dst: &Path,
    options: &PublishOptions,
) -> Result<PublishSummary, PublishError> {
    check_source(src)?;
    check_destination(dst)?;
    let mut summary = PublishSummary {
        library: dst.to_path_buf(),
        ..Default::default()
    };
    let files = walk(src, &mut summary.skipped);
    if files.is_empty() {
        return Err(PublishError::NothingToPublish {
            path: src.to_path_buf(),
            skipped: summary.skipped.len(),
        });
    }
    let lib = Library::new(dst);
    lib.create_dirs()?;
    let Some(_writing) = lib.lock_for_writing()? else {
        return Err(PublishError::Busy(dst.to_path_buf()));
    };
    lib.ensure_secrets()?;
    let bar = progress_bar(options, files.len());
    let mut keys = lib.read_keys()?;
    let stored = store_all(&lib, &mut keys, src, &files, &bar, &mut summary);
    // Keys first, even after an error: ciphertext on disk must never lose its key.
    let keys_written = lib.write_keys(&keys);
    bar.finish_and_clear();
    let stored = stored?;
    keys_written?;
    if stored.is_empty() {
        return Err(PublishError::NothingToPublish {
            path: src.to_path_buf(),
            skipped: summary.skipped.len(),
        });
    }
    let changes: CatalogChanges = catalog::write_catalog(&lib, &stored, catalog::today())?;
    summary.tracks = changes.tracks;
    summary.new_tracks = changes.new_tracks;
    summary.albums = changes.albums;
    summary.new_albums = changes.new_albums;
    Ok(summary)
}

fn check_source(src: &Path) -> Result<(), PublishError> {
    match std::fs::metadata(src) {
        Err(_) => Err(PublishError::MissingSource(src.to_path_buf())),
        Ok(m) if !m.is_dir() => Err(PublishError::NotAFolder(src.to_path_buf())),
        Ok(_) => Ok(()),
    }
}

/// A library is published into a new folder, an empty one, or itself (perhaps only a
/// `credentials` file so far); never into a folder of other things, where its files would mix
/// with them.
fn check_destination(dst: &Path) -> Result<(), PublishError> {
    let entries = match std::fs::read_dir(dst) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LibraryError::io(dst)(e).into()),
    };
    // Dot files are a library's temporary files (left by a crash) or a desktop's litter.
    let foreign = entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        !name.starts_with('.') && !Library::OWN_NAMES.contains(&name.as_str())
    });
    match foreign && !Library::new(dst).exists() {
        true => Err(PublishError::NotALibrary(dst.to_path_buf())),
        false => Ok(()),
    }
}

fn progress_bar(options: &PublishOptions, len: usize) -> ProgressBar {
    if options.no_progress || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}")
        .map(|s| s.progress_chars("=> "))
    {
        bar.set_style(style);
    }
    bar
}

fn skip(bar: &ProgressBar, skipped: &mut Vec<Skipped>, path: &Path, reason: String) {
    bar.suspend(|| tracing::warn!("skipping {}: {reason}", path.display()));
    skipped.push(Skipped {
        path: path.to_path_buf(),
        reason,
    });
}

/// Stores each file; a bad source file is skipped, a library write error stops the run.
fn store_all(
    lib: &Library,
    keys: &mut BTreeMap<FileId, AudioKey>,
    src: &Path,
    files: &[PathBuf],
    bar: &ProgressBar,
    summary: &mut PublishSummary,
) -> Result<Vec<StoredTrack>, PublishError> {
    let mut stored = Vec::new();
    let mut seen: HashMap<TrackId, PathBuf> = HashMap::new();
    for path in files {
        let rel = path.strip_prefix(src).unwrap_or(path);
        bar.set_message(rel.display().to_string());
        bar.inc(1);
        let info = match scan::scan(path, rel) {
            Ok(info) => info,
            Err(ScanError::NotAudio) if !has_audio_extension(path) => {
                tracing::debug!("ignoring {} (not audio)", path.display());
                continue;
            }
            Err(e) => {
                skip(bar, &mut summary.skipped, path, e.to_string());
                continue;
            }
        };
        let container = info.format.container();
        let album = catalog::album_id(&info.album_artist, &info.album);
        match store_file(lib, keys, path, container) {
            Ok((file_id, written)) => {
                summary.bytes_encrypted += written;
                let track = catalog::track_id(&album, &file_id);
                if let Some(first) = seen.get(&track) {
                    let reason = format!("same content and album as {}", first.display());
                    skip(bar, &mut summary.skipped, path, reason);
                    continue;
                }
                seen.insert(track, path.clone());
                stored.push(StoredTrack { info, file_id });
            }
            Err(StoreError::Source(e)) => {
                skip(
                    bar,
                    &mut summary.skipped,
                    path,
                    format!("cannot read it: {e}"),
                );
            }
            Err(StoreError::Library(e)) => return Err(e.into()),
        }
    }
    Ok(stored)
}

/// Names that announce audio: a file with one of these that is not usable gets a warning;
/// other non-audio files (covers, playlists) are ignored quietly.
fn has_audio_extension(path: &Path) -> bool {
    const AUDIO: [&str; 16] = [
        "ogg", "oga", "mp3", "flac", "opus", "m4a", "m4b", "mp4", "aac", "wav", "wma", "aif",
        "aiff", "ape", "wv", "mpc",
    ];
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO.contains(&e.to_ascii_lowercase().as_str()))
}

/// Every regular file under `src` (following symlinks, visiting each folder once), sorted so
/// runs are reproducible; dot files are ignored, entries that cannot be read are skipped.
fn walk(src: &Path, skipped: &mut Vec<Skipped>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut visited = std::collections::HashSet::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(m) = std::fs::metadata(&dir) {
            use std::os::unix::fs::MetadataExt;
            if !visited.insert((m.dev(), m.ino())) {
                continue;
            }
        }
        // A library inside the music folder (perhaps this very one) is not music: its heads
        // are plaintext cuts of the tracks.
        if Library::new(&dir).exists() {
            let reason = "a trackfs library, not music".to_string();
            skip(&ProgressBar::hidden(), skipped, &dir, reason);
            continue;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                let reason = format!("cannot read this folder: {e}");
                skip(&ProgressBar::hidden(), skipped, &dir, reason);
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.is_file() => files.push(path),
                Ok(_) => {}
                Err(e) => {
                    let reason = format!("cannot read it: {e}");
                    skip(&ProgressBar::hidden(), skipped, &path, reason);
                }
            }
        }
    }
    files.sort();
    files
}

#[derive(Debug)]
enum StoreError {
    Source(io::Error),
    Library(LibraryError),
}

/// Encrypts one file into the library (unless its ciphertext is already there) and writes its
/// head file. Returns the file id and the ciphertext bytes written.
fn store_file(
    lib: &Library,
    keys: &mut BTreeMap<FileId, AudioKey>,
    path: &Path,
    container: Container,
) -> Result<(FileId, u64), StoreError> {
    let (file_id, source_len) = hash_file(path).map_err(StoreError::Source)?;
    let known = keys.contains_key(&file_id);
    let key = keys.entry(file_id).or_insert_with(random_key).clone();
    let header = stored_header(container, &file_id);
    let stored_len = header.len() as u64 + source_len;
    let audio = lib.audio(&file_id);
    let present = std::fs::metadata(&audio).is_ok_and(|m| m.len() == stored_len);
    let (head, written) = if known && present {
        (read_head(path, &header).map_err(StoreError::Source)?, 0)
    } else {
        let stored = StoredBytes {
            header: &header,
            file_id,
            len: stored_len,
        };
        (encrypt_into(&audio, path, &key, &stored)?, stored_len)
    };
    write_if_changed(&lib.head(&file_id), &head, 0o644).map_err(StoreError::Library)?;
    Ok((file_id, written))
}

fn random_key() -> AudioKey {
    let mut key = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key);
    AudioKey(key)
}

/// SHA-1 and length of a file, streamed.
fn hash_file(path: &Path) -> io::Result<(FileId, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((FileId(hasher.finalize().into()), len))
}

/// The bytes stored before the source file: for Ogg Vorbis a 167-byte header that does not
/// start with `OggS` (deterministic, so re-publishing writes the same bytes), else nothing.
pub fn stored_header(container: Container, file_id: &FileId) -> Vec<u8> {
    if container != Container::OggVorbis {
        return Vec::new();
    }
    let mut header = vec![0u8; OGG_HEADER_LEN as usize];
    let text = format!("trackfs ogg header v1\n{file_id}\n");
    let n = text.len().min(header.len());
    header[..n].copy_from_slice(&text.as_bytes()[..n]);
    header
}

/// What a source file must become: `header` + the source, `len` bytes, whose source part
/// hashed to `file_id` a moment ago.
struct StoredBytes<'a> {
    header: &'a [u8],
    file_id: FileId,
    len: u64,
}

/// Writes `header + source`, encrypted from offset 0, to `dest` through a temporary file, and
/// returns the head (the first `HEAD_LEN` plaintext bytes) from the same read. The source is
/// hashed again as it is read: a file that changed since its id was computed is refused, as
/// its id would no longer name its content.
fn encrypt_into(
    dest: &Path,
    source: &Path,
    key: &AudioKey,
    stored: &StoredBytes<'_>,
) -> Result<Vec<u8>, StoreError> {
    let mut input = File::open(source).map_err(StoreError::Source)?;
    let mut source_error = None;
    let mut head = stored.header.to_vec();
    let result = write_atomic(dest, 0o644, |out| {
        let mut block = stored.header.to_vec();
        apply_keystream(key, 0, &mut block);
        out.write_all(&block)?;
        let mut offset = block.len() as u64;
        let mut hasher = Sha1::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = input.read(&mut buf).inspect_err(|e| {
                source_error = Some(io::Error::new(e.kind(), e.to_string()));
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            let room = (HEAD_LEN as usize).saturating_sub(head.len()).min(n);
            head.extend_from_slice(&buf[..room]);
            apply_keystream(key, offset, &mut buf[..n]);
            out.write_all(&buf[..n])?;
            offset += n as u64;
        }
        if offset != stored.len || FileId(hasher.finalize().into()) != stored.file_id {
            let e = io::Error::other("the file changed while it was being published");
            source_error = Some(io::Error::new(e.kind(), e.to_string()));
            return Err(e);
        }
        Ok(())
    });
    match (result, source_error) {
        (Ok(()), _) => Ok(head),
        (Err(_), Some(e)) => Err(StoreError::Source(e)),
        (Err(e), None) => Err(StoreError::Library(e)),
    }
}

/// The first `HEAD_LEN` bytes of the stored plaintext (header included).
fn read_head(source: &Path, header: &[u8]) -> io::Result<Vec<u8>> {
    let mut head = header.to_vec();
    let rest = HEAD_LEN - header.len() as u64;
    File::open(source)?.take(rest).read_to_end(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_that_no_longer_matches_its_id_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("a.mp3");
        std::fs::write(&source, b"ID3 the bytes as they are now").unwrap();
        let (file_id, len) = hash_file(&source).unwrap();
        let dest = dir.path().join("stored");
        let key = AudioKey([7; 16]);
        let stored = |file_id| StoredBytes {
            header: &[],
            file_id,
            len,
        };
        let head = encrypt_into(&dest, &source, &key, &stored(file_id)).unwrap();
        assert_eq!(head, std::fs::read(&source).unwrap());
        std::fs::remove_file(&dest).unwrap();
        // Same length, other content: as if the file changed after it was hashed.
        let other = FileId([1; 20]);
        match encrypt_into(&dest, &source, &key, &stored(other)) {
            Err(StoreError::Source(e)) => assert!(e.to_string().contains("changed"), "{e}"),
            other => panic!("expected a source error, got {other:?}"),
        }
        assert!(!dest.exists());
    }
}
