//! `doorstep-server verify`: re-checks, from the files alone, that no evidence was
//! altered after it arrived (issue 3). Reads the data folder without writing to it and
//! streams: memory stays bounded by one log entry, one household document and a
//! fixed-size cache of blob hashes, whatever the size of the log.
//!
//! What it checks, and the order in which the first failure is reported:
//! 1. the evidence log: entries numbered from 1 without gaps, each entry's hash over its
//!    content, each link to the entry before, the server's countersignature under a key
//!    the organisation document lists;
//! 2. each record (all, or one household's): canonical form, device signature
//!    (`verify_strict`) under the key the log names, that key registered for the
//!    device, the log's columns equal to what the record says, no counter used twice
//!    by a device, and every blob it cites present with the right SHA-256;
//! 3. each household document (all, or one): its evidence entries and receipts are
//!    the log's, byte for byte, and every log entry of the household is in it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use automerge::Automerge;
use doorstep_core::evidence::{self, LogEntry};
use doorstep_core::model::{self, EvidenceId, HouseholdId};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};

/// What a verification that held went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Log entries whose chain, hash and countersignature were checked.
    pub entries: u64,
    /// Records whose signature, key, columns and blobs were checked.
    pub records: u64,
    /// Distinct blob reads hashed.
    pub blobs: u64,
    /// Household documents compared with the log.
    pub documents: u64,
    /// Cited blobs the server never received (a phone pushes records before their
    /// blobs; they arrive with its next sync). Not a failure: listed, not hidden.
    pub pending_blobs: u64,
    /// The first few pending blobs, as `<blob hash> (record <id>)`.
    pub pending_examples: Vec<String>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "all holds: {} log entries chained and countersigned, {} records verified, {} blobs hashed, {} household documents agree with the log",
            self.entries, self.records, self.blobs, self.documents
        )?;
        if self.pending_blobs > 0 {
            write!(
                f,
                "; {} cited blobs not uploaded yet (they come with the phones' next syncs): {}{}",
                self.pending_blobs,
                self.pending_examples.join(", "),
                if self.pending_blobs > self.pending_examples.len() as u64 {
                    ", ..."
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}

/// The first thing found broken, in words that name the record, entry, blob or
/// household.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken(pub String);

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Verifies the evidence in the data folder `dir`: all of it, or with `household`, the
/// whole chain plus that household's records, blobs and document.
///
/// Returns `Ok(Ok(report))` when everything holds and `Ok(Err(broken))` naming the
/// first failure.
///
/// Errors: [`Error::BadRequest`] when `dir` holds no Doorstep database or `household`
/// is not in it; [`Error::Db`] when the database cannot be read at all.
pub fn verify(
    dir: &Path,
    household: Option<HouseholdId>,
) -> Result<std::result::Result<VerifyReport, Broken>> {
    let path = dir.join("doorstep.db");
    if !path.exists() {
        return Err(Error::BadRequest(format!(
            "no Doorstep data in {} (no doorstep.db there)",
            dir.display()
        )));
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    if app != crate::db::APPLICATION_ID {
        return Err(Error::BadRequest(format!(
            "{} is not a Doorstep server database",
            path.display()
        )));
    }
    let mut v = Verifier {
        conn,
        blob_dir: dir.join("blobs"),
        household: household.map(|h| h.0),
        report: VerifyReport::default(),
        recent_blobs: HashSet::new(),
        recent_order: VecDeque::new(),
        templates: HashMap::new(),
    };
    if let Some(h) = household {
        let known: bool = v
            .conn
            .query_row(
                "SELECT 1 FROM documents WHERE doc_id = ?1 AND kind = 'household'",
                [&h.0.as_bytes()[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !known {
            return Err(Error::BadRequest(format!(
                "no household {h} in {}",
                dir.display()
            )));
        }
    }
    let outcome = v.log().and_then(|()| v.documents());
    Ok(match outcome {
        Ok(()) => Ok(v.report),
        Err(Step::Broken(b)) => Err(b),
        Err(Step::Failed(e)) => return Err(e),
    })
}

/// Log entries read per query: about 1 KB each, so a batch holds about 1 MB.
const LOG_BATCH: i64 = 1024;

/// How many blob hashes to remember as verified, so that a photo cited by both the
/// notice and the pledge is read once; bounded so memory stays flat.
const RECENT_BLOBS: usize = 4096;

enum Step {
    Broken(Broken),
    Failed(Error),
}

impl From<rusqlite::Error> for Step {
    fn from(e: rusqlite::Error) -> Self {
        Self::Failed(e.into())
    }
}

type Checked<T = ()> = std::result::Result<T, Step>;

fn broken<T>(message: String) -> Checked<T> {
    Err(Step::Broken(Broken(message)))
}

struct Verifier {
    conn: Connection,
    blob_dir: PathBuf,
    household: Option<Uuid>,
    report: VerifyReport,
    recent_blobs: HashSet<[u8; 32]>,
    recent_order: VecDeque<[u8; 32]>,
    /// Text hash (hex) of every template version the organisation published.
    templates: HashMap<(String, model::EvidenceKind, u32), String>,
}

/// One row of the evidence log.
struct Row {
    seq: i64,
    evidence_id: String,
    doc_id: Vec<u8>,
    visit_id: String,
    kind: String,
    device_id: String,
    counter: i64,
    public_key: Vec<u8>,
    signed_at_ms: i64,
    received_at_ms: i64,
    record: Vec<u8>,
    device_signature: Vec<u8>,
    prev_hash: Vec<u8>,
    entry_hash: Vec<u8>,
    server_key: Vec<u8>,
    server_signature: Vec<u8>,
}

impl Verifier {
    fn organisation(&self) -> Checked<model::Organisation> {
        let org: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'organisation'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = org.and_then(|s| Uuid::parse_str(&s).ok()) else {
            return broken("the organisation document is missing".into());
        };
        let doc = match self.load_doc(id)? {
            Some(d) => d,
            None => return broken("the organisation document is missing".into()),
        };
        match model::read_organisation(&doc) {
            Ok(o) => Ok(o),
            Err(e) => broken(format!("the organisation document cannot be read: {e}")),
        }
    }

    fn load_doc(&self, id: Uuid) -> Checked<Option<Automerge>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT bytes FROM documents WHERE doc_id = ?1",
                [&id.as_bytes()[..]],
                |r| r.get(0),
            )
            .optional()?;
        match bytes.map(|b| Automerge::load(&b)) {
            None => Ok(None),
            Some(Ok(d)) => Ok(Some(d)),
            Some(Err(e)) => broken(format!("document {id} cannot be loaded: {e}")),
        }
    }

    /// Passes 1 and 2, in batches of [`LOG_BATCH`] entries read in `seq` order: each
    /// entry's link, then its record when in scope.
    fn log(&mut self) -> Checked {
        let organisation = self.organisation()?;
        let server_keys: HashSet<String> = organisation.server_keys.keys().cloned().collect();
        self.templates = organisation
            .templates
            .iter()
            .flat_map(|(id, t)| {
                t.versions
                    .values()
                    .map(move |v| ((id.clone(), t.kind, v.version), v.text_sha256.clone()))
            })
            .collect();
        let below: i64 =
            self.conn
                .query_row("SELECT count(*) FROM evidence_log WHERE seq < 1", [], |r| {
                    r.get(0)
                })?;
        if below > 0 {
            return broken("evidence log: an entry is numbered below 1, outside the chain".into());
        }
        let mut expected = 1i64;
        let mut prev = vec![0u8; 32];
        loop {
            let batch: Vec<Row> = {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT seq, evidence_id, doc_id, visit_id, kind, device_id, counter, public_key,
                            signed_at_ms, received_at_ms, record, device_signature, prev_hash,
                            entry_hash, server_key, server_signature
                       FROM evidence_log WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![expected, LOG_BATCH], |r| {
                    Ok(Row {
                        seq: r.get(0)?,
                        evidence_id: r.get(1)?,
                        doc_id: r.get(2)?,
                        visit_id: r.get(3)?,
                        kind: r.get(4)?,
                        device_id: r.get(5)?,
                        counter: r.get(6)?,
                        public_key: r.get(7)?,
                        signed_at_ms: r.get(8)?,
                        received_at_ms: r.get(9)?,
                        record: r.get(10)?,
                        device_signature: r.get(11)?,
                        prev_hash: r.get(12)?,
                        entry_hash: r.get(13)?,
                        server_key: r.get(14)?,
                        server_signature: r.get(15)?,
                    })
                })?;
                rows.collect::<std::result::Result<_, _>>()?
            };
            if batch.is_empty() {
                return self.counters_unique();
            }
            for row in &batch {
                check_link(row, expected, &prev, &server_keys)?;
                self.report.entries += 1;
                if self.household.is_none_or(|h| row.doc_id == h.as_bytes()) {
                    self.record(row)?;
                }
                prev.clone_from(&row.entry_hash);
                expected += 1;
            }
        }
    }

    /// Pass 2 for one record.
    fn record(&mut self, row: &Row) -> Checked {
        let at = format!("record {} (log entry {})", row.evidence_id, row.seq);
        let Ok(key) = <[u8; 32]>::try_from(row.public_key.as_slice()) else {
            return broken(format!("{at}: the log's device key is not 32 bytes"));
        };
        let record = match evidence::verify_record(&row.record, &row.device_signature, Some(&key)) {
            Ok(r) => r,
            Err(e) => return broken(format!("{at}: {e}")),
        };
        let columns: [(&str, bool); 8] = [
            ("evidence_id", record.id.to_string() == row.evidence_id),
            (
                "doc_id",
                record.household.0.as_bytes()[..] == row.doc_id[..],
            ),
            ("visit_id", record.visit.to_string() == row.visit_id),
            ("kind", record.kind.as_str() == row.kind),
            ("device_id", record.device.to_string() == row.device_id),
            (
                "counter",
                i64::try_from(record.counter).ok() == Some(row.counter),
            ),
            ("signed_at_ms", record.signed_at_ms == row.signed_at_ms),
            ("public_key", record.key[..] == row.public_key[..]),
        ];
        if let Some((column, _)) = columns.iter().find(|(_, ok)| !ok) {
            return broken(format!(
                "{at}: the log's {column} column disagrees with the signed record"
            ));
        }
        let registered = self
            .conn
            .query_row(
                "SELECT 1 FROM device_keys WHERE public_key = ?1 AND device_id = ?2",
                params![&row.public_key, row.device_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !registered {
            return broken(format!(
                "{at}: signed with a key never registered for device {}",
                row.device_id
            ));
        }
        let published = self.templates.get(&(
            record.template_id.clone(),
            record.kind,
            record.template_version,
        ));
        if published != Some(&hex::encode(record.text_sha256)) {
            return broken(format!(
                "{at}: it was signed under a text the organisation did not publish (template {} version {})",
                record.template_id, record.template_version
            ));
        }
        for (what, hash) in record.blobs() {
            self.blob(&at, what, &hash)?;
        }
        self.report.records += 1;
        Ok(())
    }

    fn blob(&mut self, at: &str, what: &str, hash: &[u8; 32]) -> Checked {
        if self.recent_blobs.contains(hash) {
            return Ok(());
        }
        let hex_hash = hex::encode(hash);
        let path = self.blob_dir.join(&hex_hash[..2]).join(&hex_hash);
        let received = self
            .conn
            .query_row("SELECT 1 FROM blobs WHERE sha256 = ?1", [&hex_hash], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !received => {
                self.report.pending_blobs += 1;
                if self.report.pending_examples.len() < 5 {
                    self.report
                        .pending_examples
                        .push(format!("{hex_hash} ({at})"));
                }
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return broken(format!(
                    "{at}: the {what} blob {hex_hash} was received but its file is missing (deleted)"
                ));
            }
            Err(e) => {
                return broken(format!(
                    "{at}: the {what} blob {hex_hash} cannot be read: {e}"
                ));
            }
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    return broken(format!(
                        "{at}: the {what} blob {hex_hash} cannot be read: {e}"
                    ));
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hasher.finalize()[..] != hash[..] {
            return broken(format!(
                "{at}: the {what} blob {hex_hash} does not match its hash (changed after it arrived)"
            ));
        }
        self.report.blobs += 1;
        if self.recent_order.len() == RECENT_BLOBS
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent_blobs.remove(&old);
        }
        self.recent_blobs.insert(*hash);
        self.recent_order.push_back(*hash);
        Ok(())
    }

    fn counters_unique(&self) -> Checked {
        let dup: Option<(String, i64)> = self
            .conn
            .query_row(
                "SELECT device_id, counter FROM evidence_log
                  GROUP BY device_id, counter HAVING count(*) > 1 LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match dup {
            Some((device, counter)) => broken(format!(
                "evidence log: device {device} used counter {counter} more than once"
            )),
            None => Ok(()),
        }
    }

    /// Pass 3: household documents against the log.
    fn documents(&mut self) -> Checked {
        let ids: Vec<Uuid> = match self.household {
            Some(h) => vec![h],
            None => {
                let mut stmt = self.conn.prepare(
                    "SELECT doc_id FROM documents WHERE kind = 'household' ORDER BY doc_id",
                )?;
                stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?
                    .map(|r| r.map(|b| Uuid::from_slice(&b).unwrap_or(Uuid::nil())))
                    .collect::<std::result::Result<_, _>>()?
            }
        };
        for id in ids {
            self.document(id)?;
        }
        if self.household.is_none() {
            let gone: Option<Vec<u8>> = self
                .conn
                .query_row(
                    "SELECT doc_id FROM change_log
                      WHERE doc_id NOT IN (SELECT doc_id FROM documents) LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = gone {
                return broken(format!(
                    "document {} has changes in the change log but is gone",
                    Uuid::from_slice(&id).unwrap_or(Uuid::nil())
                ));
            }
            let orphan: Option<String> = self
                .conn
                .query_row(
                    "SELECT evidence_id FROM evidence_log
                      WHERE doc_id NOT IN (SELECT doc_id FROM documents WHERE kind = 'household')
                      LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(e) = orphan {
                return broken(format!(
                    "record {e} is in the evidence log but its household document is gone"
                ));
            }
        }
        Ok(())
    }

    fn document(&mut self, id: Uuid) -> Checked {
        let Some(doc) = self.load_doc(id)? else {
            return broken(format!("household {id}: its document is missing"));
        };
        let h = match model::read_household(&doc) {
            Ok(h) => h,
            Err(e) => return broken(format!("household {id}: the document cannot be read: {e}")),
        };
        let mut in_log: HashMap<String, LoggedCopy> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT evidence_id, record, device_signature, seq, received_at_ms, prev_hash,
                        entry_hash, server_signature
                   FROM evidence_log WHERE doc_id = ?1",
            )?;
            let rows = stmt.query_map([&id.as_bytes()[..]], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    LoggedCopy {
                        record: r.get(1)?,
                        signature: r.get(2)?,
                        seq: r.get(3)?,
                        received_at_ms: r.get(4)?,
                        prev: r.get(5)?,
                        entry_hash: r.get(6)?,
                        server_signature: r.get(7)?,
                    },
                ))
            })?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        for (key, entry) in &h.evidence {
            let at = format!("household {id}, record {key}");
            let Some(LoggedCopy {
                record,
                signature,
                seq,
                received_at_ms: received,
                prev,
                entry_hash: hash,
                server_signature: server_sig,
            }) = in_log.remove(key)
            else {
                return broken(format!(
                    "{at}: in the household document but not in the evidence log"
                ));
            };
            if entry.record.0 != record || entry.signature.0 != signature {
                return broken(format!(
                    "{at}: the household document's copy differs from the evidence log's (log entry {seq})"
                ));
            }
            let Some(receipt) = h.receipts.get(key) else {
                return broken(format!(
                    "{at}: the server's receipt is missing from the document"
                ));
            };
            if receipt.seq as i64 != seq
                || receipt.received_at_ms != received
                || receipt.prev.0 != prev
                || receipt.entry_sha256.0 != hash
                || receipt.server_signature.0 != server_sig
            {
                return broken(format!(
                    "{at}: the receipt in the document differs from log entry {seq}"
                ));
            }
            let entry_hash = match evidence::receipt_log_entry(key, entry, receipt) {
                Ok(log) => log.hash(),
                Err(e) => return broken(format!("{at}: {e}")),
            };
            if entry_hash[..] != hash[..] {
                return broken(format!("{at}: the receipt does not describe this record"));
            }
        }
        if let Some(key) = h.receipts.keys().find(|k| !h.evidence.contains_key(*k)) {
            return broken(format!(
                "household {id}: a receipt for record {key}, which the household does not hold"
            ));
        }
        if let Some(key) = in_log.keys().min() {
            return broken(format!(
                "household {id}, record {key}: in the evidence log but missing from the household document"
            ));
        }
        self.report.documents += 1;
        Ok(())
    }
}

/// What the log holds of one record, for comparing with a household document.
struct LoggedCopy {
    record: Vec<u8>,
    signature: Vec<u8>,
    seq: i64,
    received_at_ms: i64,
    prev: Vec<u8>,
    entry_hash: Vec<u8>,
    server_signature: Vec<u8>,
}

/// Pass 1 for one entry: numbering, link, hash, countersignature.
fn check_link(row: &Row, expected: i64, prev: &[u8], server_keys: &HashSet<String>) -> Checked {
    if row.seq != expected {
        return broken(format!(
            "evidence log: entry {expected} is missing (the next entry is {})",
            row.seq
        ));
    }
    let at = format!(
        "evidence log entry {} (record {})",
        row.seq, row.evidence_id
    );
    if row.prev_hash != prev {
        return broken(format!("{at}: its link to entry {} is broken", row.seq - 1));
    }
    let Some(evidence_id) = EvidenceId::parse(&row.evidence_id) else {
        return broken(format!("{at}: the record ID is not a UUID"));
    };
    let hash = LogEntry {
        seq: row.seq as u64,
        prev: prev.try_into().unwrap_or([0; 32]),
        evidence: evidence_id,
        record_sha256: evidence::sha256(&row.record),
        device_signature: row.device_signature.clone(),
        received_at_ms: row.received_at_ms,
    }
    .hash();
    if row.entry_hash[..] != hash[..] {
        return broken(format!(
            "{at}: the entry does not match its hash (changed after it was logged)"
        ));
    }
    let key_hex = hex::encode(&row.server_key);
    let Ok(server_key) = <[u8; 32]>::try_from(row.server_key.as_slice()) else {
        return broken(format!("{at}: the server key is not 32 bytes"));
    };
    if !server_keys.contains(&key_hex) {
        return broken(format!(
            "{at}: countersigned by a key the organisation does not list"
        ));
    }
    if !evidence::verify_receipt(&server_key, &hash, &row.server_signature) {
        return broken(format!(
            "{at}: the server's countersignature does not verify"
        ));
    }
    Ok(())
}
