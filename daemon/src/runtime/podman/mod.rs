//! Podman containers, through Podman's REST API on its Unix socket (`podman_socket`).
//!
//! Measured with Podman 4.3.1 (runc 1.1.5 as its runtime, CRIU 4.2.1):
//! - **Checkpoint** is Podman's own, exported (`POST /libpod/containers/{id}/checkpoint
//!   ?export=true&keep=true`): runc dumps the container, Podman ends it (unless
//!   `leave_running`) and records it exited and checkpointed, then answers the archive in its
//!   layout (an uncompressed tar), which ckptd unpacks into the checkpoint's directory as it
//!   streams (`archive::import_container`: CRIU's images where every target's are, Podman's
//!   `config.dump`, `spec.dump`, `ctr.log`, ... beside them). Podman answers only after the
//!   dump, so nothing of this runs while the container is frozen.
//! - Why not pause-until-durable, as for runc and Docker containers: Podman refuses to
//!   checkpoint a paused container, and a dump behind Podman's back would leave `podman ps`
//!   and Podman's own restore wrong. So the container ends when the dump does, as with
//!   `podman container checkpoint`. `keep=true` leaves Podman's own copy of the images (and
//!   CRIU's log) in the container's `checkpoint/` directory until Podman's next restore: a dump
//!   whose archive ckptd cannot store (disk full, daemon killed) restores the container from
//!   that copy at once (or at ckptd's next start), so a failed checkpoint never leaves it dead.
//! - **Restore in place** (the checkpointed container, still known to Podman): the images are
//!   linked into its `checkpoint/` directory, with the root filesystem's changes, and Podman
//!   restores it (`POST /libpod/containers/{id}/restore`): the same container id, `podman logs`
//!   continues.
//! - **Restore into a new name**, or of a container Podman no longer has: the checkpoint
//!   streamed in Podman's layout to `POST /libpod/containers/import/restore?import=true&name=`,
//!   as `podman container restore --import --name` does; the log comes along (`ctr.log`).
//! - Podman cannot pass `ext_unix_sk` or `shell_job` (its API has no such options): refused.

use std::path::{Path, PathBuf};

use ckptd_api::{Checkpoint, CheckpointOptions, ContainerRecord, JobResult, Runtime, Target};
use http_body_util::BodyExt;

use crate::archive;
use crate::engine::{BoxFuture, DumpOutput, DumpSpec, Engine, RestoreSpec, Stopped};
use crate::error::{Error, ErrorKind, Result};
use crate::{criu, sys};

mod api;
pub mod cli;

use api::{Container, PodmanApi};

/// The files of a checkpoint, besides its images, that a restore in place puts back in the
/// container's directory (Podman applies the root filesystem's changes and `/dev/shm` from
/// there).
const IN_PLACE_FILES: &[&str] = &[
    "rootfs-diff.tar",
    "deleted.files",
    "devshm-checkpoint.tar",
    "network.status",
];

pub struct PodmanEngine {
    api: PodmanApi,
    /// Podman's CLI (`podman_path`, or `podman` in PATH), the exporter when it is the service's
    /// Podman (`cli`).
    cli_path: Option<PathBuf>,
    /// Whether it is the service's Podman, asked once (Podman's `/info` takes 0.1 s) and again
    /// after Podman refused a checkpoint: None until asked.
    exporter: tokio::sync::Mutex<Option<Option<std::sync::Arc<cli::Cli>>>>,
    criu: std::sync::Arc<criu::Criu>,
}

/// The name or id of a Podman target.
fn podman_id(t: &Target) -> Result<&str> {
    match t {
        Target::Container {
            id, root, bundle, ..
        } => {
            if root.is_some() || bundle.is_some() {
                return Err(Error::invalid(
                    "a Podman target is {\"kind\":\"container\",\"runtime\":\"podman\",\"id\":NAME_OR_ID}; \
                     \"root\" and \"bundle\" are runc's",
                ));
            }
            // Podman's own rule for names ([a-zA-Z0-9][a-zA-Z0-9_.-]*); ids are hex.
            if !crate::runtime::runc::valid_container_id(id) || id.contains('+') {
                return Err(Error::invalid(format!(
                    "invalid Podman container name or id {id:?}: Podman's names are letters, \
                     digits, '_', '.' and '-', starting with a letter or digit"
                )));
            }
            Ok(id)
        }
        _ => Err(Error::internal(
            "a process or group target reached the Podman engine",
        )),
    }
}

