//! `trackfs mount`: the flags, checked, turned into a [`MountConfig`].
//!
//! Each value is checked by its clap value parser (`parse`); what depends on two flags
//! (`--read-ahead` and `--max-request` against `--block-size`) is checked in [`MountArgs::check`]
//! and reported by clap the same way. Reading the credentials and key files happens last, in
//! [`MountArgs::into_config`], so a typo in a flag never waits on a file.

use super::parse;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use trackfs::client::api::Credentials;
use trackfs::client::cdn::CdnConfig;
use trackfs::mount::{self, MountConfig};
use trackfs::protocol::model::AudioFormat;
use trackfs::readpath::reader::ReaderConfig;
use trackfs::units::Size;

/// Most retries a read may wait through: with backoff capped at 1–2 s and a 15 s timeout per
/// silent attempt, 50 is already a quarter of an hour before `EIO`.
const MAX_RETRIES: u64 = 50;
/// The largest single CDN request and read-ahead window that make sense: beyond these a
/// request outlives any signed URL on a slow link, and the window outgrows any cache budget.
const MAX_REQUEST: u64 = 64 << 20;
const MAX_READ_AHEAD: u64 = 1 << 30;

const NETWORK: &str = "Network";
const TUNING: &str = "Tuning (for measuring, not everyday use)";

#[derive(Args, Debug)]
pub(crate) struct MountArgs {
    /// Base URL of the origin (control plane), e.g. http://127.0.0.1:8700.
    #[arg(value_name = "ORIGIN_URL", value_parser = parse::http_url)]
    origin: String,
    /// An existing, empty directory.
    mountpoint: PathBuf,
    /// File with one line `user:password`.
    #[arg(long, value_name = "FILE")]
    credentials: PathBuf,
    /// Block cache budget, in human units (256MiB, 1G); at least 1MiB.
    #[arg(long, value_name = "SIZE", default_value_t = Size(mount::DEFAULT_CACHE_SIZE), value_parser = parse::cache_size)]
    cache_size: Size,
    /// Local key file: `<file id hex> <key hex>` per line, used before /audiokey.
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// Only these formats, first preferred (e.g. FLAC_FLAC,OGG_VORBIS_320); tracks with none are hidden. Default: every track, best quality.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse::format)]
    format: Vec<AudioFormat>,
    /// Keep what is read across mounts (ciphertext, wrapped keys, the catalogue) in DIR, a
    /// folder per origin; `off` for none. Default: $XDG_CACHE_HOME/trackfs, else ~/.cache/trackfs.
    #[arg(long, value_name = "DIR")]
    disk_cache: Option<PathBuf>,
    /// Disk cache bound, in human units (4GiB, 500MiB); pinned tracks stay even beyond it.
    #[arg(long, value_name = "SIZE", default_value_t = Size(mount::DEFAULT_DISK_CACHE_SIZE), value_parser = parse::cache_size)]
    disk_cache_size: Size,
    /// How often to look for library changes at the origin (30s, 5m, 1h; at least 1s), or
    /// `off`. SIGHUP and `trackfs refresh MOUNTPOINT` refresh at any time.
    #[arg(long, value_name = "DURATION",
          default_value_t = parse::RefreshInterval(Some(mount::DEFAULT_REFRESH_INTERVAL)),
          value_parser = parse::refresh_interval)]
    refresh_interval: parse::RefreshInterval,
    /// Let other users read the mount (kernel permission checks on).
    #[arg(long)]
    allow_other: bool,
    /// PEM file of a private CA to trust for https origins and CDNs.
    #[arg(long, value_name = "FILE", help_heading = NETWORK)]
    ca_cert: Option<PathBuf>,
    /// Seconds a CDN body may stay silent before the request is retried (less than 3600).
    #[arg(long, value_name = "SECS", help_heading = NETWORK,
          default_value_t = CdnConfig::default().stall_timeout.as_secs_f64(),
          value_parser = parse::seconds_below(3600.0))]
    stall_timeout: f64,
    /// Retries of a failed request (CDN or origin) before the read fails with EIO (0 to 50).
    #[arg(long, value_name = "N", help_heading = NETWORK,
          default_value_t = u64::from(CdnConfig::default().attempts.saturating_sub(1)),
          value_parser = parse::number_in(0, MAX_RETRIES, ""))]
    retries: u64,
    /// Kernel read-ahead for the mount, set when running as root (0 keeps the kernel's; at most 64MiB);
    /// new opens get 128KiB while a media scanner is at work.
    #[arg(long, value_name = "SIZE", help_heading = TUNING,
          default_value_t = Size(u64::from(mount::DEFAULT_KERNEL_READ_AHEAD_KB) << 10),
          value_parser = parse::kernel_read_ahead)]
    kernel_read_ahead: Size,
    /// Cache block size, also the smallest CDN request (a power of two, 4KiB to 64MiB).
    #[arg(long, value_name = "SIZE", help_heading = TUNING,
          default_value_t = Size(ReaderConfig::default().block_size),
          value_parser = parse::block_size)]
    block_size: Size,
    /// Largest single CDN request (at least the block size, at most 64MiB).
    #[arg(long, value_name = "SIZE", help_heading = TUNING,
          default_value_t = Size(ReaderConfig::default().max_request),
          value_parser = parse::size_in(4096, MAX_REQUEST))]
    max_request: Size,
    /// Largest read-ahead window per sequential reader (at least the block size, at most 1GiB).
    #[arg(long, value_name = "SIZE", help_heading = TUNING,
          default_value_t = Size(ReaderConfig::default().readahead.max_window),
          value_parser = parse::size_in(4096, MAX_READ_AHEAD))]
    read_ahead: Size,
}

