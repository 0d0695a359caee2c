//! Containers through runc.
//!
//! What runc 1.1 does, measured on this project's machine with CRIU 4.2.1, and what follows:
//! - `runc checkpoint` writes CRIU's log and `stats-dump` to the *work* path: ckptd gives it the
//!   image directory for both, so images, `dump.log` and statistics sit together as for processes.
//! - runc has no `--leave-stopped`. Without `leave_running`, ckptd pauses the container (cgroup
//!   freezer), dumps it with `--leave-running` (it stays paused), makes the images durable, and only
//!   then kills and deletes it; if the images cannot be made durable it resumes the container.
//! - `-b` changes runc's working directory, so every path handed to runc is absolute.
//! - stdio: /dev/null and files the container opened itself dump and restore as they are. A host
//!   file opened outside the container's mount namespace cannot be dumped ("Can't lookup mount=N
//!   for fd=1"). Pipes are external to the container; runc hands its own stdio to them at restore.
//!   ckptd then gives them a pipe again, read by a small detached `cat` that appends to
//!   `<state_dir>/container-logs/<id>.log`, so that the restored container can be checkpointed
//!   once more (a plain file there could not: it is outside the container's mount namespace).
//! - seccomp filters and overlayfs root filesystems checkpoint and restore.
//! - A container with a terminal checkpoints like any other; its restore needs a console socket
//!   to receive the new pty master (`console_socket` in the restore request).
//! - CRIU options file: runc gives CRIU the container's `org.criu.config` annotation, else
//!   `/etc/criu/runc.conf`; in RPC mode CRIU reads no other file, so the daemon-wide `criu_config`
//!   cannot apply to containers. ckptd records which file the dump used.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ckptd_api::{Checkpoint, ContainerRecord, JobResult, Runtime, Target};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use super::container::{self, ContainerOps};
use crate::criu::{self, run_logged, Criu};
use crate::engine::{
    BoxFuture, ContainerHandle, DumpOutput, DumpSpec, Engine, LazyDump, LazyRestore, RestoreSpec,
    Stopped,
};
use crate::error::{Error, Result};
use crate::sys;

pub(crate) const RUNC_CONF: &str = "/etc/criu/runc.conf";

pub struct RuncEngine {
    runc: Option<PathBuf>,
    /// Where restored containers' piped stdout/stderr are written.
    logs_dir: PathBuf,
    criu: std::sync::Arc<Criu>,
}

/// What `runc state` says.
#[derive(Debug, Deserialize)]
pub struct RuncState {
    pub pid: i32,
    pub status: String,
    pub bundle: String,
}

struct Container<'a> {
    id: &'a str,
    root: Option<&'a str>,
}

impl<'a> Container<'a> {
    fn handle(&self) -> ContainerHandle {
        ContainerHandle {
            runtime: Runtime::Runc,
            id: self.id.to_owned(),
            root: self.root.map(str::to_owned),
        }
    }

    fn of(h: &'a ContainerHandle) -> Self {
        Container {
            id: &h.id,
            root: h.root.as_deref(),
        }
    }
}

