//! The cache tier of a local cluster: `colony up` runs a memcached for the store when
//! `colony.toml` has `[cache]`, as `colony deploy k8s` runs a DaemonSet.
//!
//! Owns: [`LocalCache`], one memcached process on 127.0.0.1 in its own process group (so
//! that, like the instances, it outlives a killed orchestrator and is adopted again), and
//! its restart on the same port when it dies. Promises: every instance is started with
//! `COLONY_CACHE` naming it; a cache that cannot start (no memcached installed) is an
//! event and a warning, never a failed `colony up`: the store works without its cache.
//! Must not touch: the instances (the orchestrator hands them `cache_env`).

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::Inner;
use super::supervise::{kill, pid_alive};
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

impl Inner {
    /// Start the cluster's memcached when `[cache]` asks for one, or adopt the one a
    /// previous orchestrator started (`previous`, if it still runs). Not under `--docker`
    /// (there is no memcached image to run without a registry), nor when `COLONY_CACHE`
    /// already names a cache.
    pub(super) fn start_cache(&mut self, previous: Option<LocalCache>) {
        let Some(settings) = self.app.cache.clone() else {
            if let Some(old) = previous.filter(|c| pid_alive(c.pid)) {
                kill(old.pid, "TERM");
            }
            return;
        };
        if self.app.docker.is_some() || std::env::var_os("COLONY_CACHE").is_some() {
            let why = if self.app.docker.is_some() {
                "[cache] runs no memcached under --docker: set COLONY_CACHE to one the \
                 containers can reach"
            } else {
                "[cache] runs no memcached: COLONY_CACHE names the cache already"
            };
            self.event("cache", "memcached", None, why.to_owned());
            return;
        }
        if let Some(old) = previous.filter(|c| pid_alive(c.pid)) {
            self.cache = Some(old);
            return;
        }
        self.spawn_cache(&settings, None);
    }

    /// Start memcached (on `port`, to keep the address instances already have).
    fn spawn_cache(&mut self, settings: &CacheSettings, port: Option<u16>) {
        let logs = self.app.state_dir.join("logs");
        let started = std::fs::create_dir_all(&logs)
            .map_err(anyhow::Error::from)
            .and_then(|()| start(settings, port, &logs.join("cache.log")));
        match started {
            Ok((child, cache)) => {
                self.event(
                    "cache",
                    "memcached",
                    None,
                    format!("memcached on {}", cache.addr),
                );
                self.cache = Some(cache);
                self.cache_child = Some(child);
            }
            Err(e) => {
                eprintln!("colony: {e:#}");
                self.event("cache", "memcached", None, format!("{e:#}"));
            }
        }
    }

    /// Restart the cache on its port if it died.
    pub(super) fn watch_cache(&mut self) {
        let Some(cache) = &self.cache else { return };
        let dead = match &mut self.cache_child {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => !pid_alive(cache.pid),
        };
        if !dead || self.stopping {
            return;
        }
        let port = port(&cache.addr);
        self.event(
            "cache",
            "memcached",
            None,
            format!("memcached (pid {}) is gone; starting it again", cache.pid),
        );
        self.cache = None;
        self.cache_child = None;
        if let Some(settings) = self.app.cache.clone() {
            self.spawn_cache(&settings, port);
        }
    }

    /// What an instance is told about the cache tier.
    pub(super) fn cache_env(&self) -> Vec<(&'static str, String)> {
        let Some(cache) = &self.cache else {
            return Vec::new();
        };
        let mut env = vec![("COLONY_CACHE", cache.addr.clone())];
        if let Some(ttl) = self.app.cache.as_ref().and_then(|c| c.ttl_secs) {
            env.push(("COLONY_CACHE_TTL", format!("{ttl}s")));
        }
        env
    }
}
