//! Effective settings of each service, and where each value came from.
//!
//! A value comes from, in rising priority: Colony's default, the `#[microservice]`
//! attribute (as `APP describe` reports it), `colony.toml`, then an environment variable
//! `COLONY_<SERVICE>__<SETTING>` (service name upper-cased, `::` → `_`; e.g.
//! `COLONY_SHOP_PRICING_QUOTE__MIN_INSTANCES=2`). Every mistake is an error that names the
//! field and the values it allows.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    Default,
    Attribute,
    ColonyToml,
    Env,
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

/// `colony.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColonyToml {
    /// Read by the instances' security settings (`mtls` or `off`).
    security: Option<String>,
    #[allow(dead_code)]
    cert_lifetime: Option<String>,
    #[allow(dead_code)]
    cert_renew_before: Option<String>,
    #[serde(default)]
    cluster: ClusterToml,
    /// Settings for every service that does not set its own.
    #[serde(default)]
    defaults: ServiceToml,
    #[serde(default)]
    services: BTreeMap<String, ServiceToml>,
    /// Service groups: services that share one pod on Kubernetes.
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterToml {
    heartbeat: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceToml {
    min_instances: Option<u32>,
    max_instances: Option<u32>,
    high_watermark: Option<f64>,
    low_watermark: Option<f64>,
    cooldown: Option<String>,
    capacity: Option<u32>,
    threads: Option<u32>,
    pin_cores: Option<bool>,
    max_per_host: Option<u32>,
    prefer_nodes: Option<Vec<String>>,
    burst: Option<bool>,
    /// Read by the instances' security settings: who may call this service.
    #[allow(dead_code)]
    callers: Option<Vec<String>>,
}

pub(crate) const DEFAULT_HEARTBEAT_MS: u64 = 500;
const DEFAULT_COOLDOWN_MS: u64 = 30_000;
const DEFAULT_CAPACITY: u32 = 64;
const DEFAULT_HIGH: f64 = 0.8;
const DEFAULT_LOW: f64 = 0.2;
const DEFAULT_MAX: u32 = 8;

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

/// Parse `250ms`, `5s`, `2m` into milliseconds.
pub(crate) fn parse_ms(field: &str, s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().with_context(|| {
        format!("{field}: `{s}` is not a duration; write it like `250ms`, `5s` or `2m`")
    })?;
    let ms = match unit {
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => bail!("{field}: `{s}` has no unit; write it like `250ms`, `5s` or `2m`"),
    };
    if !(ms >= 1.0 && ms.is_finite()) {
        bail!("{field}: `{s}` must be at least 1ms");
    }
    Ok(ms as u64)
}

/// The service groups of `colony.toml` in `dir`: on Kubernetes each becomes one pod that
/// hosts all of its services.
pub(crate) fn groups(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let path = dir.join("colony.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(toml::from_str::<ColonyToml>(&text)
            .map_err(|e| {
                anyhow::anyhow!("{} is malformed: {}", path.display(), e.to_string().trim())
            })?
            .groups),
        Err(_) => Ok(BTreeMap::new()),
    }
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
    let toml: ColonyToml = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is malformed: {}\nallowed: security, cert_lifetime, cert_renew_before; [cluster] heartbeat; [defaults] and [services.\"NAME\"] min_instances, \
                 max_instances, high_watermark, low_watermark, cooldown, capacity, threads, pin_cores, \
                 max_per_host, prefer_nodes, burst, callers",
                path.display(),
                e.to_string().trim()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ColonyToml::default(),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };

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
        let file = &ServiceToml {
            min_instances: own.and_then(|o| o.min_instances).or(defaults.min_instances),
            max_instances: own.and_then(|o| o.max_instances).or(defaults.max_instances),
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
        let pick_u32 = |key: &str,
                        default: Option<u32>,
                        file: Option<u32>|
         -> anyhow::Result<Setting<Option<u32>>> {
            let mut s = Setting::new(default, Source::Default);
            if let Some(v) = attr[key].as_u64() {
                s = Setting::new(Some(v as u32), Source::Attribute);
            }
            if let Some(v) = file {
                s = Setting::new(Some(v), Source::ColonyToml);
            }
            let var = env_name(name, key);
            if let Some(v) = env(&var) {
                let v: u32 = v
                    .trim()
                    .parse()
                    .with_context(|| format!("{var}={v}: {key} must be a whole number ≥ 0"))?;
                s = Setting::new(Some(v), Source::Env);
            }
            Ok(s)
        };
        let pick_f64 =
            |key: &str, default: f64, file: Option<f64>| -> anyhow::Result<Setting<f64>> {
                let mut s = Setting::new(default, Source::Default);
                if let Some(v) = attr[key].as_f64() {
                    s = Setting::new(v, Source::Attribute);
                }
                if let Some(v) = file {
                    s = Setting::new(v, Source::ColonyToml);
                }
                let var = env_name(name, key);
                if let Some(v) = env(&var) {
                    let v: f64 = v.trim().parse().with_context(|| {
                        format!("{var}={v}: {key} must be a number between 0 and 1")
                    })?;
                    s = Setting::new(v, Source::Env);
                }
                Ok(s)
            };
        let unwrap_or =
            |s: Setting<Option<u32>>, d: u32| Setting::new(s.value.unwrap_or(d), s.source);

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
        let pick_bool = |key: &str, file: Option<bool>| -> anyhow::Result<Setting<bool>> {
            let mut s = Setting::new(false, Source::Default);
            if let Some(p) = file {
                s = Setting::new(p, Source::ColonyToml);
            }
            let var = env_name(name, key);
            if let Some(p) = env(&var) {
                let p = match p.trim() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    other => bail!("{var}={other}: {key} must be true or false"),
                };
                s = Setting::new(p, Source::Env);
            }
            Ok(s)
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

        let settings = ServiceSettings {
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
        };
        validate(name, &settings)?;
        out.insert(name.to_owned(), settings);
    }
    Ok((cluster, out))
}

