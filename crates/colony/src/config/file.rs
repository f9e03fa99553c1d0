//! `colony.toml`: the one schema, read by the runtime (security, allow-lists) and by the
//! CLI (instances, autoscaling, groups, the store's disk, the cache tier).
//!
//! Owns: the file's layout and reading it, with an error that names every key it allows.
//! Promises: an unknown key is an error (a typo is not silently ignored), a missing file
//! means defaults. Values stay as written (durations as text): their readers check them
//! with [`super::duration`] and say which key was wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Every key `colony.toml` allows, for error messages.
const KEYS: &str = "security, cert_lifetime, cert_renew_before; [cluster] heartbeat; \
     [defaults] and [services.\"NAME\"] min_instances, max_instances, high_watermark, \
     low_watermark, cooldown, capacity, threads, pin_cores, max_per_host, prefer_nodes, burst, \
     callers; [groups] NAME = [SERVICES]; [store] size, storage_class, database_secret; \
     [cache] enabled, image, memory_mb, port, max_connections, ttl";

/// `colony.toml`, next to the app (or at `COLONY_CONFIG`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColonyToml {
    /// `mtls` (the default) or `off`.
    pub security: Option<String>,
    /// The lifetime of certificates a process issues itself (a duration).
    pub cert_lifetime: Option<String>,
    /// How long before expiry a certificate is renewed (a duration).
    pub cert_renew_before: Option<String>,
    /// `[cluster]`: settings of the local cluster.
    #[serde(default)]
    pub cluster: ClusterToml,
    /// `[defaults]`: settings for every service that does not set its own.
    #[serde(default)]
    pub defaults: ServiceToml,
    /// `[services."NAME"]`: one service's settings.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceToml>,
    /// `[groups]`: services that share one process (one pod on Kubernetes).
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// `[store]`: the store's disk or database (apps with the `store` feature).
    pub store: Option<StoreToml>,
    /// `[cache]`: the memcached cache tier.
    pub cache: Option<CacheToml>,
}

/// `[cluster]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterToml {
    /// The interval between an instance's heartbeats (a duration).
    pub heartbeat: Option<String>,
}

/// `[defaults]` and `[services."NAME"]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceToml {
    /// The fewest instances the autoscaler keeps.
    pub min_instances: Option<u32>,
    /// The most instances the autoscaler starts.
    pub max_instances: Option<u32>,
    /// The load ratio above which the autoscaler adds an instance.
    pub high_watermark: Option<f64>,
    /// The load ratio below which the autoscaler removes one.
    pub low_watermark: Option<f64>,
    /// How long the autoscaler waits between two changes (a duration).
    pub cooldown: Option<String>,
    /// Requests in flight per instance at a load ratio of 1.
    pub capacity: Option<u32>,
    /// Worker threads per instance.
    pub threads: Option<u32>,
    /// Whether each instance is pinned to cores of its own.
    pub pin_cores: Option<bool>,
    /// The most instances on one host.
    pub max_per_host: Option<u32>,
    /// Node labels preferred on Kubernetes.
    pub prefer_nodes: Option<Vec<String>>,
    /// Whether burst nodes may run it.
    pub burst: Option<bool>,
    /// Who may call the service (an allow-list; every caller when absent).
    pub callers: Option<Vec<String>>,
}

/// `[store]`: the PersistentVolumeClaim of the store's StatefulSet, or the Secret that
/// names its PostgreSQL database.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreToml {
    /// The volume's size, a Kubernetes quantity (`10Gi`).
    pub size: Option<String>,
    /// The volume's storage class.
    pub storage_class: Option<String>,
    /// A Secret whose `url` names a PostgreSQL database.
    pub database_secret: Option<String>,
}

/// `[cache]`: the memcached tier.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheToml {
    /// Whether the tier runs.
    pub enabled: Option<bool>,
    /// The memcached image on Kubernetes.
    pub image: Option<String>,
    /// Memory per server, in MiB.
    pub memory_mb: Option<u32>,
    /// The servers' port.
    pub port: Option<u16>,
    /// Connections per server.
    pub max_connections: Option<u32>,
    /// How long an entry lives (a duration).
    pub ttl: Option<String>,
}

/// `colony.toml` could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("could not read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a key the schema lacks.
    #[error("{} is malformed: {reason}\nallowed: {KEYS}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the TOML reader said.
        reason: String,
    },
}

impl ColonyToml {
    /// Read the file at `path`; a file that does not exist means every default.
    pub fn read(path: &Path) -> Result<ColonyToml, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => ColonyToml::parse(&text).map_err(|reason| ConfigError::Malformed {
                path: path.to_owned(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ColonyToml::default()),
            Err(source) => Err(ConfigError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parse the file's text; the error is what the TOML reader said.
    pub fn parse(text: &str) -> Result<ColonyToml, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_section() {
        let file = ColonyToml::parse(
            r#"
            security = "off"
            [cluster]
            heartbeat = "250ms"
            [defaults]
            cooldown = "5s"
            [services."a::b"]
            max_instances = 4
            callers = ["@gateway"]
            [groups]
            front = ["a::b"]
            [store]
            size = "1Gi"
            [cache]
            ttl = "1m"
            "#,
        )
        .expect("valid");
        assert_eq!(file.security.as_deref(), Some("off"));
        assert_eq!(file.cluster.heartbeat.as_deref(), Some("250ms"));
        assert_eq!(file.services["a::b"].max_instances, Some(4));
        assert_eq!(file.groups["front"], ["a::b"]);
        assert_eq!(file.cache.and_then(|c| c.ttl).as_deref(), Some("1m"));
    }

    #[test]
    fn an_unknown_key_names_the_allowed_ones() {
        let err = ColonyToml::parse("[defaults]\ncooldwn = \"5s\"").expect_err("a typo");
        assert!(err.contains("cooldwn"), "{err}");
        let err = ConfigError::Malformed {
            path: "colony.toml".into(),
            reason: err,
        };
        assert!(err.to_string().contains("allowed: security"), "{err}");
    }

    #[test]
    fn a_missing_file_is_the_defaults() {
        let file = ColonyToml::read(Path::new("/nonexistent/colony.toml")).expect("defaults");
        assert!(file.services.is_empty());
    }
}
