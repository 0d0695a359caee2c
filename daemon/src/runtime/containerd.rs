//! containerd containers (a Kubernetes node's, or `ctr run`'s), through containerd's gRPC API on
//! its socket (`containerd_socket`), each in its namespace (the target's `namespace`, else
//! `containerd_namespace`).
//!
//! Decided by measurement (BENCHMARKS.md, "containerd: which way a dump goes"): the dump is
//! containerd's own task checkpoint with the runc shim's `image_path` option, so the images land
//! in the checkpoint's folder directly (within 1.05x of runc itself; the content store, where
//! `ctr tasks checkpoint` puts them by default, costs 7x), and containerd stays the owner of its
//! task. It follows the one container flow (`container.rs`): paused for the dump, dumped
//! leaving it paused, ended only once the images are durable. A restore in place creates the
//! task again with the shim's `criu_image_path` create option, from the checkpoint's folder, over
//! the container's own snapshot, with the stdio it had: the restored process is the shim's child,
//! and containerd's task, as if containerd had restored it.
//!
//! A restore into another container (same node, same namespace) makes it as `ctr run` would
//! from what containerd records of the checkpoint's container (image, runtime, spec, labels), a
//! new snapshot over the same parent, and a log of ckptd's for its output
//! (`<state_dir>/container-logs/`), then creates its task from the images as in place; anything
//! made is removed again, within the job, if a step fails, and by the restart's recovery if the
//! daemon dies between steps (the container carries the job's label, `io.ckptd.made-by`), the
//! shim containerd forgets when its client dies mid-create included (`end_forgotten_shims`). The
//! new snapshot is held by a lease of the job's until the container refers to it, as
//! containerd's own client does: containerd's garbage collector removes a snapshot nothing
//! refers to, and did, between the two steps (its mount then failed, "no such file or
//! directory").
//!
//! Every checkpoint keeps containerd's record of its container (`containerd.json`), written
//! before the pause: a node without the container makes it again from it, over the same image.
//!
//! A container that joins another's namespaces (a pod's sandbox) is restored into the same
//! ones (runc dumps and restores them as external, from the spec); a restore after they are
//! gone is refused before its job. Left out for now (the README says so): a restore into a new
//! sandbox.

use std::path::PathBuf;
use std::sync::Arc;

use ckptd_api::{Checkpoint, CheckpointOptions, ContainerRecord, JobResult, Runtime, Target};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    CheckpointTaskRequest, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, PauseTaskRequest,
    ResumeTaskRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request};
use containerd_client::types::v1::{Process, Status};

use super::container::{self, ContainerOps};
use crate::engine::{
    BoxFuture, ContainerHandle, DumpOutput, DumpSpec, Engine, RestoreSpec, Stopped,
};
use crate::error::{Error, ErrorKind, Result};
use crate::{criu, sys};

/// The runc shim's checkpoint options (`containerd.runc.v1.CheckpointOptions`).
#[derive(Clone, PartialEq, prost::Message)]
struct RuncCheckpointOptions {
    #[prost(bool, tag = "1")]
    exit: bool,
    #[prost(bool, tag = "2")]
    open_tcp: bool,
    #[prost(bool, tag = "3")]
    external_unix_sockets: bool,
    #[prost(bool, tag = "4")]
    terminal: bool,
    #[prost(bool, tag = "5")]
    file_locks: bool,
    #[prost(string, tag = "8")]
    image_path: String,
    #[prost(string, tag = "9")]
    work_path: String,
}

/// What a checkpoint keeps of its containerd container (`containerd.json` in its folder, written
/// before the dump): enough to make the container again on a node that does not have it, over
/// the same image (which must be there, unpacked).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ContainerRecordFile {
    image: String,
    runtime: String,
    /// The runtime's options (a protobuf Any): its type URL and hex bytes.
    #[serde(default)]
    runtime_options: Option<(String, String)>,
    /// The OCI spec (containerd's Any of JSON): its type URL and the JSON text.
    spec: (String, String),
    snapshotter: String,
    /// The snapshot the container's own was prepared over (the image's chain id).
    parent: String,
    #[serde(default)]
    labels: std::collections::HashMap<String, String>,
}

/// The record's file in a checkpoint's folder.
const RECORD_FILE: &str = "containerd.json";

/// The runc shim's task options (`containerd.runc.v1.Options`): only the restore's paths.
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    #[prost(string, tag = "10")]
    criu_image_path: String,
    #[prost(string, tag = "11")]
    criu_work_path: String,
}

fn any<M: prost::Message>(type_url: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.to_owned(),
        value: m.encode_to_vec(),
    }
}

/// A request in containerd namespace `ns`.
fn in_ns<T>(ns: &str, req: T) -> Result<Request<T>> {
    let mut r = Request::new(req);
    let v = ns.parse().map_err(|_| {
        Error::invalid(format!(
            "namespace {ns:?} is not a valid containerd namespace"
        ))
    })?;
    r.metadata_mut().insert("containerd-namespace", v);
    Ok(r)
}

/// A request in namespace `ns` whose resources lease `lease` holds.
fn in_lease<T>(ns: &str, lease: &str, req: T) -> Result<Request<T>> {
    let mut r = in_ns(ns, req)?;
    let v = lease
        .parse()
        .map_err(|_| Error::internal(format!("{lease:?} is not a lease id")))?;
    r.metadata_mut().insert("containerd-lease", v);
    Ok(r)
}

/// The lease restore job `log_name` holds its new snapshot by (one per job, so a restart's
/// recovery finds it).
fn lease_id(log_name: &str) -> String {
    format!("ckptd-{}", log_name.trim_end_matches(".log"))
}

/// How long a lease lives if nothing drops it (a daemon killed mid-restore, and no restart).
const LEASE_EXPIRES_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(1);

pub struct ContainerdEngine {
    socket: PathBuf,
    /// The namespace of a target that names none.
    namespace: String,
    /// Where a container restored into a new name writes its output.
    container_logs: PathBuf,
    criu: Arc<criu::Criu>,
    channel: tokio::sync::OnceCell<Channel>,
}

