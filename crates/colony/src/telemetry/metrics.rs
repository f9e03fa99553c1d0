//! Metrics: what every call and request of this process adds up to, in Prometheus form.
//!
//! Owns: the process's counters, gauges and histograms of calls (client and server side, by
//! service and outcome), time queued, HTTP requests, fail-overs and retries; the instance
//! load read from its [`Host`]s; [`render`] (the Prometheus text format, version 0.0.4) and
//! [`serve`] (`/metrics` and `/healthz` over HTTP/1.1). Promises: recording is a handful of
//! relaxed atomic additions on fixed memory — no lock, no allocation, no clock read beyond
//! the caller's — so it stays on for every call; the listener reads at most
//! [`MAX_REQUEST_HEAD`] bytes of a request, answers it, and closes. Must not touch: the call
//! path's decisions (it only counts them).
//!
//! The names are documented in `docs/metrics.md`. Series are indexed by service id, so a
//! service of this binary costs the same few hundred bytes whether it is called or not,
//! and nothing a peer sends can add series.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::CallError;
use crate::service;
use crate::wire::LoadReport;

/// The outcome labels of a call, in the order of [`Outcome`]'s discriminants.
const OUTCOMES: [&str; 15] = [
    "ok",
    "error",
    "no_instance",
    "unreachable",
    "overloaded",
    "draining",
    "unknown_service",
    "version_mismatch",
    "connection_lost",
    "deadline_exceeded",
    "cancelled",
    "bad_arguments",
    "internal",
    "protocol",
    "forbidden",
];

/// How a call ended: its service's answer (`Ok` or its own `Error`), or why Colony could
/// not complete it. The label of each is in `docs/metrics.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The service answered `Ok`.
    Ok = 0,
    /// The service answered its own error.
    Error = 1,
    NoInstance = 2,
    Unreachable = 3,
    Overloaded = 4,
    Draining = 5,
    UnknownService = 6,
    VersionMismatch = 7,
    ConnectionLost = 8,
    DeadlineExceeded = 9,
    /// The caller gave up (dropped its future, or its connection closed).
    Cancelled = 10,
    BadArguments = 11,
    Internal = 12,
    Protocol = 13,
    Forbidden = 14,
}

impl Outcome {
    /// The outcome of a failed call.
    pub(crate) fn of(err: &CallError) -> Outcome {
        match err {
            CallError::NoInstance { .. } => Outcome::NoInstance,
            CallError::Unreachable { .. } => Outcome::Unreachable,
            CallError::Overloaded { .. } => Outcome::Overloaded,
            CallError::Draining { .. } => Outcome::Draining,
            CallError::UnknownService { .. } => Outcome::UnknownService,
            CallError::VersionMismatch { .. } => Outcome::VersionMismatch,
            CallError::ConnectionLost { .. } => Outcome::ConnectionLost,
            CallError::DeadlineExceeded { .. } => Outcome::DeadlineExceeded,
            CallError::Cancelled { .. } => Outcome::Cancelled,
            CallError::BadArguments { .. } => Outcome::BadArguments,
            CallError::Internal { .. } => Outcome::Internal,
            CallError::Protocol { .. } => Outcome::Protocol,
            CallError::Forbidden { .. } => Outcome::Forbidden,
        }
    }

    /// The label value: `ok`, `error`, or the failure in snake case.
    pub(crate) fn label(self) -> &'static str {
        OUTCOMES[self as usize]
    }
}

