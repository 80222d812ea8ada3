//! Telling HTTP/2 from HTTP/1.1 by the client's first bytes, under the head
//! deadline.
//!
//! pingora's own h2c detection (`apps/mod.rs`, `HttpServerOptions::h2c`)
//! peeks for the 24-byte preface with no timeout, so a client that sends
//! nothing holds the connection forever. Here the bytes are *read* (only
//! as many as still match the preface, so an HTTP/1.1 request is known at
//! its first byte) within the deadline, and handed back to pingora through
//! [`Replay`], which reports ALPN `h2` when the preface was there: pingora
//! then takes its HTTP/2 path with its own h2c option off.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{Peek, Ssl, Stream, ALPN};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::time::Instant;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes said.
#[derive(Debug)]
pub(crate) enum Sniffed {
    /// The whole preface arrived: HTTP/2.
    H2(Bytes),
    /// Something else (these bytes, possibly none): HTTP/1.x.
    Other(Bytes),
    /// The client closed, failed, or did not finish the preface in time.
    Gone,
}

/// Reads from `stream` until its bytes stop matching the HTTP/2 preface or
/// the whole preface arrived, by `deadline`. Only bytes that still match
/// are waited for, so an HTTP/1.x request shorter than the preface is never
/// held up.
pub(crate) async fn sniff(stream: &mut Stream, deadline: Option<Instant>) -> Sniffed {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    let read = async {
        while filled < buf.len() {
            match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => filled += n,
            }
            if buf[..filled] != H2_PREFACE[..filled] {
                return true;
            }
        }
        true
    };
    let complete = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, read).await.unwrap_or(false),
        None => read.await,
    };
    match complete {
        false => Sniffed::Gone,
        true if &buf == H2_PREFACE => Sniffed::H2(Bytes::copy_from_slice(&buf)),
        true => Sniffed::Other(Bytes::copy_from_slice(&buf[..filled])),
    }
}

/// A stream that first gives back bytes already read from it.
pub(crate) struct Replay {
    inner: Stream,
    prefix: Bytes,
    /// Reported as the negotiated protocol (`Some(H2)` after a preface on a
    /// plain connection), else the inner stream's.
    alpn: Option<ALPN>,
}

impl Replay {
    pub(crate) fn new(inner: Stream, prefix: Bytes, alpn: Option<ALPN>) -> Self {
        Self { inner, prefix, alpn }
    }
}

impl AsyncRead for Replay {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

// === pingora's transport traits: forwarded, but for the protocol ===

super::forward::forward_transport!(Replay);

impl Ssl for Replay {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone().or_else(|| self.inner.selected_alpn_proto())
    }
}

// No peeking past bytes already taken (pingora's default: unsupported).
impl Peek for Replay {}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("inner", &self.inner)
            .field("prefix", &self.prefix.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(client_sends: &'static [u8], close: bool) -> Sniffed {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(client_sends).await.unwrap();
            if !close {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        let (socket, _) = listener.accept().await.unwrap();
        let mut stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(socket));
        let out = sniff(&mut stream, Some(crate::time::after(Duration::from_millis(300)))).await;
        client.abort();
        out
    }

    #[tokio::test]
    async fn the_preface_is_http2_and_anything_else_is_known_at_once() {
        assert!(matches!(sniffed(H2_PREFACE, false).await, Sniffed::H2(b) if &b[..] == H2_PREFACE));
        // An HTTP/1.0 request shorter than the preface is not waited on.
        assert!(matches!(sniffed(b"GET / HTTP/1.0\r\n\r\n", false).await, Sniffed::Other(b) if b.starts_with(b"G")));
        // Half a preface, then silence: gone at the deadline.
        assert!(matches!(sniffed(&H2_PREFACE[..10], false).await, Sniffed::Gone));
        // Nothing, then a close.
        assert!(matches!(sniffed(b"", true).await, Sniffed::Gone));
    }
}
