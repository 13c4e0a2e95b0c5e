//! Evidence benchmark (issue 3): what signed notices and pledges cost to sign, to
//! verify, to accept on the server, and to re-check with `doorstep-server verify`.
//!
//! Run: `cargo bench -p doorstep-tests --bench evidence`
//! Environment: `EVIDENCE_SIGN_ITERS` (records signed and verified per row in part 1,
//! default 5000), `EVIDENCE_ACCEPT_HOUSEHOLDS` (households pushed per row in part 2,
//! default 300), `EVIDENCE_LOG_SIZES` (comma-separated evidence log sizes for part 3,
//! multiples of 10, default `10000,100000`; empty to skip part 3).
//!
//! 1. Signing and verifying one record: `evidence::sign_record` (canonical CBOR
//!    encoding, then ed25519) and `evidence::verify_record` (decoding, the re-encoding
//!    check, `verify_strict`) against the anchor, ed25519-dalek alone on the very bytes
//!    the device signs (`SigningKey::sign`, `VerifyingKey::verify_strict` with the key
//!    parsed once, and with the key parsed from its 32 bytes each time as
//!    `verify_record` must). The five operations run in alternating blocks of 100
//!    calls, in a rotating order, so that noise from other processes falls on all alike;
//!    times are the median of the blocks.
//! 2. Acceptance on the server: one `ServerDb::sync` request per household, pushing a
//!    completed visit and its signed notice and pledge (three Automerge changes, two
//!    records) built as the phone builds them, through the real push path (the write
//!    rules, `verify_strict`, the key and counter checks, the log append with the
//!    server's countersignature, the receipt change, the projection, one SQLite
//!    transaction with `synchronous=FULL` on disk). Interleaved with pushes of a visit
//!    alone to other households, for comparison.
//! 3. `verify` over evidence logs of 10,000 and 100,000 entries, each data folder
//!    built through the same push path: every household gets 5 completed visits with a
//!    notice and a pledge each (10 records), 10 households per sync request. Each
//!    household has one signature (strokes and PNG) and one small photo (320×240
//!    JPEG), cited by all 10 of its records, so the folder holds 3 distinct cited blobs
//!    per household. `verify(dir, None)` then runs in a fresh process of this binary
//!    that does nothing else (as `doorstep-server verify` would), on a warm page cache
//!    since the folder was just written. Reported: its time, its peak Rust heap
//!    (peakmem-alloc, reset right before the call) and the process's peak RSS, which
//!    also counts SQLite's own allocations (they bypass the Rust allocator).
//!
//! These are measurements, not tests: nothing here asserts a time. Counts are
//! asserted, so that each figure describes the work it names.

use std::alloc::System;
use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, Instant};

use doorstep_core::evidence::{
    self, DeviceKey, EvidenceRecord, Place, RECORD_DOMAIN, Sha256Digest, Witness, sign_record,
    verify_record,
};
use doorstep_core::media::signature::{encode_strokes, render_png};
use doorstep_core::model::{
    self, Bytes, DeviceId, EvidenceEntry, EvidenceId, EvidenceKind, GeoPoint, Household,
    HouseholdId, PhotoRef, ResidentId, Visit, VisitId, VisitOutcome,
};
use doorstep_core::protocol::{DocChanges, PROTOCOL_VERSION, PullStart, SyncRequest};
use doorstep_core::store::now_ms;
use doorstep_server::db::{Device, Role, Scope, ServerDb};
use doorstep_server::demo::{demo_households, demo_signature};
use doorstep_server::verify::{VerifyReport, verify};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};
use serde_bytes::ByteBuf;
use tempfile::TempDir;

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

const USER: &str = "bench-worker";
const PASSWORD: &str = "bench-password";
/// Calls per timed block in part 1.
const BLOCK: usize = 100;
/// Completed visits per household in part 3; each gets a notice and a pledge.
const VISITS_PER_HOUSEHOLD: usize = 5;
/// Records per household in part 3.
const RECORDS_PER_HOUSEHOLD: usize = 2 * VISITS_PER_HOUSEHOLD;
/// Households per sync request while building part 3's data folders.
const HOUSEHOLDS_PER_PUSH: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
        .max(1)
}