/// A containerd container: its namespace and id.
struct Named<'a> {
    ns: &'a str,
    id: &'a str,
}

impl ContainerdEngine {
    pub fn new(
        socket: PathBuf,
        namespace: String,
        container_logs: PathBuf,
        criu: Arc<criu::Criu>,
    ) -> Self {
        Self {
            socket,
            namespace,
            container_logs,
            criu,
            channel: tokio::sync::OnceCell::new(),
        }
    }

    /// Finds container `c`'s runc `verb`s each time it is called (`Engine::left_runc_restores`).
    fn left_runcs(&self, verb: &'static str, c: &Named<'_>) -> crate::engine::LeftRuncs {
        let (socket, ns, id) = (self.socket.clone(), c.ns.to_owned(), c.id.to_owned());
        Box::new(move || runcs_of(&socket, verb, &ns, &id))
    }

    fn named<'a>(&'a self, t: &'a Target) -> Result<Named<'a>> {
        match t {
            Target::Container {
                id,
                runtime: Runtime::Containerd,
                root: None,
                bundle: None,
                namespace,
            } => {
                let ns = namespace.as_deref().unwrap_or(&self.namespace);
                // containerd's own rule for a namespace (its `identifiers` package).
                let valid = ns.len() <= 76
                    && ns.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && ns
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
                if !valid {
                    return Err(Error::invalid(format!(
                        "namespace {ns:?} is not a containerd namespace (letters, digits, '.', '_' \
                         and '-', starting with a letter or digit, at most 76)"
                    )));
                }
                Ok(Named { ns, id })
            }
            Target::Container {
                runtime: Runtime::Containerd,
                ..
            } => Err(Error::invalid(
                "a containerd container is named by its id and namespace; root and bundle are runc's",
            )),
            _ => Err(Error::internal("not a containerd container")),
        }
    }

