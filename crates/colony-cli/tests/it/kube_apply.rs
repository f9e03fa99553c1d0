//! `colony deploy k8s` applying to a cluster, as a real process.
//!
//! There is no Kubernetes API server on the machines these tests run on, so a fake one runs
//! in the test: a small hyper server that speaks the part of the API `colony deploy` uses
//! (`/version`, API group discovery for CRD kinds, server-side apply PATCHes, GET, LIST with
//! label selectors, DELETE), keeps the objects it is given and records every request. The
//! tests check our client's side of the conversation: field manager, order, pruning, RBAC
//! errors, dry runs and waiting, and for an app with the store and the cache
//! (`examples/guestbook`): StatefulSet
//! and DaemonSet in order and waited for, claims never pruned, and an unchangeable volume
//! claim template explained. They say nothing about how a real API server would judge
//! the objects (the schemas are checked by `kubernetes-validate` in `tests/deploy.rs`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::common;

const COLONY: &str = env!("CARGO_BIN_EXE_colony");
/// The app of `examples/hello`, and so its default namespace.
const APP: &str = "hello";

use common::{binary, scratch};

/// `examples/hello`.
fn hello() -> PathBuf {
    binary("hello")
}

/// `examples/guestbook`, the app with the store (and its namespace).
const GUESTBOOK: &str = "guestbook";

/// One request the fake server received.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    authorization: String,
    body: Value,
}

impl Recorded {
    /// A dry run, as the API server reads it: `?dryRun=All`, or `dryRun: [All]` in the
    /// DeleteOptions body.
    fn dry_run(&self) -> bool {
        self.query.get("dryRun").map(String::as_str) == Some("All")
            || self.body["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|v| v == "All"))
    }

    /// `(plural, name)` of a request on an object.
    fn target(&self) -> (String, String) {
        let (_, rest) = split_path(&self.path).unwrap_or_default();
        let (_, plural, name) = resource_of(&rest);
        (plural, name.unwrap_or_default())
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    /// (plural, namespace or "", name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    /// A (verb, plural) that is forbidden.
    forbid: Option<(String, String)>,
    /// API groups/versions served beyond the built-in ones (`cert-manager.io/v1`).
    crds: Vec<String>,
    /// How many GETs of a Deployment before it reports every replica ready.
    ready_after: u32,
    gets: BTreeMap<String, u32>,
}

/// The fake API server.
struct Fake {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
}

impl Fake {
    async fn start(state: State) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Fake { state, addr }
    }

    /// A kubeconfig in `dir` whose context `fake` points at this server (see `kubeconfig`).
    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        kubeconfig(dir, &format!("http://{}", self.addr), closed_port())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn requests(&self, method: &str) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method == method)
            .cloned()
            .collect()
    }

    fn has(&self, plural: &str, name: &str) -> bool {
        self.has_in(APP, plural, name)
    }

    fn has_in(&self, namespace: &str, plural: &str, name: &str) -> bool {
        self.lock().objects.contains_key(&(
            plural.to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        ))
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    reply(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        }),
    )
}

