//! Cover pictures: fetched whole from the origin's image endpoint (they are small, unencrypted
//! and content-addressed), kept in memory within a byte budget, and fetched once however many
//! reads ask at the same time (the kernel sends a file's read-ahead as concurrent READs).
//!
//! With a disk cache, pictures are stored there too, in its checksummed pieces under their
//! file id (they are content-addressed and unencrypted on the wire, so they are kept as
//! sent): a remount, or a mount started from its snapshot, learns and reads them from disk.
//! The disk is never waited on for long: a picture is read from it for at most `READ_WAIT`
//! (then, and while that read has not returned, it comes from the origin), and stored in the
//! background, a couple at a time (`background`; docs/design.md, "Disk cache", "Nothing
//! outside the tier waits on the disk either").
//!
//! A picture's size is learned when the catalogue is loaded (getattr must answer it before any
//! read); a later fetch that brings another size is refused, as a changed audio file would be,
//! so `cover.jpg` never shows bytes that disagree with its `stat`.

use crate::client::error::FetchError;
use crate::client::seams::ControlPlane;
use crate::client::stats::Stats;
use crate::protocol::model::{FileId, PictureKind};
use crate::readpath::background::Writes;
use crate::readpath::disk::read::{ReadGuard, READ_WAIT};
use crate::readpath::disk::store::{Store, BLOCK_SIZE};
use bytes::Bytes;
use lru::LruCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A picture as the tree needs it: its size in bytes and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoverInfo {
    pub size: u64,
    pub picture: PictureKind,
}

impl CoverInfo {
    /// What `bytes` show as: JPEG or PNG by their first bytes (anything else, which the image
    /// endpoint should not serve, as JPEG: media servers look for no other name).
    pub fn of(bytes: &[u8]) -> CoverInfo {
        CoverInfo {
            size: bytes.len() as u64,
            picture: PictureKind::sniff(bytes).unwrap_or(PictureKind::Jpeg),
        }
    }

    /// The name media servers look for (mpd, Navidrome, Jellyfin: lowercase `cover.*`).
    pub fn file_name(&self) -> String {
        format!("cover.{}", self.picture.extension())
    }
}

type Flight = Arc<tokio::sync::Mutex<()>>;

/// Pictures being written to disk at once, at most (a few hundred KiB each).
const PICTURE_WRITES: usize = 2;

pub struct ImageStore {
    control: Arc<dyn ControlPlane>,
    stats: Arc<Stats>,
    kept: Mutex<Kept>,
    /// One lock per picture being fetched, so concurrent misses fetch it once.
    flights: Mutex<HashMap<FileId, Flight>>,
    disk: Option<Arc<Store>>,
    /// Reads from disk: bounded, and skipped while the disk does not answer.
    disk_reads: ReadGuard,
    disk_writes: Writes,
}

struct Kept {
    pictures: LruCache<FileId, Bytes>,
    bytes: usize,
    budget: usize,
}

impl ImageStore {
    pub fn new(control: Arc<dyn ControlPlane>, stats: Arc<Stats>, budget: usize) -> Self {
        ImageStore {
            control,
            stats,
            kept: Mutex::new(Kept {
                pictures: LruCache::unbounded(),
                bytes: 0,
                budget,
            }),
            flights: Mutex::new(HashMap::new()),
            disk: None,
            disk_reads: ReadGuard::new(READ_WAIT),
            disk_writes: Writes::new(PICTURE_WRITES),
        }
    }

    /// The same, keeping pictures in the disk cache too.
    pub fn with_disk(mut self, disk: Option<Arc<Store>>) -> Self {
        self.disk = disk;
        self
    }

