//! The tools people point at a mount: ffmpeg, ffprobe and mpv play and seek every track;
//! playing a track fetches it about once (read-ahead that survives a player's jump to the tail);
//! rsync, cp, find, du and sha256sum copy and walk it. All on a mount of the independent origin
//! (tests/independent/origin.py), so client and origin cannot share a mistake.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use support::{sources, Mount, PythonOrigin};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn setup(seed: &str, tools: &[&str]) -> Option<(PythonOrigin, Mount)> {
    if !support::fuse_usable() || !tools.iter().all(|t| support::require_tool(t)) {
        return None;
    }
    let origin = PythonOrigin::start(sources::music(), &["--seed", seed]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    Some((origin, mount))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs and requires exit 0 and an empty stderr (for `-v error` runs).
fn run_clean(command: &mut Command, what: &str) -> Output {
    let out = support::run(command, Duration::from_secs(120));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{what}: {command:?} exited {} with stderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    out
}

fn ffprobe_duration(path: &Path) -> f64 {
    let out = run_clean(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=duration"])
            .args(["-of", "csv=p=0"])
            .arg(path),
        "ffprobe",
    );
    text(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe duration of {}: {:?}", path.display(), out))
}

fn sha256_map(root: &Path, files: &[(PathBuf, PathBuf)]) -> BTreeMap<PathBuf, String> {
    files
        .iter()
        .map(|(relative, _)| (relative.clone(), support::sha256_file(&root.join(relative))))
        .collect()
}

fn source_sha256_map(files: &[(PathBuf, PathBuf)]) -> BTreeMap<PathBuf, String> {
    files
        .iter()
        .map(|(relative, source)| (relative.clone(), support::sha256_file(source)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Players

#[test]
fn ffmpeg_decodes_and_seeks_into_every_track_cleanly() {
    let Some((origin, mount)) = setup("3", &["ffmpeg"]) else {
        return;
    };
    let files = origin.expected_files();
    assert_eq!(files.len(), sources::TRACKS.len());
    for (relative, _) in &files {
        let track = mount.path().join(relative);
        run_clean(
            Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-i"])
                .arg(&track)
                .args(["-f", "null", "-"]),
            &format!("decoding {}", relative.display()),
        );
        run_clean(
            Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-ss", "2", "-i"])
                .arg(&track)
                .args(["-t", "1", "-f", "null", "-"]),
            &format!("seeking into {}", relative.display()),
        );
    }
    assert_eq!(mount.stat("errors"), 0, "log:\n{}", mount.log_text());
}

#[test]
fn ffprobe_durations_match_the_sources() {
    let Some((origin, mount)) = setup("8", &["ffprobe"]) else {
        return;
    };
    for (relative, source) in origin.expected_files() {
        let (got, want) = (
            ffprobe_duration(&mount.path().join(&relative)),
            ffprobe_duration(&source),
        );
        assert!(
            (got - want).abs() <= 0.05 && want > 1.0,
            "duration of {}: {got} s on the mount, {want} s at the source",
            relative.display()
        );
    }
}

#[test]
fn mpv_plays_a_slice_from_the_middle_headless() {
    let Some((origin, mount)) = setup("9", &["mpv"]) else {
        return;
    };
    for (relative, _) in origin.expected_files() {
        let out = support::run(
            Command::new("mpv")
                .args([
                    "--no-config",
                    "--ao=null",
                    "--vo=null",
                    "--msg-level=all=warn",
                ])
                .args(["--start=50%", "--length=1", "--"])
                .arg(mount.path().join(&relative)),
            Duration::from_secs(60),
        );
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(
            out.status.success(),
            "mpv on {} exited {}:\n{all}",
            relative.display(),
            out.status
        );
        let lower = all.to_lowercase();
        assert!(
            !lower.contains("error") && !lower.contains("failed"),
            "mpv on {} complained:\n{all}",
            relative.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Read patterns

/// A music folder with one long FLAC of white noise (about 18 MB), so read-ahead windows grow
/// over several steps and a tail probe lands within reach of the player's stream. Made once
/// per target dir and shared by test processes (built under a temporary name, then renamed).
fn long_music() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools-long-music-v1");
        if dir.exists() {
            return dir;
        }
        let building = dir.with_extension(format!("building-{}", std::process::id()));
        let path = building.join("Long Player/White Noise/01 Long Noise.flac");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        run_clean(
            Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi"])
                .args(["-i", "anoisesrc=d=136:c=white:r=44100:a=0.9:seed=1"])
                .args(["-ac", "2", "-c:a", "flac"])
                .arg(&path),
            "making the long FLAC",
        );
        // Another process may have won the race; either way `dir` is complete afterwards.
        if std::fs::rename(&building, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&building);
        }
        dir
    })
}

/// The largest track of `origin` and its source.
fn largest(origin: &PythonOrigin) -> (PathBuf, PathBuf) {
    origin
        .expected_files()
        .into_iter()
        .max_by_key(|(_, source)| std::fs::metadata(source).unwrap().len())
        .unwrap()
}

/// Plays the largest track of `music` through with ffmpeg on a fresh mount and returns
/// (file size, bytes fetched from the CDN).
fn play_through(music: &Path, seed: &str) -> Option<(u64, u64)> {
    if !support::fuse_usable() || !support::require_tool("ffmpeg") {
        return None;
    }
    let origin = PythonOrigin::start(music, &["--seed", seed]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let (relative, source) = largest(&origin);
    let size = std::fs::metadata(&source).unwrap().len();
    let before = mount.stat("bytes_fetched");
    run_clean(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(mount.path().join(&relative))
            .args(["-f", "null", "-"]),
        "playing the largest track",
    );
    let fetched = mount.stat("bytes_fetched") - before;
    eprintln!("play-through: {size} bytes, {fetched} fetched");
    Some((size, fetched))
}

#[test]
fn playing_a_track_through_fetches_it_about_once() {
    let Some((size, fetched)) = play_through(sources::music(), "10") else {
        return;
    };
    assert!(size > MIB, "the largest track is {size} bytes");
    assert!(
        fetched >= size && fetched as f64 <= 1.3 * size as f64,
        "playing {size} bytes fetched {fetched} bytes from the CDN"
    );
}

#[test]
fn playing_a_long_track_through_fetches_it_about_once() {
    if !support::require_tool("ffmpeg") {
        return;
    }
    let Some((size, fetched)) = play_through(long_music(), "14") else {
        return;
    };
    assert!(size > 12 * MIB, "the long track is {size} bytes");
    assert!(
        fetched >= size && fetched as f64 <= 1.3 * size as f64,
        "playing {size} bytes fetched {fetched} bytes from the CDN"
    );
}

/// Reads `range` of `file` sequentially in `chunk`-sized reads, checking the bytes.
fn read_sequentially(file: &std::fs::File, source: &[u8], range: std::ops::Range<u64>, chunk: u64) {
    let mut offset = range.start;
    let mut buf = vec![0u8; chunk as usize];
    while offset < range.end {
        let want = chunk.min(range.end - offset) as usize;
        let n = file.read_at(&mut buf[..want], offset).unwrap();
        assert!(n > 0, "early EOF at {offset}");
        assert!(
            buf[..n] == source[offset as usize..offset as usize + n],
            "bytes at {offset}"
        );
        offset += n as u64;
    }
}

/// A player's pattern on the largest track of `music`: the first MiB from the start, a probe
/// of the tail (duration, tags), then on to the end. Returns (size, bytes fetched, requests).
fn jump_to_the_tail_and_back(music: &Path, seed: &str) -> Option<(u64, u64, u64)> {
    if !support::fuse_usable() {
        return None;
    }
    let origin = PythonOrigin::start(music, &["--seed", seed]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let (relative, source) = largest(&origin);
    let source = std::fs::read(source).unwrap();
    let size = source.len() as u64;
    let (bytes_before, requests_before) = (mount.stat("bytes_fetched"), mount.stat("cdn_requests"));
    let file = std::fs::File::open(mount.path().join(&relative)).unwrap();
    read_sequentially(&file, &source, 0..MIB, 64 * KIB);
    let mut tail = vec![0u8; (64 * KIB) as usize];
    let n = file.read_at(&mut tail, size - 64 * KIB).unwrap();
    assert_eq!(&tail[..n], &source[(size - 64 * KIB) as usize..]);
    read_sequentially(&file, &source, MIB..size, 64 * KIB);
    let fetched = mount.stat("bytes_fetched") - bytes_before;
    let requests = mount.stat("cdn_requests") - requests_before;
    eprintln!("tail jump: {size} bytes, {fetched} fetched in {requests} requests");
    Some((size, fetched, requests))
}

fn assert_fetched_once(size: u64, fetched: u64, requests: u64) {
    assert!(
        fetched as f64 <= 1.3 * size as f64,
        "reading {size} bytes with a tail jump fetched {fetched} bytes"
    );
    // No block twice: everything fetched is at most the stored file (FLAC hides no header).
    assert!(
        fetched <= size,
        "some bytes were fetched twice: {fetched} bytes for a file of {size}"
    );
    // Read-ahead in growing windows: a handful of GETs, not one per 256 KiB block.
    let blocks = size.div_ceil(256 * KIB);
    assert!(
        requests <= (blocks / 3).max(3),
        "{requests} CDN requests for {size} bytes ({blocks} blocks): read-ahead restarted?"
    );
}

#[test]
fn a_jump_to_the_tail_and_back_does_not_restart_the_read_ahead() {
    if !support::require_tool("ffmpeg") {
        return;
    }
    let Some((size, fetched, requests)) = jump_to_the_tail_and_back(sources::music(), "11") else {
        return;
    };
    assert_fetched_once(size, fetched, requests);
}

#[test]
fn a_jump_to_the_tail_of_a_long_track_and_back_does_not_restart_the_read_ahead() {
    if !support::require_tool("ffmpeg") {
        return;
    }
    let Some((size, fetched, requests)) = jump_to_the_tail_and_back(long_music(), "15") else {
        return;
    };
    assert!(size > 12 * MIB, "the long track is {size} bytes");
    assert_fetched_once(size, fetched, requests);
}

/// `count` reads of 64 KiB at offsets that are the same every run (xorshift64), each checked
/// against the source.
fn random_reads(file: &std::fs::File, source: &[u8], count: usize) {
    let size = source.len() as u64;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut buf = vec![0u8; (64 * KIB) as usize];
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let offset = state % size;
        let n = file.read_at(&mut buf, offset).unwrap();
        let at = offset as usize;
        assert!(buf[..n] == source[at..at + n], "bytes at {offset}");
    }
}

/// 256 random reads of the long track, after `prepare` (given the open file and its source);
/// asserts that they fetched no block twice, which would make them fetch more than the file.
fn random_reads_fetch_at_most_the_file(seed: &str, prepare: impl FnOnce(&std::fs::File, &[u8])) {
    if !support::require_tool("ffmpeg") || !support::fuse_usable() {
        return;
    }
    let origin = PythonOrigin::start(long_music(), &["--seed", seed]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let (relative, source) = largest(&origin);
    let source = std::fs::read(source).unwrap();
    let size = source.len() as u64;
    let file = std::fs::File::open(mount.path().join(&relative)).unwrap();
    prepare(&file, &source);
    let bytes_before = mount.stat("bytes_fetched");
    random_reads(&file, &source, 256);
    let fetched = mount.stat("bytes_fetched") - bytes_before;
    eprintln!("random reads: {size} bytes, {fetched} fetched");
    assert!(
        fetched <= size,
        "random reads of {size} bytes fetched {fetched} bytes: blocks were fetched twice"
    );
}

/// Random reads all over a track land near the read-ahead streams again and again; none of
/// that may make trackfs drop blocks it will be asked for again (before, random 64 KiB reads
/// of a 14 MB track fetched it 4.5 times over while the cache was nearly empty).
#[test]
fn random_reads_fetch_no_block_twice() {
    random_reads_fetch_at_most_the_file("16", |_, _| {});
}

/// The same after the kernel let go of a file it had read whole: what trackfs knew it had
/// handed over is stale, and must not make it drop blocks around each random read.
#[test]
fn random_reads_after_the_kernel_let_a_file_go_fetch_no_block_twice() {
    random_reads_fetch_at_most_the_file("17", |file, source| {
        read_sequentially(file, source, 0..source.len() as u64, MIB);
        let dropped = unsafe {
            use std::os::fd::AsRawFd;
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
        };
        assert_eq!(dropped, 0);
    });
}

// ---------------------------------------------------------------------------------------------
// Copies

fn rsync(from: &Path, to: &Path, extra: &[&str]) -> Output {
    let out = support::run(
        Command::new("rsync")
            .args(["-a", "--exclude", "/.trackfs"])
            .args(extra)
            .arg(format!("{}/", from.display()))
            .arg(format!("{}/", to.display())),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "rsync exited {}:\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

#[test]
fn rsync_copies_the_sources_exactly_and_a_second_run_has_nothing_to_do() {
    let Some((origin, mount)) = setup("12", &["rsync"]) else {
        return;
    };
    let files = origin.expected_files();
    let dest = tempfile::tempdir().unwrap();
    rsync(&mount.path(), dest.path(), &[]);
    let copied: Vec<PathBuf> = support::walk_files(dest.path());
    let mut expected: Vec<PathBuf> = files.iter().map(|(r, _)| r.clone()).collect();
    expected.sort();
    assert_eq!(copied, expected, "rsync copied exactly the tracks");
    assert_eq!(sha256_map(dest.path(), &files), source_sha256_map(&files));
    for (relative, _) in &files {
        let (a, b) = (
            std::fs::metadata(mount.path().join(relative)).unwrap(),
            std::fs::metadata(dest.path().join(relative)).unwrap(),
        );
        assert_eq!(
            a.modified().unwrap(),
            b.modified().unwrap(),
            "mtime of {relative:?}"
        );
    }

    let out = rsync(
        &mount.path(),
        dest.path(),
        &["--itemize-changes", "--stats"],
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Number of regular files transferred: 0"),
        "the second rsync transferred files:\n{stdout}"
    );
    // Itemized lines start with the update type; a clean run itemizes nothing but `.d` dirs.
    let changes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(['<', '>', 'c', 'h', '*']))
        .collect();
    assert!(changes.is_empty(), "second rsync changed: {changes:?}");
}

#[test]
fn cp_find_du_and_sha256sum_work_over_the_mount() {
    let Some((origin, mount)) = setup("13", &["sha256sum"]) else {
        return;
    };
    let files = origin.expected_files();
    let root = mount.path();

    // find: every track once, plus trackfs's own files.
    let out = run_clean(Command::new("find").arg(&root).args(["-type", "f"]), "find");
    let mut found: Vec<PathBuf> = text(&out.stdout)
        .lines()
        .map(|l| Path::new(l).strip_prefix(&root).unwrap().to_path_buf())
        .collect();
    found.sort();
    let mut expected: Vec<PathBuf> = files.iter().map(|(r, _)| r.clone()).collect();
    for own in ["stats", "changes", "refresh"] {
        expected.push(Path::new(".trackfs").join(own));
    }
    expected.sort();
    assert_eq!(found, expected);

    // du: sizes in blocks, so a non-zero total; apparent size = the sources' bytes.
    let out = run_clean(Command::new("du").arg("-s").arg(&root), "du -s");
    let blocks: u64 = text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(blocks > 0, "du -s says {blocks}");
    let sources_bytes: u64 = files
        .iter()
        .map(|(_, s)| std::fs::metadata(s).unwrap().len())
        .sum();
    let out = run_clean(
        Command::new("du")
            .args(["-s", "-b", "--exclude=.trackfs"])
            .arg(&root),
        "du -sb",
    );
    let apparent: u64 = text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        apparent >= sources_bytes && apparent < sources_bytes + 64 * KIB,
        "du -sb says {apparent}, the tracks hold {sources_bytes} bytes (+ directories)"
    );

    // sha256sum over the mount, one run over every track.
    let out = run_clean(
        Command::new("sha256sum")
            .arg("--")
            .args(files.iter().map(|(r, _)| root.join(r))),
        "sha256sum",
    );
    let sums: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let want: Vec<String> = files.iter().map(|(_, s)| support::sha256_file(s)).collect();
    assert_eq!(sums, want, "sha256sum over the mount");

    // cp -r of the whole mount (stats file included, as a user would).
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("copy");
    run_clean(
        Command::new("cp").arg("-r").arg(&root).arg(&target),
        "cp -r",
    );
    assert_eq!(sha256_map(&target, &files), source_sha256_map(&files));
    let mut stats = String::new();
    std::fs::File::open(target.join(".trackfs/stats"))
        .unwrap()
        .read_to_string(&mut stats)
        .unwrap();
    assert!(stats.contains("bytes_fetched "), "copied stats:\n{stats}");
}
