//! The durable tier: an embedded, crash-safe key-value file (redb), written by one thread.
//!
//! Owns: [`Embedded`], the database file of the instance that serves `colony::store::serve`,
//! and its writer thread. Promises: a write is acknowledged only after its transaction is
//! committed to disk (redb's `Durability::Immediate`: fsync); writes that arrive together
//! share one transaction and one fsync (group commit), each checked in arrival order; every
//! write gets the next number of one store-wide sequence as its version, so a version is
//! never reused, even after a delete. A failed commit (a full disk) does not stop the store
//! for good: the writer answers that batch, and every write until it can write again, with
//! `Unavailable` (503, retryable), and reopens the file (redb refuses all writes after an
//! I/O error until then), retrying with a back-off; meanwhile [`Embedded::is_unhealthy`]
//! says so. Must not touch: the network, the cache tier.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use tokio::sync::oneshot;

use super::{Expect, Reply};
use crate::error::{ErrorKind, ServiceError};

/// Key → 8-byte big-endian version followed by the value's bytes.
const DATA: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("data");
/// `"seq"` → the last version handed out.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// A page of entries (key, version, value), and whether more follow.
pub(crate) type Entries = (Vec<(Vec<u8>, u64, Vec<u8>)>, bool);

/// Most writes applied in one transaction: bounds how long the first of them waits.
const MAX_BATCH: usize = 256;

/// The first wait before reopening the file after a failed commit; it doubles up to
/// [`REOPEN_MAX_WAIT`], so a store whose disk was freed writes again within about that.
const REOPEN_FIRST_WAIT: Duration = Duration::from_millis(50);
/// The longest wait between two tries to reopen the file.
const REOPEN_MAX_WAIT: Duration = Duration::from_secs(1);

/// One write waiting for the writer thread.
struct Write {
    key: Vec<u8>,
    expect: Expect,
    value: Option<Vec<u8>>,
    reply: oneshot::Sender<Result<Reply, ServiceError>>,
}

/// The embedded store of this process: reads on the blocking pool, writes on a thread of
/// their own.
pub(crate) struct Embedded {
    shared: Arc<Shared>,
    writes: std::sync::Mutex<mpsc::Sender<Write>>,
    /// Where it lives, for messages.
    pub(crate) place: String,
}

/// What readers share with the writer thread.
struct Shared {
    /// The open database; `None` while the writer reopens it after a failed commit (redb
    /// opens a file once per process, so the old handle must go before the new one).
    db: RwLock<Option<Arc<redb::Database>>>,
    /// Set by a failed commit, cleared by the next write that commits. Not by the probe of
    /// a reopened file: that commit may fit in pages the file already has while the disk
    /// is still full.
    unhealthy: AtomicBool,
    /// The file to reopen; `None` for a store in memory, which has nothing to reopen.
    path: Option<PathBuf>,
    /// Where it lives, for messages.
    place: String,
}

impl Shared {
    fn current(&self) -> Result<Arc<redb::Database>, ServiceError> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                unavailable(format!(
                    "the store {} is reopening its file after a failed write (is its disk \
                     full?); retry shortly",
                    self.place
                ))
            })
    }
}

