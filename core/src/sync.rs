//! Drives the sans-IO [`SyncSession`](crate::protocol::SyncSession) over HTTP (blocking,
//! ureq with rustls), applying each answer's effects to the [`Store`] in one transaction
//! as it arrives. Also signs the phone in. Blocking by design (DESIGN.md section 8): apps
//! call it off the main thread.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::{
    self, BlobQueryResponse, ErrorBody, Incoming, Outgoing, Step, SyncProgress, SyncResponse,
};
use crate::store::Store;

mod tls;
use tls::network_error;
pub use tls::{PIN_PREFIX, parse_pin, spki_pin};

/// Upper bound on any answer body the phone reads (64 MiB).
const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// `POST /v1/devices/sign-in` body (JSON).
#[derive(Debug, Serialize, Deserialize)]
pub struct SignInRequest {
    /// Account name.
    pub username: String,
    /// Account password; sent only over the connection, never stored on the phone.
    pub password: String,
    /// The phone's device ID (its Automerge actor).
    pub device_id: String,
    /// The public half of the phone's evidence signing key: 64 lowercase hex digits
    /// (32 bytes, RFC 8032). The server registers it for the device; a key it has not
    /// seen replaces the previous one for new records, which stay verifiable. Empty:
    /// register nothing.
    #[serde(default)]
    pub device_key: String,
}

/// `POST /v1/devices/sign-in` answer (JSON).
#[derive(Serialize, Deserialize)]
pub struct SignInResponse {
    /// Bearer token for every later request of this device.
    pub token: String,
}

impl std::fmt::Debug for SignInResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignInResponse { token: <redacted> }")
    }
}

/// `POST /v1/devices/enrol` body (JSON): redeems a one-time enrolment code.
#[derive(Debug, Serialize, Deserialize)]
pub struct EnrolRequest {
    /// The code as the office gave it (`XXXX-XXXX-XXXX`; case, spaces and dashes do not
    /// matter).
    pub code: String,
    /// The phone's device ID (its Automerge actor).
    pub device_id: String,
    /// The phone's evidence public key, 64 lowercase hex digits.
    pub device_key: String,
}

impl EnrolRequest {
    /// The request that enrols `store`'s device and evidence key with `code`.
    pub fn for_store(store: &Store, code: &str) -> Self {
        Self {
            code: code.into(),
            device_id: store.device_id().to_string(),
            device_key: hex::encode(store.device_public_key()),
        }
    }
}

/// `POST /v1/devices/enrol` answer (JSON).
#[derive(Serialize, Deserialize)]
pub struct EnrolResponse {
    /// Bearer token for every later request of this device.
    pub token: String,
    /// The account the phone is enrolled for; visits are recorded under it.
    pub username: String,
}

impl std::fmt::Debug for EnrolResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EnrolResponse {{ token: <redacted>, username: {:?} }}",
            self.username
        )
    }
}

/// What an enrolment QR code holds: JSON `{"doorstep_enrol": 1, "server": URL, "code":
/// CODE, "pin": "sha256/..." (optional)}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolPayload {
    /// Payload version, 1.
    pub doorstep_enrol: u32,
    /// The server's address.
    pub server: String,
    /// The one-time code.
    pub code: String,
    /// The server key's pin, when the office gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

impl EnrolPayload {
    /// Parses a scanned QR code.
    ///
    /// Errors: [`Error::Invalid`] (field `enrolment code`) when it is not a Doorstep
    /// enrolment code of version 1, or its server address is not `http://` or
    /// `https://`.
    pub fn parse(scanned: &str) -> Result<Self> {
        let p: Self = serde_json::from_str(scanned.trim()).map_err(|_| Error::Invalid {
            field: "enrolment code",
            reason: "this QR code is not a Doorstep enrolment code".into(),
        })?;
        if p.doorstep_enrol != 1 {
            return Err(Error::Invalid {
                field: "enrolment code",
                reason: "this enrolment code is from a newer Doorstep; update the app".into(),
            });
        }
        if !(p.server.starts_with("https://") || p.server.starts_with("http://")) {
            return Err(Error::Invalid {
                field: "enrolment code",
                reason: "its server address is not http:// or https://".into(),
            });
        }
        Ok(p)
    }
}

