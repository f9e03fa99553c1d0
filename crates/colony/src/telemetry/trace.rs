//! Trace context and sampling, and the span of each call.
//!
//! Owns: the [`Sampler`] (where a trace starts, whether it is recorded), W3C `traceparent`
//! parsing and writing, span ids, and the three kinds of span Colony makes: a call sent by
//! `Router::call` (client), a request served by a host (server), and an HTTP request at
//! the gateway. Promises: every call carries a trace id, sampled or not, so that every log
//! line of a request can be found; the span id that a frame carries is the id of the
//! caller's span, and the callee's span is its child, so that spans exported from many
//! processes form one tree; an unsampled call costs a few atomic additions (its metrics)
//! and two random numbers; a sampled call adds a `tracing` span, built only when its level
//! is enabled, and an exported span when an exporter is installed. Must not touch: how
//! calls are routed or served (callers hand it what happened).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use tracing::Span;
use tracing::field::Empty;

use super::metrics::{self, Outcome, Role};
use super::otlp;
use crate::context::CallContext;
use crate::error::CallError;
use crate::service::{self, ServiceEntry};
use crate::wire::TraceContext;

/// The share of new traces recorded when neither `OTEL_TRACES_SAMPLER` nor
/// `COLONY_TRACE_SAMPLE` says otherwise: one in ten.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.1;

/// Which traces are recorded (sampled): their spans are made and exported.
///
/// Where a trace starts (the gateway without a `traceparent`, or a call made outside any
/// request) the decision is drawn from the trace id, so that every process that sees the
/// trace decides alike; from then on it travels in the trace flags and every process
/// honours it. A `traceparent` that arrives at the gateway carries the caller's decision,
/// which a parent-based sampler keeps.
///
/// Unsampled requests still carry a trace id: their log lines can be followed all the same.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// The share of new traces recorded, 0 to 1.
    ratio: f64,
    /// Whether an incoming `traceparent` decides for its trace.
    parent_based: bool,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::ratio(DEFAULT_SAMPLE_RATIO)
    }
}

impl Sampler {
    /// Record every trace (`OTEL_TRACES_SAMPLER=always_on`).
    pub fn always_on() -> Sampler {
        Sampler {
            ratio: 1.0,
            parent_based: false,
        }
    }

    /// Record no trace (`always_off`).
    pub fn always_off() -> Sampler {
        Sampler {
            ratio: 0.0,
            parent_based: false,
        }
    }

    /// Record a share `ratio` (0 to 1) of new traces, and keep the decision of an incoming
    /// `traceparent` (`parentbased_traceidratio`).
    pub fn ratio(ratio: f64) -> Sampler {
        Sampler {
            ratio: if ratio.is_nan() {
                0.0
            } else {
                ratio.clamp(0.0, 1.0)
            },
            parent_based: true,
        }
    }

    /// The same sampler, keeping (`true`) or overriding (`false`) the decision of an
    /// incoming `traceparent`.
    pub fn parent_based(mut self, parent_based: bool) -> Sampler {
        self.parent_based = parent_based;
        self
    }

    /// The share of new traces recorded.
    pub fn share(&self) -> f64 {
        self.ratio
    }

    /// The sampler the environment asks for: `COLONY_TRACE_SAMPLE` (a share from 0 to 1),
    /// else `OTEL_TRACES_SAMPLER` with `OTEL_TRACES_SAMPLER_ARG` (`always_on`,
    /// `always_off`, `traceidratio`, and their `parentbased_` forms), else
    /// [`DEFAULT_SAMPLE_RATIO`], parent-based.
    pub fn from_env() -> Result<Sampler, String> {
        let vars = &crate::config::env().sampler;
        Sampler::from_vars(&|k| match k {
            "COLONY_TRACE_SAMPLE" => vars.colony.clone(),
            "OTEL_TRACES_SAMPLER" => vars.otel.clone(),
            "OTEL_TRACES_SAMPLER_ARG" => vars.otel_arg.clone(),
            _ => None,
        })
    }

    fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Sampler, String> {
        let share = |name: &str, text: &str| -> Result<f64, String> {
            match text.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(format!(
                    "{name}=`{text}` is not a share of traces; write a number from 0 to 1, \
                     such as 0.1"
                )),
            }
        };
        if let Some(text) = var("COLONY_TRACE_SAMPLE").filter(|t| !t.trim().is_empty()) {
            return Ok(Sampler::ratio(share("COLONY_TRACE_SAMPLE", &text)?));
        }
        let Some(name) = var("OTEL_TRACES_SAMPLER").filter(|t| !t.trim().is_empty()) else {
            return Ok(Sampler::default());
        };
        let arg = || -> Result<f64, String> {
            match var("OTEL_TRACES_SAMPLER_ARG") {
                Some(text) => share("OTEL_TRACES_SAMPLER_ARG", &text),
                None => Ok(1.0),
            }
        };
        Ok(match name.trim() {
            "always_on" => Sampler::always_on(),
            "always_off" => Sampler::always_off(),
            "traceidratio" => Sampler::ratio(arg()?).parent_based(false),
            "parentbased_always_on" => Sampler::always_on().parent_based(true),
            "parentbased_always_off" => Sampler::always_off().parent_based(true),
            "parentbased_traceidratio" => Sampler::ratio(arg()?),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER=`{other}` is not a sampler Colony knows; use always_on, \
                     always_off, traceidratio, parentbased_always_on, parentbased_always_off or \
                     parentbased_traceidratio"
                ));
            }
        })
    }
}

/// `ratio × 2^63`: a trace is recorded when the low 63 bits of its id fall below it.
static THRESHOLD: AtomicU64 = AtomicU64::new(threshold(DEFAULT_SAMPLE_RATIO));
static PARENT_BASED: AtomicBool = AtomicBool::new(true);

const fn threshold(ratio: f64) -> u64 {
    (ratio * 9_223_372_036_854_775_808.0) as u64
}

/// Use `sampler` for the traces that start in this process from now on.
pub fn set_sampler(sampler: Sampler) {
    THRESHOLD.store(threshold(sampler.ratio), Ordering::Relaxed);
    PARENT_BASED.store(sampler.parent_based, Ordering::Relaxed);
}

/// The sampler in use.
pub fn sampler() -> Sampler {
    Sampler {
        ratio: THRESHOLD.load(Ordering::Relaxed) as f64 / 9_223_372_036_854_775_808.0,
        parent_based: PARENT_BASED.load(Ordering::Relaxed),
    }
}

/// The decision for a trace that starts here, from its id (as OpenTelemetry's
/// `TraceIdRatioBased` draws it, so that other tools decide alike).
fn sample_new(trace_id: &[u8; 16]) -> bool {
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) >> 1) < THRESHOLD.load(Ordering::Relaxed)
}

fn new_trace_id() -> [u8; 16] {
    fastrand::u128(1..).to_be_bytes()
}

fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

/// A new span under `parent`: same trace and decision, a fresh span id. With no parent, a
/// new trace, recorded as the sampler decides.
pub(crate) fn child(parent: &TraceContext) -> TraceContext {
    let mut trace = *parent;
    if !trace.is_set() {
        trace.trace_id = new_trace_id();
        trace.flags = u8::from(sample_new(&trace.trace_id));
    }
    trace.span_id = new_span_id();
    trace
}

/// Bytes as lowercase hex, written without allocating.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Trace and span ids are on every log line: one `write_str` per 32 bytes, not a
        // formatted write per byte.
        let mut buf = [0u8; 64];
        for chunk in self.0.chunks(32) {
            let text = hex_into(chunk, &mut buf);
            f.write_str(text)?;
        }
        Ok(())
    }
}

/// Write `bytes` (at most 32) as lowercase hex into `buf`; returns the text.
pub(crate) fn hex_into<'a>(bytes: &[u8], buf: &'a mut [u8; 64]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = bytes.len().min(32);
    for (i, b) in bytes[..n].iter().enumerate() {
        buf[2 * i] = DIGITS[usize::from(b >> 4)];
        buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(&buf[..2 * n]).unwrap_or_default()
}