fn unavailable(message: String) -> ServiceError {
    ServiceError::new(ErrorKind::Unavailable, message)
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
        Embedded::start(db, Some(path.to_owned()), path.display().to_string())
    }

    /// A store in memory, gone with the process: for tests.
    pub(crate) fn memory() -> Result<Embedded, String> {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| format!("cannot create an in-memory store: {e}"))?;
        Embedded::start(db, None, "memory".to_owned())
    }

    fn start(db: redb::Database, path: Option<PathBuf>, place: String) -> Result<Embedded, String> {
        // Create the tables up front, so that reads never meet a missing table.
        let init = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(DATA)?;
            txn.open_table(META)?;
            txn.commit()?;
            Ok(())
        };
        init().map_err(|e| format!("cannot initialise the store {place}: {e}"))?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            unhealthy: AtomicBool::new(false),
            path,
            place: place.clone(),
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("colony-store".into())
            .spawn(move || writer(&writer_shared, &rx))
            .map_err(|e| format!("cannot start the store's writer thread: {e}"))?;
        Ok(Embedded {
            shared,
            writes: std::sync::Mutex::new(tx),
            place,
        })
    }

    /// Whether the store cannot write now: its last commit of writes failed, and none has
    /// succeeded since. A store that gets no writes keeps saying so until its next write
    /// commits.
    pub(crate) fn is_unhealthy(&self) -> bool {
        self.shared.unhealthy.load(Ordering::Relaxed)
    }

    /// The version and bytes stored under `key`.
    pub(crate) async fn get(&self, key: Vec<u8>) -> Result<Option<(u64, Vec<u8>)>, ServiceError> {
        let db = self.shared.current()?;
        tokio::task::spawn_blocking(move || read(&db, &key))
            .await
            .map_err(|e| format!("the store's read failed: {e}"))
            .and_then(|read| read)
            .map_err(ServiceError::internal)
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
    ) -> Result<Entries, ServiceError> {
        let db = self.shared.current()?;
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
        .map_err(|e| format!("the store's scan failed: {e}"))
        .and_then(|scanned| scanned)
        .map_err(ServiceError::internal)
    }

    /// Write `value` under `key` (delete it with `None`) if `expect` holds. Fails with
    /// `Unavailable` while the store cannot write (nothing was written then).
    pub(crate) async fn swap(
        &self,
        key: Vec<u8>,
        expect: Expect,
        value: Option<Vec<u8>>,
    ) -> Result<Reply, ServiceError> {
        let stopped = || ServiceError::internal("the store's writer thread has stopped");
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
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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
/// once, then answers each; after a failed commit, reopens the file before the next batch.
/// Ends when the store is dropped.
fn writer(shared: &Shared, writes: &mpsc::Receiver<Write>) {
    while let Ok(first) = writes.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match writes.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let db = match shared.current() {
            Ok(db) => db,
            Err(e) => {
                // Only after a reopen that the store's end cut short.
                refuse(batch, &e);
                continue;
            }
        };
        match apply(&db, &batch) {
            Ok(replies) => {
                shared.unhealthy.store(false, Ordering::Relaxed);
                for (write, reply) in batch.into_iter().zip(replies) {
                    let _ = write.reply.send(Ok(reply));
                }
            }
            Err(e) => {
                shared.unhealthy.store(true, Ordering::Relaxed);
                tracing::error!(store = %shared.place, error = %e, writes = batch.len(), "the store could not commit");
                let err = unavailable(format!(
                    "the store {} could not commit the write ({e}), so it was not acknowledged: it \
                     takes writes again once it can (is its disk full?), so retry",
                    shared.place
                ));
                refuse(batch, &err);
                drop(db);
                if shared.path.is_some() && !reopen(shared, writes) {
                    return;
                }
            }
        }
    }
}

fn refuse(batch: Vec<Write>, err: &ServiceError) {
    for write in batch {
        let _ = write.reply.send(Err(err.clone()));
    }
}

