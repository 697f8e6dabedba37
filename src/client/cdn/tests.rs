//! The CDN logic against a scripted double: every lie and failure a CDN can tell.

use super::*;
use crate::client::transport::{Body, HttpResponse, StreamBody};
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;

/// How the double answers one request.
#[derive(Clone, Debug)]
enum Behaviour {
    Honest,
    Status(u16),
    IgnoreRange,
    /// A 206 with at most this many bytes from the requested start.
    Capped(u64),
    /// A 200 with the whole content and no Content-Length (chunked or close-delimited).
    WholeUnframed,
    Truncate,
    WrongRange,
    ResetMidBody,
    Stall,
    /// One byte every 50 ms: never quiet for the stall timeout, far below the minimum rate.
    Trickle,
    Refuse,
    /// An answer that is not HTTP (garbled head, conflicting lengths).
    Garbled,
    TotalIs(u64),
    TooManyRequests(u64),
    /// The range widened to whole chunks of this size, as some caching CDNs answer.
    Aligned(u64),
}

struct ScriptedCdn {
    content: Vec<u8>,
    script: StdMutex<VecDeque<Behaviour>>,
    requests: StdMutex<Vec<String>>,
}

impl ScriptedCdn {
    fn new(content: Vec<u8>, script: Vec<Behaviour>) -> Arc<Self> {
        Arc::new(ScriptedCdn {
            content,
            script: StdMutex::new(script.into()),
            requests: StdMutex::new(Vec::new()),
        })
    }
}

fn body_of(chunks: Vec<Result<Bytes, TransportError>>) -> Box<dyn Body> {
    StreamBody::boxed(stream::iter(chunks).boxed())
}

impl Transport for ScriptedCdn {
    fn get(
        &self,
        url: &str,
        range: Option<(u64, u64)>,
    ) -> BoxFuture<'_, Result<HttpResponse, TransportError>> {
        self.requests.lock().unwrap().push(url.to_string());
        let behaviour = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Behaviour::Honest);
        let total = self.content.len() as u64;
        let (first, last) = range.unwrap_or((0, total - 1));
        let last = last.min(total - 1);
        let slice = Bytes::copy_from_slice(&self.content[first as usize..=last as usize]);
        let partial = |body, range_header: String| HttpResponse {
            status: 206,
            content_range: Some(range_header),
            content_length: None,
            retry_after: None,
            body,
        };
        let honest_range = format!("bytes {first}-{last}/{total}");
        let response = match behaviour {
            Behaviour::Honest => Ok(partial(body_of(vec![Ok(slice)]), honest_range)),
            Behaviour::Status(status) => Ok(HttpResponse {
                status,
                content_range: None,
                content_length: None,
                retry_after: None,
                body: body_of(vec![]),
            }),
            Behaviour::Capped(cap) => {
                let last = last.min(first + cap - 1);
                Ok(partial(
                    body_of(vec![Ok(Bytes::copy_from_slice(
                        &self.content[first as usize..=last as usize],
                    ))]),
                    format!("bytes {first}-{last}/{total}"),
                ))
            }
            Behaviour::Aligned(chunk) => {
                let first = first / chunk * chunk;
                let last = ((last / chunk + 1) * chunk - 1).min(total - 1);
                Ok(partial(
                    body_of(vec![Ok(Bytes::copy_from_slice(
                        &self.content[first as usize..=last as usize],
                    ))]),
                    format!("bytes {first}-{last}/{total}"),
                ))
            }
            Behaviour::WholeUnframed => Ok(HttpResponse {
                status: 200,
                content_range: None,
                content_length: None,
                retry_after: None,
                body: body_of(
                    self.content
                        .chunks(777)
                        .map(|c| Ok(Bytes::copy_from_slice(c)))
                        .collect(),
                ),
            }),
            Behaviour::IgnoreRange => Ok(HttpResponse {
                status: 200,
                content_range: None,
                content_length: Some(total),
                retry_after: None,
                body: body_of(
                    self.content
                        .chunks(1000)
                        .map(|c| Ok(Bytes::copy_from_slice(c)))
                        .collect(),
                ),
            }),
            Behaviour::Truncate => Ok(partial(
                body_of(vec![Ok(slice.slice(..slice.len() / 2))]),
                honest_range,
            )),
            Behaviour::WrongRange => {
                let shifted = format!("bytes {}-{}/{total}", first + 1, last);
                Ok(partial(body_of(vec![Ok(slice)]), shifted))
            }
            Behaviour::ResetMidBody => Ok(partial(
                body_of(vec![
                    Ok(slice.slice(..1)),
                    Err(TransportError::Io("connection reset".into())),
                ]),
                honest_range,
            )),
            Behaviour::Stall => Ok(partial(
                StreamBody::boxed(stream::pending().boxed()),
                honest_range,
            )),
            Behaviour::Trickle => {
                let bytes = self.content[first as usize..=last as usize].to_vec();
                let trickle = stream::iter(bytes).then(|b| async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Bytes::from(vec![b]))
                });
                Ok(partial(StreamBody::boxed(trickle.boxed()), honest_range))
            }
            Behaviour::Refuse => Err(TransportError::Connect("refused".into())),
            Behaviour::Garbled => Err(TransportError::Protocol("malformed response".into())),
            Behaviour::TooManyRequests(secs) => Ok(HttpResponse {
                status: 429,
                content_range: None,
                content_length: None,
                retry_after: Some(Duration::from_secs(secs)),
                body: body_of(vec![]),
            }),
            Behaviour::TotalIs(t) => Ok(partial(
                body_of(vec![Ok(slice)]),
                format!("bytes {first}-{last}/{t}"),
            )),
        };
        Box::pin(async move { response })
    }
}

