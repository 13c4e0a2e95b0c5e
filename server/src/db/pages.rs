//! The read queries of the office's web pages (issue 6): the dashboard's coverage, the
//! household list with its filters, a household's page (visits, photos, signatures and
//! their verification, reviews, conflicts), the access check of a photo or signature
//! file, and the one write of these pages besides reviews and reveals: keeping one
//! value of a conflict. Every function takes the [`Principal`] asking and checks the
//! permission table itself (`ReadOfficePages`, with the household's place).
//!
//! Figures (all over non-voided visits):
//! - *visited*: households with a completed visit;
//! - *pledged*: households with a pledge (`evidence_log.kind = 'pledge'`) signed during
//!   such a visit;
//! - *checked*: households with a follow-up call recorded (`follow_up_calls`);
//! - *omissions open*: rectification tasks not closed.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use automerge::{Automerge, ObjType, ROOT, ReadDoc};
use doorstep_core::evidence::{self, EvidenceError, EvidenceRecord, LogEntry};
use doorstep_core::model::{
    self, EvidenceEntry, FollowUpCall, HouseholdId, Receipt, Rectification, Review,
};
use doorstep_core::store::now_ms;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::people::HouseholdView;
use super::{ServerDb, load_doc, project_household, store_server_changes};
use crate::access::{Permission, Principal, mask_id_number, mask_phone};
use crate::audit;
use crate::error::{Error, Result};

/// The permission of every read here.
const PAGES: Permission = Permission::ReadOfficePages;

/// The highest page number of the household list: a larger `?page=` is taken as this
/// one (a town has far fewer households than 100,000 pages of them), so that no page
/// number overflows the count of rows to skip.
pub const MAX_PAGE: usize = 100_000;

/// The visit outcomes a household's status can take, plus `none` (no visit yet) and
/// `in_progress` (a visit started, not finished).
pub const STATUSES: [&str; 6] = [
    "none",
    "in_progress",
    "completed",
    "nobody_home",
    "refused",
    "moved_away",
];

/// The Chinese label of a household status or visit outcome ([`STATUSES`]).
pub fn status_label(status: &str) -> &'static str {
    match status {
        "none" => "未走访",
        "in_progress" => "走访中",
        "completed" => "已走访",
        "nobody_home" => "无人在家",
        "refused" => "拒绝",
        "moved_away" => "已搬离",
        _ => "未知",
    }
}

/// Coverage of one village or one grid (or, with neither, the whole of what the
/// account sees). Counts of households, except `omissions_open` (tasks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Village; empty for the total.
    pub village: String,
    /// Grid, for a grid's row.
    pub grid: Option<String>,
    /// Households.
    pub households: i64,
    /// Households with a completed, non-voided visit.
    pub visited: i64,
    /// Households with a pledge signed during such a visit.
    pub pledged: i64,
    /// Households with a follow-up call recorded.
    pub checked: i64,
    /// Rectification tasks not closed.
    pub omissions_open: i64,
}

impl Coverage {
    /// Visited households per household, in percent (0 when there are none).
    pub fn percent(&self) -> f64 {
        if self.households == 0 {
            0.0
        } else {
            self.visited as f64 * 100.0 / self.households as f64
        }
    }

    fn add(&mut self, o: &Coverage) {
        self.households += o.households;
        self.visited += o.visited;
        self.pledged += o.pledged;
        self.checked += o.checked;
        self.omissions_open += o.omissions_open;
    }
}

/// A town unit's directives (units hold no households): how many reached it, how many
/// it acknowledged and pushed on, and how many are overdue (not done by the due time,
/// or done after it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitDirectives {
    /// The unit (镇直单位).
    pub unit: String,
    /// Directives sent to it.
    pub directives: i64,
    /// Acknowledged (签收).
    pub acknowledged: i64,
    /// Pushed on (推送).
    pub pushed: i64,
    /// Acknowledged or pushed late, or not yet and past due.
    pub overdue: i64,
}

/// The dashboard's figures, within the account's scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dashboard {
    /// Per village, by name.
    pub villages: Vec<Coverage>,
    /// Per grid, by village and grid.
    pub grids: Vec<Coverage>,
    /// Per town unit, by name.
    pub units: Vec<UnitDirectives>,
    /// The sum of the villages.
    pub total: Coverage,
}

/// The household list's filters, as the page's query string carries them; an empty
/// value is no filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HouseholdFilter {
    /// Village.
    pub village: String,
    /// Grid (within the village, when one is given).
    pub grid: String,
    /// One of [`STATUSES`]: `completed` when a completed non-voided visit exists, else
    /// the outcome of the latest non-voided visit, else `none`.
    pub status: String,
    /// A target group at least one resident belongs to.
    pub group: String,
    /// The account that recorded a (non-voided) visit.
    pub worker: String,
    /// `pledge` (a pledge for a completed visit), `follow_up` (a follow-up call),
    /// `omission` (an open rectification task), `conflict` (a conflict to resolve).
    pub has: String,
    /// Search: a door number or head of household's name (part of it), or the last 4
    /// digits of a phone number (the household's or a resident's).
    pub q: String,
}

