//! The HTTP gateway: a standard HTTP/JSON API in front of the exposed services.
//!
//! Owns: [`Gateway`] (the routes of every `#[microservice(exposed)]`, the limits, and the
//! retries of the requests it forwards) and [`serve`] (HTTP/1.1 and HTTP/2 over cleartext
//! on one listener). Promises:
//!
//! - each exposed service answers at its `http` route, or at `POST /<name with :: as />`;
//!   path parameters, query parameters and a JSON body object fill its arguments by name;
//!   the result comes back as JSON, an error as `application/problem+json`;
//! - every request has an id (`x-request-id`, kept or made up) that reaches every service
//!   it calls, comes back in the answer, and is in each log line about it; a deadline
//!   (`x-colony-timeout`, else the service's); and a limit on its body;
//! - every request is a trace: it continues an incoming W3C `traceparent` or starts one,
//!   its calls are children of its span, and, when the caller sent a `traceparent`,
//!   `traceresponse` names it in the answer;
//! - a request whose instance died, could not be reached or refused it is re-run whole on
//!   another instance (see [`crate::retry`]): only here, never by the services' own calls;
//! - past the limit of requests in flight a request gets 503 at once; a client that sends
//!   its headers too slowly is cut off; none of this disturbs the other requests.
//!
//! Must not touch: how calls are routed between instances (the [`Router`] owns that).
//! `/` is an HTML page listing the routes, `/openapi.json` their OpenAPI 3.1 description.

mod openapi;
mod problem;
mod route;

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::call::{CallOptions, DEFAULT_TIMEOUT, Reply, Router};
use crate::context::CallContext;
use crate::error::CallError;
use crate::retry::{Retrier, RetryPolicy};
use crate::service::{Outcome, ServiceEntry};

use problem::Problem;
use route::{Api, Lookup, Target};

/// The header that carries a request's id.
pub const REQUEST_ID: &str = "x-request-id";
/// The header that carries a request's deadline, as `250ms`, `2s`, `1m`.
pub const TIMEOUT: &str = "x-colony-timeout";
/// The W3C header that carries the caller's trace context, continued by the request.
pub const TRACEPARENT: &str = "traceparent";
/// The answer's header naming the request's trace and the gateway's span, in
/// `traceparent` form (W3C Trace Context level 2).
pub const TRACERESPONSE: &str = "traceresponse";
/// The longest request id kept; a longer or non-printable one is replaced by a fresh id.
const MAX_REQUEST_ID: usize = 200;

// The same names as header names, made once: looking a header up or inserting it by a
// `&str` parses and validates the name on every request.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);
const TIMEOUT_HEADER: HeaderName = HeaderName::from_static(TIMEOUT);
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACERESPONSE_HEADER: HeaderName = HeaderName::from_static(TRACERESPONSE);

/// Whether a caller's `x-request-id` is kept: 1 to [`MAX_REQUEST_ID`] printable ASCII
/// characters, no spaces.
fn is_request_id(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_REQUEST_ID && value.iter().all(u8::is_ascii_graphic)
}

/// Why a request's body could not be read.
enum BodyError {
    /// It is longer than the limit.
    TooLarge,
    /// The connection failed, or the body is malformed.
    Read(Box<dyn std::error::Error + Send + Sync>),
}

/// The whole body, up to `max` bytes. A body that arrives in one piece (most do) is kept
/// as it came, with no copy.
async fn read_body<B>(body: B, max: usize) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut first = Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.into()))?;
        // Trailers carry no arguments.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let so_far = joined.as_ref().map_or(first.len(), |j| j.len());
        if so_far.saturating_add(data.len()) > max {
            return Err(BodyError::TooLarge);
        }
        if let Some(j) = joined.as_mut() {
            j.extend_from_slice(&data);
        } else if first.is_empty() {
            first = data;
        } else if !data.is_empty() {
            let mut j = bytes::BytesMut::with_capacity(first.len() + data.len());
            j.extend_from_slice(&first);
            j.extend_from_slice(&data);
            joined = Some(j);
        }
    }
    Ok(joined.map_or(first, bytes::BytesMut::freeze))
}

