//! The plain-HTTP client against a scripted server on loopback.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;

/// A server whose `answer` turns each request head into raw response bytes; `close` ends the
/// connection after every answer (without saying so), as a server's idle timeout would.
struct Scripted {
    url: String,
    connections: Arc<AtomicUsize>,
}

async fn scripted(
    answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    close: bool,
) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_string();
                        pending.drain(..end + 4);
                        if stream.write_all(&answer(&head)).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    Scripted { url, connections }
}

const CONTENT: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Honest ranged answers of CONTENT, with extra header lines.
fn ranged(head: &str, extra: &str) -> Vec<u8> {
    let range = head
        .lines()
        .find_map(|l| l.strip_prefix("Range: bytes="))
        .unwrap_or("0-35");
    let (first, last) = range.split_once('-').unwrap();
    let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
    let mut out = format!(
        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {first}-{last}/{}\r\nContent-Length: {}\r\n{extra}\r\n",
        CONTENT.len(),
        last - first + 1
    )
    .into_bytes();
    out.extend_from_slice(&CONTENT[first..=last]);
    out
}

fn transport() -> Http1Transport {
    let client = reqwest::Client::builder().build().unwrap();
    Http1Transport::new(ReqwestTransport::new(client), Duration::from_secs(5))
}

async fn body_of(response: &mut HttpResponse) -> Result<Vec<u8>, TransportError> {
    let mut buf = BytesMut::with_capacity(1 << 16);
    while response.body.read_into(&mut buf, 7).await? > 0 {}
    Ok(buf.to_vec())
}

#[tokio::test]
async fn ranged_gets_share_one_kept_alive_connection() {
    let server = scripted(|head| ranged(head, ""), false).await;
    let http = transport();
    for (first, last) in [(0, 9), (10, 35), (30, 31)] {
        let url = format!("{}/audio/x?123_sig", server.url);
        let mut response = http.get(&url, Some((first, last))).await.unwrap();
        assert_eq!(response.status, 206);
        assert_eq!(response.content_length, Some(last - first + 1));
        let expected = format!("bytes {first}-{last}/36");
        assert_eq!(response.content_range.as_deref(), Some(expected.as_str()));
        let body = body_of(&mut response).await.unwrap();
        assert_eq!(body, &CONTENT[first as usize..=last as usize]);
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_server_closes_as_it_is_reused_is_replaced_without_an_error() {
    // Each connection answers one request, then reads the next and closes without an answer:
    // the pooled connection looks alive when taken, and fails only once the request is out.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                    let _ = stream.write_all(&ranged("Range: bytes=1-4", "")).await;
                    let _ = stream.read(&mut buf).await;
                }
            });
        }
    });
    let http = transport();
    for _ in 0..3 {
        let mut response = http.get(&url, Some((1, 4))).await.unwrap();
        assert_eq!(body_of(&mut response).await.unwrap(), b"1234");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_connection_with_bytes_after_its_body_is_not_reused() {
    // The server sends bytes beyond the announced length, in the same write as its answer.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests_per_connection = Arc::new(Mutex::new(Vec::new()));
    let counts = requests_per_connection.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let index = {
                    let mut counts = counts.lock().unwrap();
                    counts.push(0);
                    counts.len() - 1
                };
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                    counts.lock().unwrap()[index] += 1;
                    let mut answer = ranged("Range: bytes=0-3", "");
                    answer.extend_from_slice(b"junk");
                    let _ = stream.write_all(&answer).await;
                }
            });
        }
    });
    let http = transport();
    for _ in 0..2 {
        let mut response = http.get(&url, Some((0, 3))).await.unwrap();
        assert_eq!(body_of(&mut response).await.unwrap(), b"0123");
    }
    assert_eq!(*requests_per_connection.lock().unwrap(), [1, 1]);
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let server = scripted(
        |head| {
            let mut out = b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n".to_vec();
            out.extend(ranged(head, ""));
            out
        },
        false,
    )
    .await;
    let http = transport();
    for _ in 0..2 {
        let mut response = http.get(&server.url, Some((2, 5))).await.unwrap();
        assert_eq!(response.status, 206);
        assert_eq!(body_of(&mut response).await.unwrap(), b"2345");
    }
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "no second GET"
    );
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let server = scripted(|head| ranged(head, "Connection: close\r\n"), false).await;
    let http = transport();
    for _ in 0..2 {
        let mut response = http.get(&server.url, Some((0, 3))).await.unwrap();
        assert_eq!(body_of(&mut response).await.unwrap(), b"0123");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    let server = scripted(
        |_| b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/36\r\nContent-Length: 10\r\n\r\n01234".to_vec(),
        true,
    )
    .await;
    let mut response = transport().get(&server.url, Some((0, 9))).await.unwrap();
    let error = body_of(&mut response).await.unwrap_err();
    assert_eq!(
        error,
        TransportError::Io("connection closed mid-body".into())
    );
}

#[tokio::test]
async fn chunked_bodies_and_redirects_are_left_to_reqwest() {
    let server = scripted(
        |head| {
            if head.starts_with("GET /moved") {
                b"HTTP/1.1 302 Found\r\nLocation: /chunked\r\nContent-Length: 0\r\n\r\n".to_vec()
            } else {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n"
                    .to_vec()
            }
        },
        false,
    )
    .await;
    let url = format!("{}/moved", server.url);
    let mut response = transport().get(&url, None).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(body_of(&mut response).await.unwrap(), b"abcdef");
}

