//! `--store`: what the store's durable tier sustains, against redb used the plain way.
//!
//! The store (`colony::store`) keeps its values in a redb file, like an app that embeds
//! redb itself would; what it adds is a writer thread that commits every write waiting in
//! one transaction (one fsync). The peer row is redb used directly, one transaction and
//! commit per write, with the same number of writers: the ratio is what group commit buys.
//! Both files live in the system's temporary directory, which must be on a real disk for
//! the figures to mean anything (an fsync on tmpfs costs nothing); the report says which
//! file system it is.
//!
//! Every row runs in this process: the store service is co-located, so a store call costs
//! no network hop here. Across processes, add one Colony hop (see the "Colony remote" row
//! of the main run) per operation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use colony::store::Store;
use redb::TableDefinition;

use crate::measure::{Result, median};

/// The peer's table: key → value, as the store keeps them.
const PLAIN: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("plain");

/// The figures of one row.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// Operations per second.
    ops: f64,
    /// Median latency of one operation, µs.
    p50_us: f64,
}

/// The figures of a `--store` run.
#[derive(Debug)]
pub(crate) struct StoreReport {
    rounds: usize,
    seconds: f64,
    writers: usize,
    value_bytes: usize,
    fs: String,
    plain: Row,
    one: Row,
    many: Row,
    reads: Row,
}

impl StoreReport {
    /// The report, as text.
    pub(crate) fn text(&self) -> String {
        let w = self.writers;
        let line = |name: &str, r: &Row| format!("| {name} | {:.0} | {:.0} |\n", r.ops, r.p50_us);
        format!(
            "colony-bench --store: {} rounds of {:.1} s, values of {} bytes, files on {}\n\
             machine: {}\n\n\
             | row | ops/s | p50 µs |\n|---|---:|---:|\n{}{}{}{}\n\
             group commit: {:.1}× redb's writes/s with {w} writers each\n",
            self.rounds,
            self.seconds,
            self.value_bytes,
            self.fs,
            crate::report::machine(),
            line(
                &format!("redb, a commit per write, {w} writer threads"),
                &self.plain
            ),
            line("Colony store put, 1 writer", &self.one),
            line(&format!("Colony store put, {w} writers"), &self.many),
            line(&format!("Colony store get, {w} readers"), &self.reads),
            self.many.ops / self.plain.ops,
        )
    }
}

/// Run the rows `rounds` times for `seconds` each; the median of each figure.
pub(crate) fn run(quick: bool) -> Result<StoreReport> {
    let (rounds, seconds) = if quick { (1, 1.0) } else { (3, 3.0) };
    let (writers, value_bytes) = (64, 100);
    let dir = std::env::temp_dir().join(format!("colony-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, rounds, seconds, writers, value_bytes);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(
    dir: &Path,
    rounds: usize,
    seconds: f64,
    writers: usize,
    value_bytes: usize,
) -> Result<StoreReport> {
    let span = Duration::from_secs_f64(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Store::open_file(dir.join("store.redb"))?;
    let plain_db = Arc::new(redb::Database::create(dir.join("plain.redb"))?);
    let mut rows: [Vec<Row>; 4] = Default::default();
    for round in 0..rounds {
        eprintln!("store round {}/{rounds}", round + 1);
        rows[0].push(plain_writes(&plain_db, writers, value_bytes, span)?);
        rows[1].push(runtime.block_on(store_ops(1, value_bytes, span, Op::Put))?);
        rows[2].push(runtime.block_on(store_ops(writers, value_bytes, span, Op::Put))?);
        rows[3].push(runtime.block_on(store_ops(writers, value_bytes, span, Op::Get))?);
    }
    let pick = |rows: &[Row]| {
        let mut ops: Vec<f64> = rows.iter().map(|r| r.ops).collect();
        let mut p50: Vec<f64> = rows.iter().map(|r| r.p50_us).collect();
        Row {
            ops: median(&mut ops),
            p50_us: median(&mut p50),
        }
    };
    Ok(StoreReport {
        rounds,
        seconds,
        writers,
        value_bytes,
        fs: file_system(dir),
        plain: pick(&rows[0]),
        one: pick(&rows[1]),
        many: pick(&rows[2]),
        reads: pick(&rows[3]),
    })
}

/// `writers` threads writing to redb directly, a transaction and commit per write.
fn plain_writes(
    db: &Arc<redb::Database>,
    writers: usize,
    value_bytes: usize,
    span: Duration,
) -> Result<Row> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..writers as u64)
        .map(|w| {
            let (db, stop, done) = (db.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || -> std::result::Result<Vec<f64>, redb::Error> {
                let value = vec![7u8; value_bytes];
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let txn = db.begin_write()?;
                    {
                        let mut table = txn.open_table(PLAIN)?;
                        table.insert((w << 32) | (i % 1000), value.as_slice())?;
                    }
                    txn.commit()?;
                    latencies.push(start.elapsed().as_secs_f64() * 1e6);
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(latencies)
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(span);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in threads {
        latencies.extend(t.join().map_err(|_| "a writer thread panicked")??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Row {
        ops: done.load(Ordering::Relaxed) as f64 / elapsed,
        p50_us: median(&mut latencies),
    })
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Put,
    Get,
}

/// `tasks` tasks doing `op` on the store for `span`, each on keys of its own.
async fn store_ops(tasks: usize, value_bytes: usize, span: Duration, op: Op) -> Result<Row> {
    let table = Store::app().table::<(u64, u64), Vec<u8>>("bench");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..tasks as u64)
        .map(|t| {
            let (table, stop, done) = (table.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let value = vec![7u8; value_bytes];
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = (t, i % 1000);
                    let start = Instant::now();
                    match op {
                        Op::Put => {
                            table.put(&key, &value).await?;
                        }
                        Op::Get => {
                            table.get(&key).await?;
                        }
                    }
                    latencies.push(start.elapsed().as_secs_f64() * 1e6);
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok::<_, colony::store::StoreError>(latencies)
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(span).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Row {
        ops: done.load(Ordering::Relaxed) as f64 / elapsed,
        p50_us: median(&mut latencies),
    })
}

/// The file system under `dir`, from `/proc/mounts` (the longest mount point above it).
fn file_system(dir: &Path) -> String {
    let dir: PathBuf = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, at, fs) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(at)
                .then(|| (at.len(), format!("{fs} ({dev} at {at})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "an unknown file system".to_owned(), |(_, fs)| fs)
}
