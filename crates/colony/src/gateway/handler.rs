//! One HTTP request through the gateway: its route, its arguments as named JSON, its
//! deadline and request id, its tries, and its answer (JSON, or problem+json).
//!
//! Must not touch: connections and their timeouts (`server`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::call::{CallOptions, DEFAULT_TIMEOUT, Reply, Router};
use crate::error::CallError;
use crate::retry::Retrier;
use crate::service::ServiceEntry;

use super::openapi;
use super::problem::{self, Problem};
use super::route::{self, Api, Lookup, Target};
use super::{
    Gateway, GatewayConfig, Inner, MAX_REQUEST_ID, REQUEST_ID_HEADER, TIMEOUT, TIMEOUT_HEADER,
    TRACEPARENT_HEADER, TRACERESPONSE_HEADER,
};

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

    // Why this is long: it is one request in order (deadline header, arguments, tries,
    // answer), each step returning its own problem+json; it reads best top to bottom.
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
        // A client that sends its head and then its body slowly, or never, holds nothing
        // but its connection for at most the body timeout: the in-flight permit is taken
        // only once the request can run.
        let body_timeout = inner.config.body_read_timeout;
        let body = match tokio::time::timeout(body_timeout, read_body(body, max)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(BodyError::TooLarge)) => return Err(too_large()),
            Ok(Err(BodyError::Read(e))) => {
                return Err(Problem::bad_request(format!(
                    "the body could not be read: {e}"
                )));
            }
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {}; send it whole, or raise \
                         --http-body-timeout",
                        crate::config::format_duration(body_timeout)
                    ),
                ));
            }
        };
        let payload = route::payload(route, params, parts.uri.query(), &body)
            .map_err(Problem::bad_request)?;
        let Ok(_permit) = inner.in_flight.try_acquire() else {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the gateway is at its limit of {} requests in flight; retry later",
                    inner.config.max_concurrent
                ),
            ));
        };
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
                Ok(value) => Err(problem::from_service_error(
                    entry.name,
                    value,
                    (entry.error_status)(&bytes),
                )),
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
        let mut options = CallOptions::inherit().with_deadline(deadline);
        options.attempt = Some(attempt);
        self.inner.router.dispatch(entry, payload, options).await
    }
}

fn content(body: Bytes, content_type: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
