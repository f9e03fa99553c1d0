//! `colony up --docker`: the local cluster with every instance (and the gateway) in a
//! container, on a private Docker network of the cluster's own.
//!
//! Owns: the cluster's network, its containers' names and labels, the `docker run` command
//! of each instance, the certificates handed to containers as files, and removing all of
//! it. Promises: only the docker CLI is used, and nothing is ever pulled (the image is the
//! one `colony build` makes, built here when missing; `docker run --pull never`); every
//! container carries the label `dev.colony.cluster=NAME`, so `colony down` finds them all;
//! the gateway's port is published on 127.0.0.1 only. Must not touch: scheduling (the
//! orchestrator decides what runs).
//!
//! The orchestrator stays a host process: it listens on the host's address on the cluster's
//! network (the bridge's gateway), which every container can reach, and `docker run` is its
//! child, so a container that dies is noticed as a process that exits. Containers listen on
//! `0.0.0.0` and are reached at their address on the network, which the orchestrator reads
//! from their control link.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::image;

/// The port instances listen on inside their container.
const LISTEN_PORT: u16 = 7700;
/// The port the gateway listens on inside its container.
const HTTP_PORT: u16 = 8080;
/// The port of `/metrics` and `/healthz` inside a container.
const METRICS_PORT: u16 = 9090;
/// Where a container finds the certificate the orchestrator issued it.
const TLS_DIR: &str = "/colony/tls";
/// Where a container finds the app's `colony.toml`.
const CONFIG_PATH: &str = "/colony/colony.toml";
/// The label every container and the network of a cluster carry.
const LABEL: &str = "dev.colony.cluster";
/// `.colony/docker.json`: which cluster to remove, even without an orchestrator.
const STATE_FILE: &str = "docker.json";
/// Variables the orchestrator sets itself, or that name host paths.
const NOT_PASSED: &[&str] = &[
    "COLONY_ORCHESTRATOR",
    "COLONY_ORCHESTRATOR_FILE",
    "COLONY_INSTANCE",
    "COLONY_HEARTBEAT",
    "COLONY_CA_DIR",
    "COLONY_CONFIG",
    "COLONY_PEERS",
    "COLONY_LISTEN",
    "COLONY_METRICS_ADDR",
    "COLONY_HTTP_ADDR",
    "COLONY_TLS_CERT",
    "COLONY_TLS_KEY",
    "COLONY_TLS_CA",
    "COLONY_STORE_PATH",
];

/// One cluster's Docker resources.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DockerCluster {
    /// The cluster's name: its network's, its containers' prefix and label value.
    pub(crate) name: String,
    /// The app's image (`APP:FINGERPRINT`).
    pub(crate) image: String,
    /// The host's address on the cluster's network, where the orchestrator listens.
    pub(crate) host_ip: String,
    /// The port on 127.0.0.1 published to the gateway, when the app has one.
    pub(crate) http_port: Option<u16>,
}

/// What one `docker run` starts.
pub(crate) struct Run<'a> {
    /// The instance id.
    pub(crate) id: &'a str,
    /// Its service, or the gateway's role.
    pub(crate) service: &'a str,
    /// The orchestrator's control address.
    pub(crate) control_addr: &'a str,
    /// The heartbeat interval.
    pub(crate) heartbeat_ms: u64,
    /// Tokio worker threads.
    pub(crate) threads: Option<u32>,
    /// The core to pin it to.
    pub(crate) core: Option<usize>,
    /// The directory with its certificate, key and CA (TLS on).
    pub(crate) certs: Option<&'a Path>,
    /// The app's `colony.toml`, when it has one.
    pub(crate) config: Option<PathBuf>,
    /// For the store service (`colony::store::serve`): the host directory that holds its
    /// file, mounted into the container so that the data outlives it.
    pub(crate) store_dir: Option<&'a Path>,
}

/// Where the store's directory is mounted in its container.
const STORE_DIR: &str = "/var/lib/colony";

