//! The typed household document: what a household, its residents and its visits are,
//! how they sit inside one Automerge document, and how conflicts in it are listed.
//! No I/O here: the store and the server both build on these types.
//!
//! Layout of a household document (schema 2), every collection a map keyed by a UUID
//! (or by a content hash for photos) so that concurrent additions never collide:
//!
//! ```text
//! { schema: 2, kind: "household", id, door_number, address, village, grid,
//!   head_name, phone,
//!   residents: { <uuid>: Resident },
//!   visits:    { <uuid>: Visit { ..., photos: { <sha256>: PhotoRef } } },
//!   evidence:  { <uuid>: EvidenceEntry { record, signature } },   written once
//!   receipts:  { <uuid>: Receipt },                               server only }
//! ```
//!
//! Schema 1 documents lack `evidence` and `receipts`; the server adds both maps (one
//! server change per document) so that no two phones ever create them concurrently.
//!
//! The organisation document (one per server, written by the office through the
//! server, read-only on phones) holds the notice and pledge templates and the server's
//! public keys:
//!
//! ```text
//! { schema: 1, kind: "organisation",
//!   templates:   { <template id>: Template { kind, versions: { "<n>": TemplateVersion } } },
//!   server_keys: { <hex public key>: ServerKey } }
//! ```
//!
//! Writes are targeted (one field, or one new map entry) and never reconcile the whole
//! household: autosurgeon's reconcile puts every scalar it visits, so a whole-document
//! reconcile on one phone would silently overwrite a concurrent edit made on another
//! (see docs/adr/0002-targeted-writes.md).

use std::collections::BTreeMap;
use std::fmt;

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjType, ROOT, ReadDoc};
use autosurgeon::{Hydrate, Reconcile};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the household document layout written by this build.
pub const HOUSEHOLD_SCHEMA: u64 = 4;

/// Version of the organisation document layout written by this build.
pub const ORGANISATION_SCHEMA: u64 = 1;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random (version 4) identifier.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses the hyphenated text form; `None` when `s` is not a UUID.
            pub fn parse(s: &str) -> Option<Self> {
                Uuid::parse_str(s).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }
    };
}

uuid_id!(
    /// Identifies a household, and so its Automerge document.
    HouseholdId
);
uuid_id!(
    /// Identifies a resident inside a household document.
    ResidentId
);
uuid_id!(
    /// Identifies a visit inside a household document.
    VisitId
);
uuid_id!(
    /// Identifies a signed notice or pledge inside a household document.
    EvidenceId
);
uuid_id!(
    /// Identifies an enrolled phone. Its 16 bytes are also the phone's Automerge actor ID
    /// (DESIGN.md section 6), so every change names the device that made it.
    DeviceId
);

impl DeviceId {
    /// The Automerge actor ID of this device: the UUID's 16 bytes.
    pub fn actor(&self) -> ActorId {
        ActorId::from(self.0.as_bytes().as_slice())
    }
}

/// What happened at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Hydrate, Reconcile, Serialize, Deserialize)]
pub enum VisitOutcome {
    /// The team explained the frauds to the household.
    #[autosurgeon(rename = "completed")]
    Completed,
    /// Nobody opened the door.
    #[autosurgeon(rename = "nobody_home")]
    NobodyHome,
    /// The household refused the visit.
    #[autosurgeon(rename = "refused")]
    Refused,
    /// The household no longer lives at this address.
    #[autosurgeon(rename = "moved_away")]
    MovedAway,
}

impl VisitOutcome {
    /// The stable text form used in projections, exports and the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::NobodyHome => "nobody_home",
            Self::Refused => "refused",
            Self::MovedAway => "moved_away",
        }
    }

    /// The outcome named by its text form, `None` for any other text.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Completed,
            Self::NobodyHome,
            Self::Refused,
            Self::MovedAway,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// Which of the two papers a household signs at the door.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Hydrate,
    Reconcile,
    Serialize,
    Deserialize,
)]
pub enum EvidenceKind {
    /// The notice (告知书): "you have been told about these frauds".
    #[autosurgeon(rename = "notice")]
    Notice,
    /// The pledge (承诺书): "I will not lend my bank card or phone number, and will
    /// call 96110 when in doubt".
    #[autosurgeon(rename = "pledge")]
    Pledge,
}

impl EvidenceKind {
    /// The stable text form: `notice` or `pledge`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Notice => "notice",
            Self::Pledge => "pledge",
        }
    }

    /// The kind named by its text form, `None` for any other text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "notice" => Some(Self::Notice),
            "pledge" => Some(Self::Pledge),
            _ => None,
        }
    }
}

/// Bytes stored as an Automerge byte scalar (not as a list of numbers).
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({})", hex::encode(&self.0))
    }
}

impl Hydrate for Bytes {
    fn hydrate_bytes(bytes: &[u8]) -> Result<Self, autosurgeon::HydrateError> {
        Ok(Self(bytes.to_vec()))
    }
}

impl Reconcile for Bytes {
    type Key<'a> = autosurgeon::reconcile::NoKey;

    fn reconcile<R: autosurgeon::Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        reconciler.bytes(&self.0)
    }
}

/// A signed notice or pledge as the household document holds it: the canonical record
/// bytes and the device's signature (see [`crate::evidence`]). Written once, in one
/// change, and never edited: the server refuses any change that touches an existing
/// entry.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct EvidenceEntry {
    /// The record's canonical CBOR bytes.
    pub record: Bytes,
    /// The device's ed25519 signature of the record (64 bytes).
    pub signature: Bytes,
}