struct FixedUrls {
    urls: Vec<String>,
    calls: AtomicUsize,
}

impl Resolve for FixedUrls {
    fn resolve(&self, _file: FileId) -> BoxFuture<'_, Result<Vec<String>, FetchError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let urls = self.urls.clone();
        Box::pin(async move { Ok(urls) })
    }
}

const FILE: FileId = FileId([9; 20]);

fn content() -> Vec<u8> {
    (0..10_000u32).map(|i| (i % 253) as u8).collect()
}

fn config() -> CdnConfig {
    CdnConfig {
        attempts: 4,
        stall_timeout: Duration::from_millis(100),
        header_timeout: Duration::from_millis(500),
        host_penalty: Duration::from_secs(60),
        min_rate: 20_000,
    }
}

fn cdn_with(script: Vec<Behaviour>, urls: &[&str]) -> (Cdn, Arc<ScriptedCdn>, Arc<FixedUrls>) {
    let transport = ScriptedCdn::new(content(), script);
    let resolver = Arc::new(FixedUrls {
        urls: urls.iter().map(|u| u.to_string()).collect(),
        calls: AtomicUsize::new(0),
    });
    let cdn = Cdn::new(
        transport.clone(),
        resolver.clone(),
        config(),
        Arc::default(),
    );
    (cdn, transport, resolver)
}

async fn fetch_ok(script: Vec<Behaviour>, first: u64, last: u64) -> Fetched {
    let (cdn, _, _) = cdn_with(script, &["http://cdn/a"]);
    cdn.fetch(FILE, first, last, None, None)
        .await
        .expect("fetch should recover")
}

#[tokio::test]
async fn every_transient_fault_is_retried_into_the_right_bytes() {
    let expected = &content()[1234..=5678];
    for fault in [
        Behaviour::Status(500),
        Behaviour::Status(503),
        Behaviour::Truncate,
        Behaviour::ResetMidBody,
        Behaviour::Stall,
        Behaviour::Trickle,
        Behaviour::Refuse,
        Behaviour::Garbled,
        Behaviour::WrongRange,
        Behaviour::Status(403),
    ] {
        let fetched = fetch_ok(vec![fault.clone(), fault.clone()], 1234, 5678).await;
        assert_eq!(&fetched.data[..], expected, "after {fault:?}");
        assert_eq!(fetched.total, 10_000);
    }
}

#[tokio::test]
async fn a_server_ignoring_range_still_gives_the_right_bytes() {
    let fetched = fetch_ok(vec![Behaviour::IgnoreRange], 4321, 4400).await;
    assert_eq!(&fetched.data[..], &content()[4321..=4400]);
}

