//! `demo-app`: the small HTTP app that `cutover up` runs by default and that
//! cutover's end-to-end tests use to drive every deploy path.
//!
//! It listens on `127.0.0.1:$PORT` and answers:
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | `"{version} {instance} {role}\n"`; a 500 for the share `DEMO_ERROR_RATE` asks (see below) |
//! | `POST /` | the same line, then `"received {n} bytes\n"` (the body is read to its end); 500s like `GET /` |
//! | `GET /health` | `200 ok`, or `503` while made unhealthy (see below) |
//! | `GET /headers` | the request headers as received, one `name: value` per line |
//! | `GET /slow?ms=N` | sleeps N ms (at most 600000), then `"{version} {instance} slept {N}ms\n"`; 400 without a whole `ms` |
//! | `GET /ws` | WebSocket: echoes text and binary messages (up to 64 MiB; the text `close-me` makes the app close with 4000), sends `tick {version} {instance} {n}` every `DEMO_TICK_MS`; subprotocols `demo.v1` and `chat` (the first one the client offers wins) |
//! | `GET /events` | Server-Sent Events: `event: tick`, `data: {version} {instance} {n}`, `id: {n}`, every `DEMO_SSE_MS`, the first (n = 0) at once |
//! | anything else | 404 |
//!
//! Every response carries `x-app-version` and `x-instance`, and every request
//! is logged as one line on stdout (method, path, status, duration).
//!
//! Environment:
//! - `PORT` (required), `APP_VERSION` (default `dev`), `CUTOVER_INSTANCE`
//!   (default `demo`), `CUTOVER_ROLE` (default `original`).
//! - `DEMO_TICK_MS`: WebSocket tick period (default 1000; 0 = no ticks).
//! - `DEMO_SSE_MS`: SSE event period (default 1000; must be above 0).
//! - `DEMO_START_DELAY_MS`: wait this long before binding the port (a slow start).
//! - `DEMO_FAIL_START=1`: print an error to stderr and exit 1 at once (a failed start).
//! - `DEMO_HEALTH=fail`: `/health` always answers 503.
//! - `DEMO_HEALTH_FAIL_FILE=/path`: `/health` answers 503 while that file exists.
//! - `DEMO_EXIT_AFTER_MS`: exit with code 3 this long after the process started
//!   (a crash; unset or 0: never).
//! - `DEMO_ERROR_RATE`: a fraction (`0` to `1`, e.g. `0.2`) of the requests
//!   to `/` (GET and POST together) answered `500` with
//!   `"{version} {instance} {role} failing on purpose (DEMO_ERROR_RATE)\n"`;
//!   default 0. The failures are spread evenly, not drawn at random: request
//!   n (counting from 1) fails when `floor(n * rate)` grows, so with 0.2
//!   every 5th request fails and any run of requests holds the share to
//!   within one (what a canary's error-rate analysis is tested with).
//! - `DEMO_LATENCY_MS`: every request to `/` waits this long before it is
//!   answered (default 0; a slow version for the latency analysis).
//! - `DEMO_LINGER_MS`: an app whose shutdown outlives the process its
//!   supervisor watches. The server runs in a child process in its own
//!   process group (so a group kill misses it); on SIGTERM the parent closes
//!   the child's stdin, waits until the child stopped listening (the port is
//!   free again) and exits 0, while the child keeps answering requests on
//!   connections already open, as the old version, for this long before it
//!   shuts down (unset or 0: off). What a pooled proxy connection meets when
//!   a new process takes over the same port.
//!
//! A missing or invalid `PORT`, or any invalid knob, exits 2 with a message
//! naming the variable. On SIGTERM or SIGINT the app stops accepting, lets
//! in-flight requests finish, ends WebSocket sessions (close 1001) and SSE
//! streams, and exits 0; whatever is still open 5 s after the signal does not
//! keep it alive.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    convert::Infallible,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::{
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
        Query, Request, State,
    },
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{
        sse::{Event, Sse},
        IntoResponse, Response,
    },
    routing::get,
    Router,
};
use futures_util::{stream, Stream, StreamExt};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    sync::watch,
    time::{interval, interval_at, sleep, Instant, Interval, MissedTickBehavior},
};
use tracing::{info, warn};

