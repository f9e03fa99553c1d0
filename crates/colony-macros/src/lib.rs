//! Procedural macros for Colony, for app authors. Use them through the `colony` crate,
//! which re-exports them with these docs; generated code calls only
//! `::colony::__private`.
//!
//! Each macro has three layers: the entry point here, `parse` (read and validate the
//! tokens into an intermediate form, reporting every mistake at its span with the reason
//! for the rule) and `expand` (generate code from that form). Set `COLONY_MACROS_DEBUG`
//! while building to print every expansion on standard error.

use proc_macro::TokenStream;

mod expand;
mod parse;

/// Turn an `async fn` into a microservice: a function any process of the app can call by
/// name, and that Colony can run, scale and route to on its own.
///
/// ```rust,ignore
/// use colony::{ServiceError, microservice};
///
/// /// Price of `qty` units of `sku`, in cents.
/// #[microservice(exposed, http = "GET /quote/{sku}", timeout = "2s")]
/// pub async fn quote(sku: String, qty: u32) -> Result<u64, ServiceError> {
///     let unit = unit_price(sku).await?; // another microservice: just a call
///     Ok(unit * u64::from(qty))
/// }
/// # #[microservice]
/// # async fn unit_price(sku: String) -> Result<u64, ServiceError> { Ok(sku.len() as u64) }
/// ```
///
/// The function keeps its name, signature and docs, so callers write `quote(sku, 2).await`.
/// The runtime sends the call to whichever process hosts the service; with no runtime set
/// up (a unit test) the call runs the body in-process. Services may call each other in
/// cycles: each body runs as a boxed future.
///
/// # Rules
///
/// Each is checked when the crate builds, and the error points at the mistake.
///
/// - It is an `async fn` (not `const`, `unsafe`, `extern` or variadic): a call may go to
///   another process, so callers await it instead of blocking a thread.
/// - No `self`, no generic or lifetime parameters, no `impl Trait`, no references: the
///   service is compiled once and called by name from other processes, and its values
///   travel as messages. Keep state in an object or the store.
/// - Each argument is a plain name (`qty: u32`, or `mut qty: u32`): arguments are sent by
///   name through the JSON gateway and shown by `colony describe`. At most 12 of them;
///   group more in a struct.
/// - It returns `Result<T, E>` where `E: From<colony::CallError>` (such as
///   `colony::ServiceError`): every call can fail remotely (no instance, deadline passed,
///   instance died).
/// - Argument, success and error types implement `serde::Serialize` and
///   `serde::Deserialize` and are owned (`'static`) and `Send`. Types that also implement
///   `schemars::JsonSchema` get a precise schema in `colony describe`.
///
/// # Options
///
/// | Option | Meaning |
/// |---|---|
/// | `exposed` | Reachable from outside the cluster through the gateway (`exposed = false` to spell out the default). |
/// | `http = "POST /orders/{id}"` | The gateway route: `GET`, `POST`, `PUT`, `PATCH` or `DELETE`, then a path starting with `/` whose `{name}` parts are arguments. |
/// | `min_instances = 2` | Instances kept running even when idle (may be 0). |
/// | `max_instances = 20` | Instances the autoscaler never goes past (at least 1, and at least `min_instances`). |
/// | `high_watermark = 0.8` | Load ratio (in flight ÷ capacity) above which an instance is added. |
/// | `low_watermark = 0.2` | Load ratio below which an instance is removed after a cool-down; below `high_watermark`. |
/// | `threads = 4` | Tokio worker threads of an instance that hosts this service (at least 1). |
/// | `blocking` | The body blocks its thread, so it runs on the blocking pool. |
/// | `timeout = "5s"` | The default deadline of a call when the caller has none: a whole number of milliseconds, written as every Colony duration is (`ms`, `s`, `m`, `h`, `d`; `"250ms"`, `"1.5s"`, `"1m30s"`, `"1h"`). |
#[proc_macro_attribute]
pub fn microservice(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let expanded = match parse::Service::parse(attr.into(), item.clone()) {
        Ok(service) => expand::service(&service),
        Err(err) => {
            let mut out = err.to_compile_error();
            out.extend(expand::fallback(item));
            out
        }
    };
    debug_print("microservice", &expanded);
    expanded.into()
}

/// Print an expansion when `COLONY_MACROS_DEBUG` is set (to anything) at build time.
fn debug_print(name: &str, expanded: &proc_macro2::TokenStream) {
    if std::env::var_os("COLONY_MACROS_DEBUG").is_some() {
        eprintln!("// #[{name}] expands to:\n{expanded}\n");
    }
}
