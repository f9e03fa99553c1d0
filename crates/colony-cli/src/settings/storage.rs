//! What `colony.toml` says about state on Kubernetes: the store's disk (`[store]`) and the
//! memcached cache tier (`[cache]`), checked against the app and against what Kubernetes
//! accepts.

use std::path::Path;

use anyhow::bail;
use colony::control::config::CacheToml;

use super::{load, parse_ms};

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
pub(super) fn quantity_bytes(q: &str) -> Result<f64, &'static str> {
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
