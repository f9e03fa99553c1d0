//! The cache tier: memcached servers in front of the durable store, keys spread over them
//! by rendezvous hashing.
//!
//! Owns: [`Cache`], the servers named by `COLONY_CACHE`, re-resolved as they come and go,
//! with a small pool of connections to each, and the text protocol's `get`, `add` and
//! `delete`. Promises: a cache that fails, is slow or is gone never fails a store
//! operation: each operation has a short deadline, and a failure reads as a miss (or, for
//! `delete`, is logged); nothing read from a server is buffered past the store's value
//! limit. Must not touch: the durable tier, which alone decides what is true.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// How long one cache operation may take before it counts as a miss.
const OP_TIMEOUT: Duration = Duration::from_millis(200);
/// Idle connections kept per server.
const IDLE_PER_SERVER: usize = 16;
/// How often the servers' names are resolved again (a headless Service's pods change).
const RESOLVE_EVERY: Duration = Duration::from_secs(10);
/// The longest reply line read from a server.
const MAX_LINE: u64 = 1024;

/// The cache tier of this process.
pub(crate) struct Cache {
    /// `host:port` entries as configured; each may resolve to several servers.
    names: Vec<String>,
    /// Seconds an entry lives.
    ttl: u32,
    /// The largest value kept (larger ones are not cached).
    max_value: usize,
    servers: RwLock<Arc<[Arc<Server>]>>,
}

/// One memcached server and its idle connections.
struct Server {
    addr: SocketAddr,
    idle: Mutex<Vec<BufReader<TcpStream>>>,
}

impl Cache {
    /// The cache tier named by `spec` (`host:port,host:port`), resolved now and then every
    /// few seconds in the background. `None` when `spec` names nothing.
    pub(crate) async fn start(spec: &str, ttl: u32, max_value: usize) -> Option<Arc<Cache>> {
        let names: Vec<String> = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if names.is_empty() {
            return None;
        }
        let cache = Arc::new(Cache {
            names,
            ttl,
            max_value,
            servers: RwLock::new(Arc::from(Vec::new())),
        });
        cache.resolve().await;
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESOLVE_EVERY).await;
                let Some(cache) = weak.upgrade() else { return };
                cache.resolve().await;
            }
        });
        Some(cache)
    }

    /// Look the servers' names up again, keeping the connections of servers still there.
    async fn resolve(&self) {
        let mut addrs = Vec::new();
        for name in &self.names {
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host(name)).await
            {
                Ok(Ok(found)) => addrs.extend(found),
                Ok(Err(e)) => {
                    tracing::warn!(cache = %name, error = %e, "cannot resolve a cache server")
                }
                Err(_) => tracing::warn!(cache = %name, "resolving a cache server timed out"),
            }
        }
        addrs.sort();
        addrs.dedup();
        let old = self.servers();
        let servers: Vec<Arc<Server>> = addrs
            .into_iter()
            .map(|addr| {
                old.iter()
                    .find(|s| s.addr == addr)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Server {
                            addr,
                            idle: Mutex::new(Vec::new()),
                        })
                    })
            })
            .collect();
        if servers.len() != old.len() {
            tracing::info!(servers = servers.len(), "cache tier servers");
        }
        *self.servers.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(servers);
    }

    fn servers(&self) -> Arc<[Arc<Server>]> {
        self.servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The server that owns `key`: the highest score of hash(key, server) (rendezvous
    /// hashing, so a server that comes or goes moves only its own keys).
    fn owner(&self, key: &str) -> Option<Arc<Server>> {
        let servers = self.servers();
        servers
            .iter()
            .max_by_key(|s| {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                h.update(key.as_bytes());
                h.update(s.addr.to_string().as_bytes());
                h.digest()
            })
            .cloned()
    }

    /// The cached version and value of `key`, or `None` on a miss or any failure.
    pub(crate) async fn get(&self, key: &str) -> Option<(u64, Vec<u8>)> {
        let server = self.owner(key)?;
        let max = self.max_value + 8;
        let Some(Answer::Value(record)) = server.run(key, Op::Get { max }).await else {
            return None;
        };
        let record = record?;
        let (version, value) = record.split_first_chunk::<8>()?;
        Some((u64::from_be_bytes(*version), value.to_vec()))
    }

    /// Cache `value` at `version` under `key` unless an entry is there already (a reader
    /// that raced a writer must not overwrite the writer's invalidation with newer data...
    /// or older: `add` keeps whatever is there, and the writer deletes it).
    pub(crate) async fn add(&self, key: &str, version: u64, value: &[u8]) {
        if value.len() > self.max_value {
            return;
        }
        let Some(server) = self.owner(key) else {
            return;
        };
        let mut record = Vec::with_capacity(8 + value.len());
        record.extend_from_slice(&version.to_be_bytes());
        record.extend_from_slice(value);
        let ttl = self.ttl;
        server
            .run(
                key,
                Op::Add {
                    ttl,
                    record: &record,
                },
            )
            .await;
    }

    /// Drop `key` from the cache: after a write, so that readers go to the durable tier.
    pub(crate) async fn delete(&self, key: &str) {
        let Some(server) = self.owner(key) else {
            return;
        };
        if server.run(key, Op::Delete).await.is_none() {
            tracing::warn!(
                cache = %server.addr,
                "could not drop a written key from the cache: readers may see the old value \
                 until its entry expires (COLONY_CACHE_TTL)"
            );
        }
    }
}

/// One operation on a key.
enum Op<'a> {
    /// Read it; a value longer than `max` is an error.
    Get { max: usize },
    /// Store `record` unless something is there.
    Add { ttl: u32, record: &'a [u8] },
    /// Drop it.
    Delete,
}

/// What an [`Op`] gave back.
enum Answer {
    /// What `get` found.
    Value(Option<Vec<u8>>),
    /// `add` or `delete` went through.
    Done,
}

impl Server {
    /// Run `op` on `key` on an idle connection (or a new one) within the operation
    /// deadline; the connection goes back to the pool only if `op` finished cleanly.
    async fn run(&self, key: &str, op: Op<'_>) -> Option<Answer> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let attempt = async {
            let mut conn = match idle {
                Some(conn) => conn,
                None => {
                    let stream = TcpStream::connect(self.addr).await?;
                    let _ = stream.set_nodelay(true);
                    BufReader::new(stream)
                }
            };
            let out = match op {
                Op::Get { max } => Answer::Value(get(&mut conn, key, max).await?),
                Op::Add { ttl, record } => {
                    add(&mut conn, key, ttl, record).await?;
                    Answer::Done
                }
                Op::Delete => {
                    delete(&mut conn, key).await?;
                    Answer::Done
                }
            };
            Ok::<_, std::io::Error>((conn, out))
        };
        match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(Ok((conn, out))) => {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < IDLE_PER_SERVER {
                    idle.push(conn);
                }
                Some(out)
            }
            Ok(Err(e)) => {
                tracing::debug!(cache = %self.addr, key, error = %e, "cache operation failed");
                None
            }
            Err(_) => {
                tracing::debug!(cache = %self.addr, key, "cache operation timed out");
                None
            }
        }
    }
}

