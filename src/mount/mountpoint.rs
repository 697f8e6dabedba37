//! The mountpoint itself: checks before mounting (with the fix in each message) and ways to
//! unmount (as root with umount2, else through fusermount3), apart from the mount's setup.

use super::MountError;
use rustix::io::Errno;
use rustix::mount::UnmountFlags;
use std::path::Path;

/// Fails early, with a fix in the message, on the common mistakes.
pub(crate) fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| unusable_mountpoint(&shown, &e))?;
    if !meta.is_dir() {
        return Err(MountError::NotADirectory(shown));
    }
    if is_mountpoint(path) {
        return Err(MountError::AlreadyMounted(shown));
    }
    let empty = std::fs::read_dir(path).map_or(true, |mut entries| entries.next().is_none());
    if !empty {
        return Err(MountError::NotEmpty(shown));
    }
    Ok(())
}

/// Whether something is mounted at `path` (per /proc/self/mountinfo).
pub(super) fn is_mountpoint(path: &Path) -> bool {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|point| Path::new(&unescape_mountinfo(point)) == canonical)
}

/// Why a mountpoint cannot even be looked at, with the fix for the usual causes. ENOTCONN is a
/// FUSE mount whose filesystem died (a `kill -9`ed trackfs): it is there, orphaned.
pub(super) fn unusable_mountpoint(shown: &str, e: &std::io::Error) -> MountError {
    match e.kind() {
        std::io::ErrorKind::NotFound => MountError::MissingMountpoint(shown.to_owned()),
        _ if e.raw_os_error() == Some(libc::ENOTCONN) => MountError::Orphaned(shown.to_owned()),
        _ => MountError::Mount {
            path: shown.to_owned(),
            reason: e.to_string(),
        },
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(crate) fn unescape_mountinfo(text: &str) -> String {
    text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// `umount -l`: as root directly, otherwise through `fusermount3 -u -z`.
pub(super) fn detach(mountpoint: &Path) -> Result<(), String> {
    unmount_with(mountpoint, UnmountFlags::DETACH, &["-u", "-z"])
}

/// `umount`, failing with EBUSY while a file is open: as root directly, otherwise through
/// `fusermount3 -u`.
pub(super) fn unmount_now(mountpoint: &Path) -> Result<(), String> {
    unmount_with(mountpoint, UnmountFlags::empty(), &["-u"])
}

fn unmount_with(mountpoint: &Path, flags: UnmountFlags, fusermount: &[&str]) -> Result<(), String> {
    match rustix::mount::unmount(mountpoint, flags) {
        Ok(()) => return Ok(()),
        Err(Errno::PERM) => {}
        // Not a mountpoint (any more): unmounted from outside meanwhile.
        Err(Errno::INVAL) if !is_mountpoint(mountpoint) => return Ok(()),
        Err(e) => return Err(std::io::Error::from(e).to_string()),
    }
    let status = std::process::Command::new("fusermount3")
        .args(fusermount)
        .arg(mountpoint)
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        // Unmounted from outside meanwhile: what was asked for is done.
        Ok(_) if !is_mountpoint(mountpoint) => Ok(()),
        Ok(s) => Err(format!("fusermount3 {} failed ({s})", fusermount.join(" "))),
        Err(e) => Err(format!("cannot run fusermount3: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_fuse_mountpoint_is_called_mounted_not_missing() {
        let stale = std::io::Error::from_raw_os_error(libc::ENOTCONN);
        let message = unusable_mountpoint("/m", &stale).to_string();
        assert!(message.contains("fusermount3 -u /m"), "{message}");
        assert!(message.contains("process behind it is gone"), "{message}");
        let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert!(unusable_mountpoint("/m", &missing)
            .to_string()
            .contains("mkdir -p /m"));
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        let message = unusable_mountpoint("/m", &denied).to_string();
        assert!(message.contains("ermission denied"), "{message}");
    }
}