/// Longest sleep `/slow` agrees to (10 minutes).
const MAX_SLOW_MS: u64 = 600_000;
/// After SIGTERM/SIGINT, the process exits at the latest this much later.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest WebSocket message and frame accepted (tests echo 1 MiB messages).
const MAX_WS_MESSAGE: usize = 64 << 20;
/// WebSocket subprotocols the app speaks.
const SUBPROTOCOLS: [&str; 2] = ["demo.v1", "chat"];

/// Identity and knobs, read once from the environment.
struct Config {
    port: u16,
    version: String,
    instance: String,
    role: String,
    start_delay: Duration,
    fail_start: bool,
    exit_after: Option<Duration>,
    health_fail: bool,
    health_fail_file: Option<PathBuf>,
    tick: Option<Duration>,
    sse_every: Duration,
    linger: Option<Duration>,
    /// `DEMO_ERROR_RATE` in parts per million (0..=1_000_000).
    error_rate_ppm: u64,
    /// `DEMO_LATENCY_MS`: added before every answer of `/`.
    latency: Duration,
}

/// Set (by the parent) in the child that serves under `DEMO_LINGER_MS`.
const LINGER_CHILD: &str = "DEMO_LINGER_CHILD";

impl Config {
    /// Reads the environment; the error names the variable and what it accepts.
    fn from_env() -> Result<Config, String> {
        let port = match std::env::var("PORT") {
            Err(_) => return Err("PORT is not set; run with PORT=<1-65535>".into()),
            Ok(v) => match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("PORT={v:?} is not a port number (1-65535)")),
            },
        };
        let sse_every = millis("DEMO_SSE_MS", 1000)?;
        if sse_every.is_zero() {
            return Err("DEMO_SSE_MS=0: the SSE period must be at least 1 ms".into());
        }
        let positive = |d: Duration| Some(d).filter(|d| !d.is_zero());
        Ok(Config {
            port,
            version: text("APP_VERSION", "dev"),
            instance: text("CUTOVER_INSTANCE", "demo"),
            role: text("CUTOVER_ROLE", "original"),
            start_delay: millis("DEMO_START_DELAY_MS", 0)?,
            fail_start: flag("DEMO_FAIL_START", "0", "1")?,
            exit_after: positive(millis("DEMO_EXIT_AFTER_MS", 0)?),
            health_fail: flag("DEMO_HEALTH", "ok", "fail")?,
            health_fail_file: std::env::var_os("DEMO_HEALTH_FAIL_FILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            tick: positive(millis("DEMO_TICK_MS", 1000)?),
            sse_every,
            linger: positive(millis("DEMO_LINGER_MS", 0)?),
            error_rate_ppm: fraction_ppm("DEMO_ERROR_RATE")?,
            latency: millis("DEMO_LATENCY_MS", 0)?,
        })
    }
}

