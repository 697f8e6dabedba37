//! The reader driven through the in-memory doubles: bytes against the plaintext, single
//! flight, read-ahead, the checks of the first block, and what a failing source does.

use super::*;
use crate::client::doubles::Step;
use crate::readpath::test_rig::{Rig, BLOCK};

fn unavailable() -> FetchError {
    FetchError::Status {
        url: "scripted://cdn".into(),
        status: 503,
        retry_after: None,
    }
}

#[test]
fn assemble_spans_blocks_and_slices_single_ones() {
    let blocks: Vec<Block> = [&b"abcd"[..], b"efgh", b"ij"]
        .iter()
        .map(|b| Block::from(Bytes::copy_from_slice(b)))
        .collect();
    assert_eq!(assemble(&blocks, 2, 5), Bytes::from_static(b"cdefg"));
    assert_eq!(assemble(&blocks, 0, 10), Bytes::from_static(b"abcdefghij"));
    assert_eq!(assemble(&blocks[..1], 1, 2), Bytes::from_static(b"bc"));
    assert_eq!(assemble(&blocks, 9, 5), Bytes::from_static(b"j"));
}

#[test]
fn blocks_of_one_run_are_joined_without_copying() {
    let run = Bytes::from_static(b"abcdefghij");
    let block = |at: usize, len: usize| Block {
        bytes: run.slice(at..at + len),
        run: run.clone(),
        at,
    };
    let blocks = [block(0, 4), block(4, 4), block(8, 2)];
    let joined = assemble(&blocks, 2, 7);
    assert_eq!(joined, Bytes::from_static(b"cdefghi"));
    assert_eq!(
        joined.as_ptr(),
        run[2..].as_ptr(),
        "a slice of the run, not a copy"
    );
}

#[tokio::test]
async fn every_offset_of_a_small_file_reads_its_plaintext() {
    let rig = Rig::new(&[3000]);
    let file = rig.files[0];
    let plain = rig.plain(file.id);
    for offset in 0..plain.len() as u64 + 2 {
        let got = rig.reader.read(file, offset, 7).await.unwrap();
        let from = (offset as usize).min(plain.len());
        let to = (from + 7).min(plain.len());
        assert_eq!(got, plain.slice(from..to), "offset {offset}");
    }
}

#[tokio::test]
async fn reads_across_block_edges_match_the_plaintext() {
    let rig = Rig::new(&[10 * BLOCK as usize + 123]);
    let file = rig.files[0];
    let plain = rig.plain(file.id);
    for edge in 1..=10u64 {
        for (before, len) in [(1u64, 2u64), (5, 10), (BLOCK, 2 * BLOCK + 1), (0, BLOCK)] {
            let offset = (edge * BLOCK).saturating_sub(before);
            let got = rig.reader.read(file, offset, len).await.unwrap();
            let end = (offset + len).min(plain.len() as u64) as usize;
            assert_eq!(got, plain.slice(offset as usize..end), "at {offset}+{len}");
        }
    }
}

#[tokio::test]
async fn size_is_the_stored_size_and_is_learned_once() {
    let rig = Rig::new(&[5000]);
    let file = rig.files[0];
    assert_eq!(rig.reader.known_size(file.id), None);
    assert_eq!(rig.reader.size(file).await.unwrap(), 5000);
    assert_eq!(rig.reader.known_size(file.id), Some(5000));
    let asked = rig.ranges.request_count();
    assert_eq!(rig.reader.size(file).await.unwrap(), 5000);
    assert_eq!(
        rig.ranges.request_count(),
        asked,
        "no second fetch for the size"
    );
}