/// The id of the container a checkpoint was taken of (its record's `podman:<id>`).
fn checkpointed_id(cp: &Checkpoint) -> Option<&str> {
    cp.container
        .as_ref()
        .and_then(|c| c.bundle.strip_prefix("podman:"))
}

/// Where a restore goes.
enum Destination {
    /// The checkpointed container itself, stopped: restored in place.
    InPlace(Container),
    /// A name Podman does not know: created from the checkpoint (import).
    New(String),
}

impl PodmanEngine {
    pub fn new(
        socket: PathBuf,
        cli_path: Option<PathBuf>,
        criu: std::sync::Arc<criu::Criu>,
    ) -> Self {
        Self {
            api: PodmanApi::new(socket),
            cli_path,
            exporter: tokio::sync::Mutex::new(None),
            criu,
        }
    }

    /// Podman's CLI, when it is the service's Podman (`cli::Cli::for_service`): it exports on a
    /// pipe, where the API's export writes a temporary file first. None: the API exports.
    async fn cli(&self) -> Option<std::sync::Arc<cli::Cli>> {
        let mut known = self.exporter.lock().await;
        if let Some(cli) = &*known {
            return cli.clone();
        }
        let Some(program) = &self.cli_path else {
            tracing::info!("no Podman CLI (podman_path, or podman in PATH): Podman's API exports checkpoints, through a temporary file");
            return known.insert(None).clone();
        };
        let why = match (cli::version(program).await, self.api.info().await) {
            (Err(why), _) => why,
            // Podman unreachable now: asked again next time.
            (Ok(_), Err(_)) => return None,
            (Ok(v), Ok(info)) => match cli::Cli::for_service(program, &v, &info) {
                Ok(cli) => return known.insert(Some(std::sync::Arc::new(cli))).clone(),
                Err(why) => why,
            },
        };
        tracing::info!(why = %why, "Podman's CLI is not the service's Podman: Podman's API exports checkpoints, through a temporary file");
        known.insert(None).clone()
    }

    /// Podman's checkpoint of `c`, exported into `dir` by the CLI on a pipe, or else by the
    /// API. The outer error is Podman's (its checkpoint failed), the inner whether the archive
    /// was stored.
    async fn export(
        &self,
        c: &Container,
        flags: api::Flags<'_>,
        dir: &Path,
    ) -> std::result::Result<Result<archive::container::Foreign>, Error> {
        if let Some(cli) = self.cli().await {
            tracing::info!(container = %c.name, "Podman's CLI exports the checkpoint on a pipe");
            return cli.checkpoint(&c.id, flags, dir).await;
        }
        tracing::info!(container = %c.name, "Podman's API exports the checkpoint");
        let body = self.api.checkpoint(&c.id, flags).await?;
        Ok(unpack(body, dir).await)
    }