/// What [`HouseholdFilter::has`] may be.
pub const HAS: [&str; 4] = ["pledge", "follow_up", "omission", "conflict"];

/// One household of the list; phone masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HouseholdListRow {
    /// Household ID.
    pub id: String,
    /// Village.
    pub village: String,
    /// Grid.
    pub grid: String,
    /// Door number.
    pub door_number: String,
    /// Head of household.
    pub head_name: String,
    /// Contact phone, masked (`138****5678`).
    pub phone: String,
    /// Residents.
    pub residents: i64,
    /// [`STATUSES`].
    pub status: String,
    /// Visits, voided included.
    pub visits: i64,
    /// Start of the latest non-voided visit (device clock, UTC ms).
    pub last_visit_ms: Option<i64>,
    /// Who recorded non-voided visits, comma-separated.
    pub visitors: String,
    /// A pledge was signed during a completed visit.
    pub pledged: bool,
    /// Fields in conflict.
    pub conflicts: i64,
}

/// A page of the household list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HouseholdList {
    /// The rows of this page.
    pub rows: Vec<HouseholdListRow>,
    /// Households matching the filters, in scope.
    pub total: usize,
    /// This page, from 1.
    pub page: usize,
    /// Rows per page.
    pub per_page: usize,
}

/// The values the list's filters offer, within the account's scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterOptions {
    /// Villages.
    pub villages: Vec<String>,
    /// Grids, as (village, grid).
    pub grids: Vec<(String, String)>,
    /// Target groups residents belong to.
    pub groups: Vec<String>,
    /// Accounts that recorded visits.
    pub workers: Vec<String>,
}

/// A photo of a visit: the addresses of its blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhotoView {
    /// SHA-256 of the full JPEG (`/files/photo/{sha256}`).
    pub sha256: String,
    /// SHA-256 of the thumbnail JPEG (`/files/thumb/{thumb}`).
    pub thumb: String,
}

/// Whether a signed record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum EvidenceCheck {
    /// The device signature verifies under a key registered for the device, the record
    /// is in the hash-chained log as signed, its entry links to the one before, the
    /// server's countersignature verifies, and the document's receipt is that entry.
    Verified,
    /// The first thing that does not hold, in Chinese.
    Failed(String),
}

/// A signed notice or pledge on the household page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceView {
    /// Record ID (`/households/{id}/evidence/{evidence}/signature.png`).
    pub id: String,
    /// `notice` or `pledge`.
    pub kind: String,
    /// The signer's name as the record holds it.
    pub signer_name: String,
    /// The witness's name, for a mark.
    pub witness: Option<String>,
    /// Device clock at signing (UTC ms).
    pub signed_at_ms: i64,
    /// Server clock at receipt (UTC ms), from the log.
    pub received_at_ms: Option<i64>,
    /// The signature PNG is on the server (it may still be on its way from the phone).
    pub png_present: bool,
    /// The verification.
    pub check: EvidenceCheck,
}

/// A visit on the household page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VisitDetail {
    /// Visit ID.
    pub id: String,
    /// Who recorded it.
    pub visitor: String,
    /// [`STATUSES`] but `none`.
    pub outcome: String,
    /// Why it did not complete.
    pub outcome_reason: String,
    /// Start (device clock, UTC ms).
    pub started_at_ms: i64,
    /// End (device clock, UTC ms).
    pub finished_at_ms: Option<i64>,
    /// Voided with this reason.
    pub voided: Option<String>,
    /// Target groups reached.
    pub target_groups_reached: Vec<String>,
    /// The team's remarks.
    pub remarks: String,
    /// Photos.
    pub photos: Vec<PhotoView>,
    /// Signed notices and pledges.
    pub evidence: Vec<EvidenceView>,
    /// The office's review.
    pub review: Option<Review>,
}

/// One value of a conflict, as the page shows it (phone and ID numbers masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictChoice {
    /// The value, masked when it is a phone or ID number.
    pub value: String,
    /// Hex actor (device) that wrote it.
    pub actor: String,
    /// Device time of the change (UTC ms).
    pub time_ms: i64,
    /// The value Automerge shows now.
    pub winner: bool,
    /// What the resolve form sends to keep this value: the operation's ID.
    pub choice: String,
}

/// A field with concurrent values, side by side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictView {
    /// Path from the document root.
    pub path: Vec<String>,
    /// The field in Chinese (`联系电话`, `居民 张三 的电话`, ...).
    pub label: String,
    /// Every value, the current one first.
    pub values: Vec<ConflictChoice>,
}

