//! The HTTP surface (axum): `GET /health`, `POST /v1/devices/sign-in`, `POST /v1/sync`,
//! `POST /v1/blobs/missing`, `PUT /v1/blobs/{sha256}`. Handlers are thin: they
//! authenticate, bound the body, and hand the work to [`ServerDb`] on the blocking pool.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use doorstep_core::model::DeviceId;
use doorstep_core::protocol::{self, BlobQuery, SyncRequest};
use doorstep_core::sync::{SignInRequest, SignInResponse};

use crate::db::{Device, ServerDb};
use crate::error::{Error, Result};

/// Largest sync request body (16 MiB); the phone pushes in batches of about 1 MiB.
pub const SYNC_BODY_LIMIT: usize = 16 << 20;
/// Largest blob (32 MiB); stored photos are a few hundred KB.
pub const BLOB_BODY_LIMIT: usize = 32 << 20;
/// Largest sign-in body (64 KiB).
pub const SIGN_IN_BODY_LIMIT: usize = 64 << 10;
/// Blob hashes per `POST /v1/blobs/missing` body (2 MiB).
pub const BLOB_QUERY_LIMIT: usize = 2 << 20;
/// Password checks run at once. Each argon2id check holds 19 MiB, so this bounds the
/// memory a flood of sign-ins can take (about 80 MiB); the rest wait their turn, and
/// past [`SIGN_IN_WAIT`] are answered 503.
pub const SIGN_IN_CONCURRENCY: usize = 4;
/// How long a sign-in waits for a free password check.
pub const SIGN_IN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Shared state of the handlers: the database and the sign-in gate.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The server's storage.
    pub db: Arc<ServerDb>,
    sign_ins: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// State over `db`.
    pub fn new(db: Arc<ServerDb>) -> Self {
        Self {
            db,
            sign_ins: Arc::new(tokio::sync::Semaphore::new(SIGN_IN_CONCURRENCY)),
        }
    }
}

/// The router, apart from `main` so tests can serve it on a port of their own.
pub fn app(db: Arc<ServerDb>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/v1/devices/sign-in",
            post(sign_in).layer(DefaultBodyLimit::max(SIGN_IN_BODY_LIMIT)),
        )
        .route(
            "/v1/sync",
            post(sync).layer(DefaultBodyLimit::max(SYNC_BODY_LIMIT)),
        )
        .route(
            "/v1/blobs/missing",
            post(missing_blobs).layer(DefaultBodyLimit::max(BLOB_QUERY_LIMIT)),
        )
        .route(
            "/v1/blobs/{sha256}",
            put(put_blob).layer(DefaultBodyLimit::max(BLOB_BODY_LIMIT)),
        )
        .layer(
            // One line per request at `info`: method, route, status and time; paths
            // hold only blob hashes, never personal data.
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(
                    tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                )
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                ),
        )
        .with_state(AppState::new(db))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("worker failed: {e}")))?
}

/// The authenticated device of a request (`Authorization: Bearer <token>`).
#[derive(Debug)]
pub struct AuthDevice(pub Device);

impl FromRequestParts<AppState> for AuthDevice {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(Error::Unauthorized("a device token is required"))?;
        // The scheme name is case-insensitive (RFC 9110 section 11.1).
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(Error::Unauthorized("a device token is required")),
        }
        .to_string();
        let db = state.db.clone();
        Ok(Self(blocking(move || db.authenticate(&token)).await?))
    }
}

fn cbor(bytes: Vec<u8>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, protocol::CBOR)], bytes)
}

#[tracing::instrument(skip_all)]
async fn sign_in(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SignInResponse>> {
    let body = body.map_err(|r| Error::from_body(r, SIGN_IN_BODY_LIMIT))?;
    // serde's message can quote the value it choked on (a password, a phone number
    // typed as a name), so only its position is passed on.
    let req: SignInRequest = serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!(
            "the sign-in body must be JSON {{\"username\", \"password\", \"device_id\", \"device_key\"}} with text values (wrong at line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let device = DeviceId::parse(&req.device_id)
        .ok_or_else(|| Error::BadRequest("device_id is not a UUID".into()))?;
    let device_key = match req.device_key.as_str() {
        "" => None,
        text => Some(doorstep_core::evidence::parse_sha256(text).ok_or_else(|| {
            Error::BadRequest("device_key is not 64 hex digits (an ed25519 public key)".into())
        })?),
    };
    let _permit = tokio::time::timeout(SIGN_IN_WAIT, state.sign_ins.clone().acquire_owned())
        .await
        .map_err(|_| Error::Busy)?
        .map_err(|_| Error::Busy)?;
    let db = state.db.clone();
    let result =
        blocking(move || db.sign_in(&req.username, &req.password, device, device_key)).await;
    match &result {
        Ok(_) => tracing::info!(%device, "device signed in"),
        Err(e) => tracing::info!(%device, reason = %e, "sign-in refused"),
    }
    Ok(Json(SignInResponse { token: result? }))
}

/// Bound on the changes in one push (a phone sends about 1 MiB per request, and a
/// change is at least a few dozen bytes).
pub const MAX_PUSHED_CHANGES: usize = 20_000;

#[tracing::instrument(skip_all, fields(device = %device.device_id))]
async fn sync(
    State(state): State<AppState>,
    AuthDevice(device): AuthDevice,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    let body = body.map_err(|r| Error::from_body(r, SYNC_BODY_LIMIT))?;
    let req: SyncRequest = protocol::decode(&body)
        .map_err(|_| Error::BadRequest("the body is not a CBOR sync request".into()))?;
    let pushed: usize = req.push.iter().map(|d| d.changes.len()).sum();
    if pushed > MAX_PUSHED_CHANGES {
        return Err(Error::BadRequest(format!(
            "{pushed} changes in one push; at most {MAX_PUSHED_CHANGES}"
        )));
    }
    let db = state.db.clone();
    let resp = blocking(move || db.sync(&device, &req)).await?;
    Ok(cbor(protocol::encode(&resp)))
}

#[tracing::instrument(skip_all)]
async fn missing_blobs(
    State(state): State<AppState>,
    AuthDevice(_device): AuthDevice,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    let body = body.map_err(|r| Error::from_body(r, BLOB_QUERY_LIMIT))?;
    let q: BlobQuery = protocol::decode(&body)
        .map_err(|_| Error::BadRequest("the body is not a CBOR blob query".into()))?;
    let db = state.db.clone();
    let resp = blocking(move || db.missing_blobs(&q)).await?;
    Ok(cbor(protocol::encode(&resp)))
}

#[tracing::instrument(skip_all)]
async fn put_blob(
    State(state): State<AppState>,
    AuthDevice(_device): AuthDevice,
    Path(sha256): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    let body = body.map_err(|r| Error::from_body(r, BLOB_BODY_LIMIT))?;
    let db = state.db.clone();
    blocking(move || db.put_blob(&sha256, &body)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Serves the router on an already bound listener until Ctrl-C or SIGTERM, then lets
/// requests in flight finish (each commits or rolls back whole).
pub async fn serve(listener: tokio::net::TcpListener, db: Arc<ServerDb>) -> std::io::Result<()> {
    axum::serve(listener, app(db))
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
