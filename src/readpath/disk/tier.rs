//! The disk tier as a [`RangeSource`] wrapping the one below it (the CDN): a range whose
//! pieces are all on disk is answered from there with no request; otherwise the stored pieces
//! at its start are used and the rest is asked below, with the ciphertext kept on its way up
//! (copied off each piece just before the caller's transform decrypts it in place, so
//! decryption stays one pass in the CPU's cache) and written by threads of their own.
//!
//! Copies (in flight, and queued for the writers until stored) share `ROOM` bytes, and the
//! disk never holds a read up for long:
//! - A fetch takes room for its copy before it starts when there is some. When there is none
//!   but the writers are not behind (less than half the room queued), it starts anyway and
//!   takes room once its bytes have arrived: then the copies in flight are bounded by the
//!   reader's own in-flight budget, and the CDN gets the reader's full parallelism (7-8 GETs
//!   on a slow path, docs/design.md "Parallel ranges"). When the writers are behind (the disk
//!   is slower than the CDN), it waits for room before it starts: the read goes at the disk's
//!   pace, every piece is stored (offline nothing could complete a track; docs/benchmarks.md,
//!   row 8) and memory stays within the room.
//! - Every wait for room is bounded (`ROOM_WAIT`). A disk that hangs (a spun-down USB disk, a
//!   hung NFS home) costs one read that bound: then the tier stops waiting, passes on what
//!   finds no room unstored (counted in `disk_pieces_skipped`, one warning), and waits again
//!   once the writers have emptied half the room.

use super::offline::Reachability;
use super::read::{self, ReadGuard, READ_WAIT};
use super::store::{Store, BLOCK_SIZE};
use super::writers::{self, Job, Queued};
use crate::client::error::FetchError;
use crate::client::seams::{BoxFuture, Fetched, RangeRequest, RangeSource, Transform};
use crate::protocol::model::FileId;
use crate::readpath::buffers::Buffers;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Ciphertext copied aside (in flight with room, or queued for the writers), in bytes: the
/// disk tier's own memory while the disk is the slower side. Four of the reader's 2 MiB
/// runs; small because peak RSS with the tier must stay within 16 MiB of that without it
/// (issue 15; 16 MiB, or copies in flight not counted, measured +18 to +26 MiB).
const ROOM: u32 = 8 << 20;
/// The longest a read waits for room (issue 15: never an unbounded wait on the disk on the
/// read path); then what finds none is passed on unstored.
const ROOM_WAIT: Duration = Duration::from_secs(1);
/// Ranges larger than this are passed on without being stored (the reader's runs are 2 MiB;
/// only `--max-request` above it makes larger ones).
const MAX_CAPTURE: u64 = 8 << 20;
/// At most this much is allocated up front for the stored pieces of one range (a range's
/// `last` may be far past the file's end); the buffer grows if more is found.
const PREFIX_HINT: u64 = MAX_CAPTURE;
/// The longest a flush (at unmount, or between a pin's chunks) waits for the writers: a hung
/// disk must not hang an unmount. Far above what writing the whole room (8 MiB) takes on a
/// slow disk.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// The bounds above, smaller in tests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) room: u32,
    pub(crate) room_wait: Duration,
    pub(crate) read_wait: Duration,
    pub(crate) flush_wait: Duration,
    /// Offline, the longest a read waits for a slow disk in all ([`read::OFFLINE_WAIT`]).
    pub(crate) offline_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            room: ROOM,
            room_wait: ROOM_WAIT,
            read_wait: READ_WAIT,
            flush_wait: FLUSH_WAIT,
            offline_wait: read::OFFLINE_WAIT,
        }
    }
}

/// How a fetch goes about its copy.
enum Copy {
    /// Copied with its room taken.
    Room(OwnedSemaphorePermit),
    /// Copied; room is taken once the bytes are in.
    Later,
    /// Not copied: nothing is stored.
    Skip,
}

