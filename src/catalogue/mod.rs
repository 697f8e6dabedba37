//! Loads the catalogue at mount time: `/library` → albums → tracks, fetched concurrently with
//! a bound, so a large library mounts in seconds without flooding the origin.

use crate::client::error::FetchError;
use crate::client::seams::ControlPlane;
use crate::fs::tree::AlbumEntry;
use futures::stream::{self, StreamExt};

pub mod library;
pub mod refresh;
pub mod snapshot;
#[cfg(test)]
mod tests;

const ALBUMS_AT_ONCE: usize = 32;
const TRACKS_AT_ONCE: usize = 64;

/// Broken library entries, albums and tracks are skipped with a warning naming them, so one
/// bad entry does not hide a whole library; only when every album fails does the mount fail
/// (with the first error: the origin itself is broken then, or the credentials are).
pub async fn load(api: &dyn ControlPlane) -> Result<Vec<AlbumEntry>, FetchError> {
    let results: Vec<_> = stream::iter(api.library().await?)
        .map(|entry| async move {
            let id = entry.inspect_err(|e| tracing::warn!("skipping a library entry: {e}"))?;
            api.album(id)
                .await
                .inspect_err(|e| tracing::warn!(album = %id, "skipping an album: {e}"))
        })
        .buffered(ALBUMS_AT_ONCE)
        .collect()
        .await;
    let mut first_error = None;
    let albums: Vec<_> = results
        .into_iter()
        .filter_map(|r| r.map_err(|e| first_error.get_or_insert(e)).ok())
        .collect();
    if let (true, Some(e)) = (albums.is_empty(), first_error) {
        return Err(e);
    }
    // All tracks of all albums in one bounded stream: a library of many small albums must not
    // pay one round trip per album.
    let wanted: Vec<_> = albums
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            a.discs
                .iter()
                .flat_map(move |d| d.tracks.iter().map(move |t| (i, *t)))
        })
        .collect();
    let results: Vec<_> = stream::iter(wanted)
        .map(|(i, id)| async move { (i, id, api.track(id).await) })
        .buffer_unordered(TRACKS_AT_ONCE)
        .collect()
        .await;
    let mut entries: Vec<AlbumEntry> = albums
        .into_iter()
        .map(|album| AlbumEntry {
            album,
            tracks: Vec::new(),
        })
        .collect();
    for (i, id, result) in results {
        match result {
            Ok(track) => entries[i].tracks.push(track),
            // One broken track must not hide the rest of the library.
            Err(e) => tracing::warn!(track = %id, "skipping a track: {e}"),
        }
    }
    Ok(entries)
}
