//! Reassignment end to end (ADR 0007): the real server binary, two phones on the real
//! core. A household moved to another grid by the office (`household move`, against the
//! running server's data folder) reaches the new grid's phone whole, with the visit the
//! old grid's phone recorded offline before it heard of the move, and leaves the old
//! phone once that visit and its photos are on the server. A scope change
//! (`user role`) moves a whole grid the same way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use doorstep_core::error::Error;
use doorstep_core::model::{HouseholdId, VisitOutcome};
use doorstep_core::store::{HouseholdQuery, NewVisit, ReceiptState, Store, now_ms};
use doorstep_core::sync::{Client, sync_now};
use doorstep_server::db::{GridRef, Role, Scope, ServerDb};
use doorstep_server::demo::complete_visit;
use doorstep_server::verify::verify;
use doorstep_tests::{ServerProcess, fixture, server_binary};

use super::{PASSWORD, import};

/// Village A imported, worker-a on its first grid and worker-b on its second, and the
/// server running.
struct Town {
    dir: tempfile::TempDir,
    data: PathBuf,
    server: ServerProcess,
    village: String,
    grids: Vec<String>,
}

fn town() -> Town {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    import(&data, "roster/village_a.xlsx");
    let roster = doorstep_server::roster::read_roster(&fixture("roster/village_a.xlsx")).unwrap();
    let village = roster.households[0].village.clone();
    let mut grids: Vec<String> = roster.households.iter().map(|h| h.grid.clone()).collect();
    grids.sort();
    grids.dedup();
    assert!(grids.len() >= 2, "the roster has two grids: {grids:?}");
    {
        let db = ServerDb::open(&data).unwrap();
        for (name, grid) in [("worker-a", &grids[0]), ("worker-b", &grids[1])] {
            db.add_user(
                name,
                PASSWORD,
                Role::GridWorker,
                &Scope::grids(vec![GridRef::new(&village, grid)]),
                "(test)",
            )
            .unwrap();
        }
    }
    let server = ServerProcess::start(&data);
    Town {
        dir,
        data,
        server,
        village,
        grids,
    }
}

/// A phone signed in as `user`, after its first sync.
fn phone(t: &Town, user: &str) -> Store {
    let mut store = Store::open(t.dir.path().join(format!("{user}.db"))).unwrap();
    Client::new(&t.server.url())
        .sign_in(&mut store, user, PASSWORD)
        .unwrap();
    sync(&mut store);
    store
}

fn sync(store: &mut Store) {
    sync_now(store, None, |_| {}).unwrap();
}