impl MountArgs {
    /// What no single value parser can see: sizes that must not be below the block size.
    pub(crate) fn check(&self) -> Result<(), String> {
        let block = self.block_size;
        for (flag, size) in [
            ("--max-request", self.max_request),
            ("--read-ahead", self.read_ahead),
        ] {
            if size.0 < block.0 {
                return Err(format!(
                    "{flag} {size} is below the block size ({block}); \
                     it must be at least --block-size"
                ));
            }
        }
        Ok(())
    }

    fn reader_config(&self) -> ReaderConfig {
        let mut config = ReaderConfig {
            block_size: self.block_size.0,
            max_request: self.max_request.0,
            ..ReaderConfig::default()
        };
        config.readahead.max_window = self.read_ahead.0;
        config.readahead.refill_step = self.max_request.0;
        config
    }

    /// The config `mount::run` takes; reads the credentials, key and CA files.
    pub(crate) fn into_config(self) -> Result<MountConfig, String> {
        self.check()?;
        let text = parse::read_private_file(&self.credentials, "credentials")?;
        let credentials = Credentials::from_text(&text)
            .map_err(|e| format!("the credentials file {}: {e}", self.credentials.display()))?;
        let keys = match &self.keys {
            Some(path) => {
                let text = parse::read_private_file(path, "key")?;
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
        let reader = self.reader_config();
        let cdn = CdnConfig {
            stall_timeout: Duration::from_secs_f64(self.stall_timeout),
            // At most MAX_RETRIES + 1 by the value parser.
            attempts: u32::try_from(self.retries + 1).unwrap_or(u32::MAX),
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
            timeouts: Default::default(),
            reader,
            // At most 64MiB by the value parser, so the KiB fit a u32.
            kernel_read_ahead_kb: u32::try_from(self.kernel_read_ahead.0 >> 10).unwrap_or(0),
            disk_cache: trackfs::readpath::disk::dir::cache_root(self.disk_cache.as_deref()),
            disk_cache_size: self.disk_cache_size.0,
            refresh_interval: self.refresh_interval.0,
        })
    }
}
