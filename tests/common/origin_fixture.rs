//! Shared helpers for the origin tests: make a music folder with ffmpeg, publish it, start
//! `serve` in-process, and talk to it over HTTP like an independent client would.
#![allow(dead_code)]

use base64::Engine;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;
use trackfs::origin::{self, PublishOptions, RunningOrigin, ServeConfig};
use trackfs::protocol::crypto::{apply_keystream, AudioKey};
use trackfs::protocol::model::{FileId, OGG_HEADER_LEN};
use trackfs::protocol::proto::storage::StorageResolveResponse;

/// Whether `tool` runs. Missing: a clear failure when `CI` is set, else a loud skip.
pub fn have_tool(tool: &str, version_arg: &str) -> bool {
    let ok = Command::new(tool)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required by this test (CI is set) but was not found on PATH");
        }
        eprintln!("SKIPPING: {tool} not found on PATH; install it to run this test");
    }
    ok
}

pub fn have_ffmpeg() -> bool {
    have_tool("ffmpeg", "-version")
}

/// A 3-second tone (or noise for FLAC, so the file exceeds a 128 KiB head) at `path`.
pub fn make_audio(path: &Path, codec: &str, extra: &[&str]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let source = if codec == "flac" {
        "anoisesrc=d=3:c=pink:seed=7"
    } else {
        "sine=f=440:d=3"
    };
    let status = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            source,
        ])
        .args(["-c:a", codec])
        .args(extra)
        .args(["-fflags", "+bitexact"])
        .arg(path)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed for {}", path.display());
}

/// The tricky names every test folder uses: non-ASCII, quotes, colons, question marks.
pub const OGG: &str = "Björk/Début: \"Live\"?/01 Hello: \"World\"?.ogg";
pub const MP3: &str = "Björk/Début: \"Live\"?/02 What's up?.mp3";
pub const FLAC: &str = "Sigur Rós/Ágætis byrjun/1-03 Svefn-g-englar.flac";

/// Writes the three sample files under `root`.
pub fn sample_source(root: &Path) -> Vec<PathBuf> {
    let files = [
        (OGG, "libvorbis", vec!["-ac", "2", "-b:a", "320k"]),
        (MP3, "libmp3lame", vec!["-b:a", "320k"]),
        (FLAC, "flac", vec![]),
    ];
    files
        .into_iter()
        .map(|(rel, codec, extra)| {
            let path = root.join(rel);
            make_audio(&path, codec, &extra);
            path
        })
        .collect()
}

/// A started [`Fixture`], or return from the test (after the loud skip) when ffmpeg is missing.
#[allow(unused_macros)]
macro_rules! fixture {
    ($tune:expr) => {
        match Fixture::start($tune).await {
            Some(f) => f,
            None => return,
        }
    };
}

/// A published sample library and a running origin over it.
pub struct Fixture {
    pub src: TempDir,
    pub lib: TempDir,
    pub origin: RunningOrigin,
    pub http: reqwest::Client,
}

impl Fixture {
    /// `None` (after a loud skip) when ffmpeg is missing.
    pub async fn start(tune: impl FnOnce(&mut ServeConfig)) -> Option<Fixture> {
        if !have_ffmpeg() {
            return None;
        }
        let src = TempDir::new().unwrap();
        let lib = TempDir::new().unwrap();
        sample_source(src.path());
        publish(src.path(), lib.path());
        let origin = serve(lib.path(), tune).await;
        Some(Fixture {
            src,
            lib,
            origin,
            http: reqwest::Client::new(),
        })
    }

    /// A running origin over a library the test published itself.
    pub async fn over(src: TempDir, lib: TempDir) -> Fixture {
        let origin = serve(lib.path(), |_| {}).await;
        Fixture {
            src,
            lib,
            origin,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin.base_url())
    }

    /// A control-plane protobuf answer, which must be `200`.
    pub async fn get_pb<M: Message + Default>(&self, token: &str, path: &str) -> M {
        let (status, body) = self.get(token, path).await;
        assert_eq!(status, 200, "{path}");
        M::decode(body.as_slice()).unwrap()
    }

    pub fn password(&self) -> String {
        let text = std::fs::read_to_string(self.lib.path().join("credentials")).unwrap();
        let (user, password) = text.trim_end().split_once(':').unwrap();
        assert_eq!(user, "trackfs");
        password.to_string()
    }

