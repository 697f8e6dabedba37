//! The fastest any FUSE filesystem can be read on this machine: one file whose bytes come
//! straight from memory, with no network, no decryption and no cache, answered on one request
//! thread by `writev` from a fixed buffer (like a minimal `/dev/fuse` server), with trackfs's
//! page-cache settings (kept across opens, 1 MiB requests, 64 background requests, 1 MiB mount
//! read-ahead). One thread because it measured fastest: on two quiet cores, fresh-mount reads
//! of 256 MiB with `dd bs=1M` ran at 3.6-3.9 GB/s with 1 or 2 threads and 2.9-3.3 with 8
//! (with or without `clone_fd`), at the same CPU cost (docs/benchmarks.md, issue 18 runs).
//!
//! `scripts/bench.sh` reads it beside trackfs and curl in row 1, so every run shows how much
//! of a cold read is FUSE's own cost (copying each byte into the kernel's page cache, 4 KiB at
//! a time) and how much is trackfs's. It is a measuring stick, not part of trackfs.
//!
//! Usage: `fuse_ceiling MOUNTPOINT SIZE_BYTES [direct] [--threads N] [--clone-fd]
//! [--read-ahead-kb KB]`; the file is `MOUNTPOINT/file`. It serves until unmounted (`umount
//! MOUNTPOINT`), then exits. With `direct`, the file is opened with `FOPEN_DIRECT_IO` (no page
//! cache): what trackfs would get without it. `--threads 8` is trackfs's own request-thread
//! count.

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, OpenFlags, ReplyAttr, ReplyData, ReplyEntry, ReplyOpen, Request,
};
use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

const ROOT: u64 = 1;
const FILE: u64 = 2;
const TTL: Duration = Duration::from_secs(3600);
/// Requests never exceed 1 MiB (the kernel's default `max_pages_limit`), and never straddle
/// more than one period of the pattern, so two periods cover any request.
const PERIOD: usize = 1 << 20;

struct Ceiling {
    size: u64,
    direct: bool,
    /// Two periods of a byte pattern, starting on a page boundary at `start` (the kernel's
    /// copies are several times slower when source and destination are aligned differently).
    pattern: Vec<u8>,
    start: usize,
}

impl Ceiling {
    fn new(size: u64, direct: bool) -> Self {
        let mut pattern = vec![0u8; 2 * PERIOD + 4096];
        let start = pattern.as_ptr().align_offset(4096);
        for (i, byte) in pattern[start..].iter_mut().enumerate() {
            *byte = (i % 251) as u8;
        }
        Ceiling {
            size,
            direct,
            pattern,
            start,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, perm, size) = if ino == ROOT {
            (FileType::Directory, 0o755, 0)
        } else {
            (FileType::RegularFile, 0o644, self.size)
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 128 * 1024,
            flags: 0,
        }
    }
}

impl Filesystem for Ceiling {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == ROOT && name == "file" {
            reply.entry(&TTL, &self.attr(FILE), Generation(0));
        } else {
            reply.error(Errno::from_i32(libc::ENOENT));
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &self.attr(ino.0));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let flags = if self.direct {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        };
        reply.opened(FileHandle(0), flags);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let len = self
            .size
            .saturating_sub(offset)
            .min(size.min(1 << 20) as u64) as usize;
        let from = self.start + (offset % PERIOD as u64) as usize;
        reply.data(&self.pattern[from..from + len]);
    }
}

/// How it is mounted (the defaults: one request thread, 1 MiB read-ahead).
struct Options {
    mountpoint: String,
    size: u64,
    direct: bool,
    threads: usize,
    clone_fd: bool,
    read_ahead_kb: u32,
}

fn parse_args() -> Options {
    let mut args = std::env::args().skip(1);
    let (Some(mountpoint), Some(Ok(size))) = (args.next(), args.next().map(|s| s.parse())) else {
        usage();
    };
    let mut options = Options {
        mountpoint,
        size,
        direct: false,
        threads: 1,
        clone_fd: false,
        read_ahead_kb: 1024,
    };
    while let Some(arg) = args.next() {
        let mut number = || match args.next().map(|s| s.parse()) {
            Some(Ok(n)) if n > 0 => n,
            _ => usage(),
        };
        match arg.as_str() {
            "direct" => options.direct = true,
            "--threads" => options.threads = number() as usize,
            "--clone-fd" => options.clone_fd = true,
            "--read-ahead-kb" => options.read_ahead_kb = number(),
            _ => usage(),
        }
    }
    options
}

fn main() {
    let options = parse_args();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("fuse_ceiling".into()),
        fuser::MountOption::RO,
    ];
    config.n_threads = Some(options.threads);
    config.clone_fd = options.clone_fd;
    let mountpoint = &options.mountpoint;
    let session = match fuser::Session::new(
        Ceiling::new(options.size, options.direct),
        std::path::Path::new(mountpoint),
        &config,
    )
    .and_then(|s| s.spawn())
    {
        Ok(session) => session,
        Err(e) => {
            eprintln!("fuse_ceiling: cannot mount {mountpoint}: {e}");
            std::process::exit(1);
        }
    };
    set_read_ahead(mountpoint, options.read_ahead_kb);
    // Serve until someone unmounts it (the benchmark does, then waits for this process).
    while !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: fuse_ceiling MOUNTPOINT SIZE_BYTES [direct] [--threads N] [--clone-fd] \
         [--read-ahead-kb KB]"
    );
    std::process::exit(2);
}

/// The mount's read-ahead, as trackfs sets it (needs root; otherwise the default stays).
/// fuser answers INIT inside `Session::new`, so this write is not undone by the INIT reply.
fn set_read_ahead(mountpoint: &str, kb: u32) {
    use std::os::linux::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(mountpoint) {
        let dev = meta.st_dev();
        let path = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        let _ = std::fs::write(path, kb.to_string());
    }
}
