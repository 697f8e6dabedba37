use super::*;

const F: FileId = FileId([1; 20]);
const G: FileId = FileId([2; 20]);
const PIECE: u64 = HEADER_LEN as u64 + 1000;

fn data(seed: u8) -> Vec<u8> {
    (0..1000u32).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn piece_path(dir: &Path, file: FileId, block: u64) -> PathBuf {
    let hex = file.to_string();
    dir.join("data")
        .join(&hex[..2])
        .join(format!("{hex}.{block}"))
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
    let mut stored = std::fs::read(&path).unwrap();
    stored[HEADER_LEN + 500] ^= 0x40;
    std::fs::write(&path, &stored).unwrap();
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
    // Its size is known once it is read.
    assert!(store.usage().bytes == 3 * PIECE);
    assert_eq!(store.usage().files.get(&F), Some(&3000));
}