pub struct DiskTier {
    store: Arc<Store>,
    lower: Arc<dyn RangeSource>,
    reach: Arc<Reachability>,
    /// One queue per writer thread; a piece goes to `block % WRITERS`.
    jobs: Mutex<Option<Vec<mpsc::Sender<Job>>>>,
    /// Room for copies, in bytes (`Limits::room`).
    room: Arc<Semaphore>,
    /// Bytes queued for the writers, not yet stored.
    backlog: Arc<AtomicU64>,
    limits: Limits,
    /// A wait for room ran out: until half the room is free again, reads do not wait.
    stalled: AtomicBool,
    /// The skipped pieces' warning was given (once a mount).
    warned: AtomicBool,
    /// Reads from the store: bounded, and skipped while the disk does not answer.
    reads: ReadGuard,
    /// Where copies come from: recycled page-aligned buffers, so a copy costs no page faults
    /// and freed copies do not pile up in the allocator (a mount passes its pool).
    buffers: Option<Arc<Buffers>>,
    /// Tests close it to stall the writers like a hung disk.
    #[cfg(test)]
    hold: Arc<super::test_hold::Hold>,
    /// The writers' and the tidy thread's handles, which tests join (a close never does:
    /// they may be stuck on a hung disk).
    #[cfg(test)]
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Ciphertext copied off the pieces of an answer as they pass, in order from `from`: a piece
/// after a gap is not copied (nor anything after it), so nothing unseen is ever stored.
struct Capture {
    from: u64,
    /// Its length is how far every byte has been seen.
    bytes: BytesMut,
    /// The range's length: nothing past it is copied.
    limit: usize,
}

impl Capture {
    fn keep(&mut self, offset: u64, piece: &[u8]) {
        let seen_to = self.from + self.bytes.len() as u64;
        let room = self.limit.saturating_sub(self.bytes.len());
        if offset > seen_to || offset + (piece.len() as u64) <= seen_to {
            return;
        }
        let new = &piece[(seen_to - offset) as usize..];
        self.bytes.extend_from_slice(&new[..new.len().min(room)]);
    }
}

impl DiskTier {
    pub fn new(store: Arc<Store>, lower: Arc<dyn RangeSource>, reach: Arc<Reachability>) -> Self {
        #[cfg(test)]
        let hold = Arc::new(super::test_hold::Hold::default());
        let (senders, _writer_threads) = writers::spawn(
            &store,
            #[cfg(test)]
            &hold,
        );
        #[cfg(test)]
        let mut threads = _writer_threads;
        let jobs = (!senders.is_empty()).then_some(senders);
        // Settles the store's opening scan (and evicts) off the mount's way.
        let tidying = store.clone();
        let tidy = std::thread::Builder::new().name("trackfs-tidy".into());
        let tidied = tidy.spawn(move || tidying.tidy());
        if let Err(e) = &tidied {
            tracing::debug!("disk cache: no thread to settle the scan ({e}); the first write will");
        }
        #[cfg(test)]
        threads.extend(tidied.ok());
        let limits = Limits::default();
        DiskTier {
            store,
            lower,
            reach,
            jobs: Mutex::new(jobs),
            room: Arc::new(Semaphore::new(limits.room as usize)),
            backlog: Arc::default(),
            limits,
            stalled: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            reads: ReadGuard::new(limits.read_wait).with_offline_wait(limits.offline_wait),
            buffers: None,
            #[cfg(test)]
            hold,
            #[cfg(test)]
            threads: Mutex::new(threads),
        }
    }

    /// Waits until the writers (closed) and the tidy thread have ended.
    #[cfg(test)]
    pub(crate) fn join_threads(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap());
        threads.into_iter().for_each(|t| t.join().unwrap());
    }

    /// The same with other bounds (before any fetch).
    #[cfg(test)]
    pub(crate) fn with_limits(mut self, limits: Limits) -> Self {
        self.room = Arc::new(Semaphore::new(limits.room as usize));
        self.reads = ReadGuard::new(limits.read_wait).with_offline_wait(limits.offline_wait);
        self.limits = limits;
        self
    }

