//! mpd over a mount (issue 17): a private mpd (its own config and database in a temp dir, a
//! port on 127.0.0.1, a null audio output, started and stopped by PID) finds every track with
//! its tags, loads a playlist file of the mount in order, plays and seeks, and answers
//! `albumart` with the cover's bytes; its database update of long tracks with the default
//! flags fetches at most 1 MiB per track after the first (whose open still gets the wide
//! kernel read-ahead), and narrows the kernel's read-ahead until a copy widens it.
//! docs/design.md ("Covers, playlists and scans") says how to run mpd so.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{run, sha256_file, sources, wait_for, Mount, PythonOrigin};

/// A private mpd; dropping it stops it (SIGTERM to its PID).
struct Mpd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Mpd {
    fn start(music: &Path) -> Mpd {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let p = |name: &str| dir.path().join(name).display().to_string();
        std::fs::create_dir(dir.path().join("playlists")).unwrap();
        let config = format!(
            "music_directory \"{}\"\nplaylist_directory \"{}\"\ndb_file \"{}\"\n\
             pid_file \"{}\"\nlog_file \"{}\"\nbind_to_address \"127.0.0.1\"\nport \"{port}\"\n\
             auto_update \"no\"\naudio_output {{\n  type \"null\"\n  name \"null\"\n  \
             mixer_type \"none\"\n}}\n",
            music.display(),
            p("playlists"),
            p("db"),
            p("pid"),
            p("log"),
        );
        std::fs::write(dir.path().join("mpd.conf"), config).unwrap();
        let child = Command::new("mpd")
            .arg("--no-daemon")
            .arg(dir.path().join("mpd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("mpd runs");
        let mut mpd = Mpd { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = mpd.child.try_wait() {
                panic!("mpd exited with {status}:\n{}", mpd.log());
            }
            assert!(
                Instant::now() < deadline,
                "mpd did not listen:\n{}",
                mpd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        mpd
    }

    fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("stderr"), read("log"))
    }

    /// `mpc -p PORT args…`, which must succeed; its output.
    fn mpc(&self, args: &[&str]) -> String {
        let out = run(
            Command::new("mpc")
                .arg("-p")
                .arg(self.port.to_string())
                .args(args),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "mpc {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// One command on mpd's text protocol: the `key: value` lines and any binary part.
    fn command(&self, line: &str) -> (HashMap<String, String>, Vec<u8>) {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut greeting = String::new();
        reader.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("OK MPD"), "{greeting}");
        (&stream).write_all(format!("{line}\n").as_bytes()).unwrap();
        let (mut fields, mut binary) = (HashMap::new(), Vec::new());
        loop {
            let mut text = String::new();
            reader.read_line(&mut text).unwrap();
            let text = text.trim_end_matches('\n');
            if text == "OK" {
                return (fields, binary);
            }
            assert!(!text.starts_with("ACK"), "{line}: {text}");
            let (key, value) = text.split_once(": ").expect("key: value");
            if key == "binary" {
                binary = vec![0; value.parse().unwrap()];
                reader.read_exact(&mut binary).unwrap();
                let mut end = [0u8; 1];
                reader.read_exact(&mut end).unwrap();
            }
            fields.insert(key.to_string(), value.to_string());
        }
    }

    /// The whole cover mpd finds for `uri`, in as many `albumart` chunks as it takes.
    fn albumart(&self, uri: &str) -> Vec<u8> {
        let quoted = uri.replace('\\', "\\\\").replace('"', "\\\"");
        let mut picture = Vec::new();
        loop {
            let (fields, chunk) = self.command(&format!("albumart \"{quoted}\" {}", picture.len()));
            picture.extend_from_slice(&chunk);
            let size: usize = fields["size"].parse().unwrap();
            if picture.len() >= size || chunk.is_empty() {
                return picture;
            }
        }
    }

    fn status(&self) -> HashMap<String, String> {
        self.command("status").0
    }

    /// Waits (with a bound) until `ok` holds for the status.
    fn wait_for(&self, what: &str, ok: impl Fn(&HashMap<String, String>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status();
            if ok(&status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {status:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Mpd {
    fn drop(&mut self) {
        support::terminate(&mut self.child, Duration::from_secs(10));
    }
}

fn tools() -> bool {
    support::fuse_usable() && support::require_tool("mpd") && support::require_tool("mpc")
}

fn elapsed(status: &HashMap<String, String>) -> f64 {
    status
        .get("elapsed")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn mpd_scans_loads_a_playlist_plays_seeks_and_finds_covers() {
    if !tools() {
        return;
    }
    let origin = PythonOrigin::start(sources::music(), &["--protocol", "v1.1"]);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let mpd = Mpd::start(&mount.path());
    mpd.mpc(&["update", "--wait"]);

    // Every track, with its duration; tagged files (the sample album) with their tags.
    let listed = mpd.mpc(&["-f", "%file%\t%artist%\t%title%\t%time%", "listall"]);
    let rows: HashMap<&str, Vec<&str>> = listed
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            (fields[0], fields)
        })
        .collect();
    let tracks = origin.manifest["tracks"].as_array().unwrap();
    let expected = origin.expected_files();
    assert_eq!(rows.len(), expected.len(), "{listed}");
    for ((path, _), t) in expected.iter().zip(tracks) {
        let row = &rows[path.to_str().unwrap()];
        assert!(!row[3].is_empty(), "{path:?} has a duration: {row:?}");
        if t["artist"] == "trackfs sample" {
            assert_eq!(
                (row[1], row[2]),
                ("trackfs sample", t["title"].as_str().unwrap())
            );
        }
    }

    // A playlist of the mount, in order (unknown tracks and episodes were left out).
    let playlist = origin.manifest["playlists"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str().unwrap().starts_with("Road trip"))
        .unwrap();
    let by_gid: HashMap<&str, &PathBuf> = tracks
        .iter()
        .zip(&expected)
        .map(|(t, (path, _))| (t["track_gid"].as_str().unwrap(), path))
        .collect();
    let wanted: Vec<String> = playlist["track_gids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| by_gid[g.as_str().unwrap()].display().to_string())
        .collect();
    let name = playlist["name"].as_str().unwrap().replace('/', "_");
    mpd.mpc(&["load", &format!("Playlists/{name}.m3u8")]);
    let queued = mpd.mpc(&["-f", "%file%", "playlist"]);
    assert_eq!(queued.lines().collect::<Vec<_>>(), wanted);

    // Plays (elapsed grows), then seeks to the middle.
    mpd.mpc(&["play"]);
    mpd.wait_for("playing", |s| {
        s.get("state").map(String::as_str) == Some("play")
    });
    mpd.wait_for("elapsed grows", |s| elapsed(s) > 0.5);
    let duration: f64 = mpd.status()["duration"].parse().unwrap();
    mpd.mpc(&["seek", "50%"]);
    mpd.wait_for("seeked to the middle", |s| {
        let at = elapsed(s);
        at >= duration / 2.0 - 0.5 && at < duration
    });
    mpd.mpc(&["stop"]);

    // albumart: the cover's bytes, for a song of an album with one.
    let album = origin.manifest["albums"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["cover"].is_object())
        .unwrap();
    let song = expected
        .iter()
        .zip(tracks)
        .find(|(_, t)| t["album_gid"] == album["gid"])
        .map(|((path, _), _)| path.display().to_string())
        .unwrap();
    let picture = mpd.albumart(&song);
    let cover = Path::new(album["cover"]["path"].as_str().unwrap());
    assert_eq!(picture, std::fs::read(cover).unwrap(), "{song}");
    let shown = mount.path().join(Path::new(&song).parent().unwrap());
    let ext = album["cover"]["ext"].as_str().unwrap();
    assert_eq!(
        sha256_file(&shown.join(format!("cover{ext}"))),
        sha256_file(cover)
    );
}

/// The mount's kernel read-ahead in KiB (`/sys/class/bdi/<dev>/read_ahead_kb`), when trackfs
/// can set it (as root); `None` otherwise.
fn kernel_read_ahead_kb(mount: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let dev = std::fs::metadata(mount).unwrap().dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn an_mpd_database_update_of_long_tracks_fetches_at_most_1_mib_per_track() {
    if !tools() {
        return;
    }
    let origin = PythonOrigin::start(&sources::long_tracks(), &[]);
    // Default flags: the kernel's read-ahead starts wide (1 MiB, for copies) and narrows for
    // new opens once a file was only looked at (docs/design.md, "Covers, playlists and scans").
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    let window = || kernel_read_ahead_kb(&mount.path());
    let root = window().is_some();
    if root {
        // Set just after the mount appears (INIT must be answered first): wait for it.
        wait_for(Duration::from_secs(10), "a mount starts wide", || {
            (window() == Some(1024)).then_some(())
        });
    }
    let mpd = Mpd::start(&mount.path());
    mpd.mpc(&["update", "--wait"]);
    let files = origin.expected_files();
    let listed = mpd.mpc(&["-f", "%file%\t%time%", "listall"]);
    assert_eq!(listed.lines().count(), files.len(), "{listed}");
    assert!(listed.lines().all(|l| l.ends_with("\t5:00")), "{listed}");
    let fetched = mount.stat("bytes_fetched");
    // At most 1 MiB a track, but for the first file mpd opens on a fresh mount: that one is
    // read with the wide window (mpd's 2 x 256 KiB make the kernel ask for 1 MiB more).
    let allowed = (files.len() as u64 + 2) << 20;
    assert!(
        fetched <= allowed,
        "{fetched} bytes for {} tracks (allowed {allowed})",
        files.len()
    );
    if root {
        assert_eq!(
            window(),
            Some(128),
            "the scan narrowed the kernel's read-ahead"
        );
        // A copy reads on past the head: opens after it are wide again.
        let copied = std::fs::read(mount.path().join(&files[1].0)).unwrap();
        assert!(copied.len() > 4 << 20);
        assert_eq!(window(), Some(1024), "a copy widened it again");
    }
}
