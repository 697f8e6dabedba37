use super::super::test_hold::Hold;
use super::*;
use bytes::BytesMut;
use std::time::Duration;

pub(super) const F: FileId = FileId([1; 20]);
pub(super) const G: FileId = FileId([2; 20]);
pub(super) const PIECE: u64 = HEADER_LEN as u64 + 1000;

pub(super) fn data(seed: u8) -> Vec<u8> {
    (0..1000u32).map(|i| seed.wrapping_add(i as u8)).collect()
}

pub(super) fn piece_path(dir: &Path, file: FileId, block: u64) -> PathBuf {
    let hex = file.to_string();
    dir.join("data")
        .join(&hex[..2])
        .join(format!("{hex}.{block}"))
}

/// Flips one bit of a stored piece's data, past its header.
pub(super) fn damage(path: &std::path::Path) {
    let mut stored = std::fs::read(path).unwrap();
    stored[HEADER_LEN + 500] ^= 0x40;
    std::fs::write(path, &stored).unwrap();
}

#[test]
fn a_block_reads_back_exactly_with_its_total() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    assert!(store.read(F, 0).is_none());
    store.write(F, 3, 5000, &data(9));
    let (bytes, total) = store.read(F, 3).unwrap();
    assert_eq!(&bytes[..], &data(9)[..]);
    assert_eq!(total, 5000);
    assert!(store.read(F, 2).is_none());
    assert_eq!(store.stats.disk_hits.get(), 1);
    assert_eq!(store.stats.disk_misses.get(), 2);
    assert_eq!(store.stats.disk_bytes_written.get(), 1000);
    assert_eq!(store.stats.disk_bytes_read.get(), 1000);
    drop(store);
    let again = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    assert_eq!(&again.read(F, 3).unwrap().0[..], &data(9)[..]);
}

#[test]
fn a_corrupted_block_is_a_miss_dropped_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    store.write(F, 0, 1000, &data(1));
    let path = piece_path(dir.path(), F, 0);
    damage(&path);
    assert!(store.read(F, 0).is_none());
    assert_eq!(store.stats.disk_checksum_failures.get(), 1);
    assert!(!path.exists(), "the bad piece is removed");
    assert!(store.read(F, 0).is_none());
    assert_eq!(store.stats.disk_checksum_failures.get(), 1);
    assert_eq!(store.usage().bytes, 0);
    // Fetched again, it is stored again.
    store.write(F, 0, 1000, &data(1));
    assert_eq!(&store.read(F, 0).unwrap().0[..], &data(1)[..]);
}

#[test]
fn torn_writes_and_leftover_temporaries_are_never_believed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    store.write(F, 0, 1000, &data(1));
    store.write(F, 1, 2000, &data(2));
    drop(store);
    // A crash mid-write: a piece cut short, and a temporary never renamed.
    let path = piece_path(dir.path(), F, 1);
    let stored = std::fs::read(&path).unwrap();
    std::fs::write(&path, &stored[..stored.len() / 2]).unwrap();
    std::fs::write(dir.path().join("tmp").join("7"), b"half").unwrap();
    // A piece renamed onto another's name.
    std::fs::copy(piece_path(dir.path(), F, 0), piece_path(dir.path(), F, 2)).unwrap();
    let store = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    assert!(!dir.path().join("tmp").join("7").exists());
    assert!(store.read(F, 1).is_none());
    assert!(store.read(F, 2).is_none());
    assert_eq!(store.stats.disk_checksum_failures.get(), 2);
    assert_eq!(&store.read(F, 0).unwrap().0[..], &data(1)[..]);
}

#[test]
fn the_bound_holds_and_the_least_recently_used_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 3 * PIECE, Arc::default()).unwrap();
    for block in 0..3 {
        store.write(F, block, 10_000, &data(block as u8));
    }
    assert!(store.read(F, 0).is_some());
    store.write(F, 3, 10_000, &data(3));
    assert!(store.usage().bytes <= 3 * PIECE);
    assert_eq!(store.stats.disk_evictions.get(), 1);
    assert!(store.contains(F, 0), "recently read");
    assert!(!store.contains(F, 1), "least recently used");
    assert!(!piece_path(dir.path(), F, 1).exists());
    for block in 4..20 {
        store.write(F, block, 100_000, &data(block as u8));
        assert!(store.usage().bytes <= 3 * PIECE);
    }
}

