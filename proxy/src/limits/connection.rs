//! One HTTP/1 client connection as [`LimitedApp`](super::LimitedApp) serves
//! it: its head clock, and a slot where a request can leave a continuation
//! that takes the connection over once pingora is done with that request.
//!
//! pingora keeps a request's whole state (its session, the boxed
//! `process_new_http` future, a 4 KiB head buffer and a 64 KiB body buffer
//! once an upgraded body is read) for as long as the request's task runs.
//! A WebSocket lives for hours, so it is better served outside pingora: the
//! takeover answers nothing through pingora, leaves a [`Continuation`] here
//! and returns; pingora logs the request and hands the reusable stream
//! back to the keep-alive loop, which gives it to the continuation.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use pingora::protocols::Stream;
use pingora::proxy::Session;

use super::clock::HeadClock;
use super::CONNECTION;

/// What runs a connection after pingora let go of it: gets the client
/// stream (nothing buffered in it: the request had no body and the client
/// sent nothing after its head).
pub(crate) type Continuation = Box<dyn FnOnce(Stream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Per-connection state shared by the keep-alive loop, the stream wrapper
/// and the request hooks (through the [`CONNECTION`] task-local).
pub(crate) struct Connection {
    pub(crate) clock: Arc<HeadClock>,
    next: Mutex<Option<Continuation>>,
}

impl Connection {
    pub(crate) fn new(clock: Arc<HeadClock>) -> Self {
        Self {
            clock,
            next: Mutex::new(None),
        }
    }

    /// The continuation a request left, if any.
    pub(crate) fn take_continuation(&self) -> Option<Continuation> {
        self.next.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Why a request could not hand its connection off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandOffError {
    /// Not an HTTP/1 connection served by `LimitedApp` (HTTP/2).
    NotHttp1,
    /// The client sent bytes after its head (pingora holds them, and they
    /// cannot be taken back): a WebSocket client must wait for the 101.
    BytesAfterHead,
    /// pingora would not return the stream after this request.
    NotReusable,
}

/// Whether the current request could hand its connection off now.
pub(crate) fn can_hand_off() -> Result<(), HandOffError> {
    connection().map(drop)
}

/// The current connection, when it can be handed off.
fn connection() -> Result<Arc<Connection>, HandOffError> {
    let connection = CONNECTION.try_with(Arc::clone).map_err(|_| HandOffError::NotHttp1)?;
    match connection.clock.settled() {
        true => Ok(connection),
        false => Err(HandOffError::BytesAfterHead),
    }
}

/// Leaves `next` to run the connection once the current request ends. The
/// caller must write no response through pingora and return `Ok(true)`
/// from `request_filter`: pingora then logs the request and returns the
/// stream to the keep-alive loop, which keep-alive is forced on for here.
pub(crate) fn hand_off(session: &mut Session, next: Continuation) -> Result<(), HandOffError> {
    let connection = connection()?;
    // pingora returns the stream only from a session it would keep alive:
    // it turns keep-alive off at shutdown, and keeps it off for a request
    // saying `Connection: close` (`set_server_keepalive`). The client's
    // `Connection` header has served (the backend's request was built from
    // it); once upgraded, the tunnel's end closes the connection anyway.
    let _ = session.req_header_mut().remove_header(&http::header::CONNECTION);
    session.set_keepalive(Some(0)); // 0: no timeout
    session.set_keepalive_reuses_remaining(None);
    if session.get_keepalive().is_none() {
        return Err(HandOffError::NotReusable);
    }
    *connection.next.lock().unwrap_or_else(PoisonError::into_inner) = Some(next);
    Ok(())
}
