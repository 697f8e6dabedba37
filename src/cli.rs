//! Command-line flags (clap) turned into the plain config structs each subcommand takes.
//! No hidden globals or environment knobs beyond `RUST_LOG`.

use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use trackfs::client::api::Credentials;
use trackfs::client::cdn::CdnConfig;
use trackfs::mount::{self, MountConfig};
use trackfs::origin::{self, FaultConfig, FaultKind, PublishOptions, ServeConfig};
use trackfs::protocol::model::AudioFormat;
use trackfs::readpath::reader::ReaderConfig;
use trackfs::units::Size;

#[derive(Parser, Debug)]
#[command(
    name = "trackfs",
    version,
    about = "Mount a catalogue of encrypted, CDN-hosted audio tracks as a read-only directory",
    after_help = "Examples:\n  trackfs demo                                   # sample library, served and mounted at ./trackfs-demo\n  trackfs publish ~/Music ./library              # encrypt a music folder into a CDN library\n  trackfs serve ./library --listen 127.0.0.1:8700\n  trackfs mount http://127.0.0.1:8700 ~/tracks --credentials ./library/credentials"
)]
pub struct Cli {
    /// Log level (RUST_LOG, when set, takes precedence).
    #[arg(long, global = true, default_value = "info",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
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
    /// Build a sample library, serve it on loopback and mount it: the one-command tour.
    #[command(
        after_help = "Examples:\n  trackfs demo                 # mounts at ./trackfs-demo\n  trackfs demo /tmp/music      # mounts there; Ctrl-C unmounts and cleans up"
    )]
    Demo(DemoArgs),
    /// Mount an origin's catalogue as a read-only directory (runs until unmounted).
    #[command(
        after_help = "Examples:\n  trackfs mount http://127.0.0.1:8700 ~/tracks --credentials ./library/credentials\n  trackfs mount https://origin.example ~/tracks --credentials ~/.config/trackfs/credentials --cache-size 1GiB --format FLAC_FLAC,OGG_VORBIS_320\n\nUnmount with Ctrl-C, `kill <pid>` or `fusermount3 -u <MOUNTPOINT>`."
    )]
    Mount(MountArgs),
    /// Print a mount's live counters as a table.
    #[command(after_help = "Example:\n  trackfs stats ~/tracks")]
    Stats(StatsArgs),
    /// Serve a published library: control plane and CDN, as docs/protocol.md describes.
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
struct MountArgs {
    /// Base URL of the origin (control plane), e.g. http://127.0.0.1:8700.
    origin: String,
    /// An existing, empty directory.
    mountpoint: PathBuf,
    /// File with one line `user:password`.
    #[arg(long)]
    credentials: PathBuf,
    /// Block cache budget, in human units (256MiB, 1G).
    #[arg(long, default_value_t = Size(mount::DEFAULT_CACHE_SIZE))]
    cache_size: Size,
    /// Local key file: `<file id hex> <key hex>` per line, used before /audiokey.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Only these formats, first preferred (e.g. FLAC_FLAC,OGG_VORBIS_320); tracks with none are hidden. Default: every track, best quality.
    #[arg(long, value_delimiter = ',', value_parser = parse_format)]
    format: Vec<AudioFormat>,
    /// Let other users read the mount (kernel permission checks on).
    #[arg(long)]
    allow_other: bool,
    /// PEM file of a private CA to trust for https origins and CDNs.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Seconds a CDN body may stay silent before the request is retried.
    #[arg(long, default_value_t = CdnConfig::default().stall_timeout.as_secs_f64())]
    stall_timeout: f64,
    /// Retries of a failed request (CDN or origin) before the read fails with EIO.
    #[arg(long, default_value_t = CdnConfig::default().attempts.saturating_sub(1))]
    retries: u32,
    /// Kernel read-ahead for the mount (set when running as root; 0 keeps the kernel's).
    #[arg(long, default_value_t = Size(u64::from(mount::DEFAULT_KERNEL_READ_AHEAD_KB) << 10))]
    kernel_read_ahead: Size,
    /// Advanced: cache block size (also the smallest CDN request).
    #[arg(long, default_value_t = Size(ReaderConfig::default().block_size))]
    block_size: Size,
    /// Advanced: largest single CDN request.
    #[arg(long, default_value_t = Size(ReaderConfig::default().max_request))]
    max_request: Size,
    /// Advanced: largest read-ahead window per sequential reader.
    #[arg(long, default_value_t = Size(ReaderConfig::default().readahead.max_window))]
    read_ahead: Size,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Where to mount (created when missing, removed again afterwards).
    mountpoint: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Where trackfs is mounted.
    mountpoint: PathBuf,
}

