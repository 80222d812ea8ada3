//! gRPC load through cutover: tonic clients calling the gRPC demo's
//! `Echo` in a closed loop, every outcome counted, with the version that
//! answered each call. Included by the gRPC e2e tests with `#[path]`,
//! next to the demo's own client (`src/bin/grpc-demo/echo.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::echo::DemoClient;

/// Closed-loop unary calls on several client connections.
pub struct GrpcLoad {
    runtime: tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    /// The versions each client saw, in order, repeats collapsed.
    versions: Arc<Mutex<Vec<Vec<String>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a load run saw.
#[derive(Debug)]
pub struct GrpcReport {
    pub ok: u64,
    pub failures: Vec<String>,
    pub versions: Vec<Vec<String>>,
}

impl GrpcLoad {
    /// `connections` client connections to `proxy`, `per_connection`
    /// callers each (calls multiplexed on the connection).
    pub fn start(proxy: SocketAddr, connections: usize, per_connection: usize) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let versions = Arc::new(Mutex::new(vec![Vec::new(); connections * per_connection]));
        let mut tasks = Vec::new();
        for c in 0..connections {
            let client = runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), DemoClient::connect(format!("http://{proxy}"))).await
                })
                .expect("connect to cutover timed out")
                .expect("connect to cutover");
            for i in 0..per_connection {
                let slot = c * per_connection + i;
                let (mut client, stop, ok, failures, versions) = (
                    client.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&ok),
                    Arc::clone(&failures),
                    Arc::clone(&versions),
                );
                tasks.push(runtime.spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let message = format!("{slot}-{n}");
                        let call = tokio::time::timeout(Duration::from_secs(30), client.echo(&message, 0));
                        match call.await {
                            Ok(Ok(reply)) if reply.message == message => {
                                ok.fetch_add(1, Ordering::SeqCst);
                                let mut versions = versions.lock().unwrap();
                                let seen = &mut versions[slot];
                                if seen.last() != Some(&reply.version) {
                                    seen.push(reply.version);
                                }
                            }
                            Ok(Ok(reply)) => failures.lock().unwrap().push(format!("wrong echo {reply:?}")),
                            Ok(Err(status)) => failures.lock().unwrap().push(format!("{status:?}")),
                            Err(_) => failures.lock().unwrap().push("timed out".into()),
                        }
                    }
                }));
            }
        }
        Self {
            runtime,
            stop,
            ok,
            failures,
            versions,
            tasks,
        }
    }

    /// Successful calls so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `n` more calls succeeded (panics after `timeout`).
    pub fn wait_for_more(&self, n: u64, timeout: Duration) {
        let target = self.ok() + n;
        let deadline = Instant::now() + timeout;
        while self.ok() < target {
            assert!(
                Instant::now() < deadline,
                "the gRPC load stalled: {} ok, failures: {:?}",
                self.ok(),
                self.failures.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the callers and reports.
    pub fn stop(self) -> GrpcReport {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(35), task).await });
        }
        let report = GrpcReport {
            ok: self.ok.load(Ordering::SeqCst),
            failures: self.failures.lock().unwrap().clone(),
            versions: self.versions.lock().unwrap().clone(),
        };
        self.runtime.shutdown_background();
        report
    }
}
