//! The control plane of DESIGN.md §1: token, library, metadata, storage-resolve, keys, heads.
//!
//! One `Api` per mount. The access token is renewed before `expiresIn` runs out and once more
//! on a `401`; transient failures (connect errors, 5xx) are retried a few times with backoff.

use super::error::FetchError;
use super::stats::Stats;
use crate::crypto::AudioKey;
use crate::model::{Album, AlbumId, FileId, Track, TrackId};
use crate::proto;
use crate::redact;
use bytes::Bytes;
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// `user:password`, split at the first `:` (passwords may contain `:`). Debug is redacted.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:<redacted>)", self.user)
    }
}

impl Credentials {
    pub fn parse(text: &str) -> Option<Credentials> {
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty())?
            .trim_end_matches('\r');
        let (user, password) = line.split_once(':')?;
        if user.is_empty() {
            return None;
        }
        Some(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        })
    }
}

struct Token {
    value: String,
    renew_at: Instant,
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    token: Mutex<Option<Token>>,
    stats: Arc<Stats>,
    /// Bounds each control-plane request, body included: an origin that accepts a
    /// connection and never answers must fail a read, not hang it.
    request_timeout: Duration,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenAnswer {
    access_token: String,
    /// Seconds, as any JSON number (`3600.0` from some servers).
    expires_in: Option<f64>,
}

const ATTEMPTS: u32 = 4;
/// Longest token lifetime believed (a year), so renewal times stay within the clock's range.
const MAX_TOKEN_LIFETIME_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Control-plane answers are small protobufs; a healthy origin sends them in well under this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

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
            token: Mutex::new(None),
            stats,
            request_timeout: REQUEST_TIMEOUT,
        }
    }

    /// The same with another per-request timeout (tests use short ones).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A valid bearer token, fetching a new one when absent or due for renewal.
    pub async fn token(&self) -> Result<String, FetchError> {
        self.token_other_than(None).await
    }

    /// Like `token`, and also renews when the current token is `rejected` (the origin said
    /// 401 to it). Requests that were all rejected at once renew it once: the first renews,
    /// the others find a token other than theirs and use it.
    async fn token_other_than(&self, rejected: Option<&str>) -> Result<String, FetchError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            if Some(t.value.as_str()) != rejected && Instant::now() < t.renew_at {
                return Ok(t.value.clone());
            }
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *slot = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<Token, FetchError> {
        let url = format!("{}/keymaster/token", self.base);
        let started = Instant::now();
        let response = self
            .send_with_retries("a token", &url, || {
                self.http
                    .post(&url)
                    // An empty POST says so: some front ends answer 411 without a length.
                    .header(reqwest::header::CONTENT_LENGTH, "0")
                    .basic_auth(&self.credentials.user, Some(&self.credentials.password))
            })
            .await?;
        self.stats.token_renewals.incr();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.body_error(&url, e))?;
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| FetchError::Malformed {
                what: "the token answer",
                url: redact::url(&url),
                reason: e.to_string(),
            })?;
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

    fn body_error(&self, url: &str, e: reqwest::Error) -> FetchError {
        FetchError::Body {
            url: redact::url(url),
            got: 0,
            expected: 0,
            reason: super::transport::describe(&e),
        }
    }

    /// Sends a request built by `build`, retrying transient failures; maps 401 and 404.
    async fn send_with_retries(
        &self,
        what: &str,
        url: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, FetchError> {
        let shown = redact::url(url);
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                self.stats.retries.incr();
                tokio::time::sleep(super::backoff(attempt)).await;
            }
            let url = shown.clone();
            tracing::debug!(%url, attempt, "origin request");
            let error = match build().timeout(self.request_timeout).send().await {
                Err(e) => FetchError::Connect {
                    url,
                    reason: super::transport::describe(&e),
                },
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => match r.status().as_u16() {
                    401 => return Err(FetchError::BadCredentials { url }),
                    404 => return Err(FetchError::NotFound { url }),
                    status => FetchError::Status {
                        url,
                        status,
                        retry_after: None,
                    },
                },
            };
            let transient = matches!(&error, FetchError::Connect { .. })
                || matches!(&error, FetchError::Status { status, .. } if *status >= 500 || *status == 429);
            if !transient {
                return Err(error);
            }
            // Said at once, so a user waiting on a silent origin knows what is going on.
            if attempt + 1 < ATTEMPTS {
                tracing::warn!(
                    "{what}: {error}; trying again ({} of {ATTEMPTS})",
                    attempt + 2
                );
            }
            last = Some(error);
        }
        Err(FetchError::GaveUp {
            what: what.to_string(),
            attempts: ATTEMPTS,
            last: Box::new(last.unwrap_or(FetchError::Shutdown)),
        })
    }

    /// GET with the bearer token; on 401 a fresh token once, then the request again.
    async fn get_authed(&self, path: &str, what: &str) -> Result<Bytes, FetchError> {
        let url = format!("{}{}", self.base, path);
        let mut token = self.token().await?;
        for renewed in [false, true] {
            let result = self
                .send_with_retries(what, &url, || self.http.get(&url).bearer_auth(&token))
                .await;
            match result {
                Ok(response) => {
                    return response.bytes().await.map_err(|e| self.body_error(&url, e));
                }
                Err(FetchError::BadCredentials { .. }) if !renewed => {
                    token = self.token_other_than(Some(&token)).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(FetchError::BadCredentials {
            url: redact::url(&url),
        })
    }

    async fn get_proto<M: Message + Default>(
        &self,
        path: &str,
        what: &'static str,
    ) -> Result<M, FetchError> {
        let body = self.get_authed(path, what).await?;
        M::decode(body).map_err(|e| FetchError::Malformed {
            what,
            url: redact::url(&format!("{}{}", self.base, path)),
            reason: e.to_string(),
        })
    }

    fn malformed(&self, what: &'static str, path: &str, reason: impl ToString) -> FetchError {
        FetchError::Malformed {
            what,
            url: redact::url(&format!("{}{}", self.base, path)),
            reason: reason.to_string(),
        }
    }

    /// The library's album ids. An entry that is not a valid id is an error of its own, so
    /// the caller can skip it like an album that fails to load.
    pub async fn library(&self) -> Result<Vec<Result<AlbumId, FetchError>>, FetchError> {
        let lib: proto::library::Library = self.get_proto("/library", "the library").await?;
        Ok(lib
            .album_gid
            .iter()
            .map(|g| {
                AlbumId::from_bytes(g).map_err(|e| self.malformed("the library", "/library", e))
            })
            .collect())
    }

    pub async fn album(&self, id: AlbumId) -> Result<Album, FetchError> {
        let path = format!("/metadata/4/album/{id}");
        let mut pb: proto::metadata::Album = self.get_proto(&path, "album metadata").await?;
        // `gid` is optional on the wire (DESIGN.md §2); the id asked for is the album's.
        pb.gid.get_or_insert_with(|| id.0.to_vec());
        Album::try_from(pb).map_err(|e| self.malformed("album metadata", &path, e))
    }

    pub async fn track(&self, id: TrackId) -> Result<Track, FetchError> {
        let path = format!("/metadata/4/track/{id}");
        let mut pb: proto::metadata::Track = self.get_proto(&path, "track metadata").await?;
        pb.gid.get_or_insert_with(|| id.0.to_vec());
        Track::try_from(pb).map_err(|e| self.malformed("track metadata", &path, e))
    }

    /// The file's CDN URLs, in the origin's order of preference.
    pub async fn resolve(&self, file: FileId) -> Result<Vec<String>, FetchError> {
        let path = format!("/storage-resolve/files/audio/interactive/{file}");
        let pb: proto::storage::StorageResolveResponse =
            self.get_proto(&path, "storage-resolve").await?;
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
        let body = self
            .get_authed(&format!("/audiokey/{file}"), "an audio key")
            .await?;
        AudioKey::from_slice(&body).map_err(|e| FetchError::BadKey {
            file,
            source_name: "the origin",
            len: e.0,
        })
    }

    /// The plaintext head file: `Ok(None)` when the origin has none (a 4xx, normally 404),
    /// `Err(())` when asking failed (connection, timeout, 5xx, cut body) and may work later.
    pub async fn head(&self, file: FileId) -> Result<Option<Bytes>, ()> {
        let url = format!("{}/head/{file}", self.base);
        let request = self.http.get(&url).timeout(self.request_timeout);
        let response = request.send().await.map_err(drop)?;
        let status = response.status();
        if status.is_client_error() {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(());
        }
        let body = response.bytes().await.map_err(drop)?;
        Ok(Some(body).filter(|b| !b.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::testing::{response, routed_origin, scripted_origin, silent_origin};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn api(base: &str) -> Api {
        let http = super::super::http_client(None, Duration::from_secs(5)).unwrap();
        let credentials = Credentials::parse("user:secret").unwrap();
        Api::new(http, base, credentials, Arc::default())
            .with_request_timeout(Duration::from_millis(200))
    }

    #[tokio::test]
    async fn a_silent_origin_fails_requests_instead_of_hanging() {
        let api = api(&silent_origin().await);
        let limit = Duration::from_secs(10);
        let head = tokio::time::timeout(limit, api.head(FileId([7; 20]))).await;
        assert_eq!(head.expect("head hung"), Err(()));
        let token = tokio::time::timeout(limit, api.token()).await;
        match token.expect("token hung") {
            Err(FetchError::GaveUp { attempts, .. }) => assert_eq!(attempts, ATTEMPTS),
            other => panic!("expected GaveUp, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_token_claiming_to_last_forever_is_used() {
        let token = br#"{"accessToken":"t","expiresIn":18446744073709551615}"#;
        let base = scripted_origin(vec![response("200 OK", token)]).await;
        assert_eq!(api(&base).token().await.unwrap(), "t");
    }

    #[tokio::test]
    async fn a_file_not_on_a_cdn_fails_at_once() {
        let token = br#"{"accessToken":"t","expiresIn":3600}"#;
        let answer = proto::storage::StorageResolveResponse {
            result: proto::storage::storage_resolve_response::Result::Restricted as i32,
            cdnurl: vec!["http://cdn.example/a".into()],
            fileid: vec![],
        };
        let base = scripted_origin(vec![
            response("200 OK", token),
            response("200 OK", &answer.encode_to_vec()),
        ])
        .await;
        let file = FileId([9; 20]);
        match api(&base).resolve(file).await {
            Err(e @ FetchError::NotOnCdn { .. }) => assert!(!e.is_transient()),
            other => panic!("expected NotOnCdn, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_token_post_says_its_body_is_empty_and_any_json_number_is_a_lifetime() {
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = heads.clone();
        let base = routed_origin(move |head| {
            seen.lock().unwrap().push(head.to_ascii_lowercase());
            response("200 OK", br#"{"accessToken":"t","expiresIn":3600.0}"#)
        })
        .await;
        assert_eq!(api(&base).token().await.unwrap(), "t");
        let head = heads.lock().unwrap()[0].clone();
        assert_eq!(head.matches("content-length: 0\r\n").count(), 1, "{head}");
    }

    #[tokio::test]
    async fn metadata_without_its_optional_gid_is_of_the_id_asked_for() {
        let album = proto::metadata::Album {
            name: Some("A".into()),
            ..Default::default()
        };
        let track = proto::metadata::Track {
            name: Some("T".into()),
            ..Default::default()
        };
        let (album, track) = (album.encode_to_vec(), track.encode_to_vec());
        let base = routed_origin(move |head| {
            let body = match head {
                h if h.starts_with("POST /keymaster/token") => {
                    br#"{"accessToken":"t","expiresIn":3600}"#.to_vec()
                }
                h if h.starts_with("GET /metadata/4/album/") => album.clone(),
                _ => track.clone(),
            };
            response("200 OK", &body)
        })
        .await;
        let api = api(&base);
        let id = AlbumId([3; 16]);
        assert_eq!(api.album(id).await.unwrap().id, id);
        let id = TrackId([4; 16]);
        assert_eq!(api.track(id).await.unwrap().id, id);
    }

    #[tokio::test]
    async fn requests_rejected_together_renew_the_token_once() {
        let tokens = Arc::new(AtomicUsize::new(0));
        let issued = tokens.clone();
        let base = routed_origin(move |head| {
            if head.starts_with("POST /keymaster/token") {
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                let body = format!(r#"{{"accessToken":"t{n}","expiresIn":3600}}"#);
                return response("200 OK", body.as_bytes());
            }
            // The first token is refused everywhere, as after an origin restart.
            if head.contains("Bearer t1\r\n") {
                return response("401 Unauthorized", b"");
            }
            response("200 OK", &[5; 16])
        })
        .await;
        let api = api(&base);
        assert_eq!(api.token().await.unwrap(), "t1");
        let keys = (1..=8u8).map(|i| api.audio_key(FileId([i; 20])));
        for key in futures::future::join_all(keys).await {
            assert_eq!(key.unwrap().0, [5; 16]);
        }
        assert_eq!(tokens.load(Ordering::SeqCst), 2, "one token, one renewal");
    }
}
