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
//! looks again instead of being told "unchanged". Once a request shows that the origin itself
//! fails (its retries spent, no connection), the refresh asks for nothing more: the rest is
//! kept as it was too, and one line says so, instead of every track of a large library
//! spending its whole retry bound (and logging each retry) against a dead origin.

use crate::catalogue::library::PLAYLISTS_AT_ONCE;
use crate::client::error::FetchError;
use crate::client::retry;
use crate::client::seams::{ControlPlane, Fresh, Revalidated};
use crate::fs::tree::AlbumEntry;
use crate::protocol::model::{Album, AlbumId, Playlist, PlaylistId, Track, TrackId};
use crate::units::count;
use futures::stream::{self, StreamExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

const ALBUMS_AT_ONCE: usize = 32;
const TRACKS_AT_ONCE: usize = 64;

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
    /// fetched and was kept as it was, or left out when new. `failed`: the origin itself
    /// failed meanwhile (a request gave up on it, or not one album or track answered), so
    /// the refresh stopped asking; what it did not fetch is kept as it was.
    Revalidated {
        catalogue: Catalogue,
        complete: bool,
        failed: Option<Box<Failed>>,
    },
}

/// Why a refresh stopped before it had asked for everything, and what that left as it was.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} kept as they were: {error}", crate::units::count(*.kept, "track"))]
pub struct Failed {
    /// Tracks shown as they were before the refresh, not revalidated.
    pub kept: usize,
    pub error: FetchError,
}

/// The catalogue from nothing (a first mount): every album and track fetched, ETags kept.
/// Fails, with the first error, only when the library cannot be listed or no album loads.
pub async fn load(api: &dyn ControlPlane) -> Result<Catalogue, FetchError> {
    match revalidate(api, &Catalogue::default()).await? {
        Outcome::Revalidated { catalogue, .. } => Ok(catalogue),
        Outcome::Unchanged => Ok(Catalogue::default()),
    }
}

/// The per-item requests of one refresh (albums, tracks): quiet retries, and no new request
/// once one has shown that the origin itself is failing. A refresh of 20,000 tracks against
/// a dead origin would otherwise spend every request's whole retry bound, one after the
/// other, and log every retry.
#[derive(Default)]
struct Asking {
    stopped: CancellationToken,
    /// The failure that stopped it.
    failure: Mutex<Option<FetchError>>,
}

impl Asking {
    /// The answer, or `None` once the refresh has stopped asking (also for a request under
    /// way then: it is dropped, its retries with it).
    async fn ask<T>(
        &self,
        request: impl Future<Output = Revalidated<T>>,
    ) -> Option<Revalidated<T>> {
        if self.stopped.is_cancelled() {
            return None;
        }
        let answer = tokio::select! {
            biased;
            () = self.stopped.cancelled() => return None,
            answer = retry::quietly(request) => answer,
        };
        if let Err(e) = &answer {
            if origin_failing(e) {
                let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                failure.get_or_insert_with(|| e.clone());
                self.stopped.cancel();
            }
        }
        Some(answer)
    }

    fn failure(&self) -> Option<FetchError> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Whether a per-item failure is the origin's (its retries spent, no connection, a server
/// error, credentials refused) rather than that one item's (missing, unreadable).
fn origin_failing(e: &FetchError) -> bool {
    match e {
        FetchError::NotFound { .. } | FetchError::Malformed { .. } => false,
        FetchError::Status { status, .. } => !(400..500).contains(status) || *status == 429,
        _ => true,
    }
}

/// What a refresh could not fetch, for its one summary line.
#[derive(Default)]
struct Gaps {
    /// Tracks shown as they were, not revalidated.
    kept: usize,
    /// New albums and tracks that were not fetched (they come with the next refresh).
    left_out: usize,
    /// Albums and tracks that answered.
    answered: usize,
    first_error: Option<FetchError>,
}

impl Gaps {
    /// An album or track not fetched (`None`: not asked). A failure of that item alone (it
    /// is missing, its answer unreadable) is logged with what became of it, `doing`; the
    /// origin's failures only in the summary.
    fn failed(&mut self, error: Option<FetchError>, doing: &str) {
        if let Some(e) = error {
            match origin_failing(&e) {
                true => tracing::debug!("{doing}: {e}"),
                false => tracing::warn!("{doing}: {e}"),
            }
            self.first_error.get_or_insert(e);
        }
    }

