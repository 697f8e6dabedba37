//! A library that changes while it is mounted (issue 16), through real FUSE mounts: against
//! `trackfs publish` + `trackfs serve` (live reload, ETags) and the independent origin (with
//! and without ETags). Albums published appear after `trackfs refresh` and by themselves within
//! the interval; albums removed disappear while an open reader reads on exactly; a quiet
//! refresh is one conditional request; a remount starts from the snapshot, then converges;
//! inode numbers of unchanged files survive.

mod support;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::fuse_and_ffmpeg as usable;
use support::rust_origin::RustOrigin;
use support::{copy_dir, sources, wait_for, Mount, PythonOrigin};

/// Names in a directory of the mount (no `stat`: only what the listing says).
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `trackfs refresh MOUNTPOINT`: (success, stdout + stderr).
fn refresh(mount: &Mount) -> (bool, String) {
    let out = support::run(
        Command::new(support::TRACKFS)
            .arg("refresh")
            .arg(mount.path()),
        Duration::from_secs(120),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn refresh_ok(mount: &Mount) {
    let (ok, text) = refresh(mount);
    assert!(ok, "trackfs refresh failed: {text}\n{}", mount.log_text());
}

fn changes(mount: &Mount) -> String {
    std::fs::read_to_string(mount.path().join(".trackfs/changes")).unwrap()
}

/// A new Ogg track, tagged, at `source/<artist>/<album>/01 <title>.ogg`.
fn new_track(source: &Path, artist: &str, album: &str, title: &str) -> PathBuf {
    let path = source
        .join(artist)
        .join(album)
        .join(format!("01 {title}.ogg"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=f=220:d=2",
            "-ac",
            "2",
        ])
        .args(["-c:a", "libvorbis", "-q:a", "4"])
        .args(["-metadata", &format!("artist={artist}")])
        .args(["-metadata", &format!("album={album}")])
        .args(["-metadata", &format!("title={title}")])
        .args(["-metadata", "track=1"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg");
    path
}

fn publish(source: &Path, library: &Path) {
    let out = support::run(
        Command::new(support::TRACKFS)
            .arg("publish")
            .arg(source)
            .arg(library),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const BJORK: &str = "Björk";
const BJORK_TRACK: &str = "Björk/Vespertine: \"Live\"?/02 - Cocoon?.mp3";
const BJORK_SOURCE: &str = "Björk/Vespertine: \"Live\"?/02 Cocoon?.mp3";
const KEPT_TRACK: &str = "Ensemble l'Été/Suite: Part \"One\"/1-01 - Prélude.ogg";
const SUITE: &str = "Ensemble l'Été/Suite: Part \"One\"";
const RETAGGED_SOURCE: &str = "Ensemble l'Été/Suite: Part \"One\"/1-02 Allemande?.mp3";

/// Gives a source file a new title tag in place (new bytes, same path), as a tag editor does.
fn retag(path: &Path, title: &str) {
    let temp = path.with_extension("retag.mp3");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(path)
        .args(["-c", "copy", "-map_metadata", "0"])
        .args(["-metadata", &format!("title={title}")])
        .arg(&temp)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg retag");
    std::fs::rename(&temp, path).unwrap();
}

/// Reads what is left of `file` from `offset` on.
fn read_rest(file: &std::fs::File, got: &mut [u8], mut offset: usize) {
    while offset < got.len() {
        let n = file.read_at(&mut got[offset..], offset as u64).unwrap();
        assert!(n > 0, "early EOF at {offset}");
        offset += n;
    }
}

#[test]
fn publish_while_mounted_then_trackfs_refresh_shows_exactly_the_new_state() {
    if !usable() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    copy_dir(sources::music(), source.path());
    let origin = RustOrigin::start(source.path(), &[]);
    let mount = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--refresh-interval", "off"],
    );
    let kept_ino = std::fs::metadata(mount.path().join(KEPT_TRACK))
        .unwrap()
        .ino();
    // A reader has a track of the album that is about to leave open, half read.
    let open = std::fs::File::open(mount.path().join(BJORK_TRACK)).unwrap();
    let want = std::fs::read(sources::music().join(BJORK_SOURCE)).unwrap();
    let mut got = vec![0u8; want.len()];
    let half = want.len() / 2;
    assert_eq!(open.read_at(&mut got[..half], 0).unwrap(), half);

    let suite_before = names(&mount.path().join(SUITE));
    std::fs::remove_dir_all(source.path().join(BJORK)).unwrap();
    new_track(source.path(), "Newcomer", "First Light", "Dawn");
    retag(&source.path().join(RETAGGED_SOURCE), "Gigue");
    publish(source.path(), &origin.library);
    refresh_ok(&mount);

    let root = names(&mount.path());
    assert!(root.contains(&"Newcomer".to_string()), "{root:?}");
    assert!(!root.contains(&BJORK.to_string()), "{root:?}");
    assert_eq!(
        names(&mount.path().join("Newcomer/First Light")),
        ["01 - Dawn.ogg"]
    );
    assert!(std::fs::metadata(mount.path().join(BJORK_TRACK)).is_err());
    read_rest(&open, &mut got, half);
    assert!(got == want, "the open file read exactly to its end");
    // The retagged track has its new name only: no duplicate, nothing else moved.
    let suite = names(&mount.path().join(SUITE));
    assert_eq!(suite.len(), suite_before.len(), "{suite:?}");
    assert!(suite.iter().any(|n| n.contains("Gigue")), "{suite:?}");
    assert!(!suite.iter().any(|n| n.contains("Allemande")), "{suite:?}");
    let after = std::fs::metadata(mount.path().join(KEPT_TRACK)).unwrap();
    assert_eq!(after.ino(), kept_ino, "an unchanged file keeps its inode");
    let feed = changes(&mount);
    assert!(feed.contains(" removed Björk\n"), "{feed}");
    assert!(feed.contains(" added Newcomer\n"), "{feed}");
    assert!(
        feed.contains(" added Ensemble l'Été/Suite: Part \"One\"/1-02 - Gigue.mp3\n"),
        "{feed}"
    );
    assert!(
        feed.contains(" removed Ensemble l'Été/Suite: Part \"One\"/1-02 - Allemande?.mp3\n"),
        "{feed}"
    );
    assert_eq!(mount.stat("albums_added"), 1);
    assert_eq!(mount.stat("albums_removed"), 1);

    // Nothing changed since: one conditional request, answered 304.
    let quiet = mount.stat("not_modified");
    refresh_ok(&mount);
    assert_eq!(mount.stat("not_modified"), quiet + 1);
    assert_eq!(changes(&mount), feed, "a quiet refresh changes nothing");
}

#[test]
fn trackfs_refresh_says_why_when_the_origin_is_gone() {
    if !usable() {
        return;
    }
    let origin = RustOrigin::start(sources::music(), &[]);
    let mount = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--refresh-interval", "off", "--retries", "0"],
    );
    drop(origin);
    let (ok, text) = refresh(&mount);
    assert!(!ok, "{text}");
    assert!(text.contains("cannot refresh from the origin"), "{text}");
    // The mount shows the library as it was.
    assert!(names(&mount.path()).contains(&BJORK.to_string()));
}

/// The independent origin, with or without ETags: an album excluded at first is published
/// (the exclusion lifted) and appears by itself within the 1 s interval; then another leaves
/// while a reader of one of its tracks reads on.
fn independent(etags: bool) {
    if !usable() {
        return;
    }
    let mut flags = vec!["--seed", "21", "--protocol", "v1.1"];
    if etags {
        flags.push("--etags");
    }
    let mut origin = PythonOrigin::start(sources::music(), &flags);
    let expected = origin.expected_files();
    let (late, _) = expected[0].clone();
    let late_album = late.parent().unwrap().to_path_buf();
    let late_key = late_album.to_str().unwrap().to_string();
    origin.set_catalogue(&serde_json::json!({ "exclude": [late_key] }));
    let mount = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--refresh-interval", "1s"],
    );
    assert!(std::fs::metadata(mount.path().join(&late)).is_err());
    let (leaving, leaving_source) = origin
        .expected_files()
        .into_iter()
        .find(|(r, _)| !r.starts_with(&late_album))
        .unwrap();
    let kept_ino = origin
        .expected_files()
        .iter()
        .find(|(r, _)| r.parent() != leaving.parent())
        .map(|(r, _)| {
            (
                r.clone(),
                std::fs::metadata(mount.path().join(r)).unwrap().ino(),
            )
        });

    origin.set_catalogue(&serde_json::json!({}));
    wait_for(Duration::from_secs(60), "the published album", || {
        std::fs::metadata(mount.path().join(&late)).ok()
    });
    let data = std::fs::read(mount.path().join(&late)).unwrap();
    assert!(data == std::fs::read(&expected[0].1).unwrap(), "its bytes");

    let open = std::fs::File::open(mount.path().join(&leaving)).unwrap();
    let want = std::fs::read(&leaving_source).unwrap();
    let mut got = vec![0u8; want.len()];
    let half = want.len() / 2;
    assert_eq!(open.read_at(&mut got[..half], 0).unwrap(), half);
    let leaving_key = leaving.parent().unwrap().to_str().unwrap().to_string();
    origin.set_catalogue(&serde_json::json!({ "exclude": [leaving_key] }));
    refresh_ok(&mount);
    assert!(std::fs::metadata(mount.path().join(&leaving)).is_err());
    read_rest(&open, &mut got, half);
    assert!(got == want, "the open file read exactly to its end");
    if let Some((kept, ino)) = kept_ino.filter(|(r, _)| !r.starts_with(leaving.parent().unwrap())) {
        let now = std::fs::metadata(mount.path().join(&kept)).unwrap().ino();
        assert_eq!(now, ino, "{} keeps its inode", kept.display());
    }
    let feed = changes(&mount);
    assert!(feed.contains(" added "), "{feed}");
    assert!(feed.contains(" removed "), "{feed}");
    if etags {
        let quiet = mount.stat("not_modified");
        refresh_ok(&mount);
        assert!(mount.stat("not_modified") > quiet);
    }
}

#[test]
fn the_independent_origin_with_etags() {
    independent(true);
}

#[test]
fn the_independent_origin_without_etags() {
    independent(false);
}

#[test]
fn a_remount_shows_the_snapshot_at_once_then_converges() {
    if !usable() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    copy_dir(sources::music(), source.path());
    let origin = RustOrigin::start(source.path(), &["--latency", "1000"]);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().display().to_string();
    let flags = [
        "--disk-cache",
        cache_dir.as_str(),
        "--refresh-interval",
        "off",
    ];
    let before = {
        let mount = Mount::start(&origin.url, &origin.credentials_file, &flags);
        names(&mount.path())
    };
    assert!(before.contains(&BJORK.to_string()));
    std::fs::remove_dir_all(source.path().join(BJORK)).unwrap();
    publish(source.path(), &origin.library);

    // Every request to the origin takes a second: the tree shown at once is the snapshot's,
    // with the album that has left the origin meanwhile.
    let mount = Mount::start(&origin.url, &origin.credentials_file, &flags);
    assert_eq!(names(&mount.path()), before);
    assert_eq!(
        names(&mount.path().join("Ensemble l'Été/Suite: Part \"One\"")).len(),
        3
    );
    assert!(mount.stat("snapshot_age_seconds") < 3600);
    // Then it converges to the origin's state by itself.
    wait_for(
        Duration::from_secs(60),
        "the refresh after the remount",
        || (!names(&mount.path()).contains(&BJORK.to_string())).then_some(()),
    );
    assert_eq!(mount.stat("refreshes"), 1);
}

#[test]
fn sighup_refreshes_and_the_interval_does_by_itself() {
    if !usable() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    copy_dir(sources::music(), source.path());
    let origin = RustOrigin::start(source.path(), &[]);
    let hangup = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--refresh-interval", "off"],
    );
    let interval = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--refresh-interval", "1s"],
    );
    new_track(source.path(), "Newcomer", "First Light", "Dawn");
    publish(source.path(), &origin.library);
    let dawn = "Newcomer/First Light/01 - Dawn.ogg";
    wait_for(Duration::from_secs(60), "the interval's refresh", || {
        std::fs::metadata(interval.path().join(dawn)).ok()
    });
    assert!(
        std::fs::metadata(hangup.path().join(dawn)).is_err(),
        "no refresh without being asked"
    );
    // SAFETY: a signal to the mount this test started.
    unsafe { libc::kill(hangup.pid() as i32, libc::SIGHUP) };
    wait_for(Duration::from_secs(60), "the refresh on SIGHUP", || {
        std::fs::metadata(hangup.path().join(dawn)).ok()
    });
    assert!(
        support::is_mounted(&hangup.path()),
        "SIGHUP does not stop the mount"
    );
    assert_eq!(hangup.stat("refreshes"), 1);
}

/// Re-encodes `path`'s audio as a new tone, keeping its tags exactly: new bytes (a new file
/// id), the same track, the same album answer.
fn replace_audio(path: &Path, frequency: u32) {
    let temp = path.with_extension("new.ogg");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=f={frequency}:d=2"))
        .arg("-i")
        .arg(path)
        .args(["-map", "0:a", "-map_metadata", "1:s:0", "-ac", "2"])
        .args(["-c:a", "libvorbis", "-q:a", "4"])
        .arg(&temp)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg re-encode");
    std::fs::rename(&temp, path).unwrap();
}

/// The requests `serve --log-level debug` logged so far (`GET /path -> status in …`).
fn origin_requests(origin: &RustOrigin) -> Vec<String> {
    std::fs::read_to_string(&origin.log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" -> ") && (l.contains("GET /") || l.contains("POST /")))
        .map(str::to_string)
        .collect()
}

