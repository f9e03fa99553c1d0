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
use colony::control::config::{CacheToml, ColonyToml, ServiceToml};
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

/// The built-in service of the `store` feature of `colony`: the embedded, single-writer
/// durable store.
pub(crate) const STORE_SERVICE: &str = "colony::store::serve";
const DEFAULT_STORE_SIZE: &str = "1Gi";
/// The smallest disk the store accepts: below this, a size is almost surely a unit mistake
/// (`size = "1"` is one byte).
const MIN_STORE_BYTES: f64 = 1024.0 * 1024.0;
const DEFAULT_CACHE_IMAGE: &str = "memcached:1.6-alpine";
const DEFAULT_CACHE_MEMORY_MB: u32 = 64;
const DEFAULT_CACHE_PORT: u16 = 11211;
const DEFAULT_CACHE_CONNECTIONS: u32 = 1024;

/// The store's disk on Kubernetes: the PersistentVolumeClaim of its StatefulSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreSettings {
    /// The claim's size, a Kubernetes quantity such as `1Gi`.
    pub(crate) size: String,
    /// The StorageClass of the claim; `None` takes the cluster's default class, `""` binds
    /// to PersistentVolumes made by hand with no class.
    pub(crate) storage_class: Option<String>,
    /// A Secret whose key `url` is a PostgreSQL URL: the store then keeps its values in
    /// that database (feature `store-postgres`), runs as an autoscaled Deployment like any
    /// service, and has no disk of its own.
    pub(crate) database_secret: Option<String>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            size: DEFAULT_STORE_SIZE.to_owned(),
            storage_class: None,
            database_secret: None,
        }
    }
}

/// The memcached cache tier on Kubernetes: one memcached per node (a DaemonSet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheSettings {
    /// The memcached image; it must take memcached's flags as its arguments, as the
    /// official image does.
    pub(crate) image: String,
    /// Memory for cached items per node (`memcached -m`), in MiB; the container's memory
    /// request and limit add memcached's own overhead to it.
    pub(crate) memory_mb: u32,
    /// The port memcached listens on (`-p`), also the headless Service's.
    pub(crate) port: u16,
    /// The most client connections one memcached accepts (`-c`).
    pub(crate) max_connections: u32,
    /// Seconds a cached entry lives (`COLONY_CACHE_TTL`); `None` leaves the runtime's default.
    pub(crate) ttl_secs: Option<u64>,
}

/// What `colony.toml` says about state on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Storage {
    /// The store's disk: from `[store]`, else the defaults (used when the app hosts the
    /// store service).
    pub(crate) store: StoreSettings,
    /// The cache tier, when `[cache]` turns it on.
    pub(crate) cache: Option<CacheSettings>,
}

/// Bytes in a Kubernetes quantity used as a size (`1Gi`, `500M`, `1.5Gi`, `1e9`), or why it
/// is not one. Milli-units and negative sizes are refused: they are not sizes.
fn quantity_bytes(q: &str) -> Result<f64, &'static str> {
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty() || number == "." {
        return Err("does not start with a number");
    }
    if number.matches('.').count() > 1 {
        return Err("has more than one decimal point");
    }
    let value: f64 = number.parse().map_err(|_| "does not start with a number")?;
    let scale = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..]
                .strip_prefix('+')
                .unwrap_or(&e[1..])
                .parse()
                .map_err(|_| "has an exponent that is not a whole number")?;
            if !(0..=18).contains(&exp) {
                return Err("has an exponent outside 0..18");
            }
            10.0_f64.powi(exp)
        }
        "m" => return Err("is in thousandths (`m`), which a disk size cannot be"),
        _ => return Err("has a unit Kubernetes does not know"),
    };
    Ok(value * scale)
}

/// Whether `name` is a DNS-1123 subdomain, as StorageClass names are.
fn dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Read `colony.toml` in `dir` (an empty one when it does not exist), naming every section
/// and field it allows when it is malformed.
fn load(dir: &Path) -> anyhow::Result<ColonyToml> {
    Ok(ColonyToml::read(&dir.join("colony.toml"))?)
}

