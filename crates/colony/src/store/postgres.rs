//! The durable tier on PostgreSQL (feature `store-postgres`), for a store that outgrows one
//! file: `COLONY_STORE_URL=postgres://...`.
//!
//! Owns: [`Postgres`], a pool of connections to the database and the table `colony_store`
//! (key, version, value) with the sequence `colony_store_version`, both created at start if
//! missing. Promises: the same contract as the embedded file: a write is acknowledged once
//! PostgreSQL committed it; a compare-and-swap is one conditional statement, so two
//! writers cannot both win; versions come from one sequence and are never reused. The
//! database does the locking, so any number of instances may serve the store service.
//! Must not touch: the cache tier.

use deadpool_postgres::{Config, Pool, Runtime};
use tokio_postgres::NoTls;

use super::{Expect, Reply};

/// Creates the table and sequence if they are missing.
const SCHEMA: &str = "
    CREATE SEQUENCE IF NOT EXISTS colony_store_version;
    CREATE TABLE IF NOT EXISTS colony_store (
        key BYTEA PRIMARY KEY,
        version BIGINT NOT NULL,
        value BYTEA NOT NULL
    );";

/// Connections to the store's database.
pub(crate) struct Postgres {
    pool: Pool,
    /// The URL without its password, for messages.
    pub(crate) place: String,
}

/// A failure, said with what was being done.
fn failed(doing: &str, e: impl std::fmt::Display) -> String {
    format!("the store's database failed while {doing}: {e}")
}

