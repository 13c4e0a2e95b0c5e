//! Responsible persons of villages and units (`GET /places`, BULLETIN): every village
//! and unit with its first responsible person, responsible person, liaison, lecturers
//! and population, the lecturers it needs (one per 1,000 people, at least one) and
//! those named, the ones short flagged in red (宣讲员不足). The list is imported with
//! `doorstep-server import-places` (no web upload).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use maud::{Markup, html};

use super::{WebError, WebUser, page, town_time};
use crate::access::Permission;
use crate::db::bulletin::PlaceRecord;
use crate::http::{AppState, blocking};

/// This page's routes, merged by [`super::routes`].
pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/places", get(list))
}

async fn list(State(state): State<AppState>, user: WebUser) -> Result<Markup, WebError> {
    user.require(Permission::ManagePlaces)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let places = blocking(move || db.places(&p)).await?;
    Ok(page("责任人与宣讲员", &user.principal, body(&places)))
}

fn body(places: &[PlaceRecord]) -> Markup {
    let short: Vec<&PlaceRecord> = places.iter().filter(|p| p.short_of_lecturers).collect();
    let villages = places
        .iter()
        .filter(|p| p.place.kind == crate::places::PlaceKind::Village)
        .count();
    let imported = places.iter().map(|p| p.imported_at_ms).max();
    html! {
        @if places.is_empty() {
            p.empty {
                "尚未导入责任人名单。请在服务器上运行 "
                code { "doorstep-server import-places --data 数据目录 责任人员名单.xlsx" }
                " 导入。"
            }
        } @else {
            p id="places-summary" {
                "共 " strong { (places.len()) } " 个村（单位）：村 " (villages) " 个，镇直单位 "
                (places.len() - villages) " 个。"
                @if short.is_empty() {
                    span.ok { "宣讲员均已配足。" }
                } @else {
                    span.error {
                        "宣讲员不足 " (short.len()) " 个："
                        @for (i, p) in short.iter().enumerate() {
                            @if i > 0 { "、" }
                            (p.place.name)
                        }
                    }
                }
            }
            p.muted {
                "宣讲员按人数配备：至少 1 名，每 1000 人 1 名，每多 1000 人（不足 1000 按 1000 计）增加 1 名，"
                "如 2300 人需 3 名。"
                @if let Some(at) = imported { " 名单最近导入于 " (town_time(at)) "。" }
            }
            div.table-wrap { table id="places" {
                thead { tr {
                    th.num { "序号" } th { "村（单位）" } th { "类别" } th.num { "人数" }
                    th { "第一责任人" } th { "具体责任人" } th { "联络员" } th.wrap { "宣讲员" }
                    th.num { "应配" } th.num { "已配" } th { "标记" }
                } }
                tbody {
                    @for (i, r) in places.iter().enumerate() {
                        tr.short[r.short_of_lecturers] id=(r.place.name) {
                            td.num { (i + 1) }
                            td { (r.place.name) }
                            td { (r.place.kind.label_zh()) }
                            td.num { (r.place.population) }
                            td { (r.place.first_responsible) }
                            td { (r.place.responsible) }
                            td { (r.place.liaison) }
                            td.wrap { (r.place.lecturers.join("、")) }
                            td.num { (r.lecturers_required) }
                            td.num.error[r.short_of_lecturers] { (r.lecturers_named) }
                            td {
                                @if r.short_of_lecturers {
                                    span.badge.bad { "宣讲员不足" }
                                    " 缺 " (r.lecturers_required - r.lecturers_named) " 名"
                                } @else {
                                    span.badge.ok { "已配足" }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}
