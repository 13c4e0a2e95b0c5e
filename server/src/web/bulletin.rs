//! The monthly bulletin and its exports (BULLETIN):
//!
//! - `GET /bulletin?month=YYYY-MM` (`ReadBulletin`): the bulletin's figures per village
//!   and unit and the town's total; every figure links to the records behind it when
//!   the account may open them (a supervisor, who neither publishes nor acknowledges
//!   directives nor enters fraud cases, sees those figures as plain text).
//! - `GET /bulletin/{YYYY-MM}.xlsx` (`ExportReports`): the same as a workbook.
//! - `GET /export/visits.csv?month=YYYY-MM` (`ExportReports`): the month's visits.
//! - `GET /bulletin/cases?month=YYYY-MM`, `POST /bulletin/cases` (`EnterFraudCases`):
//!   the police's (and the office's) entry of fraud cases and losses per village and
//!   unit.
//!
//! Without `month`, the current month of the town's clock (China Standard Time).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    CSRF_FIELD, WebError, WebForm, WebQuery, WebUser, csrf_field, encode_query, page, see_other,
    town_time,
};
use crate::access::Permission;
use crate::db::bulletin::{
    Bulletin, BulletinRow, FraudCasesEntry, MAX_CASES_PER_MONTH, Month, TOTAL_ROW,
    content_disposition, format_yuan, parse_yuan,
};
use crate::http::{AppState, blocking};
use crate::places::PlaceKind;
use doorstep_core::store::now_ms;

/// This page's routes, merged by [`super::routes`].
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/bulletin", get(bulletin))
        .route("/bulletin/cases", get(cases_form).post(save_cases))
        .route("/bulletin/{file}", get(workbook))
        .route("/export/visits.csv", get(visits_csv))
}

#[derive(Deserialize)]
struct MonthQuery {
    #[serde(default)]
    month: String,
    /// After saving the cases form: how many places were saved.
    #[serde(default)]
    saved: Option<usize>,
}

/// The month asked for, or the current one.
fn month_of(q: &str) -> Result<Month, WebError> {
    if q.trim().is_empty() {
        return Ok(Month::of_ms(now_ms()));
    }
    Month::parse(q).map_err(|_| WebError::BadRequest("月份须写作 YYYY-MM，例如 2026-05。".into()))
}

async fn bulletin(
    State(state): State<AppState>,
    user: WebUser,
    WebQuery(q): WebQuery<MonthQuery>,
) -> Result<Markup, WebError> {
    user.require(Permission::ReadBulletin)?;
    let month = month_of(&q.month)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let b = blocking(move || db.monthly_bulletin(&p, &month.to_string())).await?;
    let title = format!("{}月度通报", month.label_zh());
    Ok(page(
        &title,
        &user.principal,
        bulletin_body(&user, month, &b),
    ))
}

/// A figure linked to the records behind it, or plain text when the account may not
/// open them (`href` is `None`): no link leads to a 403 page.
fn figure(value: impl std::fmt::Display, href: Option<String>) -> Markup {
    match href {
        Some(href) => html! { a href=(href) { (value) } },
        None => html! { (value) },
    }
}

/// Which of the bulletin's link targets the account may open.
#[derive(Clone, Copy)]
struct MayOpen {
    /// `/directives` (`PublishDirective` or `AcknowledgeDirective`).
    directives: bool,
    /// `/bulletin/cases` (`EnterFraudCases`).
    cases: bool,
}

impl MayOpen {
    fn of(who: &crate::access::Principal) -> Self {
        Self {
            directives: who.may_at_all(Permission::PublishDirective)
                || who.may_at_all(Permission::AcknowledgeDirective),
            cases: who.may_at_all(Permission::EnterFraudCases),
        }
    }
}

/// Links of a row's figures: `place` is `None` on the total row (all places).
struct Links<'a> {
    place: Option<&'a str>,
    month: Month,
    may: MayOpen,
}

