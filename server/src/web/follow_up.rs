//! Follow-up checks (电话回访), for supervisors (and the office):
//!
//! - `GET /follow-up`: the rounds drawn, and the form to draw one: a village (or one
//!   of its grids), a percentage or a count, and optionally a seed to draw again;
//! - `POST /follow-up/rounds`: draws it ([`ServerDb::draw_follow_up_sample`]) and goes
//!   to the round;
//! - `GET /follow-up/rounds/{id}`: the households drawn, in the order drawn, with the
//!   seed, each with its call once made;
//! - `POST /follow-up/rounds/{id}/households/{hid}/reveal`: the number to call in full
//!   (audited, [`ServerDb::reveal`]) with the outcome form, never cached;
//! - `POST /follow-up/rounds/{id}/households/{hid}/call`: the outcome: reached, whether
//!   the household confirms the visit, three yes/no questions on what it understood,
//!   remarks ([`ServerDb::record_follow_up_call_as`]); a denial or a wrong answer flags
//!   the visit and opens a rectification task.
//!
//! [`ServerDb::draw_follow_up_sample`]: crate::db::ServerDb::draw_follow_up_sample
//! [`ServerDb::reveal`]: crate::db::ServerDb::reveal
//! [`ServerDb::record_follow_up_call_as`]: crate::db::ServerDb::record_follow_up_call_as

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use doorstep_core::model::FollowUpCall;
use doorstep_core::sampling::SampleSize;
use doorstep_core::store::now_ms;
use maud::{Markup, html};
use serde::Deserialize;

use super::{WebError, WebForm, WebUser, csrf_field, page, revealed_page, see_other, town_time};
use crate::access::Permission;
use crate::db::office::{DrawRequest, RoundRow, SampleRow};
use crate::db::people::{RevealField, parse_household};
use crate::http::{AppState, blocking};

/// The questions asked to learn whether the household understood the visit
/// (DOMAIN.md: the pledge's points). All three answered yes counts as understood.
pub const QUESTIONS: [&str; 3] = [
    "走访人员是否提醒您不要出借、出售银行卡和手机卡？",
    "遇到可疑电话或短信时，您知道拨打96110咨询吗？",
    "“客服退款要您提供验证码”是不是诈骗？",
];

/// This page's routes, merged by [`super::routes`].
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/follow-up", get(rounds))
        .route("/follow-up/rounds", post(draw))
        .route("/follow-up/rounds/{id}", get(round))
        .route(
            "/follow-up/rounds/{id}/households/{hid}/reveal",
            post(reveal),
        )
        .route("/follow-up/rounds/{id}/households/{hid}/call", post(call))
}

fn may_use(user: &WebUser) -> Result<(), WebError> {
    if user.principal.may_at_all(Permission::WriteFollowUpCall) {
        return Ok(());
    }
    user.require(Permission::DrawFollowUpSample)
}

fn method_label(r: &RoundRow) -> String {
    if r.method == "percent" {
        format!("{}%", r.amount)
    } else {
        format!("{} 户", r.amount)
    }
}

async fn rounds(State(state): State<AppState>, user: WebUser) -> Result<Markup, WebError> {
    may_use(&user)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let (rounds, places) = blocking(move || {
        let places = db.filter_options(&p)?;
        Ok((db.follow_up_rounds(&p)?, places))
    })
    .await?;
    let may_draw = user.principal.may_at_all(Permission::DrawFollowUpSample);
    Ok(page(
        "电话回访",
        &user.principal,
        html! {
            @if may_draw {
                section.card {
                    h2 { "抽取回访样本" }
                    p.hint {
                        "从所选村（或网格）中最近一次已完成走访尚未回访的住户里随机抽取，"
                        "每户每轮至多一次。随机种子会记录下来，用同一种子可以重现同一样本。"
                    }
                    form.filters #draw method="post" action="/follow-up/rounds" {
                        (csrf_field(&user))
                        label { "村" select name="village" required {
                            @for v in &places.villages { option value=(v) { (v) } }
                        } }
                        label { "网格（可不选）" select name="grid" {
                            option value="" { "整个村" }
                            @for (v, g) in &places.grids { option value=(g) { (v) " · " (g) } }
                        } }
                        label { "方式" select name="method" {
                            option value="percent" { "按比例（%）" }
                            option value="count" { "按户数" }
                        } }
                        label { "数量" input type="number" name="amount" min="1" max="10000" value="10" required; }
                        label { "随机种子（可不填）" input type="text" name="seed" inputmode="numeric" pattern="[0-9]*"; }
                        button type="submit" { "抽取" }
                    }
                }
            }
            h2 { "已抽取的轮次" }
            @if rounds.is_empty() {
                p.empty { "还没有抽取过回访样本。" }
            } @else {
                div.table-wrap { table #rounds {
                    thead { tr {
                        th { "轮次" } th { "村" } th { "网格" } th { "抽取" } th { "候选户" }
                        th { "抽中" } th { "已回访" } th { "随机种子" } th { "抽取人" } th { "时间" }
                    } }
                    tbody {
                        @for r in &rounds {
                            tr {
                                td { a href=(format!("/follow-up/rounds/{}", r.id)) { "第 " (r.id) " 轮" } }
                                td { (r.village) } td { (r.grid.as_deref().unwrap_or("整个村")) }
                                td { (method_label(r)) } td.num { (r.candidates) } td.num { (r.drawn) }
                                td.num { (r.called) } td { code { (r.seed) } }
                                td { (r.drawn_by) } td { (town_time(r.drawn_at_ms)) }
                            }
                        }
                    }
                } }
            }
        },
    ))
}

