//! State: a typed key-value store with versions, shared by every instance of the app.
//!
//! Owns: [`Store`] and [`Table`], the API services use; the built-in service
//! `colony::store::serve`, which holds the durable tier (an embedded, crash-safe file) in
//! whichever instance hosts it; and the client side of the cache tier (memcached, named by
//! `COLONY_CACHE`). Promises: every value has a version, a number no other write of the
//! store ever had; a write the store acknowledged is on disk and survives a `kill -9` of
//! any instance, the store's own included; [`Table::replace`] and [`Table::insert`] succeed
//! only against the version (or absence) they name, so two writers cannot both win; the
//! cache tier never decides a write. Must not touch: sockets other than the cache's (the
//! durable tier is reached by an ordinary Colony call).
//!
//! Where things live:
//!
//! - `APP run` (one process): the store is in the process, in `.colony/store.redb` under
//!   the working directory (or `COLONY_STORE_PATH`).
//! - `colony up`: one instance hosts `colony::store::serve`, its file in the app's
//!   `.colony/`; every other instance reaches it with a call.
//! - Kubernetes (`colony deploy k8s`): a StatefulSet with a PersistentVolumeClaim, and the
//!   cache tier as a memcached DaemonSet when `[cache]` is on in `colony.toml`.
//!
//! ```
//! use colony::store::{Store, StoreError};
//! use colony::ServiceError;
//!
//! #[colony::microservice]
//! async fn visit(page: String) -> Result<u64, ServiceError> {
//!     let visits = Store::app().table::<String, u64>("visits");
//!     // Read, change, write back with compare-and-swap; retried on a conflict.
//!     let now = visits.update(&page, |n| n.copied().unwrap_or(0) + 1).await?;
//!     Ok(now.value)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! colony::testing::store_in_memory();
//! assert_eq!(visit("home".into()).await, Ok(1));
//! assert_eq!(visit("home".into()).await, Ok(2));
//! # }
//! ```

mod cache;
mod embedded;
#[cfg(feature = "store-postgres")]
mod postgres;

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, ServiceError};
use crate::service::Wire;
use cache::Cache;
use embedded::Embedded;

/// The largest value (encoded) the store keeps, in bytes: 1 MiB, memcached's default item
/// limit too.
pub const MAX_VALUE: usize = 1024 * 1024;

/// How many times [`Table::update`] re-reads and retries after a conflict.
const UPDATE_TRIES: usize = 64;

/// A value and the version it was written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<V> {
    /// The version: pass it to [`Table::replace`] to write only if nothing changed since.
    pub version: u64,
    /// The value.
    pub value: V,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key's version was not the one the write expected (or the key existed, for
    /// [`Table::insert`]): someone else wrote first. Read again and retry.
    #[error(
        "the value changed since it was read (now at {}): read it again and retry",
        current.map_or("no value".to_owned(), |v| format!("version {v}"))
    )]
    Conflict {
        /// The key's version now; `None` when it has no value.
        current: Option<u64>,
    },
    /// The encoded value is larger than [`MAX_VALUE`].
    #[error(
        "a value of {size} bytes is larger than the store's limit of {limit} bytes: split it over several keys"
    )]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A stored value does not decode as the table's value type: the type changed since it
    /// was written.
    #[error(
        "a stored value of table `{table}` does not decode as its type ({reason}): was the type changed?"
    )]
    Decode {
        /// The table.
        table: String,
        /// What the decoder said.
        reason: String,
    },
    /// The store service could not be reached or failed.
    #[error("the store failed: {0}")]
    Service(ServiceError),
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> ServiceError {
        match err {
            StoreError::Service(e) => e,
            e @ StoreError::Conflict { .. } => ServiceError::conflict(e),
            e @ StoreError::TooLarge { .. } => ServiceError::invalid_argument(e),
            e @ StoreError::Decode { .. } => ServiceError::internal(e),
        }
    }
}