/// runc's own id format (`^[\w+\-.]+$`), at most a file name long, and not `.`/`..`-like or an
/// option-like first character.
/// Where a dumped container's stdin, stdout and stderr pointed: runc's `descriptors.json` next to
/// its images (empty when there is none).
pub(crate) fn recorded_stdio(images: &Path) -> Vec<String> {
    std::fs::read(images.join("descriptors.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The record a restore in place needs of a runc container: its bundle, the digest of the
/// bundle's `config.json` (the bytes given), whether it has a terminal, and its stdio as runc
/// recorded it next to the images.
pub(crate) fn container_record(bundle: &str, config: &[u8], images: &Path) -> ContainerRecord {
    ContainerRecord {
        stdio: recorded_stdio(images),
        ..record_before_dump(bundle, config)
    }
}

/// The record of a container not dumped yet (its stdio comes with its images).
fn record_before_dump(bundle: &str, config: &[u8]) -> ContainerRecord {
    let parsed: serde_json::Value = serde_json::from_slice(config).unwrap_or_default();
    ContainerRecord {
        bundle: bundle.to_owned(),
        config_sha256: format!("{:x}", Sha256::digest(config)),
        terminal: parsed["process"]["terminal"].as_bool().unwrap_or(false),
        stdio: Vec::new(),
    }
}

/// The CRIU options file a live dump's `runc checkpoint` hands its CRIU (`CRIU_CONFIG_FILE`,
/// which CRIU reads before runc's request): the page-server socket, which runc cannot pass.
const LIVE_CONF: &str = "criu-live.conf";
/// runc's own log of a live dump (its errors).
const LIVE_RUNC_LOG: &str = "dump-runc.log";

/// The first line of `runc --version`, run asynchronously (an executor thread never waits on it).
impl RuncEngine {
    /// runc as `/v1/info` shows it (none when it is not installed).
    async fn describe(&self) -> Option<ckptd_api::RuntimeInfo> {
        let p = self.runc.as_ref()?;
        let version = version(p).await;
        Some(ckptd_api::RuntimeInfo {
            name: "runc".into(),
            path: p.display().to_string(),
            reachable: version.is_some(),
            error: version
                .is_none()
                .then(|| format!("`{} --version` did not answer", p.display())),
            version,
        })
    }
}

pub async fn version(runc: &Path) -> Option<String> {
    let out = Command::new(runc).arg("--version").output().await.ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

pub(crate) fn valid_container_id(id: &str) -> bool {
    (1..=255).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-'))
        && !id.starts_with(['.', '-'])
}

/// Unmounts `<dir>/criu-root`, where runc bind-mounts the rootfs for CRIU, as often as it is
/// mounted (a bind of a bind); an error if it is still a mount point after that.
fn unmount_criu_root(dir: &Path) -> std::io::Result<()> {
    let criu_root = dir.join("criu-root");
    for _ in 0..8 {
        if !sys::is_mount_point(&criu_root)? {
            return Ok(());
        }
        rustix::mount::unmount(
            &criu_root,
            rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
        )?;
    }
    Err(std::io::Error::other(format!(
        "{} is still a mount point",
        criu_root.display()
    )))
}

/// Removes a container's runc state directory that runc no longer knows, `criu-root` already
/// unmounted: its empty `criu-root`, its files, then itself. Never recursive: a directory
/// below it is left, with an error.
fn remove_state_dir(dir: &Path) -> std::io::Result<()> {
    let criu_root = dir.join("criu-root");
    if std::fs::symlink_metadata(&criu_root).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir(&criu_root)?;
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} holds a directory ({})",
                dir.display(),
                entry.file_name().to_string_lossy()
            )));
        }
        std::fs::remove_file(entry.path())?;
    }
    std::fs::remove_dir(dir)
}

/// runc's state directory when none is given (root's runc).
pub(crate) const RUNC_ROOT: &str = "/run/runc";

fn container_of(t: &Target) -> Result<Container<'_>> {
    match t {
        Target::Container {
            id, runtime, root, ..
        } => {
            if *runtime != Runtime::Runc {
                return Err(Error::internal(format!(
                    "a {runtime} container target reached the runc engine"
                )));
            }
            if !valid_container_id(id) {
                return Err(Error::invalid(format!(
                    "invalid container id {id:?}: runc ids are 1-255 characters of letters, digits, \
                     '_', '+', '.', '-', not starting with '.' or '-'"
                )));
            }
            if let Some(r) = root {
                if !Path::new(r).is_absolute() || r.contains('\0') {
                    return Err(Error::invalid(format!(
                        "root {r:?} must be an absolute path"
                    )));
                }
            }
            Ok(Container {
                id,
                root: root.as_deref(),
            })
        }
        _ => Err(Error::internal(
            "a process or group target reached the runc engine",
        )),
    }
}

