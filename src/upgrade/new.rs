//! The new cutover's side of an upgrade (SPEC §10): it was started by the
//! running one with the hand-over channel as descriptor 3. It receives the
//! listeners and the state_dir lock, adopts the apps the old process stops
//! supervising, serves, and only then owns everything. Until it reports
//! ready, a failure here changes nothing for the old process: this process
//! says why and exits without touching any app.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{bail, Context};
use cutover_control::supervisor::InstanceRecord;

use super::wire::{self, Channel, Message};

/// Backstop for each wait on the old process (which itself gives the whole
/// hand-over 30 s, and whose death closes the channel at once).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The old process, as the new one sees it during the hand-over.
pub struct Predecessor {
    channel: Channel,
    /// Its pid (this process's parent).
    pub pid: u32,
    /// The proxy listeners it sent, keyed by their exact listen address.
    pub proxy: Vec<(String, OwnedFd)>,
    admin: Option<(String, OwnedFd)>,
    lock: Option<OwnedFd>,
    /// Resolves once the old process has exited.
    exit: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// How the hand-over ended once this process reported ready.
pub enum Released {
    /// The old process let go of the apps and drains.
    Released,
    /// The old process is gone (or silent): the apps are this process's
    /// anyway, since it stopped supervising them before sending them.
    Gone,
}

impl Predecessor {
    /// Greets the old process on descriptor `fd` and receives its listeners
    /// and the state_dir lock.
    pub async fn connect(fd: OwnedFd) -> anyhow::Result<Self> {
        let pid = std::os::unix::process::parent_id();
        let exit = exit_of(pid);
        let channel = Channel::from_fd(fd).context("the hand-over descriptor is not usable")?;
        channel
            .send(
                &Message::Hello {
                    protocol: wire::PROTOCOL,
                    pid: std::process::id(),
                },
                &[],
            )
            .await
            .context("cannot greet the running cutover")?;
        let (message, mut fds) = receive(&channel, "its listeners").await?;
        let Message::Listeners { proxy, admin } = message else {
            bail!("the running cutover sent {message:?} instead of its listeners");
        };
        if fds.len() != proxy.len() + 2 {
            bail!(
                "the running cutover sent {} descriptors for {} proxy listeners, the admin listener and the lock",
                fds.len(),
                proxy.len()
            );
        }
        let lock = fds.pop();
        let admin_fd = fds.pop();
        Ok(Self {
            channel,
            pid,
            proxy: proxy.into_iter().zip(fds).collect(),
            admin: admin_fd.map(|fd| (admin, fd)),
            lock,
            exit: Some(exit),
        })
    }

    /// The inherited admin listener, if it listens on `want` (else it is
    /// closed, and the caller binds `want` itself).
    pub fn admin_listener(&mut self, want: SocketAddr) -> anyhow::Result<Option<std::net::TcpListener>> {
        let Some((addr, fd)) = self.admin.take() else {
            return Ok(None);
        };
        if addr != want.to_string() {
            tracing::warn!(inherited = %addr, configured = %want, "admin.listen changed: the inherited admin listener is closed");
            return Ok(None);
        }
        let listener = std::net::TcpListener::from(fd);
        let local = listener
            .local_addr()
            .context("the inherited admin listener is not a socket")?;
        if local != want {
            bail!("the inherited admin listener listens on {local}, not {want}");
        }
        listener.set_nonblocking(true)?;
        Ok(Some(listener))
    }

    /// Resolves once the old process has exited (watched since `connect`).
    pub fn take_exit(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.exit.take().unwrap_or_else(|| exit_of(self.pid))
    }

    /// The state_dir lock's file (held by the old process and, through this
    /// descriptor, by this one).
    pub fn take_lock(&mut self) -> Option<OwnedFd> {
        self.lock.take()
    }

    /// Tells the old process this one is prepared; returns the instances
    /// it stopped supervising.
    pub async fn prepared(&self) -> anyhow::Result<Vec<InstanceRecord>> {
        self.channel
            .send(&Message::Prepared, &[])
            .await
            .context("cannot tell the running cutover this one is prepared")?;
        match receive(&self.channel, "the instances").await?.0 {
            Message::Frozen { instances } => Ok(instances),
            other => bail!("the running cutover sent {other:?} instead of the instances"),
        }
    }

    /// Reports ready, then waits (bounded) for the old process to let go.
    pub async fn ready(&self) -> Released {
        if let Err(e) = self.channel.send(&Message::Ready, &[]).await {
            tracing::warn!(error = %e, "cannot report ready to the old cutover; taking over anyway");
            return Released::Gone;
        }
        match tokio::time::timeout(STEP_TIMEOUT, self.channel.recv()).await {
            Ok(Ok(Some((Message::Released, _)))) => Released::Released,
            Ok(Ok(Some((other, _)))) => {
                tracing::warn!(message = ?other, "unexpected message from the old cutover after ready; taking over");
                Released::Gone
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => Released::Gone,
        }
    }

    /// Tells the old process why this one gives up (best effort).
    pub async fn fail(&self, reason: &str) {
        let message = Message::Failed {
            reason: reason.to_string(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.channel.send(&message, &[])).await;
    }
}

async fn receive(channel: &Channel, what: &str) -> anyhow::Result<(Message, Vec<OwnedFd>)> {
    match tokio::time::timeout(STEP_TIMEOUT, channel.recv()).await {
        Err(_) => bail!("the running cutover sent no {what} within {}s", STEP_TIMEOUT.as_secs()),
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot receive {what}")),
        Ok(Ok(None)) => bail!("the running cutover closed the hand-over before sending {what}"),
        Ok(Ok(Some((Message::Failed { reason }, _)))) => bail!("the running cutover gave up: {reason}"),
        Ok(Ok(Some(received))) => Ok(received),
    }
}

/// Resolves once process `pid` has exited (a zombie counts as exited):
/// through a pidfd opened now (so a later reuse of the pid is not mistaken
/// for it), or, where the kernel has none, by polling `/proc`.
pub fn exit_of(pid: u32) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    match cutover_control::supervisor::process::exit_of(pid) {
        Ok(exit) => Box::pin(exit),
        Err(e) => {
            tracing::debug!(pid, error = %e, "no pidfd; polling /proc for the predecessor's exit");
            Box::pin(polled_exit(pid))
        }
    }
}

async fn polled_exit(pid: u32) {
    while cutover_control::supervisor::orphans::stat_of(pid).is_some_and(|s| !s.dead) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
