//! What each phone holds (ADR 0008), and the pull that keeps it so.
//!
//! The log-and-cursor pull (ADR 0001) sends the changes after a phone's cursor in the
//! documents it may hold, and a document created after the cursor whole. That alone
//! cannot serve a household that *moves* into a phone's reach after the cursor passed its
//! creation (the phone would get only later changes it cannot apply), nor tell a phone
//! to delete one that moved out. So the server keeps, per device, the documents it holds
//! (`device_docs`), and at a pull:
//!
//! - when what the device may hold could have changed since it was last compared (a
//!   household's village or grid, the account's role or scope: the device's *basis*),
//!   marks the held documents no longer in reach as removing, forgets removing ones that
//!   came back, and sends every document in reach that it does not hold whole, page by
//!   page, before the change log;
//! - sends each removing document as [`UpdateKind::Removed`] on every pull until the
//!   phone reports it dropped ([`SyncRequest::dropped`]); until then the device may still
//!   push changes to it (a visit recorded offline before the phone learnt of the move);
//! - numbers every answer that sends something whole or removed
//!   ([`SyncResponse::delivery`]) and records each document sent whole with that number;
//!   the phone echoes the highest number it applied ([`SyncRequest::delivered`]). A row
//!   of an answer it never applied becomes uncertain: the document is sent whole again
//!   while in reach, and as removed once out of reach, so a lost answer is neither
//!   assumed nor leaks. A phone skips the snapshots and removals of an answer numbered
//!   at or below what it applied (one that arrived late), so nothing comes back.
//!
//! "In reach": the organisation document for every device; households in the account's
//! scope when its role takes households to the field (`SyncHouseholds`); directives to
//! a village or unit of the scope when its role acknowledges them
//! (`AcknowledgeDirective`).

use std::collections::HashMap;

use doorstep_core::model::DeviceId;
use doorstep_core::protocol::{DocUpdate, SyncRequest, SyncResponse, UpdateKind};
use doorstep_core::store::now_ms;
use rusqlite::{OptionalExtension, Transaction, named_params, params};
use serde_bytes::ByteBuf;
use uuid::Uuid;

use super::{Device, PAGE_ROWS};
use crate::access::Permission;
use crate::error::Result;

/// SQL: the document `d` is in the reach of a device whose role takes households
/// (`:households`) or directives (`:directives`) and whose account has the scope
/// `:scope` (the JSON of [`crate::access::Scope`]). A directive is in reach when one of
/// its places (`directive_places`) is a village or unit of the scope.
macro_rules! in_reach {
    () => {
        "(d.kind = 'organisation'
          OR (:households AND d.kind = 'household'
              AND (json_extract(:scope, '$.town')
                   OR d.village IN (SELECT value FROM json_each(:scope, '$.villages'))
                   OR (d.village, d.grid) IN
                      (SELECT json_extract(value, '$.village'), json_extract(value, '$.grid')
                         FROM json_each(:scope, '$.grids'))))
          OR (:directives AND d.kind = 'directive'
              AND EXISTS (SELECT 1 FROM directive_places dp
                           WHERE dp.doc_id = d.doc_id
                             AND (json_extract(:scope, '$.town')
                                  OR dp.place IN (SELECT value FROM json_each(:scope, '$.villages'))
                                  OR dp.place IN (SELECT value FROM json_each(:scope, '$.units'))))))"
    };
}

/// Takes in what the phone says about its holdings, before its push: confirms the rows
/// of the answers it applied (`delivered` and below); marks those of answers it never
/// applied as uncertain (`snapshot_seq` -1: the document may or may not be there, so
/// it is sent whole again while in reach, and as removed once out of reach); forgets
/// the documents it dropped. An older phone (`delivered` absent) is trusted to have
/// applied every answer. Anything uncertain or forgotten makes the device's next pull
/// compare its holdings again.
pub(super) fn settle(
    tx: &Transaction<'_>,
    device: &DeviceId,
    delivered: Option<u64>,
    dropped: &[Uuid],
) -> Result<()> {
    let id = device.to_string();
    let mut forgotten = 0;
    match delivered {
        None => {
            tx.execute(
                "UPDATE device_docs SET delivery = NULL
                  WHERE device_id = ?1 AND delivery IS NOT NULL",
                [&id],
            )?;
        }
        Some(d) => {
            let d = i64::try_from(d).unwrap_or(i64::MAX);
            forgotten += tx.execute(
                "UPDATE device_docs SET snapshot_seq = -1, delivery = NULL
                  WHERE device_id = ?1 AND delivery > ?2",
                params![id, d],
            )?;
            tx.execute(
                "UPDATE device_docs SET delivery = NULL WHERE device_id = ?1 AND delivery <= ?2",
                params![id, d],
            )?;
        }
    }
    if !dropped.is_empty() {
        let mut stmt =
            tx.prepare_cached("DELETE FROM device_docs WHERE device_id = ?1 AND doc_id = ?2")?;
        for doc in dropped {
            forgotten += stmt.execute(params![id, &doc.as_bytes()[..]])?;
        }
    }
    if forgotten > 0 {
        tx.execute(
            "UPDATE devices SET holdings_basis = NULL WHERE device_id = ?1",
            [&id],
        )?;
    }
    Ok(())
}