fn households(store: &Store) -> BTreeSet<HouseholdId> {
    store
        .households(&HouseholdQuery {
            limit: 10_000,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// Runs the server's command line; panics with its error output when it fails.
fn cli(args: &[&str], data: &Path) -> String {
    let out = Command::new(server_binary())
        .args(args)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run doorstep-server");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The phone holds exactly the server's heads for each of its documents.
fn assert_current(store: &Store, data: &Path) {
    let server = ServerDb::open(data).unwrap().document_heads().unwrap();
    for (id, heads) in store.document_heads().unwrap() {
        assert_eq!(heads, server[&id], "document {id}");
    }
}

#[test]
fn a_moved_household_goes_whole_to_the_new_grid_and_leaves_the_old_phone_after_its_visit() {
    let t = town();
    let mut a = phone(&t, "worker-a");
    let mut b = phone(&t, "worker-b");
    let a_before = households(&a);
    let b_before = households(&b);
    assert!(!a_before.is_empty() && !b_before.is_empty());
    assert!(a_before.is_disjoint(&b_before));
    let h = *a_before.iter().next().unwrap();

    // Offline, worker A completes a visit at h: photo, signed notice and pledge.
    let visit = complete_visit(&mut a, h, 11).unwrap();
    let blobs = a.pending_blobs().unwrap();
    assert!(
        blobs.len() >= 5,
        "photo, thumbnail, two signatures: {blobs:?}"
    );
    assert!(!a.outbox().unwrap().is_empty());

    // The office moves h to grid 2 while the server runs.
    let said = cli(
        &[
            "household",
            "move",
            "--household",
            &h.to_string(),
            "--village",
            &t.village,
            "--grid",
            &t.grids[1],
        ],
        &t.data,
    );
    assert!(said.contains("moved"), "{said}");

    // A syncs once: the visit is taken, not refused, its blobs are uploaded, and h is
    // gone from A with everything it cited; nothing waits in the outbox.
    sync(&mut a);
    assert!(a.refused_changes().unwrap().is_empty());
    assert!(a.outbox().unwrap().is_empty());
    assert!(a.pending_blobs().unwrap().is_empty());
    assert!(matches!(a.household(h), Err(Error::NoSuchHousehold(_))));
    let mut rest = a_before.clone();
    rest.remove(&h);
    assert_eq!(households(&a), rest);
    for sha in &blobs {
        assert_eq!(a.blob(sha).unwrap(), None, "blob {sha} left with h");
    }
    // The drop is reported at the next sync, after which the server forgets h for A.
    assert_eq!(a.dropped_documents().unwrap(), [h.0]);
    sync(&mut a);
    assert!(a.dropped_documents().unwrap().is_empty());
    let held: i64 = rusqlite::Connection::open(t.data.join("doorstep.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM device_docs WHERE device_id = ?1 AND doc_id = ?2",
            rusqlite::params![a.device_id().to_string(), &h.0.as_bytes()[..]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(held, 0);

    // B syncs: h arrives whole, with A's visit, its records and their receipts.
    sync(&mut b);
    let mut want = b_before.clone();
    want.insert(h);
    assert_eq!(households(&b), want);
    let got = b.household(h).unwrap();
    assert_eq!(got.grid, t.grids[1]);
    assert_eq!(
        got.visits[&visit.to_string()].outcome,
        Some(VisitOutcome::Completed)
    );
    assert_eq!(got.evidence.len(), 2);
    assert_eq!(got.receipts.len(), 2);
    let checks = b.verify_evidence(Some(h)).unwrap();
    assert_eq!(checks.len(), 2);
    for c in &checks {
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.receipt, ReceiptState::Verified);
    }
    assert_current(&b, &t.data);
    match verify(&t.data, None).unwrap() {
        Ok(_) => {}
        Err(broken) => panic!("verify found {broken}"),
    }

    // Later syncs of A do not bring h back.
    sync(&mut a);
    assert_eq!(households(&a), rest);
    assert_current(&a, &t.data);
}

#[test]
fn a_scope_change_moves_a_whole_grid_between_phones() {
    let t = town();
    let mut a = phone(&t, "worker-a");
    let mut b = phone(&t, "worker-b");
    let grid_a = households(&a);
    let grid_b = households(&b);
    let h = *grid_a.iter().next().unwrap();

    // Offline, A finds nobody home at h.
    let now = now_ms();
    let visit = a
        .record_visit(
            h,
            NewVisit {
                outcome: VisitOutcome::NobodyHome,
                outcome_reason: "nobody answered".into(),
                started_at_ms: now - 60_000,
                finished_at_ms: Some(now),
                target_groups_reached: vec![],
                remarks: String::new(),
                location: None,
            },
        )
        .unwrap();

    // The administrator gives A's grid to B, and A a grid with no households yet.
    let data = t.data.as_path();
    cli(
        &[
            "user",
            "role",
            "--username",
            "worker-a",
            "--role",
            "grid_worker",
            "--village",
            &t.village,
            "--grid",
            "第99网格",
        ],
        data,
    );
    cli(
        &[
            "user",
            "role",
            "--username",
            "worker-b",
            "--role",
            "grid_worker",
            "--village",
            &t.village,
            "--grid",
            &t.grids[0],
            "--grid",
            &t.grids[1],
        ],
        data,
    );

    sync(&mut a);
    assert!(a.refused_changes().unwrap().is_empty());
    assert!(a.outbox().unwrap().is_empty());
    assert!(households(&a).is_empty(), "the whole grid left A");
    assert_eq!(a.dropped_documents().unwrap().len(), grid_a.len());

    sync(&mut b);
    let both: BTreeSet<HouseholdId> = grid_a.union(&grid_b).copied().collect();
    assert_eq!(households(&b), both);
    assert!(
        b.household(h)
            .unwrap()
            .visits
            .contains_key(&visit.to_string())
    );
    assert_current(&b, data);

    sync(&mut a);
    sync(&mut a);
    assert!(a.dropped_documents().unwrap().is_empty());
    assert!(households(&a).is_empty(), "nothing comes back");
    assert_current(&a, data);
}
