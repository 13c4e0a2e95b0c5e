//! Who may do what (issue 4, DESIGN.md section 6): the roles, the scopes, and the one
//! permission table from which the server decides every read and every write, plus the
//! masking of ID and phone numbers for roles without the need to see them in full.
//!
//! The table is [`PERMISSIONS`]; `docs/access.md` shows it as rendered by
//! [`markdown_table`] (a test keeps the two equal). Handlers ask [`Principal::may`]
//! (a household in or out of scope) or [`Principal::may_at_all`]; the sync push asks
//! [`permission_for_path`] which permission a changed path needs.

use serde::{Deserialize, Serialize};

/// The campaign's roles (DOMAIN.md, "Who uses the product").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 网格员: visits the households of their grids.
    GridWorker,
    /// 网格长: leads a grid's workers, and visits too.
    GridLeader,
    /// 片警 / 辅警: a community or auxiliary police officer paired with grids.
    Police,
    /// 督导组: checks visits by phone (电话回访) and sends omissions back.
    Supervisor,
    /// 联络员: acknowledges directives for a village or unit and pushes them on.
    Liaison,
    /// 办公室: reviews records, chases omissions, enrols phones, exports.
    Office,
    /// 管理员: manages accounts; sees no household data.
    Admin,
}

impl Role {
    /// Every role, in the order of the table's columns.
    pub const ALL: [Role; 7] = [
        Role::GridWorker,
        Role::GridLeader,
        Role::Police,
        Role::Supervisor,
        Role::Liaison,
        Role::Office,
        Role::Admin,
    ];

    /// The name stored and typed on the command line: `grid_worker`, `grid_leader`,
    /// `police`, `supervisor`, `liaison`, `office`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::GridWorker => "grid_worker",
            Role::GridLeader => "grid_leader",
            Role::Police => "police",
            Role::Supervisor => "supervisor",
            Role::Liaison => "liaison",
            Role::Office => "office",
            Role::Admin => "admin",
        }
    }

    /// The role's Chinese name, as the pages show it.
    pub fn label_zh(self) -> &'static str {
        match self {
            Role::GridWorker => "网格员",
            Role::GridLeader => "网格长",
            Role::Police => "民警",
            Role::Supervisor => "督导组",
            Role::Liaison => "联络员",
            Role::Office => "办公室",
            Role::Admin => "管理员",
        }
    }

    /// Parses [`Role::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn column(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A grid, named within its village: grid names repeat across villages (第1网格).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GridRef {
    /// Village (村) name.
    pub village: String,
    /// Grid (网格) name within the village.
    pub grid: String,
}

impl GridRef {
    /// The grid `grid` of the village `village`.
    pub fn new(village: &str, grid: &str) -> Self {
        Self {
            village: village.into(),
            grid: grid.into(),
        }
    }
}

/// What part of the town an account answers for: grids, villages, units (镇直单位),
/// the whole town, or several of these (a police officer: grids and the police
/// station). Households belong to a village and a grid; units hold no households, but
/// directives and the monthly bulletin are kept per village and per unit.
///
/// Stored as JSON: `{"town": false, "villages": [], "grids": [{"village", "grid"}],
/// "units": []}`; the sync's pull reads that JSON in SQL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Scope {
    /// The whole town.
    pub town: bool,
    /// Whole villages.
    pub villages: Vec<String>,
    /// Grids.
    pub grids: Vec<GridRef>,
    /// Town units, by name.
    pub units: Vec<String>,
}

impl Scope {
    /// The whole town.
    pub fn town() -> Self {
        Self {
            town: true,
            ..Self::default()
        }
    }

    /// These grids.
    pub fn grids(grids: Vec<GridRef>) -> Self {
        Self {
            grids,
            ..Self::default()
        }
    }

    /// These villages.
    pub fn villages(villages: Vec<String>) -> Self {
        Self {
            villages,
            ..Self::default()
        }
    }

    /// These units.
    pub fn units(units: Vec<String>) -> Self {
        Self {
            units,
            ..Self::default()
        }
    }

