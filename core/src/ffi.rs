//! The phone apps' surface (DESIGN.md section 8), exported with uniffi to Kotlin and
//! Swift: a store opened with its keystore key, the households in the phone's scope,
//! the visit workflow, enrolment, sync with progress and cancellation, conflicts and a
//! supervisor's follow-up calls. Every export is a thin delegate to `store`, `sync` or
//! `media`; the logic stays there. Calls block and are safe from any thread (the store
//! sits behind a mutex); the apps call them off the main thread. A sync holds the lock
//! only while it reads or applies, so the worker keeps recording while it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use zeroize::Zeroizing;

use crate::error::Error;
use crate::evidence::EvidenceRecord;
use crate::media::MediaError;
use crate::media::signature::{InkRule, SignatureError, SignatureStrokes, Stroke, StrokePoint};
use crate::model::{self, EvidenceKind, GeoPoint, HouseholdId, ResidentId, VisitId, VisitOutcome};
use crate::protocol::SyncProgress;
use crate::store::{
    self, FollowUpInput, HouseholdQuery, STORE_KEY_BYTES, SignRequest, Store, VisitFinish,
    VisitStart, WitnessInput,
};
use crate::sync;

type FfiResult<T> = std::result::Result<T, DoorstepError>;

/// Everything that can go wrong, as the app can act on it. `detail` is a sentence a
/// grid worker can read (Chinese); [`DoorstepError::code`] is a stable code the app
/// branches on and logs. Neither carries personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum DoorstepError {
    /// The store does not open with the key from the keystore: ask the office; do not
    /// delete the file (`wrong_key`).
    #[error("{detail}")]
    WrongKey {
        /// For the worker.
        detail: String,
    },
    /// The phone's storage is full: free space, nothing was written (`storage_full`).
    #[error("{detail}")]
    StorageFull {
        /// For the worker.
        detail: String,
    },
    /// The store file cannot be read or written (damaged, locked, newer app) (`storage`).
    #[error("{detail}")]
    Storage {
        /// For the worker.
        detail: String,
    },
    /// The phone is not enrolled yet: scan the office's code (`not_enrolled`).
    #[error("{detail}")]
    NotEnrolled {
        /// For the worker.
        detail: String,
    },
    /// The server refused the code or the phone's token: enrol again with a new code
    /// from the office (`unauthorized`).
    #[error("{detail}")]
    Unauthorized {
        /// For the worker.
        detail: String,
    },
    /// The server's key does not match the one the phone was given: do not sync, call
    /// the office (`server_key_mismatch`).
    #[error("{detail}")]
    ServerKeyMismatch {
        /// For the worker.
        detail: String,
    },
    /// No connection, or it broke: try again where there is signal; nothing is lost
    /// (`offline`).
    #[error("{detail}")]
    Offline {
        /// For the worker.
        detail: String,
    },
    /// The server answered with an error (`server`); `status` is the HTTP status.
    #[error("{detail}")]
    Server {
        /// HTTP status.
        status: u16,
        /// For the worker.
        detail: String,
    },
    /// The sync was cancelled; what was confirmed is kept (`cancelled`).
    #[error("{detail}")]
    Cancelled {
        /// For the worker.
        detail: String,
    },
    /// The photo was refused (broken, too big, an unsupported format); take another
    /// (`photo_refused`).
    #[error("{detail}")]
    PhotoRefused {
        /// For the worker.
        detail: String,
    },
    /// The signature was refused (blank, too little ink); sign again
    /// (`signature_refused`).
    #[error("{detail}")]
    SignatureRefused {
        /// For the worker.
        detail: String,
    },
    /// The visit cannot be finished as completed: it lacks `missing`
    /// (`visit_incomplete`).
    #[error("{detail}")]
    VisitIncomplete {
        /// What is missing: `signed_paper`, `photo`.
        missing: Vec<String>,
        /// For the worker.
        detail: String,
    },
    /// The household or visit is not on this phone (`not_found`).
    #[error("{detail}")]
    NotFound {
        /// For the worker.
        detail: String,
    },
    /// An argument broke a rule; `field` names it (`invalid`).
    #[error("{detail}")]
    Invalid {
        /// The argument.
        field: String,
        /// The rule broken, in English, for developers and logs.
        reason: String,
        /// For the worker.
        detail: String,
    },
    /// Something the app cannot fix; report it (`internal`).
    #[error("{detail}")]
    Internal {
        /// For the worker, with the technical reason after it.
        detail: String,
    },
}

#[uniffi::export]
impl DoorstepError {
    /// The stable code of the variant (`wrong_key`, `offline`, ...), for branching and
    /// logs.
    pub fn code(&self) -> String {
        match self {
            Self::WrongKey { .. } => "wrong_key",
            Self::StorageFull { .. } => "storage_full",
            Self::Storage { .. } => "storage",
            Self::NotEnrolled { .. } => "not_enrolled",
            Self::Unauthorized { .. } => "unauthorized",
            Self::ServerKeyMismatch { .. } => "server_key_mismatch",
            Self::Offline { .. } => "offline",
            Self::Server { .. } => "server",
            Self::Cancelled { .. } => "cancelled",
            Self::PhotoRefused { .. } => "photo_refused",
            Self::SignatureRefused { .. } => "signature_refused",
            Self::VisitIncomplete { .. } => "visit_incomplete",
            Self::NotFound { .. } => "not_found",
            Self::Invalid { .. } => "invalid",
            Self::Internal { .. } => "internal",
        }
        .to_string()
    }

    /// The sentence for the worker (Chinese), whatever the variant.
    pub fn detail(&self) -> String {
        match self {
            Self::WrongKey { detail }
            | Self::StorageFull { detail }
            | Self::Storage { detail }
            | Self::NotEnrolled { detail }
            | Self::Unauthorized { detail }
            | Self::ServerKeyMismatch { detail }
            | Self::Offline { detail }
            | Self::Server { detail, .. }
            | Self::Cancelled { detail }
            | Self::PhotoRefused { detail }
            | Self::SignatureRefused { detail }
            | Self::VisitIncomplete { detail, .. }
            | Self::NotFound { detail }
            | Self::Invalid { detail, .. }
            | Self::Internal { detail } => detail.clone(),
        }
    }
}