#[derive(Deserialize)]
struct DrawForm {
    #[serde(default)]
    csrf: String,
    village: String,
    #[serde(default)]
    grid: String,
    method: String,
    /// Text, so that a value that is not a number gets a sentence naming this field.
    amount: String,
    #[serde(default)]
    seed: String,
}

async fn draw(
    State(state): State<AppState>,
    user: WebUser,
    WebForm(f): WebForm<DrawForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    user.require(Permission::DrawFollowUpSample)?;
    let amount = f.amount.trim().parse::<u32>().unwrap_or(0);
    let size = match f.method.as_str() {
        "percent" if (1..=100).contains(&amount) => SampleSize::Percent(amount),
        "count" if (1..=10_000).contains(&amount) => SampleSize::Count(amount),
        _ => {
            return Err(WebError::BadRequest(
                "抽取数量：按比例为 1 至 100（%），按户数为 1 至 10000 户。".into(),
            ));
        }
    };
    let seed = match f.seed.trim() {
        "" => None,
        s => Some(
            s.parse::<u64>()
                .map_err(|_| WebError::BadRequest("随机种子须为不超过20位的整数。".into()))?,
        ),
    };
    let req = DrawRequest {
        village: f.village,
        grid: (!f.grid.trim().is_empty()).then(|| f.grid.trim().to_string()),
        size,
        seed,
    };
    let db = state.db.clone();
    let p = user.principal.clone();
    let id = blocking(move || db.draw_follow_up_sample(&p, &req)).await?;
    Ok(see_other(&format!("/follow-up/rounds/{id}")))
}

fn answer(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "是",
        Some(false) => "否",
        None => "—",
    }
}

fn call_cell(c: &FollowUpCall) -> Markup {
    html! {
        @if !c.reached {
            span.badge.warn { "未接通" }
        } @else if c.confirmed == Some(false) || c.understood == Some(false) {
            span.badge.bad { "有问题" }
        } @else {
            span.badge.ok { "已核实" }
        }
        " 确认走访：" (answer(c.confirmed)) "；理解：" (answer(c.understood))
        @if !c.remarks.is_empty() { "；" (c.remarks) }
        " （" (c.by) "，" (town_time(c.called_at_ms)) "）"
    }
}

async fn round(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<i64>,
) -> Result<Markup, WebError> {
    may_use(&user)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let (r, samples, redraw) = blocking(move || {
        let (r, samples) = db.follow_up_round(&p, id)?;
        Ok((r, samples, db.redraw_matches(&p, id)?))
    })
    .await?;
    let may_call = user.principal.may_at_all(Permission::WriteFollowUpCall);
    Ok(page(
        &format!("电话回访 第 {} 轮", r.id),
        &user.principal,
        html! {
            p.hint #round-facts {
                (r.village) " · " (r.grid.as_deref().unwrap_or("整个村")) " · 抽取 " (method_label(&r))
                " · 候选 " (r.candidates) " 户，抽中 " (r.drawn) " 户，已回访 " (r.called) " 户 · 随机种子 "
                code #seed { (r.seed) } " · " (r.drawn_by) " 于 " (town_time(r.drawn_at_ms))
            }
            p #redraw {
                @if redraw {
                    span.badge.ok { "复核一致" } " 按记录的候选户和随机种子重新抽取，结果与本轮相同。"
                } @else {
                    span.badge.bad { "复核不一致" } " 按记录的候选户和随机种子重新抽取，结果与本轮不同，请联系管理员。"
                }
            }
            div.table-wrap { table #samples {
                thead { tr {
                    th { "序号" } th { "网格" } th { "门牌" } th { "户主" } th { "走访人员" }
                    th { "回访结果" } th {}
                } }
                tbody {
                    @for s in &samples {
                        (sample_row(&user, r.id, s, may_call))
                    }
                }
            } }
            p { a href="/follow-up" { "返回电话回访" } }
        },
    ))
}

