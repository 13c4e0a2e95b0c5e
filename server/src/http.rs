//! The HTTP surface (axum): `GET /health`, `POST /v1/devices/sign-in`, `POST /v1/sync`,
//! `POST /v1/blobs/missing`, `PUT /v1/blobs/{sha256}`. Handlers are thin: they
//! authenticate, bound the body, and hand the work to [`ServerDb`] on the blocking pool.

use std::sync::Arc;

use axum::body::Bytes;
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

/// Shared state of the handlers.
pub type AppState = Arc<ServerDb>;

/// The router, apart from `main` so tests can serve it on a port of their own.
pub fn app(db: AppState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/v1/devices/sign-in",
            post(sign_in).layer(DefaultBodyLimit::max(64 << 10)),
        )
        .route(
            "/v1/sync",
            post(sync).layer(DefaultBodyLimit::max(SYNC_BODY_LIMIT)),
        )
        .route(
            "/v1/blobs/missing",
            post(missing_blobs).layer(DefaultBodyLimit::max(2 << 20)),
        )
        .route(
            "/v1/blobs/{sha256}",
            put(put_blob).layer(DefaultBodyLimit::max(BLOB_BODY_LIMIT)),
        )
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(db)
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

    async fn from_request_parts(parts: &mut Parts, db: &AppState) -> Result<Self> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Error::Unauthorized("a device token is required"))?
            .trim()
            .to_string();
        let db = db.clone();
        Ok(Self(blocking(move || db.authenticate(&token)).await?))
    }
}

fn cbor(bytes: Vec<u8>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, protocol::CBOR)], bytes)
}

#[tracing::instrument(skip_all)]
async fn sign_in(
    State(db): State<AppState>,
    Json(req): Json<SignInRequest>,
) -> Result<Json<SignInResponse>> {
    let device = DeviceId::parse(&req.device_id)
        .ok_or_else(|| Error::BadRequest("device_id is not a UUID".into()))?;
    let token = blocking(move || db.sign_in(&req.username, &req.password, device)).await?;
    Ok(Json(SignInResponse { token }))
}

#[tracing::instrument(skip_all, fields(device = %device.device_id))]
async fn sync(
    State(db): State<AppState>,
    AuthDevice(device): AuthDevice,
    body: Bytes,
) -> Result<impl IntoResponse> {
    let req: SyncRequest = protocol::decode(&body).map_err(|e| Error::BadRequest(e.to_string()))?;
    let resp = blocking(move || db.sync(&device, &req)).await?;
    Ok(cbor(protocol::encode(&resp)))
}

#[tracing::instrument(skip_all)]
async fn missing_blobs(
    State(db): State<AppState>,
    AuthDevice(_device): AuthDevice,
    body: Bytes,
) -> Result<impl IntoResponse> {
    let q: BlobQuery = protocol::decode(&body).map_err(|e| Error::BadRequest(e.to_string()))?;
    let resp = blocking(move || db.missing_blobs(&q)).await?;
    Ok(cbor(protocol::encode(&resp)))
}

#[tracing::instrument(skip_all)]
async fn put_blob(
    State(db): State<AppState>,
    AuthDevice(_device): AuthDevice,
    Path(sha256): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    blocking(move || db.put_blob(&sha256, &body)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Serves the router on an already bound listener until Ctrl-C or SIGTERM, then lets
/// requests in flight finish (each commits or rolls back whole).
pub async fn serve(listener: tokio::net::TcpListener, db: AppState) -> std::io::Result<()> {
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
