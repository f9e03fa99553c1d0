//! A small shop's HTTP API, for the gateway: every route shape (the default route, path
//! parameters, query, body, optional arguments), typed values with JSON Schemas, and a
//! chain of calls that the request id must cross.
//!
//! ```text
//!  HTTP ─► gateway ─► price ──► unit_price        GET    /price/{sku}?qty=&currency=
//!                  ├► order ──► unit_price        POST   /colony_e2e/services/shop/order
//!                  ├► set_line                    PUT    /carts/{cart}/lines
//!                  ├► remove_line                 DELETE /carts/{cart}/lines/{index}
//!                  ├► whoami ──► seen             GET    /whoami
//!                  └► ops::{nap, fail, explode}   POST   /ops/...  (faults, for tests)
//! ```

use colony::{ServiceError, microservice};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Currency {
    /// Euro.
    Eur,
    /// US dollar.
    Usd,
}

/// One line of an order or a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Line {
    /// The product.
    pub sku: String,
    /// How many.
    pub qty: u32,
}

/// The price of some units of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Quote {
    /// The product.
    pub sku: String,
    /// How many.
    pub qty: u32,
    /// The price of one, in cents.
    pub unit_cents: u64,
    /// The price of all, in cents.
    pub total_cents: u64,
    /// The currency of the prices.
    pub currency: Currency,
}

/// A placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Order {
    /// Its lines, as given.
    pub lines: Vec<Line>,
    /// The sum of the lines, in cents.
    pub total_cents: u64,
    /// The note, if one was given.
    pub note: Option<String>,
    /// The id of the request that placed it, as the service saw it.
    pub request_id: Option<String>,
}

/// A cart after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Cart {
    /// The cart's number.
    pub cart: u64,
    /// The line that was set.
    pub line: Line,
    /// Whether it replaced the line for the same product.
    pub replaced: bool,
}

/// What a call saw of its request, at two depths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Seen {
    /// The request id, in the service the gateway called.
    pub request_id: Option<String>,
    /// The request id, one call deeper.
    pub inner_request_id: Option<String>,
    /// The try number, one call deeper.
    pub inner_attempt: u16,
}

/// The price of one unit of `sku`, in cents; `discontinued` is not sold.
#[microservice]
pub async fn unit_price(sku: String) -> Result<u64, ServiceError> {
    if sku == "discontinued" {
        return Err(ServiceError::not_found(format!("no product `{sku}`")));
    }
    Ok(100 + sku.bytes().map(u64::from).sum::<u64>() % 900)
}

/// Path parameter and query: the price of `qty` (default 1) units of `sku`.
#[microservice(exposed, http = "GET /price/{sku}", timeout = "10s")]
pub async fn price(
    sku: String,
    qty: Option<u32>,
    currency: Option<Currency>,
) -> Result<Quote, ServiceError> {
    let qty = qty.unwrap_or(1);
    let unit_cents = unit_price(sku.clone()).await?;
    Ok(Quote {
        sku,
        qty,
        unit_cents,
        total_cents: unit_cents * u64::from(qty),
        currency: currency.unwrap_or(Currency::Eur),
    })
}

/// The default route with a body of typed values: place an order.
#[microservice(exposed, timeout = "10s")]
pub async fn order(lines: Vec<Line>, note: Option<String>) -> Result<Order, ServiceError> {
    let mut total_cents: u64 = 0;
    for line in &lines {
        let unit = unit_price(line.sku.clone()).await?;
        total_cents = total_cents.saturating_add(unit.saturating_mul(u64::from(line.qty)));
    }
    Ok(Order {
        lines,
        total_cents,
        note,
        request_id: colony::context::request_id(),
    })
}

/// Path parameter and body: set a line of cart `cart`.
#[microservice(exposed, http = "PUT /carts/{cart}/lines")]
pub async fn set_line(cart: u64, line: Line, replace: Option<bool>) -> Result<Cart, ServiceError> {
    Ok(Cart {
        cart,
        line,
        replaced: replace.unwrap_or(false),
    })
}

/// Two path parameters and no result: remove line `index` of cart `cart`.
#[microservice(exposed, http = "DELETE /carts/{cart}/lines/{index}")]
pub async fn remove_line(cart: u64, index: u32) -> Result<(), ServiceError> {
    if index >= 100 {
        return Err(ServiceError::not_found(format!(
            "cart {cart} has no line {index}"
        )));
    }
    Ok(())
}

/// What the request looks like two services deep.
#[microservice(exposed, http = "GET /whoami")]
pub async fn whoami() -> Result<Seen, ServiceError> {
    let (inner_request_id, inner_attempt) = seen().await?;
    Ok(Seen {
        request_id: colony::context::request_id(),
        inner_request_id,
        inner_attempt,
    })
}

/// The request id and try number of the call being served.
#[microservice]
pub async fn seen() -> Result<(Option<String>, u16), ServiceError> {
    Ok((colony::context::request_id(), colony::context::attempt()))
}

/// Faults, for the gateway's tests (not part of the shop's API).
pub mod ops {
    use std::time::Duration;

    use colony::{ServiceError, microservice};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    /// What a nap saw.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    pub struct Nap {
        /// How long it slept.
        pub ms: u64,
        /// The try number: 0 unless the gateway retried the request.
        pub attempt: u16,
        /// The request id.
        pub request_id: Option<String>,
    }

    /// Sleeps `ms` milliseconds, logging when it starts, then says which try it was.
    #[microservice(exposed, http = "POST /ops/nap", timeout = "60s")]
    pub async fn nap(ms: u64) -> Result<Nap, ServiceError> {
        tracing::info!(ms, "nap started");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(Nap {
            ms,
            attempt: colony::context::attempt(),
            request_id: colony::context::request_id(),
        })
    }

    /// Fails with its own error, of the given kind.
    #[microservice(exposed, http = "POST /ops/fail")]
    pub async fn fail(kind: colony::ErrorKind, message: String) -> Result<(), ServiceError> {
        Err(ServiceError::new(kind, message))
    }

    /// Panics with a message that must not reach the HTTP client.
    #[microservice(exposed, http = "POST /ops/explode")]
    pub async fn explode() -> Result<(), ServiceError> {
        panic!("secret internals: the ledger at 10.1.2.3 is locked")
    }
}
