//! Process trees, checkpointed and restored by CRIU itself (`criu dump` / `criu restore`).
//!
//! Without `leave_running` CRIU leaves the tree stopped (`--leave-stopped`), not killed: the
//! service kills it only once the images are durable, and resumes it if they cannot be made so.
//! A restore in place waits (bounded) for zombies holding the tree's old pids; a lazy restore
//! serves memory from a `criu lazy-pages` page server in its own process group.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ckptd_api::{Checkpoint, JobResult, Target};
use nix::sys::signal::Signal;

use crate::criu::{self, images, log, run_logged, Criu, ImagesFd};
use crate::engine::{
    BoxFuture, DumpOutput, DumpSpec, Engine, LazyDump, LazyRestore, RestoreSpec, Stopped,
};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// The image folder, as a descriptor the CRIU runs over it inherit.
pub(crate) fn open_images(images: &sys::Folder) -> Result<ImagesFd> {
    ImagesFd::of(images)
        .map_err(|e| Error::io("cannot open the image directory", images.shown(), &e))
}

/// How `run_restore` restores: memory lazily (a `criu lazy-pages` serves it), and onto a
/// terminal (its slave, and the key CRIU names the dumped terminal by).
struct RestoreHow<'a> {
    lazy: bool,
    tty: Option<(&'a std::os::fd::OwnedFd, &'a str)>,
}

/// Process trees through CRIU.
pub struct ProcessEngine {
    criu: Arc<Criu>,
    /// At restore, how long to wait for a zombie holding a needed pid to be reaped.
    pid_wait: Duration,
    /// Where restored trees' terminals are held (`runtime::terminal`).
    terminals: PathBuf,
}

/// A running `criu lazy-pages` serving one restore.
pub(crate) struct LazyPages {
    pub(crate) child: tokio::process::Child,
    /// Its log, inside the held folder, and as the user knows it.
    log: PathBuf,
    shown: PathBuf,
}

impl LazyPages {
    /// Waits until all the restored tree's memory is in (lazy-pages exits then), so that the
    /// checkpoint stays reserved, and its images on disk, for as long as they are read. The
    /// restore failed only if the tree did not survive it.
    async fn finish(mut self, pid: i32, name: &str) -> Result<()> {
        let status = self.child.wait().await;
        let ok = status.as_ref().is_ok_and(|s| s.success());
        if !ok {
            tracing::warn!(checkpoint = name, ?status, log = %self.shown.display(), "criu lazy-pages ended with an error");
        }
        if pid > 0 && sys::proc_stat(pid).is_none_or(|s| s.state == 'Z') {
            let text = self.log_text();
            return Err(Error::new(
                ErrorKind::CriuFailed,
                format!(
                    "the restored tree of checkpoint {name} (pid {pid}) died while its memory was \
                     being restored lazily"
                ),
            )
            .with("log_tail", log::tail(&text))
            .with("log", self.shown.display().to_string())
            .with_advice(ckptd_api::Advice::WithoutLazy));
        }
        Ok(())
    }

    /// The tail of its log (opened without following a symlink, bounded).
    fn log_text(&self) -> String {
        sys::open_regular(&self.log)
            .and_then(|f| sys::read_tail(f, sys::MAX_LOG_READ))
            .map(|(t, _)| t)
            .unwrap_or_default()
    }

    pub(crate) fn abort(mut self) {
        if let Some(pg) = self.child.id() {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pg as i32), Signal::SIGKILL);
        }
        let _ = self.child.start_kill();
    }
}

impl ProcessEngine {
    pub fn new(criu: Arc<Criu>, pid_wait: Duration, terminals: PathBuf) -> Self {
        Self {
            criu,
            pid_wait,
            terminals,
        }
    }

    /// `criu dump` of the tree at `pid` into the held folder, logged at the daemon's level.
    fn dump_args(&self, pid: i32, images: &ImagesFd, spec: &DumpSpec<'_>) -> Vec<String> {
        vec![
            "dump".into(),
            "-t".into(),
            pid.to_string(),
            "-D".into(),
            images.path(),
            "-o".into(),
            spec.log_name.into(),
            format!("-v{}", self.criu.log_level()),
        ]
    }

