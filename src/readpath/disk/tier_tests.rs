use super::*;
use crate::client::doubles::{ScriptedRanges, Step};
use crate::client::stats::Stats;

const F: FileId = FileId([4; 20]);

/// A file of 2.5 blocks.
fn content() -> Bytes {
    let len = (BLOCK_SIZE * 5 / 2) as usize;
    (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into()
}

struct Rig {
    _dir: tempfile::TempDir,
    cdn: Arc<ScriptedRanges>,
    tier: DiskTier,
}

fn rig_in(dir: tempfile::TempDir) -> Rig {
    let cdn = Arc::new(ScriptedRanges::new());
    cdn.add_file(F, content());
    let store = Arc::new(Store::open(dir.path(), 1 << 30, Arc::new(Stats::default())).unwrap());
    let reach = Arc::new(Reachability::new("http://127.0.0.1:1"));
    let tier = DiskTier::new(store, cdn.clone(), reach);
    Rig {
        _dir: dir,
        cdn,
        tier,
    }
}

fn rig() -> Rig {
    rig_in(tempfile::tempdir().unwrap())
}

fn request(first: u64, last: u64) -> RangeRequest {
    RangeRequest {
        file: F,
        first,
        last,
        known_total: None,
    }
}

async fn get(tier: &DiskTier, first: u64, last: u64) -> Vec<u8> {
    let fetched = tier
        .fetch(request(first, last), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.total, content().len() as u64);
    fetched.data.to_vec()
}

fn expected(first: u64, last: u64) -> Vec<u8> {
    let c = content();
    let end = ((last + 1) as usize).min(c.len());
    c[first as usize..end].to_vec()
}

#[tokio::test]
async fn a_range_read_once_is_served_from_disk_with_no_request() {
    let r = rig();
    let whole = (0, 4 * BLOCK_SIZE - 1);
    assert_eq!(
        get(&r.tier, whole.0, whole.1).await,
        expected(whole.0, whole.1)
    );
    r.tier.flush();
    assert_eq!(r.cdn.request_count(), 1);
    for (first, last) in [whole, (10, 20), (BLOCK_SIZE - 5, BLOCK_SIZE + 5), (0, 0)] {
        assert_eq!(get(&r.tier, first, last).await, expected(first, last));
    }
    // The last, short block too, and a range past the end.
    let end = content().len() as u64;
    assert_eq!(
        get(&r.tier, end - 3, end + 100).await,
        expected(end - 3, end + 100)
    );
    assert_eq!(r.cdn.request_count(), 1);
    assert_eq!(r.tier.store().stats.disk_bytes_written.get(), end);
}

#[tokio::test]
async fn the_transform_sees_every_byte_once_and_the_disk_keeps_ciphertext() {
    let r = rig();
    let flip = |_offset: u64, piece: &mut [u8]| piece.iter_mut().for_each(|b| *b ^= 0xff);
    let flipped = |v: Vec<u8>| v.into_iter().map(|b| b ^ 0xff).collect::<Vec<_>>();
    let fetched = r.tier.fetch(request(0, BLOCK_SIZE * 3), Some(&flip)).await;
    let all = expected(0, BLOCK_SIZE * 3);
    assert_eq!(
        fetched.unwrap().unwrap().data.to_vec(),
        flipped(all.clone())
    );
    r.tier.flush();
    // From disk: ciphertext as stored, transformed once on the way out.
    let again = r.tier.fetch(request(5, BLOCK_SIZE * 2), Some(&flip)).await;
    assert_eq!(
        again.unwrap().unwrap().data.to_vec(),
        flipped(expected(5, BLOCK_SIZE * 2))
    );
    assert_eq!(get(&r.tier, 0, BLOCK_SIZE * 3).await, all);
    assert_eq!(r.cdn.request_count(), 1);
}

#[tokio::test]
async fn a_partly_stored_range_asks_only_for_the_rest() {
    let r = rig();
    get(&r.tier, 0, BLOCK_SIZE - 1).await;
    r.tier.flush();
    let flip = |_offset: u64, piece: &mut [u8]| piece.iter_mut().for_each(|b| *b ^= 0x0f);
    let got = r
        .tier
        .fetch(request(100, 2 * BLOCK_SIZE - 1), Some(&flip))
        .await;
    let want: Vec<u8> = expected(100, 2 * BLOCK_SIZE - 1)
        .iter()
        .map(|b| b ^ 0x0f)
        .collect();
    assert_eq!(got.unwrap().unwrap().data.to_vec(), want);
    let asked = r.cdn.requests();
    assert_eq!(asked.len(), 2);
    assert_eq!(
        (asked[1].first, asked[1].known_total),
        (BLOCK_SIZE, Some(content().len() as u64))
    );
}

#[tokio::test]
async fn an_unaligned_miss_stores_only_whole_blocks() {
    let r = rig();
    assert_eq!(
        get(&r.tier, 100, BLOCK_SIZE + 10).await,
        expected(100, BLOCK_SIZE + 10)
    );
    r.tier.flush();
    assert_eq!(r.tier.store().usage().bytes, 0);
    get(&r.tier, 100, 2 * BLOCK_SIZE + 10).await;
    r.tier.flush();
    assert!(r.tier.store().contains(F, 1));
    assert!(!r.tier.store().contains(F, 0) && !r.tier.store().contains(F, 2));
}

#[tokio::test]
async fn failures_below_are_passed_up_and_nothing_is_stored() {
    let r = rig();
    let error = FetchError::NotFound { url: "u".into() };
    r.cdn.push(Step::Fail(error));
    assert!(r.tier.fetch(request(0, 10), None).await.is_err());
    r.cdn.push(Step::NotHere);
    assert!(r.tier.fetch(request(0, 10), None).await.unwrap().is_none());
    r.tier.flush();
    assert_eq!(r.tier.store().usage().bytes, 0);
}

#[tokio::test]
async fn a_corrupted_stored_block_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let r = rig_in(dir);
    get(&r.tier, 0, 2 * BLOCK_SIZE - 1).await;
    r.tier.flush();
    let hex = F.to_string();
    let path = root.join("data").join(&hex[..2]).join(format!("{hex}.1"));
    let mut stored = std::fs::read(&path).unwrap();
    stored[1000] ^= 1;
    std::fs::write(&path, stored).unwrap();
    let want = expected(0, 2 * BLOCK_SIZE - 1);
    assert_eq!(get(&r.tier, 0, 2 * BLOCK_SIZE - 1).await, want);
    assert_eq!(r.tier.store().stats.disk_checksum_failures.get(), 1);
    assert_eq!(r.cdn.requests()[1].first, BLOCK_SIZE);
}

