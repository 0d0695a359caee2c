//! Podman's CLI as the exporter of a checkpoint: `podman container checkpoint --export
//! /dev/stdin`, its standard input the write end of a pipe, so that the archive reaches ckptd
//! as Podman writes it. Podman's API cannot stream it: its export writes the whole archive to a
//! temporary file and sends that file once it is complete (512 MiB, by hand, each archive
//! fsynced: 3.88 s through the API, 1.71 s from the CLI on a pipe, 2.14 s from the CLI to a
//! file; BENCHMARKS.md, "Podman containers").
//!
//! The CLI is used only where it is the same Podman as the API's service: a rootful service (a
//! rootless one's storage is its user's, not root's to open), the same version, and the
//! service's storage named on the command line (`--root`, `--runroot`, `--storage-driver`, from
//! the service's `/info`). What else locates a container (its temporary directory, its
//! database's settings) Podman reads from the database in that storage, and it refuses a
//! command line that contradicts them. Anywhere else the API exports.
//!
//! A reader that goes away mid-export wedges the CLI (Podman 4.3.1, measured): it blocks,
//! holding the container's lock, with the container already ended by runc but not yet recorded
//! as checkpointed, so `podman ps`, Podman's cleanup and any restore wait behind it. The pipe
//! therefore has a second reader, `ckptd drain-guard`, in a process group of its own: it
//! waits until ckptd closes its notice pipe (ckptd is done with the stream, gave it up, or is
//! gone) and then reads whatever is left to the end. Podman always finishes its checkpoint and
//! records it; a dump that failed (or a daemon that died) restores the container from Podman's
//! own copy of the images, as with the API.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::archive;
use crate::error::{Error, Result};

use super::api::Info;

/// The first argument that makes the ckptd binary a drain guard instead of the daemon.
pub const DRAIN_COMMAND: &str = "drain-guard";

/// The export pipe's buffer.
const PIPE_SIZE: i32 = 1 << 20;

/// Podman's CLI on the API service's storage.
pub struct Cli {
    program: PathBuf,
    storage: [(&'static str, String); 2],
}

impl Cli {
    /// The CLI at `program` (of `version`), when it acts on the same Podman as the service
    /// `info` describes; why not, otherwise.
    pub fn for_service(
        program: &Path,
        version: &str,
        info: &Info,
    ) -> std::result::Result<Cli, String> {
        if info.host.security.rootless {
            return Err("Podman's service is rootless".into());
        }
        if version != info.version.version {
            return Err(format!(
                "{} is Podman {version}, the service Podman {}",
                program.display(),
                info.version.version
            ));
        }
        Ok(Cli {
            program: program.to_owned(),
            storage: [
                ("--root", info.store.graph_root.display().to_string()),
                ("--runroot", info.store.run_root.display().to_string()),
            ],
        })
    }

    /// Podman's checkpoint of container `id` (`flags` as the API's: `keep`, `leaveRunning`,
    /// ...), its archive unpacked into `dir` while Podman writes it. The outer error is
    /// Podman's (its checkpoint failed; its own words), the inner whether the archive was
    /// stored.
    pub async fn checkpoint(
        &self,
        id: &str,
        flags: super::api::Flags<'_>,
        dir: &Path,
    ) -> std::result::Result<Result<archive::container::Foreign>, Error> {
        let cannot = |what: &str, e: std::io::Error| {
            Error::internal(format!("cannot {what} for Podman's export: {e}"))
        };
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| cannot("create a pipe", e.into()))
        };
        let (read, write) = pipe()?;
        // 1 MiB (the default fs.pipe-max-size) rather than 64 KiB: sixteen times fewer
        // wake-ups of Podman and ckptd's reader. Refused, the pipe still works.
        let _ = nix::fcntl::fcntl(
            read.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE),
        );
        let (notice_read, notice_write) = pipe()?;
        spawn_guard(&read, notice_read).map_err(|e| cannot("start ckptd drain-guard", e))?;
        let mut cmd = tokio::process::Command::new(&self.program);
        for (flag, value) in &self.storage {
            cmd.arg(flag).arg(value);
        }
        cmd.args(["container", "checkpoint", "--compress", "none"])
            .args(["--export", "/dev/stdin"]);
        for (flag, on) in flags {
            if *on {
                cmd.arg(cli_flag(flag));
            }
        }
        // What it says goes to a file (in memory), not to a pipe of ckptd's: Go kills a program that writes
        // to its standard output or error once their reader is gone, and the CLI must outlive
        // a daemon that dies mid-export (above).
        let said_file = rustix::fs::memfd_create("podman-said", rustix::fs::MemfdFlags::CLOEXEC)
            .map(std::fs::File::from)
            .map_err(|e| cannot("create a file", e.into()))?;
        let stderr = said_file
            .try_clone()
            .map_err(|e| cannot("create a file", e))?;
        cmd.arg(id)
            .stdin(Stdio::from(write))
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd.spawn().map_err(|e| {
            Error::unavailable(format!(
                "cannot run Podman's CLI ({}): {e}",
                self.program.display()
            ))
        })?;
        // Podman's the only writer now: the pipe ends when it does.
        drop(cmd);
        let dir = dir.to_owned();
        let stored = tokio::task::spawn_blocking(move || {
            let mut input = std::fs::File::from(read);
            let stored = archive::import_container(&mut input, &dir, u64::MAX);
            if stored.is_ok() {
                // What follows the archive's end (Podman's padding), so that the guard finds
                // the pipe at its end.
                let _ = std::io::copy(&mut (&mut input).take(1 << 20), &mut std::io::sink());
            }
            // Done with the stream (or giving it up): the guard drains what is left.
            drop(notice_write);
            stored
        });
        let mut child = child;
        let status = child
            .wait()
            .await
            .map_err(|e| Error::internal(format!("cannot wait for Podman's CLI: {e}")))?;
        let stored = super::stored(stored.await);
        if !status.success() {
            return Err(Error::new(
                crate::error::ErrorKind::CriuFailed,
                format!("Podman: {}", said(said_file, status)),
            ));
        }
        Ok(stored)
    }
}

