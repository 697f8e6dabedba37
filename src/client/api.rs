//! The control plane of docs/protocol.md: token, library, metadata, storage-resolve, keys, heads.
//!
//! One `Api` per mount. The access token is renewed before `expiresIn` runs out and once more
//! on a `401`. Failures are retried by `retry`'s policy, the one the CDN uses; an attempt is
//! the whole request, its token included. Storage-resolve alone makes a single attempt: it runs
//! inside a CDN fetch, whose attempts retry it. Every answer is read up to a size that fits its
//! kind, so a broken or hostile origin cannot fill memory with one.

use super::error::FetchError;
use super::retry::{Retry, DEFAULT_ATTEMPTS};
use super::seams::{BoxFuture, ControlPlane, Fresh, Library, Revalidated};
use super::stats::Stats;
use super::transport::{describe, parse_retry_after, transport_error};
use crate::protocol::crypto::AudioKey;
use crate::protocol::model::{Album, AlbumId, FileId, Playlist, PlaylistId, Track, TrackId};
use crate::protocol::proto;
use crate::redact;
use bytes::{Bytes, BytesMut};
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub use crate::protocol::credentials::Credentials;

struct Token {
    value: String,
    renew_at: Instant,
}

#[derive(Default)]
struct TokenSlot {
    token: Option<Token>,
    /// The last fetch's failure, and when it ended.
    failed: Option<(Instant, FetchError)>,
}

pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    token: Mutex<TokenSlot>,
    stats: Arc<Stats>,
    /// Bounds each control-plane request, body included: an origin that accepts a
    /// connection and never answers must fail a read, not hang it.
    request_timeout: Duration,
    attempts: u32,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenAnswer {
    access_token: String,
    /// Seconds, as any JSON number (`3600.0` from some servers).
    expires_in: Option<f64>,
}

/// Longest token lifetime believed (a year), so renewal times stay within the clock's range.
const MAX_TOKEN_LIFETIME_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// The largest answers read. A token (JSON) or a key (16 bytes) is tiny.
const MAX_SMALL_ANSWER: usize = 64 << 10;
/// Metadata and storage-resolve answers are a few KiB; a large library's list a few MiB.
const MAX_METADATA_ANSWER: usize = 16 << 20;
/// A head is 64–128 KiB (docs/protocol.md asks for at least 64 KiB): 1 MiB leaves room for any
/// sensible origin, and sixteen such heads still fit the head store's 16 MiB budget.
const MAX_HEAD_ANSWER: usize = 1 << 20;

