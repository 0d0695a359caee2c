//! Daemon configuration: command-line flags, each also an environment variable, over an optional
//! TOML file, over defaults. Precedence: flag > environment > file > default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ckptd",
    version,
    about = "Manages CRIU checkpoints of process trees over a Unix-socket REST API"
)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, env = "CKPTD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Unix socket to serve the API on [default: /run/ckptd.sock].
    #[arg(long, env = "CKPTD_SOCKET")]
    pub socket: Option<PathBuf>,
    /// State directory: catalog.db and checkpoints/ [default: /var/lib/ckptd].
    #[arg(long, env = "CKPTD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Number of jobs run at once [default: number of CPUs].
    #[arg(long, env = "CKPTD_WORKERS")]
    pub workers: Option<usize>,
    /// Group whose members may connect (socket 0660) [default: `ckptd` if it exists, else none:
    /// socket 0600, root only].
    #[arg(long, env = "CKPTD_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// Also serve the API on this TCP address (trusted networks only; needs tcp_token_file).
    #[arg(long, env = "CKPTD_TCP_LISTEN")]
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token TCP clients must send (not readable by group or others).
    #[arg(long, env = "CKPTD_TCP_TOKEN_FILE")]
    pub tcp_token_file: Option<PathBuf>,
    /// File holding a second bearer token for the TCP listener that reads GET /metrics and
    /// nothing else (for Prometheus); same rules as tcp_token_file.
    #[arg(long, env = "CKPTD_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Docker's API socket [default: /var/run/docker.sock].
    #[arg(long, env = "CKPTD_DOCKER_SOCKET")]
    pub docker_socket: Option<PathBuf>,
    /// runc's state of Docker's containers [default: /run/docker/runtime-runc/moby].
    #[arg(long, env = "CKPTD_DOCKER_RUNC_ROOT")]
    pub docker_runc_root: Option<PathBuf>,
    /// Podman's API socket [default: /run/podman/podman.sock].
    #[arg(long, env = "CKPTD_PODMAN_SOCKET")]
    pub podman_socket: Option<PathBuf>,
    /// containerd's gRPC socket [default: /run/containerd/containerd.sock].
    #[arg(long, env = "CKPTD_CONTAINERD_SOCKET")]
    pub containerd_socket: Option<PathBuf>,
    /// The containerd namespace of a target that names none [default: k8s.io].
    #[arg(long, env = "CKPTD_CONTAINERD_NAMESPACE")]
    pub containerd_namespace: Option<String>,
    /// Log format on stderr: text (journald-friendly) or json (one object a line).
    #[arg(long, env = "CKPTD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The TOML file. Every key is optional; unknown keys are an error so typos do not go unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub workers: Option<usize>,
    pub socket_group: Option<String>,
    pub tcp_listen: Option<std::net::SocketAddr>,
    pub tcp_token_file: Option<PathBuf>,
    pub metrics_token_file: Option<PathBuf>,
    /// Directories under which non-root callers may put a checkpoint_dir.
    pub allowed_dirs: Option<Vec<PathBuf>>,
    pub queue_capacity: Option<usize>,
    /// Queue slots members may never take (root's).
    pub root_reserved_queue_slots: Option<usize>,
    /// Jobs one non-root owner may have queued or running at once.
    pub member_max_jobs: Option<usize>,
    /// Checkpoints (any status) one non-root owner may have in the catalog.
    pub member_max_checkpoints: Option<u64>,
    /// Bytes of images one non-root owner's checkpoints may take (unset: no limit).
    pub member_max_bytes: Option<u64>,
    /// Schedules one non-root owner may have.
    pub member_max_schedules: Option<usize>,
    pub criu_path: Option<PathBuf>,
    pub criu_config: Option<PathBuf>,
    pub runc_path: Option<PathBuf>,
    pub podman_path: Option<PathBuf>,
    pub criu_log_level: Option<u8>,
    pub shutdown_timeout_secs: Option<u64>,
    pub job_timeout_secs: Option<u64>,
    pub restore_pid_wait_secs: Option<u64>,
    pub retention_interval_secs: Option<u64>,
    /// How long a failed checkpoint (its row and CRIU's log) is kept before the timer removes it.
    pub keep_failed_secs: Option<u64>,
    /// Failed runs in a row after which a schedule is disabled (0: never).
    pub schedule_max_failures: Option<u32>,
    pub import_max_bytes: Option<u64>,
    pub docker_socket: Option<PathBuf>,
    pub docker_runc_root: Option<PathBuf>,
    /// Podman's API socket (`podman system service`, or systemd's podman.socket).
    pub podman_socket: Option<PathBuf>,
    /// containerd's gRPC socket.
    pub containerd_socket: Option<PathBuf>,
    /// The containerd namespace of a target that names none (`k8s.io`: Kubernetes').
    pub containerd_namespace: Option<String>,
    /// Connections open at once, in all (root keeps `root_reserved_connections` of them).
    pub max_connections: Option<usize>,
    /// Connections open at once per uid (socket) or per address (TCP); root is not limited.
    pub max_connections_per_peer: Option<usize>,
    pub root_reserved_connections: Option<usize>,
    /// How long a connection may take to send a request's header (and so stay idle).
    pub header_timeout_secs: Option<u64>,
    /// TCP connections that have not yet sent a valid token, at once (the oldest is closed for
    /// a new one).
    pub max_unauthenticated_connections: Option<usize>,
    /// What is logged: a tracing filter (`info`, `warn,ckptd=debug`); CKPTD_LOG overrides it.
    pub log: Option<String>,
    /// S3-compatible buckets that hold checkpoints: `[remotes.NAME]`.
    #[serde(default)]
    pub remotes: std::collections::BTreeMap<String, RemoteSpec>,
    /// OCI registries that hold checkpoints as checkpoint images: `[registries.NAME]`.
    #[serde(default)]
    pub registries: std::collections::BTreeMap<String, RegistrySpec>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// Group allowed to connect (gid), or None for root only.
    pub socket_group: Option<(String, u32)>,
    /// Where non-root callers may put a checkpoint_dir (canonical paths).
    pub allowed_dirs: Vec<PathBuf>,
    /// The optional TCP listener and the token its clients must present.
    pub tcp: Option<TcpConfig>,
    pub state_dir: PathBuf,
    pub workers: usize,
    /// Service that may wait for a worker; one more gets 429 queue_full.
    pub queue_capacity: usize,
    /// What one non-root owner may use, and root's reserved share of the queue.
    pub member_limits: MemberLimits,
    /// CRIU binary; searched in PATH when unset.
    pub criu_path: Option<PathBuf>,
    /// CRIU options file for process checkpoints (`criu --config`).
    pub criu_config: Option<PathBuf>,
    /// runc binary; searched in PATH when unset.
    pub runc_path: Option<PathBuf>,
    /// Podman's CLI, which exports a Podman checkpoint onto a pipe (the API's export goes
    /// through a temporary file); searched in PATH when unset.
    pub podman_path: Option<PathBuf>,
    /// CRIU's -v level for the per-job log (0-4).
    pub criu_log_level: u8,
    /// On SIGTERM, how long running jobs may take to finish.
    pub shutdown_timeout: Duration,
    /// A running job is stopped after this long, its target left running.
    pub job_timeout: Duration,
    /// At restore, how long to wait for a zombie that holds a needed pid to be reaped.
    pub restore_pid_wait: Duration,
    /// How often retention and expiry run (besides after each scheduled checkpoint).
    pub retention_interval: Duration,
    /// How long failed checkpoints are kept.
    pub keep_failed: Duration,
    /// Failed runs in a row after which a schedule is disabled (0: never).
    pub schedule_max_failures: u32,
    /// Largest archive `POST /v1/checkpoints/import` accepts.
    pub import_max_bytes: u64,
    /// Docker's API socket (Docker container targets).
    pub docker_socket: PathBuf,
    /// runc's state directory for Docker's containers (`<exec-root>/runtime-runc/moby`).
    pub docker_runc_root: PathBuf,
    /// Podman's API socket (Podman container targets).
    pub podman_socket: PathBuf,
    /// containerd's gRPC socket (containerd container targets).
    pub containerd_socket: PathBuf,
    /// The containerd namespace of a target that names none.
    pub containerd_namespace: String,
    /// Connection limits of both listeners.
    pub limits: ConnectionLimits,
    /// `[remotes.NAME]` as written; `remote::Remotes` checks and builds them.
    pub remotes: std::collections::BTreeMap<String, RemoteSpec>,
    /// `[registries.NAME]` as written; `remote::Remotes` checks and builds them beside the
    /// buckets (one namespace of names).
    pub registries: std::collections::BTreeMap<String, RegistrySpec>,
    /// The log filter: CKPTD_LOG, else the file's `log`, else `info`.
    pub log: String,
}