    fn log(&self) {
        if self.kept == 0 && self.left_out == 0 {
            return;
        }
        let why = match &self.first_error {
            Some(e) => e.to_string(),
            None => "the origin's answers disagree with each other".into(),
        };
        let left_out = match self.left_out {
            0 => String::new(),
            n => format!(" ({n} new albums or tracks left for the next refresh)"),
        };
        tracing::warn!(
            "refresh incomplete: {} kept as they were{left_out}: {why}",
            count(self.kept, "track")
        );
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
    let mut gaps = Gaps::default();
    let mut seen = HashSet::new();
    let mut unreadable = false;
    let mut ids = Vec::new();
    for entry in entries {
        match entry {
            Ok(id) if seen.insert(id) => ids.push(id),
            Ok(_) => {}
            Err(e) => {
                unreadable = true;
                gaps.failed(Some(e), "skipping a library entry");
            }
        }
    }
    let asking = Asking::default();
    let answers: Vec<_> = stream::iter(ids)
        .map(|id| {
            // Without the album's old answer, its old ETag would say nothing.
            let etag = known
                .contains_key(&id)
                .then(|| current.etags.albums.get(&id).cloned())
                .flatten();
            let asking = &asking;
            async move { (id, asking.ask(api.album_if(id, etag)).await) }
        })
        .buffered(ALBUMS_AT_ONCE)
        .collect()
        .await;

    let mut etags = Etags::default();
    // Per album in library order: its entry, and whether its tracks need revalidating.
    let mut albums: Vec<(AlbumEntry, bool)> = Vec::new();
    for (id, answer) in answers {
        let before = known.get(&id).copied();
        gaps.answered += usize::from(matches!(answer, Some(Ok(_))));
        match (answer.ok_or(None).and_then(|a| a.map_err(Some)), before) {
            (Ok(Fresh::Unchanged), Some(before)) => {
                keep_etag(&mut etags.albums, id, &current.etags.albums);
                // Its tracks are revalidated all the same: the album's answer did not change,
                // theirs may have (a new file under the same track id).
                albums.push((bare(before.album.clone()), true));
            }
            (Ok(Fresh::Unchanged), None) => {
                // A 304 for an ETag never sent: the origin is confused; try again next time.
                tracing::debug!(album = %id, "the origin said an album it never sent is unchanged");
                complete = false;
                gaps.left_out += 1;
            }
            (Ok(Fresh::New(album, etag)), _) => {
                // Even an album whose body is the same has its tracks fetched again: one of
                // them may have a new file under the same track id.
                if let Some(etag) = etag {
                    etags.albums.insert(id, etag);
                }
                albums.push((bare(album), true));
            }
            (Err(e), Some(before)) => {
                keep_etag(&mut etags.albums, id, &current.etags.albums);
                albums.push((before.clone(), false));
                complete = false;
                gaps.kept += before.tracks.len();
                gaps.failed(e, "keeping an album as it was");
            }
            (Err(e), None) => {
                complete = false;
                gaps.left_out += 1;
                gaps.failed(e, "skipping an album");
            }
        }
    }
    if unreadable {
        // Any album it does not list may be the one an unreadable entry stands for: none
        // leaves the library on this answer.
        complete = false;
        let listed: HashSet<AlbumId> = albums.iter().map(|(a, _)| a.album.id).collect();
        for before in current
            .albums
            .iter()
            .filter(|a| !listed.contains(&a.album.id))
        {
            keep_etag(&mut etags.albums, before.album.id, &current.etags.albums);
            gaps.kept += before.tracks.len();
            albums.push((before.clone(), false));
        }
    }
    if albums.is_empty() {
        if let Some(e) = asking.failure().or(gaps.first_error.take()) {
            return Err(e);
        }
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
            let asking = &asking;
            async move { (i, id, asking.ask(api.track_if(id, etag)).await) }
        })
        .buffer_unordered(TRACKS_AT_ONCE)
        .collect()
        .await;
    for (i, id, answer) in answers {
        let before = old_tracks.get(&id).copied();
        gaps.answered += usize::from(matches!(answer, Some(Ok(_))));
        let track = match (answer.ok_or(None).and_then(|a| a.map_err(Some)), before) {
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
                keep_etag(&mut etags.tracks, id, &current.etags.tracks);
                complete = false;
                gaps.kept += 1;
                gaps.failed(e, "keeping a track as it was");
                before.clone()
            }
            (Ok(Fresh::Unchanged), None) => {
                complete = false;
                gaps.left_out += 1;
                continue;
            }
            (Err(e), None) => {
                // One broken track must not hide the rest of the library.
                complete = false;
                gaps.left_out += 1;
                gaps.failed(e, "skipping a track");
                continue;
            }
        };
        albums[i].0.tracks.push(track);
    }
    // A new album none of whose tracks could be fetched would be an empty folder, reported
    // as added: it waits for the next refresh instead.
    albums.retain(|(entry, _)| {
        let listed = entry.album.discs.iter().any(|d| !d.tracks.is_empty());
        let empty = listed && entry.tracks.is_empty() && !known.contains_key(&entry.album.id);
        if empty {
            etags.albums.remove(&entry.album.id);
            complete = false;
            gaps.left_out += 1;
        }
        !empty
    });
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
    gaps.log();
    // Stopped by the origin's failure, or nothing that was asked answered at all.
    let error = asking.failure().or_else(|| {
        let nothing = gaps.answered == 0 && (gaps.kept > 0 || gaps.left_out > 0);
        nothing.then(|| gaps.first_error.clone()).flatten()
    });
    let failed = error.map(|error| {
        Box::new(Failed {
            kept: gaps.kept,
            error,
        })
    });
    Ok(Outcome::Revalidated {
        catalogue: Catalogue { albums, etags },
        complete,
        failed,
    })
}

