//! A group's TCP connections, sealed before its members are ended, as CRIU seals one tree's.
//!
//! A dump that ends its target (CRIU's own way) leaves each established connection as it took
//! it: the socket in repair mode, so the kill closes it without a FIN or a RST, and the
//! connection locked (CRIU's iptables rules dropping its packets both ways, CRIU's mark
//! excepted) until the restore, whose CRIU deletes the rules of its own end once its socket is
//! back. A group's members are dumped with `--leave-running` instead (each is left frozen, to be
//! ended only once every member's images are durable, or let run if any failed), and CRIU then
//! undoes both. Ended that way, a connection between two members was closed with a FIN or a
//! RST, and at the restore the first end back probed a peer that was not back yet: its RST
//! reset the connection (measured: a restored member's conversation died, now and then).
//!
//! So before a group's members are ended, ckptd puts back what CRIU's own ending leaves: the
//! rules, in CRIU's words, so that each member's restore deletes its own; then each socket in
//! repair mode, through a copy of its descriptor (`pidfd_getfd`). Root's trees in ckptd's own
//! network namespace only: a member's CRIU (unprivileged) cannot delete rules at her restore,
//! and rules in another namespace are not ckptd's to write.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use crate::engine::Stopped;
use crate::sys::TaskId;

/// CRIU's mark on its own packets (`SOCCR_MARK`), which its rules let through.
const SOCCR_MARK: &str = "0xC114";

/// The sockets sealed: held until the members are ended, so that the last close of each is
/// ours, in repair mode, silent.
pub struct Sealed {
    pub sockets: Vec<TcpStream>,
}

/// Seals every established TCP connection of the process members `members` left stopped
/// (see the module). Best effort: what cannot be sealed is logged and left as it is.
pub async fn seal(members: &[Stopped]) -> Sealed {
    let tasks: Vec<TaskId> = members
        .iter()
        .flat_map(|m| match m {
            Stopped::Tasks(tasks) => tasks.clone(),
            _ => Vec::new(),
        })
        .collect();
    let sockets = established_sockets(&tasks);
    if sockets.is_empty() {
        return Sealed { sockets };
    }
    let mut v4 = String::new();
    let mut v6 = String::new();
    for s in &sockets {
        let (Ok(local), Ok(peer)) = (s.local_addr(), s.peer_addr()) else {
            continue;
        };
        let (local, peer) = (unmapped(local), unmapped(peer));
        let rules = if local.is_ipv4() { &mut v4 } else { &mut v6 };
        rules.push_str(&lock_rules(local, peer));
    }
    for (tool, rules) in [("iptables-restore", v4), ("ip6tables-restore", v6)] {
        if !rules.is_empty() {
            if let Err(e) = run_restore(tool, &format!("*filter\n{rules}COMMIT\n")).await {
                tracing::warn!(tool, error = %e, "cannot lock the group's connections until its restore");
            }
        }
    }
    for s in &sockets {
        set_repair(s, true);
    }
    tracing::debug!(connections = sockets.len(), "group's connections sealed");
    Sealed { sockets }
}

/// Gives back the connections of `tasks` that a dump left sealed and did not end: a dump
/// that leaves its tree stopped (`--leave-stopped`) keeps each established connection in
/// repair mode and locked, for the kill that ends the tree once its images are durable; a CRIU
/// stopped mid-dump leaves them so too. A target let run instead (the images could not be made
/// durable, the job was stopped) would find its sockets dead: a read fails with EPERM, the
/// peer's packets are dropped (measured: a cancelled dump's target died of it). Each such
/// socket's rules are deleted, then it leaves repair mode (the kernel sends a window probe, and
/// the connection goes on). Root's tasks in ckptd's network namespace, as `seal`.
pub async fn unseal(tasks: &[TaskId]) {
    let sealed: Vec<TcpStream> = established_sockets(tasks)
        .into_iter()
        .filter(|s| repair_mode(s) == Some(true))
        .collect();
    for s in &sealed {
        let (Ok(local), Ok(peer)) = (s.local_addr(), s.peer_addr()) else {
            continue;
        };
        let (local, peer) = (unmapped(local), unmapped(peer));
        let tool = if local.is_ipv4() {
            "iptables"
        } else {
            "ip6tables"
        };
        // One rule at a time: a batch fails whole if one of its rules is gone already.
        for rule in lock_rules(local, peer).lines() {
            let deleted = tokio::process::Command::new(tool)
                .args(["-w", "-t", "filter"])
                .args(rule.replacen("-I ", "-D ", 1).split_whitespace())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await;
            tracing::debug!(rule, ?deleted, "connection lock deleted");
        }
    }
    for s in &sealed {
        set_repair(s, false);
    }
    if !sealed.is_empty() {
        tracing::info!(
            connections = sealed.len(),
            "connections a dump left sealed given back"
        );
    }
}

