//! `trackfs pin`, `unpin` and `cache`: requests to a running mount over its control socket
//! (`mount::control`), so they work on the read-only mount.

use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use trackfs::mount::control::{self, Request};

#[derive(Args, Debug)]
pub(crate) struct PinArgs {
    /// Tracks, album or artist folders under a trackfs mount.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct CacheArgs {
    /// Where trackfs is mounted.
    mountpoint: PathBuf,
}

/// The mount holding every path, and the paths relative to it.
fn locate_all(paths: &[PathBuf]) -> Result<(PathBuf, Vec<String>), String> {
    let mut mount: Option<PathBuf> = None;
    let mut relative = Vec::new();
    for path in paths {
        let (point, inside) = control::locate(path)?;
        if mount.as_ref().is_some_and(|m| *m != point) {
            return Err("the paths are under different mounts: one mount at a time".into());
        }
        mount = Some(point);
        relative.push(inside.to_string_lossy().into_owned());
    }
    mount
        .map(|m| (m, relative))
        .ok_or_else(|| "no path given".into())
}

fn ask(
    mountpoint: &Path,
    request: Request,
    bar: Option<indicatif::ProgressBar>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let progress = |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let message = runtime.block_on(control::request(mountpoint, &request, progress));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    trackfs::stdout::print(&format!("{}\n", message?))
}

pub(crate) fn pin(args: PinArgs) -> Result<(), String> {
    let (mountpoint, paths) = locate_all(&args.paths)?;
    // A bar only for a person watching; scripts get the final line alone.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
        );
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar
    });
    ask(&mountpoint, Request::Pin { paths }, bar)
}

pub(crate) fn unpin(args: PinArgs) -> Result<(), String> {
    let (mountpoint, paths) = locate_all(&args.paths)?;
    ask(&mountpoint, Request::Unpin { paths }, None)
}

pub(crate) fn cache(args: CacheArgs) -> Result<(), String> {
    let (mountpoint, _) = control::locate(&args.mountpoint)?;
    ask(&mountpoint, Request::Cache, None)
}