/// The condition a write holds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[doc(hidden)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// Write only if the key has no value.
    Absent,
    /// Write only if the key is at this version.
    Version(u64),
}

/// A request to the store service.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[doc(hidden)]
pub enum Op {
    /// Read a key.
    Get {
        /// The encoded key.
        key: Vec<u8>,
    },
    /// Write (or, with no value, delete) a key if the expectation holds.
    Swap {
        /// The encoded key.
        key: Vec<u8>,
        /// What the key must be at.
        expect: Expect,
        /// The new value; `None` deletes.
        value: Option<Vec<u8>>,
    },
    /// Read the keys that start with `prefix`, in byte order, after `after`.
    Scan {
        /// The encoded table name.
        prefix: Vec<u8>,
        /// The last key of the previous page.
        after: Option<Vec<u8>>,
        /// The most entries to return (the store caps it at [`MAX_PAGE`]).
        limit: u32,
    },
}

/// The most entries one [`Table::scan`] page holds.
pub const MAX_PAGE: usize = 1000;

/// The most value bytes one page carries: a page stops early past it.
const PAGE_BYTES: usize = 4 * MAX_VALUE;

/// The store service's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[doc(hidden)]
pub enum Reply {
    /// What a `Get` found: version and bytes.
    Found(Option<(u64, Vec<u8>)>),
    /// A `Swap` went through.
    Done {
        /// The new version; `None` after a delete.
        version: Option<u64>,
        /// The version it replaced; `None` if the key had no value.
        previous: Option<u64>,
    },
    /// A `Swap`'s expectation did not hold.
    Conflict {
        /// The key's version now.
        current: Option<u64>,
    },
    /// What a `Scan` found: (key, version, value), in key order.
    Entries {
        /// The entries.
        entries: Vec<(Vec<u8>, u64, Vec<u8>)>,
        /// More entries follow the last one.
        more: bool,
    },
}

/// The full name of the built-in store service.
pub(crate) const SERVICE: &str = "colony::store::serve";

/// Open this process's store now (it hosts the store service).
pub(crate) async fn open() -> Result<(), String> {
    durable()
        .await
        .map(|_| ())
        .map_err(|e| e.message().to_owned())
}

/// The durable tier: the embedded file, or PostgreSQL.
enum Durable {
    /// A redb file (or memory), written by this process alone.
    Embedded(Embedded),
    /// A PostgreSQL database, shared by every instance of the store service.
    #[cfg(feature = "store-postgres")]
    Postgres(postgres::Postgres),
}

impl Durable {
    /// Where the values live, for messages.
    fn place(&self) -> &str {
        match self {
            Durable::Embedded(e) => &e.place,
            #[cfg(feature = "store-postgres")]
            Durable::Postgres(p) => &p.place,
        }
    }

    async fn get(&self, key: Vec<u8>) -> Result<Option<(u64, Vec<u8>)>, ServiceError> {
        match self {
            Durable::Embedded(e) => e.get(key).await,
            #[cfg(feature = "store-postgres")]
            Durable::Postgres(p) => p.get(&key).await.map_err(ServiceError::internal),
        }
    }

