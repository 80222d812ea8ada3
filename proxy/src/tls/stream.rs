//! A client connection after its TLS handshake, as pingora sees it.
//!
//! pingora's HTTP code learns about TLS only through its transport traits
//! (`protocols/mod.rs`): `Ssl::selected_alpn_proto` decides HTTP/2 versus
//! HTTP/1.1 (`apps/mod.rs`), and `Ssl::get_ssl_digest` fills the session's
//! `Digest`, which is how the request path tells "came over TLS"
//! (`session.digest().ssl_digest.is_some()`: `X-Forwarded-Proto: https`,
//! HSTS, no http-01 answers). The socket digest is the TCP socket's, so
//! `client_addr()` still names the peer.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use rustls::ProtocolVersion;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::server::TlsStream;

/// A handshaken TLS client connection over pingora's TCP stream.
pub struct TlsClientStream {
    tls: TlsStream<Stream>,
    digest: Arc<SslDigest>,
    alpn: Option<ALPN>,
}

impl TlsClientStream {
    /// Wraps a finished handshake.
    pub(crate) fn new(tls: TlsStream<Stream>) -> Self {
        let (_, conn) = tls.get_ref();
        let alpn = match conn.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            Some(b"http/1.1") => Some(ALPN::H1),
            _ => None,
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "unknown",
        };
        let digest = Arc::new(SslDigest::new(cipher, version, None, None, Vec::new()));
        Self { tls, digest, alpn }
    }

    /// The name the client asked for (SNI), lowercase as rustls keeps it.
    pub fn server_name(&self) -> Option<&str> {
        self.tls.get_ref().1.server_name()
    }
}

impl AsyncRead for TlsClientStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.tls).poll_read(cx, buf) {
            // A client that closes TCP without close_notify (most do) is a
            // plain end of stream, as over TCP: HTTP's own framing tells a
            // cut message apart, and pingora would log the error as a
            // failed request.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for TlsClientStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

// === pingora's transport traits ===

#[async_trait]
impl Shutdown for TlsClientStream {
    async fn shutdown(&mut self) {
        // Sends close_notify, then closes the TCP write side.
        let _ = AsyncWriteExt::shutdown(&mut self.tls).await;
    }
}

impl UniqueID for TlsClientStream {
    fn id(&self) -> UniqueIDType {
        self.tls.get_ref().0.id()
    }
}

impl Ssl for TlsClientStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        // pingora is built without a TLS library (`noop_tls`): no handle.
        None
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(Arc::clone(&self.digest))
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl GetTimingDigest for TlsClientStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.tls.get_ref().0.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.tls.get_ref().0.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.tls.get_ref().0.get_write_pending_time()
    }
}

impl GetProxyDigest for TlsClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.tls.get_ref().0.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.tls.get_mut().0.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for TlsClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.tls.get_ref().0.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.tls.get_mut().0.set_socket_digest(digest)
    }
}

// Peeking at decrypted bytes is not supported (pingora's default: `false`);
// pingora peeks only for h2c, which never applies to TLS streams.
impl Peek for TlsClientStream {}

impl fmt::Debug for TlsClientStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientStream")
            .field("inner", self.tls.get_ref().0)
            .field("version", &self.digest.version)
            .field("alpn", &self.alpn)
            .finish()
    }
}
