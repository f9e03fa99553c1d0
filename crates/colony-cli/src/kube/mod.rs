//! `colony deploy k8s` without `-o`: the generated objects applied through the Kubernetes API.
//!
//! Owns: finding the kubeconfig and its context, checking that the API server answers,
//! server-side apply (field manager `colony`, forced: colony owns the fields it declares)
//! in dependency order, server-side dry runs, pruning what the app no longer declares,
//! waiting for the rollouts of the Deployments, the store's StatefulSet and the cache's
//! DaemonSet, and saying what went wrong and what to do next.
//! Must not touch: what the objects are (`deploy` generates them, as JSON; they are applied
//! as they are, as dynamic objects of a fixed kind → resource table).
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

pub(crate) mod manifests;

use std::collections::BTreeSet;
use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

/// The field manager of every server-side apply.
pub(crate) const FIELD_MANAGER: &str = "colony";
/// The label that marks an object as colony's.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label that names the app an object belongs to.
const APP_LABEL: &str = "app.kubernetes.io/name";
/// How often `--wait` looks at the workloads.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// A kind of object `deploy` generates: how to reach it in the API and when to apply it.
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

/// No cluster to talk to: no kubeconfig, or an API server that does not answer. A dry run
/// without `-o` falls back to printing the manifests.
#[derive(Debug)]
pub(crate) struct NoCluster(String);

impl fmt::Display for NoCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoCluster {}

/// A cluster that answered, and who we are on it.
pub(crate) struct Cluster {
    client: kube::Client,
    /// The API server's URL.
    server: String,
    /// The kubeconfig context (or `in-cluster`).
    context: String,
    /// The kubeconfig user of that context, for error messages.
    user: String,
}

/// The kubeconfig files to read: `KUBECONFIG`'s list, else `~/.kube/config`; and how they
/// were found, for the message when there is none.
fn kubeconfig_paths() -> (Vec<PathBuf>, &'static str) {
    if let Some(value) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            return (paths, "from KUBECONFIG");
        }
    }
    let home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from);
    match home {
        Some(home) => (
            vec![home.join(".kube").join("config")],
            "the default, as KUBECONFIG is not set",
        ),
        None => (Vec::new(), "none: neither KUBECONFIG nor HOME is set"),
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every message in an error's chain, once each: the cause of a failed connection is deep.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !out.iter().any(|seen| seen.contains(&text)) {
            out.push(text);
        }
        next = e.source();
    }
    out.join(": ")
}

/// Read the kubeconfig (honouring `KUBECONFIG` and `context`), build a client and check that
/// the API server answers. `None` of a cluster is a [`NoCluster`] error.
pub(crate) async fn connect(context: Option<&str>) -> anyhow::Result<Cluster> {
    let (paths, how) = kubeconfig_paths();
    let existing: Vec<PathBuf> = paths.iter().filter(|p| p.is_file()).cloned().collect();
    let (config, context, user) = if existing.is_empty() {
        if context.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            let config = kube::Config::incluster().context(
                "running in a pod, but could not read its service account to reach the API server",
            )?;
            (
                config,
                "in-cluster".to_owned(),
                "this pod's service account".to_owned(),
            )
        } else {
            return Err(NoCluster(format!(
                "no kubeconfig found: looked for {} ({how}). Point KUBECONFIG at your \
                 cluster's kubeconfig (kind, minikube, `aws eks update-kubeconfig` and `az aks \
                 get-credentials` write ~/.kube/config), or print the manifests without a \
                 cluster: colony deploy k8s PATH --dry-run -o yaml",
                if paths.is_empty() {
                    "nothing".to_owned()
                } else {
                    list(&paths)
                }
            ))
            .into());
        }
    } else {
        let mut merged = Kubeconfig::default();
        for path in &existing {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("could not read the kubeconfig {}", path.display()))?;
            merged = merged
                .merge(file)
                .with_context(|| format!("could not merge the kubeconfig {}", path.display()))?;
        }
        let names: Vec<&str> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
        let Some(name) = context
            .map(str::to_owned)
            .or_else(|| merged.current_context.clone())
        else {
            bail!(
                "the kubeconfig ({}) sets no current-context; pass --context NAME (its contexts: {})",
                list(&existing),
                names.join(", ")
            );
        };
        let Some(ctx) = merged.contexts.iter().find(|c| c.name == name) else {
            bail!(
                "the kubeconfig ({}) has no context `{name}`; its contexts are: {} \
                 (`kubectl config get-contexts` lists them)",
                list(&existing),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            );
        };
        let user = ctx
            .context
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_else(|| "(no user)".to_owned());
        let options = KubeConfigOptions {
            context: Some(name.clone()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(merged, &options)
            .await
            .with_context(|| {
                format!(
                    "could not use context `{name}` of the kubeconfig ({})",
                    list(&existing)
                )
            })?;
        (config, name, user)
    };
    let mut config = config;
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(60));
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let client = kube::Client::try_from(config)
        .with_context(|| format!("could not set up a client for {server} (context `{context}`)"))?;
    let cluster = Cluster {
        client,
        server,
        context,
        user,
    };
    match cluster.client.apiserver_version().await {
        Ok(_) => Ok(cluster),
        Err(kube::Error::Api(status)) if status.code == 401 => bail!(
            "the API server at {} refused the credentials of user `{}` (context `{}`): {}. \
             Refresh them (for EKS `aws eks update-kubeconfig`, for AKS `az aks get-credentials`, \
             or log in again), then retry",
            cluster.server,
            cluster.user,
            cluster.context,
            status.message
        ),
        // Anything else from the server means it is there; the request that matters will say
        // what is wrong.
        Err(kube::Error::Api(_)) => Ok(cluster),
        Err(e) => Err(NoCluster(format!(
            "could not reach the Kubernetes API server at {} (context `{}`): {}. Check that the \
             cluster is running and reachable from here (`kubectl cluster-info --context {}`; \
             a VPN or a stopped kind/minikube cluster are the usual causes), or print the \
             manifests without a cluster: colony deploy k8s PATH --dry-run -o yaml",
            cluster.server,
            cluster.context,
            causes(&e),
            cluster.context
        ))
        .into()),
    }
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

