//! The store: tables, versions, compare-and-swap, paging, values too large.
use super::{Store, StoreError};

#[tokio::test]
async fn a_table_keeps_typed_values_with_versions() {
    assert!(super::open_in_memory());
    assert!(!super::is_unhealthy(), "a store that writes is healthy");
    let t = Store::app().table::<(String, u32), Vec<String>>("typed");
    let key = ("a".to_owned(), 7);
    assert_eq!(t.get(&key).await, Ok(None));
    let v1 = t.insert(&key, &vec!["x".into()]).await.expect("inserts");
    assert!(matches!(
        t.insert(&key, &vec![]).await,
        Err(StoreError::Conflict { current: Some(c) }) if c == v1
    ));
    let v2 = t
        .replace(&key, v1, &vec!["x".into(), "y".into()])
        .await
        .expect("replaces");
    assert!(matches!(
        t.replace(&key, v1, &vec![]).await,
        Err(StoreError::Conflict { current: Some(c) }) if c == v2
    ));
    let got = t.get(&key).await.expect("reads").expect("found");
    assert_eq!(got.version, v2);
    assert_eq!(got.value, vec!["x".to_owned(), "y".to_owned()]);
    // The same key in another table is another value.
    let other = Store::app().table::<(String, u32), Vec<String>>("other");
    assert_eq!(other.get(&key).await, Ok(None));
    assert!(t.remove(&key).await.expect("removes"));
    assert!(!t.remove(&key).await.expect("removes nothing"));
    assert_eq!(t.get(&key).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_lose_no_increment() {
    assert!(super::open_in_memory());
    let t = Store::app().table::<String, u64>("counters");
    let key = "hits".to_owned();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (t, key) = (t.clone(), key.clone());
            tokio::spawn(async move { t.update(&key, |n| n.copied().unwrap_or(0) + 1).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("updated");
    }
    assert_eq!(t.get(&key).await.expect("reads").map(|v| v.value), Some(40));
}

#[tokio::test]
async fn a_scan_pages_through_one_table_and_no_other() {
    assert!(super::open_in_memory());
    let t = Store::app().table::<u32, String>("scan");
    // Names that share a start with "scan" are other tables.
    let other = Store::app().table::<u32, String>("scanner");
    let short = Store::app().table::<u32, String>("sca");
    for i in 0..25u32 {
        t.put(&i, &format!("v{i}")).await.expect("writes");
        other.put(&i, &"other".to_owned()).await.expect("writes");
    }
    short.put(&1, &"short".to_owned()).await.expect("writes");
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = t.scan(after.as_ref(), 10).await.expect("scans");
        pages += 1;
        assert!(page.entries.len() <= 10);
        for (k, v) in &page.entries {
            assert_eq!(v.value, format!("v{k}"));
        }
        after = page.entries.last().map(|(k, _)| *k);
        seen.extend(page.entries.into_iter().map(|(k, _)| k));
        if !page.more {
            break;
        }
    }
    assert!(pages >= 3, "{pages} pages");
    seen.sort_unstable();
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
    let empty = Store::app().table::<u32, String>("never-written");
    let page = empty.scan(None, 10).await.expect("scans");
    assert!(page.entries.is_empty() && !page.more);
}

#[tokio::test]
async fn too_large_and_undecodable_values_are_clear_errors() {
    assert!(super::open_in_memory());
    let t = Store::app().table::<String, Vec<u8>>("big");
    let err = t
        .put(&"k".into(), &vec![0; super::MAX_VALUE + 1])
        .await
        .expect_err("too large");
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("split it"), "{err}");
    t.put(&"k".into(), &vec![0xff, 0xfe]).await.expect("writes");
    // Not UTF-8.
    let as_string = Store::app().table::<String, String>("big");
    let err = as_string
        .get(&"k".into())
        .await
        .expect_err("does not decode");
    assert!(matches!(err, StoreError::Decode { .. }), "{err}");
}