    async fn dump_process(&self, pid: i32, spec: DumpSpec<'_>) -> Result<DumpOutput> {
        let terminal = checked_process(pid)?;
        if let (Some((_, tty_uid)), Some(owner)) = (&terminal, &spec.owner) {
            // Its owner's CRIU restores the terminal's ownership as dumped, which it may only
            // do for a terminal of the owner's own.
            if *tty_uid != owner.uid {
                return Err(Error::target_unavailable(format!(
                    "pid {pid}'s controlling terminal belongs to uid {tty_uid}, not to its owner \
                     (uid {}): a restore by the owner's CRIU could not give it back",
                    owner.uid
                ))
                .with_hint(
                    "run the program in a terminal of your own (your own tmux or login), or \
                     detached from any: setsid -f PROGRAM </dev/null >LOG 2>&1",
                ));
            }
        }
        let terminal = terminal.map(|(key, _)| key);
        let criu = self.criu.usable()?;
        // The tree is known by its root's identity, taken before CRIU runs: what a dump leaves
        // stopped is found from it in the kernel's process table, never in the images.
        let root = sys::TaskId::of(pid)
            .ok_or_else(|| Error::target_unavailable(format!("no process with pid {pid}")))?;
        // As CRIU's standard input: spawned without a fork of the daemon (`ImagesFd`).
        let images = ImagesFd::as_stdin_of(spec.images)
            .map_err(|e| Error::io("cannot open the image directory", spec.images.shown(), &e))?;
        let mut args = self.dump_args(pid, &images, &spec);
        // Without leave_running the tree is left stopped, not killed: ckptd kills it only once
        // the images are durable, and resumes it if they cannot be made so.
        args.push(if spec.options.leave_running {
            "--leave-running".into()
        } else {
            "--leave-stopped".into()
        });
        Criu::option_flags(&spec.options, &mut args);
        if terminal.is_some() && !spec.options.shell_job {
            // Its terminal stays outside the images, named by its key (`--inherit-fd` at restore).
            args.push("--shell-job".into());
        }
        if let Some(b) = &spec.barrier {
            b.hand_to(&mut args);
        }
        let mut cmd = self
            .criu
            .command_in(criu, &args, &images, spec.owner.as_ref());
        if let Some(b) = &spec.barrier {
            b.pass(&mut cmd);
        }
        // A stop ends CRIU, whose seized tasks then run on at once: with their connections
        // still sealed, a read fails (EPERM) before they are given back. So the tree is held
        // (SIGSTOP, taken as CRIU lets go) until they are, below.
        let uid = spec.owner.as_ref().map(|o| o.uid);
        let hold = move || {
            sys::signal_tasks(&sys::live_tree(root, uid), rustix::process::Signal::STOP);
        };
        if let Err(e) = run_logged(
            cmd,
            (spec.images, spec.log_name),
            None,
            format!("CRIU could not dump pid {pid}"),
            &spec.stop,
            spec.options
                .tcp_established
                .then_some(&hold as &(dyn Fn() + Sync)),
        )
        .await
        {
            // CRIU resumes the tree when a dump fails; make sure nothing stays stopped, and no
            // connection sealed, even if CRIU itself died half-way.
            if spec.options.tcp_established {
                super::seal::unseal(&sys::live_tree(root, uid)).await;
            }
            resume_if_stopped(root, uid);
            return Err(e);
        }
        let stopped = if spec.options.leave_running {
            Stopped::Nothing
        } else {
            Stopped::Tasks(sys::live_tree(root, spec.owner.as_ref().map(|o| o.uid)))
        };
        Ok(DumpOutput {
            stats: criu::dump_stats(&spec.images.path()),
            stopped,
            container: None,
            criu_config: self.criu.options_file(),
            terminal,
            members: Vec::new(),
        })
    }

