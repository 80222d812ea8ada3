//! One HTTP/2 connection per backend generation, shared by all its gRPC
//! calls (streams multiplexed on it).
//!
//! The connection lives in the [`Backend`](crate::Backend) itself, so it
//! can never serve another process: a new process behind the same address
//! is a new `Backend` with a new generation. Draining forgets it (calls
//! already on it finish, then hyper closes it), and it is gone with the
//! `Backend` at the latest.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::RequestBody;

/// A handle on the backend's connection; cheap to clone.
pub(crate) type Sender = http2::SendRequest<RequestBody>;

/// Pings an otherwise silent connection this often, so a backend that
/// vanished (no FIN: a dead host, a dropped route) is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// The backend's shared HTTP/2 connection, if one is open.
#[derive(Default)]
pub struct H2Slot {
    conn: std::sync::Mutex<Option<Sender>>,
    /// Held while connecting, so concurrent calls wait for one connect
    /// instead of racing to open several.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for H2Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Slot").finish_non_exhaustive()
    }
}

/// Why no connection to a backend could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting timed out")]
    Timeout,
    #[error("cannot connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

impl H2Slot {
    /// A handle on the open connection, or a new one when there is none
    /// or it closed. Concurrent calls wait for one connect, never race
    /// to open several.
    pub(crate) async fn sender(&self, addr: SocketAddr, connect_timeout: Duration) -> Result<Sender, ConnectError> {
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(sender) = self.open() {
            return Ok(sender); // another call connected meanwhile
        }
        let deadline = crate::time::after(connect_timeout);
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let _ = stream.set_nodelay(true);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .adaptive_window(true);
        let (sender, connection) = tokio::time::timeout_at(deadline, builder.handshake(TokioIo::new(stream)))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, error = %e, "HTTP/2 backend connection ended");
            }
        });
        *self.lock() = Some(sender.clone());
        Ok(sender)
    }

    /// The shared connection, if it is still open.
    fn open(&self) -> Option<Sender> {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(Sender::is_closed) {
            *slot = None;
        }
        slot.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Sender>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the shared connection: calls still on it keep it open;
    /// hyper closes it once the last one ends.
    pub(crate) fn release(&self) {
        *self.lock() = None;
    }
}