/// The server's receipt of an evidence record: its place in the hash-chained log and
/// the server's countersignature of that entry. Written by the server only.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Receipt {
    /// The entry's position in the log.
    pub seq: u64,
    /// Server clock at receipt, milliseconds since the Unix epoch (UTC).
    pub received_at_ms: i64,
    /// Hash of the log entry before it (32 bytes).
    pub prev: Bytes,
    /// Hash of this log entry (32 bytes).
    pub entry_sha256: Bytes,
    /// The server's ed25519 signature of the entry hash (64 bytes).
    pub server_signature: Bytes,
    /// The server key that signed, hex; listed in the organisation document.
    pub server_key: String,
}

/// Why a visit was voided: a visit recorded in error is voided with a reason, never
/// deleted (DESIGN.md section 3).
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct VoidNote {
    /// The reason the worker gave.
    pub reason: String,
    /// Device clock, milliseconds since the Unix epoch (UTC).
    pub at_ms: i64,
}

/// A point from the phone's location service (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude in degrees, -90..=90.
    pub lat: f64,
    /// Longitude in degrees, -180..=180.
    pub lon: f64,
    /// Horizontal accuracy radius in metres, when the phone reports one.
    pub accuracy_m: Option<f64>,
}

/// A photo stored outside the document as a blob, referenced by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct PhotoRef {
    /// Lowercase hex SHA-256 of the stored JPEG: its blob address.
    pub sha256: String,
    /// Size of the stored JPEG in bytes.
    pub size_bytes: u64,
    /// Always `image/jpeg` for photos taken in by this build.
    pub media_type: String,
    /// Width in pixels of the stored (upright, scaled) image.
    pub width: u32,
    /// Height in pixels of the stored image.
    pub height: u32,
    /// Lowercase hex SHA-256 of the thumbnail JPEG blob.
    pub thumbnail_sha256: String,
    /// When the photo was attached, device clock, milliseconds since the Unix epoch (UTC).
    pub added_at_ms: i64,
}

/// A resident of a household, as the roster names them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Resident {
    /// Full name, whitespace removed.
    pub name: String,
    /// Relation to the head of household as written in the roster (户主, 配偶, 子, ...).
    pub relation: String,
    /// `男`, `女`, or empty when unknown.
    pub sex: String,
    /// Birth date as ISO 8601 `YYYY-MM-DD`, when known.
    pub birth_date: Option<String>,
    /// 18-character national ID number (GB 11643-1999), upper-case check character.
    pub id_number: Option<String>,
    /// 11-digit mobile number, digits only.
    pub phone: Option<String>,
    /// Target groups (重点人群) the resident belongs to, as the roster names them.
    pub target_groups: Vec<String>,
}

/// One visit to the household by a team.
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Visit {
    /// The signed-in user who recorded the visit (account name).
    pub visitor: String,
    /// The device that recorded it.
    pub device_id: String,
    /// Start, device clock, milliseconds since the Unix epoch (UTC).
    pub started_at_ms: i64,
    /// End, device clock, milliseconds since the Unix epoch (UTC); `None` while the
    /// visit is in progress.
    pub finished_at_ms: Option<i64>,
    /// What happened at the door; `None` while the visit is in progress.
    pub outcome: Option<VisitOutcome>,
    /// Why the visit did not complete (nobody home, refused, moved away); empty for a
    /// completed visit.
    #[autosurgeon(missing = "String::new")]
    pub outcome_reason: String,
    /// Set when the visit was voided.
    #[autosurgeon(missing = "Option::default")]
    pub voided: Option<VoidNote>,
    /// Target groups (重点人群) the visit reached.
    pub target_groups_reached: Vec<String>,
    /// Free text from the team.
    pub remarks: String,
    /// Photos of the visit, keyed by their SHA-256.
    pub photos: BTreeMap<String, PhotoRef>,
    /// Where the phone was, when it knew.
    pub location: Option<GeoPoint>,
}

/// The household: the unit of assignment, access, conflict and sync.
#[derive(Debug, Clone, PartialEq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Household {
    /// Layout version, [`HOUSEHOLD_SCHEMA`] for documents written by this build.
    pub schema: u64,
    /// Always `household`.
    pub kind: String,
    /// The household's ID, the same as its document's.
    pub id: String,
    /// Door number (门牌号) as the roster writes it.
    pub door_number: String,
    /// Postal address; the door number when the roster has nothing better.
    pub address: String,
    /// Village (村) name.
    pub village: String,
    /// Grid (网格) name.
    pub grid: String,
    /// Name of the head of household (户主).
    pub head_name: String,
    /// The household's contact phone, digits only; empty when unknown.
    pub phone: String,
    /// Residents keyed by [`ResidentId`].
    pub residents: BTreeMap<String, Resident>,
    /// Visits keyed by [`VisitId`].
    pub visits: BTreeMap<String, Visit>,
    /// Signed notices and pledges keyed by [`EvidenceId`]; absent in schema 1.
    #[autosurgeon(missing = "BTreeMap::new")]
    pub evidence: BTreeMap<String, EvidenceEntry>,
    /// The server's receipts of evidence, keyed by [`EvidenceId`]; absent in schema 1.
    #[autosurgeon(missing = "BTreeMap::new")]
    pub receipts: BTreeMap<String, Receipt>,
    /// The office's review of each visit, keyed by [`VisitId`]; written by office staff
    /// only (the server's permission table). Absent before schema 3.
    #[serde(default)]
    #[autosurgeon(missing = "BTreeMap::new")]
    pub reviews: BTreeMap<String, Review>,
    /// Follow-up calls (电话回访), keyed by call ID (a UUID); written by supervisors only.
    /// Absent before schema 3.
    #[serde(default)]
    #[autosurgeon(missing = "BTreeMap::new")]
    pub follow_up_calls: BTreeMap<String, FollowUpCall>,
    /// Rectification tasks (整改) keyed by their ID (a UUID); opened and closed by the
    /// server on the office's or a supervisor's behalf. Absent before schema 4.
    #[serde(default)]
    #[autosurgeon(missing = "BTreeMap::new")]
    pub rectifications: BTreeMap<String, Rectification>,
    /// The field team's fix of each rectification, keyed by the rectification's ID;
    /// written on the phone (`FixRectification`). Absent before schema 4.
    #[serde(default)]
    #[autosurgeon(missing = "BTreeMap::new")]
    pub rectification_fixes: BTreeMap<String, RectificationFix>,
}

