//! The phone's offline store: one SQLite file (rusqlite, bundled SQLite) in WAL mode with
//! `synchronous=FULL`, so a visit confirmed on screen survives a dead battery
//! (DESIGN.md section 5). One [`Store`] is the one writer connection.
//!
//! Tables: `documents` (compacted Automerge bytes), `outbox` (local changes the server
//! has not acknowledged), `meta` (device ID, cursor, server, token), `blobs` (photos and
//! thumbnails with their upload state), `household_index` (the searchable list) and
//! `refused_changes`. Migrations are numbered `.sql` files applied in order; every
//! write that belongs together commits in one transaction.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use automerge::{Automerge, Change, ChangeHash};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::media::{self, IntakePhoto, PhotoLimits};
use crate::model::{
    self, Conflict, DeviceId, GeoPoint, Household, HouseholdId, PhotoRef, ProfileField, Visit,
    VisitId, VisitOutcome,
};
use crate::protocol::{DocUpdate, Effect, OutboxChange, UpdateKind};

/// The migrations, in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[
    include_str!("store/0001_init.sql"),
    include_str!("store/0002_index_and_refused.sql"),
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

/// A visit as the app hands it over, before it has an ID.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVisit {
    /// What happened at the door.
    pub outcome: VisitOutcome,
    /// Start, device clock, milliseconds since the Unix epoch (UTC).
    pub started_at_ms: i64,
    /// End, device clock, milliseconds since the Unix epoch (UTC).
    pub finished_at_ms: Option<i64>,
    /// Target groups (重点人群) reached.
    pub target_groups_reached: Vec<String>,
    /// Free text.
    pub remarks: String,
    /// Where the phone was, when it knew.
    pub location: Option<GeoPoint>,
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
    limits: PhotoLimits,
}

