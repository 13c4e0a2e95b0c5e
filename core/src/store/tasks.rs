//! The phone's side of the office's work (issue 6): rectification tasks (整改) sent
//! back to the field team and their fixes, directives (指令) that a liaison
//! acknowledges and pushes on, and a supervisor's follow-up sample drawn on the phone.
//! Everything here is written as targeted Automerge changes queued in the outbox, so it
//! works offline and syncs like a visit.

use automerge::Automerge;
use rusqlite::{Transaction, params};
use uuid::Uuid;

use super::{Store, edit_doc_in, invalid, load_doc, now_ms};
use crate::directive::{self, Directive, DirectiveMark, MarkKind};
use crate::error::{Error, Result};
use crate::model::{self, Household, HouseholdId, RectificationFix, VisitId, VisitOutcome};
use crate::sampling::{self, SampleSize};

/// A rectification task as the phone lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RectificationTask {
    /// The task's ID (a UUID).
    pub id: String,
    /// The household.
    pub household: HouseholdId,
    /// The visit found wanting.
    pub visit: String,
    /// `review` (the office's review) or `follow_up` (a follow-up call).
    pub source: String,
    /// What is wrong, in the office's or supervisor's words.
    pub reason: String,
    /// When it was opened, server clock, milliseconds since the Unix epoch (UTC).
    pub opened_at_ms: i64,
    /// The account that answers for it.
    pub assignee: String,
    /// `open`, `fixed` (waiting for the office) or `closed`.
    pub state: String,
    /// The visit named as the fix, once fixed.
    pub fix_visit: Option<String>,
}

/// One household drawn for a follow-up call on the phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledHousehold {
    /// The household.
    pub household: HouseholdId,
    /// Its latest completed visit, the one the call checks.
    pub visit: VisitId,
}

/// A follow-up sample drawn on the phone ([`Store::draw_follow_up_sample`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneSample {
    /// The seed, to draw the same sample again or show the office how it was drawn.
    pub seed: u64,
    /// How many households were candidates.
    pub candidates: usize,
    /// The households drawn, in the order drawn.
    pub drawn: Vec<SampledHousehold>,
}

