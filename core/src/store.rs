//! The phone's offline store: one SQLite file (rusqlite, bundled SQLite) in WAL mode with
//! `synchronous=FULL`, so a visit confirmed on screen survives a dead battery
//! (DESIGN.md section 5). One [`Store`] is the one writer connection.
//!
//! Tables: `documents` (compacted Automerge bytes), `outbox` (local changes the server
//! has not acknowledged), `meta` (device ID, cursor, server, token), `blobs` (photos and
//! thumbnails with their upload state), `household_index` (the searchable list),
//! `refused_changes`, and `dropped_documents` (households deleted because they left this
//! phone's scope, until the server is told). Migrations are numbered `.sql` files applied
//! in order; every write that belongs together commits in one transaction.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use automerge::{Automerge, Change, ChangeHash};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::evidence::{self, DeviceKey, EvidenceRecord, Place, Witness};
use crate::media::signature::{self, InkRule, InkStats, SignatureStrokes};
use crate::media::{self, IntakePhoto, PhotoLimits};
use crate::model::{
    self, Conflict, DeviceId, EvidenceEntry, EvidenceId, EvidenceKind, GeoPoint, Household,
    HouseholdId, Organisation, PhotoRef, ProfileField, ResidentId, TemplateVersion, Visit, VisitId,
    VisitOutcome, VoidNote,
};
use crate::protocol::{DocUpdate, Effect, OutboxChange, SyncSession, UpdateKind};

mod crypt;
mod tasks;
pub use crypt::STORE_KEY_BYTES;
use crypt::{BlobSeal, StoreKeys};

/// The migrations, in order; the schema version is the number applied.
/// A `household_index` row (doc_id, village, grid, door_number, head_name, status,
/// visits) as a list row.
fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HouseholdSummary> {
    Ok(HouseholdSummary {
        id: HouseholdId(uuid_from(&r.get::<_, Vec<u8>>(0)?)),
        village: r.get(1)?,
        grid: r.get(2)?,
        door_number: r.get(3)?,
        head_name: r.get(4)?,
        status: r.get(5)?,
        visits: r.get(6)?,
    })
}

/// The path of a store file; refuses the in-memory names, where nothing would be kept.
fn disk_path(path: &Path) -> Result<&Path> {
    let text = path.to_string_lossy();
    if text.is_empty() || text.starts_with(":memory:") || text.starts_with("file::memory:") {
        return Err(Error::Invalid {
            field: "path",
            reason: "the store needs a file on disk; nothing in memory survives".into(),
        });
    }
    Ok(path)
}

const MIGRATIONS: &[&str] = &[
    include_str!("store/0001_init.sql"),
    include_str!("store/0002_index_and_refused.sql"),
    include_str!("store/0003_evidence.sql"),
    include_str!("store/0004_moves.sql"),
    include_str!("store/0005_tasks.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Milliseconds since the Unix epoch (UTC) by the device clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A visit recorded in one step, started and finished at once: for the outcomes that
/// need no signature (nobody home, refused, moved away). A completed visit goes
/// through [`Store::start_visit`], photos, [`Store::sign_evidence`] and
/// [`Store::finish_visit`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewVisit {
    /// What happened at the door.
    pub outcome: VisitOutcome,
    /// Why the visit did not complete; required for every outcome but completed.
    pub outcome_reason: String,
    /// Start, device clock, milliseconds since the Unix epoch (UTC).
    pub started_at_ms: i64,
    /// End, device clock, milliseconds since the Unix epoch (UTC); now when `None`.
    pub finished_at_ms: Option<i64>,
    /// Target groups (重点人群) reached.
    pub target_groups_reached: Vec<String>,
    /// Free text.
    pub remarks: String,
    /// Where the phone was, when it knew.
    pub location: Option<GeoPoint>,
}

/// The start of a visit at the door.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitStart {
    /// Start, device clock, milliseconds since the Unix epoch (UTC).
    pub started_at_ms: i64,
    /// Where the phone was, when it knew.
    pub location: Option<GeoPoint>,
}

/// How a visit ends.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitFinish {
    /// What happened at the door.
    pub outcome: VisitOutcome,
    /// Why the visit did not complete; required for every outcome but completed.
    pub outcome_reason: String,
    /// End, device clock, milliseconds since the Unix epoch (UTC).
    pub finished_at_ms: i64,
    /// Target groups (重点人群) reached.
    pub target_groups_reached: Vec<String>,
    /// Free text, at most [`MAX_REMARKS_CHARS`].
    pub remarks: String,
}

/// A signature taken in by [`Store::capture_signature`]: its blobs are stored, and
/// [`Store::sign_evidence`] cites it by `png_sha256`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureCapture {
    /// Lowercase hex SHA-256 of the compact strokes blob.
    pub strokes_sha256: String,
    /// Lowercase hex SHA-256 of the PNG blob (640×256 px, grayscale).
    pub png_sha256: String,
    /// Size of the PNG in bytes.
    pub png_bytes: u64,
    /// What the blank check measured.
    pub ink: InkStats,
}

/// A witness to a resident's mark, as the app hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct WitnessInput {
    /// The witness's name, 1 to 50 characters.
    pub name: String,
    /// Why the resident gave a mark (cannot write, injured hand...), 1 to 200 characters.
    pub reason: String,
    /// The witness's own signature, captured with [`InkRule::Signature`].
    pub signature_png_sha256: String,
}

/// What to sign: the notice or pledge in force, by a resident, with a captured
/// signature (or a witnessed mark).
#[derive(Debug, Clone, PartialEq)]
pub struct SignRequest {
    /// Notice or pledge.
    pub kind: EvidenceKind,
    /// The template's ID; the kind's name (`notice`, `pledge`) when `None`.
    pub template_id: Option<String>,
    /// The resident who signs: the head or another adult of the household.
    pub signer: ResidentId,
    /// The signer's signature (or mark, when `witness` is given).
    pub signature_png_sha256: String,
    /// For a resident who cannot write: the witness to their mark.
    pub witness: Option<WitnessInput>,
    /// Where the phone was; the visit's place when `None`.
    pub location: Option<GeoPoint>,
}

/// A supervisor's follow-up call as the app hands it over
/// ([`Store::record_follow_up_call`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpInput {
    /// The visit checked.
    pub visit: VisitId,
    /// When the call was made, device clock, milliseconds since the Unix epoch (UTC).
    pub called_at_ms: i64,
    /// Whether anyone answered.
    pub reached: bool,
    /// Whether the household confirms the visit; `None` when not reached.
    pub confirmed: Option<bool>,
    /// Whether the household understood what it was told; `None` when not reached.
    pub understood: Option<bool>,
    /// Remarks, at most 500 characters.
    pub remarks: String,
}

/// How a record held on this phone stands up to checking ([`Store::verify_evidence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceCheck {
    /// The household.
    pub household: HouseholdId,
    /// The record's key in the household's `evidence` map.
    pub evidence: String,
    /// Everything found wrong; empty when the record holds.
    pub problems: Vec<String>,
    /// Blobs the record cites that this phone does not hold (another phone's photos).
    pub blobs_not_here: usize,
    /// Whether the server's countersigned receipt is here and verifies.
    pub receipt: ReceiptState,
}

/// The state of the server's receipt of a record, as a phone sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptState {
    /// Not synced yet, or the receipt has not come back.
    Pending,
    /// The receipt's entry hash and the server's signature verify.
    Verified,
    /// A receipt is there but does not verify (listed in `problems`).
    Broken,
}

/// A row of the household list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdSummary {
    /// The household.
    pub id: HouseholdId,
    /// Village name.
    pub village: String,
    /// Grid name.
    pub grid: String,
    /// Door number.
    pub door_number: String,
    /// Head of household's name.
    pub head_name: String,
    /// Outcome of the latest visit, `None` when not yet visited.
    pub status: Option<String>,
    /// Number of visits recorded.
    pub visits: u32,
}

/// A search of the household list. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HouseholdQuery {
    /// Matches a resident's name or the door number (substring), or the last digits
    /// of a phone number (suffix).
    pub text: Option<String>,
    /// Only households whose latest visit has this outcome (`completed`, ...), or
    /// `unvisited` for those with none.
    pub status: Option<String>,
    /// Rows to skip.
    pub offset: u32,
    /// Rows to return; 0 means 100.
    pub limit: u32,
}

/// A conflict in one household.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdConflict {
    /// The household.
    pub household: HouseholdId,
    /// The field and its values.
    pub conflict: Conflict,
}

/// A change the server refused, kept on the phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedChange {
    /// The document.
    pub doc: Uuid,
    /// Hex change hash.
    pub hash: String,
    /// The server's reason.
    pub reason: String,
}

/// The phone's store. Not `Sync`: one writer; wrap it in a mutex to share it.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    device: DeviceId,
    key: DeviceKey,
    limits: PhotoLimits,
    /// Seals blobs in an encrypted store; `None` in a plain one ([`Store::open`]).
    seal: Option<BlobSeal>,
}