/// The store's disk and the cache tier from `[store]` and `[cache]` of `colony.toml` in
/// `dir`, checked against the app in `describe`: `[store]` needs the app to host the store
/// service (feature `store` of `colony`), and every field must be one Kubernetes accepts.
pub(crate) fn storage(describe: &serde_json::Value, dir: &Path) -> anyhow::Result<Storage> {
    let path = dir.join("colony.toml");
    let toml = load(dir)?;
    let has_store = describe["services"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["name"] == STORE_SERVICE);
    let mut out = Storage::default();
    if let Some(store) = toml.store {
        if !has_store {
            bail!(
                "{}: [store] sets the disk of the store service `{STORE_SERVICE}`, but this app \
                 does not have it; enable the store with `colony = {{ features = [\"store\"] }}` \
                 in the app's Cargo.toml, or remove [store]",
                path.display()
            );
        }
        if let Some(size) = store.size {
            match quantity_bytes(&size) {
                Ok(bytes) if bytes >= MIN_STORE_BYTES => out.store.size = size,
                Ok(_) => bail!(
                    "{}: [store] size = \"{size}\" is less than 1Mi, too small to hold the \
                     store; write a Kubernetes quantity such as \"1Gi\" or \"500Mi\"",
                    path.display()
                ),
                Err(why) => bail!(
                    "{}: [store] size = \"{size}\" {why}; write a Kubernetes quantity: a number \
                     and a binary unit (Ki, Mi, Gi, Ti) or decimal one (k, M, G, T), such as \
                     \"1Gi\" or \"500Mi\" (not \"1GB\")",
                    path.display()
                ),
            }
        }
        if let Some(class) = store.storage_class {
            if !(class.is_empty() || dns_subdomain(&class)) {
                bail!(
                    "{}: [store] storage_class = \"{class}\" is not a StorageClass name (lower \
                     case letters, digits, `-` and `.`); `kubectl get storageclass` lists the \
                     cluster's, or leave it out for the cluster's default class",
                    path.display()
                );
            }
            out.store.storage_class = Some(class);
        }
        if let Some(secret) = store.database_secret {
            if !dns_subdomain(&secret) {
                bail!(
                    "{}: [store] database_secret = \"{secret}\" is not a Secret name (lower \
                     case letters, digits, `-` and `.`); name the Secret whose key `url` holds \
                     the database's postgres:// URL",
                    path.display()
                );
            }
            if out.store.storage_class.is_some() || out.store.size != DEFAULT_STORE_SIZE {
                bail!(
                    "{}: [store] sets both database_secret and a disk (size, storage_class): \
                     a store on a database has no disk of its own; remove size and \
                     storage_class, or database_secret to keep the store on a disk",
                    path.display()
                );
            }
            out.store.database_secret = Some(secret);
        }
    }
    if let Some(cache) = toml.cache {
        let settings = cache_settings(&path, cache)?;
        out.cache = settings;
    }
    Ok(out)
}