    async fn scan(
        &self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Reply, ServiceError> {
        let (entries, more) = match self {
            Durable::Embedded(e) => e.scan(prefix, after, limit, PAGE_BYTES).await,
            #[cfg(feature = "store-postgres")]
            Durable::Postgres(p) => p
                .scan(&prefix, after.as_deref(), limit, PAGE_BYTES)
                .await
                .map_err(ServiceError::internal),
        }?;
        Ok(Reply::Entries { entries, more })
    }

    async fn swap(
        &self,
        key: Vec<u8>,
        expect: Expect,
        value: Option<Vec<u8>>,
    ) -> Result<Reply, ServiceError> {
        match self {
            Durable::Embedded(e) => e.swap(key, expect, value).await,
            #[cfg(feature = "store-postgres")]
            Durable::Postgres(p) => p
                .swap(&key, expect, value.as_deref())
                .await
                .map_err(ServiceError::internal),
        }
    }

    /// Whether it cannot write now (see [`is_unhealthy`]).
    fn is_unhealthy(&self) -> bool {
        match self {
            Durable::Embedded(e) => e.is_unhealthy(),
            #[cfg(feature = "store-postgres")]
            Durable::Postgres(_) => false,
        }
    }
}

/// Whether this process's durable tier cannot write now: the embedded file's last commit
/// of writes failed (a full disk, say) and none has succeeded since; its writer reopens
/// the file meanwhile, and a store that gets no writes keeps saying so until its next
/// write commits. Writes meanwhile fail with `Unavailable` (503, retryable); reads may too, while
/// the file is closed. `false` when this process does not host the store, or keeps it in
/// PostgreSQL (whose own health is the database's).
///
/// For the instance's heartbeat and health check, so that the orchestrator can tell that
/// the store instance is up but cannot write; not wired there yet.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the heartbeat and health check will read it")
)]
pub(crate) fn is_unhealthy() -> bool {
    DURABLE.get().is_some_and(Durable::is_unhealthy)
}

/// The durable tier of this process, opened on first use by the instance that hosts the
/// store service (a failure is not kept: the next use tries again).
static DURABLE: tokio::sync::OnceCell<Durable> = tokio::sync::OnceCell::const_new();

async fn durable() -> Result<&'static Durable, ServiceError> {
    DURABLE
        .get_or_try_init(|| async {
            let opened = open_from_env().await;
            match &opened {
                Ok(store) => tracing::info!(store = %store.place(), "store opened"),
                Err(e) => tracing::error!(error = %e, "the store cannot open"),
            }
            opened
        })
        .await
        .map_err(|e| ServiceError::new(ErrorKind::Unavailable, e))
}

/// The database named by `COLONY_STORE_URL`, else the file named by `COLONY_STORE_PATH`
/// (`memory` for one that lives in memory), else `.colony/store.redb` in the working
/// directory.
async fn open_from_env() -> Result<Durable, String> {
    let env = crate::config::env();
    if let Some(url) = &env.store_url {
        #[cfg(feature = "store-postgres")]
        return postgres::Postgres::open(url).await.map(Durable::Postgres);
        #[cfg(not(feature = "store-postgres"))]
        return Err(format!(
            "COLONY_STORE_URL names a database ({} characters), but this binary was built \
             without colony's `store-postgres` feature: add the feature, or unset \
             COLONY_STORE_URL to keep the store in a file",
            url.len()
        ));
    }
    let path = env
        .store_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(".colony").join("store.redb"));
    if path.as_os_str() == "memory" {
        Embedded::memory().map(Durable::Embedded)
    } else {
        Embedded::open(&path).map(Durable::Embedded)
    }
}

/// The durable store: a built-in service, hosted by one instance, which every other
/// instance calls. Not for direct use: go through [`Store`].
#[crate::microservice(min_instances = 1, max_instances = 1, timeout = "10s")]
#[doc(hidden)]
pub async fn serve(op: Op) -> Result<Reply, ServiceError> {
    let store = durable().await?;
    match op {
        Op::Get { key } => store.get(key).await.map(Reply::Found),
        Op::Scan {
            prefix,
            after,
            limit,
        } => {
            let limit = (limit as usize).clamp(1, MAX_PAGE);
            store.scan(prefix, after, limit).await
        }
        Op::Swap { key, expect, value } => {
            if let Some(v) = &value
                && v.len() > MAX_VALUE
            {
                return Err(ServiceError::invalid_argument(StoreError::TooLarge {
                    size: v.len(),
                    limit: MAX_VALUE,
                }));
            }
            store.swap(key, expect, value).await
        }
    }
}

