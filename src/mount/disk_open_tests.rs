//! Mount start on a hung disk: opening the cache folder and loading the snapshot are waited
//! for within a bound, then the mount goes on without them. A named pipe stands in for a file
//! on a hung disk (opening it for reading waits for a writer); each test lets it go at the end,
//! so no thread stays stuck.

use super::*;
use crate::readpath::background::hung_file;
use crate::readpath::disk::test_hold::Signal;
use std::sync::mpsc;

/// Hang guards only: far above anything these tests wait for.
const GUARD: Duration = Duration::from_secs(60);
/// The bound the tests give the disk, in place of `OPEN_WAIT`.
const WAIT: Duration = Duration::from_millis(200);

use super::tests::config_in as config;

fn folder_of(config: &MountConfig) -> PathBuf {
    let origin = dir::origin_folder(&config.origin, &config.credentials.user);
    config.disk_cache.as_ref().unwrap().join(origin)
}

/// What `f` logs at warning level, one line each.
fn warnings_of<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let (result, logs) = crate::test_logs::logs_of(tracing::Level::WARN, f);
    (result, logs.lines().map(str::to_owned).collect())
}

/// Runs `f` on a thread of its own, failing the test if it does not end within `GUARD`.
fn guarded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, answer) = mpsc::channel();
    std::thread::spawn(move || drop(send.send(f())));
    answer.recv_timeout(GUARD).expect("hung on the disk")
}

