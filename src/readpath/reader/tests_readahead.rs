//! Read-ahead, release-behind, head answers and counters, seen from what the range source
//! was asked: each block fetched once, however the kernel orders its reads.

use crate::client::doubles::Step;
use crate::client::seams::RangeRequest;
use crate::readpath::test_rig::{Rig, BLOCK};

/// Whether any byte was asked for twice.
fn overlapping(requests: &[RangeRequest]) -> bool {
    let mut ranges: Vec<_> = requests.iter().map(|r| (r.first, r.last)).collect();
    ranges.sort();
    ranges.windows(2).any(|w| w[1].0 <= w[0].1)
}

#[tokio::test]
async fn a_sequential_reader_gets_its_blocks_fetched_ahead_in_runs() {
    let blocks = 40;
    let rig = Rig::new(&[blocks * BLOCK as usize]);
    let file = rig.files[0];
    let plain = rig.plain(file.id);
    for i in 0..blocks as u64 {
        let got = rig.reader.read(file, i * BLOCK, BLOCK).await.unwrap();
        assert_eq!(
            got,
            plain.slice((i * BLOCK) as usize..((i + 1) * BLOCK) as usize)
        );
        rig.settle().await;
    }
    let requests = rig.ranges.requests();
    assert!(
        !overlapping(&requests),
        "a block fetched twice: {requests:?}"
    );
    assert!(
        requests.len() < blocks / 2,
        "{} requests for {blocks} blocks: runs were not grouped",
        requests.len()
    );
    let fetched: u64 = requests.iter().map(|r| r.last - r.first + 1).sum();
    assert!(fetched >= blocks as u64 * BLOCK);
}

#[tokio::test]
async fn out_of_order_kernel_reads_fetch_each_block_once() {
    let blocks = 32u64;
    let rig = Rig::new(&[(blocks * BLOCK) as usize]);
    let file = rig.files[0];
    let plain = rig.plain(file.id);
    // The kernel's read-ahead hands pairs of pages over in either order.
    let order: Vec<u64> = (0..blocks / 2).flat_map(|p| [2 * p + 1, 2 * p]).collect();
    for i in order {
        let got = rig.reader.read(file, i * BLOCK, BLOCK).await.unwrap();
        assert_eq!(
            got,
            plain.slice((i * BLOCK) as usize..((i + 1) * BLOCK) as usize)
        );
        rig.settle().await;
    }
    let requests = rig.ranges.requests();
    assert!(!overlapping(&requests), "{requests:?}");
    assert!(requests.len() < blocks as usize / 2, "{requests:?}");
}

#[tokio::test]
async fn a_jump_to_the_tail_and_back_resumes_the_stream() {
    let blocks = 64u64;
    let rig = Rig::new(&[(blocks * BLOCK) as usize]);
    let file = rig.files[0];
    let plain = rig.plain(file.id);
    for i in 0..8 {
        rig.reader.read(file, i * BLOCK, BLOCK).await.unwrap();
        rig.settle().await;
    }
    // A player looking for the duration reads the last block, then goes on where it was.
    let tail = rig
        .reader
        .read(file, (blocks - 1) * BLOCK, BLOCK)
        .await
        .unwrap();
    assert_eq!(tail, plain.slice(((blocks - 1) * BLOCK) as usize..));
    rig.settle().await;
    let after_jump = rig.ranges.request_count();
    let got = rig.reader.read(file, 8 * BLOCK, BLOCK).await.unwrap();
    assert_eq!(got, plain.slice((8 * BLOCK) as usize..(9 * BLOCK) as usize));
    rig.settle().await;
    let requests = rig.ranges.requests();
    assert!(
        requests[after_jump..].iter().all(|r| r.first > 8 * BLOCK),
        "block 8 was read ahead before the jump: {requests:?}"
    );
    let tail_fetches = requests.iter().filter(|r| r.last >= (blocks - 1) * BLOCK);
    assert_eq!(
        tail_fetches.count(),
        1,
        "the tail is not read ahead past the end"
    );
    assert!(!overlapping(&requests), "{requests:?}");
}

