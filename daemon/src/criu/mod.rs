//! CRIU for process trees, driven through its command line.
//!
//! Why the command line and not the RPC (swrk) interface: every job is one `criu` process whose
//! exact argv is recorded with its error, so an operator can re-run it by hand; CRIU's log file
//! says more than RPC's `cr_errno` (the infamous "type NOTIFY errno 0"); there are no generated
//! protobuf bindings to keep in step with CRIU's rpc.proto; a CRIU crash takes down one job, not a
//! shared service. The cost, one fork+exec per job, is noise next to a dump.

pub mod images;
pub mod log;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ckptd_api::{Checkpoint, CheckpointOptions, DumpStats, JobResult, Target};
use nix::sys::signal::Signal;
use tokio::process::Command;

use crate::engine::{BoxFuture, DumpOutput, DumpSpec, Engine, RestoreSpec, StopSignal, Stopped};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// How many CRIU error lines a failure quotes.
const LOG_TAIL_LINES: usize = 12;

/// What `criu check` and `criu --version` said when the daemon started.
#[derive(Debug, Clone)]
pub struct CriuProbe {
    pub path: Option<PathBuf>,
    pub version: Option<String>,
    pub check_ok: bool,
    pub check_output: Option<String>,
    pub features: std::collections::BTreeMap<String, bool>,
}

/// The CRIU features `/v1/info` reports.
pub const FEATURES: [&str; 6] = [
    "uffd",
    "uffd-noncoop",
    "mem_dirty_track",
    "pidfd_store",
    "network_lock_nftables",
    "tcp_half_closed",
];

