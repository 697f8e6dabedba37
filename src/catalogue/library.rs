//! The v1.1 parts of the catalogue (docs/protocol.md §6, §7): the user's playlists and what
//! each album's cover is (its size and type), loaded after the albums.
//!
//! Neither may stop a mount: an origin without them (v1) answers `404` and the mount shows no
//! covers and no `Playlists` folder; a playlist or picture that fails to load is left out with
//! a warning naming it. A cover's size must be known before `stat` answers for `cover.jpg`, and
//! whether it is a JPEG or a PNG decides its name, so each album's chosen picture is fetched
//! here (it is small) and kept in the image store, where the first read finds it.

use crate::client::seams::{ControlPlane, Fresh};
use crate::fs::tree::AlbumEntry;
use crate::protocol::model::{FileId, Image, Playlist, PlaylistId};
use crate::readpath::images::{CoverInfo, ImageStore};
use futures::stream::{self, StreamExt};
use std::collections::HashMap;

/// Playlist requests under way at once, at mount and in each refresh.
pub(crate) const PLAYLISTS_AT_ONCE: usize = 16;
const IMAGES_AT_ONCE: usize = 16;

/// The ETags of playlists' answers, by playlist.
pub type PlaylistEtags = HashMap<PlaylistId, String>;

/// Playlists and covers: what the tree shows besides albums and tracks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// In the rootlist's order.
    pub playlists: Vec<Playlist>,
    /// What each shown picture is, by its file id (content-addressed: it never changes).
    pub covers: HashMap<FileId, CoverInfo>,
}

/// The user's playlists in rootlist order, with the ETags of their answers (so the first
/// refresh that finds the library changed revalidates them instead of fetching them again);
/// none when the origin has none (or fails to say).
pub async fn load_playlists(api: &dyn ControlPlane) -> (Vec<Playlist>, PlaylistEtags) {
    let ids = match api.rootlist().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!("no playlists: cannot read the rootlist: {e}");
            return Default::default();
        }
    };
    let loaded: Vec<_> = stream::iter(ids)
        .map(|id| async move { (id, api.playlist_if(id, None).await) })
        .buffered(PLAYLISTS_AT_ONCE)
        .collect()
        .await;
    let (mut playlists, mut etags) = (Vec::new(), PlaylistEtags::new());
    for (id, answer) in loaded {
        match answer {
            Ok(Fresh::New(playlist, etag)) => {
                if let Some(etag) = etag {
                    etags.insert(id, etag);
                }
                playlists.push(playlist);
            }
            // Without an ETag sent, a `304` is the origin's confusion: left out.
            Ok(Fresh::Unchanged) => {
                tracing::warn!(playlist = %id.to_base62(), "skipping a playlist: a 304 unasked");
            }
            Err(e) => tracing::warn!(playlist = %id.to_base62(), "skipping a playlist: {e}"),
        }
    }
    (playlists, etags)
}

/// The picture each album shows (docs/protocol.md §6: the largest).
pub fn chosen_pictures(albums: &[AlbumEntry]) -> Vec<FileId> {
    let mut out: Vec<FileId> = albums
        .iter()
        .filter_map(|a| Image::largest(&a.album.covers).map(|i| i.file_id))
        .collect();
    out.sort_unstable_by_key(|f| f.0);
    out.dedup();
    out
}

/// Learns size and type of every album's chosen picture that `known` does not already
/// describe, fetching it (kept in `images` for the first read). Pictures that cannot be
/// fetched are left out: their album shows no cover until a later load.
pub async fn load_covers(
    albums: &[AlbumEntry],
    known: &HashMap<FileId, CoverInfo>,
    images: &ImageStore,
) -> HashMap<FileId, CoverInfo> {
    let wanted = chosen_pictures(albums);
    let (mut covers, mut missing) = (HashMap::new(), Vec::new());
    for file in wanted {
        match known.get(&file) {
            Some(info) => {
                covers.insert(file, *info);
            }
            None => missing.push(file),
        }
    }
    let fetched: Vec<_> = stream::iter(missing)
        .map(|file| async move { (file, images.get(file, None).await) })
        .buffer_unordered(IMAGES_AT_ONCE)
        .collect()
        .await;
    for (file, answer) in fetched {
        match answer {
            Ok(bytes) if !bytes.is_empty() => {
                covers.insert(file, CoverInfo::of(&bytes));
            }
            Ok(_) => tracing::warn!(image = %file, "no cover: the picture is empty"),
            Err(e) => tracing::warn!(image = %file, "no cover: cannot fetch the picture: {e}"),
        }
    }
    covers
}

/// Both, for a mount, with the playlists' ETags.
pub async fn load(
    api: &dyn ControlPlane,
    albums: &[AlbumEntry],
    known: &HashMap<FileId, CoverInfo>,
    images: &ImageStore,
) -> (Extras, PlaylistEtags) {
    let ((playlists, etags), covers) =
        tokio::join!(load_playlists(api), load_covers(albums, known, images));
    (Extras { playlists, covers }, etags)
}
