//! Running a call: here, or through the router.
//!
//! Owns: [`invoke()`], what every `#[microservice]` wrapper calls; the decision between
//! running the body in this process (hosted here, or no router at all) and sending it
//! through the [`Router`]; co-located calls nested too deep on one thread, which start
//! afresh in a task of their own. Promises: a co-located call costs no serialization and
//! runs under the caller's deadline (or the service's `timeout` when it has none); a
//! remote call's failure is noted for a retrying scope around it. Must not touch: which
//! instance serves a call, or connections (`router` and `endpoint` own those).

use std::sync::Arc;

use super::{CallOptions, Reply, Router};
use crate::context::{self, CallContext};
use crate::error::CallError;
use crate::service::{Service, ServiceEntry};
use crate::wire;

/// Call service `S`: directly when it is hosted here or no router is set up, otherwise on
/// an instance that hosts it.
pub async fn invoke<S: Service>(args: S::Args) -> Result<S::Ok, S::Err> {
    let entry = S::entry();
    let Some(router) = remote_router(entry) else {
        return match (entry.options.timeout(), context::deadline()) {
            // Co-located calls run under the caller's deadline, enforced where the request
            // entered this process; only a call with no deadline at all gets the service's.
            // It becomes the deadline of the calls the body makes, as it would remotely.
            (Some(timeout), None) if tokio::runtime::Handle::try_current().is_ok() => {
                let run = tokio::time::timeout(timeout, run_here::<S>(args));
                match context::with_timeout(timeout, run).await {
                    Ok(result) => result,
                    Err(_) => Err(S::Err::from(CallError::DeadlineExceeded {
                        service: entry.name.to_owned(),
                        budget: timeout,
                    })),
                }
            }
            _ => run_here::<S>(args).await,
        };
    };
    // Boxed so that the (large) remote state machine stays off the stack of co-located
    // call chains, which recurse through `invoke` once per level.
    Box::pin(invoke_remote::<S>(router, args)).await
}

thread_local! {
    /// How many co-located calls are being polled, one inside the other, on this thread.
    static NESTED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Co-located calls nested deeper than this on one thread start afresh in a task of their
/// own, so that a long chain of calls in one process (A calls B calls A …, as `APP run`
/// hosts every service) cannot overflow the stack.
const MAX_NESTED: u32 = 48;

/// Run the body of `S` in this process: directly, or, deep in a chain of co-located
/// calls, in a task of its own under the same context.
async fn run_here<S: Service>(args: S::Args) -> Result<S::Ok, S::Err> {
    let deep = NESTED.with(std::cell::Cell::get) >= MAX_NESTED;
    if deep && tokio::runtime::Handle::try_current().is_ok() {
        let body = S::run(args);
        let ctx = context::with(CallContext::clone);
        let task = tokio::spawn(async move {
            match ctx {
                Some(ctx) => context::scope(ctx, body).await,
                None => body.await,
            }
        });
        // Dropping the caller drops the call, as it would inline.
        let mut task = AbortOnDrop(task);
        return match (&mut task.0).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(S::Err::from(CallError::Internal {
                service: S::entry().name.to_owned(),
                message: "the call was cancelled with its runtime".to_owned(),
            })),
        };
    }
    Nested(S::run(args)).await
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A co-located call's body, counted in [`NESTED`] while it is polled.
struct Nested<F: ?Sized>(std::pin::Pin<Box<F>>);

impl<F: Future + ?Sized> Future for Nested<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                NESTED.with(|n| n.set(n.get().saturating_sub(1)));
            }
        }
        NESTED.with(|n| n.set(n.get() + 1));
        let _leave = Leave;
        self.0.as_mut().poll(cx)
    }
}

async fn invoke_remote<S: Service>(router: Arc<Router>, args: S::Args) -> Result<S::Ok, S::Err> {
    let entry = S::entry();
    let payload = match wire::to_vec(&args) {
        Ok(p) => p,
        Err(e) => {
            return Err(S::Err::from(CallError::BadArguments {
                service: entry.name.to_owned(),
                reason: format!("the arguments could not be encoded: {e}"),
            }));
        }
    };
    match router.call(entry, &payload, CallOptions::inherit()).await {
        Ok(Reply::Ok(bytes)) => postcard::from_bytes(&bytes).map_err(|e| {
            S::Err::from(CallError::Protocol {
                reason: format!("the reply of `{}` does not decode: {e}", entry.name),
            })
        }),
        Ok(Reply::Err(bytes)) => Err(postcard::from_bytes(&bytes).unwrap_or_else(|e| {
            S::Err::from(CallError::Protocol {
                reason: format!("the error of `{}` does not decode: {e}", entry.name),
            })
        })),
        // A retrying scope around this call (`Client::run`) decides on the error it returns.
        Err(e) => Err(S::Err::from(e)),
    }
}

/// The router to send `entry`'s call through, or `None` to run it here.
fn remote_router(entry: &'static ServiceEntry) -> Option<Arc<Router>> {
    let id = entry.id() as usize;
    let scoped = context::with(|c| c.router.as_ref().and_then(|r| r.get::<Router>())).flatten();
    match scoped {
        Some(r) => (!r.hosts(id)).then_some(r),
        None => super::default_router().filter(|r| !r.hosts(id)).cloned(),
    }
}
