//! The tier's reads from the store: the stored pieces at a range's start, read on a blocking
//! thread and waited for at most [`READ_WAIT`] (issue 15: a hung disk never hangs a read).
//!
//! A read that runs out of time is abandoned, not cancelled (blocking file I/O cannot be):
//! its thread stops at its next piece, or when the disk answers. The range is then fetched
//! from below as if nothing were stored, and while an abandoned read has not returned, reads
//! do not try the disk at all: a hung disk costs one read the bound (per read in flight when
//! it hung), not every read, and ties up no more threads. The disk is tried again as soon as
//! every abandoned read has returned. Why: docs/design.md, "Disk cache", "A disk that hangs".
//!
//! Offline it is the other way round: the network cannot answer, so giving up on the disk
//! would turn stored bytes into EIO (issue 15: every cached byte reads exactly as online). A
//! read past the bound is then waited for (a spun-down disk takes seconds to wake), the
//! origin being tried again at each bound, and a slow disk is not skipped; but only up to
//! [`OFFLINE_WAIT`] in all (a hung disk never hangs a read: then it fails with EIO, as an
//! uncached range does offline), and while a read is out past its bound no other read
//! starts one: they wait for the disk to answer that one (as long), so a hung disk ties up
//! no more threads offline than online.

use super::offline::Reachability;
use super::store::{Store, BLOCK_SIZE};
use crate::client::seams::RangeRequest;
use crate::client::stats::Stats;
use bytes::BytesMut;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The longest a read waits for the stored pieces of one range (up to 8 MiB: a fraction of a
/// second even on a slow USB disk); past it the range comes from below.
pub(crate) const READ_WAIT: Duration = Duration::from_secs(2);
/// The stored bytes one `READ_WAIT` is for: a range with more stored (only a `--max-request`
/// above 8 MiB makes one) waits one bound per this much, so a slow but healthy disk keeps up.
pub(crate) const READ_WAIT_PER: u64 = 8 << 20;
/// Offline, the longest a read waits for a slow disk in all (a spun-down disk wakes in a few
/// seconds; one that takes longer is taken for hung): past it the read fails with EIO.
pub(crate) const OFFLINE_WAIT: Duration = Duration::from_secs(30);

/// A read's fate, settled by whichever side gets there first.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
/// Past its bound and still waited for (offline): counted in `late`, not yet given up on.
const LATE: u8 = 2;
const ABANDONED: u8 = 3;

/// Whether the disk answers reads: reads still out past their bound, and the one warning.
pub(crate) struct ReadGuard {
    wait: Duration,
    /// Offline, the longest a read waits in all ([`OFFLINE_WAIT`]).
    offline_wait: Duration,
    /// Reads past their bound (given up on, or waited for offline) whose threads have not
    /// returned yet: while any, the disk is skipped online, and waited for offline.
    late: Arc<AtomicU64>,
    /// Told each time such a thread returns.
    returned: Arc<Notify>,
    warned: AtomicBool,
    /// The warning that offline, reads wait for a slow disk (once a mount).
    warned_offline: AtomicBool,
    /// Bounds passed while offline (reads waited on): tests watch it.
    #[cfg(test)]
    pub(crate) waited_offline: AtomicU64,
    /// Blocking reads started: tests count them.
    #[cfg(test)]
    pub(crate) spawned: AtomicU64,
}

impl ReadGuard {
    pub(crate) fn new(wait: Duration) -> ReadGuard {
        ReadGuard {
            wait,
            offline_wait: OFFLINE_WAIT,
            late: Arc::default(),
            returned: Arc::default(),
            warned: AtomicBool::new(false),
            warned_offline: AtomicBool::new(false),
            #[cfg(test)]
            waited_offline: AtomicU64::new(0),
            #[cfg(test)]
            spawned: AtomicU64::new(0),
        }
    }

    /// The same, waiting at most `offline_wait` in all offline.
    pub(crate) fn with_offline_wait(mut self, offline_wait: Duration) -> ReadGuard {
        self.offline_wait = offline_wait;
        self
    }

    /// The bound for a read of `bytes` stored bytes: one `wait` per `READ_WAIT_PER`.
    fn bound(&self, bytes: u64) -> Duration {
        let times = bytes.div_ceil(READ_WAIT_PER).max(1);
        self.wait
            .saturating_mul(u32::try_from(times).unwrap_or(u32::MAX))
    }

    /// Whether an earlier read went past its bound and has not returned: then skip the disk
    /// (offline, [`ReadGuard::run_or_wait_offline`] waits for it instead).
    pub(crate) fn is_slow(&self) -> bool {
        self.late.load(Ordering::Acquire) > 0
    }

    /// Runs `read` on a blocking thread and gives its result, or `None` once it took longer
    /// than the bound (counted in `disk_reads_timed_out`, one warning a mount). `read` is
    /// told whether it was given up on, so it can stop early.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        stats: &Stats,
        read: impl FnOnce(&dyn Fn() -> bool) -> T + Send + 'static,
    ) -> Option<T> {
        self.run_inner(stats, None, 0, Instant::now(), read).await
    }

    /// The same for a read of at most `bytes` stored bytes (one bound per `READ_WAIT_PER`),
    /// given up on at once only while the origin can be reached: offline it is waited for
    /// (the origin being tried again at each bound) up to `OFFLINE_WAIT` in all, and while
    /// an earlier read is out past its bound, that one is waited for instead of starting
    /// another (`None` if it does not return in time, counted in `disk_misses`: for a key
    /// lookup too, though elsewhere the count is of pieces).
    pub(crate) async fn run_or_wait_offline<T: Send + 'static>(
        &self,
        stats: &Stats,
        reach: &Reachability,
        bytes: u64,
        read: impl FnOnce(&dyn Fn() -> bool) -> T + Send + 'static,
    ) -> Option<T> {
        let start = Instant::now();
        if reach.is_offline() && !self.disk_answered(reach, start).await {
            stats.disk_misses.incr();
            return None;
        }
        self.run_inner(stats, Some(reach), bytes, start, read).await
    }

    /// Offline, waits until no read is out past its bound (the disk answered them), at most
    /// until `start + offline_wait`, or until the origin is back: whether the disk answered.
    async fn disk_answered(&self, reach: &Reachability, start: Instant) -> bool {
        let deadline = start + self.offline_wait;
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            // Registered before looking, so a return in between is not missed.
            returned.as_mut().enable();
            if !self.is_slow() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if tokio::time::timeout(left.min(self.wait), returned)
                .await
                .is_err()
            {
                #[cfg(test)]
                self.waited_offline.fetch_add(1, Ordering::AcqRel);
                if reach.check().await.is_ok() {
                    // Back online: the range comes from below.
                    return false;
                }
            }
        }
    }

    async fn run_inner<T: Send + 'static>(
        &self,
        stats: &Stats,
        reach: Option<&Reachability>,
        bytes: u64,
        start: Instant,
        read: impl FnOnce(&dyn Fn() -> bool) -> T + Send + 'static,
    ) -> Option<T> {
        let fate = Arc::new(AtomicU8::new(RUNNING));
        let (theirs, late, returned) = (fate.clone(), self.late.clone(), self.returned.clone());
        #[cfg(test)]
        self.spawned.fetch_add(1, Ordering::AcqRel);
        let mut task = tokio::task::spawn_blocking(move || {
            let out = read(&|| theirs.load(Ordering::Acquire) == ABANDONED);
            if theirs.swap(DONE, Ordering::AcqRel) != RUNNING {
                // Past its bound: the disk answers again.
                late.fetch_sub(1, Ordering::AcqRel);
                returned.notify_waiters();
            }
            out
        });
        let wait = self.bound(bytes);
        if let Ok(joined) = tokio::time::timeout(wait, &mut task).await {
            return joined.ok();
        }
        // Counted before it is settled, so the thread's decrement always comes after.
        self.late.fetch_add(1, Ordering::AcqRel);
        if fate
            .compare_exchange(RUNNING, LATE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // It finished just now: its answer is as good as any. A read offline that saw
            // it counted meanwhile waits for it to return: told so, it waits no bound.
            self.late.fetch_sub(1, Ordering::AcqRel);
            self.returned.notify_waiters();
            return task.await.ok();
        }
        // Online (or back), the range comes from below. Offline the network cannot answer:
        // the disk is the only way, so it is waited for, up to `offline_wait` in all.
        let deadline = start + self.offline_wait.max(wait);
        while let Some(reach) = reach {
            if reach.check().await.is_ok() {
                break;
            }
            #[cfg(test)]
            self.waited_offline.fetch_add(1, Ordering::AcqRel);
            if !self.warned_offline.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "disk cache: the disk did not answer a read within {} s (a spun-down or \
                     hung disk?); offline, reads wait for it up to {} s",
                    wait.as_secs_f32(),
                    self.offline_wait.as_secs_f32()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Ok(joined) = tokio::time::timeout(left.min(wait), &mut task).await {
                return joined.ok();
            }
        }
        if fate
            .compare_exchange(LATE, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // It finished just now (and uncounted itself): its answer is as good as any.
            return task.await.ok();
        }
        stats.disk_reads_timed_out.incr();
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "disk cache: the disk did not answer a read within {} s (a spun-down or hung \
                 disk?); reads go on from the network (offline they fail), and the disk is \
                 tried again once it answers (disk_reads_timed_out in the stats)",
                wait.as_secs_f32()
            );
        }
        None
    }
}

