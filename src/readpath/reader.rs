//! Turns "bytes `offset..offset+len` of this stored file" into cached, decrypted blocks.
//!
//! Missing blocks are claimed in the cache (single flight), grouped into runs of consecutive
//! blocks, and each run is fetched by one ranged GET in its own task: a read that gives up (the
//! kernel interrupted it) does not cancel a fetch others wait for. Read-ahead adds the blocks
//! `readahead` asks for to the same runs, so sequential readers find them already there.

use super::opening::{check_head, check_magic, head_offset};
use crate::client::error::FetchError;
use crate::client::seams::{RangeRequest, RangeSource, Transform};
use crate::client::stats::Stats;
use crate::protocol::crypto;
use crate::protocol::model::{Container, FileId};
use crate::readpath::block_cache::{Block, BlockCache, Claim, Lookup, Pending};
use crate::readpath::buffers::{Buffers, DEFAULT_SPARE_BUFFERS};
use crate::readpath::heads::HeadStore;
use crate::readpath::kernel_window::KernelWindow;
use crate::readpath::keys::KeyStore;
use crate::readpath::range_set::RangeSet;
use crate::readpath::readahead::{reads_on, ReadAheadConfig, Streams};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// 256 KiB by measurement (scripts/bench.sh): 512 KiB and 1 MiB blocks read sequentially no
    /// faster on this hardware, and a cold random 4 KiB read costs one block's transfer.
    pub block_size: u64,
    /// Largest single GET (a run of blocks is split into GETs of at most this).
    pub max_request: u64,
    /// Bytes of CDN responses being received at once, over all files (bounds memory).
    pub max_in_flight: u64,
    pub readahead: ReadAheadConfig,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            block_size: 256 << 10,
            max_request: 2 << 20,
            max_in_flight: 64 << 20,
            readahead: ReadAheadConfig::default(),
        }
    }
}

/// How far behind a sequential reader its passed blocks are dropped from the cache.
const RELEASE_BEHIND: u64 = 4 << 20;

/// A stored file as the reader sees it: its id and container (to check the first bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileRef {
    pub id: FileId,
    pub container: Container,
}

#[derive(Default)]
struct FileState {
    total: Option<u64>,
    streams: Streams,
    served: RangeSet,
}

pub(crate) struct Reader {
    cache: Arc<BlockCache>,
    source: Arc<dyn RangeSource>,
    keys: Arc<KeyStore>,
    heads: HeadStore,
    stats: Arc<Stats>,
    buffers: Arc<Buffers>,
    config: ReaderConfig,
    files: Mutex<HashMap<FileId, FileState>>,
    /// Permits in KiB for response bytes in flight.
    in_flight: Arc<Semaphore>,
    /// The kernel's read-ahead for new opens, told what readers do (`kernel_window`).
    window: Arc<KernelWindow>,
}

impl Reader {
    pub fn new(
        cache: Arc<BlockCache>,
        source: Arc<dyn RangeSource>,
        keys: Arc<KeyStore>,
        heads: HeadStore,
        stats: Arc<Stats>,
        config: ReaderConfig,
    ) -> Self {
        Reader {
            cache,
            source,
            keys,
            heads,
            stats,
            buffers: Buffers::new(DEFAULT_SPARE_BUFFERS),
            in_flight: Arc::new(Semaphore::new(
                (config.max_in_flight / 1024).clamp(1, u32::MAX as u64 / 2) as usize,
            )),
            config,
            files: Mutex::new(HashMap::new()),
            window: Arc::new(KernelWindow::detached()),
        }
    }

    /// The same, choosing the kernel's read-ahead of each open through `window`.
    pub(crate) fn with_kernel_window(mut self, window: Arc<KernelWindow>) -> Self {
        self.window = window;
        self
    }

    /// Once mounted: finds the mount's read-ahead setting and sets the wide window.
    pub(crate) fn attach_kernel_window(&self, mountpoint: &std::path::Path) {
        self.window.attach(mountpoint);
    }

    /// Before a track's OPEN is answered (`kernel_window`).
    pub(crate) fn before_open(&self) {
        self.window.before_open();
    }

    /// A track was closed: if it was only looked at, a scanner is at work (`kernel_window`).
    pub(crate) fn closed(&self, file: FileRef) {
        let start = file.container.hidden_header_len();
        let read_on = self.with_state(file.id, |s| {
            let total = s.total.unwrap_or(u64::MAX);
            let run = s.served.longest()?;
            Some(reads_on(&self.config.readahead, &run, start, total))
        });
        if read_on == Some(false) {
            self.window.note_looked_at();
        }
    }

