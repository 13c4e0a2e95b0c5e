//! Accounts, web sessions, phones and enrolment codes (issue 4, DESIGN.md section 6),
//! with every act on them written to the audit log in the same transaction.
//!
//! Passwords: argon2id at OWASP's parameters ([`crate::auth`]). Tokens (web sessions and
//! phones): 32 random bytes, kept as SHA-256. Enrolment codes: 60 random bits, kept as
//! HMAC-SHA256 under the server's lookup key, one use, [`ENROLMENT_TTL_MS`] to redeem.

use doorstep_core::model::DeviceId;
use doorstep_core::store::now_ms;
use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Device, ServerDb, evidence};
use crate::access::{Permission, Principal, Role, Scope};
use crate::audit::{self, SERVER_ACTOR};
use crate::auth;
use crate::error::{Error, Result};

/// A web session ends this long after sign-in, whatever happens (12 hours: a working
/// day).
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// A web session ends after this long without a request (2 hours).
pub const SESSION_IDLE_MS: i64 = 2 * 3600 * 1000;
/// Bytes of pushes kept per revoked phone (32 MiB).
pub const REVOKED_PUSH_BYTES: i64 = 32 << 20;
/// An enrolment code can be redeemed for this long after it is issued (72 hours).
pub const ENROLMENT_TTL_MS: i64 = 72 * 3600 * 1000;

const REFUSED: &str = "wrong user name or password";

/// An enrolment code's row: id, account id and name, redeemed, expires, disabled.
type CodeRow = (i64, i64, String, Option<i64>, i64, Option<i64>);
/// A device token's row: device, account id, name, role, scope, revoked, disabled.
type TokenRow = (
    String,
    i64,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
);

/// An account as the administrator sees it (no password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Account name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Scope.
    pub scope: Scope,
    /// Created, milliseconds since the Unix epoch (UTC).
    pub created_at_ms: i64,
    /// Disabled since, when disabled.
    pub disabled_at_ms: Option<i64>,
    /// Phones enrolled and not revoked.
    pub active_devices: i64,
}

/// One web session of an account (the token itself is never stored or shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session number, for revoking it.
    pub id: i64,
    /// Signed in at (UTC ms).
    pub created_at_ms: i64,
    /// Last request at (UTC ms).
    pub last_seen_ms: i64,
    /// Ends at (UTC ms), unless idle first.
    pub expires_at_ms: i64,
    /// Revoked at (UTC ms), or signed out.
    pub revoked_at_ms: Option<i64>,
}

/// What a phone said it still held unsynced when it last reached the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxReport {
    /// Changes not yet acknowledged.
    pub changes: u64,
    /// Households those changes are in.
    pub households: u64,
    /// Photos and signature images not yet uploaded.
    pub blobs: u64,
}

/// One phone of an account, and what the office can know of what it had not synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The device ID (its Automerge actor).
    pub device_id: String,
    /// The account.
    pub username: String,
    /// `code` (enrolment code) or `password`.
    pub enrolled_via: String,
    /// Enrolled at (UTC ms).
    pub created_at_ms: i64,
    /// Last sync, to the minute (UTC ms).
    pub last_sync_ms: Option<i64>,
    /// Revoked at (UTC ms).
    pub revoked_at_ms: Option<i64>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// What it reported holding unsynced at its last sync.
    pub outbox: Option<OutboxReport>,
    /// When it reported that (UTC ms).
    pub outbox_at_ms: Option<i64>,
    /// Visits it started that it has not finished or voided, as far as the server
    /// knows.
    pub open_visits: i64,
    /// Pushes it tried after it was revoked: kept, not applied.
    pub pushes_after_revocation: i64,
    /// Changes in those pushes.
    pub changes_after_revocation: i64,
}

/// An account's sessions and phones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTokens {
    /// Web sessions, newest first.
    pub sessions: Vec<SessionInfo>,
    /// Phones, newest first.
    pub devices: Vec<DeviceInfo>,
}

/// A newly issued enrolment code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    /// The code, `XXXX-XXXX-XXXX` in Crockford's base32 (no I, L, O or U).
    pub code: String,
    /// Last moment it can be redeemed (UTC ms).
    pub expires_at_ms: i64,
    /// What the QR code holds: JSON `{"doorstep_enrol": 1, "server": URL, "code": CODE}`
    /// (plus `"pin"` when the server's key is pinned).
    pub qr_payload: String,
}