#[tokio::test]
async fn a_random_reader_is_not_read_ahead_for() {
    let rig = Rig::new(&[64 * BLOCK as usize]);
    let file = rig.files[0];
    rig.reader.size(file).await.unwrap();
    for i in [40u64, 12, 55, 30] {
        rig.reader.read(file, i * BLOCK + 100, 10).await.unwrap();
        rig.settle().await;
    }
    let requests = rig.ranges.requests();
    assert_eq!(
        requests.len(),
        5,
        "block 0 for the size, then one block per read"
    );
    assert!(requests[1..].iter().all(|r| r.last - r.first + 1 == BLOCK));
}

#[tokio::test]
async fn the_head_file_answers_the_start_while_block_zero_is_gone() {
    let rig = Rig::new(&[8 * BLOCK as usize]);
    let file = rig.files[0];
    rig.control.add_head(file.id, 2 * BLOCK as usize);
    rig.reader.read(file, 0, 10).await.unwrap();
    assert_eq!(rig.stats.head_hits.get(), 0, "the head came with block 0");
    rig.cache.release(&(file.id, 0));
    rig.ranges.always(Step::Hold);
    let got = rig.reader.read(file, 100, 200).await.unwrap();
    assert_eq!(got, rig.plain(file.id).slice(100..300));
    assert_eq!(rig.stats.head_hits.get(), 1);
    rig.ranges.release();
}

#[tokio::test]
async fn counters_move_with_hits_misses_and_fetched_bytes() {
    let rig = Rig::new(&[8 * BLOCK as usize]);
    let file = rig.files[0];
    rig.reader.read(file, 5 * BLOCK, 10).await.unwrap();
    let misses = rig.stats.cache_misses.get();
    assert!(misses >= 2, "block 0 for the size and block 5");
    let (hits, asked) = (rig.stats.cache_hits.get(), rig.ranges.request_count());
    rig.reader.read(file, 5 * BLOCK + 10, 10).await.unwrap();
    rig.settle().await;
    assert_eq!(rig.stats.cache_hits.get(), hits + 1);
    // A second read in a row is sequential: the blocks it reads ahead are the only misses.
    let requests = rig.ranges.requests();
    let ahead: u64 = requests[asked..]
        .iter()
        .map(|r| (r.last - r.first + 1).div_ceil(BLOCK))
        .sum();
    assert!(requests[asked..].iter().all(|r| r.first >= 6 * BLOCK));
    assert_eq!(rig.stats.cache_misses.get(), misses + ahead);
    let fetched: u64 = requests.iter().map(|r| r.last - r.first + 1).sum();
    assert_eq!(rig.stats.errors.get(), 0);
    assert!(fetched >= 2 * BLOCK);
}

#[tokio::test]
async fn a_small_cache_evicts_but_reads_stay_right() {
    let config = crate::readpath::test_rig::config();
    let rig = Rig::with(&[32 * BLOCK as usize], config, 4 * BLOCK);
    let file = rig.files[0];
    let plain = rig.plain(file.id);
    for i in (0..32u64).rev() {
        let got = rig.reader.read(file, i * BLOCK + 1, 20).await.unwrap();
        let at = (i * BLOCK + 1) as usize;
        assert_eq!(got, plain.slice(at..at + 20));
    }
    assert!(rig.stats.cache_evictions.get() > 0);
    assert!(
        rig.cache.bytes() <= 8 * BLOCK,
        "{} bytes held",
        rig.cache.bytes()
    );
}

#[tokio::test]
async fn files_are_kept_apart() {
    let rig = Rig::new(&[3 * BLOCK as usize, 5 * BLOCK as usize, 100]);
    for file in rig.files.clone() {
        let plain = rig.plain(file.id);
        let got = rig.reader.read(file, 0, 10 * BLOCK).await.unwrap();
        assert_eq!(got, plain);
    }
    assert_eq!(rig.reader.known_size(rig.files[2].id), Some(100));
}
