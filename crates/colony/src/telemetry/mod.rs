//! Telemetry: following one request across every service, and counting them all.
//!
//! For app authors and operators. Owns: trace context and sampling ([`Sampler`]), the span
//! of every remote call on both sides and of every HTTP request at the gateway, log lines
//! ([`LogLayer`]: JSON or text, with the call's trace id, span id, request id and service),
//! metrics ([`metrics`]: Prometheus text at `/metrics`), and span export over OTLP (the
//! `otlp` feature). Promises: W3C trace context travels in every frame, so one request is
//! one trace however many processes it crosses; a handler's own `tracing` events carry the
//! trace id without any work from its author; telemetry never fails a call, and what it
//! costs an unsampled call is a few atomic additions. Must not touch: routing and serving
//! (the `call` and `host` modules hand it what happened).
//!
//! `colony::main` calls [`init`]; a program that sets up its own `tracing` subscriber can
//! add a [`LogLayer`] to it instead.
//!
//! | variable | meaning |
//! |---|---|
//! | `COLONY_LOG` | which events are logged, in `tracing`'s EnvFilter syntax (default `info`) |
//! | `COLONY_LOG_FORMAT` | `json` or `text`; default: text when stderr is a terminal, else JSON |
//! | `COLONY_TRACE_SAMPLE` | share of new traces recorded, 0 to 1 (default [`DEFAULT_SAMPLE_RATIO`]) |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | the standard samplers, when `COLONY_TRACE_SAMPLE` is unset |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | export sampled spans over OTLP/HTTP there (feature `otlp`) |
//! | `COLONY_METRICS_ADDR` | where `/metrics` and `/healthz` are served (`--metrics`; `off` for none) |

mod log;
pub(crate) mod metrics;
mod otlp;
mod trace;

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use log::{LogFormat, LogLayer};
pub(crate) use trace::CallSpan;
#[cfg(feature = "gateway")]
pub(crate) use trace::HttpSpan;
#[cfg(feature = "gateway")]
pub(crate) use trace::hex_into;
pub(crate) use trace::push_hex;
pub use trace::{
    DEFAULT_SAMPLE_RATIO, Sampler, format_traceparent, parse_traceparent, sampler, set_sampler,
};

/// The services this process hosts (or its role), for log lines outside any call.
static PROCESS_SERVICES: OnceLock<String> = OnceLock::new();

fn process_services() -> Option<&'static str> {
    PROCESS_SERVICES.get().map(String::as_str)
}

/// What [`init`] set up; exports the spans still queued when dropped, so keep it until
/// the process ends.
#[derive(Debug)]
#[must_use = "dropping it stops the span export"]
pub struct Telemetry {
    exporting: bool,
}

impl Telemetry {
    /// Whether sampled spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.exporting
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if self.exporting {
            otlp::shutdown();
        }
    }
}

/// Set up this process's telemetry from the environment (see the module documentation):
/// log lines on stderr filtered by `COLONY_LOG`, the sampler, and the OTLP export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. `services` names what the process runs (the
/// hosted services, comma-separated, or a role such as `@gateway`): it is the `service`
/// of log lines outside any call, and the OpenTelemetry `service.name` unless
/// `OTEL_SERVICE_NAME` says otherwise.
///
/// A setting that is wrong is reported as a warning and left at its default: telemetry
/// never stops a process. A `tracing` subscriber installed earlier is kept.
pub fn init(services: &str) -> Telemetry {
    if !services.is_empty() {
        let _ = PROCESS_SERVICES.set(services.to_owned());
    }
    let mut warnings = Vec::new();
    let text = crate::config::env().log.clone().unwrap_or_default();
    let text = if text.trim().is_empty() {
        "info"
    } else {
        text.trim()
    };
    // A filter by target and level (`info`, `warn,colony=debug`) is a `Targets`, which keeps
    // no state per span; span and field directives need an `EnvFilter`, which does (a lock
    // and a lookup each time a span is entered, exited or recorded).
    let layer = LogLayer::stderr(LogFormat::from_env());
    let _ = match text.parse::<tracing_subscriber::filter::Targets>() {
        Ok(targets) => tracing_subscriber::registry()
            .with(targets)
            .with(layer)
            .try_init(),
        Err(_) => {
            let env = tracing_subscriber::EnvFilter::try_new(text).unwrap_or_else(|e| {
                warnings.push(format!(
                    "COLONY_LOG=`{text}` is not a valid filter ({e}); logging at `info`. \
                     Write it like `info` or `warn,colony=debug`"
                ));
                tracing_subscriber::EnvFilter::new("info")
            });
            tracing_subscriber::registry()
                .with(env)
                .with(layer)
                .try_init()
        }
    };
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    match Sampler::from_env() {
        Ok(sampler) => set_sampler(sampler),
        Err(e) => tracing::warn!("{e}; recording {} of new traces", DEFAULT_SAMPLE_RATIO),
    }
    let name = match services {
        "" => crate::identity::app_name(),
        s => s.to_owned(),
    };
    let exporting = match otlp::install(&name) {
        Ok(exporting) => exporting,
        Err(e) => {
            tracing::warn!("{e}");
            false
        }
    };
    if exporting {
        tracing::info!(
            share = sampler().share(),
            "exporting sampled spans over OTLP/HTTP"
        );
    }
    Telemetry { exporting }
}

/// Bind `addr` (`host:port`, port 0 for any free port) and serve `/metrics` and
/// `/healthz` there in a task. `off` (or an empty address) serves nothing. Returns the
/// bound address, for the caller to announce.
pub async fn spawn_metrics(addr: &str) -> crate::Result<Option<std::net::SocketAddr>> {
    let addr = addr.trim();
    if addr.is_empty() || addr == "off" {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::Error::io(
            format!(
                "the metrics listener could not bind {addr} (pass --metrics 127.0.0.1:0 for any \
                 free port, or --metrics off; COLONY_METRICS_ADDR)"
            ),
            e,
        )
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| crate::Error::io("the metrics listener's address is unknown", e))?;
    tokio::spawn(metrics::serve(listener, std::future::pending()));
    Ok(Some(local))
}
