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
//! cluster (`kube_apply` applies the objects).
//!
//! On Kubernetes, Kubernetes does the orchestrator's jobs: scheduling and restarts
//! (Deployments), health (probes on the instance's `/healthz`), autoscaling (the HPA) and
//! discovery (instances resolve each service's headless Service, `COLONY_DISCOVERY=kubernetes`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::settings::{CacheSettings, STORE_SERVICE, ServiceSettings, StoreSettings};

/// The port instances accept calls on.
pub(crate) const CALL_PORT: u16 = 7700;
/// The port of an instance's metrics and health endpoints.
pub(crate) const METRICS_PORT: u16 = 9090;
/// The gateway's HTTP port.
pub(crate) const HTTP_PORT: u16 = 8080;
/// Where the store's PersistentVolumeClaim is mounted in its pod.
const STORE_DIR: &str = "/var/lib/colony";
/// The store's file on that volume (`COLONY_STORE_PATH`).
const STORE_FILE: &str = "/var/lib/colony/store.redb";
/// The user and group the official memcached image runs as (`memcache`).
const MEMCACHED_UID: u32 = 11211;

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

/// Where pods read their certificate when cert-manager issues it.
const TLS_DIR: &str = "/etc/colony/tls";
/// The shortest certificate lifetime and renewal margin cert-manager accepts.
const CERT_MANAGER_MIN_DURATION: Duration = Duration::from_secs(3600);
const CERT_MANAGER_MIN_RENEW_BEFORE: Duration = Duration::from_secs(300);

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

/// The certificate lifetime and renewal margin, as the instances read them:
/// `COLONY_CERT_LIFETIME` / `COLONY_CERT_RENEW_BEFORE`, else `cert_lifetime` /
/// `cert_renew_before` in `colony.toml` in `dir`, else 24h and 8h; a lifetime alone renews at
/// a third of it.
pub(crate) fn cert_lifetime(
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(Duration, Duration)> {
    let path = dir.join("colony.toml");
    let file: toml::Table = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
    };
    let read = |var: &str, key: &str| -> anyhow::Result<Option<Duration>> {
        let (value, source) = match (env(var).filter(|v| !v.is_empty()), file.get(key)) {
            (Some(v), _) => (v, var.to_owned()),
            (None, Some(toml::Value::String(v))) => {
                (v.clone(), format!("`{key}` in {}", path.display()))
            }
            (None, Some(other)) => bail!(
                "`{key}` in {} is a {}; write a duration like \"24h\"",
                path.display(),
                other.type_str()
            ),
            (None, None) => return Ok(None),
        };
        crate::logs::parse_since(&value)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{source}: {e}"))
    };
    let lifetime = read("COLONY_CERT_LIFETIME", "cert_lifetime")?;
    let renew = read("COLONY_CERT_RENEW_BEFORE", "cert_renew_before")?;
    let default = colony::security::CertLifetime::default();
    let (lifetime, renew) = match (lifetime, renew) {
        (None, None) => (default.lifetime(), default.renew_before()),
        (Some(l), None) => (l, l / 3),
        (l, Some(r)) => (l.unwrap_or(default.lifetime()), r),
    };
    colony::security::CertLifetime::new(lifetime, renew)?;
    Ok((lifetime, renew))
}

