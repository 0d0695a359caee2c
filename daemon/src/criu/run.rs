//! Running a program that drives CRIU (`criu` itself, or a runtime such as runc): its own
//! process group, stoppable, and its failure explained from CRIU's log.

use std::path::Path;
use std::time::Instant;

use nix::sys::signal::Signal;
use tokio::process::Command;

use super::log;
use crate::error::{Error, Result};
use crate::stop::StopSignal;
use crate::sys::{Folder, MAX_LOG_READ};

/// Runs a program that drives CRIU (`criu` itself, or a runtime such as runc) and, when it fails,
/// builds the user's error from CRIU's log: the cause, `log_tail`, `hint`, the log's path and the
/// exact command. `runtime_log` is read for the cause when CRIU's log has none (runc's own
/// errors, e.g. "container does not exist"). `before_stop` runs when a stop arrives, before
/// CRIU is stopped: a dump holds its target there (CRIU stopped lets its tasks go on at once).
pub async fn run_logged(
    mut cmd: Command,
    (folder, log_name): (&Folder, &str),
    runtime_log: Option<&Path>,
    what: String,
    stop: &StopSignal,
    before_stop: Option<&(dyn Fn() + Sync)>,
) -> Result<()> {
    let command = shown_command(cmd.as_std(), folder);
    let log_path = folder.shown().join(log_name);
    let started = Instant::now();
    let cannot_run = |e: std::io::Error| {
        Error::unavailable(format!("cannot run `{command}`: {e}"))
            .with_hint("check that criu and runc are installed and executable (make setup)")
    };
    // Its own process group: a Ctrl-C meant for the daemon never hits CRIU mid-dump, and a stop
    // reaches CRIU and everything it started (runc's criu swrk). spawn + wait_with_output, not
    // output(): output() replaces stdout/stderr with capture pipes, which a restored tree would
    // inherit, and the wait would last as long as the restored tree.
    // Spawned on the blocking pool: the spawning thread waits until the child has run `execve`
    // (a vfork, or a fork and the exec's report), 1-4 ms measured while dumps load the machine;
    // on a runtime worker that stalled every request queued on it (BENCHMARKS.md, API under load).
    cmd.process_group(0);
    // The folder named in the environment, which runc hands on to its CRIU: a runc is given the
    // folder as a descriptor's path (`/proc/<daemon>/fd/<n>`), which names nothing once the
    // daemon is gone, so a restarted daemon finds the runc and the CRIU a crash left by this
    // alone (`reconcile::wait_for_leftover_criu`). A CRIU ckptd runs itself has it already.
    cmd.env(crate::sys::IMAGES_ENV, folder.shown());
    let child = tokio::task::spawn_blocking(move || cmd.spawn())
        .await
        .map_err(|e| cannot_run(std::io::Error::other(e)))?
        .map_err(cannot_run)?;
    let pgid = child.id().map(|p| p as i32);
    let wait = child.wait_with_output();
    tokio::pin!(wait);
    let mut stop = stop.clone();
    let mut stopped_by = None;
    // Listen until a stop arrives or nobody can send one any more.
    let mut listening = true;
    let out = loop {
        tokio::select! {
            out = &mut wait => break out.map_err(cannot_run)?,
            changed = stop.changed(), if listening => {
                let reason = *stop.borrow();
                match (changed, reason) {
                    (Ok(()), Some(r)) => {
                        // Measured: CRIU stopped at any point of a dump leaves the target running
                        // (its parasite returns when CRIU's socket closes); callers resume what a
                        // dump had stopped.
                        tracing::warn!(%command, reason = ?r, "stopping CRIU");
                        if let Some(hold) = before_stop {
                            hold();
                        }
                        if let Some(pg) = pgid {
                            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pg), Signal::SIGTERM);
                        }
                        stopped_by = Some(r);
                        listening = false;
                    }
                    (Err(_), _) => listening = false,
                    (Ok(()), None) => {}
                }
            }
        }
    };
    if !out.status.success() {
        // What it started and left behind goes with it: a runc killed mid-restore leaves its
        // `criu swrk` waiting for ever on runc's end of their socket (found after the fault
        // tests' KillRunc rounds). Its process group is ours, made for this run alone; the
        // restored tree is not in it (CRIU gives it the group its images record).
        if let Some(pg) = pgid {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pg), Signal::SIGKILL);
        }
        // A CRIU that was killed or failed mid-restore can leave its cgroup yard mounted in
        // its work directory, the folder.
        match folder.detach_criu_yards() {
            Ok(0) => {}
            Ok(n) => tracing::info!(%command, yards = n, "unmounted the cgroup yard CRIU left"),
            Err(e) => {
                tracing::warn!(%command, error = %e, "cannot unmount the cgroup yard CRIU left")
            }
        }
    }
    if let Some(r) = stopped_by {
        if !out.status.success() {
            return Err(r
                .error()
                .with("log", log_path.display().to_string())
                .with("command", command));
        }
    }
    tracing::debug!(%command, elapsed_us = started.elapsed().as_micros() as u64, status = %out.status, "finished");
    if out.status.success() {
        return Ok(());
    }
    // Read through the held folder, bounded, never through a symlink: a member's CRIU writes
    // its log in a folder the member owns.
    let log_text = folder
        .read_tail(log_name, MAX_LOG_READ)
        .map(|(t, _)| t)
        .unwrap_or_default();
    // runc's own errors (e.g. "container does not exist") when CRIU's log has none.
    let mut runtime_lines: Vec<String> = runtime_log
        .and_then(|p| crate::sys::open_regular(p).ok())
        .and_then(|f| crate::sys::read_tail(f, MAX_LOG_READ).ok())
        .map(|(t, _)| t)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    runtime_lines.extend(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::to_owned),
    );
    let cause = format!("exited with {}", out.status);
    let err = log::failure(&what, &log_text, &runtime_lines, &cause, &log_path)
        .with("command", command)
        .with("exit_status", out.status.to_string());
    Err(err)
}