/// Everything the household page shows, masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HouseholdPage {
    /// Profile and residents, masked ([`ServerDb::household_view`]).
    pub view: HouseholdView,
    /// Visits, by start time.
    pub visits: Vec<VisitDetail>,
    /// Records that cite no visit of this household, or cannot be read: with their
    /// verification.
    pub stray_evidence: Vec<EvidenceView>,
    /// Follow-up calls, by time.
    pub follow_up_calls: Vec<FollowUpCall>,
    /// Rectification tasks, by opening time.
    pub rectifications: Vec<(String, Rectification)>,
    /// Conflicts to resolve.
    pub conflicts: Vec<ConflictView>,
}

/// Which blob a file request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A visit photo's full JPEG.
    Photo,
    /// A visit photo's thumbnail JPEG.
    Thumb,
}

fn nonempty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

fn forbidden(p: &Principal, perm: Permission) -> Error {
    Error::Forbidden(format!(
        "a {} account may not do this ({perm:?})",
        p.role.as_str()
    ))
}

fn uuid_text(bytes: &[u8]) -> String {
    Uuid::from_slice(bytes).unwrap_or_default().to_string()
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The household's status, in SQL over `h.doc_id` ([`HouseholdFilter::status`]).
const STATUS_SQL: &str = "CASE WHEN EXISTS (SELECT 1 FROM visits v WHERE v.doc_id = h.doc_id
        AND v.voided_reason IS NULL AND v.outcome = 'completed') THEN 'completed'
   ELSE coalesce((SELECT v.outcome FROM visits v WHERE v.doc_id = h.doc_id
        AND v.voided_reason IS NULL ORDER BY v.started_at_ms DESC LIMIT 1), 'none') END";

/// A pledge for a completed non-voided visit of `h`, in SQL.
const PLEDGED_SQL: &str =
    "EXISTS (SELECT 1 FROM evidence_log e JOIN visits v ON v.visit_id = e.visit_id
        WHERE e.doc_id = h.doc_id AND e.kind = 'pledge' AND v.doc_id = h.doc_id
          AND v.outcome = 'completed' AND v.voided_reason IS NULL)";

impl ServerDb {
    /// The CSRF token of the web session whose token is `session_token`: 64 hex digits
    /// of `HMAC-SHA256(lookup key, "csrf" ‖ 0 ‖ session token)`. Forms echo it; nobody
    /// without the session token (which the cookie keeps from scripts) can compute it.
    pub fn csrf_token(&self, session_token: &str) -> String {
        hex::encode(self.lookup.mac("csrf", session_token))
    }