impl Links<'_> {
    fn households(&self, extra: &str) -> String {
        let mut q: Vec<String> = Vec::new();
        if let Some(p) = self.place {
            q.push(format!("village={}", encode_query(p)));
        }
        if !extra.is_empty() {
            q.push(extra.into());
        }
        format!("/households?{}", q.join("&"))
    }

    fn rectifications(&self, which: &str) -> String {
        let mut q = vec![format!("{which}={}", self.month)];
        if let Some(p) = self.place {
            q.push(format!("village={}", encode_query(p)));
        }
        format!("/rectifications?{}", q.join("&"))
    }

    /// The tasks closed in the month (the approved fixes are among them).
    fn rectifications_closed(&self) -> String {
        let mut q = vec![format!("closed={}", self.month)];
        if let Some(p) = self.place {
            q.push(format!("village={}", encode_query(p)));
        }
        q.push("state=closed".into());
        format!("/rectifications?{}", q.join("&"))
    }

    fn directives(&self) -> Option<String> {
        self.may.directives.then(|| match self.place {
            Some(p) => format!("/directives?place={}", encode_query(p)),
            None => "/directives".into(),
        })
    }

    fn cases(&self) -> Option<String> {
        let anchor = self
            .place
            .map(|p| format!("#{}", encode_query(p)))
            .unwrap_or_default();
        self.may
            .cases
            .then(|| format!("/bulletin/cases?month={}{anchor}", self.month))
    }
}

fn bulletin_body(user: &WebUser, month: Month, b: &Bulletin) -> Markup {
    let who = &user.principal;
    let may_export = who.may_at_all(Permission::ExportReports);
    let may_enter = who.may_at_all(Permission::EnterFraudCases);
    let may_open = MayOpen::of(who);
    let not_entered: Vec<&str> = b
        .rows
        .iter()
        .filter(|r| r.fraud_cases.is_none())
        .map(|r| r.place.as_str())
        .collect();
    html! {
        form.filters method="get" action="/bulletin" {
            label { "月份" input type="month" name="month" value=(month.to_string()); }
            button type="submit" { "查看" }
            a href=(format!("/bulletin?month={}", month.previous())) { "‹ 上月" }
            a href=(format!("/bulletin?month={}", month.next())) { "下月 ›" }
            @if may_export {
                a.button id="bulletin-xlsx" href=(format!("/bulletin/{month}.xlsx")) { "导出 Excel" }
                a.button id="visits-csv" href=(format!("/export/visits.csv?month={month}")) { "导出本月走访记录（CSV）" }
            }
            @if may_enter {
                a href=(format!("/bulletin/cases?month={month}")) { "录入发案数" }
            }
        }
        p.muted {
            "统计月份按北京时间计：" (town_time(month.start_ms())) " 至 " (town_time(month.end_ms()))
            "。户数、已走访、承诺书为截至月末的累计；回访、整改、指令签收、发案为本月数。"
            "“本月审核通过”为本月经办公室审核通过而办结的整改；“未签收”只计已过签收时限仍未签收的指令。"
            "点击数字可查看对应记录。数据截至 " (town_time(b.generated_at_ms)) "。"
        }
        @if !not_entered.is_empty() {
            p.error id="cases-missing" {
                "本月尚未录入发案数：" (not_entered.join("、"))
            }
        }
        div.table-wrap { table id="bulletin" {
            thead {
                tr {
                    th rowspan="2" { "村（单位）" }
                    th colspan="5" { "入户宣传" }
                    th colspan="5" { "电话回访" }
                    th colspan="2" { "整改" }
                    th colspan="4" { "指令签收" }
                    th colspan="2" { "发案" }
                }
                tr {
                    th.num { "户数" } th.num { "已走访" } th.num { "本月走访" } th.num { "覆盖率" } th.num { "已签承诺书" }
                    th.num { "回访" } th.num { "接通" } th.num { "确认走访" } th.num { "否认走访" } th.num { "未理解" }
                    th.num { "本月发起" } th.num { "本月审核通过" }
                    th.num { "应签收" } th.num { "按时" } th.num { "逾期" } th.num { "未签收" }
                    th.num { "发案数" } th.num { "损失（元）" }
                }
            }
            tbody {
                @for r in &b.rows { (row(r, month, may_open, false)) }
            }
            tfoot { (row(&b.total, month, may_open, true)) }
        } }
    }
}

