//! Docker containers, through the Docker Engine API on its Unix socket (`docker_socket`).
//!
//! Measured with Docker 20.10 (experimental), containerd 1.6, runc 1.1.5 and CRIU 4.2.1:
//! - Docker checkpoints a *paused* container with `Exit: false` (it stays paused) and kills a
//!   paused container. So, as for runc, a checkpoint that stops its container pauses it
//!   (`POST /containers/{id}/pause`), dumps it, makes the images durable, and only then kills it
//!   (`POST /containers/{id}/kill`): Docker records the exit, `docker ps` shows it exited. A failed
//!   dump unpauses it. Docker's own `docker checkpoint create` kills the container as soon as the
//!   dump ends, before its images are on disk.
//! - The images go to the checkpoint's own directory (`CheckpointDir`), catalogued like any other.
//! - `docker start --checkpoint-dir` answers "custom checkpointdir is not supported"; a restore
//!   links (or copies) the images into the container's own checkpoints directory under Docker's
//!   root, starts the container from them (`POST /containers/{id}/start?checkpoint=`), and removes
//!   that copy, and the one containerd unpacked and left in /tmp (`remove_unpacked_copies`). The
//!   same restores into another container the user created (`docker create`).
//! - `docker logs` continues: Docker attaches the restored container's output to its log.

use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig};
use ckptd_api::{Checkpoint, ContainerRecord, JobResult, Runtime, Target};

use super::container::{self, ContainerOps};
use crate::engine::{
    BoxFuture, ContainerHandle, DumpOutput, DumpSpec, Engine, RestoreSpec, StopSignal, Stopped,
};
use crate::error::{Error, ErrorKind, Result};
use crate::{criu, sys};

mod api;

use api::{Container, DockerApi};

pub struct DockerEngine {
    api: DockerApi,
    /// runc's state directory for Docker's containers (`<exec-root>/runtime-runc/moby`).
    runc_root: PathBuf,
    runc: Option<PathBuf>,
    criu: std::sync::Arc<criu::Criu>,
}

impl DockerEngine {
    /// Docker as `/v1/info` shows it: reachable and experimental, or why not.
    async fn describe(&self) -> ckptd_api::RuntimeInfo {
        let (version, error) = match self.api.info().await {
            Ok(i) if i.experimental => (i.version, None),
            Ok(i) => (
                i.version,
                Some(
                    "dockerd runs without experimental features, which checkpoints need: set \
                     {\"experimental\": true} in /etc/docker/daemon.json and restart dockerd"
                        .to_owned(),
                ),
            ),
            Err(e) => (None, Some(e.message)),
        };
        ckptd_api::RuntimeInfo {
            name: "docker".into(),
            path: self.api.socket().display().to_string(),
            version,
            reachable: error.is_none(),
            error,
        }
    }
}

/// A Docker container as the container flow names it (Docker's full id, or a name).
fn handle(id: &str) -> ContainerHandle {
    ContainerHandle {
        runtime: Runtime::Docker,
        id: id.to_owned(),
        root: None,
    }
}

fn docker_id(t: &Target) -> Result<&str> {
    match t {
        Target::Container {
            id, root, bundle, ..
        } => {
            if root.is_some() || bundle.is_some() {
                return Err(Error::invalid(
                    "a Docker target is {\"kind\":\"container\",\"runtime\":\"docker\",\"id\":NAME_OR_ID}; \
                     \"root\" and \"bundle\" are runc's",
                ));
            }
            // The same characters as runc ids; Docker itself says whether it knows the name.
            if !crate::runtime::runc::valid_container_id(id) {
                return Err(Error::invalid(format!(
                    "invalid Docker container name or id {id:?}"
                )));
            }
            Ok(id)
        }
        _ => Err(Error::internal(
            "a process or group target reached the Docker engine",
        )),
    }
}

impl DockerEngine {
    pub fn new(
        socket: PathBuf,
        runc_root: PathBuf,
        runc: Option<PathBuf>,
        criu: std::sync::Arc<criu::Criu>,
    ) -> Self {
        Self {
            api: DockerApi::new(socket),
            runc_root,
            runc,
            criu,
        }
    }

    /// The fast path: runc itself, on the container Docker runs, when runc and the container's
    /// runc state are where configured. Docker's own checkpoint goes through containerd's
    /// content store (the images tarred, hashed and unpacked again: measured 17x slower).
    fn direct_runc(&self, full_id: &str) -> Option<&Path> {
        let runc = self.runc.as_deref()?;
        self.runc_root
            .join(full_id)
            .join("state.json")
            .is_file()
            .then_some(runc)
    }