/// The CLI's flag for one of the API's query flags.
fn cli_flag(api: &str) -> &'static str {
    match api {
        "keep" => "--keep",
        "leaveRunning" => "--leave-running",
        "tcpEstablished" => "--tcp-established",
        "fileLocks" => "--file-locks",
        other => unreachable!("no CLI flag for Podman's {other}"),
    }
}

/// What a failed CLI said (its last line, from the end of what it wrote), or how it ended.
fn said(mut file: std::fs::File, status: std::process::ExitStatus) -> String {
    use std::io::Seek;
    let text = file
        .rewind()
        .and_then(|()| crate::sys::read_tail(file, 4096))
        .map(|(t, _)| t)
        .unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("Error: ").to_owned())
        .unwrap_or_else(|| format!("podman container checkpoint ended with {status}"))
}

/// Podman's version as its CLI at `program` says it (`podman version X`), or why not.
pub async fn version(program: &Path) -> std::result::Result<String, String> {
    let out = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().rsplit_once(' ') {
        Some((_, v)) if out.status.success() => Ok(v.to_owned()),
        _ => Err(format!(
            "{} --version did not say a version ({})",
            program.display(),
            out.status
        )),
    }
}

/// Starts `ckptd drain-guard FD` on a copy of `data` (the pipe's read end), in a process group
/// of its own so that it outlives ckptd; its standard input is `notice`, whose write end only
/// ckptd holds.
fn spawn_guard(data: &OwnedFd, notice: OwnedFd) -> std::io::Result<()> {
    let me = std::env::current_exe()?;
    let copy = data.try_clone()?;
    let mut g = tokio::process::Command::new(me);
    g.arg(DRAIN_COMMAND)
        .arg(copy.as_raw_fd().to_string())
        .stdin(Stdio::from(notice))
        .stdout(Stdio::null())
        .process_group(0);
    crate::sys::inherit_fd(&mut g, copy.as_raw_fd());
    let mut child = g.spawn()?;
    drop(copy);
    // Reaped when it ends; it ends once ckptd closes the notice and the pipe has ended.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(())
}

/// `ckptd drain-guard FD`: waits until its standard input ends (ckptd closed it, or is gone),
/// then reads descriptor FD (a Podman export's pipe) to its end. Returns the exit code.
pub fn run_drain(args: &[String]) -> i32 {
    use std::os::fd::FromRawFd;
    let Some(fd) = args.first().and_then(|a| a.parse::<i32>().ok()) else {
        eprintln!("usage: ckptd {DRAIN_COMMAND} FD");
        return 2;
    };
    let mut notice = [0u8; 64];
    while matches!(std::io::stdin().read(&mut notice), Ok(n) if n > 0) {}
    // SAFETY: FD is the pipe ckptd handed over for this, open in this process and used by
    // nothing else here.
    let mut data = unsafe { std::fs::File::from_raw_fd(fd) };
    match std::io::copy(&mut data, &mut std::io::sink()) {
        Ok(0) => 0,
        Ok(n) => {
            eprintln!(
                "ckptd {DRAIN_COMMAND}: drained {n} bytes of a Podman export ckptd did not read"
            );
            0
        }
        Err(e) => {
            eprintln!("ckptd {DRAIN_COMMAND}: {e}");
            1
        }
    }
}
