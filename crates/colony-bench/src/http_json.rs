//! axum + hyper HTTP/1.1 JSON echo.
//!
//! The server is an axum router with `POST /echo` taking and returning
//! `{"payload": "<the 32 bytes>"}` (the payload is ASCII, so it travels as a JSON string).
//! The client is hyper-util's pooled legacy client with keep-alive: with 64 calls in
//! flight it opens 64 connections, one request at a time on each, as HTTP/1.1 requires.
//! Both sides encode and decode the JSON on every call, as the RPC peers do their formats.

use axum::Json;
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::measure::{self, Client, Result};

/// The request and the reply.
#[derive(Debug, Serialize, Deserialize)]
struct EchoBody {
    /// The bytes to echo.
    payload: String,
}

async fn echo(Json(body): Json<EchoBody>) -> Json<EchoBody> {
    Json(body)
}

/// Serve the echo route on `listener` until the runtime stops.
pub(crate) async fn serve(listener: tokio::net::TcpListener) {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("HTTP server: could not set TCP_NODELAY: {e}");
        }
    });
    let app = axum::Router::new().route("/echo", axum::routing::post(echo));
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("HTTP server: {e}");
    }
}

/// A pooled keep-alive HTTP/1.1 client; clones share the pool.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: HyperClient<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    payload: String,
}

impl HttpClient {
    /// A client of the server at `addr`.
    pub(crate) fn new(addr: &str) -> Result<HttpClient> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        Ok(HttpClient {
            client,
            uri: format!("http://{addr}/echo").parse()?,
            payload: String::from_utf8(measure::PAYLOAD.to_vec())?,
        })
    }
}

impl Client for HttpClient {
    async fn call(&mut self) -> Result<()> {
        let body = serde_json::to_vec(&EchoBody {
            payload: self.payload.clone(),
        })?;
        let request = hyper::Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self.client.request(request).await?;
        if !response.status().is_success() {
            return Err(format!("the HTTP server answered {}", response.status()).into());
        }
        let bytes = response.into_body().collect().await?.to_bytes();
        let reply: EchoBody = serde_json::from_slice(&bytes)?;
        measure::check(reply.payload.as_bytes())
    }
}
