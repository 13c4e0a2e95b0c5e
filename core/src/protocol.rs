//! The sync wire format and the phone's side of the sync as a sans-IO state machine
//! (DESIGN.md section 4). Nothing here touches a socket, a file or a clock: the
//! [`SyncSession`] turns what the store holds into requests, and responses into
//! effects that the caller applies. The server uses the same wire types.
//!
//! One round trip (`POST /v1/sync`, CBOR) pushes the phone's unacknowledged changes
//! and pulls the changes after the phone's cursor; blobs follow (`POST
//! /v1/blobs/missing`, then `PUT /v1/blobs/{sha256}` for each missing one).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use uuid::Uuid;

/// Version of this wire format, sent in every [`SyncRequest`].
pub const PROTOCOL_VERSION: u32 = 1;

/// CBOR media type of the sync and blob-query bodies.
pub const CBOR: &str = "application/cbor";

/// Default bound on the change bytes the phone pushes in one request (1 MiB).
pub const DEFAULT_PUSH_BYTES: usize = 1 << 20;

/// Changes for one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocChanges {
    /// The document (for a household, its [`crate::model::HouseholdId`]).
    pub doc: Uuid,
    /// Automerge changes in their binary encoding, in causal order.
    pub changes: Vec<ByteBuf>,
}

/// `POST /v1/sync` body: push the outbox, pull after the cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The last server sequence number the phone has applied; 0 for a new phone.
    pub cursor: u64,
    /// Changes the server has not acknowledged, grouped by document.
    pub push: Vec<DocChanges>,
    /// For the second and later pages of one pull: the pull as it started, so that the
    /// server does not send again what a snapshot earlier in the pull already held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullStart>,
    /// Documents the phone deleted after the server sent them as [`UpdateKind::Removed`]
    /// (or that it did not hold when told to remove them), not yet reported. The server
    /// then forgets that the phone holds them: it stops sending `Removed` and no longer
    /// takes pushes for them once they are out of the account's scope. Sent until an
    /// answer arrives. Absent from phones older than this field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<Uuid>,
    /// The highest [`SyncResponse::delivery`] this phone has applied, 0 before any.
    /// What the server sent whole in a numbered answer above it never arrived: it is sent
    /// whole again while in the phone's reach, as removed once out of it. `None` from
    /// phones older than this field (the server then trusts that every answer arrived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// What the phone holds unsynced as it sends this request (this push and the rest),
    /// sent when anything waits; a phone that sends [`SyncRequest::delivered`] without it
    /// has nothing waiting. The server keeps the last report, so that the office sees
    /// what a lost or revoked phone still held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxSummary>,
}

/// Counts of what a phone has not yet synced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxSummary {
    /// Changes not yet acknowledged by the server (refused ones excluded).
    pub changes: u64,
    /// Households those changes are in.
    pub households: u64,
    /// Photos and signature images not yet uploaded.
    pub blobs: u64,
}

/// Where a multi-page pull started, echoed by the phone on every page after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullStart {
    /// The cursor the first page was asked for.
    pub since: u64,
    /// The server's newest sequence number when it answered the first page
    /// ([`SyncResponse::head`]).
    pub head: u64,
}

/// A pushed change the server refused. The phone keeps it, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedChange {
    /// 32-byte Automerge change hash.
    pub hash: ByteBuf,
    /// Why, in words an office clerk can read; never personal data.
    pub reason: String,
}

/// How a pulled document update is to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateKind {
    /// The whole document, compacted (`Automerge::save`): it is new to the phone.
    Snapshot,
    /// Changes after the cursor, concatenated in their binary encoding.
    Changes,
    /// The document left the phone's scope: delete it once nothing of the phone's own
    /// is waiting to be pushed in it.
    Removed,
}

/// One document's part of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocUpdate {
    /// The document.
    pub doc: Uuid,
    /// How to apply `bytes`.
    pub kind: UpdateKind,
    /// Input for `Automerge::load_incremental` (empty for [`UpdateKind::Removed`]).
    pub bytes: ByteBuf,
}

