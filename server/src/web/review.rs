//! The office's review queue and the rectification tasks (整改):
//!
//! - `GET /review`: visits waiting for review, fixes of rectification tasks first
//!   ("the worker's fix comes back into the queue"), each linking to the household
//!   page where the office sees the photos and signatures and reviews
//!   ([`ServerDb::review_queue`]);
//! - `GET /rectifications?state=&village=&opened=&closed=`: the tasks, open, fixed
//!   (waiting for the office) or closed, with who answers for each
//!   ([`ServerDb::rectifications`]).
//!
//! [`ServerDb::review_queue`]: crate::db::ServerDb::review_queue
//! [`ServerDb::rectifications`]: crate::db::ServerDb::rectifications

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::{WebError, WebQuery, WebUser, encode_query, page, town_time};
use crate::access::Permission;
use crate::db::office::{RectificationFilter, month_bounds};
use crate::db::pages::status_label;
use crate::http::{AppState, blocking};

/// This page's routes, merged by [`super::routes`].
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/review", get(queue))
        .route("/rectifications", get(rectifications))
}

async fn queue(State(state): State<AppState>, user: WebUser) -> Result<Markup, WebError> {
    user.require(Permission::WriteReview)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let rows = blocking(move || db.review_queue(&p, 500)).await?;
    let fixes = rows.iter().filter(|r| r.fixes.is_some()).count();
    Ok(page(
        "审核",
        &user.principal,
        html! {
            p.hint {
                "待审核 " strong { (rows.len()) } " 条，其中整改后待复核 " strong { (fixes) }
                " 条（排在最前）。点“审核”进入住户页面，查看照片和签名后标记已接收、通过或有问题；"
                "“有问题”会生成整改任务，下次同步时发到走访人员的手机上。"
            }
            @if rows.is_empty() {
                p.empty { "没有待审核的走访。" }
            } @else {
                div.table-wrap { table #review-queue {
                    thead { tr {
                        th { "村" } th { "网格" } th { "门牌" } th { "走访人员" } th { "结果" }
                        th { "结束时间" } th { "照片" } th { "签字" } th { "说明" } th {}
                    } }
                    tbody {
                        @for r in &rows {
                            tr.fix[r.fixes.is_some()] {
                                td { (r.village) } td { (r.grid) } td { (r.door_number) }
                                td { (r.visitor) } td { (status_label(&r.outcome)) }
                                td { (r.finished_at_ms.map(town_time).unwrap_or_default()) }
                                td.num { (r.photos) } td.num { (r.evidence) }
                                td.wrap {
                                    @if let Some(reason) = &r.fixes_reason {
                                        span.badge.warn { "整改后待复核" } " 原问题：" (reason)
                                    }
                                }
                                td { a.button href=(format!("/households/{}#visit-{}", r.household, r.visit_id)) { "审核" } }
                            }
                        }
                    }
                } }
            }
        },
    ))
}

#[derive(Deserialize)]
struct RectQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    village: String,
    /// Opened in this month, `YYYY-MM`.
    #[serde(default)]
    opened: String,
    /// Closed in this month, `YYYY-MM`.
    #[serde(default)]
    closed: String,
    /// Fixed in this month, `YYYY-MM`.
    #[serde(default)]
    fixed: String,
}

/// The Chinese name of a rectification state.
pub fn rect_state_label(state: &str) -> &'static str {
    match state {
        "open" => "待整改",
        "fixed" => "已整改待复核",
        "closed" => "已办结",
        _ => "",
    }
}

async fn rectifications(
    State(state): State<AppState>,
    user: WebUser,
    WebQuery(q): WebQuery<RectQuery>,
) -> Result<Markup, WebError> {
    user.require(Permission::ReadOfficePages)?;
    if !q.state.is_empty() && rect_state_label(&q.state).is_empty() {
        return Err(WebError::BadRequest(
            "网址参数中 state（整改状态）的值不对。".into(),
        ));
    }
    for m in [&q.opened, &q.closed, &q.fixed] {
        if !m.is_empty() && month_bounds(m).is_err() {
            return Err(WebError::BadRequest(
                "月份须写作 YYYY-MM，例如 2026-11。".into(),
            ));
        }
    }
    let some = |s: &String| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let filter = RectificationFilter {
        state: some(&q.state),
        village: some(&q.village),
        opened_in: some(&q.opened),
        closed_in: some(&q.closed),
        fixed_in: some(&q.fixed),
        household: None,
    };
    let db = state.db.clone();
    let p = user.principal.clone();
    let rows = blocking(move || db.rectifications(&p, &filter)).await?;
    Ok(page(
        "整改",
        &user.principal,
        html! {
            form.filters method="get" action="/rectifications" {
                label { "状态" select name="state" {
                    option value="" { "全部" }
                    @for s in ["open", "fixed", "closed"] {
                        option value=(s) selected[q.state == s] { (rect_state_label(s)) }
                    }
                } }
                label { "村" input type="text" name="village" value=(q.village); }
                label { "开出月份" input type="month" name="opened" value=(q.opened); }
                label { "整改月份" input type="month" name="fixed" value=(q.fixed); }
                label { "办结月份" input type="month" name="closed" value=(q.closed); }
                button type="submit" { "筛选" }
            }
            p.hint { "共 " strong #rect-count { (rows.len()) } " 项。" }
            div.table-wrap { table #rectifications {
                thead { tr {
                    th { "状态" } th { "村" } th { "网格" } th { "门牌" } th { "来源" }
                    th { "问题" } th { "开出" } th { "责任人" } th { "整改说明" } th { "办结" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { span.badge.bad[r.state == "open"].warn[r.state == "fixed"].ok[r.state == "closed"] { (rect_state_label(&r.state)) } }
                            td { a href=(format!("/rectifications?village={}", encode_query(&r.village))) { (r.village) } }
                            td { (r.grid) }
                            td { a href=(format!("/households/{}#visit-{}", r.household, r.visit_id)) { (r.door_number) } }
                            td { @if r.source == "review" { "审核" } @else { "电话回访" } }
                            td.wrap { (r.reason) }
                            td { (town_time(r.opened_at_ms)) " · " (r.opened_by) }
                            td { (r.assignee) }
                            td.wrap {
                                @if let Some(at) = r.fixed_at_ms {
                                    (town_time(at)) " "
                                    @if let Some(n) = &r.note { (n) }
                                }
                            }
                            td { (r.closed_at_ms.map(town_time).unwrap_or_default()) }
                        }
                    }
                }
            } }
        },
    ))
}
