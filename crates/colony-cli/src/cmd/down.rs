//! `colony down`: drain and stop the local cluster, and wait for its orchestrator to exit.
//!
//! Owns: asking the orchestrator to stop and waiting for its process; with no orchestrator
//! left, removing what a Docker cluster left behind. Must not touch: the instances
//! themselves (the orchestrator drains them).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::state_dir;
use super::up::running_orchestrator;
use crate::local::client::{self, Request, Response};
use crate::local::{docker, pid_alive};

pub(crate) async fn run(path: &Path) -> anyhow::Result<()> {
    let dir = state_dir(path);
    let pid = running_orchestrator(&dir);
    let answer = match client::request(&dir, &Request::Down).await {
        Err(e) if pid.is_none() => {
            // No orchestrator: still remove what a Docker cluster left behind.
            if let Some(name) = docker::remove_leftovers(&dir) {
                println!("removed the containers and network of {name}.");
                return Ok(());
            }
            // Nothing to stop is not a failure: say so.
            tracing::debug!(error = %e, "no orchestrator answered");
            println!("nothing is running in {}.", path.display());
            return Ok(());
        }
        answer => answer?,
    };
    match answer {
        Response::Ok { .. } => {}
        Response::Error { message } => bail!(message),
        _ => bail!("the orchestrator gave an unexpected answer"),
    }
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(60);
        while pid_alive(pid) {
            if Instant::now() > deadline {
                bail!("the orchestrator (pid {pid}) did not stop within 60s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("stopped.");
    Ok(())
}
