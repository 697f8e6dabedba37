//! The two seams between the read path and the network, so that everything above them (reader,
//! key and head stores, catalogue loading, the filesystem core) can be built and tested
//! without an origin, and so that tiers can be stacked below the block cache.
//!
//! - [`ControlPlane`]: the origin's small answers (library, metadata, storage-resolve, audio
//!   keys with a token; head files without). `client::api::Api` speaks it over HTTP;
//!   `client::doubles::MemoryControlPlane` answers from a catalogue built in a test.
//! - [`RangeSource`]: "ciphertext bytes `first..=last` of file F, and F's total size".
//!   `client::cdn::Cdn` answers it from the CDN; a disk tier wraps another source;
//!   `client::doubles::ScriptedRanges` plays a script of answers and failures.
//!
//! Where decryption happens: a fetch takes an optional [`Transform`], applied in place to the
//! bytes before they are returned (the reader passes AES-CTR decryption when it already has the
//! key, so the CDN tier decrypts each piece while it is still in the CPU's cache). A tier that
//! keeps ciphertext (a disk cache) asks the tier below it with no transform, stores what comes
//! back, then applies the transform it was given itself. A tier that only passes requests on
//! passes the transform down.

use super::error::FetchError;
pub use super::transport::BoxFuture;
use crate::protocol::crypto::AudioKey;
use crate::protocol::model::{Album, AlbumId, FileId, Playlist, PlaylistId, Track, TrackId};
use bytes::{Bytes, BytesMut};

/// The origin's control plane (docs/protocol.md §2). Each call is one whole answer, retried by the
/// implementation as its policy says (`Api`: the shared retry bound), except `resolve`, which
/// makes one attempt: it runs inside a range fetch, whose attempts retry it.
pub trait ControlPlane: Send + Sync + 'static {
    /// The library's album ids; an entry that is not a valid id is an error of its own, so
    /// the caller can skip it like an album that fails to load.
    fn library(&self) -> BoxFuture<'_, Result<Vec<Result<AlbumId, FetchError>>, FetchError>>;
    fn album(&self, id: AlbumId) -> BoxFuture<'_, Result<Album, FetchError>>;
    fn track(&self, id: TrackId) -> BoxFuture<'_, Result<Track, FetchError>>;
    /// The file's CDN URLs, in the origin's order of preference (one attempt).
    fn resolve(&self, file: FileId) -> BoxFuture<'_, Result<Vec<String>, FetchError>>;
    fn audio_key(&self, file: FileId) -> BoxFuture<'_, Result<AudioKey, FetchError>>;
    /// The plaintext head file, unauthenticated, in one attempt: `Ok(None)` when the origin has
    /// none; `Err` when asking failed and may work later.
    fn head(&self, file: FileId) -> BoxFuture<'_, Result<Option<Bytes>, FetchError>>;
    /// The user's playlists, in order (docs/protocol.md §7). An origin without playlists, or
    /// one that predates them (v1), answers `404`: that is `Ok` of an empty list.
    fn rootlist(&self) -> BoxFuture<'_, Result<Vec<PlaylistId>, FetchError>>;
    fn playlist(&self, id: PlaylistId) -> BoxFuture<'_, Result<Playlist, FetchError>>;
    /// A picture's bytes, unauthenticated and unencrypted (docs/protocol.md §6).
    fn image(&self, file: FileId) -> BoxFuture<'_, Result<Bytes, FetchError>>;

    /// `library`, revalidated (docs/protocol.md §8): `etag` is the one the last answer came
    /// with; `Unchanged` when the origin answered `304`. Without an ETag the answer is always
    /// `New` (the default, for control planes that know nothing of ETags).
    fn library_if(&self, etag: Option<String>) -> BoxFuture<'_, Revalidated<Library>> {
        let _ = etag;
        Box::pin(async move { Ok(Fresh::New(self.library().await?, None)) })
    }
    /// `album`, revalidated as `library_if` is.
    fn album_if(&self, id: AlbumId, etag: Option<String>) -> BoxFuture<'_, Revalidated<Album>> {
        let _ = etag;
        Box::pin(async move { Ok(Fresh::New(self.album(id).await?, None)) })
    }
    /// `track`, revalidated as `library_if` is.
    fn track_if(&self, id: TrackId, etag: Option<String>) -> BoxFuture<'_, Revalidated<Track>> {
        let _ = etag;
        Box::pin(async move { Ok(Fresh::New(self.track(id).await?, None)) })
    }
    /// `playlist`, revalidated as `library_if` is.
    fn playlist_if(
        &self,
        id: PlaylistId,
        etag: Option<String>,
    ) -> BoxFuture<'_, Revalidated<Playlist>> {
        let _ = etag;
        Box::pin(async move { Ok(Fresh::New(self.playlist(id).await?, None)) })
    }
}