#[test]
fn the_order_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 10 * PIECE, Arc::default()).unwrap();
    for block in 0..4 {
        store.write(F, block, 10_000, &data(block as u8));
    }
    // Used in the order 2, 0, 3, 1 (1 most recently).
    for block in [2, 0, 3, 1] {
        assert!(store.read(F, block).is_some());
    }
    drop(store);
    // A smaller bound at the next mount keeps the two most recently used.
    let store = Store::open(dir.path(), 2 * PIECE, Arc::default()).unwrap();
    // Once the scan of what is stored is in.
    store.tidy();
    assert!(store.contains(F, 1) && store.contains(F, 3));
    assert!(!store.contains(F, 0) && !store.contains(F, 2));
    assert_eq!(store.usage().bytes, 2 * PIECE);
}

#[test]
fn pinned_files_outlast_the_bound_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 3 * PIECE, Arc::default()).unwrap();
    store.pin(&[F]).unwrap();
    for block in 0..4 {
        store.write(F, block, 10_000, &data(1));
    }
    // The pin wins over the bound.
    assert_eq!(store.usage().bytes, 4 * PIECE);
    assert_eq!(store.usage().pinned_bytes, 4 * PIECE);
    for block in 0..4 {
        store.write(G, block, 10_000, &data(2));
    }
    assert!((0..4).all(|b| store.contains(F, b)));
    assert!((0..4).all(|b| !store.contains(G, b)));
    drop(store);
    let store = Store::open(dir.path(), 3 * PIECE, Arc::default()).unwrap();
    assert!(store.is_pinned(F));
    assert!((0..4).all(|b| store.contains(F, b)));
    // Once the scan is in (the mount's tidy), an unpin evicts at once.
    store.tidy();
    store.unpin(&[F]).unwrap();
    assert!(store.usage().bytes <= 3 * PIECE);
    drop(store);
    assert!(!Store::open(dir.path(), 3 * PIECE, Arc::default())
        .unwrap()
        .is_pinned(F));
}

#[test]
fn a_write_that_fails_turns_writing_off_and_keeps_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    store.write(F, 0, 1000, &data(1));
    // The temporaries' folder gone (a directory pulled away, or unwritable).
    std::fs::remove_dir_all(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("tmp"), b"in the way").unwrap();
    store.write(F, 1, 2000, &data(2));
    assert!(!store.is_writable());
    assert!(!store.contains(F, 1));
    assert_eq!(&store.read(F, 0).unwrap().0[..], &data(1)[..]);
}

/// A real full disk: a 1 MiB tmpfs (needs root, as the FUSE tests do).
#[test]
fn a_full_disk_turns_writing_off() {
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let path = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs needs root");
    let _unmount = Unmount(dir.path().to_path_buf());
    let store = Store::open(dir.path(), 1 << 30, Arc::default()).unwrap();
    let big = vec![7u8; BLOCK_SIZE as usize];
    for block in 0..8 {
        store.write(F, block, 8 * BLOCK_SIZE, &big);
    }
    assert!(!store.is_writable());
    let stored = (0..8).filter(|b| store.read(F, *b).is_some()).count();
    assert!((1..8).contains(&stored), "{stored} blocks");
    assert_eq!(store.stats.disk_checksum_failures.get(), 0);
}

