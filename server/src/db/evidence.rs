//! Evidence on the server (issue 3, DESIGN.md section 6): which parts of a household
//! document a phone may never write, the checks a new evidence record must pass on
//! arrival, the hash-chained evidence log with the server's countersignature, and the
//! organisation document with the notice and pledge templates.

use std::collections::HashSet;
use std::path::Path;

use automerge::{ActorId, Automerge, Change, ObjType, ROOT, ReadDoc};
use doorstep_core::evidence::{self, DeviceKey, EvidenceRecord, LogEntry};
use doorstep_core::model::{
    self, Bytes, DeviceId, EvidenceEntry, EvidenceId, EvidenceKind, Organisation, Receipt,
    TemplateVersion,
};
use rusqlite::{OptionalExtension, Transaction, params};
use uuid::Uuid;

use crate::error::{Error, Result};

/// File in the data folder holding the server's 32-byte ed25519 seed.
pub const SERVER_KEY_FILE: &str = "evidence-key";

/// The default notice (告知书), version 1: first line the title, then the body.
pub const DEFAULT_NOTICE: &str = include_str!("../../templates/notice.txt");
/// The default pledge (承诺书), version 1.
pub const DEFAULT_PLEDGE: &str = include_str!("../../templates/pledge.txt");
/// The day the default texts take effect: the start of the town's 2021 campaign.
pub const DEFAULT_EFFECTIVE_FROM: &str = "2021-01-01";

/// Loads the server's evidence key from the data folder, creating it (mode 0600 on
/// Unix) on first use.
///
/// Errors: [`Error::Io`]; [`Error::Internal`] when the file is not 32 bytes.
pub fn load_or_create_server_key(dir: &Path) -> Result<DeviceKey> {
    Ok(DeviceKey::from_seed(&load_or_create_secret(
        &dir.join(SERVER_KEY_FILE),
    )?))
}

/// Reads a 32-byte secret from `path`, or makes one from the OS's random source and
/// writes it there (synced, never over an existing file; the temporary file, and so the
/// key, is created with mode 0600 on Unix).
///
/// Errors: [`Error::Io`]; [`Error::Internal`] when the file is not 32 bytes.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|_| Error::Internal(format!("{} is not a 32-byte key", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| Error::Internal(e.to_string()))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, &secret)?;
            tmp.as_file().sync_all()?;
            tmp.persist_noclobber(path)
                .map_err(|e| Error::Io(e.error))?;
            Ok(secret)
        }
        Err(e) => Err(e.into()),
    }
}

/// Splits a template file into its title (first line) and body (the rest, trimmed).
pub fn split_template(text: &str) -> (String, String) {
    let text = text.trim_start_matches('\u{feff}');
    let (title, body) = text.split_once('\n').unwrap_or((text, ""));
    (title.trim().to_string(), body.trim().to_string())
}

/// A template version with its text hash filled in.
pub fn template_version(
    title: &str,
    body: &str,
    version: u32,
    effective_from: &str,
) -> TemplateVersion {
    let mut v = TemplateVersion {
        title: title.into(),
        body: body.into(),
        version,
        effective_from: effective_from.into(),
        text_sha256: String::new(),
    };
    v.text_sha256 = hex::encode(evidence::sha256(v.shown_text().as_bytes()));
    v
}

/// The organisation document a new server starts with: the default notice and pledge
/// and the server's key.
pub fn default_organisation_doc(
    actor: ActorId,
    server_key: &[u8; 32],
    now: i64,
) -> Result<Automerge> {
    let mut doc =
        model::new_organisation_doc(&Organisation::new(), actor, now).map_err(internal)?;
    for (id, kind, text) in [
        ("notice", EvidenceKind::Notice, DEFAULT_NOTICE),
        ("pledge", EvidenceKind::Pledge, DEFAULT_PLEDGE),
    ] {
        let (title, body) = split_template(text);
        let v = template_version(&title, &body, 1, DEFAULT_EFFECTIVE_FROM);
        model::add_template_version(&mut doc, id, kind, &v, now).map_err(internal)?;
    }
    model::add_server_key(&mut doc, &hex::encode(server_key), now).map_err(internal)?;
    Ok(doc)
}

