//! Directives, work bulletins and warnings (发布+推送):
//!
//! - `GET /directives`: for the office, the form to publish one to chosen villages
//!   and units and every directive with how many places have acknowledged and pushed
//!   it on, and how many are late; for a liaison, the directives of its places with
//!   buttons to acknowledge and confirm the push;
//! - `POST /directives`: publishes ([`ServerDb::publish_directive`]);
//! - `GET /directives/{id}`: one directive, each place with who acknowledged and
//!   pushed it on, when, and how late (or how long overdue);
//! - `POST /directives/{id}/acknowledge` and `/push` (`place`): a liaison's marks from
//!   the web ([`ServerDb::mark_directive_as`]); phones mark through the core.
//!
//! [`ServerDb::publish_directive`]: crate::db::ServerDb::publish_directive
//! [`ServerDb::mark_directive_as`]: crate::db::ServerDb::mark_directive_as

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use doorstep_core::directive::{DirectiveCategory, MarkKind};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    WebError, WebForm, WebQuery, WebUser, csrf_field, encode_query, page, see_other, town_time,
};
use crate::access::Permission;
use crate::db::office::{
    DEFAULT_ACK_HOURS, DEFAULT_PUSH_HOURS, DirectiveInput, DirectiveView, PlaceState,
};
use crate::http::{AppState, blocking};

/// This page's routes, merged by [`super::routes`].
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/directives", get(list).post(publish))
        .route("/directives/{id}", get(one))
        .route("/directives/{id}/acknowledge", post(acknowledge))
        .route("/directives/{id}/push", post(push))
}

fn may_see(user: &WebUser) -> Result<(), WebError> {
    if user.principal.may_at_all(Permission::PublishDirective) {
        return Ok(());
    }
    user.require(Permission::AcknowledgeDirective)
}

/// "超时 2 小时 5 分" for a lateness in milliseconds.
pub fn late_label(ms: i64) -> String {
    let minutes = ms / 60_000;
    let (d, h, m) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (d, h) {
        (0, 0) => format!("超时 {m} 分"),
        (0, _) => format!("超时 {h} 小时 {m} 分"),
        _ => format!("超时 {d} 天 {h} 小时"),
    }
}

fn category_label(c: &str) -> &'static str {
    DirectiveCategory::parse(c).map_or("通知", |c| c.label_zh())
}

fn counts(d: &DirectiveView) -> (usize, usize, usize) {
    let acked = d.places.iter().filter(|p| p.acknowledged.is_some()).count();
    let pushed = d.places.iter().filter(|p| p.pushed.is_some()).count();
    let late = d
        .places
        .iter()
        .filter(|p| p.ack_late_ms.is_some() || p.push_late_ms.is_some())
        .count();
    (acked, pushed, late)
}

#[derive(Deserialize)]
struct ListQuery {
    /// Only the directives that go to this village or unit.
    #[serde(default)]
    place: String,
}

async fn list(
    State(state): State<AppState>,
    user: WebUser,
    WebQuery(q): WebQuery<ListQuery>,
) -> Result<Markup, WebError> {
    may_see(&user)?;
    let office = user.principal.may_at_all(Permission::PublishDirective);
    let db = state.db.clone();
    let p = user.principal.clone();
    let (mut directives, places) = blocking(move || {
        let places = if office {
            db.known_places()?
        } else {
            Vec::new()
        };
        Ok((db.directives(&p)?, places))
    })
    .await?;
    let place = q.place.trim();
    if !place.is_empty() {
        directives.retain(|d| d.places.iter().any(|p| p.place == place));
        for d in &mut directives {
            d.places.retain(|p| p.place == place);
        }
    }
    Ok(page(
        "指令",
        &user.principal,
        html! {
            @if office {
                section.card {
                    h2 { "发布指令、工作通报或预警" }
                    form #publish method="post" action="/directives" {
                        (csrf_field(&user))
                        div.filters {
                            label { "类别" select name="category" {
                                @for c in DirectiveCategory::ALL {
                                    option value=(c.as_str()) { (c.label_zh()) }
                                }
                            } }
                            label { "签收时限（小时）" input type="number" name="ack_hours" min="1" max="720" value=(DEFAULT_ACK_HOURS); }
                            label { "推送时限（小时）" input type="number" name="push_hours" min="1" max="720" value=(DEFAULT_PUSH_HOURS); }
                        }
                        label.block { "标题" input type="text" name="title" maxlength="100" required; }
                        label.block { "正文" textarea name="body" rows="5" maxlength="5000" required {} }
                        fieldset.places {
                            legend { "发往（村、镇直单位）" }
                            @for place in &places {
                                label { input type="checkbox" name="place" value=(place); " " (place) }
                            }
                        }
                        button type="submit" { "发布" }
                    }
                }
            }
            h2 {
                @if office { "已发布" } @else { "发给本村（单位）的指令" }
                @if !place.is_empty() { " · " (place) " " a href="/directives" { "（全部）" } }
            }
            @if directives.is_empty() {
                p.empty { "没有指令。" }
            } @else {
                div.table-wrap { table #directives {
                    thead { tr {
                        th { "类别" } th { "标题" } th { "发布" } th { "签收时限" }
                        th { "已签收" } th { "已推送" } th { "超时" } th {}
                    } }
                    tbody {
                        @for d in &directives {
                            @let (acked, pushed, late) = counts(d);
                            tr {
                                td { span.badge.bad[d.category == "warning"] { (category_label(&d.category)) } }
                                td.wrap { a href=(format!("/directives/{}", d.id)) { (d.title) } }
                                td { (town_time(d.published_at_ms)) }
                                td { (town_time(d.ack_due_ms)) }
                                td.num { (acked) " / " (d.places.len()) }
                                td.num { (pushed) " / " (d.places.len()) }
                                td.num { @if late > 0 { span.badge.bad { (late) } } @else { "0" } }
                                td { @if !office {
                                    @for pl in &d.places { (mark_buttons(&user, d, pl)) }
                                } }
                            }
                        }
                    }
                } }
            }
        },
    ))
}

