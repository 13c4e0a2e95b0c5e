//! Tests of the web pages through the router (`oneshot`), over a database filled by
//! real phones (the core's store and sync client against the server on a port of its
//! own): sign-in redirects, device tokens refused, CSRF, a grid worker's session
//! refused everywhere, the dashboard's figures, file access by scope, and conflict
//! resolution.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use doorstep_core::model::{DeviceId, Household, HouseholdId, ProfileField, Resident, VisitId};
use doorstep_core::store::Store;
use doorstep_core::sync::{Client, sync_now};
use tower::ServiceExt;

use crate::access::{GridRef, Role, Scope};
use crate::db::ServerDb;
use crate::demo::{complete_visit, demo_visit};

const PASSWORD: &str = "password-1";
const VILLAGE_A: &str = "甲村";
const GRID_A: &str = "甲村第1网格";
const VILLAGE_B: &str = "乙村";
const GRID_B: &str = "乙村第1网格";

/// A server database with five households (three in 甲村, two in 乙村) and accounts:
/// `w1`, `w2` (grid workers of 甲村第1网格), `office`, `sup-a` and `sup-b`
/// (supervisors of 甲村 and 乙村), `leader` (grid leader), `admin`.
struct Fixture {
    _dir: tempfile::TempDir,
    db: Arc<ServerDb>,
    /// 甲村 1号, 2号, 3号, then 乙村 1号, 2号.
    households: Vec<HouseholdId>,
}

fn household(village: &str, grid: &str, door: &str, n: u32) -> Household {
    let mut h = Household::new(HouseholdId::new(), village, grid, door);
    h.head_name = format!("户主{n}");
    h.phone = format!("1380000{n:04}");
    h.residents.insert(
        uuid::Uuid::new_v4().to_string(),
        Resident {
            name: format!("户主{n}"),
            relation: "户主".into(),
            sex: "男".into(),
            birth_date: None,
            id_number: Some(format!("11010119900101{n:04}")),
            phone: Some(format!("1390000{n:04}")),
            target_groups: if n == 1 {
                vec!["老年人".into()]
            } else {
                vec![]
            },
        },
    );
    h
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(ServerDb::open(dir.path()).unwrap());
    let hs = vec![
        household(VILLAGE_A, GRID_A, "1号", 1),
        household(VILLAGE_A, GRID_A, "2号", 2),
        household(VILLAGE_A, GRID_A, "3号", 3),
        household(VILLAGE_B, GRID_B, "1号", 4),
        household(VILLAGE_B, GRID_B, "2号", 5),
    ];
    db.import_households(&hs).unwrap();
    let grid_a = Scope::grids(vec![GridRef::new(VILLAGE_A, GRID_A)]);
    for (name, role, scope) in [
        ("w1", Role::GridWorker, grid_a.clone()),
        ("w2", Role::GridWorker, grid_a.clone()),
        ("leader", Role::GridLeader, grid_a),
        ("office", Role::Office, Scope::town()),
        (
            "sup-a",
            Role::Supervisor,
            Scope::villages(vec![VILLAGE_A.into()]),
        ),
        (
            "sup-b",
            Role::Supervisor,
            Scope::villages(vec![VILLAGE_B.into()]),
        ),
        ("admin", Role::Admin, Scope::town()),
    ] {
        db.add_user(name, PASSWORD, role, &scope, "(test)").unwrap();
    }
    Fixture {
        _dir: dir,
        db,
        households: hs
            .iter()
            .map(|h| HouseholdId::parse(&h.id).unwrap())
            .collect(),
    }
}

/// Serves the fixture's server on a port of its own while `phones` runs (blocking)
/// with its address.
fn with_server<T: Send + 'static>(
    db: &Arc<ServerDb>,
    phones: impl FnOnce(String) -> T + Send + 'static,
) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = db.clone();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::http::serve_router(
            listener,
            crate::http::app(db),
            None,
            async {
                let _ = stopped.await;
            },
        ));
        let out = tokio::task::spawn_blocking(move || phones(url))
            .await
            .unwrap();
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        out
    })
}

fn phone(dir: &Path, url: &str, user: &str) -> Store {
    let mut store = Store::open(dir.join(format!("{user}.db"))).unwrap();
    Client::new(url)
        .sign_in(&mut store, user, PASSWORD)
        .unwrap();
    sync_now(&mut store, None, |_| {}).unwrap();
    store
}