/// An album's entry before its tracks are fetched.
fn bare(album: Album) -> AlbumEntry {
    AlbumEntry {
        album,
        tracks: Vec::new(),
    }
}

/// The user's playlists, revalidated: the rootlist (small) whole, then each playlist with the
/// ETag of its last answer (a `304` keeps it). What cannot be fetched is kept as it was; a
/// rootlist that cannot be read keeps them all. Once a playlist request shows the origin
/// itself failing, no more are asked (as for albums and tracks) and one line says so.
/// Returns the playlists and their ETags.
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
    let asking = Asking::default();
    let answers: Vec<_> = stream::iter(ids)
        .map(|id| {
            let etag = known
                .contains_key(&id)
                .then(|| etags.get(&id).cloned())
                .flatten();
            let asking = &asking;
            async move { (id, asking.ask(api.playlist_if(id, etag)).await) }
        })
        .buffered(PLAYLISTS_AT_ONCE)
        .collect()
        .await;
    let (mut playlists, mut kept) = (Vec::new(), HashMap::new());
    let mut not_asked = 0;
    for (id, answer) in answers {
        match (answer, known.get(&id)) {
            (Some(Ok(Fresh::New(playlist, etag))), _) => {
                if let Some(etag) = etag {
                    kept.insert(id, etag);
                }
                playlists.push(playlist);
            }
            (Some(Ok(Fresh::Unchanged)), Some(before)) => {
                keep_etag(&mut kept, id, etags);
                playlists.push((*before).clone());
            }
            // Kept as it was, with the ETag it had: the next refresh can still get a `304`.
            (Some(Err(e)), Some(before)) if !origin_failing(&e) => {
                tracing::warn!(playlist = %id.to_base62(), "keeping a playlist as it was: {e}");
                keep_etag(&mut kept, id, etags);
                playlists.push((*before).clone());
            }
            (Some(Err(_)) | None, Some(before)) => {
                not_asked += 1;
                keep_etag(&mut kept, id, etags);
                playlists.push((*before).clone());
            }
            (Some(Ok(Fresh::Unchanged)), None) => {}
            (Some(Err(e)), None) if !origin_failing(&e) => {
                tracing::warn!(playlist = %id.to_base62(), "skipping a playlist: {e}");
            }
            (Some(Err(_)) | None, None) => not_asked += 1,
        }
    }
    if let Some(e) = asking.failure() {
        tracing::warn!(
            "{} kept as they were or left for the next refresh: {e}",
            count(not_asked, "playlist")
        );
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
