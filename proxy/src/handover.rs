//! Listening sockets that outlive the process: inherited from a predecessor
//! at start, handed to a successor at a self-upgrade.
//!
//! pingora knows nothing of our inheritance. Its way in is the `ListenFds`
//! table every `Service::start_service` receives: `listening::Service` uses
//! the fd it finds there under the *exact* listen address string
//! (`SocketAddr::to_string()`) instead of binding (`listeners/l4.rs`,
//! `ListenerEndpointBuilder::listen`). [`InheritingService`] wraps the
//! listening service and fills that table before delegating, with a socket
//! for *every* configured address: the inherited one, or one bound here. So
//! pingora never binds (a bind failure of its own would panic), its
//! listener build is synchronous, and the build's first poll tells whether
//! it succeeded.
//!
//! pingora takes ownership of the fds it finds (`from_raw_fd`) and closes
//! them when it stops accepting; it never `shutdown(2)`s a listener (that
//! would stop the successor's copy of the same socket too). The data plane
//! keeps a duplicate of each socket for [`crate::DataPlane::listener_fds`],
//! dropped when it stops.

use std::future::{poll_fn, Future};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::SyncSender;
use std::task::Poll;

use async_trait::async_trait;
use futures_util::FutureExt;
use pingora::apps::ServerApp;
use pingora::server::{ListenFds, RuntimeOpts, ShutdownWatch};
use pingora::services::listening::Service as Listening;
use pingora::services::Service;

/// Listening sockets received from a predecessor, keyed by the exact
/// listen address string (`SocketAddr::to_string()`, e.g. "127.0.0.1:8080").
pub type InheritedListeners = Vec<(String, OwnedFd)>;

/// Why an inherited socket cannot serve its address.
#[derive(Debug, thiserror::Error)]
#[error("the socket inherited for {addr} {problem}")]
pub struct BadInheritedSocket {
    pub addr: String,
    pub problem: String,
}

/// One socket per configured address, inherited or bound here.
pub(crate) struct Sockets {
    /// In configuration order; pingora takes these.
    pub for_pingora: Vec<(String, OwnedFd)>,
    /// Duplicates, kept by the data plane for its successor.
    pub kept: Vec<(String, OwnedFd)>,
}

/// What went wrong getting the sockets.
#[derive(Debug)]
pub(crate) enum SocketsError {
    Bind(SocketAddr, std::io::Error),
    Inherited(BadInheritedSocket),
    Dup(std::io::Error),
}

/// Matches `inherited` to `addrs` (deduplicated, in order), checks each
/// inherited socket, binds the addresses nobody handed over, and closes
/// inherited sockets no address wants.
pub(crate) fn sockets(addrs: &[SocketAddr], inherited: InheritedListeners) -> Result<Sockets, SocketsError> {
    let mut inherited: Vec<(String, Option<OwnedFd>)> = inherited.into_iter().map(|(k, fd)| (k, Some(fd))).collect();
    let mut for_pingora: Vec<(String, OwnedFd)> = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let key = addr.to_string();
        if for_pingora.iter().any(|(k, _)| *k == key) {
            continue; // configured twice: one listener (one key in pingora's table)
        }
        let found = inherited.iter_mut().find(|(k, fd)| *k == key && fd.is_some());
        let fd = match found.and_then(|(_, fd)| fd.take()) {
            Some(fd) => {
                check(*addr, &fd).map_err(|problem| {
                    SocketsError::Inherited(BadInheritedSocket {
                        addr: key.clone(),
                        problem,
                    })
                })?;
                fd
            }
            // std sets SO_REUSEADDR, as pingora's own bind does; pingora
            // raises the backlog when it adopts the socket (`listen(65535)`).
            None => OwnedFd::from(TcpListener::bind(addr).map_err(|e| SocketsError::Bind(*addr, e))?),
        };
        // pingora's adoption (`TcpSocket::from_std_stream`) assumes a
        // non-blocking socket: a blocking one would block a runtime thread
        // in accept(2). (The flag is the open file's: a predecessor's copy
        // is non-blocking already.)
        socket2::SockRef::from(&fd)
            .set_nonblocking(true)
            .map_err(|e| SocketsError::Bind(*addr, e))?;
        for_pingora.push((key, fd));
    }
    for (key, fd) in inherited {
        if fd.is_some() {
            // Dropping it closes it: the predecessor listened on an address
            // the new configuration no longer has.
            tracing::warn!(addr = %key, "an inherited listening socket matches no configured address; closed");
        }
    }
    let kept = for_pingora
        .iter()
        .map(|(key, fd)| fd.try_clone().map(|dup| (key.clone(), dup)))
        .collect::<std::io::Result<_>>()
        .map_err(SocketsError::Dup)?;
    Ok(Sockets { for_pingora, kept })
}

