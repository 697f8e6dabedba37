//! Ranged GETs of ciphertext from the CDN, made trustworthy: every answer is checked against
//! the request (`Content-Range`, length, the file's known total), transient failures are retried
//! by `retry`'s policy, a failing URL gives way to the next `cdnurl`, and URLs are re-resolved
//! before they expire and after a `403`/`404`/`410`. Resolving runs inside a fetch's attempts,
//! so a read has one retry bound whichever part of the origin fails. It returns ciphertext;
//! decryption is elsewhere.

pub(crate) use super::content_range::{parse_content_range, ContentRange};
use super::error::FetchError;
use super::expiry::url_expiry;
use super::retry::{Retry, DEFAULT_ATTEMPTS};
use super::seams::{ControlPlane, RangeRequest, RangeSource};
pub(crate) use super::seams::{Fetched, Transform};
use super::stats::Stats;
use super::transport::{BoxFuture, HttpResponse, Transport, TransportError};
use crate::protocol::model::FileId;
use crate::readpath::buffers::{Buffers, DEFAULT_SPARE_BUFFERS};
use crate::redact;
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Body bytes read (and decrypted) at a time: small enough to stay in the CPU's cache.
const PIECE: usize = 256 << 10;
/// Short answers followed for one range before giving up (a 2 MiB range in 64 KiB answers).
const MAX_SHORT_ANSWERS: usize = 32;

/// Sizes above this are treated as a lying CDN rather than a track.
pub(crate) const MAX_PLAUSIBLE_SIZE: u64 = 64 << 30;

#[derive(Debug, Clone)]
pub struct CdnConfig {
    /// Attempts per range before the read fails with EIO.
    pub attempts: u32,
    /// A body that delivers nothing for this long is abandoned and retried.
    pub stall_timeout: Duration,
    /// Longest wait for response headers.
    pub header_timeout: Duration,
    /// How long a host that could not be connected to is set aside.
    pub host_penalty: Duration,
    /// Slowest average body rate, bytes per second, before a response is abandoned and
    /// retried: a server that trickles a byte now and then never trips `stall_timeout`.
    pub min_rate: u64,
}

impl Default for CdnConfig {
    fn default() -> Self {
        CdnConfig {
            attempts: DEFAULT_ATTEMPTS,
            stall_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            host_penalty: Duration::from_secs(60),
            // 2 MiB in about a minute; a 320 kbit/s track plays at 40 KB/s.
            min_rate: 32 << 10,
        }
    }
}

/// Where CDN URLs come from: storage-resolve on any control plane, or a test double. One
/// attempt per call: the fetch asking retries it.
pub(crate) trait Resolve: Send + Sync + 'static {
    fn resolve(&self, file: FileId) -> BoxFuture<'_, Result<Vec<String>, FetchError>>;
}

impl<T: ControlPlane> Resolve for T {
    fn resolve(&self, file: FileId) -> BoxFuture<'_, Result<Vec<String>, FetchError>> {
        ControlPlane::resolve(self, file)
    }
}

/// The CDN as the read path's bottom tier: it always answers, or fails; never "not here".
/// Each piece is transformed (decrypted) right after it is copied out of the HTTP buffer,
/// while the bytes are still in the CPU's cache, instead of in a second pass over the range.
impl RangeSource for Cdn {
    fn fetch<'a>(
        &'a self,
        r: RangeRequest,
        transform: Option<Transform<'a>>,
    ) -> BoxFuture<'a, Result<Option<Fetched>, FetchError>> {
        Box::pin(async move {
            Cdn::fetch(self, r.file, r.first, r.last, r.known_total, transform)
                .await
                .map(Some)
        })
    }
}

struct Resolved {
    urls: Vec<String>,
    /// Re-resolve after this (expiry minus a margin); `None` for URLs without a readable expiry.
    good_until: Option<SystemTime>,
}

pub(crate) struct Cdn {
    transport: Arc<dyn Transport>,
    resolver: Arc<dyn Resolve>,
    config: CdnConfig,
    resolved: Mutex<HashMap<FileId, Arc<tokio::sync::Mutex<Option<Resolved>>>>>,
    set_aside: Mutex<HashMap<String, Instant>>,
    stats: Arc<Stats>,
    buffers: Arc<Buffers>,
}

