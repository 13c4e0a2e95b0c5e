//! Directives, work bulletins and warnings (发布+推送, DOMAIN.md "The work", item 3):
//! one Automerge document per directive (DESIGN.md section 2), published by the office
//! through the server, synced to the liaisons of the villages and units it names, and
//! acknowledged (签收) and pushed on (推送) by each of them, offline if need be.
//!
//! ```text
//! { schema: 1, kind: "directive", id, category, title, body,
//!   published_by, published_at_ms, ack_due_ms, push_due_ms,
//!   places:           [ "<village or unit>", ... ],       server only, written once
//!   acknowledgements: { <place>: DirectiveMark },         the place's liaison
//!   pushes:           { <place>: DirectiveMark } }        the place's liaison
//! ```
//!
//! A liaison writes only the entries of its own places, and each at most once (the
//! server's push check); the entries are keyed by place so that two places never
//! collide. A second mark of a place already marked (on the web, or on another phone)
//! is refused by the server and kept in the phone's refused list; the first stands.

use std::collections::BTreeMap;

use automerge::{ActorId, Automerge};
use autosurgeon::{Hydrate, Reconcile};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::ModelError;

/// Version of the directive document layout written by this build.
pub const DIRECTIVE_SCHEMA: u64 = 1;

/// What the office sends: a directive (指令), a work bulletin (工作通报) or a warning
/// (预警).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectiveCategory {
    /// 指令: something to do.
    Directive,
    /// 工作通报: news of the campaign's work.
    Bulletin,
    /// 预警: a fraud going round now.
    Warning,
}

impl DirectiveCategory {
    /// Every category, in the order forms list them.
    pub const ALL: [Self; 3] = [Self::Directive, Self::Bulletin, Self::Warning];

    /// `directive`, `bulletin` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Directive => "directive",
            Self::Bulletin => "bulletin",
            Self::Warning => "warning",
        }
    }

    /// The Chinese name pages and phones show.
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::Directive => "指令",
            Self::Bulletin => "工作通报",
            Self::Warning => "预警",
        }
    }

    /// Parses [`DirectiveCategory::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// One place's acknowledgement or push confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct DirectiveMark {
    /// The liaison's account.
    pub by: String,
    /// The phone it was marked on; empty when marked on the web.
    pub device_id: String,
    /// When: the phone's clock (or the server's, on the web), milliseconds since the
    /// Unix epoch (UTC).
    pub at_ms: i64,
}

/// A directive document.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile, Serialize, Deserialize)]
pub struct Directive {
    /// Layout version, [`DIRECTIVE_SCHEMA`].
    pub schema: u64,
    /// Always `directive`.
    pub kind: String,
    /// The document's ID (a UUID).
    pub id: String,
    /// [`DirectiveCategory::as_str`].
    pub category: String,
    /// Title, at most 100 characters.
    pub title: String,
    /// The text, at most 5,000 characters.
    pub body: String,
    /// The office account that published it.
    pub published_by: String,
    /// Server clock, milliseconds since the Unix epoch (UTC).
    pub published_at_ms: i64,
    /// Acknowledge by then (UTC ms); the action plan asks for "at once".
    pub ack_due_ms: i64,
    /// Push on by then (UTC ms).
    pub push_due_ms: i64,
    /// The villages and units it goes to, by name.
    pub places: Vec<String>,
    /// Acknowledgements (签收) keyed by place.
    pub acknowledgements: BTreeMap<String, DirectiveMark>,
    /// Push confirmations (推送) keyed by place.
    pub pushes: BTreeMap<String, DirectiveMark>,
}

impl Directive {
    /// The category, `None` for a name this build does not know.
    pub fn category(&self) -> Option<DirectiveCategory> {
        DirectiveCategory::parse(&self.category)
    }
}

/// Creates the document of `directive`, written by `actor` (the server) at `now_ms`.
///
/// Errors: [`ModelError::Reconcile`] when the document cannot be written.
pub fn new_directive_doc(
    directive: &Directive,
    actor: ActorId,
    now_ms: i64,
) -> Result<Automerge, ModelError> {
    let mut doc = Automerge::new().with_actor(actor);
    let mut tx = doc.transaction();
    autosurgeon::reconcile(&mut tx, directive)?;
    tx.commit_with(crate::model::commit_at(now_ms, "publish directive"));
    Ok(doc)
}

