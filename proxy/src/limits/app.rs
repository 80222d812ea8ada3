//! The HTTP app under `proxy.limits`: pingora's proxy app, wrapped.
//!
//! pingora gives an app a new connection in `ServerApp::process_new` and,
//! for HTTP/1, loops `HttpServerApp::process_new_http` over its keep-alive
//! requests (`apps/mod.rs`, the blanket `impl ServerApp for T:
//! HttpServerApp`). It has no accept limit and no head deadline, so this
//! wrapper takes the connection first: it refuses it when
//! `max_connections` are open, puts its stream under a [`HeadClock`], and
//! runs the same keep-alive loop itself so it knows when each response is
//! finished (the start of the keep-alive idle time).
//!
//! It also terminates TLS on the TLS listeners (told apart by the
//! connection's local address), after the gate and under the head clock
//! (see [`crate::tls::acceptor`] for why not in pingora's listener), and
//! tells HTTP/2 apart: ALPN `h2`, or with `proxy.h2c` the preface on a
//! plain listener, read under the same deadline ([`super::preface`]).

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Poll};

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, ReadBuf};

use super::clock::HeadClock;
use super::connection::Connection;
use super::gate::ConnectionGate;
use super::preface::{sniff, Replay, Sniffed};
use super::stream::LimitedStream;
use super::{keepalive_secs, CONNECTION};
use crate::service::Limits;
use crate::tls::acceptor::TlsAcceptor;

/// The listeners one app serves, and how each speaks.
pub struct Listeners {
    /// Every listen address: the plain ones, then the TLS ones. A
    /// connection's listener is its index here (the gate's too).
    addrs: Vec<SocketAddr>,
    /// How many of `addrs` are plain.
    plain: usize,
    /// Terminates TLS on the TLS listeners.
    tls: Option<Arc<TlsAcceptor>>,
    /// HTTP/2 prior knowledge on plain listeners (`proxy.h2c`).
    h2c: bool,
}

impl Listeners {
    /// `plain` and `tls` listen addresses; `acceptor` is required when
    /// `tls` is not empty (a TLS listener without one closes every
    /// connection).
    pub fn new(plain: &[SocketAddr], tls: &[SocketAddr], acceptor: Option<Arc<TlsAcceptor>>, h2c: bool) -> Self {
        Self {
            addrs: plain.iter().chain(tls).copied().collect(),
            plain: plain.len(),
            tls: acceptor,
            h2c,
        }
    }

    /// Every listen address, in the gate's order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The listener a connection with local address `local` came in on:
    /// the exact address, else a wildcard one (`0.0.0.0`, `[::]`) on its
    /// port.
    fn of(&self, local: SocketAddr) -> Option<usize> {
        let exact = self.addrs.iter().position(|a| *a == local);
        exact.or_else(|| {
            self.addrs
                .iter()
                .position(|a| a.ip().is_unspecified() && a.port() == local.port())
        })
    }
}

/// A pingora HTTP app (`A`) behind `proxy.limits`, terminating TLS on the
/// TLS listeners.
pub struct LimitedApp<A> {
    inner: Arc<A>,
    limits: Limits,
    gate: Arc<ConnectionGate>,
    listeners: Listeners,
    parked: Arc<ParkedRelease>,
}

/// When, after pingora stopped accepting, the keep-alive connections parked
/// between two requests may be dropped. At a stop: at once. At a hand-over
/// to a successor: not while their clients may still send a request on
/// them (a request written just as its connection closes is lost, and a
/// POST cannot be retried); pingora then answers that request with
/// `Connection: close`, and [`crate::DataPlane::hand_over`] releases the
/// rest once the drain is over (HAProxy's `idle-close-on-response`).
#[derive(Debug)]
pub struct ParkedRelease(tokio::sync::watch::Sender<bool>);

impl Default for ParkedRelease {
    fn default() -> Self {
        Self(tokio::sync::watch::channel(false).0)
    }
}

impl ParkedRelease {
    /// Parked connections may go now.
    pub fn release(&self) {
        self.0.send_replace(true);
    }

