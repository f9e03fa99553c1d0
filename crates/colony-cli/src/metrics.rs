//! `colony metrics`: the Prometheus metrics of every instance of a local cluster, in one
//! exposition.
//!
//! Owns: scraping each instance's `/metrics` (the address it registered with the
//! orchestrator), and merging the expositions: each metric family once, with its samples
//! from every instance labelled `instance="<id>"`, or with `--sum` added up across
//! instances. Promises: a scrape reads at most [`MAX_BODY`] bytes and gives up after
//! [`SCRAPE_TIMEOUT`]; an instance that does not answer is reported on stderr and left
//! out, never failing the others. Must not touch: the metrics themselves (the runtime
//! defines them; `docs/metrics.md` names them).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::local::client::{self, Request, Response};
use crate::local::state::State;

/// The largest exposition read from one instance.
pub(crate) const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long one instance has to answer.
pub(crate) const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET http://{addr}{path}` over HTTP/1.1; the body of a 200 answer.
pub(crate) async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = Vec::new();
        (&mut stream)
            .take(MAX_BODY as u64 + 64 * 1024)
            .read_to_end(&mut body)
            .await?;
        Ok::<Vec<u8>, std::io::Error>(body)
    };
    let answer = tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("{addr} did not answer within {SCRAPE_TIMEOUT:?}"))?
        .with_context(|| format!("could not read {path} from {addr}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr} answered something that is not HTTP"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1).is_none_or(|c| c != "200") {
        bail!("{addr} answered `{status}` for {path}");
    }
    if body.len() > MAX_BODY {
        bail!("{addr} sent more than {MAX_BODY} bytes of metrics");
    }
    Ok(body.to_owned())
}

/// One metric family, merged from every instance.
#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    /// Sample lines, instance label added.
    samples: Vec<String>,
    /// With `--sum`: series (name and labels, without instance) → total, in first-seen order.
    sums: Vec<(String, f64, u32)>,
}

/// Split a sample line into its series (`name{labels}`) and value.
fn split_sample(line: &str) -> Option<(&str, &str, &str)> {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].find('}')?;
            (&line[..=close], line[close + 1..].trim())
        }
        None => {
            let sp = line.find(' ')?;
            (&line[..sp], line[sp..].trim())
        }
    };
    let name = series.split('{').next()?;
    let value = rest.split_whitespace().next()?;
    Some((name, series, value))
}

/// `series` with `instance="id"` as its first label.
fn with_instance(series: &str, instance: &str) -> String {
    let id = instance.replace('\\', "\\\\").replace('"', "\\\"");
    match series.split_once('{') {
        Some((name, labels)) if labels.trim_end_matches('}').is_empty() => {
            format!("{name}{{instance=\"{id}\"}}")
        }
        Some((name, labels)) => format!("{name}{{instance=\"{id}\",{labels}"),
        None => format!("{series}{{instance=\"{id}\"}}"),
    }
}

/// Merge `(instance, exposition)` pairs into one exposition.
pub(crate) fn merge(expositions: &[(String, String)], sum: bool) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (instance, text) in expositions {
        let mut current: Option<String> = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                let family = families.entry(name.to_owned()).or_insert_with(|| {
                    order.push(name.to_owned());
                    Family::default()
                });
                family.help.get_or_insert_with(|| help.to_owned());
                current = Some(name.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
                let family = families.entry(name.to_owned()).or_insert_with(|| {
                    order.push(name.to_owned());
                    Family::default()
                });
                family.kind.get_or_insert_with(|| kind.to_owned());
                current = Some(name.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let Some((name, series, value)) = split_sample(line) else {
                continue;
            };
            // A sample belongs to the family declared before it, if its name is of it
            // (`x_bucket` of histogram `x`); otherwise to a family of its own name.
            let family_name = match &current {
                Some(f) if name.starts_with(f.as_str()) => f.clone(),
                _ => name.to_owned(),
            };
            let family = families.entry(family_name.clone()).or_insert_with(|| {
                order.push(family_name.clone());
                Family::default()
            });
            if sum {
                let v: f64 = value.parse().unwrap_or(0.0);
                match family.sums.iter_mut().find(|(s, _, _)| s == series) {
                    Some((_, total, n)) => {
                        *total += v;
                        *n += 1;
                    }
                    None => family.sums.push((series.to_owned(), v, 1)),
                }
            } else {
                family
                    .samples
                    .push(format!("{} {value}", with_instance(series, instance)));
            }
        }
    }
    let mut out = String::new();
    for name in order {
        let Some(family) = families.get(&name) else {
            continue;
        };
        if let Some(help) = &family.help {
            out.push_str(&format!("# HELP {name} {help}\n"));
        }
        if let Some(kind) = &family.kind {
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        }
        for sample in &family.samples {
            out.push_str(sample);
            out.push('\n');
        }
        // A ratio does not add up: its mean is shown.
        let mean = name.ends_with("_ratio");
        for (series, total, n) in &family.sums {
            let v = if mean { total / f64::from(*n) } else { *total };
            out.push_str(&format!("{series} {v}\n"));
        }
    }
    out
}