    /// The source side of a live migration: `criu dump --lazy-pages --ps-socket`, the tree left
    /// stopped (`--leave-stopped`) whatever the transfer's end; returns once CRIU says (on its
    /// status descriptor) that everything but memory is written and it serves pages.
    async fn dump_lazy_process(
        &self,
        pid: i32,
        spec: DumpSpec<'_>,
        pages: std::os::fd::OwnedFd,
    ) -> Result<LazyDump> {
        use std::os::fd::AsRawFd;
        check_process(pid)?;
        check_lazy_pipes()?;
        let criu = self.criu.usable()?;
        let root = sys::TaskId::of(pid)
            .ok_or_else(|| Error::target_unavailable(format!("no process with pid {pid}")))?;
        let images = open_images(spec.images)?;
        let (status_rx, status_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::internal(format!("cannot make a pipe: {e}")))?;
        let mut args = self.dump_args(pid, &images, &spec);
        args.extend([
            "--lazy-pages".into(),
            "--ps-socket".into(),
            pages.as_raw_fd().to_string(),
            "--status-fd".into(),
            status_tx.as_raw_fd().to_string(),
            // Never killed by CRIU: its memory stays here until the service knows where the
            // workload lives (CRIU takes a closed page socket for a finished transfer).
            "--leave-stopped".into(),
        ]);
        Criu::option_flags(&spec.options, &mut args);
        let mut cmd = self
            .criu
            .command_in(criu, &args, &images, spec.owner.as_ref());
        sys::inherit_fd(&mut cmd, pages.as_raw_fd());
        sys::inherit_fd(&mut cmd, status_tx.as_raw_fd());
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| Error::unavailable(format!("cannot run `criu dump`: {e}")))?;
        drop(status_tx);
        drop(pages);
        let mut child = child;
        // One byte when the images are written and pages are served; end of file if CRIU ends
        // first (it failed, and resumed the tree).
        if !serving(status_rx, &spec.stop).await? {
            if let Some(pg) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pg as i32),
                    Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            resume_if_stopped(root, spec.owner.as_ref().map(|o| o.uid));
            let text = spec
                .images
                .read_tail(spec.log_name, sys::MAX_LOG_READ)
                .map(|(t, _)| t)
                .unwrap_or_default();
            let e = match *spec.stop.borrow() {
                Some(r) => r.error(),
                None => Error::new(
                    ErrorKind::CriuFailed,
                    format!("CRIU could not dump pid {pid} for a live migration"),
                ),
            };
            return Err(e.with("log_tail", log::tail(&text)).with(
                "log",
                spec.images
                    .shown()
                    .join(spec.log_name)
                    .display()
                    .to_string(),
            ));
        }
        Ok(LazyDump {
            stopped: Stopped::Tasks(sys::live_tree(root, spec.owner.as_ref().map(|o| o.uid))),
            criu: child,
            frozen_at: None,
        })
    }

    /// The destination side of a live migration: a guarded `criu lazy-pages` fetching memory over
    /// `pages`, then `criu restore --lazy-pages`. Returns once the tree runs.
    async fn restore_lazy_process(
        &self,
        spec: RestoreSpec<'_>,
        pages: std::os::fd::OwnedFd,
    ) -> Result<LazyRestore> {
        check_lazy_pipes()?;
        let criu = self.criu.usable()?;
        let name = &spec.checkpoint.name;
        let pids = images::read_tree_pids(&spec.images.path()).map_err(|e| {
            Error::internal(format!("the migrated images of {name} are damaged: {e}"))
        })?;
        self.wait_for_free_pids(&pids).await?;
        let images_fd = open_images(spec.images)?;
        let pidfile_name = pidfile_of(spec.log_name);
        let lazy = start_lazy_pages(
            &self.criu,
            criu,
            &spec,
            &images_fd,
            Some((pages, &pidfile_name)),
        )
        .await?;
        let since = sys::boot_ticks();
        let restored = self
            .run_restore(
                criu,
                &spec,
                &images_fd,
                &pidfile_name,
                RestoreHow {
                    lazy: true,
                    tty: None,
                },
                format!("CRIU could not restore the migrated tree of {name}"),
            )
            .await;
        // Read, not removed: the guard reads it too if the pages stop coming.
        let pid = spec
            .images
            .read(&pidfile_name, 64)
            .ok()
            .and_then(|t| String::from_utf8_lossy(&t).trim().parse::<i32>().ok());
        match (restored, pid) {
            (Ok(()), Some(pid)) => Ok(LazyRestore {
                pid,
                guard: lazy.child,
                container: None,
            }),
            (r, _) => {
                lazy.abort();
                if let Some(first) = pids.first() {
                    end_half_restored(*first, since, spec.checkpoint.owner_uid);
                }
                Err(r.err().unwrap_or_else(|| {
                    Error::internal("CRIU restored the migrated tree but wrote no pidfile")
                }))
            }
        }
    }

    async fn restore_process(&self, spec: RestoreSpec<'_>) -> Result<JobResult> {
        let criu = self.criu.usable()?;
        let name = &spec.checkpoint.name;
        let pids = images::read_tree_pids(&spec.images.path()).map_err(|e| {
            Error::internal(format!("checkpoint {name} is damaged: {e}"))
                .with_hint("take a new checkpoint; this one cannot be restored")
        })?;
        self.wait_for_free_pids(&pids).await?;
        let images_fd = open_images(spec.images)?;
        let lazy = if spec.lazy {
            Some(start_lazy_pages(&self.criu, criu, &spec, &images_fd, None).await?)
        } else {
            None
        };
        let pidfile_name = pidfile_of(spec.log_name);
        // A tree dumped with its terminal gets a new one, whose master ckptd's holder keeps.
        let tty = match &spec.checkpoint.terminal {
            Some(key) => {
                let owner = spec.owner.as_ref().map(|a| (a.uid, a.gid));
                let pty = super::terminal::open_pty(owner).map_err(|e| {
                    Error::unavailable(format!("cannot open a terminal for the restore: {e}"))
                })?;
                Some((pty, key.as_str()))
            }
            None => None,
        };
        let since = sys::boot_ticks();
        let restored = self
            .run_restore(
                criu,
                &spec,
                &images_fd,
                &pidfile_name,
                RestoreHow {
                    lazy: lazy.is_some(),
                    tty: tty.as_ref().map(|((_, slave), key)| (slave, *key)),
                },
                format!("CRIU could not restore checkpoint {name}"),
            )
            .await;
        let pid = read_pidfile(spec.images, &pidfile_name).or(pids.first().copied());
        if let Some(lazy) = lazy {
            match &restored {
                Ok(()) => lazy.finish(pid.unwrap_or(0), name).await?,
                Err(_) => lazy.abort(),
            }
        }
        if let (Err(_), Target::Process { pid }) = (&restored, &spec.checkpoint.target) {
            end_half_restored(*pid, since, spec.checkpoint.owner_uid);
        }
        restored?;
        let mut output_log = None;
        // The pid comes from the pidfile the restore wrote in the checkpoint's folder, which a
        // member can rewrite: the terminal is held only for a tree that is the owner's.
        let held_root = pid.and_then(sys::TaskId::of).filter(|r| match &spec.owner {
            Some(o) => crate::auth::owns_tree(o.uid, r.pid).is_ok(),
            None => true,
        });
        if let (Some(((master, slave), _)), Some(root)) = (tty, held_root) {
            drop(slave);
            match super::terminal::hold(&self.terminals, root, master) {
                Ok(log) => output_log = Some(log.display().to_string()),
                Err(e) => {
                    tracing::error!(pid = root.pid, error = %e, "cannot hold the restored tree's terminal; it gets SIGHUP")
                }
            }
        }
        if spec
            .checkpoint
            .labels
            .get(crate::engine::CONTINUE_LABEL)
            .map(String::as_str)
            == Some("true")
        {
            // Dumped stopped (a live migration's fallback): continued once it has stopped.
            if let Some(root) = pid.and_then(sys::TaskId::of) {
                continue_stopped_tree(root, spec.checkpoint.owner_uid).await;
            }
        }
        Ok(JobResult {
            pid,
            output_log,
            ..Default::default()
        })
    }

    /// `criu restore` of `spec.images`, detached (the restored tree is not a child of ckptd
    /// and outlives it), its root's pid written to `pidfile` in the folder.
    async fn run_restore(
        &self,
        criu: &Path,
        spec: &RestoreSpec<'_>,
        images_fd: &ImagesFd,
        pidfile: &str,
        how: RestoreHow<'_>,
        what: String,
    ) -> Result<()> {
        let RestoreHow { lazy, tty } = how;
        let images = images_fd.path();
        let mut args: Vec<String> = vec![
            "restore".into(),
            "-D".into(),
            images.clone(),
            "-o".into(),
            spec.log_name.into(),
            format!("-v{}", self.criu.log_level()),
            "--restore-detached".into(),
            "--pidfile".into(),
            format!("{images}/{pidfile}"),
        ];
        Criu::option_flags(&spec.options, &mut args);
        if lazy {
            args.push("--lazy-pages".into());
        }
        if let Some((slave, key)) = tty {
            use std::os::fd::AsRawFd;
            if !spec.options.shell_job {
                args.push("--shell-job".into());
            }
            args.push("--inherit-fd".into());
            args.push(format!("fd[{}]:{key}", slave.as_raw_fd()));
        }
        // A restored shell job inherits CRIU's stdio: never a pipe ckptd would wait on.
        let mut cmd = self
            .criu
            .command_in(criu, &args, images_fd, spec.owner.as_ref());
        if let Some((slave, _)) = tty {
            use std::os::fd::AsRawFd;
            sys::inherit_fd(&mut cmd, slave.as_raw_fd());
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        run_logged(
            cmd,
            (spec.images, spec.log_name),
            None,
            what,
            &spec.stop,
            None,
        )
        .await
    }

    /// A restore in place needs the tree's old pids. A zombie that holds one is given
    /// `pid_wait` to be reaped by its parent; a live process is a conflict.
    async fn wait_for_free_pids(&self, pids: &[i32]) -> Result<()> {
        let deadline = Instant::now() + self.pid_wait;
        loop {
            let taken: Vec<sys::ProcStat> =
                pids.iter().filter_map(|&p| sys::proc_stat(p)).collect();
            let Some(first) = taken.first() else {
                return Ok(());
            };
            let all_zombies = taken.iter().all(sys::ProcStat::is_zombie);
            if !all_zombies || Instant::now() >= deadline {
                let why = if first.is_zombie() {
                    format!(
                        "is held by a zombie (exited, not yet reaped by its parent pid {}) after {} s",
                        first.ppid,
                        self.pid_wait.as_secs()
                    )
                } else {
                    format!(
                        "is in use by a running process ('{}', state {})",
                        first.comm, first.state
                    )
                };
                // Often the checkpointed process itself: taken with leave_running, or restored
                // already. A process checkpoint comes back only at its own pids.
                return Err(Error::conflict(format!(
                    "cannot restore in place: pid {} {why}",
                    first.pid
                ))
                .with("pid", first.pid)
                .with_hint(format!(
                    "a process checkpoint is restored at the pids it had; if that is the \
                     checkpointed process still running (checkpointed with leave_running, or \
                     restored already), end it first (kill {}), then restore again",
                    first.pid
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A tree restored stopped (dumped so: a live migration's fallback, a group's member): CRIU
/// detaches from each task with a SIGSTOP the task takes on its own time, so the tree is
/// continued once every live task of it has stopped (or after 5 s, what has).
async fn continue_stopped_tree(root: sys::TaskId, owner_uid: u32) {
    let owner = (owner_uid != 0).then_some(owner_uid);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live = sys::live_tree(root, owner);
        let stopped = sys::tree_in_state(root, 'T', owner);
        if (!stopped.is_empty() && stopped.len() == live.len()) || Instant::now() > deadline {
            if stopped.is_empty() {
                tracing::warn!(
                    pid = root.pid,
                    "the restored tree never stopped; not continued"
                );
            }
            sys::signal_tasks(&stopped, rustix::process::Signal::CONT);
            return;
        }
        if !root.alive() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Stops every task of the tree at `pid` (SIGSTOP, through pidfds), until a listing of the tree
/// finds no task that is not stopped: a task forked meanwhile is stopped too. A group's
/// member, frozen before any member is dumped.
async fn stop_tree(pid: i32, owner_uid: u32) -> Result<Stopped> {
    use rustix::process::Signal;
    let owner = (owner_uid != 0).then_some(owner_uid);
    let root = sys::TaskId::of(pid)
        .filter(|r| r.alive())
        .ok_or_else(|| Error::target_unavailable(format!("no process with pid {pid}")))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut signalled: Vec<sys::TaskId> = Vec::new();
    loop {
        let live = sys::live_tree(root, owner);
        // A vfork (dash runs each command so): the parent waits in the kernel, uninterruptible,
        // until its child execs or exits, and takes its SIGSTOP only then. A child stopped
        // before its exec would hold the parent there for good (measured: a looping `sh` could
        // not be stopped within the 5 s on a loaded machine). So such a child goes on until it
        // has exec'd (its parent is then out of the wait, and both are stopped next round).
        let in_vfork: Vec<i32> = live
            .iter()
            .filter(|t| sys::is_vfork_parent(t.pid))
            .flat_map(|t| sys::children(t.pid))
            .collect();
        let vfork_children: Vec<sys::TaskId> = live
            .iter()
            .filter(|t| in_vfork.contains(&t.pid))
            .copied()
            .collect();
        sys::signal_tasks(&vfork_children, Signal::CONT);
        let running: Vec<sys::TaskId> = live
            .iter()
            .filter(|t| sys::proc_stat(t.pid).is_some_and(|s| !matches!(s.state, 'T' | 't')))
            .copied()
            .collect();
        for t in &running {
            if !signalled.contains(t) {
                signalled.push(*t);
            }
        }
        if running.is_empty() && !live.is_empty() {
            return Ok(Stopped::Tasks(live));
        }
        if live.is_empty() || Instant::now() > deadline {
            sys::signal_tasks(&signalled, Signal::CONT);
            return Err(Error::target_unavailable(format!(
                "the tree of pid {pid} could not be stopped within 5 s{}",
                if live.is_empty() { " (it ended)" } else { "" }
            )));
        }
        let to_stop: Vec<sys::TaskId> = running
            .into_iter()
            .filter(|t| !in_vfork.contains(&t.pid))
            .collect();
        sys::signal_tasks(&to_stop, Signal::STOP);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Resumes the tree below `root` if anything in it was left stopped.
fn resume_if_stopped(root: sys::TaskId, uid: Option<u32>) {
    let stopped = sys::tree_in_state(root, 'T', uid);
    if !stopped.is_empty() {
        tracing::warn!(?stopped, "resuming tasks a failed dump left stopped");
        sys::signal_tasks(&stopped, rustix::process::Signal::CONT);
    }
}

impl Engine for ProcessEngine {
    fn version(&self) -> Option<String> {
        self.criu.version()
    }

    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match target {
                Target::Process { pid } => check_process(*pid),
                _ => Err(Error::internal(
                    "a container or group target reached the process engine",
                )),
            }
        })
    }

    fn check_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        console_socket: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if into.is_some_and(|t| *t != checkpoint.target) {
                return Err(Error::invalid(
                    "a process checkpoint is restored in place, with its original pids; leave out \
                     \"target\" (restoring a process under another pid needs a container)",
                ));
            }
            if console_socket.is_some() {
                return Err(Error::invalid(
                    "console_socket is for containers with a terminal; a process checkpoint \
                     restores its own terminal with shell_job",
                ));
            }
            Ok(())
        })
    }

    fn dump_estimate<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            match target {
                Target::Process { pid } => Ok(sys::tree_dump_estimate(*pid)),
                _ => Err(Error::internal(
                    "a container or group target reached the process engine",
                )),
            }
        })
    }

    fn dump<'a>(&'a self, spec: DumpSpec<'a>) -> BoxFuture<'a, Result<DumpOutput>> {
        Box::pin(async move {
            match *spec.target {
                Target::Process { pid } => self.dump_process(pid, spec).await,
                _ => Err(Error::internal(
                    "a container or group target reached the process engine",
                )),
            }
        })
    }

    fn restore<'a>(&'a self, spec: RestoreSpec<'a>) -> BoxFuture<'a, Result<JobResult>> {
        Box::pin(self.restore_process(spec))
    }

    fn terminal_socket(&self, root: sys::TaskId) -> Option<PathBuf> {
        let (socket, _) = super::terminal::paths(&self.terminals, root);
        socket.exists().then_some(socket)
    }

    fn check_live<'a>(
        &'a self,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Option<ckptd_api::ContainerRecord>>> {
        Box::pin(async move {
            match *target {
                Target::Process { pid } => {
                    if checked_process(pid)?.is_some() {
                        return Err(Error::invalid(format!(
                            "pid {pid} has a controlling terminal, which a live migration cannot \
                             hand over"
                        ))
                        .with_hint("move it with a checkpoint: ckpt create PID NAME, then ckpt migrate NAME --to HOST:PORT --restore"));
                    }
                    Ok(None)
                }
                _ => Err(crate::engine::no_live_migration(target)),
            }
        })
    }

    /// The tree a live dump left stopped (`--leave-stopped`): tasks of the target's tree in
    /// state T, the owner's when that is not root.
    fn live_leftover<'a>(
        &'a self,
        target: &'a Target,
        owner_uid: u32,
    ) -> BoxFuture<'a, Option<Stopped>> {
        Box::pin(async move {
            let Target::Process { pid } = *target else {
                return None;
            };
            let owner = (owner_uid != 0).then_some(owner_uid);
            let stopped = sys::TaskId::of(pid)
                .map(|root| sys::tree_in_state(root, 'T', owner))
                .unwrap_or_default();
            (!stopped.is_empty()).then_some(Stopped::Tasks(stopped))
        })
    }

    fn dump_lazy<'a>(
        &'a self,
        spec: DumpSpec<'a>,
        pages: std::os::fd::OwnedFd,
    ) -> BoxFuture<'a, Result<LazyDump>> {
        Box::pin(async move {
            match *spec.target {
                Target::Process { pid } => self.dump_lazy_process(pid, spec, pages).await,
                _ => Err(crate::engine::no_live_migration(spec.target)),
            }
        })
    }

    fn restore_lazy<'a>(
        &'a self,
        spec: RestoreSpec<'a>,
        pages: std::os::fd::OwnedFd,
    ) -> BoxFuture<'a, Result<LazyRestore>> {
        Box::pin(self.restore_lazy_process(spec, pages))
    }

    fn recover_dump<'a>(
        &'a self,
        cp: &'a Checkpoint,
        images: &'a sys::Folder,
    ) -> BoxFuture<'a, Option<DumpOutput>> {
        Box::pin(async move {
            let log = images
                .read_tail(criu::DUMP_LOG, sys::MAX_LOG_READ)
                .map(|(t, _)| t)
                .unwrap_or_default();
            // What the interrupted dump left stopped, from the kernel: the target's tree, its
            // tasks still stopped and, for a member's checkpoint, running as the member. The
            // target is known by its pid alone here (the job recorded nothing else), so a tree
            // at that pid that is not stopped is not touched.
            let owner = (cp.owner_uid != 0).then_some(cp.owner_uid);
            let stopped: Vec<sys::TaskId> = match cp.target {
                Target::Process { pid } => sys::TaskId::of(pid)
                    .map(|root| sys::tree_in_state(root, 'T', owner))
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if log.contains(criu::DUMP_DONE) {
                return Some(DumpOutput {
                    stats: criu::dump_stats(&images.path()),
                    stopped: if cp.options.leave_running {
                        Stopped::Nothing
                    } else {
                        Stopped::Tasks(stopped)
                    },
                    container: None,
                    criu_config: self.criu.options_file(),
                    // Still the stopped tree's, which holds it open.
                    terminal: match cp.target {
                        Target::Process { pid } => {
                            terminal_of(pid).ok().flatten().map(|(key, _)| key)
                        }
                        _ => None,
                    },
                    members: Vec::new(),
                });
            }
            if !stopped.is_empty() {
                tracing::warn!(?stopped, checkpoint = %cp.id, "resuming tasks an interrupted dump left stopped");
                sys::signal_tasks(&stopped, rustix::process::Signal::CONT);
            }
            None
        })
    }

    fn recover_restore<'a>(
        &'a self,
        cp: &'a Checkpoint,
        _into: Option<&'a Target>,
        log_name: &'a str,
    ) -> BoxFuture<'a, Option<JobResult>> {
        Box::pin(async move {
            // CRIU writes the pidfile only once the restore has succeeded. Read through the
            // held folder, without following a symlink or blocking on a FIFO: a member's
            // directory is the member's to change, and this runs at start-up.
            let anchor = sys::AnchoredDir::open(Path::new(&cp.dir)).ok()?;
            let folder = anchor.open_folder(anchor.name(), cp.owner_uid).ok()?;
            let pid = read_pidfile(
                &folder,
                &format!("{}.pid", log_name.trim_end_matches(".log")),
            )?;
            sys::proc_stat(pid)
                .is_some_and(|s| !s.is_zombie())
                .then(|| JobResult {
                    pid: Some(pid),
                    ..Default::default()
                })
        })
    }

    fn freeze<'a>(&'a self, target: &'a Target, owner_uid: u32) -> BoxFuture<'a, Result<Stopped>> {
        Box::pin(async move {
            let Target::Process { pid } = *target else {
                return Err(Error::internal(
                    "a container target reached the process engine",
                ));
            };
            if checked_process(pid)?.is_some() {
                return Err(Error::target_unavailable(format!(
                    "pid {pid} has a controlling terminal; a group takes processes without one \
                     (its restore could not give each member's terminal back together)"
                ))
                .with_hint(format!("checkpoint it on its own: ckpt create {pid} NAME")));
            }
            stop_tree(pid, owner_uid).await
        })
    }

    fn continue_restored<'a>(
        &'a self,
        _target: &'a Target,
        restored: &'a JobResult,
        owner_uid: u32,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(root) = restored.pid.and_then(sys::TaskId::of) {
                continue_stopped_tree(root, owner_uid).await;
            }
        })
    }

    fn release<'a>(&'a self, stopped: &'a Stopped, kill: bool) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Stopped::Tasks(tasks) = stopped {
                use rustix::process::Signal as S;
                if !kill {
                    // Let run, its connections must work again (`seal::unseal`).
                    super::seal::unseal(tasks).await;
                }
                sys::signal_tasks(tasks, if kill { S::KILL } else { S::CONT });
            }
        })
    }
}