/// One object of this run, for the report.
struct Item<'a> {
    kind: &'static Kind,
    name: String,
    object: &'a Value,
}

impl fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.kind, self.name)
    }
}

/// What the server said no to, turned into what to do about it.
fn explain(
    cluster: &Cluster,
    err: &kube::Error,
    verb: &str,
    kind: &Kind,
    namespace: Option<&str>,
) -> String {
    let resource = kind.resource();
    let scope = namespace.map_or_else(
        || "cluster-wide".to_owned(),
        |ns| format!("in namespace `{ns}`"),
    );
    let ns_flag = namespace.map_or_else(String::new, |ns| format!(" -n {ns}"));
    match err {
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden: user `{}` (context `{}`) may not {verb} {resource} {scope}. The server \
             said: {}. Ask a cluster admin for a Role or ClusterRole that grants {verb} on \
             {resource} {scope} to that user (check with `kubectl auth can-i {verb} {resource}{ns_flag} \
             --context {}`)",
            cluster.user, cluster.context, status.message, cluster.context
        ),
        kube::Error::Api(status) if status.code == 401 => format!(
            "the API server refused the credentials of user `{}` (context `{}`): {}; refresh them \
             and retry",
            cluster.user, cluster.context, status.message
        ),
        kube::Error::Api(status) if status.code == 404 && kind.crd.is_some() => format!(
            "this cluster does not serve {} ({}): {}",
            kind.api_version,
            kind.kind,
            kind.crd.unwrap_or_default()
        ),
        kube::Error::Api(status)
            if status.code == 422
                && kind.kind == "StatefulSet"
                && status.message.contains("updates to statefulset spec") =>
        {
            format!(
                "the API server rejected it as invalid: {}. A StatefulSet's volume claim \
                 template (the store's `size` and `storage_class` in colony.toml) cannot change \
                 in place. To grow the disk, grow its claim (`kubectl{ns_flag} patch pvc \
                 data-NAME-0 -p '{{\"spec\":{{\"resources\":{{\"requests\":{{\"storage\":\"SIZE\"}}}}}}}}'`, \
                 where the StorageClass allows expansion), then let the StatefulSet go without \
                 touching its pod or data (`kubectl{ns_flag} delete statefulset NAME \
                 --cascade=orphan`) and deploy again; see \"Changing the disk\" in docs/deploying.md",
                status.message
            )
        }
        kube::Error::Api(status) if status.code == 422 => {
            format!("the API server rejected it as invalid: {}", status.message)
        }
        kube::Error::Api(status) => format!(
            "the API server answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => format!(
            "lost the API server at {} (context `{}`): {}; check the cluster and retry",
            cluster.server,
            cluster.context,
            causes(other)
        ),
    }
}

fn name_list<'a>(items: impl Iterator<Item = &'a Item<'a>>) -> String {
    let names: Vec<String> = items.map(ToString::to_string).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Apply `objects` (as `deploy` generated them) to `cluster`, then prune and wait as