/// The app's store: tables of typed values, each with a version.
///
/// Values live in the durable tier (the store service). When the process has a cache tier,
/// [`Table::get_cached`] reads through it. It comes from the environment: `COLONY_CACHE`
/// (`host:port,...`: memcached servers; a name that resolves to several addresses, such as
/// a Kubernetes headless Service, is one server per address) and `COLONY_CACHE_TTL`
/// (seconds an entry lives, default 60).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Store;

/// The process's cache tier, set up at first use.
static CACHE: tokio::sync::OnceCell<Option<Arc<Cache>>> = tokio::sync::OnceCell::const_new();

/// The cache tier of this process, if `COLONY_CACHE` names one.
async fn cache() -> Option<&'static Arc<Cache>> {
    CACHE
        .get_or_init(|| async {
            let env = crate::config::env();
            let spec = env.cache.clone().unwrap_or_default();
            let ttl = env.cache_ttl.map_or(60, |ttl| {
                u32::try_from(ttl.as_secs().max(1)).unwrap_or(u32::MAX)
            });
            Cache::start(&spec, ttl, MAX_VALUE).await
        })
        .await
        .as_ref()
}

impl Store {
    /// The store of this app.
    pub fn app() -> Store {
        Store
    }

    /// Keep this process's durable tier in the file at `path` (created, with its directory,
    /// if missing) rather than where `COLONY_STORE_PATH` says: for a program that hosts the
    /// store service and chooses its place in code. Call it before the store is first used;
    /// it fails if the store is already open elsewhere, or the file cannot be opened.
    pub fn open_file(path: impl AsRef<std::path::Path>) -> Result<(), StoreError> {
        let path = path.as_ref();
        let unavailable =
            |e: String| StoreError::Service(ServiceError::new(ErrorKind::Unavailable, e));
        if let Some(store) = DURABLE.get() {
            return if store.place() == path.display().to_string() {
                Ok(())
            } else {
                Err(unavailable(format!(
                    "the store is already open on {}, so it cannot move to {}: call \
                     Store::open_file before the store's first use",
                    store.place(),
                    path.display()
                )))
            };
        }
        let store = Embedded::open(path).map_err(unavailable)?;
        DURABLE
            .set(Durable::Embedded(store))
            .map_err(|_| unavailable("the store was opened elsewhere at the same time".to_owned()))
    }

    /// The table `name`, whose keys are `K` and values `V`. Tables are namespaces in one
    /// store: they need no creating.
    pub fn table<K: Wire, V: Wire>(&self, name: &str) -> Table<K, V> {
        Table {
            name: name.into(),
            _types: PhantomData,
        }
    }
}

/// One page of [`Table::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<K, V> {
    /// Keys and their values, in the store's order.
    pub entries: Vec<(K, Versioned<V>)>,
    /// More entries follow: ask again with the last key as `after`.
    pub more: bool,
}

/// A table of the store: values of type `V` under keys of type `K`, both encoded with
/// postcard (so a value's type may gain fields only in ways postcard reads back: add new
/// tables for new shapes).
pub struct Table<K, V> {
    name: Arc<str>,
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Table {
            name: self.name.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).finish()
    }
}