fn validate(name: &str, s: &ServiceSettings) -> anyhow::Result<()> {
    let at = |source: Source| match source {
        Source::Default => "the default",
        Source::Attribute => "the #[microservice] attribute",
        Source::ColonyToml => "colony.toml",
        Source::Env => "the environment",
    };
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
mod tests {
    use super::*;

    fn describe() -> serde_json::Value {
        serde_json::json!({"services": [
            {"name": "a::b", "options": {"min_instances": 2, "max_instances": null, "threads": 3}},
            {"name": "a::c", "options": {}}
        ]})
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn attribute_then_file_then_env() {
        let dir = std::env::temp_dir().join(format!("colony-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("colony.toml"),
            "[cluster]\nheartbeat = \"100ms\"\n[services.\"a::b\"]\nmax_instances = 5\ncooldown = \"2s\"\n",
        )
        .expect("write");
        let env = |k: &str| (k == "COLONY_A_B__MAX_INSTANCES").then(|| "6".to_owned());
        let (cluster, s) = resolve(&describe(), &dir, &env).expect("valid");
        let b = &s["a::b"];
        assert_eq!(cluster.heartbeat_ms, Setting::new(100, Source::ColonyToml));
        assert_eq!(b.min_instances, Setting::new(2, Source::Attribute));
        assert_eq!(b.max_instances, Setting::new(6, Source::Env));
        assert_eq!(b.cooldown_ms, Setting::new(2000, Source::ColonyToml));
        assert_eq!(b.threads, Setting::new(Some(3), Source::Attribute));
        assert_eq!(s["a::c"].min_instances, Setting::new(1, Source::Default));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn mistakes_name_the_field() {
        let dir = std::env::temp_dir().join(format!("colony-settings-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (toml, needle) in [
            (
                "[services.\"a::zz\"]\nmin_instances = 1\n",
                "not a service of this app",
            ),
            ("[services.\"a::b\"]\nmin_instance = 1\n", "min_instance"),
            (
                "[services.\"a::b\"]\nmin_instances = 9\nmax_instances = 3\n",
                "above max_instances",
            ),
            ("[cluster]\nheartbeat = \"soon\"\n", "not a duration"),
            (
                "[services.\"a::b\"]\nprefer_nodes = [\"ssd\"]\n",
                "prefer_nodes entry `ssd` is not key=value",
            ),
            (
                "[services.\"a::b\"]\nprefer_nodes = [\"-bad-=x\"]\n",
                "invalid key",
            ),
            ("this is not toml", "malformed"),
        ] {
            std::fs::write(dir.join("colony.toml"), toml).expect("write");
            let err = resolve(&describe(), &dir, &no_env)
                .expect_err(toml)
                .to_string();
            assert!(err.contains(needle), "{toml:?} gave {err}");
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
