//! Revalidating the catalogue a mount shows against the origin (docs/protocol.md §8), so a
//! mount that stays up for weeks follows the library without a remount, at the cost of one
//! conditional request when nothing changed.
//!
//! With ETags: `/library` with `If-None-Match`; a `304` ends the refresh (its ETag stands for
//! the whole library, DESIGN.md §1.3). Otherwise each album is revalidated with its own ETag,
//! and so is every track, each with its own: an album's ETag stands for the album's answer
//! only (the protocol says more only of `/library`'s), so an album `304` says nothing of a
//! track that got a new file under the same id. Unchanged tracks cost a `304` each, changed
//! and new ones are fetched. Without ETags the same walk compares bodies: every album and
//! every track is fetched again whenever a refresh runs (docs/design.md, "Refresh": the cost).
//!
//! What cannot be fetched is kept as it was (an album known before stays; a new one waits for
//! the next refresh), and the library's ETag is then not kept either, so the next refresh
//! looks again instead of being told "unchanged".

use crate::client::error::FetchError;
use crate::client::seams::{ControlPlane, Fresh};
use crate::fs::tree::AlbumEntry;
use crate::protocol::model::{AlbumId, Playlist, PlaylistId, Track, TrackId};
use futures::stream::{self, StreamExt};
use std::collections::{HashMap, HashSet};

const ALBUMS_AT_ONCE: usize = 32;
const TRACKS_AT_ONCE: usize = 64;
const PLAYLISTS_AT_ONCE: usize = 16;

/// The ETags the answers of a catalogue came with (none from an origin that sends none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Etags {
    /// Stands for the whole library; kept only when everything in it was fetched.
    pub library: Option<String>,
    pub albums: HashMap<AlbumId, String>,
    pub tracks: HashMap<TrackId, String>,
}

/// Albums, each with its tracks, and the ETags they came with. The order is the library's
/// at the first load; later refreshes keep the albums they knew in place and add new ones
/// after them (see `revalidate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    pub albums: Vec<AlbumEntry>,
    pub etags: Etags,
}

/// What a revalidation found.
#[derive(Debug)]
pub enum Outcome {
    /// `/library` answered `304`: nothing in the library changed.
    Unchanged,
    /// The catalogue as the origin has it now (it may equal the one before: an origin
    /// without ETags cannot say so sooner). `complete` is false when something could not be
    /// fetched and was kept as it was, or left out when new.
    Revalidated {
        catalogue: Catalogue,
        complete: bool,
    },
}

/// The catalogue from nothing (a first mount): every album and track fetched, ETags kept.
/// Fails, with the first error, only when the library cannot be listed or no album loads.
pub async fn load(api: &dyn ControlPlane) -> Result<Catalogue, FetchError> {
    match revalidate(api, &Catalogue::default()).await? {
        Outcome::Revalidated { catalogue, .. } => Ok(catalogue),
        Outcome::Unchanged => Ok(Catalogue::default()),
    }
}

