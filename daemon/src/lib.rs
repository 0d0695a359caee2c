//! ckptd: manages CRIU checkpoints of process trees over a Unix-socket REST API.
//!
//! Layers, one way (see docs/architecture.md): `http` (requests -> domain calls, errors ->
//! answers) over `service` (admission, queue and workers, durability, reconciliation, reads),
//! `portability` and `schedules`, over `catalog` (SQLite) and an `engine::Engine` chosen by
//! `runtime` (process trees, runc, Docker), which use the `criu` toolkit.

pub mod archive;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod criu;
pub mod engine;
pub mod error;
pub mod http;
pub mod portability;
pub mod remote;
pub mod runtime;
pub mod schedules;
pub mod service;
pub mod stop;
pub mod sys;
pub mod systemd;
pub mod telemetry;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::net::UnixListener;

use crate::config::Config;
use crate::criu::{Criu, CriuProbe};
use crate::http::{AppState, DaemonInfo};
use crate::portability::Portability;
use crate::runtime::{EnginePaths, Engines};
use crate::service::{Service, ServiceConfig};

/// Sets the log filter: a `tracing` filter such as `info` or `warn,ckptd=debug`.
pub type SetLog = Box<dyn Fn(&str) -> anyhow::Result<()> + Send + Sync>;

/// How a running daemon reads its configuration again (SIGHUP).
pub struct Reload {
    /// The command line and environment it started with (they outrank the file).
    pub args: config::Args,
    /// Sets the log filter (`Config::log`).
    pub set_log: SetLog,
}

