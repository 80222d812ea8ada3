//! The pingora `ProxyHttp` implementation: the request path.
//!
//! 1. `request_filter` routes the request (host + longest path prefix) on
//!    the current table; no route → 404.
//! 2. `upstream_peer` loads the current table (once per attempt), picks the
//!    app's least-loaded ready backend and claims it (the in-flight guard
//!    lives in the context until the request ends). With no ready backend
//!    the request is *held*: it waits for a table that has one, up to
//!    `hold_timeout`, then gets 503 with `Retry-After`.
//! 3. `fail_to_connect` remembers the failed backend and retries on another
//!    one (or holds); `error_while_proxy` does the same for errors on a
//!    reused upstream connection of an idempotent request.
//! 4. `logging` counts the outcome; dropping the context releases the claim.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result, RetryType};
use tokio::time::Instant;

use crate::backend::{Backend, InflightGuard};
use crate::forwarded;
use crate::handle::{ActiveGuard, TableHandle};
use crate::hold::Refusal;
use crate::longlived::passthrough::{self, EventStream};
use crate::longlived::{CloseReason, Kind};
use crate::metrics::{AppMetrics, ProxyMetrics};
use crate::mode::AppMode;
use crate::pages::{self, Answer};
use crate::router::AppId;
pub use crate::settings::{Limits, ProxySettings};
use crate::split::{sticky, Served};
use crate::table::UpstreamProtocol;

/// The proxy service.
pub struct CutoverProxy {
    pub(crate) table: Arc<TableHandle>,
    pub(crate) settings: ProxySettings,
    pub(crate) metrics: ProxyMetrics,
    unrouted: Arc<AppMetrics>,
    pub(crate) held: AtomicUsize,
}

impl CutoverProxy {
    /// A proxy serving whatever table `table` holds.
    pub fn new(table: Arc<TableHandle>, settings: ProxySettings, metrics: &ProxyMetrics) -> Self {
        Self {
            table,
            settings,
            metrics: metrics.clone(),
            unrouted: metrics.unrouted(),
            held: AtomicUsize::new(0),
        }
    }
    fn peer_for(&self, claim: &InflightGuard, upstream: UpstreamProtocol) -> HttpPeer {
        let backend = claim.backend();
        let mut peer = HttpPeer::new(backend.addr(), false, String::new());
        // A new process behind the same address gets a new generation, so a
        // pooled connection to its predecessor can never be picked for it.
        peer.group_key = backend.generation();
        peer.options.connection_timeout = Some(self.settings.connect_timeout);
        peer.options.idle_timeout = Some(self.settings.upstream_idle_timeout);
        if upstream == UpstreamProtocol::H2c {
            // Prior knowledge on a plain connection; several streams share
            // one connection (pingora's default is 1 stream each).
            peer.options.alpn = pingora::protocols::ALPN::H2;
            peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
        }
        peer
    }

    /// Records a failed attempt on the claimed backend; true if the request
    /// may try again.
    pub(crate) fn note_failure(&self, ctx: &mut RequestCtx, generation: u64) -> bool {
        ctx.claim = None;
        ctx.failed.push(generation);
        ctx.attempts += 1;
        ctx.attempts < self.settings.max_attempts
    }
}

/// Whether a backend connection dropped before any response byte: the
/// failures pingora marks replayable on a reused connection (closed or reset
/// while reading the response head), and a failed write of the request.
fn dropped_before_answering(e: &Error) -> bool {
    matches!(e.retry, RetryType::ReusedOnly)
        || (*e.etype() == ErrorType::WriteError && *e.esource() == ErrorSource::Upstream)
}

/// Streams pingora may open on one pooled h2c connection.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// Per-request state.
pub struct RequestCtx {
    _active: ActiveGuard,
    pub(crate) started: Instant,
    pub(crate) app: Option<AppId>,
    pub(crate) metrics: Option<Arc<AppMetrics>>,
    /// The backend this request is using; released on drop.
    pub(crate) claim: Option<InflightGuard>,
    /// Generations of backends that failed for this request.
    pub(crate) failed: Vec<u64>,
    attempts: u32,
    pub(crate) hold_deadline: Option<Instant>,
    pub(crate) held: Duration,
    pub(crate) refusal: Option<Refusal>,
    /// The upstream connection of the current attempt (HTTP/1 only), for
    /// ending an event stream (see [`passthrough`]).
    pub(crate) upstream_fd: Option<std::os::fd::RawFd>,
    /// An event stream on pingora's path.
    pub(crate) event_stream: Option<EventStream>,
    /// The hash of the client's `cutover-<app>` cookie value, if it sent
    /// one (see [`sticky`]).
    pub(crate) cookie: Option<u64>,
    /// The set of a split that the current claim came from.
    pub(crate) served: Option<Served>,
    /// The backend's response head arrived (counted once).
    pub(crate) answered: bool,
    /// The connection was handed to a WebSocket tunnel, which writes the
    /// answer itself after pingora is done with the request.
    pub(crate) handed_off: Option<HandedOff>,
}

