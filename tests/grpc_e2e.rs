//! gRPC through the cutover binary (SPEC §3 `upstream: h2c`, §4 "gRPC and
//! other HTTP/2 streams"): the gRPC demo as an `h2c` app, tonic clients
//! talking h2c (prior knowledge, `proxy.h2c`) to cutover, rolling deploys.

mod support;

#[path = "../src/bin/grpc-demo/echo.rs"]
mod echo;
#[path = "support/grpc.rs"]
mod grpc_load;

use std::time::Duration;

use echo::DemoClient;
use grpc_load::GrpcLoad;
use support::{App, Cutover};

fn grpc_demo() -> &'static str {
    env!("CARGO_BIN_EXE_grpc-demo")
}

/// cutover with h2c on its listener and the gRPC demo as app `grpc`.
fn start(instances: u32) -> Cutover {
    Cutover::builder()
        .app(
            App::demo("grpc", "v1")
                .command(&[grpc_demo()])
                .instances(instances)
                .yaml("upstream: h2c")
                .yaml("drain_timeout: 10s")
                .yaml("deploy_strategy: rolling"),
        )
        .route("*", "/", "grpc")
        .proxy_yaml("h2c: true")
        .proxy_yaml("long_lived: { spread: 500ms, close_grace: 500ms }")
        .start()
}

fn push_version(cutover: &Cutover, from: &str, to: &str) {
    let (code, out, err) = cutover.push(
        &cutover.config_with_version(from, to),
        &["--deploy-strategy", "rolling"],
    );
    assert_eq!(code, 0, "push {to}: {out}\n{err}\nlog:\n{}", cutover.log());
    assert!(out.contains("succeeded"), "{out}");
    std::fs::write(&cutover.config, cutover.config_with_version(from, to)).unwrap();
}

#[test]
fn unary_calls_under_load_across_rolling_deploys_fail_none() {
    let cutover = start(2);
    let load = GrpcLoad::start(cutover.proxy, 3, 4);
    load.wait_for_more(50, Duration::from_secs(20));
    for (from, to) in [("v1", "v2"), ("v2", "v3"), ("v3", "v4")] {
        push_version(&cutover, from, to);
        load.wait_for_more(30, Duration::from_secs(20));
    }
    let report = load.stop();
    assert!(report.failures.is_empty(), "failed calls: {:?}", report.failures);
    assert!(report.ok > 100, "the load ran: {}", report.ok);
    assert!(
        report
            .versions
            .iter()
            .all(|seen| seen.last().map(String::as_str) == Some("v4")),
        "every caller ends on v4: {:?}",
        report.versions
    );
}

#[test]
fn a_streaming_call_open_during_a_deploy_ends_with_unavailable_and_a_new_call_reaches_the_new_version() {
    let cutover = start(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut client = runtime
        .block_on(DemoClient::connect(format!("http://{}", cutover.proxy)))
        .unwrap();
    let mut ticks = runtime.block_on(client.ticks(50)).unwrap();
    let first = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), ticks.message()).await })
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.version, "v1");

    let status = std::thread::scope(|scope| {
        let deploy = scope.spawn(|| push_version(&cutover, "v1", "v2"));
        let status = runtime.block_on(async {
            loop {
                match tokio::time::timeout(Duration::from_secs(30), ticks.message()).await {
                    Err(_) => panic!("the stream was not ended during the deploy"),
                    Ok(Ok(Some(tick))) => assert_eq!(tick.version, "v1"),
                    Ok(Ok(None)) => panic!("the stream ended without a status"),
                    Ok(Err(status)) => break status,
                }
            }
        });
        deploy.join().unwrap();
        status
    });
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("restarting"), "{status:?}");

    // The client calls again, on the same connection to cutover.
    let tick = runtime.block_on(async {
        let mut ticks = client.ticks(50).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), ticks.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    });
    assert_eq!(tick.version, "v2");
    assert_eq!(runtime.block_on(client.echo("after", 0)).unwrap().version, "v2");
}

#[test]
fn moving_an_app_from_http1_to_h2c_switches_protocol_with_its_instances() {
    // An HTTP/1-only app (Python's http.server, which answers HTTP/2's
    // preface with an error), pushed as the gRPC demo with `upstream: h2c`:
    // the old instances must keep getting HTTP/1.1 until the table swap
    // that brings in the new ones, so a load of requests both can answer
    // (`/health`) sees no failure across the deploy.
    let http1_only =
        "mkdir -p www && echo ok > www/health && exec python3 -m http.server --bind 127.0.0.1 --directory www $PORT";
    let cutover = Cutover::builder()
        .app(
            App::demo("grpc", "v1")
                .command(&["sh", "-c", http1_only])
                .yaml("drain_timeout: 10s")
                .yaml("deploy_strategy: rolling"),
        )
        .route("*", "/", "grpc")
        .proxy_yaml("long_lived: { spread: 500ms, close_grace: 500ms }")
        .start();
    let load = support::load::Load::start(
        cutover.proxy,
        support::load::LoadSpec {
            keepalive_clients: 4,
            fresh_clients: 2,
            mix: vec![support::load::Req::Get("/health")],
            timeout: Duration::from_secs(30),
        },
    );
    load.wait_for_more(50, Duration::from_secs(20));
    let old_command = format!("[\"sh\", \"-c\", {http1_only:?}]");
    let pushed = cutover
        .config_text()
        .replacen(&old_command, &format!("[{:?}]\n    upstream: h2c", grpc_demo()), 1);
    assert_ne!(pushed, cutover.config_text(), "the push changes the app");
    let (code, out, err) = cutover.push(&pushed, &["--deploy-strategy", "rolling"]);
    assert_eq!(code, 0, "{out}\n{err}\nlog:\n{}", cutover.log());
    load.wait_for_more(50, Duration::from_secs(20));
    let report = load.stop();
    assert_eq!(report.failures(), 0, "{report:?}");
    // The new version is reached over HTTP/2 now.
    let proto = cutover.get("any.test", "/proto");
    assert_eq!(proto.status, 200);
    assert!(proto.text().contains("HTTP/2"), "{}", proto.text());
}
