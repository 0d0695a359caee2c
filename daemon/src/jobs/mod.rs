//! Jobs: checkpoints and restores, queued and run by a bounded pool of workers.
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

mod portability;
pub mod validate;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ckptd_api::{
    Checkpoint, CheckpointOptions, CheckpointStatus, CreateCheckpoint, DumpStats, Job, JobKind,
    JobResult, JobState, List, RestoreRequest, Target,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::auth::{self, Caller, Policy};
use crate::catalog::{self, Catalog};
use crate::engine::{
    never_stop, DumpOutput, DumpSpec, Engine, RestoreSpec, StopReason, StopSignal,
};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;
use crate::telemetry::{Events, Gauges, Metrics};

pub const DUMP_LOG: &str = "dump.log";

pub struct JobsConfig {
    /// Where checkpoints without a `checkpoint_dir` live (`<state>/checkpoints`).
    pub checkpoints_root: PathBuf,
    pub queue_capacity: usize,
    /// A running job is stopped after this long (its target left running).
    pub job_timeout: Duration,
    /// Who may do what (the configurable part).
    pub policy: Policy,
    /// Largest archive an import accepts (bytes read and bytes written).
    pub import_max_bytes: u64,
}

#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    engine: Arc<dyn Engine>,
    cfg: JobsConfig,
    queue: mpsc::Sender<Uuid>,
    queue_rx: tokio::sync::Mutex<mpsc::Receiver<Uuid>>,
    busy: Mutex<Busy>,
    /// Bumped whenever a job ends; waiters re-read the catalog.
    finished: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    shutting_down: AtomicBool,
    running: AtomicUsize,
    events: Events,
    metrics: Metrics,
    /// Stop senders of running jobs (cancel and timeout use them).
    stoppers: Mutex<HashMap<Uuid, watch::Sender<Option<StopReason>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// Targets and checkpoints that a queued or running job (or a delete) is using.
#[derive(Default)]
struct Busy {
    targets: HashMap<String, Uuid>,
    checkpoints: HashSet<Uuid>,
}

/// What a restore job needs beyond its checkpoint, stored with the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RestoreWork {
    options: CheckpointOptions,
    #[serde(default)]
    into: Option<Target>,
    #[serde(default)]
    console_socket: Option<String>,
    #[serde(default)]
    lazy: bool,
}

