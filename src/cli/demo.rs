//! `trackfs demo`: a sample library, served and mounted in one command.

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Where to mount (created when missing, removed again afterwards).
    mountpoint: Option<PathBuf>,
}

pub(crate) fn run(args: DemoArgs) -> Result<(), String> {
    super::runtime()?
        .block_on(trackfs::demo::run(args.mountpoint))
        .map_err(|e| e.to_string())
}
