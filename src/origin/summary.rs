//! What a `publish` did (or, with `--dry-run`, would do), as counted for its one-line
//! summary: tracks and albums added, changed and removed, covers, playlists, bytes encrypted,
//! and the files it skipped or did not publish.

use super::mirror::{Change, ChangeKind};
use crate::units::format_size;
use std::fmt;
use std::path::PathBuf;

/// A source file that was not published, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Default, Clone)]
pub struct PublishSummary {
    pub library: PathBuf,
    pub dry_run: bool,
    /// Tracks and albums in the library now.
    pub tracks: usize,
    pub albums: usize,
    /// Tracks added, changed (new bytes or tags) and removed, and albums added and removed.
    pub new_tracks: usize,
    pub changed_tracks: usize,
    pub removed_tracks: usize,
    pub new_albums: usize,
    pub removed_albums: usize,
    /// Albums with a cover, and playlists.
    pub covers: usize,
    pub playlists: usize,
    /// Ciphertext bytes written (or that would be) in this run.
    pub bytes_encrypted: u64,
    /// Stored files deleted because they left more than the grace period ago.
    pub purged: usize,
    /// Files that look like music (or are covers or playlists) but could not be used.
    pub skipped: Vec<Skipped>,
    /// Other files (text, pictures not named as covers, ...), which are not published.
    pub ignored: Vec<PathBuf>,
    /// Each track added, changed or removed.
    pub changes: Vec<Change>,
}

/// `1 track`, `2 tracks`.
fn count(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

impl fmt::Display for PublishSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} in {} to {} ({} added, {} changed, {} removed; {}, {} removed; {}, {}; {} {})",
            if self.dry_run {
                "would publish"
            } else {
                "published"
            },
            count(self.tracks, "track", "tracks"),
            count(self.albums, "album", "albums"),
            self.library.display(),
            self.new_tracks,
            self.changed_tracks,
            self.removed_tracks,
            count(self.new_albums, "new album", "new albums"),
            count(self.removed_albums, "album", "albums"),
            count(self.covers, "cover", "covers"),
            count(self.playlists, "playlist", "playlists"),
            format_size(self.bytes_encrypted),
            if self.dry_run {
                "to encrypt"
            } else {
                "encrypted"
            },
        )?;
        if !self.skipped.is_empty() {
            write!(
                f,
                "; {} skipped",
                count(self.skipped.len(), "file", "files")
            )?;
        }
        if !self.ignored.is_empty() {
            let other = count(self.ignored.len(), "other file", "other files");
            write!(f, "; {other} not published")?;
        }
        if self.dry_run {
            for c in &self.changes {
                let sign = match c.kind {
                    ChangeKind::Added => '+',
                    ChangeKind::Changed => '~',
                    ChangeKind::Removed => '-',
                };
                write!(f, "\n  {sign} {}", c.path)?;
            }
        }
        Ok(())
    }
}
