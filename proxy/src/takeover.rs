//! Taking a long-lived request over in `request_filter`: claim a backend
//! (held like any request while none is ready), connect to it ourselves
//! (retrying another backend on a connect failure), exchange the heads, and
//! run the WebSocket or SSE pump; an ordinary answer is forwarded as is.
//!
//! The claim lives as long as the connection, so a draining backend waits
//! for it (bounded by `drain_timeout`), and the pump closes it with a
//! notice when the drain starts. An event stream is pumped here, inside
//! the request; a WebSocket tunnel runs after pingora has let go of the
//! connection ([`limits::hand_off`]), holding no pingora state.

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;
use tokio::net::TcpStream;

use crate::limits::{self, HandOffError};
use crate::longlived::upstream::{self, Head};
use crate::longlived::{request, sse, websocket, Kind};
use crate::pages::{self, Answer};
use crate::service::{add_forwarded_headers, respond, CutoverProxy, RequestCtx, FAILED_TO_ANSWER, TIMED_OUT};

/// How long a backend may take to send the response head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl CutoverProxy {
    /// Serves a long-lived request end to end. Always `Ok(true)`: the
    /// response was written here.
    pub(crate) async fn take_over(&self, kind: Kind, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // pingora's 60 s downstream read timeout would drop an idle
        // WebSocket without a close frame; the pumps time idleness out.
        session.set_read_timeout(None);
        let Some(app) = ctx.app else { return Ok(false) };
        if kind == Kind::WebSocket {
            // The tunnel runs outside pingora (see `limits::hand_off`):
            // checked before a backend is claimed.
            let refused = match limits::can_hand_off() {
                Ok(()) => None,
                Err(HandOffError::BytesAfterHead) => Some((
                    400,
                    "bad request: a WebSocket client must wait for the handshake's answer before sending data\n",
                )),
                Err(HandOffError::NotHttp1 | HandOffError::NotReusable) => {
                    Some((500, "a WebSocket needs an HTTP/1.1 connection\n"))
                }
            };
            if let Some((code, why)) = refused {
                // What the client sent after its head is no request: the
                // connection ends with this answer.
                session.set_keepalive(None);
                respond(session, code, Bytes::from_static(why.as_bytes()), false).await?;
                return Ok(true);
            }
        }
        let (mut stream, request) = match self.connect(kind, app, session, ctx).await {
            Ok(Some(connected)) => connected,
            Ok(None) => return Ok(true), // answered (503 / 502)
            Err(e) => return Err(e),
        };
        let mut head = match upstream::exchange(&mut stream, &request, HEAD_TIMEOUT).await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, "backend failed before answering a long-lived request");
                ctx.note_failed_connection();
                let answer = if *e.etype() == pingora::ErrorType::ReadTimedout {
                    Answer::GatewayTimeout(TIMED_OUT)
                } else {
                    Answer::BadGateway(FAILED_TO_ANSWER)
                };
                pages::write(session, answer, self.error_pages(ctx.app).as_deref()).await?;
                return Ok(true);
            }
        };
        ctx.note_answer(head.response.status.as_u16());
        if let Some(cookie) = ctx.served.as_ref().and_then(|s| s.set_cookie.clone()) {
            head.response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        let upgraded = head.response.status.as_u16() == 101;
        let is_event_stream = head.response.status.is_success()
            && head
                .header(http::header::CONTENT_TYPE)
                .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/event-stream"));
        let streaming = match kind {
            Kind::WebSocket => upgraded,
            Kind::Sse => is_event_stream,
        };
        if !streaming {
            // Only a real 101 makes a tunnel; anything else is a response.
            upstream::forward_plain(session, &mut stream, head).await?;
            return Ok(true);
        }
        self.run_pump(kind, session, ctx, stream, head).await?;
        Ok(true)
    }

    /// Claims a backend and connects to it; `None` when the request was
    /// answered instead (no backend within the hold timeout, or every
    /// attempt failed).
    async fn connect(
        &self,
        kind: Kind,
        app: crate::AppId,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<(TcpStream, RequestHeader)>> {
        let mut request = match request::for_backend(session.req_header(), kind) {
            Ok(request) => request,
            Err(e) => {
                respond(session, 400, Bytes::from(format!("bad request: {e}\n")), false).await?;
                return Ok(None);
            }
        };
        add_forwarded_headers(session, &mut request, &self.settings.trusted_proxies)?;
        if ctx.cookie.is_some() {
            crate::split::sticky::strip(&mut request, ctx.app_name());
        }
        loop {
            let claim = match self.claim(app, ctx).await {
                Ok(claim) => claim,
                Err(refusal) => {
                    pages::write(session, refusal.answer(), self.error_pages(ctx.app).as_deref()).await?;
                    ctx.refusal = Some(refusal);
                    return Ok(None);
                }
            };
            let backend = std::sync::Arc::clone(claim.backend());
            let connected =
                tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(backend.addr())).await;
            match connected {
                Ok(Ok(stream)) => {
                    ctx.claim = Some(claim);
                    return Ok(Some((stream, request)));
                }
                failed => {
                    if let Some(metrics) = &ctx.metrics {
                        metrics.connect_error();
                    }
                    ctx.note_failed_connection();
                    drop(claim);
                    if !self.note_failure(ctx, backend.generation()) {
                        let answer = if failed.is_err() {
                            Answer::GatewayTimeout(TIMED_OUT)
                        } else {
                            Answer::BadGateway(FAILED_TO_ANSWER)
                        };
                        pages::write(session, answer, self.error_pages(ctx.app).as_deref()).await?;
                        return Ok(None);
                    }
                    if let Some(metrics) = &ctx.metrics {
                        metrics.retry();
                    }
                }
            }
        }
    }

    /// Runs the SSE pump here, or hands the connection to the WebSocket
    /// tunnel (see [`limits::hand_off`]); either is counted in metrics and
    /// on the backend for as long as it lasts.
    async fn run_pump(
        &self,
        kind: Kind,
        session: &mut Session,
        ctx: &mut RequestCtx,
        stream: TcpStream,
        head: Head,
    ) -> Result<()> {
        let Some(backend) = ctx.claim.as_ref().map(|c| std::sync::Arc::clone(c.backend())) else {
            return Ok(());
        };
        let table = self.table.snapshot();
        let settings = table.long_lived().unwrap_or(self.settings.long_lived);
        let app_name = ctx
            .app
            .and_then(|id| table.app(id))
            .map(|a| a.name().to_string())
            .unwrap_or_default();
        drop(table);
        let count = backend.track_long_lived();
        let mut metric = self
            .metrics
            .long_lived_opened(&app_name, backend.instance(), kind.as_str());
        let drain = backend.drain_signal();
        let shutdown = self.table.shutdown_signal();
        match kind {
            Kind::WebSocket => {
                let tunnel = websocket::Tunnel {
                    upstream: stream,
                    response: head.response,
                    rest: head.rest,
                    drain,
                    shutdown,
                    settings,
                };
                // What the tunnel holds until it closes: the backend's
                // claim (a drain waits for it), the active count (a stop
                // waits for it), the long-lived count and metric.
                let claim = ctx.claim.take();
                let active = self.table.enter();
                let instance = backend.instance().to_string();
                let next: limits::Continuation = Box::new(move |client| {
                    Box::pin(async move {
                        let reason = websocket::run(client, tunnel).await;
                        tracing::debug!(
                            kind = "websocket",
                            instance,
                            reason = reason.as_str(),
                            "long-lived connection closed"
                        );
                        metric.closed(reason.as_str());
                        drop((claim, active, count));
                    })
                });
                if let Err(e) = limits::hand_off(session, next) {
                    // Checked before connecting: cannot happen.
                    tracing::warn!(?e, "a WebSocket could not take its connection over");
                    pages::write(
                        session,
                        Answer::BadGateway(FAILED_TO_ANSWER),
                        self.error_pages(ctx.app).as_deref(),
                    )
                    .await?;
                    return Ok(());
                }
                ctx.handed_off = Some(crate::service::HandedOff { status: 101, backend });
            }
            Kind::Sse => {
                let reason = sse::run(sse::Stream {
                    session,
                    upstream: stream,
                    head,
                    drain,
                    shutdown,
                    settings,
                })
                .await;
                tracing::debug!(
                    kind = "sse",
                    instance = backend.instance(),
                    reason = reason.as_str(),
                    "long-lived connection closed"
                );
                metric.closed(reason.as_str());
                drop(count);
            }
        }
        Ok(())
    }
}