    async fn released(&self) {
        let mut released = self.0.subscribe();
        let _ = released.wait_for(|r| *r).await;
    }
}

impl<A> LimitedApp<A> {
    /// Wraps `inner`; `gate` admits its connections, indexed like
    /// `listeners`.
    /// `parked` says when keep-alive connections parked at a stop may be
    /// dropped.
    pub fn new(
        inner: A,
        limits: Limits,
        gate: Arc<ConnectionGate>,
        listeners: Listeners,
        parked: Arc<ParkedRelease>,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            limits,
            gate,
            listeners,
            parked,
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> LimitedApp<A> {
    /// pingora's HTTP/2 path (its blanket `ServerApp`), for a stream that
    /// reports ALPN `h2` and replays the preface. HTTP/2 has its own
    /// per-stream handling in pingora; idle connections close after
    /// `h2_idle_timeout` (set to `keepalive_timeout` by the server).
    async fn serve_h2(&self, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        ServerApp::process_new(&self.inner, stream, shutdown).await
    }

    /// pingora's HTTP/1 keep-alive loop (`apps/mod.rs`), plus the clock,
    /// with the waits for a request outside pingora: between requests the
    /// connection holds its stream and nothing else (no session, no head
    /// buffer, no boxed request future) until the first bytes of the next
    /// head arrive, unless pingora already holds some (pipelining). A
    /// request may leave a continuation that takes the connection over
    /// (see [`connection`](super::connection)).
    async fn serve_h1(&self, mut stream: Stream, connection: &Connection, shutdown: &ShutdownWatch) {
        let mut settings = None;
        let mut first = true;
        let mut waits = true;
        loop {
            let head = match waits {
                true => match next_head(&mut stream, &self.parked).await {
                    Some(head) => Some(head),
                    None => return,
                },
                false => None,
            };
            let mut session = ServerSession::new_http1(stream);
            match (first, settings.take()) {
                (false, Some(settings)) => HttpPersistentSettings::apply_to_session(settings, &mut session),
                // pingora always returns settings with a reused stream;
                // without them the session keeps its defaults.
                (false, None) => {}
                (true, _) => {
                    first = false;
                    if *shutdown.borrow() {
                        session.set_keepalive(None);
                    } else {
                        session.set_keepalive(Some(keepalive_secs(&self.limits)));
                    }
                    session.set_keepalive_reuses_remaining(
                        self.inner.server_options().and_then(|o| o.keepalive_request_limit),
                    );
                    // Without this pingora answers the first of pipelined
                    // requests and closes (`HttpSession::set_pipelining_enabled`);
                    // it carries over to the following sessions through
                    // `HttpPersistentSettings`.
                    session.set_pipelining_enabled(true);
                }
            }
            if let Some(head) = head {
                session.set_pipelined_prefix(head);
            }
            let reused = self.inner.process_new_http(session, shutdown).await;
            let continuation = connection.take_continuation();
            let Some((next, next_settings)) = reused.map(|r| r.consume()) else {
                return;
            };
            if let Some(continuation) = continuation {
                return continuation(next).await;
            }
            waits = connection.clock.response_finished();
            stream = next;
            settings = next_settings;
        }
    }
}

/// How much of a head one wait reads; pingora's own first head read is as
/// large (`INIT_HEADER_BUF_SIZE`), and so is the buffer handed to it.
const HEAD_READ: usize = 4096;

/// Waits for the first bytes of the next request head with no buffer held:
/// each poll reads into a scratch buffer on the stack and copies what came
/// into a fresh buffer for pingora. `None` when the client closed, the
/// stream failed (its clock cut an idle connection), or parked connections
/// are released at a stop.
async fn next_head(stream: &mut Stream, parked: &ParkedRelease) -> Option<BytesMut> {
    let read = std::future::poll_fn(|cx| {
        let mut scratch = [MaybeUninit::<u8>::uninit(); HEAD_READ];
        let mut buf = ReadBuf::uninit(&mut scratch);
        match ready!(Pin::new(&mut *stream).poll_read(cx, &mut buf)) {
            Ok(()) if buf.filled().is_empty() => Poll::Ready(None),
            Ok(()) => {
                let mut head = BytesMut::with_capacity(HEAD_READ);
                head.extend_from_slice(buf.filled());
                Poll::Ready(Some(head))
            }
            Err(_) => Poll::Ready(None),
        }
    });
    tokio::select! {
        biased;
        head = read => head,
        () = parked.released() => None,
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for LimitedApp<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let listener = match self.listeners.addrs.len() {
            // One listener (the common plain set-up): no getsockname.
            1 => Some(0),
            _ => stream
                .get_socket_digest()
                .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied())
                .and_then(|local| self.listeners.of(local)),
        };
        let Some(listener) = listener else {
            tracing::warn!("a connection on an address that is no listener of ours; closed");
            return None;
        };
        // Refused: dropping the stream closes it before anything is read
        // (before any TLS handshake too).
        let Some(slot) = self.gate.try_enter(listener) else {
            tracing::debug!("connection refused: proxy.limits.max_connections are open");
            return None;
        };
        // The clock starts at accept: the TLS handshake, the h2c preface
        // and the first head all fall within `header_timeout` of it.
        let clock = Arc::new(HeadClock::new(
            self.limits.header_timeout,
            self.limits.keepalive_timeout,
        ));
        let deadline = clock.first_head_deadline();
        let mut stream = stream;
        if listener >= self.listeners.plain {
            let acceptor = self.listeners.tls.as_ref()?;
            stream = Box::new(acceptor.accept(stream, deadline).await.ok()?);
            if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                // pingora's HTTP/2 handshake waits for the preface with no
                // timeout: read it here, under the deadline.
                let Sniffed::H2(preface) = sniff(&mut stream, deadline).await else {
                    tracing::debug!("TLS client chose h2 but sent no HTTP/2 preface in time; closed");
                    return None;
                };
                return self
                    .serve_h2(Box::new(Replay::new(stream, preface, None)), shutdown)
                    .await;
            }
        } else if self.listeners.h2c {
            match sniff(&mut stream, deadline).await {
                Sniffed::H2(preface) => {
                    let stream = Box::new(Replay::new(stream, preface, Some(ALPN::H2)));
                    return self.serve_h2(stream, shutdown).await;
                }
                Sniffed::Other(read) => stream = Box::new(Replay::new(stream, read, None)),
                Sniffed::Gone => return None,
            }
        }
        let stream: Stream = Box::new(LimitedStream::new(stream, Arc::clone(&clock)));
        // The connection goes on in a task of its own, sized for what an
        // HTTP/1 connection holds while it waits: pingora's connection task
        // (its handshake and this function's state, about 5 KiB) ends here
        // instead of living as long as the connection.
        let connection = Arc::new(Connection::new(clock));
        let app = Arc::clone(self);
        let shutdown = shutdown.clone();
        tokio::spawn(CONNECTION.scope(Arc::clone(&connection), async move {
            app.serve_h1(stream, &connection, &shutdown).await;
            drop(slot);
        }));
        None
    }

    async fn cleanup(&self) {
        // Wakes keep-alive connections parked in `read_request` at shutdown,
        // which drops them: once the data plane says so (see `ParkedRelease`).
        self.parked.released().await;
        self.inner.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_belongs_to_its_exact_listener_else_the_wildcard_on_its_port() {
        let plain: Vec<SocketAddr> = vec!["127.0.0.1:8080".parse().unwrap(), "0.0.0.0:8081".parse().unwrap()];
        let tls: Vec<SocketAddr> = vec!["[::]:8443".parse().unwrap()];
        let listeners = Listeners::new(&plain, &tls, None, false);
        assert_eq!(listeners.of("127.0.0.1:8080".parse().unwrap()), Some(0));
        assert_eq!(listeners.of("10.1.2.3:8081".parse().unwrap()), Some(1));
        assert_eq!(listeners.of("[::ffff:127.0.0.1]:8443".parse().unwrap()), Some(2));
        assert_eq!(listeners.of("127.0.0.2:8080".parse().unwrap()), None);
        assert_eq!(listeners.plain, 2, "index 2 and above are TLS listeners");
    }
}
