//! The cache tier of a local cluster: `colony up` runs a memcached for the store when
//! `colony.toml` has `[cache]`, as `colony deploy k8s` runs a DaemonSet.
//!
//! Owns: [`LocalCache`], one memcached process on 127.0.0.1 in its own process group (so
//! that, like the instances, it outlives a killed orchestrator and is adopted again), and
//! its restart on the same port when it dies. Promises: every instance is started with
//! `COLONY_CACHE` naming it; a cache that cannot start (no memcached installed) is an
//! event and a warning, never a failed `colony up`: the store works without its cache.
//! Must not touch: the instances.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::settings::CacheSettings;

/// A running memcached of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LocalCache {
    /// Its process.
    pub(crate) pid: u32,
    /// `127.0.0.1:PORT`, what instances get as `COLONY_CACHE`.
    pub(crate) addr: String,
}

/// Start memcached with `settings` on 127.0.0.1, on `port` (a free one when `None`),
/// logging to `log`; the child, to reap, and what instances need.
pub(crate) fn start(
    settings: &CacheSettings,
    port: Option<u16>,
    log: &Path,
) -> anyhow::Result<(std::process::Child, LocalCache)> {
    let port = match port {
        Some(p) => p,
        None => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free port for the cache")?
            .port(),
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("could not open {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = std::process::Command::new("memcached");
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
        .args(["-m", &settings.memory_mb.to_string()])
        .args(["-c", &settings.max_connections.to_string()])
        // memcached refuses to run as root without a user to become, and ignores `-u`
        // when it is not root.
        .args(["-u", "nobody"]);
    use std::os::unix::process::CommandExt as _;
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .context(
            "could not start memcached for [cache] (is it installed? `apt-get install \
             memcached`, `brew install memcached`); the store runs without its cache tier",
        )?;
    let pid = child.id();
    Ok((
        child,
        LocalCache {
            pid,
            addr: format!("127.0.0.1:{port}"),
        },
    ))
}

/// The port of `addr` (`127.0.0.1:PORT`).
pub(crate) fn port(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}