/// Run `docker ARGS`, returning its stdout; an error quotes docker's own message.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context(
            "could not run the `docker` command; install Docker to use `colony up --docker`",
        )?;
    if !out.status.success() {
        bail!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Fail with a clear message when no Docker engine answers.
pub(crate) fn check_engine() -> anyhow::Result<()> {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    match out {
        Err(_) => bail!(
            "`colony up --docker` needs the `docker` command, which is not installed; install \
             Docker, or run the cluster as processes with `colony up`"
        ),
        Ok(out) if !out.status.success() => bail!(
            "`colony up --docker` needs a Docker engine, and none answers ({}); start it (e.g. \
             `systemctl start docker`) or check DOCKER_HOST, or run the cluster as processes \
             with `colony up`",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => Ok(()),
    }
}

/// A name Docker accepts: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, lowercase.
fn docker_name(s: &str) -> String {
    let name: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.trim_matches('-').to_owned()
}

/// FNV-1a: a short, stable tag for the cluster's directory.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h & 0xffff_ffff)
}

impl DockerCluster {
    /// Set up the Docker side of a cluster of `app` (state in `state_dir`): check the
    /// engine, build the app's image when it is missing, create the cluster's network, and
    /// choose the gateway's port on 127.0.0.1 (`http`'s, when it is free).
    pub(crate) fn prepare(
        app_name: &str,
        fingerprint: &str,
        binary: &Path,
        state_dir: &Path,
        http: Option<&str>,
    ) -> anyhow::Result<DockerCluster> {
        check_engine()?;
        let build = image::Build {
            app: app_name.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            fingerprint: fingerprint.to_owned(),
            binary: binary.to_owned(),
            base: None,
        };
        let tag = image::default_tag(&build);
        if docker(&["image", "inspect", "--format", "{{.Id}}", &tag]).is_err() {
            eprintln!("building the image {tag} (colony build)");
            image::build_image(&build, &tag)?;
        }
        let dir = state_dir
            .canonicalize()
            .unwrap_or_else(|_| state_dir.to_owned());
        let name = format!(
            "colony-{}-{}",
            docker_name(app_name),
            short_hash(&dir.to_string_lossy())
        );
        let exists = docker(&["network", "inspect", "--format", "{{.Name}}", &name]).is_ok();
        if !exists {
            docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--label",
                &format!("{LABEL}={name}"),
                &name,
            ])
            .with_context(|| format!("could not create the cluster's network {name}"))?;
        }
        let host_ip = docker(&[
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
            &name,
        ])?
        .split_whitespace()
        .find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "the network {name} has no IPv4 gateway for the orchestrator to listen on; \
                 remove it (`docker network rm {name}`) and try again"
            )
        })?;
        let http_port = http.map(free_port).transpose()?;
        let cluster = DockerCluster {
            name,
            image: tag,
            host_ip,
            http_port,
        };
        std::fs::create_dir_all(state_dir)?;
        std::fs::write(
            state_dir.join(STATE_FILE),
            serde_json::to_vec_pretty(&cluster)?,
        )?;
        Ok(cluster)
    }

    /// The container name of instance `id`.
    pub(crate) fn container_name(&self, id: &str) -> String {
        format!("{}-{}", self.name, docker_name(id))
    }

    /// `docker run` for one instance, in the foreground: it exits when the container does.
    pub(crate) fn run_command(&self, run: &Run<'_>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("docker");
        cmd.args(["run", "--rm", "--pull", "never"])
            .arg("--name")
            .arg(self.container_name(run.id))
            .arg("--network")
            .arg(&self.name)
            .arg("--label")
            .arg(format!("{LABEL}={}", self.name))
            .arg("--label")
            .arg(format!("dev.colony.instance={}", run.id));
        // The environment the app's settings read, without what names host paths. Passed by
        // name only: docker takes each value from its own environment (this one), so that
        // values (OTLP headers, say) never appear on a command line.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            let passed = (key.starts_with("COLONY_") && !NOT_PASSED.contains(&key))
                || key.starts_with("OTEL_");
            if passed {
                cmd.arg("--env").arg(key);
            }
        }
        let env = [
            ("COLONY_ORCHESTRATOR", run.control_addr.to_owned()),
            ("COLONY_INSTANCE", run.id.to_owned()),
            ("COLONY_HEARTBEAT", format!("{}ms", run.heartbeat_ms)),
            ("COLONY_METRICS_ADDR", format!("0.0.0.0:{METRICS_PORT}")),
        ];
        for (key, value) in env {
            cmd.arg("--env").arg(format!("{key}={value}"));
        }
        if let Some(core) = run.core {
            cmd.arg("--cpuset-cpus").arg(core.to_string());
        }
        if let Some(certs) = run.certs {
            cmd.arg("--volume")
                .arg(format!("{}:{TLS_DIR}:ro", certs.display()));
            for (key, file) in [
                ("COLONY_TLS_CERT", "cert.pem"),
                ("COLONY_TLS_KEY", "key.pem"),
                ("COLONY_TLS_CA", "ca.pem"),
            ] {
                cmd.arg("--env").arg(format!("{key}={TLS_DIR}/{file}"));
            }
        }
        if let Some(config) = &run.config {
            cmd.arg("--volume")
                .arg(format!("{}:{CONFIG_PATH}:ro", config.display()))
                .arg("--env")
                .arg(format!("COLONY_CONFIG={CONFIG_PATH}"));
        }
        if let Some(dir) = run.store_dir {
            // The container runs as the directory's owner, so that it can write there
            // whatever user the image has.
            use std::os::unix::fs::MetadataExt as _;
            if let Ok(meta) = std::fs::metadata(dir) {
                cmd.arg("--user")
                    .arg(format!("{}:{}", meta.uid(), meta.gid()));
            }
            cmd.arg("--volume")
                .arg(format!("{}:{STORE_DIR}", dir.display()))
                .arg("--env")
                .arg(format!("COLONY_STORE_PATH={STORE_DIR}/store.redb"));
        }
        if run.service == super::GATEWAY {
            if let Some(port) = self.http_port {
                cmd.arg("--publish")
                    .arg(format!("127.0.0.1:{port}:{HTTP_PORT}"));
            }
            cmd.arg(&self.image)
                .arg("gateway")
                .arg("--http")
                .arg(format!("0.0.0.0:{HTTP_PORT}"));
        } else {
            cmd.arg(&self.image)
                .arg("serve")
                .arg("--service")
                .arg(run.service)
                .arg("--listen")
                .arg(format!("0.0.0.0:{LISTEN_PORT}"));
        }
        if let Some(t) = run.threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        cmd
    }

    /// Where others reach a container that registered `addr` and `metrics` (it listens on
    /// 0.0.0.0) over a control link from `peer`: at the link's source address, and the
    /// gateway at its port published on 127.0.0.1.
    pub(crate) fn reachable(
        &self,
        addr: &str,
        metrics: Option<&str>,
        peer: &str,
        gateway: bool,
    ) -> (String, Option<String>) {
        let ip = peer
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip().to_string())
            .ok();
        let rewrite = |a: &str| -> String {
            match (a.parse::<std::net::SocketAddr>(), &ip) {
                (Ok(sa), Some(ip)) if sa.ip().is_unspecified() => format!("{ip}:{}", sa.port()),
                _ => a.to_owned(),
            }
        };
        let addr = match (gateway, self.http_port) {
            (true, Some(port)) => format!("127.0.0.1:{port}"),
            _ => rewrite(addr),
        };
        (addr, metrics.map(rewrite))
    }

    /// Remove every container of the cluster, its network, and what `.colony/` kept of it.
    pub(crate) fn remove(&self, state_dir: &Path) {
        remove_cluster(&self.name);
        let _ = std::fs::remove_file(state_dir.join(STATE_FILE));
        let _ = std::fs::remove_dir_all(state_dir.join("certs"));
    }
}