/// A signed-in web session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session's number.
    pub id: i64,
    /// Who.
    pub principal: Principal,
}

fn check_username(username: &str) -> Result<()> {
    if username.is_empty() || username.chars().count() > 64 {
        return Err(Error::BadRequest(
            "a user name is 1 to 64 characters".into(),
        ));
    }
    if username.trim() != username
        || username
            .chars()
            .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err(Error::BadRequest(
            "the user name starts or ends with a space, or holds a control or invisible formatting character".into(),
        ));
    }
    Ok(())
}

/// Unicode format characters that change how text reads without showing (zero-width
/// spaces and joiners, bidirectional overrides and isolates, the byte-order mark): a
/// name holding one can pass for another name in a list or the audit log.
pub(crate) fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

/// Passwords of 8 to 128 characters, not blank (OWASP ASVS 2.1.1 and 2.1.2).
fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if password.trim().is_empty() || n < 8 {
        return Err(Error::BadRequest(
            "the password must have at least 8 characters".into(),
        ));
    }
    if n > 128 {
        return Err(Error::BadRequest(
            "the password must have at most 128 characters".into(),
        ));
    }
    Ok(())
}

fn check_scope(role: Role, scope: &Scope) -> Result<()> {
    let needs_scope = [
        Permission::SyncHouseholds,
        Permission::ReadHouseholds,
        Permission::WriteVisit,
    ]
    .into_iter()
    .any(|p| crate::access::reach(role, p) == crate::access::Reach::Scope);
    if needs_scope && scope.is_empty() {
        return Err(Error::BadRequest(format!(
            "a {} needs a scope: grids, villages or the town",
            role.as_str()
        )));
    }
    Ok(())
}

struct UserRow {
    id: i64,
    hash: String,
    role: Role,
    scope: Scope,
    disabled: bool,
}

fn user_row(tx: &rusqlite::Connection, username: &str) -> Result<Option<UserRow>> {
    let row: Option<(i64, String, String, String, Option<i64>)> = tx
        .query_row(
            "SELECT id, password_hash, role, scope, disabled_at_ms FROM users WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    row.map(|(id, hash, role, scope, disabled)| {
        Ok(UserRow {
            id,
            hash,
            role: stored_role(&role)?,
            scope: Scope::from_json(&scope),
            disabled: disabled.is_some(),
        })
    })
    .transpose()
}

/// A role as stored in the `users` table (the table's CHECK admits only known names).
fn stored_role(role: &str) -> Result<Role> {
    Role::parse(role).ok_or_else(|| Error::Internal("stored role is not known".into()))
}

fn no_user(username: &str) -> Error {
    Error::NotFound(format!("no account named {username}"))
}

/// A new enrolment code: 12 symbols of Crockford's base32 (60 bits), grouped by four.
fn new_enrolment_code() -> Result<String> {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(e.to_string()))?;
    let symbols: Vec<char> = bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect();
    Ok(symbols
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-"))
}

/// A code as typed: upper-cased, without spaces or dashes, and with the letters
/// Crockford's base32 reads as digits (O as 0, I and L as 1).
fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect()
}