/// Checks a template publication: an ID of 1 to 40 characters `a-z`, `0-9`, `-`; a
/// title of 1 to 100 characters; a body of 1 to 20,000; an effective day `YYYY-MM-DD`.
///
/// Errors: [`Error::BadRequest`] naming the field.
pub fn check_template(id: &str, title: &str, body: &str, effective_from: &str) -> Result<()> {
    let bad = |m: &str| Err(Error::BadRequest(m.into()));
    if id.is_empty()
        || id.len() > 40
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("a template ID is 1 to 40 characters of a-z, 0-9 and -");
    }
    if title.is_empty() || title.chars().count() > 100 {
        return bad("a template title is 1 to 100 characters");
    }
    if body.is_empty() || body.chars().count() > 20_000 {
        return bad("a template body is 1 to 20,000 characters");
    }
    if chrono::NaiveDate::parse_from_str(effective_from, "%Y-%m-%d").is_err()
        || effective_from.len() != 10
    {
        return bad("the effective day is a date written YYYY-MM-DD");
    }
    Ok(())
}

/// The objects of a household document that no phone may write: the `evidence` and
/// `receipts` maps, every existing evidence entry and every receipt.
#[derive(Debug, Default)]
pub struct Protected {
    evidence_map: Option<(u64, ActorId)>,
    receipts_map: Option<(u64, ActorId)>,
    evidence_keys: HashSet<String>,
    evidence_objects: HashSet<(u64, ActorId)>,
    receipt_objects: HashSet<(u64, ActorId)>,
    visits_map: Option<(u64, ActorId)>,
    visit_keys: HashSet<String>,
    /// Every object inside an existing visit, with the actor that created the visit's
    /// map: the phone that started it (a change's actor is always its pushing device,
    /// so unlike the visit's `device_id` field this cannot be edited).
    visit_objects: std::collections::HashMap<(u64, ActorId), ActorId>,
    residents_map: Option<(u64, ActorId)>,
    resident_objects: HashSet<(u64, ActorId)>,
}

fn obj_key(id: &automerge::ObjId) -> Option<(u64, ActorId)> {
    match id {
        automerge::ObjId::Id(counter, actor, _) => Some((*counter, actor.clone())),
        automerge::ObjId::Root => None,
    }
}

fn map_child(doc: &Automerge, obj: &automerge::ObjId, key: &str) -> Option<automerge::ObjId> {
    match doc.get(obj, key).ok()?? {
        (automerge::Value::Object(ObjType::Map), id) => Some(id),
        _ => None,
    }
}

/// Every object below `obj`, depth first.
fn objects_below(doc: &Automerge, obj: &automerge::ObjId, out: &mut HashSet<(u64, ActorId)>) {
    for key in doc.keys(obj).collect::<Vec<_>>() {
        for (value, id) in doc.get_all(obj, key.as_str()).unwrap_or_default() {
            if let automerge::Value::Object(_) = value {
                if let Some(k) = obj_key(&id) {
                    out.insert(k);
                }
                objects_below(doc, &id, out);
            }
        }
    }
}

impl Protected {
    /// What is protected in `doc` as it stands.
    pub fn of(doc: &Automerge) -> Self {
        let mut p = Self::default();
        if let Some(ev) = map_child(doc, &ROOT, "evidence") {
            p.evidence_map = obj_key(&ev);
            p.evidence_keys = doc.keys(&ev).collect();
            objects_below(doc, &ev, &mut p.evidence_objects);
        }
        if let Some(rc) = map_child(doc, &ROOT, "receipts") {
            p.receipts_map = obj_key(&rc);
            objects_below(doc, &rc, &mut p.receipt_objects);
        }
        if let Some(visits) = map_child(doc, &ROOT, "visits") {
            p.visits_map = obj_key(&visits);
            for key in doc.keys(&visits).collect::<Vec<_>>() {
                let Some(visit) = map_child(doc, &visits, &key) else {
                    continue;
                };
                p.protect_visit(doc, &visit);
                p.visit_keys.insert(key);
            }
        }
        if let Some(residents) = map_child(doc, &ROOT, "residents") {
            p.residents_map = obj_key(&residents);
            objects_below(doc, &residents, &mut p.resident_objects);
        }
        p
    }