    /// Docker's own checkpoint (`Exit: false`) into `spec.images.path()`. Docker creates
    /// `<CheckpointDir>/<CheckpointID>` itself: the images land in a sub-folder and are moved up.
    async fn dump_with_docker(&self, full_id: &str, spec: &DumpSpec<'_>) -> Result<()> {
        let o = &spec.options;
        if o.tcp_established || o.ext_unix_sk || o.file_locks || o.shell_job {
            return Err(Error::invalid(format!(
                "Docker's checkpoint API cannot pass tcp_established, ext_unix_sk, file_locks or \
                 shell_job, and runc's state of container {full_id} is not under docker_runc_root"
            ))
            .with_hint("set docker_runc_root to <dockerd exec-root>/runtime-runc/moby so that ckptd runs runc itself"));
        }
        let sub = "docker";
        self.api
            .checkpoint(full_id, sub, &spec.images.path())
            .await?;
        lift(
            &spec.images.path().join(sub),
            &spec.images.path(),
            spec.log_name,
        )
    }

    /// Docker, if its checkpoints can work: reachable and in experimental mode.
    async fn info(&self) -> Result<api::DockerInfo> {
        let info = self.api.info().await?;
        if !info.experimental {
            return Err(Error::unavailable(
                "Docker is not in experimental mode, which its checkpoints need",
            )
            .with_hint(
                "add {\"experimental\": true} to /etc/docker/daemon.json and restart dockerd",
            ));
        }
        Ok(info)
    }

    async fn inspect(&self, id: &str) -> Result<Container> {
        self.api.inspect(id).await
    }

    async fn running(&self, id: &str) -> Result<Container> {
        self.info().await?;
        let c = self.inspect(id).await?;
        if !c.running || c.paused {
            let status = if c.paused { "paused" } else { &c.status };
            return Err(container::not_running("docker", id, status, c.paused));
        }
        Ok(c)
    }

    async fn dump_container(&self, spec: DumpSpec<'_>) -> Result<DumpOutput> {
        self.criu.usable()?;
        let id = docker_id(spec.target)?;
        let c = self.running(id).await?;
        // Before the pause: nothing but the dump itself happens while the container is frozen.
        if let Err(e) = self.record_config(&c.id, &spec.images.path()).await {
            // Only a restore into a new name needs it; say so, and carry on.
            tracing::warn!(container = %c.id, error = %e, "cannot record the container's configuration");
        }
        let handle = handle(&c.id);
        // `running` refused a paused container: a pause here is always ckptd's.
        let stopped = container::checkpoint(self, handle, false, &spec).await?;
        let stdio = crate::runtime::runc::recorded_stdio(&spec.images.path());
        Ok(DumpOutput {
            stats: criu::dump_stats(&spec.images.path()),
            stopped,
            container: Some(ContainerRecord {
                bundle: format!("docker:{}", c.id),
                config_sha256: String::new(),
                terminal: c.tty,
                stdio,
            }),
            criu_config: None,
            terminal: None,
            members: Vec::new(),
        })
    }

    /// Before Docker's unpause of container `id`: when Docker records it paused and runc finds it
    /// running, pauses it through runc. A CRIU that ended mid-dump without putting the freezer
    /// back (killed: a cancel, a timeout, the daemon's crash) leaves the container thawed, as CRIU
    /// thaws the cgroup once it holds the tasks, while Docker still records the pause it asked
    /// for; Docker's unpause then fails ("container not paused") and nothing Docker offers runs
    /// the container again. Once runc agrees, Docker's unpause thaws it and records it running.
    async fn agree_paused(&self, id: &str) {
        let Some(full) = self.api.full_id(id).await.ok().flatten() else {
            return;
        };
        let Some(runc) = self.direct_runc(&full) else {
            return;
        };
        let root = self.runc_root.display().to_string();
        let runc_runs = matches!(
            crate::runtime::runc::state(runc, Some(&root), &full).await,
            Ok(Some(s)) if s.status == "running"
        );
        if !runc_runs || !self.inspect(&full).await.is_ok_and(|c| c.paused) {
            return;
        }
        tracing::warn!(container = %full, "Docker records the container paused and runc finds it running (a CRIU ended mid-dump thawed it): pausing it through runc first, so that Docker's unpause runs it");
        if let Err(e) = crate::runtime::runc::simple(runc, Some(&root), &full, &["pause"]).await {
            tracing::error!(container = %full, error = %e, "cannot pause the container through runc");
        }
    }

