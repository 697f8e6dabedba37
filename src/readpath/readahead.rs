//! Read-ahead decisions, kept pure (no I/O) so they can be tested on their own.
//!
//! Each file keeps a few *streams*: positions where someone is reading sequentially. A read
//! near a stream's position (a little behind it, to absorb the kernel's out-of-order read-ahead,
//! or inside what was already prefetched) continues that stream and may widen its window; any
//! other read starts a new stream. Because old streams survive, a player that jumps to the tail
//! of a file (to find its duration) and back resumes its stream instead of starting over.
//!
//! A stream earns read-ahead by reading: until it has read `probe_bytes` (2 MiB) in a row, only
//! what is asked for is fetched. Media scanners (ffprobe, mpd's database update, Jellyfin,
//! Navidrome) open each file, read its start, perhaps its tail, and close it: a window started
//! at the first read would fetch megabytes per track that nobody reads (issue 17: at most 1 MiB
//! per track). mpd reads 512 KiB at the start, which the kernel's 1 MiB read-ahead makes 1.5
//! MiB: the threshold lies past that. A player or `cp` passes it within its first reads (the
//! kernel's own read-ahead, 1 MiB READs, keeps them fed meanwhile) and then streams as before.
//!
//! A window grows only while its reader has to wait for data: on a slow or distant CDN it
//! widens until fetches keep ahead; on a fast one it stays small, so data goes from the
//! socket through decryption to the page cache while still in the CPU's cache (measured:
//! a 4 MiB window reads 13% faster than 16 MiB from a loopback CDN).

use std::ops::Range;

#[derive(Debug, Clone)]
pub struct ReadAheadConfig {
    /// Window of a stream's first prefetch.
    pub initial_window: u64,
    /// Largest window (doubling per prefetch while the reader has to wait for data).
    pub max_window: u64,
    /// Streams remembered per file.
    pub max_streams: usize,
    /// How far behind a stream's position a read may land and still belong to it.
    pub back_slack: u64,
    /// How far past what a stream prefetched a read may land and still belong to it (the
    /// kernel's own read-ahead runs a little ahead of the reader). Further is a jump, such as
    /// a player probing the file's tail, and must not move the stream there.
    pub forward_slack: u64,
    /// Bytes a stream reads in a row before anything is fetched ahead of it (0: at once).
    pub probe_bytes: u64,
    /// A window wider than two of these is topped up as soon as this much of it is free (a
    /// narrower one at half): the largest CDN request, so each top-up is one ranged GET.
    pub refill_step: u64,
}

impl Default for ReadAheadConfig {
    fn default() -> Self {
        ReadAheadConfig {
            initial_window: 1 << 20,
            max_window: 16 << 20,
            max_streams: 4,
            back_slack: 2 << 20,
            forward_slack: 1 << 20,
            probe_bytes: 2 << 20,
            refill_step: 2 << 20,
        }
    }
}

/// Whether `run`, bytes handed to the kernel in one piece, shows a reader going on past a
/// file's head: `probe_bytes` or more, or the whole file from where readers start. A player or
/// a copy does; a scanner's look at the start (and the tail) does not, which is what
/// `kernel_window` narrows the kernel's read-ahead for.
pub(crate) fn reads_on(config: &ReadAheadConfig, run: &Range<u64>, start: u64, total: u64) -> bool {
    run.end - run.start.min(run.end) >= config.probe_bytes
        || (run.start <= start && run.end >= total)
}