/// The library's album ids, each checked on its own (see [`ControlPlane::library`]).
pub type Library = Vec<Result<AlbumId, FetchError>>;

/// What a conditional request learned.
#[derive(Debug, Clone)]
pub enum Fresh<T> {
    /// `304 Not Modified`: what the ETag stands for is still current.
    Unchanged,
    /// A whole answer, with its ETag when the origin sent one.
    New(T, Option<String>),
}

pub type Revalidated<T> = Result<Fresh<T>, FetchError>;

/// Bytes `first..=last` of a stored file, clipped at its end. `known_total` is the size learned
/// earlier, if any: a source that finds another size must fail with `SizeChanged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeRequest {
    pub file: FileId,
    pub first: u64,
    pub last: u64,
    pub known_total: Option<u64>,
}

impl RangeRequest {
    /// How many bytes a complete answer holds, given the file's total size.
    pub fn expected_len(&self, total: u64) -> u64 {
        if self.first >= total {
            return 0;
        }
        self.last.min(total - 1) - self.first + 1
    }
}

/// Bytes of `[first, first + data.len())` (ciphertext, or what the transform made of it) and
/// the file's total size (from `Content-Range`). Mutable, so it can be decrypted in place.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub total: u64,
    pub data: BytesMut,
}

/// Applied in place to each piece of an answer before it is returned, given the piece's offset
/// in the file: the reader decrypts here when it has the key.
pub type Transform<'a> = &'a (dyn Fn(u64, &mut [u8]) + Send + Sync);

/// A source of stored (encrypted) bytes. An answer holds the whole range asked for, clipped
/// only at the end of the file; the reader refuses a shorter one.
pub trait RangeSource: Send + Sync + 'static {
    /// `Ok(None)` means "not here": this tier does not hold the range and has no tier below it
    /// to ask (a cache consulted alone, an offline mount). It is not an error of the source.
    fn fetch<'a>(
        &'a self,
        request: RangeRequest,
        transform: Option<Transform<'a>>,
    ) -> BoxFuture<'a, Result<Option<Fetched>, FetchError>>;
}

/// Two tiers where the upper one cannot fill itself: the upper answers what it holds, the
/// lower the rest (a tier that stores what passes through wraps its lower tier instead).
pub struct FirstOf {
    pub upper: std::sync::Arc<dyn RangeSource>,
    pub lower: std::sync::Arc<dyn RangeSource>,
}

impl RangeSource for FirstOf {
    fn fetch<'a>(
        &'a self,
        request: RangeRequest,
        transform: Option<Transform<'a>>,
    ) -> BoxFuture<'a, Result<Option<Fetched>, FetchError>> {
        Box::pin(async move {
            match self.upper.fetch(request, transform).await? {
                Some(fetched) => Ok(Some(fetched)),
                None => self.lower.fetch(request, transform).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::doubles::{ScriptedRanges, Step};
    use std::sync::Arc;

    #[test]
    fn expected_len_clips_at_the_end() {
        let r = RangeRequest {
            file: FileId([0; 20]),
            first: 10,
            last: 19,
            known_total: None,
        };
        assert_eq!(r.expected_len(100), 10);
        assert_eq!(r.expected_len(15), 5);
        assert_eq!(r.expected_len(10), 0);
    }

    #[tokio::test]
    async fn first_of_asks_the_lower_tier_only_when_the_upper_has_nothing() {
        let file = FileId([3; 20]);
        let upper = Arc::new(ScriptedRanges::new());
        upper.add_file(file, Bytes::from_static(b"upper tier"));
        upper.push(Step::NotHere);
        let lower = Arc::new(ScriptedRanges::new());
        lower.add_file(file, Bytes::from_static(b"lower tier"));
        let both = FirstOf {
            upper: upper.clone(),
            lower: lower.clone(),
        };
        let request = RangeRequest {
            file,
            first: 0,
            last: 4,
            known_total: None,
        };
        let got = both.fetch(request, None).await.unwrap().unwrap();
        assert_eq!(&got.data[..], b"lower");
        let got = both.fetch(request, None).await.unwrap().unwrap();
        assert_eq!(&got.data[..], b"upper");
        assert_eq!((upper.request_count(), lower.request_count()), (2, 1));
    }
}