fn row(r: &BulletinRow, month: Month, may: MayOpen, total: bool) -> Markup {
    let l = Links {
        place: (!total).then_some(r.place.as_str()),
        month,
        may,
    };
    let unit = r.kind == Some(PlaceKind::Unit);
    let village_figure = |v: u64, href: String| -> Markup {
        if unit {
            html! { span.muted { "—" } }
        } else {
            figure(v, Some(href))
        }
    };
    html! {
        tr id=[(!total).then_some(r.place.as_str())] {
            th {
                @if total { (TOTAL_ROW) } @else {
                    (r.place)
                    @if unit { " " span.badge { "单位" } }
                }
            }
            td.num { (village_figure(r.households, l.households(""))) }
            td.num { (village_figure(r.visited, l.households("status=completed"))) }
            td.num { (village_figure(r.visited_in_month, l.households("status=completed"))) }
            td.num { @if unit { span.muted { "—" } } @else { (r.coverage_text()) } }
            td.num { (village_figure(r.pledged, l.households("has=pledge"))) }
            td.num { (village_figure(r.calls_made, l.households("has=follow_up"))) }
            td.num { (village_figure(r.calls_reached, l.households("has=follow_up"))) }
            td.num { (village_figure(r.calls_confirmed, l.households("has=follow_up"))) }
            td.num.error[r.calls_denied > 0] { (village_figure(r.calls_denied, l.households("has=follow_up"))) }
            td.num.error[r.calls_not_understood > 0] { (village_figure(r.calls_not_understood, l.households("has=follow_up"))) }
            td.num { (village_figure(r.rectifications_opened, l.rectifications("opened"))) }
            td.num { (village_figure(r.rectifications_approved, l.rectifications_closed())) }
            td.num { (figure(r.directives_due, l.directives())) }
            td.num { (figure(r.directives_on_time, l.directives())) }
            td.num.error[r.directives_late > 0] { (figure(r.directives_late, l.directives())) }
            td.num.error[r.directives_unacknowledged > 0] { (figure(r.directives_unacknowledged, l.directives())) }
            td.num {
                @match r.fraud_cases {
                    Some(c) => { (figure(c, l.cases())) }
                    None => {
                        @match l.cases() {
                            Some(href) => { a.muted href=(href) { "未录入" } }
                            None => { span.muted { "未录入" } }
                        }
                    }
                }
            }
            td.num {
                @match r.losses_fen {
                    Some(f) => { (figure(format_yuan(f), l.cases())) }
                    None => { span.muted { "—" } }
                }
            }
        }
    }
}

/// A download: the bytes with their type and a Chinese file name (ASCII fallback).
fn download(bytes: Vec<u8>, content_type: &'static str, name: &str, fallback: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                content_disposition(name, fallback),
            ),
        ],
        bytes,
    )
        .into_response()
}

async fn workbook(
    State(state): State<AppState>,
    user: WebUser,
    Path(file): Path<String>,
) -> Result<Response, WebError> {
    let month = file
        .strip_suffix(".xlsx")
        .and_then(|m| Month::parse(m).ok())
        .ok_or(WebError::NotFound)?;
    user.require(Permission::ExportReports)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let bytes = blocking(move || db.bulletin_xlsx(&p, &month.to_string())).await?;
    Ok(download(
        bytes,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        &format!("月度通报-{month}.xlsx"),
        &format!("bulletin-{month}.xlsx"),
    ))
}

async fn visits_csv(
    State(state): State<AppState>,
    user: WebUser,
    WebQuery(q): WebQuery<MonthQuery>,
) -> Result<Response, WebError> {
    user.require(Permission::ExportReports)?;
    let month = month_of(&q.month)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let bytes = blocking(move || db.visits_csv(&p, &month.to_string())).await?;
    Ok(download(
        bytes,
        "text/csv; charset=utf-8",
        &format!("走访记录-{month}.csv"),
        &format!("visits-{month}.csv"),
    ))
}