#[tokio::test]
async fn offline_an_uncached_range_fails_at_once_and_a_cached_one_reads() {
    let r = rig();
    get(&r.tier, 0, BLOCK_SIZE - 1).await;
    r.tier.flush();
    r.tier.reach.set_offline();
    assert_eq!(
        get(&r.tier, 0, BLOCK_SIZE - 1).await,
        expected(0, BLOCK_SIZE - 1)
    );
    let miss = r
        .tier
        .fetch(request(BLOCK_SIZE, 2 * BLOCK_SIZE - 1), None)
        .await;
    assert!(matches!(miss, Err(FetchError::Connect { .. })));
    assert_eq!(r.cdn.request_count(), 1);
}

#[tokio::test]
async fn closing_writes_what_is_queued_and_frees_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let r = rig_in(dir);
    get(&r.tier, 0, 3 * BLOCK_SIZE).await;
    r.tier.close();
    let again = Store::open(&root, 1 << 30, Arc::default()).unwrap();
    again.tidy();
    assert_eq!(
        again.usage().bytes,
        content().len() as u64 + 3 * super::super::block::HEADER_LEN as u64
    );
}

#[test]
fn a_capture_copies_in_order_up_to_its_range_and_stops_at_a_gap() {
    let mut c = Capture {
        from: 100,
        bytes: BytesMut::new(),
        limit: 10,
    };
    c.keep(100, b"abc");
    // Sent again (a retry from an earlier offset): only what is new is copied.
    c.keep(101, b"bcde");
    assert_eq!(&c.bytes[..], b"abcde");
    // Past a gap: not copied, and the copy stays where every byte was seen.
    c.keep(107, b"hi");
    assert_eq!(&c.bytes[..], b"abcde");
    // Past the range's end: cut.
    c.keep(105, b"fghijklm");
    assert_eq!(&c.bytes[..], b"abcdefghij");
}

