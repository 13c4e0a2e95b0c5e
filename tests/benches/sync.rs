//! Sync benchmark: Doorstep's cursor sync (one request for every document, DESIGN.md
//! section 4) against Automerge's own per-document sync protocol over the same
//! household documents, at 1,000 and 10,000 households in the phone's scope.
//!
//! Run: `cargo bench -p doorstep-tests --bench sync`
//! Environment: `DOORSTEP_BENCH_HOUSEHOLDS` (comma-separated scopes, default
//! `1000,10000`), `DOORSTEP_BENCH_RUNS` (timed runs of each Doorstep sync, default 5;
//! first syncs and change batches use at most 3).
//!
//! Doorstep is driven in process and sans-IO: a real `ServerDb` and a real phone `Store`,
//! both SQLite files in temporary folders on disk, and the same loop as
//! `doorstep_core::sync::sync_now` (`SyncSession::poll` -> server -> `receive` ->
//! `Store::apply_effects`) with HTTP taken out. Every body goes through its CBOR
//! encoding and decoding, and the server authenticates every request by its token, as it
//! does over HTTP. Bytes are the CBOR bodies of requests plus answers; HTTP headers
//! (about 200-300 bytes per exchange) are not counted on either side.
//!
//! The Automerge anchor keeps a server-side and a phone-side `Automerge` per household
//! and a `sync::State` per pair, and exchanges `generate_sync_message` /
//! `receive_sync_message` for every document until neither side has anything to send,
//! as automerge-repo does, with the documents multiplexed: a round sends every pending
//! phone message, then every pending server message. Bytes are the encoded sync
//! messages only (automerge-repo's per-message envelope with document and peer IDs is
//! not counted), so the anchor is, if anything, flattered. It is measured three ways:
//! with the states of a connection that stayed open, after a reconnect with states
//! restored from `State::encode` (automerge-repo's persisted sync states), and after a
//! reconnect with `State::new()` on both sides (a phone coming back online).
//! These are measurements, not tests: nothing here asserts a time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use automerge::sync::{Message, State, SyncDoc};
use automerge::{Automerge, Change};
use doorstep_core::model::HouseholdId;
use doorstep_core::protocol::{
    self, BlobQuery, BlobQueryResponse, Incoming, Outgoing, Step, SyncRequest, SyncResponse,
    SyncSession, UpdateKind,
};
use doorstep_core::store::{NewVisit, Store};
use doorstep_server::db::{GridRef, Role, Scope, ServerDb};
use doorstep_server::demo::{DEMO_GRID, DEMO_VILLAGE, demo_households};
use tempfile::TempDir;
use uuid::Uuid;

const USER: &str = "bench-worker";
const PASSWORD: &str = "bench-password";
/// Households changed on the phone in scenario (b).
const CHANGED: usize = 50;
/// Scope of scenario (c)'s goal.
const FIRST_SYNC_GOAL_SCOPE: usize = 1_000;

/// A server data folder holding `n` households, all in the bench user's one grid.
struct Server {
    _dir: TempDir,
    db: ServerDb,
    ids: Vec<HouseholdId>,
}

impl Server {
    fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("server temp dir");
        let db = ServerDb::open(dir.path()).expect("open server db");
        let mut households = demo_households(n);
        for h in &mut households {
            h.grid = DEMO_GRID.to_string();
        }
        let ids = households
            .iter()
            .map(|h| HouseholdId::parse(&h.id).expect("demo IDs are UUIDs"))
            .collect();
        db.import_households(&households)
            .expect("import households");
        db.add_user(
            USER,
            PASSWORD,
            Role::GridWorker,
            &Scope::grids(vec![GridRef::new(DEMO_VILLAGE, DEMO_GRID)]),
            "(test)",
        )
        .expect("add user");
        Self { _dir: dir, db, ids }
    }
}

/// A phone: its store, signed in to the server as the bench user.
struct Phone {
    _dir: TempDir,
    store: Store,
    token: String,
}

impl Phone {
    fn new(server: &Server) -> Self {
        let dir = tempfile::tempdir().expect("phone temp dir");
        let mut store = Store::open(dir.path().join("phone.db")).expect("open phone store");
        store.set_setting("username", USER).expect("set username");
        let token = server
            .db
            .sign_in(
                USER,
                PASSWORD,
                store.device_id(),
                Some(store.device_public_key()),
            )
            .expect("sign in");
        Self {
            _dir: dir,
            store,
            token,
        }
    }
}