    /// The dashboard: coverage per village and grid of the households `p` may read on
    /// the office pages, and the directive figures of the town units in its scope.
    ///
    /// Errors: [`Error::Forbidden`] for a role without `ReadOfficePages`.
    pub fn dashboard(&self, p: &Principal) -> Result<Dashboard> {
        if !p.may_at_all(PAGES) {
            return Err(forbidden(p, PAGES));
        }
        let conn = self.conn();
        let grids: Vec<Coverage> = {
            let sql = format!(
                "SELECT h.village, h.grid, count(*),
                        sum(EXISTS (SELECT 1 FROM visits v WHERE v.doc_id = h.doc_id
                                      AND v.outcome = 'completed' AND v.voided_reason IS NULL)),
                        sum({PLEDGED_SQL}),
                        sum(EXISTS (SELECT 1 FROM follow_up_calls f WHERE f.doc_id = h.doc_id)),
                        sum((SELECT count(*) FROM rectifications r
                              WHERE r.doc_id = h.doc_id AND r.closed_at_ms IS NULL))
                   FROM households h
                  GROUP BY h.village, h.grid
                  ORDER BY h.village, h.grid"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            stmt.query_map([], |r| {
                Ok(Coverage {
                    village: r.get(0)?,
                    grid: Some(r.get(1)?),
                    households: r.get(2)?,
                    visited: r.get(3)?,
                    pledged: r.get(4)?,
                    checked: r.get(5)?,
                    omissions_open: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|c| p.may(PAGES, &c.village, c.grid.as_deref().unwrap_or("")))
            .collect()
        };
        let mut villages: BTreeMap<String, Coverage> = BTreeMap::new();
        let mut total = Coverage::default();
        for g in &grids {
            let v = villages
                .entry(g.village.clone())
                .or_insert_with(|| Coverage {
                    village: g.village.clone(),
                    ..Coverage::default()
                });
            v.add(g);
            total.add(g);
        }
        let units = unit_directives(&conn, now_ms())?
            .into_iter()
            .filter(|u| !villages.contains_key(&u.unit) && p.may_place(PAGES, &u.unit))
            .collect();
        Ok(Dashboard {
            villages: villages.into_values().collect(),
            grids,
            units,
            total,
        })
    }

    /// The values the household list's filters offer to `p`.
    ///
    /// Errors: [`Error::Forbidden`] for a role without `ReadOfficePages`.
    pub fn filter_options(&self, p: &Principal) -> Result<FilterOptions> {
        if !p.may_at_all(PAGES) {
            return Err(forbidden(p, PAGES));
        }
        let conn = self.conn();
        let mut out = FilterOptions::default();
        let mut villages = BTreeSet::new();
        {
            let mut stmt =
                conn.prepare_cached("SELECT DISTINCT village, grid FROM households ORDER BY 1, 2")?;
            for row in
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            {
                let (v, g) = row?;
                if p.may(PAGES, &v, &g) {
                    villages.insert(v.clone());
                    out.grids.push((v, g));
                }
            }
        }
        out.villages = villages.into_iter().collect();
        out.groups = scoped_values(
            &conn,
            p,
            "SELECT DISTINCT h.village, h.grid, g.value
               FROM residents r JOIN households h ON h.doc_id = r.doc_id,
                    json_each(r.target_groups) g",
        )?;
        out.workers = scoped_values(
            &conn,
            p,
            "SELECT DISTINCT h.village, h.grid, v.visitor
               FROM visits v JOIN households h ON h.doc_id = v.doc_id
              WHERE v.voided_reason IS NULL",
        )?;
        Ok(out)
    }

    /// The households `p` may read on the office pages that match `f`, by village,
    /// grid and door number; page `page` (from 1, at most [`MAX_PAGE`]; any larger
    /// number answers that page, empty) of `per_page` rows (1 to 200). Phones masked.
    ///
    /// Errors: [`Error::Forbidden`] for a role without `ReadOfficePages`;
    /// [`Error::BadRequest`] naming `status` or `has` when not one of theirs.
    pub fn household_list(
        &self,
        p: &Principal,
        f: &HouseholdFilter,
        page: usize,
        per_page: usize,
    ) -> Result<HouseholdList> {
        if !p.may_at_all(PAGES) {
            return Err(forbidden(p, PAGES));
        }
        let status = nonempty(&f.status);
        if status.is_some_and(|s| !STATUSES.contains(&s)) {
            return Err(Error::BadRequest(format!(
                "status is one of {}",
                STATUSES.join(", ")
            )));
        }
        let has = nonempty(&f.has);
        if has.is_some_and(|s| !HAS.contains(&s)) {
            return Err(Error::BadRequest(format!(
                "has is one of {}",
                HAS.join(", ")
            )));
        }
        let q = nonempty(&f.q);
        let q_like = q.map(|q| format!("%{}%", like_escape(q)));
        let q_phone = q
            .filter(|q| q.len() == 4 && q.bytes().all(|b| b.is_ascii_digit()))
            .map(|q| format!("%{q}"));
        let per_page = per_page.clamp(1, 200);
        let page = page.clamp(1, MAX_PAGE);
        let sql = format!(
            "SELECT h.doc_id, h.village, h.grid, h.door_number, h.head_name, h.phone, h.residents,
                    h.visits, h.conflicts, {STATUS_SQL} AS status,
                    (SELECT max(v.started_at_ms) FROM visits v
                      WHERE v.doc_id = h.doc_id AND v.voided_reason IS NULL),
                    (SELECT group_concat(DISTINCT v.visitor) FROM visits v
                      WHERE v.doc_id = h.doc_id AND v.voided_reason IS NULL),
                    {PLEDGED_SQL}
               FROM households h
              WHERE (?1 IS NULL OR h.village = ?1)
                AND (?2 IS NULL OR h.grid = ?2)
                AND (?3 IS NULL OR status = ?3)
                AND (?4 IS NULL OR EXISTS (SELECT 1 FROM residents r, json_each(r.target_groups) g
                                            WHERE r.doc_id = h.doc_id AND g.value = ?4))
                AND (?5 IS NULL OR EXISTS (SELECT 1 FROM visits v WHERE v.doc_id = h.doc_id
                                            AND v.voided_reason IS NULL AND v.visitor = ?5))
                AND (?6 IS NULL
                     OR (?6 = 'pledge' AND {PLEDGED_SQL})
                     OR (?6 = 'follow_up' AND EXISTS (SELECT 1 FROM follow_up_calls c
                                                        WHERE c.doc_id = h.doc_id))
                     OR (?6 = 'omission' AND EXISTS (SELECT 1 FROM rectifications r
                                            WHERE r.doc_id = h.doc_id AND r.closed_at_ms IS NULL))
                     OR (?6 = 'conflict' AND h.conflicts > 0))
                AND (?7 IS NULL
                     OR h.door_number LIKE ?7 ESCAPE '\\' OR h.head_name LIKE ?7 ESCAPE '\\'
                     OR (?8 IS NOT NULL AND (h.phone LIKE ?8 OR EXISTS (
                            SELECT 1 FROM residents r WHERE r.doc_id = h.doc_id AND r.phone LIKE ?8))))
              ORDER BY h.village, h.grid, h.door_number"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![
            nonempty(&f.village),
            nonempty(&f.grid),
            status,
            nonempty(&f.group),
            nonempty(&f.worker),
            has,
            q_like,
            q_phone,
        ])?;
        let skip = (page - 1).saturating_mul(per_page);
        let mut total = 0usize;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let (village, grid): (String, String) = (r.get(1)?, r.get(2)?);
            if !p.may(PAGES, &village, &grid) {
                continue;
            }
            total += 1;
            if total <= skip || out.len() >= per_page {
                continue;
            }
            out.push(HouseholdListRow {
                id: uuid_text(&r.get::<_, Vec<u8>>(0)?),
                village,
                grid,
                door_number: r.get(3)?,
                head_name: r.get(4)?,
                phone: mask_phone(&r.get::<_, String>(5)?),
                residents: r.get(6)?,
                visits: r.get(7)?,
                conflicts: r.get(8)?,
                status: r.get(9)?,
                last_visit_ms: r.get(10)?,
                visitors: r
                    .get::<_, Option<String>>(11)?
                    .unwrap_or_default()
                    .replace(',', "，"),
                pledged: r.get(12)?,
            });
        }
        Ok(HouseholdList {
            rows: out,
            total,
            page,
            per_page,
        })
    }