/// The pid CRIU wrote to `name` in the folder (bounded, not followed through a symlink). The
/// pidfile stays, as the restore's log does (both are named after the job): a restart that cuts
/// a group's restore short finds each member's restore by it, the ones read already included.
fn read_pidfile(folder: &sys::Folder, name: &str) -> Option<i32> {
    let text = folder.read(name, 64).ok()?;
    String::from_utf8_lossy(&text).trim().parse().ok()
}

/// Refuses pids that cannot or must not be dumped, saying why.
pub fn check_process(pid: i32) -> Result<()> {
    checked_process(pid).map(drop)
}

/// `check_process`, giving the tree's controlling terminal (its CRIU key and owner) if it has
/// one, which the dump needs.
fn checked_process(pid: i32) -> Result<Option<(String, u32)>> {
    if pid <= 0 {
        return Err(Error::invalid(format!(
            "pid must be a positive integer, got {pid}"
        )));
    }
    if pid == 1 {
        return Err(Error::forbidden(
            "pid 1 is the init process: dumping it would freeze the whole system; checkpoint a \
             process tree below it",
        ));
    }
    let Some(st) = sys::proc_stat(pid) else {
        return Err(
            Error::target_unavailable(format!("no process with pid {pid} exists"))
                .with_hint("check the pid (ps -p PID); the process may have exited"),
        );
    };
    if st.is_kernel_thread() {
        return Err(Error::target_unavailable(format!(
            "pid {pid} ({}) is a kernel thread; CRIU checkpoints user processes only",
            st.comm
        )));
    }
    // A thread id is not a process: found by schemathesis, a daemon thread's id once reached CRIU.
    if let Some(tgid) = sys::tgid(pid).filter(|&t| t != pid) {
        if tgid == std::process::id() as i32 {
            return Err(Error::forbidden(format!(
                "pid {pid} is a thread of ckptd itself; it cannot be checkpointed"
            )));
        }
        return Err(Error::target_unavailable(format!(
            "pid {pid} is a thread of process {tgid}, not a process; checkpoint the process: pid {tgid}"
        )));
    }
    if st.is_zombie() {
        return Err(Error::target_unavailable(format!(
            "pid {pid} ({}) has exited and is a zombie waiting to be reaped; there is nothing to checkpoint",
            st.comm
        )));
    }
    if sys::is_self_or_ancestor(pid) {
        return Err(Error::forbidden(format!(
            "pid {pid} ({}) is ckptd itself or one of its ancestors; dumping it would freeze the \
             daemon that runs the dump",
            st.comm
        )));
    }
    // Its own helpers (a CRIU or runc of another job, an output reader) run below the daemon.
    if sys::is_below_self(pid) {
        return Err(Error::forbidden(format!(
            "pid {pid} ({}) is a helper process of ckptd itself (a CRIU, runc or output reader of \
             another job); it cannot be checkpointed",
            st.comm
        )));
    }
    // A tree attached to a terminal is dumped as a shell job and restored onto a terminal
    // ckptd holds (`runtime::terminal`): one terminal, which the tree holds open (CRIU names it
    // by that descriptor). Several, or one it does not hold, could not be given back.
    terminal_of(pid)
}