/// Upper bounds of the latency buckets, in microseconds (100 µs to 10 s); `+Inf` follows.
const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram on fixed memory: a count per bucket (not cumulative; cumulated when
/// rendered) and the sum of the observations.
struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Append `name_bucket`, `name_sum` and `name_count` lines with `labels` (`a="b"`).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match BUCKETS_US.get(i) {
                Some(&le) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                        seconds(le)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// Microseconds as a Prometheus number of seconds (`0.0001`, `2.5`, `10`).
fn seconds(us: u64) -> String {
    let s = us as f64 / 1e6;
    format!("{s}")
}

/// One side (caller or callee) of the calls to one service.
struct Side {
    outcomes: [AtomicU64; OUTCOMES.len()],
    in_flight: AtomicI64,
    duration: Histogram,
}

impl Side {
    fn new() -> Side {
        Side {
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            in_flight: AtomicI64::new(0),
            duration: Histogram::new(),
        }
    }

    fn total(&self) -> u64 {
        self.outcomes
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .sum()
    }
}

/// Everything counted about one service.
struct ServiceMetrics {
    client: Side,
    server: Side,
    /// Time between a request's arrival and the start of its task.
    queued: Histogram,
    /// Calls sent to another instance after the first one certainly did not run them.
    failovers: AtomicU64,
}

/// The gateway's HTTP requests.
struct Http {
    /// By status code, 100 to 599.
    codes: [AtomicU64; 500],
    duration: Histogram,
}

struct Metrics {
    services: Vec<ServiceMetrics>,
    http: Http,
    /// Requests re-run by an outermost scope (the gateway or a `Client`).
    retries: AtomicU64,
    /// Requests refused before a service could be named (an unknown service id).
    refused_unknown: AtomicU64,
    /// What serves requests in this process (its hosts), for the instance load.
    loads: Mutex<Vec<Weak<dyn LoadSource>>>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        services: service::registry()
            .iter()
            .map(|_| ServiceMetrics {
                client: Side::new(),
                server: Side::new(),
                queued: Histogram::new(),
                failovers: AtomicU64::new(0),
            })
            .collect(),
        http: Http {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            duration: Histogram::new(),
        },
        retries: AtomicU64::new(0),
        refused_unknown: AtomicU64::new(0),
        loads: Mutex::new(Vec::new()),
    })
}

/// Which end of a call is counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The caller: `Router::call`.
    Client = 0,
    /// The callee: a request served by a host (or run by the gateway in its own process).
    Server = 1,
}

fn side(role: Role, service: u32) -> Option<&'static Side> {
    let s = metrics().services.get(service as usize)?;
    Some(match role {
        Role::Client => &s.client,
        Role::Server => &s.server,
    })
}

/// A call started: one more in flight.
pub(crate) fn started(role: Role, service: u32) {
    if let Some(s) = side(role, service) {
        s.in_flight.fetch_add(1, Ordering::Relaxed);
    }
}

/// A call that [`started`] ended with `outcome` after `elapsed`.
pub(crate) fn ended(role: Role, service: u32, outcome: Outcome, elapsed: Duration) {
    if let Some(s) = side(role, service) {
        s.in_flight.fetch_sub(1, Ordering::Relaxed);
        s.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        s.duration.observe(elapsed);
    }
}

