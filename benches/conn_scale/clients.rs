//! The clients: keep-alive connections and WebSockets opened in bulk,
//! with bounded concurrency, retries and a time limit.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::{ATTEMPTS, ATTEMPT_TIMEOUT, CLOSE_GRACE, CLOSE_MARGIN};

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// What opening `n` connections gave.
pub struct Opened<T> {
    pub items: Vec<T>,
    pub elapsed: Duration,
    pub retries: usize,
    pub failed: usize,
    pub last_error: Option<String>,
    pub timed_out: bool,
}

impl<T> Opened<T> {
    pub fn describe(&self, n: usize) -> String {
        format!(
            "opened {}/{n} in {:.2} s, {} retries, {} failed{}{}",
            self.items.len(),
            self.elapsed.as_secs_f64(),
            self.retries,
            self.failed,
            if self.timed_out { ", TIMED OUT" } else { "" },
            self.last_error
                .as_ref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )
    }
}

/// Opens `n` connections with `open`, `concurrency` at a time, each tried
/// up to `ATTEMPTS` times with a growing pause; stops at `limit`.
pub async fn open_many<T, Fut>(n: usize, concurrency: usize, limit: Duration, open: impl Fn() -> Fut) -> Opened<T>
where
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let open = &open;
    let attempts = stream::iter(0..n)
        .map(|_| async move {
            let mut tries = 0;
            loop {
                let error = match tokio::time::timeout(ATTEMPT_TIMEOUT, open()).await {
                    Ok(Ok(item)) => return (Ok(item), tries),
                    Ok(Err(e)) => e,
                    Err(_) => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
                };
                tries += 1;
                if tries == ATTEMPTS as usize {
                    return (Err(error), tries - 1);
                }
                tokio::time::sleep(Duration::from_millis(50 << tries)).await;
            }
        })
        .buffer_unordered(concurrency);
    let mut attempts = Box::pin(attempts);
    let mut opened = Opened {
        items: Vec::with_capacity(n),
        elapsed: Duration::ZERO,
        retries: 0,
        failed: 0,
        last_error: None,
        timed_out: false,
    };
    loop {
        match tokio::time::timeout_at(deadline, attempts.next()).await {
            Err(_) => {
                opened.timed_out = true;
                break;
            }
            Ok(None) => break,
            Ok(Some((result, retries))) => {
                opened.retries += retries;
                match result {
                    Ok(item) => opened.items.push(item),
                    Err(e) => {
                        opened.failed += 1;
                        opened.last_error = Some(e);
                    }
                }
            }
        }
    }
    opened.elapsed = start.elapsed();
    opened
}

/// A connection that sent `GET /` and read the whole 200 answer.
pub async fn keepalive_connection(proxy: SocketAddr) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).await.map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the whole answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut headers);
        let head = match answer.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(format!("bad answer: {e}")),
        };
        if answer.code != Some(200) {
            return Err(format!("status {:?}", answer.code));
        }
        let header = |name: &str| {
            answer
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
        };
        let body = &buf[head..];
        let whole = if let Some(len) = header("content-length") {
            body.len()
                >= len
                    .trim()
                    .parse::<usize>()
                    .map_err(|e| format!("content-length: {e}"))?
        } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            body.ends_with(b"0\r\n\r\n")
        } else {
            return Err("an answer without a length on a keep-alive connection".into());
        };
        if whole {
            return Ok(s);
        }
    }
}

pub async fn websocket(proxy: SocketAddr) -> Result<Ws, String> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{proxy}/ws"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Reads `ws` until the server's close frame: its code (0 when the
/// connection ended without one) and when it came; `None` if nothing came
/// by `deadline`. After the frame it keeps reading a little, so the client's
/// close reply goes out and the server can end the connection cleanly.
pub async fn wait_close(mut ws: Ws, deadline: tokio::time::Instant) -> Option<(u16, Instant)> {
    let mut closed: Option<(u16, Instant)> = None;
    let mut deadline = deadline;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return closed,
            Ok(None) | Ok(Some(Err(_))) => return closed.or(Some((0, Instant::now()))),
            Ok(Some(Ok(Message::Close(frame)))) => {
                if closed.is_none() {
                    closed = Some((frame.map_or(1005, |f| u16::from(f.code)), Instant::now()));
                    deadline = deadline.min(tokio::time::Instant::now() + CLOSE_GRACE + CLOSE_MARGIN);
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}