    /// Records, next to the images, what Docker needs to create a container like the checkpointed
    /// one (from its `Config` and `HostConfig`): a restore into a name Docker does not know
    /// creates it.
    async fn record_config(&self, full_id: &str, dir: &Path) -> Result<()> {
        let v = self.api.inspect_raw(full_id).await?;
        let config = v.config.unwrap_or_default();
        let host = v.host_config.unwrap_or_default();
        // What `docker create` takes to make the same process in the same surroundings; not the
        // whole inspect output, whose Docker-filled fields (hostname, masked paths, ...) give the
        // new container mounts that the images do not expect.
        let create = ContainerCreateBody {
            image: config.image,
            cmd: config.cmd,
            entrypoint: config.entrypoint,
            env: config.env,
            working_dir: config.working_dir,
            user: config.user,
            labels: config.labels,
            tty: config.tty,
            open_stdin: config.open_stdin,
            stop_signal: config.stop_signal,
            host_config: Some(HostConfig {
                binds: host.binds,
                mounts: host.mounts,
                network_mode: host.network_mode,
                privileged: host.privileged,
                cap_add: host.cap_add,
                cap_drop: host.cap_drop,
                security_opt: host.security_opt,
                tmpfs: host.tmpfs,
                shm_size: host.shm_size,
                ..Default::default()
            }),
            ..Default::default()
        };
        let path = dir.join(CONTAINER_CONFIG);
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&create).unwrap_or_default(),
        )
        .map_err(|e| Error::io("cannot record the container's configuration", &path, &e))
    }

    /// Creates container `name` from the configuration recorded with checkpoint `cp`.
    async fn create_like(&self, cp: &Checkpoint, name: &str, log_name: &str) -> Result<()> {
        let path = Path::new(&cp.dir).join(CONTAINER_CONFIG);
        let mut body: ContainerCreateBody = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                Error::target_unavailable(format!(
                    "Docker has no container {name:?} to restore into, and checkpoint {} has no \
                     recorded configuration to create one from",
                    cp.name
                ))
                .with_hint(format!(
                    "create it first with the original's image and command: docker create --name {name} IMAGE CMD"
                ))
            })?;
        // Marked as this job's, so that a failed restore (or the restart's recovery of a killed
        // one) removes it again.
        let labels = body.labels.get_or_insert_default();
        labels.insert(container::RESTORED_FROM.into(), cp.name.clone());
        labels.insert(container::MADE_BY.into(), log_name.to_owned());
        self.api
            .create(name, body)
            .await
        .map(|_| tracing::info!(container = name, checkpoint = %cp.name, "created a Docker container to restore into"))
    }

    /// The container a restore starts: the checkpoint's own, or `into` (which must exist).
    fn destination<'a>(cp: &'a Checkpoint, into: Option<&'a Target>) -> Result<&'a str> {
        match into {
            None => docker_id(&cp.target),
            Some(t) => docker_id(t),
        }
    }

    async fn check_restore_target(
        &self,
        cp: &Checkpoint,
        into: Option<&Target>,
    ) -> Result<Option<Container>> {
        let id = Self::destination(cp, into)?;
        self.info().await?;
        let c = match self.inspect(id).await {
            Err(e)
                if into.is_some()
                    && e.kind == ErrorKind::TargetUnavailable
                    && Path::new(&cp.dir).join(CONTAINER_CONFIG).is_file() =>
            {
                // A name Docker does not know: the restore creates it like the original.
                return Ok(None);
            }
            Err(e) if into.is_some() && e.kind == ErrorKind::TargetUnavailable => {
                return Err(Error::target_unavailable(format!(
                    "Docker has no container {id:?} to restore into"
                ))
                .with_hint(format!(
                    "create it first with the original's image and command: docker create --name {id} IMAGE CMD"
                )))
            }
            r => r?,
        };
        if c.running {
            return Err(Error::conflict(format!(
                "Docker container {id} is running; a restore starts a stopped container"
            ))
            .with_advice(ckptd_api::Advice::FreeContainerName {
                command: format!("docker stop {id}"),
            }));
        }
        Ok(Some(c))
    }

    async fn restore_container(&self, spec: RestoreSpec<'_>) -> Result<JobResult> {
        self.criu.usable()?;
        let cp = spec.checkpoint;
        let c = match self.check_restore_target(cp, spec.into).await? {
            Some(c) => c,
            None => {
                let id = Self::destination(cp, spec.into)?;
                self.create_like(cp, id, spec.log_name).await?;
                let started = match self.inspect(id).await {
                    Ok(c) => self.start_from_images(&spec, &c).await,
                    Err(e) => Err(e),
                };
                if started.is_err() {
                    self.remove_made(id).await;
                }
                return started;
            }
        };
        self.start_from_images(&spec, &c).await
    }

    /// Removes container `id`, which a restore made and could not start (best effort, logged).
    async fn remove_made(&self, id: &str) {
        match self.api.remove(id).await {
            Ok(()) => {
                tracing::info!(
                    container = id,
                    "removed the Docker container a failed restore made"
                )
            }
            Err(e) => {
                tracing::warn!(container = id, error = %e, "cannot remove the Docker container a failed restore made; try: docker rm")
            }
        }
    }

    /// Starts container `c` from the checkpoint's images, through Docker.
    async fn start_from_images(&self, spec: &RestoreSpec<'_>, c: &Container) -> Result<JobResult> {
        let cp = spec.checkpoint;
        let info = self.info().await?;
        // Docker starts only from its own checkpoints directory: link the images there.
        let (name, there) = docker_copy(&info.root_dir, &c.id, cp);
        let log = spec.images.path().join(spec.log_name);
        let copied = container::link_or_copy(&spec.images.path(), &there);
        let started = match copied {
            Ok(()) => {
                let _one = RUNC_CONF_LOCK.lock().await;
                let started = match RuncConf::apply(&spec.options, &log) {
                    // `_conf` puts runc.conf back when the start has answered.
                    Ok(_conf) => self.start_stoppable(&c.id, &name, &spec.stop).await,
                    Err(e) => Err(e),
                };
                // While the lock is held: no other restore of ckptd's is being unpacked.
                let images = spec.images.path();
                let _ = tokio::task::spawn_blocking(move || {
                    remove_unpacked_copies(Path::new(CONTAINERD_TMP), &images)
                })
                .await;
                started
            }
            Err(e) => Err(e),
        };
        let _ = sys::remove_dir_tree(&there);
        if let Err(e) = started {
            if matches!(e.kind, ErrorKind::Cancelled | ErrorKind::Timeout) {
                return Err(e);
            }
            // CRIU's own words, from the log it wrote where ckptd asked.
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(criu::log::failure(
                &format!(
                    "Docker could not start container {} from checkpoint {}",
                    c.name, cp.name
                ),
                &text,
                &[],
                &e.message,
                &log,
            ));
        }
        let now = self.inspect(&c.id).await?;
        Ok(JobResult {
            pid: Some(now.pid),
            container: Some(now.name.clone()),
            output_log: None,
            ..Default::default()
        })
    }

    /// Docker's start of container `id` from its checkpoint `name`, stopped by `stop`
    /// (`container::stoppable`): Docker's API has no way to stop a start, and Docker waits for
    /// runc, which waits for CRIU. Docker's runc restore is found by its state directory
    /// (`docker_runc_root`) and the container's id.
    async fn start_stoppable(&self, id: &str, name: &str, stop: &StopSignal) -> Result<()> {
        container::stoppable(
            self.api.start_from_checkpoint(id, name),
            stop,
            &format!("Docker's start of container {id} from a checkpoint"),
            || container::end_runc_restores(&runc_restores_of(&self.runc_root, id)),
        )
        .await
    }
}