/// The CRIU key of the one controlling terminal of `pid`'s tree, if it has one, and the
/// terminal's owner.
pub fn terminal_of(pid: i32) -> Result<Option<(String, u32)>> {
    let tree = sys::process_tree(pid);
    let ttys: Vec<sys::ProcStat> = tree
        .iter()
        .filter_map(|p| sys::proc_stat(*p))
        .filter(|s| s.tty_nr != 0)
        .collect();
    let Some(first) = ttys.first() else {
        return Ok(None);
    };
    let refuse = |why: &str| {
        Err(Error::target_unavailable(format!(
            "pid {} ({}) has a controlling terminal {why}, which a restore could not give back",
            first.pid, first.comm
        ))
        .with_hint(
            "start the program detached from the terminal, in a session of its own and with its \
             stdio redirected (setsid -f PROGRAM </dev/null >LOG 2>&1), then checkpoint that",
        ))
    };
    if ttys.iter().any(|s| s.tty_nr != first.tty_nr) {
        return refuse("and others of its tree another one");
    }
    match super::terminal::key_of(&tree, first.tty_nr) {
        Some(found) => Ok(Some(found)),
        None => refuse("that no process of its tree holds open"),
    }
}

/// A CRIU that died mid-restore (killed, or stopped by a cancel or a timeout) can leave the tree
/// it was building in its restorer: tasks that never ran as themselves, holding the
/// checkpoint's pids so that no restore can have them. A failed restore ends them: the tree the
/// kernel has at the pid the catalog recorded for the target (never pids read back from the
/// images, which a member can write), its tasks that started since the restore began (the pid
/// was free then) and run as the checkpoint's owner, each signalled through a pidfd checked
/// against its start.
fn end_half_restored(root: i32, since: u64, owner: u32) {
    let left = sys::newborn_tasks(root, since, owner);
    if !left.is_empty() {
        tracing::warn!(tasks = ?left.iter().map(|t| t.pid).collect::<Vec<_>>(), "ending what a failed restore left half-made");
        sys::signal_tasks(&left, rustix::process::Signal::KILL);
    }
}

