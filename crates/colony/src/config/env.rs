//! The environment of a Colony process, read once.
//!
//! Every `COLONY_*` variable the runtime acts on (and the `OTEL_*` sampler variables) is
//! read here, at first use, into [`Env`]; the modules that act on one are handed its typed
//! value. A value that cannot be read is kept out of [`Env`] and its reason is kept in
//! [`Env::problems`], which each role reports at start (`APP serve` stops on them) instead
//! of each reader ignoring or rediscovering it.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The environment of this process, as typed settings. Empty variables count as unset.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    /// `COLONY_APP`: the app's name (the SPIFFE trust domain).
    pub(crate) app: Option<String>,
    /// `COLONY_INSTANCE`: this instance's id, given by an orchestrator.
    pub(crate) instance: Option<String>,
    /// `COLONY_FINGERPRINT`: the build fingerprint, when a deployer sets it.
    pub(crate) fingerprint: Option<String>,
    /// `COLONY_CONFIG`: where `colony.toml` is.
    pub(crate) config: Option<PathBuf>,
    /// `COLONY_PEERS`: `NAME=ADDR,...`, for a [`crate::client::Client`] made from the
    /// environment (the roles read it as their `--peer` flag's fallback).
    pub(crate) peers: Option<String>,
    /// `COLONY_ORCHESTRATOR`: the orchestrator's control address under `colony up`.
    pub(crate) orchestrator: Option<String>,
    /// `COLONY_ORCHESTRATOR_FILE`: a file that holds the orchestrator's current address.
    pub(crate) orchestrator_file: Option<PathBuf>,
    /// `COLONY_HEARTBEAT`: the interval between heartbeats to the orchestrator.
    pub(crate) heartbeat: Option<Duration>,
    /// `COLONY_DISCOVERY`: `static` or `kubernetes`.
    pub(crate) discovery: Option<String>,
    /// `COLONY_DNS_REFRESH`: how often Kubernetes discovery re-resolves names.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub(crate) dns_refresh: Option<Duration>,
    /// `COLONY_DNS_SERVER`: the DNS server for Kubernetes discovery (`IP:PORT`).
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub(crate) dns_server: Option<String>,
    /// `COLONY_TLS`: `mtls` or `off`.
    pub(crate) tls: Option<String>,
    /// `COLONY_CA_DIR`: where the cluster CA is.
    pub(crate) ca_dir: Option<PathBuf>,
    /// `COLONY_TLS_CERT`: a certificate handed to this process.
    pub(crate) tls_cert: Option<String>,
    /// `COLONY_TLS_KEY`: the key of `tls_cert`.
    pub(crate) tls_key: Option<String>,
    /// `COLONY_TLS_CA`: the CA certificate that goes with `tls_cert`.
    pub(crate) tls_ca: Option<PathBuf>,
    /// `COLONY_CERT_LIFETIME`: the lifetime of certificates this process issues itself.
    pub(crate) cert_lifetime: Option<Duration>,
    /// `COLONY_CERT_RENEW_BEFORE`: how long before expiry a certificate is renewed.
    pub(crate) cert_renew_before: Option<Duration>,
    /// `COLONY_LOG`: the log filter (`info`, `warn,colony=debug`).
    pub(crate) log: Option<String>,
    /// `COLONY_LOG_FORMAT`: `json` or `text`.
    pub(crate) log_format: Option<String>,
    /// `COLONY_TRACE_SAMPLE`, `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`: how
    /// requests are sampled for tracing, checked by `telemetry::Sampler`.
    pub(crate) sampler: SamplerVars,
    /// `COLONY_CACHE`: the memcached servers of the cache tier.
    #[cfg_attr(not(feature = "store"), allow(dead_code))]
    pub(crate) cache: Option<String>,
    /// `COLONY_CACHE_TTL`: how long a cache entry lives.
    #[cfg_attr(not(feature = "store"), allow(dead_code))]
    pub(crate) cache_ttl: Option<Duration>,
    /// `COLONY_STORE_URL`: the store's PostgreSQL database.
    #[cfg_attr(not(feature = "store"), allow(dead_code))]
    pub(crate) store_url: Option<String>,
    /// `COLONY_STORE_PATH`: the store's file (`memory`: none).
    #[cfg_attr(not(feature = "store"), allow(dead_code))]
    pub(crate) store_path: Option<PathBuf>,
    /// Variables that are set but could not be read, each with its reason.
    pub(crate) problems: Vec<String>,
}

