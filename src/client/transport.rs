//! The CDN behind one small trait: "GET this URL, maybe with a byte range".
//!
//! Real implementations: `http1` (plain-HTTP CDNs, reading bodies straight into the caller's
//! buffer) and reqwest (TLS, and whatever `http1` hands over). Tests put a double behind the
//! same trait to script faults (resets, truncations, lies about ranges) without a network.

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a transport got no usable answer, described without the URL (whose query may hold a
/// signature). The kind decides what the CDN logic does: only a failed connect says the host
/// itself is unreachable and sets it aside; a broken exchange or a garbled answer is retried
/// like any other failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection: refused, unreachable, name not found, connect or TLS handshake timeout.
    #[error("connection failed: {0}")]
    Connect(String),
    /// A connection was made and then broke: reset, closed early, timed out while reading.
    #[error("{0}")]
    Io(String),
    /// The server answered something that is not HTTP as this client reads it.
    #[error("{0}")]
    Protocol(String),
}

/// A `Retry-After` value, in either of RFC 9110's forms: delta-seconds or an HTTP date.
/// Anything else is taken as absent, so the caller's own backoff applies.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        // The other form: a date (a past one means "now").
        let when = httpdate::parse_http_date(value).ok()?;
        let wait = when.duration_since(std::time::SystemTime::now());
        return Some(wait.unwrap_or(Duration::ZERO));
    }
    // More digits than a u64 holds: as long as any wait the caller allows.
    Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)))
}

/// The parts of an HTTP answer the range logic looks at; the body is read piece by piece so
/// that a stall can be told apart from a slow but moving transfer.
pub struct HttpResponse {
    pub status: u16,
    pub content_range: Option<String>,
    pub content_length: Option<u64>,
    pub retry_after: Option<Duration>,
    pub body: Box<dyn Body>,
}

/// A response body that fills the caller's buffer, so a transport that can receive straight
/// into it (see `http1`) saves a copy of every byte.
pub trait Body: Send {
    /// Appends between 1 and `max` bytes to `buf`; `Ok(0)` means the body has ended. An `Err`
    /// is a broken transfer (reset, truncation).
    fn read_into<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
        max: usize,
    ) -> BoxFuture<'a, Result<usize, TransportError>>;
}

/// A body made of a stream of chunks (reqwest's, or a test double's), copied out as asked.
pub struct StreamBody {
    chunks: BoxStream<'static, Result<Bytes, TransportError>>,
    current: Bytes,
}

impl StreamBody {
    pub fn boxed(chunks: BoxStream<'static, Result<Bytes, TransportError>>) -> Box<dyn Body> {
        Box::new(StreamBody {
            chunks,
            current: Bytes::new(),
        })
    }
}

/// Moves up to `max` bytes from the front of `from` (one contiguous buffer) to the end of
/// `to`; returns how many.
pub fn move_front(from: &mut impl Buf, to: &mut BytesMut, max: usize) -> usize {
    let n = max.min(from.chunk().len());
    to.extend_from_slice(&from.chunk()[..n]);
    from.advance(n);
    n
}

impl Body for StreamBody {
    fn read_into<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
        max: usize,
    ) -> BoxFuture<'a, Result<usize, TransportError>> {
        Box::pin(async move {
            while self.current.is_empty() {
                match self.chunks.next().await {
                    None => return Ok(0),
                    Some(chunk) => self.current = chunk?,
                }
            }
            Ok(move_front(&mut self.current, buf, max))
        })
    }
}

pub trait Transport: Send + Sync + 'static {
    /// GETs `url` with `Range: bytes=first-last` when `range` is set. An `Err` is a failure to
    /// get any answer (connect, TLS, reset before headers, an unreadable response head).
    fn get(
        &self,
        url: &str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'_, Result<HttpResponse, TransportError>>;
}

/// reqwest, HTTP/1.1 keep-alive, rustls.
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestTransport { client }
    }
}

/// Describes a reqwest error without its URL (which may carry a signature): its kind, then
/// its sources, which never include the URL.
pub fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "body error"
    } else if error.is_request() {
        "request failed"
    } else {
        "HTTP error"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A reqwest error as a `TransportError`: failing to connect is told apart from the rest.
pub fn transport_error(error: &reqwest::Error) -> TransportError {
    let text = describe(error);
    if error.is_connect() {
        // `Connect` says "connection failed" itself.
        let reason = text.strip_prefix("connection failed: ").unwrap_or(&text);
        TransportError::Connect(reason.to_string())
    } else {
        TransportError::Io(text)
    }
}

impl Transport for ReqwestTransport {
    fn get(
        &self,
        url: &str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        let mut request = self.client.get(url);
        if let Some((first, last)) = range {
            request = request.header(reqwest::header::RANGE, format!("bytes={first}-{last}"));
        }
        Box::pin(async move {
            let response = request.send().await.map_err(|e| transport_error(&e))?;
            let header = |name: reqwest::header::HeaderName| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let content_range = header(reqwest::header::CONTENT_RANGE);
            let retry_after =
                header(reqwest::header::RETRY_AFTER).and_then(|v| parse_retry_after(&v));
            Ok(HttpResponse {
                status: response.status().as_u16(),
                content_range,
                content_length: response.content_length(),
                retry_after,
                body: StreamBody::boxed(
                    response
                        .bytes_stream()
                        .map(|chunk| chunk.map_err(|e| transport_error(&e)))
                        .boxed(),
                ),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(parse_retry_after("2"), secs(2));
        assert_eq!(parse_retry_after(" 120 "), secs(120));
        assert_eq!(parse_retry_after("99999999999999999999999"), secs(u64::MAX));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past: retry now"
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        let wait = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        for unusable in ["", "+5", "-1", "1.5", "tomorrow"] {
            assert_eq!(parse_retry_after(unusable), None, "{unusable}");
        }
    }
}
