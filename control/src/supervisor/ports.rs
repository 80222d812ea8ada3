//! Port choice for instances, without races inside one cutover and without
//! trusting a port that only *looks* free.
//!
//! - A port is free only if it binds **without** `SO_REUSEADDR` (std's
//!   `TcpListener` sets it on Linux, so a port with connections in
//!   `TIME_WAIT` would look free, and an app that binds without the option
//!   would then fail).
//! - Every port handed out is **reserved** in a process-wide set until the
//!   [`PortLease`] is dropped (the instance stopped), so two instances
//!   starting at once (concurrent clones, an original taking back a port a
//!   clone still holds) never get the same port, even before either app has
//!   bound it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Mutex;

use socket2::{Domain, Socket, Type};

/// Ports leased to instances of this process and not released yet.
static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// How many ports the kernel may offer that are already reserved before
/// giving up (each offer is a fresh ephemeral port, so this is never hit in
/// practice).
const PICK_ATTEMPTS: usize = 64;

/// A port reserved for one instance; released when dropped.
#[derive(Debug)]
pub struct PortLease(u16);

impl PortLease {
    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.0
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        reserved().remove(&self.0);
    }
}

/// Leases `preferred` when it is free and nobody in this process holds it,
/// otherwise a free port the kernel picks.
pub fn lease(preferred: Option<u16>) -> std::io::Result<PortLease> {
    if let Some(port) = preferred.filter(|p| *p != 0) {
        let mut reserved = reserved();
        if !reserved.contains(&port) && is_free(port) {
            reserved.insert(port);
            return Ok(PortLease(port));
        }
    }
    for _ in 0..PICK_ATTEMPTS {
        let port = bind_strict(0)?.local_addr()?.as_socket().map_or(0, |a| a.port());
        if port != 0 && reserved().insert(port) {
            return Ok(PortLease(port));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "every port offered was already reserved",
    ))
}

/// Reserves `port` without checking it binds: an adopted instance's app
/// holds it already. Fails when this process reserved it before.
pub fn reserve(port: u16) -> std::io::Result<PortLease> {
    if port != 0 && reserved().insert(port) {
        Ok(PortLease(port))
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("port {port} is reserved already"),
        ))
    }
}

/// Whether `port` on 127.0.0.1 can be bound without `SO_REUSEADDR` right
/// now (no listener, no connection in `TIME_WAIT` on it).
pub fn is_free(port: u16) -> bool {
    bind_strict(port).is_ok()
}

/// Binds a TCP socket to 127.0.0.1:`port` without `SO_REUSEADDR`.
fn bind_strict(port: u16) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn reserved() -> std::sync::MutexGuard<'static, BTreeSet<u16>> {
    RESERVED.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn preferred_port_is_kept_when_free_and_unreserved() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        assert_ne!(lease(Some(port)).unwrap().port(), port, "a listening port is not free");
        drop(taken);
        let first = lease(Some(port)).unwrap();
        assert_eq!(first.port(), port);
        // Reserved but not bound by anyone yet: a concurrent start must not
        // get it (binding alone would say it is free).
        let second = lease(Some(port)).unwrap();
        assert_ne!(second.port(), port, "a reserved port is never handed out twice");
        drop(first);
        assert_eq!(lease(Some(port)).unwrap().port(), port, "released with the lease");
    }

    #[test]
    fn a_held_port_can_be_reserved_once() {
        let app = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = app.local_addr().unwrap().port();
        let held = reserve(port).expect("a bound port is reserved all the same");
        assert!(reserve(port).is_err(), "never twice");
        drop(app);
        assert_ne!(lease(Some(port)).unwrap().port(), port, "reserved: not leased");
        drop(held);
        assert!(reserve(port).is_ok(), "released with the lease");
    }

    #[test]
    fn concurrent_leases_are_distinct() {
        let leases: Vec<PortLease> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16).map(|_| s.spawn(|| lease(None).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ports: BTreeSet<u16> = leases.iter().map(PortLease::port).collect();
        assert_eq!(ports.len(), leases.len());
    }

    /// A port whose listener is closed but which still has a connection in
    /// TIME_WAIT: std's bind (SO_REUSEADDR) succeeds, an app binding without
    /// the option fails, so it must not count as free.
    #[test]
    fn time_wait_port_is_not_free() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        // The server side closes first, so its socket (on `port`) goes to
        // TIME_WAIT once the client closes too.
        drop(server);
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).unwrap(), 0);
        let _ = client.write_all(b"");
        drop(client);
        drop(listener);
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "std binds it (SO_REUSEADDR): the old check called it free"
        );
        assert!(!is_free(port), "TIME_WAIT on the port: not free for a strict bind");
        assert_ne!(lease(Some(port)).unwrap().port(), port);
    }
}
