//! Metadata of a library: deterministic ids, and the Track/Album protobufs and playlists one
//! `publish` builds from the whole music folder (a mirror: what is not in the folder is not in
//! the catalog).
//!
//! Ids are hashes of what identifies a thing: an album is its album artist and name, a track
//! its album and its path in the music folder (so a file retagged or re-encoded in place keeps
//! its track id and gets a new file id), a playlist its file's path. Building the same folder
//! twice gives the same bytes, so a publish that changed nothing changes no answer or ETag.

use super::scan::SourceInfo;
use crate::protocol::model::{AlbumId, FileId, Image, PlaylistId, TrackId};
use crate::protocol::proto::library::StoredPlaylist;
use crate::protocol::proto::metadata as pb;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// One audio file of the music folder, as this publish knows it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Relative to the music folder, `/`-separated.
    pub rel: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub info: SourceInfo,
    pub file_id: FileId,
    pub embedded_cover: Option<Image>,
}

/// A playlist file of the music folder, its entries resolved to relative paths.
#[derive(Debug, Clone)]
pub(crate) struct PlaylistFile {
    pub rel: String,
    pub name: String,
    pub entries: Vec<String>,
}

/// What `build` made.
#[derive(Debug, Default)]
pub(crate) struct Built {
    pub albums: BTreeMap<AlbumId, pb::Album>,
    pub tracks: BTreeMap<TrackId, pb::Track>,
    pub playlists: Vec<StoredPlaylist>,
    /// Track id of each published entry (by relative path).
    pub track_of: BTreeMap<String, TrackId>,
    /// Entries left out as copies: (path, the path of the track they copy).
    pub copies: Vec<(String, String)>,
    /// Playlist entries that name no published track: (playlist, entry).
    pub unresolved: Vec<(String, String)>,
    /// Audio files and pictures the catalog needs (every embedded picture included).
    pub referenced: BTreeSet<FileId>,
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

pub fn track_id(album: &AlbumId, rel: &str) -> TrackId {
    TrackId(digest16("trackfs track v2", &[&album.0, rel.as_bytes()]))
}

pub fn playlist_id(rel: &str) -> PlaylistId {
    PlaylistId(digest16("trackfs playlist v1", &[rel.as_bytes()]))
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

fn track_pb(id: &TrackId, album: &AlbumId, e: &Entry) -> pb::Track {
    let clamp = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    pb::Track {
        gid: Some(id.0.to_vec()),
        name: Some(e.info.title.clone()),
        album: Some(album_stub(album, &e.info)),
        artist: vec![artist(&e.info.artist)],
        number: Some(clamp(e.info.number)),
        disc_number: Some(clamp(e.info.disc)),
        duration: Some(clamp(e.info.duration_ms)),
        file: vec![pb::AudioFile {
            file_id: Some(e.file_id.0.to_vec()),
            format: Some(e.info.format.wire()),
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

/// What `build` needs besides the entries.
pub(crate) struct Context<'a> {
    /// The best cover file of each folder (relative path of the folder, `""` for the top).
    pub folder_covers: &'a BTreeMap<String, Image>,
    /// Dates albums had in the last publish, kept for albums without a tag year.
    pub old_dates: &'a BTreeMap<AlbumId, pb::Date>,
    /// Dates albums that have neither.
    pub today: pb::Date,
}

/// Builds the whole catalog from the music folder's entries (sorted by path) and playlists.
pub(crate) fn build(entries: &[Entry], playlists: &[PlaylistFile], cx: &Context<'_>) -> Built {
    let mut built = Built::default();
    let mut members: BTreeMap<AlbumId, Vec<&Entry>> = BTreeMap::new();
    let mut seen: BTreeMap<(AlbumId, FileId), (&str, TrackId)> = BTreeMap::new();
    for e in entries {
        let album = album_id(&e.info.album_artist, &e.info.album);
        if let Some((first, track)) = seen.get(&(album, e.file_id)) {
            built.copies.push((e.rel.clone(), first.to_string()));
            built.track_of.insert(e.rel.clone(), *track);
            continue;
        }
        let id = track_id(&album, &e.rel);
        seen.insert((album, e.file_id), (&e.rel, id));
        built.track_of.insert(e.rel.clone(), id);
        built.tracks.insert(id, track_pb(&id, &album, e));
        built.referenced.insert(e.file_id);
        // Kept even when another picture is the album's cover: an unchanged file is not read
        // again, so its picture must stay for the day it becomes the cover.
        if let Some(cover) = e.embedded_cover {
            built.referenced.insert(cover.file_id);
        }
        members.entry(album).or_default().push(e);
    }
    for (id, tracks) in members {
        let album = build_album(&id, &tracks, &built.track_of, cx);
        for image in &album.cover {
            if let Some(f) = image
                .file_id
                .as_deref()
                .and_then(|f| FileId::from_bytes(f).ok())
            {
                built.referenced.insert(f);
            }
        }
        built.albums.insert(id, album);
    }
    for p in playlists {
        let mut track_gid = Vec::new();
        for entry in &p.entries {
            match built.track_of.get(entry) {
                Some(t) => track_gid.push(t.0.to_vec()),
                None => built.unresolved.push((p.rel.clone(), entry.clone())),
            }
        }
        built.playlists.push(StoredPlaylist {
            gid: playlist_id(&p.rel).0.to_vec(),
            name: p.name.clone(),
            track_gid,
        });
    }
    built
}

fn build_album(
    id: &AlbumId,
    tracks: &[&Entry],
    track_of: &BTreeMap<String, TrackId>,
    cx: &Context<'_>,
) -> pb::Album {
    let first = &tracks[0].info;
    let mut album = album_stub(id, first);
    let year = tracks.iter().find_map(|e| e.info.year);
    album.date = match year {
        Some(year) => Some(pb::Date {
            year: Some(year),
            month: None,
            day: None,
        }),
        None => Some(cx.old_dates.get(id).copied().unwrap_or(cx.today)),
    };
    let entries = tracks
        .iter()
        .filter_map(|e| {
            let t = track_of.get(&e.rel)?;
            Some(disc_entry(&track_pb(t, id, e)))
        })
        .collect();
    album.disc = group_discs(entries);
    if let Some(cover) = album_cover(tracks, cx) {
        let image = pb::Image::from(&cover);
        // Both fields: clients of the older schema read `cover`, newer ones `cover_group`.
        album.cover = vec![image.clone()];
        album.cover_group = Some(pb::ImageGroup { image: vec![image] });
    }
    album
}

/// The folders a cover of these tracks may be in: each track's folder, and the one above a
/// disc folder (`Album/CD1/01.flac` → `Album`).
fn cover_folders(rel: &str) -> Vec<String> {
    let dir = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let mut out = vec![dir.to_string()];
    let (parent, last) = dir.rsplit_once('/').unwrap_or(("", dir));
    if !dir.is_empty() && super::scan::is_disc_folder(last) {
        out.push(parent.to_string());
    }
    out
}

/// A cover file beside the tracks, else the first embedded front cover.
fn album_cover(tracks: &[&Entry], cx: &Context<'_>) -> Option<Image> {
    let from_folder = tracks
        .iter()
        .flat_map(|e| cover_folders(&e.rel))
        .find_map(|dir| cx.folder_covers.get(&dir).copied());
    from_folder.or_else(|| tracks.iter().find_map(|e| e.embedded_cover))
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

/// Encodes a map of protobufs in id order (the catalog stores them as bytes, as served).
pub(crate) fn encoded<K, M: Message>(map: &BTreeMap<K, M>) -> Vec<Vec<u8>> {
    map.values().map(Message::encode_to_vec).collect()
}

/// Today's date (UTC) from the system clock.
pub fn today() -> pb::Date {
    let date = time::OffsetDateTime::now_utc().date();
    pb::Date {
        year: Some(date.year()),
        month: Some(i32::from(u8::from(date.month()))),
        day: Some(i32::from(date.day())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::model::{AudioFormat, ImageSize};

    fn entry(rel: &str, album: &str, file: u8, year: Option<i32>) -> Entry {
        Entry {
            rel: rel.into(),
            size: 1,
            mtime_ns: 0,
            info: SourceInfo {
                format: AudioFormat::Mp3_320,
                title: rel.into(),
                artist: "A".into(),
                album: album.into(),
                album_artist: "A".into(),
                number: 1,
                disc: 1,
                year,
                duration_ms: 1000,
            },
            file_id: FileId([file; 20]),
            embedded_cover: None,
        }
    }

    fn image(id: u8) -> Image {
        Image {
            file_id: FileId([id; 20]),
            size: ImageSize::Large,
            width: Some(640),
            height: Some(640),
        }
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(album_id("a", "b"), album_id("a", "b"));
        assert_ne!(album_id("ab", ""), album_id("a", "b"));
        assert_ne!(
            track_id(&album_id("a", "b"), "x.ogg"),
            track_id(&album_id("a", "c"), "x.ogg")
        );
    }

    #[test]
    fn a_retagged_file_keeps_its_track_id_and_copies_are_left_out() {
        let today = pb::Date::default();
        let (covers, dates) = (BTreeMap::new(), BTreeMap::new());
        let cx = Context {
            folder_covers: &covers,
            old_dates: &dates,
            today,
        };
        let before = build(&[entry("X/1.mp3", "X", 1, None)], &[], &cx);
        let mut retagged = entry("X/1.mp3", "X", 2, Some(2001));
        retagged.info.title = "New".into();
        let copy = entry("X/copy.mp3", "X", 2, None);
        let after = build(&[retagged, copy], &[], &cx);
        assert_eq!(
            before.tracks.keys().collect::<Vec<_>>(),
            after.tracks.keys().collect::<Vec<_>>()
        );
        assert_ne!(before.tracks, after.tracks);
        assert_eq!(after.copies, vec![("X/copy.mp3".into(), "X/1.mp3".into())]);
        let album = after.albums.values().next().unwrap();
        assert_eq!(album.date.unwrap().year, Some(2001));
    }

    #[test]
    fn covers_come_from_the_folder_or_above_a_disc_folder_else_embedded() {
        let mut covers = BTreeMap::new();
        covers.insert("B".to_string(), image(7));
        let dates = BTreeMap::new();
        let cx = Context {
            folder_covers: &covers,
            old_dates: &dates,
            today: pb::Date::default(),
        };
        let mut embedded = entry("C/1.mp3", "C", 3, None);
        embedded.embedded_cover = Some(image(8));
        let built = build(
            &[
                entry("B/CD1/1.mp3", "B", 1, None),
                entry("N/1.mp3", "N", 2, None),
                embedded,
            ],
            &[],
            &cx,
        );
        let cover_of = |name: &str| {
            let a = built
                .albums
                .values()
                .find(|a| a.name.as_deref() == Some(name));
            a.unwrap()
                .cover_group
                .as_ref()
                .map(|g| g.image[0].file_id.clone().unwrap())
        };
        assert_eq!(cover_of("B"), Some(vec![7; 20]));
        assert_eq!(cover_of("N"), None);
        assert_eq!(cover_of("C"), Some(vec![8; 20]));
        assert!(built.referenced.contains(&FileId([7; 20])));
        assert!(built.referenced.contains(&FileId([8; 20])));
    }

    #[test]
    fn playlists_keep_order_and_report_unknown_entries() {
        let (covers, dates) = (BTreeMap::new(), BTreeMap::new());
        let cx = Context {
            folder_covers: &covers,
            old_dates: &dates,
            today: pb::Date::default(),
        };
        let list = PlaylistFile {
            rel: "mix.m3u".into(),
            name: "mix".into(),
            entries: vec!["X/2.mp3".into(), "gone.mp3".into(), "X/1.mp3".into()],
        };
        let built = build(
            &[
                entry("X/1.mp3", "X", 1, None),
                entry("X/2.mp3", "X", 2, None),
            ],
            &[list],
            &cx,
        );
        let p = &built.playlists[0];
        assert_eq!(p.track_gid[0], built.track_of["X/2.mp3"].0.to_vec());
        assert_eq!(p.track_gid[1], built.track_of["X/1.mp3"].0.to_vec());
        assert_eq!(
            built.unresolved,
            vec![("mix.m3u".into(), "gone.mp3".into())]
        );
    }
}
