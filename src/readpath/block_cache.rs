//! The LRU block cache: decrypted blocks keyed by (file id, block index), bounded in bytes.
//! The bytes counted are the memory held: a block is a slice of its run (one CDN response),
//! and a run's buffer lives while any of its blocks does, so each run is charged whole, once,
//! while at least one of its blocks is cached (a lone block of a 2 MiB run costs 2 MiB).
//!
//! Besides storing blocks it is the single-flight point: the first reader to miss a block
//! *claims* it and fetches; readers that miss while that fetch runs wait for its result instead
//! of fetching again. Failures are handed to every waiter and never cached, so the next read
//! tries afresh.

use crate::client::error::FetchError;
use crate::client::stats::Stats;
use crate::protocol::model::FileId;
use bytes::Bytes;
use lru::LruCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

pub type BlockKey = (FileId, u64);
type Slot = Option<Result<Block, FetchError>>;

/// A decrypted block and the run (one CDN response) it was cut from, so that neighbouring
/// blocks of one run can be handed out as one slice, without copying.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Block {
    pub bytes: Bytes,
    pub run: Bytes,
    /// Where `bytes` starts inside `run`.
    pub at: usize,
}

impl Block {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether `next` continues this block inside the same run.
    pub fn is_followed_by(&self, next: &Block) -> bool {
        self.run.as_ptr() == next.run.as_ptr() && self.at + self.len() == next.at
    }
}

impl From<Bytes> for Block {
    fn from(bytes: Bytes) -> Block {
        Block {
            run: bytes.clone(),
            bytes,
            at: 0,
        }
    }
}

/// What a lookup found.
pub enum Lookup {
    Hit(Block),
    /// Someone else is fetching it: wait on this.
    Pending(Pending),
    /// Nobody has it: the caller must fetch it and [`BlockCache::fulfil`] the claim.
    Claimed(Claim),
}

pub struct Pending(watch::Receiver<Slot>);

impl Pending {
    pub async fn wait(mut self) -> Result<Block, FetchError> {
        match self.0.wait_for(Option::is_some).await {
            Ok(slot) => slot.clone().unwrap_or(Err(FetchError::Abandoned)),
            // The fetcher vanished without an answer (its task was cancelled).
            Err(_) => Err(FetchError::Abandoned),
        }
    }
}

/// The right (and duty) to fetch one block.
pub struct Claim {
    pub key: BlockKey,
    tx: watch::Sender<Slot>,
}

struct Inner {
    blocks: LruCache<BlockKey, Block>,
    /// Sum of the lengths of the runs with a block in `blocks`.
    bytes: u64,
    /// Cached blocks per run, by the run's address.
    runs: HashMap<usize, usize>,
    pending: HashMap<BlockKey, watch::Receiver<Slot>>,
}

impl Inner {
    fn count_in(&mut self, block: &Block) {
        let blocks = self.runs.entry(block.run.as_ptr() as usize).or_insert(0);
        if *blocks == 0 {
            self.bytes += block.run.len() as u64;
        }
        *blocks += 1;
    }

    fn count_out(&mut self, block: &Block) {
        let id = block.run.as_ptr() as usize;
        if let Some(blocks) = self.runs.get_mut(&id) {
            *blocks -= 1;
            if *blocks == 0 {
                self.runs.remove(&id);
                self.bytes -= block.run.len() as u64;
            }
        }
    }
}

pub struct BlockCache {
    inner: Mutex<Inner>,
    budget: u64,
    stats: Arc<Stats>,
}

