//! Household data through the API (issue 4): lists and pages masked for everyone,
//! reveals with a reason (audited), ID-number lookups through the keyed hash, exports
//! (audited), and the office's reviews written on its behalf. Every function takes the
//! [`Principal`] asking and checks the permission table itself, so that no endpoint can
//! forget to.

use doorstep_core::model::{self, HouseholdId, Review, ReviewState};
use doorstep_core::store::now_ms;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{ServerDb, load_doc, project_household, store_server_changes};
use crate::access::{Permission, Principal, mask_id_number, mask_phone};
use crate::audit;
use crate::error::{Error, Result};

/// One household in a list: phone number masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdRow {
    /// Household (document) ID.
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
    /// Visits.
    pub visits: i64,
}

/// A resident as the API shows it: ID and phone masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidentView {
    /// The resident's reference for this API ([`ServerDb::resident_ref`]), not the
    /// resident's ID in the document: roster IDs derive from the ID number without a
    /// key, so showing them would let anyone recover the masked digits.
    pub id: String,
    /// Name.
    pub name: String,
    /// Relation to the head of household.
    pub relation: String,
    /// `男`, `女` or empty.
    pub sex: String,
    /// ID number masked (`110101********1234`), when known.
    pub id_number: Option<String>,
    /// Phone masked (`138****5678`), when known.
    pub phone: Option<String>,
    /// Target groups.
    pub target_groups: Vec<String>,
}

/// A visit as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitView {
    /// Visit ID.
    pub id: String,
    /// Who visited (account name as the phone wrote it).
    pub visitor: String,
    /// `in_progress`, `completed`, `nobody_home`, `refused`, ...
    pub outcome: String,
    /// Device clock, UTC ms.
    pub started_at_ms: i64,
    /// Voided with this reason.
    pub voided: Option<String>,
    /// Photos.
    pub photos: usize,
    /// The office's review state, when reviewed.
    pub review: Option<String>,
}

/// A household as the API shows it, masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdView {
    /// Household ID.
    pub id: String,
    /// Village.
    pub village: String,
    /// Grid.
    pub grid: String,
    /// Door number.
    pub door_number: String,
    /// Address.
    pub address: String,
    /// Head of household.
    pub head_name: String,
    /// Contact phone, masked.
    pub phone: String,
    /// Residents, masked.
    pub residents: Vec<ResidentView>,
    /// Visits, by start time.
    pub visits: Vec<VisitView>,
    /// Follow-up calls recorded.
    pub follow_up_calls: usize,
}

/// Which value a reveal shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevealField {
    /// A resident's national ID number.
    IdNumber,
    /// A resident's phone, or (without a resident) the household's contact phone.
    Phone,
}

/// A match of an ID-number lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupMatch {
    /// Household ID.
    pub household_id: String,
    /// The resident's reference ([`ServerDb::resident_ref`]).
    pub resident_id: String,
    /// Village.
    pub village: String,
    /// Grid.
    pub grid: String,
}

fn not_in_scope() -> Error {
    Error::NotFound("no such household in your scope".into())
}

fn forbidden(p: &Principal, perm: Permission) -> Error {
    Error::Forbidden(format!(
        "a {} account may not do this ({perm:?})",
        p.role.as_str()
    ))
}

impl ServerDb {
    /// The reference by which the API names a resident: 32 hex digits of
    /// `HMAC-SHA256(lookup key, "resident-ref" ‖ household ‖ resident ID)`. Stable, so
    /// pages can link to it, and unlinkable to the ID number without the server's key.
    pub fn resident_ref(&self, household: &str, resident_id: &str) -> String {
        hex::encode(
            &self
                .lookup
                .mac("resident-ref", &format!("{household}|{resident_id}"))[..16],
        )
    }

