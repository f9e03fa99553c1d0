//! `colony deploy k8s`: the app's Kubernetes objects, printed or applied.
//!
//! Owns: gathering what the manifests need (the app's description and settings, its
//! groups and storage, the cluster CA, the certificate lifetime) into `manifests::Options`,
//! then printing the objects (`-o`) or handing them to `kube::run`. Must not touch: what
//! the objects are (`kube::manifests`) or how they are applied (`kube`).

use anyhow::Context;

use super::{app_name, describe_app, state_dir};
use crate::kube::{self, manifests};
use crate::{DeployTarget, OutputFormat, settings};

pub(crate) async fn run(target: DeployTarget) -> anyhow::Result<()> {
    let DeployTarget::K8s {
        app,
        namespace,
        context,
        image,
        dry_run,
        output,
        certs,
        platform,
        load_balancer,
        prune,
        wait,
        timeout,
    } = target;
    let (binary, path, describe) = describe_app(&app)?;
    let (cluster, settings) = settings::resolve(&describe, &path, &|k| std::env::var(k).ok())?;
    let groups = settings::groups(&path)?;
    let storage = settings::storage(&describe, &path)?;
    let name = app_name(&describe, &binary);
    let ca = if cluster.tls.value {
        let dir = state_dir(&path);
        if !colony::control::security::Ca::exists_in(&dir) {
            let ca = colony::control::security::Ca::generate(&name)
                .context("could not create the cluster CA")?;
            ca.save(&dir, false)?;
            eprintln!("created a cluster CA in {}", dir.display());
        }
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .with_context(|| format!("could not read {}", dir.join(f).display()))
        };
        Some((read("ca.pem")?, read("ca.key")?))
    } else {
        None
    };
    let opts = manifests::Options {
        namespace: namespace.unwrap_or_else(|| manifests::dns_label(&name)),
        image: image.unwrap_or_else(|| {
            format!(
                "{name}:{}",
                describe["fingerprint"].as_str().unwrap_or("latest")
            )
        }),
        app: name,
        platform,
        load_balancer,
        ca,
        certs,
        cert_lifetime: manifests::cert_lifetime(&path, &|k| std::env::var(k).ok())?,
        store: storage.store,
        cache: storage.cache,
    };
    let objects = manifests::manifests(&describe, &settings, &groups, &opts)?;
    match output {
        Some(OutputFormat::Yaml) => print!("{}", manifests::to_yaml(&objects)?),
        Some(OutputFormat::Json) => println!("{}", manifests::to_json(&objects)?),
        None => {
            let options = kube::ApplyOptions {
                app: opts.app.clone(),
                namespace: opts.namespace.clone(),
                prune,
                wait: wait.then_some(timeout),
                dry_run,
            };
            kube::run(&objects, context.as_deref(), &options).await?;
        }
    }
    Ok(())
}
