//! `trackfs serve`: the control plane (`control`) and the CDN (`cdn`) over one published
//! library folder, started and stopped here.
//!
//! Catalog answers come from a snapshot reloaded when a `publish` replaces `catalog.pb`
//! (`snapshot`), so a publish into a running origin's library shows up at once, whole. Every
//! request waits `latency` first and is logged at debug level by path only: no query (URL
//! signatures), no headers (tokens, passwords).

use super::auth::Signer;
use super::library::{Library, LibraryError};
use super::snapshot::Live;
use super::state::Origin;
use super::{cdn, control, ServeConfig};
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{} is not a trackfs library (no credentials file): run `trackfs publish` first", .0.display())]
    NotALibrary(PathBuf),
    #[error("library: {0}")]
    Library(#[from] LibraryError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot wait for signals: {0}")]
    Signal(std::io::Error),
}

/// A started origin. Dropping it stops it; `shutdown` stops it and waits.
pub struct RunningOrigin {
    base_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningOrigin {
    /// `http://<addr>`, e.g. `http://127.0.0.1:8700`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Stops accepting, lets requests in flight finish (for up to 5 s), and waits.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
            Ok(Ok(result)) => result.map_err(ServeError::Serve),
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for RunningOrigin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `config.listen` and serves in a background task.
pub async fn start(config: ServeConfig) -> Result<RunningOrigin, ServeError> {
    let lib = Library::new(&config.library);
    if !lib.credentials().exists() {
        return Err(ServeError::NotALibrary(config.library.clone()));
    }
    lib.ensure_secrets()?;
    let credentials = lib.read_credentials()?;
    let signer = Signer::new(lib.read_secret()?);
    // `publish` keeps what leaves the library at least this long (see `mirror::grace`).
    if let Err(e) = lib.announce_lifetime(config.url_ttl.max(config.token_ttl)) {
        tracing::warn!("cannot record the URL and token lifetimes: {e}");
    }
    let live = Live::load(lib.clone())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    let base_url = format!("http://{}", reachable(addr));
    let origin = Arc::new(Origin::new(
        lib,
        config,
        signer,
        credentials,
        live,
        base_url.clone(),
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(origin);
    // Connections are capped and closed when they make no progress (see `conn`); each has no
    // Nagle delay: a response head and its first body chunk go out as separate writes, and
    // time to first byte is one of the things the client is measured on.
    let listener = super::conn::GuardedListener::new(listener, super::conn::IDLE);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningOrigin {
        base_url,
        stop: Some(stop),
        task: Some(task),
    })
}

/// An unspecified listen address (0.0.0.0, ::) is reached through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(config: ServeConfig) -> Result<(), ServeError> {
    let library = config.library.clone();
    let origin = start(config).await?;
    tracing::info!(
        "serving {} at {} (Ctrl-C to stop)",
        library.display(),
        origin.base_url()
    );
    wait_for_signal().await?;
    tracing::info!("stopping");
    origin.shutdown().await
}

async fn wait_for_signal() -> Result<(), ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(ServeError::Signal),
        _ = term.recv() => Ok(()),
    }
}

fn router(origin: Arc<Origin>) -> Router {
    use control::*;
    let control = Router::new()
        .route("/library", get(library))
        .route("/metadata/4/album/{gid}", get(album))
        .route("/metadata/4/track/{gid}", get(track))
        .route(
            "/storage-resolve/files/audio/interactive/{file_id}",
            get(storage_resolve),
        )
        .route("/audiokey/{file_id}", get(audio_key))
        .route("/playlist/v2/user/{user}/rootlist", get(rootlist))
        .route("/playlist/v2/playlist/{id}", get(playlist))
        .route_layer(middleware::from_fn_with_state(
            origin.clone(),
            require_bearer,
        ));
    Router::new()
        .route("/keymaster/token", post(token))
        .route("/head/{file_id}", get(cdn::head))
        .route("/audio/{file_id}", get(cdn::audio))
        .route("/image/{file_id}", get(cdn::image))
        .merge(control)
        .layer(middleware::from_fn_with_state(
            origin.clone(),
            latency_and_log,
        ))
        .with_state(origin)
}

/// Adds the configured latency, then logs method, path (never the query), status and time.
async fn latency_and_log(State(origin): State<Arc<Origin>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if !origin.config.latency.is_zero() {
        tokio::time::sleep(origin.config.latency).await;
    }
    let response = next.run(req).await;
    tracing::debug!(
        "{method} {path} -> {} in {:?}",
        response.status().as_u16(),
        started.elapsed()
    );
    response
}
