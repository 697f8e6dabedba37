//! Metadata of a library: deterministic ids and the Track/Album/Library protobufs.
//!
//! Ids are hashes of what identifies a thing (album artist + album name; album + file id), and
//! albums are merged with what is already on disk, so publishing the same folder twice writes
//! the same bytes and publishing a grown (or a different) folder only adds tracks and albums.

use super::library::{write_if_changed, Library, LibraryError};
use super::scan::SourceInfo;
use crate::protocol::model::{AlbumId, FileId, TrackId};
use crate::protocol::proto::library::Library as LibraryPb;
use crate::protocol::proto::metadata as pb;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One track stored in this run.
#[derive(Debug, Clone)]
pub struct StoredTrack {
    pub info: SourceInfo,
    pub file_id: FileId,
}

/// What writing the metadata changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CatalogChanges {
    pub tracks: usize,
    pub new_tracks: usize,
    pub albums: usize,
    pub new_albums: usize,
}

fn digest16(label: &str, parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

pub fn album_id(album_artist: &str, album: &str) -> AlbumId {
    AlbumId(digest16(
        "trackfs album v1",
        &[album_artist.as_bytes(), album.as_bytes()],
    ))
}

pub fn track_id(album: &AlbumId, file: &FileId) -> TrackId {
    TrackId(digest16("trackfs track v1", &[&album.0, &file.0]))
}

fn artist(name: &str) -> pb::Artist {
    pb::Artist {
        gid: Some(digest16("trackfs artist v1", &[name.as_bytes()]).to_vec()),
        name: Some(name.to_string()),
    }
}

fn album_stub(id: &AlbumId, info: &SourceInfo) -> pb::Album {
    pb::Album {
        gid: Some(id.0.to_vec()),
        name: Some(info.album.clone()),
        artist: vec![artist(&info.album_artist)],
        ..Default::default()
    }
}

fn track_pb(id: &TrackId, album: &AlbumId, t: &StoredTrack) -> pb::Track {
    let clamp = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    pb::Track {
        gid: Some(id.0.to_vec()),
        name: Some(t.info.title.clone()),
        album: Some(album_stub(album, &t.info)),
        artist: vec![artist(&t.info.artist)],
        number: Some(clamp(t.info.number)),
        disc_number: Some(clamp(t.info.disc)),
        duration: Some(clamp(t.info.duration_ms)),
        file: vec![pb::AudioFile {
            file_id: Some(t.file_id.0.to_vec()),
            format: Some(t.info.format.wire()),
        }],
    }
}

/// The short form of a track that an album's disc lists.
fn disc_entry(track: &pb::Track) -> pb::Track {
    pb::Track {
        gid: track.gid.clone(),
        name: track.name.clone(),
        number: track.number,
        disc_number: track.disc_number,
        ..Default::default()
    }
}

/// Writes track, album and library protobufs for `tracks`, merged with the library on disk.
/// `today` dates albums that have no tag year and no earlier publish.
pub fn write_catalog(
    lib: &Library,
    tracks: &[StoredTrack],
    today: pb::Date,
) -> Result<CatalogChanges, LibraryError> {
    let mut changes = CatalogChanges::default();
    let mut albums: BTreeMap<AlbumId, Vec<pb::Track>> = BTreeMap::new();
    let mut album_info: BTreeMap<AlbumId, (&SourceInfo, Option<i32>)> = BTreeMap::new();
    for t in tracks {
        let album = album_id(&t.info.album_artist, &t.info.album);
        let id = track_id(&album, &t.file_id);
        let track = track_pb(&id, &album, t);
        let path = lib.track(&id);
        let existed = path.exists();
        write_if_changed(&path, &track.encode_to_vec(), 0o644)?;
        changes.tracks += 1;
        changes.new_tracks += usize::from(!existed);
        albums.entry(album).or_default().push(disc_entry(&track));
        let entry = album_info.entry(album).or_insert((&t.info, None));
        entry.1 = entry.1.or(t.info.year);
    }
    for (id, entries) in albums {
        let (info, year) = album_info[&id];
        let path = lib.album(&id);
        let existing = read_pb::<pb::Album>(&path)?;
        changes.albums += 1;
        changes.new_albums += usize::from(existing.is_none());
        let album = merge_album(existing, &id, info, year, entries, today);
        write_if_changed(&path, &album.encode_to_vec(), 0o644)?;
    }
    write_library(lib, tracks)?;
    Ok(changes)
}

/// Merges new disc entries into the album on disk (same gid replaces), regrouped by disc.
fn merge_album(
    existing: Option<pb::Album>,
    id: &AlbumId,
    info: &SourceInfo,
    year: Option<i32>,
    entries: Vec<pb::Track>,
    today: pb::Date,
) -> pb::Album {
    let mut by_gid: BTreeMap<Vec<u8>, pb::Track> = BTreeMap::new();
    let mut date = Some(today);
    if let Some(old) = existing {
        date = old.date.or(date);
        for disc in old.disc {
            for mut t in disc.track {
                t.disc_number = t.disc_number.or(disc.number);
                if let Some(gid) = t.gid.clone() {
                    by_gid.insert(gid, t);
                }
            }
        }
    }
    for t in entries {
        if let Some(gid) = t.gid.clone() {
            by_gid.insert(gid, t);
        }
    }
    if let Some(year) = year {
        date = Some(pb::Date {
            year: Some(year),
            month: None,
            day: None,
        });
    }
    let mut album = album_stub(id, info);
    album.date = date;
    album.disc = group_discs(by_gid.into_values().collect());
    album
}

fn group_discs(mut tracks: Vec<pb::Track>) -> Vec<pb::Disc> {
    tracks.sort_by(|a, b| {
        let key = |t: &pb::Track| (t.disc_number.unwrap_or(1), t.number.unwrap_or(0));
        key(a)
            .cmp(&key(b))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.gid.cmp(&b.gid))
    });
    let mut discs: Vec<pb::Disc> = Vec::new();
    for t in tracks {
        let number = t.disc_number.unwrap_or(1);
        match discs.last_mut() {
            Some(d) if d.number == Some(number) => d.track.push(t),
            _ => discs.push(pb::Disc {
                number: Some(number),
                name: None,
                track: vec![t],
            }),
        }
    }
    discs
}