fn protocol_error(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// One reply line, without its `\r\n`, at most [`MAX_LINE`] bytes.
async fn line(conn: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut buf = Vec::new();
    (&mut *conn)
        .take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .await?;
    if !buf.ends_with(b"\r\n") {
        return Err(protocol_error(
            "a cache reply line was cut short or too long",
        ));
    }
    buf.truncate(buf.len() - 2);
    String::from_utf8(buf).map_err(|_| protocol_error("a cache reply line is not text"))
}

async fn get(
    conn: &mut BufReader<TcpStream>,
    key: &str,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    conn.get_mut()
        .write_all(format!("get {key}\r\n").as_bytes())
        .await?;
    let head = line(conn).await?;
    if head == "END" {
        return Ok(None);
    }
    // VALUE <key> <flags> <bytes>
    let mut parts = head.split(' ');
    let (Some("VALUE"), Some(k), Some(_flags), Some(len)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(protocol_error(format!("unexpected cache reply: {head}")));
    };
    if k != key {
        return Err(protocol_error("the cache answered for another key"));
    }
    let len: usize = len
        .parse()
        .map_err(|_| protocol_error("a cache value's length is not a number"))?;
    if len > max {
        return Err(protocol_error(
            "a cached value is larger than any the store keeps",
        ));
    }
    let mut data = vec![0; len + 2];
    conn.read_exact(&mut data).await?;
    if !data.ends_with(b"\r\n") {
        return Err(protocol_error("a cached value does not end its block"));
    }
    data.truncate(len);
    let end = line(conn).await?;
    if end != "END" {
        return Err(protocol_error(format!("unexpected cache reply: {end}")));
    }
    Ok(Some(data))
}

async fn add(
    conn: &mut BufReader<TcpStream>,
    key: &str,
    ttl: u32,
    record: &[u8],
) -> std::io::Result<()> {
    let mut command = format!("add {key} 0 {ttl} {}\r\n", record.len()).into_bytes();
    command.extend_from_slice(record);
    command.extend_from_slice(b"\r\n");
    conn.get_mut().write_all(&command).await?;
    match line(conn).await?.as_str() {
        "STORED" | "NOT_STORED" => Ok(()),
        other => Err(protocol_error(format!("unexpected cache reply: {other}"))),
    }
}

async fn delete(conn: &mut BufReader<TcpStream>, key: &str) -> std::io::Result<()> {
    conn.get_mut()
        .write_all(format!("delete {key}\r\n").as_bytes())
        .await?;
    match line(conn).await?.as_str() {
        "DELETED" | "NOT_FOUND" => Ok(()),
        other => Err(protocol_error(format!("unexpected cache reply: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::Cache;

    /// A memcached of the test's own on 127.0.0.1, killed when dropped; `None` (the test
    /// skips, saying so) where memcached is not installed, unless `CI` is set.
    struct Memcached {
        child: Child,
        addr: String,
    }

    impl Memcached {
        fn start() -> Option<Memcached> {
            // A free port can be taken by another test between our probe and memcached's
            // bind: the server that answers must be ours (`stats` reports its pid).
            for _ in 0..10 {
                let server = Memcached::spawn()?;
                if server.stat("pid") == u64::from(server.child.id()) {
                    return Some(server);
                }
            }
            panic!("no free port for memcached after 10 tries")
        }

        fn spawn() -> Option<Memcached> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = match Command::new("memcached")
                // `-u`: memcached refuses to run as root without a user to become (and
                // ignores it when not root).
                .args([
                    "-l",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "0",
                    "-m",
                    "16",
                ])
                .args(["-u", "nobody"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(child) => child,
                Err(e) if std::env::var_os("CI").is_none() => {
                    eprintln!("skipped: cannot start memcached ({e}); `apt-get install memcached`");
                    return None;
                }
                Err(e) => panic!("memcached is needed in CI: {e}"),
            };
            let addr = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(&addr).is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("memcached exited ({status}) before it listened on {addr}");
                }
                assert!(
                    Instant::now() < deadline,
                    "memcached never listened on {addr}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Some(Memcached { child, addr })
        }

        fn items(&self) -> u64 {
            self.stat("curr_items")
        }

        /// A number from the server's `stats`.
        fn stat(&self, name: &str) -> u64 {
            use std::io::{BufRead as _, Write as _};
            let mut s = std::net::TcpStream::connect(&self.addr).expect("connects");
            s.write_all(b"stats\r\n").expect("writes");
            let prefix = format!("STAT {name} ");
            let mut lines = std::io::BufReader::new(s).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(n) = line.strip_prefix(&prefix) {
                    return n.trim().parse().expect("a number");
                }
                assert_ne!(line, "END", "no {name} in stats");
            }
            panic!("stats ended early")
        }
    }

    impl Drop for Memcached {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn values_round_trip_and_deletes_drop_them() {
        let Some(server) = Memcached::start() else {
            return;
        };
        let cache = Cache::start(&server.addr, 60, 1024).await.expect("a cache");
        assert_eq!(cache.get("colony:t:k").await, None);
        cache.add("colony:t:k", 7, b"seven").await;
        assert_eq!(cache.get("colony:t:k").await, Some((7, b"seven".to_vec())));
        // `add` keeps what is there: a reader never overwrites a newer fill.
        cache.add("colony:t:k", 3, b"three").await;
        assert_eq!(cache.get("colony:t:k").await, Some((7, b"seven".to_vec())));
        cache.delete("colony:t:k").await;
        assert_eq!(cache.get("colony:t:k").await, None);
        // Past the value limit, nothing is cached.
        cache.add("colony:t:big", 1, &[0; 2048]).await;
        assert_eq!(cache.get("colony:t:big").await, None);
    }

    #[tokio::test]
    async fn keys_spread_over_every_server_and_a_dead_one_reads_as_a_miss() {
        let (Some(a), Some(b)) = (Memcached::start(), Memcached::start()) else {
            return;
        };
        let spec = format!("{}, {}", a.addr, b.addr);
        let cache = Cache::start(&spec, 60, 1024).await.expect("a cache");
        for i in 0..200u64 {
            cache.add(&format!("colony:t:{i}"), i, b"v").await;
        }
        let (on_a, on_b) = (a.items(), b.items());
        assert_eq!(on_a + on_b, 200);
        assert!(on_a > 40 && on_b > 40, "spread: {on_a} and {on_b}");
        // Every key is found where it was put.
        for i in 0..200u64 {
            assert_eq!(
                cache.get(&format!("colony:t:{i}")).await,
                Some((i, b"v".to_vec()))
            );
        }
        drop(b);
        let mut misses = 0;
        for i in 0..200u64 {
            match cache.get(&format!("colony:t:{i}")).await {
                Some(found) => assert_eq!(found, (i, b"v".to_vec())),
                None => misses += 1,
            }
        }
        assert_eq!(
            misses, on_b,
            "the dead server's keys miss, the others still hit"
        );
    }
}
