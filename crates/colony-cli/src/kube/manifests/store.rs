//! The app's state on Kubernetes: the store service as a StatefulSet of one pod with its
//! own disk (a PersistentVolumeClaim from a template), and the `[cache]` tier as a
//! memcached DaemonSet with the headless Service that names every node's memcached.
//!
//! Owns: the single-writer rule (the store on a disk runs exactly one instance), the claim
//! (size, class, kept when the StatefulSet goes), and memcached's memory, user and
//! probes. Must not touch: the claims' lifecycle (they carry no `managed-by: colony`, so
//! `--prune` never selects them).

use anyhow::bail;
use serde_json::{Value, json};

use super::security::container_security;
use super::{Options, Platform, Unit, labels, meta};
use crate::settings::{CacheSettings, STORE_SERVICE, ServiceSettings};

/// Where the store's PersistentVolumeClaim is mounted in its pod.
pub(super) const STORE_DIR: &str = "/var/lib/colony";
/// The store's file on that volume (`COLONY_STORE_PATH`).
pub(super) const STORE_FILE: &str = "/var/lib/colony/store.redb";
/// The user and group the official memcached image runs as (`memcache`).
const MEMCACHED_UID: u32 = 11211;

/// The store has one writer: on Kubernetes it runs exactly one instance, whatever
/// `colony.toml` or the environment say.
pub(super) fn check_single_writer(s: &ServiceSettings) -> anyhow::Result<()> {
    for (field, setting) in [
        ("min_instances", &s.min_instances),
        ("max_instances", &s.max_instances),
    ] {
        if setting.value != 1 {
            bail!(
                "`{STORE_SERVICE}` runs exactly one instance (the store has a single writer, on \
                 one disk), but its {field} is {} (from {}); remove {field} from \
                 [services.\"{STORE_SERVICE}\"] in colony.toml, and unset {}",
                setting.value,
                setting.source,
                crate::settings::env_name(STORE_SERVICE, field)
            );
        }
    }
    Ok(())
}

/// The store service's StatefulSet: exactly one pod (`NAME-0`), named through its headless
/// Service, with the claim `data-NAME-0` made from the `data` template and kept when the
/// StatefulSet is deleted or scaled down.
pub(super) fn store_stateful_set(
    unit: &Unit,
    opts: &Options,
    selector: &Value,
    headless: &str,
    template: Value,
) -> Value {
    let mut claim = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": opts.store.size}},
    });
    if let Some(class) = &opts.store.storage_class {
        claim["storageClassName"] = json!(class);
    }
    // The claims carry the app's name to find them by, but not `managed-by: colony`: the
    // StatefulSet controller makes them, and colony never prunes or deletes them.
    let mut claim_labels = json!({"app.kubernetes.io/name": opts.app});
    claim_labels["app.kubernetes.io/component"] = json!("store");
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(opts, &unit.name, "instance"),
        "spec": {
            // One writer: fixed, never autoscaled.
            "replicas": 1,
            "serviceName": headless,
            "selector": {"matchLabels": selector},
            // With one pod there is no order to keep; OrderedReady (the default, written
            // out) makes a later scale-up, were it ever allowed, wait for each pod.
            "podManagementPolicy": "OrderedReady",
            // The old pod stops (releasing the disk and the file lock) before the new one
            // starts: an update is a short outage of the store, retried by callers.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": template,
            "volumeClaimTemplates": [{
                "metadata": {"name": "data", "labels": claim_labels},
                "spec": claim,
            }],
        },
    })
}

/// The memcached tier: a DaemonSet (one memcached on every node the app's pods may use)
/// and the headless Service that names them all to `COLONY_CACHE`.
pub(super) fn cache_objects(cache: &CacheSettings, opts: &Options) -> Vec<Value> {
    let name = opts.cache_name();
    let component = "cache";
    let selector = labels(opts, component);
    // Items get `memory_mb`; memcached itself needs more: its hash table (about an eighth
    // of the item memory), buffers per connection (~16 KiB each) and a base of 32 MiB.
    // Request and limit are equal, so the kubelet evicts other pods before this one.
    let memory = format!(
        "{}Mi",
        u64::from(cache.memory_mb)
            + u64::from(cache.memory_mb) / 8
            + u64::from(cache.max_connections) / 64
            + 32
    );
    let security = match opts.platform {
        Platform::Kubernetes => {
            json!({"runAsNonRoot": true, "runAsUser": MEMCACHED_UID, "runAsGroup": MEMCACHED_UID})
        }
        Platform::Openshift => json!({"runAsNonRoot": true}),
    };
    let port = json!([{"name": "memcached", "containerPort": cache.port, "protocol": "TCP"}]);
    vec![
        json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": meta(opts, &name, component),
            "spec": {
                "selector": {"matchLabels": selector},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": selector}, "spec": {
                    "serviceAccountName": opts.app_label(),
                    "automountServiceAccountToken": false,
                    "securityContext": security,
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "memcached",
                        "image": cache.image,
                        // The official image's entrypoint runs memcached with these flags.
                        // -U 0: no UDP (amplification attacks); -c: connections per node.
                        "args": [
                            "-m", cache.memory_mb.to_string(),
                            "-p", cache.port.to_string(),
                            "-U", "0",
                            "-c", cache.max_connections.to_string(),
                        ],
                        "ports": port,
                        "readinessProbe": {"tcpSocket": {"port": "memcached"}, "periodSeconds": 5},
                        "livenessProbe": {"tcpSocket": {"port": "memcached"}, "periodSeconds": 10, "failureThreshold": 3},
                        "resources": {
                            "requests": {"cpu": "50m", "memory": memory},
                            "limits": {"memory": memory},
                        },
                        "securityContext": container_security(),
                    }],
                }},
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(opts, &name, component),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": false,
                "selector": selector,
                "ports": [{"name": "memcached", "port": cache.port, "targetPort": "memcached", "protocol": "TCP"}],
            },
        }),
    ]
}
