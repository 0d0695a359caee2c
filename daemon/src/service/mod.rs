//! The service: checkpoints and restores, admitted, queued and run by a bounded pool of workers.
//! Each file does one job: `admit` (validate, authorize, reserve, insert, enqueue), `reserve`
//! (one job per target), `queue` (workers and the job state machine, cancel, shutdown),
//! `publish` (durability), `reconcile` (start-up), `read` (get, list, wait, logs, delete),
//! `remote` (push and pull jobs), `names` (the name rules, delete everywhere).
//!
//! The state that changes is owned by the file that changes it, in a struct whose fields only
//! that file can reach: `queue::Queue` (the queue, running jobs, their stop signals, shutdown and
//! the admissions in flight) and `reserve::Reservations` (targets and checkpoints in use). The
//! rest of `Inner` is set at start and read everywhere (catalog, engine, configuration, events
//! and metrics, which count themselves). The catalog is reached only through the service: the
//! HTTP layer, portability and schedules call named operations.
//!
//! Life of a checkpoint: `submit_checkpoint` validates, reserves the target, inserts the
//! `pending` checkpoint and its `queued` job in one transaction and enqueues the job; a worker
//! claims it (`running`), has the engine dump into `<dir>.partial`, fsyncs the images and the
//! directory, renames it to `<dir>`, and only then marks the checkpoint `ready` (and, without
//! `leave_running`, kills the tree CRIU left stopped). On failure the images are removed, the
//! CRIU log is kept in `<dir>`, and the error is recorded on both rows.
//!
//! One job per target at a time: a second job for a busy target is refused with 409 rather than
//! queued. A queued second dump of a tree that the first dump stops would fail anyway, and a cron
//! job or script learns at once that its request overlapped instead of piling up work.

mod admit;
mod hooks;
mod migrate;
mod names;
mod publish;
mod queue;
mod read;
mod reconcile;
mod remote;
mod reserve;
pub mod validate;

pub use reconcile::Reconciled;

use publish::{keep_only_log, record_taken, shown_paths, Taken};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ckptd_api::{CheckpointOptions, Target};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::Policy;
use crate::catalog::Catalog;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::telemetry::{Events, Gauges, Metrics};

#[derive(Clone)]
pub struct ServiceConfig {
    /// Where checkpoints without a `checkpoint_dir` live (`<state>/checkpoints`).
    pub checkpoints_root: PathBuf,
    pub queue_capacity: usize,
    /// A running job is stopped after this long (its target left running).
    pub job_timeout: Duration,
    /// Who may do what (the configurable part).
    pub policy: Policy,
    /// Largest archive an import (or a pull) accepts (bytes read and bytes written).
    pub import_max_bytes: u64,
    /// The configured remotes.
    pub remotes: crate::remote::Remotes,
    /// Failed runs in a row after which a schedule is disabled (0: never); a scheduled job's end
    /// records its run's outcome on the schedule (`Catalog::end_job`).
    pub schedule_max_failures: u32,
}

/// A schedule's run has ended, its outcome recorded (`Service::run_ends`).
pub struct RunEnded {
    /// The schedule as recorded with the job's end.
    pub schedule: crate::catalog::ScheduleRow,
    pub job: ckptd_api::Job,
    /// The run's failure disabled the schedule.
    pub disabled: bool,
}

#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    engine: Arc<dyn Engine>,
    /// Swapped whole by a reload (`Service::reload`); a job keeps the one it started with.
    cfg: std::sync::RwLock<Arc<ServiceConfig>>,
    /// The queue and the lives of its jobs (`queue.rs` changes it).
    queue: queue::Queue,
    /// Targets and checkpoints in use (`reserve.rs` changes it).
    reservations: reserve::Reservations,
    events: Events,
    metrics: Metrics,
    /// When the service started (Unix seconds).
    started_at: f64,
    /// runc's version, read once for the metrics.
    runc_version: tokio::sync::OnceCell<String>,
    /// Live migrations' bearer tokens for their destinations, by job: never written to disk.
    tokens: Mutex<HashMap<Uuid, String>>,
}

/// A client of `/v1/events`, counted while it lives.
pub struct EventClient(Service);