/// The command as a person can run it by hand: the image folder by its path (the command names it
/// through a descriptor it inherits, `/proc/self/fd/N`, or ckptd's own, `/proc/<pid>/fd/N`),
/// each argument quoted for a shell where it needs it.
fn shown_command(cmd: &std::process::Command, folder: &Folder) -> String {
    let held = folder.path().display().to_string();
    let shown = folder.shown().display().to_string();
    let in_folder = |a: &str| -> Option<String> {
        if let Some(rest) = a.strip_prefix(&held) {
            return Some(format!("{shown}{rest}"));
        }
        let rest = a.strip_prefix("/proc/self/fd/")?;
        let digits = rest.find('/').unwrap_or(rest.len());
        (digits > 0 && rest[..digits].bytes().all(|b| b.is_ascii_digit()))
            .then(|| format!("{shown}{}", &rest[digits..]))
    };
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            let a = in_folder(&a).unwrap_or_else(|| a.into_owned());
            shlex::try_quote(&a).map_or(a.clone(), |q| q.into_owned())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_command_names_the_folder_and_runs_in_a_shell() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("my checkpoint");
        std::fs::create_dir(&dir).unwrap();
        let folder = crate::sys::Folder::at(&dir).unwrap();
        let mut cmd = std::process::Command::new("/usr/local/sbin/criu");
        cmd.args(["restore", "-D", "/proc/self/fd/21", "--pidfile"])
            .arg(format!("{}/r.pid", folder.path().display()))
            .args(["-o", "restore.log", "--shell-job"]);
        let shown = dir.display().to_string();
        assert_eq!(
            shown_command(&cmd, &folder),
            format!(
                "/usr/local/sbin/criu restore -D '{shown}' --pidfile '{shown}/r.pid' -o restore.log --shell-job"
            )
        );
    }
}
