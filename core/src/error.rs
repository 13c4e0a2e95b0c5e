//! The core's error type: one enum for the store, the sync driver and the model.

use crate::evidence::EvidenceError;
use crate::media::MediaError;
use crate::media::signature::SignatureError;
use crate::model::ModelError;
use crate::protocol::ProtocolError;

/// Result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core. Messages carry no personal data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQLite store failed (disk full, file damaged, locked).
    #[error("storage: {0}")]
    Storage(#[from] rusqlite::Error),
    /// The store file does not open under the key given: another key, a store that is
    /// not encrypted, or a damaged file. Nothing was written to it.
    #[error("the store does not open with this key")]
    WrongKey,
    /// The store was written by a newer build than this one.
    #[error("the store has schema version {found}, newer than this build's {supported}")]
    StoreTooNew {
        /// Version found in the file.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A household document could not be read or written.
    #[error(transparent)]
    Model(Box<ModelError>),
    /// A stored Automerge document could not be loaded.
    #[error("document {doc}: {source}")]
    Document {
        /// The document's ID.
        doc: String,
        /// What Automerge said.
        source: Box<automerge::AutomergeError>,
    },
    /// A photo was refused by intake; nothing was attached.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The sync messages were malformed or out of order.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The named household is not in this phone's store.
    #[error("household {0} is not on this phone")]
    NoSuchHousehold(String),
    /// The phone has not signed in to a server yet.
    #[error("this phone has not signed in to a server")]
    NotSignedIn,
    /// The server refused the credentials or the device token (HTTP 401).
    #[error("the server refused the sign-in: {0}")]
    Unauthorized(String),
    /// The server answered with an error status.
    #[error("the server answered {status}: {message}")]
    Server {
        /// HTTP status code.
        status: u16,
        /// The server's stable error code (`bad_request`, `conflict`, `too_large`, ...);
        /// empty when the answer did not come from a Doorstep server.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The phone's evidence key changed since it last signed in; records signed with it
    /// would be refused, so nothing is synced until the phone signs in again.
    #[error("this phone's signing key is not registered with the server yet; sign in again")]
    KeyNotRegistered,
    /// The server's TLS key is not the one this phone was given (its pin): another
    /// machine answers at the server's address, or the server got a new key. Nothing
    /// was sent; the phone's data is untouched.
    #[error(
        "the server's key does not match the key this phone was given: it presented {presented}, the phone has {pinned}; do not sync until the office confirms the server's pin"
    )]
    PinMismatch {
        /// The pin this phone holds (`sha256/<base64>`).
        pinned: String,
        /// The pin of the key the server presented.
        presented: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("network: {0}")]
    Network(String),
    /// The caller cancelled the sync; what was already confirmed is kept.
    #[error("sync cancelled")]
    Cancelled,
    /// A signature was refused (blank, a single dot, too little ink, out of bounds);
    /// nothing was stored.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// An evidence record could not be made or did not verify.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// A visit cannot be finished as completed yet; `missing` names what it lacks
    /// (campaign rule: a completed visit has a signed notice or pledge and a photo).
    #[error("the visit cannot be finished as completed: it needs {}", missing.join(" and "))]
    Incomplete {
        /// What is missing, in words the app can show.
        missing: Vec<&'static str>,
    },
    /// An argument was not acceptable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which argument.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Self {
        Self::Model(Box::new(e))
    }
}

impl Error {
    /// A document that Automerge could not load or merge.
    pub(crate) fn document(doc: impl ToString, source: automerge::AutomergeError) -> Self {
        Self::Document {
            doc: doc.to_string(),
            source: Box::new(source),
        }
    }
}
