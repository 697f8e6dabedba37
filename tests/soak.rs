//! A bounded soak: 16 readers for 60 s through `trackfs serve --fault-rate 0.1` (every fault
//! kind); every byte is right, no read fails, and the mount's peak RSS stays bounded.

mod support;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use support::rust_origin::RustOrigin;
use support::{sources, Mount};

const SOAK: Duration = Duration::from_secs(60);
const CACHE_MIB: u64 = 32;

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn sixteen_readers_for_a_minute_under_ten_percent_faults() {
    if !support::fuse_usable() || !support::require_tool("ffmpeg") {
        return;
    }
    let origin = RustOrigin::start(
        sources::music(),
        &[
            "--fault-rate",
            "0.1",
            "--stall",
            "1500",
            "--seed",
            "21",
            "--url-ttl",
            "5",
            "--token-ttl",
            "7",
        ],
    );
    let cache = format!("{CACHE_MIB}MiB");
    let mount = Mount::start(
        &origin.url,
        &origin.credentials_file,
        &["--cache-size", &cache, "--stall-timeout", "1"],
    );
    let files: Vec<_> = origin_files(&mount);
    let deadline = Instant::now() + SOAK;
    let reads = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|reader| {
                let files = &files;
                scope.spawn(move || {
                    let mut count = 0usize;
                    let mut index = reader;
                    while Instant::now() < deadline {
                        let (path, want) = &files[index % files.len()];
                        let file = std::fs::File::open(path).unwrap();
                        // Drop the kernel's cached pages so every pass reaches trackfs.
                        unsafe {
                            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
                        };
                        let got = std::fs::read(path)
                            .unwrap_or_else(|e| panic!("reader {reader}: {}: {e}", path.display()));
                        assert!(
                            &got == want,
                            "reader {reader}: wrong bytes in {}",
                            path.display()
                        );
                        count += 1;
                        index += 7;
                    }
                    count
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    assert!(reads > 16, "only {reads} full reads in {SOAK:?}");
    assert!(mount.stat("retries") > 0, "faults were injected");
    let peak_mib = peak_rss_kib(mount.pid()) / 1024;
    assert!(
        peak_mib <= CACHE_MIB + 64,
        "peak RSS {peak_mib} MiB exceeds the cache budget + 64 MiB"
    );
    eprintln!(
        "soak: {reads} full reads, peak RSS {peak_mib} MiB, retries {}",
        mount.stat("retries")
    );
}

fn origin_files(mount: &Mount) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    sources::TRACKS
        .iter()
        .map(|(relative, _)| {
            let path = std::path::Path::new(relative);
            let file = path.file_name().unwrap().to_str().unwrap();
            let (number, title) = file.split_once(' ').unwrap();
            let mounted = mount
                .path()
                .join(path.parent().unwrap())
                .join(format!("{number} - {title}"));
            (
                mounted,
                std::fs::read(sources::music().join(relative)).unwrap(),
            )
        })
        .collect()
}
