//! Issue 6 in a browser: headless Chromium (Debian's chromium and chromium-driver)
//! against the real server binary on loopback, with simulated phones on the real core
//! beside it. Each test builds a town of its own: the 东坡村 roster fixture, one account
//! per role, and a grid worker's phone that recorded three complete visits (photo,
//! signed notice and pledge) and synced.
//!
//! - the office signs in (a wrong password is refused), every office page renders,
//!   the household page masks numbers and shows the photos, search finds a household,
//!   and signing out ends the session; a screenshot of each page is saved in
//!   `target/artifacts/web/` (the test artifacts; [`browser::artifacts_dir`]);
//! - a grid worker's web session sees none of the office pages (nor does anybody
//!   without a session), and is told to use the phone app;
//! - conflicting edits of two phones show side by side, masked; the office keeps one
//!   and both phones take it;
//! - review: the office flags a visit (has issues, with a reason), the rectification
//!   reaches the worker's phone, the fix comes back into the queue first, the office
//!   approves it and the task closes on the phone too;
//! - follow-up: a supervisor draws a sample (the recorded seed draws it again, and so
//!   does the core on a supervisor's phone), reveals the number, records a call in
//!   which the household denies the visit, which opens a rectification on the phone;
//! - directives: the office publishes one to a village and a unit; the village's
//!   liaison acknowledges and confirms the push from a phone (and cannot for the
//!   unit), the unit's liaison from the web, and the office sees who and when;
//! - bulletin: the police enter a month's cases and losses, the office sees who is
//!   short of lecturers, follows a figure to its records, exports the bulletin and the
//!   visits' CSV, and calamine reads the workbook's figures back against the records.
//!
//! The pages are driven as a person would, through their forms: `/login` (`username`,
//! `password`), `/households/{id}/visits/{visit}/review` (`state`, `reason`), the
//! conflict form (`choice`), `/follow-up/rounds` (`village`, `grid`, `method`,
//! `amount`, `seed`), the round's reveal and call forms (`reached`, `confirmed`, `q1`
//! to `q3`, `remarks`), `/directives` (`category`, `title`, `body`, `place`), the
//! liaison's acknowledge and push buttons, and `/bulletin/cases` (`cases.<place>`,
//! `losses.<place>`). Run them alone with `cargo test -p doorstep-tests --test web`.

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use doorstep_core::directive::MarkKind;
use doorstep_core::model::{self, HouseholdId, VisitId};
use doorstep_core::store::{Store, now_ms};
use doorstep_core::sync::{Client, sync_now};
use doorstep_server::db::{GridRef, Role, Scope, ServerDb};
use doorstep_tests::browser::{
    self, Browser, choose, download, fill, find, find_all, http_get, open, page_text, screenshot,
    screenshot_phone, session_cookie, sign_in, submit, text_of, url_of,
};
use doorstep_tests::{ServerProcess, assert_no_personal_data, fixture, server_binary};

const PASSWORD: &str = "correct horse battery";
const OFFICE: &str = "office1";
const WORKER: &str = "worker1";
/// A second grid worker of the same grid (for conflicting edits).
const WORKER2: &str = "worker2";
const SUPERVISOR: &str = "supervisor1";
const LIAISON: &str = "liaison1";
const POLICE: &str = "police1";
/// The liaison of the police station (a town unit).
const UNIT_LIAISON: &str = "liaison2";
/// The unit the police account answers for, as the responsible-persons fixture names it.
const POLICE_UNIT: &str = "镇派出所";

/// The office pages a grid worker must never see.
const OFFICE_PAGES: &[&str] = &[
    "/",
    "/households",
    "/review",
    "/rectifications",
    "/follow-up",
    "/directives",
    "/places",
    "/bulletin",
    "/bulletin/cases",
    "/export/visits.csv",
];

/// A town of its own for one test: the server over the 东坡村 roster, one account per
/// role, and the worker's phone after three complete visits in its grid, synced.
struct Town {
    dir: tempfile::TempDir,
    server: ServerProcess,
    village: String,
    grid: String,
    /// The worker's phone.
    phone: Store,
    /// The three households visited, and their visits, in order.
    visited: Vec<(HouseholdId, VisitId)>,
    /// The roster's households (for their door numbers, names and phone numbers).
    roster: Vec<model::Household>,
}

