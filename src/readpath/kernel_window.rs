//! The kernel's read-ahead, chosen at each open of a track: wide for copies and players,
//! narrow while a media scanner walks the library.
//!
//! Why: the kernel reads ahead of every sequential reader on its own, and trackfs must answer
//! (fetch) whatever it asks for. A wide window (1 MiB, `--kernel-read-ahead`) makes it send
//! 1 MiB READs, which is what makes cold copies fast (issue 18); but it also turns a scanner's
//! look at a file's start into megabytes: mpd reads 2 x 256 KiB, and the kernel's second
//! window then asks for 1 MiB more (mm/readahead.c doubles the window at each step), so a
//! database update cost ~2 MiB a track where issue 17 allows 1 MiB.
//!
//! How: the kernel copies the mount's read-ahead (`/sys/class/bdi/<dev>/read_ahead_kb`) into
//! each open file when the filesystem's open returns (`file_ra_state_init` runs after
//! `->open` in `do_dentry_open`), so what the setting says at an open holds for that open
//! alone, and files already open keep theirs. What to write comes from what readers did
//! lately: a track closed after only a look at its start (nothing handed to the kernel in one
//! piece of `probe_bytes` or more, nor the whole file) makes the next opens narrow (128 KiB);
//! a track read on past its head (a player, `cp`) makes them wide again. A mount starts wide,
//! so a copy on a fresh mount and the first file of a scan get the wide window; after that a
//! scan costs what it reads. The sysfs file is written when the choice changes (and checked
//! at each open of a track), only as root; without root nothing is written, as before.
//!
//! Safety: the bdi is the device of the mountpoint, so it is taken only when `statfs` says
//! the mountpoint is a FUSE mount. A mountpoint the mount is not on (yet, or any more) would
//! name the disk below it, and trackfs would rewrite the system disk's read-ahead; then
//! nothing is written and a warning says so. Another FUSE filesystem under the path (ntfs-3g's
//! `fuseblk`) is refused too: the device must be listed in `/proc/self/mountinfo` as trackfs's.
//!
//! Failures: a first write that fails (not root, no such bdi) gives up for the mount: the
//! kernel's value stays, as before this existed. A write that fails after one worked keeps
//! what was last written as the window and is tried again at the next open, so one bad write
//! never pins the narrow window (copies slow) or the wide one (scans costly) for good. As
//! root, where writing must work, the first failure is a warning naming the setting, the file,
//! the error and what it costs; without root it is expected, and logged at debug.
//!
//! Known limits: the setting is one per mount, not per reader, so a copy streaming beside a
//! scan widens the window again at each of its reads, and the scanner's next opens get 1 MiB;
//! and opens at the same moment race on the one value: an open gets whatever was last
//! written. A wrong guess costs bytes or CPU, never data.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// The kernel's own default, and what mpd's 256 KiB reads cost nothing extra with.
pub const NARROW_KB: u32 = 128;

/// `statfs`'s `f_type` for a FUSE mount (`FUSE_SUPER_MAGIC`, linux/magic.h).
const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;

/// `applied` after a first write failed: the kernel's window stays, nothing more is tried.
const GAVE_UP: u32 = u32::MAX;

/// Why the mount's read-ahead setting was not found.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttachError {
    #[error("cannot look at {path}: {errno}")]
    Stat {
        path: String,
        errno: rustix::io::Errno,
    },
    #[error(
        "{path} is not a FUSE mount (filesystem type {f_type:#x}): its device's read-ahead \
         belongs to the filesystem below"
    )]
    NotFuse { path: String, f_type: u64 },
    #[error(
        "{path} is a FUSE mount, but not trackfs's (device {dev}): its read-ahead is another \
         filesystem's"
    )]
    NotOurs { path: String, dev: String },
}

/// Whether `/proc/self/mountinfo` text lists device `major:minor` as a trackfs mount: type
/// `fuse` (or `fuse.trackfs` where the subtype is kept) with the source `trackfs` that fuse.rs
/// mounts with. Another FUSE filesystem (`fuseblk` of ntfs-3g, say) can be on the path when
/// ours is gone; its setting is not ours to change.
pub(crate) fn is_trackfs_device(mountinfo: &str, major: u32, minor: u32) -> bool {
    let wanted = format!("{major}:{minor}");
    mountinfo.lines().any(|line| {
        let device = line.split(' ').nth(2);
        let mut after = line.split(" - ").nth(1).unwrap_or("").split(' ');
        let (fs_type, source) = (after.next(), after.next());
        device == Some(wanted.as_str())
            && matches!(fs_type, Some("fuse" | "fuse.trackfs"))
            && source == Some("trackfs")
    })
}