/// Runs the daemon until SIGTERM, SIGINT or SIGQUIT; SIGHUP reloads what can change at run time.
/// `activated`: the listening socket systemd passed (socket activation); None to bind our own.
pub async fn run(
    cfg: Config,
    activated: Option<std::os::unix::net::UnixListener>,
    reload: Reload,
) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives at any point after start-up (say, a SIGTERM right
    // after READY=1, or a SIGHUP from a log rotation) is handled, never the default action
    // that ends the daemon without a word.
    let mut signals = Signals::new()?;
    // Checkpoint images hold process memory: nothing ckptd (or the CRIU it runs) creates is
    // readable by others. CRIU restores each process's own umask from its images.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));

    for dir in [
        &cfg.state_dir,
        &cfg.checkpoints_dir(),
        &cfg.container_logs_dir(),
    ] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
    }
    raise_fd_limit();
    // One daemon per state directory, decided before anything reads the catalog: a second
    // daemon's start-up reconciliation would otherwise end the first one's running jobs.
    let _lock = lock_state_dir(&cfg.state_dir)?;
    let remotes = remote::Remotes::new(&cfg.remotes, &cfg.registries)
        .context("invalid [remotes] or [registries] configuration")?;
    let catalog = catalog::Catalog::open(&cfg.catalog_path()).await?;
    let probe = CriuProbe::run(cfg.criu_path.as_deref()).await;
    if probe.check_ok {
        tracing::info!(criu = ?probe.path, version = ?probe.version, "criu check passed");
    } else {
        tracing::warn!(
            criu = ?probe.path, version = ?probe.version, output = ?probe.check_output,
            "CRIU is not usable: checkpoints will fail with 503 until it is fixed (make setup)"
        );
    }
    if probe.path.is_some() && !probe.kernel_probe_cached {
        tracing::warn!(
            "/run is not a tmpfs, so CRIU cannot keep what it probes of the kernel \
             (/run/criu.kdat): every CRIU run probes again first, 40-70 ms each (twice for a \
             lazy restore); on a host systemd booted /run is a tmpfs"
        );
    }
    let criu = Arc::new(Criu::new(
        probe.clone(),
        cfg.criu_log_level,
        cfg.criu_config.clone(),
    ));
    let runc = cfg.runc_path.clone().or_else(|| criu::find_in_path("runc"));
    let engine = Arc::new(Engines::new(
        criu,
        cfg.restore_pid_wait,
        EnginePaths {
            runc: runc.clone(),
            container_logs: cfg.container_logs_dir(),
            terminals: cfg.terminals_dir(),
            docker_socket: cfg.docker_socket.clone(),
            docker_runc_root: cfg.docker_runc_root.clone(),
            podman_socket: cfg.podman_socket.clone(),
            podman: cfg
                .podman_path
                .clone()
                .or_else(|| criu::find_in_path("podman")),
            containerd_socket: cfg.containerd_socket.clone(),
            containerd_namespace: cfg.containerd_namespace.clone(),
        },
    ));
    let service = Service::new(catalog.clone(), engine, service_config(&cfg, remotes));
    // A CRIU that outlived a crashed daemon is given up to 5 minutes to finish its dump.
    let criu_wait = cfg.job_timeout.min(std::time::Duration::from_secs(300));
    let report = service
        .reconcile(criu_wait)
        .await
        .context("startup reconciliation of the catalog failed")?;
    if report != service::Reconciled::default() {
        tracing::warn!(
            completed = report.completed,
            failed = report.failed,
            requeued = report.requeued,
            missing = report.missing,
            unknown_dirs = report.unknown_dirs.len(),
            "reconciled what the previous run left unfinished"
        );
    }
    runtime::docker::recover_runc_conf();
    service.start(cfg.workers);
    let schedules = schedules::Schedules::new(
        service.clone(),
        catalog.clone(),
        cfg.retention_interval,
        cfg.keep_failed,
        cfg.schedule_max_failures,
    );
    let clock = schedules.start(service.stopping());

    // A socket systemd passed is systemd's to remove; one we bound is ours.
    let owns_socket = activated.is_none();
    let listener = match activated {
        // systemd owns that socket (ckptd.socket sets its path, mode and group).
        Some(l) => UnixListener::from_std(l).context("cannot use the socket systemd passed")?,
        None => bind(&cfg.socket, cfg.socket_group.as_ref().map(|(_, gid)| *gid))?,
    };
    tracing::info!(socket = %cfg.socket.display(), state_dir = %cfg.state_dir.display(), workers = cfg.workers, "ckptd listening");
    let state = AppState {
        portability: Portability::new(service.clone()),
        service: service.clone(),
        lists: Default::default(),
        schedules,
        info: Arc::new(DaemonInfo {
            criu: probe,
            state_dir: cfg.state_dir.clone(),
            checkpoints_dir: cfg.checkpoints_dir(),
            workers: cfg.workers,
            queue_capacity: cfg.queue_capacity,
            unknown_dirs: report.unknown_dirs,
        }),
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tcp = match &cfg.tcp {
        Some(t) => {
            let l = tokio::net::TcpListener::bind(t.addr)
                .await
                .with_context(|| format!("cannot listen on TCP {}", t.addr))?;
            tracing::warn!(addr = %l.local_addr()?, "also serving on TCP with a bearer token: trusted networks only");
            Some((
                l,
                std::sync::Arc::new(crate::auth::Tokens::new(
                    t.token.clone(),
                    t.metrics_token.clone(),
                )),
            ))
        }
        None => None,
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(http::serve::unix(
        listener,
        http::router(state.clone()),
        cfg.limits,
        stop_rx.clone(),
    ));
    if let Some((l, tokens)) = tcp {
        servers.spawn(http::serve::tcp(
            l,
            http::tcp_router(state, tokens.clone()),
            cfg.limits,
            stop_rx.clone(),
            tokens,
        ));
    }

    systemd::notify("READY=1\nSTATUS=serving");
    let watchdog = systemd::watchdog_interval().map(|every| {
        tokio::spawn(async move {
            loop {
                systemd::notify("WATCHDOG=1");
                tokio::time::sleep(every).await;
            }
        })
    });
    let mut cfg = cfg;
    while signals.recv().await == Received::Reload {
        systemd::notify("RELOADING=1");
        match reloaded(&cfg, &reload) {
            Ok((new, remotes)) => {
                service.reload(&service_config(&new, remotes));
                cfg = new;
            }
            Err(e) => tracing::error!(
                "SIGHUP: the configuration was not reloaded, the running one stays: {e:#}"
            ),
        }
        systemd::notify("READY=1\nSTATUS=serving");
    }
    systemd::notify("STOPPING=1");
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!(
        "stopping: no new jobs; running jobs get {} s to finish",
        cfg.shutdown_timeout.as_secs()
    );
    // Stop the jobs first so that requests waiting on them get their answer, then the server.
    service.shutdown(cfg.shutdown_timeout).await;
    clock.abort();
    stop_tx.send_replace(true);
    if tokio::time::timeout(std::time::Duration::from_secs(5), servers.join_all())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after 5 s; closing them");
    }
    if owns_socket {
        let _ = std::fs::remove_file(&cfg.socket);
    }
    catalog.close().await;
    tracing::info!("ckptd stopped");
    Ok(())
}

/// What the service takes from the configuration.
fn service_config(cfg: &Config, remotes: remote::Remotes) -> ServiceConfig {
    ServiceConfig {
        checkpoints_root: cfg.checkpoints_dir(),
        queue_capacity: cfg.queue_capacity,
        job_timeout: cfg.job_timeout,
        policy: auth::Policy {
            allowed_dirs: cfg.allowed_dirs.clone(),
            limits: cfg.member_limits,
        },
        import_max_bytes: cfg.import_max_bytes,
        remotes,
        schedule_max_failures: cfg.schedule_max_failures,
    }
}