#[tokio::test]
async fn error_statuses_come_back_with_their_retry_after() {
    let server = scripted(
        |_| b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nContent-Length: 4\r\n\r\nbusy".to_vec(),
        false,
    )
    .await;
    let response = transport().get(&server.url, Some((0, 3))).await.unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(response.retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn a_refused_connection_is_described_without_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/audio/x?999_secret",
        listener.local_addr().unwrap()
    );
    drop(listener);
    let error = transport().get(&url, None).await.err().unwrap();
    assert!(matches!(error, TransportError::Connect(_)), "{error:?}");
    let shown = error.to_string();
    assert!(shown.starts_with("connection failed"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
}

#[tokio::test]
async fn an_unreadable_answer_is_a_protocol_error() {
    let server = scripted(
        |_| b"HTTP/1.1 206 X\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd".to_vec(),
        false,
    )
    .await;
    let error = transport().get(&server.url, Some((0, 3))).await.err();
    assert!(
        matches!(&error, Some(TransportError::Protocol(reason)) if reason.contains("conflicting")),
        "{error:?}"
    );
}

#[test]
fn heads_are_parsed_strictly() {
    let message = b"HTTP/1.1 206 X\r\nContent-Length: 5\r\ncontent-range: bytes 0-4/9\r\n\r\nabc";
    let (head, length) = parse_head(message).unwrap().unwrap();
    assert_eq!(
        length,
        message.len() - 3,
        "the head ends before the body's first bytes"
    );
    assert_eq!(head.status, 206);
    assert_eq!(head.content_length, Some(5));
    assert_eq!(head.content_range.as_deref(), Some("bytes 0-4/9"));
    assert!(head.keep_alive && !head.chunked);
    assert!(parse_head(b"HTTP/1.1 206 X\r\nContent-Len")
        .unwrap()
        .is_none());
    assert!(
        parse_head(b"HTTP/1.1 200 X\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err()
    );
    assert!(parse_head(b"HTTP/1.1 200 X\r\nContent-Length: -1\r\n\r\n").is_err());
    assert!(parse_head(b"HTTP/1.1 200 X\r\nContent-Length: +5\r\n\r\n").is_err());
    let latin1_encoding = b"HTTP/1.1 200 X\r\nContent-Length: 5\r\nTransfer-Encoding: \xe9\r\n\r\n";
    let (head, _) = parse_head(latin1_encoding).unwrap().unwrap();
    assert!(
        head.chunked,
        "unreadable Transfer-Encoding is not framed by length"
    );
    assert!(parse_head(b"garbage\r\n\r\n").is_err());
    let (head, _) = parse_head(b"HTTP/1.0 200 X\r\nContent-Length: 0\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!head.keep_alive, "HTTP/1.0 closes by default");
}

#[test]
fn only_plain_http_urls_are_taken() {
    let target = Target::parse("http://[::1]:8080/audio/ab?1_x").unwrap();
    assert_eq!(target.host, "::1");
    assert_eq!(target.authority, "[::1]:8080");
    assert_eq!(target.path, "/audio/ab?1_x");
    let target = Target::parse("http://cdn.example/a").unwrap();
    assert_eq!(
        (target.port, target.authority.as_str()),
        (80, "cdn.example")
    );
    assert!(Target::parse("https://cdn.example/a").is_none());
    assert!(Target::parse("not a url").is_none());
}

fn idle_connections(http: &Http1Transport) -> usize {
    http.pool.idle.lock().unwrap().values().map(Vec::len).sum()
}

async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(2), "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn idle_connections_are_swept_without_waiting_for_traffic() {
    // The first connection is closed by the server while idle; the second grows too old, and
    // the server reports when the client closes it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hang_up = Arc::new(tokio::sync::Notify::new());
    let told = hang_up.clone();
    let (closed, mut client_closed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let (mut first, _) = listener.accept().await.unwrap();
        let _ = first.read(&mut buf).await;
        first
            .write_all(&ranged("Range: bytes=0-3", ""))
            .await
            .unwrap();
        told.notified().await;
        drop(first);
        let (mut second, _) = listener.accept().await.unwrap();
        let _ = second.read(&mut buf).await;
        second
            .write_all(&ranged("Range: bytes=0-3", ""))
            .await
            .unwrap();
        let _ = closed.send(second.read(&mut buf).await.ok());
    });
    let client = reqwest::Client::builder().build().unwrap();
    let every = Duration::from_millis(20);
    let http = Http1Transport::sweeping_every(
        ReqwestTransport::new(client),
        Duration::from_secs(5),
        every,
    );
    let mut response = http.get(&url, Some((0, 3))).await.unwrap();
    assert_eq!(body_of(&mut response).await.unwrap(), b"0123");
    assert_eq!(idle_connections(&http), 1, "kept for reuse");
    hang_up.notify_one();
    wait_for("a connection the server closed stays open", || {
        idle_connections(&http) == 0
    })
    .await;
    let mut response = http.get(&url, Some((0, 3))).await.unwrap();
    assert_eq!(body_of(&mut response).await.unwrap(), b"0123");
    for streams in http.pool.idle.lock().unwrap().values_mut() {
        for (_, since) in streams.iter_mut() {
            *since -= MAX_IDLE_TIME;
        }
    }
    let seen = tokio::time::timeout(Duration::from_secs(2), &mut client_closed).await;
    assert_eq!(
        seen.ok(),
        Some(Ok(Some(0))),
        "an expired connection stays open"
    );
}
