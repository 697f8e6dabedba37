//! The CDN side of the origin: signed, ranged GETs of ciphertext (`/audio/<file id>`), plaintext
//! head files (`/head/<file id>`), cover pictures (`/image/<file id>`), and the faults that
//! tests ask for.
//!
//! Files are streamed from disk in chunks (never loaded whole). Faults are drawn per `/audio/`
//! request from a seeded plan after the URL's signature checks out, so a given seed and request
//! sequence always misbehave the same way.

use super::faults::{Fault, FaultKind};
use super::state::{content_type, parse_id, typed, ApiError, Origin};
use crate::protocol::model::{FileId, PictureKind};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::io::{self, SeekFrom};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const CHUNK: u64 = 128 * 1024;

/// How long a faulty body waits before it breaks off.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// What a `Range` header asks of a file of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable `Range`: the whole file with `200`.
    Whole,
    /// Bytes `start..=end`, with `206`.
    Part { start: u64, end: u64 },
    /// `416`.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` (the unit in any case, RFC 9110 §14.1).
/// Headers that are malformed, use another unit or ask for several ranges are ignored (RFC
/// 9110 allows it), which means the whole file. Positions too large for a u64 are past any
/// end: a first one makes the range unsatisfiable, a last one is clipped.
pub fn parse_range(header: Option<&str>, total: u64) -> RangeRequest {
    let spec = header.map(str::trim).and_then(|h| {
        let (unit, spec) = h.split_once('=')?;
        unit.trim().eq_ignore_ascii_case("bytes").then_some(spec)
    });
    let Some(spec) = spec.filter(|s| !s.contains(',')) else {
        return RangeRequest::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().unwrap_or(u64::MAX))
    };
    match (number(first), last.trim()) {
        (None, _) if first.trim().is_empty() => match number(last) {
            None => RangeRequest::Whole,
            Some(_) if total == 0 => RangeRequest::Unsatisfiable,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Part {
                start: total.saturating_sub(n),
                end: total - 1,
            },
        },
        (Some(start), _) if start >= total => RangeRequest::Unsatisfiable,
        (Some(start), "") => RangeRequest::Part {
            start,
            end: total - 1,
        },
        (Some(start), last) => match number(last) {
            Some(end) if end >= start => RangeRequest::Part {
                start,
                end: end.min(total - 1),
            },
            _ => RangeRequest::Whole,
        },
        (None, _) => RangeRequest::Whole,
    }
}

/// `GET /audio/<file id>?<expiry>_<sig>`.
pub async fn audio(
    State(origin): State<Arc<Origin>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(id, FileId::from_hex)?;
    if !origin.signer.check_url(&id, query.as_deref()) {
        return Err(ApiError::Forbidden);
    }
    let path = origin.lib.audio(&id);
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ApiError::NotFound),
        Err(e) => return Err(ApiError::internal(&path, e)),
    };
    let total = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(&path, e))?
        .len();
    // No validators are sent, so an `If-Range` can never match: the whole file (RFC 9110 §13.1.5).
    let range = headers
        .get(header::RANGE)
        .filter(|_| !headers.contains_key(header::IF_RANGE))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fault = origin.faults.next();
    if let Some(f) = fault {
        tracing::debug!("fault {} on /audio/{id}", f.kind.name());
    }
    let range = match fault.map(|f| f.kind) {
        Some(FaultKind::Status500) => return Ok(status(StatusCode::INTERNAL_SERVER_ERROR)),
        Some(FaultKind::Status503) => return Ok(status(StatusCode::SERVICE_UNAVAILABLE)),
        Some(FaultKind::Expired) => return Err(ApiError::Forbidden),
        Some(FaultKind::IgnoreRange) => RangeRequest::Whole,
        _ => parse_range(range.as_deref(), total),
    };
    if fault.is_some_and(|f| f.kind == FaultKind::Stall && !f.mid_body) {
        tokio::time::sleep(origin.config.faults.stall).await;
    }
    let tail = fault.map(|f| body_tail(f, origin.config.faults.stall));
    ranged_response(file, range, total, tail).await
}

fn status(code: StatusCode) -> Response {
    (code, code.canonical_reason().unwrap_or("")).into_response()
}

/// How a faulty body ends: at which fraction, and with what.
fn body_tail(fault: Fault, stall: Duration) -> (Fault, Tail) {
    let tail = match fault.kind {
        FaultKind::Reset => Tail::Error,
        FaultKind::Truncate => Tail::End,
        FaultKind::Stall if fault.mid_body => Tail::Stall(stall),
        _ => Tail::Continue,
    };
    (fault, tail)
}

