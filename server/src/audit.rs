//! The audit log (issue 4): sign-ins, enrolments, pushes accepted and refused, reveals,
//! exports, account and role changes. Append-only (SQLite triggers refuse updates and
//! deletes), hash-chained, and each entry signed with the server's ed25519 key (the
//! evidence key, whose public half the organisation document lists on every phone), so
//! that an edit made around the triggers shows even when the chain is recomputed:
//! rewriting an entry needs the key file, not only the database.
//!
//! Entry hash: `SHA-256("doorstep-audit-v1\0" || prev_hash || JSON)`, where `JSON` is
//! the entry's fields `seq, at_ms, actor, device_id, action, target, detail` serialised
//! in that order by serde_json (compact, no spaces); `prev_hash` of the first entry is
//! 32 zero bytes. Signature: ed25519 over `"doorstep-audit-sig-v1\0" || entry_hash`.
//! An entry holds no names, phone or ID numbers: households by ID, residents by their
//! API reference, accounts by account name, and a reveal's reason as typed.

use doorstep_core::evidence::AUDIT_DOMAIN;
use doorstep_core::evidence::DeviceKey;
use ed25519_dalek::{Signature, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const DOMAIN: &[u8] = b"doorstep-audit-v1\0";

/// The `actor` of entries made by the server itself or from its command line.
pub const SERVER_ACTOR: &str = "(server)";

/// One audit entry, as exported (JSON Lines, one per line, `prev_hash` and
/// `entry_hash` as hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps.
    pub seq: i64,
    /// Server time, milliseconds since the Unix epoch (UTC).
    pub at_ms: i64,
    /// Account name, or [`SERVER_ACTOR`].
    pub actor: String,
    /// The phone, for actions a phone made.
    pub device_id: Option<String>,
    /// What happened, e.g. `sign_in`, `sign_in_refused`, `push`, `reveal`.
    pub action: String,
    /// What it happened to: an account name, a household ID, a device ID.
    pub target: String,
    /// Details, a JSON object.
    pub detail: serde_json::Value,
    /// The previous entry's hash (hex; 64 zeros for the first).
    pub prev_hash: String,
    /// This entry's hash (hex).
    pub entry_hash: String,
    /// The server key that signed it (hex, 32 bytes).
    pub server_key: String,
    /// Its ed25519 signature of the entry hash (hex, 64 bytes).
    pub signature: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    seq: i64,
    at_ms: i64,
    actor: &'a str,
    device_id: Option<&'a str>,
    action: &'a str,
    target: &'a str,
    detail: &'a serde_json::Value,
}

fn entry_hash(prev: &[u8], h: &Hashed<'_>) -> [u8; 32] {
    let json = serde_json::to_vec(h).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(prev);
    hasher.update(&json);
    hasher.finalize().into()
}

/// Appends one entry in the caller's transaction (so that it is written if and only if
/// the action is), signed with `key`. Returns its `seq`.
///
/// Errors: [`Error::Db`].
#[allow(clippy::too_many_arguments)] // one per column of the entry
pub fn append(
    conn: &Connection,
    key: &DeviceKey,
    at_ms: i64,
    actor: &str,
    device_id: Option<&str>,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<i64> {
    let last: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, vec![0u8; 32]),
    };
    let hash = entry_hash(
        &prev,
        &Hashed {
            seq,
            at_ms,
            actor,
            device_id,
            action,
            target,
            detail: &detail,
        },
    );
    let signature = key.sign_audit(&hash);
    conn.execute(
        "INSERT INTO audit_log (seq, at_ms, actor, device_id, action, target, detail, prev_hash,
                                entry_hash, server_key, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            seq,
            at_ms,
            actor,
            device_id,
            action,
            target,
            detail.to_string(),
            prev,
            &hash[..],
            &key.public()[..],
            &signature[..]
        ],
    )?;
    Ok(seq)
}

/// Entries with `seq > after`, at most `limit`, in order.
///
/// Errors: [`Error::Db`]; [`Error::Internal`] for a `detail` that is not JSON.
pub fn entries(conn: &Connection, after: i64, limit: i64) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at_ms, actor, device_id, action, target, detail, prev_hash, entry_hash,
                server_key, signature
           FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, Vec<u8>>(7)?,
            r.get::<_, Vec<u8>>(8)?,
            r.get::<_, Vec<u8>>(9)?,
            r.get::<_, Vec<u8>>(10)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at_ms, actor, device_id, action, target, detail, prev, hash, key, sig) = row?;
        out.push(AuditEntry {
            seq,
            at_ms,
            actor,
            device_id,
            action,
            target,
            detail: serde_json::from_str(&detail).map_err(|e| {
                Error::Internal(format!("audit entry {seq}: detail is not JSON: {e}"))
            })?,
            prev_hash: hex::encode(prev),
            entry_hash: hex::encode(hash),
            server_key: hex::encode(key),
            signature: hex::encode(sig),
        });
    }
    Ok(out)
}

