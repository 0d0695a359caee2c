//! The engines: process trees through CRIU (`process`), containers through their runtime (`runc`,
//! `docker`, `podman`), and `Engines`, which sends each target to its engine. runc drives CRIU itself
//! (`runc checkpoint` / `runc restore`); crun on Debian 12 is built without CRIU support.

pub mod bundle;
pub mod container;
pub mod containerd;
pub mod docker;
pub mod group;
pub mod hooks;
pub mod podman;
pub mod process;
pub mod runc;
pub mod seal;
pub mod terminal;

use std::path::Path;
use std::sync::Arc;

use ckptd_api::{Checkpoint, CheckpointOptions, ContainerRecord, JobResult, Runtime, Target};

use crate::archive::{self, Manifest};
use crate::criu::images;

use crate::criu::Criu;
use crate::engine::{BoxFuture, DumpOutput, DumpSpec, Engine, RestoreSpec, Stopped};
use crate::error::{Error, Result};
use containerd::ContainerdEngine;
use docker::DockerEngine;
use podman::PodmanEngine;
use process::ProcessEngine;
use runc::RuncEngine;

/// Process trees to CRIU, containers to their runtime's engine.
pub struct Engines {
    pub process: ProcessEngine,
    /// The CRIU every engine runs (its version is recorded with each checkpoint).
    pub criu: Arc<Criu>,
    /// The container engines, one per runtime: a new runtime is its file and its line in `new`.
    containers: Vec<(Runtime, Box<dyn Engine>)>,
}

/// Where the engines find their programs and state.
pub struct EnginePaths {
    /// runc, when installed (containers need it).
    pub runc: Option<std::path::PathBuf>,
    /// Where restored runc containers' piped output is written.
    pub container_logs: std::path::PathBuf,
    /// Where restored processes' terminals are held.
    pub terminals: std::path::PathBuf,
    pub docker_socket: std::path::PathBuf,
    /// runc's state directory for Docker's containers.
    pub docker_runc_root: std::path::PathBuf,
    pub podman_socket: std::path::PathBuf,
    /// Podman's CLI, when installed (it exports a checkpoint on a pipe).
    pub podman: Option<std::path::PathBuf>,
    pub containerd_socket: std::path::PathBuf,
    /// The containerd namespace of a target that names none.
    pub containerd_namespace: String,
}

impl Engines {
    pub fn new(criu: Arc<Criu>, restore_pid_wait: std::time::Duration, paths: EnginePaths) -> Self {
        let containers: Vec<(Runtime, Box<dyn Engine>)> = vec![
            (
                Runtime::Runc,
                Box::new(RuncEngine::new(
                    paths.runc.clone(),
                    paths.container_logs.clone(),
                    criu.clone(),
                )),
            ),
            (
                Runtime::Docker,
                Box::new(DockerEngine::new(
                    paths.docker_socket,
                    paths.docker_runc_root,
                    paths.runc,
                    criu.clone(),
                )),
            ),
            (
                Runtime::Podman,
                Box::new(PodmanEngine::new(
                    paths.podman_socket,
                    paths.podman,
                    criu.clone(),
                )),
            ),
            (
                Runtime::Containerd,
                Box::new(ContainerdEngine::new(
                    paths.containerd_socket,
                    paths.containerd_namespace,
                    paths.container_logs.clone(),
                    criu.clone(),
                )),
            ),
        ];
        Engines {
            process: ProcessEngine::new(criu.clone(), restore_pid_wait, paths.terminals),
            criu,
            containers,
        }
    }

    /// The engine of a container runtime.
    fn runtime(&self, runtime: Runtime) -> &dyn Engine {
        self.containers
            .iter()
            .find(|(r, _)| *r == runtime)
            .map(|(_, e)| e.as_ref())
            .unwrap_or_else(|| panic!("no engine is registered for runtime {runtime}"))
    }

