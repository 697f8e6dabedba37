//! `trackfs serve`: the flags, checked, turned into a [`ServeConfig`].
//!
//! The test knobs (latency, faults, extra URLs, no head files) sit under their own help
//! heading, apart from what a production origin needs.

use super::parse;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use trackfs::origin::{FaultConfig, FaultKind, ServeConfig};

const TEST_KNOBS: &str = "Test knobs (a hostile origin and CDN, for tests)";

/// The origin closes a connection that gets no answer within 60 s (`origin::conn`), so a test
/// delay must stay well inside it.
const MAX_DELAY_MS: u64 = 30_000;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// A folder made by `trackfs publish`.
    library: PathBuf,
    /// Address to listen on: IP:PORT or HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8700", value_parser = parse::listen)]
    listen: SocketAddr,
    /// Lifetime of signed CDN URLs, in seconds (1 s to 10 years).
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = parse::ttl_seconds)]
    url_ttl: u64,
    /// Lifetime of access tokens, in seconds (1 s to 10 years).
    #[arg(long, value_name = "SECS", default_value_t = 3600, value_parser = parse::ttl_seconds)]
    token_ttl: u64,
    /// Base URL of an external CDN serving LIBRARY/audio as <base>/audio/<file id> (e.g. nginx).
    #[arg(long, value_name = "URL", value_parser = parse::http_url)]
    cdn_base: Option<String>,
    /// Put this URL first in every storage-resolve answer (testing failover), may repeat.
    #[arg(long = "extra-cdn-url", value_name = "URL", help_heading = TEST_KNOBS, value_parser = parse::http_url)]
    extra_cdn_urls: Vec<String>,
    /// Answer 404 for every head file.
    #[arg(long, help_heading = TEST_KNOBS)]
    no_head_files: bool,
    /// Added latency for every request, in milliseconds (at most 30000).
    #[arg(long, value_name = "MS", default_value_t = 0, help_heading = TEST_KNOBS,
          value_parser = parse::number_in(0, MAX_DELAY_MS, " ms"))]
    latency: u64,
    /// Probability (0 to 1) that a CDN request fails in one of --fault-kinds.
    #[arg(long, value_name = "P", default_value_t = 0.0, help_heading = TEST_KNOBS, value_parser = parse::probability)]
    fault_rate: f64,
    /// Comma-separated: 500,503,reset,truncate,stall,ignore-range,expired (default: all).
    #[arg(long, value_name = "LIST", value_delimiter = ',', help_heading = TEST_KNOBS)]
    fault_kinds: Vec<FaultKind>,
    /// How long a `stall` fault stalls, in milliseconds (at most 30000).
    #[arg(long, value_name = "MS", default_value_t = 2000, help_heading = TEST_KNOBS,
          value_parser = parse::number_in(0, MAX_DELAY_MS, " ms"))]
    stall: u64,
    /// Seed for deterministic faults.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = TEST_KNOBS)]
    seed: u64,
}

impl ServeArgs {
    /// The config `origin::serve::run` takes. Every value was checked by its parser.
    pub(crate) fn into_config(self) -> ServeConfig {
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
        config
    }
}