/// A request whose connection went on outside pingora: what it answered,
/// and from which backend (the claim went with the tunnel).
#[derive(Debug)]
pub(crate) struct HandedOff {
    pub(crate) status: u16,
    pub(crate) backend: Arc<Backend>,
}

impl RequestCtx {
    /// Attempts that failed and were retried.
    pub(crate) fn retries(&self) -> u32 {
        self.attempts
    }

    /// Time spent held, waiting for a ready backend.
    pub(crate) fn held(&self) -> Duration {
        self.held
    }

    /// The app's name (empty before routing).
    pub(crate) fn app_name(&self) -> &str {
        self.metrics.as_ref().map_or("", |m| m.app())
    }

    /// Counts the backend's response head for the split's measurements
    /// (once per request; informational heads do not count).
    pub(crate) fn note_answer(&mut self, status: u16) {
        if self.answered || (status < 200 && status != 101) {
            return;
        }
        self.answered = true;
        if let Some(served) = &self.served {
            served.answered(status);
        }
    }

    /// Counts a connection that failed or dropped before an answer.
    pub(crate) fn note_failed_connection(&self) {
        if let (false, Some(served)) = (self.answered, &self.served) {
            served.failed();
        }
    }
}

#[async_trait]
impl ProxyHttp for CutoverProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _active: self.table.enter(),
            started: Instant::now(),
            app: None,
            metrics: None,
            claim: None,
            failed: Vec::new(),
            attempts: 0,
            hold_deadline: None,
            held: Duration::ZERO,
            refusal: None,
            upstream_fd: None,
            event_stream: None,
            cookie: None,
            served: None,
            answered: false,
            handed_off: None,
        }
    }

    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        // pingora's default: response compression, disabled.
        modules.add_module(pingora::modules::http::compression::ResponseCompressionBuilder::enable(
            0,
        ));
        crate::tls::https::add_modules(modules, self.settings.hsts);
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut RequestCtx) -> Result<()> {
        // First, so that every answer from here on gets HSTS over TLS.
        crate::tls::https::on_request(session);
        crate::limits::on_request_head(session, &self.settings.limits).await
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(answered) = self.acme_http01(session).await {
            return answered.map(|()| true);
        }
        // After http-01: an ACME validation is never redirected.
        if let Some(answered) = crate::tls::https::redirect(session, &self.settings).await {
            return answered.map(|()| true);
        }
        let req = session.req_header();
        let host = request_host(req);
        let routed = {
            let table = self.table.load();
            table.route(host, req.uri.path()).and_then(|id| {
                table.app(id).map(|app| {
                    let maintenance = match app.mode() {
                        AppMode::Maintenance { message } => Some(message.clone()),
                        _ => None,
                    };
                    (id, Arc::clone(app.metrics()), maintenance)
                })
            })
        };
        match routed {
            Some((id, metrics, maintenance)) => {
                ctx.cookie = sticky::find(&req.headers, metrics.app());
                ctx.app = Some(id);
                ctx.metrics = Some(metrics);
                if let Some(message) = maintenance {
                    // Before anything else: nothing reaches a backend, on
                    // any path (a WebSocket handshake gets the 503 too).
                    self.answer_maintenance(session, ctx, message).await?;
                    return Ok(true);
                }
                if let Some(problem) = first_chunk_problem(session).await {
                    session.set_keepalive(None);
                    respond(session, 400, Bytes::from(format!("bad request: {problem}\n")), false).await?;
                    return Ok(true);
                }
                if self.is_grpc_call(session, id) {
                    return self.take_over_grpc(session, ctx).await;
                }
                match Kind::of(session.req_header(), session.is_upgrade_req()) {
                    // The takeover path serves only requests without a body
                    // (SPEC §4a "Framing"): it forwards heads, never bodies.
                    // An event-stream GET with a body takes pingora's path,
                    // which forwards the body as framed and still treats the
                    // answer as an event stream (by its Content-Type); a
                    // WebSocket handshake has no body (RFC 6455 §4.1), so one
                    // with a body is refused.
                    Some(kind) if !session.as_mut().is_body_empty() => match kind {
                        Kind::Sse => Ok(false),
                        Kind::WebSocket => {
                            respond(
                                session,
                                400,
                                Bytes::from_static(b"bad request: a WebSocket handshake has no body\n"),
                                false,
                            )
                            .await?;
                            Ok(true)
                        }
                    },
                    Some(kind) => self.take_over(kind, session, ctx).await,
                    None => Ok(false),
                }
            }
            None => {
                ctx.metrics = Some(Arc::clone(&self.unrouted));
                respond(
                    session,
                    404,
                    Bytes::from_static(b"no route for this host and path\n"),
                    false,
                )
                .await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let app = ctx
            .app
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "upstream_peer without a route"))?;
        match self.claim(app, ctx).await {
            Ok(claim) => {
                let upstream = self
                    .table
                    .load()
                    .app(app)
                    .map_or(UpstreamProtocol::Http1, |a| a.upstream());
                let peer = self.peer_for(&claim, upstream);
                ctx.claim = Some(claim);
                Ok(Box::new(peer))
            }
            Err(refusal) => {
                let error = Error::explain(ErrorType::HTTPStatus(503), refusal.reason());
                ctx.refusal = Some(refusal);
                Err(error)
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // pingora already removed the hop-by-hop headers (its default
        // `HttpUpstreamRequestPolicy`: `Connection` and what it names,
        // `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`,
        // `Proxy-Authorization`, `Proxy-Connection`) before this hook.
        if ctx.cookie.is_some() {
            sticky::strip(upstream, ctx.app_name());
        }
        add_forwarded_headers(session, upstream, &self.settings.trusted_proxies)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // An HTTP/2 connection carries other streams: never one to cut.
        ctx.upstream_fd = (peer.options.alpn == pingora::protocols::ALPN::H1).then_some(fd);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.note_answer(upstream_response.status.as_u16());
        if passthrough::is_event_stream(upstream_response) {
            self.watch_event_stream(session, ctx);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A client without a valid sticky cookie learns its version (only
        // on the final answer: a 1xx is not kept by clients).
        if response.status.as_u16() >= 200 {
            if let Some(cookie) = ctx.served.as_ref().and_then(|s| s.set_cookie.clone()) {
                response.append_header(header::SET_COOKIE, cookie)?;
                // The cookie is this client's: a shared cache in front must
                // not hand it (and so one version) to every client.
                if response.headers.get(header::CACHE_CONTROL).is_none() {
                    response.insert_header(header::CACHE_CONTROL, "private")?;
                }
            }
        }
        // pingora decides keep-alive when it reads a head; a response still
        // running when this process stops accepting (a stop or a hand-over
        // to a new cutover) must say `Connection: close` too, or its client
        // sends the next request into a closing connection.
        if self.table.is_stopping() {
            session.set_keepalive(None);
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(stream) = &mut ctx.event_stream {
            stream.filter(body);
            if end_of_stream {
                stream.at_end(body);
            }
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(metrics) = &ctx.metrics {
            metrics.connect_error();
        }
        ctx.note_failed_connection();
        // Nothing reached the backend, so any request may go elsewhere.
        if self.note_failure(ctx, peer.group_key) {
            e.set_retry(true);
            if let Some(metrics) = &ctx.metrics {
                metrics.retry();
            }
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("backend {}", peer));
        if session.response_written().is_some() {
            // Part of the answer is out: another attempt would send a
            // second one.
            e.set_retry(false);
            return e;
        }
        // Only an idempotent request whose body is still fully buffered may
        // be replayed. pingora replays it only on a stale *reused*
        // connection; the same failure on a fresh one (the connection
        // dropped before any response byte, which is what a killed instance
        // does) is as safe to replay, as nginx's `proxy_next_upstream error`
        // does. The next attempt prefers backends this request has not
        // failed on, and `max_attempts` bounds one that kills them all.
        // A request on a draining backend was cut on purpose (it outlived
        // `drain_timeout`): counted and logged as cut, never replayed.
        let cut_by_drain = ctx.claim.as_ref().is_some_and(|c| c.backend().is_draining());
        if *e.esource() == ErrorSource::Upstream && !cut_by_drain {
            ctx.note_failed_connection();
        }
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() || cut_by_drain {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused || dropped_before_answering(&e));
        }
        if e.retry() {
            if self.note_failure(ctx, peer.group_key) {
                if let Some(metrics) = &ctx.metrics {
                    metrics.retry();
                }
            } else {
                e.set_retry(false);
            }
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        if let Some(notice) = ctx.event_stream.as_mut().and_then(EventStream::take_notice) {
            // The proxy ended this event stream's backend body (a drain or
            // shutdown): the client gets the notice and a clean end.
            let ended = match session.write_response_body(Some(notice), false).await {
                Ok(()) => session.write_response_body(None, true).await,
                Err(e) => Err(e),
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, "could not end the event stream");
            }
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let plain = |code: u16, body: &'static [u8]| ProxyError::Plain(code, Bytes::from_static(body));
        let answer = match &ctx.refusal {
            Some(refusal) => ProxyError::Page(refusal.answer()),
            None => match (e.etype(), e.esource()) {
                (ErrorType::HTTPStatus(code), _) => ProxyError::Plain(*code, Bytes::new()),
                (
                    ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
                    ErrorSource::Downstream,
                ) => {
                    // The client is gone: nobody to answer.
                    return FailToProxy {
                        error_code: 0,
                        can_reuse_downstream: false,
                    };
                }
                (_, ErrorSource::Downstream) => plain(400, b"bad request\n"),
                (
                    ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
                    ErrorSource::Upstream,
                ) => ProxyError::Page(Answer::GatewayTimeout(TIMED_OUT)),
                (_, ErrorSource::Upstream) => ProxyError::Page(Answer::BadGateway(FAILED_TO_ANSWER)),
                _ => plain(500, b"internal error\n"),
            },
        };
        let code = match &answer {
            ProxyError::Page(page) => page.status(),
            ProxyError::Plain(code, _) => *code,
        };
        if session.response_written().is_none() {
            let written = match answer {
                ProxyError::Page(page) => pages::write(session, page, self.error_pages(ctx.app).as_deref()).await,
                ProxyError::Plain(code, body) => respond(session, code, body, false).await,
            };
            if let Err(err) = written {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        // Refusals are counted and answered; they are not proxy errors, nor
        // is an event stream the proxy ended itself.
        ctx.refusal.is_some() || ctx.event_stream.as_ref().is_some_and(|s| s.ended_by_proxy().is_some())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // 499 as nginx: the client left before any response was written.
        let code = match (&ctx.handed_off, session.response_written()) {
            (_, Some(written)) => written.status.as_u16(),
            (Some(handed_off), None) => handed_off.status,
            (None, None) => 499,
        };
        let ended_by_proxy = ctx.event_stream.as_ref().and_then(EventStream::ended_by_proxy);
        if let Some(stream) = &mut ctx.event_stream {
            stream.closed(match (ended_by_proxy, e) {
                (Some(reason), _) => reason,
                (None, None) => CloseReason::Backend,
                (None, Some(e)) if *e.esource() == ErrorSource::Downstream => CloseReason::Client,
                (None, Some(_)) => CloseReason::Error,
            });
        }
        if let (Some(error), Some(claim), None) = (e, &ctx.claim, ended_by_proxy) {
            if claim.backend().is_draining() {
                tracing::warn!(
                    path = %session.req_header().uri.path(),
                    instance = claim.backend().instance(),
                    %error,
                    "request cut: its backend was stopped after the drain deadline"
                );
            }
        }
        let elapsed = ctx.started.elapsed();
        if let Some(metrics) = &ctx.metrics {
            metrics.observe(code, elapsed.as_secs_f64());
        }
        crate::access::log(session, ctx, code, elapsed);
        ctx.event_stream = None;
        ctx.claim = None;
    }
}

/// An error answer from `fail_to_proxy`: one of the pages, or a plain
/// text that has no page (400, 500, a status an error carried).
enum ProxyError<'a> {
    Page(Answer<'a>),
    Plain(u16, Bytes),
}

/// The 502's text (also the plain-text body).
pub(crate) const FAILED_TO_ANSWER: &str = "the app failed to answer\n";
/// The 504's text.
pub(crate) const TIMED_OUT: &str = "the app did not answer in time\n";

/// Sets `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
/// `X-Real-IP` on the request for the backend: replaced unless the client is
/// a trusted proxy (see [`crate::forwarded`]).
pub(crate) fn add_forwarded_headers(
    session: &Session,
    upstream: &mut RequestHeader,
    trusted: &[ipnet::IpNet],
) -> Result<()> {
    let tls = crate::tls::https::is_tls(session);
    let peer = forwarded::Peer {
        addr: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
        proto: if tls { "https" } else { "http" },
        trusted,
    };
    forwarded::apply(upstream, peer)
}

/// Reads the first piece of a chunked request body before any backend is
/// chosen, so a request whose first chunk size is malformed (`+5`, ` 5`,
/// `0x5`, over 16 digits) gets 400 and reaches no backend (SPEC §4a
/// "Framing"). What was read stays in pingora's retry buffer, which pingora
/// sends to the backend ahead of the rest of the body (the same buffer it
/// replays on a retry); one read is at most 64 KiB (pingora's body buffer),
/// which is exactly what that buffer holds, so nothing is lost. Later chunks
/// are checked by pingora as they stream: a bad one aborts the backend
/// connection before the last chunk, so the backend never gets a complete
/// request. Skipped with `Expect: 100-continue`: that client waits for the
/// backend's `100 Continue` before it sends any body.
async fn first_chunk_problem(session: &mut Session) -> Option<String> {
    let req = session.req_header();
    if !req.headers.contains_key(header::TRANSFER_ENCODING)
        || req
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        return None;
    }
    session.as_mut().enable_retry_buffering();
    match session.read_request_body().await {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// The request's host: the `Host` header, else the URI's authority.
fn request_host(req: &RequestHeader) -> &str {
    // HTTP/2 names the host in `:authority`, which pingora turns into the
    // backend's `Host`; route on the same name (a differing `host` field
    // must not pick another app than the backend sees, RFC 9113 §8.3.1).
    if req.version == http::Version::HTTP_2 {
        if let Some(authority) = req.uri.host() {
            return authority;
        }
    }
    req.headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("")
}

impl CutoverProxy {
    /// Answers a request for an app in maintenance: a gRPC call with
    /// status 14 (UNAVAILABLE) and the message, anything else with the
    /// maintenance page (503, `Retry-After`).
    async fn answer_maintenance(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        message: Option<Arc<str>>,
    ) -> Result<()> {
        let refusal = Refusal::Maintenance(message);
        if crate::grpc::is_call(session) {
            crate::grpc::end_call(session, crate::grpc::Status::Unavailable, &refusal.grpc_message()).await;
        } else {
            pages::write(session, refusal.answer(), self.error_pages(ctx.app).as_deref()).await?;
        }
        ctx.refusal = Some(refusal);
        Ok(())
    }

    /// Answers a pending ACME `http-01` challenge (RFC 8555 §8.3) on a plain
    /// listener, before routing: no app sees it. `None` when the request is
    /// not one.
    async fn acme_http01(&self, session: &mut Session) -> Option<Result<()>> {
        let req = session.req_header();
        if req.method != http::Method::GET || !req.uri.path().starts_with(crate::tls::challenges::HTTP01_PREFIX) {
            return None;
        }
        if session.digest().is_some_and(|d| d.ssl_digest.is_some()) {
            return None;
        }
        let answer = self.settings.challenges.http01_answer(req.uri.path())?;
        let mut resp = match ResponseHeader::build(200, Some(3)) {
            Ok(resp) => resp,
            Err(e) => return Some(Err(e)),
        };
        let written = async {
            resp.insert_header(header::CONTENT_TYPE, "application/octet-stream")?;
            resp.insert_header(header::CONTENT_LENGTH, answer.len())?;
            resp.insert_header(header::CACHE_CONTROL, "no-store")?;
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(Bytes::from(answer)), true).await
        };
        Some(written.await)
    }
}

/// Writes a short plain-text response from the proxy itself (answers
/// that have no page: 400, 404, 500). A 503 always says when to retry.
pub(crate) async fn respond(session: &mut Session, code: u16, body: Bytes, retry_after: bool) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    if retry_after || code == 503 {
        resp.insert_header(header::RETRY_AFTER, "1")?;
    }
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}
