//! Routing a call: run it here, or send it to an instance that hosts the service.
//!
//! Owns: what a call is given and gives back ([`CallOptions`], [`Reply`], the
//! [`DEFAULT_TIMEOUT`]); the rest lives in submodules by job: `invoke` ([`invoke()`], what
//! every `#[microservice]` wrapper calls, and the choice between running here and sending),
//! `router` ([`Router`]: the peers this process knows and power-of-two-choices between
//! instances) and `endpoint` (one peer's connection, its load and its ejection after
//! failures). Promises: a call to a service hosted in this process, or made with no router
//! at all, runs the body directly with no serialization; a remote call carries its
//! deadline and trace, and fails with a [`CallError`](crate::CallError) by its deadline at
//! the latest; dropping the caller's future cancels the remote work. Must not touch:
//! sockets directly (through [`Dialer`](crate::transport::Dialer) only), or how requests
//! are served (the `host` module owns that).

use std::time::{Duration, Instant};

use bytes::Bytes;

mod endpoint;
mod invoke;
mod router;

pub use invoke::invoke;
pub(crate) use router::LocalRunner;
pub use router::{Peer, Router, RouterBuilder};

/// The deadline of a remote call whose caller set none and whose service has no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A reply that came back from the callee.
#[derive(Debug)]
pub enum Reply {
    /// The postcard encoding of the `Ok` value.
    Ok(Bytes),
    /// The postcard encoding of the service's own error.
    Err(Bytes),
}

/// Per-call settings for [`Router::call`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// The deadline; `None` takes the context's, else the service's `timeout`, else
    /// [`DEFAULT_TIMEOUT`].
    pub deadline: Option<Instant>,
    /// Retry number to report to the callee.
    pub attempt: Option<u16>,
}

impl CallOptions {
    /// Inherit everything from the current context.
    pub fn inherit() -> CallOptions {
        CallOptions::default()
    }

    /// Call with this deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> CallOptions {
        self.deadline = Some(deadline);
        self
    }
}

/// How this build numbers its services, for a connection's handshake (the transport does
/// not read the service table itself).
pub(crate) fn local_ids() -> crate::transport::LocalIds {
    crate::transport::LocalIds {
        count: crate::service::registry().len(),
        id_of: |name| crate::service::find(name).map(crate::service::ServiceEntry::id),
    }
}

static DEFAULT_ROUTER: std::sync::OnceLock<std::sync::Arc<Router>> = std::sync::OnceLock::new();

/// Install the router that calls outside any handler use. Only the first install counts.
pub(crate) fn set_default_router(router: std::sync::Arc<Router>) -> bool {
    DEFAULT_ROUTER.set(router).is_ok()
}

/// The process default router, if one is installed.
pub(crate) fn default_router() -> Option<&'static std::sync::Arc<Router>> {
    DEFAULT_ROUTER.get()
}