/// Close the store's file and open it again, since redb refuses every write after an I/O
/// error until then; retry with a back-off until it opens and commits, answering the
/// writes that arrive meanwhile with `Unavailable`. Returns false when the store was
/// dropped meanwhile.
fn reopen(shared: &Shared, writes: &mpsc::Receiver<Write>) -> bool {
    let Some(path) = &shared.path else {
        return true;
    };
    // Readers now get `Unavailable`; the file closes once the last of them lets go.
    drop(shared.db.write().unwrap_or_else(|p| p.into_inner()).take());
    let mut wait = REOPEN_FIRST_WAIT;
    let mut tries = 0u32;
    loop {
        tries += 1;
        match open_and_probe(path) {
            Ok(db) => {
                *shared.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
                tracing::info!(store = %shared.place, tries, "the store reopened its file and writes again");
                return true;
            }
            Err(e) if tries == 1 || tries.is_power_of_two() => {
                tracing::warn!(store = %shared.place, tries, error = %e, "the store cannot reopen its file yet; retrying");
            }
            Err(_) => {}
        }
        let until = Instant::now() + wait;
        loop {
            match writes.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(write) => {
                    let err = unavailable(format!(
                        "the store {} cannot write now (its last commit failed; is its disk \
                         full?) and is reopening its file; retry shortly",
                        shared.place
                    ));
                    refuse(vec![write], &err);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        wait = (wait * 2).min(REOPEN_MAX_WAIT);
    }
}

/// Open the file at `path` and commit a write transaction to it, so that a file that
/// opens but cannot be written to counts as not reopened.
fn open_and_probe(path: &Path) -> Result<redb::Database, redb::Error> {
    let db = redb::Database::create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(DATA)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(db)
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
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use super::{Embedded, Expect, Reply};
    use crate::error::ErrorKind;

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

    /// A small tmpfs mounted for one test, unmounted when dropped.
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        /// Mount a tmpfs of `size` at `dir`, or say why not (not root, no `mount`).
        fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir)
                .output()
                .map_err(|e| format!("cannot run mount: {e}"))?;
            if !out.status.success() {
                let _ = std::fs::remove_dir(dir);
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
            }
            Ok(Tmpfs(dir.to_owned()))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            // Lazily: the writer thread may still hold the file for a moment.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    /// Write zeros to `path` until the filesystem is full.
    fn fill(path: &Path) {
        use std::io::Write as _;
        let mut file = std::fs::File::create(path).expect("creates the filler");
        let chunk = vec![0u8; 16 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // Whatever a smaller write still fits.
        while file.write_all(&[0]).is_ok() {}
        let _ = file.sync_all();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_makes_writes_unavailable_until_space_is_freed_without_a_restart() {
        let dir = std::env::temp_dir().join(format!("colony-full-disk-{}", std::process::id()));
        let mount = match Tmpfs::mount(&dir, "4m") {
            Ok(mount) => mount,
            Err(why) => {
                eprintln!(
                    "skipped a_full_disk_makes_writes_unavailable_until_space_is_freed: this \
                     test mounts a tmpfs and cannot here ({why}); run it as root"
                );
                return;
            }
        };
        let store = Embedded::open(&dir.join("store.redb")).expect("opens");
        let value = vec![7u8; 128 * 1024];
        let mut acked = Vec::new();
        let put = |key: String| store.swap(key.into_bytes(), Expect::Any, Some(value.clone()));
        let first = put("before".to_owned()).await;
        assert!(matches!(first, Ok(Reply::Done { .. })), "{first:?}");
        acked.push("before".to_owned());
        assert!(!store.is_unhealthy());

        fill(&dir.join("filler"));
        // Writes that need room fail, with Unavailable (retryable), not Internal; a write
        // that finds room in the file's free pages is acknowledged, and must be kept.
        let mut refused = 0;
        for i in 0..64 {
            let key = format!("full-{i}");
            match put(key.clone()).await {
                Ok(Reply::Done { .. }) => acked.push(key),
                Err(e) if e.kind() == ErrorKind::Unavailable => {
                    refused += 1;
                    assert!(
                        store.is_unhealthy(),
                        "a refused write marks the store unhealthy"
                    );
                    if refused == 3 {
                        break;
                    }
                }
                other => panic!("a write on a full disk: {other:?}"),
            }
        }
        assert_eq!(refused, 3, "writes to a full disk fail");

        // Space comes back: writes succeed again within 5 s, in this same process.
        std::fs::remove_file(dir.join("filler")).expect("removes the filler");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match put("after".to_owned()).await {
                Ok(Reply::Done { .. }) => break,
                Err(e) if e.kind() == ErrorKind::Unavailable => {
                    assert!(Instant::now() < deadline, "still unavailable: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("a write after space came back: {other:?}"),
            }
        }
        acked.push("after".to_owned());
        assert!(!store.is_unhealthy());

        // Nothing acknowledged was lost, now or after the file is opened afresh.
        for key in &acked {
            let got = store.get(key.clone().into_bytes()).await.expect("reads");
            assert_eq!(got.map(|(_, v)| v), Some(value.clone()), "{key}");
        }
        drop(store);
        let deadline = Instant::now() + Duration::from_secs(10);
        let store = loop {
            match Embedded::open(&dir.join("store.redb")) {
                Ok(store) => break store,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        for key in &acked {
            let got = store.get(key.clone().into_bytes()).await.expect("reads");
            assert_eq!(
                got.map(|(_, v)| v),
                Some(value.clone()),
                "{key} after reopening"
            );
        }
        drop(store);
        drop(mount);
    }
}
