//! The catalogue saved on disk (docs/protocol.md's state on disk): albums, tracks, covers' ids,
//! what each shown picture is (size and type), playlists and the file sizes learned from the
//! CDN, so a mount can start at once from it, with its whole tree, also when the origin cannot
//! be reached, and the refresh work can start from it later.
//!
//! One file, `catalogue`, in the origin's cache folder: a first line
//! `trackfs-catalogue <version> <crc32c of the body> <body length>`, then the body as JSON.
//! It is replaced whole (a temporary renamed into place) and checked whole when read, so a
//! crash or a flipped byte gives "no snapshot", never a wrong catalogue. A new format gets a
//! new version number; an unknown version is not read. Version 2 added the ETags the answers
//! came with (`refresh`), saved with the catalogue they describe; version 1 is read as having
//! none. Version 3 added the covers shown and the playlists (with their ETags); older versions
//! are read as having none, which the first refresh then loads. The change feed's last number
//! is an optional field of version 3 (absent: none), so any version-3 reader reads both.

use super::library::Extras;
use super::refresh::Etags;
use crate::fs::tree::AlbumEntry;
use crate::protocol::model::{
    Album, AlbumId, AudioFile, AudioFormat, Date, Disc, FileId, Image, ImageSize, PictureKind,
    Playlist, PlaylistId, Track, TrackId,
};
use crate::readpath::images::CoverInfo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

const MAGIC: &str = "trackfs-catalogue";
const VERSION: u32 = 3;
/// Older versions this one reads.
const READS_FROM: u32 = 1;
pub const FILE_NAME: &str = "catalogue";

/// What is saved and loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub albums: Vec<AlbumEntry>,
    /// File sizes learned from `Content-Range`.
    pub sizes: HashMap<FileId, u64>,
    /// The ETags of the answers `albums` came from.
    pub etags: Etags,
    /// Playlists and what the covers are: the rest of the tree.
    pub extras: Extras,
    /// The ETags of the playlists' answers.
    pub playlist_etags: HashMap<PlaylistId, String>,
    /// The number of the last line of `.trackfs/changes` so far (0: none), so that the next
    /// mount numbers on above it even when the clock went back meanwhile.
    pub last_change: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read the catalogue snapshot: {0}")]
    Io(#[from] std::io::Error),
    #[error("the catalogue snapshot is not one trackfs wrote")]
    NotASnapshot,
    #[error("the catalogue snapshot has version {0}; this trackfs reads version {VERSION}")]
    Version(u32),
    #[error("the catalogue snapshot is damaged (checksum mismatch)")]
    Checksum,
    #[error("the catalogue snapshot is damaged: {0}")]
    Malformed(String),
}

