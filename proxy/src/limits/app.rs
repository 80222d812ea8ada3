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

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

use super::clock::HeadClock;
use super::gate::ConnectionGate;
use super::stream::LimitedStream;
use super::{keepalive_secs, CONNECTION};
use crate::service::Limits;

/// A pingora HTTP app (`A`) behind `proxy.limits`.
pub struct LimitedApp<A> {
    inner: Arc<A>,
    limits: Limits,
    gate: Arc<ConnectionGate>,
}

impl<A> LimitedApp<A> {
    /// Wraps `inner`; `gate` admits its connections.
    pub fn new(inner: A, limits: Limits, gate: Arc<ConnectionGate>) -> Self {
        Self {
            inner: Arc::new(inner),
            limits,
            gate,
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> LimitedApp<A> {
    /// pingora's HTTP/1 keep-alive loop (`apps/mod.rs`), plus the clock.
    async fn serve_h1(&self, stream: Stream, clock: Arc<HeadClock>, shutdown: &ShutdownWatch) {
        let mut session = ServerSession::new_http1(stream);
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(keepalive_secs(&self.limits)));
        }
        session.set_keepalive_reuses_remaining(self.inner.server_options().and_then(|o| o.keepalive_request_limit));
        // Without this pingora answers the first of pipelined requests and
        // closes (`HttpSession::set_pipelining_enabled`); it carries over to
        // the following sessions through `HttpPersistentSettings`.
        session.set_pipelining_enabled(true);
        let mut reused = self.inner.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = reused.map(|r| r.consume()) {
            clock.response_finished();
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            reused = self.inner.process_new_http(session, shutdown).await;
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for LimitedApp<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // Refused: dropping the stream closes it before anything is read.
        let Some(_slot) = self.gate.try_enter() else {
            tracing::debug!("connection refused: proxy.limits.max_connections are open");
            return None;
        };
        let h1 = !matches!(stream.selected_alpn_proto(), Some(ALPN::H2 | ALPN::Custom(_)))
            && !self.inner.server_options().is_some_and(|o| o.h2c);
        if !h1 {
            // HTTP/2 has its own per-stream handling in pingora; only the
            // connection count applies.
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        let clock = Arc::new(HeadClock::new(
            self.limits.header_timeout,
            self.limits.keepalive_timeout,
        ));
        let stream: Stream = Box::new(LimitedStream::new(stream, Arc::clone(&clock)));
        CONNECTION
            .scope(Arc::clone(&clock), self.serve_h1(stream, clock, shutdown))
            .await;
        None
    }

    async fn cleanup(&self) {
        // Wakes keep-alive connections parked in `read_request` at shutdown.
        self.inner.http_cleanup().await;
    }
}