/// One refresh of `current` against the origin. Fails when the library itself cannot be
/// listed, or when it lists albums and none of them loads (the origin is broken then);
/// failures of single albums and tracks are kept out of the way as the module says.
pub async fn revalidate(
    api: &dyn ControlPlane,
    current: &Catalogue,
) -> Result<Outcome, FetchError> {
    let (entries, library_etag) = match api.library_if(current.etags.library.clone()).await? {
        Fresh::Unchanged => return Ok(Outcome::Unchanged),
        Fresh::New(entries, etag) => (entries, etag),
    };
    let known: HashMap<AlbumId, &AlbumEntry> =
        current.albums.iter().map(|a| (a.album.id, a)).collect();
    let mut complete = true;
    let mut seen = HashSet::new();
    let ids: Vec<AlbumId> = entries
        .into_iter()
        .filter_map(|entry| {
            entry
                .inspect_err(|e| tracing::warn!("skipping a library entry: {e}"))
                .ok()
        })
        .filter(|id| seen.insert(*id))
        .collect();

    let answers: Vec<_> = stream::iter(ids)
        .map(|id| {
            let etag = current.etags.albums.get(&id).cloned();
            async move { (id, api.album_if(id, etag).await) }
        })
        .buffered(ALBUMS_AT_ONCE)
        .collect()
        .await;

    let mut etags = Etags::default();
    let mut first_error = None;
    // Per album in library order: its entry, and whether its tracks need revalidating.
    let mut albums: Vec<(AlbumEntry, bool)> = Vec::new();
    for (id, answer) in answers {
        let before = known.get(&id).copied();
        match (answer, before) {
            (Ok(Fresh::Unchanged), Some(before)) => {
                keep_etag(&mut etags.albums, id, &current.etags.albums);
                // Its tracks are revalidated all the same: the album's answer did not change,
                // theirs may have (a new file under the same track id).
                let album = before.album.clone();
                albums.push((
                    AlbumEntry {
                        album,
                        tracks: Vec::new(),
                    },
                    true,
                ));
            }
            (Ok(Fresh::Unchanged), None) => {
                // A 304 for an ETag never sent: the origin is confused; try again next time.
                tracing::warn!(album = %id, "the origin said an album it never sent is unchanged");
                complete = false;
            }
            (Ok(Fresh::New(album, etag)), _) => {
                // Even an album whose body is the same has its tracks fetched again: one of
                // them may have a new file under the same track id.
                if let Some(etag) = etag {
                    etags.albums.insert(id, etag);
                }
                albums.push((
                    AlbumEntry {
                        album,
                        tracks: Vec::new(),
                    },
                    true,
                ));
            }
            (Err(e), Some(before)) => {
                tracing::warn!(album = %id, "keeping an album as it was: {e}");
                keep_etag(&mut etags.albums, id, &current.etags.albums);
                albums.push((before.clone(), false));
                complete = false;
                first_error.get_or_insert(e);
            }
            (Err(e), None) => {
                tracing::warn!(album = %id, "skipping an album: {e}");
                complete = false;
                first_error.get_or_insert(e);
            }
        }
    }
    if let (true, Some(e)) = (albums.is_empty(), first_error) {
        return Err(e);
    }

    let old_tracks: HashMap<TrackId, &Track> = current
        .albums
        .iter()
        .flat_map(|a| &a.tracks)
        .map(|t| (t.id, t))
        .collect();
    // The tracks of every album that answered, all in one bounded stream.
    let wanted: Vec<(usize, TrackId)> = albums
        .iter()
        .enumerate()
        .filter(|(_, (_, revalidate))| *revalidate)
        .flat_map(|(i, (entry, _))| {
            entry
                .album
                .discs
                .iter()
                .flat_map(move |d| d.tracks.iter().map(move |t| (i, *t)))
        })
        .collect();
    let answers: Vec<_> = stream::iter(wanted)
        .map(|(i, id)| {
            // Without the track's old answer, its old ETag would say nothing.
            let etag = old_tracks
                .contains_key(&id)
                .then(|| current.etags.tracks.get(&id).cloned())
                .flatten();
            async move { (i, id, api.track_if(id, etag).await) }
        })
        .buffer_unordered(TRACKS_AT_ONCE)
        .collect()
        .await;
    for (i, id, answer) in answers {
        let before = old_tracks.get(&id).copied();
        let track = match (answer, before) {
            (Ok(Fresh::New(track, etag)), _) => {
                if let Some(etag) = etag {
                    etags.tracks.insert(id, etag);
                }
                track
            }
            (Ok(Fresh::Unchanged), Some(before)) => {
                keep_etag(&mut etags.tracks, id, &current.etags.tracks);
                before.clone()
            }
            (Err(e), Some(before)) => {
                tracing::warn!(track = %id, "keeping a track as it was: {e}");
                complete = false;
                before.clone()
            }
            (Ok(Fresh::Unchanged), None) => {
                complete = false;
                continue;
            }
            (Err(e), None) => {
                // One broken track must not hide the rest of the library.
                tracing::warn!(track = %id, "skipping a track: {e}");
                complete = false;
                continue;
            }
        };
        albums[i].0.tracks.push(track);
    }
    // Tracks of albums kept whole (they could not be fetched) keep their ETags.
    for (entry, revalidated) in &albums {
        if !revalidated {
            for t in &entry.tracks {
                keep_etag(&mut etags.tracks, t.id, &current.etags.tracks);
            }
        }
    }
    let mut albums: Vec<AlbumEntry> = albums.into_iter().map(|(entry, _)| entry).collect();
    for entry in &mut albums {
        sort_tracks(entry);
    }
    // Albums known before keep their place, new ones follow in library order: the tree settles
    // clashing names in this order, so an album never loses its name to a newcomer.
    let place: HashMap<AlbumId, usize> = current
        .albums
        .iter()
        .enumerate()
        .map(|(i, a)| (a.album.id, i))
        .collect();
    albums.sort_by_key(|a| place.get(&a.album.id).copied().unwrap_or(usize::MAX));
    etags.library = library_etag.filter(|_| complete);
    Ok(Outcome::Revalidated {
        catalogue: Catalogue { albums, etags },
        complete,
    })
}

