//! `trackfs stats`: a mount's `.trackfs/stats` as a table people can read.

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct StatsArgs {
    /// Where trackfs is mounted.
    mountpoint: PathBuf,
}

pub(crate) fn run(args: StatsArgs) -> Result<(), String> {
    let path = args.mountpoint.join(".trackfs/stats");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}; is trackfs mounted there?",
            path.display()
        )
    })?;
    trackfs::stdout::print(&trackfs::client::stats::table(&text))
}
