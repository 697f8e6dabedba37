//! What a publish changes compared with the last one (added, changed, removed tracks and
//! albums, for the summary and `--dry-run`), and what it may delete: stored files that left
//! the catalog wait out a grace period first, so a mounted reader that holds a signed URL, a
//! token or a key finishes its file (docs/protocol.md §8).

use super::library::Library;
use crate::protocol::model::{AlbumId, FileId, TrackId};
use crate::protocol::proto::library::{Catalog, Retired};
use crate::protocol::proto::metadata as pb;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long stored files that left the catalog stay when no `serve` announced longer
/// lifetimes (`serve`'s default URL and token lifetimes are one hour).
pub(crate) const MIN_GRACE: Duration = Duration::from_secs(3600);

/// Added on top of the lifetimes: a reader may start just before a URL expires.
const GRACE_MARGIN: Duration = Duration::from_secs(3600);

/// The grace period for this library.
pub(crate) fn grace(lib: &Library) -> Duration {
    lib.read_lifetimes().unwrap_or(MIN_GRACE).max(MIN_GRACE) + GRACE_MARGIN
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Changed,
    Removed,
}

/// One track that a publish adds, changes or removes, named by its path in the music folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: String,
}

/// The difference between two catalogs.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    pub changes: Vec<Change>,
    pub new_albums: usize,
    pub removed_albums: usize,
}

fn tracks(c: &Catalog) -> BTreeMap<TrackId, &[u8]> {
    c.track
        .iter()
        .filter_map(|bytes| {
            let t = pb::Track::decode(bytes.as_slice()).ok()?;
            Some((
                TrackId::from_bytes(t.gid.as_deref()?).ok()?,
                bytes.as_slice(),
            ))
        })
        .collect()
}

fn albums(c: &Catalog) -> BTreeSet<AlbumId> {
    c.album
        .iter()
        .filter_map(|bytes| {
            let a = pb::Album::decode(bytes.as_slice()).ok()?;
            AlbumId::from_bytes(a.gid.as_deref()?).ok()
        })
        .collect()
}

/// Where each track of a catalog came from (its first source path).
fn paths(c: &Catalog) -> BTreeMap<TrackId, &str> {
    let mut out = BTreeMap::new();
    for s in &c.source {
        if let Ok(t) = TrackId::from_bytes(&s.track_gid) {
            out.entry(t).or_insert(s.path.as_str());
        }
    }
    out
}

pub(crate) fn diff(old: &Catalog, new: &Catalog) -> Diff {
    let (before, after) = (tracks(old), tracks(new));
    let (old_paths, new_paths) = (paths(old), paths(new));
    let name = |paths: &BTreeMap<TrackId, &str>, id: &TrackId| {
        paths.get(id).map_or_else(|| id.to_hex(), |p| p.to_string())
    };
    let mut changes = Vec::new();
    for (id, bytes) in &after {
        let kind = match before.get(id) {
            None => ChangeKind::Added,
            Some(old) if old != bytes => ChangeKind::Changed,
            Some(_) => continue,
        };
        changes.push(Change {
            kind,
            path: name(&new_paths, id),
        });
    }
    for id in before.keys().filter(|id| !after.contains_key(id)) {
        changes.push(Change {
            kind: ChangeKind::Removed,
            path: name(&old_paths, id),
        });
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    let (a, b) = (albums(old), albums(new));
    Diff {
        changes,
        new_albums: b.difference(&a).count(),
        removed_albums: a.difference(&b).count(),
    }
}

/// Stored files the new catalog does not need, with the time each left (kept from the last
/// catalog, else now: it just left, or a killed publish left it behind), split into those
/// still in their grace period and those past it.
pub(crate) fn retire(
    lib: &Library,
    stored_keys: impl Iterator<Item = FileId>,
    old: &[Retired],
    referenced: &BTreeSet<FileId>,
    now: i64,
    grace: Duration,
) -> (Vec<Retired>, Vec<FileId>) {
    let since: BTreeMap<FileId, i64> = old
        .iter()
        .filter_map(|r| Some((FileId::from_bytes(&r.file_id).ok()?, r.since)))
        .collect();
    let mut stored: BTreeSet<FileId> = stored_keys.collect();
    for dir in ["audio", "heads", "images"] {
        let Ok(entries) = std::fs::read_dir(lib.root().join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(id) = FileId::from_hex(&e.file_name().to_string_lossy()) {
                stored.insert(id);
            }
        }
    }
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let (mut keep, mut expired) = (Vec::new(), Vec::new());
    for id in stored.difference(referenced) {
        let left = since.get(id).copied().unwrap_or(now);
        if now.saturating_sub(left) >= grace {
            expired.push(*id);
        } else {
            keep.push(Retired {
                file_id: id.0.to_vec(),
                since: left,
            });
        }
    }
    (keep, expired)
}

/// Deletes what `retire` found expired (after the new catalog is in place). A file that
/// cannot be deleted is logged and tried again by the next publish.
pub(crate) fn purge(lib: &Library, expired: &[FileId]) {
    for id in expired {
        for path in [lib.audio(id), lib.head(id), lib.image(id)] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!("cannot delete {}: {e}", path.display());
                }
                _ => {}
            }
        }
    }
}

