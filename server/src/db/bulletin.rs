//! The monthly bulletin (月度通报, issue 6): the villages' and units' responsible persons
//! ([`ServerDb::import_places`]), the fraud cases and losses the police enter per month
//! ([`ServerDb::record_fraud_cases`]), the bulletin's figures per village and unit
//! ([`ServerDb::monthly_bulletin`]) and its exports: an `.xlsx` workbook
//! ([`ServerDb::bulletin_xlsx`], [`bulletin_workbook`]) and the month's visits as CSV
//! ([`ServerDb::visits_csv`]).
//!
//! Months are calendar months of the town's clock, China Standard Time (UTC+08:00,
//! [`TOWN_UTC_OFFSET_MS`]): May 2024 runs from 2024-04-30T16:00Z to 2024-05-31T16:00Z.
//! Money is kept in fen (分, 1/100 yuan) as integers and shown in yuan with two
//! decimals.
//!
//! Every function takes the [`Principal`] asking and checks the permission table
//! itself; writes and exports are audited (place names and figures; never a person).

use std::collections::HashMap;

use doorstep_core::model::TOWN_UTC_OFFSET_MS;
use doorstep_core::store::now_ms;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ServerDb;
use super::people::spreadsheet_safe;
use crate::access::{Permission, Principal};
use crate::audit;
use crate::error::{Error, Result};
use crate::places::{MAX_LECTURERS, MAX_NAME_CHARS, Place, PlaceKind};

/// Most fraud cases accepted for one village or unit in one month (a typo guard).
pub const MAX_CASES_PER_MONTH: u32 = 10_000;
/// Largest loss accepted for one village or unit in one month: 1,000,000,000.00 yuan,
/// in fen (a typo guard).
pub const MAX_LOSSES_FEN: i64 = 100_000_000_000;

/// A calendar month of the town's clock (China Standard Time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// Year, 2000 to 2100.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u32,
}

impl Month {
    /// Parses `YYYY-MM` (years 2000 to 2100).
    ///
    /// Errors: [`Error::BadRequest`] naming the expected form.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::BadRequest("a month is written YYYY-MM, e.g. 2024-05".into());
        let s = s.trim();
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (year, month): (i32, u32) =
            (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if !(2000..=2100).contains(&year) || !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Self { year, month })
    }

    /// The town's month that holds the instant `at_ms` (UTC milliseconds).
    pub fn of_ms(at_ms: i64) -> Self {
        let date = doorstep_core::model::town_date(at_ms);
        Self::parse(&date[..7.min(date.len())]).unwrap_or(Self {
            year: 2000,
            month: 1,
        })
    }

    /// The month before.
    pub fn previous(self) -> Self {
        if self.month == 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                month: self.month - 1,
                ..self
            }
        }
    }

    /// The month after.
    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                month: self.month + 1,
                ..self
            }
        }
    }

    /// The first instant of the month, UTC milliseconds (00:00 CST on the 1st).
    pub fn start_ms(self) -> i64 {
        let days = chrono::NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .map(|d| {
                d.signed_duration_since(chrono::NaiveDate::default())
                    .num_days()
            })
            .unwrap_or(0);
        days * 86_400_000 - TOWN_UTC_OFFSET_MS
    }

    /// The first instant after the month, UTC milliseconds.
    pub fn end_ms(self) -> i64 {
        self.next().start_ms()
    }

    /// `2024年5月`, as titles show it.
    pub fn label_zh(self) -> String {
        format!("{}年{}月", self.year, self.month)
    }
}

impl std::fmt::Display for Month {
    /// `YYYY-MM`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Fen as yuan with two decimals: `123456` → `1234.56`, `-5` → `-0.05`.
pub fn format_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let fen = fen.unsigned_abs();
    format!("{sign}{}.{:02}", fen / 100, fen % 100)
}

/// Parses an amount of yuan as typed (`1234`, `1234.5`, `1,234.56`, `１２３４`, `¥1234`,
/// `1234元`) into fen, exactly (no floating point). `None` for anything else: a
/// negative amount, more than two decimals, more than [`MAX_LOSSES_FEN`].
pub fn parse_yuan(s: &str) -> Option<i64> {
    let cleaned: String = crate::roster::to_halfwidth(s)
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',')
        .collect();
    let cleaned = cleaned
        .trim_start_matches(['¥', '￥'])
        .trim_end_matches('元');
    let (whole, frac) = cleaned.split_once('.').unwrap_or((cleaned, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 2
        || whole.len() > 12
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    let fen = whole.checked_mul(100)?.checked_add(frac)?;
    (fen <= MAX_LOSSES_FEN).then_some(fen)
}

/// A village or unit as stored, with its lecturer figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceRecord {
    /// The place as imported.
    pub place: Place,
    /// Lecturers required ([`crate::places::lecturers_required`]).
    pub lecturers_required: u32,
    /// Lecturers named.
    pub lecturers_named: u32,
    /// Fewer named than required (标记: 宣讲员不足).
    pub short_of_lecturers: bool,
    /// When the list holding it was imported, UTC milliseconds.
    pub imported_at_ms: i64,
}

/// What an import of the responsible persons changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacesOutcome {
    /// Places new to the server.
    pub created: usize,
    /// Places already known, their row replaced.
    pub updated: usize,
    /// Names of the places imported short of lecturers, in the order given.
    pub short_of_lecturers: Vec<String>,
}

/// A village's or unit's fraud figures for a month, as the entry form shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudCasesEntry {
    /// Village or unit.
    pub place: String,
    /// Village or unit.
    pub kind: PlaceKind,
    /// Cases entered; `None` when nothing was entered for the month.
    pub cases: Option<u32>,
    /// Losses in fen; `None` when nothing was entered.
    pub losses_fen: Option<i64>,
    /// Who entered them.
    pub entered_by: Option<String>,
    /// When, UTC milliseconds.
    pub entered_at_ms: Option<i64>,
}

/// One line of the monthly bulletin: a village, a unit, or the town's total.
///
/// Household figures (households to follow-up calls, rectifications) are the
/// village's; a unit has none and shows zeros there. Counts of households are of
/// households as they stand now (the projection); "to the month's end" figures count
/// visits finished (device clock) before the month's end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BulletinRow {
    /// Village or unit name; `全镇合计` on the total row.
    pub place: String,
    /// Village or unit; `None` on the total row.
    pub kind: Option<PlaceKind>,
    /// Households in the village.
    pub households: u64,
    /// Households with a completed, not voided visit finished before the month's end
    /// (coverage to date).
    pub visited: u64,
    /// Households with a completed, not voided visit finished within the month.
    pub visited_in_month: u64,
    /// Households with a signed pledge (承诺书) in the evidence log on a completed, not
    /// voided visit finished before the month's end.
    pub pledged: u64,
    /// Follow-up calls (电话回访) made in the month.
    pub calls_made: u64,
    /// Of those, reached the household.
    pub calls_reached: u64,
    /// Of those, the household confirmed the visit.
    pub calls_confirmed: u64,
    /// Of those, the household denied the visit.
    pub calls_denied: u64,
    /// Of those, the household had not understood.
    pub calls_not_understood: u64,
    /// Rectifications (整改) opened in the month.
    pub rectifications_opened: u64,
    /// Rectifications closed in the month (server clock) because the office approved
    /// their fix (本月审核通过): a fix recorded on the phone but not yet reviewed, or
    /// rejected (复核未通过, the task closed as a new one is opened on its visit),
    /// does not count.
    pub rectifications_approved: u64,
    /// Directives whose acknowledgement (签收) fell due in the month, sent to the place.
    pub directives_due: u64,
    /// Of those, acknowledged by the due time.
    pub directives_on_time: u64,
    /// Of those, acknowledged after it.
    pub directives_late: u64,
    /// Of those, not acknowledged although the due time had passed when the bulletin
    /// was made (one still within its time counts in none of on time, late and this).
    pub directives_unacknowledged: u64,
    /// Fraud cases (发案数) entered for the month; `None` when not entered (on the
    /// total row: when no place has entered any).
    pub fraud_cases: Option<u64>,
    /// Losses (损失数) in fen; `None` when not entered.
    pub losses_fen: Option<i64>,
}

impl BulletinRow {
    /// `visited / households`, 0.0 to 1.0; `None` without households.
    pub fn coverage(&self) -> Option<f64> {
        (self.households > 0).then(|| self.visited as f64 / self.households as f64)
    }

    /// Coverage as a percentage with one decimal (`87.5%`), or `—` without households.
    pub fn coverage_text(&self) -> String {
        self.coverage()
            .map_or_else(|| "—".into(), |c| format!("{:.1}%", c * 100.0))
    }