/// `[cache]` checked, and turned on unless it says `enabled = false`.
fn cache_settings(path: &Path, cache: CacheToml) -> anyhow::Result<Option<CacheSettings>> {
    let at = path.display();
    let image = cache
        .image
        .unwrap_or_else(|| DEFAULT_CACHE_IMAGE.to_owned());
    if image.is_empty()
        || image.starts_with(['-', ':', '/', '@'])
        || image.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!(
            "{at}: [cache] image = \"{image}\" is not an image reference; write one like \
             \"{DEFAULT_CACHE_IMAGE}\" (the default) or \"registry.example.com/memcached:1.6\""
        );
    }
    let memory_mb = cache.memory_mb.unwrap_or(DEFAULT_CACHE_MEMORY_MB);
    if !(16..=1_048_576).contains(&memory_mb) {
        bail!(
            "{at}: [cache] memory_mb = {memory_mb} is outside 16..1048576; it is the memory for \
             cached items on each node, in MiB, such as 64 (the default) or 1024"
        );
    }
    let port = cache.port.unwrap_or(DEFAULT_CACHE_PORT);
    if port < 1024 {
        bail!(
            "{at}: [cache] port = {port} is below 1024, which memcached, running as a non-root \
             user, may not listen on; use 11211 (the default) or another port from 1024 up"
        );
    }
    let max_connections = cache.max_connections.unwrap_or(DEFAULT_CACHE_CONNECTIONS);
    if !(16..=65_536).contains(&max_connections) {
        bail!(
            "{at}: [cache] max_connections = {max_connections} is outside 16..65536; every \
             Colony pod keeps a few connections to each memcached, so 1024 (the default) \
             serves hundreds of pods"
        );
    }
    let ttl_secs = match &cache.ttl {
        None => None,
        Some(ttl) => {
            let ms = parse_ms("[cache] ttl", ttl)?;
            if !ms.is_multiple_of(1000) {
                bail!(
                    "{at}: [cache] ttl = \"{ttl}\" is not a whole number of seconds, which \
                     memcached counts in; write it like \"60s\" or \"5m\""
                );
            }
            Some(ms / 1000)
        }
    };
    Ok(cache.enabled.unwrap_or(true).then_some(CacheSettings {
        image,
        memory_mb,
        port,
        max_connections,
        ttl_secs,
    }))
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

    /// An app like `describe()`'s, with the built-in store service.
    fn with_store() -> serde_json::Value {
        serde_json::json!({"services": [
            {"name": "a::b", "options": {}},
            {"name": STORE_SERVICE, "options": {"min_instances": 1, "max_instances": 1}}
        ]})
    }

    #[test]
    fn defaults_do_not_scale_the_store() {
        let dir =
            std::env::temp_dir().join(format!("colony-settings-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("colony.toml"),
            "[defaults]\nmin_instances = 2\nmax_instances = 4\nthreads = 2\n",
        )
        .expect("write");
        let (_, s) = resolve(&with_store(), &dir, &no_env).expect("valid");
        assert_eq!(s["a::b"].max_instances, Setting::new(4, Source::ColonyToml));
        let store = &s[STORE_SERVICE];
        assert_eq!(store.min_instances, Setting::new(1, Source::Attribute));
        assert_eq!(store.max_instances, Setting::new(1, Source::Attribute));
        assert_eq!(
            store.threads,
            Setting::new(Some(2), Source::ColonyToml),
            "the rest applies"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn sizes_are_kubernetes_quantities() {
        let gib = 1024.0 * 1024.0 * 1024.0;
        assert_eq!(quantity_bytes("1Gi"), Ok(gib));
        assert_eq!(quantity_bytes("1.5Gi"), Ok(1.5 * gib));
        assert_eq!(quantity_bytes("500M"), Ok(5e8));
        assert_eq!(quantity_bytes("1e9"), Ok(1e9));
        assert_eq!(quantity_bytes("1024"), Ok(1024.0));
        for bad in [
            "1GB", "1gi", "Gi", "", "-1Gi", "1..5Gi", "500m", "1e", "1e99", "1 Gi",
        ] {
            assert!(quantity_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_store_and_the_cache_have_defaults() {
        let dir = std::env::temp_dir().join(format!("colony-storage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let _ = std::fs::remove_file(dir.join("colony.toml"));
        let none = storage(&with_store(), &dir).expect("no colony.toml");
        assert_eq!(none.store, StoreSettings::default());
        assert_eq!(none.store.size, "1Gi");
        assert_eq!(none.cache, None, "the cache is opt-in");

        std::fs::write(
            dir.join("colony.toml"),
            "[store]\nsize = \"20Gi\"\nstorage_class = \"fast-ssd\"\n[cache]\n",
        )
        .expect("write");
        let set = storage(&with_store(), &dir).expect("valid");
        assert_eq!(set.store.size, "20Gi");
        assert_eq!(set.store.storage_class.as_deref(), Some("fast-ssd"));
        assert_eq!(
            set.cache,
            Some(CacheSettings {
                image: "memcached:1.6-alpine".to_owned(),
                memory_mb: 64,
                port: 11211,
                max_connections: 1024,
                ttl_secs: None,
            }),
            "[cache] alone turns it on"
        );

        std::fs::write(
            dir.join("colony.toml"),
            "[store]\nstorage_class = \"\"\n[cache]\nenabled = true\nimage = \"mirror.example/memcached:1.6\"\n\
             memory_mb = 512\nport = 11311\nmax_connections = 4096\nttl = \"5m\"\n",
        )
        .expect("write");
        let set = storage(&with_store(), &dir).expect("valid");
        assert_eq!(
            set.store.storage_class.as_deref(),
            Some(""),
            "no class: hand-made volumes"
        );
        let cache = set.cache.expect("on");
        assert_eq!(
            (
                cache.image.as_str(),
                cache.memory_mb,
                cache.port,
                cache.max_connections,
                cache.ttl_secs
            ),
            ("mirror.example/memcached:1.6", 512, 11311, 4096, Some(300))
        );

        std::fs::write(
            dir.join("colony.toml"),
            "[cache]\nenabled = false\nmemory_mb = 128\n",
        )
        .expect("write");
        let off = storage(&describe(), &dir).expect("valid without the store");
        assert_eq!(off.cache, None);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn store_and_cache_mistakes_say_how_to_fix_them() {
        let dir = std::env::temp_dir().join(format!("colony-storage-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (toml, app, needles) in [
            (
                "[store]\nsize = \"2Gi\"\n",
                describe(),
                &[
                    "does not have it",
                    "features = [\"store\"]",
                    "or remove [store]",
                ][..],
            ),
            (
                "[store]\nsize = \"1GB\"\n",
                with_store(),
                &[
                    "size = \"1GB\" has a unit Kubernetes does not know",
                    "\"1Gi\"",
                ][..],
            ),
            (
                "[store]\nsize = \"10\"\n",
                with_store(),
                &["less than 1Mi"][..],
            ),
            (
                "[store]\nsize = \"500m\"\n",
                with_store(),
                &["thousandths"][..],
            ),
            (
                "[store]\nstorage_class = \"Fast_SSD\"\n",
                with_store(),
                &["not a StorageClass name", "kubectl get storageclass"][..],
            ),
            (
                "[store]\ndatabase_secret = \"Shop DB\"\n",
                with_store(),
                &["not a Secret name", "key `url`"][..],
            ),
            (
                "[store]\ndatabase_secret = \"shop-db\"\nsize = \"5Gi\"\n",
                with_store(),
                &["both database_secret and a disk", "remove size"][..],
            ),
            (
                "[store]\nsize = 5\n",
                with_store(),
                &["malformed", "[store] size, storage_class"][..],
            ),
            (
                "[cache]\nmemory = 64\n",
                describe(),
                &["malformed", "memory_mb"][..],
            ),
            (
                "[cache]\nmemory_mb = 4\n",
                describe(),
                &["memory_mb = 4 is outside 16..1048576"][..],
            ),
            (
                "[cache]\nport = 80\n",
                describe(),
                &["below 1024", "non-root"][..],
            ),
            (
                "[cache]\nimage = \"memcached 1.6\"\n",
                describe(),
                &["not an image reference"][..],
            ),
            (
                "[cache]\nmax_connections = 1\n",
                describe(),
                &["max_connections = 1"][..],
            ),
            (
                "[cache]\nttl = \"1500ms\"\n",
                describe(),
                &["whole number of seconds"][..],
            ),
            (
                "[cache]\nttl = \"soon\"\n",
                describe(),
                &["not a duration"][..],
            ),
        ] {
            std::fs::write(dir.join("colony.toml"), toml).expect("write");
            let err = storage(&app, &dir).expect_err(toml).to_string();
            for needle in needles {
                assert!(err.contains(needle), "{toml:?} gave {err}");
            }
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
