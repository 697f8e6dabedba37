//! The origin: `publish` turns a music folder into an encrypted CDN library, `serve` answers the
//! wire protocol of docs/protocol.md over it (control plane + CDN), with fault knobs for tests.
//!
//! It shares `proto`, `model`, `crypto` and the key and credentials file parsers with the
//! client but never the client's fetch code, so a misreading of the protocol cannot hide on
//! both sides at once.
//!
//! `publish`: `folder` (what is in the music folder) → `scan` (tags, formats), `store`
//! (ciphertext, heads, keys), `covers`, `m3u` → `catalog` (albums, tracks, playlists) →
//! `mirror` (what changed, what left, the grace period) → `library` (`catalog.pb`, the one
//! commit). `serve`: `snapshot` (the catalog in memory, reloaded live, ETags) and `state`
//! (shared by the handlers) behind `control` (token, metadata, playlists, keys) and `cdn`
//! (audio, heads, images), over `conn` (connection limits) and `auth`.

mod auth;
mod catalog;
mod cdn;
mod conn;
mod control;
mod covers;
pub mod faults;
mod folder;
pub mod library;
mod m3u;
pub mod mirror;
pub mod publish;
mod scan;
pub mod serve;
mod snapshot;
mod state;
mod store;
mod summary;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use faults::{FaultConfig, FaultKind};
pub use publish::{publish, PublishOptions, PublishSummary};
pub use serve::{start, RunningOrigin};

/// Everything `trackfs serve` needs, as plain data (built from flags by `cli`).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub library: PathBuf,
    pub listen: SocketAddr,
    /// Lifetime of signed CDN URLs.
    pub url_ttl: Duration,
    /// `expiresIn` of access tokens.
    pub token_ttl: Duration,
    /// When set, storage-resolve answers URLs on this base (e.g. nginx over `LIBRARY/audio`).
    pub cdn_base: Option<String>,
    /// Extra CDN bases put before the real one (for failover tests), e.g. a dead port: each
    /// gets the same `/audio/<file id>?<expiry>_<sig>` appended as the real base.
    pub extra_cdn_urls: Vec<String>,
    /// Whether `/head/<id>` serves head files (off answers 404 for all).
    pub head_files: bool,
    /// Added before answering every request.
    pub latency: Duration,
    pub faults: FaultConfig,
}

impl ServeConfig {
    pub fn new(library: PathBuf) -> Self {
        ServeConfig {
            library,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            url_ttl: Duration::from_secs(3600),
            token_ttl: Duration::from_secs(3600),
            cdn_base: None,
            extra_cdn_urls: Vec::new(),
            head_files: true,
            latency: Duration::ZERO,
            faults: FaultConfig::default(),
        }
    }
}