/// The runc restores of Docker's container `id` (its full id, runc's name for it), by runc's
/// command line: root's processes only, under Docker's runc root.
fn runc_restores_of(runc_root: &Path, id: &str) -> Vec<sys::TaskId> {
    use std::os::unix::ffi::OsStrExt;
    sys::root_commands(|args| {
        container::is_runc(args, "restore", Some(id))
            && sys::has_arg(args, "--root", runc_root.as_os_str().as_bytes())
    })
}

/// Where a restore of `cp` into container `id` puts the images for Docker to start from (Docker
/// takes only a name in the container's own checkpoints directory): that name and the path.
fn docker_copy(root_dir: &Path, id: &str, cp: &Checkpoint) -> (String, PathBuf) {
    let name = format!("ckptd-{}", cp.id.simple());
    let there = root_dir
        .join("containers")
        .join(id)
        .join("checkpoints")
        .join(&name);
    (name, there)
}

/// Where containerd unpacks a checkpoint Docker starts a container from: its `XDG_RUNTIME_DIR`,
/// else its `TMPDIR`, else /tmp (Go's `os.MkdirTemp`); a containerd run by dockerd or systemd
/// has neither set.
const CONTAINERD_TMP: &str = "/tmp";

/// The prefix of the directory containerd unpacks a checkpoint into.
const UNPACKED_PREFIX: &str = "ctrd-checkpoint";