/// The partial directory a dump writes to before it is durable.
pub fn partial_dir(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

impl Jobs {
    pub fn new(catalog: Catalog, engine: Arc<dyn Engine>, cfg: JobsConfig) -> Jobs {
        let (queue, queue_rx) = mpsc::channel(cfg.queue_capacity);
        Jobs {
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
                running: AtomicUsize::new(0),
                stoppers: Mutex::new(HashMap::new()),
                events: Events::default(),
                metrics: Metrics::default(),
                workers: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
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

    /// Becomes true when the daemon starts stopping (long-lived streams end then).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// The Prometheus exposition of the daemon's metrics.
    pub async fn metrics_text(&self, workers: usize) -> Result<String> {
        let inner = &self.inner;
        let gauges = Gauges {
            queue_depth: inner.queue.max_capacity() - inner.queue.capacity(),
            busy_workers: self.running_jobs(),
            workers,
            catalog_checkpoints: inner.catalog.count_checkpoints().await?,
        };
        Ok(inner.metrics.render(&gauges))
    }

    pub fn running_jobs(&self) -> usize {
        self.inner.running.load(Ordering::Relaxed)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    fn refuse_if_shutting_down(&self) -> Result<()> {
        if self.is_shutting_down() {
            return Err(
                Error::unavailable("ckptd is shutting down and takes no new jobs")
                    .with_hint("retry once the daemon has restarted"),
            );
        }
        Ok(())
    }

    /// Whether `caller` may checkpoint `target` (into `dir`), and the target is there to be
    /// checkpointed now: the checks `submit_checkpoint` makes before it creates anything.
    pub async fn check_checkpoint(
        &self,
        caller: &Caller,
        target: &Target,
        dir: Option<&Path>,
    ) -> Result<()> {
        self.inner
            .cfg
            .policy
            .check_checkpoint(caller, target, dir)?;
        self.inner.engine.check_target(target).await
    }

    /// Validates a checkpoint request and queues its job. Nothing is created when it is refused.
    pub async fn submit_checkpoint(
        &self,
        caller: &Caller,
        req: CreateCheckpoint,
    ) -> Result<(Checkpoint, Job)> {
        self.refuse_if_shutting_down()?;
        let inner = &self.inner;
        let target = req.target.clone().ok_or_else(|| {
            Error::invalid(
                "the request has no \"target\"; give {\"target\":{\"kind\":\"process\",\"pid\":N}}",
            )
        })?;
        if let Some(n) = &req.name {
            validate::name(n)?;
        }
        validate::labels(&req.labels)?;
        let expires_in = req
            .expires_in
            .as_deref()
            .map(|d| validate::duration("expires_in", d))
            .transpose()?;
        let custom_dir = req
            .checkpoint_dir
            .as_deref()
            .map(validate::checkpoint_dir)
            .transpose()?;
        // Authorization first: a caller learns nothing about targets it may not touch.
        self.check_checkpoint(caller, &target, custom_dir.as_deref())
            .await?;

        let id = Uuid::new_v4();
        let created_at = catalog::now();
        let expires_at = expires_in.map(|d| validate::add_capped(created_at, d));
        let name = match &req.name {
            Some(n) => {
                if inner.catalog.name_exists(n).await? {
                    return Err(Error::conflict(format!(
                        "a checkpoint named {n:?} already exists"
                    ))
                    .with_hint("choose another name, or delete the old checkpoint first"));
                }
                n.clone()
            }
            None => {
                let base = default_name(&target, &created_at);
                if inner.catalog.name_exists(&base).await? {
                    format!("{base}-{}", &id.simple().to_string()[..8])
                } else {
                    base
                }
            }
        };
        let dir = match &custom_dir {
            Some(parent) => {
                let dir = parent.join(&name);
                for p in [dir.clone(), partial_dir(&dir)] {
                    if std::fs::symlink_metadata(&p).is_ok() {
                        return Err(Error::conflict(format!(
                            "{} already exists; ckptd creates the checkpoint's own folder in checkpoint_dir",
                            p.display()
                        ))
                        .with_hint("choose another name or checkpoint_dir"));
                    }
                }
                dir
            }
            None => inner.cfg.checkpoints_root.join(id.to_string()),
        };

        check_space(
            inner.engine.dump_estimate(&target).await?,
            dir.parent().unwrap_or(&dir),
        )?;

        let job = new_job(JobKind::Checkpoint, id, caller.uid);
        let reservation = inner.reserve(&target, None, job.id)?;
        let permit = match inner.queue.try_reserve() {
            Ok(p) => p,
            Err(_) => {
                inner.release(reservation);
                return Err(queue_full(inner.cfg.queue_capacity));
            }
        };
        let checkpoint = Checkpoint {
            id,
            name,
            target,
            status: CheckpointStatus::Pending,
            created_at,
            completed_at: None,
            dir: dir.display().to_string(),
            size_bytes: 0,
            options: req.options(),
            labels: req.labels.clone(),
            criu_version: inner.engine.version(),
            criu_config: None,
            container: None,
            stats: None,
            error: None,
            owner_uid: caller.uid,
            expires_at,
        };
        if let Err(e) = inner
            .catalog
            .insert_checkpoint_with_job(&checkpoint, &job)
            .await
        {
            inner.release(reservation);
            return Err(e);
        }
        permit.send(job.id);
        inner.events.checkpoint("checkpoint.created", &checkpoint);
        inner.events.job("job.queued", &job);
        tracing::info!(job = %job.id, checkpoint = %checkpoint.id, name = %checkpoint.name, target = %checkpoint.target.key(), "checkpoint queued");
        Ok((checkpoint, job))
    }

    /// Queues a restore of a ready checkpoint.
    pub async fn submit_restore(
        &self,
        caller: &Caller,
        reference: &str,
        req: RestoreRequest,
    ) -> Result<Job> {
        self.refuse_if_shutting_down()?;
        let inner = &self.inner;
        let cp = self.checkpoint(caller, reference).await?;
        inner
            .cfg
            .policy
            .check_restore(caller, req.target.as_ref())?;
        if cp.status != CheckpointStatus::Ready {
            return Err(Error::conflict(format!(
                "checkpoint {} is {}; only a ready checkpoint can be restored",
                cp.name,
                cp.status.as_str()
            ))
            .with_hint("see its error with GET /v1/checkpoints/{ref}, or take a new checkpoint"));
        }
        inner
            .engine
            .check_restore(&cp, req.target.as_ref(), req.console_socket.as_deref())
            .await?;
        let options = CheckpointOptions {
            leave_running: cp.options.leave_running,
            tcp_established: req.tcp_established.unwrap_or(cp.options.tcp_established),
            ext_unix_sk: req.ext_unix_sk.unwrap_or(cp.options.ext_unix_sk),
            file_locks: req.file_locks.unwrap_or(cp.options.file_locks),
            shell_job: req.shell_job.unwrap_or(cp.options.shell_job),
        };
        if req.lazy && !matches!(cp.target, Target::Process { .. }) {
            return Err(Error::invalid(format!(
                "lazy restore is offered for process checkpoints; {} is a container checkpoint",
                cp.name
            )));
        }
        check_images_dir(&cp)?;
        let job = new_job(JobKind::Restore, cp.id, caller.uid);
        // The target being restored is busy: the original, or the new container.
        let destination = req.target.as_ref().unwrap_or(&cp.target);
        let reservation = inner.reserve(destination, Some(cp.id), job.id)?;
        let permit = match inner.queue.try_reserve() {
            Ok(p) => p,
            Err(_) => {
                inner.release(reservation);
                return Err(queue_full(inner.cfg.queue_capacity));
            }
        };
        let work = RestoreWork {
            options,
            into: req.target.clone(),
            console_socket: req.console_socket.clone(),
            lazy: req.lazy,
        };
        let work = serde_json::to_value(work).expect("serializes");
        if let Err(e) = inner.catalog.insert_job(&job, &work).await {
            inner.release(reservation);
            return Err(e);
        }
        permit.send(job.id);
        inner.events.job("job.queued", &job);
        tracing::info!(job = %job.id, checkpoint = %cp.id, "restore queued");
        Ok(job)
    }

    /// A checkpoint by id or name, if `caller` may see it (others' are "not found" to it).
    pub async fn checkpoint(&self, caller: &Caller, reference: &str) -> Result<Checkpoint> {
        self.inner
            .catalog
            .checkpoint(reference)
            .await?
            .filter(|cp| caller.can_see(cp.owner_uid))
            .ok_or_else(|| {
                Error::not_found(format!("no checkpoint with id or name {reference:?}"))
                    .with_hint("list checkpoints with GET /v1/checkpoints")
            })
    }

    /// A job, if `caller` may see it.
    pub async fn job(&self, caller: &Caller, id: &str) -> Result<Job> {
        let not_found = || {
            Error::not_found(format!("no job with id {id:?}"))
                .with_hint("list jobs with GET /v1/jobs")
        };
        let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
        let mut job = self
            .inner
            .catalog
            .job(uuid)
            .await?
            .filter(|j| caller.can_see(j.owner_uid))
            .ok_or_else(not_found)?;
        if job.state == JobState::Running && job.kind == JobKind::Checkpoint {
            // What CRIU has written so far into the partial directory.
            if let Some(cp) = self
                .inner
                .catalog
                .checkpoint(&job.checkpoint_id.to_string())
                .await?
            {
                let bytes_written = sys::dir_size(&partial_dir(Path::new(&cp.dir))).unwrap_or(0);
                job.progress = Some(ckptd_api::JobProgress { bytes_written });
            }
        }
        Ok(job)
    }

    /// The checkpoints `caller` may see.
    pub async fn list_checkpoints(
        &self,
        caller: &Caller,
        mut f: catalog::CheckpointFilter,
    ) -> Result<List<Checkpoint>> {
        f.owner = caller.owner_filter();
        self.inner.catalog.list_checkpoints(&f).await
    }

    /// The jobs `caller` may see.
    pub async fn list_jobs(&self, caller: &Caller, mut f: catalog::JobFilter) -> Result<List<Job>> {
        f.owner = caller.owner_filter();
        self.inner.catalog.list_jobs(&f).await
    }

    /// The job once it has ended, or as it is when `timeout` runs out. At shutdown, queued jobs
    /// end (cancelled) and running ones are given time to finish, so waiters get a final answer.
    pub async fn wait(&self, caller: &Caller, id: &str, timeout: Duration) -> Result<Job> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut finished = self.inner.finished.subscribe();
        loop {
            let job = self.job(caller, id).await?;
            if job.state.is_finished() {
                return Ok(job);
            }
            tokio::select! {
                _ = finished.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(job),
            }
        }
    }

    /// Cancels a job. A queued job ends at once. A running one is asked to stop: CRIU is
    /// interrupted (which leaves the target running, measured at every point of a dump), what a
    /// dump had stopped is resumed, and the job ends `cancelled` moments later.
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<Job> {
        let mut job = self.job(caller, id).await?;
        match job.state {
            JobState::Queued => {}
            JobState::Running => {
                let sender = self.inner.stoppers().get(&job.id).cloned();
                let Some(tx) = sender else {
                    return Err(Error::conflict(format!("job {id} is just starting"))
                        .with_hint("retry the cancel in a moment"));
                };
                request_stop(&tx, StopReason::Cancelled);
                return Ok(job);
            }
            s => {
                return Err(Error::conflict(format!(
                    "job {id} has already ended ({})",
                    s.as_str()
                )))
            }
        }
        let err = Error::new(
            ErrorKind::Cancelled,
            "the job was cancelled before it started",
        );
        job.state = JobState::Cancelled;
        job.finished_at = Some(catalog::now());
        job.error = Some(err.to_info());
        if !self
            .inner
            .catalog
            .update_job_if(&job, JobState::Queued)
            .await?
        {
            // A worker claimed it in the meantime.
            return Box::pin(self.cancel(caller, id)).await;
        }
        if job.kind == JobKind::Checkpoint {
            if let Some(mut cp) = self
                .inner
                .catalog
                .checkpoint(&job.checkpoint_id.to_string())
                .await?
            {
                cp.status = CheckpointStatus::Failed;
                cp.completed_at = job.finished_at;
                cp.error = job.error.clone();
                self.inner.catalog.update_checkpoint(&cp).await?;
            }
        }
        self.inner.record_end(&job).await;
        self.inner.release_job(&job);
        self.inner.job_finished();
        Ok(job)
    }

    /// Removes a checkpoint's images and its row. Refused while a job uses it.
    pub async fn delete_checkpoint(&self, caller: &Caller, reference: &str) -> Result<()> {
        let inner = &self.inner;
        let cp = self.checkpoint(caller, reference).await?;
        if matches!(
            cp.status,
            CheckpointStatus::Pending | CheckpointStatus::Running
        ) {
            return Err(Error::conflict(format!(
                "checkpoint {} is {}: its job has not ended",
                cp.name,
                cp.status.as_str()
            ))
            .with_hint("wait for the job (GET /v1/jobs?state=running), then delete"));
        }
        let reservation = inner.reserve_checkpoint(cp.id)?;
        let dir = PathBuf::from(&cp.dir);
        let removed =
            sys::remove_dir_tree(&partial_dir(&dir)).and_then(|()| sys::remove_dir_tree(&dir));
        let result = match removed {
            Ok(()) => inner.catalog.delete_checkpoint(cp.id).await,
            Err(e) => Err(
                Error::io("cannot remove the checkpoint directory", &dir, &e).with_hint(
                    "fix the directory's permissions or remove it by hand, then delete again",
                ),
            ),
        };
        inner.release(reservation);
        if result.is_ok() {
            tracing::info!(checkpoint = %cp.id, name = %cp.name, "checkpoint deleted");
            inner.events.checkpoint("checkpoint.deleted", &cp);
        }
        result
    }

    /// The CRIU logs of a checkpoint: the dump's, then each restore's, oldest first.
    pub async fn logs(&self, caller: &Caller, reference: &str) -> Result<String> {
        let cp = self.checkpoint(caller, reference).await?;
        let dir = PathBuf::from(&cp.dir);
        let mut out = String::new();
        let dump_log = if dir.join(DUMP_LOG).exists() {
            dir.join(DUMP_LOG)
        } else {
            partial_dir(&dir).join(DUMP_LOG)
        };
        if let Ok(text) = std::fs::read_to_string(&dump_log) {
            out.push_str(&format!("=== {} ===\n{text}", dump_log.display()));
        }
        let restores = self
            .inner
            .catalog
            .list_jobs(&catalog::JobFilter {
                kind: Some(JobKind::Restore),
                checkpoint_id: Some(cp.id),
                limit: catalog::MAX_LIMIT,
                ..Default::default()
            })
            .await?;
        for job in restores.items.iter().rev() {
            let name = restore_log_name(job.id);
            // A lazy restore's page server logs next to it.
            for path in [dir.join(&name), dir.join(format!("lazy-{name}"))] {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    out.push_str(&format!("=== {} ===\n{text}", path.display()));
                }
            }
        }
        if out.is_empty() {
            return Err(Error::not_found(format!(
                "checkpoint {} has no CRIU log yet (status {})",
                cp.name,
                cp.status.as_str()
            )));
        }
        Ok(out)
    }

    /// Stops taking jobs, cancels queued ones, and gives running ones `timeout` to finish.
    pub async fn shutdown(&self, timeout: Duration) {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::SeqCst);
        inner.shutdown.send_replace(true);
        let workers: Vec<JoinHandle<()>> =
            std::mem::take(&mut *inner.workers.lock().expect("workers lock"));
        // Queued jobs will not run now: record that, so the caller knows to resubmit.
        let queued = inner
            .catalog
            .list_jobs(&catalog::JobFilter {
                state: Some(JobState::Queued),
                limit: catalog::MAX_LIMIT,
                ..Default::default()
            })
            .await;
        if let Ok(queued) = queued {
            let err = Error::unavailable("ckptd shut down before the job started")
                .with_hint("submit it again once the daemon has restarted");
            for job in queued.items {
                if let Err(e) = inner
                    .end_job(job, Err(err.clone()), Some(JobState::Queued))
                    .await
                {
                    tracing::error!(error = %e, "recording a cancelled job failed");
                }
            }
        }
        let running = self.running_jobs();
        if running > 0 {
            tracing::info!(
                running,
                timeout_s = timeout.as_secs(),
                "waiting for running jobs"
            );
        }
        let all = futures_join(workers);
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(
                "running jobs did not finish within {} s; they are resolved at the next start",
                timeout.as_secs()
            );
        }
    }

    /// Resolves what a previous run of the daemon left unfinished; no job stays `queued` or
    /// `running` across a restart. A dump CRIU finished while the daemon was down (it runs in its
    /// own process group and outlives a SIGKILL of the daemon) is made durable and published;
    /// any other interrupted dump is dropped and its target resumed. A restore that completed is
    /// recorded with its pid. `ready` rows whose directory vanished become `missing`; directories
    /// no row knows are reported, never deleted. `criu_wait` bounds the wait for a CRIU still
    /// writing into a partial directory.
    pub async fn reconcile(&self, criu_wait: Duration) -> Result<Reconciled> {
        let inner = &self.inner;
        let mut report = Reconciled::default();
        let restarted = Error::internal("ckptd restarted before the job finished")
            .with_hint("submit the job again");
        for state in [JobState::Queued, JobState::Running] {
            let jobs = inner
                .catalog
                .list_jobs(&catalog::JobFilter {
                    state: Some(state),
                    limit: catalog::MAX_LIMIT,
                    ..Default::default()
                })
                .await?;
            for job in jobs.items {
                let outcome = if state == JobState::Running {
                    self.recover_job(&job, &restarted, criu_wait).await?
                } else {
                    Err(restarted.clone())
                };
                match &outcome {
                    Ok(_) => report.completed += 1,
                    Err(_) => report.failed += 1,
                }
                tracing::warn!(job = %job.id, was = state.as_str(), completed = outcome.is_ok(), "resolved a job the daemon left unfinished");
                inner.end_job(job, outcome, Some(state)).await?;
            }
        }
        // Rows of checkpoints whose job is gone (should not happen; belt and braces).
        for mut cp in inner
            .catalog
            .checkpoints_with_status(&[CheckpointStatus::Pending, CheckpointStatus::Running])
            .await?
        {
            let partial = partial_dir(Path::new(&cp.dir));
            if partial.exists() {
                let _ = inner.engine.recover_dump(&cp, &partial).await;
                keep_only_log(&partial, Path::new(&cp.dir));
            }
            record_taken(&mut cp, &Err(restarted.clone()));
            inner.catalog.update_checkpoint(&cp).await?;
            report.failed += 1;
        }
        for mut cp in inner
            .catalog
            .checkpoints_with_status(&[CheckpointStatus::Ready])
            .await?
        {
            if !Path::new(&cp.dir).is_dir() {
                tracing::warn!(checkpoint = %cp.id, dir = %cp.dir, "the directory of a ready checkpoint is gone: marked missing");
                cp.status = CheckpointStatus::Missing;
                inner.catalog.update_checkpoint(&cp).await?;
                report.missing += 1;
            }
        }
        let known = inner.catalog.checkpoint_ids().await?;
        if let Ok(entries) = std::fs::read_dir(&inner.cfg.checkpoints_root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(portability::STAGING_PREFIX) {
                    // An import the previous run did not finish: never published, ours to drop.
                    tracing::warn!(path = %e.path().display(), "removing an unfinished import");
                    let _ = sys::remove_dir_tree(&e.path());
                    continue;
                }
                let id = name.trim_end_matches(".partial");
                if !Uuid::parse_str(id).is_ok_and(|u| known.contains(&u)) {
                    tracing::warn!(path = %e.path().display(), "a directory no checkpoint row knows; left in place");
                    report.unknown_dirs.push(e.path().display().to_string());
                }
            }
        }
        report.unknown_dirs.sort();
        Ok(report)
    }

    /// The outcome of a job that was running when the daemon stopped.
    async fn recover_job(
        &self,
        job: &Job,
        restarted: &Error,
        criu_wait: Duration,
    ) -> Result<Result<Option<JobResult>>> {
        let inner = &self.inner;
        let Some(mut cp) = inner
            .catalog
            .checkpoint(&job.checkpoint_id.to_string())
            .await?
        else {
            return Ok(Err(restarted.clone()));
        };
        let dir = PathBuf::from(&cp.dir);
        match job.kind {
            JobKind::Checkpoint => {
                let partial = partial_dir(&dir);
                wait_for_leftover_criu(&partial, criu_wait).await;
                let result = if partial.exists() {
                    match inner.engine.recover_dump(&cp, &partial).await {
                        Some(out) => inner.publish(out, &partial, &dir, &never_stop()).await,
                        None => {
                            keep_only_log(&partial, &dir);
                            Err(restarted.clone())
                        }
                    }
                } else if dir.join("pstree.img").exists() {
                    // Renamed (so durable) but not yet recorded: end what the dump stopped.
                    match inner.engine.recover_dump(&cp, &dir).await {
                        Some(out) => {
                            inner.engine.release(&out.stopped, true).await;
                            Ok(Taken {
                                stats: out.stats,
                                size: sys::dir_size(&dir).unwrap_or(0),
                                container: out.container,
                                criu_config: out.criu_config,
                            })
                        }
                        None => Err(restarted.clone()),
                    }
                } else {
                    Err(restarted.clone())
                };
                record_taken(&mut cp, &result);
                inner.catalog.update_checkpoint(&cp).await?;
                Ok(result.map(|_| None))
            }
            JobKind::Restore => {
                wait_for_leftover_criu(&dir, criu_wait).await;
                let Some((_, request)) = inner.catalog.job_with_request(job.id).await? else {
                    return Ok(Err(restarted.clone()));
                };
                let work: Option<RestoreWork> = serde_json::from_value(request).ok();
                let into = work.as_ref().and_then(|w| w.into.as_ref());
                let recovered = inner
                    .engine
                    .recover_restore(&cp, into, &restore_log_name(job.id))
                    .await;
                Ok(recovered.map(Some).ok_or_else(|| restarted.clone()))
            }
        }
    }
}

