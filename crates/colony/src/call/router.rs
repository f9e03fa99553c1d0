//! Where this process's calls go: [`Router`], built by [`RouterBuilder`] from [`Peer`]s.
//!
//! Owns: which services run here, the endpoints that host each of the others (a snapshot
//! replaced whole when membership changes), the choice between them (power of two choices
//! on calls in flight, skipping ejected endpoints), failing over to another instance when
//! the first certainly did not run the call, and the client span of each remote call.
//! Promises: a call reads one consistent snapshot of the instances; a membership change
//! keeps live connections; failing over is never a retry (at most 3 endpoints, within the
//! deadline). Must not touch: sockets directly (through [`Dialer`] only), or serving.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::endpoint::{Decrement, Endpoint};
use super::{CallOptions, DEFAULT_TIMEOUT, Reply};
use crate::context::{self, CallContext};
use crate::error::CallError;
use crate::service::{self, ServiceEntry};
use crate::transport::{ConnectionConfig, Dialer, RequestError};
use crate::wire::{self, Header, Hello, Kind, TraceContext};

/// Where this process's calls go: which services run here, and the peers for the rest.
pub struct Router {
    /// Services hosted in this process, by id: calls to them run directly.
    hosted: Vec<bool>,
    /// The endpoints that host each service, by service id; replaced whole when
    /// membership changes, so a call reads one consistent snapshot.
    routes: std::sync::RwLock<Arc<Vec<Vec<Arc<Endpoint>>>>>,
    /// Every endpoint by address, so that a membership change keeps live connections.
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    pub(super) dialer: Arc<dyn Dialer>,
    pub(super) hello: Hello,
    pub(super) connection: ConnectionConfig,
    pub(super) connect_timeout: Duration,
    /// What runs the bodies of the hosted services from their encoded arguments (the
    /// process's `Host`, which hands itself in); weak, as the host holds this router.
    local: std::sync::OnceLock<std::sync::Weak<dyn LocalRunner>>,
}

/// Runs the body of a service this process hosts, from its encoded arguments, as a served
/// request (its span, deadline and panic guard). A `Host` is one, and hands itself to its
/// router, so that [`Router::dispatch`] can run hosted services without `call` knowing
/// what a host is.
pub(crate) trait LocalRunner: Send + Sync {
    /// Run `entry`'s body on `args` in `ctx`.
    fn run(
        &self,
        entry: &'static ServiceEntry,
        args: bytes::Bytes,
        ctx: CallContext,
    ) -> futures_util::future::BoxFuture<'static, service::Outcome>;
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("instance", &self.hello.instance)
            .finish_non_exhaustive()
    }
}

/// A `NAME=ADDR` peer: the services matching `NAME` are served at `ADDR`.
///
/// `NAME` is a full service name (`shop::pricing::quote`), a module prefix ending in
/// `::*` (`shop::pricing::*`), or `*` for every service the peer hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The service name or pattern.
    pub pattern: String,
    /// The address to dial.
    pub addr: String,
}

impl Peer {
    /// Parse `NAME=ADDR`.
    pub fn parse(s: &str) -> Result<Peer, String> {
        let (pattern, addr) = s.split_once('=').ok_or_else(|| {
            format!(
                "peer `{s}` is not NAME=ADDR; write it as `shop::pricing::quote=127.0.0.1:7001`, \
                 `shop::*=127.0.0.1:7001` or `*=127.0.0.1:7001`"
            )
        })?;
        let (pattern, addr) = (pattern.trim(), addr.trim());
        if pattern.is_empty() || addr.is_empty() {
            return Err(format!("peer `{s}` has an empty name or address"));
        }
        Ok(Peer {
            pattern: pattern.to_owned(),
            addr: addr.to_owned(),
        })
    }

    /// This peer with its name resolved against this binary's services: a unique suffix
    /// of a service's path (`checkout`), or of a module's (`shop::*`), becomes the full
    /// name. A name that matches no service, or more than one, is an error that says so.
    pub fn resolved(&self) -> Result<Peer, String> {
        let pattern = if self.pattern == "*" {
            self.pattern.clone()
        } else if let Some(module) = self.pattern.strip_suffix("::*") {
            format!("{}::*", service::resolve_module(module)?)
        } else {
            service::resolve(&self.pattern)?.name.to_owned()
        };
        Ok(Peer {
            pattern,
            addr: self.addr.clone(),
        })
    }

    /// Parse a comma-separated list, as in `COLONY_PEERS`.
    pub fn parse_list(s: &str) -> Result<Vec<Peer>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Peer::parse)
            .collect()
    }

    /// Whether this peer serves `service`.
    pub fn matches(&self, service: &str) -> bool {
        if self.pattern == "*" {
            return true;
        }
        match self.pattern.strip_suffix("::*") {
            Some(prefix) => service
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with("::")),
            None => self.pattern == service,
        }
    }
}

