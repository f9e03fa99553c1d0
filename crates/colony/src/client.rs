//! Calling services from a program outside the cluster, with retries at the outermost scope.
//!
//! Owns: [`Client`], a router to the cluster's instances plus a `Retrier` shared by every
//! request made through it. Promises: a request that fails because its instance died,
//! could not be reached or refused it (see [`CallError::is_retryable`]) is re-run whole on
//! another instance, with back-off, within its deadline and the retry budget, keeping its
//! request id so that handlers can de-duplicate; every try carries its attempt number.
//! Calls made by the services themselves never retry. Must not touch: the process default
//! router (a client routes only the calls made inside its own scope).
//!
//! A client speaks Colony's message protocol, so it must be of the cluster's build: the
//! app binary itself (a tool subcommand, a test), or a program built from the same service
//! crates started with `COLONY_FINGERPRINT` set to the cluster's (`APP describe` prints it).
//! Programs of any other kind call the HTTP gateway (`APP gateway`) instead.
//!
//! ```no_run
//! use colony::{ServiceError, client::Client, control::Peer};
//!
//! #[colony::microservice]
//! pub async fn quote(sku: String, qty: u32) -> Result<u64, ServiceError> {
//!     Ok(u64::from(qty) * 250)
//! }
//!
//! # async fn f() -> colony::Result<()> {
//! let client = Client::new(Peer::parse_list("*=127.0.0.1:7000").map_err(colony::Error::Usage)?)?;
//! // Typed: the service's own function, called through the client (a closure, since a
//! // retry runs it again).
//! let total = client.run(|| quote("a1".into(), 2)).await;
//! // By name, with JSON arguments and result.
//! let total = client
//!     .call_json("my_app::quote", serde_json::json!({"sku": "a1", "qty": 2}))
//!     .await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::call::{CallOptions, DEFAULT_TIMEOUT, Peer, Reply, Router};
use crate::context::{self, CallContext};
use crate::error::{CallError, Error, FailedCall, Result};
use crate::retry::Retrier;
pub use crate::retry::RetryPolicy;
use crate::service;
use crate::transport::TcpDialer;

/// A client of the cluster: calls services on its instances, retrying at the outermost
/// scope. Cheap to clone; clones share the connections and the retry budget.
#[derive(Debug, Clone)]
pub struct Client {
    router: Arc<Router>,
    retrier: Arc<Retrier>,
    /// The deadline of each request; `None` leaves each call its service's own.
    timeout: Option<Duration>,
}

impl Client {
    /// A client of the instances at `peers` (`NAME=ADDR`, as in `--peer`), connecting as
    /// `APP call` does: mutual TLS with the role `@client`, unless the security settings
    /// (`COLONY_TLS`, `colony.toml`) turn it off.
    pub fn new(peers: impl IntoIterator<Item = Peer>) -> Result<Client> {
        let peers: Vec<Peer> = peers.into_iter().collect();
        let transport = crate::security::Transport::for_caller(&[], !peers.is_empty(), &|name| {
            crate::service::find(name).is_some()
        })?;
        let router = Router::builder(transport.dialer())
            .peers(peers)
            .build()
            .map_err(Error::Usage)?;
        Ok(Client::with_router(router))
    }

    /// A client of the instances at `peers` over plain TCP, whatever the security
    /// settings: for tests and clusters that run without TLS.
    pub fn plaintext(peers: impl IntoIterator<Item = Peer>) -> Result<Client> {
        let router = Router::builder(Arc::new(TcpDialer))
            .peers(peers)
            .build()
            .map_err(Error::Usage)?;
        Ok(Client::with_router(router))
    }