/// Where a rectification task came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RectificationSource {
    /// The office's review marked the visit `has_issues`.
    Review,
    /// A follow-up call found the household denied the visit or did not understand it.
    FollowUp,
}

impl RectificationSource {
    /// `review` or `follow_up`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Review => "review",
            Self::FollowUp => "follow_up",
        }
    }

    /// Parses [`RectificationSource::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Review, Self::FollowUp]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A rectification task (督促整改): an omission found in a visit, sent back to the
/// worker who made it (DOMAIN.md, "Follow-up checks"). Written by the server only.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Rectification {
    /// The visit found wanting ([`VisitId`]).
    pub visit_id: String,
    /// [`RectificationSource::as_str`].
    pub source: String,
    /// What is wrong, in the reviewer's or supervisor's words (at most 500 characters).
    pub reason: String,
    /// The office or supervisor account that opened it.
    pub opened_by: String,
    /// Server clock, milliseconds since the Unix epoch (UTC).
    pub opened_at_ms: i64,
    /// The account that answers for the fix: the visit's visitor.
    pub assignee: String,
    /// Set when the office accepted the fix (or withdrew the task).
    pub closed: Option<RectificationClose>,
}

/// The office's closing of a rectification task.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct RectificationClose {
    /// The office account.
    pub by: String,
    /// Server clock, milliseconds since the Unix epoch (UTC).
    pub at_ms: i64,
    /// Why, e.g. "整改已通过审核".
    pub note: String,
}

/// A field team's fix of a rectification task, recorded on the phone.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct RectificationFix {
    /// The visit that puts the omission right: a new visit, or the same one completed
    /// further ([`VisitId`]).
    pub visit_id: String,
    /// The account that fixed it (the phone's).
    pub by: String,
    /// The phone that recorded the fix ([`DeviceId`]).
    pub device_id: String,
    /// Device clock, milliseconds since the Unix epoch (UTC).
    pub at_ms: i64,
    /// What was done, at most 500 characters.
    pub note: String,
}

impl Rectification {
    /// `open` (no fix yet), `fixed` (a fix waits for the office) or `closed`, given the
    /// household's fix for it.
    pub fn state(&self, fix: Option<&RectificationFix>) -> &'static str {
        match (&self.closed, fix) {
            (Some(_), _) => "closed",
            (None, Some(_)) => "fixed",
            (None, None) => "open",
        }
    }
}

/// Where the office's review of a visit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    /// Arrived and seen.
    Received,
    /// Checked and accepted.
    Approved,
    /// Something is missing or wrong; the reason says what (a rectification follows).
    HasIssues,
}

impl ReviewState {
    /// `received`, `approved` or `has_issues`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Approved => "approved",
            Self::HasIssues => "has_issues",
        }
    }

    /// Parses [`ReviewState::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Received, Self::Approved, Self::HasIssues]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The office's review of one visit (the latest word; the audit log keeps the history).
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Review {
    /// [`ReviewState::as_str`].
    pub state: String,
    /// Why, for `has_issues`; may be empty otherwise.
    pub reason: String,
    /// The office account that reviewed.
    pub by: String,
    /// Server clock, milliseconds since the Unix epoch (UTC).
    pub at_ms: i64,
}

/// A supervisor's follow-up call (电话回访) about a visit.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct FollowUpCall {
    /// The visit checked ([`VisitId`]).
    pub visit_id: String,
    /// The supervisor's account.
    pub by: String,
    /// When the call was made, device clock, milliseconds since the Unix epoch (UTC).
    pub called_at_ms: i64,
    /// Whether anyone answered.
    pub reached: bool,
    /// Whether the household confirms the visit took place; `None` when not reached.
    pub confirmed: Option<bool>,
    /// Whether the household understood what it was told; `None` when not reached.
    pub understood: Option<bool>,
    /// Remarks, at most 500 characters.
    pub remarks: String,
}

impl Household {
    /// A household with no residents and no visits yet.
    pub fn new(id: HouseholdId, village: &str, grid: &str, door_number: &str) -> Self {
        Self {
            schema: HOUSEHOLD_SCHEMA,
            kind: "household".into(),
            id: id.to_string(),
            door_number: door_number.into(),
            address: door_number.into(),
            village: village.into(),
            grid: grid.into(),
            head_name: String::new(),
            phone: String::new(),
            residents: BTreeMap::new(),
            visits: BTreeMap::new(),
            evidence: BTreeMap::new(),
            receipts: BTreeMap::new(),
            reviews: BTreeMap::new(),
            follow_up_calls: BTreeMap::new(),
            rectifications: BTreeMap::new(),
            rectification_fixes: BTreeMap::new(),
        }
    }

