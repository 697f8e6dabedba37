//! Read-ahead decisions, kept pure (no I/O) so they can be tested on their own.
//!
//! Each file keeps a few *streams*: positions where someone is reading sequentially. A read
//! near a stream's position (a little behind it, to absorb the kernel's out-of-order read-ahead,
//! or inside what was already prefetched) continues that stream and may widen its window; any
//! other read starts a new stream. Because old streams survive, a player that jumps to the tail
//! of a file (to find its duration) and back resumes its stream instead of starting over.

use std::ops::Range;

#[derive(Debug, Clone)]
pub struct ReadAheadConfig {
    /// Window of a stream's first prefetch.
    pub initial_window: u64,
    /// Largest window (doubling per prefetch while reads stay sequential).
    pub max_window: u64,
    /// Streams remembered per file.
    pub max_streams: usize,
    /// How far behind a stream's position a read may land and still belong to it.
    pub back_slack: u64,
    /// How far past what a stream prefetched a read may land and still belong to it (the
    /// kernel's own read-ahead runs a little ahead of the reader). Further is a jump, such as
    /// a player probing the file's tail, and must not move the stream there.
    pub forward_slack: u64,
}

impl Default for ReadAheadConfig {
    fn default() -> Self {
        ReadAheadConfig {
            initial_window: 1 << 20,
            max_window: 16 << 20,
            max_streams: 4,
            back_slack: 2 << 20,
            forward_slack: 1 << 20,
        }
    }
}

#[derive(Debug, Clone)]
struct Stream {
    /// End of the furthest read so far.
    next: u64,
    /// Prefetched (or requested) up to here.
    ahead_to: u64,
    window: u64,
    last_used: u64,
    sequential_reads: u32,
}

#[derive(Debug, Default, Clone)]
pub struct Streams {
    streams: Vec<Stream>,
    clock: u64,
    last_sequential: bool,
}

impl Streams {
    /// Whether the last read continued a sequential stream (what it passed is done with).
    pub fn last_read_was_sequential(&self) -> bool {
        self.last_sequential
    }

    /// Records a read of `offset..end` in a file of `total` bytes and returns the range to
    /// prefetch now, if any.
    pub fn on_read(
        &mut self,
        config: &ReadAheadConfig,
        offset: u64,
        end: u64,
        total: u64,
    ) -> Option<Range<u64>> {
        self.clock += 1;
        self.last_sequential = false;
        let clock = self.clock;
        let found = self.streams.iter().position(|s| {
            offset >= s.next.saturating_sub(config.back_slack)
                && offset <= s.next.max(s.ahead_to) + config.forward_slack
        });
        let index = match found {
            Some(i) => {
                let s = &mut self.streams[i];
                s.sequential_reads += 1;
                s.next = s.next.max(end);
                i
            }
            None => {
                self.start_stream(config, end);
                self.streams.len() - 1
            }
        };
        self.last_sequential = self.streams[index].sequential_reads > 0;
        let stream = &mut self.streams[index];
        stream.last_used = clock;
        // A random reader is not prefetched for; a stream from the file's start is (players,
        // cp), and so is any stream after its second sequential read.
        if stream.sequential_reads == 0 && offset != 0 {
            return None;
        }
        let refill_below = stream.next + stream.window / 2;
        if stream.ahead_to >= refill_below.min(total) {
            return None;
        }
        let from = stream.ahead_to.max(stream.next);
        let to = (stream.next + stream.window).min(total);
        if stream.sequential_reads > 0 {
            stream.window = (stream.window * 2).min(config.max_window);
        }
        stream.ahead_to = to;
        (from < to).then_some(from..to)
    }

