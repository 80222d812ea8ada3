//! A second handle on the upstream socket of a request on pingora's path,
//! so an event stream can be ended from outside its task.
//!
//! pingora has no hook to end a response from outside the request's own
//! task (`/work/shared/notes/pingora-0.9.md` §2, option A): the only lever
//! is the upstream socket. `connected_to_upstream` hands us its raw fd;
//! this module duplicates it while pingora still holds the connection, and
//! from then on only our own descriptor is touched, so a later reuse of
//! pingora's fd number by another connection can never be hit.
//! `shutdown(Read)` acts on the socket, not the descriptor: pingora's next
//! read returns end of file.
//!
//! This is the crate's only `unsafe`: borrowing a raw fd cannot be proven
//! valid by the compiler; the caller's contract below is what makes it so.
#![allow(unsafe_code)]

use std::net::{Shutdown, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};

/// Our own descriptor for an upstream connection (closed on drop).
#[derive(Debug)]
pub(crate) struct UpstreamSocket(TcpStream);

impl UpstreamSocket {
    /// Duplicates `fd`.
    ///
    /// Contract: `fd` is the upstream connection pingora passed to
    /// `connected_to_upstream` for this very request attempt, and this is
    /// called while pingora still uses that connection for the request (from
    /// `upstream_response_filter`, the response head having just been read
    /// from it). The fd is then open for the whole call.
    pub(crate) fn duplicate(fd: RawFd) -> std::io::Result<Self> {
        // SAFETY: per the contract above `fd` is open and stays open while
        // it is borrowed here; `try_clone_to_owned` makes our own
        // descriptor (F_DUPFD_CLOEXEC) and the borrow ends with this call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        Ok(Self(TcpStream::from(borrowed.try_clone_to_owned()?)))
    }

    /// Makes pingora's next read from the backend return end of file.
    pub(crate) fn stop_reading(&self) {
        // An error means the connection is already gone: nothing to stop.
        let _ = self.0.shutdown(Shutdown::Read);
    }
}