/// The pidfile a restore logged as `log_name` writes in its folder.
pub fn pidfile_of(log_name: &str) -> String {
    format!("{}.pid", log_name.trim_end_matches(".log"))
}

/// Starts `criu lazy-pages`, which serves the restored tree's memory from the images on
/// demand (userfaultfd) and copies the rest in the background, then exits. Its own process
/// group, like every CRIU ckptd runs: it outlives a daemon restart, which the restored tree
/// depends on until all its memory is in.
pub(crate) async fn start_lazy_pages(
    handle: &Criu,
    criu: &Path,
    spec: &RestoreSpec<'_>,
    images: &ImagesFd,
    remote: Option<(std::os::fd::OwnedFd, &str)>,
) -> Result<LazyPages> {
    if handle.probe().features.get("uffd") == Some(&false) {
        return Err(Error::target_unavailable(
            "lazy restore needs userfaultfd, which `criu check --feature uffd` says this \
             kernel does not offer",
        )
        .with_advice(ckptd_api::Advice::WithoutLazy));
    }
    let log_name = format!("lazy-{}", spec.log_name);
    let mut args: Vec<String> = vec![
        "lazy-pages".into(),
        "-D".into(),
        images.path(),
        "-o".into(),
        log_name.clone(),
        format!("-v{}", handle.log_level()),
    ];
    let child = match remote {
        None => {
            let mut cmd = handle.command_in(criu, &args, images, spec.owner.as_ref());
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            cmd.spawn()
        }
        Some((pages, pidfile)) => {
            use std::os::fd::AsRawFd;
            args.extend([
                "--page-server".into(),
                "--ps-socket".into(),
                pages.as_raw_fd().to_string(),
            ]);
            let inner = handle.command_in(criu, &args, images, spec.owner.as_ref());
            let mut cmd = guarded(
                inner.as_std(),
                &images.path(),
                pidfile,
                spec.checkpoint.owner_uid,
            )?;
            images.inherit(&mut cmd);
            sys::inherit_fd(&mut cmd, pages.as_raw_fd());
            let child = cmd.spawn();
            drop(pages);
            child
        }
    }
    .map_err(|e| Error::unavailable(format!("cannot run `criu lazy-pages`: {e}")))?;
    let mut lazy = LazyPages {
        child,
        log: spec.images.path().join(&log_name),
        shown: spec.images.shown().join(&log_name),
    };
    // The restore connects to the page server's socket: start it only once that exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spec.images.has("lazy-pages.socket") {
        let exited = lazy.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let text = lazy.log_text();
            lazy.abort();
            return Err(Error::new(
                ErrorKind::CriuFailed,
                "criu lazy-pages did not start its page server",
            )
            .with("log_tail", log::tail(&text))
            .with_advice(ckptd_api::Advice::WithoutLazy));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(lazy)
}

