//! The access log: one `tracing` event per request, target
//! [`ACCESS_TARGET`], which the binary routes to its own (non-blocking)
//! writer or turns off. When it is off, `tracing`'s cached callsite
//! interest makes this a single branch on the request path.

use std::time::Duration;

use pingora::proxy::Session;

use crate::service::RequestCtx;

/// The `tracing` target of access log events.
pub const ACCESS_TARGET: &str = "cutover::access";

/// Logs one finished request.
pub(crate) fn log(session: &Session, ctx: &RequestCtx, status: u16, elapsed: Duration) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    let req = session.req_header();
    // HTTP/2 names the host in `:authority` (in the URI), not `Host`.
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let backend = ctx
        .claim
        .as_ref()
        .map(|c| c.backend())
        .or(ctx.handed_off.as_ref().map(|h| &h.backend));
    let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    tracing::info!(
        target: ACCESS_TARGET,
        client = client.map(tracing::field::display),
        method = %req.method,
        host,
        path = %req.uri.path(),
        status,
        app = ctx.metrics.as_ref().map(|m| m.app()).unwrap_or(""),
        instance = backend.map(|b| b.instance()).unwrap_or(""),
        upstream = backend.map(|b| tracing::field::display(b.addr())),
        // Which set of a split (a canary) served it; empty without one.
        version = ctx.served.as_ref().map_or("", |s| s.version.as_str()),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        bytes_in = session.body_bytes_read(),
        bytes_out = session.body_bytes_sent(),
        retries = ctx.retries(),
        held_ms = ctx.held().as_secs_f64() * 1000.0,
        "request"
    );
}