/// Lets whoever waits on the pipe at `path` go (it reads an empty file), then removes it.
fn let_go(path: &Path) {
    let pipe = path.to_path_buf();
    guarded(move || drop(std::fs::OpenOptions::new().write(true).open(&pipe)));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_cache_folder_that_hangs_is_left_and_its_lock_released_once_it_answers() {
    let root = tempfile::tempdir().unwrap();
    let config = config(root.path());
    let folder = folder_of(&config);
    dir::make_private(&folder).unwrap();
    // Opening the store reads its pins (after taking the lock): that read hangs.
    hung_file(&folder.join("pins"));

    let asked = config.clone();
    let (opened, warnings) = guarded(move || {
        warnings_of(|| open_within(&asked, Arc::default(), WAIT).map(|d| d.is_some()))
    });
    assert!(matches!(opened, Ok(false)), "{opened:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let expected = format!(
        "disk cache {} did not answer within 0.2 s (a hung disk?); going on without a disk cache",
        folder.display()
    );
    assert!(warnings[0].contains(&expected), "{warnings:?}");

    // The disk answers: the store opened late is dropped, so the next mount takes the folder.
    let_go(&folder.join("pins"));
    let deadline = Instant::now() + GUARD;
    let disk = loop {
        match open_within(&config, Arc::default(), GUARD) {
            Ok(Some(disk)) => break disk,
            Err(MountError::Setup(e)) if Instant::now() < deadline => {
                assert!(e.contains("another"), "{e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            other => panic!(
                "the late store kept the folder: {:?}",
                other.map(|d| d.is_some())
            ),
        }
    };
    disk.close();
}

#[test]
fn a_cache_folder_that_goes_on_answering_is_waited_for_past_the_bound() {
    let root = tempfile::tempdir().unwrap();
    let config = config(root.path());
    let folder = folder_of(&config);
    dir::make_private(&folder).unwrap();
    hung_file(&folder.join("pins"));

    // Each look at the open's progress finds a step more, as when a slow disk lists a large
    // cache: the open is waited for while it is held for many times `WAIT`, until it answers.
    let looks = Arc::new(Signal::default());
    let looked = looks.clone();
    let asked = config.clone();
    let (send, opened) = mpsc::channel();
    std::thread::spawn(move || {
        let seen = move |steps: &AtomicU64| {
            looked.fire();
            steps.fetch_add(1, Ordering::Relaxed) + 1
        };
        let opened = warnings_of(|| open_watched(&asked, Arc::default(), WAIT, seen));
        drop(send.send(opened));
    });
    // Looks come `WAIT / LOOKS` apart at the least: this is four `WAIT`s.
    looks.await_fired(4 * LOOKS as usize + 1);
    assert!(opened.try_recv().is_err(), "given up while it went on");
    let_go(&folder.join("pins"));
    let (opened, warnings) = opened.recv_timeout(GUARD).expect("hung on the disk");
    let disk = opened
        .unwrap()
        .expect("the disk cache, opened once it answered");
    assert!(warnings.is_empty(), "{warnings:?}");
    disk.close();
}

#[test]
fn a_folder_another_mount_holds_still_fails_the_mount() {
    let root = tempfile::tempdir().unwrap();
    let config = config(root.path());
    // Both opens answer (the second with "locked"): only the hung cases are given `WAIT`.
    let first = open_within(&config, Arc::default(), GUARD)
        .unwrap()
        .expect("a disk cache");
    let second = open_within(&config, Arc::default(), GUARD);
    assert!(
        matches!(second, Err(MountError::Setup(_))),
        "{:?}",
        second.map(|d| d.is_some())
    );
    first.close();
}

/// Starts from `disk` with an origin answering `online`, on one runtime thread.
fn start(
    disk: Arc<Disk>,
    online: Result<Catalogue, FetchError>,
) -> (Result<Option<std::time::SystemTime>, String>, Vec<String>) {
    guarded(move || {
        warnings_of(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let started = runtime.block_on(disk.catalogue(async { online }));
            started.map(|s| s.from_snapshot).map_err(|e| e.to_string())
        })
    })
}

/// A disk cache whose snapshot hangs, waited for `WAIT` (the open itself answers: `GUARD`).
fn disk_with_hung_snapshot(root: &Path) -> Arc<Disk> {
    let mut disk = open_within(&config(root), Arc::default(), GUARD)
        .unwrap()
        .expect("a disk cache");
    // A snapshot to start from, then one that hangs in its place.
    disk.refreshed(Catalogue::default(), Extras::default(), HashMap::new());
    let file = disk.folder.join(snapshot::FILE_NAME);
    std::fs::remove_file(&file).unwrap();
    hung_file(&file);
    disk.open_wait = WAIT;
    Arc::new(disk)
}

#[test]
fn a_snapshot_that_hangs_is_left_and_the_mount_starts_from_the_origin() {
    let root = tempfile::tempdir().unwrap();
    let disk = disk_with_hung_snapshot(root.path());
    let (started, warnings) = start(disk.clone(), Ok(Catalogue::default()));
    assert_eq!(started, Ok(None), "not from the snapshot");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .contains("did not answer within 0.2 s (a hung disk?); starting from the origin"),
        "{warnings:?}"
    );
    let_go(&disk.folder.join(snapshot::FILE_NAME));
    disk.close();
}

#[test]
fn offline_with_a_snapshot_that_hangs_fails_with_the_origins_error() {
    let root = tempfile::tempdir().unwrap();
    let disk = disk_with_hung_snapshot(root.path());
    let unreachable = FetchError::Connect {
        url: "http://127.0.0.1:9/api/token".into(),
        reason: "connection refused".into(),
    };
    let (started, warnings) = start(disk.clone(), Err(unreachable));
    let error = started.expect_err("no catalogue to start from");
    assert!(
        error.starts_with("cannot use the origin: no answer from"),
        "{error}"
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let_go(&disk.folder.join(snapshot::FILE_NAME));
    disk.close();
}

#[test]
fn no_thread_for_the_open_says_why_once() {
    let why = std::io::Error::from_raw_os_error(11);
    let e = Unanswered::NoThread(why);
    let text = e.to_string();
    assert!(
        text.contains("no thread: Resource temporarily unavailable"),
        "{text}"
    );
    // Not its source as well: an error chain would print it twice.
    assert!(std::error::Error::source(&e).is_none());
}