    /// Checks one change's operations, before it is applied. Returns the evidence key
    /// it creates, if any, or why it is refused:
    /// - it deletes anything (a phone never deletes: a visit in error is voided);
    /// - it writes a root key other than the profile text fields of
    ///   [`PHONE_ROOT_KEYS`] (the household's identity, place and kind, and its
    ///   collections as wholes, are the server's);
    /// - it touches an existing evidence entry or any receipt, any resident (the
    ///   roster's), a visit started on another phone, or replaces an existing visit;
    /// - it writes text marks (automerge 0.12 accepts mark operations in an order its
    ///   own loader then refuses, which would make the household unloadable);
    /// - it writes an evidence entry that is not a new map, more than one entry, or an
    ///   entry together with anything outside it (a record is its own change).
    pub fn check(
        &self,
        change: &Change,
        device: &DeviceId,
    ) -> std::result::Result<Option<String>, String> {
        use automerge::legacy::{Key, ObjectId, OpType};
        let mut created: Option<(String, (u64, ActorId))> = None;
        let mut entry_keys: HashSet<String> = HashSet::new();
        let mut outside_entry = false;
        let start = change.start_op().get();
        let actor = change.actor_id().clone();
        if actor != device.actor() {
            return Err("the change was made by another device".into());
        }
        let ops = change.decode().operations;
        for (i, op) in ops.iter().enumerate() {
            let op_id = (start + i as u64, actor.clone());
            if matches!(op.action, OpType::Delete) {
                return Err("a phone deletes nothing; a visit recorded in error is voided".into());
            }
            if matches!(op.action, OpType::MarkBegin(_) | OpType::MarkEnd(_)) {
                return Err("text marks are not part of a household record".into());
            }
            let key = match &op.key {
                Key::Map(k) => k.to_string(),
                Key::Seq(_) => String::new(),
            };
            let obj = match &op.obj {
                ObjectId::Root => {
                    let OpType::Put(automerge::ScalarValue::Str(value)) = &op.action else {
                        return Err(format!(
                            "the household's `{key}` is written by the server or the office only"
                        ));
                    };
                    if !PHONE_ROOT_KEYS.contains(&key.as_str()) {
                        return Err(format!(
                            "the household's `{key}` is written by the server or the office only"
                        ));
                    }
                    profile_value_ok(&key, value)?;
                    outside_entry = true;
                    continue;
                }
                ObjectId::Id(id) => (id.counter(), id.actor().clone()),
            };
            if Some(&obj) == self.receipts_map.as_ref() || self.receipt_objects.contains(&obj) {
                return Err("receipts are written by the server only".into());
            }
            if Some(&obj) == self.residents_map.as_ref() || self.resident_objects.contains(&obj) {
                return Err("residents are written by the roster import only".into());
            }
            if Some(&obj) == self.visits_map.as_ref() && self.visit_keys.contains(&key) {
                return Err(format!(
                    "visit {key} exists; it is changed inside, by the phone that started it"
                ));
            }
            if let Some(owner) = self.visit_objects.get(&obj)
                && owner != &actor
            {
                return Err("the visit was started on another phone".into());
            }
            if self.evidence_objects.contains(&obj) {
                return Err("an evidence record is written once and never changed".into());
            }
            if Some(&obj) == self.evidence_map.as_ref() {
                if self.evidence_keys.contains(&key) {
                    return Err(format!(
                        "evidence record {key} is written once and never changed or deleted"
                    ));
                }
                if !matches!(op.action, OpType::Make(ObjType::Map)) {
                    return Err(format!(
                        "evidence entry {key} must be a new map of record and signature"
                    ));
                }
                if created.is_some() {
                    return Err("one evidence record per change".into());
                }
                created = Some((key, op_id));
                continue;
            }
            match &created {
                Some((_, entry)) if entry == &obj => {
                    // Inside the new entry: `record` and `signature`, once each.
                    if !matches!(key.as_str(), "record" | "signature")
                        || !entry_keys.insert(key.clone())
                    {
                        return Err(
                            "an evidence entry holds `record` and `signature`, each written once"
                                .into(),
                        );
                    }
                }
                _ => outside_entry = true,
            }
        }
        match created {
            Some(_) if outside_entry => {
                Err("a change that writes an evidence record writes nothing else".into())
            }
            Some((key, _)) => Ok(Some(key)),
            None => Ok(None),
        }
    }