/// The user's playlists, revalidated: the rootlist (small) whole, then each playlist with the
/// ETag of its last answer (a `304` keeps it). What cannot be fetched is kept as it was; a
/// rootlist that cannot be read keeps them all. Returns the playlists and their ETags.
pub async fn revalidate_playlists(
    api: &dyn ControlPlane,
    before: &[Playlist],
    etags: &HashMap<PlaylistId, String>,
) -> (Vec<Playlist>, HashMap<PlaylistId, String>) {
    let ids = match api.rootlist().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!("keeping the playlists as they were: cannot read the rootlist: {e}");
            return (before.to_vec(), etags.clone());
        }
    };
    let known: HashMap<PlaylistId, &Playlist> = before.iter().map(|p| (p.id, p)).collect();
    let answers: Vec<_> = stream::iter(ids)
        .map(|id| {
            let etag = known
                .contains_key(&id)
                .then(|| etags.get(&id).cloned())
                .flatten();
            async move { (id, api.playlist_if(id, etag).await) }
        })
        .buffered(PLAYLISTS_AT_ONCE)
        .collect()
        .await;
    let (mut playlists, mut kept) = (Vec::new(), HashMap::new());
    for (id, answer) in answers {
        match (answer, known.get(&id)) {
            (Ok(Fresh::New(playlist, etag)), _) => {
                if let Some(etag) = etag {
                    kept.insert(id, etag);
                }
                playlists.push(playlist);
            }
            (Ok(Fresh::Unchanged), Some(before)) => {
                keep_etag(&mut kept, id, etags);
                playlists.push((*before).clone());
            }
            (Err(e), Some(before)) => {
                tracing::warn!(playlist = %id.to_base62(), "keeping a playlist as it was: {e}");
                playlists.push((*before).clone());
            }
            (Ok(Fresh::Unchanged), None) => {}
            (Err(e), None) => {
                tracing::warn!(playlist = %id.to_base62(), "skipping a playlist: {e}");
            }
        }
    }
    (playlists, kept)
}

fn keep_etag<K: std::hash::Hash + Eq + Copy>(
    into: &mut HashMap<K, String>,
    key: K,
    from: &HashMap<K, String>,
) {
    if let Some(etag) = from.get(&key) {
        into.insert(key, etag.clone());
    }
}

/// Tracks in the album's disc order, so equal catalogues compare equal however they were
/// fetched.
fn sort_tracks(entry: &mut AlbumEntry) {
    let order: HashMap<TrackId, usize> = entry
        .album
        .discs
        .iter()
        .flat_map(|d| &d.tracks)
        .enumerate()
        .map(|(i, t)| (*t, i))
        .collect();
    entry
        .tracks
        .sort_by_key(|t| order.get(&t.id).copied().unwrap_or(usize::MAX));
    entry.tracks.dedup_by_key(|t| t.id);
}

#[cfg(test)]
#[path = "refresh_tests.rs"]
mod tests;