/// Whether the device holds the document (sent to it and not reported dropped), in
/// reach or not.
pub(super) fn held(tx: &Transaction<'_>, device: &DeviceId, doc: Uuid) -> Result<bool> {
    // A phone that never reports a removed household dropped keeps no write access for
    // ever: [`REMOVAL_GRACE_MS`] after it was first sent as removed (the phone pushes
    // what it recorded before in that same sync session), its changes are refused.
    Ok(tx
        .prepare_cached(
            "SELECT 1 FROM device_docs WHERE device_id = ?1 AND doc_id = ?2
                AND (removing = 0 OR removing_since_ms IS NULL OR removing_since_ms > ?3)",
        )?
        .exists(params![
            device.to_string(),
            &doc.as_bytes()[..],
            now_ms() - REMOVAL_GRACE_MS
        ])?)
}

/// How long a phone may still push changes to a household it holds after the server
/// first told it the household left its reach (72 hours): long enough to push what it
/// recorded offline before, over the slowest link, and no longer.
pub const REMOVAL_GRACE_MS: i64 = 72 * 3600 * 1000;

/// What a device's holdings were last compared with: the count of placement changes
/// (kept by a trigger on `documents`), whether the role takes households, the scope.
fn basis(tx: &Transaction<'_>, households: bool, directives: bool, scope: &str) -> Result<String> {
    let placements: String = tx
        .query_row("SELECT value FROM meta WHERE key = 'placements'", [], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or_default();
    Ok(format!(
        "{placements}|{}{}|{scope}",
        u8::from(households),
        if directives { "d" } else { "" }
    ))
}

/// One page being filled: the documents, the byte budget, and the answer's number once
/// something is sent whole.
struct Page<'a, 't> {
    tx: &'a Transaction<'t>,
    device: String,
    resp: &'a mut SyncResponse,
    index: HashMap<Uuid, usize>,
    used: usize,
    budget: usize,
    delivery: Option<i64>,
}

impl Page<'_, '_> {
    /// At least one update goes in every page.
    fn fits(&self, len: usize) -> bool {
        self.used == 0 || self.used + len <= self.budget
    }

    fn add(&mut self, doc: Uuid, kind: UpdateKind, payload: Vec<u8>) {
        self.used += payload.len();
        match self.index.get(&doc) {
            Some(&i) => self.resp.docs[i].bytes.extend_from_slice(&payload),
            None => {
                self.index.insert(doc, self.resp.docs.len());
                self.resp.docs.push(DocUpdate {
                    doc,
                    kind,
                    bytes: ByteBuf::from(payload),
                });
            }
        }
    }

    /// This answer's number, drawn when it first sends something whole or removed.
    /// Rising per device, and at least the clock's milliseconds, so that numbers keep
    /// rising past a server restored from a backup.
    fn number(&mut self) -> Result<i64> {
        if let Some(d) = self.delivery {
            return Ok(d);
        }
        let d: i64 = self.tx.query_row(
            "UPDATE devices SET last_delivery = max(last_delivery + 1, ?2)
              WHERE device_id = ?1 RETURNING last_delivery",
            params![self.device, now_ms()],
            |r| r.get(0),
        )?;
        self.delivery = Some(d);
        Ok(d)
    }

    /// Sends the document whole (its compacted bytes, holding every change-log entry of
    /// it up to `last_seq`) and records it held, under this answer's number.
    fn snapshot(&mut self, doc: Uuid, bytes: Vec<u8>, last_seq: i64) -> Result<()> {
        let delivery = self.number()?;
        self.tx.execute(
            "INSERT INTO device_docs (device_id, doc_id, removing, snapshot_seq, delivery)
             VALUES (?1, ?2, 0, ?3, ?4)
             ON CONFLICT (device_id, doc_id) DO UPDATE SET removing = 0,
                 snapshot_seq = excluded.snapshot_seq, delivery = excluded.delivery",
            params![self.device, &doc.as_bytes()[..], last_seq, delivery],
        )?;
        self.add(doc, UpdateKind::Snapshot, bytes);
        Ok(())
    }
}

/// One page of the pull after `req.cursor` for `device` (DESIGN.md section 4, ADR 0001
/// and 0007), within `budget` bytes of document updates (at least one update is sent):
///
/// 1. When the device's basis changed (see the module comment), its holdings are
///    compared with its reach and every document in reach that it does not hold and that
///    was created at or before the cursor is sent whole. Until all are sent the page
///    reads no change log and the cursor stays; `more` is set.
/// 2. On the first page of a pull, and on any page that compared holdings, every held
///    document out of reach is sent as `Removed`.
/// 3. The change log after the cursor, in reach: a document created after the cursor,
///    or not held, goes whole, once; entries a snapshot already held are skipped (on
///    later pages of the same pull, `req.pull`, those of documents created after the
///    pull's start and sent on an earlier page; and those up to where the document was
///    last sent whole to this device); so are the device's own changes.
pub(super) fn pull_page(
    tx: &Transaction<'_>,
    device: &Device,
    req: &SyncRequest,
    budget: usize,
    resp: &mut SyncResponse,
) -> Result<()> {
    let cursor = i64::try_from(req.cursor).unwrap_or(i64::MAX);
    let (since, head) = match req.pull {
        Some(p) if p.since <= req.cursor => (p.since as i64, p.head as i64),
        _ => (cursor, -1),
    };
    let households = device.principal().may_at_all(Permission::SyncHouseholds);
    let directives = device
        .principal()
        .may_at_all(Permission::AcknowledgeDirective);
    let scope = device.scope.to_json();
    let id = device.device_id.to_string();
    let mut page = Page {
        tx,
        device: id.clone(),
        resp,
        index: HashMap::new(),
        used: 0,
        budget,
        delivery: None,
    };

    // 1. The holdings against the reach, when the basis changed.
    let basis = basis(tx, households, directives, &scope)?;
    let stored: Option<String> = tx
        .query_row(
            "SELECT holdings_basis FROM devices WHERE device_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let compare = stored.as_deref() != Some(basis.as_str());
    let mut complete = true;
    if compare {
        tx.execute(
            concat!(
                "UPDATE device_docs SET removing = 1, removing_since_ms = :now
                  WHERE device_id = :device AND removing = 0
                    AND NOT EXISTS (SELECT 1 FROM documents d
                                     WHERE d.doc_id = device_docs.doc_id AND ",
                in_reach!(),
                ")"
            ),
            named_params! {
                ":device": id, ":households": households, ":directives": directives,
                ":scope": scope, ":now": now_ms(),
            },
        )?;
        // Back in reach before the phone dropped it: uncertain, so sent whole again below
        // (the phone merges it with what it kept, or takes it anew).
        tx.execute(
            concat!(
                "UPDATE device_docs SET removing = 0, removing_since_ms = NULL,
                        snapshot_seq = -1, delivery = NULL
                  WHERE device_id = :device AND removing = 1
                    AND EXISTS (SELECT 1 FROM documents d
                                 WHERE d.doc_id = device_docs.doc_id AND ",
                in_reach!(),
                ")"
            ),
            named_params! {
                ":device": id, ":households": households, ":directives": directives,
                ":scope": scope,
            },
        )?;
        complete = send_moved_in(&mut page, households, directives, &scope, cursor)?;
        if complete {
            tx.execute(
                "UPDATE devices SET holdings_basis = ?2 WHERE device_id = ?1",
                params![id, basis],
            )?;
        }
    }

    // 2. Held documents out of reach, until the phone reports them dropped.
    if req.pull.is_none() || compare {
        let mut stmt = tx.prepare_cached(
            "SELECT doc_id FROM device_docs WHERE device_id = ?1 AND removing = 1 ORDER BY doc_id",
        )?;
        let removing: Vec<Vec<u8>> = stmt
            .query_map([&id], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        if !removing.is_empty() {
            // Numbered too, so that a phone never applies a removal that arrives after
            // a newer answer.
            page.number()?;
        }
        for raw in removing {
            let doc = Uuid::from_slice(&raw).unwrap_or(Uuid::nil());
            page.add(doc, UpdateKind::Removed, Vec::new());
        }
    }

    // 3. The change log after the cursor.
    let mut last = cursor;
    let mut read = 0i64;
    let mut more = !complete;
    if complete {
        let mut stmt = tx.prepare_cached(concat!(
            "SELECT c.seq, c.doc_id, c.actor, c.bytes, d.first_seq, d.last_seq, d.bytes
               FROM change_log c JOIN documents d ON d.doc_id = c.doc_id
              WHERE c.seq > :cursor AND ",
            in_reach!(),
            " ORDER BY c.seq LIMIT :rows"
        ))?;
        let mut held_stmt = tx.prepare_cached(
            "SELECT snapshot_seq FROM device_docs WHERE device_id = ?1 AND doc_id = ?2",
        )?;
        // Per document: Some(entries up to here are held by a snapshot), None: not held
        // (or not known to be: an uncertain row).
        let mut holding: HashMap<Uuid, Option<i64>> = HashMap::new();
        let own = device.device_id.actor().to_bytes().to_vec();
        let mut rows = stmt.query(named_params! {
            ":cursor": cursor,
            ":households": households,
            ":directives": directives,
            ":scope": scope,
            ":rows": PAGE_ROWS,
        })?;
        while let Some(r) = rows.next()? {
            read += 1;
            let seq: i64 = r.get(0)?;
            let doc = Uuid::from_slice(&r.get::<_, Vec<u8>>(1)?).unwrap_or(Uuid::nil());
            let first_seq: i64 = r.get(4)?;
            if first_seq > since && first_seq <= cursor && seq <= head {
                // Sent whole on an earlier page of this pull.
                last = seq;
                continue;
            }
            let held = match holding.get(&doc) {
                Some(h) => *h,
                None => {
                    let h: Option<i64> = held_stmt
                        .query_row(params![id, &doc.as_bytes()[..]], |r| r.get(0))
                        .optional()?
                        .filter(|upto: &i64| *upto >= 0);
                    holding.insert(doc, h);
                    h
                }
            };
            let whole = first_seq > cursor || held.is_none();
            if whole {
                if page.index.contains_key(&doc) {
                    // Already sent whole in this page.
                    last = seq;
                    continue;
                }
                let bytes: Vec<u8> = r.get(6)?;
                if !page.fits(bytes.len()) {
                    more = true;
                    break;
                }
                let last_seq: i64 = r.get(5)?;
                page.snapshot(doc, bytes, last_seq)?;
                holding.insert(doc, Some(last_seq));
                last = seq;
                continue;
            }
            if held.is_some_and(|upto| seq <= upto) || r.get::<_, Vec<u8>>(2)? == own {
                // In a snapshot this device holds, or made by the phone: it has it.
                last = seq;
                continue;
            }
            let change: Vec<u8> = r.get(3)?;
            if !page.fits(change.len()) {
                more = true;
                break;
            }
            page.add(doc, UpdateKind::Changes, change);
            last = seq;
        }
    }
    let delivery = page.delivery;
    resp.cursor = last.max(0) as u64;
    resp.more = more || read == PAGE_ROWS;
    resp.delivery = delivery.map(|d| d as u64);
    if resp.more {
        resp.head = Some(match req.pull {
            Some(p) => p.head,
            None => tx.query_row("SELECT coalesce(max(seq), 0) FROM change_log", [], |r| {
                r.get::<_, i64>(0)
            })? as u64,
        });
    }
    Ok(())
}

/// Sends whole, within the page's budget, every document in reach that the device does
/// not hold and that was created at or before `cursor` (those created after come with
/// the change log). Returns whether all were sent.
fn send_moved_in(
    page: &mut Page<'_, '_>,
    households: bool,
    directives: bool,
    scope: &str,
    cursor: i64,
) -> Result<bool> {
    let ids: Vec<Vec<u8>> = {
        let mut stmt = page.tx.prepare_cached(concat!(
            "SELECT d.doc_id FROM documents d
              WHERE d.first_seq <= :cursor
                AND NOT EXISTS (SELECT 1 FROM device_docs h
                                 WHERE h.device_id = :device AND h.doc_id = d.doc_id
                                   AND h.snapshot_seq >= 0)
                AND ",
            in_reach!(),
            " ORDER BY d.first_seq"
        ))?;
        stmt.query_map(
            named_params! {
                ":cursor": cursor,
                ":device": page.device,
                ":households": households,
                ":directives": directives,
                ":scope": scope,
            },
            |r| r.get(0),
        )?
        .collect::<std::result::Result<_, _>>()?
    };
    for raw in ids {
        let (bytes, last_seq): (Vec<u8>, i64) = page.tx.query_row(
            "SELECT bytes, last_seq FROM documents WHERE doc_id = ?1",
            [&raw],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if !page.fits(bytes.len()) {
            return Ok(false);
        }
        let doc = Uuid::from_slice(&raw).unwrap_or(Uuid::nil());
        page.snapshot(doc, bytes, last_seq)?;
    }
    Ok(true)
}