#[derive(Debug, Clone)]
struct Stream {
    /// Where the stream's first read began.
    began: u64,
    /// End of the furthest read so far.
    next: u64,
    /// Prefetched (or requested) up to here.
    ahead_to: u64,
    window: u64,
    last_used: u64,
    sequential_reads: u32,
    /// A read of this stream waited for data since the window last grew.
    starved: bool,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Streams {
    streams: Vec<Stream>,
    clock: u64,
}

impl Streams {
    /// Records a read of `offset..end` in a file of `total` bytes whose readers start at
    /// `start` (past an Ogg file's hidden header) and returns the range to prefetch now, if any.
    pub fn on_read_from(
        &mut self,
        config: &ReadAheadConfig,
        start: u64,
        offset: u64,
        end: u64,
        total: u64,
    ) -> Option<Range<u64>> {
        self.clock += 1;
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
                self.start_stream(config, offset, end);
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[index];
        stream.last_used = clock;
        // A random reader is not prefetched for; a stream from the file's start is (players,
        // cp), and so is any stream after its second sequential read.
        if stream.sequential_reads == 0 && offset != start {
            return None;
        }
        // Not yet read far enough to be more than a scanner's look at the file. In a small
        // file, half of it is far enough: what a scanner could waste is bounded by the file.
        let probe = config.probe_bytes.min(total / 2);
        if stream.next - stream.began.min(stream.next) < probe {
            return None;
        }
        // Small windows (a fast CDN) are refilled once half of them is free. A window that grew
        // past two requests because fetches are slow (a distant CDN, or one that limits each
        // connection) is topped up as soon as one request's worth is free, so nearly all of it
        // stays in flight as parallel ranged GETs; refilling at half kept between half and all
        // of it in flight (16 MiB of 2 MiB GETs at 16 MB/s each: 6 on average, now 7 to 8).
        let refill_below = if stream.window / 2 > config.refill_step {
            stream.next + stream.window - config.refill_step + 1
        } else {
            stream.next + stream.window / 2
        };
        if stream.ahead_to >= refill_below.min(total) {
            return None;
        }
        let from = stream.ahead_to.max(stream.next);
        let to = (stream.next + stream.window).min(total);
        if stream.sequential_reads > 0 && stream.starved {
            stream.window = (stream.window * 2).min(config.max_window);
            stream.starved = false;
            tracing::debug!(
                at = stream.next,
                window = stream.window,
                "read-ahead window grew"
            );
        }
        stream.ahead_to = to;
        (from < to).then_some(from..to)
    }

    /// Records that the read at `offset` had to wait for data: its stream's window is too
    /// small for how long fetches take, and grows at its next prefetch.
    pub fn note_wait(&mut self, config: &ReadAheadConfig, offset: u64) {
        let belongs =
            |s: &Stream| offset >= s.next.saturating_sub(config.back_slack) && offset <= s.next;
        if let Some(stream) = self.streams.iter_mut().find(|s| belongs(s)) {
            stream.starved = true;
        }
    }