    /// True when a household in `village` and `grid` is in this scope.
    pub fn covers(&self, village: &str, grid: &str) -> bool {
        self.town
            || self.villages.iter().any(|v| v == village)
            || self
                .grids
                .iter()
                .any(|g| g.village == village && g.grid == grid)
    }

    /// True when the village or unit `name` is in this scope (for directives and the
    /// bulletin, kept per village and unit).
    pub fn covers_place(&self, name: &str) -> bool {
        self.town || self.villages.iter().any(|v| v == name) || self.units.iter().any(|u| u == name)
    }

    /// True when the scope names nothing at all.
    pub fn is_empty(&self) -> bool {
        !self.town && self.villages.is_empty() && self.grids.is_empty() && self.units.is_empty()
    }

    /// The stored JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads the stored JSON form; anything unreadable is the empty scope (covers
    /// nothing), never the town.
    pub fn from_json(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_default()
    }

    /// A short description for the command line and the audit log: `town`,
    /// `villages: 甲村`, `grids: 甲村/第1网格`, `units: 派出所`, joined by `; `.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.town {
            parts.push("town".to_string());
        }
        if !self.villages.is_empty() {
            parts.push(format!("villages: {}", self.villages.join(", ")));
        }
        if !self.grids.is_empty() {
            let g: Vec<String> = self
                .grids
                .iter()
                .map(|g| format!("{}/{}", g.village, g.grid))
                .collect();
            parts.push(format!("grids: {}", g.join(", ")));
        }
        if !self.units.is_empty() {
            parts.push(format!("units: {}", self.units.join(", ")));
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join("; ")
        }
    }
}

/// How far a role's permission reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Not at all.
    No,
    /// Within the account's own scope (households of its grids or villages).
    Scope,
    /// Everywhere in the town (and, for permissions about accounts, every account).
    Town,
}

/// Everything the server decides on: reads, writes, and acts on accounts. Each
/// endpoint and each changed path of a push needs exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Receive household documents on an enrolled phone, in full: the phone works
    /// offline and keeps them encrypted (`POST /v1/sync`, pull).
    SyncHouseholds,
    /// List and read households through the API, ID and phone numbers masked
    /// (`GET /v1/households`, `GET /v1/households/{id}`).
    ReadHouseholds,
    /// See one ID or phone number in full, giving a reason; audited
    /// (`POST /v1/households/{id}/reveal`).
    RevealPersonalData,
    /// Find residents by ID number, through the keyed hash
    /// (`POST /v1/residents/lookup`).
    LookupIdNumber,
    /// Export households as CSV, masked; audited (`GET /v1/export/households.csv`).
    ExportHouseholds,
    /// Start, finish and void one's own visits, and add their photos (push, path
    /// `visits`).
    WriteVisit,
    /// Add a signed notice or pledge; nobody changes one once written (push, path
    /// `evidence`).
    WriteEvidence,
    /// Correct a household's phone, head of household or address (push, root fields).
    WriteProfile,
    /// Upload photos and signature images, and ask which the server lacks
    /// (`PUT /v1/blobs/{sha256}`, `POST /v1/blobs/missing`).
    UploadFiles,
    /// Mark a visit received, approved or has issues (`POST
    /// /v1/households/{id}/visits/{visit}/review`, push path `reviews`).
    WriteReview,
    /// Record a follow-up call (电话回访) (push, path `follow_up_calls`).
    WriteFollowUpCall,
    /// Move a household to another grid (`POST /v1/households/{id}/move`).
    MoveHousehold,
    /// Create, disable, enable and reset accounts, and change roles and scopes
    /// (`/v1/users...`).
    ManageUsers,
    /// Issue a one-time enrolment code for a person's phone (`POST /v1/enrolments`).
    IssueEnrolment,
    /// Enrol a phone (redeem a code, or sign a phone in with a password).
    EnrolDevice,
    /// List and revoke any account's phones and web sessions, and see what a phone had
    /// not yet synced (`GET /v1/users/{name}/tokens`, `DELETE /v1/devices/{id}`).
    ManageDevices,
    /// Read and export the audit log (`GET /v1/audit`).
    ReadAudit,
    /// Use the office's web pages: the dashboard, the household list and pages (masked),
    /// the review queue, rectifications and follow-up rounds (`/`, `/households...`,
    /// `/review`, `/rectifications`, `/follow-up...`). A field team works on the phone.
    ReadOfficePages,
    /// Keep one of the values of a conflict in a household (`POST
    /// /households/{id}/conflicts`); the others stay in the document's history.
    ResolveConflict,
    /// Draw a random sample of visited households for follow-up calls (`POST
    /// /follow-up/rounds`): a supervisor within its scope.
    DrawFollowUpSample,
    /// Put right what a review or a follow-up call found (整改): record the fix of a
    /// rectification task on the phone (push, path `rectification_fixes`).
    FixRectification,
    /// Publish a directive, work bulletin or warning to villages and units, and watch
    /// who has acknowledged and pushed it on (`/directives`).
    PublishDirective,
    /// Receive the directives of one's villages and units and acknowledge (签收) them
    /// and confirm the push (推送), from the phone (sync, directive documents) or the
    /// web (`/directives/{id}/places/{place}/...`).
    AcknowledgeDirective,
    /// Import the responsible persons (责任人) and lecturers of villages and units
    /// (`doorstep-server import-places`, `/places`).
    ManagePlaces,
    /// Enter a month's fraud cases and losses of a village or unit (`/bulletin/cases`).
    EnterFraudCases,
    /// Read the monthly bulletin (月度通报) page (`/bulletin`).
    ReadBulletin,
    /// Export the monthly bulletin as .xlsx and the visits as CSV; audited
    /// (`/bulletin/{month}.xlsx`, `/export/visits.csv`).
    ExportReports,
}