fn env_sizes(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("sizes are comma-separated integers")
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

// ---- the blobs a record cites ---------------------------------------------------------

/// A signature as the phone stores it: compact strokes and the rendered PNG.
struct SignatureBlobs {
    strokes: Vec<u8>,
    png: Vec<u8>,
}

impl SignatureBlobs {
    /// The demo signature for `seed`, its first stroke moved by a seed-dependent
    /// fraction of a unit so that every seed below 10,000 gives other bytes.
    fn new(seed: u32) -> Self {
        let mut s = demo_signature(seed);
        let (dx, dy) = ((seed % 100) as f32 * 0.1, (seed / 100 % 100) as f32 * 0.1);
        for p in &mut s.strokes[0].points {
            p.x += dx;
            p.y += dy;
        }
        Self {
            strokes: encode_strokes(&s),
            png: render_png(&s).expect("render signature").png,
        }
    }
}

/// A small photo of the visit (320×240 JPEG, about what a thumbnail weighs), distinct
/// for each seed.
fn small_photo(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([
            (x as u8) ^ (seed as u8),
            (y as u8).wrapping_add((seed >> 8) as u8),
            ((x + y + seed) % 251) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
    img.write_with_encoder(encoder).expect("encode JPEG");
    out.into_inner()
}

/// What one household's records cite.
struct HouseholdBlobs {
    signature: SignatureBlobs,
    photo: Vec<u8>,
}

impl HouseholdBlobs {
    fn new(seed: u32) -> Self {
        Self {
            signature: SignatureBlobs::new(seed),
            photo: small_photo(seed),
        }
    }

    fn all(&self) -> [&[u8]; 3] {
        [&self.signature.strokes, &self.signature.png, &self.photo]
    }
}

fn place(seed: u32) -> GeoPoint {
    GeoPoint {
        lat: 30.27 + f64::from(seed) * 1e-5,
        lon: 120.15,
        accuracy_m: Some(12.0),
    }
}

// ---- part 1: signing and verifying ----------------------------------------------------

/// A record as `Store::sign_evidence` builds it: a pledge signed by a head of household,
/// two photos, the place, optionally a witness.
fn sample_record(key: &DeviceKey, witness: bool) -> EvidenceRecord {
    let h = &demo_households(1)[0];
    let (signer, resident) = h.residents.iter().next().expect("a resident");
    let signature = SignatureBlobs::new(1);
    let witness_signature = SignatureBlobs::new(2);
    let mut photos = vec![
        evidence::sha256(&small_photo(1)),
        evidence::sha256(&small_photo(2)),
    ];
    photos.sort();
    EvidenceRecord {
        id: EvidenceId::new(),
        kind: EvidenceKind::Pledge,
        household: HouseholdId::parse(&h.id).expect("UUID"),
        visit: VisitId::new(),
        signer: ResidentId::parse(signer).expect("UUID"),
        signer_name: resident.name.clone(),
        template_id: "pledge".into(),
        template_version: 1,
        text_sha256: evidence::sha256(doorstep_server::db::evidence::DEFAULT_PLEDGE.as_bytes()),
        strokes_sha256: evidence::sha256(&signature.strokes),
        png_sha256: evidence::sha256(&signature.png),
        witness: witness.then(|| Witness {
            name: "李四".into(),
            reason: "右手受伤，按手印".into(),
            strokes_sha256: evidence::sha256(&witness_signature.strokes),
            png_sha256: evidence::sha256(&witness_signature.png),
        }),
        photos,
        place: Some(Place::from(place(1))),
        signed_at_ms: now_ms(),
        device: DeviceId::new(),
        key: key.public(),
        counter: 1234,
    }
}

/// Median of per-block means, in microseconds per call.
fn median_us(blocks: &mut [f64]) -> f64 {
    blocks.sort_by(f64::total_cmp);
    blocks[blocks.len() / 2]
}

fn time_block(f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..BLOCK {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / BLOCK as f64
}

/// One timed operation of part 1 and its per-block times.
struct Op<'a> {
    name: &'static str,
    run: Box<dyn FnMut() + 'a>,
    samples: Vec<f64>,
}

impl<'a> Op<'a> {
    fn new(name: &'static str, run: Box<dyn FnMut() + 'a>) -> Self {
        Self {
            name,
            run,
            samples: Vec::new(),
        }
    }
}

fn signing(iterations: usize) {
    let key = DeviceKey::from_seed(&[7u8; 32]);
    let anchor_key = SigningKey::from_bytes(&key.seed());
    let public = key.public();
    let blocks = iterations.div_ceil(BLOCK);

    println!(
        "\n### 1. Signing and verifying one record ({} calls per operation, median of {blocks} blocks of {BLOCK})\n",
        blocks * BLOCK
    );
    println!("| record | bytes | operation | µs per record | records/s | × anchor |");
    println!("|---|---:|---|---:|---:|---:|");
    for (label, witness) in [
        ("2 photos, place, no witness", false),
        ("2 photos, place, witness", true),
    ] {
        let record = sample_record(&key, witness);
        let signed = sign_record(&key, &record).expect("sign");
        // The bytes the device key signs: the domain prefix and the canonical record.
        let message = [RECORD_DOMAIN, signed.record.as_slice()].concat();
        let anchor_sig = anchor_key.sign(&message);
        assert_eq!(
            anchor_sig.to_bytes().as_slice(),
            signed.signature.as_slice()
        );
        let verifying = VerifyingKey::from_bytes(&public).expect("key");
        let sig = Signature::from_bytes(&anchor_sig.to_bytes());
        assert_eq!(
            verify_record(&signed.record, &signed.signature, Some(&public)).expect("verifies"),
            record
        );

        let mut ops = [
            Op::new(
                "`sign_record` (encode, sign)",
                Box::new(|| {
                    black_box(sign_record(&key, black_box(&record)).expect("sign"));
                }),
            ),
            Op::new(
                "anchor: `SigningKey::sign`",
                Box::new(|| {
                    black_box(anchor_key.sign(black_box(&message)));
                }),
            ),
            Op::new(
                "`verify_record` (decode, re-encode check, key parse, verify_strict)",
                Box::new(|| {
                    black_box(
                        verify_record(black_box(&signed.record), &signed.signature, Some(&public))
                            .expect("verify"),
                    );
                }),
            ),
            Op::new(
                "anchor: `VerifyingKey::verify_strict`, key parsed once",
                Box::new(|| {
                    verifying
                        .verify_strict(black_box(&message), &sig)
                        .expect("verify");
                }),
            ),
            Op::new(
                "anchor with key parse: `VerifyingKey::from_bytes` + `verify_strict`",
                Box::new(|| {
                    VerifyingKey::from_bytes(black_box(&public))
                        .expect("key")
                        .verify_strict(black_box(&message), &sig)
                        .expect("verify");
                }),
            ),
        ];
        // Warm up.
        for op in &mut ops {
            time_block(op.run.as_mut());
        }
        let n = ops.len();
        for b in 0..blocks {
            for i in 0..n {
                let op = &mut ops[(b + i) % n];
                op.samples.push(time_block(op.run.as_mut()));
            }
        }
        let us: Vec<f64> = ops
            .iter_mut()
            .map(|op| median_us(&mut op.samples))
            .collect();
        // Each row's anchor: signing against raw signing, verifying against raw
        // verify_strict with the key parsed once.
        let anchors = [Some(1), None, Some(3), None, Some(3)];
        for (i, Op { name, .. }) in ops.iter().enumerate() {
            let (rec, bytes) = if i == 0 {
                (label.to_string(), signed.record.len().to_string())
            } else {
                (String::new(), String::new())
            };
            let ratio = anchors[i]
                .map(|a| format!("{:.2}×", us[i] / us[a]))
                .unwrap_or_else(|| "-".into());
            println!(
                "| {rec} | {bytes} | {name} | {:.1} | {:.0} | {ratio} |",
                us[i],
                1e6 / us[i]
            );
        }
    }
}

// ---- a server and a phone pushing to it -----------------------------------------------

/// A server data folder with `n` demo households and one phone signed in to it, with
/// the phone's key, evidence counter and sync cursor.
struct Fixture {
    dir: TempDir,
    db: ServerDb,
    device: Device,
    key: DeviceKey,
    counter: u64,
    cursor: u64,
    households: Vec<Household>,
    notice_sha256: Sha256Digest,
    pledge_sha256: Sha256Digest,
}

impl Fixture {
    fn new(n: usize) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let db = ServerDb::open(dir.path()).expect("open server");
        let households = demo_households(n);
        db.import_households(&households).expect("import");
        db.add_user(USER, PASSWORD, Role::GridWorker, &Scope::town(), "(test)")
            .expect("add user");
        let key = DeviceKey::from_seed(&[7u8; 32]);
        let token = db
            .sign_in(USER, PASSWORD, DeviceId::new(), Some(key.public()))
            .expect("sign in");
        let device = db.authenticate(&token).expect("authenticate");
        let org = db.organisation().expect("organisation");
        let text = |id: &str| {
            evidence::parse_sha256(&org.templates[id].versions["1"].text_sha256)
                .expect("hex text hash")
        };
        let (notice_sha256, pledge_sha256) = (text("notice"), text("pledge"));
        let mut fixture = Self {
            dir,
            db,
            device,
            key,
            counter: 0,
            cursor: 0,
            households,
            notice_sha256,
            pledge_sha256,
        };
        fixture.first_pull();
        fixture
    }

    /// The phone's first sync: pulls every page, to start pushing from the head.
    fn first_pull(&mut self) {
        let mut pull: Option<PullStart> = None;
        loop {
            let resp = self
                .db
                .sync(
                    &self.device,
                    &SyncRequest {
                        v: PROTOCOL_VERSION,
                        cursor: self.cursor,
                        push: Vec::new(),
                        pull,
                        outbox: None,
                        dropped: vec![],
                        delivered: None,
                    },
                )
                .expect("first sync");
            if !resp.more {
                self.cursor = resp.cursor;
                return;
            }
            pull = Some(PullStart {
                since: pull.map_or(0, |p| p.since),
                head: resp.head.expect("a head with more pages"),
            });
            self.cursor = resp.cursor;
        }
    }

    /// On the phone: `visits` completed visits to household `i`, each with a notice
    /// and a pledge signed by the head of household when `signed`. Returns the changes
    /// to push, as the phone's outbox holds them.
    fn visit_changes(
        &mut self,
        i: usize,
        visits: usize,
        signed: bool,
        blobs: &HouseholdBlobs,
    ) -> DocChanges {
        let h = &self.households[i];
        let id = HouseholdId::parse(&h.id).expect("UUID");
        let mut doc = self
            .db
            .household_doc(id)
            .expect("read household")
            .expect("imported household")
            .with_actor(self.device.device_id.actor());
        let heads = doc.get_heads();
        let (signer, resident) = h
            .residents
            .iter()
            .find(|(_, r)| r.relation == "户主")
            .expect("a head of household");
        let photo_sha256 = evidence::sha256(&blobs.photo);
        let photo_hex = hex::encode(photo_sha256);
        for v in 0..visits {
            let now = now_ms();
            let visit_id = VisitId::new();
            let location = place((i * visits + v) as u32);
            let photo = PhotoRef {
                sha256: photo_hex.clone(),
                size_bytes: blobs.photo.len() as u64,
                media_type: "image/jpeg".into(),
                width: 320,
                height: 240,
                // The photo is thumbnail-sized: it stands in for its own thumbnail.
                thumbnail_sha256: photo_hex.clone(),
                added_at_ms: now,
            };
            let visit = Visit {
                visitor: self.device.username.clone(),
                device_id: self.device.device_id.to_string(),
                started_at_ms: now - 8 * 60_000,
                finished_at_ms: Some(now),
                // Unsigned, the visit is the baseline row: a visit of another outcome
                // (the server refuses a completed one without a signed paper).
                outcome: Some(if signed {
                    VisitOutcome::Completed
                } else {
                    VisitOutcome::NobodyHome
                }),
                outcome_reason: if signed {
                    String::new()
                } else {
                    "敲门无人应答".into()
                },
                voided: None,
                target_groups_reached: vec!["老年人".into()],
                remarks: "讲解了冒充客服、刷单返利等常见诈骗".into(),
                photos: BTreeMap::from([(photo_hex.clone(), photo)]),
                location: Some(location),
            };
            model::add_visit(&mut doc, visit_id, &visit, now).expect("add visit");
            if !signed {
                continue;
            }
            for (kind, text_sha256) in [
                (EvidenceKind::Notice, self.notice_sha256),
                (EvidenceKind::Pledge, self.pledge_sha256),
            ] {
                self.counter += 1;
                let record = EvidenceRecord {
                    id: EvidenceId::new(),
                    kind,
                    household: id,
                    visit: visit_id,
                    signer: ResidentId::parse(signer).expect("UUID"),
                    signer_name: resident.name.clone(),
                    template_id: kind.as_str().into(),
                    template_version: 1,
                    text_sha256,
                    strokes_sha256: evidence::sha256(&blobs.signature.strokes),
                    png_sha256: evidence::sha256(&blobs.signature.png),
                    witness: None,
                    photos: vec![photo_sha256],
                    place: Some(Place::from(location)),
                    signed_at_ms: now,
                    device: self.device.device_id,
                    key: self.key.public(),
                    counter: self.counter,
                };
                let s = sign_record(&self.key, &record).expect("sign");
                let entry = EvidenceEntry {
                    record: Bytes(s.record),
                    signature: Bytes(s.signature),
                };
                model::add_evidence(&mut doc, record.id, &entry, now).expect("add evidence");
            }
        }
        DocChanges {
            doc: id.0,
            changes: doc
                .get_changes(&heads)
                .iter()
                .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
                .collect(),
        }
    }

    /// One sync request pushing `push`; every change must be acknowledged. Returns the
    /// time `ServerDb::sync` took.
    fn push(&mut self, push: Vec<DocChanges>) -> Duration {
        let changes: usize = push.iter().map(|d| d.changes.len()).sum();
        let req = SyncRequest {
            v: PROTOCOL_VERSION,
            cursor: self.cursor,
            push,
            pull: None,
            outbox: None,
            dropped: vec![],
            delivered: None,
        };
        let start = Instant::now();
        let resp = self.db.sync(&self.device, &req).expect("sync");
        let took = start.elapsed();
        if let Some(r) = resp.rejected.first() {
            panic!("the server refused a change: {}", r.reason);
        }
        assert_eq!(resp.acked.len(), changes, "every change acknowledged");
        self.cursor = resp.cursor;
        took
    }
}

struct Stats {
    n: usize,
    median: Duration,
    p99: Duration,
    total: Duration,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut v = samples.to_vec();
    v.sort();
    let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1];
    Stats {
        n: v.len(),
        median: v[v.len() / 2],
        p99,
        total: v.iter().sum(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

// ---- part 2: acceptance -----------------------------------------------------------------

fn acceptance(households: usize) {
    let mut fx = Fixture::new(2 * households);
    let blobs = HouseholdBlobs::new(1);
    let (mut signed, mut alone) = (Vec::new(), Vec::new());
    // Warm up on two households outside the timed ones.
    let mut fx_warm = Fixture::new(2);
    for (i, with_records) in [(0, true), (1, false)] {
        let push = fx_warm.visit_changes(i, 1, with_records, &blobs);
        fx_warm.push(vec![push]);
    }
    drop(fx_warm);
    for i in 0..households {
        let push = fx.visit_changes(2 * i, 1, true, &blobs);
        signed.push(fx.push(vec![push]));
        let push = fx.visit_changes(2 * i + 1, 1, false, &blobs);
        alone.push(fx.push(vec![push]));
    }
    let totals = fx.db.totals().expect("totals");
    assert_eq!(
        totals.evidence,
        2 * households as u64,
        "every record logged"
    );
    assert_eq!(totals.visits, 2 * households as u64);

    println!(
        "\n### 2. Acceptance through `ServerDb::sync` ({households} requests of each kind, interleaved, one household each)\n"
    );
    println!("| push | requests | median | p99 | per record (median / 2) | records/s | visits/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let s = stats(&signed);
    println!(
        "| completed visit + signed notice + signed pledge (3 changes, 2 records) | {} | {} | {} | {} | {:.0} | {:.0} |",
        s.n,
        ms(s.median),
        ms(s.p99),
        ms(s.median / 2),
        2.0 * s.n as f64 / s.total.as_secs_f64(),
        s.n as f64 / s.total.as_secs_f64()
    );
    let a = stats(&alone);
    println!(
        "| visit alone, nobody home (1 change) | {} | {} | {} | - | - | {:.0} |",
        a.n,
        ms(a.median),
        ms(a.p99),
        a.n as f64 / a.total.as_secs_f64()
    );
    println!(
        "\nThe two records add {} to a request (medians), {} per record.",
        ms(s.median.saturating_sub(a.median)),
        ms(s.median.saturating_sub(a.median) / 2)
    );
}

// ---- part 3: verify ----------------------------------------------------------------------

/// Environment variable naming the data folder when this binary runs as the child
/// process that only verifies (see [`verify_child`]).
const VERIFY_CHILD: &str = "EVIDENCE_VERIFY_CHILD_DIR";

/// A kB field of `/proc/self/status` (`VmHWM:`, `VmRSS:`), in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// What the child reports: the figures of one `verify` call in a fresh process.
struct VerifyRun {
    report: VerifyReport,
    took: Duration,
    heap_peak: u64,
    rss_before: Option<u64>,
    rss_peak: Option<u64>,
}

/// The child's whole work: one `verify(dir, None)` in a process that did nothing else,
/// so that its peak RSS (which also counts SQLite's own allocations and the page
/// cache) is the verifier's. Prints one line for the parent.
fn verify_child(dir: &Path) {
    let rss_before = proc_status_bytes("VmRSS:");
    GLOBAL.reset_peak_memory();
    let start = Instant::now();
    let report = verify(dir, None)
        .expect("verify runs")
        .unwrap_or_else(|b| panic!("verify found the evidence broken: {b}"));
    let took = start.elapsed();
    let heap_peak = GLOBAL.get_peak_memory();
    let rss_peak = proc_status_bytes("VmHWM:");
    println!(
        "{} {} {} {} {} {} {} {}",
        report.entries,
        report.records,
        report.blobs,
        report.documents,
        took.as_nanos(),
        heap_peak,
        rss_before.unwrap_or(0),
        rss_peak.unwrap_or(0)
    );
}

/// Runs [`verify_child`] on `dir` in a new process of this binary.
fn verify_in_child(dir: &Path) -> VerifyRun {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env(VERIFY_CHILD, dir)
        .output()
        .expect("start the verifying process");
    assert!(
        out.status.success(),
        "the verifying process failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("UTF-8");
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect();
    let [
        entries,
        records,
        blobs,
        documents,
        nanos,
        heap_peak,
        rss_before,
        rss_peak,
    ] = n[..]
    else {
        panic!("unexpected answer from the verifying process: {line}");
    };
    VerifyRun {
        report: VerifyReport {
            entries,
            records,
            blobs,
            documents,
            pending_blobs: 0,
            pending_examples: Vec::new(),
        },
        took: Duration::from_nanos(nanos),
        heap_peak,
        rss_before: (rss_before > 0).then_some(rss_before),
        rss_peak: (rss_peak > 0).then_some(rss_peak),
    }
}

struct VerifyRow {
    entries: usize,
    households: usize,
    blobs: usize,
    blob_bytes: u64,
    db_bytes: u64,
    setup: Duration,
    sync: Duration,
    verify: Duration,
    heap_peak: u64,
    rss_before: Option<u64>,
    rss_peak: Option<u64>,
}

fn verify_log(entries: usize) -> VerifyRow {
    assert!(
        entries.is_multiple_of(RECORDS_PER_HOUSEHOLD),
        "a log size is a multiple of {RECORDS_PER_HOUSEHOLD}"
    );
    let households = entries / RECORDS_PER_HOUSEHOLD;
    let setup_start = Instant::now();
    let mut fx = Fixture::new(households);
    let mut sync = Duration::ZERO;
    let mut distinct: HashSet<Sha256Digest> = HashSet::new();
    let mut blob_bytes = 0u64;
    for first in (0..households).step_by(HOUSEHOLDS_PER_PUSH) {
        let mut push = Vec::new();
        for i in first..(first + HOUSEHOLDS_PER_PUSH).min(households) {
            let blobs = HouseholdBlobs::new(i as u32);
            for bytes in blobs.all() {
                let hash = evidence::sha256(bytes);
                if distinct.insert(hash) {
                    blob_bytes += bytes.len() as u64;
                }
                fx.db
                    .put_blob(&hex::encode(hash), bytes)
                    .expect("store blob");
            }
            push.push(fx.visit_changes(i, VISITS_PER_HOUSEHOLD, true, &blobs));
        }
        sync += fx.push(push);
    }
    let totals = fx.db.totals().expect("totals");
    assert_eq!(totals.evidence, entries as u64, "every record logged");
    let setup = setup_start.elapsed();
    let Fixture { dir, db, .. } = fx;
    drop(db);
    let db_bytes = ["doorstep.db", "doorstep.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();

    let run = verify_in_child(dir.path());
    let report = &run.report;
    assert_eq!(report.entries, entries as u64, "log entries checked");
    assert_eq!(report.records, entries as u64, "records checked");
    assert_eq!(report.documents, households as u64, "documents compared");
    assert_eq!(
        report.blobs,
        distinct.len() as u64,
        "each distinct blob hashed once"
    );
    assert_eq!(
        distinct.len(),
        3 * households,
        "3 distinct blobs a household"
    );
    VerifyRow {
        entries,
        households,
        blobs: distinct.len(),
        blob_bytes,
        db_bytes,
        setup,
        sync,
        verify: run.took,
        heap_peak: run.heap_peak,
        rss_before: run.rss_before,
        rss_peak: run.rss_peak,
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn verifying(sizes: &[usize]) {
    let rows: Vec<VerifyRow> = sizes.iter().map(|&n| verify_log(n)).collect();
    println!(
        "\n### 3. `verify(dir, None)` over the whole evidence log ({RECORDS_PER_HOUSEHOLD} records per household, 3 distinct cited blobs per household)\n"
    );
    println!(
        "| log entries | households | distinct blobs (MiB) | database (MiB) | setup | accepted during setup | `verify` | µs per entry | entries/s | peak Rust heap (MiB) | peak RSS (MiB) | RSS at start (MiB) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} ({}) | {} | {:.0} s | {:.0} records/s | {:.2} s | {:.1} | {:.0} | {} | {} | {} |",
            r.entries,
            r.households,
            r.blobs,
            mib(r.blob_bytes),
            mib(r.db_bytes),
            r.setup.as_secs_f64(),
            r.entries as f64 / r.sync.as_secs_f64(),
            r.verify.as_secs_f64(),
            r.verify.as_secs_f64() * 1e6 / r.entries as f64,
            r.entries as f64 / r.verify.as_secs_f64(),
            mib(r.heap_peak),
            r.rss_peak.map_or_else(|| "n/a".into(), mib),
            r.rss_before.map_or_else(|| "n/a".into(), mib),
        );
    }
    if let [first, .., last] = rows.as_slice() {
        println!(
            "\nFrom {} to {} entries ({:.1}× the entries): `verify` took {:.1}× the time; peak Rust heap {:.2}×, peak RSS {:.2}×.",
            first.entries,
            last.entries,
            last.entries as f64 / first.entries as f64,
            last.verify.as_secs_f64() / first.verify.as_secs_f64(),
            last.heap_peak as f64 / first.heap_peak as f64,
            match (first.rss_peak, last.rss_peak) {
                (Some(a), Some(b)) => b as f64 / a as f64,
                _ => f64::NAN,
            }
        );
    }
}

fn main() {
    if let Some(dir) = std::env::var_os(VERIFY_CHILD) {
        verify_child(Path::new(&dir));
        return;
    }
    let iterations = env_usize("EVIDENCE_SIGN_ITERS", 5000);
    let households = env_usize("EVIDENCE_ACCEPT_HOUSEHOLDS", 300);
    let sizes = env_sizes("EVIDENCE_LOG_SIZES", &[10_000, 100_000]);
    signing(iterations);
    acceptance(households);
    if !sizes.is_empty() {
        verifying(&sizes);
    }
}