    /// The same, sharing response buffers through `buffers` (the CDN tier's pool).
    pub(crate) fn with_buffers(mut self, buffers: Arc<Buffers>) -> Self {
        self.buffers = buffers;
        self
    }

    fn with_state<T>(&self, file: FileId, f: impl FnOnce(&mut FileState) -> T) -> T {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        f(files.entry(file).or_default())
    }

    /// The size if already known, without any I/O.
    pub fn known_size(&self, file: FileId) -> Option<u64> {
        self.with_state(file, |s| s.total)
    }

    /// A size learned elsewhere (the catalogue snapshot), used until a fetch says otherwise.
    pub fn learn_size(&self, file: FileId, total: u64) {
        self.with_state(file, |s| {
            s.total.get_or_insert(total);
        });
    }

    /// The stored file's size, from `Content-Range`. Learning it fetches block 0, which stays
    /// in the cache, so the first read after it costs nothing.
    pub async fn size(self: &Arc<Self>, file: FileRef) -> Result<u64, FetchError> {
        if let Some(total) = self.known_size(file.id) {
            return Ok(total);
        }
        self.blocks(file, 0, 1, None).await?;
        // Fetching block 0 records the size; only a bug could leave it unknown.
        let unknown = FetchError::SizeUnknown { file: file.id };
        self.known_size(file.id).ok_or(unknown)
    }

    /// Reads stored bytes `offset..offset+len`, short only at the end of the file.
    pub async fn read(
        self: &Arc<Self>,
        file: FileRef,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, FetchError> {
        let total = self.size(file).await?;
        if offset >= total || len == 0 {
            return Ok(Bytes::new());
        }
        let end = total.min(offset.saturating_add(len));
        // Where a reader of the mounted file starts (past an Ogg file's hidden header).
        let start = file.container.hidden_header_len();
        let prefetch = self.with_state(file.id, |s| {
            s.streams
                .on_read_from(&self.config.readahead, start, offset, end, total)
        });
        let bs = self.config.block_size;
        let (first, last) = (offset / bs, (end - 1) / bs);
        let prefetch_blocks = prefetch.map(|r| (r.start / bs, (r.end - 1) / bs + 1));
        if let Some(bytes) = self.bytes_from_head(file, first, last, offset, end) {
            // The head answers now; the blocks are fetched for the reads that follow.
            let reader = self.clone();
            tokio::spawn(
                async move { reader.blocks(file, first, last + 1, prefetch_blocks).await },
            );
            self.note_served(file, offset, end, total);
            return Ok(bytes);
        }
        let (blocks, waited) = self.blocks(file, first, last + 1, prefetch_blocks).await?;
        if waited {
            self.with_state(file.id, |s| {
                s.streams.note_wait(&self.config.readahead, offset)
            });
        }
        self.note_served(file, offset, end, total);
        Ok(assemble(&blocks, offset - first * bs, end - offset))
    }

    /// Bytes `offset..end` go to the kernel, whose page cache keeps them. A sequential reader
    /// will not come back for the blocks it has passed, so blocks well behind it whose every
    /// byte the kernel has leave the block cache and their memory is reused: the cache holds
    /// read-ahead and random-access blocks, not whole copied files. A block a random reader
    /// has not read all of stays, however close to a sequential reader it lies.
    /// A run that reads on past the file's head also tells the kernel's read-ahead that a
    /// player or a copy is at work (`kernel_window`).
    fn note_served(&self, file: FileRef, offset: u64, end: u64, total: u64) {
        let served = self.with_state(file.id, |s| s.served.add(offset..end));
        let start = file.container.hidden_header_len();
        if reads_on(&self.config.readahead, &served, start, total) {
            self.window.note_streaming();
        }
        let file = file.id;
        let bs = self.config.block_size;
        let behind = RELEASE_BEHIND.max(2 * self.config.readahead.back_slack);
        let done = offset.saturating_sub(behind) / bs;
        let first_whole = served.start.div_ceil(bs);
        for index in first_whole.max(done.saturating_sub(8))..done {
            self.cache.release(&(file, index));
        }
    }

    /// Bytes `offset..end` from the head file, when they lie inside it and a block they need
    /// is not cached yet.
    fn bytes_from_head(
        &self,
        file: FileRef,
        first: u64,
        last: u64,
        offset: u64,
        end: u64,
    ) -> Option<Bytes> {
        // Heads cover a file's first bytes: skip the lookup for every other read.
        if first != 0 {
            return None;
        }
        let head = self.heads.cached(file.id)?;
        let at = head_offset(file, &head);
        if offset < at
            || end > at + head.len() as u64
            || (first..=last).all(|b| self.cache.contains(&(file.id, b)))
        {
            return None;
        }
        self.stats.head_hits.incr();
        Some(head.slice((offset - at) as usize..(end - at) as usize))
    }

    /// Returns blocks `first..end`, fetching what is missing together with the blocks of
    /// `prefetch` (not waited for), and whether any of them was not there yet.
    async fn blocks(
        self: &Arc<Self>,
        file: FileRef,
        first: u64,
        end: u64,
        prefetch: Option<(u64, u64)>,
    ) -> Result<(Vec<Block>, bool), FetchError> {
        let mut waits = Vec::with_capacity((end - first) as usize);
        let mut claims = Vec::new();
        for index in first..end {
            match self.cache.lookup((file.id, index)) {
                Lookup::Hit(block) => waits.push(Wait::Ready(block)),
                Lookup::Pending(p) => waits.push(Wait::Pending(p)),
                Lookup::Claimed(claim) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    waits.push(Wait::Mine(rx));
                    claims.push((claim, Some(tx)));
                }
            }
        }
        if let Some((from, to)) = prefetch {
            let total_blocks = self
                .known_size(file.id)
                .map(|t| t.div_ceil(self.config.block_size));
            for index in from.max(end)..total_blocks.map_or(to, |n| to.min(n)) {
                if !self.cache.contains(&(file.id, index)) {
                    if let Lookup::Claimed(claim) = self.cache.lookup((file.id, index)) {
                        claims.push((claim, None));
                    }
                }
            }
        }
        self.spawn_fetches(file, claims);
        let waited = waits.iter().any(|w| !matches!(w, Wait::Ready(_)));
        let mut blocks = Vec::with_capacity(waits.len());
        for wait in waits {
            blocks.push(wait.get().await?);
        }
        Ok((blocks, waited))
    }

