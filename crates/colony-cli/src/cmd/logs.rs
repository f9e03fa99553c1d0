//! `colony logs`: the command line's filters handed to the log reader.
//!
//! Owns: turning the arguments into `logs::Options` and reading on a blocking thread.
//! Must not touch: how lines are read, merged and printed (`crate::logs`).

use crate::{LogsArgs, logs};

pub(crate) async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let options = logs::Options {
        service: args.service,
        trace: args.trace.map(|t| t.trim().to_ascii_lowercase()),
        request: args.request,
        level: args.level,
        since: args.since,
        follow: args.follow,
        json: args.json,
    };
    let path = args.path;
    tokio::task::spawn_blocking(move || logs::run(&path, &options)).await?
}