use Reach::{No as N, Scope as S, Town as T};

/// THE permission table: for each permission, the reach of each role, in the order of
/// [`Role::ALL`] (grid worker, grid leader, police, supervisor, liaison, office,
/// admin). The server decides from this and nothing else; `docs/access.md` renders it.
///
/// Grounds (DOMAIN.md "Who uses the product"; PIPL articles 6 and 28 — the least data
/// for the purpose, sensitive data only with need): field teams hold their own
/// households in full on the phone, where they visit; supervisors call a sample, so
/// they reveal phone numbers one at a time; the office reviews the whole town; the
/// administrator manages accounts and sees no household.
pub const PERMISSIONS: &[(Permission, [Reach; 7])] = &[
    //                                   worker leader police superv liaison office admin
    (Permission::SyncHouseholds, [S, S, S, S, N, N, N]),
    (Permission::ReadHouseholds, [S, S, S, S, N, T, N]),
    (Permission::RevealPersonalData, [N, N, S, S, N, T, N]),
    (Permission::LookupIdNumber, [N, N, S, N, N, T, N]),
    (Permission::ExportHouseholds, [N, N, N, N, N, T, N]),
    (Permission::WriteVisit, [S, S, S, N, N, N, N]),
    (Permission::WriteEvidence, [S, S, S, N, N, N, N]),
    (Permission::WriteProfile, [S, S, S, N, N, N, N]),
    (Permission::UploadFiles, [T, T, T, N, N, N, N]),
    (Permission::WriteReview, [N, N, N, N, N, T, N]),
    (Permission::WriteFollowUpCall, [N, N, N, S, N, N, N]),
    (Permission::MoveHousehold, [N, N, N, N, N, T, N]),
    (Permission::ManageUsers, [N, N, N, N, N, N, T]),
    (Permission::IssueEnrolment, [N, N, N, N, N, T, T]),
    (Permission::EnrolDevice, [T, T, T, T, T, N, N]),
    (Permission::ManageDevices, [N, N, N, N, N, T, T]),
    (Permission::ReadAudit, [N, N, N, N, N, N, T]),
    (Permission::ReadOfficePages, [N, N, N, S, N, T, N]),
    (Permission::ResolveConflict, [N, N, N, N, N, T, N]),
    (Permission::DrawFollowUpSample, [N, N, N, S, N, T, N]),
    (Permission::FixRectification, [S, S, S, N, N, N, N]),
    (Permission::PublishDirective, [N, N, N, N, N, T, N]),
    (Permission::AcknowledgeDirective, [N, N, N, N, S, N, N]),
    (Permission::ManagePlaces, [N, N, N, N, N, T, N]),
    (Permission::EnterFraudCases, [N, N, S, N, N, T, N]),
    (Permission::ReadBulletin, [N, N, N, T, N, T, N]),
    (Permission::ExportReports, [N, N, N, N, N, T, N]),
];