/// Removes the copies of the checkpoint at `images` that containerd unpacked in `tmp`. Docker
/// hands containerd the checkpoint as a tar in its content store; containerd 1.6 unpacks it into
/// a new `ctrd-checkpoint*` directory for runc's `--image-path` and never removes it
/// (containerd#10166): every restore through Docker left a copy of the container's memory,
/// secrets included, in /tmp for good (113 of them on this machine after a day of tests). A copy
/// is known as the checkpoint's by being root's own private directory (0700, as containerd makes
/// it; /tmp is sticky, so no other user can put one there or rename it) holding the
/// checkpoint's `inventory.img` and `pstree.img`, byte for byte. It is garbage once runc's
/// restore has ended: it runs within one Docker restore of ckptd's at a time (`RUNC_CONF_LOCK`),
/// or in the restart's recovery, before any restore. Returns how many were removed.
fn remove_unpacked_copies(tmp: &Path, images: &Path) -> usize {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const SMALL: u64 = 1 << 20;
    let read = |dir: &Path, name: &str| -> Option<Vec<u8>> {
        let f = sys::open_regular(&dir.join(name)).ok()?;
        let mut d = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, SMALL + 1), &mut d).ok()?;
        (d.len() as u64 <= SMALL).then_some(d)
    };
    let ours: Vec<_> = ["inventory.img", "pstree.img"]
        .iter()
        .map(|n| read(images, n))
        .collect();
    if ours.iter().any(Option::is_none) {
        return 0;
    }
    // A /tmp others can write without the sticky bit could have its entries renamed under us.
    let sticky = std::fs::symlink_metadata(tmp)
        .is_ok_and(|m| m.is_dir() && (m.mode() & 0o1000 != 0 || m.mode() & 0o022 == 0));
    let Some(entries) = sticky.then(|| std::fs::read_dir(tmp).ok()).flatten() else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(UNPACKED_PREFIX) {
            continue;
        }
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let private = md.is_dir() && md.uid() == 0 && md.permissions().mode() & 0o077 == 0;
        if !private {
            continue;
        }
        let same = ["inventory.img", "pstree.img"]
            .iter()
            .zip(&ours)
            .all(|(n, o)| read(&path, n) == *o);
        if !same {
            continue;
        }
        match sys::remove_dir_tree(&path) {
            Ok(()) => {
                removed += 1;
                tracing::info!(path = %path.display(), "removed the copy of a checkpoint's images containerd unpacked for Docker's start and left (containerd#10166)");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the copy of a checkpoint's images containerd left; remove it by hand")
            }
        }
    }
    removed
}

/// The checkpointed container's Docker configuration, recorded next to its images.
const CONTAINER_CONFIG: &str = "docker-container.json";

/// Marks the lines ckptd adds to runc.conf, so that a crash in between is undone at start.
const CONF_MARK: &str = "# ckptd: for one Docker restore; removed when it ends";

/// One Docker restore at a time may change runc.conf.
static RUNC_CONF_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// CRIU options for a runc that ckptd does not run: Docker restores through containerd's runc,
/// whose options Docker cannot set, and runc hands CRIU `/etc/criu/runc.conf` (unless the
/// container has an `org.criu.config` annotation). For the length of the start, ckptd appends the
/// checkpoint's options there, and `log-file` in the checkpoint's directory (containerd deletes
/// its own copy of CRIU's log on failure, leaving users with "criu failed: type NOTIFY errno 0"),
/// one restore at a time, and then puts the file back as it was. Another runc restore on the
/// host in that moment would see the same options and log there.
struct RuncConf {
    path: PathBuf,
    before: Option<String>,
}

impl RuncConf {
    fn apply(options: &ckptd_api::CheckpointOptions, log: &Path) -> Result<RuncConf> {
        let mut lines = vec![format!("log-file {}", log.display())];
        for (on, flag) in [
            (options.tcp_established, "tcp-established"),
            (options.ext_unix_sk, "ext-unix-sk"),
            (options.file_locks, "file-locks"),
        ] {
            if on {
                lines.push(flag.to_owned());
            }
        }
        let path = PathBuf::from(crate::runtime::runc::RUNC_CONF);
        let before = std::fs::read_to_string(&path).ok();
        let mut text = before.clone().unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(CONF_MARK);
        text.push('\n');
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, &e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io("cannot write", &path, &e))?;
        Ok(RuncConf { path, before })
    }

    /// Undoes what a crashed daemon left in runc.conf (at start).
    pub fn recover() {
        let path = Path::new(crate::runtime::runc::RUNC_CONF);
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(i) = text.find(CONF_MARK) {
                tracing::warn!(path = %path.display(), "removing CRIU options an interrupted Docker restore left");
                let kept = &text[..i];
                let _ = if kept.is_empty() {
                    std::fs::remove_file(path)
                } else {
                    std::fs::write(path, kept)
                };
            }
        }
    }
}

