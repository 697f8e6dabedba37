//! Shared by the FUSE tests: sample audio made with ffmpeg, origins (the independent Python one
//! and `trackfs serve`), and a mount guard that always unmounts, also when a test fails.
#![allow(dead_code)]

pub mod disk;
pub mod liar;
pub mod nginx;
pub mod rust_origin;
pub mod sources;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TRACKFS: &str = env!("CARGO_BIN_EXE_trackfs");

/// FUSE tests run in CI; elsewhere they may skip, loudly, when FUSE is unusable.
pub fn fuse_usable() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let ok = Path::new("/dev/fuse").exists() && (root || which("fusermount3"));
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!(
                "CI is set but FUSE is not usable here (/dev/fuse and root or fusermount3 needed)"
            );
        }
        eprintln!("\n!!!!!! SKIPPING FUSE TEST: /dev/fuse or fusermount3 missing (this would fail in CI) !!!!!!\n");
    }
    ok
}

pub fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
}

/// Requires an external tool; in CI its absence is a failure, elsewhere a loud skip.
pub fn require_tool(program: &str) -> bool {
    if which(program) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but `{program}` is not installed; scripts/test.sh installs it");
    }
    eprintln!(
        "\n!!!!!! SKIPPING: `{program}` is not installed (scripts/test.sh installs it) !!!!!!\n"
    );
    false
}

pub fn is_mounted(path: &Path) -> bool {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let wanted = canonical.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
}

pub fn terminate(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// The independent origin of `tests/independent/origin.py`, stopped on drop. `extra` selects
/// e.g. `--protocol v1.1`, `--etags`; its library changes with `set_catalogue` and `reload`
/// (tests/independent/README.md, "Changing the library").
pub struct PythonOrigin {
    child: Child,
    pub url: String,
    pub manifest: serde_json::Value,
    pub credentials_file: PathBuf,
    dir: tempfile::TempDir,
}

impl PythonOrigin {
    pub fn start(source: &Path, extra: &[&str]) -> PythonOrigin {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("catalogue.json"), "{}").unwrap();
        let port_file = dir.path().join("port");
        let manifest_file = dir.path().join("manifest.json");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/origin.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--source")
            .arg(source)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--manifest")
            .arg(&manifest_file)
            .arg("--catalogue")
            .arg(dir.path().join("catalogue.json"))
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(port_file.exists() && manifest_file.exists()) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("origin.py exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "origin.py did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .to_string();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest_file).unwrap()).unwrap();
        let credentials_file = dir.path().join("credentials");
        let user = manifest["credentials"]["user"].as_str().unwrap();
        let password = manifest["credentials"]["password"].as_str().unwrap();
        write_private(&credentials_file, &format!("{user}:{password}\n"));
        PythonOrigin {
            child,
            url: format!("http://127.0.0.1:{port}"),
            manifest,
            credentials_file,
            dir,
        }
    }

    /// Replaces the catalogue description (exclude, replace, covers, playlists) and waits
    /// until the origin serves the new library; `self.manifest` then describes it.
    pub fn set_catalogue(&mut self, description: &serde_json::Value) {
        let path = self.dir.path().join("catalogue.json");
        std::fs::write(path.with_extension("tmp"), description.to_string()).unwrap();
        std::fs::rename(path.with_extension("tmp"), &path).unwrap();
        self.wait_for_generation(self.manifest["generation"].as_u64().unwrap() + 1);
    }

    /// SIGHUP: rescan the source folder and re-read the description; waits until served.
    pub fn reload(&mut self) {
        let generation = self.manifest["generation"].as_u64().unwrap();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        self.wait_for_generation(generation + 1);
    }

    fn wait_for_generation(&mut self, wanted: u64) {
        let file = self.dir.path().join("manifest.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read(&file).unwrap();
            let manifest: serde_json::Value = serde_json::from_slice(&text).unwrap();
            if manifest["generation"].as_u64().unwrap() >= wanted {
                let error = &manifest["reload_error"];
                assert!(error.is_null(), "origin.py could not reload: {error}");
                self.manifest = manifest;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "origin.py did not reload within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (path relative to the mount, source file) for every track.
    pub fn expected_files(&self) -> Vec<(PathBuf, PathBuf)> {
        let tracks = self.manifest["tracks"].as_array().unwrap();
        let discs_of = |album_gid: &str| {
            tracks
                .iter()
                .filter(|t| t["album_gid"] == album_gid)
                .map(|t| t["disc"].as_i64().unwrap())
                .max()
                .unwrap_or(1)
        };
        tracks
            .iter()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap().to_string();
                let number = t["number"].as_i64().unwrap();
                let name = if discs_of(&s("album_gid")) > 1 {
                    format!("{}-{number:02} - {}{}", t["disc"], s("title"), s("ext"))
                } else {
                    format!("{number:02} - {}{}", s("title"), s("ext"))
                };
                (
                    Path::new(&s("artist")).join(s("album")).join(name),
                    PathBuf::from(s("source")),
                )
            })
            .collect()
    }
}

