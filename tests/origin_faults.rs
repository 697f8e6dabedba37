//! Faults on demand (`--fault-rate`, `--fault-kinds`, `--stall`, `--seed`): each kind does what
//! its name says, only on CDN requests, and a seed gives the same sequence every time.

#[macro_use]
#[path = "common/origin_fixture.rs"]
mod fixture;

use fixture::*;
use std::time::{Duration, Instant};
use trackfs::origin::{FaultConfig, FaultKind, ServeConfig};
use trackfs::protocol::crypto::apply_keystream;

const STALL: Duration = Duration::from_millis(300);
const FIRST: u64 = 1000;
const LEN: u64 = 300_000;

fn faults(kinds: &[FaultKind], rate: f64, seed: u64) -> impl FnOnce(&mut ServeConfig) {
    let kinds = kinds.to_vec();
    move |c: &mut ServeConfig| {
        c.faults = FaultConfig {
            rate,
            kinds,
            stall: STALL,
            seed,
        }
    }
}

/// What one ranged GET of the FLAC file (400 KB of noise) looked like, in a word.
async fn outcome(http: &reqwest::Client, url: &str) -> String {
    let range = format!("bytes={FIRST}-{}", FIRST + LEN - 1);
    let resp = http.get(url).header("Range", range).send().await.unwrap();
    let status = resp.status().as_u16();
    let declared = resp.content_length();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.bytes()).await;
    let body = match body {
        Err(_) => return format!("{status} hang"),
        Ok(Err(_)) => return format!("{status} broken"),
        Ok(Ok(body)) => body,
    };
    match declared {
        Some(n) if n != body.len() as u64 => format!("{status} short"),
        _ => format!("{status} {}", body.len()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_kind_does_what_it_says() {
    let Some(base) = Fixture::start(|_| {}).await else {
        return;
    };
    let id = file_id_of(&base.src.path().join(FLAC));
    let token = base.token().await;
    let key = base.key(&token, &id).await;
    let plain = decrypt_stored(
        &std::fs::read(base.lib.path().join("audio").join(id.to_hex())).unwrap(),
        &key,
        false,
    );
    let http = reqwest::Client::new();
    for kind in FaultKind::ALL {
        let origin = serve(base.lib.path(), faults(&[kind], 1.0, 0)).await;
        let path_and_query = base.cdn_url(&id).await;
        let path_and_query = path_and_query.split_once("/audio/").unwrap().1;
        let url = format!("{}/audio/{path_and_query}", origin.base_url());
        let started = Instant::now();
        let got = outcome(&http, &url).await;
        let expected = match kind {
            FaultKind::Status500 => "500 21",
            FaultKind::Status503 => "503 19",
            FaultKind::Expired => "403 9",
            FaultKind::IgnoreRange => &format!("200 {}", plain.len()),
            FaultKind::Stall => &format!("206 {LEN}"),
            FaultKind::Reset | FaultKind::Truncate => "206 broken|206 short",
        };
        assert!(
            expected.split('|').any(|e| e == got),
            "{}: got {got:?}, want {expected:?}",
            kind.name()
        );
        if kind == FaultKind::Stall {
            assert!(
                started.elapsed() >= STALL,
                "stall took {:?}",
                started.elapsed()
            );
        }
        if kind == FaultKind::IgnoreRange {
            let resp = http
                .get(&url)
                .header("Range", "bytes=5-9")
                .send()
                .await
                .unwrap();
            let mut body = resp.bytes().await.unwrap().to_vec();
            apply_keystream(&key, 0, &mut body);
            assert!(
                body == plain,
                "ignore-range sends the whole file from byte 0"
            );
        }
        origin.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_before_and_in_the_body_still_deliver_the_right_bytes() {
    let f = fixture!(faults(&[FaultKind::Stall], 1.0, 3));
    let id = file_id_of(&f.src.path().join(FLAC));
    let token = f.token().await;
    let key = f.key(&token, &id).await;
    let url = f.cdn_url(&id).await;
    let whole = std::fs::read(f.lib.path().join("audio").join(id.to_hex())).unwrap();
    let plain = decrypt_stored(&whole, &key, false);
    for _ in 0..4 {
        let started = Instant::now();
        let range = format!("bytes={FIRST}-{}", FIRST + LEN - 1);
        let resp = f
            .http
            .get(&url)
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206);
        let mut body = resp.bytes().await.unwrap().to_vec();
        assert!(started.elapsed() >= STALL);
        apply_keystream(&key, FIRST, &mut body);
        assert!(body[..] == plain[FIRST as usize..(FIRST + LEN) as usize]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_only_touch_the_cdn() {
    let f = fixture!(faults(&FaultKind::ALL, 1.0, 0));
    let id = file_id_of(&f.src.path().join(OGG));
    let token = f.token().await;
    for path in [
        "/library".to_string(),
        format!("/audiokey/{id}"),
        format!("/head/{id}"),
    ] {
        assert_eq!(f.get(&token, &path).await.0, 200, "{path}");
    }
    let url = f.cdn_url(&id).await;
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..10 {
            let resp = f
                .http
                .get(&url)
                .header("Range", "bytes=0-99")
                .send()
                .await
                .unwrap();
            out.push(resp.status().as_u16());
        }
        out
    };
    assert!(
        statuses.iter().any(|s| *s != 206),
        "rate 1.0 must fault: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_gives_the_same_faults_every_time() {
    let Some(base) = Fixture::start(|_| {}).await else {
        return;
    };
    let id = file_id_of(&base.src.path().join(FLAC));
    let query = base
        .cdn_url(&id)
        .await
        .split_once('?')
        .unwrap()
        .1
        .to_string();
    let http = reqwest::Client::new();
    let mut runs = Vec::new();
    for seed in [7, 7, 8] {
        let kinds = [
            FaultKind::Status500,
            FaultKind::Status503,
            FaultKind::Reset,
            FaultKind::Truncate,
            FaultKind::IgnoreRange,
            FaultKind::Expired,
        ];
        let origin = serve(base.lib.path(), faults(&kinds, 0.5, seed)).await;
        let url = format!("{}/audio/{id}?{query}", origin.base_url());
        let mut run = Vec::new();
        for _ in 0..30 {
            run.push(outcome(&http, &url).await);
        }
        runs.push(run);
        origin.shutdown().await.unwrap();
    }
    assert_eq!(runs[0], runs[1], "same seed, same faults");
    assert_ne!(runs[0], runs[2], "another seed, other faults");
    let faulty = runs[0]
        .iter()
        .filter(|o| **o != format!("206 {LEN}"))
        .count();
    assert!(
        (5..=25).contains(&faulty),
        "{faulty} of 30 at rate 0.5: {:?}",
        runs[0]
    );
}