fn town() -> Town {
    // A missing browser fails the test at once, naming the packages to install.
    browser::check_tools();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let roster = doorstep_server::roster::read_roster(&fixture("roster/village_a.xlsx"))
        .expect("read the 东坡村 roster");
    let village = roster.households[0].village.clone();
    let grid = roster.households[0].grid.clone();
    {
        let db = ServerDb::open(&data).unwrap();
        db.import_households(&roster.households).unwrap();
        let grid_scope = Scope::grids(vec![GridRef::new(&village, &grid)]);
        let accounts = [
            (OFFICE, Role::Office, Scope::town()),
            (WORKER, Role::GridWorker, grid_scope.clone()),
            (WORKER2, Role::GridWorker, grid_scope.clone()),
            (
                SUPERVISOR,
                Role::Supervisor,
                Scope::villages(vec![village.clone()]),
            ),
            (
                LIAISON,
                Role::Liaison,
                Scope::villages(vec![village.clone()]),
            ),
            (
                UNIT_LIAISON,
                Role::Liaison,
                Scope::units(vec![POLICE_UNIT.into()]),
            ),
            (
                POLICE,
                Role::Police,
                Scope {
                    units: vec![POLICE_UNIT.into()],
                    villages: vec![village.clone()],
                    ..Scope::default()
                },
            ),
        ];
        for (name, role, scope) in accounts {
            db.add_user(name, PASSWORD, role, &scope, "(test)").unwrap();
        }
    }
    let server = ServerProcess::start(&data);
    let mut phone = phone_of(dir.path(), &server, WORKER);
    let mine: Vec<HouseholdId> = roster
        .households
        .iter()
        .filter(|h| h.grid == grid && !h.residents.is_empty())
        .take(3)
        .map(|h| HouseholdId::parse(&h.id).unwrap())
        .collect();
    let visited: Vec<(HouseholdId, VisitId)> = mine
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let v = doorstep_server::demo::complete_visit(&mut phone, *h, i as u32)
                .expect("a complete visit on the phone");
            (*h, v)
        })
        .collect();
    sync_now(&mut phone, None, |_| {}).expect("the worker's phone syncs");
    assert!(phone.outbox().unwrap().is_empty(), "everything was sent");
    Town {
        dir,
        server,
        village,
        grid,
        phone,
        visited,
        roster: roster.households,
    }
}

/// A phone of `user`: a store of its own, signed in, after its first sync.
fn phone_of(dir: &Path, server: &ServerProcess, user: &str) -> Store {
    let mut store = Store::open(dir.join(format!("{user}.db"))).unwrap();
    Client::new(&server.url())
        .sign_in(&mut store, user, PASSWORD)
        .unwrap_or_else(|e| panic!("{user}'s phone signs in: {e}"));
    sync_now(&mut store, None, |_| {}).unwrap_or_else(|e| panic!("{user}'s phone syncs: {e}"));
    store
}

impl Town {
    fn url(&self) -> String {
        self.server.url()
    }

    fn household(&self, id: HouseholdId) -> &model::Household {
        self.roster
            .iter()
            .find(|h| h.id == id.to_string())
            .expect("a roster household")
    }

    fn sync(&mut self) {
        sync_now(&mut self.phone, None, |_| {}).expect("the worker's phone syncs");
    }
}