/// Checks the whole chain: numbering from 1 without gaps, each `prev_hash` the
/// previous entry's hash, each `entry_hash` recomputed from the fields, and each
/// signature made by one of `server_keys` (the server's keys, current and earlier).
/// Returns the number of entries.
///
/// Errors: [`Error::Internal`] naming the first entry that does not hold.
pub fn verify(conn: &Connection, server_keys: &[[u8; 32]]) -> Result<i64> {
    let mut prev = vec![0u8; 32];
    let mut expected = 1i64;
    let mut after = 0i64;
    loop {
        let batch = entries(conn, after, 1024)?;
        if batch.is_empty() {
            return Ok(expected - 1);
        }
        for e in &batch {
            let broken = |what: &str| {
                Error::Internal(format!(
                    "the audit log is broken at entry {}: {what}",
                    e.seq
                ))
            };
            if e.seq != expected {
                return Err(broken(&format!("entry {expected} is missing")));
            }
            if e.prev_hash != hex::encode(&prev) {
                return Err(broken("it does not follow the entry before it"));
            }
            let h = entry_hash(
                &prev,
                &Hashed {
                    seq: e.seq,
                    at_ms: e.at_ms,
                    actor: &e.actor,
                    device_id: e.device_id.as_deref(),
                    action: &e.action,
                    target: &e.target,
                    detail: &e.detail,
                },
            );
            if e.entry_hash != hex::encode(h) {
                return Err(broken("its fields were changed after it was written"));
            }
            let signed = hex::decode(&e.server_key)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .filter(|k| server_keys.contains(k))
                .and_then(|k| VerifyingKey::from_bytes(&k).ok())
                .zip(
                    hex::decode(&e.signature)
                        .ok()
                        .and_then(|s| Signature::from_slice(&s).ok()),
                )
                .is_some_and(|(k, sig)| {
                    k.verify_strict(&[AUDIT_DOMAIN, &h[..]].concat(), &sig)
                        .is_ok()
                });
            if !signed {
                return Err(broken(
                    "its signature is not the server's: it was rewritten without the key",
                ));
            }
            prev = h.to_vec();
            expected += 1;
            after = e.seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
             CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT, password_hash TEXT,
                 scope_kind TEXT, scope TEXT, created_at_ms INTEGER, disabled INTEGER);
             CREATE TABLE devices (device_id TEXT);
             CREATE TABLE residents (id_number TEXT);",
        )
        .unwrap();
        conn.execute_batch(include_str!("db/0003_access.sql"))
            .unwrap();
        conn
    }

    #[test]
    fn the_chain_holds_and_any_edit_shows() {
        let conn = db();
        let key = DeviceKey::from_seed(&[9; 32]);
        let keys = [key.public()];
        for i in 0..5 {
            let detail = json!({"reason": "回访"});
            append(
                &conn,
                &key,
                1000 + i,
                "office1",
                None,
                "reveal",
                "hh",
                detail,
            )
            .unwrap();
        }
        assert_eq!(verify(&conn, &keys).unwrap(), 5);
        // The triggers refuse edits ...
        let update = conn.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 2", []);
        assert!(update.is_err());
        assert!(
            conn.execute("DELETE FROM audit_log WHERE seq = 5", [])
                .is_err()
        );
        // ... and an edit made around them is found.
        let drop = "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;";
        conn.execute_batch(drop).unwrap();
        let edit = "UPDATE audit_log SET detail = '{\"reason\":\"x\"}' WHERE seq = 3";
        conn.execute(edit, []).unwrap();
        let e = verify(&conn, &keys).unwrap_err().to_string();
        assert!(e.contains("entry 3"), "{e}");
        conn.execute("DELETE FROM audit_log WHERE seq = 3", [])
            .unwrap();
        let e = verify(&conn, &keys).unwrap_err().to_string();
        assert!(e.contains("entry 4"), "{e}");
    }

    #[test]
    fn a_chain_recomputed_without_the_key_is_caught() {
        let conn = db();
        let key = DeviceKey::from_seed(&[9; 32]);
        let forger = DeviceKey::from_seed(&[10; 32]);
        for i in 0..3 {
            append(&conn, &key, i, "office1", None, "review", "hh", json!({})).unwrap();
        }
        // Someone with the database but not the key file rewrites entry 2 and every
        // hash after it, signing with a key of their own.
        let drop = "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;";
        conn.execute_batch(drop).unwrap();
        conn.execute("DELETE FROM audit_log WHERE seq >= 2", [])
            .unwrap();
        append(
            &conn,
            &forger,
            1,
            "worker2",
            None,
            "review",
            "hh",
            json!({}),
        )
        .unwrap();
        append(
            &conn,
            &forger,
            2,
            "office1",
            None,
            "review",
            "hh",
            json!({}),
        )
        .unwrap();
        let e = verify(&conn, &[key.public()]).unwrap_err().to_string();
        assert!(e.contains("entry 2") && e.contains("signature"), "{e}");
    }
}