#[tokio::test]
async fn a_read_past_the_end_is_empty_and_a_read_over_it_is_short() {
    let rig = Rig::new(&[2500]);
    let file = rig.files[0];
    assert!(rig.reader.read(file, 2500, 10).await.unwrap().is_empty());
    assert!(rig.reader.read(file, 9999, 10).await.unwrap().is_empty());
    assert_eq!(rig.reader.read(file, 2490, 100).await.unwrap().len(), 10);
    assert!(rig.reader.read(file, 0, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_misses_on_one_block_share_one_fetch() {
    let rig = Rig::new(&[8 * BLOCK as usize]);
    let file = rig.files[0];
    rig.reader.size(file).await.unwrap();
    let before = rig.ranges.request_count();
    rig.ranges.push(Step::Hold);
    let reads: Vec<_> = (0..8)
        .map(|i| {
            let reader = rig.reader.clone();
            tokio::spawn(async move { reader.read(file, 6 * BLOCK + i * 10, 10).await })
        })
        .collect();
    rig.settle().await;
    let covering = |at: u64| {
        let requests = rig.ranges.requests();
        requests
            .iter()
            .filter(|r| r.first <= at && at <= r.last)
            .count()
    };
    // The reads look sequential, so read-ahead may fetch the blocks after; block 6 once.
    assert_eq!(covering(6 * BLOCK), 1, "one fetch, held");
    rig.ranges.release();
    let plain = rig.plain(file.id);
    for (i, read) in reads.into_iter().enumerate() {
        let at = 6 * BLOCK as usize + i * 10;
        assert_eq!(read.await.unwrap().unwrap(), plain.slice(at..at + 10));
    }
    assert_eq!(covering(6 * BLOCK), 1);
    assert!(rig.ranges.requests()[before..]
        .iter()
        .all(|r| r.first >= 6 * BLOCK));
}

#[tokio::test]
async fn a_miss_is_fetched_once_and_then_served_from_the_cache() {
    let rig = Rig::new(&[40 * BLOCK as usize]);
    let file = rig.files[0];
    rig.reader.size(file).await.unwrap();
    let before = rig.ranges.request_count();
    rig.reader.read(file, 30 * BLOCK, 100).await.unwrap();
    rig.reader.read(file, 30 * BLOCK + 200, 100).await.unwrap();
    assert_eq!(rig.ranges.request_count(), before + 1);
    assert!(rig.stats.cache_hits.get() >= 1);
}

#[tokio::test]
async fn a_wrong_key_fails_the_read_instead_of_serving_noise() {
    let rig = Rig::new(&[4000]);
    let file = rig.files[0];
    rig.control.hand_out_wrong_key(file.id);
    let error = rig.reader.read(file, 0, 100).await.unwrap_err();
    assert!(matches!(error, FetchError::WrongKey { .. }), "{error}");
    assert_eq!(rig.stats.errors.get(), 1);
}

#[tokio::test]
async fn a_wrong_key_is_caught_by_the_head_file_too() {
    let rig = Rig::new(&[4000]);
    let file = rig.files[0];
    rig.control.add_head(file.id, 500);
    rig.control.hand_out_wrong_key(file.id);
    let error = rig.reader.read(file, 0, 100).await.unwrap_err();
    assert!(matches!(error, FetchError::WrongKey { .. }), "{error}");
}

#[tokio::test]
async fn a_failed_fetch_is_not_cached_and_the_next_read_tries_again() {
    let rig = Rig::new(&[4000]);
    let file = rig.files[0];
    rig.ranges.push(Step::Fail(unavailable()));
    rig.reader.read(file, 0, 100).await.unwrap_err();
    assert!(
        !rig.cache.contains(&(file.id, 0)),
        "failures are not cached"
    );
    let got = rig.reader.read(file, 0, 100).await.unwrap();
    assert_eq!(got, rig.plain(file.id).slice(..100));
}

#[tokio::test]
async fn a_short_answer_from_a_source_is_refused() {
    let rig = Rig::new(&[8 * BLOCK as usize]);
    let file = rig.files[0];
    rig.reader.size(file).await.unwrap();
    rig.ranges.push(Step::Short(10));
    let error = rig.reader.read(file, 5 * BLOCK, 100).await.unwrap_err();
    assert!(
        matches!(error, FetchError::WrongLength { got: 10, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn not_here_from_the_only_tier_fails_the_read() {
    let rig = Rig::new(&[4000]);
    rig.ranges.push(Step::NotHere);
    let error = rig.reader.read(rig.files[0], 0, 10).await.unwrap_err();
    assert!(matches!(error, FetchError::NotHere { .. }), "{error}");
}

#[tokio::test]
async fn a_size_that_changes_fails_the_read() {
    let rig = Rig::new(&[8 * BLOCK as usize]);
    let file = rig.files[0];
    rig.reader.size(file).await.unwrap();
    rig.ranges.push(Step::TotalIs(9 * BLOCK));
    let error = rig.reader.read(file, 6 * BLOCK, 10).await.unwrap_err();
    assert!(matches!(error, FetchError::SizeChanged { .. }), "{error}");
}