    fn add(&mut self, o: &BulletinRow) {
        self.households += o.households;
        self.visited += o.visited;
        self.visited_in_month += o.visited_in_month;
        self.pledged += o.pledged;
        self.calls_made += o.calls_made;
        self.calls_reached += o.calls_reached;
        self.calls_confirmed += o.calls_confirmed;
        self.calls_denied += o.calls_denied;
        self.calls_not_understood += o.calls_not_understood;
        self.rectifications_opened += o.rectifications_opened;
        self.rectifications_approved += o.rectifications_approved;
        self.directives_due += o.directives_due;
        self.directives_on_time += o.directives_on_time;
        self.directives_late += o.directives_late;
        self.directives_unacknowledged += o.directives_unacknowledged;
        if let Some(c) = o.fraud_cases {
            *self.fraud_cases.get_or_insert(0) += c;
        }
        if let Some(l) = o.losses_fen {
            *self.losses_fen.get_or_insert(0) += l;
        }
    }
}

/// The monthly bulletin (月度通报): one row per village (first) and per unit, and the
/// town's total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bulletin {
    /// The month.
    pub month: String,
    /// When the figures were read, UTC milliseconds.
    pub generated_at_ms: i64,
    /// Villages (in the responsible-persons list's order, then villages known only from
    /// households, by name), then units.
    pub rows: Vec<BulletinRow>,
    /// The sums of `rows` (`全镇合计`).
    pub total: BulletinRow,
}

/// The name on the bulletin's total row.
pub const TOTAL_ROW: &str = "全镇合计";

fn forbidden(p: &Principal, perm: Permission) -> Error {
    Error::Forbidden(format!(
        "a {} account may not do this ({perm:?})",
        p.role.as_str()
    ))
}

fn require(p: &Principal, perm: Permission) -> Result<()> {
    if p.may_at_all(perm) {
        Ok(())
    } else {
        Err(forbidden(p, perm))
    }
}

/// A name from a file or a form: no control or invisible characters, 1 to
/// [`MAX_NAME_CHARS`] characters.
fn check_name(name: &str, what: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0
        || n > MAX_NAME_CHARS
        || name
            .chars()
            .any(|c| c.is_control() || super::accounts::is_invisible_format(c))
    {
        return Err(Error::BadRequest(format!(
            "{what} must be 1 to {MAX_NAME_CHARS} characters, without control characters"
        )));
    }
    Ok(())
}

fn read_place(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Place, i64)> {
    let kind: String = r.get(1)?;
    let lecturers: String = r.get(6)?;
    Ok((
        Place {
            name: r.get(0)?,
            kind: PlaceKind::parse(&kind).unwrap_or(PlaceKind::Unit),
            population: r.get(2)?,
            first_responsible: r.get(3)?,
            responsible: r.get(4)?,
            liaison: r.get(5)?,
            lecturers: serde_json::from_str(&lecturers).unwrap_or_default(),
        },
        r.get(7)?,
    ))
}

const PLACE_COLUMNS: &str = "name, kind, population, first_responsible, responsible, liaison, \
                             lecturers, imported_at_ms";

