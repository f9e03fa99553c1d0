//! Effective settings of each service, and where each value came from.
//!
//! A value comes from, in rising priority: Colony's default, the `#[microservice]`
//! attribute (as `APP describe` reports it), `colony.toml`, then an environment variable
//! `COLONY_<SERVICE>__<SETTING>` (service name upper-cased, `::` → `_`; e.g.
//! `COLONY_SHOP_PRICING_QUOTE__MIN_INSTANCES=2`). Every mistake is an error that names the
//! field and the values it allows. Also `colony.toml`'s sections for Kubernetes alone:
//! `[groups]`, and `[store]` (the store's disk) and `[cache]` (the memcached tier), which
//! `storage` checks against the app: `[store]` needs the store service.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use colony::control::config::{ColonyToml, ServiceToml};
use serde::{Deserialize, Serialize};

mod storage;

pub(crate) use storage::{CacheSettings, STORE_SERVICE, StoreSettings, storage};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    Default,
    Attribute,
    ColonyToml,
    Env,
}

impl std::fmt::Display for Source {
    /// Where to look, in an error message: "(from colony.toml)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Default => "the default",
            Source::Attribute => "the #[microservice] attribute",
            Source::ColonyToml => "colony.toml",
            Source::Env => "the environment",
        })
    }
}

/// A value and its source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Setting<T> {
    pub(crate) value: T,
    pub(crate) source: Source,
}

impl<T> Setting<T> {
    fn new(value: T, source: Source) -> Self {
        Setting { value, source }
    }
}

/// The effective settings of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServiceSettings {
    pub(crate) min_instances: Setting<u32>,
    pub(crate) max_instances: Setting<u32>,
    pub(crate) high_watermark: Setting<f64>,
    pub(crate) low_watermark: Setting<f64>,
    /// Milliseconds the load must stay below the low watermark before scaling down.
    pub(crate) cooldown_ms: Setting<u64>,
    /// Requests in flight per instance that count as full load (ratio 1.0).
    pub(crate) capacity: Setting<u32>,
    pub(crate) threads: Setting<Option<u32>>,
    pub(crate) pin_cores: Setting<bool>,
    pub(crate) max_per_host: Setting<Option<u32>>,
    /// Node labels (`key=value`) this service prefers, most preferred first (Kubernetes:
    /// weighted node affinity).
    pub(crate) prefer_nodes: Setting<Vec<String>>,
    /// Whether instances may also run on burst capacity (Kubernetes: nodes labelled and
    /// tainted `colony.dev/burst=true`), used only when the other nodes are full.
    pub(crate) burst: Setting<bool>,
}

impl ServiceSettings {
    /// The most instances this machine may run: `max_instances`, capped by `max_per_host`.
    pub(crate) fn ceiling(&self) -> u32 {
        match self.max_per_host.value {
            Some(cap) => self.max_instances.value.min(cap),
            None => self.max_instances.value,
        }
    }
}

/// Settings of the cluster as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClusterSettings {
    /// Interval between an instance's heartbeats, in milliseconds.
    pub(crate) heartbeat_ms: Setting<u64>,
    /// Mutual TLS between instances (`security = "off"` or `COLONY_TLS=off` turns it off).
    pub(crate) tls: Setting<bool>,
}

impl ClusterSettings {
    pub(crate) fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.value)
    }
}

pub(crate) const DEFAULT_HEARTBEAT_MS: u64 = 500;
const DEFAULT_COOLDOWN_MS: u64 = 30_000;
const DEFAULT_CAPACITY: u32 = 64;
const DEFAULT_HIGH: f64 = 0.8;
const DEFAULT_LOW: f64 = 0.2;
const DEFAULT_MAX: u32 = 8;
/// Read `colony.toml` in `dir` (an empty one when it does not exist), naming every section
/// and field it allows when it is malformed.
fn load(dir: &Path) -> anyhow::Result<ColonyToml> {
    Ok(ColonyToml::read(&dir.join("colony.toml"))?)
}

/// A `prefer_nodes` entry must be a Kubernetes node label `key=value`.
fn check_node_label(service: &str, label: &str) -> anyhow::Result<()> {
    let fail = |why: &str| {
        anyhow::anyhow!(
            "`{service}`: prefer_nodes entry `{label}` {why}; write node labels as `key=value`, \
             such as `disktype=ssd` or `topology.kubernetes.io/zone=eu-west-1a`"
        )
    };
    let (key, value) = label
        .split_once('=')
        .ok_or_else(|| fail("is not key=value"))?;
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 63
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.ends_with(|c: char| c.is_ascii_alphanumeric())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !name_ok(name) || prefix.len() > 253 || (key.contains('/') && prefix.is_empty()) {
        return Err(fail("has an invalid key"));
    }
    if !(value.is_empty() || name_ok(value)) {
        return Err(fail("has an invalid value"));
    }
    Ok(())
}

