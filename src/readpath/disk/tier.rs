//! The disk tier as a [`RangeSource`] wrapping the one below it (the CDN): a range whose
//! pieces are all on disk is answered from there with no request; otherwise the stored pieces
//! at its start are used and the rest is asked below, with the ciphertext kept on its way up
//! (copied off each piece just before the caller's transform decrypts it in place, so
//! decryption stays one pass in the CPU's cache) and written by a thread of its own: a read
//! never waits for a disk write, and a write queue that grows past a bound drops pieces
//! rather than memory.

use super::offline::Reachability;
use super::store::{Store, BLOCK_SIZE};
use crate::client::error::FetchError;
use crate::client::seams::{BoxFuture, Fetched, RangeRequest, RangeSource, Transform};
use crate::protocol::model::FileId;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Pieces waiting for the writer, in bytes; past this, new pieces are not stored.
const MAX_QUEUED: u64 = 64 << 20;
/// Ranges larger than this are passed on without being stored (the reader's runs are 2 MiB).
const MAX_CAPTURE: u64 = 16 << 20;

enum Job {
    Write {
        file: FileId,
        block: u64,
        total: u64,
        data: Bytes,
    },
    Flush(mpsc::Sender<()>),
}

pub struct DiskTier {
    store: Arc<Store>,
    lower: Arc<dyn RangeSource>,
    reach: Arc<Reachability>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    queued: Arc<AtomicU64>,
}

/// Stored ciphertext copied off the pieces of an answer as they pass, and how far from the
/// start every byte has been seen (pieces out of order stop the count: what follows is not
/// stored, never stored unseen).
struct Capture {
    from: u64,
    bytes: Vec<u8>,
    seen_to: u64,
}

impl DiskTier {
    pub fn new(store: Arc<Store>, lower: Arc<dyn RangeSource>, reach: Arc<Reachability>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicU64::new(0));
        let (writer_store, writer_queued) = (store.clone(), queued.clone());
        let spawned = std::thread::Builder::new()
            .name("trackfs-disk".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Write {
                            file,
                            block,
                            total,
                            data,
                        } => {
                            writer_store.write(file, block, total, &data);
                            writer_queued.fetch_sub(data.len() as u64, Ordering::Relaxed);
                        }
                        Job::Flush(done) => drop(done.send(())),
                    }
                }
            });
        let jobs = match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!("disk cache: no writer thread ({e}); nothing new will be stored");
                None
            }
        };
        DiskTier {
            store,
            lower,
            reach,
            jobs: Mutex::new(jobs),
            queued,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn queue(&self, file: FileId, block: u64, total: u64, data: Bytes) {
        let len = data.len() as u64;
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return;
        }
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let sent = jobs.as_ref().map(|tx| {
            tx.send(Job::Write {
                file,
                block,
                total,
                data,
            })
        });
        if !matches!(sent, Some(Ok(()))) {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// Waits (blocking) until every piece queued so far is on disk.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        let sent = {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.as_ref().map(|j| j.send(Job::Flush(tx)).is_ok())
        };
        if sent == Some(true) {
            let _ = rx.recv();
        }
    }

    /// Writes what is queued, stops the writer and lets go of the directory's lock, so the
    /// next mount (maybe in this same process) can open it.
    pub fn close(&self) {
        self.flush();
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.store.close();
    }

    /// The stored pieces from `first`'s block on, as long as they follow each other (read on
    /// a blocking thread: after a reboot they come from the disk itself).
    async fn stored_prefix(&self, request: RangeRequest) -> Vec<(Bytes, u64)> {
        if !self
            .store
            .contains(request.file, request.first / BLOCK_SIZE)
        {
            self.store.stats.disk_misses.incr();
            return Vec::new();
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || stored_prefix(&store, request))
            .await
            .unwrap_or_default()
    }

    async fn fetch_inner(
        &self,
        request: RangeRequest,
        transform: Option<Transform<'_>>,
    ) -> Result<Option<Fetched>, FetchError> {
        let prefix = self.stored_prefix(request).await;
        let total = prefix.first().map(|(_, t)| *t);
        let block0 = request.first / BLOCK_SIZE * BLOCK_SIZE;
        let stored_to = block0 + prefix.iter().map(|(b, _)| b.len() as u64).sum::<u64>();
        let want_to = match total {
            Some(t) => (request.last + 1).min(t),
            None => request.last + 1,
        };
        let mut data = BytesMut::new();
        for (bytes, _) in &prefix {
            data.extend_from_slice(bytes);
        }
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
        let from = match prefix.is_empty() {
            true => request.first,
            false => stored_to,
        };
        self.reach.check().await?;
        let below = RangeRequest {
            file: request.file,
            first: from,
            last: request.last,
            known_total: request.known_total.or(total),
        };
        let capture = (request.last - from < MAX_CAPTURE).then(|| {
            Mutex::new(Capture {
                from,
                bytes: vec![0; (request.last - from + 1) as usize],
                seen_to: from,
            })
        });
        let keep = |offset: u64, piece: &mut [u8]| {
            if let Some(capture) = &capture {
                let mut c = capture.lock().unwrap_or_else(|p| p.into_inner());
                let at = offset.saturating_sub(c.from) as usize;
                let end = at + piece.len();
                if offset >= c.from && end <= c.bytes.len() {
                    c.bytes[at..end].copy_from_slice(piece);
                    if offset <= c.seen_to {
                        c.seen_to = c.seen_to.max(offset + piece.len() as u64);
                    }
                }
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
            let seen = (c.seen_to - from).min(fetched.data.len() as u64);
            self.keep_blocks(
                request.file,
                fetched.total,
                from,
                Bytes::from(c.bytes),
                seen,
            );
        }
        if prefix.is_empty() {
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

    /// Queues every whole block among `seen` bytes of ciphertext starting at `from`.
    fn keep_blocks(&self, file: FileId, total: u64, from: u64, ciphertext: Bytes, seen: u64) {
        let mut block = from.div_ceil(BLOCK_SIZE);
        loop {
            let start = block * BLOCK_SIZE;
            let end = (start + BLOCK_SIZE).min(total);
            if start >= total || end > from + seen {
                return;
            }
            let piece = ciphertext.slice((start - from) as usize..(end - from) as usize);
            self.queue(file, block, total, piece);
            block += 1;
        }
    }
}

fn stored_prefix(store: &Store, request: RangeRequest) -> Vec<(Bytes, u64)> {
    let mut found = Vec::new();
    for block in request.first / BLOCK_SIZE..=request.last / BLOCK_SIZE {
        if !store.contains(request.file, block) {
            store.stats.disk_misses.incr();
            break;
        }
        let Some((bytes, total)) = store.read(request.file, block) else {
            break;
        };
        let start = block * BLOCK_SIZE;
        let whole = start < total && bytes.len() as u64 == BLOCK_SIZE.min(total - start);
        if !whole || request.known_total.is_some_and(|k| k != total) {
            break;
        }
        found.push((bytes, total));
        if start + BLOCK_SIZE >= total {
            break;
        }
    }
    found
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