    /// The engine of a single target (a group's members each go to theirs: `group`).
    fn for_target(&self, target: &Target) -> &dyn Engine {
        match target {
            Target::Container { runtime, .. } => self.runtime(*runtime),
            Target::Process { .. } | Target::Group { .. } => &self.process,
        }
    }

    /// The engine a restore goes through: the checkpoint's own, or runc's for a checkpoint of
    /// the container checkpoint layout (Podman's or a kubelet's) restored into a new runc
    /// bundle (`bundle`).
    fn for_restore(&self, cp: &Checkpoint, into: Option<&Target>) -> &dyn Engine {
        if let Some(Target::Container {
            runtime: Runtime::Runc,
            bundle: Some(_),
            ..
        }) = into
        {
            if bundle::has_spec(Path::new(&cp.dir)) {
                return self.runtime(Runtime::Runc);
            }
        }
        self.for_target(&cp.target)
    }
}

/// A namespace is containerd's partition of its containers; no other runtime has one.
fn only_containerd_has_namespaces(target: &Target) -> Result<()> {
    match target {
        Target::Container {
            runtime,
            namespace: Some(_),
            ..
        } if *runtime != Runtime::Containerd => Err(crate::error::Error::invalid(format!(
            "\"namespace\" is containerd's; leave it out for a {runtime} container"
        ))),
        _ => Ok(()),
    }
}