/// Append `bytes` to `out` as lowercase hex.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        out.push_str(hex_into(chunk, &mut buf));
    }
}

/// Parse a W3C `traceparent` header (`00-<trace id>-<parent span id>-<flags>`). `None`
/// when it is malformed or all zero, as the recommendation says to start a new trace then.
pub fn parse_traceparent(text: &str) -> Option<TraceContext> {
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.len() < 55 || text.get(2..3) != Some("-") {
        return None;
    }
    let version = u8::from_str_radix(text.get(..2)?, 16).ok()?;
    // Version 00 is exactly 55 characters; later versions may add fields after a dash.
    if version == 0xff
        || (version == 0 && bytes.len() != 55)
        || (bytes.len() > 55 && bytes[55] != b'-')
    {
        return None;
    }
    if bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let (trace, span, flags) = (text.get(3..35)?, text.get(36..52)?, text.get(53..55)?);
    if !(lower_hex(trace) && lower_hex(span) && lower_hex(flags)) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?.to_be_bytes();
    let span_id = u64::from_str_radix(span, 16).ok()?.to_be_bytes();
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(TraceContext {
        trace_id,
        span_id,
        flags,
    })
}

/// Write `trace` as a W3C `traceparent` header value.
pub fn format_traceparent(trace: &TraceContext) -> String {
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    push_hex(&mut out, &trace.trace_id);
    out.push('-');
    push_hex(&mut out, &trace.span_id);
    out.push('-');
    push_hex(&mut out, &[trace.flags]);
    out
}

/// What an exported span needs beyond the metrics: kept only for a sampled call while an
/// exporter is installed.
struct ExportData {
    start: SystemTime,
    request_id: Option<Arc<str>>,
}

/// The span of one call, client or server side: counts it in the metrics, and, when the
/// call is sampled, keeps its `tracing` span and exports it. Everything is recorded on
/// drop, so a call whose future was dropped counts as cancelled.
pub(crate) struct CallSpan {
    role: Role,
    entry: &'static ServiceEntry,
    /// This span's trace context: what the request frame carries (client), or what the
    /// handler's own calls are children of (server).
    trace: TraceContext,
    parent: [u8; 8],
    attempt: u16,
    started: Instant,
    span: Span,
    export: Option<Box<ExportData>>,
    /// The instance called (client side), kept only for a span or an export.
    peer: Option<String>,
    outcome: Outcome,
    /// When the call ended, if whoever ended it had just read the clock.
    ended: Option<Instant>,
}

impl CallSpan {
    /// A call to `entry` about to be sent by `Router::call` from a task whose context has
    /// `parent` as its trace.
    pub(crate) fn client(
        entry: &'static ServiceEntry,
        parent: &TraceContext,
        attempt: u16,
        request_id: Option<&Arc<str>>,
    ) -> CallSpan {
        let trace = child(parent);
        let span = if trace.flags & 1 == 1 {
            // At debug level: the callee's span (info) is the one a handler's events nest
            // in; the caller's is for those who look closer, and costs nothing otherwise.
            tracing::debug_span!(
                target: "colony::call",
                "call",
                service = entry.name,
                instance = crate::identity::instance_id(),
                request_id = request_id.map_or("", |r| &**r),
                attempt,
                trace_id = %Hex(&trace.trace_id),
                span_id = %Hex(&trace.span_id),
                peer = Empty,
                outcome = Empty,
                duration_us = Empty,
            )
        } else {
            Span::none()
        };
        CallSpan::start(
            Role::Client,
            entry,
            trace,
            parent.span_id,
            attempt,
            span,
            request_id,
            None,
        )
    }

