//! Hosting services: serving the requests that arrive on connections, and draining.
//!
//! Owns: [`Host`] (which services this instance serves, its limit of requests in flight,
//! its load counters) and [`serve`] (the accept loop). Promises: each request runs
//! concurrently with the others, under the caller's deadline and trace (its body is polled
//! once as the frame is read, and moves to a task of its own if it waits); past the in-flight limit a request is
//! refused with `Overloaded` before its body runs; a request for a service its caller may not
//! call (the connection's [`PeerIdentity`](crate::transport::PeerIdentity)) is refused with
//! `Forbidden`; a panic in a body becomes an `Internal` error for that one call; draining
//! finishes the work in flight before `serve` returns.
//! Must not touch: how calls are routed (the `call` module owns that).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::call::Router;
use crate::context::{self, CallContext};
use crate::error::CallError;
use crate::service::{self, Outcome, ServiceEntry};
use crate::transport::{Connection, ConnectionConfig, Handler, Listener};
use crate::wire::{self, Frame, Header, Hello, Kind, LoadReport};

/// Settings of a [`Host`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostConfig {
    /// Requests in flight past which new ones are refused with `Overloaded`.
    pub max_in_flight: u64,
    /// How long a drain waits for work in flight before giving up on it.
    pub drain_timeout: Duration,
    /// Connection limits.
    pub connection: ConnectionConfig,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            max_in_flight: 65_536,
            drain_timeout: Duration::from_secs(30),
            connection: ConnectionConfig::default(),
        }
    }
}

/// The services one instance serves, and its load.
pub struct Host {
    /// Hosted services, by id.
    hosted: Vec<bool>,
    /// Per service id: how many more requests get a task of their own before a first poll
    /// runs inline again (see [`Host::start`]).
    spawn_left: Vec<AtomicU32>,
    /// Where the handlers' own calls go.
    router: Arc<Router>,
    config: HostConfig,
    /// What this host says in each handshake.
    hello: Hello,
    in_flight: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    draining: AtomicBool,
    /// When this host was created: the origin of `busy_since`.
    epoch: std::time::Instant,
    /// Microseconds after `epoch` at which `in_flight` last rose from zero (valid while busy).
    busy_since: AtomicU64,
    /// Microseconds of busy time, up to the last time `in_flight` fell to zero.
    busy_total: AtomicU64,
    /// Signalled whenever `in_flight` drops to zero while draining.
    idle: Notify,
    /// Open connections, so a drain can tell each peer to go away.
    connections: Mutex<Vec<Weak<ConnectionTasks>>>,
}

/// The requests being served on one connection, so a cancel or a close can stop them.
struct ConnectionTasks {
    conn: Connection,
    /// Requests whose bodies wait in a task of their own, by request id.
    running: Mutex<HashMap<u64, AbortHandle>>,
    /// The services (by id) the peer may call, from its authenticated identity; `None`: all.
    permitted: Option<Vec<bool>>,
}

impl ConnectionTasks {
    fn new(conn: &Connection) -> ConnectionTasks {
        let permitted = conn
            .peer_identity()
            .and_then(|id| id.may_call.as_ref())
            .map(|names| {
                let mut permitted = vec![false; service::registry().len()];
                for entry in names.iter().filter_map(|n| service::find(n)) {
                    permitted[entry.id() as usize] = true;
                }
                permitted
            });
        ConnectionTasks {
            conn: conn.clone(),
            running: Mutex::new(HashMap::new()),
            permitted,
        }
    }

    fn permits(&self, service: u32) -> bool {
        self.permitted
            .as_ref()
            .is_none_or(|p| p.get(service as usize).copied().unwrap_or(false))
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("services", &self.hello.services)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host serving `services` (full names), whose handlers call out through `router`.
    ///
    /// Fails with the unknown name when a service is not in this binary.
    pub fn new(
        services: &[&str],
        router: Arc<Router>,
        config: HostConfig,
    ) -> Result<Arc<Host>, String> {
        let table = service::registry();
        let mut hosted = vec![false; table.len()];
        for name in services {
            let entry = service::resolve(name)?;
            hosted[entry.id() as usize] = true;
        }
        let hello = Hello {
            protocol: wire::PROTOCOL_VERSION,
            fingerprint: crate::identity::fingerprint().to_owned(),
            instance: crate::identity::instance_id().to_owned(),
            services: table
                .iter()
                .filter(|e| hosted[e.id() as usize])
                .map(|e| (e.name.to_owned(), e.id()))
                .collect(),
        };
        let host = Arc::new(Host {
            spawn_left: hosted.iter().map(|_| AtomicU32::new(0)).collect(),
            hosted,
            router,
            config,
            hello,
            in_flight: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            epoch: std::time::Instant::now(),
            busy_since: AtomicU64::new(0),
            busy_total: AtomicU64::new(0),
            idle: Notify::new(),
            connections: Mutex::new(Vec::new()),
        });
        let runner: Arc<dyn crate::call::LocalRunner> = host.clone();
        host.router.run_hosted_with(Arc::downgrade(&runner));
        let source: Arc<dyn crate::telemetry::metrics::LoadSource> = host.clone();
        crate::telemetry::metrics::watch_load(Arc::downgrade(&source));
        Ok(host)
    }

    /// The current load.
    pub fn load(&self) -> LoadReport {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let mut busy_micros = self.busy_total.load(Ordering::Relaxed);
        if in_flight > 0 {
            busy_micros += self
                .micros()
                .saturating_sub(self.busy_since.load(Ordering::Relaxed));
        }
        LoadReport {
            in_flight,
            capacity: self.config.max_in_flight,
            completed: self.completed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            busy_micros,
        }
    }

    fn micros(&self) -> u64 {
        self.micros_at(Instant::now())
    }

    fn micros_at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Start draining without waiting: new requests are refused from now on.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the host is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The services hosted here.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.hello.services.iter().map(|(n, _)| n.as_str())
    }