impl Store {
    /// Opens (creating when absent) the store at `path`, applies pending migrations and
    /// creates the device ID on first open.
    ///
    /// Errors: [`Error::Invalid`] for an empty path or `:memory:` (nothing would be
    /// kept) and for a SQLite file that is not a Doorstep phone store (it is left
    /// untouched); [`Error::Storage`] when the file cannot be opened or is not a
    /// database; [`Error::StoreTooNew`] when a newer build wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = path.to_string_lossy();
        if text.is_empty() || text.starts_with(":memory:") || text.starts_with("file::memory:") {
            return Err(Error::Invalid {
                field: "path",
                reason: "the store needs a file on disk; nothing in memory survives".into(),
            });
        }
        let conn = Connection::open(path)?;
        Self::with_connection(conn)
    }

    fn with_connection(mut conn: Connection) -> Result<Self> {
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
        let mut store = Self {
            conn,
            device,
            limits: PhotoLimits::default(),
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
            |r| {
                Ok(HouseholdSummary {
                    id: HouseholdId(uuid_from(&r.get::<_, Vec<u8>>(0)?)),
                    village: r.get(1)?,
                    grid: r.get(2)?,
                    door_number: r.get(3)?,
                    head_name: r.get(4)?,
                    status: r.get(5)?,
                    visits: r.get(6)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
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

    /// Records a visit to a household, durably: when this returns `Ok` the visit is on
    /// disk and queued for the server. `visitor` is the signed-in account.
    ///
    /// Errors: [`Error::NoSuchHousehold`]; [`Error::Invalid`] naming the field when the
    /// visit breaks a rule of [`validate_visit`]; [`Error::Storage`] (for instance a
    /// full disk), in which case nothing was written.
    pub fn record_visit(&mut self, household: HouseholdId, visit: NewVisit) -> Result<VisitId> {
        validate_visit(&visit)?;
        let visitor = get_meta(&self.conn, "username")?.unwrap_or_default();
        let id = VisitId::new();
        let value = Visit {
            visitor,
            device_id: self.device.to_string(),
            started_at_ms: visit.started_at_ms,
            finished_at_ms: visit.finished_at_ms,
            outcome: visit.outcome,
            target_groups_reached: visit.target_groups_reached,
            remarks: visit.remarks,
            photos: Default::default(),
            location: visit.location,
        };
        self.edit(household, |doc| model::add_visit(doc, id, &value, now_ms()))?;
        Ok(id)
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
        put_blob(&tx, &intake.sha256, "image/jpeg", &intake.jpeg, now)?;
        put_blob(
            &tx,
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
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row("SELECT bytes FROM blobs WHERE sha256 = ?1", [sha256], |r| {
                r.get(0)
            })
            .optional()?)
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
    pub fn apply_effects(&mut self, effects: &[Effect]) -> Result<()> {
        let tx = self.conn.transaction()?;
        let now = now_ms();
        for effect in effects {
            match effect {
                Effect::Acked(hashes) => {
                    let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE hash = ?1")?;
                    for h in hashes {
                        stmt.execute([&h[..]])?;
                    }
                }
                Effect::Rejected(list) => {
                    for (hash, reason) in list {
                        tx.execute(
                            "INSERT OR REPLACE INTO refused_changes (hash, doc_id, bytes, reason, refused_at_ms)
                             SELECT hash, doc_id, bytes, ?2, ?3 FROM outbox WHERE hash = ?1",
                            params![&hash[..], reason, now],
                        )?;
                        tx.execute("DELETE FROM outbox WHERE hash = ?1", [&hash[..]])?;
                    }
                }
                Effect::Apply(update) => apply_update(&tx, &self.device, update)?,
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

fn save_doc(tx: &Transaction<'_>, id: Uuid, doc: &Automerge) -> Result<()> {
    tx.execute(
        "INSERT INTO documents (doc_id, kind, bytes, updated_at_ms) VALUES (?1, 'household', ?2, ?3)
         ON CONFLICT (doc_id) DO UPDATE SET bytes = excluded.bytes, updated_at_ms = excluded.updated_at_ms",
        params![&id.as_bytes()[..], doc.save(), now_ms()],
    )?;
    index_household(tx, id, doc)
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
            h.visit_status().map(|s| s.as_str()),
            h.visits.len() as i64,
        ],
    )?;
    Ok(())
}

fn edit_in(
    tx: &Transaction<'_>,
    device: &DeviceId,
    household: HouseholdId,
    f: impl FnOnce(&mut Automerge) -> Result<(), model::ModelError>,
) -> Result<()> {
    let mut doc = load_doc(tx, household.0, device)?
        .ok_or_else(|| Error::NoSuchHousehold(household.to_string()))?;
    let before = doc.get_heads();
    f(&mut doc)?;
    let now = now_ms();
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox (doc_id, hash, bytes, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for mut change in doc.get_changes(&before) {
        let hash = change.hash();
        stmt.execute(params![
            &household.0.as_bytes()[..],
            &hash.0[..],
            change.bytes().as_ref(),
            now
        ])?;
    }
    save_doc(tx, household.0, &doc)
}

fn put_blob(
    tx: &Transaction<'_>,
    sha256: &str,
    media_type: &str,
    bytes: &[u8],
    now: i64,
) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO blobs (sha256, media_type, bytes, uploaded, created_at_ms)
         VALUES (?1, ?2, ?3, 0, ?4)",
        params![sha256, media_type, bytes, now],
    )?;
    Ok(())
}

fn apply_update(tx: &Transaction<'_>, device: &DeviceId, update: &DocUpdate) -> Result<()> {
    let id = update.doc;
    match update.kind {
        UpdateKind::Removed => {
            let pending: i64 = tx.query_row(
                "SELECT count(*) FROM outbox WHERE doc_id = ?1",
                [&id.as_bytes()[..]],
                |r| r.get(0),
            )?;
            if pending == 0 {
                tx.execute(
                    "DELETE FROM documents WHERE doc_id = ?1",
                    [&id.as_bytes()[..]],
                )?;
                tx.execute(
                    "DELETE FROM household_index WHERE doc_id = ?1",
                    [&id.as_bytes()[..]],
                )?;
            }
        }
        UpdateKind::Snapshot | UpdateKind::Changes => {
            let mut doc = load_doc(tx, id, device)?
                .unwrap_or_else(|| Automerge::new().with_actor(device.actor()));
            let before = doc.get_heads();
            doc.load_incremental(&update.bytes)
                .map_err(|source| Error::document(id.to_string(), source))?;
            if doc.get_heads() != before {
                save_doc(tx, id, &doc)?;
            }
        }
    }
    Ok(())
}

/// The statuses a household list can be filtered by.
const STATUSES: [&str; 5] = [
    "completed",
    "nobody_home",
    "refused",
    "moved_away",
    "unvisited",
];

/// Longest remarks of a visit, in characters.
pub const MAX_REMARKS_CHARS: usize = 2000;

/// Checks a visit before it is written: times between 2000-01-01 and 2100-01-01 UTC,
/// the end not before the start and at most 24 hours after it; at most 32 target
/// groups of at most 50 characters; remarks of at most [`MAX_REMARKS_CHARS`];
/// latitude -90..=90 and longitude -180..=180 degrees, accuracy 0..=100,000 m.
///
/// Errors: [`Error::Invalid`] naming the first field that breaks a rule.
pub fn validate_visit(visit: &NewVisit) -> Result<()> {
    const Y2000: i64 = 946_684_800_000;
    const Y2100: i64 = 4_102_444_800_000;
    let bad = |field: &'static str, reason: &str| {
        Err(Error::Invalid {
            field,
            reason: reason.into(),
        })
    };
    if !(Y2000..Y2100).contains(&visit.started_at_ms) {
        return bad(
            "started_at_ms",
            "the start is not between the years 2000 and 2100",
        );
    }
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
    if let Some(p) = visit.location {
        if !(p.lat.is_finite() && (-90.0..=90.0).contains(&p.lat)) {
            return bad("location.lat", "latitude is -90 to 90 degrees");
        }
        if !(p.lon.is_finite() && (-180.0..=180.0).contains(&p.lon)) {
            return bad("location.lon", "longitude is -180 to 180 degrees");
        }
        if let Some(a) = p.accuracy_m
            && !(a.is_finite() && (0.0..=100_000.0).contains(&a))
        {
            return bad("location.accuracy_m", "accuracy is 0 to 100,000 metres");
        }
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
                    outcome: VisitOutcome::Completed,
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
            status: Some("completed".into()),
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
                outcome: VisitOutcome::Completed,
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
            outcome: VisitOutcome::Completed,
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
                    outcome: VisitOutcome::Completed,
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
}
