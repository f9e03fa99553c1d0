//! `--wait`: following the rollouts of the Deployments, the store's StatefulSet and the
//! cache's DaemonSet until they are done, or the timeout.
//!
//! Owns: reading a workload's rollout from its status as `kubectl rollout status` does, the
//! progress display (bars on a terminal, a line per change otherwise), and the message that
//! says what is not ready and where to look. Must not touch: the objects (it only reads).

use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::bail;
use kube::api::DynamicObject;
use serde_json::Value;

use super::connect::{Cluster, explain};
use super::{APP_LABEL, ApplyOptions, Kind, WAIT_POLL, WORKLOADS};

/// A workload's rollout as its status tells it, read as `kubectl rollout status` reads
/// each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Rollout {
    desired: u64,
    updated: u64,
    ready: u64,
    /// Pods of every version, old ones included.
    total: u64,
    /// The controller has seen the latest spec.
    observed: bool,
    /// A StatefulSet whose pods are not all at its update revision yet.
    revision_pending: bool,
}

impl Rollout {
    /// The rollout of `object`, a Deployment, StatefulSet or DaemonSet (`kind`).
    fn of(kind: &str, object: &DynamicObject) -> Rollout {
        let spec = &object.data["spec"];
        let status = &object.data["status"];
        let count = |v: &Value| v.as_u64().unwrap_or(0);
        let generation = object.metadata.generation.unwrap_or(0);
        let observed = status["observedGeneration"]
            .as_i64()
            .is_some_and(|g| g >= generation);
        match kind {
            // A DaemonSet wants one pod per eligible node; it has no spec.replicas.
            "DaemonSet" => Rollout {
                desired: count(&status["desiredNumberScheduled"]),
                updated: count(&status["updatedNumberScheduled"]),
                ready: count(&status["numberAvailable"]),
                total: count(&status["currentNumberScheduled"]),
                observed,
                revision_pending: false,
            },
            _ => Rollout {
                desired: spec["replicas"].as_u64().unwrap_or(1),
                updated: count(&status["updatedReplicas"]),
                ready: count(&status["readyReplicas"]),
                total: count(&status["replicas"]),
                observed,
                // A StatefulSet replaces pods one at a time and finishes when every pod is
                // at the update revision.
                revision_pending: kind == "StatefulSet"
                    && status["updateRevision"].is_string()
                    && status["updateRevision"] != status["currentRevision"],
            },
        }
    }

    fn done(&self) -> bool {
        self.observed
            && !self.revision_pending
            && self.updated >= self.desired
            && self.ready >= self.desired
            && self.total <= self.desired
    }
}

impl fmt::Display for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ready, {} updated",
            self.ready.min(self.desired),
            self.desired,
            self.updated
        )?;
        if self.total > self.desired {
            write!(f, ", {} old pods terminating", self.total - self.desired)?;
        }
        Ok(())
    }
}

