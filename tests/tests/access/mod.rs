//! Issue 4 end to end, against the real server binary on loopback: every role × every
//! endpoint × a household in and out of scope, decided by the permission table; then
//! hand-written refusals that do not consult the table; revoked phones; enrolment;
//! throttling; masking; the audit log.

use std::path::Path;
use std::process::Command;

use automerge::Automerge;
use doorstep_core::evidence::DeviceKey;
use doorstep_core::model::{
    self, DeviceId, FollowUpCall, Household, HouseholdId, ProfileField, Resident, Review, Visit,
    VisitId,
};
use doorstep_core::protocol::{self, DocChanges, PROTOCOL_VERSION, SyncRequest, SyncResponse};
use doorstep_core::store::{Store, now_ms};
use doorstep_core::sync::{Client, sync_now};
use doorstep_server::access::{self, Permission, Reach, Role};
use doorstep_server::db::{GridRef, Scope, ServerDb};
use doorstep_tests::{ServerProcess, server_binary};
use serde_bytes::ByteBuf;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const ID_IN: &str = "110101199001011234";
const ID_OUT: &str = "11010119850505123X";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// One HTTP exchange: status and body (JSON when it parses, else the text).
fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let a = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let resp = match (method, body) {
        ("GET", _) => {
            let mut r = a.get(url);
            if let Some(h) = &auth {
                r = r.header("Authorization", h);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = a.delete(url);
            if let Some(h) = &auth {
                r = r.header("Authorization", h);
            }
            r.call()
        }
        (_, body) => {
            let mut r = a.post(url).content_type("application/json");
            if let Some(h) = &auth {
                r = r.header("Authorization", h);
            }
            r.send(body.unwrap_or(json!({})).to_string().as_bytes())
        }
    };
    let mut resp = resp.expect("the server answers");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn resident(name: &str, id: &str, phone: &str) -> Resident {
    Resident {
        name: name.into(),
        relation: "户主".into(),
        sex: "男".into(),
        birth_date: None,
        id_number: Some(id.into()),
        phone: Some(phone.into()),
        target_groups: vec![],
    }
}

fn household(village: &str, grid: &str, door: &str, r: Resident, visit: VisitId) -> Household {
    let mut h = Household::new(HouseholdId::new(), village, grid, door);
    h.head_name = r.name.clone();
    h.phone = r.phone.clone().unwrap_or_default();
    // Resident IDs are UUIDs in real households; the first here is "r1" for the tests
    // to name, the other a UUID.
    let rid = if village == "甲村" {
        "r1".to_string()
    } else {
        uuid::Uuid::new_v4().to_string()
    };
    h.residents.insert(rid, r);
    h.visits.insert(
        visit.to_string(),
        // Finished (nobody was home), so that a supervisor may check it by phone.
        Visit {
            visitor: "someone".into(),
            device_id: DeviceId::new().to_string(),
            started_at_ms: now_ms() - 3_600_000,
            finished_at_ms: Some(now_ms() - 3_000_000),
            outcome: Some(model::VisitOutcome::NobodyHome),
            outcome_reason: "无人在家".into(),
            voided: None,
            target_groups_reached: vec![],
            remarks: String::new(),
            photos: Default::default(),
            location: None,
        },
    );
    h
}

/// A server with two households, one in the field roles' scope (甲村/第1网格) and one
/// out of it (乙村/第2网格), each with a visit, and one account per role.
struct Town {
    _dir: tempfile::TempDir,
    server: ServerProcess,
    inside: (HouseholdId, VisitId),
    outside: (HouseholdId, VisitId),
}

fn scope_of(role: Role) -> Scope {
    let grid = Scope::grids(vec![GridRef::new("甲村", "第1网格")]);
    match role {
        Role::GridWorker | Role::GridLeader | Role::Supervisor => grid,
        Role::Police => Scope {
            units: vec!["派出所".into()],
            ..grid
        },
        Role::Liaison => Scope::units(vec!["派出所".into()]),
        Role::Office | Role::Admin => Scope::default(),
    }
}

fn town() -> Town {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let inside = (HouseholdId::new(), VisitId::new());
    let outside = (HouseholdId::new(), VisitId::new());
    {
        let db = ServerDb::open(&data).unwrap();
        let mut a = household(
            "甲村",
            "第1网格",
            "1号",
            resident("张三丰", ID_IN, "13812345678"),
            inside.1,
        );
        a.id = inside.0.to_string();
        let mut b = household(
            "乙村",
            "第2网格",
            "9号",
            resident("李四光", ID_OUT, "13987654321"),
            outside.1,
        );
        b.id = outside.0.to_string();
        db.import_households(&[a, b]).unwrap();
        for role in Role::ALL {
            db.add_user(role.as_str(), PASSWORD, role, &scope_of(role), "(test)")
                .unwrap();
        }
    }
    let server = ServerProcess::start(&data);
    Town {
        _dir: dir,
        server,
        inside,
        outside,
    }
}

impl Town {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    fn session(&self, user: &str) -> String {
        let (status, body) = call(
            "POST",
            &self.url("/v1/session"),
            None,
            Some(json!({"username": user, "password": PASSWORD})),
        );
        assert_eq!(status, 200, "{user} signs in: {body}");
        body["token"].as_str().unwrap().to_string()
    }

    /// A phone of `user`: its device ID and token, or `None` when the role takes no
    /// phone.
    fn device(&self, user: &str) -> Option<(DeviceId, String)> {
        let device = DeviceId::new();
        let key = DeviceKey::generate().unwrap();
        let (status, body) = call(
            "POST",
            &self.url("/v1/devices/sign-in"),
            None,
            Some(json!({
                "username": user, "password": PASSWORD,
                "device_id": device.to_string(), "device_key": hex::encode(key.public()),
            })),
        );
        match status {
            200 => Some((device, body["token"].as_str().unwrap().to_string())),
            403 => None,
            other => panic!("{user}'s phone sign-in answered {other}: {body}"),
        }
    }

    /// The household's document as the server stores it (read from its file; WAL lets
    /// a reader in beside the running server).
    fn server_doc(&self, h: HouseholdId) -> Automerge {
        let conn = rusqlite::Connection::open_with_flags(
            self.server.data.join("doorstep.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let bytes: Vec<u8> = conn
            .query_row(
                "SELECT bytes FROM documents WHERE doc_id = ?1",
                [&h.0.as_bytes()[..]],
                |r| r.get(0),
            )
            .unwrap();
        Automerge::load(&bytes).unwrap()
    }

    /// The API's reference to the household's first resident, as the office sees it.
    fn resident_id(&self, h: HouseholdId) -> String {
        let office = self.session("office");
        let (s, body) = call(
            "GET",
            &self.url(&format!("/v1/households/{h}")),
            Some(&office),
            None,
        );
        assert_eq!(s, 200, "{body}");
        let reference = body["residents"][0]["id"].as_str().unwrap().to_string();
        // Not the document's resident ID, which derives from the ID number.
        let doc = model::read_household(&self.server_doc(h)).unwrap();
        assert!(!doc.residents.contains_key(&reference));
        reference
    }

    /// Pushes the change `edit` makes to household `h`, made with `actor`'s ID, with
    /// the device token `token`. Returns the refusal's reason, or `None` when accepted.
    fn push(
        &self,
        token: &str,
        actor: DeviceId,
        h: HouseholdId,
        edit: impl FnOnce(&mut Automerge),
    ) -> Option<String> {
        let mut doc = self.server_doc(h).with_actor(actor.actor());
        let before = doc.get_heads();
        edit(&mut doc);
        let changes: Vec<ByteBuf> = doc
            .get_changes(&before)
            .into_iter()
            .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
            .collect();
        assert!(!changes.is_empty(), "the edit made a change");
        let resp = self.sync(token, vec![DocChanges { doc: h.0, changes }]);
        resp.rejected.first().map(|r| r.reason.clone()).or_else(|| {
            assert!(!resp.acked.is_empty(), "neither acknowledged nor refused");
            None
        })
    }

    fn sync(&self, token: &str, push: Vec<DocChanges>) -> SyncResponse {
        let body = protocol::encode(&SyncRequest {
            v: PROTOCOL_VERSION,
            cursor: 0,
            push,
            pull: None,
            outbox: None,
            dropped: vec![],
            delivered: None,
        });
        let mut resp = agent()
            .post(self.url("/v1/sync"))
            .header("Authorization", format!("Bearer {token}"))
            .content_type(protocol::CBOR)
            .send(&body[..])
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        protocol::decode(&resp.body_mut().read_to_vec().unwrap()).unwrap()
    }
}

/// A new visit by `device` of the account `visitor`.
fn new_visit(device: DeviceId, visitor: &str) -> impl FnOnce(&mut Automerge) {
    let visitor = visitor.to_string();
    move |doc| {
        let v = Visit {
            visitor,
            device_id: device.to_string(),
            started_at_ms: now_ms(),
            finished_at_ms: None,
            outcome: None,
            outcome_reason: String::new(),
            voided: None,
            target_groups_reached: vec![],
            remarks: String::new(),
            photos: Default::default(),
            location: None,
        };
        model::add_visit(doc, VisitId::new(), &v, now_ms()).unwrap();
    }
}

fn review_of(visit: VisitId) -> impl FnOnce(&mut Automerge) {
    move |doc| {
        let r = Review {
            state: "approved".into(),
            reason: String::new(),
            by: "me".into(),
            at_ms: now_ms(),
        };
        model::set_review(doc, &visit.to_string(), &r, now_ms()).unwrap();
    }
}

/// A follow-up call about `visit` in the name of the account `by` (the server takes a
/// call only in the pushing account's own name).
fn follow_up_of(visit: VisitId, by: &str) -> impl FnOnce(&mut Automerge) {
    let by = by.to_string();
    move |doc| {
        let c = FollowUpCall {
            visit_id: visit.to_string(),
            by,
            called_at_ms: now_ms(),
            reached: true,
            confirmed: Some(true),
            understood: Some(true),
            remarks: String::new(),
        };
        model::add_follow_up_call(doc, &uuid::Uuid::new_v4().to_string(), &c, now_ms()).unwrap();
    }
}

fn profile_edit(doc: &mut Automerge) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    model::set_profile_field(
        doc,
        ProfileField::Address,
        &format!("新地址 {n} 号"),
        now_ms(),
    )
    .unwrap();
}

/// What the table says: may `role` do `p` to a household in (or out of) its scope?
fn table_allows(role: Role, p: Permission, in_scope: bool) -> bool {
    match access::reach(role, p) {
        Reach::No => false,
        Reach::Scope => in_scope,
        Reach::Town => true,
    }
}

#[test]
fn every_role_every_endpoint_in_and_out_of_scope_gets_what_the_table_allows() {
    let t = town();
    let refs = [t.resident_id(t.inside.0), t.resident_id(t.outside.0)];
    let mut checked = 0;
    let mut mismatches = Vec::new();
    let mut record = |what: String, expected: bool, got: bool| {
        checked += 1;
        if expected != got {
            mismatches.push(format!("{what}: table says {expected}, server did {got}"));
        }
    };
    for role in Role::ALL {
        let user = role.as_str();
        let session = t.session(user);
        let device = t.device(user);
        record(
            format!("{user} enrols a phone (EnrolDevice)"),
            table_allows(role, Permission::EnrolDevice, true),
            device.is_some(),
        );
        for (in_scope, (h, visit), reference) in
            [(true, t.inside, &refs[0]), (false, t.outside, &refs[1])]
        {
            let at = if in_scope { "in scope" } else { "out of scope" };
            let hid = h.to_string();
            let id_number = if in_scope { ID_IN } else { ID_OUT };
            let door = if in_scope { "1号" } else { "9号" };
            let mut check = |p: Permission, name: &str, ok: bool| {
                record(
                    format!("{user} {name} {at} ({p:?})"),
                    table_allows(role, p, in_scope),
                    ok,
                )
            };
            // Reads.
            let (s, body) = call(
                "GET",
                &t.url("/v1/households?limit=1000"),
                Some(&session),
                None,
            );
            let listed = s == 200
                && body
                    .as_array()
                    .is_some_and(|a| a.iter().any(|r| r["id"] == hid));
            check(Permission::ReadHouseholds, "lists households", listed);
            let (s, body) = call(
                "GET",
                &t.url(&format!("/v1/households/{hid}")),
                Some(&session),
                None,
            );
            check(
                Permission::ReadHouseholds,
                "reads a household",
                s == 200 && body["id"] == hid,
            );
            if s == 200 {
                let text = body.to_string();
                assert!(!text.contains(id_number), "the ID number is masked: {text}");
                assert!(text.contains(&access::mask_id_number(id_number)), "{text}");
            }
            let (s, body) = call(
                "POST",
                &t.url(&format!("/v1/households/{hid}/reveal")),
                Some(&session),
                Some(json!({"resident": reference, "field": "id_number", "reason": "核对身份"})),
            );
            check(
                Permission::RevealPersonalData,
                "reveals an ID number",
                s == 200 && body["value"] == id_number,
            );
            let (s, body) = call(
                "POST",
                &t.url("/v1/residents/lookup"),
                Some(&session),
                Some(json!({"id_number": id_number})),
            );
            let found = s == 200
                && body
                    .as_array()
                    .is_some_and(|a| a.iter().any(|m| m["household_id"] == hid));
            check(Permission::LookupIdNumber, "looks up an ID number", found);
            let (s, body) = call(
                "GET",
                &t.url("/v1/export/households.csv"),
                Some(&session),
                None,
            );
            let exported = s == 200 && body.as_str().is_some_and(|csv| csv.contains(door));
            if let Some(csv) = body.as_str() {
                assert!(
                    !csv.contains(ID_IN) && !csv.contains(ID_OUT),
                    "exports are masked"
                );
            }
            check(Permission::ExportHouseholds, "exports households", exported);
            // Writes through the API.
            let (s, _) = call(
                "POST",
                &t.url(&format!("/v1/households/{hid}/visits/{visit}/review")),
                Some(&session),
                Some(json!({"state": "received"})),
            );
            check(Permission::WriteReview, "reviews a visit", s == 204);
            // A move to where it already is: allowed or refused, and changes nothing.
            let (village, grid) = if in_scope {
                ("甲村", "第1网格")
            } else {
                ("乙村", "第2网格")
            };
            let (s, _) = call(
                "POST",
                &t.url(&format!("/v1/households/{hid}/move")),
                Some(&session),
                Some(json!({"village": village, "grid": grid})),
            );
            check(Permission::MoveHousehold, "moves a household", s == 204);
            // Pushes from the role's phone (a role without a phone cannot push at all).
            let pushed = |edit: Box<dyn FnOnce(&mut Automerge)>| -> bool {
                device
                    .as_ref()
                    .is_some_and(|(d, tok)| t.push(tok, *d, h, edit).is_none())
            };
            let phone = |p: Permission| {
                table_allows(role, Permission::EnrolDevice, true) && table_allows(role, p, in_scope)
            };
            let mut check_push = |p: Permission, name: &str, ok: bool| {
                record(format!("{user}'s phone {name} {at} ({p:?})"), phone(p), ok)
            };
            let d = device.as_ref().map(|(d, _)| *d).unwrap_or_default();
            check_push(
                Permission::WriteVisit,
                "records a visit",
                pushed(Box::new(new_visit(d, user))),
            );
            check_push(
                Permission::WriteProfile,
                "corrects the address",
                pushed(Box::new(profile_edit)),
            );
            check_push(
                Permission::WriteReview,
                "writes a review",
                pushed(Box::new(review_of(visit))),
            );
            check_push(
                Permission::WriteFollowUpCall,
                "records a follow-up call",
                pushed(Box::new(follow_up_of(visit, user))),
            );
            let pulled = device
                .as_ref()
                .is_some_and(|(_, tok)| t.sync(tok, vec![]).docs.iter().any(|d| d.doc == h.0));
            check_push(Permission::SyncHouseholds, "receives the household", pulled);
        }
        let uploaded = device.as_ref().is_some_and(|(_, tok)| {
            let bytes = format!("a photo of {user}");
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes.as_bytes()));
            let mut r = agent()
                .put(t.url(&format!("/v1/blobs/{sha}")))
                .header("Authorization", format!("Bearer {tok}"))
                .send(bytes.as_bytes())
                .unwrap();
            let _ = r.body_mut().read_to_vec();
            r.status().as_u16() == 204
        });
        record(
            format!("{user}'s phone uploads a photo (UploadFiles)"),
            table_allows(role, Permission::EnrolDevice, true)
                && table_allows(role, Permission::UploadFiles, true),
            uploaded,
        );
        // Acts on accounts and the log.
        let (s, _) = call(
            "GET",
            &t.url("/v1/users/grid_worker/tokens"),
            Some(&session),
            None,
        );
        let own = role == Role::GridWorker;
        record(
            format!("{user} lists the grid worker's sessions and phones (ManageDevices)"),
            own || table_allows(role, Permission::ManageDevices, true),
            s == 200,
        );
        let mut check = |p: Permission, name: &str, ok: bool| {
            record(
                format!("{user} {name} ({p:?})"),
                table_allows(role, p, true),
                ok,
            )
        };
        let (s, _) = call("GET", &t.url("/v1/users"), Some(&session), None);
        check(Permission::ManageUsers, "lists accounts", s == 200);
        let (s, _) = call(
            "POST",
            &t.url("/v1/users"),
            Some(&session),
            Some(
                json!({"username": format!("made-by-{user}"), "password": PASSWORD, "role": "liaison", "scope": {"units": ["文化站"]}}),
            ),
        );
        check(Permission::ManageUsers, "creates an account", s == 201);
        let (s, _) = call(
            "POST",
            &t.url("/v1/enrolments"),
            Some(&session),
            Some(json!({"username": "grid_leader"})),
        );
        check(
            Permission::IssueEnrolment,
            "issues an enrolment code",
            s == 201,
        );
        let (s, _) = call("GET", &t.url("/v1/audit"), Some(&session), None);
        check(Permission::ReadAudit, "reads the audit log", s == 200);
    }
    assert!(
        mismatches.is_empty(),
        "{} of {checked} cases differ from the table:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // 7 roles × (enrolment + 2 households × (7 API calls + 5 pushes) + an upload + 5
    // account acts).
    assert_eq!(checked, 7 * (1 + 2 * (7 + 5) + 1 + 5), "every case ran");
}

#[test]
fn refusals_written_by_hand_without_the_table() {
    let t = town();
    let (h_in, v_in) = t.inside;
    let (h_out, _) = t.outside;
    let worker = t.session("grid_worker");
    let (device, token) = t.device("grid_worker").unwrap();

    // A grid worker reading another grid's household: not found, not listed, not
    // pulled.
    let (s, body) = call(
        "GET",
        &t.url(&format!("/v1/households/{h_out}")),
        Some(&worker),
        None,
    );
    assert_eq!(s, 404, "{body}");
    assert!(
        !body.to_string().contains("李四光"),
        "the refusal names nobody"
    );
    let (_, list) = call("GET", &t.url("/v1/households"), Some(&worker), None);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(t.sync(&token, vec![]).docs.iter().all(|d| d.doc != h_out.0));

    // A worker writing a review state, by push and through the API.
    let reason = t
        .push(&token, device, h_in, review_of(v_in))
        .expect("refused");
    assert!(reason.contains("reviews"), "{reason}");
    let (s, _) = call(
        "POST",
        &t.url(&format!("/v1/households/{h_in}/visits/{v_in}/review")),
        Some(&worker),
        Some(json!({"state": "approved"})),
    );
    assert_eq!(s, 403);

    // A phone pushing a change made with another device's actor ID.
    let (other_device, _) = t.device("grid_leader").unwrap();
    let reason = t
        .push(
            &token,
            other_device,
            h_in,
            new_visit(other_device, "grid_leader"),
        )
        .expect("refused");
    assert!(reason.contains("another device"), "{reason}");

    // Nobody writes the residents or the household's place; nobody deletes.
    let reason = t
        .push(&token, device, h_in, |doc| {
            use automerge::transaction::Transactable;
            let mut tx = doc.transaction();
            tx.put(automerge::ROOT, "grid", "第9网格").unwrap();
            tx.commit();
        })
        .expect("refused");
    assert!(reason.contains("grid"), "{reason}");

    // A supervisor's phone writes follow-up calls but not visits; a worker's the
    // other way round.
    let (sup_device, sup_token) = t.device("supervisor").unwrap();
    assert_eq!(
        t.push(
            &sup_token,
            sup_device,
            h_in,
            follow_up_of(v_in, "supervisor")
        ),
        None
    );
    assert!(
        t.push(
            &sup_token,
            sup_device,
            h_in,
            new_visit(sup_device, "supervisor")
        )
        .is_some()
    );
    assert!(
        t.push(&token, device, h_in, follow_up_of(v_in, "grid_worker"))
            .is_some()
    );
    assert_eq!(
        t.push(&token, device, h_in, new_visit(device, "grid_worker")),
        None
    );
    // A visit in a colleague's name, or credited to another phone, is refused.
    let reason = t
        .push(&token, device, h_in, new_visit(device, "grid_leader"))
        .expect("refused");
    assert!(reason.contains("another phone or person"), "{reason}");
    let reason = t
        .push(&token, device, h_in, new_visit(other_device, "grid_worker"))
        .expect("refused");
    assert!(reason.contains("another phone or person"), "{reason}");
    // Nor by handing one's own visit over afterwards, or by replacing it (or a
    // placeholder) within one push.
    let reason = t
        .push(&token, device, h_in, |doc| {
            use automerge::ReadDoc;
            use automerge::transaction::Transactable;
            let h = model::read_household(doc).unwrap();
            let (own, _) = h
                .visits
                .iter()
                .find(|(_, v)| v.device_id == device.to_string())
                .unwrap();
            let mut tx = doc.transaction();
            let visits = tx.get(automerge::ROOT, "visits").unwrap().unwrap().1;
            let visit = tx.get(&visits, own.as_str()).unwrap().unwrap().1;
            tx.put(&visit, "device_id", other_device.to_string())
                .unwrap();
            tx.put(&visit, "visitor", "grid_leader").unwrap();
            tx.commit();
        })
        .expect("refused");
    assert!(reason.contains("another phone or person"), "{reason}");
    for placeholder in [false, true] {
        let resp_reason = t.push(&token, device, h_in, |doc| {
            use automerge::ReadDoc;
            use automerge::transaction::Transactable;
            let id = VisitId::new();
            if placeholder {
                let mut tx = doc.transaction();
                let visits = tx.get(automerge::ROOT, "visits").unwrap().unwrap().1;
                tx.put(&visits, id.to_string(), "placeholder").unwrap();
                tx.commit();
            } else {
                new_visit(device, "grid_worker")(doc);
                let h = model::read_household(doc).unwrap();
                let newest = h
                    .visits
                    .iter()
                    .filter(|(_, v)| v.device_id == device.to_string())
                    .max_by_key(|(_, v)| v.started_at_ms)
                    .unwrap()
                    .0
                    .clone();
                let colleague = Visit {
                    visitor: "grid_leader".into(),
                    device_id: other_device.to_string(),
                    ..model::read_household(doc).unwrap().visits[&newest].clone()
                };
                model::add_visit(doc, VisitId::parse(&newest).unwrap(), &colleague, now_ms())
                    .unwrap();
                return;
            }
            let v = Visit {
                visitor: "grid_leader".into(),
                device_id: other_device.to_string(),
                started_at_ms: now_ms(),
                finished_at_ms: None,
                outcome: None,
                outcome_reason: String::new(),
                voided: None,
                target_groups_reached: vec![],
                remarks: String::new(),
                photos: Default::default(),
                location: None,
            };
            model::add_visit(doc, id, &v, now_ms()).unwrap();
        });
        assert!(resp_reason.is_some(), "placeholder {placeholder}: refused");
    }
    let (_, body) = call(
        "GET",
        &t.url(&format!("/v1/households/{h_in}")),
        Some(&t.session("office")),
        None,
    );
    assert!(
        body["visits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["visitor"] != "grid_leader"),
        "no visit in the grid leader's name: {body}"
    );

    // An empty change, and a write into an object that no longer shows (a map inside
    // the worker's own visit, overwritten), are refused: they would carry data past
    // the diff.
    let reason = t
        .push(&token, device, h_in, |doc| {
            use automerge::ReadDoc;
            use automerge::transaction::Transactable;
            // The worker's own visit, accepted above.
            let h = model::read_household(doc).unwrap();
            let (own, _) = h
                .visits
                .iter()
                .find(|(_, v)| v.device_id == device.to_string())
                .unwrap();
            let mut tx = doc.transaction();
            let visits = tx.get(automerge::ROOT, "visits").unwrap().unwrap().1;
            let visit = tx.get(&visits, own.as_str()).unwrap().unwrap().1;
            let hidden = tx
                .put_object(&visit, "scratch", automerge::ObjType::Map)
                .unwrap();
            tx.put(&visit, "scratch", "gone").unwrap();
            tx.put(&hidden, "note", "13812345678").unwrap();
            tx.commit();
        })
        .expect("refused");
    assert!(
        reason.contains("no longer part of the document"),
        "{reason}"
    );

    // The administrator sees no household; the office sees them masked and reveals
    // only with a reason.
    let admin = t.session("admin");
    let (s, _) = call(
        "GET",
        &t.url(&format!("/v1/households/{h_in}")),
        Some(&admin),
        None,
    );
    assert_eq!(s, 403);
    let office = t.session("office");
    let (s, body) = call(
        "GET",
        &t.url(&format!("/v1/households/{h_in}")),
        Some(&office),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(body["phone"], "138****5678");
    assert_eq!(body["residents"][0]["id_number"], "110101********1234");
    let (s, _) = call(
        "POST",
        &t.url(&format!("/v1/households/{h_in}/reveal")),
        Some(&office),
        Some(json!({"field": "phone", "reason": ""})),
    );
    assert_eq!(s, 400, "a reveal needs a reason");
    let (s, body) = call(
        "POST",
        &t.url(&format!("/v1/households/{h_in}/reveal")),
        Some(&office),
        Some(json!({"field": "phone", "reason": "电话回访前核对"})),
    );
    assert_eq!((s, body["value"].as_str()), (200, Some("13812345678")));

    // No token, a made-up token, a phone token on an office endpoint.
    assert_eq!(call("GET", &t.url("/v1/households"), None, None).0, 401);
    assert_eq!(
        call("GET", &t.url("/v1/households"), Some("nonsense"), None).0,
        401
    );
    assert_eq!(call("GET", &t.url("/v1/users"), Some(&token), None).0, 403);
}

/// Runs `doorstep-server` with `args`; returns exit code and standard output.
fn cli(data: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(server_binary())
        .args(args)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    doorstep_tests::assert_no_personal_data(&String::from_utf8_lossy(&out.stderr), "the CLI's log");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_phone_enrols_once_with_a_code_and_a_revoked_phone_stops_at_once_with_its_work_reported() {
    let t = town();
    let office = t.session("office");
    let (s, e) = call(
        "POST",
        &t.url("/v1/enrolments"),
        Some(&office),
        Some(json!({"username": "grid_worker"})),
    );
    assert_eq!(s, 201, "{e}");
    let payload =
        doorstep_core::sync::EnrolPayload::parse(e["qr_payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        payload.server,
        t.server.url(),
        "the QR code holds the server's address"
    );
    assert_eq!(payload.code, e["code"].as_str().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let mut phone = Store::open(dir.path().join("phone.db")).unwrap();
    // Typed in lower case with spaces: still the code.
    let typed = payload.code.to_lowercase().replace('-', " ");
    Client::new(&payload.server)
        .enrol(&mut phone, &typed)
        .unwrap();
    sync_now(&mut phone, None, |_| {}).unwrap();
    assert_eq!(phone.households(&Default::default()).unwrap().len(), 1);

    // The code works once.
    let mut second = Store::open(dir.path().join("second.db")).unwrap();
    let err = Client::new(&payload.server)
        .enrol(&mut second, &payload.code)
        .unwrap_err();
    assert!(err.to_string().contains("wrong, used or expired"), "{err}");

    // Work recorded offline, then the office revokes the phone.
    let (h, _) = t.inside;
    let visit = phone
        .start_visit(
            h,
            doorstep_core::store::VisitStart {
                started_at_ms: now_ms(),
                location: None,
            },
        )
        .unwrap();
    let device = phone.device_id().to_string();
    let (s, info) = call(
        "DELETE",
        &t.url(&format!("/v1/devices/{device}")),
        Some(&office),
        None,
    );
    assert_eq!(s, 200, "{info}");
    assert!(info["revoked_at_ms"].is_i64());
    let err = sync_now(&mut phone, None, |_| {}).unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    // Nothing is lost on the phone ...
    assert!(
        phone
            .household(h)
            .unwrap()
            .visits
            .contains_key(&visit.to_string())
    );
    // ... and the office sees what it still held.
    let (_, info) = call(
        "GET",
        &t.url(&format!("/v1/devices/{device}")),
        Some(&office),
        None,
    );
    assert_eq!(info["pushes_after_revocation"], 1, "{info}");
    assert!(
        info["changes_after_revocation"].as_i64().unwrap() >= 1,
        "{info}"
    );
    // Signing in again with the password does not undo a revocation.
    let err = Client::new(&t.server.url())
        .sign_in(&mut phone, "grid_worker", PASSWORD)
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");

    // The audit log holds it all, and its chain holds.
    let (code, out) = cli(&t.server.data, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&t.server.data, &["audit", "export"]);
    assert_eq!(code, 0);
    let actions: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for a in [
        "sign_in",
        "enrolment_issued",
        "enrolment_redeemed",
        "enrolment_refused",
        "device_revoked",
        "push_refused_revoked",
    ] {
        assert!(actions.iter().any(|x| x == a), "no {a} in {actions:?}");
    }
}

#[test]
fn repeated_wrong_passwords_are_throttled_and_every_attempt_is_audited() {
    let t = town();
    let attempt = |password: &str| {
        call(
            "POST",
            &t.url("/v1/session"),
            None,
            Some(json!({"username": "office", "password": password})),
        )
    };
    let statuses: Vec<u16> = (0..7).map(|_| attempt("wrong password!").0).collect();
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], &[429, 429], "{statuses:?}");
    // While throttled, even the right password waits.
    let (s, body) = attempt(PASSWORD);
    assert_eq!(s, 429, "{body}");
    assert_eq!(body["code"], "throttled");
    // Another account from the same address is not locked out by it.
    assert_eq!(t.session("admin").len(), 64);
    assert_eq!(t.session("supervisor").len(), 64);
    let (code, out) = cli(&t.server.data, &["audit", "export"]);
    assert_eq!(code, 0);
    let refused = out
        .lines()
        .filter(|l| l.contains("\"sign_in_refused\""))
        .count();
    assert_eq!(
        refused, 5,
        "each checked wrong password is audited; throttled ones are never checked"
    );
}

#[test]
fn accounts_are_managed_from_the_command_line_and_the_api_and_role_changes_apply_at_once() {
    let t = town();
    let data = &t.server.data;
    let (code, out) = cli(
        data,
        &[
            "user",
            "add",
            "--username",
            "ganbu",
            "--password",
            PASSWORD,
            "--role",
            "police",
            "--village",
            "甲村",
            "--grid",
            "第1网格",
            "--unit",
            "派出所",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("police, grids: 甲村/第1网格; units: 派出所"),
        "{out}"
    );
    let (code, _) = cli(
        data,
        &[
            "user",
            "add",
            "--username",
            "x",
            "--password",
            "short",
            "--role",
            "office",
        ],
    );
    assert_eq!(code, 2, "short passwords are refused");
    let session = t.session("ganbu");
    let (s, _) = call(
        "GET",
        &t.url(&format!("/v1/households/{}", t.inside.0)),
        Some(&session),
        None,
    );
    assert_eq!(s, 200);
    // The administrator moves the officer to 乙村 through the API: the next request
    // already sees the new scope.
    let admin = t.session("admin");
    let (s, body) = call(
        "POST",
        &t.url("/v1/users/ganbu/role"),
        Some(&admin),
        Some(json!({"role": "police", "scope": {"villages": ["乙村"]}})),
    );
    assert_eq!(s, 204, "{body}");
    let (s, _) = call(
        "GET",
        &t.url(&format!("/v1/households/{}", t.inside.0)),
        Some(&session),
        None,
    );
    assert_eq!(s, 404);
    let (s, _) = call(
        "GET",
        &t.url(&format!("/v1/households/{}", t.outside.0)),
        Some(&session),
        None,
    );
    assert_eq!(s, 200);
    // Sessions are listed and revocable; a reset ends them; a disabled account is out.
    let (s, tokens) = call("GET", &t.url("/v1/users/ganbu/tokens"), Some(&admin), None);
    assert_eq!(s, 200);
    assert_eq!(tokens["sessions"].as_array().unwrap().len(), 1);
    assert!(
        !tokens.to_string().contains(&session),
        "tokens are never shown"
    );
    let (code, _) = cli(
        data,
        &[
            "user",
            "reset",
            "--username",
            "ganbu",
            "--password",
            "another good one",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(call("GET", &t.url("/v1/me"), Some(&session), None).0, 401);
    let (s, _) = call(
        "POST",
        &t.url("/v1/users/ganbu/disable"),
        Some(&admin),
        None,
    );
    assert_eq!(s, 204);
    let (s, _) = call(
        "POST",
        &t.url("/v1/session"),
        None,
        Some(json!({"username": "ganbu", "password": "another good one"})),
    );
    assert_eq!(s, 401);
    let (code, out) = cli(data, &["user", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("ganbu\tpolice") && l.contains("disabled")),
        "{out}"
    );
    let (code, out) = cli(data, &["audit", "export"]);
    assert_eq!(code, 0);
    for a in [
        "user_created",
        "role_changed",
        "password_reset",
        "user_disabled",
    ] {
        assert!(out.contains(&format!("\"action\":\"{a}\"")), "no {a}");
    }
    assert!(
        !out.contains(PASSWORD) && !out.contains("another good one"),
        "no password in the audit log"
    );
}