    /// Refuse new requests, tell every peer to go away, and wait until the requests in
    /// flight finish (or the drain timeout passes). Returns the requests abandoned.
    pub async fn drain(&self) -> u64 {
        self.draining.store(true, Ordering::Release);
        for tasks in self.live_connections() {
            tasks.conn.go_away();
        }
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(self.config.drain_timeout, wait).await;
        // The last replies may still sit in a connection's buffer: write them out first.
        for tasks in self.live_connections() {
            tasks
                .conn
                .close_after_flush("the instance drained", Duration::from_secs(5))
                .await;
        }
        self.in_flight.load(Ordering::Acquire)
    }

    fn live_connections(&self) -> Vec<Arc<ConnectionTasks>> {
        let mut conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|w| w.strong_count() > 0);
        conns.iter().filter_map(Weak::upgrade).collect()
    }

    fn refuse(&self, conn: &Connection, header: &Header, err: CallError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::metrics::refused(header.service, &err);
        let mut h = Header::new(Kind::Fault, header.request_id);
        h.service = header.service;
        conn.send(&h, &wire::encode_fault(&err));
    }

    // Why this is long: it is the hot path of every request (refusals, context, the inline
    // first poll, the hand-off to a task), kept in one piece so those steps share locals
    // and clock reads; `BENCHMARKS.md` shows what each split cost.
    fn start(self: &Arc<Self>, tasks: &Arc<ConnectionTasks>, frame: Frame) {
        let header = frame.header;
        let conn = &tasks.conn;
        let Some(entry) = service::by_id(header.service).filter(|_| {
            self.hosted
                .get(header.service as usize)
                .copied()
                .unwrap_or(false)
        }) else {
            let err = CallError::UnknownService {
                service: service::by_id(header.service)
                    .map_or_else(|| format!("#{}", header.service), |e| e.name.to_owned()),
                peer: self.hello.instance.clone(),
                hosted: self.services().collect::<Vec<_>>().join(", "),
            };
            return self.refuse(conn, &header, err);
        };
        if !tasks.permits(header.service) {
            let err = CallError::Forbidden {
                service: entry.name.to_owned(),
                caller: conn
                    .peer_identity()
                    .map_or_else(|| conn.peer().to_owned(), ToString::to_string),
            };
            tracing::warn!(service = entry.name, caller = %conn.peer(), "refused a call: the caller is not on the service's allow-list");
            return self.refuse(conn, &header, err);
        }
        if self.draining.load(Ordering::Acquire) {
            let err = CallError::Draining {
                service: entry.name.to_owned(),
            };
            return self.refuse(conn, &header, err);
        }
        let arrived = Instant::now();
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before == 0 {
            self.busy_since
                .store(self.micros_at(arrived), Ordering::Relaxed);
        }
        let guard = InFlight {
            host: self.clone(),
            ended: None,
        };
        if before >= self.config.max_in_flight {
            drop(guard);
            let err = CallError::Overloaded {
                service: entry.name.to_owned(),
                limit: self.config.max_in_flight,
            };
            return self.refuse(conn, &header, err);
        }
        let (request_id, args) = match wire::split_request(&frame.payload) {
            Ok(split) => split,
            Err(e) => {
                drop(guard);
                let err = CallError::Protocol {
                    reason: e.to_string(),
                };
                return self.refuse(conn, &header, err);
            }
        };
        let ctx = CallContext {
            deadline: (header.deadline_us > 0)
                .then(|| arrived + Duration::from_micros(header.deadline_us)),
            trace: header.trace,
            attempt: header.attempt,
            request_id: (!request_id.is_empty()).then(|| Arc::from(request_id)),
            service: None,
            router: Some(crate::context::Routing::new(self.router.clone())),
        };
        let host = self.clone();
        let replies = tasks.clone();
        let spawn_left = &self.spawn_left[header.service as usize];
        let inline = spawn_left.load(Ordering::Relaxed) == 0;
        let mut request: Pin<Box<dyn Future<Output = Instant> + Send>> = Box::pin(async move {
            let (outcome, ended) = serve_body(entry, args, ctx, Some(arrived), inline).await;
            // Queue the reply before the request stops counting as in flight, so that a
            // drain that waits for zero in flight writes it out.
            host.reply(&replies.conn, &header, outcome);
            guard.end(ended);
            ended
        });
        // Most bodies finish, or reach their first await, in their first poll. Polling it
        // here, on the connection's reader, saves a task, a wake-up and a queue hop per
        // request. A body whose first poll takes long would hold up the connection's other
        // requests (and keep them off other worker threads): its service then gets a task
        // per request for a while. A body still pending after its first poll moves to a
        // task of its own; it registers that task's waker at its next poll.
        if inline {
            let polled = request
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
            let now = match polled {
                Poll::Ready(ended) => ended,
                Poll::Pending => Instant::now(),
            };
            if now.saturating_duration_since(arrived) > INLINE_POLL_LIMIT {
                spawn_left.store(SPAWN_AFTER_SLOW_POLL, Ordering::Relaxed);
                tracing::debug!(
                    service = entry.name,
                    "a first poll took long: running this service's next requests in tasks"
                );
            }
            if polled.is_ready() {
                return;
            }
        } else {
            spawn_left.fetch_sub(1, Ordering::Relaxed);
        }
        let id = header.request_id;
        let cleanup = tasks.clone();
        // Held across the spawn, so that the task cannot finish (and unregister) before it
        // is registered.
        let mut running = lock(&tasks.running);
        let handle = tokio::spawn(async move {
            let _ended = request.await;
            lock(&cleanup.running).remove(&id);
        });
        running.insert(id, handle.abort_handle());
    }

    /// Send the reply of a request that ran.
    fn reply(&self, conn: &Connection, header: &Header, outcome: Outcome) {
        let mut reply = Header::new(Kind::Response, header.request_id);
        reply.service = header.service;
        match outcome {
            Outcome::Ok(bytes) => {
                conn.send(&reply, &bytes);
            }
            Outcome::Err(bytes) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                reply.kind = Kind::Error;
                conn.send(&reply, &bytes);
            }
            Outcome::Fault(err) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                reply.kind = Kind::Fault;
                conn.send(&reply, &wire::encode_fault(&err));
            }
        }
    }
}

