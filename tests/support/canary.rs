//! For the canary tests (issue 12): traffic that records every answer
//! (version, status, cookies, timing), a watch on `/status` that records
//! when each canary step was in force (so a test can tell what share of
//! the requests sent during a step the new version answered), the sticky
//! check, and WebSockets pinned by cookie. Included by
//! `tests/progressive_canary.rs` with `#[path]`, next to
//! `support/progressive.rs`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::progressive::{app_in, cookie_name, APP};
use crate::support::http::Client;
use crate::support::Cutover;

// === WebSockets ===

/// A WebSocket client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `/ws` through the proxy, sent with `Cookie: cookie`;
/// asserts that `version` answered the upgrade and echoes.
pub async fn ws_pinned(proxy: SocketAddr, cookie: &str, version: &str) -> Ws {
    let mut request = format!("ws://{proxy}/ws").into_client_request().unwrap();
    request.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("a websocket through cutover");
    assert_eq!(response.status(), 101);
    let answered = response.headers().get("x-app-version").and_then(|v| v.to_str().ok());
    assert_eq!(answered, Some(version), "{response:?}");
    ws.send(Message::Text("hello".into())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                assert_eq!(t.as_str(), "hello");
                return ws;
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected the echo, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame (within `within`); its code.
pub async fn close_code(ws: &mut Ws, within: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map_or(1005, |f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

// === traffic that records every answer ===

/// One request of [`Traffic`] and what came of it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub client: usize,
    /// Sent by a client that keeps the sticky cookie.
    pub sticky: bool,
    pub start: Instant,
    pub end: Instant,
    /// The status, when an answer came.
    pub status: Option<u16>,
    /// `x-app-version`: which version answered (absent on the proxy's own answers).
    pub version: Option<String>,
    /// What failed instead of an answer: `refused`, `reset`, `timeout`, or the error.
    pub error: Option<String>,
    /// The `Cookie` header sent.
    pub sent_cookie: Option<String>,
    /// The `Set-Cookie` header received.
    pub set_cookie: Option<String>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status == Some(200)
    }

    /// Whether the request ran entirely inside `[from, to]`.
    pub fn within(&self, from: Instant, to: Instant) -> bool {
        self.start >= from && self.end <= to
    }
}

/// Closed-loop clients sending `GET {path}` with `Host: t`, each on its own
/// keep-alive connection (a new one after an error): `plain` clients send
/// no cookie, `sticky` ones send back the `cutover-<app>` cookie they were
/// given, as a browser does. Every answer is recorded.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    clients: Vec<JoinHandle<Vec<Answer>>>,
}

impl Traffic {
    pub fn start(proxy: SocketAddr, path: &'static str, plain: usize, sticky: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let clients = (0..plain + sticky)
            .map(|index| {
                let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
                std::thread::spawn(move || run_client(proxy, path, index, index >= plain, &stop, &answered))
            })
            .collect();
        Self {
            stop,
            answered,
            clients,
        }
    }

    /// Answers received so far (any status).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits (up to `timeout`, else panics) for `more` answers beyond those
    /// received so far.
    pub fn wait_for_more(&self, more: u64, timeout: Duration) {
        let target = self.answered() + more;
        let deadline = Instant::now() + timeout;
        while self.answered() < target {
            assert!(
                Instant::now() < deadline,
                "the traffic got no {more} more answers in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops every client after its current request; every answer, by
    /// client in order.
    pub fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        self.clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    }
}

fn run_client(
    proxy: SocketAddr,
    path: &str,
    client: usize,
    sticky: bool,
    stop: &AtomicBool,
    answered: &AtomicU64,
) -> Vec<Answer> {
    let name = cookie_name(APP);
    let mut answers = Vec::new();
    let mut conn: Option<Client> = None;
    let mut cookie: Option<String> = None;
    while !stop.load(Ordering::SeqCst) {
        let start = Instant::now();
        let sent_cookie = cookie.clone();
        let outcome = match conn.take() {
            Some(c) => Ok(c),
            None => Client::connect(proxy),
        }
        .and_then(|mut c| {
            let headers: Vec<(&str, &str)> = sent_cookie.iter().map(|v| ("Cookie", v.as_str())).collect();
            c.send("GET", "t", path, &headers, &[]).map(|resp| (c, resp))
        });
        let mut answer = Answer {
            client,
            sticky,
            start,
            end: Instant::now(),
            status: None,
            version: None,
            error: None,
            sent_cookie,
            set_cookie: None,
        };
        match outcome {
            Ok((c, resp)) => {
                answered.fetch_add(1, Ordering::SeqCst);
                answer.status = Some(resp.status);
                answer.version = resp.header("x-app-version").map(str::to_string);
                answer.set_cookie = resp.header("set-cookie").map(str::to_string);
                if let Some(pair) = answer.set_cookie.as_deref().and_then(|sc| sc.split(';').next()) {
                    if sticky && pair.trim().starts_with(&format!("{name}=")) {
                        cookie = Some(pair.trim().to_string());
                    }
                }
                let closing = resp
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                if !closing {
                    conn = Some(c);
                }
            }
            Err(e) => {
                answer.error = Some(describe(&e));
                // A refused connect would otherwise spin.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        answers.push(answer);
    }
    answers
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".into(),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => "reset".into(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timeout".into(),
        _ => e.to_string(),
    }
}

/// Answers that were not a 200, described (for assertion messages).
pub fn failures(answers: &[Answer]) -> Vec<String> {
    answers
        .iter()
        .filter(|a| !a.ok())
        .map(|a| match (&a.status, &a.error) {
            (Some(s), _) => format!("client {}: {s} from {:?}", a.client, a.version),
            (None, e) => format!("client {}: {e:?}", a.client),
        })
        .collect()
}

// === when each canary step was in force ===

/// One look at `/status`: the app's canary (null when none runs) and
/// switches, and the interval within which the server was in that state.
#[derive(Debug, Clone)]
pub struct Seen {
    pub sent: Instant,
    pub received: Instant,
    pub canary: Value,
    pub switches: Value,
}

/// Polls `/status` every 25 ms on its own thread, recording what it sees.
pub struct StatusWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Seen>>,
}

impl StatusWatch {
    pub fn start(cutover: &Cutover) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (admin, host) = (cutover.admin, cutover.admin_host());
        let auth = cutover.token.as_ref().map(|(_, t)| format!("Bearer {t}"));
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
                let answer = Client::connect(admin).and_then(|mut c| c.send("GET", &host, "/status", &headers, &[]));
                let received = Instant::now();
                if let Some(status) = answer
                    .ok()
                    .filter(|r| r.status == 200)
                    .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
                {
                    let app = app_in(&status, APP);
                    seen.push(Seen {
                        sent,
                        received,
                        canary: app["canary"].clone(),
                        switches: app["switches"].clone(),
                    });
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            seen
        });
        Self { stop, thread }
    }

    pub fn stop(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// A stretch of time during which `/status` showed one canary step.
#[derive(Debug, Clone)]
pub struct StepWindow {
    pub step: u64,
    /// Percent.
    pub weight: f64,
    /// The server was in this step at least from `from` to `to` (the first
    /// look's answer to the last look's request).
    pub from: Instant,
    pub to: Instant,
}

/// The stretches of consecutive looks that showed the same canary step
/// and weight, in order; looks without a canary end a stretch.
pub fn step_windows(seen: &[Seen]) -> Vec<StepWindow> {
    let mut windows: Vec<StepWindow> = Vec::new();
    let mut open = false;
    for look in seen {
        let (Some(step), Some(weight)) = (look.canary["step"].as_u64(), look.canary["weight"].as_f64()) else {
            open = false;
            continue;
        };
        match windows.last_mut() {
            Some(w) if open && w.step == step && w.weight == weight => w.to = look.sent,
            _ => {
                windows.push(StepWindow {
                    step,
                    weight,
                    from: look.received,
                    to: look.sent,
                });
                open = true;
            }
        }
    }
    windows.retain(|w| w.to > w.from);
    windows
}

/// Among the 200s to cookie-less requests that ran entirely inside the
/// window: (answered by `version`, all).
pub fn share_in(answers: &[Answer], window: &StepWindow, version: &str) -> (usize, usize) {
    let inside: Vec<&Answer> = answers
        .iter()
        .filter(|a| !a.sticky && a.sent_cookie.is_none() && a.ok() && a.within(window.from, window.to))
        .collect();
    let new = inside.iter().filter(|a| a.version.as_deref() == Some(version)).count();
    (new, inside.len())
}

/// Sticky clients that changed version before `until`: once a client holds
/// the cookie, every answer it gets must come from the version that gave
/// it the cookie. One line per violation.
pub fn sticky_switches(answers: &[Answer], until: Instant) -> Vec<String> {
    let mut by_client: BTreeMap<usize, Vec<&Answer>> = BTreeMap::new();
    for a in answers.iter().filter(|a| a.sticky && a.end <= until) {
        by_client.entry(a.client).or_default().push(a);
    }
    let mut problems = Vec::new();
    for (client, answers) in by_client {
        let mut pinned: Option<String> = None;
        for a in answers.iter().filter(|a| a.ok()) {
            let has_cookie = a.sent_cookie.is_some();
            let sets_cookie = a
                .set_cookie
                .as_deref()
                .is_some_and(|c| c.starts_with(&cookie_name(APP)));
            if !has_cookie && !sets_cookie {
                continue;
            }
            match (&pinned, &a.version) {
                (Some(p), Some(v)) if p != v => {
                    problems.push(format!(
                        "client {client}: pinned to {p}, answered by {v} (cookie {:?})",
                        a.sent_cookie
                    ));
                }
                (None, Some(v)) => pinned = Some(v.clone()),
                _ => {}
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn look(base: Instant, ms: u64, canary: Value) -> Seen {
        Seen {
            sent: at(base, ms),
            received: at(base, ms + 5),
            canary,
            switches: Value::Null,
        }
    }

    fn answer(base: Instant, client: usize, sticky: bool, (from, to): (u64, u64), version: &str) -> Answer {
        Answer {
            client,
            sticky,
            start: at(base, from),
            end: at(base, to),
            status: Some(200),
            version: Some(version.into()),
            error: None,
            sent_cookie: None,
            set_cookie: None,
        }
    }

    #[test]
    fn windows_span_from_the_first_looks_answer_to_the_last_looks_request() {
        let base = Instant::now();
        let step = |s: u64, w: f64| serde_json::json!({"step": s, "weight": w});
        let seen = [
            look(base, 0, Value::Null),
            look(base, 100, step(1, 20.0)),
            look(base, 200, step(1, 20.0)),
            look(base, 300, step(1, 20.0)),
            look(base, 400, step(2, 50.0)),
            look(base, 500, step(2, 50.0)),
            look(base, 600, Value::Null),
            look(base, 700, step(1, 20.0)),
        ];
        let windows = step_windows(&seen);
        assert_eq!(windows.len(), 2, "{windows:?}");
        assert_eq!((windows[0].step, windows[0].weight), (1, 20.0));
        assert_eq!((windows[0].from, windows[0].to), (at(base, 105), at(base, 300)));
        assert_eq!((windows[1].from, windows[1].to), (at(base, 405), at(base, 500)));

        let answers = [
            answer(base, 0, false, (110, 120), "v2"),
            answer(base, 0, false, (120, 130), "v1"),
            answer(base, 1, false, (290, 310), "v2"), // ends after the window
            answer(base, 2, true, (150, 160), "v2"),  // sticky: not counted
        ];
        assert_eq!(share_in(&answers, &windows[0], "v2"), (1, 2));
    }

    #[test]
    fn a_sticky_client_that_changes_version_once_pinned_is_reported() {
        let base = Instant::now();
        let mut first = answer(base, 0, true, (0, 10), "v1");
        first.set_cookie = Some("cutover-web=abc; Path=/; HttpOnly".into());
        let mut kept = answer(base, 0, true, (10, 20), "v1");
        kept.sent_cookie = Some("cutover-web=abc".into());
        let mut moved = answer(base, 0, true, (20, 30), "v2");
        moved.sent_cookie = Some("cutover-web=abc".into());
        // Before it had a cookie, any version is fine.
        let before = answer(base, 0, true, (0, 0), "v2");
        let answers = [before, first, kept.clone(), moved];
        assert_eq!(sticky_switches(&answers, at(base, 25)), Vec::<String>::new());
        assert_eq!(sticky_switches(&answers, at(base, 30)).len(), 1);
        assert_eq!(sticky_switches(&[kept], at(base, 30)), Vec::<String>::new());
    }
}