    /// Where a household is: `(village, grid)`, or `None` when unknown.
    pub fn household_place(&self, id: HouseholdId) -> Result<Option<(String, String)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT village, grid FROM documents WHERE doc_id = ?1 AND kind = 'household'",
                [&id.0.as_bytes()[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Checks `p` may do `perm` on household `id`. An unknown household and one out of
    /// scope get the same answer, so that scope cannot be probed.
    ///
    /// Errors: [`Error::Forbidden`] when the role never may; [`Error::NotFound`].
    pub fn check_household(&self, p: &Principal, perm: Permission, id: HouseholdId) -> Result<()> {
        if !p.may_at_all(perm) {
            return Err(forbidden(p, perm));
        }
        match self.household_place(id)? {
            Some((village, grid)) if p.may(perm, &village, &grid) => Ok(()),
            _ => Err(not_in_scope()),
        }
    }

    /// Households `p` may read, optionally in one village and grid, by village, grid
    /// and door number; `limit` at most 1,000. Phone numbers masked.
    ///
    /// Errors: [`Error::Forbidden`] for a role without `ReadHouseholds`.
    pub fn list_households(
        &self,
        p: &Principal,
        village: Option<&str>,
        grid: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<HouseholdRow>> {
        if !p.may_at_all(Permission::ReadHouseholds) {
            return Err(forbidden(p, Permission::ReadHouseholds));
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT doc_id, village, grid, door_number, head_name, phone, residents, visits
               FROM households
              WHERE (?1 IS NULL OR village = ?1) AND (?2 IS NULL OR grid = ?2)
              ORDER BY village, grid, door_number",
        )?;
        let rows = stmt.query_map(params![village, grid], |r| {
            Ok(HouseholdRow {
                id: Uuid::from_slice(&r.get::<_, Vec<u8>>(0)?)
                    .unwrap_or_default()
                    .to_string(),
                village: r.get(1)?,
                grid: r.get(2)?,
                door_number: r.get(3)?,
                head_name: r.get(4)?,
                phone: mask_phone(&r.get::<_, String>(5)?),
                residents: r.get(6)?,
                visits: r.get(7)?,
            })
        })?;
        let mut out = Vec::new();
        let mut skipped = 0;
        for row in rows {
            let row = row?;
            if !p.may(Permission::ReadHouseholds, &row.village, &row.grid) {
                continue;
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            out.push(row);
            if out.len() as i64 >= limit.clamp(1, 1000) {
                break;
            }
        }
        Ok(out)
    }

    /// One household, masked.
    ///
    /// Errors: [`Error::Forbidden`]; [`Error::NotFound`] when unknown or out of scope.
    pub fn household_view(&self, p: &Principal, id: HouseholdId) -> Result<HouseholdView> {
        self.check_household(p, Permission::ReadHouseholds, id)?;
        let doc = load_doc(&self.conn(), id.0)?;
        let h = model::read_household(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        let mut visits: Vec<VisitView> = h
            .visits
            .iter()
            .map(|(vid, v)| VisitView {
                id: vid.clone(),
                visitor: v.visitor.clone(),
                outcome: v.outcome.map_or("in_progress", |o| o.as_str()).into(),
                started_at_ms: v.started_at_ms,
                voided: v.voided.as_ref().map(|n| n.reason.clone()),
                photos: v.photos.len(),
                review: h.reviews.get(vid).map(|r| r.state.clone()),
            })
            .collect();
        visits.sort_by_key(|v| v.started_at_ms);
        Ok(HouseholdView {
            id: h.id,
            village: h.village,
            grid: h.grid,
            door_number: h.door_number,
            address: h.address,
            head_name: h.head_name,
            phone: mask_phone(&h.phone),
            residents: h
                .residents
                .iter()
                .map(|(rid, r)| ResidentView {
                    id: self.resident_ref(&id.to_string(), rid),
                    name: r.name.clone(),
                    relation: r.relation.clone(),
                    sex: r.sex.clone(),
                    id_number: r.id_number.as_deref().map(mask_id_number),
                    phone: r.phone.as_deref().map(mask_phone),
                    target_groups: r.target_groups.clone(),
                })
                .collect(),
            visits,
            follow_up_calls: h.follow_up_calls.len(),
        })
    }

    /// Shows one ID or phone number in full: a resident's (`resident` given, as the
    /// reference [`ServerDb::household_view`] shows) or the household's contact phone. Needs `RevealPersonalData` and a reason of 2 to 200
    /// characters; written to the audit log (who, which household, resident and field,
    /// and the reason; never the value) before the value is returned.
    ///
    /// Errors: [`Error::Forbidden`]; [`Error::NotFound`] for an unknown or out-of-scope
    /// household or resident, or a value that is not recorded; [`Error::BadRequest`] for
    /// a missing reason or an ID number asked of the household.
    pub fn reveal(
        &self,
        p: &Principal,
        device: Option<&str>,
        id: HouseholdId,
        resident: Option<&str>,
        field: RevealField,
        reason: &str,
    ) -> Result<String> {
        self.check_household(p, Permission::RevealPersonalData, id)?;
        let reason = reason.trim();
        let n = reason.chars().count();
        let visible = reason.chars().filter(|c| c.is_alphanumeric()).count();
        if !(2..=200).contains(&n)
            || visible < 2
            || reason
                .chars()
                .any(|c| c.is_control() || super::accounts::is_invisible_format(c))
        {
            return Err(Error::BadRequest(
                "give a reason of 2 to 200 characters for seeing this in full".into(),
            ));
        }
        let mut conn = self.conn();
        let doc = load_doc(&conn, id.0)?;
        let h = model::read_household(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        let value = match (resident, field) {
            (None, RevealField::Phone) => Some(h.phone.clone()).filter(|p| !p.is_empty()),
            (None, RevealField::IdNumber) => {
                return Err(Error::BadRequest(
                    "an ID number belongs to a resident: name the resident".into(),
                ));
            }
            (Some(reference), f) => {
                let hid = id.to_string();
                let r = h
                    .residents
                    .iter()
                    .find(|(rid, _)| self.resident_ref(&hid, rid) == reference)
                    .map(|(_, r)| r)
                    .ok_or_else(|| Error::NotFound("no such resident in this household".into()))?;
                match f {
                    RevealField::IdNumber => r.id_number.clone(),
                    RevealField::Phone => r.phone.clone(),
                }
            }
        };
        let value = value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::NotFound("nothing is recorded there".into()))?;
        let tx = conn.transaction()?;
        audit::append(
            &tx,
            &self.server_key,
            now_ms(),
            &p.username,
            device,
            "reveal",
            &id.to_string(),
            json!({"resident": resident, "field": field, "reason": reason}),
        )?;
        tx.commit()?;
        Ok(value)
    }

    /// Finds residents by national ID number through the keyed hash, within what `p`
    /// may look up; audited (the hash's first 8 bytes in hex, never the number).
    ///
    /// Errors: [`Error::Forbidden`]; [`Error::BadRequest`] for a value that is not 15 or
    /// 18 characters.
    pub fn lookup_id_number(
        &self,
        p: &Principal,
        device: Option<&str>,
        id_number: &str,
    ) -> Result<Vec<LookupMatch>> {
        if !p.may_at_all(Permission::LookupIdNumber) {
            return Err(forbidden(p, Permission::LookupIdNumber));
        }
        let id_number = id_number.trim();
        if !matches!(id_number.chars().count(), 15 | 18) {
            return Err(Error::BadRequest(
                "an ID number has 18 characters (15 for the old cards)".into(),
            ));
        }
        let mac = self.lookup.id_number(id_number);
        let mut conn = self.conn();
        let found: Vec<LookupMatch> = {
            let mut stmt = conn.prepare_cached(
                "SELECT r.doc_id, r.resident_id, h.village, h.grid
                   FROM residents r JOIN households h ON h.doc_id = r.doc_id
                  WHERE r.id_hmac = ?1",
            )?;
            stmt.query_map([&mac[..]], |r| {
                let household_id = Uuid::from_slice(&r.get::<_, Vec<u8>>(0)?)
                    .unwrap_or_default()
                    .to_string();
                let rid: String = r.get(1)?;
                Ok(LookupMatch {
                    resident_id: self.resident_ref(&household_id, &rid),
                    household_id,
                    village: r.get(2)?,
                    grid: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|m| p.may(Permission::LookupIdNumber, &m.village, &m.grid))
            .collect()
        };
        let tx = conn.transaction()?;
        audit::append(
            &tx,
            &self.server_key,
            now_ms(),
            &p.username,
            device,
            "id_lookup",
            "residents",
            json!({"key": hex::encode(&mac[..8]), "matches": found.len()}),
        )?;
        tx.commit()?;
        Ok(found)
    }

    /// The households `p` may export, as CSV (UTF-8 with a byte-order mark, so that
    /// Excel reads the Chinese right; RFC 4180 quoting): one row per resident, ID and
    /// phone numbers masked. Audited with the row count.
    ///
    /// Errors: [`Error::Forbidden`] for a role without `ExportHouseholds`.
    pub fn export_households_csv(&self, p: &Principal) -> Result<Vec<u8>> {
        if !p.may_at_all(Permission::ExportHouseholds) {
            return Err(forbidden(p, Permission::ExportHouseholds));
        }
        let mut out = b"\xEF\xBB\xBF".to_vec();
        let mut rows = 0usize;
        {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record([
                "村",
                "网格",
                "门牌号",
                "户主",
                "户联系电话",
                "姓名",
                "与户主关系",
                "性别",
                "身份证号",
                "电话",
                "走访次数",
            ])
            .map_err(|e| Error::Internal(e.to_string()))?;
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT h.village, h.grid, h.door_number, h.head_name, h.phone, r.name,
                        r.relation, r.sex, r.id_hmac IS NOT NULL, r.phone, h.visits, r.doc_id, r.resident_id
                   FROM households h JOIN residents r ON r.doc_id = h.doc_id
                  ORDER BY h.village, h.grid, h.door_number, r.resident_id",
            )?;
            let mut q = stmt.query([])?;
            let mut docs: std::collections::HashMap<Vec<u8>, model::Household> =
                std::collections::HashMap::new();
            while let Some(r) = q.next()? {
                let (village, grid): (String, String) = (r.get(0)?, r.get(1)?);
                if !p.may(Permission::ExportHouseholds, &village, &grid) {
                    continue;
                }
                // The projection keeps no plain ID number: its masked form comes from
                // the document.
                let has_id: bool = r.get(8)?;
                let masked_id = if has_id {
                    let doc_id: Vec<u8> = r.get(11)?;
                    let rid: String = r.get(12)?;
                    if !docs.contains_key(&doc_id) {
                        let doc = load_doc(&conn, Uuid::from_slice(&doc_id).unwrap_or_default())?;
                        if let Ok(h) = model::read_household(&doc) {
                            docs.clear();
                            docs.insert(doc_id.clone(), h);
                        }
                    }
                    docs.get(&doc_id)
                        .and_then(|h| h.residents.get(&rid))
                        .and_then(|r| r.id_number.as_deref())
                        .map(mask_id_number)
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                let visits: i64 = r.get(10)?;
                let record = [
                    village,
                    grid,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    mask_phone(&r.get::<_, String>(4)?),
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    masked_id,
                    r.get::<_, Option<String>>(9)?
                        .map(|p| mask_phone(&p))
                        .unwrap_or_default(),
                    visits.to_string(),
                ];
                w.write_record(record.iter().map(|c| spreadsheet_safe(c).into_owned()))
                    .map_err(|e| Error::Internal(e.to_string()))?;
                rows += 1;
            }
            w.flush()?;
        }
        self.audit(
            &p.username,
            None,
            "export",
            "households.csv",
            json!({"rows": rows}),
        )?;
        Ok(out)
    }

    /// Writes the office's review of a visit into the household document (by the
    /// server's actor, on `p`'s behalf), projects it, and audits it. Phones receive it
    /// on their next sync. `has_issues` also opens a rectification task for the visit's
    /// visitor (it reaches their phone at its next sync); `approved` closes the visit's
    /// open tasks and those it fixed ([`super::office::review_effects`]).
    ///
    /// Errors: [`Error::Forbidden`] for a role without `WriteReview`;
    /// [`Error::NotFound`] for an unknown household or visit; [`Error::BadRequest`] for
    /// `has_issues` without a reason, or a reason over 500 characters.
    pub fn write_review(
        &self,
        p: &Principal,
        id: HouseholdId,
        visit: &str,
        state: ReviewState,
        reason: &str,
    ) -> Result<()> {
        self.check_household(p, Permission::WriteReview, id)?;
        let reason = reason.trim();
        if state == ReviewState::HasIssues && reason.is_empty() {
            return Err(Error::BadRequest(
                "say what the issue is: has_issues needs a reason".into(),
            ));
        }
        if reason.chars().count() > 500 || reason.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Error::BadRequest(
                "a reason is at most 500 characters, without control characters".into(),
            ));
        }
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut doc = load_doc(&tx, id.0)?.with_actor(self.actor.clone());
        let h = model::read_household(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        if !h.visits.contains_key(visit) {
            return Err(Error::NotFound("no such visit in this household".into()));
        }
        let before = doc.get_heads();
        model::set_review(
            &mut doc,
            visit,
            &Review {
                state: state.as_str().into(),
                reason: reason.into(),
                by: p.username.clone(),
                at_ms: now,
            },
            now,
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        let task =
            super::office::review_effects(&mut doc, &h, visit, state, reason, &p.username, now)?;
        store_server_changes(&tx, id.0, &doc, &before, now)?;
        project_household(&tx, &self.lookup, id.0, &mut doc, now)?;
        audit::append(
            &tx,
            &self.server_key,
            now,
            &p.username,
            None,
            "review",
            &id.to_string(),
            json!({"visit": visit, "state": state, "reason": reason, "rectification": task}),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Moves a household to another grid on `p`'s behalf ([`ServerDb::move_household`]):
    /// the new grid's phones receive it whole at their next sync, the old ones drop it
    /// once nothing of theirs waits in it. Audited.
    ///
    /// Errors: [`Error::Forbidden`] for a role without `MoveHousehold`;
    /// [`Error::NotFound`]; [`Error::BadRequest`] for an empty or over-long place.
    pub fn move_household_as(
        &self,
        p: &Principal,
        id: HouseholdId,
        village: &str,
        grid: &str,
    ) -> Result<()> {
        self.check_household(p, Permission::MoveHousehold, id)?;
        self.move_household(id, village, grid, &p.username)
    }

    /// Whether a household exists at all (for tests and the command line).
    pub fn household_exists(&self, id: HouseholdId) -> Result<bool> {
        Ok(self.household_place(id)?.is_some())
    }
}

/// A cell a spreadsheet shows as text: one starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return (which Excel and WPS read as a formula) gets a leading apostrophe,
/// as OWASP's "CSV Injection" advises. Names, addresses and remarks come from phones
/// and rosters, so any of them may be hostile.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    // Leading blanks are skipped by spreadsheets, and full-width signs (＝＋－＠) are
    // read as their ASCII twins by WPS with a Chinese input locale.
    let first = cell.trim_start_matches([' ', '\u{3000}']).chars().next();
    if cell.starts_with(['\t', '\r']) || first.is_some_and(|c| "=+-@＝＋－＠".contains(c)) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// Parses a household ID from a path.
///
/// Errors: [`Error::NotFound`] for anything not a UUID (the same answer as an unknown
/// household).
pub fn parse_household(s: &str) -> Result<HouseholdId> {
    HouseholdId::parse(s).ok_or_else(not_in_scope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{GridRef, Role, Scope};

    #[test]
    fn export_is_masked_and_readable_by_excel() {
        let dir = tempfile::tempdir().unwrap();
        let db = ServerDb::open(dir.path()).unwrap();
        let mut h = model::Household::new(HouseholdId::new(), "甲村", "第1网格", "1号");
        h.phone = "13812345678".into();
        h.residents.insert(
            "r1".into(),
            model::Resident {
                name: "张三".into(),
                relation: "户主".into(),
                sex: "男".into(),
                birth_date: None,
                id_number: Some("110101199001011234".into()),
                phone: Some("13987654321".into()),
                target_groups: vec![],
            },
        );
        db.import_households(&[h]).unwrap();
        let office = Principal {
            user_id: 1,
            username: "office".into(),
            role: Role::Office,
            scope: Scope::default(),
        };
        let csv = String::from_utf8(db.export_households_csv(&office).unwrap()).unwrap();
        assert!(csv.starts_with('\u{feff}'));
        assert!(csv.contains("110101********1234"), "{csv}");
        assert!(csv.contains("138****5678") && csv.contains("139****4321"));
        assert!(!csv.contains("110101199001011234") && !csv.contains("13812345678"));
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("张三"), "张三");
        assert_eq!(spreadsheet_safe("-1"), "'-1");
        assert_eq!(spreadsheet_safe("  =1+1"), "'  =1+1");
        assert_eq!(spreadsheet_safe("＝1"), "'＝1");
        let worker = Principal {
            role: Role::GridWorker,
            scope: Scope::grids(vec![GridRef::new("甲村", "第1网格")]),
            ..office
        };
        assert!(matches!(
            db.export_households_csv(&worker),
            Err(Error::Forbidden(_))
        ));
        let entries = db.audit_entries(0, 100).unwrap();
        assert_eq!(entries.last().unwrap().action, "export");
    }
}