/// Settings of a [`Gateway`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// How long a client may take to send a request's headers (against slowloris): an
    /// HTTP/1 connection on which no complete request head comes for this long, while no
    /// request is in flight, is closed within a quarter of it more.
    pub header_read_timeout: Duration,
    /// The largest request body, in bytes; past it, 413.
    pub max_body: usize,
    /// Requests in flight past which new ones get 503 at once.
    pub max_concurrent: usize,
    /// How requests are retried when their instance fails.
    pub retry: RetryPolicy,
    /// How long a shutdown waits for requests in flight.
    pub drain_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            header_read_timeout: Duration::from_secs(10),
            max_body: 1 << 20,
            max_concurrent: 4096,
            retry: RetryPolicy::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// The gateway: routes, limits and retries, independent of any socket. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api,
    /// Where the exposed services' calls go (or run, when this process hosts them).
    router: Arc<Router>,
    retrier: Arc<Retrier>,
    /// One permit per request in flight.
    in_flight: Arc<Semaphore>,
    config: GatewayConfig,
    openapi: Bytes,
    /// The route page, with `HOST` where the address goes.
    index: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.inner.api.routes.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

type HttpResponse = Response<Full<Bytes>>;

impl Gateway {
    /// A gateway for every exposed service of this binary, calling them through `router`.
    ///
    /// Fails when two routes collide or a route cannot be matched, naming the services.
    pub fn new(router: Arc<Router>, config: GatewayConfig) -> Result<Gateway, String> {
        let api = Api::build()?;
        for entry in crate::service::registry() {
            if entry.options.http.is_some() && !entry.options.exposed {
                tracing::warn!(
                    service = entry.name,
                    "the service has an `http` route but is not `exposed`, so the gateway does \
                     not serve it; add `exposed` to its #[microservice]"
                );
            }
        }
        let openapi = serde_json::to_vec_pretty(&openapi::document(&api))
            .map_err(|e| format!("the OpenAPI document could not be written: {e}"))?;
        let index = openapi::index_page(&api);
        Ok(Gateway {
            inner: Arc::new(Inner {
                api,
                router,
                retrier: Retrier::new(config.retry),
                in_flight: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
                openapi: Bytes::from(openapi),
                index,
                config,
            }),
        })
    }

