//! The music folder as `publish` sees it: every regular file under it, sorted, sorted into
//! cover pictures, playlists and the rest (which the scanner then tells apart as audio or not).

use super::covers::cover_rank;
use super::library::Library;
use super::m3u::is_playlist;
use super::publish::Skipped;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The files of a music folder, by what `publish` does with them.
#[derive(Debug, Default)]
pub(crate) struct Folder {
    /// Everything else: audio, or files skipped as not audio.
    pub files: Vec<PathBuf>,
    /// `cover.*`, `folder.*`, `front.*` pictures.
    pub covers: Vec<PathBuf>,
    /// `.m3u` and `.m3u8` files.
    pub playlists: Vec<PathBuf>,
}

impl Folder {
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty() && self.covers.is_empty() && self.playlists.is_empty()
    }
}

/// Every regular file under `src` (following symlinks, visiting each folder once), sorted so
/// runs are reproducible; dot files are ignored, entries that cannot be read are skipped with
/// a warning, and a trackfs library inside the folder is not music.
pub(crate) fn walk(src: &Path, skipped: &mut Vec<Skipped>) -> Folder {
    let mut skip = |path: &Path, reason: String| {
        tracing::warn!("skipping {}: {reason}", path.display());
        skipped.push(Skipped {
            path: path.to_path_buf(),
            reason,
        });
    };
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(m) = std::fs::metadata(&dir) {
            if !visited.insert((m.dev(), m.ino())) {
                continue;
            }
        }
        // A library inside the music folder (perhaps this very one) is not music: its heads
        // are plaintext cuts of the tracks.
        if Library::new(&dir).exists() {
            skip(&dir, "a trackfs library, not music".into());
            continue;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                skip(&dir, format!("cannot read this folder: {e}"));
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
                Err(e) => skip(&path, format!("cannot read it: {e}")),
            }
        }
    }
    files.sort();
    let mut folder = Folder::default();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if cover_rank(&name).is_some() {
            folder.covers.push(path);
        } else if is_playlist(&name) {
            folder.playlists.push(path);
        } else {
            folder.files.push(path);
        }
    }
    folder
}

/// `path` relative to `src`, `/`-separated: the name a file has in the catalog.
pub(crate) fn relative(src: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(src).unwrap_or(path);
    let parts: Vec<_> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

/// Size and modification time (ns since the epoch): `publish`'s quick check, as rsync's.
pub(crate) fn stamp(meta: &std::fs::Metadata) -> (u64, i64) {
    let mtime = meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec();
    (meta.len(), mtime)
}
