//! Errors of the network side of the client. `fs::FsError` maps them to an errno, in one place.

use super::transport::TransportError;
use crate::protocol::model::FileId;
use std::time::Duration;

/// What went wrong talking to the origin or the CDN. URLs inside are already redacted.
/// `Clone` because one failed fetch is reported to every reader waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// No connection could be made: the one failure that sets a CDN host aside.
    #[error("no answer from {url}: {reason}")]
    Connect { url: String, reason: String },
    /// Connected, but the exchange broke before an answer or the answer was unreadable.
    #[error("{url}: {error}")]
    Transport { url: String, error: TransportError },
    #[error("{url} answered HTTP {status}")]
    Status {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("{url}: the connection broke after {got} of {expected} bytes: {reason}")]
    Body {
        url: String,
        got: u64,
        expected: u64,
        reason: String,
    },
    #[error("{url}: no data for {0:?}", .stalled_for)]
    Stalled { url: String, stalled_for: Duration },
    #[error("{url}: {bytes} bytes did not arrive within {within:?} (too slow)")]
    TooSlow {
        url: String,
        bytes: u64,
        within: Duration,
    },
    #[error("{url}: {reason}")]
    BadRange { url: String, reason: String },
    #[error(
        "file {file}: the CDN answered bytes {first}-{last} in more than {answers} short pieces"
    )]
    TooManyShortAnswers {
        file: FileId,
        first: u64,
        last: u64,
        answers: usize,
    },
    #[error(
        "file {file} changed on the CDN (size was {old}, now {new}); refusing to mix versions"
    )]
    SizeChanged { file: FileId, old: u64, new: u64 },
    #[error("file {file}: size {size} is not plausible")]
    AbsurdSize { file: FileId, size: u64 },
    #[error(
        "file {file}: decrypted data does not look like {expected}: wrong key or corrupt file"
    )]
    WrongKey {
        file: FileId,
        expected: &'static str,
    },
    #[error("file {file}: the key from {source_name} is {len} bytes, not 16")]
    BadKey {
        file: FileId,
        source_name: &'static str,
        len: usize,
    },
    #[error("{what} from {url} is malformed: {reason}")]
    Malformed {
        what: &'static str,
        url: String,
        reason: String,
    },
    #[error("{url} rejected the credentials (HTTP 401); check the user:password in the credentials file")]
    BadCredentials { url: String },
    /// Speaking TLS to a server that answers in plain HTTP: no retry will change that.
    #[error(
        "{url}: {reason}; the server does not speak TLS: if the origin is plain HTTP, \
         use http:// instead of https://"
    )]
    NotTls { url: String, reason: String },
    /// The origin's address answers, but not the protocol: another kind of server.
    #[error(
        "{url} answered HTTP {status}: it does not look like a trackfs origin; \
         check the origin URL (scheme, host, port and path)"
    )]
    NotAnOrigin { url: String, status: u16 },
    #[error("{url}: not found (HTTP 404)")]
    NotFound { url: String },
    #[error("file {file}: storage-resolve gave no usable CDN URL")]
    NoCdnUrl { file: FileId },
    #[error("file {file}: storage-resolve says it is not on a CDN (result {result})")]
    NotOnCdn { file: FileId, result: i32 },
    #[error("giving up on {what} after {}: {last}", crate::units::count(*attempts as usize, "attempt"))]
    GaveUp {
        what: String,
        attempts: u32,
        last: Box<FetchError>,
    },
    #[error("file {file}: no tier of the read path holds these bytes")]
    NotHere { file: FileId },
    #[error("file {file}: bytes from {first}: {got} bytes came back where {expected} were due")]
    WrongLength {
        file: FileId,
        first: u64,
        expected: u64,
        got: u64,
    },
    #[error("file {file}: its first block arrived without its size")]
    SizeUnknown { file: FileId },
    #[error("the fetch of this block ended without an answer (its task failed)")]
    Abandoned,
}

impl FetchError {
    /// A transport's failure to get an answer from `url` (already redacted).
    pub fn from_transport(url: String, error: TransportError) -> FetchError {
        match error {
            TransportError::Connect(reason) => FetchError::Connect { url, reason },
            error => FetchError::Transport { url, error },
        }
    }

    /// Worth another attempt (possibly on another URL), on the control plane as on the CDN?
    /// Integrity failures are not; nor is the origin's own `404` (`NotFound`: an unknown id,
    /// where a CDN's 404 is a `Status` and means a stale URL); nor `GaveUp`, whose attempts are
    /// spent: another round of them would multiply the retry bound.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Connect { .. }
            | FetchError::Transport { .. }
            | FetchError::Body { .. }
            | FetchError::Stalled { .. }
            | FetchError::TooSlow { .. }
            | FetchError::BadRange { .. }
            | FetchError::NoCdnUrl { .. } => true,
            FetchError::Status { status, .. } => {
                *status >= 500 || matches!(status, 403 | 404 | 408 | 410 | 429)
            }
            _ => false,
        }
    }

    /// How loudly the fs layer logs this failure of a read: `ERROR` for what will not get
    /// better by itself and needs a person (a wrong key, a file that changed or lies about
    /// its size, rejected credentials), `WARN` for the rest (the network, the origin).
    pub fn level(&self) -> tracing::Level {
        match self {
            FetchError::WrongKey { .. }
            | FetchError::BadKey { .. }
            | FetchError::SizeChanged { .. }
            | FetchError::AbsurdSize { .. }
            | FetchError::BadCredentials { .. }
            | FetchError::NotTls { .. }
            | FetchError::NotAnOrigin { .. } => tracing::Level::ERROR,
            FetchError::GaveUp { last, .. } => last.level(),
            _ => tracing::Level::WARN,
        }
    }

    /// The CDN says this URL is no longer good: re-resolve before trying again.
    pub fn wants_new_url(&self) -> bool {
        matches!(
            self,
            FetchError::Status {
                status: 403 | 404 | 410,
                ..
            }
        )
    }
}
