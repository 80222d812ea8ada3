//! systemd's readiness protocol (`sd_notify`), for `Type=notify` units:
//! `READY=1` once cutover serves, `MAINPID=` from a new process that took
//! over (so systemd follows the upgrade instead of treating the old
//! process's exit as the service's), `STOPPING=1` at shutdown. Nothing is
//! sent when `$NOTIFY_SOCKET` is unset; apps never see the variable.

use std::os::unix::net::UnixDatagram;

/// The variable systemd sets.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=VALUE` lines) to systemd, if it
/// listens. Failures are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = send(&path.to_string_lossy(), state) {
        tracing::warn!(error = %e, socket = %path.to_string_lossy(), "cannot notify systemd");
    }
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        // An abstract socket: systemd's usual choice.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_reach_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("cutover-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "MAINPID=42\nREADY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MAINPID=42\nREADY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("cutover-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_systemd = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = abstract_systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(dir);
    }
}