    /// The picture from the disk cache: every piece present and checked, and the size they
    /// give the expected one; `None` too when the disk does not answer within the bound.
    async fn read_disk(&self, file: FileId, expected: Option<u64>) -> Option<Bytes> {
        let disk = self.disk.clone()?;
        if self.disk_reads.is_slow() || !disk.contains(file, 0) {
            return None;
        }
        let read = move |given_up: &dyn Fn() -> bool| {
            let (first, total) = disk.read(file, 0)?;
            if expected.is_some_and(|e| e != total) || total > MAX_PICTURE {
                return None;
            }
            let mut whole = bytes::BytesMut::with_capacity(total as usize);
            whole.extend_from_slice(&first);
            for piece in 1..total.div_ceil(BLOCK_SIZE) {
                if given_up() {
                    return None;
                }
                let (bytes, also) = disk.read(file, piece)?;
                if also != total {
                    return None;
                }
                whole.extend_from_slice(&bytes);
            }
            (whole.len() as u64 == total).then(|| whole.freeze())
        };
        self.disk_reads.run(&self.stats, read).await.flatten()
    }

    /// Stores the picture in the disk cache, off the async threads, without waiting; not
    /// while the disk does not answer, nor when it is being stored already or enough
    /// pictures are (then it is stored when next fetched).
    fn write_disk(&self, file: FileId, bytes: Bytes) {
        let Some(disk) = self.disk.clone() else {
            return;
        };
        if self.disk_reads.is_slow() {
            return;
        }
        let Some(turn) = self.disk_writes.start(file) else {
            tracing::debug!(%file, "disk cache: the picture is not stored (the disk is busy)");
            return;
        };
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let total = bytes.len() as u64;
            for (piece, chunk) in bytes.chunks(BLOCK_SIZE as usize).enumerate() {
                disk.write(file, piece as u64, total, chunk);
            }
        });
    }

    /// The control plane pictures come from.
    pub fn control(&self) -> Arc<dyn ControlPlane> {
        self.control.clone()
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn cached(&self, file: FileId) -> Option<Bytes> {
        self.kept().pictures.get(&file).cloned()
    }

    /// Keeps `bytes` as `file`'s picture, dropping the least recently used beyond the budget
    /// (a picture larger than the whole budget is not kept).
    pub fn keep(&self, file: FileId, bytes: Bytes) {
        let mut kept = self.kept();
        if bytes.len() > kept.budget {
            return;
        }
        kept.bytes += bytes.len();
        if let Some(old) = kept.pictures.put(file, bytes) {
            kept.bytes -= old.len();
        }
        while kept.bytes > kept.budget {
            match kept.pictures.pop_lru() {
                Some((_, evicted)) => kept.bytes -= evicted.len(),
                None => break,
            }
        }
    }

    /// The picture, from memory or fetched (once for concurrent callers). `expected` is the
    /// size the mount already shows: an answer of another size is an error.
    pub async fn get(&self, file: FileId, expected: Option<u64>) -> Result<Bytes, FetchError> {
        if let Some(bytes) = self.cached(file) {
            return Ok(bytes);
        }
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            flights.entry(file).or_default().clone()
        };
        let _turn = flight.lock().await;
        if let Some(bytes) = self.cached(file) {
            return Ok(bytes);
        }
        if let Some(bytes) = self.read_disk(file, expected).await {
            self.forget_flight(file);
            self.keep(file, bytes.clone());
            return Ok(bytes);
        }
        let result = self.control.image(file).await;
        self.forget_flight(file);
        let bytes = result.inspect_err(|_| self.stats.errors.incr())?;
        if let Some(expected) = expected.filter(|&e| e != bytes.len() as u64) {
            self.stats.errors.incr();
            return Err(FetchError::WrongLength {
                file,
                first: 0,
                expected,
                got: bytes.len() as u64,
            });
        }
        self.keep(file, bytes.clone());
        self.write_disk(file, bytes.clone());
        Ok(bytes)
    }

    fn forget_flight(&self, file: FileId) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.remove(&file);
    }
}