/// Reads the configuration again and applies what can change at run time (the log filter here;
/// the caller gives the service the rest). Returns the running configuration with the changes
/// applied; an invalid file changes nothing. Logs what changed and what waits for a restart.
fn reloaded(running: &Config, reload: &Reload) -> anyhow::Result<(Config, remote::Remotes)> {
    let file = reload
        .args
        .config
        .as_ref()
        .map_or("no configuration file".to_owned(), |p| {
            p.display().to_string()
        });
    let new = Config::load(reload.args.clone())?;
    let remotes = remote::Remotes::new(&new.remotes, &new.registries)
        .context("invalid [remotes] or [registries] configuration")?;
    let changes = running.changes(&new);
    if changes.applied.contains(&"log") {
        (reload.set_log)(&new.log)?;
    }
    let applied = running.with_reloaded(&new);
    let list = |l: &[&str]| {
        if l.is_empty() {
            "nothing".to_owned()
        } else {
            l.join(", ")
        }
    };
    if changes.need_restart.is_empty() {
        tracing::info!(
            file,
            changed = list(&changes.applied),
            "SIGHUP: configuration reloaded"
        );
    } else {
        tracing::warn!(
            file,
            changed = list(&changes.applied),
            needs_restart = list(&changes.need_restart),
            "SIGHUP: configuration reloaded; some changes wait for a restart (systemctl restart ckptd)"
        );
    }
    Ok((applied, remotes))
}

/// Raises the soft limit of open files to the hard one: connections are bounded by
/// `max_connections`, and the rest (catalog, images, CRIU's pipes) must never be starved.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open files limit");
            }
        }
    }
}

/// The name of the lock file in the state directory.
pub const LOCK_FILE: &str = "ckptd.lock";

/// Takes the state directory's exclusive lock (flock on `ckptd.lock`, held until the daemon
/// exits; the kernel drops it if the daemon dies), or says which daemon holds it.
fn lock_state_dir(state_dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("cannot open the state directory's lock {}", path.display()))?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another ckptd (pid {}) is already running on state directory {}; stop it first, \
                 or give this one another --state-dir",
                holder.trim(),
                state_dir.display()
            );
        }
        Err((_, e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    };
    lock.set_len(0)?;
    write!(lock, "{}", std::process::id())?;
    Ok(lock)
}

/// Binds the API socket, never more open than asked at any moment: born owner-only (the umask is
/// 077), made 0600, then, with a `group`, given to that group and only then made 0660. A stale
/// socket left by a crashed daemon is replaced; a live one, or anything that is not a socket,
/// stops the start.
fn bind(path: &Path, group: Option<u32>) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; remove it or choose another --socket",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another daemon is already serving on {}; stop it first or choose another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    if let Some(parent) = path.parent() {
        if !parent.is_dir() {
            bail!("the socket's directory {} does not exist", parent.display());
        }
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind the API socket {}", path.display()))?;
    let mode = |m| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m))
            .with_context(|| format!("cannot set the mode of {}", path.display()))
    };
    mode(0o600)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
        mode(0o660)?;
    }
    Ok(listener)
}

/// What a signal asks of the daemon.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    Stop,
    Reload,
}

/// The signals a daemon is usually sent, each registered as soon as the daemon starts and
/// handled on purpose: SIGTERM, SIGINT and SIGQUIT stop it gracefully; SIGHUP reloads its
/// configuration; SIGUSR1 and SIGUSR2 (whose default action is to end a process) are logged and
/// ignored. SIGPIPE is ignored by Rust's runtime (a write to a closed socket is an error).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let on =
            |k: SignalKind, name: &str| signal(k).with_context(|| format!("cannot handle {name}"));
        Ok(Self {
            term: on(SignalKind::terminate(), "SIGTERM")?,
            int: on(SignalKind::interrupt(), "SIGINT")?,
            quit: on(SignalKind::quit(), "SIGQUIT")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
            usr1: on(SignalKind::user_defined1(), "SIGUSR1")?,
            usr2: on(SignalKind::user_defined2(), "SIGUSR2")?,
        })
    }

    async fn recv(&mut self) -> Received {
        loop {
            let ignored = tokio::select! {
                _ = self.term.recv() => { tracing::info!("SIGTERM received"); return Received::Stop }
                _ = self.int.recv() => { tracing::info!("SIGINT received"); return Received::Stop }
                _ = self.quit.recv() => { tracing::info!("SIGQUIT received"); return Received::Stop }
                _ = self.hup.recv() => { tracing::info!("SIGHUP received: reloading the configuration"); return Received::Reload }
                _ = self.usr1.recv() => "SIGUSR1",
                _ = self.usr2.recv() => "SIGUSR2",
            };
            tracing::info!(
                "{ignored} received and ignored: SIGHUP reloads the configuration, SIGTERM stops \
                 the daemon"
            );
        }
    }
}
