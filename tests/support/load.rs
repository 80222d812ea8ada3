//! A closed-loop load generator (tokio + hyper) that counts every outcome:
//! status codes, connection errors, resets, timeouts, and which version
//! answered, per client, in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One kind of request the clients cycle through.
#[derive(Debug, Clone)]
pub enum Req {
    Get(&'static str),
    Post(&'static str, usize),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Clients that keep one connection (reconnecting only after an error).
    pub keepalive_clients: usize,
    /// Clients that open a new connection per request.
    pub fresh_clients: usize,
    /// Each client cycles through these, starting at its own offset.
    pub mix: Vec<Req>,
    /// A request not answered within this counts as a timeout.
    pub timeout: Duration,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            keepalive_clients: 8,
            fresh_clients: 4,
            mix: vec![
                Req::Get("/"),
                Req::Post("/", 4096),
                Req::Get("/slow?ms=300"),
                Req::Get("/"),
            ],
            timeout: Duration::from_secs(30),
        }
    }
}

/// Everything that happened.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub total: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub connect_errors: u64,
    pub resets: u64,
    pub timeouts: u64,
    pub other_errors: u64,
    /// A few failure descriptions, for assertion messages.
    pub samples: Vec<String>,
    /// Per client: the versions that answered, in order, repeats folded.
    pub versions: Vec<Vec<String>>,
    /// Successful requests: when each ended and its latency in microseconds.
    pub latencies: Vec<(Instant, u64)>,
}

impl LoadReport {
    /// Requests that did not get a 2xx.
    pub fn failures(&self) -> u64 {
        let non_2xx: u64 = self
            .by_status
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        non_2xx + self.connect_errors + self.resets + self.timeouts + self.other_errors
    }

    pub fn ok(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| (200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    fn merge(&mut self, other: LoadReport) {
        self.total += other.total;
        for (s, n) in other.by_status {
            *self.by_status.entry(s).or_default() += n;
        }
        self.connect_errors += other.connect_errors;
        self.resets += other.resets;
        self.timeouts += other.timeouts;
        self.other_errors += other.other_errors;
        self.samples.extend(other.samples.into_iter().take(10));
        self.versions.extend(other.versions);
        self.latencies.extend(other.latencies);
    }

    /// True when every client saw versions only in the order of `order`.
    pub fn versions_only_move_forward(&self, order: &[&str]) -> bool {
        self.versions.iter().all(|seen| {
            let ranks: Vec<usize> = seen.iter().filter_map(|v| order.iter().position(|o| o == v)).collect();
            ranks.len() == seen.len() && ranks.windows(2).all(|w| w[0] <= w[1])
        })
    }
}

/// A running load; [`Load::stop`] ends it and returns the report.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Responses received so far (any status), across every client.
    answered: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<LoadReport>,
}

impl Load {
    /// Starts `spec` against `proxy` on its own runtime thread.
    pub fn start(proxy: SocketAddr, spec: LoadSpec) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let answered = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&answered);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for i in 0..spec.keepalive_clients + spec.fresh_clients {
                    let keepalive = i < spec.keepalive_clients;
                    tasks.push(tokio::spawn(client(
                        proxy,
                        spec.clone(),
                        i,
                        keepalive,
                        Arc::clone(&flag),
                        Arc::clone(&counter),
                    )));
                }
                let mut report = LoadReport::default();
                for t in tasks {
                    report.merge(t.await.unwrap());
                }
                report
            })
        });
        Self { stop, answered, thread }
    }

    /// Responses received so far, across every client.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits (up to `timeout`, else panics) until `more` responses beyond
    /// those received so far have arrived: the load has run through
    /// whatever state the system is in now.
    pub fn wait_for_more(&self, more: u64, timeout: Duration) {
        let target = self.answered() + more;
        let deadline = Instant::now() + timeout;
        while self.answered() < target {
            assert!(
                Instant::now() < deadline,
                "the load got {} of {more} more responses in {timeout:?}",
                more - (target - self.answered())
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops every client after its current request; the report.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(proxy: SocketAddr) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn client(
    proxy: SocketAddr,
    spec: LoadSpec,
    index: usize,
    keepalive: bool,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> LoadReport {
    let mut report = LoadReport::default();
    let mut versions: Vec<String> = Vec::new();
    let mut sender: Option<Sender> = None;
    let mut n = index;
    while !stop.load(Ordering::SeqCst) {
        let req = &spec.mix[n % spec.mix.len()];
        n += 1;
        report.total += 1;
        let started = Instant::now();
        let outcome = tokio::time::timeout(spec.timeout, async {
            let mut s = match sender.take() {
                Some(s) if keepalive && !s.is_closed() => s,
                _ => connect(proxy).await.map_err(Failure::Connect)?,
            };
            s.ready().await.map_err(Failure::Http)?;
            let (method, path, body) = match req {
                Req::Get(path) => ("GET", *path, Bytes::new()),
                Req::Post(path, size) => ("POST", *path, Bytes::from(vec![b'x'; *size])),
            };
            let request = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, "load.test")
                .body(Full::new(body))
                .unwrap();
            let response = s.send_request(request).await.map_err(Failure::Http)?;
            let status = response.status().as_u16();
            let version = response
                .headers()
                .get("x-app-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            response.into_body().collect().await.map_err(Failure::Http)?;
            Ok::<_, Failure>((status, version, s))
        })
        .await;
        match outcome {
            Ok(Ok((status, version, s))) => {
                answered.fetch_add(1, Ordering::SeqCst);
                *report.by_status.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    report
                        .latencies
                        .push((Instant::now(), started.elapsed().as_micros() as u64));
                } else if report.samples.len() < 10 {
                    report
                        .samples
                        .push(format!("client {index}: status {status} for {req:?}"));
                }
                if let Some(v) = version {
                    if versions.last() != Some(&v) {
                        versions.push(v);
                    }
                }
                if keepalive {
                    sender = Some(s);
                }
            }
            Ok(Err(failure)) => {
                match &failure {
                    Failure::Connect(_) => report.connect_errors += 1,
                    Failure::Http(e) if is_reset(e) => report.resets += 1,
                    Failure::Http(_) => report.other_errors += 1,
                }
                if report.samples.len() < 10 {
                    report.samples.push(format!("client {index}: {failure:?} for {req:?}"));
                }
            }
            Err(_) => {
                report.timeouts += 1;
                if report.samples.len() < 10 {
                    report.samples.push(format!("client {index}: timeout for {req:?}"));
                }
            }
        }
    }
    report.versions.push(versions);
    report
}

#[derive(Debug)]
enum Failure {
    Connect(#[allow(dead_code)] std::io::Error),
    Http(hyper::Error),
}

fn is_reset(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        source = err.source();
    }
    false
}
