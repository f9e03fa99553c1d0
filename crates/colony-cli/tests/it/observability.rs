//! Following one request across processes, for real: `colony up` runs the fixture app's
//! `trail` services (gateway → first → second → third, one process each), and the tests
//! check the log lines (`colony logs`), the spans exported over OTLP to a receiver in the
//! test, and the Prometheus metrics (`/metrics`, `colony metrics`). Tests poll with
//! deadlines; none asserts on time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::Value;

use crate::common;

use common::Cluster;

const FIRST: &str = "colony_e2e::services::trail::first";
const SECOND: &str = "colony_e2e::services::trail::second";
const THIRD: &str = "colony_e2e::services::trail::third";

/// The fixture app's binary, built once (with the `otlp` feature, as its manifest asks).
fn app() -> PathBuf {
    common::binary("colony-e2e")
}

/// The three `trail` services, one instance each; nothing else runs but the gateway.
const TRAIL: &str = r#"
[defaults]
min_instances = 0

[services."colony_e2e::services::trail::first"]
min_instances = 1

[services."colony_e2e::services::trail::second"]
min_instances = 1

[services."colony_e2e::services::trail::third"]
min_instances = 1
"#;

/// A `colony up` cluster of the fixture app's `trail` services, with `env` set for the
/// orchestrator and so for every process it starts.
fn up(name: &str, env: &[(&str, &str)]) -> Cluster {
    Cluster::up(&format!("obs-{name}"), TRAIL, &app(), env, &[])
}

/// What these tests ask of a cluster beyond the shared harness.
impl Cluster {
    /// The gateway's `host:port`, once `colony up` has it serving.
    fn gateway(&self) -> String {
        let url = wait_for("the gateway serves", Duration::from_secs(60), || {
            self.status()["gateway"].as_str().map(str::to_owned)
        });
        url.trim_start_matches("http://").to_owned()
    }

