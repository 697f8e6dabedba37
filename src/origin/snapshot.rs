//! What `serve` answers the control plane from: the catalog of the last complete publish,
//! held in memory as the answers' bytes with their ETags, and swapped whole when a publish
//! replaces `catalog.pb`.
//!
//! Atomicity comes from the file system and one pointer: `publish` writes `catalog.pb` to a
//! temporary name and renames it into place, so it is read either old or new, never mixed;
//! the snapshot built from it replaces the previous one in one `Arc` swap, so a request sees
//! one publish or the next. Files the catalog names (ciphertext, heads, pictures, keys) are
//! written before it, so they are there when a client learns of them.

use super::library::{read_pb, Library, LibraryError};
use crate::protocol::model::{
    rootlist_to_wire, AlbumId, ModelError, Playlist, PlaylistId, TrackId,
};
use crate::protocol::proto::library::{Catalog, Library as LibraryPb};
use crate::protocol::proto::metadata as pb;
use crate::units::count;
use axum::http::HeaderValue;
use bytes::Bytes;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, RwLock};

/// One answer: its bytes and strong ETag (a hash of the bytes).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub bytes: Bytes,
    pub etag: HeaderValue,
}

impl Answer {
    fn new(bytes: Vec<u8>) -> Answer {
        let etag = etag_of([bytes.as_slice()]);
        Answer {
            bytes: bytes.into(),
            etag,
        }
    }
}

/// `"<32 hex chars>"`: the first 16 bytes of SHA-256 over the parts.
fn etag_of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> HeaderValue {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let text = format!("\"{}\"", hex::encode(&h.finalize()[..16]));
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Every control-plane answer of one publish.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The `Library` answer; its ETag stands for the whole snapshot.
    pub library: Answer,
    pub albums: HashMap<AlbumId, Answer>,
    pub tracks: HashMap<TrackId, Answer>,
    pub playlists: HashMap<PlaylistId, Answer>,
    /// `None` when the library has no playlists (the rootlist is then `404`).
    pub rootlist: Option<Answer>,
}

fn gid<T>(bytes: Option<&[u8]>, parse: impl Fn(&[u8]) -> Result<T, ModelError>) -> Option<T> {
    parse(bytes?).ok()
}

impl Snapshot {
    /// Answers built from a catalog; entries that do not decode are left out (and logged).
    pub(crate) fn from_catalog(c: &Catalog) -> Snapshot {
        let mut albums = HashMap::new();
        let mut order = Vec::new();
        for bytes in &c.album {
            match pb::Album::decode(bytes.as_slice()) {
                Ok(a) => match gid(a.gid.as_deref(), AlbumId::from_bytes) {
                    Some(id) => {
                        order.push(id);
                        albums.insert(id, Answer::new(bytes.clone()));
                    }
                    None => tracing::warn!("catalog: an album without a valid gid"),
                },
                Err(e) => tracing::warn!("catalog: an album that does not decode: {e}"),
            }
        }
        let mut tracks = HashMap::new();
        for bytes in &c.track {
            let id = pb::Track::decode(bytes.as_slice())
                .ok()
                .and_then(|t| gid(t.gid.as_deref(), TrackId::from_bytes));
            match id {
                Some(id) => {
                    tracks.insert(id, Answer::new(bytes.clone()));
                }
                None => tracing::warn!("catalog: a track that does not decode"),
            }
        }
        let mut playlists = HashMap::new();
        let mut list_order = Vec::new();
        for p in &c.playlist {
            let Ok(id) = PlaylistId::from_bytes(&p.gid) else {
                continue;
            };
            let tracks: Vec<TrackId> = p
                .track_gid
                .iter()
                .filter_map(|g| TrackId::from_bytes(g).ok())
                .collect();
            let mut revision = Sha256::new();
            revision.update(p.name.as_bytes());
            tracks.iter().for_each(|t| revision.update(t.0));
            let playlist = Playlist {
                id,
                name: p.name.clone(),
                revision: revision.finalize()[..8].to_vec(),
                tracks,
            };
            list_order.push(id);
            playlists.insert(id, Answer::new(playlist.to_wire().encode_to_vec()));
        }
        Self::assemble(order, albums, tracks, list_order, playlists)
    }