/// Imports the responsible persons of the villages and units (the fixture sheet) with
/// the server's CLI, beside the running server.
fn import_places(t: &Town) {
    let out = Command::new(server_binary())
        .args(["import-places", "--data"])
        .arg(&t.server.data)
        .arg(fixture("roster/responsible_persons.xlsx"))
        .env("RUST_LOG", "debug")
        .output()
        .expect("run import-places");
    assert_no_personal_data(&String::from_utf8_lossy(&out.stderr), "import-places's log");
    assert!(
        out.status.success(),
        "import-places failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The town's month now, `YYYY-MM` (China Standard Time).
fn this_month() -> String {
    model::town_date(now_ms())[..7].to_string()
}

/// The selector of the submit button(s) of the form `form`.
fn submit_of(form: &str) -> String {
    format!("{form} button[type=submit], {form} button:not([type]), {form} input[type=submit]")
}

/// Sets the field `name` of the form `form` to `value`: a `<select>` by the option's
/// value, a radio button or checkbox by its value (checked), else typed in.
async fn set_field(c: &browser::Client, form: &str, name: &str, value: &str) {
    let sel = format!("{form} [name=\"{name}\"]");
    let first = find(c, &sel).await;
    let tag = first.tag_name().await.unwrap_or_default().to_lowercase();
    let kind = first
        .attr("type")
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
        .to_lowercase();
    if tag == "select" {
        choose(c, &sel, value).await;
    } else if kind == "radio" || kind == "checkbox" {
        let one = format!("{form} [name=\"{name}\"][value=\"{value}\"]");
        let e = find(c, &one).await;
        if !e.is_selected().await.unwrap_or(false) {
            e.click()
                .await
                .unwrap_or_else(|err| panic!("tick {one}: {err}"));
        }
    } else {
        fill(c, &sel, value).await;
    }
}

/// Sets a yes/no field `name` of the form `form`: a `<select>` or radio buttons with
/// a value meaning yes or no (`true`/`false`, `yes`/`no`, `1`/`0`), or a checkbox.
async fn set_yes_no(c: &browser::Client, form: &str, name: &str, yes: bool) {
    let sel = format!("{form} [name=\"{name}\"]");
    let elements = find_all(c, &sel).await;
    assert!(
        !elements.is_empty(),
        "no field {name} in {form} on {}",
        url_of(c).await
    );
    let tag = elements[0]
        .tag_name()
        .await
        .unwrap_or_default()
        .to_lowercase();
    let kind = elements[0]
        .attr("type")
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
        .to_lowercase();
    let wanted: &[&str] = if yes {
        &["true", "yes", "1", "是"]
    } else {
        &["false", "no", "0", "否"]
    };
    if kind == "checkbox" && elements.len() == 1 {
        if elements[0].is_selected().await.unwrap_or(false) != yes {
            elements[0].click().await.expect("tick the checkbox");
        }
        return;
    }
    let options = if tag == "select" {
        find_all(c, &format!("{sel} option")).await
    } else {
        elements
    };
    for o in options {
        let v = o.attr("value").await.ok().flatten().unwrap_or_default();
        if wanted.contains(&v.as_str()) {
            if tag == "select" {
                choose(c, &sel, &v).await;
            } else {
                o.click().await.expect("choose the radio button");
            }
            return;
        }
    }
    panic!(
        "field {name} in {form} on {} has no {} value",
        url_of(c).await,
        if yes { "yes" } else { "no" }
    );
}

/// Signs in on the login page like a person (without [`sign_in`]'s check that the
/// browser left it), for accounts that land elsewhere.
async fn type_sign_in(c: &browser::Client, base: &str, user: &str) {
    open(c, &format!("{base}/login")).await;
    fill(c, "input[name=username]", user).await;
    fill(c, "input[name=password]", PASSWORD).await;
    submit(c, &submit_of("form")).await;
}

/// Fails when the page is an error page (the skeleton's 403/404/400/500 pages say
/// 无权访问, 找不到页面, 请求有误, 服务器出错 in their `<h1>`).
async fn assert_not_error(c: &browser::Client, what: &str) {
    let h1 = find_all(c, "h1").await;
    let title = match h1.first() {
        Some(e) => e.text().await.unwrap_or_default(),
        None => String::new(),
    };
    for bad in [
        "无权访问",
        "找不到页面",
        "请求有误",
        "服务器出错",
        "服务器繁忙",
    ] {
        assert!(
            !title.contains(bad),
            "{what}: {} shows the error page {title:?}:\n{}",
            url_of(c).await,
            page_text(c).await
        );
    }
}

/// The browser's web session cookie, failing when it has none.
async fn cookie(c: &browser::Client) -> String {
    session_cookie(c)
        .await
        .expect("the browser holds a doorstep_session cookie after signing in")
}

#[test]
fn the_office_signs_in_and_every_page_renders_with_a_screenshot() {
    let t = town();
    let base = t.url();
    let (h0, _) = t.visited[0];
    let rt = browser::runtime();
    rt.block_on(async {
        let b = Browser::start().await;
        // The sign-in page, on the office screen and on a phone.
        open(&b, &format!("{base}/login")).await;
        find(&b, "input[name=username]").await;
        find(&b, "input[name=password][type=password]").await;
        screenshot(&b, "login").await;
        screenshot_phone(&b, "login-phone").await;

        // A wrong password stays on the sign-in page with a Chinese message.
        fill(&b, "input[name=username]", OFFICE).await;
        fill(&b, "input[name=password]", "not the password").await;
        submit(&b, &submit_of("form")).await;
        assert!(
            url_of(&b).await.contains("/login"),
            "a wrong password signs nobody in"
        );
        assert!(
            session_cookie(&b).await.is_none() || {
                let (status, _, _) = http_get(&base, "/", session_cookie(&b).await.as_deref());
                status != 200
            }
        );
        screenshot(&b, "login-refused").await;

        sign_in(&b, &base, OFFICE, PASSWORD).await;
        let session = cookie(&b).await;
        assert_not_error(&b, "the office's landing page").await;
        let text = page_text(&b).await;
        assert!(
            text.contains(&t.village),
            "the dashboard names the village:\n{text}"
        );
        screenshot(&b, "dashboard").await;
        screenshot_phone(&b, "dashboard-phone").await;

        let pages = [
            ("households", "/households".to_string()),
            (
                "households-filtered",
                format!("/households?village={}&status=completed", t.village),
            ),
            ("household", format!("/households/{h0}")),
            ("review", "/review".to_string()),
            ("rectifications", "/rectifications".to_string()),
            ("follow-up", "/follow-up".to_string()),
            ("directives", "/directives".to_string()),
            ("places", "/places".to_string()),
            ("bulletin", format!("/bulletin?month={}", this_month())),
            ("bulletin-cases", "/bulletin/cases".to_string()),
        ];
        let mut failed = Vec::new();
        for (name, path) in &pages {
            let (status, _, _) = http_get(&base, path, Some(&session));
            open(&b, &format!("{base}{path}")).await;
            screenshot(&b, &format!("office-{name}")).await;
            if status != 200 {
                failed.push(format!("{path}: {status}"));
            }
        }
        assert!(
            failed.is_empty(),
            "office pages not shown to the office: {failed:?}"
        );

        // The household page: residents masked, photos as thumbnails linking to the
        // full size, the visit's signatures.
        open(&b, &format!("{base}/households/{h0}")).await;
        let text = page_text(&b).await;
        let h = t.household(h0);
        for r in h.residents.values() {
            for secret in r.id_number.iter().chain(r.phone.iter()) {
                assert!(
                    !text.contains(secret.as_str()),
                    "the household page shows a resident's full ID or phone number"
                );
            }
        }
        assert!(
            !text.contains(&h.phone) || h.phone.is_empty(),
            "the head's phone is masked"
        );
        let thumbs = find_all(&b, "img[src^=\"/files/thumb/\"]").await;
        assert!(!thumbs.is_empty(), "the visit's photo shows as a thumbnail");
        let full = find_all(&b, "a[href^=\"/files/photo/\"]").await;
        assert!(
            !full.is_empty(),
            "the thumbnail links to the full-size photo"
        );
        let href = full[0].attr("href").await.unwrap().unwrap();
        let (status, _, _) = http_get(&base, &href, Some(&session));
        assert_eq!(status, 200, "the full-size photo opens for the office");
        let (status, _, _) = http_get(&base, &href, None);
        assert_ne!(status, 200, "no photo without a session");

        // Search by door number finds the one household.
        let door = &h.door_number;
        open(&b, &format!("{base}/households")).await;
        fill(&b, "form[action=\"/households\"] input[name=q]", door).await;
        submit(&b, &submit_of("form[action=\"/households\"]")).await;
        let text = page_text(&b).await;
        assert!(
            text.contains("共 1 户") && text.contains(door.as_str()),
            "search by door number:\n{text}"
        );
        screenshot(&b, "office-households-search").await;

        // Signing out ends the session.
        open(&b, &format!("{base}/logout")).await;
        screenshot(&b, "logout").await;
        submit(&b, &submit_of("form")).await;
        let (status, location, _) = http_get(&base, "/", Some(&session));
        assert_eq!(
            status, 303,
            "the session ended: / sends to the sign-in page"
        );
        assert!(location.unwrap_or_default().starts_with("/login"));
        b.close().await;
    });
}

#[test]
fn conflicting_edits_show_side_by_side_and_the_office_keeps_one() {
    let mut t = town();
    let base = t.url();
    let (h0, _) = t.visited[0];
    let (a, b_value) = ("13812345678", "13987654321");
    // Two phones change the household's number offline, then sync.
    let mut other = phone_of(t.dir.path(), &t.server, WORKER2);
    t.phone
        .set_household_field(h0, model::ProfileField::Phone, a)
        .unwrap();
    other
        .set_household_field(h0, model::ProfileField::Phone, b_value)
        .unwrap();
    t.sync();
    sync_now(&mut other, None, |_| {}).unwrap();
    t.sync();
    assert_eq!(
        t.phone.conflicts().unwrap().len(),
        1,
        "the phones see the conflict"
    );

    let rt = browser::runtime();
    rt.block_on(async {
        let b = Browser::start().await;
        sign_in(&b, &base, OFFICE, PASSWORD).await;
        open(&b, &format!("{base}/households/{h0}")).await;
        let form = format!("#conflicts form[action=\"/households/{h0}/conflicts\"]");
        let text = text_of(&b, "#conflicts").await;
        assert!(
            text.contains("138****5678") && text.contains("139****4321"),
            "both values side by side, masked:\n{text}"
        );
        assert!(
            !text.contains(a) && !text.contains(b_value),
            "masked: {text}"
        );
        screenshot(&b, "household-conflict").await;
        // Keep the value that is not checked by default.
        let radios = find_all(&b, &format!("{form} input[name=choice]")).await;
        assert_eq!(radios.len(), 2, "one choice per value");
        radios[1].click().await.unwrap();
        submit(&b, &submit_of(&form)).await;
        assert_not_error(&b, "resolving the conflict").await;
        assert!(
            find_all(&b, "#conflicts").await.is_empty(),
            "the conflict is resolved"
        );
        screenshot(&b, "household-conflict-resolved").await;
        b.close().await;
    });

    // Both phones take the office's choice at their next sync.
    t.sync();
    sync_now(&mut other, None, |_| {}).unwrap();
    let mine = t.phone.household(h0).unwrap().phone;
    let theirs = other.household(h0).unwrap().phone;
    assert_eq!(mine, theirs, "the phones agree");
    assert!([a, b_value].contains(&mine.as_str()), "{mine}");
    assert!(t.phone.conflicts().unwrap().is_empty());
    assert!(other.conflicts().unwrap().is_empty());
}

#[test]
fn a_grid_workers_web_session_sees_none_of_the_office_pages() {
    let t = town();
    let base = t.url();
    let (h0, _) = t.visited[0];
    let head = t.household(h0).head_name.clone();
    let household_page = format!("/households/{h0}");
    let month_xlsx = format!("/bulletin/{}.xlsx", this_month());
    let mut paths: Vec<&str> = OFFICE_PAGES.to_vec();
    paths.push(&household_page);
    paths.push(&month_xlsx);

    // Nobody signed in: each page sends to the sign-in page, naming where to come back.
    for path in &paths {
        let (status, location, _) = http_get(&base, path, None);
        let location = location.unwrap_or_default();
        assert!(
            status == 303 && location.starts_with("/login?next="),
            "{path} without a session: {status} {location}"
        );
    }

    let rt = browser::runtime();
    rt.block_on(async {
        let b = Browser::start().await;
        type_sign_in(&b, &base, WORKER).await;
        let session = cookie(&b).await;
        let text = page_text(&b).await;
        assert!(
            text.contains("手机"),
            "a grid worker who signs in on the web is told to use the phone app ({}):\n{text}",
            url_of(&b).await
        );
        screenshot(&b, "worker-home").await;
        let nav = find_all(&b, "header nav a").await;
        assert!(nav.is_empty(), "a grid worker's nav has no office links");

        for path in &paths {
            let (status, location, body) = http_get(&base, path, Some(&session));
            let location = location.unwrap_or_default();
            let refused = status == 403
                || (status == 303 && !location.is_empty() && !location.starts_with(path));
            assert!(refused, "{path} for a grid worker: {status} {location}");
            assert!(
                !body.contains(&head),
                "{path} for a grid worker names a household"
            );
        }
        open(&b, &format!("{base}/households")).await;
        let text = page_text(&b).await;
        assert!(
            text.contains("无权"),
            "the 403 page says so in Chinese:\n{text}"
        );
        assert!(!text.contains(&head));
        screenshot(&b, "worker-forbidden").await;
        b.close().await;
    });
}

#[test]
fn a_flagged_visit_reaches_the_phone_and_its_fix_comes_back_to_the_queue() {
    let mut t = town();
    let base = t.url();
    let (h0, v0) = t.visited[0];
    let reason = "承诺书签名看不清，请重新签署";
    let note = "已重新入户，户主重新签署了承诺书";
    let rt = browser::runtime();
    let b = rt.block_on(async {
        let b = Browser::start().await;
        sign_in(&b, &base, OFFICE, PASSWORD).await;
        open(&b, &format!("{base}/review")).await;
        assert_not_error(&b, "the review queue").await;
        let queue = find_all(&b, &format!("#review-queue a[href^=\"/households/{h0}\"]")).await;
        assert!(
            !queue.is_empty(),
            "the review queue lists the visited household"
        );
        screenshot(&b, "review-queue").await;

        // Flag the visit on its household page.
        open(&b, &format!("{base}/households/{h0}")).await;
        let form = format!("form[action=\"/households/{h0}/visits/{v0}/review\"]");
        find(&b, &form).await;
        set_field(&b, &form, "state", "has_issues").await;
        set_field(&b, &form, "reason", reason).await;
        screenshot(&b, "review-form").await;
        submit(&b, &submit_of(&form)).await;
        assert_not_error(&b, "flagging a visit").await;
        screenshot(&b, "review-flagged").await;

        open(&b, &format!("{base}/rectifications")).await;
        let text = page_text(&b).await;
        assert!(
            text.contains(reason),
            "the open rectification shows its reason:\n{text}"
        );
        screenshot(&b, "rectifications-open").await;
        b
    });

    // The worker's phone receives the task at its next sync and records the fix: a
    // new complete visit, named as the fix.
    t.sync();
    let tasks = t.phone.rectifications().unwrap();
    let task = tasks
        .iter()
        .find(|r| r.visit == v0.to_string())
        .unwrap_or_else(|| panic!("the rectification reached the phone: {tasks:?}"));
    assert_eq!(task.household, h0);
    assert_eq!(task.reason, reason);
    assert_eq!(task.source, "review");
    assert_eq!(task.state, "open");
    assert_eq!(task.assignee, WORKER);
    let fix = doorstep_server::demo::complete_visit(&mut t.phone, h0, 40).unwrap();
    let task_id = task.id.clone();
    t.phone
        .fix_rectification(h0, &task_id, fix, note)
        .expect("the fix is recorded");
    t.sync();
    assert!(t.phone.outbox().unwrap().is_empty(), "the fix was sent");
    let after = t.phone.rectifications().unwrap();
    let task = after.iter().find(|r| r.id == task_id).unwrap();
    assert_eq!(task.state, "fixed");
    assert_eq!(task.fix_visit.as_deref(), Some(fix.to_string().as_str()));

    rt.block_on(async {
        // The office sees the fix: in the rectifications, and back in the queue.
        open(&b, &format!("{base}/rectifications")).await;
        let text = page_text(&b).await;
        assert!(
            text.contains(note),
            "the fix's note is on the rectifications page:\n{text}"
        );
        screenshot(&b, "rectifications-fixed").await;
        open(&b, &format!("{base}/review")).await;
        let fix_row =
            format!("#review-queue tr.fix:has(a[href^=\"/households/{h0}#visit-{fix}\"])");
        let text = text_of(&b, &fix_row).await;
        assert!(
            text.contains(reason),
            "the fix is back in the review queue, with the original problem: {text}"
        );
        screenshot(&b, "review-queue-fixed").await;

        // The office approves the fix: the task is closed.
        open(&b, &format!("{base}/households/{h0}")).await;
        let form = format!("form[action=\"/households/{h0}/visits/{fix}/review\"]");
        set_field(&b, &form, "state", "approved").await;
        submit(&b, &submit_of(&form)).await;
        assert_not_error(&b, "approving the fix").await;
        open(&b, &format!("{base}/rectifications")).await;
        let text = text_of(&b, "#rectifications").await;
        assert!(text.contains("已办结"), "the task is closed:\n{text}");
        screenshot(&b, "rectifications-closed").await;
        open(&b, &format!("{base}/review")).await;
        assert!(
            find_all(&b, &fix_row).await.is_empty(),
            "the approved fix left the review queue"
        );
        b.close().await;
    });

    // The phone drops the closed task at its next sync.
    t.sync();
    let left = t.phone.rectifications().unwrap();
    assert!(
        left.iter().all(|r| r.id != task_id),
        "the closed task left the phone's list: {left:?}"
    );
}

#[test]
fn a_supervisor_draws_a_follow_up_sample_and_a_denial_opens_a_rectification() {
    let mut t = town();
    let base = t.url();
    let visits: Vec<String> = t.visited.iter().map(|(_, v)| v.to_string()).collect();
    let phones: Vec<String> = t
        .visited
        .iter()
        .map(|(h, _)| t.household(*h).phone.clone())
        .filter(|p| !p.is_empty())
        .collect();
    let remarks = "户主说没有人上门宣传过";
    let rt = browser::runtime();
    let (b, seed, drawn) = rt.block_on(async {
        let b = Browser::start().await;
        sign_in(&b, &base, SUPERVISOR, PASSWORD).await;
        open(&b, &format!("{base}/follow-up")).await;
        assert_not_error(&b, "the follow-up page").await;
        screenshot(&b, "follow-up").await;
        let draw = async |seed: Option<&str>| {
            open(&b, &format!("{base}/follow-up")).await;
            let form = "form[action=\"/follow-up/rounds\"]";
            set_field(&b, form, "village", &t.village).await;
            set_field(&b, form, "grid", &t.grid).await;
            set_field(&b, form, "method", "count").await;
            set_field(&b, form, "amount", "2").await;
            if let Some(seed) = seed {
                set_field(&b, form, "seed", seed).await;
            }
            submit(&b, &submit_of(form)).await;
            assert_not_error(&b, "drawing a sample").await;
            let url = url_of(&b).await;
            assert!(
                url.contains("/follow-up/rounds/"),
                "drawing leads to the round's page: {url}"
            );
            let seed = text_of(&b, "#seed").await;
            let mut drawn = Vec::new();
            for row in find_all(&b, "#samples tbody tr").await {
                drawn.push(
                    row.attr("data-household")
                        .await
                        .unwrap()
                        .unwrap_or_default(),
                );
            }
            (seed, drawn)
        };
        let (seed, drawn) = draw(None).await;
        let text = page_text(&b).await;
        assert_eq!(
            drawn.len(),
            2,
            "two of the three visited households:\n{text}"
        );
        assert_ne!(drawn[0], drawn[1], "a household at most once per round");
        for p in &phones {
            assert!(
                !text.contains(p.as_str()),
                "numbers stay hidden until revealed"
            );
        }
        screenshot(&b, "follow-up-round").await;
        // The recorded seed draws the same sample again, in the same order.
        let (again_seed, again) = draw(Some(&seed)).await;
        assert_eq!(
            (&again_seed, &again),
            (&seed, &drawn),
            "the seed reproduces the round"
        );
        (b, seed, drawn)
    });

    // A supervisor's phone draws the same sample from the same seed (the core's draw
    // over the same candidates: the visited households not called yet).
    let sup = phone_of(t.dir.path(), &t.server, SUPERVISOR);
    let on_phone = sup
        .draw_follow_up_sample(
            &t.village,
            Some(&t.grid),
            doorstep_core::sampling::SampleSize::Count(2),
            Some(seed.parse().expect("the seed is a number")),
        )
        .unwrap();
    let phone_drawn: Vec<String> = on_phone
        .drawn
        .iter()
        .map(|s| s.household.to_string())
        .collect();
    assert_eq!(
        on_phone.candidates, 3,
        "the three visited households are candidates"
    );
    assert_eq!(
        phone_drawn, drawn,
        "the phone draws the server's sample from its seed"
    );

    rt.block_on(async {
        // Reveal the first household's number (audited), then record the call: the
        // household denies the visit and answers the questions wrong.
        submit(&b, &submit_of("#samples form[action$=\"/reveal\"]")).await;
        assert_not_error(&b, "revealing the number").await;
        let shown = text_of(&b, "#phone").await;
        assert!(
            phones.iter().any(|p| shown.contains(p.as_str())),
            "the revealed number shows: {shown}"
        );
        screenshot(&b, "follow-up-revealed").await;
        let call = "form#call";
        set_yes_no(&b, call, "reached", true).await;
        set_yes_no(&b, call, "confirmed", false).await;
        for q in ["q1", "q2", "q3"] {
            set_yes_no(&b, call, q, false).await;
        }
        set_field(&b, call, "remarks", remarks).await;
        submit(&b, &submit_of(call)).await;
        assert_not_error(&b, "recording a call").await;
        let text = text_of(&b, "#samples").await;
        assert!(
            text.contains(remarks),
            "the call's remarks show on the round:\n{text}"
        );
        screenshot(&b, "follow-up-recorded").await;

        // The denial flags the visit and opens a rectification.
        open(&b, &format!("{base}/rectifications")).await;
        let text = text_of(&b, "#rectifications").await;
        assert!(
            text.contains("电话回访") && text.contains(WORKER),
            "a rectification from the follow-up call, for the worker:\n{text}"
        );
        screenshot(&b, "rectifications-follow-up").await;
        b.close().await;
    });

    // It reaches the worker's phone.
    t.sync();
    let tasks = t.phone.rectifications().unwrap();
    let task = tasks
        .iter()
        .find(|r| r.source == "follow_up")
        .unwrap_or_else(|| panic!("the follow-up's rectification reached the phone: {tasks:?}"));
    assert!(visits.contains(&task.visit), "it names one of the visits");
    assert_eq!(task.state, "open");
}

#[test]
fn a_directive_is_published_and_acknowledged_from_a_liaisons_phone_and_the_web() {
    let t = town();
    import_places(&t);
    let base = t.url();
    let title = "关于近期冒充客服退款诈骗的预警";
    let body = "近期多发冒充电商客服以退款为名的诈骗，请各村、各单位立即签收并推送至各群。";
    let rt = browser::runtime();
    let (b, detail) = rt.block_on(async {
        let b = Browser::start().await;
        sign_in(&b, &base, OFFICE, PASSWORD).await;
        open(&b, &format!("{base}/directives")).await;
        assert_not_error(&b, "the directives page").await;
        let form = "form[action=\"/directives\"]";
        set_field(&b, form, "category", "warning").await;
        set_field(&b, form, "title", title).await;
        set_field(&b, form, "body", body).await;
        set_field(&b, form, "place", &t.village).await;
        set_field(&b, form, "place", POLICE_UNIT).await;
        screenshot(&b, "directive-form").await;
        submit(&b, &submit_of(form)).await;
        assert_not_error(&b, "publishing a directive").await;
        let detail = url_of(&b).await;
        assert!(
            detail.contains("/directives/"),
            "publishing leads to its page: {detail}"
        );
        let text = page_text(&b).await;
        assert!(text.contains(title) && text.contains(&t.village) && text.contains(POLICE_UNIT));
        assert_eq!(
            text.matches("未签收").count(),
            2,
            "neither place has acknowledged yet:\n{text}"
        );
        assert!(!text.contains(LIAISON) && !text.contains(UNIT_LIAISON));
        screenshot(&b, "directive-published").await;
        (b, detail)
    });

    // The village's liaison: on the phone, acknowledged, then pushed on.
    let mut liaison = phone_of(t.dir.path(), &t.server, LIAISON);
    let directives = liaison.directives().unwrap();
    assert_eq!(
        directives.len(),
        1,
        "the liaison's phone holds the directive"
    );
    let d = &directives[0];
    assert_eq!((d.title.as_str(), d.body.as_str()), (title, body));
    assert_eq!(d.category, "warning");
    let id = doorstep_core::directive::directive_id(d).expect("a UUID");
    liaison
        .mark_directive(id, &t.village, MarkKind::Acknowledged)
        .unwrap();
    sync_now(&mut liaison, None, |_| {}).unwrap();
    assert!(
        liaison.outbox().unwrap().is_empty(),
        "the acknowledgement was sent"
    );
    // Not for the unit, whose liaison it is not: refused on the phone or by the server.
    if liaison
        .mark_directive(id, POLICE_UNIT, MarkKind::Acknowledged)
        .is_ok()
    {
        sync_now(&mut liaison, None, |_| {}).unwrap();
        assert!(
            !liaison.refused_changes().unwrap().is_empty(),
            "the server refuses a liaison's mark for another place"
        );
    }

    rt.block_on(async {
        open(&b, &detail).await;
        let text = page_text(&b).await;
        assert!(
            text.contains(LIAISON),
            "the office sees who acknowledged:\n{text}"
        );
        assert_eq!(
            text.matches("未签收").count(),
            1,
            "the unit has not:\n{text}"
        );
        screenshot(&b, "directive-acknowledged").await;
    });

    liaison
        .mark_directive(id, &t.village, MarkKind::Pushed)
        .unwrap();
    sync_now(&mut liaison, None, |_| {}).unwrap();
    assert!(liaison.outbox().unwrap().is_empty(), "the marks were sent");

    // The unit's liaison: on the web.
    rt.block_on(async {
        b.delete_all_cookies().await.unwrap();
        sign_in(&b, &base, UNIT_LIAISON, PASSWORD).await;
        open(&b, &format!("{base}/directives")).await;
        assert_not_error(&b, "a liaison's directives").await;
        let text = page_text(&b).await;
        assert!(text.contains(title), "{text}");
        assert!(
            find_all(&b, "form[action$=\"/acknowledge\"] input[name=place]")
                .await
                .len()
                == 1,
            "one acknowledge button, for the unit's own place"
        );
        screenshot(&b, "directives-liaison").await;
        submit(&b, &submit_of("form[action$=\"/acknowledge\"]")).await;
        assert_not_error(&b, "acknowledging on the web").await;
        open(&b, &format!("{base}/directives")).await;
        submit(&b, &submit_of("form[action$=\"/push\"]")).await;
        assert_not_error(&b, "confirming the push on the web").await;
        screenshot(&b, "directive-liaison-done").await;

        // The office sees both places acknowledged and pushed on.
        b.delete_all_cookies().await.unwrap();
        sign_in(&b, &base, OFFICE, PASSWORD).await;
        open(&b, &detail).await;
        let text = page_text(&b).await;
        assert!(
            text.contains(LIAISON) && text.contains(UNIT_LIAISON),
            "{text}"
        );
        assert!(
            !text.contains("未签收") && !text.contains("未推送"),
            "every place acknowledged and pushed on:\n{text}"
        );
        screenshot(&b, "directive-pushed").await;
        open(&b, &format!("{base}/directives")).await;
        screenshot(&b, "directives-list").await;
        b.close().await;
    });
}

/// Whether a spreadsheet cell holds the text `s`.
fn is_text(cell: &calamine::Data, s: &str) -> bool {
    matches!(cell, calamine::Data::String(v) if v == s)
}

/// The value of a spreadsheet cell as a number (a number, or text holding one).
fn number(cell: &calamine::Data) -> Option<f64> {
    match cell {
        calamine::Data::Int(i) => Some(*i as f64),
        calamine::Data::Float(f) => Some(*f),
        calamine::Data::String(s) => s.trim().replace(',', "").parse().ok(),
        _ => None,
    }
}

#[test]
fn the_monthly_bulletin_exports_and_its_figures_match_the_records() {
    let t = town();
    import_places(&t);
    let base = t.url();
    let month = this_month();
    let (h0, v0) = t.visited[0];
    let households = t.roster.iter().filter(|h| h.village == t.village).count();

    let rt = browser::runtime();
    rt.block_on(async {
        let b = Browser::start().await;
        // The police enter this month's cases and losses of the village.
        sign_in(&b, &base, POLICE, PASSWORD).await;
        open(&b, &format!("{base}/bulletin/cases?month={month}")).await;
        assert_not_error(&b, "the fraud cases form").await;
        let form = "form[action=\"/bulletin/cases\"][method=post]";
        fill(
            &b,
            &format!("{form} input[name=\"cases.{}\"]", t.village),
            "2",
        )
        .await;
        fill(
            &b,
            &format!("{form} input[name=\"losses.{}\"]", t.village),
            "15000.50",
        )
        .await;
        screenshot(&b, "bulletin-cases-form").await;
        submit(&b, &submit_of(form)).await;
        assert_not_error(&b, "entering fraud cases").await;
        let text = page_text(&b).await;
        assert!(
            text.contains(POLICE),
            "the entry names who made it:\n{text}"
        );
        screenshot(&b, "bulletin-cases-saved").await;
        b.delete_all_cookies().await.unwrap();

        // The office flags one visit: one rectification opened this month.
        sign_in(&b, &base, OFFICE, PASSWORD).await;
        open(&b, &format!("{base}/households/{h0}")).await;
        let review = format!("form[action=\"/households/{h0}/visits/{v0}/review\"]");
        set_field(&b, &review, "state", "has_issues").await;
        set_field(&b, &review, "reason", "照片中看不到承诺书").await;
        submit(&b, &submit_of(&review)).await;
        assert_not_error(&b, "flagging a visit").await;

        // The responsible persons: 西河村 is short of lecturers (EXPECTED.json).
        open(&b, &format!("{base}/places")).await;
        let text = page_text(&b).await;
        assert!(
            text.contains("宣讲员不足") && text.contains("西河村"),
            "{text}"
        );
        screenshot(&b, "places").await;

        // The bulletin page: the village's row, each figure a link to its records.
        open(&b, &format!("{base}/bulletin?month={month}")).await;
        assert_not_error(&b, "the bulletin").await;
        screenshot(&b, "bulletin-month").await;
        let row = format!("#bulletin tr[id=\"{}\"]", t.village);
        let cells: Vec<String> = {
            let mut out = Vec::new();
            for c in find_all(&b, &format!("{row} td")).await {
                out.push(c.text().await.unwrap_or_default().trim().to_string());
            }
            out
        };
        assert_eq!(
            cells[0],
            households.to_string(),
            "households on the page: {cells:?}"
        );
        assert_eq!(cells[1], "3", "visited on the page: {cells:?}");
        // 已走访 links to the households visited.
        submit(&b, &format!("{row} td:nth-of-type(2) a")).await;
        let text = page_text(&b).await;
        assert!(
            text.contains("共 3 户"),
            "the visited figure leads to its 3 households:\n{text}"
        );
        screenshot(&b, "bulletin-visited-households").await;

        let session = cookie(&b).await;
        let xlsx = download(&base, &format!("/bulletin/{month}.xlsx"), &session);
        let csv = download(
            &base,
            &format!("/export/visits.csv?month={month}"),
            &session,
        );
        b.close().await;

        // The workbook, read back: the village's row holds the records' figures.
        use calamine::Reader;
        let mut book: calamine::Xlsx<_> =
            calamine::open_workbook_from_rs(Cursor::new(xlsx)).expect("an .xlsx Excel opens");
        let range = book
            .worksheet_range_at(0)
            .expect("a first sheet")
            .expect("its cells");
        let rows: Vec<&[calamine::Data]> = range.rows().collect();
        let header_at = rows
            .iter()
            .position(|r| r.iter().any(|c| is_text(c, "发案数")))
            .expect("a header row naming 发案数");
        let header: Vec<String> = rows[header_at].iter().map(|c| c.to_string()).collect();
        let row = rows
            .iter()
            .find(|r| r.iter().any(|c| is_text(c, &t.village)))
            .unwrap_or_else(|| panic!("no row for {} in the bulletin", t.village));
        let at = |name: &str| {
            let c = header
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("no column {name} in {header:?}"));
            number(&row[c])
        };
        assert_eq!(at("户数"), Some(households as f64), "households");
        assert_eq!(at("已走访户数"), Some(3.0), "visited households");
        assert_eq!(at("本月走访户数"), Some(3.0), "visited this month");
        assert_eq!(at("已签承诺书户数"), Some(3.0), "pledged households");
        let coverage = at("走访覆盖率").expect("coverage");
        assert!(
            (coverage - 3.0 / households as f64).abs() < 1e-9,
            "coverage {coverage}"
        );
        assert_eq!(at("本月发起整改"), Some(1.0), "rectifications opened");
        assert_eq!(at("本月审核通过整改"), Some(0.0), "rectifications approved");
        assert_eq!(at("发案数"), Some(2.0), "cases");
        assert_eq!(at("损失金额（元）"), Some(15000.50), "losses in yuan");
        // The other village of the places list has no cases entered: blank, not 0.
        let other = rows
            .iter()
            .find(|r| r.iter().any(|c| is_text(c, "西河村")))
            .expect("a row for 西河村");
        let cases_col = header.iter().position(|h| h == "发案数").unwrap();
        assert_eq!(
            number(&other[cases_col]),
            None,
            "no cases entered for 西河村"
        );

        // The visits' CSV: UTF-8 with a byte-order mark, one row per visit.
        let text = String::from_utf8(csv).expect("the CSV is UTF-8");
        assert!(
            text.starts_with('\u{feff}'),
            "a BOM, so that Excel reads the Chinese"
        );
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1 + 3, "a header and the three visits:\n{text}");
        assert!(lines[1..].iter().all(|l| l.contains(&t.village)));
        for h in &t.visited {
            let phone = &t.household(h.0).phone;
            assert!(
                phone.is_empty() || !text.contains(phone.as_str()),
                "no phone numbers"
            );
        }
    });
}