impl ServerDb {
    /// Writes one audit entry in its own transaction (for acts that change nothing
    /// else: reveals, exports, refused sign-ins).
    ///
    /// Errors: [`Error::Db`].
    pub fn audit(
        &self,
        actor: &str,
        device: Option<&str>,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        audit::append(
            &tx,
            &self.server_key,
            now_ms(),
            actor,
            device,
            action,
            target,
            detail,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Audit entries after `after`, at most `limit` (1 to 10,000).
    pub fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<audit::AuditEntry>> {
        audit::entries(&self.conn(), after, limit.clamp(1, 10_000))
    }

    /// Checks the audit log's chain and signatures; returns its length. Trusted signers
    /// are the server's current key (from its key file) and `earlier_keys` (public keys
    /// of keys the server had before, which the caller takes from outside this data
    /// folder, e.g. a phone's copy of the organisation document): nothing stored in the
    /// database is trusted, since whoever edits the log can edit the database too.
    ///
    /// Errors: [`Error::Internal`] naming the first entry that does not hold.
    pub fn verify_audit(&self, earlier_keys: &[[u8; 32]]) -> Result<i64> {
        let mut keys = vec![self.server_key.public()];
        keys.extend_from_slice(earlier_keys);
        audit::verify(&self.conn(), &keys)
    }

    /// Adds an account with an argon2id password hash (OWASP parameters: 19 MiB, 2
    /// passes, 1 lane), a role and a scope; audited as `user_created` by `by`.
    ///
    /// Errors: [`Error::Conflict`] when the name is taken; [`Error::BadRequest`] for a
    /// name of 0 or over 64 characters, a password under 8 or over 128 characters, or a
    /// field role without a scope.
    pub fn add_user(
        &self,
        username: &str,
        password: &str,
        role: Role,
        scope: &Scope,
        by: &str,
    ) -> Result<()> {
        check_username(username)?;
        check_password(password)?;
        check_scope(role, scope)?;
        let hash = auth::hash_password(password)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if user_row(&tx, username)?.is_some() {
            return Err(Error::Conflict(format!("user {username} already exists")));
        }
        let now = now_ms();
        tx.execute(
            "INSERT INTO users (username, password_hash, role, scope, created_at_ms, password_changed_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![username, hash, role.as_str(), scope.to_json(), now],
        )?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            by,
            None,
            "user_created",
            username,
            json!({"role": role, "scope": scope}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every account, by name.
    pub fn list_users(&self) -> Result<Vec<UserInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT u.username, u.role, u.scope, u.created_at_ms, u.disabled_at_ms,
                    (SELECT count(*) FROM devices d WHERE d.user_id = u.id AND d.revoked_at_ms IS NULL)
               FROM users u ORDER BY u.username",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (username, role, scope, created_at_ms, disabled_at_ms, active_devices) = row?;
            out.push(UserInfo {
                username,
                role: Role::parse(&role).unwrap_or(Role::GridWorker),
                scope: Scope::from_json(&scope),
                created_at_ms,
                disabled_at_ms,
                active_devices,
            });
        }
        Ok(out)
    }

    /// Disables or enables an account. Disabling ends its web sessions and stops its
    /// phones at once (their tokens stay, so enabling brings them back); audited.
    ///
    /// Errors: [`Error::NotFound`].
    pub fn set_disabled(&self, username: &str, disabled: bool, by: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let user = user_row(&tx, username)?.ok_or_else(|| no_user(username))?;
        let now = now_ms();
        if disabled {
            tx.execute(
                "UPDATE users SET disabled_at_ms = ?2 WHERE id = ?1 AND disabled_at_ms IS NULL",
                params![user.id, now],
            )?;
            tx.execute(
                "UPDATE sessions SET revoked_at_ms = ?2 WHERE user_id = ?1 AND revoked_at_ms IS NULL",
                params![user.id, now],
            )?;
        } else {
            tx.execute(
                "UPDATE users SET disabled_at_ms = NULL WHERE id = ?1",
                [user.id],
            )?;
        }
        let action = if disabled {
            "user_disabled"
        } else {
            "user_enabled"
        };
        audit::append(
            &tx,
            &self.server_key,
            now,
            by,
            None,
            action,
            username,
            json!({}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Sets a new password and ends the account's web sessions; audited (without the
    /// password).
    ///
    /// Errors: [`Error::NotFound`]; [`Error::BadRequest`] for a password under 8 or
    /// over 128 characters.
    pub fn reset_password(&self, username: &str, password: &str, by: &str) -> Result<()> {
        check_password(password)?;
        let hash = auth::hash_password(password)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let user = user_row(&tx, username)?.ok_or_else(|| no_user(username))?;
        let now = now_ms();
        tx.execute(
            "UPDATE users SET password_hash = ?2, password_changed_at_ms = ?3 WHERE id = ?1",
            params![user.id, hash, now],
        )?;
        tx.execute(
            "UPDATE sessions SET revoked_at_ms = ?2 WHERE user_id = ?1 AND revoked_at_ms IS NULL",
            params![user.id, now],
        )?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            by,
            None,
            "password_reset",
            username,
            json!({}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Changes an account's role and scope; takes effect on its next request (phones
    /// included); audited with the old and new values.
    ///
    /// Errors: [`Error::NotFound`]; [`Error::BadRequest`] for a field role without a
    /// scope.
    pub fn set_role(&self, username: &str, role: Role, scope: &Scope, by: &str) -> Result<()> {
        check_scope(role, scope)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let user = user_row(&tx, username)?.ok_or_else(|| no_user(username))?;
        let now = now_ms();
        tx.execute(
            "UPDATE users SET role = ?2, scope = ?3 WHERE id = ?1",
            params![user.id, role.as_str(), scope.to_json()],
        )?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            by,
            None,
            "role_changed",
            username,
            json!({"from": {"role": user.role, "scope": user.scope}, "to": {"role": role, "scope": scope}}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Checks a password. Returns the account's row when it matches and the account is
    /// enabled. Unknown names cost the same argon2id check as known ones, so timing
    /// does not tell them apart; every outcome is audited (`sign_in` or
    /// `sign_in_refused`; an unknown name is recorded as `(unknown account)`, never as
    /// typed, since people type passwords into the name field).
    fn check_password_audited(
        &self,
        username: &str,
        password: &str,
        via: &str,
        device: Option<&str>,
    ) -> Result<UserRow> {
        let row = user_row(&self.conn(), username)?;
        let ok = match &row {
            None => {
                let _ = auth::verify_password(password, auth::DUMMY_HASH);
                false
            }
            Some(u) => auth::verify_password(password, &u.hash)? && !u.disabled,
        };
        let target = if row.is_some() {
            username
        } else {
            "(unknown account)"
        };
        let actor = if row.is_some() {
            username
        } else {
            SERVER_ACTOR
        };
        if !ok {
            self.audit(
                actor,
                device,
                "sign_in_refused",
                target,
                json!({"via": via}),
            )?;
            return Err(Error::Unauthorized(REFUSED));
        }
        row.ok_or(Error::Unauthorized(REFUSED))
    }

    /// Signs a person in on the web: checks the password and opens a session. Returns
    /// the session token (64 hex digits; only its SHA-256 is kept) and who signed in.
    ///
    /// Errors: [`Error::Unauthorized`] for an unknown account, a wrong password or a
    /// disabled account (one message for all).
    pub fn sign_in_web(&self, username: &str, password: &str) -> Result<(String, Principal)> {
        let user = self.check_password_audited(username, password, "web", None)?;
        let token = auth::new_token();
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO sessions (user_id, token_hash, created_at_ms, last_seen_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?3, ?4)",
            params![user.id, auth::token_hash(&token), now, now + SESSION_TTL_MS],
        )?;
        let session = tx.last_insert_rowid();
        audit::append(
            &tx,
            &self.server_key,
            now,
            username,
            None,
            "sign_in",
            username,
            json!({"via": "web", "session": session}),
        )?;
        tx.commit()?;
        Ok((
            token,
            Principal {
                user_id: user.id,
                username: username.into(),
                role: user.role,
                scope: user.scope,
            },
        ))
    }

    /// The session a web token belongs to, and who it is. Refreshes its last-seen time
    /// (at most once a minute).
    ///
    /// Errors: [`Error::Unauthorized`] for an unknown, revoked, expired or idle session
    /// or a disabled account.
    pub fn authenticate_session(&self, token: &str) -> Result<Session> {
        let now = now_ms();
        let conn = self.conn();
        let row: Option<(i64, i64, String, String, String, i64)> = conn
            .query_row(
                "SELECT s.id, u.id, u.username, u.role, u.scope, s.last_seen_ms
                   FROM sessions s JOIN users u ON u.id = s.user_id
                  WHERE s.token_hash = ?1 AND s.revoked_at_ms IS NULL
                    AND s.expires_at_ms > ?2 AND u.disabled_at_ms IS NULL",
                params![auth::token_hash(token), now],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, user_id, username, role, scope, last_seen)) = row else {
            return Err(Error::Unauthorized("sign in again: the session has ended"));
        };
        if now - last_seen > SESSION_IDLE_MS {
            conn.execute(
                "UPDATE sessions SET revoked_at_ms = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            return Err(Error::Unauthorized("sign in again: the session has ended"));
        }
        if now - last_seen > 60_000 {
            conn.execute(
                "UPDATE sessions SET last_seen_ms = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
        Ok(Session {
            id,
            principal: Principal {
                user_id,
                username,
                role: stored_role(&role)?,
                scope: Scope::from_json(&scope),
            },
        })
    }

    /// Ends a web session (sign-out, or revoked by its owner or the office); audited.
    ///
    /// Errors: [`Error::NotFound`] for no such session.
    pub fn revoke_session(&self, session_id: i64, by: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let owner: Option<String> = tx
            .query_row(
                "SELECT u.username FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?1",
                [session_id],
                |r| r.get(0),
            )
            .optional()?;
        let owner = owner.ok_or_else(|| Error::NotFound(format!("no session {session_id}")))?;
        let now = now_ms();
        tx.execute(
            "UPDATE sessions SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![session_id, now],
        )?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            by,
            None,
            "session_revoked",
            &owner,
            json!({"session": session_id}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Who owns a session, for checking that someone revokes only their own.
    pub fn session_owner(&self, session_id: i64) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT u.username FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?1",
                [session_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// An account's web sessions and phones, newest first.
    ///
    /// Errors: [`Error::NotFound`].
    pub fn tokens(&self, username: &str) -> Result<UserTokens> {
        let conn = self.conn();
        let user = user_row(&conn, username)?.ok_or_else(|| no_user(username))?;
        let mut stmt = conn.prepare(
            "SELECT id, created_at_ms, last_seen_ms, expires_at_ms, revoked_at_ms
               FROM sessions WHERE user_id = ?1 ORDER BY id DESC",
        )?;
        let sessions = stmt
            .query_map([user.id], |r| {
                Ok(SessionInfo {
                    id: r.get(0)?,
                    created_at_ms: r.get(1)?,
                    last_seen_ms: r.get(2)?,
                    expires_at_ms: r.get(3)?,
                    revoked_at_ms: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<String> = conn
            .prepare(
                "SELECT device_id FROM devices WHERE user_id = ?1 ORDER BY created_at_ms DESC",
            )?
            .query_map([user.id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        drop(stmt);
        drop(conn);
        let devices = ids
            .iter()
            .map(|d| self.device_info(d))
            .collect::<Result<Vec<_>>>()?;
        Ok(UserTokens { sessions, devices })
    }

    /// One phone, with what the office can know of what it had not synced: what it
    /// reported at its last sync, its visits still open, and pushes it tried after it
    /// was revoked.
    ///
    /// Errors: [`Error::NotFound`].
    pub fn device_info(&self, device_id: &str) -> Result<DeviceInfo> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT d.device_id, u.username, d.enrolled_via, d.created_at_ms, d.last_sync_ms,
                        d.revoked_at_ms, d.revoked_by, d.outbox, d.outbox_at_ms,
                        (SELECT count(*) FROM visits v WHERE v.device_id = d.device_id
                           AND v.outcome = 'in_progress' AND v.voided_reason IS NULL),
                        (SELECT count(*) FROM revoked_pushes p WHERE p.device_id = d.device_id),
                        (SELECT coalesce(sum(changes), 0) FROM revoked_pushes p WHERE p.device_id = d.device_id)
                   FROM devices d JOIN users u ON u.id = d.user_id WHERE d.device_id = ?1",
                [device_id],
                |r| {
                    Ok(DeviceInfo {
                        device_id: r.get(0)?,
                        username: r.get(1)?,
                        enrolled_via: r.get(2)?,
                        created_at_ms: r.get(3)?,
                        last_sync_ms: r.get(4)?,
                        revoked_at_ms: r.get(5)?,
                        revoked_by: r.get(6)?,
                        outbox: r
                            .get::<_, Option<String>>(7)?
                            .and_then(|s| serde_json::from_str(&s).ok()),
                        outbox_at_ms: r.get(8)?,
                        open_visits: r.get(9)?,
                        pushes_after_revocation: r.get(10)?,
                        changes_after_revocation: r.get(11)?,
                    })
                },
            )
            .optional()?;
        row.ok_or_else(|| Error::NotFound(format!("no device {device_id}")))
    }

    /// Revokes a phone: its token stops working at once (the next request is refused),
    /// and its evidence keys sign nothing more that the server accepts. Returns what
    /// the office can know of what it had not synced; audited.
    ///
    /// Errors: [`Error::NotFound`].
    pub fn revoke_device(&self, device_id: &str, by: &str) -> Result<DeviceInfo> {
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let owner: Option<String> = tx
                .query_row(
                    "SELECT u.username FROM devices d JOIN users u ON u.id = d.user_id WHERE d.device_id = ?1",
                    [device_id],
                    |r| r.get(0),
                )
                .optional()?;
            let owner = owner.ok_or_else(|| Error::NotFound(format!("no device {device_id}")))?;
            let now = now_ms();
            tx.execute(
                "UPDATE devices SET revoked_at_ms = ?2, revoked_by = ?3
                  WHERE device_id = ?1 AND revoked_at_ms IS NULL",
                params![device_id, now, by],
            )?;
            tx.execute(
                "UPDATE device_keys SET revoked_at_ms = ?2 WHERE device_id = ?1 AND revoked_at_ms IS NULL",
                params![device_id, now],
            )?;
            audit::append(
                &tx,
                &self.server_key,
                now,
                by,
                None,
                "device_revoked",
                device_id,
                json!({"account": owner}),
            )?;
            tx.commit()?;
        }
        self.device_info(device_id)
    }

    /// Keeps a push a revoked phone tried to make (not applied), so the office sees
    /// what it had not synced: up to [`REVOKED_PUSH_BYTES`] per phone, each kept push
    /// audited. Past the budget, pushes are neither kept nor audited again (the phone
    /// keeps its outbox; a stolen phone cannot fill the disk or the log).
    pub fn keep_revoked_push(
        &self,
        device_id: &str,
        households: usize,
        changes: usize,
        body: &[u8],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let kept: i64 = tx.query_row(
            "SELECT coalesce(sum(length(body)), 0) FROM revoked_pushes WHERE device_id = ?1",
            [device_id],
            |r| r.get(0),
        )?;
        if kept + body.len() as i64 > REVOKED_PUSH_BYTES {
            return Ok(());
        }
        let now = now_ms();
        tx.execute(
            "INSERT INTO revoked_pushes (device_id, at_ms, households, changes, body)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![device_id, now, households as i64, changes as i64, body],
        )?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            SERVER_ACTOR,
            Some(device_id),
            "push_refused_revoked",
            device_id,
            json!({"households": households, "changes": changes}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Issues a one-time enrolment code for `username`'s phone, redeemable for
    /// [`ENROLMENT_TTL_MS`]; `server_url` (and `pin`, the server key's
    /// `sha256/<base64>` pin, when it has one) go into the QR payload. Audited.
    ///
    /// Errors: [`Error::NotFound`]; [`Error::BadRequest`] when the account's role does
    /// not take a phone (office, administrator) or the account is disabled.
    pub fn issue_enrolment(
        &self,
        username: &str,
        by: &str,
        server_url: &str,
        pin: Option<&str>,
    ) -> Result<Enrolment> {
        let code = new_enrolment_code()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let user = user_row(&tx, username)?.ok_or_else(|| no_user(username))?;
        if crate::access::reach(user.role, Permission::EnrolDevice) == crate::access::Reach::No {
            return Err(Error::BadRequest(format!(
                "a {} account does not enrol phones; it signs in on the web",
                user.role.as_str()
            )));
        }
        if user.disabled {
            return Err(Error::BadRequest(format!("account {username} is disabled")));
        }
        let now = now_ms();
        let expires = now + ENROLMENT_TTL_MS;
        tx.execute(
            "INSERT INTO enrolment_codes (code_hash, user_id, issued_by, issued_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &self.lookup.mac("enrolment", &normalise_code(&code))[..],
                user.id,
                by,
                now,
                expires
            ],
        )?;
        let code_id = tx.last_insert_rowid();
        audit::append(
            &tx,
            &self.server_key,
            now,
            by,
            None,
            "enrolment_issued",
            username,
            json!({"code": code_id, "expires_at_ms": expires}),
        )?;
        tx.commit()?;
        let mut payload = json!({"doorstep_enrol": 1, "server": server_url, "code": code});
        if let Some(pin) = pin {
            payload["pin"] = json!(pin);
        }
        Ok(Enrolment {
            code,
            expires_at_ms: expires,
            qr_payload: payload.to_string(),
        })
    }

    /// Redeems an enrolment code for a phone: once, before it expires, for an enabled
    /// account. Enrols the device (a new token, any earlier token of the device
    /// replaced) and registers its evidence key. Returns the device token and the
    /// account's name (the phone records visits under it). Audited, refusals too.
    ///
    /// Errors: [`Error::Unauthorized`] for an unknown, used or expired code (one message
    /// for all); [`Error::Conflict`] when the device belongs to another account or the
    /// key to another device; [`Error::BadRequest`] for an unusable key.
    pub fn redeem_enrolment(
        &self,
        code: &str,
        device_id: DeviceId,
        device_key: &[u8; 32],
    ) -> Result<(String, String)> {
        const BAD_CODE: &str =
            "the enrolment code is wrong, used or expired; ask the office for a new one";
        let hash = self.lookup.mac("enrolment", &normalise_code(code));
        let now = now_ms();
        let token = auth::new_token();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let row: Option<CodeRow> = tx
            .query_row(
                "SELECT e.id, e.user_id, u.username, e.redeemed_at_ms, e.expires_at_ms, u.disabled_at_ms
                   FROM enrolment_codes e JOIN users u ON u.id = e.user_id WHERE e.code_hash = ?1",
                [&hash[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?;
        let refuse = |tx: Transaction<'_>, why: &str, target: &str| -> Result<(String, String)> {
            audit::append(
                &tx,
                &self.server_key,
                now,
                SERVER_ACTOR,
                Some(&device_id.to_string()),
                "enrolment_refused",
                target,
                json!({"why": why}),
            )?;
            tx.commit()?;
            Err(Error::Unauthorized(BAD_CODE))
        };
        let Some((code_id, user_id, username, redeemed, expires, disabled)) = row else {
            return refuse(tx, "unknown code", "(unknown code)");
        };
        if redeemed.is_some() {
            return refuse(tx, "code already used", &username);
        }
        if expires < now {
            return refuse(tx, "code expired", &username);
        }
        if disabled.is_some() {
            return refuse(tx, "account disabled", &username);
        }
        // The role may have changed since the code was issued: a code never enrols a
        // phone for a role that takes none.
        let role: String =
            tx.query_row("SELECT role FROM users WHERE id = ?1", [user_id], |r| {
                r.get(0)
            })?;
        if Role::parse(&role).is_none_or(|r| {
            crate::access::reach(r, Permission::EnrolDevice) == crate::access::Reach::No
        }) {
            return refuse(tx, "the account's role takes no phone", &username);
        }
        enrol_device(&tx, user_id, device_id, &token, "code", now)?;
        evidence::register_key(&tx, &device_id, device_key, now)?;
        tx.execute(
            "UPDATE enrolment_codes SET redeemed_at_ms = ?2, device_id = ?3 WHERE id = ?1",
            params![code_id, now, device_id.to_string()],
        )?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            &username,
            Some(&device_id.to_string()),
            "enrolment_redeemed",
            &username,
            json!({"code": code_id}),
        )?;
        tx.commit()?;
        Ok((token, username))
    }

    /// Signs a phone in with the account's password (the alternative to an enrolment
    /// code) and issues a new device token for `device_id`, replacing the device's
    /// earlier token. Registers `device_key`, the phone's evidence key, when given (see
    /// [`evidence::register_key`]). Audited.
    ///
    /// Errors: [`Error::Unauthorized`] for an unknown account, a wrong password or a
    /// disabled account (one message for all); [`Error::Forbidden`] for a role that
    /// takes no phone; [`Error::Conflict`] when the device is enrolled to another
    /// account, was revoked, or the key belongs to another device.
    pub fn sign_in(
        &self,
        username: &str,
        password: &str,
        device_id: DeviceId,
        device_key: Option<[u8; 32]>,
    ) -> Result<String> {
        let device = device_id.to_string();
        let user = self.check_password_audited(username, password, "phone", Some(&device))?;
        if crate::access::reach(user.role, Permission::EnrolDevice) == crate::access::Reach::No {
            return Err(Error::Forbidden(format!(
                "a {} account does not enrol phones; it signs in on the web",
                user.role.as_str()
            )));
        }
        let token = auth::new_token();
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        enrol_device(&tx, user.id, device_id, &token, "password", now)?;
        if let Some(key) = device_key {
            evidence::register_key(&tx, &device_id, &key, now)?;
        }
        audit::append(
            &tx,
            &self.server_key,
            now,
            username,
            Some(&device),
            "sign_in",
            username,
            json!({"via": "phone"}),
        )?;
        tx.commit()?;
        Ok(token)
    }

    /// The device a bearer token belongs to, with its account's role and scope as they
    /// stand now (a role change applies from the next request).
    ///
    /// Errors: [`Error::DeviceRevoked`] (with the device ID) for a revoked phone's
    /// token; [`Error::Unauthorized`] for an unknown token or a disabled account.
    pub fn authenticate(&self, token: &str) -> Result<Device> {
        let row: Option<TokenRow> = self
            .conn()
            .query_row(
                "SELECT d.device_id, u.id, u.username, u.role, u.scope, d.revoked_at_ms,
                        u.disabled_at_ms
                   FROM devices d JOIN users u ON u.id = d.user_id
                  WHERE d.token_hash = ?1",
                [auth::token_hash(token)],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .optional()?;
        let (device, user_id, username, role, scope, revoked, disabled) =
            row.ok_or(Error::Unauthorized("unknown or revoked device token"))?;
        if revoked.is_some() {
            return Err(Error::DeviceRevoked(device));
        }
        if disabled.is_some() {
            return Err(Error::Unauthorized("the account is disabled"));
        }
        let role = stored_role(&role)?;
        if crate::access::reach(role, Permission::EnrolDevice) == crate::access::Reach::No {
            // The account's role changed to one that takes no phone (office, admin): its
            // phones stop, rather than carry office powers on a token that never expires.
            return Err(Error::Unauthorized("this account's role takes no phone"));
        }
        Ok(Device {
            device_id: DeviceId::parse(&device)
                .ok_or_else(|| Error::Internal("stored device ID is not a UUID".into()))?,
            user_id,
            username,
            role,
            scope: Scope::from_json(&scope),
        })
    }

    /// Stores what a phone says it still holds unsynced (at most once a minute, with
    /// its last-sync time).
    pub fn record_outbox(&self, device: &DeviceId, outbox: &OutboxReport) -> Result<()> {
        self.conn().execute(
            "UPDATE devices SET outbox = ?2, outbox_at_ms = ?3 WHERE device_id = ?1",
            params![
                device.to_string(),
                serde_json::to_string(outbox).unwrap_or_default(),
                now_ms()
            ],
        )?;
        Ok(())
    }
}

/// Enrols `device_id` for `user_id` with a new token. A device of another account, or
/// a revoked one, is refused: a revoked phone is enrolled again only as a new device
/// (a reinstall), so its revocation cannot be undone by signing in.
fn enrol_device(
    tx: &Transaction<'_>,
    user_id: i64,
    device_id: DeviceId,
    token: &str,
    via: &str,
    now: i64,
) -> Result<()> {
    let row: Option<(i64, Option<i64>)> = tx
        .query_row(
            "SELECT user_id, revoked_at_ms FROM devices WHERE device_id = ?1",
            [device_id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        Some((owner, _)) if owner != user_id => {
            return Err(Error::Conflict(
                "this device is enrolled to another account".into(),
            ));
        }
        Some((_, Some(_))) => {
            return Err(Error::Conflict(
                "this device was revoked; reinstall the app to enrol it as a new device".into(),
            ));
        }
        _ => {}
    }
    tx.execute(
        "INSERT INTO devices (device_id, user_id, token_hash, created_at_ms, enrolled_via)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (device_id) DO UPDATE SET token_hash = excluded.token_hash",
        params![
            device_id.to_string(),
            user_id,
            auth::token_hash(token),
            now,
            via
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolment_codes_are_random_and_forgive_typing() {
        let a = new_enrolment_code().unwrap();
        let b = new_enrolment_code().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 14);
        assert!(
            a.chars()
                .all(|c| c == '-' || "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c))
        );
        assert_eq!(normalise_code("abcd-efgh-1o1l "), "ABCDEFGH1011");
    }
}
