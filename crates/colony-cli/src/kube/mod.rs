//! `colony deploy k8s`: the app's Kubernetes objects (`manifests`) and applying them
//! through the Kubernetes API (`connect`, `apply`, `prune`, `rollout`).
//!
//! This file owns the table of kinds colony applies (how to reach each in the API, and in
//! which order) and `run`, which connects, applies, prunes and waits. Together the rooms
//! own: finding the kubeconfig and its context, checking that the API server answers,
//! server-side apply (field manager `colony`, forced: colony owns the fields it declares)
//! in dependency order, server-side dry runs, pruning what the app no longer declares,
//! waiting for the rollouts of the Deployments, the store's StatefulSet and the cache's
//! DaemonSet, and saying what went wrong and what to do next.
//! Must not touch: what the objects are (`manifests` generates them, as JSON; they are
//! applied as they are, as dynamic objects of a fixed kind → resource table).
//!
//! Promises: nothing is half-applied silently. Objects go in an order that lets each one
//! find what it refers to (Namespace, ServiceAccount, Secrets, cert-manager Issuer and
//! Certificates, NetworkPolicies, Services, PodDisruptionBudgets, autoscalers, the
//! Ingress/Route, then the cache's DaemonSet, the store's StatefulSet and the Deployments
//! last), kinds that the cluster does not serve (cert-manager,
//! OpenShift Routes) are found before anything is applied, and when an object fails the
//! error lists exactly which objects were applied in this run and which were not. Nothing
//! is rolled back: an object applied before the failure may have existed before, with a
//! state this run cannot restore, and server-side apply is idempotent, so running the same
//! command again after fixing the cause finishes the job. PersistentVolumeClaims (the
//! store's data) are not a kind colony applies, so `--prune` never lists or deletes them:
//! they outlive the StatefulSet that made them.

mod apply;
mod connect;
pub(crate) mod manifests;
mod prune;
mod rollout;

use std::time::Duration;

use anyhow::Context;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use self::connect::{NoCluster, connect};

/// The field manager of every server-side apply.
pub(crate) const FIELD_MANAGER: &str = "colony";
/// The label that marks an object as colony's.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label that names the app an object belongs to.
const APP_LABEL: &str = "app.kubernetes.io/name";
/// How often `--wait` looks at the workloads.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// A kind of object `manifests` generates: how to reach it in the API and when to apply it.
struct Kind {
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    /// Lower goes first.
    rank: u8,
    /// For kinds a CRD adds: what serves them, and what to do when the cluster lacks them.
    crd: Option<&'static str>,
}

const KINDS: &[Kind] = &[
    kind("v1", "Namespace", "namespaces", false, 0, None),
    kind("v1", "ServiceAccount", "serviceaccounts", true, 1, None),
    kind("v1", "Secret", "secrets", true, 2, None),
    kind(
        "cert-manager.io/v1",
        "Issuer",
        "issuers",
        true,
        3,
        Some(CERT_MANAGER_HINT),
    ),
    kind(
        "cert-manager.io/v1",
        "Certificate",
        "certificates",
        true,
        4,
        Some(CERT_MANAGER_HINT),
    ),
    kind(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        5,
        None,
    ),
    kind("v1", "Service", "services", true, 6, None),
    kind(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        7,
        None,
    ),
    kind(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        8,
        None,
    ),
    kind(
        "networking.k8s.io/v1",
        "Ingress",
        "ingresses",
        true,
        9,
        None,
    ),
    kind(
        "route.openshift.io/v1",
        "Route",
        "routes",
        true,
        9,
        Some(
            "Routes are served by OpenShift only; deploy with `--platform kubernetes` for an \
             Ingress instead",
        ),
    ),
    // Workloads last, what they call first: the cache, then the store, then the services.
    kind("apps/v1", "DaemonSet", "daemonsets", true, 10, None),
    kind("apps/v1", "StatefulSet", "statefulsets", true, 11, None),
    kind("apps/v1", "Deployment", "deployments", true, 12, None),
];

/// The kinds whose rollout `--wait` follows.
const WORKLOADS: &[&str] = &["DaemonSet", "StatefulSet", "Deployment"];

const CERT_MANAGER_HINT: &str = "install cert-manager first (`kubectl apply -f \
     https://github.com/cert-manager/cert-manager/releases/latest/download/cert-manager.yaml`, \
     see https://cert-manager.io/docs/installation/), or deploy with `--certs secret`";