/// A text variable; unset or empty means `default`.
fn text(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A two-valued variable; unset or empty means `off`.
fn flag(name: &str, off: &str, on: &str) -> Result<bool, String> {
    match text(name, off) {
        v if v == on => Ok(true),
        v if v == off => Ok(false),
        v => Err(format!("{name}={v:?}: use {on:?} or {off:?}")),
    }
}

/// A duration in whole milliseconds; unset or empty means `default_ms`.
fn millis(name: &str, default_ms: u64) -> Result<Duration, String> {
    let raw = text(name, &default_ms.to_string());
    raw.trim()
        .parse()
        .map(Duration::from_millis)
        .map_err(|_| format!("{name}={raw:?} is not a whole number of milliseconds"))
}

/// A fraction from 0 to 1 (unset or empty: 0), in parts per million.
fn fraction_ppm(name: &str) -> Result<u64, String> {
    let raw = text(name, "0");
    match raw.trim().parse::<f64>() {
        // Rounded to whole parts per million: a share tests can count exactly.
        Ok(f) if (0.0..=1.0).contains(&f) => Ok((f * PPM as f64).round() as u64),
        _ => Err(format!("{name}={raw:?} is not a fraction from 0 to 1 (e.g. 0.2)")),
    }
}

/// Parts per million in one.
const PPM: u64 = 1_000_000;

/// What every handler shares.
struct App {
    cfg: Config,
    /// Flips to `true` on SIGTERM/SIGINT; long-lived streams end when it does.
    shutdown: watch::Receiver<bool>,
    /// Requests to `/` so far; decides which ones `DEMO_ERROR_RATE` fails.
    root_requests: AtomicU64,
}

impl App {
    /// `"{version} {instance} {role}\n"`, the answer of `GET /`.
    fn identity(&self) -> String {
        let c = &self.cfg;
        format!("{} {} {}\n", c.version, c.instance, c.role)
    }

    /// Counts one request to `/`, waits `DEMO_LATENCY_MS`, and says
    /// whether `DEMO_ERROR_RATE` makes it fail: request n (from 1) fails
    /// when `floor(n * rate)` grows, so failures are evenly spread.
    async fn root_request_fails(&self) -> bool {
        let n = self.root_requests.fetch_add(1, Ordering::Relaxed);
        if !self.cfg.latency.is_zero() {
            sleep(self.cfg.latency).await;
        }
        let failed_through = |count: u64| u128::from(count) * u128::from(self.cfg.error_rate_ppm) / u128::from(PPM);
        failed_through(n.saturating_add(1)) > failed_through(n)
    }

    /// The 500 answer `DEMO_ERROR_RATE` asks for.
    fn failure(&self) -> Response {
        let line = format!("{} failing on purpose (DEMO_ERROR_RATE)\n", self.identity().trim_end());
        (StatusCode::INTERNAL_SERVER_ERROR, line).into_response()
    }
}

type Shared = Arc<App>;

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = match Config::from_env() {
        Ok(cfg) => cfg,
        Err(problem) => {
            eprintln!("demo-app: {problem}");
            return ExitCode::from(2);
        }
    };
    if cfg.fail_start {
        eprintln!("demo-app: failing at start because DEMO_FAIL_START=1");
        return ExitCode::from(1);
    }
    // Plain lines on stdout: cutover keeps instance output in its log files.
    tracing_subscriber::fmt().with_ansi(false).with_target(false).init();
    let outcome = if cfg.linger.is_some() && std::env::var_os(LINGER_CHILD).is_none() {
        run_linger_parent(cfg.port).await
    } else {
        run(cfg).await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("demo-app: {problem}");
            ExitCode::from(1)
        }
    }
}

/// Waits out the start delay, then serves until SIGTERM/SIGINT.
async fn run(cfg: Config) -> Result<(), String> {
    if let Some(after) = cfg.exit_after {
        tokio::spawn(async move {
            sleep(after).await;
            eprintln!("demo-app: crashing on purpose (DEMO_EXIT_AFTER_MS)");
            std::process::exit(3);
        });
    }
    // Installed before the start delay, so a stop during a slow start is prompt.
    let handler_error = |e| format!("cannot install signal handlers: {e}");
    let mut term = signal(SignalKind::terminate()).map_err(handler_error)?;
    let mut int = signal(SignalKind::interrupt()).map_err(handler_error)?;
    let linger_child = std::env::var_os(LINGER_CHILD).is_some();
    let mut stop_signal = Box::pin(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = stdin_closed(), if linger_child => "the parent's stop",
        }
    });
    if !cfg.start_delay.is_zero() {
        info!("waiting {:?} before listening (DEMO_START_DELAY_MS)", cfg.start_delay);
        tokio::select! {
            _ = sleep(cfg.start_delay) => {}
            name = &mut stop_signal => {
                info!("{name} during the start delay; exiting");
                return Ok(());
            }
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", cfg.port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", cfg.port))?;
    let (close_tx, close) = watch::channel(false);
    let listener = ClosableListener::new(listener, close)?;
    let linger = cfg.linger;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let app = Arc::new(App {
        cfg,
        shutdown,
        root_requests: AtomicU64::new(0),
    });
    info!(
        "listening on 127.0.0.1:{} as {}",
        app.cfg.port,
        app.identity().trim_end()
    );
    let shutdown = async move {
        let name = stop_signal.await;
        if let Some(linger) = linger {
            // Stop accepting (the port is free for a successor), keep
            // answering on open connections as if nothing happened.
            let _ = close_tx.send(true);
            info!("{name}: listener closed; answering open connections for {linger:?} (DEMO_LINGER_MS)");
            sleep(linger).await;
        }
        info!("{name}: finishing in-flight requests, then exiting");
        let _ = shutdown_tx.send(true);
        tokio::spawn(async {
            sleep(SHUTDOWN_GRACE).await;
            warn!("still busy {SHUTDOWN_GRACE:?} after the signal; exiting anyway");
            std::process::exit(0);
        });
    };
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("server failed: {e}"))?;
    info!("stopped");
    Ok(())
}

