//! The gRPC demo's service `demo.Demo`, by hand: prost messages written
//! out (no protoc, no build script) and the service and client glue that
//! tonic's code generator would write, on `tonic::codec::ProstCodec`.
//!
//! ```proto
//! service Demo {
//!   rpc Echo(EchoRequest) returns (EchoReply);        // names the version
//!   rpc Ticks(TickRequest) returns (stream Tick);     // one every interval_ms until cancelled
//! }
//! ```
//!
//! Shared with the tests (`#[path]`), which use the same server and client.
#![allow(dead_code)] // each user takes a different part

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tonic::codec::ProstCodec;
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};

/// `demo.EchoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// The server waits this long before answering (drain tests).
    #[prost(uint32, tag = "2")]
    pub delay_ms: u32,
}

/// `demo.EchoReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, tag = "3")]
    pub instance: String,
    /// The `X-Forwarded-Proto` the call arrived with (what the proxy set).
    #[prost(string, tag = "4")]
    pub forwarded_proto: String,
}

/// `demo.TickRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TickRequest {
    #[prost(uint32, tag = "1")]
    pub interval_ms: u32,
}

/// `demo.Tick`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tick {
    #[prost(uint64, tag = "1")]
    pub n: u64,
    #[prost(string, tag = "2")]
    pub version: String,
}

const ECHO: &str = "/demo.Demo/Echo";
const TICKS: &str = "/demo.Demo/Ticks";

/// The server side of `demo.Demo`.
#[derive(Clone)]
pub struct Demo {
    version: Arc<str>,
    instance: Arc<str>,
}

impl Demo {
    pub fn new(version: &str, instance: &str) -> Self {
        Self {
            version: version.into(),
            instance: instance.into(),
        }
    }
}

impl NamedService for Demo {
    const NAME: &'static str = "demo.Demo";
}

type TickStream = Pin<Box<dyn Stream<Item = Result<Tick, Status>> + Send>>;

struct EchoCall(Demo);

impl UnaryService<EchoRequest> for EchoCall {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        let demo = self.0.clone();
        Box::pin(async move {
            let forwarded_proto = request
                .metadata()
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let request = request.into_inner();
            if request.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
            }
            Ok(Response::new(EchoReply {
                message: request.message,
                version: demo.version.to_string(),
                instance: demo.instance.to_string(),
                forwarded_proto,
            }))
        })
    }
}

struct TicksCall(Demo);

impl ServerStreamingService<TickRequest> for TicksCall {
    type Response = Tick;
    type ResponseStream = TickStream;
    type Future = BoxFuture<Response<TickStream>, Status>;

    fn call(&mut self, request: Request<TickRequest>) -> Self::Future {
        let version = self.0.version.to_string();
        let interval = Duration::from_millis(u64::from(request.into_inner().interval_ms.max(1)));
        Box::pin(async move {
            // Ends only when the client cancels (the stream is dropped).
            let ticks = futures_util::stream::unfold(0u64, move |n| {
                let version = version.clone();
                async move {
                    if n > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    Some((Ok(Tick { n, version }), n + 1))
                }
            });
            Ok(Response::new(Box::pin(ticks) as TickStream))
        })
    }
}

impl<B> Service<http::Request<B>> for Demo
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let demo = self.clone();
        match req.uri().path() {
            ECHO => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
                Ok(grpc.unary(EchoCall(demo), req).await)
            }),
            TICKS => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<Tick, TickRequest>::default());
                Ok(grpc.server_streaming(TicksCall(demo), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// The client side of `demo.Demo`, over any tonic channel.
#[derive(Clone)]
pub struct DemoClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl DemoClient {
    /// A client on `uri` (`http://127.0.0.1:8080`: h2c prior knowledge).
    pub async fn connect(uri: String) -> Result<Self, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(uri)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(Self {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    /// `Echo`.
    pub async fn echo(&mut self, message: &str, delay_ms: u32) -> Result<EchoReply, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        let request = EchoRequest {
            message: message.to_string(),
            delay_ms,
        };
        let path = http::uri::PathAndQuery::from_static(ECHO);
        let codec = ProstCodec::<EchoRequest, EchoReply>::default();
        Ok(self.grpc.unary(Request::new(request), path, codec).await?.into_inner())
    }

    /// A method the server does not have (it answers Trailers-Only,
    /// UNIMPLEMENTED).
    pub async fn missing(&mut self) -> Result<EchoReply, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        let path = http::uri::PathAndQuery::from_static("/demo.Demo/Missing");
        let codec = ProstCodec::<EchoRequest, EchoReply>::default();
        Ok(self
            .grpc
            .unary(Request::new(EchoRequest::default()), path, codec)
            .await?
            .into_inner())
    }

    /// `Ticks`: the stream of ticks.
    pub async fn ticks(&mut self, interval_ms: u32) -> Result<tonic::Streaming<Tick>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        let path = http::uri::PathAndQuery::from_static(TICKS);
        let codec = ProstCodec::<TickRequest, Tick>::default();
        let response = self
            .grpc
            .server_streaming(Request::new(TickRequest { interval_ms }), path, codec)
            .await?;
        Ok(response.into_inner())
    }
}
