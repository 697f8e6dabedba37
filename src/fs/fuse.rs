//! The only file that knows fuser: translates kernel requests into `FsCore` calls and back.
//!
//! Anything that may touch the network (lookup, getattr, read) and has to wait is answered
//! from a tokio task, so a slow fetch of one file never holds up the kernel's request loop,
//! other files or `ls`; what is ready at once (cached blocks) is answered on the spot.

use crate::fs::{Attr, FsCore, FsError, Kind, OpenMode};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Files are content-addressed, and a refresh that changes the tree tells the kernel what to
/// forget (`Notifier`): cache for long.
const LONG_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct TrackFs {
    core: Arc<FsCore>,
    runtime: tokio::runtime::Handle,
    owner: Owner,
    /// Cancelled at shutdown: every request still waiting on the network answers EIO at once.
    shutdown: CancellationToken,
    /// Cancelled when the session ends (fuser calls `destroy`), however it ends: an unmount
    /// from outside is noticed at once instead of at the next poll.
    ended: CancellationToken,
}

impl TrackFs {
    pub fn new(
        core: Arc<FsCore>,
        runtime: tokio::runtime::Handle,
        shutdown: CancellationToken,
    ) -> Self {
        let (uid, gid) = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        TrackFs {
            core,
            runtime,
            owner: Owner { uid, gid },
            shutdown,
            ended: CancellationToken::new(),
        }
    }

    /// A token cancelled when the session ends.
    pub fn ended(&self) -> CancellationToken {
        self.ended.clone()
    }

    /// Runs `work` and hands its result to `answer` (EIO at once on shutdown). Work that can
    /// finish without waiting (a read of cached blocks) is answered right here on the kernel
    /// request thread; the rest continues on tokio, so a slow fetch holds up nothing else.
    fn spawn<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, FsError>> + Send + 'static,
        answer: impl FnOnce(Result<T, Errno>) + Send + 'static,
    ) {
        let _runtime = self.runtime.enter();
        let mut work = Box::pin(work);
        if let Some(result) = answer_now(work.as_mut()) {
            return answer(result);
        }
        let shutdown = self.shutdown.clone();
        self.runtime.spawn(async move {
            let result = tokio::select! {
                result = work => result.map_err(|e| errno(&e)),
                _ = shutdown.cancelled() => Err(errno(&FsError::Abandoned)),
            };
            answer(result);
        });
    }

    fn ttl(attr: &Attr) -> Duration {
        if attr.immutable {
            LONG_TTL
        } else {
            Duration::ZERO
        }
    }
}

/// Polls `work` once on the calling thread, with a waker that does nothing: a future that is
/// not ready registers tokio's waker again when tokio polls it, so no wake-up is lost.
/// `None` means it has to wait. fuser does not catch panics, and one escaping here would end
/// the kernel request loop and with it the mount; it becomes EIO instead, as on tokio, where
/// a panicking task drops its reply and fuser answers EIO.
fn answer_now<T>(
    work: std::pin::Pin<&mut (impl std::future::Future<Output = Result<T, FsError>> + ?Sized)>,
) -> Option<Result<T, Errno>> {
    let mut here = std::task::Context::from_waker(std::task::Waker::noop());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.poll(&mut here))) {
        Ok(std::task::Poll::Ready(result)) => Some(result.map_err(|e| errno(&e))),
        Ok(std::task::Poll::Pending) => None,
        Err(_) => {
            tracing::error!("a request panicked; answered with EIO");
            Some(Err(errno(&FsError::Abandoned)))
        }
    }
}

/// Owner of every file: whoever mounted.
#[derive(Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

/// Modes as on an ordinary disk (0755/0644), not 0555/0444: `cp -r` and `rsync -a` carry
/// them into copies, which their owner must be able to change and delete. Writing is refused
/// all the same: the mount is read-only (EROFS).
fn file_attr(attr: &Attr, owner: Owner) -> FileAttr {
    let (kind, perm, nlink) = match attr.kind {
        Kind::Dir => (FileType::Directory, 0o755, 2),
        Kind::File => (FileType::RegularFile, 0o644, 1),
    };
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind,
        perm,
        nlink,
        uid: owner.uid,
        gid: owner.gid,
        rdev: 0,
        blksize: 128 * 1024,
        flags: 0,
    }
}

fn errno(error: &FsError) -> Errno {
    Errno::from_i32(error.errno())
}

