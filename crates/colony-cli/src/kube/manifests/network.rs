//! How the app is reached: each unit's headless Service (instances resolve their peers
//! through it) and ClusterIP Service, the gateway's Service and its Ingress or OpenShift
//! Route, and the NetworkPolicies (instances and the cache only from the app's own pods,
//! the gateway's HTTP port from anywhere).
//!
//! Owns: ports and selectors of Services, and who may connect to what. Must not touch: the
//! pods behind them.

use serde_json::{Value, json};

use super::{CALL_PORT, HTTP_PORT, METRICS_PORT, Options, Platform, Unit, labels, meta};

/// A unit's headless Service (`NAME-headless`, for discovery and the StatefulSet's pod
/// names) and its ClusterIP Service.
pub(super) fn unit_services(
    unit: &Unit,
    opts: &Options,
    selector: &Value,
    headless: &str,
) -> Vec<Value> {
    let component = "instance";
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(opts, headless, component),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": false,
                "selector": selector,
                "ports": [{"name": "calls", "port": CALL_PORT, "targetPort": "calls"}],
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(opts, &unit.name, component),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [
                    {"name": "calls", "port": CALL_PORT, "targetPort": "calls"},
                    {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
                ],
            },
        }),
    ]
}

/// The gateway's Service, and with exposed services its Ingress (or Route).
pub(super) fn gateway_services(exposed: bool, opts: &Options, selector: &Value) -> Vec<Value> {
    let component = "gateway";
    let mut out = vec![json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(opts, "gateway", component),
        "spec": {
            "type": if opts.load_balancer { "LoadBalancer" } else { "ClusterIP" },
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    })];
    if exposed {
        out.push(match opts.platform {
            Platform::Kubernetes => json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": meta(opts, "gateway", component),
                "spec": {"rules": [{"http": {"paths": [{
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": "gateway", "port": {"name": "http"}}},
                }]}}]},
            }),
            Platform::Openshift => json!({
                "apiVersion": "route.openshift.io/v1",
                "kind": "Route",
                "metadata": meta(opts, "gateway", component),
                "spec": {"to": {"kind": "Service", "name": "gateway"}, "port": {"targetPort": "http"}},
            }),
        });
    }
    out
}

pub(super) fn network_policies(opts: &Options) -> Vec<Value> {
    let app = json!({"app.kubernetes.io/name": opts.app});
    let mut out = vec![
        // Instances: only the app's own pods reach them.
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(opts, &format!("{}-instances", opts.app_label()), "instance"),
            "spec": {
                "podSelector": {"matchLabels": labels(opts, "instance")},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": app}}]}],
            },
        }),
        // The gateway: anyone may reach its HTTP port (the ingress controller, a load balancer).
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(opts, &format!("{}-gateway", opts.app_label()), "gateway"),
            "spec": {
                "podSelector": {"matchLabels": labels(opts, "gateway")},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"port": HTTP_PORT, "protocol": "TCP"}]}],
            },
        }),
    ];
    if let Some(cache) = &opts.cache {
        // The cache: only the app's own pods, on memcached's port. memcached has no
        // authentication, so this policy is what keeps other namespaces' pods out.
        out.push(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(opts, &opts.cache_name(), "cache"),
            "spec": {
                "podSelector": {"matchLabels": labels(opts, "cache")},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": app}}],
                    "ports": [{"port": cache.port, "protocol": "TCP"}],
                }],
            },
        }));
    }
    out
}