    /// Protects a visit's map and everything in it, owned by the actor that created
    /// the map.
    fn protect_visit(&mut self, doc: &Automerge, visit: &automerge::ObjId) {
        let Some(k) = obj_key(visit) else {
            return;
        };
        let owner = k.1.clone();
        let mut inside = HashSet::new();
        inside.insert(k);
        objects_below(doc, visit, &mut inside);
        self.visit_objects
            .extend(inside.into_iter().map(|k| (k, owner.clone())));
    }

    /// Protects the visits a just-accepted change created (in `after`, not `before`),
    /// as [`Protected::of`] protects those that existed before the push: a later change
    /// of the same push may neither replace them nor write into them from another
    /// phone.
    pub fn protect_new_visits(&mut self, before: &Automerge, after: &Automerge) {
        let (Some(old), Some(new)) = (
            map_child(before, &ROOT, "visits"),
            map_child(after, &ROOT, "visits"),
        ) else {
            return;
        };
        let existing: HashSet<String> = before.keys(&old).collect();
        for key in after
            .keys(&new)
            .filter(|k| !existing.contains(k))
            .collect::<Vec<_>>()
        {
            if let Some(visit) = map_child(after, &new, &key) {
                self.protect_visit(after, &visit);
            }
            self.visit_keys.insert(key);
        }
    }

    /// Marks a just-accepted entry as protected, without walking the whole map again.
    pub fn protect_entry(&mut self, doc: &Automerge, key: &str) {
        self.evidence_keys.insert(key.to_string());
        if let Some(ev) = map_child(doc, &ROOT, "evidence")
            && let Some(entry) = map_child(doc, &ev, key)
        {
            if let Some(k) = obj_key(&entry) {
                self.evidence_objects.insert(k);
            }
            objects_below(doc, &entry, &mut self.evidence_objects);
        }
    }
}

/// Checks a profile value as the phone's store does (`Store::set_household_field`): a
/// phone number of 7 to 15 digits or empty, other fields at most 200 characters without
/// control characters.
fn profile_value_ok(key: &str, value: &str) -> std::result::Result<(), String> {
    let ok = match key {
        "phone" => {
            value.is_empty()
                || ((7..=15).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()))
        }
        _ => value.chars().count() <= 200 && !value.chars().any(char::is_control),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the household's `{key}` is not a valid value (a phone is 7 to 15 digits; other fields at most 200 characters)"
        ))
    }
}

/// Root keys of a household a phone may write, each a text value: the profile fields a
/// worker corrects at the door (`ProfileField`).
pub const PHONE_ROOT_KEYS: [&str; 3] = ["phone", "head_name", "address"];

/// Record IDs and counters accepted earlier in the same push (not yet in the log).
#[derive(Debug, Default)]
pub struct SeenInPush {
    /// Record IDs.
    pub ids: HashSet<EvidenceId>,
    /// Counters of the pushing device.
    pub counters: HashSet<u64>,
}