#[test]
fn read_into_appends_a_good_piece_and_leaves_the_buffer_as_it_was_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    store.write(F, 0, 5000, &data(1));
    store.write(F, 1, 5000, &data(2));
    let mut out = BytesMut::from(&b"before"[..]);
    assert_eq!(store.read_into(F, 0, &mut out), Some(5000));
    assert_eq!(&out[..6], b"before");
    assert_eq!(&out[6..], &data(1)[..]);
    // Longer than any piece may be, then shorter than a header: damaged, and `out` untouched.
    let path = piece_path(dir.path(), F, 1);
    std::fs::write(
        &path,
        vec![7u8; (HEADER_LEN as u64 + BLOCK_SIZE + 9) as usize],
    )
    .unwrap();
    let len = out.len();
    assert_eq!(store.read_into(F, 1, &mut out), None);
    assert_eq!(out.len(), len);
    store.write(F, 1, 5000, &data(2));
    std::fs::write(&path, [7u8; 10]).unwrap();
    assert_eq!(store.read_into(F, 1, &mut out), None);
    assert_eq!(out.len(), len);
    assert_eq!(store.stats.disk_checksum_failures.get(), 2);
}

#[test]
fn a_reopened_store_reads_at_once_and_settles_to_the_stored_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    for block in 0..3 {
        store.write(F, block, 10_000, &data(block as u8));
    }
    drop(store);
    let store = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    // Listed from the names alone: every piece is there and reads, scan or no scan.
    assert!((0..3).all(|b| store.contains(F, b)));
    assert_eq!(&store.read(F, 1).unwrap().0[..], &data(1)[..]);
    // Its size is known once it is read; the others' once the scan is in.
    store.tidy();
    assert!(store.usage().bytes == 3 * PIECE);
    assert_eq!(store.usage().files.get(&F), Some(&3000));
}

/// Runs `f` on a thread of its own; fails (rather than hangs) if it blocks on the disk.
pub(super) fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("blocked on a hung disk")
}

fn stored(dir: &Path, bound: u64, blocks: u64) {
    let store = Store::open(dir, bound, Arc::default()).unwrap();
    for block in 0..blocks {
        store.write(F, block, 10_000, &data(block as u8));
    }
}

/// A store whose opening scan hangs (like one on a hung disk) until `gate` opens.
fn open_hung_scan(dir: &Path, bound: u64) -> (Arc<Store>, Arc<Hold>) {
    let gate = Arc::new(Hold::default());
    gate.set(true);
    let waiting = gate.clone();
    let store = Store::open_gated(dir, bound, Arc::default(), move || waiting.pass()).unwrap();
    gate.await_waiting(1);
    (Arc::new(store), gate)
}

#[test]
fn usage_never_waits_for_the_opening_scan() {
    let dir = tempfile::tempdir().unwrap();
    stored(dir.path(), 1 << 20, 3);
    let (store, gate) = open_hung_scan(dir.path(), 1 << 20);
    // The mount's tidy waits for the scan; `trackfs cache` must not.
    let tidying = store.clone();
    let tidy = std::thread::spawn(move || tidying.tidy());
    let asking = store.clone();
    let usage = within(move || asking.usage());
    assert!(usage.measuring);
    assert_eq!(usage.bytes, 3 * scan::WHOLE, "upper bounds until measured");
    assert_eq!(usage.files.get(&F), Some(&(3 * BLOCK_SIZE)));
    gate.set(false);
    tidy.join().unwrap();
    let usage = store.usage();
    assert!(!usage.measuring);
    assert_eq!((usage.bytes, usage.files.get(&F)), (3 * PIECE, Some(&3000)));
}

#[test]
fn a_pin_on_a_hung_disk_holds_no_read_up_and_pins_are_written_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 1 << 20, Arc::default()).unwrap());
    store.write(F, 0, 1000, &data(1));
    store.pins_hold.set(true);
    let pinning = store.clone();
    let pin = std::thread::spawn(move || pinning.pin(&[F]));
    store.pins_hold.await_waiting(1);
    let asking = store.clone();
    let (has, pinned, usage) =
        within(move || (asking.contains(F, 0), asking.is_pinned(F), asking.usage()));
    assert!(has && pinned);
    assert_eq!(usage.pinned, vec![F]);
    // An unpin meanwhile waits its turn, and its file is written last.
    let unpinning = store.clone();
    let unpin = std::thread::spawn(move || unpinning.unpin(&[F]));
    store.pins_hold.set(false);
    pin.join().unwrap().unwrap();
    unpin.join().unwrap().unwrap();
    store.close();
    let again = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    assert!(!again.is_pinned(F));
}