/// What the worker reads for an [`Error::Invalid`] of the core: one Chinese sentence per
/// argument and rule (the core's `reason` is English, for developers).
fn invalid_zh(field: &str, reason: &str) -> String {
    let has = |s: &str| reason.contains(s);
    match field {
        "path" => "存储位置不可用，请重新安装应用或联系镇综治办。",
        "key" => "密钥须为32字节，请联系镇综治办。",
        "text" => "搜索内容最多100个字。",
        "status" => "走访状态只能是：未走访、走访中、已完成、无人在家、拒绝、已搬离。",
        "limit" => "每次最多列出500条。",
        "household" => "户编号无效，请重新选择这一户。",
        "visit" if has("another phone") => "这条走访由另一部手机记录，只能在那部手机上继续或作废。",
        "visit" if has("already voided") || has("was voided") => "这条走访已作废。",
        "visit" if has("already finished") => "这条走访已结束，不能再修改。",
        "visit" if has("finished, not voided") => "只有已结束且未作废的走访才能回访。",
        "visit" if has("completed, not voided") => "整改须对应一条已完成且未作废的走访。",
        "visit" => "走访编号无效，请重新选择这条走访。",
        "outcome_reason" if has("at most") => "原因最多200个字。",
        "outcome_reason" => "走访未完成时须说明原因（无人在家、拒绝、已搬离）。",
        "reason" => "请填写原因（1至200个字）。",
        "remarks" => "备注太长，请删减。",
        "target_groups_reached" => "重点人群最多32项，每项1至50个字。",
        "started_at_ms" => "走访开始时间不正确，请检查手机日期。",
        "finished_at_ms" if has("24 hours") => "一次走访不能超过24小时，请检查结束时间。",
        "finished_at_ms" => "结束时间早于开始时间，请检查手机日期。",
        "called_at_ms" => "回访时间早于走访时间，请检查手机日期。",
        "reached" => "接通时须回答两个问题；未接通时两个问题都不填。",
        f if f.starts_with("location") => "定位数据不正确，请重新定位或不带位置保存。",
        "phone" => "电话号码应为7至15位数字。",
        "head_name" | "address" => "最多200个字。",
        "signer" if has("under 18") => "签字人未满18岁，请由户主或其他成年人签字。",
        "signer" => "签字人不是这一户的居民。",
        "signature" if has("witness") => "按手印或画押须有见证人；也可以请本人完整签名。",
        "signature" => "没有找到这份签名，请重新签字。",
        f if f.starts_with("witness") && has("mark") => "见证人须完整签名，不能画押。",
        f if f.starts_with("witness") && has("own") => {
            "见证人的签名不能与签字人的相同，请见证人本人签字。"
        }
        f if f.starts_with("witness") => {
            "请填写见证人姓名（1至50个字）和原因（1至200个字），并由见证人签名。"
        }
        "template" if has("sync") => "本机还没有告知书和承诺书，请在有信号时同步一次。",
        "template" => "没有现行有效的告知书或承诺书，请联系镇综治办。",
        "photos" => "一条签字记录最多引用200张照片，请另起一次走访。",
        "record" => "签字记录过大，请减少照片后再签。",
        "enrolment code" => "这不是有效的入网码，请扫描镇综治办发放的二维码。",
        "server_url" => "服务器地址无效，请检查后重新输入。",
        "pin" | "certificate" => "服务器密钥指纹格式不正确，请向镇综治办核对。",
        "blob" => "本机的一份照片或签名文件已损坏，请联系镇综治办。",
        "task" if has("already") => "这项整改已提交或已办结。",
        "task" => "没有找到这项整改任务，请同步后重试。",
        "note" => "请填写整改说明（1至500个字）。",
        "directive" => "本机没有这条指令，请同步后重试。",
        "place" if has("already") => "这个村（单位）已签收或已确认推送。",
        "place" => "这条指令没有发给这个村（单位）。",
        "kind" => "请先签收，再确认推送。",
        "size" => "抽查比例为1%至100%，或抽查户数至少1户，二者选一。",
        "seed" => "随机种子须为整数。",
        _ => "输入的内容不符合要求，请检查后重试。",
    }
    .to_string()
}

impl From<Error> for DoorstepError {
    fn from(e: Error) -> Self {
        let technical = e.to_string();
        match e {
            Error::WrongKey => Self::WrongKey {
                detail: "本机数据无法用当前密钥打开。请勿删除应用数据，请联系镇综治办。".into(),
            },
            Error::Storage(ref s) if is_full(s) => Self::StorageFull {
                detail: "手机存储空间已满，本次内容没有保存。请清理空间后重试，已保存的记录不受影响。"
                    .into(),
            },
            Error::Storage(_) | Error::Document { .. } => Self::Storage {
                detail: format!("本机数据读写失败，已保存的记录未被改动。（技术信息：{technical}）"),
            },
            Error::StoreTooNew { .. } => Self::Storage {
                detail: "本机数据由更新版本的应用写入，请先升级应用。".into(),
            },
            Error::NotSignedIn => Self::NotEnrolled {
                detail: "本机尚未入网，请扫描镇综治办发放的入网码。".into(),
            },
            Error::Unauthorized(_) | Error::KeyNotRegistered => Self::Unauthorized {
                detail: "服务器不认可本机的入网凭证（入网码错误、已使用、已过期，或本机已被停用）。请向镇综治办领取新的入网码。".into(),
            },
            Error::PinMismatch { .. } => Self::ServerKeyMismatch {
                detail: "服务器的密钥与本机保存的不一致，为防冒充已停止同步，数据未受影响。请联系镇综治办核实。".into(),
            },
            Error::Network(_) => Self::Offline {
                detail: "无法连接服务器。记录已保存在本机，有信号后再同步。".into(),
            },
            Error::Server { status, .. } => Self::Server {
                status,
                detail: format!("服务器暂时无法处理（{status}）。记录已保存在本机，请稍后再同步。"),
            },
            Error::Protocol(_) => Self::Server {
                status: 200,
                detail: "服务器的答复无法识别。记录已保存在本机，请稍后再同步或联系镇综治办。".into(),
            },
            Error::Cancelled => Self::Cancelled {
                detail: "同步已取消，已确认的内容已保存。".into(),
            },
            Error::Media(ref m) => Self::PhotoRefused {
                detail: match m {
                    MediaError::TooLarge { .. }
                    | MediaError::TooManyPixels { .. }
                    | MediaError::TooMuchMemory { .. } => {
                        "照片太大，请降低相机分辨率后重新拍摄。"
                    }
                    MediaError::Heic => {
                        "不支持HEIC格式的照片。请把相机设置为“兼容性最佳”（JPEG）后重新拍摄。"
                    }
                    MediaError::UnsupportedFormat => "只能使用JPEG或PNG照片，请重新拍摄。",
                    MediaError::Truncated | MediaError::Corrupt(_) => {
                        "照片文件已损坏或不完整，请重新拍摄。"
                    }
                    MediaError::Encode(_) => "照片处理失败，请重新拍摄；仍不行请联系镇综治办。",
                }
                .into(),
            },
            Error::Signature(ref e) => Self::SignatureRefused {
                detail: match e {
                    SignatureError::Blank { .. } => "签名是空白的或笔画太少，请重新签字。",
                    SignatureError::Invalid { .. } => {
                        "签名数据超出签字板范围，请清除后在签字板内重新签字。"
                    }
                    SignatureError::Decode(_) | SignatureError::Render(_) => {
                        "签名无法保存，请清除后重新签字；仍不行请联系镇综治办。"
                    }
                }
                .into(),
            },
            Error::Incomplete { ref missing } => {
                let missing: Vec<String> = missing
                    .iter()
                    .map(|m| match *m {
                        store::MISSING_EVIDENCE => "signed_paper".to_string(),
                        store::MISSING_PHOTO => "photo".to_string(),
                        other => other.to_string(),
                    })
                    .collect();
                let words: Vec<&str> = missing
                    .iter()
                    .map(|m| match m.as_str() {
                        "signed_paper" => "签字的告知书或承诺书",
                        "photo" => "走访照片",
                        other => other,
                    })
                    .collect();
                Self::VisitIncomplete {
                    detail: format!("走访还不能记为完成，还缺：{}。", words.join("、")),
                    missing,
                }
            }
            Error::NoSuchHousehold(_) => Self::NotFound {
                detail: "本机没有这一户，可能已调整给其他网格员。请先同步。".into(),
            },
            Error::Model(ref m) => match **m {
                model::ModelError::NoSuchVisit(_) => Self::NotFound {
                    detail: "没有这条走访记录。".into(),
                },
                _ => Self::Internal {
                    detail: format!("户档案无法读写，请同步后重试。（技术信息：{technical}）"),
                },
            },
            Error::Invalid { field, ref reason } => Self::Invalid {
                field: field.to_string(),
                reason: reason.clone(),
                detail: invalid_zh(field, reason),
            },
            Error::Evidence(_) => Self::Internal {
                detail: format!("签字记录无法生成，请重试或联系镇综治办。（技术信息：{technical}）"),
            },
        }
    }
}

fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// An argument refused here, before the core: `reason` in English for logs.
fn invalid(field: &str, reason: &str) -> DoorstepError {
    DoorstepError::Invalid {
        field: field.into(),
        reason: reason.into(),
        detail: invalid_zh(field, reason),
    }
}

fn household_id(s: &str) -> FfiResult<HouseholdId> {
    HouseholdId::parse(s).ok_or_else(|| invalid("household", "not a UUID"))
}

fn visit_id(s: &str) -> FfiResult<VisitId> {
    VisitId::parse(s).ok_or_else(|| invalid("visit", "not a UUID"))
}

/// A place, as the phone's location service reports it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Location {
    /// Latitude in degrees, -90..=90 (WGS 84).
    pub lat: f64,
    /// Longitude in degrees, -180..=180 (WGS 84).
    pub lon: f64,
    /// Horizontal accuracy radius in metres, when reported.
    pub accuracy_m: Option<f64>,
}

impl From<Location> for GeoPoint {
    fn from(l: Location) -> Self {
        GeoPoint {
            lat: l.lat,
            lon: l.lon,
            accuracy_m: l.accuracy_m,
        }
    }
}

/// A search of the household list; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct HouseholdFilter {
    /// A resident's name or door number (part of it), or the last digits of a phone.
    pub text: Option<String>,
    /// Latest visit's state: `unvisited`, `in_progress`, `completed`, `nobody_home`,
    /// `refused`, `moved_away`.
    pub status: Option<String>,
    /// Rows to skip.
    pub offset: u32,
    /// Rows to return, 1 to 500; 0 means 100.
    pub limit: u32,
}

/// A row of the household list.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HouseholdRow {
    /// Household ID (UUID).
    pub id: String,
    /// Village.
    pub village: String,
    /// Grid.
    pub grid: String,
    /// Door number.
    pub door_number: String,
    /// Head of household.
    pub head_name: String,
    /// Latest visit's state; `None` when not visited.
    pub status: Option<String>,
    /// Visits recorded.
    pub visits: u32,
}

/// A resident as the visit screen shows them.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ResidentInfo {
    /// Resident ID (UUID), for [`SignInput::signer`].
    pub id: String,
    /// Name.
    pub name: String,
    /// Relation to the head (户主, 配偶, ...).
    pub relation: String,
    /// Whether the resident may sign (18 or over, or age unknown).
    pub may_sign: bool,
    /// Target groups (重点人群).
    pub target_groups: Vec<String>,
}

/// A visit as the app shows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct VisitInfo {
    /// Visit ID (UUID).
    pub id: String,
    /// Account that recorded it.
    pub visitor: String,
    /// Start, device clock, milliseconds since the Unix epoch (UTC).
    pub started_at_ms: i64,
    /// End, same clock; `None` while in progress.
    pub finished_at_ms: Option<i64>,
    /// `completed`, `nobody_home`, `refused`, `moved_away`; `None` while in progress.
    pub outcome: Option<String>,
    /// Photos attached.
    pub photos: u32,
    /// Kinds signed in this visit (`notice`, `pledge`).
    pub signed: Vec<String>,
    /// Whether it was voided.
    pub voided: bool,
    /// Whether this phone recorded it (only those can be continued or voided here).
    pub mine: bool,
    /// The office's review: `received`, `approved`, `has_issues`; `None` before.
    pub review: Option<String>,
    /// The office's reason for `has_issues` (what to rectify).
    pub review_reason: String,
    /// Follow-up calls recorded about it.
    pub follow_up_calls: u32,
}

/// A household with its residents and visits.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HouseholdDetail {
    /// The list row.
    pub row: HouseholdRow,
    /// The household's phone number (the worker's own scope).
    pub phone: String,
    /// Address.
    pub address: String,
    /// Residents.
    pub residents: Vec<ResidentInfo>,
    /// Visits, oldest first.
    pub visits: Vec<VisitInfo>,
}

/// A photo taken in.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PhotoInfo {
    /// SHA-256 of the stored JPEG (lowercase hex).
    pub sha256: String,
    /// Stored size in bytes.
    pub size_bytes: u64,
    /// Width in pixels, after EXIF rotation.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// One sample of a stroke on the signature pad.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct PadPoint {
    /// Horizontal position in surface units (dp or points) from the left edge.
    pub x: f32,
    /// Vertical position in surface units from the top edge.
    pub y: f32,
    /// Milliseconds since the signature's first point.
    pub t_ms: u32,
    /// Pressure 0.0..=1.0 when the platform reports it.
    pub pressure: Option<f32>,
}

/// A signature as drawn on the pad.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SignaturePad {
    /// Surface width in surface units.
    pub surface_width: f32,
    /// Surface height in surface units.
    pub surface_height: f32,
    /// Strokes in drawing order, each its points in order.
    pub strokes: Vec<Vec<PadPoint>>,
}

/// A captured signature, cited when signing.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct CapturedSignature {
    /// SHA-256 of the rendered PNG (640×256 px): pass it to [`SignInput`].
    pub png_sha256: String,
    /// Size of the PNG in bytes.
    pub png_bytes: u64,
}

/// Notice (告知书) or pledge (承诺书).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PaperKind {
    /// 告知书.
    Notice,
    /// 承诺书.
    Pledge,
}

/// The notice or pledge text in force, as the household reads it before signing.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PaperText {
    /// Title shown above the text.
    pub title: String,
    /// The text, paragraphs separated by blank lines.
    pub body: String,
    /// Version number, from 1.
    pub version: u32,
    /// First day in force, `YYYY-MM-DD`, town time (UTC+08:00).
    pub effective_from: String,
}

/// A resident's witnessed mark (for one who cannot write).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct WitnessMark {
    /// Witness's name, 1 to 50 characters.
    pub name: String,
    /// Why a mark, 1 to 200 characters.
    pub reason: String,
    /// The witness's own captured signature.
    pub signature_png_sha256: String,
}

/// What to sign.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SignInput {
    /// Notice or pledge.
    pub kind: PaperKind,
    /// The resident who signs ([`ResidentInfo::id`]).
    pub signer: String,
    /// Their captured signature (or mark, with `witness`).
    pub signature_png_sha256: String,
    /// For a witnessed mark.
    pub witness: Option<WitnessMark>,
    /// Where the phone was; the visit's place when `None`.
    pub location: Option<Location>,
}

/// What happened at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Outcome {
    /// The frauds were explained and a paper signed.
    Completed,
    /// Nobody opened.
    NobodyHome,
    /// The household refused.
    Refused,
    /// The household moved away.
    MovedAway,
}

impl From<Outcome> for VisitOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Completed => VisitOutcome::Completed,
            Outcome::NobodyHome => VisitOutcome::NobodyHome,
            Outcome::Refused => VisitOutcome::Refused,
            Outcome::MovedAway => VisitOutcome::MovedAway,
        }
    }
}

/// How a visit ends.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct VisitEnd {
    /// Outcome.
    pub outcome: Outcome,
    /// Why it did not complete; required for every outcome but completed.
    pub outcome_reason: String,
    /// End, device clock, milliseconds since the Unix epoch (UTC).
    pub finished_at_ms: i64,
    /// Target groups reached.
    pub target_groups_reached: Vec<String>,
    /// Remarks, at most 2,000 characters.
    pub remarks: String,
}

