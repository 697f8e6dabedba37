//! `trackfs serve`: the control plane of docs/protocol.md (token, library, metadata,
//! storage-resolve, keys) and, through `cdn`, the CDN, over one published library folder.
//!
//! Metadata, keys and files are read from disk per request, so a `publish` into a running
//! origin's library shows up at once. Every request waits `latency` first and is logged at debug
//! level by path only: no query (URL signatures), no headers (tokens, passwords).

use super::auth::{self, Signer};
use super::cdn;
use super::faults::FaultPlan;
use super::library::{Library, LibraryError};
use super::ServeConfig;
use crate::protocol::model::{AlbumId, FileId, TrackId};
use crate::protocol::proto::storage::{
    storage_resolve_response::Result as ResultCode, StorageResolveResponse,
};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prost::Message;
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

/// An error answered to a client.
#[derive(Debug)]
pub enum ApiError {
    /// `401`, with a `WWW-Authenticate` challenge for this scheme.
    Unauthorized(&'static str),
    Forbidden,
    NotFound,
    /// `500`; the message is logged, not sent.
    Internal(String),
}

impl ApiError {
    pub fn internal(path: &std::path::Path, e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(format!("{}: {e}", path.display()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized(scheme) => {
                let challenge = HeaderValue::from_static(scheme);
                let mut r = (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
                r
            }
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden").into_response(),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not found").into_response(),
            ApiError::Internal(message) => {
                tracing::warn!("internal error: {message}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }
}

/// Shared state of a running origin.
pub struct Origin {
    pub lib: Library,
    pub config: ServeConfig,
    pub signer: Signer,
    pub faults: FaultPlan,
    user: String,
    password: String,
    /// `http://<bound address>`, for CDN URLs when a request has no usable `Host`.
    self_base: String,
    /// The `keys` file as last read, with its modification time: parsed again only when a
    /// `publish` changed it, not on every `/audiokey` request.
    keys: std::sync::Mutex<Option<(std::time::SystemTime, Arc<KeyMap>)>>,
}

type KeyMap = std::collections::BTreeMap<FileId, crate::protocol::crypto::AudioKey>;

impl Origin {
    /// The library's keys, re-read only when the file's modification time changed.
    fn keys(&self) -> Result<Arc<KeyMap>, ApiError> {
        let path = self.lib.keys();
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let mut cached = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(mtime), Some((seen, keys))) = (modified, cached.as_ref()) {
            if mtime == *seen {
                return Ok(keys.clone());
            }
        }
        let keys = Arc::new(
            self.lib
                .read_keys()
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        );
        if let Some(mtime) = modified {
            *cached = Some((mtime, keys.clone()));
        }
        Ok(keys)
    }

    /// A whole (small) file from the library; missing is `404`.
    pub async fn read_file(&self, path: &std::path::Path) -> Result<Vec<u8>, ApiError> {
        match tokio::fs::read(path).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::NotFound),
            Err(e) => Err(ApiError::internal(path, e)),
        }
    }

    /// The base for this origin's own CDN URLs: the `Host` the client used, else the bound
    /// address (so a server listening on 0.0.0.0 answers URLs the client can reach).
    fn own_base(&self, headers: &HeaderMap) -> String {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let sane = |h: &&str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"/@?#\\".contains(&b))
        };
        match host.filter(sane) {
            Some(host) => format!("http://{host}"),
            None => self.self_base.clone(),
        }
    }
}

/// A started origin. Dropping it stops it; `shutdown` stops it and waits.
pub struct RunningOrigin {
    addr: SocketAddr,
    base_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningOrigin {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

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
    let (user, password) = lib.read_credentials()?;
    let signer = Signer::new(lib.read_secret()?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    let base_url = format!("http://{}", reachable(addr));
    let origin = Arc::new(Origin {
        lib,
        faults: FaultPlan::new(&config.faults),
        config,
        signer,
        user,
        password,
        self_base: base_url.clone(),
        keys: std::sync::Mutex::new(None),
    });
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
        addr,
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
    let control = Router::new()
        .route("/library", get(library))
        .route("/metadata/4/album/{gid}", get(album))
        .route("/metadata/4/track/{gid}", get(track))
        .route(
            "/storage-resolve/files/audio/interactive/{file_id}",
            get(storage_resolve),
        )
        .route("/audiokey/{file_id}", get(audio_key))
        .route_layer(middleware::from_fn_with_state(
            origin.clone(),
            require_bearer,
        ));
    Router::new()
        .route("/keymaster/token", post(token))
        .route("/head/{file_id}", get(cdn::head))
        .route("/audio/{file_id}", get(cdn::audio))
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

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn require_bearer(
    State(origin): State<Arc<Origin>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = auth::bearer(header_str(req.headers(), header::AUTHORIZATION));
    if !token.is_some_and(|t| origin.signer.check_token(t)) {
        return Err(ApiError::Unauthorized("Bearer"));
    }
    Ok(next.run(req).await)
}

/// `POST /keymaster/token` with Basic auth.
async fn token(
    State(origin): State<Arc<Origin>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let basic = header_str(&headers, header::AUTHORIZATION);
    if !auth::check_basic(basic, &origin.user, &origin.password) {
        return Err(ApiError::Unauthorized("Basic realm=\"trackfs\""));
    }
    let ttl = origin.config.token_ttl;
    let body = serde_json::json!({
        "accessToken": origin.signer.issue_token(ttl),
        "tokenType": "Bearer",
        "expiresIn": ttl.as_secs(),
    });
    Ok(Json(body).into_response())
}

fn protobuf(bytes: Vec<u8>) -> Response {
    let content_type = HeaderValue::from_static("application/x-protobuf");
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

fn octets(bytes: Vec<u8>) -> Response {
    let content_type = HeaderValue::from_static("application/octet-stream");
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

/// An id from the path, or `404` for anything that is not lowercase hex of the right length.
pub(super) fn parse_id<T>(
    raw: Result<Path<String>, PathRejection>,
    parse: impl FnOnce(&str) -> Result<T, crate::protocol::model::ModelError>,
) -> Result<T, ApiError> {
    let Path(raw) = raw.map_err(|_| ApiError::NotFound)?;
    parse(&raw).map_err(|_| ApiError::NotFound)
}

async fn library(State(origin): State<Arc<Origin>>) -> Result<Response, ApiError> {
    match origin.read_file(&origin.lib.library_pb()).await {
        Ok(bytes) => Ok(protobuf(bytes)),
        // A library with nothing published yet is an empty one.
        Err(ApiError::NotFound) => Ok(protobuf(Vec::new())),
        Err(e) => Err(e),
    }
}

async fn album(
    State(origin): State<Arc<Origin>>,
    gid: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(gid, AlbumId::from_hex)?;
    Ok(protobuf(origin.read_file(&origin.lib.album(&id)).await?))
}

async fn track(
    State(origin): State<Arc<Origin>>,
    gid: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(gid, TrackId::from_hex)?;
    Ok(protobuf(origin.read_file(&origin.lib.track(&id)).await?))
}

async fn storage_resolve(
    State(origin): State<Arc<Origin>>,
    file_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(file_id, FileId::from_hex)?;
    if !tokio::fs::try_exists(origin.lib.audio(&id))
        .await
        .unwrap_or(false)
    {
        return Err(ApiError::NotFound);
    }
    let own = origin.cdn_base_or_own(&headers);
    let signed = format!(
        "/audio/{id}?{}",
        origin.signer.sign_url(&id, origin.config.url_ttl)
    );
    let cdnurl = origin
        .config
        .extra_cdn_urls
        .iter()
        .map(String::as_str)
        .chain([own.as_str()])
        .map(|base| format!("{}{signed}", base.trim_end_matches('/')))
        .collect();
    let answer = StorageResolveResponse {
        result: ResultCode::Cdn as i32,
        cdnurl,
        fileid: id.0.to_vec(),
    };
    Ok(protobuf(answer.encode_to_vec()))
}

impl Origin {
    fn cdn_base_or_own(&self, headers: &HeaderMap) -> String {
        match &self.config.cdn_base {
            Some(base) => base.clone(),
            None => self.own_base(headers),
        }
    }
}

async fn audio_key(
    State(origin): State<Arc<Origin>>,
    file_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(file_id, FileId::from_hex)?;
    let keys = tokio::task::spawn_blocking(move || origin.keys())
        .await
        .map_err(|e| ApiError::Internal(format!("key lookup: {e}")))??;
    let key = keys.get(&id).ok_or(ApiError::NotFound)?;
    Ok(octets(key.0.to_vec()))
}