#[test]
fn a_pin_stuck_at_close_leaves_nothing_in_the_next_mounts_folder() {
    let dir = tempfile::tempdir().unwrap();
    let old = Arc::new(Store::open(dir.path(), 1 << 20, Arc::default()).unwrap());
    old.pins_hold.set(true);
    let pinning = old.clone();
    let pin = std::thread::spawn(move || pinning.pin(&[G]));
    old.pins_hold.await_waiting(1);
    old.close();
    // The next mount pins F; then the old disk answers.
    let new = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    new.pin(&[F]).unwrap();
    old.pins_hold.set(false);
    assert!(
        pin.join().unwrap().is_err(),
        "a closed store writes no pins"
    );
    // Nothing of the old store's is left where the new mount's temporaries go.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    new.close();
    let again = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    assert!(again.is_pinned(F) && !again.is_pinned(G));
}

#[test]
fn a_piece_shorter_than_a_header_is_dropped_by_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    stored(dir.path(), 1 << 20, 2);
    // A power cut: a renamed piece left shorter than its header.
    let torn = piece_path(dir.path(), F, 1);
    std::fs::write(&torn, [7u8; 10]).unwrap();
    let store = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    store.tidy();
    let usage = store.usage();
    assert_eq!((usage.bytes, usage.files.get(&F)), (PIECE, Some(&1000)));
    assert!(!store.contains(F, 1) && !torn.exists());
    assert_eq!(&store.read(F, 0).unwrap().0[..], &data(0)[..]);
}

#[test]
fn a_scan_that_ends_after_close_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    stored(dir.path(), 1 << 20, 2);
    let torn = piece_path(dir.path(), F, 1);
    std::fs::write(&torn, [7u8; 10]).unwrap();
    let (old, gate) = open_hung_scan(dir.path(), 1 << 20);
    let tidying = old.clone();
    let tidy = std::thread::spawn(move || tidying.tidy());
    // Closed (the folder may be the next mount's now), then the hung disk answers.
    old.close();
    gate.set(false);
    tidy.join().unwrap();
    assert!(torn.exists(), "removed by a closed store's scan");
    // The next mount's own scan sees to it.
    let new = Store::open(dir.path(), 1 << 20, Arc::default()).unwrap();
    new.tidy();
    assert!(!torn.exists() && !new.contains(F, 1));
    assert_eq!(&new.read(F, 0).unwrap().0[..], &data(0)[..]);
}

#[test]
fn a_piece_written_again_while_it_is_evicted_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), 2 * PIECE, Arc::default()).unwrap());
    store.tidy();
    store.write(G, 0, 1000, &data(1));
    store.write(F, 0, 10_000, &data(2));
    // A write past the bound chooses G's piece and hangs before removing it.
    store.evict_hold.set(true);
    let evicting = store.clone();
    let evictor = std::thread::spawn(move || evicting.write(F, 1, 10_000, &data(3)));
    store.evict_hold.await_waiting(1);
    assert!(!store.contains(G, 0));
    // Meanwhile G is pinned and its piece fetched and written again.
    store.pin(&[G]).unwrap();
    let writing = store.clone();
    let writer = std::thread::spawn(move || writing.write(G, 0, 1000, &data(1)));
    store.evict_hold.await_waiting(2);
    store.evict_hold.set(false);
    evictor.join().unwrap();
    writer.join().unwrap();
    // The pinned piece is stored as the index says, not removed by the first eviction.
    assert!(store.contains(G, 0));
    assert_eq!(&store.read(G, 0).unwrap().0[..], &data(1)[..]);
}

