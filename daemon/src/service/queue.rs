//! The queue and its workers: each job runs from `queued` to its end through one state machine
//! (`run`, `end_job`), with its stop signal (cancel, timeout) and its events and metrics. Shutdown
//! cancels what is queued and gives what runs time to finish.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ckptd_api::{Checkpoint, CheckpointStatus, Job, JobKind, JobResult, JobState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::*;
use crate::auth::Caller;
use crate::catalog::{self};
use crate::engine::{RestoreSpec, StopReason, StopSignal};
use crate::error::{Error, ErrorKind, Result};

/// The queue and the lives of the jobs on it: the state this file changes (and the count of
/// requests being admitted, which shutdown waits for).
pub(super) struct Queue {
    sender: mpsc::Sender<Uuid>,
    receiver: tokio::sync::Mutex<mpsc::Receiver<Uuid>>,
    /// Bumped whenever a job ends; waiters re-read the catalog.
    finished: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    shutting_down: AtomicBool,
    /// Requests between their shutting-down check and their queue entry (`Admitting`):
    /// shutdown waits for them before it ends the queued jobs, so none is left queued.
    admitting: AtomicUsize,
    admitted: tokio::sync::Notify,
    running: AtomicUsize,
    /// Stop senders of running jobs (cancel and timeout use them), each registered for the
    /// whole of its job's `run`: from before the catalog says it runs to after its end is
    /// recorded, so a cancel that reads a job running always finds its stop.
    stoppers: Mutex<HashMap<Uuid, watch::Sender<Option<StopReason>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Ended schedule runs, for the schedules' events and retention (`Service::run_ends`).
    run_ends: mpsc::UnboundedSender<RunEnded>,
    run_ends_rx: Mutex<Option<mpsc::UnboundedReceiver<RunEnded>>>,
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Queue {
        let (sender, receiver) = mpsc::channel(capacity);
        let (run_ends, run_ends_rx) = mpsc::unbounded_channel();
        Queue {
            sender,
            receiver: tokio::sync::Mutex::new(receiver),
            finished: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            shutting_down: AtomicBool::new(false),
            admitting: AtomicUsize::new(0),
            admitted: tokio::sync::Notify::new(),
            running: AtomicUsize::new(0),
            stoppers: Mutex::new(HashMap::new()),
            workers: Mutex::new(Vec::new()),
            run_ends,
            run_ends_rx: Mutex::new(Some(run_ends_rx)),
        }
    }

    /// A slot in the queue, held until a job's id is sent on it; None when the queue is full.
    pub(super) fn slot(&self) -> Option<mpsc::Permit<'_, Uuid>> {
        self.sender.try_reserve().ok()
    }

    /// Resolves once the queue has a free slot, in the order asked, or the daemon starts
    /// stopping (its queued jobs are ended, not taken, and free no slot): for a caller that would
    /// rather wait for room than be refused as `queue_full` (a run of the clock).
    pub(super) async fn room(&self) {
        let mut shutdown = self.shutdown.subscribe();
        tokio::select! {
            _ = self.sender.reserve() => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }

    /// How many jobs wait in the queue.
    pub(super) fn depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Changes whenever a job ends.
    pub(super) fn finished(&self) -> watch::Receiver<u64> {
        self.finished.subscribe()
    }
}

impl Service {
    /// The schedule runs that end from now on (and those reconciliation ended), in order; for
    /// the one taker that tells of them and applies retention after them (the schedules). Their
    /// outcome is already in the catalog: what the taker does is derived, and redone by its
    /// timer pass after a crash.
    pub fn run_ends(&self) -> Option<mpsc::UnboundedReceiver<RunEnded>> {
        self.inner
            .queue
            .run_ends_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Starts `n` workers.
    pub fn start(&self, n: usize) {
        let mut workers = self.inner.queue.workers.lock().expect("workers lock");
        for i in 0..n {
            let inner = self.inner.clone();
            workers.push(tokio::spawn(async move { inner.worker(i).await }));
        }
    }

    /// Becomes true when the daemon starts stopping (long-lived streams end then).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.queue.shutdown.subscribe()
    }

    pub fn running_jobs(&self) -> usize {
        self.inner.queue.running.load(Ordering::Relaxed)
    }

    /// Resolves once the job queue has a free slot (none is held for the caller: an admission
    /// can still find it full, and is then refused as `queue_full`).
    pub fn queue_room(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.inner.queue.room()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.queue.shutting_down.load(Ordering::SeqCst)
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
        self.inner.queue.admitting.fetch_add(1, Ordering::SeqCst);
        let guard = Admitting(self.clone());
        self.refuse_if_shutting_down()?;
        Ok(guard)
    }
}

