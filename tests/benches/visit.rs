//! Recording-a-visit benchmark: `Store::record_visit` on the real phone store (one
//! SQLite file in a temporary folder on disk, WAL, `synchronous=FULL`), 1,000 calls over
//! 200 households, against a plain rusqlite INSERT of a comparable row in its own
//! transaction with the same pragmas, interleaved in the same run so that noise from
//! other processes falls on both alike. A second run attaches a real fixture photo to
//! every 10th visit. A third run records the same visits and photos in an encrypted
//! store (`Store::open_encrypted`, issue 5) and a plain one, interleaved.
//!
//! Run: `cargo bench -p doorstep-tests --bench visit`
//! Environment: `DOORSTEP_FIXTURES` (the fixtures folder; default `../shared/fixtures`
//! beside the workspace), `DOORSTEP_BENCH_VISITS` (calls per run, default 1000).
//!
//! These are measurements, not tests: nothing here asserts a time.

use std::path::Path;
use std::time::{Duration, Instant};

use automerge::{ActorId, Automerge};
use doorstep_core::media::{self, PhotoLimits};
use doorstep_core::model::{self, HouseholdId, VisitId, VisitOutcome};
use doorstep_core::store::{NewVisit, Store, now_ms};
use rusqlite::{Connection, params};

const HOUSEHOLDS: usize = 200;
const PHOTO_EVERY: usize = 10;

fn visit(seed: usize) -> NewVisit {
    doorstep_server::demo::demo_visit(seed as u32)
}

/// A phone store holding the 200 households, as after a first sync.
fn phone_store(dir: &Path) -> (Store, Vec<HouseholdId>, Vec<Vec<u8>>) {
    fill(Store::open(dir.join("phone.db")).expect("open store"))
}

/// The 200 households in `store`, as after a first sync.
fn fill(mut store: Store) -> (Store, Vec<HouseholdId>, Vec<Vec<u8>>) {
    store
        .set_setting("username", "bench-worker")
        .expect("set username");
    let (ids, docs) = doorstep_tests::insert_demo_households(&mut store, HOUSEHOLDS)
        .into_iter()
        .unzip();
    (store, ids, docs)
}

/// The fixtures are few, and the store keeps a blob once per hash: make the `k`th stored
/// photo distinct (one byte of scan data) so every attach writes its blobs, as distinct
/// photos in the field do.
fn make_distinct(intake: &mut media::IntakePhoto, k: usize) {
    for (bytes, sha) in [
        (&mut intake.jpeg, &mut intake.sha256),
        (&mut intake.thumbnail, &mut intake.thumb_sha256),
    ] {
        let at = bytes.len() - 3;
        bytes[at] = (k % 127) as u8;
        *sha = media::sha256_hex(bytes);
    }
}

/// The anchor: a table with one ~1 KB row per visit, same pragmas as the store.
fn anchor_db(dir: &Path) -> Connection {
    let conn = Connection::open(dir.join("anchor.db")).expect("open anchor");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    conn.execute_batch(
        "CREATE TABLE visits (
            visit_id BLOB PRIMARY KEY,
            household BLOB NOT NULL,
            body BLOB NOT NULL,
            created_at_ms INTEGER NOT NULL)",
    )
    .expect("anchor schema");
    conn
}

fn anchor_insert(conn: &mut Connection, household: HouseholdId, body: &[u8]) {
    let tx = conn.transaction().expect("begin");
    tx.execute(
        "INSERT INTO visits VALUES (?1, ?2, ?3, ?4)",
        params![
            &VisitId::new().0.as_bytes()[..],
            &household.0.as_bytes()[..],
            body,
            now_ms()
        ],
    )
    .expect("insert");
    tx.commit().expect("commit");
}