/// `options` say. Prints one line per object on stdout, progress on stderr.
pub(crate) async fn apply(
    cluster: &Cluster,
    objects: &[Value],
    options: &ApplyOptions,
) -> anyhow::Result<()> {
    let mut items: Vec<Item<'_>> = Vec::new();
    for object in objects {
        let kind = kind_of(object)?;
        let name = object["metadata"]["name"]
            .as_str()
            .context("an object without a name")?
            .to_owned();
        if object["metadata"]["labels"][MANAGED_BY] != FIELD_MANAGER
            || object["metadata"]["labels"][APP_LABEL] != options.app.as_str()
        {
            bail!(
                "{} {name} lacks the labels {MANAGED_BY}={FIELD_MANAGER} and {APP_LABEL}={}, \
                 which --prune relies on",
                kind.kind,
                options.app
            );
        }
        items.push(Item { kind, name, object });
    }
    // Dependency order; the stable sort keeps `deploy`'s order within a kind.
    items.sort_by_key(|i| i.kind.rank);
    let suffix = if options.dry_run {
        " (server dry run)"
    } else {
        ""
    };

    // Kinds added by CRDs: found missing before anything is applied.
    let mut checked: BTreeSet<&str> = BTreeSet::new();
    for item in &items {
        let kind = item.kind;
        let Some(hint) = kind.crd else { continue };
        if !checked.insert(kind.api_version) {
            continue;
        }
        let served = match cluster
            .client
            .list_api_group_resources(kind.api_version)
            .await
        {
            Ok(list) => list.resources.iter().any(|r| r.name == kind.plural),
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(e) => bail!(
                "could not ask {} whether it serves {}: {}. Nothing was applied",
                cluster.server,
                kind.api_version,
                explain(cluster, &e, "get", kind, None)
            ),
        };
        if !served {
            bail!(
                "the cluster at {} (context `{}`) does not serve {} {}: {hint}. Nothing was applied",
                cluster.server,
                cluster.context,
                kind.api_version,
                kind.kind
            );
        }
    }

    // A server-side dry run of an object needs its namespace to exist.
    let mut items_to_apply: Vec<&Item<'_>> = items.iter().collect();
    if options.dry_run {
        let namespaces =
            Api::<DynamicObject>::all_with(cluster.client.clone(), &KINDS[0].api_resource());
        let exists = match namespaces.get_opt(&options.namespace).await {
            Ok(found) => found.is_some(),
            // Not allowed to look: let the namespaced checks find out.
            Err(kube::Error::Api(status)) if status.code == 403 => true,
            Err(e) => bail!(
                "could not look up namespace `{}`: {}",
                options.namespace,
                explain(cluster, &e, "get", &KINDS[0], None)
            ),
        };
        if !exists {
            let unchecked = items.iter().filter(|i| i.kind.namespaced).count();
            eprintln!(
                "namespace `{}` does not exist yet, so the server can check only the Namespace; \
                 the {unchecked} objects inside it are checked when they are applied",
                options.namespace
            );
            items_to_apply.retain(|i| !i.kind.namespaced);
        }
    }

    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if options.dry_run {
        params = params.dry_run();
    }
    for (done, item) in items_to_apply.iter().enumerate() {
        let api = item.kind.api(&cluster.client, &options.namespace);
        let result = api
            .patch(&item.name, &params, &Patch::Apply(item.object))
            .await;
        if let Err(kube::Error::Api(status)) = &result
            && status.code == 403
            && item.kind.kind == "Namespace"
            && namespace_exists(cluster, &item.name).await
        {
            // Users confined to their namespaces (OpenShift projects, shared clusters) may
            // not manage the Namespace object itself; it is there, which is what matters.
            eprintln!(
                "namespace `{}` exists, but user `{}` may not manage it ({}); leaving it as it is",
                item.name, cluster.user, status.message
            );
            continue;
        }
        if let Err(e) = result {
            let namespace = item.kind.namespaced.then_some(options.namespace.as_str());
            let why = explain(cluster, &e, "patch", item.kind, namespace);
            let (applied, rest) = items_to_apply.split_at(done);
            let what = if options.dry_run {
                "checked by the server (dry run; nothing was changed)"
            } else {
                "applied before it (still applied, nothing is rolled back; running the same \
                 command again after fixing the cause applies the rest)"
            };
            bail!(
                "could not apply {item}{suffix} to {} (context `{}`): {why}\n\
                 {what}: {}\n\
                 not applied: {}",
                cluster.server,
                cluster.context,
                name_list(applied.iter().copied()),
                name_list(rest.iter().copied()),
            );
        }
        println!(
            "{}/{} {}{suffix}",
            item.kind.resource(),
            item.name,
            if options.dry_run {
                "accepted"
            } else {
                "applied"
            }
        );
    }

    if options.prune {
        prune(cluster, &items, options).await?;
    }
    if let Some(timeout) = options.wait {
        if options.dry_run {
            eprintln!("--wait: nothing to wait for in a dry run");
        } else {
            let workloads: Vec<(&'static Kind, String)> = items
                .iter()
                .filter(|i| WORKLOADS.contains(&i.kind.kind))
                .map(|i| (i.kind, i.name.clone()))
                .collect();
            wait(cluster, &workloads, options, timeout).await?;
        }
    }
    Ok(())
}

/// Whether the namespace `name` exists, as far as this user may see.
async fn namespace_exists(cluster: &Cluster, name: &str) -> bool {
    let namespaces =
        Api::<DynamicObject>::all_with(cluster.client.clone(), &KINDS[0].api_resource());
    matches!(namespaces.get_opt(name).await, Ok(Some(_)))
}

/// Delete the objects labelled as this app's that `items` does not hold: every namespaced
/// kind colony generates, in the app's namespace. Kinds the cluster does not serve have
/// nothing to prune. Deployments go first, the reverse of the apply order. The claims of a
/// pruned StatefulSet stay (it retains them, and colony never deletes a claim): the data
/// survives until someone deletes it on purpose.
async fn prune(
    cluster: &Cluster,
    items: &[Item<'_>],
    options: &ApplyOptions,
) -> anyhow::Result<()> {
    let declared: BTreeSet<(&str, &str)> = items
        .iter()
        .map(|i| (i.kind.kind, i.name.as_str()))
        .collect();
    let selector = format!("{MANAGED_BY}={FIELD_MANAGER},{APP_LABEL}={}", options.app);
    let mut kinds: Vec<&Kind> = KINDS.iter().filter(|k| k.namespaced).collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.rank));
    let mut params = DeleteParams::background();
    if options.dry_run {
        params = params.dry_run();
    }
    let mut deleted: Vec<String> = Vec::new();
    for kind in kinds {
        let api = kind.api(&cluster.client, &options.namespace);
        let found = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(e) => bail!(
                "could not list the app's {} to prune them: {}\nthe apply finished; pruned so far: {}",
                kind.resource(),
                explain(cluster, &e, "list", kind, Some(&options.namespace)),
                if deleted.is_empty() {
                    "none".to_owned()
                } else {
                    deleted.join(", ")
                }
            ),
        };
        for object in found {
            let Some(name) = object.metadata.name.as_deref() else {
                continue;
            };
            if declared.contains(&(kind.kind, name)) {
                continue;
            }
            match api.delete(name, &params).await {
                Ok(_) => {}
                // Gone already: what pruning wanted.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => bail!(
                    "could not prune {} {name}: {}\nthe apply finished; pruned so far: {}",
                    kind.kind,
                    explain(cluster, &e, "delete", kind, Some(&options.namespace)),
                    if deleted.is_empty() {
                        "none".to_owned()
                    } else {
                        deleted.join(", ")
                    }
                ),
            }
            println!(
                "{}/{name} pruned{}",
                kind.resource(),
                if options.dry_run {
                    " (server dry run)"
                } else {
                    ""
                }
            );
            if kind.kind == "StatefulSet" {
                eprintln!(
                    "the data of StatefulSet {name} stays: its PersistentVolumeClaims (data-{name}-0) \
                     are kept; when it is no longer needed, `kubectl -n {ns} delete pvc data-{name}-0`",
                    ns = options.namespace
                );
            }
            deleted.push(format!("{} {name}", kind.kind));
        }
    }
    Ok(())
}

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
async fn wait(
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
            let pending: Vec<String> = workloads
                .iter()
                .zip(&last)
                .filter(|(_, r)| !r.is_some_and(|r| r.done()))
                .map(|((_, n), r)| match r {
                    Some(r) => format!("{n} ({r})"),
                    None => n.clone(),
                })
                .collect();
            let store_pending = workloads
                .iter()
                .zip(&last)
                .any(|((k, _), r)| k.kind == "StatefulSet" && !r.is_some_and(|r| r.done()));
            bail!(
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
            );
        }
        tokio::time::sleep(WAIT_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
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
    apply(&cluster, objects, options).await
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