/// `runc [--root ROOT]`, its output captured.
fn command(runc: &Path, root: Option<&str>) -> Command {
    let mut cmd = Command::new(runc);
    if let Some(r) = root {
        cmd.arg("--root").arg(r);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What `runc [--root ROOT] state ID` says, or None when runc knows no such container. Shared
/// by runc containers and Docker's.
pub(crate) async fn state(runc: &Path, root: Option<&str>, id: &str) -> Result<Option<RuncState>> {
    let out = command(runc, root)
        .arg("state")
        .arg(id)
        .output()
        .await
        .map_err(|e| Error::unavailable(format!("cannot run runc: {e}")))?;
    if out.status.success() {
        return serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| Error::internal(format!("runc state printed something unexpected: {e}")));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("does not exist") {
        return Ok(None);
    }
    Err(Error::internal(format!(
        "runc state {id} failed: {}",
        err.trim()
    )))
}

/// `runc [--root ROOT] ARGS ID`; its failure says runc's message. Shared by runc containers and
/// Docker's.
pub(crate) async fn simple(runc: &Path, root: Option<&str>, id: &str, args: &[&str]) -> Result<()> {
    let out = command(runc, root)
        .args(args)
        .arg(id)
        .output()
        .await
        .map_err(|e| Error::unavailable(format!("cannot run runc: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::internal(format!(
            "runc {} {id} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl RuncEngine {
    pub fn new(runc: Option<PathBuf>, logs_dir: PathBuf, criu: std::sync::Arc<Criu>) -> Self {
        Self {
            runc,
            logs_dir,
            criu,
        }
    }

    fn runc(&self) -> Result<&Path> {
        self.runc.as_deref().ok_or_else(|| {
            Error::unavailable("runc is not installed, so containers cannot be checkpointed")
                .with_hint("run `make setup` (it installs runc)")
        })
    }

    /// The container's state, or None when runc knows no such container.
    async fn state(&self, c: &Container<'_>) -> Result<Option<RuncState>> {
        state(self.runc()?, c.root, c.id).await
    }

    async fn running(&self, c: &Container<'_>) -> Result<RuncState> {
        match self.state(c).await? {
            None => Err(Error::target_unavailable(format!(
                "no container {:?} is known to runc{}",
                c.id,
                c.root.map(|r| format!(" --root {r}")).unwrap_or_default()
            ))
            .with_advice(ckptd_api::Advice::RuncRoot {
                root: c.root.map(str::to_owned),
            })),
            Some(s) if s.status == "running" || s.status == "paused" => Ok(s),
            Some(s) => Err(Error::target_unavailable(format!(
                "container {:?} is {}; only a running container can be checkpointed",
                c.id, s.status
            ))),
        }
    }

    /// A one-shot runc subcommand whose failure is reported as is (pause, resume, delete).
    async fn simple(&self, c: &Container<'_>, args: &[&str]) -> Result<()> {
        simple(self.runc()?, c.root, c.id, args).await
    }

    async fn dump_container(&self, spec: DumpSpec<'_>) -> Result<DumpOutput> {
        self.criu.usable()?;
        let c = container_of(spec.target)?;
        let state = self.running(&c).await?;
        let bundle = Path::new(&state.bundle);
        let config = std::fs::read(bundle.join("config.json")).map_err(|e| {
            Error::target_unavailable(format!("cannot read {}/config.json: {e}", state.bundle))
        })?;
        let parsed: serde_json::Value = serde_json::from_slice(&config).unwrap_or_default();
        let criu_config = match parsed["annotations"]["org.criu.config"].as_str() {
            Some("") => None,
            Some(f) => Some(f.to_owned()),
            None => Path::new(RUNC_CONF).exists().then(|| RUNC_CONF.to_owned()),
        };

        let handle = c.handle();
        let stopped = container::checkpoint(self, handle, state.status == "paused", &spec).await?;
        Ok(DumpOutput {
            stats: criu::dump_stats(&spec.images.path()),
            stopped,
            container: Some(container_record(
                &state.bundle,
                &config,
                &spec.images.path(),
            )),
            criu_config,
            terminal: None,
            members: Vec::new(),
        })
    }

    /// Where a restore goes: the container id, its runc root and its bundle.
    fn destination<'a>(
        cp: &'a Checkpoint,
        into: Option<&'a Target>,
    ) -> Result<(Container<'a>, String)> {
        let record = cp.container.as_ref().ok_or_else(|| {
            Error::internal(format!("checkpoint {} has no container record", cp.name))
        })?;
        match into {
            None => Ok((container_of(&cp.target)?, record.bundle.clone())),
            Some(t) => {
                let c = container_of(t)?;
                let bundle = match t {
                    Target::Container {
                        bundle: Some(b), ..
                    } => b.clone(),
                    Target::Container { id, .. }
                        if Some(id.as_str()) == container_of(&cp.target).ok().map(|c| c.id) =>
                    {
                        record.bundle.clone()
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "restoring into a new container ({}) needs its \"bundle\": a directory \
                             with config.json and the root filesystem",
                            c.id
                        )))
                    }
                };
                if !Path::new(&bundle).is_absolute() || bundle.contains('\0') {
                    return Err(Error::invalid(format!(
                        "bundle {bundle:?} must be an absolute path"
                    )));
                }
                Ok((c, bundle))
            }
        }
    }

    async fn check_restore_target(
        &self,
        cp: &Checkpoint,
        into: Option<&Target>,
        console_socket: Option<&str>,
    ) -> Result<()> {
        let (c, bundle) = Self::destination(cp, into)?;
        let record = cp.container.as_ref().expect("checked by destination");
        if bundle.is_empty() {
            return Err(Error::invalid(format!(
                "checkpoint {} came from a container checkpoint archive and has no runc \
                 container here to restore in place: restore it into a new one, \
                 {{\"target\":{{\"kind\":\"container\",\"id\":NEW,\"bundle\":DIR}},\"rootfs\":IMAGE_ROOTFS}}",
                cp.name
            )));
        }
        let config = match std::fs::read(Path::new(&bundle).join("config.json")) {
            Ok(c) => c,
            // Built by the job, from the archive's spec (the service checked the rest).
            Err(_) if super::bundle::has_spec(Path::new(&cp.dir)) => Vec::new(),
            Err(_) => {
                return Err(Error::target_unavailable(format!(
                    "the bundle {bundle} has no config.json"
                ))
                .with_advice(ckptd_api::Advice::GiveBundle))
            }
        };
        // The recorded bundle is reused only as it was; a bundle given explicitly is the caller's.
        let explicit = matches!(
            into,
            Some(Target::Container {
                bundle: Some(_),
                ..
            })
        );
        let digest = format!("{:x}", Sha256::digest(&config));
        if !explicit && digest != record.config_sha256 {
            return Err(Error::conflict(format!(
                "{bundle}/config.json changed since checkpoint {} was taken (sha256 {digest}, was {})",
                cp.name, record.config_sha256
            ))
            .with_advice(ckptd_api::Advice::BundleChanged));
        }
        if let Some(s) = self.state(&c).await? {
            return Err(Error::conflict(format!(
                "a container {:?} already exists ({}); runc restores into a new container",
                c.id, s.status
            ))
            .with_hint(format!(
                "restore under another id, or remove it first: runc kill {id} KILL; runc delete {id}",
                id = c.id
            )));
        }
        match (record.terminal, console_socket) {
            (true, None) => Err(Error::invalid(format!(
                "container checkpoint {} has a terminal: its restore needs \"console_socket\", the \
                 path of a Unix socket that receives the new pty master (as runc's --console-socket)",
                cp.name
            ))),
            (false, Some(_)) => Err(Error::invalid(
                "console_socket is only for containers with a terminal; this one has none",
            )),
            (true, Some(s)) if !s.starts_with('/') || s.contains('\0') => Err(Error::invalid(format!(
                "console_socket {s:?} must be an absolute path (without NUL)"
            ))),
            (true, Some(s)) => {
                use std::os::unix::fs::FileTypeExt;
                match std::fs::metadata(s) {
                    Ok(md) if md.file_type().is_socket() => Ok(()),
                    _ => Err(Error::invalid(format!("console_socket {s} is not a Unix socket"))),
                }
            }
            (false, None) => Ok(()),
        }
    }

    /// `runc restore` of the spec's images; with `lazy_pidfile`, lazily (`--lazy-pages`, a
    /// `criu lazy-pages` serving the memory already) and writing the container's pid there.
    async fn restore_container(
        &self,
        spec: &RestoreSpec<'_>,
        lazy_pidfile: Option<&str>,
    ) -> Result<JobResult> {
        self.criu.usable()?;
        let cp = spec.checkpoint;
        self.check_restore_target(cp, spec.into, spec.console_socket)
            .await?;
        let (c, bundle) = Self::destination(cp, spec.into)?;
        let record = cp.container.as_ref().expect("checked by destination");
        let dir = spec.images.path().display().to_string();
        let mut args: Vec<String> = vec![
            "restore".into(),
            "--detach".into(),
            "--image-path".into(),
            dir.clone(),
            "--work-path".into(),
            dir,
            "--bundle".into(),
            bundle,
        ];
        if let Some(s) = spec.console_socket {
            args.push("--console-socket".into());
            args.push(s.into());
        }
        if let Some(pidfile) = lazy_pidfile {
            args.push("--lazy-pages".into());
            args.push("--pid-file".into());
            args.push(spec.images.path().join(pidfile).display().to_string());
        }
        Criu::option_flags(&spec.options, &mut args);
        args.push(c.id.to_owned());

        // runc's own messages go to a file, since its stderr may become the container's.
        let runc_log = spec.images.path().join(format!("{}.runc", spec.log_name));
        let mut cmd = Command::new(self.runc()?);
        cmd.arg("--log").arg(&runc_log);
        if let Some(r) = c.root {
            cmd.arg("--root").arg(r);
        }
        cmd.args(&args).stdin(Stdio::null());
        // Recorded with the checkpoint, or (a live migration's) next to the images it came with.
        let stdio = if record.stdio.is_empty() {
            recorded_stdio(&spec.images.path())
        } else {
            record.stdio.clone()
        };
        let piped = stdio.iter().skip(1).take(2).any(|d| d.starts_with("pipe:"));
        let output_log = if piped {
            let (write_end, log) = self.output_pipe(c.id)?;
            cmd.stdout(Stdio::from(
                write_end
                    .try_clone()
                    .map_err(|e| Error::internal(format!("dup: {e}")))?,
            ))
            .stderr(Stdio::from(write_end));
            Some(log)
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            None
        };
        // runc writes restore.log into the work path; each restore's log is kept under its job's name.
        let runc_criu_log = spec.images.path().join("restore.log");
        let final_log = spec.images.path().join(spec.log_name);
        let result = run_logged(
            cmd,
            (spec.images, "restore.log"),
            Some(&runc_log),
            format!(
                "CRIU (through runc) could not restore checkpoint {} as container {}",
                cp.name, c.id
            ),
            &spec.stop,
            None,
        )
        .await;
        let _ = std::fs::rename(&runc_criu_log, &final_log);
        let _ = std::fs::remove_file(&runc_log);
        if result.is_err() {
            self.remove_left_state(&c).await;
        }
        if let Err(mut e) = result {
            e.details
                .insert("log".into(), final_log.display().to_string().into());
            return Err(e);
        }
        let state = self.state(&c).await?.ok_or_else(|| {
            Error::internal(format!(
                "runc restored {} but does not know it afterwards",
                c.id
            ))
        })?;
        Ok(JobResult {
            pid: Some(state.pid),
            container: Some(c.id.to_owned()),
            output_log: output_log.map(|p| p.display().to_string()),
            ..Default::default()
        })
    }

    /// Removes what a restore that failed midway left under the container's id: runc killed
    /// mid-restore leaves `<root>/<id>/` and its `criu-root` bind mount of the rootfs, which
    /// `runc delete` no longer knows and which refuses every later restore under that id. The
    /// container did not exist when the restore began (`check_restore_target`), so all of it is
    /// the restore's. Only below a runc root that is root's own directory (containers are
    /// root's; `auth`).
    ///
    /// `criu-root` is unmounted first, and checked: `runc delete` removes the state directory
    /// recursively, across that mount, which deletes the container's root filesystem (seen:
    /// the bundle lost its `bin/busybox`).
    async fn remove_left_state(&self, c: &Container<'_>) {
        let root = Path::new(c.root.unwrap_or(RUNC_ROOT));
        let owned = std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir() && m.uid() == 0);
        let dir = root.join(c.id);
        if !owned || std::fs::symlink_metadata(&dir).is_err() {
            return;
        }
        if let Err(e) = unmount_criu_root(&dir) {
            tracing::error!(container = c.id, dir = %dir.display(), error = %e, "cannot unmount what a failed restore left; unmount it and delete the container by hand");
            return;
        }
        // It ends what the half-made container still runs, when runc recorded it.
        let _ = self.simple(c, &["delete", "--force"]).await;
        if std::fs::symlink_metadata(&dir).is_err() {
            tracing::warn!(
                container = c.id,
                "deleted the container a failed restore left"
            );
            return;
        }
        match remove_state_dir(&dir) {
            Ok(()) => {
                tracing::warn!(container = c.id, dir = %dir.display(), "removed the runc state a failed restore left")
            }
            Err(e) => {
                tracing::error!(container = c.id, dir = %dir.display(), error = %e, "cannot remove the runc state a failed restore left; remove it by hand (umount its criu-root first)")
            }
        }
    }

    /// A pipe for a restored container's stdout/stderr, drained by a detached `cat` into
    /// `<logs_dir>/<id>.log`. Returns the write end (for runc) and the log's path.
    fn output_pipe(&self, id: &str) -> Result<(OwnedFd, PathBuf)> {
        let log = self.logs_dir.join(format!("{id}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::io("cannot open the container's output log", &log, &e))?;
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::internal(format!("cannot create a pipe: {e}")))?;
        // The reader outlives ckptd: its own session, not a child ckptd waits for.
        use std::os::unix::process::CommandExt;
        let reader = std::process::Command::new("cat")
            .stdin(Stdio::from(read_end))
            .stdout(Stdio::from(file))
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::internal(format!("cannot start the output reader (cat): {e}")))?;
        tracing::debug!(reader = reader.id(), fd = write_end.as_raw_fd(), log = %log.display(), "container output pipe");
        // Reap it when it ends (when the container's last writer closes), without blocking.
        std::thread::spawn(move || {
            let mut reader = reader;
            let _ = reader.wait();
        });
        Ok((write_end, log))
    }
}