    async fn channel(&self) -> Result<Channel> {
        if !self.socket.exists() {
            return Err(self.unreachable(&"no socket there (is containerd running?)"));
        }
        self.channel
            .get_or_try_init(|| async {
                containerd_client::connect(&self.socket).await.map_err(|e| {
                    // tonic says "transport error"; the reason is in its sources.
                    let mut why = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        let s_text = s.to_string();
                        if !why.ends_with(&s_text) {
                            why = format!("{why}: {s_text}");
                        }
                        source = s.source();
                    }
                    self.unreachable(&why)
                })
            })
            .await
            .cloned()
    }

    fn unreachable(&self, e: &dyn std::fmt::Display) -> Error {
        Error::unavailable(format!(
            "cannot reach containerd at {}: {e}",
            self.socket.display()
        ))
        .with_hint(
            "start containerd, or point ckptd at its socket (containerd_socket in the \
             configuration, --containerd-socket or CKPTD_CONTAINERD_SOCKET)",
        )
    }

    /// containerd's answer as ckptd's error, about container `c`.
    fn grpc(&self, c: &Named<'_>, what: &str, s: containerd_client::tonic::Status) -> Error {
        match s.code() {
            Code::NotFound => Error::target_unavailable(format!(
                "containerd has no container {:?} in namespace {:?}",
                c.id, c.ns
            ))
            .with_hint(format!("ctr -n {} containers ls lists them", c.ns)),
            Code::Unavailable => self.unreachable(&s.message()),
            _ => Error::new(
                ErrorKind::CriuFailed,
                format!(
                    "containerd could not {what} container {}: {}",
                    c.id,
                    s.message()
                ),
            ),
        }
    }

    /// The container's task, if it has one.
    async fn task(&self, c: &Named<'_>) -> Result<Option<Process>> {
        let task = self.task_of(c).await?;
        if task.is_none() {
            // No task: the container exists (stopped) or not at all.
            self.container(c).await?;
        }
        Ok(task)
    }

    /// The task containerd has for container id `c`, whether or not the container exists.
    async fn task_of(&self, c: &Named<'_>) -> Result<Option<Process>> {
        let mut tasks = TasksClient::new(self.channel().await?);
        match tasks
            .get(in_ns(
                c.ns,
                GetRequest {
                    container_id: c.id.to_owned(),
                    exec_id: String::new(),
                },
            )?)
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(self.grpc(c, "inspect", s)),
        }
    }

    async fn container(&self, c: &Named<'_>) -> Result<containerd_client::services::v1::Container> {
        let mut containers = ContainersClient::new(self.channel().await?);
        containers
            .get(in_ns(
                c.ns,
                GetContainerRequest {
                    id: c.id.to_owned(),
                },
            )?)
            .await
            .map_err(|s| self.grpc(c, "inspect", s))?
            .into_inner()
            .container
            .ok_or_else(|| Error::internal("containerd answered a container without one"))
    }

    /// The task of a container a checkpoint needs running (or paused).
    async fn running(&self, c: &Named<'_>) -> Result<Process> {
        let status = |p: &Process| Status::try_from(p.status).unwrap_or(Status::Unknown);
        match self.task(c).await? {
            Some(p) if matches!(status(&p), Status::Running | Status::Paused) => Ok(p),
            Some(p) => Err(container::not_running(
                "ctr",
                c.id,
                status(&p).as_str_name(),
                false,
            )),
            None => Err(Error::target_unavailable(format!(
                "containerd container {} has no task: it is not running",
                c.id
            ))
            .with_hint(format!("ctr -n {} tasks start {}", c.ns, c.id))),
        }
    }

    fn handle(c: &Named<'_>) -> ContainerHandle {
        // `root` carries the namespace: containerd's partition of its containers.
        ContainerHandle {
            runtime: Runtime::Containerd,
            id: c.id.to_owned(),
            root: Some(c.ns.to_owned()),
        }
    }

    fn from_handle(h: &ContainerHandle) -> Named<'_> {
        Named {
            ns: h.root.as_deref().unwrap_or_default(),
            id: &h.id,
        }
    }

    async fn dump_container(&self, spec: DumpSpec<'_>) -> Result<DumpOutput> {
        self.criu.usable()?;
        let c = self.named(spec.target)?;
        let p = self.running(&c).await?;
        // Before anything is paused: the record another node makes the container from.
        let record = self.source(&c).await?;
        let json = serde_json::to_vec_pretty(&record).expect("serializes");
        std::fs::write(spec.images.path().join(RECORD_FILE), json).map_err(|e| {
            Error::io(
                "cannot write the container's record",
                &spec.images.shown().join(RECORD_FILE),
                &e,
            )
        })?;
        let paused = Status::try_from(p.status) == Ok(Status::Paused);
        let stopped = container::checkpoint(self, Self::handle(&c), paused, &spec).await?;
        Ok(DumpOutput {
            stats: criu::dump_stats(&spec.images.path()),
            stopped,
            container: Some(ContainerRecord {
                bundle: format!("containerd:{}/{}", c.ns, c.id),
                config_sha256: String::new(),
                terminal: p.terminal,
                stdio: vec![p.stdin, p.stdout, p.stderr],
            }),
            criu_config: None,
            terminal: None,
            members: Vec::new(),
        })
    }

    async fn restore_container(&self, spec: RestoreSpec<'_>) -> Result<JobResult> {
        self.criu.usable()?;
        let cp = spec.checkpoint;
        if let Some(into) = spec.into {
            let src = self.named(&cp.target)?;
            let dst = self.named_into(&src, into)?;
            return self.restore_into(&spec, &src, &dst).await;
        }
        let c = self.named(&cp.target)?;
        let container = match self.container(&c).await {
            // Another node's checkpoint: the container is made again, as it was.
            Err(e)
                if e.kind == ErrorKind::TargetUnavailable && spec.images.has_file(RECORD_FILE) =>
            {
                return self.restore_into(&spec, &c, &c).await
            }
            r => r?,
        };
        let mut tasks = TasksClient::new(self.channel().await?);
        // The task the dump ended stays until deleted: a restore in place replaces it.
        if let Some(p) = self.task(&c).await? {
            if Status::try_from(p.status) != Ok(Status::Stopped) {
                return Err(Error::conflict(format!(
                    "containerd container {} is {}; a restore in place needs its task stopped",
                    c.id,
                    Status::try_from(p.status)
                        .unwrap_or(Status::Unknown)
                        .as_str_name()
                ))
                .with_hint(format!("ctr -n {} tasks kill -s KILL {}", c.ns, c.id)));
            }
            tasks
                .delete(in_ns(
                    c.ns,
                    DeleteTaskRequest {
                        container_id: c.id.to_owned(),
                    },
                )?)
                .await
                .map_err(|s| self.grpc(&c, "delete the stopped task of", s))?;
        }
        let mut snapshots = SnapshotsClient::new(self.channel().await?);
        let mounts = snapshots
            .mounts(in_ns(
                c.ns,
                containerd_client::services::v1::snapshots::MountsRequest {
                    snapshotter: container.snapshotter.clone(),
                    key: container.snapshot_key.clone(),
                },
            )?)
            .await
            .map_err(|s| self.grpc(&c, "mount the snapshot of", s))?
            .into_inner()
            .mounts;
        let stdio = cp
            .container
            .as_ref()
            .map(|r| r.stdio.clone())
            .unwrap_or_default();
        let io = |i: usize| stdio.get(i).cloned().unwrap_or_default();
        let images = spec.images.path().display().to_string();
        tasks
            .create(in_ns(
                c.ns,
                CreateTaskRequest {
                    container_id: c.id.to_owned(),
                    rootfs: mounts,
                    stdin: io(0),
                    stdout: io(1),
                    stderr: io(2),
                    terminal: false,
                    options: Some(any(
                        "containerd.runc.v1.Options",
                        &RuncOptions {
                            criu_image_path: images.clone(),
                            criu_work_path: images.clone(),
                        },
                    )),
                    ..Default::default()
                },
            )?)
            .await
            .map_err(|s| self.restore_failed(&c, cp, &spec, s))?;
        let pid = self.start_restored(&mut tasks, &c, &spec).await?;
        Ok(JobResult {
            pid: Some(pid),
            container: Some(c.id.to_owned()),
            ..Default::default()
        })
    }

    /// The container a restore goes into: `into`, in the checkpoint's namespace unless it names
    /// one.
    fn named_into<'a>(&'a self, src: &Named<'a>, into: &'a Target) -> Result<Named<'a>> {
        let dst = self.named(into)?;
        match into {
            Target::Container {
                namespace: None, ..
            } => Ok(Named {
                ns: src.ns,
                id: dst.id,
            }),
            _ => Ok(dst),
        }
    }

    /// Refuses, before a job, a restore of a container that joins namespaces it does not own (a
    /// pod's containers join their sandbox's network namespace, `/proc/PID/ns/net`) when one of
    /// them is gone: runc restores the container into the namespaces its spec names, and CRIU
    /// dumped them as external. The spec is containerd's, or the checkpoint's record of it.
    async fn check_joined_namespaces(&self, cp: &Checkpoint, c: &Named<'_>) -> Result<()> {
        let record = match self.source(c).await {
            Ok(r) => Some(r),
            Err(e) if e.kind == ErrorKind::TargetUnavailable => kept_record(cp),
            Err(e) => return Err(e),
        };
        let Some(record) = record else {
            return Ok(());
        };
        let spec: serde_json::Value = serde_json::from_str(&record.spec.1).unwrap_or_default();
        let joined = spec
            .pointer("/linux/namespaces")
            .and_then(|n| n.as_array())
            .into_iter()
            .flatten()
            .filter_map(|n| {
                let path = n.get("path")?.as_str().filter(|p| !p.is_empty())?;
                Some((
                    n.get("type")?.as_str().unwrap_or("?").to_owned(),
                    path.to_owned(),
                ))
            });
        for (kind, path) in joined {
            if std::fs::symlink_metadata(&path).is_err() {
                return Err(Error::target_unavailable(format!(
                    "containerd container {} joins the {kind} namespace at {path} (its pod \
                     sandbox's, or another container's), which is gone: it is restored into the \
                     namespaces it was checkpointed in",
                    c.id
                ))
                .with_hint(
                    "restore it while the sandbox it was checkpointed in runs; a restore into a \
                     new sandbox is not supported yet",
                ));
            }
        }
        Ok(())
    }

    /// Refuses, before a job, a restore into `into` that cannot work: not a containerd
    /// container of the same namespace, a name containerd has, or a source container that is
    /// gone.
    async fn check_into(&self, cp: &Checkpoint, into: &Target) -> Result<()> {
        if !matches!(
            into,
            Target::Container {
                runtime: Runtime::Containerd,
                ..
            }
        ) {
            return Err(Error::invalid(format!(
                "checkpoint {} is of a containerd container; restore it into a containerd \
                 container ({{\"kind\":\"container\",\"runtime\":\"containerd\",\"id\":NAME}})",
                cp.name
            )));
        }
        let src = self.named(&cp.target)?;
        let dst = self.named_into(&src, into)?;
        self.check_joined_namespaces(cp, &src).await?;
        if src.ns != dst.ns {
            return Err(Error::invalid(format!(
                "a restore into another containerd namespace ({} from {}) is not supported: the \
                 image and its snapshots are the namespace's",
                dst.ns, src.ns
            )));
        }
        if src.id == dst.id {
            return Err(Error::invalid(format!(
                "{} is the checkpoint's own container: restore in place (leave the target out)",
                dst.id
            )));
        }
        match self.container(&dst).await {
            Ok(_) => return Err(taken(&dst, "a container")),
            Err(e) if e.kind == ErrorKind::TargetUnavailable => {}
            Err(e) => return Err(e),
        }
        match self.container(&src).await {
            Err(e) if e.kind == ErrorKind::TargetUnavailable && !can_make(cp) => {
                Err(gone(cp, &src))
            }
            Err(e) if e.kind == ErrorKind::TargetUnavailable => Ok(()),
            r => r.map(drop),
        }
    }

    /// The container `dst` made from the record of `src` (image, runtime, spec, labels) with a
    /// new snapshot over `src`'s parent, and its task created from the checkpoint's images and
    /// started; its output goes to a log of ckptd's. What was made is removed if a step fails.
    /// What makes container `c` again: containerd's record of it and its snapshot's parent.
    async fn source(&self, c: &Named<'_>) -> Result<ContainerRecordFile> {
        let container = self.container(c).await?;
        let parent = SnapshotsClient::new(self.channel().await?)
            .stat(in_ns(
                c.ns,
                StatSnapshotRequest {
                    snapshotter: container.snapshotter.clone(),
                    key: container.snapshot_key.clone(),
                },
            )?)
            .await
            .map_err(|s| self.grpc(c, "read the snapshot of", s))?
            .into_inner()
            .info
            .map(|i| i.parent)
            .unwrap_or_default();
        let spec = container.spec.unwrap_or_default();
        Ok(ContainerRecordFile {
            image: container.image,
            runtime: container
                .runtime
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            runtime_options: container
                .runtime
                .and_then(|r| r.options)
                .map(|o| (o.type_url, hex::encode(o.value))),
            spec: (
                spec.type_url,
                String::from_utf8(spec.value).map_err(|_| {
                    Error::internal(format!("containerd's spec of {} is not JSON text", c.id))
                })?,
            ),
            snapshotter: container.snapshotter,
            parent,
            labels: container.labels,
        })
    }

    /// The record a restore makes `src`'s copy from: containerd's, while it has the container;
    /// else the one the checkpoint keeps (a checkpoint pulled to another node).
    async fn source_for_restore(
        &self,
        spec: &RestoreSpec<'_>,
        src: &Named<'_>,
    ) -> Result<ContainerRecordFile> {
        match self.source(src).await {
            Err(e) if e.kind == ErrorKind::TargetUnavailable => {
                read_record(spec.images).ok_or_else(|| gone(spec.checkpoint, src))
            }
            r => r,
        }
    }

    async fn restore_into(
        &self,
        spec: &RestoreSpec<'_>,
        src: &Named<'_>,
        dst: &Named<'_>,
    ) -> Result<JobResult> {
        let cp = spec.checkpoint;
        let source = self.source_for_restore(spec, src).await?;
        let mut snapshots = SnapshotsClient::new(self.channel().await?);
        // The image's layers, unpacked here: what the new snapshot goes over.
        if !source.parent.is_empty() {
            snapshots
                .stat(in_ns(
                    dst.ns,
                    StatSnapshotRequest {
                        snapshotter: source.snapshotter.clone(),
                        key: source.parent.clone(),
                    },
                )?)
                .await
                .map_err(|s| match s.code() {
                    Code::NotFound => Error::target_unavailable(format!(
                        "image {} of checkpoint {} is not unpacked in containerd's namespace {} \
                         here ({} snapshotter)",
                        source.image, cp.name, dst.ns, source.snapshotter
                    ))
                    .with_hint(format!(
                        "ctr -n {} images pull {} (or import it), then restore again",
                        dst.ns, source.image
                    )),
                    _ => self.grpc(dst, "read the image's snapshot for", s),
                })?;
        }
        let lease = self.lease(dst, spec.log_name).await?;
        let started = self
            .prepare_and_start(spec, dst, &source, &mut snapshots, &lease)
            .await;
        self.drop_lease(dst.ns, &lease).await;
        started
    }

    /// Takes lease `lease_id(log_name)` in `dst`'s namespace, to expire by itself.
    async fn lease(&self, dst: &Named<'_>, log_name: &str) -> Result<String> {
        let id = lease_id(log_name);
        let expires = (chrono::Utc::now() + LEASE_EXPIRES_AFTER)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        LeasesClient::new(self.channel().await?)
            .create(in_ns(
                dst.ns,
                containerd_client::services::v1::CreateRequest {
                    id: id.clone(),
                    labels: [("containerd.io/gc.expire".to_owned(), expires)].into(),
                },
            )?)
            .await
            .map_err(|s| self.grpc(dst, "take a lease for the snapshot of", s))?;
        Ok(id)
    }

    /// Drops lease `id` (best effort: it expires by itself).
    async fn drop_lease(&self, ns: &str, id: &str) {
        let Ok(channel) = self.channel().await else {
            return;
        };
        let Ok(r) = in_ns(
            ns,
            containerd_client::services::v1::DeleteRequest {
                id: id.to_owned(),
                sync: false,
            },
        ) else {
            return;
        };
        match LeasesClient::new(channel).delete(r).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                tracing::warn!(lease = id, namespace = ns, error = %s.message(), "cannot drop containerd lease (it expires by itself)")
            }
        }
    }

    /// The steps of `restore_into` from the snapshot on, under `lease`.
    async fn prepare_and_start(
        &self,
        spec: &RestoreSpec<'_>,
        dst: &Named<'_>,
        source: &ContainerRecordFile,
        snapshots: &mut SnapshotsClient<Channel>,
        lease: &str,
    ) -> Result<JobResult> {
        let mounts = snapshots
            .prepare(in_lease(
                dst.ns,
                lease,
                PrepareSnapshotRequest {
                    snapshotter: source.snapshotter.clone(),
                    key: dst.id.to_owned(),
                    parent: source.parent.clone(),
                    ..Default::default()
                },
            )?)
            .await
            .map_err(|s| match s.code() {
                Code::AlreadyExists => taken(dst, "a snapshot"),
                _ => self.grpc(dst, "prepare a snapshot for", s),
            })?
            .into_inner()
            .mounts;
        // Each step made is undone, here, before the job ends, if a later one fails; a daemon
        // killed meanwhile leaves it to the restart's recovery (`recover_restore`).
        let mut made = Made::default();
        let started = self
            .make_and_start(spec, dst, source, mounts, &mut made)
            .await;
        if started.is_err() {
            self.unmake(dst, &source.snapshotter, made).await;
        }
        started
    }

    /// The steps of `restore_into` after the snapshot: the container, its task from the
    /// images, its start; `made` says which were done.
    async fn make_and_start(
        &self,
        spec: &RestoreSpec<'_>,
        dst: &Named<'_>,
        source: &ContainerRecordFile,
        mounts: Vec<containerd_client::types::Mount>,
        made: &mut Made,
    ) -> Result<JobResult> {
        let cp = spec.checkpoint;
        let mut labels = source.labels.clone();
        labels.insert(container::RESTORED_FROM.into(), cp.name.clone());
        labels.insert(container::MADE_BY.into(), spec.log_name.to_owned());
        let mut containers = ContainersClient::new(self.channel().await?);
        containers
            .create(in_ns(
                dst.ns,
                CreateContainerRequest {
                    container: Some(containerd_client::services::v1::Container {
                        id: dst.id.to_owned(),
                        labels,
                        image: source.image.clone(),
                        runtime: Some(containerd_client::services::v1::container::Runtime {
                            name: source.runtime.clone(),
                            options: source.runtime_options.as_ref().and_then(|(t, v)| {
                                Some(prost_types::Any {
                                    type_url: t.clone(),
                                    value: hex::decode(v).ok()?,
                                })
                            }),
                        }),
                        spec: Some(prost_types::Any {
                            type_url: source.spec.0.clone(),
                            value: source.spec.1.clone().into_bytes(),
                        }),
                        snapshotter: source.snapshotter.clone(),
                        snapshot_key: dst.id.to_owned(),
                        ..Default::default()
                    }),
                },
            )?)
            .await
            .map_err(|s| match s.code() {
                Code::AlreadyExists => taken(dst, "a container"),
                _ => self.grpc(dst, "create", s),
            })?;
        made.container = true;
        std::fs::create_dir_all(&self.container_logs).map_err(|e| {
            Error::io(
                "cannot create the containers' log directory",
                &self.container_logs,
                &e,
            )
        })?;
        let log = self.output_log(dst);
        let uri = format!("file://{}", log.display());
        let images = spec.images.path().display().to_string();
        let mut tasks = TasksClient::new(self.channel().await?);
        tasks
            .create(in_ns(
                dst.ns,
                CreateTaskRequest {
                    container_id: dst.id.to_owned(),
                    rootfs: mounts,
                    stdout: uri.clone(),
                    stderr: uri,
                    terminal: false,
                    options: Some(any(
                        "containerd.runc.v1.Options",
                        &RuncOptions {
                            criu_image_path: images.clone(),
                            criu_work_path: images,
                        },
                    )),
                    ..Default::default()
                },
            )?)
            .await
            .map_err(|s| self.restore_failed(dst, cp, spec, s))?;
        made.task = true;
        let pid = self.start_restored(&mut tasks, dst, spec).await?;
        Ok(JobResult {
            pid: Some(pid),
            container: Some(dst.id.to_owned()),
            output_log: Some(log.display().to_string()),
            ..Default::default()
        })
    }

    /// Where the task of a container ckptd made (`make_and_start`) writes its output.
    fn output_log(&self, c: &Named<'_>) -> PathBuf {
        self.container_logs.join(format!("{}-{}.log", c.ns, c.id))
    }

    /// Removes what a failed restore into `dst` made: its task, the container (when `made`
    /// says so) and the snapshot; each step best effort, logged.
    async fn unmake(&self, dst: &Named<'_>, snapshotter: &str, made: Made) {
        let Ok(channel) = self.channel().await else {
            return;
        };
        if made.task {
            if let Ok(r) = in_ns(
                dst.ns,
                DeleteTaskRequest {
                    container_id: dst.id.to_owned(),
                },
            ) {
                let _ = TasksClient::new(channel.clone()).delete(r).await;
            }
        }
        if made.container {
            if let Ok(r) = in_ns(
                dst.ns,
                DeleteContainerRequest {
                    id: dst.id.to_owned(),
                },
            ) {
                let _ = ContainersClient::new(channel.clone()).delete(r).await;
            }
        }
        if let Ok(r) = in_ns(
            dst.ns,
            RemoveSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: dst.id.to_owned(),
            },
        ) {
            let _ = SnapshotsClient::new(channel).remove(r).await;
        }
        tracing::info!(container = %dst.id, namespace = %dst.ns, "removed what a failed restore into a new container made");
        if matches!(self.task_of(dst).await, Ok(None)) {
            self.end_forgotten_shims(dst).await;
        }
    }

    /// Ends the shims containerd started for container `c` and then forgot: containerd 1.6
    /// leaves one running when the client creating a task goes away before the shim holds the
    /// task (containerd#6860, #7733). Seen here in 3 of 10 daemons killed just after containerd
    /// had started the shim of a restore: the shim idle, its bundle deleted, unknown to `ctr
    /// tasks ls`, and never ended. Called only once containerd has no task for `c`, so no shim of
    /// `c` serves anything containerd knows; what runs below one (a restore that went on without
    /// containerd) is ended with it, as the failed job's would have been.
    async fn end_forgotten_shims(&self, c: &Named<'_>) {
        for shim in shims_of(&self.socket, c.ns, c.id) {
            sys::end_children(shim);
            // SIGTERM first: the shim then removes its socket (`/run/containerd/s/...`).
            let _ = shim.signal(rustix::process::Signal::TERM);
            let deadline = tokio::time::Instant::now() + SHIM_EXIT;
            while shim.alive() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            if shim.alive() {
                sys::end_tree(shim, None);
            }
            tracing::warn!(container = %c.id, namespace = %c.ns, pid = shim.pid, "ended a shim containerd had forgotten (its client, a restore of ckptd's, was gone before its task)");
        }
    }

    /// Starts the task a restore created (the runc shim runs `runc restore` then: the task's
    /// create only prepares it) and returns its pid, CRIU's log renamed as the job's. Stopped by
    /// the job's stop (`container::stoppable`): the runc restores of the container are found as
    /// its shims' children. CRIU works in the checkpoint's folder (`criu_work_path`): one ended
    /// there leaves its cgroup yard mounted in it, which is taken down.
    async fn start_restored(
        &self,
        tasks: &mut TasksClient<Channel>,
        c: &Named<'_>,
        spec: &RestoreSpec<'_>,
    ) -> Result<i32> {
        let request = in_ns(
            c.ns,
            StartRequest {
                container_id: c.id.to_owned(),
                exec_id: String::new(),
            },
        )?;
        let start = async {
            tasks
                .start(request)
                .await
                .map_err(|s| self.restore_failed(c, spec.checkpoint, spec, s))
        };
        let started = container::stoppable(
            start,
            &spec.stop,
            &format!(
                "containerd's restore of container {} (namespace {})",
                c.id, c.ns
            ),
            || container::end_runc_restores(&runcs_of(&self.socket, "restore", c.ns, c.id)),
        )
        .await;
        match started {
            Ok(r) => {
                rename_log(spec, "restore.log");
                Ok(r.into_inner().pid as i32)
            }
            Err(e) => {
                if matches!(e.kind, ErrorKind::Cancelled | ErrorKind::Timeout) {
                    match spec.images.detach_criu_yards() {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(container = %c.id, yards = n, "unmounted the cgroup yard the ended CRIU left")
                        }
                        Err(e) => {
                            tracing::warn!(container = %c.id, error = %e, "cannot unmount the cgroup yard the ended CRIU left")
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// A restore containerd refused or CRIU failed: CRIU's own words from its log.
    fn restore_failed(
        &self,
        c: &Named<'_>,
        cp: &Checkpoint,
        spec: &RestoreSpec<'_>,
        s: containerd_client::tonic::Status,
    ) -> Error {
        let log = rename_log(spec, "restore.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.is_empty() {
            return self.grpc(c, "restore", s);
        }
        criu::log::failure(
            &format!(
                "containerd could not restore container {} from checkpoint {}",
                c.id, cp.name
            ),
            &text,
            &[],
            s.message(),
            &log,
        )
    }
}

/// How long a forgotten shim has to exit after SIGTERM before it is killed.
const SHIM_EXIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The shims running for container `id` in namespace `ns` of the containerd at `address`: root's
/// processes whose command line is the one containerd starts a shim with (`containerd-shim-*
/// -namespace NS -id ID -address ADDRESS`).
fn shims_of(address: &std::path::Path, ns: &str, id: &str) -> Vec<sys::TaskId> {
    sys::root_commands(|args| is_shim_of(args, address, ns, id))
}

/// The runc `verb`s (`restore`, `checkpoint`) of container `id` in namespace `ns`: containerd's
/// runc runs them as a child of the container's shim (a restore in the task's start).
fn runcs_of(address: &std::path::Path, verb: &str, ns: &str, id: &str) -> Vec<sys::TaskId> {
    container::runcs_under(verb, Some(id), |args| is_shim_of(args, address, ns, id))
}

/// Whether `args` are those of a shim of container `id` (`shims_of`).
fn is_shim_of(args: &[&[u8]], address: &std::path::Path, ns: &str, id: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let program = std::path::Path::new(std::ffi::OsStr::from_bytes(args[0]));
    program
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(b"containerd-shim"))
        && sys::has_arg(args, "-namespace", ns.as_bytes())
        && sys::has_arg(args, "-id", id.as_bytes())
        && sys::has_arg(args, "-address", address.as_os_str().as_bytes())
}

/// The checkpoint's container is no longer in containerd: a restore into another container has
/// nothing to copy its record from.
fn gone(cp: &Checkpoint, src: &Named<'_>) -> Error {
    Error::target_unavailable(format!(
        "checkpoint {}'s container {} is not in containerd (namespace {}), and the checkpoint \
         keeps no record of it ({RECORD_FILE}: taken by an older ckptd) to make it from",
        cp.name, src.id, src.ns
    ))
    .with_hint("restore it on the node that has the container")
}

/// Whether a restore can make the checkpoint's container from its record: the checkpoint keeps
/// one, or its images are still in a remote (a restore that pulls checks again once they are
/// here).
fn can_make(cp: &Checkpoint) -> bool {
    !cp.is_local() || kept_record(cp).is_some()
}

/// The record a checkpoint's folder keeps, read through the folder held (never a symlink, at
/// most 1 MiB); None when there is none that reads.
fn read_record(folder: &sys::Folder) -> Option<ContainerRecordFile> {
    let text = folder.read(RECORD_FILE, 1 << 20).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The record checkpoint `cp` keeps, its folder opened beneath its anchored parent.
fn kept_record(cp: &Checkpoint) -> Option<ContainerRecordFile> {
    let anchor = sys::AnchoredDir::open(std::path::Path::new(&cp.dir)).ok()?;
    read_record(&anchor.open_folder(anchor.name(), cp.owner_uid).ok()?)
}

/// `what` named `dst` is in containerd already.
fn taken(dst: &Named<'_>, what: &str) -> Error {
    Error::conflict(format!(
        "containerd has {what} named {} in namespace {} already",
        dst.id, dst.ns
    ))
    .with_advice(ckptd_api::Advice::FreeContainerName {
        command: format!("ctr -n {} containers rm {}", dst.ns, dst.id),
    })
}

/// What a restore into a new container made after its snapshot.
#[derive(Default)]
struct Made {
    container: bool,
    task: bool,
}

/// The shim has runc write CRIU's log as `name` in the work path (the checkpoint's folder): it
/// becomes the job's own log. Returns where it is.
fn rename_log(spec: &RestoreSpec<'_>, name: &str) -> PathBuf {
    let dir = spec.images.path();
    let to = dir.join(spec.log_name);
    if std::fs::rename(dir.join(name), &to).is_err() {
        tracing::debug!(log = %to.display(), "CRIU wrote no {name} in the checkpoint's folder");
    }
    to
}

impl ContainerOps for ContainerdEngine {
    fn pause<'a>(&'a self, h: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let c = Self::from_handle(h);
            TasksClient::new(self.channel().await?)
                .pause(in_ns(
                    c.ns,
                    PauseTaskRequest {
                        container_id: c.id.to_owned(),
                    },
                )?)
                .await
                .map_err(|s| self.grpc(&c, "pause", s))?;
            Ok(())
        })
    }

    /// Resumes the task. A shim that says paused where runc says not (a CRIU ended mid-dump
    /// thawed the cgroup it had found frozen; measured after a restart's recovery ended one)
    /// refuses both a resume and a pause: the task's cgroup is frozen as runc's pause does it,
    /// so that the shim's resume through runc takes, and the two agree again.
    fn resume<'a>(&'a self, h: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let c = Self::from_handle(h);
            let resume = || async {
                let request = in_ns(
                    c.ns,
                    ResumeTaskRequest {
                        container_id: c.id.to_owned(),
                    },
                )?;
                TasksClient::new(self.channel().await?)
                    .resume(request)
                    .await
                    .map_err(|s| self.grpc(&c, "resume", s))
            };
            let e = match resume().await {
                Ok(_) => return Ok(()),
                Err(e) if e.message.contains("container not paused") => e,
                Err(e) => return Err(e),
            };
            let Ok(Some(task)) = self.task(&c).await else {
                return Err(e);
            };
            let pid = task.pid as i32;
            let frozen = tokio::task::spawn_blocking(move || {
                sys::killable_cgroup(pid)
                    .and_then(|cg| sys::freeze_cgroup(&cg, std::time::Duration::from_secs(10)))
            })
            .await
            .map_err(|j| Error::internal(format!("the freeze of a cgroup failed: {j}")))?;
            if let Err(f) = frozen {
                tracing::error!(container = %c.id, error = %f, "cannot freeze a container its shim says is paused and runc says is not");
                return Err(e);
            }
            tracing::warn!(container = %c.id, "containerd's shim said paused and runc not: froze the task's cgroup for the shim's resume");
            resume().await.map(drop)
        })
    }

    /// SIGKILL to every process of the task (runc thaws a paused one for it), and waits until
    /// containerd has recorded the exit: a restore right after the checkpoint finds the task
    /// stopped, not still dying (a 2 GiB task takes a moment to give its memory back).
    fn end<'a>(&'a self, h: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let c = Self::from_handle(h);
            let mut tasks = TasksClient::new(self.channel().await?);
            tasks
                .kill(in_ns(
                    c.ns,
                    KillRequest {
                        container_id: c.id.to_owned(),
                        exec_id: String::new(),
                        signal: libc::SIGKILL as u32,
                        all: true,
                    },
                )?)
                .await
                .map_err(|s| self.grpc(&c, "kill", s))?;
            // A runc that left it frozen: thaw it so that the kill lands ("not paused" is fine).
            if self.is_paused(h).await {
                if let Err(e) = self.resume(h).await {
                    tracing::debug!(container = %c.id, error = %e, "resume after the kill");
                }
            }
            let wait = tasks.wait(in_ns(
                c.ns,
                WaitRequest {
                    container_id: c.id.to_owned(),
                    exec_id: String::new(),
                },
            )?);
            match tokio::time::timeout(std::time::Duration::from_secs(60), wait).await {
                Ok(r) => r
                    .map(drop)
                    .map_err(|s| self.grpc(&c, "wait for the end of", s)),
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "containerd container {} did not exit within 60 s of SIGKILL",
                        c.id
                    ),
                )),
            }
        })
    }

    fn is_paused<'a>(&'a self, h: &'a ContainerHandle) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let c = Self::from_handle(h);
            matches!(
                self.task(&c).await,
                Ok(Some(p)) if Status::try_from(p.status) == Ok(Status::Paused)
            )
        })
    }

    /// containerd's task checkpoint into the checkpoint's folder, leaving the task as it is;
    /// CRIU's log lands there too (the work path) as the job's log.
    fn dump<'a>(
        &'a self,
        h: &'a ContainerHandle,
        spec: &'a DumpSpec<'a>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let c = Self::from_handle(h);
            let o = &spec.options;
            let dir = spec.images.path();
            let path = dir.display().to_string();
            let opts = RuncCheckpointOptions {
                exit: false,
                open_tcp: o.tcp_established,
                external_unix_sockets: o.ext_unix_sk,
                terminal: o.shell_job,
                file_locks: o.file_locks,
                image_path: path.clone(),
                work_path: path,
            };
            let done = TasksClient::new(self.channel().await?)
                .checkpoint(in_ns(
                    c.ns,
                    CheckpointTaskRequest {
                        container_id: c.id.to_owned(),
                        parent_checkpoint: String::new(),
                        options: Some(any("containerd.runc.v1.CheckpointOptions", &opts)),
                    },
                )?)
                .await;
            let log = dir.join(spec.log_name);
            if spec.log_name != "dump.log" {
                let _ = std::fs::rename(dir.join("dump.log"), &log);
            }
            done.map_err(|s| {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.is_empty() {
                    return self.grpc(&c, "checkpoint", s);
                }
                criu::log::failure(
                    &format!("containerd could not checkpoint container {}", c.id),
                    &text,
                    &[],
                    s.message(),
                    &log,
                )
            })?;
            Ok(())
        })
    }
}

