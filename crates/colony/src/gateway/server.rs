//! The gateway's connections: HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) on one
//! listener, the header-read timeout, idle connections closed on drain, and the drain.
//!
//! Must not touch: what a request means (`handler`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::body::Body;

use super::Gateway;

/// (up to the drain timeout).
/// Serve `gateway` on `listener` over HTTP/1.1 and HTTP/2 (cleartext, prior knowledge)
/// until `shutdown` completes; then stop accepting and wait for the requests in flight
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(
        listener,
        gateway,
        shutdown,
        |stream| async move { Ok(stream) },
    )
    .await;
}

// Why this is long: the accept loop, the per-connection task and the drain share the
// connection bookkeeping; split, each part would need it passed around.
/// Like [`serve`], with each accepted connection first passed through `handshake` (a TLS
/// acceptor, say), in the connection's own task and within the header-read timeout.
pub async fn serve_with<H, Fut, S>(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
    handshake: H,
) where
    H: Fn(tokio::net::TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = std::io::Result<S>> + Send,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;

    let config = gateway.inner.config.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Slow request heads are cut off by the connection's `IdleWatch` instead: hyper's
        // timer boxes a new timer per request and moves it in and out of the timer wheel.
        .header_read_timeout(None)
        .max_buf_size(256 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Duration::from_secs(30));
    let drain = Arc::new(Drain::default());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!(error = %e, "could not accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let activity = Arc::new(Activity::default());
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                // Hyper calls the service once the request's head is in.
                let busy = Busy::new(activity.clone());
                if request.version() == hyper::Version::HTTP_2 {
                    activity.http2.store(true, Ordering::Relaxed);
                }
                let gateway = gateway.clone();
                async move {
                    let response = gateway.handle(request).await;
                    Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
                }
            })
        };
        let (builder, drain, handshake) = (builder.clone(), drain.clone(), handshake.clone());
        let header_timeout = config.header_read_timeout;
        tokio::spawn(async move {
            // The first bytes, and the handshake, must come within the header timeout too:
            // the HTTP/1-or-2 detection waits for them with no timer of its own.
            let start = async move {
                let mut first = [0u8; 1];
                stream.peek(&mut first).await.ok().filter(|&n| n > 0)?;
                handshake(stream).await.ok()
            };
            let Ok(Some(stream)) = tokio::time::timeout(header_timeout, start).await else {
                tracing::debug!(%peer, "HTTP connection closed: nothing, or no handshake, in time");
                return;
            };
            // HTTP/1: no request head for a header timeout cuts the connection off. HTTP/2:
            // the same until its first request (a client that sends the preface and stops
            // is cut off); then its own keep-alive pings take over.
            let idle = Some(IdleWatch::new(activity, header_timeout));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            match drain.watch(conn, |c| c.graceful_shutdown(), idle).await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTP connection closed with an error");
                }
                None => tracing::debug!(
                    %peer,
                    "HTTP connection cut off: no request head came in time"
                ),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(config.drain_timeout, drain.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in flight after the drain timeout; closing");
    }
}

/// The open connections, and the signal that tells them to finish: like hyper-util's
/// `GracefulShutdown`, without a channel polled on every poll of every connection. A
/// connection's poll reads one flag; its task's waker is registered once.
#[derive(Default)]
struct Drain {
    /// Set once the gateway shuts down.
    draining: AtomicBool,
    /// The waker of each open connection's task, by connection number; empty when none is
    /// open.
    open: std::sync::Mutex<HashMap<u64, Waker>>,
    /// The next connection number.
    next: AtomicU64,
    /// Notified when a connection closes.
    closed: tokio::sync::Notify,
}