fn mark_buttons(user: &WebUser, d: &DirectiveView, pl: &PlaceState) -> Markup {
    html! {
        @if pl.acknowledged.is_none() {
            form.inline method="post" action=(format!("/directives/{}/acknowledge", d.id)) {
                (csrf_field(user))
                input type="hidden" name="place" value=(pl.place);
                button type="submit" { "签收（" (pl.place) "）" }
            }
        } @else if pl.pushed.is_none() {
            form.inline method="post" action=(format!("/directives/{}/push", d.id)) {
                (csrf_field(user))
                input type="hidden" name="place" value=(pl.place);
                button type="submit" { "确认已推送（" (pl.place) "）" }
            }
        } @else {
            span.badge.ok { (pl.place) " 已签收并推送" }
        }
    }
}

async fn one(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Result<Markup, WebError> {
    may_see(&user)?;
    let id = Uuid::parse_str(&id).map_err(|_| WebError::NotFound)?;
    let office = user.principal.may_at_all(Permission::PublishDirective);
    let db = state.db.clone();
    let p = user.principal.clone();
    let d = blocking(move || db.directive(&p, id)).await?;
    let (acked, pushed, late) = counts(&d);
    let may_places = user.principal.may_at_all(Permission::ManagePlaces);
    Ok(page(
        &d.title,
        &user.principal,
        html! {
            p.hint {
                span.badge.bad[d.category == "warning"] { (category_label(&d.category)) }
                " " (d.published_by) " 发布于 " (town_time(d.published_at_ms))
                " · 签收时限 " (town_time(d.ack_due_ms)) " · 推送时限 " (town_time(d.push_due_ms))
            }
            section.card { @for para in d.body.split('\n') { p { (para) } } }
            p #directive-counts {
                "已签收 " strong { (acked) } " / " (d.places.len())
                "，已推送 " strong { (pushed) } " / " (d.places.len())
                "，超时 " strong { (late) }
            }
            div.table-wrap { table #directive-places {
                thead { tr {
                    th { "村（单位）" } th { "签收" } th { "签收情况" } th { "推送" } th { "推送情况" } th {}
                } }
                tbody {
                    @for pl in &d.places {
                        tr data-place=(pl.place) {
                            td {
                                @if may_places {
                                    a href=(format!("/places#{}", encode_query(&pl.place))) { (pl.place) }
                                } @else { (pl.place) }
                            }
                            td { @if let Some((by, at)) = &pl.acknowledged { (by) " · " (town_time(*at)) } @else { "未签收" } }
                            td { (lateness(pl.acknowledged.is_some(), pl.ack_late_ms)) }
                            td { @if let Some((by, at)) = &pl.pushed { (by) " · " (town_time(*at)) } @else { "未推送" } }
                            td { (lateness(pl.pushed.is_some(), pl.push_late_ms)) }
                            td { @if !office { (mark_buttons(&user, &d, pl)) } }
                        }
                    }
                }
            } }
            p { a href="/directives" { "返回指令" } }
        },
    ))
}

fn lateness(done: bool, late_ms: Option<i64>) -> Markup {
    html! {
        @match (done, late_ms) {
            (true, None) => span.badge.ok { "按时" },
            (true, Some(ms)) => span.badge.warn { (late_label(ms)) },
            (false, None) => span.badge { "未到时限" },
            (false, Some(ms)) => span.badge.bad { "逾期未办，" (late_label(ms)) },
        }
    }
}