    fn start_stream(&mut self, config: &ReadAheadConfig, end: u64) {
        if self.streams.len() >= config.max_streams {
            if let Some(oldest) = (0..self.streams.len()).min_by_key(|&i| self.streams[i].last_used)
            {
                self.streams.swap_remove(oldest);
            }
        }
        self.streams.push(Stream {
            next: end,
            ahead_to: end,
            window: config.initial_window,
            last_used: self.clock,
            sequential_reads: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn config() -> ReadAheadConfig {
        ReadAheadConfig {
            initial_window: MIB,
            max_window: 8 * MIB,
            max_streams: 4,
            back_slack: 2 * MIB,
            forward_slack: MIB,
        }
    }

    #[test]
    fn a_read_from_the_start_prefetches_and_the_window_grows() {
        let (c, mut s) = (config(), Streams::default());
        let total = 100 * MIB;
        assert_eq!(
            s.on_read(&c, 0, 128 << 10, total),
            Some((128 << 10)..MIB + (128 << 10))
        );
        let mut offset = 128 << 10;
        let mut widest = 0;
        while offset < 40 * MIB {
            if let Some(r) = s.on_read(&c, offset, offset + (128 << 10), total) {
                assert!(r.start >= offset, "never prefetch behind the reader");
                widest = widest.max(r.end - r.start);
            }
            offset += 128 << 10;
        }
        assert!(widest > MIB, "window grew to {widest}");
        assert!(widest <= 8 * MIB);
    }

    #[test]
    fn random_reads_do_not_prefetch() {
        let (c, mut s) = (config(), Streams::default());
        for offset in [50 * MIB, 10 * MIB, 90 * MIB, 30 * MIB, 70 * MIB] {
            assert_eq!(s.on_read(&c, offset, offset + 4096, 100 * MIB), None);
        }
    }

    #[test]
    fn out_of_order_kernel_reads_stay_in_the_stream() {
        let (c, mut s) = (config(), Streams::default());
        s.on_read(&c, 0, 128 << 10, 100 * MIB);
        s.on_read(&c, 256 << 10, 384 << 10, 100 * MIB);
        // The kernel delivers an earlier read-ahead page late: still the same stream.
        s.on_read(&c, 128 << 10, 256 << 10, 100 * MIB);
        assert_eq!(s.streams.len(), 1);
    }

    #[test]
    fn a_jump_to_the_tail_and_back_resumes_the_stream() {
        let (c, mut s) = (config(), Streams::default());
        let total = 100 * MIB;
        let mut offset = 0;
        while offset < 4 * MIB {
            s.on_read(&c, offset, offset + (128 << 10), total);
            offset += 128 << 10;
        }
        let window_before = s.streams[0].window;
        assert_eq!(
            s.on_read(&c, total - 4096, total, total),
            None,
            "the tail probe is not prefetched"
        );
        s.on_read(&c, offset, offset + (128 << 10), total);
        assert_eq!(s.streams.len(), 2);
        assert!(
            s.streams[0].window >= window_before,
            "the first stream kept its window"
        );
        assert!(s.streams[0].next > 4 * MIB);
    }

    #[test]
    fn streams_are_bounded() {
        let (c, mut s) = (config(), Streams::default());
        for i in 0..10 {
            s.on_read(&c, i * 10 * MIB + 1, i * 10 * MIB + 4097, 200 * MIB);
        }
        assert_eq!(s.streams.len(), 4);
    }

    #[test]
    fn a_tail_probe_within_a_window_of_the_stream_does_not_take_it_over() {
        // The default windows: after 1 MiB the stream has prefetched to about 5 MiB with an
        // 8 MiB window, so the tail of a 12 MB file lies within "prefetched + window". That
        // probe used to join the stream and move it to the end of the file: the resumed reads
        // then started a new stream with a 1 MiB window, and 5..12 MB was marked prefetched
        // without ever being fetched.
        let (c, mut s) = (ReadAheadConfig::default(), Streams::default());
        let total = 12_000_000;
        let mut offset = 0;
        while offset < MIB {
            s.on_read(&c, offset, offset + (128 << 10), total);
            offset += 128 << 10;
        }
        let (ahead_before, window_before) = (s.streams[0].ahead_to, s.streams[0].window);
        assert!(
            ahead_before + window_before > total,
            "the setup puts the tail in reach"
        );
        assert_eq!(s.on_read(&c, total - 65536, total, total), None);
        assert_eq!(s.streams.len(), 2, "the probe is a stream of its own");
        assert_eq!(
            s.streams[0].next, MIB,
            "the player's stream stayed where it was"
        );
        let resumed = s.on_read(&c, offset, offset + (128 << 10), total);
        let resumed = resumed.expect("the resumed read keeps prefetching");
        assert_eq!(
            resumed.start, ahead_before,
            "prefetch continues where it stopped"
        );
        assert!(
            resumed.end - resumed.start >= 4 * MIB,
            "with the grown window: {resumed:?}"
        );
    }
}