/// Builds a [`Router`].
pub struct RouterBuilder {
    hosted: Vec<String>,
    peers: Vec<Peer>,
    dialer: Arc<dyn Dialer>,
    connection: ConnectionConfig,
    connect_timeout: Duration,
}

impl std::fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("hosted", &self.hosted)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Start building a router that dials with `dialer`.
    pub fn builder(dialer: Arc<dyn Dialer>) -> RouterBuilder {
        RouterBuilder {
            hosted: Vec::new(),
            peers: Vec::new(),
            dialer,
            connection: ConnectionConfig::default(),
            connect_timeout: Duration::from_secs(3),
        }
    }

    /// Whether service `id` runs in this process.
    pub(crate) fn hosts(&self, id: usize) -> bool {
        self.hosted.get(id).copied().unwrap_or(false)
    }

    /// Run the hosted services' bodies through `runner` (this process's host). Only the
    /// first runner counts.
    pub(crate) fn run_hosted_with(&self, runner: std::sync::Weak<dyn LocalRunner>) {
        let _ = self.local.set(runner);
    }

    /// Call `entry` with an encoded argument tuple wherever it runs: in this process if it
    /// hosts the service (the same decision a generated wrapper makes, [`Router::hosts`]),
    /// else on one of its instances ([`Router::call`]). What the gateway and `APP call`
    /// send through.
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        entry: &'static ServiceEntry,
        payload: &[u8],
        options: CallOptions,
    ) -> Result<Reply, CallError> {
        let runner = self
            .hosts(entry.id() as usize)
            .then(|| self.local.get().and_then(std::sync::Weak::upgrade))
            .flatten();
        let Some(runner) = runner else {
            return self.call(entry, payload, options).await;
        };
        let outer = context::with(Clone::clone).unwrap_or_default();
        let deadline = options
            .deadline
            .or(outer.deadline)
            .unwrap_or_else(|| Instant::now() + entry.options.timeout().unwrap_or(DEFAULT_TIMEOUT));
        let ctx = CallContext {
            deadline: Some(deadline),
            attempt: options.attempt.unwrap_or(outer.attempt),
            trace: outer.trace,
            request_id: outer.request_id,
            router: Some(context::Routing::new(self.clone())),
            ..CallContext::default()
        };
        match runner
            .run(entry, bytes::Bytes::copy_from_slice(payload), ctx)
            .await
        {
            service::Outcome::Ok(b) => Ok(Reply::Ok(bytes::Bytes::from(b))),
            service::Outcome::Err(b) => Ok(Reply::Err(bytes::Bytes::from(b))),
            service::Outcome::Fault(e) => Err(e),
        }
    }

    /// Call `entry` with an encoded argument tuple, on one of its instances.
    ///
    /// The call is a client span: a child of the current context's span, counted in the
    /// metrics, and a `tracing` span when sampled.
    pub async fn call(
        &self,
        entry: &'static ServiceEntry,
        payload: &[u8],
        options: CallOptions,
    ) -> Result<Reply, CallError> {
        let (ctx_deadline, parent, ctx_attempt, request_id) =
            context::with(|c: &CallContext| (c.deadline, c.trace, c.attempt, c.request_id.clone()))
                .unwrap_or((None, TraceContext::default(), 0, None));
        let attempt = options.attempt.unwrap_or(ctx_attempt);
        let mut span =
            crate::telemetry::CallSpan::client(entry, &parent, attempt, request_id.as_ref());
        let deadline = options.deadline.or(ctx_deadline);
        let result = self
            .send(
                entry,
                payload,
                deadline,
                attempt,
                request_id.as_deref(),
                &mut span,
            )
            .await;
        span.ended_with(match &result {
            Ok(reply) => Ok(matches!(reply, Reply::Ok(_))),
            Err(e) => Err(e),
        });
        result
    }

    /// [`Router::call`] inside its span: pick an instance, send, fail over, wait.
    async fn send(
        &self,
        entry: &'static ServiceEntry,
        payload: &[u8],
        deadline: Option<Instant>,
        attempt: u16,
        request_id: Option<&str>,
        span: &mut crate::telemetry::CallSpan,
    ) -> Result<Reply, CallError> {
        // One clock read for the span, the deadline and the budget.
        let now = span.started();
        let deadline =
            deadline.unwrap_or_else(|| now + entry.options.timeout().unwrap_or(DEFAULT_TIMEOUT));
        let budget = deadline.saturating_duration_since(now);
        let deadline_exceeded = || CallError::DeadlineExceeded {
            service: entry.name.to_owned(),
            budget,
        };
        if budget.is_zero() {
            return Err(deadline_exceeded());
        }
        let header = Header {
            kind: Kind::Request,
            attempt,
            service: 0,
            request_id: 0,
            deadline_us: budget.as_micros().clamp(1, u64::MAX as u128) as u64,
            trace: span.trace(),
        };
        let request_id = request_id.unwrap_or("");
        let (prefix, request_id) = wire::request_meta(request_id);
        let prefix = &prefix[..wire::request_meta_prefix_len(request_id)];
        let parts: [&[u8]; 3] = [prefix, request_id.as_bytes(), payload];
        // Fail over to another instance only when the first one certainly did not run the
        // call (it was unreachable, draining, or no longer hosts the service): that is not a
        // retry, so it is safe at every level of a call chain.
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        loop {
            let endpoint = self.pick(entry, &tried)?;
            span.peer(&endpoint.addr);
            let result = self
                .call_on(&endpoint, entry, header, &parts, deadline, budget)
                .await;
            match result {
                Err(e)
                    if matches!(
                        e,
                        CallError::Unreachable { .. }
                            | CallError::Draining { .. }
                            | CallError::UnknownService { .. }
                    ) && tried.len() < 3
                        && Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "failing over to another instance");
                    crate::telemetry::metrics::failover(entry.id());
                    tried.push(endpoint);
                    if self.pick(entry, &tried).is_err() {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// Send one call to `endpoint` and wait for its reply.
    async fn call_on(
        &self,
        endpoint: &Arc<Endpoint>,
        entry: &'static ServiceEntry,
        mut header: Header,
        parts: &[&[u8]],
        deadline: Instant,
        budget: Duration,
    ) -> Result<Reply, CallError> {
        let deadline_exceeded = || CallError::DeadlineExceeded {
            service: entry.name.to_owned(),
            budget,
        };
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = Decrement(&endpoint.in_flight);
        let conn = match endpoint.current() {
            Some(conn) => conn,
            None => tokio::time::timeout_at(deadline.into(), endpoint.connect(self, entry.name))
                .await
                .map_err(|_| deadline_exceeded())?
                .inspect_err(|e| {
                    if matches!(e, CallError::Unreachable { .. }) {
                        endpoint.record_failure();
                    }
                })?,
        };
        header.service =
            conn.remote_id_of(entry.id())
                .ok_or_else(|| CallError::UnknownService {
                    service: entry.name.to_owned(),
                    peer: format!("{} ({})", conn.peer(), conn.remote_instance()),
                    hosted: conn.remote_services().collect::<Vec<_>>().join(", "),
                })?;
        let frame = conn
            .request(header, parts, Some(deadline))
            .await
            .map_err(|e| match e {
                RequestError::Deadline => deadline_exceeded(),
                RequestError::Backlogged { queued, limit } => CallError::Unreachable {
                    service: entry.name.to_owned(),
                    addr: conn.peer().to_owned(),
                    reason: format!(
                        "nothing was sent: {queued} bytes already wait for it to read them \
                         (limit {limit}), so it reads slower than calls are sent to it"
                    ),
                },
                RequestError::Closed(reason) => {
                    endpoint.record_failure();
                    CallError::ConnectionLost {
                        service: entry.name.to_owned(),
                        reason,
                    }
                }
            })?;
        endpoint.record_success();
        match frame.header.kind {
            Kind::Response => Ok(Reply::Ok(frame.payload)),
            Kind::Error => Ok(Reply::Err(frame.payload)),
            Kind::Fault => {
                Err(
                    wire::decode_fault(&frame.payload).unwrap_or_else(|e| CallError::Protocol {
                        reason: e.to_string(),
                    }),
                )
            }
            other => Err(CallError::Protocol {
                reason: format!("expected a reply, got a {other:?} frame"),
            }),
        }
    }

    /// Power of two choices on calls in flight, among the endpoints not ejected (or among
    /// all of them when every one is ejected).
    fn pick(
        &self,
        entry: &'static ServiceEntry,
        exclude: &[Arc<Endpoint>],
    ) -> Result<Arc<Endpoint>, CallError> {
        let routes = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let route = routes
            .get(entry.id() as usize)
            .map_or(&[][..], Vec::as_slice);
        if let [only] = route
            && exclude.is_empty()
        {
            return Ok(only.clone());
        }
        let all: Vec<&Arc<Endpoint>> = route
            .iter()
            .filter(|e| !exclude.iter().any(|x| Arc::ptr_eq(x, e)))
            .collect();
        if all.is_empty() {
            return Err(CallError::NoInstance {
                service: entry.name.to_owned(),
            });
        }
        if all.len() == 1 {
            return Ok(all[0].clone());
        }
        let now = Instant::now();
        let healthy: Vec<&Arc<Endpoint>> =
            all.iter().copied().filter(|e| !e.is_ejected(now)).collect();
        let candidates = if healthy.is_empty() { all } else { healthy };
        let n = candidates.len();
        if n == 1 {
            return Ok(candidates[0].clone());
        }
        let a = fastrand::usize(..n);
        let b = (a + 1 + fastrand::usize(..n - 1)) % n;
        let (ea, eb) = (candidates[a], candidates[b]);
        Ok(if ea.load() <= eb.load() { ea } else { eb }.clone())
    }

    /// Replace the instances of `service` with those at `addrs`. Connections to addresses
    /// that stay are kept; calls in flight finish on the connection they started on.
    pub fn set_instances(&self, service: &str, addrs: &[String]) -> Result<(), String> {
        let entry = service::find(service).ok_or_else(|| service::not_found(service))?;
        let endpoints: Vec<Arc<Endpoint>> = {
            let mut known = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            addrs
                .iter()
                .map(|a| {
                    known
                        .entry(a.clone())
                        .or_insert_with(|| Endpoint::new(a))
                        .clone()
                })
                .collect()
        };
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        let mut next = (**routes).clone();
        next[entry.id() as usize] = endpoints;
        *routes = Arc::new(next);
        Ok(())
    }

    /// The addresses of the instances this router knows for `service`.
    pub fn instances(&self, service: &str) -> Vec<String> {
        let Some(entry) = service::find(service) else {
            return Vec::new();
        };
        let routes = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        routes
            .get(entry.id() as usize)
            .map(|eps| eps.iter().map(|e| e.addr.clone()).collect())
            .unwrap_or_default()
    }
}

impl RouterBuilder {
    /// Services hosted in this process: calls to them run directly.
    pub fn hosted<I, S>(mut self, services: I) -> RouterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hosted.extend(services.into_iter().map(Into::into));
        self
    }

    /// Add a peer.
    pub fn peer(mut self, peer: Peer) -> RouterBuilder {
        self.peers.push(peer);
        self
    }

    /// Add peers.
    pub fn peers(mut self, peers: impl IntoIterator<Item = Peer>) -> RouterBuilder {
        self.peers.extend(peers);
        self
    }

    /// Connection limits.
    pub fn connection(mut self, config: ConnectionConfig) -> RouterBuilder {
        self.connection = config;
        self
    }

    /// How long a dial may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> RouterBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// Build the router. Fails when a hosted service or a peer's exact name is not a
    /// service of this binary.
    pub fn build(self) -> Result<Arc<Router>, String> {
        let table = service::registry();
        let mut hosted = vec![false; table.len()];
        for name in &self.hosted {
            hosted[service::resolve(name)?.id() as usize] = true;
        }
        let mut by_addr: HashMap<String, Arc<Endpoint>> = HashMap::new();
        let mut routes: Vec<Vec<Arc<Endpoint>>> = vec![Vec::new(); table.len()];
        for peer in &self.peers {
            let peer = peer
                .resolved()
                .map_err(|e| format!("--peer {}: {e}", peer.pattern))?;
            let endpoint = by_addr
                .entry(peer.addr.clone())
                .or_insert_with(|| Endpoint::new(&peer.addr))
                .clone();
            for entry in table.iter().filter(|e| peer.matches(e.name)) {
                let route = &mut routes[entry.id() as usize];
                if !route.iter().any(|e| Arc::ptr_eq(e, &endpoint)) {
                    route.push(endpoint.clone());
                }
            }
        }
        let hello = Hello {
            protocol: wire::PROTOCOL_VERSION,
            fingerprint: crate::identity::fingerprint().to_owned(),
            instance: crate::identity::instance_id().to_owned(),
            services: Vec::new(),
        };
        Ok(Arc::new(Router {
            hosted,
            routes: std::sync::RwLock::new(Arc::new(routes)),
            endpoints: Mutex::new(by_addr),
            dialer: self.dialer,
            hello,
            connection: self.connection,
            connect_timeout: self.connect_timeout,
            local: std::sync::OnceLock::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peers() {
        assert_eq!(
            Peer::parse("a::b=127.0.0.1:1"),
            Ok(Peer {
                pattern: "a::b".into(),
                addr: "127.0.0.1:1".into()
            })
        );
        assert!(Peer::parse("127.0.0.1:1").is_err());
        assert!(Peer::parse("=x").is_err());
        assert_eq!(Peer::parse_list("a=1, b=2,").map(|v| v.len()), Ok(2));
    }

    #[test]
    fn matches_patterns() {
        let p = |s: &str| Peer::parse(&format!("{s}=x")).expect("valid");
        assert!(p("*").matches("a::b"));
        assert!(p("a::*").matches("a::b"));
        assert!(p("a::*").matches("a::b::c"));
        assert!(!p("a::*").matches("ab::c"));
        assert!(p("a::b").matches("a::b"));
        assert!(!p("a::b").matches("a::bc"));
    }
}