    /// Groups claims into runs of consecutive blocks (at most `max_request` bytes each) and
    /// fetches every run in its own task.
    fn spawn_fetches(self: &Arc<Self>, file: FileRef, mut claims: Vec<(Claim, Option<Answer>)>) {
        claims.sort_by_key(|(c, _)| c.key.1);
        let max_blocks = (self.config.max_request / self.config.block_size).max(1) as usize;
        let mut run: Vec<(Claim, Option<Answer>)> = Vec::new();
        for claim in claims {
            let continues = run
                .last()
                .is_some_and(|(c, _)| c.key.1 + 1 == claim.0.key.1 && run.len() < max_blocks);
            if !continues && !run.is_empty() {
                self.spawn_run(file, std::mem::take(&mut run));
            }
            run.push(claim);
        }
        if !run.is_empty() {
            self.spawn_run(file, run);
        }
    }

    fn spawn_run(self: &Arc<Self>, file: FileRef, run: Vec<(Claim, Option<Answer>)>) {
        let reader = self.clone();
        tokio::spawn(async move {
            let first = run[0].0.key.1;
            let kib = (run.len() as u64 * reader.config.block_size / 1024)
                .min(reader.config.max_in_flight / 1024)
                .max(1) as u32;
            // Closed never: the semaphore lives as long as the reader.
            let _permit = reader.in_flight.clone().acquire_many_owned(kib).await;
            let result = reader.fetch_run(file, first, run.len() as u64).await;
            if let Err(e) = &result {
                // Logged where a read fails (the fs layer); read-ahead nobody waits for is not.
                if run.iter().all(|(_, answer)| answer.is_none()) {
                    tracing::debug!(file = %file.id, first, "read-ahead failed: {e}");
                }
            }
            for (i, (claim, answer)) in run.into_iter().enumerate() {
                let block = result
                    .as_ref()
                    .map(|blocks| blocks.get(i).cloned().unwrap_or_default());
                let block = block.map_err(Clone::clone);
                if let Some(answer) = answer {
                    let _ = answer.send(block.clone());
                }
                reader.cache.fulfil(claim, block);
            }
        });
    }