/// An album's answer says nothing of its tracks' files (DESIGN.md §1.3: only `/library`'s
/// ETag stands for more than its answer), so new audio under unchanged tags is found; and
/// then a quiet refresh costs the origin exactly one request.
#[test]
fn new_audio_under_the_same_tags_reaches_the_mount_then_a_quiet_refresh_is_one_request() {
    if !usable() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    let track = new_track(source.path(), "Newcomer", "First Light", "Dawn");
    let origin = RustOrigin::start(source.path(), &["--log-level", "debug"]);
    let mount = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--refresh-interval", "off"],
    );
    let album = mount.path().join("Newcomer/First Light");
    let shown = album.join("01 - Dawn.ogg");
    assert!(std::fs::read(&shown).unwrap() == std::fs::read(&track).unwrap());

    replace_audio(&track, 660);
    let want = std::fs::read(&track).unwrap();
    publish(source.path(), &origin.library);
    refresh_ok(&mount);
    assert_eq!(names(&album), ["01 - Dawn.ogg"], "the same track");
    assert_eq!(std::fs::metadata(&shown).unwrap().len(), want.len() as u64);
    assert!(
        std::fs::read(&shown).unwrap() == want,
        "the new audio, exactly"
    );

    let before = origin_requests(&origin).len();
    refresh_ok(&mount);
    let seen = origin_requests(&origin).split_off(before);
    assert_eq!(seen.len(), 1, "a quiet refresh: {seen:#?}");
    assert!(seen[0].contains("GET /library -> 304"), "{seen:#?}");
}