/// Places by kind (villages first) and then in the order they were first imported.
fn all_places(conn: &Connection) -> Result<Vec<(Place, i64)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PLACE_COLUMNS} FROM places ORDER BY kind = 'unit', rowid"
    ))?;
    let rows = stmt.query_map([], read_place)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl ServerDb {
    /// Stores the villages and units of a responsible-persons list (`places::read_places`):
    /// each one's row is created or replaced; places missing from the list stay. One
    /// transaction, audited with the counts and the names of the places short of
    /// lecturers (never a person's name).
    ///
    /// Errors: [`Error::Forbidden`] without `ManagePlaces`; [`Error::BadRequest`] for a
    /// name empty or over [`MAX_NAME_CHARS`] characters, a place listed twice, a
    /// population over `places::MAX_POPULATION`, more than [`MAX_LECTURERS`]
    /// lecturers, or a village name not ending as villages do (`PlaceKind::of_name`)
    /// (nothing is stored then).
    pub fn import_places(&self, p: &Principal, places: &[Place]) -> Result<PlacesOutcome> {
        require(p, Permission::ManagePlaces)?;
        let mut seen = std::collections::HashSet::new();
        for place in places {
            check_name(&place.name, "the name of a village or unit")?;
            if !seen.insert(place.name.as_str()) {
                return Err(Error::BadRequest(format!("{} is listed twice", place.name)));
            }
            for person in [&place.first_responsible, &place.responsible, &place.liaison]
                .into_iter()
                .chain(&place.lecturers)
            {
                check_name(person, "a person's name")?;
            }
            if place.population > crate::places::MAX_POPULATION
                || place.lecturers.len() > MAX_LECTURERS
            {
                return Err(Error::BadRequest(format!(
                    "{}: the population or the number of lecturers is out of bounds",
                    place.name
                )));
            }
            if place.kind == PlaceKind::Village && PlaceKind::of_name(&place.name) != place.kind {
                return Err(Error::BadRequest(format!(
                    "{}: a village's name ends in 村 or 社区",
                    place.name
                )));
            }
        }
        let now = now_ms();
        let mut outcome = PlacesOutcome::default();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for place in places {
            let known: bool = tx
                .query_row(
                    "SELECT 1 FROM places WHERE name = ?1",
                    [&place.name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            // An upsert, not INSERT OR REPLACE: the row keeps its rowid, so the list's
            // first order stays the pages' order.
            tx.execute(
                "INSERT INTO places (name, kind, population, first_responsible, responsible,
                                     liaison, lecturers, imported_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind,
                     population = excluded.population,
                     first_responsible = excluded.first_responsible,
                     responsible = excluded.responsible, liaison = excluded.liaison,
                     lecturers = excluded.lecturers, imported_at_ms = excluded.imported_at_ms",
                params![
                    place.name,
                    place.kind.as_str(),
                    place.population,
                    place.first_responsible,
                    place.responsible,
                    place.liaison,
                    serde_json::to_string(&place.lecturers).unwrap_or_else(|_| "[]".into()),
                    now
                ],
            )?;
            if known {
                outcome.updated += 1;
            } else {
                outcome.created += 1;
            }
            if place.is_short_of_lecturers() {
                outcome.short_of_lecturers.push(place.name.clone());
            }
        }
        audit::append(
            &tx,
            &self.server_key,
            now,
            &p.username,
            None,
            "import_places",
            "places",
            json!({
                "places": places.len(),
                "created": outcome.created,
                "updated": outcome.updated,
                "short_of_lecturers": outcome.short_of_lecturers,
            }),
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Every village and unit with its responsible persons and lecturer figures:
    /// villages first, then units, each in the list's order.
    ///
    /// Errors: [`Error::Forbidden`] without `ManagePlaces`.
    pub fn places(&self, p: &Principal) -> Result<Vec<PlaceRecord>> {
        require(p, Permission::ManagePlaces)?;
        Ok(all_places(&self.conn())?
            .into_iter()
            .filter(|(place, _)| p.may_place(Permission::ManagePlaces, &place.name))
            .map(|(place, imported_at_ms)| PlaceRecord {
                lecturers_required: place.lecturers_required(),
                lecturers_named: place.lecturers_named(),
                short_of_lecturers: place.is_short_of_lecturers(),
                place,
                imported_at_ms,
            })
            .collect())
    }

    /// Records a month's fraud cases (发案数) and losses (损失数, in fen) of a village or
    /// unit, replacing what was entered before for that month and place. Audited with
    /// the old and new figures.
    ///
    /// Errors: [`Error::Forbidden`] without `EnterFraudCases` (police: only for the
    /// villages and units of their scope; the office: any); [`Error::BadRequest`] for a
    /// month not `YYYY-MM` or after the current one, an unknown place, negative or
    /// out-of-bounds figures ([`MAX_CASES_PER_MONTH`], [`MAX_LOSSES_FEN`]), or losses
    /// without a case.
    pub fn record_fraud_cases(
        &self,
        p: &Principal,
        month: &str,
        place: &str,
        cases: u32,
        losses_fen: i64,
    ) -> Result<()> {
        require(p, Permission::EnterFraudCases)?;
        let month = Month::parse(month)?;
        let now = now_ms();
        if month > Month::of_ms(now) {
            return Err(Error::BadRequest(
                "fraud cases are entered for a month that has begun".into(),
            ));
        }
        if !p.may_place(Permission::EnterFraudCases, place) {
            return Err(forbidden(p, Permission::EnterFraudCases));
        }
        if cases > MAX_CASES_PER_MONTH {
            return Err(Error::BadRequest(format!(
                "more than {MAX_CASES_PER_MONTH} cases in a month: check the figure"
            )));
        }
        if !(0..=MAX_LOSSES_FEN).contains(&losses_fen) {
            return Err(Error::BadRequest(format!(
                "losses are 0 to {} yuan",
                format_yuan(MAX_LOSSES_FEN)
            )));
        }
        if cases == 0 && losses_fen > 0 {
            return Err(Error::BadRequest(
                "losses are entered with the cases they come from: cases is 0".into(),
            ));
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let known = tx
            .query_row("SELECT 1 FROM places WHERE name = ?1", [place], |_| Ok(()))
            .optional()?
            .is_some();
        if !known {
            return Err(Error::BadRequest(
                "no such village or unit: import the responsible persons first".into(),
            ));
        }
        let month_text = month.to_string();
        let before: Option<(u32, i64)> = tx
            .query_row(
                "SELECT cases, losses_fen FROM fraud_cases WHERE month = ?1 AND place = ?2",
                params![month_text, place],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        tx.execute(
            "INSERT INTO fraud_cases (month, place, cases, losses_fen, entered_by, entered_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (month, place) DO UPDATE SET cases = excluded.cases,
                 losses_fen = excluded.losses_fen, entered_by = excluded.entered_by,
                 entered_at_ms = excluded.entered_at_ms",
            params![month_text, place, cases, losses_fen, p.username, now],
        )?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            &p.username,
            None,
            "fraud_cases",
            place,
            json!({
                "month": month_text,
                "cases": cases,
                "losses_fen": losses_fen,
                "before": before.map(|(c, l)| json!({"cases": c, "losses_fen": l})),
            }),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The month's fraud figures of every village and unit `p` may enter them for
    /// (villages first), entered or not, for the entry form.
    ///
    /// Errors: [`Error::Forbidden`] without `EnterFraudCases`; [`Error::BadRequest`]
    /// for a month not `YYYY-MM`.
    pub fn fraud_cases(&self, p: &Principal, month: &str) -> Result<Vec<FraudCasesEntry>> {
        require(p, Permission::EnterFraudCases)?;
        let month = Month::parse(month)?.to_string();
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT pl.name, pl.kind, f.cases, f.losses_fen, f.entered_by, f.entered_at_ms
               FROM places pl
               LEFT JOIN fraud_cases f ON f.place = pl.name AND f.month = ?1
              ORDER BY pl.kind = 'unit', pl.rowid",
        )?;
        let rows = stmt.query_map([&month], |r| {
            Ok(FraudCasesEntry {
                place: r.get(0)?,
                kind: PlaceKind::parse(&r.get::<_, String>(1)?).unwrap_or(PlaceKind::Unit),
                cases: r.get(2)?,
                losses_fen: r.get(3)?,
                entered_by: r.get(4)?,
                entered_at_ms: r.get(5)?,
            })
        })?;
        Ok(rows
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|e| p.may_place(Permission::EnterFraudCases, &e.place))
            .collect())
    }

    /// The monthly bulletin's figures (see [`BulletinRow`] for each one's meaning), for
    /// the villages and units `p` may read it for.
    ///
    /// Errors: [`Error::Forbidden`] without `ReadBulletin`; [`Error::BadRequest`] for a
    /// month not `YYYY-MM`.
    pub fn monthly_bulletin(&self, p: &Principal, month: &str) -> Result<Bulletin> {
        require(p, Permission::ReadBulletin)?;
        let month = Month::parse(month)?;
        let conn = self.conn();
        let mut bulletin = bulletin_figures(&conn, month, now_ms())?;
        bulletin
            .rows
            .retain(|r| p.may_place(Permission::ReadBulletin, &r.place));
        let mut total = BulletinRow {
            place: TOTAL_ROW.into(),
            ..BulletinRow::default()
        };
        for row in &bulletin.rows {
            total.add(row);
        }
        bulletin.total = total;
        Ok(bulletin)
    }

    /// The monthly bulletin as an `.xlsx` workbook ([`bulletin_workbook`]). Audited.
    ///
    /// Errors: [`Error::Forbidden`] without `ExportReports` or `ReadBulletin`;
    /// [`Error::BadRequest`] for a month not `YYYY-MM`; [`Error::Internal`] when the
    /// workbook cannot be written.
    pub fn bulletin_xlsx(&self, p: &Principal, month: &str) -> Result<Vec<u8>> {
        require(p, Permission::ExportReports)?;
        let bulletin = self.monthly_bulletin(p, month)?;
        let bytes = bulletin_workbook(&bulletin)
            .map_err(|e| Error::Internal(format!("writing the bulletin workbook: {e}")))?;
        self.audit(
            &p.username,
            None,
            "export",
            "bulletin.xlsx",
            json!({"month": bulletin.month, "rows": bulletin.rows.len()}),
        )?;
        Ok(bytes)
    }

    /// The visits finished (or, unfinished, started) within the month, as CSV: UTF-8
    /// with a byte-order mark (so that Excel reads the Chinese), RFC 4180 quoting, every
    /// text cell through [`spreadsheet_safe`]. One row per visit of a household in
    /// `p`'s reach: village, grid, door number, head of household, visitor, outcome,
    /// start and finish (town time), photos, signed papers, pledge, review, voided
    /// reason. No phone or ID numbers. Audited with the row count.
    ///
    /// Errors: [`Error::Forbidden`] without `ExportReports`; [`Error::BadRequest`] for
    /// a month not `YYYY-MM`.
    pub fn visits_csv(&self, p: &Principal, month: &str) -> Result<Vec<u8>> {
        require(p, Permission::ExportReports)?;
        let month = Month::parse(month)?;
        let mut out = b"\xEF\xBB\xBF".to_vec();
        let mut rows = 0usize;
        {
            let mut w = csv::Writer::from_writer(&mut out);
            let csv_err = |e: csv::Error| Error::Internal(e.to_string());
            w.write_record([
                "村",
                "网格",
                "门牌号",
                "户主",
                "走访人",
                "走访结果",
                "开始时间",
                "完成时间",
                "照片数",
                "签字材料数",
                "承诺书",
                "审核",
                "作废原因",
            ])
            .map_err(csv_err)?;
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT h.village, h.grid, h.door_number, h.head_name, v.visitor, v.outcome,
                        v.started_at_ms, v.finished_at_ms, v.photos, v.evidence,
                        v.visit_id IN (SELECT visit_id FROM evidence_log WHERE kind = 'pledge'),
                        r.state, v.voided_reason
                   FROM visits v
                   JOIN households h ON h.doc_id = v.doc_id
                   LEFT JOIN reviews r ON r.visit_id = v.visit_id
                  WHERE coalesce(v.finished_at_ms, v.started_at_ms) >= ?1
                    AND coalesce(v.finished_at_ms, v.started_at_ms) < ?2
                  ORDER BY h.village, h.grid, h.door_number, v.started_at_ms",
            )?;
            let mut q = stmt.query(params![month.start_ms(), month.end_ms()])?;
            while let Some(r) = q.next()? {
                let (village, grid): (String, String) = (r.get(0)?, r.get(1)?);
                if !p.may(Permission::ExportReports, &village, &grid) {
                    continue;
                }
                let outcome: String = r.get(5)?;
                let pledged: bool = r.get(10)?;
                let review: Option<String> = r.get(11)?;
                let record = [
                    village,
                    grid,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    outcome_zh(&outcome).to_owned(),
                    town_time(r.get(6)?),
                    r.get::<_, Option<i64>>(7)?
                        .map(town_time)
                        .unwrap_or_default(),
                    r.get::<_, i64>(8)?.to_string(),
                    r.get::<_, i64>(9)?.to_string(),
                    if pledged { "已签" } else { "未签" }.to_owned(),
                    review
                        .as_deref()
                        .map(review_zh)
                        .unwrap_or("未审核")
                        .to_owned(),
                    r.get::<_, Option<String>>(12)?.unwrap_or_default(),
                ];
                w.write_record(record.iter().map(|c| spreadsheet_safe(c).into_owned()))
                    .map_err(csv_err)?;
                rows += 1;
            }
            w.flush()?;
        }
        self.audit(
            &p.username,
            None,
            "export",
            "visits.csv",
            json!({"month": month.to_string(), "rows": rows}),
        )?;
        Ok(out)
    }
}

/// A visit outcome's Chinese name.
pub fn outcome_zh(outcome: &str) -> &'static str {
    match outcome {
        "completed" => "已完成",
        "nobody_home" => "无人在家",
        "refused" => "拒绝",
        "moved_away" => "已搬离",
        "in_progress" => "进行中",
        _ => "其他",
    }
}

/// A review state's Chinese name.
fn review_zh(state: &str) -> &'static str {
    match state {
        "received" => "已接收",
        "approved" => "已通过",
        "has_issues" => "有问题",
        _ => "其他",
    }
}

/// UTC milliseconds as the town's `YYYY-MM-DD HH:MM`.
fn town_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms + TOWN_UTC_OFFSET_MS)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// Counts per place from a query whose first column is the place and the others
/// counts (NULL as 0).
fn counts<const N: usize>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<HashMap<String, [u64; N]>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut q = stmt.query(params)?;
    let mut out = HashMap::new();
    while let Some(r) = q.next()? {
        let place: String = r.get(0)?;
        let mut values = [0u64; N];
        for (i, v) in values.iter_mut().enumerate() {
            *v = r.get::<_, Option<i64>>(i + 1)?.unwrap_or(0).max(0) as u64;
        }
        out.insert(place, values);
    }
    Ok(out)
}