    /// The status shown in lists: the outcome of the latest visit that was not voided,
    /// by start time (`in_progress` while it is open), or `None` when there is none.
    pub fn visit_status(&self) -> Option<&'static str> {
        self.visits
            .values()
            .filter(|v| v.voided.is_none())
            .max_by_key(|v| v.started_at_ms)
            .map(|v| v.outcome.map_or("in_progress", |o| o.as_str()))
    }
}

/// One version of a notice or pledge text.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct TemplateVersion {
    /// The title shown above the text.
    pub title: String,
    /// The text, paragraphs separated by blank lines.
    pub body: String,
    /// The version number, from 1.
    pub version: u32,
    /// First day the version is in force, `YYYY-MM-DD`, in the town's time zone
    /// (China Standard Time, UTC+08:00).
    pub effective_from: String,
    /// Lowercase hex SHA-256 of [`TemplateVersion::shown_text`].
    pub text_sha256: String,
}

impl TemplateVersion {
    /// The exact text a phone shows and a household signs: `title + "\n\n" + body`.
    pub fn shown_text(&self) -> String {
        format!("{}\n\n{}", self.title, self.body)
    }
}

/// A notice or pledge template and its versions, keyed by version number.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Template {
    /// Notice or pledge.
    pub kind: EvidenceKind,
    /// Versions keyed by their number as decimal text.
    pub versions: BTreeMap<String, TemplateVersion>,
}

/// A public key the server countersigns receipts with.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct ServerKey {
    /// When the key was created, server clock, milliseconds since the Unix epoch (UTC).
    pub added_at_ms: i64,
}

/// The town's organisation document: templates and server keys, written by the server
/// on the office's behalf, read-only on phones.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Organisation {
    /// Layout version, [`ORGANISATION_SCHEMA`].
    pub schema: u64,
    /// Always `organisation`.
    pub kind: String,
    /// Templates keyed by their ID (`notice`, `pledge`, ...).
    pub templates: BTreeMap<String, Template>,
    /// The server's public keys, keyed by lowercase hex.
    pub server_keys: BTreeMap<String, ServerKey>,
}

/// Offset of the town's clock from UTC: China Standard Time, UTC+08:00, no daylight
/// saving. Template effective dates are days on this clock.
pub const TOWN_UTC_OFFSET_MS: i64 = 8 * 3_600_000;

impl Organisation {
    /// An organisation with no templates and no keys.
    pub fn new() -> Self {
        Self {
            schema: ORGANISATION_SCHEMA,
            kind: "organisation".into(),
            templates: BTreeMap::new(),
            server_keys: BTreeMap::new(),
        }
    }

    /// The version of `template_id` in force at `at_ms` (milliseconds since the Unix
    /// epoch, UTC): the one with the latest effective day not after that instant's day
    /// in the town, the higher version on a tie. `None` when the template is unknown or
    /// no version is in force yet.
    pub fn template_in_force(&self, template_id: &str, at_ms: i64) -> Option<&TemplateVersion> {
        let today = town_date(at_ms);
        self.templates
            .get(template_id)?
            .versions
            .values()
            .filter(|v| v.effective_from.as_str() <= today.as_str())
            .max_by(|a, b| {
                (a.effective_from.as_str(), a.version).cmp(&(b.effective_from.as_str(), b.version))
            })
    }

    /// The IDs of templates of `kind`, in ID order.
    pub fn templates_of(&self, kind: EvidenceKind) -> Vec<&str> {
        self.templates
            .iter()
            .filter(|(_, t)| t.kind == kind)
            .map(|(id, _)| id.as_str())
            .collect()
    }
}

impl Default for Organisation {
    fn default() -> Self {
        Self::new()
    }
}

/// The town's calendar day (`YYYY-MM-DD`) at `at_ms` (milliseconds since the Unix
/// epoch, UTC), per [`TOWN_UTC_OFFSET_MS`].
pub fn town_date(at_ms: i64) -> String {
    let offset = chrono::FixedOffset::east_opt((TOWN_UTC_OFFSET_MS / 1000) as i32)
        .expect("UTC+08:00 is a valid offset");
    chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .with_timezone(&offset)
        .format("%Y-%m-%d")
        .to_string()
}

/// Reads the typed organisation out of its document.
///
/// Errors: [`ModelError::Hydrate`] when the document lacks a field.
pub fn read_organisation(doc: &Automerge) -> Result<Organisation, ModelError> {
    Ok(autosurgeon::hydrate(doc)?)
}