#[test]
fn a_writer_stuck_at_close_places_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let old = Arc::new(Store::open(dir.path(), 1 << 20, Arc::default()).unwrap());
    old.write_hold.set(true);
    let writing = old.clone();
    let writer = std::thread::spawn(move || writing.write(F, 0, 1000, &data(1)));
    old.write_hold.await_waiting(1);
    // Closed with no next mount (which would wipe tmp/ itself), then the disk answers.
    old.close();
    old.write_hold.set(false);
    writer.join().unwrap();
    assert!(!piece_path(dir.path(), F, 0).exists(), "placed after close");
    assert!(!old.contains(F, 0));
    assert_eq!(old.stats.disk_bytes_written.get(), 0);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_writer_stuck_at_close_leaves_the_next_mount_alone() {
    let dir = tempfile::tempdir().unwrap();
    let old = Arc::new(Store::open(dir.path(), 1 << 20, Arc::default()).unwrap());
    old.write_hold.set(true);
    let writing = old.clone();
    let writer = std::thread::spawn(move || writing.write(F, 0, 1000, &data(1)));
    old.write_hold.await_waiting(1);
    old.close();
    // The next mount, in this same process: its writer hangs too, its temporary written.
    let new = Arc::new(Store::open(dir.path(), 1 << 20, Arc::default()).unwrap());
    new.write_hold.set(true);
    let writing = new.clone();
    let new_writer = std::thread::spawn(move || writing.write(G, 0, 1000, &data(2)));
    new.write_hold.await_waiting(1);
    // The old disk answers: it writes nothing, and moves nothing of the new mount's.
    old.write_hold.set(false);
    writer.join().unwrap();
    new.write_hold.set(false);
    new_writer.join().unwrap();
    assert!(!piece_path(dir.path(), F, 0).exists(), "placed after close");
    assert_eq!(old.stats.disk_bytes_written.get(), 0);
    assert!(new.is_writable());
    assert_eq!(&new.read(G, 0).unwrap().0[..], &data(2)[..]);
}

#[test]
fn a_store_closed_while_its_scan_hangs_evicts_nothing_once_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    stored(dir.path(), 10 * PIECE, 4);
    // Opened with a lowered bound: its tidy would evict two pieces once the scan is in.
    let (old, gate) = open_hung_scan(dir.path(), 2 * PIECE);
    let tidying = old.clone();
    let tidy = std::thread::spawn(move || tidying.tidy());
    old.close();
    // The next mount lists the four pieces and pins them.
    let new = Store::open(dir.path(), 10 * PIECE, Arc::default()).unwrap();
    new.pin(&[F]).unwrap();
    gate.set(false);
    tidy.join().unwrap();
    assert_eq!(old.stats.disk_evictions.get(), 0);
    assert!((0..4).all(|b| piece_path(dir.path(), F, b).exists()));
    assert!((0..4).all(|b| new.read(F, b).is_some()));
    assert!(old.pin(&[G]).is_err(), "a closed store writes no pins");
}

#[test]
fn a_torn_piece_written_again_while_it_is_removed_stays() {
    let dir = tempfile::tempdir().unwrap();
    stored(dir.path(), 1 << 20, 2);
    let torn = piece_path(dir.path(), F, 1);
    std::fs::write(&torn, [7u8; 10]).unwrap();
    // The opening scan ends: the tidy finds the torn piece, and hangs before removing it.
    let (store, gate) = open_hung_scan(dir.path(), 1 << 20);
    store.torn_hold.set(true);
    let tidying = store.clone();
    let tidy = std::thread::spawn(move || tidying.tidy());
    gate.set(false);
    store.torn_hold.await_waiting(1);
    assert!(!store.contains(F, 1));
    // Meanwhile a read's fetch writes it again: its writer waits for the removal (or, were
    // nothing to keep it out, is done at once).
    let writing = store.clone();
    let writer = std::thread::spawn(move || {
        writing.write(F, 1, 10_000, &data(1));
        writing.placing_waited.fire();
    });
    store.placing_waited.await_fired(1);
    store.torn_hold.set(false);
    tidy.join().unwrap();
    writer.join().unwrap();
    // The whole piece is stored as the index says, not removed as the torn one.
    assert!(store.contains(F, 1));
    assert_eq!(&store.read(F, 1).unwrap().0[..], &data(1)[..]);
}