/// What startup reconciliation found (logged, and shown by `/v1/info`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciled {
    /// Interrupted jobs that had in fact completed and were recorded as such.
    pub completed: usize,
    pub failed: usize,
    /// Ready checkpoints whose images are gone.
    pub missing: usize,
    /// Directories in the checkpoints root that no row knows.
    pub unknown_dirs: Vec<String>,
}

/// Waits (bounded) until no CRIU (or runc) that outlived the daemon still works in `partial`.
/// Only the process ckptd started counts: it leads its own process group. Helpers it forked
/// that are left without it cannot finish anything (seen: a stopped orphan CRIU helper) and are
/// killed.
async fn wait_for_leftover_criu(partial: &Path, limit: Duration) {
    let needle = partial.display().to_string();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let me = std::process::id() as i32;
        let procs: Vec<sys::ProcStat> = sys::processes_mentioning(&needle)
            .into_iter()
            .filter(|&p| p != me)
            .filter_map(sys::proc_stat)
            .filter(|s| !s.is_zombie())
            .collect();
        let left: Vec<i32> = procs
            .iter()
            .filter(|s| s.pid == s.pgrp)
            .map(|s| s.pid)
            .collect();
        if left.is_empty() {
            let orphans: Vec<i32> = procs.iter().map(|s| s.pid).collect();
            if !orphans.is_empty() {
                tracing::warn!(?orphans, path = %needle, "killing helpers a dead CRIU left behind");
                sys::signal_all(&orphans, nix::sys::signal::Signal::SIGKILL);
            }
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(?left, path = %needle, "CRIU still runs after the wait; resolving the job anyway");
            return;
        }
        tracing::info!(?left, path = %needle, "waiting for a CRIU that outlived the daemon");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks a running job to stop; the first reason given wins.
fn request_stop(tx: &watch::Sender<Option<StopReason>>, reason: StopReason) {
    tx.send_if_modified(|r| {
        let first = r.is_none();
        if first {
            *r = Some(reason);
        }
        first
    });
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// A failed dump on a filesystem with (almost) no room left failed for lack of space, whatever
/// CRIU managed to log: a full disk can keep it from writing even its log.
fn full_disk_error(e: Error, images: &Path) -> Error {
    if e.kind == ErrorKind::InsufficientStorage {
        return e;
    }
    // CRIU ends the log of a failed dump with "Dumping FAILED."; without it, it could not write
    // its own log: the filesystem filled up (and may have been freed since by another job).
    let log_cut = e.kind == ErrorKind::CriuFailed
        && !std::fs::read_to_string(images.join(DUMP_LOG))
            .unwrap_or_default()
            .contains("FAILED");
    match sys::free_bytes(images) {
        Ok(free) if free < SPACE_MARGIN || log_cut => {
            let mut full = Error::new(
                ErrorKind::InsufficientStorage,
                format!(
                    "the filesystem holding {} filled up or failed during the dump (CRIU could not \
                     finish writing; {} KiB free now); the partial images were removed and the \
                     target left running",
                    images.display(),
                    free >> 10
                ),
            )
            .with_hint("free space there, or give a checkpoint_dir on a larger filesystem");
            for (k, v) in e.details {
                if k != "hint" {
                    full.details.insert(k, v);
                }
            }
            full.details.insert("criu_message".into(), e.message.into());
            full
        }
        _ => e,
    }
}

/// Before a restore (which runs the images' code with the credentials they record): the images
/// must still be in the directory ckptd made, a real directory owned by root that nobody else can
/// write, so that nobody could have swapped or edited them (a non-root caller may own the
/// `checkpoint_dir` they sit in).
fn check_images_dir(cp: &Checkpoint) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = Path::new(&cp.dir);
    let md = std::fs::symlink_metadata(dir).map_err(|e| {
        Error::conflict(format!(
            "the images of checkpoint {} are gone from {}: {e}",
            cp.name, cp.dir
        ))
        .with_hint("delete the checkpoint; it cannot be restored")
    })?;
    if md.file_type().is_symlink() || !md.is_dir() || md.uid() != 0 || md.mode() & 0o022 != 0 {
        return Err(Error::new(
            ErrorKind::Forbidden,
            format!(
                "refusing to restore checkpoint {}: {} is no longer the root-owned, private directory \
                 ckptd created (it may have been replaced or tampered with)",
                cp.name, cp.dir
            ),
        )
        .with_hint("restore only images you trust; delete this checkpoint and take a new one"));
    }
    Ok(())
}

/// Room kept free beyond the estimate: CRIU's own files, the log, and the estimate's slack.
const SPACE_MARGIN: u64 = 16 << 20;

/// 507 when the images (about `estimate` bytes) would not fit where they go.
fn check_space(estimate: u64, parent: &Path) -> Result<()> {
    let free = sys::free_bytes(parent)
        .map_err(|e| Error::io("cannot read the free space of", parent, &e))?;
    let needed = estimate + estimate / 10 + SPACE_MARGIN;
    if free < needed {
        return Err(Error::new(
            ErrorKind::InsufficientStorage,
            format!(
                "not enough space for the images in {}: the target holds about {} MiB of memory, \
                 which needs about {} MiB; {} MiB are free",
                parent.display(),
                estimate >> 20,
                needed >> 20,
                free >> 20
            ),
        )
        .with("needed_bytes", needed)
        .with("free_bytes", free)
        .with_hint("free space there, or give a checkpoint_dir on a larger filesystem"));
    }
    Ok(())
}

fn queue_full(capacity: usize) -> Error {
    Error::new(
        ErrorKind::QueueFull,
        format!("the job queue is full ({capacity} jobs wait for a worker)"),
    )
    .with_hint("retry later, or raise queue_capacity / workers in the config")
}

fn new_job(kind: JobKind, checkpoint_id: Uuid, owner_uid: u32) -> Job {
    Job {
        owner_uid,
        id: Uuid::new_v4(),
        kind,
        checkpoint_id,
        state: JobState::Queued,
        created_at: catalog::now(),
        started_at: None,
        finished_at: None,
        result: None,
        error: None,
        progress: None,
    }
}

pub fn restore_log_name(job: Uuid) -> String {
    format!("restore-{job}.log")
}

/// `<comm>-<UTC timestamp>`, e.g. `looper-20261127T101500Z`.
fn default_name(target: &Target, at: &chrono::DateTime<chrono::Utc>) -> String {
    let base = match target {
        Target::Process { pid } => sys::proc_stat(*pid)
            .map(|s| s.comm)
            .unwrap_or_else(|| format!("pid{pid}")),
        Target::Container { id, .. } => id.clone(),
    };
    let base = validate::name_from(&base, "p");
    format!("{base}-{}", at.format("%Y%m%dT%H%M%SZ"))
}

/// A reservation of a target (and checkpoint) for one job.
struct Reservation {
    target: Option<String>,
    checkpoint: Option<Uuid>,
}

impl Inner {
    /// Stop senders of running jobs; poison is ignored as for the busy sets.
    fn stoppers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Uuid, watch::Sender<Option<StopReason>>>> {
        self.stoppers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The busy sets; their critical sections cannot panic half-way, so poison is ignored.
    fn busy(&self) -> std::sync::MutexGuard<'_, Busy> {
        self.busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reserve(&self, target: &Target, checkpoint: Option<Uuid>, job: Uuid) -> Result<Reservation> {
        let mut busy = self.busy();
        let key = target.key();
        if let Some(other) = busy.targets.get(&key) {
            return Err(Error::conflict(format!(
                "another job ({other}) is already working on {key}; one job per target runs at a time"
            ))
            .with("job_id", other.to_string())
            .with_hint(format!("wait for it to end (GET /v1/jobs/{other}?wait=60), then retry")));
        }
        if let Some(c) = checkpoint {
            if busy.checkpoints.contains(&c) {
                return Err(
                    Error::conflict(format!("checkpoint {c} is in use by another job"))
                        .with_hint("wait for that job to end, then retry"),
                );
            }
            busy.checkpoints.insert(c);
        }
        busy.targets.insert(key.clone(), job);
        Ok(Reservation {
            target: Some(key),
            checkpoint,
        })
    }

    fn reserve_checkpoint(&self, checkpoint: Uuid) -> Result<Reservation> {
        let mut busy = self.busy();
        if !busy.checkpoints.insert(checkpoint) {
            return Err(
                Error::conflict(format!("checkpoint {checkpoint} is in use by a job"))
                    .with_hint("wait for the job to end (GET /v1/jobs?state=running), then retry"),
            );
        }
        Ok(Reservation {
            target: None,
            checkpoint: Some(checkpoint),
        })
    }

    fn release(&self, r: Reservation) {
        let mut busy = self.busy();
        if let Some(t) = r.target {
            busy.targets.remove(&t);
        }
        if let Some(c) = r.checkpoint {
            busy.checkpoints.remove(&c);
        }
    }

    /// Releases everything `job` holds: its target, and the checkpoint a restore reads.
    fn release_job(&self, job: &Job) {
        let mut busy = self.busy();
        busy.targets.retain(|_, j| *j != job.id);
        if job.kind == JobKind::Restore {
            busy.checkpoints.remove(&job.checkpoint_id);
        }
    }

    fn job_finished(&self) {
        self.finished.send_modify(|n| *n += 1);
    }

    async fn worker(self: Arc<Self>, n: usize) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let id = {
                let mut rx = self.queue_rx.lock().await;
                tokio::select! {
                    id = rx.recv() => id,
                    _ = shutdown.changed() => None,
                }
            };
            let Some(id) = id else { break };
            self.running.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.run(id).await {
                tracing::error!(job = %id, error = %e, "job bookkeeping failed");
                self.fail_unfinished(id, e).await;
            }
            self.running.fetch_sub(1, Ordering::Relaxed);
        }
        tracing::debug!(worker = n, "worker stopped");
    }

    /// After `run` itself failed (the catalog could not be written): record the job as failed if
    /// it can be, and in any case free its target so later jobs are not refused forever.
    async fn fail_unfinished(&self, id: Uuid, e: Error) {
        match self.catalog.job(id).await {
            Ok(Some(job)) if !job.state.is_finished() => {
                let from = job.state;
                let release = job.clone();
                if let Err(e2) = self.end_job(job, Err(e), Some(from)).await {
                    tracing::error!(job = %id, error = %e2, "cannot record the job's failure");
                    self.release_job(&release);
                    self.job_finished();
                }
            }
            Ok(Some(job)) => self.release_job(&job),
            _ => self.busy().targets.retain(|_, j| *j != id),
        }
    }

    /// Runs one job from `queued` to its end.
    async fn run(&self, id: Uuid) -> Result<()> {
        let Some((mut job, request)) = self.catalog.job_with_request(id).await? else {
            return Ok(());
        };
        if job.state != JobState::Queued {
            return Ok(()); // cancelled while it waited
        }
        let Some(mut cp) = self
            .catalog
            .checkpoint(&job.checkpoint_id.to_string())
            .await?
        else {
            let e = Error::not_found("the job's checkpoint no longer exists");
            return self.end_job(job, Err(e), Some(JobState::Queued)).await;
        };
        job.state = JobState::Running;
        job.started_at = Some(catalog::now());
        if !self.catalog.update_job_if(&job, JobState::Queued).await? {
            return Ok(()); // cancelled just now
        }
        self.events.job("job.running", &job);
        let span = tracing::info_span!("job", id = %job.id, kind = job.kind.as_str(), target = %cp.target.key());
        let _enter = span.enter();
        tracing::info!("job started");
        drop(_enter);
        let (stop_tx, stop) = watch::channel(None);
        self.stoppers().insert(job.id, stop_tx.clone());
        let timeout = self.cfg.job_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            request_stop(&stop_tx, StopReason::TimedOut(timeout));
        });
        let outcome = match job.kind {
            JobKind::Checkpoint => {
                cp.status = CheckpointStatus::Running;
                self.catalog.update_checkpoint(&cp).await?;
                let result = self.take_checkpoint(&cp, stop).await;
                record_taken(&mut cp, &result);
                self.catalog.update_checkpoint(&cp).await?;
                result.map(|_| None)
            }
            JobKind::Restore => {
                let work: RestoreWork = serde_json::from_value(request)
                    .map_err(|e| Error::internal(format!("bad restore job request: {e}")))?;
                let spec = RestoreSpec {
                    checkpoint: &cp,
                    into: work.into.as_ref(),
                    options: work.options,
                    images_dir: Path::new(&cp.dir),
                    log_name: &restore_log_name(job.id),
                    console_socket: work.console_socket.as_deref(),
                    lazy: work.lazy,
                    stop,
                };
                self.engine.restore(spec).await.map(Some)
            }
        };
        timer.abort();
        self.stoppers().remove(&job.id);
        let _enter = span.enter();
        match &outcome {
            Ok(_) => tracing::info!("job succeeded"),
            Err(e) => tracing::warn!(error = %e, "job failed"),
        }
        drop(_enter);
        self.end_job(job, outcome, None).await
    }

    /// Records a job's end (optionally only if it is still in `from`) and wakes waiters.
    async fn end_job(
        &self,
        mut job: Job,
        outcome: Result<Option<JobResult>>,
        from: Option<JobState>,
    ) -> Result<()> {
        job.finished_at = Some(catalog::now());
        match outcome {
            Ok(result) => {
                job.state = JobState::Succeeded;
                job.result = result;
            }
            Err(e) => {
                job.state = if e.kind == ErrorKind::Cancelled
                    || (from == Some(JobState::Queued) && e.kind == ErrorKind::Unavailable)
                {
                    JobState::Cancelled
                } else {
                    JobState::Failed
                };
                job.error = Some(e.to_info());
            }
        }
        let written = match from {
            Some(f) => self.catalog.update_job_if(&job, f).await?,
            None => {
                self.catalog.update_job(&job).await?;
                true
            }
        };
        if written && job.kind == JobKind::Checkpoint && from.is_some() {
            if let Some(mut cp) = self
                .catalog
                .checkpoint(&job.checkpoint_id.to_string())
                .await?
            {
                if !matches!(
                    cp.status,
                    CheckpointStatus::Ready | CheckpointStatus::Failed
                ) {
                    cp.status = CheckpointStatus::Failed;
                    cp.completed_at = job.finished_at;
                    cp.error = job.error.clone();
                    self.catalog.update_checkpoint(&cp).await?;
                }
            }
        }
        if written {
            self.record_end(&job).await;
        }
        self.release_job(&job);
        self.job_finished();
        Ok(())
    }

    /// Events and metrics for a job that has just ended.
    async fn record_end(&self, job: &Job) {
        self.events.job(&format!("job.{}", job.state.as_str()), job);
        let secs = match (job.started_at, job.finished_at) {
            (Some(a), Some(b)) => (b - a).num_microseconds().map(|us| us as f64 / 1e6),
            _ => None,
        };
        match job.kind {
            JobKind::Restore => {
                self.metrics.restores.add(job.state);
                if let (JobState::Succeeded, Some(s)) = (job.state, secs) {
                    self.metrics.restore_seconds.observe(s);
                }
            }
            JobKind::Checkpoint => {
                self.metrics.checkpoints.add(job.state);
                let Ok(Some(cp)) = self
                    .catalog
                    .checkpoint(&job.checkpoint_id.to_string())
                    .await
                else {
                    return;
                };
                if cp.status == CheckpointStatus::Ready {
                    if let Some(s) = secs {
                        self.metrics.checkpoint_seconds.observe(s);
                    }
                    if let Some(st) = cp.stats {
                        self.metrics
                            .frozen_seconds
                            .observe(st.frozen_time_us as f64 / 1e6);
                    }
                    self.metrics
                        .bytes_written
                        .fetch_add(cp.size_bytes, Ordering::Relaxed);
                    self.events.checkpoint("checkpoint.ready", &cp);
                } else {
                    self.events.checkpoint("checkpoint.failed", &cp);
                }
            }
        }
    }

    /// Dump, make durable, publish.
    async fn take_checkpoint(&self, cp: &Checkpoint, stop: StopSignal) -> Result<Taken> {
        // A non-root owner's target is checked again now that the job runs: the tree may have
        // changed (or its pid been reused) since the request.
        if let (Target::Process { pid }, false) = (&cp.target, cp.owner_uid == 0) {
            auth::owns_tree(cp.owner_uid, *pid)?;
        }
        let dir = PathBuf::from(&cp.dir);
        let partial = partial_dir(&dir);
        sys::create_private_dir(&partial)
            .map_err(|e| Error::io("cannot create the image directory", &partial, &e))?;
        let out = self
            .engine
            .dump(DumpSpec {
                target: &cp.target,
                options: cp.options,
                images_dir: &partial,
                log_name: DUMP_LOG,
                stop: stop.clone(),
            })
            .await;
        let out = match out {
            Ok(out) => out,
            Err(mut e) => {
                e = full_disk_error(e, &partial);
                keep_only_log(&partial, &dir);
                if e.details.contains_key("log") {
                    e.details.insert(
                        "log".into(),
                        dir.join(DUMP_LOG).display().to_string().into(),
                    );
                }
                return Err(e);
            }
        };
        self.publish(out, &partial, &dir, &stop).await
    }

    /// Makes a finished dump's images durable and publishes them: fsync every file and the
    /// directory, rename `.partial` to the final directory, fsync the parent; only then end what
    /// the dump left stopped. If that fails, or a stop is requested, the target carries on and
    /// the images go.
    async fn publish(
        &self,
        out: DumpOutput,
        partial: &Path,
        dir: &Path,
        stop: &StopSignal,
    ) -> Result<Taken> {
        let stopped_now = *stop.borrow();
        if let Some(reason) = stopped_now {
            self.engine.release(&out.stopped, false).await;
            keep_only_log(partial, dir);
            return Err(reason.error());
        }
        let p = partial.to_owned();
        let d = dir.to_owned();
        let durable = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            sys::fsync_dir_tree(&p)?;
            std::fs::rename(&p, &d)?;
            sys::fsync_dir(d.parent().unwrap_or(Path::new("/")))?;
            sys::dir_size(&d)
        })
        .await
        .map_err(|e| Error::internal(format!("durability task failed: {e}")))?;
        match durable {
            Ok(size) => {
                // A stop that came while the images were made durable still wins: the target
                // carries on and the checkpoint is dropped, as the caller asked.
                let stopped_now = *stop.borrow();
                if let Some(reason) = stopped_now {
                    self.engine.release(&out.stopped, false).await;
                    remove_images(dir);
                    return Err(reason.error());
                }
                self.engine.release(&out.stopped, true).await;
                Ok(Taken {
                    stats: out.stats,
                    size,
                    container: out.container,
                    criu_config: out.criu_config,
                })
            }
            Err(e) => {
                // Not durable: the target must survive, and nothing half-written stays.
                self.engine.release(&out.stopped, false).await;
                keep_only_log(partial, dir);
                Err(Error::io("cannot make the checkpoint images durable in", partial, &e)
                    .with_hint("check free space and the filesystem's health; the process was left running"))
            }
        }
    }
}

/// Writes a dump's outcome onto its checkpoint.
fn record_taken(cp: &mut Checkpoint, result: &Result<Taken>) {
    cp.completed_at = Some(catalog::now());
    match result {
        Ok(done) => {
            cp.status = CheckpointStatus::Ready;
            cp.stats = done.stats;
            cp.size_bytes = done.size;
            cp.container = done.container.clone();
            cp.criu_config = done.criu_config.clone();
        }
        Err(e) => {
            cp.status = CheckpointStatus::Failed;
            cp.error = Some(e.to_info());
        }
    }
}

/// What a successful dump records on its checkpoint.
struct Taken {
    stats: Option<DumpStats>,
    size: u64,
    container: Option<ckptd_api::ContainerRecord>,
    criu_config: Option<String>,
}

/// After a failed dump: remove the images, keep CRIU's log in the checkpoint's directory.
fn keep_only_log(partial: &Path, dir: &Path) {
    remove_images(partial);
    if std::fs::rename(partial, dir).is_err() {
        let _ = sys::remove_dir_tree(partial);
    }
}

/// Removes everything in an image directory but CRIU's dump log.
fn remove_images(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name() != DUMP_LOG {
                let _ = sys::remove_dir_tree(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests;