pub const MAX_WORKERS: usize = 256;

/// What a reload found changed between the running configuration and the file's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys a reload applies (`Config::reloadable`).
    pub applied: Vec<&'static str>,
    /// Keys that take effect only at the next start.
    pub need_restart: Vec<&'static str>,
}

impl Config {
    /// The keys whose changes a reload (SIGHUP) applies: who may use which directories, the
    /// members' limits, the remotes, the job timeout, the import limit and the log filter.
    /// Everything else is bound at start (sockets, listeners, the state directory, workers and
    /// the queue, CRIU and runtime paths, timers).
    pub fn changes(&self, new: &Config) -> Changes {
        fn differ<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
            format!("{a:?}") != format!("{b:?}")
        }
        let tokens = |c: &Config| {
            c.tcp
                .as_ref()
                .map(|t| (t.addr, t.token.clone(), t.metrics_token.clone()))
        };
        let applied = [
            (
                "allowed_dirs",
                differ(&self.allowed_dirs, &new.allowed_dirs),
            ),
            (
                "member limits",
                differ(&self.member_limits, &new.member_limits),
            ),
            ("remotes", differ(&self.remotes, &new.remotes)),
            ("registries", differ(&self.registries, &new.registries)),
            ("job_timeout_secs", self.job_timeout != new.job_timeout),
            (
                "import_max_bytes",
                self.import_max_bytes != new.import_max_bytes,
            ),
            ("log", self.log != new.log),
        ];
        let need_restart = [
            ("socket", self.socket != new.socket),
            ("socket_group", self.socket_group != new.socket_group),
            ("tcp_listen and its tokens", tokens(self) != tokens(new)),
            ("state_dir", self.state_dir != new.state_dir),
            ("workers", self.workers != new.workers),
            ("queue_capacity", self.queue_capacity != new.queue_capacity),
            ("criu_path", self.criu_path != new.criu_path),
            ("criu_config", self.criu_config != new.criu_config),
            ("runc_path", self.runc_path != new.runc_path),
            ("podman_path", self.podman_path != new.podman_path),
            ("criu_log_level", self.criu_log_level != new.criu_log_level),
            (
                "shutdown_timeout_secs",
                self.shutdown_timeout != new.shutdown_timeout,
            ),
            (
                "restore_pid_wait_secs",
                self.restore_pid_wait != new.restore_pid_wait,
            ),
            (
                "retention_interval_secs",
                self.retention_interval != new.retention_interval,
            ),
            ("keep_failed_secs", self.keep_failed != new.keep_failed),
            (
                "schedule_max_failures",
                self.schedule_max_failures != new.schedule_max_failures,
            ),
            ("docker_socket", self.docker_socket != new.docker_socket),
            (
                "docker_runc_root",
                self.docker_runc_root != new.docker_runc_root,
            ),
            ("podman_socket", self.podman_socket != new.podman_socket),
            (
                "containerd_socket",
                self.containerd_socket != new.containerd_socket,
            ),
            (
                "containerd_namespace",
                self.containerd_namespace != new.containerd_namespace,
            ),
            ("connection limits", self.limits != new.limits),
        ];
        let keys =
            |l: &[(&'static str, bool)]| l.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect();
        Changes {
            applied: keys(&applied),
            need_restart: keys(&need_restart),
        }
    }

    /// This configuration with `new`'s reloadable keys (`changes`' `applied`).
    pub fn with_reloaded(&self, new: &Config) -> Config {
        Config {
            allowed_dirs: new.allowed_dirs.clone(),
            member_limits: new.member_limits,
            remotes: new.remotes.clone(),
            registries: new.registries.clone(),
            job_timeout: new.job_timeout,
            import_max_bytes: new.import_max_bytes,
            log: new.log.clone(),
            ..self.clone()
        }
    }
}

/// The connection limits of both listeners (`http::serve` enforces them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max: usize,
    pub per_peer: usize,
    pub reserve: usize,
    pub header_timeout: Duration,
    /// TCP connections not yet authenticated, at once.
    pub unauthenticated: usize,
}

