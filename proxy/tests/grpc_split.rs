//! gRPC calls take a split like any request (SPEC §4 "canary"): the
//! sticky cookie picks the version and never reaches the backend, and each
//! version counts its answers.

mod harness;

use std::convert::Infallible;
use std::sync::Arc;

use cutover_proxy::{Backend, Split, SplitStats, UpstreamProtocol};
use harness::{settings, Edge, APP, WAIT};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};

/// An h2c backend answering every call Trailers-Only with `grpc-status: 0`,
/// naming itself (`x-backend`) and the cookies it got (`x-cookie`).
async fn grpc_backend(name: &'static str, generation: u64) -> Arc<Backend> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| async move {
                let cookies: Vec<&str> = request
                    .headers()
                    .get_all("cookie")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                let cookies = if cookies.is_empty() {
                    "-".to_owned()
                } else {
                    cookies.join(" | ")
                };
                let response = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", "0")
                    .header("x-backend", name)
                    .header("x-cookie", cookies)
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .http2_only()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Backend::new(addr, name, generation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_takes_the_split_its_cookie_and_is_counted() {
    let stable = grpc_backend("stable", 1).await;
    let canary = grpc_backend("canary", 2).await;
    let edge = Edge::start(settings(), vec![]).await;
    let stats = SplitStats::new();
    edge.publish(vec![Arc::clone(&stable)], |b| {
        b.upstream(APP, UpstreamProtocol::H2c);
        b.split(
            APP,
            Split {
                canary: vec![Arc::clone(&canary)],
                weight_bp: 0,
                sticky: true,
                stable_tag: "v1".into(),
                canary_tag: "v2".into(),
                stats: Arc::clone(&stats),
            },
        );
    });
    let tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    for cookie in [None, Some("cutover-web=v2")] {
        let mut send = send.clone().ready().await.unwrap();
        let mut call = http::Request::post("http://shop.test/demo.Echo/Say")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("cookie", "a=1");
        if let Some(cookie) = cookie {
            call = call.header("cookie", cookie);
        }
        let (response, _) = send.send_request(call.body(()).unwrap(), true).unwrap();
        let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
        let headers = response.headers();
        assert_eq!(headers["grpc-status"], "0");
        // Weight 0: stable, unless the cookie names the canary.
        let expected = if cookie.is_some() { "canary" } else { "stable" };
        assert_eq!(headers["x-backend"], expected);
        assert_eq!(headers["x-cookie"], "a=1");
    }
    assert_eq!(stats.stable().snapshot().requests, 1);
    assert_eq!(stats.canary().snapshot().requests, 1);
}