/// `POST /v1/sync` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Hashes of pushed changes now stored on the server (including ones it already had).
    pub acked: Vec<ByteBuf>,
    /// Pushed changes the server refused, each with its reason.
    pub rejected: Vec<RejectedChange>,
    /// Document updates after the request's cursor, up to the page's byte bound.
    pub docs: Vec<DocUpdate>,
    /// The cursor to send next time: every change up to it is in `docs` or the phone's own.
    pub cursor: u64,
    /// True when more pages follow after `cursor`.
    pub more: bool,
    /// With `more`: the server's newest sequence number when this pull started, to echo
    /// in [`PullStart::head`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<u64>,
    /// Set when this answer sends documents whole or removed ([`UpdateKind::Snapshot`],
    /// [`UpdateKind::Removed`]): its number among this device's answers, rising. The
    /// phone stores it with the documents, in the same transaction, and echoes the
    /// highest in [`SyncRequest::delivered`]; an answer numbered at or below what it
    /// already applied is stale (it arrived late) and its snapshots and removals are not
    /// applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<u64>,
}

/// `POST /v1/blobs/missing` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobQuery {
    /// Lowercase hex SHA-256 addresses the phone holds.
    pub sha256: Vec<String>,
}

/// `POST /v1/blobs/missing` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BlobQueryResponse {
    /// The subset of the query the server does not hold.
    pub missing: Vec<String>,
}

/// JSON error body of every non-2xx answer of the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine code (`unauthorized`, `bad_request`, `hash_mismatch`, ...).
    pub code: String,
    /// What was wrong, without personal data.
    pub message: String,
}

/// Encodes a wire value as CBOR.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for these plain data types.
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into memory");
    out
}

/// Decodes a wire value from CBOR.
///
/// Errors: [`ProtocolError::Decode`] when `bytes` is not a valid encoding of `T`.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    ciborium::from_reader(bytes).map_err(|e| ProtocolError::Decode(e.to_string()))
}

/// Errors of the wire format or of the session's order of events.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A body was not the CBOR the protocol expects.
    #[error("malformed sync message: {0}")]
    Decode(String),
    /// An answer came that the session did not ask for.
    #[error("unexpected answer from the server: {0}")]
    Unexpected(&'static str),
}

/// A change waiting in the phone's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxChange {
    /// Its document.
    pub doc: Uuid,
    /// 32-byte change hash.
    pub hash: [u8; 32],
    /// The change's binary encoding.
    pub bytes: Vec<u8>,
}

/// What the session asks the driver to send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// `POST /v1/sync` with this body.
    Sync(SyncRequest),
    /// `POST /v1/blobs/missing` with this body.
    FindMissingBlobs(BlobQuery),
    /// `PUT /v1/blobs/{sha256}` with the blob's bytes from the store.
    UploadBlob {
        /// The blob's address.
        sha256: String,
    },
}

/// What came back for the last [`Outgoing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Answer to [`Outgoing::Sync`].
    Sync(SyncResponse),
    /// Answer to [`Outgoing::FindMissingBlobs`].
    MissingBlobs(BlobQueryResponse),
    /// The server stored the blob (it verified its hash).
    BlobStored {
        /// The blob's address.
        sha256: String,
    },
}

/// Something the driver must apply to the store, in order, in one transaction per
/// [`Incoming`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Drop these changes from the outbox: the server has them.
    Acked(Vec<[u8; 32]>),
    /// Move these changes out of the outbox into the refused list, keeping them.
    Rejected(Vec<([u8; 32], String)>),
    /// Merge this update into the local document.
    Apply(DocUpdate),
    /// Store this cursor (never lower than the one held: the store takes the maximum).
    Cursor(u64),
    /// Mark this blob as uploaded.
    BlobUploaded(String),
    /// The answer is numbered (see [`SyncResponse::delivery`]): store the number (the
    /// store keeps the maximum), and apply the answer's snapshots and removals only when
    /// it is above the number already stored.
    Delivered(u64),
    /// The server has been told that these documents were dropped: forget them.
    DroppedReported(Vec<Uuid>),
}

/// Counters for a progress bar, all since the session started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncProgress {
    /// Changes pushed and acknowledged by the server.
    pub changes_sent: u64,
    /// Changes pushed and refused by the server.
    pub changes_rejected: u64,
    /// Document updates received (snapshots and change sets).
    pub docs_received: u64,
    /// Blobs uploaded so far.
    pub blobs_uploaded: u64,
    /// Blobs that the server lacked and that this session uploads.
    pub blobs_total: u64,
    /// Requests sent.
    pub round_trips: u64,
}

/// The next move of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this and feed the answer to [`SyncSession::receive`].
    Send(Outgoing),
    /// The sync is complete.
    Done(SyncProgress),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Exchange,
    QueryBlobs,
    Upload,
    Done,
}

