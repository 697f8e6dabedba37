//! `trackfs publish SRC LIBRARY`: make the library a mirror of a music folder.
//!
//! Audio files are stored by `store` (ciphertext, head, key), cover pictures by `covers`,
//! playlists read by `m3u`; `catalog` builds the albums, tracks and playlists of the whole
//! folder, and the new `catalog.pb` replaces the old one in one rename: the moment the publish
//! takes effect, for a running `serve` too. A publish killed before that leaves the library as
//! it was. Files unchanged since the last publish (same path, size and modification time) are
//! not read again; files whose bytes are already stored are not encrypted again. What left the
//! folder leaves the catalog at once and the disk after a grace period (`mirror`).

use super::catalog::{self, Entry, PlaylistFile};
use super::covers;
use super::folder::{self, Folder};
use super::library::{Library, LibraryError};
use super::m3u;
use super::mirror::{self, ChangeKind};
use super::scan::{self, ScanError, SourceInfo};
use super::store::{self, StoreError};
pub use super::summary::{PublishSummary, Skipped};
use crate::protocol::keyfile::Keys;
use crate::protocol::model::{AlbumId, AudioFormat, FileId, Image};
use crate::protocol::proto::library::{Catalog, Source};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Clone)]
pub struct PublishOptions {
    /// Never draw a progress bar (it is only drawn on a terminal anyway).
    pub no_progress: bool,
    /// Work out and report what would change, writing nothing.
    pub dry_run: bool,
    /// Overrides the grace period before stored files that left are deleted (tests).
    #[doc(hidden)]
    pub grace: Option<Duration>,
    /// Stops right before the new catalog takes effect, as a publish killed there (tests).
    #[doc(hidden)]
    pub stop_before_commit: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("source folder {} does not exist", .0.display())]
    MissingSource(PathBuf),
    #[error("source {} is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error(
        "no Ogg Vorbis, MP3 or FLAC files found in {} ({} skipped)",
        path.display(),
        crate::units::count(*skipped, "file")
    )]
    NothingToPublish { path: PathBuf, skipped: usize },
    #[error(
        "{} is not empty and not a trackfs library; publish into a new or empty folder",
        .0.display()
    )]
    NotALibrary(PathBuf),
    #[error("another `trackfs publish` is writing to {}; run this one after it", .0.display())]
    Busy(PathBuf),
    #[error("stopped before the new catalog took effect")]
    Stopped,
    #[error("library: {0}")]
    Library(#[from] LibraryError),
}

