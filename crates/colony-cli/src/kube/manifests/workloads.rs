//! The pods that run the app: each unit's Deployment (or, for the store on a disk, its
//! StatefulSet) and the gateway's Deployment, with their arguments, environment, probes,
//! resources, security, node affinity, burst tolerations and spread.
//!
//! Owns: what every instance is told (`COLONY_PEERS`, discovery, the cache, TLS) and how
//! each unit's pods are placed. Must not touch: Services and policies (`network`),
//! autoscalers (`autoscaling`), the store's claim (`store`).

use serde_json::{Value, json};

use super::autoscaling::unit_autoscaling;
use super::network::{gateway_services, unit_services};
use super::security::{TLS_DIR, container_security, pod_security, tls_volume};
use super::store::{STORE_DIR, STORE_FILE, store_stateful_set};
use super::{CALL_PORT, HTTP_PORT, METRICS_PORT, Options, Unit, dns_label, labels, meta};
use crate::settings::ServiceSettings;

fn common_env(opts: &Options, peers: &str) -> Vec<Value> {
    let mut env = vec![
        json!({"name": "COLONY_APP", "value": opts.app}),
        json!({"name": "COLONY_DISCOVERY", "value": "kubernetes"}),
        json!({"name": "COLONY_PEERS", "value": peers}),
        json!({"name": "COLONY_LOG", "value": "info"}),
        json!({"name": "COLONY_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
    ];
    if let Some(cache) = &opts.cache {
        // The headless Service: one address per memcached pod, re-resolved as nodes come
        // and go; the runtime spreads keys over them.
        env.push(json!({"name": "COLONY_CACHE", "value": format!(
            "{}.{}.svc.cluster.local:{}", opts.cache_name(), opts.namespace, cache.port
        )}));
        if let Some(ttl) = cache.ttl_secs {
            env.push(json!({"name": "COLONY_CACHE_TTL", "value": format!("{ttl}s")}));
        }
    }
    if opts.cert_manager() {
        // cert-manager rewrites the files in place (the kubelet swaps the Secret's volume
        // atomically); instances reload them when they change.
        env.push(json!({"name": "COLONY_TLS_CERT", "value": format!("{TLS_DIR}/tls.crt")}));
        env.push(json!({"name": "COLONY_TLS_KEY", "value": format!("{TLS_DIR}/tls.key")}));
        env.push(json!({"name": "COLONY_TLS_CA", "value": format!("{TLS_DIR}/ca.crt")}));
    } else if opts.ca.is_some() {
        env.push(json!({"name": "COLONY_CA_DIR", "value": "/etc/colony/ca"}));
    } else {
        env.push(json!({"name": "COLONY_TLS", "value": "off"}));
    }
    env
}

/// A unit's objects: its workload, its Services, its autoscaler and disruption budget.
pub(super) fn unit_objects(unit: &Unit, opts: &Options, peers: &str) -> Vec<Value> {
    let s = &unit.settings;
    let component = "instance";
    let mut selector = labels(opts, component);
    selector["colony.dev/unit"] = json!(unit.name);
    let threads = s.threads.value.unwrap_or(1);
    let mut args = vec![
        json!("serve"),
        json!("--service"),
        json!(unit.services.join(",")),
        json!("--listen"),
        json!(format!("0.0.0.0:{CALL_PORT}")),
        json!("--metrics"),
        json!(format!("0.0.0.0:{METRICS_PORT}")),
    ];
    if let Some(t) = s.threads.value {
        args.push(json!("--threads"));
        args.push(json!(t.to_string()));
    }
    let probe = |path: &str, period: u32| json!({"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": period, "failureThreshold": 3});
    let (volumes, mut mounts) = tls_volume(opts, &unit.name);
    let mut env = common_env(opts, peers);
    let mut security = pod_security(opts);
    if let (true, Some(secret)) = (unit.is_store(), &opts.store.database_secret) {
        // The store on PostgreSQL: the URL (with its password) comes from the Secret, never
        // from the manifest.
        env.push(json!({"name": "COLONY_STORE_URL", "valueFrom": {"secretKeyRef": {"name": secret, "key": "url"}}}));
    }
    if unit.is_store_on_disk(opts) {
        // The claim of the StatefulSet's `data` template; the root filesystem stays
        // read-only. The pod's fsGroup makes the volume writable by the non-root user,
        // and is applied only when the volume's root does not have it yet (a large disk
        // is not walked at every start).
        mounts.push(json!({"name": "data", "mountPath": STORE_DIR}));
        env.push(json!({"name": "COLONY_STORE_PATH", "value": STORE_FILE}));
        security["fsGroupChangePolicy"] = json!("OnRootMismatch");
    }
    let mut pod_spec = json!({
        "serviceAccountName": opts.app_label(),
        "automountServiceAccountToken": false,
        "securityContext": security,
        "terminationGracePeriodSeconds": 45,
        "containers": [{
            "name": "instance",
            "image": opts.image,
            "args": args,
            "env": env,
            "ports": [
                {"name": "calls", "containerPort": CALL_PORT},
                {"name": "metrics", "containerPort": METRICS_PORT},
            ],
            "readinessProbe": probe("/healthz", 2),
            "livenessProbe": probe("/healthz", 10),
            "resources": {"requests": {"cpu": format!("{}m", threads * 1000), "memory": "64Mi"}},
            "securityContext": container_security(),
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    });
    place(&mut pod_spec, s, &selector);
    let mut template_labels = selector.clone();
    template_labels["colony.dev/services"] = json!(
        dns_label(&unit.services.join("-"))
            .chars()
            .take(63)
            .collect::<String>()
    );
    let headless = format!("{}-headless", unit.name);
    let template = json!({"metadata": {"labels": template_labels}, "spec": pod_spec});
    let workload = if unit.is_store_on_disk(opts) {
        store_stateful_set(unit, opts, &selector, &headless, template)
    } else {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(opts, &unit.name, component),
            // No `replicas`: the HorizontalPodAutoscaler below owns the count (from
            // `min_instances` up), so a later apply never resets what it scaled to.
            "spec": {
                "selector": {"matchLabels": selector},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": template,
            },
        })
    };
    let mut out = vec![workload];
    out.extend(unit_services(unit, opts, &selector, &headless));
    out.extend(unit_autoscaling(unit, opts, &selector));
    out
}

/// Where a unit's pods may and prefer to run: node affinity, the burst toleration, and at
/// most `max_per_host` on a node.
fn place(pod_spec: &mut Value, s: &ServiceSettings, selector: &Value) {
    if let Some(affinity) = node_affinity(s) {
        pod_spec["affinity"] = json!({"nodeAffinity": affinity});
    }
    if s.burst.value {
        pod_spec["tolerations"] = json!([{
            "key": BURST_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule",
        }]);
    }
    if let Some(max) = s.max_per_host.value {
        // At most `max_per_host` on a node: a skew of `max` against nodes with none.
        pod_spec["topologySpreadConstraints"] = json!([{
            "maxSkew": max,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": selector},
        }]);
    }
}

/// The node label (and taint) of burst capacity: nodes an app uses only when the others
/// are full, such as a cloud node pool that scales from zero.
const BURST_LABEL: &str = "colony.dev/burst";

/// Preferred node affinity: each `prefer_nodes` label weighs less than the one before it;
/// with `burst`, nodes without the burst label weigh most, so burst nodes take instances
/// only when the others cannot.
fn node_affinity(s: &ServiceSettings) -> Option<Value> {
    let mut preferred = Vec::new();
    if s.burst.value {
        preferred.push(json!({
            "weight": 100,
            "preference": {"matchExpressions": [{"key": BURST_LABEL, "operator": "DoesNotExist"}]},
        }));
    }
    for (i, label) in s.prefer_nodes.value.iter().enumerate() {
        let (key, value) = label.split_once('=').unwrap_or((label, ""));
        let weight = 90_i64.saturating_sub(10 * i as i64).max(10);
        preferred.push(json!({
            "weight": weight,
            "preference": {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]},
        }));
    }
    (!preferred.is_empty())
        .then(|| json!({"preferredDuringSchedulingIgnoredDuringExecution": preferred}))
}

/// The gateway's Deployment (two replicas), its Service and its Ingress or Route.
pub(super) fn gateway_objects(services: &[&Value], opts: &Options, peers: &str) -> Vec<Value> {
    let exposed = services.iter().any(|s| s["exposed"] == true);
    let component = "gateway";
    let selector = labels(opts, component);
    let (volumes, mounts) = tls_volume(opts, "gateway");
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(opts, "gateway", component),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector}, "spec": {
                "serviceAccountName": opts.app_label(),
                "automountServiceAccountToken": false,
                "securityContext": pod_security(opts),
                "containers": [{
                    "name": "gateway",
                    "image": opts.image,
                    "args": ["gateway", "--http", format!("0.0.0.0:{HTTP_PORT}")],
                    "env": common_env(opts, peers),
                    "ports": [{"name": "http", "containerPort": HTTP_PORT}],
                    "readinessProbe": {"httpGet": {"path": "/openapi.json", "port": "http"}, "periodSeconds": 5},
                    "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10},
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                    "securityContext": container_security(),
                    "volumeMounts": mounts,
                }],
                "volumes": volumes,
            }},
        },
    });
    let mut out = vec![deployment];
    out.extend(gateway_services(exposed, opts, &selector));
    out
}
