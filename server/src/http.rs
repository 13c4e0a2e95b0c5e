//! The HTTP surface (axum): `GET /health`, `POST /v1/devices/sign-in`, `POST /v1/sync`,
//! `POST /v1/blobs/missing`, `PUT /v1/blobs/{sha256}`. Handlers are thin: they
//! authenticate, bound the body, and hand the work to [`ServerDb`] on the blocking pool.
//! Served over TLS ([`crate::tls`]) or plain HTTP behind a reverse proxy; either way the
//! handlers can extract the peer's `ConnectInfo<SocketAddr>`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
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
/// Largest sign-in body (64 KiB, as every JSON endpoint: [`crate::api::API_BODY_LIMIT`]).
pub const SIGN_IN_BODY_LIMIT: usize = crate::api::API_BODY_LIMIT;
/// Blob hashes per `POST /v1/blobs/missing` body (2 MiB).
pub const BLOB_QUERY_LIMIT: usize = 2 << 20;
/// Password checks run at once. Each argon2id check holds 19 MiB, so this bounds the
/// memory a flood of sign-ins can take (about 80 MiB); the rest wait their turn, and
/// past [`SIGN_IN_WAIT`] are answered 503.
pub const SIGN_IN_CONCURRENCY: usize = 4;
/// How long a sign-in waits for a free password check.
pub const SIGN_IN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How the server is reached, for the handlers that need to know.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Serve HTTPS with this rustls configuration ([`crate::tls::load`]); `None`:
    /// plain HTTP, for running behind a reverse proxy that terminates TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A reverse proxy is in front: a client's address is the last `X-Forwarded-For`
    /// hop ([`client_addr`], for throttling), and the scheme is `X-Forwarded-Proto`.
    pub behind_proxy: bool,
    /// The address phones reach the server at, for enrolment QR payloads; without it,
    /// the request's scheme and `Host` header.
    pub public_url: Option<String>,
    /// The server key's pin (`sha256/<base64>`), put in enrolment QR payloads.
    pub pin: Option<String>,
}

/// Shared state of the handlers: the database, the sign-in gate and throttle, and how
/// the server is reached.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The server's storage.
    pub db: Arc<ServerDb>,
    sign_ins: Arc<tokio::sync::Semaphore>,
    /// Sign-in and enrolment throttling.
    pub throttle: Arc<crate::api::Throttle>,
    /// See [`ServeOptions::behind_proxy`].
    pub behind_proxy: bool,
    /// Session cookies carry `Secure` (TLS here or at the proxy).
    pub secure_cookies: bool,
    /// See [`ServeOptions::pin`].
    pub pin: Option<String>,
    public_url: Option<String>,
    tls: bool,
}

impl AppState {
    /// State over `db`.
    pub fn new(db: Arc<ServerDb>, options: &ServeOptions) -> Self {
        Self {
            db,
            sign_ins: Arc::new(tokio::sync::Semaphore::new(SIGN_IN_CONCURRENCY)),
            throttle: Arc::new(crate::api::Throttle::default()),
            behind_proxy: options.behind_proxy,
            secure_cookies: options.tls.is_some() || options.behind_proxy,
            pin: options.pin.clone(),
            public_url: options.public_url.clone(),
            tls: options.tls.is_some(),
        }
    }

    /// Waits for a free password check (argon2id holds 19 MiB each; see
    /// [`SIGN_IN_CONCURRENCY`]).
    ///
    /// Errors: [`Error::Busy`] after [`SIGN_IN_WAIT`].
    pub async fn password_check(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(SIGN_IN_WAIT, self.sign_ins.clone().acquire_owned())
            .await
            .map_err(|_| Error::Busy)?
            .map_err(|_| Error::Busy)
    }

    /// The address phones should use: the configured one, else the scheme and `Host`
    /// of this request.
    pub fn public_url(&self, headers: &axum::http::HeaderMap) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let forwarded_https = self.behind_proxy
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let scheme = if self.tls || forwarded_https {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}")
    }
}

/// The router with default options (plain HTTP, not behind a proxy).
pub fn app(db: Arc<ServerDb>) -> Router {
    app_with(db, &ServeOptions::default())
}

