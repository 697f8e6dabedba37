//! A read waiting on one file's stalled CDN fetch holds up no other file: reads that must wait
//! are answered from tokio tasks, not on the kernel's request threads, so however few of
//! those a mount runs (`fs::fuse::spawn`), another file's reads go on.
//!
//! The stall is a gate, not a sleep: the stuck file's CDN answers wait until the test opens it,
//! so the test asserts an order (the other file's reads finish while the stuck read is still
//! pending, which then finishes with the right bytes) and no server thread outlives it.

mod support;

use prost::Message;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use support::liar::{Answer, Liar, Request};
use trackfs::protocol::crypto::{apply_keystream, AudioKey};
use trackfs::protocol::proto::{library, metadata};

const KEY: [u8; 16] = [
    0x11, 0x27, 0x3c, 0x99, 0x01, 0xfe, 0x42, 0x66, 0x88, 0x13, 0x37, 0xab, 0xcd, 0xef, 0x10, 0x20,
];
/// Track gids and their files: the first file's CDN ranges past its first block stall.
const TRACKS: [(u8, u8, &str); 2] = [(2, 3, "Stuck"), (4, 5, "Free")];

/// Only a hang guard: a step still not done after this fails the test instead of hanging it.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Holds the stuck file's CDN answers until opened, counting the requests it has held.
#[derive(Default)]
struct Gate {
    /// (open, requests that arrived)
    state: Mutex<(bool, usize)>,
    changed: Condvar,
}

impl Gate {
    /// Called by the origin's request thread: waits until the gate opens.
    fn hold(&self) {
        let mut state = self.state.lock().unwrap();
        state.1 += 1;
        self.changed.notify_all();
        while !state.0 {
            state = self.changed.wait(state).unwrap();
        }
    }

    fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    /// Waits (at most `HANG_GUARD`) until a request is being held.
    fn holding(&self) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, HANG_GUARD, |(open, arrived)| !*open && *arrived == 0)
            .unwrap();
        !state.0 && state.1 > 0
    }
}

/// Opens the gate when the test ends, passing or failing, so no held request stays behind.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Runs `work` on its own thread; fails the test, naming `what`, if it is not done within
/// `HANG_GUARD` (the thread is left to finish once the gate opens).
fn guarded<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(work());
    });
    match result.recv_timeout(HANG_GUARD) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done within {HANG_GUARD:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: failed (the panic above)"),
    }
}

fn plain(seed: u32) -> Vec<u8> {
    let mut v = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    v.extend((0..900_000u32).map(|i| ((i + seed) % 241) as u8));
    v
}

fn origin(gate: Arc<Gate>) -> Liar {
    let cipher = |seed| {
        let mut c = plain(seed);
        apply_keystream(&AudioKey(KEY), 0, &mut c);
        c
    };
    let files = Arc::new([cipher(0), cipher(1)]);
    Liar::start(move |base: &str, r: &Request| {
        let p = r.path.as_str();
        if p == "/keymaster/token" {
            return Answer::ok(r#"{"accessToken":"t","tokenType":"Bearer","expiresIn":3600}"#);
        }
        if p == "/library" {
            let album_gid = vec![vec![1; 16]];
            return Answer::ok(library::Library { album_gid }.encode_to_vec());
        }
        if p.starts_with("/metadata/4/album/") {
            let gids: Vec<u8> = TRACKS.iter().map(|(gid, _, _)| *gid).collect();
            return support::liar::album_b(&gids);
        }
        if let Some(gid) = p.strip_prefix("/metadata/4/track/") {
            let Some((number, (gid, file, name))) = TRACKS
                .iter()
                .enumerate()
                .find(|(_, (g, _, _))| hex::encode([*g; 16]) == gid)
            else {
                return Answer::status(404);
            };
            let track = metadata::Track {
                gid: Some(vec![*gid; 16]),
                name: Some((*name).into()),
                number: Some(number as i32 + 1),
                file: vec![metadata::AudioFile {
                    file_id: Some(vec![*file; 20]),
                    format: Some(4),
                }],
                ..Default::default()
            };
            return Answer::ok(track.encode_to_vec());
        }
        if let Some(file) = p.strip_prefix("/storage-resolve/files/audio/interactive/") {
            return Answer::resolved(format!("{base}/audio/{file}"));
        }
        if p.starts_with("/audiokey/") {
            return Answer::ok(KEY.to_vec());
        }
        if let Some(file) = p.strip_prefix("/audio/") {
            let index = TRACKS
                .iter()
                .position(|(_, f, _)| hex::encode([*f; 20]) == file);
            let Some(index) = index else {
                return Answer::status(404);
            };
            if index == 0 && r.range.is_some_and(|(first, _)| first > 0) {
                gate.hold();
            }
            return Answer::ranged(&files[index], r.range);
        }
        Answer::status(404)
    })
}

/// The whole file, read through trackfs: its pages are dropped from the kernel's cache first.
fn read_uncached(path: &std::path::Path) -> Vec<u8> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut file = std::fs::File::open(path).unwrap();
    // SAFETY: a valid open descriptor; fadvise only drops clean cached pages.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn a_read_stuck_on_one_files_fetch_holds_up_no_other_file() {
    if !support::fuse_usable() {
        return;
    }
    let gate = Arc::new(Gate::default());
    let origin = origin(gate.clone());
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    support::write_private(&creds, "user:password\n");
    // The most retries: the stuck read keeps waiting (a retry is held again) far longer than
    // the hang guard, rather than failing with EIO while the other file is read.
    let options = ["--disk-cache", "off", "--retries", "50"];
    let mount = support::Mount::start(&origin.url, &creds, &options);
    // Dropped before the mount: the held requests are answered before trackfs is stopped.
    let _open = OpenOnDrop(gate.clone());
    let album = mount.path().join("A/B");
    let stuck = std::fs::File::open(album.join("01 - Stuck.mp3")).unwrap();
    let (stuck_done, stuck_result) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let read = stuck.read_exact_at(&mut buf, 800_000);
        let _ = stuck_done.send(read.map(|()| buf).map_err(|e| e.raw_os_error()));
    });
    assert!(
        gate.holding(),
        "the read of the stuck file should reach its CDN and wait there"
    );
    // Several rounds, each from trackfs (the kernel's cached pages dropped first), so the
    // kernel's request threads see more than one request each while the stuck read waits.
    let free = album.join("02 - Free.mp3");
    let listed = album.clone();
    guarded("the other file's reads", move || {
        for _ in 0..3 {
            assert!(
                read_uncached(&free) == plain(1),
                "the other file's bytes, whole"
            );
            assert_eq!(std::fs::read_dir(&listed).unwrap().count(), 2);
        }
    });
    assert!(
        matches!(stuck_result.try_recv(), Err(mpsc::TryRecvError::Empty)),
        "the stuck file's read should still be waiting while the gate is shut"
    );
    gate.open();
    let stuck_bytes = stuck_result
        .recv_timeout(HANG_GUARD)
        .expect("the stuck read ends once its CDN answers");
    assert!(
        stuck_bytes == Ok(plain(0)[800_000..865_536].to_vec()),
        "the stuck file's bytes once its CDN answers"
    );
}