/// Parse a duration of `field` (Colony's one grammar: `250ms`, `5s`, `2m`, `1h30m`) into
/// milliseconds; it must be at least 1ms.
pub(crate) fn parse_ms(field: &str, s: &str) -> anyhow::Result<u64> {
    let d = colony::control::config::duration(s).map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        bail!("{field}: `{}` must be at least 1ms", s.trim());
    }
    Ok(ms)
}

/// The service groups of `colony.toml` in `dir`: on Kubernetes each becomes one pod that
/// hosts all of its services.
pub(crate) fn groups(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    Ok(load(dir)?.groups)
}

/// The name of the environment variable for `setting` of `service`.
pub(crate) fn env_name(service: &str, setting: &str) -> String {
    format!(
        "COLONY_{}__{}",
        service.replace("::", "_").to_uppercase(),
        setting.to_uppercase()
    )
}

/// Resolve the settings of every service in `describe`, reading `colony.toml` in `dir`
/// (if present) and the environment through `env`.
pub(crate) fn resolve(
    describe: &serde_json::Value,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(ClusterSettings, BTreeMap<String, ServiceSettings>)> {
    let path = dir.join("colony.toml");
    let toml = load(dir)?;

    let services = describe["services"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = services
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    for name in toml.services.keys() {
        if !names.contains(name) {
            bail!(
                "{}: [services.\"{name}\"] is not a service of this app; its services are: {}",
                path.display(),
                names.join(", ")
            );
        }
    }

    let mut heartbeat_ms = Setting::new(DEFAULT_HEARTBEAT_MS, Source::Default);
    if let Some(h) = &toml.cluster.heartbeat {
        heartbeat_ms = Setting::new(parse_ms("cluster.heartbeat", h)?, Source::ColonyToml);
    }
    if let Some(h) = env("COLONY_HEARTBEAT") {
        heartbeat_ms = Setting::new(parse_ms("COLONY_HEARTBEAT", &h)?, Source::Env);
    }
    let mut tls = Setting::new(true, Source::Default);
    if let Some(mode) = &toml.security {
        tls = Setting::new(mode != "off", Source::ColonyToml);
    }
    if let Some(mode) = env("COLONY_TLS") {
        tls = Setting::new(mode.trim() != "off", Source::Env);
    }
    let cluster = ClusterSettings { heartbeat_ms, tls };

    let defaults = &toml.defaults;
    let mut out = BTreeMap::new();
    for service in &services {
        let Some(name) = service["name"].as_str() else {
            continue;
        };
        let attr = &service["options"];
        let own = toml.services.get(name);
        // `[defaults]` never sets the store's instance count: it has one writer, which its
        // attribute says; only its own section (or the environment) can ask for another
        // count, which `colony deploy k8s` then refuses.
        let counts = if name == STORE_SERVICE {
            &ServiceToml::default()
        } else {
            defaults
        };
        let file = &ServiceToml {
            min_instances: own.and_then(|o| o.min_instances).or(counts.min_instances),
            max_instances: own.and_then(|o| o.max_instances).or(counts.max_instances),
            high_watermark: own
                .and_then(|o| o.high_watermark)
                .or(defaults.high_watermark),
            low_watermark: own.and_then(|o| o.low_watermark).or(defaults.low_watermark),
            cooldown: own
                .and_then(|o| o.cooldown.clone())
                .or_else(|| defaults.cooldown.clone()),
            capacity: own.and_then(|o| o.capacity).or(defaults.capacity),
            threads: own.and_then(|o| o.threads).or(defaults.threads),
            pin_cores: own.and_then(|o| o.pin_cores).or(defaults.pin_cores),
            max_per_host: own.and_then(|o| o.max_per_host).or(defaults.max_per_host),
            prefer_nodes: own
                .and_then(|o| o.prefer_nodes.clone())
                .or_else(|| defaults.prefer_nodes.clone()),
            burst: own.and_then(|o| o.burst).or(defaults.burst),
            callers: None,
        };
        let settings = service_settings(name, attr, file, env)?;
        validate(name, &settings)?;
        out.insert(name.to_owned(), settings);
    }
    Ok((cluster, out))
}

/// One service's settings: Colony's default, then its attribute (`attr`, from
/// `describe`), then `file` (its section of `colony.toml` merged over `[defaults]`), then
/// its environment variables.
fn service_settings(
    name: &str,
    attr: &serde_json::Value,
    file: &ServiceToml,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<ServiceSettings> {
    let var_of = |key: &str| env_name(name, key);
    let pick_u32 = |key: &str, default: Option<u32>, file: Option<u32>| {
        let attr = attr[key].as_u64().map(|v| Some(v as u32));
        layered(default, attr, file.map(Some), &var_of(key), env, |v| {
            let v: u32 = v.parse().with_context(|| {
                format!("{}={v}: {key} must be a whole number ≥ 0", var_of(key))
            })?;
            Ok(Some(v))
        })
    };
    let pick_f64 = |key: &str, default: f64, file: Option<f64>| {
        layered(default, attr[key].as_f64(), file, &var_of(key), env, |v| {
            v.parse().with_context(|| {
                format!(
                    "{}={v}: {key} must be a number between 0 and 1",
                    var_of(key)
                )
            })
        })
    };
    let unwrap_or = |s: Setting<Option<u32>>, d: u32| Setting::new(s.value.unwrap_or(d), s.source);

    let min_instances = unwrap_or(pick_u32("min_instances", Some(1), file.min_instances)?, 1);
    let max_default = DEFAULT_MAX.max(min_instances.value);
    let max_instances = unwrap_or(
        pick_u32("max_instances", Some(max_default), file.max_instances)?,
        max_default,
    );
    let high_watermark = pick_f64("high_watermark", DEFAULT_HIGH, file.high_watermark)?;
    let low_watermark = pick_f64("low_watermark", DEFAULT_LOW, file.low_watermark)?;
    let capacity = unwrap_or(
        pick_u32("capacity", Some(DEFAULT_CAPACITY), file.capacity)?,
        DEFAULT_CAPACITY,
    );
    let threads = pick_u32("threads", None, file.threads)?;
    let max_per_host = pick_u32("max_per_host", None, file.max_per_host)?;

    let mut cooldown_ms = Setting::new(DEFAULT_COOLDOWN_MS, Source::Default);
    if let Some(c) = &file.cooldown {
        cooldown_ms = Setting::new(
            parse_ms(&format!("services.\"{name}\".cooldown"), c)?,
            Source::ColonyToml,
        );
    }
    let var = env_name(name, "cooldown");
    if let Some(c) = env(&var) {
        cooldown_ms = Setting::new(parse_ms(&var, &c)?, Source::Env);
    }
    let pick_bool = |key: &str, file: Option<bool>| {
        layered(false, None, file, &var_of(key), env, |v| match v {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            other => bail!("{}={other}: {key} must be true or false", var_of(key)),
        })
    };
    let pin_cores = pick_bool("pin_cores", file.pin_cores)?;
    let burst = pick_bool("burst", file.burst)?;
    let mut prefer_nodes = Setting::new(Vec::new(), Source::Default);
    if let Some(p) = &file.prefer_nodes {
        prefer_nodes = Setting::new(p.clone(), Source::ColonyToml);
    }
    let var = env_name(name, "prefer_nodes");
    if let Some(p) = env(&var) {
        let list = p
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        prefer_nodes = Setting::new(list, Source::Env);
    }
    for label in &prefer_nodes.value {
        check_node_label(name, label)?;
    }

    Ok(ServiceSettings {
        min_instances,
        max_instances,
        high_watermark,
        low_watermark,
        cooldown_ms,
        capacity,
        threads,
        pin_cores,
        max_per_host,
        prefer_nodes,
        burst,
    })
}

/// A setting's value: `default`, overridden in turn by the attribute, `colony.toml` and
/// the environment variable `var` (trimmed, then read by `parse`), with where it came from.
fn layered<T>(
    default: T,
    attr: Option<T>,
    file: Option<T>,
    var: &str,
    env: &dyn Fn(&str) -> Option<String>,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<Setting<T>> {
    let mut setting = Setting::new(default, Source::Default);
    if let Some(v) = attr {
        setting = Setting::new(v, Source::Attribute);
    }
    if let Some(v) = file {
        setting = Setting::new(v, Source::ColonyToml);
    }
    if let Some(v) = env(var) {
        setting = Setting::new(parse(v.trim())?, Source::Env);
    }
    Ok(setting)
}

fn validate(name: &str, s: &ServiceSettings) -> anyhow::Result<()> {
    let at = |source: Source| source;
    if s.max_instances.value < 1 {
        bail!(
            "`{name}`: max_instances is 0 (from {}); it must be at least 1",
            at(s.max_instances.source)
        );
    }
    if s.min_instances.value > s.max_instances.value {
        bail!(
            "`{name}`: min_instances {} (from {}) is above max_instances {} (from {}); \
             min_instances must be between 0 and max_instances",
            s.min_instances.value,
            at(s.min_instances.source),
            s.max_instances.value,
            at(s.max_instances.source)
        );
    }
    for (field, w) in [
        ("high_watermark", &s.high_watermark),
        ("low_watermark", &s.low_watermark),
    ] {
        if !(w.value > 0.0 && w.value.is_finite()) {
            bail!(
                "`{name}`: {field} {} (from {}) must be a load ratio above 0, such as 0.8",
                w.value,
                at(w.source)
            );
        }
    }
    if s.low_watermark.value >= s.high_watermark.value {
        bail!(
            "`{name}`: low_watermark {} must be below high_watermark {}",
            s.low_watermark.value,
            s.high_watermark.value
        );
    }
    if s.capacity.value == 0 {
        bail!("`{name}`: capacity must be at least 1 request in flight per instance");
    }
    if s.threads.value == Some(0) {
        bail!("`{name}`: threads must be at least 1");
    }
    if s.max_per_host.value == Some(0) {
        bail!("`{name}`: max_per_host must be at least 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