/// The `kind` field at the document root (`household`, `organisation`), `None` when
/// absent or not text.
pub fn document_kind(doc: &Automerge) -> Option<String> {
    match doc.get(ROOT, "kind").ok()?? {
        (automerge::Value::Scalar(s), _) => match s.as_ref() {
            automerge::ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Errors reading or writing a household document.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The document does not have the household layout.
    #[error("the document is not a valid household: {0}")]
    Hydrate(#[from] autosurgeon::HydrateError),
    /// Writing the typed value into the document failed.
    #[error("could not write the household document: {0}")]
    Reconcile(#[from] autosurgeon::ReconcileError),
    /// Automerge refused an operation or could not load bytes.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// The household has no visit with this ID.
    #[error("no visit {0} in this household")]
    NoSuchVisit(String),
    /// The document predates evidence (schema 1) and has no `evidence` map yet; the
    /// server adds it, so a sync brings it.
    #[error("this household's record is from before signed evidence; sync, then sign again")]
    NoEvidenceMap,
    /// The household document predates schema 3 (no `reviews` or `follow_up_calls`
    /// map); the server adds them, so a sync brings them.
    #[error("this household's record is from an older layout; sync, then try again")]
    OldSchema,
    /// The document is not a directive of this layout.
    #[error("the document is not a directive")]
    NotADirective,
    /// A template version with this number exists; versions are never overwritten.
    #[error("template {0} already has a version {1}; publish a higher version")]
    TemplateVersionExists(String, u32),
    /// The template exists with the other kind (notice or pledge).
    #[error("template {0} exists with another kind")]
    TemplateKind(String),
}

/// Reads the typed household out of a document.
///
/// Errors: [`ModelError::Hydrate`] when the document lacks a field of schema 1.
pub fn read_household(doc: &Automerge) -> Result<Household, ModelError> {
    Ok(autosurgeon::hydrate(doc)?)
}

/// Creates a new household document written by `actor`, committed at `now_ms`
/// (milliseconds since the Unix epoch, UTC).
pub fn new_household_doc(
    household: &Household,
    actor: ActorId,
    now_ms: i64,
) -> Result<Automerge, ModelError> {
    let mut doc = Automerge::new().with_actor(actor);
    let mut tx = doc.transaction();
    autosurgeon::reconcile(&mut tx, household)?;
    tx.commit_with(commit_at(now_ms, "create household"));
    Ok(doc)
}

/// Adds one visit as a new entry of the `visits` map, in one change.
pub fn add_visit(
    doc: &mut Automerge,
    visit_id: VisitId,
    visit: &Visit,
    now_ms: i64,
) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    let visits = map_at(&mut tx, &ROOT, "visits")?;
    autosurgeon::reconcile_prop(&mut tx, &visits, visit_id.to_string().as_str(), visit)?;
    tx.commit_with(commit_at(now_ms, "record visit"));
    Ok(())
}

/// Adds residents as new entries of the `residents` map, in one change; a resident
/// whose ID is already there is left as it is (the field may have corrected it).
/// Returns how many were added; no change is made when none is.
pub fn add_residents(
    doc: &mut Automerge,
    residents: &BTreeMap<String, Resident>,
    now_ms: i64,
) -> Result<usize, ModelError> {
    let mut tx = doc.transaction();
    let map = map_at(&mut tx, &ROOT, "residents")?;
    let mut added = 0;
    for (id, resident) in residents {
        if tx.get(&map, id.as_str())?.is_none() {
            autosurgeon::reconcile_prop(&mut tx, &map, id.as_str(), resident)?;
            added += 1;
        }
    }
    if added == 0 {
        tx.rollback();
    } else {
        tx.commit_with(commit_at(now_ms, "add residents"));
    }
    Ok(added)
}

/// Adds one photo reference to an existing visit, in one change.
///
/// Errors: [`ModelError::NoSuchVisit`] when the visit is not in the document.
pub fn add_photo(
    doc: &mut Automerge,
    visit_id: VisitId,
    photo: &PhotoRef,
    now_ms: i64,
) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    let visits = map_at(&mut tx, &ROOT, "visits")?;
    let visit = match tx.get(&visits, visit_id.to_string())? {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => return Err(ModelError::NoSuchVisit(visit_id.to_string())),
    };
    let photos = map_at(&mut tx, &visit, "photos")?;
    autosurgeon::reconcile_prop(&mut tx, &photos, photo.sha256.as_str(), photo)?;
    tx.commit_with(commit_at(now_ms, "attach photo"));
    Ok(())
}

/// Closes a visit: puts its outcome, end time, reason, remarks and target groups,
/// in one change. Rules (what a complete visit needs) are checked by the caller.
///
/// Errors: [`ModelError::NoSuchVisit`].
#[allow(clippy::too_many_arguments)]
pub fn finish_visit(
    doc: &mut Automerge,
    visit_id: VisitId,
    outcome: VisitOutcome,
    reason: &str,
    remarks: &str,
    target_groups_reached: &[String],
    finished_at_ms: i64,
    now_ms: i64,
) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    let visit = existing_visit(&mut tx, visit_id)?;
    autosurgeon::reconcile_prop(&mut tx, &visit, "outcome", Some(outcome))?;
    tx.put(&visit, "finished_at_ms", finished_at_ms)?;
    tx.put(&visit, "outcome_reason", reason)?;
    tx.put(&visit, "remarks", remarks)?;
    autosurgeon::reconcile_prop(
        &mut tx,
        &visit,
        "target_groups_reached",
        target_groups_reached,
    )?;
    tx.commit_with(commit_at(now_ms, "finish visit"));
    Ok(())
}

/// Voids a visit with a reason, in one change; the visit stays in the document.
///
/// Errors: [`ModelError::NoSuchVisit`].
pub fn void_visit(
    doc: &mut Automerge,
    visit_id: VisitId,
    note: &VoidNote,
    now_ms: i64,
) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    let visit = existing_visit(&mut tx, visit_id)?;
    autosurgeon::reconcile_prop(&mut tx, &visit, "voided", Some(note))?;
    tx.commit_with(commit_at(now_ms, "void visit"));
    Ok(())
}