/// Against the independent origin without ETags, a track that serves another file under the
/// same id and name (its album's answer unchanged) shows the new bytes after a refresh.
#[test]
fn without_etags_a_track_with_a_new_file_is_found_by_comparing_bodies() {
    if !usable() {
        return;
    }
    let flags = ["--seed", "21", "--protocol", "v1.1"];
    let mut origin = PythonOrigin::start(sources::music(), &flags);
    let (shown, old) = origin
        .expected_files()
        .into_iter()
        .find(|(_, s)| s.ends_with("01 Hidden Place.ogg"))
        .unwrap();
    let other = sources::music().join(KEPT_TRACK.replace("1-01 - ", "1-01 "));
    let mount = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--refresh-interval", "off"],
    );
    let shown = mount.path().join(shown);
    assert!(std::fs::read(&shown).unwrap() == std::fs::read(&old).unwrap());
    let rel = old.strip_prefix(sources::music()).unwrap();
    let replace = serde_json::json!({ rel.to_str().unwrap(): other.to_str().unwrap() });
    origin.set_catalogue(&serde_json::json!({ "replace": replace }));
    refresh_ok(&mount);
    let want = std::fs::read(&other).unwrap();
    assert_eq!(std::fs::metadata(&shown).unwrap().len(), want.len() as u64);
    assert!(
        std::fs::read(&shown).unwrap() == want,
        "the new file, exactly"
    );
}