/// A blocking HTTP client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    /// The server's key pin, `sha256/<base64>`, when the client has one.
    pin: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client for the server at `base_url` (`http://host:port` or `https://...`),
    /// trusting the certificate authorities of the web (WebPKI) for `https`.
    ///
    /// Timeouts are for stalls, not for totals, so a photo crawls through on a weak
    /// link (2G in a courtyard) instead of failing at a fixed deadline: 20 s to
    /// connect, and 30 s for any one read or write on the socket to make progress.
    pub fn new(base_url: &str) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_string(),
            pin: None,
            agent: Self::config().into(),
        }
    }

    /// A client for the `https://` server at `base_url` that accepts the server only
    /// when its certificate's key hashes to `pin` (`sha256/<base64>`, as
    /// `doorstep-server tls-pin` prints it), whoever signed the certificate: a town's
    /// self-signed certificate works. The handshake's signatures are checked as usual.
    /// [`Client::sign_in`] keeps the pin with the server's address, so later syncs use
    /// it too. Timeouts as [`Client::new`].
    ///
    /// Errors: [`Error::Invalid`] for a malformed pin (field `pin`) or a URL that is
    /// not `https://` (field `server_url`). A server presenting another key fails each
    /// request with [`Error::PinMismatch`].
    pub fn with_pin(base_url: &str, pin: &str) -> Result<Self> {
        let hash = parse_pin(pin)?;
        let base = base_url.trim_end_matches('/').to_string();
        if !base
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Err(Error::Invalid {
                field: "server_url",
                reason: "a pinned server is reached over https://".into(),
            });
        }
        Ok(Self {
            base,
            pin: Some(pin.trim().to_string()),
            agent: tls::pinned_agent(Self::config(), hash)?,
        })
    }

    /// The client for the server the phone signed in to, with its pin if it had one.
    ///
    /// Errors: [`Error::NotSignedIn`]; [`Error::Invalid`] for a stored pin that no
    /// longer parses.
    pub fn from_store(store: &Store) -> Result<Self> {
        let Some(url) = store.setting("server_url")? else {
            return Err(Error::NotSignedIn);
        };
        match store.setting("server_pin")?.filter(|p| !p.is_empty()) {
            Some(pin) => Self::with_pin(&url, &pin),
            None => Ok(Self::new(&url)),
        }
    }

    /// The server's key pin this client holds, if any.
    pub fn pin(&self) -> Option<&str> {
        self.pin.as_deref()
    }

    fn config() -> ureq::config::Config {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(None)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_per_read(Some(Duration::from_secs(30)))
            .timeout_per_write(Some(Duration::from_secs(30)))
            .build()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn read(mut resp: ureq::http::Response<ureq::Body>) -> Result<(u16, Vec<u8>)> {
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(network_error)?;
        if status == 401 {
            return Err(Error::Unauthorized(error_message(&body)));
        }
        if !(200..300).contains(&status) {
            let (code, message) = error_parts(&body);
            return Err(Error::Server {
                status,
                code,
                message,
            });
        }
        Ok((status, body))
    }

    /// Signs `username` in on behalf of this phone, registers the phone's evidence key,
    /// and keeps the device token, the server address, its pin (or none) and the
    /// account name in the store.
    ///
    /// Errors: [`Error::Unauthorized`] for a wrong name or password;
    /// [`Error::PinMismatch`]; [`Error::Network`].
    pub fn sign_in(&self, store: &mut Store, username: &str, password: &str) -> Result<()> {
        let body = serde_json::to_vec(&SignInRequest {
            username: username.into(),
            password: password.into(),
            device_id: store.device_id().to_string(),
            device_key: hex::encode(store.device_public_key()),
        })
        .map_err(|e| Error::Network(e.to_string()))?;
        let resp = self
            .agent
            .post(self.url("/v1/devices/sign-in"))
            .content_type("application/json")
            .send(&body[..])
            .map_err(network_error)?;
        let (_, body) = Self::read(resp)?;
        let answer: SignInResponse = serde_json::from_slice(&body).map_err(|_| Error::Server {
            status: 200,
            code: "malformed_answer".into(),
            message: "the sign-in answer is not what a Doorstep server sends".into(),
        })?;
        store.set_setting("server_url", &self.base)?;
        store.set_setting("server_pin", self.pin.as_deref().unwrap_or(""))?;
        store.set_setting("username", username)?;
        store.set_setting("token", &answer.token)?;
        store.set_setting("registered_key", &hex::encode(store.device_public_key()))?;
        Ok(())
    }

    /// Enrols this phone with a one-time code from the office: registers the phone's
    /// evidence key and keeps the device token and the server address in the store.
    /// Nothing else is needed: no password is typed on the phone.
    ///
    /// Errors: [`Error::Unauthorized`] for a wrong, used or expired code;
    /// [`Error::Server`] (429) when too many codes were tried from this address;
    /// [`Error::PinMismatch`] when the server's key is not the pinned one;
    /// [`Error::Network`].
    pub fn enrol(&self, store: &mut Store, code: &str) -> Result<()> {
        let answer = self.redeem(&EnrolRequest::for_store(store, code))?;
        self.keep_enrolment(store, &answer)
    }

    /// The network half of [`Client::enrol`]: redeems the code and returns the token,
    /// touching no store (so a shared store stays unlocked meanwhile).
    ///
    /// Errors: as [`Client::enrol`].
    pub fn redeem(&self, request: &EnrolRequest) -> Result<EnrolResponse> {
        let body = serde_json::to_vec(request).map_err(|e| Error::Network(e.to_string()))?;
        let resp = self
            .agent
            .post(self.url("/v1/devices/enrol"))
            .content_type("application/json")
            .send(&body[..])
            .map_err(network_error)?;
        let (_, body) = Self::read(resp)?;
        serde_json::from_slice(&body).map_err(|_| Error::Server {
            status: 200,
            code: "malformed_answer".into(),
            message: "the enrolment answer is not what a Doorstep server sends".into(),
        })
    }

    /// The store half of [`Client::enrol`]: keeps the server address, its pin, the
    /// account and the token, and marks the current evidence key registered.
    ///
    /// Errors: [`Error::Storage`].
    pub fn keep_enrolment(&self, store: &mut Store, answer: &EnrolResponse) -> Result<()> {
        store.set_setting("server_url", &self.base)?;
        store.set_setting("server_pin", self.pin.as_deref().unwrap_or(""))?;
        store.set_setting("username", &answer.username)?;
        store.set_setting("token", &answer.token)?;
        store.set_setting("registered_key", &hex::encode(store.device_public_key()))?;
        Ok(())
    }

    /// Enrols this phone from a scanned enrolment QR code: its server address, its
    /// one-time code and, when the office gave one, the server key's pin, which every
    /// later sync then requires.
    ///
    /// Errors: as [`EnrolPayload::parse`], [`Client::with_pin`] and [`Client::enrol`].
    pub fn enrol_scanned(store: &mut Store, scanned: &str) -> Result<()> {
        let p = EnrolPayload::parse(scanned)?;
        let client = match &p.pin {
            Some(pin) => Self::with_pin(&p.server, pin)?,
            None => Self::new(&p.server),
        };
        client.enrol(store, &p.code)
    }

    /// `POST`s a CBOR body with the device token and returns the answer's body.
    fn post_cbor(&self, auth: &str, path: &str, body: &[u8]) -> Result<Vec<u8>> {
        let resp = self
            .agent
            .post(self.url(path))
            .header("Authorization", auth)
            .content_type(protocol::CBOR)
            .send(body)
            .map_err(network_error)?;
        Ok(Self::read(resp)?.1)
    }

    fn send(
        &self,
        token: &str,
        blob: impl FnOnce(&str) -> Result<Option<Vec<u8>>>,
        out: &Outgoing,
    ) -> Result<Incoming> {
        let auth = format!("Bearer {token}");
        match out {
            Outgoing::Sync(req) => {
                let body = self.post_cbor(&auth, "/v1/sync", &protocol::encode(req))?;
                Ok(Incoming::Sync(protocol::decode::<SyncResponse>(&body)?))
            }
            Outgoing::FindMissingBlobs(q) => {
                let body = self.post_cbor(&auth, "/v1/blobs/missing", &protocol::encode(q))?;
                Ok(Incoming::MissingBlobs(
                    protocol::decode::<BlobQueryResponse>(&body)?,
                ))
            }
            Outgoing::UploadBlob { sha256 } => {
                let bytes = blob(sha256)?.ok_or_else(|| Error::Invalid {
                    field: "blob",
                    reason: format!("blob {sha256} is queued but not stored"),
                })?;
                let resp = self
                    .agent
                    .put(self.url(&format!("/v1/blobs/{sha256}")))
                    .header("Authorization", &auth)
                    .content_type("application/octet-stream")
                    .send(&bytes[..])
                    .map_err(network_error)?;
                Self::read(resp)?;
                Ok(Incoming::BlobStored {
                    sha256: sha256.clone(),
                })
            }
        }
    }
}

