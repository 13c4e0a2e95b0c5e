//! The dashboard (`GET /`): coverage per village and per grid (households, visited,
//! pledged, checked by follow-up, omissions open), a bar chart of coverage per village
//! drawn as SVG on the server, and the directive figures of the town units. Every
//! figure links to the household list filtered to the households behind it; a unit's
//! directive count links to its directives only for an account that may open them
//! (not a supervisor). A supervisor sees its own scope only.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use maud::{Markup, html};

use super::{WebError, WebUser, encode_query, page};
use crate::access::Permission;
use crate::db::pages::{Coverage, Dashboard};
use crate::http::{AppState, blocking};

/// This page's routes, merged by [`super::routes`].
pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/", get(dashboard))
}

async fn dashboard(State(state): State<AppState>, user: WebUser) -> Result<Markup, WebError> {
    user.require(Permission::ReadOfficePages)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let d = blocking(move || db.dashboard(&p)).await?;
    let may_directives = user.principal.may_at_all(Permission::PublishDirective)
        || user.principal.may_at_all(Permission::AcknowledgeDirective);
    Ok(page("概览", &user.principal, body(&d, may_directives)))
}

/// The household list's address for `village`, `grid` and one more filter.
fn list_link(village: &str, grid: Option<&str>, extra: &str) -> String {
    let mut url = String::from("/households?");
    if !village.is_empty() {
        url.push_str(&format!("village={}&", encode_query(village)));
    }
    if let Some(g) = grid {
        url.push_str(&format!("grid={}&", encode_query(g)));
    }
    url.push_str(extra);
    url.trim_end_matches(['&', '?']).to_string()
}

fn percent(c: &Coverage) -> String {
    format!("{:.1}%", c.percent())
}

fn figures(c: &Coverage) -> Markup {
    let g = c.grid.as_deref();
    html! {
        td.num { a href=(list_link(&c.village, g, "")) { (c.households) } }
        td.num { a href=(list_link(&c.village, g, "status=completed")) { (c.visited) } }
        td.num { (percent(c)) }
        td.num { a href=(list_link(&c.village, g, "has=pledge")) { (c.pledged) } }
        td.num { a href=(list_link(&c.village, g, "has=follow_up")) { (c.checked) } }
        td.num { a href=(list_link(&c.village, g, "has=omission")) { (c.omissions_open) } }
    }
}

fn heads() -> Markup {
    html! {
        th.num { "户数" } th.num { "已走访" } th.num { "覆盖率" } th.num { "已签承诺书" }
        th.num { "已回访" } th.num { "待整改" }
    }
}

/// The page; `may_directives`: the account may open `/directives` (else the units'
/// directive counts are plain text, not links to a 403 page).
fn body(d: &Dashboard, may_directives: bool) -> Markup {
    html! {
        @if d.villages.is_empty() {
            p.muted { "您的管辖范围内还没有住户。" }
        } @else {
            section {
                h2 { "各村走访覆盖率" }
                (chart(&d.villages))
            }
            section {
                h2 { "按村" }
                div.table-wrap { table {
                    thead { tr { th { "村" } (heads()) } }
                    tbody {
                        @for v in &d.villages {
                            tr { td { a href=(list_link(&v.village, None, "")) { (v.village) } } (figures(v)) }
                        }
                    }
                    tfoot { tr { th { "合计" } (figures(&d.total)) } }
                } }
            }
            section {
                h2 { "按网格" }
                div.table-wrap { table {
                    thead { tr { th { "村" } th { "网格" } (heads()) } }
                    tbody {
                        @for g in &d.grids {
                            tr {
                                td { (g.village) }
                                td { a href=(list_link(&g.village, g.grid.as_deref(), "")) { (g.grid.as_deref().unwrap_or("")) } }
                                (figures(g))
                            }
                        }
                    }
                } }
            }
        }
        @if !d.units.is_empty() {
            section {
                h2 { "镇直单位（指令签收与推送）" }
                p.muted { "镇直单位不含住户；这里列出发给各单位的指令及其签收、推送情况。" }
                div.table-wrap { table {
                    thead { tr { th { "单位" } th.num { "指令" } th.num { "已签收" } th.num { "已推送" } th.num { "逾期" } } }
                    tbody {
                        @for u in &d.units {
                            tr {
                                td { (u.unit) }
                                td.num {
                                    @if may_directives {
                                        a href=(format!("/directives?place={}", encode_query(&u.unit))) { (u.directives) }
                                    } @else { (u.directives) }
                                }
                                td.num { (u.acknowledged) }
                                td.num { (u.pushed) }
                                td.num { @if u.overdue > 0 { span.badge.bad { (u.overdue) } } @else { "0" } }
                            }
                        }
                    }
                } }
            }
        }
        p.muted { "已走访：有一次已完成、未作废的走访；已签承诺书：在这样的走访中签了承诺书；已回访：有电话回访记录；待整改：未关闭的整改任务数。" }
    }
}

/// A horizontal bar per village: its coverage in percent, the bar and label linking to
/// the village's households.
fn chart(villages: &[Coverage]) -> Markup {
    const LABEL: f64 = 150.0;
    const BAR: f64 = 600.0;
    const ROW: f64 = 28.0;
    let height = ROW * villages.len() as f64 + 30.0;
    let width = LABEL + BAR + 130.0;
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" role="img"
            aria-label="各村走访覆盖率"
            viewBox=(format!("0 0 {width} {height}")) {
            @for (i, v) in villages.iter().enumerate() {
                @let y = ROW * i as f64 + 4.0;
                @let w = BAR * v.percent() / 100.0;
                a href=(list_link(&v.village, None, "status=completed")) {
                    text x=(LABEL - 8.0) y=(y + 15.0) text-anchor="end" { (v.village) }
                    rect.track x=(LABEL) y=(y) width=(BAR) height="20" {}
                    rect.bar x=(LABEL) y=(y) width=(format!("{w:.1}")) height="20" {}
                    text x=(LABEL + BAR + 8.0) y=(y + 15.0) {
                        (percent(v)) " (" (v.visited) "/" (v.households) ")"
                    }
                }
            }
            @for tick in [0, 25, 50, 75, 100] {
                @let x = LABEL + BAR * f64::from(tick) / 100.0;
                text x=(x) y=(height - 6.0) text-anchor="middle" { (tick) "%" }
            }
        }
    }
}
