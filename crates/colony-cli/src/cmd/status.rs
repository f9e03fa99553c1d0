//! `colony status`: each service's settings (with where each came from) and instances, or
//! the event log, as the running orchestrator reports them.
//!
//! Owns: printing a `Status` (as text or JSON), including the table `colony up` prints.
//! Must not touch: the cluster (it only asks).

use std::path::Path;

use anyhow::bail;

use super::state_dir;
use crate::local::client::{self, Request, Response};
use crate::local::state::{State, Status};
use crate::settings;

pub(crate) async fn run(path: &Path, json: bool, events: bool) -> anyhow::Result<()> {
    let dir = state_dir(path);
    if events {
        let Response::Events { events } = client::request(&dir, &Request::Events).await? else {
            bail!("the orchestrator gave an unexpected answer");
        };
        if json {
            println!("{}", serde_json::to_string_pretty(&events)?);
        } else {
            for e in events {
                println!(
                    "{} {:<12} {:<32} {:<14} {}",
                    e.time_ms,
                    e.kind,
                    e.service,
                    e.instance.as_deref().unwrap_or("-"),
                    e.reason
                );
            }
        }
        return Ok(());
    }
    let Response::Status(status) = client::request(&dir, &Request::Status).await? else {
        bail!("the orchestrator gave an unexpected answer");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "orchestrator pid {} on {}",
        status.orchestrator_pid, status.control_addr
    );
    for s in &status.services {
        let st = &s.settings;
        println!(
            "\n{}  desired {}  min {} ({})  max {} ({})  high {} ({})  low {} ({})  cooldown {}ms ({})  capacity {} ({})",
            s.name,
            s.desired,
            st.min_instances.value,
            source(st.min_instances.source),
            st.max_instances.value,
            source(st.max_instances.source),
            st.high_watermark.value,
            source(st.high_watermark.source),
            st.low_watermark.value,
            source(st.low_watermark.source),
            st.cooldown_ms.value,
            source(st.cooldown_ms.source),
            st.capacity.value,
            source(st.capacity.source),
        );
        for i in &s.instances {
            println!(
                "  {:<16} pid {:<8} {:<22} {:<12} in flight {:<5} busy {:>3.0}%  done {}  errors {}",
                i.id,
                i.pid,
                i.addr.as_deref().unwrap_or("-"),
                format!("{:?}", i.state).to_lowercase(),
                i.load.in_flight,
                i.load.busy_ratio * 100.0,
                i.load.completed,
                i.load.errors
            );
        }
    }
    Ok(())
}

fn source(s: settings::Source) -> &'static str {
    match s {
        settings::Source::Default => "default",
        settings::Source::Attribute => "attribute",
        settings::Source::ColonyToml => "colony.toml",
        settings::Source::Env => "env",
    }
}

/// The services' healthy instances and addresses, the gateway and the cache, as `colony up`
/// prints them once the cluster is healthy.
pub(crate) fn print_table(status: &Status) {
    let mut table = comfy_table::Table::new();
    table.set_header(["SERVICE", "INSTANCES", "ADDRESSES"]);
    for s in &status.services {
        let healthy: Vec<&str> = s
            .instances
            .iter()
            .filter(|i| i.state == State::Healthy)
            .filter_map(|i| i.addr.as_deref())
            .collect();
        table.add_row([
            s.name.clone(),
            format!("{}/{}", healthy.len(), s.desired),
            healthy.join(" "),
        ]);
    }
    println!("{table}");
    if let Some(url) = &status.gateway {
        println!("gateway: {url}  (routes and examples at {url}/, OpenAPI at {url}/openapi.json)");
    }
    if let Some(cache) = &status.cache {
        println!("cache: memcached on {cache}  (COLONY_CACHE of every instance)");
    }
}