/// The fixture after two phones worked in 甲村: `w1` completed visits (photo, notice,
/// pledge) at 1号 and 2号 and found nobody home at 3号; `w1` and `w2` each changed 1号's
/// phone offline (a conflict). Then one follow-up call (2号) and one open
/// rectification (2号) are put in their tables.
fn visited() -> (Fixture, Vec<VisitId>) {
    let f = fixture();
    let phones = tempfile::tempdir().unwrap();
    let hs = f.households.clone();
    let dir = phones.path().to_path_buf();
    let visits = with_server(&f.db, move |url| {
        let mut p1 = phone(&dir, &url, "w1");
        let mut p2 = phone(&dir, &url, "w2");
        let v1 = complete_visit(&mut p1, hs[0], 1).unwrap();
        let v2 = complete_visit(&mut p1, hs[1], 2).unwrap();
        p1.record_visit(hs[2], demo_visit(3)).unwrap();
        p1.set_household_field(hs[0], ProfileField::Phone, "13911110001")
            .unwrap();
        p2.set_household_field(hs[0], ProfileField::Phone, "13922220002")
            .unwrap();
        for _ in 0..2 {
            sync_now(&mut p1, None, |_| {}).unwrap();
            sync_now(&mut p2, None, |_| {}).unwrap();
        }
        vec![v1, v2]
    });
    {
        let conn = f.db.conn();
        let doc = &f.households[1].0.as_bytes()[..];
        let visit = visits[1].to_string();
        conn.execute(
            "INSERT INTO follow_up_calls (call_id, doc_id, visit_id, by_user, called_at_ms,
                                          reached, confirmed, understood, remarks)
             VALUES ('c1', ?1, ?2, 'sup-a', 1, 1, 1, 0, '')",
            rusqlite::params![doc, visit],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO rectifications (rect_id, doc_id, visit_id, source, reason, opened_by,
                                         opened_at_ms, assignee)
             VALUES ('r1', ?1, ?2, 'follow_up', '没听懂', 'sup-a', 1, 'w1')",
            rusqlite::params![doc, visit],
        )
        .unwrap();
    }
    (f, visits)
}

/// One fixture with the phones' work, shared by the tests that only read.
fn shared() -> &'static (Fixture, Vec<VisitId>) {
    static SHARED: OnceLock<(Fixture, Vec<VisitId>)> = OnceLock::new();
    // Built on a thread of its own: its server needs a runtime, and tests run in one.
    SHARED.get_or_init(|| std::thread::spawn(visited).join().unwrap())
}

fn app(db: &Arc<ServerDb>) -> Router {
    crate::http::app(db.clone()).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4242))))
}

