//! The server's storage: an embedded SQLite database (the change log, documents,
//! accounts, projections) and a blob folder, in one data folder. One connection behind
//! a mutex is the one writer; callers run it off the async runtime.
//!
//! Data folder layout: `doorstep.db` (+ `-wal`, `-shm`) and `blobs/ab/abcdef...` (each
//! blob named by its SHA-256, written to a temporary file, synced and renamed).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use std::collections::{BTreeSet, HashSet};

use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};
use doorstep_core::evidence::DeviceKey;
use doorstep_core::model::{
    self, DeviceId, EvidenceKind, Household, HouseholdId, Organisation, TemplateVersion,
};
use doorstep_core::protocol::{
    BlobQuery, BlobQueryResponse, PROTOCOL_VERSION, RejectedChange, SyncRequest, SyncResponse,
};
use doorstep_core::store::now_ms;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::access::{self, Principal};
use crate::auth::LookupKey;
use crate::error::{Error, Result};

pub mod accounts;
pub mod bulletin;
pub mod evidence;
mod holdings;
pub mod office;
pub mod pages;
pub mod people;

const MIGRATIONS: &[&str] = &[
    include_str!("db/0001_init.sql"),
    include_str!("db/0002_evidence.sql"),
    include_str!("db/0003_access.sql"),
    include_str!("db/0004_holdings.sql"),
    include_str!("db/0005_office.sql"),
    include_str!("db/0006_bulletin.sql"),
];

/// `PRAGMA application_id` of a server database ("DSSV"), set by the first migration.
pub const APPLICATION_ID: i32 = 0x4453_5356;

/// Largest single change accepted (1 MiB). A visit's change is about 0.5 KB; the phone
/// bounds every field it writes, so only a broken or hostile client comes near this.
pub const MAX_CHANGE_BYTES: usize = 1 << 20;

/// Bytes of refused changes kept per phone (16 MiB); past it, only their hashes and
/// reasons, so that a hostile phone cannot fill the disk with changes it knows will be
/// refused.
pub const REFUSED_BYTES_PER_DEVICE: i64 = 16 << 20;
/// Refused changes kept per phone (10,000); past it the refusal is answered and not
/// kept. An honest phone is refused a handful in its life.
pub const REFUSED_ROWS_PER_DEVICE: i64 = 10_000;

/// Bound on the bytes of document updates in one pull page (2 MiB).
pub const PAGE_BYTES: usize = 2 << 20;
/// Bound on change-log rows read for one pull page.
pub(crate) const PAGE_ROWS: i64 = 20_000;

pub use crate::access::{GridRef, Role, Scope};

/// An authenticated phone.
#[derive(Debug, Clone)]
pub struct Device {
    /// The device (and its Automerge actor).
    pub device_id: DeviceId,
    /// Its account's row ID.
    pub user_id: i64,
    /// Its account.
    pub username: String,
    /// The account's role.
    pub role: Role,
    /// What the account may see and write.
    pub scope: Scope,
}

impl Device {
    /// The account behind the device, for permission checks.
    pub fn principal(&self) -> Principal {
        Principal {
            user_id: self.user_id,
            username: self.username.clone(),
            role: self.role,
            scope: self.scope.clone(),
        }
    }
}

/// What the server holds, for the demo's summary and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Household documents.
    pub households: u64,
    /// Residents across them.
    pub residents: u64,
    /// Visits across them.
    pub visits: u64,
    /// Photo references across visits.
    pub photos: u64,
    /// Photo references whose blob has arrived.
    pub photos_received: u64,
    /// Fields with concurrent values across households.
    pub conflicts: u64,
    /// Entries in the change log.
    pub changes: u64,
    /// Entries in the evidence log (signed notices and pledges received).
    pub evidence: u64,
}

/// Outcome of a roster import into the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Households created now.
    pub created: usize,
    /// Households that already existed (the same roster imported before).
    pub existing: usize,
    /// Residents added to households that already existed (rows new or corrected since
    /// the last import); residents already present are left as the field keeps them.
    pub residents_added: usize,
}

/// The server's database and blob folder.
#[derive(Debug)]
pub struct ServerDb {
    conn: Mutex<Connection>,
    page_bytes: usize,
    blob_dir: PathBuf,
    actor: ActorId,
    server_key: DeviceKey,
    lookup: LookupKey,
    organisation: Uuid,
}