impl Drop for EventClient {
    fn drop(&mut self) {
        self.0.inner.metrics.event_clients.dec();
    }
}

/// What a restore job needs beyond its checkpoint, stored with the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RestoreWork {
    options: CheckpointOptions,
    #[serde(default)]
    into: Option<Target>,
    #[serde(default)]
    console_socket: Option<String>,
    #[serde(default)]
    lazy: bool,
    /// The images are only in a remote: pull them first.
    #[serde(default)]
    pull: Option<remote::PullWork>,
    /// A container checkpoint archive's checkpoint restored as a runc container: build the
    /// bundle (`into`'s) from this root filesystem first (`runtime::bundle`).
    #[serde(default)]
    rootfs: Option<String>,
    /// The restore's own hooks, instead of the checkpoint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hooks: Option<ckptd_api::Hooks>,
}

/// What a checkpoint job needs beyond its checkpoint: the push that follows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct CheckpointWork {
    #[serde(default)]
    push: Option<remote::PushWork>,
    /// A process target's start time when the job was admitted: the worker dumps that process
    /// only, not another one given its pid since.
    #[serde(default)]
    target_start: Option<u64>,
    /// The schedule whose run this is: the job's end records the run's outcome on it, in the
    /// same transaction (`Catalog::end_job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<Uuid>,
    /// A live migration: where to (its token is kept in memory only, `Inner::tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    migrate: Option<MigrateWork>,
}

/// A live migration's destination, stored with its job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct MigrateWork {
    to: String,
    /// The container the destination restores a runc container as, when not the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    into: Option<Target>,
}

/// A schedule's run being admitted (`Service::submit_checkpoint_of`).
pub struct RunOf<'a> {
    pub schedule: Uuid,
    /// The start time of the process the schedule was made for: another process at its pid is
    /// refused.
    pub target_start: Option<u64>,
    /// The schedule's row saying the run is running, from the run's checkpoint and job: written
    /// in their transaction, so a crash never leaves a job the schedule does not know of.
    pub record: &'a (dyn Fn(&ckptd_api::Checkpoint, &ckptd_api::Job) -> crate::catalog::ScheduleRow
             + Send
             + Sync),
}

/// The start time of the process a target names now (None for containers, or no such process).
pub fn target_start(target: &Target) -> Option<u64> {
    match target {
        Target::Process { pid } => crate::sys::TaskId::of(*pid).map(|t| t.start),
        Target::Container { .. } | Target::Group { .. } => None,
    }
}

/// Refuses a group checkpoint in a container checkpoint layout (Podman's, a kubelet's), which
/// holds one container's images; ckptd's own format holds a group (`<index>/` per member).
pub fn refuse_group(cp: &ckptd_api::Checkpoint, format: ckptd_api::ArchiveFormat) -> Result<()> {
    if let (ckptd_api::Target::Group { .. }, false) =
        (&cp.target, format == ckptd_api::ArchiveFormat::Ckptd)
    {
        return Err(Error::conflict(format!(
            "checkpoint {} is a group's ({} members, each its own image set); the {} layout \
             holds one container's images",
            cp.name,
            cp.members.len(),
            format
        ))
        .with_advice(ckptd_api::Advice::WithoutFormat));
    }
    Ok(())
}

/// The error for a process target whose pid now names another process than the one meant.
pub fn stranger(pid: i32, what: &str) -> Error {
    Error::target_unavailable(format!(
        "pid {pid} is no longer {what}: that process has ended, and pid {pid} now belongs to \
         another process (a later start time), which ckptd does not dump in its place"
    ))
    .with("pid", pid)
}

/// Where an import unpacks, inside the checkpoints root, before it is published: never a
/// checkpoint, so start-up removes what a previous run left of one.
pub const STAGING_PREFIX: &str = ".import-";