#[tokio::test]
async fn with_a_buffer_pool_a_range_read_is_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig_in(dir);
    r.tier = r.tier.with_buffers(Buffers::new(8 << 20));
    let len = content().len() as u64;
    assert_eq!(get(&r.tier, 0, len - 1).await, expected(0, len - 1));
    r.tier.flush();
    let asked = r.cdn.requests().len();
    assert_eq!(get(&r.tier, 0, len - 1).await, expected(0, len - 1));
    assert_eq!(r.cdn.requests().len(), asked, "read again from disk only");
}

/// Fails (rather than hangs) a test whose reads would wait on the disk for ever.
async fn bounded<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(30), what)
        .await
        .expect("a read waited on the disk without bound")
}

fn small_limits(room: u64) -> Limits {
    Limits {
        room: room as u32,
        room_wait: std::time::Duration::from_millis(100),
        ..Limits::default()
    }
}

#[tokio::test]
async fn fetches_start_at_once_whatever_the_disk_is_doing() {
    // Eight 2 MiB runs at once, as the reader asks on a slow CDN, while the writers hang and
    // the queue has room for two runs: every fetch still reaches the CDN before any answers.
    let r = rig();
    let run = 2 << 20;
    let big: Bytes = (0..8 * run)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>()
        .into();
    r.cdn.add_file(F, big.clone());
    r.cdn.always(Step::Hold);
    let tier = Arc::new(r.tier.with_limits(small_limits(2 * run)));
    tier.hold.set(true);
    let mut reads = tokio::task::JoinSet::new();
    for n in 0..8 {
        let tier = tier.clone();
        reads.spawn(async move {
            let fetched = tier.fetch(request(n * run, (n + 1) * run - 1), None).await;
            (n, fetched.unwrap().unwrap().data)
        });
    }
    bounded(async {
        while r.cdn.request_count() < 8 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    r.cdn.release();
    while let Some(done) = bounded(reads.join_next()).await {
        let (n, data) = done.unwrap();
        assert_eq!(
            &data[..],
            &big[(n * run) as usize..((n + 1) * run) as usize]
        );
    }
    // Two runs found room; the other six were passed on unstored, and counted.
    let per_run = run / BLOCK_SIZE;
    assert_eq!(tier.store().stats.disk_pieces_skipped.get(), 6 * per_run);
    tier.hold.set(false);
    tier.flush();
    assert_eq!(tier.store().usage().files.get(&F), Some(&(2 * run)));
}

#[tokio::test]
async fn a_hung_disk_costs_one_bounded_wait_and_reads_go_on() {
    let r = rig();
    // Room for two pieces; the writers hang.
    let tier = r.tier.with_limits(small_limits(2 * BLOCK_SIZE));
    tier.hold.set(true);
    let end = content().len() as u64;
    for block in 0..3 {
        let (first, last) = (block * BLOCK_SIZE, (block + 1) * BLOCK_SIZE - 1);
        assert_eq!(
            bounded(get(&tier, first, last)).await,
            expected(first, last)
        );
    }
    // The third piece waited, found no room, and was passed on; now reads do not wait.
    assert_eq!(tier.store().stats.disk_pieces_skipped.get(), 1);
    for _ in 0..3 {
        let last = bounded(get(&tier, 2 * BLOCK_SIZE, end - 1)).await;
        assert_eq!(last, expected(2 * BLOCK_SIZE, end - 1));
    }
    assert_eq!(tier.store().stats.disk_pieces_skipped.get(), 4);
    // The disk comes back: what was queued is stored, and so is the next read's piece.
    tier.hold.set(false);
    tier.flush();
    assert!(tier.store().contains(F, 0) && tier.store().contains(F, 1));
    assert!(!tier.store().contains(F, 2));
    assert_eq!(
        bounded(get(&tier, 2 * BLOCK_SIZE, end - 1)).await,
        expected(2 * BLOCK_SIZE, end - 1)
    );
    tier.flush();
    assert!(tier.store().contains(F, 2));
    let asked = r.cdn.request_count();
    assert_eq!(get(&tier, 0, end - 1).await, expected(0, end - 1));
    assert_eq!(r.cdn.request_count(), asked, "all of it from disk now");
}

#[tokio::test]
async fn a_range_far_past_the_end_reads_what_is_stored() {
    let r = rig();
    let end = content().len() as u64;
    get(&r.tier, 0, end - 1).await;
    r.tier.flush();
    let asked = r.cdn.request_count();
    for first in [0, BLOCK_SIZE + 7, end - 1] {
        assert_eq!(
            get(&r.tier, first, u64::MAX).await,
            expected(first, end - 1)
        );
    }
    assert_eq!(r.cdn.request_count(), asked);
}

#[test]
fn whole_blocks_are_those_seen_from_start_to_end_or_to_the_file_end() {
    let b = BLOCK_SIZE;
    // Aligned and whole.
    assert_eq!(whole_blocks(0, 2 * b, 10 * b), (0, 0, 2 * b));
    // An unaligned start skips to the next block; a partial end is cut.
    assert_eq!(whole_blocks(5, 2 * b, 10 * b), (1, b, 2 * b));
    // The file's short last piece counts once the file's end is seen.
    assert_eq!(
        whole_blocks(2 * b, b / 2, 2 * b + b / 2),
        (2, 2 * b, 2 * b + b / 2)
    );
    // Nothing whole: an empty span.
    let (_, start, end) = whole_blocks(5, b, 10 * b);
    assert_eq!(start, end);
}

fn quick_flush_limits() -> Limits {
    Limits {
        flush_wait: std::time::Duration::from_millis(100),
        ..Limits::default()
    }
}

#[tokio::test]
async fn a_stored_range_on_a_hung_disk_comes_from_the_network_and_the_disk_is_skipped() {
    let r = rig();
    // The production bound: reads of a disk that answers must not run out of it here.
    let tier = r.tier;
    let end = content().len() as u64;
    get(&tier, 0, end - 1).await;
    assert!(tier.flush());
    let stats = tier.store().stats.clone();
    tier.store().read_hold.set(true);
    // Stored, but the disk does not answer: the read is given up on and asks the CDN.
    let first = (0, BLOCK_SIZE - 1);
    assert_eq!(
        bounded(get(&tier, first.0, first.1)).await,
        expected(0, BLOCK_SIZE - 1)
    );
    assert_eq!(r.cdn.request_count(), 2);
    assert_eq!(stats.disk_reads_timed_out.get(), 1);
    // While that read has not returned, reads do not try the disk (nor wait for it again).
    assert!(tier.reads.is_slow());
    let second = (BLOCK_SIZE, end - 1);
    assert_eq!(
        bounded(get(&tier, second.0, second.1)).await,
        expected(second.0, second.1)
    );
    assert_eq!(r.cdn.request_count(), 3);
    assert_eq!(stats.disk_reads_timed_out.get(), 1);
    // The disk answers again: once the abandoned read is back, reads come from disk.
    tier.store().read_hold.set(false);
    bounded(async {
        while tier.reads.is_slow() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(bounded(get(&tier, 0, end - 1)).await, expected(0, end - 1));
    assert_eq!(r.cdn.request_count(), 3, "all of it from disk again");
}

#[tokio::test]
async fn closing_on_a_hung_disk_gives_up_on_the_queue_and_frees_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let r = rig_in(dir);
    let tier = Arc::new(r.tier.with_limits(quick_flush_limits()));
    tier.hold.set(true);
    get(&tier, 0, 2 * BLOCK_SIZE - 1).await;
    let flushing = tier.clone();
    let flushed = bounded(tokio::task::spawn_blocking(move || flushing.flush())).await;
    assert!(!flushed.unwrap(), "the writers hang: not all was stored");
    let closing = tier.clone();
    bounded(tokio::task::spawn_blocking(move || closing.close()))
        .await
        .unwrap();
    // The next mount opens the directory; the pieces that were queued are not there.
    let again = Store::open(&root, 1 << 30, Arc::default()).unwrap();
    assert_eq!(again.usage().bytes, 0);
    // The disk comes back: the stuck writers end, writing nothing (the store is closed).
    tier.hold.set(false);
    tier.join_threads();
    assert!(super::super::scan::list(&root.join("data")).is_empty());
    assert_eq!(tier.store().stats.disk_bytes_written.get(), 0);
    drop(again);
}

#[tokio::test]
async fn offline_a_stored_range_waits_for_a_slow_disk_rather_than_fail() {
    let r = rig();
    let limits = Limits {
        read_wait: std::time::Duration::from_millis(20),
        ..Limits::default()
    };
    let tier = Arc::new(r.tier.with_limits(limits));
    let end = content().len() as u64;
    get(&tier, 0, end - 1).await;
    assert!(tier.flush());
    let stats = tier.store().stats.clone();
    // Online, a read of a hung disk is given up on (from the CDN), and the disk is slow.
    tier.store().read_hold.set(true);
    // Should an assertion fail, the runtime's end must not wait on the held reads for ever.
    let _open = Opens(tier.clone());
    let first = bounded(get(&tier, 0, BLOCK_SIZE - 1)).await;
    assert_eq!(first, expected(0, BLOCK_SIZE - 1));
    assert!(tier.reads.is_slow());
    assert_eq!(
        (r.cdn.request_count(), stats.disk_reads_timed_out.get()),
        (2, 1)
    );
    // Offline: the disk is still tried, and waited for past the bound (a spun-down disk
    // waking up), since the network cannot answer instead.
    tier.reach.set_offline();
    let reading = tier.clone();
    let read = tokio::spawn(async move { get(&reading, BLOCK_SIZE, end - 1).await });
    bounded(async {
        while tier.reads.waited_offline.load(Ordering::Acquire) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    tier.store().read_hold.set(false);
    let rest = bounded(read).await.expect("offline, a stored range reads");
    assert_eq!(rest, expected(BLOCK_SIZE, end - 1));
    assert_eq!(
        (r.cdn.request_count(), stats.disk_reads_timed_out.get()),
        (2, 1)
    );
    // The read given up on ends too, and its piece (served by the CDN) is no hit.
    bounded(async {
        while tier.reads.is_slow() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(stats.disk_hits.get(), 2);
    assert_eq!(stats.disk_bytes_read.get(), end - BLOCK_SIZE);
}

#[tokio::test]
async fn offline_a_hung_disk_fails_reads_after_the_cap_and_ties_up_one_thread() {
    let r = rig();
    let limits = Limits {
        read_wait: std::time::Duration::from_millis(20),
        offline_wait: std::time::Duration::from_millis(200),
        ..Limits::default()
    };
    let tier = Arc::new(r.tier.with_limits(limits));
    let end = content().len() as u64;
    get(&tier, 0, end - 1).await;
    assert!(tier.flush());
    let stats = tier.store().stats.clone();
    tier.reach.set_offline();
    tier.store().read_hold.set(true);
    let _open = Opens(tier.clone());
    // A stored range offline, the disk hung: one read goes out and is waited for.
    let reading = tier.clone();
    let first = tokio::spawn(async move { reading.fetch(request(0, end - 1), None).await });
    bounded(async {
        while !tier.reads.is_slow() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    // Later reads start no thread of their own: they wait for that one, as long.
    let later: Vec<_> = (0..3)
        .map(|_| {
            let reading = tier.clone();
            tokio::spawn(async move { reading.fetch(request(0, BLOCK_SIZE - 1), None).await })
        })
        .collect();
    // Past the cap, every read fails (EIO, as an uncached range offline), none hangs.
    let first = bounded(first).await.unwrap();
    assert!(
        matches!(first, Err(FetchError::Connect { .. })),
        "{first:?}"
    );
    for read in later {
        let read = bounded(read).await.unwrap();
        assert!(matches!(read, Err(FetchError::Connect { .. })), "{read:?}");
    }
    assert_eq!(tier.reads.spawned.load(Ordering::Acquire), 1);
    assert_eq!(stats.disk_reads_timed_out.get(), 1);
    assert_eq!(r.cdn.request_count(), 1);
    // The disk answers again: its read returns, and stored ranges read offline once more.
    tier.store().read_hold.set(false);
    bounded(async {
        while tier.reads.is_slow() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(get(&tier, 0, end - 1).await, expected(0, end - 1));
}

/// Opens the disk's read hold when dropped.
struct Opens(Arc<DiskTier>);

impl Drop for Opens {
    fn drop(&mut self) {
        self.0.store().read_hold.set(false);
    }
}