/// `127.0.0.1:8700`, or a name that resolves (`localhost:8700`): its first IPv4 address, else
/// its first.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not HOST:PORT ({e})"))?
        .collect();
    // `localhost` often lists ::1 first; clients and examples use 127.0.0.1.
    let first_v4 = addrs.iter().find(|a| a.is_ipv4());
    first_v4
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// A URL the client can fetch: http:// or https://.
fn check_http_url(flag: &str, url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(format!(
            "{flag} must be an http:// or https:// URL, got {url:?}"
        )),
    }
}

fn parse_format(text: &str) -> Result<AudioFormat, String> {
    AudioFormat::from_name(text).ok_or_else(|| {
        let names: Vec<_> = AudioFormat::ALL.iter().map(|f| f.name()).collect();
        format!("unknown format {text:?}; choose from {}", names.join(", "))
    })
}

/// Reads a secret file, warning when group or others may read it.
fn read_private_file(path: &std::path::Path, what: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
    // A pipe is fine (`--credentials <(pass show trackfs)`), a folder is a mistake.
    if meta.is_dir() {
        return Err(format!("the {what} file {} is a folder", path.display()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "the {what} file {} is readable by others; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

impl MountArgs {
    fn reader_config(&self) -> Result<ReaderConfig, String> {
        let block_size = self.block_size.0;
        if !(4096..=(64 << 20)).contains(&block_size) || !block_size.is_power_of_two() {
            return Err("--block-size must be a power of two between 4KiB and 64MiB".into());
        }
        let mut config = ReaderConfig {
            block_size,
            max_request: self.max_request.0.max(block_size),
            ..ReaderConfig::default()
        };
        config.readahead.max_window = self.read_ahead.0.max(block_size);
        Ok(config)
    }

    fn into_config(self) -> Result<MountConfig, String> {
        let text = read_private_file(&self.credentials, "credentials")?;
        let credentials = Credentials::from_text(&text)
            .map_err(|e| format!("the credentials file {}: {e}", self.credentials.display()))?;
        let keys = match &self.keys {
            Some(path) => {
                let text = read_private_file(path, "key")?;
                trackfs::protocol::keyfile::parse(&text)
                    .map_err(|e| format!("key file {}, {e}", path.display()))?
            }
            None => Default::default(),
        };
        let ca_cert = match &self.ca_cert {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?,
            ),
            None => None,
        };
        check_http_url("the origin", &self.origin)?;
        if !(self.stall_timeout > 0.0 && self.stall_timeout < 3600.0) {
            return Err("--stall-timeout must be more than 0 and less than 3600 seconds".into());
        }
        if self.cache_size.0 < 1 << 20 {
            return Err(format!(
                "--cache-size must be at least 1MiB (got {} bytes)",
                self.cache_size.0
            ));
        }
        let reader = self.reader_config()?;
        let cdn = CdnConfig {
            stall_timeout: Duration::from_secs_f64(self.stall_timeout),
            attempts: self.retries.saturating_add(1),
            ..CdnConfig::default()
        };
        Ok(MountConfig {
            origin: self.origin,
            mountpoint: self.mountpoint,
            credentials,
            cache_size: self.cache_size.0,
            keys,
            formats: self.format,
            allow_other: self.allow_other,
            ca_cert,
            cdn,
            reader,
            kernel_read_ahead_kb: (self.kernel_read_ahead.0 / 1024).min(u32::MAX as u64) as u32,
        })
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// A folder made by `trackfs publish`.
    library: PathBuf,
    /// Address to listen on: IP:PORT or HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8700", value_parser = parse_listen)]
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
        const TEN_YEARS: u64 = 10 * 365 * 24 * 3600;
        if !(1..=TEN_YEARS).contains(&self.url_ttl) || !(1..=TEN_YEARS).contains(&self.token_ttl) {
            return Err("--url-ttl and --token-ttl must be between 1 second and 10 years".into());
        }
        // The origin closes a connection that gets no answer within 60 s (see origin::conn).
        if self.latency > 30_000 || self.stall > 30_000 {
            return Err("--latency and --stall must be at most 30000 ms".into());
        }
        for url in self.cdn_base.iter().chain(&self.extra_cdn_urls) {
            check_http_url("a CDN URL", url)?;
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
        Command::Mount(args) => args.into_config().and_then(|config| {
            let rt = runtime().map_err(|e| format!("cannot start the runtime: {e}"))?;
            rt.block_on(trackfs::mount::run(config))
                .map_err(|e| e.to_string())
        }),
        Command::Stats(args) => print_stats(&args.mountpoint),
        Command::Demo(args) => runtime()
            .map_err(|e| format!("cannot start the runtime: {e}"))
            .and_then(|rt| {
                rt.block_on(trackfs::demo::run(args.mountpoint))
                    .map_err(|e| e.to_string())
            }),
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

/// `trackfs stats`: the mount's `.trackfs/stats` as a table people can read.
fn print_stats(mountpoint: &std::path::Path) -> Result<(), String> {
    let path = mountpoint.join(".trackfs/stats");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}; is trackfs mounted there?",
            path.display()
        )
    })?;
    trackfs::stdout::print(&trackfs::client::stats::table(&text))
}