/// The variables that choose the trace sampler, raw: `telemetry` checks them.
#[derive(Debug, Clone, Default)]
pub(crate) struct SamplerVars {
    /// `COLONY_TRACE_SAMPLE`.
    pub(crate) colony: Option<String>,
    /// `OTEL_TRACES_SAMPLER`.
    pub(crate) otel: Option<String>,
    /// `OTEL_TRACES_SAMPLER_ARG`.
    pub(crate) otel_arg: Option<String>,
}

/// This process's environment, read at the first call.
pub(crate) fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| Env::read(|name| std::env::var(name).ok()))
}

impl Env {
    /// Read the settings through `var` (a variable lookup: the process's environment, or a
    /// test's table).
    pub(crate) fn read(var: impl Fn(&str) -> Option<String>) -> Env {
        let text = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let path = |name: &str| text(name).map(PathBuf::from);
        let mut problems = Vec::new();
        let mut duration = |name: &str| {
            let value = text(name)?;
            match colony_duration::parse(&value) {
                Ok(d) => Some(d),
                Err(e) => {
                    problems.push(format!("{name}: {e}"));
                    None
                }
            }
        };
        let heartbeat = duration("COLONY_HEARTBEAT");
        let dns_refresh = duration("COLONY_DNS_REFRESH");
        let cert_lifetime = duration("COLONY_CERT_LIFETIME");
        let cert_renew_before = duration("COLONY_CERT_RENEW_BEFORE");
        let cache_ttl = duration("COLONY_CACHE_TTL");
        Env {
            app: text("COLONY_APP"),
            instance: text("COLONY_INSTANCE"),
            fingerprint: text("COLONY_FINGERPRINT"),
            config: path("COLONY_CONFIG"),
            peers: text("COLONY_PEERS"),
            orchestrator: text("COLONY_ORCHESTRATOR"),
            orchestrator_file: path("COLONY_ORCHESTRATOR_FILE"),
            heartbeat,
            discovery: text("COLONY_DISCOVERY"),
            dns_refresh,
            dns_server: text("COLONY_DNS_SERVER"),
            tls: text("COLONY_TLS"),
            ca_dir: path("COLONY_CA_DIR"),
            tls_cert: text("COLONY_TLS_CERT"),
            tls_key: text("COLONY_TLS_KEY"),
            tls_ca: path("COLONY_TLS_CA"),
            cert_lifetime,
            cert_renew_before,
            log: text("COLONY_LOG"),
            log_format: text("COLONY_LOG_FORMAT"),
            sampler: SamplerVars {
                colony: text("COLONY_TRACE_SAMPLE"),
                otel: text("OTEL_TRACES_SAMPLER"),
                otel_arg: text("OTEL_TRACES_SAMPLER_ARG"),
            },
            cache: text("COLONY_CACHE"),
            cache_ttl,
            store_url: text("COLONY_STORE_URL"),
            store_path: path("COLONY_STORE_PATH"),
            problems,
        }
    }

    /// The variables that are set but wrong, as one message; `None` when all are fine.
    pub(crate) fn check(&self) -> Option<String> {
        (!self.problems.is_empty()).then(|| {
            format!(
                "the environment has settings that cannot be read: {}",
                self.problems.join("; ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Env {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::read(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn durations_use_the_one_grammar_and_bad_ones_are_reported() {
        let env = read(&[
            ("COLONY_HEARTBEAT", "250ms"),
            ("COLONY_CACHE_TTL", "1m"),
            ("COLONY_DNS_REFRESH", "5"),
        ]);
        assert_eq!(env.heartbeat, Some(Duration::from_millis(250)));
        assert_eq!(env.cache_ttl, Some(Duration::from_secs(60)));
        assert_eq!(env.dns_refresh, None);
        let problem = env.check().expect("a problem");
        assert!(
            problem.contains("COLONY_DNS_REFRESH: `5` is not a duration"),
            "{problem}"
        );
        assert!(problem.contains("`5s`"), "{problem}");
    }

    #[test]
    fn empty_means_unset() {
        let env = read(&[("COLONY_APP", " "), ("COLONY_TLS", "off")]);
        assert_eq!(env.app, None);
        assert_eq!(env.tls.as_deref(), Some("off"));
        assert!(env.check().is_none());
    }
}