fn existing_visit(
    tx: &mut automerge::transaction::Transaction<'_>,
    visit_id: VisitId,
) -> Result<automerge::ObjId, ModelError> {
    let visits = map_at(tx, &ROOT, "visits")?;
    match tx.get(&visits, visit_id.to_string())? {
        Some((automerge::Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Err(ModelError::NoSuchVisit(visit_id.to_string())),
    }
}

/// Writes a signed notice or pledge as a new entry of the `evidence` map, in one change
/// that touches nothing else. The map itself is never created here (see the module
/// docs); a schema 1 document gives [`ModelError::NoEvidenceMap`].
pub fn add_evidence(
    doc: &mut Automerge,
    id: EvidenceId,
    entry: &EvidenceEntry,
    now_ms: i64,
) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    let Some((automerge::Value::Object(ObjType::Map), map)) = tx.get(ROOT, "evidence")? else {
        return Err(ModelError::NoEvidenceMap);
    };
    autosurgeon::reconcile_prop(&mut tx, &map, id.to_string().as_str(), entry)?;
    tx.commit_with(commit_at(now_ms, "sign evidence"));
    Ok(())
}

/// Writes the server's receipt of an evidence record, in one change (server only).
///
/// Errors: [`ModelError::NoEvidenceMap`] when the document has no `receipts` map.
pub fn add_receipt(
    doc: &mut Automerge,
    id: EvidenceId,
    receipt: &Receipt,
    now_ms: i64,
) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    let Some((automerge::Value::Object(ObjType::Map), map)) = tx.get(ROOT, "receipts")? else {
        return Err(ModelError::NoEvidenceMap);
    };
    autosurgeon::reconcile_prop(&mut tx, &map, id.to_string().as_str(), receipt)?;
    tx.commit_with(commit_at(now_ms, "evidence receipt"));
    Ok(())
}

/// Brings an older household document to [`HOUSEHOLD_SCHEMA`] by adding the maps it
/// lacks (`evidence`, `receipts` from schema 2; `reviews`, `follow_up_calls` from 3;
/// `rectifications`, `rectification_fixes` from 4), in one change (server only, so the
/// maps have one creator). Returns whether a change was made.
pub fn upgrade_household(doc: &mut Automerge, now_ms: i64) -> Result<bool, ModelError> {
    let mut tx = doc.transaction();
    let mut changed = false;
    for key in [
        "evidence",
        "receipts",
        "reviews",
        "follow_up_calls",
        "rectifications",
        "rectification_fixes",
    ] {
        if tx.get(ROOT, key)?.is_none() {
            tx.put_object(ROOT, key, ObjType::Map)?;
            changed = true;
        }
    }
    if !changed {
        tx.rollback();
        return Ok(false);
    }
    tx.put(ROOT, "schema", HOUSEHOLD_SCHEMA)?;
    tx.commit_with(commit_at(now_ms, "upgrade household schema"));
    Ok(true)
}

/// Creates the organisation document, written by `actor` (the server), at `now_ms`.
pub fn new_organisation_doc(
    organisation: &Organisation,
    actor: ActorId,
    now_ms: i64,
) -> Result<Automerge, ModelError> {
    let mut doc = Automerge::new().with_actor(actor);
    let mut tx = doc.transaction();
    autosurgeon::reconcile(&mut tx, organisation)?;
    tx.commit_with(commit_at(now_ms, "create organisation"));
    Ok(doc)
}

/// Adds a template version to the organisation document (creating the template when
/// new), in one change. An existing version is never overwritten.
///
/// Errors: [`ModelError::TemplateVersionExists`]; [`ModelError::TemplateKind`] when
/// the template exists with the other kind.
pub fn add_template_version(
    doc: &mut Automerge,
    template_id: &str,
    kind: EvidenceKind,
    version: &TemplateVersion,
    now_ms: i64,
) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    let templates = map_at(&mut tx, &ROOT, "templates")?;
    let template = match tx.get(&templates, template_id)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => {
            let existing: EvidenceKind = autosurgeon::hydrate_prop(&tx, &id, "kind")?;
            if existing != kind {
                return Err(ModelError::TemplateKind(template_id.to_string()));
            }
            id
        }
        _ => {
            let id = tx.put_object(&templates, template_id, ObjType::Map)?;
            autosurgeon::reconcile_prop(&mut tx, &id, "kind", kind)?;
            tx.put_object(&id, "versions", ObjType::Map)?;
            id
        }
    };
    let versions = map_at(&mut tx, &template, "versions")?;
    let key = version.version.to_string();
    if tx.get(&versions, key.as_str())?.is_some() {
        return Err(ModelError::TemplateVersionExists(
            template_id.to_string(),
            version.version,
        ));
    }
    autosurgeon::reconcile_prop(&mut tx, &versions, key.as_str(), version)?;
    tx.commit_with(commit_at(now_ms, "publish template"));
    Ok(())
}

/// Lists a server public key (lowercase hex) in the organisation document, in one
/// change; does nothing when it is listed.
pub fn add_server_key(doc: &mut Automerge, key_hex: &str, now_ms: i64) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    let keys = map_at(&mut tx, &ROOT, "server_keys")?;
    if tx.get(&keys, key_hex)?.is_some() {
        tx.rollback();
        return Ok(());
    }
    autosurgeon::reconcile_prop(
        &mut tx,
        &keys,
        key_hex,
        ServerKey {
            added_at_ms: now_ms,
        },
    )?;
    tx.commit_with(commit_at(now_ms, "add server key"));
    Ok(())
}

/// Writes the office's review of visit `visit_id` into the household's `reviews` map
/// (the latest word replaces the previous one; the server's audit log keeps the
/// history). Written by the server's actor on behalf of an office account.
///
/// Errors: [`ModelError::OldSchema`] when the household predates schema 3 (no
/// `reviews` map; the server upgrades every household when it opens).
pub fn set_review(
    doc: &mut Automerge,
    visit_id: &str,
    review: &Review,
    now_ms: i64,
) -> Result<(), ModelError> {
    put_entry(doc, "reviews", visit_id, review, now_ms, "review visit")
}