/// Refreshes the rectification rows of household `id` from its typed value.
pub(super) fn index_rectifications(tx: &Transaction<'_>, id: Uuid, h: &Household) -> Result<()> {
    let key = &id.as_bytes()[..];
    tx.execute("DELETE FROM rectification_index WHERE doc_id = ?1", [key])?;
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO rectification_index
           (rect_id, doc_id, visit_id, source, reason, opened_at_ms, assignee, state, fix_visit_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for (rid, r) in &h.rectifications {
        let fix = h.rectification_fixes.get(rid);
        stmt.execute(params![
            rid,
            key,
            r.visit_id,
            r.source,
            r.reason,
            r.opened_at_ms,
            r.assignee,
            r.state(fix),
            fix.map(|f| f.visit_id.as_str()),
        ])?;
    }
    Ok(())
}

impl Store {
    /// The rectification tasks on this phone that are not closed (open first, then
    /// those fixed and waiting for the office), oldest first.
    ///
    /// Errors: [`Error::Storage`].
    pub fn rectifications(&self) -> Result<Vec<RectificationTask>> {
        let mut stmt = self.conn.prepare(
            "SELECT rect_id, doc_id, visit_id, source, reason, opened_at_ms, assignee, state,
                    fix_visit_id
               FROM rectification_index WHERE state != 'closed'
              ORDER BY state = 'fixed', opened_at_ms, rect_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RectificationTask {
                id: r.get(0)?,
                household: HouseholdId(super::uuid_from(&r.get::<_, Vec<u8>>(1)?)),
                visit: r.get(2)?,
                source: r.get(3)?,
                reason: r.get(4)?,
                opened_at_ms: r.get(5)?,
                assignee: r.get(6)?,
                state: r.get(7)?,
                fix_visit: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records the fix of rectification `task` in `household`: `visit` is the visit
    /// that puts the omission right (a new completed visit recorded on this phone, or
    /// the original one if this phone recorded it), `note` says what was done. Queued
    /// for the server, which puts it back in the office's review queue.
    ///
    /// Errors: [`Error::NotSignedIn`]; [`Error::NoSuchHousehold`]; [`Error::Invalid`]
    /// with field `task` when there is no such open task (or it is fixed or closed
    /// already), `visit` when the visit is unknown, voided, not completed or started on
    /// another phone, `note` when it is empty or over 500 characters.
    pub fn fix_rectification(
        &mut self,
        household: HouseholdId,
        task: &str,
        visit: VisitId,
        note: &str,
    ) -> Result<()> {
        let by = self.setting("username")?.ok_or(Error::NotSignedIn)?;
        let h = self.household(household)?;
        let r = h
            .rectifications
            .get(task)
            .ok_or_else(|| invalid("task", "no such rectification task in this household"))?;
        if r.state(h.rectification_fixes.get(task)) != "open" {
            return Err(invalid("task", "the task is already fixed or closed"));
        }
        let v = h
            .visits
            .get(&visit.to_string())
            .ok_or_else(|| invalid("visit", "no such visit in this household"))?;
        self.check_own(v)?;
        if v.voided.is_some() || v.outcome != Some(VisitOutcome::Completed) {
            return Err(invalid("visit", "the fix is a completed, not voided visit"));
        }
        let note = note.trim();
        super::check_text("note", note, 1, 500)?;
        let fix = RectificationFix {
            visit_id: visit.to_string(),
            by,
            device_id: self.device.to_string(),
            at_ms: now_ms(),
            note: note.to_string(),
        };
        self.edit(household, |doc| {
            model::put_rectification_fix(doc, task, &fix, fix.at_ms)
        })
    }

    /// The directives on this phone (a liaison's), newest first.
    ///
    /// Errors: [`Error::Storage`]; [`Error::Document`] for a stored directive that
    /// cannot be read.
    pub fn directives(&self) -> Result<Vec<Directive>> {
        let mut stmt = self
            .conn
            .prepare("SELECT doc_id, bytes FROM documents WHERE kind = 'directive'")?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, bytes) in rows {
            let doc = Automerge::load(&bytes)
                .map_err(|e| Error::document(super::uuid_from(&id).to_string(), e))?;
            out.push(directive::read_directive(&doc)?);
        }
        out.sort_by(|a, b| {
            b.published_at_ms
                .cmp(&a.published_at_ms)
                .then(a.id.cmp(&b.id))
        });
        Ok(out)
    }

    /// Marks directive `id` acknowledged (签收) or pushed on (推送) for `place`, one of
    /// its villages or units, by this phone's account, now. Queued for the server,
    /// which takes it only from the place's liaison.
    ///
    /// Errors: [`Error::NotSignedIn`]; [`Error::Invalid`] with field `directive` when
    /// it is not on this phone, `place` when the directive does not go to that place or
    /// the place is marked so already, `kind` when pushing before acknowledging.
    pub fn mark_directive(&mut self, id: Uuid, place: &str, kind: MarkKind) -> Result<()> {
        let by = self.setting("username")?.ok_or(Error::NotSignedIn)?;
        let tx = self.conn.transaction()?;
        let doc = load_doc(&tx, id, &self.device)?
            .filter(|d| model::document_kind(d).as_deref() == Some("directive"))
            .ok_or_else(|| invalid("directive", "no such directive on this phone"))?;
        let d = directive::read_directive(&doc)?;
        if !d.places.iter().any(|p| p == place) {
            return Err(invalid("place", "the directive does not go to this place"));
        }
        let marks = match kind {
            MarkKind::Acknowledged => &d.acknowledgements,
            MarkKind::Pushed => &d.pushes,
        };
        if marks.contains_key(place) {
            return Err(invalid("place", "this place is marked so already"));
        }
        if kind == MarkKind::Pushed && !d.acknowledgements.contains_key(place) {
            return Err(invalid(
                "kind",
                "acknowledge the directive before pushing it on",
            ));
        }
        let now = now_ms();
        let mark = DirectiveMark {
            by,
            device_id: self.device.to_string(),
            at_ms: now,
        };
        edit_doc_in(&tx, id, doc, |doc| {
            directive::put_mark(doc, kind, place, &mark, now)
        })?;
        tx.commit()?;
        Ok(())
    }

    /// Draws a follow-up sample on the phone (a supervisor working offline) among the
    /// households of `village` (and `grid`, when given) whose latest completed visit
    /// has no follow-up call yet, with [`sampling::draw`]: `seed` draws again a sample
    /// drawn before, `None` takes a fresh one.
    ///
    /// Errors: [`Error::Invalid`] with field `size` for a percentage outside 1-100 or
    /// a count of 0; [`Error::Storage`].
    pub fn draw_follow_up_sample(
        &self,
        village: &str,
        grid: Option<&str>,
        size: SampleSize,
        seed: Option<u64>,
    ) -> Result<PhoneSample> {
        match size {
            SampleSize::Percent(p) if !(1..=100).contains(&p) => {
                return Err(invalid("size", "a percentage is 1 to 100"));
            }
            SampleSize::Count(0) => return Err(invalid("size", "draw at least one household")),
            _ => {}
        }
        let seed = match seed {
            Some(s) => s,
            None => sampling::new_seed().map_err(|e| Error::Invalid {
                field: "seed",
                reason: format!("the phone has no random numbers: {e}"),
            })?,
        };
        let ids: Vec<Vec<u8>> = {
            let mut stmt = self.conn.prepare(
                // Every household with a visit: the latest *completed* visit counts, as on
                // the server, even when a later visit found nobody home.
                "SELECT doc_id FROM household_index
                  WHERE village = ?1 AND (?2 IS NULL OR grid = ?2) AND visits > 0",
            )?;
            stmt.query_map(params![village, grid], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut candidates = Vec::new();
        for raw in ids {
            let id = HouseholdId(super::uuid_from(&raw));
            let h = self.household(id)?;
            if let Some(visit) = unchecked_visit(&h) {
                candidates.push((id.0, visit));
            }
        }
        let drawn = sampling::draw(&candidates, size, seed)
            .into_iter()
            .map(|(h, v)| SampledHousehold {
                household: HouseholdId(h),
                visit: v,
            })
            .collect();
        Ok(PhoneSample {
            seed,
            candidates: candidates.len(),
            drawn,
        })
    }
}

/// The household's latest completed, not voided visit when no follow-up call names it
/// yet.
pub fn unchecked_visit(h: &Household) -> Option<VisitId> {
    let (id, _) = h
        .visits
        .iter()
        .filter(|(_, v)| v.voided.is_none() && v.outcome == Some(VisitOutcome::Completed))
        .max_by_key(|(id, v)| (v.started_at_ms, id.as_str()))?;
    if h.follow_up_calls.values().any(|c| &c.visit_id == id) {
        return None;
    }
    VisitId::parse(id)
}
