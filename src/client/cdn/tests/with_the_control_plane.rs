//! The CDN logic resolving through a real `Api`: one retry bound for a read, whichever
//! part of the origin is down.

use super::*;
use crate::client::api::{Api, Credentials};
use crate::client::testing::{response, routed_origin, serve_routed};
use crate::protocol::proto::storage::{storage_resolve_response, StorageResolveResponse};
use prost::Message;

fn origin_answer(head: &str) -> Vec<u8> {
    if head.starts_with("POST /keymaster/token") {
        return response("200 OK", br#"{"accessToken":"t","expiresIn":3600}"#);
    }
    let answer = StorageResolveResponse {
        result: storage_resolve_response::Result::Cdn as i32,
        cdnurl: vec!["http://cdn/a".into()],
        fileid: vec![],
    };
    response("200 OK", &answer.encode_to_vec())
}

/// A CDN that answers honestly, found through the origin at `base`, with default retries.
fn cdn_resolving_at(base: &str) -> Cdn {
    let http = crate::client::http_client(None, Duration::from_secs(1)).unwrap();
    let credentials = Credentials::from_text("user:secret").unwrap();
    let api = Api::new(http, base, credentials, Arc::default());
    let transport = ScriptedCdn::new(content(), vec![]);
    let config = CdnConfig::default();
    Cdn::new(transport, Arc::new(api), config, Arc::default())
}

#[tokio::test]
async fn an_origin_restarting_for_two_seconds_does_not_fail_a_read() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        serve_routed(listener, origin_answer);
    });
    let cdn = cdn_resolving_at(&format!("http://{addr}"));
    let started = Instant::now();
    let fetched = cdn.fetch(FILE, 0, 99, None, None).await.unwrap();
    assert_eq!(&fetched.data[..], &content()[..100]);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn an_origin_that_stays_down_fails_a_read_within_one_retry_bound() {
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let base = routed_origin(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        response("503 Service Unavailable", b"")
    })
    .await;
    let cdn = cdn_resolving_at(&base);
    let started = Instant::now();
    let error = cdn.fetch(FILE, 0, 99, None, None).await.unwrap_err();
    match &error {
        FetchError::GaveUp { attempts, last, .. } => {
            assert_eq!(*attempts, 6);
            assert!(matches!(**last, FetchError::Status { status: 503, .. }));
        }
        other => panic!("expected GaveUp, got {other}"),
    }
    let asked = asked.load(Ordering::SeqCst);
    assert_eq!(
        asked, 6,
        "one token request per attempt, no retries within retries"
    );
    // One bound (2.5–5 s of backoff), with room for a loaded machine; nested retries would
    // take six times as long.
    assert!(started.elapsed() <= Duration::from_secs(10));
    assert_eq!(cdn.stats.errors.get(), 1);
}