async fn cases_form(
    State(state): State<AppState>,
    user: WebUser,
    WebQuery(q): WebQuery<MonthQuery>,
) -> Result<Markup, WebError> {
    user.require(Permission::EnterFraudCases)?;
    let month = month_of(&q.month)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let entries = blocking(move || db.fraud_cases(&p, &month.to_string())).await?;
    let title = format!("{}发案数录入", month.label_zh());
    Ok(page(
        &title,
        &user.principal,
        cases_body(&user, month, &entries, q.saved),
    ))
}

fn cases_body(
    user: &WebUser,
    month: Month,
    entries: &[FraudCasesEntry],
    saved: Option<usize>,
) -> Markup {
    let open = month <= Month::of_ms(now_ms());
    html! {
        form.filters method="get" action="/bulletin/cases" {
            label { "月份" input type="month" name="month" value=(month.to_string()); }
            button type="submit" { "查看" }
            @if user.principal.may_at_all(Permission::ReadBulletin) {
                a href=(format!("/bulletin?month={month}")) { "返回月度通报" }
            }
        }
        @if let Some(n) = saved {
            p.ok id="cases-saved" { "已保存 " (n) " 个村（单位）的发案数。" }
        }
        @if entries.is_empty() {
            p.empty { "没有可录入的村（单位）：责任人名单尚未导入，或您的管辖范围内没有村（单位）。" }
        } @else if !open {
            p.error { "该月尚未开始，不能录入。" }
        } @else {
            p.muted {
                "填写本月各村（单位）的发案数和损失金额（元，可带两位小数）。留空表示不录入；"
                "再次录入会覆盖上次的数字，改动记入审计日志。"
            }
            form method="post" action="/bulletin/cases" {
                (csrf_field(user))
                input type="hidden" name="month" value=(month.to_string());
                div.table-wrap { table id="fraud-cases" {
                    thead { tr {
                        th { "村（单位）" } th { "类别" } th.num { "发案数" } th.num { "损失金额（元）" }
                        th { "上次录入" }
                    } }
                    tbody {
                        @for e in entries {
                            tr id=(e.place) {
                                td { (e.place) }
                                td { (e.kind.label_zh()) }
                                td.num {
                                    input type="number" min="0" max=(MAX_CASES_PER_MONTH) step="1"
                                        name=(format!("cases.{}", e.place))
                                        value=[e.cases]
                                        aria-label=(format!("{}发案数", e.place));
                                }
                                td.num {
                                    input type="text" inputmode="decimal"
                                        name=(format!("losses.{}", e.place))
                                        value=[e.losses_fen.map(format_yuan)]
                                        aria-label=(format!("{}损失金额", e.place));
                                }
                                td.muted {
                                    @if let (Some(by), Some(at)) = (&e.entered_by, e.entered_at_ms) {
                                        (by) " · " (town_time(at))
                                    } @else { "未录入" }
                                }
                            }
                        }
                    }
                } }
                p { button type="submit" { "保存" } }
            }
        }
    }
}

/// What one place's inputs say: nothing (both blank), or cases and losses in fen.
fn parse_entry(place: &str, cases: &str, losses: &str) -> Result<Option<(u32, i64)>, WebError> {
    let (cases, losses) = (cases.trim(), losses.trim());
    if cases.is_empty() && losses.is_empty() {
        return Ok(None);
    }
    let n: u32 = cases
        .parse()
        .ok()
        .filter(|n| *n <= MAX_CASES_PER_MONTH)
        .ok_or_else(|| {
            WebError::BadRequest(format!(
                "{place}的发案数须为 0 到 {MAX_CASES_PER_MONTH} 的整数。"
            ))
        })?;
    let fen = if losses.is_empty() {
        0
    } else {
        parse_yuan(losses).ok_or_else(|| {
            WebError::BadRequest(format!(
                "{place}的损失金额须为不小于 0 的金额（元），最多两位小数，例如 1234.56。"
            ))
        })?
    };
    if n == 0 && fen > 0 {
        return Err(WebError::BadRequest(format!(
            "{place}发案数为 0，损失金额应为 0。"
        )));
    }
    Ok(Some((n, fen)))
}