impl Postgres {
    /// Connect to `url` and create the schema if missing: fails at once, with the reason,
    /// when the database cannot be reached.
    pub(crate) async fn open(url: &str) -> Result<Postgres, String> {
        let place = redact(url);
        let _: tokio_postgres::Config = url.parse().map_err(|e| {
            format!(
                "COLONY_STORE_URL ({place}) is not a PostgreSQL URL: {e} (write it as \
                 postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
            )
        })?;
        let mut pool_config = Config::new();
        pool_config.url = Some(url.to_owned());
        pool_config.connect_timeout = Some(std::time::Duration::from_secs(5));
        let pool = pool_config
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(|e| format!("cannot set up connections to {place}: {e}"))?;
        let client = pool
            .get()
            .await
            .map_err(|e| format!("cannot connect to the store's database {place}: {e}"))?;
        client
            .batch_execute(SCHEMA)
            .await
            .map_err(|e| format!("cannot create the store's table in {place}: {e}"))?;
        Ok(Postgres { pool, place })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, String> {
        self.pool.get().await.map_err(|e| failed("connecting", e))
    }

    /// The version and bytes stored under `key`.
    pub(crate) async fn get(&self, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>, String> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT version, value FROM colony_store WHERE key = $1",
                &[&key],
            )
            .await
            .map_err(|e| failed("reading", e))?;
        Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1))))
    }

    /// Entries whose key starts with `prefix`, after `after`, in key (byte) order: at most
    /// `limit`, and stopping once their values pass `budget` bytes; and whether more
    /// follow.
    pub(crate) async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        budget: usize,
    ) -> Result<super::embedded::Entries, String> {
        let client = self.client().await?;
        // The first key past every key with the prefix; none when the prefix is all 0xff.
        let upper = successor(prefix);
        let lower = after.unwrap_or(prefix);
        let sql = format!(
            "SELECT key, version, value FROM colony_store WHERE key {} $1{} ORDER BY key LIMIT {}",
            if after.is_some() { ">" } else { ">=" },
            if upper.is_some() { " AND key < $2" } else { "" },
            limit + 1
        );
        let rows = match &upper {
            Some(upper) => client.query(&sql, &[&lower, upper]).await,
            None => client.query(&sql, &[&lower]).await,
        }
        .map_err(|e| failed("scanning", e))?;
        let (mut entries, mut bytes) = (Vec::new(), 0);
        for row in rows {
            if entries.len() == limit || bytes > budget {
                return Ok((entries, true));
            }
            let value: Vec<u8> = row.get(2);
            bytes += value.len();
            entries.push((row.get(0), row.get::<_, i64>(1) as u64, value));
        }
        Ok((entries, false))
    }

    /// The version under `key` now.
    async fn current(
        &self,
        client: &deadpool_postgres::Object,
        key: &[u8],
    ) -> Result<Option<u64>, String> {
        let row = client
            .query_opt("SELECT version FROM colony_store WHERE key = $1", &[&key])
            .await
            .map_err(|e| failed("reading a version", e))?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    /// Write `value` under `key` (delete it with `None`) if `expect` holds.
    pub(crate) async fn swap(
        &self,
        key: &[u8],
        expect: Expect,
        value: Option<&[u8]>,
    ) -> Result<Reply, String> {
        let client = self.client().await?;
        let version = |row: Option<tokio_postgres::Row>| row.map(|r| r.get::<_, i64>(0) as u64);
        let done = |version, previous| Reply::Done { version, previous };
        let answer = match (expect, value) {
            (Expect::Absent, Some(value)) => {
                let new = client
                    .query_opt(
                        "INSERT INTO colony_store (key, version, value)
                         VALUES ($1, nextval('colony_store_version'), $2)
                         ON CONFLICT (key) DO NOTHING RETURNING version",
                        &[&key, &value],
                    )
                    .await
                    .map(version);
                match new.map_err(|e| failed("inserting", e))? {
                    Some(v) => done(Some(v), None),
                    None => Reply::Conflict {
                        current: self.current(&client, key).await?,
                    },
                }
            }
            (Expect::Version(expected), Some(value)) => {
                let new = client
                    .query_opt(
                        "UPDATE colony_store
                         SET version = nextval('colony_store_version'), value = $3
                         WHERE key = $1 AND version = $2 RETURNING version",
                        &[&key, &(expected as i64), &value],
                    )
                    .await
                    .map(version);
                match new.map_err(|e| failed("replacing", e))? {
                    Some(v) => done(Some(v), Some(expected)),
                    None => Reply::Conflict {
                        current: self.current(&client, key).await?,
                    },
                }
            }
            (Expect::Any, Some(value)) => {
                // The previous version comes from the row the upsert replaced, read in the
                // same statement.
                let row = client
                    .query_one(
                        "WITH old AS (SELECT version FROM colony_store WHERE key = $1)
                         INSERT INTO colony_store (key, version, value)
                         VALUES ($1, nextval('colony_store_version'), $2)
                         ON CONFLICT (key) DO UPDATE
                         SET version = EXCLUDED.version, value = EXCLUDED.value
                         RETURNING version, (SELECT version FROM old)",
                        &[&key, &value],
                    )
                    .await
                    .map_err(|e| failed("writing", e))?;
                let previous: Option<i64> = row.get(1);
                done(
                    Some(row.get::<_, i64>(0) as u64),
                    previous.map(|p| p as u64),
                )
            }
            (Expect::Any, None) => {
                let gone = client
                    .query_opt(
                        "DELETE FROM colony_store WHERE key = $1 RETURNING version",
                        &[&key],
                    )
                    .await
                    .map(version)
                    .map_err(|e| failed("deleting", e))?;
                done(None, gone)
            }
            (Expect::Version(expected), None) => {
                let gone = client
                    .query_opt(
                        "DELETE FROM colony_store WHERE key = $1 AND version = $2
                         RETURNING version",
                        &[&key, &(expected as i64)],
                    )
                    .await
                    .map(version)
                    .map_err(|e| failed("deleting", e))?;
                match gone {
                    Some(v) => done(None, Some(v)),
                    None => Reply::Conflict {
                        current: self.current(&client, key).await?,
                    },
                }
            }
            (Expect::Absent, None) => match self.current(&client, key).await? {
                None => done(None, None),
                current => Reply::Conflict { current },
            },
        };
        Ok(answer)
    }
}

/// The smallest byte string greater than every string that starts with `prefix`; `None`
/// when there is none (the prefix is empty or all 0xff).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < 0xff {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

