//! The domain error of ckptd. Every error a user can see is one of these: a kind (which becomes
//! the wire `code` and, in `http::error`, the HTTP status), a message that says what failed and
//! what to try, and structured details (`hint`, `log_tail`, ...).

use ckptd_api::{Advice, ErrorInfo};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    TargetUnavailable,
    QueueFull,
    CriuFailed,
    Internal,
    Unavailable,
    InsufficientStorage,
    /// A job stopped by `POST /v1/jobs/{id}/cancel`.
    Cancelled,
    /// A job that ran longer than `job_timeout_secs`.
    Timeout,
    /// A TCP request without the right bearer token.
    Unauthorized,
    /// A remote (S3) refused or failed a request; `details.status` is its HTTP status.
    RemoteFailed,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 15] = [
        Self::InvalidRequest,
        Self::Forbidden,
        Self::NotFound,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::TargetUnavailable,
        Self::QueueFull,
        Self::CriuFailed,
        Self::Internal,
        Self::Unavailable,
        Self::InsufficientStorage,
        Self::Cancelled,
        Self::Timeout,
        Self::Unauthorized,
        Self::RemoteFailed,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::TargetUnavailable => "target_unavailable",
            Self::QueueFull => "queue_full",
            Self::CriuFailed => "criu_failed",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::InsufficientStorage => "insufficient_storage",
            Self::Cancelled => "cancelled",
            Self::Timeout => "timeout",
            Self::Unauthorized => "unauthorized",
            Self::RemoteFailed => "remote_failed",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// What to try next: plain words, or advice each caller phrases itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Hint {
    Plain(String),
    Advice(Advice),
}

impl Hint {
    /// The hint as API callers read it in `details.hint`.
    pub fn api_text(&self) -> String {
        match self {
            Hint::Plain(h) => h.clone(),
            Hint::Advice(a) => a.api_text(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub details: Map<String, Value>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            details: Map::new(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn target_unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TargetUnavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// Adds a detail; `hint` says what to try, `log_tail` quotes CRIU's log.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// A hint in words every caller understands (no route, field or flag in it).
    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        self.with("hint", hint.into())
    }

    /// Advice each caller phrases in its own words: `details.advice`, and `details.hint` in the
    /// API's words.
    pub fn with_advice(self, advice: Advice) -> Self {
        let hint = advice.api_text();
        let value = serde_json::to_value(&advice).expect("advice serializes");
        self.with("advice", value).with("hint", hint)
    }

    /// A hint of either kind.
    pub fn with_any_hint(self, hint: Hint) -> Self {
        match hint {
            Hint::Plain(h) => self.with_hint(h),
            Hint::Advice(a) => self.with_advice(a),
        }
    }

    /// An I/O failure on a path, phrased for the user.
    pub fn io(what: &str, path: &std::path::Path, err: &std::io::Error) -> Self {
        let kind = if err.raw_os_error() == Some(libc::ENOSPC) {
            ErrorKind::InsufficientStorage
        } else {
            ErrorKind::Internal
        };
        Self::new(kind, format!("{what} {}: {err}", path.display()))
    }

    pub fn to_info(&self) -> ErrorInfo {
        ErrorInfo {
            code: self.kind.code().to_owned(),
            message: self.message.clone(),
            details: self.details.clone(),
        }
    }

    pub fn from_info(info: &ErrorInfo) -> Self {
        Self {
            kind: ErrorKind::from_code(&info.code).unwrap_or(ErrorKind::Internal),
            message: info.message.clone(),
            details: info.details.clone(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::internal(format!("catalog (SQLite) error: {e}"))
            .with_hint("check the daemon's log and that the state directory is writable")
    }
}