impl BlockCache {
    pub fn new(budget: u64, stats: Arc<Stats>) -> Self {
        BlockCache {
            inner: Mutex::new(Inner {
                blocks: LruCache::unbounded(),
                bytes: 0,
                runs: HashMap::new(),
                pending: HashMap::new(),
            }),
            budget,
            stats,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the cache down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// A hit, someone's fetch to wait for, or a claim to fetch it yourself.
    pub fn lookup(&self, key: BlockKey) -> Lookup {
        let mut inner = self.lock();
        if let Some(block) = inner.blocks.get(&key) {
            self.stats.cache_hits.incr();
            return Lookup::Hit(block.clone());
        }
        if let Some(rx) = inner.pending.get(&key) {
            // A claim dropped without an answer leaves a closed channel: claim it anew.
            if rx.has_changed().is_ok() {
                return Lookup::Pending(Pending(rx.clone()));
            }
        }
        self.stats.cache_misses.incr();
        let (tx, rx) = watch::channel(None);
        inner.pending.insert(key, rx);
        Lookup::Claimed(Claim { key, tx })
    }

    /// Only a cache hit, without claiming (used to see what is already there).
    pub fn contains(&self, key: &BlockKey) -> bool {
        let inner = self.lock();
        // A claim dropped without an answer (its fetch task died) leaves a closed channel:
        // that block is not coming, so whoever asks should fetch it.
        let coming = |rx: &watch::Receiver<Slot>| rx.has_changed().is_ok();
        inner.blocks.contains(key) || inner.pending.get(key).is_some_and(coming)
    }

    /// Drops a block nobody needs again soon (a sequential reader has passed it; the kernel's
    /// page cache holds its pages), so its memory is reused instead of growing the heap.
    pub fn release(&self, key: &BlockKey) {
        let mut inner = self.lock();
        if let Some(block) = inner.blocks.pop(key) {
            inner.count_out(&block);
        }
    }

    /// Stores a fetched block (or hands out the failure) and wakes every waiter.
    pub fn fulfil(&self, claim: Claim, result: Result<Block, FetchError>) {
        {
            let mut inner = self.lock();
            inner.pending.remove(&claim.key);
            if let Ok(block) = &result {
                self.insert_locked(&mut inner, claim.key, block.clone());
            }
        }
        claim.tx.send_replace(Some(result));
    }

    fn insert_locked(&self, inner: &mut Inner, key: BlockKey, block: Block) {
        inner.count_in(&block);
        if let Some(old) = inner.blocks.put(key, block) {
            inner.count_out(&old);
        }
        while inner.bytes > self.budget {
            match inner.blocks.pop_lru() {
                Some((_, evicted)) => {
                    inner.count_out(&evicted);
                    self.stats.cache_evictions.incr();
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(block: u64) -> BlockKey {
        (FileId([1; 20]), block)
    }

    fn claim(cache: &BlockCache, block: u64) -> Claim {
        match cache.lookup(key(block)) {
            Lookup::Claimed(c) => c,
            _ => panic!("expected a claim for block {block}"),
        }
    }

    #[test]
    fn a_block_whose_fetch_died_is_not_counted_as_coming() {
        let cache = BlockCache::new(300, Arc::default());
        let c = claim(&cache, 0);
        assert!(cache.contains(&key(0)));
        drop(c);
        assert!(!cache.contains(&key(0)));
        assert!(matches!(cache.lookup(key(0)), Lookup::Claimed(_)));
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let cache = BlockCache::new(300, Arc::default());
        for b in 0..3 {
            let c = claim(&cache, b);
            cache.fulfil(c, Ok(Block::from(Bytes::from(vec![0u8; 100]))));
        }
        assert!(matches!(cache.lookup(key(0)), Lookup::Hit(_)));
        let c = claim(&cache, 3);
        cache.fulfil(c, Ok(Block::from(Bytes::from(vec![0u8; 150]))));
        // Block 1 is the least recently used; 2 goes too, to make room for 150 bytes.
        assert!(cache.bytes() <= 300);
        assert!(matches!(cache.lookup(key(0)), Lookup::Hit(_)));
        assert!(matches!(cache.lookup(key(3)), Lookup::Hit(_)));
        assert!(matches!(cache.lookup(key(1)), Lookup::Claimed(_)));
        assert_eq!(cache.stats.cache_evictions.get(), 2);
    }

    #[test]
    fn released_blocks_free_their_bytes() {
        let cache = BlockCache::new(1000, Arc::default());
        let c = claim(&cache, 0);
        cache.fulfil(c, Ok(Block::from(Bytes::from(vec![0u8; 100]))));
        cache.release(&key(0));
        assert_eq!(cache.bytes(), 0);
        assert!(matches!(cache.lookup(key(0)), Lookup::Claimed(_)));
    }

    #[test]
    fn a_run_is_charged_whole_while_any_of_its_blocks_is_cached() {
        let cache = BlockCache::new(1000, Arc::default());
        let run = Bytes::from(vec![0u8; 400]);
        for b in 0..4u64 {
            let at = b as usize * 100;
            let block = Block {
                bytes: run.slice(at..at + 100),
                run: run.clone(),
                at,
            };
            cache.fulfil(claim(&cache, b), Ok(block));
        }
        assert_eq!(cache.bytes(), 400, "the run, once");
        for b in 0..3 {
            cache.release(&key(b));
        }
        assert_eq!(cache.bytes(), 400, "block 3 still holds the whole run");
        cache.release(&key(3));
        assert_eq!(cache.bytes(), 0);
        // Over budget, whole runs must go: a 700-byte run evicts the 400-byte one.
        let big = Bytes::from(vec![0u8; 700]);
        cache.fulfil(claim(&cache, 9), Ok(Block::from(big)));
        let fresh = Bytes::from(vec![0u8; 400]);
        cache.fulfil(claim(&cache, 10), Ok(Block::from(fresh)));
        assert_eq!(cache.bytes(), 400);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let cache = Arc::new(BlockCache::new(1 << 20, Arc::default()));
        let c = claim(&cache, 7);
        let waiters: Vec<_> = (0..8)
            .map(|_| match cache.lookup(key(7)) {
                Lookup::Pending(p) => tokio::spawn(p.wait()),
                _ => panic!("second lookup must wait, not fetch"),
            })
            .collect();
        cache.fulfil(c, Ok(Block::from(Bytes::from_static(b"block"))));
        for w in waiters {
            assert_eq!(
                w.await.unwrap().unwrap().bytes,
                Bytes::from_static(b"block")
            );
        }
        assert_eq!(cache.stats.cache_misses.get(), 1);
    }

    #[tokio::test]
    async fn failures_reach_waiters_and_are_not_cached() {
        let cache = BlockCache::new(1 << 20, Arc::default());
        let c = claim(&cache, 1);
        let Lookup::Pending(p) = cache.lookup(key(1)) else {
            panic!()
        };
        cache.fulfil(c, Err(FetchError::Abandoned));
        assert!(p.wait().await.is_err());
        assert!(matches!(cache.lookup(key(1)), Lookup::Claimed(_)));
    }

    #[tokio::test]
    async fn an_abandoned_claim_can_be_claimed_again() {
        let cache = BlockCache::new(1 << 20, Arc::default());
        let c = claim(&cache, 1);
        let Lookup::Pending(p) = cache.lookup(key(1)) else {
            panic!()
        };
        drop(c);
        assert!(p.wait().await.is_err());
        assert!(matches!(cache.lookup(key(1)), Lookup::Claimed(_)));
    }
}