/// Removes the files of the layout before `catalog.pb` (their content is in the catalog now).
pub(crate) fn remove_legacy(lib: &Library) {
    for name in Library::LEGACY {
        let path = lib.root().join(name);
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => continue,
        };
        if let Err(e) = removed {
            tracing::warn!("cannot remove the old {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::proto::library::Source;

    #[test]
    fn what_left_keeps_the_time_it_left_and_expires_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let lib = Library::new(dir.path());
        lib.create_dirs().unwrap();
        let (kept, old_gone, new_gone, orphan) = (
            FileId([1; 20]),
            FileId([2; 20]),
            FileId([3; 20]),
            FileId([4; 20]),
        );
        for id in [kept, old_gone, new_gone] {
            std::fs::write(lib.audio(&id), b"x").unwrap();
        }
        std::fs::write(lib.image(&orphan), b"x").unwrap();
        std::fs::write(lib.root().join("audio/not-an-id"), b"x").unwrap();
        let old = [Retired {
            file_id: old_gone.0.to_vec(),
            since: 100,
        }];
        let referenced = BTreeSet::from([kept]);
        let grace = Duration::from_secs(50);
        let (keep, expired) = retire(&lib, std::iter::empty(), &old, &referenced, 160, grace);
        assert_eq!(expired, vec![old_gone], "left at 100, past 100 + 50");
        let since: BTreeMap<_, _> = keep.iter().map(|r| (r.file_id.clone(), r.since)).collect();
        assert_eq!(since.get(new_gone.0.as_slice()), Some(&160), "left now");
        assert_eq!(
            since.get(orphan.0.as_slice()),
            Some(&160),
            "a killed publish's debris"
        );
        assert_eq!(since.len(), 2);
        purge(&lib, &expired);
        assert!(!lib.audio(&old_gone).exists() && lib.audio(&kept).exists());
    }

    #[test]
    fn a_diff_names_tracks_by_their_source_paths() {
        let track = |id: u8, name: &str| {
            pb::Track {
                gid: Some(vec![id; 16]),
                name: Some(name.into()),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let source = |id: u8, path: &str| Source {
            path: path.into(),
            track_gid: vec![id; 16],
            ..Default::default()
        };
        let old = Catalog {
            track: vec![track(1, "a"), track(2, "b")],
            source: vec![source(1, "A/1.mp3"), source(2, "A/2.mp3")],
            ..Default::default()
        };
        let new = Catalog {
            track: vec![track(1, "a, retagged"), track(3, "c")],
            source: vec![source(1, "A/1.mp3"), source(3, "B/3.mp3")],
            ..Default::default()
        };
        let kinds: Vec<_> = diff(&old, &new)
            .changes
            .into_iter()
            .map(|c| (c.kind, c.path))
            .collect();
        assert_eq!(
            kinds,
            [
                (ChangeKind::Changed, "A/1.mp3".to_string()),
                (ChangeKind::Removed, "A/2.mp3".to_string()),
                (ChangeKind::Added, "B/3.mp3".to_string()),
            ]
        );
        assert!(diff(&new, &new).changes.is_empty());
    }
}