/// A descriptor for a child of runc's to inherit: above what Go's exec hands its children
/// (stdio and runc's own socket to CRIU, 0-3), which would replace a lower one.
fn for_runc_child(fd: OwnedFd) -> Result<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(&fd, 16)
        .map_err(|e| Error::internal(format!("cannot duplicate a descriptor: {e}")))
}

impl RuncEngine {
    /// What a live migration needs of a container before anything is frozen: it runs (not
    /// paused: it would run on the destination), has no terminal (its restore would need a
    /// console socket there); its record, for the destination's checks.
    async fn live_record(&self, target: &Target) -> Result<ContainerRecord> {
        self.criu.usable()?;
        let c = container_of(target)?;
        let state = self.running(&c).await?;
        if state.status == "paused" {
            return Err(Error::target_unavailable(format!(
                "container {:?} is paused; a live migration moves a running container (it would \
                 run on the destination)",
                c.id
            ))
            .with_hint(format!("resume it first: runc resume {}", c.id)));
        }
        let config = std::fs::read(Path::new(&state.bundle).join("config.json")).map_err(|e| {
            Error::target_unavailable(format!("cannot read {}/config.json: {e}", state.bundle))
        })?;
        let record = record_before_dump(&state.bundle, &config);
        if record.terminal {
            return Err(Error::invalid(format!(
                "container {:?} has a terminal, which a live migration cannot hand over yet (its \
                 restore needs a console socket on the destination)",
                c.id
            ))
            .with_hint("move it with a checkpoint: ckpt create ID NAME, then ckpt migrate NAME --to HOST:PORT, and restore it there with --console-socket"));
        }
        Ok(record)
    }