/// The reach of `role` for `permission`, from [`PERMISSIONS`].
pub fn reach(role: Role, permission: Permission) -> Reach {
    PERMISSIONS
        .iter()
        .find(|(p, _)| *p == permission)
        .map(|(_, row)| row[role.column()])
        .unwrap_or(Reach::No)
}

/// Who is asking: an account, through a web session or an enrolled phone.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The account's row ID.
    pub user_id: i64,
    /// The account name.
    pub username: String,
    /// Its role.
    pub role: Role,
    /// Its scope.
    pub scope: Scope,
}

impl Principal {
    /// Whether this account may do `permission` on a household of `village` and
    /// `grid`: a [`Reach::Scope`] permission needs the household in the account's
    /// scope; a [`Reach::Town`] one reaches every household.
    pub fn may(&self, permission: Permission, village: &str, grid: &str) -> bool {
        match reach(self.role, permission) {
            Reach::No => false,
            Reach::Scope => self.scope.covers(village, grid),
            Reach::Town => true,
        }
    }

    /// Whether this account may do `permission` for the village or unit `place` (the
    /// place-kept permissions: directives, fraud cases): a [`Reach::Scope`] permission
    /// needs the place in the account's scope ([`Scope::covers_place`]).
    pub fn may_place(&self, permission: Permission, place: &str) -> bool {
        match reach(self.role, permission) {
            Reach::No => false,
            Reach::Scope => self.scope.covers_place(place),
            Reach::Town => true,
        }
    }

    /// Whether this account may do `permission` anywhere at all (for list endpoints,
    /// which then filter by [`Principal::may`], and acts on accounts).
    pub fn may_at_all(&self, permission: Permission) -> bool {
        reach(self.role, permission) != Reach::No
    }
}

/// The permission a push needs to change the household document under the root key
/// `root_key` (the first element of the changed path), or `None` when no phone may
/// change it at all: the household's identity and place, its residents (the roster's),
/// and the server's receipts.
pub fn permission_for_path(root_key: &str) -> Option<Permission> {
    match root_key {
        "visits" => Some(Permission::WriteVisit),
        "evidence" => Some(Permission::WriteEvidence),
        "phone" | "head_name" | "address" => Some(Permission::WriteProfile),
        "reviews" => Some(Permission::WriteReview),
        "follow_up_calls" => Some(Permission::WriteFollowUpCall),
        "rectification_fixes" => Some(Permission::FixRectification),
        _ => None,
    }
}

/// The permission table as a Markdown table (the one in `docs/access.md`).
pub fn markdown_table() -> String {
    let mut out = String::from("| permission |");
    for r in Role::ALL {
        out.push_str(&format!(" {} ({}) |", r.as_str(), r.label_zh()));
    }
    out.push_str("\n| --- |");
    for _ in Role::ALL {
        out.push_str(" :-: |");
    }
    out.push('\n');
    for (p, row) in PERMISSIONS {
        out.push_str(&format!("| {p:?} |"));
        for reach in row {
            out.push_str(match reach {
                Reach::No => " – |",
                Reach::Scope => " scope |",
                Reach::Town => " town |",
            });
        }
        out.push('\n');
    }
    out
}