/// Adds a follow-up call (电话回访) under `call_id` to the household's
/// `follow_up_calls` map; written once, by the supervisor's phone or by the server on
/// a supervisor's behalf.
///
/// Errors: [`ModelError::OldSchema`] when the household predates schema 3.
pub fn add_follow_up_call(
    doc: &mut Automerge,
    call_id: &str,
    call: &FollowUpCall,
    now_ms: i64,
) -> Result<(), ModelError> {
    put_entry(
        doc,
        "follow_up_calls",
        call_id,
        call,
        now_ms,
        "follow-up call",
    )
}

/// Opens (or rewrites) the rectification task `id` in the household's `rectifications`
/// map, in one change; the server's, on an office or supervisor's behalf.
///
/// Errors: [`ModelError::OldSchema`] when the household predates schema 4.
pub fn put_rectification(
    doc: &mut Automerge,
    id: &str,
    rectification: &Rectification,
    now_ms: i64,
) -> Result<(), ModelError> {
    put_entry(
        doc,
        "rectifications",
        id,
        rectification,
        now_ms,
        "rectification",
    )
}

/// Records the field team's fix of the rectification `id` in `rectification_fixes`,
/// in one change (on the phone).
///
/// Errors: [`ModelError::OldSchema`] when the household predates schema 4.
pub fn put_rectification_fix(
    doc: &mut Automerge,
    id: &str,
    fix: &RectificationFix,
    now_ms: i64,
) -> Result<(), ModelError> {
    put_entry(
        doc,
        "rectification_fixes",
        id,
        fix,
        now_ms,
        "rectification fix",
    )
}

/// Puts `value` under `key` in the root map `map`, in one change with `message`.
///
/// Errors: [`ModelError::OldSchema`] when the document has no such map.
pub(crate) fn put_entry<T: Reconcile>(
    doc: &mut Automerge,
    map: &str,
    key: &str,
    value: &T,
    now_ms: i64,
    message: &str,
) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    let Some((automerge::Value::Object(ObjType::Map), obj)) = tx.get(ROOT, map)? else {
        return Err(ModelError::OldSchema);
    };
    autosurgeon::reconcile_prop(&mut tx, &obj, key, value)?;
    tx.commit_with(commit_at(now_ms, message));
    Ok(())
}

/// Sets one text field of the household profile (`phone`, `head_name`, `address`,
/// `door_number`), in one change. Writing a field also resolves any conflict on it.
pub fn set_profile_field(
    doc: &mut Automerge,
    field: ProfileField,
    value: &str,
    now_ms: i64,
) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    tx.put(ROOT, field.key(), value)?;
    tx.commit_with(commit_at(now_ms, "edit household"));
    Ok(())
}

/// Moves a household to another village and grid: the two root fields, in one change.
/// Written by the server only (the office's move); no phone may write them.
pub fn set_place(
    doc: &mut Automerge,
    village: &str,
    grid: &str,
    now_ms: i64,
) -> Result<(), ModelError> {
    let mut tx = doc.transaction();
    tx.put(ROOT, "village", village)?;
    tx.put(ROOT, "grid", grid)?;
    tx.commit_with(commit_at(now_ms, "move household"));
    Ok(())
}

/// The household profile fields a phone may edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileField {
    /// The contact phone.
    Phone,
    /// The head of household's name.
    HeadName,
    /// The postal address.
    Address,
}

impl ProfileField {
    /// The document key of the field.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Phone => "phone",
            Self::HeadName => "head_name",
            Self::Address => "address",
        }
    }
}

pub(crate) fn commit_at(now_ms: i64, message: &str) -> automerge::transaction::CommitOptions {
    automerge::transaction::CommitOptions::default()
        .with_time(now_ms)
        .with_message(message.to_string())
}

fn map_at(
    tx: &mut automerge::transaction::Transaction<'_>,
    parent: &automerge::ObjId,
    key: &str,
) -> Result<automerge::ObjId, ModelError> {
    match tx.get(parent, key)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Ok(tx.put_object(parent, key, ObjType::Map)?),
    }
}

/// One value of a field that two or more devices set concurrently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictValue {
    /// The value, rendered as text.
    pub value: String,
    /// Hex Automerge actor ID of the writer: the device ID for phones.
    pub actor: String,
    /// Device time of the change that wrote it, milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    /// True for the value Automerge shows as current (its deterministic winner).
    pub winner: bool,
}

/// A field that holds more than one concurrent value. Automerge keeps all of them and
/// shows one; Doorstep lists the rest so the office can choose (DESIGN.md section 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Path of the field from the document root, e.g. `["phone"]` or
    /// `["residents", "<uuid>", "phone"]`.
    pub path: Vec<String>,
    /// Every concurrent value, the winner first.
    pub values: Vec<ConflictValue>,
}

/// Lists every field of the document that holds two or more different concurrent
/// values, depth first in key order. Concurrent writes of the same value are not
/// conflicts and are not listed.
pub fn conflicts(doc: &Automerge) -> Vec<Conflict> {
    let mut out = Vec::new();
    walk_conflicts(doc, &ROOT, &mut Vec::new(), &mut out);
    out
}