/// The read-ahead setting of a mountpoint whose filesystem is `f_type` on device `dev`: only
/// a FUSE mount's own. Any other type means the mount is not on the path, and `dev` is the
/// disk below it, which is not trackfs's to change.
pub(crate) fn bdi_setting(f_type: u64, dev: u64) -> Option<PathBuf> {
    (f_type == FUSE_SUPER_MAGIC).then(|| {
        let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
        PathBuf::from(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"))
    })
}

/// `statfs` and `stat` of the one directory `mountpoint` names now (one descriptor, so both
/// describe the same filesystem even if a mount comes or goes meanwhile).
fn mount_bdi(mountpoint: &Path) -> Result<PathBuf, AttachError> {
    use rustix::fs::{Mode, OFlags};
    let path = || mountpoint.display().to_string();
    let stat_error = |errno| AttachError::Stat {
        path: path(),
        errno,
    };
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = rustix::fs::open(mountpoint, flags, Mode::empty()).map_err(stat_error)?;
    // `FsWord` is `i64` or `u32` by target; the magic numbers are all positive.
    let f_type = rustix::fs::fstatfs(&dir).map_err(stat_error)?.f_type as u64;
    let dev = std::fs::File::from(dir)
        .metadata()
        .map_err(|e| {
            stat_error(rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
        })?
        .dev();
    let setting = bdi_setting(f_type, dev).ok_or_else(|| AttachError::NotFuse {
        path: path(),
        f_type,
    })?;
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    match is_trackfs_device(&mountinfo, major, minor) {
        true => Ok(setting),
        false => Err(AttachError::NotOurs {
            path: path(),
            dev: format!("{major}:{minor}"),
        }),
    }
}

/// The mount's kernel read-ahead, switched between a wide and a narrow window.
#[derive(Debug)]
pub(crate) struct KernelWindow {
    wide_kb: u32,
    narrow_kb: u32,
    /// Running as root: writing is expected to work, and a failure is a warning.
    root: bool,
    /// `read_ahead_kb` of the mount's bdi, once mounted (none: nothing is ever written).
    path: OnceLock<PathBuf>,
    /// What the next open should get.
    narrow: AtomicBool,
    /// What was last written (0: nothing yet; `GAVE_UP`: the first write failed).
    applied: Mutex<u32>,
    /// A warning was logged: one a mount is enough, later failures go to debug.
    warned: AtomicBool,
}

impl KernelWindow {
    /// `wide_kb` 0 leaves the kernel's read-ahead alone; the narrow window is never wider.
    pub fn new(wide_kb: u32) -> Self {
        KernelWindow {
            wide_kb,
            narrow_kb: NARROW_KB.min(wide_kb),
            root: rustix::process::geteuid().is_root(),
            path: OnceLock::new(),
            narrow: AtomicBool::new(false),
            applied: Mutex::new(0),
            warned: AtomicBool::new(false),
        }
    }

    /// One that never writes anything (tests, and readers without a mount).
    pub fn detached() -> Self {
        KernelWindow::new(0)
    }

    /// After the mount is up (INIT answered): finds the mount's bdi and sets the wide window.
    /// A mountpoint that is not a FUSE mount gets nothing written (module docs: Safety).
    pub fn attach(&self, mountpoint: &Path) {
        if self.wide_kb == 0 {
            return;
        }
        match mount_bdi(mountpoint) {
            Ok(path) => self.attach_file(path),
            Err(e) => self.warn_once(format_args!(
                "--kernel-read-ahead: nothing set: {e}; copies and players get the kernel's \
                 default READs (slower)"
            )),
        }
    }

    /// The same with the file to write given (tests use a plain file).
    pub fn attach_file(&self, path: PathBuf) {
        if self.wide_kb == 0 || self.path.set(path).is_err() {
            return;
        }
        self.apply(self.wide_kb);
    }

    /// Before a track's OPEN is answered: makes sure the file gets the window that fits
    /// lately's readers (the changes below write it at once; this covers a write that raced
    /// or failed).
    pub fn before_open(&self) {
        let kb = match self.narrow.load(Ordering::Relaxed) {
            true => self.narrow_kb,
            false => self.wide_kb,
        };
        self.apply(kb);
    }

    /// A stream read on past its head: a player or a copy is at work.
    pub fn note_streaming(&self) {
        // Called at every read of a stream: a load first keeps the cache line shared, and
        // only a change takes the lock and writes.
        if self.narrow.load(Ordering::Relaxed) && self.narrow.swap(false, Ordering::Relaxed) {
            tracing::debug!("a stream reads on: wide kernel read-ahead for new opens");
            self.apply(self.wide_kb);
        }
    }

    /// A file was closed after only a look at its start: a scanner is at work.
    pub fn note_looked_at(&self) {
        if !self.narrow.swap(true, Ordering::Relaxed) {
            tracing::debug!("a file was only looked at: narrow kernel read-ahead for new opens");
            self.apply(self.narrow_kb);
        }
    }

    /// The window new opens get now, in KiB (0: left alone; `GAVE_UP`).
    #[cfg(test)]
    pub fn applied_kb(&self) -> u32 {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The same, as root or not whatever the tests run as.
    #[cfg(test)]
    fn run_as_root(mut self, root: bool) -> Self {
        self.root = root;
        self
    }

    fn apply(&self, kb: u32) {
        let Some(path) = self.path.get() else {
            return;
        };
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if *applied == kb || kb == 0 || *applied == GAVE_UP {
            return;
        }
        match std::fs::write(path, kb.to_string()) {
            Ok(()) => {
                tracing::debug!("kernel read-ahead set to {kb} KiB ({})", path.display());
                *applied = kb;
            }
            // Never written: not root, or no such bdi; the kernel's window stays.
            Err(e) if *applied == 0 => {
                *applied = GAVE_UP;
                self.failed(format_args!(
                    "--kernel-read-ahead: cannot write {kb} to {}: {e}; the kernel's \
                     read-ahead stays as it is, so copies and players get smaller READs \
                     (slower); not tried again",
                    path.display()
                ));
            }
            // Written before: the last value stays, and the next open tries again.
            Err(e) => {
                let meaning = if kb < self.wide_kb {
                    "new opens keep the wide window, so media scans fetch more than they read"
                } else {
                    "new opens keep the narrow window, so copies and players get smaller \
                     READs (slower)"
                };
                self.failed(format_args!(
                    "--kernel-read-ahead: cannot write {kb} to {}: {e}; {meaning}; tried again \
                     at the next open",
                    path.display()
                ));
            }
        }
    }

    /// A write failed: a warning as root (once), where it should have worked; else debug.
    fn failed(&self, message: std::fmt::Arguments<'_>) {
        if self.root {
            self.warn_once(message);
        } else {
            tracing::debug!("{message}");
        }
    }

    fn warn_once(&self, message: std::fmt::Arguments<'_>) {
        if self.warned.swap(true, Ordering::Relaxed) {
            tracing::debug!("{message}");
        } else {
            tracing::warn!("{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(wide: u32) -> (KernelWindow, tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("read_ahead_kb");
        std::fs::write(&file, "128").unwrap();
        let window = KernelWindow::new(wide);
        window.attach_file(file.clone());
        (window, dir, file)
    }

    fn written(file: &Path) -> String {
        std::fs::read_to_string(file).unwrap()
    }

    #[test]
    fn a_mount_starts_wide_a_look_at_a_file_narrows_it_and_a_stream_widens_it() {
        let (window, _dir, file) = attached(1024);
        assert_eq!(written(&file), "1024");
        window.before_open();
        assert_eq!(written(&file), "1024");
        window.note_looked_at();
        assert_eq!(written(&file), "128", "for the opens after it");
        window.before_open();
        assert_eq!(written(&file), "128");
        window.note_streaming();
        assert_eq!(written(&file), "1024");
        window.before_open();
        assert_eq!(written(&file), "1024");
    }

    #[test]
    fn the_file_is_written_only_when_the_choice_changes() {
        let (window, _dir, file) = attached(1024);
        window.note_looked_at();
        window.before_open();
        // Someone else's value: not ours to fight over at every open.
        std::fs::write(&file, "4096").unwrap();
        window.before_open();
        window.note_looked_at();
        window.before_open();
        assert_eq!(written(&file), "4096");
        assert_eq!(window.applied_kb(), 128);
    }

    #[test]
    fn zero_or_a_narrow_wide_window_leave_things_alone() {
        let (window, _dir, file) = attached(0);
        window.note_looked_at();
        window.before_open();
        assert_eq!(written(&file), "128", "0 keeps the kernel's");
        let (window, _dir, file) = attached(64);
        window.note_looked_at();
        window.before_open();
        assert_eq!(written(&file), "64", "never wider than asked for");
    }

    /// What a reader tells the window: a look at a file's start and tail narrows it, a read
    /// past `probe_bytes` in one piece widens it.
    #[tokio::test]
    async fn a_reader_narrows_it_after_a_look_and_widens_it_for_a_stream() {
        use crate::protocol::keyfile::Keys;
        use crate::readpath::heads::HeadStore;
        use crate::readpath::keys::KeyStore;
        use crate::readpath::reader::Reader;
        use crate::readpath::test_rig::{self, Rig, BLOCK};
        use std::sync::Arc;
        let mut config = test_rig::config();
        config.readahead.probe_bytes = 8 * BLOCK;
        let len = 64 * BLOCK as usize;
        let rig = Rig::with(&[len, len], config.clone(), 1 << 20);
        let (window, _dir, file) = attached(1024);
        let window = Arc::new(window);
        let reader = Reader::new(
            rig.cache.clone(),
            rig.ranges.clone(),
            Arc::new(KeyStore::new(Keys::new(), rig.control.clone())),
            HeadStore::new(rig.control.clone(), 1 << 20),
            rig.stats.clone(),
            config,
        );
        let reader = Arc::new(reader.with_kernel_window(window.clone()));
        let (scanned, copied) = (rig.files[0], rig.files[1]);
        reader.closed(scanned);
        assert_eq!(written(&file), "1024", "nothing read, nothing learnt");
        reader.read(scanned, 0, 2 * BLOCK).await.unwrap();
        reader.read(scanned, 63 * BLOCK, BLOCK).await.unwrap();
        assert_eq!(written(&file), "1024");
        reader.closed(scanned);
        assert_eq!(written(&file), "128", "a look at the start and tail");
        for i in 0..7 {
            reader.read(copied, i * BLOCK, BLOCK).await.unwrap();
        }
        assert_eq!(written(&file), "128", "7 blocks are still a look");
        reader.read(copied, 7 * BLOCK, BLOCK).await.unwrap();
        assert_eq!(written(&file), "1024", "8 in one piece are a stream");
        reader.closed(copied);
        assert_eq!(
            written(&file),
            "1024",
            "closing a file read on narrows nothing"
        );
    }

    #[test]
    fn a_detached_window_writes_nothing() {
        let window = KernelWindow::detached();
        window.note_looked_at();
        window.before_open();
        assert_eq!(window.applied_kb(), 0);
    }

    #[test]
    fn a_file_never_written_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("missing/read_ahead_kb");
        let window = KernelWindow::new(1024).run_as_root(false);
        window.attach_file(file.clone());
        window.note_looked_at();
        assert_eq!(window.applied_kb(), GAVE_UP);
        // Not tried at each open for nothing: the kernel's window stays.
        std::fs::create_dir(dir.path().join("missing")).unwrap();
        window.note_streaming();
        window.before_open();
        assert_eq!(window.applied_kb(), GAVE_UP);
        assert!(!file.exists());
    }

    /// One bad write after good ones must not pin the narrow window (copies slow) for good.
    #[test]
    fn a_write_failing_after_one_worked_is_tried_again_at_the_next_open() {
        let (window, _dir, file) = attached(1024);
        window.note_looked_at();
        assert_eq!(written(&file), "128");
        // The file cannot be written for a while (a directory in its place).
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        window.note_streaming();
        window.before_open();
        assert_eq!(window.applied_kb(), 128, "what the kernel has, still");
        std::fs::remove_dir(&file).unwrap();
        std::fs::write(&file, "128").unwrap();
        window.before_open();
        assert_eq!(written(&file), "1024", "the next open widens it after all");
        assert_eq!(window.applied_kb(), 1024);
    }

    /// The mount's setting is only ever a FUSE mount's: anything else is the disk below.
    #[test]
    fn only_a_fuse_mount_has_its_read_ahead_set() {
        let fuse = rustix::fs::makedev(0, 52);
        assert_eq!(
            bdi_setting(FUSE_SUPER_MAGIC, fuse),
            Some(PathBuf::from("/sys/class/bdi/0:52/read_ahead_kb"))
        );
        const EXT4_SUPER_MAGIC: u64 = 0xef53;
        const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
        let disk = rustix::fs::makedev(253, 0);
        assert_eq!(bdi_setting(EXT4_SUPER_MAGIC, disk), None);
        assert_eq!(bdi_setting(OVERLAYFS_SUPER_MAGIC, fuse), None);
    }

    /// A mountpoint the mount is not on: its device is the disk below, left alone.
    #[test]
    fn a_mountpoint_without_the_mount_gets_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let window = KernelWindow::new(1024);
        let logs = logs(|| {
            window.attach(dir.path());
            window.before_open();
            window.attach(dir.path());
        });
        assert_eq!(window.path.get(), None);
        assert_eq!(window.applied_kb(), 0);
        let warnings = warnings(&logs);
        assert_eq!(warnings.len(), 1, "{logs}");
        assert!(warnings[0].contains("--kernel-read-ahead"), "{logs}");
        assert!(warnings[0].contains("not a FUSE mount"), "{logs}");
        assert!(warnings[0].contains(&dir.path().display().to_string()));
    }

    #[test]
    fn as_root_a_failed_first_write_is_one_warning_naming_the_setting_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("missing/read_ahead_kb");
        let window = KernelWindow::new(1024).run_as_root(true);
        let logs = logs(|| {
            window.attach_file(file.clone());
            window.note_looked_at();
            window.before_open();
        });
        let warnings = warnings(&logs);
        assert_eq!(warnings.len(), 1, "{logs}");
        let warning = warnings[0];
        assert!(warning.contains("--kernel-read-ahead"), "{warning}");
        assert!(warning.contains(&file.display().to_string()), "{warning}");
        assert!(warning.contains("os error 2"), "the error: {warning}");
        assert!(warning.contains("copies and players"), "{warning}");
    }

    #[test]
    fn as_root_a_failed_later_write_says_what_it_costs_once() {
        let (window, _dir, file) = attached(1024);
        let window = window.run_as_root(true);
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let logs = logs(|| {
            window.note_looked_at();
            window.before_open();
            window.before_open();
        });
        let warnings = warnings(&logs);
        assert_eq!(warnings.len(), 1, "{logs}");
        assert!(warnings[0].contains("scans fetch more"), "{logs}");
        assert!(warnings[0].contains(&file.display().to_string()), "{logs}");
    }

    #[test]
    fn without_root_a_failed_write_is_expected_and_only_debug() {
        let dir = tempfile::tempdir().unwrap();
        let window = KernelWindow::new(1024).run_as_root(false);
        let logs = logs(|| window.attach_file(dir.path().join("missing/read_ahead_kb")));
        assert_eq!(warnings(&logs), Vec::<&str>::new());
        assert!(
            logs.contains("DEBUG") && logs.contains("--kernel-read-ahead"),
            "{logs}"
        );
    }

    /// What `f` logs, every level, one event a line.
    fn logs(f: impl FnOnce()) -> String {
        crate::test_logs::logs_of(tracing::Level::DEBUG, f).1
    }

    fn warnings(logs: &str) -> Vec<&str> {
        logs.lines().filter(|l| l.contains("WARN")).collect()
    }

    #[test]
    fn only_a_trackfs_device_in_mountinfo_is_ours() {
        let mountinfo = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
61 22 0:40 / /tmp/m ro,nosuid,nodev,noatime - fuse trackfs ro,user_id=0,group_id=0
62 22 0:41 / /media/usb rw,nosuid shared:31 - fuseblk /dev/sdb1 rw,user_id=0
63 22 0:42 / /tmp/n ro,nosuid,nodev - fuse.trackfs trackfs ro,user_id=0
64 22 0:43 / /tmp/s rw,nosuid,nodev - fuse.sshfs me@host: rw,user_id=0
";
        assert!(is_trackfs_device(mountinfo, 0, 40));
        assert!(is_trackfs_device(mountinfo, 0, 42), "with its subtype");
        assert!(!is_trackfs_device(mountinfo, 0, 43), "sshfs");
        assert!(!is_trackfs_device(mountinfo, 0, 41), "ntfs-3g's fuseblk");
        assert!(!is_trackfs_device(mountinfo, 254, 0), "the disk below");
        assert!(!is_trackfs_device(mountinfo, 0, 4), "no such device");
        assert!(!is_trackfs_device("", 0, 40));
    }
}
