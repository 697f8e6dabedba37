//! Command-line flags (clap) turned into the plain config structs each subcommand takes.
//! No hidden globals or environment knobs beyond `RUST_LOG`.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use trackfs::origin::{self, FaultConfig, FaultKind, PublishOptions, ServeConfig};

#[derive(Parser, Debug)]
#[command(
    name = "trackfs",
    version,
    about = "Mount a catalogue of encrypted, CDN-hosted audio tracks as a read-only directory",
    after_help = "Examples:\n  trackfs demo                                   # sample library, served and mounted at ./trackfs-demo\n  trackfs publish ~/Music ./library              # encrypt a music folder into a CDN library\n  trackfs serve ./library --listen 127.0.0.1:8700\n  trackfs mount http://127.0.0.1:8700 ~/tracks --credentials ./library/credentials"
)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace (RUST_LOG, when set, takes precedence).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Encrypt a music folder (Ogg Vorbis, MP3, FLAC) into a CDN library.
    #[command(
        after_help = "Examples:\n  trackfs publish ~/Music ./library\n  trackfs publish ./new-albums ./library   # adds only what is new"
    )]
    Publish(PublishArgs),
    /// Serve a published library: control plane and CDN, as DESIGN.md §1 describes.
    #[command(
        after_help = "Examples:\n  trackfs serve ./library\n  trackfs serve ./library --listen 0.0.0.0:8700 --cdn-base http://cdn.example:8080\n  trackfs serve ./library --latency 20 --fault-rate 0.15 --seed 7   # a hostile CDN for tests"
    )]
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
struct PublishArgs {
    /// Folder of music files (searched recursively).
    src: PathBuf,
    /// Library folder to create or update.
    library: PathBuf,
    /// Never draw a progress bar (it is only drawn on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// A folder made by `trackfs publish`.
    library: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
    /// Lifetime of signed CDN URLs, in seconds.
    #[arg(long, default_value_t = 3600)]
    url_ttl: u64,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_ttl: u64,
    /// Base URL of an external CDN serving LIBRARY/audio as <base>/audio/<file id> (e.g. nginx).
    #[arg(long)]
    cdn_base: Option<String>,
    /// Put this URL first in every storage-resolve answer (testing failover), may repeat.
    #[arg(long = "extra-cdn-url")]
    extra_cdn_urls: Vec<String>,
    /// Answer 404 for every head file.
    #[arg(long)]
    no_head_files: bool,
    /// Added latency for every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency: u64,
    /// Probability (0..=1) that a CDN request fails in one of --fault-kinds.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Comma-separated: 500,503,reset,truncate,stall,ignore-range,expired (default: all).
    #[arg(long, value_delimiter = ',')]
    fault_kinds: Vec<FaultKind>,
    /// How long a `stall` fault stalls, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    stall: u64,
    /// Seed for deterministic faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl ServeArgs {
    fn into_config(self) -> Result<ServeConfig, String> {
        if !(0.0..=1.0).contains(&self.fault_rate) {
            return Err(format!(
                "--fault-rate must be between 0 and 1, got {}",
                self.fault_rate
            ));
        }
        let mut config = ServeConfig::new(self.library);
        config.listen = self.listen;
        config.url_ttl = Duration::from_secs(self.url_ttl);
        config.token_ttl = Duration::from_secs(self.token_ttl);
        config.cdn_base = self.cdn_base;
        config.extra_cdn_urls = self.extra_cdn_urls;
        config.head_files = !self.no_head_files;
        config.latency = Duration::from_millis(self.latency);
        config.faults = FaultConfig {
            rate: self.fault_rate,
            kinds: if self.fault_kinds.is_empty() {
                FaultKind::ALL.to_vec()
            } else {
                self.fault_kinds
            },
            stall: Duration::from_millis(self.stall),
            seed: self.seed,
        };
        Ok(config)
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,trackfs={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    let result: Result<(), String> = match cli.command {
        Command::Publish(args) => {
            let options = PublishOptions {
                no_progress: args.no_progress,
            };
            origin::publish(&args.src, &args.library, &options)
                .map(|summary| eprintln!("{summary}"))
                .map_err(|e| e.to_string())
        }
        Command::Serve(args) => args.into_config().and_then(|config| {
            let rt = runtime().map_err(|e| format!("cannot start the runtime: {e}"))?;
            rt.block_on(origin::serve::run(config))
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