impl Cdn {
    pub fn new(
        transport: Arc<dyn Transport>,
        resolver: Arc<dyn Resolve>,
        config: CdnConfig,
        stats: Arc<Stats>,
    ) -> Self {
        Cdn {
            transport,
            resolver,
            config,
            resolved: Mutex::new(HashMap::new()),
            set_aside: Mutex::new(HashMap::new()),
            stats,
            buffers: Buffers::new(DEFAULT_SPARE_BUFFERS),
        }
    }

    /// The same, filling buffers from `buffers` (the pool the reader shares them from).
    pub(crate) fn with_buffers(mut self, buffers: Arc<Buffers>) -> Self {
        self.buffers = buffers;
        self
    }

    /// Fetches ciphertext bytes `first..=last` (clipped at the end of the file). `known_total`
    /// is the size learned earlier; a different one means the file changed and fails the read.
    /// Every failed fetch counts once in `errors`, whatever step failed.
    pub async fn fetch(
        &self,
        file: FileId,
        first: u64,
        last: u64,
        known_total: Option<u64>,
        transform: Option<Transform<'_>>,
    ) -> Result<Fetched, FetchError> {
        let fetched = self
            .fetch_pieces(file, first, last, known_total, transform)
            .await;
        if fetched.is_err() {
            self.stats.errors.incr();
        }
        fetched
    }

    async fn fetch_pieces(
        &self,
        file: FileId,
        first: u64,
        last: u64,
        known_total: Option<u64>,
        transform: Option<Transform<'_>>,
    ) -> Result<Fetched, FetchError> {
        let mut fetched = self
            .fetch_some(file, first, last, known_total, transform)
            .await?;
        // A server may answer a range with less than was asked (some CDNs cap their answers):
        // the rest is asked for, and joined (a copy, on this rare path only), a bounded number
        // of times: a server dribbling a few bytes per answer is not followed forever.
        for _ in 0..MAX_SHORT_ANSWERS {
            let next = first + fetched.data.len() as u64;
            if fetched.data.is_empty() || next > last.min(fetched.total - 1) {
                return Ok(fetched);
            }
            let more = self
                .fetch_some(file, next, last, Some(fetched.total), transform)
                .await?;
            if more.data.is_empty() {
                return Ok(fetched);
            }
            fetched.data.extend_from_slice(&more.data);
        }
        Err(FetchError::TooManyShortAnswers {
            file,
            first,
            last,
            answers: MAX_SHORT_ANSWERS,
        })
    }

    /// One range, retried and failed over until it succeeds; the answer may be short of
    /// `last` when the server sent less (never empty unless `first` is past the end).
    async fn fetch_some(
        &self,
        file: FileId,
        first: u64,
        last: u64,
        known_total: Option<u64>,
        transform: Option<Transform<'_>>,
    ) -> Result<Fetched, FetchError> {
        let what = format!("bytes {first}-{last} of file {file}");
        let mut retry = Retry::new(what, self.config.attempts, &self.stats);
        let mut rotation = 0usize;
        let mut force_resolve = false;
        loop {
            let urls = match self.urls(file, force_resolve).await {
                Ok(urls) => urls,
                Err(e) => {
                    retry.after(e).await?;
                    continue;
                }
            };
            let url = self.pick(&urls, rotation);
            let e = match self
                .try_once(file, &url, (first, last), known_total, transform)
                .await
            {
                Ok(fetched) => return Ok(fetched),
                Err(e) => e,
            };
            force_resolve = e.wants_new_url();
            if urls.len() > 1 && e.is_transient() {
                self.stats.failovers.incr();
            }
            // A host that could not be connected to is set aside, which already moves it to
            // the back of the order; any other failure moves on to the next URL.
            if !matches!(e, FetchError::Connect { .. }) {
                rotation += 1;
            }
            retry.after(e).await?;
        }
    }

