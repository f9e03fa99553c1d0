//! `--prune`: deleting the app's objects that it no longer declares.
//!
//! Owns: finding them (by the labels `app.kubernetes.io/managed-by=colony` and
//! `app.kubernetes.io/name=APP`, kind by kind, in the app's namespace) and deleting them,
//! workloads first. Promises: a PersistentVolumeClaim is never a kind colony lists or
//! deletes, so the store's data outlives its StatefulSet. Must not touch: objects of other
//! apps, or outside the app's namespace.

use std::collections::BTreeSet;

use anyhow::bail;
use kube::api::{DeleteParams, ListParams};

use super::apply::Item;
use super::connect::{Cluster, explain};
use super::{APP_LABEL, ApplyOptions, FIELD_MANAGER, KINDS, Kind, MANAGED_BY};

/// Delete the objects labelled as this app's that `items` does not hold: every namespaced
/// kind colony generates, in the app's namespace. Kinds the cluster does not serve have
/// nothing to prune. Deployments go first, the reverse of the apply order. The claims of a
/// pruned StatefulSet stay (it retains them, and colony never deletes a claim): the data
/// survives until someone deletes it on purpose.
pub(super) async fn prune(
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
