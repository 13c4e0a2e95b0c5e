//! One household's page and its forms:
//!
//! - `GET /households/{id}`: profile and residents (masked), visits with outcome,
//!   photos (thumbnails linking to full size), signed notices and pledges with their
//!   signature image and verification status, the office's review of each visit,
//!   follow-up calls, rectification tasks, and conflicts side by side;
//! - `POST /households/{id}/reveal` (`field`, `resident`, `reason`): one ID or phone
//!   number in full, audited ([`ServerDb::reveal`]), shown once and never cached;
//! - `POST /households/{id}/visits/{visit}/review` (`state`, `reason`): the office's
//!   review ([`ServerDb::write_review`]);
//! - `POST /households/{id}/conflicts` (`path`, `choice`): keeps one value
//!   ([`ServerDb::resolve_conflict`]);
//! - `GET /households/{id}/evidence/{evidence}/signature.png`, `GET
//!   /files/thumb/{sha256}`, `GET /files/photo/{sha256}`: the images, only for a
//!   household the account may read (`Cache-Control: private, no-store`); a full
//!   photo or a signature viewed is audited (`view_photo`, `view_signature`).
//!
//! [`ServerDb::reveal`]: crate::db::ServerDb::reveal
//! [`ServerDb::write_review`]: crate::db::ServerDb::write_review
//! [`ServerDb::resolve_conflict`]: crate::db::ServerDb::resolve_conflict

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use doorstep_core::model::ReviewState;
use maud::{Markup, html};
use serde::Deserialize;

use super::{WebError, WebForm, WebUser, csrf_field, page, revealed_page, see_other, town_time};
use crate::access::Permission;
use crate::db::pages::{EvidenceCheck, EvidenceView, FileKind, HouseholdPage, status_label};
use crate::db::people::{RevealField, parse_household};
use crate::http::{AppState, blocking};

/// This page's routes, merged by [`super::routes`].
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/households/{id}", get(household))
        .route("/households/{id}/reveal", post(reveal))
        .route("/households/{id}/visits/{visit}/review", post(review))
        .route("/households/{id}/conflicts", post(resolve))
        .route(
            "/households/{id}/evidence/{evidence}/signature.png",
            get(signature),
        )
        .route("/files/thumb/{sha256}", get(thumb))
        .route("/files/photo/{sha256}", get(photo))
}

async fn household(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
) -> Result<Markup, WebError> {
    user.require(Permission::ReadOfficePages)?;
    let id = parse_household(&id)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let h = blocking(move || db.household_page(&p, id)).await?;
    let title = format!("{} {}", h.view.village, h.view.door_number);
    Ok(page(&title, &user.principal, body(&user, &h)))
}

fn review_label(state: &str) -> &'static str {
    match state {
        "received" => "已接收",
        "approved" => "审核通过",
        "has_issues" => "有问题",
        _ => "未审核",
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "notice" => "告知书",
        "pledge" => "承诺书",
        _ => "记录",
    }
}

fn reveal_form(user: &WebUser, id: &str, resident: &str, field: &str, what: &str) -> Markup {
    html! {
        details.reveal {
            summary { "查看完整" (what) }
            form.inline method="post" action=(format!("/households/{id}/reveal")) {
                (csrf_field(user))
                input type="hidden" name="resident" value=(resident);
                input type="hidden" name="field" value=(field);
                input name="reason" required minlength="2" maxlength="200" placeholder="查看理由（记入审计日志）";
                button type="submit" { "查看" }
            }
        }
    }
}

fn evidence_row(household: &str, e: &EvidenceView) -> Markup {
    html! {
        tr {
            td { (kind_label(&e.kind)) }
            td { (e.signer_name) @if let Some(w) = &e.witness { br; span.muted { "见证人：" (w) } } }
            td {
                @if e.png_present {
                    img.signature src=(format!("/households/{household}/evidence/{}/signature.png", e.id)) alt="签名";
                } @else {
                    span.muted { "签名图片尚未上传" }
                }
            }
            td { (town_time(e.signed_at_ms)) @if let Some(r) = e.received_at_ms { br; span.muted { "服务器收到 " (town_time(r)) } } }
            td.wrap {
                @match &e.check {
                    EvidenceCheck::Verified => span.badge.ok { "已核验" },
                    EvidenceCheck::Failed(why) => { span.badge.bad { "核验失败" } " " (why) },
                }
            }
        }
    }
}