/// A duration as Go's `time.ParseDuration` reads it: `24h`, `90m`, `45s`.
fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
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

    // Units: each group, then each service not in a group.
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
    for name in &names {
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
    let cache_name = opts.cache_name();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for u in &units {
        let who = u.services.join(",");
        if u.is_store_on_disk(opts) {
            check_single_writer(&u.settings)?;
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

    let cert_manager = opts.ca.is_some() && opts.certs == Certs::CertManager;
    if opts.certs == Certs::CertManager && opts.ca.is_none() {
        bail!(
            "--certs cert-manager issues certificates for mutual TLS, which is off (COLONY_TLS or \
             `security` in colony.toml); turn TLS on, or leave out --certs"
        );
    }
    if cert_manager {
        let (lifetime, renew) = opts.cert_lifetime;
        if lifetime < CERT_MANAGER_MIN_DURATION || renew < CERT_MANAGER_MIN_RENEW_BEFORE {
            bail!(
                "cert-manager issues certificates for at least 1h and renews them at least 5m \
                 before expiry, but the certificate lifetime is {} with renewal {} before expiry \
                 (cert_lifetime / cert_renew_before in colony.toml, or COLONY_CERT_LIFETIME / \
                 COLONY_CERT_RENEW_BEFORE); set for example cert_lifetime = \"24h\", \
                 cert_renew_before = \"8h\"",
                go_duration(lifetime),
                go_duration(renew)
            );
        }
    }

    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": opts.namespace, "labels": labels(opts, "namespace")}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(opts, &opts.app_label(), "instance"), "automountServiceAccountToken": false}),
    ];
    match &opts.ca {
        Some((cert, key)) if cert_manager => {
            // The CA issuer reads a TLS Secret (`tls.crt`, `tls.key`); only cert-manager
            // mounts it.
            let ca = format!("{}-ca", opts.app_label());
            out.push(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta(opts, &ca, "ca"),
                "type": "kubernetes.io/tls",
                "stringData": { "tls.crt": cert, "tls.key": key },
            }));
            out.push(json!({
                "apiVersion": "cert-manager.io/v1",
                "kind": "Issuer",
                "metadata": meta(opts, &ca, "ca"),
                "spec": {"ca": {"secretName": ca}},
            }));
            for unit in &units {
                out.push(certificate(opts, &unit.name, "instance", &unit.services));
            }
            out.push(certificate(
                opts,
                "gateway",
                "gateway",
                &[colony::security::ROLE_GATEWAY.to_owned()],
            ));
        }
        Some((cert, key)) => out.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(opts, &format!("{}-ca", opts.app_label()), "ca"),
            "type": "Opaque",
            "stringData": { "ca.pem": cert, "ca.key": key },
        })),
        None => {}
    }
    for unit in &units {
        out.extend(unit_objects(unit, opts, &peers));
    }
    out.extend(gateway_objects(&services, opts, &peers));
    if let Some(cache) = &opts.cache {
        out.extend(cache_objects(cache, opts));
    }
    out.extend(network_policies(opts));
    Ok(out)
}

/// The store has one writer: on Kubernetes it runs exactly one instance, whatever
/// `colony.toml` or the environment say.
fn check_single_writer(s: &ServiceSettings) -> anyhow::Result<()> {
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

/// The cert-manager Certificate of one Deployment (`name`): one URI SAN per service it
/// hosts (or role it plays), as `colony::security::spiffe_id` writes them, in the Secret
/// `NAME-tls` that its pods mount.
fn certificate(opts: &Options, name: &str, component: &str, identities: &[String]) -> Value {
    let (lifetime, renew) = opts.cert_lifetime;
    let uris: Vec<String> = identities
        .iter()
        .map(|n| colony::security::spiffe_id(&opts.app, n))
        .collect();
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": meta(opts, name, component),
        "spec": {
            "secretName": format!("{name}-tls"),
            "issuerRef": {"group": "cert-manager.io", "kind": "Issuer", "name": format!("{}-ca", opts.app_label())},
            "duration": go_duration(lifetime),
            "renewBefore": go_duration(renew),
            "uris": uris,
            "privateKey": {"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always"},
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
        },
    })
}

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
            env.push(json!({"name": "COLONY_CACHE_TTL", "value": ttl.to_string()}));
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

/// The volume and mount of a pod's TLS material: its own certificate (cert-manager; the
/// Secret `CERT-tls`, mounted whole so that renewals reach the pod), or the cluster CA.
fn tls_volume(opts: &Options, cert: &str) -> (Vec<Value>, Vec<Value>) {
    match &opts.ca {
        Some(_) if opts.cert_manager() => (
            vec![
                json!({"name": "tls", "secret": {"secretName": format!("{cert}-tls"), "defaultMode": 0o400}}),
            ],
            vec![json!({"name": "tls", "mountPath": TLS_DIR, "readOnly": true})],
        ),
        Some(_) => (
            vec![
                json!({"name": "ca", "secret": {"secretName": format!("{}-ca", opts.app_label()), "defaultMode": 0o400}}),
            ],
            vec![json!({"name": "ca", "mountPath": "/etc/colony/ca", "readOnly": true})],
        ),
        None => (Vec::new(), Vec::new()),
    }
}

fn pod_security(opts: &Options) -> Value {
    match opts.platform {
        Platform::Kubernetes => {
            json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532})
        }
        // OpenShift's default `restricted-v2` SCC picks the user and fsGroup from the
        // project's range and refuses pods that name others.
        Platform::Openshift => json!({"runAsNonRoot": true}),
    }
}

fn container_security() -> Value {
    json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}})
}

