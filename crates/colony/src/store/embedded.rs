//! The durable tier: an embedded, crash-safe key-value file (redb), written by one thread.
//!
//! Owns: [`Embedded`], the database file of the instance that serves `colony::store::serve`,
//! and its writer thread. Promises: a write is acknowledged only after its transaction is
//! committed to disk (redb's `Durability::Immediate`: fsync); writes that arrive together
//! share one transaction and one fsync (group commit), each checked in arrival order; every
//! write gets the next number of one store-wide sequence as its version, so a version is
//! never reused, even after a delete. Must not touch: the network, the cache tier.

use std::path::Path;
use std::sync::{Arc, mpsc};

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use tokio::sync::oneshot;

use super::{Expect, Reply};

/// Key → 8-byte big-endian version followed by the value's bytes.
const DATA: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("data");
/// `"seq"` → the last version handed out.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// A page of entries (key, version, value), and whether more follow.
pub(crate) type Entries = (Vec<(Vec<u8>, u64, Vec<u8>)>, bool);

/// Most writes applied in one transaction: bounds how long the first of them waits.
const MAX_BATCH: usize = 256;

/// One write waiting for the writer thread.
struct Write {
    key: Vec<u8>,
    expect: Expect,
    value: Option<Vec<u8>>,
    reply: oneshot::Sender<Result<Reply, String>>,
}

/// The embedded store of this process: reads on the blocking pool, writes on a thread of
/// their own.
pub(crate) struct Embedded {
    db: Arc<redb::Database>,
    writes: std::sync::Mutex<mpsc::Sender<Write>>,
    /// Where it lives, for messages.
    pub(crate) place: String,
}

impl Embedded {
    /// Open (or create) the store file at `path`, creating its directory.
    pub(crate) fn open(path: &Path) -> Result<Embedded, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create the store's directory {}: {e} (set COLONY_STORE_PATH to a \
                     writable file path)",
                    dir.display()
                )
            })?;
        }
        let db = redb::Database::create(path).map_err(|e| {
            format!(
                "cannot open the store file {}: {e} (another process may hold it: only one \
                 instance may serve colony::store::serve per file)",
                path.display()
            )
        })?;
        Embedded::start(db, path.display().to_string())
    }

    /// A store in memory, gone with the process: for tests.
    pub(crate) fn memory() -> Result<Embedded, String> {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| format!("cannot create an in-memory store: {e}"))?;
        Embedded::start(db, "memory".to_owned())
    }

    fn start(db: redb::Database, place: String) -> Result<Embedded, String> {
        // Create the tables up front, so that reads never meet a missing table.
        let init = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(DATA)?;
            txn.open_table(META)?;
            txn.commit()?;
            Ok(())
        };
        init().map_err(|e| format!("cannot initialise the store {place}: {e}"))?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("colony-store".into())
            .spawn(move || writer(&writer_db, &rx))
            .map_err(|e| format!("cannot start the store's writer thread: {e}"))?;
        Ok(Embedded {
            db,
            writes: std::sync::Mutex::new(tx),
            place,
        })
    }

    /// The version and bytes stored under `key`.
    pub(crate) async fn get(&self, key: Vec<u8>) -> Result<Option<(u64, Vec<u8>)>, String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || read(&db, &key))
            .await
            .map_err(|e| format!("the store's read failed: {e}"))?
    }

    /// Entries whose key starts with `prefix`, after `after`, in key order: at most
    /// `limit`, and stopping once their values pass `budget` bytes; and whether more
    /// follow.
    pub(crate) async fn scan(
        &self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
        budget: usize,
    ) -> Result<Entries, String> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            let table = txn.open_table(DATA).map_err(|e| e.to_string())?;
            let start = after.clone().unwrap_or_else(|| prefix.clone());
            let range = table
                .range::<&[u8]>(start.as_slice()..)
                .map_err(|e| e.to_string())?;
            let (mut entries, mut bytes) = (Vec::new(), 0);
            for item in range {
                let (key, record) = item.map_err(|e| e.to_string())?;
                let key = key.value();
                if !key.starts_with(&prefix) {
                    return Ok((entries, false));
                }
                if after.as_deref() == Some(key) {
                    continue;
                }
                if entries.len() == limit || bytes > budget {
                    return Ok((entries, true));
                }
                let (version, value) = split(record.value())?;
                bytes += value.len();
                entries.push((key.to_vec(), version, value));
            }
            Ok((entries, false))
        })
        .await
        .map_err(|e| format!("the store's scan failed: {e}"))?
    }

    /// Write `value` under `key` (delete it with `None`) if `expect` holds.
    pub(crate) async fn swap(
        &self,
        key: Vec<u8>,
        expect: Expect,
        value: Option<Vec<u8>>,
    ) -> Result<Reply, String> {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            key,
            expect,
            value,
            reply,
        };
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(write)
            .map_err(|_| "the store's writer thread has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the store's writer thread has stopped".to_owned())?
    }
}