fn remove_cluster(name: &str) {
    let filter = format!("label={LABEL}={name}");
    if let Ok(ids) = docker(&["ps", "--all", "--quiet", "--filter", &filter]) {
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force"];
            args.extend(ids);
            let _ = docker(&args);
        }
    }
    let _ = docker(&["network", "rm", name]);
}

/// For `colony down` when no orchestrator answers: remove the containers and network of
/// the Docker cluster recorded in `state_dir`, if any. Returns the cluster's name.
pub(crate) fn remove_leftovers(state_dir: &Path) -> Option<String> {
    let cluster: DockerCluster = std::fs::read(state_dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())?;
    cluster.remove(state_dir);
    Some(cluster.name)
}

/// `addr`'s port when it is free on 127.0.0.1, else any free port.
fn free_port(addr: &str) -> anyhow::Result<u16> {
    let wanted = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(0);
    if wanted != 0 && std::net::TcpListener::bind(("127.0.0.1", wanted)).is_ok() {
        return Ok(wanted);
    }
    let any = std::net::TcpListener::bind("127.0.0.1:0")
        .context("could not find a free port on 127.0.0.1 for the gateway")?;
    Ok(any.local_addr()?.port())
}

/// Send `signal` to a container, without waiting (the orchestrator's tick must not block).
pub(crate) fn kill(container: &str, signal: &str) {
    let _ = tokio::process::Command::new("docker")
        .args(["kill", "--signal", signal, container])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Write a container's certificate, key and CA to `.colony/certs/ID/`; returns that
/// directory, which is mounted read-only into the container.
///
/// `.colony/certs/` is private to this user (0700), which keeps the key from other users of
/// the host; the directory and files inside are readable by all (0755, 0644) so that the
/// container's non-root user can read them through the mount.
pub(crate) fn write_leaf(
    state_dir: &Path,
    id: &str,
    leaf: &colony::control::security::IssuedCert,
    ca_pem: &str,
) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let certs = state_dir.join("certs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&certs)
        .with_context(|| format!("could not create {}", certs.display()))?;
    std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o700))?;
    let dir = certs.join(docker_name(id));
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    for (name, text) in [
        ("cert.pem", leaf.cert_pem.as_str()),
        ("key.pem", leaf.key_pem.as_str()),
        ("ca.pem", ca_pem),
    ] {
        // Written aside and renamed, so that a reloading instance never reads half a file.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("could not write {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(dir)
}

