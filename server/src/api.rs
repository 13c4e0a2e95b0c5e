//! The JSON API the office's web pages and the administrator use (issue 4): web
//! sign-in, accounts, phones and enrolment, household reads (masked), reveals, ID
//! lookups, exports, reviews and the audit log. Every handler names the permission it
//! needs; the [`ServerDb`] function it calls checks it again against the table, with the
//! household's place for household endpoints.
//!
//! Authentication: a web session token (cookie `doorstep_session`, or `Authorization:
//! Bearer`) or a phone's device token (bearer). Failed sign-ins and enrolments are
//! throttled per account and per client address ([`Throttle`]).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use doorstep_core::model::{DeviceId, ReviewState};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::json;

use crate::access::{Permission, Principal, Role, Scope};
use crate::db::people::{RevealField, parse_household};
use crate::error::{Error, Result};
use crate::http::{AppState, blocking, client_addr};

/// Name of the web session cookie.
pub const SESSION_COOKIE: &str = "doorstep_session";
/// Largest JSON body of these endpoints (64 KiB).
pub const API_BODY_LIMIT: usize = 64 << 10;

/// Sign-in and enrolment throttling (GCRA, the `governor` crate), keyed three ways.
/// Every attempt takes a cell from each bucket it falls in, whether it succeeds or
/// not; an empty bucket answers 429 with `Retry-After` before any password is checked.
///
/// - Per account and address: a burst of 5, then one attempt every 20 s. A guesser at
///   one address gets 3 a minute at one account; a person who mistypes a few times is
///   not slowed, and a guesser elsewhere does not lock them out.
/// - Per account, from anywhere: a burst of 20, then one every 30 s, against guessing
///   spread over many addresses. This is the one bucket a guesser can empty for a
///   victim; doing so takes an attempt every 30 s, sustained, and the audit log shows
///   every one (`sign_in_refused`).
/// - Per address: a burst of 30, then one every 2 s (an office behind one NAT signs in
///   together at nine).
///
/// OWASP's Authentication Cheat Sheet: throttle rather than lock out.
#[derive(Debug)]
pub struct Throttle {
    by_account_and_address: DefaultKeyedRateLimiter<(String, IpAddr)>,
    by_account: DefaultKeyedRateLimiter<String>,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
}

impl Default for Throttle {
    fn default() -> Self {
        let nz = |n| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let quota = |period: Duration, burst| {
            Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(nz(1)))
                .allow_burst(nz(burst))
        };
        Self {
            by_account_and_address: RateLimiter::keyed(quota(Duration::from_secs(20), 5)),
            by_account: RateLimiter::keyed(quota(Duration::from_secs(30), 20)),
            by_address: RateLimiter::keyed(quota(Duration::from_secs(2), 30)),
        }
    }
}

impl Throttle {
    /// Takes a cell for the address, and for the account when one is named (its name
    /// case-folded, as people type it either way).
    ///
    /// Errors: [`Error::Throttled`] with the seconds to wait.
    pub fn check(&self, account: Option<&str>, addr: IpAddr) -> Result<()> {
        // Bound the memory a flood of made-up names or addresses can take.
        if self.by_account.len() > 100_000
            || self.by_address.len() > 100_000
            || self.by_account_and_address.len() > 100_000
        {
            self.forget_idle();
        }
        let clock = DefaultClock::default();
        let wait = |d: Duration| Error::Throttled {
            retry_after_s: d.as_secs().max(1),
        };
        if let Err(not_until) = self.by_address.check_key(&addr) {
            tracing::info!("sign-in throttled by address");
            return Err(wait(not_until.wait_time_from(clock.now())));
        }
        if let Some(account) = account {
            let account = account.to_lowercase();
            if let Err(not_until) = self
                .by_account_and_address
                .check_key(&(account.clone(), addr))
            {
                tracing::info!("sign-in throttled by account and address");
                return Err(wait(not_until.wait_time_from(clock.now())));
            }
            if let Err(not_until) = self.by_account.check_key(&account) {
                tracing::info!("sign-in throttled by account");
                return Err(wait(not_until.wait_time_from(clock.now())));
            }
        }
        Ok(())
    }