/// The bulletin's rows, every place (the caller filters by scope and totals), as the
/// figures stand at `now` (UTC milliseconds).
fn bulletin_figures(conn: &Connection, month: Month, now: i64) -> Result<Bulletin> {
    let (start, end) = (month.start_ms(), month.end_ms());
    // A visit counts when completed, not voided, and finished (device clock) before
    // the bound.
    const DONE: &str = "v.outcome = 'completed' AND v.voided_reason IS NULL";
    let households = counts::<1>(
        conn,
        "SELECT village, count(*) FROM households GROUP BY village",
        [],
    )?;
    let visited = counts::<2>(
        conn,
        &format!(
            "SELECT h.village,
                    count(DISTINCT v.doc_id),
                    count(DISTINCT CASE WHEN coalesce(v.finished_at_ms, v.started_at_ms) >= ?1
                                        THEN v.doc_id END)
               FROM visits v JOIN households h ON h.doc_id = v.doc_id
              WHERE {DONE} AND coalesce(v.finished_at_ms, v.started_at_ms) < ?2
              GROUP BY h.village"
        ),
        params![start, end],
    )?;
    let pledged = counts::<1>(
        conn,
        &format!(
            "SELECT h.village, count(DISTINCT v.doc_id)
               FROM visits v JOIN households h ON h.doc_id = v.doc_id
              WHERE {DONE} AND coalesce(v.finished_at_ms, v.started_at_ms) < ?1
                AND v.visit_id IN (SELECT visit_id FROM evidence_log WHERE kind = 'pledge')
              GROUP BY h.village"
        ),
        params![end],
    )?;
    let calls = counts::<5>(
        conn,
        "SELECT h.village, count(*), sum(c.reached != 0),
                sum(c.reached != 0 AND c.confirmed = 1),
                sum(c.reached != 0 AND c.confirmed = 0),
                sum(c.reached != 0 AND c.understood = 0)
           FROM follow_up_calls c JOIN households h ON h.doc_id = c.doc_id
          WHERE c.called_at_ms >= ?1 AND c.called_at_ms < ?2
          GROUP BY h.village",
        params![start, end],
    )?;
    // Approved fixes: tasks closed in the month (server clock, not the phone's) with a
    // fix recorded. The projection keeps no closing note, so a rejection is told by
    // what it does: it closes the fixed task ("复核未通过，已另开整改") and opens a new
    // task on the task's visit or on its fixing visit in the same write, at the same
    // instant. An approval opens nothing, and a task opened on the visit later does not
    // undo an approval already reported.
    let rectifications = counts::<2>(
        conn,
        "SELECT h.village,
                sum(t.opened_at_ms >= ?1 AND t.opened_at_ms < ?2),
                sum(t.closed_at_ms >= ?1 AND t.closed_at_ms < ?2
                    AND t.fixed_visit_id IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM rectifications n
                                     WHERE n.doc_id = t.doc_id AND n.rect_id != t.rect_id
                                       AND n.visit_id IN (t.visit_id, t.fixed_visit_id)
                                       AND n.opened_at_ms = t.closed_at_ms))
           FROM rectifications t JOIN households h ON h.doc_id = t.doc_id
          WHERE (t.opened_at_ms >= ?1 AND t.opened_at_ms < ?2)
             OR (t.closed_at_ms >= ?1 AND t.closed_at_ms < ?2)
          GROUP BY h.village",
        params![start, end],
    )?;
    let directives = counts::<4>(
        conn,
        "SELECT dp.place, count(*),
                sum(dp.acknowledged_at_ms IS NOT NULL AND dp.acknowledged_at_ms <= d.ack_due_ms),
                sum(dp.acknowledged_at_ms IS NOT NULL AND dp.acknowledged_at_ms > d.ack_due_ms),
                sum(dp.acknowledged_at_ms IS NULL AND d.ack_due_ms < ?3)
           FROM directive_places dp JOIN directives d ON d.doc_id = dp.doc_id
          WHERE d.ack_due_ms >= ?1 AND d.ack_due_ms < ?2
          GROUP BY dp.place",
        params![start, end, now],
    )?;
    let mut fraud: HashMap<String, (u64, i64)> = HashMap::new();
    {
        let mut stmt = conn
            .prepare_cached("SELECT place, cases, losses_fen FROM fraud_cases WHERE month = ?1")?;
        let mut q = stmt.query([month.to_string()])?;
        while let Some(r) = q.next()? {
            fraud.insert(r.get(0)?, (r.get(1)?, r.get(2)?));
        }
    }

    // The rows: the list's places, then villages known only from households (and places
    // known only from directives), by name.
    let mut rows: Vec<BulletinRow> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let listed = all_places(conn)?;
    let mut add_row = |rows: &mut Vec<BulletinRow>, name: &str, kind: PlaceKind| {
        if !index.contains_key(name) {
            index.insert(name.to_owned(), rows.len());
            rows.push(BulletinRow {
                place: name.to_owned(),
                kind: Some(kind),
                ..BulletinRow::default()
            });
        }
    };
    for (place, _) in listed.iter().filter(|(p, _)| p.kind == PlaceKind::Village) {
        add_row(&mut rows, &place.name, PlaceKind::Village);
    }
    let mut others: Vec<&String> = households
        .keys()
        .chain(directives.keys())
        .filter(|n| !listed.iter().any(|(p, _)| &p.name == *n))
        .collect();
    others.sort();
    for name in others {
        add_row(&mut rows, name, PlaceKind::of_name(name));
    }
    for (place, _) in listed.iter().filter(|(p, _)| p.kind == PlaceKind::Unit) {
        add_row(&mut rows, &place.name, PlaceKind::Unit);
    }
    // Villages first (stable: each kind keeps its order).
    rows.sort_by_key(|r| r.kind == Some(PlaceKind::Unit));

    for row in &mut rows {
        let name = row.place.as_str();
        if let Some([n]) = households.get(name) {
            row.households = *n;
        }
        if let Some([all, in_month]) = visited.get(name) {
            row.visited = *all;
            row.visited_in_month = *in_month;
        }
        if let Some([n]) = pledged.get(name) {
            row.pledged = *n;
        }
        if let Some([made, reached, confirmed, denied, not_understood]) = calls.get(name) {
            row.calls_made = *made;
            row.calls_reached = *reached;
            row.calls_confirmed = *confirmed;
            row.calls_denied = *denied;
            row.calls_not_understood = *not_understood;
        }
        if let Some([opened, approved]) = rectifications.get(name) {
            row.rectifications_opened = *opened;
            row.rectifications_approved = *approved;
        }
        if let Some([due, on_time, late, none]) = directives.get(name) {
            row.directives_due = *due;
            row.directives_on_time = *on_time;
            row.directives_late = *late;
            row.directives_unacknowledged = *none;
        }
        if let Some((cases, losses)) = fraud.get(name) {
            row.fraud_cases = Some(*cases);
            row.losses_fen = Some(*losses);
        }
    }
    Ok(Bulletin {
        month: month.to_string(),
        generated_at_ms: now,
        rows,
        total: BulletinRow::default(),
    })
}

// ---------------------------------------------------------------------------------
// The workbook.

/// What a column of the bulletin holds.
#[derive(Debug, Clone, Copy)]
enum Figure {
    /// A count; blank on a unit's row when `village_only`.
    Count(fn(&BulletinRow) -> u64, bool),
    /// An optional count (fraud cases): blank when not entered.
    OptCount(fn(&BulletinRow) -> Option<u64>),
    /// A fraction shown as a percentage.
    Coverage,
    /// Fen, shown as yuan with two decimals.
    Money,
}

/// The bulletin's columns after 序号, 村（单位）, 类别: header and figure.
const FIGURES: &[(&str, Figure)] = &[
    ("户数", Figure::Count(|r| r.households, true)),
    ("已走访户数", Figure::Count(|r| r.visited, true)),
    ("本月走访户数", Figure::Count(|r| r.visited_in_month, true)),
    ("走访覆盖率", Figure::Coverage),
    ("已签承诺书户数", Figure::Count(|r| r.pledged, true)),
    ("电话回访次数", Figure::Count(|r| r.calls_made, true)),
    ("回访接通", Figure::Count(|r| r.calls_reached, true)),
    ("回访确认走访", Figure::Count(|r| r.calls_confirmed, true)),
    ("回访否认走访", Figure::Count(|r| r.calls_denied, true)),
    (
        "回访未理解",
        Figure::Count(|r| r.calls_not_understood, true),
    ),
    (
        "本月发起整改",
        Figure::Count(|r| r.rectifications_opened, true),
    ),
    (
        "本月审核通过整改",
        Figure::Count(|r| r.rectifications_approved, true),
    ),
    ("本月应签收指令", Figure::Count(|r| r.directives_due, false)),
    ("按时签收", Figure::Count(|r| r.directives_on_time, false)),
    ("逾期签收", Figure::Count(|r| r.directives_late, false)),
    (
        "未签收",
        Figure::Count(|r| r.directives_unacknowledged, false),
    ),
    ("发案数", Figure::OptCount(|r| r.fraud_cases)),
    ("损失金额（元）", Figure::Money),
];