/// What one Doorstep sync put on the wire.
#[derive(Debug, Default, Clone, Copy)]
struct Wire {
    requests: u64,
    up: usize,
    down: usize,
    /// Document updates received as `Changes`, and their bytes.
    change_updates: usize,
    change_update_bytes: usize,
    time: Duration,
}

impl Wire {
    fn bytes(&self) -> usize {
        self.up + self.down
    }
}

/// One Doorstep sync, the loop of `sync_now` without HTTP.
fn doorstep_sync(db: &ServerDb, phone: &mut Phone) -> Wire {
    let start = Instant::now();
    let store = &mut phone.store;
    let mut session = SyncSession::new(
        store.cursor().expect("cursor"),
        store.outbox().expect("outbox"),
        store.pending_blobs().expect("pending blobs"),
    );
    let mut wire = Wire::default();
    loop {
        let out = match session.poll() {
            Step::Done(_) => break,
            Step::Send(out) => out,
        };
        wire.requests += 1;
        let device = db.authenticate(&phone.token).expect("authenticate");
        let incoming = match out {
            Outgoing::Sync(req) => {
                let body = protocol::encode(&req);
                wire.up += body.len();
                let req: SyncRequest = protocol::decode(&body).expect("decode request");
                let answer = protocol::encode(&db.sync(&device, &req).expect("server sync"));
                wire.down += answer.len();
                let answer: SyncResponse = protocol::decode(&answer).expect("decode answer");
                for update in answer.docs.iter().filter(|u| u.kind == UpdateKind::Changes) {
                    wire.change_updates += 1;
                    wire.change_update_bytes += update.bytes.len();
                }
                Incoming::Sync(answer)
            }
            Outgoing::FindMissingBlobs(query) => {
                let body = protocol::encode(&query);
                wire.up += body.len();
                let query: BlobQuery = protocol::decode(&body).expect("decode query");
                let answer = protocol::encode(&db.missing_blobs(&query).expect("missing blobs"));
                wire.down += answer.len();
                Incoming::MissingBlobs(
                    protocol::decode::<BlobQueryResponse>(&answer).expect("decode answer"),
                )
            }
            Outgoing::UploadBlob { sha256 } => {
                let bytes = store.blob(&sha256).expect("read blob").expect("blob held");
                wire.up += bytes.len();
                db.put_blob(&sha256, &bytes).expect("put blob");
                Incoming::BlobStored { sha256 }
            }
        };
        let effects = session.receive(incoming).expect("session receive");
        store.apply_effects(&effects).expect("apply effects");
    }
    wire.time = start.elapsed();
    wire
}

/// The Automerge anchor: per household, the server's and the phone's document and the
/// sync state each keeps for the other.
#[derive(Clone)]
struct Anchor {
    server: Vec<Automerge>,
    phone: Vec<Automerge>,
    server_state: Vec<State>,
    phone_state: Vec<State>,
}

/// What one Automerge sync of every document put on the wire.
#[derive(Debug, Default, Clone, Copy)]
struct AmWire {
    rounds: u64,
    messages: u64,
    up: usize,
    down: usize,
    docs_talking: usize,
    time: Duration,
}

impl AmWire {
    fn bytes(&self) -> usize {
        self.up + self.down
    }
}

impl Anchor {
    /// Server documents as the server holds them; empty phone documents; fresh states.
    fn new(server: &Server) -> Self {
        let docs: Vec<Automerge> = server
            .ids
            .iter()
            .map(|id| {
                server
                    .db
                    .household_doc(*id)
                    .expect("read server doc")
                    .expect("doc exists")
            })
            .collect();
        let n = docs.len();
        Self {
            server: docs,
            phone: (0..n).map(|_| Automerge::new()).collect(),
            server_state: vec![State::new(); n],
            phone_state: vec![State::new(); n],
        }
    }

    /// A reconnect that forgot everything: `State::new()` on both sides.
    fn reset_states(&mut self) {
        for s in self
            .server_state
            .iter_mut()
            .chain(self.phone_state.iter_mut())
        {
            *s = State::new();
        }
    }

    /// A reconnect with states persisted by `State::encode` (automerge-repo's habit).
    fn reload_states(&mut self) {
        for s in self
            .server_state
            .iter_mut()
            .chain(self.phone_state.iter_mut())
        {
            *s = State::decode(&s.encode()).expect("decode sync state");
        }
    }

