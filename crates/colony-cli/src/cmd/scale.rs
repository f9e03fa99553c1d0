//! `colony scale SERVICE=N`: a new desired count, sent to the running orchestrator.
//!
//! Owns: reading `SERVICE=N` and printing the orchestrator's answer. Must not touch: the
//! limits of a count (the orchestrator checks them against the service's settings).

use std::path::Path;

use anyhow::{Context, bail};

use super::state_dir;
use crate::local::client::{self, Request, Response};

pub(crate) async fn run(path: &Path, target: &str) -> anyhow::Result<()> {
    let (service, count) = target.split_once('=').with_context(|| {
        format!("`{target}` is not SERVICE=N; write it like `shop::pricing::quote=3`")
    })?;
    let count: u32 = count.trim().parse().with_context(|| {
        format!("`{count}` is not a possible count of instances; use a whole number from 0 up")
    })?;
    match client::request(
        &state_dir(path),
        &Request::Scale {
            service: service.trim().to_owned(),
            count,
        },
    )
    .await?
    {
        Response::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        Response::Error { message } => bail!(message),
        _ => bail!("the orchestrator gave an unexpected answer"),
    }
}
