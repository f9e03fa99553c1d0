//! Reaching a cluster: the kubeconfig (`KUBECONFIG` or `~/.kube/config`, merged; a chosen
//! or the current context; in a pod, its service account), a client, and a first request
//! that tells an absent or unreachable server from refused credentials; and explaining
//! what the server refused, in terms of this user and context.
//!
//! Owns: `Cluster` (the client and who we are on it) and the messages that say what was
//! tried and what to do. Must not touch: the objects (what is applied, in which order).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::Kind;

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
    pub(super) client: kube::Client,
    /// The API server's URL.
    pub(super) server: String,
    /// The kubeconfig context (or `in-cluster`).
    pub(super) context: String,
    /// The kubeconfig user of that context, for error messages.
    pub(super) user: String,
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
pub(super) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
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
        from_kubeconfig(&existing, context).await?
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

/// What the server said no to, turned into what to do about it.
pub(super) fn explain(
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

/// The config of `context` (else the current context) in the merged kubeconfig files
/// `existing`, with the context's name and user.
async fn from_kubeconfig(
    existing: &[PathBuf],
    context: Option<&str>,
) -> anyhow::Result<(kube::Config, String, String)> {
    let mut merged = Kubeconfig::default();
    for path in existing {
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
            list(existing),
            names.join(", ")
        );
    };
    let Some(ctx) = merged.contexts.iter().find(|c| c.name == name) else {
        bail!(
            "the kubeconfig ({}) has no context `{name}`; its contexts are: {} \
             (`kubectl config get-contexts` lists them)",
            list(existing),
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
                list(existing)
            )
        })?;
    Ok((config, name, user))
}
