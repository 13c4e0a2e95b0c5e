//! Property test of convergence (DESIGN.md section 9): several phones, random edits,
//! random sync order, households moving between two grids (ADR 0007), with requests
//! dropped, answers dropped, requests delivered twice and answers delivered late (after
//! newer ones). Driven sans-IO against the real server logic and real SQLite stores: in
//! the end every phone holds exactly the households of its grid, each identical to the
//! server's, and every recorded visit is present exactly once.

use std::collections::{BTreeMap, BTreeSet};

use doorstep_core::model::{Household, HouseholdId, ProfileField, VisitOutcome};
use doorstep_core::protocol::{Effect, Incoming, Outgoing, Step};
use doorstep_core::store::{NewVisit, Store};
use doorstep_server::db::{Device, GridRef, Role, Scope, ServerDb};
use proptest::prelude::*;

const GRID: &str = "测试村第1网格";
const GRID_2: &str = "测试村第2网格";
const PHONES: usize = 3;
const HOUSEHOLDS: usize = 3;

/// The grid of each phone: the first two share grid 1, the last has grid 2.
fn grid_of_phone(phone: usize) -> &'static str {
    if phone + 1 < PHONES { GRID } else { GRID_2 }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    DropRequest,
    DropAnswer,
    Duplicate,
    Late,
}

