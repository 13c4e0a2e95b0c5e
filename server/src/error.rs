//! The server's error type and how each error answers over HTTP: bad input answers with
//! the API's JSON error body; internal errors answer a generic 500 and are logged with
//! their detail, never with personal data (axum's `examples/error-handling`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use doorstep_core::protocol::ErrorBody;

/// Result with the server's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the server can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No token, an unknown token, a revoked device or a disabled account.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The account may not do this (its role, by the permission table).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing by that name, or nothing by that name within the account's scope (the
    /// same answer, so that scope cannot be probed).
    #[error("{0}")]
    NotFound(String),
    /// Too many attempts; try again after the given number of seconds.
    #[error("too many attempts; try again in {retry_after_s} s")]
    Throttled {
        /// Seconds until the next attempt is allowed.
        retry_after_s: u64,
    },
    /// The phone's access was revoked by the office.
    #[error(
        "this phone's access was revoked; its unsynced records stay on the phone, and the office has been told what it holds"
    )]
    DeviceRevoked(String),
    /// The request was malformed or not acceptable.
    #[error("{0}")]
    BadRequest(String),
    /// A blob's bytes do not hash to the address it was sent to.
    #[error("the blob's SHA-256 is {actual}, not the address it was sent to")]
    HashMismatch {
        /// Hash of the bytes received.
        actual: String,
    },
    /// The body is larger than the endpoint takes.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The endpoint's limit in bytes.
        limit: usize,
    },
    /// Too many sign-ins are being checked at once; try again shortly.
    #[error("the server is busy checking other sign-ins; try again in a moment")]
    Busy,
    /// A conflicting state (a device of another account, a user that exists).
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A file of the data folder could not be read or written.
    #[error("data folder: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else internal.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::DeviceRevoked(_) => (StatusCode::UNAUTHORIZED, "device_revoked"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::HashMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::Db(_) | Self::Io(_) | Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl Error {
    /// The error's code in the API's error body (`unauthorized`, `forbidden`, ...).
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// The error for a body axum could not read: too large, or cut off.
    pub fn from_body(rejection: axum::extract::rejection::BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge { limit }
        } else {
            Self::BadRequest(format!(
                "the request body could not be read: {}",
                rejection.body_text()
            ))
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal error");
            "internal error; the server log has the detail".to_string()
        } else {
            tracing::debug!(status = status.as_u16(), code, "request refused");
            self.to_string()
        };
        let mut resp = (
            status,
            axum::Json(ErrorBody {
                code: code.into(),
                message,
            }),
        )
            .into_response();
        if let Self::Throttled { retry_after_s } = self {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_s),
            );
        }
        resp
    }
}