    /// The file's CDN URLs, resolving when there are none, they are about to expire, or forced.
    async fn urls(&self, file: FileId, force: bool) -> Result<Vec<String>, FetchError> {
        let slot = {
            let mut map = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(file).or_default().clone()
        };
        let mut slot = slot.lock().await;
        let fresh = |r: &Resolved| r.good_until.is_none_or(|t| SystemTime::now() < t);
        match slot.as_ref() {
            Some(r) if !force && fresh(r) => return Ok(r.urls.clone()),
            _ => {}
        }
        let urls = self.resolver.resolve(file).await?;
        *slot = Some(Resolved {
            good_until: good_until(&urls),
            urls: urls.clone(),
        });
        Ok(urls)
    }

    /// The `rotation`-th URL, preferring hosts that have not recently refused connections.
    fn pick(&self, urls: &[String], rotation: usize) -> String {
        let now = Instant::now();
        let aside = self.set_aside.lock().unwrap_or_else(|p| p.into_inner());
        let is_aside = |u: &String| aside.get(&host_of(u)).is_some_and(|until| now < *until);
        let mut ordered: Vec<&String> = urls.iter().filter(|u| !is_aside(u)).collect();
        ordered.extend(urls.iter().filter(|u| is_aside(u)));
        ordered[rotation % ordered.len()].clone()
    }

    fn set_host_aside(&self, url: &str) {
        let until = Instant::now() + self.config.host_penalty;
        let mut aside = self.set_aside.lock().unwrap_or_else(|p| p.into_inner());
        aside.insert(host_of(url), until);
    }

    async fn try_once(
        &self,
        file: FileId,
        url: &str,
        (first, last): (u64, u64),
        known_total: Option<u64>,
        transform: Option<Transform<'_>>,
    ) -> Result<Fetched, FetchError> {
        let _in_flight = self.stats.in_flight.enter();
        self.stats.cdn_requests.incr();
        let shown = redact::url(url);
        tracing::debug!(url = %shown, first, last, "CDN range request");
        let response = tokio::time::timeout(
            self.config.header_timeout,
            self.transport.get(url, Some((first, last))),
        )
        .await
        .map_err(|_| FetchError::Stalled {
            url: shown.clone(),
            stalled_for: self.config.header_timeout,
        })?
        .map_err(|error| {
            if matches!(error, TransportError::Connect(_)) {
                self.set_host_aside(url);
            }
            FetchError::from_transport(shown.clone(), error)
        })?;
        let reading = RangeRead {
            file,
            url: shown,
            first,
            last,
            known_total,
            stall_timeout: self.config.stall_timeout,
            min_rate: self.config.min_rate,
            transform,
            buffers: &self.buffers,
        };
        let fetched = reading.interpret(response).await?;
        self.stats.bytes_fetched.add(fetched.data.len() as u64);
        Ok(fetched)
    }
}

/// One answer being checked against the request that produced it.
struct RangeRead<'a> {
    file: FileId,
    url: String,
    first: u64,
    last: u64,
    known_total: Option<u64>,
    stall_timeout: Duration,
    min_rate: u64,
    transform: Option<Transform<'a>>,
    buffers: &'a Buffers,
}

