//! `colony deploy k8s`: Kubernetes manifests generated from `APP describe`.
//!
//! Owns: turning services and their settings into Kubernetes objects — a Deployment, a
//! headless and a ClusterIP Service, a HorizontalPodAutoscaler and a PodDisruptionBudget per
//! service (or per service group), the gateway's Deployment, Service and Ingress (or
//! OpenShift Route), and the Namespace, ServiceAccount, NetworkPolicies and CA Secret they
//! share; with `--certs cert-manager`, a cert-manager CA Issuer and one Certificate per
//! Deployment instead of handing the CA key to every pod. State: the store service
//! (`colony::store::serve`) becomes a StatefulSet of one pod with a PersistentVolumeClaim
//! instead of a Deployment and autoscaler, and `[cache]` adds a memcached DaemonSet, its
//! headless Service and a NetworkPolicy, named to every pod in `COLONY_CACHE`. Promises:
//! every name is a valid DNS-1035 label, and two services that would share one are
//! reported, not merged; every object carries `app.kubernetes.io/name` and
//! `app.kubernetes.io/managed-by: colony`, which `--prune` selects on (the store's claims,
//! made by its StatefulSet, do not: they are never colony's to delete). Must not touch: a
//! cluster (`kube::apply` applies the objects).
//!
//! On Kubernetes, Kubernetes does the orchestrator's jobs: scheduling and restarts
//! (Deployments), health (probes on the instance's `/healthz`), autoscaling (the HPA) and
//! discovery (instances resolve each service's headless Service, `COLONY_DISCOVERY=kubernetes`).//!
//! This file owns the options, names (DNS-1035 labels, the standard labels) and the order
//! of the objects; the rooms generate them by kind: `workloads` (Deployments, the pods),
//! `network` (Services, Ingress/Route, NetworkPolicies), `security` (the CA, cert-manager,
//! security contexts), `store` (the store's StatefulSet, the cache's DaemonSet),
//! `autoscaling` (HPAs, PodDisruptionBudgets) and `output` (YAML, JSON).

mod autoscaling;
mod network;
mod output;
mod security;
mod store;
#[cfg(test)]
mod tests;
mod workloads;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use crate::settings::{CacheSettings, STORE_SERVICE, ServiceSettings, StoreSettings};

pub(crate) use self::output::{to_json, to_yaml};
pub(crate) use self::security::cert_lifetime;

/// The port instances accept calls on.
pub(crate) const CALL_PORT: u16 = 7700;
/// The port of an instance's metrics and health endpoints.
pub(crate) const METRICS_PORT: u16 = 9090;
/// The gateway's HTTP port.
pub(crate) const HTTP_PORT: u16 = 8080;

/// Where the app is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Platform {
    /// Plain Kubernetes: an Ingress in front of the gateway.
    Kubernetes,
    /// OpenShift: a Route in front of the gateway.
    Openshift,
}

/// Who gives each pod its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Certs {
    /// The cluster CA (certificate and key) as a Secret mounted in every pod; each instance
    /// issues and renews its own certificate with it.
    Secret,
    /// cert-manager issues one certificate per Deployment from a CA Issuer and renews it;
    /// pods get only their own certificate and key, never the CA key.
    CertManager,
}

/// What to generate.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) app: String,
    pub(crate) namespace: String,
    pub(crate) image: String,
    pub(crate) platform: Platform,
    pub(crate) load_balancer: bool,
    /// The cluster CA as (cert PEM, key PEM), shipped as a Secret; `None` for plaintext.
    pub(crate) ca: Option<(String, String)>,
    /// Who issues the pods' certificates (with `ca` set).
    pub(crate) certs: Certs,
    /// Lifetime and renewal margin of the certificates cert-manager issues.
    pub(crate) cert_lifetime: (Duration, Duration),
    /// The store's disk, used when the app hosts the store service (`[store]`).
    pub(crate) store: StoreSettings,
    /// The memcached cache tier, when `[cache]` turns it on.
    pub(crate) cache: Option<CacheSettings>,
}

/// One Deployment: a service, or a group of services in one pod.
struct Unit {
    /// DNS-1035 name.
    name: String,
    services: Vec<String>,
    settings: ServiceSettings,
}

impl Unit {
    /// Whether this is the store service, which runs as a StatefulSet of one pod with a
    /// disk instead of an autoscaled Deployment. Groups never hold it (`manifests` refuses).
    fn is_store(&self) -> bool {
        self.services.iter().any(|s| s == STORE_SERVICE)
    }

    /// Whether this is the store service keeping its values on a disk of its own (the
    /// StatefulSet), rather than in a PostgreSQL database (`[store] database_secret`),
    /// where it is an autoscaled Deployment like any service.
    fn is_store_on_disk(&self, opts: &Options) -> bool {
        self.is_store() && opts.store.database_secret.is_none()
    }
}

/// A DNS-1035 label for `name`: lower case letters, digits and `-`, starting with a letter,
/// at most 63 characters (long names keep a hash of the whole to stay unique).
pub(crate) fn dns_label(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_matches('-').to_owned();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "s-");
    }
    if out.len() > 63 {
        let hash = format!("{:08x}", fnv(name) as u32);
        out.truncate(63 - 9);
        let trimmed = out.trim_end_matches('-').to_owned();
        out = format!("{trimmed}-{hash}");
    }
    out
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn labels(opts: &Options, component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": opts.app,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "colony",
    })
}