/// The client's address: the peer of the connection, or, when `behind_proxy`, the last
/// entry of `X-Forwarded-For` (the one the proxy itself appended, so a client cannot
/// forge it) if it is an IP address; else the peer.
pub fn client_addr(connect_info: SocketAddr, headers: &HeaderMap, behind_proxy: bool) -> IpAddr {
    if !behind_proxy {
        return connect_info.ip();
    }
    // Several headers count as one list joined by commas (RFC 9110 section 5.3).
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| parse_hop(last.trim()))
        .unwrap_or(connect_info.ip())
}

/// An `X-Forwarded-For` entry: an IP address, possibly with a port (`1.2.3.4:5678`,
/// `[::1]:5678`) as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
}

/// The router, apart from `main` so tests can serve it on a port of their own. Serve it
/// with `into_make_service_with_connect_info::<SocketAddr>()` ([`serve_router`]):
/// sign-ins are throttled by client address.
pub fn app_with(db: Arc<ServerDb>, options: &ServeOptions) -> Router {
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
        .merge(crate::api::routes().layer(DefaultBodyLimit::max(crate::api::API_BODY_LIMIT)))
        .merge(crate::web::routes().layer(DefaultBodyLimit::max(crate::api::API_BODY_LIMIT)))
        .layer(
            // One line per request at `info`: method, path, status and time. The span
            // records the path only, never the query string: a query may carry personal
            // data (the household search `/households?q=` takes names and phone digits),
            // while paths hold only IDs and blob hashes.
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                    )
                })
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                ),
        )
        .with_state(AppState::new(db, options))
}

/// Runs `f` on the blocking pool (SQLite and argon2id must not hold a runtime thread).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SignInResponse>> {
    let client = client_addr(peer, &headers, state.behind_proxy);
    let req: SignInRequest = crate::api::json_body(
        body,
        "{\"username\", \"password\", \"device_id\", \"device_key\"} with text values",
    )?;
    let device = DeviceId::parse(&req.device_id)
        .ok_or_else(|| Error::BadRequest("device_id is not a UUID".into()))?;
    let device_key = match req.device_key.as_str() {
        "" => None,
        text => Some(doorstep_core::evidence::parse_sha256(text).ok_or_else(|| {
            Error::BadRequest("device_key is not 64 hex digits (an ed25519 public key)".into())
        })?),
    };
    state.throttle.check(Some(&req.username), client)?;
    let _permit = state.password_check().await?;
    let db = state.db.clone();
    let result =
        blocking(move || db.sign_in(&req.username, &req.password, device, device_key)).await;
    match &result {
        Ok(_) => tracing::info!(%device, %client, "device signed in"),
        Err(e) => tracing::info!(%device, %client, code = e.code(), "sign-in refused"),
    }
    Ok(Json(SignInResponse { token: result? }))
}

/// Bound on the changes in one push (a phone sends about 1 MiB per request, and a
/// change is at least a few dozen bytes).
pub const MAX_PUSHED_CHANGES: usize = 20_000;

#[tracing::instrument(skip_all)]
async fn sync(
    State(state): State<AppState>,
    device: Result<AuthDevice, Error>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    let device = match device {
        Ok(AuthDevice(d)) => d,
        Err(Error::DeviceRevoked(id)) => {
            // Kept, not applied: the office sees what the revoked phone still held.
            if let Ok(body) = body
                && let Ok(req) = protocol::decode::<SyncRequest>(&body)
                && !req.push.is_empty()
            {
                let changes = req.push.iter().map(|d| d.changes.len()).sum();
                let households = req.push.len();
                let db = state.db.clone();
                let id2 = id.clone();
                blocking(move || db.keep_revoked_push(&id2, households, changes, &body)).await?;
            }
            tracing::info!(device = %id, "sync refused: the device was revoked");
            return Err(Error::DeviceRevoked(id));
        }
        Err(e) => return Err(e),
    };
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
    AuthDevice(device): AuthDevice,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    may_upload(&device)?;
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
    AuthDevice(device): AuthDevice,
    Path(sha256): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse> {
    may_upload(&device)?;
    let body = body.map_err(|r| Error::from_body(r, BLOB_BODY_LIMIT))?;
    let db = state.db.clone();
    blocking(move || db.put_blob(&sha256, &body)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Only roles that take photos and signatures upload files (the permission table's
/// `UploadFiles`).
fn may_upload(device: &Device) -> Result<()> {
    let p = crate::access::Permission::UploadFiles;
    if device.principal().may_at_all(p) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "a {} phone uploads no files ({p:?})",
            device.role.as_str()
        )))
    }
}