/// Whether a lazy dump serves pages: one byte on its status pipe (CRIU's `--status-fd`, or
/// runc's) once everything but memory is written; false at end of file (it failed first) or
/// when the job is stopped.
pub(crate) async fn serving(
    status: std::os::fd::OwnedFd,
    stop: &crate::engine::StopSignal,
) -> Result<bool> {
    use tokio::io::AsyncReadExt;
    let mut status = tokio::net::unix::pipe::Receiver::from_owned_fd(status)
        .map_err(|e| Error::internal(format!("cannot watch CRIU's status pipe: {e}")))?;
    let mut byte = [0u8; 1];
    let mut stop = stop.clone();
    Ok(tokio::select! {
        r = status.read(&mut byte) => matches!(r, Ok(1)),
        _ = stop.changed() => false,
    })
}

/// The page pipes a lazy dump holds: CRIU sizes the pipe it reads them through to 819 pages
/// (3.2 MiB), which a CRIU without CAP_SYS_RESOURCE (this host's root, and every member's CRIU)
/// may only do when `fs.pipe-max-size` allows it; the whole memory sits in pipes meanwhile,
/// which `fs.pipe-user-pages-soft` must not cap. Measured: with the defaults (1 MiB, 16384
/// pages) the page server fails at its first request with "tee: Operation not permitted".
pub const LAZY_PIPE_MAX_SIZE: u64 = 4 * 1024 * 1024;