impl Engine for Engines {
    fn version(&self) -> Option<String> {
        self.criu.version()
    }
    fn runtimes(&self) -> BoxFuture<'_, Vec<ckptd_api::RuntimeInfo>> {
        Box::pin(async move {
            futures_util::future::join_all(self.containers.iter().map(|(_, e)| e.runtimes()))
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }
    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Target::Group { targets } = target {
                group::check_members(targets)?;
                for (i, t) in targets.iter().enumerate() {
                    if !matches!(
                        t,
                        Target::Process { .. }
                            | Target::Container {
                                runtime: Runtime::Runc,
                                ..
                            }
                    ) {
                        return Err(Error::target_unavailable(format!(
                            "group member {i} ({}) is neither a process nor a runc container: a \
                             group takes those, which ckptd freezes together",
                            t.key()
                        )));
                    }
                    self.check_target(t).await.map_err(|mut e| {
                        e.message = format!("group member {i} ({}): {}", t.key(), e.message);
                        e.with("member", i)
                    })?;
                }
                return group::check_pipes(targets);
            }
            let checked = self.for_target(target).check_target(target).await;
            // A container its runtime does not know may be another runtime's: say so, in each
            // caller's words.
            // Only when exactly one does: with two, the caller must choose (`ckpt` names the one
            // it finds without being told).
            if let (Err(e), Target::Container { id, runtime, .. }) = (&checked, target) {
                if e.kind == crate::error::ErrorKind::TargetUnavailable {
                    let mut knowing = Vec::new();
                    for (other, engine) in self.containers.iter().filter(|(r, _)| r != runtime) {
                        if engine.knows(id).await {
                            knowing.push(*other);
                        }
                    }
                    return Err(match knowing[..] {
                        [other] => e.clone().with_advice(ckptd_api::Advice::UseRuntime {
                            runtime: other,
                            container: id.clone(),
                        }),
                        [] => e.clone(),
                        _ => {
                            let names: Vec<String> =
                                knowing.iter().map(|r| r.to_string()).collect();
                            let mut e = e.clone();
                            e.message = format!(
                                "{}; {} each have a container named {id}: name the runtime",
                                e.message,
                                names.join(" and ")
                            );
                            e
                        }
                    });
                }
            }
            checked
        })
    }
    fn check_options(&self, target: &Target, options: &CheckpointOptions) -> Result<()> {
        if let Target::Group { targets } = target {
            return targets
                .iter()
                .try_for_each(|t| self.check_options(t, options));
        }
        only_containerd_has_namespaces(target)?;
        self.for_target(target).check_options(target, options)
    }
    fn check_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        console_socket: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        if let Target::Group { .. } = checkpoint.target {
            return Box::pin(self.check_group_restore(checkpoint, into, console_socket));
        }
        if let Some(t) = into {
            if let Err(e) = only_containerd_has_namespaces(t) {
                return Box::pin(async move { Err(e) });
            }
            if std::mem::discriminant(t) != std::mem::discriminant(&checkpoint.target) {
                return Box::pin(async move {
                    Err(Error::invalid(format!(
                        "checkpoint {} is of a {}; it cannot be restored as a {}",
                        checkpoint.name,
                        kind_name(&checkpoint.target),
                        kind_name(t)
                    )))
                });
            }
        }
        self.for_restore(checkpoint, into)
            .check_restore(checkpoint, into, console_socket)
    }
    fn dump_estimate<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<u64>> {
        if let Target::Group { targets } = target {
            return Box::pin(async move {
                let mut sum = 0u64;
                for t in targets {
                    sum = sum.saturating_add(self.dump_estimate(t).await?);
                }
                Ok(sum)
            });
        }
        self.for_target(target).dump_estimate(target)
    }
    fn dump<'a>(&'a self, spec: DumpSpec<'a>) -> BoxFuture<'a, Result<DumpOutput>> {
        if let Target::Group { .. } = spec.target {
            return Box::pin(self.dump_group(spec));
        }
        self.for_target(spec.target).dump(spec)
    }
    fn restore<'a>(&'a self, spec: RestoreSpec<'a>) -> BoxFuture<'a, Result<JobResult>> {
        Box::pin(async move {
            check_images(spec.checkpoint, spec.images).await?;
            if let Target::Group { .. } = spec.checkpoint.target {
                return self.restore_group(spec).await;
            }
            self.for_restore(spec.checkpoint, spec.into)
                .restore(spec)
                .await
        })
    }
    fn check_live<'a>(
        &'a self,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Option<ckptd_api::ContainerRecord>>> {
        if let Target::Group { .. } = target {
            return Box::pin(async move { Err(crate::engine::no_live_migration(target)) });
        }
        self.for_target(target).check_live(target)
    }
    fn running_pid<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Option<i32>> {
        self.for_target(target).running_pid(target)
    }
    fn freeze<'a>(&'a self, target: &'a Target, owner_uid: u32) -> BoxFuture<'a, Result<Stopped>> {
        self.for_target(target).freeze(target, owner_uid)
    }
    fn continue_restored<'a>(
        &'a self,
        target: &'a Target,
        restored: &'a JobResult,
        owner_uid: u32,
    ) -> BoxFuture<'a, ()> {
        self.for_target(target)
            .continue_restored(target, restored, owner_uid)
    }
    fn terminal_socket(&self, root: crate::sys::TaskId) -> Option<std::path::PathBuf> {
        self.process.terminal_socket(root)
    }
    fn live_leftover<'a>(
        &'a self,
        target: &'a Target,
        owner_uid: u32,
    ) -> BoxFuture<'a, Option<Stopped>> {
        self.for_target(target).live_leftover(target, owner_uid)
    }
    fn dump_lazy<'a>(
        &'a self,
        spec: DumpSpec<'a>,
        pages: std::os::fd::OwnedFd,
    ) -> BoxFuture<'a, Result<crate::engine::LazyDump>> {
        self.for_target(spec.target).dump_lazy(spec, pages)
    }
    fn restore_lazy<'a>(
        &'a self,
        spec: RestoreSpec<'a>,
        pages: std::os::fd::OwnedFd,
    ) -> BoxFuture<'a, Result<crate::engine::LazyRestore>> {
        self.for_restore(spec.checkpoint, spec.into)
            .restore_lazy(spec, pages)
    }
    fn release<'a>(&'a self, stopped: &'a Stopped, kill: bool) -> BoxFuture<'a, ()> {
        match stopped {
            Stopped::Group(members) if kill => Box::pin(async move {
                // Its connections are left as CRIU's own ending leaves them (`seal`); the
                // copies are closed once the members are gone.
                let sealed = seal::seal(members).await;
                self.release_all(members, true).await;
                drop(sealed);
            }),
            Stopped::Group(members) => Box::pin(self.release_all(members, false)),
            Stopped::Container { container, .. } => {
                self.runtime(container.runtime).release(stopped, kill)
            }
            _ => self.process.release(stopped, kill),
        }
    }
    fn recover_dump<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        images: &'a crate::sys::Folder,
    ) -> BoxFuture<'a, Option<DumpOutput>> {
        if let Target::Group { targets } = &checkpoint.target {
            // An interrupted group dump is not finished: every member runs again (a container
            // the group paused is resumed; a group refuses a container that was paused).
            return Box::pin(async move {
                let owner = (checkpoint.owner_uid != 0).then_some(checkpoint.owner_uid);
                for t in targets {
                    match t {
                        Target::Process { pid } => {
                            let stopped = crate::sys::TaskId::of(*pid)
                                .map(|root| crate::sys::tree_in_state(root, 'T', owner))
                                .unwrap_or_default();
                            self.release(&Stopped::Tasks(stopped), false).await;
                        }
                        _ => {
                            self.continue_restored(t, &JobResult::default(), checkpoint.owner_uid)
                                .await
                        }
                    }
                }
                None
            });
        }
        self.for_target(&checkpoint.target)
            .recover_dump(checkpoint, images)
    }
    fn remove_left_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        started: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, ()> {
        self.for_restore(checkpoint, into)
            .remove_left_restore(checkpoint, into, started)
    }

    fn left_runc_restores<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
    ) -> BoxFuture<'a, Option<crate::engine::LeftRuncs>> {
        if let Target::Group { .. } = checkpoint.target {
            return Box::pin(self.left_group_runcs(checkpoint, false));
        }
        self.for_restore(checkpoint, into)
            .left_runc_restores(checkpoint, into)
    }
    fn left_runc_checkpoints<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Option<crate::engine::LeftRuncs>> {
        if let Target::Group { .. } = checkpoint.target {
            return Box::pin(self.left_group_runcs(checkpoint, true));
        }
        self.for_target(&checkpoint.target)
            .left_runc_checkpoints(checkpoint)
    }
    fn recover_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        log_name: &'a str,
    ) -> BoxFuture<'a, Option<JobResult>> {
        if let Target::Group { .. } = checkpoint.target {
            return Box::pin(self.recover_group_restore(checkpoint, log_name));
        }
        self.for_restore(checkpoint, into)
            .recover_restore(checkpoint, into, log_name)
    }
}