/// The stored pieces at a range's start, read: their ciphertext, the file's total size
/// (`None`: nothing stored), and how many pieces (hits, counted by the caller once served).
pub(crate) type Prefix = (BytesMut, Option<u64>, u64);

/// The stored ciphertext from `request.first`'s block on, appended to `out` as far as the
/// pieces follow each other and agree on the file's size, and that size (`None`: nothing
/// stored). Stops early, with what it has, once `given_up` says so.
pub(crate) fn stored_prefix(
    store: &Store,
    request: RangeRequest,
    mut out: BytesMut,
    given_up: &dyn Fn() -> bool,
) -> Prefix {
    let mut found = None;
    let mut pieces = 0;
    for block in request.first / BLOCK_SIZE..=request.last / BLOCK_SIZE {
        if given_up() {
            break;
        }
        if !store.contains(request.file, block) {
            store.stats.disk_misses.incr();
            break;
        }
        let before = out.len();
        let Some(total) = store.read_uncounted(request.file, block, &mut out) else {
            break;
        };
        let start = block * BLOCK_SIZE;
        let got = (out.len() - before) as u64;
        let whole = start < total && got == BLOCK_SIZE.min(total - start);
        let agrees =
            found.is_none_or(|t| t == total) && request.known_total.is_none_or(|k| k == total);
        if !whole || !agrees {
            out.truncate(before);
            break;
        }
        found = Some(total);
        pieces += 1;
        if start + BLOCK_SIZE >= total {
            break;
        }
    }
    (out, found, pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_grows_with_what_is_stored_beyond_8_mib() {
        let guard = ReadGuard::new(Duration::from_secs(2));
        assert_eq!(guard.bound(0), Duration::from_secs(2));
        assert_eq!(guard.bound(READ_WAIT_PER), Duration::from_secs(2));
        assert_eq!(guard.bound(READ_WAIT_PER + 1), Duration::from_secs(4));
        assert_eq!(guard.bound(8 * READ_WAIT_PER), Duration::from_secs(16));
        assert!(guard.bound(u64::MAX) >= Duration::from_secs(1 << 30));
    }
}