#[tokio::test]
async fn a_range_widened_to_the_cdns_chunks_gives_the_right_bytes() {
    let (cdn, transport, _) = cdn_with(vec![Behaviour::Aligned(4096)], &["http://cdn/a"]);
    let fetched = cdn.fetch(FILE, 1234, 5678, None, None).await.unwrap();
    assert_eq!(&fetched.data[..], &content()[1234..=5678]);
    assert_eq!(transport.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_server_that_sends_less_than_asked_is_asked_for_the_rest() {
    let (cdn, transport, _) = cdn_with(vec![Behaviour::Capped(1000); 10], &["http://cdn/a"]);
    let fetched = cdn.fetch(FILE, 1234, 5678, None, None).await.unwrap();
    assert_eq!(&fetched.data[..], &content()[1234..=5678]);
    assert_eq!(transport.requests.lock().unwrap().len(), 5);
    // Dribbling is not followed forever.
    let (cdn, _, _) = cdn_with(vec![Behaviour::Capped(10); 100], &["http://cdn/a"]);
    let error = cdn.fetch(FILE, 0, 5000, None, None).await.unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::TooManyShortAnswers {
                file: FILE,
                first: 0,
                last: 5000,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("short pieces"), "{error}");
}

#[tokio::test]
async fn a_whole_body_without_a_length_gives_the_right_bytes_and_size() {
    for (first, last) in [(4321, 4400), (0, 0), (9_990, 20_000)] {
        let fetched = fetch_ok(vec![Behaviour::WholeUnframed], first, last).await;
        let end = (last as usize + 1).min(10_000);
        let expected = content().get(first as usize..end).unwrap_or(&[]).to_vec();
        assert_eq!(&fetched.data[..], &expected[..], "{first}-{last}");
        assert_eq!(fetched.total, 10_000);
    }
    // With the size already known it is not read to the end, and still checked.
    let (cdn, _, _) = cdn_with(vec![Behaviour::WholeUnframed], &["http://cdn/a"]);
    let fetched = cdn.fetch(FILE, 100, 199, Some(10_000), None).await.unwrap();
    assert_eq!(&fetched.data[..], &content()[100..200]);
}

#[tokio::test]
async fn ranges_past_the_end_are_clipped_and_eof_is_empty() {
    let fetched = fetch_ok(vec![], 9_990, 20_000).await;
    assert_eq!(fetched.data.len(), 10);
}

#[tokio::test]
async fn a_changed_total_is_refused_not_mixed() {
    let (cdn, _, _) = cdn_with(vec![Behaviour::TotalIs(20_000)], &["http://cdn/a"]);
    let error = cdn
        .fetch(FILE, 0, 99, Some(10_000), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::BadRange { .. } | FetchError::SizeChanged { .. }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn absurd_totals_are_refused() {
    let (cdn, _, _) = cdn_with(vec![Behaviour::TotalIs(1 << 62)], &["http://cdn/a"]);
    assert!(cdn.fetch(FILE, 0, 99, None, None).await.is_err());
}

#[tokio::test]
async fn persistent_failure_gives_up_within_the_bound() {
    let script = vec![Behaviour::Status(500); 10];
    let (cdn, transport, _) = cdn_with(script, &["http://cdn/a"]);
    let started = Instant::now();
    let error = cdn.fetch(FILE, 0, 99, None, None).await.unwrap_err();
    assert!(
        matches!(error, FetchError::GaveUp { attempts: 4, .. }),
        "{error}"
    );
    assert_eq!(transport.requests.lock().unwrap().len(), 4);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_dead_first_url_fails_over_and_is_set_aside() {
    let (cdn, transport, _) = cdn_with(
        vec![Behaviour::Refuse],
        &["http://dead:1/a", "http://live/a"],
    );
    cdn.fetch(FILE, 0, 99, None, None).await.unwrap();
    cdn.fetch(FILE, 100, 199, None, None).await.unwrap();
    let requests = transport.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        ["http://dead:1/a", "http://live/a", "http://live/a"]
    );
}

#[tokio::test]
async fn a_garbled_answer_moves_on_without_setting_the_host_aside() {
    let (cdn, transport, _) = cdn_with(vec![Behaviour::Garbled], &["http://a/x", "http://b/x"]);
    cdn.fetch(FILE, 0, 99, None, None).await.unwrap();
    cdn.fetch(FILE, 100, 199, None, None).await.unwrap();
    let requests = transport.requests.lock().unwrap().clone();
    assert_eq!(requests, ["http://a/x", "http://b/x", "http://a/x"]);
}

#[tokio::test]
async fn every_failed_fetch_counts_once_as_an_error() {
    struct Failing(FetchError);
    impl Resolve for Failing {
        fn resolve(&self, _file: FileId) -> BoxFuture<'_, Result<Vec<String>, FetchError>> {
            let error = self.0.clone();
            Box::pin(async move { Err(error) })
        }
    }
    // A resolve that fails for good, or transiently every time.
    for error in [
        FetchError::NotOnCdn {
            file: FILE,
            result: 3,
        },
        FetchError::NoCdnUrl { file: FILE },
    ] {
        let stats = Arc::new(Stats::default());
        let transport = ScriptedCdn::new(content(), vec![]);
        let cdn = Cdn::new(transport, Arc::new(Failing(error)), config(), stats.clone());
        cdn.fetch(FILE, 0, 99, None, None).await.unwrap_err();
        assert_eq!(stats.errors.get(), 1);
    }
    // Answers that each succeed but never add up to the range; then a fetch that recovers.
    let (cdn, _, _) = cdn_with(vec![Behaviour::Capped(10); 40], &["http://cdn/a"]);
    cdn.fetch(FILE, 0, 5000, None, None).await.unwrap_err();
    cdn.fetch(FILE, 0, 99, None, None).await.unwrap();
    assert_eq!(cdn.stats.errors.get(), 1);
}

#[tokio::test]
async fn a_403_re_resolves() {
    let (cdn, _, resolver) = cdn_with(vec![Behaviour::Status(403)], &["http://cdn/a"]);
    cdn.fetch(FILE, 0, 99, None, None).await.unwrap();
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn urls_about_to_expire_are_re_resolved_first() {
    let soon = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let url = format!("http://cdn/a?{soon}_sig");
    let (cdn, _, resolver) = cdn_with(vec![], &[&url]);
    cdn.fetch(FILE, 0, 99, None, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cdn.fetch(FILE, 0, 99, None, None).await.unwrap();
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_url_expiring_past_the_clocks_range_never_expires() {
    let url = format!("http://cdn/a?{}_sig", u64::MAX);
    let (cdn, _, resolver) = cdn_with(vec![], &[&url]);
    cdn.fetch(FILE, 0, 99, None, None).await.unwrap();
    cdn.fetch(FILE, 100, 199, None, None).await.unwrap();
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
}

mod content_range {
    use super::super::{parse_content_range, ContentRange};
    use proptest::prelude::*;

    #[test]
    fn known_forms() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some(ContentRange::Range {
                first: 0,
                last: 99,
                total: 1000
            })
        );
        assert_eq!(
            parse_content_range("bytes */1000"),
            Some(ContentRange::Unsatisfied { total: 1000 })
        );
        assert_eq!(
            parse_content_range("Bytes 5-9/10"),
            Some(ContentRange::Range {
                first: 5,
                last: 9,
                total: 10
            }),
            "units are case-insensitive"
        );
        for bad in [
            "bytesx 0-1/2",
            "byté 0-1/2",
            "bytes 0-99/*",
            "bytes 100-99/1000",
            "bytes 0-1000/1000",
            "items 0-1/2",
            "bytes -1-2/3",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(first in 0u64..1 << 40, len in 1u64..1 << 30, extra in 0u64..1 << 30) {
            let last = first + len - 1;
            let total = last + 1 + extra;
            let header = format!("bytes {first}-{last}/{total}");
            prop_assert_eq!(parse_content_range(&header), Some(ContentRange::Range { first, last, total }));
        }

        #[test]
        fn never_panics(text in ".{0,40}") {
            let _ = parse_content_range(&text);
        }
    }
}

#[tokio::test]
async fn the_transform_sees_every_piece_at_its_file_offset_even_after_a_retry() {
    // XOR with the low byte of the file offset: wrong offsets or skipped pieces would show.
    let transform = |offset: u64, piece: &mut [u8]| {
        for (i, byte) in piece.iter_mut().enumerate() {
            *byte ^= (offset + i as u64) as u8;
        }
    };
    for script in [
        vec![],
        vec![Behaviour::ResetMidBody],
        vec![Behaviour::IgnoreRange],
        vec![Behaviour::WholeUnframed],
    ] {
        let (cdn, _, _) = cdn_with(script.clone(), &["http://cdn/a"]);
        let fetched = cdn
            .fetch(FILE, 1000, 2999, None, Some(&transform))
            .await
            .unwrap();
        let expected: Vec<u8> = content()[1000..3000]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ (1000 + i as u64) as u8)
            .collect();
        assert_eq!(&fetched.data[..], &expected[..], "after {script:?}");
    }
}

#[tokio::test]
async fn a_429_waits_for_retry_after_within_the_bound() {
    let (cdn, _, _) = cdn_with(vec![Behaviour::TooManyRequests(1)], &["http://cdn/a"]);
    let started = Instant::now();
    cdn.fetch(FILE, 0, 99, None, None).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    // A server asking for an hour is not obeyed past the bound: the read fails or succeeds soon.
    let (cdn, _, _) = cdn_with(vec![Behaviour::TooManyRequests(3600)], &["http://cdn/a"]);
    let started = Instant::now();
    cdn.fetch(FILE, 0, 99, None, None).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}

mod with_the_control_plane;
