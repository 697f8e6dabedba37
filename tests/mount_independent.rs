//! Real FUSE mounts of the independent origin (tests/independent/origin.py): unknown protobuf
//! fields, unknown formats, a password with `:`, names with unicode, quotes, colons and `?`.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::os::unix::fs::FileExt;

use support::{sources, Mount, PythonOrigin};

fn setup(extra: &[&str]) -> Option<(PythonOrigin, Mount)> {
    if !support::fuse_usable() || !support::require_tool("ffmpeg") {
        return None;
    }
    let origin = PythonOrigin::start(sources::music(), extra);
    let mount = Mount::start(&origin.url, &origin.credentials_file, &[]);
    Some((origin, mount))
}

#[test]
fn every_track_appears_once_with_the_source_bytes() {
    let Some((origin, mount)) = setup(&["--seed", "3"]) else {
        return;
    };
    let expected = origin.expected_files();
    assert_eq!(expected.len(), sources::TRACKS.len());
    for (relative, source) in &expected {
        let path = mount.path().join(relative);
        let meta =
            std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", relative.display()));
        assert_eq!(
            meta.len(),
            std::fs::metadata(source).unwrap().len(),
            "size of {}",
            relative.display()
        );
        assert_eq!(
            support::sha256_file(&path),
            support::sha256_file(source),
            "bytes of {}",
            relative.display()
        );
    }
    let listed = support::walk_files(&mount.path())
        .into_iter()
        .filter(|p| !p.starts_with(".trackfs"))
        .count();
    assert_eq!(listed, expected.len(), "no extra or duplicate files");
    assert!(mount.path().join(".trackfs/stats").exists());
}

#[test]
fn head_files_of_the_mounted_layout_give_the_same_bytes() {
    let Some((origin, mount)) = setup(&["--seed", "5", "--head-layout", "mounted"]) else {
        return;
    };
    for (relative, source) in origin.expected_files() {
        let path = mount.path().join(&relative);
        // From the start, so the first read can be answered from the head.
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", relative.display()));
        assert!(
            got == std::fs::read(source).unwrap(),
            "bytes of {}",
            relative.display()
        );
    }
    assert_eq!(mount.stat("errors"), 0);
}

#[test]
fn hidden_ogg_headers_that_are_ogg_pages_give_the_same_bytes() {
    // Spotify's files: the 167-byte header is itself an Ogg page; heads of the stored layout.
    let Some((origin, mount)) = setup(&["--seed", "6", "--ogg-header", "page"]) else {
        return;
    };
    let mut oggs = 0;
    for (relative, source) in origin.expected_files() {
        oggs += usize::from(relative.extension().is_some_and(|e| e == "ogg"));
        let got = std::fs::read(mount.path().join(&relative))
            .unwrap_or_else(|e| panic!("{}: {e}", relative.display()));
        assert!(
            got == std::fs::read(source).unwrap(),
            "bytes of {}",
            relative.display()
        );
    }
    assert!(oggs > 0, "the library has Ogg files");
    assert_eq!(mount.stat("errors"), 0);
}

