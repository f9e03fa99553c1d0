//! How a unit scales and is disrupted on Kubernetes: its HorizontalPodAutoscaler (from
//! `min_instances` to the ceiling, holding CPU at the high watermark, scaling down after
//! the cool-down) and its PodDisruptionBudget.
//!
//! Owns: turning the local autoscaler's settings into the HPA's terms. Promises: the store
//! on a disk has no autoscaler (one writer), and no budget ever blocks a node drain. Must
//! not touch: the workloads themselves (the Deployment leaves `replicas` to the HPA).

use serde_json::{Value, json};

use super::{Options, Unit, meta};

/// The unit's HorizontalPodAutoscaler (not for the store on a disk) and its
/// PodDisruptionBudget, selecting its pods by `selector`.
pub(super) fn unit_autoscaling(unit: &Unit, opts: &Options, selector: &Value) -> Vec<Value> {
    let s = &unit.settings;
    let component = "instance";
    let mut out = Vec::new();
    if !unit.is_store_on_disk(opts) {
        // The store on a disk has no autoscaler: it is fixed at one writer.
        let min_replicas = s.min_instances.value.max(1);
        out.push(json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta(opts, &unit.name, component),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": unit.name},
                "minReplicas": min_replicas,
                "maxReplicas": s.ceiling().max(min_replicas),
                // Kubernetes sees CPU, not calls in flight: the high watermark becomes the
                // CPU utilization to hold, the cool-down the scale-down stabilization window.
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization",
                    "averageUtilization": ((s.high_watermark.value * 100.0).round() as u32).clamp(1, 100),
                }}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": (s.cooldown_ms.value / 1000).min(3600)}},
            },
        }));
    }
    // For the store too, `maxUnavailable: 1` and not `minAvailable: 1`: on a single
    // replica, `minAvailable: 1` allows no eviction at all, so every node drain (upgrades,
    // autoscaler scale-downs) would hang on the store's node forever. One writer cannot
    // move without a short outage whatever the budget says; letting the drain evict it
    // costs that outage (callers retry while the pod restarts elsewhere, with its disk)
    // instead of blocking cluster maintenance.
    out.push(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(opts, &unit.name, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }));
    out
}