/// Adds this run's albums to `library.pb` (sorted by gid, so the bytes are stable).
fn write_library(lib: &Library, tracks: &[StoredTrack]) -> Result<(), LibraryError> {
    let path = lib.library_pb();
    let mut gids: BTreeSet<Vec<u8>> = read_pb::<LibraryPb>(&path)?
        .map(|l| l.album_gid.into_iter().collect())
        .unwrap_or_default();
    for t in tracks {
        gids.insert(album_id(&t.info.album_artist, &t.info.album).0.to_vec());
    }
    let library = LibraryPb {
        album_gid: gids.into_iter().collect(),
    };
    write_if_changed(&path, &library.encode_to_vec(), 0o644)?;
    Ok(())
}

/// Reads a protobuf file; a missing file is `None`, a malformed one an error naming it.
pub fn read_pb<M: Message + Default>(path: &Path) -> Result<Option<M>, LibraryError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LibraryError::io(path)(e)),
    };
    M::decode(bytes.as_slice())
        .map(Some)
        .map_err(|e| LibraryError::Invalid {
            path: path.to_path_buf(),
            reason: format!("not a valid protobuf: {e}"),
        })
}

/// Today's date (UTC) from the system clock.
pub fn today() -> pb::Date {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    pb::Date {
        year: Some(year as i32),
        month: Some(month as i32),
        day: Some(day as i32),
    }
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(album_id("a", "b"), album_id("a", "b"));
        assert_ne!(album_id("ab", ""), album_id("a", "b"));
        let f = FileId([1; 20]);
        assert_ne!(
            track_id(&album_id("a", "b"), &f),
            track_id(&album_id("a", "c"), &f)
        );
    }
}
