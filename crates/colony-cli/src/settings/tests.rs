//! The settings: resolution and its sources, `colony.toml` errors, storage checks.

use super::storage::quantity_bytes;
use super::*;

fn describe() -> serde_json::Value {
    serde_json::json!({"services": [
        {"name": "a::b", "options": {"min_instances": 2, "max_instances": null, "threads": 3}},
        {"name": "a::c", "options": {}}
    ]})
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn attribute_then_file_then_env() {
    let dir = std::env::temp_dir().join(format!("colony-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("colony.toml"),
        "[cluster]\nheartbeat = \"100ms\"\n[services.\"a::b\"]\nmax_instances = 5\ncooldown = \"2s\"\n",
    )
    .expect("write");
    let env = |k: &str| (k == "COLONY_A_B__MAX_INSTANCES").then(|| "6".to_owned());
    let (cluster, s) = resolve(&describe(), &dir, &env).expect("valid");
    let b = &s["a::b"];
    assert_eq!(cluster.heartbeat_ms, Setting::new(100, Source::ColonyToml));
    assert_eq!(b.min_instances, Setting::new(2, Source::Attribute));
    assert_eq!(b.max_instances, Setting::new(6, Source::Env));
    assert_eq!(b.cooldown_ms, Setting::new(2000, Source::ColonyToml));
    assert_eq!(b.threads, Setting::new(Some(3), Source::Attribute));
    assert_eq!(s["a::c"].min_instances, Setting::new(1, Source::Default));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn mistakes_name_the_field() {
    let dir = std::env::temp_dir().join(format!("colony-settings-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (toml, needle) in [
        (
            "[services.\"a::zz\"]\nmin_instances = 1\n",
            "not a service of this app",
        ),
        ("[services.\"a::b\"]\nmin_instance = 1\n", "min_instance"),
        (
            "[services.\"a::b\"]\nmin_instances = 9\nmax_instances = 3\n",
            "above max_instances",
        ),
        ("[cluster]\nheartbeat = \"soon\"\n", "not a duration"),
        (
            "[services.\"a::b\"]\nprefer_nodes = [\"ssd\"]\n",
            "prefer_nodes entry `ssd` is not key=value",
        ),
        (
            "[services.\"a::b\"]\nprefer_nodes = [\"-bad-=x\"]\n",
            "invalid key",
        ),
        ("this is not toml", "malformed"),
    ] {
        std::fs::write(dir.join("colony.toml"), toml).expect("write");
        let err = resolve(&describe(), &dir, &no_env)
            .expect_err(toml)
            .to_string();
        assert!(err.contains(needle), "{toml:?} gave {err}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// An app like `describe()`'s, with the built-in store service.
fn with_store() -> serde_json::Value {
    serde_json::json!({"services": [
        {"name": "a::b", "options": {}},
        {"name": STORE_SERVICE, "options": {"min_instances": 1, "max_instances": 1}}
    ]})
}

#[test]
fn defaults_do_not_scale_the_store() {
    let dir = std::env::temp_dir().join(format!("colony-settings-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("colony.toml"),
        "[defaults]\nmin_instances = 2\nmax_instances = 4\nthreads = 2\n",
    )
    .expect("write");
    let (_, s) = resolve(&with_store(), &dir, &no_env).expect("valid");
    assert_eq!(s["a::b"].max_instances, Setting::new(4, Source::ColonyToml));
    let store = &s[STORE_SERVICE];
    assert_eq!(store.min_instances, Setting::new(1, Source::Attribute));
    assert_eq!(store.max_instances, Setting::new(1, Source::Attribute));
    assert_eq!(
        store.threads,
        Setting::new(Some(2), Source::ColonyToml),
        "the rest applies"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn sizes_are_kubernetes_quantities() {
    let gib = 1024.0 * 1024.0 * 1024.0;
    assert_eq!(quantity_bytes("1Gi"), Ok(gib));
    assert_eq!(quantity_bytes("1.5Gi"), Ok(1.5 * gib));
    assert_eq!(quantity_bytes("500M"), Ok(5e8));
    assert_eq!(quantity_bytes("1e9"), Ok(1e9));
    assert_eq!(quantity_bytes("1024"), Ok(1024.0));
    for bad in [
        "1GB", "1gi", "Gi", "", "-1Gi", "1..5Gi", "500m", "1e", "1e99", "1 Gi",
    ] {
        assert!(quantity_bytes(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_store_and_the_cache_have_defaults() {
    let dir = std::env::temp_dir().join(format!("colony-storage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _ = std::fs::remove_file(dir.join("colony.toml"));
    let none = storage(&with_store(), &dir).expect("no colony.toml");
    assert_eq!(none.store, StoreSettings::default());
    assert_eq!(none.store.size, "1Gi");
    assert_eq!(none.cache, None, "the cache is opt-in");

    std::fs::write(
        dir.join("colony.toml"),
        "[store]\nsize = \"20Gi\"\nstorage_class = \"fast-ssd\"\n[cache]\n",
    )
    .expect("write");
    let set = storage(&with_store(), &dir).expect("valid");
    assert_eq!(set.store.size, "20Gi");
    assert_eq!(set.store.storage_class.as_deref(), Some("fast-ssd"));
    assert_eq!(
        set.cache,
        Some(CacheSettings {
            image: "memcached:1.6-alpine".to_owned(),
            memory_mb: 64,
            port: 11211,
            max_connections: 1024,
            ttl_secs: None,
        }),
        "[cache] alone turns it on"
    );

    std::fs::write(
        dir.join("colony.toml"),
        "[store]\nstorage_class = \"\"\n[cache]\nenabled = true\nimage = \"mirror.example/memcached:1.6\"\n\
         memory_mb = 512\nport = 11311\nmax_connections = 4096\nttl = \"5m\"\n",
    )
    .expect("write");
    let set = storage(&with_store(), &dir).expect("valid");
    assert_eq!(
        set.store.storage_class.as_deref(),
        Some(""),
        "no class: hand-made volumes"
    );
    let cache = set.cache.expect("on");
    assert_eq!(
        (
            cache.image.as_str(),
            cache.memory_mb,
            cache.port,
            cache.max_connections,
            cache.ttl_secs
        ),
        ("mirror.example/memcached:1.6", 512, 11311, 4096, Some(300))
    );

    std::fs::write(
        dir.join("colony.toml"),
        "[cache]\nenabled = false\nmemory_mb = 128\n",
    )
    .expect("write");
    let off = storage(&describe(), &dir).expect("valid without the store");
    assert_eq!(off.cache, None);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn store_and_cache_mistakes_say_how_to_fix_them() {
    let dir = std::env::temp_dir().join(format!("colony-storage-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (toml, app, needles) in [
        (
            "[store]\nsize = \"2Gi\"\n",
            describe(),
            &[
                "does not have it",
                "features = [\"store\"]",
                "or remove [store]",
            ][..],
        ),
        (
            "[store]\nsize = \"1GB\"\n",
            with_store(),
            &[
                "size = \"1GB\" has a unit Kubernetes does not know",
                "\"1Gi\"",
            ][..],
        ),
        (
            "[store]\nsize = \"10\"\n",
            with_store(),
            &["less than 1Mi"][..],
        ),
        (
            "[store]\nsize = \"500m\"\n",
            with_store(),
            &["thousandths"][..],
        ),
        (
            "[store]\nstorage_class = \"Fast_SSD\"\n",
            with_store(),
            &["not a StorageClass name", "kubectl get storageclass"][..],
        ),
        (
            "[store]\ndatabase_secret = \"Shop DB\"\n",
            with_store(),
            &["not a Secret name", "key `url`"][..],
        ),
        (
            "[store]\ndatabase_secret = \"shop-db\"\nsize = \"5Gi\"\n",
            with_store(),
            &["both database_secret and a disk", "remove size"][..],
        ),
        (
            "[store]\nsize = 5\n",
            with_store(),
            &["malformed", "[store] size, storage_class"][..],
        ),
        (
            "[cache]\nmemory = 64\n",
            describe(),
            &["malformed", "memory_mb"][..],
        ),
        (
            "[cache]\nmemory_mb = 4\n",
            describe(),
            &["memory_mb = 4 is outside 16..1048576"][..],
        ),
        (
            "[cache]\nport = 80\n",
            describe(),
            &["below 1024", "non-root"][..],
        ),
        (
            "[cache]\nimage = \"memcached 1.6\"\n",
            describe(),
            &["not an image reference"][..],
        ),
        (
            "[cache]\nmax_connections = 1\n",
            describe(),
            &["max_connections = 1"][..],
        ),
        (
            "[cache]\nttl = \"1500ms\"\n",
            describe(),
            &["whole number of seconds"][..],
        ),
        (
            "[cache]\nttl = \"soon\"\n",
            describe(),
            &["not a duration"][..],
        ),
    ] {
        std::fs::write(dir.join("colony.toml"), toml).expect("write");
        let err = storage(&app, &dir).expect_err(toml).to_string();
        for needle in needles {
            assert!(err.contains(needle), "{toml:?} gave {err}");
        }
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