/// Reads the typed directive out of its document.
///
/// Errors: [`ModelError::Hydrate`] when the document is not a directive.
pub fn read_directive(doc: &Automerge) -> Result<Directive, ModelError> {
    Ok(autosurgeon::hydrate(doc)?)
}

/// Which of a directive's marks: acknowledged (签收) or pushed on (推送).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    /// 签收.
    Acknowledged,
    /// 推送.
    Pushed,
}

impl MarkKind {
    /// The root map the mark is kept in: `acknowledgements` or `pushes`.
    pub fn map(self) -> &'static str {
        match self {
            Self::Acknowledged => "acknowledgements",
            Self::Pushed => "pushes",
        }
    }
}

/// Writes `mark` for `place` into the directive's `acknowledgements` or `pushes`
/// map, in one change. The caller checks that the place is the directive's and the
/// account's, and that it is not marked yet.
///
/// Errors: [`ModelError::NotADirective`] when the document lacks the map.
pub fn put_mark(
    doc: &mut Automerge,
    kind: MarkKind,
    place: &str,
    mark: &DirectiveMark,
    now_ms: i64,
) -> Result<(), ModelError> {
    let message = match kind {
        MarkKind::Acknowledged => "acknowledge directive",
        MarkKind::Pushed => "confirm push",
    };
    crate::model::put_entry(doc, kind.map(), place, mark, now_ms, message).map_err(|e| match e {
        ModelError::OldSchema => ModelError::NotADirective,
        e => e,
    })
}

/// The directive's ID as a UUID, `None` when the document's `id` is not one.
pub fn directive_id(d: &Directive) -> Option<Uuid> {
    Uuid::parse_str(&d.id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{ROOT, ReadDoc};

    fn sample() -> Directive {
        Directive {
            schema: DIRECTIVE_SCHEMA,
            kind: "directive".into(),
            id: Uuid::new_v4().to_string(),
            category: "warning".into(),
            title: "冒充客服退款诈骗预警".into(),
            body: "近期多发，请立即转发各群。".into(),
            published_by: "office".into(),
            published_at_ms: 1_700_000_000_000,
            ack_due_ms: 1_700_003_600_000,
            push_due_ms: 1_700_007_200_000,
            places: vec!["东坡村".into(), "镇派出所".into()],
            acknowledgements: BTreeMap::new(),
            pushes: BTreeMap::new(),
        }
    }

    #[test]
    fn marks_from_two_places_merge_and_a_double_mark_is_a_kept_conflict() {
        let d = sample();
        let server = new_directive_doc(&d, ActorId::random(), d.published_at_ms).unwrap();
        let mut a = server.fork();
        let mut b = server.fork();
        let mut c = server.fork();
        let mark = |by: &str, at_ms| DirectiveMark {
            by: by.into(),
            device_id: String::new(),
            at_ms,
        };
        put_mark(&mut a, MarkKind::Acknowledged, "东坡村", &mark("a", 1), 1).unwrap();
        put_mark(&mut b, MarkKind::Acknowledged, "镇派出所", &mark("b", 2), 2).unwrap();
        put_mark(&mut c, MarkKind::Acknowledged, "东坡村", &mark("c", 3), 3).unwrap();
        a.merge(&mut b).unwrap();
        a.merge(&mut c).unwrap();
        let read = read_directive(&a).unwrap();
        assert_eq!(read.acknowledgements.len(), 2);
        assert!(read.pushes.is_empty());
        let map = match a.get(ROOT, "acknowledgements").unwrap() {
            Some((_, id)) => id,
            None => panic!("no map"),
        };
        assert_eq!(
            a.get_all(&map, "东坡村").unwrap().len(),
            2,
            "both marks kept"
        );
        assert_eq!(read.category(), Some(DirectiveCategory::Warning));
    }
}
