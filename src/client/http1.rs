//! A minimal HTTP/1.1 client for plain-HTTP CDNs, made for one job: receive a ranged body
//! straight into the reader's page-aligned buffer, where reqwest would first receive it into
//! its own buffer and hand it over as chunks to be copied again. On a two-core machine that
//! extra copy, and the machinery around it, cost a tenth of the CPU of a cold sequential read.
//!
//! It speaks only the simple, common case: `GET` with `Range`, keep-alive connections, and
//! answers framed by `Content-Length`. Everything else goes to reqwest: `https://` URLs, every
//! URL when a proxy is configured in the environment (reqwest honours `http_proxy` and
//! `no_proxy`), and (asked again there) redirects and bodies without a length.

use super::transport::{
    move_front, parse_retry_after, Body, BoxFuture, HttpResponse, ReqwestTransport, Transport,
    TransportError,
};
use bytes::{Buf, BufMut, BytesMut};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Idle connections kept per host.
const MAX_IDLE_PER_HOST: usize = 64;
/// Idle connections older than this are closed rather than reused: servers close theirs
/// after a while (nginx: 75 s, trackfs serve: 60 s), and reusing one just as the server
/// closes it costs a failed request; so well before that.
pub const MAX_IDLE_TIME: Duration = Duration::from_secs(30);
/// How often idle connections are checked without waiting for traffic: one the server closed
/// would otherwise sit in CLOSE-WAIT, holding a descriptor, until the next request.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Idle keep-alive connections by `host:port`, most recently used last.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<String, Vec<(TcpStream, Instant)>>>,
}

impl Pool {
    /// Whether an idle connection can carry another request: not too old, and quiet. One the
    /// server closed, or that holds bytes nobody asked for (a body longer than announced), is
    /// not.
    fn usable(stream: &TcpStream, since: Instant) -> bool {
        let mut probe = [0u8; 1];
        since.elapsed() < MAX_IDLE_TIME
            && matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// The most recently used usable connection; unusable ones met on the way are closed.
    fn take(&self, key: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let streams = idle.get_mut(key)?;
        while let Some((stream, since)) = streams.pop() {
            if Pool::usable(&stream, since) {
                return Some(stream);
            }
        }
        None
    }

    fn give_back(&self, key: &str, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let streams = idle.entry(key.to_string()).or_default();
        if streams.len() < MAX_IDLE_PER_HOST {
            streams.push((stream, Instant::now()));
        }
    }

    /// Closes every idle connection, of every host, that is no longer usable.
    fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, streams| {
            streams.retain(|(stream, since)| Pool::usable(stream, *since));
            !streams.is_empty()
        });
    }

    /// Sweeps the pool every `every` for as long as it lives: the task holds it weakly, so
    /// dropping the transport (and the bodies it lent out) ends the task at its next tick.
    fn sweep_every(self: &Arc<Self>, every: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match pool.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
    }
}

pub struct Http1Transport {
    fallback: ReqwestTransport,
    pool: Arc<Pool>,
    connect_timeout: Duration,
    /// False when a proxy is configured: then reqwest does everything.
    direct: bool,
}