/// `url` with its password replaced, for messages and logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a URL that is not postgres://...)".to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Expect, Postgres, Reply, redact};

    /// The test database, from `COLONY_TEST_POSTGRES_URL` (`.ci/run` starts PostgreSQL
    /// and sets it); `None`, and the test skips saying so, where it is unset, unless `CI`
    /// is set.
    async fn database() -> Option<Postgres> {
        let Ok(url) = std::env::var("COLONY_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set COLONY_TEST_POSTGRES_URL (see .ci/run)"
            );
            eprintln!("skipped: COLONY_TEST_POSTGRES_URL is not set");
            return None;
        };
        Some(Postgres::open(&url).await.expect("the test database opens"))
    }

    /// A key no other test run uses.
    fn key(name: &str) -> Vec<u8> {
        format!("{name}-{}-{}", std::process::id(), fastrand::u64(..)).into_bytes()
    }

    #[tokio::test]
    async fn compare_and_swap_on_postgres_keeps_the_store_contract() {
        let Some(db) = database().await else { return };
        let k = key("contract");
        assert_eq!(db.get(&k).await, Ok(None));
        let Ok(Reply::Done {
            version: Some(v1),
            previous: None,
        }) = db.swap(&k, Expect::Absent, Some(b"one")).await
        else {
            panic!("inserted")
        };
        assert_eq!(
            db.swap(&k, Expect::Absent, Some(b"again")).await,
            Ok(Reply::Conflict { current: Some(v1) })
        );
        assert_eq!(
            db.swap(&k, Expect::Version(v1 + 1000), Some(b"stale"))
                .await,
            Ok(Reply::Conflict { current: Some(v1) })
        );
        let Ok(Reply::Done {
            version: Some(v2),
            previous: Some(p),
        }) = db.swap(&k, Expect::Version(v1), Some(b"two")).await
        else {
            panic!("replaced")
        };
        assert!(v2 > v1 && p == v1);
        let Ok(Reply::Done {
            version: Some(v3),
            previous: Some(p),
        }) = db.swap(&k, Expect::Any, Some(b"three")).await
        else {
            panic!("written")
        };
        assert!(v3 > v2 && p == v2);
        assert_eq!(db.get(&k).await, Ok(Some((v3, b"three".to_vec()))));
        assert_eq!(
            db.swap(&k, Expect::Version(v2), None).await,
            Ok(Reply::Conflict { current: Some(v3) })
        );
        assert_eq!(
            db.swap(&k, Expect::Version(v3), None).await,
            Ok(Reply::Done {
                version: None,
                previous: Some(v3)
            })
        );
        assert_eq!(
            db.swap(&k, Expect::Any, None).await,
            Ok(Reply::Done {
                version: None,
                previous: None
            })
        );
        let Ok(Reply::Done {
            version: Some(v4), ..
        }) = db.swap(&k, Expect::Absent, Some(b"back")).await
        else {
            panic!("re-inserted")
        };
        assert!(v4 > v3, "a re-inserted key gets a new version");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_instances_racing_for_one_version_let_exactly_one_win() {
        let Some(a) = database().await else { return };
        let Some(b) = database().await else { return };
        let (a, b) = (Arc::new(a), Arc::new(b));
        let k = key("race");
        let Ok(Reply::Done {
            version: Some(v), ..
        }) = a.swap(&k, Expect::Any, Some(b"start")).await
        else {
            panic!("written")
        };
        let tries: Vec<_> = (0..32u8)
            .map(|i| {
                let db = if i % 2 == 0 { a.clone() } else { b.clone() };
                let k = k.clone();
                tokio::spawn(async move { db.swap(&k, Expect::Version(v), Some(&[i])).await })
            })
            .collect();
        let mut won = 0;
        for t in tries {
            match t.await.expect("task").expect("answered") {
                Reply::Done { .. } => won += 1,
                Reply::Conflict { current: Some(c) } => assert!(c > v),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(won, 1);
    }

    #[tokio::test]
    async fn a_scan_pages_through_one_prefix_in_byte_order() {
        let Some(db) = database().await else { return };
        let prefix = key("scan");
        for i in 0..7u8 {
            let mut k = prefix.clone();
            k.push(i);
            db.swap(&k, Expect::Any, Some(&[i])).await.expect("writes");
        }
        // A key of another prefix right after this one's.
        let mut other = prefix.clone();
        *other.last_mut().expect("a byte") += 1;
        db.swap(&other, Expect::Any, Some(b"x"))
            .await
            .expect("writes");
        let (first, more) = db.scan(&prefix, None, 3, 1 << 20).await.expect("scans");
        assert!(more);
        assert_eq!(first.iter().map(|e| e.2[0]).collect::<Vec<_>>(), [0, 1, 2]);
        let after = first.last().map(|e| e.0.clone());
        let (rest, more) = db
            .scan(&prefix, after.as_deref(), 10, 1 << 20)
            .await
            .expect("scans");
        assert!(!more);
        assert_eq!(
            rest.iter().map(|e| e.2[0]).collect::<Vec<_>>(),
            [3, 4, 5, 6]
        );
        assert_eq!(super::successor(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(super::successor(&[0xff]), None);
    }

    #[tokio::test]
    async fn an_unreachable_or_malformed_database_is_a_clear_error() {
        let err = Postgres::open("not a url").await.err().expect("refused");
        assert!(
            err.contains("postgres://USER:PASSWORD@HOST:PORT/DATABASE"),
            "{err}"
        );
        // Port 1 on this machine: nothing listens there.
        let err = Postgres::open("postgres://app:s3cret@127.0.0.1:1/shop")
            .await
            .err()
            .expect("refused");
        assert!(err.contains("cannot connect"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/shop"),
            "postgres://app:***@db:5432/shop"
        );
        assert_eq!(redact("postgres://db/shop"), "postgres://db/shop");
        assert!(!redact("nonsense s3cret").contains("s3cret"));
    }
}