fn body(user: &WebUser, h: &HouseholdPage) -> Markup {
    let p = &user.principal;
    let v = &h.view;
    let may_reveal = p.may_at_all(Permission::RevealPersonalData);
    let may_review = p.may_at_all(Permission::WriteReview);
    let may_resolve = p.may_at_all(Permission::ResolveConflict);
    html! {
        section {
            h2 { "基本信息" }
            div.table-wrap { table {
                tr { th { "村 / 网格" } td { (v.village) " / " (v.grid) } }
                tr { th { "门牌号" } td { (v.door_number) } }
                tr { th { "地址" } td.wrap { (v.address) } }
                tr { th { "户主" } td { (v.head_name) } }
                tr { th { "联系电话" } td {
                    (v.phone)
                    @if may_reveal && !v.phone.is_empty() { (reveal_form(user, &v.id, "", "phone", "电话")) }
                } }
            } }
        }
        section {
            h2 { "居民（" (v.residents.len()) "）" }
            div.table-wrap { table {
                thead { tr { th { "姓名" } th { "与户主关系" } th { "性别" } th { "身份证号" } th { "电话" } th { "重点人群" } } }
                tbody {
                    @for r in &v.residents {
                        tr {
                            td { (r.name) }
                            td { (r.relation) }
                            td { (r.sex) }
                            td { @if let Some(n) = &r.id_number {
                                (n) @if may_reveal { (reveal_form(user, &v.id, &r.id, "id_number", "身份证号")) }
                            } }
                            td { @if let Some(ph) = &r.phone {
                                (ph) @if may_reveal { (reveal_form(user, &v.id, &r.id, "phone", "电话")) }
                            } }
                            td.wrap { (r.target_groups.join("、")) }
                        }
                    }
                }
            } }
        }
        @if !h.conflicts.is_empty() {
            section id="conflicts" {
                h2 { "冲突（" (h.conflicts.len()) "）" }
                p.muted { "几部手机离线时同时改了下面的字段。请选择要保留的值；其他值留在历史记录中。" }
                @for c in &h.conflicts {
                    form method="post" action=(format!("/households/{}/conflicts", v.id)) {
                        (csrf_field(user))
                        input type="hidden" name="path" value=(serde_json::to_string(&c.path).unwrap_or_default());
                        h3 { (c.label) }
                        div.side-by-side {
                            @for (i, val) in c.values.iter().enumerate() {
                                label.choice {
                                    @if may_resolve {
                                        input type="radio" name="choice" value=(val.choice) checked[i == 0] required;
                                    }
                                    strong { (val.value) }
                                    br;
                                    span.muted { "手机 " (val.actor.get(..8).unwrap_or(&val.actor)) " · " (town_time(val.time_ms)) }
                                    @if val.winner { " " span.badge { "当前显示" } }
                                }
                            }
                        }
                        @if may_resolve { p { button type="submit" { "保留所选的值" } } }
                    }
                }
            }
        }
        section {
            h2 { "走访（" (h.visits.len()) "）" }
            @if h.visits.is_empty() { p.muted { "尚未走访。" } }
            @for visit in &h.visits {
                div.card id=(format!("visit-{}", visit.id)) {
                    h3 {
                        (town_time(visit.started_at_ms)) " · " (visit.visitor) " · "
                        span.badge.ok[visit.outcome == "completed"] { (status_label(&visit.outcome)) }
                        @if let Some(reason) = &visit.voided { " " span.badge.bad { "已作废" } " " span.muted { (reason) } }
                    }
                    @if !visit.outcome_reason.is_empty() { p { "原因：" (visit.outcome_reason) } }
                    @if !visit.target_groups_reached.is_empty() { p { "覆盖的重点人群：" (visit.target_groups_reached.join("、")) } }
                    @if !visit.remarks.is_empty() { p { "备注：" (visit.remarks) } }
                    @if let Some(end) = visit.finished_at_ms { p.muted { "结束于 " (town_time(end)) } }
                    @if !visit.photos.is_empty() {
                        div.thumbs {
                            @for ph in &visit.photos {
                                a href=(format!("/files/photo/{}", ph.sha256)) target="_blank" rel="noopener" {
                                    img src=(format!("/files/thumb/{}", ph.thumb)) alt="走访照片" loading="lazy";
                                }
                            }
                        }
                    }
                    @if !visit.evidence.is_empty() {
                        div.table-wrap { table {
                            thead { tr { th { "文书" } th { "签名人" } th { "签名" } th { "签署时间" } th { "核验" } } }
                            tbody { @for e in &visit.evidence { (evidence_row(&v.id, e)) } }
                        } }
                    }
                    p {
                        "审核："
                        @match &visit.review {
                            Some(r) => {
                                span.badge.ok[r.state == "approved"].bad[r.state == "has_issues"] { (review_label(&r.state)) }
                                " " (r.by) " · " (town_time(r.at_ms))
                                @if !r.reason.is_empty() { " · " (r.reason) }
                            },
                            None => span.muted { "未审核" },
                        }
                    }
                    @if may_review {
                        form.filters method="post" action=(format!("/households/{}/visits/{}/review", v.id, visit.id)) {
                            (csrf_field(user))
                            label { "审核结果"
                                select name="state" {
                                    option value="received" { "已接收" }
                                    option value="approved" { "审核通过" }
                                    option value="has_issues" { "有问题（发回整改）" }
                                }
                            }
                            label { "理由" input name="reason" maxlength="500" placeholder="有问题时必填"; }
                            button type="submit" { "提交审核" }
                        }
                    }
                }
            }
        }
        @if !h.stray_evidence.is_empty() {
            section {
                h2 { "未对应走访的记录" }
                div.table-wrap { table {
                    thead { tr { th { "文书" } th { "签名人" } th { "签名" } th { "签署时间" } th { "核验" } } }
                    tbody { @for e in &h.stray_evidence { (evidence_row(&v.id, e)) } }
                } }
            }
        }
        @if !h.follow_up_calls.is_empty() {
            section {
                h2 { "电话回访（" (h.follow_up_calls.len()) "）" }
                div.table-wrap { table {
                    thead { tr { th { "时间" } th { "督导" } th { "接通" } th { "确认走访" } th { "听懂" } th { "备注" } } }
                    tbody {
                        @for c in &h.follow_up_calls {
                            tr {
                                td { (town_time(c.called_at_ms)) }
                                td { (c.by) }
                                td { (yes_no(Some(c.reached))) }
                                td { (yes_no(c.confirmed)) }
                                td { (yes_no(c.understood)) }
                                td.wrap { (c.remarks) }
                            }
                        }
                    }
                } }
            }
        }
        @if !h.rectifications.is_empty() {
            section {
                h2 { "整改（" (h.rectifications.len()) "）" }
                div.table-wrap { table {
                    thead { tr { th { "发起" } th { "来源" } th { "问题" } th { "负责人" } th { "状态" } } }
                    tbody {
                        @for (_, r) in &h.rectifications {
                            tr {
                                td { (town_time(r.opened_at_ms)) br; span.muted { (r.opened_by) } }
                                td { @if r.source == "review" { "审核" } @else { "电话回访" } }
                                td.wrap { (r.reason) }
                                td { (r.assignee) }
                                td { @match &r.closed {
                                    Some(c) => { span.badge.ok { "已关闭" } " " (town_time(c.at_ms)) },
                                    None => span.badge.warn { "待整改" },
                                } }
                            }
                        }
                    }
                } }
            }
        }
    }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "是",
        Some(false) => "否",
        None => "—",
    }
}

