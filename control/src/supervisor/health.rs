//! The readiness probe: `GET <health.path>` on a fresh connection; any 2xx
//! within the timeout is healthy.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    #[error("answered {0}")]
    Status(http::StatusCode),
}

/// Probes `http://addr<path>` once.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    tokio::time::timeout(timeout, probe_inner(addr, path))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

async fn probe_inner(addr: SocketAddr, path: &str) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(addr).await.map_err(ProbeError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "cutover-health")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await;
    conn.abort();
    let status = response?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}