/// The `DEMO_LINGER_MS` parent: runs the server as a child in its own
/// process group; on SIGTERM/SIGINT closes the child's stdin (its stop
/// signal), waits (at most 2 s) until the port is free, and exits 0.
async fn run_linger_parent(port: u16) -> Result<(), String> {
    let handler_error = |e| format!("cannot install signal handlers: {e}");
    let mut term = signal(SignalKind::terminate()).map_err(handler_error)?;
    let mut int = signal(SignalKind::interrupt()).map_err(handler_error)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let mut child = tokio::process::Command::new(exe)
        .env(LINGER_CHILD, "1")
        .stdin(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the serving child: {e}"))?;
    let stdin = child.stdin.take();
    info!("serving from child process {:?} (DEMO_LINGER_MS)", child.id());
    let name = tokio::select! {
        status = child.wait() => {
            let code = status.ok().and_then(|s| s.code()).unwrap_or(1);
            return Err(format!("the serving child exited ({code})"));
        }
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        sleep(Duration::from_millis(5)).await;
    }
    info!("{name}: the child stopped listening; exiting while it lingers");
    Ok(())
}

/// Resolves when stdin reaches its end (or fails): the linger parent's stop.
async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// A listener that can be closed while the server keeps serving the
/// connections it already accepted (`DEMO_LINGER_MS`).
struct ClosableListener {
    inner: Option<TcpListener>,
    addr: std::net::SocketAddr,
    close: watch::Receiver<bool>,
}

impl ClosableListener {
    fn new(inner: TcpListener, close: watch::Receiver<bool>) -> Result<Self, String> {
        let addr = inner.local_addr().map_err(|e| format!("no local address: {e}"))?;
        Ok(Self {
            inner: Some(inner),
            addr,
            close,
        })
    }
}

impl axum::serve::Listener for ClosableListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(listener) = &self.inner else {
                return std::future::pending().await;
            };
            let closing = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => return pair,
                    // Out of descriptors and the like: try again shortly.
                    Err(_) => {
                        sleep(Duration::from_millis(10)).await;
                        false
                    }
                },
                () = until_closed(&mut self.close) => true,
            };
            if closing {
                self.inner = None;
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// Resolves when `close` turns true (never, if its sender is gone).
async fn until_closed(close: &mut watch::Receiver<bool>) {
    if close.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(root).post(root_post))
        .route("/health", get(health))
        .route("/headers", get(headers))
        .route("/slow", get(slow))
        .route("/ws", get(websocket))
        .route("/events", get(events))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn_with_state(app.clone(), log_and_label))
        .with_state(app)
}

/// Logs one line per request and adds the identity headers to every response.
async fn log_and_label(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut response = next.run(req).await;
    let status = response.status().as_u16();
    info!("{method} {path} {status} {:?}", started.elapsed());
    // Skipped if the environment holds something a header cannot carry.
    let headers = response.headers_mut();
    for (name, value) in [("x-app-version", &app.cfg.version), ("x-instance", &app.cfg.instance)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

async fn root(State(app): State<Shared>) -> Response {
    if app.root_request_fails().await {
        return app.failure();
    }
    app.identity().into_response()
}

/// `GET /headers`: the request headers as received, one `name: value` per
/// line (lets tests see what the proxy forwards).
async fn headers(headers: axum::http::HeaderMap) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
        .collect()
}

/// Counts the body as it streams in, so a large upload is not held in memory.
async fn root_post(State(app): State<Shared>, body: Body) -> Response {
    let mut received = 0usize;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => received += bytes.len(),
            Err(e) => {
                let msg = format!("could not read the request body: {e}\n");
                return (StatusCode::BAD_REQUEST, msg).into_response();
            }
        }
    }
    // Decided once the body is read, so a failure leaves the connection usable.
    if app.root_request_fails().await {
        return app.failure();
    }
    format!("{}received {received} bytes\n", app.identity()).into_response()
}