    /// Podman as `/v1/info` shows it: reachable, or why not.
    async fn describe(&self) -> ckptd_api::RuntimeInfo {
        let (version, error) = match self.api.version().await {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.message)),
        };
        ckptd_api::RuntimeInfo {
            name: "podman".into(),
            path: self.api.socket().display().to_string(),
            version,
            reachable: error.is_none(),
            error,
        }
    }

    async fn running(&self, id: &str) -> Result<Container> {
        let c = self.api.inspect(id).await?;
        if !c.state.running || c.state.paused {
            return Err(crate::runtime::container::not_running(
                "podman",
                id,
                &c.state.status,
                c.state.paused,
            ));
        }
        Ok(c)
    }

    async fn dump_container(&self, spec: DumpSpec<'_>) -> Result<DumpOutput> {
        self.criu.usable()?;
        let id = podman_id(spec.target)?;
        let o = &spec.options;
        self.check_options(spec.target, o)?;
        let c = self.running(id).await?;
        let flags = [
            ("keep", true),
            ("leaveRunning", o.leave_running),
            ("tcpEstablished", o.tcp_established),
            ("fileLocks", o.file_locks),
        ];
        let podman_log = c.static_dir.join("dump.log");
        let log = spec.images.path().join(spec.log_name);
        let started = std::time::SystemTime::now();
        let stored = match self.export(&c, &flags, &spec.images.path()).await {
            Ok(stored) => stored,
            Err(e) => {
                // Podman refused before runc ran (its dump.log, where runc has CRIU write, is
                // not this attempt's): Podman's own error, never read as CRIU's.
                let ran = std::fs::metadata(&podman_log)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= started);
                if !ran {
                    // Perhaps no longer the service's Podman: asked again next time.
                    *self.exporter.lock().await = None;
                    let kind = match e.kind {
                        ErrorKind::CriuFailed => ErrorKind::Unavailable,
                        k => k,
                    };
                    return Err(Error::new(
                        kind,
                        format!(
                            "Podman could not checkpoint container {}: {}",
                            c.name, e.message
                        ),
                    )
                    .with_hint(format!(
                        "Podman refused before its runtime ran; `podman container checkpoint {}` \
                         by hand says the same",
                        c.name
                    )));
                }
                // Podman's error names runc's failure; CRIU's own words are in its log.
                let text = std::fs::read_to_string(&podman_log).unwrap_or_default();
                let _ = std::fs::write(&log, &text);
                return Err(criu::log::failure(
                    &format!("Podman could not checkpoint container {}", c.name),
                    &text,
                    &[],
                    &e.message,
                    &log,
                ));
            }
        };
        // CRIU's log of the dump, from where Podman had runc write it.
        if let Err(e) = std::fs::copy(&podman_log, &log) {
            tracing::warn!(container = %c.name, error = %e, "cannot copy CRIU's dump log from Podman's directory");
        }
        if let Err(e) = stored {
            if o.leave_running {
                return Err(e);
            }
            // Podman ended the container: bring it back from Podman's own copy.
            let back = self.api.restore(&c.id, &restore_flags(o)).await;
            return Err(match back {
                Ok(_) => e.with_hint(format!(
                    "container {} runs again, restored from Podman's own copy of the images",
                    c.name
                )),
                Err(r) => {
                    tracing::error!(container = %c.name, error = %r, "cannot restore the container from Podman's copy after a failed dump");
                    e.with_hint(format!(
                        "Podman ended container {} and could not restore it ({}); try: podman \
                         container restore {}",
                        c.name, r.message, c.name
                    ))
                }
            });
        }
        Ok(DumpOutput {
            stats: criu::dump_stats(&spec.images.path()),
            stopped: Stopped::Nothing,
            container: Some(ContainerRecord {
                bundle: format!("podman:{}", c.id),
                config_sha256: String::new(),
                terminal: c.config.tty,
                stdio: crate::runtime::runc::recorded_stdio(&spec.images.path()),
            }),
            criu_config: None,
            terminal: None,
            members: Vec::new(),
        })
    }

    /// Where a restore of `cp` goes: in place when Podman still has the checkpointed container,
    /// else a new container of that name (which needs Podman's configuration in the checkpoint).
    async fn destination(&self, cp: &Checkpoint, into: Option<&Target>) -> Result<Destination> {
        let name = podman_id(into.unwrap_or(&cp.target))?;
        match self.api.inspect(name).await {
            Ok(c) => {
                let same = checkpointed_id(cp) == Some(c.id.as_str());
                if !same {
                    return Err(Error::conflict(format!(
                        "Podman already has a container named {name:?}, not the one checkpoint {} \
                         was taken of",
                        cp.name
                    ))
                    .with_advice(ckptd_api::Advice::FreeContainerName {
                        command: format!("podman rm {name}"),
                    }));
                }
                if c.state.running || c.state.paused {
                    return Err(Error::conflict(format!(
                        "Podman container {name} is {}; a restore in place needs it stopped",
                        c.state.status
                    ))
                    .with_advice(ckptd_api::Advice::FreeContainerName {
                        command: format!("podman stop {name}"),
                    }));
                }
                Ok(Destination::InPlace(c))
            }
            Err(e) if e.kind == ErrorKind::TargetUnavailable => {
                // Images still in a remote are checked once a restore that pulls has them.
                if cp.is_local() && !archive::container::has_engine_files(Path::new(&cp.dir)) {
                    return Err(Error::target_unavailable(format!(
                        "Podman has no container {name:?}, and checkpoint {} does not hold Podman's \
                         configuration of the container (config.dump, spec.dump) to create one",
                        cp.name
                    )));
                }
                Ok(Destination::New(name.to_owned()))
            }
            Err(e) => Err(e),
        }
    }

    /// After an import into `name` failed (or was stopped): the container Podman made for it,
    /// created since `began` and not running, is removed, as Podman leaves it (a retry into the
    /// same name was refused as taken). Podman holds a name from the container's creation, so a
    /// container of that name made since the import began is the import's.
    async fn remove_failed_import(&self, name: &str, began: chrono::DateTime<chrono::Utc>) {
        let Ok(c) = self.api.inspect(name).await else {
            return;
        };
        if c.state.running || c.created.is_none_or(|t| t < began) {
            return;
        }
        match self.api.remove(&c.id).await {
            Ok(()) => {
                tracing::info!(
                    container = name,
                    "removed the container a failed import left"
                )
            }
            Err(e) => {
                tracing::warn!(container = name, error = %e.message, "cannot remove the container a failed import left")
            }
        }
    }

    async fn restore_container(&self, spec: RestoreSpec<'_>) -> Result<JobResult> {
        self.criu.usable()?;
        let cp = spec.checkpoint;
        let flags = restore_flags(&spec.options);
        let restored = match self.destination(cp, spec.into).await? {
            Destination::InPlace(c) => {
                put_back(&spec.images.path(), &c.static_dir)?;
                let restore = self.api.restore(&c.id, &flags);
                stoppable(restore, &spec.stop, &c.name).await.map_err(|e| {
                    if matches!(e.kind, ErrorKind::Cancelled | ErrorKind::Timeout) {
                        return e;
                    }
                    let podman_log = c.static_dir.join("restore.log");
                    let log = spec.images.path().join(spec.log_name);
                    let text = std::fs::read_to_string(&podman_log).unwrap_or_default();
                    let _ = std::fs::write(&log, &text);
                    criu::log::failure(
                        &format!(
                            "Podman could not restore container {} from checkpoint {}",
                            c.name, cp.name
                        ),
                        &text,
                        &[],
                        &e.message,
                        &log,
                    )
                })?
            }
            Destination::New(name) => {
                let dir = spec.images.path().to_owned();
                let archive = archive::stream(move |w| archive::container::write(&dir, &[], w));
                let import = self.api.import(&name, &flags, archive);
                let began = chrono::Utc::now();
                let imported = stoppable(import, &spec.stop, &name).await;
                if imported.is_err() {
                    self.remove_failed_import(&name, began).await;
                }
                imported.map_err(|e| {
                    if matches!(e.kind, ErrorKind::Cancelled | ErrorKind::Timeout) {
                        return e;
                    }
                    Error::new(
                        e.kind,
                        format!(
                            "Podman could not create container {name} from checkpoint {}: {}",
                            cp.name, e.message
                        ),
                    )
                })?
            }
        };
        let now = self.api.inspect(&restored.id).await?;
        Ok(JobResult {
            pid: Some(now.state.pid),
            container: Some(now.name),
            output_log: None,
            ..Default::default()
        })
    }
}

