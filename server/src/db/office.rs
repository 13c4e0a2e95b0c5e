//! The office's and the supervisors' work on the server (issue 6, DOMAIN.md "The
//! work", items 3 and 4): reviews that open rectification tasks (整改) and close them,
//! follow-up rounds (电话回访: a random sample drawn from a recorded seed, the calls'
//! outcomes, and the flags they raise), and directives (发布+推送: published as their
//! own documents, acknowledged and pushed on by each place's liaison from a phone or
//! the web).
//!
//! Every function takes the [`Principal`] asking and checks the permission table. The
//! server writes household and directive documents with its own actor, in targeted
//! changes (ADR 0002), and keeps the projections (`reviews`, `follow_up_calls`,
//! `rectifications`, `directives`, `directive_places`) in the same transaction.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, Change, ReadDoc};
use doorstep_core::directive::{self, Directive, DirectiveCategory, DirectiveMark, MarkKind};
use doorstep_core::model::{
    self, FollowUpCall, Household, HouseholdId, Rectification, RectificationClose,
    RectificationSource, Review, ReviewState,
};
use doorstep_core::protocol::SyncResponse;
use doorstep_core::sampling::{self, SampleSize};
use doorstep_core::store::now_ms;
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_bytes::ByteBuf;
use serde_json::json;
use uuid::Uuid;

use super::{
    Push, ServerDb, append_changes, load_doc, op_paths, project_household, store_server_changes,
};
use crate::access::{Permission, Principal};
use crate::audit;
use crate::error::{Error, Result};

/// Hours a place has to acknowledge a directive when the office names no deadline:
/// the action plan says "at once" (立即签收); the office's working day is the measure.
pub const DEFAULT_ACK_HOURS: u32 = 24;

/// Hours a place has to push a directive on when the office names no deadline.
pub const DEFAULT_PUSH_HOURS: u32 = 24;

// ---------------------------------------------------------------------------------
// Projections

/// Rebuilds the household's rows in `reviews`, `follow_up_calls` and
/// `rectifications` from its typed value (called by `project_household`).
pub(super) fn project_tasks(tx: &Transaction<'_>, key: &[u8], h: &Household) -> Result<()> {
    for table in ["reviews", "follow_up_calls", "rectifications"] {
        tx.execute(&format!("DELETE FROM {table} WHERE doc_id = ?1"), [key])?;
    }
    for (visit, r) in &h.reviews {
        tx.execute(
            "INSERT OR REPLACE INTO reviews (visit_id, doc_id, state, reason, by_user, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![visit, key, r.state, r.reason, r.by, r.at_ms],
        )?;
    }
    for (id, c) in &h.follow_up_calls {
        tx.execute(
            "INSERT OR REPLACE INTO follow_up_calls (call_id, doc_id, visit_id, by_user,
                 called_at_ms, reached, confirmed, understood, remarks)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                id,
                key,
                c.visit_id,
                c.by,
                c.called_at_ms,
                c.reached,
                c.confirmed,
                c.understood,
                c.remarks
            ],
        )?;
    }
    for (id, r) in &h.rectifications {
        let fix = h.rectification_fixes.get(id);
        tx.execute(
            "INSERT OR REPLACE INTO rectifications (rect_id, doc_id, visit_id, source, reason,
                 opened_by, opened_at_ms, assignee, fixed_visit_id, fixed_by, fixed_at_ms, note,
                 closed_by, closed_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                id,
                key,
                r.visit_id,
                r.source,
                r.reason,
                r.opened_by,
                r.opened_at_ms,
                r.assignee,
                fix.map(|f| &f.visit_id),
                fix.map(|f| &f.by),
                fix.map(|f| f.at_ms),
                fix.map(|f| &f.note),
                r.closed.as_ref().map(|c| &c.by),
                r.closed.as_ref().map(|c| c.at_ms),
            ],
        )?;
    }
    Ok(())
}

/// Rebuilds a directive's rows in `directives` and `directive_places`.
pub(super) fn project_directive(tx: &Transaction<'_>, id: Uuid, d: &Directive) -> Result<()> {
    let key = &id.as_bytes()[..];
    tx.execute(
        "INSERT OR REPLACE INTO directives (doc_id, category, title, body, published_by,
             published_at_ms, ack_due_ms, push_due_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            key,
            d.category,
            d.title,
            d.body,
            d.published_by,
            d.published_at_ms,
            d.ack_due_ms,
            d.push_due_ms
        ],
    )?;
    tx.execute("DELETE FROM directive_places WHERE doc_id = ?1", [key])?;
    for place in &d.places {
        let ack = d.acknowledgements.get(place);
        let push = d.pushes.get(place);
        tx.execute(
            "INSERT OR REPLACE INTO directive_places (doc_id, place, acknowledged_by,
                 acknowledged_at_ms, pushed_by, pushed_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                key,
                place,
                ack.map(|m| &m.by),
                ack.map(|m| m.at_ms),
                push.map(|m| &m.by),
                push.map(|m| m.at_ms)
            ],
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Rectifications: opened by a review or a follow-up call, fixed on the phone, closed
// when the office approves.

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// The open rectification of `visit` (not closed, no fix yet), if any.
fn open_rectification_of<'h>(h: &'h Household, visit: &str) -> Option<&'h str> {
    h.rectifications
        .iter()
        .find(|(id, r)| {
            r.visit_id == visit && r.closed.is_none() && !h.rectification_fixes.contains_key(*id)
        })
        .map(|(id, _)| id.as_str())
}

/// Opens a rectification task on `visit` (unless one is open already, whose ID is
/// returned) assigned to the visit's visitor. A task whose fix is this visit, or that
/// was fixed by naming this visit itself, is closed ("复核未通过"): the fix did not
/// pass, and the new task replaces it.
fn open_rectification(
    doc: &mut Automerge,
    h: &Household,
    visit: &str,
    source: RectificationSource,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<String> {
    if let Some(id) = open_rectification_of(h, visit) {
        return Ok(id.to_string());
    }
    let assignee = h
        .visits
        .get(visit)
        .map(|v| v.visitor.clone())
        .unwrap_or_default();
    for (id, r) in &h.rectifications {
        let fixed_by_this = h
            .rectification_fixes
            .get(id)
            .is_some_and(|f| f.visit_id == visit || r.visit_id == visit);
        if r.closed.is_none() && fixed_by_this {
            close(doc, id, r, by, "复核未通过，已另开整改", now)?;
        }
    }
    let id = Uuid::new_v4().to_string();
    model::put_rectification(
        doc,
        &id,
        &Rectification {
            visit_id: visit.to_string(),
            source: source.as_str().into(),
            reason: reason.to_string(),
            opened_by: by.to_string(),
            opened_at_ms: now,
            assignee,
            closed: None,
        },
        now,
    )
    .map_err(internal)?;
    Ok(id)
}

fn close(
    doc: &mut Automerge,
    id: &str,
    r: &Rectification,
    by: &str,
    note: &str,
    now: i64,
) -> Result<()> {
    let mut closed = r.clone();
    closed.closed = Some(RectificationClose {
        by: by.to_string(),
        at_ms: now,
        note: note.to_string(),
    });
    model::put_rectification(doc, id, &closed, now).map_err(internal)
}

/// What a review does to the household's rectification tasks (written by
/// [`ServerDb::write_review`] in the same transaction): `has_issues` opens a task on
/// the visit for its visitor; `approved` closes the open tasks of the visit and those
/// the visit fixed. Returns the task opened, if any.
pub(super) fn review_effects(
    doc: &mut Automerge,
    h: &Household,
    visit: &str,
    state: ReviewState,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<Option<String>> {
    match state {
        ReviewState::HasIssues => Ok(Some(open_rectification(
            doc,
            h,
            visit,
            RectificationSource::Review,
            reason,
            by,
            now,
        )?)),
        ReviewState::Approved => {
            for (id, r) in &h.rectifications {
                let fix = h.rectification_fixes.get(id);
                let about = r.visit_id == visit || fix.is_some_and(|f| f.visit_id == visit);
                if r.closed.is_none() && about {
                    let note = if fix.is_some() {
                        "整改已通过审核"
                    } else {
                        "审核通过"
                    };
                    close(doc, id, r, by, note, now)?;
                }
            }
            Ok(None)
        }
        ReviewState::Received => Ok(None),
    }
}

/// A follow-up call that found the household denying the visit or not understanding
/// it flags the visit (review `has_issues`, in the supervisor's name) and opens a
/// rectification task (DOMAIN.md: omissions are reported and must be put right).
/// Returns the task opened, or `None` for a call that raises nothing.
fn flag_from_call(
    doc: &mut Automerge,
    h: &Household,
    call: &FollowUpCall,
    now: i64,
) -> Result<Option<String>> {
    let mut why = Vec::new();
    if call.confirmed == Some(false) {
        why.push("电话回访：住户否认有人入户走访");
    }
    if call.understood == Some(false) {
        why.push("电话回访：住户未理解宣传内容");
    }
    if why.is_empty() || !h.visits.contains_key(&call.visit_id) {
        return Ok(None);
    }
    let mut reason = why.join("；");
    if !call.remarks.is_empty() {
        reason.push_str("。备注：");
        reason.push_str(&call.remarks);
    }
    let reason: String = reason.chars().take(500).collect();
    model::set_review(
        doc,
        &call.visit_id,
        &Review {
            state: ReviewState::HasIssues.as_str().into(),
            reason: reason.clone(),
            by: call.by.clone(),
            at_ms: now,
        },
        now,
    )
    .map_err(internal)?;
    let h = model::read_household(doc).map_err(internal)?;
    open_rectification(
        doc,
        &h,
        &call.visit_id,
        RectificationSource::FollowUp,
        &reason,
        &call.by,
        now,
    )
    .map(Some)
}

/// After a phone's push was accepted into a household (`doc`, with the server's actor
/// set by the caller): flags the visits that new follow-up calls found wanting
/// (`before` is the household as it was before the push). Returns the server changes
/// made, to be appended to the log.
pub(super) fn after_household_push(
    doc: &mut Automerge,
    before: Option<&Household>,
    now: i64,
) -> Result<Vec<Change>> {
    let heads = doc.get_heads();
    let Ok(after) = model::read_household(doc) else {
        return Ok(Vec::new());
    };
    for (id, call) in &after.follow_up_calls {
        if before.is_some_and(|b| b.follow_up_calls.contains_key(id)) {
            continue;
        }
        let h = model::read_household(doc).map_err(internal)?;
        flag_from_call(doc, &h, call, now)?;
    }
    Ok(doc.get_changes(&heads).into_iter().collect())
}

/// One rectification task as the office's pages list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RectificationRow {
    /// Task ID.
    pub id: String,
    /// Household ID.
    pub household: String,
    /// Village.
    pub village: String,
    /// Grid.
    pub grid: String,
    /// Door number.
    pub door_number: String,
    /// The visit found wanting.
    pub visit_id: String,
    /// `review` or `follow_up`.
    pub source: String,
    /// What is wrong.
    pub reason: String,
    /// Who opened it.
    pub opened_by: String,
    /// Server clock, UTC ms.
    pub opened_at_ms: i64,
    /// Who answers for it.
    pub assignee: String,
    /// `open`, `fixed` or `closed`.
    pub state: String,
    /// The fixing visit, once fixed.
    pub fixed_visit_id: Option<String>,
    /// When fixed, the phone's clock, UTC ms.
    pub fixed_at_ms: Option<i64>,
    /// The worker's note on the fix.
    pub note: Option<String>,
    /// When closed, server clock, UTC ms.
    pub closed_at_ms: Option<i64>,
}

/// Which rectification tasks to list.
#[derive(Debug, Clone, Default)]
pub struct RectificationFilter {
    /// `open`, `fixed` or `closed`; all when `None`.
    pub state: Option<String>,
    /// Only this village.
    pub village: Option<String>,
    /// Only tasks opened in this month of the town's calendar, `YYYY-MM`.
    pub opened_in: Option<String>,
    /// Only tasks closed in this month of the town's calendar, `YYYY-MM`.
    pub closed_in: Option<String>,
    /// Only tasks whose fix was recorded in this month of the town's calendar (the
    /// phone's clock), `YYYY-MM`.
    pub fixed_in: Option<String>,
    /// Only this household.
    pub household: Option<HouseholdId>,
}

/// One visit waiting for the office's review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueEntry {
    /// Household ID.
    pub household: String,
    /// Village.
    pub village: String,
    /// Grid.
    pub grid: String,
    /// Door number.
    pub door_number: String,
    /// Visit ID.
    pub visit_id: String,
    /// Who visited.
    pub visitor: String,
    /// `completed`, `nobody_home`, ...
    pub outcome: String,
    /// When the visit finished, the phone's clock, UTC ms.
    pub finished_at_ms: Option<i64>,
    /// Photos.
    pub photos: i64,
    /// Signed papers.
    pub evidence: i64,
    /// The rectification task this visit fixes, when it is a fix coming back.
    pub fixes: Option<String>,
    /// Why that task was opened.
    pub fixes_reason: Option<String>,
}

