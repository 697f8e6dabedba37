//! nginx as the CDN, as in production: a plain static server (scripts/nginx-cdn.sh) serves the
//! ciphertext folder, the origin's storage-resolve points at it (`--cdn-base`), and the mount
//! must give exact bytes to sha256, ffmpeg, ffprobe, rsync and cp. Once with the independent
//! origin (tests/independent/origin.py `--cdn-dir`), once with `trackfs publish` + `serve`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::nginx::{free_port, Nginx};
use support::rust_origin::RustOrigin;
use support::{sources, Mount, PythonOrigin};

const TOOLS: &[&str] = &["ffmpeg", "ffprobe", "rsync", "nginx"];

fn tools_present() -> bool {
    // nginx lives in /usr/sbin, which a non-root PATH may not include (the script looks there).
    support::fuse_usable()
        && TOOLS.iter().all(|t| {
            (*t == "nginx" && Path::new("/usr/sbin/nginx").exists()) || support::require_tool(t)
        })
}

/// Runs and requires exit 0 and an empty stderr.
fn run_clean(command: &mut Command) -> String {
    let out = support::run(command, Duration::from_secs(120));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{command:?} exited {} with stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ffprobe_duration(path: &Path) -> f64 {
    run_clean(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=duration"])
            .args(["-of", "csv=p=0"])
            .arg(path),
    )
    .trim()
    .parse()
    .unwrap()
}

/// Everything a user does with the mount, checked against the sources.
/// `files`: (path below the mount, source file) for every track.
fn check_mount(mount: &Mount, nginx: &Nginx, files: &[(PathBuf, PathBuf)]) {
    assert_eq!(files.len(), sources::TRACKS.len());
    let root = mount.path();
    for (relative, source) in files {
        let track = root.join(relative);
        let what = relative.display();
        assert_eq!(
            support::sha256_file(&track),
            support::sha256_file(source),
            "bytes of {what}"
        );
        run_clean(
            Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-i"])
                .arg(&track)
                .args(["-f", "null", "-"]),
        );
        run_clean(
            Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-ss", "2", "-i"])
                .arg(&track)
                .args(["-t", "1", "-f", "null", "-"]),
        );
        let (got, want) = (ffprobe_duration(&track), ffprobe_duration(source));
        assert!(
            (got - want).abs() <= 0.05,
            "duration of {what}: {got} s mounted, {want} s at the source"
        );
    }

    // rsync: an exact copy, then a second run with nothing to transfer.
    let dest = tempfile::tempdir().unwrap();
    let rsync = |extra: &[&str]| {
        run_clean(
            Command::new("rsync")
                .args(["-a", "--exclude", "/.trackfs"])
                .args(extra)
                .arg(format!("{}/", root.display()))
                .arg(format!("{}/", dest.path().display())),
        )
    };
    rsync(&[]);
    let copied: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(r, _)| (r.clone(), support::sha256_file(&dest.path().join(r))))
        .collect();
    let wanted: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(r, s)| (r.clone(), support::sha256_file(s)))
        .collect();
    assert_eq!(copied, wanted, "rsync copy");
    let stats = rsync(&["--itemize-changes", "--stats"]);
    assert!(
        stats.contains("Number of regular files transferred: 0"),
        "the second rsync transferred files:\n{stats}"
    );

    // cp -r of one album.
    let (first, _) = &files[0];
    let album = first.parent().unwrap();
    let copy = tempfile::tempdir().unwrap();
    run_clean(
        Command::new("cp")
            .arg("-r")
            .arg(root.join(album))
            .arg(copy.path().join("album")),
    );
    for (relative, source) in files.iter().filter(|(r, _)| r.starts_with(album)) {
        let name = relative.file_name().unwrap();
        assert_eq!(
            support::sha256_file(&copy.path().join("album").join(name)),
            support::sha256_file(source),
            "cp -r of {}",
            relative.display()
        );
    }

    // The bytes came from nginx (ranged 206 answers), and the mount saw no errors.
    assert!(
        nginx.requests_with_status(206) > 0,
        "nginx answered no range requests; access log:\n{}",
        nginx.access_log()
    );
    assert_eq!(mount.stat("errors"), 0, "mount log:\n{}", mount.log_text());
}

/// Starts an origin whose CDN base is `http://127.0.0.1:PORT` and nginx on PORT over the
/// folder it names; retries on a fresh port if another process took the port meanwhile.
fn with_nginx<O>(start: impl Fn(&str) -> (O, PathBuf)) -> (O, Nginx) {
    let mut last_error = String::new();
    for _ in 0..3 {
        let port = free_port();
        let (origin, folder) = start(&format!("http://127.0.0.1:{port}"));
        match Nginx::start(&folder, port) {
            Ok(nginx) => return (origin, nginx),
            Err(e) => last_error = e,
        }
    }
    panic!("nginx did not start: {last_error}");
}

#[test]
fn independent_origin_with_nginx_as_its_cdn() {
    if !tools_present() {
        return;
    }
    let cdn_dir = tempfile::tempdir().unwrap();
    let (origin, nginx) = with_nginx(|base| {
        let dir = cdn_dir.path().to_str().unwrap();
        let origin = PythonOrigin::start(
            sources::music(),
            &["--seed", "21", "--cdn-dir", dir, "--cdn-base", base],
        );
        (origin, cdn_dir.path().to_path_buf())
    });
    assert!(cdn_dir.path().join("audio").is_dir());
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    check_mount(&mount, &nginx, &origin.expected_files());
}

/// The mount's path for a source `Artist/Album/NN Title.ext` (or `D-NN Title.ext`).
fn mounted_name(relative: &str) -> PathBuf {
    let path = Path::new(relative);
    let file = path.file_name().unwrap().to_str().unwrap();
    let (number, title) = file.split_once(' ').unwrap();
    path.parent().unwrap().join(format!("{number} - {title}"))
}

#[test]
fn trackfs_serve_with_nginx_as_its_cdn() {
    if !tools_present() {
        return;
    }
    let (origin, nginx) = with_nginx(|base| {
        let origin = RustOrigin::start(sources::music(), &["--cdn-base", base]);
        let library = origin.library.clone();
        (origin, library)
    });
    let files: Vec<(PathBuf, PathBuf)> = sources::TRACKS
        .iter()
        .map(|(relative, _)| (mounted_name(relative), sources::music().join(relative)))
        .collect();
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    check_mount(&mount, &nginx, &files);
}