fn read(db: &redb::Database, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = txn.open_table(DATA).map_err(|e| e.to_string())?;
    let Some(found) = table.get(key).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    split(found.value()).map(Some)
}

/// A stored record: its version, then its value.
fn split(record: &[u8]) -> Result<(u64, Vec<u8>), String> {
    let (version, value) = record
        .split_first_chunk::<8>()
        .ok_or("a record of the store file is shorter than its version: the file is damaged")?;
    Ok((u64::from_be_bytes(*version), value.to_vec()))
}

/// The writer thread: takes every write waiting, applies them in one transaction, commits
/// once, then answers each. Ends when the store is dropped.
fn writer(db: &redb::Database, writes: &mpsc::Receiver<Write>) {
    while let Ok(first) = writes.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match writes.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        match apply(db, &batch) {
            Ok(replies) => {
                for (write, reply) in batch.into_iter().zip(replies) {
                    let _ = write.reply.send(Ok(reply));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "the store could not commit");
                for write in batch {
                    let _ = write
                        .reply
                        .send(Err(format!("the store could not commit the write: {e}")));
                }
            }
        }
    }
}

/// Apply `batch` in order in one transaction; a write whose expectation fails is answered
/// with a conflict and changes nothing.
fn apply(db: &redb::Database, batch: &[Write]) -> Result<Vec<Reply>, redb::Error> {
    let txn = db.begin_write()?;
    let mut replies = Vec::with_capacity(batch.len());
    {
        let mut data = txn.open_table(DATA)?;
        let mut meta = txn.open_table(META)?;
        let mut seq = meta.get("seq")?.map_or(0, |v| v.value());
        let start = seq;
        for write in batch {
            let current = data.get(write.key.as_slice())?.map(|record| {
                record
                    .value()
                    .first_chunk::<8>()
                    .map_or(0, |v| u64::from_be_bytes(*v))
            });
            let holds = match write.expect {
                Expect::Any => true,
                Expect::Absent => current.is_none(),
                Expect::Version(v) => current == Some(v),
            };
            if !holds {
                replies.push(Reply::Conflict { current });
                continue;
            }
            match &write.value {
                Some(value) => {
                    seq += 1;
                    let mut record = Vec::with_capacity(8 + value.len());
                    record.extend_from_slice(&seq.to_be_bytes());
                    record.extend_from_slice(value);
                    data.insert(write.key.as_slice(), record.as_slice())?;
                    replies.push(Reply::Done {
                        version: Some(seq),
                        previous: current,
                    });
                }
                None => {
                    data.remove(write.key.as_slice())?;
                    replies.push(Reply::Done {
                        version: None,
                        previous: current,
                    });
                }
            }
        }
        if seq != start {
            meta.insert("seq", seq)?;
        }
    }
    txn.commit()?;
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use super::{Embedded, Expect, Reply};

    #[tokio::test]
    async fn versions_grow_across_keys_and_are_never_reused_after_a_delete() {
        let store = Embedded::memory().expect("opens");
        let a = store.swap(b"a".to_vec(), Expect::Absent, Some(b"1".to_vec()));
        let Reply::Done {
            version: Some(v1),
            previous: None,
        } = a.await.expect("writes")
        else {
            panic!("inserted")
        };
        let b = store.swap(b"b".to_vec(), Expect::Any, Some(b"2".to_vec()));
        let Reply::Done {
            version: Some(v2), ..
        } = b.await.expect("writes")
        else {
            panic!("written")
        };
        assert!(v2 > v1);
        let deleted = store.swap(b"a".to_vec(), Expect::Version(v1), None).await;
        assert!(matches!(
            deleted,
            Ok(Reply::Done {
                version: None,
                previous: Some(p)
            }) if p == v1
        ));
        let again = store.swap(b"a".to_vec(), Expect::Absent, Some(b"3".to_vec()));
        let Reply::Done {
            version: Some(v3), ..
        } = again.await.expect("writes")
        else {
            panic!("re-inserted")
        };
        assert!(
            v3 > v2,
            "a re-inserted key gets a new version, not its old one"
        );
        assert_eq!(
            store.get(b"a".to_vec()).await.expect("reads"),
            Some((v3, b"3".to_vec()))
        );
    }

    #[tokio::test]
    async fn a_stale_expectation_is_a_conflict_that_changes_nothing() {
        let store = Embedded::memory().expect("opens");
        let first = store.swap(b"k".to_vec(), Expect::Any, Some(b"x".to_vec()));
        let Ok(Reply::Done {
            version: Some(v), ..
        }) = first.await
        else {
            panic!("written")
        };
        let stale = store.swap(b"k".to_vec(), Expect::Version(v + 100), Some(b"y".to_vec()));
        assert!(matches!(stale.await, Ok(Reply::Conflict { current: Some(c) }) if c == v));
        let exists = store.swap(b"k".to_vec(), Expect::Absent, Some(b"y".to_vec()));
        assert!(matches!(exists.await, Ok(Reply::Conflict { current: Some(c) }) if c == v));
        assert_eq!(
            store.get(b"k".to_vec()).await.expect("reads"),
            Some((v, b"x".to_vec()))
        );
    }

    #[tokio::test]
    async fn concurrent_writes_to_one_version_let_exactly_one_win() {
        let store = std::sync::Arc::new(Embedded::memory().expect("opens"));
        let first = store.swap(b"n".to_vec(), Expect::Any, Some(vec![0]));
        let Ok(Reply::Done {
            version: Some(v), ..
        }) = first.await
        else {
            panic!("written")
        };
        let tries: Vec<_> = (0..32u8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .swap(b"n".to_vec(), Expect::Version(v), Some(vec![i]))
                        .await
                })
            })
            .collect();
        let mut won = 0;
        for t in tries {
            match t.await.expect("task").expect("answered") {
                Reply::Done { .. } => won += 1,
                Reply::Conflict { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(won, 1);
    }

    #[tokio::test]
    async fn a_file_store_keeps_what_it_acknowledged_when_reopened() {
        let dir = std::env::temp_dir().join(format!("colony-store-{}", std::process::id()));
        let path = dir.join("sub").join("store.redb");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Embedded::open(&path).expect("opens");
            let put = store.swap(b"kept".to_vec(), Expect::Any, Some(b"yes".to_vec()));
            assert!(matches!(put.await, Ok(Reply::Done { .. })));
        }
        // The writer thread holds the database until it sees the channel close.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match Embedded::open(&path) {
                Ok(store) => break store,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "{e}");
                    tokio::task::yield_now().await;
                }
            }
        };
        let kept = store.get(b"kept".to_vec()).await.expect("reads");
        assert_eq!(kept.map(|(_, v)| v), Some(b"yes".to_vec()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