/// The partial directory a dump writes to before it is durable.
pub fn partial_dir(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

pub fn restore_log_name(job: Uuid) -> String {
    format!("restore-{job}.log")
}

/// A checkpoint's directory, reached from `/` without following a symlink (`sys::AnchoredDir`):
/// every operation on a checkpoint's files goes through this, so a path component swapped for a
/// symlink after the checkpoint was admitted leads nowhere.
pub fn anchor(cp: &ckptd_api::Checkpoint) -> Result<crate::sys::AnchoredDir> {
    let dir = Path::new(&cp.dir);
    crate::sys::AnchoredDir::open(dir).map_err(|e| {
        let hint = "a directory on its path was replaced since the checkpoint was taken; put the \
                    directory back where it was, or delete the checkpoint";
        if e.raw_os_error() == Some(libc::ELOOP) {
            crate::auth::forbidden(format!(
                "the path of checkpoint {} ({}) now goes through a symlink; ckptd follows none",
                cp.name, cp.dir
            ))
            .with_hint(hint)
        } else {
            Error::io("cannot reach the directory of checkpoint", dir, &e).with_hint(hint)
        }
    })
}

/// A checkpoint's folder, held (`sys::Folder`): reached through its anchored parent without
/// following a symlink, a directory of its owner's or root's. Anything else is a 403 that says
/// what was found there.
pub fn folder(cp: &ckptd_api::Checkpoint) -> Result<(crate::sys::AnchoredDir, crate::sys::Folder)> {
    let anchor = anchor(cp)?;
    let folder = anchor
        .open_folder(anchor.name(), cp.owner_uid)
        .map_err(|e| {
            publish::folder_error(
                e,
                cp,
                "cannot open the directory of checkpoint",
                Path::new(&cp.dir),
            )
        })?;
    Ok((anchor, folder))
}

/// The account CRIU runs as for a checkpoint's owner: None for root.
pub fn owner_account(uid: u32) -> Result<Option<crate::auth::Account>> {
    (uid != 0)
        .then(|| crate::auth::Account::of(uid))
        .transpose()
}

/// An error whose message and details name `from`, told with `to` instead.
pub fn replace_paths(mut e: Error, from: &str, to: &str) -> Error {
    fn fix(v: &mut serde_json::Value, from: &str, to: &str) {
        match v {
            serde_json::Value::String(s) => *s = s.replace(from, to),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| fix(v, from, to)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|v| fix(v, from, to)),
            _ => {}
        }
    }
    e.message = e.message.replace(from, to);
    e.details.values_mut().for_each(|v| fix(v, from, to));
    e
}