/// A first poll of a request's body that takes longer than this (measured from the
/// request's arrival) sends its service's next requests to tasks of their own.
const INLINE_POLL_LIMIT: Duration = Duration::from_micros(200);
/// How many requests of a service get a task of their own after a slow first poll.
const SPAWN_AFTER_SLOW_POLL: u32 = 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a request in flight until dropped, even when the request is cancelled.
struct InFlight {
    host: Arc<Host>,
    /// When the request ended, if known without reading the clock again.
    ended: Option<Instant>,
}

impl InFlight {
    /// The request ended at `now`.
    fn end(mut self, now: Instant) {
        self.ended = Some(now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let host = &self.host;
        host.completed.fetch_add(1, Ordering::Relaxed);
        if host.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = self.ended.unwrap_or_else(Instant::now);
            let busy = host
                .micros_at(now)
                .saturating_sub(host.busy_since.load(Ordering::Relaxed));
            host.busy_total.fetch_add(busy, Ordering::Relaxed);
            if host.draining.load(Ordering::Acquire) {
                host.idle.notify_waiters();
            }
        }
    }
}

/// Runs a hosted request's body in its context, under its deadline, catching panics, as a
/// server span (a child of the caller's span in `ctx`): what the router's `dispatch` does
/// for the services this process hosts (the gateway's calls in `APP run`).
impl crate::call::LocalRunner for Host {
    fn run(
        &self,
        entry: &'static ServiceEntry,
        args: bytes::Bytes,
        ctx: CallContext,
    ) -> futures_util::future::BoxFuture<'static, Outcome> {
        Box::pin(async move { serve_body(entry, args, ctx, None, false).await.0 })
    }
}

