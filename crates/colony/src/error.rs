//! Errors of the call path, and the ready-made error type for services.
//!
//! Owns: [`CallError`] (everything that can go wrong between a caller and a callee that is
//! not the callee's own answer), [`ServiceError`] (a serializable error users may return),
//! and [`Error`] (what `colony::main` reports). Promises: every remote failure is a value;
//! nothing here panics.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a call to a service did not produce the service's own answer.
///
/// # Retrying
///
/// Colony never retries inner calls: a retry at every level of a call chain multiplies
/// load. Only the outermost scope (the gateway, or a client outside the cluster) retries.
/// [`CallError::is_retryable`] tells which failures are safe to retry on another instance:
///
/// | variant | safe to retry | may have run |
/// |---|---|---|
/// | [`NoInstance`](CallError::NoInstance) | yes | no |
/// | [`Unreachable`](CallError::Unreachable) | yes | no |
/// | [`Overloaded`](CallError::Overloaded) | yes | no |
/// | [`Draining`](CallError::Draining) | yes | no |
/// | [`UnknownService`](CallError::UnknownService) | yes, elsewhere | no |
/// | [`VersionMismatch`](CallError::VersionMismatch) | yes, elsewhere | no |
/// | [`ConnectionLost`](CallError::ConnectionLost) | yes, if the work is idempotent | **yes** |
/// | [`DeadlineExceeded`](CallError::DeadlineExceeded) | no: the time is spent | **yes** |
/// | [`Cancelled`](CallError::Cancelled) | no | **yes** |
/// | [`BadArguments`](CallError::BadArguments) | no: it will fail again | no |
/// | [`Internal`](CallError::Internal) | no | **yes** |
/// | [`Protocol`](CallError::Protocol) | no | **yes** |
/// | [`Forbidden`](CallError::Forbidden) | no: the caller is not allowed | no |
///
/// **A failed call may still have run.** When the connection is lost or the deadline
/// passes, the callee may have done the work, or part of it. Handlers that change state
/// should be idempotent, or de-duplicate on the request id that a retry keeps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CallError {
    /// No instance of the service is known to this caller.
    #[error(
        "service `{service}` has no instance to call; start one, or pass `--peer {service}=ADDR` \
         (or COLONY_PEERS)"
    )]
    NoInstance {
        /// The service that was called.
        service: String,
    },
    /// The instance could not be reached; nothing was sent.
    #[error("service `{service}` at {addr} could not be reached: {reason}")]
    Unreachable {
        /// The service that was called.
        service: String,
        /// The address that was tried.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The instance refused the call because it is at its limit of requests in flight.
    #[error(
        "service `{service}` is overloaded: its instance has {limit} requests in flight; retry \
         later or add instances"
    )]
    Overloaded {
        /// The service that was called.
        service: String,
        /// The instance's limit of requests in flight.
        limit: u64,
    },
    /// The instance is shutting down and accepts no new calls.
    #[error("service `{service}` refused the call: its instance is draining")]
    Draining {
        /// The service that was called.
        service: String,
    },
    /// The peer does not host the service.
    #[error("peer {peer} does not host service `{service}`; it hosts: {hosted}")]
    UnknownService {
        /// The service that was called.
        service: String,
        /// The peer that was asked.
        peer: String,
        /// The services the peer does host, comma-separated.
        hosted: String,
    },
    /// The peer runs a different build of the app.
    #[error(
        "peer {peer} runs build {theirs}, this process runs build {ours}; instances of different \
         builds do not talk to each other, so restart them from one build"
    )]
    VersionMismatch {
        /// The peer's address.
        peer: String,
        /// This process's build fingerprint.
        ours: String,
        /// The peer's build fingerprint.
        theirs: String,
    },
    /// The connection to the instance failed before its reply arrived.
    #[error(
        "service `{service}`: the connection to its instance was lost before it replied: {reason}"
    )]
    ConnectionLost {
        /// The service that was called.
        service: String,
        /// What happened to the connection.
        reason: String,
    },
    /// The deadline passed before the reply arrived.
    #[error("service `{service}` did not reply within its deadline of {budget:?}")]
    DeadlineExceeded {
        /// The service that was called.
        service: String,
        /// The time the call had when it started.
        budget: Duration,
    },
    /// The caller gave up on the call.
    #[error("the call to service `{service}` was cancelled")]
    Cancelled {
        /// The service that was called.
        service: String,
    },
    /// The arguments do not fit the service's parameters.
    #[error("bad arguments for service `{service}`: {reason}")]
    BadArguments {
        /// The service that was called.
        service: String,
        /// Which field is wrong and why.
        reason: String,
    },
    /// The service failed in a way it did not report as its own error (for example, it panicked).
    #[error("service `{service}` failed: {message}")]
    Internal {
        /// The service that was called.
        service: String,
        /// What happened.
        message: String,
    },
    /// The peer broke the message protocol.
    #[error("protocol error: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The caller is not on the service's allow-list (`callers` in `colony.toml`).
    #[error(
        "service `{service}` refused the call: caller {caller} is not on its allow-list; add it \
         to `callers` of `{service}` in colony.toml"
    )]
    Forbidden {
        /// The service that was called.
        service: String,
        /// Who the callee saw calling: the names in the caller's certificate.
        caller: String,
    },
}