/// What one non-root owner may use at once, so that callers cannot crowd each other (and root)
/// out; root is never limited by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLimits {
    /// Queue slots only root's jobs may take.
    pub root_queue_slots: usize,
    /// Jobs queued or running per owner.
    pub jobs: usize,
    /// Checkpoints in the catalog per owner (any status).
    pub checkpoints: u64,
    /// Bytes of images per owner (None: no limit).
    pub bytes: Option<u64>,
    /// Schedules per owner.
    pub schedules: usize,
}

impl Default for MemberLimits {
    fn default() -> Self {
        MemberLimits {
            root_queue_slots: 8,
            jobs: 16,
            checkpoints: 1000,
            bytes: None,
            schedules: 100,
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: 1024,
            per_peer: 64,
            reserve: 32,
            header_timeout: Duration::from_secs(10),
            unauthenticated: 64,
        }
    }
}

impl Config {
    pub fn catalog_path(&self) -> PathBuf {
        self.state_dir.join("catalog.db")
    }
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.state_dir.join("checkpoints")
    }
    /// Where the terminals of restored processes are held (sockets and logs, root's, 0700).
    pub fn terminals_dir(&self) -> PathBuf {
        self.state_dir.join("terminals")
    }

    /// Where restored containers' piped stdout/stderr are written.
    pub fn container_logs_dir(&self) -> PathBuf {
        self.state_dir.join("container-logs")
    }

    pub fn load(args: Args) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let default_workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let socket_group = match args.socket_group.or(file.socket_group) {
            Some(name) => {
                let g = nix::unistd::Group::from_name(&name)
                    .with_context(|| format!("cannot look up socket_group {name:?}"))?
                    .with_context(|| format!("socket_group {name:?} does not exist (create it with groupadd, or leave it out for a root-only socket)"))?;
                Some((name, g.gid.as_raw()))
            }
            None => nix::unistd::Group::from_name("ckptd")
                .ok()
                .flatten()
                .map(|g| ("ckptd".to_owned(), g.gid.as_raw())),
        };
        let mut allowed_dirs = Vec::new();
        for d in file.allowed_dirs.unwrap_or_default() {
            absolute("allowed_dirs entry", &d)?;
            allowed_dirs.push(d.canonicalize().with_context(|| {
                format!("allowed_dirs entry {} cannot be resolved", d.display())
            })?);
        }
        let cfg = Config {
            socket: args
                .socket
                .or(file.socket)
                .unwrap_or_else(|| "/run/ckptd.sock".into()),
            socket_group,
            allowed_dirs,
            tcp: tcp_config(
                args.tcp_listen.or(file.tcp_listen),
                args.tcp_token_file.or(file.tcp_token_file),
                args.metrics_token_file.or(file.metrics_token_file),
            )?,
            state_dir: args
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| "/var/lib/ckptd".into()),
            workers: args.workers.or(file.workers).unwrap_or(default_workers),
            queue_capacity: file.queue_capacity.unwrap_or(64),
            member_limits: {
                let capacity = file.queue_capacity.unwrap_or(64);
                let d = MemberLimits::default();
                MemberLimits {
                    root_queue_slots: file
                        .root_reserved_queue_slots
                        .unwrap_or((capacity / 8).max(1).min(capacity.saturating_sub(1))),
                    jobs: file.member_max_jobs.unwrap_or(d.jobs),
                    checkpoints: file.member_max_checkpoints.unwrap_or(d.checkpoints),
                    bytes: file.member_max_bytes,
                    schedules: file.member_max_schedules.unwrap_or(d.schedules),
                }
            },
            criu_path: file.criu_path,
            criu_config: file.criu_config,
            runc_path: file.runc_path,
            podman_path: file.podman_path,
            criu_log_level: file.criu_log_level.unwrap_or(4),
            shutdown_timeout: Duration::from_secs(file.shutdown_timeout_secs.unwrap_or(120)),
            job_timeout: Duration::from_secs(file.job_timeout_secs.unwrap_or(1800)),
            restore_pid_wait: Duration::from_secs(file.restore_pid_wait_secs.unwrap_or(10)),
            retention_interval: Duration::from_secs(file.retention_interval_secs.unwrap_or(60)),
            keep_failed: Duration::from_secs(file.keep_failed_secs.unwrap_or(7 * 86400)),
            schedule_max_failures: file.schedule_max_failures.unwrap_or(5),
            import_max_bytes: file.import_max_bytes.unwrap_or(64 << 30),
            docker_socket: args
                .docker_socket
                .or(file.docker_socket)
                .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock")),
            docker_runc_root: args
                .docker_runc_root
                .or(file.docker_runc_root)
                .unwrap_or_else(|| PathBuf::from("/run/docker/runtime-runc/moby")),
            // Where systemd's podman.socket listens for root.
            containerd_socket: args
                .containerd_socket
                .or(file.containerd_socket)
                .unwrap_or_else(|| PathBuf::from("/run/containerd/containerd.sock")),
            containerd_namespace: args
                .containerd_namespace
                .or(file.containerd_namespace)
                .unwrap_or_else(|| "k8s.io".into()),
            podman_socket: args
                .podman_socket
                .or(file.podman_socket)
                .unwrap_or_else(|| PathBuf::from("/run/podman/podman.sock")),
            limits: {
                let d = ConnectionLimits::default();
                ConnectionLimits {
                    max: file.max_connections.unwrap_or(d.max),
                    per_peer: file.max_connections_per_peer.unwrap_or(d.per_peer),
                    reserve: file.root_reserved_connections.unwrap_or(d.reserve),
                    header_timeout: file
                        .header_timeout_secs
                        .map_or(d.header_timeout, Duration::from_secs),
                    unauthenticated: file
                        .max_unauthenticated_connections
                        .unwrap_or(d.unauthenticated),
                }
            },
            remotes: file.remotes,
            registries: file.registries,
            log: std::env::var("CKPTD_LOG")
                .ok()
                .or(file.log)
                .unwrap_or_else(|| "info".into()),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        absolute("socket", &self.socket)?;
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .with_context(|| format!("log {:?} is not a tracing filter", self.log))?;
        let l = &self.limits;
        if l.max == 0 || l.per_peer == 0 || l.reserve >= l.max || l.header_timeout.is_zero() {
            bail!(
                "connection limits: max_connections ({}) and max_connections_per_peer ({}) must be \
                 at least 1, root_reserved_connections ({}) below max_connections, and \
                 header_timeout_secs at least 1",
                l.max,
                l.per_peer,
                l.reserve
            );
        }
        absolute("state_dir", &self.state_dir)?;
        if self.workers == 0 || self.workers > MAX_WORKERS {
            bail!(
                "workers must be between 1 and {MAX_WORKERS}, got {}",
                self.workers
            );
        }
        if self.retention_interval.is_zero() {
            bail!("retention_interval_secs must be at least 1");
        }
        if self.job_timeout.is_zero() {
            bail!("job_timeout_secs must be at least 1");
        }
        if self.queue_capacity == 0 {
            bail!("queue_capacity must be at least 1");
        }
        let m = &self.member_limits;
        if m.root_queue_slots >= self.queue_capacity && self.queue_capacity > 1 {
            bail!(
                "root_reserved_queue_slots ({}) must be below queue_capacity ({}): members need at \
                 least one slot",
                m.root_queue_slots,
                self.queue_capacity
            );
        }
        if m.jobs == 0 || m.checkpoints == 0 || m.schedules == 0 || m.bytes == Some(0) {
            bail!(
                "member_max_jobs, member_max_checkpoints, member_max_schedules and member_max_bytes \
                 must be at least 1 (leave member_max_bytes out for no limit)"
            );
        }
        if self.criu_log_level > 4 {
            bail!("criu_log_level must be 0-4, got {}", self.criu_log_level);
        }
        for (what, p) in [
            ("criu_path", &self.criu_path),
            ("criu_config", &self.criu_config),
            ("runc_path", &self.runc_path),
        ] {
            if let Some(p) = p {
                absolute(what, p)?;
            }
        }
        if let Some(c) = &self.criu_config {
            if !c.is_file() {
                bail!("criu_config {} is not a readable file", c.display());
            }
        }
        Ok(())
    }
}