/// Masks a national ID number (居民身份证号码, GB 11643-1999, 18 characters): the first
/// six (the place of registration, 110101) and the last four are kept, the eight
/// birth-date digits in between hidden: `110101********1234`. Anything of another
/// length keeps at most its last four characters: `****1234`.
pub fn mask_id_number(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() == 18 {
        let head: String = chars[..6].iter().collect();
        let tail: String = chars[14..].iter().collect();
        format!("{head}********{tail}")
    } else {
        mask_tail(&chars, 4)
    }
}

/// Masks a phone number: an 11-digit mobile number keeps its first three (the
/// carrier's prefix) and last four digits, `138****5678`; any other number keeps at
/// most its last four, `****5678`. An empty number stays empty.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() == 11 {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[7..].iter().collect();
        format!("{head}****{tail}")
    } else {
        mask_tail(&chars, 4)
    }
}

fn mask_tail(chars: &[char], keep: usize) -> String {
    if chars.is_empty() {
        return String::new();
    }
    // Short values keep less, so that at least half is hidden.
    let keep = keep.min(chars.len() / 2);
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("{}{tail}", "*".repeat((chars.len() - keep).min(8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_has_one_row_and_every_role_a_column() {
        let mut seen = std::collections::HashSet::new();
        for (p, _) in PERMISSIONS {
            assert!(seen.insert(*p), "{p:?} has two rows");
        }
        assert_eq!(
            seen.len(),
            27,
            "a permission was added without a row, or the count here"
        );
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn docs_show_the_table_the_server_uses() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/access.md"))
                .expect("docs/access.md");
        assert!(
            doc.contains(&markdown_table()),
            "docs/access.md does not hold the current table; paste this:\n{}",
            markdown_table()
        );
    }

    #[test]
    fn masks_keep_what_the_campaign_shows() {
        assert_eq!(mask_id_number("110101199001011234"), "110101********1234");
        assert_eq!(mask_id_number("11010119900101123X"), "110101********123X");
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("057187654321"), "********4321");
        assert_eq!(mask_phone(""), "");
        assert_eq!(mask_phone("12"), "*2");
        assert_eq!(mask_id_number("1234567"), "****567");
    }

    #[test]
    fn scopes_cover_their_households_and_places() {
        let s = Scope {
            grids: vec![GridRef::new("甲村", "第1网格")],
            units: vec!["派出所".into()],
            ..Scope::default()
        };
        assert!(s.covers("甲村", "第1网格"));
        assert!(
            !s.covers("乙村", "第1网格"),
            "grid names repeat across villages"
        );
        assert!(!s.covers("甲村", "第2网格"));
        assert!(s.covers_place("派出所"));
        assert!(!s.covers_place("甲村"));
        assert!(Scope::villages(vec!["甲村".into()]).covers("甲村", "第9网格"));
        assert!(Scope::town().covers("任意", "任意"));
        assert_eq!(Scope::from_json(&s.to_json()), s);
        assert!(
            Scope::from_json("not json").is_empty(),
            "unreadable is nothing, not the town"
        );
    }

    #[test]
    fn principals_reach_only_what_the_table_says() {
        let worker = Principal {
            user_id: 1,
            username: "w".into(),
            role: Role::GridWorker,
            scope: Scope::grids(vec![GridRef::new("甲村", "第1网格")]),
        };
        assert!(worker.may(Permission::WriteVisit, "甲村", "第1网格"));
        assert!(!worker.may(Permission::WriteVisit, "甲村", "第2网格"));
        assert!(!worker.may(Permission::WriteReview, "甲村", "第1网格"));
        let office = Principal {
            role: Role::Office,
            scope: Scope::default(),
            ..worker
        };
        assert!(office.may(Permission::WriteReview, "乙村", "第5网格"));
        assert!(!office.may(Permission::SyncHouseholds, "乙村", "第5网格"));
        assert_eq!(permission_for_path("residents"), None);
        assert_eq!(permission_for_path("receipts"), None);
        assert_eq!(permission_for_path("village"), None);
    }
}