/// The number of the last line of a change feed (0 for an empty one).
fn last_number(feed: &str) -> u64 {
    feed.lines()
        .last()
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Rewrites the change feed's last number in the catalogue snapshot under `cache`.
fn set_last_change(cache: &Path, last: u64) {
    let mut found = support::walk_files(cache).into_iter();
    let found = found.find(|p| p.file_name().is_some_and(|n| n == "catalogue"));
    let path = cache.join(found.expect("a catalogue snapshot in the disk cache"));
    let text = std::fs::read_to_string(&path).unwrap();
    let (first, body) = text.split_once('\n').unwrap();
    let mut json: serde_json::Value = serde_json::from_str(body).unwrap();
    json["last_change"] = last.into();
    let body = serde_json::to_string(&json).unwrap();
    let version = first.split(' ').nth(1).unwrap();
    let crc = crc32c::crc32c(body.as_bytes());
    let first = format!("trackfs-catalogue {version} {crc:08x} {}", body.len());
    std::fs::write(&path, format!("{first}\n{body}")).unwrap();
}

/// The change feed's numbers keep growing across a remount, so a scanner's hook that
/// remembers the last number it handled (`$1 > after`) reads on after one, also when the
/// clock went back meanwhile.
#[test]
fn the_change_feed_numbers_keep_growing_across_a_remount() {
    if !usable() {
        return;
    }
    let source = tempfile::tempdir().unwrap();
    new_track(source.path(), "Band", "First", "One");
    let origin = RustOrigin::start(source.path(), &[]);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().display().to_string();
    let flags = ["--disk-cache", &cache_dir, "--refresh-interval", "off"];
    let before = {
        let mount = Mount::start(&origin.url, &origin.credentials_file, &flags);
        new_track(source.path(), "Newcomer", "First Light", "Dawn");
        publish(source.path(), &origin.library);
        refresh_ok(&mount);
        let feed = changes(&mount);
        assert!(feed.contains(" added Newcomer\n"), "{feed}");
        last_number(&feed)
    };
    // As if the clock had gone back a day since: the snapshot's number is the one to follow.
    let before = before + 86_400_000_000;
    set_last_change(cache.path(), before);
    new_track(source.path(), "Later", "Second Light", "Dusk");
    publish(source.path(), &origin.library);
    // From the snapshot, refreshed at once.
    let mount = Mount::start(&origin.url, &origin.credentials_file, &flags);
    let feed = wait_for(
        Duration::from_secs(60),
        "the refresh after the remount",
        || Some(changes(&mount)).filter(|f| f.contains(" added Later\n")),
    );
    let first: u64 = feed.split(' ').next().unwrap().parse().unwrap();
    assert!(first > before, "{first} follows {before}:\n{feed}");
}