    /// Forgets keys whose buckets are full again (bounds memory under a flood of
    /// made-up names); run now and then.
    pub fn forget_idle(&self) {
        self.by_account_and_address.retain_recent();
        self.by_account.retain_recent();
        self.by_address.retain_recent();
    }
}

/// Who is calling: an account through a web session or a phone.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account, with its role and scope as they stand now.
    pub principal: Principal,
    /// The phone, when the token is a device token.
    pub device: Option<String>,
    /// The web session, when the token is a session token.
    pub session: Option<i64>,
}

fn token_of(parts: &Parts) -> Option<String> {
    if let Some(v) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => Some(t.trim().into()),
            _ => None,
        };
    }
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token = token_of(parts).ok_or(Error::Unauthorized("sign in first"))?;
        let db = state.db.clone();
        blocking(move || match db.authenticate_session(&token) {
            Ok(s) => Ok(Caller {
                principal: s.principal,
                device: None,
                session: Some(s.id),
            }),
            Err(Error::Unauthorized(_)) => {
                let d = db.authenticate(&token)?;
                Ok(Caller {
                    principal: d.principal(),
                    device: Some(d.device_id.to_string()),
                    session: None,
                })
            }
            Err(e) => Err(e),
        })
        .await
    }
}

impl Caller {
    fn require(&self, p: Permission) -> Result<()> {
        if self.principal.may_at_all(p) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "a {} account may not do this ({p:?})",
                self.principal.role.as_str()
            )))
        }
    }
}

/// Parses a JSON body, naming only the position of what is wrong: serde's messages
/// quote the offending value, which may be a password or a phone number.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: std::result::Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T> {
    // Every JSON endpoint (these and the phone's sign-in) takes at most this much.
    let body = body.map_err(|r| Error::from_body(r, API_BODY_LIMIT))?;
    serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!(
            "the body must be JSON {shape} (wrong at line {} column {})",
            e.line(),
            e.column()
        ))
    })
}

/// The routes of this module, merged into [`crate::http::app`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/session", post(sign_in).delete(sign_out))
        .route("/v1/me", get(me))
        .route("/v1/users", get(list_users).post(add_user))
        .route("/v1/users/{name}/disable", post(disable_user))
        .route("/v1/users/{name}/enable", post(enable_user))
        .route("/v1/users/{name}/password", post(reset_password))
        .route("/v1/users/{name}/role", post(set_role))
        .route("/v1/users/{name}/tokens", get(tokens))
        .route("/v1/sessions/{id}", delete(revoke_session))
        .route("/v1/devices/{id}", get(device).delete(revoke_device))
        .route("/v1/enrolments", post(issue_enrolment))
        .route("/v1/devices/enrol", post(redeem_enrolment))
        .route("/v1/households", get(list_households))
        .route("/v1/households/{id}", get(household))
        .route("/v1/households/{id}/reveal", post(reveal))
        .route("/v1/households/{id}/visits/{visit}/review", post(review))
        .route("/v1/households/{id}/move", post(move_household))
        .route("/v1/residents/lookup", post(lookup))
        .route("/v1/export/households.csv", get(export_households))
        .route("/v1/audit", get(audit_log))
}

#[derive(Deserialize)]
struct SignInBody {
    username: String,
    password: String,
}

async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let b: SignInBody = json_body(body, "{\"username\", \"password\"}")?;
    let addr = client_addr(peer, &headers, state.behind_proxy);
    let (token, p, cookie) = start_web_session(&state, addr, b.username, b.password).await?;
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(json!({
            "token": token,
            "username": p.username,
            "role": p.role,
            "expires_in_s": crate::db::accounts::SESSION_TTL_MS / 1000,
        })),
    )
        .into_response())
}

