//! A read path over the in-memory doubles, for the unit tests of `readpath` and `fs`: a
//! catalogue of one album whose tracks have known plaintext, a scripted range source serving
//! their ciphertext, and a `Reader` with small blocks so that a few KiB span many of them.

use crate::client::doubles::{MemoryControlPlane, ScriptedRanges, TrackSpec};
use crate::client::stats::Stats;
use crate::protocol::keyfile::Keys;
use crate::protocol::model::{AudioFormat, FileId};
use crate::readpath::block_cache::BlockCache;
use crate::readpath::heads::HeadStore;
use crate::readpath::keys::KeyStore;
use crate::readpath::readahead::ReadAheadConfig;
use crate::readpath::reader::{FileRef, Reader, ReaderConfig};
use bytes::Bytes;
use std::sync::Arc;

pub(crate) const BLOCK: u64 = 1024;

/// Plaintext that opens like an MP3 (an ID3 tag) and where every byte tells its offset apart
/// from its neighbours', so a misplaced byte shows.
pub(crate) fn plaintext(len: usize, seed: u8) -> Bytes {
    let mut bytes: Vec<u8> = (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 32) as u8
        })
        .collect();
    bytes[..len.min(3)].copy_from_slice(&b"ID3"[..len.min(3)]);
    bytes.into()
}

pub(crate) fn config() -> ReaderConfig {
    ReaderConfig {
        block_size: BLOCK,
        max_request: 4 * BLOCK,
        max_in_flight: 64 * BLOCK,
        readahead: ReadAheadConfig {
            initial_window: 4 * BLOCK,
            max_window: 16 * BLOCK,
            max_streams: 4,
            back_slack: 8 * BLOCK,
            forward_slack: 4 * BLOCK,
            probe_bytes: 0,
            refill_step: 4 * BLOCK,
        },
    }
}

pub(crate) struct Rig {
    pub control: Arc<MemoryControlPlane>,
    pub ranges: Arc<ScriptedRanges>,
    pub cache: Arc<BlockCache>,
    pub stats: Arc<Stats>,
    pub reader: Arc<Reader>,
    /// The album's files, in track order.
    pub files: Vec<FileRef>,
}

impl Rig {
    /// One album, "Artist/Album", with an MP3 track of each of `sizes` bytes.
    pub fn new(sizes: &[usize]) -> Rig {
        Self::with(sizes, config(), 1 << 20)
    }

    pub fn with(sizes: &[usize], config: ReaderConfig, cache_budget: u64) -> Rig {
        let control = Arc::new(MemoryControlPlane::new());
        let specs: Vec<TrackSpec> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let n = i as u32 + 1;
                TrackSpec::new(
                    n,
                    &format!("Song {n}"),
                    AudioFormat::Mp3_320,
                    plaintext(len, n as u8),
                )
            })
            .collect();
        let (_, ids) = control.add_album("Artist", "Album", &specs);
        let ranges = Arc::new(ScriptedRanges::serving(&control));
        let stats = Arc::new(Stats::default());
        let cache = Arc::new(BlockCache::new(cache_budget, stats.clone()));
        let keys = Arc::new(KeyStore::new(Keys::new(), control.clone()));
        let heads = HeadStore::new(control.clone(), 1 << 20);
        let reader = Arc::new(Reader::new(
            cache.clone(),
            ranges.clone(),
            keys,
            heads,
            stats.clone(),
            config,
        ));
        let files = ids
            .into_iter()
            .map(|id| FileRef {
                id,
                container: AudioFormat::Mp3_320.container(),
            })
            .collect();
        Rig {
            control,
            ranges,
            cache,
            stats,
            reader,
            files,
        }
    }

    pub fn plain(&self, file: FileId) -> Bytes {
        self.control.plaintext(file).expect("a file of the rig")
    }

    /// Waits until no fetch task is running: read-ahead runs in tasks of its own.
    pub async fn settle(&self) {
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
    }
}