/// Makes the library folder `dst` a mirror of the music folder `src`.
pub fn publish(
    src: &Path,
    dst: &Path,
    options: &PublishOptions,
) -> Result<PublishSummary, PublishError> {
    check_source(src)?;
    check_destination(dst)?;
    let mut summary = PublishSummary {
        library: dst.to_path_buf(),
        dry_run: options.dry_run,
        ..Default::default()
    };
    let folder = folder::walk(src, &mut summary.skipped);
    let nothing = |summary: &PublishSummary| PublishError::NothingToPublish {
        path: src.to_path_buf(),
        skipped: summary.skipped.len(),
    };
    if folder.is_empty() {
        return Err(nothing(&summary));
    }
    let lib = Library::new(dst);
    let _writing = match options.dry_run {
        true => None,
        false => {
            lib.create_dirs()?;
            let lock = lib.lock_for_writing()?;
            let Some(lock) = lock else {
                return Err(PublishError::Busy(dst.to_path_buf()));
            };
            lib.ensure_secrets()?;
            Some(lock)
        }
    };
    let old = lib.read_catalog()?.unwrap_or_default();
    let mut keys = lib.read_keys()?;
    let bar = progress_bar(options, folder.files.len());
    let mut run = Run {
        lib: &lib,
        src,
        keys: &mut keys,
        summary: &mut summary,
        bar: &bar,
        dry_run: options.dry_run,
    };
    let entries = run.read_audio(&folder, &old);
    // Keys first, even after an error: ciphertext on disk must never lose its key.
    let keys_written = match options.dry_run {
        true => Ok(false),
        false => lib.write_keys(run.keys),
    };
    bar.finish_and_clear();
    let entries = entries?;
    keys_written?;
    if entries.is_empty() {
        return Err(nothing(run.summary));
    }
    let folder_covers = run.read_covers(&folder)?;
    let playlists = run.read_playlists(&folder);
    let old_dates = old_dates(&old);
    let cx = catalog::Context {
        folder_covers: &folder_covers,
        old_dates: &old_dates,
        today: catalog::today(),
    };
    let built = catalog::build(&entries, &playlists, &cx);
    for (path, first) in &built.copies {
        let reason = format!("same content and album as {first}");
        run.skip(&src.join(path), reason);
    }
    for (list, entry) in &built.unresolved {
        tracing::warn!("playlist {list}: skipping {entry:?}, not a published track");
    }
    let mut catalog = Catalog {
        album: catalog::encoded(&built.albums),
        track: catalog::encoded(&built.tracks),
        playlist: built.playlists.clone(),
        source: entries.iter().map(|e| source(e, &built.track_of)).collect(),
        retired: Vec::new(),
    };
    let diff = mirror::diff(&old, &catalog);
    summarize(&mut summary, &built, diff);
    let grace = options.grace.unwrap_or_else(|| mirror::grace(&lib));
    let now = unix_now();
    let stored = keys.keys().copied().collect::<Vec<_>>().into_iter();
    let (retired, expired) =
        mirror::retire(&lib, stored, &old.retired, &built.referenced, now, grace);
    catalog.retired = retired;
    summary.purged = expired.len();
    if options.dry_run {
        return Ok(summary);
    }
    for id in &expired {
        keys.remove(id);
    }
    lib.write_keys(&keys)?;
    if options.stop_before_commit {
        return Err(PublishError::Stopped);
    }
    lib.write_catalog(&catalog)?;
    mirror::purge(&lib, &expired);
    mirror::remove_legacy(&lib);
    Ok(summary)
}