/// Signs an account in for a web session, as `POST /v1/session` and the `/login` page
/// both do: the throttle first (by account and client address `addr`), then a free
/// password check, then [`ServerDb::sign_in_web`](crate::db::ServerDb::sign_in_web).
/// Returns the session token, the account, and the `Set-Cookie` value of cookie
/// [`SESSION_COOKIE`] (`HttpOnly; SameSite=Strict`, `Secure` behind TLS).
///
/// Errors: [`Error::Throttled`], [`Error::Busy`], [`Error::Unauthorized`] for a wrong
/// name or password or a disabled account.
pub(crate) async fn start_web_session(
    state: &AppState,
    addr: IpAddr,
    username: String,
    password: String,
) -> Result<(String, Principal, String)> {
    state.throttle.check(Some(&username), addr)?;
    let _permit = state.password_check().await?;
    let db = state.db.clone();
    let (token, p) = blocking(move || db.sign_in_web(&username, &password)).await?;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        crate::db::accounts::SESSION_TTL_MS / 1000,
        if state.secure_cookies { "; Secure" } else { "" }
    );
    Ok((token, p, cookie))
}

/// The `Set-Cookie` value that clears cookie [`SESSION_COOKIE`].
pub(crate) const CLEAR_SESSION_COOKIE: &str =
    "doorstep_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0";

async fn sign_out(State(state): State<AppState>, caller: Caller) -> Result<Response> {
    let Some(id) = caller.session else {
        return Err(Error::BadRequest(
            "a phone signs out by being revoked".into(),
        ));
    };
    let db = state.db.clone();
    let by = caller.principal.username.clone();
    blocking(move || db.revoke_session(id, &by)).await?;
    Ok((
        [(header::SET_COOKIE, CLEAR_SESSION_COOKIE)],
        StatusCode::NO_CONTENT,
    )
        .into_response())
}

async fn me(caller: Caller) -> Json<serde_json::Value> {
    let p = &caller.principal;
    let allowed: Vec<String> = crate::access::PERMISSIONS
        .iter()
        .filter(|(perm, _)| p.may_at_all(*perm))
        .map(|(perm, _)| format!("{perm:?}"))
        .collect();
    Json(json!({
        "username": p.username,
        "role": p.role,
        "role_zh": p.role.label_zh(),
        "scope": p.scope,
        "device": caller.device,
        "permissions": allowed,
    }))
}

async fn list_users(State(state): State<AppState>, caller: Caller) -> Result<Response> {
    caller.require(Permission::ManageUsers)?;
    let db = state.db.clone();
    Ok(Json(blocking(move || db.list_users()).await?).into_response())
}

#[derive(Deserialize)]
struct NewUserBody {
    username: String,
    password: String,
    role: Role,
    #[serde(default)]
    scope: Scope,
}

async fn add_user(
    State(state): State<AppState>,
    caller: Caller,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    caller.require(Permission::ManageUsers)?;
    let b: NewUserBody = json_body(
        body,
        "{\"username\", \"password\", \"role\", \"scope\": {\"town\", \"villages\", \"grids\", \"units\"}}",
    )?;
    let _permit = state.password_check().await?;
    let db = state.db.clone();
    let by = caller.principal.username;
    blocking(move || db.add_user(&b.username, &b.password, b.role, &b.scope, &by)).await?;
    Ok(StatusCode::CREATED.into_response())
}