#[derive(Deserialize)]
struct RevealForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    resident: String,
    field: String,
    #[serde(default)]
    reason: String,
}

async fn reveal(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    WebForm(f): WebForm<RevealForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    user.require(Permission::RevealPersonalData)?;
    let hid = parse_household(&id)?;
    let field = match f.field.as_str() {
        "phone" => RevealField::Phone,
        "id_number" => RevealField::IdNumber,
        _ => return Err(WebError::BadRequest("表单中 field 一项的值不对。".into())),
    };
    if f.reason.trim().chars().count() < 2 {
        return Err(WebError::BadRequest(
            "请填写查看理由（2 到 200 个字），它会记入审计日志。".into(),
        ));
    }
    let db = state.db.clone();
    let p = user.principal.clone();
    let resident = (!f.resident.is_empty()).then_some(f.resident.clone());
    let reason = f.reason.clone();
    let value =
        blocking(move || db.reveal(&p, None, hid, resident.as_deref(), field, &reason)).await?;
    let what = match field {
        RevealField::Phone => "电话",
        RevealField::IdNumber => "身份证号",
    };
    let markup = page(
        &format!("完整{what}"),
        &user.principal,
        html! {
            section.card {
                p { "本次查看已记入审计日志。此页面不会被缓存，离开后需重新申请查看。" }
                p.revealed { (value) }
                p { a href=(format!("/households/{id}")) { "返回住户页面" } }
            }
        },
    );
    Ok(revealed_page(markup))
}