    pub async fn token(&self) -> String {
        let basic = basic("trackfs", &self.password());
        let resp = self
            .http
            .post(self.url("/keymaster/token"))
            .header("Authorization", basic)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let json: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        json["accessToken"].as_str().unwrap().to_string()
    }

    /// GET on the control plane with a bearer token; returns (status, body).
    pub async fn get(&self, token: &str, path: &str) -> (u16, Vec<u8>) {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    pub async fn resolve(&self, token: &str, id: &FileId) -> StorageResolveResponse {
        let path = format!("/storage-resolve/files/audio/interactive/{id}");
        let (status, body) = self.get(token, &path).await;
        assert_eq!(status, 200, "{path}");
        StorageResolveResponse::decode(body.as_slice()).unwrap()
    }

    pub async fn key(&self, token: &str, id: &FileId) -> AudioKey {
        let (status, body) = self.get(token, &format!("/audiokey/{id}")).await;
        assert_eq!(status, 200);
        AudioKey::from_slice(&body).unwrap()
    }

    /// The signed CDN URL of a file (the last `cdnurl`, the origin's own).
    pub async fn cdn_url(&self, id: &FileId) -> String {
        let token = self.token().await;
        self.resolve(&token, id).await.cdnurl.pop().unwrap()
    }
}

pub fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

pub fn publish(src: &Path, lib: &Path) -> origin::PublishSummary {
    let options = PublishOptions {
        no_progress: true,
        ..Default::default()
    };
    origin::publish(src, lib, &options).unwrap()
}

pub async fn serve(lib: &Path, tune: impl FnOnce(&mut ServeConfig)) -> RunningOrigin {
    let mut config = ServeConfig::new(lib.to_path_buf());
    tune(&mut config);
    origin::start(config).await.unwrap()
}

/// SHA-1 of a source file: its file id.
pub fn file_id_of(path: &Path) -> FileId {
    use sha1::{Digest, Sha1};
    FileId(Sha1::digest(std::fs::read(path).unwrap()).into())
}

/// The stored plaintext of a source file: for Ogg a 167-byte header, then the file.
pub fn stored_plaintext(path: &Path, header: &[u8]) -> Vec<u8> {
    let mut plain = header.to_vec();
    plain.extend(std::fs::read(path).unwrap());
    plain
}

pub fn is_ogg(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "ogg")
}

/// Decrypts a stored file with its key, checks the Ogg header rules, and returns the plaintext.
pub fn decrypt_stored(cipher: &[u8], key: &AudioKey, ogg: bool) -> Vec<u8> {
    let mut plain = cipher.to_vec();
    apply_keystream(key, 0, &mut plain);
    if ogg {
        let header_len = OGG_HEADER_LEN as usize;
        assert!(
            !plain.starts_with(b"OggS"),
            "the stored Ogg header must not start with OggS"
        );
        assert_eq!(&plain[header_len..header_len + 4], b"OggS");
    }
    plain
}

/// Every file under `root` (relative path → bytes), for comparing whole trees.
pub fn snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// A picture made by ffmpeg (`.jpg` or `.png` by the name), `w`x`h` pixels of one colour.
pub fn make_picture(path: &Path, w: u32, h: u32) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("color=c=red:s={w}x{h}"))
        .args(["-frames:v", "1", "-update", "1"])
        .arg(path)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed for {}", path.display());
}

/// Copies the MP3 `audio` to `out` with `picture` embedded as its front cover.
pub fn embed_cover(audio: &Path, picture: &Path, out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(audio)
        .arg("-i")
        .arg(picture)
        .args([
            "-map",
            "0:a",
            "-map",
            "1",
            "-c",
            "copy",
            "-id3v2_version",
            "3",
        ])
        .args(["-metadata:s:v", "comment=Cover (front)"])
        .arg(out)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed for {}", out.display());
}

/// Publishes with options.
pub fn publish_with(
    src: &Path,
    lib: &Path,
    tune: impl FnOnce(&mut PublishOptions),
) -> Result<origin::PublishSummary, origin::publish::PublishError> {
    let mut options = PublishOptions {
        no_progress: true,
        ..Default::default()
    };
    tune(&mut options);
    origin::publish(src, lib, &options)
}
