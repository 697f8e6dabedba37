//! One place that splits `--cache-size` into what each part of a mount may hold, so that the
//! parts' limits add up to about the budget and no part assumes another's numbers.
//!
//! - `blocks`: decrypted blocks in the block cache: the whole budget (each run charged once).
//! - `spare_buffers`: idle response buffers kept for reuse: a quarter, at most 16 MiB.
//! - `heads`: plaintext head files: as much as the spare buffers.
//! - `images`: cover pictures: half of that.
//! - `in_flight`: responses being received at once: a quarter, at least 4 MiB.
//! - `max_window`: one sequential reader's read-ahead: an eighth, at least 1 MiB, so eight
//!   readers' windows fit the block cache.
//!
//! Peak memory is about the budget plus a quarter (in flight) plus the small parts: a small
//! budget keeps the whole mount small.

use crate::readpath::reader::ReaderConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryBudget {
    pub blocks: u64,
    pub spare_buffers: usize,
    pub heads: usize,
    pub images: usize,
    pub in_flight: u64,
    pub max_window: u64,
}

impl MemoryBudget {
    pub(crate) fn split(cache_size: u64) -> MemoryBudget {
        let spare = (cache_size / 4).min(16 << 20) as usize;
        MemoryBudget {
            blocks: cache_size,
            spare_buffers: spare,
            heads: spare,
            images: spare / 2,
            in_flight: (cache_size / 4).max(4 << 20),
            max_window: (cache_size / 8).max(1 << 20),
        }
    }

    /// The reader's configuration with its memory limits from this budget: the read-ahead
    /// window no larger than asked nor than `max_window`, in-flight bytes as budgeted.
    pub(crate) fn fit(&self, reader: &ReaderConfig) -> ReaderConfig {
        let mut fitted = reader.clone();
        fitted.readahead.max_window = reader.readahead.max_window.min(self.max_window);
        fitted.max_in_flight = self.in_flight;
        fitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_splits_as_documented() {
        let b = MemoryBudget::split(256 << 20);
        assert_eq!(b.blocks, 256 << 20);
        assert_eq!(
            (b.spare_buffers, b.heads, b.images),
            (16 << 20, 16 << 20, 8 << 20)
        );
        assert_eq!((b.in_flight, b.max_window), (64 << 20, 32 << 20));
        let fitted = b.fit(&ReaderConfig::default());
        assert_eq!(
            fitted.readahead.max_window,
            16 << 20,
            "the flag's smaller value stays"
        );
        assert_eq!(fitted.max_in_flight, 64 << 20);
    }

    #[test]
    fn a_small_budget_keeps_every_part_small_but_usable() {
        let b = MemoryBudget::split(8 << 20);
        assert_eq!((b.spare_buffers, b.heads), (2 << 20, 2 << 20));
        assert_eq!((b.in_flight, b.max_window), (4 << 20, 1 << 20));
        assert_eq!(
            b.fit(&ReaderConfig::default()).readahead.max_window,
            1 << 20
        );
    }
}