#[derive(Debug, Clone)]
enum Op {
    Visit {
        phone: usize,
        household: usize,
    },
    SetPhone {
        phone: usize,
        household: usize,
        value: u32,
    },
    Sync {
        phone: usize,
        fault: Fault,
    },
    DeliverLate {
        phone: usize,
    },
    /// The office moves the household to the other grid.
    Move {
        household: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let fault = prop_oneof![
        3 => Just(Fault::None),
        1 => Just(Fault::DropRequest),
        1 => Just(Fault::DropAnswer),
        1 => Just(Fault::Duplicate),
        1 => Just(Fault::Late),
    ];
    prop_oneof![
        3 => (0..PHONES, 0..HOUSEHOLDS).prop_map(|(phone, household)| Op::Visit { phone, household }),
        1 => (0..PHONES, 0..HOUSEHOLDS, 0..1000u32)
            .prop_map(|(phone, household, value)| Op::SetPhone { phone, household, value }),
        3 => (0..PHONES, fault).prop_map(|(phone, fault)| Op::Sync { phone, fault }),
        1 => (0..PHONES).prop_map(|phone| Op::DeliverLate { phone }),
        1 => (0..HOUSEHOLDS).prop_map(|household| Op::Move { household }),
    ]
}

struct Phone {
    store: Store,
    device: Device,
    late: Vec<Vec<Effect>>,
}

/// One sync, with `fault` applied to its first exchange; later exchanges are clean.
fn sync(db: &ServerDb, p: &mut Phone, fault: Fault) {
    let store = &mut p.store;
    let mut session = store.sync_session().unwrap().with_push_bytes(600);
    let mut first = true;
    loop {
        let out = match session.poll() {
            Step::Done(_) => return,
            Step::Send(out) => out,
        };
        let Outgoing::Sync(req) = out else {
            panic!("no blobs in this test")
        };
        let fault = if first { fault } else { Fault::None };
        first = false;
        match fault {
            Fault::DropRequest => return,
            Fault::DropAnswer => {
                db.sync(&p.device, &req).unwrap();
                return;
            }
            Fault::Duplicate => {
                db.sync(&p.device, &req).unwrap();
            }
            Fault::Late | Fault::None => {}
        }
        let resp = db.sync(&p.device, &req).unwrap();
        let effects = session.receive(Incoming::Sync(resp)).unwrap();
        if let Fault::Late = fault {
            p.late.push(effects);
            return;
        }
        store.apply_effects(&effects).unwrap();
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut db = ServerDb::open(&dir.path().join("server")).unwrap();
    // Small pages, so that multi-page pulls meet the faults too.
    db.set_page_bytes(400);
    let households: Vec<Household> = (0..HOUSEHOLDS)
        .map(|i| {
            let mut h = Household::new(HouseholdId::new(), "测试村", GRID, &format!("测试村{i}号"));
            h.phone = "13800000000".into();
            h
        })
        .collect();
    db.import_households(&households).unwrap();
    let ids: Vec<HouseholdId> = households
        .iter()
        .map(|h| HouseholdId::parse(&h.id).unwrap())
        .collect();
    let mut phones = Vec::new();
    for i in 0..PHONES {
        let name = format!("phone-{i}");
        db.add_user(
            &name,
            "password-123",
            Role::GridWorker,
            &Scope::grids(vec![GridRef::new("测试村", grid_of_phone(i))]),
            "(test)",
        )
        .unwrap();
        let mut store = Store::open(dir.path().join(format!("{name}.db"))).unwrap();
        // As `Client::sign_in` does: visits are recorded under the account's name.
        store.set_setting("username", &name).unwrap();
        let token = db
            .sign_in(
                &name,
                "password-123",
                store.device_id(),
                Some(store.device_public_key()),
            )
            .unwrap();
        let device = db.authenticate(&token).unwrap();
        let mut p = Phone {
            store,
            device,
            late: Vec::new(),
        };
        sync(&db, &mut p, Fault::None);
        phones.push(p);
    }
    let mut recorded: BTreeMap<HouseholdId, BTreeSet<String>> = BTreeMap::new();
    let mut placed = [GRID; HOUSEHOLDS];
    for op in ops {
        match op {
            // A phone works on the households it holds.
            Op::Visit { phone, household }
            | Op::SetPhone {
                phone, household, ..
            } if phones[phone].store.household(ids[household]).is_err() => {}
            Op::Visit { phone, household } => {
                let v = phones[phone]
                    .store
                    .record_visit(
                        ids[household],
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
                recorded
                    .entry(ids[household])
                    .or_default()
                    .insert(v.to_string());
            }
            Op::SetPhone {
                phone,
                household,
                value,
            } => phones[phone]
                .store
                .set_household_field(
                    ids[household],
                    ProfileField::Phone,
                    &format!("139{value:08}"),
                )
                .unwrap(),
            Op::Sync { phone, fault } => sync(&db, &mut phones[phone], fault),
            Op::DeliverLate { phone } => {
                let p = &mut phones[phone];
                if !p.late.is_empty() {
                    let effects = p.late.remove(0);
                    p.store.apply_effects(&effects).unwrap();
                }
            }
            Op::Move { household } => {
                placed[household] = if placed[household] == GRID {
                    GRID_2
                } else {
                    GRID
                };
                db.move_household(ids[household], "测试村", placed[household], "office")
                    .unwrap();
            }
        }
    }
    // The network heals: late answers arrive, then everyone syncs twice.
    for p in &mut phones {
        for effects in std::mem::take(&mut p.late) {
            p.store.apply_effects(&effects).unwrap();
        }
    }
    // Three rounds: push what waits (a household that left is then deleted), report
    // the drops, and one more that must change nothing.
    for _ in 0..3 {
        for p in &mut phones {
            sync(&db, p, Fault::None);
        }
    }
    let server_heads = db.document_heads().unwrap();
    for (i, p) in phones.iter().enumerate() {
        prop_assert!(
            p.store.outbox().unwrap().is_empty(),
            "phone {} has an empty outbox",
            i
        );
        prop_assert!(p.store.dropped_documents().unwrap().is_empty());
        // Exactly the organisation document and the households of its grid.
        let mine: BTreeMap<_, _> = server_heads
            .iter()
            .filter(|(id, _)| match ids.iter().position(|h| h.0 == **id) {
                Some(k) => placed[k] == grid_of_phone(i),
                None => true,
            })
            .map(|(id, heads)| (*id, heads.clone()))
            .collect();
        let held: BTreeMap<_, _> = p.store.document_heads().unwrap().into_iter().collect();
        prop_assert_eq!(&held, &mine, "phone {} equals the server for its grid", i);
        for (h, visits) in &recorded {
            if let Ok(household) = p.store.household(*h) {
                let held: BTreeSet<String> = household.visits.into_keys().collect();
                prop_assert_eq!(&held, visits);
            }
        }
    }
    let mut on_server: BTreeMap<HouseholdId, Vec<String>> = BTreeMap::new();
    for (h, v) in db.visit_ids().unwrap() {
        on_server.entry(h).or_default().push(v);
    }
    for (h, visits) in &recorded {
        let got = on_server.remove(h).unwrap_or_default();
        prop_assert_eq!(got.len(), visits.len(), "each visit once");
        prop_assert_eq!(&got.into_iter().collect::<BTreeSet<_>>(), visits);
    }
    prop_assert!(on_server.is_empty(), "no visit appeared from nowhere");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn replicas_converge_under_dropped_duplicated_and_late_messages(ops in prop::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