fn error_message(body: &[u8]) -> String {
    error_parts(body).1
}

/// The server's `{code, message}` error body; for anything else (a proxy's page), an
/// empty code and the start of the text.
fn error_parts(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.code, e.message),
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string();
            let text = if text.is_empty() {
                "no explanation given".to_string()
            } else {
                text
            };
            (String::new(), text)
        }
    }
}

/// Syncs the store with the server it signed in to: pushes the outbox, pulls every page
/// after the cursor, uploads the blobs the server lacks. `progress` is called after each
/// answer; setting `cancel` stops before the next request, keeping what was confirmed.
///
/// The server is reached as it was at sign-in: its address, and its key pin if the
/// phone signed in with one.
///
/// Errors: [`Error::NotSignedIn`]; [`Error::KeyNotRegistered`] when the evidence key
/// was renewed since the last sign-in; [`Error::Unauthorized`] when the token was revoked;
/// [`Error::PinMismatch`] when the server presents a key other than the pinned one
/// (nothing is sent or changed);
/// [`Error::Network`] and [`Error::Server`] as they come (everything confirmed before
/// stays confirmed, and the next sync resumes); [`Error::Cancelled`].
pub fn sync_now(
    store: &mut Store,
    cancel: Option<&AtomicBool>,
    progress: impl FnMut(&SyncProgress),
) -> Result<SyncProgress> {
    run(store, cancel, progress)
}