/// One sync of a phone, sans-IO: build it from the store's outbox, cursor,
/// not-yet-uploaded blobs and holdings ([`crate::store::Store::sync_session`]), then
/// alternate [`poll`](Self::poll) and [`receive`](Self::receive). Safe to abandon at any
/// point: everything it asks the store to do is idempotent, so the next session simply
/// repeats what was lost.
#[derive(Debug)]
pub struct SyncSession {
    phase: Phase,
    cursor: u64,
    start_cursor: u64,
    outbox: Vec<OutboxChange>,
    next_push: usize,
    in_flight: usize,
    push_bytes: usize,
    pull_more: bool,
    pull: Option<PullStart>,
    pending_blobs: Vec<String>,
    to_upload: Vec<String>,
    awaiting: Option<&'static str>,
    progress: SyncProgress,
    delivered: Option<u64>,
    dropped: Vec<Uuid>,
}

impl SyncSession {
    /// A session for a phone at `cursor`, with its `outbox` in the order the changes were
    /// made and the hashes of blobs it has not yet uploaded.
    pub fn new(cursor: u64, outbox: Vec<OutboxChange>, pending_blobs: Vec<String>) -> Self {
        Self {
            phase: Phase::Exchange,
            cursor,
            start_cursor: cursor,
            outbox,
            next_push: 0,
            in_flight: 0,
            push_bytes: DEFAULT_PUSH_BYTES,
            pull_more: true,
            pull: None,
            pending_blobs,
            to_upload: Vec::new(),
            awaiting: None,
            progress: SyncProgress::default(),
            delivered: None,
            dropped: Vec::new(),
        }
    }

    /// What the phone tells the server about the documents it holds: the highest
    /// answer number it applied (`delivered`, 0 before any) and the documents it dropped
    /// and has not reported yet. Without this the session speaks as an older phone: the
    /// server then cannot tell a lost answer from an applied one.
    pub fn with_holdings(mut self, delivered: u64, dropped: Vec<Uuid>) -> Self {
        self.delivered = Some(delivered);
        self.dropped = dropped;
        self
    }

    /// Bounds the change bytes pushed per request (at least one change is always sent).
    pub fn with_push_bytes(mut self, bytes: usize) -> Self {
        self.push_bytes = bytes.max(1);
        self
    }

    /// Counters so far.
    pub fn progress(&self) -> SyncProgress {
        self.progress
    }

    /// What to do next. Calling it again without [`receive`](Self::receive) repeats the
    /// same request (a retry after a network failure).
    pub fn poll(&mut self) -> Step {
        loop {
            match self.phase {
                Phase::Exchange => {
                    if self.next_push < self.outbox.len() || self.pull_more {
                        return Step::Send(Outgoing::Sync(self.build_sync()));
                    }
                    self.phase = Phase::QueryBlobs;
                }
                Phase::QueryBlobs => {
                    if self.pending_blobs.is_empty() {
                        self.phase = Phase::Done;
                        continue;
                    }
                    self.awaiting = Some("missing blobs");
                    return Step::Send(Outgoing::FindMissingBlobs(BlobQuery {
                        sha256: self.pending_blobs.clone(),
                    }));
                }
                Phase::Upload => match self.to_upload.first() {
                    Some(sha256) => {
                        self.awaiting = Some("blob upload");
                        return Step::Send(Outgoing::UploadBlob {
                            sha256: sha256.clone(),
                        });
                    }
                    None => self.phase = Phase::Done,
                },
                Phase::Done => return Step::Done(self.progress),
            }
        }
    }

    fn build_sync(&mut self) -> SyncRequest {
        let mut push: Vec<DocChanges> = Vec::new();
        let mut bytes = 0;
        let mut end = self.next_push;
        while end < self.outbox.len() {
            let change = &self.outbox[end];
            if end > self.next_push && bytes + change.bytes.len() > self.push_bytes {
                break;
            }
            bytes += change.bytes.len();
            let payload = ByteBuf::from(change.bytes.clone());
            match push.iter_mut().find(|d| d.doc == change.doc) {
                Some(d) => d.changes.push(payload),
                None => push.push(DocChanges {
                    doc: change.doc,
                    changes: vec![payload],
                }),
            }
            end += 1;
        }
        self.in_flight = end - self.next_push;
        self.awaiting = Some("sync");
        let unsent = &self.outbox[self.next_push..];
        let households: std::collections::HashSet<Uuid> = unsent.iter().map(|c| c.doc).collect();
        SyncRequest {
            v: PROTOCOL_VERSION,
            cursor: self.cursor,
            push,
            pull: self.pull,
            // Only when something waits: an idle sync stays a few dozen bytes, and a
            // phone that sends `delivered` without it has nothing waiting.
            outbox: (!unsent.is_empty() || !self.pending_blobs.is_empty()).then_some(
                OutboxSummary {
                    changes: unsent.len() as u64,
                    households: households.len() as u64,
                    blobs: self.pending_blobs.len() as u64,
                },
            ),
            dropped: self.dropped.clone(),
            delivered: self.delivered,
        }
    }

