//! Knowing that the origin cannot be reached, so that a read the disk cannot answer fails at
//! once (EIO) instead of after the whole retry bound, and noticing when it is back.
//!
//! The origin is taken as unreachable when a mount starts without it (from the catalogue
//! snapshot) or when a fetch fails to connect. While it is, every request that needs the
//! network first checks again, at most once per [`PROBE_EVERY`], with one TCP connection
//! bounded by [`PROBE_TIMEOUT`]: when that succeeds the mount is online again.
//! [`Gated`] puts the same check in front of the control plane (keys, heads, storage-resolve).

use crate::client::error::FetchError;
use crate::client::seams::{BoxFuture, ControlPlane, Library, Revalidated};
use crate::protocol::crypto::AudioKey;
use crate::protocol::model::{Album, AlbumId, FileId, Playlist, PlaylistId, Track, TrackId};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const PROBE_EVERY: Duration = Duration::from_secs(1);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Reachability {
    /// `host:port` of the origin; `None` when the URL names none (never taken as offline).
    address: Option<String>,
    /// The origin's URL as it may be shown (the user typed it).
    shown: String,
    offline: AtomicBool,
    last_probe: Mutex<Option<Instant>>,
}

/// `host:port` of a URL.
fn address_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
}

impl Reachability {
    pub fn new(origin: &str) -> Self {
        Reachability {
            address: address_of(origin),
            shown: origin.trim_end_matches('/').to_owned(),
            offline: AtomicBool::new(false),
            last_probe: Mutex::new(None),
        }
    }

    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Relaxed)
    }

    pub fn set_offline(&self) {
        if self.address.is_some() && !self.offline.swap(true, Ordering::Relaxed) {
            *self.last_probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            tracing::warn!(
                "the origin {} is unreachable: only what is in the disk cache can be read \
                 until it is back",
                self.shown
            );
        }
    }

    /// Whether a TCP connection to the origin can be made now.
    pub async fn probe(&self) -> bool {
        let Some(address) = &self.address else {
            return true;
        };
        let connect = tokio::net::TcpStream::connect(address.as_str());
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, connect).await,
            Ok(Ok(_))
        )
    }

    /// `Ok` when the network may be used; while the origin is known to be unreachable, an
    /// error at once, except that at most once a second it is tried again.
    pub async fn check(&self) -> Result<(), FetchError> {
        if !self.is_offline() {
            return Ok(());
        }
        let due = {
            let mut last = self.last_probe.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= PROBE_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due && self.probe().await {
            if self.offline.swap(false, Ordering::Relaxed) {
                tracing::warn!("the origin {} is reachable again", self.shown);
            }
            return Ok(());
        }
        Err(FetchError::Connect {
            url: self.shown.clone(),
            reason: "the origin is unreachable (offline); this is not in the disk cache".into(),
        })
    }

    /// Takes note of a failed request: one that could not connect to the origin means it is
    /// gone (a CDN on another host that cannot be reached is the CDN's failover's business).
    pub fn note(&self, error: &FetchError) {
        let mut e = error;
        while let FetchError::GaveUp { last, .. } = e {
            e = last;
        }
        if let FetchError::Connect { url, .. } = e {
            if self.address.is_some() && address_of(url) == self.address {
                self.set_offline();
            }
        }
    }
}

/// A control plane that fails at once while the origin is known to be unreachable.
pub struct Gated {
    pub inner: Arc<dyn ControlPlane>,
    pub reach: Arc<Reachability>,
}

impl Gated {
    async fn gate<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, FetchError>>,
    ) -> Result<T, FetchError> {
        self.reach.check().await?;
        call.await.inspect_err(|e| self.reach.note(e))
    }
}

impl ControlPlane for Gated {
    fn library(&self) -> BoxFuture<'_, Result<Vec<Result<AlbumId, FetchError>>, FetchError>> {
        Box::pin(self.gate(self.inner.library()))
    }

    fn album(&self, id: AlbumId) -> BoxFuture<'_, Result<Album, FetchError>> {
        Box::pin(self.gate(self.inner.album(id)))
    }

    fn track(&self, id: TrackId) -> BoxFuture<'_, Result<Track, FetchError>> {
        Box::pin(self.gate(self.inner.track(id)))
    }

    fn resolve(&self, file: FileId) -> BoxFuture<'_, Result<Vec<String>, FetchError>> {
        Box::pin(self.gate(self.inner.resolve(file)))
    }

    fn audio_key(&self, file: FileId) -> BoxFuture<'_, Result<AudioKey, FetchError>> {
        Box::pin(self.gate(self.inner.audio_key(file)))
    }

    fn head(&self, file: FileId) -> BoxFuture<'_, Result<Option<Bytes>, FetchError>> {
        Box::pin(self.gate(self.inner.head(file)))
    }

    fn rootlist(&self) -> BoxFuture<'_, Result<Vec<PlaylistId>, FetchError>> {
        Box::pin(self.gate(self.inner.rootlist()))
    }

    fn playlist(&self, id: PlaylistId) -> BoxFuture<'_, Result<Playlist, FetchError>> {
        Box::pin(self.gate(self.inner.playlist(id)))
    }

    fn image(&self, file: FileId) -> BoxFuture<'_, Result<Bytes, FetchError>> {
        Box::pin(self.gate(self.inner.image(file)))
    }

    // Revalidation keeps the inner control plane's ETags (the defaults would drop them).
    fn library_if(&self, etag: Option<String>) -> BoxFuture<'_, Revalidated<Library>> {
        Box::pin(self.gate(self.inner.library_if(etag)))
    }

    fn album_if(&self, id: AlbumId, etag: Option<String>) -> BoxFuture<'_, Revalidated<Album>> {
        Box::pin(self.gate(self.inner.album_if(id, etag)))
    }

    fn track_if(&self, id: TrackId, etag: Option<String>) -> BoxFuture<'_, Revalidated<Track>> {
        Box::pin(self.gate(self.inner.track_if(id, etag)))
    }

    fn playlist_if(
        &self,
        id: PlaylistId,
        etag: Option<String>,
    ) -> BoxFuture<'_, Revalidated<Playlist>> {
        Box::pin(self.gate(self.inner.playlist_if(id, etag)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offline_fails_at_once_and_notices_the_origin_coming_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let reach = Reachability::new(&format!("http://127.0.0.1:{port}/"));
        assert!(reach.check().await.is_ok());
        assert!(!reach.probe().await);
        let refused = |url: String| FetchError::GaveUp {
            what: "x".into(),
            attempts: 3,
            last: Box::new(FetchError::Connect {
                url,
                reason: "refused".into(),
            }),
        };
        // A CDN elsewhere that cannot be reached says nothing about the origin.
        reach.note(&refused("http://127.0.0.2:9/audio/x".into()));
        assert!(!reach.is_offline());
        reach.note(&refused(format!("http://127.0.0.1:{port}/keymaster/token")));
        assert!(reach.is_offline());
        assert!(reach.check().await.is_err());
        // Back: the next probe (once a second at most) finds it.
        let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        *reach.last_probe.lock().unwrap() = None;
        assert!(reach.check().await.is_ok());
        assert!(!reach.is_offline());
    }

    #[test]
    fn errors_other_than_connecting_do_not_mean_offline() {
        let reach = Reachability::new("http://127.0.0.1:1");
        reach.note(&FetchError::NotFound { url: "u".into() });
        assert!(!reach.is_offline());
    }
}