impl Drop for PythonOrigin {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A `trackfs mount` child process; dropping it stops it and makes sure nothing stays mounted.
pub struct Mount {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Mount {
    pub fn start(origin: &str, credentials: &Path, extra: &[&str]) -> Mount {
        Self::try_start(origin, credentials, extra)
            .unwrap_or_else(|log| panic!("mount failed:\n{log}"))
    }

    /// Starts a mount; `Err` holds the log when the process exits before mounting.
    pub fn try_start(origin: &str, credentials: &Path, extra: &[&str]) -> Result<Mount, String> {
        let dir = tempfile::tempdir().unwrap();
        let point = dir.path().join("mnt");
        std::fs::create_dir(&point).unwrap();
        let log = dir.path().join("mount.log");
        let child = Command::new(TRACKFS)
            .arg("mount")
            .arg(origin)
            .arg(&point)
            .arg("--credentials")
            .arg(credentials)
            .args(extra)
            // The default disk cache goes with the guard: a test never sees another's.
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("mount.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("trackfs runs");
        let mut mount = Mount {
            child: Some(child),
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mounted(&point) {
            let child = mount.child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&mount.log).unwrap_or_default();
                mount.child = None;
                return Err(format!(
                    "trackfs exited with {status} before mounting:\n{log}"
                ));
            }
            if Instant::now() > deadline {
                return Err("not mounted within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(mount)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test, showing the log, unless the mount logged `needle`.
    pub fn assert_logged(&self, needle: &str) {
        let log = self.log_text();
        assert!(
            log.contains(needle),
            "expected {needle:?} in the mount's log:\n{log}"
        );
    }

    pub fn stat(&self, name: &str) -> u64 {
        let text = std::fs::read_to_string(self.path().join(".trackfs/stats")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no counter {name} in stats:\n{text}"))
    }

    /// The exit status once the process ends by itself, or `None` after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.as_mut()?.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, and the exit status (the process must unmount and exit by itself).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        terminate(&mut child, Duration::from_secs(10))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.terminate();
        let point = self.path();
        if is_mounted(&point) {
            let _ = Command::new("fusermount3").arg("-u").arg(&point).status();
        }
        if is_mounted(&point) {
            let _ = Command::new("umount").arg("-l").arg(&point).status();
        }
    }
}

/// FUSE and ffmpeg (to make sample audio): what most mount tests need.
pub fn fuse_and_ffmpeg() -> bool {
    fuse_usable() && require_tool("ffmpeg")
}

/// Polls `ready` until it gives a value; fails the test, naming `what`, after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Copies the regular files below `from` to the same places below `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for relative in walk_files(from) {
        let target = to.join(&relative);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&relative), &target).unwrap();
    }
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hex::encode(sha2::Sha256::digest(&data))
}

/// Regular files below `root`, relative to it.
pub fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Runs a program to completion (killed, and the test failed, after `limit`), output captured.
pub fn run(command: &mut Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}
