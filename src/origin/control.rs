//! The control plane of docs/protocol.md (token, library, metadata, storage-resolve, keys) and
//! the playlists of §1.2. Catalog answers come from the live snapshot with strong ETags
//! (§1.3); keys are read from the key file, which keeps the keys of files that left the
//! catalog for the grace period, so readers that hold a file open finish it.

use super::auth;
use super::snapshot::{Answer, Snapshot};
use super::state::{conditional, content_type, parse_id, typed, ApiError, Origin};
use crate::protocol::model::{AlbumId, FileId, PlaylistId, TrackId};
use crate::protocol::proto::storage::{
    storage_resolve_response::Result as ResultCode, StorageResolveResponse,
};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) async fn require_bearer(
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
pub(super) async fn token(
    State(origin): State<Arc<Origin>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let basic = header_str(&headers, header::AUTHORIZATION);
    let c = &origin.credentials;
    if !auth::check_basic(basic, &c.user, &c.password) {
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

pub(super) async fn library(State(origin): State<Arc<Origin>>, headers: HeaderMap) -> Response {
    conditional(&headers, &origin.live.get().await.library)
}

/// The answer of `id` in one of the snapshot's maps (chosen by `pick`), or `404`.
async fn lookup<K: Eq + std::hash::Hash>(
    origin: &Origin,
    headers: &HeaderMap,
    id: K,
    pick: impl FnOnce(&Snapshot) -> &HashMap<K, Answer>,
) -> Result<Response, ApiError> {
    let snapshot = origin.live.get().await;
    let answer = pick(&snapshot).get(&id).ok_or(ApiError::NotFound)?;
    Ok(conditional(headers, answer))
}

pub(super) async fn album(
    State(origin): State<Arc<Origin>>,
    gid: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(gid, AlbumId::from_hex)?;
    lookup(&origin, &headers, id, |s| &s.albums).await
}

pub(super) async fn track(
    State(origin): State<Arc<Origin>>,
    gid: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(gid, TrackId::from_hex)?;
    lookup(&origin, &headers, id, |s| &s.tracks).await
}

/// `GET /playlist/v2/user/<username>/rootlist`: `404` for another user or no playlists.
pub(super) async fn rootlist(
    State(origin): State<Arc<Origin>>,
    user: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(user) = user.map_err(|_| ApiError::NotFound)?;
    if user != origin.credentials.user {
        return Err(ApiError::NotFound);
    }
    let snapshot = origin.live.get().await;
    let answer = snapshot.rootlist.as_ref().ok_or(ApiError::NotFound)?;
    Ok(conditional(&headers, answer))
}

/// `GET /playlist/v2/playlist/<base62 id>`.
pub(super) async fn playlist(
    State(origin): State<Arc<Origin>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(id, PlaylistId::from_base62)?;
    lookup(&origin, &headers, id, |s| &s.playlists).await
}

pub(super) async fn storage_resolve(
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
    let own = cdn_base(&origin, &headers);
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
    Ok(typed(content_type::PROTOBUF, answer.encode_to_vec()))
}

/// The configured CDN base, else this origin as the client reached it: the `Host` it used,
/// else the bound address (so a server listening on 0.0.0.0 answers URLs the client can
/// reach).
fn cdn_base(origin: &Origin, headers: &HeaderMap) -> String {
    if let Some(base) = &origin.config.cdn_base {
        return base.clone();
    }
    let sane = |h: &&str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_graphic() && !b"/@?#\\".contains(&b))
    };
    match header_str(headers, header::HOST).filter(sane) {
        Some(host) => format!("http://{host}"),
        None => origin.self_base.clone(),
    }
}

pub(super) async fn audio_key(
    State(origin): State<Arc<Origin>>,
    file_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(file_id, FileId::from_hex)?;
    let keys = tokio::task::spawn_blocking(move || origin.keys())
        .await
        .map_err(|e| ApiError::Internal(format!("key lookup: {e}")))??;
    let key = keys.get(&id).ok_or(ApiError::NotFound)?;
    Ok(typed(content_type::OCTETS, key.0.to_vec()))
}
