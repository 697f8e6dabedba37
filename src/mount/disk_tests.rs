use super::*;
use crate::client::api::Credentials;
use crate::fs::tree::Tree;
use crate::mount::pins::{self, Calls, NOT_ANSWERING};
use crate::protocol::model::Container;
use crate::readpath::reader::FileRef;
use std::sync::mpsc;

/// Hang guards only: far above anything these tests wait for.
const GUARD: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(100);

/// A mount's settings with its disk cache in `root`; nothing listens on port 9, so the origin
/// cannot be reached.
pub(super) fn config_in(root: &Path) -> MountConfig {
    let credentials = Credentials {
        user: "alice".into(),
        password: "pw".into(),
    };
    let mut config = MountConfig::new("http://127.0.0.1:9", Path::new("/unused"), credentials);
    config.disk_cache = Some(root.to_path_buf());
    config
}

fn disk_in(root: &Path) -> Disk {
    let mut disk = open(&config_in(root), Arc::default())
        .unwrap()
        .expect("a disk cache");
    disk.save_wait = SHORT;
    disk.calls = Calls::new(SHORT);
    disk
}

/// Waits until the saving thread has nothing left to do.
fn saves_done(disk: &Disk) {
    let deadline = Instant::now() + GUARD;
    while lock(&disk.saves.state).running {
        assert!(Instant::now() < deadline, "the saving thread never ended");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn saved_change(folder: &Path) -> u64 {
    snapshot::load(folder).unwrap().last_change
}

#[test]
fn closing_on_a_hung_disk_ends_and_leaves_the_snapshot_saved_before() {
    let root = tempfile::tempdir().unwrap();
    let disk = Arc::new(disk_in(root.path()));
    let folder = disk.folder.clone();
    disk.changes_numbered_to(5);
    disk.refreshed(Catalogue::default(), Extras::default(), HashMap::new());
    assert_eq!(saved_change(&folder), 5);

    disk.saves.hold.set(true);
    disk.changes_numbered_to(9);
    let (done, closed) = mpsc::channel();
    let closing = disk.clone();
    std::thread::spawn(move || {
        // A refresh's save stuck on the disk, then the unmount.
        closing.refreshed(Catalogue::default(), Extras::default(), HashMap::new());
        closing.close();
        let _ = done.send(());
    });
    let ended = closed.recv_timeout(GUARD);
    // The next mount takes the folder at once.
    let next = Store::open(&folder, 1 << 20, Arc::default()).map(drop);
    disk.saves.hold.set(false);
    saves_done(&disk);
    ended.expect("closing hung on the disk");
    assert!(next.is_ok(), "the lock was not released");
    assert_eq!(
        saved_change(&folder),
        5,
        "a late save replaced the snapshot"
    );
    let temporaries = std::fs::read_dir(&folder)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .count();
    assert_eq!(temporaries, 0);
}

#[test]
fn saves_asked_while_one_hangs_hold_one_thread_and_the_latest_is_left() {
    let root = tempfile::tempdir().unwrap();
    let disk = disk_in(root.path());
    disk.saves.hold.set(true);
    for change in 1..=3 {
        disk.changes_numbered_to(change);
        assert!(!disk.save(), "not saved while the disk hangs");
    }
    // The first is stuck on the disk; of the others only the latest waits.
    let waiting = lock(&disk.saves.state)
        .next
        .as_ref()
        .map(|(n, s)| (*n, s.last_change));
    assert_eq!(waiting, Some((3, 3)));
    disk.saves.hold.set(false);
    saves_done(&disk);
    assert_eq!(saved_change(&disk.folder), 3);
    assert!(disk.save(), "saved at once when the disk answers");
    disk.close();
}

#[test]
fn pin_commands_on_a_hung_disk_answer_that_it_is_not_answering() {
    let root = tempfile::tempdir().unwrap();
    let disk = Arc::new(disk_in(root.path()));
    // Writing the pins file hangs, as on a hung disk.
    disk.store.pins_hold.set(true);
    let tree = Arc::new(Tree::build_with(&[], &Extras::default(), &[]));
    let (done, answered) = mpsc::channel();
    let asking = disk.clone();
    std::thread::spawn(move || {
        // One runtime thread: a store call made on it would freeze the runtime.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let file = FileRef {
            id: FileId([1; 20]),
            container: Container::Mp3,
        };
        let answers = runtime.block_on(async {
            let unpinned = pins::unpin(&asking, &[file]).await;
            let reported = pins::report(&asking, &tree).await;
            (unpinned, reported)
        });
        // Let the stuck write go, so the runtime can end.
        asking.store.pins_hold.set(false);
        let back = runtime.block_on(async {
            let deadline = Instant::now() + GUARD;
            loop {
                match pins::report(&asking, &tree).await {
                    Ok(report) => break Some(report),
                    Err(_) if Instant::now() > deadline => break None,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        drop(runtime);
        let _ = done.send((answers, back));
    });
    let ((unpinned, reported), back) = answered.recv_timeout(GUARD).expect("a command hung");
    assert_eq!(unpinned, Err(NOT_ANSWERING.to_string()));
    assert_eq!(reported, Err(NOT_ANSWERING.to_string()));
    let report = back.expect("the disk answers again once it is back");
    assert!(report.contains("pinned"), "{report}");
    disk.close();
}