async fn ranged_response(
    mut file: tokio::fs::File,
    range: RangeRequest,
    total: u64,
    tail: Option<(Fault, Tail)>,
) -> Result<Response, ApiError> {
    let (code, start, len) = match range {
        RangeRequest::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{total}"))],
            )
                .into_response())
        }
        RangeRequest::Whole => (StatusCode::OK, 0, total),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::Internal(format!("seek: {e}")))?;
    }
    let (cut, tail) = match tail {
        Some((fault, tail)) if tail != Tail::Continue => (fault.cut_at(len), tail),
        _ => (len, Tail::Continue),
    };
    let body = Body::from_stream(body_stream(file, len, cut, tail));
    let mut response = Response::new(body);
    *response.status_mut() = code;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type::OCTETS),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if code == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{total}", start + len - 1);
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// What happens once `cut` bytes of the body have been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Nothing special: the whole body.
    Continue,
    /// Close early (fewer bytes than `Content-Length`).
    End,
    /// Abort the connection with an error.
    Error,
    /// Pause, then send the rest.
    Stall(Duration),
}

struct BodyState {
    file: tokio::fs::File,
    remaining: u64,
    sent: u64,
    cut: u64,
    tail: Tail,
}

/// `len` bytes of `file` from its current position, in chunks, shaped by `cut` and `tail`.
fn body_stream(
    file: tokio::fs::File,
    len: u64,
    cut: u64,
    tail: Tail,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let state = BodyState {
        file,
        remaining: len,
        sent: 0,
        cut,
        tail,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.remaining == 0 {
            return None;
        }
        if s.sent == s.cut {
            if matches!(s.tail, Tail::End | Tail::Error) {
                // Pending for a moment lets hyper flush the head and the bytes so far;
                // ending or failing right away would drop them unsent.
                tokio::time::sleep(FLUSH_PAUSE).await;
            }
            match s.tail {
                Tail::End => return None,
                Tail::Error => {
                    s.remaining = 0;
                    let e = io::Error::new(io::ErrorKind::ConnectionReset, "injected reset");
                    return Some((Err(e), s));
                }
                Tail::Stall(d) => tokio::time::sleep(d).await,
                Tail::Continue => {}
            }
            s.tail = Tail::Continue;
        }
        let limit = if s.sent < s.cut {
            s.cut - s.sent
        } else {
            s.remaining
        };
        let want = CHUNK.min(s.remaining).min(limit) as usize;
        let mut buf = vec![0u8; want];
        match s.file.read(&mut buf).await {
            Ok(0) => {
                s.remaining = 0;
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while served");
                Some((Err(e), s))
            }
            Ok(n) => {
                buf.truncate(n);
                s.sent += n as u64;
                s.remaining -= n as u64;
                Some((Ok(Bytes::from(buf)), s))
            }
            Err(e) => {
                s.remaining = 0;
                Some((Err(e), s))
            }
        }
    })
}

/// `GET /head/<file id>`: the plaintext prefix, unauthenticated; `404` when head files are off.
pub async fn head(
    State(origin): State<Arc<Origin>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id, FileId::from_hex)?;
    if !origin.config.head_files {
        return Err(ApiError::NotFound);
    }
    let bytes = origin.read_file(&origin.lib.head(&id)).await?;
    Ok(typed(content_type::OCTETS, bytes))
}

/// `GET /image/<file id>`: a cover picture as it was published, unauthenticated and not
/// encrypted; its content type from its magic bytes. Named by its content, so it never
/// changes and may be cached for good.
pub async fn image(
    State(origin): State<Arc<Origin>>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id, FileId::from_hex)?;
    let bytes = origin.read_file(&origin.lib.image(&id)).await?;
    let kind = PictureKind::sniff(&bytes).ok_or(ApiError::NotFound)?;
    let mut response = typed(kind.content_type(), bytes);
    let forever = HeaderValue::from_static("public, max-age=31536000, immutable");
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, forever);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(r("bytes=0-9"), Part { start: 0, end: 9 });
        assert_eq!(r("bytes=90-"), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=90-200"), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-10"), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-1000"), Part { start: 0, end: 99 });
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=100-200"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(r("bytes=5-1"), Whole);
        assert_eq!(r("bytes=0-1,5-6"), Whole);
        assert_eq!(r("items=0-1"), Whole);
        assert_eq!(r("bytes=a-b"), Whole);
        assert_eq!(r("Bytes=0-9"), Part { start: 0, end: 9 });
        assert_eq!(r("BYTES=0-9"), Part { start: 0, end: 9 });
        assert_eq!(r("bytes=99999999999999999999-"), Unsatisfiable);
        assert_eq!(
            r("bytes=0-99999999999999999999"),
            Part { start: 0, end: 99 }
        );
        assert_eq!(r("bytes=-99999999999999999999"), Part { start: 0, end: 99 });
        assert_eq!(r("bytes=100-,0-1"), Whole);
        assert_eq!(parse_range(None, 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), Unsatisfiable);
    }
}