/// The bulletin's column headers, in the workbook's order (序号, 村（单位）, 类别, then
/// the figures).
pub fn bulletin_headers() -> Vec<&'static str> {
    ["序号", "村（单位）", "类别"]
        .into_iter()
        .chain(FIGURES.iter().map(|(h, _)| *h))
        .collect()
}

/// Rows of the workbook above the table: the title (row 1) and a line saying the month
/// and when it was made (row 2); the header is row 3 and is frozen with them.
pub const BULLETIN_HEADER_ROW: u32 = 2;

/// Display width of a text in Excel's character units: CJK and other wide characters
/// count two.
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| {
            if matches!(c as u32, 0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3
                | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6)
            {
                2
            } else {
                1
            }
        })
        .sum()
}

/// The bulletin as an `.xlsx` workbook: one sheet `月度通报`; a title row merged across
/// the table (`2024年5月防范电信网络诈骗工作月度通报`), a line with the month's bounds and
/// when the figures were read, the header row (Chinese, bold, frozen with the rows
/// above and the first two columns), one row per village and unit, and the total row
/// (bold). Figures are numbers, not text: counts as integers, coverage as a fraction
/// formatted `0.0%`, losses in yuan formatted `#,##0.00`; a unit's household figures
/// and figures not entered are blank. Column widths fit their Chinese text.
///
/// Errors: whatever rust_xlsxwriter reports.
pub fn bulletin_workbook(b: &Bulletin) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, FormatAlign, FormatBorder, Workbook};

    let month = Month::parse(&b.month)
        .map_err(|e| rust_xlsxwriter::XlsxError::ParameterError(format!("month: {e}")))?;
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("月度通报")?;
    let headers = bulletin_headers();
    let last_col = (headers.len() - 1) as u16;

    let title = Format::new()
        .set_bold()
        .set_font_size(16)
        .set_align(FormatAlign::Center)
        .set_align(FormatAlign::VerticalCenter);
    let note = Format::new().set_font_size(10);
    let header = Format::new()
        .set_bold()
        .set_text_wrap()
        .set_align(FormatAlign::Center)
        .set_align(FormatAlign::VerticalCenter)
        .set_background_color("DDEBF7")
        .set_border(FormatBorder::Thin);
    let cell = Format::new().set_border(FormatBorder::Thin);
    let count = cell.clone().set_num_format("0");
    let percent = cell.clone().set_num_format("0.0%");
    let money = cell.clone().set_num_format("#,##0.00");
    let bold = |f: &Format| f.clone().set_bold();

    sheet.merge_range(
        0,
        0,
        0,
        last_col,
        &format!("{}防范电信网络诈骗工作月度通报", month.label_zh()),
        &title,
    )?;
    sheet.set_row_height(0, 30)?;
    sheet.write_string_with_format(
        1,
        0,
        format!(
            "统计月份：{}（北京时间 {} 至 {}）；数据截至 {}",
            month,
            town_time(month.start_ms()),
            town_time(month.end_ms()),
            town_time(b.generated_at_ms)
        ),
        &note,
    )?;
    let mut widths: Vec<usize> = headers.iter().map(|h| display_width(h)).collect();
    for (c, h) in headers.iter().enumerate() {
        sheet.write_string_with_format(BULLETIN_HEADER_ROW, c as u16, *h, &header)?;
    }

    let rows = b.rows.iter().enumerate().map(|(i, row)| (Some(i + 1), row));
    let lines = rows.chain(std::iter::once((None, &b.total)));
    for (r, (seq, row)) in (BULLETIN_HEADER_ROW + 1..).zip(lines) {
        let is_total = seq.is_none();
        let pick = |f: &Format| if is_total { bold(f) } else { f.clone() };
        match seq {
            Some(n) => sheet.write_number_with_format(r, 0, n as f64, &pick(&count))?,
            None => sheet.write_blank(r, 0, &pick(&cell))?,
        };
        sheet.write_string_with_format(r, 1, &row.place, &pick(&cell))?;
        widths[1] = widths[1].max(display_width(&row.place));
        let kind = row.kind.map_or("", PlaceKind::label_zh);
        sheet.write_string_with_format(r, 2, kind, &pick(&cell))?;
        let is_unit = row.kind == Some(PlaceKind::Unit);
        for (i, (_, figure)) in FIGURES.iter().enumerate() {
            let c = (i + 3) as u16;
            let value: Option<(f64, &Format)> = match figure {
                Figure::Count(get, village_only) => {
                    (!(is_unit && *village_only)).then(|| (get(row) as f64, &count))
                }
                Figure::OptCount(get) => get(row).map(|v| (v as f64, &count)),
                Figure::Coverage => row.coverage().map(|v| (v, &percent)),
                Figure::Money => row.losses_fen.map(|v| (v as f64 / 100.0, &money)),
            };
            match value {
                Some((v, format)) => {
                    sheet.write_number_with_format(r, c, v, &pick(format))?;
                    let shown = match figure {
                        Figure::Money => format_yuan(row.losses_fen.unwrap_or(0)).len() + 3,
                        _ => format!("{v}").len(),
                    };
                    widths[i + 3] = widths[i + 3].max(shown);
                }
                None => {
                    sheet.write_blank(r, c, &pick(&cell))?;
                }
            };
        }
    }
    for (c, w) in widths.iter().enumerate() {
        // Headers wrap: a long one may take two lines rather than a wide column.
        let w = if c >= 3 { (*w).clamp(6, 12) } else { *w };
        sheet.set_column_width(c as u16, (w + 2) as f64)?;
    }
    sheet.set_row_height(BULLETIN_HEADER_ROW, 36)?;
    sheet.set_freeze_panes(BULLETIN_HEADER_ROW + 1, 2)?;
    sheet.set_landscape();
    sheet.set_print_fit_to_pages(1, 0);
    book.save_to_buffer()
}