#[derive(Deserialize)]
struct ReviewForm {
    #[serde(default)]
    csrf: String,
    state: String,
    #[serde(default)]
    reason: String,
}

async fn review(
    State(state): State<AppState>,
    user: WebUser,
    Path((id, visit)): Path<(String, String)>,
    WebForm(f): WebForm<ReviewForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    user.require(Permission::WriteReview)?;
    let hid = parse_household(&id)?;
    let review_state = ReviewState::parse(&f.state)
        .ok_or_else(|| WebError::BadRequest("表单中 state（审核结果）的值不对。".into()))?;
    if review_state == ReviewState::HasIssues && f.reason.trim().is_empty() {
        return Err(WebError::BadRequest(
            "审核结果为“有问题”时，请在 reason（理由）中写明问题。".into(),
        ));
    }
    let db = state.db.clone();
    let p = user.principal.clone();
    let v = visit.clone();
    blocking(move || db.write_review(&p, hid, &v, review_state, &f.reason)).await?;
    Ok(see_other(&format!("/households/{id}#visit-{visit}")))
}

#[derive(Deserialize)]
struct ResolveForm {
    #[serde(default)]
    csrf: String,
    path: String,
    #[serde(default)]
    choice: String,
}

async fn resolve(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    WebForm(f): WebForm<ResolveForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    user.require(Permission::ResolveConflict)?;
    let hid = parse_household(&id)?;
    let path: Vec<String> = serde_json::from_str(&f.path)
        .map_err(|_| WebError::BadRequest("表单中 path 一项的值不对。".into()))?;
    if f.choice.is_empty() {
        return Err(WebError::BadRequest("请选择要保留的值（choice）。".into()));
    }
    let db = state.db.clone();
    let p = user.principal.clone();
    blocking(move || db.resolve_conflict(&p, hid, &path, &f.choice)).await?;
    Ok(see_other(&format!("/households/{id}#conflicts")))
}

/// An image answer. Photos of people and signatures are sensitive personal data
/// (PIPL): `Cache-Control: private, no-store`, so no browser or proxy keeps a copy.
fn image(bytes: Vec<u8>, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        bytes,
    )
        .into_response()
}

async fn signature(
    State(state): State<AppState>,
    user: WebUser,
    Path((id, evidence)): Path<(String, String)>,
) -> Result<Response, WebError> {
    user.require(Permission::ReadOfficePages)?;
    let hid = parse_household(&id)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let bytes = blocking(move || db.signature_png(&p, hid, &evidence)).await?;
    Ok(image(bytes, "image/png"))
}

async fn file(
    state: AppState,
    user: WebUser,
    sha256: String,
    kind: FileKind,
) -> Result<Response, WebError> {
    user.require(Permission::ReadOfficePages)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let bytes = blocking(move || db.photo_file(&p, &sha256, kind)).await?;
    Ok(image(bytes, "image/jpeg"))
}

async fn thumb(
    State(state): State<AppState>,
    user: WebUser,
    Path(sha256): Path<String>,
) -> Result<Response, WebError> {
    file(state, user, sha256, FileKind::Thumb).await
}

async fn photo(
    State(state): State<AppState>,
    user: WebUser,
    Path(sha256): Path<String>,
) -> Result<Response, WebError> {
    file(state, user, sha256, FileKind::Photo).await
}