/// Remove a container's certificate files once it is gone.
pub(crate) fn remove_leaf(state_dir: &Path, id: &str) {
    let dir = state_dir.join("certs").join(docker_name(id));
    if dir.is_dir() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_for_docker() {
        assert_eq!(docker_name("@gateway-3"), "gateway-3");
        assert_eq!(docker_name("Shop App"), "shop-app");
        assert_eq!(short_hash("/a").len(), 8);
        assert_ne!(short_hash("/a"), short_hash("/b"));
    }

    #[test]
    fn containers_are_reached_at_their_link_address() {
        let cluster = DockerCluster {
            name: "colony-x-1".to_owned(),
            image: "x:1".to_owned(),
            host_ip: "172.18.0.1".to_owned(),
            http_port: Some(8089),
        };
        let (addr, metrics) = cluster.reachable(
            "0.0.0.0:7700",
            Some("0.0.0.0:9090"),
            "172.18.0.5:4000",
            false,
        );
        assert_eq!(addr, "172.18.0.5:7700");
        assert_eq!(metrics.as_deref(), Some("172.18.0.5:9090"));
        let (addr, _) = cluster.reachable("0.0.0.0:8080", None, "172.18.0.6:4000", true);
        assert_eq!(addr, "127.0.0.1:8089");
    }
}