/// A web session: `(cookie header value, csrf token)`.
fn session(db: &ServerDb, user: &str) -> (String, String) {
    let (token, _) = db.sign_in_web(user, PASSWORD).unwrap();
    (format!("doorstep_session={token}"), db.csrf_token(&token))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    headers: &[(header::HeaderName, &str)],
    form: Option<&str>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    let body = match form {
        Some(f) => {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(f.to_string())
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, path: &str, cookie: &str) -> Answer {
    send(app, Method::GET, path, &[(header::COOKIE, cookie)], None).await
}

async fn post(app: &Router, path: &str, cookie: &str, form: &str) -> Answer {
    send(
        app,
        Method::POST,
        path,
        &[(header::COOKIE, cookie)],
        Some(form),
    )
    .await
}

#[tokio::test]
async fn without_a_session_pages_send_to_the_sign_in_page() {
    let f = fixture();
    let app = app(&f.db);
    let a = send(
        &app,
        Method::GET,
        "/households?village=甲村&page=2",
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    // The path only: a query may carry personal data (a searched name).
    assert_eq!(a.location(), "/login?next=/households");
    let a = send(
        &app,
        Method::GET,
        "/households?q=%E5%BC%A0%E4%B8%89",
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/login?next=/households");
    let a = get(&app, "/", "doorstep_session=not-a-token").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/login?next=/");
    let login = send(&app, Method::GET, "/login?next=/households", &[], None).await;
    assert_eq!(login.status, StatusCode::OK);
    let html = login.text();
    assert!(html.contains("<html lang=\"zh-CN\">") && html.contains("name=\"viewport\""));
    assert!(html.contains("value=\"/households\""), "{html}");
    assert_eq!(login.headers[header::CACHE_CONTROL], "no-store");
    // Unknown pages answer the Chinese 404 page; the API's stay empty.
    let a = get(&app, "/no-such-page", "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.text().contains("找不到页面"));
    let a = get(&app, "/v1/no-such-endpoint", "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.is_empty());
    let css = get(&app, "/assets/site.css", "").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

#[tokio::test]
async fn signing_in_sets_the_cookie_and_goes_to_a_local_page_only() {
    let f = fixture();
    let app = app(&f.db);
    let wrong = send(
        &app,
        Method::POST,
        "/login",
        &[],
        Some("username=office&password=nope&next=%2Fhouseholds"),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.text().contains("用户名或密码不对"));
    assert!(!wrong.text().contains("nope"));
    let ok = send(
        &app,
        Method::POST,
        "/login",
        &[],
        Some("username=office&password=password-1&next=%2Fhouseholds%3Fvillage%3D1"),
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), "/households?village=1");
    let cookie = ok.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("doorstep_session=") && cookie.contains("SameSite=Strict"));
    assert!(cookie.contains("HttpOnly"));
    let elsewhere = send(
        &app,
        Method::POST,
        "/login",
        &[],
        Some("username=office&password=password-1&next=%2F%2Fevil.example%2F"),
    )
    .await;
    assert_eq!(elsewhere.location(), "/");
    // A form posted from another site signs nobody in.
    let cross = send(
        &app,
        Method::POST,
        "/login",
        &[
            (header::ORIGIN, "https://evil.example"),
            (header::HOST, "doorstep.local"),
        ],
        Some("username=office&password=password-1"),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    // A grid worker lands on the page that says to use the phone app.
    let worker = send(
        &app,
        Method::POST,
        "/login",
        &[],
        Some("username=w1&password=password-1"),
    )
    .await;
    assert_eq!(worker.location(), "/app");
    let cookie = worker.headers[header::SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap();
    let app_page = get(&app, "/app", cookie).await;
    assert_eq!(app_page.status, StatusCode::OK);
    assert!(app_page.text().contains("手机应用"));
    assert!(!app_page.text().contains("href=\"/households\""));
}

#[tokio::test]
async fn a_phones_device_token_is_refused() {
    let f = fixture();
    let app = app(&f.db);
    let token = f.db.sign_in("w1", PASSWORD, DeviceId::new(), None).unwrap();
    let bearer = format!("Bearer {token}");
    let a = send(
        &app,
        Method::GET,
        "/",
        &[(header::AUTHORIZATION, &bearer)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.text().contains("设备令牌"));
    // In the cookie it names no web session.
    let a = get(&app, "/households", &format!("doorstep_session={token}")).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    // An office session with a bearer header too is refused as well.
    let (cookie, _) = session(&f.db, "office");
    let a = send(
        &app,
        Method::GET,
        "/",
        &[(header::COOKIE, &cookie), (header::AUTHORIZATION, &bearer)],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_post_without_the_sessions_csrf_token_is_refused() {
    let f = fixture();
    let app = app(&f.db);
    let (cookie, csrf) = session(&f.db, "office");
    let (_, other_csrf) = session(&f.db, "office");
    let path = format!(
        "/households/{}/visits/{}/review",
        f.households[0],
        VisitId::new()
    );
    for form in [
        "state=approved".to_string(),
        "state=approved&csrf=".to_string(),
        format!("state=approved&csrf={other_csrf}"),
        format!("state=approved&csrf={}", &csrf[..63]),
    ] {
        let a = post(&app, &path, &cookie, &form).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{form}");
        assert!(a.text().contains("表单已过期"));
    }
    // With the token the form goes through to the database, which knows no such visit.
    let a = post(&app, &path, &cookie, &format!("state=approved&csrf={csrf}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = post(&app, "/logout", &cookie, "csrf=wrong").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = post(&app, "/logout", &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(
        a.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let a = get(&app, "/", &cookie).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "the session is revoked");
    // A form missing a field is a 400 page naming it.
    let (cookie, csrf) = session(&f.db, "office");
    let a = post(&app, &path, &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.text().contains("表单缺少 state 一项"), "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_roles_sessions_get_403_on_every_office_page() {
    let (f, visits) = shared();
    let app = app(&f.db);
    let office = session(&f.db, "office");
    let page = get(&app, &format!("/households/{}", f.households[0]), &office.0).await;
    let html = page.text();
    let photo = html
        .split("/files/photo/")
        .nth(1)
        .map(|s| s[..64].to_string())
        .unwrap();
    let thumb = html
        .split("/files/thumb/")
        .nth(1)
        .map(|s| s[..64].to_string())
        .unwrap();
    let signature = html
        .split("/evidence/")
        .nth(1)
        .map(|s| s.split('/').next().unwrap().to_string())
        .unwrap();
    let id = f.households[0];
    let gets = [
        "/".to_string(),
        "/households".into(),
        "/households?village=甲村".into(),
        format!("/households/{id}"),
        format!("/files/photo/{photo}"),
        format!("/files/thumb/{thumb}"),
        format!("/households/{id}/evidence/{signature}/signature.png"),
    ];
    for user in ["w1", "leader", "admin"] {
        let (cookie, csrf) = session(&f.db, user);
        for path in &gets {
            let a = get(&app, path, &cookie).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{user} {path}");
            assert!(!a.text().contains("户主1"), "{user} {path}");
        }
        let posts = [
            (
                format!("/households/{id}/visits/{}/review", visits[0]),
                format!("state=approved&csrf={csrf}"),
            ),
            (
                format!("/households/{id}/reveal"),
                format!("field=phone&reason=核实身份&csrf={csrf}"),
            ),
            (
                format!("/households/{id}/conflicts"),
                format!("path=%5B%22phone%22%5D&choice=x&csrf={csrf}"),
            ),
        ];
        for (path, form) in &posts {
            let a = post(&app, path, &cookie, form).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{user} {path}");
        }
        let home = get(&app, "/app", &cookie).await;
        assert_eq!(home.status, StatusCode::OK, "{user}");
    }
    let w1 = session(&f.db, "w1");
    let a = get(&app, "/", &w1.0).await;
    assert!(a.text().contains("请使用手机应用") || a.text().contains("手机应用"));
    // The 403 page of a signed-in account shows who is signed in (with the sign-out
    // link) and leads home to the account's own page, not to `/`, itself a 403.
    let html = a.text();
    assert!(html.contains(r#"<a href="/app">返回首页</a>"#), "{html}");
    assert!(
        html.contains("w1 · ") && html.contains(r#"href="/logout""#),
        "{html}"
    );
    // A wrong CSRF token likewise.
    let a = post(
        &app,
        &format!("/households/{id}/reveal"),
        &office.0,
        "field=phone&reason=x&csrf=wrong",
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let html = a.text();
    assert!(html.contains(r#"<a href="/">返回首页</a>"#), "{html}");
    assert!(
        html.contains(r#"<a href="/households">住户</a>"#),
        "the nav: {html}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_counts_coverage_within_the_accounts_scope() {
    let (f, _) = shared();
    let d =
        f.db.dashboard(&f.db.sign_in_web("office", PASSWORD).unwrap().1)
            .unwrap();
    let row = |c: &crate::db::pages::Coverage| {
        (
            c.village.clone(),
            c.households,
            c.visited,
            c.pledged,
            c.checked,
            c.omissions_open,
        )
    };
    assert_eq!(
        d.villages.iter().map(row).collect::<Vec<_>>(),
        // By name, as Unicode orders it: 乙 (U+4E59) before 甲 (U+7532).
        [
            (VILLAGE_B.to_string(), 2, 0, 0, 0, 0),
            (VILLAGE_A.to_string(), 3, 2, 2, 1, 1),
        ]
    );
    assert_eq!(d.grids.len(), 2);
    assert_eq!(d.grids[1].grid.as_deref(), Some(GRID_A));
    assert_eq!(row(&d.total), (String::new(), 5, 2, 2, 1, 1));
    let sup_b = f.db.sign_in_web("sup-b", PASSWORD).unwrap().1;
    let d = f.db.dashboard(&sup_b).unwrap();
    assert_eq!(
        d.villages.iter().map(row).collect::<Vec<_>>(),
        [(VILLAGE_B.to_string(), 2, 0, 0, 0, 0)]
    );

    let app = app(&f.db);
    let (cookie, _) = session(&f.db, "office");
    let a = get(&app, "/", &cookie).await;
    assert_eq!(a.status, StatusCode::OK);
    let html = a.text();
    assert!(html.contains("<svg"), "a chart");
    assert!(html.contains("66.7%"), "甲村 2 of 3");
    // Figures link to the households behind them.
    let village = crate::web::encode_query(VILLAGE_A);
    for link in [
        format!("/households?village={village}&amp;status=completed"),
        format!("/households?village={village}&amp;has=pledge"),
        format!("/households?village={village}&amp;has=follow_up"),
        format!("/households?village={village}&amp;has=omission"),
    ] {
        assert!(html.contains(&link), "{link}");
    }
    let list = |q: &str| {
        let app = app.clone();
        let cookie = cookie.clone();
        let q = q.to_string();
        async move {
            let a = get(&app, &format!("/households?{q}"), &cookie).await;
            assert_eq!(a.status, StatusCode::OK, "{q}");
            let html = a.text();
            html.split("共 ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        }
    };
    let village_q = format!("village={village}");
    assert_eq!(list(&village_q).await, "3");
    assert_eq!(list(&format!("{village_q}&status=completed")).await, "2");
    assert_eq!(list(&format!("{village_q}&status=nobody_home")).await, "1");
    assert_eq!(list("status=none").await, "2");
    assert_eq!(list("has=pledge").await, "2");
    assert_eq!(list("has=follow_up").await, "1");
    assert_eq!(list("has=omission").await, "1");
    assert_eq!(list("has=conflict").await, "1");
    assert_eq!(list("worker=w1").await, "3");
    assert_eq!(
        list(&format!("group={}", crate::web::encode_query("老年人"))).await,
        "1"
    );
    assert_eq!(list("q=0004").await, "1", "the last 4 digits of a phone");
    assert_eq!(
        list(&format!("q={}", crate::web::encode_query("户主5"))).await,
        "1"
    );
    assert_eq!(
        list("q=1380000").await,
        "0",
        "no search by a phone's first digits"
    );
    let a = get(&app, "/households?status=lost", &cookie).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.text().contains("status"));
    let a = get(&app, "/households?page=x", &cookie).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.text().contains("page 一项的值不对"), "{}", a.text());
    // The list masks phones.
    let a = get(&app, "/households", &cookie).await;
    assert!(a.text().contains("138****0004") && !a.text().contains("13800000004"));
    // A supervisor of 乙村 sees 乙村 only.
    let (cookie_b, _) = session(&f.db, "sup-b");
    let a = get(&app, "/households", &cookie_b).await;
    assert!(a.text().contains("共 2 户"), "{}", a.text());
    let a = get(&app, &format!("/households/{}", f.households[0]), &cookie_b).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_huge_page_number_answers_an_empty_page_not_a_panic() {
    let f = fixture();
    let app = app(&f.db);
    let (cookie, _) = session(&f.db, "office");
    for n in ["18446744073709551615", "100001", "100000"] {
        let a = get(&app, &format!("/households?page={n}"), &cookie).await;
        assert_eq!(a.status, StatusCode::OK, "page={n}");
        let html = a.text();
        assert!(html.contains("共 5 户"), "{html}");
        assert!(!html.contains("户主1"), "page {n} lists nobody: {html}");
    }
    let (token, _) = f.db.sign_in_web("office", PASSWORD).unwrap();
    let p = f.db.authenticate_session(&token).unwrap().principal;
    let filter = crate::db::pages::HouseholdFilter::default();
    let list =
        f.db.household_list(&p, &filter, usize::MAX, usize::MAX)
            .unwrap();
    assert_eq!(list.page, crate::db::pages::MAX_PAGE);
    assert_eq!((list.total, list.per_page, list.rows.len()), (5, 200, 0));
    let first = f.db.household_list(&p, &filter, 0, 2).unwrap();
    assert_eq!((first.page, first.rows.len()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_household_page_shows_verified_signatures_and_files_only_in_scope() {
    let (f, _) = shared();
    let app = app(&f.db);
    let (office, _) = session(&f.db, "office");
    let a = get(&app, &format!("/households/{}", f.households[1]), &office).await;
    assert_eq!(a.status, StatusCode::OK);
    let html = a.text();
    assert_eq!(
        html.matches("已核验").count(),
        2,
        "notice and pledge verify"
    );
    assert!(!html.contains("核验失败"));
    assert!(html.contains("110101********0002") && !html.contains("110101199001010002"));
    assert!(html.contains("139****0002") && !html.contains("13900000002"));
    let photo = html.split("/files/photo/").nth(1).unwrap()[..64].to_string();
    let thumb = html.split("/files/thumb/").nth(1).unwrap()[..64].to_string();
    let sig = html
        .split("/evidence/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let id = f.households[1];
    let sig_path = format!("/households/{id}/evidence/{sig}/signature.png");
    for (path, kind) in [
        (format!("/files/photo/{photo}"), "image/jpeg"),
        (format!("/files/thumb/{thumb}"), "image/jpeg"),
        (sig_path.clone(), "image/png"),
    ] {
        let a = get(&app, &path, &office).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert_eq!(a.headers[header::CONTENT_TYPE], kind);
        assert_eq!(a.headers[header::CACHE_CONTROL], "private, no-store");
        assert!(!a.body.is_empty());
    }
    // A thumbnail's hash is no full photo, and the other way round.
    assert_eq!(
        get(&app, &format!("/files/photo/{thumb}"), &office)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // A supervisor of 乙村 gets nothing of 甲村; one of 甲村 does.
    let (sup_b, _) = session(&f.db, "sup-b");
    for path in [
        format!("/files/photo/{photo}"),
        format!("/files/thumb/{thumb}"),
        sig_path.clone(),
    ] {
        let a = get(&app, &path, &sup_b).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            a.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    let (sup_a, _) = session(&f.db, "sup-a");
    assert_eq!(
        get(&app, &format!("/files/photo/{photo}"), &sup_a)
            .await
            .status,
        StatusCode::OK
    );
    let audit = f.db.audit_entries(0, 1000).unwrap();
    assert!(audit.iter().any(|e| e.action == "view_photo"));
    // The signature viewed is audited: the household, the record's ID, no name.
    let viewed = audit
        .iter()
        .find(|e| e.action == "view_signature")
        .expect("a view_signature entry");
    assert_eq!(viewed.target, id.to_string());
    assert_eq!(viewed.detail, serde_json::json!({"evidence": sig}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_reveals_reviews_and_resolves_a_conflict() {
    let (f, visits) = tokio::task::spawn_blocking(visited).await.unwrap();
    let app = app(&f.db);
    let (cookie, csrf) = session(&f.db, "office");
    let id = f.households[0];
    let html = get(&app, &format!("/households/{id}"), &cookie)
        .await
        .text();
    assert!(
        html.contains("联系电话") && html.contains("139****0001") && html.contains("139****0002")
    );
    assert!(!html.contains("13911110001") && !html.contains("13922220002"));
    // Keep the value the page shows second (not Automerge's winner).
    let section = html.split("id=\"conflicts\"").nth(1).unwrap();
    let choices: Vec<&str> = section
        .split("name=\"choice\" value=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert_eq!(choices.len(), 2);
    let kept_masked = section
        .split("<strong>")
        .nth(2)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    let form = format!(
        "path=%5B%22phone%22%5D&choice={}&csrf={csrf}",
        crate::web::encode_query(choices[1])
    );
    let a = post(&app, &format!("/households/{id}/conflicts"), &cookie, &form).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    let doc = f.db.household_doc(id).unwrap().unwrap();
    assert!(doorstep_core::model::conflicts(&doc).is_empty());
    let h = doorstep_core::model::read_household(&doc).unwrap();
    assert_eq!(crate::access::mask_phone(&h.phone), kept_masked);
    // Sent again, the form is stale.
    let a = post(&app, &format!("/households/{id}/conflicts"), &cookie, &form).await;
    assert_eq!(a.status, StatusCode::CONFLICT);

    // Reveal the contact phone: shown once, never cached, audited.
    let a = post(
        &app,
        &format!("/households/{id}/reveal"),
        &cookie,
        &format!(
            "field=phone&reason={}&csrf={csrf}",
            crate::web::encode_query("核实走访")
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text().contains(&h.phone));
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    let a = post(
        &app,
        &format!("/households/{id}/reveal"),
        &cookie,
        &format!("field=phone&reason=&csrf={csrf}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // Review a visit; the page shows it.
    let a = post(
        &app,
        &format!("/households/{id}/visits/{}/review", visits[0]),
        &cookie,
        &format!("state=approved&reason=&csrf={csrf}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(
        a.location()
            .starts_with(&format!("/households/{id}#visit-"))
    );
    let html = get(&app, &format!("/households/{id}"), &cookie)
        .await
        .text();
    assert!(html.contains("审核通过"));
    let a = post(
        &app,
        &format!("/households/{id}/visits/{}/review", visits[0]),
        &cookie,
        &format!("state=has_issues&reason=&csrf={csrf}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let actions: Vec<String> =
        f.db.audit_entries(0, 1000)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
    for action in ["resolve_conflict", "reveal", "review"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}