    /// The routes: method, path and service name of each.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str, &'static str)> {
        self.inner
            .api
            .routes
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.entry.name))
    }

    /// The OpenAPI 3.1 document served at `/openapi.json`.
    pub fn openapi(&self) -> serde_json::Value {
        serde_json::from_slice(&self.inner.openapi).unwrap_or_default()
    }

    /// Answer one HTTP request.
    pub async fn handle<B>(&self, request: Request<B>) -> HttpResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        // The caller's id when it is a sensible one (its header value is reused as it
        // came, no copy), else a fresh one.
        let given = parts
            .headers
            .get(&REQUEST_ID_HEADER)
            .filter(|v| is_request_id(v.as_bytes()));
        let mut fresh = [0u8; 64];
        let (request_id, id_header) = match given {
            Some(v) => (v.to_str().unwrap_or_default(), Some(v.clone())),
            None => {
                let id = crate::telemetry::hex_into(&fastrand::u128(..).to_be_bytes(), &mut fresh);
                (id, HeaderValue::from_str(id).ok())
            }
        };
        // A debug span costs nothing at the default level; the lines the gateway logs at
        // info and above name the request themselves.
        let span = tracing::debug_span!(
            "http",
            request_id = %request_id,
            method = %parts.method,
            path = %parts.uri.path(),
        );
        // The request's trace continues the caller's `traceparent`, or starts here; the
        // calls it makes are children of its span, and its log lines carry the trace id.
        let traceparent = parts
            .headers
            .get(&TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok());
        // Only a caller that traces gets `traceresponse`: it is for its tracing system, and
        // a client with none can find the request's lines by its `x-request-id`.
        let caller_traces = traceparent.is_some();
        let http = crate::telemetry::HttpSpan::start(
            traceparent,
            parts.method.as_str(),
            parts.uri.path(),
            request_id,
        );
        let ctx = http.context(request_id);
        let parts = &parts;
        // One allocation for the request's whole state machine, so that it is built in
        // place once instead of being moved, a few kilobytes at a time, through each
        // wrapper (the context scope, the span, hyper's dispatcher).
        let answer = Box::pin(
            async move {
                let started = Instant::now();
                let mut response = self.respond(parts, body, request_id).await;
                let status = response.status();
                let elapsed = started.elapsed();
                if status.is_server_error() {
                    tracing::warn!(request_id, status = status.as_u16(), ?elapsed, "answered");
                } else {
                    tracing::debug!(status = status.as_u16(), ?elapsed, "answered");
                }
                let headers = response.headers_mut();
                if let Some(v) = id_header {
                    headers.insert(REQUEST_ID_HEADER, v);
                }
                if caller_traces && let Ok(v) = HeaderValue::from_str(&http.traceparent()) {
                    headers.insert(TRACERESPONSE_HEADER, v);
                }
                http.finish(status.as_u16());
                response
            }
            .instrument(span),
        );
        crate::context::scope(ctx, answer).await
    }

    async fn respond<B>(&self, parts: &Parts, body: B, request_id: &str) -> HttpResponse
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = &*self.inner;
        let path = parts.uri.path();
        let Ok(_permit) = inner.in_flight.try_acquire() else {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the gateway is at its limit of {} requests in flight; retry later",
                    inner.config.max_concurrent
                ),
            )
            .into_response(path);
        };
        let (target, params) = match inner.api.lookup(&parts.method, path) {
            Lookup::Found(target, params) => (target, params),
            Lookup::WrongMethod(allowed) => {
                let allow: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
                let mut p = Problem::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!(
                        "`{path}` does not take {}; it takes {}",
                        parts.method,
                        allow.join(", ")
                    ),
                );
                p.allow = Some(allow.join(", "));
                return p.into_response(path);
            }
            Lookup::NotFound => {
                return Problem::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no route matches `{path}`; the routes are listed at / and /openapi.json"
                    ),
                )
                .into_response(path);
            }
        };
        match target {
            Target::Index => {
                let host = parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .filter(|h| {
                        h.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b))
                    })
                    .unwrap_or("127.0.0.1:8080");
                let page = inner
                    .index
                    .replace("http://HOST", &format!("http://{host}"));
                content(page.into(), "text/html; charset=utf-8")
            }
            Target::OpenApi => content(inner.openapi.clone(), "application/json"),
            Target::Service(i) => {
                let route = &inner.api.routes[i];
                let entry = route.entry;
                match self.call(route, &params, parts, body, request_id).await {
                    Ok(response) => response,
                    Err(problem) => problem.for_service(entry.name).into_response(path),
                }
            }
        }
    }

    /// Read the request's arguments, call the service (retrying), and answer.
    ///
    /// Runs inside the request's context, which carries its id to the calls it makes.
    async fn call<B>(
        &self,
        route: &route::Route,
        params: &[(&str, &str)],
        parts: &Parts,
        body: B,
        request_id: &str,
    ) -> Result<HttpResponse, Problem>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = &*self.inner;
        let entry = route.entry;
        let timeout = match parts.headers.get(&TIMEOUT_HEADER) {
            Some(v) => {
                let text = v.to_str().unwrap_or("");
                match crate::config::duration(text) {
                    Ok(t) if !t.is_zero() => t,
                    Ok(_) => {
                        return Err(Problem::bad_request(format!(
                            "header `{TIMEOUT}` must be longer than zero"
                        )));
                    }
                    Err(e) => return Err(Problem::bad_request(format!("header `{TIMEOUT}`: {e}"))),
                }
            }
            None => entry.options.timeout().unwrap_or(DEFAULT_TIMEOUT),
        };
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Err(Problem::bad_request(format!(
                "header `{TIMEOUT}` is too long"
            )));
        };
        let max = inner.config.max_body;
        let too_large = || {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than the gateway's limit of {max} bytes"),
            )
        };
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let body = match read_body(body, max).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => return Err(too_large()),
            Err(BodyError::Read(e)) => {
                return Err(Problem::bad_request(format!(
                    "the body could not be read: {e}"
                )));
            }
        };
        let payload = route::payload(route, params, parts.uri.query(), &body)
            .map_err(Problem::bad_request)?;
        let mut attempts = inner.retrier.begin(Some(deadline));
        let reply = loop {
            let attempt = attempts.number();
            match self.dispatch(entry, &payload, deadline, attempt).await {
                Err(e) if e.is_retryable() => match attempts.next().await {
                    Ok(()) => tracing::info!(
                        request_id,
                        service = entry.name,
                        attempt = attempts.number(),
                        error = %e,
                        "retrying on another instance"
                    ),
                    Err(why) => {
                        tracing::debug!(request_id, error = %e, ?why, "not retrying");
                        break Err(e);
                    }
                },
                other => break other,
            }
        };
        let tries = attempts.number() + 1;
        match reply {
            Ok(Reply::Ok(bytes)) => match (entry.ok_to_json_bytes)(&bytes) {
                Ok(json) => Ok(content(Bytes::from(json), "application/json")),
                Err(reason) => {
                    tracing::error!(request_id, service = entry.name, %reason, "the result could not be shown as JSON");
                    Err(Problem::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the result of service `{}` could not be read", entry.name),
                    ))
                }
            },
            Ok(Reply::Err(bytes)) => match (entry.result_to_json)(&bytes, false) {
                Ok(value) => Err(problem::from_service_error(entry.name, value)),
                Err(reason) => {
                    tracing::error!(request_id, service = entry.name, %reason, "the error could not be shown as JSON");
                    Err(Problem::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "service `{}` failed, and its error could not be read",
                            entry.name
                        ),
                    ))
                }
            },
            Err(e) => {
                if !matches!(
                    e,
                    CallError::BadArguments { .. } | CallError::DeadlineExceeded { .. }
                ) {
                    tracing::warn!(request_id, service = entry.name, error = %e, tries, "the call failed");
                }
                Err(problem::from_call_error(entry.name, &e, tries))
            }
        }
    }

    /// One try: run the service here if this process hosts it, else on an instance.
    async fn dispatch(
        &self,
        entry: &'static ServiceEntry,
        payload: &[u8],
        deadline: Instant,
        attempt: u16,
    ) -> Result<Reply, CallError> {
        let router = &self.inner.router;
        if router.hosts(entry.id() as usize) {
            let ctx = CallContext {
                deadline: Some(deadline),
                attempt,
                trace: crate::context::with(|c| c.trace).unwrap_or_default(),
                request_id: crate::context::with(|c| c.request_id.clone()).flatten(),
                router: Some(router.clone()),
                ..CallContext::default()
            };
            let outcome = crate::host::run_body(entry, Bytes::copy_from_slice(payload), ctx).await;
            return match outcome {
                Outcome::Ok(b) => Ok(Reply::Ok(Bytes::from(b))),
                Outcome::Err(b) => Ok(Reply::Err(Bytes::from(b))),
                Outcome::Fault(e) => Err(e),
            };
        }
        let mut options = CallOptions::inherit().with_deadline(deadline);
        options.attempt = Some(attempt);
        router.call(entry, payload, options).await
    }
}

