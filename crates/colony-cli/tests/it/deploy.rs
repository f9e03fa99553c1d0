//! `colony deploy k8s` and `colony build`: the generated manifests validate against the
//! official Kubernetes schemas (1.29 and 1.33, with `kubernetes-validate --strict`), snapshots
//! pin their content (with the CA Secret, with cert-manager, and — for `examples/guestbook`,
//! which has the store — with the store's StatefulSet and the cache's DaemonSet), and
//! `colony build` makes an image on the local Docker engine. Applying to a cluster is tested in `kube_apply.rs`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common;

const COLONY: &str = env!("CARGO_BIN_EXE_colony");

use common::{binary, scratch};

/// Compare `got` with the snapshot `tests/snapshots/NAME` (`UPDATE_SNAPSHOTS=1` writes it
/// first); `what` names the manifests in the failure.
fn check_snapshot(name: &str, got: &str, what: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, got).expect("write snapshot");
    }
    let want =
        std::fs::read_to_string(&path).expect("the snapshot exists (UPDATE_SNAPSHOTS=1 writes it)");
    assert!(
        got == want,
        "{what} changed; review and run with UPDATE_SNAPSHOTS=1:\n{got}"
    );
}

/// `colony deploy k8s --dry-run`, printing YAML unless `extra` asks for JSON: no cluster.
fn deploy(dir: &Path, app: &Path, extra: &[&str], tls_off: bool) -> Output {
    let mut cmd = Command::new(COLONY);
    cmd.args(["deploy", "k8s"])
        .arg(dir)
        .arg("--app-binary")
        .arg(app)
        .arg("--dry-run")
        .args(extra)
        .stdin(Stdio::null());
    if !extra.contains(&"-o") {
        cmd.args(["-o", "yaml"]);
    }
    if tls_off {
        cmd.env("COLONY_TLS", "off");
    } else {
        cmd.env_remove("COLONY_TLS");
    }
    cmd.output().expect("colony runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn validate(file: &Path, version: &str) {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", version])
        .arg(file)
        .output()
        .expect(
            "kubernetes-validate is installed (`pip install kubernetes-validate`; .ci/run does it)",
        );
    assert!(
        out.status.success(),
        "{} against {version}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn manifests_validate_against_kubernetes_1_29_and_1_33() {
    for package in ["hello", "colony-e2e"] {
        let dir = scratch(&format!("deploy-{package}"));
        std::fs::write(
            dir.join("colony.toml"),
            "[services.\"hello::names::normalize\"]\nmax_per_host = 1\nthreads = 2\n\
             prefer_nodes = [\"disktype=ssd\", \"topology.kubernetes.io/zone=eu-west-1a\"]\n\
             burst = true\n",
        )
        .expect("write");
        if package == "colony-e2e" {
            std::fs::write(dir.join("colony.toml"), "[groups]\nbasics = [\"colony_e2e::services::basic::echo\", \"colony_e2e::services::basic::add\"]\n")
                .expect("write");
        }
        for (extra, name) in [
            (&[][..], "k8s"),
            (
                &["--platform", "openshift", "--load-balancer"][..],
                "openshift",
            ),
        ] {
            let out = deploy(&dir, &binary(package), extra, false);
            assert!(out.status.success(), "{}", stderr(&out));
            let file = dir.join(format!("{name}.yaml"));
            std::fs::write(&file, &out.stdout).expect("write");
            if package == "hello" {
                // Preferred nodes and burst capacity: weighted node affinity, in order, and
                // a toleration of the burst nodes' taint.
                let yaml = String::from_utf8_lossy(&out.stdout);
                for needle in [
                    "preferredDuringSchedulingIgnoredDuringExecution",
                    "colony.dev/burst",
                    "DoesNotExist",
                    "disktype",
                    "topology.kubernetes.io/zone",
                    "NoSchedule",
                ] {
                    assert!(yaml.contains(needle), "{needle} in:\n{yaml}");
                }
            }
            if name == "k8s" {
                for version in ["1.29.0", "1.33.0"] {
                    validate(&file, version);
                }
            }
        }
        // JSON output is one v1 List.
        let out = deploy(&dir, &binary(package), &["-o", "json"], false);
        let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(list["kind"], "List");
        let kinds: Vec<&str> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|i| i["kind"].as_str())
            .collect();
        for kind in [
            "Namespace",
            "ServiceAccount",
            "Secret",
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Ingress",
            "NetworkPolicy",
        ] {
            assert!(kinds.contains(&kind), "{package}: no {kind} in {kinds:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_snapshot_pins_the_manifests_of_hello() {
    let dir = scratch("deploy-snapshot");
    std::fs::write(
        dir.join("colony.toml"),
        "[services.\"hello::greeter::greet\"]\nmin_instances = 2\nmax_per_host = 1\n",
    )
    .expect("write");
    let out = deploy(&dir, &binary("hello"), &["--image", "hello:test"], true);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    check_snapshot("hello.yaml", &got, "the manifests");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn colliding_names_and_bad_groups_are_reported() {
    let dir = scratch("deploy-collide");
    std::fs::write(
        dir.join("colony.toml"),
        "[groups]\n\"colony_e2e-services-basic-add\" = [\"colony_e2e::services::basic::echo\"]\n",
    )
    .expect("write");
    let out = deploy(&dir, &binary("colony-e2e"), &[], true);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("both become the Kubernetes name `colony-e2e-services-basic-add`"),
        "{}",
        stderr(&out)
    );

    std::fs::write(dir.join("colony.toml"), "[groups]\nx = [\"no::such\"]\n").expect("write");
    let out = deploy(&dir, &binary("colony-e2e"), &[], true);
    assert!(
        stderr(&out).contains("not a service of this app"),
        "{}",
        stderr(&out)
    );

    std::fs::remove_file(dir.join("colony.toml")).expect("remove");
    let out = deploy(
        &dir,
        &binary("colony-e2e"),
        &["--certs", "cert-manager"],
        true,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("mutual TLS, which is off"),
        "{}",
        stderr(&out)
    );
    std::fs::write(dir.join("colony.toml"), "cert_lifetime = \"30m\"\n").expect("write");
    let out = deploy(
        &dir,
        &binary("colony-e2e"),
        &["--certs", "cert-manager"],
        false,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("at least 1h") && stderr(&out).contains("30m"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn store_and_cache_manifests_validate_and_a_snapshot_pins_them() {
    let dir = scratch("deploy-store");
    let app = binary("guestbook");
    std::fs::write(
        dir.join("colony.toml"),
        "[store]\nsize = \"2Gi\"\nstorage_class = \"fast-ssd\"\n\
         [cache]\nmemory_mb = 128\nttl = \"2m\"\n",
    )
    .expect("write");
    let out = deploy(&dir, &app, &["--image", "guestbook:test"], true);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    let file = dir.join("store.yaml");
    std::fs::write(&file, &got).expect("write");
    for version in ["1.29.0", "1.33.0"] {
        validate(&file, version);
    }
    check_snapshot("guestbook.yaml", &got, "the store and cache manifests");

    // The same as JSON: the kinds, and what every pod is told.
    let out = deploy(
        &dir,
        &app,
        &["--image", "guestbook:test", "-o", "json"],
        true,
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let items = list["items"].as_array().expect("items");
    let named = |kind: &str, name: &str| {
        items
            .iter()
            .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
    };
    let sts = named("StatefulSet", "colony-store-serve").expect("the store's StatefulSet");
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "2Gi"
    );
    assert!(named("Deployment", "colony-store-serve").is_none());
    assert!(named("HorizontalPodAutoscaler", "colony-store-serve").is_none());
    assert!(named("DaemonSet", "guestbook-cache").is_some());
    assert!(named("NetworkPolicy", "guestbook-cache").is_some());
    let pods: Vec<&Value> = items
        .iter()
        .filter(|i| i["kind"] == "Deployment" || i["kind"] == "StatefulSet")
        .collect();
    assert_eq!(pods.len(), 4, "two services, the store, the gateway");
    for pod in pods {
        let env = pod["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(
            env.contains("guestbook-cache.guestbook.svc.cluster.local:11211")
                && env.contains("COLONY_CACHE_TTL"),
            "{}: {env}",
            pod["metadata"]["name"]
        );
    }

    // With mutual TLS (the CA Secret, or cert-manager's certificates) and on OpenShift, the
    // store's pod mounts its certificate beside its disk; the built-in kinds still validate.
    let out = deploy(&dir, &app, &["--image", "guestbook:test"], false);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = dir.join("store-tls.yaml");
    std::fs::write(&file, &out.stdout).expect("write");
    for version in ["1.29.0", "1.33.0"] {
        validate(&file, version);
    }
    let out = deploy(
        &dir,
        &app,
        &[
            "--image",
            "guestbook:test",
            "--certs",
            "cert-manager",
            "-o",
            "json",
        ],
        false,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let items = list["items"].as_array().expect("items");
    assert!(
        items.iter().any(|i| i["kind"] == "Certificate"
            && i["metadata"]["name"] == "colony-store-serve"
            && i["spec"]["uris"][0] == "spiffe://guestbook/colony/store/serve"),
        "the store's certificate"
    );
    let out = deploy(
        &dir,
        &app,
        &[
            "--image",
            "guestbook:test",
            "--platform",
            "openshift",
            "-o",
            "json",
        ],
        true,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for item in list["items"].as_array().expect("items") {
        if let Some(security) = item["spec"]["template"]["spec"]["securityContext"].as_object() {
            assert!(
                !security.contains_key("runAsUser") && !security.contains_key("fsGroup"),
                "OpenShift picks the ids: {}",
                item["metadata"]["name"]
            );
        }
    }

    // The store on PostgreSQL: a Deployment told its database by a Secret, no disk.
    std::fs::write(
        dir.join("colony.toml"),
        "[store]\ndatabase_secret = \"guestbook-db\"\n\n\
         [services.\"colony::store::serve\"]\nmax_instances = 3\n",
    )
    .expect("write");
    let out = deploy(&dir, &app, &["--image", "guestbook:test"], true);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = dir.join("store-postgres.yaml");
    std::fs::write(&file, &out.stdout).expect("write");
    for version in ["1.29.0", "1.33.0"] {
        validate(&file, version);
    }
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(!yaml.contains("kind: StatefulSet"), "{yaml}");
    assert!(yaml.contains("name: guestbook-db"), "{yaml}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn store_and_cache_mistakes_are_reported() {
    let dir = scratch("deploy-store-bad");
    let app = binary("guestbook");
    for (toml, app, needles) in [
        (
            "[store]\nsize = \"2Gi\"\n",
            binary("hello"),
            &["this app does not have it", "features = [\"store\"]"][..],
        ),
        (
            "[groups]\nall = [\"guestbook::book::sign\", \"colony::store::serve\"]\n",
            app.clone(),
            &["must run alone", "Remove it from [groups]"][..],
        ),
        (
            "[services.\"colony::store::serve\"]\nmax_instances = 2\n",
            app.clone(),
            &[
                "exactly one instance",
                "max_instances is 2 (from colony.toml)",
            ][..],
        ),
        (
            "[store]\nsize = \"1GB\"\n",
            app.clone(),
            &["size = \"1GB\"", "\"1Gi\""][..],
        ),
        (
            "[cache]\nport = 443\n",
            app.clone(),
            &["port = 443 is below 1024"][..],
        ),
    ] {
        std::fs::write(dir.join("colony.toml"), toml).expect("write");
        let out = deploy(&dir, &app, &[], true);
        assert!(!out.status.success(), "{toml}");
        for needle in needles {
            assert!(stderr(&out).contains(needle), "{toml}: {}", stderr(&out));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cert-manager objects (CRD kinds) that kubernetes-validate has no schemas for.
const CRD_GROUPS: &[&str] = &["cert-manager.io/"];

#[test]
fn cert_manager_manifests_validate_and_a_snapshot_pins_them() {
    let dir = scratch("deploy-cert-manager");
    std::fs::write(
        dir.join("colony.toml"),
        "cert_lifetime = \"12h\"\ncert_renew_before = \"4h\"\n\
         [groups]\nnames = [\"hello::names::normalize\", \"hello::names::count_letters\"]\n",
    )
    .expect("write");
    let out = deploy(
        &dir,
        &binary("hello"),
        &[
            "--image",
            "hello:test",
            "--certs",
            "cert-manager",
            "-o",
            "json",
        ],
        false,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut items = list["items"].as_array().cloned().expect("items");

    // The CA is generated per directory: the snapshot holds a placeholder.
    for item in &mut items {
        if item["kind"] == "Secret" {
            assert_eq!(
                item["type"], "kubernetes.io/tls",
                "the CA issuer reads a TLS Secret"
            );
            for (key, placeholder) in [
                ("tls.crt", "<the cluster CA certificate, PEM>"),
                ("tls.key", "<the cluster CA key, PEM>"),
            ] {
                assert!(
                    item["stringData"][key]
                        .as_str()
                        .is_some_and(|pem| pem.starts_with("-----BEGIN")),
                    "{key}"
                );
                item["stringData"][key] = Value::from(placeholder);
            }
        }
    }
    // Every pod mounts its own certificate and never the CA key.
    let certificates: Vec<&Value> = items
        .iter()
        .filter(|i| i["kind"] == "Certificate")
        .collect();
    let deployments: Vec<&Value> = items.iter().filter(|i| i["kind"] == "Deployment").collect();
    assert_eq!(certificates.len(), deployments.len(), "one per Deployment");
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().expect("name");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"][0]["secret"]["secretName"],
            format!("{name}-tls")
        );
        let env = pod["containers"][0]["env"].to_string();
        assert!(
            env.contains("COLONY_TLS_CERT") && !env.contains("COLONY_CA_DIR"),
            "{env}"
        );
        let cert = certificates
            .iter()
            .find(|c| c["metadata"]["name"] == name)
            .expect("its certificate");
        assert_eq!(cert["spec"]["duration"], "12h");
        assert_eq!(cert["spec"]["renewBefore"], "4h");
    }
    let gateway = certificates
        .iter()
        .find(|c| c["metadata"]["name"] == "gateway")
        .expect("the gateway's");
    assert_eq!(gateway["spec"]["uris"][0], "spiffe://hello/-/gateway");
    let group = certificates
        .iter()
        .find(|c| c["metadata"]["name"] == "names")
        .expect("the group's");
    assert_eq!(
        group["spec"]["uris"],
        serde_json::json!([
            "spiffe://hello/hello/names/normalize",
            "spiffe://hello/hello/names/count_letters"
        ])
    );

    // Built-in kinds validate; the cert-manager kinds are skipped here on purpose (no CRD
    // schemas in kubernetes-validate).
    let builtin: Vec<&Value> = items
        .iter()
        .filter(|i| {
            let v = i["apiVersion"].as_str().unwrap_or_default();
            !CRD_GROUPS.iter().any(|g| v.starts_with(g))
        })
        .collect();
    assert!(
        builtin.len() + certificates.len() + 1 == items.len(),
        "only the Issuer and Certificates skipped"
    );
    let file = dir.join("builtin.yaml");
    let docs: Vec<String> = builtin.iter().map(|i| format!("---\n{i}\n")).collect();
    std::fs::write(&file, docs.concat()).expect("write");
    for version in ["1.29.0", "1.33.0"] {
        validate(&file, version);
    }

    let got = serde_json::to_string_pretty(&items).expect("JSON") + "\n";
    check_snapshot(
        "hello-cert-manager.json",
        &got,
        "the cert-manager manifests",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn colony_build_makes_an_image_that_runs() {
    let dir = scratch("deploy-build");
    let app = binary("hello");
    // The build context alone, for other builders.
    let out = Command::new(COLONY)
        .args(["build"])
        .arg(&dir)
        .arg("--app-binary")
        .arg(&app)
        .arg("--dockerfile-only")
        .arg(dir.join("context"))
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let dockerfile = std::fs::read_to_string(dir.join("context/Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains("FROM scratch") && dockerfile.contains("USER 65532:65532"),
        "{dockerfile}"
    );

    let tag = format!("colony-test-hello:{}", std::process::id());
    let out = Command::new(COLONY)
        .args(["build"])
        .arg(&dir)
        .arg("--app-binary")
        .arg(&app)
        .args(["--tag", &tag])
        .output()
        .expect("runs");
    assert!(out.status.success(), "colony build: {}", stderr(&out));
    let run = Command::new("docker")
        .args(["run", "--rm", &tag, "describe"])
        .output()
        .expect("docker runs");
    let user = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{index .Config.Labels \"dev.colony.app\"}}",
            &tag,
        ])
        .output()
        .expect("docker runs");
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", &tag])
        .output();
    assert_eq!(
        String::from_utf8_lossy(&user.stdout).trim(),
        "65532:65532 hello",
        "runs as non-root, labelled"
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let doc: Value =
        serde_json::from_slice(&run.stdout).expect("describe JSON from inside the image");
    assert_eq!(doc["services"].as_array().map(Vec::len), Some(3));
    let _ = std::fs::remove_dir_all(&dir);
}