/// `3 Deployments, 1 StatefulSet`: how many of each kind `workloads` holds.
fn count_kinds(workloads: &[(&Kind, String)]) -> String {
    WORKLOADS
        .iter()
        .rev()
        .filter_map(|kind| {
            let n = workloads.iter().filter(|(k, _)| k.kind == *kind).count();
            (n > 0).then(|| format!("{n} {kind}{}", if n == 1 { "" } else { "s" }))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wait until every workload in `workloads` (Deployments, the store's StatefulSet, the
/// cache's DaemonSet) is rolled out, showing progress: bars on a terminal, a line per
/// change otherwise.
pub(super) async fn wait(
    cluster: &Cluster,
    workloads: &[(&'static Kind, String)],
    options: &ApplyOptions,
    timeout: Duration,
) -> anyhow::Result<()> {
    let label = |kind: &Kind, name: &str| format!("{}/{name}", kind.kind.to_lowercase());
    let bars = std::io::stderr().is_terminal().then(|| {
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template("{prefix:>32} {bar:20} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        let bars: Vec<indicatif::ProgressBar> = workloads
            .iter()
            .map(|(kind, name)| {
                let bar = multi.add(indicatif::ProgressBar::new(1));
                bar.set_style(style.clone());
                bar.set_prefix(label(kind, name));
                bar
            })
            .collect();
        (multi, bars)
    });
    let deadline = Instant::now() + timeout;
    let mut last: Vec<Option<Rollout>> = vec![None; workloads.len()];
    loop {
        let mut all_done = true;
        for (i, (kind, name)) in workloads.iter().enumerate() {
            if last[i].is_some_and(|r| r.done()) {
                continue;
            }
            let api = kind.api(&cluster.client, &options.namespace);
            let rollout = match api.get(name).await {
                Ok(object) => Rollout::of(kind.kind, &object),
                Err(e) => bail!(
                    "could not follow the rollout of {} {name}: {}",
                    kind.kind,
                    explain(cluster, &e, "get", kind, Some(&options.namespace))
                ),
            };
            all_done &= rollout.done();
            if last[i] != Some(rollout) {
                match &bars {
                    Some((_, bars)) => {
                        bars[i].set_length(rollout.desired.max(1));
                        bars[i].set_position(rollout.ready.min(rollout.desired));
                        bars[i].set_message(if rollout.done() {
                            "ready".to_owned()
                        } else {
                            rollout.to_string()
                        });
                        if rollout.done() {
                            bars[i].finish();
                        }
                    }
                    None if rollout.done() => {
                        eprintln!(
                            "{}: ready ({}/{})",
                            label(kind, name),
                            rollout.ready,
                            rollout.desired
                        );
                    }
                    None => eprintln!("{}: {rollout}", label(kind, name)),
                }
                last[i] = Some(rollout);
            }
        }
        if all_done {
            if let Some((multi, _)) = &bars {
                let _ = multi.clear();
            }
            eprintln!(
                "rolled out: {} ready in namespace `{}`",
                count_kinds(workloads),
                options.namespace
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(timed_out(workloads, &last, options, timeout));
        }
        tokio::time::sleep(WAIT_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Why `--wait` gave up: what is not ready yet, and where to look.
fn timed_out(
    workloads: &[(&'static Kind, String)],
    last: &[Option<Rollout>],
    options: &ApplyOptions,
    timeout: Duration,
) -> anyhow::Error {
    let pending: Vec<String> = workloads
        .iter()
        .zip(last)
        .filter(|(_, r)| !r.is_some_and(|r| r.done()))
        .map(|((_, n), r)| match r {
            Some(r) => format!("{n} ({r})"),
            None => n.clone(),
        })
        .collect();
    let store_pending = workloads
        .iter()
        .zip(last)
        .any(|((k, _), r)| k.kind == "StatefulSet" && !r.is_some_and(|r| r.done()));
    anyhow::anyhow!(
        "timed out after {}s waiting for the rollout: not ready: {}. The objects are \
         applied and Kubernetes keeps rolling them out; see why with `kubectl -n {ns} get \
         pods -l {APP_LABEL}={app}` and `kubectl -n {ns} describe deployment NAME` (or \
         statefulset, daemonset) (image pull errors mean the image has not reached the \
         cluster's nodes: see docs/deploying.md){store}, or wait longer with --timeout",
        timeout.as_secs(),
        pending.join(", "),
        ns = options.namespace,
        app = options.app,
        store = if store_pending {
            format!(
                "; the store's pod stays Pending until its disk is bound: `kubectl -n {} \
                 get pvc` shows a claim that no StorageClass provides (the cluster has no \
                 default class, or `storage_class` in [store] names one it lacks)",
                options.namespace
            )
        } else {
            String::new()
        },
    )
}

#[cfg(test)]
mod tests {
    use kube::core::{ApiResource, GroupVersionKind};

    use super::*;

    #[test]
    fn a_rollout_is_done_when_every_replica_is_new_and_ready() {
        let object = |spec: Value, status: Value, generation: i64| {
            let mut o = DynamicObject::new(
                "x",
                &ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk("apps", "v1", "Deployment"),
                    "deployments",
                ),
            );
            o.metadata.generation = Some(generation);
            o.data = serde_json::json!({"spec": spec, "status": status});
            o
        };
        let spec = serde_json::json!({"replicas": 2});
        let ready = serde_json::json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2});
        assert!(Rollout::of("Deployment", &object(spec.clone(), ready.clone(), 3)).done());
        assert!(
            !Rollout::of("Deployment", &object(spec.clone(), ready, 4)).done(),
            "not observed yet"
        );
        let surging = serde_json::json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 3});
        let r = Rollout::of("Deployment", &object(spec, surging, 3));
        assert!(!r.done());
        assert!(r.to_string().contains("1 old pods"), "{r}");
    }

    #[test]
    fn a_stateful_set_is_done_at_its_update_revision_and_a_daemon_set_on_every_node() {
        let object = |spec: Value, status: Value| {
            let mut o = DynamicObject::new(
                "x",
                &ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk("apps", "v1", "StatefulSet"),
                    "statefulsets",
                ),
            );
            o.metadata.generation = Some(2);
            o.data = serde_json::json!({"spec": spec, "status": status});
            o
        };
        let one = serde_json::json!({"replicas": 1});
        let at = |current: &str| {
            serde_json::json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
                "readyReplicas": 1, "currentRevision": current, "updateRevision": "store-2"})
        };
        assert!(Rollout::of("StatefulSet", &object(one.clone(), at("store-2"))).done());
        assert!(
            !Rollout::of("StatefulSet", &object(one, at("store-1"))).done(),
            "the pod is still at the old revision"
        );

        let nodes = |available: u64| {
            serde_json::json!({"observedGeneration": 2, "desiredNumberScheduled": 3,
                "currentNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": available})
        };
        let r = Rollout::of("DaemonSet", &object(serde_json::json!({}), nodes(2)));
        assert!(!r.done());
        assert_eq!(r.to_string(), "2/3 ready, 3 updated");
        assert!(Rollout::of("DaemonSet", &object(serde_json::json!({}), nodes(3))).done());
    }
}