fn walk_conflicts(
    doc: &Automerge,
    obj: &automerge::ObjId,
    path: &mut Vec<String>,
    out: &mut Vec<Conflict>,
) {
    let keys: Vec<String> = doc.keys(obj).collect();
    for key in keys {
        let Ok(values) = doc.get_all(obj, key.as_str()) else {
            continue;
        };
        path.push(key.clone());
        if values.len() > 1 {
            let rendered: Vec<ConflictValue> = values
                .iter()
                .enumerate()
                .map(|(i, (value, id))| {
                    let (actor, time_ms) = author_of(doc, id);
                    ConflictValue {
                        value: render(value),
                        actor,
                        time_ms,
                        winner: i + 1 == values.len(),
                    }
                })
                .rev()
                .collect();
            let first = &rendered[0].value;
            if rendered.iter().any(|v| &v.value != first) {
                out.push(Conflict {
                    path: path.clone(),
                    values: rendered,
                });
            }
        }
        if let Ok(Some((automerge::Value::Object(ObjType::Map), child))) =
            doc.get(obj, key.as_str())
        {
            walk_conflicts(doc, &child, path, out);
        }
        path.pop();
    }
}

fn author_of(doc: &Automerge, id: &automerge::ObjId) -> (String, i64) {
    let actor = match id {
        automerge::ObjId::Id(_, actor, _) => actor.to_hex_string(),
        automerge::ObjId::Root => String::new(),
    };
    let time = doc
        .hash_for_opid(id)
        .and_then(|h| doc.get_change_meta_by_hash(&h).map(|m| m.timestamp))
        .unwrap_or(0);
    (actor, time)
}

fn render(value: &automerge::Value<'_>) -> String {
    match value {
        automerge::Value::Scalar(s) => match s.as_ref() {
            automerge::ScalarValue::Str(s) => s.to_string(),
            other => other.to_string(),
        },
        automerge::Value::Object(t) => format!("<{t}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Household {
        let mut h = Household::new(HouseholdId::new(), "东坡村", "东坡村第1网格", "东坡村1号");
        h.head_name = "张三".into();
        h.phone = "13800000000".into();
        h.residents.insert(
            ResidentId::new().to_string(),
            Resident {
                name: "张三".into(),
                relation: "户主".into(),
                ..Resident::default()
            },
        );
        h
    }

    fn visit(device: DeviceId) -> Visit {
        Visit {
            visitor: "worker".into(),
            device_id: device.to_string(),
            started_at_ms: 1,
            finished_at_ms: Some(2),
            outcome: Some(VisitOutcome::Completed),
            outcome_reason: String::new(),
            voided: None,
            target_groups_reached: vec!["老年人".into()],
            remarks: String::new(),
            photos: BTreeMap::new(),
            location: Some(GeoPoint {
                lat: 30.0,
                lon: 120.0,
                accuracy_m: Some(8.0),
            }),
        }
    }

    #[test]
    fn household_round_trips_through_the_document() {
        let h = sample();
        let doc = new_household_doc(&h, ActorId::random(), 0).unwrap();
        let loaded = Automerge::load(&doc.save()).unwrap();
        assert_eq!(read_household(&loaded).unwrap(), h);
    }

    #[test]
    fn concurrent_visits_both_survive_and_a_phone_edit_is_not_overwritten() {
        let h = sample();
        let base = new_household_doc(&h, ActorId::random(), 0).unwrap();
        let (a_dev, b_dev) = (DeviceId::new(), DeviceId::new());
        let mut a = base.fork().with_actor(a_dev.actor());
        let mut b = base.fork().with_actor(b_dev.actor());
        add_visit(&mut a, VisitId::new(), &visit(a_dev), 10).unwrap();
        set_profile_field(&mut a, ProfileField::Phone, "13911112222", 11).unwrap();
        add_visit(&mut b, VisitId::new(), &visit(b_dev), 12).unwrap();
        a.merge(&mut b).unwrap();
        let merged = read_household(&a).unwrap();
        assert_eq!(merged.visits.len(), 2);
        assert_eq!(merged.phone, "13911112222");
        assert!(conflicts(&a).is_empty());
    }

    #[test]
    fn concurrent_phone_edits_are_listed_as_a_conflict_and_resolved_by_a_write() {
        let base = new_household_doc(&sample(), ActorId::random(), 0).unwrap();
        let mut a = base.fork().with_actor(DeviceId::new().actor());
        let mut b = base.fork().with_actor(DeviceId::new().actor());
        set_profile_field(&mut a, ProfileField::Phone, "13911111111", 100).unwrap();
        set_profile_field(&mut b, ProfileField::Phone, "13922222222", 200).unwrap();
        a.merge(&mut b).unwrap();
        let found = conflicts(&a);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, vec!["phone".to_string()]);
        let mut values: Vec<_> = found[0].values.iter().map(|v| v.value.clone()).collect();
        values.sort();
        assert_eq!(values, ["13911111111", "13922222222"]);
        assert!(found[0].values[0].winner);
        assert_eq!(found[0].values[0].value, read_household(&a).unwrap().phone);
        let times: Vec<_> = found[0].values.iter().map(|v| v.time_ms).collect();
        assert!(times.contains(&100) && times.contains(&200));
        set_profile_field(&mut a, ProfileField::Phone, "13933333333", 300).unwrap();
        assert!(conflicts(&a).is_empty());
    }

    #[test]
    fn photo_needs_an_existing_visit() {
        let mut doc = new_household_doc(&sample(), ActorId::random(), 0).unwrap();
        let photo = PhotoRef {
            sha256: "ab".into(),
            size_bytes: 1,
            media_type: "image/jpeg".into(),
            width: 1,
            height: 1,
            thumbnail_sha256: "cd".into(),
            added_at_ms: 0,
        };
        assert!(matches!(
            add_photo(&mut doc, VisitId::new(), &photo, 0),
            Err(ModelError::NoSuchVisit(_))
        ));
    }
}
