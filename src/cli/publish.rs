//! `trackfs publish`: make a CDN library the encrypted mirror of a music folder.

use clap::Args;
use std::path::PathBuf;
use trackfs::origin::{self, PublishOptions};

#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    /// Folder of music files (searched recursively).
    src: PathBuf,
    /// Library folder to create or update (it mirrors SRC: what left SRC leaves it).
    library: PathBuf,
    /// Never draw a progress bar (it is only drawn on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// Show what would be added, changed and removed, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Publishes and prints the summary (to stderr, like the progress bar).
pub(crate) fn run(args: PublishArgs) -> Result<(), String> {
    let options = PublishOptions {
        no_progress: args.no_progress,
        dry_run: args.dry_run,
        ..Default::default()
    };
    let summary = origin::publish(&args.src, &args.library, &options).map_err(|e| e.to_string())?;
    eprintln!("{summary}");
    Ok(())
}