impl CriuProbe {
    pub async fn run(configured: Option<&Path>) -> CriuProbe {
        let path = configured
            .map(Path::to_owned)
            .or_else(|| find_in_path("criu"));
        let Some(path) = path else {
            return CriuProbe {
                path: None,
                version: None,
                check_ok: false,
                check_output: Some("criu not found in PATH; run `make setup`".into()),
                features: Default::default(),
            };
        };
        let version = Command::new(&path)
            .arg("--version")
            .output()
            .await
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("Version:").map(|v| v.trim().to_owned()))
            });
        let check = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(&path).arg("check").output(),
        )
        .await;
        let (check_ok, check_output) = match check {
            Ok(Ok(o)) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                (o.status.success(), (!o.status.success()).then_some(text))
            }
            Ok(Err(e)) => (false, Some(format!("cannot run {}: {e}", path.display()))),
            Err(_) => (
                false,
                Some("`criu check` did not finish within 60 s".into()),
            ),
        };
        // `criu check` above also warmed CRIU's kdat cache, so these are quick.
        let probes = FEATURES.iter().map(|f| {
            let path = path.clone();
            async move {
                let out = Command::new(&path)
                    .args(["check", "--feature", f])
                    .output()
                    .await;
                let ok = out.is_ok_and(|o| {
                    o.status.success()
                        && String::from_utf8_lossy(&o.stdout).contains("is supported")
                });
                ((*f).to_owned(), ok)
            }
        });
        let features = futures_util::future::join_all(probes)
            .await
            .into_iter()
            .collect();
        CriuProbe {
            path: Some(path),
            version,
            check_ok,
            check_output,
            features,
        }
    }
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a program that drives CRIU (`criu` itself, or a runtime such as runc) and, when it fails,
/// builds the user's error from CRIU's log: the cause, `log_tail`, `hint`, the log's path and the
/// exact command. `runtime_log` is read for the cause when CRIU's log has none (runc's own
/// errors, e.g. "container does not exist").
pub async fn run_logged(
    mut cmd: Command,
    log_path: &Path,
    runtime_log: Option<&Path>,
    what: String,
    stop: &StopSignal,
) -> Result<()> {
    let command = {
        let std = cmd.as_std();
        std::iter::once(std.get_program().to_string_lossy().into_owned())
            .chain(std.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let started = Instant::now();
    let cannot_run = |e: std::io::Error| {
        Error::unavailable(format!("cannot run `{command}`: {e}"))
            .with_hint("check that criu and runc are installed and executable (make setup)")
    };
    // Its own process group: a Ctrl-C meant for the daemon never hits CRIU mid-dump, and a stop
    // reaches CRIU and everything it started (runc's criu swrk). spawn + wait_with_output, not
    // output(): output() replaces stdout/stderr with capture pipes, which a restored tree would
    // inherit, and the wait would last as long as the restored tree.
    let child = cmd.process_group(0).spawn().map_err(cannot_run)?;
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
    if let Some(r) = stopped_by {
        if !out.status.success() {
            return Err(r
                .error()
                .with("log", log_path.display().to_string())
                .with("command", command));
        }
    }
    tracing::debug!(%command, elapsed_ms = started.elapsed().as_millis() as u64, status = %out.status, "finished");
    if out.status.success() {
        return Ok(());
    }
    let log_text = std::fs::read_to_string(log_path).unwrap_or_default();
    let mut tail = log::error_lines(&log_text, LOG_TAIL_LINES);
    if tail.is_empty() {
        let runtime_text = runtime_log
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        tail = runtime_text
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
    }
    let cause = tail
        .iter()
        .find(|l| !l.contains("FAILED") && !l.contains("criu failed: type"))
        .map(|l| log::message_of(l))
        .unwrap_or_else(|| format!("exited with {}", out.status));
    // A full disk is the disk's fault, not CRIU's: 507, and say so.
    let kind = if log_text.contains("No space left on device") {
        ErrorKind::InsufficientStorage
    } else {
        ErrorKind::CriuFailed
    };
    let mut err = Error::new(kind, format!("{what}: {cause}"))
        .with("log_tail", tail)
        .with("log", log_path.display().to_string())
        .with("command", command)
        .with("exit_status", out.status.to_string());
    err = match log::hint(&log_text) {
        Some(h) => err.with_hint(h),
        None => err.with_hint(format!(
            "read the full CRIU log ({}) or GET /v1/checkpoints/{{ref}}/log",
            log_path.display()
        )),
    };
    Err(err)
}

pub struct CriuEngine {
    probe: CriuProbe,
    log_level: u8,
    /// The daemon-wide CRIU options file (`criu_config`), passed with `--config`.
    config_file: Option<PathBuf>,
    /// At restore, how long to wait for a zombie holding a needed pid to be reaped.
    pid_wait: Duration,
}

/// A running `criu lazy-pages` serving one restore.
struct LazyPages {
    child: tokio::process::Child,
    log: PathBuf,
}

impl LazyPages {
    /// Waits until all the restored tree's memory is in (lazy-pages exits then), so that the
    /// checkpoint stays reserved, and its images on disk, for as long as they are read. The
    /// restore failed only if the tree did not survive it.
    async fn finish(mut self, pid: i32, name: &str) -> Result<()> {
        let status = self.child.wait().await;
        let ok = status.as_ref().is_ok_and(|s| s.success());
        if !ok {
            tracing::warn!(checkpoint = name, ?status, log = %self.log.display(), "criu lazy-pages ended with an error");
        }
        if pid > 0 && sys::proc_stat(pid).is_none_or(|s| s.state == 'Z') {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            return Err(Error::new(
                ErrorKind::CriuFailed,
                format!(
                    "the restored tree of checkpoint {name} (pid {pid}) died while its memory was \
                     being restored lazily"
                ),
            )
            .with("log_tail", log::error_lines(&text, LOG_TAIL_LINES))
            .with("log", self.log.display().to_string())
            .with_hint("restore without \"lazy\""));
        }
        Ok(())
    }

    fn abort(mut self) {
        if let Some(pg) = self.child.id() {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pg as i32), Signal::SIGKILL);
        }
        let _ = self.child.start_kill();
    }
}

/// CRIU's own default options file, read on every command-line run.
const CRIU_DEFAULT_CONF: &str = "/etc/criu/default.conf";

impl CriuEngine {
    pub fn new(
        probe: CriuProbe,
        log_level: u8,
        config_file: Option<PathBuf>,
        pid_wait: Duration,
    ) -> Self {
        Self {
            probe,
            log_level,
            config_file,
            pid_wait,
        }
    }

    pub fn probe(&self) -> &CriuProbe {
        &self.probe
    }

