//! The control plane against loopback origins that stall, script, route and flood.

use super::*;
use crate::client::testing::{
    endless_origin, response, routed_origin, scripted_origin, silent_origin,
};
use std::sync::atomic::{AtomicUsize, Ordering};

const TOKEN: &[u8] = br#"{"accessToken":"t","expiresIn":3600}"#;

fn api(base: &str) -> Api {
    let http = super::super::http_client(None, Duration::from_secs(5)).unwrap();
    let credentials = Credentials::from_text("user:secret").unwrap();
    Api::new(http, base, credentials, Arc::default())
        .with_request_timeout(Duration::from_millis(200))
        .with_attempts(3)
}

#[tokio::test]
async fn a_silent_origin_fails_requests_instead_of_hanging() {
    let api = api(&silent_origin().await);
    let limit = Duration::from_secs(10);
    let head = tokio::time::timeout(limit, api.head(FileId([7; 20]))).await;
    assert!(head.expect("head hung").is_err());
    let token = tokio::time::timeout(limit, api.token()).await;
    match token.expect("token hung") {
        Err(FetchError::GaveUp { attempts, .. }) => assert_eq!(attempts, 3),
        other => panic!("expected GaveUp, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_waiting_on_a_token_that_fails_share_its_failure() {
    let api = api(&silent_origin().await).with_attempts(1);
    let started = Instant::now();
    let tokens = futures::future::join_all((0..4).map(|_| api.token())).await;
    assert!(tokens.iter().all(Result::is_err));
    // One 200 ms timeout for all four, not four in turn.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_token_claiming_to_last_forever_is_used() {
    let token = br#"{"accessToken":"t","expiresIn":18446744073709551615}"#;
    let base = scripted_origin(vec![response("200 OK", token)]).await;
    assert_eq!(api(&base).token().await.unwrap(), "t");
}

#[tokio::test]
async fn a_file_not_on_a_cdn_fails_at_once() {
    let answer = proto::storage::StorageResolveResponse {
        result: proto::storage::storage_resolve_response::Result::Restricted as i32,
        cdnurl: vec!["http://cdn.example/a".into()],
        fileid: vec![],
    };
    let base = scripted_origin(vec![
        response("200 OK", TOKEN),
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
            h if h.starts_with("POST /keymaster/token") => TOKEN.to_vec(),
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

fn too_large<T>(result: &Result<T, FetchError>) -> bool {
    matches!(result, Err(FetchError::Malformed { reason, .. }) if reason.contains("larger than"))
}

#[tokio::test]
async fn an_endless_answer_is_cut_off_at_its_kinds_limit() {
    let base = endless_origin("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").await;
    let api = api(&base).with_request_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let token = api.token().await;
    assert!(too_large(&token), "{token:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "read until the timeout"
    );
    // A head that long is not a head: the file is read without one.
    assert_eq!(api.head(FileId([1; 20])).await.unwrap(), None);
}

#[tokio::test]
async fn an_answer_announcing_too_many_bytes_is_refused_before_reading() {
    let base = routed_origin(|head| {
        if head.starts_with("POST /keymaster/token") {
            return response("200 OK", TOKEN);
        }
        // 100 GiB announced, a few bytes sent, then the connection is held open.
        b"HTTP/1.1 200 OK\r\nContent-Length: 107374182400\r\n\r\nabc".to_vec()
    })
    .await;
    let api = api(&base).with_request_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let track = api.track(TrackId([4; 16])).await;
    assert!(too_large(&track), "{:?}", track.err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "read until the timeout"
    );
}

#[tokio::test]
async fn the_control_plane_retries_like_the_cdn_and_obeys_retry_after() {
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let base = routed_origin(move |head| match count.fetch_add(1, Ordering::SeqCst) {
        0 => {
            b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec()
        }
        1 => response("200 OK", TOKEN),
        2 => response("408 Request Timeout", b""),
        _ if head.starts_with("GET /audiokey/") => response("200 OK", &[5; 16]),
        _ => response("500 Unexpected", b""),
    })
    .await;
    let api = api(&base);
    let started = Instant::now();
    assert_eq!(api.token().await.unwrap(), "t");
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After");
    assert_eq!(api.audio_key(FileId([1; 20])).await.unwrap().0, [5; 16]);
    assert_eq!(asked.load(Ordering::SeqCst), 4);
    assert_eq!(api.stats.retries.get(), 2);
}

#[tokio::test]
async fn an_unknown_id_is_a_final_answer() {
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let base = routed_origin(move |head| {
        if head.starts_with("POST /keymaster/token") {
            return response("200 OK", TOKEN);
        }
        count.fetch_add(1, Ordering::SeqCst);
        response("404 Not Found", b"")
    })
    .await;
    let error = api(&base).album(AlbumId([3; 16])).await.unwrap_err();
    assert!(matches!(error, FetchError::NotFound { .. }), "{error}");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_library_revalidated_with_its_etag_is_unchanged_on_304() {
    let library = proto::library::Library {
        album_gid: vec![vec![1; 16]],
    }
    .encode_to_vec();
    let base = routed_origin(move |head| {
        let lower = head.to_ascii_lowercase();
        if head.starts_with("POST") {
            return response("200 OK", TOKEN);
        }
        if lower.contains("if-none-match: \"v1\"\r\n") {
            return b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\nconnection: close\r\n\r\n"
                .to_vec();
        }
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\netag: \"v1\"\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            library.len()
        )
        .into_bytes();
        answer.extend_from_slice(&library);
        answer
    })
    .await;
    let stats = Arc::new(Stats::default());
    let http = super::super::http_client(None, Duration::from_secs(5)).unwrap();
    let credentials = Credentials::from_text("user:secret").unwrap();
    let api = Api::new(http, &base, credentials, stats.clone());
    match api.library_if(None).await.unwrap() {
        Fresh::New(ids, etag) => {
            assert_eq!(ids.len(), 1);
            assert_eq!(etag.as_deref(), Some("\"v1\""));
        }
        Fresh::Unchanged => panic!("no ETag was sent"),
    }
    assert!(matches!(
        api.library_if(Some("\"v1\"")).await.unwrap(),
        Fresh::Unchanged
    ));
    assert!(matches!(
        api.library_if(Some("\"v0\"")).await.unwrap(),
        Fresh::New(_, Some(_))
    ));
    assert_eq!(stats.not_modified.get(), 1);
}

#[tokio::test]
async fn a_server_that_is_not_an_origin_is_named_at_once_not_retried() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    let base = routed_origin(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        response("501 Not Implemented", b"")
    })
    .await;
    let error = api(&base).token().await.unwrap_err();
    assert!(
        matches!(error, FetchError::NotAnOrigin { status: 501, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("trackfs origin"), "{error}");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn https_to_a_plain_http_origin_says_so_at_once() {
    // Answers whatever arrives (a TLS hello here) in plain HTTP, as such an origin would.
    let base = scripted_origin(vec![response("200 OK", TOKEN); 3]).await;
    let https = base.replacen("http://", "https://", 1);
    let error = api(&https).token().await.unwrap_err();
    assert!(matches!(error, FetchError::NotTls { .. }), "{error}");
    assert!(error.to_string().contains("use http://"), "{error}");
}

#[tokio::test]
async fn the_first_token_is_not_a_renewal() {
    let base = routed_origin(|_| response("200 OK", TOKEN)).await;
    let stats = Arc::new(Stats::default());
    let http = super::super::http_client(None, Duration::from_secs(5)).unwrap();
    let credentials = Credentials::from_text("user:secret").unwrap();
    let api = Api::new(http, &base, credentials, stats.clone());
    api.token().await.unwrap();
    api.token().await.unwrap();
    assert_eq!(stats.token_renewals.get(), 0);
    // A 401 to it makes the next one a renewal.
    api.token_other_than(Some("t")).await.unwrap();
    assert_eq!(stats.token_renewals.get(), 1);
}