impl Engine for ContainerdEngine {
    fn version(&self) -> Option<String> {
        self.criu.version()
    }

    fn runtimes(&self) -> BoxFuture<'_, Vec<ckptd_api::RuntimeInfo>> {
        Box::pin(async move {
            let answer = async {
                let mut v = VersionClient::new(self.channel().await?);
                v.version(Request::new(()))
                    .await
                    .map(|r| r.into_inner().version)
                    .map_err(|s| self.unreachable(&s.message()))
            };
            let (version, error) = match answer.await {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e.message)),
            };
            vec![ckptd_api::RuntimeInfo {
                name: "containerd".into(),
                path: self.socket.display().to_string(),
                version,
                reachable: error.is_none(),
                error,
            }]
        })
    }

    fn knows<'a>(&'a self, id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let c = Named {
                ns: &self.namespace,
                id,
            };
            self.container(&c).await.is_ok()
        })
    }

    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.running(&self.named(target)?).await.map(drop) })
    }

    fn check_options(&self, target: &Target, _options: &CheckpointOptions) -> Result<()> {
        self.named(target).map(drop)
    }

    fn check_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        console_socket: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Some(into) = into {
                return self.check_into(checkpoint, into).await;
            }
            if console_socket.is_some() {
                return Err(Error::invalid(
                    "console_socket is runc's; a containerd task keeps the stdio it had",
                ));
            }
            let c = self.named(&checkpoint.target)?;
            self.check_joined_namespaces(checkpoint, &c).await?;
            let task = match self.task(&c).await {
                // Not on this node: made again from the checkpoint's record.
                Err(e) if e.kind == ErrorKind::TargetUnavailable && can_make(checkpoint) => {
                    return Ok(())
                }
                Err(e) if e.kind == ErrorKind::TargetUnavailable => {
                    return Err(gone(checkpoint, &c))
                }
                r => r?,
            };
            match task {
                Some(p) if Status::try_from(p.status) != Ok(Status::Stopped) => {
                    Err(Error::conflict(format!(
                        "containerd container {} is {}; a restore in place needs its task stopped",
                        c.id,
                        Status::try_from(p.status)
                            .unwrap_or(Status::Unknown)
                            .as_str_name()
                    ))
                    .with_hint(format!("ctr -n {} tasks kill -s KILL {}", c.ns, c.id)))
                }
                _ => Ok(()),
            }
        })
    }

    fn dump_estimate<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let p = self.running(&self.named(target)?).await?;
            Ok(sys::tree_dump_estimate(p.pid as i32))
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
        _images: &'a sys::Folder,
    ) -> BoxFuture<'a, Option<DumpOutput>> {
        Box::pin(async move {
            if let Ok(c) = self.named(&cp.target) {
                container::recover(self, &Self::handle(&c), cp.options.leave_running).await;
            }
            None
        })
    }

    fn left_runc_checkpoints<'a>(
        &'a self,
        cp: &'a Checkpoint,
    ) -> BoxFuture<'a, Option<crate::engine::LeftRuncs>> {
        Box::pin(async move { Some(self.left_runcs("checkpoint", &self.named(&cp.target).ok()?)) })
    }

    fn left_runc_restores<'a>(
        &'a self,
        cp: &'a Checkpoint,
        into: Option<&'a Target>,
    ) -> BoxFuture<'a, Option<crate::engine::LeftRuncs>> {
        Box::pin(async move {
            let src = self.named(&cp.target).ok()?;
            let c = match into {
                Some(t) => self.named_into(&src, t).ok()?,
                None => src,
            };
            Some(self.left_runcs("restore", &c))
        })
    }

    fn recover_restore<'a>(
        &'a self,
        cp: &'a Checkpoint,
        into: Option<&'a Target>,
        log_name: &'a str,
    ) -> BoxFuture<'a, Option<JobResult>> {
        Box::pin(async move {
            let src = self.named(&cp.target).ok()?;
            let c = match into {
                Some(t) => {
                    let c = self.named_into(&src, t).ok()?;
                    // The job's lease, if it was killed holding it: what it held is either
                    // the container's now, or removed below, or garbage for containerd.
                    self.drop_lease(c.ns, &lease_id(log_name)).await;
                    c
                }
                None => src,
            };
            let task = self.task(&c).await.ok().flatten();
            let made_here = self
                .container(&c)
                .await
                .ok()
                .filter(|m| container::made_by(&m.labels, log_name));
            if let Some(p) = &task {
                if Status::try_from(p.status) == Ok(Status::Running) {
                    // A container this job made writes its output where the job told it to,
                    // as the job would have answered had it not been killed.
                    return container::restored(true, p.pid as i32, c.id).map(|r| JobResult {
                        output_log: made_here
                            .is_some()
                            .then(|| self.output_log(&c).display().to_string()),
                        ..r
                    });
                }
            }
            // Not running: a container this very job made (a daemon killed between its steps)
            // is removed, as the job would have removed it.
            if let Some(made) = made_here {
                let done = Made {
                    container: true,
                    task: task.is_some(),
                };
                self.unmake(&c, &made.snapshotter, done).await;
            } else if matches!(self.task_of(&c).await, Ok(None)) {
                // A restore in place killed as containerd started the task's shim: the
                // container stays, without a task, and so does any shim it has. Only on
                // containerd's own answer that it has no task: `task` above is also None when
                // containerd did not answer (restarting), and then a shim of the container may
                // well serve its running task.
                self.end_forgotten_shims(&c).await;
            }
            None
        })
    }
}