/// Podman's restore (in place, or an import) of container `name`, stopped by `stop`
/// (`container::stoppable`): Podman's API cannot stop one, and Podman waits for runc, which
/// waits for CRIU. Podman's runc restore is found as a child of the container's conmon
/// (`conmon ... -n NAME`): an import's container id is not known before Podman makes it.
async fn stoppable<T>(
    work: impl std::future::Future<Output = Result<T>>,
    stop: &crate::engine::StopSignal,
    name: &str,
) -> Result<T> {
    crate::runtime::container::stoppable(
        work,
        stop,
        &format!("Podman's restore of container {name}"),
        || crate::runtime::container::end_runc_restores(&runc_restores_of(name, None)),
    )
    .await
}

/// The full id of Podman's running container `name` (its name, its id, or a unique prefix of
/// its id, as Podman looks one up), read from the command lines of the containers' conmons
/// (`-n NAME`, `-c ID`) without asking Podman, which answers nothing of a container while its
/// checkpoint runs.
fn running_id(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let running = std::sync::Mutex::new(Vec::new());
    crate::sys::root_commands(|args| {
        let of = |flag: &str| {
            args.windows(2)
                .find(|w| w[0] == flag.as_bytes())
                .map(|w| String::from_utf8_lossy(w[1]).into_owned())
        };
        if let (true, Some(n), Some(c)) = (is_conmon(args), of("-n"), of("-c")) {
            running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((n, c));
        }
        false
    });
    let running = running
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let exact = running.iter().find(|(n, c)| n == name || c == name);
    let prefixed: Vec<_> = running
        .iter()
        .filter(|(_, c)| c.starts_with(name))
        .collect();
    exact
        .or((prefixed.len() == 1).then(|| prefixed[0]))
        .map(|(_, c)| c.clone())
}