impl CallError {
    /// Whether the outermost scope may retry this call on another instance.
    ///
    /// [`ConnectionLost`](CallError::ConnectionLost) is retryable, but the callee may have
    /// run: retry it only for work that is idempotent or de-duplicated by request id.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::NoInstance { .. }
                | CallError::Unreachable { .. }
                | CallError::Overloaded { .. }
                | CallError::Draining { .. }
                | CallError::UnknownService { .. }
                | CallError::VersionMismatch { .. }
                | CallError::ConnectionLost { .. }
        )
    }

    /// Whether the callee may have run (some of) the work although the call failed.
    pub fn may_have_run(&self) -> bool {
        matches!(
            self,
            CallError::ConnectionLost { .. }
                | CallError::DeadlineExceeded { .. }
                | CallError::Cancelled { .. }
                | CallError::Internal { .. }
                | CallError::Protocol { .. }
        )
    }

    /// The name of the service this error is about, when there is one.
    pub fn service(&self) -> Option<&str> {
        match self {
            CallError::NoInstance { service }
            | CallError::Unreachable { service, .. }
            | CallError::Overloaded { service, .. }
            | CallError::Draining { service }
            | CallError::UnknownService { service, .. }
            | CallError::ConnectionLost { service, .. }
            | CallError::DeadlineExceeded { service, .. }
            | CallError::Cancelled { service }
            | CallError::BadArguments { service, .. }
            | CallError::Internal { service, .. }
            | CallError::Forbidden { service, .. } => Some(service),
            CallError::VersionMismatch { .. } | CallError::Protocol { .. } => None,
        }
    }
}

/// What kind of failure a [`ServiceError`] reports; the gateway maps it to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input was wrong (HTTP 400).
    InvalidArgument,
    /// The thing asked for does not exist (HTTP 404).
    NotFound,
    /// The request conflicts with the current state (HTTP 409).
    Conflict,
    /// The caller may not do this (HTTP 403).
    PermissionDenied,
    /// Try again later (HTTP 503).
    Unavailable,
    /// The deadline passed (HTTP 504).
    DeadlineExceeded,
    /// Anything else (HTTP 500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status the gateway answers an error of this kind with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::Unavailable => 503,
            ErrorKind::DeadlineExceeded => 504,
            ErrorKind::Internal => 500,
        }
    }
}

/// How a service's own error type answers at the HTTP gateway: its status, and optionally
/// its problem type (the `type` of the `application/problem+json` answer).
///
/// [`ServiceError`] implements it from its [`ErrorKind`]. Implement it for your own error
/// type so that the gateway answers 404 or 409 rather than 500; without it, an error of
/// your type is a 500 whose body carries the error as JSON.
///
/// ```
/// use colony::{CallError, HttpError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// pub enum BookError {
///     NoSuchBook(String),
///     Unavailable(String),
/// }
///
/// impl From<CallError> for BookError {
///     fn from(err: CallError) -> Self {
///         BookError::Unavailable(err.to_string())
///     }
/// }
///
/// impl HttpError for BookError {
///     fn http_status(&self) -> u16 {
///         match self {
///             BookError::NoSuchBook(_) => 404,
///             BookError::Unavailable(_) => 503,
///         }
///     }
/// }
/// assert_eq!(BookError::NoSuchBook("dune".into()).http_status(), 404);
/// ```
pub trait HttpError {
    /// The HTTP status, 400 to 599 (anything else answers 500).
    fn http_status(&self) -> u16;

    /// A problem type (a URI, or a short tag such as `"out-of-stock"`); `None` answers
    /// `about:blank`.
    fn problem_type(&self) -> Option<String> {
        None
    }
}

impl HttpError for ServiceError {
    fn http_status(&self) -> u16 {
        self.kind.http_status()
    }
}

/// A ready-made, serializable error for services.
///
/// ```
/// use colony::{ErrorKind, ServiceError};
///
/// let err = ServiceError::not_found("no such sku: a1");
/// assert_eq!(err.kind(), ErrorKind::NotFound);
/// assert_eq!(err.to_string(), "not found: no such sku: a1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceError {
    kind: ErrorKind,
    message: String,
    /// The failed call this error came from, if any: what a retrying scope
    /// ([`crate::client::Client::run`]) decides on. It stays in this process.
    #[serde(skip)]
    #[schemars(skip)]
    call: Option<Box<CallError>>,
}