    /// The source side of a live migration: the container paused (its downtime starts), then
    /// `runc checkpoint --lazy-pages --leave-running`, whose CRIU serves the memory over
    /// `pages` (handed to it in a CRIU options file: runc passes no page-server socket). It
    /// stays paused whatever the transfer's end, CRIU restoring the freezer state it found,
    /// and runc does not delete it (`--leave-running`): the service ends or resumes it.
    /// Returns once runc says (on its status descriptor) that CRIU serves pages.
    async fn dump_lazy_container(&self, spec: DumpSpec<'_>, pages: OwnedFd) -> Result<LazyDump> {
        super::process::check_lazy_pipes()?;
        self.live_record(spec.target).await?;
        let runc = self.runc()?;
        let c = container_of(spec.target)?;
        let pages = for_runc_child(pages)?;
        let (status_rx, status_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::internal(format!("cannot make a pipe: {e}")))?;
        let status_tx = for_runc_child(status_tx)?;
        let shown = |name: &str| spec.images.shown().join(name);
        {
            use std::io::Write;
            let mut conf = spec.images.create_file(LIVE_CONF, None).map_err(|e| {
                Error::io(
                    "cannot write the live dump's CRIU options",
                    &shown(LIVE_CONF),
                    &e,
                )
            })?;
            writeln!(conf, "ps-socket {}", pages.as_raw_fd()).map_err(|e| {
                Error::io(
                    "cannot write the live dump's CRIU options",
                    &shown(LIVE_CONF),
                    &e,
                )
            })?;
        }
        let dir = spec.images.path().display().to_string();
        let mut args: Vec<String> = vec![
            "--log".into(),
            format!("{dir}/{LIVE_RUNC_LOG}"),
            // JSON lines: `runc_error` reads the last error's message from them.
            "--log-format".into(),
            "json".into(),
            "checkpoint".into(),
            "--image-path".into(),
            dir.clone(),
            "--work-path".into(),
            dir.clone(),
            "--lazy-pages".into(),
            "--status-fd".into(),
            status_tx.as_raw_fd().to_string(),
            "--leave-running".into(),
        ];
        if let Some(r) = c.root {
            args.splice(0..0, ["--root".to_owned(), r.to_owned()]);
        }
        Criu::option_flags(&spec.options, &mut args);
        args.push(c.id.to_owned());
        let handle = c.handle();
        self.pause(&handle).await?;
        let frozen_at = Instant::now();
        let mut cmd = Command::new(runc);
        cmd.args(&args)
            .env("CRIU_CONFIG_FILE", format!("{dir}/{LIVE_CONF}"))
            // As `run_logged` names it: how a restarted daemon finds this runc and its CRIU.
            .env(sys::IMAGES_ENV, spec.images.shown())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        sys::inherit_fd(&mut cmd, pages.as_raw_fd());
        sys::inherit_fd(&mut cmd, status_tx.as_raw_fd());
        let spawned = cmd.spawn();
        drop(status_tx);
        drop(pages);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = self.resume(&handle).await;
                return Err(Error::unavailable(format!("cannot run runc: {e}")));
            }
        };
        let ready = super::process::serving(status_rx, &spec.stop).await;
        // CRIU has read its options: they go, with runc's log, before the images are sent.
        let runc_log = spec
            .images
            .read_tail(LIVE_RUNC_LOG, 16 * 1024)
            .map(|(t, _)| t)
            .unwrap_or_default();
        let _ = spec.images.remove_file(LIVE_CONF);
        let _ = spec.images.remove_file(LIVE_RUNC_LOG);
        if !matches!(ready, Ok(true)) {
            if let Some(pg) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pg as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            if let Err(e) = self.resume(&handle).await {
                tracing::error!(error = %e, container = c.id, "cannot resume the container after a failed live dump");
            }
            let text = spec
                .images
                .read_tail(spec.log_name, sys::MAX_LOG_READ)
                .map(|(t, _)| t)
                .unwrap_or_default();
            let e = match (*spec.stop.borrow(), ready) {
                (_, Err(e)) => e,
                (Some(r), _) => r.error(),
                (None, _) => Error::new(
                    crate::error::ErrorKind::CriuFailed,
                    format!(
                        "CRIU (through runc) could not dump container {} for a live migration{}",
                        c.id,
                        runc_error(&runc_log)
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                ),
            };
            return Err(e
                .with("log_tail", crate::criu::log::tail(&text))
                .with("log", shown(spec.log_name).display().to_string()));
        }
        Ok(LazyDump {
            stopped: Stopped::Container {
                container: handle,
                paused_by_us: true,
            },
            criu: child,
            frozen_at: Some(frozen_at),
        })
    }

    /// The destination side: a guarded `criu lazy-pages` fetching the memory over `pages`,
    /// then `runc restore --lazy-pages`. Returns once the container runs.
    async fn restore_lazy_container(
        &self,
        spec: RestoreSpec<'_>,
        pages: OwnedFd,
    ) -> Result<LazyRestore> {
        super::process::check_lazy_pipes()?;
        let criu = self.criu.usable()?;
        self.check_restore_target(spec.checkpoint, spec.into, None)
            .await?;
        let (c, _) = Self::destination(spec.checkpoint, spec.into)?;
        let images = super::process::open_images(spec.images)?;
        let pidfile = super::process::pidfile_of(spec.log_name);
        let lazy = super::process::start_lazy_pages(
            &self.criu,
            criu,
            &spec,
            &images,
            Some((pages, &pidfile)),
        )
        .await?;
        match self.restore_container(&spec, Some(&pidfile)).await {
            Ok(JobResult { pid: Some(pid), .. }) => Ok(LazyRestore {
                pid,
                guard: lazy.child,
                container: Some(c.handle()),
            }),
            other => {
                lazy.abort();
                if other.is_ok() {
                    self.remove_left_state(&c).await;
                }
                Err(other.err().unwrap_or_else(|| {
                    Error::internal(format!("runc restored {} but gave no pid", c.id))
                }))
            }
        }
    }
}