/// CRIU's two rules for one end of a connection (`IPTABLES_CONN_CMD` in its netfilter.c: what
/// the peer sends to this end, and what this end sends), which its restore of that end
/// deletes.
fn lock_rules(local: SocketAddr, peer: SocketAddr) -> String {
    let rule = |chain: &str, from: SocketAddr, to: SocketAddr| {
        format!(
            "-I {chain} -p tcp -m mark ! --mark {SOCCR_MARK} -s {} --sport {} -d {} --dport {} -j DROP\n",
            from.ip(),
            from.port(),
            to.ip(),
            to.port()
        )
    };
    rule("INPUT", peer, local) + &rule("OUTPUT", local, peer)
}

/// Puts a socket in repair mode (`TCP_REPAIR`), or takes it out (`TCP_REPAIR_OFF`, which sends
/// the peer a window probe).
fn set_repair(s: &TcpStream, on: bool) {
    let value: libc::c_int = on.into();
    // SAFETY: a valid socket descriptor we own and an int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_REPAIR,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::warn!(on, error = %std::io::Error::last_os_error(), "cannot switch a connection's repair mode");
    }
}

/// Whether a socket is in repair mode (None: cannot tell).
fn repair_mode(s: &TcpStream) -> Option<bool> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket descriptor we own and an int buffer of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_REPAIR,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(value != 0)
}

/// An IPv4-mapped IPv6 address as the IPv4 one, as CRIU writes its rules.
fn unmapped(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

async fn run_restore(tool: &str, rules: &str) -> std::io::Result<()> {
    let mut child = tokio::process::Command::new(tool)
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, rules.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{tool} {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Copies of the established TCP sockets of `tasks` (each once): root's tasks in ckptd's own
/// network namespace, each checked to be the process it was when it was stopped.
fn established_sockets(tasks: &[TaskId]) -> Vec<TcpStream> {
    let netns = |pid: &str| {
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .ok()
            .map(|m| m.ino())
    };
    let ours = netns("self");
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for t in tasks {
        let Ok(proc) = procfs::process::Process::new(t.pid) else {
            continue;
        };
        if proc.uid().ok() != Some(0) || netns(&t.pid.to_string()) != ours || ours.is_none() {
            continue;
        }
        let Ok(pidfd) = t.pidfd() else { continue };
        let Ok(fds) = proc.fd() else { continue };
        for fd in fds.flatten() {
            let procfs::process::FDTarget::Socket(ino) = fd.target else {
                continue;
            };
            if seen.contains(&ino) {
                continue;
            }
            let Ok(copy) = rustix::process::pidfd_getfd(
                &pidfd,
                fd.fd,
                rustix::process::PidfdGetfdFlags::empty(),
            ) else {
                continue;
            };
            if is_established_tcp(&copy) {
                seen.insert(ino);
                out.push(TcpStream::from(copy));
            }
        }
    }
    out
}

fn is_established_tcp(fd: &std::os::fd::OwnedFd) -> bool {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let inet = matches!(
        sockopt::socket_domain(fd),
        Ok(AddressFamily::INET | AddressFamily::INET6)
    );
    let stream = sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::STREAM);
    if !(inet && stream) {
        return false;
    }
    // tcp_info's first byte is the state (include/uapi/linux/tcp.h); 1 is TCP_ESTABLISHED.
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: a socket descriptor we own, a buffer of `len` bytes (the kernel writes at most
    // that many).
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    r == 0 && len >= 1 && info[0] == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_are_crius_for_one_end() {
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let peer: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(
            lock_rules(unmapped(local), unmapped(peer)),
            "-I INPUT -p tcp -m mark ! --mark 0xC114 -s 127.0.0.1 --sport 5000 -d 127.0.0.1 \
             --dport 40000 -j DROP\n-I OUTPUT -p tcp -m mark ! --mark 0xC114 -s 127.0.0.1 \
             --sport 40000 -d 127.0.0.1 --dport 5000 -j DROP\n"
        );
    }
}