    /// The same, copying into buffers from `buffers`.
    pub(crate) fn with_buffers(mut self, buffers: Arc<Buffers>) -> Self {
        self.buffers = Some(buffers);
        self
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Whether a range of `len` bytes fetched now would be stored: a writer runs, writing is
    /// on, and the range is not too large.
    fn would_store(&self, len: u64) -> bool {
        let writer = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        writer && self.store.is_writable() && len <= MAX_CAPTURE
    }

    /// Room for `len` bytes if there is some now (when half the room is free, the tier is no
    /// longer stalled).
    fn room_now(&self, len: u32) -> Option<OwnedSemaphorePermit> {
        let room = self.room.clone().try_acquire_many_owned(len).ok()?;
        if self.room.available_permits() >= self.limits.room as usize / 2 {
            self.stalled.store(false, Ordering::Relaxed);
        }
        Some(room)
    }

    /// Room for `len` bytes, waiting at most `room_wait` (not at all while stalled).
    async fn room_within_bound(&self, len: u32) -> Option<OwnedSemaphorePermit> {
        if let Some(room) = self.room_now(len) {
            return Some(room);
        }
        if self.stalled.load(Ordering::Relaxed) {
            return None;
        }
        let wait = self.room.clone().acquire_many_owned(len);
        match tokio::time::timeout(self.limits.room_wait, wait).await {
            Ok(room) => room.ok(),
            Err(_) => {
                self.stalled.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    /// Before a fetch of `len` bytes: its room now if there is some; later if the writers
    /// keep up (less than half the room queued); else after a bounded wait, or not at all.
    async fn copy_before(&self, len: u64) -> Copy {
        let Some(len) = u32::try_from(len).ok().filter(|&l| l <= self.limits.room) else {
            return Copy::Skip;
        };
        if let Some(room) = self.room_now(len) {
            return Copy::Room(room);
        }
        let backlog = self.backlog.load(Ordering::Relaxed);
        if backlog < u64::from(self.limits.room / 2) {
            return Copy::Later;
        }
        match self.room_within_bound(len).await {
            Some(room) => Copy::Room(room),
            None => Copy::Skip,
        }
    }

    /// Counts `pieces` not stored for want of queue room, with one warning a mount.
    fn skipped(&self, pieces: u64) {
        self.store.stats.disk_pieces_skipped.add(pieces);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "disk cache: the disk is not keeping up (or hangs); reads go on from the network \
                 and some pieces are not stored (disk_pieces_skipped in the stats)"
            );
        }
    }

    /// Queues a piece for the writer with its share of the room.
    fn queue(&self, file: FileId, block: u64, total: u64, data: Bytes, room: OwnedSemaphorePermit) {
        if self.store.contains(file, block) {
            return;
        }
        let queued = Queued::new(&self.backlog, data.len() as u64);
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        // A writer gone (closed) drops the job, and with it its room.
        let _ = jobs.as_ref().map(|writers| {
            writers[block as usize % writers.len()].send(Job::Write {
                file,
                block,
                total,
                data,
                _room: room,
                _queued: queued,
            })
        });
    }

    /// Waits (blocking) until every piece queued so far is on disk, at most `FLUSH_WAIT`:
    /// whether it all was. Past the bound (a hung disk) it says what was not stored.
    pub fn flush(&self) -> bool {
        let (tx, rx) = mpsc::channel();
        let sent = {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let writers = jobs.as_deref().unwrap_or_default();
            // Each queue is in order: its answer comes after everything queued before it.
            writers
                .iter()
                .filter(|w| w.send(Job::Flush(tx.clone())).is_ok())
                .count()
        };
        let deadline = Instant::now() + self.limits.flush_wait;
        for _ in 0..sent {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(left) {
                tracing::warn!(
                    "disk cache: the disk did not finish writing within {} s (a hung disk?): \
                     {} bytes queued for it are not stored. Nothing is lost: the CDN still has \
                     them, and they are fetched again when read",
                    self.limits.flush_wait.as_secs_f32(),
                    self.backlog.load(Ordering::Relaxed)
                );
                return false;
            }
        }
        true
    }

    /// Writes what is queued (within the flush's bound), stops the writers and lets go of the
    /// directory's lock, so the next mount (maybe in this same process) can open it. Threads
    /// still stuck on a hung disk touch the directory no more once it answers (the store is
    /// closed: no piece placed, nothing evicted).
    pub fn close(&self) {
        self.flush();
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.store.close();
    }

    /// The stored ciphertext from `first`'s block on, as far as the pieces follow each other,
    /// and the file's total size (read on a blocking thread: after a reboot it comes from the
    /// disk itself), or nothing when the disk does not answer within the bound ([`read`]).
    /// Read into one buffer, from the pool when there is one.
    async fn stored_prefix(&self, request: RangeRequest) -> (BytesMut, Option<u64>) {
        let first = request.first / BLOCK_SIZE;
        // Offline a slow disk is still tried: the network cannot answer instead ([`read`]).
        let skip = self.reads.is_slow() && !self.reach.is_offline();
        if skip || !self.store.contains(request.file, first) {
            self.store.stats.disk_misses.incr();
            return (BytesMut::new(), None);
        }
        let store = self.store.clone();
        let last = match request.known_total {
            Some(total) => request.last.min(total.saturating_sub(1)),
            None => request.last,
        };
        let blocks = (last / BLOCK_SIZE).saturating_sub(first) + 1;
        // What the read's bound is for: the pieces stored from the first on, in a row.
        let stored = (first..first.saturating_add(blocks))
            .take_while(|b| self.store.contains(request.file, *b))
            .count() as u64;
        let len = blocks.saturating_mul(BLOCK_SIZE).min(PREFIX_HINT) as usize;
        let out = match &self.buffers {
            Some(pool) => pool.aligned(len),
            None => BytesMut::with_capacity(len),
        };
        let read =
            move |given_up: &dyn Fn() -> bool| read::stored_prefix(&store, request, out, given_up);
        let stats = &self.store.stats;
        let bytes = stored.saturating_mul(BLOCK_SIZE);
        let done = self
            .reads
            .run_or_wait_offline(stats, &self.reach, bytes, read)
            .await;
        // A read given up on served nothing: its pieces are not hits, however it ends.
        let (data, total, pieces) = done.unwrap_or_default();
        self.store.count_hits(pieces, data.len() as u64);
        (data, total)
    }

    async fn fetch_inner(
        &self,
        request: RangeRequest,
        transform: Option<Transform<'_>>,
    ) -> Result<Option<Fetched>, FetchError> {
        let (mut data, total) = self.stored_prefix(request).await;
        let block0 = request.first / BLOCK_SIZE * BLOCK_SIZE;
        let stored_to = block0 + data.len() as u64;
        let want_to = match total {
            Some(t) => request.last.saturating_add(1).min(t),
            None => request.last.saturating_add(1),
        };
        let from_disk = total.is_some();
        // Cut to what was asked: the prefix starts at its block's start.
        let skip = (request.first - block0).min(data.len() as u64) as usize;
        let _ = data.split_to(skip);
        if let Some(total) = total {
            if stored_to >= want_to {
                data.truncate(want_to.saturating_sub(request.first) as usize);
                if let Some(transform) = transform {
                    transform(request.first, &mut data);
                }
                return Ok(Some(Fetched { total, data }));
            }
        }
        // The rest comes from below, once the origin is not known to be unreachable.
        let from = match from_disk {
            false => request.first,
            true => stored_to,
        };
        self.reach.check().await?;
        let below = RangeRequest {
            file: request.file,
            first: from,
            last: request.last,
            known_total: request.known_total.or(total),
        };
        let len = (request.last - from).saturating_add(1);
        let storing = self.would_store(len);
        let copy = match storing {
            true => self.copy_before(len).await,
            false => Copy::Skip,
        };
        let (capture, room) = match copy {
            Copy::Skip => (false, None),
            Copy::Later => (true, None),
            Copy::Room(room) => (true, Some(room)),
        };
        let capture = capture.then(|| {
            let limit = len as usize;
            let bytes = match &self.buffers {
                Some(pool) => pool.aligned(limit),
                None => BytesMut::with_capacity(limit),
            };
            Mutex::new(Capture { from, bytes, limit })
        });
        let keep = |offset: u64, piece: &mut [u8]| {
            if let Some(capture) = &capture {
                let mut c = capture.lock().unwrap_or_else(|p| p.into_inner());
                c.keep(offset, piece);
            }
            if let Some(transform) = transform {
                transform(offset, piece);
            }
        };
        let fetched = match self.lower.fetch(below, Some(&keep)).await {
            Ok(Some(fetched)) => fetched,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.reach.note(&e);
                return Err(e);
            }
        };
        if let Some(capture) = capture {
            let c = capture.into_inner().unwrap_or_else(|p| p.into_inner());
            let seen = (c.bytes.len() as u64).min(fetched.data.len() as u64);
            let stored = match &self.buffers {
                Some(pool) => pool.share(c.bytes),
                None => c.bytes.freeze(),
            };
            self.keep_blocks(request.file, fetched.total, from, stored, seen, room)
                .await;
        } else if storing {
            let (_, start, end) = whole_blocks(from, fetched.data.len() as u64, fetched.total);
            self.skipped((end - start).div_ceil(BLOCK_SIZE));
        }
        if !from_disk {
            return Ok(Some(fetched));
        }
        if let Some(transform) = transform {
            transform(request.first, &mut data);
        }
        data.extend_from_slice(&fetched.data);
        Ok(Some(Fetched {
            total: fetched.total,
            data,
        }))
    }

    /// Queues every whole block among `seen` bytes of ciphertext starting at `from`, each with
    /// its share of `room` (taken now, within the bound, when there is none yet); all are
    /// skipped (and counted) when no room is found.
    async fn keep_blocks(
        &self,
        file: FileId,
        total: u64,
        from: u64,
        ciphertext: Bytes,
        seen: u64,
        room: Option<OwnedSemaphorePermit>,
    ) {
        let (first, start, end) = whole_blocks(from, seen, total);
        if start >= end {
            return;
        }
        let room = match room {
            Some(room) => Some(room),
            None => self.room_within_bound((end - start) as u32).await,
        };
        let Some(mut room) = room else {
            self.skipped((end - start).div_ceil(BLOCK_SIZE));
            return;
        };
        for block in first.. {
            let start = block * BLOCK_SIZE;
            if start >= end {
                return;
            }
            let stop = (start + BLOCK_SIZE).min(end);
            let piece = ciphertext.slice((start - from) as usize..(stop - from) as usize);
            let Some(share) = room.split(piece.len()) else {
                return;
            };
            self.queue(file, block, total, piece, share);
        }
    }
}

/// The whole pieces among `seen` bytes from `from` in a file of `total`: the first block's
/// index, and the byte span they cover (empty when there is none). A file's last piece is
/// whole when it reaches the file's end.
fn whole_blocks(from: u64, seen: u64, total: u64) -> (u64, u64, u64) {
    let first = from.div_ceil(BLOCK_SIZE);
    let start = first.saturating_mul(BLOCK_SIZE);
    let seen_to = from.saturating_add(seen).min(total);
    let end = match seen_to == total {
        true => total,
        false => seen_to / BLOCK_SIZE * BLOCK_SIZE,
    };
    (first, start, end.max(start))
}

impl RangeSource for DiskTier {
    fn fetch<'a>(
        &'a self,
        request: RangeRequest,
        transform: Option<Transform<'a>>,
    ) -> BoxFuture<'a, Result<Option<Fetched>, FetchError>> {
        Box::pin(self.fetch_inner(request, transform))
    }
}

#[cfg(test)]
#[path = "tier_tests.rs"]
mod tests;
