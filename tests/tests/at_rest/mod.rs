//! Issue 5 on the real server: a phone store opened through the apps' surface
//! (`doorstep_core::ffi`), enrolled with a one-time code, synced with the fixture roster
//! and a whole visit; its database, WAL and blobs hold none of the names, phone or ID
//! numbers it stores; a sync leaves the store free for the worker between requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use doorstep_core::ffi::{
    DoorstepStore, HouseholdFilter, Outcome, PadPoint, PaperKind, SignInput, SignaturePad,
    SyncCancel, SyncListener, SyncReport, VisitEnd,
};
use doorstep_core::store::now_ms;
use doorstep_server::db::{GridRef, Role, Scope, ServerDb};
use doorstep_tests::{ServerProcess, fixture, fixture_personal_data};

const KEY: [u8; 32] = [0x42; 32];

/// Counts progress reports, and on each one uses the store the sync runs on: with the
/// lock held across a request this would deadlock (std's mutex), so the sync runs on
/// its own thread under a timeout.
struct Busy {
    store: Arc<DoorstepStore>,
    reports: Arc<AtomicU64>,
}

impl SyncListener for Busy {
    fn on_progress(&self, _: SyncReport) {
        self.store.households(HouseholdFilter::default()).unwrap();
        self.reports.fetch_add(1, Ordering::Relaxed);
    }
}

fn sync(store: &Arc<DoorstepStore>) -> (SyncReport, u64) {
    let reports = Arc::new(AtomicU64::new(0));
    let listener = Busy {
        store: store.clone(),
        reports: reports.clone(),
    };
    let (tx, rx) = mpsc::channel();
    let s = store.clone();
    std::thread::spawn(move || {
        tx.send(s.sync_now(Box::new(listener), SyncCancel::new()))
            .unwrap()
    });
    let report = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the sync finished (a listener using the store did not deadlock it)")
        .unwrap();
    (report, reports.load(Ordering::Relaxed))
}

fn squiggle() -> SignaturePad {
    SignaturePad {
        surface_width: 400.0,
        surface_height: 150.0,
        strokes: vec![
            (0..60)
                .map(|i| PadPoint {
                    x: 20.0 + i as f32 * 6.0,
                    y: 70.0 + ((i as f32) * 0.5).sin() * 40.0,
                    t_ms: i * 12,
                    pressure: Some(0.6),
                })
                .collect(),
        ],
    }
}

#[test]
fn an_enrolled_phone_keeps_no_personal_data_readable_on_disk_and_syncs_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    super::import(&data, "roster/village_a.xlsx");
    let roster = doorstep_server::roster::read_roster(&fixture("roster/village_a.xlsx")).unwrap();
    let first = &roster.households[0];
    let code = {
        let db = ServerDb::open(&data).unwrap();
        db.add_user(
            "worker",
            super::PASSWORD,
            Role::GridWorker,
            &Scope::grids(vec![GridRef::new(&first.village, &first.grid)]),
            "(test)",
        )
        .unwrap();
        db.issue_enrolment("worker", "(test)", "http://unused", None)
            .unwrap()
            .code
    };
    let server = ServerProcess::start(&data);

    let path = dir.path().join("phone.db");
    let store = DoorstepStore::open(path.display().to_string(), KEY.to_vec()).unwrap();
    store.enrol_with_code(server.url(), code, None).unwrap();
    let (report, reports) = sync(&store);
    assert!(report.households_received > 0 && reports > 0, "{report:?}");
    let rows = store
        .households(HouseholdFilter {
            limit: 500,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        rows.len(),
        roster
            .households
            .iter()
            .filter(|h| h.grid == first.grid)
            .count()
    );

    // A whole visit: a real phone photo, a signed notice and pledge by an adult.
    let h = rows[0].id.clone();
    let detail = store.household(h.clone()).unwrap();
    let signer = detail
        .residents
        .iter()
        .find(|r| r.may_sign)
        .expect("an adult resident")
        .id
        .clone();
    let v = store.start_visit(h.clone(), now_ms(), None).unwrap();
    let photo = std::fs::read(fixture("photos/phone/canon_hdr_YES.jpg")).unwrap();
    store.add_photo(h.clone(), v.clone(), photo).unwrap();
    for kind in [PaperKind::Notice, PaperKind::Pledge] {
        let text = store.paper_text(kind).unwrap();
        assert!(
            !text.title.is_empty() && text.body.contains("96110"),
            "{text:?}"
        );
        let sig = store.capture_signature(squiggle(), false).unwrap();
        store
            .sign(
                h.clone(),
                v.clone(),
                SignInput {
                    kind,
                    signer: signer.clone(),
                    signature_png_sha256: sig.png_sha256,
                    witness: None,
                    location: None,
                },
            )
            .unwrap();
    }
    store
        .finish_visit(
            h.clone(),
            v.clone(),
            VisitEnd {
                outcome: Outcome::Completed,
                outcome_reason: String::new(),
                finished_at_ms: now_ms() + 1,
                target_groups_reached: vec![],
                remarks: String::new(),
            },
        )
        .unwrap();
    let (report, _) = sync(&store);
    assert!(
        report.changes_sent > 0 && report.files_uploaded >= 3,
        "{report:?}"
    );
    assert_eq!(report.changes_refused, 0, "{:?}", store.refused().unwrap());
    assert_eq!(store.pending().unwrap().changes, 0);
    assert_eq!(store.pending().unwrap().files, 0);

    // The files, with the store open (WAL in use) and after it is closed.
    let secrets: Vec<&String> = fixture_personal_data()
        .iter()
        .filter(|p| p.chars().count() >= 3 || p.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let held: Vec<&String> = secrets
        .iter()
        .copied()
        .filter(|p| {
            rows.iter().any(|r| r.head_name == **p)
                || detail.residents.iter().any(|r| r.name == **p)
                || detail.phone == **p
        })
        .collect();
    assert!(
        !held.is_empty(),
        "the phone holds some of the fixture's personal data"
    );
    let scan = |when: &str| {
        let mut scanned = 0;
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            scanned += bytes.len();
            for p in &secrets {
                let needle = p.as_bytes();
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{when}: {file} holds a fixture name or number ({} characters)",
                    p.chars().count()
                );
            }
        }
        assert!(scanned > 100_000, "{when}: only {scanned} bytes scanned");
    };
    scan("open");
    drop(store);
    scan("closed");

    // Reopened with the key, the visit is there with its photo and both papers.
    let store = DoorstepStore::open(path.display().to_string(), KEY.to_vec()).unwrap();
    let visit = store
        .household(h)
        .unwrap()
        .visits
        .into_iter()
        .find(|x| x.id == v)
        .unwrap();
    assert_eq!(visit.outcome.as_deref(), Some("completed"));
    assert_eq!((visit.photos, visit.signed.len()), (1, 2));
    let wrong = DoorstepStore::open(path.display().to_string(), vec![0x43; 32]).unwrap_err();
    assert_eq!(wrong.code(), "wrong_key");
}