    /// One ranged GET for `count` blocks from `first`, decrypted and cut into blocks.
    async fn fetch_run(
        &self,
        file: FileRef,
        first: u64,
        count: u64,
    ) -> Result<Vec<Block>, FetchError> {
        let bs = self.config.block_size;
        let start = first * bs;
        let last = start + count * bs - 1;
        let known = self.known_size(file.id);
        // The first block comes with its head file (if any), to check the key against.
        let head = async {
            match first {
                0 => self.heads.get(file.id).await,
                _ => None,
            }
        };
        // With the key at hand, each piece is decrypted as it arrives (still in the CPU cache);
        // otherwise the key is fetched alongside and the whole run decrypted afterwards.
        let known_key = self.keys.cached(file.id);
        let decrypt_piece = |offset: u64, piece: &mut [u8]| {
            if let Some(key) = &known_key {
                crypto::apply_keystream(key, offset, piece);
            }
        };
        let transform: Option<Transform<'_>> =
            known_key.as_ref().map(|_| &decrypt_piece as Transform<'_>);
        let request = RangeRequest {
            file: file.id,
            first: start,
            last,
            known_total: known,
        };
        let (fetched, key, head) = tokio::join!(
            self.source.fetch(request, transform),
            self.keys.get(file.id),
            head
        );
        // A failed CDN fetch was counted as an error by `Cdn::fetch`; the rest are counted here.
        let fetched = fetched?.ok_or(FetchError::NotHere { file: file.id });
        let fetched = fetched.inspect_err(|_| self.stats.errors.incr())?;
        let expected = request.expected_len(fetched.total);
        if fetched.data.len() as u64 != expected {
            self.stats.errors.incr();
            return Err(FetchError::WrongLength {
                file: file.id,
                first: start,
                expected,
                got: fetched.data.len() as u64,
            });
        }
        let key = key.inspect_err(|_| self.stats.errors.incr())?;
        let mut data: BytesMut = fetched.data;
        if known_key.is_none() {
            crypto::apply_keystream(&key, start, &mut data);
        }
        if first == 0 {
            // The head is the exact answer; without one, the container's opening bytes.
            let checked = match head.as_deref() {
                Some(head) => check_head(file, &data, head),
                None => check_magic(file, &data),
            };
            checked.inspect_err(|_| self.stats.errors.incr())?;
        }
        self.with_state(file.id, |s| s.total = Some(fetched.total));
        let run = self.buffers.share(data);
        Ok((0..count)
            .map(|i| {
                let from = ((i * bs) as usize).min(run.len());
                let to = (((i + 1) * bs) as usize).min(run.len());
                Block {
                    bytes: run.slice(from..to),
                    run: run.clone(),
                    at: from,
                }
            })
            .collect())
    }
}

type Answer = tokio::sync::oneshot::Sender<Result<Block, FetchError>>;

enum Wait {
    Ready(Block),
    Pending(Pending),
    Mine(tokio::sync::oneshot::Receiver<Result<Block, FetchError>>),
}

impl Wait {
    async fn get(self) -> Result<Block, FetchError> {
        match self {
            Wait::Ready(b) => Ok(b),
            Wait::Pending(p) => p.wait().await,
            Wait::Mine(rx) => rx.await.unwrap_or(Err(FetchError::Abandoned)),
        }
    }
}

/// `len` bytes starting `skip` bytes into the concatenation of `blocks`: one slice without
/// copying when the blocks lie side by side in one run (the usual sequential case), else a copy.
fn assemble(blocks: &[Block], skip: u64, len: u64) -> Bytes {
    let (skip, len) = (skip as usize, len as usize);
    let Some(first) = blocks.first() else {
        return Bytes::new();
    };
    if blocks.windows(2).all(|w| w[0].is_followed_by(&w[1])) {
        let available: usize = blocks.iter().map(Block::len).sum();
        let end = (skip + len).min(available);
        let start = skip.min(end);
        return first.run.slice(first.at + start..first.at + end);
    }
    let mut out = BytesMut::with_capacity(len);
    let mut position = 0usize;
    for block in blocks {
        let (start, end) = (position, position + block.len());
        position = end;
        let from = skip.max(start);
        let to = (skip + len).min(end);
        if from < to {
            out.extend_from_slice(&block.bytes[from - start..to - start]);
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_readahead;
