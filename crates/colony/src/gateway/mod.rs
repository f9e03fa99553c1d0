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

//!
//! The files: `handler` (one request: route, arguments, deadline, retries, answer),
//! `server` (connections: HTTP/1.1 and h2c, timeouts, drain), `route` (the route table),
//! `problem` (problem+json), `openapi` (the OpenAPI document and the route page).

mod handler;
mod openapi;
mod problem;
mod route;
mod server;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderName;
use tokio::sync::Semaphore;

use crate::call::Router;
use crate::retry::{Retrier, RetryPolicy};

use route::Api;
pub use server::{serve, serve_with};

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

/// Settings of a [`Gateway`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// How long a client may take to send a request's headers (against slowloris): an
    /// HTTP/1 connection on which no complete request head comes for this long, while no
    /// request is in flight, is closed within a quarter of it more.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body, once its head is in
    /// (default 10 s): past it the request gets 408 and holds nothing.
    pub body_read_timeout: Duration,
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
            body_read_timeout: Duration::from_secs(10),
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