/// The first instant (inclusive) and the next month's first instant (exclusive) of
/// `month` (`YYYY-MM`) in the town's time (UTC+08:00), as UTC milliseconds
/// ([`super::bulletin::Month`]).
///
/// Errors: [`Error::BadRequest`] when `month` is not `YYYY-MM`.
pub fn month_bounds(month: &str) -> Result<(i64, i64)> {
    let m = super::bulletin::Month::parse(month)?;
    Ok((m.start_ms(), m.end_ms()))
}

impl ServerDb {
    /// Rectification tasks `p` may see (`ReadOfficePages`, within its scope) matching
    /// `filter`, newest first, at most 2,000.
    ///
    /// Errors: [`Error::Forbidden`]; [`Error::BadRequest`] for a malformed month.
    pub fn rectifications(
        &self,
        p: &Principal,
        filter: &RectificationFilter,
    ) -> Result<Vec<RectificationRow>> {
        require(p, Permission::ReadOfficePages)?;
        let opened = filter.opened_in.as_deref().map(month_bounds).transpose()?;
        let closed = filter.closed_in.as_deref().map(month_bounds).transpose()?;
        let fixed = filter.fixed_in.as_deref().map(month_bounds).transpose()?;
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT r.rect_id, h.doc_id, h.village, h.grid, h.door_number, r.visit_id, r.source,
                    r.reason, r.opened_by, r.opened_at_ms, r.assignee, r.fixed_visit_id,
                    r.fixed_at_ms, r.note, r.closed_at_ms,
                    CASE WHEN r.closed_at_ms IS NOT NULL THEN 'closed'
                         WHEN r.fixed_visit_id IS NOT NULL THEN 'fixed' ELSE 'open' END AS state
               FROM rectifications r JOIN households h ON h.doc_id = r.doc_id
              WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR h.village = ?2)
                AND (?3 IS NULL OR (r.opened_at_ms >= ?3 AND r.opened_at_ms < ?4))
                AND (?5 IS NULL OR (r.closed_at_ms >= ?5 AND r.closed_at_ms < ?6))
                AND (?7 IS NULL OR h.doc_id = ?7)
                AND (?8 IS NULL OR (r.fixed_at_ms >= ?8 AND r.fixed_at_ms < ?9))
              ORDER BY r.opened_at_ms DESC, r.rect_id",
        )?;
        let rows = stmt.query_map(
            params![
                filter.state,
                filter.village,
                opened.map(|o| o.0),
                opened.map(|o| o.1),
                closed.map(|c| c.0),
                closed.map(|c| c.1),
                filter.household.map(|h| h.0.as_bytes().to_vec()),
                fixed.map(|f| f.0),
                fixed.map(|f| f.1),
            ],
            |r| {
                Ok(RectificationRow {
                    id: r.get(0)?,
                    household: doc_id_text(r, 1)?,
                    village: r.get(2)?,
                    grid: r.get(3)?,
                    door_number: r.get(4)?,
                    visit_id: r.get(5)?,
                    source: r.get(6)?,
                    reason: r.get(7)?,
                    opened_by: r.get(8)?,
                    opened_at_ms: r.get(9)?,
                    assignee: r.get(10)?,
                    fixed_visit_id: r.get(11)?,
                    fixed_at_ms: r.get(12)?,
                    note: r.get(13)?,
                    closed_at_ms: r.get(14)?,
                    state: r.get(15)?,
                })
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let row = row?;
            if p.may(Permission::ReadOfficePages, &row.village, &row.grid) {
                out.push(row);
                if out.len() == 2000 {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The office's review queue (`WriteReview`): finished, not voided visits with no
    /// review yet, and visits that fix a rectification task still waiting for the
    /// office ("the worker's fix comes back into the queue"), fixes first, then oldest
    /// first; at most `limit` (1-1,000).
    ///
    /// Errors: [`Error::Forbidden`].
    pub fn review_queue(&self, p: &Principal, limit: i64) -> Result<Vec<QueueEntry>> {
        require(p, Permission::WriteReview)?;
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT h.doc_id, h.village, h.grid, h.door_number, v.visit_id, v.visitor, v.outcome,
                    v.finished_at_ms, v.photos, v.evidence, r.rect_id, r.reason
               FROM visits v JOIN households h ON h.doc_id = v.doc_id
               LEFT JOIN rectifications r
                      ON r.fixed_visit_id = v.visit_id AND r.closed_at_ms IS NULL
                     AND r.doc_id = v.doc_id
              WHERE v.outcome != 'in_progress' AND v.voided_reason IS NULL
                AND (r.rect_id IS NOT NULL
                     OR NOT EXISTS (SELECT 1 FROM reviews w
                                     WHERE w.visit_id = v.visit_id AND w.doc_id = v.doc_id))
              GROUP BY v.visit_id
              ORDER BY r.rect_id IS NULL, v.finished_at_ms, v.visit_id
              LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit.clamp(1, 1000)], |r| {
            Ok(QueueEntry {
                household: doc_id_text(r, 0)?,
                village: r.get(1)?,
                grid: r.get(2)?,
                door_number: r.get(3)?,
                visit_id: r.get(4)?,
                visitor: r.get(5)?,
                outcome: r.get(6)?,
                finished_at_ms: r.get(7)?,
                photos: r.get(8)?,
                evidence: r.get(9)?,
                fixes: r.get(10)?,
                fixes_reason: r.get(11)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            let row = row?;
            if p.may(Permission::WriteReview, &row.village, &row.grid) {
                out.push(row);
            }
        }
        Ok(out)
    }
}

/// Column `i` of `r`, a 16-byte document ID, as hyphenated text (nil for anything
/// else, which no row written by the server holds).
fn doc_id_text(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(Uuid::from_slice(&r.get::<_, Vec<u8>>(i)?)
        .unwrap_or_default()
        .to_string())
}

fn require(p: &Principal, perm: Permission) -> Result<()> {
    if p.may_at_all(perm) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "a {} account may not do this ({perm:?})",
            p.role.as_str()
        )))
    }
}