/// Whether the environment asks for a proxy for plain-HTTP URLs.
fn proxy_configured() -> bool {
    ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

impl Http1Transport {
    /// `fallback` answers what this client does not speak (TLS, redirects, unframed bodies).
    /// Called within a tokio runtime, it also starts sweeping the idle pool.
    pub fn new(fallback: ReqwestTransport, connect_timeout: Duration) -> Self {
        Http1Transport::sweeping_every(fallback, connect_timeout, SWEEP_EVERY)
    }

    fn sweeping_every(
        fallback: ReqwestTransport,
        connect_timeout: Duration,
        every: Duration,
    ) -> Self {
        let pool = Arc::new(Pool::default());
        pool.sweep_every(every);
        Http1Transport {
            fallback,
            pool,
            connect_timeout,
            direct: !proxy_configured(),
        }
    }

    async fn connect(&self, target: &Target) -> Result<TcpStream, TransportError> {
        let connecting = TcpStream::connect((target.host.as_str(), target.port));
        let stream = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| TransportError::Connect("timed out".into()))?
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Sends the request and reads the response head, on a pooled connection when there is
    /// one. A pooled connection the server has closed in the meantime breaks before any answer
    /// arrives; then the request goes once more on a new connection.
    async fn exchange(&self, target: &Target, request: &[u8]) -> Result<Exchange, TransportError> {
        if let Some(stream) = self.pool.take(&target.key) {
            match send(stream, request).await {
                Err(TransportError::Io(_)) => {}
                answered => return answered,
            }
        }
        let stream = self.connect(target).await?;
        send(stream, request).await
    }

    async fn get_plain(
        &self,
        url: &str,
        target: Target,
        range: Option<(u64, u64)>,
    ) -> Result<HttpResponse, TransportError> {
        let request = target.request(range);
        let exchange = self.exchange(&target, request.as_bytes()).await?;
        let head = &exchange.head;
        let framed = head.content_length.is_some() && !head.chunked;
        if (300..400).contains(&head.status) || (head.status < 300 && !framed) {
            return self.fallback.get(url, range).await;
        }
        let length = head.content_length.unwrap_or(0);
        let response = HttpResponse {
            status: head.status,
            content_range: head.content_range.clone(),
            content_length: head.content_length,
            retry_after: head.retry_after,
            body: Box::new(FramedBody {
                stream: Some(exchange.stream),
                early: exchange.early,
                remaining: length,
                // An unframed (error) body cannot be skipped: that connection is not reused.
                reusable: head.keep_alive && framed,
                pool: self.pool.clone(),
                key: target.key,
            }),
        };
        Ok(response)
    }
}

impl Transport for Http1Transport {
    fn get(
        &self,
        url: &str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        let url = url.to_string();
        Box::pin(async move {
            match Target::parse(&url).filter(|_| self.direct) {
                Some(target) => self.get_plain(&url, target, range).await,
                None => self.fallback.get(&url, range).await,
            }
        })
    }
}

/// Where a plain-HTTP URL points.
struct Target {
    host: String,
    port: u16,
    /// `Host:` header value.
    authority: String,
    /// Path and query.
    path: String,
    /// Pool key.
    key: String,
}

impl Target {
    /// `None` for anything but a well-formed `http://` URL.
    fn parse(url: &str) -> Option<Target> {
        let parsed = url::Url::parse(url).ok()?;
        if parsed.scheme() != "http" {
            return None;
        }
        let port = parsed.port_or_known_default()?;
        let host = match parsed.host()? {
            url::Host::Domain(name) => name.to_string(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let shown_host = parsed.host_str()?;
        let authority = match parsed.port() {
            Some(p) => format!("{shown_host}:{p}"),
            None => shown_host.to_string(),
        };
        let mut path = parsed.path().to_string();
        if let Some(query) = parsed.query() {
            path.push('?');
            path.push_str(query);
        }
        Some(Target {
            key: format!("{shown_host}:{port}"),
            host,
            port,
            authority,
            path,
        })
    }

    fn request(&self, range: Option<(u64, u64)>) -> String {
        let range = range
            .map(|(first, last)| format!("Range: bytes={first}-{last}\r\n"))
            .unwrap_or_default();
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n{range}Accept-Encoding: identity\r\nUser-Agent: trackfs/{}\r\n\r\n",
            self.path,
            self.authority,
            env!("CARGO_PKG_VERSION")
        )
    }
}

/// A response head and the connection it came on.
struct Exchange {
    stream: TcpStream,
    head: Head,
    /// Body bytes that arrived together with the head.
    early: BytesMut,
}

#[derive(Debug, Default, PartialEq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    content_range: Option<String>,
    retry_after: Option<Duration>,
    chunked: bool,
    keep_alive: bool,
}

async fn send(mut stream: TcpStream, request: &[u8]) -> Result<Exchange, TransportError> {
    let io = |e: std::io::Error| TransportError::Io(format!("request failed: {e}"));
    stream.write_all(request).await.map_err(io)?;
    let mut buffer = BytesMut::with_capacity(16 << 10);
    loop {
        if stream.read_buf(&mut buffer).await.map_err(io)? == 0 {
            return Err(TransportError::Io(
                "connection closed before the response".into(),
            ));
        }
        while let Some((head, length)) = parse_head(&buffer).map_err(TransportError::Protocol)? {
            buffer.advance(length);
            // Interim answers (100 Continue, 103 Early Hints) precede the real one.
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(Exchange {
                stream,
                head,
                early: buffer,
            });
        }
        if buffer.len() >= MAX_HEAD {
            return Err(TransportError::Protocol("response head too large".into()));
        }
        buffer.reserve(16 << 10);
    }
}

/// The head and its length in bytes, once `bytes` holds all of it.
fn parse_head(bytes: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response: {e}")),
    };
    let mut head = Head {
        status: response.code.unwrap_or(0),
        keep_alive: response.version == Some(1),
        ..Head::default()
    };
    for header in response.headers.iter() {
        let name = header.name;
        let Ok(value) = std::str::from_utf8(header.value) else {
            // Unreadable framing must not be guessed at; other headers do not matter here.
            if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                return Err("malformed Content-Length".into());
            }
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            // Digits only: `u64::from_str` would also take "+5".
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err("malformed Content-Length".into());
            }
            let length = value.parse().map_err(|_| "malformed Content-Length")?;
            if head.content_length.is_some_and(|l| l != length) {
                return Err("conflicting Content-Length headers".into());
            }
            head.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("content-range") {
            head.content_range = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = parse_retry_after(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let close = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
            head.keep_alive &= !close;
        }
    }
    Ok(Some((head, length)))
}

/// A body of known length, received into the caller's buffer. When all of it has been read,
/// the connection goes back to the pool; dropped earlier, the connection is closed.
struct FramedBody {
    stream: Option<TcpStream>,
    early: BytesMut,
    remaining: u64,
    reusable: bool,
    pool: Arc<Pool>,
    key: String,
}

impl FramedBody {
    fn finished(&mut self) {
        if let Some(stream) = self.stream.take() {
            // Bytes beyond the announced length mean the server and we disagree on framing.
            if self.reusable && self.early.is_empty() {
                self.pool.give_back(&self.key, stream);
            }
        }
    }
}

impl Body for FramedBody {
    fn read_into<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
        max: usize,
    ) -> BoxFuture<'a, Result<usize, TransportError>> {
        Box::pin(async move {
            if self.remaining == 0 {
                self.finished();
                return Ok(0);
            }
            let max = max.min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            if max == 0 {
                return Ok(0);
            }
            let n = if !self.early.is_empty() {
                move_front(&mut self.early, buf, max)
            } else {
                let closed = || TransportError::Io("connection already closed".into());
                let stream = self.stream.as_mut().ok_or_else(closed)?;
                let n = stream
                    .read_buf(&mut BufMut::limit(&mut *buf, max))
                    .await
                    .map_err(|e| TransportError::Io(format!("body error: {e}")))?;
                if n == 0 {
                    self.stream = None;
                    return Err(TransportError::Io("connection closed mid-body".into()));
                }
                n
            };
            self.remaining -= n as u64;
            if self.remaining == 0 {
                self.finished();
            }
            Ok(n)
        })
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
