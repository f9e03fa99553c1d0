//! The context a call runs in: its deadline, trace, attempt, and the router its own calls use.
//!
//! Owns: the task-local `CallContext`. Promises: a handler sees the caller's remaining time
//! through [`deadline`] and [`remaining`]; calls it makes inherit that deadline and trace.
//! Must not touch: sockets, the registry, or what a router is: it carries the router of
//! its calls as a `Routing`, which `call` fills and reads, so that this module sits below
//! `call` (and `telemetry`, which reads the context) instead of in a loop with it.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wire::TraceContext;

/// The router that the calls made in a context go through, held without naming its type.
#[derive(Clone)]
pub(crate) struct Routing(Arc<dyn Any + Send + Sync>);

impl Routing {
    /// Carry `router`.
    pub(crate) fn new<R: Any + Send + Sync>(router: Arc<R>) -> Routing {
        Routing(router)
    }

    /// The router, if it is an `R`.
    pub(crate) fn get<R: Any + Send + Sync>(&self) -> Option<Arc<R>> {
        self.0.clone().downcast::<R>().ok()
    }
}

/// What travels with a call, and what a handler can read about the call it serves.
#[derive(Clone, Default)]
pub(crate) struct CallContext {
    /// When the work must be finished; `None` when no one set a deadline.
    pub(crate) deadline: Option<Instant>,
    /// The trace this call belongs to, with this call's span as the parent of calls it makes.
    pub(crate) trace: TraceContext,
    /// Retry number of the request this call serves.
    pub(crate) attempt: u16,
    /// The id of the outside request this call is part of (`x-request-id` at the gateway).
    pub(crate) request_id: Option<Arc<str>>,
    /// The service whose handler runs in this context, for the log lines it writes.
    pub(crate) service: Option<&'static str>,
    /// Where calls made in this context go; `None` means the process default.
    pub(crate) router: Option<Routing>,
}

tokio::task_local! {
    static CONTEXT: CallContext;
}

/// Run `fut` with `ctx` as its context.
pub(crate) async fn scope<F: Future>(ctx: CallContext, fut: F) -> F::Output {
    CONTEXT.scope(ctx, fut).await
}

/// Run `f` on the current context, if the current task runs inside one.
pub(crate) fn with<R>(f: impl FnOnce(&CallContext) -> R) -> Option<R> {
    CONTEXT.try_with(f).ok()
}

/// The deadline of the call being served, if it has one.
///
/// Inside a handler this is the caller's deadline as it arrived: the callee sees the
/// caller's remaining time, so that work past it can be abandoned early.
pub fn deadline() -> Option<Instant> {
    CONTEXT.try_with(|c| c.deadline).ok().flatten()
}

/// The time left before the deadline of the call being served, if it has one.
///
/// ```
/// # async fn f() {
/// if let Some(left) = colony::context::remaining() {
///     if left < std::time::Duration::from_millis(5) {
///         // not worth starting an expensive step
///     }
/// }
/// # }
/// ```
pub fn remaining() -> Option<Duration> {
    deadline().map(|d| d.saturating_duration_since(Instant::now()))
}

/// The retry number of the request being served: 0 for a first try.
pub fn attempt() -> u16 {
    CONTEXT.try_with(|c| c.attempt).unwrap_or(0)
}

/// The id of the outside request the current call is part of: the gateway's
/// `x-request-id`, kept across every service in the chain and across retries, so that a
/// handler can de-duplicate work that a retry repeats.
pub fn request_id() -> Option<String> {
    CONTEXT
        .try_with(|c| c.request_id.as_deref().map(str::to_owned))
        .ok()
        .flatten()
}

/// Run `fut` as part of the outside request `id`: calls made inside carry it.
pub async fn with_request_id<F: Future>(id: &str, fut: F) -> F::Output {
    let mut ctx = CONTEXT.try_with(Clone::clone).unwrap_or_default();
    ctx.request_id = (!id.is_empty()).then(|| Arc::from(id));
    CONTEXT.scope(ctx, fut).await
}

/// The W3C trace id of the request being served, as 32 lowercase hex digits.
pub fn trace_id() -> Option<String> {
    CONTEXT
        .try_with(|c| c.trace.is_set().then(|| hex(&c.trace.trace_id)))
        .ok()
        .flatten()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Run `fut` with a deadline `timeout` from now (or the current one, if that is sooner):
/// every call made inside it carries that deadline, and fails by then at the latest.
///
/// ```
/// # async fn f() {
/// use std::time::Duration;
/// let left = colony::context::with_timeout(Duration::from_secs(2), async {
///     colony::context::remaining()
/// })
/// .await;
/// assert!(left.is_some_and(|d| d <= Duration::from_secs(2)));
/// # }
/// ```
pub async fn with_timeout<F: Future>(timeout: Duration, fut: F) -> F::Output {
    let deadline = Instant::now() + timeout;
    let mut ctx = CONTEXT.try_with(Clone::clone).unwrap_or_default();
    ctx.deadline = Some(ctx.deadline.map_or(deadline, |d| d.min(deadline)));
    CONTEXT.scope(ctx, fut).await
}