async fn save_cases(
    State(state): State<AppState>,
    user: WebUser,
    WebForm(form): WebForm<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    user.require(Permission::EnterFraudCases)?;
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    user.check_csrf(field(CSRF_FIELD).unwrap_or(""))?;
    let month = Month::parse(field("month").unwrap_or(""))
        .map_err(|_| WebError::BadRequest("表单中 month（月份）一项的值不对。".into()))?;
    if month > Month::of_ms(now_ms()) {
        return Err(WebError::BadRequest("该月尚未开始，不能录入。".into()));
    }
    let db = state.db.clone();
    let p = user.principal.clone();
    let current = blocking(move || db.fraud_cases(&p, &month.to_string())).await?;
    // Every input checked before anything is written.
    let mut changes: Vec<(String, u32, i64)> = Vec::new();
    for (key, _) in form.iter().filter(|(k, _)| k.starts_with("cases.")) {
        let place = &key["cases.".len()..];
        let entry = current.iter().find(|e| e.place == place).ok_or_else(|| {
            WebError::BadRequest("表单中有不在您管辖范围内或不存在的村（单位）。".into())
        })?;
        let losses = field(&format!("losses.{place}")).unwrap_or("");
        let Some((cases, fen)) = parse_entry(place, field(key).unwrap_or(""), losses)? else {
            continue;
        };
        if entry.cases == Some(cases) && entry.losses_fen == Some(fen) {
            continue; // unchanged: no new audit entry
        }
        changes.push((place.to_string(), cases, fen));
    }
    let saved = changes.len();
    let db = state.db.clone();
    let p = user.principal.clone();
    blocking(move || {
        for (place, cases, fen) in &changes {
            db.record_fraud_cases(&p, &month.to_string(), place, *cases, *fen)?;
        }
        Ok(())
    })
    .await?;
    Ok(see_other(&format!(
        "/bulletin/cases?month={month}&saved={saved}"
    )))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::access::{Role, Scope};
    use crate::db::ServerDb;

    const PASSWORD: &str = "password-1";

    /// A server with the responsible persons of two villages and the police station,
    /// one household in each village, and accounts `office`, `sup` (supervisor of the
    /// town), `police` (甲村 and the station) and `worker` (grid worker).
    fn server() -> (tempfile::TempDir, Arc<ServerDb>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(ServerDb::open(dir.path()).unwrap());
        db.import_households(&[
            doorstep_core::model::Household::new(
                doorstep_core::model::HouseholdId::new(),
                "甲村",
                "甲村第1网格",
                "1号",
            ),
            doorstep_core::model::Household::new(
                doorstep_core::model::HouseholdId::new(),
                "乙村",
                "乙村第1网格",
                "1号",
            ),
        ])
        .unwrap();
        let bytes = crate::places::tests::workbook(&[
            [
                "甲村",
                "2300",
                "甲一",
                "书记",
                "甲二",
                "甲三",
                "讲一、讲二、讲三",
            ],
            ["乙村", "1001", "乙一", "书记", "乙二", "乙三", "讲四"],
            ["镇派出所", "29", "丙一", "所长", "丙二", "丙三", "讲五"],
        ]);
        let places = crate::places::read_places_bytes(&bytes).unwrap().places;
        let office = crate::access::Principal {
            user_id: 0,
            username: "office".into(),
            role: Role::Office,
            scope: Scope::town(),
        };
        db.import_places(&office, &places).unwrap();
        let police = Scope {
            villages: vec!["甲村".into()],
            units: vec!["镇派出所".into()],
            ..Scope::default()
        };
        for (name, role, scope) in [
            ("office", Role::Office, Scope::town()),
            ("sup", Role::Supervisor, Scope::town()),
            ("police", Role::Police, police),
            (
                "worker",
                Role::GridWorker,
                Scope::villages(vec!["甲村".into()]),
            ),
        ] {
            db.add_user(name, PASSWORD, role, &scope, "(test)").unwrap();
        }
        (dir, db)
    }

    /// `(cookie, csrf)` of a new web session of `user`.
    fn session(db: &ServerDb, user: &str) -> (String, String) {
        let (token, _) = db.sign_in_web(user, PASSWORD).unwrap();
        (format!("doorstep_session={token}"), db.csrf_token(&token))
    }

    async fn send(
        db: &Arc<ServerDb>,
        method: Method,
        path: &str,
        cookie: &str,
        form: Option<String>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let app = crate::http::app(db.clone())
            .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4242))));
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::COOKIE, cookie);
        let body = match form {
            Some(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(f)
            }
            None => Body::empty(),
        };
        let resp = app.oneshot(req.body(body).unwrap()).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap()
            .to_vec();
        (status, headers, body)
    }

    async fn get(db: &Arc<ServerDb>, path: &str, cookie: &str) -> (StatusCode, String) {
        let (status, _, body) = send(db, Method::GET, path, cookie, None).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn places_page_flags_the_places_short_of_lecturers() {
        let (_dir, db) = server();
        let (office, _) = session(&db, "office");
        let (status, html) = get(&db, "/places", &office).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("宣讲员不足 1 个：乙村"), "{html}");
        assert!(html.contains(r#"<tr class="short" id="乙村">"#), "{html}");
        assert_eq!(
            html.matches(r#"<span class="badge bad">宣讲员不足</span>"#)
                .count(),
            1
        );
        for user in ["sup", "police", "worker"] {
            let (cookie, _) = session(&db, user);
            assert_eq!(
                get(&db, "/places", &cookie).await.0,
                StatusCode::FORBIDDEN,
                "{user}"
            );
        }
    }

    #[tokio::test]
    async fn the_bulletin_links_its_figures_and_exports_in_chinese() {
        let (_dir, db) = server();
        let (office, _) = session(&db, "office");
        let month = Month::of_ms(now_ms());
        let (status, html) = get(&db, &format!("/bulletin?month={month}"), &office).await;
        assert_eq!(status, StatusCode::OK);
        let jia = encode_query("甲村");
        for link in [
            format!("/households?village={jia}&amp;status=completed"),
            format!("/households?village={jia}&amp;has=pledge"),
            format!("/rectifications?opened={month}&amp;village={jia}"),
            format!("/rectifications?closed={month}&amp;village={jia}&amp;state=closed"),
            format!("/directives?place={jia}"),
            format!("/bulletin/cases?month={month}#{jia}"),
        ] {
            assert!(html.contains(&link), "{link} missing");
        }
        assert!(html.contains("本月尚未录入发案数：甲村、乙村、镇派出所"));
        assert!(html.contains(TOTAL_ROW));
        let (status, _) = get(&db, "/bulletin?month=2024-13", &office).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (status, headers, body) = send(
            &db,
            Method::GET,
            &format!("/bulletin/{month}.xlsx"),
            &office,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let disposition = headers[header::CONTENT_DISPOSITION].to_str().unwrap();
        assert_eq!(
            disposition,
            content_disposition(
                &format!("月度通报-{month}.xlsx"),
                &format!("bulletin-{month}.xlsx")
            )
        );
        assert!(disposition.contains("filename*=UTF-8''%E6%9C%88%E5%BA%A6"));
        assert!(body.starts_with(b"PK"), "a zip archive");
        let (status, headers, body) = send(
            &db,
            Method::GET,
            &format!("/export/visits.csv?month={month}"),
            &office,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        assert!(body.starts_with(b"\xEF\xBB\xBF"));
        assert_eq!(
            get(&db, "/bulletin/2024-05.pdf", &office).await.0,
            StatusCode::NOT_FOUND
        );

        // A supervisor reads the bulletin but exports nothing, and sees no link to a
        // page it may not open (directives, fraud cases); a worker reads nothing.
        let (sup, _) = session(&db, "sup");
        let (status, html) = get(&db, "/bulletin", &sup).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains(&format!("/households?village={jia}")),
            "{html}"
        );
        for link in ["href=\"/directives", "href=\"/bulletin/cases", ".xlsx\""] {
            assert!(!html.contains(link), "{link} shown to a supervisor");
        }
        for path in ["/directives", "/bulletin/cases"] {
            assert_eq!(
                get(&db, path, &sup).await.0,
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
        assert!(html.contains("未录入"), "the figure is shown, unlinked");
        // The dashboard's units likewise: linked for the office, plain for a supervisor.
        let station = format!("/directives?place={}", encode_query("镇派出所"));
        let (status, html) = get(&db, "/", &office).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains(&station), "{html}");
        let (status, html) = get(&db, "/", &sup).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("镇派出所"), "{html}");
        assert!(!html.contains("href=\"/directives"), "{html}");
        let xlsx = format!("/bulletin/{month}.xlsx");
        assert_eq!(get(&db, &xlsx, &sup).await.0, StatusCode::FORBIDDEN);
        assert_eq!(
            get(&db, "/export/visits.csv", &sup).await.0,
            StatusCode::FORBIDDEN
        );
        let (worker, _) = session(&db, "worker");
        assert_eq!(
            get(&db, "/bulletin", &worker).await.0,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn police_enter_the_cases_of_their_places() {
        let (_dir, db) = server();
        let (police, csrf) = session(&db, "police");
        let month = Month::of_ms(now_ms());
        let (status, html) = get(&db, &format!("/bulletin/cases?month={month}"), &police).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains(r#"id="甲村""#) && html.contains(r#"id="镇派出所""#));
        assert!(!html.contains(r#"id="乙村""#), "乙村 is outside the scope");

        let form = |csrf: &str, jia_cases: &str, jia_losses: &str| {
            format!(
                "csrf={csrf}&month={month}&cases.{jia}={jia_cases}&losses.{jia}={jia_losses}\
                 &cases.{st}=0&losses.{st}=",
                jia = encode_query("甲村"),
                st = encode_query("镇派出所"),
            )
        };
        let post = |body: String| {
            let db = db.clone();
            let police = police.clone();
            async move { send(&db, Method::POST, "/bulletin/cases", &police, Some(body)).await }
        };
        let (status, _, _) = post(form("wrong", "2", "1234.56")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "CSRF");
        let (status, _, body) = post(form(&csrf, "0", "100")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("甲村发案数为 0，损失金额应为 0。"));
        let (status, _, body) = post(form(&csrf, "2", "12.345")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("甲村的损失金额"));
        let (status, html) = get(&db, "/bulletin", &police).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "the police enter cases but do not read the bulletin"
        );
        // The 403 page leads home to the police's own page, with their nav.
        assert!(
            html.contains(r#"<a href="/bulletin/cases">返回首页</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/bulletin/cases">发案录入</a>"#),
            "{html}"
        );

        let (status, headers, _) = post(form(&csrf, "2", "1,234.56")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            headers[header::LOCATION],
            format!("/bulletin/cases?month={month}&saved=2").as_str()
        );
        // The same again changes nothing.
        let (_, headers, _) = post(form(&csrf, "2", "1234.56")).await;
        assert!(
            headers[header::LOCATION]
                .to_str()
                .unwrap()
                .ends_with("saved=0")
        );
        let (office, _) = session(&db, "office");
        let (_, html) = get(&db, &format!("/bulletin?month={month}"), &office).await;
        assert!(html.contains(">1234.56</a>"), "{html}");
        assert!(html.contains("本月尚未录入发案数：乙村"));

        // A place outside the scope is refused whole.
        let sneaky = format!(
            "csrf={csrf}&month={month}&cases.{yi}=1&losses.{yi}=1",
            yi = encode_query("乙村")
        );
        let (status, _, _) = post(sneaky).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}
