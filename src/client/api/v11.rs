//! The v1.1 answers of the control plane (docs/protocol.md §6, §7): the user's rootlist, one
//! playlist, and a cover's bytes. Kept apart from the v1 requests so that what an older
//! origin lacks is visible in one place: a `404` on the rootlist means "no playlists".

use super::{Api, MAX_METADATA_ANSWER};
use crate::client::error::FetchError;
use crate::client::retry::Retry;
use crate::client::seams::{Fresh, Revalidated};
use crate::protocol::model::{rootlist_from_wire, FileId, Playlist, PlaylistId};
use crate::protocol::proto::playlist4 as pb;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Pictures are "a few MiB at most" (docs/protocol.md §6); more is not a picture.
pub(crate) const MAX_IMAGE_ANSWER: usize = 16 << 20;

/// RFC 3986's unreserved characters stay as they are; everything else in a user name is
/// percent-encoded into the path.
const USER_IN_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Api {
    /// The user's playlists, in order; empty when the origin has none or predates them.
    pub async fn rootlist(&self) -> Result<Vec<PlaylistId>, FetchError> {
        let user = utf8_percent_encode(&self.credentials.user, USER_IN_PATH);
        let path = format!("/playlist/v2/user/{user}/rootlist");
        let what = "the rootlist";
        match self.get_authed(&path, what, MAX_METADATA_ANSWER).await {
            Ok(body) => {
                let content: pb::SelectedListContent = self.decode(body, &path, what)?;
                Ok(rootlist_from_wire(&content))
            }
            Err(FetchError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    pub async fn playlist(&self, id: PlaylistId) -> Result<Playlist, FetchError> {
        match self.playlist_if(id, None).await? {
            Fresh::New(playlist, _) => Ok(playlist),
            Fresh::Unchanged => super::unreachable_unchanged("a playlist"),
        }
    }

    /// `playlist`, revalidated against `etag` (docs/protocol.md §8).
    pub async fn playlist_if(&self, id: PlaylistId, etag: Option<&str>) -> Revalidated<Playlist> {
        let path = format!("/playlist/v2/playlist/{}", id.to_base62());
        let what = "a playlist";
        match self
            .get_authed_if(&path, what, MAX_METADATA_ANSWER, etag)
            .await?
        {
            Fresh::New(body, etag) => {
                let content: pb::SelectedListContent = self.decode(body, &path, what)?;
                Ok(Fresh::New(Playlist::from_wire(id, &content), etag))
            }
            Fresh::Unchanged => Ok(Fresh::Unchanged),
        }
    }

    /// A picture's bytes (no token: the image endpoint is a CDN for pictures), retried.
    pub async fn image(&self, file: FileId) -> Result<Bytes, FetchError> {
        let url = format!("{}/image/{file}", self.base);
        let what = "an image";
        let mut retry = Retry::new(what, self.attempts, &self.stats);
        loop {
            let request = self.http.get(&url);
            match self.send(request, &url, what, MAX_IMAGE_ANSWER).await {
                Ok(body) => return Ok(body),
                Err(e) => retry.after(e).await?,
            }
        }
    }
}