    /// A request for `entry` about to run with `ctx`: `ctx` gets this span as its trace
    /// (a child of the caller's span, or a new trace) and `entry` as its service.
    ///
    /// `started` is when the request started, if the caller has just read the clock.
    pub(crate) fn server(
        entry: &'static ServiceEntry,
        ctx: &mut CallContext,
        started: Option<Instant>,
    ) -> CallSpan {
        let parent = ctx.trace;
        let trace = child(&parent);
        ctx.trace = trace;
        ctx.service = Some(entry.name);
        let span = if trace.flags & 1 == 1 {
            tracing::info_span!(
                target: "colony::serve",
                "serve",
                service = entry.name,
                instance = crate::identity::instance_id(),
                request_id = ctx.request_id.as_deref().unwrap_or(""),
                attempt = ctx.attempt,
                trace_id = %Hex(&trace.trace_id),
                span_id = %Hex(&trace.span_id),
                outcome = Empty,
                duration_us = Empty,
            )
        } else {
            Span::none()
        };
        CallSpan::start(
            Role::Server,
            entry,
            trace,
            parent.span_id,
            ctx.attempt,
            span,
            ctx.request_id.as_ref(),
            started,
        )
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "private: the two constructors above are its only callers"
    )]
    fn start(
        role: Role,
        entry: &'static ServiceEntry,
        trace: TraceContext,
        parent: [u8; 8],
        attempt: u16,
        span: Span,
        request_id: Option<&Arc<str>>,
        started: Option<Instant>,
    ) -> CallSpan {
        metrics::started(role, entry.id());
        if !span.is_disabled() {
            note_callsite(role, &span);
        }
        let export = (trace.flags & 1 == 1 && otlp::enabled()).then(|| {
            Box::new(ExportData {
                start: SystemTime::now(),
                request_id: request_id.cloned(),
            })
        });
        CallSpan {
            role,
            entry,
            trace,
            parent,
            attempt,
            started: started.unwrap_or_else(Instant::now),
            span,
            export,
            peer: None,
            outcome: Outcome::Cancelled,
            ended: None,
        }
    }

    /// This span's trace context.
    pub(crate) fn trace(&self) -> TraceContext {
        self.trace
    }

    /// When the call started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// A request that arrived at `arrived` starts now: count the wait.
    pub(crate) fn queued_since(&self, arrived: Instant) {
        metrics::queued(
            self.entry.id(),
            self.started.saturating_duration_since(arrived),
        );
    }

    /// Run `fut` inside this span: entered at each poll, as `tracing`'s `Instrument`
    /// does, without giving the span away (it is recorded when the call ends).
    pub(crate) async fn enter<F: Future>(&self, fut: F) -> F::Output {
        if self.span.is_disabled() {
            return fut.await;
        }
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            let _entered = self.span.enter();
            fut.as_mut().poll(cx)
        })
        .await
    }

    /// The instance the call went to (client side).
    pub(crate) fn peer(&mut self, addr: &str) {
        if !self.span.is_disabled() || self.export.is_some() {
            addr.clone_into(self.peer.get_or_insert_with(String::new));
        }
    }

    /// How a client call ended: the service answered (`Ok(true)` with its value,
    /// `Ok(false)` with its own error), or the call failed.
    pub(crate) fn ended_with(&mut self, answer: Result<bool, &CallError>) {
        self.outcome = match answer {
            Ok(true) => Outcome::Ok,
            Ok(false) => Outcome::Error,
            Err(e) => Outcome::of(e),
        };
    }

    /// The call ended at `now` (saves a clock read when the caller has just made one).
    pub(crate) fn ended_at(&mut self, now: Instant) {
        self.ended = Some(now);
    }

    /// How a served request ended.
    pub(crate) fn served(&mut self, outcome: &service::Outcome) {
        self.outcome = match outcome {
            service::Outcome::Ok(_) => Outcome::Ok,
            service::Outcome::Err(_) => Outcome::Error,
            service::Outcome::Fault(e) => Outcome::of(e),
        };
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        let elapsed = self
            .ended
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(self.started);
        metrics::ended(self.role, self.entry.id(), self.outcome, elapsed);
        if !self.span.is_disabled() {
            let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            record_end(&self.span, self.outcome.label(), us, self.peer.as_deref());
        }
        if let Some(export) = self.export.take() {
            let mut attributes = vec![
                ("rpc.system", otlp::Value::from("colony")),
                ("colony.service", self.entry.name.into()),
                ("colony.instance", crate::identity::instance_id().into()),
                ("colony.attempt", i64::from(self.attempt).into()),
                ("colony.outcome", self.outcome.label().into()),
            ];
            if let Some(r) = export.request_id {
                attributes.push(("colony.request_id", r.to_string().into()));
            }
            if let Some(peer) = self.peer.take() {
                attributes.push(("server.address", peer.into()));
            }
            otlp::export(otlp::SpanRecord {
                name: self.entry.name.into(),
                kind: match self.role {
                    Role::Client => otlp::Kind::Client,
                    Role::Server => otlp::Kind::Server,
                },
                trace: self.trace,
                parent: self.parent,
                // A server's parent is the caller's span, in another process.
                remote_parent: self.role == Role::Server,
                start: export.start,
                end: export.start + elapsed,
                attributes,
                error: (self.outcome != Outcome::Ok).then(|| self.outcome.label()),
            });
        }
    }
}