/// The TCP listener: off by default; a bearer token from a private file is required.
#[derive(Clone)]
pub struct TcpConfig {
    pub addr: std::net::SocketAddr,
    pub token: String,
    /// A token that reads GET /metrics only.
    pub metrics_token: Option<String>,
}

impl std::fmt::Debug for TcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConfig")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .finish()
    }
}

fn tcp_config(
    addr: Option<std::net::SocketAddr>,
    token_file: Option<PathBuf>,
    metrics_token_file: Option<PathBuf>,
) -> anyhow::Result<Option<TcpConfig>> {
    let Some(addr) = addr else {
        if token_file.is_some() || metrics_token_file.is_some() {
            bail!("tcp_token_file or metrics_token_file is set but tcp_listen is not; set both to serve over TCP");
        }
        return Ok(None);
    };
    let Some(file) = token_file else {
        bail!("tcp_listen needs tcp_token_file: a file holding the bearer token TCP clients must send");
    };
    let token = read_token_file("tcp_token_file", &file)?;
    let metrics_token = metrics_token_file
        .map(|f| read_token_file("metrics_token_file", &f))
        .transpose()?;
    if metrics_token.as_ref() == Some(&token) {
        bail!("metrics_token_file holds the same token as tcp_token_file; give the metrics reader a token of its own");
    }
    Ok(Some(TcpConfig {
        addr,
        token,
        metrics_token,
    }))
}

