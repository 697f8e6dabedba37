//! `trackfs serve` over HTTP, rule by rule (docs/protocol.md): tokens, 401s, 404s, the catalogue,
//! storage-resolve, keys, head files, and CDN ranges (206/416/403) decrypting to the source.

#[macro_use]
#[path = "common/origin_fixture.rs"]
mod fixture;

use fixture::*;
use prost::Message;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use trackfs::protocol::crypto::apply_keystream;
use trackfs::protocol::model::{self, AudioFormat, FileId, OGG_HEADER_LEN};
use trackfs::protocol::proto::library::Library;
use trackfs::protocol::proto::metadata as pb;

/// One published track: its metadata, source file and stored plaintext (checked against the
/// source: for Ogg, a 167-byte header then the source bytes).
struct Published {
    track: model::Track,
    album: model::Album,
    source: PathBuf,
    plain: Vec<u8>,
}

/// Walks token → library → albums → tracks → storage-resolve → key → whole-file CDN GET.
async fn catalogue(f: &Fixture) -> Vec<Published> {
    let token = f.token().await;
    let (status, body) = f.get(&token, "/library").await;
    assert_eq!(status, 200);
    let library = Library::decode(body.as_slice()).unwrap();
    let mut out = Vec::new();
    for gid in library.album_gid {
        let (status, body) = f
            .get(&token, &format!("/metadata/4/album/{}", hex::encode(&gid)))
            .await;
        assert_eq!(status, 200);
        let album = model::Album::try_from(pb::Album::decode(body.as_slice()).unwrap()).unwrap();
        for track_id in album.discs.iter().flat_map(|d| d.tracks.clone()) {
            let (status, body) = f
                .get(&token, &format!("/metadata/4/track/{track_id}"))
                .await;
            assert_eq!(status, 200);
            let track =
                model::Track::try_from(pb::Track::decode(body.as_slice()).unwrap()).unwrap();
            let file = track.files[0].id;
            let source = find_source(f, &file);
            let key = f.key(&token, &file).await;
            let url = f.resolve(&token, &file).await.cdnurl.pop().unwrap();
            let resp = f.http.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "no Range: the whole file");
            let ogg = is_ogg(&source);
            let plain = decrypt_stored(&resp.bytes().await.unwrap(), &key, ogg);
            let header = if ogg { OGG_HEADER_LEN as usize } else { 0 };
            assert!(
                plain[header..] == std::fs::read(&source).unwrap()[..],
                "{source:?}"
            );
            out.push(Published {
                track,
                album: album.clone(),
                source,
                plain,
            });
        }
    }
    out
}