impl RangeRead<'_> {
    async fn interpret(&self, response: HttpResponse) -> Result<Fetched, FetchError> {
        match response.status {
            206 => self.partial(response).await,
            200 => self.whole(response).await,
            416 => self.unsatisfied(&response),
            status => Err(FetchError::Status {
                url: self.url.clone(),
                status,
                retry_after: response.retry_after,
            }),
        }
    }

    /// How long `bytes` of body may take: the stall timeout plus their time at `min_rate`.
    fn time_allowed(&self, bytes: u64) -> Duration {
        self.stall_timeout + Duration::from_secs_f64(bytes as f64 / self.min_rate.max(1) as f64)
    }

    fn bad(&self, reason: String) -> FetchError {
        FetchError::BadRange {
            url: self.url.clone(),
            reason,
        }
    }

    /// A total must be plausible and, once known, never change.
    fn check_total(&self, total: u64) -> Result<(), FetchError> {
        if total > MAX_PLAUSIBLE_SIZE {
            return Err(FetchError::AbsurdSize {
                file: self.file,
                size: total,
            });
        }
        match self.known_total {
            Some(old) if old != total => Err(FetchError::SizeChanged {
                file: self.file,
                old,
                new: total,
            }),
            _ => Ok(()),
        }
    }

    async fn partial(&self, mut response: HttpResponse) -> Result<Fetched, FetchError> {
        let header = response.content_range.clone().unwrap_or_default();
        let Some(ContentRange::Range { first, last, total }) = parse_content_range(&header) else {
            return Err(self.bad(format!("206 with an unusable Content-Range {header:?}")));
        };
        self.check_total(total)?;
        // The answer must start with our first byte, or before it: caching CDNs may widen a
        // range to their own chunks. What lies outside our range is skipped; less than asked
        // for is kept (the caller asks for the rest).
        if !(first <= self.first && self.first <= last) {
            return Err(self.bad(format!(
                "asked for bytes {}-{}, got {first}-{last}/{total}",
                self.first, self.last
            )));
        }
        let kept_last = last.min(self.last).min(total - 1);
        let (skip, len) = (self.first - first, kept_last - self.first + 1);
        let exact = skip == 0 && kept_last == last;
        let data = self.collect(&mut response, skip, len, exact).await?;
        Ok(Fetched { total, data })
    }

    /// A server that ignored `Range`: skip to our offset in the whole body, then stop.
    async fn whole(&self, mut response: HttpResponse) -> Result<Fetched, FetchError> {
        // Without a length (chunked or close-delimited), the size is known from an earlier
        // answer or learned by reading the body to its end.
        let Some(total) = response.content_length.or(self.known_total) else {
            return self.whole_to_the_end(response).await;
        };
        self.check_total(total)?;
        if self.first >= total {
            return Ok(Fetched {
                total,
                data: BytesMut::new(),
            });
        }
        let len = self.last.min(total - 1) - self.first + 1;
        let data = self.collect(&mut response, self.first, len, false).await?;
        Ok(Fetched { total, data })
    }

    /// A whole body of unannounced length: keeps our range, counts every byte to learn the
    /// size. Bounded like `collect`: stalls, the minimum average rate, a plausible size.
    async fn whole_to_the_end(&self, mut response: HttpResponse) -> Result<Fetched, FetchError> {
        let wanted = self.first..self.last.saturating_add(1);
        let mut kept = self.buffers.aligned((wanted.end - wanted.start) as usize);
        let mut piece = BytesMut::with_capacity(PIECE);
        let (started, mut position) = (Instant::now(), 0u64);
        loop {
            piece.clear();
            let got = position as usize;
            let n = self
                .read_piece(&mut response, &mut piece, PIECE, got, 0)
                .await? as u64;
            if n == 0 {
                break;
            }
            let (from, to) = (wanted.start.max(position), wanted.end.min(position + n));
            if from < to {
                kept.extend_from_slice(
                    &piece[(from - position) as usize..(to - position) as usize],
                );
            }
            position += n;
            if position > MAX_PLAUSIBLE_SIZE {
                return Err(FetchError::AbsurdSize {
                    file: self.file,
                    size: position,
                });
            }
            let within = self.time_allowed(position);
            if started.elapsed() > within {
                return Err(FetchError::TooSlow {
                    url: self.url.clone(),
                    bytes: position,
                    within,
                });
            }
        }
        self.check_total(position)?;
        if let Some(transform) = self.transform {
            transform(self.first, &mut kept);
        }
        Ok(Fetched {
            total: position,
            data: kept,
        })
    }

    fn unsatisfied(&self, response: &HttpResponse) -> Result<Fetched, FetchError> {
        let header = response.content_range.clone().unwrap_or_default();
        match parse_content_range(&header) {
            Some(ContentRange::Unsatisfied { total }) if self.first >= total => {
                self.check_total(total)?;
                Ok(Fetched {
                    total,
                    data: BytesMut::new(),
                })
            }
            _ => Err(self.bad(format!(
                "416 for bytes {}- with Content-Range {header:?}",
                self.first
            ))),
        }
    }

    /// Reads the body: skips `skip` bytes, keeps `len`. With `exact`, the body must be exactly
    /// `len` bytes long; a body that goes quiet for `stall_timeout` is a stall. The kept bytes
    /// land in a page-aligned buffer at their distance from `first`, so every copy the kernel
    /// makes of them (socket to here, here to the page cache) is between equally aligned
    /// addresses, and each piece is transformed (decrypted) while still in the CPU's cache.
    /// The whole body must also arrive within `stall_timeout` plus its size at `min_rate`.
    async fn collect(
        &self,
        response: &mut HttpResponse,
        skip: u64,
        len: u64,
        exact: bool,
    ) -> Result<BytesMut, FetchError> {
        let bytes = skip + len;
        let within = self.time_allowed(bytes);
        let reading = self.collect_unbounded(response, skip, len, exact);
        tokio::time::timeout(within, reading)
            .await
            .map_err(|_| FetchError::TooSlow {
                url: self.url.clone(),
                bytes,
                within,
            })?
    }

    async fn collect_unbounded(
        &self,
        response: &mut HttpResponse,
        skip: u64,
        len: u64,
        exact: bool,
    ) -> Result<BytesMut, FetchError> {
        let mut out = self.buffers.aligned(len as usize);
        // Only a server that ignored `Range` needs room for skipped bytes.
        let mut scratch = BytesMut::new();
        let mut skipped = 0u64;
        while skipped < skip {
            scratch.clear();
            let max = PIECE.min((skip - skipped) as usize);
            scratch.reserve(max);
            match self.read_piece(response, &mut scratch, max, 0, len).await? {
                0 => return Err(self.body_error(0, len, "body ended early".into())),
                n => skipped += n as u64,
            }
        }
        while (out.len() as u64) < len {
            let kept = out.len();
            let max = PIECE.min(len as usize - kept);
            if self.read_piece(response, &mut out, max, kept, len).await? == 0 {
                return Err(self.body_error(kept as u64, len, "body ended early".into()));
            }
            if let Some(transform) = self.transform {
                transform(self.first + kept as u64, &mut out[kept..]);
            }
        }
        if exact {
            scratch.clear();
            if self
                .read_piece(response, &mut scratch, 1, len as usize, len)
                .await?
                > 0
            {
                return Err(self.bad(format!("body longer than the {len} bytes announced")));
            }
        }
        Ok(out)
    }

    /// One read of at most `max` body bytes into `buf`, bounded by the stall timeout.
    async fn read_piece(
        &self,
        response: &mut HttpResponse,
        buf: &mut BytesMut,
        max: usize,
        got: usize,
        len: u64,
    ) -> Result<usize, FetchError> {
        match tokio::time::timeout(self.stall_timeout, response.body.read_into(buf, max)).await {
            Err(_) => Err(FetchError::Stalled {
                url: self.url.clone(),
                stalled_for: self.stall_timeout,
            }),
            Ok(Err(error)) => Err(self.body_error(got as u64, len, error.to_string())),
            Ok(Ok(n)) => Ok(n),
        }
    }

    fn body_error(&self, got: u64, expected: u64, reason: String) -> FetchError {
        FetchError::Body {
            url: self.url.clone(),
            got,
            expected,
            reason,
        }
    }
}

/// When to re-resolve: the earliest expiry among the URLs, minus a margin (5 minutes, or a
/// quarter of the remaining lifetime for short-lived URLs).
fn good_until(urls: &[String]) -> Option<SystemTime> {
    let expiry = urls.iter().filter_map(|u| url_expiry(u)).min()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let remaining = expiry.saturating_sub(now);
    let margin = (remaining / 4).min(300);
    // An expiry past what the clock can hold is as good as none.
    UNIX_EPOCH.checked_add(Duration::from_secs(expiry - margin))
}

/// `host:port` of a URL (the port its scheme implies when absent); the URL itself when it
/// does not parse, so that such a URL is still set aside on its own.
fn host_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
