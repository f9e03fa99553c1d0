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

use std::convert::Infallible;
use std::sync::Arc;
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
    /// How long a client may take to send a request's headers (against slowloris).
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
                match crate::app::parse_duration(text) {
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
        let args = route::gather_args(route, params, parts.uri.query(), &body)
            .map_err(Problem::bad_request)?;
        let payload = (entry.json_to_args)(args).map_err(Problem::bad_request)?;
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
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(256 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Duration::from_secs(30));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let service = hyper::service::service_fn(move |request| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(request).await) }
        });
        let (builder, watcher, handshake) =
            (builder.clone(), graceful.watcher(), handshake.clone());
        let header_timeout = config.header_read_timeout;
        tokio::spawn(async move {
            // The first bytes, and the handshake, must come within the header timeout too:
            // the HTTP/1-or-2 detection waits for them with no timer of its own.
            let start = async move {
                stream.peek(&mut [0u8; 1]).await.ok().filter(|&n| n > 0)?;
                handshake(stream).await.ok()
            };
            let Ok(Some(stream)) = tokio::time::timeout(header_timeout, start).await else {
                tracing::debug!(%peer, "HTTP connection closed: nothing, or no handshake, in time");
                return;
            };
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "HTTP connection closed with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(config.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in flight after the drain timeout; closing");
    }
}

/// Bind `addr`, print `colony: gateway on http://ADDR` on stdout, and serve `router`'s
/// exposed services there until `shutdown`. What `APP gateway`, `APP run` and `colony up`
/// start.
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

/// Build the gateway and bind its listener, printing its address; the first half of [`run`].
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
    crate::app::announce(&format!("colony: gateway on http://{local}"));
    tracing::info!(addr = %local, routes = gateway.inner.api.routes.len(), "gateway serving");
    Ok((listener, gateway))
}

/// The gateway's command-line flags, shared by `APP gateway` and `APP run`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct HttpArgs {
    /// Where the HTTP gateway listens; port 0 picks a free port. The URL is printed on stdout.
    #[arg(
        long = "http",
        value_name = "ADDR",
        env = "COLONY_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub(crate) http: String,
    /// How long a client may take to send a request's headers.
    #[arg(long, env = "COLONY_HTTP_HEADER_TIMEOUT", value_parser = crate::app::parse_duration, default_value = "10s")]
    http_header_timeout: Duration,
    /// The largest request body, in bytes.
    #[arg(long, env = "COLONY_HTTP_MAX_BODY", default_value_t = 1 << 20)]
    http_max_body: usize,
    /// HTTP requests in flight past which new ones get 503.
    #[arg(long, env = "COLONY_HTTP_MAX_CONCURRENT", default_value_t = 4096)]
    http_max_concurrent: usize,
    /// Tries per request, the first included, when instances fail (1: no retries).
    #[arg(long, env = "COLONY_HTTP_MAX_ATTEMPTS", default_value_t = 4)]
    http_max_attempts: u16,
    /// Retries allowed per request on average (the retry budget), e.g. 0.2 for 20% extra load.
    #[arg(long, env = "COLONY_HTTP_RETRY_BUDGET", default_value_t = 0.2)]
    http_retry_budget: f64,
}

impl HttpArgs {
    /// The settings these flags describe.
    pub(crate) fn config(&self) -> crate::Result<GatewayConfig> {
        if self.http_max_body == 0 || self.http_max_concurrent == 0 {
            return Err(crate::Error::Usage(
                "--http-max-body and --http-max-concurrent must be at least 1".to_owned(),
            ));
        }
        if !(self.http_retry_budget.is_finite() && self.http_retry_budget >= 0.0) {
            return Err(crate::Error::Usage(
                "--http-retry-budget must be a number of at least 0, such as 0.2".to_owned(),
            ));
        }
        Ok(GatewayConfig {
            header_read_timeout: self.http_header_timeout,
            max_body: self.http_max_body,
            max_concurrent: self.http_max_concurrent,
            retry: RetryPolicy::default()
                .with_max_attempts(self.http_max_attempts)
                .with_budget_ratio(self.http_retry_budget),
            ..GatewayConfig::default()
        })
    }
}

/// Bind the gateway for a role of the binary (`run`, `gateway`), print its URL, and serve
/// it in a task until `shutdown`; the task ends once the requests in flight are done.
pub(crate) async fn spawn_for_role(
    args: &HttpArgs,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<tokio::task::JoinHandle<()>> {
    let (listener, gateway) = bind(router, &args.http, args.config()?).await?;
    Ok(tokio::spawn(serve(listener, gateway, shutdown)))
}