fn find_source(f: &Fixture, id: &FileId) -> PathBuf {
    [OGG, MP3, FLAC]
        .iter()
        .map(|rel| f.src.path().join(rel))
        .find(|p| file_id_of(p) == *id)
        .unwrap_or_else(|| panic!("file id {id} is no source file's SHA-1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_needs_the_library_credentials() {
    let f = fixture!(|_| {});
    let post = |auth: Option<String>| {
        let mut req = f.http.post(f.url("/keymaster/token"));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        req.send()
    };
    let resp = post(Some(basic("trackfs", &f.password()))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert!(!json["accessToken"].as_str().unwrap().is_empty());
    assert_eq!(json["tokenType"], "Bearer");
    assert_eq!(json["expiresIn"], 3600);
    for bad in [
        Some(basic("trackfs", "wrong")),
        Some(basic("someone", &f.password())),
        Some("Basic !!!".to_string()),
        Some(format!("Bearer {}", f.token().await)),
        None,
    ] {
        assert_eq!(post(bad.clone()).await.unwrap().status(), 401, "{bad:?}");
    }
    let get = f.http.get(f.url("/keymaster/token")).send().await.unwrap();
    assert_eq!(get.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_needs_a_valid_bearer_token() {
    let f = fixture!(|_| {});
    let published = catalogue(&f).await;
    let p = &published[0];
    let file = p.track.files[0].id;
    let paths = [
        "/library".to_string(),
        format!("/metadata/4/album/{}", p.album.id),
        format!("/metadata/4/track/{}", p.track.id),
        format!("/storage-resolve/files/audio/interactive/{file}"),
        format!("/audiokey/{file}"),
    ];
    let token = f.token().await;
    for path in &paths {
        let url = f.url(path);
        let none = f.http.get(&url).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path} without a token");
        assert!(none.headers().contains_key("www-authenticate"));
        let wrong = f.http.get(&url).bearer_auth("0.0.0").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let forged = f
            .http
            .get(&url)
            .bearer_auth(format!("{token}0"))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 401, "{path} with a forged token");
        let basic = basic("trackfs", &f.password());
        let creds = f
            .http
            .get(&url)
            .header("Authorization", basic)
            .send()
            .await
            .unwrap();
        assert_eq!(creds.status(), 401, "{path} with Basic credentials");
        assert_eq!(f.get(&token, path).await.0, 200, "{path} with a token");
    }
    let (status, key) = f.get(&token, &format!("/audiokey/{file}")).await;
    assert_eq!((status, key.len()), (200, 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_get_401() {
    let f = fixture!(|c| c.token_ttl = Duration::from_secs(1));
    let resp = f
        .http
        .post(f.url("/keymaster/token"))
        .header("Authorization", basic("trackfs", &f.password()))
        .send()
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(json["expiresIn"], 1);
    let token = json["accessToken"].as_str().unwrap().to_string();
    assert_eq!(f.get(&token, "/library").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(f.get(&token, "/library").await.0, 401, "expired token");
    assert_eq!(
        f.get(&f.token().await, "/library").await.0,
        200,
        "renewed token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_has_names_formats_and_ids_from_the_sources() {
    let f = fixture!(|_| {});
    let published = catalogue(&f).await;
    assert_eq!(published.len(), 3);
    let by_title = |t: &str| {
        published
            .iter()
            .find(|p| p.track.name == t)
            .unwrap_or_else(|| panic!("no track named {t:?}"))
    };
    let ogg = by_title("Hello: \"World\"?");
    assert_eq!(ogg.track.files[0].format, AudioFormat::OggVorbis320);
    assert_eq!((ogg.track.number, ogg.track.disc_number), (1, 1));
    assert_eq!(ogg.track.artists, ["Björk"]);
    assert_eq!(ogg.album.name, "Début: \"Live\"?");
    assert_eq!(ogg.album.artists, ["Björk"]);
    let mp3 = by_title("What's up?");
    assert_eq!(mp3.track.files[0].format, AudioFormat::Mp3_320);
    assert_eq!(mp3.album.id, ogg.album.id, "same folder, same album");
    assert_eq!(mp3.album.discs[0].tracks, [ogg.track.id, mp3.track.id]);
    let flac = by_title("Svefn-g-englar");
    assert_eq!(flac.track.files[0].format, AudioFormat::Flac);
    assert_eq!((flac.track.number, flac.track.disc_number), (3, 1));
    assert_eq!(flac.album.name, "Ágætis byrjun");
    for p in &published {
        assert_eq!(p.track.files[0].id, file_id_of(&p.source));
        assert!(
            p.track.duration_ms.abs_diff(3000) < 200,
            "{}",
            p.track.duration_ms
        );
        let date = p.album.date.expect("albums are dated");
        assert!(
            date.year >= 2024,
            "untagged albums carry their first publish date"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_ids_get_404() {
    let f = fixture!(|_| {});
    let token = f.token().await;
    let gid = "0123456789abcdef".repeat(2);
    let fid = format!("{gid}01234567");
    let bad_ids = [
        gid.to_uppercase(),
        "..%2F..%2Fkeys".to_string(),
        "..".to_string(),
        "abc".to_string(),
        format!("{gid}00"),
        "%ff%fe".to_string(),
    ];
    for prefix in ["/metadata/4/album/", "/metadata/4/track/"] {
        assert_eq!(f.get(&token, &format!("{prefix}{gid}")).await.0, 404);
        for bad in &bad_ids {
            assert_eq!(
                f.get(&token, &format!("{prefix}{bad}")).await.0,
                404,
                "{prefix}{bad}"
            );
        }
    }
    for prefix in [
        "/storage-resolve/files/audio/interactive/",
        "/audiokey/",
        "/head/",
        "/audio/",
    ] {
        if prefix != "/audio/" {
            assert_eq!(
                f.get(&token, &format!("{prefix}{fid}")).await.0,
                404,
                "{prefix}"
            );
        }
        for bad in bad_ids
            .iter()
            .chain([&fid.to_uppercase(), &format!("{fid}.pb")])
        {
            let path = format!("{prefix}{bad}?1_00");
            assert_eq!(f.get(&token, &path).await.0, 404, "{path}");
        }
    }
    assert_eq!(f.get(&token, "/nothing/here").await.0, 404);
}

/// Checks one ranged GET: status, `Content-Range`, and the decrypted bytes.
async fn check_range(
    f: &Fixture,
    url: &str,
    p: &Published,
    key: &trackfs::protocol::crypto::AudioKey,
    range: &str,
) {
    let total = p.plain.len() as u64;
    let resp = f.http.get(url).header("Range", range).send().await.unwrap();
    let (first, last) = expected_range(range, total);
    assert_eq!(resp.status(), 206, "{range}");
    let content_range = resp.headers()["content-range"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        content_range,
        format!("bytes {first}-{last}/{total}"),
        "{range}"
    );
    let mut body = resp.bytes().await.unwrap().to_vec();
    apply_keystream(key, first, &mut body);
    assert!(
        body[..] == p.plain[first as usize..=last as usize],
        "{range} decrypts wrong"
    );
}

fn expected_range(range: &str, total: u64) -> (u64, u64) {
    let spec = range.strip_prefix("bytes=").unwrap();
    let (a, b) = spec.split_once('-').unwrap();
    match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(a), Some(b)) => (a, b.min(total - 1)),
        (Some(a), None) => (a, total - 1),
        (None, Some(n)) => (total.saturating_sub(n), total - 1),
        (None, None) => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_ranges_decrypt_to_the_source() {
    let f = fixture!(|_| {});
    let token = f.token().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for p in catalogue(&f).await {
        let file = p.track.files[0].id;
        let key = f.key(&token, &file).await;
        let url = f.resolve(&token, &file).await.cdnurl.pop().unwrap();
        let total = p.plain.len() as u64;
        let mut ranges: Vec<String> = [
            "bytes=0-0",
            "bytes=0-15",
            "bytes=1-16",
            "bytes=15-17",
            "bytes=166-168",
            "bytes=167-200",
            "bytes=-1",
            "bytes=-17",
            "bytes=100-",
        ]
        .map(String::from)
        .to_vec();
        ranges.push(format!("bytes={}-{}", total - 10, total + 1000));
        ranges.push(format!("bytes=-{}", total + 5));
        for _ in 0..20 {
            let a = rng.gen_range(0..total);
            let b = rng.gen_range(a..total);
            ranges.push(format!("bytes={a}-{b}"));
        }
        for range in &ranges {
            check_range(&f, &url, &p, &key, range).await;
        }
        for start in [total, total + 1, total + 1_000_000] {
            for range in [
                format!("bytes={start}-"),
                format!("bytes={start}-{}", start + 10),
            ] {
                let resp = f
                    .http
                    .get(&url)
                    .header("Range", &range)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 416, "{range}");
                assert_eq!(
                    resp.headers()["content-range"],
                    format!("bytes */{total}").as_str()
                );
            }
        }
        // The origin sends no validators, so no If-Range matches: the whole file.
        let resp = f
            .http
            .get(&url)
            .header("Range", "bytes=0-9")
            .header("If-Range", "\"v1\"")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap().len() as u64, total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_urls_are_signed_and_expire() {
    let f = fixture!(|c| c.url_ttl = Duration::from_secs(2));
    let token = f.token().await;
    let published = catalogue(&f).await;
    let (a, b) = (
        published[0].track.files[0].id,
        published[1].track.files[0].id,
    );
    let url = f.resolve(&token, &a).await.cdnurl.pop().unwrap();
    let other = f.resolve(&token, &b).await.cdnurl.pop().unwrap();
    let status = |u: String| {
        let req = f.http.get(u).header("Range", "bytes=0-9");
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(url.clone()).await, 206);
    let (base, query) = url.split_once('?').unwrap();
    let (expiry, sig) = query.split_once('_').unwrap();
    let flipped = if sig.ends_with('0') { "1" } else { "0" };
    let tampered = format!("{base}?{expiry}_{}{flipped}", &sig[..sig.len() - 1]);
    assert_eq!(status(tampered).await, 403, "tampered signature");
    assert_eq!(status(base.to_string()).await, 403, "no signature");
    let later: u64 = expiry.parse::<u64>().unwrap() + 3600;
    assert_eq!(
        status(format!("{base}?{later}_{sig}")).await,
        403,
        "moved expiry"
    );
    let other_query = other.split_once('?').unwrap().1;
    assert_eq!(
        status(format!("{base}?{other_query}")).await,
        403,
        "another file's signature"
    );
    let expiry_secs: u64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let wait = Duration::from_secs(expiry_secs).saturating_sub(now) + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
    assert_eq!(status(url).await, 403, "expired URL");
    let fresh = f.resolve(&f.token().await, &a).await.cdnurl.pop().unwrap();
    assert_eq!(status(fresh).await, 206, "re-resolved URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_files_are_the_plaintext_prefix() {
    let f = fixture!(|_| {});
    let published = catalogue(&f).await;
    let mut truncated = 0;
    for p in &published {
        let id = p.track.files[0].id;
        let resp = f
            .http
            .get(f.url(&format!("/head/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "head files need no token");
        let head = resp.bytes().await.unwrap();
        assert!(head.len() >= 64 * 1024 || head.len() == p.plain.len());
        assert!(head[..] == p.plain[..head.len()], "{:?}", p.source);
        truncated += usize::from(head.len() < p.plain.len());
    }
    assert!(truncated > 0, "the FLAC noise file is longer than its head");
    let off = serve(f.lib.path(), |c| c.head_files = false).await;
    let id = published[0].track.files[0].id;
    let resp = f
        .http
        .get(format!("{}/head/{id}", off.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "head files switched off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_resolve_lists_extra_and_external_cdns() {
    let f = fixture!(|c| {
        c.extra_cdn_urls = vec!["http://127.0.0.1:9/".into()];
        c.cdn_base = Some("http://cdn.example:8080".into());
    });
    let token = f.token().await;
    let id = file_id_of(&f.src.path().join(OGG));
    let answer = f.resolve(&token, &id).await;
    assert_eq!(answer.result, 0, "CDN");
    assert_eq!(answer.fileid, id.0);
    assert_eq!(answer.cdnurl.len(), 2);
    let dead = answer.cdnurl[0].strip_prefix(&format!("http://127.0.0.1:9/audio/{id}?"));
    let cdn = answer.cdnurl[1].strip_prefix(&format!("http://cdn.example:8080/audio/{id}?"));
    let (dead, cdn) = (dead.unwrap(), cdn.unwrap());
    assert_eq!(dead, cdn, "one signature for every base");
    let own = format!("{}/audio/{id}?{cdn}", f.origin.base_url());
    let resp = f
        .http
        .get(own)
        .header("Range", "bytes=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        206,
        "the origin accepts its own signature on any base"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_range_requests() {
    let f = fixture!(|_| {});
    let token = f.token().await;
    let published = catalogue(&f).await;
    let mut jobs = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    for (i, p) in published.iter().cycle().take(48).enumerate() {
        let id = p.track.files[0].id;
        let (key, url) = (
            f.key(&token, &id).await,
            f.resolve(&token, &id).await.cdnurl.pop().unwrap(),
        );
        let total = p.plain.len() as u64;
        let a = rng.gen_range(0..total);
        let b = rng.gen_range(a..total.min(a + 70_000));
        let http = f.http.clone();
        let expected = p.plain[a as usize..=b as usize].to_vec();
        jobs.push(tokio::spawn(async move {
            let resp = http
                .get(url)
                .header("Range", format!("bytes={a}-{b}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 206);
            let mut body = resp.bytes().await.unwrap().to_vec();
            apply_keystream(&key, a, &mut body);
            assert!(body == expected, "request {i}");
        }));
    }
    for job in jobs {
        job.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_applies_to_every_request() {
    let f = fixture!(|c| c.latency = Duration::from_millis(150));
    let started = Instant::now();
    let token = f.token().await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    for path in ["/library", "/head/00", "/nothing"] {
        let started = Instant::now();
        f.get(&token, path).await;
        assert!(started.elapsed() >= Duration::from_millis(150), "{path}");
    }
}
