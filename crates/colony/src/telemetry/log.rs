//! Log lines: one per `tracing` event, as a JSON object or as text, with the call it
//! belongs to.
//!
//! Owns: [`LogLayer`], the `tracing` layer that writes each enabled event as one line, and
//! the line formats. Promises: a JSON line is one object with `time` (RFC 3339, UTC,
//! microseconds), `level`, `target`, `service`, `instance`, `trace_id`, `span_id`,
//! `request_id`, `message` and `fields` (the event's fields, after those of the user's
//! enclosing spans), each present even when empty (`null`), so that shippers see one
//! schema; the trace, span and request ids and the service come from the call being served
//! (the task-local call context), so a handler's own events carry them with no work from
//! its author; a line is written with one `write` call, so lines of concurrent tasks never
//! interleave. Must not touch: which events are enabled (the filter decides) or Colony's own
//! spans (their fields are not copied: they would cost on every call).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::trace::Hex;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// One JSON object per line: for files, collectors and `colony logs`.
    Json,
    /// Text for people, coloured when `ansi` is set.
    Text {
        /// Colour the level and dim the context with ANSI escapes.
        ansi: bool,
    },
}

impl LogFormat {
    /// `COLONY_LOG_FORMAT` (`json` or `text`), else text when stderr is a terminal and JSON
    /// when it is not (a file, a pipe, a collector).
    pub fn from_env() -> LogFormat {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        match crate::config::env().log_format.as_deref().map(str::trim) {
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text { ansi: terminal },
            _ if terminal => LogFormat::Text { ansi: true },
            _ => LogFormat::Json,
        }
    }
}

