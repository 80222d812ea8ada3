//! For the self-upgrade tests (issue 11): new binaries to upgrade to (a
//! copy of cutover, one that exits at start, one that hangs), the
//! `cutover upgrade` command, and what an upgrade must leave unchanged
//! (the app processes). Included by `tests/upgrade_e2e.rs` with `#[path]`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{any_thread_alive, cutover_bin, marked_by, process_alive, prom, Cutover};

/// A copy of the cutover binary under the test's directory, named `name`:
/// the "new" binary is another file than the running one, as on a real
/// upgrade.
pub fn copy_of_cutover(cutover: &Cutover, name: &str) -> PathBuf {
    let path = cutover.dir.path().join(name);
    std::fs::copy(cutover_bin(), &path).expect("copy the cutover binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An executable shell script at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A "new binary" that prints an error and exits 1 at start.
pub fn broken_binary(cutover: &Cutover) -> PathBuf {
    script(
        cutover.dir.path(),
        "cutover-broken",
        "echo 'cutover-broken: this binary refuses to start' >&2\nexit 1",
    )
}

/// A "new binary" that never gets ready: it writes its pid to the second
/// path, then becomes `sleep 300` (same process).
pub fn hanging_binary(cutover: &Cutover) -> (PathBuf, PathBuf) {
    let pid_file = cutover.dir.path().join("hanging.pid");
    let path = script(
        cutover.dir.path(),
        "cutover-hanging",
        &format!("echo $$ > {}\nexec sleep 300", pid_file.display()),
    );
    (path, pid_file)
}

/// The pid the hanging binary wrote, once it started (up to `timeout`).
pub fn wait_hanging_pid(pid_file: &Path, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "the hanging binary was not started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cutover upgrade --binary binary`: (exit code, stdout, stderr).
pub fn upgrade(cutover: &Cutover, binary: &Path) -> (i32, String, String) {
    cutover.cli(&["upgrade", "--binary", binary.to_str().unwrap()])
}

/// `cutover upgrade --binary binary`, started in the background.
pub fn spawn_upgrade(cutover: &Cutover, binary: &Path) -> Child {
    Command::new(cutover_bin())
        .args(["upgrade", "--binary", binary.to_str().unwrap()])
        .env("CUTOVER_ADMIN", format!("http://{}", cutover.admin))
        .current_dir(cutover.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cutover upgrade starts")
}

/// Waits (up to `timeout`) for a background command; its (code, output).
pub fn wait_command(mut child: Child, timeout: Duration) -> Option<(i32, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().ok().flatten().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Some((out.status.code().unwrap_or(-1), text));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Instance name -> pid, from `/status`.
pub fn app_pids(cutover: &Cutover) -> BTreeMap<String, u32> {
    cutover.status()["apps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["instances"].as_array().unwrap().clone())
        .filter_map(|i| Some((i["name"].as_str()?.to_string(), i["pid"].as_u64()? as u32)))
        .collect()
}

/// Every live process carrying this cutover's state_dir marker (instances
/// and hooks, whoever their parent is now).
pub fn marked_pids(cutover: &Cutover) -> Vec<u32> {
    let mut pids = marked_by(&cutover.state_dir());
    pids.sort_unstable();
    pids
}

/// The executable a process runs (`/proc/<pid>/exe`).
pub fn exe_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Waits (up to `timeout`) until the cutover serving is no longer `old`
/// (the lock names another live cutover); the new pid.
pub fn wait_pid_change(cutover: &Cutover, old: u32, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pid) = cutover.current_pid().filter(|p| *p != old) {
            return pid;
        }
        assert!(
            !cutover.cutover_processes().is_empty(),
            "no cutover runs any more (the old one {old} exited without a successor); log:\n{}",
            cutover.log()
        );
        assert!(
            Instant::now() < deadline,
            "cutover {old} was not replaced within {timeout:?}; log:\n{}",
            cutover.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to `timeout`) until every thread of `pid` is gone.
pub fn wait_exit(cutover: &Cutover, pid: u32, timeout: Duration) {
    cutover.wait_until(timeout, &format!("process {pid} to exit"), |_| {
        !process_alive(pid) && !any_thread_alive(pid)
    });
}

/// The exit status of the process the test started, waiting (up to
/// `timeout`) until it can be read.
pub fn wait_first_exit(cutover: &mut Cutover, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = cutover.first_exit_status() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the first cutover did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cutover_upgrades_total{outcome}` on the running cutover.
pub fn upgrades_total(cutover: &Cutover, outcome: &str) -> Option<f64> {
    prom::value(&cutover.metrics(), "cutover_upgrades_total", &[("outcome", outcome)])
}

/// True when `text` names why the upgrade failed in words an operator
/// can act on: one of `words` (lowercase) appears.
pub fn says_any(text: &str, words: &[&str]) -> bool {
    let lower = text.to_lowercase();
    words.iter().any(|w| lower.contains(w))
}

/// The parent of a live process.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first().is_some_and(|s| *s == "Z" || *s == "X") {
        return None;
    }
    fields.get(1)?.parse().ok()
}

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws_connect(proxy: SocketAddr) -> Ws {
    let (ws, response) = tokio_tungstenite::connect_async(format!("ws://{proxy}/ws"))
        .await
        .expect("websocket through cutover");
    assert_eq!(response.status(), 101);
    ws
}

/// The next text message, within 10 s.
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame: (code, reason).
pub async fn until_close(ws: &mut Ws, within: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a close frame in time")
        {
            Some(Ok(Message::Close(frame))) => {
                return frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()))
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Open long-lived connections of `kind` the running cutover counts.
pub fn long_lived(cutover: &Cutover, kind: &str) -> f64 {
    cutover
        .metrics()
        .iter()
        .filter(|s| {
            s.name == "cutover_long_lived_connections" && s.labels.get("kind").map(String::as_str) == Some(kind)
        })
        .map(|s| s.value)
        .sum()
}

/// Reads an SSE response until `done` holds for what arrived so far, or
/// the stream ends, or `timeout` passes; everything read.
pub fn sse_read(proxy: SocketAddr, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let mut stream = std::net::TcpStream::connect(proxy).expect("proxy accepts");
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: sse\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline && !done(&String::from_utf8_lossy(&seen)) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("the SSE stream failed: {e}"),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// The data of the last event of an SSE body.
pub fn last_event(body: &str) -> String {
    body.lines()
        .rev()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// `POST /upgrade` with `body`; (status, JSON answer).
pub fn post_upgrade(cutover: &Cutover, body: &str) -> (u16, Value) {
    let answer = cutover.admin_post_json("/upgrade", body.as_bytes());
    let json = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    (answer.status, json)
}

/// The events of upgrade `id`, to their end.
pub fn upgrade_events(cutover: &Cutover, id: &str) -> String {
    let answer = cutover.admin_get(&format!("/upgrades/{id}/events"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.text()
}