pub(crate) fn check_lazy_pipes() -> Result<()> {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/fs/{name}"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    let max = read("pipe-max-size").unwrap_or(0);
    let soft = read("pipe-user-pages-soft").unwrap_or(0);
    if max < LAZY_PIPE_MAX_SIZE || soft != 0 {
        return Err(Error::unavailable(format!(
            "live migration keeps the memory in pipes, which this host's limits do not allow \
             (fs.pipe-max-size = {max}, needs at least {LAZY_PIPE_MAX_SIZE}; \
             fs.pipe-user-pages-soft = {soft}, needs 0: no limit)"
        ))
        .with_hint(format!(
            "as root: sysctl -w fs.pipe-max-size={LAZY_PIPE_MAX_SIZE} fs.pipe-user-pages-soft=0 \
             (make setup writes /etc/sysctl.d/60-ckptd.conf), on both hosts"
        )));
    }
    Ok(())
}

/// `cmd` run under `ckptd lazy-guard`: if it fails, the guard kills the tree whose root pid CRIU
/// wrote to `pidfile` in `images` (only tasks of `uid` when that is not root), so a tree whose
/// memory stopped arriving never runs on with missing pages read as zeros. The guard is ckptd's
/// own binary in its own process group: it outlives ckptd.
fn guarded(
    cmd: &std::process::Command,
    images: &str,
    pidfile: &str,
    uid: u32,
) -> Result<tokio::process::Command> {
    let me = std::env::current_exe()
        .map_err(|e| Error::internal(format!("cannot find ckptd's own binary: {e}")))?;
    let mut g = tokio::process::Command::new(me);
    g.arg(GUARD_COMMAND)
        .arg(images)
        .arg(pidfile)
        .arg(uid.to_string())
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => g.env(k, v),
            None => g.env_remove(k),
        };
    }
    // Its stderr is ckptd's (the journal): it says there why it ended a tree.
    g.stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
    Ok(g)
}

/// The first argument that makes the ckptd binary a lazy-pages guard instead of the daemon.
pub const GUARD_COMMAND: &str = "lazy-guard";

/// `ckptd lazy-guard IMAGES PIDFILE UID -- PROGRAM ARGS...`: runs the program (a `criu
/// lazy-pages`) and exits with its status; if it did not succeed, first kills the tree it was
/// serving. Returns the exit code.
pub fn run_guard(args: &[String]) -> i32 {
    let (Some(images), Some(pidfile), Some(uid), Some(sep)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        eprintln!("usage: ckptd {GUARD_COMMAND} IMAGES PIDFILE UID -- PROGRAM ARGS...");
        return 2;
    };
    let (Ok(uid), true, Some(program)) = (uid.parse::<u32>(), sep == "--", args.get(4)) else {
        eprintln!("usage: ckptd {GUARD_COMMAND} IMAGES PIDFILE UID -- PROGRAM ARGS...");
        return 2;
    };
    let status = std::process::Command::new(program)
        .args(&args[5..])
        .status();
    if status.as_ref().is_ok_and(|s| s.success()) {
        return 0;
    }
    eprintln!("ckptd lazy-guard: {program} ended with {status:?}; ending the tree it served");
    // Bounded, not followed through a symlink: a member writes its own images.
    let pid = sys::open_regular(&Path::new(images).join(pidfile))
        .and_then(|f| sys::read_tail(f, 64))
        .ok()
        .and_then(|(t, _)| t.trim().parse::<i32>().ok());
    if let Some(root) = pid.filter(|p| *p > 1).and_then(sys::TaskId::of) {
        sys::end_tree(root, (uid != 0).then_some(uid));
    }
    3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::criu::CriuProbe;

    fn engine() -> ProcessEngine {
        let criu = Criu::new(CriuProbe::default(), 4, None);
        ProcessEngine::new(
            Arc::new(criu),
            Duration::from_secs(1),
            std::env::temp_dir().join("ckptd-test-terminals"),
        )
    }

    fn checkpoint(dir: &Path) -> Checkpoint {
        serde_json::from_value(serde_json::json!({
            "id": "00000000-0000-0000-0000-000000000001", "name": "c",
            "target": {"kind": "process", "pid": 1}, "status": "ready",
            "created_at": "2026-01-01T00:00:00Z", "completed_at": null,
            "dir": dir.display().to_string(), "size_bytes": 0, "options": {}, "labels": {},
            "criu_version": null, "criu_config": null, "container": null, "stats": null,
            "error": null, "owner_uid": 1000, "expires_at": null
        }))
        .unwrap()
    }

    /// After a crash, the restore's pidfile in a directory a member can change is read without
    /// following a symlink and without blocking on a FIFO planted in its place.
    #[tokio::test]
    async fn a_planted_pidfile_is_not_followed_nor_waited_on() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cp");
        std::fs::create_dir(&dir).unwrap();
        let cp = checkpoint(&dir);
        let e = engine();
        let me = std::process::id() as i32;

        std::fs::write(dir.join("restore-a.pid"), me.to_string()).unwrap();
        let got = e.recover_restore(&cp, None, "restore-a.log").await;
        assert_eq!(got.and_then(|r| r.pid), Some(me));

        let elsewhere = d.path().join("elsewhere.pid");
        std::fs::write(&elsewhere, me.to_string()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("restore-b.pid")).unwrap();
        assert_eq!(e.recover_restore(&cp, None, "restore-b.log").await, None);

        nix::unistd::mkfifo(
            &dir.join("restore-c.pid"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        // On a thread of its own: a blocking open of the FIFO must fail this test, not hang it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let _ = tx.send(rt.block_on(e.recover_restore(&cp, None, "restore-c.log")));
        });
        let read = rx.recv_timeout(Duration::from_secs(5));
        assert_eq!(read.expect("blocked on a FIFO"), None);
    }
}