fn content(body: Bytes, content_type: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Serve `gateway` on `listener` over HTTP/1.1 and HTTP/2 (cleartext, prior knowledge)
/// until `shutdown` completes; then stop accepting and wait for the requests in flight
/// (up to the drain timeout).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(
        listener,
        gateway,
        shutdown,
        |stream| async move { Ok(stream) },
    )
    .await;
}

/// Like [`serve`], with each accepted connection first passed through `handshake` (a TLS
/// acceptor, say), in the connection's own task and within the header-read timeout.
pub async fn serve_with<H, Fut, S>(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
    handshake: H,
) where
    H: Fn(tokio::net::TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = std::io::Result<S>> + Send,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;

    let config = gateway.inner.config.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Slow request heads are cut off by the connection's `IdleWatch` instead: hyper's
        // timer boxes a new timer per request and moves it in and out of the timer wheel.
        .header_read_timeout(None)
        .max_buf_size(256 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Duration::from_secs(30));
    let drain = Arc::new(Drain::default());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!(error = %e, "could not accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let activity = Arc::new(Activity::default());
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                // Hyper calls the service once the request's head is in.
                let busy = Busy::new(activity.clone());
                if request.version() == hyper::Version::HTTP_2 {
                    activity.http2.store(true, Ordering::Relaxed);
                }
                let gateway = gateway.clone();
                async move {
                    let response = gateway.handle(request).await;
                    Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
                }
            })
        };
        let (builder, drain, handshake) = (builder.clone(), drain.clone(), handshake.clone());
        let header_timeout = config.header_read_timeout;
        tokio::spawn(async move {
            // The first bytes, and the handshake, must come within the header timeout too:
            // the HTTP/1-or-2 detection waits for them with no timer of its own.
            let start = async move {
                let mut first = [0u8; 3];
                let n = stream.peek(&mut first).await.ok().filter(|&n| n > 0)?;
                // HTTP/2 with prior knowledge has no header timeout, as with hyper's own.
                let http2 = first[..n] == *b"PRI";
                Some((handshake(stream).await.ok()?, http2))
            };
            let Ok(Some((stream, http2))) = tokio::time::timeout(header_timeout, start).await
            else {
                tracing::debug!(%peer, "HTTP connection closed: nothing, or no handshake, in time");
                return;
            };
            let idle = (!http2).then(|| IdleWatch::new(activity, header_timeout));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            match drain.watch(conn, |c| c.graceful_shutdown(), idle).await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTP connection closed with an error");
                }
                None => tracing::debug!(
                    %peer,
                    "HTTP connection cut off: no request head came in time"
                ),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(config.drain_timeout, drain.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in flight after the drain timeout; closing");
    }
}

