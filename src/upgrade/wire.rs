//! The hand-over channel between the old and the new cutover: one
//! `SOCK_SEQPACKET` socket pair, made by the old process, whose second end
//! the new one gets as descriptor 3 (see [`Channel::pair`]). No path on
//! disk, so no stale socket file after a SIGKILL and nobody else can
//! connect. A datagram is one JSON [`Message`], with the descriptors it
//! carries attached (`SCM_RIGHTS`, received close-on-exec so no app the
//! new process starts inherits a listener).
//!
//! Why not pingora's `Fds::send_to_sock`: it needs a path, fills a fixed
//! 2 KiB buffer (its serialisation unwraps on overflow) and asserts on
//! what it receives: a panic on a peer's bytes is not acceptable here.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use cutover_control::supervisor::InstanceRecord;
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Version of this exchange; a new binary speaking another one is refused
/// (the old process serves on).
pub const PROTOCOL: u32 = 1;

/// The descriptor number the new process finds its end on.
pub const CHILD_FD: RawFd = 3;

/// Largest message: instance records for thousands of instances fit.
const MAX_MESSAGE: usize = 1 << 20;

/// Most descriptors one message may carry (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;

/// One step of the hand-over (the order is in ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// New → old, first.
    Hello { protocol: u32, pid: u32 },
    /// Old → new, carrying the proxy listeners (in `proxy`'s order, keyed by
    /// their exact listen address), then the admin listener, then the
    /// state_dir's lock file.
    Listeners { proxy: Vec<String>, admin: String },
    /// New → old: config, journal and listeners are in hand.
    Prepared,
    /// Old → new: the old process stopped supervising; these run and are
    /// the new process's to adopt.
    Frozen { instances: Vec<InstanceRecord> },
    /// New → old: the new process serves.
    Ready,
    /// Old → new: the old process let go of the apps and drains.
    Released,
    /// Either way: the sender gives up, and why.
    Failed { reason: String },
}

/// One end of the channel.
pub struct Channel {
    socket: AsyncFd<OwnedFd>,
}

impl Channel {
    /// A connected pair: this process's end, and the end for the new
    /// process (close-on-exec: only the spawn that maps it to
    /// [`CHILD_FD`] passes it on).
    pub fn pair() -> std::io::Result<(Channel, OwnedFd)> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        Ok((Channel::new(ours)?, theirs))
    }

    /// The new process's end, from the descriptor it was given.
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Channel> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
        Channel::new(fd)
    }

    fn new(fd: OwnedFd) -> std::io::Result<Channel> {
        // SAFETY: an `OwnedFd` stays open and names the same descriptor
        // for as long as the `AsyncFd` owns it.
        let socket = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Channel { socket })
    }

    /// Sends `message` with `fds` attached.
    pub async fn send(&self, message: &Message, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(message)?;
        if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
            return Err(std::io::Error::other("hand-over message too large"));
        }
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        loop {
            let mut ready = self.socket.writable().await?;
            let sent = ready.try_io(|socket| {
                let cmsgs = [ControlMessage::ScmRights(&raw)];
                let cmsgs = if raw.is_empty() { &cmsgs[..0] } else { &cmsgs[..] };
                sendmsg::<()>(
                    socket.get_ref().as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            });
            match sent {
                Ok(Ok(n)) if n == bytes.len() => return Ok(()),
                Ok(Ok(_)) => return Err(std::io::Error::other("hand-over message sent in part")),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// The next message and the descriptors it carried; `None` once the
    /// peer closed its end (it exited, or was killed).
    pub async fn recv(&self) -> std::io::Result<Option<(Message, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        loop {
            let mut ready = self.socket.readable().await?;
            let received = ready.try_io(|socket| receive(socket.get_ref().as_fd(), &mut buf, &mut cmsg));
            match received {
                Ok(Ok(None)) => return Ok(None),
                Ok(Ok(Some((len, fds)))) => {
                    let message = serde_json::from_slice(&buf[..len])
                        .map_err(|e| std::io::Error::other(format!("a hand-over message that is not one: {e}")))?;
                    return Ok(Some((message, fds)));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// One `recvmsg`: the length of the message and its descriptors (owned
/// at once, so an error below closes them), or `None` at end of stream.
fn receive(socket: BorrowedFd<'_>, buf: &mut [u8], cmsg: &mut [u8]) -> std::io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel has just installed these descriptors in
                // this process for this message; nothing else owns them.
                fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    if truncated {
        return Err(std::io::Error::other(
            "a hand-over message was cut (too long, or too many descriptors)",
        ));
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((msg.bytes, fds)))
}

/// In the forked child, before `exec`: makes `fd` the child's
/// [`CHILD_FD`], without close-on-exec. Async-signal-safe (two syscalls,
/// no allocation).
pub fn map_to_child_fd(fd: RawFd) -> std::io::Result<()> {
    if fd == CHILD_FD {
        // SAFETY: `fd` is open in the child (inherited across fork).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))?;
        return Ok(());
    }
    // SAFETY: `fd` is open in the child; the descriptor dup2 returns is
    // CHILD_FD, which the child must keep open for exec: it is released,
    // never closed.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let child = unsafe { nix::unistd::dup2_raw(fd, CHILD_FD) }.map_err(|e: Errno| std::io::Error::from(e))?;
    let _ = std::os::fd::IntoRawFd::into_raw_fd(child);
    Ok(())
}

/// The new process: takes ownership of the hand-over descriptor it was
/// given (`--takeover-fd`), which must be [`CHILD_FD`] and open.
pub fn take_child_fd(fd: RawFd) -> std::io::Result<OwnedFd> {
    if fd != CHILD_FD {
        return Err(std::io::Error::other(format!(
            "--takeover-fd is set by a running cutover, always to {CHILD_FD}"
        )));
    }
    // SAFETY: only checked for being open here; ownership is taken below
    // once fcntl confirmed it is.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|e| std::io::Error::other(format!("--takeover-fd {fd} is not open: {e}")))?;
    // SAFETY: descriptor 3 is open (checked above) and nothing in this
    // process has taken it: it was mapped there by the parent for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_and_descriptors_cross_and_the_end_is_seen() {
        let (old, theirs) = Channel::pair().unwrap();
        let new = Channel::from_fd(theirs).unwrap();
        new.send(
            &Message::Hello {
                protocol: PROTOCOL,
                pid: 7,
            },
            &[],
        )
        .await
        .unwrap();
        let (hello, fds) = old.recv().await.unwrap().unwrap();
        assert_eq!(
            hello,
            Message::Hello {
                protocol: PROTOCOL,
                pid: 7
            }
        );
        assert!(fds.is_empty());

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let message = Message::Listeners {
            proxy: vec![addr.to_string()],
            admin: "127.0.0.1:1".into(),
        };
        old.send(&message, &[listener.as_fd()]).await.unwrap();
        let (got, mut fds) = new.recv().await.unwrap().unwrap();
        assert_eq!(got, message);
        assert_eq!(fds.len(), 1);
        let inherited = std::net::TcpListener::from(fds.remove(0));
        assert_eq!(inherited.local_addr().unwrap(), addr, "the same socket");
        let flags = nix::fcntl::fcntl(&inherited, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC),
            "received descriptors are close-on-exec"
        );

        drop(old);
        assert!(new.recv().await.unwrap().is_none(), "the peer's end closed");
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let (old, theirs) = Channel::pair().unwrap();
        nix::sys::socket::send(theirs.as_raw_fd(), b"{not json", MsgFlags::empty()).unwrap();
        let err = old.recv().await.unwrap_err();
        assert!(err.to_string().contains("not one"), "{err}");
    }
}