// ---------------------------------------------------------------------------------
// Follow-up rounds

/// Where and how big a follow-up sample is ([`ServerDb::draw_follow_up_sample`]).
#[derive(Debug, Clone)]
pub struct DrawRequest {
    /// The village.
    pub village: String,
    /// One grid of it; the whole village when `None`.
    pub grid: Option<String>,
    /// A percentage or a count.
    pub size: SampleSize,
    /// A seed to draw with (to redo a draw); a fresh one from the OS when `None`.
    pub seed: Option<u64>,
}

/// A follow-up round as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoundRow {
    /// Round number.
    pub id: i64,
    /// Village.
    pub village: String,
    /// Grid, `None` for the whole village.
    pub grid: Option<String>,
    /// `percent` or `count`.
    pub method: String,
    /// The percentage or count asked for.
    pub amount: i64,
    /// The seed, decimal.
    pub seed: String,
    /// Households that were candidates.
    pub candidates: i64,
    /// Households drawn.
    pub drawn: i64,
    /// Of those, called (a follow-up call recorded for the sampled visit).
    pub called: i64,
    /// Who drew it.
    pub drawn_by: String,
    /// Server clock, UTC ms.
    pub drawn_at_ms: i64,
}

/// One sampled household of a round, with its call once made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SampleRow {
    /// Order drawn, from 1.
    pub position: i64,
    /// Household ID.
    pub household: String,
    /// Grid.
    pub grid: String,
    /// Door number.
    pub door_number: String,
    /// Head of household.
    pub head_name: String,
    /// The visit to check.
    pub visit_id: String,
    /// Who made the visit.
    pub visitor: String,
    /// The call about that visit, when recorded.
    pub call: Option<FollowUpCall>,
}

