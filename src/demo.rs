//! `trackfs demo`: the whole product in one command, on a sample library built into the binary.
//!
//! Writes the embedded sample tracks to a temporary folder, publishes them, serves them on a
//! free loopback port, mounts them (default `./trackfs-demo`) and waits for Ctrl-C; then it
//! unmounts and removes everything it made. Nothing outside the binary is needed, not ffmpeg.

use crate::client::api::Credentials;
use crate::mount::{self, MountConfig};
use crate::origin::{self, PublishOptions, ServeConfig};
use crate::stdout;
use std::path::{Path, PathBuf};

/// (path relative to the sample folder, bytes): real, playable Ogg Vorbis, MP3 and FLAC.
static SAMPLES: &[(&str, &[u8])] = include!("../assets/demo/files.rs");

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare the sample library in {path}: {reason}")]
    Prepare { path: String, reason: String },
    #[error("cannot create the mountpoint {path}: {reason}")]
    Mountpoint { path: String, reason: String },
    #[error(transparent)]
    Mount(#[from] mount::MountError),
}

/// A temporary folder removed on drop, also when the demo fails half-way.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn prepare_error(path: &Path, reason: impl ToString) -> DemoError {
    DemoError::Prepare {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Writes the samples and publishes them; returns the library folder.
fn build_library(work: &Path) -> Result<PathBuf, DemoError> {
    let music = work.join("music");
    for (relative, bytes) in SAMPLES {
        let path = music.join(relative);
        let parent = path.parent().unwrap_or(&music);
        std::fs::create_dir_all(parent).map_err(|e| prepare_error(parent, e))?;
        std::fs::write(&path, bytes).map_err(|e| prepare_error(&path, e))?;
    }
    let library = work.join("library");
    let options = PublishOptions {
        no_progress: true,
        ..Default::default()
    };
    origin::publish(&music, &library, &options).map_err(|e| prepare_error(&library, e))?;
    Ok(library)
}

pub async fn run(mountpoint: Option<PathBuf>) -> Result<(), DemoError> {
    let mountpoint = mountpoint.unwrap_or_else(|| PathBuf::from("trackfs-demo"));
    // Only a missing one is created: a stale mount (ENOTCONN) goes on to the mount's checks,
    // which say how to clear it.
    let created_mountpoint = std::fs::symlink_metadata(&mountpoint)
        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
    if created_mountpoint {
        std::fs::create_dir_all(&mountpoint).map_err(|e| DemoError::Mountpoint {
            path: mountpoint.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    let work = WorkDir(std::env::temp_dir().join(format!("trackfs-demo-{}", std::process::id())));
    let result = serve_and_mount(&work.0, &mountpoint).await;
    drop(work);
    if created_mountpoint {
        let _ = std::fs::remove_dir(&mountpoint);
    }
    result
}

async fn serve_and_mount(work: &Path, mountpoint: &Path) -> Result<(), DemoError> {
    let mut stop = mount::StopSignals::listen();
    let library = build_library(work)?;
    let credentials_path = library.join("credentials");
    let text = std::fs::read_to_string(&credentials_path)
        .map_err(|e| prepare_error(&credentials_path, e))?;
    let credentials =
        Credentials::from_text(&text).map_err(|e| prepare_error(&credentials_path, e))?;
    let origin = origin::start(ServeConfig::new(library))
        .await
        .map_err(|e| prepare_error(work, e))?;
    let mut config = MountConfig::new(origin.base_url(), mountpoint, credentials);
    // Inside the work folder, so it goes with it: the demo leaves no cache behind.
    config.disk_cache = Some(work.join("cache"));
    let mounted = tokio::select! {
        mounted = mount::mount(config) => mounted?,
        () = stop.received() => return Err(mount::MountError::Interrupted.into()),
    };
    print_welcome(mountpoint, origin.base_url(), mounted.tracks);
    stop.wait(&mounted).await;
    stdout::say(&format!("\nUnmounting {} ...\n", mountpoint.display()));
    mounted.unmount()?;
    let _ = origin.shutdown().await;
    stdout::say("Done: the demo library and its mount are gone.\n");
    Ok(())
}

fn print_welcome(mountpoint: &Path, origin: &str, tracks: usize) {
    let m = mountpoint.display();
    let exe = std::env::current_exe().map_or("trackfs".into(), |p| p.display().to_string());
    stdout::say(&format!(
        "\ntrackfs demo: {tracks} sample tracks served from {origin} and mounted at {m}\n\n\
         Try, in another terminal:\n  \
         ls -lR {m}\n  \
         mpv {m}/*/*/*            (or ffplay, vlc: any player)\n  \
         ffprobe {m}/*/*/*.ogg\n  \
         cat {m}/.trackfs/stats   (or: {exe} stats {m})\n  \
         mkdir -p /tmp/copy && cp -r {m}/* /tmp/copy/\n\n\
         Press Ctrl-C here to unmount and clean up.\n\n"
    ));
}