    fn assemble(
        mut order: Vec<AlbumId>,
        albums: HashMap<AlbumId, Answer>,
        tracks: HashMap<TrackId, Answer>,
        list_order: Vec<PlaylistId>,
        playlists: HashMap<PlaylistId, Answer>,
    ) -> Snapshot {
        order.sort();
        order.dedup();
        let library = LibraryPb {
            album_gid: order.iter().map(|a| a.0.to_vec()).collect(),
        };
        let rootlist = (!list_order.is_empty()).then(|| {
            let ids: Vec<u8> = list_order.iter().flat_map(|p| p.0).collect();
            let revision = Sha256::digest(&ids)[..8].to_vec();
            Answer::new(rootlist_to_wire(&list_order, &revision).encode_to_vec())
        });
        let mut library = Answer::new(library.encode_to_vec());
        // The library's ETag covers every answer, so one `304` on it means nothing changed.
        let mut parts: Vec<&[u8]> = vec![library.etag.as_bytes()];
        let mut sorted_tracks: Vec<_> = tracks.iter().collect();
        sorted_tracks.sort_by_key(|(id, _)| **id);
        let mut sorted_lists: Vec<_> = playlists.iter().collect();
        sorted_lists.sort_by_key(|(id, _)| **id);
        parts.extend(
            order
                .iter()
                .filter_map(|a| albums.get(a))
                .map(|a| a.etag.as_bytes()),
        );
        parts.extend(sorted_tracks.iter().map(|(_, t)| t.etag.as_bytes()));
        parts.extend(sorted_lists.iter().map(|(_, p)| p.etag.as_bytes()));
        parts.extend(rootlist.iter().map(|r| r.etag.as_bytes()));
        library.etag = etag_of(parts);
        Snapshot {
            library,
            albums,
            tracks,
            playlists,
            rootlist,
        }
    }

    /// A library written by trackfs before `catalog.pb` (`library.pb`, `albums/`, `tracks/`),
    /// served as it is until the next publish replaces it.
    fn from_legacy(lib: &Library) -> Result<Snapshot, LibraryError> {
        let root = lib.root();
        let library: LibraryPb = read_pb(&root.join("library.pb"))?.unwrap_or_default();
        let (mut order, mut albums, mut tracks) = (Vec::new(), HashMap::new(), HashMap::new());
        for gid in library.album_gid {
            let Ok(id) = AlbumId::from_bytes(&gid) else {
                continue;
            };
            let path = root.join("albums").join(format!("{id}.pb"));
            let Some(album) = read_pb::<pb::Album>(&path)? else {
                continue;
            };
            for t in album.disc.iter().flat_map(|d| d.track.iter()) {
                let Some(tid) = gid_of_track(t) else { continue };
                let path = root.join("tracks").join(format!("{tid}.pb"));
                if let Ok(bytes) = std::fs::read(&path) {
                    tracks.insert(tid, Answer::new(bytes));
                }
            }
            order.push(id);
            albums.insert(id, Answer::new(album.encode_to_vec()));
        }
        Ok(Self::assemble(
            order,
            albums,
            tracks,
            Vec::new(),
            HashMap::new(),
        ))
    }
}

fn gid_of_track(t: &pb::Track) -> Option<TrackId> {
    gid(t.gid.as_deref(), TrackId::from_bytes)
}

/// Which version of a file was read: a rename puts a new inode in place.
type Stamp = (u64, u64, u64, i64, i64);

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// The snapshot of the library's current catalog, reloaded when `catalog.pb` is replaced.
pub(crate) struct Live {
    lib: Library,
    current: RwLock<(Option<Stamp>, Arc<Snapshot>)>,
    reloading: tokio::sync::Mutex<()>,
}

impl Live {
    pub(crate) fn load(lib: Library) -> Result<Live, LibraryError> {
        let (stamp, snapshot) = read(&lib)?;
        Ok(Live {
            lib,
            current: RwLock::new((stamp, Arc::new(snapshot))),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self) -> (Option<Stamp>, Arc<Snapshot>) {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        (guard.0, guard.1.clone())
    }

    /// The current snapshot: one `stat` per request, and a reload (once, however many
    /// requests wait for it) when a publish replaced the catalog since.
    pub(crate) async fn get(self: &Arc<Self>) -> Arc<Snapshot> {
        let path = source_path(&self.lib);
        let (seen, snapshot) = self.cached();
        if stamp(&path) == seen {
            return snapshot;
        }
        let _one = self.reloading.lock().await;
        let (seen, snapshot) = self.cached();
        if stamp(&path) == seen {
            return snapshot;
        }
        let this = self.clone();
        let loaded = tokio::task::spawn_blocking(move || read(&this.lib)).await;
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        match loaded {
            Ok(Ok((stamp, fresh))) => {
                tracing::info!(
                    "library changed: now {}, {}, {}",
                    count(fresh.albums.len(), "album"),
                    count(fresh.tracks.len(), "track"),
                    count(fresh.playlists.len(), "playlist")
                );
                *guard = (stamp, Arc::new(fresh));
            }
            // Keep answering from the last good catalog; try again when the file changes.
            Ok(Err(e)) => {
                tracing::warn!("cannot reload the library, still serving the last one: {e}");
                guard.0 = stamp(&path);
            }
            Err(e) => tracing::warn!("cannot reload the library: {e}"),
        }
        guard.1.clone()
    }
}

/// The file whose replacement means a new publish.
fn source_path(lib: &Library) -> std::path::PathBuf {
    match lib.catalog().exists() {
        true => lib.catalog(),
        false => lib.root().join("library.pb"),
    }
}

fn read(lib: &Library) -> Result<(Option<Stamp>, Snapshot), LibraryError> {
    let path = source_path(lib);
    let before = stamp(&path);
    let snapshot = match lib.read_catalog()? {
        Some(catalog) => Snapshot::from_catalog(&catalog),
        None => Snapshot::from_legacy(lib)?,
    };
    Ok((before, snapshot))
}