    pub fn log_level(&self) -> u8 {
        self.log_level
    }

    /// The CRIU binary, or why no checkpoint can be taken.
    pub fn usable(&self) -> Result<&Path> {
        match (&self.probe.path, self.probe.check_ok) {
            (Some(p), true) => Ok(p),
            (Some(p), false) => Err(Error::unavailable(format!(
                "CRIU at {} failed `criu check` when ckptd started, so no checkpoint can be taken",
                p.display()
            ))
            .with(
                "criu_check",
                self.probe.check_output.clone().unwrap_or_default(),
            )
            .with_hint("run `make setup` (it builds CRIU >= 4.2), then restart ckptd")),
            (None, _) => Err(Error::unavailable("CRIU is not installed")
                .with_hint("run `make setup`, or set criu_path in the config file")),
        }
    }

    /// The options file a command-line CRIU run reads (besides its arguments).
    fn options_file(&self) -> Option<String> {
        self.config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| {
                Path::new(CRIU_DEFAULT_CONF)
                    .exists()
                    .then(|| CRIU_DEFAULT_CONF.to_owned())
            })
    }

    /// CRIU's flags for the checkpoint options (shared by `criu` and `runc` runs).
    pub fn option_flags(o: &CheckpointOptions, args: &mut Vec<String>) {
        for (on, flag) in [
            (o.tcp_established, "--tcp-established"),
            (o.ext_unix_sk, "--ext-unix-sk"),
            (o.file_locks, "--file-locks"),
            (o.shell_job, "--shell-job"),
        ] {
            if on {
                args.push(flag.into());
            }
        }
    }

    fn command(&self, criu: &Path, args: &[String]) -> Command {
        let mut cmd = Command::new(criu);
        if let Some(c) = &self.config_file {
            cmd.arg("--config").arg(c);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    async fn dump_process(&self, pid: i32, spec: DumpSpec<'_>) -> Result<DumpOutput> {
        check_process(pid)?;
        let criu = self.usable()?;
        let mut args: Vec<String> = vec![
            "dump".into(),
            "-t".into(),
            pid.to_string(),
            "-D".into(),
            spec.images_dir.display().to_string(),
            "-o".into(),
            spec.log_name.into(),
            format!("-v{}", self.log_level),
        ];
        // Without leave_running the tree is left stopped, not killed: ckptd kills it only once
        // the images are durable, and resumes it if they cannot be made so.
        args.push(if spec.options.leave_running {
            "--leave-running".into()
        } else {
            "--leave-stopped".into()
        });
        Self::option_flags(&spec.options, &mut args);
        let log_path = spec.images_dir.join(spec.log_name);
        if let Err(e) = run_logged(
            self.command(criu, &args),
            &log_path,
            None,
            format!("CRIU could not dump pid {pid}"),
            &spec.stop,
        )
        .await
        {
            // CRIU resumes the tree when a dump fails; make sure nothing stays stopped even if
            // CRIU itself died half-way.
            resume_if_stopped(pid);
            return Err(e);
        }
        let stopped = if spec.options.leave_running {
            Stopped::Nothing
        } else {
            Stopped::Tasks(
                images::read_tree_pids(spec.images_dir).unwrap_or_else(|_| sys::process_tree(pid)),
            )
        };
        Ok(DumpOutput {
            stats: dump_stats(spec.images_dir),
            stopped,
            container: None,
            criu_config: self.options_file(),
        })
    }

    async fn restore_process(&self, spec: RestoreSpec<'_>) -> Result<JobResult> {
        let criu = self.usable()?;
        let name = &spec.checkpoint.name;
        let pids = images::read_tree_pids(spec.images_dir).map_err(|e| {
            Error::internal(format!("checkpoint {name} is damaged: {e}"))
                .with_hint("take a new checkpoint; this one cannot be restored")
        })?;
        self.wait_for_free_pids(&pids).await?;
        let lazy = if spec.lazy {
            Some(self.start_lazy_pages(criu, &spec).await?)
        } else {
            None
        };
        let pidfile = spec
            .images_dir
            .join(format!("{}.pid", spec.log_name.trim_end_matches(".log")));
        let mut args: Vec<String> = vec![
            "restore".into(),
            "-D".into(),
            spec.images_dir.display().to_string(),
            "-o".into(),
            spec.log_name.into(),
            format!("-v{}", self.log_level),
            // Detached: the restored tree is not a child of ckptd and outlives it.
            "--restore-detached".into(),
            "--pidfile".into(),
            pidfile.display().to_string(),
        ];
        Self::option_flags(&spec.options, &mut args);
        if lazy.is_some() {
            args.push("--lazy-pages".into());
        }
        let log_path = spec.images_dir.join(spec.log_name);
        // A restored shell job inherits CRIU's stdio: never a pipe ckptd would wait on.
        let mut cmd = self.command(criu, &args);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let restored = run_logged(
            cmd,
            &log_path,
            None,
            format!("CRIU could not restore checkpoint {name}"),
            &spec.stop,
        )
        .await;
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .or(pids.first().copied());
        let _ = std::fs::remove_file(&pidfile);
        if let Some(lazy) = lazy {
            match &restored {
                Ok(()) => lazy.finish(pid.unwrap_or(0), name).await?,
                Err(_) => lazy.abort(),
            }
        }
        restored?;
        Ok(JobResult {
            pid,
            ..Default::default()
        })
    }

    /// Starts `criu lazy-pages`, which serves the restored tree's memory from the images on
    /// demand (userfaultfd) and copies the rest in the background, then exits. Its own process
    /// group, like every CRIU ckptd runs: it outlives a daemon restart, which the restored tree
    /// depends on until all its memory is in.
    async fn start_lazy_pages(&self, criu: &Path, spec: &RestoreSpec<'_>) -> Result<LazyPages> {
        if self.probe.features.get("uffd") == Some(&false) {
            return Err(Error::target_unavailable(
                "lazy restore needs userfaultfd, which `criu check --feature uffd` says this \
                 kernel does not offer",
            )
            .with_hint("restore without \"lazy\""));
        }
        let log_name = format!("lazy-{}", spec.log_name);
        let args: Vec<String> = vec![
            "lazy-pages".into(),
            "-D".into(),
            spec.images_dir.display().to_string(),
            "-o".into(),
            log_name.clone(),
            format!("-v{}", self.log_level),
        ];
        let mut cmd = self.command(criu, &args);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| Error::unavailable(format!("cannot run `criu lazy-pages`: {e}")))?;
        let mut lazy = LazyPages {
            child,
            log: spec.images_dir.join(log_name),
        };
        // The restore connects to the page server's socket: start it only once that exists.
        let socket = spec.images_dir.join("lazy-pages.socket");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            let exited = lazy.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let text = std::fs::read_to_string(&lazy.log).unwrap_or_default();
                lazy.abort();
                return Err(Error::new(
                    ErrorKind::CriuFailed,
                    "criu lazy-pages did not start its page server",
                )
                .with("log_tail", log::error_lines(&text, LOG_TAIL_LINES))
                .with_hint("restore without \"lazy\""));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(lazy)
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
                        "is in use by another process ('{}', state {})",
                        first.comm, first.state
                    )
                };
                return Err(Error::conflict(format!(
                    "cannot restore in place: pid {} {why}",
                    first.pid
                ))
                .with("pid", first.pid)
                .with_hint(format!(
                    "pid {} is in use by another process; stop it first, or restore into a \
                     container, which has its own pid namespace",
                    first.pid
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// CRIU's statistics from `stats-dump` in `dir`, if it could be read.
pub fn dump_stats(dir: &Path) -> Option<DumpStats> {
    match images::read_dump_stats(dir) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no dump statistics");
            None
        }
    }
}

/// Resumes the tree below `pid` if anything in it was left stopped.
fn resume_if_stopped(pid: i32) {
    let tree = sys::process_tree(pid);
    let stopped: Vec<i32> = tree
        .into_iter()
        .filter(|&p| sys::proc_stat(p).is_some_and(|s| s.state == 'T'))
        .collect();
    if !stopped.is_empty() {
        tracing::warn!(?stopped, "resuming tasks a failed dump left stopped");
        sys::signal_all(&stopped, Signal::SIGCONT);
    }
}

impl Engine for CriuEngine {
    fn version(&self) -> Option<String> {
        self.probe.version.clone()
    }

    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match target {
                Target::Process { pid } => check_process(*pid),
                Target::Container { .. } => Err(Error::internal(
                    "a container target reached the process engine",
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
                Target::Container { .. } => Err(Error::internal(
                    "a container target reached the process engine",
                )),
            }
        })
    }

    fn dump<'a>(&'a self, spec: DumpSpec<'a>) -> BoxFuture<'a, Result<DumpOutput>> {
        Box::pin(async move {
            match *spec.target {
                Target::Process { pid } => self.dump_process(pid, spec).await,
                Target::Container { .. } => Err(Error::internal(
                    "a container target reached the process engine",
                )),
            }
        })
    }

    fn restore<'a>(&'a self, spec: RestoreSpec<'a>) -> BoxFuture<'a, Result<JobResult>> {
        Box::pin(self.restore_process(spec))
    }

    fn recover_dump<'a>(
        &'a self,
        cp: &'a Checkpoint,
        images: &'a Path,
    ) -> BoxFuture<'a, Option<DumpOutput>> {
        Box::pin(async move {
            let log =
                std::fs::read_to_string(images.join(crate::jobs::DUMP_LOG)).unwrap_or_default();
            let pids = images::read_tree_pids(images).unwrap_or_default();
            // Only tasks still stopped: a pid reused by another process since is not touched.
            let stopped: Vec<i32> = pids
                .iter()
                .copied()
                .filter(|&p| sys::proc_stat(p).is_some_and(|s| s.state == 'T'))
                .collect();
            if log.contains(crate::engine::DUMP_DONE) {
                return Some(DumpOutput {
                    stats: dump_stats(images),
                    stopped: if cp.options.leave_running {
                        Stopped::Nothing
                    } else {
                        Stopped::Tasks(stopped)
                    },
                    container: None,
                    criu_config: self.options_file(),
                });
            }
            if !stopped.is_empty() {
                tracing::warn!(?stopped, checkpoint = %cp.id, "resuming tasks an interrupted dump left stopped");
                sys::signal_all(&stopped, Signal::SIGCONT);
            }
            if let Target::Process { pid } = cp.target {
                resume_if_stopped(pid);
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
            // CRIU writes the pidfile only once the restore has succeeded.
            let pidfile =
                Path::new(&cp.dir).join(format!("{}.pid", log_name.trim_end_matches(".log")));
            let pid: i32 = std::fs::read_to_string(&pidfile)
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let _ = std::fs::remove_file(&pidfile);
            sys::proc_stat(pid)
                .is_some_and(|s| !s.is_zombie())
                .then(|| JobResult {
                    pid: Some(pid),
                    ..Default::default()
                })
        })
    }

    fn release<'a>(&'a self, stopped: &'a Stopped, kill: bool) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Stopped::Tasks(pids) = stopped {
                sys::signal_all(
                    pids,
                    if kill {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGCONT
                    },
                );
            }
        })
    }
}

/// Refuses pids that cannot or must not be dumped, saying why.
pub fn check_process(pid: i32) -> Result<()> {
    if pid <= 0 {
        return Err(Error::invalid(format!(
            "pid must be a positive integer, got {pid}"
        )));
    }
    if pid == 1 {
        return Err(crate::auth::forbidden(
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
            return Err(crate::auth::forbidden(format!(
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
    if sys::self_and_ancestors().contains(&pid) {
        return Err(crate::auth::forbidden(format!(
            "pid {pid} ({}) is ckptd itself or one of its ancestors; dumping it would freeze the \
             daemon that runs the dump",
            st.comm
        )));
    }
    // Its own helpers (a CRIU or runc of another job, an output reader) run below the daemon.
    let me = std::process::id() as i32;
    if sys::process_tree(me).contains(&pid) {
        return Err(crate::auth::forbidden(format!(
            "pid {pid} ({}) is a helper process of ckptd itself (a CRIU, runc or output reader of \
             another job); it cannot be checkpointed",
            st.comm
        )));
    }
    Ok(())
}