    /// One household's page, masked: profile and residents, visits with their photos,
    /// signed records and their verification, reviews, follow-up calls,
    /// rectifications and conflicts.
    ///
    /// Errors: [`Error::Forbidden`] for a role without `ReadOfficePages`;
    /// [`Error::NotFound`] for an unknown household or one out of scope.
    pub fn household_page(&self, p: &Principal, id: HouseholdId) -> Result<HouseholdPage> {
        self.check_household(p, PAGES, id)?;
        let view = self.household_view(p, id)?;
        let server_keys: HashSet<String> =
            self.organisation()?.server_keys.keys().cloned().collect();
        let conn = self.conn();
        let doc = load_doc(&conn, id.0)?;
        let h = model::read_household(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        let mut by_visit: BTreeMap<String, Vec<EvidenceView>> = BTreeMap::new();
        let mut stray = Vec::new();
        for (key, entry) in &h.evidence {
            let (visit, view) =
                self.evidence_view(&conn, id, key, entry, h.receipts.get(key), &server_keys)?;
            match visit.filter(|v| h.visits.contains_key(v)) {
                Some(v) => by_visit.entry(v).or_default().push(view),
                None => stray.push(view),
            }
        }
        let mut visits: Vec<VisitDetail> = h
            .visits
            .iter()
            .map(|(vid, v)| {
                let mut evidence = by_visit.remove(vid).unwrap_or_default();
                evidence.sort_by_key(|e| e.signed_at_ms);
                VisitDetail {
                    id: vid.clone(),
                    visitor: v.visitor.clone(),
                    outcome: v.outcome.map_or("in_progress", |o| o.as_str()).into(),
                    outcome_reason: v.outcome_reason.clone(),
                    started_at_ms: v.started_at_ms,
                    finished_at_ms: v.finished_at_ms,
                    voided: v.voided.as_ref().map(|n| n.reason.clone()),
                    target_groups_reached: v.target_groups_reached.clone(),
                    remarks: v.remarks.clone(),
                    photos: v
                        .photos
                        .values()
                        .map(|ph| PhotoView {
                            sha256: ph.sha256.clone(),
                            thumb: ph.thumbnail_sha256.clone(),
                        })
                        .collect(),
                    evidence,
                    review: h.reviews.get(vid).cloned(),
                }
            })
            .collect();
        visits.sort_by_key(|v| v.started_at_ms);
        let mut follow_up_calls: Vec<FollowUpCall> = h.follow_up_calls.values().cloned().collect();
        follow_up_calls.sort_by_key(|c| c.called_at_ms);
        let mut rectifications: Vec<(String, Rectification)> = h
            .rectifications
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        rectifications.sort_by_key(|(_, r)| r.opened_at_ms);
        let conflicts = conflict_views(&doc, &h);
        Ok(HouseholdPage {
            view,
            visits,
            stray_evidence: stray,
            follow_up_calls,
            rectifications,
            conflicts,
        })
    }

    /// One record's view and verification; also the visit it cites, when readable.
    fn evidence_view(
        &self,
        conn: &Connection,
        household: HouseholdId,
        key: &str,
        entry: &EvidenceEntry,
        receipt: Option<&Receipt>,
        server_keys: &HashSet<String>,
    ) -> Result<(Option<String>, EvidenceView)> {
        let Ok(record) = EvidenceRecord::from_canonical(&entry.record.0) else {
            return Ok((
                None,
                EvidenceView {
                    id: key.into(),
                    kind: String::new(),
                    signer_name: String::new(),
                    witness: None,
                    signed_at_ms: 0,
                    received_at_ms: None,
                    png_present: false,
                    check: EvidenceCheck::Failed("记录无法读取（格式不对）".into()),
                },
            ));
        };
        let png = hex::encode(record.png_sha256);
        let png_present = self.blob_path(&png).exists();
        let logged: Option<(i64, i64)> = conn
            .query_row(
                "SELECT seq, received_at_ms FROM evidence_log WHERE evidence_id = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let check = match check_record(conn, household, key, entry, receipt, server_keys)? {
            Ok(()) => EvidenceCheck::Verified,
            Err(why) => EvidenceCheck::Failed(why),
        };
        Ok((
            Some(record.visit.to_string()),
            EvidenceView {
                id: key.into(),
                kind: record.kind.as_str().into(),
                signer_name: record.signer_name.clone(),
                witness: record.witness.as_ref().map(|w| w.name.clone()),
                signed_at_ms: record.signed_at_ms,
                received_at_ms: logged.map(|(_, at)| at),
                png_present,
                check,
            },
        ))
    }

    /// The bytes of a photo's full JPEG or thumbnail, when it belongs to a visit of a
    /// household `p` may read on the office pages. Viewing a full photo is audited
    /// (`view_photo`, the household and the hash).
    ///
    /// Errors: [`Error::Forbidden`] for a role without `ReadOfficePages`;
    /// [`Error::NotFound`] for a hash that is no such photo in scope, or whose blob has
    /// not arrived (the same answer).
    pub fn photo_file(&self, p: &Principal, sha256: &str, kind: FileKind) -> Result<Vec<u8>> {
        if !p.may_at_all(PAGES) || !p.may_at_all(Permission::ReadHouseholds) {
            return Err(forbidden(p, PAGES));
        }
        let not_found = || Error::NotFound("no such file in your scope".into());
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let sha256 = sha256.to_ascii_lowercase();
        let column = match kind {
            FileKind::Photo => "sha256",
            FileKind::Thumb => "thumb_sha256",
        };
        let places: Vec<(Vec<u8>, String, String)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT DISTINCT h.doc_id, h.village, h.grid
                   FROM visit_photos vp
                   JOIN visits v ON v.visit_id = vp.visit_id
                   JOIN households h ON h.doc_id = v.doc_id
                  WHERE vp.{column} = ?1"
            ))?;
            stmt.query_map([&sha256], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        let Some((doc, _, _)) = places
            .iter()
            .find(|(_, v, g)| p.may(PAGES, v, g) && p.may(Permission::ReadHouseholds, v, g))
        else {
            return Err(not_found());
        };
        let bytes = self.blob(&sha256)?.ok_or_else(not_found)?;
        if kind == FileKind::Photo {
            self.audit(
                &p.username,
                None,
                "view_photo",
                &uuid_text(doc),
                json!({"sha256": sha256}),
            )?;
        }
        Ok(bytes)
    }