impl SnapshotError {
    pub fn errno(&self) -> i32 {
        match self {
            SnapshotError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    albums: Vec<AlbumDto>,
    /// (file id, size).
    sizes: Vec<(String, u64)>,
    /// Absent before version 2.
    #[serde(default)]
    etags: EtagsDto,
    /// Absent before version 3.
    #[serde(default)]
    covers: Vec<CoverDto>,
    /// Absent before version 3.
    #[serde(default)]
    playlists: Vec<PlaylistDto>,
    /// Absent before it was added within version 3 (read as 0: none).
    #[serde(default)]
    last_change: u64,
}

/// What a shown picture is: `cover.jpg` or `cover.png`, and its size for `stat`.
#[derive(Serialize, Deserialize)]
struct CoverDto {
    file_id: String,
    size: u64,
    /// `jpg` or `png`.
    kind: String,
}

#[derive(Serialize, Deserialize)]
struct PlaylistDto {
    id: String,
    name: String,
    /// Hex, as opaque as on the wire.
    revision: String,
    tracks: Vec<String>,
    etag: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct EtagsDto {
    library: Option<String>,
    /// (album id, ETag), sorted.
    albums: Vec<(String, String)>,
    /// (track id, ETag), sorted.
    tracks: Vec<(String, String)>,
}

fn etags_dto(etags: &Etags) -> EtagsDto {
    let mut albums: Vec<_> = etags
        .albums
        .iter()
        .map(|(id, e)| (id.to_hex(), e.clone()))
        .collect();
    let mut tracks: Vec<_> = etags
        .tracks
        .iter()
        .map(|(id, e)| (id.to_hex(), e.clone()))
        .collect();
    albums.sort();
    tracks.sort();
    EtagsDto {
        library: etags.library.clone(),
        albums,
        tracks,
    }
}

fn from_etags_dto(dto: EtagsDto) -> Result<Etags, SnapshotError> {
    Ok(Etags {
        library: dto.library,
        albums: dto
            .albums
            .into_iter()
            .map(|(id, e)| AlbumId::from_hex(&id).map(|id| (id, e)))
            .collect::<Result<_, _>>()
            .map_err(malformed)?,
        tracks: dto
            .tracks
            .into_iter()
            .map(|(id, e)| TrackId::from_hex(&id).map(|id| (id, e)))
            .collect::<Result<_, _>>()
            .map_err(malformed)?,
    })
}

#[derive(Serialize, Deserialize)]
struct AlbumDto {
    id: String,
    name: String,
    artists: Vec<String>,
    date: Option<(i32, i32, i32)>,
    /// (disc number, track ids).
    discs: Vec<(u32, Vec<String>)>,
    covers: Vec<ImageDto>,
    tracks: Vec<TrackDto>,
}

#[derive(Serialize, Deserialize)]
struct ImageDto {
    file_id: String,
    /// `Image.size` as on the wire.
    size: i32,
    width: Option<u32>,
    height: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct TrackDto {
    id: String,
    name: String,
    artists: Vec<String>,
    number: u32,
    disc_number: u32,
    duration_ms: u32,
    /// (file id, format as on the wire).
    files: Vec<(String, i32)>,
}

fn to_body(snapshot: &Snapshot) -> Body {
    let albums = snapshot.albums.iter().map(|entry| {
        let a = &entry.album;
        AlbumDto {
            id: a.id.to_hex(),
            name: a.name.clone(),
            artists: a.artists.clone(),
            date: a.date.map(|d| (d.year, d.month, d.day)),
            discs: a
                .discs
                .iter()
                .map(|d| (d.number, d.tracks.iter().map(TrackId::to_hex).collect()))
                .collect(),
            covers: a
                .covers
                .iter()
                .map(|i| ImageDto {
                    file_id: i.file_id.to_hex(),
                    size: i.size.wire(),
                    width: i.width,
                    height: i.height,
                })
                .collect(),
            tracks: entry.tracks.iter().map(track_dto).collect(),
        }
    });
    let mut sizes: Vec<_> = snapshot
        .sizes
        .iter()
        .map(|(f, s)| (f.to_hex(), *s))
        .collect();
    sizes.sort();
    let mut covers: Vec<_> = snapshot
        .extras
        .covers
        .iter()
        .map(|(file, info)| CoverDto {
            file_id: file.to_hex(),
            size: info.size,
            kind: info.picture.extension().into(),
        })
        .collect();
    covers.sort_by(|a, b| a.file_id.cmp(&b.file_id));
    let playlists = snapshot.extras.playlists.iter().map(|p| PlaylistDto {
        id: p.id.to_hex(),
        name: p.name.clone(),
        revision: hex::encode(&p.revision),
        tracks: p.tracks.iter().map(TrackId::to_hex).collect(),
        etag: snapshot.playlist_etags.get(&p.id).cloned(),
    });
    Body {
        albums: albums.collect(),
        sizes,
        etags: etags_dto(&snapshot.etags),
        covers,
        playlists: playlists.collect(),
        last_change: snapshot.last_change,
    }
}

fn from_cover_dto(c: CoverDto) -> Result<(FileId, CoverInfo), SnapshotError> {
    let picture = match c.kind.as_str() {
        "jpg" => PictureKind::Jpeg,
        "png" => PictureKind::Png,
        other => return Err(malformed(format!("unknown picture type {other:?}"))),
    };
    let file = FileId::from_hex(&c.file_id).map_err(malformed)?;
    Ok((
        file,
        CoverInfo {
            size: c.size,
            picture,
        },
    ))
}

/// A playlist and its ETag, if its answer had one.
fn from_playlist_dto(p: PlaylistDto) -> Result<(Playlist, Option<String>), SnapshotError> {
    let tracks = p.tracks.iter().map(|t| TrackId::from_hex(t));
    let playlist = Playlist {
        id: PlaylistId::from_hex(&p.id).map_err(malformed)?,
        name: p.name,
        revision: hex::decode(&p.revision).map_err(malformed)?,
        tracks: tracks.collect::<Result<_, _>>().map_err(malformed)?,
    };
    Ok((playlist, p.etag))
}

fn track_dto(t: &Track) -> TrackDto {
    TrackDto {
        id: t.id.to_hex(),
        name: t.name.clone(),
        artists: t.artists.clone(),
        number: t.number,
        disc_number: t.disc_number,
        duration_ms: t.duration_ms,
        files: t
            .files
            .iter()
            .map(|f| (f.id.to_hex(), f.format.wire()))
            .collect(),
    }
}

fn malformed(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Malformed(e.to_string())
}

fn from_body(body: Body) -> Result<Snapshot, SnapshotError> {
    let mut albums = Vec::with_capacity(body.albums.len());
    for a in body.albums {
        let discs = a
            .discs
            .into_iter()
            .map(|(number, ids)| {
                let tracks: Result<Vec<_>, _> = ids.iter().map(|t| TrackId::from_hex(t)).collect();
                tracks.map(|tracks| Disc { number, tracks })
            })
            .collect::<Result<_, _>>()
            .map_err(malformed)?;
        let covers = a
            .covers
            .into_iter()
            .map(|i| {
                FileId::from_hex(&i.file_id).map(|file_id| Image {
                    file_id,
                    size: ImageSize::from_wire(i.size),
                    width: i.width,
                    height: i.height,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(malformed)?;
        let album = Album {
            id: AlbumId::from_hex(&a.id).map_err(malformed)?,
            name: a.name,
            artists: a.artists,
            date: a.date.map(|(year, month, day)| Date { year, month, day }),
            discs,
            covers,
        };
        let tracks = a
            .tracks
            .into_iter()
            .map(from_track_dto)
            .collect::<Result<_, _>>()?;
        albums.push(AlbumEntry { album, tracks });
    }
    let sizes = body
        .sizes
        .into_iter()
        .map(|(f, s)| FileId::from_hex(&f).map(|f| (f, s)))
        .collect::<Result<_, _>>()
        .map_err(malformed)?;
    let etags = from_etags_dto(body.etags)?;
    let covers = body
        .covers
        .into_iter()
        .map(from_cover_dto)
        .collect::<Result<_, _>>()?;
    let (mut playlists, mut playlist_etags) = (Vec::new(), HashMap::new());
    for dto in body.playlists {
        let (playlist, etag) = from_playlist_dto(dto)?;
        if let Some(etag) = etag {
            playlist_etags.insert(playlist.id, etag);
        }
        playlists.push(playlist);
    }
    Ok(Snapshot {
        albums,
        sizes,
        etags,
        extras: Extras { playlists, covers },
        playlist_etags,
        last_change: body.last_change,
    })
}

fn from_track_dto(t: TrackDto) -> Result<Track, SnapshotError> {
    let mut files = Vec::with_capacity(t.files.len());
    for (id, format) in t.files {
        let format = AudioFormat::from_wire(format)
            .ok_or_else(|| malformed(format!("unknown format {format}")))?;
        files.push(AudioFile {
            id: FileId::from_hex(&id).map_err(malformed)?,
            format,
        });
    }
    Ok(Track {
        id: TrackId::from_hex(&t.id).map_err(malformed)?,
        name: t.name,
        artists: t.artists,
        number: t.number,
        disc_number: t.disc_number,
        duration_ms: t.duration_ms,
        files,
    })
}

/// Replaces the snapshot in `dir` whole: a crash leaves the old one or the new one.
pub fn save(dir: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    save_unless(dir, snapshot, || false).map(|_| ())
}

/// The same, except that once the new one is written it replaces the old one only if
/// `given_up` says no: a save that a closing mount stopped waiting for (a hung disk) must not
/// land later over what the next mount saved. Whether it was put in place.
pub fn save_unless(
    dir: &Path,
    snapshot: &Snapshot,
    given_up: impl Fn() -> bool,
) -> std::io::Result<bool> {
    use std::io::Write;
    let body = serde_json::to_vec(&to_body(snapshot)).map_err(std::io::Error::other)?;
    let first = format!(
        "{MAGIC} {VERSION} {:08x} {}\n",
        crc32c::crc32c(&body),
        body.len()
    );
    // A temporary of its own (two saves at once must not write into one file), on disk
    // before it replaces the snapshot; removed when anything fails.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{FILE_NAME}.tmp"))
        .tempfile_in(dir)?;
    temp.write_all(first.as_bytes())?;
    temp.write_all(&body)?;
    temp.as_file().sync_all()?;
    if given_up() {
        // Dropped: the temporary is removed.
        return Ok(false);
    }
    temp.persist(dir.join(FILE_NAME)).map_err(|e| e.error)?;
    // The rename itself on disk too (best effort: not every file system syncs folders).
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(true)
}

/// The snapshot in `dir`, checked whole.
pub fn load(dir: &Path) -> Result<Snapshot, SnapshotError> {
    let file = std::fs::read(dir.join(FILE_NAME))?;
    let newline = file
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(SnapshotError::NotASnapshot)?;
    let (first, body) = (&file[..newline], &file[newline + 1..]);
    let first = std::str::from_utf8(first).map_err(|_| SnapshotError::NotASnapshot)?;
    let fields: Vec<&str> = first.split(' ').collect();
    let [magic, version, crc, len] = fields[..] else {
        return Err(SnapshotError::NotASnapshot);
    };
    if magic != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let version: u32 = version.parse().map_err(|_| SnapshotError::NotASnapshot)?;
    if !(READS_FROM..=VERSION).contains(&version) {
        return Err(SnapshotError::Version(version));
    }
    let crc = u32::from_str_radix(crc, 16).map_err(|_| SnapshotError::NotASnapshot)?;
    if len.parse::<usize>().ok() != Some(body.len()) || crc32c::crc32c(body) != crc {
        return Err(SnapshotError::Checksum);
    }
    from_body(serde_json::from_slice(body).map_err(malformed)?)
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