impl Inner {
    /// The configuration as it is now.
    fn cfg(&self) -> Arc<ServiceConfig> {
        self.cfg.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Service {
    pub fn new(catalog: Catalog, engine: Arc<dyn Engine>, cfg: ServiceConfig) -> Service {
        Service {
            inner: Arc::new(Inner {
                queue: queue::Queue::new(cfg.queue_capacity),
                reservations: reserve::Reservations::default(),
                catalog,
                engine,
                cfg: std::sync::RwLock::new(Arc::new(cfg)),
                events: Events::default(),
                metrics: Metrics::default(),
                started_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                runc_version: tokio::sync::OnceCell::new(),
                tokens: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The SQL layer, for unit tests that set up a catalog's state by hand. Everything else
    /// goes through the service's named operations.
    #[cfg(test)]
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn config(&self) -> Arc<ServiceConfig> {
        self.inner.cfg()
    }

    /// Takes what can change at run time from `new` (SIGHUP): who may use which directories and
    /// the members' limits, the remotes, job_timeout and import_max_bytes. Jobs running keep
    /// what they started with; the rest of `new` is ignored (it needs a restart).
    pub fn reload(&self, new: &ServiceConfig) {
        let mut cfg = self.inner.cfg.write().unwrap_or_else(|e| e.into_inner());
        let mut next = ServiceConfig::clone(&cfg);
        next.policy = new.policy.clone();
        next.remotes = new.remotes.clone();
        next.job_timeout = new.job_timeout;
        next.import_max_bytes = new.import_max_bytes;
        *cfg = Arc::new(next);
    }

    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Bytes used by ready checkpoints (`owner`'s, when given) per location (`state_dir`, each
    /// `checkpoint_dir` root, `remote:NAME`), and free bytes per local location.
    #[allow(clippy::type_complexity)]
    async fn storage_by_location(
        &self,
        owner: Option<u32>,
    ) -> Result<(Vec<(String, u64)>, Vec<(String, u64)>, Vec<(String, u64)>)> {
        let root = self.inner.cfg().checkpoints_root.clone();
        let mut used: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        used.insert("state_dir".into(), 0);
        let mut roots: std::collections::BTreeMap<String, PathBuf> =
            std::collections::BTreeMap::new();
        roots.insert("state_dir".into(), root.clone());
        for (dir, size, local, copies) in self.inner.catalog.ready_storage(owner).await? {
            if local {
                let parent = Path::new(&dir).parent().unwrap_or(Path::new("/"));
                let location = if parent == root {
                    "state_dir".to_owned()
                } else {
                    parent.display().to_string()
                };
                roots
                    .entry(location.clone())
                    .or_insert_with(|| parent.to_owned());
                *used.entry(location).or_default() += size;
            }
            for c in copies {
                *used.entry(format!("remote:{}", c.remote)).or_default() += c.size_bytes;
            }
        }
        let (free, size) = tokio::task::spawn_blocking(move || {
            let mut free = Vec::new();
            let mut size = Vec::new();
            for (l, p) in roots {
                if let Ok((f, s)) = crate::sys::space(&p) {
                    free.push((l.clone(), f));
                    size.push((l, s));
                }
            }
            (free, size)
        })
        .await
        .map_err(|e| Error::internal(format!("reading free space failed: {e}")))?;
        Ok((used.into_iter().collect(), free, size))
    }

    /// Counts an import or an export (not jobs, but counted with them in `ckptd_jobs_total`):
    /// `failed`, the error code (`cancelled` when the reader went away).
    pub fn count_transfer(&self, kind: &str, failed: Option<&str>) {
        let (result, code) = match failed {
            None => ("succeeded", ""),
            Some("cancelled") => ("cancelled", ""),
            Some(code) => ("failed", code),
        };
        self.inner.metrics.jobs.inc(&[kind, result, code, ""]);
    }

    /// Counts an answered request by route template and status class.
    pub fn count_request(&self, route: &str, class: &str) {
        self.inner.metrics.requests.inc(&[route, class]);
    }

    /// Counts a client of `/v1/events` while the returned guard lives.
    pub fn event_client(&self) -> EventClient {
        self.inner.metrics.event_clients.inc();
        EventClient(self.clone())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The container runtimes and whether each can be used now.
    pub async fn runtimes(&self) -> Vec<ckptd_api::RuntimeInfo> {
        self.inner.engine.runtimes().await
    }

    /// Bytes the ready checkpoints' images take.
    pub async fn used_bytes(&self) -> Result<u64> {
        self.inner.catalog.ready_bytes().await
    }

    /// The Prometheus exposition of the daemon's metrics, as `caller` may see them: a member's
    /// show its own checkpoints, storage locations and schedules (`schedules` is already its
    /// own) and nothing of others' but daemon-wide counts (jobs, queue, workers).
    pub async fn metrics_text(
        &self,
        caller: &crate::auth::Caller,
        workers: usize,
        schedules: Vec<crate::telemetry::ScheduleGauge>,
    ) -> Result<String> {
        let inner = &self.inner;
        let owner = caller.owner_filter();
        let by_status = inner.catalog.count_by_status(owner).await?;
        let (used_bytes, free_bytes, size_bytes) = self.storage_by_location(owner).await?;
        let runc_version = inner
            .runc_version
            .get_or_init(|| async {
                let runtimes = inner.engine.runtimes().await;
                runtimes
                    .into_iter()
                    .find(|r| r.name == "runc")
                    .and_then(|r| r.version)
                    .and_then(|v| {
                        v.lines()
                            .next()
                            .map(|l| l.trim_start_matches("runc version ").to_owned())
                    })
                    .unwrap_or_default()
            })
            .await
            .clone();
        let gauges = Gauges {
            queue_depth: inner.queue.depth(),
            busy_workers: self.running_jobs(),
            workers,
            catalog_checkpoints: by_status.iter().map(|(_, n)| n).sum(),
            by_status,
            used_bytes,
            free_bytes,
            size_bytes,
            started_at: inner.started_at,
            criu_version: inner.engine.version().unwrap_or_default(),
            runc_version,
            schedules,
        };
        Ok(inner.metrics.render(&gauges))
    }
}

#[cfg(test)]
mod tests;