    /// The signature PNG of record `evidence` of household `id`. Viewing it is audited
    /// like a full photo (`view_signature`, the household and the record's ID; never
    /// the signer's name).
    ///
    /// Errors: [`Error::Forbidden`] for a role without `ReadOfficePages`;
    /// [`Error::NotFound`] for an unknown or out-of-scope household, an unknown
    /// record, or a PNG not uploaded yet.
    pub fn signature_png(&self, p: &Principal, id: HouseholdId, evidence: &str) -> Result<Vec<u8>> {
        self.check_household(p, PAGES, id)?;
        self.check_household(p, Permission::ReadHouseholds, id)?;
        let doc = load_doc(&self.conn(), id.0)?;
        let h = model::read_household(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        let not_found = || Error::NotFound("no such signature".into());
        let entry = h.evidence.get(evidence).ok_or_else(not_found)?;
        let record = EvidenceRecord::from_canonical(&entry.record.0).map_err(|_| not_found())?;
        let bytes = self
            .blob(&hex::encode(record.png_sha256))?
            .ok_or_else(not_found)?;
        self.audit(
            &p.username,
            None,
            "view_signature",
            &id.to_string(),
            json!({"evidence": evidence}),
        )?;
        Ok(bytes)
    }

    /// Keeps one value of a conflicted field of household `id`: the server writes it
    /// again on `p`'s behalf, in one change that follows every concurrent value, so
    /// that the field holds one value; the others stay in the document's history.
    /// `path` is the field's path ([`ConflictView::path`]); `chosen` the value's
    /// [`ConflictChoice::choice`]. Projected and audited (`resolve_conflict`, the path;
    /// never the value). Phones receive it at their next sync.
    ///
    /// Errors: [`Error::Forbidden`] for a role without `ResolveConflict`;
    /// [`Error::NotFound`] for an unknown or out-of-scope household;
    /// [`Error::Conflict`] when the field no longer holds that value in conflict (the
    /// page is stale); [`Error::BadRequest`] for a path under signed evidence or
    /// receipts, or a value that is not plain (a map or list).
    pub fn resolve_conflict(
        &self,
        p: &Principal,
        id: HouseholdId,
        path: &[String],
        chosen: &str,
    ) -> Result<()> {
        self.check_household(p, Permission::ResolveConflict, id)?;
        let Some((last, parents)) = path.split_last() else {
            return Err(Error::BadRequest("path names no field".into()));
        };
        if matches!(
            path[0].as_str(),
            "evidence" | "receipts" | "id" | "kind" | "schema" | "village" | "grid"
        ) {
            return Err(Error::BadRequest(format!(
                "{} is not resolved here: signed records, receipts and a household's identity and place are the server's",
                path[0]
            )));
        }
        let stale = || Error::Conflict("the field no longer holds that value in conflict".into());
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut doc = load_doc(&tx, id.0)?.with_actor(self.actor.clone());
        let obj = object_at(&doc, parents).ok_or_else(stale)?;
        let values = doc
            .get_all(&obj, last.as_str())
            .map_err(|e| Error::Internal(e.to_string()))?;
        if values.len() < 2 {
            return Err(stale());
        }
        let (value, _) = values
            .iter()
            .find(|(_, op)| op.to_string() == chosen)
            .ok_or_else(stale)?;
        let automerge::Value::Scalar(scalar) = value else {
            return Err(Error::BadRequest(
                "only a plain value (text, number, yes/no) can be chosen here".into(),
            ));
        };
        let scalar = scalar.clone().into_owned();
        let before = doc.get_heads();
        {
            use automerge::transaction::Transactable;
            let mut t = doc.transaction();
            t.put(&obj, last.as_str(), scalar)
                .map_err(|e| Error::Internal(e.to_string()))?;
            t.commit_with(
                automerge::transaction::CommitOptions::default()
                    .with_time(now)
                    .with_message("resolve conflict".to_string()),
            );
        }
        store_server_changes(&tx, id.0, &doc, &before, now)?;
        project_household(&tx, &self.lookup, id.0, &mut doc, now)?;
        // The path names fields and resident or visit IDs, never a value.
        audit::append(
            &tx,
            &self.server_key,
            now,
            &p.username,
            None,
            "resolve_conflict",
            &id.to_string(),
            json!({"path": path, "chosen": chosen}),
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// The directive figures of every place that is a town unit: named so in `places`, or
/// a place of a directive that no household's village is.
fn unit_directives(conn: &Connection, now: i64) -> Result<Vec<UnitDirectives>> {
    let mut stmt = conn.prepare_cached(
        "WITH units AS (
             SELECT name FROM places WHERE kind = 'unit'
             UNION
             SELECT DISTINCT place FROM directive_places
              WHERE place NOT IN (SELECT village FROM households)
                AND place NOT IN (SELECT name FROM places WHERE kind = 'village'))
         SELECT u.name, count(d.doc_id), count(dp.acknowledged_at_ms), count(dp.pushed_at_ms),
                coalesce(sum(d.doc_id IS NOT NULL AND (
                    coalesce(dp.acknowledged_at_ms, ?1) > d.ack_due_ms
                    OR coalesce(dp.pushed_at_ms, ?1) > d.push_due_ms)), 0)
           FROM units u
           LEFT JOIN directive_places dp ON dp.place = u.name
           LEFT JOIN directives d ON d.doc_id = dp.doc_id
          GROUP BY u.name ORDER BY u.name",
    )?;
    let rows = stmt
        .query_map([now], |r| {
            Ok(UnitDirectives {
                unit: r.get(0)?,
                directives: r.get(1)?,
                acknowledged: r.get(2)?,
                pushed: r.get(3)?,
                overdue: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Checks one record the way `doorstep-server verify` does, for one entry: `Ok(Err(why))`
/// names in Chinese the first thing that does not hold.
fn check_record(
    conn: &Connection,
    household: HouseholdId,
    key: &str,
    entry: &EvidenceEntry,
    receipt: Option<&Receipt>,
    server_keys: &HashSet<String>,
) -> Result<std::result::Result<(), String>> {
    let record = match evidence::verify_record(&entry.record.0, &entry.signature.0, None) {
        Ok(r) => r,
        Err(EvidenceError::BadSignature | EvidenceError::WrongKey) => {
            return Ok(Err("手机签名不符：记录或签名被改动".into()));
        }
        Err(_) => return Ok(Err("记录格式不对".into())),
    };
    if record.household != household || record.id.to_string() != key {
        return Ok(Err("记录不属于这一户".into()));
    }
    let registered: Option<String> = conn
        .query_row(
            "SELECT device_id FROM device_keys WHERE public_key = ?1",
            [&record.key[..]],
            |r| r.get(0),
        )
        .optional()?;
    if registered.as_deref() != Some(record.device.to_string().as_str()) {
        return Ok(Err("签名所用密钥未登记在这部手机名下".into()));
    }
    type LogRow = (
        i64,
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
        Vec<u8>,
        i64,
    );
    let row: Option<LogRow> = conn
        .query_row(
            "SELECT seq, record, device_signature, prev_hash, entry_hash, server_key,
                    server_signature, received_at_ms
               FROM evidence_log WHERE evidence_id = ?1",
            [key],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .optional()?;
    let Some((seq, rec, sig, prev, entry_hash, server_key, server_sig, received)) = row else {
        return Ok(Err("服务器的存证日志中没有这条记录".into()));
    };
    if rec != entry.record.0 || sig != entry.signature.0 {
        return Ok(Err("与存证日志中的记录不一致".into()));
    }
    let hash = LogEntry {
        seq: seq as u64,
        prev: prev.as_slice().try_into().unwrap_or([0; 32]),
        evidence: record.id,
        record_sha256: evidence::sha256(&rec),
        device_signature: sig,
        received_at_ms: received,
    }
    .hash();
    if entry_hash != hash {
        return Ok(Err("存证日志条目在记录后被改动".into()));
    }
    let before: Option<Vec<u8>> = if seq <= 1 {
        Some(vec![0; 32])
    } else {
        conn.query_row(
            "SELECT entry_hash FROM evidence_log WHERE seq = ?1",
            [seq - 1],
            |r| r.get(0),
        )
        .optional()?
    };
    if before.as_deref() != Some(prev.as_slice()) {
        return Ok(Err("存证日志的哈希链在此断开".into()));
    }
    let key_ok = <[u8; 32]>::try_from(server_key.as_slice())
        .ok()
        .filter(|k| server_keys.contains(&hex::encode(k)))
        .is_some_and(|k| evidence::verify_receipt(&k, &hash, &server_sig));
    if !key_ok {
        return Ok(Err("服务器的会签不符".into()));
    }
    match receipt {
        None => Ok(Err("住户文档中缺少服务器回执".into())),
        Some(r) if r.seq != seq as u64 || r.entry_sha256.0 != hash => {
            Ok(Err("住户文档中的回执与存证日志不一致".into()))
        }
        Some(_) => Ok(Ok(())),
    }
}

/// The map at `path` from the root (each element a map key), if every step is a map.
fn object_at(doc: &Automerge, path: &[String]) -> Option<automerge::ObjId> {
    let mut obj = ROOT;
    for key in path {
        match doc.get(&obj, key.as_str()).ok()?? {
            (automerge::Value::Object(ObjType::Map), id) => obj = id,
            _ => return None,
        }
    }
    Some(obj)
}

/// The conflicts of a household, with their operation IDs for the resolve form and
/// phone and ID numbers masked.
fn conflict_views(doc: &Automerge, h: &model::Household) -> Vec<ConflictView> {
    model::conflicts(doc)
        .into_iter()
        .filter_map(|c| {
            let (last, parents) = c.path.split_last()?;
            let obj = object_at(doc, parents)?;
            // `model::conflicts` lists the values of `get_all` last first.
            let ops: Vec<String> = doc
                .get_all(&obj, last.as_str())
                .ok()?
                .into_iter()
                .rev()
                .map(|(_, op)| op.to_string())
                .collect();
            if ops.len() != c.values.len() {
                return None;
            }
            let sensitive_id = last == "id_number";
            let sensitive_phone = last == "phone";
            let values = c
                .values
                .into_iter()
                .zip(ops)
                .map(|(v, op)| ConflictChoice {
                    value: if sensitive_id {
                        mask_id_number(&v.value)
                    } else if sensitive_phone {
                        mask_phone(&v.value)
                    } else {
                        v.value
                    },
                    actor: v.actor,
                    time_ms: v.time_ms,
                    winner: v.winner,
                    choice: op,
                })
                .collect();
            Some(ConflictView {
                label: conflict_label(&c.path, h),
                path: c.path,
                values,
            })
        })
        .collect()
}

/// The Chinese name of a field by its path.
fn conflict_label(path: &[String], h: &model::Household) -> String {
    let field = |k: &str| -> String {
        match k {
            "phone" => "电话",
            "head_name" => "户主",
            "address" => "地址",
            "door_number" => "门牌号",
            "name" => "姓名",
            "relation" => "与户主关系",
            "sex" => "性别",
            "id_number" => "身份证号",
            "state" => "审核状态",
            "reason" => "理由",
            "remarks" => "备注",
            "outcome" => "走访结果",
            other => return other.to_string(),
        }
        .to_string()
    };
    match path {
        [k] if k == "phone" => "联系电话".into(),
        [k] => field(k),
        [m, rid, rest @ ..] if m == "residents" => {
            let who = h.residents.get(rid).map_or("？", |r| r.name.as_str());
            format!(
                "居民 {who} 的{}",
                rest.iter().map(|k| field(k)).collect::<Vec<_>>().join("·")
            )
        }
        [m, _, rest @ ..] if m == "visits" => {
            format!(
                "走访的{}",
                rest.iter().map(|k| field(k)).collect::<Vec<_>>().join("·")
            )
        }
        [m, _, rest @ ..] if m == "reviews" => {
            format!(
                "审核的{}",
                rest.iter().map(|k| field(k)).collect::<Vec<_>>().join("·")
            )
        }
        _ => path.join("."),
    }
}

/// The distinct third column of `sql` (rows of village, grid, value) over the
/// households `p` may see on the office pages, sorted.
fn scoped_values(conn: &rusqlite::Connection, p: &Principal, sql: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut values = BTreeSet::new();
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })? {
        let (v, g, value) = row?;
        if p.may(PAGES, &v, &g) {
            values.insert(value);
        }
    }
    Ok(values.into_iter().collect())
}
