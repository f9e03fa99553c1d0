//! tonic gRPC unary echo, over one HTTP/2 connection.
//!
//! There is no `protoc` here, so the message is a hand-derived `prost::Message` and the
//! client and server are what `tonic-build` would generate, written out: the client is
//! `tonic::client::Grpc::unary`, the server a `tower::Service` that routes
//! `/colony.bench.Echo/Echo` to `tonic::server::Grpc::unary`. Concurrent calls share one
//! `Channel` (each task holds a clone), so they are multiplexed as HTTP/2 streams.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::measure::{self, Client, Result};

/// The request and the reply: `message Echo { bytes payload = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EchoMessage {
    /// The bytes to echo.
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) payload: Vec<u8>,
}

/// The method's path.
const ECHO_PATH: &str = "/colony.bench.Echo/Echo";

/// The echo server: a `tower::Service` over HTTP requests, as `tonic-build` generates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = "colony.bench.Echo";
}

/// The handler of the one method.
struct EchoMethod;

impl UnaryService<EchoMessage> for EchoMethod {
    type Response = EchoMessage;
    type Future = Ready<std::result::Result<Response<EchoMessage>, Status>>;

    fn call(&mut self, request: Request<EchoMessage>) -> Self::Future {
        ready(Ok(Response::new(request.into_inner())))
    }
}

impl<B> Service<http::Request<B>> for EchoServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == ECHO_PATH {
            Box::pin(async move {
                let codec = ProstCodec::<EchoMessage, EchoMessage>::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.unary(EchoMethod, req).await)
            })
        } else {
            Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) })
        }
    }
}

/// Serve [`EchoServer`] on `listener` until the runtime stops.
pub(crate) async fn serve(listener: tokio::net::TcpListener) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = tonic::transport::Server::builder()
        .add_service(EchoServer)
        .serve_with_incoming(incoming)
        .await;
    if let Err(e) = served {
        eprintln!("gRPC server: {e}");
    }
}

/// A client on one HTTP/2 channel; clones share the channel.
#[derive(Debug, Clone)]
pub(crate) struct GrpcClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl GrpcClient {
    /// Connect one channel to `addr`.
    pub(crate) async fn connect(addr: &str) -> Result<GrpcClient> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(GrpcClient {
            grpc: tonic::client::Grpc::new(channel),
        })
    }
}

impl Client for GrpcClient {
    async fn call(&mut self) -> Result<()> {
        self.grpc.ready().await?;
        let request = Request::new(EchoMessage {
            payload: measure::PAYLOAD.to_vec(),
        });
        let path = http::uri::PathAndQuery::from_static(ECHO_PATH);
        let codec = ProstCodec::<EchoMessage, EchoMessage>::default();
        let reply: Response<EchoMessage> = self.grpc.unary(request, path, codec).await?;
        measure::check(&reply.into_inner().payload)
    }
}