impl<K: Wire, V: Wire> Table<K, V> {
    /// The store's key for `key`: the table's name and the key, postcard-encoded.
    fn key(&self, key: &K) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(&(&*self.name, key)).map_err(|e| {
            StoreError::Service(ServiceError::invalid_argument(format!(
                "a key of table `{}` does not encode: {e}",
                self.name
            )))
        })
    }

    fn encode(&self, value: &V) -> Result<Vec<u8>, StoreError> {
        let bytes = postcard::to_stdvec(value).map_err(|e| {
            StoreError::Service(ServiceError::invalid_argument(format!(
                "a value for table `{}` does not encode: {e}",
                self.name
            )))
        })?;
        if bytes.len() > MAX_VALUE {
            return Err(StoreError::TooLarge {
                size: bytes.len(),
                limit: MAX_VALUE,
            });
        }
        Ok(bytes)
    }

    fn decode(&self, version: u64, bytes: &[u8]) -> Result<Versioned<V>, StoreError> {
        postcard::from_bytes(bytes)
            .map(|value| Versioned { version, value })
            .map_err(|e| StoreError::Decode {
                table: self.name.to_string(),
                reason: e.to_string(),
            })
    }

    /// The value under `key` and its version, read from the durable tier: always the latest
    /// acknowledged write.
    pub async fn get(&self, key: &K) -> Result<Option<Versioned<V>>, StoreError> {
        let key = self.key(key)?;
        match call(Op::Get { key }).await? {
            Reply::Found(Some((version, bytes))) => self.decode(version, &bytes).map(Some),
            Reply::Found(None) => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// Like [`Table::get`], but read through the cache tier when the process has one: a
    /// hit costs no call to the store, and may be up to the cache's TTL old (a write drops
    /// the key from the cache, but a reader that raced the write may put the old value
    /// back). Use it where a slightly old value is fine; a write based on it with
    /// [`Table::replace`] still cannot overwrite a newer one.
    pub async fn get_cached(&self, key: &K) -> Result<Option<Versioned<V>>, StoreError> {
        let Some(cache) = cache().await else {
            return self.get(key).await;
        };
        let key = self.key(key)?;
        let cache_key = cache_key(&key);
        if let Some((version, bytes)) = cache.get(&cache_key).await
            && let Ok(found) = self.decode(version, &bytes)
        {
            return Ok(Some(found));
        }
        match call(Op::Get { key }).await? {
            Reply::Found(Some((version, bytes))) => {
                let found = self.decode(version, &bytes)?;
                cache.add(&cache_key, version, &bytes).await;
                Ok(Some(found))
            }
            Reply::Found(None) => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// One page of the table: up to `limit` entries (at most [`MAX_PAGE`], and fewer when
    /// their values pass a few MiB) after the key `after` (from the start with `None`), in
    /// an order the store fixes (its keys' encoded bytes), which is not the keys' own order.
    /// Pass the last key of a page as `after` for the next, while [`Page::more`] says so.
    /// Read from the durable tier; a page is consistent in itself, pages are not with
    /// each other.
    pub async fn scan(&self, after: Option<&K>, limit: usize) -> Result<Page<K, V>, StoreError> {
        let prefix = postcard::to_stdvec(&*self.name).map_err(|e| {
            StoreError::Service(ServiceError::internal(format!(
                "the table name `{}` does not encode: {e}",
                self.name
            )))
        })?;
        let after = after.map(|k| self.key(k)).transpose()?;
        let op = Op::Scan {
            prefix,
            after,
            limit: limit.clamp(1, MAX_PAGE) as u32,
        };
        let (entries, more) = match call(op).await? {
            Reply::Entries { entries, more } => (entries, more),
            other => return Err(unexpected(&other)),
        };
        let entries = entries
            .into_iter()
            .map(|(key, version, bytes)| {
                let (_, key): (String, K) =
                    postcard::from_bytes(&key).map_err(|e| StoreError::Decode {
                        table: self.name.to_string(),
                        reason: format!("a key: {e}"),
                    })?;
                Ok((key, self.decode(version, &bytes)?))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Page { entries, more })
    }

    /// Write `value` under `key` whatever is there; the new version.
    pub async fn put(&self, key: &K, value: &V) -> Result<u64, StoreError> {
        self.swap(key, Expect::Any, Some(value))
            .await
            .map(|v| v.unwrap_or_default())
    }

    /// Write `value` under `key` only if the key has no value; else
    /// [`StoreError::Conflict`].
    pub async fn insert(&self, key: &K, value: &V) -> Result<u64, StoreError> {
        self.swap(key, Expect::Absent, Some(value))
            .await
            .map(|v| v.unwrap_or_default())
    }

    /// Write `value` under `key` only if the key is still at `version` (compare-and-swap);
    /// else [`StoreError::Conflict`].
    pub async fn replace(&self, key: &K, version: u64, value: &V) -> Result<u64, StoreError> {
        self.swap(key, Expect::Version(version), Some(value))
            .await
            .map(|v| v.unwrap_or_default())
    }

    /// Delete `key`; whether it had a value.
    pub async fn remove(&self, key: &K) -> Result<bool, StoreError> {
        let key = self.key(key)?;
        self.write(key, Expect::Any, None)
            .await
            .map(|(_, previous)| previous.is_some())
    }

    /// Delete `key` only if it is still at `version`; else [`StoreError::Conflict`].
    pub async fn remove_version(&self, key: &K, version: u64) -> Result<(), StoreError> {
        let key = self.key(key)?;
        self.write(key, Expect::Version(version), None)
            .await
            .map(|_| ())
    }

    /// Read the value under `key`, compute a new one with `f` (given `None` when there is
    /// none), and write it back with compare-and-swap; on a conflict, read again and call
    /// `f` again (so `f` must not have side effects), up to 64 times.
    pub async fn update(
        &self,
        key: &K,
        mut f: impl FnMut(Option<&V>) -> V,
    ) -> Result<Versioned<V>, StoreError> {
        // From the durable tier: a cached value may be old, and would only cost a conflict.
        let mut current = self.get(key).await?;
        let mut last = None;
        for _ in 0..UPDATE_TRIES {
            let value = f(current.as_ref().map(|c| &c.value));
            let written = match &current {
                Some(c) => self.replace(key, c.version, &value).await,
                None => self.insert(key, &value).await,
            };
            match written {
                Ok(version) => return Ok(Versioned { version, value }),
                Err(e @ StoreError::Conflict { .. }) => {
                    last = Some(e);
                    current = self.get(key).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(StoreError::Conflict { current: None }))
    }

    async fn swap(
        &self,
        key: &K,
        expect: Expect,
        value: Option<&V>,
    ) -> Result<Option<u64>, StoreError> {
        let key = self.key(key)?;
        let value = value.map(|v| self.encode(v)).transpose()?;
        self.write(key, expect, value).await.map(|(v, _)| v)
    }

    /// Send a write, then drop the key from the cache tier; (new version, previous version).
    async fn write(
        &self,
        key: Vec<u8>,
        expect: Expect,
        value: Option<Vec<u8>>,
    ) -> Result<(Option<u64>, Option<u64>), StoreError> {
        // The cache's key is made only when there is a cache to drop it from.
        let cached = cache().await.map(|cache| (cache, cache_key(&key)));
        let reply = call(Op::Swap { key, expect, value }).await?;
        match reply {
            Reply::Done { version, previous } => {
                if let Some((cache, cache_key)) = cached {
                    cache.delete(&cache_key).await;
                }
                Ok((version, previous))
            }
            Reply::Conflict { current } => Err(StoreError::Conflict { current }),
            other => Err(unexpected(&other)),
        }
    }
}

/// Call the store service.
async fn call(op: Op) -> Result<Reply, StoreError> {
    serve(op).await.map_err(StoreError::Service)
}

fn unexpected(reply: &Reply) -> StoreError {
    StoreError::Service(ServiceError::internal(format!(
        "the store answered with an unexpected reply: {reply:?}"
    )))
}

/// The cache tier's key for a store key: the app's name and a 128-bit hash of the key, so
/// that any key fits memcached's 250-byte, no-spaces keys.
fn cache_key(key: &[u8]) -> String {
    let hash = xxhash_rust::xxh3::xxh3_128(key);
    format!("colony:{}:{hash:032x}", crate::identity::app_name())
}

/// Make this process's store live in memory, if it is not open yet: for tests. Whether the
/// store is now in memory.
pub(crate) fn open_in_memory() -> bool {
    if DURABLE.get().is_none()
        && let Ok(store) = Embedded::memory()
    {
        let _ = DURABLE.set(Durable::Embedded(store));
    }
    DURABLE.get().is_some_and(|s| s.place() == "memory")
}

#[cfg(test)]
mod tests;