/// Run one request's body (see [`crate::call::LocalRunner`]) for a request that `arrived` at a connection. A body polled `inline`, as
/// the request is read, starts at its arrival; any other waited in a queue until now.
/// Returns the outcome and when it came.
async fn serve_body(
    entry: &'static ServiceEntry,
    args: bytes::Bytes,
    mut ctx: CallContext,
    arrived: Option<Instant>,
    inline: bool,
) -> (Outcome, Instant) {
    let started = arrived.filter(|_| inline);
    let mut span = crate::telemetry::CallSpan::server(entry, &mut ctx, started);
    if let Some(arrived) = arrived {
        span.queued_since(arrived);
    }
    let outcome = span.enter(run_in(entry, args, ctx)).await;
    let ended = Instant::now();
    span.served(&outcome);
    span.ended_at(ended);
    (outcome, ended)
}

async fn run_in(entry: &'static ServiceEntry, args: bytes::Bytes, ctx: CallContext) -> Outcome {
    let deadline = ctx.deadline;
    let body = context::scope(ctx, (entry.handle)(args));
    let body = async move {
        if entry.options.blocking {
            let handle = tokio::runtime::Handle::current();
            match tokio::task::spawn_blocking(move || handle.block_on(body)).await {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Fault(panicked(entry, e.is_panic())),
            }
        } else {
            std::panic::AssertUnwindSafe(body)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Outcome::Fault(panicked(entry, true)))
        }
    };
    // A body that finishes in its first poll needs no timer: arm one only if it waits.
    let mut body = std::pin::pin!(body);
    if let Poll::Ready(outcome) =
        std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll(cx))).await
    {
        return outcome;
    }
    match deadline {
        Some(d) => {
            let budget = d.saturating_duration_since(Instant::now());
            tokio::time::timeout_at(d.into(), body)
                .await
                .unwrap_or_else(|_| {
                    Outcome::Fault(CallError::DeadlineExceeded {
                        service: entry.name.to_owned(),
                        budget,
                    })
                })
        }
        None => body.await,
    }
}

fn panicked(entry: &ServiceEntry, panic: bool) -> CallError {
    tracing::error!(service = entry.name, "handler panicked");
    CallError::Internal {
        service: entry.name.to_owned(),
        message: if panic {
            "the handler panicked; see the instance's log".to_owned()
        } else {
            "the handler was cancelled".to_owned()
        },
    }
}

/// Connects a host to one connection's frames.
struct HostHandler {
    host: Arc<Host>,
    tasks: std::sync::OnceLock<Arc<ConnectionTasks>>,
}

impl Handler for HostHandler {
    fn on_frame(self: Arc<Self>, conn: &Connection, frame: Frame) {
        let tasks = self.tasks.get_or_init(|| {
            let tasks = Arc::new(ConnectionTasks::new(conn));
            lock(&self.host.connections).push(Arc::downgrade(&tasks));
            if self.host.draining.load(Ordering::Acquire) {
                conn.go_away();
            }
            tasks
        });
        match frame.header.kind {
            Kind::Request => self.host.start(tasks, frame),
            Kind::Cancel => {
                // A body that finished inline, or already replied, has nothing to stop.
                if let Some(task) = lock(&tasks.running).remove(&frame.header.request_id) {
                    task.abort();
                }
            }
            Kind::Ping => {
                let load = self.host.load();
                let payload = postcard::to_stdvec(&load).unwrap_or_default();
                conn.send(&Header::new(Kind::Pong, frame.header.request_id), &payload);
            }
            _ => {}
        }
    }

    fn on_close(&self, _conn: &Connection) {
        if let Some(tasks) = self.tasks.get() {
            // The caller is gone: nobody will read these replies.
            for (_, task) in lock(&tasks.running).drain() {
                task.abort();
            }
        }
    }
}

/// Accept connections on `listener` and serve `host`'s services until `shutdown`
/// resolves; then drain: stop accepting, finish the work in flight, and return.
pub async fn serve(
    mut listener: impl Listener,
    host: Arc<Host>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Typically out of file descriptors: give the process a moment.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let host = host.clone();
        tokio::spawn(async move {
            let handler = Arc::new(HostHandler {
                host: host.clone(),
                tasks: std::sync::OnceLock::new(),
            });
            let result = Connection::establish(
                stream,
                peer.clone(),
                false,
                &host.hello,
                crate::call::local_ids(),
                host.config.connection,
                Some(handler as Arc<dyn Handler>),
            )
            .await;
            if let Err(e) = result {
                tracing::warn!(%peer, error = %e, "refused connection");
            }
        });
    }
    drop(listener);
    let abandoned = host.drain().await;
    if abandoned > 0 {
        tracing::warn!(abandoned, "drain timed out with requests still in flight");
    }
}

impl crate::telemetry::metrics::LoadSource for Host {
    fn load(&self) -> LoadReport {
        Host::load(self)
    }

    fn is_draining(&self) -> bool {
        Host::is_draining(self)
    }
}
