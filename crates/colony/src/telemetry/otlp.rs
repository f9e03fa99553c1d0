//! Export of finished spans over OTLP/HTTP (protobuf) to an OpenTelemetry collector.
//!
//! Owns: the process's span exporter — OpenTelemetry's batch span processor and OTLP
//! exporter (the `otlp` feature) — and the conversion of Colony's spans into theirs.
//! Promises: the exported trace and span ids are those that travel in the frames, so the
//! spans of every process of a request form one tree; the standard `OTEL_*` variables
//! (`OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `_HEADERS`, `_TIMEOUT`, `_COMPRESSION`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_TRACES_EXPORTER`)
//! are honoured; exporting never blocks a call: spans queue on a bounded queue
//! (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048 by default) that a background thread drains, and are
//! dropped when it is full. Without the feature, or with no endpoint set, nothing here
//! runs and [`enabled`] is false. Must not touch: sampling decisions (the caller exports
//! only what was sampled).

use std::borrow::Cow;
use std::time::SystemTime;

use crate::wire::TraceContext;

/// An attribute value of an exported span.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "otlp"), allow(dead_code))]
pub(crate) enum Value {
    Str(Cow<'static, str>),
    Int(i64),
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Value {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(Cow::Owned(s))
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

/// Which side of an exchange a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Client,
    Server,
}

/// A finished span, ready to export.
#[derive(Debug)]
#[cfg_attr(not(feature = "otlp"), allow(dead_code))]
pub(crate) struct SpanRecord {
    pub(crate) name: Cow<'static, str>,
    pub(crate) kind: Kind,
    /// Its trace, its own span id and the trace flags.
    pub(crate) trace: TraceContext,
    /// The parent's span id; all zero for a root.
    pub(crate) parent: [u8; 8],
    /// Whether the parent is in another process.
    pub(crate) remote_parent: bool,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) attributes: Vec<(&'static str, Value)>,
    /// Set when the call failed: the outcome.
    pub(crate) error: Option<&'static str>,
}

/// Whether `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` asks for an
/// export, and `OTEL_TRACES_EXPORTER` does not turn it off.
fn requested() -> Result<bool, String> {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    if !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
        return Ok(false);
    }
    match std::env::var("OTEL_TRACES_EXPORTER")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        None | Some("" | "otlp") => Ok(true),
        Some("none") => Ok(false),
        Some(other) => Err(format!(
            "OTEL_TRACES_EXPORTER=`{other}` is not supported; Colony exports spans with `otlp` \
             (OTLP over HTTP), or not at all with `none`"
        )),
    }
}

#[cfg(feature = "otlp")]
mod export {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{
        BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
    };

    use super::{Kind, SpanRecord, Value};

    static ENABLED: AtomicBool = AtomicBool::new(false);
    static PROCESSOR: OnceLock<BatchSpanProcessor> = OnceLock::new();
    static SCOPE: OnceLock<InstrumentationScope> = OnceLock::new();

    pub(crate) fn enabled() -> bool {
        ENABLED.load(Ordering::Relaxed)
    }

    pub(crate) fn export(span: SpanRecord) {
        let (Some(processor), Some(scope)) = (PROCESSOR.get(), SCOPE.get()) else {
            return;
        };
        let trace = span.trace;
        let data = SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(trace.trace_id),
                SpanId::from_bytes(trace.span_id),
                TraceFlags::new(trace.flags),
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from_bytes(span.parent),
            parent_span_is_remote: span.remote_parent,
            span_kind: match span.kind {
                Kind::Client => SpanKind::Client,
                Kind::Server => SpanKind::Server,
            },
            name: span.name,
            start_time: span.start,
            end_time: span.end,
            attributes: span
                .attributes
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Str(s) => KeyValue::new(k, s),
                    Value::Int(i) => KeyValue::new(k, i),
                })
                .collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: span.error.map_or(Status::Unset, Status::error),
            instrumentation_scope: scope.clone(),
        };
        processor.on_end(data);
    }

    /// Build the exporter from the environment and install it for the process.
    pub(crate) fn install(service_name: &str) -> Result<(), String> {
        use opentelemetry_otlp::{Protocol, WithExportConfig};

        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Ok(p) = std::env::var(var)
                && !p.trim().is_empty()
                && p.trim() != "http/protobuf"
            {
                return Err(format!(
                    "{var}=`{p}` is not supported: Colony exports over OTLP/HTTP with protobuf \
                     (`http/protobuf`); point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's \
                     HTTP port (4318)"
                ));
            }
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map_err(|e| format!("the OTLP exporter could not be built: {e}"))?;
        let mut resource = Resource::builder();
        let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
        if !named {
            resource = resource.with_service_name(service_name.to_owned());
        }
        let resource = resource
            .with_attribute(KeyValue::new(
                "service.instance.id",
                crate::identity::instance_id().to_owned(),
            ))
            .with_attribute(KeyValue::new(
                "service.namespace",
                crate::identity::app_name(),
            ))
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&resource);
        let _ = SCOPE.set(
            InstrumentationScope::builder("colony")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        if PROCESSOR.set(processor).is_err() {
            return Err("an OTLP exporter is already installed in this process".to_owned());
        }
        ENABLED.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Export what is queued, then stop.
    pub(crate) fn shutdown() {
        ENABLED.store(false, Ordering::Relaxed);
        if let Some(p) = PROCESSOR.get() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

#[cfg(not(feature = "otlp"))]
mod export {
    use super::SpanRecord;

    pub(crate) fn enabled() -> bool {
        false
    }

    pub(crate) fn export(_span: SpanRecord) {}

    pub(crate) fn install(_service_name: &str) -> Result<(), String> {
        Err(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this binary was built without Colony's \
             `otlp` feature, so no span is exported; add `features = [\"otlp\"]` to its \
             `colony` dependency"
                .to_owned(),
        )
    }

    pub(crate) fn shutdown() {}
}

/// Whether sampled spans are exported.
#[inline]
pub(crate) fn enabled() -> bool {
    export::enabled()
}

/// Queue a finished span for export (nothing when no exporter is installed).
pub(crate) fn export(span: SpanRecord) {
    export::export(span);
}

/// Install the exporter when the environment asks for one. `Ok(true)` when installed.
pub(crate) fn install(service_name: &str) -> Result<bool, String> {
    if !requested()? {
        return Ok(false);
    }
    export::install(service_name).map(|()| true)
}

/// Export the spans still queued and stop exporting; what a process does as it exits.
pub(crate) fn shutdown() {
    export::shutdown();
}