impl Filesystem for TrackFs {
    fn destroy(&mut self) {
        self.ended.cancel();
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // More concurrent background requests (read-ahead) than the kernel's default 12.
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(errno(&FsError::NotFound));
        };
        let (core, owner) = (self.core.clone(), self.owner);
        self.spawn(
            async move { core.lookup(parent.0, &name).await },
            move |result| match result {
                Ok(attr) => reply.entry(
                    &TrackFs::ttl(&attr),
                    &file_attr(&attr, owner),
                    Generation(0),
                ),
                Err(e) => reply.error(e),
            },
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let (core, owner) = (self.core.clone(), self.owner);
        self.spawn(
            async move { core.getattr(ino.0).await },
            move |result| match result {
                Ok(attr) => reply.attr(&TrackFs::ttl(&attr), &file_attr(&attr, owner)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        match self.core.open(ino.0, write) {
            Ok(OpenMode::Cached) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Ok(OpenMode::Direct) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let core = self.core.clone();
        self.spawn(
            async move { core.read(ino.0, offset, size).await },
            move |result| match result {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            },
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Listing is in memory; only the size probes it starts run on tokio.
        let _guard = self.runtime.enter();
        let entries = match self.core.readdir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(&e)),
        };
        for (index, entry) in entries.iter().enumerate().skip(offset as usize) {
            let kind = match entry.kind {
                Kind::Dir => FileType::Directory,
                Kind::File => FileType::RegularFile,
            };
            if reply.add(INodeNo(entry.ino), index as u64 + 1, kind, &entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Players and ffmpeg ask whether a file is a terminal (TCGETS): "not a typewriter", the
    /// answer for any regular file, and no warning for it in the log.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    /// No block or inode counts, as for other virtual filesystems: a count of files with none
    /// free would read as "100% of inodes used" to `df -i` and to disk monitoring.
    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 128 * 1024, 255, 128 * 1024);
    }

    /// SEEK_DATA/SEEK_HOLE (`cp` asks): these files have no holes, which is what the kernel
    /// answers by itself once told that trackfs has no lseek of its own, without fuser's
    /// "not implemented" warning for every mount.
    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let write = mask.contains(fuser::AccessFlags::W_OK);
        let execute = mask.contains(fuser::AccessFlags::X_OK);
        match self.core.access(ino.0, write, execute) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        self.core.closed(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// No extended attributes (the kernel asks for security labels on every lookup).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    // Nothing that would change the tree (setattr, write, mknod, mkdir, unlink, rmdir,
    // symlink, rename, link, create, setxattr) has a handler: the mount is read-only
    // (`MountOption::RO`), so the kernel answers EROFS before it would ask (checked on a
    // real mount by tests/mount_independent.rs), and fuser's defaults are never reached.
}

/// Mounts `fs` at `mountpoint` with a background session. Private to the mounting user unless
/// `allow_other` (then with kernel permission checks, and auto-unmount if the process dies).
pub fn spawn(
    fs: TrackFs,
    mountpoint: &std::path::Path,
    allow_other: bool,
) -> std::io::Result<Session> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("trackfs".into()),
        fuser::MountOption::Subtype("trackfs".into()),
        fuser::MountOption::RO,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoAtime,
    ];
    if allow_other {
        config.acl = fuser::SessionACL::All;
        config
            .mount_options
            .push(fuser::MountOption::DefaultPermissions);
        config.mount_options.push(fuser::MountOption::AutoUnmount);
    }
    // Cached reads are answered (copied into the page cache) on these threads, so more of
    // them let the kernel's concurrent read-ahead requests overlap; reads that wait for the
    // CDN never hold one (tests/slow_file.rs), so fewer would be safe, not faster. Measured on
    // two cores in alternating A/B runs of cold sequential reads: 4 beat 2 by 10-14%, 8 beat
    // 4 by 14-33%, 16 was no better than 8; again for issue 18 (docs/benchmarks.md): 1, 2, 4
    // and 16 no better than 8, and 2 worse in one round (cold 396 against 546 MB/s, eight
    // readers 550-658 against 733-832), though one thread reads fastest in the do-nothing
    // examples/fuse_ceiling.rs. Idle threads cost a stack and a blocked read(2) each.
    config.n_threads = Some(8);
    fuser::Session::new(fs, mountpoint, &config)?
        .spawn()
        .map(Session)
}

/// Sends the kernel what to forget after a tree swap. Blocking (a write to `/dev/fuse`), and
/// never to be called from inside a request handler: the kernel may hold locks while it
/// waits for that reply (fuser's `Notifier` docs). The refresh task calls it on a blocking thread.
pub struct Notifier(fuser::Notifier);

impl Notifier {
    /// Sends each notice; the kernel answers ENOENT for what it had not cached (not an
    /// error). Returns how many were sent.
    pub fn forget(&self, notices: &[crate::fs::diff::Forget]) -> usize {
        use crate::fs::diff::Forget;
        let mut sent = 0;
        for notice in notices {
            let result = match notice {
                Forget::Entry { parent, name } => {
                    self.0.inval_entry(INodeNo(*parent), OsStr::new(name))
                }
                Forget::Inode(ino) => self.0.inval_inode(INodeNo(*ino), 0, 0),
            };
            match result {
                Ok(()) => sent += 1,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => tracing::debug!("kernel notification {notice:?}: {e}"),
            }
        }
        sent
    }
}

/// A mounted filesystem's request loop, running on its own threads.
pub struct Session(fuser::BackgroundSession);

impl Session {
    /// Tells the kernel what a refresh changed (`fs::diff`).
    pub fn notifier(&self) -> Notifier {
        Notifier(self.0.notifier())
    }

    /// True once the kernel side is gone (an unmount from outside).
    pub fn is_finished(&self) -> bool {
        self.0.guard.is_finished()
    }

    /// Waits for the request loop to end (after an unmount from outside).
    pub fn join(self) -> std::io::Result<()> {
        self.0.join()
    }

    pub fn unmount_and_join(self) -> std::io::Result<()> {
        self.0.umount_and_join()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_panics_on_the_kernel_thread_is_answered_eio() {
        let work = std::pin::pin!(async {
            panic!("bug in a request");
            #[allow(unreachable_code)]
            Ok::<(), FsError>(())
        });
        assert_eq!(answer_now(work), Some(Err(Errno::EIO)));
    }

    #[test]
    fn ready_work_is_answered_at_once_and_waiting_work_is_not() {
        let ready = std::pin::pin!(async { Ok::<u8, FsError>(7) });
        assert_eq!(answer_now(ready), Some(Ok(7)));
        let waiting = std::pin::pin!(std::future::pending::<Result<u8, FsError>>());
        assert_eq!(answer_now(waiting), None);
    }
}