impl Store {
    /// Opens (creating when absent) an unencrypted store at `path`, applies pending
    /// migrations and creates the device ID on first open. For tests, tools and
    /// simulated phones; the apps open theirs with [`Store::open_encrypted`].
    ///
    /// Errors: [`Error::Invalid`] for an empty path or `:memory:` (nothing would be
    /// kept) and for a SQLite file that is not a Doorstep phone store (it is left
    /// untouched); [`Error::Storage`] when the file cannot be opened or is not a
    /// database (an encrypted store opened without its key); [`Error::StoreTooNew`]
    /// when a newer build wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let conn = Connection::open(disk_path(path.as_ref())?)?;
        Self::with_connection(conn, None)
    }

    /// Opens (creating when absent) the store at `path`, encrypted at rest under
    /// `store_key`, the 32 random bytes the platform keystore holds for this phone
    /// (Android Keystore, iOS Keychain). SQLCipher encrypts every page of the database
    /// and its WAL with one subkey; every blob is sealed with another before it is
    /// written (ADR 0009).
    ///
    /// Errors: [`Error::WrongKey`] when the file exists and does not open under this key
    /// (another key, an unencrypted store, or a damaged header); nothing is written to
    /// it. Otherwise as [`Store::open`].
    pub fn open_encrypted(
        path: impl AsRef<Path>,
        store_key: &[u8; STORE_KEY_BYTES],
    ) -> Result<Self> {
        let conn = Connection::open(disk_path(path.as_ref())?)?;
        let keys = StoreKeys::derive(store_key);
        // A store left with a WAL (the app was killed) would be checkpointed when this
        // connection closes, even after a wrong key: nothing is written until the key
        // has been proved.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        conn.execute_batch(&keys.pragma)?;
        // SQLCipher would print each failed page check of a wrong key to stderr
        // (logcat); the caller gets `WrongKey` instead. Set after the key: the first
        // key of a process resets the level.
        conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
        // The first read decrypts page 1: a wrong key fails here, before any write.
        match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::NotADatabase =>
            {
                return Err(Error::WrongKey);
            }
            Err(e) => return Err(e.into()),
        }
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false)?;
        // Encrypted pages of temporary tables and sorts stay in memory, not in files.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        Self::with_connection(conn, Some(keys.blobs))
    }

    fn with_connection(mut conn: Connection, seal: Option<BlobSeal>) -> Result<Self> {
        check_identity(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        let device = match get_meta(&conn, "device_id")? {
            Some(s) => DeviceId::parse(&s).ok_or_else(|| Error::Invalid {
                field: "device_id",
                reason: "stored device ID is not a UUID".into(),
            })?,
            None => {
                let id = DeviceId::new();
                set_meta(&conn, "device_id", &id.to_string())?;
                id
            }
        };
        let key = match current_key(&conn)? {
            Some(key) => key,
            None => insert_new_key(&conn)?,
        };
        let mut store = Self {
            conn,
            device,
            key,
            limits: PhotoLimits::default(),
            seal,
        };
        if get_meta(&store.conn, "reindex")?.as_deref() == Some("1") {
            store.reindex()?;
        }
        Ok(store)
    }

    /// This phone's device ID (also its Automerge actor).
    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    /// The public half (32 bytes) of the key this phone signs evidence with now.
    pub fn device_public_key(&self) -> [u8; 32] {
        self.key.public()
    }

    /// Replaces the signing key with a new one (for a re-enrolment, or when the old one
    /// may have leaked). The old key is kept, marked retired, so the records it signed
    /// still check here; the server learns the new one at the next sign-in.
    ///
    /// Errors: [`Error::Evidence`] when the OS gives no randomness; [`Error::Storage`].
    pub fn renew_device_key(&mut self) -> Result<[u8; 32]> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE device_keys SET retired_at_ms = ?1 WHERE retired_at_ms IS NULL",
            [now_ms()],
        )?;
        let key = insert_new_key(&tx)?;
        tx.commit()?;
        self.key = key;
        Ok(self.key.public())
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn load_doc(&self, id: Uuid) -> Result<Option<Automerge>> {
        load_doc(&self.conn, id, &self.device)
    }

    fn household_doc(&self, id: HouseholdId) -> Result<Automerge> {
        self.load_doc(id.0)?
            .ok_or_else(|| Error::NoSuchHousehold(id.to_string()))
    }

    /// The household as a typed value.
    ///
    /// Errors: [`Error::NoSuchHousehold`] when it is not on this phone.
    pub fn household(&self, id: HouseholdId) -> Result<Household> {
        Ok(model::read_household(&self.household_doc(id)?)?)
    }

    /// Households on this phone matching `query`, by grid and door number.
    ///
    /// Errors: [`Error::Invalid`] for a search text over 100 characters or an unknown
    /// status.
    pub fn households(&self, query: &HouseholdQuery) -> Result<Vec<HouseholdSummary>> {
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let raw = query.text.as_deref().unwrap_or("");
        if raw.chars().count() > 100 {
            return Err(Error::Invalid {
                field: "text",
                reason: "a search is at most 100 characters".into(),
            });
        }
        if let Some(status) = &query.status
            && !STATUSES.contains(&status.as_str())
        {
            return Err(Error::Invalid {
                field: "status",
                reason: format!("one of {}", STATUSES.join(", ")),
            });
        }
        // Full-width digits and the spaces or dashes of a spoken phone number match
        // the digits stored; control characters match nothing.
        let mut text: String = normalize_digits(raw)
            .chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
            .trim()
            .to_string();
        if text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-'))
        {
            text.retain(|c| c.is_ascii_digit());
        }
        let like = format!("%{}%", escape_like(&text));
        let suffix = format!("%{} %", escape_like(&text));
        let mut stmt = self.conn.prepare_cached(
            "SELECT doc_id, village, grid, door_number, head_name, status, visits
               FROM household_index
              WHERE (?1 = '' OR names LIKE ?2 ESCAPE '\\' OR door_number LIKE ?2 ESCAPE '\\'
                     OR (?1 GLOB '[0-9]*' AND phones LIKE ?3 ESCAPE '\\'))
                AND (?4 IS NULL OR (?4 = 'unvisited' AND status IS NULL) OR status = ?4)
              ORDER BY grid, length(door_number), door_number
              LIMIT ?5 OFFSET ?6",
        )?;
        let rows = stmt.query_map(
            params![text, like, suffix, query.status, limit, query.offset],
            summary_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The household's row of the list, `None` when it is not on this phone.
    pub fn household_summary(&self, id: HouseholdId) -> Result<Option<HouseholdSummary>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT doc_id, village, grid, door_number, head_name, status, visits
                   FROM household_index WHERE doc_id = ?1",
            )?
            .query_row([id.0.as_bytes().as_slice()], summary_row)
            .optional()?)
    }

    /// Stores a household document received or created outside a sync (the roster
    /// import on a server-less demo, tests). Its changes are not queued for push.
    pub fn insert_household_doc(&mut self, doc_bytes: &[u8], id: HouseholdId) -> Result<()> {
        let tx = self.conn.transaction()?;
        let mut doc = load_doc(&tx, id.0, &self.device)?
            .unwrap_or_else(|| Automerge::new().with_actor(self.device.actor()));
        doc.load_incremental(doc_bytes)
            .map_err(|source| Error::document(id.to_string(), source))?;
        save_doc(&tx, id.0, &doc)?;
        tx.commit()?;
        Ok(())
    }

    /// Records a visit that starts and finishes at once, durably: when this returns
    /// `Ok` the visit is on disk and queued for the server. Meant for the outcomes that
    /// need no signature; a completed visit needs evidence first, so it is refused here
    /// as [`Store::finish_visit`] refuses it.
    ///
    /// Errors: [`Error::NoSuchHousehold`]; [`Error::Invalid`] naming the field when the
    /// visit breaks a rule of [`validate_visit`]; [`Error::Incomplete`] for a completed
    /// visit; [`Error::Storage`] (for instance a full disk), in which case nothing was
    /// written.
    pub fn record_visit(&mut self, household: HouseholdId, visit: NewVisit) -> Result<VisitId> {
        validate_visit(&visit)?;
        if visit.outcome == VisitOutcome::Completed {
            return Err(Error::Incomplete {
                missing: vec![MISSING_EVIDENCE, MISSING_PHOTO],
            });
        }
        let id = VisitId::new();
        let value = Visit {
            finished_at_ms: Some(visit.finished_at_ms.unwrap_or_else(now_ms)),
            outcome: Some(visit.outcome),
            outcome_reason: visit.outcome_reason.trim().to_string(),
            target_groups_reached: visit.target_groups_reached,
            remarks: visit.remarks,
            ..self.open_visit(visit.started_at_ms, visit.location)?
        };
        self.edit(household, |doc| model::add_visit(doc, id, &value, now_ms()))?;
        Ok(id)
    }

    fn open_visit(&self, started_at_ms: i64, location: Option<GeoPoint>) -> Result<Visit> {
        Ok(Visit {
            visitor: get_meta(&self.conn, "username")?.unwrap_or_default(),
            device_id: self.device.to_string(),
            started_at_ms,
            finished_at_ms: None,
            outcome: None,
            outcome_reason: String::new(),
            voided: None,
            target_groups_reached: Vec::new(),
            remarks: String::new(),
            photos: Default::default(),
            location,
        })
    }

    /// Starts a visit at the door, durably; photos and signatures are added to it, and
    /// [`Store::finish_visit`] closes it.
    ///
    /// Errors: [`Error::NoSuchHousehold`]; [`Error::Invalid`] for a start time or place
    /// out of the bounds of [`validate_visit`].
    pub fn start_visit(&mut self, household: HouseholdId, start: VisitStart) -> Result<VisitId> {
        validate_start(start.started_at_ms, start.location.as_ref())?;
        let id = VisitId::new();
        let value = self.open_visit(start.started_at_ms, start.location)?;
        self.edit(household, |doc| model::add_visit(doc, id, &value, now_ms()))?;
        Ok(id)
    }

    /// Finishes a visit started on this phone. A completed visit needs at least one
    /// signed notice or pledge and at least one photo (the campaign plan: the signed
    /// paper and the photo are the evidence of the visit); every other outcome needs a
    /// reason.
    ///
    /// Errors: [`Error::Incomplete`] naming what a completed visit lacks;
    /// [`Error::Invalid`] for a missing reason, a field out of bounds, or a visit that
    /// is already finished, voided or was started on another phone;
    /// [`Error::NoSuchHousehold`]; [`Error::Model`] with `NoSuchVisit`.
    pub fn finish_visit(
        &mut self,
        household: HouseholdId,
        visit: VisitId,
        finish: VisitFinish,
    ) -> Result<()> {
        let h = self.household(household)?;
        let current = self.open_visit_of(&h, visit)?;
        validate_visit(&NewVisit {
            outcome: finish.outcome,
            outcome_reason: finish.outcome_reason.clone(),
            started_at_ms: current.started_at_ms,
            finished_at_ms: Some(finish.finished_at_ms),
            target_groups_reached: finish.target_groups_reached.clone(),
            remarks: finish.remarks.clone(),
            location: None,
        })?;
        if finish.outcome == VisitOutcome::Completed {
            let vid = visit.to_string();
            let signed = h.evidence.values().any(|e| {
                EvidenceRecord::from_canonical(&e.record.0).is_ok_and(|r| r.visit == visit)
            });
            let mut missing = Vec::new();
            if !signed {
                missing.push(MISSING_EVIDENCE);
            }
            if h.visits.get(&vid).is_none_or(|v| v.photos.is_empty()) {
                missing.push(MISSING_PHOTO);
            }
            if !missing.is_empty() {
                return Err(Error::Incomplete { missing });
            }
        }
        self.edit(household, |doc| {
            model::finish_visit(
                doc,
                visit,
                finish.outcome,
                finish.outcome_reason.trim(),
                &finish.remarks,
                &finish.target_groups_reached,
                finish.finished_at_ms,
                now_ms(),
            )
        })
    }

    /// Voids a visit recorded in error, with a reason; it stays in the record, marked.
    ///
    /// Errors: [`Error::Invalid`] for an empty reason or one over 200 characters, or a
    /// visit already voided or started on another phone; [`Error::NoSuchHousehold`];
    /// [`Error::Model`] with `NoSuchVisit`.
    pub fn void_visit(
        &mut self,
        household: HouseholdId,
        visit: VisitId,
        reason: &str,
    ) -> Result<()> {
        let reason = reason.trim();
        check_text("reason", reason, 1, 200)?;
        let h = self.household(household)?;
        let v = h
            .visits
            .get(&visit.to_string())
            .ok_or_else(|| model::ModelError::NoSuchVisit(visit.to_string()))?;
        self.check_own(v)?;
        if v.voided.is_some() {
            return Err(invalid("visit", "the visit is already voided"));
        }
        let note = VoidNote {
            reason: reason.to_string(),
            at_ms: now_ms(),
        };
        self.edit(household, |doc| {
            model::void_visit(doc, visit, &note, now_ms())
        })
    }

    fn check_own(&self, v: &Visit) -> Result<()> {
        if v.device_id != self.device.to_string() {
            return Err(invalid("visit", "the visit was started on another phone"));
        }
        Ok(())
    }

    /// The visit, when it was started here and is neither finished nor voided.
    fn open_visit_of<'h>(&self, h: &'h Household, visit: VisitId) -> Result<&'h Visit> {
        let v = h
            .visits
            .get(&visit.to_string())
            .ok_or_else(|| model::ModelError::NoSuchVisit(visit.to_string()))?;
        self.check_own(v)?;
        if v.voided.is_some() {
            return Err(invalid("visit", "the visit was voided"));
        }
        if v.outcome.is_some() {
            return Err(invalid("visit", "the visit is already finished"));
        }
        Ok(v)
    }

    /// Takes in a signature drawn on screen: checks it ([`signature::check`] with
    /// `rule`), stores its compact strokes and its PNG (640×256 px) as blobs queued for
    /// upload, and returns their hashes for [`Store::sign_evidence`].
    ///
    /// Errors: [`Error::Signature`] for a blank, dot-only or too-small signature or
    /// out-of-bounds strokes (nothing stored); [`Error::Storage`].
    pub fn capture_signature(
        &mut self,
        strokes: &SignatureStrokes,
        rule: InkRule,
    ) -> Result<SignatureCapture> {
        let ink = signature::check(strokes, rule)?;
        let encoded = signature::encode_strokes(strokes);
        let rendered = signature::render_png(strokes)?;
        let strokes_sha256 = media::sha256_hex(&encoded);
        let png_sha256 = media::sha256_hex(&rendered.png);
        let now = now_ms();
        let tx = self.conn.transaction()?;
        put_blob(
            &tx,
            self.seal.as_ref(),
            &strokes_sha256,
            STROKES_MEDIA_TYPE,
            &encoded,
            now,
        )?;
        put_blob(
            &tx,
            self.seal.as_ref(),
            &png_sha256,
            "image/png",
            &rendered.png,
            now,
        )?;
        tx.execute(
            "INSERT INTO signatures (png_sha256, strokes_sha256, rule, created_at_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (png_sha256) DO UPDATE SET
                rule = CASE WHEN excluded.rule = 'signature' THEN 'signature' ELSE rule END",
            params![
                png_sha256,
                strokes_sha256,
                match rule {
                    InkRule::Signature => "signature",
                    InkRule::Mark => "mark",
                },
                now
            ],
        )?;
        tx.commit()?;
        Ok(SignatureCapture {
            strokes_sha256,
            png_sha256,
            png_bytes: rendered.png.len() as u64,
            ink,
        })
    }

    fn captured(&self, png_sha256: &str, field: &'static str) -> Result<(String, String)> {
        self.conn
            .query_row(
                "SELECT strokes_sha256, rule FROM signatures WHERE png_sha256 = ?1",
                [png_sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| invalid(field, "no signature with this hash was captured here"))
    }

    /// The organisation document's content (templates, server keys), `None` before the
    /// first sync brings it.
    pub fn organisation(&self) -> Result<Option<Organisation>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT bytes FROM documents WHERE kind = 'organisation' ORDER BY updated_at_ms DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let doc = Automerge::load(&bytes).map_err(|e| Error::document("organisation", e))?;
        Ok(Some(model::read_organisation(&doc)?))
    }

    /// The template version in force now (town time) for `template_id`: the text the
    /// app shows before the household signs.
    ///
    /// Errors: [`Error::Invalid`] with field `template` when the organisation document
    /// has not arrived yet or holds no version of it in force.
    pub fn template_in_force(&self, template_id: &str) -> Result<TemplateVersion> {
        let org = self.organisation()?.ok_or_else(|| {
            invalid(
                "template",
                "no templates on this phone yet; sync once with signal",
            )
        })?;
        org.template_in_force(template_id, now_ms())
            .cloned()
            .ok_or_else(|| invalid("template", NOT_IN_FORCE))
    }

    /// Signs a notice or pledge during an open visit: builds the evidence record (the
    /// template version in force and its text hash, the signer, the signature's blobs,
    /// the visit's photos, the place, the device time, this device and its next
    /// counter), signs it with the device key and writes it into the household document
    /// in one change, with the counter, in one transaction.
    ///
    /// Rules: the signer is a resident of the household and not known to be under 18
    /// (by birth date or ID number; the campaign plan asks for the head or another
    /// adult); the signature was captured here with the full blank check, or, for a
    /// witnessed mark, the mark passed the mark check and the witness's signature the
    /// full one, with the witness's name and the reason.
    ///
    /// Errors: [`Error::Invalid`] naming the field that breaks a rule;
    /// [`Error::NoSuchHousehold`]; [`Error::Model`] with `NoSuchVisit` or
    /// `NoEvidenceMap` (a household record from before evidence: sync first).
    pub fn sign_evidence(
        &mut self,
        household: HouseholdId,
        visit: VisitId,
        request: SignRequest,
    ) -> Result<EvidenceId> {
        let h = self.household(household)?;
        let v = self.open_visit_of(&h, visit)?;
        let resident = h
            .residents
            .get(&request.signer.to_string())
            .ok_or_else(|| invalid("signer", "not a resident of this household"))?;
        let now = now_ms();
        if is_minor(resident, now) {
            return Err(invalid(
                "signer",
                "the signer is under 18; the head or another adult signs",
            ));
        }
        let template_id = request
            .template_id
            .clone()
            .unwrap_or_else(|| request.kind.as_str().to_string());
        let org = self.organisation()?.ok_or_else(|| {
            invalid(
                "template",
                "no templates on this phone yet; sync once with signal",
            )
        })?;
        if org.templates.get(&template_id).map(|t| t.kind) != Some(request.kind) {
            return Err(invalid("template", "no template of this kind with this ID"));
        }
        let template = org
            .template_in_force(&template_id, now)
            .ok_or_else(|| invalid("template", NOT_IN_FORCE))?;
        let (strokes, rule) = self.captured(&request.signature_png_sha256, "signature")?;
        let witness = match &request.witness {
            None => {
                if rule != "signature" {
                    return Err(invalid(
                        "signature",
                        "a mark needs a witness; or capture a full signature",
                    ));
                }
                None
            }
            Some(w) => {
                let name = w.name.trim();
                let reason = w.reason.trim();
                check_text("witness.name", name, 1, 50)?;
                check_text("witness.reason", reason, 1, 200)?;
                let (w_strokes, w_rule) =
                    self.captured(&w.signature_png_sha256, "witness.signature")?;
                if w_rule != "signature" {
                    return Err(invalid(
                        "witness.signature",
                        "the witness signs in full, not with a mark",
                    ));
                }
                if w.signature_png_sha256 == request.signature_png_sha256 {
                    return Err(invalid(
                        "witness.signature",
                        "the witness's signature is the signer's own",
                    ));
                }
                Some(Witness {
                    name: name.to_string(),
                    reason: reason.to_string(),
                    strokes_sha256: digest(&w_strokes)?,
                    png_sha256: digest(&w.signature_png_sha256)?,
                })
            }
        };
        let location = request.location.or(v.location);
        if let Some(p) = location {
            validate_place(&p)?;
        }
        let mut photos = v
            .photos
            .keys()
            .map(|p| digest(p))
            .collect::<Result<Vec<_>>>()?;
        photos.sort();
        photos.dedup();
        if photos.len() > evidence::MAX_RECORD_PHOTOS {
            return Err(invalid(
                "photos",
                "a record cites at most 200 photos; start another visit for more",
            ));
        }
        let id = EvidenceId::new();
        let tx = self.conn.transaction()?;
        let counter = get_meta(&tx, "evidence_counter")?
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let record = EvidenceRecord {
            id,
            kind: request.kind,
            household,
            visit,
            signer: request.signer,
            signer_name: resident.name.clone(),
            template_id,
            template_version: template.version,
            text_sha256: evidence::sha256(template.shown_text().as_bytes()),
            strokes_sha256: digest(&strokes)?,
            png_sha256: digest(&request.signature_png_sha256)?,
            witness,
            photos,
            place: location.map(Place::from),
            signed_at_ms: now,
            device: self.device,
            key: self.key.public(),
            counter,
        };
        record.check_values().map_err(|e| match e {
            evidence::EvidenceError::Malformed { field, reason } => {
                Error::Invalid { field, reason }
            }
            other => Error::Evidence(other),
        })?;
        let signed = evidence::sign_record(&self.key, &record)?;
        if signed.record.len() > evidence::MAX_RECORD_BYTES {
            return Err(invalid("record", "the record would be larger than 16 KiB"));
        }
        let entry = EvidenceEntry {
            record: model::Bytes(signed.record),
            signature: model::Bytes(signed.signature),
        };
        set_meta(&tx, "evidence_counter", &counter.to_string())?;
        edit_in(&tx, &self.device, household, |doc| {
            model::add_evidence(doc, id, &entry, now)
        })?;
        tx.commit()?;
        Ok(id)
    }

    /// Re-checks the evidence records held on this phone (all, or one household's):
    /// each record's canonical form and device signature, that it sits under its own
    /// ID in its own household, that this phone's records name one of its keys, the
    /// hash of every cited blob held here, and the server's receipt when it has come
    /// back (entry hash and countersignature under a key of the organisation document).
    ///
    /// Errors: [`Error::NoSuchHousehold`] for an unknown `household`; [`Error::Storage`].
    pub fn verify_evidence(&self, household: Option<HouseholdId>) -> Result<Vec<EvidenceCheck>> {
        let ids: Vec<HouseholdId> = match household {
            Some(id) => vec![id],
            None => {
                let mut stmt = self.conn.prepare(
                    "SELECT doc_id FROM documents WHERE kind = 'household' ORDER BY doc_id",
                )?;
                stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?
                    .map(|r| r.map(|b| HouseholdId(uuid_from(&b))))
                    .collect::<Result<_, _>>()?
            }
        };
        let org = self.organisation()?;
        let own_keys: Vec<Vec<u8>> = {
            let mut stmt = self.conn.prepare("SELECT public_key FROM device_keys")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for id in ids {
            let h = self.household(id)?;
            for (key, entry) in &h.evidence {
                let mut check = EvidenceCheck {
                    household: id,
                    evidence: key.clone(),
                    problems: Vec::new(),
                    blobs_not_here: 0,
                    receipt: ReceiptState::Pending,
                };
                match evidence::verify_record(&entry.record.0, &entry.signature.0, None) {
                    Err(e) => check.problems.push(e.to_string()),
                    Ok(record) => {
                        if record.id.to_string() != *key {
                            check
                                .problems
                                .push("filed under another record's ID".into());
                        }
                        if record.household != id {
                            check.problems.push("names another household".into());
                        }
                        if record.device == self.device
                            && !own_keys.iter().any(|k| k[..] == record.key)
                        {
                            check
                                .problems
                                .push("signed with a key this phone never had".into());
                        }
                        for (what, hash) in record.blobs() {
                            let hex_hash = hex::encode(hash);
                            match self.blob(&hex_hash) {
                                Ok(None) => check.blobs_not_here += 1,
                                Ok(Some(bytes)) if evidence::sha256(&bytes) != hash => {
                                    check.problems.push(format!(
                                        "the {what} blob {hex_hash} does not match its hash"
                                    ))
                                }
                                Ok(Some(_)) => {}
                                // A sealed blob that does not open is this record's
                                // problem, not the end of the check.
                                Err(Error::Invalid { reason, .. }) => check.problems.push(reason),
                                Err(e) => return Err(e),
                            }
                        }
                    }
                }
                if let Some(receipt) = h.receipts.get(key) {
                    match check_receipt(org.as_ref(), entry, key, receipt) {
                        Ok(()) => check.receipt = ReceiptState::Verified,
                        Err(problem) => {
                            check.receipt = ReceiptState::Broken;
                            check.problems.push(problem);
                        }
                    }
                }
                out.push(check);
            }
        }
        Ok(out)
    }

    /// Takes in a photo (DESIGN.md section 7: upright, at most 1600 px, JPEG q80, no
    /// metadata) and attaches it to a visit; photo, thumbnail and reference commit
    /// together.
    ///
    /// Errors: [`Error::Media`] when the photo is refused (too big, broken, HEIC), in
    /// which case the visit is unchanged; [`Error::NoSuchHousehold`];
    /// [`Error::Model`] with `NoSuchVisit`.
    pub fn attach_photo(
        &mut self,
        household: HouseholdId,
        visit: VisitId,
        photo: &[u8],
    ) -> Result<PhotoRef> {
        let intake = media::intake_photo(photo, &self.limits)?;
        self.attach_intake(household, visit, &intake)
    }

    /// Attaches a photo that already went through [`media::intake_photo`].
    pub fn attach_intake(
        &mut self,
        household: HouseholdId,
        visit: VisitId,
        intake: &IntakePhoto,
    ) -> Result<PhotoRef> {
        let now = now_ms();
        let photo = PhotoRef {
            sha256: intake.sha256.clone(),
            size_bytes: intake.jpeg.len() as u64,
            media_type: "image/jpeg".into(),
            width: intake.width,
            height: intake.height,
            thumbnail_sha256: intake.thumb_sha256.clone(),
            added_at_ms: now,
        };
        let tx = self.conn.transaction()?;
        put_blob(
            &tx,
            self.seal.as_ref(),
            &intake.sha256,
            "image/jpeg",
            &intake.jpeg,
            now,
        )?;
        put_blob(
            &tx,
            self.seal.as_ref(),
            &intake.thumb_sha256,
            "image/jpeg",
            &intake.thumbnail,
            now,
        )?;
        edit_in(&tx, &self.device, household, |doc| {
            model::add_photo(doc, visit, &photo, now)
        })?;
        tx.commit()?;
        Ok(photo)
    }

    /// Sets a profile field of a household (its phone, head's name or address).
    ///
    /// Errors: [`Error::Invalid`] for a phone that is not 7 to 15 digits (after spaces
    /// and dashes are removed; empty clears it) or a text over 200 characters.
    pub fn set_household_field(
        &mut self,
        household: HouseholdId,
        field: ProfileField,
        value: &str,
    ) -> Result<()> {
        let cleaned;
        let value = match field {
            ProfileField::Phone => {
                cleaned = normalize_digits(value)
                    .chars()
                    .filter(|c| !matches!(c, ' ' | '-'))
                    .collect::<String>();
                let ok = cleaned.is_empty()
                    || ((7..=15).contains(&cleaned.len())
                        && cleaned.bytes().all(|b| b.is_ascii_digit()));
                if !ok {
                    return Err(Error::Invalid {
                        field: "phone",
                        reason: "a phone number is 7 to 15 digits".into(),
                    });
                }
                cleaned.as_str()
            }
            ProfileField::HeadName | ProfileField::Address => {
                if value.chars().count() > 200 {
                    return Err(Error::Invalid {
                        field: field.key(),
                        reason: "at most 200 characters".into(),
                    });
                }
                value
            }
        };
        self.edit(household, |doc| {
            model::set_profile_field(doc, field, value, now_ms())
        })
    }

    fn edit(
        &mut self,
        household: HouseholdId,
        f: impl FnOnce(&mut Automerge) -> Result<(), model::ModelError>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        edit_in(&tx, &self.device, household, f)?;
        tx.commit()?;
        Ok(())
    }

    /// Records a supervisor's follow-up call (电话回访) about a finished visit, durably
    /// and queued for the server, under a new call ID that it returns. The account is
    /// the one this phone signed in as; the server takes it only from a supervisor
    /// (the permission table, docs/access.md).
    ///
    /// Errors: [`Error::NotSignedIn`]; [`Error::NoSuchHousehold`]; [`Error::Model`] with
    /// `NoSuchVisit`; [`Error::Invalid`] for a visit still in progress or voided, answers
    /// given when nobody was reached (or missing when someone was), remarks over 500
    /// characters, or a time before the visit.
    pub fn record_follow_up_call(
        &mut self,
        household: HouseholdId,
        call: FollowUpInput,
    ) -> Result<String> {
        let by = self.setting("username")?.ok_or(Error::NotSignedIn)?;
        let h = self.household(household)?;
        let v = h
            .visits
            .get(&call.visit.to_string())
            .ok_or_else(|| model::ModelError::NoSuchVisit(call.visit.to_string()))?;
        let id = Uuid::new_v4().to_string();
        let value = model::FollowUpCall {
            visit_id: call.visit.to_string(),
            by,
            called_at_ms: call.called_at_ms,
            reached: call.reached,
            confirmed: call.confirmed,
            understood: call.understood,
            remarks: call.remarks.trim().to_string(),
        };
        check_follow_up_call(v, &value)?;
        self.edit(household, |doc| {
            model::add_follow_up_call(doc, &id, &value, now_ms())
        })?;
        Ok(id)
    }

    /// Every conflict in every household on this phone.
    pub fn conflicts(&self) -> Result<Vec<HouseholdConflict>> {
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT doc_id, bytes FROM documents WHERE kind = 'household'")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id = uuid_from(&r.get::<_, Vec<u8>>(0)?);
            let bytes: Vec<u8> = r.get(1)?;
            let doc = Automerge::load(&bytes)
                .map_err(|source| Error::document(id.to_string(), source))?;
            out.extend(
                model::conflicts(&doc)
                    .into_iter()
                    .map(|conflict| HouseholdConflict {
                        household: HouseholdId(id),
                        conflict,
                    }),
            );
        }
        Ok(out)
    }

    /// A stored blob's bytes, `None` when absent.
    ///
    /// Errors: [`Error::Invalid`] when a sealed blob does not open (damaged);
    /// [`Error::Storage`].
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let stored: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT bytes FROM blobs WHERE sha256 = ?1", [sha256], |r| {
                r.get(0)
            })
            .optional()?;
        match (stored, &self.seal) {
            (Some(bytes), Some(seal)) => seal.open(sha256, &bytes).map(Some),
            (stored, _) => Ok(stored),
        }
    }

    /// Changes made here and not yet acknowledged by the server, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxChange>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT doc_id, hash, bytes FROM outbox ORDER BY seq")?;
        let rows = stmt.query_map([], |r| {
            let hash: Vec<u8> = r.get(1)?;
            Ok(OutboxChange {
                doc: uuid_from(&r.get::<_, Vec<u8>>(0)?),
                hash: hash.try_into().unwrap_or([0; 32]),
                bytes: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Hashes of blobs not yet uploaded, oldest first.
    pub fn pending_blobs(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sha256 FROM blobs WHERE uploaded = 0 ORDER BY created_at_ms, sha256",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Documents deleted because the server sent them as removed (they left this
    /// phone's scope), not yet reported to the server.
    pub fn dropped_documents(&self) -> Result<Vec<Uuid>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT doc_id FROM dropped_documents ORDER BY dropped_at_ms, doc_id",
        )?;
        let rows = stmt.query_map([], |r| Ok(uuid_from(&r.get::<_, Vec<u8>>(0)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The highest numbered sync answer applied ([`Effect::Delivered`]), 0 before any.
    pub fn delivered(&self) -> Result<u64> {
        Ok(get_meta(&self.conn, "delivered")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    /// A sync session from what this store holds: the cursor, the outbox, the blobs not
    /// yet uploaded, the last numbered answer applied and the documents dropped and not
    /// yet reported.
    pub fn sync_session(&self) -> Result<SyncSession> {
        Ok(
            SyncSession::new(self.cursor()?, self.outbox()?, self.pending_blobs()?)
                .with_holdings(self.delivered()?, self.dropped_documents()?),
        )
    }

    /// The sync cursor: the last server sequence number applied.
    pub fn cursor(&self) -> Result<u64> {
        Ok(get_meta(&self.conn, "cursor")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    /// Changes the server refused, with reasons.
    pub fn refused_changes(&self) -> Result<Vec<RefusedChange>> {
        let mut stmt = self
            .conn
            .prepare("SELECT doc_id, hash, reason FROM refused_changes ORDER BY refused_at_ms")?;
        let rows = stmt.query_map([], |r| {
            Ok(RefusedChange {
                doc: uuid_from(&r.get::<_, Vec<u8>>(0)?),
                hash: hex::encode(r.get::<_, Vec<u8>>(1)?),
                reason: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A value of the store's settings (`server_url`, `username`, ...).
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        get_meta(&self.conn, key)
    }

    /// Sets a value of the store's settings.
    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<()> {
        set_meta(&self.conn, key, value)
    }

    /// Applies the effects of one sync answer in one transaction: acknowledgements,
    /// refusals, document updates and the cursor commit together or not at all, so a
    /// phone killed here repeats the answer's request next time and loses nothing.
    ///
    /// An answer numbered at or below the last one applied ([`Effect::Delivered`]) came
    /// late: the server has since sent again what this phone lacked, and may have taken
    /// back what it sent, so its snapshots and removals are skipped.
    pub fn apply_effects(&mut self, effects: &[Effect]) -> Result<()> {
        let tx = self.conn.transaction()?;
        let now = now_ms();
        let delivered: u64 = get_meta(&tx, "delivered")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let stale = effects
            .iter()
            .any(|e| matches!(e, Effect::Delivered(d) if *d <= delivered));
        for effect in effects {
            match effect {
                Effect::Acked(hashes) => {
                    let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE hash = ?1")?;
                    for h in hashes {
                        stmt.execute([&h[..]])?;
                    }
                }
                Effect::Rejected(list) => {
                    let mut by_doc: HashMap<Uuid, Vec<ChangeHash>> = HashMap::new();
                    for (hash, reason) in list {
                        let doc: Option<Vec<u8>> = tx
                            .query_row(
                                "SELECT doc_id FROM outbox WHERE hash = ?1",
                                [&hash[..]],
                                |r| r.get(0),
                            )
                            .optional()?;
                        refuse_from_outbox(&tx, &hash[..], reason, now)?;
                        if let Some(doc) = doc {
                            by_doc
                                .entry(uuid_from(&doc))
                                .or_default()
                                .push(ChangeHash(*hash));
                        }
                    }
                    for (doc, hashes) in by_doc {
                        drop_refused(&tx, &self.device, doc, &hashes, now)?;
                    }
                }
                Effect::Apply(update) if stale && update.kind != UpdateKind::Changes => {}
                Effect::Apply(update) => apply_update(&tx, &self.device, update, now)?,
                Effect::Cursor(c) => {
                    let current: u64 = get_meta(&tx, "cursor")?
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if *c > current {
                        set_meta(&tx, "cursor", &c.to_string())?;
                    }
                }
                Effect::BlobUploaded(sha) => {
                    tx.execute("UPDATE blobs SET uploaded = 1 WHERE sha256 = ?1", [sha])?;
                    // A blob of a household that has left this phone goes once uploaded.
                    if tx.execute("DELETE FROM blobs WHERE sha256 = ?1 AND discard = 1", [sha])? > 0
                    {
                        tx.execute("DELETE FROM signatures WHERE png_sha256 = ?1", [sha])?;
                    }
                }
                Effect::Delivered(d) => {
                    if *d > delivered {
                        set_meta(&tx, "delivered", &d.to_string())?;
                    }
                }
                Effect::DroppedReported(docs) => {
                    let mut stmt =
                        tx.prepare_cached("DELETE FROM dropped_documents WHERE doc_id = ?1")?;
                    for d in docs {
                        stmt.execute([&d.as_bytes()[..]])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Rebuilds the household list from the documents.
    fn reindex(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        let ids: Vec<Vec<u8>> = {
            let mut stmt = tx.prepare("SELECT doc_id FROM documents WHERE kind = 'household'")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for id in ids {
            let uuid = uuid_from(&id);
            if let Some(doc) = load_doc(&tx, uuid, &self.device)? {
                index_household(&tx, uuid, &doc)?;
            }
        }
        set_meta(&tx, "reindex", "0")?;
        tx.commit()?;
        Ok(())
    }

    /// Every household document's heads, for comparing replicas in tests and tools.
    pub fn document_heads(&self) -> Result<HashMap<Uuid, Vec<ChangeHash>>> {
        let mut stmt = self.conn.prepare("SELECT doc_id, bytes FROM documents")?;
        let mut rows = stmt.query([])?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next()? {
            let id = uuid_from(&r.get::<_, Vec<u8>>(0)?);
            let doc = Automerge::load(&r.get::<_, Vec<u8>>(1)?)
                .map_err(|source| Error::document(id.to_string(), source))?;
            let mut heads = doc.get_heads();
            heads.sort();
            out.insert(id, heads);
        }
        Ok(out)
    }
}

/// `PRAGMA application_id` of a phone store ("DSTP"), set by the first migration.
pub const APPLICATION_ID: i32 = 0x4453_5450;

/// Refuses a SQLite file that is not a phone store (a server database, some other
/// app's file) before anything is written to it. A file with no tables is new.
fn check_identity(conn: &Connection) -> Result<()> {
    let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    if app == APPLICATION_ID || (app == 0 && tables == 0) {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "path",
            reason: "the file is a SQLite database, but not a Doorstep phone store".into(),
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::StoreTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn load_doc(conn: &Connection, id: Uuid, device: &DeviceId) -> Result<Option<Automerge>> {
    let bytes: Option<Vec<u8>> = conn
        .query_row(
            "SELECT bytes FROM documents WHERE doc_id = ?1",
            [&id.as_bytes()[..]],
            |r| r.get(0),
        )
        .optional()?;
    bytes
        .map(|b| {
            Automerge::load(&b)
                .map(|d| d.with_actor(device.actor()))
                .map_err(|source| Error::document(id.to_string(), source))
        })
        .transpose()
}

/// Saves a document. Its kind is taken from its `kind` field when it is first stored
/// and never changed after: a household cannot turn itself into the organisation
/// document by a later edit.
fn save_doc(tx: &Transaction<'_>, id: Uuid, doc: &Automerge) -> Result<()> {
    let stored: Option<String> = tx
        .query_row(
            "SELECT kind FROM documents WHERE doc_id = ?1",
            [&id.as_bytes()[..]],
            |r| r.get(0),
        )
        .optional()?;
    let kind = stored
        .or_else(|| model::document_kind(doc))
        .unwrap_or_else(|| "household".into());
    tx.execute(
        "INSERT INTO documents (doc_id, kind, bytes, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (doc_id) DO UPDATE SET bytes = excluded.bytes,
             updated_at_ms = excluded.updated_at_ms",
        params![&id.as_bytes()[..], kind, doc.save(), now_ms()],
    )?;
    if kind == "household" {
        index_household(tx, id, doc)?;
    }
    Ok(())
}

fn index_household(tx: &Transaction<'_>, id: Uuid, doc: &Automerge) -> Result<()> {
    let Ok(h) = model::read_household(doc) else {
        // A document this build cannot read as a household is kept, just not listed.
        return Ok(());
    };
    let mut names: Vec<&str> = vec![h.head_name.as_str()];
    names.extend(h.residents.values().map(|r| r.name.as_str()));
    let mut phones: Vec<&str> = vec![h.phone.as_str()];
    phones.extend(h.residents.values().filter_map(|r| r.phone.as_deref()));
    tx.execute(
        "INSERT OR REPLACE INTO household_index
           (doc_id, village, grid, door_number, head_name, names, phones, status, visits)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            &id.as_bytes()[..],
            h.village,
            h.grid,
            h.door_number,
            h.head_name,
            names.join(" "),
            format!("{} ", phones.join(" ")),
            h.visit_status(),
            h.visits.len() as i64,
        ],
    )?;
    tasks::index_rectifications(tx, id, &h)
}

fn edit_in(
    tx: &Transaction<'_>,
    device: &DeviceId,
    household: HouseholdId,
    f: impl FnOnce(&mut Automerge) -> Result<(), model::ModelError>,
) -> Result<()> {
    let doc = load_doc(tx, household.0, device)?
        .ok_or_else(|| Error::NoSuchHousehold(household.to_string()))?;
    edit_doc_in(tx, household.0, doc, f)
}

/// Applies `f` to the document `id` (loaded as `doc`), queues the changes it made in
/// the outbox and saves the document, in the caller's transaction.
fn edit_doc_in(
    tx: &Transaction<'_>,
    id: Uuid,
    mut doc: Automerge,
    f: impl FnOnce(&mut Automerge) -> Result<(), model::ModelError>,
) -> Result<()> {
    let before = doc.get_heads();
    f(&mut doc)?;
    let now = now_ms();
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox (doc_id, hash, bytes, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for mut change in doc.get_changes(&before) {
        let hash = change.hash();
        stmt.execute(params![
            &id.as_bytes()[..],
            &hash.0[..],
            change.bytes().as_ref(),
            now
        ])?;
    }
    save_doc(tx, id, &doc)
}

/// Stores a blob queued for upload (sealed in an encrypted store); a blob already
/// here is kept as it is.
fn put_blob(
    tx: &Transaction<'_>,
    seal: Option<&BlobSeal>,
    sha256: &str,
    media_type: &str,
    bytes: &[u8],
    now: i64,
) -> Result<()> {
    let sealed;
    let stored = match seal {
        Some(seal) => {
            sealed = seal.seal(sha256, bytes)?;
            &sealed[..]
        }
        None => bytes,
    };
    tx.execute(
        "INSERT OR IGNORE INTO blobs (sha256, media_type, bytes, uploaded, created_at_ms)
         VALUES (?1, ?2, ?3, 0, ?4)",
        params![sha256, media_type, stored, now],
    )?;
    Ok(())
}

fn apply_update(
    tx: &Transaction<'_>,
    device: &DeviceId,
    update: &DocUpdate,
    now: i64,
) -> Result<()> {
    let id = update.doc;
    let key = &id.as_bytes()[..];
    match update.kind {
        UpdateKind::Removed => remove_document(tx, device, id, now)?,
        UpdateKind::Snapshot | UpdateKind::Changes => {
            let held = load_doc(tx, id, device)?;
            let new_here = held.is_none();
            let mut doc = held.unwrap_or_else(|| Automerge::new().with_actor(device.actor()));
            let before = doc.get_heads();
            doc.load_incremental(&update.bytes)
                .map_err(|source| Error::document(id.to_string(), source))?;
            if doc.get_heads() != before {
                save_doc(tx, id, &doc)?;
                if new_here {
                    // Back on this phone (it moved back before the drop was reported):
                    // held again, and its blobs waiting for upload are kept after it.
                    tx.execute("DELETE FROM dropped_documents WHERE doc_id = ?1", [key])?;
                    let discarding: bool = tx
                        .prepare_cached("SELECT 1 FROM blobs WHERE discard = 1")?
                        .exists([])?;
                    if discarding && let Ok(h) = model::read_household(&doc) {
                        let mut stmt =
                            tx.prepare_cached("UPDATE blobs SET discard = 0 WHERE sha256 = ?1")?;
                        for sha in household_blobs(&h) {
                            stmt.execute([sha])?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// A document the server sent as removed: it left this phone's scope. It is deleted
/// unless something recorded here is not on the server yet: a change in the outbox, or
/// a visit of this phone still open (the worker may be at the door; the server keeps
/// taking this phone's changes to it). Then it stays, and the server sends `Removed`
/// again at every sync until it goes. Its blobs already uploaded are deleted with it;
/// those not yet uploaded stay queued and are deleted once uploaded. The document is
/// listed in `dropped_documents` for the next sync to report; so is one that was not
/// here at all.
fn remove_document(tx: &Transaction<'_>, device: &DeviceId, id: Uuid, now: i64) -> Result<()> {
    let key = &id.as_bytes()[..];
    let pending: bool = tx
        .prepare_cached("SELECT 1 FROM outbox WHERE doc_id = ?1")?
        .exists([key])?;
    if pending {
        return Ok(());
    }
    if let Some(doc) = load_doc(tx, id, device)? {
        let household = model::read_household(&doc).ok();
        if let Some(h) = &household {
            let mine = device.to_string();
            let open = h
                .visits
                .values()
                .any(|v| v.device_id == mine && v.outcome.is_none() && v.voided.is_none());
            if open {
                return Ok(());
            }
        }
        tx.execute("DELETE FROM documents WHERE doc_id = ?1", [key])?;
        tx.execute("DELETE FROM household_index WHERE doc_id = ?1", [key])?;
        tx.execute("DELETE FROM rectification_index WHERE doc_id = ?1", [key])?;
        if let Some(h) = &household {
            for sha in household_blobs(h) {
                if tx.execute(
                    "DELETE FROM blobs WHERE sha256 = ?1 AND uploaded = 1",
                    [&sha],
                )? > 0
                {
                    tx.execute("DELETE FROM signatures WHERE png_sha256 = ?1", [&sha])?;
                } else {
                    tx.execute("UPDATE blobs SET discard = 1 WHERE sha256 = ?1", [&sha])?;
                }
            }
        }
    }
    tx.execute(
        "INSERT OR IGNORE INTO dropped_documents (doc_id, dropped_at_ms) VALUES (?1, ?2)",
        params![key, now],
    )?;
    Ok(())
}

/// Every blob a household's visits and records cite: photos and their thumbnails,
/// signature strokes and images (a witness's too).
fn household_blobs(h: &Household) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in h.visits.values() {
        for p in v.photos.values() {
            out.push(p.sha256.clone());
            out.push(p.thumbnail_sha256.clone());
        }
    }
    for e in h.evidence.values() {
        if let Ok(record) = EvidenceRecord::from_canonical(&e.record.0) {
            out.extend(record.blobs().into_iter().map(|(_, d)| hex::encode(d)));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Why no template can be shown: none is in force on the phone's date, which is either
/// before the office's first version or wrong.
const NOT_IN_FORCE: &str =
    "no version of this template is in force on the phone's date; check the phone's clock";

/// What [`Store::finish_visit`] names when a completed visit lacks a signed paper.
pub const MISSING_EVIDENCE: &str = "a signed notice or pledge";
/// What [`Store::finish_visit`] names when a completed visit lacks a photo.
pub const MISSING_PHOTO: &str = "a photo";

/// Media type of a compact signature strokes blob ([`signature::encode_strokes`]).
pub const STROKES_MEDIA_TYPE: &str = "application/vnd.doorstep.strokes+cbor";

/// Checks a receipt against its record: the log entry it describes hashes to
/// `entry_sha256`, and the server's signature of that hash verifies under the key it
/// names, which the organisation document lists.
fn check_receipt(
    org: Option<&Organisation>,
    entry: &EvidenceEntry,
    key: &str,
    receipt: &model::Receipt,
) -> std::result::Result<(), String> {
    let log = evidence::receipt_log_entry(key, entry, receipt).map_err(|e| e.to_string())?;
    let hash = log.hash();
    if receipt.entry_sha256.0 != hash {
        return Err("the receipt does not describe this record".into());
    }
    let listed = org.is_some_and(|o| o.server_keys.contains_key(&receipt.server_key));
    let server_key = evidence::parse_sha256(&receipt.server_key)
        .filter(|_| listed)
        .ok_or("the receipt is signed by a key the organisation does not list")?;
    if !evidence::verify_receipt(&server_key, &hash, &receipt.server_signature.0) {
        return Err("the server's countersignature does not verify".into());
    }
    Ok(())
}

fn invalid(field: &'static str, reason: &str) -> Error {
    Error::Invalid {
        field,
        reason: reason.into(),
    }
}

fn check_text(field: &'static str, text: &str, min: usize, max: usize) -> Result<()> {
    let n = text.chars().count();
    if n < min || n > max || text.chars().any(char::is_control) {
        return Err(invalid(
            field,
            &format!("{min} to {max} characters, no control characters"),
        ));
    }
    Ok(())
}

fn digest(hex_text: &str) -> Result<[u8; 32]> {
    evidence::parse_sha256(hex_text).ok_or_else(|| invalid("sha256", "not 64 hex digits"))
}

/// Whether the resident is known to be under 18 at `now_ms`: by the birth date, else by
/// the date inside an 18-digit ID number (GB 11643-1999, digits 7 to 14). Unknown ages
/// are not refused: many rosters have neither.
pub(crate) fn is_minor(resident: &model::Resident, now_ms: i64) -> bool {
    let is_date = |d: &str| {
        d.len() == 10
            && d.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
    };
    let from_id = resident.id_number.as_deref().and_then(|id| {
        // Only the 18-character numbers of GB 11643-1999 carry the full year.
        let d = id.get(6..14).filter(|_| id.chars().count() == 18)?;
        let date = format!("{}-{}-{}", d.get(..4)?, d.get(4..6)?, d.get(6..)?);
        is_date(&date).then_some(date)
    });
    let written = resident.birth_date.clone().filter(|d| is_date(d));
    let Some(birth) = written.or(from_id) else {
        return false;
    };
    let today = model::town_date(now_ms);
    let (Ok(year), Some(rest)) = (today[..4].parse::<i32>(), today.get(4..)) else {
        return false;
    };
    let adult_if_born_by = format!("{:04}{rest}", year - 18);
    birth.as_str() > adult_if_born_by.as_str()
}

fn current_key(conn: &Connection) -> Result<Option<DeviceKey>> {
    let seed: Option<Vec<u8>> = conn
        .query_row(
            "SELECT seed FROM device_keys WHERE retired_at_ms IS NULL ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    seed.map(|s| {
        let seed: [u8; 32] = s
            .try_into()
            .map_err(|_| invalid("device_key", "the stored key is not 32 bytes"))?;
        Ok(DeviceKey::from_seed(&seed))
    })
    .transpose()
}

fn insert_new_key(conn: &Connection) -> Result<DeviceKey> {
    let key = DeviceKey::generate()?;
    conn.execute(
        "INSERT INTO device_keys (seed, public_key, created_at_ms) VALUES (?1, ?2, ?3)",
        params![&key.seed()[..], &key.public()[..], now_ms()],
    )?;
    Ok(key)
}

/// Moves a change from the outbox to `refused_changes` with the server's reason.
fn refuse_from_outbox(tx: &Transaction<'_>, hash: &[u8], reason: &str, now: i64) -> Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO refused_changes (hash, doc_id, bytes, reason, refused_at_ms)
         SELECT hash, doc_id, bytes, ?2, ?3 FROM outbox WHERE hash = ?1",
        params![hash, reason, now],
    )?;
    tx.execute("DELETE FROM outbox WHERE hash = ?1", [hash])?;
    Ok(())
}

/// Takes refused changes, and this phone's changes that build on them, out of the
/// phone's copy of the document, so that it again matches what the server holds and
/// later work there is accepted. The dropped changes are kept in `refused_changes`
/// (those that only built on a refused one with that reason); nothing is deleted.
fn drop_refused(
    tx: &Transaction<'_>,
    device: &DeviceId,
    id: Uuid,
    refused: &[ChangeHash],
    now: i64,
) -> Result<()> {
    let Some(doc) = load_doc(tx, id, device)? else {
        return Ok(());
    };
    let all: Vec<Change> = doc.get_changes(&[]).into_iter().collect();
    let mut dropped: std::collections::HashSet<ChangeHash> = refused.iter().copied().collect();
    // Until nothing more depends on a dropped change (changes are not assumed sorted).
    loop {
        let before = dropped.len();
        for c in &all {
            if c.deps().iter().any(|d| dropped.contains(d)) {
                dropped.insert(c.hash());
            }
        }
        if dropped.len() == before {
            break;
        }
    }
    let keep: Vec<Change> = all
        .iter()
        .filter(|c| !dropped.contains(&c.hash()))
        .cloned()
        .collect();
    if keep.len() == all.len() {
        return Ok(());
    }
    let mut rebuilt = Automerge::new().with_actor(device.actor());
    rebuilt
        .apply_changes(keep)
        .map_err(|source| Error::document(id.to_string(), source))?;
    for hash in dropped.difference(&refused.iter().copied().collect()) {
        refuse_from_outbox(
            tx,
            &hash.0[..],
            "it builds on a change that was refused",
            now,
        )?;
    }
    save_doc(tx, id, &rebuilt)
}

/// The statuses a household list can be filtered by.
const STATUSES: [&str; 6] = [
    "in_progress",
    "completed",
    "nobody_home",
    "refused",
    "moved_away",
    "unvisited",
];

/// Longest remarks of a visit, in characters.
pub const MAX_REMARKS_CHARS: usize = 2000;

/// Checks a follow-up call about visit `v` (the phone's and the server's rule): the
/// visit is finished and not voided, the call is not before it, a reached household
/// answers both questions and an unreached one neither, remarks are at most 500
/// characters without control characters (line breaks allowed).
///
/// Errors: [`Error::Invalid`] naming the field (`visit`, `called_at_ms`, `reached`,
/// `remarks`).
pub fn check_follow_up_call(v: &Visit, call: &model::FollowUpCall) -> Result<()> {
    if v.outcome.is_none() || v.voided.is_some() {
        return Err(invalid(
            "visit",
            "only a finished, not voided visit is checked",
        ));
    }
    if call.called_at_ms < v.started_at_ms {
        return Err(invalid("called_at_ms", "the call is before the visit"));
    }
    let answered = call.confirmed.is_some() && call.understood.is_some();
    let blank = call.confirmed.is_none() && call.understood.is_none();
    if (call.reached && !answered) || (!call.reached && !blank) {
        return Err(invalid(
            "reached",
            "a reached household answers both questions; an unreached one neither",
        ));
    }
    if call.remarks.chars().count() > 500
        || call.remarks.chars().any(|c| c.is_control() && c != '\n')
    {
        return Err(invalid(
            "remarks",
            "at most 500 characters, without control characters",
        ));
    }
    Ok(())
}

/// Checks a visit before it is written: times between 2000-01-01 and 2100-01-01 UTC,
/// the end not before the start and at most 24 hours after it; at most 32 target
/// groups of at most 50 characters; remarks of at most [`MAX_REMARKS_CHARS`]; a reason
/// of 1 to 200 characters for every outcome but completed; the place as
/// [`validate_place`] checks it.
///
/// Errors: [`Error::Invalid`] naming the first field that breaks a rule.
pub fn validate_visit(visit: &NewVisit) -> Result<()> {
    let bad = |field: &'static str, reason: &str| {
        Err(Error::Invalid {
            field,
            reason: reason.into(),
        })
    };
    validate_start(visit.started_at_ms, visit.location.as_ref())?;
    if let Some(end) = visit.finished_at_ms {
        if end < visit.started_at_ms {
            return bad("finished_at_ms", "the visit ends before it starts");
        }
        if end - visit.started_at_ms > 24 * 3_600_000 {
            return bad("finished_at_ms", "the visit lasts more than 24 hours");
        }
    }
    if visit.target_groups_reached.len() > 32
        || visit
            .target_groups_reached
            .iter()
            .any(|g| g.trim().is_empty() || g.chars().count() > 50)
    {
        return bad(
            "target_groups_reached",
            "at most 32 groups, each named in 1 to 50 characters",
        );
    }
    if visit.remarks.chars().count() > MAX_REMARKS_CHARS {
        return bad("remarks", "remarks are at most 2000 characters");
    }
    let reason = visit.outcome_reason.trim();
    if visit.outcome != VisitOutcome::Completed && reason.is_empty() {
        return bad(
            "outcome_reason",
            "say why the visit did not complete (nobody home, refused, moved away)",
        );
    }
    if reason.chars().count() > 200 {
        return bad("outcome_reason", "a reason is at most 200 characters");
    }
    Ok(())
}

/// Checks the start of a visit: a time between 2000-01-01 and 2100-01-01 UTC, and the
/// place as [`validate_place`] checks it.
///
/// Errors: [`Error::Invalid`] naming `started_at_ms` or the place's field.
pub fn validate_start(started_at_ms: i64, location: Option<&GeoPoint>) -> Result<()> {
    const Y2000: i64 = 946_684_800_000;
    const Y2100: i64 = 4_102_444_800_000;
    if !(Y2000..Y2100).contains(&started_at_ms) {
        return Err(invalid(
            "started_at_ms",
            "the start is not between the years 2000 and 2100",
        ));
    }
    match location {
        Some(p) => validate_place(p),
        None => Ok(()),
    }
}

/// Checks a place: latitude -90..=90 and longitude -180..=180 degrees, accuracy
/// 0..=100,000 m, all finite.
///
/// Errors: [`Error::Invalid`] naming `location.lat`, `location.lon` or
/// `location.accuracy_m`.
pub fn validate_place(p: &GeoPoint) -> Result<()> {
    if !(p.lat.is_finite() && (-90.0..=90.0).contains(&p.lat)) {
        return Err(invalid("location.lat", "latitude is -90 to 90 degrees"));
    }
    if !(p.lon.is_finite() && (-180.0..=180.0).contains(&p.lon)) {
        return Err(invalid("location.lon", "longitude is -180 to 180 degrees"));
    }
    if let Some(a) = p.accuracy_m
        && !(a.is_finite() && (0.0..=100_000.0).contains(&a))
    {
        return Err(invalid(
            "location.accuracy_m",
            "accuracy is 0 to 100,000 metres",
        ));
    }
    Ok(())
}

/// Full-width digits (０-９) as ASCII digits.
fn normalize_digits(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '０'..='９' => char::from(b'0' + (c as u32 - '０' as u32) as u8),
            '－' => '-',
            '\u{3000}' => ' ',
            c => c,
        })
        .collect()
}

/// Parses one change's bytes, for tools that inspect the outbox.
pub fn parse_change(bytes: &[u8]) -> Option<Change> {
    Change::from_bytes(bytes.to_vec()).ok()
}

fn uuid_from(bytes: &[u8]) -> Uuid {
    Uuid::from_slice(bytes).unwrap_or(Uuid::nil())
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn sample_doc() -> (HouseholdId, Vec<u8>) {
        let id = HouseholdId::new();
        let mut h = Household::new(id, "东坡村", "东坡村第1网格", "东坡村1号");
        h.head_name = "张三".into();
        h.phone = "13800001234".into();
        let doc = model::new_household_doc(&h, automerge::ActorId::random(), 0).unwrap();
        (id, doc.save())
    }

    /// Upgrading from every earlier version gives the same schema as a fresh store,
    /// and keeps what the old version held.
    #[test]
    fn upgrades_from_every_earlier_version() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = Store::open(dir.path().join("fresh.db")).unwrap();
        let want = schema_of(&fresh.conn);
        let (id, bytes) = sample_doc();
        for from in 1..SCHEMA_VERSION {
            let path = dir.path().join(format!("v{from}.db"));
            {
                let mut conn = Connection::open(&path).unwrap();
                for (i, sql) in MIGRATIONS.iter().enumerate().take(from as usize) {
                    let tx = conn.transaction().unwrap();
                    tx.execute_batch(sql).unwrap();
                    tx.pragma_update(None, "user_version", (i + 1) as i64)
                        .unwrap();
                    tx.commit().unwrap();
                }
                conn.execute(
                    "INSERT INTO documents VALUES (?1, 'household', ?2, 0)",
                    params![&id.0.as_bytes()[..], bytes],
                )
                .unwrap();
            }
            let upgraded = Store::open(&path).unwrap();
            assert_eq!(upgraded.schema_version().unwrap(), SCHEMA_VERSION);
            assert_eq!(schema_of(&upgraded.conn), want, "from version {from}");
            let list = upgraded.households(&HouseholdQuery::default()).unwrap();
            assert_eq!(list.len(), 1, "documents of version {from} are listed");
        }
    }

    #[test]
    fn a_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(Store::open(&path), Err(Error::StoreTooNew { .. })));
    }

    #[test]
    fn a_visit_is_queued_and_searchable_and_the_device_id_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (id, bytes) = sample_doc();
        let device = {
            let mut s = Store::open(&path).unwrap();
            s.insert_household_doc(&bytes, id).unwrap();
            assert!(s.outbox().unwrap().is_empty());
            s.record_visit(
                id,
                NewVisit {
                    outcome: VisitOutcome::NobodyHome,
                    outcome_reason: "nobody answered".into(),
                    started_at_ms: 1_780_000_000_000,
                    finished_at_ms: Some(1_780_000_000_001),
                    target_groups_reached: vec![],
                    remarks: String::new(),
                    location: None,
                },
            )
            .unwrap();
            s.device_id()
        };
        let s = Store::open(&path).unwrap();
        assert_eq!(s.device_id(), device);
        let outbox = s.outbox().unwrap();
        assert_eq!(outbox.len(), 1);
        let change = parse_change(&outbox[0].bytes).unwrap();
        assert_eq!(change.actor_id(), &device.actor());
        let q = |t: &str| HouseholdQuery {
            text: Some(t.into()),
            ..Default::default()
        };
        assert_eq!(s.households(&q("张")).unwrap().len(), 1);
        assert_eq!(s.households(&q("1234")).unwrap().len(), 1);
        assert_eq!(s.households(&q("9999")).unwrap().len(), 0);
        let done = HouseholdQuery {
            status: Some("nobody_home".into()),
            ..Default::default()
        };
        assert_eq!(s.households(&done).unwrap()[0].visits, 1);
    }

    /// A full disk (SQLite's page limit standing in for it) fails the write with a
    /// storage error and loses nothing that was confirmed before.
    #[test]
    fn a_full_disk_fails_the_write_and_keeps_what_was_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (id, bytes) = sample_doc();
        let mut s = Store::open(&path).unwrap();
        s.insert_household_doc(&bytes, id).unwrap();
        let pages: i64 = s
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        s.conn
            .pragma_update(None, "max_page_count", pages + 8)
            .unwrap();
        let mut confirmed = Vec::new();
        let err = loop {
            let visit = NewVisit {
                outcome: VisitOutcome::NobodyHome,
                outcome_reason: "nobody answered".into(),
                started_at_ms: 1_780_000_000_000,
                finished_at_ms: Some(1_780_000_000_001),
                target_groups_reached: vec![],
                remarks: "x".repeat(2000),
                location: None,
            };
            match s.record_visit(id, visit) {
                Ok(v) => confirmed.push(v.to_string()),
                Err(e) => break e,
            }
            assert!(confirmed.len() < 10_000, "the page limit never hit");
        };
        assert!(matches!(err, Error::Storage(_)), "{err}");
        drop(s);
        let s = Store::open(&path).unwrap();
        let held: Vec<String> = s.household(id).unwrap().visits.into_keys().collect();
        let mut want = confirmed.clone();
        want.sort();
        assert_eq!(held, want);
        assert_eq!(s.outbox().unwrap().len(), confirmed.len());
    }

    #[test]
    fn memory_paths_and_foreign_databases_are_refused_and_left_untouched() {
        assert!(matches!(
            Store::open(""),
            Err(Error::Invalid { field: "path", .. })
        ));
        assert!(matches!(
            Store::open(":memory:"),
            Err(Error::Invalid { field: "path", .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("other.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('x');")
            .unwrap();
        let before = std::fs::read(&foreign).unwrap();
        assert!(matches!(
            Store::open(&foreign),
            Err(Error::Invalid { field: "path", .. })
        ));
        assert_eq!(
            std::fs::read(&foreign).unwrap(),
            before,
            "the file is untouched"
        );
        let ours = dir.path().join("s.db");
        drop(Store::open(&ours).unwrap());
        Store::open(&ours).unwrap();
    }

    fn visit_at(start: i64) -> NewVisit {
        NewVisit {
            outcome: VisitOutcome::NobodyHome,
            outcome_reason: "nobody answered".into(),
            started_at_ms: start,
            finished_at_ms: Some(start + 60_000),
            target_groups_reached: vec!["老年人".into()],
            remarks: String::new(),
            location: Some(GeoPoint {
                lat: 30.0,
                lon: 120.0,
                accuracy_m: Some(10.0),
            }),
        }
    }

    #[test]
    fn visits_breaking_a_rule_are_refused_with_the_field_named() {
        let now = 1_780_000_000_000;
        assert!(validate_visit(&visit_at(now)).is_ok());
        let field = |v: NewVisit| match validate_visit(&v) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert_eq!(field(visit_at(i64::MIN)), "started_at_ms");
        let mut v = visit_at(now);
        v.finished_at_ms = Some(now + 25 * 3_600_000);
        assert_eq!(field(v), "finished_at_ms");
        let mut v = visit_at(now);
        v.remarks = "诈".repeat(MAX_REMARKS_CHARS + 1);
        assert_eq!(field(v), "remarks");
        let mut v = visit_at(now);
        v.location = Some(GeoPoint {
            lat: f64::NAN,
            lon: 0.0,
            accuracy_m: None,
        });
        assert_eq!(field(v), "location.lat");
        let mut v = visit_at(now);
        v.location = Some(GeoPoint {
            lat: 0.0,
            lon: -999.0,
            accuracy_m: None,
        });
        assert_eq!(field(v), "location.lon");
        let mut v = visit_at(now);
        v.location = Some(GeoPoint {
            lat: 0.0,
            lon: 0.0,
            accuracy_m: Some(-1.0),
        });
        assert_eq!(field(v), "location.accuracy_m");
        let mut v = visit_at(now);
        v.target_groups_reached = vec!["x".into(); 33];
        assert_eq!(field(v), "target_groups_reached");
    }

    #[test]
    fn phones_are_checked_and_searches_match_as_people_type_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path().join("s.db")).unwrap();
        let (id, bytes) = sample_doc();
        s.insert_household_doc(&bytes, id).unwrap();
        assert!(matches!(
            s.set_household_field(id, ProfileField::Phone, "not a phone ☎"),
            Err(Error::Invalid { field: "phone", .. })
        ));
        s.set_household_field(id, ProfileField::Phone, "１３９ 1234-5678")
            .unwrap();
        assert_eq!(s.household(id).unwrap().phone, "13912345678");
        let q = |t: &str| HouseholdQuery {
            text: Some(t.into()),
            ..Default::default()
        };
        assert_eq!(s.households(&q("５６７８")).unwrap().len(), 1);
        assert_eq!(s.households(&q("1234 5678")).unwrap().len(), 1);
        assert_eq!(s.households(&q("%")).unwrap().len(), 0);
        assert!(matches!(
            s.households(&q(&"张".repeat(101))),
            Err(Error::Invalid { field: "text", .. })
        ));
        let bad_status = HouseholdQuery {
            status: Some("COMPLETED".into()),
            ..Default::default()
        };
        assert!(matches!(
            s.households(&bad_status),
            Err(Error::Invalid {
                field: "status",
                ..
            })
        ));
    }

    #[test]
    fn reversed_times_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path().join("s.db")).unwrap();
        let (id, bytes) = sample_doc();
        s.insert_household_doc(&bytes, id).unwrap();
        let err = s
            .record_visit(
                id,
                NewVisit {
                    outcome: VisitOutcome::NobodyHome,
                    outcome_reason: "nobody answered".into(),
                    started_at_ms: 1_780_000_000_010,
                    finished_at_ms: Some(1_780_000_000_005),
                    target_groups_reached: vec![],
                    remarks: String::new(),
                    location: None,
                },
            )
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }));
    }

    /// A store holding one household (head 张三, adult; child 张小, 10 years old) and
    /// an organisation document with a notice and a pledge in force.
    fn signing_store(dir: &Path) -> (Store, HouseholdId, ResidentId, ResidentId) {
        fill_signing_store(Store::open(dir.join("s.db")).unwrap())
    }

    /// [`signing_store`]'s content in a given store; the head has an ID number and a
    /// phone.
    fn fill_signing_store(mut store: Store) -> (Store, HouseholdId, ResidentId, ResidentId) {
        let id = HouseholdId::new();
        let mut h = Household::new(id, "东坡村", "东坡村第1网格", "东坡村1号");
        let (head, child) = (ResidentId::new(), ResidentId::new());
        h.residents.insert(
            head.to_string(),
            model::Resident {
                name: "张三".into(),
                relation: "户主".into(),
                birth_date: Some("1960-05-01".into()),
                id_number: Some(HEAD_ID_NUMBER.into()),
                phone: Some(HEAD_PHONE.into()),
                ..Default::default()
            },
        );
        let ten_years_ago = model::town_date(now_ms() - 10 * 365 * 86_400_000);
        h.residents.insert(
            child.to_string(),
            model::Resident {
                name: "张小".into(),
                relation: "子".into(),
                birth_date: Some(ten_years_ago),
                ..Default::default()
            },
        );
        let server = automerge::ActorId::random();
        let doc = model::new_household_doc(&h, server.clone(), 0).unwrap();
        store.insert_household_doc(&doc.save(), id).unwrap();
        let mut org = model::new_organisation_doc(&Organisation::new(), server, 0).unwrap();
        for (tid, kind) in [
            ("notice", EvidenceKind::Notice),
            ("pledge", EvidenceKind::Pledge),
        ] {
            let mut v = TemplateVersion {
                title: format!("{tid} title"),
                body: "不出租、不出借银行卡；拿不准就打 96110。".into(),
                version: 1,
                effective_from: "2021-01-01".into(),
                text_sha256: String::new(),
            };
            v.text_sha256 = hex::encode(evidence::sha256(v.shown_text().as_bytes()));
            model::add_template_version(&mut org, tid, kind, &v, 0).unwrap();
        }
        store
            .insert_household_doc(&org.save(), HouseholdId::new())
            .unwrap();
        (store, id, head, child)
    }

    const HEAD_ID_NUMBER: &str = "110101196005014518";
    const HEAD_PHONE: &str = "13912345678";

    /// Every occurrence in the files of any of `secrets`, as (file, secret index).
    fn found_in_files(files: &[std::path::PathBuf], secrets: &[Vec<u8>]) -> Vec<(String, usize)> {
        let mut found = Vec::new();
        for f in files {
            let Ok(bytes) = std::fs::read(f) else {
                continue;
            };
            for (i, secret) in secrets.iter().enumerate() {
                if bytes.windows(secret.len()).any(|w| w == secret.as_slice()) {
                    found.push((f.display().to_string(), i));
                }
            }
        }
        found
    }

    /// What a completed visit leaves in a store, as byte strings a scan looks for: the
    /// names, the ID number and phone (as text), a window of the photo's and of the
    /// signature's stored bytes, and the village name.
    fn visit_secrets(s: &mut Store, h: HouseholdId, head: ResidentId) -> Vec<Vec<u8>> {
        let v = start_now(s, h);
        let photo = s.attach_photo(h, v, &tiny_jpeg()).unwrap();
        let e = sign(s, h, v, EvidenceKind::Notice, head).unwrap();
        s.finish_visit(h, v, completed()).unwrap();
        let jpeg = s.blob(&photo.sha256).unwrap().unwrap();
        let record = s.household(h).unwrap().evidence[&e.to_string()]
            .record
            .0
            .clone();
        let png_hash = EvidenceRecord::from_canonical(&record).unwrap().png_sha256;
        let png = s.blob(&hex::encode(png_hash)).unwrap().unwrap();
        let mid = |b: &[u8]| b[b.len() / 2..b.len() / 2 + 24].to_vec();
        vec![
            "张三".as_bytes().to_vec(),
            "张小".as_bytes().to_vec(),
            HEAD_ID_NUMBER.as_bytes().to_vec(),
            HEAD_PHONE.as_bytes().to_vec(),
            "东坡村".as_bytes().to_vec(),
            mid(&jpeg),
            mid(&png),
        ]
    }

    fn store_files(path: &Path) -> Vec<std::path::PathBuf> {
        ["", "-wal", "-shm", "-journal"]
            .iter()
            .map(|suffix| std::path::PathBuf::from(format!("{}{suffix}", path.display())))
            .filter(|p| p.exists())
            .collect()
    }

    /// Issue 5: scanning the database and WAL files of an encrypted store for the
    /// names, ID number, phone, photo and signature it holds finds nothing, open or
    /// closed; the same scan of a plain store finds them (so the scan can fail).
    #[test]
    fn an_encrypted_store_shows_no_names_numbers_photos_or_signatures_in_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = [0x5a; STORE_KEY_BYTES];
        let path = dir.path().join("enc.db");
        let (mut s, h, head, _) = fill_signing_store(Store::open_encrypted(&path, &key).unwrap());
        let secrets = visit_secrets(&mut s, h, head);
        let wal = std::fs::metadata(format!("{}-wal", path.display())).map_or(0, |m| m.len());
        assert!(wal > 0, "the scan should see a WAL with the visit in it");
        assert_eq!(found_in_files(&store_files(&path), &secrets), vec![]);
        drop(s);
        assert_eq!(found_in_files(&store_files(&path), &secrets), vec![]);
        // Reopened with its key, everything is there and the blobs open.
        let s = Store::open_encrypted(&path, &key).unwrap();
        assert_eq!(s.household(h).unwrap().visits.len(), 1);
        assert!(
            s.verify_evidence(Some(h))
                .unwrap()
                .iter()
                .all(|c| c.problems.is_empty())
        );
        drop(s);

        let plain = dir.path().join("plain.db");
        let (mut p, h, head, _) = fill_signing_store(Store::open(&plain).unwrap());
        let secrets = visit_secrets(&mut p, h, head);
        drop(p);
        let found = found_in_files(&store_files(&plain), &secrets);
        assert!(
            found.iter().any(|(_, i)| *i == 2),
            "ID number in the plain file: {found:?}"
        );
        assert!(
            found.iter().any(|(_, i)| *i == 5),
            "photo in the plain file: {found:?}"
        );
    }

    /// A store the app was killed over (its WAL not checkpointed) opened with a wrong
    /// key: `WrongKey`, and neither the database nor the WAL changes; the right key
    /// then finds everything.
    #[test]
    fn a_wrong_key_leaves_a_killed_apps_wal_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.db");
        let (id, bytes) = sample_doc();
        let mut s = Store::open_encrypted(&path, &[1; STORE_KEY_BYTES]).unwrap();
        s.insert_household_doc(&bytes, id).unwrap();
        // The files as a killed process leaves them: copied while the store is open.
        let copy = dir.path().join("killed.db");
        std::fs::copy(&path, &copy).unwrap();
        let wal = |p: &Path| std::path::PathBuf::from(format!("{}-wal", p.display()));
        std::fs::copy(wal(&path), wal(&copy)).unwrap();
        drop(s);
        let before = (
            std::fs::read(&copy).unwrap(),
            std::fs::read(wal(&copy)).unwrap(),
        );
        assert!(!before.1.is_empty());
        let err = Store::open_encrypted(&copy, &[2; STORE_KEY_BYTES]).unwrap_err();
        assert!(matches!(err, Error::WrongKey), "{err}");
        let after = (
            std::fs::read(&copy).unwrap(),
            std::fs::read(wal(&copy)).unwrap(),
        );
        assert!(after == before, "the database or its WAL changed");
        let s = Store::open_encrypted(&copy, &[1; STORE_KEY_BYTES]).unwrap();
        assert_eq!(s.household(id).unwrap().head_name, "张三");
    }

    /// A wrong key, no key, or a key for a plain store: a clear error, and the file is
    /// left byte for byte as it was.
    #[test]
    fn a_wrong_key_is_a_clear_error_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.db");
        let (id, bytes) = sample_doc();
        let mut s = Store::open_encrypted(&path, &[1; STORE_KEY_BYTES]).unwrap();
        s.insert_household_doc(&bytes, id).unwrap();
        drop(s);
        let before = std::fs::read(&path).unwrap();
        let err = Store::open_encrypted(&path, &[2; STORE_KEY_BYTES]).unwrap_err();
        assert!(matches!(err, Error::WrongKey), "{err}");
        assert!(matches!(Store::open(&path).unwrap_err(), Error::Storage(_)));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!Path::new(&format!("{}-wal", path.display())).exists());
        let s = Store::open_encrypted(&path, &[1; STORE_KEY_BYTES]).unwrap();
        assert_eq!(s.household(id).unwrap().head_name, "张三");
        drop(s);

        let plain = dir.path().join("plain.db");
        Store::open(&plain).unwrap();
        let before = std::fs::read(&plain).unwrap();
        let err = Store::open_encrypted(&plain, &[1; STORE_KEY_BYTES]).unwrap_err();
        assert!(matches!(err, Error::WrongKey), "{err}");
        assert_eq!(std::fs::read(&plain).unwrap(), before);
    }

    fn squiggle(width: f32) -> SignatureStrokes {
        let points = (0..40)
            .map(|i| signature::StrokePoint {
                x: 20.0 + i as f32 * width / 50.0,
                y: 60.0 + ((i as f32) * 0.7).sin() * 30.0,
                t_ms: i * 15,
                pressure: None,
            })
            .collect();
        SignatureStrokes {
            surface_width: width,
            surface_height: 150.0,
            strokes: vec![signature::Stroke { points }],
        }
    }

    fn sign(
        s: &mut Store,
        h: HouseholdId,
        v: VisitId,
        kind: EvidenceKind,
        signer: ResidentId,
    ) -> Result<EvidenceId> {
        let c = s.capture_signature(&squiggle(400.0), InkRule::Signature)?;
        s.sign_evidence(
            h,
            v,
            SignRequest {
                kind,
                template_id: None,
                signer,
                signature_png_sha256: c.png_sha256,
                witness: None,
                location: None,
            },
        )
    }

    fn start_now(s: &mut Store, h: HouseholdId) -> VisitId {
        s.start_visit(
            h,
            VisitStart {
                started_at_ms: now_ms(),
                location: None,
            },
        )
        .unwrap()
    }

    fn completed() -> VisitFinish {
        VisitFinish {
            outcome: VisitOutcome::Completed,
            outcome_reason: String::new(),
            finished_at_ms: now_ms() + 1,
            target_groups_reached: vec![],
            remarks: String::new(),
        }
    }

    fn tiny_jpeg() -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 90]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_completed_visit_needs_a_signed_paper_and_a_photo() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, h, head, _) = signing_store(dir.path());
        let start = VisitStart {
            started_at_ms: now_ms(),
            location: None,
        };
        let v = s.start_visit(h, start).unwrap();
        let missing = |e: Error| match e {
            Error::Incomplete { missing } => missing,
            other => panic!("expected Incomplete, got {other}"),
        };
        assert_eq!(
            missing(s.finish_visit(h, v, completed()).unwrap_err()),
            [MISSING_EVIDENCE, MISSING_PHOTO]
        );
        s.attach_photo(h, v, &tiny_jpeg()).unwrap();
        assert_eq!(
            missing(s.finish_visit(h, v, completed()).unwrap_err()),
            [MISSING_EVIDENCE]
        );
        let e = sign(&mut s, h, v, EvidenceKind::Pledge, head).unwrap();
        s.finish_visit(h, v, completed()).unwrap();
        let done = s.household(h).unwrap();
        assert_eq!(
            done.visits[&v.to_string()].outcome,
            Some(VisitOutcome::Completed)
        );
        assert_eq!(done.visit_status(), Some("completed"));
        // The record cites the photo, the template and the counter, and verifies here.
        let record =
            EvidenceRecord::from_canonical(&done.evidence[&e.to_string()].record.0).unwrap();
        assert_eq!(record.photos.len(), 1);
        assert_eq!(record.template_id, "pledge");
        assert_eq!(record.counter, 1);
        let checks = s.verify_evidence(None).unwrap();
        assert_eq!(checks.len(), 1);
        assert!(checks[0].problems.is_empty(), "{:?}", checks[0].problems);
        assert_eq!(checks[0].receipt, ReceiptState::Pending);
        // A finished visit takes no more signatures and cannot be finished again.
        assert!(matches!(
            sign(&mut s, h, v, EvidenceKind::Notice, head),
            Err(Error::Invalid { field: "visit", .. })
        ));
        assert!(matches!(
            s.finish_visit(h, v, completed()),
            Err(Error::Invalid { field: "visit", .. })
        ));
        // The next record takes the next counter.
        let v2 = start_now(&mut s, h);
        let e2 = sign(&mut s, h, v2, EvidenceKind::Notice, head).unwrap();
        let r2 = s.household(h).unwrap().evidence[&e2.to_string()]
            .record
            .clone();
        assert_eq!(EvidenceRecord::from_canonical(&r2.0).unwrap().counter, 2);
    }

    #[test]
    fn other_outcomes_need_a_reason_and_a_visit_is_voided_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, h, _, _) = signing_store(dir.path());
        let v = start_now(&mut s, h);
        let away = |reason: &str| VisitFinish {
            outcome: VisitOutcome::NobodyHome,
            outcome_reason: reason.into(),
            ..completed()
        };
        assert!(matches!(
            s.finish_visit(h, v, away("  ")),
            Err(Error::Invalid {
                field: "outcome_reason",
                ..
            })
        ));
        s.finish_visit(h, v, away("敲门无人应答")).unwrap();
        assert!(matches!(
            s.void_visit(h, v, ""),
            Err(Error::Invalid {
                field: "reason",
                ..
            })
        ));
        s.void_visit(h, v, "记错了户").unwrap();
        let after = s.household(h).unwrap();
        assert_eq!(after.visits.len(), 1, "a voided visit stays");
        assert_eq!(
            after.visits[&v.to_string()].voided.as_ref().unwrap().reason,
            "记错了户"
        );
        assert_eq!(after.visit_status(), None, "voided visits do not count");
    }

    #[test]
    fn blank_signatures_minors_and_unwitnessed_marks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, h, head, child) = signing_store(dir.path());
        let v = start_now(&mut s, h);
        let blobs_before = s.pending_blobs().unwrap().len();
        let blank = SignatureStrokes {
            surface_width: 400.0,
            surface_height: 150.0,
            strokes: vec![],
        };
        assert!(matches!(
            s.capture_signature(&blank, InkRule::Signature),
            Err(Error::Signature(signature::SignatureError::Blank { .. }))
        ));
        let dot = SignatureStrokes {
            strokes: vec![signature::Stroke {
                points: vec![signature::StrokePoint {
                    x: 50.0,
                    y: 50.0,
                    t_ms: 0,
                    pressure: None,
                }],
            }],
            ..blank.clone()
        };
        assert!(matches!(
            s.capture_signature(&dot, InkRule::Mark),
            Err(Error::Signature(signature::SignatureError::Blank { .. }))
        ));
        assert_eq!(
            s.pending_blobs().unwrap().len(),
            blobs_before,
            "nothing stored"
        );
        // A child does not sign.
        assert!(matches!(
            sign(&mut s, h, v, EvidenceKind::Notice, child),
            Err(Error::Invalid {
                field: "signer",
                ..
            })
        ));
        // A mark needs a witness; the witness signs in full.
        let cross = SignatureStrokes {
            strokes: vec![
                signature::Stroke {
                    points: (0..8)
                        .map(|i| signature::StrokePoint {
                            x: 180.0 + i as f32 * 4.0,
                            y: 60.0 + i as f32 * 4.0,
                            t_ms: i * 10,
                            pressure: None,
                        })
                        .collect(),
                },
                signature::Stroke {
                    points: (0..8)
                        .map(|i| signature::StrokePoint {
                            x: 208.0 - i as f32 * 4.0,
                            y: 60.0 + i as f32 * 4.0,
                            t_ms: 200 + i * 10,
                            pressure: None,
                        })
                        .collect(),
                },
            ],
            ..blank.clone()
        };
        let mark = s.capture_signature(&cross, InkRule::Mark).unwrap();
        let request = |witness| SignRequest {
            kind: EvidenceKind::Notice,
            template_id: None,
            signer: head,
            signature_png_sha256: mark.png_sha256.clone(),
            witness,
            location: None,
        };
        assert!(matches!(
            s.sign_evidence(h, v, request(None)),
            Err(Error::Invalid {
                field: "signature",
                ..
            })
        ));
        let witness_sig = s
            .capture_signature(&squiggle(400.0), InkRule::Signature)
            .unwrap();
        let witness = |name: &str| WitnessInput {
            name: name.into(),
            reason: "不会写字，画押".into(),
            signature_png_sha256: witness_sig.png_sha256.clone(),
        };
        assert!(matches!(
            s.sign_evidence(h, v, request(Some(witness("")))),
            Err(Error::Invalid {
                field: "witness.name",
                ..
            })
        ));
        let e = s
            .sign_evidence(h, v, request(Some(witness("李四"))))
            .unwrap();
        let record = EvidenceRecord::from_canonical(
            &s.household(h).unwrap().evidence[&e.to_string()].record.0,
        )
        .unwrap();
        assert_eq!(record.witness.as_ref().unwrap().name, "李四");
        assert_eq!(record.blobs().len(), 4);
        assert!(s.verify_evidence(Some(h)).unwrap()[0].problems.is_empty());
    }

    #[test]
    fn a_damaged_blob_or_a_renewed_key_shows_in_the_phones_own_check() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, h, head, _) = signing_store(dir.path());
        let v = start_now(&mut s, h);
        sign(&mut s, h, v, EvidenceKind::Notice, head).unwrap();
        let old_key = s.device_public_key();
        assert_ne!(s.renew_device_key().unwrap(), old_key);
        sign(&mut s, h, v, EvidenceKind::Pledge, head).unwrap();
        let checks = s.verify_evidence(None).unwrap();
        assert_eq!(checks.len(), 2);
        assert!(checks.iter().all(|c| c.problems.is_empty()), "{checks:?}");
        // Reopening keeps the new key.
        drop(s);
        let mut s = Store::open(dir.path().join("s.db")).unwrap();
        assert_ne!(s.device_public_key(), old_key);
        // A blob changed on disk is named.
        s.conn
            .execute(
                "UPDATE blobs SET bytes = zeroblob(10) WHERE media_type = 'image/png'",
                [],
            )
            .unwrap();
        let checks = s.verify_evidence(None).unwrap();
        assert!(
            checks
                .iter()
                .all(|c| c.problems.iter().any(|p| p.contains("signature image")))
        );
        s.set_setting("x", "y").unwrap();
    }

    /// A change the server makes to the phone's copy of `id`, arriving as a sync would
    /// bring it.
    fn from_server(s: &mut Store, id: Uuid, f: impl FnOnce(&mut Automerge)) {
        let mut doc = s.load_doc(id).unwrap().unwrap().fork();
        doc.set_actor(automerge::ActorId::random());
        let before = doc.get_heads();
        f(&mut doc);
        let bytes: Vec<u8> = doc
            .get_changes(&before)
            .iter()
            .flat_map(|c| c.raw_bytes().to_vec())
            .collect();
        s.apply_effects(&[Effect::Apply(DocUpdate {
            doc: id,
            kind: UpdateKind::Changes,
            bytes: bytes.into(),
        })])
        .unwrap();
    }

    #[test]
    fn a_rectification_is_fixed_by_a_completed_visit_of_this_phone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, h, head, _) = signing_store(dir.path());
        s.set_setting("username", "w1").unwrap();
        let v = start_now(&mut s, h);
        s.attach_photo(h, v, &tiny_jpeg()).unwrap();
        sign(&mut s, h, v, EvidenceKind::Pledge, head).unwrap();
        s.finish_visit(h, v, completed()).unwrap();
        let open = start_now(&mut s, h);
        let task = Uuid::new_v4().to_string();
        from_server(&mut s, h.0, |d| {
            model::upgrade_household(d, 1).unwrap();
            model::put_rectification(
                d,
                &task,
                &model::Rectification {
                    visit_id: v.to_string(),
                    source: "review".into(),
                    reason: "照片看不清".into(),
                    opened_by: "office".into(),
                    opened_at_ms: 5,
                    assignee: "w1".into(),
                    closed: None,
                },
                5,
            )
            .unwrap()
        });
        let tasks = s.rectifications().unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(
            (tasks[0].state.as_str(), tasks[0].reason.as_str()),
            ("open", "照片看不清")
        );
        let field = |e: Error| match e {
            Error::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other}"),
        };
        assert_eq!(
            field(s.fix_rectification(h, "no-such", v, "补拍").unwrap_err()),
            "task"
        );
        assert_eq!(
            field(s.fix_rectification(h, &task, open, "补拍").unwrap_err()),
            "visit"
        );
        assert_eq!(
            field(s.fix_rectification(h, &task, v, " ").unwrap_err()),
            "note"
        );
        let queued = s.outbox().unwrap().len();
        s.fix_rectification(h, &task, v, "已补拍门牌照片").unwrap();
        assert_eq!(
            s.outbox().unwrap().len(),
            queued + 1,
            "the fix waits for the server"
        );
        let tasks = s.rectifications().unwrap();
        assert_eq!(
            (tasks[0].state.as_str(), tasks[0].fix_visit.clone()),
            ("fixed", Some(v.to_string()))
        );
        assert_eq!(
            field(s.fix_rectification(h, &task, v, "再补").unwrap_err()),
            "task"
        );
        // Reopened from the store's file, the list is the same (it is an index).
        drop(s);
        let s = Store::open(dir.path().join("s.db")).unwrap();
        assert_eq!(s.rectifications().unwrap().len(), 1);
    }

    #[test]
    fn a_directive_is_acknowledged_then_pushed_once_per_place() {
        use crate::directive::{self, Directive, MarkKind};
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path().join("s.db")).unwrap();
        s.set_setting("username", "l1").unwrap();
        let id = Uuid::new_v4();
        let d = Directive {
            schema: 1,
            kind: "directive".into(),
            id: id.to_string(),
            category: "warning".into(),
            title: "预警".into(),
            body: "请转发。".into(),
            published_by: "office".into(),
            published_at_ms: 1,
            ack_due_ms: 2,
            push_due_ms: 3,
            places: vec!["东坡村".into(), "西河村".into()],
            acknowledgements: Default::default(),
            pushes: Default::default(),
        };
        let doc = directive::new_directive_doc(&d, automerge::ActorId::random(), 1).unwrap();
        s.apply_effects(&[Effect::Apply(DocUpdate {
            doc: id,
            kind: UpdateKind::Snapshot,
            bytes: doc.save().into(),
        })])
        .unwrap();
        assert_eq!(s.directives().unwrap()[0].title, "预警");
        let field = |e: Error| match e {
            Error::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other}"),
        };
        assert_eq!(
            field(
                s.mark_directive(id, "东坡村", MarkKind::Pushed)
                    .unwrap_err()
            ),
            "kind"
        );
        assert_eq!(
            field(
                s.mark_directive(id, "北山村", MarkKind::Acknowledged)
                    .unwrap_err()
            ),
            "place"
        );
        assert_eq!(
            field(
                s.mark_directive(Uuid::new_v4(), "东坡村", MarkKind::Acknowledged)
                    .unwrap_err()
            ),
            "directive"
        );
        s.mark_directive(id, "东坡村", MarkKind::Acknowledged)
            .unwrap();
        assert_eq!(
            field(
                s.mark_directive(id, "东坡村", MarkKind::Acknowledged)
                    .unwrap_err()
            ),
            "place"
        );
        s.mark_directive(id, "东坡村", MarkKind::Pushed).unwrap();
        let read = &s.directives().unwrap()[0];
        assert_eq!(read.acknowledgements["东坡村"].by, "l1");
        assert_eq!(
            read.acknowledgements["东坡村"].device_id,
            s.device_id().to_string()
        );
        assert!(read.pushes.contains_key("东坡村") && !read.pushes.contains_key("西河村"));
        assert_eq!(
            s.outbox().unwrap().len(),
            2,
            "both marks wait for the server"
        );
    }

    fn removed(h: HouseholdId) -> Effect {
        Effect::Apply(DocUpdate {
            doc: h.0,
            kind: UpdateKind::Removed,
            bytes: Default::default(),
        })
    }

    fn ack_all(s: &mut Store) {
        let hashes = s.outbox().unwrap().iter().map(|c| c.hash).collect();
        s.apply_effects(&[Effect::Acked(hashes)]).unwrap();
    }

    /// A household that left this phone's scope goes only when nothing recorded here
    /// is still to reach the server: not while a change waits in the outbox, nor while
    /// a visit of this phone is open; its blobs go once uploaded, and the drop is
    /// reported at the next sync.
    #[test]
    fn a_removed_household_goes_only_when_nothing_of_its_own_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, h, head, _) = signing_store(dir.path());
        let v = start_now(&mut s, h);
        s.attach_photo(h, v, &tiny_jpeg()).unwrap();
        sign(&mut s, h, v, EvidenceKind::Pledge, head).unwrap();
        s.apply_effects(&[removed(h)]).unwrap();
        assert!(s.household(h).is_ok(), "changes wait in the outbox");
        ack_all(&mut s);
        s.apply_effects(&[removed(h)]).unwrap();
        assert!(s.household(h).is_ok(), "the visit is open");
        assert!(s.dropped_documents().unwrap().is_empty());
        s.finish_visit(h, v, completed()).unwrap();
        let snapshot = s.household_doc(h).unwrap().save();
        ack_all(&mut s);
        let blobs = s.pending_blobs().unwrap();
        // The photo (a tiny one is its own thumbnail), the strokes, the signature image.
        assert_eq!(blobs.len(), 3);
        s.apply_effects(&[Effect::BlobUploaded(blobs[0].clone())])
            .unwrap();

        s.apply_effects(&[removed(h)]).unwrap();
        assert!(matches!(s.household(h), Err(Error::NoSuchHousehold(_))));
        assert!(s.households(&HouseholdQuery::default()).unwrap().is_empty());
        assert_eq!(s.dropped_documents().unwrap(), [h.0]);
        assert_eq!(s.blob(&blobs[0]).unwrap(), None, "uploaded: gone with it");
        assert_eq!(s.pending_blobs().unwrap(), blobs[1..], "the rest wait");
        s.apply_effects(&[Effect::BlobUploaded(blobs[1].clone())])
            .unwrap();
        assert_eq!(s.blob(&blobs[1]).unwrap(), None, "gone once uploaded");

        // The next sync reports the drop until an answer comes.
        let mut session = s.sync_session().unwrap();
        let crate::protocol::Step::Send(crate::protocol::Outgoing::Sync(req)) = session.poll()
        else {
            panic!("a sync request first")
        };
        assert_eq!(
            (req.dropped.as_slice(), req.delivered),
            (&[h.0][..], Some(0))
        );
        s.apply_effects(&[Effect::DroppedReported(vec![h.0])])
            .unwrap();
        assert!(s.dropped_documents().unwrap().is_empty());

        // Moved back: it comes whole again, and its waiting blobs are kept after upload.
        s.apply_effects(&[
            Effect::Delivered(7),
            Effect::Apply(DocUpdate {
                doc: h.0,
                kind: UpdateKind::Snapshot,
                bytes: snapshot.into(),
            }),
        ])
        .unwrap();
        assert_eq!(s.household(h).unwrap().visits.len(), 1);
        s.apply_effects(&[Effect::BlobUploaded(blobs[2].clone())])
            .unwrap();
        assert!(s.blob(&blobs[2]).unwrap().is_some());
        assert_eq!(s.delivered().unwrap(), 7);

        // Told to remove what is not here: noted, to report.
        let elsewhere = HouseholdId::new();
        s.apply_effects(&[removed(elsewhere)]).unwrap();
        assert_eq!(s.dropped_documents().unwrap(), [elsewhere.0]);
    }

    /// An answer that arrives after a newer one (numbered at or below what was applied)
    /// brings back nothing and removes nothing.
    #[test]
    fn a_late_answer_brings_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path().join("s.db")).unwrap();
        let (id, bytes) = sample_doc();
        let snapshot = |bytes: &[u8]| {
            Effect::Apply(DocUpdate {
                doc: id.0,
                kind: UpdateKind::Snapshot,
                bytes: bytes.to_vec().into(),
            })
        };
        s.apply_effects(&[Effect::Delivered(5), snapshot(&bytes)])
            .unwrap();
        s.apply_effects(&[Effect::Delivered(6), removed(id)])
            .unwrap();
        assert!(s.household(id).is_err());
        s.apply_effects(&[Effect::Delivered(5), snapshot(&bytes)])
            .unwrap();
        assert!(s.household(id).is_err(), "late: not brought back");
        s.apply_effects(&[Effect::Delivered(8), snapshot(&bytes)])
            .unwrap();
        assert!(s.household(id).is_ok());
        assert!(s.dropped_documents().unwrap().is_empty(), "held again");
        s.apply_effects(&[Effect::Delivered(7), removed(id)])
            .unwrap();
        assert!(s.household(id).is_ok(), "late: not removed");
        assert_eq!(s.delivered().unwrap(), 8);
    }
}