impl ServerDb {
    /// Opens (creating when absent) the data folder `dir`.
    ///
    /// Errors: [`Error::Io`] when the folder cannot be created; [`Error::Db`] when the
    /// database cannot be opened or migrated.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("blobs")).map_err(|e| {
            Error::Internal(format!(
                "cannot create the data folder {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("doorstep.db");
        let in_file = |e: rusqlite::Error| {
            Error::Internal(format!("cannot open the database {}: {e}", path.display()))
        };
        let mut conn = Connection::open(&path).map_err(in_file)?;
        let app: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(in_file)?;
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(in_file)?;
        if !(app == APPLICATION_ID || (app == 0 && tables == 0)) {
            return Err(Error::Internal(format!(
                "{} is a SQLite database, but not a Doorstep server's",
                path.display()
            )));
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(in_file)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(Error::Internal(format!(
                "the data folder has schema version {version}, newer than this build"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        let actor = match conn
            .query_row("SELECT value FROM meta WHERE key = 'actor'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
        {
            Some(hex) => {
                ActorId::from(hex::decode(hex).map_err(|e| Error::Internal(e.to_string()))?)
            }
            None => {
                let actor = ActorId::random();
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('actor', ?1)",
                    [actor.to_hex_string()],
                )?;
                actor
            }
        };
        let had_key = dir.join(evidence::SERVER_KEY_FILE).exists();
        let server_key = evidence::load_or_create_server_key(dir)?;
        let logged: i64 = conn.query_row("SELECT count(*) FROM evidence_log", [], |r| r.get(0))?;
        if !had_key && logged > 0 {
            tracing::warn!(
                entries = logged,
                "the evidence key file was missing, so a new key was made and listed beside the old one; receipts from now on are countersigned with it (restore the old file if it was lost by mistake)"
            );
        }
        let had_lookup = dir.join(crate::auth::LOOKUP_KEY_FILE).exists();
        let lookup = LookupKey::load_or_create(dir)?;
        if !had_lookup {
            // A new key: lookups made under a lost one would find nobody, so the
            // projections are rebuilt under this one.
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('reproject_households', '1')
                 ON CONFLICT (key) DO UPDATE SET value = '1'",
                [],
            )?;
        }
        let organisation = ensure_organisation(&mut conn, &actor, &server_key)?;
        upgrade_households(&mut conn, &actor, &lookup)?;
        Ok(Self {
            conn: Mutex::new(conn),
            page_bytes: PAGE_BYTES,
            blob_dir: dir.join("blobs"),
            actor,
            server_key,
            lookup,
            organisation,
        })
    }

    /// The public half of the key the server countersigns evidence with (32 bytes).
    pub fn server_public_key(&self) -> [u8; 32] {
        self.server_key.public()
    }

    /// The organisation document's content: templates and server keys.
    pub fn organisation(&self) -> Result<Organisation> {
        let conn = self.conn();
        read_organisation(&conn, self.organisation)
    }

    /// Publishes a new version of a notice or pledge template (creating the template when
    /// new): the next version number, in force from `effective_from` (`YYYY-MM-DD`, town
    /// time). Phones receive it at their next sync; versions are never overwritten, so
    /// every signed record keeps pointing at the text it was signed under.
    ///
    /// Errors: [`Error::BadRequest`] for a field out of bounds (see
    /// [`evidence::check_template`]) or a template of the other kind.
    pub fn publish_template(
        &self,
        template_id: &str,
        kind: EvidenceKind,
        title: &str,
        body: &str,
        effective_from: &str,
    ) -> Result<TemplateVersion> {
        let (title, body) = (title.trim(), body.trim());
        evidence::check_template(template_id, title, body, effective_from)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let org = read_organisation(&tx, self.organisation)?;
        let next = org
            .templates
            .get(template_id)
            .and_then(|t| t.versions.values().map(|v| v.version).max())
            .unwrap_or(0)
            + 1;
        let version = evidence::template_version(title, body, next, effective_from);
        let now = now_ms();
        let mut doc = load_doc(&tx, self.organisation)?.with_actor(self.actor.clone());
        let before = doc.get_heads();
        model::add_template_version(&mut doc, template_id, kind, &version, now)
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        store_server_changes(&tx, self.organisation, &doc, &before, now)?;
        tx.commit()?;
        Ok(version)
    }

    /// Bounds the document bytes of one pull page (default [`PAGE_BYTES`]); at least one
    /// update is always sent. Small pages exercise paging in tests.
    pub fn set_page_bytes(&mut self, bytes: usize) {
        self.page_bytes = bytes;
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll
        // back), so a poisoned lock is safe to take over.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates household documents written by the server's own actor, one change each,
    /// in one transaction. For a household that already exists (a roster imported
    /// again, perhaps corrected), only residents it does not hold yet are added; nothing
    /// the phones or the office changed is overwritten.
    pub fn import_households(&self, households: &[Household]) -> Result<ImportOutcome> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut outcome = ImportOutcome::default();
        let now = now_ms();
        for h in households {
            let id = Uuid::parse_str(&h.id)
                .map_err(|_| Error::BadRequest(format!("household ID {} is not a UUID", h.id)))?;
            let exists: bool = tx
                .query_row(
                    "SELECT 1 FROM documents WHERE doc_id = ?1",
                    [&id.as_bytes()[..]],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if exists {
                outcome.existing += 1;
                outcome.residents_added +=
                    add_missing_residents(&tx, id, h, &self.actor, &self.lookup, now)?;
                continue;
            }
            let mut doc = model::new_household_doc(h, self.actor.clone(), now)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let changes: Vec<Change> = doc.get_changes(&[]).into_iter().collect();
            let seqs = append_changes(&tx, id, &changes, None, now)?;
            let seq = seqs.iter().copied().max().unwrap_or(0);
            tx.execute(
                "INSERT INTO documents (doc_id, kind, village, grid, bytes, first_seq, last_seq, updated_at_ms)
                 VALUES (?1, 'household', ?2, ?3, ?4, ?5, ?5, ?6)",
                params![&id.as_bytes()[..], h.village, h.grid, doc.save(), seq, now],
            )?;
            project_household(&tx, &self.lookup, id, &mut doc, now)?;
            outcome.created += 1;
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// Moves a household to the grid `grid` of the village `village` (names trimmed):
    /// writes both root fields of its document with the server's actor, updates the
    /// document's place and its projection, and appends a `household_moved` audit entry
    /// by `by` naming where from and where to, all in one transaction. At their next
    /// sync, phones whose scope now covers it receive it whole; phones that held it are
    /// told to remove it, and their changes to it are still taken until they have
    /// (ADR 0008). Moving a household to where it already is changes nothing and
    /// audits nothing. Who may move is the caller's check
    /// ([`crate::access::Permission::MoveHousehold`]).
    ///
    /// Errors: [`Error::NotFound`] for an unknown household; [`Error::BadRequest`] for an
    /// empty village or grid, or one over 100 characters.
    pub fn move_household(
        &self,
        id: HouseholdId,
        village: &str,
        grid: &str,
        by: &str,
    ) -> Result<()> {
        let (village, grid) = (village.trim(), grid.trim());
        for (what, name) in [("village", village), ("grid", grid)] {
            if name.is_empty() || name.chars().count() > 100 {
                return Err(Error::BadRequest(format!(
                    "the {what} must be 1 to 100 characters"
                )));
            }
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let place: Option<(String, String)> = tx
            .query_row(
                "SELECT village, grid FROM documents WHERE doc_id = ?1 AND kind = 'household'",
                [&id.0.as_bytes()[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((from_village, from_grid)) = place else {
            return Err(Error::NotFound(format!("no household {id}")));
        };
        if from_village == village && from_grid == grid {
            return Ok(());
        }
        let now = now_ms();
        let mut doc = load_doc(&tx, id.0)?.with_actor(self.actor.clone());
        let before = doc.get_heads();
        model::set_place(&mut doc, village, grid, now)
            .map_err(|e| Error::Internal(e.to_string()))?;
        store_server_changes(&tx, id.0, &doc, &before, now)?;
        // The documents row's place is what scopes read; changing it counts as a
        // placement (a trigger), so every phone compares its holdings at its next pull.
        tx.execute(
            "UPDATE documents SET village = ?2, grid = ?3 WHERE doc_id = ?1",
            params![&id.0.as_bytes()[..], village, grid],
        )?;
        project_household(&tx, &self.lookup, id.0, &mut doc, now)?;
        crate::audit::append(
            &tx,
            &self.server_key,
            now,
            by,
            None,
            "household_moved",
            &id.to_string(),
            serde_json::json!({
                "from": {"village": from_village, "grid": from_grid},
                "to": {"village": village, "grid": grid},
            }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The grids and villages of `scope` that hold no household yet, as `village` or
    /// `village/grid`, so that a misspelt scope can be pointed out. Units hold no
    /// households and are not listed.
    pub fn empty_scope_parts(&self, scope: &Scope) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut out = Vec::new();
        if scope.town {
            return Ok(out);
        }
        let mut stmt = conn.prepare_cached("SELECT 1 FROM documents WHERE village = ?1")?;
        for village in &scope.villages {
            if !stmt.exists([village])? {
                out.push(village.clone());
            }
        }
        let mut stmt =
            conn.prepare_cached("SELECT 1 FROM documents WHERE village = ?1 AND grid = ?2")?;
        for r in &scope.grids {
            if !stmt.exists([&r.village, &r.grid])? {
                out.push(format!("{}/{}", r.village, r.grid));
            }
        }
        Ok(out)
    }

    /// One sync exchange (DESIGN.md section 4): takes in what the phone says it holds
    /// (the answers it applied, the documents it dropped), stores the accepted pushed
    /// changes, acknowledges them by hash, refuses the others with a reason, and answers
    /// one page of document updates after the request's cursor within the device's
    /// reach, with households that moved into it whole and those that moved out as
    /// removed (ADR 0008). Idempotent: the same request twice stores nothing twice.
    ///
    /// Errors: [`Error::BadRequest`] for another protocol version; [`Error::Db`].
    pub fn sync(&self, device: &Device, req: &SyncRequest) -> Result<SyncResponse> {
        if req.v != PROTOCOL_VERSION {
            return Err(Error::BadRequest(format!(
                "protocol version {} is not supported; this server speaks {}",
                req.v, PROTOCOL_VERSION
            )));
        }
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        holdings::settle(&tx, &device.device_id, req.delivered, &req.dropped)?;
        let mut resp = SyncResponse::default();
        let mut push = Push {
            tx: &tx,
            device,
            now,
            server: self,
            organisation: None,
            seen: evidence::SeenInPush::default(),
            refused_budget: None,
        };
        for doc_changes in &req.push {
            push.doc(doc_changes.doc, &doc_changes.changes, &mut resp)?;
        }
        if !req.push.is_empty() {
            // One audit entry per push: how much was accepted and refused, and why
            // (reasons name paths and roles, never values).
            let pushed: usize = req.push.iter().map(|d| d.changes.len()).sum();
            let mut reasons: Vec<&str> = resp.rejected.iter().map(|r| r.reason.as_str()).collect();
            reasons.sort_unstable();
            reasons.dedup();
            reasons.truncate(8);
            let action = if resp.rejected.is_empty() {
                "push"
            } else {
                "push_refused_in_part"
            };
            crate::audit::append(
                &tx,
                &self.server_key,
                now,
                &device.username,
                Some(&device.device_id.to_string()),
                action,
                "sync",
                serde_json::json!({
                    "households": req.push.len(),
                    "changes": pushed,
                    "accepted": resp.acked.len(),
                    "refused": resp.rejected.len(),
                    "reasons": reasons,
                }),
            )?;
        }
        let outbox = req.outbox.or(req
            .delivered
            .map(|_| doorstep_core::protocol::OutboxSummary::default()));
        if let Some(outbox) = &outbox {
            let report = serde_json::to_string(&accounts::OutboxReport {
                changes: outbox.changes,
                households: outbox.households,
                blobs: outbox.blobs,
            })
            .unwrap_or_default();
            tx.execute(
                "UPDATE devices SET outbox = ?2, outbox_at_ms = ?3
                  WHERE device_id = ?1 AND (outbox IS NOT ?2 OR outbox_at_ms < ?3 - 60000)",
                params![device.device_id.to_string(), report, now],
            )?;
        }
        // Recorded at most once a minute, so that polling phones cost no disk writes.
        tx.execute(
            "UPDATE devices SET last_sync_ms = ?1
              WHERE device_id = ?2 AND (last_sync_ms IS NULL OR last_sync_ms < ?1 - 60000)",
            params![now, device.device_id.to_string()],
        )?;
        holdings::pull_page(&tx, device, req, self.page_bytes, &mut resp)?;
        tx.commit()?;
        Ok(resp)
    }

    /// Which of the queried blobs the server lacks.
    ///
    /// Errors: [`Error::BadRequest`] when a hash is not 64 lowercase hex digits or the
    /// query names more than 10,000.
    pub fn missing_blobs(&self, query: &BlobQuery) -> Result<BlobQueryResponse> {
        if query.sha256.len() > 10_000 {
            return Err(Error::BadRequest("at most 10,000 hashes per query".into()));
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT 1 FROM blobs WHERE sha256 = ?1")?;
        let mut missing = Vec::new();
        for h in &query.sha256 {
            check_sha256(h)?;
            if !stmt.exists([h])? {
                missing.push(h.clone());
            }
        }
        Ok(BlobQueryResponse { missing })
    }

    /// Stores a blob after checking that `bytes` hash to `sha256`. Storing one that is
    /// already held changes nothing.
    ///
    /// Errors: [`Error::BadRequest`] for a malformed address; [`Error::HashMismatch`];
    /// [`Error::Io`] when the folder cannot be written (a full disk).
    pub fn put_blob(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        check_sha256(sha256)?;
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != sha256 {
            return Err(Error::HashMismatch { actual });
        }
        let path = self.blob_path(sha256);
        if !path.exists() {
            let dir = path.parent().unwrap_or(&self.blob_dir);
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            tmp.write_all(bytes)?;
            tmp.as_file().sync_all()?;
            tmp.persist(&path).map_err(|e| Error::Io(e.error))?;
        }
        self.conn().execute(
            "INSERT OR IGNORE INTO blobs (sha256, size, received_at_ms) VALUES (?1, ?2, ?3)",
            params![sha256, bytes.len() as i64, now_ms()],
        )?;
        Ok(())
    }

    /// Where a blob lives in the data folder.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.blob_dir
            .join(&sha256[..2.min(sha256.len())])
            .join(sha256)
    }

    /// Reads a stored blob, `None` when not held.
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        check_sha256(sha256)?;
        match std::fs::read(self.blob_path(sha256)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Counts of what the server holds.
    pub fn totals(&self) -> Result<Totals> {
        let conn = self.conn();
        let n = |sql: &str| -> Result<u64> {
            Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
        };
        Ok(Totals {
            households: n("SELECT count(*) FROM households")?,
            residents: n("SELECT count(*) FROM residents")?,
            visits: n("SELECT count(*) FROM visits")?,
            photos: n("SELECT count(*) FROM visit_photos")?,
            photos_received: n(
                "SELECT count(*) FROM visit_photos p JOIN blobs b ON b.sha256 = p.sha256",
            )?,
            conflicts: n("SELECT coalesce(sum(conflicts), 0) FROM households")?,
            changes: n("SELECT count(*) FROM change_log")?,
            evidence: n("SELECT count(*) FROM evidence_log")?,
        })
    }

    /// The household's document as the server holds it.
    pub fn household_doc(&self, id: HouseholdId) -> Result<Option<Automerge>> {
        let bytes: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT bytes FROM documents WHERE doc_id = ?1",
                [&id.0.as_bytes()[..]],
                |r| r.get(0),
            )
            .optional()?;
        bytes
            .map(|b| Automerge::load(&b).map_err(|e| Error::Internal(e.to_string())))
            .transpose()
    }

    /// Heads of every document, sorted, for comparing replicas.
    pub fn document_heads(&self) -> Result<HashMap<Uuid, Vec<automerge::ChangeHash>>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT doc_id, bytes FROM documents")?;
        let mut rows = stmt.query([])?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next()? {
            let id = Uuid::from_slice(&r.get::<_, Vec<u8>>(0)?).unwrap_or(Uuid::nil());
            let doc = Automerge::load(&r.get::<_, Vec<u8>>(1)?)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let mut heads = doc.get_heads();
            heads.sort();
            out.insert(id, heads);
        }
        Ok(out)
    }

    /// Visit IDs per household as projected, for checking that each arrived once.
    pub fn visit_ids(&self) -> Result<Vec<(HouseholdId, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT doc_id, visit_id FROM visits ORDER BY visit_id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                HouseholdId(Uuid::from_slice(&r.get::<_, Vec<u8>>(0)?).unwrap_or(Uuid::nil())),
                r.get(1)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Photo blob addresses referenced by visits.
    pub fn photo_hashes(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT sha256 FROM visit_photos ORDER BY 1")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn add_missing_residents(
    tx: &Transaction<'_>,
    id: Uuid,
    h: &Household,
    actor: &ActorId,
    lookup: &LookupKey,
    now: i64,
) -> Result<usize> {
    let bytes: Vec<u8> = tx.query_row(
        "SELECT bytes FROM documents WHERE doc_id = ?1",
        [&id.as_bytes()[..]],
        |r| r.get(0),
    )?;
    let mut doc = Automerge::load(&bytes)
        .map_err(|e| Error::Internal(e.to_string()))?
        .with_actor(actor.clone());
    let heads = doc.get_heads();
    let added = model::add_residents(&mut doc, &h.residents, now)
        .map_err(|e| Error::Internal(e.to_string()))?;
    if added > 0 {
        store_server_changes(tx, id, &doc, &heads, now)?;
        project_household(tx, lookup, id, &mut doc, now)?;
    }
    Ok(added)
}

fn check_sha256(h: &str) -> Result<()> {
    if h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Error::BadRequest(
            "a blob address must be 64 lowercase hex digits (SHA-256)".into(),
        ))
    }
}

fn append_changes(
    tx: &Transaction<'_>,
    doc: Uuid,
    changes: &[Change],
    device: Option<&DeviceId>,
    now: i64,
) -> Result<Vec<i64>> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO change_log (doc_id, hash, actor, bytes, device_id, received_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut seqs = Vec::with_capacity(changes.len());
    for c in changes {
        stmt.execute(params![
            &doc.as_bytes()[..],
            &c.hash().0[..],
            c.actor_id().to_bytes(),
            c.raw_bytes(),
            device.map(|d| d.to_string()),
            now
        ])?;
        seqs.push(tx.last_insert_rowid());
    }
    Ok(seqs)
}

fn refuse(resp: &mut SyncResponse, hash: Vec<u8>, reason: &str) {
    resp.rejected.push(RejectedChange {
        hash: ByteBuf::from(hash),
        reason: reason.to_string(),
    });
}

/// One sync request's push, document by document, in one transaction.
struct Push<'a> {
    tx: &'a Transaction<'a>,
    device: &'a Device,
    now: i64,
    server: &'a ServerDb,
    /// Read once per push, when a record needs its templates.
    organisation: Option<Organisation>,
    /// Evidence record IDs and counters accepted earlier in this push.
    seen: evidence::SeenInPush,
    /// Bytes and rows of refused changes this device may still have kept (read at the
    /// first refusal).
    refused_budget: Option<(i64, i64)>,
}

impl Push<'_> {
    /// Checks, applies and stores the changes pushed for one document. Each change is
    /// taken on its own, in the order sent: refused (with the reason, kept in
    /// `refused_changes`) when the document is unknown or out of scope, the change is
    /// not a valid Automerge change, is over 1 MiB, was made by another device, builds on
    /// a refused change, touches what no phone may write, or carries an evidence record
    /// that does not verify; acknowledged when stored or already held; left unanswered
    /// (sent again next time) when its dependencies have not arrived.
    fn doc(&mut self, doc_id: Uuid, raw: &[ByteBuf], resp: &mut SyncResponse) -> Result<()> {
        let tx = self.tx;
        let parsed: Vec<(Vec<u8>, &ByteBuf, Option<Change>)> = raw
            .iter()
            .map(|b| {
                let c = Change::from_bytes(b.to_vec()).ok();
                let hash = c
                    .as_ref()
                    .map(|c| c.hash().0.to_vec())
                    .unwrap_or_else(|| Sha256::digest(b).to_vec());
                (hash, b, c)
            })
            .collect();
        let row: Option<(Vec<u8>, String, String, String)> = tx
            .query_row(
                "SELECT bytes, kind, village, grid FROM documents WHERE doc_id = ?1",
                [&doc_id.as_bytes()[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let refuse_all = |this: &mut Self, resp: &mut SyncResponse, reason: &str| -> Result<()> {
            for (hash, bytes, _) in &parsed {
                this.refuse(resp, doc_id, hash, bytes, reason)?;
            }
            Ok(())
        };
        // One answer for unknown and out of scope, so that pushes cannot probe which
        // households exist (their IDs derive from village, door number and head).
        const NOT_YOURS: &str =
            "the household is not known to the server or outside this account's scope";
        let Some((bytes, kind, village, grid)) = row else {
            return refuse_all(self, resp, NOT_YOURS);
        };
        if kind == "directive" {
            return self.directive_doc(doc_id, &bytes, &parsed, resp);
        }
        if kind != "household" {
            return refuse_all(
                self,
                resp,
                "the organisation record is written by the office only",
            );
        }
        // A household this phone holds stays writable after it left the account's scope
        // (moved to another grid, or the scope changed), until the phone reports it
        // dropped: a visit recorded offline before the phone learnt of the move is kept.
        let in_scope = self.device.scope.covers(&village, &grid);
        if !in_scope && !holdings::held(tx, &self.device.device_id, doc_id)? {
            return refuse_all(self, resp, NOT_YOURS);
        }
        let principal = self.device.principal();
        let mut doc = Automerge::load(&bytes).map_err(|e| Error::Internal(e.to_string()))?;
        let actor = self.device.device_id.actor();
        let mut protected = evidence::Protected::of(&doc);
        // Visits already completed before this push (some from before signed evidence):
        // the completeness rule applies to those this push completes.
        let household_before = model::read_household(&doc).ok();
        let completed_before: HashSet<String> = household_before
            .iter()
            .flat_map(|h| &h.visits)
            .filter(|(_, v)| v.outcome == Some(model::VisitOutcome::Completed))
            .map(|(id, _)| id.clone())
            .collect();
        let mut accepted: Vec<Change> = Vec::new();
        let mut records = Vec::new();
        let mut refused_here: HashSet<ChangeHash> = HashSet::new();
        for (hash, raw_bytes, change) in &parsed {
            let Some(change) = change else {
                self.refuse(
                    resp,
                    doc_id,
                    hash,
                    raw_bytes,
                    "not a valid Automerge change",
                )?;
                continue;
            };
            if change.raw_bytes().len() > MAX_CHANGE_BYTES {
                self.refuse(
                    resp,
                    doc_id,
                    hash,
                    raw_bytes,
                    "the change is larger than 1 MiB",
                )?;
                continue;
            }
            if change.actor_id() != &actor {
                self.refuse(
                    resp,
                    doc_id,
                    hash,
                    raw_bytes,
                    "the change was made by another device",
                )?;
                continue;
            }
            if doc.get_change_by_hash(&change.hash()).is_some() {
                resp.acked.push(ByteBuf::from(hash.clone()));
                continue;
            }
            let missing: Vec<&ChangeHash> = change
                .deps()
                .iter()
                .filter(|d| doc.get_change_by_hash(d).is_none())
                .collect();
            if !missing.is_empty() {
                let refused_dep = missing.iter().any(|d| refused_here.contains(*d))
                    || self.was_refused(missing.iter().copied())?;
                if refused_dep {
                    self.refuse(
                        resp,
                        doc_id,
                        hash,
                        raw_bytes,
                        "it builds on a change that was refused",
                    )?;
                    refused_here.insert(change.hash());
                }
                // Otherwise its dependencies have not arrived: neither acknowledged nor
                // refused, the phone sends it again.
                continue;
            }
            // automerge 0.12 panics on some malformed changes (a `pred` naming an op of
            // another object, a list key in a map); such a change is refused, not
            // allowed to fail the whole request.
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                protected.check(change, &self.device.device_id)
            }))
            .unwrap_or_else(|_| Err("the change is malformed".into()));
            let created = match checked {
                Ok(created) => created,
                Err(reason) => {
                    self.refuse(resp, doc_id, hash, raw_bytes, &reason)?;
                    refused_here.insert(change.hash());
                    continue;
                }
            };
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut trial = doc.fork();
                let ok = trial.apply_changes([change.clone()]).is_ok()
                    && trial.get_change_by_hash(&change.hash()).is_some();
                ok.then_some(trial)
            }))
            .ok()
            .flatten();
            let Some(trial) = applied else {
                self.refuse(
                    resp,
                    doc_id,
                    hash,
                    raw_bytes,
                    "the change could not be applied",
                )?;
                refused_here.insert(change.hash());
                continue;
            };
            // The role's write rules, by changed path (DESIGN.md section 6): every
            // path the change touches must be one the permission table lets this
            // account write in this household, and a visit it creates must be its own.
            let allowed =
                paths_allowed(&doc, &trial, change, &principal, &village, &grid, in_scope)
                    .and_then(|()| new_visits_are_own(&doc, &trial, self.device));
            if let Err(reason) = allowed {
                self.refuse(resp, doc_id, hash, raw_bytes, &reason)?;
                refused_here.insert(change.hash());
                continue;
            }
            let mut new_record = None;
            if let Some(key) = &created {
                if self.organisation.is_none() {
                    self.organisation = Some(read_organisation(tx, self.server.organisation)?);
                }
                let org = self.organisation.as_ref().expect("read just above");
                match evidence::check_new_entry(
                    tx,
                    &trial,
                    doc_id,
                    key,
                    &self.device.device_id,
                    org,
                    &self.seen,
                )? {
                    Ok(found) => new_record = Some(found),
                    Err(reason) => {
                        self.refuse(resp, doc_id, hash, raw_bytes, &reason)?;
                        refused_here.insert(change.hash());
                        continue;
                    }
                }
            }
            protected.protect_new_visits(&doc, &trial);
            doc = trial;
            if let Some((record, entry)) = new_record {
                protected.protect_entry(&doc, &record.id.to_string());
                self.seen.ids.insert(record.id);
                self.seen.counters.insert(record.counter);
                records.push((record, entry));
            }
            accepted.push(change.clone());
        }
        if accepted.is_empty() {
            return Ok(());
        }
        // A push that leaves the household unreadable (a visit written as a number) or
        // unloadable would stop its projections, its review and the evidence check for
        // everyone. Checked once per document and push, so honest pushes pay one
        // hydration; a push that fails it is refused whole for this household (only a
        // tampered app writes such changes).
        // The same once-per-push look enforces the campaign's rule that a completed
        // visit has a signed notice or pledge and a photo, as the phone's core does.
        let problem = match model::read_household(&doc) {
            Err(_) => Some("the changes of this push leave the household's record unreadable"),
            Ok(h) if !completed_visits_are_complete(&h, &completed_before) => {
                Some("a visit completed in this push lacks a signed notice or pledge, or a photo")
            }
            Ok(h) if !new_fixes_are_own(household_before.as_ref(), &h, self.device) => Some(
                "a rectification fix names another person or phone, no task of the household, or no completed visit of this account",
            ),
            Ok(h) if !new_calls_are_own(household_before.as_ref(), &h, self.device) => Some(
                "a follow-up call names another person, breaks the call's rules, or changes a call already made",
            ),
            Ok(_) => {
                let loads = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Automerge::load(&doc.save()).is_ok()
                }))
                .unwrap_or(false);
                (!loads)
                    .then_some("the changes of this push leave the household's record unreadable")
            }
        };
        if let Some(reason) = problem {
            for c in &accepted {
                let hash = c.hash().0.to_vec();
                self.refuse(resp, doc_id, &hash, c.raw_bytes(), reason)?;
            }
            for (r, _) in &records {
                self.seen.ids.remove(&r.id);
                self.seen.counters.remove(&r.counter);
            }
            return Ok(());
        }
        let heads_before_receipts = doc.get_heads();
        append_changes(
            tx,
            doc_id,
            &accepted,
            Some(&self.device.device_id),
            self.now,
        )?;
        resp.acked
            .extend(accepted.iter().map(|c| ByteBuf::from(c.hash().0.to_vec())));
        if !records.is_empty() {
            let receipts =
                evidence::append_to_log(tx, &self.server.server_key, &records, self.now)?;
            doc = doc.with_actor(self.server.actor.clone());
            for (id, receipt) in &receipts {
                model::add_receipt(&mut doc, *id, receipt, self.now)
                    .map_err(|e| Error::Internal(e.to_string()))?;
            }
            let receipt_changes: Vec<Change> = doc
                .get_changes(&heads_before_receipts)
                .into_iter()
                .collect();
            append_changes(tx, doc_id, &receipt_changes, None, self.now)?;
        }
        // Follow-up calls that found the visit denied or not understood flag it and
        // open a rectification task, in the server's name.
        let mut doc = doc.with_actor(self.server.actor.clone());
        let flags = office::after_household_push(&mut doc, household_before.as_ref(), self.now)?;
        append_changes(tx, doc_id, &flags, None, self.now)?;
        tx.execute(
            "UPDATE documents SET bytes = ?2,
                 last_seq = (SELECT max(seq) FROM change_log WHERE doc_id = ?1), updated_at_ms = ?3
               WHERE doc_id = ?1",
            params![&doc_id.as_bytes()[..], doc.save(), self.now],
        )?;
        project_household(tx, &self.server.lookup, doc_id, &mut doc, self.now)
    }

    fn refuse(
        &mut self,
        resp: &mut SyncResponse,
        doc_id: Uuid,
        hash: &[u8],
        bytes: &[u8],
        reason: &str,
    ) -> Result<()> {
        // The bytes are kept for the office to inspect, up to a budget per phone; past
        // it only the hash and reason (the phone keeps the change itself).
        refuse(resp, hash.to_vec(), reason);
        if self.refused_budget.is_none() {
            let (used, rows): (i64, i64) = self.tx.query_row(
                "SELECT coalesce(sum(length(bytes)), 0), count(*) FROM refused_changes
                  WHERE device_id = ?1",
                [self.device.device_id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            self.refused_budget = Some((
                REFUSED_BYTES_PER_DEVICE - used,
                REFUSED_ROWS_PER_DEVICE - rows,
            ));
        }
        let (budget, rows) = self.refused_budget.unwrap_or((0, 0));
        if rows <= 0 {
            // Past the row budget nothing more is kept: the phone is answered all the
            // same and keeps the change; a phone that gets here is hostile or broken.
            return Ok(());
        }
        let bytes: &[u8] = if (bytes.len() as i64) <= budget {
            bytes
        } else {
            &[]
        };
        self.refused_budget = Some((budget - bytes.len() as i64, rows - 1));
        self.tx.execute(
            "INSERT OR IGNORE INTO refused_changes (hash, doc_id, device_id, reason, bytes, refused_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                hash,
                &doc_id.as_bytes()[..],
                self.device.device_id.to_string(),
                reason,
                bytes,
                self.now
            ],
        )?;
        Ok(())
    }

    fn was_refused<'h>(&self, hashes: impl Iterator<Item = &'h ChangeHash>) -> Result<bool> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT 1 FROM refused_changes WHERE hash = ?1")?;
        for h in hashes {
            if stmt.exists([&h.0[..]])? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The root keys of a household document under which `after` differs from `before`
/// (Automerge's diff between the two sets of heads).
fn changed_root_keys(before: &Automerge, after: &Automerge) -> BTreeSet<String> {
    use automerge::{PatchAction, Prop};
    let mut keys = BTreeSet::new();
    for patch in after.diff(&before.get_heads(), &after.get_heads()) {
        let key = match patch.path.first() {
            Some((_, Prop::Map(k))) => k.clone(),
            Some((_, Prop::Seq(_))) => "(a list)".into(),
            None => match &patch.action {
                PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => key.clone(),
                PatchAction::Increment { prop, .. } | PatchAction::Conflict { prop } => {
                    prop.to_string()
                }
                _ => "(the root)".into(),
            },
        };
        keys.insert(key);
    }
    keys
}

/// The root keys under which the operations of `change` write (see [`op_paths`]).
fn op_root_keys(
    after: &Automerge,
    change: &Change,
) -> std::result::Result<BTreeSet<String>, String> {
    Ok(op_paths(after, change)?
        .into_iter()
        .map(|(k, _)| k)
        .collect())
}

/// Where the operations of `change` write, as (root key, key under it): found through
/// each target object's parents in `after` (the document with the change applied); the
/// second element is `None` for a write of a root key itself. The diff shows only what
/// became visible; this also catches writes into objects that no longer show
/// (overwritten, or losing a conflict), which are refused outright: no honest phone
/// writes into an object it cannot see.
fn op_paths(
    after: &Automerge,
    change: &Change,
) -> std::result::Result<BTreeSet<(String, Option<String>)>, String> {
    use automerge::legacy::{Key, ObjectId};
    const FOREIGN: &str = "the change writes into an object the document does not hold";
    let mut paths = BTreeSet::new();
    let mut seen: HashMap<String, (String, Option<String>)> = HashMap::new();
    for op in change.decode().operations {
        let op_key = match &op.key {
            Key::Map(k) => Some(k.to_string()),
            Key::Seq(_) => None,
        };
        let id = match &op.obj {
            ObjectId::Root => {
                let Some(k) = op_key else {
                    return Err("the document's root is a map".into());
                };
                paths.insert((k, None));
                continue;
            }
            ObjectId::Id(id) => format!("{}@{}", id.counter(), id.actor().to_hex_string()),
        };
        if let Some((root, second)) = seen.get(&id) {
            // A write directly into a root-level map names its key; deeper writes keep
            // the key of the root-level map's entry they sit under.
            let second = second.clone().or_else(|| op_key.clone());
            paths.insert((root.clone(), second));
            continue;
        }
        let obj = after.import_obj(&id).map_err(|_| FOREIGN.to_string())?;
        let parents: Vec<automerge::Parent> = after
            .parents(&obj)
            .map_err(|_| FOREIGN.to_string())?
            .collect();
        if parents.iter().any(|p| !p.visible) {
            return Err(
                "the change writes into an object that is no longer part of the document".into(),
            );
        }
        let prop = |p: &automerge::Parent| match &p.prop {
            automerge::Prop::Map(k) => Some(k.clone()),
            automerge::Prop::Seq(i) => Some(i.to_string()),
        };
        let Some(automerge::Parent {
            prop: automerge::Prop::Map(root_key),
            ..
        }) = parents.last()
        else {
            return Err(FOREIGN.into());
        };
        // parents run from the object's own parent up to the root: the entry under the
        // root-level map is the one before last, or the op's key when the object is
        // the root-level map itself.
        let under = if parents.len() >= 2 {
            prop(&parents[parents.len() - 2])
        } else {
            None
        };
        seen.insert(id, (root_key.clone(), under.clone()));
        paths.insert((root_key.clone(), under.or(op_key)));
    }
    Ok(paths)
}

/// Checks that `principal` may write every path `change` touches in a household of
/// `village` and `grid`, by [`access::permission_for_path`] and the permission table:
/// the root keys on which `after` differs from `before` (Automerge's diff), and those
/// its operations write under ([`op_root_keys`]). An empty change is refused: it
/// touches nothing anyone may write, yet would be stored and sent to every phone.
/// Returns the refusal's reason, naming the path and the role.
///
/// `in_scope` is false for a household outside the account's scope that the pushing
/// phone still holds (it moved away, or the scope changed, and the phone has not yet
/// dropped it). Such a household is judged as if it were in scope, by the role's row
/// of the table alone ([`Principal::may_at_all`]): the account keeps exactly the
/// writes its role has anywhere in its scope (a grid worker still finishes and records
/// its own visits there, with their evidence), nothing its role lacks, and only until
/// the phone reports the household dropped.
fn paths_allowed(
    before: &Automerge,
    after: &Automerge,
    change: &Change,
    principal: &Principal,
    village: &str,
    grid: &str,
    in_scope: bool,
) -> std::result::Result<(), String> {
    if change.is_empty() {
        return Err("an empty change writes nothing".into());
    }
    let may = |p| {
        if in_scope {
            principal.may(p, village, grid)
        } else {
            principal.may_at_all(p)
        }
    };
    let mut keys = changed_root_keys(before, after);
    keys.extend(op_root_keys(after, change)?);
    for key in keys {
        match access::permission_for_path(&key) {
            Some(p) if may(p) => {}
            Some(p) => {
                return Err(format!(
                    "a {} may not write `{key}` ({p:?}) in this household",
                    principal.role.as_str()
                ));
            }
            None => {
                return Err(format!(
                    "`{key}` of a household is written by the server only"
                ));
            }
        }
    }
    Ok(())
}

/// Checks the visits of `after` that `device` created (their map's actor is the
/// device's): each must name the pushing device as `device_id` and its account as
/// `visitor`, when created and ever after, so nobody records a visit in a colleague's
/// name or hands their own visit over to one. A new entry of `visits` that is not a map
/// is refused too.
fn new_visits_are_own(
    before: &Automerge,
    after: &Automerge,
    device: &Device,
) -> std::result::Result<(), String> {
    let visits = |doc: &Automerge| match doc.get(automerge::ROOT, "visits") {
        Ok(Some((automerge::Value::Object(automerge::ObjType::Map), id))) => Some(id),
        _ => None,
    };
    let Some(new) = visits(after) else {
        return Ok(());
    };
    let existing: HashSet<String> = visits(before)
        .map(|old| before.keys(&old).collect())
        .unwrap_or_default();
    let text = |obj: &automerge::ObjId, key: &str| match after.get(obj, key) {
        Ok(Some((automerge::Value::Scalar(v), _))) => match v.as_ref() {
            automerge::ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    };
    let actor = device.device_id.actor();
    for key in after.keys(&new) {
        let visit = match after.get(&new, key.as_str()) {
            Ok(Some((automerge::Value::Object(automerge::ObjType::Map), visit))) => visit,
            _ if existing.contains(&key) => continue,
            _ => return Err(format!("visit {key} is not a visit record")),
        };
        let automerge::ObjId::Id(_, creator, _) = &visit else {
            continue;
        };
        if creator != &actor {
            continue;
        }
        if text(&visit, "device_id").as_deref() != Some(device.device_id.to_string().as_str())
            || text(&visit, "visitor").as_deref() != Some(device.username.as_str())
        {
            return Err(format!(
                "visit {key} names another phone or person; a phone records its own visits"
            ));
        }
    }
    Ok(())
}

/// Whether every rectification fix that `after` holds and `before` did not (or held
/// otherwise) names the pushing device and its account, a task the household held
/// before, a completed, not voided visit recorded by the same account (on this phone
/// or an earlier one of the same person), and a note of 1 to
/// 500 characters. A fix for a task the office closed meanwhile is taken all the same:
/// it is real work, done offline.
fn new_fixes_are_own(before: Option<&Household>, after: &Household, device: &Device) -> bool {
    let phone = device.device_id.to_string();
    after.rectification_fixes.iter().all(|(id, fix)| {
        if before.and_then(|b| b.rectification_fixes.get(id)) == Some(fix) {
            return true;
        }
        let task_known = before.is_some_and(|b| b.rectifications.contains_key(id));
        let visit_done = after.visits.get(&fix.visit_id).is_some_and(|v| {
            v.voided.is_none()
                && v.outcome == Some(model::VisitOutcome::Completed)
                && v.visitor == device.username
        });
        let note = fix.note.trim().chars().count();
        task_known
            && visit_done
            && (1..=500).contains(&note)
            && fix.by == device.username
            && fix.device_id == phone
    })
}

/// Whether every follow-up call that `after` holds and `before` did not is keyed by a
/// UUID, names the pushing account, and keeps the phone's own rule
/// ([`doorstep_core::store::check_follow_up_call`]); a call already held is never
/// changed (written once).
fn new_calls_are_own(before: Option<&Household>, after: &Household, device: &Device) -> bool {
    after.follow_up_calls.iter().all(|(id, call)| {
        match before.and_then(|b| b.follow_up_calls.get(id)) {
            Some(old) => old == call,
            None => {
                Uuid::parse_str(id).is_ok()
                    && call.by == device.username
                    && after.visits.get(&call.visit_id).is_some_and(|v| {
                        doorstep_core::store::check_follow_up_call(v, call).is_ok()
                    })
            }
        }
    })
}

/// Whether every visit completed now, and not before (`completed_before`), has at least
/// one evidence record naming it and at least one photo (the completeness rule of
/// `Store::finish_visit`).
fn completed_visits_are_complete(h: &Household, completed_before: &HashSet<String>) -> bool {
    let signed: HashSet<String> = h
        .evidence
        .values()
        .filter_map(|e| {
            doorstep_core::evidence::EvidenceRecord::from_canonical(&e.record.0)
                .ok()
                .map(|r| r.visit.to_string())
        })
        .collect();
    h.visits.iter().all(|(id, v)| {
        v.outcome != Some(model::VisitOutcome::Completed)
            || completed_before.contains(id)
            || (signed.contains(id) && !v.photos.is_empty())
    })
}

/// Stores the changes a server-side edit made to a document (from `before`): appended
/// to the change log under the server's actor, and the document's bytes updated.
fn store_server_changes(
    tx: &Transaction<'_>,
    id: Uuid,
    doc: &Automerge,
    before: &[ChangeHash],
    now: i64,
) -> Result<()> {
    let changes: Vec<Change> = doc.get_changes(before).into_iter().collect();
    if changes.is_empty() {
        return Ok(());
    }
    let seqs = append_changes(tx, id, &changes, None, now)?;
    tx.execute(
        "UPDATE documents SET bytes = ?2, last_seq = ?3, updated_at_ms = ?4 WHERE doc_id = ?1",
        params![
            &id.as_bytes()[..],
            doc.save(),
            seqs.iter().copied().max().unwrap_or(0),
            now
        ],
    )?;
    Ok(())
}

fn load_doc(conn: &Connection, id: Uuid) -> Result<Automerge> {
    let bytes: Vec<u8> = conn.query_row(
        "SELECT bytes FROM documents WHERE doc_id = ?1",
        [&id.as_bytes()[..]],
        |r| r.get(0),
    )?;
    Automerge::load(&bytes).map_err(|e| Error::Internal(e.to_string()))
}

fn read_organisation(conn: &Connection, id: Uuid) -> Result<Organisation> {
    model::read_organisation(&load_doc(conn, id)?).map_err(|e| Error::Internal(e.to_string()))
}

/// Creates the organisation document on a new server (default templates, the server's
/// key) and lists the server key in it on every open. Returns its ID.
fn ensure_organisation(conn: &mut Connection, actor: &ActorId, key: &DeviceKey) -> Result<Uuid> {
    let tx = conn.transaction()?;
    let now = now_ms();
    let key_hex = hex::encode(key.public());
    let existing: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'organisation'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let id = match existing.and_then(|s| Uuid::parse_str(&s).ok()) {
        Some(id) => {
            let mut doc = load_doc(&tx, id)?.with_actor(actor.clone());
            let before = doc.get_heads();
            model::add_server_key(&mut doc, &key_hex, now)
                .map_err(|e| Error::Internal(e.to_string()))?;
            store_server_changes(&tx, id, &doc, &before, now)?;
            id
        }
        None => {
            let id = Uuid::new_v4();
            let doc = evidence::default_organisation_doc(actor.clone(), &key.public(), now)?;
            let changes: Vec<Change> = doc.get_changes(&[]).into_iter().collect();
            let seqs = append_changes(&tx, id, &changes, None, now)?;
            tx.execute(
                "INSERT INTO documents (doc_id, kind, village, grid, bytes, first_seq, last_seq, updated_at_ms)
                 VALUES (?1, 'organisation', '', '', ?2, ?3, ?4, ?5)",
                params![
                    &id.as_bytes()[..],
                    doc.save(),
                    seqs.iter().copied().min().unwrap_or(0),
                    seqs.iter().copied().max().unwrap_or(0),
                    now
                ],
            )?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('organisation', ?1)",
                [id.to_string()],
            )?;
            id
        }
    };
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('server_key', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [&key_hex],
    )?;
    tx.commit()?;
    Ok(id)
}

/// Adds the `evidence` and `receipts` maps to household documents of schema 1, once,
/// after the migration to server schema 2 asks for it.
/// Upgrades household documents of older schemas (their evidence, receipts, reviews
/// and follow-up maps, written by the server's actor) and rebuilds their projections,
/// once, when a migration asked for it.
fn upgrade_households(conn: &mut Connection, actor: &ActorId, lookup: &LookupKey) -> Result<()> {
    let flag = |conn: &Connection, key: &str| -> Result<bool> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .as_deref()
            == Some("1"))
    };
    let upgrade = flag(conn, "upgrade_households")?;
    let reproject = flag(conn, "reproject_households")?;
    if !upgrade && !reproject {
        return Ok(());
    }
    let tx = conn.transaction()?;
    let now = now_ms();
    let ids: Vec<Vec<u8>> = {
        let mut stmt = tx.prepare("SELECT doc_id FROM documents WHERE kind = 'household'")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for raw in ids {
        let id = Uuid::from_slice(&raw).unwrap_or(Uuid::nil());
        let mut doc = load_doc(&tx, id)?.with_actor(actor.clone());
        let before = doc.get_heads();
        if upgrade
            && model::upgrade_household(&mut doc, now)
                .map_err(|e| Error::Internal(e.to_string()))?
        {
            store_server_changes(&tx, id, &doc, &before, now)?;
        }
        if reproject {
            project_household(&tx, lookup, id, &mut doc, now)?;
        }
    }
    tx.execute(
        "UPDATE meta SET value = '0' WHERE key IN ('upgrade_households', 'reproject_households')",
        [],
    )?;
    tx.commit()?;
    Ok(())
}

/// Rebuilds the household's rows in the projection tables from its document. ID
/// numbers are kept only as their keyed hash (`residents.id_hmac`); reveals read the
/// document.
fn project_household(
    tx: &Transaction<'_>,
    lookup: &LookupKey,
    id: Uuid,
    doc: &mut Automerge,
    now: i64,
) -> Result<()> {
    let Ok(h) = model::read_household(doc) else {
        tracing::warn!(doc = %id, "a document that is not a readable household was not projected");
        return Ok(());
    };
    let key = &id.as_bytes()[..];
    let conflicts = model::conflicts(doc).len() as i64;
    tx.execute(
        "INSERT OR REPLACE INTO households
           (doc_id, village, grid, door_number, head_name, phone, residents, visits, conflicts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            key,
            h.village,
            h.grid,
            h.door_number,
            h.head_name,
            h.phone,
            h.residents.len() as i64,
            h.visits.len() as i64,
            conflicts
        ],
    )?;
    tx.execute("DELETE FROM residents WHERE doc_id = ?1", [key])?;
    for (rid, r) in &h.residents {
        tx.execute(
            // A resident ID another household already uses is not moved here: IDs are
            // per household, and a crafted one must not take over another's row.
            "INSERT INTO residents
               (resident_id, doc_id, name, relation, sex, birth_date, id_hmac, phone, target_groups)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (resident_id) DO UPDATE SET name = excluded.name,
                 relation = excluded.relation, sex = excluded.sex,
                 birth_date = excluded.birth_date, id_hmac = excluded.id_hmac,
                 phone = excluded.phone, target_groups = excluded.target_groups
               WHERE residents.doc_id = excluded.doc_id",
            params![
                rid,
                key,
                r.name,
                r.relation,
                r.sex,
                r.birth_date,
                r.id_number
                    .as_deref()
                    .filter(|n| !n.trim().is_empty())
                    .map(|n| lookup.id_number(n).to_vec()),
                r.phone,
                serde_json::to_string(&r.target_groups).unwrap_or_default()
            ],
        )?;
    }
    let mut evidence_per_visit: HashMap<String, i64> = HashMap::new();
    for e in h.evidence.values() {
        if let Ok(r) = doorstep_core::evidence::EvidenceRecord::from_canonical(&e.record.0) {
            *evidence_per_visit.entry(r.visit.to_string()).or_default() += 1;
        }
    }
    for (vid, v) in &h.visits {
        tx.execute(
            "INSERT INTO visits (visit_id, doc_id, visitor, device_id, outcome, started_at_ms,
                                 finished_at_ms, photos, received_at_ms, outcome_reason,
                                 voided_reason, evidence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (visit_id) DO UPDATE SET visitor = excluded.visitor,
                 outcome = excluded.outcome, started_at_ms = excluded.started_at_ms,
                 finished_at_ms = excluded.finished_at_ms, photos = excluded.photos,
                 outcome_reason = excluded.outcome_reason,
                 voided_reason = excluded.voided_reason, evidence = excluded.evidence
               WHERE visits.doc_id = excluded.doc_id",
            params![
                vid,
                key,
                v.visitor,
                v.device_id,
                v.outcome.map_or("in_progress", |o| o.as_str()),
                v.started_at_ms,
                v.finished_at_ms,
                v.photos.len() as i64,
                now,
                v.outcome_reason,
                v.voided.as_ref().map(|n| n.reason.as_str()),
                evidence_per_visit.get(vid).copied().unwrap_or(0),
            ],
        )?;
        for p in v.photos.values() {
            tx.execute(
                "INSERT OR IGNORE INTO visit_photos (visit_id, sha256, thumb_sha256, width, height)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![vid, p.sha256, p.thumbnail_sha256, p.width, p.height],
            )?;
        }
    }
    office::project_tasks(tx, key, &h)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use doorstep_core::protocol::{DocChanges, DocUpdate, PullStart, UpdateKind};

    const GRID: &str = "测试村第1网格";

    fn setup() -> (tempfile::TempDir, ServerDb, Device, HouseholdId) {
        let dir = tempfile::tempdir().unwrap();
        let db = ServerDb::open(dir.path()).unwrap();
        let id = HouseholdId::new();
        db.import_households(&[Household::new(id, "测试村", GRID, "1号")])
            .unwrap();
        db.add_user(
            "w",
            "password-1",
            Role::GridWorker,
            &Scope::grids(vec![GridRef::new("测试村", GRID)]),
            "(test)",
        )
        .unwrap();
        let device_id = DeviceId::new();
        let token = db.sign_in("w", "password-1", device_id, None).unwrap();
        let device = db.authenticate(&token).unwrap();
        (dir, db, device, id)
    }

    fn change_by(db: &ServerDb, id: HouseholdId, actor: ActorId) -> Vec<u8> {
        let mut doc = db.household_doc(id).unwrap().unwrap().with_actor(actor);
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "phone", "13900000000").unwrap();
        tx.commit();
        doc.get_last_local_change().unwrap().raw_bytes().to_vec()
    }

    fn push(id: HouseholdId, changes: Vec<Vec<u8>>) -> SyncRequest {
        SyncRequest {
            v: PROTOCOL_VERSION,
            cursor: u64::MAX >> 1,
            push: vec![DocChanges {
                doc: id.0,
                changes: changes.into_iter().map(ByteBuf::from).collect(),
            }],
            pull: None,
            outbox: None,
            dropped: vec![],
            delivered: None,
        }
    }

    #[test]
    fn a_change_is_stored_once_however_often_it_is_pushed() {
        let (_d, db, device, id) = setup();
        let c = change_by(&db, id, device.device_id.actor());
        let before = db.totals().unwrap().changes;
        for _ in 0..3 {
            let r = db.sync(&device, &push(id, vec![c.clone()])).unwrap();
            assert_eq!(r.acked.len(), 1);
            assert!(r.rejected.is_empty());
        }
        assert_eq!(db.totals().unwrap().changes, before + 1);
    }

    #[test]
    fn hostile_pushes_are_refused_change_by_change_and_the_rest_is_kept() {
        let (_d, db, device, id) = setup();
        let good = change_by(&db, id, device.device_id.actor());
        let forged = change_by(&db, id, DeviceId::new().actor());
        let garbage = b"\x85\x6f\x4a\x83 not a change".to_vec();
        let r = db
            .sync(&device, &push(id, vec![forged, garbage, good]))
            .unwrap();
        assert_eq!(r.acked.len(), 1, "the good change is kept");
        let reasons: Vec<&str> = r.rejected.iter().map(|x| x.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "the change was made by another device",
                "not a valid Automerge change"
            ]
        );
        let unknown = db
            .sync(
                &device,
                &push(
                    HouseholdId::new(),
                    vec![change_by(&db, id, device.device_id.actor())],
                ),
            )
            .unwrap();
        assert_eq!(
            unknown.rejected[0].reason,
            "the household is not known to the server or outside this account's scope"
        );
        let old = SyncRequest {
            v: 99,
            cursor: 0,
            push: vec![],
            pull: None,
            outbox: None,
            dropped: vec![],
            delivered: None,
        };
        assert!(matches!(db.sync(&device, &old), Err(Error::BadRequest(_))));
    }

    #[test]
    fn an_unchanged_pull_is_empty_and_a_new_phone_gets_snapshots() {
        let (_d, db, device, _id) = setup();
        let first = db
            .sync(
                &device,
                &SyncRequest {
                    v: PROTOCOL_VERSION,
                    cursor: 0,
                    push: vec![],
                    pull: None,
                    outbox: None,
                    dropped: vec![],
                    delivered: None,
                },
            )
            .unwrap();
        // The household and the organisation document (templates), each whole.
        assert_eq!(first.docs.len(), 2);
        assert!(first.docs.iter().all(|d| d.kind == UpdateKind::Snapshot));
        let again = db
            .sync(
                &device,
                &SyncRequest {
                    v: PROTOCOL_VERSION,
                    cursor: first.cursor,
                    push: vec![],
                    pull: None,
                    outbox: None,
                    dropped: vec![],
                    delivered: None,
                },
            )
            .unwrap();
        assert!(again.docs.is_empty() && !again.more);
        assert_eq!(again.cursor, first.cursor);
    }

    #[test]
    fn blobs_are_verified_and_addresses_checked() {
        let (_d, db, _device, _id) = setup();
        let bytes = b"a photo".to_vec();
        let sha = hex::encode(Sha256::digest(&bytes));
        let q = BlobQuery {
            sha256: vec![sha.clone()],
        };
        assert_eq!(db.missing_blobs(&q).unwrap().missing, vec![sha.clone()]);
        assert!(matches!(
            db.put_blob(&sha, b"something else"),
            Err(Error::HashMismatch { .. })
        ));
        assert!(matches!(
            db.put_blob("../../etc/passwd", &bytes),
            Err(Error::BadRequest(_))
        ));
        db.put_blob(&sha, &bytes).unwrap();
        db.put_blob(&sha, &bytes).unwrap();
        assert!(db.missing_blobs(&q).unwrap().missing.is_empty());
        assert_eq!(db.blob(&sha).unwrap().unwrap(), bytes);
    }

    #[test]
    fn sign_in_refuses_wrong_passwords_and_foreign_devices() {
        let (_d, db, device, _id) = setup();
        assert!(matches!(
            db.sign_in("w", "wrong-password", DeviceId::new(), None),
            Err(Error::Unauthorized(_))
        ));
        assert!(matches!(
            db.sign_in("nobody", "password-1", DeviceId::new(), None),
            Err(Error::Unauthorized(_))
        ));
        db.add_user(
            "v",
            "password-2",
            Role::GridWorker,
            &Scope::town(),
            "(test)",
        )
        .unwrap();
        assert!(matches!(
            db.sign_in("v", "password-2", device.device_id, None),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            db.authenticate("not a token"),
            Err(Error::Unauthorized(_))
        ));
    }

    #[test]
    fn a_first_sync_in_many_pages_sends_each_change_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ServerDb::open(dir.path()).unwrap();
        let ids: Vec<HouseholdId> = (0..30).map(|_| HouseholdId::new()).collect();
        let households: Vec<Household> = ids
            .iter()
            .map(|id| Household::new(*id, "测试村", GRID, "1号"))
            .collect();
        db.import_households(&households).unwrap();
        db.add_user(
            "w",
            "password-1",
            Role::GridWorker,
            &Scope::grids(vec![GridRef::new("测试村", GRID)]),
            "(test)",
        )
        .unwrap();
        let writer = db
            .authenticate(
                &db.sign_in("w", "password-1", DeviceId::new(), None)
                    .unwrap(),
            )
            .unwrap();
        for id in &ids {
            let c = change_by(&db, *id, writer.device_id.actor());
            assert_eq!(
                db.sync(&writer, &push(*id, vec![c])).unwrap().acked.len(),
                1
            );
        }
        db.set_page_bytes(1);
        let reader = db
            .authenticate(
                &db.sign_in("w", "password-1", DeviceId::new(), None)
                    .unwrap(),
            )
            .unwrap();
        let mut req = SyncRequest {
            v: PROTOCOL_VERSION,
            cursor: 0,
            push: vec![],
            pull: None,
            outbox: None,
            dropped: vec![],
            delivered: None,
        };
        let mut received = 0;
        let mut pages = 0;
        let mut docs: HashMap<Uuid, Automerge> = HashMap::new();
        loop {
            let resp = db.sync(&reader, &req).unwrap();
            pages += 1;
            for u in &resp.docs {
                received += u.bytes.len();
                docs.entry(u.doc)
                    .or_default()
                    .load_incremental(&u.bytes)
                    .unwrap();
            }
            if !resp.more {
                break;
            }
            req.cursor = resp.cursor;
            req.pull.get_or_insert(doorstep_core::protocol::PullStart {
                since: 0,
                head: resp.head.unwrap(),
            });
        }
        assert_eq!(
            pages, 31,
            "one document per page: the organisation and 30 households"
        );
        let heads = db.document_heads().unwrap();
        let mut snapshots = 0;
        for (id, doc) in &docs {
            let mut h = doc.get_heads();
            h.sort();
            assert_eq!(h, heads[id]);
            snapshots += db
                .household_doc(HouseholdId(*id))
                .unwrap()
                .unwrap()
                .save()
                .len();
        }
        assert_eq!(received, snapshots, "nothing sent twice");
    }

    /// A data folder from before evidence (its household documents without the
    /// `evidence` and `receipts` maps) gets both maps, once, from the server's own actor,
    /// and keeps its organisation document and key across reopenings.
    #[test]
    fn old_households_get_their_evidence_maps_once() {
        let (dir, db, _device, id) = setup();
        let key = db.server_public_key();
        {
            // Make the document look like schema 1.
            let mut conn = db.conn();
            let tx = conn.transaction().unwrap();
            let mut doc = load_doc(&tx, id.0).unwrap().with_actor(ActorId::random());
            let before = doc.get_heads();
            let mut t = doc.transaction();
            t.delete(automerge::ROOT, "evidence").unwrap();
            t.delete(automerge::ROOT, "receipts").unwrap();
            t.put(automerge::ROOT, "schema", 1u64).unwrap();
            t.commit();
            store_server_changes(&tx, id.0, &doc, &before, now_ms()).unwrap();
            tx.execute(
                "UPDATE meta SET value = '1' WHERE key = 'upgrade_households'",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        drop(db);
        let db = ServerDb::open(dir.path()).unwrap();
        let doc = db.household_doc(id).unwrap().unwrap();
        for key in ["evidence", "receipts"] {
            assert!(
                matches!(
                    doc.get(automerge::ROOT, key).unwrap(),
                    Some((automerge::Value::Object(_), _))
                ),
                "{key} is back"
            );
        }
        assert_eq!(
            model::read_household(&doc).unwrap().schema,
            model::HOUSEHOLD_SCHEMA
        );
        let changes = db.totals().unwrap().changes;
        drop(db);
        let db = ServerDb::open(dir.path()).unwrap();
        assert_eq!(
            db.totals().unwrap().changes,
            changes,
            "nothing more on a third open"
        );
        assert_eq!(db.server_public_key(), key, "the same key");
        assert_eq!(
            db.organisation()
                .unwrap()
                .templates_of(EvidenceKind::Pledge),
            ["pledge"]
        );
    }

    /// A phone never writes the organisation document, the evidence or receipts maps.
    #[test]
    fn phones_cannot_write_the_organisation_or_the_evidence_maps() {
        let (_dir, db, device, id) = setup();
        let actor = device.device_id.actor();
        let mut doc = db
            .household_doc(id)
            .unwrap()
            .unwrap()
            .with_actor(actor.clone());
        let mut t = doc.transaction();
        t.put_object(automerge::ROOT, "evidence", automerge::ObjType::Map)
            .unwrap();
        t.commit();
        let replace = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
        let resp = db.sync(&device, &push(id, vec![replace])).unwrap();
        assert_eq!(resp.rejected.len(), 1);
        assert!(
            resp.rejected[0].reason.contains("written by the server"),
            "{:?}",
            resp.rejected
        );
        // Nor a household's kind, its collections as wholes, nor any deletion.
        type Edit = fn(&mut automerge::transaction::Transaction<'_>);
        let edits: [(Edit, &str); 7] = [
            (
                |t| t.put(automerge::ROOT, "phone", "call me maybe").unwrap(),
                "not a valid value",
            ),
            (
                |t| t.put(automerge::ROOT, "kind", "organisation").unwrap(),
                "written by the server",
            ),
            (
                |t| t.put(automerge::ROOT, "visits", "gone").unwrap(),
                "written by the server",
            ),
            (
                |t| t.delete(automerge::ROOT, "residents").unwrap(),
                "deletes nothing",
            ),
            (
                |t| {
                    let visits = match t.get(automerge::ROOT, "visits").unwrap() {
                        Some((_, id)) => id,
                        None => panic!("no visits map"),
                    };
                    t.put(&visits, "not-a-visit", 42).unwrap();
                },
                "not a visit record",
            ),
            (
                |t| {
                    let (_, residents) = t.get(automerge::ROOT, "residents").unwrap().unwrap();
                    t.put_object(&residents, "someone", automerge::ObjType::Map)
                        .unwrap();
                },
                "roster import only",
            ),
            (
                |t| {
                    let (_, visits) = t.get(automerge::ROOT, "visits").unwrap().unwrap();
                    let v = t
                        .put_object(&visits, "with-a-note", automerge::ObjType::Map)
                        .unwrap();
                    let note = t.put_object(&v, "note", automerge::ObjType::Text).unwrap();
                    t.splice_text(&note, 0, 0, "ab").unwrap();
                    t.mark(
                        &note,
                        automerge::marks::Mark::new("bold".into(), true, 0, 1),
                        automerge::marks::ExpandMark::None,
                    )
                    .unwrap();
                },
                "marks",
            ),
        ];
        for (edit, reason) in edits {
            let mut doc = db
                .household_doc(id)
                .unwrap()
                .unwrap()
                .with_actor(actor.clone());
            let mut t = doc.transaction();
            edit(&mut t);
            t.commit();
            let change = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
            let resp = db.sync(&device, &push(id, vec![change])).unwrap();
            assert_eq!(resp.rejected.len(), 1, "{reason}");
            assert!(
                resp.rejected[0].reason.contains(reason),
                "{:?}",
                resp.rejected
            );
        }

        let mut org = load_doc(&db.conn(), db.organisation)
            .unwrap()
            .with_actor(actor);
        let mut t = org.transaction();
        t.put(automerge::ROOT, "kind", "household").unwrap();
        t.commit();
        let edit = org.get_last_local_change().unwrap().raw_bytes().to_vec();
        let mut req = push(id, vec![edit]);
        req.push[0].doc = db.organisation;
        let resp = db.sync(&device, &req).unwrap();
        assert_eq!(resp.rejected.len(), 1);
        assert!(resp.rejected[0].reason.contains("office only"));
    }

    /// A key that is not an ed25519 point, or a small-order one, is refused at sign-in,
    /// as is a key another device registered; nothing of the sign-in is kept then.
    #[test]
    fn unusable_or_borrowed_device_keys_are_refused_at_sign_in() {
        let (_dir, db, device, _id) = setup();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let phone = DeviceId::new();
        let got = db.sign_in("w", "password-1", phone, Some(identity));
        assert!(matches!(got, Err(Error::BadRequest(_))), "{got:?}");
        let got = db.sign_in("w", "password-1", phone, Some([0xff; 32]));
        assert!(
            matches!(got, Err(Error::BadRequest(_))),
            "non-canonical: {got:?}"
        );
        let key = DeviceKey::from_seed(&[3; 32]).public();
        db.sign_in("w", "password-1", device.device_id, Some(key))
            .unwrap();
        assert!(matches!(
            db.sign_in("w", "password-1", phone, Some(key)),
            Err(Error::Conflict(_))
        ));
        let devices: i64 = db
            .conn()
            .query_row(
                "SELECT count(*) FROM devices WHERE device_id = ?1",
                [phone.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(devices, 0, "a refused sign-in enrols nothing");
    }

    /// A phone writes inside its own visits only, and never replaces a visit.
    #[test]
    fn a_phone_cannot_change_another_phones_visit() {
        let (_dir, db, device, id) = setup();
        let other = db
            .authenticate(
                &db.sign_in("w", "password-1", DeviceId::new(), None)
                    .unwrap(),
            )
            .unwrap();
        let visit = model::Visit {
            visitor: "w".into(),
            device_id: device.device_id.to_string(),
            started_at_ms: 1_780_000_000_000,
            finished_at_ms: None,
            outcome: None,
            outcome_reason: String::new(),
            voided: None,
            target_groups_reached: vec![],
            remarks: String::new(),
            photos: Default::default(),
            location: None,
        };
        let vid = doorstep_core::model::VisitId::new();
        let mut doc = db
            .household_doc(id)
            .unwrap()
            .unwrap()
            .with_actor(device.device_id.actor());
        model::add_visit(&mut doc, vid, &visit, 1).unwrap();
        let started = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
        let resp = db.sync(&device, &push(id, vec![started])).unwrap();
        assert!(resp.rejected.is_empty(), "{:?}", resp.rejected);

        let base = db.household_doc(id).unwrap().unwrap();
        let void = doorstep_core::model::VoidNote {
            reason: "not mine".into(),
            at_ms: 2,
        };
        let mut theirs = base.fork().with_actor(other.device_id.actor());
        model::void_visit(&mut theirs, vid, &void, 2).unwrap();
        let voiding = theirs.get_last_local_change().unwrap().raw_bytes().to_vec();
        let resp = db.sync(&other, &push(id, vec![voiding])).unwrap();
        assert!(
            resp.rejected.len() == 1 && resp.rejected[0].reason.contains("another phone"),
            "{:?}",
            resp.rejected
        );
        let mut replace = base.fork().with_actor(other.device_id.actor());
        {
            let mut t = replace.transaction();
            let (_, visits) = t.get(automerge::ROOT, "visits").unwrap().unwrap();
            t.put_object(&visits, vid.to_string(), automerge::ObjType::Map)
                .unwrap();
            t.commit();
        }
        let replacing = replace
            .get_last_local_change()
            .unwrap()
            .raw_bytes()
            .to_vec();
        let resp = db.sync(&other, &push(id, vec![replacing])).unwrap();
        assert!(
            resp.rejected.len() == 1 && resp.rejected[0].reason.contains("exists"),
            "{:?}",
            resp.rejected
        );
        // The owner still can.
        let mut mine = base.fork().with_actor(device.device_id.actor());
        model::void_visit(&mut mine, vid, &void, 4).unwrap();
        let own = mine.get_last_local_change().unwrap().raw_bytes().to_vec();
        let resp = db.sync(&device, &push(id, vec![own])).unwrap();
        assert!(resp.rejected.is_empty(), "{:?}", resp.rejected);

        // A tampered app finishing a visit as completed without a signed paper and a
        // photo is refused, as the core refuses it.
        let vid2 = doorstep_core::model::VisitId::new();
        let mut done = db
            .household_doc(id)
            .unwrap()
            .unwrap()
            .with_actor(device.device_id.actor());
        let before = done.get_heads();
        model::add_visit(&mut done, vid2, &visit, 5).unwrap();
        model::finish_visit(
            &mut done,
            vid2,
            model::VisitOutcome::Completed,
            "",
            "",
            &[],
            1_780_000_000_100,
            6,
        )
        .unwrap();
        let changes: Vec<Vec<u8>> = done
            .get_changes(&before)
            .iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        let resp = db.sync(&device, &push(id, changes)).unwrap();
        assert_eq!(resp.rejected.len(), 2, "{:?}", resp.rejected);
        assert!(resp.rejected[0].reason.contains("lacks a signed"));
    }

    const GRID_2: &str = "测试村第2网格";

    /// A phone as the server sees it: its documents, cursor, the highest numbered
    /// answer it applied, what it dropped and has not reported, and the documents it
    /// will not delete yet (something of its own is still waiting to be pushed).
    pub(super) struct Phone {
        pub(super) token: String,
        pub(super) device: Device,
        pub(super) cursor: u64,
        pub(super) delivered: u64,
        pub(super) dropped: Vec<Uuid>,
        pub(super) docs: HashMap<Uuid, Automerge>,
        pub(super) keep: HashSet<Uuid>,
    }

    impl Phone {
        pub(super) fn new(db: &ServerDb, user: &str) -> Self {
            let token = db
                .sign_in(user, "password-1", DeviceId::new(), None)
                .unwrap();
            let device = db.authenticate(&token).unwrap();
            Self {
                token,
                device,
                cursor: 0,
                delivered: 0,
                dropped: Vec::new(),
                docs: HashMap::new(),
                keep: HashSet::new(),
            }
        }

        /// The account's role or scope changed: the next request carries it.
        pub(super) fn reauthenticate(&mut self, db: &ServerDb) {
            self.device = db.authenticate(&self.token).unwrap();
        }

        pub(super) fn request(
            &self,
            push: Vec<DocChanges>,
            pull: Option<PullStart>,
        ) -> SyncRequest {
            SyncRequest {
                v: PROTOCOL_VERSION,
                cursor: self.cursor,
                push,
                pull,
                dropped: self.dropped.clone(),
                delivered: Some(self.delivered),
                outbox: None,
            }
        }

        pub(super) fn apply(&mut self, resp: &SyncResponse) {
            self.dropped.clear();
            if let Some(d) = resp.delivery {
                assert!(d > self.delivered, "answers are numbered upwards");
                self.delivered = d;
            }
            for u in &resp.docs {
                match u.kind {
                    UpdateKind::Removed => {
                        if !self.keep.contains(&u.doc) {
                            self.docs.remove(&u.doc);
                            self.dropped.push(u.doc);
                        }
                    }
                    UpdateKind::Snapshot | UpdateKind::Changes => {
                        self.docs
                            .entry(u.doc)
                            .or_default()
                            .load_incremental(&u.bytes)
                            .unwrap();
                    }
                }
            }
            self.cursor = self.cursor.max(resp.cursor);
        }

        /// One request, its answer applied.
        pub(super) fn exchange(&mut self, db: &ServerDb, push: Vec<DocChanges>) -> SyncResponse {
            let resp = db.sync(&self.device, &self.request(push, None)).unwrap();
            self.apply(&resp);
            resp
        }

        /// A whole pull, page by page; returns every update received.
        pub(super) fn sync(&mut self, db: &ServerDb) -> Vec<DocUpdate> {
            let since = self.cursor;
            let mut pull = None;
            let mut got = Vec::new();
            loop {
                let resp = db.sync(&self.device, &self.request(vec![], pull)).unwrap();
                self.apply(&resp);
                got.extend(resp.docs.iter().cloned());
                if !resp.more {
                    return got;
                }
                pull.get_or_insert(PullStart {
                    since,
                    head: resp.head.unwrap(),
                });
            }
        }

        /// A change to the phone field of its copy of `id`, made by this phone.
        pub(super) fn edit(&mut self, id: HouseholdId, phone: &str) -> DocChanges {
            let actor = self.device.device_id.actor();
            let doc = self.docs.get_mut(&id.0).unwrap();
            let mut mine = doc.fork().with_actor(actor);
            let mut t = mine.transaction();
            t.put(automerge::ROOT, "phone", phone).unwrap();
            t.commit();
            let change = mine.get_last_local_change().unwrap().raw_bytes().to_vec();
            doc.load_incremental(&change).unwrap();
            DocChanges {
                doc: id.0,
                changes: vec![ByteBuf::from(change)],
            }
        }

        pub(super) fn households(&self) -> BTreeSet<Uuid> {
            self.docs
                .iter()
                .filter(|(_, d)| model::document_kind(d).as_deref() == Some("household"))
                .map(|(id, _)| *id)
                .collect()
        }

        /// Every document it holds has the server's heads.
        pub(super) fn assert_current(&self, db: &ServerDb) {
            let heads = db.document_heads().unwrap();
            for (id, doc) in &self.docs {
                let mut h = doc.get_heads();
                h.sort();
                assert_eq!(h, heads[id], "document {id}");
            }
        }
    }

    /// A server with households in two grids of one village and a worker on each grid.
    fn two_grids(
        per_grid: usize,
    ) -> (
        tempfile::TempDir,
        ServerDb,
        Vec<HouseholdId>,
        Vec<HouseholdId>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = ServerDb::open(dir.path()).unwrap();
        let mut grids = (Vec::new(), Vec::new());
        let mut households = Vec::new();
        for i in 0..per_grid {
            for (grid, ids) in [(GRID, &mut grids.0), (GRID_2, &mut grids.1)] {
                let id = HouseholdId::new();
                ids.push(id);
                let mut h = Household::new(id, "测试村", grid, &format!("{i}号"));
                h.head_name = format!("户主{i}");
                households.push(h);
            }
        }
        db.import_households(&households).unwrap();
        for (user, grid) in [("w1", GRID), ("w2", GRID_2)] {
            db.add_user(
                user,
                "password-1",
                Role::GridWorker,
                &Scope::grids(vec![GridRef::new("测试村", grid)]),
                "(test)",
            )
            .unwrap();
        }
        (dir, db, grids.0, grids.1)
    }

    fn ids(list: &[HouseholdId]) -> BTreeSet<Uuid> {
        list.iter().map(|h| h.0).collect()
    }

    /// A household moved to another grid reaches the new grid's phone whole, though that
    /// phone's cursor passed its creation long ago; the old phone is told to remove it at
    /// every sync until it reports it dropped, and until then its changes to it (a visit
    /// recorded offline) are taken.
    #[test]
    fn a_moved_household_reaches_the_new_phone_whole_and_leaves_the_old_one() {
        let (_dir, db, g1, g2) = two_grids(2);
        let mut p1 = Phone::new(&db, "w1");
        let mut p2 = Phone::new(&db, "w2");
        p1.sync(&db);
        p2.sync(&db);
        assert_eq!(p1.households(), ids(&g1));
        assert_eq!(p2.households(), ids(&g2));
        // Changes after the imports move both cursors on.
        let e = p1.edit(g1[1], "13900000001");
        assert_eq!(p1.exchange(&db, vec![e]).acked.len(), 1);
        p2.sync(&db);
        let h = g1[0];

        // Offline, phone 1 changes h; then the office moves h to grid 2.
        let offline = p1.edit(h, "13900000002");
        db.move_household(h, "测试村", GRID_2, "office").unwrap();
        let got = p2.sync(&db);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].doc, got[0].kind), (h.0, UpdateKind::Snapshot));
        let mut moved = model::read_household(&p2.docs[&h.0]).unwrap();
        assert_eq!(moved.grid, GRID_2);
        p2.assert_current(&db);
        assert!(p2.sync(&db).is_empty(), "sent once");

        // Phone 1 pushes its change (taken: it holds h) and is told to remove h; it keeps
        // h while something of its own waits, and is told again at every sync.
        p1.keep.insert(h.0);
        let resp = p1.exchange(&db, vec![offline.clone()]);
        assert_eq!(resp.acked.len(), 1, "{:?}", resp.rejected);
        let removed = |docs: &[DocUpdate]| -> Vec<Uuid> {
            docs.iter()
                .filter(|u| u.kind == UpdateKind::Removed)
                .map(|u| u.doc)
                .collect()
        };
        assert_eq!(removed(&resp.docs), [h.0]);
        assert_eq!(removed(&p1.sync(&db)), [h.0], "until dropped");
        // It may still finish what it had started there.
        let more = p1.edit(h, "13900000003");
        let resp = p1.exchange(&db, vec![more]);
        assert_eq!(resp.acked.len(), 1, "{:?}", resp.rejected);
        // ... but not for ever: past the grace period, a phone that never reports the
        // household dropped writes there no more.
        let grace = holdings::REMOVAL_GRACE_MS + 1000;
        let shift = |ms: i64| {
            db.conn()
                .execute(
                    "UPDATE device_docs SET removing_since_ms = removing_since_ms + ?1",
                    [ms],
                )
                .unwrap();
        };
        shift(-grace);
        let stale_write = p1.edit(h, "13900000009");
        let resp = p1.exchange(&db, vec![stale_write]);
        assert_eq!(resp.rejected.len(), 1, "refused after the grace period");
        shift(grace);
        p1.keep.clear();
        assert_eq!(removed(&p1.sync(&db)), [h.0]);
        assert_eq!(p1.dropped, [h.0], "deleted, to report");
        assert!(p1.sync(&db).is_empty(), "reported: nothing more");
        assert!(p1.dropped.is_empty());
        assert_eq!(p1.households(), ids(&g1[1..]));
        assert!(p1.sync(&db).is_empty(), "and it does not come back");

        // Once dropped, its writes there are refused again.
        let mut stale = db.household_doc(h).unwrap().unwrap();
        stale.load_incremental(&offline.changes[0]).unwrap();
        p1.docs.insert(h.0, stale);
        let late = p1.edit(h, "13900000004");
        p1.docs.remove(&h.0);
        let resp = p1.exchange(&db, vec![late]);
        assert_eq!(resp.rejected.len(), 1);
        assert_eq!(
            resp.rejected[0].reason,
            "the household is not known to the server or outside this account's scope"
        );

        // Phone 2 gets phone 1's changes to h.
        let got = p2.sync(&db);
        assert!(
            got.iter()
                .all(|u| u.doc == h.0 && u.kind == UpdateKind::Changes)
        );
        moved = model::read_household(&p2.docs[&h.0]).unwrap();
        assert_eq!(moved.phone, "13900000003");
        p2.assert_current(&db);
        p1.assert_current(&db);

        // The move is audited, and a move back makes phone 1 take h whole again.
        let detail: String = db
            .conn()
            .query_row(
                "SELECT detail FROM audit_log WHERE action = 'household_moved' AND target = ?1",
                [h.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(detail["from"]["grid"], GRID);
        assert_eq!(detail["to"]["grid"], GRID_2);
        db.move_household(h, "测试村", GRID, "office").unwrap();
        let got = p1.sync(&db);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].doc, got[0].kind), (h.0, UpdateKind::Snapshot));
        assert_eq!(removed(&p2.sync(&db)), [h.0]);
        p1.assert_current(&db);
        assert_eq!(p1.households(), ids(&g1));
    }

    /// Households moving in come one snapshot per page when pages are small; an answer
    /// that never reached the phone is sent again, and nothing is sent twice otherwise.
    #[test]
    fn moved_in_households_page_and_a_lost_answer_is_sent_again() {
        let (_dir, mut db, g1, g2) = two_grids(5);
        let mut p1 = Phone::new(&db, "w1");
        let mut p2 = Phone::new(&db, "w2");
        p1.sync(&db);
        p2.sync(&db);
        for h in &g1 {
            let e = p1.edit(*h, "13900000001");
            p1.exchange(&db, vec![e]);
        }
        p2.sync(&db);
        for h in &g1 {
            db.move_household(*h, "测试村", GRID_2, "office").unwrap();
        }
        db.set_page_bytes(1);

        // The first page is lost on the way.
        let lost = db.sync(&p2.device, &p2.request(vec![], None)).unwrap();
        assert_eq!(lost.docs.len(), 1);
        assert!(lost.more && lost.delivery.is_some());
        let got = p2.sync(&db);
        let snapshots: Vec<Uuid> = got
            .iter()
            .filter(|u| u.kind == UpdateKind::Snapshot)
            .map(|u| u.doc)
            .collect();
        assert_eq!(snapshots.len(), g1.len(), "each once");
        assert_eq!(snapshots[0], lost.docs[0].doc, "the lost one again");
        assert!(got.iter().all(|u| u.kind == UpdateKind::Snapshot));
        let bytes: usize = got.iter().map(|u| u.bytes.len()).sum();
        let whole: usize = g1
            .iter()
            .map(|h| db.household_doc(*h).unwrap().unwrap().save().len())
            .sum();
        assert_eq!(bytes, whole, "nothing sent twice");
        let mut all = ids(&g1);
        all.extend(ids(&g2));
        assert_eq!(p2.households(), all);
        p2.assert_current(&db);
        assert!(p2.sync(&db).is_empty());

        // Phone 1 is told to remove all five, in one page.
        let got = p1.sync(&db);
        assert_eq!(got.len(), g1.len());
        assert!(got.iter().all(|u| u.kind == UpdateKind::Removed));
        p1.sync(&db);
        assert!(p1.households().is_empty());
        assert!(p1.sync(&db).is_empty());
        // An answer the phone applied late (after a newer one) is numbered at or below
        // what it holds, so a phone can tell it apart.
        assert!(lost.delivery.unwrap() <= p2.delivered);
    }

    /// Changing an account's scope moves whole grids between its phones as a move does;
    /// a role that takes no households to the field keeps only the organisation
    /// document.
    #[test]
    fn a_scope_change_moves_whole_grids() {
        let (_dir, db, g1, g2) = two_grids(3);
        let mut p1 = Phone::new(&db, "w1");
        let mut p2 = Phone::new(&db, "w2");
        p1.sync(&db);
        p2.sync(&db);
        let offline = p1.edit(g1[0], "13900000005");
        db.set_role(
            "w1",
            Role::GridWorker,
            &Scope::grids(vec![GridRef::new("测试村", "测试村第3网格")]),
            "admin",
        )
        .unwrap();
        db.set_role(
            "w2",
            Role::GridWorker,
            &Scope::villages(vec!["测试村".into()]),
            "admin",
        )
        .unwrap();
        p1.reauthenticate(&db);
        p2.reauthenticate(&db);
        let resp = p1.exchange(&db, vec![offline]);
        assert_eq!(resp.acked.len(), 1, "{:?}", resp.rejected);
        assert_eq!(resp.docs.len(), g1.len());
        assert!(resp.docs.iter().all(|u| u.kind == UpdateKind::Removed));
        assert!(p1.households().is_empty());
        p1.sync(&db);
        assert!(p1.dropped.is_empty());
        assert!(p1.sync(&db).is_empty());

        let got = p2.sync(&db);
        assert_eq!(got.len(), g1.len());
        assert!(got.iter().all(|u| u.kind == UpdateKind::Snapshot));
        let mut all = ids(&g1);
        all.extend(ids(&g2));
        assert_eq!(p2.households(), all);
        p2.assert_current(&db);
        assert_eq!(
            model::read_household(&p2.docs[&g1[0].0]).unwrap().phone,
            "13900000005"
        );

        db.set_role(
            "w2",
            Role::Liaison,
            &Scope::villages(vec!["测试村".into()]),
            "admin",
        )
        .unwrap();
        p2.reauthenticate(&db);
        let got = p2.sync(&db);
        assert_eq!(got.len(), all.len());
        assert!(got.iter().all(|u| u.kind == UpdateKind::Removed));
        p2.sync(&db);
        assert!(p2.households().is_empty());
        assert_eq!(p2.docs.len(), 1, "the organisation document stays");
    }

    #[test]
    fn a_move_needs_a_known_household_and_a_place() {
        let (_dir, db, g1, _g2) = two_grids(1);
        let changes = db.totals().unwrap().changes;
        assert!(matches!(
            db.move_household(HouseholdId::new(), "测试村", GRID_2, "office"),
            Err(Error::NotFound(_))
        ));
        for (village, grid) in [(" ", GRID_2), ("测试村", ""), ("测试村", &"格".repeat(101))]
        {
            assert!(matches!(
                db.move_household(g1[0], village, grid, "office"),
                Err(Error::BadRequest(_))
            ));
        }
        db.move_household(g1[0], "测试村", GRID, "office").unwrap();
        assert_eq!(db.totals().unwrap().changes, changes, "already there");
        db.move_household(g1[0], " 新村 ", &"格".repeat(100), "office")
            .unwrap();
        let h = model::read_household(&db.household_doc(g1[0]).unwrap().unwrap()).unwrap();
        assert_eq!((h.village.as_str(), h.grid.chars().count()), ("新村", 100));
        let projected: (String, String) = db
            .conn()
            .query_row(
                "SELECT village, grid FROM households WHERE doc_id = ?1",
                [&g1[0].0.as_bytes()[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(projected, (h.village.clone(), h.grid.clone()));
        assert_eq!(db.totals().unwrap().changes, changes + 1, "one change");
    }

    /// A data folder from before holdings: its phones that synced are taken to hold the
    /// documents in their reach created before their last sync, and nothing else.
    #[test]
    fn holdings_are_backfilled_for_phones_that_synced_before() {
        let (dir, db, g1, g2) = two_grids(2);
        let mut p1 = Phone::new(&db, "w1");
        let p2 = Phone::new(&db, "w2");
        p1.sync(&db);
        let after = HouseholdId::new();
        db.import_households(&[Household::new(after, "测试村", GRID, "9号")])
            .unwrap();
        {
            let conn = db.conn();
            conn.execute_batch(
                "DELETE FROM device_docs; UPDATE devices SET holdings_basis = NULL;",
            )
            .unwrap();
            // Phone 1 synced before the last import; phone 2 never did.
            conn.execute(
                "UPDATE devices SET last_sync_ms = (SELECT received_at_ms FROM change_log
                     WHERE seq = (SELECT first_seq FROM documents WHERE doc_id = ?1)) - 1
                  WHERE device_id = ?2",
                params![&after.0.as_bytes()[..], p1.device.device_id.to_string()],
            )
            .unwrap();
            conn.execute(
                "UPDATE change_log SET received_at_ms = received_at_ms + 1
                  WHERE seq = (SELECT first_seq FROM documents WHERE doc_id = ?1)",
                [&after.0.as_bytes()[..]],
            )
            .unwrap();
            let backfill = &MIGRATIONS[3][MIGRATIONS[3]
                .find("INSERT OR IGNORE INTO device_docs")
                .unwrap()..];
            conn.execute_batch(backfill).unwrap();
        }
        let held = |device: &Device| -> BTreeSet<Uuid> {
            let conn = db.conn();
            let mut stmt = conn
                .prepare("SELECT doc_id FROM device_docs WHERE device_id = ?1")
                .unwrap();
            stmt.query_map([device.device_id.to_string()], |r| {
                Ok(Uuid::from_slice(&r.get::<_, Vec<u8>>(0)?).unwrap())
            })
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap()
        };
        let mut want = ids(&g1);
        want.insert(db.organisation);
        assert_eq!(held(&p1.device), want);
        assert!(held(&p2.device).is_empty());
        // Phone 1's next pull sends the new household whole, and nothing else.
        let got = p1.sync(&db);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].doc, got[0].kind), (after.0, UpdateKind::Snapshot));
        let _ = (dir, g2);
    }
}
