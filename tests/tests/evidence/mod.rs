//! Signed notices and pledges end to end (issue 3): the real server binary, phones on
//! the real core, real photos. A complete visit syncs and verifies; then every byte and
//! every field of what was stored is changed, one at a time, and `verify` must catch
//! each; hostile pushes (edits, deletions, replayed counters, foreign keys) are refused
//! with a reason while the rest of the push is kept; a re-enrolled phone keeps its old
//! records verifiable.

use std::path::{Path, PathBuf};
use std::process::Command;

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT, ReadDoc};
use ciborium::Value;
use doorstep_core::error::Error;
use doorstep_core::evidence::{self, DeviceKey, EvidenceRecord};
use doorstep_core::media::signature::{InkRule, SignatureStrokes};
use doorstep_core::model::{
    self, DeviceId, EvidenceEntry, EvidenceId, EvidenceKind, HouseholdId, ResidentId, VisitId,
    VisitOutcome,
};
use doorstep_core::store::{
    HouseholdQuery, NewVisit, ReceiptState, Store, VisitFinish, VisitStart, now_ms,
};
use doorstep_core::sync::{Client, sync_now};
use doorstep_server::demo::{sign_paper, signer_of};
use doorstep_server::verify::verify;
use doorstep_tests::{fixtures, server_binary};
use rusqlite::{Connection, params};

use super::{Field, PASSWORD, field, phone, phone_as};

/// The head of household (or the first resident) of `h`, who signs.
fn head_of(store: &Store, h: HouseholdId) -> ResidentId {
    signer_of(store, h).expect("the household has residents")
}