/// The fields of one of the user's spans, kept so that events inside it carry them.
struct SpanFields(Vec<(&'static str, FieldValue)>);

#[derive(Clone)]
enum FieldValue {
    /// Written as a JSON string.
    Str(String),
    /// A number or boolean, written as it is.
    Raw(String),
}

#[derive(Default)]
struct Collector {
    message: Option<String>,
    fields: Vec<(&'static str, FieldValue)>,
}

impl Collector {
    fn put(&mut self, field: &Field, value: FieldValue) {
        if field.name() == "message" {
            self.message = Some(match value {
                FieldValue::Str(s) | FieldValue::Raw(s) => s,
            });
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

impl Visit for Collector {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, FieldValue::Str(value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, FieldValue::Str(format!("{value:?}")));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, FieldValue::Raw(value.to_string()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, FieldValue::Raw(value.to_string()));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, FieldValue::Raw(value.to_string()));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, FieldValue::Raw(value.to_string()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, FieldValue::Raw(value.to_string()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = if value.is_finite() {
            FieldValue::Raw(value.to_string())
        } else {
            FieldValue::Str(value.to_string())
        };
        self.put(field, v);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, FieldValue::Str(value.to_string()));
    }
}

/// Whether a span or event target belongs to Colony itself (not to an app whose crate name
/// merely starts with `colony`).
fn is_colony(target: &str) -> bool {
    target == "colony" || target.starts_with("colony::")
}

/// The `tracing` layer that writes log lines; see the module documentation.
pub struct LogLayer<W = fn() -> std::io::Stderr> {
    format: LogFormat,
    make_writer: W,
}

impl LogLayer {
    /// Lines in `format` on stderr.
    pub fn stderr(format: LogFormat) -> LogLayer {
        LogLayer {
            format,
            make_writer: std::io::stderr,
        }
    }
}

impl<W> LogLayer<W> {
    /// Lines in `format` to the writers `make_writer` makes (one per line).
    pub fn with_writer(format: LogFormat, make_writer: W) -> LogLayer<W> {
        LogLayer {
            format,
            make_writer,
        }
    }
}

impl<W> std::fmt::Debug for LogLayer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLayer")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// The line being written, reused between events of a thread.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

impl<S, W> Layer<S> for LogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if is_colony(attrs.metadata().target()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut collector = Collector::default();
        attrs.record(&mut collector);
        if !collector.fields.is_empty() {
            span.extensions_mut().insert(SpanFields(collector.fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        // Colony's call spans record their outcome on every sampled call: skip them
        // without looking the span up.
        if super::trace::is_call_span(values) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        if is_colony(span.metadata().target()) {
            return;
        }
        let mut collector = Collector::default();
        values.record(&mut collector);
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanFields>() {
            Some(fields) => fields.0.extend(collector.fields),
            None => extensions.insert(SpanFields(collector.fields)),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut collector = Collector::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    collector.fields.extend(fields.0.iter().cloned());
                }
            }
        }
        event.record(&mut collector);
        dedup_last_wins(&mut collector.fields);
        let call = crate::context::with(|c| (c.trace, c.request_id.clone(), c.service));
        let write = |line: &mut String| {
            line.clear();
            let now = SystemTime::now();
            match self.format {
                LogFormat::Json => json_line(line, now, event, &collector, call.as_ref()),
                LogFormat::Text { ansi } => {
                    text_line(line, now, event, &collector, call.as_ref(), ansi)
                }
            }
            line.push('\n');
            let _ = self.make_writer.make_writer().write_all(line.as_bytes());
        };
        // An event logged while formatting one (a Debug impl that logs) gets its own buffer.
        LINE.with(|buf| match buf.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            Err(_) => write(&mut String::new()),
        });
    }
}

/// Keep only the last value of each field name (an event's own field overrides its span's).
fn dedup_last_wins(fields: &mut Vec<(&'static str, FieldValue)>) {
    let mut i = 0;
    while i < fields.len() {
        let name = fields[i].0;
        if fields[i + 1..].iter().any(|(n, _)| *n == name) {
            fields.remove(i);
        } else {
            i += 1;
        }
    }
}

type CallInfo = (
    crate::wire::TraceContext,
    Option<std::sync::Arc<str>>,
    Option<&'static str>,
);

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// The service a line belongs to: the call being served, else this process's services.
fn service_of(call: Option<&CallInfo>) -> Option<&str> {
    call.and_then(|c| c.2).or_else(super::process_services)
}

fn json_line(
    out: &mut String,
    now: SystemTime,
    event: &Event<'_>,
    collector: &Collector,
    call: Option<&CallInfo>,
) {
    let meta = event.metadata();
    out.push_str("{\"time\":\"");
    write_time(out, now);
    out.push_str("\",\"level\":\"");
    out.push_str(level_name(meta.level()));
    out.push_str("\",\"target\":");
    json_str(out, meta.target());
    out.push_str(",\"service\":");
    json_opt(out, service_of(call));
    out.push_str(",\"instance\":");
    json_str(out, crate::identity::instance_id());
    let trace = call.map(|c| c.0).filter(|t| t.is_set());
    match trace {
        Some(t) => {
            let _ = write!(
                out,
                ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
                Hex(&t.trace_id),
                Hex(&t.span_id)
            );
        }
        None => out.push_str(",\"trace_id\":null,\"span_id\":null"),
    }
    out.push_str(",\"request_id\":");
    json_opt(out, call.and_then(|c| c.1.as_deref()));
    out.push_str(",\"message\":");
    json_str(out, collector.message.as_deref().unwrap_or(""));
    out.push_str(",\"fields\":{");
    for (i, (name, value)) in collector.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, name);
        out.push(':');
        match value {
            FieldValue::Str(s) => json_str(out, s),
            FieldValue::Raw(s) => out.push_str(s),
        }
    }
    out.push_str("}}");
}

fn text_line(
    out: &mut String,
    now: SystemTime,
    event: &Event<'_>,
    collector: &Collector,
    call: Option<&CallInfo>,
    ansi: bool,
) {
    let meta = event.metadata();
    let (dim, reset) = if ansi {
        ("\x1b[2m", "\x1b[0m")
    } else {
        ("", "")
    };
    out.push_str(dim);
    write_time(out, now);
    out.push_str(reset);
    out.push(' ');
    let level = level_name(meta.level());
    if ansi {
        let colour = match *meta.level() {
            Level::ERROR => "31",
            Level::WARN => "33",
            Level::INFO => "32",
            Level::DEBUG => "34",
            Level::TRACE => "35",
        };
        let _ = write!(out, "\x1b[{colour}m{level:>5}\x1b[0m ");
    } else {
        let _ = write!(out, "{level:>5} ");
    }
    let _ = write!(out, "{dim}{}:{reset} ", meta.target());
    out.push_str(collector.message.as_deref().unwrap_or(""));
    for (name, value) in &collector.fields {
        let _ = write!(out, " {name}=");
        match value {
            FieldValue::Str(s) if s.contains([' ', '"', '=']) || s.is_empty() => {
                json_str(out, s);
            }
            FieldValue::Str(s) | FieldValue::Raw(s) => out.push_str(s),
        }
    }
    let trace = call.map(|c| c.0).filter(|t| t.is_set());
    if let Some(service) = call.and_then(|c| c.2) {
        let _ = write!(out, " {dim}service={service}{reset}");
    }
    if let Some(t) = trace {
        let _ = write!(out, " {dim}trace_id={}{reset}", Hex(&t.trace_id));
    }
    if let Some(r) = call.and_then(|c| c.1.as_deref()) {
        let _ = write!(out, " {dim}request_id={r}{reset}");
    }
}

fn json_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

/// `s` as a JSON string, quotes included.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut rest = s;
    while let Some(i) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
        out.push_str(&rest[..i]);
        let c = rest[i..].chars().next().unwrap_or(' ');
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        rest = &rest[i + c.len_utf8()..];
    }
    out.push_str(rest);
    out.push('"');
}

/// `t` as RFC 3339 in UTC with microseconds: `2026-05-01T09:30:00.123456Z`.
pub(crate) fn write_time(out: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    );
}

