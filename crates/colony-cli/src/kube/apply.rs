//! Server-side apply of the generated objects, in dependency order.
//!
//! Owns: checking that every object is labelled for `--prune`, the order (by kind, stable
//! within a kind), finding kinds the cluster does not serve before anything is applied,
//! server-side dry runs (and a namespace that does not exist yet), and the report of what
//! was and was not applied when an object fails. Promises: nothing is rolled back, and
//! nothing is half-applied silently. Must not touch: what the objects are.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{Context, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::connect::{Cluster, explain};
use super::prune::prune;
use super::rollout::wait;
use super::{APP_LABEL, ApplyOptions, FIELD_MANAGER, KINDS, Kind, MANAGED_BY, WORKLOADS, kind_of};

/// One object of this run, for the report.
pub(super) struct Item<'a> {
    pub(super) kind: &'static Kind,
    pub(super) name: String,
    object: &'a Value,
}

impl fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.kind, self.name)
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

/// Apply `objects` (as `manifests` generated them) to `cluster`, then prune and wait as
/// `options` say. Prints one line per object on stdout, progress on stderr.
pub(crate) async fn apply(
    cluster: &Cluster,
    objects: &[Value],
    options: &ApplyOptions,
) -> anyhow::Result<()> {
    let items = items_of(objects, options)?;
    let suffix = if options.dry_run {
        " (server dry run)"
    } else {
        ""
    };

    check_served(cluster, &items).await?;
    let items_to_apply = checkable(cluster, &items, options).await?;

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

/// The objects with their kinds and names, in dependency order; each must carry the
/// labels `--prune` selects on.
fn items_of<'a>(objects: &'a [Value], options: &ApplyOptions) -> anyhow::Result<Vec<Item<'a>>> {
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
    // Dependency order; the stable sort keeps `manifests`' order within a kind.
    items.sort_by_key(|i| i.kind.rank);
    Ok(items)
}

/// Kinds added by CRDs: found missing before anything is applied.
async fn check_served(cluster: &Cluster, items: &[Item<'_>]) -> anyhow::Result<()> {
    let mut checked: BTreeSet<&str> = BTreeSet::new();
    for item in items {
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

    Ok(())
}

/// The items a server-side dry run can check: all, unless their namespace does not exist
/// yet (a dry run of an object needs its namespace), then only the cluster-wide ones.
async fn checkable<'i, 'a>(
    cluster: &Cluster,
    items: &'i [Item<'a>],
    options: &ApplyOptions,
) -> anyhow::Result<Vec<&'i Item<'a>>> {
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

    Ok(items_to_apply)
}

/// Whether the namespace `name` exists, as far as this user may see.
async fn namespace_exists(cluster: &Cluster, name: &str) -> bool {
    let namespaces =
        Api::<DynamicObject>::all_with(cluster.client.clone(), &KINDS[0].api_resource());
    matches!(namespaces.get_opt(name).await, Ok(Some(_)))
}