/// A request between its shutting-down check and its queue entry (`Service::admitting`).
pub struct Admitting(Service);

impl Drop for Admitting {
    fn drop(&mut self) {
        if self.0.inner.queue.admitting.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.inner.queue.admitted.notify_waiters();
        }
    }
}

impl Service {
    /// Waits (up to `limit`) until no request is being admitted.
    async fn admissions_done(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = self.inner.queue.admitted.notified();
            if self.inner.queue.admitting.load(Ordering::SeqCst) == 0 {
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
        self.queue
            .stoppers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn job_finished(&self) {
        self.queue.finished.send_modify(|n| *n += 1);
    }
}

impl Service {
    /// Cancels a job. A queued job ends at once. A running one is asked to stop: CRIU is
    /// interrupted (which leaves the target running, measured at every point of a dump), what a
    /// dump had stopped is resumed, and the job ends `cancelled` moments later.
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<Job> {
        let job = self.job(caller, id).await?;
        match job.state {
            JobState::Queued => {}
            JobState::Running if job.kind == JobKind::Receive => {
                // Its request names the source's job.
                let source = self
                    .inner
                    .catalog
                    .job_with_request(job.id)
                    .await?
                    .and_then(|(_, r)| r["source_job"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "ID".into());
                return Err(Error::conflict(format!(
                    "job {id} receives a live migration from another host and ends with it"
                ))
                .with_hint(format!(
                    "cancel the migrate job on the source host: POST /v1/jobs/{source}/cancel \
                     there (ckpt cancel {source})"
                )));
            }
            JobState::Running => {
                let sender = self.inner.stoppers().get(&job.id).cloned();
                let Some(tx) = sender else {
                    // Its end was recorded between the read above and now (its stop stays
                    // registered until then): say how it ended.
                    let now = self.job(caller, id).await?;
                    return Err(if now.state.is_finished() {
                        already_ended(id, now.state)
                    } else {
                        Error::conflict(format!("job {id} cannot be stopped at this moment"))
                            .with_hint("retry the cancel in a moment")
                    });
                };
                request_stop(&tx, StopReason::Cancelled);
                return Ok(job);
            }
            s => return Err(already_ended(id, s)),
        }
        let err = Error::new(
            ErrorKind::Cancelled,
            "the job was cancelled before it started",
        );
        if !self
            .inner
            .end_job(job, Err(err), Some(JobState::Queued))
            .await?
        {
            // A worker claimed it in the meantime.
            return Box::pin(self.cancel(caller, id)).await;
        }
        self.job(caller, id).await
    }

    /// Stops taking jobs, cancels queued ones, and gives running ones `timeout` to finish.
    pub async fn shutdown(&self, timeout: Duration) {
        let inner = &self.inner;
        inner.queue.shutting_down.store(true, Ordering::SeqCst);
        inner.queue.shutdown.send_replace(true);
        let workers: Vec<JoinHandle<()>> =
            std::mem::take(&mut *inner.queue.workers.lock().expect("workers lock"));
        // A request that passed its check before the flag was set queues its job now: wait for
        // it, so that the queued jobs ended below include its.
        self.admissions_done(timeout.min(Duration::from_secs(10)))
            .await;
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
}

impl Inner {
    pub(super) async fn worker(self: Arc<Self>, n: usize) {
        let mut shutdown = self.queue.shutdown.subscribe();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let id = {
                let mut rx = self.queue.receiver.lock().await;
                tokio::select! {
                    id = rx.recv() => id,
                    _ = shutdown.changed() => None,
                }
            };
            let Some(id) = id else { break };
            self.queue.running.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.run(id).await {
                tracing::error!(job = %id, error = %e, "job bookkeeping failed");
                self.fail_unfinished(id, e).await;
            }
            self.queue.running.fetch_sub(1, Ordering::Relaxed);
        }
        tracing::debug!(worker = n, "worker stopped");
    }

    /// After `run` itself failed (the catalog could not be written): record the job as failed if
    /// it can be, and in any case free its target so later jobs are not refused forever.
    pub(super) async fn fail_unfinished(&self, id: Uuid, e: Error) {
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
            _ => self.release_job_id(id),
        }
    }

    /// Runs one job from `queued` to its end.
    pub(super) async fn run(&self, id: Uuid) -> Result<()> {
        // Its stop is there before the catalog says the job runs, and until after its end is
        // recorded: a cancel that reads it running finds the stop (one right after the start
        // was told "just starting"; one as it ended, the same). A stop that comes after the
        // work's outcome changes nothing: the job ends as it went.
        let (stop_tx, stop) = watch::channel(None);
        let _registered = Registered::new(self, id, &stop_tx);
        // Started and read in one step: a job that takes its checkpoint (a dump, a live
        // migration's source) marks it running in the same commit.
        let started = self.catalog.start_queued_job(id, &catalog::now()).await;
        let Ok(Some((true, job, request, cp))) = started else {
            return started.map(drop); // gone, or cancelled while it waited
        };
        let Some(mut cp) = cp else {
            let e = Error::not_found("the job's checkpoint no longer exists");
            return self
                .end_job(job, Err(e), Some(JobState::Running))
                .await
                .map(drop);
        };
        self.events.job("job.running", &job);
        let span = tracing::info_span!("job", id = %job.id, kind = job.kind.as_str(), target = %cp.target.key());
        let _enter = span.enter();
        tracing::info!("job started");
        drop(_enter);
        let timeout = self.cfg().job_timeout;
        let outcome = match job.kind {
            JobKind::Checkpoint => {
                let work: CheckpointWork = serde_json::from_value(request).unwrap_or_default();
                // Still the process the request named: a pid reused while the job was queued
                // is another process.
                let same = match (&cp.target, work.target_start) {
                    (Target::Process { pid }, Some(want))
                        if target_start(&cp.target) != Some(want) =>
                    {
                        Err(stranger(
                            *pid,
                            "the process this checkpoint was requested for",
                        ))
                    }
                    _ => Ok(()),
                };
                let mut hooks = Vec::new();
                let work_done = async {
                    let result = match same {
                        Ok(()) => match self.pre_dump(&cp, &mut hooks).await {
                            Ok(()) => self.take_checkpoint(&cp, stop).await,
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                    .map_err(|e| publish::file_failed_under_id(&mut cp, e));
                    record_taken(&mut cp, &result);
                    if result.is_ok() {
                        self.post_dump(&cp, &mut hooks).await;
                    }
                    result
                };
                let result = timed(work_done, timeout, &stop_tx).await;
                let push = match (&result, work.push) {
                    (Ok(_), Some(push)) => self.prepare_push(&cp, &job, push),
                    _ => None,
                };
                let outcome = result.map(|_| {
                    let r = JobResult {
                        push_job: push.as_ref().map(|p| p.job.id),
                        hooks,
                        ..Default::default()
                    };
                    (r != JobResult::default()).then_some(r)
                });
                log_outcome(&span, &outcome);
                let recorded = std::time::Instant::now();
                let ended = self.end_job_with(job, outcome, None, Some(&cp), push).await;
                self.phase(
                    crate::telemetry::target_label(&cp.target),
                    "catalog",
                    recorded,
                );
                return ended.map(drop);
            }
            JobKind::Restore => {
                let work: RestoreWork = serde_json::from_value(request)
                    .map_err(|e| Error::internal(format!("bad restore job request: {e}")))?;
                let own_hooks = work.hooks.clone();
                let restore = async {
                    let restored = match &work.pull {
                        Some(pull) => {
                            match self.run_pull(&mut cp, pull, job.id, stop.clone()).await {
                                Ok(()) => {
                                    self.restore(&cp, work, &restore_log_name(job.id), stop)
                                        .await
                                }
                                Err(e) => Err(e),
                            }
                        }
                        None => {
                            self.restore(&cp, work, &restore_log_name(job.id), stop)
                                .await
                        }
                    };
                    match restored {
                        Ok(result) => {
                            let mut result = result.unwrap_or_default();
                            self.post_restore(
                                &cp,
                                own_hooks.as_ref(),
                                result.pid,
                                &mut result.hooks,
                            )
                            .await;
                            Ok((result != JobResult::default()).then_some(result))
                        }
                        Err(e) => Err(e),
                    }
                };
                timed(restore, timeout, &stop_tx).await
            }
            JobKind::Migrate => {
                let work: CheckpointWork = serde_json::from_value(request).unwrap_or_default();
                let result = match work.migrate {
                    Some(m) => {
                        timed(
                            self.run_migration(&mut cp, &job, m, stop),
                            timeout,
                            &stop_tx,
                        )
                        .await
                    }
                    None => Err(Error::internal("a migrate job without its destination")),
                };
                log_outcome(&span, &result);
                // Moved: the row only held the images in transit, and goes. Failed: it stays,
                // failed, with CRIU's log, as a failed checkpoint does. Fallen back to a
                // checkpoint: it is that checkpoint, ready.
                let moved = result.is_ok();
                if cp.status != CheckpointStatus::Ready {
                    cp.status = CheckpointStatus::Failed;
                    cp.completed_at = Some(catalog::now());
                    cp.error = result.as_ref().err().map(Error::to_info);
                }
                let ended = self.end_job_with(job, result, None, Some(&cp), None).await;
                if moved {
                    super::migrate::drop_row(self, &cp).await;
                }
                return ended.map(drop);
            }
            JobKind::Receive => Err(Error::internal(
                "a receive job runs on its connection, never from the queue",
            )),
            JobKind::Push => {
                let work: remote::PushWork = serde_json::from_value(request)
                    .map_err(|e| Error::internal(format!("bad push job request: {e}")))?;
                timed(self.run_push(&cp, work, job.id, stop), timeout, &stop_tx).await
            }
            JobKind::Pull => {
                let work: remote::PullWork = serde_json::from_value(request)
                    .map_err(|e| Error::internal(format!("bad pull job request: {e}")))?;
                timed(
                    self.run_pull(&mut cp, &work, job.id, stop),
                    timeout,
                    &stop_tx,
                )
                .await
                .map(|()| None)
            }
        };
        log_outcome(&span, &outcome);
        self.end_job(job, outcome, None).await.map(drop)
    }

    /// Restores a checkpoint from its directory, reached without following a symlink, with CRIU
    /// running as the checkpoint's owner when that is not root.
    async fn restore(
        &self,
        cp: &Checkpoint,
        work: RestoreWork,
        log_name: &str,
        stop: StopSignal,
    ) -> Result<Option<JobResult>> {
        if work.pull.is_some() {
            super::admit::check_images_dir(cp)?;
        }
        let (_anchor, folder) = folder(cp)?;
        let images = folder.path();
        let mut stripped = Vec::new();
        if let (
            Some(rootfs),
            Some(Target::Container {
                bundle: Some(bundle),
                ..
            }),
        ) = (&work.rootfs, &work.into)
        {
            let (i, b, r) = (images.clone(), PathBuf::from(bundle), PathBuf::from(rootfs));
            let limit = self.cfg().import_max_bytes;
            stripped = tokio::task::spawn_blocking(move || {
                crate::runtime::bundle::build(&i, &b, &r, limit)
            })
            .await
            .map_err(|e| Error::internal(format!("the bundle's build failed: {e}")))??;
        }
        let spec = RestoreSpec {
            checkpoint: cp,
            into: work.into.as_ref(),
            options: work.options,
            images: &folder,
            log_name,
            console_socket: work.console_socket.as_deref(),
            lazy: work.lazy,
            owner: owner_account(cp.owner_uid)?,
            stop,
        };
        let restored = self.engine.restore(spec).await.map_err(|e| {
            shown_paths(
                crate::criu::log::full_disk_at_restore(e, &folder, log_name),
                &folder,
            )
        })?;
        // A process restored in place is the one its schedules were made for, with a new start
        // time: they follow it.
        if let (Target::Process { pid }, None, Some(p)) = (&cp.target, &work.into, restored.pid) {
            if *pid == p {
                if let Some(start) = target_start(&cp.target) {
                    self.catalog.follow_restored(p, cp.owner_uid, start).await?;
                }
            }
        }
        Ok(Some(JobResult {
            stripped,
            ..restored
        }))
    }

    /// Records a job's end (only if it is still in `from`, when given) and wakes waiters;
    /// whether it was recorded (false: another writer moved the job first and ends it).
    pub(super) async fn end_job(
        &self,
        job: Job,
        outcome: Result<Option<JobResult>>,
        from: Option<JobState>,
    ) -> Result<bool> {
        self.end_job_with(job, outcome, from, None, None).await
    }

    /// `end_job`, written in one transaction with its consequences (`Catalog::end_job`): the
    /// checkpoint a checkpoint job took, the push queued after it, the outcome of the schedule
    /// run it was. A crash before the commit leaves the job to start-up reconciliation; after
    /// it, nothing of the job's end is left to a task that a crash would forget.
    pub(super) async fn end_job_with(
        &self,
        mut job: Job,
        outcome: Result<Option<JobResult>>,
        from: Option<JobState>,
        checkpoint: Option<&Checkpoint>,
        then: Option<NextJob<'_>>,
    ) -> Result<bool> {
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
        let ended = self
            .catalog
            .end_job(catalog::JobEnd {
                job: &job,
                from,
                checkpoint,
                then: then.as_ref().map(|n| (&n.job, &n.request)),
                schedule_max_failures: self.cfg().schedule_max_failures,
            })
            .await;
        let next = match (ended, then) {
            (Err(e), then) => {
                if let Some(n) = then {
                    self.release(n.reservation);
                }
                return Err(e);
            }
            (Ok(None), then) => {
                if let Some(n) = then {
                    self.release(n.reservation);
                }
                return Ok(false);
            }
            (Ok(Some(ended)), then) => (ended, then),
        };
        {
            let (ended, then) = next;
            if let Some(n) = then {
                n.permit.send(n.job.id);
                self.events.job("job.queued", &n.job);
                tracing::info!(job = %n.job.id, after = %job.id, "push queued after the checkpoint");
            }
            self.record_end(&job, ended.checkpoint.as_ref()).await;
            if let Some((schedule, disabled)) = ended.run {
                // The schedules apply retention and tell of the outcome; it is already recorded.
                let _ = self.queue.run_ends.send(RunEnded {
                    schedule,
                    job: job.clone(),
                    disabled,
                });
            }
        }
        self.release_job(&job);
        self.job_finished();
        Ok(true)
    }

    /// Events and metrics for a job that has just ended (`cp`: its checkpoint as recorded).
    async fn record_end(&self, job: &Job, cp: Option<&Checkpoint>) {
        self.events.job(&format!("job.{}", job.state.as_str()), job);
        let secs = match (job.started_at, job.finished_at) {
            (Some(a), Some(b)) => (b - a).num_microseconds().map(|us| us as f64 / 1e6),
            _ => None,
        };
        let kind = job.kind.as_str();
        let code = job.error.as_ref().map_or("", |e| e.code.as_str());
        // For CRIU's failures, the cause ckptd recognised in its log (tcp_established, ...).
        let cause = job
            .error
            .as_ref()
            .and_then(|e| e.details.get("cause"))
            .and_then(|c| c.as_str())
            .unwrap_or("");
        self.metrics
            .jobs
            .inc(&[kind, job.state.as_str(), code, cause]);
        if let Some(started) = job.started_at {
            if let Some(us) = (started - job.created_at).num_microseconds() {
                self.metrics
                    .queue_seconds
                    .observe(&[kind], us.max(0) as f64 / 1e6);
            }
        }
        let cp = match cp {
            Some(cp) => Some(cp.clone()),
            None => self
                .catalog
                .checkpoint(&job.checkpoint_id.to_string())
                .await
                .ok()
                .flatten(),
        };
        if let (Some(s), Some(cp)) = (secs, &cp) {
            let target = crate::telemetry::target_label(&cp.target);
            self.metrics.job_seconds.observe(&[kind, target], s);
        }
        match job.kind {
            JobKind::Restore => {
                self.metrics.restores.add(job.state);
                if let (JobState::Succeeded, Some(s)) = (job.state, secs) {
                    self.metrics.restore_seconds.observe(s);
                }
            }
            JobKind::Push | JobKind::Pull | JobKind::Receive => {}
            JobKind::Migrate
                if cp
                    .as_ref()
                    .is_none_or(|c| c.status != CheckpointStatus::Ready) => {}
            JobKind::Checkpoint | JobKind::Migrate => {
                self.metrics.checkpoints.add(job.state);
                let Some(cp) = cp else {
                    return;
                };
                if cp.status == CheckpointStatus::Ready {
                    let target = crate::telemetry::target_label(&cp.target);
                    if let Some(s) = secs {
                        self.metrics.checkpoint_seconds.observe(s);
                    }
                    if let Some(st) = cp.stats {
                        let frozen = st.frozen_time_us as f64 / 1e6;
                        self.metrics.frozen_seconds.observe(frozen);
                        self.metrics
                            .target_frozen_seconds
                            .observe(&[target], frozen);
                    }
                    self.metrics
                        .checkpoint_bytes
                        .observe(&[target], cp.size_bytes as f64);
                    self.metrics.bytes_written.inc_by(cp.size_bytes);
                    self.events.checkpoint("checkpoint.ready", &cp);
                } else {
                    self.events.checkpoint("checkpoint.failed", &cp);
                }
            }
        }
    }
}

impl Inner {
    /// Queues a job that holds `reservation`: a queue slot, then the job's row with what its
    /// worker needs, then the queue entry. Refused (the reservation given back) when the queue
    /// is full or the row cannot be written.
    pub(super) async fn enqueue(
        &self,
        reservation: super::reserve::Reservation,
        job: Job,
        work: &impl serde::Serialize,
    ) -> Result<Job> {
        let Some(permit) = self.queue.slot() else {
            self.release(reservation);
            return Err(super::admit::queue_full(self.cfg().queue_capacity));
        };
        let work = serde_json::to_value(work).expect("serializes");
        if let Err(e) = self.catalog.insert_job(&job, &work).await {
            self.release(reservation);
            return Err(e);
        }
        permit.send(job.id);
        self.events.job("job.queued", &job);
        tracing::info!(job = %job.id, kind = job.kind.as_str(), checkpoint = %job.checkpoint_id, "job queued");
        Ok(job)
    }

    /// The push that follows a checkpoint job with `push_to`, reserved and given a queue slot;
    /// it is queued with the checkpoint job's end. None (logged, with an event) when it cannot
    /// be: the checkpoint stays, ready, on this host.
    pub(super) fn prepare_push(
        &self,
        cp: &Checkpoint,
        after: &Job,
        work: remote::PushWork,
    ) -> Option<NextJob<'_>> {
        let job = super::admit::new_job(JobKind::Push, cp.id, after.owner_uid);
        let prepared = self
            .reserve_checkpoint(cp.id, &cp.name)
            .and_then(|reservation| match self.queue.slot() {
                Some(permit) => Ok((reservation, permit)),
                None => {
                    self.release(reservation);
                    Err(super::admit::queue_full(self.cfg().queue_capacity))
                }
            });
        match prepared {
            Ok((reservation, permit)) => Some(NextJob {
                request: serde_json::to_value(&work).expect("serializes"),
                job,
                reservation,
                permit,
            }),
            Err(e) => {
                tracing::error!(checkpoint = %cp.name, remote = %work.remote, error = %e, "cannot queue the push that follows the checkpoint");
                self.metrics.remote.failed(&work.remote, "push", &e);
                self.events.checkpoint("remote.push_failed", cp);
                None
            }
        }
    }
}

/// A job queued by another's end, written with it: its reservation and queue slot are taken
/// first, so the commit cannot be followed by a refusal.
pub(super) struct NextJob<'a> {
    job: Job,
    request: serde_json::Value,
    reservation: super::reserve::Reservation,
    permit: mpsc::Permit<'a, Uuid>,
}

impl NextJob<'_> {
    pub(super) fn id(&self) -> Uuid {
        self.job.id
    }
}

/// Logs a job's outcome in its span.
fn log_outcome(span: &tracing::Span, outcome: &Result<Option<JobResult>>) {
    let _enter = span.enter();
    match outcome {
        Ok(_) => tracing::info!("job succeeded"),
        Err(e) => tracing::warn!(error = %e, "job failed"),
    }
}

/// Asks a running job to stop; the first reason given wins.
/// Runs a job's `work`, asking it to stop through `stop` once `timeout` has passed; it then
/// winds down, and what it ends with is the outcome. The timer is polled by the job's own task,
/// not a task of its own spawned and aborted for every job, and it ends with the work.
async fn timed<F: std::future::Future>(
    work: F,
    timeout: std::time::Duration,
    stop: &watch::Sender<Option<StopReason>>,
) -> F::Output {
    tokio::pin!(work);
    tokio::select! {
        biased;
        out = &mut work => return out,
        () = tokio::time::sleep(timeout) => request_stop(stop, StopReason::TimedOut(timeout)),
    }
    work.await
}

/// The answer to a cancel of a job that has ended.
fn already_ended(id: &str, state: JobState) -> Error {
    Error::conflict(format!("job {id} has already ended ({})", state.as_str()))
}

/// A running job's stop, registered in the queue's `stoppers` while it lives.
struct Registered<'a> {
    inner: &'a Inner,
    id: Uuid,
}

impl<'a> Registered<'a> {
    fn new(inner: &'a Inner, id: Uuid, tx: &watch::Sender<Option<StopReason>>) -> Self {
        inner.stoppers().insert(id, tx.clone());
        Registered { inner, id }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.inner.stoppers().remove(&self.id);
    }
}

pub(super) fn request_stop(tx: &watch::Sender<Option<StopReason>>, reason: StopReason) {
    tx.send_if_modified(|r| {
        let first = r.is_none();
        if first {
            *r = Some(reason);
        }
        first
    });
}

pub(super) async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