/// A request refused by the host before its body ran (unknown service, forbidden,
/// draining, overloaded, undecodable).
pub(crate) fn refused(service: u32, err: &CallError) {
    match side(Role::Server, service) {
        Some(s) => {
            s.outcomes[Outcome::of(err) as usize].fetch_add(1, Ordering::Relaxed);
        }
        None => {
            metrics().refused_unknown.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A request waited `wait` between its arrival and the start of its task.
pub(crate) fn queued(service: u32, wait: Duration) {
    if let Some(s) = metrics().services.get(service as usize) {
        s.queued.observe(wait);
    }
}

/// A call failed over to another instance.
pub(crate) fn failover(service: u32) {
    if let Some(s) = metrics().services.get(service as usize) {
        s.failovers.fetch_add(1, Ordering::Relaxed);
    }
}

/// An outermost scope re-ran a request.
pub(crate) fn retry() {
    metrics().retries.fetch_add(1, Ordering::Relaxed);
}

/// The gateway answered an HTTP request with `status` after `elapsed`.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) fn http_request(status: u16, elapsed: Duration) {
    let http = &metrics().http;
    if let Some(c) = status
        .checked_sub(100)
        .and_then(|i| http.codes.get(usize::from(i)))
    {
        c.fetch_add(1, Ordering::Relaxed);
    }
    http.duration.observe(elapsed);
}

/// Something that serves requests and knows its load: a host hands itself in when it
/// starts, so that `/metrics` and `/healthz` report it without this module knowing what a
/// host is.
pub(crate) trait LoadSource: Send + Sync {
    /// The load now.
    fn load(&self) -> LoadReport;
    /// Whether it is draining (refusing new requests).
    fn is_draining(&self) -> bool;
}

/// Report `source`'s load in the instance metrics while it lives.
pub(crate) fn watch_load(source: Weak<dyn LoadSource>) {
    let mut loads = metrics().loads.lock().unwrap_or_else(|p| p.into_inner());
    loads.retain(|l| l.strong_count() > 0);
    loads.push(source);
}

/// The load sources still alive.
fn sources() -> Vec<std::sync::Arc<dyn LoadSource>> {
    let loads = metrics().loads.lock().unwrap_or_else(|p| p.into_inner());
    loads.iter().filter_map(Weak::upgrade).collect()
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

// Why this is long: one metric family after another, in the order of `docs/metrics.md`.
/// Every metric of this process in the Prometheus text format (version 0.0.4).
///
/// Series of a service appear once it has been called or served; the instance metrics
/// appear in a process that hosts services.
pub fn render() -> String {
    let m = metrics();
    let table = service::registry();
    let mut out = String::with_capacity(4096);
    for (role, prefix, what) in [
        (Role::Client, "colony_client", "Calls made by this process"),
        (
            Role::Server,
            "colony_server",
            "Requests served by this process",
        ),
    ] {
        let used: Vec<(&str, &Side)> = table
            .iter()
            .zip(&m.services)
            .map(|(e, s)| {
                (
                    e.name,
                    match role {
                        Role::Client => &s.client,
                        Role::Server => &s.server,
                    },
                )
            })
            .filter(|(_, s)| s.total() > 0 || s.in_flight.load(Ordering::Relaxed) != 0)
            .collect();
        let calls = format!("{prefix}_calls_total");
        header(
            &mut out,
            &calls,
            "counter",
            &format!("{what}, by service and outcome."),
        );
        for (name, s) in &used {
            for (i, label) in OUTCOMES.iter().enumerate() {
                let n = s.outcomes[i].load(Ordering::Relaxed);
                if n > 0 || i == Outcome::Ok as usize {
                    let _ = writeln!(
                        out,
                        "{calls}{{service=\"{}\",outcome=\"{label}\"}} {n}",
                        escape(name)
                    );
                }
            }
        }
        let duration = format!("{prefix}_duration_seconds");
        header(
            &mut out,
            &duration,
            "histogram",
            &format!("{what}: time from start to answer, by service."),
        );
        for (name, s) in &used {
            s.duration.render(
                &mut out,
                &duration,
                &format!("service=\"{}\"", escape(name)),
            );
        }
        let in_flight = format!("{prefix}_in_flight");
        header(
            &mut out,
            &in_flight,
            "gauge",
            &format!("{what}: those not yet answered, by service."),
        );
        for (name, s) in &used {
            let _ = writeln!(
                out,
                "{in_flight}{{service=\"{}\"}} {}",
                escape(name),
                s.in_flight.load(Ordering::Relaxed)
            );
        }
    }
    header(
        &mut out,
        "colony_server_queued_seconds",
        "histogram",
        "Time a request waited between its arrival and the start of its task, by service.",
    );
    for (e, s) in table.iter().zip(&m.services) {
        if s.queued.count() > 0 {
            s.queued.render(
                &mut out,
                "colony_server_queued_seconds",
                &format!("service=\"{}\"", escape(e.name)),
            );
        }
    }
    header(
        &mut out,
        "colony_server_refused_unknown_total",
        "counter",
        "Requests for a service id this instance does not know.",
    );
    let _ = writeln!(
        out,
        "colony_server_refused_unknown_total {}",
        m.refused_unknown.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "colony_client_failovers_total",
        "counter",
        "Calls sent to another instance because the first certainly did not run them, by service.",
    );
    for (e, s) in table.iter().zip(&m.services) {
        let n = s.failovers.load(Ordering::Relaxed);
        if n > 0 {
            let _ = writeln!(
                out,
                "colony_client_failovers_total{{service=\"{}\"}} {n}",
                escape(e.name)
            );
        }
    }
    header(
        &mut out,
        "colony_retries_total",
        "counter",
        "Requests re-run whole by an outermost scope (the gateway or a Client).",
    );
    let _ = writeln!(
        out,
        "colony_retries_total {}",
        m.retries.load(Ordering::Relaxed)
    );
    let codes: Vec<(usize, u64)> = m
        .http
        .codes
        .iter()
        .enumerate()
        .map(|(i, c)| (i + 100, c.load(Ordering::Relaxed)))
        .filter(|&(_, n)| n > 0)
        .collect();
    if !codes.is_empty() {
        header(
            &mut out,
            "colony_http_requests_total",
            "counter",
            "HTTP requests the gateway answered, by status code.",
        );
        for (code, n) in codes {
            let _ = writeln!(out, "colony_http_requests_total{{code=\"{code}\"}} {n}");
        }
        header(
            &mut out,
            "colony_http_request_duration_seconds",
            "histogram",
            "Time the gateway took to answer an HTTP request.",
        );
        m.http
            .duration
            .render(&mut out, "colony_http_request_duration_seconds", "");
    }
    render_instance(&mut out);
    out
}

/// The load of this process's hosts, summed (a process normally has one).
///
/// No `instance` label: a scraper adds its own (Prometheus: the target), and
/// `colony metrics` adds the instance id.
fn render_instance(out: &mut String) {
    let hosts = sources();
    if hosts.is_empty() {
        return;
    }
    let (mut in_flight, mut capacity, mut completed, mut errors, mut busy_us) = (0, 0, 0, 0, 0);
    let mut draining = 0;
    for host in &hosts {
        let load = host.load();
        in_flight += load.in_flight;
        capacity += load.capacity;
        completed += load.completed;
        errors += load.errors;
        busy_us += load.busy_micros;
        draining += u64::from(host.is_draining());
    }
    let rows: [(&str, &str, &str, String); 7] = [
        (
            "colony_instance_in_flight",
            "gauge",
            "Requests this instance is serving now.",
            in_flight.to_string(),
        ),
        (
            "colony_instance_capacity",
            "gauge",
            "Requests in flight past which this instance refuses new ones as overloaded.",
            capacity.to_string(),
        ),
        (
            "colony_instance_load_ratio",
            "gauge",
            "In flight divided by capacity.",
            format!("{}", in_flight as f64 / capacity.max(1) as f64),
        ),
        (
            "colony_instance_completed_total",
            "counter",
            "Requests this instance finished, however they ended.",
            completed.to_string(),
        ),
        (
            "colony_instance_errors_total",
            "counter",
            "Requests this instance answered with an error or a fault.",
            errors.to_string(),
        ),
        (
            "colony_instance_busy_seconds_total",
            "counter",
            "Time during which at least one request was in flight; its rate is the busy ratio.",
            format!("{}", busy_us as f64 / 1e6),
        ),
        (
            "colony_instance_draining",
            "gauge",
            "1 while the instance drains (refuses new requests, finishes the others).",
            draining.min(1).to_string(),
        ),
    ];
    for (name, kind, help, value) in rows {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// The most a request to the metrics listener may send before its blank line.
pub(crate) const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long a client of the metrics listener has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve `GET /metrics` ([`render`]) and `GET /healthz` (`ok`, or 503 `draining` once a
/// host of this process drains) on `listener` until `shutdown` resolves. One request per
/// connection; anything else gets 404 or 405.
pub(crate) async fn serve(listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(READ_TIMEOUT * 2, answer(stream)).await;
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "the metrics listener could not accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Read one request head (bounded) and answer it.
async fn answer(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_REQUEST_HEAD {
                return Ok(false);
            }
        }
    };
    let complete = tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or(Ok(false))?;
    if !complete {
        return respond(
            &mut stream,
            "431 Request Header Fields Too Large",
            "text/plain",
            "",
        )
        .await;
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
        )
        .await;
    }
    match path {
        "/metrics" => {
            let body = render();
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        "/healthz" => {
            if draining() {
                respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "draining\n",
                )
                .await
            } else {
                respond(&mut stream, "200 OK", "text/plain", "ok\n").await
            }
        }
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "not found; try /metrics or /healthz\n",
            )
            .await
        }
    }
}

/// Whether a host of this process is draining.
fn draining() -> bool {
    sources().iter().any(|h| h.is_draining())
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_in_seconds() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "service=\"a\"");
        assert!(
            out.contains("x_bucket{service=\"a\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{service=\"a\",le=\"0.0005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{service=\"a\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{service=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{service=\"a\"} 3\n"), "{out}");
        assert!(out.contains("x_sum{service=\"a\"} 60.00035\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("shop::quote"), "shop::quote");
    }

    #[test]
    fn every_failure_has_its_own_label() {
        let e = CallError::Overloaded {
            service: "s".into(),
            limit: 1,
        };
        assert_eq!(Outcome::of(&e).label(), "overloaded");
        assert_eq!(Outcome::Ok.label(), "ok");
        assert_eq!(Outcome::Forbidden.label(), "forbidden");
    }
}