fn meta(opts: &Options, name: &str, component: &str) -> Value {
    json!({ "name": name, "namespace": opts.namespace, "labels": labels(opts, component) })
}

/// Generate every object of the app. `groups` maps a group name to its services.
pub(crate) fn manifests(
    describe: &Value,
    settings: &BTreeMap<String, ServiceSettings>,
    groups: &BTreeMap<String, Vec<String>>,
    opts: &Options,
) -> anyhow::Result<Vec<Value>> {
    let services: Vec<&Value> = describe["services"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let names: Vec<String> = services
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    let units = units(&names, settings, groups)?;
    check_names(&units, opts)?;

    // Every instance reaches every service through its headless Service.
    let peers: Vec<String> = units
        .iter()
        .flat_map(|u| {
            u.services.iter().map(move |s| {
                format!(
                    "{s}={}-headless.{}.svc.cluster.local:{CALL_PORT}",
                    u.name, opts.namespace
                )
            })
        })
        .collect();
    let peers = peers.join(",");

    security::check_cert_manager(opts)?;
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": opts.namespace, "labels": labels(opts, "namespace")}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(opts, &opts.app_label(), "instance"), "automountServiceAccountToken": false}),
    ];
    out.extend(security::ca_objects(opts, &units));
    for unit in &units {
        out.extend(workloads::unit_objects(unit, opts, &peers));
    }
    out.extend(workloads::gateway_objects(&services, opts, &peers));
    if let Some(cache) = &opts.cache {
        out.extend(store::cache_objects(cache, opts));
    }
    out.extend(network::network_policies(opts));
    Ok(out)
}

/// The units to deploy: each group (with its first member's settings), then each service
/// not in a group. `names` are the app's services, for error messages.
fn units(
    names: &[String],
    settings: &BTreeMap<String, ServiceSettings>,
    groups: &BTreeMap<String, Vec<String>>,
) -> anyhow::Result<Vec<Unit>> {
    let mut units: Vec<Unit> = Vec::new();
    let mut grouped: BTreeMap<&str, &str> = BTreeMap::new();
    for (group, members) in groups {
        let mut first: Option<ServiceSettings> = None;
        for m in members {
            let Some(s) = settings.get(m) else {
                bail!(
                    "service group `{group}` names `{m}`, which is not a service of this app; its services are: {}",
                    names.join(", ")
                );
            };
            if let Some(other) = grouped.insert(m, group) {
                bail!("service `{m}` is in two groups, `{other}` and `{group}`; put it in one");
            }
            if m == STORE_SERVICE {
                bail!(
                    "service group `{group}` holds `{STORE_SERVICE}`, the app's store, which must \
                     run alone: it is a StatefulSet of exactly one pod with its own disk, and the \
                     services grouped with it could never run more than one instance. Remove it \
                     from [groups] in colony.toml; it gets a pod of its own"
                );
            }
            first.get_or_insert_with(|| s.clone());
        }
        let Some(settings) = first else {
            bail!("service group `{group}` is empty");
        };
        units.push(Unit {
            name: dns_label(group),
            services: members.clone(),
            settings,
        });
    }
    for name in names {
        if grouped.contains_key(name.as_str()) {
            continue;
        }
        let Some(s) = settings.get(name) else {
            continue;
        };
        units.push(Unit {
            name: dns_label(name),
            services: vec![name.clone()],
            settings: s.clone(),
        });
    }
    Ok(units)
}

/// Every unit gets a Kubernetes name of its own, clashing with neither the gateway nor the
/// cache tier, and the store on a disk runs exactly one instance.
fn check_names(units: &[Unit], opts: &Options) -> anyhow::Result<()> {
    let cache_name = opts.cache_name();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for u in units {
        let who = u.services.join(",");
        if u.is_store_on_disk(opts) {
            store::check_single_writer(&u.settings)?;
        }
        if opts.cache.is_some()
            && [u.name.clone(), format!("{}-headless", u.name)].contains(&cache_name)
        {
            bail!(
                "`{who}` would be named `{}`, whose Services clash with the cache tier's \
                 Service `{cache_name}`; rename it or put it in a service group",
                u.name
            );
        }
        if u.name == "gateway" {
            bail!(
                "`{who}` would be named `gateway`, which the gateway uses; rename it or put it in a group"
            );
        }
        if let Some(other) = seen.insert(u.name.clone(), who.clone()) {
            bail!(
                "`{other}` and `{who}` both become the Kubernetes name `{}`; rename one, or put them in a \
                 service group in colony.toml",
                u.name
            );
        }
    }
    Ok(())
}

impl Options {
    fn app_label(&self) -> String {
        dns_label(&self.app)
    }

    /// The name of the cache tier's DaemonSet and headless Service.
    fn cache_name(&self) -> String {
        format!("{}-cache", self.app_label())
    }

    fn cert_manager(&self) -> bool {
        self.ca.is_some() && self.certs == Certs::CertManager
    }
}