fn real_photos() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures().join("photos/phone"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn sign(
    store: &mut Store,
    h: HouseholdId,
    v: VisitId,
    kind: EvidenceKind,
    seed: u32,
) -> EvidenceId {
    sign_paper(store, h, v, kind, seed).unwrap()
}

fn start(store: &mut Store, h: HouseholdId) -> VisitId {
    store
        .start_visit(
            h,
            VisitStart {
                started_at_ms: now_ms(),
                location: Some(model::GeoPoint {
                    lat: 30.2741,
                    lon: 120.1551,
                    accuracy_m: Some(8.5),
                }),
            },
        )
        .unwrap()
}

fn finish_completed(
    store: &mut Store,
    h: HouseholdId,
    v: VisitId,
) -> doorstep_core::error::Result<()> {
    store.finish_visit(
        h,
        v,
        VisitFinish {
            outcome: VisitOutcome::Completed,
            outcome_reason: String::new(),
            finished_at_ms: now_ms() + 1,
            target_groups_reached: vec!["老年人".into()],
            remarks: "讲解了冒充公检法、刷单返利".into(),
        },
    )
}

/// A complete visit as at the door: two real photos, the notice and the pledge.
fn complete_visit(store: &mut Store, h: HouseholdId, seed: u32) -> (VisitId, Vec<EvidenceId>) {
    let v = start(store, h);
    for photo in real_photos().iter().take(2) {
        store
            .attach_photo(h, v, &std::fs::read(photo).unwrap())
            .unwrap();
    }
    let notice = sign(store, h, v, EvidenceKind::Notice, seed);
    let pledge = sign(store, h, v, EvidenceKind::Pledge, seed + 1);
    finish_completed(store, h, v).unwrap();
    (v, vec![notice, pledge])
}

fn households(store: &Store) -> Vec<HouseholdId> {
    store
        .households(&HouseholdQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// Runs `doorstep-server verify`, returning its exit code and standard output.
fn verify_cli(data: &Path, household: Option<HouseholdId>) -> (i32, String) {
    let mut cmd = Command::new(server_binary());
    cmd.args(["verify", "--data"])
        .arg(data)
        .env("RUST_LOG", "warn");
    if let Some(h) = household {
        cmd.args(["--household", &h.to_string()]);
    }
    let out = cmd.output().expect("run verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn assert_holds(data: &Path, what: &str) {
    match verify(data, None).unwrap() {
        Ok(_) => {}
        Err(b) => panic!("{what}: verify found {b}"),
    }
}

/// Verifies `data`, expecting a failure, and returns what it names. Scoped to the one
/// household that holds the records (the whole chain is still checked), which keeps
/// hundreds of runs quick.
fn assert_broken(data: &Path, h: HouseholdId, what: &str) -> String {
    match verify(data, Some(h)).unwrap() {
        Ok(report) => panic!("{what}: verify did not notice ({report})"),
        Err(b) => b.0,
    }
}

fn db(data: &Path) -> Connection {
    Connection::open(data.join("doorstep.db")).unwrap()
}

/// Every way of changing one field of a canonical CBOR record, nested fields and
/// array items included: each leaf changed in place, each optional part removed.
/// Generic over the map, so a field added to the record is covered without a change
/// here.
fn each_field_changed(record: &[u8]) -> Vec<(String, Vec<u8>)> {
    fn changed(v: &Value) -> Vec<(String, Value)> {
        match v {
            Value::Integer(i) => {
                let next = ciborium::value::Integer::try_from(i128::from(*i) + 1).unwrap();
                vec![(String::new(), Value::Integer(next))]
            }
            Value::Bytes(b) => {
                let mut c = b.clone();
                c[0] ^= 1;
                vec![(String::new(), Value::Bytes(c))]
            }
            Value::Text(t) => vec![(String::new(), Value::Text(format!("{t}改")))],
            Value::Null => vec![(String::new(), Value::Integer(0.into()))],
            Value::Array(items) => {
                let mut out = vec![(
                    ".len".to_string(),
                    Value::Array(items[..items.len().saturating_sub(1)].to_vec()),
                )];
                for (i, item) in items.iter().enumerate() {
                    for (p, c) in changed(item) {
                        let mut copy = items.clone();
                        copy[i] = c;
                        out.push((format!("[{i}]{p}"), Value::Array(copy)));
                    }
                }
                out
            }
            Value::Map(entries) => {
                let mut out = Vec::new();
                for (i, (k, val)) in entries.iter().enumerate() {
                    let name = k.as_text().unwrap_or("?").to_string();
                    for (p, c) in changed(val) {
                        let mut copy = entries.clone();
                        copy[i].1 = c;
                        out.push((format!(".{name}{p}"), Value::Map(copy)));
                    }
                    if matches!(val, Value::Map(_)) {
                        let mut copy = entries.clone();
                        copy[i].1 = Value::Null;
                        out.push((format!(".{name}=null"), Value::Map(copy)));
                    }
                }
                out
            }
            other => panic!("unexpected CBOR in a record: {other:?}"),
        }
    }
    let value: Value = ciborium::from_reader(record).unwrap();
    changed(&value)
        .into_iter()
        .map(|(p, v)| (p, evidence::encode_canonical(&v)))
        .collect()
}

/// Flips one byte of a BLOB column, or changes a TEXT or INTEGER column, of one row.
fn tamper_column(
    conn: &Connection,
    table: &str,
    key_sql: &str,
    column: &str,
) -> rusqlite::types::Value {
    use rusqlite::types::Value as Sql;
    let original: Sql = conn
        .query_row(
            &format!("SELECT {column} FROM {table} WHERE {key_sql}"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    let changed = match &original {
        Sql::Integer(i) => Sql::Integer(i + 1000),
        Sql::Text(t) => {
            let mut t = t.clone();
            let last = t.pop().unwrap();
            t.push(if last == '0' { '1' } else { '0' });
            Sql::Text(t)
        }
        Sql::Blob(b) => {
            let mut b = b.clone();
            let i = b.len() / 2;
            b[i] ^= 0x01;
            Sql::Blob(b)
        }
        other => panic!("{column}: unexpected {other:?}"),
    };
    conn.execute(
        &format!("UPDATE {table} SET {column} = ?1 WHERE {key_sql}"),
        [&changed],
    )
    .unwrap();
    original
}

fn restore_column(
    conn: &Connection,
    table: &str,
    key_sql: &str,
    column: &str,
    v: &rusqlite::types::Value,
) {
    conn.execute(
        &format!("UPDATE {table} SET {column} = ?1 WHERE {key_sql}"),
        [v],
    )
    .unwrap();
}

fn blob_path(data: &Path, hash: &[u8; 32]) -> PathBuf {
    let h = hex::encode(hash);
    data.join("blobs").join(&h[..2]).join(&h)
}

#[test]
fn a_visit_with_notice_pledge_and_photos_syncs_and_verifies_and_any_tampering_shows() {
    let f = field();
    let mut a = phone(&f, "worker-a");
    let ids = households(&a);
    let h = ids[0];

    // The paper work is required, and a blank pad is refused before anything is stored.
    let early = start(&mut a, h);
    assert!(matches!(
        finish_completed(&mut a, h, early),
        Err(Error::Incomplete { .. })
    ));
    let blank = SignatureStrokes {
        surface_width: 360.0,
        surface_height: 144.0,
        strokes: vec![],
    };
    assert!(matches!(
        a.capture_signature(&blank, InkRule::Signature),
        Err(Error::Signature(_))
    ));
    a.void_visit(h, early, "开错了户").unwrap();

    let (_v, evidence_ids) = complete_visit(&mut a, h, 1);
    sync_now(&mut a, None, |_| {}).unwrap();

    // The phone holds the server's receipts, and they verify.
    let checks = a.verify_evidence(Some(h)).unwrap();
    assert_eq!(checks.len(), 2);
    for c in &checks {
        assert!(c.problems.is_empty(), "{c:?}");
        assert_eq!(c.receipt, ReceiptState::Verified, "{c:?}");
        assert_eq!(c.blobs_not_here, 0);
    }
    let (code, out) = verify_cli(&f.server.data, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 log entries"), "{out}");
    let (code, out) = verify_cli(&f.server.data, Some(h));
    assert_eq!(code, 0, "{out}");

    // From here on the server is stopped and its files are tampered with, one change at
    // a time, each undone before the next.
    let Field { _dir, server, .. } = f;
    let data = server.data.clone();
    drop(server);
    let conn = db(&data);
    assert_holds(&data, "before tampering");

    // Every byte of the stored record.
    let record: Vec<u8> = conn
        .query_row("SELECT record FROM evidence_log WHERE seq = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    for i in 0..record.len() {
        let mut b = record.clone();
        b[i] ^= 0x01;
        conn.execute("UPDATE evidence_log SET record = ?1 WHERE seq = 1", [&b])
            .unwrap();
        assert_broken(&data, h, &format!("record byte {i}"));
    }
    conn.execute(
        "UPDATE evidence_log SET record = ?1 WHERE seq = 1",
        [&record],
    )
    .unwrap();
    // Every field of the record, re-encoded canonically (a forger's best try).
    let variants = each_field_changed(&record);
    let Value::Map(fields) = ciborium::from_reader::<Value, _>(&record[..]).unwrap() else {
        panic!("a record is a map");
    };
    for (k, _) in &fields {
        let k = k.as_text().unwrap();
        assert!(
            variants
                .iter()
                .any(|(p, _)| p.starts_with(&format!(".{k}"))),
            "field {k} is not changed by any variant"
        );
    }
    for (path, b) in &variants {
        conn.execute("UPDATE evidence_log SET record = ?1 WHERE seq = 1", [b])
            .unwrap();
        let found = assert_broken(&data, h, &format!("record field {path}"));
        assert!(found.contains("record"), "{path}: {found}");
    }
    conn.execute(
        "UPDATE evidence_log SET record = ?1 WHERE seq = 1",
        [&record],
    )
    .unwrap();
    assert_holds(&data, "after restoring the record");

    // Every column of both log entries.
    let columns = [
        "seq",
        "evidence_id",
        "doc_id",
        "visit_id",
        "kind",
        "device_id",
        "counter",
        "public_key",
        "signed_at_ms",
        "received_at_ms",
        "record",
        "device_signature",
        "prev_hash",
        "entry_hash",
        "server_key",
        "server_signature",
    ];
    for seq in [1, 2] {
        for column in columns {
            let key = format!("seq = {seq}");
            let original = tamper_column(&conn, "evidence_log", &key, column);
            let key_after = if column == "seq" {
                format!("seq = {}", seq + 1000)
            } else {
                key.clone()
            };
            let found = assert_broken(&data, h, &format!("log entry {seq}, column {column}"));
            assert!(!found.is_empty());
            restore_column(&conn, "evidence_log", &key_after, column, &original);
        }
    }
    // Every byte of every byte-string column of entry 2 (the record's were all done
    // above, for entry 1), the text columns' every character.
    for column in columns {
        use rusqlite::types::Value as Sql;
        let original: Sql = conn
            .query_row(
                &format!("SELECT {column} FROM evidence_log WHERE seq = 2"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        let variants: Vec<Sql> = match &original {
            Sql::Blob(b) => (0..b.len())
                .map(|i| {
                    let mut c = b.clone();
                    c[i] ^= 0x01;
                    Sql::Blob(c)
                })
                .collect(),
            Sql::Text(t) => (0..t.len())
                .map(|i| {
                    let mut c = t.clone().into_bytes();
                    c[i] = if c[i] == b'0' { b'1' } else { b'0' };
                    Sql::Text(String::from_utf8(c).unwrap())
                })
                .collect(),
            Sql::Integer(_) => continue,
            other => panic!("{column}: {other:?}"),
        };
        for (i, v) in variants.iter().enumerate() {
            conn.execute(
                &format!("UPDATE evidence_log SET {column} = ?1 WHERE seq = 2"),
                [v],
            )
            .unwrap();
            assert_broken(&data, h, &format!("log entry 2, {column} byte {i}"));
        }
        restore_column(&conn, "evidence_log", "seq = 2", column, &original);
    }
    assert_holds(&data, "after restoring the log");
    // An entry removed from the log.
    let row2: Vec<rusqlite::types::Value> = {
        let mut stmt = conn
            .prepare("SELECT * FROM evidence_log WHERE seq = 2")
            .unwrap();
        let n = stmt.column_count();
        stmt.query_row([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
    };
    conn.execute("DELETE FROM evidence_log WHERE seq = 2", [])
        .unwrap();
    let found = assert_broken(&data, h, "entry 2 deleted");
    assert!(found.contains(&evidence_ids[1].to_string()), "{found}");
    let placeholders = vec!["?"; row2.len()].join(", ");
    conn.execute(
        &format!("INSERT INTO evidence_log VALUES ({placeholders})"),
        rusqlite::params_from_iter(row2.iter()),
    )
    .unwrap();
    assert_holds(&data, "after restoring entry 2");

    // The signature image, its strokes, a photo: the first byte, the last, and a
    // spread between; and a deleted file.
    let decoded = EvidenceRecord::from_canonical(&record).unwrap();
    for (what, hash) in decoded.blobs() {
        let path = blob_path(&data, &hash);
        let original = std::fs::read(&path).unwrap();
        let n = original.len();
        let mut positions: Vec<usize> = (0..16).map(|k| k * (n - 1) / 15).collect();
        positions.dedup();
        for i in positions {
            let mut b = original.clone();
            b[i] ^= 0x01;
            std::fs::write(&path, &b).unwrap();
            let found = assert_broken(&data, h, &format!("{what} byte {i}"));
            assert!(found.contains(what), "{found}");
        }
        std::fs::remove_file(&path).unwrap();
        assert!(assert_broken(&data, h, "blob deleted").contains("missing"));
        std::fs::write(&path, &original).unwrap();
    }
    assert_holds(&data, "after restoring the blobs");

    // The household document's copy of a record, rewritten with a valid-looking change.
    let doc_bytes: Vec<u8> = conn
        .query_row(
            "SELECT bytes FROM documents WHERE doc_id = ?1",
            [&h.0.as_bytes()[..]],
            |r| r.get(0),
        )
        .unwrap();
    let mut doc = Automerge::load(&doc_bytes).unwrap();
    {
        let mut tx = doc.transaction();
        let ev = match tx.get(ROOT, "evidence").unwrap().unwrap() {
            (automerge::Value::Object(ObjType::Map), id) => id,
            _ => panic!("no evidence map"),
        };
        let entry = match tx.get(&ev, evidence_ids[0].to_string()).unwrap().unwrap() {
            (automerge::Value::Object(ObjType::Map), id) => id,
            _ => panic!("no entry"),
        };
        let mut forged = record.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        tx.put(&entry, "record", automerge::ScalarValue::Bytes(forged))
            .unwrap();
        tx.commit();
    }
    conn.execute(
        "UPDATE documents SET bytes = ?1 WHERE doc_id = ?2",
        params![doc.save(), &h.0.as_bytes()[..]],
    )
    .unwrap();
    let found = assert_broken(&data, h, "document copy");
    assert!(found.contains("differs"), "{found}");
    // The command line names it and exits 1.
    let (code, out) = verify_cli(&data, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&evidence_ids[0].to_string()), "{out}");
    conn.execute(
        "UPDATE documents SET bytes = ?1 WHERE doc_id = ?2",
        params![doc_bytes, &h.0.as_bytes()[..]],
    )
    .unwrap();
    assert_holds(&data, "after restoring the document");

    // An entry slipped in below the chain's start.
    conn.execute(
        "INSERT INTO evidence_log SELECT 0, 'ffffffff-ffff-4fff-bfff-ffffffffffff', doc_id,
            visit_id, kind, device_id, counter + 100, public_key, signed_at_ms,
            received_at_ms, record, device_signature, prev_hash, entry_hash, server_key,
            server_signature FROM evidence_log WHERE seq = 1",
        [],
    )
    .unwrap();
    assert!(assert_broken(&data, h, "entry 0").contains("below 1"));
    conn.execute("DELETE FROM evidence_log WHERE seq = 0", [])
        .unwrap();

    // The organisation's text of the pledge, rewritten with its hash.
    let org_id: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'organisation'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let org_key = uuid::Uuid::parse_str(&org_id).unwrap();
    let org_bytes: Vec<u8> = conn
        .query_row(
            "SELECT bytes FROM documents WHERE doc_id = ?1",
            [&org_key.as_bytes()[..]],
            |r| r.get(0),
        )
        .unwrap();
    let mut org = Automerge::load(&org_bytes).unwrap();
    {
        let mut tx = org.transaction();
        let (_, templates) = tx.get(ROOT, "templates").unwrap().unwrap();
        let (_, pledge) = tx.get(&templates, "pledge").unwrap().unwrap();
        let (_, versions) = tx.get(&pledge, "versions").unwrap().unwrap();
        let (_, v1) = tx.get(&versions, "1").unwrap().unwrap();
        tx.put(&v1, "body", "另一段文字").unwrap();
        tx.put(&v1, "text_sha256", "00".repeat(32)).unwrap();
        tx.commit();
    }
    conn.execute(
        "UPDATE documents SET bytes = ?1 WHERE doc_id = ?2",
        params![org.save(), &org_key.as_bytes()[..]],
    )
    .unwrap();
    assert!(assert_broken(&data, h, "template text").contains("did not publish"));
    conn.execute(
        "UPDATE documents SET bytes = ?1 WHERE doc_id = ?2",
        params![org_bytes, &org_key.as_bytes()[..]],
    )
    .unwrap();

    // A receipt for a record the household does not hold.
    let mut doc = Automerge::load(&doc_bytes).unwrap();
    let receipt =
        model::read_household(&doc).unwrap().receipts[&evidence_ids[0].to_string()].clone();
    model::add_receipt(&mut doc, EvidenceId::new(), &receipt, now_ms()).unwrap();
    conn.execute(
        "UPDATE documents SET bytes = ?1 WHERE doc_id = ?2",
        params![doc.save(), &h.0.as_bytes()[..]],
    )
    .unwrap();
    assert!(assert_broken(&data, h, "orphan receipt").contains("does not hold"));
    conn.execute(
        "UPDATE documents SET bytes = ?1 WHERE doc_id = ?2",
        params![doc_bytes, &h.0.as_bytes()[..]],
    )
    .unwrap();
    assert_holds(&data, "at the end");
}

/// What a phone's file holds of its signing key: someone with the phone's file can
/// sign with it. The server must still refuse what breaks the rules.
fn phone_key(path: &Path) -> DeviceKey {
    let seed: Vec<u8> = Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT seed FROM device_keys WHERE retired_at_ms IS NULL ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    DeviceKey::from_seed(&seed.try_into().unwrap())
}

/// Edits a household document inside a phone's file, as a tampered app would, and
/// queues the change for the next sync.
fn tamper_phone(path: &Path, device: DeviceId, h: HouseholdId, edit: impl FnOnce(&mut Automerge)) {
    let conn = Connection::open(path).unwrap();
    let bytes: Vec<u8> = conn
        .query_row(
            "SELECT bytes FROM documents WHERE doc_id = ?1",
            [&h.0.as_bytes()[..]],
            |r| r.get(0),
        )
        .unwrap();
    let mut doc = Automerge::load(&bytes).unwrap().with_actor(device.actor());
    let before = doc.get_heads();
    edit(&mut doc);
    for mut c in doc.get_changes(&before) {
        conn.execute(
            "INSERT INTO outbox (doc_id, hash, bytes, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                &h.0.as_bytes()[..],
                &c.hash().0[..],
                c.bytes().as_ref(),
                now_ms()
            ],
        )
        .unwrap();
    }
    conn.execute(
        "UPDATE documents SET bytes = ?1 WHERE doc_id = ?2",
        params![doc.save(), &h.0.as_bytes()[..]],
    )
    .unwrap();
}

/// Signs `record` with `key` and writes it into household `h` of a phone's file, as a
/// tampered app would, queued for the next sync.
fn inject_record(
    path: &Path,
    device: DeviceId,
    h: HouseholdId,
    key: &DeviceKey,
    record: &EvidenceRecord,
) {
    let signed = evidence::sign_record(key, record).unwrap();
    tamper_phone(path, device, h, |doc| {
        let entry = EvidenceEntry {
            record: model::Bytes(signed.record),
            signature: model::Bytes(signed.signature),
        };
        model::add_evidence(doc, record.id, &entry, now_ms()).unwrap();
    });
}

fn evidence_entry(doc: &Automerge, id: EvidenceId) -> automerge::ObjId {
    let ev = match doc.get(ROOT, "evidence").unwrap().unwrap() {
        (automerge::Value::Object(ObjType::Map), id) => id,
        _ => panic!("no evidence map"),
    };
    match doc.get(&ev, id.to_string()).unwrap().unwrap() {
        (automerge::Value::Object(ObjType::Map), entry) => entry,
        _ => panic!("no entry {id}"),
    }
}

#[test]
fn edits_replays_and_foreign_keys_are_refused_and_the_rest_of_the_push_is_kept() {
    let f = field();
    let path = f._dir.path().join("worker-a.db");
    let mut a = phone(&f, "worker-a");
    let device = a.device_id();
    let ids = households(&a);
    let (ha, hb, hc, hd, he) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let (_, signed) = complete_visit(&mut a, ha, 3);
    let (_, signed_e) = complete_visit(&mut a, he, 7);
    sync_now(&mut a, None, |_| {}).unwrap();
    let first: EvidenceRecord = EvidenceRecord::from_canonical(
        &a.household(ha).unwrap().evidence[&signed[0].to_string()]
            .record
            .0,
    )
    .unwrap();

    // Legitimate work queued first: a visit in another household, one in the same.
    let legit_b = a
        .record_visit(
            hb,
            NewVisit {
                outcome: VisitOutcome::NobodyHome,
                outcome_reason: "无人应答".into(),
                started_at_ms: now_ms(),
                finished_at_ms: None,
                target_groups_reached: vec![],
                remarks: String::new(),
                location: None,
            },
        )
        .unwrap();
    let legit_a = start(&mut a, ha);
    let open_c = start(&mut a, hc);
    let open_d = start(&mut a, hd);
    let (hf, hg) = (ids[5], ids[6]);
    let open_f = start(&mut a, hf);

    // 1. An edit of an existing record's bytes.
    tamper_phone(&path, device, ha, |doc| {
        let entry = evidence_entry(doc, signed[0]);
        let mut tx = doc.transaction();
        tx.put(&entry, "record", automerge::ScalarValue::Bytes(vec![0xa0]))
            .unwrap();
        tx.commit();
    });
    // 2. A deletion of a record (in another household: a change made after the edit
    // above builds on it, and is refused for that).
    tamper_phone(&path, device, he, |doc| {
        let (_, ev) = doc.get(ROOT, "evidence").unwrap().unwrap();
        let mut tx = doc.transaction();
        tx.delete(&ev, signed_e[1].to_string()).unwrap();
        tx.commit();
    });
    // 3. A new record that reuses counter 1, properly signed with the phone's own key.
    let key = phone_key(&path);
    let signer_c = head_of(&a, hc);
    let replay = EvidenceRecord {
        id: EvidenceId::new(),
        household: hc,
        visit: open_c,
        signer: signer_c,
        signer_name: a.household(hc).unwrap().residents[&signer_c.to_string()]
            .name
            .clone(),
        counter: first.counter,
        ..first.clone()
    };
    inject_record(&path, device, hc, &key, &replay);
    // 4. A record signed with a key the server never registered.
    let stranger = DeviceKey::generate().unwrap();
    let foreign = EvidenceRecord {
        id: EvidenceId::new(),
        household: hd,
        visit: open_d,
        counter: 1_000,
        key: stranger.public(),
        ..first.clone()
    };
    inject_record(&path, device, hd, &stranger, &foreign);

    // 5. A record reusing an accepted record's ID, in another household.
    let signer_f = head_of(&a, hf);
    let copied_id = EvidenceRecord {
        household: hf,
        visit: open_f,
        signer: signer_f,
        signer_name: a.household(hf).unwrap().residents[&signer_f.to_string()]
            .name
            .clone(),
        counter: 2_000,
        ..first.clone()
    };
    inject_record(&path, device, hf, &key, &copied_id);
    // 6. A household passing itself off as the organisation document (with a forged
    // notice), which would fool other phones into showing its text.
    tamper_phone(&path, device, hg, |doc| {
        let mut tx = doc.transaction();
        tx.put(ROOT, "kind", "organisation").unwrap();
        tx.put_object(ROOT, "templates", ObjType::Map).unwrap();
        tx.commit();
    });

    sync_now(&mut a, None, |_| {}).unwrap();
    let refused = a.refused_changes().unwrap();
    let reason_for = |doc: HouseholdId, needle: &str| {
        refused
            .iter()
            .any(|r| r.doc == doc.0 && r.reason.contains(needle))
    };
    assert!(reason_for(ha, "never changed"), "edit: {refused:?}");
    assert!(reason_for(he, "deletes nothing"), "deletion: {refused:?}");
    assert!(reason_for(hc, "counter"), "replay: {refused:?}");
    assert!(reason_for(hd, "not registered"), "foreign key: {refused:?}");
    assert!(reason_for(hf, "received before"), "copied ID: {refused:?}");
    assert!(reason_for(hg, "office only"), "kind: {refused:?}");
    assert!(a.outbox().unwrap().is_empty(), "every change was answered");

    // The rest of the push arrived: another phone sees both legitimate visits and the
    // records unchanged.
    let mut b = phone(&f, "worker-b");
    sync_now(&mut b, None, |_| {}).unwrap();
    assert!(
        b.household(hb)
            .unwrap()
            .visits
            .contains_key(&legit_b.to_string())
    );
    let seen_a = b.household(ha).unwrap();
    assert!(seen_a.visits.contains_key(&legit_a.to_string()));
    assert_eq!(seen_a.evidence.len(), 2);
    assert_eq!(
        b.household(he).unwrap().evidence.len(),
        2,
        "nothing deleted"
    );
    assert!(
        b.verify_evidence(None)
            .unwrap()
            .iter()
            .all(|c| c.problems.is_empty())
    );
    assert!(b.household(hc).unwrap().evidence.is_empty());
    assert!(b.household(hd).unwrap().evidence.is_empty());
    assert!(b.household(hf).unwrap().evidence.is_empty());
    let org = b.organisation().unwrap().unwrap();
    assert!(org.templates["notice"].versions["1"].body.contains("96110"));
    assert_eq!(
        b.households(&HouseholdQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .len(),
        ids.len()
    );
    let (code, out) = verify_cli(&f.server.data, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 log entries"), "{out}");

    // The phone took the refused changes out of its own copy (they stay listed as
    // refused): its view is the server's again, and later work there is accepted.
    let mine = a.household(ha).unwrap();
    assert_eq!(
        mine.evidence[&signed[0].to_string()],
        seen_a.evidence[&signed[0].to_string()]
    );
    assert_eq!(a.household(he).unwrap().evidence.len(), 2);
    assert!(a.household(hc).unwrap().evidence.is_empty());
    assert!(
        a.verify_evidence(None)
            .unwrap()
            .iter()
            .all(|c| c.problems.is_empty())
    );
    let later = start(&mut a, ha);
    sync_now(&mut a, None, |_| {}).unwrap();
    assert_eq!(
        a.refused_changes().unwrap().len(),
        refused.len(),
        "nothing new refused"
    );
    sync_now(&mut b, None, |_| {}).unwrap();
    assert!(
        b.household(ha)
            .unwrap()
            .visits
            .contains_key(&later.to_string())
    );
}

#[test]
fn a_re_enrolled_phone_keeps_its_old_records_verifiable() {
    let f = field();
    let mut a = phone(&f, "worker-a");
    let ids = households(&a);
    complete_visit(&mut a, ids[0], 5);
    sync_now(&mut a, None, |_| {}).unwrap();

    // A new key: records cannot go out until the server knows it.
    let old = a.device_public_key();
    a.renew_device_key().unwrap();
    let v = start(&mut a, ids[1]);
    a.attach_photo(ids[1], v, &std::fs::read(&real_photos()[0]).unwrap())
        .unwrap();
    sign(&mut a, ids[1], v, EvidenceKind::Pledge, 9);
    finish_completed(&mut a, ids[1], v).unwrap();
    assert!(matches!(
        sync_now(&mut a, None, |_| {}),
        Err(Error::KeyNotRegistered)
    ));
    Client::new(&f.server.url())
        .sign_in(&mut a, "worker-a", PASSWORD)
        .unwrap();
    sync_now(&mut a, None, |_| {}).unwrap();
    assert!(a.refused_changes().unwrap().is_empty());
    assert_ne!(a.device_public_key(), old);

    // Both keys' records hold, on the server and on the phone.
    let (code, out) = verify_cli(&f.server.data, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 log entries"), "{out}");
    let checks = a.verify_evidence(None).unwrap();
    assert_eq!(checks.len(), 3);
    assert!(
        checks
            .iter()
            .all(|c| c.problems.is_empty() && c.receipt == ReceiptState::Verified)
    );

    // The phone reinstalled (a new store, a new device and key) still checks the old
    // records it receives, without their blobs.
    let mut fresh = phone_as(&f, "worker-a-reinstalled", "worker-a");
    sync_now(&mut fresh, None, |_| {}).unwrap();
    let checks = fresh.verify_evidence(None).unwrap();
    assert_eq!(checks.len(), 3);
    for c in &checks {
        assert!(c.problems.is_empty(), "{c:?}");
        assert_eq!(c.receipt, ReceiptState::Verified);
        assert!(c.blobs_not_here > 0);
    }
}