/// The callsites of the call spans (client and server), once one of each was made.
static CALL_CALLSITES: [OnceLock<tracing::callsite::Identifier>; 2] =
    [OnceLock::new(), OnceLock::new()];

fn note_callsite(role: Role, span: &Span) {
    let slot = &CALL_CALLSITES[role as usize];
    if slot.get().is_none()
        && let Some(meta) = span.metadata()
    {
        let _ = slot.set(meta.callsite());
    }
}

/// Whether `values` are being recorded on a call span.
pub(crate) fn is_call_span(values: &tracing::span::Record<'_>) -> bool {
    struct First(Option<tracing::callsite::Identifier>);
    impl tracing::field::Visit for First {
        fn record_debug(&mut self, field: &tracing::field::Field, _: &dyn fmt::Debug) {
            if self.0.is_none() {
                self.0 = Some(field.callsite());
            }
        }
    }
    let mut first = First(None);
    values.record(&mut first);
    first
        .0
        .is_some_and(|c| CALL_CALLSITES.iter().any(|s| s.get() == Some(&c)))
}

/// Record how a call ended on its span, in one record (each is a trip through every layer).
fn record_end(span: &Span, outcome: &'static str, duration_us: u64, peer: Option<&str>) {
    use tracing::Value;
    let Some(meta) = span.metadata() else { return };
    let fields = meta.fields();
    let (Some(o), Some(d)) = (fields.field("outcome"), fields.field("duration_us")) else {
        return;
    };
    match peer.zip(fields.field("peer")) {
        Some((addr, p)) => span.record_all(&fields.value_set(&[
            (&o, Some(&outcome as &dyn Value)),
            (&d, Some(&duration_us as &dyn Value)),
            (&p, Some(&addr as &dyn Value)),
        ])),
        None => span.record_all(&fields.value_set(&[
            (&o, Some(&outcome as &dyn Value)),
            (&d, Some(&duration_us as &dyn Value)),
        ])),
    };
}

/// The span of one HTTP request at the gateway: its trace continues an incoming
/// `traceparent` or starts one, and the calls it makes are its children.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) struct HttpSpan {
    trace: TraceContext,
    parent: [u8; 8],
    remote_parent: bool,
    started: Instant,
    export: Option<(SystemTime, String, Arc<str>)>,
}

#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
impl HttpSpan {
    /// The span of a request with this `traceparent` header (if any), method and path.
    pub(crate) fn start(
        traceparent: Option<&str>,
        method: &str,
        path: &str,
        request_id: &str,
    ) -> HttpSpan {
        let incoming = traceparent.and_then(parse_traceparent);
        let (trace, parent, remote_parent) = match incoming {
            Some(parent) => {
                let mut trace = child(&parent);
                if !PARENT_BASED.load(Ordering::Relaxed) {
                    trace.flags = (trace.flags & !1) | u8::from(sample_new(&trace.trace_id));
                }
                (trace, parent.span_id, true)
            }
            None => (child(&TraceContext::default()), [0; 8], false),
        };
        let export = (trace.flags & 1 == 1 && otlp::enabled()).then(|| {
            (
                SystemTime::now(),
                format!("{method} {path}"),
                Arc::from(request_id),
            )
        });
        HttpSpan {
            trace,
            parent,
            remote_parent,
            started: Instant::now(),
            export,
        }
    }

