//! `trackfs refresh MOUNTPOINT`: has a running mount look for library changes now, and waits
//! until it has. It reads the mount's `.trackfs/refresh`, whose reading runs the refresh and
//! answers `ok …` or `error: …`: a file works on a read-only mount, needs no socket or cache
//! directory, and answers only whoever can read the mount.

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct RefreshArgs {
    /// Where trackfs is mounted.
    mountpoint: PathBuf,
}

pub(crate) fn run(args: RefreshArgs) -> Result<(), String> {
    let path = args.mountpoint.join(".trackfs/refresh");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}; is trackfs mounted there?",
            path.display()
        )
    })?;
    let text = text.trim_end();
    match text.strip_prefix("ok") {
        Some(summary) => trackfs::stdout::print(&format!("refreshed: {}\n", summary.trim())),
        None => Err(text.strip_prefix("error: ").unwrap_or(text).to_string()),
    }
}