fn sample_row(user: &WebUser, round: i64, s: &SampleRow, may_call: bool) -> Markup {
    html! {
        tr data-household=(s.household) {
            td.num { (s.position) } td { (s.grid) }
            td { a href=(format!("/households/{}#visit-{}", s.household, s.visit_id)) { (s.door_number) } }
            td { (s.head_name) } td { (s.visitor) }
            td.wrap { @if let Some(c) = &s.call { (call_cell(c)) } @else { span.badge { "未回访" } } }
            td {
                @if may_call && s.call.is_none() {
                    form method="post" action=(format!("/follow-up/rounds/{round}/households/{}/reveal", s.household)) {
                        (csrf_field(user))
                        input type="hidden" name="visit" value=(s.visit_id);
                        button type="submit" { "查看号码并回访" }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct RevealForm {
    #[serde(default)]
    csrf: String,
    visit: String,
}

async fn reveal(
    State(state): State<AppState>,
    user: WebUser,
    Path((round, hid)): Path<(i64, String)>,
    WebForm(f): WebForm<RevealForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    user.require(Permission::WriteFollowUpCall)?;
    let household = parse_household(&hid)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    let reason = format!("电话回访抽查第{round}轮");
    let visit = f.visit.clone();
    let (phone, sample) = blocking(move || {
        let (_, samples) = db.follow_up_round(&p, round)?;
        let sample = samples
            .into_iter()
            .find(|s| s.household == household.to_string() && s.visit_id == visit)
            .ok_or_else(|| crate::error::Error::NotFound("not in this round".into()))?;
        // A household with no number on record is still called on (or marked not
        // reached): the form shows without a number.
        let phone = match db.reveal(&p, None, household, None, RevealField::Phone, &reason) {
            Err(crate::error::Error::NotFound(_)) => String::new(),
            other => other?,
        };
        Ok((phone, sample))
    })
    .await?;
    let markup = page(
        "电话回访",
        &user.principal,
        html! {
            section.card {
                p { (sample.door_number) " · 户主 " (sample.head_name) " · 走访人员 " (sample.visitor) }
                p.hint { "号码的查看已记入审计日志；此页面不会被缓存。" }
                @if phone.is_empty() {
                    p.revealed #phone { "（这一户没有登记电话）" }
                } @else {
                    p.revealed #phone { a href=(format!("tel:{phone}")) { (phone) } }
                }
            }
            form.call #call method="post" action=(format!("/follow-up/rounds/{round}/households/{hid}/call")) {
                (csrf_field(&user))
                input type="hidden" name="visit" value=(sample.visit_id);
                fieldset {
                    legend { "是否接通" }
                    label { input type="radio" name="reached" value="yes" required; " 接通" }
                    label { input type="radio" name="reached" value="no"; " 未接通" }
                }
                fieldset {
                    legend { "住户是否确认有人入户走访（接通时填）" }
                    label { input type="radio" name="confirmed" value="yes"; " 确认" }
                    label { input type="radio" name="confirmed" value="no"; " 否认" }
                }
                @for (i, q) in QUESTIONS.iter().enumerate() {
                    fieldset {
                        legend { (q) "（接通时填）" }
                        label { input type="radio" name=(format!("q{}", i + 1)) value="yes"; " 是" }
                        label { input type="radio" name=(format!("q{}", i + 1)) value="no"; " 否" }
                    }
                }
                label { "备注（最多400字）" textarea name="remarks" maxlength="400" rows="3" {} }
                button type="submit" { "保存回访结果" }
            }
        },
    );
    Ok(revealed_page(markup))
}

#[derive(Deserialize)]
struct CallForm {
    #[serde(default)]
    csrf: String,
    visit: String,
    reached: String,
    #[serde(default)]
    confirmed: String,
    #[serde(default)]
    q1: String,
    #[serde(default)]
    q2: String,
    #[serde(default)]
    q3: String,
    #[serde(default)]
    remarks: String,
}

fn yes_no(v: &str, field: &str) -> Result<Option<bool>, WebError> {
    match v {
        "yes" => Ok(Some(true)),
        "no" => Ok(Some(false)),
        "" => Ok(None),
        _ => Err(WebError::BadRequest(format!(
            "表单中 {field} 一项的值不对。"
        ))),
    }
}

/// The call as recorded from the form: `understood` is whether all three questions
/// were answered yes; the answers are kept in the remarks (`答题：是/否/是`).
fn call_from(f: &CallForm) -> Result<FollowUpCall, WebError> {
    let reached = yes_no(&f.reached, "reached")?
        .ok_or_else(|| WebError::BadRequest("请选择是否接通。".into()))?;
    let confirmed = yes_no(&f.confirmed, "confirmed")?;
    let answers = [
        yes_no(&f.q1, "q1")?,
        yes_no(&f.q2, "q2")?,
        yes_no(&f.q3, "q3")?,
    ];
    let remarks = f.remarks.trim();
    if remarks.chars().count() > 400 {
        return Err(WebError::BadRequest("备注最多400字。".into()));
    }
    if !reached {
        if confirmed.is_some() || answers.iter().any(Option::is_some) {
            return Err(WebError::BadRequest(
                "未接通时，确认走访和三个问题都不填。".into(),
            ));
        }
        return Ok(FollowUpCall {
            visit_id: f.visit.clone(),
            by: String::new(),
            called_at_ms: now_ms(),
            reached,
            confirmed: None,
            understood: None,
            remarks: remarks.to_string(),
        });
    }
    if confirmed.is_none() || answers.iter().any(Option::is_none) {
        return Err(WebError::BadRequest(
            "接通时，请回答是否确认走访和全部三个问题。".into(),
        ));
    }
    let understood = answers.iter().all(|a| *a == Some(true));
    let said: Vec<&str> = answers.iter().map(|a| answer(*a)).collect();
    let remarks = if remarks.is_empty() {
        format!("答题：{}", said.join("/"))
    } else {
        format!("答题：{}。{remarks}", said.join("/"))
    };
    Ok(FollowUpCall {
        visit_id: f.visit.clone(),
        by: String::new(),
        called_at_ms: now_ms(),
        reached,
        confirmed,
        understood: Some(understood),
        remarks,
    })
}

async fn call(
    State(state): State<AppState>,
    user: WebUser,
    Path((round, hid)): Path<(i64, String)>,
    WebForm(f): WebForm<CallForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&f.csrf)?;
    user.require(Permission::WriteFollowUpCall)?;
    let household = parse_household(&hid)?;
    let call = call_from(&f)?;
    let db = state.db.clone();
    let p = user.principal.clone();
    blocking(move || db.record_follow_up_call_as(&p, household, call)).await?;
    Ok(see_other(&format!("/follow-up/rounds/{round}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(reached: &str, confirmed: &str, q: [&str; 3]) -> CallForm {
        CallForm {
            csrf: String::new(),
            visit: "v".into(),
            reached: reached.into(),
            confirmed: confirmed.into(),
            q1: q[0].into(),
            q2: q[1].into(),
            q3: q[2].into(),
            remarks: String::new(),
        }
    }

    #[test]
    fn understood_needs_every_answer_right_and_unreached_needs_none() {
        let c = call_from(&form("yes", "yes", ["yes", "yes", "yes"])).unwrap();
        assert_eq!((c.confirmed, c.understood), (Some(true), Some(true)));
        let c = call_from(&form("yes", "yes", ["yes", "no", "yes"])).unwrap();
        assert_eq!(c.understood, Some(false));
        assert_eq!(c.remarks, "答题：是/否/是");
        let c = call_from(&form("no", "", ["", "", ""])).unwrap();
        assert_eq!((c.reached, c.confirmed, c.understood), (false, None, None));
        assert!(call_from(&form("no", "yes", ["", "", ""])).is_err());
        assert!(call_from(&form("yes", "yes", ["yes", "", "yes"])).is_err());
        assert!(call_from(&form("maybe", "", ["", "", ""])).is_err());
    }
}
