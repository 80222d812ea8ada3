//! gRPC over TLS (HTTP/2 by ALPN) to an `h2c` app (SPEC §8: "requests
//! reach `http1` or `h2c` upstreams whatever the client spoke"): the
//! takeover serves it like an h2c call, with `X-Forwarded-Proto: https`.
//! The client is the h2 crate over rustls, the call framed by hand (the
//! 5-byte gRPC prefix around prost messages).

mod support;

#[path = "../../src/bin/grpc-demo/echo.rs"]
mod echo;
#[path = "../../src/bin/grpc-demo/server.rs"]
mod server;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use cutover_proxy::{AppId, Backend, HostMatch, RouteTable, UpstreamProtocol};
use prost::Message;
use support::{client, connect_tls, entry, h2_client, settings, Ca, Edge, WAIT};

/// One gRPC message: compressed flag 0, big-endian length, payload.
fn frame(message: &impl Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + payload.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(payload.len()).unwrap());
    framed.put_slice(&payload);
    framed.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_over_tls_reaches_the_h2c_app() {
    let ca = Ca::new();
    let leaf = ca.issue(&["a.test"]);
    let edge = Edge::start(settings(&[entry(&["a.test"], &leaf)])).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let demo = tokio::spawn(server::serve(listener, server::router("v1", "grpc-0"), Arc::default()));
    let mut builder = RouteTable::builder();
    builder.app(
        AppId(0),
        "grpc",
        vec![Backend::new(addr, "grpc-0", 10)],
        edge.proxy_metrics.app("grpc"),
    );
    builder.upstream(AppId(0), UpstreamProtocol::H2c);
    builder.route(HostMatch::Exact("a.test".into()), "/", AppId(0)).unwrap();
    edge.table.publish(builder.build());

    let tls = connect_tls(client(&ca, &[b"h2"]), edge.tls, Some("a.test"))
        .await
        .unwrap();
    let (send, _done) = h2_client(tls).await;
    let request = http::Request::post("https://a.test/demo.Demo/Echo")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let call = async {
        let mut send = send.ready().await.unwrap();
        let (response, mut body) = send.send_request(request, false).unwrap();
        let echo = echo::EchoRequest {
            message: "over tls".into(),
            delay_ms: 0,
        };
        body.send_data(frame(&echo), true).unwrap();
        let (parts, mut body) = response.await.unwrap().into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.unwrap().unwrap_or_default();
        (parts, data, trailers)
    };
    let (parts, data, trailers) = tokio::time::timeout(WAIT, call).await.expect("an answer in time");
    assert_eq!(parts.status, 200);
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..]),
        "{trailers:?}"
    );
    assert!(data.len() > 5, "one message: {data:?}");
    let reply = echo::EchoReply::decode(&data[5..]).unwrap();
    assert_eq!(reply.message, "over tls");
    assert_eq!(reply.version, "v1");
    assert_eq!(reply.forwarded_proto, "https");
    demo.abort();
}