fn kind_name(t: &Target) -> &'static str {
    match t {
        Target::Process { .. } => "process",
        Target::Container { .. } => "container",
        Target::Group { .. } => "group",
    }
}

/// What a container checkpoint archive (unpacked in `dir`) makes in the catalog, in the words
/// of ckptd's own manifest, named `<container>-<when>` unless the import names it: Podman's, a
/// checkpoint of the Podman container it names (restored through Podman); a kubelet's (CRI-O's,
/// containerd's), one of a runc container of the container's name, restored into a new bundle
/// built from the image's root filesystem (`runtime::bundle`).
pub fn foreign_manifest(f: archive::container::Foreign, dir: &Path) -> Result<Manifest> {
    use archive::container::Engine;
    if !runc::valid_container_id(&f.container) {
        return Err(Error::invalid(format!(
            "the archive names its container {:?}, which is not a valid container name",
            f.container
        )));
    }
    let spec: serde_json::Value = std::fs::read(dir.join("spec.dump"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let terminal = spec
        .pointer("/process/terminal")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let when = f.checkpointed_at.unwrap_or_else(chrono::Utc::now);
    let (runtime, bundle) = match f.engine {
        Engine::Podman => (
            ckptd_api::Runtime::Podman,
            format!("podman:{}", f.container_id.clone().unwrap_or_default()),
        ),
        // No runc container of it here: restored into a new one (runc's `destination`).
        Engine::CriO | Engine::Containerd => (ckptd_api::Runtime::Runc, String::new()),
    };
    let target = Target::Container {
        id: f.container.clone(),
        runtime,
        root: None,
        bundle: None,
        namespace: None,
    };
    Ok(Manifest {
        format: archive::FORMAT.into(),
        name: format!("{}-{}", f.container, when.format("%Y%m%d-%H%M%S")),
        target,
        options: Default::default(),
        labels: Default::default(),
        created_at: when,
        criu_version: None,
        container: Some(ContainerRecord {
            bundle,
            config_sha256: String::new(),
            terminal,
            stdio: runc::recorded_stdio(dir),
        }),
        stats: images::read_dump_stats(dir).ok(),
        members: vec![],
        origin: Some(ckptd_api::Origin {
            engine: f.engine.as_str().into(),
            container: f.container,
            container_id: f.container_id,
            image: f.image,
            pod: f.pod,
            namespace: f.namespace,
            checkpointed_at: f.checkpointed_at,
        }),
        kernel: String::new(),
        // The layout records no architecture; CRIU's images refuse another one at restore.
        arch: archive::arch(),
        ckptd_version: String::new(),
        files: vec![],
    })
}

/// Refuses a checkpoint whose images cannot make a whole tree before any of them reaches CRIU
/// (`criu::images::check_restorable`: every process's images there, and each process's pages
/// image as long as its pagemap says: CRIU spins for good on a short one). A group's members
/// are checked each in its own folder, opened beneath the group's. Part of every restore of
/// the engine's, before the runtime's.
async fn check_images(cp: &Checkpoint, folder: &crate::sys::Folder) -> Result<()> {
    let members = match &cp.target {
        ckptd_api::Target::Group { .. } => {
            let opened = (0..cp.members.len())
                .map(|i| folder.member(&i.to_string()))
                .collect::<std::io::Result<Vec<_>>>();
            match opened {
                Ok(m) if !m.is_empty() => m,
                // The group's restore says which member is missing or cannot be opened, and why.
                _ => return Ok(()),
            }
        }
        _ => Vec::new(),
    };
    let paths: Vec<_> = if members.is_empty() {
        vec![(folder.path(), folder.shown().to_path_buf())]
    } else {
        members
            .iter()
            .map(|m| (m.path(), m.shown().to_path_buf()))
            .collect()
    };
    let checked = tokio::task::spawn_blocking(move || {
        paths.into_iter().try_for_each(|(path, shown)| {
            images::check_restorable(&path).map_err(|e| {
                e.to_string()
                    .replace(&path.display().to_string(), &shown.display().to_string())
            })
        })
    })
    .await
    .map_err(|e| Error::internal(format!("the images' check failed: {e}")))?;
    drop(members);
    checked.map_err(|why| {
        Error::conflict(format!(
            "checkpoint {} cannot be restored: its images are damaged: {why}",
            cp.name
        ))
        .with_hint("take a new checkpoint; this one cannot be restored")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::criu::CriuProbe;

    #[test]
    fn every_runtime_has_its_engine() {
        let d = tempfile::tempdir().unwrap();
        let engines = Engines::new(
            Arc::new(Criu::new(CriuProbe::default(), 4, None)),
            std::time::Duration::from_secs(1),
            EnginePaths {
                runc: None,
                container_logs: d.path().join("logs"),
                terminals: d.path().join("terminals"),
                docker_socket: d.path().join("docker.sock"),
                docker_runc_root: d.path().join("moby"),
                podman_socket: d.path().join("podman.sock"),
                podman: None,
                containerd_socket: d.path().join("containerd.sock"),
                containerd_namespace: "k8s.io".into(),
            },
        );
        use strum::VariantNames;
        for name in Runtime::VARIANTS {
            let runtime: Runtime = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(
                engines
                    .containers
                    .iter()
                    .filter(|(r, _)| *r == runtime)
                    .count(),
                1,
                "{runtime}"
            );
        }
    }
}