impl Drain {
    /// `conn`, counted as open until it completes (or is dropped), and told to finish with
    /// `shut` once the drain starts. With `idle`, a connection on which no request head
    /// comes for its limit is dropped, and the answer is `None`.
    async fn watch<C, F>(
        self: Arc<Self>,
        conn: C,
        shut: F,
        mut idle: Option<IdleWatch>,
    ) -> Option<C::Output>
    where
        C: Future,
        F: Fn(Pin<&mut C>),
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let _open = Open {
            drain: self.clone(),
            id,
        };
        let mut conn = std::pin::pin!(conn);
        let mut registered: Option<Waker> = None;
        let mut told = false;
        std::future::poll_fn(|cx| {
            // A task's waker rarely changes: it is registered again only when it does.
            let new_waker = registered.as_ref().is_none_or(|w| !w.will_wake(cx.waker()));
            if new_waker {
                registered = Some(cx.waker().clone());
            }
            if let Some(watch) = idle.as_mut() {
                match watch.poll(cx, new_waker) {
                    Watch::Keep => {}
                    Watch::Stop => idle = None,
                    Watch::Cut => return Poll::Ready(None),
                }
            }
            if !told {
                if new_waker {
                    self.lock().insert(id, cx.waker().clone());
                }
                // Read after registering: `shutdown` sets the flag before it wakes the
                // registered tasks, so either it wakes this one or this one sees the flag.
                if self.draining.load(Ordering::SeqCst) {
                    shut(conn.as_mut());
                    told = true;
                }
            }
            conn.as_mut().poll(cx).map(Some)
        })
        .await
    }

    /// Tell every open connection to finish, and wait until none is open.
    async fn shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for waker in self.lock().values() {
            waker.wake_by_ref();
        }
        loop {
            let closed = self.closed.notified();
            if self.lock().is_empty() {
                return;
            }
            closed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waker>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one connection's requests report, so that its [`IdleWatch`] can tell a client that
/// sends nothing, or a request head too slowly, from one that is being served.
#[derive(Default)]
struct Activity {
    /// Requests whose head is in and whose answer is not yet written.
    in_flight: AtomicUsize,
    /// Requests answered so far.
    answered: AtomicU64,
    /// The connection turned out to be HTTP/2: once its first request is in, it has no
    /// header timeout (its keep-alive pings find dead peers).
    http2: AtomicBool,
}

/// One request of a connection, from its head's arrival until its answer is written (or
/// dropped).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's body that keeps its request counted as in flight until hyper has written it
/// and dropped it, so that a client slow to read a large answer is not taken for idle.
struct Tracked {
    body: Full<Bytes>,
    _busy: Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How many checks a header timeout is split into: an idle connection is cut off after
/// between 1 and 1 + 1/`IDLE_CHECKS` header timeouts.
const IDLE_CHECKS: u32 = 4;

/// The header timeout of an HTTP/1 connection, checked a few times per timeout on one timer
/// of the connection's: the connection is cut off once no request was in flight and none
/// was answered for [`IDLE_CHECKS`] checks in a row, that is when no request head has come
/// for a header timeout since the connection was served or last answered. Per request it
/// costs two counter updates, where hyper's own header timer costs a boxed timer and two
/// timer-wheel operations.
struct IdleWatch {
    activity: Arc<Activity>,
    every: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// `answered` at the last check.
    seen: u64,
    /// Checks in a row that found nothing in flight and nothing answered.
    quiet: u32,
    /// The timer has the task's current waker: until it fires, it need not be polled.
    armed: bool,
}

/// What an [`IdleWatch`] says about its connection.
enum Watch {
    /// Serve on.
    Keep,
    /// Serve on, and stop watching (the connection is HTTP/2).
    Stop,
    /// Close it: no request head came in time.
    Cut,
}

impl IdleWatch {
    fn new(activity: Arc<Activity>, header_timeout: Duration) -> IdleWatch {
        let every = (header_timeout / IDLE_CHECKS).max(Duration::from_millis(1));
        IdleWatch {
            activity,
            every,
            timer: Box::pin(tokio::time::sleep(every)),
            seen: 0,
            quiet: 0,
            armed: false,
        }
    }

    /// Check the connection if the timer fired; `new_waker` when the task's waker is not
    /// the one the timer has.
    fn poll(&mut self, cx: &mut std::task::Context<'_>, new_waker: bool) -> Watch {
        if self.activity.http2.load(Ordering::Relaxed) {
            return Watch::Stop;
        }
        // Most polls are for the connection's sockets: reading the timer's state is cheaper
        // than polling it, which charges the task's budget and registers its waker again.
        if self.armed && !new_waker && !self.timer.is_elapsed() {
            return Watch::Keep;
        }
        self.armed = true;
        while self.timer.as_mut().poll(cx).is_ready() {
            let answered = self.activity.answered.load(Ordering::Relaxed);
            if self.activity.in_flight.load(Ordering::Relaxed) > 0 || answered != self.seen {
                self.seen = answered;
                self.quiet = 0;
            } else {
                self.quiet += 1;
                if self.quiet >= IDLE_CHECKS {
                    return Watch::Cut;
                }
            }
            let next = tokio::time::Instant::now() + self.every;
            self.timer.as_mut().reset(next);
        }
        Watch::Keep
    }
}

/// A connection of a [`Drain`] while it is open.
struct Open {
    drain: Arc<Drain>,
    id: u64,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.drain.lock().remove(&self.id);
        self.drain.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::{Activity, Busy, Drain, IDLE_CHECKS, IdleWatch};

    /// A connection that stays open until it is told to finish, then finishes at its next
    /// poll (as hyper's does once its request in flight is answered).
    async fn connection_until_told(drain: Arc<Drain>, told: Arc<AtomicBool>) -> &'static str {
        let flag = told.clone();
        let conn = std::future::poll_fn(move |_cx| {
            if flag.load(Ordering::SeqCst) {
                std::task::Poll::Ready("finished")
            } else {
                std::task::Poll::Pending
            }
        });
        drain
            .watch(conn, move |_| told.store(true, Ordering::SeqCst), None)
            .await
            .expect("not watched for idleness")
    }

    #[tokio::test]
    async fn a_drain_tells_open_connections_to_finish_and_waits_for_them() {
        let drain = Arc::new(Drain::default());
        let told = Arc::new(AtomicBool::new(false));
        let conn = tokio::spawn(connection_until_told(drain.clone(), told.clone()));
        // The connection registers at its first poll.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while drain.lock().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("the drain ends once the connection has finished");
        assert!(told.load(Ordering::SeqCst));
        assert_eq!(conn.await.expect("the task"), "finished");
        assert!(drain.lock().is_empty());
    }

    #[tokio::test]
    async fn a_connection_that_starts_during_a_drain_is_told_at_once() {
        let drain = Arc::new(Drain::default());
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("with nothing open, the drain ends at once");
        let told = Arc::new(AtomicBool::new(false));
        let finished = tokio::time::timeout(
            Duration::from_secs(5),
            connection_until_told(drain.clone(), told.clone()),
        )
        .await
        .expect("told at its first poll");
        assert_eq!(finished, "finished");
        assert!(drain.lock().is_empty(), "a finished connection is not open");
    }

    #[tokio::test]
    async fn a_dropped_connection_no_longer_holds_the_drain() {
        let drain = Arc::new(Drain::default());
        let conn = tokio::spawn(
            drain
                .clone()
                .watch(std::future::pending::<()>(), |_| {}, None),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while drain.lock().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "never registered");
            tokio::task::yield_now().await;
        }
        let shutdown = tokio::spawn({
            let drain = drain.clone();
            async move { drain.shutdown().await }
        });
        conn.abort();
        tokio::time::timeout(Duration::from_secs(5), shutdown)
            .await
            .expect("the drain ends once the connection is gone")
            .expect("the drain task");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_no_request_head_for_a_header_timeout_is_cut_off() {
        let timeout = Duration::from_secs(10);
        let activity = Arc::new(Activity::default());
        let drain = Arc::new(Drain::default());
        let idle = IdleWatch::new(activity.clone(), timeout);
        let started = tokio::time::Instant::now();
        let cut = drain
            .watch(std::future::pending::<()>(), |_| {}, Some(idle))
            .await;
        assert!(cut.is_none(), "cut off");
        let waited = started.elapsed();
        assert!(
            waited >= timeout && waited <= timeout + timeout / IDLE_CHECKS,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_or_answered_keep_a_connection() {
        let timeout = Duration::from_secs(10);
        let activity = Arc::new(Activity::default());
        let drain = Arc::new(Drain::default());
        let idle = IdleWatch::new(activity.clone(), timeout);
        let conn = tokio::spawn(drain.clone().watch(
            std::future::pending::<()>(),
            |_| {},
            Some(idle),
        ));
        // A request in flight for three timeouts, then one answered every half timeout.
        let busy = Busy::new(activity.clone());
        tokio::time::sleep(timeout * 3).await;
        drop(busy);
        for _ in 0..6 {
            tokio::time::sleep(timeout / 2).await;
            drop(Busy::new(activity.clone()));
        }
        assert!(!conn.is_finished(), "kept while in use");
        // Then nothing: cut off within a header timeout and a check.
        tokio::time::sleep(timeout + timeout / IDLE_CHECKS + Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        assert!(conn.is_finished(), "cut off once idle");
        assert!(conn.await.expect("the task").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_have_no_header_timeout() {
        let timeout = Duration::from_secs(10);
        let activity = Arc::new(Activity::default());
        activity.http2.store(true, Ordering::Relaxed);
        let drain = Arc::new(Drain::default());
        let idle = IdleWatch::new(activity, timeout);
        let conn = tokio::spawn(drain.clone().watch(
            std::future::pending::<()>(),
            |_| {},
            Some(idle),
        ));
        tokio::time::sleep(timeout * 5).await;
        assert!(!conn.is_finished());
        conn.abort();
    }
}
