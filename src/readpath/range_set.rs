//! Which bytes of a file the kernel has been handed, kept as a few merged ranges.
//!
//! The kernel's page cache keeps what trackfs answered, so a block whose every byte has been
//! handed over will be asked for again only if the kernel lets those pages go. Blocks a
//! sequential reader has passed are therefore released from the block cache, and only those:
//! "near a sequential stream" is not enough, because random reads land near streams all the
//! time, and dropping blocks they have not read yet means fetching them twice.
//!
//! The kernel asks again only for bytes it no longer has (memory pressure, `fadvise`), so a
//! read overlapping a served range makes that range stale, and it is forgotten: otherwise
//! random reads after an eviction would each release blocks around them all over again.

use std::ops::Range;

/// Ranges kept per file. A sequential reader needs one (out-of-order kernel reads briefly add
/// a second); random reads add short ones, and the shortest go first when there are too many.
const MAX_RANGES: usize = 8;

#[derive(Debug, Default, Clone)]
pub struct RangeSet {
    /// Sorted, disjoint and not touching.
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    /// Records that `range` was handed to the kernel and returns the whole served range that
    /// now contains it (every byte of which the kernel still has, as far as we know).
    pub fn add(&mut self, range: Range<u64>) -> Range<u64> {
        self.ranges
            .retain(|r| !(r.start < range.end && range.start < r.end));
        let mut merged = range;
        // Ranges are disjoint and do not touch, so the ones touching `range` merge in one pass.
        self.ranges.retain(|r| {
            let touches = r.start <= merged.end && merged.start <= r.end;
            if touches {
                merged = merged.start.min(r.start)..merged.end.max(r.end);
            }
            !touches
        });
        let at = self.ranges.partition_point(|r| r.start < merged.start);
        self.ranges.insert(at, merged.clone());
        if self.ranges.len() > MAX_RANGES {
            self.forget_shortest_except(&merged);
        }
        merged
    }

    /// The longest range handed over in one piece.
    pub fn longest(&self) -> Option<Range<u64>> {
        self.ranges.iter().max_by_key(|r| r.end - r.start).cloned()
    }

    fn forget_shortest_except(&mut self, keep: &Range<u64>) {
        let shortest = (0..self.ranges.len())
            .filter(|&i| self.ranges[i] != *keep)
            .min_by_key(|&i| self.ranges[i].end - self.ranges[i].start);
        if let Some(i) = shortest {
            self.ranges.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sequential_reads_make_one_range() {
        let mut s = RangeSet::default();
        for i in 0..10 {
            assert_eq!(s.add(i * MIB..(i + 1) * MIB), 0..(i + 1) * MIB);
        }
        assert_eq!(s.ranges.len(), 1);
    }

    #[test]
    fn a_late_read_joins_the_ranges_around_it() {
        let mut s = RangeSet::default();
        s.add(0..MIB);
        assert_eq!(s.add(2 * MIB..3 * MIB), 2 * MIB..3 * MIB);
        assert_eq!(s.add(MIB..2 * MIB), 0..3 * MIB);
        assert_eq!(s.ranges, vec![0..3 * MIB]);
    }

    #[test]
    fn a_read_of_bytes_already_served_forgets_their_range() {
        let mut s = RangeSet::default();
        s.add(10..20);
        s.add(30..40);
        // The kernel asks again: it let those bytes go, and maybe more of the ranges.
        assert_eq!(s.add(15..35), 15..35);
        assert_eq!(s.ranges, vec![15..35]);
        assert_eq!(s.add(35..50), 15..50, "touching still joins");
        assert_eq!(s.add(0..5), 0..5);
        assert_eq!(s.ranges, vec![0..5, 15..50]);
    }

    #[test]
    fn random_reads_near_a_sequential_run_do_not_extend_it() {
        let mut s = RangeSet::default();
        s.add(0..8 * MIB);
        for offset in [9 * MIB, 8 * MIB + 4096, 12 * MIB, 8 * MIB + 65536] {
            let got = s.add(offset..offset + 4096);
            assert_eq!(got, offset..offset + 4096, "read at {offset}");
        }
        // A read inside the run: the kernel let some of it go, so none of it counts now.
        assert_eq!(s.add(MIB..MIB + 4096), MIB..MIB + 4096);
        assert_eq!(s.add(4 * MIB..4 * MIB + 4096), 4 * MIB..4 * MIB + 4096);
    }

    #[test]
    fn the_shortest_ranges_go_first_and_the_long_run_stays() {
        let mut s = RangeSet::default();
        s.add(0..64 * MIB);
        for i in 0..100 {
            let offset = 100 * MIB + i * MIB;
            s.add(offset..offset + 4096);
        }
        assert_eq!(s.ranges.len(), MAX_RANGES);
        assert_eq!(s.ranges[0], 0..64 * MIB);
        assert_eq!(s.add(64 * MIB..65 * MIB), 0..65 * MIB);
    }
}
