//! Micro-benchmarks of the two hot paths below the network: decryption (should run near the
//! AES-NI limit) and block-cache lookups/inserts. `cargo bench`; the end-to-end comparison with
//! rclone and curl is `scripts/bench.sh`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use trackfs::protocol::crypto::{apply_keystream, AudioKey};
use trackfs::protocol::model::FileId;
use trackfs::readpath::block_cache::{Block, BlockCache, Lookup};

fn decrypt(c: &mut Criterion) {
    let key = AudioKey([0x42; 16]);
    let mut group = c.benchmark_group("decrypt");
    for (name, offset) in [("aligned", 0u64), ("unaligned", 7)] {
        let mut buf = vec![0u8; 4 << 20];
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function(format!("4MiB {name}"), |b| {
            b.iter(|| apply_keystream(&key, black_box(offset), black_box(&mut buf)))
        });
    }
    group.finish();
}

fn cache(c: &mut Criterion) {
    const BLOCK: usize = 256 << 10;
    let block = Block::from(Bytes::from(vec![0u8; BLOCK]));
    let file = FileId([3; 20]);
    let mut group = c.benchmark_group("cache");
    group.bench_function("hit", |b| {
        let cache = BlockCache::new(64 << 20, Arc::default());
        for i in 0..128 {
            if let Lookup::Claimed(claim) = cache.lookup((file, i)) {
                cache.fulfil(claim, Ok(block.clone()));
            }
        }
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 1) % 128;
            matches!(cache.lookup(black_box((file, i))), Lookup::Hit(_))
        })
    });
    group.bench_function("miss, fill and evict", |b| {
        let cache = BlockCache::new(16 << 20, Arc::default());
        let mut i = 0u64;
        b.iter_batched(
            || {
                i += 1;
                i
            },
            |index| {
                if let Lookup::Claimed(claim) = cache.lookup((file, index)) {
                    cache.fulfil(claim, Ok(block.clone()));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decrypt, cache);
criterion_main!(benches);
