//! `colony logs`: the command line's filters handed to the log reader.
//!
//! Owns: turning the arguments into `logs::Options` and reading on a blocking thread.
//! Must not touch: how lines are read, merged and printed (`crate::logs`).

use std::path::PathBuf;
use std::time::Duration;

use crate::logs;

/// What `colony logs` was asked for, as parsed.
pub(crate) struct Args {
    pub(crate) path: PathBuf,
    pub(crate) service: Option<String>,
    pub(crate) trace: Option<String>,
    pub(crate) request: Option<String>,
    pub(crate) level: Option<logs::Level>,
    pub(crate) since: Option<Duration>,
    pub(crate) follow: bool,
    pub(crate) json: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        path,
        service,
        trace,
        request,
        level,
        since,
        follow,
        json,
    } = args;
    let options = logs::Options {
        service,
        trace: trace.map(|t| t.trim().to_ascii_lowercase()),
        request,
        level,
        since,
        follow,
        json,
    };
    tokio::task::spawn_blocking(move || logs::run(&path, &options)).await?
}