/// Where a sync stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// Changes sent and accepted.
    pub changes_sent: u64,
    /// Changes refused by the server (kept on the phone, see [`DoorstepStore::refused`]).
    pub changes_refused: u64,
    /// Household updates received.
    pub households_received: u64,
    /// Photos and signatures uploaded.
    pub files_uploaded: u64,
    /// Files this sync uploads in all.
    pub files_total: u64,
    /// Requests made.
    pub round_trips: u64,
}

impl From<SyncProgress> for SyncReport {
    fn from(p: SyncProgress) -> Self {
        Self {
            changes_sent: p.changes_sent,
            changes_refused: p.changes_rejected,
            households_received: p.docs_received,
            files_uploaded: p.blobs_uploaded,
            files_total: p.blobs_total,
            round_trips: p.round_trips,
        }
    }
}

/// What waits to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct Pending {
    /// Changes not yet accepted by the server.
    pub changes: u64,
    /// Photos and signatures not yet uploaded.
    pub files: u64,
}

/// A field with concurrent values.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ConflictInfo {
    /// Household ID.
    pub household: String,
    /// Field path from the document root.
    pub path: Vec<String>,
    /// Every value, the one shown first.
    pub values: Vec<String>,
}

/// A change the server refused, kept on the phone.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RefusedInfo {
    /// Household (document) ID.
    pub household: String,
    /// The server's reason.
    pub reason: String,
}

/// A finished visit a supervisor may check by phone.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FollowUpTarget {
    /// Household ID.
    pub household: String,
    /// Visit ID.
    pub visit: String,
    /// Door number.
    pub door_number: String,
    /// Head of household.
    pub head_name: String,
    /// The number to call (the household's, or its head's).
    pub phone: String,
    /// Outcome of the visit.
    pub outcome: String,
    /// End of the visit, milliseconds since the Unix epoch (UTC).
    pub finished_at_ms: i64,
}

/// A follow-up sample drawn on the phone ([`DoorstepStore::draw_follow_up_sample`]).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FollowUpSample {
    /// The seed, decimal: the same seed draws the same sample again.
    pub seed: String,
    /// How many households were candidates.
    pub candidates: u32,
    /// The households drawn, in the order drawn.
    pub drawn: Vec<FollowUpTarget>,
}

/// A rectification task (整改) for the field team.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RectificationInfo {
    /// Task ID.
    pub id: String,
    /// Household ID.
    pub household: String,
    /// The visit found wanting.
    pub visit: String,
    /// `review` (the office's review) or `follow_up` (a follow-up call).
    pub source: String,
    /// What is wrong, in the office's or supervisor's words.
    pub reason: String,
    /// When it was opened, milliseconds since the Unix epoch (UTC).
    pub opened_at_ms: i64,
    /// The account that answers for it.
    pub assignee: String,
    /// `open`, or `fixed` (waiting for the office).
    pub state: String,
    /// The visit named as the fix, once fixed.
    pub fix_visit: Option<String>,
}

/// One village's or unit's marks on a directive.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DirectivePlace {
    /// Village or unit.
    pub place: String,
    /// When acknowledged (签收), milliseconds since the Unix epoch (UTC).
    pub acknowledged_at_ms: Option<i64>,
    /// When the push (推送) was confirmed, milliseconds since the Unix epoch (UTC).
    pub pushed_at_ms: Option<i64>,
}

/// A directive, work bulletin or warning on a liaison's phone.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DirectiveInfo {
    /// Directive ID.
    pub id: String,
    /// `directive`, `bulletin` or `warning`.
    pub category: String,
    /// Its Chinese name: 指令, 工作通报, 预警.
    pub category_label: String,
    /// Title.
    pub title: String,
    /// Text.
    pub body: String,
    /// When published, milliseconds since the Unix epoch (UTC).
    pub published_at_ms: i64,
    /// Acknowledge by then (UTC ms).
    pub ack_due_ms: i64,
    /// Push on by then (UTC ms).
    pub push_due_ms: i64,
    /// Its villages and units with their marks.
    pub places: Vec<DirectivePlace>,
}

/// A follow-up call's result.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct FollowUpResult {
    /// Visit checked.
    pub visit: String,
    /// When called, milliseconds since the Unix epoch (UTC).
    pub called_at_ms: i64,
    /// Whether anyone answered.
    pub reached: bool,
    /// Whether the household confirms the visit (when reached).
    pub confirmed: Option<bool>,
    /// Whether it understood (when reached).
    pub understood: Option<bool>,
    /// Remarks, at most 500 characters.
    pub remarks: String,
}

/// Told after each answer of a sync.
#[uniffi::export(callback_interface)]
pub trait SyncListener: Send + Sync {
    /// Where the sync stands now.
    fn on_progress(&self, report: SyncReport);
}

/// Cancels a sync in progress: the sync stops before its next request and keeps what
/// the server confirmed.
#[derive(Debug, Default, uniffi::Object)]
pub struct SyncCancel {
    flag: AtomicBool,
}