fn summarize(summary: &mut PublishSummary, built: &catalog::Built, diff: mirror::Diff) {
    let kinds = |k| diff.changes.iter().filter(|c| c.kind == k).count();
    summary.tracks = built.tracks.len();
    summary.albums = built.albums.len();
    summary.new_tracks = kinds(ChangeKind::Added);
    summary.changed_tracks = kinds(ChangeKind::Changed);
    summary.removed_tracks = kinds(ChangeKind::Removed);
    summary.new_albums = diff.new_albums;
    summary.removed_albums = diff.removed_albums;
    summary.covers = built
        .albums
        .values()
        .filter(|a| !a.cover.is_empty())
        .count();
    summary.playlists = built.playlists.len();
    summary.changes = diff.changes;
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn old_dates(old: &Catalog) -> BTreeMap<AlbumId, crate::protocol::proto::metadata::Date> {
    use prost::Message;
    old.album
        .iter()
        .filter_map(|bytes| {
            let a = crate::protocol::proto::metadata::Album::decode(bytes.as_slice()).ok()?;
            Some((AlbumId::from_bytes(a.gid.as_deref()?).ok()?, a.date?))
        })
        .collect()
}

fn source(e: &Entry, track_of: &BTreeMap<String, crate::protocol::model::TrackId>) -> Source {
    let i = &e.info;
    Source {
        path: e.rel.clone(),
        size: e.size,
        mtime_ns: e.mtime_ns,
        file_id: e.file_id.0.to_vec(),
        track_gid: track_of
            .get(&e.rel)
            .map(|t| t.0.to_vec())
            .unwrap_or_default(),
        format: i.format.wire(),
        title: i.title.clone(),
        artist: i.artist.clone(),
        album: i.album.clone(),
        album_artist: i.album_artist.clone(),
        number: i.number,
        disc: i.disc,
        year: i.year,
        duration_ms: i.duration_ms,
        embedded_cover: e
            .embedded_cover
            .map(|c| c.file_id.0.to_vec())
            .unwrap_or_default(),
        cover_width: e.embedded_cover.and_then(|c| c.width).unwrap_or(0),
        cover_height: e.embedded_cover.and_then(|c| c.height).unwrap_or(0),
    }
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

/// One publish's working state.
struct Run<'a> {
    lib: &'a Library,
    src: &'a Path,
    keys: &'a mut Keys,
    summary: &'a mut PublishSummary,
    bar: &'a ProgressBar,
    dry_run: bool,
}

impl Run<'_> {
    fn skip(&mut self, path: &Path, reason: String) {
        self.bar
            .suspend(|| tracing::warn!("skipping {}: {reason}", path.display()));
        self.summary.skipped.push(Skipped {
            path: path.to_path_buf(),
            reason,
        });
    }

    /// Every audio file of the folder; a bad source file is skipped, a library write error
    /// stops the run.
    fn read_audio(&mut self, folder: &Folder, old: &Catalog) -> Result<Vec<Entry>, PublishError> {
        let known: HashMap<&str, &Source> =
            old.source.iter().map(|s| (s.path.as_str(), s)).collect();
        let mut entries = Vec::new();
        for path in &folder.files {
            let rel = folder::relative(self.src, path);
            self.bar.set_message(rel.clone());
            self.bar.inc(1);
            let meta = match std::fs::metadata(path) {
                Ok(meta) => meta,
                Err(e) => {
                    self.skip(path, format!("cannot read it: {e}"));
                    continue;
                }
            };
            let (size, mtime_ns) = folder::stamp(&meta);
            let unchanged = known
                .get(rel.as_str())
                .filter(|s| s.size == size && s.mtime_ns == mtime_ns)
                .and_then(|s| self.reuse(s, rel.clone()));
            if let Some(entry) = unchanged {
                entries.push(entry);
                continue;
            }
            if let Some(entry) = self.read_one(path, rel, size, mtime_ns)? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// The entry of a file that did not change since the last publish, when everything it
    /// needs is still stored (else it is read again).
    fn reuse(&self, s: &Source, rel: String) -> Option<Entry> {
        let file_id = FileId::from_bytes(&s.file_id).ok()?;
        let format = AudioFormat::from_wire(s.format)?;
        let stored_len = store::stored_len(format.container(), s.size);
        if !store::is_stored(self.lib, self.keys, &file_id, stored_len) {
            return None;
        }
        let embedded_cover = match FileId::from_bytes(&s.embedded_cover) {
            Ok(id) => Some(covers::stored(
                self.lib,
                &id,
                s.cover_width,
                s.cover_height,
            )?),
            Err(_) => None,
        };
        Some(Entry {
            rel,
            size: s.size,
            mtime_ns: s.mtime_ns,
            info: SourceInfo {
                format,
                title: s.title.clone(),
                artist: s.artist.clone(),
                album: s.album.clone(),
                album_artist: s.album_artist.clone(),
                number: s.number,
                disc: s.disc,
                year: s.year,
                duration_ms: s.duration_ms,
            },
            file_id,
            embedded_cover,
        })
    }

    /// Scans, stores and describes a new or changed file; `None` when it is skipped.
    fn read_one(
        &mut self,
        path: &Path,
        rel: String,
        size: u64,
        mtime_ns: i64,
    ) -> Result<Option<Entry>, PublishError> {
        let info = match scan::scan(path, Path::new(&rel)) {
            Ok(info) => info,
            Err(ScanError::NotAudio) if !has_audio_extension(path) => {
                tracing::info!("not publishing {} (not audio)", path.display());
                self.summary.ignored.push(path.to_path_buf());
                return Ok(None);
            }
            Err(e) => {
                self.skip(path, e.to_string());
                return Ok(None);
            }
        };
        let container = info.format.container();
        let stored = match self.dry_run {
            true => store::hash_file(path)
                .map(|(id, len)| {
                    let stored_len = store::stored_len(container, len);
                    let present = store::is_stored(self.lib, self.keys, &id, stored_len);
                    (id, if present { 0 } else { stored_len })
                })
                .map_err(StoreError::Source),
            false => store::store_file(self.lib, self.keys, path, container),
        };
        let (file_id, written) = match stored {
            Ok(stored) => stored,
            Err(StoreError::Library(e)) => return Err(e.into()),
            Err(StoreError::Source(e)) => {
                self.skip(path, format!("cannot read it: {e}"));
                return Ok(None);
            }
        };
        self.summary.bytes_encrypted += written;
        let embedded_cover = covers::embedded_front(path).and_then(|bytes| {
            match covers::store(self.lib, &bytes, self.dry_run) {
                Ok(image) => Some(image),
                Err(e) => {
                    tracing::warn!("{}: not using its embedded cover: {e}", path.display());
                    None
                }
            }
        });
        Ok(Some(Entry {
            rel,
            size,
            mtime_ns,
            info,
            file_id,
            embedded_cover,
        }))
    }

    /// The best cover picture of each folder that has one (by name: cover, folder, front).
    fn read_covers(&mut self, folder: &Folder) -> Result<BTreeMap<String, Image>, PublishError> {
        let mut best: BTreeMap<String, (usize, Image)> = BTreeMap::new();
        for path in &folder.covers {
            let rel = folder::relative(self.src, path);
            let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
            let rank = covers::cover_rank(name).unwrap_or(usize::MAX);
            if best.get(dir).is_some_and(|(r, _)| *r <= rank) {
                self.summary.ignored.push(path.clone());
                continue;
            }
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.skip(path, format!("cannot read it: {e}"));
                    continue;
                }
            };
            match covers::store(self.lib, &bytes, self.dry_run) {
                Ok(image) => {
                    best.insert(dir.to_string(), (rank, image));
                }
                Err(covers::CoverError::Library(e)) => return Err(e.into()),
                Err(e) => self.skip(path, e.to_string()),
            }
        }
        Ok(best
            .into_iter()
            .map(|(dir, (_, image))| (dir, image))
            .collect())
    }

    /// Every playlist file, its entries resolved to paths in the music folder.
    fn read_playlists(&mut self, folder: &Folder) -> Vec<PlaylistFile> {
        let canonical = self
            .src
            .canonicalize()
            .unwrap_or_else(|_| self.src.to_path_buf());
        let mut out = Vec::new();
        for path in &folder.playlists {
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.skip(path, format!("cannot read it: {e}"));
                    continue;
                }
            };
            let rel = folder::relative(self.src, path);
            let mut entries = Vec::new();
            for entry in m3u::entries(&bytes) {
                let resolve = |e: &str| m3u::resolve(e, Path::new(&rel), self.src, &canonical);
                let found = resolve(&entry)
                    .filter(|p| self.src.join(p).is_file())
                    .or_else(|| m3u::with_forward_slashes(&entry).and_then(|e| resolve(&e)));
                match found {
                    Some(p) => entries.push(folder::relative(Path::new(""), &p)),
                    None => tracing::warn!(
                        "playlist {rel}: skipping {entry:?}, not a file of the music folder"
                    ),
                }
            }
            let name = Path::new(&rel)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| rel.clone());
            out.push(PlaylistFile { rel, name, entries });
        }
        out
    }
}

/// Names that announce audio: a file with one of these that is not usable gets a warning;
/// other files are not published, named at info level.
fn has_audio_extension(path: &Path) -> bool {
    const AUDIO: [&str; 16] = [
        "ogg", "oga", "mp3", "flac", "opus", "m4a", "m4b", "mp4", "aac", "wav", "wma", "aif",
        "aiff", "ape", "wv", "mpc",
    ];
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO.contains(&e.to_ascii_lowercase().as_str()))
}