    /// True when every phone-side document has the server-side one's heads.
    fn converged(&self) -> bool {
        self.phone
            .iter()
            .zip(&self.server)
            .all(|(p, s)| p.get_heads() == s.get_heads())
    }

    /// Runs rounds until neither side has a message for any document.
    fn sync(&mut self) -> AmWire {
        let start = Instant::now();
        let mut wire = AmWire::default();
        let mut talking = vec![false; self.server.len()];
        loop {
            let up = generate(&self.phone, &mut self.phone_state);
            deliver(&mut self.server, &mut self.server_state, &up);
            let down = generate(&self.server, &mut self.server_state);
            deliver(&mut self.phone, &mut self.phone_state, &down);
            if up.is_empty() && down.is_empty() {
                break;
            }
            wire.rounds += 1;
            assert!(wire.rounds < 100, "the Automerge sync does not settle");
            wire.messages += (up.len() + down.len()) as u64;
            wire.up += up.iter().map(|(_, m)| m.len()).sum::<usize>();
            wire.down += down.iter().map(|(_, m)| m.len()).sum::<usize>();
            for (i, _) in up.iter().chain(&down) {
                talking[*i] = true;
            }
        }
        wire.docs_talking = talking.iter().filter(|t| **t).count();
        wire.time = start.elapsed();
        wire
    }
}

fn generate(docs: &[Automerge], states: &mut [State]) -> Vec<(usize, Vec<u8>)> {
    docs.iter()
        .zip(states.iter_mut())
        .enumerate()
        .filter_map(|(i, (doc, state))| doc.generate_sync_message(state).map(|m| (i, m.encode())))
        .collect()
}

fn deliver(docs: &mut [Automerge], states: &mut [State], messages: &[(usize, Vec<u8>)]) {
    for (i, bytes) in messages {
        let message = Message::decode(bytes).expect("decode sync message");
        docs[*i]
            .receive_sync_message(&mut states[*i], message)
            .expect("receive sync message");
    }
}