/// Serves the sync API on an already bound listener, over TLS when `options.tls` is
/// set, until Ctrl-C or SIGTERM, then lets requests in flight finish (each commits or
/// rolls back whole).
pub async fn serve(
    listener: tokio::net::TcpListener,
    db: Arc<ServerDb>,
    options: ServeOptions,
) -> std::io::Result<()> {
    serve_router(
        listener,
        app_with(db, &options),
        options.tls,
        shutdown_signal(),
    )
    .await
}

/// Serves `router` on `listener`, over TLS with `tls` or plain, until `shutdown`
/// completes, then lets requests in flight finish. Both ways the handlers can extract
/// `ConnectInfo<SocketAddr>`, the peer of the TCP connection.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            // axum gives `ConnectInfo<SocketAddr>` for its `TcpListener` and for any
            // listener seen through `tap_io`; the tap itself does nothing.
            let listener = crate::tls::TlsListener::new(listener, config).tap_io(|_| {});
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use axum::http::HeaderValue;

    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_client_address_is_the_peer_unless_behind_a_proxy() {
        let peer: SocketAddr = "10.0.0.7:5555".parse().unwrap();
        let ip = |xff: &[&str], behind| client_addr(peer, &headers(xff), behind).to_string();
        // Without the flag the header is whatever a client typed: ignored.
        assert_eq!(ip(&["203.0.113.9"], false), "10.0.0.7");
        assert_eq!(ip(&[], true), "10.0.0.7");
        // With it, the last hop: the one the proxy appended.
        assert_eq!(ip(&["203.0.113.9"], true), "203.0.113.9");
        assert_eq!(ip(&["1.1.1.1, 203.0.113.9"], true), "203.0.113.9");
        assert_eq!(ip(&["1.1.1.1,203.0.113.9 "], true), "203.0.113.9");
        assert_eq!(ip(&["1.1.1.1", "203.0.113.9"], true), "203.0.113.9");
        assert_eq!(ip(&["2001:db8::1"], true), "2001:db8::1");
        assert_eq!(ip(&["203.0.113.9:4711"], true), "203.0.113.9");
        assert_eq!(ip(&["[2001:db8::1]:4711"], true), "2001:db8::1");
        assert_eq!(ip(&["[2001:db8::1]"], true), "2001:db8::1");
        // A last hop that is no address: the peer.
        assert_eq!(ip(&["203.0.113.9, unknown"], true), "10.0.0.7");
        assert_eq!(ip(&["203.0.113.9, "], true), "10.0.0.7");
        assert_eq!(ip(&["203.0.113.9", "garbage"], true), "10.0.0.7");
    }

    /// Sends one GET over `tcp` (in TLS when `tls` is set) and returns the whole answer.
    fn fetch(
        mut tcp: std::net::TcpStream,
        path: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> String {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        match tls {
            None => {
                tcp.write_all(request.as_bytes()).unwrap();
                tcp.read_to_end(&mut out).unwrap();
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(config, name).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                s.write_all(request.as_bytes()).unwrap();
                // The answer is whole even if the server closes without close_notify.
                let _ = s.read_to_end(&mut out);
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_get_the_peer_address_over_plain_http_and_over_tls() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let setup = crate::tls::load(&cert_path, &key_path).unwrap();
        assert_eq!(
            setup.pin,
            doorstep_core::sync::spki_pin(cert.der()).unwrap()
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client_config = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );

        for tls in [None, Some(setup.config.clone())] {
            let router =
                Router::new().route(
                    "/peer",
                    get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                        format!("peer={peer}")
                    }),
                );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve_router(listener, router, tls.clone(), async {
                let _ = stopped.await;
            }));
            let client_tls = tls.as_ref().map(|_| client_config.clone());
            let (local, answer) = tokio::task::spawn_blocking(move || {
                let tcp = std::net::TcpStream::connect(addr).unwrap();
                (tcp.local_addr().unwrap(), fetch(tcp, "/peer", client_tls))
            })
            .await
            .unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(
                answer.ends_with(&format!("peer={local}")),
                "tls {}: {answer}",
                tls.is_some()
            );
            // Graceful shutdown ends the server.
            stop.send(()).unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(10), server)
                .await
                .expect("the server stops when told")
                .unwrap()
                .unwrap();
        }
    }
}
