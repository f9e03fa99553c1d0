//! One peer of a [`Router`]: its connection and its health.
//!
//! Owns: [`Endpoint`], one address that hosts some services, with the one connection this
//! process keeps to it (dialed on first use, shared by every call), the calls in flight
//! through it (the load the balancer compares) and its ejection after connection-level
//! failures (250 ms, doubling each failure in a row, at most 10 s). Promises: concurrent
//! first calls share one dial; a dead connection counts as busy; any reply ends an
//! ejection. Must not touch: which endpoint a call picks (`router` owns that), or frames
//! (the `transport` owns those).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Router;
use crate::error::CallError;
use crate::transport::{Connection, HandshakeError};

/// One address that hosts some services, and the connection to it.
pub(super) struct Endpoint {
    pub(super) addr: String,
    conn: Mutex<Option<Connection>>,
    /// Serializes dials so that concurrent first calls share one connection.
    dialing: tokio::sync::Mutex<()>,
    /// Calls in flight through this endpoint, for power-of-two-choices.
    pub(super) in_flight: AtomicU64,
    /// Connection-level failures in a row; reset by any reply.
    failures: AtomicU64,
    /// Until when the balancer skips this endpoint after failures.
    ejected_until: Mutex<Option<Instant>>,
}

/// The first ejection lasts this long; each further failure in a row doubles it.
const EJECT_BASE: Duration = Duration::from_millis(250);
/// The longest ejection.
const EJECT_MAX: Duration = Duration::from_secs(10);

impl Endpoint {
    pub(super) fn new(addr: &str) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            addr: addr.to_owned(),
            conn: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            in_flight: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejected_until: Mutex::new(None),
        })
    }

    /// The instance could not be reached or its connection died: skip it for a while,
    /// longer each time in a row.
    pub(super) fn record_failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed).min(16) as u32;
        let backoff = EJECT_BASE.saturating_mul(1 << n).min(EJECT_MAX);
        *self.ejected_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + backoff);
        tracing::debug!(addr = %self.addr, ?backoff, "ejected instance after a failure");
    }

    pub(super) fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            *self.ejected_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    pub(super) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .map(|u| u.is_some_and(|u| u > now))
            .unwrap_or(false)
    }

    /// The load the balancer compares: calls in flight, with dead connections counted busy.
    pub(super) fn load(&self) -> u64 {
        let dead = self
            .conn
            .lock()
            .is_ok_and(|c| c.as_ref().is_some_and(|c| !c.is_usable()));
        self.in_flight.load(Ordering::Relaxed) + if dead { 1 << 20 } else { 0 }
    }

    pub(super) fn current(&self) -> Option<Connection> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.as_ref().filter(|c| c.is_usable()).cloned()
    }

    pub(super) async fn connect(
        &self,
        router: &Router,
        service: &str,
    ) -> Result<Connection, CallError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let unreachable = |reason: String| CallError::Unreachable {
            service: service.to_owned(),
            addr: self.addr.clone(),
            reason,
        };
        let dial = router.dialer.dial(&self.addr, &[service]);
        let stream = tokio::time::timeout(router.connect_timeout, dial)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", router.connect_timeout)))?
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = Connection::establish(
            stream,
            self.addr.clone(),
            true,
            &router.hello,
            crate::call::local_ids(),
            router.connection,
            None,
        )
        .await
        .map_err(|e| match e {
            HandshakeError::Fingerprint { ours, theirs } => CallError::VersionMismatch {
                peer: self.addr.clone(),
                ours,
                theirs,
            },
            other => unreachable(other.to_string()),
        })?;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }
}

/// Counts a call in flight while it lives.
pub(super) struct Decrement<'a>(pub(super) &'a AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