fn unit_objects(unit: &Unit, opts: &Options, peers: &str) -> Vec<Value> {
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
    let mut template_labels = selector.clone();
    template_labels["colony.dev/services"] = json!(
        dns_label(&unit.services.join("-"))
            .chars()
            .take(63)
            .collect::<String>()
    );
    let headless = format!("{}-headless", unit.name);
    let template = json!({"metadata": {"labels": template_labels}, "spec": pod_spec});
    let mut out = vec![
        if unit.is_store_on_disk(opts) {
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
        },
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(opts, &headless, component),
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
    ];
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

/// The store service's StatefulSet: exactly one pod (`NAME-0`), named through its headless
/// Service, with the claim `data-NAME-0` made from the `data` template and kept when the
/// StatefulSet is deleted or scaled down.
fn store_stateful_set(
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
fn cache_objects(cache: &CacheSettings, opts: &Options) -> Vec<Value> {
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

fn gateway_objects(services: &[&Value], opts: &Options, peers: &str) -> Vec<Value> {
    let exposed = services.iter().any(|s| s["exposed"] == true);
    let component = "gateway";
    let selector = labels(opts, component);
    let (volumes, mounts) = tls_volume(opts, "gateway");
    let mut out = vec![
        json!({
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
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(opts, "gateway", component),
            "spec": {
                "type": if opts.load_balancer { "LoadBalancer" } else { "ClusterIP" },
                "selector": selector,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        }),
    ];
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

fn network_policies(opts: &Options) -> Vec<Value> {
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

/// Objects as YAML documents, `---`-separated.
pub(crate) fn to_yaml(objects: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(o)?);
    }
    Ok(out)
}

/// Objects as one JSON `v1/List`.
pub(crate) fn to_json(objects: &[Value]) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(
        &json!({"apiVersion": "v1", "kind": "List", "items": objects}),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_go_reads_them() {
        assert_eq!(go_duration(Duration::from_secs(24 * 3600)), "24h");
        assert_eq!(go_duration(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(go_duration(Duration::from_secs(3601)), "3601s");
    }

    #[test]
    fn certificate_lifetimes_follow_the_instances_rules() {
        let dir = std::env::temp_dir().join(format!("colony-lifetime-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let none = |_: &str| None;
        let _ = std::fs::remove_file(dir.join("colony.toml"));
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(
            cert_lifetime(&dir, &none).expect("defaults"),
            (day, Duration::from_secs(8 * 3600))
        );
        std::fs::write(dir.join("colony.toml"), "cert_lifetime = \"6h\"\n").expect("write");
        assert_eq!(
            cert_lifetime(&dir, &none).expect("file"),
            (Duration::from_secs(6 * 3600), Duration::from_secs(2 * 3600))
        );
        let env = |k: &str| (k == "COLONY_CERT_RENEW_BEFORE").then(|| "1h".to_owned());
        assert_eq!(
            cert_lifetime(&dir, &env).expect("env wins"),
            (Duration::from_secs(6 * 3600), Duration::from_secs(3600))
        );
        let env = |k: &str| (k == "COLONY_CERT_RENEW_BEFORE").then(|| "7h".to_owned());
        assert!(cert_lifetime(&dir, &env).is_err(), "margin past lifetime");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_label("shop::pricing::quote"), "shop-pricing-quote");
        assert_eq!(dns_label("a::b_c"), "a-b-c");
        assert_eq!(dns_label("9lives::x"), "s-9lives-x");
        let long = "a".repeat(100);
        let l = dns_label(&long);
        assert!(l.len() <= 63 && l.starts_with('a'));
        assert_ne!(dns_label(&format!("{long}x")), l);
    }

    /// An app with one service and the store, and its settings as `colony.toml`-less
    /// resolution gives them (`env` overrides).
    fn app_with_store(
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Value, BTreeMap<String, ServiceSettings>) {
        let describe = json!({"app": "shop", "services": [
            {"name": "shop::cart::add", "exposed": true, "options": {}},
            {"name": STORE_SERVICE, "exposed": false, "options": {"min_instances": 1, "max_instances": 1}},
        ]});
        let dir = std::env::temp_dir().join(format!("colony-deploy-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (_, settings) = crate::settings::resolve(&describe, &dir, env).expect("settings");
        let _ = std::fs::remove_dir_all(&dir);
        (describe, settings)
    }

    fn options(cache: Option<CacheSettings>) -> Options {
        Options {
            app: "shop".to_owned(),
            namespace: "shop-ns".to_owned(),
            image: "shop:test".to_owned(),
            platform: Platform::Kubernetes,
            load_balancer: false,
            ca: None,
            certs: Certs::Secret,
            cert_lifetime: (
                Duration::from_secs(24 * 3600),
                Duration::from_secs(8 * 3600),
            ),
            store: StoreSettings {
                size: "5Gi".to_owned(),
                storage_class: Some("fast-ssd".to_owned()),
                database_secret: None,
            },
            cache,
        }
    }

    fn cache() -> CacheSettings {
        CacheSettings {
            image: "memcached:1.6-alpine".to_owned(),
            memory_mb: 64,
            port: 11211,
            max_connections: 1024,
            ttl_secs: Some(30),
        }
    }

    fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_store_runs_as_one_stateful_pod_with_its_disk() {
        let (describe, settings) = app_with_store(&no_env);
        let objects =
            manifests(&describe, &settings, &BTreeMap::new(), &options(None)).expect("manifests");
        let name = "colony-store-serve";
        assert!(
            find(&objects, "Deployment", name).is_none(),
            "no Deployment for the store"
        );
        assert!(
            find(&objects, "HorizontalPodAutoscaler", name).is_none(),
            "fixed at one writer: no autoscaler"
        );
        let sts = find(&objects, "StatefulSet", name).expect("a StatefulSet");
        let spec = &sts["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["serviceName"], "colony-store-serve-headless");
        assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
            "Retain"
        );
        let claim = &spec["volumeClaimTemplates"][0];
        assert_eq!(claim["metadata"]["name"], "data");
        assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "5Gi");
        assert_eq!(claim["spec"]["storageClassName"], "fast-ssd");
        assert!(
            claim["metadata"]["labels"]
                .get("app.kubernetes.io/managed-by")
                .is_none(),
            "claims are not colony's to prune"
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["fsGroup"], 65532,
            "the non-root user writes the disk"
        );
        let container = &pod["containers"][0];
        assert_eq!(container["args"][2], STORE_SERVICE);
        assert!(
            container["volumeMounts"]
                .as_array()
                .expect("mounts")
                .contains(&json!({"name": "data", "mountPath": "/var/lib/colony"}))
        );
        assert!(container["env"].as_array().expect("env").contains(
            &json!({"name": "COLONY_STORE_PATH", "value": "/var/lib/colony/store.redb"})
        ));
        assert!(container["readinessProbe"].is_object() && container["livenessProbe"].is_object());
        assert!(
            !objects
                .iter()
                .any(|o| o.to_string().contains("COLONY_CACHE")),
            "the cache is off"
        );
        // Its Services and budget are those of any service.
        for kind in ["Service", "PodDisruptionBudget"] {
            assert!(find(&objects, kind, name).is_some(), "{kind}");
        }
        assert!(find(&objects, "Service", "colony-store-serve-headless").is_some());
        let pdb = find(&objects, "PodDisruptionBudget", name).expect("a budget");
        assert_eq!(
            pdb["spec"]["maxUnavailable"], 1,
            "a drain may move the store"
        );
        // Everyone else finds it through the headless Service.
        let peers = container["env"].to_string();
        assert!(
            peers.contains(
                "colony::store::serve=colony-store-serve-headless.shop-ns.svc.cluster.local:7700"
            ),
            "{peers}"
        );
        // The other service is unchanged: a Deployment with its autoscaler.
        assert!(find(&objects, "Deployment", "shop-cart-add").is_some());
        assert!(find(&objects, "HorizontalPodAutoscaler", "shop-cart-add").is_some());

        // No class: the cluster's default StorageClass takes the claim.
        let mut opts = options(None);
        opts.store.storage_class = None;
        let objects = manifests(&describe, &settings, &BTreeMap::new(), &opts).expect("manifests");
        let sts = find(&objects, "StatefulSet", name).expect("a StatefulSet");
        assert!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]
                .get("storageClassName")
                .is_none()
        );
    }

    #[test]
    fn the_store_runs_alone_and_once() {
        let (describe, settings) = app_with_store(&no_env);
        let groups = BTreeMap::from([(
            "together".to_owned(),
            vec!["shop::cart::add".to_owned(), STORE_SERVICE.to_owned()],
        )]);
        let err = manifests(&describe, &settings, &groups, &options(None))
            .expect_err("the store in a group")
            .to_string();
        assert!(
            err.contains("must run alone") && err.contains("[groups]"),
            "{err}"
        );

        let env =
            |k: &str| (k == "COLONY_COLONY_STORE_SERVE__MAX_INSTANCES").then(|| "3".to_owned());
        let (describe, settings) = app_with_store(&env);
        let err = manifests(&describe, &settings, &BTreeMap::new(), &options(None))
            .expect_err("three writers")
            .to_string();
        assert!(
            err.contains("exactly one instance")
                && err.contains("max_instances is 3 (from the environment)")
                && err.contains("COLONY_COLONY_STORE_SERVE__MAX_INSTANCES"),
            "{err}"
        );
    }

    #[test]
    fn a_store_on_postgres_is_an_autoscaled_deployment_told_its_database_by_a_secret() {
        let env =
            |k: &str| (k == "COLONY_COLONY_STORE_SERVE__MAX_INSTANCES").then(|| "4".to_owned());
        let (describe, settings) = app_with_store(&env);
        let mut opts = options(None);
        opts.store = StoreSettings {
            database_secret: Some("shop-db".to_owned()),
            ..StoreSettings::default()
        };
        let objects = manifests(&describe, &settings, &BTreeMap::new(), &opts)
            .expect("four instances on a database are fine");
        let name = "colony-store-serve";
        assert!(find(&objects, "StatefulSet", name).is_none(), "no disk");
        let deployment = find(&objects, "Deployment", name).expect("a Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let env = container["env"].as_array().expect("env");
        let url = env
            .iter()
            .find(|e| e["name"] == "COLONY_STORE_URL")
            .expect("the database's URL");
        assert_eq!(
            url["valueFrom"]["secretKeyRef"],
            json!({"name": "shop-db", "key": "url"})
        );
        assert!(env.iter().all(|e| e["name"] != "COLONY_STORE_PATH"));
        assert!(
            container["volumeMounts"]
                .as_array()
                .is_none_or(|m| m.iter().all(|m| m["name"] != "data"))
        );
        let hpa = find(&objects, "HorizontalPodAutoscaler", name).expect("an autoscaler");
        assert_eq!(hpa["spec"]["maxReplicas"], 4);
    }

    #[test]
    fn the_cache_is_a_daemon_set_that_every_pod_is_told_about() {
        let (describe, settings) = app_with_store(&no_env);
        let objects = manifests(
            &describe,
            &settings,
            &BTreeMap::new(),
            &options(Some(cache())),
        )
        .expect("manifests");
        let ds = find(&objects, "DaemonSet", "shop-cache").expect("a DaemonSet");
        let container = &ds["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "memcached:1.6-alpine");
        assert_eq!(
            container["args"],
            json!(["-m", "64", "-p", "11211", "-U", "0", "-c", "1024"])
        );
        assert_eq!(
            container["readinessProbe"]["tcpSocket"]["port"],
            "memcached"
        );
        assert_eq!(container["resources"]["limits"]["memory"], "120Mi");
        assert_eq!(
            ds["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
        let svc = find(&objects, "Service", "shop-cache").expect("its Service");
        assert_eq!(
            svc["spec"]["clusterIP"], "None",
            "headless: one address per node"
        );
        let policy = find(&objects, "NetworkPolicy", "shop-cache").expect("its NetworkPolicy");
        assert_eq!(
            policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
            json!({"app.kubernetes.io/name": "shop"}),
            "only the app's own pods"
        );
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "cache"
        );
        // Every Colony pod: the services, the store and the gateway.
        let pods: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
            .collect();
        assert_eq!(pods.len(), 3, "a service, the store, the gateway");
        for o in pods {
            let env = o["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .expect("env");
            assert!(
                env.contains(&json!({"name": "COLONY_CACHE", "value": "shop-cache.shop-ns.svc.cluster.local:11211"}))
                    && env.contains(&json!({"name": "COLONY_CACHE_TTL", "value": "30"})),
                "{}: {env:?}",
                o["metadata"]["name"]
            );
        }

        // A service whose name would be the cache's.
        let describe = json!({"app": "shop", "services": [{"name": "shop::cache", "options": {}}]});
        let dir = std::env::temp_dir().join(format!("colony-deploy-clash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (_, settings) = crate::settings::resolve(&describe, &dir, &no_env).expect("settings");
        let _ = std::fs::remove_dir_all(&dir);
        let err = manifests(
            &describe,
            &settings,
            &BTreeMap::new(),
            &options(Some(cache())),
        )
        .expect_err("a clash")
        .to_string();
        assert!(err.contains("clash with the cache tier"), "{err}");
        assert!(
            manifests(&describe, &settings, &BTreeMap::new(), &options(None)).is_ok(),
            "no cache, no clash"
        );
    }
}
