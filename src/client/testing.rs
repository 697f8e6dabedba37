//! Loopback origins for unit tests: one that never answers, one that plays a script, one
//! that routes each request to an answer, one whose answers never end.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An origin that accepts connections and never answers.
pub async fn silent_origin() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    format!("http://{addr}")
}

/// An origin that answers each connection's first request with the next of `answers`
/// (whole HTTP responses; each should say `Connection: close`), then stops.
pub async fn scripted_origin(answers: Vec<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for answer in answers {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(&answer).await;
        }
    });
    format!("http://{addr}")
}

/// A whole `Connection: close` response.
pub fn response(status: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// An origin that answers every request (one per connection, connections served at once)
/// with `answer(request head)`; answers should say `Connection: close`.
pub async fn routed_origin(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_routed(listener, answer);
    format!("http://{addr}")
}

/// `routed_origin` on a listener of the caller's (one bound late, as after a restart).
pub fn serve_routed(
    listener: TcpListener,
    answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
) {
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                if let Some(head) = read_head(&mut socket).await {
                    let _ = socket.write_all(&answer(&head)).await;
                }
            });
        }
    });
}

/// One request head from `socket`; `None` when the client left first.
async fn read_head(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// An origin that answers every request with `head` and then body bytes without end, in
/// 64 KiB writes a millisecond apart, until the client hangs up.
pub async fn endless_origin(head: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut socket).await.is_none() {
                    return;
                }
                let chunk = vec![b' '; 64 << 10];
                let mut written = socket.write_all(head.as_bytes()).await;
                while written.is_ok() {
                    written = socket.write_all(&chunk).await;
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            });
        }
    });
    format!("http://{addr}")
}