    /// Instance id → metrics address, for every registered process (the gateway too), from
    /// the orchestrator's persisted state.
    fn metrics_addresses(&self) -> BTreeMap<String, String> {
        let state: Value = serde_json::from_slice(
            &std::fs::read(self.dir.join(".colony/state.json")).expect("state.json"),
        )
        .expect("state JSON");
        state["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["state"] == "healthy")
            .filter_map(|i| {
                Some((
                    i["id"].as_str()?.to_owned(),
                    i["metrics"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    /// `colony logs PATH ARGS... --json`, each line parsed.
    fn logs(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["logs", self.path()];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.colony(&all);
        assert!(out.status.success(), "colony logs: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
            .collect()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Poll `probe` every 100 ms until it gives a value, failing the test after `within`.
fn wait_for<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 2n random lowercase hex digits (not all zero).
fn random_hex(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < 2 * n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
        out.push_str(&format!("{:016x}", h.finish() | 1));
    }
    out.truncate(2 * n);
    out
}

/// An HTTP/1.1 GET: status, headers (lowercase names), body.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, HashMap<String, String>, String) {
    let mut stream = TcpStream::connect(addr).expect("the gateway accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// Every JSON line of every log file of the cluster whose trace id is `trace`, read
/// directly: what `colony logs --trace` must return, no more, no less.
fn lines_with_trace(dir: &Path, trace: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir.join(".colony/logs")).expect("logs dir") {
        let path = entry.expect("entry").path();
        let file = std::fs::File::open(&path).expect("log file");
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["trace_id"] == trace
            {
                found.insert(line);
            }
        }
    }
    found
}

#[test]
fn one_request_through_the_gateway_and_three_services_is_one_trace_in_every_log() {
    let cluster = up("logs", &[("COLONY_LOG", "info,colony::gateway=debug")]);
    let gateway = cluster.gateway();
    let trace = random_hex(16);
    let other = random_hex(16);
    assert_ne!(trace, other);
    for (t, word) in [(&other, "other"), (&trace, "alpha")] {
        let parent = format!("00-{t}-{}-01", random_hex(8));
        let (status, headers, body) = get(
            &gateway,
            &format!("/trail/{word}"),
            &[("traceparent", &parent)],
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.trim(), format!("\"{}\"", word.to_uppercase()));
        // The answer names the trace it continued.
        assert!(
            headers["traceresponse"].starts_with(&format!("00-{t}-")),
            "{headers:?}"
        );
    }

    // Every process writes its lines as it goes; wait until all four have.
    let lines = wait_for(
        "the gateway and the three services have logged the request",
        Duration::from_secs(30),
        || {
            let lines = cluster.logs(&["--trace", &trace]);
            let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
            [
                "first has the word",
                "second has the word",
                "third has the word",
                "answered",
            ]
            .iter()
            .all(|m| messages.contains(m))
            .then_some(lines)
        },
    );
    assert!(
        lines.iter().all(|l| l["trace_id"] == trace.as_str()),
        "{lines:#?}"
    );
    let instances: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l["instance"].as_str())
        .collect();
    assert_eq!(
        instances.len(),
        4,
        "one instance each of gateway, first, second, third: {lines:#?}"
    );
    let services: BTreeSet<&str> = lines.iter().filter_map(|l| l["service"].as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from(["@gateway", FIRST, SECOND, THIRD]),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["request_id"].is_string() && l["span_id"].is_string())
    );

    // Exactly the lines with that trace id, from all the files.
    let printed: BTreeSet<String> = lines.iter().map(Value::to_string).collect();
    let on_disk: BTreeSet<String> = lines_with_trace(&cluster.dir, &trace)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON").to_string())
        .collect();
    assert_eq!(printed, on_disk);

    // In causal order: each service logs before it calls the next; the gateway answers last.
    let position = |message: &str| {
        lines
            .iter()
            .position(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("a line `{message}`"))
    };
    let order = [
        position("first has the word"),
        position("second has the word"),
        position("third has the word"),
        position("answered"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{lines:#?}");
    let times: Vec<&str> = lines.iter().filter_map(|l| l["time"].as_str()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "time order: {times:?}"
    );

    // Filters combine; text output shows the same lines.
    let second = cluster.logs(&["--trace", &trace, "--service", SECOND]);
    assert!(!second.is_empty() && second.iter().all(|l| l["service"] == SECOND));
    let out = cluster.colony(&["logs", cluster.path(), "--trace", &trace]);
    assert!(out.status.success());
    let plain = text(&out.stdout);
    assert_eq!(plain.lines().count(), lines.len(), "{plain}");
    assert!(plain.contains("third has the word"), "{plain}");
    let warn = cluster.logs(&["--trace", &trace, "--level", "warn"]);
    assert!(warn.is_empty(), "{warn:#?}");
}

/// An OTLP/HTTP receiver: decodes each `ExportTraceServiceRequest` with the official
/// protobuf definitions and keeps the spans, with the `service.name` of their resource.
struct Receiver {
    addr: String,
    spans: Arc<Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = listener.local_addr().expect("addr").to_string();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let kept = kept.clone();
                std::thread::spawn(move || serve_otlp(stream, &kept));
            }
        });
        Receiver { addr, spans }
    }

    fn spans_of(&self, trace: &[u8]) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, s)| s.trace_id == trace)
            .cloned()
            .collect()
    }
}

type Kept = Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>;

/// Serve one keep-alive connection of POST /v1/traces requests.
fn serve_otlp(stream: TcpStream, kept: &Kept) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        assert!(length <= 16 << 20, "an OTLP body of {length} bytes");
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        assert!(first.starts_with("POST /v1/traces "), "{first}");
        let request = ExportTraceServiceRequest::decode(&body[..]).expect("an OTLP trace export");
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    kept.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((service.clone(), span));
                }
            }
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn spans_exported_over_otlp_from_every_process_form_one_tree() {
    let receiver = Receiver::start();
    let endpoint = format!("http://{}", receiver.addr);
    let cluster = up(
        "otlp",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let gateway = cluster.gateway();
    // An unsampled request first: none of its spans may be exported. Each process exports
    // in order, so once the sampled request's spans are in, the other's would be too.
    let unsampled = random_hex(16);
    let parent = format!("00-{unsampled}-{}-00", random_hex(8));
    let (status, _, body) = get(&gateway, "/trail/quiet", &[("traceparent", &parent)]);
    assert_eq!(status, 200, "{body}");
    let trace = random_hex(16);
    let caller_span = random_hex(8);
    let parent = format!("00-{trace}-{caller_span}-01");
    let (status, headers, body) = get(&gateway, "/trail/loud", &[("traceparent", &parent)]);
    assert_eq!(status, 200, "{body}");

    // gateway (server) → first (client, server) → second (client, server) → third (client, server)
    let trace_bytes = hex_bytes(&trace);
    let spans = wait_for(
        "seven spans of the trace arrive",
        Duration::from_secs(60),
        || {
            let spans = receiver.spans_of(&trace_bytes);
            (spans.len() >= 7).then_some(spans)
        },
    );
    assert_eq!(spans.len(), 7, "{spans:#?}");
    assert!(receiver.spans_of(&hex_bytes(&unsampled)).is_empty());

    // One root in this trace: the gateway's span, whose parent is the caller's span.
    let ids: BTreeSet<Vec<u8>> = spans.iter().map(|(_, s)| s.span_id.clone()).collect();
    assert_eq!(ids.len(), 7, "span ids are unique");
    let caller = hex_bytes(&caller_span);
    let roots: Vec<_> = spans
        .iter()
        .filter(|(_, s)| !ids.contains(&s.parent_span_id))
        .collect();
    assert_eq!(roots.len(), 1, "{spans:#?}");
    let (root_service, root) = roots[0];
    assert_eq!(root.parent_span_id, caller);
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(root_service, "@gateway");
    // The gateway's answer names its span.
    let response = headers["traceresponse"].clone();
    assert_eq!(
        response,
        format!(
            "00-{trace}-{}-01",
            root.span_id
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    );

    // Walk down: each span has exactly one child, alternating client and server.
    let mut chain = vec![(root_service.clone(), root.clone())];
    loop {
        let (_, last) = chain.last().expect("a span");
        let children: Vec<_> = spans
            .iter()
            .filter(|(_, s)| s.parent_span_id == last.span_id)
            .collect();
        match children.as_slice() {
            [] => break,
            [child] => chain.push((*child).clone()),
            more => panic!("a span with {} children: {spans:#?}", more.len()),
        }
    }
    let shape: Vec<(i32, &str, &str)> = chain
        .iter()
        .map(|(service, s)| (s.kind, s.name.as_str(), service.as_str()))
        .collect();
    let client = SpanKind::Client as i32;
    let server = SpanKind::Server as i32;
    assert_eq!(
        shape,
        vec![
            (server, "GET /trail/loud", "@gateway"),
            (client, FIRST, "@gateway"),
            (server, FIRST, FIRST),
            (client, SECOND, FIRST),
            (server, SECOND, SECOND),
            (client, THIRD, SECOND),
            (server, THIRD, THIRD),
        ]
    );
    // Each child starts within its parent (one clock: one machine).
    for pair in chain.windows(2) {
        let (parent, child) = (&pair[0].1, &pair[1].1);
        assert!(child.start_time_unix_nano >= parent.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= parent.end_time_unix_nano);
    }
}

/// A Prometheus text exposition, parsed.
fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let (status, _, body) = get(addr, "/metrics", &[]);
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("the Prometheus text format")
}

/// The value of the sample `metric` whose labels include `labels` (0 when absent).
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        .sum()
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_the_requests_sent() {
    let cluster = up("metrics", &[]);
    let gateway = cluster.gateway();
    let sent = 7;
    for i in 0..sent {
        let (status, _, body) = get(&gateway, &format!("/trail/word{i}"), &[]);
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = get(&gateway, "/trail/refuse", &[]);
    assert_eq!(status, 400, "{body}");
    let ok = f64::from(sent);

    let addrs = wait_for(
        "four processes registered metrics",
        Duration::from_secs(30),
        || {
            let a = cluster.metrics_addresses();
            (a.len() == 4).then_some(a)
        },
    );
    let instance_of = |prefix: &str| {
        addrs
            .iter()
            .find(|(id, _)| id.starts_with(prefix))
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("an instance {prefix}*: {addrs:?}"))
    };
    for (service, prefix, callee) in [
        (FIRST, "first-", Some(SECOND)),
        (SECOND, "second-", Some(THIRD)),
        (THIRD, "third-", None),
    ] {
        let m = scrape(&instance_of(prefix));
        let served = |outcome| {
            value(
                &m,
                "colony_server_calls_total",
                &[("service", service), ("outcome", outcome)],
            )
        };
        assert_eq!(served("ok"), ok, "{service}");
        assert_eq!(served("error"), 1.0, "{service}: the refused word");
        assert_eq!(
            value(
                &m,
                "colony_server_duration_seconds_count",
                &[("service", service)]
            ),
            ok + 1.0
        );
        assert_eq!(
            value(
                &m,
                "colony_server_queued_seconds_count",
                &[("service", service)]
            ),
            ok + 1.0
        );
        assert_eq!(
            value(&m, "colony_server_in_flight", &[("service", service)]),
            0.0
        );
        assert_eq!(value(&m, "colony_instance_completed_total", &[]), ok + 1.0);
        assert_eq!(value(&m, "colony_instance_errors_total", &[]), 1.0);
        if let Some(callee) = callee {
            let called = |outcome| {
                value(
                    &m,
                    "colony_client_calls_total",
                    &[("service", callee), ("outcome", outcome)],
                )
            };
            assert_eq!(called("ok"), ok, "{service} → {callee}");
            assert_eq!(called("error"), 1.0, "{service} → {callee}");
        }
        let (status, _, health) = get(&instance_of(prefix), "/healthz", &[]);
        assert_eq!((status, health.trim()), (200, "ok"));
    }
    let g = scrape(&instance_of("@gateway-"));
    assert_eq!(
        value(&g, "colony_http_requests_total", &[("code", "200")]),
        ok
    );
    assert_eq!(
        value(&g, "colony_http_requests_total", &[("code", "400")]),
        1.0
    );
    assert_eq!(
        value(
            &g,
            "colony_client_calls_total",
            &[("service", FIRST), ("outcome", "ok")]
        ),
        ok
    );

    // `colony metrics`: every process, labelled by instance; `--sum` adds them up.
    let out = cluster.colony(&["metrics", cluster.path()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = prometheus_parse::Scrape::parse(text(&out.stdout).lines().map(|l| Ok(l.to_owned())))
        .expect("the Prometheus text format");
    let labelled: BTreeSet<&str> = all
        .samples
        .iter()
        .filter_map(|s| s.labels.get("instance"))
        .collect();
    assert_eq!(
        labelled.len(),
        4,
        "the gateway and the three services: {labelled:?}"
    );
    let out = cluster.colony(&["metrics", cluster.path(), "--sum"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sum = prometheus_parse::Scrape::parse(text(&out.stdout).lines().map(|l| Ok(l.to_owned())))
        .expect("the Prometheus text format");
    assert_eq!(
        value(&sum, "colony_server_calls_total", &[("outcome", "ok")]),
        3.0 * ok
    );
}
