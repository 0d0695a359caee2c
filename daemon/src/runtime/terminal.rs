//! Terminals: a process with a controlling terminal is dumped as a shell job (`--shell-job`),
//! its terminal recorded by the key CRIU names it by (`tty[RDEV:DEV]`, hex), and restored onto a
//! new pseudo-terminal that ckptd makes: CRIU gets the slave (`--inherit-fd fd[N]:KEY`), and a
//! holder, `ckptd tty-hold`, keeps the master.
//!
//! The holder is ckptd's own binary in its own process group, so the terminal outlives a
//! daemon restart (the process would get SIGHUP if the master closed). It appends everything
//! the process writes to a log (`<state_dir>/terminals/<pid>-<start>.log`, root's, the last
//! 8 MiB), and serves one attached client at a time on a Unix socket next to it (root's
//! directory, 0700), which the daemon connects a caller to (`POST /v1/terminals/{pid}/attach`)
//! once it has checked that the caller is root or the process's owner. The client speaks
//! frames: `[kind u8][len u16 BE][payload]`, kind 0 the bytes typed, kind 1 a window size
//! (rows, cols: u16 BE each, set on the master, which signals SIGWINCH); the holder sends the
//! terminal's output raw. It exits when the process's side of the terminal is gone.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::sys;

use ckptd_api::terminal::{FRAME_DATA, FRAME_RESIZE};

/// The first argument that makes the ckptd binary a terminal holder instead of the daemon.
pub const HOLD_COMMAND: &str = "tty-hold";
/// The log keeps at most this much (it starts again past it).
const LOG_MAX: u64 = 8 << 20;

/// The CRIU key of `pid`'s controlling terminal (`tty[RDEV:DEV]`), found among the terminal
/// descriptors its tree holds, and the terminal's owner (uid); None when none of its tree holds
/// it open.
pub fn key_of(tree: &[i32], tty_nr: i32) -> Option<(String, u32)> {
    for pid in tree {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(st) = rustix::fs::stat(fd.path()) else {
                continue;
            };
            let is_chr = rustix::fs::FileType::from_raw_mode(st.st_mode)
                == rustix::fs::FileType::CharacterDevice;
            if is_chr && st.st_rdev == tty_nr as u64 {
                return Some((format!("tty[{:x}:{:x}]", st.st_rdev, st.st_dev), st.st_uid));
            }
        }
    }
    None
}

/// Where a restored process's terminal is held: its socket and its log, named by the process's
/// identity (pid and start time), so that a pid reused later never reaches it.
pub fn paths(dir: &Path, root: sys::TaskId) -> (PathBuf, PathBuf) {
    let base = format!("{}-{}", root.pid, root.start);
    (
        dir.join(format!("{base}.sock")),
        dir.join(format!("{base}.log")),
    )
}

/// A new pseudo-terminal: (master, slave), both close-on-exec; the slave owned by `owner` when
/// given (a member's restored process gets a terminal of its own).
pub fn open_pty(owner: Option<(u32, u32)>) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(std::io::Error::from)?;
    }
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(
            &pty.slave,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )?;
    }
    Ok((pty.master, pty.slave))
}

/// Starts the holder of `master` for the restored tree `root`; returns the log's path.
pub fn hold(dir: &Path, root: sys::TaskId, master: OwnedFd) -> std::io::Result<PathBuf> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let (socket, log) = paths(dir, root);
    let me = std::env::current_exe()?;
    let fd = master.as_raw_fd();
    let mut cmd = std::process::Command::new(me);
    cmd.arg(HOLD_COMMAND)
        .arg(fd.to_string())
        .arg(&socket)
        .arg(&log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .process_group(0);
    // SAFETY: fcntl is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(master);
    // Ready once its socket is there (bounded): an attach right after the restore finds it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !socket.exists() && std::time::Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Err(std::io::Error::other("the terminal holder ended at once"));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(log)
}

/// `ckptd tty-hold FD SOCKET LOG`: holds the pty master inherited as FD. Returns the exit code.
pub fn run_holder(args: &[String]) -> i32 {
    let (Some(Ok(fd)), Some(socket), Some(log)) = (
        args.first().map(|f| f.parse::<i32>()),
        args.get(1),
        args.get(2),
    ) else {
        eprintln!("usage: ckptd {HOLD_COMMAND} FD SOCKET LOG");
        return 2;
    };
    // SAFETY: the descriptor was handed to this process for it alone.
    let master = unsafe { std::fs::File::from_raw_fd(fd) };
    let socket = PathBuf::from(socket);
    let _ = std::fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "ckptd {HOLD_COMMAND}: cannot listen on {}: {e}",
                socket.display()
            );
            return 1;
        }
    };
    let mut log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ckptd {HOLD_COMMAND}: cannot open {log}: {e}");
            return 1;
        }
    };
    let client: Arc<Mutex<Option<UnixStream>>> = Arc::new(Mutex::new(None));
    let output = client.clone();
    let mut reader = match master.try_clone() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ckptd {HOLD_COMMAND}: {e}");
            return 1;
        }
    };
    let gone = socket.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => {
                    // The process's side is closed: it ended.
                    let _ = std::fs::remove_file(&gone);
                    std::process::exit(0);
                }
                Ok(n) => n,
            };
            if log.metadata().is_ok_and(|m| m.len() > LOG_MAX) {
                let _ = log.set_len(0);
            }
            let _ = log.write_all(&buf[..n]);
            let mut attached = output.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = attached.as_mut() {
                if c.write_all(&buf[..n]).is_err() {
                    *attached = None;
                }
            }
        }
    });
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(5)));
        let Ok(writer) = conn.try_clone() else {
            continue;
        };
        {
            // One at a time: a new attach takes over from the one before.
            let mut attached = client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = attached.replace(writer) {
                let _ = old.shutdown(std::net::Shutdown::Both);
            }
        }
        let Ok(mut input) = master.try_clone() else {
            continue;
        };
        std::thread::spawn(move || {
            let mut conn = conn;
            let _ = relay_input(&mut conn, &mut input);
        });
    }
    0
}

/// A client's frames to the terminal: bytes typed, window sizes.
fn relay_input(conn: &mut UnixStream, master: &mut std::fs::File) -> std::io::Result<()> {
    let mut head = [0u8; 3];
    let mut body = vec![0u8; u16::MAX as usize];
    loop {
        conn.read_exact(&mut head)?;
        let len = u16::from_be_bytes([head[1], head[2]]) as usize;
        conn.read_exact(&mut body[..len])?;
        match head[0] {
            FRAME_DATA => master.write_all(&body[..len])?,
            FRAME_RESIZE if len == 4 => {
                let ws = libc::winsize {
                    ws_row: u16::from_be_bytes([body[0], body[1]]),
                    ws_col: u16::from_be_bytes([body[2], body[3]]),
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads one winsize from the pointer given.
                unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            }
            _ => {}
        }
    }
}