/// The open connections, and the signal that tells them to finish: like hyper-util's
/// `GracefulShutdown`, without a channel polled on every poll of every connection. A
/// connection's poll reads one flag; its task's waker is registered once.
#[derive(Default)]
struct Drain {
    /// Set once the gateway shuts down.
    draining: AtomicBool,
    /// The waker of each open connection's task, by connection number; empty when none is
    /// open.
    open: std::sync::Mutex<HashMap<u64, Waker>>,
    /// The next connection number.
    next: AtomicU64,
    /// Notified when a connection closes.
    closed: tokio::sync::Notify,
}

impl Drain {
    /// `conn`, counted as open until it completes (or is dropped), and told to finish with
    /// `shut` once the drain starts. With `idle`, a connection on which no request head
    /// comes for its limit is dropped, and the answer is `None`.
    async fn watch<C, F>(
        self: Arc<Self>,
        conn: C,
        shut: F,
        mut idle: Option<IdleWatch>,
    ) -> Option<C::Output>
    where
        C: Future,
        F: Fn(Pin<&mut C>),
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let _open = Open {
            drain: self.clone(),
            id,
        };
        let mut conn = std::pin::pin!(conn);
        let mut registered: Option<Waker> = None;
        let mut told = false;
        std::future::poll_fn(|cx| {
            // A task's waker rarely changes: it is registered again only when it does.
            let new_waker = registered.as_ref().is_none_or(|w| !w.will_wake(cx.waker()));
            if new_waker {
                registered = Some(cx.waker().clone());
            }
            if let Some(watch) = idle.as_mut() {
                match watch.poll(cx, new_waker) {
                    Watch::Keep => {}
                    Watch::Stop => idle = None,
                    Watch::Cut => return Poll::Ready(None),
                }
            }
            if !told {
                if new_waker {
                    self.lock().insert(id, cx.waker().clone());
                }
                // Read after registering: `shutdown` sets the flag before it wakes the
                // registered tasks, so either it wakes this one or this one sees the flag.
                if self.draining.load(Ordering::SeqCst) {
                    shut(conn.as_mut());
                    told = true;
                }
            }
            conn.as_mut().poll(cx).map(Some)
        })
        .await
    }

    /// Tell every open connection to finish, and wait until none is open.
    async fn shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for waker in self.lock().values() {
            waker.wake_by_ref();
        }
        loop {
            let closed = self.closed.notified();
            if self.lock().is_empty() {
                return;
            }
            closed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waker>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one connection's requests report, so that its [`IdleWatch`] can tell a client that
/// sends nothing, or a request head too slowly, from one that is being served.
#[derive(Default)]
struct Activity {
    /// Requests whose head is in and whose answer is not yet written.
    in_flight: AtomicUsize,
    /// Requests answered so far.
    answered: AtomicU64,
    /// The connection turned out to be HTTP/2, which has no header timeout.
    http2: AtomicBool,
}

/// One request of a connection, from its head's arrival until its answer is written (or
/// dropped).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request counted as in flight until hyper has written it
/// and dropped it, so that a client slow to read a large answer is not taken for idle.
struct Tracked {
    body: Full<Bytes>,
    _busy: Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How many checks a header timeout is split into: an idle connection is cut off after
/// between 1 and 1 + 1/`IDLE_CHECKS` header timeouts.
const IDLE_CHECKS: u32 = 4;

/// The header timeout of an HTTP/1 connection, checked a few times per timeout on one timer
/// of the connection's: the connection is cut off once no request was in flight and none
/// was answered for [`IDLE_CHECKS`] checks in a row, that is when no request head has come
/// for a header timeout since the connection was served or last answered. Per request it
/// costs two counter updates, where hyper's own header timer costs a boxed timer and two
/// timer-wheel operations.
struct IdleWatch {
    activity: Arc<Activity>,
    every: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// `answered` at the last check.
    seen: u64,
    /// Checks in a row that found nothing in flight and nothing answered.
    quiet: u32,
    /// The timer has the task's current waker: until it fires, it need not be polled.
    armed: bool,
}

/// What an [`IdleWatch`] says about its connection.
enum Watch {
    /// Serve on.
    Keep,
    /// Serve on, and stop watching (the connection is HTTP/2).
    Stop,
    /// Close it: no request head came in time.
    Cut,
}

impl IdleWatch {
    fn new(activity: Arc<Activity>, header_timeout: Duration) -> IdleWatch {
        let every = (header_timeout / IDLE_CHECKS).max(Duration::from_millis(1));
        IdleWatch {
            activity,
            every,
            timer: Box::pin(tokio::time::sleep(every)),
            seen: 0,
            quiet: 0,
            armed: false,
        }
    }

    /// Check the connection if the timer fired; `new_waker` when the task's waker is not
    /// the one the timer has.
    fn poll(&mut self, cx: &mut std::task::Context<'_>, new_waker: bool) -> Watch {
        if self.activity.http2.load(Ordering::Relaxed) {
            return Watch::Stop;
        }
        // Most polls are for the connection's sockets: reading the timer's state is cheaper
        // than polling it, which charges the task's budget and registers its waker again.
        if self.armed && !new_waker && !self.timer.is_elapsed() {
            return Watch::Keep;
        }
        self.armed = true;
        while self.timer.as_mut().poll(cx).is_ready() {
            let answered = self.activity.answered.load(Ordering::Relaxed);
            if self.activity.in_flight.load(Ordering::Relaxed) > 0 || answered != self.seen {
                self.seen = answered;
                self.quiet = 0;
            } else {
                self.quiet += 1;
                if self.quiet >= IDLE_CHECKS {
                    return Watch::Cut;
                }
            }
            let next = tokio::time::Instant::now() + self.every;
            self.timer.as_mut().reset(next);
        }
        Watch::Keep
    }
}

/// A connection of a [`Drain`] while it is open.
struct Open {
    drain: Arc<Drain>,
    id: u64,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.drain.lock().remove(&self.id);
        self.drain.closed.notify_waiters();
    }
}

/// Bind `addr` and serve `router`'s exposed services there until `shutdown`.
pub async fn run(
    router: Arc<Router>,
    addr: &str,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> crate::Result<()> {
    let (listener, gateway) = bind(router, addr, config).await?;
    serve(listener, gateway, shutdown).await;
    Ok(())
}

/// Build the gateway and bind its listener (whose `local_addr` says where it listens); the
/// first half of [`run`].
pub async fn bind(
    router: Arc<Router>,
    addr: &str,
    config: GatewayConfig,
) -> crate::Result<(tokio::net::TcpListener, Gateway)> {
    let gateway = Gateway::new(router, config).map_err(crate::Error::Usage)?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::Error::io(
            format!(
                "the gateway could not listen on {addr} (pass --http 127.0.0.1:0 for any free \
                 port, or set COLONY_HTTP_ADDR)"
            ),
            e,
        )
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| crate::Error::io("the gateway's address is unknown", e))?;
    tracing::info!(addr = %local, routes = gateway.inner.api.routes.len(), "gateway serving");
    Ok((listener, gateway))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::{Activity, Busy, Drain, IDLE_CHECKS, IdleWatch};

    /// A connection that stays open until it is told to finish, then finishes at its next
    /// poll (as hyper's does once its request in flight is answered).
    async fn connection_until_told(drain: Arc<Drain>, told: Arc<AtomicBool>) -> &'static str {
        let flag = told.clone();
        let conn = std::future::poll_fn(move |_cx| {
            if flag.load(Ordering::SeqCst) {
                std::task::Poll::Ready("finished")
            } else {
                std::task::Poll::Pending
            }
        });
        drain
            .watch(conn, move |_| told.store(true, Ordering::SeqCst), None)
            .await
            .expect("not watched for idleness")
    }

    #[tokio::test]
    async fn a_drain_tells_open_connections_to_finish_and_waits_for_them() {
        let drain = Arc::new(Drain::default());
        let told = Arc::new(AtomicBool::new(false));
        let conn = tokio::spawn(connection_until_told(drain.clone(), told.clone()));
        // The connection registers at its first poll.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while drain.lock().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("the drain ends once the connection has finished");
        assert!(told.load(Ordering::SeqCst));
        assert_eq!(conn.await.expect("the task"), "finished");
        assert!(drain.lock().is_empty());
    }

    #[tokio::test]
    async fn a_connection_that_starts_during_a_drain_is_told_at_once() {
        let drain = Arc::new(Drain::default());
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("with nothing open, the drain ends at once");
        let told = Arc::new(AtomicBool::new(false));
        let finished = tokio::time::timeout(
            Duration::from_secs(5),
            connection_until_told(drain.clone(), told.clone()),
        )
        .await
        .expect("told at its first poll");
        assert_eq!(finished, "finished");
        assert!(drain.lock().is_empty(), "a finished connection is not open");
    }

    #[tokio::test]
    async fn a_dropped_connection_no_longer_holds_the_drain() {
        let drain = Arc::new(Drain::default());
        let conn = tokio::spawn(
            drain
                .clone()
                .watch(std::future::pending::<()>(), |_| {}, None),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while drain.lock().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::task::yield_now().await;
        }
        let shutdown = tokio::spawn({
            let drain = drain.clone();
            async move { drain.shutdown().await }
        });
        conn.abort();
        tokio::time::timeout(Duration::from_secs(5), shutdown)
            .await
            .expect("the drain ends once the connection is gone")
            .expect("the drain task");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_no_request_head_for_a_header_timeout_is_cut_off() {
        let timeout = Duration::from_secs(10);
        let activity = Arc::new(Activity::default());
        let drain = Arc::new(Drain::default());
        let idle = IdleWatch::new(activity.clone(), timeout);
        let started = tokio::time::Instant::now();
        let cut = drain
            .watch(std::future::pending::<()>(), |_| {}, Some(idle))
            .await;
        assert!(cut.is_none(), "cut off");
        let waited = started.elapsed();
        assert!(
            waited >= timeout && waited <= timeout + timeout / IDLE_CHECKS,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_or_answered_keep_a_connection() {
        let timeout = Duration::from_secs(10);
        let activity = Arc::new(Activity::default());
        let drain = Arc::new(Drain::default());
        let idle = IdleWatch::new(activity.clone(), timeout);
        let conn = tokio::spawn(drain.clone().watch(
            std::future::pending::<()>(),
            |_| {},
            Some(idle),
        ));
        // A request in flight for three timeouts, then one answered every half timeout.
        let busy = Busy::new(activity.clone());
        tokio::time::sleep(timeout * 3).await;
        drop(busy);
        for _ in 0..6 {
            tokio::time::sleep(timeout / 2).await;
            drop(Busy::new(activity.clone()));
        }
        assert!(!conn.is_finished(), "kept while in use");
        // Then nothing: cut off within a header timeout and a check.
        tokio::time::sleep(timeout + timeout / IDLE_CHECKS + Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        assert!(conn.is_finished(), "cut off once idle");
        assert!(conn.await.expect("the task").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_have_no_header_timeout() {
        let timeout = Duration::from_secs(10);
        let activity = Arc::new(Activity::default());
        activity.http2.store(true, Ordering::Relaxed);
        let drain = Arc::new(Drain::default());
        let idle = IdleWatch::new(activity, timeout);
        let conn = tokio::spawn(drain.clone().watch(
            std::future::pending::<()>(),
            |_| {},
            Some(idle),
        ));
        tokio::time::sleep(timeout * 5).await;
        assert!(!conn.is_finished());
        conn.abort();
    }
}
