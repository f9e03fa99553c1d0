//! Security objects and pod settings: the cluster CA (a Secret every pod mounts, or a
//! cert-manager CA `Issuer` and one `Certificate` per Deployment), the TLS volume and
//! environment of a pod, and the pod and container security contexts.
//!
//! Owns: the certificate lifetime as instances read it (env, then `colony.toml`) written as
//! cert-manager reads it, and the checks that `--certs cert-manager` can work (TLS on, a
//! lifetime cert-manager accepts). Promises: with cert-manager, pods get only their own
//! certificate and key, never the CA key. Must not touch: which workloads exist.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{Certs, Options, Platform, Unit, meta};

/// Where pods read their certificate when cert-manager issues it.
pub(super) const TLS_DIR: &str = "/etc/colony/tls";
/// The shortest certificate lifetime and renewal margin cert-manager accepts.
const CERT_MANAGER_MIN_DURATION: Duration = Duration::from_secs(3600);
const CERT_MANAGER_MIN_RENEW_BEFORE: Duration = Duration::from_secs(300);

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
    let default = colony::control::security::CertLifetime::default();
    let (lifetime, renew) = match (lifetime, renew) {
        (None, None) => (default.lifetime(), default.renew_before()),
        (Some(l), None) => (l, l / 3),
        (l, Some(r)) => (l.unwrap_or(default.lifetime()), r),
    };
    colony::control::security::CertLifetime::new(lifetime, renew)?;
    Ok((lifetime, renew))
}

/// A duration as Go's `time.ParseDuration` reads it: `24h`, `90m`, `45s`.
pub(super) fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// The CA objects: the CA as a Secret every pod mounts, or, with cert-manager, the CA as a
/// TLS Secret for a CA `Issuer` and a `Certificate` per unit and for the gateway.
pub(super) fn ca_objects(opts: &Options, units: &[Unit]) -> Vec<Value> {
    let mut out = Vec::new();
    match &opts.ca {
        Some((cert, key)) if opts.cert_manager() => {
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
            for unit in units {
                out.push(certificate(opts, &unit.name, "instance", &unit.services));
            }
            out.push(certificate(
                opts,
                "gateway",
                "gateway",
                &[colony::control::security::ROLE_GATEWAY.to_owned()],
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
    out
}

/// `--certs cert-manager` needs mutual TLS on and a lifetime cert-manager accepts; returns
/// whether cert-manager issues the certificates.
pub(super) fn check_cert_manager(opts: &Options) -> anyhow::Result<bool> {
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
    Ok(cert_manager)
}

/// The cert-manager Certificate of one Deployment (`name`): one URI SAN per service it
/// hosts (or role it plays), as `colony::control::security::spiffe_id` writes them, in the Secret
/// `NAME-tls` that its pods mount.
fn certificate(opts: &Options, name: &str, component: &str, identities: &[String]) -> Value {
    let (lifetime, renew) = opts.cert_lifetime;
    let uris: Vec<String> = identities
        .iter()
        .map(|n| colony::control::security::spiffe_id(&opts.app, n))
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

/// The volume and mount of a pod's TLS material: its own certificate (cert-manager; the
/// Secret `CERT-tls`, mounted whole so that renewals reach the pod), or the cluster CA.
pub(super) fn tls_volume(opts: &Options, cert: &str) -> (Vec<Value>, Vec<Value>) {
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

pub(super) fn pod_security(opts: &Options) -> Value {
    match opts.platform {
        Platform::Kubernetes => {
            json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532})
        }
        // OpenShift's default `restricted-v2` SCC picks the user and fsGroup from the
        // project's range and refuses pods that name others.
        Platform::Openshift => json!({"runAsNonRoot": true}),
    }
}

pub(super) fn container_security() -> Value {
    json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}})
}