fn reply(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/api/v1/...` → ("v1", rest); `/apis/g/v/...` → ("g/v", rest).
fn split_path(path: &str) -> Option<(String, Vec<String>)> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    match segs.first().map(String::as_str) {
        Some("api") if segs.len() >= 2 => Some((segs[1].clone(), segs[2..].to_vec())),
        Some("apis") if segs.len() >= 3 => {
            Some((format!("{}/{}", segs[1], segs[2]), segs[3..].to_vec()))
        }
        _ => None,
    }
}

/// (namespace or "", plural, name) of the segments after the group/version.
fn resource_of(rest: &[String]) -> (String, String, Option<String>) {
    if rest.first().map(String::as_str) == Some("namespaces") && rest.len() >= 3 {
        (rest[1].clone(), rest[2].clone(), rest.get(3).cloned())
    } else {
        (
            String::new(),
            rest.first().cloned().unwrap_or_default(),
            rest.get(1).cloned(),
        )
    }
}

fn selected(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][k] == v
    })
}

const BUILT_IN: &[&str] = &[
    "v1",
    "apps/v1",
    "autoscaling/v2",
    "policy/v1",
    "networking.k8s.io/v1",
];

async fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect();
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let authorization = header(hyper::header::AUTHORIZATION);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let selector = query.get("labelSelector").cloned();
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let recorded = Recorded {
        method: method.clone(),
        path: path.clone(),
        query,
        content_type: content_type.clone(),
        authorization,
        body: body.clone(),
    };
    let dry_run = recorded.dry_run();
    state.requests.push(recorded);

    if path == "/version" {
        return reply(
            StatusCode::OK,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "0",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
            }),
        );
    }
    let Some((group_version, rest)) = split_path(&path) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("no {path}"));
    };
    let served = BUILT_IN.contains(&group_version.as_str()) || state.crds.contains(&group_version);
    if !served {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".to_owned(),
        );
    }
    if rest.is_empty() {
        // Group discovery (only CRD groups are asked).
        let resources: Vec<Value> = [("issuers", "Issuer"), ("certificates", "Certificate")]
            .iter()
            .map(|(plural, kind)| {
                json!({
                    "name": plural, "singularName": kind.to_lowercase(), "namespaced": true,
                    "kind": kind, "verbs": ["get", "list", "patch", "delete"],
                })
            })
            .collect();
        return reply(
            StatusCode::OK,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        );
    }
    let (namespace, plural, name) = resource_of(&rest);
    let verb = match (method.as_str(), &name) {
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        _ => "other",
    };
    if state
        .forbid
        .as_ref()
        .is_some_and(|(v, p)| v == verb && *p == plural)
    {
        let group = group_version
            .rsplit_once('/')
            .map_or("", |(g, _)| g)
            .to_owned();
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{plural}.{group} \"{}\" is forbidden: User \"tester\" cannot {verb} resource \"{plural}\" in API group \"{group}\" in the namespace \"{namespace}\"",
                name.clone().unwrap_or_default()
            ),
        );
    }
    let key = |name: &str| (plural.clone(), namespace.clone(), name.to_owned());
    match (verb, name) {
        ("patch", Some(name)) => {
            if content_type != "application/apply-patch+yaml" {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!("{content_type} is not an apply patch"),
                );
            }
            if plural == "statefulsets"
                && let Some(old) = state.objects.get(&key(&name))
                && old["spec"]["volumeClaimTemplates"] != body["spec"]["volumeClaimTemplates"]
            {
                // As the API server answers: a StatefulSet's claim templates are fixed.
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!(
                        "StatefulSet.apps \"{name}\" is invalid: spec: Forbidden: updates to \
                         statefulset spec for fields other than 'replicas', 'ordinals', \
                         'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' \
                         and 'minReadySeconds' are forbidden"
                    ),
                );
            }
            let mut object = body;
            let generation = state
                .objects
                .get(&key(&name))
                .and_then(|o| o["metadata"]["generation"].as_i64())
                .unwrap_or(0)
                + 1;
            object["metadata"]["generation"] = json!(generation);
            object["metadata"]["uid"] = json!(format!("uid-{plural}-{name}"));
            if !dry_run {
                state.objects.insert(key(&name), object.clone());
            }
            reply(StatusCode::OK, &object)
        }
        ("get", Some(name)) => {
            let Some(mut object) = state.objects.get(&key(&name)).cloned() else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{plural} \"{name}\" not found"),
                );
            };
            if ["deployments", "statefulsets", "daemonsets"].contains(&plural.as_str()) {
                let gets = {
                    let g = state.gets.entry(format!("{plural}/{name}")).or_default();
                    *g += 1;
                    *g
                };
                let ready = gets >= state.ready_after;
                let generation = object["metadata"]["generation"].clone();
                object["status"] = match plural.as_str() {
                    // Three nodes, each running the new pod once ready.
                    "daemonsets" => json!({
                        "observedGeneration": generation, "desiredNumberScheduled": 3,
                        "currentNumberScheduled": 3, "updatedNumberScheduled": 3,
                        "numberReady": if ready { 3 } else { 1 },
                        "numberAvailable": if ready { 3 } else { 1 },
                    }),
                    _ => {
                        let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1);
                        let mut status = json!({
                            "observedGeneration": generation, "replicas": replicas,
                            "updatedReplicas": replicas,
                            "readyReplicas": if ready { replicas } else { 0 },
                        });
                        if plural == "statefulsets" {
                            // The pod moves to the new revision when it is ready.
                            status["updateRevision"] = json!(format!("{name}-2"));
                            status["currentRevision"] =
                                json!(format!("{name}-{}", if ready { 2 } else { 1 }));
                        }
                        status
                    }
                };
            }
            reply(StatusCode::OK, &object)
        }
        ("list", None) => {
            let selector = selector.unwrap_or_default();
            let items: Vec<Value> = state
                .objects
                .iter()
                .filter(|((p, ns, _), o)| {
                    *p == plural && *ns == namespace && selected(o, &selector)
                })
                .map(|(_, o)| o.clone())
                .collect();
            reply(
                StatusCode::OK,
                &json!({"apiVersion": group_version, "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        ("delete", Some(name)) => {
            let exists = state.objects.contains_key(&key(&name));
            if !exists {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{plural} \"{name}\" not found"),
                );
            }
            if !dry_run {
                state.objects.remove(&key(&name));
            }
            reply(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}),
            )
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path}"),
        ),
    }
}

/// A kubeconfig whose current context points at a closed port, and whose context `fake`
/// points at `server`: the tests pass `--context fake`, so a run that ignored it fails.
fn kubeconfig(dir: &Path, server: &str, closed: u16) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
             - name: stale\n  cluster:\n    server: http://127.0.0.1:{closed}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n\
             - name: stale\n  context:\n    cluster: stale\n    user: tester\n\
             current-context: stale\n\
             users:\n- name: tester\n  user:\n    token: fake-token\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

/// The environment of a run against the kubeconfig `config`, with mutual TLS `tls` (`on`
/// or `off`).
fn kube_env<'a>(config: &'a Path, tls: &'a str) -> [(&'static str, &'a str); 2] {
    [
        ("KUBECONFIG", config.to_str().expect("utf-8")),
        ("COLONY_TLS", tls),
    ]
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

async fn colony(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    colony_with(&hello(), dir, env, args).await
}

/// `colony deploy k8s` of the app binary `app`.
async fn colony_with(app: &Path, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(COLONY);
    cmd.args(["deploy", "k8s"])
        .arg(dir)
        .arg("--app-binary")
        .arg(app)
        .args(["--image", "hello:test"])
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("colony finishes")
        .expect("colony runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The objects `colony deploy k8s` generates with these arguments, as `-o json` prints them.
async fn manifests(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Vec<Value> {
    manifests_of(&hello(), dir, env, args).await
}

/// The objects `colony deploy k8s` generates for the app binary `app`.
async fn manifests_of(app: &Path, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["--dry-run", "-o", "json"]);
    let out = colony_with(app, dir, env, &all).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn labelled(kind: &str, api_version: &str, name: &str, app: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": APP, "generation": 1, "labels": {
            "app.kubernetes.io/name": app, "app.kubernetes.io/managed-by": "colony",
        }},
        "spec": {"replicas": 1},
    })
}

/// What `colony deploy k8s` applies first to last.
const ORDER: &[&str] = &[
    "Namespace",
    "ServiceAccount",
    "Secret",
    "Issuer",
    "Certificate",
    "NetworkPolicy",
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "Ingress",
    "DaemonSet",
    "StatefulSet",
    "Deployment",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_kubeconfig_says_where_it_looked() {
    let dir = scratch("kube-nokubeconfig");
    let missing = dir.join("nowhere/config");
    let out = colony(
        &dir,
        &[
            ("HOME", dir.to_str().expect("utf-8")),
            ("COLONY_TLS", "off"),
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let default = dir.join(".kube/config");
    assert!(
        err.contains("no kubeconfig found")
            && err.contains(&default.display().to_string())
            && err.contains("KUBECONFIG is not set")
            && err.contains("--dry-run -o yaml"),
        "{err}"
    );

    let list = format!("{}:{}", missing.display(), dir.join("other").display());
    let out = colony(
        &dir,
        &[("KUBECONFIG", list.as_str()), ("COLONY_TLS", "off")],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("from KUBECONFIG"),
        "{err}"
    );

    // A dry run without -o has no server to ask: it prints the manifests and says why.
    let out = colony(
        &dir,
        &[("KUBECONFIG", list.as_str()), ("COLONY_TLS", "off")],
        &["--dry-run"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kind: Deployment"));
    assert!(
        text(&out.stderr).contains("printing the manifests instead"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_names_the_server_and_the_cause() {
    let dir = scratch("kube-unreachable");
    let port = closed_port();
    let config = kubeconfig(&dir, "http://127.0.0.1:1", port);
    let out = colony(
        &dir,
        &kube_env(&config, "off"),
        // The current context, `stale`, points at the closed port.
        &[],
    )
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("http://127.0.0.1:{port}"))
            && err.contains("context `stale`")
            && err.to_lowercase().contains("connection refused")
            && err.contains("--dry-run -o yaml"),
        "{err}"
    );
    // A context the kubeconfig lacks is named, with the ones it has.
    let out = colony(&dir, &kube_env(&config, "off"), &["--context", "prod"]).await;
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no context `prod`") && err.contains("fake, stale"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_in_order_with_cert_manager_prunes_and_waits() {
    let dir = scratch("kube-apply");
    let mut state = State {
        crds: vec!["cert-manager.io/v1".to_owned()],
        ready_after: 2,
        ..State::default()
    };
    // Left over from an earlier deploy of this app, and another app's object.
    for (plural, object) in [
        (
            "deployments",
            labelled("Deployment", "apps/v1", "old-service", APP),
        ),
        ("services", labelled("Service", "v1", "old-service", APP)),
        (
            "certificates",
            labelled("Certificate", "cert-manager.io/v1", "old-service", APP),
        ),
        (
            "deployments",
            labelled("Deployment", "apps/v1", "someone-else", "other"),
        ),
        ("services", labelled("Service", "v1", "gateway", APP)),
    ] {
        let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
        state
            .objects
            .insert((plural.to_owned(), APP.to_owned(), name), object);
    }
    let fake = Fake::start(state).await;
    let config = fake.kubeconfig(&dir);
    let env = kube_env(&config, "on");
    let args = ["--context", "fake", "--certs", "cert-manager"];
    let want = manifests(&dir, &env, &args).await;
    let mut apply = args.to_vec();
    apply.extend(["--prune", "--wait", "--timeout", "120s"]);
    let out = colony(&dir, &env, &apply).await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");

    // Every object, applied as generated, by server-side apply as `colony`, forced.
    let patches = fake.requests("PATCH");
    assert_eq!(patches.len(), want.len(), "one apply per object");
    for p in &patches {
        assert_eq!(p.content_type, "application/apply-patch+yaml", "{p:?}");
        assert_eq!(
            p.query.get("fieldManager").map(String::as_str),
            Some("colony")
        );
        assert_eq!(p.query.get("force").map(String::as_str), Some("true"));
        assert!(!p.query.contains_key("dryRun"));
        assert_eq!(p.authorization, "Bearer fake-token", "the context's user");
        assert!(
            want.contains(&p.body),
            "applied as generated: {}",
            p.body["metadata"]["name"]
        );
    }
    // In dependency order, Deployments last.
    let kinds: Vec<&str> = patches
        .iter()
        .filter_map(|p| p.body["kind"].as_str())
        .collect();
    let rank = |k: &str| ORDER.iter().position(|o| *o == k).unwrap_or(usize::MAX);
    assert!(
        kinds.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "{kinds:?}"
    );
    assert_eq!(kinds.first(), Some(&"Namespace"));
    assert_eq!(kinds.last(), Some(&"Deployment"));
    let certificates: Vec<&Value> = patches
        .iter()
        .map(|p| &p.body)
        .filter(|b| b["kind"] == "Certificate")
        .collect();
    assert!(
        certificates
            .iter()
            .any(|c| c["spec"]["uris"][0] == "spiffe://hello/hello/greeter/greet"),
        "{certificates:?}"
    );

    // Pruned: exactly the app's objects it no longer declares.
    for d in fake.requests("DELETE") {
        assert!(!d.dry_run());
        assert_eq!(d.body["propagationPolicy"], "Background", "{d:?}");
    }
    let mut deleted: Vec<(String, String)> = fake
        .requests("DELETE")
        .iter()
        .map(Recorded::target)
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            ("certificates", "old-service"),
            ("deployments", "old-service"),
            ("services", "old-service"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert!(fake.has("deployments", "someone-else"), "another app's");
    assert!(fake.has("services", "gateway"), "declared");
    // Lists select this app's objects by label.
    for list in fake
        .requests("GET")
        .iter()
        .filter(|r| r.query.contains_key("labelSelector"))
    {
        assert_eq!(
            list.query["labelSelector"],
            "app.kubernetes.io/managed-by=colony,app.kubernetes.io/name=hello"
        );
    }

    // Waited until the fake reported the Deployments ready.
    let deployments: Vec<&str> = want
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    for d in &deployments {
        assert!(
            err.contains(&format!("deployment/{d}: ready")),
            "{d} in:\n{err}"
        );
    }
    assert!(err.contains("rolled out"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_kind_names_verb_resource_identity_and_what_was_applied() {
    let dir = scratch("kube-forbidden");
    let fake = Fake::start(State {
        forbid: Some(("patch".to_owned(), "horizontalpodautoscalers".to_owned())),
        ..State::default()
    })
    .await;
    let config = fake.kubeconfig(&dir);
    let env = kube_env(&config, "off");
    let out = colony(&dir, &env, &["--context", "fake"]).await;
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("may not patch horizontalpodautoscalers.autoscaling in namespace `hello`")
            && err.contains("user `tester` (context `fake`)")
            && err
                .contains("kubectl auth can-i patch horizontalpodautoscalers.autoscaling -n hello"),
        "{err}"
    );
    // What was applied is what the fake holds; nothing past the failure was tried.
    let applied_line = err
        .lines()
        .find(|l| l.starts_with("applied before it"))
        .unwrap_or_else(|| panic!("a list of what was applied in:\n{err}"));
    let not_applied = err
        .lines()
        .find(|l| l.starts_with("not applied:"))
        .unwrap_or_else(|| panic!("a list of what was not applied in:\n{err}"));
    let stored: Vec<(String, String)> = fake
        .lock()
        .objects
        .keys()
        .map(|(p, _, n)| (p.clone(), n.clone()))
        .collect();
    assert!(!stored.is_empty());
    for (plural, name) in &stored {
        let kind = match plural.as_str() {
            "namespaces" => "Namespace",
            "serviceaccounts" => "ServiceAccount",
            "networkpolicies" => "NetworkPolicy",
            "services" => "Service",
            "poddisruptionbudgets" => "PodDisruptionBudget",
            other => panic!("{other} should not have been applied yet"),
        };
        assert!(
            applied_line.contains(&format!("{kind} {name}")),
            "{kind} {name} in {applied_line}"
        );
    }
    assert!(
        not_applied.contains("HorizontalPodAutoscaler") && not_applied.contains("Deployment"),
        "{not_applied}"
    );
    assert!(
        !fake
            .requests("PATCH")
            .iter()
            .any(|p| p.body["kind"] == "Deployment"),
        "nothing after the failure"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_the_user_may_not_manage_but_that_exists_is_left_alone() {
    let dir = scratch("kube-nsforbidden");
    let mut state = State {
        forbid: Some(("patch".to_owned(), "namespaces".to_owned())),
        ..State::default()
    };
    state.objects.insert(
        ("namespaces".to_owned(), String::new(), APP.to_owned()),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP}}),
    );
    let fake = Fake::start(state).await;
    let config = fake.kubeconfig(&dir);
    let env = kube_env(&config, "off");
    let out = colony(&dir, &env, &["--context", "fake"]).await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("namespace `hello` exists, but user `tester` may not manage it"),
        "{err}"
    );
    assert!(fake.has("deployments", "gateway"), "the rest applied");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_asks_the_server_and_changes_nothing() {
    let dir = scratch("kube-dryrun");
    let mut state = State::default();
    state.objects.insert(
        ("namespaces".to_owned(), String::new(), APP.to_owned()),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP}}),
    );
    state.objects.insert(
        (
            "deployments".to_owned(),
            APP.to_owned(),
            "old-service".to_owned(),
        ),
        labelled("Deployment", "apps/v1", "old-service", APP),
    );
    let fake = Fake::start(state).await;
    let before: Vec<_> = fake.lock().objects.keys().cloned().collect();
    let config = fake.kubeconfig(&dir);
    let env = kube_env(&config, "off");
    let out = colony(&dir, &env, &["--context", "fake", "--dry-run", "--prune"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let patches = fake.requests("PATCH");
    assert!(patches.len() > 10, "every object checked");
    assert!(patches.iter().all(Recorded::dry_run));
    let deletes = fake.requests("DELETE");
    assert_eq!(deletes.len(), 1);
    assert!(deletes[0].dry_run());
    let after: Vec<_> = fake.lock().objects.keys().cloned().collect();
    assert_eq!(before, after, "nothing changed");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("deployments.apps/hello-greeter-greet accepted (server dry run)")
            && stdout.contains("deployments.apps/old-service pruned (server dry run)"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crds_are_found_before_anything_is_applied() {
    let dir = scratch("kube-nocrd");
    let fake = Fake::start(State::default()).await;
    let config = fake.kubeconfig(&dir);
    let env = kube_env(&config, "on");
    let out = colony(
        &dir,
        &env,
        &["--context", "fake", "--certs", "cert-manager"],
    )
    .await;
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("does not serve cert-manager.io/v1")
            && err.contains("install cert-manager")
            && err.contains("Nothing was applied"),
        "{err}"
    );
    assert!(fake.requests("PATCH").is_empty());

    let out = colony(
        &dir,
        &env,
        &["--context", "fake", "--platform", "openshift"],
    )
    .await;
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("route.openshift.io/v1 Route")
            && err.contains("--platform kubernetes"),
        "{err}"
    );
    assert!(fake.requests("PATCH").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_gives_up_at_the_timeout_and_names_what_is_not_ready() {
    let dir = scratch("kube-timeout");
    let fake = Fake::start(State {
        ready_after: u32::MAX,
        ..State::default()
    })
    .await;
    let config = fake.kubeconfig(&dir);
    let env = kube_env(&config, "off");
    let out = colony(
        &dir,
        &env,
        &["--context", "fake", "--wait", "--timeout", "2s"],
    )
    .await;
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("timed out after 2s")
            && err.contains("gateway (0/2 ready")
            && err.contains("kubectl -n hello describe deployment"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_the_cache_are_applied_waited_for_and_their_data_never_pruned() {
    let dir = scratch("kube-store");
    let app = binary(GUESTBOOK);
    std::fs::write(
        dir.join("colony.toml"),
        "[store]\nsize = \"2Gi\"\n[cache]\n",
    )
    .expect("write");
    let mut state = State {
        ready_after: 3,
        ..State::default()
    };
    // An earlier deploy's store and cache under other names, and the claim the old store's
    // StatefulSet made: labelled as the app's, even `managed-by: colony`, which must not
    // matter.
    let mut claim = labelled("PersistentVolumeClaim", "v1", "data-old-store-0", GUESTBOOK);
    claim["spec"] =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
    for (plural, object) in [
        (
            "statefulsets",
            labelled("StatefulSet", "apps/v1", "old-store", GUESTBOOK),
        ),
        (
            "daemonsets",
            labelled("DaemonSet", "apps/v1", "old-cache", GUESTBOOK),
        ),
        ("persistentvolumeclaims", claim),
    ] {
        let mut object = object;
        object["metadata"]["namespace"] = json!(GUESTBOOK);
        let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
        state
            .objects
            .insert((plural.to_owned(), GUESTBOOK.to_owned(), name), object);
    }
    let fake = Fake::start(state).await;
    let config = fake.kubeconfig(&dir);
    let env = kube_env(&config, "off");
    let args = ["--context", "fake"];
    let want = manifests_of(&app, &dir, &env, &args).await;
    let mut apply = args.to_vec();
    apply.extend(["--prune", "--wait", "--timeout", "120s"]);
    let out = colony_with(&app, &dir, &env, &apply).await;
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");

    // Applied as generated, the cache before the store before the services.
    let patches = fake.requests("PATCH");
    assert_eq!(patches.len(), want.len(), "one apply per object");
    let kinds: Vec<&str> = patches
        .iter()
        .filter_map(|p| p.body["kind"].as_str())
        .collect();
    let rank = |k: &str| ORDER.iter().position(|o| *o == k).unwrap_or(usize::MAX);
    assert!(
        kinds.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "{kinds:?}"
    );
    for kind in ["DaemonSet", "StatefulSet"] {
        assert_eq!(
            kinds.iter().filter(|k| **k == kind).count(),
            1,
            "{kind} in {kinds:?}"
        );
    }
    assert!(fake.has_in(GUESTBOOK, "statefulsets", "colony-store-serve"));
    assert!(fake.has_in(GUESTBOOK, "daemonsets", "guestbook-cache"));

    // Waited for all of them, each by its own kind's status.
    for line in [
        "statefulset/colony-store-serve: ready (1/1)",
        "daemonset/guestbook-cache: ready (3/3)",
        "deployment/gateway: ready",
        "daemonset/guestbook-cache: 1/3 ready",
    ] {
        assert!(err.contains(line), "{line} in:\n{err}");
    }
    assert!(
        err.contains("rolled out: 3 Deployments, 1 StatefulSet, 1 DaemonSet ready"),
        "{err}"
    );
    let status_gets = fake
        .requests("GET")
        .iter()
        .filter(|r| r.path.ends_with("/statefulsets/colony-store-serve"))
        .count();
    assert!(status_gets >= 3, "polled until ready: {status_gets}");

    // Pruned: the old StatefulSet and DaemonSet; the claim is never listed nor deleted.
    let mut deleted: Vec<(String, String)> = fake
        .requests("DELETE")
        .iter()
        .map(Recorded::target)
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        [("daemonsets", "old-cache"), ("statefulsets", "old-store")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert!(
        !fake
            .lock()
            .requests
            .iter()
            .any(|r| r.path.contains("persistentvolumeclaims")),
        "colony never touches a claim"
    );
    assert!(
        fake.has_in(GUESTBOOK, "persistentvolumeclaims", "data-old-store-0"),
        "the data survives"
    );
    assert!(
        err.contains("data-old-store-0") && err.contains("kept"),
        "the prune says where the data is: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_store_disk_is_refused_with_how_to_grow_it() {
    let dir = scratch("kube-store-resize");
    let app = binary(GUESTBOOK);
    let fake = Fake::start(State::default()).await;
    let config = fake.kubeconfig(&dir);
    let env = kube_env(&config, "off");
    let out = colony_with(&app, &dir, &env, &["--context", "fake"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    std::fs::write(dir.join("colony.toml"), "[store]\nsize = \"5Gi\"\n").expect("write");
    let out = colony_with(&app, &dir, &env, &["--context", "fake"]).await;
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("could not apply StatefulSet colony-store-serve")
            && err.contains("cannot change in place")
            && err.contains("kubectl -n guestbook patch pvc data-NAME-0")
            && err.contains("--cascade=orphan"),
        "{err}"
    );
    let stored = fake.lock().objects[&(
        "statefulsets".to_owned(),
        GUESTBOOK.to_owned(),
        "colony-store-serve".to_owned(),
    )]
        .clone();
    assert_eq!(
        stored["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "1Gi",
        "the default size, unchanged"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