impl Drop for RuncConf {
    fn drop(&mut self) {
        let r = match &self.before {
            Some(t) => std::fs::write(&self.path, t),
            None => std::fs::remove_file(&self.path),
        };
        if let Err(e) = r {
            tracing::error!(path = %self.path.display(), error = %e, "cannot put runc.conf back");
        }
    }
}

pub fn recover_runc_conf() {
    RuncConf::recover();
}

/// Moves Docker's image files from `sub` up into `dir` (and its dump log to `log_name`).
fn lift(sub: &Path, dir: &Path, log_name: &str) -> Result<()> {
    let entries =
        std::fs::read_dir(sub).map_err(|e| Error::io("cannot read Docker's images", sub, &e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io("cannot read Docker's images", sub, &e))?;
        let name = e.file_name();
        let to = if name == "dump.log" {
            dir.join(log_name)
        } else {
            dir.join(&name)
        };
        std::fs::rename(e.path(), &to)
            .map_err(|err| Error::io("cannot move an image", &to, &err))?;
    }
    std::fs::remove_dir(sub).map_err(|e| Error::io("cannot remove", sub, &e))
}

impl DockerEngine {
    /// The dump, with runc itself when it can (the fast path), else through Docker's API; a
    /// failure that CRIU's log does not already explain is explained from it here.
    async fn dump_leaving_running(&self, c: &ContainerHandle, spec: &DumpSpec<'_>) -> Result<()> {
        let dumped = match self.direct_runc(&c.id) {
            Some(runc) => {
                let root = self.runc_root.display().to_string();
                let what = format!(
                    "CRIU (through runc) could not checkpoint Docker container {}",
                    c.id
                );
                crate::runtime::runc::checkpoint_leaving_running(
                    runc,
                    Some(&root),
                    &c.id,
                    spec,
                    what,
                )
                .await
            }
            None => self.dump_with_docker(&c.id, spec).await,
        };
        match dumped {
            // runc's failure, already explained from CRIU's log; a refused option; or the job's
            // cancel or timeout, which stopped CRIU (explained again from CRIU's log, a cancel
            // read as a dump that could not finish writing: `insufficient_storage`).
            Err(e)
                if e.details.contains_key("log_tail")
                    || matches!(
                        e.kind,
                        ErrorKind::InvalidRequest | ErrorKind::Cancelled | ErrorKind::Timeout
                    ) =>
            {
                Err(e)
            }
            Err(e) => {
                let log = spec.images.path().join(spec.log_name);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                Err(criu::log::failure(
                    &format!("Docker could not checkpoint container {}", c.id),
                    &text,
                    &[],
                    &e.message,
                    &log,
                ))
            }
            Ok(()) => Ok(()),
        }
    }
}

impl ContainerOps for DockerEngine {
    fn pause<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.api.pause(&c.id))
    }

    fn resume<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.agree_paused(&c.id).await;
            self.api.unpause(&c.id).await
        })
    }

    /// Through Docker, which records the exit (`docker ps -a`: Exited (137)).
    fn end<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.api.kill(&c.id))
    }

    fn is_paused<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, bool> {
        Box::pin(async move { matches!(self.inspect(&c.id).await, Ok(j) if j.paused) })
    }

    fn dump<'a>(
        &'a self,
        c: &'a ContainerHandle,
        spec: &'a DumpSpec<'a>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.dump_leaving_running(c, spec))
    }
}

