//! Command-line flags (clap) turned into the plain config structs each subcommand takes: one
//! file per subcommand, the shared value parsers in `parse`. Every value is checked while
//! parsing, so a bad flag is refused (exit status 2, clap's message naming the flag and the
//! range) before anything is read, mounted or served. No hidden globals or environment knobs
//! beyond `RUST_LOG`.

mod demo;
mod mount;
mod parse;
mod pin;
mod publish;
mod refresh;
mod serve;
mod stats;

use clap::{CommandFactory, Parser, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "trackfs",
    version,
    about = "Mount a catalogue of encrypted, CDN-hosted audio tracks as a read-only directory",
    after_help = "Examples:\n  trackfs demo                                   # sample library, served and mounted at ./trackfs-demo\n  trackfs publish ~/Music ./library              # encrypt a music folder into a CDN library\n  trackfs serve ./library --listen 127.0.0.1:8700\n  trackfs mount http://127.0.0.1:8700 ~/tracks --credentials ./library/credentials"
)]
struct Cli {
    /// Log level (RUST_LOG, when set, takes precedence).
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Encrypt a music folder (Ogg Vorbis, MP3, FLAC) into a CDN library.
    #[command(
        after_help = "Examples:\n  trackfs publish ~/Music ./library\n  trackfs publish --dry-run ~/Music ./library   # what would change"
    )]
    Publish(publish::PublishArgs),
    /// Build a sample library, serve it on loopback and mount it: the one-command tour.
    #[command(
        after_help = "Examples:\n  trackfs demo                 # mounts at ./trackfs-demo\n  trackfs demo /tmp/music      # mounts there; Ctrl-C unmounts and cleans up"
    )]
    Demo(demo::DemoArgs),
    /// Mount an origin's catalogue as a read-only directory (runs until unmounted).
    #[command(
        after_help = "Examples:\n  trackfs mount http://127.0.0.1:8700 ~/tracks --credentials ./library/credentials\n  trackfs mount https://origin.example ~/tracks --credentials ~/.config/trackfs/credentials --cache-size 1GiB --format FLAC_FLAC,OGG_VORBIS_320\n\nUnmount with Ctrl-C, `kill <pid>` or `fusermount3 -u <MOUNTPOINT>`."
    )]
    Mount(mount::MountArgs),
    /// Have a running mount look for library changes now; returns when it has.
    #[command(
        after_help = "Example:\n  trackfs refresh ~/tracks\n\nA mount also refreshes every --refresh-interval and on SIGHUP; what changed is listed in MOUNTPOINT/.trackfs/changes."
    )]
    Refresh(refresh::RefreshArgs),
    /// Print a mount's live counters as a table.
    #[command(after_help = "Example:\n  trackfs stats ~/tracks")]
    Stats(stats::StatsArgs),
    /// Download tracks, albums or artists into a mount's disk cache and keep them there.
    #[command(
        after_help = "Examples:\n  trackfs pin ~/tracks/Björk/Vespertine     # returns when the album is on disk\n  trackfs pin ~/tracks/Björk                # every album of an artist"
    )]
    Pin(pin::PinArgs),
    /// Let pinned tracks be evicted again.
    #[command(after_help = "Example:\n  trackfs unpin ~/tracks/Björk/Vespertine")]
    Unpin(pin::PinArgs),
    /// Print a mount's disk cache use: total, pinned, hits and misses, each album's share.
    #[command(after_help = "Example:\n  trackfs cache ~/tracks")]
    Cache(pin::CacheArgs),
    /// Serve a published library: control plane and CDN, as docs/protocol.md describes.
    #[command(
        after_help = "Examples:\n  trackfs serve ./library\n  trackfs serve ./library --listen 0.0.0.0:8700 --cdn-base http://cdn.example:8080\n  trackfs serve ./library --latency 20 --fault-rate 0.15 --seed 7   # a hostile CDN for tests"
    )]
    Serve(serve::ServeArgs),
}

impl Cli {
    /// Parses the command line; checks that span two flags are reported as clap reports a
    /// bad value (and exit the same way), under the subcommand's usage line.
    fn parse_checked() -> Cli {
        let cli = Cli::parse();
        let problem = match &cli.command {
            Command::Mount(args) => args.check().err().map(|e| ("mount", e)),
            _ => None,
        };
        if let Some((name, message)) = problem {
            let mut command = Cli::command();
            let sub = command.find_subcommand_mut(name).map(std::mem::take);
            sub.unwrap_or(command)
                .bin_name(format!("trackfs {name}"))
                .error(clap::error::ErrorKind::ValueValidation, message)
                .exit();
        }
        cli
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // fuser warns about an outside unmount it handled fine: only its errors are shown.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("warn,fuser::mnt=error,trackfs={level}"))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// The tokio runtime the long-running subcommands (mount, serve, demo) run on.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse_checked();
    init_logging(&cli.log_level);
    let result: Result<(), String> = match cli.command {
        Command::Publish(args) => publish::run(args),
        Command::Mount(args) => args.into_config().and_then(|config| {
            let rt = runtime()?;
            let result = rt.block_on(trackfs::mount::run(config));
            // A read abandoned on a hung disk may still be stuck in its blocking thread:
            // exit without it (dropping the runtime would wait for it for ever).
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result.map_err(|e| e.to_string())
        }),
        Command::Stats(args) => stats::run(args),
        Command::Pin(args) => pin::pin(args),
        Command::Unpin(args) => pin::unpin(args),
        Command::Cache(args) => pin::cache(args),
        Command::Refresh(args) => refresh::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => runtime().and_then(|rt| {
            rt.block_on(trackfs::origin::serve::run(args.into_config()))
                .map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("trackfs: error: {message}");
            ExitCode::FAILURE
        }
    }
}
