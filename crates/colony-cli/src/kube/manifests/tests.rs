//! Unit tests of the manifests: durations as Go reads them, certificate lifetimes, DNS
//! names, the store's StatefulSet and single writer, the store on PostgreSQL, the cache
//! tier. The snapshot tests (`tests/deploy.rs`) pin the whole output.

use super::security::go_duration;
use super::*;

#[test]
fn durations_are_written_as_go_reads_them() {
    assert_eq!(go_duration(Duration::from_secs(24 * 3600)), "24h");
    assert_eq!(go_duration(Duration::from_secs(90 * 60)), "90m");
    assert_eq!(go_duration(Duration::from_secs(3601)), "3601s");
}

#[test]
fn certificate_lifetimes_follow_the_instances_rules() {
    let dir = std::env::temp_dir().join(format!("colony-lifetime-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let none = |_: &str| None;
    let _ = std::fs::remove_file(dir.join("colony.toml"));
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(
        cert_lifetime(&dir, &none).expect("defaults"),
        (day, Duration::from_secs(8 * 3600))
    );
    std::fs::write(dir.join("colony.toml"), "cert_lifetime = \"6h\"\n").expect("write");
    assert_eq!(
        cert_lifetime(&dir, &none).expect("file"),
        (Duration::from_secs(6 * 3600), Duration::from_secs(2 * 3600))
    );
    let env = |k: &str| (k == "COLONY_CERT_RENEW_BEFORE").then(|| "1h".to_owned());
    assert_eq!(
        cert_lifetime(&dir, &env).expect("env wins"),
        (Duration::from_secs(6 * 3600), Duration::from_secs(3600))
    );
    let env = |k: &str| (k == "COLONY_CERT_RENEW_BEFORE").then(|| "7h".to_owned());
    assert!(cert_lifetime(&dir, &env).is_err(), "margin past lifetime");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn names_become_dns_labels() {
    assert_eq!(dns_label("shop::pricing::quote"), "shop-pricing-quote");
    assert_eq!(dns_label("a::b_c"), "a-b-c");
    assert_eq!(dns_label("9lives::x"), "s-9lives-x");
    let long = "a".repeat(100);
    let l = dns_label(&long);
    assert!(l.len() <= 63 && l.starts_with('a'));
    assert_ne!(dns_label(&format!("{long}x")), l);
}

/// An app with one service and the store, and its settings as `colony.toml`-less
/// resolution gives them (`env` overrides).
fn app_with_store(
    env: &dyn Fn(&str) -> Option<String>,
) -> (Value, BTreeMap<String, ServiceSettings>) {
    let describe = json!({"app": "shop", "services": [
        {"name": "shop::cart::add", "exposed": true, "options": {}},
        {"name": STORE_SERVICE, "exposed": false, "options": {"min_instances": 1, "max_instances": 1}},
    ]});
    let dir = std::env::temp_dir().join(format!("colony-deploy-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (_, settings) = crate::settings::resolve(&describe, &dir, env).expect("settings");
    let _ = std::fs::remove_dir_all(&dir);
    (describe, settings)
}

fn options(cache: Option<CacheSettings>) -> Options {
    Options {
        app: "shop".to_owned(),
        namespace: "shop-ns".to_owned(),
        image: "shop:test".to_owned(),
        platform: Platform::Kubernetes,
        load_balancer: false,
        ca: None,
        certs: Certs::Secret,
        cert_lifetime: (
            Duration::from_secs(24 * 3600),
            Duration::from_secs(8 * 3600),
        ),
        store: StoreSettings {
            size: "5Gi".to_owned(),
            storage_class: Some("fast-ssd".to_owned()),
            database_secret: None,
        },
        cache,
    }
}

fn cache() -> CacheSettings {
    CacheSettings {
        image: "memcached:1.6-alpine".to_owned(),
        memory_mb: 64,
        port: 11211,
        max_connections: 1024,
        ttl_secs: Some(30),
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn the_store_runs_as_one_stateful_pod_with_its_disk() {
    let (describe, settings) = app_with_store(&no_env);
    let objects =
        manifests(&describe, &settings, &BTreeMap::new(), &options(None)).expect("manifests");
    let name = "colony-store-serve";
    assert!(
        find(&objects, "Deployment", name).is_none(),
        "no Deployment for the store"
    );
    assert!(
        find(&objects, "HorizontalPodAutoscaler", name).is_none(),
        "fixed at one writer: no autoscaler"
    );
    let sts = find(&objects, "StatefulSet", name).expect("a StatefulSet");
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["serviceName"], "colony-store-serve-headless");
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
        "Retain"
    );
    let claim = &spec["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "5Gi");
    assert_eq!(claim["spec"]["storageClassName"], "fast-ssd");
    assert!(
        claim["metadata"]["labels"]
            .get("app.kubernetes.io/managed-by")
            .is_none(),
        "claims are not colony's to prune"
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["fsGroup"], 65532,
        "the non-root user writes the disk"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["args"][2], STORE_SERVICE);
    assert!(
        container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .contains(&json!({"name": "data", "mountPath": "/var/lib/colony"}))
    );
    assert!(
        container["env"]
            .as_array()
            .expect("env")
            .contains(&json!({"name": "COLONY_STORE_PATH", "value": "/var/lib/colony/store.redb"}))
    );
    assert!(container["readinessProbe"].is_object() && container["livenessProbe"].is_object());
    assert!(
        !objects
            .iter()
            .any(|o| o.to_string().contains("COLONY_CACHE")),
        "the cache is off"
    );
    // Its Services and budget are those of any service.
    for kind in ["Service", "PodDisruptionBudget"] {
        assert!(find(&objects, kind, name).is_some(), "{kind}");
    }
    assert!(find(&objects, "Service", "colony-store-serve-headless").is_some());
    let pdb = find(&objects, "PodDisruptionBudget", name).expect("a budget");
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 1,
        "a drain may move the store"
    );
    // Everyone else finds it through the headless Service.
    let peers = container["env"].to_string();
    assert!(
        peers.contains(
            "colony::store::serve=colony-store-serve-headless.shop-ns.svc.cluster.local:7700"
        ),
        "{peers}"
    );
    // The other service is unchanged: a Deployment with its autoscaler.
    assert!(find(&objects, "Deployment", "shop-cart-add").is_some());
    assert!(find(&objects, "HorizontalPodAutoscaler", "shop-cart-add").is_some());

    // No class: the cluster's default StorageClass takes the claim.
    let mut opts = options(None);
    opts.store.storage_class = None;
    let objects = manifests(&describe, &settings, &BTreeMap::new(), &opts).expect("manifests");
    let sts = find(&objects, "StatefulSet", name).expect("a StatefulSet");
    assert!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]
            .get("storageClassName")
            .is_none()
    );
}

#[test]
fn the_store_runs_alone_and_once() {
    let (describe, settings) = app_with_store(&no_env);
    let groups = BTreeMap::from([(
        "together".to_owned(),
        vec!["shop::cart::add".to_owned(), STORE_SERVICE.to_owned()],
    )]);
    let err = manifests(&describe, &settings, &groups, &options(None))
        .expect_err("the store in a group")
        .to_string();
    assert!(
        err.contains("must run alone") && err.contains("[groups]"),
        "{err}"
    );

    let env = |k: &str| (k == "COLONY_COLONY_STORE_SERVE__MAX_INSTANCES").then(|| "3".to_owned());
    let (describe, settings) = app_with_store(&env);
    let err = manifests(&describe, &settings, &BTreeMap::new(), &options(None))
        .expect_err("three writers")
        .to_string();
    assert!(
        err.contains("exactly one instance")
            && err.contains("max_instances is 3 (from the environment)")
            && err.contains("COLONY_COLONY_STORE_SERVE__MAX_INSTANCES"),
        "{err}"
    );
}

#[test]
fn a_store_on_postgres_is_an_autoscaled_deployment_told_its_database_by_a_secret() {
    let env = |k: &str| (k == "COLONY_COLONY_STORE_SERVE__MAX_INSTANCES").then(|| "4".to_owned());
    let (describe, settings) = app_with_store(&env);
    let mut opts = options(None);
    opts.store = StoreSettings {
        database_secret: Some("shop-db".to_owned()),
        ..StoreSettings::default()
    };
    let objects = manifests(&describe, &settings, &BTreeMap::new(), &opts)
        .expect("four instances on a database are fine");
    let name = "colony-store-serve";
    assert!(find(&objects, "StatefulSet", name).is_none(), "no disk");
    let deployment = find(&objects, "Deployment", name).expect("a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_array().expect("env");
    let url = env
        .iter()
        .find(|e| e["name"] == "COLONY_STORE_URL")
        .expect("the database's URL");
    assert_eq!(
        url["valueFrom"]["secretKeyRef"],
        json!({"name": "shop-db", "key": "url"})
    );
    assert!(env.iter().all(|e| e["name"] != "COLONY_STORE_PATH"));
    assert!(
        container["volumeMounts"]
            .as_array()
            .is_none_or(|m| m.iter().all(|m| m["name"] != "data"))
    );
    let hpa = find(&objects, "HorizontalPodAutoscaler", name).expect("an autoscaler");
    assert_eq!(hpa["spec"]["maxReplicas"], 4);
}

#[test]
fn the_cache_is_a_daemon_set_that_every_pod_is_told_about() {
    let (describe, settings) = app_with_store(&no_env);
    let objects = manifests(
        &describe,
        &settings,
        &BTreeMap::new(),
        &options(Some(cache())),
    )
    .expect("manifests");
    let ds = find(&objects, "DaemonSet", "shop-cache").expect("a DaemonSet");
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "memcached:1.6-alpine");
    assert_eq!(
        container["args"],
        json!(["-m", "64", "-p", "11211", "-U", "0", "-c", "1024"])
    );
    assert_eq!(
        container["readinessProbe"]["tcpSocket"]["port"],
        "memcached"
    );
    assert_eq!(container["resources"]["limits"]["memory"], "120Mi");
    assert_eq!(
        ds["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    let svc = find(&objects, "Service", "shop-cache").expect("its Service");
    assert_eq!(
        svc["spec"]["clusterIP"], "None",
        "headless: one address per node"
    );
    let policy = find(&objects, "NetworkPolicy", "shop-cache").expect("its NetworkPolicy");
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "shop"}),
        "only the app's own pods"
    );
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "cache"
    );
    // Every Colony pod: the services, the store and the gateway.
    let pods: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
        .collect();
    assert_eq!(pods.len(), 3, "a service, the store, the gateway");
    for o in pods {
        let env = o["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env");
        assert!(
            env.contains(&json!({"name": "COLONY_CACHE", "value": "shop-cache.shop-ns.svc.cluster.local:11211"}))
                && env.contains(&json!({"name": "COLONY_CACHE_TTL", "value": "30s"})),
            "{}: {env:?}",
            o["metadata"]["name"]
        );
    }

    // A service whose name would be the cache's.
    let describe = json!({"app": "shop", "services": [{"name": "shop::cache", "options": {}}]});
    let dir = std::env::temp_dir().join(format!("colony-deploy-clash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (_, settings) = crate::settings::resolve(&describe, &dir, &no_env).expect("settings");
    let _ = std::fs::remove_dir_all(&dir);
    let err = manifests(
        &describe,
        &settings,
        &BTreeMap::new(),
        &options(Some(cache())),
    )
    .expect_err("a clash")
    .to_string();
    assert!(err.contains("clash with the cache tier"), "{err}");
    assert!(
        manifests(&describe, &settings, &BTreeMap::new(), &options(None)).is_ok(),
        "no cache, no clash"
    );
}