/// Is `fd` a listening TCP socket bound to exactly `addr`? pingora would
/// panic on anything else (its `listen()` fails on a UDP socket), or serve
/// the wrong address.
pub(crate) fn check(addr: SocketAddr, fd: &OwnedFd) -> Result<(), String> {
    let socket = socket2::SockRef::from(fd);
    let io = |what: &str, e: std::io::Error| format!("cannot be inspected ({what}: {e})");
    if socket.r#type().map_err(|e| io("SO_TYPE", e))? != socket2::Type::STREAM {
        return Err("is not a stream socket".into());
    }
    if socket.protocol().map_err(|e| io("SO_PROTOCOL", e))? != Some(socket2::Protocol::TCP) {
        return Err("is not a TCP socket".into());
    }
    if !socket.is_listener().map_err(|e| io("SO_ACCEPTCONN", e))? {
        return Err("is not listening".into());
    }
    let local = socket.local_addr().map_err(|e| io("getsockname", e))?.as_socket();
    if local != Some(addr) {
        let bound = local.map_or_else(|| "a non-IP address".to_owned(), |a| a.to_string());
        return Err(format!("is bound to {bound}"));
    }
    Ok(())
}

/// The outcome of building the listeners, reported once.
pub(crate) type Started = Result<(), String>;

/// pingora's listening service, started on sockets we provide.
pub(crate) struct InheritingService<A> {
    inner: Listening<A>,
    sockets: Vec<(String, OwnedFd)>,
    started: Option<SyncSender<Started>>,
}

impl<A> InheritingService<A> {
    /// `inner` must listen (`add_tcp`) on exactly the keys of `sockets`.
    pub(crate) fn new(inner: Listening<A>, sockets: Vec<(String, OwnedFd)>, started: SyncSender<Started>) -> Self {
        Self {
            inner,
            sockets,
            started: Some(started),
        }
    }

    fn report(&mut self, outcome: Started) {
        if let Some(started) = self.started.take() {
            let _ = started.try_send(outcome);
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> Service for InheritingService<A> {
    async fn start_service(&mut self, fds: Option<ListenFds>, shutdown: ShutdownWatch, listeners_per_fd: usize) {
        // pingora always passes its table on unix (`Server::run_service`).
        let Some(fds) = fds else {
            self.report(Err("pingora passed no listening fd table".into()));
            return;
        };
        {
            let mut table = fds.lock();
            for (key, fd) in self.sockets.drain(..) {
                // pingora owns it from here (`from_raw_fd`) and closes it.
                table.add(key, fd.into_raw_fd());
            }
        }
        let started = self.started.take();
        let mut run = std::pin::pin!(
            AssertUnwindSafe(self.inner.start_service(Some(fds), shutdown, listeners_per_fd)).catch_unwind()
        );
        // Every address is in the table, so building the listeners never
        // awaits a bind: the first poll either panics (pingora's `expect`
        // on a failed build), or pends in the accept loops it spawned.
        let first = poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
        let outcome = match first {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(())) => Err("the listening service ended at once".to_owned()),
            Poll::Ready(Err(panic)) => Err(panic_message(&*panic)),
        };
        let failed = outcome.is_err();
        if let Some(started) = started {
            // The starter may have given up waiting; nothing to tell then.
            let _ = started.try_send(outcome);
        }
        if failed {
            return;
        }
        if let Err(panic) = run.await {
            tracing::error!(panic = panic_message(&*panic), "the proxy's listening service panicked");
        }
    }

    fn name(&self) -> &str {
        Service::name(&self.inner)
    }

    fn threads(&self) -> Option<usize> {
        Service::threads(&self.inner)
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        Service::runtime_opts_override(&self.inner, global)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Service::listen_addresses(&self.inner)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(listener: &TcpListener) -> SocketAddr {
        listener.local_addr().unwrap()
    }

    #[test]
    fn a_listening_tcp_socket_on_its_address_passes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = addr(&listener);
        assert_eq!(check(at, &OwnedFd::from(listener)), Ok(()));
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = check(addr(&elsewhere), &OwnedFd::from(listener)).unwrap_err();
        assert!(err.starts_with("is bound to 127.0.0.1:"), "{err}");

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = udp.local_addr().unwrap();
        assert_eq!(check(at, &OwnedFd::from(udp)), Err("is not a stream socket".into()));

        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let at = socket.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(check(at, &OwnedFd::from(socket)), Err("is not listening".into()));
    }

    #[test]
    fn duplicates_are_one_socket_and_strays_are_closed() {
        let stray = TcpListener::bind("127.0.0.1:0").unwrap();
        let stray_addr = addr(&stray);
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_addr = addr(&taken);
        let inherited = vec![
            (stray_addr.to_string(), OwnedFd::from(stray)),
            (taken_addr.to_string(), OwnedFd::from(taken)),
        ];
        let Ok(got) = sockets(&[taken_addr, taken_addr], inherited) else {
            panic!("a configured, inherited socket was refused");
        };
        assert_eq!(got.for_pingora.len(), 1);
        assert_eq!(got.kept.len(), 1);
        // The stray socket is closed: its port refuses connections.
        assert!(std::net::TcpStream::connect(stray_addr).is_err());
    }
}