/// A bearer token from a file only root (or the daemon) can change and nobody else can read.
fn read_token_file(what: &str, file: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(file)
        .with_context(|| format!("cannot read {what} {}", file.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if md.uid() != 0 && md.uid() != me {
        bail!(
            "{what} {} belongs to uid {}; it must be root's (or the daemon's own): whoever \
             owns it can change the token. chown root {} it",
            file.display(),
            md.uid(),
            file.display()
        );
    }
    if md.permissions().mode() & 0o077 != 0 {
        bail!(
            "{what} {} is readable by group or others (mode {:o}); chmod 600 it",
            file.display(),
            md.permissions().mode() & 0o777
        );
    }
    let token = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {what} {}", file.display()))?
        .trim()
        .to_owned();
    if token.len() < 16 {
        bail!("the token in {} is shorter than 16 characters; use a long random one (openssl rand -hex 32)", file.display());
    }
    Ok(token)
}

fn absolute(what: &str, p: &Path) -> anyhow::Result<()> {
    if !p.is_absolute() {
        bail!("{what} must be an absolute path, got {:?}", p);
    }
    Ok(())
}

/// `[remotes.NAME]` in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// `http://host:port` or `https://...`; AWS itself when left out.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Keys start with this (default `ckptd`); an empty string puts them at the bucket's root.
    pub prefix: Option<String>,
    /// Default `us-east-1`.
    pub region: Option<String>,
    /// `path` or `virtual` (default: `path` with an endpoint, `virtual` for AWS).
    pub addressing: Option<String>,
    /// A TOML file with `access_key_id`, `secret_access_key` (and `session_token`), readable by
    /// its owner only; without it the environment's `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) are used.
    pub credentials_file: Option<PathBuf>,
    /// age X25519 public keys (`age1...`): pushes are encrypted to all of them.
    #[serde(default)]
    pub age_recipients: Vec<String>,
    /// age identity file (`age-keygen` output), readable by its owner only: needed to pull
    /// encrypted checkpoints.
    pub age_identity_file: Option<PathBuf>,
    /// Part size of multipart uploads in MiB (5-5120, default 8); grown for checkpoints so large
    /// that 10,000 parts would not hold them.
    pub part_size_mib: Option<u64>,
    /// Parts uploaded at once (1-64, default 3). Memory held by a push is about
    /// (upload_concurrency + 1) x part size.
    pub upload_concurrency: Option<usize>,
}

/// `[registries.NAME]` in the configuration file: an OCI registry (the distribution protocol)
/// where checkpoints are pushed as checkpoint images, the layout Podman and CRI-O restore from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySpec {
    /// `https://host[:port]`, or `http://host:port` with `plain_http = true` (a test registry).
    pub url: String,
    /// The repository checkpoint images are pushed to and listed from (`team/checkpoints`).
    pub repository: String,
    /// A TOML file with `username` and `password` (or a token as the password), readable by
    /// its owner only; without it the registry is used anonymously.
    pub credentials_file: Option<PathBuf>,
    /// A PEM file of the CA that signed the registry's certificate, trusted beside the system's.
    pub ca_file: Option<PathBuf>,
    /// Allow `http://`: images travel unencrypted and unauthenticated on the wire. For a registry
    /// on loopback in tests only.
    #[serde(default)]
    pub plain_http: bool,
    /// age X25519 public keys: pushed layers are encrypted to all of them (only ckptd can
    /// restore such an image; Podman and CRI-O cannot).
    #[serde(default)]
    pub age_recipients: Vec<String>,
    /// age identity file, readable by its owner only: needed to pull encrypted images.
    pub age_identity_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("ckptd").chain(v.iter().copied())).unwrap()
    }

    #[test]
    fn flags_beat_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "workers = 3\nstate_dir = \"/srv/a\"\nqueue_capacity = 5\n",
        )
        .unwrap();
        let cfg = Config::load(args(&["--config", f.to_str().unwrap(), "--workers", "7"])).unwrap();
        assert_eq!(cfg.workers, 7);
        assert_eq!(cfg.state_dir, PathBuf::from("/srv/a"));
        assert_eq!(cfg.queue_capacity, 5);
        assert_eq!(cfg.socket, PathBuf::from("/run/ckptd.sock"));
    }

    #[test]
    fn invalid_config_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "wokers = 3\n").unwrap();
        let e = Config::load(args(&["--config", f.to_str().unwrap()])).unwrap_err();
        assert!(format!("{e:#}").contains("unknown field `wokers`"), "{e:#}");
        let e = Config::load(args(&["--workers", "0"])).unwrap_err();
        assert!(e.to_string().contains("workers must be between 1"), "{e}");
        let e = Config::load(args(&["--socket", "relative.sock"])).unwrap_err();
        assert!(
            e.to_string().contains("socket must be an absolute path"),
            "{e}"
        );
    }
}