async fn health(State(app): State<Shared>) -> (StatusCode, String) {
    if app.cfg.health_fail {
        let msg = "unhealthy: DEMO_HEALTH=fail\n".to_string();
        return (StatusCode::SERVICE_UNAVAILABLE, msg);
    }
    if let Some(file) = &app.cfg.health_fail_file {
        if tokio::fs::try_exists(file).await.unwrap_or(false) {
            let msg = format!("unhealthy: {} exists\n", file.display());
            return (StatusCode::SERVICE_UNAVAILABLE, msg);
        }
    }
    (StatusCode::OK, "ok\n".into())
}

async fn slow(State(app): State<Shared>, Query(query): Query<HashMap<String, String>>) -> Response {
    let Some(ms) = query.get("ms").and_then(|v| v.parse::<u64>().ok()) else {
        let msg = "usage: /slow?ms=N with N a whole number of milliseconds\n";
        return (StatusCode::BAD_REQUEST, msg).into_response();
    };
    let ms = ms.min(MAX_SLOW_MS);
    sleep(Duration::from_millis(ms)).await;
    format!("{} {} slept {ms}ms\n", app.cfg.version, app.cfg.instance).into_response()
}

async fn websocket(State(app): State<Shared>, headers: HeaderMap, mut ws: WebSocketUpgrade) -> Response {
    // axum's `protocols()` sees the offers as a sorted set; the client's order decides here.
    if let Some(chosen) = pick_subprotocol(&headers) {
        ws.set_selected_protocol(HeaderValue::from_static(chosen));
    }
    ws.max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| websocket_session(app, socket))
}

/// The first subprotocol the client offers that the app speaks.
fn pick_subprotocol(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|offered| SUBPROTOCOLS.into_iter().find(|known| *known == offered))
}

/// Echoes messages and sends ticks until the client closes or the app stops.
async fn websocket_session(app: Shared, mut socket: WebSocket) {
    let mut shutdown = app.shutdown.clone();
    let mut ticks = app.cfg.tick.map(|every| {
        let mut ticks = interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks
    });
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) if text.as_str() == "close-me" => {
                    // The app ends the session itself: close 4000, then wait
                    // for the client's reply.
                    let close = CloseFrame { code: 4000, reason: "closed by the app".into() };
                    if socket.send(Message::Close(Some(close))).await.is_ok() {
                        let _ = socket.recv().await;
                    }
                    return;
                }
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(msg).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    // The close reply is queued; the next read sends it and ends the stream.
                    let _ = socket.recv().await;
                    return;
                }
                Some(Ok(_)) => {} // pings are answered by axum itself
                Some(Err(_)) | None => return,
            },
            () = next_tick(&mut ticks) => {
                let tick = format!("tick {} {} {n}", app.cfg.version, app.cfg.instance);
                if socket.send(Message::Text(tick.into())).await.is_err() {
                    return;
                }
                n += 1;
            }
            () = stopping(&mut shutdown) => {
                let close = CloseFrame { code: 1001, reason: "server shutting down".into() };
                let _ = socket.send(Message::Close(Some(close))).await;
                return;
            }
        }
    }
}

/// The next tick, or never when ticks are off.
async fn next_tick(ticks: &mut Option<Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves once the app is shutting down.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens on the way out.
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

async fn events(State(app): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut every = interval(app.cfg.sse_every);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown = app.shutdown.clone();
    let ticks = stream::unfold((every, 0u64, app), |(mut every, n, app)| async move {
        every.tick().await; // the first tick is immediate
        let data = format!("{} {} {n}", app.cfg.version, app.cfg.instance);
        let event = Event::default().event("tick").data(data).id(n.to_string());
        Some((Ok(event), (every, n + 1, app)))
    });
    // Ending the stream on shutdown lets the graceful shutdown complete.
    Sse::new(ticks.take_until(async move { stopping(&mut shutdown).await }))
}