/// Where the device's evidence key stands.
fn key_registered(tx: &Transaction<'_>, device: &DeviceId, key: &[u8; 32]) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM device_keys
              WHERE public_key = ?1 AND device_id = ?2 AND revoked_at_ms IS NULL",
            params![&key[..], device.to_string()],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Checks a new evidence entry in the document after the change that created it was
/// applied (on a copy): the entry is exactly `{record, signature}` as bytes; the record
/// is canonical and its signature verifies strictly under a key registered (and not
/// revoked) for the pushing device; it names its own ID, this household, the pushing
/// device, a visit and a resident of this household, and a template version whose
/// text hash the organisation document holds; its counter was never used by the
/// device. Returns the record and its entry, or the reason for refusal.
#[allow(clippy::too_many_arguments)]
pub fn check_new_entry(
    tx: &Transaction<'_>,
    doc: &Automerge,
    doc_id: Uuid,
    key: &str,
    device: &DeviceId,
    org: &Organisation,
    seen_in_push: &SeenInPush,
) -> Result<std::result::Result<(EvidenceRecord, EvidenceEntry), String>> {
    let refuse = |m: String| Ok(Err(format!("evidence {key}: {m}")));
    let Some(ev) = map_child(doc, &ROOT, "evidence") else {
        return refuse("the household has no evidence map".into());
    };
    let Some(entry_obj) = map_child(doc, &ev, key) else {
        return refuse("not a map".into());
    };
    let keys: Vec<String> = doc.keys(&entry_obj).collect();
    if keys != ["record", "signature"] {
        return refuse("the entry holds other fields than record and signature".into());
    }
    let entry: EvidenceEntry = match autosurgeon::hydrate_prop(doc, &ev, key) {
        Ok(e) => e,
        Err(_) => return refuse("record and signature must be bytes".into()),
    };
    let record = match evidence::verify_record(&entry.record.0, &entry.signature.0, None) {
        Ok(r) => r,
        Err(e) => return refuse(e.to_string()),
    };
    if record.id.to_string() != key {
        return refuse("the record is filed under another ID".into());
    }
    if let Err(e) = record.check_values() {
        return refuse(e.to_string());
    }
    let id_used = tx
        .query_row(
            "SELECT 1 FROM evidence_log WHERE evidence_id = ?1",
            [key],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if id_used || seen_in_push.ids.contains(&record.id) {
        return refuse("a record with this ID was received before".into());
    }
    if record.household.0 != doc_id {
        return refuse("the record names another household".into());
    }
    if &record.device != device {
        return refuse("the record was signed by another device".into());
    }
    if !key_registered(tx, device, &record.key)? {
        return refuse("signed with a key not registered for this device (sign in again)".into());
    }
    let used: bool = tx
        .query_row(
            "SELECT 1 FROM evidence_log WHERE device_id = ?1 AND counter = ?2",
            params![device.to_string(), record.counter as i64],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if used || seen_in_push.counters.contains(&record.counter) {
        return refuse(format!(
            "counter {} was used before by this device (a replayed record)",
            record.counter
        ));
    }
    let household = match model::read_household(doc) {
        Ok(h) => h,
        Err(_) => return refuse("the household document cannot be read".into()),
    };
    match household.visits.get(&record.visit.to_string()) {
        None => return refuse("the record names a visit this household does not have".into()),
        Some(v) if v.device_id != device.to_string() => {
            return refuse("the visit was started on another phone".into());
        }
        Some(v) if v.voided.is_some() => return refuse("the visit was voided".into()),
        Some(_) => {}
    }
    if !household.residents.contains_key(&record.signer.to_string()) {
        return refuse("the signer is not a resident of this household".into());
    }
    let version = org
        .templates
        .get(&record.template_id)
        .filter(|t| t.kind == record.kind)
        .and_then(|t| t.versions.get(&record.template_version.to_string()));
    match version {
        Some(v) if v.effective_from.as_str() > model::town_date(record.signed_at_ms).as_str() => {
            return refuse("the template version was not yet in force when it was signed".into());
        }
        Some(v) if v.text_sha256 == hex::encode(record.text_sha256) => {}
        Some(_) => {
            return refuse("the text signed is not the office's text of that version".into());
        }
        None => {
            return refuse("the record names a template version the office never published".into());
        }
    }
    Ok(Ok((record, entry)))
}

/// Appends accepted records to the evidence log, each entry chained to the one before
/// and countersigned with the server key at `now` (server clock, ms since the Unix
/// epoch, UTC). Returns each record's receipt, for the household document.
pub fn append_to_log(
    tx: &Transaction<'_>,
    server_key: &DeviceKey,
    accepted: &[(EvidenceRecord, EvidenceEntry)],
    now: i64,
) -> Result<Vec<(EvidenceId, Receipt)>> {
    let (mut seq, mut prev): (u64, [u8; 32]) = tx
        .query_row(
            "SELECT seq, entry_hash FROM evidence_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?)),
        )
        .optional()?
        .map(|(s, h)| (s, h.try_into().unwrap_or([0; 32])))
        .unwrap_or((0, [0; 32]));
    let server_public = server_key.public();
    let mut receipts = Vec::with_capacity(accepted.len());
    let mut stmt = tx.prepare_cached(
        "INSERT INTO evidence_log (seq, evidence_id, doc_id, visit_id, kind, device_id, counter,
             public_key, signed_at_ms, received_at_ms, record, device_signature, prev_hash,
             entry_hash, server_key, server_signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    for (record, entry) in accepted {
        seq += 1;
        let log = LogEntry {
            seq,
            prev,
            evidence: record.id,
            record_sha256: evidence::sha256(&entry.record.0),
            device_signature: entry.signature.0.clone(),
            received_at_ms: now,
        };
        let hash = log.hash();
        let server_signature = server_key.sign_receipt(&hash);
        stmt.execute(params![
            seq as i64,
            record.id.to_string(),
            &record.household.0.as_bytes()[..],
            record.visit.to_string(),
            record.kind.as_str(),
            record.device.to_string(),
            record.counter as i64,
            &record.key[..],
            record.signed_at_ms,
            now,
            &entry.record.0,
            &entry.signature.0,
            &prev[..],
            &hash[..],
            &server_public[..],
            &server_signature[..],
        ])?;
        receipts.push((
            record.id,
            Receipt {
                seq,
                received_at_ms: now,
                prev: Bytes(prev.to_vec()),
                entry_sha256: Bytes(hash.to_vec()),
                server_signature: Bytes(server_signature.to_vec()),
                server_key: hex::encode(server_public),
            },
        ));
        prev = hash;
    }
    Ok(receipts)
}

/// Registers a device's evidence key. A key new for the device becomes its current one
/// and the previous ones are marked superseded (records they signed stay verifiable);
/// a key already registered changes nothing.
///
/// Errors: [`Error::BadRequest`] when the bytes are not the canonical encoding of an
/// ed25519 public key, or are a weak (small-order) one under which forged signatures
/// could verify;
/// [`Error::Conflict`] when the key is registered for another device.
pub fn register_key(
    tx: &Transaction<'_>,
    device: &DeviceId,
    key: &[u8; 32],
    now: i64,
) -> Result<()> {
    match ed25519_dalek::VerifyingKey::from_bytes(key) {
        Ok(k) if !k.is_weak() && k.to_edwards().compress().to_bytes() == *key => {}
        _ => {
            return Err(Error::BadRequest(
                "device_key is not a usable ed25519 public key".into(),
            ));
        }
    }
    let owner: Option<String> = tx
        .query_row(
            "SELECT device_id FROM device_keys WHERE public_key = ?1",
            [&key[..]],
            |r| r.get(0),
        )
        .optional()?;
    match owner {
        Some(o) if o == device.to_string() => Ok(()),
        Some(_) => Err(Error::Conflict(
            "this evidence key is registered for another device".into(),
        )),
        None => {
            tx.execute(
                "UPDATE device_keys SET superseded_at_ms = ?2
                  WHERE device_id = ?1 AND superseded_at_ms IS NULL",
                params![device.to_string(), now],
            )?;
            tx.execute(
                "INSERT INTO device_keys (public_key, device_id, registered_at_ms) VALUES (?1, ?2, ?3)",
                params![&key[..], device.to_string(), now],
            )?;
            Ok(())
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}