const fn kind(
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    rank: u8,
    crd: Option<&'static str>,
) -> Kind {
    Kind {
        api_version,
        kind,
        plural,
        namespaced,
        rank,
        crd,
    }
}

impl Kind {
    fn group(&self) -> &'static str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    /// `deployments.apps`, `secrets`: the resource as RBAC and `kubectl auth can-i` name it.
    fn resource(&self) -> String {
        match self.group() {
            "" => self.plural.to_owned(),
            group => format!("{}.{group}", self.plural),
        }
    }

    fn api_resource(&self) -> ApiResource {
        let (group, version) = self
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", self.api_version));
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, self.kind),
            self.plural,
        )
    }

    fn api(&self, client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
        if self.namespaced {
            Api::namespaced_with(client.clone(), namespace, &self.api_resource())
        } else {
            Api::all_with(client.clone(), &self.api_resource())
        }
    }
}

fn kind_of(object: &Value) -> anyhow::Result<&'static Kind> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
        .with_context(|| format!("colony cannot apply {api_version} {kind} objects"))
}

/// What to do with the objects.
#[derive(Debug, Clone)]
pub(crate) struct ApplyOptions {
    /// The app's name (the `app.kubernetes.io/name` label).
    pub(crate) app: String,
    /// The namespace of the namespaced objects.
    pub(crate) namespace: String,
    /// Delete the app's objects that `objects` no longer holds.
    pub(crate) prune: bool,
    /// Wait this long for the Deployments to be ready.
    pub(crate) wait: Option<Duration>,
    /// Ask the server to check everything and change nothing (`dryRun=All`).
    pub(crate) dry_run: bool,
}

/// `colony deploy k8s` once the objects exist: print them (`--dry-run -o`), check them on the
/// server (`--dry-run`; the manifests are printed instead when there is no cluster), or
/// apply them.
pub(crate) async fn run(
    objects: &[Value],
    context: Option<&str>,
    options: &ApplyOptions,
) -> anyhow::Result<()> {
    let cluster = match connect(context).await {
        Ok(cluster) => cluster,
        Err(e) if options.dry_run && e.is::<NoCluster>() => {
            eprintln!(
                "{e}\nno server to check them: printing the manifests instead (-o yaml does \
                 this without trying a cluster)"
            );
            print!("{}", manifests::to_yaml(objects)?);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    eprintln!(
        "{} {} objects {} {} (context `{}`, namespace `{}`)",
        if options.dry_run {
            "checking"
        } else {
            "applying"
        },
        objects.len(),
        if options.dry_run { "on" } else { "to" },
        cluster.server,
        cluster.context,
        options.namespace
    );
    apply::apply(&cluster, objects, options).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_ordered_and_named_as_rbac_names_it() {
        assert_eq!(KINDS[0].kind, "Namespace");
        let rank = |kind: &str| KINDS.iter().find(|k| k.kind == kind).map(|k| k.rank);
        assert!(
            rank("DaemonSet") < rank("StatefulSet") && rank("StatefulSet") < rank("Deployment"),
            "the cache, then the store, then the services that call them"
        );
        assert!(
            rank("Service") < rank("StatefulSet"),
            "a StatefulSet's governing Service first"
        );
        let deployment = KINDS.iter().find(|k| k.kind == "Deployment");
        assert_eq!(
            deployment.map(Kind::resource).as_deref(),
            Some("deployments.apps")
        );
        assert_eq!(KINDS[1].resource(), "serviceaccounts");
        let max = KINDS.iter().map(|k| k.rank).max();
        assert_eq!(deployment.map(|k| k.rank), max, "Deployments go last");
    }

    #[test]
    fn claims_are_never_a_kind_colony_applies_or_prunes() {
        // Prune lists exactly the kinds of this table: a claim (the store's data) in it
        // could be deleted by a deploy that no longer declares the store.
        assert!(
            KINDS
                .iter()
                .all(|k| k.kind != "PersistentVolumeClaim" && k.plural != "persistentvolumeclaims")
        );
        for kind in WORKLOADS {
            assert!(KINDS.iter().any(|k| k.kind == *kind), "{kind} is applied");
        }
    }
}