/// The client's bound on a picture (`client::api`'s cap on the image answer).
const MAX_PICTURE: u64 = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::doubles::{MemoryControlPlane, TrackSpec};
    use crate::protocol::model::{AudioFormat, ImageSize};
    use std::sync::atomic::Ordering;

    #[test]
    fn pictures_are_named_by_their_first_bytes() {
        let png = CoverInfo::of(b"\x89PNG\r\n\x1a\nrest");
        assert_eq!((png.size, png.file_name().as_str()), (12, "cover.png"));
        assert_eq!(CoverInfo::of(b"\xff\xd8\xff\xe0").file_name(), "cover.jpg");
        assert_eq!(CoverInfo::of(b"").picture, PictureKind::Jpeg);
    }

    #[tokio::test]
    async fn concurrent_misses_fetch_once_and_a_wrong_size_is_refused() {
        let control = Arc::new(MemoryControlPlane::new());
        let spec = TrackSpec::new(1, "T", AudioFormat::Mp3_320, vec![0u8; 10]);
        let (album, _) = control.add_album("A", "B", &[spec]);
        let file = control.add_image(album, vec![7u8; 1000], ImageSize::Large, None);
        let store = Arc::new(ImageStore::new(control.clone(), Arc::default(), 1 << 20));
        let reads = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get(file, Some(1000)).await })
        });
        for read in futures::future::join_all(reads).await {
            assert_eq!(read.unwrap().unwrap().len(), 1000);
        }
        assert_eq!(control.calls.image.load(Ordering::Relaxed), 1);

        let small = ImageStore::new(control.clone(), Arc::default(), 10);
        let wrong = small.get(file, Some(999)).await.unwrap_err();
        assert!(matches!(wrong, FetchError::WrongLength { .. }), "{wrong}");
        assert!(small.cached(file).is_none(), "beyond the budget: not kept");
    }

    #[tokio::test]
    async fn pictures_kept_on_disk_are_read_from_there_by_the_next_store() {
        let control = Arc::new(MemoryControlPlane::new());
        let spec = TrackSpec::new(1, "T", AudioFormat::Mp3_320, vec![0u8; 10]);
        let (album, _) = control.add_album("A", "B", &[spec]);
        let picture: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let file = control.add_image(album, picture.clone(), ImageSize::Large, None);
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(Store::open(dir.path(), 64 << 20, Arc::default()).unwrap());
        let first =
            ImageStore::new(control.clone(), Arc::default(), 1 << 20).with_disk(Some(disk.clone()));
        assert_eq!(first.get(file, None).await.unwrap(), picture);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !(0..3).all(|piece| disk.contains(file, piece)) {
            assert!(std::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let second =
            ImageStore::new(control.clone(), Arc::default(), 1 << 20).with_disk(Some(disk));
        assert_eq!(second.get(file, Some(600_000)).await.unwrap(), picture);
        assert_eq!(second.get(file, None).await.unwrap(), picture);
        assert_eq!(
            control.calls.image.load(Ordering::Relaxed),
            1,
            "the second read no picture"
        );
    }

    #[tokio::test]
    async fn a_picture_on_a_disk_that_hangs_comes_from_the_origin() {
        let control = Arc::new(MemoryControlPlane::new());
        let spec = TrackSpec::new(1, "T", AudioFormat::Mp3_320, vec![0u8; 10]);
        let (album, _) = control.add_album("A", "B", &[spec]);
        let picture: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let file = control.add_image(album, picture.clone(), ImageSize::Large, None);
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(Store::open(dir.path(), 64 << 20, Arc::default()).unwrap());
        let total = picture.len() as u64;
        for (piece, chunk) in picture.chunks(BLOCK_SIZE as usize).enumerate() {
            disk.write(file, piece as u64, total, chunk);
        }
        disk.read_hold.set(true);
        let stats = Arc::new(Stats::default());
        let mut images =
            ImageStore::new(control.clone(), stats.clone(), 1 << 20).with_disk(Some(disk.clone()));
        images.disk_reads = ReadGuard::new(std::time::Duration::from_millis(50));
        // Hang guard only.
        let wait = std::time::Duration::from_secs(60);
        let got = tokio::time::timeout(wait, images.get(file, Some(total))).await;
        let slow = images.disk_reads.is_slow();
        // The abandoned read goes (the runtime waits for it at the end).
        disk.read_hold.set(false);
        assert_eq!(got.expect("the read hung").unwrap(), picture);
        assert_eq!(control.calls.image.load(Ordering::Relaxed), 1);
        assert_eq!(stats.disk_reads_timed_out.get(), 1);
        assert!(slow, "the disk is skipped until it answers");
    }
}