    fn start_stream(&mut self, config: &ReadAheadConfig, offset: u64, end: u64) {
        if self.streams.len() >= config.max_streams {
            if let Some(oldest) = (0..self.streams.len()).min_by_key(|&i| self.streams[i].last_used)
            {
                self.streams.swap_remove(oldest);
            }
        }
        self.streams.push(Stream {
            began: offset,
            next: end,
            ahead_to: end,
            window: config.initial_window,
            last_used: self.clock,
            sequential_reads: 0,
            starved: false,
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
            probe_bytes: 0,
            refill_step: 2 * MIB,
        }
    }

    #[test]
    fn a_read_from_the_start_prefetches_and_the_window_grows() {
        let (c, mut s) = (config(), Streams::default());
        let total = 100 * MIB;
        assert_eq!(
            s.on_read_from(&c, 0, 0, 128 << 10, total),
            Some((128 << 10)..MIB + (128 << 10))
        );
        let mut offset = 128 << 10;
        let mut widest = 0;
        while offset < 40 * MIB {
            if let Some(r) = s.on_read_from(&c, 0, offset, offset + (128 << 10), total) {
                assert!(r.start >= offset, "never prefetch behind the reader");
                widest = widest.max(r.end - r.start);
            }
            // Every read waits, as on a distant CDN.
            s.note_wait(&c, offset);
            offset += 128 << 10;
        }
        assert!(widest > MIB, "window grew to {widest}");
        assert!(widest <= 8 * MIB);
    }

    #[test]
    fn the_window_stays_small_while_data_is_there_in_time() {
        let (c, mut s) = (config(), Streams::default());
        let total = 100 * MIB;
        let mut offset = 0;
        while offset < 40 * MIB {
            s.on_read_from(&c, 0, offset, offset + (128 << 10), total);
            offset += 128 << 10;
        }
        assert_eq!(s.streams[0].window, MIB, "never waited, never grew");
        s.note_wait(&c, offset - (128 << 10));
        s.on_read_from(&c, 0, offset, offset + (128 << 10), total);
        let mut next = offset + (128 << 10);
        while s.streams[0].window == MIB && next < 60 * MIB {
            s.on_read_from(&c, 0, next, next + (128 << 10), total);
            next += 128 << 10;
        }
        assert_eq!(s.streams[0].window, 2 * MIB, "one wait, one doubling");
    }

    #[test]
    fn a_grown_window_is_kept_nearly_full_a_request_at_a_time() {
        let (c, mut s) = (config(), Streams::default());
        let total = 200 * MIB;
        let step = 128 << 10;
        let mut offset = 0;
        // Every read waits (a slow CDN) until the window reaches its largest.
        while s.streams.first().is_none_or(|s| s.window < c.max_window) {
            s.on_read_from(&c, 0, offset, offset + step, total);
            s.note_wait(&c, offset);
            offset += step;
        }
        let mut prefetches = Vec::new();
        for _ in 0..200 {
            if let Some(r) = s.on_read_from(&c, 0, offset, offset + step, total) {
                prefetches.push(r.end - r.start);
            }
            offset += step;
            let st = &s.streams[0];
            // Never less than the window less one request ahead of the reader: at 8 MiB and
            // 2 MiB requests, 6 MiB or more in flight, where refilling at half allowed 4.
            assert!(
                st.ahead_to - st.next >= c.max_window - c.refill_step,
                "{st:?}"
            );
        }
        // After the step that grew the window, each top-up is exactly one request.
        assert!(
            prefetches[1..].iter().all(|&n| n == c.refill_step),
            "{prefetches:?}"
        );
    }

    #[test]
    fn a_small_window_is_still_refilled_at_half() {
        let (c, mut s) = (config(), Streams::default());
        let step = 128 << 10;
        s.on_read_from(&c, 0, 0, step, 100 * MIB);
        let mut offset = step;
        let mut refills = 0;
        while offset < 8 * MIB {
            if let Some(r) = s.on_read_from(&c, 0, offset, offset + step, 100 * MIB) {
                refills += 1;
                assert!(
                    r.end - r.start >= MIB / 2,
                    "half a 1 MiB window at a time: {r:?}"
                );
            }
            offset += step;
        }
        assert!(refills > 0 && refills <= 16, "{refills} refills");
    }

    #[test]
    fn random_reads_do_not_prefetch() {
        let (c, mut s) = (config(), Streams::default());
        for offset in [50 * MIB, 10 * MIB, 90 * MIB, 30 * MIB, 70 * MIB] {
            assert_eq!(
                s.on_read_from(&c, 0, offset, offset + 4096, 100 * MIB),
                None
            );
        }
    }

    #[test]
    fn out_of_order_kernel_reads_stay_in_the_stream() {
        let (c, mut s) = (config(), Streams::default());
        s.on_read_from(&c, 0, 0, 128 << 10, 100 * MIB);
        s.on_read_from(&c, 0, 256 << 10, 384 << 10, 100 * MIB);
        // The kernel delivers an earlier read-ahead page late: still the same stream.
        s.on_read_from(&c, 0, 128 << 10, 256 << 10, 100 * MIB);
        assert_eq!(s.streams.len(), 1);
    }

    #[test]
    fn a_jump_to_the_tail_and_back_resumes_the_stream() {
        let (c, mut s) = (config(), Streams::default());
        let total = 100 * MIB;
        let mut offset = 0;
        while offset < 4 * MIB {
            s.on_read_from(&c, 0, offset, offset + (128 << 10), total);
            offset += 128 << 10;
        }
        let window_before = s.streams[0].window;
        assert_eq!(
            s.on_read_from(&c, 0, total - 4096, total, total),
            None,
            "the tail probe is not prefetched"
        );
        s.on_read_from(&c, 0, offset, offset + (128 << 10), total);
        assert_eq!(s.streams.len(), 2);
        assert!(
            s.streams[0].window >= window_before,
            "the first stream kept its window"
        );
        assert!(s.streams[0].next > 4 * MIB);
    }

    #[test]
    fn reading_on_is_probe_bytes_in_one_piece_or_the_whole_file() {
        let c = ReadAheadConfig::default();
        let total = 12 * MIB;
        // mpd: 512 KiB and the kernel's 1 MiB after it; ffprobe: 320 KiB, then the tail.
        assert!(!reads_on(&c, &(0..3 * MIB / 2), 0, total));
        assert!(!reads_on(&c, &(total - (64 << 10)..total), 0, total));
        // A player or a copy, past 2 MiB; a small file read whole (past an Ogg header too).
        assert!(reads_on(&c, &(0..2 * MIB), 0, total));
        assert!(reads_on(&c, &(MIB..4 * MIB), 0, total));
        assert!(reads_on(&c, &(167..MIB), 167, MIB));
        assert!(!reads_on(&c, &(4096..MIB), 0, MIB));
    }

    #[test]
    fn streams_are_bounded() {
        let (c, mut s) = (config(), Streams::default());
        for i in 0..10 {
            s.on_read_from(&c, 0, i * 10 * MIB + 1, i * 10 * MIB + 4097, 200 * MIB);
        }
        assert_eq!(s.streams.len(), 4);
    }

    #[test]
    fn a_tail_probe_within_a_window_of_the_stream_does_not_take_it_over() {
        // The default windows, with every read waiting (so the window grows): read until the
        // tail of a 12 MB file lies within "prefetched + window". That
        // probe used to join the stream and move it to the end of the file: the resumed reads
        // then started a new stream with a 1 MiB window, and 5..12 MB was marked prefetched
        // without ever being fetched.
        let (c, mut s) = (ReadAheadConfig::default(), Streams::default());
        let total = 12_000_000;
        let mut offset = 0;
        while s
            .streams
            .first()
            .is_none_or(|s| s.ahead_to + s.window <= total)
        {
            s.on_read_from(&c, 0, offset, offset + (128 << 10), total);
            s.note_wait(&c, offset);
            offset += 128 << 10;
            assert!(offset < total / 2, "the window never grew");
        }
        let (ahead_before, window_before) = (s.streams[0].ahead_to, s.streams[0].window);
        assert!(
            ahead_before + window_before > total,
            "the setup puts the tail in reach"
        );
        assert_eq!(s.on_read_from(&c, 0, total - 65536, total, total), None);
        assert_eq!(s.streams.len(), 2, "the probe is a stream of its own");
        assert_eq!(
            s.streams[0].next, offset,
            "the player's stream stayed where it was"
        );
        let resumed = s.on_read_from(&c, 0, offset, offset + (128 << 10), total);
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

    #[test]
    fn a_read_from_where_readers_start_is_prefetched_for() {
        let config = ReadAheadConfig {
            probe_bytes: 0,
            ..ReadAheadConfig::default()
        };
        let mut ogg = Streams::default();
        assert!(ogg
            .on_read_from(&config, 167, 167, 167 + 4096, 100 * MIB)
            .is_some());
        let mut random = Streams::default();
        assert!(random
            .on_read_from(&config, 167, 5 * MIB, 6 * MIB, 100 * MIB)
            .is_none());
    }

    #[test]
    fn a_scanner_reading_the_start_and_the_tail_gets_no_read_ahead() {
        let (c, mut s) = (ReadAheadConfig::default(), Streams::default());
        let total = 12 * MIB;
        // ffprobe: 32 KiB reads up to 320 KiB (the kernel asks in 128 KiB pieces), then the
        // last 64 KiB for the duration, then a little of the start again.
        let mut offset = 0;
        while offset < 320 << 10 {
            assert_eq!(
                s.on_read_from(&c, 0, offset, offset + (128 << 10), total),
                None
            );
            offset += 128 << 10;
        }
        let tail = total - (64 << 10);
        assert_eq!(s.on_read_from(&c, 0, tail, tail + (32 << 10), total), None);
        assert_eq!(s.on_read_from(&c, 0, tail + (32 << 10), total, total), None);
        assert_eq!(s.on_read_from(&c, 0, 4096, 8192, total), None);
    }

    #[test]
    fn players_and_copies_earn_the_full_window_within_their_first_reads() {
        let (c, mut s) = (ReadAheadConfig::default(), Streams::default());
        let total = 100 * MIB;
        // cp: 1 MiB reads (the kernel's read-ahead). Prefetch starts at the second.
        assert_eq!(s.on_read_from(&c, 0, 0, MIB, total), None);
        let second = s
            .on_read_from(&c, 0, MIB, 2 * MIB, total)
            .expect("a copy streams");
        assert_eq!(second, 2 * MIB..3 * MIB);
        // A player: 128 KiB reads; prefetch starts once `probe_bytes` were read in a row.
        let mut player = Streams::default();
        let mut offset = 0;
        let started = loop {
            if let Some(r) = player.on_read_from(&c, 0, offset, offset + (128 << 10), total) {
                break r;
            }
            offset += 128 << 10;
            assert!(offset < 4 * MIB, "never prefetched");
        };
        assert_eq!(started.start, c.probe_bytes);
        assert_eq!(started.end - started.start, c.initial_window);
        // A small file earns it after half of it.
        let small = 1_400_000;
        let mut reader = Streams::default();
        assert_eq!(reader.on_read_from(&c, 0, 0, 512 << 10, small), None);
        let rest = reader.on_read_from(&c, 0, 512 << 10, MIB, small);
        assert_eq!(rest, Some(MIB..small));
        // A seek to the middle: the same, from there.
        let mid = 50 * MIB;
        assert_eq!(
            player.on_read_from(&c, 0, mid, mid + (128 << 10), total),
            None
        );
        let mut at = mid + (128 << 10);
        while player
            .on_read_from(&c, 0, at, at + (128 << 10), total)
            .is_none()
        {
            at += 128 << 10;
            assert!(at < mid + 4 * MIB, "never prefetched after the seek");
        }
    }
}