/// [`sync_now`] on a store shared between threads (the apps' [`crate::ffi`]): the lock
/// is taken to read the session's start, each blob and each answer's effects, and is
/// free while a request is on the network, so the worker keeps recording. What is
/// recorded meanwhile waits for the next sync; an answer's effects merge with it.
///
/// Errors: as [`sync_now`].
pub fn sync_shared(
    store: &Mutex<Store>,
    cancel: Option<&AtomicBool>,
    progress: impl FnMut(&SyncProgress),
) -> Result<SyncProgress> {
    run(store, cancel, progress)
}

/// How the sync loop reaches the store: directly, or through a lock.
trait Access {
    fn with<T>(&mut self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T>;
}

impl Access for &mut Store {
    fn with<T>(&mut self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        f(self)
    }
}

impl Access for &Mutex<Store> {
    fn with<T>(&mut self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        // A panic under the lock rolled its transaction back; the store is consistent.
        f(&mut self.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn run(
    mut store: impl Access,
    cancel: Option<&AtomicBool>,
    mut progress: impl FnMut(&SyncProgress),
) -> Result<SyncProgress> {
    let (client, token, mut session) = store.with(|store| {
        let (Some(_), Some(token)) = (store.setting("server_url")?, store.setting("token")?) else {
            return Err(Error::NotSignedIn);
        };
        if store.setting("registered_key")? != Some(hex::encode(store.device_public_key())) {
            // Records signed with a key the server does not know would all be refused.
            return Err(Error::KeyNotRegistered);
        }
        Ok((Client::from_store(store)?, token, store.sync_session()?))
    })?;
    loop {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        match session.poll() {
            Step::Done(p) => return Ok(p),
            Step::Send(out) => {
                let incoming = client.send(&token, |sha| store.with(|s| s.blob(sha)), &out)?;
                let effects = session.receive(incoming)?;
                store.with(|s| s.apply_effects(&effects))?;
                progress(&session.progress());
            }
        }
    }
}
