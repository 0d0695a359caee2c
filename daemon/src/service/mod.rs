//! The service: checkpoints and restores, admitted, queued and run by a bounded pool of workers.
//! Each file does one job: `admit` (validate, authorize, reserve, insert, enqueue), `reserve`
//! (one job per target), `queue` (workers and the job state machine, cancel, shutdown),
//! `publish` (durability), `reconcile` (start-up), `read` (get, list, wait, logs, delete).
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ckptd_api::{CheckpointOptions, Target};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::auth::Policy;
use crate::catalog::Catalog;
use crate::engine::{Engine, StopReason};
use crate::error::{Error, Result};
use crate::telemetry::{Events, Gauges, Metrics};

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
    cfg: ServiceConfig,
    queue: mpsc::Sender<Uuid>,
    queue_rx: tokio::sync::Mutex<mpsc::Receiver<Uuid>>,
    busy: Mutex<Busy>,
    /// Bumped whenever a job ends; waiters re-read the catalog.
    finished: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    shutting_down: AtomicBool,
    /// Requests between their shutting-down check and their queue entry (`Admitting`):
    /// shutdown waits for them before it ends the queued jobs, so none is left queued.
    admitting: AtomicUsize,
    admitted: tokio::sync::Notify,
    running: AtomicUsize,
    events: Events,
    metrics: Metrics,
    /// When the service started (Unix seconds).
    started_at: f64,
    /// runc's version, read once for the metrics.
    runc_version: tokio::sync::OnceCell<String>,
    /// Stop senders of running jobs (cancel and timeout use them).
    stoppers: Mutex<HashMap<Uuid, watch::Sender<Option<StopReason>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Ended schedule runs, for the schedules' events and retention (`run_ends`).
    run_ends: mpsc::UnboundedSender<RunEnded>,
    run_ends_rx: Mutex<Option<mpsc::UnboundedReceiver<RunEnded>>>,
}

/// A client of `/v1/events`, counted while it lives.
pub struct EventClient(Service);

