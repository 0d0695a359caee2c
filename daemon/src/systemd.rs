//! The two systemd protocols ckptd speaks, without libsystemd: readiness notification
//! (`NOTIFY_SOCKET`, sd_notify(3)) and socket activation (`LISTEN_FDS`, sd_listen_fds(3)).
//!
//! `sd-notify` reads `LISTEN_FDS` and the watchdog variables. The notification itself is sent
//! here: sd-notify 0.5 connects to `NOTIFY_SOCKET` as a path, and systemd names an abstract
//! socket with a leading `@` (in containers, and in the ops tests), which it cannot reach.

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends a notification ("READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=...") to the service
/// manager, when there is one. Abstract socket names start with '@'.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC` for this pid), halved as sd_watchdog
/// recommends.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// The Unix listening socket systemd passed (`LISTEN_FDS`/`LISTEN_PID`, first fd 3), if any.
/// The variables are removed so that children (CRIU, runc) do not see them.
pub fn listen_fd() -> anyhow::Result<Option<std::os::unix::net::UnixListener>> {
    // Sets FD_CLOEXEC on each fd it returns; none when LISTEN_PID is not this process.
    let fds: Vec<i32> = sd_notify::listen_fds()?.collect();
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called at start-up, before the runtime spawns threads that read the environment.
        unsafe { std::env::remove_var(v) };
    }
    match fds.as_slice() {
        [] => Ok(None),
        [fd] => {
            // SAFETY: systemd hands this fd to this process for it to own; nothing else uses it.
            let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(*fd) };
            l.set_nonblocking(true)?;
            Ok(Some(l))
        }
        many => anyhow::bail!(
            "systemd passed {} sockets; ckptd serves exactly one (ListenStream=)",
            many.len()
        ),
    }
}
