//! The two systemd protocols ckptd speaks, without libsystemd: readiness notification
//! (`NOTIFY_SOCKET`, sd_notify(3)) and socket activation (`LISTEN_FDS`, sd_listen_fds(3)).

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
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The Unix listening socket systemd passed (`LISTEN_FDS`/`LISTEN_PID`, first fd 3), if any.
/// The variables are removed so that children (CRIU, runc) do not see them.
pub fn listen_fd() -> anyhow::Result<Option<std::os::unix::net::UnixListener>> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let fds: Option<i32> = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok());
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called at start-up, before the runtime spawns threads that read the environment.
        unsafe { std::env::remove_var(v) };
    }
    match (pid_ok, fds) {
        (true, Some(n)) if n >= 1 => {
            if n > 1 {
                anyhow::bail!(
                    "systemd passed {n} sockets; ckptd serves exactly one (ListenStream=)"
                );
            }
            const SD_LISTEN_FDS_START: i32 = 3;
            // SAFETY: systemd hands fd 3 to this process for it to own; nothing else uses it.
            let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(SD_LISTEN_FDS_START) };
            nix::fcntl::fcntl(
                SD_LISTEN_FDS_START,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
            l.set_nonblocking(true)?;
            Ok(Some(l))
        }
        _ => Ok(None),
    }
}
