//! A tiny scripted origin for bad-input tests: a plain-std HTTP/1.1 server whose every answer
//! is decided by a closure, so a test can serve exactly the malformed thing it is about.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<(u64, Option<u64>)>,
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn ok(body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: 200,
            headers: vec![],
            body: body.into(),
        }
    }

    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    /// A storage-resolve answer handing out the one CDN `url`.
    pub fn resolved(url: String) -> Answer {
        use prost::Message;
        let response = trackfs::protocol::proto::storage::StorageResolveResponse {
            result: 0,
            cdnurl: vec![url],
            fileid: vec![],
        };
        Answer::ok(response.encode_to_vec())
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// An honest ranged answer over `content`.
    pub fn ranged(content: &[u8], range: Option<(u64, Option<u64>)>) -> Answer {
        let total = content.len() as u64;
        let Some((first, last)) = range else {
            return Answer::ok(content.to_vec());
        };
        if first >= total {
            return Answer::status(416).header("Content-Range", &format!("bytes */{total}"));
        }
        let last = last.unwrap_or(total - 1).min(total - 1);
        Answer {
            status: 206,
            headers: vec![(
                "Content-Range".into(),
                format!("bytes {first}-{last}/{total}"),
            )],
            body: content[first as usize..=last as usize].to_vec(),
        }
    }
}

/// Album "B" (gid 1…) by artist "A", with these track gids on its one disc, as the
/// metadata endpoint answers it.
pub fn album_b(track_gids: &[u8]) -> Answer {
    use prost::Message;
    use trackfs::protocol::proto::metadata;
    let track = |gid: &u8| metadata::Track {
        gid: Some(vec![*gid; 16]),
        ..Default::default()
    };
    let disc = metadata::Disc {
        number: Some(1),
        name: None,
        track: track_gids.iter().map(track).collect(),
    };
    let artist = metadata::Artist {
        gid: None,
        name: Some("A".into()),
    };
    let album = metadata::Album {
        gid: Some(vec![1; 16]),
        name: Some("B".into()),
        artist: vec![artist],
        disc: vec![disc],
        ..Default::default()
    };
    Answer::ok(album.encode_to_vec())
}

pub struct Liar {
    pub url: String,
    stop: Arc<AtomicBool>,
}

impl Liar {
    /// Serves on a free port; `handler` gets the server's own base URL (for the CDN URLs it
    /// hands out) and the request.
    pub fn start(handler: impl Fn(&str, &Request) -> Answer + Send + Sync + 'static) -> Liar {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let base = url.clone();
        let handler = Arc::new(move |req: &Request| handler(&base, req));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let handler = handler.clone();
                std::thread::spawn(move || serve(stream, &*handler));
            }
        });
        Liar { url, stop }
    }
}

impl Drop for Liar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve(stream: TcpStream, handler: &dyn Fn(&Request) -> Answer) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let (mut range, mut length) = (None, 0usize);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((&header, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = parse_range(value.trim()),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        let mut body = vec![0u8; length];
        let _ = reader.read_exact(&mut body);
        let answer = handler(&Request {
            method,
            path,
            range,
        });
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            answer.status,
            answer.body.len()
        );
        for (name, value) in &answer.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if writer
            .write_all(head.as_bytes())
            .and_then(|_| writer.write_all(&answer.body))
            .is_err()
        {
            return;
        }
    }
}

fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()))
}