/// The runc restores of Podman's container `name`, or of the container whose full id is `id`:
/// children of its conmon, which Podman starts with the container's name (`-n NAME`) and id
/// (`-c ID`).
fn runc_restores_of(name: &str, id: Option<&str>) -> Vec<crate::sys::TaskId> {
    crate::runtime::container::runcs_under("restore", None, |args| {
        is_conmon(args)
            && (crate::sys::has_arg(args, "-n", name.as_bytes())
                || id.is_some_and(|id| crate::sys::has_arg(args, "-c", id.as_bytes())))
    })
}

/// Whether `args` are a conmon's, the process Podman starts to watch each of its containers.
fn is_conmon(args: &[&[u8]]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(args[0]))
        .file_name()
        .is_some_and(|n| n == "conmon")
}

fn restore_flags(o: &ckptd_api::CheckpointOptions) -> [(&'static str, bool); 2] {
    [
        ("tcpEstablished", o.tcp_established),
        ("fileLocks", o.file_locks),
    ]
}

/// Streams Podman's answer into the checkpoint's directory (`archive::import_container`).
async fn unpack(body: hyper::body::Incoming, dir: &Path) -> Result<archive::container::Foreign> {
    use futures_util::TryStreamExt;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let dir = dir.to_owned();
    stored(
        tokio::task::spawn_blocking(move || archive::import_container(reader, &dir, u64::MAX))
            .await,
    )
}

/// What an unpacking task (`archive::import_container` of Podman's export, from the API or the
/// CLI) came to, in the dump's words.
fn stored(
    joined: std::result::Result<Result<archive::container::Foreign>, tokio::task::JoinError>,
) -> Result<archive::container::Foreign> {
    joined
        .map_err(|e| Error::internal(format!("the checkpoint's unpacking failed: {e}")))?
        .map_err(|e| {
            Error::new(
                e.kind,
                format!("cannot store Podman's checkpoint archive: {}", e.message),
            )
        })
}

/// Puts a checkpoint's images and root filesystem changes where Podman restores a container in
/// place from: its `checkpoint/` directory (replaced whole) and its own directory.
fn put_back(images: &Path, container_dir: &Path) -> Result<()> {
    let there = container_dir.join("checkpoint");
    if there.exists() {
        sys::remove_dir_tree(&there)
            .map_err(|e| Error::io("cannot replace Podman's checkpoint directory", &there, &e))?;
    }
    std::fs::create_dir(&there).map_err(|e| Error::io("cannot create", &there, &e))?;
    let files = archive::container::layout_files(images)
        .map_err(|e| Error::io("cannot read the checkpoint", images, &e))?;
    for (file, path) in files {
        let from = images.join(&file);
        if let Some(image) = path.strip_prefix("checkpoint/") {
            crate::runtime::container::link_or_copy_file(&from, &there.join(image))?;
        }
    }
    for f in IN_PLACE_FILES {
        let to = container_dir.join(f);
        let from = images.join(f);
        if from.is_file() {
            crate::runtime::container::link_or_copy_file(&from, &to)?;
        } else {
            // Not Podman's leftover from another checkpoint.
            let _ = std::fs::remove_file(&to);
        }
    }
    Ok(())
}

impl Engine for PodmanEngine {
    fn version(&self) -> Option<String> {
        self.criu.version()
    }
    fn runtimes(&self) -> BoxFuture<'_, Vec<ckptd_api::RuntimeInfo>> {
        Box::pin(async move { vec![self.describe().await] })
    }
    /// Whether Podman (reachable now) knows a container by this name or id.
    fn knows<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.api.inspect(id).await.is_ok() })
    }

    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.running(podman_id(target)?).await.map(|_| ()) })
    }

    fn check_options(&self, _target: &Target, o: &CheckpointOptions) -> Result<()> {
        if o.ext_unix_sk || o.shell_job {
            return Err(Error::invalid(
                "Podman's checkpoint cannot pass ext_unix_sk or shell_job; leave them out for \
                 Podman containers",
            ));
        }
        Ok(())
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
                    "console_socket is runc's; Podman attaches a restored container's terminal itself",
                ));
            }
            if let Some(t) = into {
                if !matches!(
                    t,
                    Target::Container {
                        runtime: Runtime::Podman,
                        ..
                    }
                ) {
                    return Err(Error::invalid(format!(
                        "checkpoint {} is of a Podman container; restore it into a Podman \
                         container ({{\"kind\":\"container\",\"runtime\":\"podman\",\"id\":NAME}})",
                        checkpoint.name
                    )));
                }
            }
            self.destination(checkpoint, into).await.map(|_| ())
        })
    }

    fn dump_estimate<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let c = self.running(podman_id(target)?).await?;
            // What lands in the checkpoint's directory; Podman's own copy of the images and its
            // temporary archive are written into Podman's storage and its temporary directory.
            Ok(sys::tree_dump_estimate(c.state.pid))
        })
    }

    fn dump<'a>(&'a self, spec: DumpSpec<'a>) -> BoxFuture<'a, Result<DumpOutput>> {
        Box::pin(self.dump_container(spec))
    }

    fn restore<'a>(&'a self, spec: RestoreSpec<'a>) -> BoxFuture<'a, Result<JobResult>> {
        Box::pin(self.restore_container(spec))
    }

    /// Podman itself ended the container (or left it running): nothing is left to do.
    fn release<'a>(&'a self, _stopped: &'a Stopped, _kill: bool) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn recover_dump<'a>(
        &'a self,
        cp: &'a Checkpoint,
        _images: &'a crate::sys::Folder,
    ) -> BoxFuture<'a, Option<DumpOutput>> {
        Box::pin(async move {
            // The dump is dropped; a container Podman ended for it runs again, from Podman's
            // own copy of the images.
            let id = podman_id(&cp.target).ok()?;
            let c = self.api.inspect(id).await.ok()?;
            if cp.options.leave_running || c.state.running || !c.state.checkpointed {
                return None;
            }
            tracing::warn!(container = %c.name, "restoring a Podman container an interrupted checkpoint ended");
            if let Err(e) = self.api.restore(&c.id, &restore_flags(&cp.options)).await {
                tracing::error!(container = %c.name, error = %e, "cannot restore it; try: podman container restore");
            }
            None
        })
    }

    fn remove_left_restore<'a>(
        &'a self,
        cp: &'a Checkpoint,
        into: Option<&'a Target>,
        started: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // A restore in place finds a container made before the job: left as it is.
            if let Ok(name) = podman_id(into.unwrap_or(&cp.target)) {
                self.remove_failed_import(name, started).await;
            }
        })
    }

    fn left_runc_checkpoints<'a>(
        &'a self,
        cp: &'a Checkpoint,
    ) -> BoxFuture<'a, Option<crate::engine::LeftRuncs>> {
        Box::pin(async move {
            let id = running_id(podman_id(&cp.target).ok()?)?;
            let find = move || {
                crate::sys::root_commands(|args| {
                    crate::runtime::container::is_runc(args, "checkpoint", Some(&id))
                })
            };
            Some(Box::new(find) as crate::engine::LeftRuncs)
        })
    }

    fn left_runc_restores<'a>(
        &'a self,
        cp: &'a Checkpoint,
        into: Option<&'a Target>,
    ) -> BoxFuture<'a, Option<crate::engine::LeftRuncs>> {
        Box::pin(async move {
            // The name the job was given, or for a restore in place (which keeps the container's
            // id) the checkpointed container's id: the target may name it by its id.
            let name = podman_id(into.unwrap_or(&cp.target)).ok()?.to_owned();
            let id = into
                .is_none()
                .then(|| checkpointed_id(cp).map(str::to_owned))
                .flatten();
            let find = move || runc_restores_of(&name, id.as_deref());
            Some(Box::new(find) as crate::engine::LeftRuncs)
        })
    }

    fn recover_restore<'a>(
        &'a self,
        cp: &'a Checkpoint,
        into: Option<&'a Target>,
        _log_name: &'a str,
    ) -> BoxFuture<'a, Option<JobResult>> {
        Box::pin(async move {
            let id = podman_id(into.unwrap_or(&cp.target)).ok()?;
            let c = self.api.inspect(id).await.ok()?;
            super::container::restored(c.state.running, c.state.pid, &c.name)
        })
    }
}