/// `colony metrics`: scrape every registered instance of the app at `path` and print one
/// exposition.
pub(crate) async fn run(path: &std::path::Path, sum: bool) -> anyhow::Result<()> {
    let Response::Status(status) = client::request(&path.join(".colony"), &Request::Status).await?
    else {
        bail!("the orchestrator gave an unexpected answer");
    };
    let mut targets: Vec<(String, String)> = status
        .services
        .iter()
        .flat_map(|s| &s.instances)
        .filter(|i| matches!(i.state, State::Healthy | State::Draining))
        .filter_map(|i| Some((i.id.clone(), i.metrics.clone()?)))
        .collect();
    // The gateway is not a service: the orchestrator's persisted state has its instance.
    targets.extend(gateway_instances(&path.join(".colony")));
    let scrapes = targets.into_iter().map(|(id, addr)| async move {
        let result = http_get(&addr, "/metrics").await;
        (id, result)
    });
    let mut expositions = Vec::new();
    for (id, result) in futures_join(scrapes).await {
        match result {
            Ok(text) => expositions.push((id, text)),
            Err(e) => eprintln!("colony: skipped {id}: {e:#}"),
        }
    }
    if expositions.is_empty() {
        bail!("no instance served metrics; see `colony status`");
    }
    print!("{}", merge(&expositions, sum));
    Ok(())
}

/// The healthy gateway instances and their metrics addresses, from `state.json`.
fn gateway_instances(state_dir: &std::path::Path) -> Vec<(String, String)> {
    let state: serde_json::Value = std::fs::read(state_dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    state["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["service"] == crate::local::GATEWAY && i["state"] == "healthy")
        .filter_map(|i| {
            Some((
                i["id"].as_str()?.to_owned(),
                i["metrics"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Run the futures concurrently, keeping their order.
async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = Vec::new();
    for f in futures {
        set.push(tokio::spawn(f));
    }
    let mut out = Vec::new();
    for handle in set {
        if let Ok(v) = handle.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# HELP colony_server_calls_total Requests.\n# TYPE colony_server_calls_total counter\ncolony_server_calls_total{service=\"a\",outcome=\"ok\"} 3\n# HELP colony_instance_in_flight In flight.\n# TYPE colony_instance_in_flight gauge\ncolony_instance_in_flight 1\n# TYPE lat histogram\nlat_bucket{le=\"+Inf\"} 2\nlat_sum 0.5\nlat_count 2\n";

    #[test]
    fn families_appear_once_with_every_instance_labelled() {
        let merged = merge(&[("a-1".into(), A.into()), ("a-2".into(), A.into())], false);
        assert_eq!(
            merged.matches("# TYPE colony_server_calls_total").count(),
            1
        );
        assert!(merged.contains(
            "colony_server_calls_total{instance=\"a-1\",service=\"a\",outcome=\"ok\"} 3\n"
        ));
        assert!(merged.contains("colony_instance_in_flight{instance=\"a-2\"} 1\n"));
        assert!(merged.contains("lat_sum{instance=\"a-1\"} 0.5\n"));
        // The samples of a family stay together, after its TYPE line.
        let type_line = merged.find("# TYPE lat histogram").expect("type");
        let other = merged
            .find("colony_instance_in_flight{instance=\"a-2\"}")
            .expect("sample");
        assert!(other < type_line, "{merged}");
    }

    #[test]
    fn sums_add_up_across_instances() {
        let merged = merge(&[("a-1".into(), A.into()), ("a-2".into(), A.into())], true);
        assert!(merged.contains("colony_server_calls_total{service=\"a\",outcome=\"ok\"} 6\n"));
        assert!(merged.contains("lat_count 4\n"), "{merged}");
    }
}