fn visit(seed: usize) -> NewVisit {
    doorstep_server::demo::demo_visit(seed as u32)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(a: usize, b: usize) -> String {
    if b == 0 {
        return "-".into();
    }
    let r = a as f64 / b as f64;
    if r >= 100.0 {
        format!("{}×", thousands(r.round() as usize))
    } else {
        format!("{r:.2}×")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// One row of the wire table.
struct Row {
    scenario: String,
    system: &'static str,
    bytes: usize,
    rounds: u64,
    messages: u64,
    doorstep_bytes: usize,
    reference: Option<usize>,
}

impl Row {
    fn doorstep(scenario: &str, w: &Wire, reference: Option<usize>) -> Self {
        Self {
            scenario: scenario.into(),
            system: "Doorstep",
            bytes: w.bytes(),
            rounds: w.requests,
            messages: 2 * w.requests,
            doorstep_bytes: w.bytes(),
            reference,
        }
    }

    fn automerge(
        scenario: &str,
        system: &'static str,
        w: &AmWire,
        doorstep: &Wire,
        reference: Option<usize>,
    ) -> Self {
        Self {
            scenario: scenario.into(),
            system,
            bytes: w.bytes(),
            rounds: w.rounds,
            messages: w.messages,
            doorstep_bytes: doorstep.bytes(),
            reference,
        }
    }
}

/// Results of one scope.
struct Scale {
    n: usize,
    rows: Vec<Row>,
    times: Vec<(String, Vec<Duration>)>,
    notes: Vec<String>,
}

fn run_scale(n: usize, runs: usize) -> Scale {
    let few = runs.clamp(1, 3);
    let t = Instant::now();
    let server = Server::new(n);
    eprintln!("[{n}] imported {n} households in {}", ms(t.elapsed()));
    let index: HashMap<Uuid, usize> = server
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.0, i))
        .collect();
    let mut anchor = Anchor::new(&server);
    let compacted: usize = anchor.server.iter().map(|d| d.save().len()).sum();
    let mut rows = Vec::new();
    let mut times = Vec::new();
    let mut notes = Vec::new();

    // (c) A new phone's first sync.
    let mut phone = Phone::new(&server);
    let first = doorstep_sync(&server.db, &mut phone);
    let held = phone.store.document_heads().expect("phone heads").len();
    // Every household, and the organisation document (templates, server keys).
    assert_eq!(held, n + 1, "the first sync brought every household");
    let mut first_times = vec![first.time];
    for _ in 1..few {
        let mut other = Phone::new(&server);
        first_times.push(doorstep_sync(&server.db, &mut other).time);
    }
    let am_first = anchor.sync();
    assert!(anchor.converged(), "the Automerge first sync converged");
    eprintln!(
        "[{n}] first sync: Doorstep {} B in {} requests, Automerge {} B",
        first.bytes(),
        first.requests,
        am_first.bytes()
    );
    let scenario = format!("(c) new phone, first sync of {} households", thousands(n));
    rows.push(Row::doorstep(&scenario, &first, Some(compacted)));
    rows.push(Row::automerge(
        &scenario,
        "Automerge, new states",
        &am_first,
        &first,
        Some(compacted),
    ));
    times.push((scenario, first_times));
    notes.push(format!(
        "(c): compacted size (sum of `Automerge::save().len()`) {} B, {} B per household on average; Doorstep sent {} B up, {} B down in {} requests",
        thousands(compacted),
        compacted / n,
        thousands(first.up),
        thousands(first.down),
        first.requests
    ));

    // (a) Nothing changed.
    let idle: Vec<Wire> = (0..runs)
        .map(|_| doorstep_sync(&server.db, &mut phone))
        .collect();
    let am_open = anchor.sync();
    let mut persisted = anchor.clone();
    persisted.reload_states();
    let am_persisted = persisted.sync();
    drop(persisted);
    anchor.reset_states();
    let am_reset = anchor.sync();
    let scenario = "(a) nothing changed".to_string();
    rows.push(Row::doorstep(&scenario, &idle[0], None));
    rows.push(Row::automerge(
        &scenario,
        "Automerge, connection kept open",
        &am_open,
        &idle[0],
        None,
    ));
    rows.push(Row::automerge(
        &scenario,
        "Automerge, reconnect, persisted states",
        &am_persisted,
        &idle[0],
        None,
    ));
    rows.push(Row::automerge(
        &scenario,
        "Automerge, reconnect, states reset",
        &am_reset,
        &idle[0],
        None,
    ));
    if idle.iter().any(|w| w.bytes() != idle[0].bytes()) {
        notes.push(format!(
            "unchanged syncs varied in size: {:?}",
            idle.iter().map(Wire::bytes).collect::<Vec<_>>()
        ));
    }
    times.push((scenario, idle.iter().map(|w| w.time).collect()));

    // (b) 50 households changed on the phone, in `few` batches of distinct households;
    // the anchor gets the very change bytes of the first batch.
    let step = (n / (few * CHANGED)).max(1);
    let mut batch_times = Vec::new();
    let mut first_batch = None;
    for batch in 0..few {
        for k in 0..CHANGED {
            let i = ((batch * CHANGED + k) * step) % n;
            phone
                .store
                .record_visit(server.ids[i], visit(i))
                .expect("record visit");
        }
        let outbox = phone.store.outbox().expect("outbox");
        assert_eq!(outbox.len(), CHANGED, "one change per visit");
        let change_bytes: usize = outbox.iter().map(|c| c.bytes.len()).sum();
        if batch == 0 {
            for c in &outbox {
                let change = Change::from_bytes(c.bytes.clone()).expect("parse change");
                anchor.phone[index[&c.doc]]
                    .apply_changes([change])
                    .expect("apply change to the anchor");
            }
        }
        let w = doorstep_sync(&server.db, &mut phone);
        assert!(
            phone.store.outbox().expect("outbox").is_empty(),
            "every change acknowledged"
        );
        batch_times.push(w.time);
        if batch == 0 {
            first_batch = Some((w, change_bytes));
        }
    }
    let (changed, change_bytes) = first_batch.expect("one batch at least");
    let mut reconnect = anchor.clone();
    reconnect.reset_states();
    let am_changed_reset = reconnect.sync();
    drop(reconnect);
    let am_changed_open = anchor.sync();
    assert!(
        anchor.converged(),
        "the Automerge sync of the changes converged"
    );
    let scenario = format!("(b) {CHANGED} households changed on the phone");
    rows.push(Row::doorstep(&scenario, &changed, Some(change_bytes)));
    rows.push(Row::automerge(
        &scenario,
        "Automerge, connection kept open",
        &am_changed_open,
        &changed,
        Some(change_bytes),
    ));
    rows.push(Row::automerge(
        &scenario,
        "Automerge, reconnect, states reset",
        &am_changed_reset,
        &changed,
        Some(change_bytes),
    ));
    notes.push(format!(
        "(b): {CHANGED} changes of {} B in total ({} B each on average); Doorstep sent {} B up, {} B down; Automerge (open) talked about {} documents, (reset) about {}",
        thousands(change_bytes),
        change_bytes / CHANGED,
        thousands(changed.up),
        thousands(changed.down),
        am_changed_open.docs_talking,
        am_changed_reset.docs_talking,
    ));
    times.push((scenario, batch_times));

    // (a') Nothing changed again, right after pushing: the phone's own changes must not
    // come back.
    let after = doorstep_sync(&server.db, &mut phone);
    rows.push(Row::doorstep(
        "(a') nothing changed, after the push",
        &after,
        None,
    ));
    // (b') Every household visited once more on the phone (a round of visits), pushed
    // in one sync.
    for (i, id) in server.ids.iter().enumerate() {
        phone
            .store
            .record_visit(*id, visit(i))
            .expect("record visit");
    }
    let round_bytes: usize = phone
        .store
        .outbox()
        .expect("outbox")
        .iter()
        .map(|c| c.bytes.len())
        .sum();
    let round = doorstep_sync(&server.db, &mut phone);
    let scenario = format!("(b') all {} households changed on the phone", thousands(n));
    rows.push(Row::doorstep(&scenario, &round, Some(round_bytes)));
    times.push((scenario, vec![round.time]));

    // (c') A new phone's first sync once every household has several changes: each must
    // still come once, as its snapshot.
    let compacted_now: usize = server
        .ids
        .iter()
        .map(|id| {
            server
                .db
                .household_doc(*id)
                .expect("read server doc")
                .expect("doc exists")
                .save()
                .len()
        })
        .sum();
    let mut late = Phone::new(&server);
    let late_first = doorstep_sync(&server.db, &mut late);
    times.push((
        "(c') new phone, first sync after that round of visits".into(),
        vec![late_first.time],
    ));
    rows.push(Row::doorstep(
        "(c') new phone, first sync after that round of visits",
        &late_first,
        Some(compacted_now),
    ));
    notes.push(format!(
        "(c'): compacted size now {} B; Doorstep sent {} B down in {} requests, of which {} B in {} `Changes` updates that repeat changes the same pull already brought in a snapshot on an earlier page",
        thousands(compacted_now),
        thousands(late_first.down),
        late_first.requests,
        thousands(late_first.change_update_bytes),
        late_first.change_updates
    ));

    Scale {
        n,
        rows,
        times,
        notes,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this binary takes no arguments of its own.
    let scales: Vec<usize> = std::env::var("DOORSTEP_BENCH_HOUSEHOLDS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs = env_usize("DOORSTEP_BENCH_RUNS", 5).max(1);
    let results: Vec<Scale> = scales.iter().map(|&n| run_scale(n, runs)).collect();

    println!("### Bytes and round trips\n");
    println!(
        "| scope | scenario | system | bytes | ÷ reference | round trips | messages | × Doorstep |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|");
    for s in &results {
        for r in &s.rows {
            let reference = match r.reference {
                Some(b) => ratio(r.bytes, b),
                None => "-".into(),
            };
            let versus = if r.system == "Doorstep" {
                "1×".into()
            } else if r.bytes == 0 {
                "0×".into()
            } else {
                ratio(r.bytes, r.doorstep_bytes)
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                thousands(s.n),
                r.scenario,
                r.system,
                thousands(r.bytes),
                reference,
                r.rounds,
                r.messages,
                versus
            );
        }
    }
    println!();
    println!(
        "Reference: (b) the raw bytes of the {CHANGED} Automerge changes; (c) the sum of the households' compacted size. \
         Goals: (a) 1 round trip and under 1 KB at every scope; (b) at most 1.2× the change bytes; \
         (c) at most 1.1× the compacted size (at {} households).",
        thousands(FIRST_SYNC_GOAL_SCOPE)
    );
    println!();
    println!("### Doorstep wall time (in process, SQLite on disk on both ends, no HTTP)\n");
    println!("| scope | scenario | runs | median | min | max |");
    println!("|---:|---|---:|---:|---:|---:|");
    for s in &results {
        for (scenario, t) in &s.times {
            let min = t.iter().min().copied().unwrap_or_default();
            let max = t.iter().max().copied().unwrap_or_default();
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                thousands(s.n),
                scenario,
                t.len(),
                ms(median(t.clone())),
                ms(min),
                ms(max)
            );
        }
    }
    println!();
    for s in &results {
        for note in &s.notes {
            println!("- {}: {note}", thousands(s.n));
        }
    }
}