/// The publish form, read as its list of pairs: `place` repeats, once per checked box,
/// which a struct does not take.
fn publish_input(pairs: Vec<(String, String)>) -> Result<(String, DirectiveInput), WebError> {
    let mut csrf = String::new();
    let mut input = DirectiveInput {
        category: DirectiveCategory::Directive,
        title: String::new(),
        body: String::new(),
        places: Vec::new(),
        ack_within_hours: DEFAULT_ACK_HOURS,
        push_within_hours: DEFAULT_PUSH_HOURS,
    };
    let hours = |v: &str, what: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|h| (1..=720).contains(h))
            .ok_or_else(|| WebError::BadRequest(format!("{what}须为 1 至 720 小时。")))
    };
    for (k, v) in pairs {
        match k.as_str() {
            "csrf" => csrf = v,
            "category" => {
                input.category = DirectiveCategory::parse(&v).ok_or_else(|| {
                    WebError::BadRequest("表单中 category（类别）的值不对。".into())
                })?;
            }
            "title" => input.title = v,
            "body" => input.body = v.replace("\r\n", "\n"),
            "place" => input.places.push(v),
            "ack_hours" => input.ack_within_hours = hours(&v, "签收时限")?,
            "push_hours" => input.push_within_hours = hours(&v, "推送时限")?,
            _ => {}
        }
    }
    if input.title.trim().is_empty() || input.body.trim().is_empty() {
        return Err(WebError::BadRequest("请填写标题和正文。".into()));
    }
    if input.places.is_empty() {
        return Err(WebError::BadRequest("请至少选择一个村或单位。".into()));
    }
    Ok((csrf, input))
}

async fn publish(
    State(state): State<AppState>,
    user: WebUser,
    WebForm(pairs): WebForm<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let (csrf, input) = publish_input(pairs)?;
    user.check_csrf(&csrf)?;
    user.require(Permission::PublishDirective)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let id = blocking(move || db.publish_directive(&p, &input)).await?;
    Ok(see_other(&format!("/directives/{id}")))
}

#[derive(Deserialize)]
struct MarkForm {
    #[serde(default)]
    csrf: String,
    place: String,
}

async fn mark(
    state: AppState,
    user: WebUser,
    id: String,
    f: MarkForm,
    kind: MarkKind,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    user.require(Permission::AcknowledgeDirective)?;
    let uuid = Uuid::parse_str(&id).map_err(|_| WebError::NotFound)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    blocking(move || db.mark_directive_as(&p, uuid, &f.place, kind)).await?;
    Ok(see_other(&format!("/directives/{id}")))
}

async fn acknowledge(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    WebForm(f): WebForm<MarkForm>,
) -> Result<Response, WebError> {
    mark(state, user, id, f, MarkKind::Acknowledged).await
}

async fn push(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    WebForm(f): WebForm<MarkForm>,
) -> Result<Response, WebError> {
    mark(state, user, id, f, MarkKind::Pushed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_reads_in_days_hours_and_minutes() {
        assert_eq!(late_label(5 * 60_000), "超时 5 分");
        assert_eq!(late_label(125 * 60_000), "超时 2 小时 5 分");
        assert_eq!(late_label((26 * 60 + 3) * 60_000), "超时 1 天 2 小时");
    }

    #[test]
    fn the_publish_form_takes_every_checked_place() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (csrf, input) = publish_input(pairs(&[
            ("csrf", "t"),
            ("category", "warning"),
            ("title", "预警"),
            ("body", "a\r\nb"),
            ("place", "东坡村"),
            ("place", "镇派出所"),
            ("ack_hours", "2"),
            ("push_hours", "4"),
        ]))
        .unwrap();
        assert_eq!(csrf, "t");
        assert_eq!(input.category, DirectiveCategory::Warning);
        assert_eq!(
            input.places,
            vec!["东坡村".to_string(), "镇派出所".to_string()]
        );
        assert_eq!(input.body, "a\nb");
        assert_eq!((input.ack_within_hours, input.push_within_hours), (2, 4));
        let base = [("csrf", "t"), ("title", "x"), ("body", "y")];
        assert!(publish_input(pairs(&base)).is_err(), "no place");
        let with = |extra: (&str, &str)| {
            let mut l = base.to_vec();
            l.push(("place", "a"));
            l.push(extra);
            pairs(&l)
        };
        assert!(publish_input(with(("ack_hours", "0"))).is_err());
        assert!(publish_input(with(("category", "memo"))).is_err());
        assert!(publish_input(with(("push_hours", "4"))).is_ok());
    }
}