#[test]
fn random_preads_equal_the_source() {
    let Some((origin, mount)) = setup(&["--seed", "4"]) else {
        return;
    };
    let files: Vec<_> = origin
        .expected_files()
        .into_iter()
        .map(|(rel, src)| {
            (
                std::fs::File::open(mount.path().join(rel)).unwrap(),
                std::fs::read(src).unwrap(),
            )
        })
        .collect();
    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    let strategy = (0..files.len(), 0.0f64..1.1, 0usize..300_000);
    runner
        .run(&strategy, |(index, position, len)| {
            let (file, source) = &files[index];
            let offset = (position * source.len() as f64) as u64;
            let mut buf = vec![0u8; len];
            let got = file.read_at(&mut buf, offset).unwrap();
            let start = (offset as usize).min(source.len());
            let end = (start + len).min(source.len());
            prop_assert_eq!(got, end - start, "length at offset {} len {}", offset, len);
            prop_assert!(
                buf[..got] == source[start..end],
                "bytes at offset {} len {}",
                offset,
                len
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn sixteen_concurrent_readers_get_exact_bytes() {
    let Some((origin, mount)) = setup(&["--seed", "5"]) else {
        return;
    };
    let expected = origin.expected_files();
    std::thread::scope(|scope| {
        for reader in 0..16 {
            // Half on one shared (large) file, half spread over the others.
            let (relative, source) = if reader % 2 == 0 {
                &expected[2]
            } else {
                &expected[reader % expected.len()]
            };
            let path = mount.path().join(relative);
            scope.spawn(move || {
                let want = std::fs::read(source).unwrap();
                let file = std::fs::File::open(&path).unwrap();
                let mut got = vec![0u8; want.len()];
                // Different chunk sizes per reader, so requests interleave differently.
                let chunk = 4096 * (reader + 1);
                let mut offset = 0;
                while offset < want.len() {
                    let n = file
                        .read_at(
                            &mut got[offset..(offset + chunk).min(want.len())],
                            offset as u64,
                        )
                        .unwrap();
                    assert!(n > 0, "early EOF at {offset}");
                    offset += n;
                }
                assert!(
                    got == want,
                    "reader {reader} got wrong bytes of {}",
                    path.display()
                );
            });
        }
    });
}

#[test]
fn the_mount_is_read_only_and_unknown_names_are_enoent() {
    let Some((origin, mount)) = setup(&["--seed", "6"]) else {
        return;
    };
    let (relative, _) = &origin.expected_files()[0];
    let track = mount.path().join(relative);
    let errno = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    let erofs = Some(libc::EROFS);
    // Ordinary modes, so copies stay deletable; writes fail all the same.
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&track), 0o644);
    assert_eq!(mode(track.parent().unwrap()), 0o755);
    assert_eq!(
        errno(std::fs::write(mount.path().join("new.mp3"), b"x")),
        erofs
    );
    assert_eq!(
        errno(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&track)
                .map(drop)
        ),
        erofs
    );
    assert_eq!(errno(std::fs::remove_file(&track)), erofs);
    assert_eq!(errno(std::fs::create_dir(mount.path().join("dir"))), erofs);
    assert_eq!(
        errno(std::fs::rename(&track, mount.path().join("x"))),
        erofs
    );
    // trackfs has no handlers for these: the kernel refuses them on a read-only mount.
    let perm = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    assert_eq!(errno(std::fs::set_permissions(&track, perm)), erofs);
    let opened = std::fs::File::open(&track).unwrap();
    assert_eq!(
        errno(opened.set_modified(std::time::SystemTime::now())),
        erofs
    );
    let link = mount.path().join("link");
    assert_eq!(errno(std::os::unix::fs::symlink(&track, &link)), erofs);
    assert_eq!(errno(std::fs::hard_link(&track, &link)), erofs);
    assert_eq!(errno(std::fs::remove_dir(track.parent().unwrap())), erofs);
    assert_eq!(
        errno(std::fs::metadata(mount.path().join("nope")).map(drop)),
        Some(libc::ENOENT)
    );
    // access(2): files are 0444 and directories 0555, whoever asks.
    let access = |path: &std::path::Path, mode| {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        match unsafe { libc::access(c.as_ptr(), mode) } {
            0 => None,
            _ => std::io::Error::last_os_error().raw_os_error(),
        }
    };
    assert_eq!(access(&track, libc::R_OK), None);
    assert_eq!(access(&track, libc::X_OK), Some(libc::EACCES));
    assert_eq!(access(&track, libc::W_OK), erofs);
    assert_eq!(
        access(track.parent().unwrap(), libc::R_OK | libc::X_OK),
        None
    );
    // Players ask whether a file is a terminal: "no", and nothing in the log about it.
    let file = std::fs::File::open(&track).unwrap();
    let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
    let asked = unsafe {
        use std::os::fd::AsRawFd;
        libc::ioctl(file.as_raw_fd(), libc::TCGETS, termios.as_mut_ptr())
    };
    assert_eq!(asked, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
    // `cp` looks for holes: there are none, and nothing in the log about it either.
    let size = file.metadata().unwrap().len() as i64;
    let seek = |offset, whence| unsafe {
        use std::os::fd::AsRawFd;
        libc::lseek(file.as_raw_fd(), offset, whence)
    };
    assert_eq!(seek(0, libc::SEEK_DATA), 0);
    assert_eq!(seek(0, libc::SEEK_HOLE), size);
    // `df -i` and disk monitors: no inode counts at all, never "100% of inodes used".
    let mut fs = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    let root = std::ffi::CString::new(mount.path().as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::statvfs(root.as_ptr(), fs.as_mut_ptr()) }, 0);
    let fs = unsafe { fs.assume_init() };
    assert_eq!((fs.f_files, fs.f_ffree), (0, 0));
    assert!(
        !mount.log_text().contains("Not Implemented"),
        "{}",
        mount.log_text()
    );
    assert_eq!(
        errno(std::fs::metadata(track.join("below-a-file")).map(drop)),
        Some(libc::ENOTDIR)
    );
}

#[test]
fn sigterm_unmounts_cleanly() {
    let Some((_origin, mut mount)) = setup(&["--seed", "7"]) else {
        return;
    };
    let point = mount.path();
    assert!(support::is_mounted(&point));
    let status = mount.terminate().expect("trackfs exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        mount.log_text()
    );
    assert!(!support::is_mounted(&point), "still mounted after SIGTERM");
}

/// Every track of the manifest has the source's bytes in the mount.
fn assert_every_track(origin: &PythonOrigin, mount: &Mount) {
    for (relative, source) in origin.expected_files() {
        let got = std::fs::read(mount.path().join(&relative))
            .unwrap_or_else(|e| panic!("{}: {e}", relative.display()));
        assert!(
            got == std::fs::read(&source).unwrap(),
            "bytes of {}",
            relative.display()
        );
    }
}

#[test]
fn a_v1_1_origin_with_etags_and_old_style_covers_gives_every_track() {
    // Covers in Album.cover (9) and cover_group (17) by turns, playlists with episodes and
    // unknown tracks, ETags: none of it may disturb the tracks.
    let Some((origin, mount)) = setup(&[
        "--seed",
        "9",
        "--protocol",
        "v1.1",
        "--etags",
        "--cover-field",
        "alternate",
    ]) else {
        return;
    };
    assert_eq!(
        origin.expected_files().len(),
        sources::TRACKS.len() + 2,
        "the sample album of v1.1 is there"
    );
    assert_every_track(&origin, &mount);
    assert_eq!(mount.stat("errors"), 0);
}

#[test]
fn an_open_track_reads_to_the_end_after_its_album_left_the_origin() {
    let Some((mut origin, mount)) = setup(&["--seed", "10", "--protocol", "v1.1"]) else {
        return;
    };
    let (relative, source) = origin.expected_files()[2].clone();
    let album = relative.parent().unwrap().to_path_buf();
    let file = std::fs::File::open(mount.path().join(&relative)).unwrap();
    let want = std::fs::read(&source).unwrap();
    let mut got = vec![0u8; want.len()];
    let half = want.len() / 2;
    assert_eq!(file.read_at(&mut got[..half], 0).unwrap(), half);
    // The album leaves the library (the origin's catalogue says so) while the file is open.
    let album_key = album.to_str().unwrap().to_string();
    origin.set_catalogue(&serde_json::json!({ "exclude": [album_key] }));
    assert!(
        origin
            .expected_files()
            .iter()
            .all(|(r, _)| !r.starts_with(&album)),
        "the origin no longer lists {}",
        album.display()
    );
    let mut offset = half;
    while offset < want.len() {
        let n = file.read_at(&mut got[offset..], offset as u64).unwrap();
        assert!(n > 0, "early EOF at {offset}");
        offset += n;
    }
    assert!(got == want, "bytes of {}", relative.display());
}
