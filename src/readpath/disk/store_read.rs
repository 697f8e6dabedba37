//! The store's reads: a stored piece read back and checked, and one found wrong
//! dropped, unless a writer has placed a new piece under its name meanwhile (a read's or a
//! pin's fetch). Apart from `store.rs` for its size only; the tests of reads' cleanup with it.

use super::block::{self, HEADER_LEN};
use super::{Key, Store, BLOCK_SIZE};
use crate::protocol::model::FileId;
use bytes::{Bytes, BytesMut};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::sync::TryLockError;
use std::time::SystemTime;

/// What a read found wrong with a piece.
enum Failed<'a> {
    /// Not there (evicted, or removed by hand, since it was indexed).
    Missing,
    /// There, but it could not be opened (other than not found).
    Unopenable,
    /// Opened, but it could not be read: the file opened (still open, as for `Damaged`).
    Unreadable(&'a std::fs::File),
    /// Read, and damaged: the file read (still open, so its inode is not reused meanwhile).
    Damaged(&'a std::fs::File),
}

impl Store {
    /// A stored block's ciphertext and its file's total size, checked; `None` when it is not
    /// stored or fails its checks (then it is dropped, counted and logged).
    pub fn read(&self, file: FileId, block: u64) -> Option<(Bytes, u64)> {
        let mut out = BytesMut::new();
        let total = self.read_into(file, block, &mut out)?;
        Some((out.freeze(), total))
    }

    /// Appends a stored block's ciphertext to `out` (read straight into it: a reader's buffer,
    /// no copy) and gives its file's total size; `None`, with `out` as it was, when it is not
    /// stored or fails its checks (then it is dropped, counted and logged).
    pub fn read_into(&self, file: FileId, block: u64, out: &mut BytesMut) -> Option<u64> {
        let start = out.len();
        let total = self.read_uncounted(file, block, out)?;
        self.count_hits(1, (out.len() - start) as u64);
        Some(total)
    }

    /// Counts `pieces` read from disk, `bytes` of ciphertext, as served.
    pub(crate) fn count_hits(&self, pieces: u64, bytes: u64) {
        self.stats.disk_hits.add(pieces);
        self.stats.disk_bytes_read.add(bytes);
    }

    /// [`Store::read_into`] without counting the hit: the caller counts it once the bytes
    /// are served (a read given up on serves none).
    pub(crate) fn read_uncounted(
        &self,
        file: FileId,
        block: u64,
        out: &mut BytesMut,
    ) -> Option<u64> {
        #[cfg(test)]
        self.read_hold.pass();
        let key = (file, block);
        let path = self.path(key);
        let start = out.len();
        let mut header = [0u8; HEADER_LEN];
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let failed = if e.kind() == ErrorKind::NotFound {
                    Failed::Missing
                } else {
                    tracing::debug!("disk cache: cannot open {}: {e}", path.display());
                    Failed::Unopenable
                };
                self.drop_failed(key, failed);
                self.stats.disk_misses.incr();
                return None;
            }
        };
        let (head, len) = match read_piece(&mut f, &mut header, out) {
            Ok(read) => read,
            Err(e) => {
                out.truncate(start);
                tracing::debug!("disk cache: cannot read {}: {e}", path.display());
                self.drop_failed(key, Failed::Unreadable(&f));
                self.stats.disk_misses.incr();
                return None;
            }
        };
        match block::verify_parts(&header[..head], &out[start..], file, block * BLOCK_SIZE) {
            Ok(piece) => {
                // Recency lives in the file's time, so it survives a restart.
                let _ = f.set_modified(SystemTime::now());
                let mut state = self.lock();
                state.touch(key);
                // Its size is known now (until the opening scan is in, it was a guess).
                if let Some(was) = state
                    .lru
                    .get_mut(&key)
                    .map(|was| std::mem::replace(was, len))
                {
                    state.bytes = state.bytes - was + len;
                }
                Some(piece.total)
            }
            Err(why) => {
                out.truncate(start);
                tracing::warn!(
                    "disk cache: dropping {} ({why}); it will be fetched again",
                    path.display()
                );
                self.stats.disk_checksum_failures.incr();
                self.drop_failed(key, Failed::Damaged(&f));
                self.stats.disk_misses.incr();
                None
            }
        }
    }

    /// Drops a piece a read found missing, unopenable, unreadable or damaged (removing an
    /// unreadable or damaged one): under `placing`, and not when a writer has placed a new
    /// piece under its name since the read (it is indexed as the writer's). So a file read
    /// (unreadable or damaged) goes only if the path still names it (same device and inode):
    /// two reads of one damaged piece, a writer storing it again in between, leave the new
    /// one. A missing piece is forgotten only if the path still names nothing, and one that
    /// did not open only if it still does not (with no inode to compare, what the path names
    /// under `placing` is what the index counts): forgotten, not removed, as its failure may
    /// pass (too many open files).
    ///
    /// A read never waits for `placing`: a writer holds it across its rename, which on a hung
    /// disk may not return, and a read's thread stuck behind it would count as late and turn
    /// the whole tier off the disk. So a piece missing and not indexed (a read of pieces not
    /// looked up first, or evicted since) returns at once, and with `placing` taken the entry
    /// stays as it is: the next read, or the evictor, sees to it.
    fn drop_failed(&self, key: Key, failed: Failed<'_>) {
        #[cfg(test)]
        self.drop_hold.pass();
        if matches!(failed, Failed::Missing) && !self.contains(key.0, key.1) {
            return;
        }
        let _placing = match self.placing.try_lock() {
            Ok(placing) => placing,
            // Taken all the same, as `lock_placing` does.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let path = self.path(key);
        match failed {
            Failed::Missing if std::fs::metadata(&path).is_ok() => return,
            Failed::Unopenable if std::fs::File::open(&path).is_ok() => return,
            Failed::Unreadable(read) | Failed::Damaged(read) => {
                if let Ok(now) = std::fs::metadata(&path) {
                    let same = read
                        .metadata()
                        .is_ok_and(|read| (read.dev(), read.ino()) == (now.dev(), now.ino()));
                    if !same {
                        return;
                    }
                    // (Once closed, the next mount may have replaced it meanwhile.)
                    if !self.is_closed() {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Failed::Missing | Failed::Unopenable => {}
        }
        self.forget(key);
    }

    pub(super) fn forget(&self, key: Key) {
        let mut state = self.lock();
        if let Some(len) = state.lru.pop(&key) {
            state.bytes -= len;
        }
    }
}

/// Reads an opened piece: its header into `header` and its data appended to `out` (`out`
/// grown by what is read, to be truncated by the caller on an error); gives the header's
/// length read and the file's length. Any length but a whole piece's is a damaged piece:
/// what fits is read, and `verify` says so.
fn read_piece(
    f: &mut std::fs::File,
    header: &mut [u8; HEADER_LEN],
    out: &mut BytesMut,
) -> std::io::Result<(usize, u64)> {
    let start = out.len();
    let len = f.metadata()?.len();
    let data = len.saturating_sub(HEADER_LEN as u64).min(BLOCK_SIZE + 1) as usize;
    let head = (len as usize).min(HEADER_LEN);
    f.read_exact(&mut header[..head])?;
    out.resize(start + data, 0);
    f.read_exact(&mut out[start..])?;
    Ok((head, len))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{damage, data, piece_path, within, F, G, PIECE};
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_piece_stored_again_while_a_read_finds_it_evicted_stays_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 2 * PIECE, Arc::default()).unwrap());
        store.tidy();
        store.write(G, 0, 1000, &data(1));
        store.write(F, 0, 10_000, &data(2));
        // A read of G's piece finds it gone (evicted just before), and hangs before dropping it.
        store.write(F, 1, 10_000, &data(3));
        assert!(!piece_path(dir.path(), G, 0).exists());
        store.drop_hold.set(true);
        let reading = store.clone();
        let reader = std::thread::spawn(move || reading.read(G, 0));
        store.drop_hold.await_waiting(1);
        // Meanwhile it is fetched and stored again.
        store.write(G, 0, 1000, &data(1));
        store.drop_hold.set(false);
        assert!(reader.join().unwrap().is_none());
        // The new piece stays indexed and counted (within the bound), and reads.
        assert!(store.contains(G, 0));
        assert_eq!(store.usage().bytes, 2 * PIECE);
        assert_eq!(&store.read(G, 0).unwrap().0[..], &data(1)[..]);
    }

    #[test]
    fn a_damaged_piece_stored_again_while_a_second_read_drops_it_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 1 << 20, Arc::default()).unwrap());
        store.write(F, 0, 1000, &data(1));
        let path = piece_path(dir.path(), F, 0);
        damage(&path);
        // Two reads find it damaged; the second hangs before dropping it.
        store.drop_hold.set(true);
        let reading = store.clone();
        let second = std::thread::spawn(move || reading.read(F, 0));
        store.drop_hold.await_waiting(1);
        // The first dropped it (as a read does), then it was fetched and stored again.
        std::fs::remove_file(&path).unwrap();
        store.forget((F, 0));
        store.write(F, 0, 1000, &data(1));
        store.drop_hold.set(false);
        assert!(second.join().unwrap().is_none());
        // The second read leaves the good piece alone.
        assert!(store.contains(F, 0));
        assert_eq!(&store.read(F, 0).unwrap().0[..], &data(1)[..]);
    }

    #[test]
    fn a_read_of_a_missing_or_damaged_piece_never_waits_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 1 << 20, Arc::default()).unwrap());
        store.write(F, 0, 10_000, &data(0));
        store.write(F, 1, 10_000, &data(1));
        // Piece 0 removed by hand (indexed, missing); piece 1 damaged.
        let (gone, damaged) = (piece_path(dir.path(), F, 0), piece_path(dir.path(), F, 1));
        std::fs::remove_file(&gone).unwrap();
        damage(&damaged);
        // A writer holds `placing`, stuck in its rename on a hung disk.
        let placing = store.placing.lock().unwrap();
        let reading = store.clone();
        let read = within(move || [2, 0, 1].map(|block| reading.read(F, block).is_none()));
        assert_eq!(read, [true; 3]);
        // Nothing dropped meanwhile; once the writer is done, the next reads see to it.
        assert!(store.contains(F, 0) && store.contains(F, 1) && damaged.exists());
        drop(placing);
        assert!(store.read(F, 0).is_none() && store.read(F, 1).is_none());
        assert!(!store.contains(F, 0) && !store.contains(F, 1) && !damaged.exists());
        assert_eq!(store.usage().bytes, 0);
    }

    #[test]
    fn a_read_drops_a_damaged_piece_though_a_writer_panicked_holding_placing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 1 << 20, Arc::default()).unwrap());
        store.write(F, 0, 1000, &data(1));
        let path = piece_path(dir.path(), F, 0);
        std::fs::write(&path, [7u8; 10]).unwrap();
        let panicking = store.clone();
        let panicked = std::thread::spawn(move || {
            let _placing = panicking.placing.lock().unwrap();
            panic!("a writer panics holding `placing`");
        });
        assert!(panicked.join().is_err() && store.placing.is_poisoned());
        assert!(store.read(F, 0).is_none());
        assert!(!store.contains(F, 0) && !path.exists());
    }

    /// Puts what opens but does not read (a directory: EISDIR) in block `first`'s place, and
    /// what does not open (a symbolic link to itself: ELOOP) in the next one's. The directory
    /// holds a file: an empty one has size 0 on some filesystems (btrfs), and a read of 0
    /// bytes succeeds, making it a damaged piece rather than an unreadable one.
    fn unreadable_and_unopenable(dir: &std::path::Path, first: u64) -> [std::path::PathBuf; 2] {
        let paths = [0, 1].map(|b| piece_path(dir, F, first + b));
        paths.iter().for_each(|p| std::fs::remove_file(p).unwrap());
        std::fs::create_dir(&paths[0]).unwrap();
        std::fs::write(paths[0].join("entry"), b"x").unwrap();
        std::os::unix::fs::symlink(&paths[1], &paths[1]).unwrap();
        paths
    }

    #[test]
    fn a_piece_stored_again_while_a_read_finds_it_unreadable_stays_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 1 << 20, Arc::default()).unwrap());
        for block in 0..4 {
            store.write(F, block, 10_000, &data(1));
        }
        let [unreadable, _] = unreadable_and_unopenable(dir.path(), 0);
        // A read fails, and hangs before dropping its piece (one read at a time: a second
        // would find `placing` taken by the first, and drop nothing).
        for block in [0, 1] {
            store.drop_hold.set(true);
            let reading = store.clone();
            let reader = std::thread::spawn(move || reading.read(F, block));
            store.drop_hold.await_waiting(1);
            // Meanwhile it is dropped (as another read does) and stored again, whole: the
            // writer's rename replaces the link, not the directory.
            if block == 0 {
                std::fs::remove_dir_all(&unreadable).unwrap();
            }
            store.forget((F, block));
            store.write(F, block, 10_000, &data(2));
            store.drop_hold.set(false);
            assert!(reader.join().unwrap().is_none());
        }
        // The new pieces stay indexed and counted, and read.
        assert!(store.contains(F, 0) && store.contains(F, 1));
        assert_eq!(store.usage().bytes, 4 * PIECE);
        for block in [0, 1] {
            assert_eq!(&store.read(F, block).unwrap().0[..], &data(2)[..]);
        }
        // With nothing stored again, such reads drop their entries as before.
        unreadable_and_unopenable(dir.path(), 2);
        assert!(store.read(F, 2).is_none() && store.read(F, 3).is_none());
        assert!(!store.contains(F, 2) && !store.contains(F, 3));
        assert_eq!(store.usage().bytes, 2 * PIECE);
        // Unreadable, not damaged: nothing was counted as a checksum failure.
        assert_eq!(store.stats.disk_checksum_failures.get(), 0);
    }
}