/// The message of runc's last error in its log (`--log`, JSON lines).
fn runc_error(log: &str) -> Option<String> {
    log.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error").then(|| v["msg"].as_str().map(str::to_owned))?
    })
}

/// Runs `runc [--root ROOT] checkpoint --leave-running` of container `id` into the spec's image
/// directory (images, CRIU's log and statistics together), with the spec's CRIU options. Shared by
/// runc containers and Docker's (whose runc state sits under Docker's exec root).
pub(crate) async fn checkpoint_leaving_running(
    runc: &Path,
    root: Option<&str>,
    id: &str,
    spec: &DumpSpec<'_>,
    what: String,
) -> Result<()> {
    let dir = spec.images.path().display().to_string();
    let mut cmd = Command::new(runc);
    if let Some(r) = root {
        cmd.arg("--root").arg(r);
    }
    let mut args: Vec<String> = vec![
        "checkpoint".into(),
        "--image-path".into(),
        dir.clone(),
        "--work-path".into(),
        dir,
        // Always: a container to be stopped stays paused until its images are durable.
        "--leave-running".into(),
    ];
    Criu::option_flags(&spec.options, &mut args);
    args.push(id.to_owned());
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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

impl ContainerOps for RuncEngine {
    fn pause<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.simple(&Container::of(c), &["pause"]).await })
    }

    fn resume<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.simple(&Container::of(c), &["resume"]).await })
    }

    fn end<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let c = Container::of(c);
            // Kill it through its cgroup, then a plain delete removes runc's state and the
            // cgroup at once. (`delete --force` kills a paused container too, but then retries
            // removing the cgroup every 10-80 ms while the killed memory is freed: 0.11 s for
            // 512 MiB against 0.06 s this way, BENCHMARKS.md.) Whatever fails here falls back
            // to `delete --force`.
            let killed = match self.state(&c).await {
                Ok(Some(s)) if s.pid > 0 => tokio::task::spawn_blocking(move || {
                    sys::killable_cgroup(s.pid)
                        .and_then(|cg| sys::kill_cgroup(&cg, Duration::from_secs(10)))
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r),
                _ => Err(std::io::Error::other("runc knows no running container")),
            };
            let deleted = match killed {
                // A plain delete of a stopped container has removed runc's state when it returns.
                Ok(()) => match self.simple(&c, &["delete"]).await {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                },
                Err(e) => Error::internal(e.to_string()),
            };
            tracing::debug!(container = c.id, error = %deleted, "falling back to runc delete --force");
            self.simple(&c, &["delete", "--force"]).await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.state(&c).await, Ok(Some(_))) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        })
    }

    fn is_paused<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            matches!(self.state(&Container::of(c)).await, Ok(Some(s)) if s.status == "paused")
        })
    }

    fn dump<'a>(
        &'a self,
        c: &'a ContainerHandle,
        spec: &'a DumpSpec<'a>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            checkpoint_leaving_running(
                self.runc()?,
                c.root.as_deref(),
                &c.id,
                spec,
                format!(
                    "CRIU (through runc) could not checkpoint container {}",
                    c.id
                ),
            )
            .await
        })
    }
}