impl Api {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        credentials: Credentials,
        stats: Arc<Stats>,
    ) -> Self {
        Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            credentials,
            token: Mutex::default(),
            stats,
            request_timeout: super::Timeouts::default().control_request,
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    /// The same with another per-request timeout (`Timeouts::control_request`).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The same with another number of attempts per request (`--retries`, as for the CDN).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    fn retry(&self, what: &str) -> Retry<'_> {
        Retry::new(what, self.attempts, &self.stats).loud()
    }

    /// A valid bearer token, fetching a new one when absent or due for renewal.
    pub async fn token(&self) -> Result<String, FetchError> {
        let mut retry = self.retry("a token");
        loop {
            match self.token_other_than(None).await {
                Ok(token) => return Ok(token),
                Err(e) => retry.after(e).await?,
            }
        }
    }

    /// A token in one attempt, renewed also when the current one is `rejected` (the origin
    /// said 401 to it). Requests that were all rejected at once renew it once: the first
    /// renews, the others find a token other than theirs and use it. Likewise a fetch that
    /// failed while a request waited for it is that request's failure too: readers of a
    /// silent origin must not each wait for their own timeout, one after another.
    async fn token_other_than(&self, rejected: Option<&str>) -> Result<String, FetchError> {
        let asked = Instant::now();
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.token.as_ref() {
            if Some(t.value.as_str()) != rejected && Instant::now() < t.renew_at {
                return Ok(t.value.clone());
            }
        }
        if let Some((ended, error)) = &slot.failed {
            if *ended >= asked {
                return Err(error.clone());
            }
        }
        match self.fetch_token(slot.token.is_some()).await {
            Ok(fresh) => {
                let value = fresh.value.clone();
                *slot = TokenSlot {
                    token: Some(fresh),
                    failed: None,
                };
                Ok(value)
            }
            Err(error) => {
                slot.failed = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    async fn fetch_token(&self, renewing: bool) -> Result<Token, FetchError> {
        let url = format!("{}/keymaster/token", self.base);
        let started = Instant::now();
        let request = self
            .http
            .post(&url)
            // An empty POST says so: some front ends answer 411 without a length.
            .header(reqwest::header::CONTENT_LENGTH, "0")
            .basic_auth(&self.credentials.user, Some(&self.credentials.password));
        let what = "the token answer";
        let body = self.send(request, &url, what, MAX_SMALL_ANSWER).await?;
        // The first token of a mount is not a renewal.
        if renewing {
            self.stats.token_renewals.incr();
        }
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| malformed(what, &url, e))?;
        // Renew at 80% of the lifetime, so a long read never meets an expired token. A
        // lifetime past a year is taken as a year: the clock cannot hold every number.
        let lifetime = answer
            .expires_in
            .filter(|s| s.is_finite())
            .unwrap_or(3600.0);
        let lifetime = Duration::from_secs_f64(lifetime.clamp(1.0, MAX_TOKEN_LIFETIME_SECS));
        Ok(Token {
            value: answer.access_token,
            renew_at: started + lifetime.mul_f64(0.8),
        })
    }

    /// One request and its whole answer (at most `cap` bytes, else `Malformed`, naming
    /// `what`); 401 and 404 become errors of their own.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        what: &'static str,
        cap: usize,
    ) -> Result<Bytes, FetchError> {
        match self.send_fresh(request, url, what, cap).await? {
            Fresh::New(body, _) => Ok(body),
            // Only an answer to `If-None-Match`, which this request did not send.
            Fresh::Unchanged => Err(FetchError::Status {
                url: redact::url(url),
                status: 304,
                retry_after: None,
            }),
        }
    }

    /// `send`, where `304 Not Modified` is `Unchanged` and an answer carries its `ETag`.
    async fn send_fresh(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        what: &'static str,
        cap: usize,
    ) -> Revalidated<Bytes> {
        let url = redact::url(url);
        tracing::debug!(%url, "origin request");
        let response = match request.timeout(self.request_timeout).send().await {
            Ok(response) => response,
            Err(e) => {
                let error = transport_error(&e);
                // rustls's words for a plain-HTTP answer to its hello.
                let text = error.to_string();
                if text.contains("InvalidContentType") || text.contains("corrupt message") {
                    return Err(FetchError::NotTls { url, reason: text });
                }
                return Err(FetchError::from_transport(url, error));
            }
        };
        match response.status().as_u16() {
            200..=299 => {
                let etag = response
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = read_capped(response, url, what, cap).await?;
                Ok(Fresh::New(body, etag))
            }
            304 => {
                self.stats.not_modified.incr();
                Ok(Fresh::Unchanged)
            }
            401 => Err(FetchError::BadCredentials { url }),
            404 => Err(FetchError::NotFound { url }),
            // A server that has no idea what these requests are (a plain web server, a proxy
            // without the routes): asking again will not teach it.
            status @ (405 | 501) => Err(FetchError::NotAnOrigin { url, status }),
            status => Err(FetchError::Status {
                url,
                status,
                retry_after: response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after),
            }),
        }
    }

    /// One attempt at a GET with the bearer token: on a 401, a fresh token and the GET again.
    async fn get_authed_once(
        &self,
        url: &str,
        what: &'static str,
        cap: usize,
    ) -> Result<Bytes, FetchError> {
        match self.get_authed_once_if(url, what, cap, None).await? {
            Fresh::New(body, _) => Ok(body),
            Fresh::Unchanged => unreachable_unchanged(url),
        }
    }

    /// `get_authed_once` with `If-None-Match: etag` when there is one.
    async fn get_authed_once_if(
        &self,
        url: &str,
        what: &'static str,
        cap: usize,
        etag: Option<&str>,
    ) -> Revalidated<Bytes> {
        let token = self.token_other_than(None).await?;
        let get = |token: &str| {
            let mut request = self.http.get(url).bearer_auth(token);
            if let Some(etag) = etag {
                request = request.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            self.send_fresh(request, url, what, cap)
        };
        match get(&token).await {
            Err(FetchError::BadCredentials { .. }) => {
                let token = self.token_other_than(Some(&token)).await?;
                get(&token).await
            }
            answer => answer,
        }
    }

    /// `get_authed_once`, retried.
    async fn get_authed(
        &self,
        path: &str,
        what: &'static str,
        cap: usize,
    ) -> Result<Bytes, FetchError> {
        match self.get_authed_if(path, what, cap, None).await? {
            Fresh::New(body, _) => Ok(body),
            Fresh::Unchanged => unreachable_unchanged(path),
        }
    }

    /// `get_authed_once_if`, retried.
    async fn get_authed_if(
        &self,
        path: &str,
        what: &'static str,
        cap: usize,
        etag: Option<&str>,
    ) -> Revalidated<Bytes> {
        let url = format!("{}{}", self.base, path);
        let mut retry = self.retry(what);
        loop {
            match self.get_authed_once_if(&url, what, cap, etag).await {
                Ok(answer) => return Ok(answer),
                Err(e) => retry.after(e).await?,
            }
        }
    }

    /// A protobuf answer revalidated against `etag`.
    async fn get_proto_if<M: Message + Default>(
        &self,
        path: &str,
        what: &'static str,
        etag: Option<&str>,
    ) -> Revalidated<M> {
        match self
            .get_authed_if(path, what, MAX_METADATA_ANSWER, etag)
            .await?
        {
            Fresh::New(body, etag) => Ok(Fresh::New(self.decode(body, path, what)?, etag)),
            Fresh::Unchanged => Ok(Fresh::Unchanged),
        }
    }

    fn decode<M: Message + Default>(
        &self,
        body: Bytes,
        path: &str,
        what: &'static str,
    ) -> Result<M, FetchError> {
        M::decode(body).map_err(|e| self.malformed(what, path, e))
    }

    fn malformed(&self, what: &'static str, path: &str, reason: impl ToString) -> FetchError {
        malformed(what, &format!("{}{}", self.base, path), reason)
    }

    /// The library's album ids. An entry that is not a valid id is an error of its own, so
    /// the caller can skip it like an album that fails to load.
    pub async fn library(&self) -> Result<Library, FetchError> {
        new_only(self.library_if(None).await, "/library")
    }

    /// `library`, revalidated against `etag` (docs/protocol.md §8).
    pub async fn library_if(&self, etag: Option<&str>) -> Revalidated<Library> {
        let what = "the library";
        let (lib, etag) = match self.get_proto_if("/library", what, etag).await? {
            Fresh::New(lib, etag) => (lib, etag),
            Fresh::Unchanged => return Ok(Fresh::Unchanged),
        };
        let lib: proto::library::Library = lib;
        let ids = lib
            .album_gid
            .iter()
            .map(|g| AlbumId::from_bytes(g).map_err(|e| self.malformed(what, "/library", e)))
            .collect();
        Ok(Fresh::New(ids, etag))
    }

    pub async fn album(&self, id: AlbumId) -> Result<Album, FetchError> {
        new_only(self.album_if(id, None).await, "an album")
    }

    /// `album`, revalidated against `etag`.
    pub async fn album_if(&self, id: AlbumId, etag: Option<&str>) -> Revalidated<Album> {
        let path = format!("/metadata/4/album/{id}");
        let (mut pb, etag) = match self.get_proto_if(&path, "album metadata", etag).await? {
            Fresh::New(pb, etag) => (pb, etag),
            Fresh::Unchanged => return Ok(Fresh::Unchanged),
        };
        let pb: &mut proto::metadata::Album = &mut pb;
        // `gid` is optional on the wire (docs/protocol.md §9); the id asked for is the album's.
        pb.gid.get_or_insert_with(|| id.0.to_vec());
        let album = Album::try_from(std::mem::take(pb))
            .map_err(|e| self.malformed("album metadata", &path, e))?;
        Ok(Fresh::New(album, etag))
    }

    pub async fn track(&self, id: TrackId) -> Result<Track, FetchError> {
        new_only(self.track_if(id, None).await, "a track")
    }

    /// `track`, revalidated against `etag`.
    pub async fn track_if(&self, id: TrackId, etag: Option<&str>) -> Revalidated<Track> {
        let path = format!("/metadata/4/track/{id}");
        let (mut pb, etag) = match self.get_proto_if(&path, "track metadata", etag).await? {
            Fresh::New(pb, etag) => (pb, etag),
            Fresh::Unchanged => return Ok(Fresh::Unchanged),
        };
        let pb: &mut proto::metadata::Track = &mut pb;
        pb.gid.get_or_insert_with(|| id.0.to_vec());
        let track = Track::try_from(std::mem::take(pb))
            .map_err(|e| self.malformed("track metadata", &path, e))?;
        Ok(Fresh::New(track, etag))
    }

    /// The file's CDN URLs, in the origin's order of preference. One attempt: the CDN fetch
    /// that asks retries it within its own attempts, so the retry bound stays one bound.
    pub async fn resolve(&self, file: FileId) -> Result<Vec<String>, FetchError> {
        let path = format!("/storage-resolve/files/audio/interactive/{file}");
        let (url, what) = (format!("{}{path}", self.base), "storage-resolve");
        let body = self
            .get_authed_once(&url, what, MAX_METADATA_ANSWER)
            .await?;
        let pb: proto::storage::StorageResolveResponse = self.decode(body, &path, what)?;
        self.stats.resolves.incr();
        let urls: Vec<String> = pb
            .cdnurl
            .into_iter()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .collect();
        // STORAGE or RESTRICTED will not change on a retry; an empty list of a CDN answer may.
        if pb.result != proto::storage::storage_resolve_response::Result::Cdn as i32 {
            return Err(FetchError::NotOnCdn {
                file,
                result: pb.result,
            });
        }
        if urls.is_empty() {
            return Err(FetchError::NoCdnUrl { file });
        }
        Ok(urls)
    }

    pub async fn audio_key(&self, file: FileId) -> Result<AudioKey, FetchError> {
        let path = format!("/audiokey/{file}");
        let body = self
            .get_authed(&path, "an audio key", MAX_SMALL_ANSWER)
            .await?;
        AudioKey::from_slice(&body).map_err(|e| FetchError::BadKey {
            file,
            source_name: "the origin",
            len: e.0,
        })
    }

    /// The plaintext head file, in one attempt: `Ok(None)` when the origin has none (a 4xx,
    /// normally 404) or one too large to be a head, `Err` when asking failed (connection,
    /// timeout, 5xx, cut body) and may work later.
    pub async fn head(&self, file: FileId) -> Result<Option<Bytes>, FetchError> {
        let url = format!("{}/head/{file}", self.base);
        let request = self.http.get(&url);
        match self
            .send(request, &url, "a head file", MAX_HEAD_ANSWER)
            .await
        {
            Ok(body) => Ok(Some(body).filter(|b| !b.is_empty())),
            Err(
                FetchError::BadCredentials { .. }
                | FetchError::NotFound { .. }
                | FetchError::NotAnOrigin { .. },
            ) => Ok(None),
            Err(FetchError::Status { status, .. }) if (400..500).contains(&status) => Ok(None),
            // File ids are immutable, so it will not get better: the file is read without one.
            Err(e @ FetchError::Malformed { .. }) => {
                tracing::warn!("{e}; reading the file without a head");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl ControlPlane for Api {
    fn library(&self) -> BoxFuture<'_, Result<Library, FetchError>> {
        Box::pin(Api::library(self))
    }
    fn library_if(&self, etag: Option<String>) -> BoxFuture<'_, Revalidated<Library>> {
        Box::pin(async move { Api::library_if(self, etag.as_deref()).await })
    }
    fn album_if(&self, id: AlbumId, etag: Option<String>) -> BoxFuture<'_, Revalidated<Album>> {
        Box::pin(async move { Api::album_if(self, id, etag.as_deref()).await })
    }
    fn track_if(&self, id: TrackId, etag: Option<String>) -> BoxFuture<'_, Revalidated<Track>> {
        Box::pin(async move { Api::track_if(self, id, etag.as_deref()).await })
    }
    fn album(&self, id: AlbumId) -> BoxFuture<'_, Result<Album, FetchError>> {
        Box::pin(Api::album(self, id))
    }
    fn track(&self, id: TrackId) -> BoxFuture<'_, Result<Track, FetchError>> {
        Box::pin(Api::track(self, id))
    }
    fn resolve(&self, file: FileId) -> BoxFuture<'_, Result<Vec<String>, FetchError>> {
        Box::pin(Api::resolve(self, file))
    }
    fn audio_key(&self, file: FileId) -> BoxFuture<'_, Result<AudioKey, FetchError>> {
        Box::pin(Api::audio_key(self, file))
    }
    fn head(&self, file: FileId) -> BoxFuture<'_, Result<Option<Bytes>, FetchError>> {
        Box::pin(Api::head(self, file))
    }
    fn rootlist(&self) -> BoxFuture<'_, Result<Vec<PlaylistId>, FetchError>> {
        Box::pin(Api::rootlist(self))
    }
    fn playlist_if(
        &self,
        id: PlaylistId,
        etag: Option<String>,
    ) -> BoxFuture<'_, Revalidated<Playlist>> {
        Box::pin(async move { Api::playlist_if(self, id, etag.as_deref()).await })
    }
    fn playlist(&self, id: PlaylistId) -> BoxFuture<'_, Result<Playlist, FetchError>> {
        Box::pin(Api::playlist(self, id))
    }
    fn image(&self, file: FileId) -> BoxFuture<'_, Result<Bytes, FetchError>> {
        Box::pin(Api::image(self, file))
    }
}