/// Year, month and day of the `days`-th day after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let mut s = String::new();
        write_time(
            &mut s,
            UNIX_EPOCH + Duration::from_micros(1_714_555_800_123_456),
        );
        assert_eq!(s, "2024-05-01T09:30:00.123456Z");
        s.clear();
        write_time(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400)); // a leap day
        assert_eq!(s, "2000-02-29T00:00:00.000000Z");
        s.clear();
        write_time(&mut s, UNIX_EPOCH);
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[tokio::test]
    async fn a_handler_s_events_carry_its_call() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(LogLayer::with_writer(LogFormat::Json, buffer.clone()));
        let _default = tracing::subscriber::set_default(subscriber);
        let ctx = crate::context::CallContext {
            trace: crate::wire::TraceContext {
                trace_id: [0xab; 16],
                span_id: [0xcd; 8],
                flags: 1,
            },
            request_id: Some(Arc::from("req-1")),
            service: Some("shop::quote"),
            ..Default::default()
        };
        crate::context::scope(ctx, async {
            let span = tracing::info_span!(target: "shop", "checkout", cart = 42, note = "x");
            let _entered = span.enter();
            tracing::info!(qty = 3, ok = true, note = "y", "priced \"it\"");
        })
        .await;
        tracing::warn!("outside");
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let inside = &lines[0];
        assert_eq!(inside["level"], "INFO");
        assert_eq!(inside["service"], "shop::quote");
        assert_eq!(inside["trace_id"], "ab".repeat(16));
        assert_eq!(inside["span_id"], "cd".repeat(8));
        assert_eq!(inside["request_id"], "req-1");
        assert_eq!(inside["message"], "priced \"it\"");
        assert_eq!(
            inside["fields"],
            serde_json::json!({"cart": 42, "qty": 3, "ok": true, "note": "y"})
        );
        assert!(inside["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(inside["instance"], crate::identity::instance_id());
        let outside = &lines[1];
        assert_eq!(outside["trace_id"], serde_json::Value::Null);
        assert_eq!(outside["request_id"], serde_json::Value::Null);
        assert_eq!(outside["message"], "outside");
    }
}