struct Stats {
    n: usize,
    median: Duration,
    p99: Duration,
    max: Duration,
    total: Duration,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut v = samples.to_vec();
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Stats {
        n: v.len(),
        median: v[v.len() / 2],
        p99: at(0.99),
        max: v[v.len() - 1],
        total: v.iter().sum(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn row(what: &str, s: &Stats, anchor: Option<&Stats>, per_second: Option<f64>) {
    let ratio = anchor
        .map(|a| {
            format!(
                "{:.1}× / {:.1}×",
                s.median.as_secs_f64() / a.median.as_secs_f64(),
                s.p99.as_secs_f64() / a.p99.as_secs_f64()
            )
        })
        .unwrap_or_else(|| "-".into());
    let rate = per_second.unwrap_or(s.n as f64 / s.total.as_secs_f64());
    println!(
        "| {what} | {} | {} | {} | {} | {:.0} | {ratio} |",
        s.n,
        ms(s.median),
        ms(s.p99),
        ms(s.max),
        rate
    );
}

fn doc_sizes(path: &Path) -> (f64, i64) {
    let conn = Connection::open(path).expect("open store read-only");
    conn.query_row(
        "SELECT avg(length(bytes)), max(length(bytes)) FROM documents",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("document sizes")
}

fn main() {
    let visits: usize = std::env::var("DOORSTEP_BENCH_VISITS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let body = vec![0x5a_u8; 1024];

    // Run 1: record_visit, interleaved with the anchor.
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, ids, docs) = phone_store(dir.path());
    let mut anchor = anchor_db(dir.path());
    let mut record = Vec::with_capacity(visits);
    let mut plain = Vec::with_capacity(visits);
    for i in 0..visits {
        let h = ids[i % HOUSEHOLDS];
        let t = Instant::now();
        store.record_visit(h, visit(i)).expect("record visit");
        record.push(t.elapsed());
        let t = Instant::now();
        anchor_insert(&mut anchor, h, &body);
        plain.push(t.elapsed());
    }
    let (avg_doc, max_doc) = doc_sizes(&dir.path().join("phone.db"));
    let change_bytes: usize = store
        .outbox()
        .expect("outbox")
        .iter()
        .map(|c| c.bytes.len())
        .sum();
    drop(store);

    // The Automerge part alone, in memory: what record_visit does to the document
    // (load, add the visit, extract the change, save, read back for the index).
    let mut in_memory = Vec::with_capacity(visits);
    let mut mem_docs = docs;
    let actor = ActorId::random();
    for i in 0..visits {
        let slot = i % HOUSEHOLDS;
        let t = Instant::now();
        let mut doc = Automerge::load(&mem_docs[slot])
            .expect("load")
            .with_actor(actor.clone());
        let before = doc.get_heads();
        let v = model::Visit {
            visitor: "bench-worker".into(),
            device_id: actor.to_hex_string(),
            started_at_ms: now_ms(),
            finished_at_ms: None,
            outcome: Some(VisitOutcome::NobodyHome),
            outcome_reason: "敲门无人应答，已留联系卡".into(),
            voided: None,
            target_groups_reached: vec!["老年人".into()],
            remarks: "讲解了冒充客服、刷单返利等常见诈骗".into(),
            photos: Default::default(),
            location: None,
        };
        model::add_visit(&mut doc, VisitId::new(), &v, now_ms()).expect("add visit");
        let changes = doc.get_changes(&before).len();
        assert_eq!(changes, 1);
        mem_docs[slot] = doc.save();
        model::read_household(&doc).expect("hydrate");
        in_memory.push(t.elapsed());
    }

    // Run 2: the same with a real photo attached to every 10th visit.
    let photo_dir = doorstep_tests::fixture("photos/phone");
    let mut photos: Vec<(String, Vec<u8>)> = std::fs::read_dir(&photo_dir)
        .expect("read phone fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg")))
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("read photo"))
        })
        .collect();
    photos.sort();
    let dir2 = tempfile::tempdir().expect("temp dir");
    let (mut store, ids, _) = phone_store(dir2.path());
    let mut anchor = anchor_db(dir2.path());
    let limits = PhotoLimits::default();
    let mut record2 = Vec::with_capacity(visits);
    let mut plain2 = Vec::with_capacity(visits);
    let mut intake_t = Vec::new();
    let mut attach_t = Vec::new();
    for i in 0..visits {
        let h = ids[i % HOUSEHOLDS];
        let t = Instant::now();
        let v = store.record_visit(h, visit(i)).expect("record visit");
        record2.push(t.elapsed());
        let t = Instant::now();
        anchor_insert(&mut anchor, h, &body);
        plain2.push(t.elapsed());
        if i % PHOTO_EVERY == PHOTO_EVERY - 1 {
            let (_, input) = &photos[(i / PHOTO_EVERY) % photos.len()];
            // `Store::attach_photo` is `intake_photo` then `attach_intake`; timed apart.
            let t = Instant::now();
            let mut intake = media::intake_photo(input, &limits).expect("intake");
            intake_t.push(t.elapsed());
            make_distinct(&mut intake, i / PHOTO_EVERY);
            let t = Instant::now();
            store.attach_intake(h, v, &intake).expect("attach photo");
            attach_t.push(t.elapsed());
        }
    }
    // The batch's time is that of its own calls, without the interleaved anchor.
    let batch_time: Duration = record2.iter().chain(&intake_t).chain(&attach_t).sum();
    let photo_bytes: usize = store
        .pending_blobs()
        .expect("pending blobs")
        .iter()
        .map(|h| store.blob(h).expect("blob").map_or(0, |b| b.len()))
        .sum();
    let blobs = store.pending_blobs().expect("pending blobs").len();
    drop(store);

    // Run 3 (issue 5): the encrypted store (SQLCipher pages, sealed blobs) against the
    // plain one, interleaved call by call, the same visits and the same photos.
    let dir3 = tempfile::tempdir().expect("temp dir");
    let (mut plain_store, ids3, _) = phone_store(dir3.path());
    let (mut enc_store, _, _) = fill(
        Store::open_encrypted(dir3.path().join("encrypted.db"), &[0x42; 32])
            .expect("open encrypted store"),
    );
    let mut rec_plain = Vec::with_capacity(visits);
    let mut rec_enc = Vec::with_capacity(visits);
    let mut att_plain = Vec::new();
    let mut att_enc = Vec::new();
    let mut read_plain = Vec::new();
    let mut read_enc = Vec::new();
    for i in 0..visits {
        let h = ids3[i % HOUSEHOLDS];
        let t = Instant::now();
        let vp = plain_store.record_visit(h, visit(i)).expect("record visit");
        rec_plain.push(t.elapsed());
        let t = Instant::now();
        let ve = enc_store.record_visit(h, visit(i)).expect("record visit");
        rec_enc.push(t.elapsed());
        if i % PHOTO_EVERY == PHOTO_EVERY - 1 {
            let (_, input) = &photos[(i / PHOTO_EVERY) % photos.len()];
            let mut intake = media::intake_photo(input, &limits).expect("intake");
            make_distinct(&mut intake, i / PHOTO_EVERY);
            let t = Instant::now();
            plain_store
                .attach_intake(h, vp, &intake)
                .expect("attach photo");
            att_plain.push(t.elapsed());
            let t = Instant::now();
            enc_store
                .attach_intake(h, ve, &intake)
                .expect("attach photo");
            att_enc.push(t.elapsed());
            // Reading a photo back, as the upload does.
            let t = Instant::now();
            plain_store
                .blob(&intake.sha256)
                .expect("blob")
                .expect("held");
            read_plain.push(t.elapsed());
            let t = Instant::now();
            enc_store.blob(&intake.sha256).expect("blob").expect("held");
            read_enc.push(t.elapsed());
        }
    }
    drop((plain_store, enc_store));

    let a = stats(&plain);
    println!(
        "### Recording a visit ({visits} calls over {HOUSEHOLDS} households, SQLite WAL + synchronous=FULL on disk)\n"
    );
    println!("| operation | calls | median | p99 | max | per second | × anchor (median / p99) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    row("`Store::record_visit`", &stats(&record), Some(&a), None);
    row(
        "`record_visit`, first visit to each household",
        &stats(&record[..HOUSEHOLDS.min(visits)]),
        Some(&a),
        None,
    );
    row(
        "`record_visit`, last visit to each household",
        &stats(&record[visits.saturating_sub(HOUSEHOLDS)..]),
        Some(&a),
        None,
    );
    row(
        "anchor: rusqlite INSERT of a 1 KB row, own transaction",
        &a,
        None,
        None,
    );
    row(
        "Automerge work alone, in memory (load, add visit, save, hydrate)",
        &stats(&in_memory),
        Some(&a),
        None,
    );
    println!();
    println!(
        "Documents after the run: {avg_doc:.0} B on average, {max_doc} B at most; the {visits} changes are {} B on average.",
        change_bytes / visits.max(1)
    );
    println!();
    println!(
        "### With a photo on every {PHOTO_EVERY}th visit ({} fixture photos from photos/phone, in turn)\n",
        photos.len()
    );
    println!("| operation | calls | median | p99 | max | per second | × anchor (median / p99) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let a2 = stats(&plain2);
    row("`Store::record_visit`", &stats(&record2), Some(&a2), None);
    row(
        "photo intake (`media::intake_photo`)",
        &stats(&intake_t),
        None,
        None,
    );
    row(
        "attaching it durably (`Store::attach_intake`: photo, thumbnail, change)",
        &stats(&attach_t),
        Some(&a2),
        None,
    );
    row(
        "anchor: rusqlite INSERT of a 1 KB row, own transaction",
        &a2,
        None,
        None,
    );
    println!(
        "| whole batch: {visits} visits and {} photos | - | - | - | - | {:.0} visits/s | - |",
        attach_t.len(),
        visits as f64 / batch_time.as_secs_f64()
    );
    println!();
    println!(
        "Stored photo and thumbnail blobs: {blobs}, {} B on average.",
        photo_bytes / blobs.max(1)
    );
    println!();
    println!(
        "### Encrypted store against the plain store ({visits} visits, a photo on every {PHOTO_EVERY}th, interleaved)\n"
    );
    println!(
        "| operation | calls | median | p99 | max | per second | × plain store (median / p99) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let (rp, ap, bp) = (stats(&rec_plain), stats(&att_plain), stats(&read_plain));
    row(
        "`record_visit`, encrypted store",
        &stats(&rec_enc),
        Some(&rp),
        None,
    );
    row("`record_visit`, plain store", &rp, None, None);
    row(
        "`attach_intake`, encrypted store",
        &stats(&att_enc),
        Some(&ap),
        None,
    );
    row("`attach_intake`, plain store", &ap, None, None);
    row(
        "`blob` (read a photo back), encrypted store",
        &stats(&read_enc),
        Some(&bp),
        None,
    );
    row("`blob`, plain store", &bp, None, None);
}