    /// Takes the answer to the last request and returns what the store must apply.
    ///
    /// Errors: [`ProtocolError::Unexpected`] when the answer is not for the last request.
    pub fn receive(&mut self, incoming: Incoming) -> Result<Vec<Effect>, ProtocolError> {
        let mut effects = Vec::new();
        match (incoming, self.awaiting.take()) {
            (Incoming::Sync(resp), Some("sync")) => {
                self.progress.round_trips += 1;
                let acked: Vec<[u8; 32]> = resp.acked.iter().filter_map(|h| hash32(h)).collect();
                let rejected: Vec<([u8; 32], String)> = resp
                    .rejected
                    .iter()
                    .filter_map(|r| hash32(&r.hash).map(|h| (h, r.reason.clone())))
                    .collect();
                self.progress.changes_sent += acked.len() as u64;
                self.progress.changes_rejected += rejected.len() as u64;
                self.next_push += self.in_flight;
                self.in_flight = 0;
                if let Some(d) = resp.delivery {
                    effects.push(Effect::Delivered(d));
                    self.delivered = Some(self.delivered.map_or(d, |old| old.max(d)));
                }
                if !self.dropped.is_empty() {
                    effects.push(Effect::DroppedReported(std::mem::take(&mut self.dropped)));
                }
                if !acked.is_empty() {
                    effects.push(Effect::Acked(acked));
                }
                if !rejected.is_empty() {
                    effects.push(Effect::Rejected(rejected));
                }
                self.progress.docs_received += resp.docs.len() as u64;
                effects.extend(resp.docs.into_iter().map(Effect::Apply));
                if resp.cursor > self.cursor {
                    self.cursor = resp.cursor;
                }
                effects.push(Effect::Cursor(self.cursor));
                self.pull_more = resp.more;
                if let (true, None, Some(head)) = (resp.more, self.pull, resp.head) {
                    self.pull = Some(PullStart {
                        since: self.start_cursor,
                        head,
                    });
                }
            }
            (Incoming::MissingBlobs(resp), Some("missing blobs")) => {
                self.progress.round_trips += 1;
                self.progress.blobs_total = resp.missing.len() as u64;
                for hash in &self.pending_blobs {
                    if !resp.missing.contains(hash) {
                        effects.push(Effect::BlobUploaded(hash.clone()));
                    }
                }
                self.to_upload = resp
                    .missing
                    .into_iter()
                    .filter(|h| self.pending_blobs.contains(h))
                    .collect();
                self.phase = Phase::Upload;
            }
            (Incoming::BlobStored { sha256 }, Some("blob upload")) => {
                self.progress.round_trips += 1;
                if self.to_upload.first() == Some(&sha256) {
                    self.to_upload.remove(0);
                    self.progress.blobs_uploaded += 1;
                    effects.push(Effect::BlobUploaded(sha256));
                } else {
                    return Err(ProtocolError::Unexpected(
                        "a blob that was not being uploaded",
                    ));
                }
            }
            (_, awaiting) => {
                self.awaiting = awaiting;
                return Err(ProtocolError::Unexpected("an answer to another request"));
            }
        }
        Ok(effects)
    }
}