impl Engine for DockerEngine {
    fn version(&self) -> Option<String> {
        self.criu.version()
    }
    fn runtimes(&self) -> BoxFuture<'_, Vec<ckptd_api::RuntimeInfo>> {
        Box::pin(async move { vec![self.describe().await] })
    }
    /// Whether Docker (reachable now) knows a container by this name or id.
    fn knows<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.api.inspect_raw(id).await.is_ok() })
    }

    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let id = docker_id(target)?;
            self.running(id).await.map(|_| ())
        })
    }

    fn check_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        console_socket: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if console_socket.is_some() {
                return Err(Error::invalid(
                    "console_socket is runc's; Docker attaches a restored container's terminal itself",
                ));
            }
            self.check_restore_target(checkpoint, into)
                .await
                .map(|_| ())
        })
    }

    fn dump_estimate<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let c = self.running(docker_id(target)?).await?;
            Ok(sys::tree_dump_estimate(c.pid))
        })
    }

    fn dump<'a>(&'a self, spec: DumpSpec<'a>) -> BoxFuture<'a, Result<DumpOutput>> {
        Box::pin(self.dump_container(spec))
    }

    fn restore<'a>(&'a self, spec: RestoreSpec<'a>) -> BoxFuture<'a, Result<JobResult>> {
        Box::pin(self.restore_container(spec))
    }

    fn release<'a>(&'a self, stopped: &'a Stopped, kill: bool) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            container::release(self, stopped, kill).await;
        })
    }

    fn recover_dump<'a>(
        &'a self,
        cp: &'a Checkpoint,
        _images: &'a crate::sys::Folder,
    ) -> BoxFuture<'a, Option<DumpOutput>> {
        Box::pin(async move {
            // As for runc: the dump is dropped, and a container ckptd had paused runs again.
            if let Ok(id) = docker_id(&cp.target) {
                let handle = handle(id);
                container::recover(self, &handle, cp.options.leave_running).await;
            }
            None
        })
    }

    fn left_runc_restores<'a>(
        &'a self,
        cp: &'a Checkpoint,
        into: Option<&'a Target>,
    ) -> BoxFuture<'a, Option<crate::engine::LeftRuncs>> {
        Box::pin(async move {
            let id = self
                .api
                .full_id(Self::destination(cp, into).ok()?)
                .await
                .ok()??;
            let root = self.runc_root.clone();
            let find = move || runc_restores_of(&root, &id);
            Some(Box::new(find) as crate::engine::LeftRuncs)
        })
    }

    fn recover_restore<'a>(
        &'a self,
        cp: &'a Checkpoint,
        into: Option<&'a Target>,
        log_name: &'a str,
    ) -> BoxFuture<'a, Option<JobResult>> {
        Box::pin(async move {
            // The copy containerd unpacked for runc (`remove_unpacked_copies`), whether or not
            // the container is still there. (One containerd unpacks after this ran, the start
            // going on without the daemon, is removed by the checkpoint's next restore.)
            let images = PathBuf::from(&cp.dir);
            let _ = tokio::task::spawn_blocking(move || {
                remove_unpacked_copies(Path::new(CONTAINERD_TMP), &images)
            })
            .await;
            let id = Self::destination(cp, into).ok()?;
            let c = self.inspect(id).await.ok()?;
            // The images a killed restore linked into Docker's checkpoints directory (process
            // memory, and a hard link keeps it after the checkpoint is deleted): the job would
            // have removed them once Docker's start answered.
            if let Ok(info) = self.info().await {
                let (_, there) = docker_copy(&info.root_dir, &c.id, cp);
                if std::fs::symlink_metadata(&there).is_ok() {
                    match sys::remove_dir_tree(&there) {
                        Ok(()) => {
                            tracing::warn!(path = %there.display(), checkpoint = %cp.name, "removed the images an interrupted Docker restore left in Docker's checkpoints directory")
                        }
                        Err(e) => {
                            tracing::error!(path = %there.display(), error = %e, "cannot remove the images an interrupted Docker restore left")
                        }
                    }
                }
            }
            if !c.running && container::made_by(&c.labels, log_name) {
                // Made by this very job and not started: removed, as the job would have.
                self.remove_made(&c.id).await;
            }
            container::restored(c.running, c.pid, &c.name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for dockerd's API on a Unix socket, answering `/info` and one container's
    /// inspect as Docker 20.10 does: the error branches that a real experimental dockerd (the
    /// e2e test's) cannot show.
    async fn fake_docker(experimental: bool, state: &'static str) -> (tempfile::TempDir, PathBuf) {
        use axum::routing::get;
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("docker.sock");
        let app = axum::Router::new()
            .route(
                "/info",
                get(move || async move {
                    axum::Json(serde_json::json!({
                        "ExperimentalBuild": experimental,
                        "DockerRootDir": "/var/lib/docker"
                    }))
                }),
            )
            .route(
                "/containers/{id}/json",
                get(move |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    if id != "web" {
                        return (
                            axum::http::StatusCode::NOT_FOUND,
                            axum::Json(serde_json::json!({"message": format!("No such container: {id}")})),
                        );
                    }
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(serde_json::json!({
                            "Id": "0123abcd", "Name": "/web",
                            "State": {"Running": state == "running", "Paused": state == "paused", "Pid": 42, "Status": state},
                            "Config": {"Tty": false}
                        })),
                    )
                }),
            );
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (d, sock)
    }

    fn engine(sock: PathBuf) -> DockerEngine {
        let criu = std::sync::Arc::new(criu::Criu::new(
            criu::CriuProbe {
                path: None,
                version: None,
                check_ok: false,
                check_output: None,
                features: Default::default(),
                kernel_probe_cached: false,
            },
            4,
            None,
        ));
        DockerEngine::new(sock, PathBuf::from("/nonexistent"), None, criu)
    }

    fn docker(id: &str) -> Target {
        Target::Container {
            id: id.into(),
            runtime: ckptd_api::Runtime::Docker,
            root: None,
            bundle: None,
            namespace: None,
        }
    }

    #[tokio::test]
    async fn refusals_say_what_to_do() {
        let (_d, sock) = fake_docker(false, "running").await;
        let e = engine(sock).check_target(&docker("web")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(
            e.to_info()
                .hint()
                .unwrap()
                .contains("\"experimental\": true"),
            "{e}"
        );

        let (_d, sock) = fake_docker(true, "exited").await;
        let eng = engine(sock);
        let e = eng.check_target(&docker("web")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::TargetUnavailable);
        assert!(e.message.contains("exited"), "{e}");
        assert_eq!(e.to_info().hint(), Some("docker start web"));
        let e = eng.check_target(&docker("nope")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::TargetUnavailable);
        assert!(e.message.contains("no container \"nope\""), "{e}");

        let (_d, sock) = fake_docker(true, "paused").await;
        let e = engine(sock).check_target(&docker("web")).await.unwrap_err();
        assert_eq!(e.to_info().hint(), Some("docker unpause web"));

        let e = engine(PathBuf::from("/nonexistent/docker.sock"))
            .check_target(&docker("web"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(e.to_info().hint().unwrap().contains("docker_socket"), "{e}");
        // Docker's socket, in Docker's words: not ckptd's client advice about ckptd.
        assert_eq!(
            e.message,
            "cannot reach Docker at /nonexistent/docker.sock: no socket there (is dockerd running?)"
        );

        // runc's fields are not Docker's.
        let t = Target::Container {
            id: "web".into(),
            runtime: ckptd_api::Runtime::Docker,
            root: Some("/run/runc".into()),
            bundle: None,
            namespace: None,
        };
        assert_eq!(docker_id(&t).unwrap_err().kind, ErrorKind::InvalidRequest);
    }

    /// Only root's private copies holding the checkpoint's own inventory and tree are removed;
    /// a symlink, another user's or an open directory, another checkpoint's copy and any other
    /// name are left.
    #[test]
    fn only_containerd_s_copies_of_the_checkpoint_are_removed() {
        use std::os::unix::fs::PermissionsExt;
        let images = tempfile::tempdir().unwrap();
        std::fs::write(images.path().join("inventory.img"), b"inventory").unwrap();
        std::fs::write(images.path().join("pstree.img"), b"tree").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let copy = |name: &str, pstree: &[u8], mode: u32| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("inventory.img"), b"inventory").unwrap();
            std::fs::write(d.join("pstree.img"), pstree).unwrap();
            std::fs::write(d.join("pages-1.img"), b"memory").unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            d
        };
        let ours = copy("ctrd-checkpoint1", b"tree", 0o700);
        let again = copy("ctrd-checkpoint2", b"tree", 0o700);
        let other = copy("ctrd-checkpoint3", b"another tree", 0o700);
        let open = copy("ctrd-checkpoint4", b"tree", 0o755);
        let named = copy("checkpoint5", b"tree", 0o700);
        let link = tmp.path().join("ctrd-checkpoint6");
        std::os::unix::fs::symlink(&ours, &link).unwrap();
        let member = copy("ctrd-checkpoint7", b"tree", 0o700);
        std::os::unix::fs::chown(&member, Some(65534), Some(65534)).unwrap();

        assert_eq!(remove_unpacked_copies(tmp.path(), images.path()), 2);
        assert!(!ours.exists() && !again.exists());
        for kept in [&other, &open, &named, &member] {
            assert!(kept.join("pages-1.img").exists(), "{}", kept.display());
        }
        assert!(std::fs::symlink_metadata(&link).is_ok());
        // Images without an inventory (not a checkpoint's) remove nothing.
        std::fs::remove_file(images.path().join("inventory.img")).unwrap();
        copy("ctrd-checkpoint8", b"tree", 0o700);
        assert_eq!(remove_unpacked_copies(tmp.path(), images.path()), 0);
    }
}