impl Drop for EventClient {
    fn drop(&mut self) {
        self.0
            .inner
            .metrics
            .event_clients
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Targets and checkpoints that a queued or running job (or a delete) is using.
#[derive(Default)]
pub(super) struct Busy {
    targets: HashMap<String, Uuid>,
    checkpoints: HashSet<Uuid>,
    /// Jobs of non-root owners queued or running, and whose they are (`member_max_jobs`, and
    /// the share of the queue root keeps).
    member_jobs: HashMap<Uuid, u32>,
    /// Exports streaming a checkpoint's images now, by checkpoint.
    readers: HashMap<Uuid, usize>,
    /// Checkpoints being deleted: no export starts on one.
    deleting: HashSet<Uuid>,
}

/// An export reading a checkpoint's images: while it lives, the checkpoint is not deleted.
pub struct ReadHold {
    service: Service,
    checkpoint: Uuid,
}

impl Drop for ReadHold {
    fn drop(&mut self) {
        let mut busy = self.service.inner.busy();
        if let Some(n) = busy.readers.get_mut(&self.checkpoint) {
            *n -= 1;
            if *n == 0 {
                busy.readers.remove(&self.checkpoint);
            }
        }
    }
}

impl Service {
    /// Holds a checkpoint's images for an export: refused (409) while it is being deleted, and a
    /// delete is refused while any hold lives, so an export is never a well-formed archive of a
    /// half-deleted checkpoint.
    pub fn hold_for_reading(&self, cp: &ckptd_api::Checkpoint) -> Result<ReadHold> {
        let mut busy = self.inner.busy();
        if busy.deleting.contains(&cp.id) {
            return Err(Error::conflict(format!(
                "checkpoint {} is being deleted",
                cp.name
            )));
        }
        *busy.readers.entry(cp.id).or_default() += 1;
        Ok(ReadHold {
            service: self.clone(),
            checkpoint: cp.id,
        })
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
        Target::Container { .. } => None,
    }
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

impl Service {
    pub fn new(catalog: Catalog, engine: Arc<dyn Engine>, cfg: ServiceConfig) -> Service {
        let (queue, queue_rx) = mpsc::channel(cfg.queue_capacity);
        let (run_ends, run_ends_rx) = mpsc::unbounded_channel();
        Service {
            inner: Arc::new(Inner {
                catalog,
                engine,
                cfg,
                queue,
                queue_rx: tokio::sync::Mutex::new(queue_rx),
                busy: Mutex::new(Busy::default()),
                finished: watch::channel(0).0,
                shutdown: watch::channel(false).0,
                shutting_down: AtomicBool::new(false),
                admitting: AtomicUsize::new(0),
                admitted: tokio::sync::Notify::new(),
                running: AtomicUsize::new(0),
                stoppers: Mutex::new(HashMap::new()),
                events: Events::default(),
                metrics: Metrics::default(),
                started_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                runc_version: tokio::sync::OnceCell::new(),
                workers: Mutex::new(Vec::new()),
                run_ends,
                run_ends_rx: Mutex::new(Some(run_ends_rx)),
            }),
        }
    }

    /// The schedule runs that end from now on (and those reconciliation ended), in order; for
    /// the one taker that tells of them and applies retention after them (the schedules). Their
    /// outcome is already in the catalog: what the taker does is derived, and redone by its
    /// timer pass after a crash.
    pub fn run_ends(&self) -> Option<mpsc::UnboundedReceiver<RunEnded>> {
        self.inner
            .run_ends_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The SQL layer, for unit tests that set up a catalog's state by hand. Everything else
    /// goes through the service's named operations.
    #[cfg(test)]
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.cfg
    }

    /// Starts `n` workers.
    pub fn start(&self, n: usize) {
        let mut workers = self.inner.workers.lock().expect("workers lock");
        for i in 0..n {
            let inner = self.inner.clone();
            workers.push(tokio::spawn(async move { inner.worker(i).await }));
        }
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
        let root = self.inner.cfg.checkpoints_root.clone();
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
        self.inner
            .metrics
            .event_clients
            .fetch_add(1, Ordering::Relaxed);
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

    /// Becomes true when the daemon starts stopping (long-lived streams end then).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
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
            queue_depth: inner.queue.max_capacity() - inner.queue.capacity(),
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

    pub fn running_jobs(&self) -> usize {
        self.inner.running.load(Ordering::Relaxed)
    }

    /// Resolves once a job ends after this call (whatever its result): a queue slot may be free.
    pub fn job_ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut ended = self.inner.finished.subscribe();
        async move {
            let _ = ended.changed().await;
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    pub fn refuse_if_shutting_down(&self) -> Result<()> {
        if self.is_shutting_down() {
            return Err(
                Error::unavailable("ckptd is shutting down and takes no new jobs")
                    .with_hint("retry once the daemon has restarted"),
            );
        }
        Ok(())
    }

    /// A request that may queue a job: refused once the daemon is shutting down; otherwise
    /// shutdown waits for the guard to drop before it ends the queued jobs. The count is raised
    /// before the flag is read, and shutdown sets the flag before it reads the count (both
    /// SeqCst): either the request sees the flag, or shutdown sees the request.
    pub fn admitting(&self) -> Result<Admitting> {
        self.inner.admitting.fetch_add(1, Ordering::SeqCst);
        let guard = Admitting(self.clone());
        self.refuse_if_shutting_down()?;
        Ok(guard)
    }
}

/// A request between its shutting-down check and its queue entry (`Service::admitting`).
pub struct Admitting(Service);

impl Drop for Admitting {
    fn drop(&mut self) {
        if self.0.inner.admitting.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.inner.admitted.notify_waiters();
        }
    }
}

impl Service {
    /// Waits (up to `limit`) until no request is being admitted.
    async fn admissions_done(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = self.inner.admitted.notified();
            if self.inner.admitting.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                tracing::warn!("requests still being admitted at shutdown; their jobs are resolved at the next start");
                return;
            }
        }
    }
}

impl Inner {
    /// Stop senders of running jobs; poison is ignored as for the busy sets.
    pub(super) fn stoppers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Uuid, watch::Sender<Option<StopReason>>>> {
        self.stoppers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The busy sets; their critical sections cannot panic half-way, so poison is ignored.
    pub(super) fn busy(&self) -> std::sync::MutexGuard<'_, Busy> {
        self.busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn job_finished(&self) {
        self.finished.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests;