async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    caller.require(Permission::ManageUsers)?;
    let db = state.db.clone();
    let by = caller.principal.username;
    blocking(move || db.set_disabled(&name, true, &by)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    caller.require(Permission::ManageUsers)?;
    let db = state.db.clone();
    let by = caller.principal.username;
    blocking(move || db.set_disabled(&name, false, &by)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
}

async fn reset_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    caller.require(Permission::ManageUsers)?;
    let b: PasswordBody = json_body(body, "{\"password\"}")?;
    let _permit = state.password_check().await?;
    let db = state.db.clone();
    let by = caller.principal.username;
    blocking(move || db.reset_password(&name, &b.password, &by)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RoleBody {
    role: Role,
    #[serde(default)]
    scope: Scope,
}

async fn set_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    caller.require(Permission::ManageUsers)?;
    let b: RoleBody = json_body(body, "{\"role\", \"scope\"}")?;
    let db = state.db.clone();
    let by = caller.principal.username;
    blocking(move || db.set_role(&name, b.role, &b.scope, &by)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tokens(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response> {
    // Everyone sees their own; ManageDevices sees anyone's.
    if name != caller.principal.username {
        caller.require(Permission::ManageDevices)?;
    }
    let db = state.db.clone();
    Ok(Json(blocking(move || db.tokens(&name)).await?).into_response())
}

async fn revoke_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    // Parsed here: axum's own rejection would quote the value back.
    let id: i64 = id
        .parse()
        .map_err(|_| Error::NotFound("no such session".into()))?;
    let db = state.db.clone();
    blocking(move || {
        match db.session_owner(id)? {
            Some(owner) if owner == caller.principal.username => {}
            Some(_) => caller.require(Permission::ManageDevices)?,
            None => return Err(Error::NotFound(format!("no session {id}"))),
        }
        db.revoke_session(id, &caller.principal.username)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    caller.require(Permission::ManageDevices)?;
    let db = state.db.clone();
    Ok(Json(blocking(move || db.device_info(&id)).await?).into_response())
}

async fn revoke_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    caller.require(Permission::ManageDevices)?;
    let db = state.db.clone();
    let by = caller.principal.username;
    Ok(Json(blocking(move || db.revoke_device(&id, &by)).await?).into_response())
}

#[derive(Deserialize)]
struct EnrolmentBody {
    username: String,
}

async fn issue_enrolment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    caller.require(Permission::IssueEnrolment)?;
    let b: EnrolmentBody = json_body(body, "{\"username\"}")?;
    let url = state.public_url(&headers);
    let pin = state.pin.clone();
    let db = state.db.clone();
    let by = caller.principal.username;
    let e = blocking(move || db.issue_enrolment(&b.username, &by, &url, pin.as_deref())).await?;
    Ok((StatusCode::CREATED, Json(e)).into_response())
}

#[derive(Deserialize)]
struct RedeemBody {
    code: String,
    device_id: String,
    device_key: String,
}

async fn redeem_enrolment(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let b: RedeemBody = json_body(body, "{\"code\", \"device_id\", \"device_key\"}")?;
    state
        .throttle
        .check(None, client_addr(peer, &headers, state.behind_proxy))?;
    let device = DeviceId::parse(&b.device_id)
        .ok_or_else(|| Error::BadRequest("device_id is not a UUID".into()))?;
    let key = doorstep_core::evidence::parse_sha256(&b.device_key).ok_or_else(|| {
        Error::BadRequest("device_key is not 64 hex digits (an ed25519 public key)".into())
    })?;
    let db = state.db.clone();
    let (token, username) = blocking(move || db.redeem_enrolment(&b.code, device, &key)).await?;
    tracing::info!(%device, "device enrolled with a code");
    Ok(Json(json!({ "token": token, "username": username })).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    village: Option<String>,
    grid: Option<String>,
    #[serde(default)]
    offset: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// A query string, with a refusal that names no value (axum's would quote it).
fn query<T>(q: std::result::Result<Query<T>, QueryRejection>, shape: &str) -> Result<T> {
    q.map(|Query(q)| q)
        .map_err(|_| Error::BadRequest(format!("the query string must be {shape}")))
}

async fn list_households(
    State(state): State<AppState>,
    caller: Caller,
    q: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response> {
    let q = query(q, "village=, grid=, offset= and limit= (whole numbers)")?;
    caller.require(Permission::ReadHouseholds)?;
    let db = state.db.clone();
    let rows = blocking(move || {
        db.list_households(
            &caller.principal,
            q.village.as_deref(),
            q.grid.as_deref(),
            q.offset,
            q.limit,
        )
    })
    .await?;
    Ok(Json(rows).into_response())
}

async fn household(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = parse_household(&id)?;
    let db = state.db.clone();
    Ok(Json(blocking(move || db.household_view(&caller.principal, id)).await?).into_response())
}

#[derive(Deserialize)]
struct RevealBody {
    #[serde(default)]
    resident: Option<String>,
    field: RevealField,
    reason: String,
}

async fn reveal(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let id = parse_household(&id)?;
    let b: RevealBody = json_body(
        body,
        "{\"resident\" (optional), \"field\": \"id_number\" or \"phone\", \"reason\"}",
    )?;
    let db = state.db.clone();
    let value = blocking(move || {
        db.reveal(
            &caller.principal,
            caller.device.as_deref(),
            id,
            b.resident.as_deref(),
            b.field,
            &b.reason,
        )
    })
    .await?;
    // Never cached by a browser or a proxy.
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "value": value })),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ReviewBody {
    state: String,
    #[serde(default)]
    reason: String,
}

async fn review(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, visit)): Path<(String, String)>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let id = parse_household(&id)?;
    let b: ReviewBody = json_body(
        body,
        "{\"state\": \"received\", \"approved\" or \"has_issues\", \"reason\"}",
    )?;
    let review = ReviewState::parse(&b.state)
        .ok_or_else(|| Error::BadRequest("state is received, approved or has_issues".into()))?;
    let db = state.db.clone();
    blocking(move || db.write_review(&caller.principal, id, &visit, review, &b.reason)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct MoveBody {
    village: String,
    grid: String,
}

async fn move_household(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let id = parse_household(&id)?;
    let b: MoveBody = json_body(body, "{\"village\", \"grid\"}")?;
    let db = state.db.clone();
    blocking(move || db.move_household_as(&caller.principal, id, &b.village, &b.grid)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct LookupBody {
    id_number: String,
}

async fn lookup(
    State(state): State<AppState>,
    caller: Caller,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    // A POST body, never a query string: URLs end up in access logs.
    let b: LookupBody = json_body(body, "{\"id_number\"}")?;
    let db = state.db.clone();
    let found = blocking(move || {
        db.lookup_id_number(&caller.principal, caller.device.as_deref(), &b.id_number)
    })
    .await?;
    Ok(Json(found).into_response())
}

async fn export_households(State(state): State<AppState>, caller: Caller) -> Result<Response> {
    let db = state.db.clone();
    let csv = blocking(move || db.export_households_csv(&caller.principal)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"households.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        csv,
    )
        .into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_audit_limit")]
    limit: i64,
}

fn default_audit_limit() -> i64 {
    1000
}

/// The audit log as JSON Lines (`application/jsonl`), entries after `after`.
async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    q: std::result::Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response> {
    let q = query(q, "after= and limit= (whole numbers)")?;
    caller.require(Permission::ReadAudit)?;
    let db = state.db.clone();
    let by = caller.principal.username;
    let entries = blocking(move || {
        let entries = db.audit_entries(q.after, q.limit)?;
        db.audit(
            &by,
            None,
            "audit_exported",
            "audit_log",
            json!({"after": q.after, "entries": entries.len()}),
        )?;
        Ok(entries)
    })
    .await?;
    let mut out = String::new();
    for e in entries {
        out.push_str(&serde_json::to_string(&e).unwrap_or_default());
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/jsonl")], out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_slows_repeated_attempts_per_account_and_address() {
        let t = Throttle::default();
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let throttled = |r: Result<()>| matches!(r, Err(Error::Throttled { retry_after_s }) if retry_after_s >= 1);
        for _ in 0..5 {
            t.check(Some("w"), ip(1)).unwrap();
        }
        // The account's bucket at this address is empty, whatever the case typed ...
        assert!(throttled(t.check(Some("w"), ip(1))));
        assert!(throttled(t.check(Some("W"), ip(1))));
        // ... but the person at another address still signs in, until guesses from
        // everywhere together empty the account's own bucket (20).
        t.check(Some("w"), ip(2)).unwrap();
        for n in 3..6 {
            for _ in 0..5 {
                let _ = t.check(Some("w"), ip(n));
            }
        }
        assert!(throttled(t.check(Some("w"), ip(2))));
        // Another account from the first address still has room.
        t.check(Some("x"), ip(1)).unwrap();
    }
}