    /// The context the request's calls run in: this span's trace and the request id.
    pub(crate) fn context(&self, request_id: &str) -> CallContext {
        let mut ctx = crate::context::with(Clone::clone).unwrap_or_default();
        ctx.trace = self.trace;
        ctx.request_id = (!request_id.is_empty()).then(|| Arc::from(request_id));
        ctx
    }

    /// The `traceparent` that names this span, for the answer's headers.
    pub(crate) fn traceparent(&self) -> String {
        format_traceparent(&self.trace)
    }

    /// The request was answered with `status`.
    pub(crate) fn finish(self, status: u16) {
        let elapsed = self.started.elapsed();
        metrics::http_request(status, elapsed);
        if let Some((start, name, request_id)) = self.export {
            let mut attributes = vec![
                (
                    "http.response.status_code",
                    otlp::Value::from(i64::from(status)),
                ),
                ("colony.instance", crate::identity::instance_id().into()),
            ];
            if !request_id.is_empty() {
                attributes.push(("colony.request_id", request_id.to_string().into()));
            }
            otlp::export(otlp::SpanRecord {
                name: name.into(),
                kind: otlp::Kind::Server,
                trace: self.trace,
                parent: self.parent,
                remote_parent: self.remote_parent,
                start,
                end: start + elapsed,
                attributes,
                error: (status >= 500).then_some("server error"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = parse_traceparent(text).expect("valid");
        assert_eq!(t.flags, 1);
        assert_eq!(t.span_id, 0x00f0_67aa_0ba9_02b7_u64.to_be_bytes());
        assert_eq!(format_traceparent(&t), text);
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
                .is_some()
        );
    }

    #[test]
    fn samplers_come_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(Sampler::from_vars(&env(&[])), Ok(Sampler::default()));
        assert_eq!(
            Sampler::from_vars(&env(&[("COLONY_TRACE_SAMPLE", "1")])),
            Ok(Sampler::ratio(1.0))
        );
        assert_eq!(
            Sampler::from_vars(&env(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25")
            ])),
            Ok(Sampler::ratio(0.25).parent_based(false))
        );
        assert_eq!(
            Sampler::from_vars(&env(&[("OTEL_TRACES_SAMPLER", "parentbased_always_off")])),
            Ok(Sampler::always_off().parent_based(true))
        );
        assert!(Sampler::from_vars(&env(&[("COLONY_TRACE_SAMPLE", "2")])).is_err());
        assert!(Sampler::from_vars(&env(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")])).is_err());
    }

    #[test]
    fn a_new_trace_is_sampled_by_its_id() {
        let mut id = [0u8; 16];
        assert!(sample_new(&id) || THRESHOLD.load(Ordering::Relaxed) == 0);
        id[8..].copy_from_slice(&u64::MAX.to_be_bytes());
        // The highest id is below the threshold only when every trace is sampled.
        assert_eq!(
            sample_new(&id),
            THRESHOLD.load(Ordering::Relaxed) > (u64::MAX >> 1)
        );
        assert_eq!(threshold(1.0), 1 << 63);
        assert_eq!(threshold(0.0), 0);
    }

    #[test]
    fn children_keep_the_trace_and_get_a_new_span() {
        let parent = TraceContext {
            trace_id: [7; 16],
            span_id: [1; 8],
            flags: 1,
        };
        let c = child(&parent);
        assert_eq!(c.trace_id, parent.trace_id);
        assert_eq!(c.flags, 1);
        assert_ne!(c.span_id, parent.span_id);
        assert!(child(&TraceContext::default()).is_set());
    }
}