    /// A client of the peers in `COLONY_PEERS` (`NAME=ADDR,NAME=ADDR`).
    pub fn from_env() -> Result<Client> {
        let peers = crate::config::env().peers.clone().unwrap_or_default();
        if peers.trim().is_empty() {
            return Err(Error::Usage(
                "COLONY_PEERS is not set; set it to NAME=ADDR,... (for example \
                 `*=127.0.0.1:7000`) to say where the services run"
                    .to_owned(),
            ));
        }
        Client::new(Peer::parse_list(&peers).map_err(Error::Usage)?)
    }

    /// A client that routes through `router` (built with a TLS dialer, say).
    pub fn with_router(router: Arc<Router>) -> Client {
        Client {
            router,
            retrier: Retrier::new(RetryPolicy::default()),
            timeout: None,
        }
    }

    /// Retry with `policy` (a fresh budget).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Client {
        self.retrier = Retrier::new(policy);
        self
    }

    /// Give each request `timeout`, retries included, instead of each service's default.
    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = Some(timeout);
        self
    }

    /// The router the client's calls go through.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Run the request that `request` makes: the services it calls run on the cluster's
    /// instances. When the request fails with an error that comes from a call that failed
    /// in a way that is safe to retry ([`FailedCall`]), `request` runs again (a fresh
    /// future), on another instance.
    ///
    /// Every try runs under the same request id (the current one, or a fresh one) and the
    /// client's deadline; [`crate::context::attempt`] tells the services which try it is.
    pub async fn run<T, E, F, Fut>(&self, mut request: F) -> std::result::Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: FailedCall,
    {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut ctx = context::with(Clone::clone).unwrap_or_default();
        ctx.router = Some(context::Routing::new(self.router.clone()));
        ctx.request_id
            .get_or_insert_with(|| Arc::from(new_request_id()));
        if let Some(d) = deadline {
            ctx.deadline = Some(ctx.deadline.map_or(d, |c| c.min(d)));
        }
        let mut attempts = self.retrier.begin(ctx.deadline);
        loop {
            let mut try_ctx: CallContext = ctx.clone();
            try_ctx.attempt = attempts.number();
            let result = context::scope(try_ctx, request()).await;
            match result.as_ref().err().and_then(FailedCall::failed_call) {
                Some(e) if e.is_retryable() && attempts.retry(e).await => continue,
                _ => return result,
            }
        }
    }

    /// Call `service` (its full name) with a JSON object of named arguments, and return
    /// its JSON result. A service's own error comes back as [`Error::Service`], a failed
    /// call as [`Error::Call`].
    pub async fn call_json(
        &self,
        service: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let entry = service::resolve(service).map_err(Error::Usage)?;
        let payload = (entry.json_to_args)(args).map_err(|reason| {
            Error::Call(CallError::BadArguments {
                service: entry.name.to_owned(),
                reason,
            })
        })?;
        let deadline = self
            .timeout
            .or_else(|| entry.options.timeout())
            .map_or_else(|| Instant::now() + DEFAULT_TIMEOUT, |t| Instant::now() + t);
        let deadline = context::deadline().map_or(deadline, |d| d.min(deadline));
        let request_id = context::request_id().unwrap_or_else(new_request_id);
        let router = &self.router;
        let reply = context::with_request_id(
            &request_id,
            self.retrier.run(Some(deadline), |attempt| {
                let mut options = CallOptions::inherit().with_deadline(deadline);
                options.attempt = Some(attempt);
                router.call(entry, &payload, options)
            }),
        )
        .await?;
        let (ok, bytes) = match reply {
            Reply::Ok(b) => (true, b),
            Reply::Err(b) => (false, b),
        };
        let value = (entry.result_to_json)(&bytes, ok)
            .map_err(|reason| Error::Call(CallError::Protocol { reason }))?;
        if ok {
            Ok(value)
        } else {
            Err(Error::Service(value))
        }
    }
}

/// A fresh request id: 32 random hex digits.
pub(crate) fn new_request_id() -> String {
    let mut id = String::with_capacity(32);
    crate::telemetry::push_hex(&mut id, &fastrand::u128(..).to_be_bytes());
    id
}