/// A `Content-Disposition` value for a download named `name` (which may be Chinese):
/// `attachment; filename="<ascii>"; filename*=UTF-8''<percent-encoded>` (RFC 6266 with
/// RFC 5987's encoding), where `<ascii>` is `fallback` for clients that read only the
/// plain form.
pub fn content_disposition(name: &str, fallback: &str) -> String {
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let fallback: String = fallback
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use calamine::{Data, Reader, Xlsx};
    use doorstep_core::model::{
        EvidenceKind, FollowUpCall, Household, HouseholdId, Resident, ReviewState, Visit, VisitId,
        VisitOutcome,
    };
    use doorstep_core::protocol::{Incoming, Outgoing, Step};
    use doorstep_core::store::{Store, VisitFinish, VisitStart};

    use super::*;
    use crate::access::{GridRef, Role, Scope};
    use crate::db::Device;
    use crate::db::office::{DirectiveInput, RectificationFilter};

    const GRID: &str = "甲村第1网格";

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

    fn household(village: &str, grid: &str, door: &str) -> Household {
        let mut h = Household::new(HouseholdId::new(), village, grid, door);
        h.head_name = "张三".into();
        h.residents.insert(
            doorstep_core::model::ResidentId::new().to_string(),
            Resident {
                name: "张三".into(),
                relation: "户主".into(),
                sex: "男".into(),
                birth_date: None,
                id_number: None,
                phone: None,
                target_groups: vec![],
            },
        );
        h
    }

    fn imported_visit(started_at_ms: i64, voided: bool) -> (String, Visit) {
        let visit = Visit {
            visitor: "w0".into(),
            device_id: doorstep_core::model::DeviceId::new().to_string(),
            started_at_ms,
            finished_at_ms: Some(started_at_ms + 600_000),
            outcome: Some(VisitOutcome::Completed),
            outcome_reason: String::new(),
            voided: voided.then(|| doorstep_core::model::VoidNote {
                reason: "录错户".into(),
                at_ms: started_at_ms + 700_000,
            }),
            target_groups_reached: vec![],
            remarks: String::new(),
            photos: Default::default(),
            location: None,
        };
        (VisitId::new().to_string(), visit)
    }

    /// A phone: a core store signed in to `db` as `user` (its evidence key registered).
    fn phone(db: &ServerDb, dir: &std::path::Path, user: &str) -> (Store, Device) {
        let mut store = Store::open(dir.join(format!("{user}.db"))).unwrap();
        let token = db
            .sign_in(
                user,
                "password-1",
                store.device_id(),
                Some(store.device_public_key()),
            )
            .unwrap();
        store.set_setting("username", user).unwrap();
        store
            .set_setting("registered_key", &hex::encode(store.device_public_key()))
            .unwrap();
        let device = db.authenticate(&token).unwrap();
        (store, device)
    }

    /// One whole sync of `store` with `db`, in process: push, pull, blobs.
    fn sync(db: &ServerDb, device: &Device, store: &mut Store) {
        let mut session = store.sync_session().unwrap();
        loop {
            let incoming = match session.poll() {
                Step::Done(_) => return,
                Step::Send(Outgoing::Sync(req)) => {
                    let resp = db.sync(device, &req).unwrap();
                    assert!(resp.rejected.is_empty(), "{:?}", resp.rejected);
                    Incoming::Sync(resp)
                }
                Step::Send(Outgoing::FindMissingBlobs(q)) => {
                    Incoming::MissingBlobs(db.missing_blobs(&q).unwrap())
                }
                Step::Send(Outgoing::UploadBlob { sha256 }) => {
                    db.put_blob(&sha256, &store.blob(&sha256).unwrap().unwrap())
                        .unwrap();
                    Incoming::BlobStored { sha256 }
                }
            };
            let effects = session.receive(incoming).unwrap();
            store.apply_effects(&effects).unwrap();
        }
    }

    fn small_jpeg(seed: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([x as u8 ^ seed, y as u8, seed.wrapping_mul(7)])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut out, 80,
        ))
        .unwrap();
        out.into_inner()
    }

    /// A completed visit as at the door, finished now: photo, notice and pledge signed.
    fn door_visit(store: &mut Store, h: HouseholdId, seed: u32) -> VisitId {
        let now = now_ms();
        let visit = store
            .start_visit(
                h,
                VisitStart {
                    started_at_ms: now - 600_000,
                    location: None,
                },
            )
            .unwrap();
        store
            .attach_photo(h, visit, &small_jpeg(seed as u8))
            .unwrap();
        for (i, kind) in [EvidenceKind::Notice, EvidenceKind::Pledge]
            .into_iter()
            .enumerate()
        {
            crate::demo::sign_paper(store, h, visit, kind, seed * 2 + i as u32).unwrap();
        }
        store
            .finish_visit(
                h,
                visit,
                VisitFinish {
                    outcome: VisitOutcome::Completed,
                    outcome_reason: String::new(),
                    finished_at_ms: now,
                    target_groups_reached: vec![],
                    remarks: String::new(),
                },
            )
            .unwrap();
        visit
    }

    fn places_list() -> Vec<Place> {
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
        let import = crate::places::read_places_bytes(&bytes).unwrap();
        assert!(import.row_errors.is_empty());
        import.places
    }

    /// What the test database holds, and when.
    struct Town {
        _dir: tempfile::TempDir,
        db: ServerDb,
        /// The month of the phone's visits (now).
        month: Month,
        /// The month the directive's acknowledgement falls due in.
        due_month: Month,
        /// The visit whose household's door number is hostile.
        hostile_door: &'static str,
        /// The worker's phone and its device, to fix tasks later.
        store: Store,
        device: Device,
        /// Households 1 and 2 and their phone visits (visit 1's task is fixed, not yet
        /// reviewed; visit 2's task, from the call, is open).
        jia: [(HouseholdId, VisitId); 2],
    }

    /// Three households in 甲村 (two visited now on a phone with pledges, one visited
    /// last month, imported), one in 乙村 (its only visit voided); a review with issues
    /// and its fix, three follow-up calls, a directive to 甲村 and 镇派出所 acknowledged by
    /// the police station only, and fraud cases for 甲村 and 镇派出所.
    fn town() -> Town {
        let dir = tempfile::tempdir().unwrap();
        let db = ServerDb::open(&dir.path().join("server")).unwrap();
        let now = now_ms();
        let month = Month::of_ms(now);
        let hostile_door = "=HYPERLINK(\"http://x\")";
        let h1 = household("甲村", GRID, "1号");
        let h2 = household("甲村", GRID, hostile_door);
        let mut h3 = household("甲村", GRID, "3号");
        let (v3, visit) = imported_visit(month.previous().start_ms() + 86_400_000, false);
        h3.visits.insert(v3.clone(), visit);
        let mut h4 = household("乙村", "乙村第1网格", "1号");
        let (v4, visit) = imported_visit(month.start_ms() + 3_600_000, true);
        h4.visits.insert(v4, visit);
        let (id1, id2, id3) = (
            HouseholdId::parse(&h1.id).unwrap(),
            HouseholdId::parse(&h2.id).unwrap(),
            HouseholdId::parse(&h3.id).unwrap(),
        );
        db.import_households(&[h1, h2, h3, h4]).unwrap();
        db.import_places(&office(), &places_list()).unwrap();
        let grid = Scope::grids(vec![GridRef::new("甲村", GRID)]);
        db.add_user("w1", "password-1", Role::GridWorker, &grid, "(test)")
            .unwrap();
        db.add_user(
            "s1",
            "password-1",
            Role::Supervisor,
            &Scope::villages(vec!["甲村".into()]),
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

        // The worker's phone visits households 1 and 2.
        let (mut store, device) = phone(&db, dir.path(), "w1");
        sync(&db, &device, &mut store);
        let visit1 = door_visit(&mut store, id1, 1);
        let visit2 = door_visit(&mut store, id2, 2);
        sync(&db, &device, &mut store);

        // The office flags visit 1; the task reaches the phone and the fix comes back.
        db.write_review(
            &office(),
            id1,
            &visit1.to_string(),
            ReviewState::HasIssues,
            "照片看不清门牌",
        )
        .unwrap();
        sync(&db, &device, &mut store);
        let task = store.rectifications().unwrap()[0].id.clone();
        store
            .fix_rectification(id1, &task, visit1, "已重新拍照")
            .unwrap();
        sync(&db, &device, &mut store);

        // A supervisor calls three households: confirmed; denied and not understood
        // (which opens a second rectification); not reached.
        let supervisor = principal("s1", Role::Supervisor, Scope::villages(vec!["甲村".into()]));
        let call = |visit: String, reached: bool, yes: Option<bool>| FollowUpCall {
            visit_id: visit,
            by: String::new(),
            called_at_ms: now_ms(),
            reached,
            confirmed: yes,
            understood: yes,
            remarks: String::new(),
        };
        db.record_follow_up_call_as(&supervisor, id1, call(visit1.to_string(), true, Some(true)))
            .unwrap();
        db.record_follow_up_call_as(
            &supervisor,
            id2,
            call(visit2.to_string(), true, Some(false)),
        )
        .unwrap();
        db.record_follow_up_call_as(&supervisor, id3, call(v3, false, None))
            .unwrap();
        let rects = db
            .rectifications(&office(), &RectificationFilter::default())
            .unwrap();
        assert_eq!(rects.len(), 2, "one from the review, one from the call");

        // A directive to 甲村 and the police station; only the station acknowledges.
        let id = db
            .publish_directive(
                &office(),
                &DirectiveInput {
                    category: doorstep_core::directive::DirectiveCategory::Warning,
                    title: "警情通报".into(),
                    body: "近期冒充客服诈骗高发".into(),
                    places: vec!["甲村".into(), "镇派出所".into()],
                    ack_within_hours: 2,
                    push_within_hours: 4,
                },
            )
            .unwrap();
        let liaison = principal("l1", Role::Liaison, Scope::units(vec!["镇派出所".into()]));
        db.mark_directive_as(
            &liaison,
            id,
            "镇派出所",
            doorstep_core::directive::MarkKind::Acknowledged,
        )
        .unwrap();
        let due = db.directive(&office(), id).unwrap().ack_due_ms;

        // Fraud cases: police for 甲村, the office for the station.
        let police = principal(
            "p1",
            Role::Police,
            Scope {
                villages: vec!["甲村".into()],
                units: vec!["镇派出所".into()],
                ..Scope::default()
            },
        );
        let m = month.to_string();
        db.record_fraud_cases(&police, &m, "甲村", 3, 1_000_000)
            .unwrap();
        // Entered again: replaced.
        db.record_fraud_cases(&police, &m, "甲村", 2, 123_456)
            .unwrap();
        db.record_fraud_cases(&office(), &m, "镇派出所", 0, 0)
            .unwrap();
        Town {
            _dir: dir,
            db,
            month,
            due_month: Month::of_ms(due),
            hostile_door,
            store,
            device,
            jia: [(id1, visit1), (id2, visit2)],
        }
    }

    fn row<'a>(b: &'a Bulletin, place: &str) -> &'a BulletinRow {
        b.rows.iter().find(|r| r.place == place).unwrap()
    }

    #[test]
    fn months_are_town_time_and_money_is_exact() {
        let may = Month::parse("2024-05").unwrap();
        // 2024-05-01T00:00+08:00 = 2024-04-30T16:00Z.
        assert_eq!(may.start_ms(), 1_714_492_800_000);
        assert_eq!(may.end_ms(), Month::parse("2024-06").unwrap().start_ms());
        assert_eq!(Month::of_ms(may.start_ms()), may);
        assert_eq!(
            Month::of_ms(may.start_ms() - 1),
            Month::parse("2024-04").unwrap()
        );
        assert_eq!(
            Month::parse("2024-12").unwrap().next().to_string(),
            "2025-01"
        );
        assert_eq!(
            Month::parse("2024-01").unwrap().previous().to_string(),
            "2023-12"
        );
        assert_eq!(may.label_zh(), "2024年5月");
        for bad in [
            "2024-5",
            "2024-13",
            "2024-00",
            "24-05",
            "2024/05",
            "1999-12",
            "２０２４-05",
        ] {
            assert!(Month::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_yuan("1234.56"), Some(123_456));
        assert_eq!(parse_yuan("1,234.5元"), Some(123_450));
        assert_eq!(parse_yuan("￥１２"), Some(1_200));
        assert_eq!(parse_yuan(".5"), Some(50));
        assert_eq!(parse_yuan("0"), Some(0));
        for bad in ["", "-1", "1.234", "abc", "1e5", "10000000000000"] {
            assert_eq!(parse_yuan(bad), None, "{bad}");
        }
        assert_eq!(format_yuan(123_456), "1234.56");
        assert_eq!(format_yuan(5), "0.05");
        assert_eq!(format_yuan(-5), "-0.05");
    }

    #[test]
    fn places_are_stored_and_flagged_and_refused_without_the_permission() {
        let dir = tempfile::tempdir().unwrap();
        let db = ServerDb::open(dir.path()).unwrap();
        let list = places_list();
        let out = db.import_places(&office(), &list).unwrap();
        assert_eq!((out.created, out.updated), (3, 0));
        assert_eq!(out.short_of_lecturers, ["乙村"]);
        let again = db.import_places(&office(), &list[..1]).unwrap();
        assert_eq!((again.created, again.updated), (0, 1));
        let stored = db.places(&office()).unwrap();
        let names: Vec<&str> = stored.iter().map(|p| p.place.name.as_str()).collect();
        assert_eq!(
            names,
            ["甲村", "乙村", "镇派出所"],
            "the list's order is kept"
        );
        assert_eq!(stored[0].place, list[0]);
        assert_eq!(
            (
                stored[1].lecturers_required,
                stored[1].lecturers_named,
                stored[1].short_of_lecturers
            ),
            (2, 1, true)
        );
        let worker = principal("w", Role::GridWorker, Scope::town());
        assert!(matches!(
            db.import_places(&worker, &list),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(db.places(&worker), Err(Error::Forbidden(_))));
        let mut twice = list.clone();
        twice.push(list[0].clone());
        assert!(matches!(
            db.import_places(&office(), &twice),
            Err(Error::BadRequest(_))
        ));
        let entries = db.audit_entries(0, 100).unwrap();
        let last = entries
            .iter()
            .rev()
            .find(|e| e.action == "import_places")
            .unwrap();
        assert!(
            !last.detail.to_string().contains("甲一"),
            "no person in the audit log"
        );
    }

    #[test]
    fn fraud_cases_are_checked_scoped_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let db = ServerDb::open(dir.path()).unwrap();
        db.import_places(&office(), &places_list()).unwrap();
        let month = Month::of_ms(now_ms()).to_string();
        let police = principal("p1", Role::Police, Scope::villages(vec!["甲村".into()]));
        db.record_fraud_cases(&police, &month, "甲村", 1, 50_000)
            .unwrap();
        let bad_request = |r: Result<()>| assert!(matches!(r, Err(Error::BadRequest(_))), "{r:?}");
        bad_request(db.record_fraud_cases(&police, "2024-13", "甲村", 1, 0));
        let next = Month::of_ms(now_ms()).next().to_string();
        bad_request(db.record_fraud_cases(&police, &next, "甲村", 1, 0));
        bad_request(db.record_fraud_cases(&office(), &month, "丙村", 1, 0));
        bad_request(db.record_fraud_cases(&police, &month, "甲村", 0, 100));
        bad_request(db.record_fraud_cases(&police, &month, "甲村", 1, -1));
        bad_request(db.record_fraud_cases(&police, &month, "甲村", MAX_CASES_PER_MONTH + 1, 0));
        bad_request(db.record_fraud_cases(&police, &month, "甲村", 1, MAX_LOSSES_FEN + 1));
        assert!(matches!(
            db.record_fraud_cases(&police, &month, "乙村", 1, 0),
            Err(Error::Forbidden(_))
        ));
        let supervisor = principal("s", Role::Supervisor, Scope::town());
        assert!(matches!(
            db.record_fraud_cases(&supervisor, &month, "甲村", 1, 0),
            Err(Error::Forbidden(_))
        ));
        let form = db.fraud_cases(&police, &month).unwrap();
        assert_eq!(form.len(), 1, "the police see the places of their scope");
        assert_eq!((form[0].cases, form[0].losses_fen), (Some(1), Some(50_000)));
        let all = db.fraud_cases(&office(), &month).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].cases, None, "乙村: nothing entered");
        let entries = db.audit_entries(0, 100).unwrap();
        let last = entries.last().unwrap();
        assert_eq!(
            (last.action.as_str(), last.target.as_str()),
            ("fraud_cases", "甲村")
        );
    }

    #[test]
    fn bulletin_figures_match_the_records_and_the_workbook_matches_the_page() {
        let t = town();
        let db = &t.db;
        let b = db
            .monthly_bulletin(&office(), &t.month.to_string())
            .unwrap();
        let names: Vec<&str> = b.rows.iter().map(|r| r.place.as_str()).collect();
        assert_eq!(names, ["甲村", "乙村", "镇派出所"]);

        let jia = row(&b, "甲村");
        assert_eq!(
            (
                jia.households,
                jia.visited,
                jia.visited_in_month,
                jia.pledged
            ),
            (3, 3, 2, 2)
        );
        assert_eq!(jia.coverage(), Some(1.0));
        assert_eq!(
            (
                jia.calls_made,
                jia.calls_reached,
                jia.calls_confirmed,
                jia.calls_denied,
                jia.calls_not_understood
            ),
            (3, 2, 1, 1, 1)
        );
        assert_eq!(
            (jia.rectifications_opened, jia.rectifications_approved),
            (2, 0),
            "a fix the office has not reviewed yet is not counted"
        );
        assert_eq!((jia.fraud_cases, jia.losses_fen), (Some(2), Some(123_456)));

        let yi = row(&b, "乙村");
        assert_eq!(
            (yi.households, yi.visited, yi.pledged),
            (1, 0, 0),
            "voided visits do not count"
        );
        assert_eq!(yi.coverage(), Some(0.0));
        assert_eq!((yi.fraud_cases, yi.losses_fen), (None, None));

        let station = row(&b, "镇派出所");
        assert_eq!(station.kind, Some(PlaceKind::Unit));
        assert_eq!((station.households, station.coverage()), (0, None));
        assert_eq!(
            (station.fraud_cases, station.losses_fen),
            (Some(0), Some(0))
        );

        let total = &b.total;
        assert_eq!(total.place, TOTAL_ROW);
        assert_eq!((total.households, total.visited, total.pledged), (4, 3, 2));
        assert_eq!(total.coverage(), Some(0.75));
        assert_eq!(
            (total.fraud_cases, total.losses_fen),
            (Some(2), Some(123_456))
        );

        // Directives: counted in the month their acknowledgement falls due.
        let due = db
            .monthly_bulletin(&office(), &t.due_month.to_string())
            .unwrap();
        let (jia_d, station_d) = (row(&due, "甲村"), row(&due, "镇派出所"));
        assert_eq!(
            (
                jia_d.directives_due,
                jia_d.directives_on_time,
                jia_d.directives_unacknowledged
            ),
            (1, 0, 0),
            "still within its time: not yet counted as unacknowledged"
        );
        assert_eq!(
            (
                station_d.directives_due,
                station_d.directives_on_time,
                station_d.directives_late
            ),
            (1, 1, 0)
        );
        assert_eq!(due.total.directives_due, 2);
        // Once the time has passed, 甲村's missing acknowledgement counts.
        let due_ms = db.directives(&office()).unwrap()[0].ack_due_ms;
        let after = bulletin_figures(&db.conn(), t.due_month, due_ms + 1).unwrap();
        let (jia_a, station_a) = (row(&after, "甲村"), row(&after, "镇派出所"));
        assert_eq!(
            (jia_a.directives_due, jia_a.directives_unacknowledged),
            (1, 1)
        );
        assert_eq!(station_a.directives_unacknowledged, 0, "acknowledged");

        // The month before: only the imported visit, and none of this month's work.
        let before = db
            .monthly_bulletin(&office(), &t.month.previous().to_string())
            .unwrap();
        let jia_before = row(&before, "甲村");
        assert_eq!(
            (
                jia_before.visited,
                jia_before.visited_in_month,
                jia_before.pledged
            ),
            (1, 1, 0)
        );
        assert_eq!(
            (jia_before.calls_made, jia_before.rectifications_opened),
            (0, 0)
        );
        assert_eq!(jia_before.fraud_cases, None);

        // Who may read it.
        let worker = principal("w1", Role::GridWorker, Scope::town());
        assert!(matches!(
            db.monthly_bulletin(&worker, &t.month.to_string()),
            Err(Error::Forbidden(_))
        ));
        let supervisor = principal("s1", Role::Supervisor, Scope::villages(vec!["甲村".into()]));
        assert_eq!(
            db.monthly_bulletin(&supervisor, &t.month.to_string())
                .unwrap()
                .rows
                .len(),
            3
        );
        assert!(matches!(
            db.bulletin_xlsx(&supervisor, &t.month.to_string()),
            Err(Error::Forbidden(_))
        ));

        // The workbook, read back with calamine.
        let bytes = db.bulletin_xlsx(&office(), &t.month.to_string()).unwrap();
        let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).unwrap();
        assert_eq!(book.sheet_names(), ["月度通报"]);
        let sheet = book.worksheet_range("月度通报").unwrap();
        let cell = |r: u32, c: u32| sheet.get_value((r, c)).cloned().unwrap_or(Data::Empty);
        assert_eq!(
            cell(0, 0),
            Data::String(format!(
                "{}防范电信网络诈骗工作月度通报",
                t.month.label_zh()
            ))
        );
        let headers = bulletin_headers();
        let h = BULLETIN_HEADER_ROW;
        for (c, name) in headers.iter().enumerate() {
            assert_eq!(cell(h, c as u32), Data::String((*name).into()));
        }
        let col = |name: &str| headers.iter().position(|h| *h == name).unwrap() as u32;
        let number = |r: u32, name: &str| match cell(r, col(name)) {
            Data::Float(f) => Some(f),
            Data::Int(i) => Some(i as f64),
            Data::Empty => None,
            other => panic!("{name} on row {r} is {other:?}, not a number"),
        };
        let mut r = h + 1;
        for expected in b.rows.iter().chain(std::iter::once(&b.total)) {
            assert_eq!(cell(r, 1), Data::String(expected.place.clone()));
            let unit = expected.kind == Some(PlaceKind::Unit);
            let count = |v: u64| (!unit).then_some(v as f64);
            assert_eq!(number(r, "户数"), count(expected.households));
            assert_eq!(number(r, "已走访户数"), count(expected.visited));
            assert_eq!(number(r, "本月走访户数"), count(expected.visited_in_month));
            assert_eq!(number(r, "走访覆盖率"), expected.coverage());
            assert_eq!(number(r, "已签承诺书户数"), count(expected.pledged));
            assert_eq!(number(r, "电话回访次数"), count(expected.calls_made));
            assert_eq!(number(r, "回访否认走访"), count(expected.calls_denied));
            assert_eq!(
                number(r, "本月发起整改"),
                count(expected.rectifications_opened)
            );
            assert_eq!(
                number(r, "本月审核通过整改"),
                count(expected.rectifications_approved)
            );
            assert_eq!(
                number(r, "未签收"),
                Some(expected.directives_unacknowledged as f64)
            );
            assert_eq!(
                number(r, "本月应签收指令"),
                Some(expected.directives_due as f64)
            );
            assert_eq!(number(r, "发案数"), expected.fraud_cases.map(|c| c as f64));
            assert_eq!(
                number(r, "损失金额（元）"),
                expected.losses_fen.map(|f| f as f64 / 100.0)
            );
            r += 1;
        }
        assert_eq!(cell(r, 1), Data::Empty, "nothing under the total row");
        assert_eq!(number(h + 1, "损失金额（元）"), Some(1234.56));
        let audit = db.audit_entries(0, 1000).unwrap();
        let last = audit.last().unwrap();
        assert_eq!(
            (last.action.as_str(), last.target.as_str()),
            ("export", "bulletin.xlsx")
        );

        // The visits CSV: BOM, Chinese headers, this month's two visits, formulas
        // defused.
        let csv_bytes = db.visits_csv(&office(), &t.month.to_string()).unwrap();
        assert!(csv_bytes.starts_with(b"\xEF\xBB\xBF"));
        let mut reader = csv::Reader::from_reader(&csv_bytes[3..]);
        assert_eq!(reader.headers().unwrap().get(0), Some("村"));
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(
            records.len(),
            3,
            "two phone visits and the voided one in 乙村"
        );
        let hostile = records
            .iter()
            .find(|r| r.get(2).unwrap().contains("HYPERLINK"))
            .unwrap();
        assert_eq!(
            hostile.get(2),
            Some(format!("'{}", t.hostile_door).as_str())
        );
        let first = records
            .iter()
            .find(|r| r.get(2) == Some("1号") && r.get(0) == Some("甲村"))
            .unwrap();
        assert_eq!(
            (first.get(5), first.get(10), first.get(11)),
            (Some("已完成"), Some("已签"), Some("有问题"))
        );
        let voided = records.iter().find(|r| r.get(0) == Some("乙村")).unwrap();
        assert_eq!(voided.get(12), Some("录错户"));
        let last = db.audit_entries(0, 1000).unwrap().pop().unwrap();
        assert_eq!(
            (last.action.as_str(), last.target.as_str()),
            ("export", "visits.csv")
        );
        assert!(matches!(
            db.visits_csv(&supervisor, &t.month.to_string()),
            Err(Error::Forbidden(_))
        ));
    }

    #[test]
    fn only_fixes_the_office_approved_count_as_rectified() {
        let mut t = town();
        let db = &t.db;
        let [(id1, visit1), (id2, visit2)] = t.jia;
        let month = t.month.to_string();
        let approved = |db: &ServerDb| {
            let b = db.monthly_bulletin(&office(), &month).unwrap();
            let jia = row(&b, "甲村");
            (jia.rectifications_opened, jia.rectifications_approved)
        };
        assert_eq!(approved(db), (2, 0), "fixed on the phone, not yet reviewed");

        // The office approves visit 1: its fixed task closes as approved.
        db.write_review(
            &office(),
            id1,
            &visit1.to_string(),
            ReviewState::Approved,
            "",
        )
        .unwrap();
        assert_eq!(approved(db), (2, 1));

        // Visit 2's task (from the call) is fixed, and the office rejects the fix: the
        // task closes and a new one is opened on the visit at the same instant.
        sync(db, &t.device, &mut t.store);
        let task2 = t
            .store
            .rectifications()
            .unwrap()
            .into_iter()
            .find(|r| r.visit == visit2.to_string())
            .unwrap()
            .id;
        t.store
            .fix_rectification(id2, &task2, visit2, "已再次讲解")
            .unwrap();
        sync(db, &t.device, &mut t.store);
        db.write_review(
            &office(),
            id2,
            &visit2.to_string(),
            ReviewState::HasIssues,
            "住户仍不清楚",
        )
        .unwrap();
        let rects = db
            .rectifications(&office(), &RectificationFilter::default())
            .unwrap();
        let rejected = rects.iter().find(|r| r.id == task2).unwrap();
        assert_eq!(rejected.state, "closed");
        assert!(rejected.fixed_visit_id.is_some());
        let reopened = rects
            .iter()
            .find(|r| r.id != task2 && r.visit_id == visit2.to_string())
            .unwrap();
        assert_eq!(Some(reopened.opened_at_ms), rejected.closed_at_ms);
        assert_eq!(approved(db), (3, 1), "a rejected fix is not counted");

        // Visit 1 flagged again later: the approval already reported still counts.
        std::thread::sleep(std::time::Duration::from_millis(5));
        db.write_review(
            &office(),
            id1,
            &visit1.to_string(),
            ReviewState::HasIssues,
            "门牌仍不清楚",
        )
        .unwrap();
        assert_eq!(approved(db), (4, 1));
        // None of this month's work in the month before.
        let before = db
            .monthly_bulletin(&office(), &t.month.previous().to_string())
            .unwrap();
        assert_eq!(row(&before, "甲村").rectifications_approved, 0);
    }

    #[test]
    fn downloads_name_themselves_in_chinese_with_an_ascii_fallback() {
        assert_eq!(
            content_disposition("月度通报-2024-05.xlsx", "bulletin-2024-05.xlsx"),
            "attachment; filename=\"bulletin-2024-05.xlsx\"; \
             filename*=UTF-8''%E6%9C%88%E5%BA%A6%E9%80%9A%E6%8A%A5-2024-05.xlsx"
        );
        assert_eq!(
            content_disposition("a b\"c", "a\"b"),
            "attachment; filename=\"a_b\"; filename*=UTF-8''a%20b%22c"
        );
        assert_eq!(display_width("村（单位）"), 10);
        assert_eq!(display_width("ab1"), 3);
    }
}