impl ServerDb {
    /// Draws a follow-up round (`DrawFollowUpSample`: a supervisor within its scope — a
    /// whole village needs the village in scope, a grid the grid): the candidates are
    /// the households of the village (or grid) whose latest completed visit has no
    /// follow-up call yet; [`sampling::draw`] picks the sample with the seed, which is
    /// recorded with the round, the candidates' count and the households drawn, each at
    /// most once. Audited. Returns the round's number.
    ///
    /// Errors: [`Error::Forbidden`]; [`Error::BadRequest`] for an unknown village, a
    /// percentage outside 1-100, a count outside 1-10,000, or no candidate at all.
    pub fn draw_follow_up_sample(&self, p: &Principal, req: &DrawRequest) -> Result<i64> {
        require(p, Permission::DrawFollowUpSample)?;
        let village = req.village.trim();
        let grid = req.grid.as_deref().map(str::trim).filter(|g| !g.is_empty());
        let allowed = match grid {
            Some(g) => p.may(Permission::DrawFollowUpSample, village, g),
            None => p.may_place(Permission::DrawFollowUpSample, village),
        };
        if !allowed {
            return Err(Error::Forbidden(
                "this village or grid is outside the account's scope".into(),
            ));
        }
        let (method, amount) = match req.size {
            SampleSize::Percent(n) if (1..=100).contains(&n) => ("percent", n),
            SampleSize::Count(n) if (1..=10_000).contains(&n) => ("count", n),
            _ => {
                return Err(Error::BadRequest(
                    "a sample is 1 to 100 percent or 1 to 10,000 households".into(),
                ));
            }
        };
        let seed = match req.seed {
            Some(s) => s,
            None => sampling::new_seed().map_err(internal)?,
        };
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let known: bool = tx
            .prepare_cached(
                "SELECT 1 FROM households WHERE village = ?1 AND (?2 IS NULL OR grid = ?2)",
            )?
            .exists(params![village, grid])?;
        if !known {
            return Err(Error::BadRequest(
                "no household in this village or grid".into(),
            ));
        }
        let candidates: Vec<(Uuid, String)> = {
            let mut stmt = tx.prepare(
                "SELECT doc_id, visit_id FROM (
                     SELECT v.doc_id, v.visit_id, row_number() OVER (
                              PARTITION BY v.doc_id ORDER BY v.started_at_ms DESC, v.visit_id DESC) AS rn
                       FROM visits v JOIN households h ON h.doc_id = v.doc_id
                      WHERE h.village = ?1 AND (?2 IS NULL OR h.grid = ?2)
                        AND v.outcome = 'completed' AND v.voided_reason IS NULL) latest
                  WHERE rn = 1
                    AND NOT EXISTS (SELECT 1 FROM follow_up_calls f
                                     WHERE f.doc_id = latest.doc_id AND f.visit_id = latest.visit_id)",
            )?;
            stmt.query_map(params![village, grid], |r| {
                Ok((
                    Uuid::from_slice(&r.get::<_, Vec<u8>>(0)?).unwrap_or_default(),
                    r.get(1)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        if candidates.is_empty() {
            return Err(Error::BadRequest(
                "no visited household here is waiting for a follow-up call".into(),
            ));
        }
        let drawn = sampling::draw(&candidates, req.size, seed);
        tx.execute(
            "INSERT INTO follow_up_rounds (village, grid, method, amount, seed, candidates,
                 drawn_by, drawn_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                village,
                grid,
                method,
                amount,
                seed.to_string(),
                candidates.len() as i64,
                p.username,
                now
            ],
        )?;
        let round = tx.last_insert_rowid();
        for (doc, visit) in &candidates {
            tx.execute(
                "INSERT INTO follow_up_candidates (round_id, doc_id, visit_id) VALUES (?1, ?2, ?3)",
                params![round, &doc.as_bytes()[..], visit],
            )?;
        }
        for (i, (doc, visit)) in drawn.iter().enumerate() {
            tx.execute(
                "INSERT INTO follow_up_samples (round_id, doc_id, position, visit_id)
                 VALUES (?1, ?2, ?3, ?4)",
                params![round, &doc.as_bytes()[..], i as i64 + 1, visit],
            )?;
        }
        audit::append(
            &tx,
            &self.server_key,
            now,
            &p.username,
            None,
            "follow_up_draw",
            &format!("round {round}"),
            json!({
                "village": village, "grid": grid, "method": method, "amount": amount,
                "seed": seed.to_string(), "candidates": candidates.len(), "drawn": drawn.len(),
            }),
        )?;
        tx.commit()?;
        Ok(round)
    }

    /// The follow-up rounds `p` may see (`DrawFollowUpSample` or `ReadOfficePages`,
    /// villages in scope), newest first.
    ///
    /// Errors: [`Error::Forbidden`].
    pub fn follow_up_rounds(&self, p: &Principal) -> Result<Vec<RoundRow>> {
        if !p.may_at_all(Permission::DrawFollowUpSample) {
            require(p, Permission::ReadOfficePages)?;
        }
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT r.id, r.village, r.grid, r.method, r.amount, r.seed, r.candidates,
                    (SELECT count(*) FROM follow_up_samples s WHERE s.round_id = r.id),
                    (SELECT count(*) FROM follow_up_samples s
                      WHERE s.round_id = r.id
                        AND EXISTS (SELECT 1 FROM follow_up_calls f
                                     WHERE f.doc_id = s.doc_id AND f.visit_id = s.visit_id)),
                    r.drawn_by, r.drawn_at_ms
               FROM follow_up_rounds r ORDER BY r.id DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RoundRow {
                id: r.get(0)?,
                village: r.get(1)?,
                grid: r.get(2)?,
                method: r.get(3)?,
                amount: r.get(4)?,
                seed: r.get(5)?,
                candidates: r.get(6)?,
                drawn: r.get(7)?,
                called: r.get(8)?,
                drawn_by: r.get(9)?,
                drawn_at_ms: r.get(10)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            let row = row?;
            if round_visible(p, &row.village, row.grid.as_deref()) {
                out.push(row);
                if out.len() == 500 {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// One round and its sampled households in the order drawn, each with the call
    /// recorded for its sampled visit.
    ///
    /// Errors: [`Error::Forbidden`]; [`Error::NotFound`] for an unknown round or one
    /// outside the scope.
    pub fn follow_up_round(&self, p: &Principal, id: i64) -> Result<(RoundRow, Vec<SampleRow>)> {
        let round = self
            .follow_up_rounds(p)?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| Error::NotFound("no such follow-up round".into()))?;
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT s.position, h.doc_id, h.grid, h.door_number, h.head_name, s.visit_id,
                    coalesce(v.visitor, ''), f.by_user, f.called_at_ms, f.reached, f.confirmed,
                    f.understood, f.remarks
               FROM follow_up_samples s JOIN households h ON h.doc_id = s.doc_id
               LEFT JOIN visits v ON v.visit_id = s.visit_id AND v.doc_id = s.doc_id
               LEFT JOIN follow_up_calls f ON f.doc_id = s.doc_id AND f.call_id =
                    (SELECT call_id FROM follow_up_calls g
                      WHERE g.doc_id = s.doc_id AND g.visit_id = s.visit_id
                      ORDER BY g.called_at_ms DESC LIMIT 1)
              WHERE s.round_id = ?1 ORDER BY s.position",
        )?;
        let rows = stmt
            .query_map([id], |r| {
                let by: Option<String> = r.get(7)?;
                let visit_id: String = r.get(5)?;
                let call = match by {
                    Some(by) => Some(FollowUpCall {
                        visit_id: visit_id.clone(),
                        by,
                        called_at_ms: r.get(8)?,
                        reached: r.get(9)?,
                        confirmed: r.get(10)?,
                        understood: r.get(11)?,
                        remarks: r.get(12)?,
                    }),
                    None => None,
                };
                Ok(SampleRow {
                    position: r.get(0)?,
                    household: doc_id_text(r, 1)?,
                    grid: r.get(2)?,
                    door_number: r.get(3)?,
                    head_name: r.get(4)?,
                    visit_id,
                    visitor: r.get(6)?,
                    call,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((round, rows))
    }

    /// Draws round `id` again from its recorded candidates and seed
    /// ([`sampling::draw`]) and says whether that gives the households recorded, in the
    /// same order: anyone can check that a round was drawn at random as recorded.
    ///
    /// Errors: as [`ServerDb::follow_up_round`].
    pub fn redraw_matches(&self, p: &Principal, id: i64) -> Result<bool> {
        let (round, samples) = self.follow_up_round(p, id)?;
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT doc_id, visit_id FROM follow_up_candidates WHERE round_id = ?1")?;
        let candidates: Vec<(Uuid, String)> = stmt
            .query_map([id], |r| {
                Ok((
                    Uuid::from_slice(&r.get::<_, Vec<u8>>(0)?).unwrap_or_default(),
                    r.get(1)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let amount = u32::try_from(round.amount).unwrap_or(0);
        let size = if round.method == "percent" {
            SampleSize::Percent(amount)
        } else {
            SampleSize::Count(amount)
        };
        let Ok(seed) = round.seed.parse::<u64>() else {
            return Ok(false);
        };
        let drawn: Vec<String> = sampling::draw(&candidates, size, seed)
            .into_iter()
            .map(|(h, _)| h.to_string())
            .collect();
        let recorded: Vec<String> = samples.into_iter().map(|s| s.household).collect();
        Ok(candidates.len() as i64 == round.candidates && drawn == recorded)
    }

    /// Records a follow-up call made from the web on `p`'s behalf (`WriteFollowUpCall`,
    /// the household in scope), checked by the phone's own rule
    /// ([`doorstep_core::store::check_follow_up_call`]); a call that finds the visit
    /// denied or not understood flags the visit and opens a rectification task. Audited.
    /// Returns the call's ID.
    ///
    /// Errors: [`Error::Forbidden`]/[`Error::NotFound`] out of scope;
    /// [`Error::NotFound`] for an unknown visit; [`Error::BadRequest`] naming the field
    /// that breaks the rule.
    pub fn record_follow_up_call_as(
        &self,
        p: &Principal,
        household: HouseholdId,
        call: FollowUpCall,
    ) -> Result<String> {
        self.check_household(p, Permission::WriteFollowUpCall, household)?;
        let call = FollowUpCall {
            by: p.username.clone(),
            remarks: call.remarks.trim().to_string(),
            ..call
        };
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut doc = load_doc(&tx, household.0)?.with_actor(self.actor.clone());
        let h = model::read_household(&doc).map_err(internal)?;
        let visit = h
            .visits
            .get(&call.visit_id)
            .ok_or_else(|| Error::NotFound("no such visit in this household".into()))?;
        doorstep_core::store::check_follow_up_call(visit, &call).map_err(|e| match e {
            doorstep_core::error::Error::Invalid { field, reason } => {
                Error::BadRequest(format!("{field}: {reason}"))
            }
            e => internal(e),
        })?;
        if call.called_at_ms > now + 5 * 60_000 {
            return Err(Error::BadRequest(
                "called_at_ms: the call is in the future".into(),
            ));
        }
        let before = doc.get_heads();
        let id = Uuid::new_v4().to_string();
        model::add_follow_up_call(&mut doc, &id, &call, now).map_err(internal)?;
        let h = model::read_household(&doc).map_err(internal)?;
        let task = flag_from_call(&mut doc, &h, &call, now)?;
        store_server_changes(&tx, household.0, &doc, &before, now)?;
        project_household(&tx, &self.lookup, household.0, &mut doc, now)?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            &p.username,
            None,
            "follow_up_call",
            &household.to_string(),
            json!({
                "visit": call.visit_id, "reached": call.reached, "confirmed": call.confirmed,
                "understood": call.understood, "rectification": task,
            }),
        )?;
        tx.commit()?;
        Ok(id)
    }
}

fn round_visible(p: &Principal, village: &str, grid: Option<&str>) -> bool {
    [Permission::DrawFollowUpSample, Permission::ReadOfficePages]
        .into_iter()
        .any(|perm| match grid {
            Some(g) => p.may(perm, village, g),
            None => p.may_place(perm, village),
        })
}

// ---------------------------------------------------------------------------------
// Directives

/// A directive as the office writes it ([`ServerDb::publish_directive`]).
#[derive(Debug, Clone)]
pub struct DirectiveInput {
    /// Directive, work bulletin or warning.
    pub category: DirectiveCategory,
    /// Title, 1-100 characters.
    pub title: String,
    /// Text, 1-5,000 characters.
    pub body: String,
    /// Villages and units it goes to, by name (known places only).
    pub places: Vec<String>,
    /// Hours to acknowledge it (1-720).
    pub ack_within_hours: u32,
    /// Hours to push it on (1-720).
    pub push_within_hours: u32,
}

/// One place's state for a directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaceState {
    /// Village or unit.
    pub place: String,
    /// Who acknowledged, and when (UTC ms).
    pub acknowledged: Option<(String, i64)>,
    /// Who confirmed the push, and when (UTC ms).
    pub pushed: Option<(String, i64)>,
    /// Milliseconds past the acknowledgement deadline: by the time it was acknowledged,
    /// or by now when it was not; `None` when on time.
    pub ack_late_ms: Option<i64>,
    /// The same for the push.
    pub push_late_ms: Option<i64>,
}

/// A directive with its places, as the pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectiveView {
    /// Document ID.
    pub id: String,
    /// `directive`, `bulletin` or `warning`.
    pub category: String,
    /// Title.
    pub title: String,
    /// Text.
    pub body: String,
    /// The office account.
    pub published_by: String,
    /// Server clock, UTC ms.
    pub published_at_ms: i64,
    /// Deadline to acknowledge, UTC ms.
    pub ack_due_ms: i64,
    /// Deadline to push on, UTC ms.
    pub push_due_ms: i64,
    /// The places `p` may see (every place for the office; its own for a liaison).
    pub places: Vec<PlaceState>,
}

fn late(done: Option<i64>, due: i64, now: i64) -> Option<i64> {
    let at = done.unwrap_or(now);
    (at > due).then_some(at - due)
}

impl ServerDb {
    /// Villages (of the households and the responsible-persons list) and units (of
    /// that list) a directive may go to, sorted.
    ///
    /// Errors: [`Error::Db`].
    pub fn known_places(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let has_places: bool = conn
            .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'places'")?
            .exists([])?;
        let sql = if has_places {
            "SELECT DISTINCT village FROM households UNION SELECT name FROM places ORDER BY 1"
        } else {
            "SELECT DISTINCT village FROM households ORDER BY 1"
        };
        let mut stmt = conn.prepare(sql)?;
        Ok(stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Publishes a directive (`PublishDirective`): a new document written by the
    /// server's actor, projected, and sent to the liaisons of its places at their next
    /// sync. Audited. Returns its ID.
    ///
    /// Errors: [`Error::Forbidden`]; [`Error::BadRequest`] for a title or text out of
    /// bounds, no place, an unknown place, or deadlines outside 1-720 hours.
    pub fn publish_directive(&self, p: &Principal, input: &DirectiveInput) -> Result<Uuid> {
        require(p, Permission::PublishDirective)?;
        let title = input.title.trim();
        let body = input.body.trim();
        if title.is_empty() || title.chars().count() > 100 || title.chars().any(char::is_control) {
            return Err(Error::BadRequest(
                "title: 1 to 100 characters, on one line".into(),
            ));
        }
        if body.is_empty()
            || body.chars().count() > 5000
            || body
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r')
        {
            return Err(Error::BadRequest("body: 1 to 5,000 characters".into()));
        }
        for h in [input.ack_within_hours, input.push_within_hours] {
            if !(1..=720).contains(&h) {
                return Err(Error::BadRequest(
                    "deadlines are 1 to 720 hours after publishing".into(),
                ));
            }
        }
        let places: BTreeSet<String> = input
            .places
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if places.is_empty() {
            return Err(Error::BadRequest(
                "places: choose at least one village or unit".into(),
            ));
        }
        let known: BTreeSet<String> = self.known_places()?.into_iter().collect();
        if let Some(unknown) = places.iter().find(|p| !known.contains(*p)) {
            return Err(Error::BadRequest(format!(
                "places: {unknown} is not a known village or unit"
            )));
        }
        let now = now_ms();
        let id = Uuid::new_v4();
        let d = Directive {
            schema: directive::DIRECTIVE_SCHEMA,
            kind: "directive".into(),
            id: id.to_string(),
            category: input.category.as_str().into(),
            title: title.into(),
            body: body.into(),
            published_by: p.username.clone(),
            published_at_ms: now,
            ack_due_ms: now + i64::from(input.ack_within_hours) * 3_600_000,
            push_due_ms: now + i64::from(input.push_within_hours) * 3_600_000,
            places: places.into_iter().collect(),
            acknowledgements: BTreeMap::new(),
            pushes: BTreeMap::new(),
        };
        let doc = directive::new_directive_doc(&d, self.actor.clone(), now).map_err(internal)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changes: Vec<Change> = doc.get_changes(&[]).into_iter().collect();
        let seq = append_changes(&tx, id, &changes, None, now)?
            .into_iter()
            .max()
            .unwrap_or(0);
        tx.execute(
            "INSERT INTO documents (doc_id, kind, village, grid, bytes, first_seq, last_seq, updated_at_ms)
             VALUES (?1, 'directive', '', '', ?2, ?3, ?3, ?4)",
            params![&id.as_bytes()[..], doc.save(), seq, now],
        )?;
        project_directive(&tx, id, &d)?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            &p.username,
            None,
            "directive_published",
            &id.to_string(),
            json!({"category": d.category, "places": d.places, "title_chars": d.title.chars().count()}),
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// The directives `p` may see, newest first: every one for the office
    /// (`PublishDirective`), those of its places for a liaison (`AcknowledgeDirective`),
    /// each with the places `p` may see.
    ///
    /// Errors: [`Error::Forbidden`] for other roles.
    pub fn directives(&self, p: &Principal) -> Result<Vec<DirectiveView>> {
        self.directives_where(p, None)
    }

    /// [`ServerDb::directives`], all of them or only the one `id`.
    fn directives_where(&self, p: &Principal, id: Option<Uuid>) -> Result<Vec<DirectiveView>> {
        let office = p.may_at_all(Permission::PublishDirective);
        if !office {
            require(p, Permission::AcknowledgeDirective)?;
        }
        let now = now_ms();
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT doc_id, category, title, body, published_by, published_at_ms, ack_due_ms,
                    push_due_ms
               FROM directives WHERE ?1 IS NULL OR doc_id = ?1
              ORDER BY published_at_ms DESC",
        )?;
        let heads: Vec<(Vec<u8>, DirectiveView)> = stmt
            .query_map([id.map(|i| i.as_bytes().to_vec())], |r| {
                let raw: Vec<u8> = r.get(0)?;
                Ok((
                    raw.clone(),
                    DirectiveView {
                        id: Uuid::from_slice(&raw).unwrap_or_default().to_string(),
                        category: r.get(1)?,
                        title: r.get(2)?,
                        body: r.get(3)?,
                        published_by: r.get(4)?,
                        published_at_ms: r.get(5)?,
                        ack_due_ms: r.get(6)?,
                        push_due_ms: r.get(7)?,
                        places: Vec::new(),
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut places = conn.prepare(
            "SELECT place, acknowledged_by, acknowledged_at_ms, pushed_by, pushed_at_ms
               FROM directive_places WHERE doc_id = ?1 ORDER BY place",
        )?;
        let mut out = Vec::new();
        for (raw, mut view) in heads {
            let rows = places.query_map([&raw], |r| {
                let ack_by: Option<String> = r.get(1)?;
                let ack_at: Option<i64> = r.get(2)?;
                let push_by: Option<String> = r.get(3)?;
                let push_at: Option<i64> = r.get(4)?;
                Ok(PlaceState {
                    place: r.get(0)?,
                    acknowledged: ack_by.zip(ack_at),
                    pushed: push_by.zip(push_at),
                    ack_late_ms: late(ack_at, view.ack_due_ms, now),
                    push_late_ms: late(push_at, view.push_due_ms, now),
                })
            })?;
            for row in rows {
                let row = row?;
                if office || p.may_place(Permission::AcknowledgeDirective, &row.place) {
                    view.places.push(row);
                }
            }
            if !view.places.is_empty() {
                out.push(view);
                if out.len() == 1000 {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// One directive as [`ServerDb::directives`] shows it.
    ///
    /// Errors: [`Error::Forbidden`]; [`Error::NotFound`] when unknown or not `p`'s.
    pub fn directive(&self, p: &Principal, id: Uuid) -> Result<DirectiveView> {
        self.directives_where(p, Some(id))?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound("no such directive".into()))
    }

    /// Acknowledges directive `id` (or confirms its push) for `place` from the web, on
    /// the place's liaison's behalf (`AcknowledgeDirective`, the place in scope), now.
    /// A push needs the acknowledgement first; a place is marked once. Audited.
    ///
    /// Errors: [`Error::Forbidden`]; [`Error::NotFound`] for an unknown directive or a
    /// place it does not go to; [`Error::Conflict`] when already marked, or pushing
    /// before acknowledging.
    pub fn mark_directive_as(
        &self,
        p: &Principal,
        id: Uuid,
        place: &str,
        kind: MarkKind,
    ) -> Result<()> {
        require(p, Permission::AcknowledgeDirective)?;
        if !p.may_place(Permission::AcknowledgeDirective, place) {
            return Err(Error::Forbidden(
                "this village or unit is outside the account's scope".into(),
            ));
        }
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let kind_of: Option<String> = tx
            .query_row(
                "SELECT kind FROM documents WHERE doc_id = ?1",
                [&id.as_bytes()[..]],
                |r| r.get(0),
            )
            .optional()?;
        if kind_of.as_deref() != Some("directive") {
            return Err(Error::NotFound("no such directive".into()));
        }
        let mut doc = load_doc(&tx, id)?.with_actor(self.actor.clone());
        let d = directive::read_directive(&doc).map_err(internal)?;
        if !d.places.iter().any(|x| x == place) {
            return Err(Error::NotFound(
                "the directive does not go to this place".into(),
            ));
        }
        let marks = match kind {
            MarkKind::Acknowledged => &d.acknowledgements,
            MarkKind::Pushed => &d.pushes,
        };
        if marks.contains_key(place) {
            return Err(Error::Conflict("this place is marked so already".into()));
        }
        if kind == MarkKind::Pushed && !d.acknowledgements.contains_key(place) {
            return Err(Error::Conflict(
                "acknowledge the directive before confirming the push".into(),
            ));
        }
        let before = doc.get_heads();
        let mark = DirectiveMark {
            by: p.username.clone(),
            device_id: String::new(),
            at_ms: now,
        };
        directive::put_mark(&mut doc, kind, place, &mark, now).map_err(internal)?;
        store_server_changes(&tx, id, &doc, &before, now)?;
        let d = directive::read_directive(&doc).map_err(internal)?;
        project_directive(&tx, id, &d)?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            &p.username,
            None,
            match kind {
                MarkKind::Acknowledged => "directive_acknowledged",
                MarkKind::Pushed => "directive_pushed",
            },
            &id.to_string(),
            json!({"place": place}),
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// Checks one change a liaison's phone pushed to a directive (`before` → `after`): it
/// writes only the `acknowledgements` and `pushes` entries of places that are the
/// directive's and in the account's scope (`AcknowledgeDirective`), adds marks only
/// (never changes or removes one), names the pushing account and device, and pushes
/// only what is acknowledged. Returns the refusal's reason.
fn directive_change_allowed(
    before: &Automerge,
    after: &Automerge,
    change: &Change,
    principal: &Principal,
    device_id: &str,
    now: i64,
) -> std::result::Result<(), String> {
    use automerge::legacy::OpType;
    if change.is_empty() {
        return Err("an empty change writes nothing".into());
    }
    if change.raw_bytes().len() > 64 * 1024 {
        return Err("a directive's mark is a few bytes; the change is larger than 64 KiB".into());
    }
    // Only new maps (a mark) and scalars (its fields): no deletion, no text, list,
    // counter or text mark (automerge 0.12 accepts mark operations in an order its own
    // loader then refuses).
    for op in change.decode().operations {
        match op.action {
            OpType::Make(automerge::ObjType::Map) | OpType::Put(_) => {}
            _ => return Err("a directive's mark is a map of three fields".into()),
        }
    }
    let old = directive::read_directive(before).map_err(|_| "not a directive".to_string())?;
    let new = directive::read_directive(after)
        .map_err(|_| "the change leaves the directive unreadable".to_string())?;
    let own = |place: &str| {
        old.places.iter().any(|p| p == place)
            && principal.may_place(Permission::AcknowledgeDirective, place)
    };
    for (root, second) in op_paths(after, change)? {
        let place_ok = second.as_deref().is_some_and(own);
        if !matches!(root.as_str(), "acknowledgements" | "pushes") || !place_ok {
            return Err(format!(
                "a {} may write only its own places' acknowledgements and pushes of a directive",
                principal.role.as_str()
            ));
        }
        if let Some(place) = &second
            && !mark_is_plain(after, &root, place)
        {
            return Err("a mark holds fields other than by, device_id and at_ms".into());
        }
    }
    let unchanged = Directive {
        acknowledgements: old.acknowledgements.clone(),
        pushes: old.pushes.clone(),
        ..new.clone()
    };
    if unchanged != old {
        return Err("only the office changes a directive's text, places and deadlines".into());
    }
    for (kind, old_marks, new_marks) in [
        (
            "acknowledgement",
            &old.acknowledgements,
            &new.acknowledgements,
        ),
        ("push", &old.pushes, &new.pushes),
    ] {
        for (place, mark) in old_marks {
            if new_marks.get(place) != Some(mark) {
                return Err(format!("a directive's {kind} is written once"));
            }
        }
        for (place, mark) in new_marks {
            if old_marks.contains_key(place) {
                continue;
            }
            if !own(place) {
                return Err(format!("a {kind} for a place that is not this account's"));
            }
            if mark.by != principal.username || mark.device_id != device_id {
                return Err(format!("a {kind} names another person or phone"));
            }
            // Not before the directive was published, nor later than now (a few
            // minutes of clock skew allowed): lateness is measured from it.
            if mark.at_ms < old.published_at_ms || mark.at_ms > now + 10 * 60_000 {
                return Err(format!(
                    "a {kind}'s time is before the directive or in the future"
                ));
            }
        }
    }
    if new
        .pushes
        .keys()
        .any(|place| !new.acknowledgements.contains_key(place))
    {
        return Err("a directive is acknowledged before its push is confirmed".into());
    }
    Ok(())
}

/// Whether the mark of `place` in the root map `map` of `doc` is a map holding only
/// the scalars `by`, `device_id` and `at_ms` (hydration alone would ignore extra keys,
/// which would then travel to every liaison's phone).
fn mark_is_plain(doc: &Automerge, map: &str, place: &str) -> bool {
    let Ok(Some((automerge::Value::Object(automerge::ObjType::Map), marks))) =
        doc.get(automerge::ROOT, map)
    else {
        return false;
    };
    let Ok(Some((automerge::Value::Object(automerge::ObjType::Map), mark))) =
        doc.get(&marks, place)
    else {
        return false;
    };
    doc.keys(&mark).all(|k| {
        matches!(k.as_str(), "by" | "device_id" | "at_ms")
            && matches!(
                doc.get(&mark, k.as_str()),
                Ok(Some((automerge::Value::Scalar(_), _)))
            )
    })
}

impl Push<'_> {
    /// Checks, applies and stores the changes a liaison's phone pushed to a directive:
    /// each change on its own, refused with a reason unless made by this device, built
    /// on changes the server holds, and allowed by [`directive_change_allowed`];
    /// acknowledged when stored or already held; left unanswered while its
    /// dependencies have not arrived.
    pub(super) fn directive_doc(
        &mut self,
        doc_id: Uuid,
        bytes: &[u8],
        parsed: &[(Vec<u8>, &ByteBuf, Option<Change>)],
        resp: &mut SyncResponse,
    ) -> Result<()> {
        let principal = self.device.principal();
        let mut doc = Automerge::load(bytes).map_err(internal)?;
        let in_reach = directive::read_directive(&doc)
            .map(|d| {
                d.places
                    .iter()
                    .any(|p| principal.may_place(Permission::AcknowledgeDirective, p))
            })
            .unwrap_or(false);
        let actor = self.device.device_id.actor();
        let device_id = self.device.device_id.to_string();
        let mut accepted = Vec::new();
        for (hash, raw, change) in parsed {
            let reason = match change {
                None => Some("not a valid Automerge change".to_string()),
                Some(_) if !in_reach => Some(
                    "the household is not known to the server or outside this account's scope"
                        .to_string(),
                ),
                Some(c) if c.actor_id() != &actor => {
                    Some("the change was made by another device".to_string())
                }
                Some(c) if doc.get_change_by_hash(&c.hash()).is_some() => {
                    resp.acked.push(ByteBuf::from(hash.clone()));
                    continue;
                }
                Some(c) if c.deps().iter().any(|d| doc.get_change_by_hash(d).is_none()) => {
                    if self.was_refused(c.deps().iter())? {
                        Some("it builds on a change that was refused".to_string())
                    } else {
                        continue;
                    }
                }
                Some(c) => {
                    let trial = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut trial = doc.fork();
                        trial.apply_changes([c.clone()]).ok().map(|_| trial)
                    }))
                    .ok()
                    .flatten();
                    match trial {
                        None => Some("the change could not be applied".to_string()),
                        Some(trial) => {
                            match directive_change_allowed(
                                &doc, &trial, c, &principal, &device_id, self.now,
                            ) {
                                Ok(()) => {
                                    doc = trial;
                                    accepted.push(c.clone());
                                    None
                                }
                                Err(reason) => Some(reason),
                            }
                        }
                    }
                }
            };
            if let Some(reason) = reason {
                self.refuse(resp, doc_id, hash, raw, &reason)?;
            }
        }
        if accepted.is_empty() {
            return Ok(());
        }
        // As for households: a push that would leave the directive unloadable is
        // refused whole (only a tampered app writes one).
        let loads = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Automerge::load(&doc.save()).is_ok()
        }))
        .unwrap_or(false);
        if !loads {
            for c in &accepted {
                let hash = c.hash().0.to_vec();
                self.refuse(
                    resp,
                    doc_id,
                    &hash,
                    c.raw_bytes(),
                    "the changes of this push leave the directive unreadable",
                )?;
            }
            return Ok(());
        }
        append_changes(
            self.tx,
            doc_id,
            &accepted,
            Some(&self.device.device_id),
            self.now,
        )?;
        resp.acked
            .extend(accepted.iter().map(|c| ByteBuf::from(c.hash().0.to_vec())));
        self.tx.execute(
            "UPDATE documents SET bytes = ?2,
                 last_seq = (SELECT max(seq) FROM change_log WHERE doc_id = ?1), updated_at_ms = ?3
               WHERE doc_id = ?1",
            params![&doc_id.as_bytes()[..], doc.save(), self.now],
        )?;
        let d = directive::read_directive(&doc).map_err(internal)?;
        project_directive(self.tx, doc_id, &d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{GridRef, Role, Scope};
    use crate::db::tests::Phone;
    use automerge::transaction::Transactable;
    use doorstep_core::model::{DeviceId, Visit, VisitId, VisitOutcome};
    use doorstep_core::protocol::DocChanges;

    const VILLAGE: &str = "测试村";
    const GRID: &str = "测试村第1网格";

    fn principal(username: &str, role: Role, scope: Scope) -> Principal {
        Principal {
            user_id: 0,
            username: username.into(),
            role,
            scope,
        }
    }

    fn office() -> Principal {
        principal("office", Role::Office, Scope::town())
    }

    fn completed_visit(visitor: &str, started_at_ms: i64) -> Visit {
        Visit {
            visitor: visitor.into(),
            device_id: DeviceId::new().to_string(),
            started_at_ms,
            finished_at_ms: Some(started_at_ms + 600_000),
            outcome: Some(VisitOutcome::Completed),
            outcome_reason: String::new(),
            voided: None,
            target_groups_reached: vec![],
            remarks: String::new(),
            photos: BTreeMap::new(),
            location: None,
        }
    }

    /// A server with `n` households in one grid, each visited (completed) by `w1`, a
    /// grid worker `w1`, a supervisor `s1` on the village, and a liaison `l1` for the
    /// police station.
    fn setup(n: usize) -> (tempfile::TempDir, ServerDb, Vec<(HouseholdId, String)>) {
        let dir = tempfile::tempdir().unwrap();
        let db = ServerDb::open(dir.path()).unwrap();
        let mut households = Vec::new();
        let mut visits = Vec::new();
        for i in 0..n {
            let id = HouseholdId::new();
            let mut h = Household::new(id, VILLAGE, GRID, &format!("{i}号"));
            let v = VisitId::new().to_string();
            h.visits.insert(
                v.clone(),
                completed_visit("w1", 1_780_000_000_000 + i as i64),
            );
            households.push(h);
            visits.push((id, v));
        }
        db.import_households(&households).unwrap();
        let grid = Scope::grids(vec![GridRef::new(VILLAGE, GRID)]);
        db.add_user("w1", "password-1", Role::GridWorker, &grid, "(test)")
            .unwrap();
        db.add_user(
            "s1",
            "password-1",
            Role::Supervisor,
            &Scope::villages(vec![VILLAGE.into()]),
            "(test)",
        )
        .unwrap();
        db.add_user(
            "l1",
            "password-1",
            Role::Liaison,
            &Scope::units(vec!["镇派出所".into()]),
            "(test)",
        )
        .unwrap();
        (dir, db, visits)
    }

    fn rect_rows(db: &ServerDb) -> Vec<RectificationRow> {
        db.rectifications(&office(), &RectificationFilter::default())
            .unwrap()
    }

    /// A change made on `phone`'s copy of `doc` by `f`, as the phone would push it.
    fn phone_change(phone: &mut Phone, doc: Uuid, f: impl FnOnce(&mut Automerge)) -> DocChanges {
        changes_on(phone, doc, f, true)
    }

    /// The same, kept in the phone's copy only when `keep` (a refused change that is
    /// not kept does not stop the next ones).
    fn changes_on(
        phone: &mut Phone,
        doc: Uuid,
        f: impl FnOnce(&mut Automerge),
        keep: bool,
    ) -> DocChanges {
        let actor = phone.device.device_id.actor();
        let held = phone
            .docs
            .get_mut(&doc)
            .expect("the phone holds the document");
        let mut mine = held.fork().with_actor(actor);
        let before = mine.get_heads();
        f(&mut mine);
        let changes: Vec<ByteBuf> = mine
            .get_changes(&before)
            .iter()
            .map(|c| ByteBuf::from(c.raw_bytes().to_vec()))
            .collect();
        for c in changes.iter().filter(|_| keep) {
            held.load_incremental(c).unwrap();
        }
        DocChanges { doc, changes }
    }

    fn fix_of(phone: &Phone, visit: &str, by: &str) -> model::RectificationFix {
        model::RectificationFix {
            visit_id: visit.into(),
            by: by.into(),
            device_id: phone.device.device_id.to_string(),
            at_ms: 1_780_000_100_000,
            note: "已补签承诺书".into(),
        }
    }

    #[test]
    fn a_flagged_visit_goes_to_its_worker_and_the_fix_comes_back_to_the_queue() {
        let (_dir, db, visits) = setup(2);
        let (hid, visit) = visits[0].clone();
        assert_eq!(db.review_queue(&office(), 100).unwrap().len(), 2);
        db.write_review(
            &office(),
            hid,
            &visit,
            ReviewState::HasIssues,
            "照片看不清门牌",
        )
        .unwrap();
        let rows = rect_rows(&db);
        assert_eq!(rows.len(), 1);
        let task = rows[0].id.clone();
        assert_eq!(
            (rows[0].state.as_str(), rows[0].assignee.as_str()),
            ("open", "w1")
        );
        assert_eq!(rows[0].source, "review");
        // Flagged again: still one task.
        db.write_review(
            &office(),
            hid,
            &visit,
            ReviewState::HasIssues,
            "照片看不清门牌",
        )
        .unwrap();
        assert_eq!(rect_rows(&db).len(), 1);
        assert_eq!(
            db.review_queue(&office(), 100).unwrap().len(),
            1,
            "reviewed"
        );

        let mut worker = Phone::new(&db, "w1");
        worker.sync(&db);
        let h = model::read_household(&worker.docs[&hid.0]).unwrap();
        assert_eq!(
            h.rectifications[&task].reason, "照片看不清门牌",
            "the task reached the phone"
        );

        // A fix in a colleague's name, and one for a task that does not exist: refused.
        let bad = fix_of(&worker, &visit, "w2");
        let push = phone_change(&mut worker, hid.0, |d| {
            model::put_rectification_fix(d, &task, &bad, 1).unwrap()
        });
        let resp = worker.exchange(&db, vec![push]);
        assert_eq!(resp.rejected.len(), 1, "{:?}", resp.rejected);
        assert!(resp.rejected[0].reason.contains("rectification fix"));
        let mut worker = Phone::new(&db, "w1");
        worker.sync(&db);
        let fix = fix_of(&worker, &visit, "w1");
        let push = phone_change(&mut worker, hid.0, |d| {
            model::put_rectification_fix(d, "no-such-task", &fix, 1).unwrap()
        });
        assert_eq!(worker.exchange(&db, vec![push]).rejected.len(), 1);

        // The honest fix is taken, and the visit is back in the queue as a fix.
        let mut worker = Phone::new(&db, "w1");
        worker.sync(&db);
        let fix = fix_of(&worker, &visit, "w1");
        let push = phone_change(&mut worker, hid.0, |d| {
            model::put_rectification_fix(d, &task, &fix, 1).unwrap()
        });
        let resp = worker.exchange(&db, vec![push]);
        assert!(resp.rejected.is_empty(), "{:?}", resp.rejected);
        assert_eq!(rect_rows(&db)[0].state, "fixed");
        let queue = db.review_queue(&office(), 100).unwrap();
        assert_eq!(queue[0].visit_id, visit, "fixes come first");
        assert_eq!(queue[0].fixes.as_deref(), Some(task.as_str()));

        // A supervisor's phone may not write a fix.
        let mut sup = Phone::new(&db, "s1");
        sup.sync(&db);
        let fix = fix_of(&sup, &visit, "s1");
        let push = phone_change(&mut sup, hid.0, |d| {
            model::put_rectification_fix(d, &task, &fix, 1).unwrap()
        });
        let resp = sup.exchange(&db, vec![push]);
        assert!(
            resp.rejected[0].reason.contains("FixRectification"),
            "{:?}",
            resp.rejected
        );

        db.write_review(&office(), hid, &visit, ReviewState::Approved, "")
            .unwrap();
        let row = &rect_rows(&db)[0];
        assert_eq!(row.state, "closed");
        assert!(
            db.review_queue(&office(), 100)
                .unwrap()
                .iter()
                .all(|q| q.visit_id != visit)
        );
        worker.sync(&db);
        let h = model::read_household(&worker.docs[&hid.0]).unwrap();
        assert!(
            h.rectifications[&task].closed.is_some(),
            "the phone learns it is closed"
        );
        // A second task, closed by the office while the worker fixed it offline: the
        // fix is real work and is taken.
        let (hid2, visit2) = visits[1].clone();
        db.write_review(&office(), hid2, &visit2, ReviewState::HasIssues, "缺承诺书")
            .unwrap();
        worker.sync(&db);
        let task2 = rect_rows(&db)
            .into_iter()
            .find(|r| r.visit_id == visit2)
            .unwrap()
            .id;
        let fix = fix_of(&worker, &visit2, "w1");
        let push = phone_change(&mut worker, hid2.0, |d| {
            model::put_rectification_fix(d, &task2, &fix, 1).unwrap()
        });
        db.write_review(&office(), hid2, &visit2, ReviewState::Approved, "")
            .unwrap();
        let resp = worker.exchange(&db, vec![push]);
        assert!(resp.rejected.is_empty(), "{:?}", resp.rejected);
        assert!(
            db.review_queue(&office(), 100)
                .unwrap()
                .iter()
                .all(|q| q.visit_id != visit2)
        );
    }

    #[test]
    fn a_sample_is_reproducible_and_a_denied_visit_opens_a_task() {
        let (_dir, db, visits) = setup(20);
        let sup = principal(
            "s1",
            Role::Supervisor,
            Scope::villages(vec![VILLAGE.into()]),
        );
        let draw = |seed| DrawRequest {
            village: VILLAGE.into(),
            grid: None,
            size: SampleSize::Percent(25),
            seed: Some(seed),
        };
        let r1 = db.draw_follow_up_sample(&sup, &draw(7)).unwrap();
        let r2 = db.draw_follow_up_sample(&sup, &draw(7)).unwrap();
        let r3 = db.draw_follow_up_sample(&sup, &draw(8)).unwrap();
        let (round, s1) = db.follow_up_round(&sup, r1).unwrap();
        let (_, s2) = db.follow_up_round(&sup, r2).unwrap();
        let (_, s3) = db.follow_up_round(&sup, r3).unwrap();
        assert_eq!(
            (round.candidates, round.drawn, round.seed.as_str()),
            (20, 5, "7")
        );
        let order = |s: &[SampleRow]| s.iter().map(|r| r.household.clone()).collect::<Vec<_>>();
        assert_eq!(
            order(&s1),
            order(&s2),
            "the recorded seed draws the same sample"
        );
        assert_ne!(order(&s1), order(&s3));
        let unique: BTreeSet<String> = order(&s1).into_iter().collect();
        assert_eq!(unique.len(), 5, "a household at most once per round");
        assert!(
            db.redraw_matches(&sup, r1).unwrap(),
            "the recorded candidates and seed redraw it"
        );
        db.conn()
            .execute("DELETE FROM follow_up_candidates WHERE round_id = ?1 AND rowid IN (SELECT rowid FROM follow_up_candidates WHERE round_id = ?1 LIMIT 1)", [r3])
            .unwrap();
        assert!(
            !db.redraw_matches(&sup, r3).unwrap(),
            "a tampered round shows"
        );

        // Out of scope, and a worker: refused.
        let other = principal("s2", Role::Supervisor, Scope::villages(vec!["别村".into()]));
        assert!(matches!(
            db.draw_follow_up_sample(&other, &draw(1)),
            Err(Error::Forbidden(_))
        ));
        let worker = principal(
            "w1",
            Role::GridWorker,
            Scope::villages(vec![VILLAGE.into()]),
        );
        assert!(db.draw_follow_up_sample(&worker, &draw(1)).is_err());

        // The outcome: denied → flagged and a task; reached but blank → refused.
        let sampled = &s1[0];
        let hid = HouseholdId::parse(&sampled.household).unwrap();
        let call = |confirmed, understood| FollowUpCall {
            visit_id: sampled.visit_id.clone(),
            by: String::new(),
            called_at_ms: now_ms(),
            reached: true,
            confirmed,
            understood,
            remarks: "说没人来过".into(),
        };
        assert!(matches!(
            db.record_follow_up_call_as(&sup, hid, call(None, None)),
            Err(Error::BadRequest(m)) if m.starts_with("reached")
        ));
        db.record_follow_up_call_as(&sup, hid, call(Some(false), Some(true)))
            .unwrap();
        let rows = rect_rows(&db);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].source.as_str(), rows[0].opened_by.as_str()),
            ("follow_up", "s1")
        );
        assert!(rows[0].reason.contains("否认"), "{}", rows[0].reason);
        let (_, s1) = db.follow_up_round(&sup, r1).unwrap();
        assert_eq!(s1[0].call.as_ref().map(|c| c.confirmed), Some(Some(false)));
        assert_eq!(db.follow_up_rounds(&sup).unwrap()[2].called, 1);

        // The same from a supervisor's phone: a call that was not understood.
        let (hid2, visit2) = visits
            .iter()
            .find(|(h, _)| h.to_string() != sampled.household)
            .cloned()
            .unwrap();
        let mut phone = Phone::new(&db, "s1");
        phone.sync(&db);
        // A call in another supervisor's name, and one with a blank answer: refused.
        for bad in [
            FollowUpCall {
                by: "s2".into(),
                visit_id: visit2.clone(),
                ..call(Some(false), Some(true))
            },
            FollowUpCall {
                by: "s1".into(),
                visit_id: visit2.clone(),
                ..call(None, Some(true))
            },
        ] {
            let push = changes_on(
                &mut phone,
                hid2.0,
                |d| model::add_follow_up_call(d, &Uuid::new_v4().to_string(), &bad, 1).unwrap(),
                false,
            );
            let resp = phone.exchange(&db, vec![push]);
            assert!(
                resp.rejected[0].reason.contains("follow-up call"),
                "{:?}",
                resp.rejected
            );
        }
        assert_eq!(rect_rows(&db).len(), 1, "no task from a refused call");
        let c = FollowUpCall {
            by: "s1".into(),
            visit_id: visit2.clone(),
            ..call(Some(true), Some(false))
        };
        let push = phone_change(&mut phone, hid2.0, |d| {
            model::add_follow_up_call(d, &Uuid::new_v4().to_string(), &c, 1).unwrap()
        });
        let resp = phone.exchange(&db, vec![push]);
        assert!(resp.rejected.is_empty(), "{:?}", resp.rejected);
        let rows = rect_rows(&db);
        assert_eq!(rows.len(), 2);
        assert!(
            rows.iter()
                .any(|r| r.visit_id == visit2 && r.reason.contains("未理解"))
        );
        let view = db.household_view(&office(), hid2).unwrap();
        let v = view.visits.iter().find(|v| v.id == visit2).unwrap();
        assert_eq!(
            v.review.as_deref(),
            Some("has_issues"),
            "the visit is flagged"
        );
        // The flag reaches the supervisor's phone too.
        phone.sync(&db);
        phone.assert_current(&db);
    }

    #[test]
    fn a_directive_reaches_its_liaisons_who_alone_may_mark_their_places() {
        let (_dir, db, _) = setup(1);
        let input = DirectiveInput {
            category: DirectiveCategory::Warning,
            title: "冒充客服退款诈骗预警".into(),
            body: "请立即转发至各群。".into(),
            places: vec![VILLAGE.into()],
            ack_within_hours: 2,
            push_within_hours: 4,
        };
        // The police station is not a known place until a household or the
        // responsible-persons list names it.
        let mut bad = input.clone();
        bad.places.push("镇派出所".into());
        let known_units = db.known_places().unwrap().contains(&"镇派出所".to_string());
        if !known_units {
            assert!(matches!(
                db.publish_directive(&office(), &bad),
                Err(Error::BadRequest(_))
            ));
            db.conn()
                .execute(
                    "INSERT INTO places (name, kind, population, first_responsible, responsible,
                         liaison, lecturers, imported_at_ms)
                     VALUES ('镇派出所', 'unit', 29, '', '', '', '[]', 0)",
                    [],
                )
                .unwrap();
        }
        let id = db.publish_directive(&office(), &bad).unwrap();
        let sup = principal(
            "s1",
            Role::Supervisor,
            Scope::villages(vec![VILLAGE.into()]),
        );
        assert!(
            db.publish_directive(&sup, &input).is_err(),
            "only the office publishes"
        );

        let mut liaison = Phone::new(&db, "l1");
        liaison.sync(&db);
        assert!(
            liaison.docs.contains_key(&id),
            "the directive reached its liaison"
        );
        let mut worker = Phone::new(&db, "w1");
        worker.sync(&db);
        assert!(!worker.docs.contains_key(&id), "and no one else's phone");

        let device = liaison.device.device_id.to_string();
        let mark = |by: &str, dev: &str| DirectiveMark {
            by: by.into(),
            device_id: dev.into(),
            at_ms: now_ms(),
        };
        let refused = |liaison: &mut Phone, f: &dyn Fn(&mut Automerge)| {
            let push = changes_on(liaison, id, f, false);
            let resp = liaison.exchange(&db, vec![push]);
            assert_eq!(resp.rejected.len(), 1, "{:?}", resp.rejected);
            resp.rejected[0].reason.clone()
        };
        let m = mark("l1", &device);
        // Another place, a push before the acknowledgement, another name, a new title.
        refused(&mut liaison, &|d| {
            directive::put_mark(d, MarkKind::Acknowledged, VILLAGE, &m, 1).unwrap()
        });
        refused(&mut liaison, &|d| {
            directive::put_mark(d, MarkKind::Pushed, "镇派出所", &m, 1).unwrap()
        });
        let other = mark("l2", &device);
        refused(&mut liaison, &|d| {
            directive::put_mark(d, MarkKind::Acknowledged, "镇派出所", &other, 1).unwrap()
        });
        let reason = refused(&mut liaison, &|d| {
            let mut t = d.transaction();
            t.put(automerge::ROOT, "title", "改过的标题").unwrap();
            t.commit();
        });
        assert!(reason.contains("acknowledgements"), "{reason}");
        let backdated = DirectiveMark {
            at_ms: 1,
            ..m.clone()
        };
        let reason = refused(&mut liaison, &|d| {
            directive::put_mark(d, MarkKind::Acknowledged, "镇派出所", &backdated, 1).unwrap()
        });
        assert!(reason.contains("time"), "{reason}");
        let reason = refused(&mut liaison, &|d| {
            let mut t = d.transaction();
            let acks = t
                .get(automerge::ROOT, "acknowledgements")
                .unwrap()
                .unwrap()
                .1;
            let mark = t
                .put_object(&acks, "镇派出所", automerge::ObjType::Map)
                .unwrap();
            t.put(&mark, "by", "l1").unwrap();
            t.put(&mark, "device_id", device.as_str()).unwrap();
            t.put(&mark, "at_ms", now_ms()).unwrap();
            t.put(&mark, "note", "x".repeat(1000)).unwrap();
            t.commit();
        });
        assert!(reason.contains("fields"), "{reason}");

        let mut liaison = Phone::new(&db, "l1");
        liaison.sync(&db);
        let device = liaison.device.device_id.to_string();
        let m = mark("l1", &device);
        let ack = phone_change(&mut liaison, id, |d| {
            directive::put_mark(d, MarkKind::Acknowledged, "镇派出所", &m, 1).unwrap()
        });
        let resp = liaison.exchange(&db, vec![ack]);
        assert!(resp.rejected.is_empty(), "{:?}", resp.rejected);
        let l1 = principal("l1", Role::Liaison, Scope::units(vec!["镇派出所".into()]));
        let mine = db.directive(&l1, id).unwrap();
        assert_eq!(mine.places.len(), 1, "a liaison sees its own places");
        assert_eq!(
            mine.places[0].acknowledged.as_ref().map(|a| a.0.as_str()),
            Some("l1")
        );
        assert_eq!(mine.places[0].ack_late_ms, None, "on time");
        // The web: already acknowledged, then the push; another place is refused.
        assert!(matches!(
            db.mark_directive_as(&l1, id, "镇派出所", MarkKind::Acknowledged),
            Err(Error::Conflict(_))
        ));
        db.mark_directive_as(&l1, id, "镇派出所", MarkKind::Pushed)
            .unwrap();
        assert!(matches!(
            db.mark_directive_as(&l1, id, VILLAGE, MarkKind::Acknowledged),
            Err(Error::Forbidden(_))
        ));
        let all = db.directive(&office(), id).unwrap();
        assert_eq!(all.places.len(), 2);
        let village = all.places.iter().find(|p| p.place == VILLAGE).unwrap();
        assert!(village.acknowledged.is_none() && village.ack_late_ms.is_none());
        liaison.sync(&db);
        liaison.assert_current(&db);
        let d = directive::read_directive(&liaison.docs[&id]).unwrap();
        assert!(
            d.pushes.contains_key("镇派出所"),
            "the web's mark reaches the phone"
        );
    }

    #[test]
    fn lateness_is_measured_from_the_deadline() {
        assert_eq!(late(Some(90), 100, 500), None);
        assert_eq!(late(Some(130), 100, 500), Some(30));
        assert_eq!(late(None, 100, 500), Some(400));
        assert_eq!(late(None, 1000, 500), None);
    }

    #[test]
    fn months_are_the_towns() {
        let (start, end) = month_bounds("2026-11").unwrap();
        // 2026-11-01 00:00 in UTC+8 is 2026-10-31 16:00 UTC.
        assert_eq!(model::town_date(start), "2026-11-01");
        assert_eq!(model::town_date(start - 1), "2026-10-31");
        assert_eq!(model::town_date(end), "2026-12-01");
        assert_eq!(model::town_date(end - 1), "2026-11-30");
        assert_eq!(
            month_bounds("2026-12").unwrap().1,
            month_bounds("2027-01").unwrap().0
        );
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "", "2026-00"] {
            assert!(month_bounds(bad).is_err(), "{bad}");
        }
    }
}