impl Engine for RuncEngine {
    fn version(&self) -> Option<String> {
        self.criu.version()
    }
    fn runtimes(&self) -> BoxFuture<'_, Vec<ckptd_api::RuntimeInfo>> {
        Box::pin(async move { self.describe().await.into_iter().collect() })
    }
    /// Whether runc (under its default root) knows a container by this id.
    fn knows<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let c = Container { id, root: None };
            self.runc().is_ok() && matches!(self.state(&c).await, Ok(Some(_)))
        })
    }

    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Target::Container {
                bundle: Some(_), ..
            } = target
            {
                return Err(Error::invalid(
                    "\"bundle\" belongs in a restore target; a checkpoint finds the bundle from runc",
                ));
            }
            let c = container_of(target)?;
            self.running(&c).await.map(|_| ())
        })
    }

    fn check_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        console_socket: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.check_restore_target(checkpoint, into, console_socket))
    }

    fn dump_estimate<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let c = container_of(target)?;
            let state = self.running(&c).await?;
            Ok(crate::sys::tree_dump_estimate(state.pid))
        })
    }

    fn dump<'a>(&'a self, spec: DumpSpec<'a>) -> BoxFuture<'a, Result<DumpOutput>> {
        Box::pin(self.dump_container(spec))
    }

    fn restore<'a>(&'a self, spec: RestoreSpec<'a>) -> BoxFuture<'a, Result<JobResult>> {
        Box::pin(async move { self.restore_container(&spec, None).await })
    }

    fn running_pid<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Option<i32>> {
        Box::pin(async move {
            let c = container_of(target).ok()?;
            let s = self.state(&c).await.ok()??;
            (s.status == "running" && s.pid > 0).then_some(s.pid)
        })
    }

    fn check_live<'a>(
        &'a self,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Option<ContainerRecord>>> {
        Box::pin(async move { self.live_record(target).await.map(Some) })
    }

    /// A container an interrupted live dump left paused (the dump paused it; a paused container
    /// is refused before).
    fn live_leftover<'a>(
        &'a self,
        target: &'a Target,
        _owner_uid: u32,
    ) -> BoxFuture<'a, Option<Stopped>> {
        Box::pin(async move {
            let c = container_of(target).ok()?;
            let handle = c.handle();
            ContainerOps::is_paused(self, &handle)
                .await
                .then_some(Stopped::Container {
                    container: handle,
                    paused_by_us: true,
                })
        })
    }

    fn dump_lazy<'a>(
        &'a self,
        spec: DumpSpec<'a>,
        pages: OwnedFd,
    ) -> BoxFuture<'a, Result<LazyDump>> {
        Box::pin(self.dump_lazy_container(spec, pages))
    }

    fn restore_lazy<'a>(
        &'a self,
        spec: RestoreSpec<'a>,
        pages: OwnedFd,
    ) -> BoxFuture<'a, Result<LazyRestore>> {
        Box::pin(self.restore_lazy_container(spec, pages))
    }

    fn recover_dump<'a>(
        &'a self,
        cp: &'a Checkpoint,
        _images: &'a crate::sys::Folder,
    ) -> BoxFuture<'a, Option<DumpOutput>> {
        Box::pin(async move {
            if let Ok(c) = container_of(&cp.target) {
                let handle = c.handle();
                container::recover(self, &handle, cp.options.leave_running).await;
            }
            None
        })
    }

    fn recover_restore<'a>(
        &'a self,
        cp: &'a Checkpoint,
        into: Option<&'a Target>,
        _log_name: &'a str,
    ) -> BoxFuture<'a, Option<JobResult>> {
        Box::pin(async move {
            let (c, _) = Self::destination(cp, into).ok()?;
            let state = self.state(&c).await.ok()??;
            container::restored(state.status == "running", state.pid, c.id)
        })
    }

    fn release<'a>(&'a self, stopped: &'a Stopped, kill: bool) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            container::release(self, stopped, kill).await;
        })
    }

    fn freeze<'a>(&'a self, target: &'a Target, _owner_uid: u32) -> BoxFuture<'a, Result<Stopped>> {
        Box::pin(async move {
            let c = container_of(target)?;
            let state = self.running(&c).await?;
            if state.status == "paused" {
                return Err(Error::target_unavailable(format!(
                    "container {:?} is paused; a group freezes its running members together and \
                     lets them run again together, which would run this one",
                    c.id
                ))
                .with_hint(format!(
                    "resume it first (runc resume {}), or leave it out",
                    c.id
                )));
            }
            let handle = c.handle();
            self.pause(&handle).await?;
            Ok(Stopped::Container {
                container: handle,
                paused_by_us: true,
            })
        })
    }

    fn continue_restored<'a>(
        &'a self,
        target: &'a Target,
        _restored: &'a JobResult,
        _owner_uid: u32,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(c) = container_of(target) else { return };
            if matches!(self.state(&c).await, Ok(Some(s)) if s.status == "paused") {
                if let Err(e) = self.resume(&c.handle()).await {
                    tracing::error!(container = %c.id, error = %e, "cannot resume a group's restored container");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    /// runc's `--log-format json` lines, as runc 1.1 writes them: the last error's message.
    #[test]
    fn the_last_error_of_runcs_log_is_its_reason() {
        let log = r#"{"level":"warning","msg":"a warning","time":"2026-12-06T00:55:40Z"}
{"level":"error","msg":"container does not exist","time":"2026-12-06T00:55:40Z"}
not json"#;
        assert_eq!(
            super::runc_error(log).as_deref(),
            Some("container does not exist")
        );
        assert_eq!(super::runc_error("time=x level=error msg=text"), None);
    }
}
