//! End-to-end tests: the real `doorstep-server` binary on a free loopback port, phones on
//! the real core with real SQLite files, real photos and rosters from ../shared/fixtures.

mod access;
mod at_rest;
mod convergence;
mod evidence;
mod kotlin;
mod reassign;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use doorstep_core::media::MediaError;
use doorstep_core::model::{HouseholdId, ProfileField, VisitId};
use doorstep_core::store::{HouseholdQuery, Store, VisitStart, now_ms};
use doorstep_core::sync::{Client, sync_now};
use doorstep_server::db::{GridRef, Role, Scope, ServerDb};
use doorstep_tests::{
    ServerProcess, assert_no_personal_data, fixture, fixtures, jpeg_has_no_metadata, server_binary,
};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "correct horse battery";

fn import(data: &Path, roster: &str) -> serde_json::Value {
    let out = Command::new(server_binary())
        .args(["import-roster", "--json", "--data"])
        .arg(data)
        .arg(fixture(roster))
        .env("RUST_LOG", "debug")
        .output()
        .expect("run import-roster");
    assert_no_personal_data(&String::from_utf8_lossy(&out.stderr), "import-roster's log");
    assert!(
        out.status.success(),
        "import-roster failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("import-roster --json prints one JSON object")
}

#[test]
fn roster_import_matches_expected() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("roster/EXPECTED.json")).unwrap()).unwrap();
    for file in ["village_a.xlsx", "village_b_gbk.csv"] {
        let data = tempfile::tempdir().unwrap();
        let got = import(data.path(), &format!("roster/{file}"));
        let want = &expected[file];
        assert_eq!(got["households"], want["households"], "{file} households");
        assert_eq!(
            got["residents_imported"], want["residents_imported"],
            "{file} residents"
        );
        let errs = |v: &serde_json::Value| -> Vec<(u64, String, String)> {
            v["row_errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["line"].as_u64().unwrap(),
                        e["name"].as_str().unwrap().to_string(),
                        e["reason"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        assert_eq!(errs(&got), errs(want), "{file} row errors");
        // The households are in the database, and a second import adds nothing.
        let again = import(data.path(), &format!("roster/{file}"));
        assert_eq!(again["households_created"], 0);
        let db = ServerDb::open(data.path()).unwrap();
        let totals = db.totals().unwrap();
        assert_eq!(totals.households, want["households"].as_u64().unwrap());
        assert_eq!(
            totals.residents,
            want["residents_imported"].as_u64().unwrap()
        );
    }
}

/// A server with village A imported and two workers on its first grid.
struct Field {
    _dir: tempfile::TempDir,
    server: ServerProcess,
    grid: String,
}

fn field() -> Field {
    field_with(tempfile::tempdir().unwrap(), ServerProcess::start)
}

/// As [`field`] in the folder `dir`, with the server started by `start` over its data
/// folder.
fn field_with(dir: tempfile::TempDir, start: impl FnOnce(&Path) -> ServerProcess) -> Field {
    let data = dir.path().join("server");
    import(&data, "roster/village_a.xlsx");
    let roster = doorstep_server::roster::read_roster(&fixture("roster/village_a.xlsx")).unwrap();
    let grid = roster.households[0].grid.clone();
    let village = roster.households[0].village.clone();
    {
        let db = ServerDb::open(&data).unwrap();
        for name in ["worker-a", "worker-b", "worker-c"] {
            db.add_user(
                name,
                PASSWORD,
                Role::GridWorker,
                &Scope::grids(vec![GridRef::new(&village, &grid)]),
                "(test)",
            )
            .unwrap();
        }
        db.add_user(
            "other-grid",
            PASSWORD,
            Role::GridWorker,
            &Scope::grids(vec![GridRef::new(&village, "no such grid")]),
            "(test)",
        )
        .unwrap();
    }
    let server = start(&data);
    Field {
        _dir: dir,
        server,
        grid,
    }
}

fn phone(f: &Field, name: &str) -> Store {
    phone_as(f, name, name)
}

/// A phone whose store is `{file}.db`, signed in as `user`, after its first sync.
fn phone_as(f: &Field, file: &str, user: &str) -> Store {
    let path = f._dir.path().join(format!("{file}.db"));
    let mut store = Store::open(&path).unwrap();
    Client::new(&f.server.url())
        .sign_in(&mut store, user, PASSWORD)
        .unwrap();
    sync_now(&mut store, None, |_| {}).unwrap();
    store
}

/// Starts a visit (left open: photos are attached to it next); `place` is a label kept
/// in nothing but the caller's logs.
fn visit(store: &mut Store, h: HouseholdId, _place: &str) -> VisitId {
    store
        .start_visit(
            h,
            VisitStart {
                started_at_ms: now_ms(),
                location: None,
            },
        )
        .unwrap()
}

fn visits_of(store: &Store, households: &[HouseholdId]) -> BTreeSet<String> {
    households
        .iter()
        .flat_map(|h| store.household(*h).unwrap().visits.into_keys())
        .collect()
}

#[test]
fn two_phones_offline_with_real_photos_converge_and_photos_are_clean() {
    let f = field();
    let mut a = phone(&f, "worker-a");
    let mut b = phone(&f, "worker-b");
    let list = a
        .households(&HouseholdQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert!(list.len() > 10, "the grid has households");
    assert!(list.iter().all(|h| h.grid == f.grid));
    assert_eq!(
        list.len(),
        b.households(&HouseholdQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .len()
    );

    // Offline: every photo of phone/, orientation/ and gps/ goes into a visit, the
    // phones alternating, and both visit the first household.
    let mut photos: Vec<(String, std::path::PathBuf)> = Vec::new();
    for folder in ["phone", "orientation", "gps"] {
        let mut files: Vec<_> = std::fs::read_dir(fixtures().join("photos").join(folder))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        photos.extend(files.into_iter().map(|p| (folder.to_string(), p)));
    }
    let mut recorded = BTreeSet::new();
    let mut kind_of_hash: BTreeMap<String, String> = BTreeMap::new();
    let shared = list[0].id;
    recorded.insert(visit(&mut a, shared, "a").to_string());
    recorded.insert(visit(&mut b, shared, "b").to_string());
    for (i, (_, path)) in photos.iter().enumerate() {
        let store = if i % 2 == 0 { &mut a } else { &mut b };
        let h = list[1 + i % (list.len() - 1)].id;
        let v = visit(store, h, "photo");
        recorded.insert(v.to_string());
        let p = store
            .attach_photo(h, v, &std::fs::read(path).unwrap())
            .unwrap();
        kind_of_hash.insert(
            p.sha256.clone(),
            path.file_name().unwrap().to_string_lossy().into(),
        );
    }

    sync_now(&mut a, None, |_| {}).unwrap();
    sync_now(&mut b, None, |_| {}).unwrap();
    sync_now(&mut a, None, |_| {}).unwrap();
    assert!(a.outbox().unwrap().is_empty() && b.outbox().unwrap().is_empty());
    assert!(a.pending_blobs().unwrap().is_empty() && b.pending_blobs().unwrap().is_empty());

    let ids: Vec<HouseholdId> = list.iter().map(|h| h.id).collect();
    assert_eq!(visits_of(&a, &ids), recorded, "phone A holds every visit");
    assert_eq!(visits_of(&b, &ids), recorded, "phone B holds every visit");

    let db = ServerDb::open(&f.server.data).unwrap();
    let on_server: Vec<String> = db
        .visit_ids()
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        on_server.len(),
        recorded.len(),
        "each visit once on the server"
    );
    assert_eq!(on_server.into_iter().collect::<BTreeSet<_>>(), recorded);
    assert_eq!(a.document_heads().unwrap(), b.document_heads().unwrap());
    let server_heads = db.document_heads().unwrap();
    for (doc, heads) in a.document_heads().unwrap() {
        assert_eq!(
            server_heads[&doc], heads,
            "server and phones agree on {doc}"
        );
    }

    let hashes = db.photo_hashes().unwrap();
    assert_eq!(hashes.len(), photos.len());
    for h in hashes {
        let bytes = db.blob(&h).unwrap().expect("photo blob arrived");
        assert_eq!(hex::encode(Sha256::digest(&bytes)), h, "hash verifies");
        assert!(
            jpeg_has_no_metadata(&bytes),
            "{} carries no EXIF/GPS block",
            kind_of_hash[&h]
        );
        let img = image::load_from_memory(&bytes).unwrap();
        let (w, hgt) = (img.width(), img.height());
        assert!(w.max(hgt) <= 1600, "{} is {w}x{hgt}", kind_of_hash[&h]);
        let name = &kind_of_hash[&h];
        if name.starts_with("landscape_") {
            assert!(w > hgt, "{name} stored upright: {w}x{hgt}");
        }
        if name.starts_with("portrait_") {
            assert!(hgt > w, "{name} stored upright: {w}x{hgt}");
        }
    }
}

#[test]
fn concurrent_phone_number_edits_agree_and_the_other_value_is_listed() {
    let f = field();
    let mut a = phone(&f, "worker-a");
    let mut b = phone(&f, "worker-b");
    let h = a.households(&HouseholdQuery::default()).unwrap()[0].id;
    a.set_household_field(h, ProfileField::Phone, "13911111111")
        .unwrap();
    b.set_household_field(h, ProfileField::Phone, "13922222222")
        .unwrap();
    sync_now(&mut a, None, |_| {}).unwrap();
    sync_now(&mut b, None, |_| {}).unwrap();
    sync_now(&mut a, None, |_| {}).unwrap();
    let db = ServerDb::open(&f.server.data).unwrap();
    let server_doc = db.household_doc(h).unwrap().unwrap();
    let on_server = doorstep_core::model::read_household(&server_doc)
        .unwrap()
        .phone;
    assert_eq!(a.household(h).unwrap().phone, on_server);
    assert_eq!(b.household(h).unwrap().phone, on_server);
    for conflicts in [
        a.conflicts()
            .unwrap()
            .into_iter()
            .map(|c| c.conflict)
            .collect::<Vec<_>>(),
        b.conflicts()
            .unwrap()
            .into_iter()
            .map(|c| c.conflict)
            .collect(),
        doorstep_core::model::conflicts(&server_doc),
    ] {
        assert_eq!(conflicts.len(), 1);
        let values: BTreeSet<_> = conflicts[0]
            .values
            .iter()
            .map(|v| v.value.as_str())
            .collect();
        assert_eq!(values, BTreeSet::from(["13911111111", "13922222222"]));
        assert_eq!(
            conflicts[0].values[0].value, on_server,
            "the winner is listed first"
        );
    }
    assert_eq!(db.totals().unwrap().conflicts, 1);
    // Writing a resolution clears the conflict everywhere.
    a.set_household_field(h, ProfileField::Phone, "13933333333")
        .unwrap();
    sync_now(&mut a, None, |_| {}).unwrap();
    sync_now(&mut b, None, |_| {}).unwrap();
    assert!(b.conflicts().unwrap().is_empty());
    assert_eq!(b.household(h).unwrap().phone, "13933333333");
}

fn phone_bin() -> &'static str {
    env!("CARGO_BIN_EXE_doorstep-phone")
}

#[cfg(unix)]
#[test]
fn a_phone_killed_while_recording_or_syncing_loses_nothing() {
    let f = field();
    let path = f._dir.path().join("worker-c.db");
    let h = {
        let mut s = Store::open(&path).unwrap();
        Client::new(&f.server.url())
            .sign_in(&mut s, "worker-c", PASSWORD)
            .unwrap();
        sync_now(&mut s, None, |_| {}).unwrap();
        s.households(&HouseholdQuery::default()).unwrap()[0].id
    };
    let photo = fixture("photos/phone/canon_hdr_YES.jpg");

    // Killed in the middle of recording: everything confirmed before the kill is there.
    let mut child = Command::new(phone_bin())
        .arg("record")
        .arg(&path)
        .arg(h.to_string())
        .arg("1000")
        .arg(&photo)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut confirmed = BTreeSet::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while confirmed.len() < 5 {
        let line = lines.next().expect("phone confirms visits").unwrap();
        confirmed.insert(line.strip_prefix("confirmed ").unwrap().to_string());
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines already written before the kill were confirmed too.
    for line in lines.map_while(Result::ok) {
        if let Some(v) = line.strip_prefix("confirmed ") {
            confirmed.insert(v.to_string());
        }
    }
    let store = Store::open(&path).unwrap();
    let held: BTreeSet<String> = store.household(h).unwrap().visits.into_keys().collect();
    assert!(
        confirmed.is_subset(&held),
        "every confirmed visit survived the kill"
    );
    let recorded = held.clone();
    drop(store);

    // Killed in the middle of a sync, at several points: after the push was answered,
    // and between photo uploads. Each sync resumes where the last one was cut.
    for answers in [1, 3, 6] {
        let mut child = Command::new(phone_bin())
            .arg("sync")
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..answers {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("progress") => {}
                Some(Ok(line)) if line.starts_with("done") => break,
                other => panic!("the phone's sync said {other:?}"),
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    let mut store = Store::open(&path).unwrap();
    assert_eq!(
        store
            .household(h)
            .unwrap()
            .visits
            .into_keys()
            .collect::<BTreeSet<_>>(),
        recorded
    );
    sync_now(&mut store, None, |_| {}).unwrap();
    assert!(store.outbox().unwrap().is_empty());
    assert!(store.pending_blobs().unwrap().is_empty());
    let db = ServerDb::open(&f.server.data).unwrap();
    let on_server: Vec<String> = db
        .visit_ids()
        .unwrap()
        .into_iter()
        .filter(|(hh, _)| *hh == h)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(on_server.len(), recorded.len(), "nothing duplicated");
    assert_eq!(
        on_server.into_iter().collect::<BTreeSet<_>>(),
        recorded,
        "nothing lost"
    );
    assert_eq!(
        db.totals().unwrap().photos,
        db.totals().unwrap().photos_received
    );
}

#[test]
fn broken_and_heic_photos_are_refused_clearly_and_the_visit_is_kept() {
    let f = field();
    let mut a = phone(&f, "worker-a");
    let h = a.households(&HouseholdQuery::default()).unwrap()[0].id;
    let v = visit(&mut a, h, "with bad photos");
    let good = a
        .attach_photo(
            h,
            v,
            &std::fs::read(fixture("photos/gps/DSCN0010.jpg")).unwrap(),
        )
        .unwrap();

    let heic = a.attach_photo(
        h,
        v,
        &std::fs::read(fixture("photos/heic/IMG_5195.HEIC")).unwrap(),
    );
    match heic {
        Err(doorstep_core::error::Error::Media(MediaError::Heic)) => {}
        other => panic!("HEIC must be refused with the HEIC error, got {other:?}"),
    }
    let msg = doorstep_core::error::Error::Media(MediaError::Heic).to_string();
    assert!(msg.contains("HEIC"), "{msg}");

    // A malformed EXIF block is ignored, the picture is kept.
    a.attach_photo(
        h,
        v,
        &std::fs::read(fixture("photos/broken/bad_exif.jpg")).unwrap(),
    )
    .unwrap();
    // Damaged data: a clear error or a decoded image, never a panic.
    match a.attach_photo(
        h,
        v,
        &std::fs::read(fixture("photos/broken/corrupted.jpg")).unwrap(),
    ) {
        Ok(p) => assert!(p.width.max(p.height) <= 1600),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    for garbage in [&b""[..], b"\xFF\xD8\xFF\xE0 not a jpeg", &[0u8; 4096][..]] {
        assert!(a.attach_photo(h, v, garbage).is_err());
    }
    let held = a.household(h).unwrap();
    assert!(
        held.visits[&v.to_string()]
            .photos
            .contains_key(&good.sha256),
        "the good photo is kept"
    );
    sync_now(&mut a, None, |_| {}).unwrap();
    assert!(a.outbox().unwrap().is_empty());
}

#[test]
fn the_sync_endpoint_is_never_open_and_refuses_hostile_requests() {
    let f = field();
    let url = f.server.url();

    // A fresh connection per request: the server may close one after refusing a body.
    let agent = || ureq_agent::agent();
    let status = |r: Result<u16, String>| r.unwrap();
    assert_eq!(
        status(ureq_agent::post(
            &agent(),
            &format!("{url}/v1/sync"),
            None,
            b""
        )),
        401
    );
    assert_eq!(
        status(ureq_agent::post(
            &agent(),
            &format!("{url}/v1/sync"),
            Some("nonsense"),
            b""
        )),
        401
    );
    assert_eq!(
        status(ureq_agent::get(&agent(), &format!("{url}/health"))),
        200
    );

    let a = phone(&f, "worker-a");
    let token = a.setting("token").unwrap().unwrap();
    assert_eq!(
        status(ureq_agent::post(
            &agent(),
            &format!("{url}/v1/sync"),
            Some(&token),
            b"\xff\xfe garbage"
        )),
        400
    );
    // The scheme name is case-insensitive.
    let lower = agent()
        .post(format!("{url}/v1/sync"))
        .header("Authorization", format!("bearer {token}"))
        .send(
            &doorstep_core::protocol::encode(&doorstep_core::protocol::SyncRequest {
                v: doorstep_core::protocol::PROTOCOL_VERSION,
                cursor: 0,
                push: vec![],
                pull: None,
                outbox: None,
                dropped: vec![],
                delivered: None,
            })[..],
        )
        .unwrap();
    assert_eq!(lower.status().as_u16(), 200);
    // Bad input answers with the API's JSON error body.
    let mut bad = agent()
        .post(format!("{url}/v1/devices/sign-in"))
        .content_type("application/json")
        .send(&b"{not json"[..])
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let body: serde_json::Value =
        serde_json::from_slice(&bad.body_mut().read_to_vec().unwrap()).unwrap();
    assert_eq!(body["code"], "bad_request");
    let huge = vec![0u8; 17 << 20];
    let r = ureq_agent::post(&agent(), &format!("{url}/v1/sync"), Some(&token), &huge);
    assert!(
        matches!(r, Ok(413) | Err(_)),
        "oversized body refused: {r:?}"
    );
    let wrong = "0".repeat(64);
    assert_eq!(
        status(ureq_agent::put(
            &agent(),
            &format!("{url}/v1/blobs/{wrong}"),
            &token,
            b"not that"
        )),
        422
    );
    assert_eq!(
        status(ureq_agent::put(
            &agent(),
            &format!("{url}/v1/blobs/../../etc"),
            &token,
            b"x"
        )),
        404
    );
    assert_eq!(
        status(ureq_agent::put(
            &agent(),
            &format!("{url}/v1/blobs/XYZ"),
            &token,
            b"x"
        )),
        400
    );

    // A phone of another grid sees none of these households and cannot write them.
    let mut other = phone(&f, "other-grid");
    assert!(
        other
            .households(&HouseholdQuery::default())
            .unwrap()
            .is_empty()
    );
    let h = a.households(&HouseholdQuery::default()).unwrap()[0].id;
    let bytes = {
        let db = ServerDb::open(&f.server.data).unwrap();
        db.household_doc(h).unwrap().unwrap().save()
    };
    other.insert_household_doc(&bytes, h).unwrap();
    other
        .set_household_field(h, ProfileField::Phone, "13900000000")
        .unwrap();
    sync_now(&mut other, None, |_| {}).unwrap();
    let refused = other.refused_changes().unwrap();
    assert_eq!(
        refused.len(),
        1,
        "the out-of-scope change is refused and kept"
    );
    assert!(refused[0].reason.contains("scope"), "{}", refused[0].reason);
    let wrong = Client::new(&url).sign_in(&mut other, "worker-a", "wrong password");
    assert!(matches!(
        wrong,
        Err(doorstep_core::error::Error::Unauthorized(_))
    ));
}

/// Raw HTTP for the hostile-request test, through the same client library the core uses.
mod ureq_agent {
    pub use ureq::Agent;

    pub fn agent() -> Agent {
        Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn status(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<u16, String> {
        r.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
    }

    pub fn get(a: &Agent, url: &str) -> Result<u16, String> {
        status(a.get(url).call())
    }

    pub fn post(a: &Agent, url: &str, token: Option<&str>, body: &[u8]) -> Result<u16, String> {
        let mut req = a.post(url).content_type("application/cbor");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        status(req.send(body))
    }

    pub fn put(a: &Agent, url: &str, token: &str, body: &[u8]) -> Result<u16, String> {
        status(
            a.put(url)
                .header("Authorization", format!("Bearer {token}"))
                .send(body),
        )
    }
}

/// A valid 18-character ID number (GB 11643-1999 check character) from 17 digits.
fn id_number(first17: &str) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .chars()
        .zip(W)
        .map(|(c, w)| c.to_digit(10).unwrap() * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{first17}{check}")
}

fn roster_csv(village: &str, rows: &[(&str, &str, &str)]) -> String {
    let mut csv = format!(
        "{village}户籍人员花名册\n序号,村民小组,网格,门牌号,户主姓名,姓名,与户主关系,性别,公民身份号码,出生日期,联系电话,重点人群,备注\n"
    );
    for (i, (name, relation, id17)) in rows.iter().enumerate() {
        csv += &format!(
            "{},第1组,第1网格,{village}1号,赵大,{name},{relation},男,{},1980-01-0{},,,\n",
            i + 1,
            id_number(id17),
            i + 1
        );
    }
    csv
}

#[test]
fn a_corrected_roster_adds_its_new_residents_and_grid_names_do_not_leak_across_villages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let run = |file: &Path| -> serde_json::Value {
        let out = Command::new(server_binary())
            .args(["import-roster", "--json", "--data"])
            .arg(&data)
            .arg(file)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        assert_no_personal_data(&String::from_utf8_lossy(&out.stderr), "import-roster's log");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = write(
        "a1.csv",
        roster_csv("甲村", &[("赵大", "户主", "11010119800101001")]),
    );
    assert_eq!(run(&first)["households_created"], 1);
    let corrected = write(
        "a2.csv",
        roster_csv(
            "甲村",
            &[
                ("赵大", "户主", "11010119800101001"),
                ("钱二", "子", "11010120050101002"),
            ],
        ),
    );
    let again = run(&corrected);
    assert_eq!(again["households_already_present"], 1);
    assert_eq!(again["residents_added_to_existing"], 1, "the new row lands");
    let other = write(
        "b.csv",
        roster_csv("乙村", &[("赵大", "户主", "11010119800101003")]),
    );
    assert_eq!(run(&other)["households_created"], 1);

    let db = ServerDb::open(&data).unwrap();
    assert_eq!(db.totals().unwrap().residents, 3);
    db.add_user(
        "jia",
        PASSWORD,
        Role::GridWorker,
        &Scope::grids(vec![GridRef::new("甲村", "第1网格")]),
        "(test)",
    )
    .unwrap();
    drop(db);
    let server = ServerProcess::start(&data);
    let mut phone = Store::open(dir.path().join("jia.db")).unwrap();
    Client::new(&server.url())
        .sign_in(&mut phone, "jia", PASSWORD)
        .unwrap();
    sync_now(&mut phone, None, |_| {}).unwrap();
    let seen = phone.households(&HouseholdQuery::default()).unwrap();
    assert_eq!(seen.len(), 1, "only 甲村's 第1网格, not 乙村's");
    assert_eq!(seen[0].village, "甲村");
    assert_eq!(phone.household(seen[0].id).unwrap().residents.len(), 2);
}