/// The answer of a request sent without `If-None-Match`, which cannot be `304`.
fn new_only<T>(answer: Revalidated<T>, what: &str) -> Result<T, FetchError> {
    match answer? {
        Fresh::New(value, _) => Ok(value),
        Fresh::Unchanged => unreachable_unchanged(what),
    }
}

/// A `304` to a request without `If-None-Match` (`send` already refuses one): an error, not a
/// panic, should that ever change.
fn unreachable_unchanged<T>(what: &str) -> Result<T, FetchError> {
    Err(FetchError::Status {
        url: redact::url(what),
        status: 304,
        retry_after: None,
    })
}

fn malformed(what: &'static str, url: &str, reason: impl ToString) -> FetchError {
    FetchError::Malformed {
        what,
        url: redact::url(url),
        reason: reason.to_string(),
    }
}

/// The whole answer, or `Malformed` as soon as it proves longer than `cap` (by its
/// `Content-Length` or by what arrived), so that no more than `cap` bytes are ever held.
async fn read_capped(
    mut response: reqwest::Response,
    url: String,
    what: &'static str,
    cap: usize,
) -> Result<Bytes, FetchError> {
    let too_large = |url: String| FetchError::Malformed {
        what,
        url,
        reason: format!("the answer is larger than the {cap} bytes allowed"),
    };
    let expected = response.content_length();
    if expected.is_some_and(|length| length > cap as u64) {
        return Err(too_large(url));
    }
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(None) => return Ok(body.freeze()),
            Ok(Some(chunk)) if body.len() + chunk.len() > cap => return Err(too_large(url)),
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Err(e) => {
                return Err(FetchError::Body {
                    url,
                    got: body.len() as u64,
                    expected: expected.unwrap_or(0),
                    reason: describe(&e),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
mod v11;
