//! Page-aligned buffers for CDN responses, recycled once every block cut from them is gone.
//!
//! Two measured costs live here. Alignment: on some CPUs (this AMD EPYC) the kernel copies
//! between addresses that are not equally 64-byte aligned at a quarter of the speed (1.8 vs
//! 8 GB/s), and malloc's large blocks start 16 bytes into a page; a page-aligned buffer puts
//! every byte at the same page offset as its offset in the file, which is where the socket
//! and the page cache have it too. Recycling: a fresh 2 MiB buffer costs 512 page faults and
//! zeroing when the socket first writes into it, a tenth of the CPU of a sequential read; a
//! recycled one costs nothing.
//!
//! And memory: buffers beyond what the pool keeps go back to the allocator, which must give
//! them back to the system (`give_freed_buffers_back`), or a mount's peak memory grows with
//! every change of response size.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

const ALIGN: usize = 4096;
/// Idle bytes kept by a pool nobody sized (tests, tools); a mount sizes its own.
pub(crate) const DEFAULT_SPARE_BUFFERS: usize = 16 << 20;
/// Capacities are powers of two from this up, so that buffers of similar sizes are reused.
const MIN_CLASS: usize = 64 << 10;

/// Makes glibc give every large block (response buffers among them) a mapping of its own,
/// returned to the system when freed. By default glibc raises that threshold to the size of
/// each mapped block freed (up to 32 MiB), after which such blocks come from its heaps, where
/// freed space stays resident and fragments between response sizes (256 KiB for random
/// reads, 2 MiB for sequential ones). Measured with `--cache-size 64MiB`, fio's random reads
/// and then eight readers on one mount: peak RSS 137–153 MiB before, 99–101 with this (and
/// the pool's eviction of old idle buffers, which keeps the readers' CPU time as it was).
/// Process-wide: called once by the mount, before any buffer is allocated.
pub(crate) fn give_freed_buffers_back() {
    // glibc's own initial threshold, made fixed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter, and takes any value.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// The size class a buffer of `capacity` bytes serves: the largest power of two it holds.
fn class_of(capacity: usize) -> Option<usize> {
    (capacity >= MIN_CLASS).then(|| 1 << (usize::BITS - 1 - capacity.leading_zeros()))
}

/// Idle buffers (response sizes repeat: the block size, the largest request), holding at most
/// `max_idle` bytes: a mount's memory budget (`readpath::budget`) gives the CDN tier, which
/// fills buffers, and the reader, which shares them, the same pool. The oldest idle buffers
/// make room for returning ones, whatever their size: after fio's random reads (one block
/// per response) a full pool of block-sized buffers would otherwise turn every larger
/// response buffer of the sequential readers that follow away to the allocator, and each new
/// one would cost its page faults again (measured: 49,000 page faults for eight readers'
/// 192 MiB after fio, 18,000–21,000 with this).
pub(crate) struct Buffers {
    idle: Mutex<Idle>,
    max_idle: usize,
}

/// Idle buffers with their size classes, oldest first, and their bytes.
#[derive(Default)]
struct Idle {
    buffers: VecDeque<(usize, BytesMut)>,
    bytes: usize,
}

impl Buffers {
    pub(crate) fn new(max_idle: usize) -> Arc<Buffers> {
        Arc::new(Buffers {
            idle: Mutex::default(),
            max_idle,
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer with room for at least `capacity` bytes, starting on a page boundary:
    /// the most recently returned one of that size class, when there is one.
    pub(crate) fn aligned(&self, capacity: usize) -> BytesMut {
        let class = capacity.next_power_of_two().max(MIN_CLASS);
        if let Some(buffer) = self.idle().take(class) {
            return buffer;
        }
        let mut buffer = BytesMut::with_capacity(class + ALIGN);
        let pad = buffer.as_ptr().align_offset(ALIGN);
        buffer.resize(pad, 0);
        buffer.advance(pad);
        buffer
    }

    /// Freezes a buffer (from [`Buffers::aligned`], or any other) into shareable bytes; when
    /// the last slice of them is dropped, an aligned buffer comes back here for reuse.
    pub(crate) fn share(self: &Arc<Self>, buffer: BytesMut) -> Bytes {
        Bytes::from_owner(Recycled {
            buffer,
            pool: self.clone(),
        })
    }
}

struct Recycled {
    buffer: BytesMut,
    pool: Arc<Buffers>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut buffer = std::mem::take(&mut self.buffer);
        let Some(class) = class_of(buffer.capacity()) else {
            return;
        };
        if buffer.as_ptr().align_offset(ALIGN) != 0 {
            return;
        }
        buffer.clear();
        // Buffers let go are freed (unmapped) after the lock is released.
        let let_go = self.pool.idle().keep(class, buffer, self.pool.max_idle);
        drop(let_go);
    }
}

impl Idle {
    fn take(&mut self, class: usize) -> Option<BytesMut> {
        let at = self.buffers.iter().rposition(|(c, _)| *c == class)?;
        let (_, buffer) = self.buffers.remove(at)?;
        self.bytes -= class;
        Some(buffer)
    }

    /// Keeps `buffer`, letting the oldest idle buffers go to stay within `max_idle` bytes;
    /// returns what it let go.
    fn keep(&mut self, class: usize, buffer: BytesMut, max_idle: usize) -> Vec<BytesMut> {
        if class > max_idle {
            return vec![buffer];
        }
        let mut let_go = Vec::new();
        while self.bytes + class > max_idle {
            let Some((old, old_buffer)) = self.buffers.pop_front() else {
                break;
            };
            self.bytes -= old;
            let_go.push(old_buffer);
        }
        self.buffers.push_back((class, buffer));
        self.bytes += class;
        let_go
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_into_power_of_two_classes() {
        assert_eq!(class_of(100), None);
        assert_eq!(class_of(MIN_CLASS), Some(MIN_CLASS));
        assert_eq!(class_of((2 << 20) + 4000), Some(2 << 20));
        assert!(Buffers::new(0).aligned(1).capacity() >= MIN_CLASS);
    }

    #[test]
    fn buffers_are_page_aligned_and_come_back_when_the_last_slice_goes() {
        const SIZE: usize = (4 << 20) + 4096;
        let pool = Buffers::new(16 << 20);
        let mut buffer = pool.aligned(SIZE);
        assert_eq!(buffer.as_ptr().align_offset(ALIGN), 0);
        assert!(buffer.capacity() >= SIZE && buffer.is_empty());
        buffer.extend_from_slice(&[7; SIZE]);
        let address = buffer.as_ptr();
        let bytes = pool.share(buffer);
        let slice = bytes.slice(100..200);
        drop(bytes);
        assert_eq!(
            slice,
            Bytes::from(vec![7u8; 100]),
            "a slice outlives its parent"
        );
        drop(slice);
        let again = pool.aligned((4 << 20) + 1);
        assert_eq!(again.as_ptr(), address, "the same memory, reused");
        assert!(
            again.is_empty() && again.capacity() >= SIZE,
            "handed out empty"
        );
        assert_eq!(again.as_ptr().align_offset(ALIGN), 0);
    }

    #[test]
    fn a_pool_keeps_no_more_idle_bytes_than_allowed() {
        let pool = Buffers::new(MIN_CLASS);
        let (a, b) = (pool.aligned(MIN_CLASS), pool.aligned(MIN_CLASS));
        drop(pool.share(a));
        drop(pool.share(b));
        assert_eq!(
            pool.idle().buffers.len(),
            1,
            "one buffer went back to the allocator"
        );
    }

    #[test]
    fn returning_buffers_push_out_the_oldest_idle_ones_whatever_their_size() {
        let pool = Buffers::new(4 * MIN_CLASS);
        let small: Vec<BytesMut> = (0..4).map(|_| pool.aligned(MIN_CLASS)).collect();
        for buffer in small {
            drop(pool.share(buffer));
        }
        assert_eq!(pool.idle().bytes, 4 * MIN_CLASS, "the pool is full");
        let large = pool.aligned(2 * MIN_CLASS);
        let address = large.as_ptr();
        drop(pool.share(large));
        let idle = pool.idle();
        let classes: Vec<usize> = idle.buffers.iter().map(|(c, _)| *c).collect();
        assert_eq!(classes, [MIN_CLASS, MIN_CLASS, 2 * MIN_CLASS]);
        assert_eq!(idle.bytes, 4 * MIN_CLASS);
        drop(idle);
        assert_eq!(
            pool.aligned(2 * MIN_CLASS).as_ptr(),
            address,
            "kept for reuse"
        );
        assert_eq!(pool.idle().bytes, 2 * MIN_CLASS);
        let too_large = pool.aligned(8 * MIN_CLASS);
        drop(pool.share(too_large));
        assert_eq!(
            pool.idle().bytes,
            2 * MIN_CLASS,
            "larger than the pool: let go"
        );
    }
}
