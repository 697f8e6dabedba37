//! What every handler of a running origin shares: the library, its secrets and snapshot, the
//! errors answered to clients, and the small answer helpers (one content type each).

use super::auth::Signer;
use super::faults::FaultPlan;
use super::library::Library;
use super::snapshot::{Answer, Live};
use super::ServeConfig;
use crate::protocol::credentials::Credentials;
use crate::protocol::keyfile::Keys;
use crate::protocol::model::ModelError;
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// An error answered to a client.
#[derive(Debug)]
pub enum ApiError {
    /// `401`, with a `WWW-Authenticate` challenge for this scheme.
    Unauthorized(&'static str),
    Forbidden,
    NotFound,
    /// `500`; the message is logged, not sent.
    Internal(String),
}

impl ApiError {
    pub fn internal(path: &std::path::Path, e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(format!("{}: {e}", path.display()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized(scheme) => {
                let challenge = HeaderValue::from_static(scheme);
                let mut r = (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
                r
            }
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden").into_response(),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not found").into_response(),
            ApiError::Internal(message) => {
                tracing::warn!("internal error: {message}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }
}

/// Shared state of a running origin.
pub struct Origin {
    pub lib: Library,
    pub config: ServeConfig,
    pub signer: Signer,
    pub faults: FaultPlan,
    pub credentials: Credentials,
    /// The catalog's answers, swapped whole when a publish replaces it.
    pub(crate) live: Arc<Live>,
    /// `http://<bound address>`, for CDN URLs when a request has no usable `Host`.
    pub self_base: String,
    /// The `keys` file as last read, with its modification time: parsed again only when a
    /// `publish` changed it, not on every `/audiokey` request.
    keys: Mutex<Option<(SystemTime, Arc<Keys>)>>,
}

impl Origin {
    pub(crate) fn new(
        lib: Library,
        config: ServeConfig,
        signer: Signer,
        credentials: Credentials,
        live: Live,
        self_base: String,
    ) -> Origin {
        Origin {
            lib,
            faults: FaultPlan::new(&config.faults),
            config,
            signer,
            credentials,
            live: Arc::new(live),
            self_base,
            keys: Mutex::new(None),
        }
    }

    /// The library's keys, re-read only when the file's modification time changed.
    pub fn keys(&self) -> Result<Arc<Keys>, ApiError> {
        let path = self.lib.keys();
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let mut cached = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(mtime), Some((seen, keys))) = (modified, cached.as_ref()) {
            if mtime == *seen {
                return Ok(keys.clone());
            }
        }
        let keys = Arc::new(
            self.lib
                .read_keys()
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        );
        if let Some(mtime) = modified {
            *cached = Some((mtime, keys.clone()));
        }
        Ok(keys)
    }

    /// A whole (small) file from the library; missing is `404`.
    pub async fn read_file(&self, path: &std::path::Path) -> Result<Vec<u8>, ApiError> {
        match tokio::fs::read(path).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::NotFound),
            Err(e) => Err(ApiError::internal(path, e)),
        }
    }
}

/// An id from the path, or `404` for anything that does not parse.
pub(super) fn parse_id<T>(
    raw: Result<Path<String>, PathRejection>,
    parse: impl FnOnce(&str) -> Result<T, ModelError>,
) -> Result<T, ApiError> {
    let Path(raw) = raw.map_err(|_| ApiError::NotFound)?;
    parse(&raw).map_err(|_| ApiError::NotFound)
}

/// The content types the origin answers with, named once.
pub(crate) mod content_type {
    pub const PROTOBUF: &str = "application/x-protobuf";
    pub const OCTETS: &str = "application/octet-stream";
}

/// `bytes` with a `Content-Type`.
pub(crate) fn typed(content_type: &'static str, bytes: impl Into<axum::body::Body>) -> Response {
    let value = HeaderValue::from_static(content_type);
    ([(header::CONTENT_TYPE, value)], bytes.into()).into_response()
}

/// Whether an `If-None-Match` header names this ETag (weak comparison, RFC 9110 §13.1.2).
fn matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == ours)
}

/// A protobuf answer with its ETag, or `304 Not Modified` when the client has it already.
pub(crate) fn conditional(headers: &HeaderMap, answer: &Answer) -> Response {
    let mut response = match matches(headers, &answer.etag) {
        true => StatusCode::NOT_MODIFIED.into_response(),
        false => typed(content_type::PROTOBUF, answer.bytes.clone()),
    };
    response
        .headers_mut()
        .insert(header::ETAG, answer.etag.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_star_and_weak_tags_match() {
        let etag = HeaderValue::from_static("\"abc\"");
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(v));
            matches(&h, &etag)
        };
        assert!(with("\"abc\""));
        assert!(with("\"x\", \"abc\""));
        assert!(with("W/\"abc\""));
        assert!(with("*"));
        assert!(!with("\"abcd\""));
        assert!(!with("abc"));
        assert!(!matches(&HeaderMap::new(), &etag));
    }
}