fn hash32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(doc: Uuid, n: u8, len: usize) -> OutboxChange {
        OutboxChange {
            doc,
            hash: [n; 32],
            bytes: vec![n; len],
        }
    }

    #[test]
    fn nothing_to_do_is_one_small_round_trip() {
        let mut s = SyncSession::new(42, vec![], vec![]);
        let Step::Send(Outgoing::Sync(req)) = s.poll() else {
            panic!("expected a sync request")
        };
        assert!(req.push.is_empty());
        assert!(encode(&req).len() < 64);
        let resp = SyncResponse {
            cursor: 42,
            ..Default::default()
        };
        assert!(encode(&resp).len() < 64);
        let effects = s.receive(Incoming::Sync(resp)).unwrap();
        assert_eq!(effects, vec![Effect::Cursor(42)]);
        assert_eq!(s.poll(), Step::Done(s.progress()));
        assert_eq!(s.progress().round_trips, 1);
    }

    #[test]
    fn the_outbox_is_pushed_in_bounded_batches_then_blobs_are_uploaded() {
        let d = Uuid::new_v4();
        let outbox = vec![change(d, 1, 600), change(d, 2, 600), change(d, 3, 10)];
        let mut s =
            SyncSession::new(0, outbox, vec!["aa".into(), "bb".into()]).with_push_bytes(1000);
        let mut pushed = Vec::new();
        let mut cursor = 0;
        loop {
            match s.poll() {
                Step::Send(Outgoing::Sync(req)) => {
                    let hashes: Vec<ByteBuf> = req
                        .push
                        .iter()
                        .flat_map(|d| d.changes.iter().map(|c| ByteBuf::from(vec![c[0]; 32])))
                        .collect();
                    pushed.push(hashes.len());
                    cursor += 1;
                    s.receive(Incoming::Sync(SyncResponse {
                        acked: hashes,
                        cursor,
                        more: cursor < 2,
                        ..Default::default()
                    }))
                    .unwrap();
                }
                Step::Send(Outgoing::FindMissingBlobs(q)) => {
                    assert_eq!(q.sha256.len(), 2);
                    let e = s
                        .receive(Incoming::MissingBlobs(BlobQueryResponse {
                            missing: vec!["bb".into()],
                        }))
                        .unwrap();
                    assert_eq!(e, vec![Effect::BlobUploaded("aa".into())]);
                }
                Step::Send(Outgoing::UploadBlob { sha256 }) => {
                    assert_eq!(sha256, "bb");
                    s.receive(Incoming::BlobStored { sha256 }).unwrap();
                }
                Step::Done(p) => {
                    assert_eq!(p.changes_sent, 3);
                    assert_eq!(p.blobs_uploaded, 1);
                    assert_eq!(p.blobs_total, 1);
                    break;
                }
            }
        }
        assert_eq!(pushed, vec![1, 2]);
    }

    #[test]
    fn a_wrong_answer_is_an_error_and_the_request_can_be_repeated() {
        let mut s = SyncSession::new(0, vec![], vec![]);
        let first = s.poll();
        assert!(
            s.receive(Incoming::BlobStored { sha256: "x".into() })
                .is_err()
        );
        assert_eq!(s.poll(), first);
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(decode::<SyncRequest>(b"\xff\x00garbage").is_err());
    }

    /// The dropped documents ride every request until an answer comes; an answer's
    /// number is echoed from the next request on.
    #[test]
    fn holdings_ride_the_requests_and_answers_are_numbered() {
        let gone = Uuid::new_v4();
        let mut s = SyncSession::new(7, vec![], vec![]).with_holdings(3, vec![gone]);
        let Step::Send(Outgoing::Sync(req)) = s.poll() else {
            panic!("expected a sync request")
        };
        assert_eq!(
            (req.dropped.as_slice(), req.delivered),
            (&[gone][..], Some(3))
        );
        assert_eq!(
            s.poll(),
            Step::Send(Outgoing::Sync(req)),
            "a retry repeats it"
        );
        let effects = s
            .receive(Incoming::Sync(SyncResponse {
                cursor: 9,
                more: true,
                head: Some(12),
                delivery: Some(40),
                ..Default::default()
            }))
            .unwrap();
        assert_eq!(
            effects,
            vec![
                Effect::Delivered(40),
                Effect::DroppedReported(vec![gone]),
                Effect::Cursor(9)
            ]
        );
        let Step::Send(Outgoing::Sync(req)) = s.poll() else {
            panic!("expected the next page")
        };
        assert!(req.dropped.is_empty());
        assert_eq!(req.delivered, Some(40));
        // With a number of the clock's size, a sync with nothing to say stays small.
        let idle = SyncRequest {
            delivered: Some(1_780_000_000_000),
            pull: None,
            ..req
        };
        assert!(encode(&idle).len() < 64, "{}", encode(&idle).len());
        // Without holdings a session speaks as an older phone, and its request decodes
        // on a server of either age.
        let Step::Send(Outgoing::Sync(old)) = SyncSession::new(0, vec![], vec![]).poll() else {
            panic!("expected a sync request")
        };
        assert_eq!(old.delivered, None);
        let bytes = encode(&old);
        assert!(!bytes.windows(9).any(|w| w == b"delivered"));
        assert_eq!(decode::<SyncRequest>(&bytes).unwrap(), old);
    }
}