impl ServiceError {
    /// An error of `kind` with a message for people.
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        ServiceError {
            kind,
            message: message.to_string(),
            call: None,
        }
    }

    /// An internal error (HTTP 500) with a message.
    pub fn internal(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Bad input (HTTP 400).
    pub fn invalid_argument(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// Not found (HTTP 404).
    pub fn not_found(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// A conflict with current state (HTTP 409).
    pub fn conflict(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::DeadlineExceeded => "deadline exceeded",
            ErrorKind::Internal => "internal error",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<CallError> for ServiceError {
    fn from(err: CallError) -> Self {
        let kind = match &err {
            CallError::DeadlineExceeded { .. } => ErrorKind::DeadlineExceeded,
            CallError::BadArguments { .. } => ErrorKind::InvalidArgument,
            CallError::Forbidden { .. } => ErrorKind::PermissionDenied,
            CallError::NoInstance { .. }
            | CallError::Unreachable { .. }
            | CallError::Overloaded { .. }
            | CallError::Draining { .. }
            | CallError::ConnectionLost { .. } => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        let mut service_error = ServiceError::new(kind, &err);
        service_error.call = Some(Box::new(err));
        service_error
    }
}

/// An error that may say a call failed, and how: what a retrying scope reads to decide
/// whether to run a request again ([`crate::client::Client::run`]).
///
/// Colony's errors implement it. Implement it for your own error type (one that has a
/// `From<CallError>`) by returning the [`CallError`] it was made from:
///
/// ```
/// use colony::{CallError, FailedCall};
///
/// enum ShopError {
///     OutOfStock,
///     Call(CallError),
/// }
///
/// impl From<CallError> for ShopError {
///     fn from(err: CallError) -> Self {
///         ShopError::Call(err)
///     }
/// }
///
/// impl FailedCall for ShopError {
///     fn failed_call(&self) -> Option<&CallError> {
///         match self {
///             ShopError::Call(err) => Some(err),
///             ShopError::OutOfStock => None,
///         }
///     }
/// }
/// ```
pub trait FailedCall {
    /// The failed call this error comes from; `None` for a service's own error.
    fn failed_call(&self) -> Option<&CallError>;
}

impl FailedCall for CallError {
    fn failed_call(&self) -> Option<&CallError> {
        Some(self)
    }
}

impl FailedCall for ServiceError {
    fn failed_call(&self) -> Option<&CallError> {
        self.call.as_deref()
    }
}

impl FailedCall for Error {
    fn failed_call(&self) -> Option<&CallError> {
        match self {
            Error::Call(err) => Some(err),
            _ => None,
        }
    }
}

/// The error of [`crate::main`] and of other process-level entry points.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A call made by a role (such as `call`) failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The command line or environment was wrong.
    #[error("{0}")]
    Usage(String),
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The called service returned its own error.
    #[error("the service returned an error: {0}")]
    Service(serde_json::Value),
    /// Mutual TLS could not be set up: no CA, unreadable certificates, a bad `colony.toml`.
    #[error(transparent)]
    Security(#[from] SecurityError),
}

/// `fn main() -> colony::Result<()>` prints this when it fails, so it reads like Display.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Service(v) => write!(f, "the service returned an error: {v}"),
            other => write!(f, "{other}"),
        }
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The result of [`crate::main`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why security could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// TLS is on, and there is neither a CA nor a certificate for this process.
    #[error(
        "no cluster CA in {}: run `colony certs init` there (or set COLONY_CA_DIR to where the CA \
         is), or set COLONY_TLS=off for local development",
        shown(dir)
    )]
    NoCa {
        /// Where the CA was looked for.
        dir: PathBuf,
    },
    /// A CA exists where a new one was to be created.
    #[error(
        "a cluster CA already exists in {}; keep it, or pass --force to replace it (every \
         certificate it issued stops being trusted)",
        shown(dir)
    )]
    CaExists {
        /// The CA directory.
        dir: PathBuf,
    },
    /// The CA's certificate or key is unusable.
    #[error("the cluster CA is unusable: {reason}")]
    BadCa {
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate or key is unusable.
    #[error("{what} is unusable: {reason}")]
    BadCertificate {
        /// Which certificate.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Making a certificate failed.
    #[error("could not {what}: {reason}")]
    Issue {
        /// What was being done.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A setting is wrong.
    #[error("{reason}")]
    Config {
        /// Which setting, what is wrong, and what to write instead.
        reason: String,
    },
    /// The listening socket could not be bound.
    #[error("could not listen on {addr} (pass --listen 127.0.0.1:0 for any free port): {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS could not be configured: {reason}")]
    Tls {
        /// rustls's reason.
        reason: String,
    },
}

/// A relative directory as `./dir`, so that messages read as paths.
fn shown(dir: &Path) -> String {
    if dir.is_relative() && !dir.starts_with(".") && !dir.starts_with("..") {
        format!("./{}", dir.display())
    } else {
        dir.display().to_string()
    }
}