#[uniffi::export]
impl SyncCancel {
    /// A token not yet cancelled.
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Asks the sync to stop.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Whether [`SyncCancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

/// The phone's store, opened with its keystore key.
#[derive(Debug, uniffi::Object)]
pub struct DoorstepStore {
    store: Mutex<Store>,
    /// Held for a whole sync: a second sync waits for the first, so one outbox is
    /// never sent twice at once.
    syncing: Mutex<()>,
}

impl DoorstepStore {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock rolled back its transaction; the store is
        // consistent, so the lock is taken over rather than failing every later call.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[uniffi::export]
impl DoorstepStore {
    /// Opens (creating when absent) the store file at `path`, encrypted under `key`:
    /// exactly 32 bytes that the platform keystore keeps for this phone.
    ///
    /// Errors: `WrongKey` when the file does not open with this key; `Invalid` for a
    /// key that is not 32 bytes or an empty path; `Storage`.
    #[uniffi::constructor]
    pub fn open(path: String, key: Vec<u8>) -> FfiResult<Arc<Self>> {
        let key = Zeroizing::new(key);
        let key: Zeroizing<[u8; STORE_KEY_BYTES]> = Zeroizing::new(
            key.as_slice()
                .try_into()
                .map_err(|_| invalid("key", "the key is not 32 bytes"))?,
        );
        let store = Store::open_encrypted(path, &key)?;
        Ok(Arc::new(Self {
            store: Mutex::new(store),
            syncing: Mutex::new(()),
        }))
    }

    /// The notice or pledge text in force today, to show before the household signs.
    ///
    /// Errors: `Invalid` (field `template`) before the first sync brought the
    /// templates, or when none is in force.
    pub fn paper_text(&self, kind: PaperKind) -> FfiResult<PaperText> {
        let id = match kind {
            PaperKind::Notice => EvidenceKind::Notice,
            PaperKind::Pledge => EvidenceKind::Pledge,
        };
        let t = self.lock().template_in_force(id.as_str())?;
        Ok(PaperText {
            title: t.title,
            body: t.body,
            version: t.version,
            effective_from: t.effective_from,
        })
    }

    /// This phone's device ID (UUID).
    pub fn device_id(&self) -> String {
        self.lock().device_id().to_string()
    }

    /// The account this phone is enrolled as; `None` before enrolment.
    pub fn account(&self) -> FfiResult<Option<String>> {
        Ok(self.lock().setting("username")?)
    }

    /// Enrols the phone from the office's scanned QR code (server, one-time code and
    /// the server key's pin).
    ///
    /// Errors: `Invalid` for a code that is not an enrolment code; `Unauthorized`;
    /// `ServerKeyMismatch`; `Offline`; `Server`.
    pub fn enrol_scanned(&self, scanned: String) -> FfiResult<()> {
        let payload = sync::EnrolPayload::parse(&scanned)?;
        let client = client_for(&payload.server, payload.pin.as_deref())?;
        // The network call runs without the lock; the result is written under it.
        let request = sync::EnrolRequest::for_store(&self.lock(), &payload.code);
        let answer = client.redeem(&request)?;
        Ok(client.keep_enrolment(&mut self.lock(), &answer)?)
    }

    /// Enrols the phone with a code typed by hand, against `server_url`, with the
    /// server key's pin (`sha256/…`) when the office gave one.
    ///
    /// Errors: as [`DoorstepStore::enrol_scanned`].
    pub fn enrol_with_code(
        &self,
        server_url: String,
        code: String,
        pin: Option<String>,
    ) -> FfiResult<()> {
        let client = client_for(&server_url, pin.as_deref())?;
        let request = sync::EnrolRequest::for_store(&self.lock(), &code);
        let answer = client.redeem(&request)?;
        Ok(client.keep_enrolment(&mut self.lock(), &answer)?)
    }

    /// Households on this phone matching `filter`, by grid and door number.
    ///
    /// Errors: `Invalid` for a search over 100 characters, an unknown status or a
    /// limit over 500.
    pub fn households(&self, filter: HouseholdFilter) -> FfiResult<Vec<HouseholdRow>> {
        if filter.limit > 500 {
            return Err(invalid("limit", "at most 500 rows a page"));
        }
        let rows = self.lock().households(&HouseholdQuery {
            text: filter.text,
            status: filter.status,
            offset: filter.offset,
            limit: filter.limit,
        })?;
        Ok(rows.into_iter().map(row).collect())
    }

    /// One household with its residents and visits.
    ///
    /// Errors: `NotFound`; `Invalid` for an ID that is not a UUID.
    pub fn household(&self, id: String) -> FfiResult<HouseholdDetail> {
        let id = household_id(&id)?;
        let store = self.lock();
        let h = store.household(id)?;
        let device = store.device_id().to_string();
        let summary = store.household_summary(id)?;
        drop(store);
        let row = summary.map(row).unwrap_or_else(|| HouseholdRow {
            id: h.id.clone(),
            village: h.village.clone(),
            grid: h.grid.clone(),
            door_number: h.door_number.clone(),
            head_name: h.head_name.clone(),
            status: None,
            visits: h.visits.len() as u32,
        });
        Ok(detail(&h, row, &device))
    }

    /// Starts a visit at the door; returns its ID.
    ///
    /// Errors: `NotFound`; `Invalid` for a time or place out of range.
    pub fn start_visit(
        &self,
        household: String,
        started_at_ms: i64,
        location: Option<Location>,
    ) -> FfiResult<String> {
        let id = self.lock().start_visit(
            household_id(&household)?,
            VisitStart {
                started_at_ms,
                location: location.map(Into::into),
            },
        )?;
        Ok(id.to_string())
    }

    /// Takes in a photo (JPEG or PNG bytes as the camera gave them): rotated upright,
    /// resized, re-encoded without EXIF, and attached to the visit.
    ///
    /// Errors: `PhotoRefused` (the visit is unchanged); `NotFound`; `Invalid`.
    pub fn add_photo(
        &self,
        household: String,
        visit: String,
        photo: Vec<u8>,
    ) -> FfiResult<PhotoInfo> {
        let household = household_id(&household)?;
        let visit = visit_id(&visit)?;
        // Decoding and resizing take a while; they run without the lock.
        let intake =
            crate::media::intake_photo(&photo, &Default::default()).map_err(Error::from)?;
        let p = self.lock().attach_intake(household, visit, &intake)?;
        Ok(PhotoInfo {
            sha256: p.sha256,
            size_bytes: p.size_bytes,
            width: p.width,
            height: p.height,
        })
    }

    /// Checks and stores a signature drawn on the pad. `mark` takes a resident's mark
    /// (a cross or a thumbprint stroke) under the lighter check; it must then be
    /// signed with a witness.
    ///
    /// Errors: `SignatureRefused` for a blank or too-thin signature, or one out of the
    /// pad's bounds.
    pub fn capture_signature(&self, pad: SignaturePad, mark: bool) -> FfiResult<CapturedSignature> {
        let strokes = SignatureStrokes {
            surface_width: pad.surface_width,
            surface_height: pad.surface_height,
            strokes: pad
                .strokes
                .into_iter()
                .map(|points| Stroke {
                    points: points
                        .into_iter()
                        .map(|p| StrokePoint {
                            x: p.x,
                            y: p.y,
                            t_ms: p.t_ms,
                            pressure: p.pressure,
                        })
                        .collect(),
                })
                .collect(),
        };
        let rule = if mark {
            InkRule::Mark
        } else {
            InkRule::Signature
        };
        let c = self.lock().capture_signature(&strokes, rule)?;
        Ok(CapturedSignature {
            png_sha256: c.png_sha256,
            png_bytes: c.png_bytes,
        })
    }

    /// Signs the notice or pledge in force for this visit, by a resident, with a
    /// captured signature; returns the record's ID.
    ///
    /// Errors: `Invalid` naming the rule broken (a minor signing, a signature not
    /// captured here, a mark without a witness); `NotFound`.
    pub fn sign(&self, household: String, visit: String, input: SignInput) -> FfiResult<String> {
        let signer = ResidentId::parse(&input.signer)
            .ok_or_else(|| invalid("signer", "not a resident ID"))?;
        let id = self.lock().sign_evidence(
            household_id(&household)?,
            visit_id(&visit)?,
            SignRequest {
                kind: match input.kind {
                    PaperKind::Notice => EvidenceKind::Notice,
                    PaperKind::Pledge => EvidenceKind::Pledge,
                },
                template_id: None,
                signer,
                signature_png_sha256: input.signature_png_sha256,
                witness: input.witness.map(|w| WitnessInput {
                    name: w.name,
                    reason: w.reason,
                    signature_png_sha256: w.signature_png_sha256,
                }),
                location: input.location.map(Into::into),
            },
        )?;
        Ok(id.to_string())
    }

    /// Finishes a visit. A completed visit needs a signed notice or pledge and a photo
    /// (campaign rule; `VisitIncomplete` names what is missing).
    ///
    /// Errors: `VisitIncomplete`; `Invalid` (a reason missing, a time before the
    /// start, a visit already finished); `NotFound`.
    pub fn finish_visit(&self, household: String, visit: String, end: VisitEnd) -> FfiResult<()> {
        Ok(self.lock().finish_visit(
            household_id(&household)?,
            visit_id(&visit)?,
            VisitFinish {
                outcome: end.outcome.into(),
                outcome_reason: end.outcome_reason,
                finished_at_ms: end.finished_at_ms,
                target_groups_reached: end.target_groups_reached,
                remarks: end.remarks,
            },
        )?)
    }

    /// Voids a visit recorded on this phone by mistake, with a reason (1 to 200
    /// characters). The visit stays, marked void.
    ///
    /// Errors: `Invalid` (no reason, already voided, another phone's visit); `NotFound`.
    pub fn void_visit(&self, household: String, visit: String, reason: String) -> FfiResult<()> {
        Ok(self
            .lock()
            .void_visit(household_id(&household)?, visit_id(&visit)?, &reason)?)
    }

    /// Syncs with the server: sends what waits, receives what changed, uploads photos.
    /// `listener` hears after each answer; `cancel` stops it before the next request.
    /// The store stays usable meanwhile: the lock is held only to read or apply.
    ///
    /// A second sync called meanwhile waits for this one to end, then runs.
    ///
    /// Errors: `NotEnrolled`; `Unauthorized`; `ServerKeyMismatch`; `Offline`; `Server`;
    /// `Cancelled`. In every case what the server confirmed is kept and the rest waits.
    pub fn sync_now(
        &self,
        listener: Box<dyn SyncListener>,
        cancel: Arc<SyncCancel>,
    ) -> FfiResult<SyncReport> {
        let _one_at_a_time = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let done = sync::sync_shared(&self.store, Some(&cancel.flag), |p| {
            listener.on_progress((*p).into())
        })?;
        Ok(done.into())
    }

    /// What waits to be sent.
    pub fn pending(&self) -> FfiResult<Pending> {
        let store = self.lock();
        Ok(Pending {
            changes: store.outbox()?.len() as u64,
            files: store.pending_blobs()?.len() as u64,
        })
    }

    /// Fields that hold concurrent values (two phones wrote them offline); the office
    /// resolves them.
    pub fn conflicts(&self) -> FfiResult<Vec<ConflictInfo>> {
        Ok(self
            .lock()
            .conflicts()?
            .into_iter()
            .map(|c| ConflictInfo {
                household: c.household.to_string(),
                path: c.conflict.path,
                values: c.conflict.values.into_iter().map(|v| v.value).collect(),
            })
            .collect())
    }

    /// Changes the server refused, with its reasons; they stay on the phone.
    pub fn refused(&self) -> FfiResult<Vec<RefusedInfo>> {
        Ok(self
            .lock()
            .refused_changes()?
            .into_iter()
            .map(|r| RefusedInfo {
                household: r.doc.to_string(),
                reason: r.reason,
            })
            .collect())
    }

    /// For a supervisor: finished visits on this phone that no follow-up call has
    /// checked yet, with the number to call, at most `limit` (1 to 500).
    pub fn follow_up_targets(&self, limit: u32) -> FfiResult<Vec<FollowUpTarget>> {
        if limit == 0 || limit > 500 {
            return Err(invalid("limit", "1 to 500"));
        }
        let store = self.lock();
        let mut out = Vec::new();
        let mut offset = 0;
        'pages: loop {
            let page = store.households(&HouseholdQuery {
                offset,
                limit: 500,
                ..Default::default()
            })?;
            if page.is_empty() {
                break;
            }
            offset += page.len() as u32;
            for r in page {
                let h = store.household(r.id)?;
                let checked: Vec<&str> = h
                    .follow_up_calls
                    .values()
                    .map(|c| c.visit_id.as_str())
                    .collect();
                for vid in h.visits.keys() {
                    if checked.contains(&vid.as_str()) {
                        continue;
                    }
                    let Some(t) = target(&h, vid) else {
                        continue;
                    };
                    out.push(t);
                    if out.len() as u32 >= limit {
                        break 'pages;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Records a supervisor's follow-up call; returns its ID. Sent at the next sync.
    ///
    /// Errors: `NotEnrolled`; `NotFound`; `Invalid` (a visit not finished, answers
    /// given when nobody was reached, remarks too long).
    pub fn record_follow_up_call(
        &self,
        household: String,
        result: FollowUpResult,
    ) -> FfiResult<String> {
        Ok(self.lock().record_follow_up_call(
            household_id(&household)?,
            FollowUpInput {
                visit: visit_id(&result.visit)?,
                called_at_ms: result.called_at_ms,
                reached: result.reached,
                confirmed: result.confirmed,
                understood: result.understood,
                remarks: result.remarks,
            },
        )?)
    }
}

/// The follow-up target for visit `vid` of `h`: `None` unless it is finished and not
/// voided. The number to call is the household's, or its head's.
fn target(h: &model::Household, vid: &str) -> Option<FollowUpTarget> {
    let v = h.visits.get(vid)?;
    let (Some(outcome), Some(finished)) = (&v.outcome, v.finished_at_ms) else {
        return None;
    };
    if v.voided.is_some() {
        return None;
    }
    let phone = if h.phone.is_empty() {
        h.residents
            .values()
            .find(|p| p.name == h.head_name)
            .and_then(|p| p.phone.clone())
            .unwrap_or_default()
    } else {
        h.phone.clone()
    };
    Some(FollowUpTarget {
        household: h.id.clone(),
        visit: vid.to_string(),
        door_number: h.door_number.clone(),
        head_name: h.head_name.clone(),
        phone,
        outcome: outcome.as_str().to_string(),
        finished_at_ms: finished,
    })
}

#[uniffi::export]
impl DoorstepStore {
    /// Draws a follow-up sample (督导抽查) among the households of `village` (and
    /// `grid`) on this phone whose latest completed visit has no call yet: `percent`
    /// (1-100) or `count` households, exactly one of the two; `seed` (decimal) draws a
    /// sample drawn before again, none draws a fresh one.
    ///
    /// Errors: `Invalid` (field `size` or `seed`).
    pub fn draw_follow_up_sample(
        &self,
        village: String,
        grid: Option<String>,
        percent: Option<u32>,
        count: Option<u32>,
        seed: Option<String>,
    ) -> FfiResult<FollowUpSample> {
        let size = match (percent, count) {
            (Some(p), None) => crate::sampling::SampleSize::Percent(p),
            (None, Some(c)) => crate::sampling::SampleSize::Count(c),
            _ => return Err(invalid("size", "give a percentage or a count, not both")),
        };
        let seed = seed
            .map(|s| s.trim().parse::<u64>())
            .transpose()
            .map_err(|_| invalid("seed", "a seed is a whole number"))?;
        let store = self.lock();
        let sample = store.draw_follow_up_sample(&village, grid.as_deref(), size, seed)?;
        let mut drawn = Vec::with_capacity(sample.drawn.len());
        for d in &sample.drawn {
            let h = store.household(d.household)?;
            drawn.extend(target(&h, &d.visit.to_string()));
        }
        Ok(FollowUpSample {
            seed: sample.seed.to_string(),
            candidates: sample.candidates as u32,
            drawn,
        })
    }

    /// The rectification tasks (整改) on this phone not yet closed: open ones first,
    /// then those fixed and waiting for the office.
    ///
    /// Errors: `Storage`.
    pub fn rectifications(&self) -> FfiResult<Vec<RectificationInfo>> {
        Ok(self
            .lock()
            .rectifications()?
            .into_iter()
            .map(|t| RectificationInfo {
                id: t.id,
                household: t.household.to_string(),
                visit: t.visit,
                source: t.source,
                reason: t.reason,
                opened_at_ms: t.opened_at_ms,
                assignee: t.assignee,
                state: t.state,
                fix_visit: t.fix_visit,
            })
            .collect())
    }

    /// Records the fix of rectification `task`: `visit` is the completed visit (new,
    /// or the original, recorded on this phone) that puts it right; `note` says what
    /// was done (1-500 characters). Sent at the next sync; the office reviews it again.
    ///
    /// Errors: `NotEnrolled`; `NotFound`; `Invalid` (field `task`, `visit` or `note`).
    pub fn fix_rectification(
        &self,
        household: String,
        task: String,
        visit: String,
        note: String,
    ) -> FfiResult<()> {
        Ok(self.lock().fix_rectification(
            household_id(&household)?,
            &task,
            visit_id(&visit)?,
            &note,
        )?)
    }

    /// The directives on this phone, newest first.
    ///
    /// Errors: `Storage`.
    pub fn directives(&self) -> FfiResult<Vec<DirectiveInfo>> {
        Ok(self
            .lock()
            .directives()?
            .into_iter()
            .map(|d| DirectiveInfo {
                category_label: d.category().map_or("通知", |c| c.label_zh()).to_string(),
                places: d
                    .places
                    .iter()
                    .map(|p| DirectivePlace {
                        place: p.clone(),
                        acknowledged_at_ms: d.acknowledgements.get(p).map(|m| m.at_ms),
                        pushed_at_ms: d.pushes.get(p).map(|m| m.at_ms),
                    })
                    .collect(),
                id: d.id,
                category: d.category,
                title: d.title,
                body: d.body,
                published_at_ms: d.published_at_ms,
                ack_due_ms: d.ack_due_ms,
                push_due_ms: d.push_due_ms,
            })
            .collect())
    }

    /// Acknowledges (签收) directive `id` for `place`, one of the liaison's villages or
    /// units. Sent at the next sync.
    ///
    /// Errors: `NotEnrolled`; `Invalid` (field `directive` or `place`).
    pub fn acknowledge_directive(&self, id: String, place: String) -> FfiResult<()> {
        let id = uuid::Uuid::parse_str(&id).map_err(|_| invalid("directive", "not an ID"))?;
        Ok(self
            .lock()
            .mark_directive(id, &place, crate::directive::MarkKind::Acknowledged)?)
    }

    /// Confirms directive `id` was pushed on (推送) to `place`'s group chats; it must be
    /// acknowledged first. Sent at the next sync.
    ///
    /// Errors: `NotEnrolled`; `Invalid` (field `directive`, `place` or `kind`).
    pub fn confirm_directive_push(&self, id: String, place: String) -> FfiResult<()> {
        let id = uuid::Uuid::parse_str(&id).map_err(|_| invalid("directive", "not an ID"))?;
        Ok(self
            .lock()
            .mark_directive(id, &place, crate::directive::MarkKind::Pushed)?)
    }
}

fn client_for(server: &str, pin: Option<&str>) -> FfiResult<sync::Client> {
    Ok(match pin {
        Some(pin) => sync::Client::with_pin(server, pin)?,
        None => sync::Client::new(server),
    })
}

fn row(r: store::HouseholdSummary) -> HouseholdRow {
    HouseholdRow {
        id: r.id.to_string(),
        village: r.village,
        grid: r.grid,
        door_number: r.door_number,
        head_name: r.head_name,
        status: r.status,
        visits: r.visits,
    }
}

fn detail(h: &model::Household, row: HouseholdRow, device: &str) -> HouseholdDetail {
    let now = store::now_ms();
    let residents = h
        .residents
        .iter()
        .map(|(id, r)| ResidentInfo {
            id: id.clone(),
            name: r.name.clone(),
            relation: r.relation.clone(),
            may_sign: !store::is_minor(r, now),
            target_groups: r.target_groups.clone(),
        })
        .collect();
    let mut visits: Vec<VisitInfo> = h
        .visits
        .iter()
        .map(|(id, v)| {
            let signed = h
                .evidence
                .values()
                .filter_map(|e| EvidenceRecord::from_canonical(&e.record.0).ok())
                .filter(|r| r.visit.to_string() == *id)
                .map(|r| r.kind.as_str().to_string())
                .collect();
            let review = h.reviews.get(id);
            VisitInfo {
                id: id.clone(),
                visitor: v.visitor.clone(),
                started_at_ms: v.started_at_ms,
                finished_at_ms: v.finished_at_ms,
                outcome: v.outcome.as_ref().map(|o| o.as_str().to_string()),
                photos: v.photos.len() as u32,
                signed,
                voided: v.voided.is_some(),
                mine: v.device_id == device,
                review: review.map(|r| r.state.clone()),
                review_reason: review.map(|r| r.reason.clone()).unwrap_or_default(),
                follow_up_calls: h
                    .follow_up_calls
                    .values()
                    .filter(|c| c.visit_id == *id)
                    .count() as u32,
            }
        })
        .collect();
    visits.sort_by_key(|v| v.started_at_ms);
    HouseholdDetail {
        row,
        phone: h.phone.clone(),
        address: h.address.clone(),
        residents,
        visits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Household, Resident};

    const KEY: [u8; 32] = [9; 32];

    fn opened(dir: &std::path::Path) -> (Arc<DoorstepStore>, String, String) {
        let path = dir.join("phone.db").display().to_string();
        let store = DoorstepStore::open(path, KEY.to_vec()).unwrap();
        let id = HouseholdId::new();
        let mut h = Household::new(id, "东坡村", "东坡村第1网格", "东坡村7号");
        h.head_name = "李四".into();
        let head = ResidentId::new();
        h.residents.insert(
            head.to_string(),
            Resident {
                name: "李四".into(),
                relation: "户主".into(),
                birth_date: Some("1970-01-01".into()),
                ..Default::default()
            },
        );
        let doc = model::new_household_doc(&h, automerge::ActorId::random(), 0).unwrap();
        store.lock().insert_household_doc(&doc.save(), id).unwrap();
        (store, id.to_string(), head.to_string())
    }

    fn is_chinese(s: &str) -> bool {
        s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
    }

    #[test]
    fn every_core_error_maps_to_a_coded_variant_with_a_chinese_sentence() {
        let io = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let cases: Vec<(Error, &str)> = vec![
            (Error::WrongKey, "wrong_key"),
            (Error::Storage(io), "storage_full"),
            (Error::Storage(rusqlite::Error::InvalidQuery), "storage"),
            (
                Error::StoreTooNew {
                    found: 9,
                    supported: 5,
                },
                "storage",
            ),
            (Error::NotSignedIn, "not_enrolled"),
            (Error::Unauthorized("x".into()), "unauthorized"),
            (Error::KeyNotRegistered, "unauthorized"),
            (
                Error::PinMismatch {
                    pinned: "a".into(),
                    presented: "b".into(),
                },
                "server_key_mismatch",
            ),
            (Error::Network("refused".into()), "offline"),
            (
                Error::Server {
                    status: 503,
                    code: String::new(),
                    message: String::new(),
                },
                "server",
            ),
            (Error::Cancelled, "cancelled"),
            (
                Error::Incomplete {
                    missing: vec![store::MISSING_EVIDENCE, store::MISSING_PHOTO],
                },
                "visit_incomplete",
            ),
            (Error::NoSuchHousehold("x".into()), "not_found"),
            (
                Error::Invalid {
                    field: "remarks",
                    reason: "too long".into(),
                },
                "invalid",
            ),
        ];
        for (core, code) in cases {
            let e = DoorstepError::from(core);
            assert_eq!(e.code(), code, "{e:?}");
            assert!(is_chinese(&e.detail()), "{e:?}");
            assert_eq!(e.to_string(), e.detail());
        }
    }

    /// Whether `s` holds an English word (three lower-case ASCII letters in a row)
    /// outside the technical note that storage and internal errors end with.
    fn has_english(s: &str) -> bool {
        let shown = s.split("（技术信息：").next().unwrap_or(s);
        shown
            .as_bytes()
            .windows(3)
            .any(|w| w.iter().all(u8::is_ascii_lowercase))
    }

    /// Every refusal a worker can meet reads as a Chinese sentence with no English in
    /// it: each argument and rule the core names, each photo and signature refusal.
    #[test]
    fn refusals_read_in_chinese_without_english() {
        let rules = [
            ("text", "a search is at most 100 characters"),
            ("status", "one of unvisited, completed"),
            ("visit", "the visit was started on another phone"),
            ("visit", "the visit is already voided"),
            ("visit", "the visit is already finished"),
            ("visit", "only a finished, not voided visit is checked"),
            ("visit", "not a UUID"),
            ("outcome_reason", "say why the visit did not complete"),
            ("outcome_reason", "a reason is at most 200 characters"),
            (
                "started_at_ms",
                "the start is not between the years 2000 and 2100",
            ),
            ("finished_at_ms", "the visit ends before it starts"),
            ("finished_at_ms", "the visit lasts more than 24 hours"),
            ("location.lat", "latitude is -90 to 90 degrees"),
            (
                "signer",
                "the signer is under 18; the head or another adult signs",
            ),
            ("signer", "not a resident of this household"),
            (
                "signature",
                "a mark needs a witness; or capture a full signature",
            ),
            (
                "witness.signature",
                "the witness signs in full, not with a mark",
            ),
            (
                "witness.signature",
                "the witness's signature is the signer's own",
            ),
            ("witness.name", "1 to 50 characters, no control characters"),
            (
                "template",
                "no templates on this phone yet; sync once with signal",
            ),
            ("template", "no version in force"),
            (
                "enrolment code",
                "this QR code is not a Doorstep enrolment code",
            ),
            ("pin", "not sha256/ and 44 base64 characters"),
            ("phone", "a phone number is 7 to 15 digits"),
            ("reached", "a reached household answers both questions"),
            ("something new", "a rule added later"),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (field, reason) in rules {
            let e = DoorstepError::from(Error::Invalid {
                field: Box::leak(field.to_string().into_boxed_str()),
                reason: reason.into(),
            });
            let d = e.detail();
            assert!(is_chinese(&d) && !has_english(&d), "{field}: {d}");
            let DoorstepError::Invalid { reason: kept, .. } = &e else {
                panic!("{e:?}")
            };
            assert_eq!(kept, reason, "the English reason is kept for logs");
            seen.insert(d);
        }
        assert!(seen.len() >= 24, "distinct rules read distinctly: {seen:?}");
        let media = [
            MediaError::Heic,
            MediaError::Truncated,
            MediaError::UnsupportedFormat,
            MediaError::Corrupt("bad huffman".into()),
        ];
        for m in media {
            let d = DoorstepError::from(Error::Media(m)).detail();
            assert!(is_chinese(&d) && !has_english(&d), "{d}");
        }
        let sig = SignatureError::Invalid {
            field: "strokes[0].points[3].x".into(),
            reason: "out of the pad".into(),
        };
        let d = DoorstepError::from(Error::Signature(sig)).detail();
        assert!(d.contains("超出签字板范围") && !has_english(&d), "{d}");
    }

    #[test]
    fn a_whole_visit_through_the_surface_with_its_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let (store, h, head) = opened(dir.path());
        let rows = store
            .households(HouseholdFilter {
                text: Some("李四".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, None);
        let v = store.start_visit(h.clone(), store::now_ms(), None).unwrap();
        let err = store
            .finish_visit(
                h.clone(),
                v.clone(),
                VisitEnd {
                    outcome: Outcome::Completed,
                    outcome_reason: String::new(),
                    finished_at_ms: store::now_ms() + 1,
                    target_groups_reached: vec![],
                    remarks: String::new(),
                },
            )
            .unwrap_err();
        let DoorstepError::VisitIncomplete { missing, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(missing, &["signed_paper", "photo"]);
        let err = store
            .add_photo(h.clone(), v.clone(), vec![0xFF, 0xD8, 0xFF, 0])
            .unwrap_err();
        assert_eq!(err.code(), "photo_refused");
        let blank = SignaturePad {
            surface_width: 400.0,
            surface_height: 150.0,
            strokes: vec![],
        };
        assert_eq!(
            store.capture_signature(blank, false).unwrap_err().code(),
            "signature_refused"
        );
        let pad = SignaturePad {
            surface_width: 400.0,
            surface_height: 150.0,
            strokes: vec![
                (0..40)
                    .map(|i| PadPoint {
                        x: 20.0 + i as f32 * 8.0,
                        y: 60.0 + ((i as f32) * 0.7).sin() * 30.0,
                        t_ms: i * 15,
                        pressure: Some(0.5),
                    })
                    .collect(),
            ],
        };
        let sig = store.capture_signature(pad, false).unwrap();
        // No notice template is on this phone (no organisation document): a clear
        // error, and the visit stays open.
        let err = store
            .sign(
                h.clone(),
                v.clone(),
                SignInput {
                    kind: PaperKind::Notice,
                    signer: head.clone(),
                    signature_png_sha256: sig.png_sha256,
                    witness: None,
                    location: None,
                },
            )
            .unwrap_err();
        assert!(is_chinese(&err.detail()), "{err:?}");
        let DoorstepError::Invalid { field, .. } = store.paper_text(PaperKind::Pledge).unwrap_err()
        else {
            panic!("no templates here yet")
        };
        assert_eq!(field, "template");
        let detail = store.household(h.clone()).unwrap();
        assert_eq!(detail.visits.len(), 1);
        assert_eq!(detail.visits[0].outcome, None);
        assert!(detail.visits[0].mine);
        assert!(detail.residents[0].may_sign);
        store
            .finish_visit(
                h.clone(),
                v,
                VisitEnd {
                    outcome: Outcome::NobodyHome,
                    outcome_reason: "无人应门".into(),
                    finished_at_ms: store::now_ms() + 1,
                    target_groups_reached: vec![],
                    remarks: String::new(),
                },
            )
            .unwrap();
        assert!(store.pending().unwrap().changes >= 2);
        let err = store
            .sync_now(Box::new(Silent), SyncCancel::new())
            .unwrap_err();
        assert_eq!(err.code(), "not_enrolled");
        assert_eq!(
            store.household("not a uuid".into()).unwrap_err().code(),
            "invalid"
        );
        assert_eq!(
            store
                .household(HouseholdId::new().to_string())
                .unwrap_err()
                .code(),
            "not_found"
        );
    }

    /// The detail of a household far down a long list shows its own status.
    #[test]
    fn a_household_past_the_first_page_shows_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = opened(dir.path());
        let mut last = None;
        for n in 0..150 {
            let id = HouseholdId::new();
            let h = Household::new(
                id,
                "东坡村",
                "东坡村第2网格",
                &format!("东坡村{}号", 100 + n),
            );
            let doc = model::new_household_doc(&h, automerge::ActorId::random(), 0).unwrap();
            store.lock().insert_household_doc(&doc.save(), id).unwrap();
            last = Some(id.to_string());
        }
        let last = last.unwrap();
        let v = store
            .start_visit(last.clone(), store::now_ms(), None)
            .unwrap();
        store
            .finish_visit(
                last.clone(),
                v,
                VisitEnd {
                    outcome: Outcome::NobodyHome,
                    outcome_reason: "无人应门".into(),
                    finished_at_ms: store::now_ms() + 1,
                    target_groups_reached: vec![],
                    remarks: String::new(),
                },
            )
            .unwrap();
        let row = store.household(last).unwrap().row;
        assert_eq!(
            (row.status.as_deref(), row.visits),
            (Some("nobody_home"), 1)
        );
    }

    #[test]
    fn keys_of_the_wrong_length_or_value_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone.db").display().to_string();
        let err = DoorstepStore::open(path.clone(), vec![1; 31]).unwrap_err();
        assert_eq!(err.code(), "invalid");
        drop(DoorstepStore::open(path.clone(), KEY.to_vec()).unwrap());
        let err = DoorstepStore::open(path.clone(), vec![8; 32]).unwrap_err();
        assert_eq!(err.code(), "wrong_key");
        assert!(DoorstepStore::open(path, KEY.to_vec()).is_ok());
    }

    struct Silent;
    impl SyncListener for Silent {
        fn on_progress(&self, _: SyncReport) {}
    }
}
