//! The household list (`GET /households`): filters by village, grid, visit status,
//! target group, worker and what the household has (a pledge, a follow-up call, an
//! open omission, a conflict), a search by door number, head of household or the last
//! 4 digits of a phone number, and pages of 50. Phone numbers masked.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::{WebError, WebQuery, WebUser, encode_query, page, town_time};
use crate::access::Permission;
use crate::db::pages::{
    FilterOptions, HAS, HouseholdFilter, HouseholdList, STATUSES, status_label,
};
use crate::http::{AppState, blocking};

/// Rows per page.
pub const PER_PAGE: usize = 50;

/// This page's routes, merged by [`super::routes`].
pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/households", get(list))
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: Option<usize>,
}

/// The Chinese label of a [`HouseholdFilter::has`] value.
fn has_label(has: &str) -> &'static str {
    match has {
        "pledge" => "已签承诺书",
        "follow_up" => "已电话回访",
        "omission" => "有待整改",
        "conflict" => "有冲突待处理",
        _ => "",
    }
}

async fn list(
    State(state): State<AppState>,
    user: WebUser,
    WebQuery(filter): WebQuery<HouseholdFilter>,
    WebQuery(pq): WebQuery<PageQuery>,
) -> Result<Markup, WebError> {
    user.require(Permission::ReadOfficePages)?;
    if !filter.status.is_empty() && !STATUSES.contains(&filter.status.as_str()) {
        return Err(WebError::BadRequest(
            "网址参数中 status（走访状态）的值不对。".into(),
        ));
    }
    if !filter.has.is_empty() && !HAS.contains(&filter.has.as_str()) {
        return Err(WebError::BadRequest("网址参数中 has 的值不对。".into()));
    }
    let db = state.db.clone();
    let p = user.principal.clone();
    let f = filter.clone();
    let page_no = pq.page.unwrap_or(1).max(1);
    let (options, list) = blocking(move || {
        Ok((
            db.filter_options(&p)?,
            db.household_list(&p, &f, page_no, PER_PAGE)?,
        ))
    })
    .await?;
    Ok(page(
        "住户",
        &user.principal,
        body(&filter, &options, &list),
    ))
}

/// The query string of `f`, without the page.
fn query_of(f: &HouseholdFilter) -> String {
    [
        ("village", &f.village),
        ("grid", &f.grid),
        ("status", &f.status),
        ("group", &f.group),
        ("worker", &f.worker),
        ("has", &f.has),
        ("q", &f.q),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}={}", encode_query(v)))
    .collect::<Vec<_>>()
    .join("&")
}

fn select(name: &str, label: &str, current: &str, options: &[(String, String)]) -> Markup {
    html! {
        label { (label)
            select name=(name) {
                option value="" { "全部" }
                @for (value, text) in options {
                    option value=(value) selected[value == current] { (text) }
                }
            }
        }
    }
}

fn body(f: &HouseholdFilter, o: &FilterOptions, list: &HouseholdList) -> Markup {
    let pairs = |v: &[String]| -> Vec<(String, String)> {
        v.iter().map(|s| (s.clone(), s.clone())).collect()
    };
    let mut grids: Vec<(String, String)> = o
        .grids
        .iter()
        .filter(|(v, _)| f.village.is_empty() || *v == f.village)
        .map(|(v, g)| {
            (
                g.clone(),
                if f.village.is_empty() {
                    format!("{v} {g}")
                } else {
                    g.clone()
                },
            )
        })
        .collect();
    grids.dedup_by(|a, b| a.0 == b.0);
    let statuses: Vec<(String, String)> = STATUSES
        .iter()
        .map(|s| (s.to_string(), status_label(s).to_string()))
        .collect();
    let has: Vec<(String, String)> = HAS
        .iter()
        .map(|s| (s.to_string(), has_label(s).to_string()))
        .collect();
    let pages = list.total.div_ceil(list.per_page).max(1);
    let q = query_of(f);
    let link = |n: usize| {
        if q.is_empty() {
            format!("/households?page={n}")
        } else {
            format!("/households?{q}&page={n}")
        }
    };
    html! {
        form.filters method="get" action="/households" {
            (select("village", "村", &f.village, &pairs(&o.villages)))
            (select("grid", "网格", &f.grid, &grids))
            (select("status", "走访状态", &f.status, &statuses))
            (select("group", "重点人群", &f.group, &pairs(&o.groups)))
            (select("worker", "走访人", &f.worker, &pairs(&o.workers)))
            (select("has", "其他", &f.has, &has))
            label { "搜索" input type="search" name="q" value=(f.q) placeholder="门牌号、户主或电话后4位"; }
            button type="submit" { "筛选" }
            a href="/households" { "清除" }
        }
        p.muted { "共 " (list.total) " 户" @if pages > 1 { "，第 " (list.page) " / " (pages) " 页" } }
        div.table-wrap { table {
            thead { tr {
                th { "村" } th { "网格" } th { "门牌号" } th { "户主" } th { "电话" }
                th.num { "人数" } th { "走访状态" } th { "最近走访" } th { "走访人" }
                th { "承诺书" } th.num { "冲突" }
            } }
            tbody {
                @for r in &list.rows {
                    tr {
                        td { (r.village) }
                        td { (r.grid) }
                        td { a href=(format!("/households/{}", r.id)) { (r.door_number) } }
                        td { a href=(format!("/households/{}", r.id)) { (r.head_name) } }
                        td { (r.phone) }
                        td.num { (r.residents) }
                        td { span.badge.ok[r.status == "completed"] { (status_label(&r.status)) } }
                        td { (r.last_visit_ms.map(town_time).unwrap_or_default()) }
                        td.wrap { (r.visitors) }
                        td { @if r.pledged { "已签" } }
                        td.num { @if r.conflicts > 0 { span.badge.warn { (r.conflicts) } } }
                    }
                }
            }
        } }
        @if pages > 1 {
            nav.pager {
                @if list.page > 1 { a href=(link(list.page - 1)) { "上一页" } }
                @if list.page < pages { a href=(link(list.page + 1)) { "下一页" } }
            }
        }
    }
}
