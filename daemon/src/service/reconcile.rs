//! Start-up reconciliation: what a previous run of the daemon left unfinished is resolved before
//! any new job runs. No job stays `queued` or `running` across a restart.

use std::path::Path;
use std::time::Duration;

use ckptd_api::{CheckpointStatus, Job, JobKind, JobResult, JobState};
use uuid::Uuid;

use super::*;
use crate::catalog::{self};
use crate::engine::never_stop;
use crate::error::{Error, Result};
use crate::runtime::container;
use crate::sys;

impl Service {
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
                if job.kind == JobKind::Push && self.requeue(&job, state).await? {
                    // A push copies a ready checkpoint (the one `push_to` queued with its
                    // checkpoint job's end, or one asked for); one the daemon's end cut short
                    // starts afresh, its upload aborted. The checkpoint stays here meanwhile.
                    report.requeued += 1;
                    tracing::warn!(job = %job.id, was = state.as_str(), "queued again a push the daemon left unfinished");
                    continue;
                }
                // A dump's start is committed lazily (`Catalog::start_queued_job`): after a
                // power loss its job can read queued with its dump begun on disk, and is then
                // recovered as a running one is.
                let started = state == JobState::Running || self.dump_begun(&job).await?;
                let (outcome, taken) = if started {
                    self.recover_job(&job, &restarted, criu_wait).await?
                } else {
                    (Err(restarted.clone()), None)
                };
                match &outcome {
                    Ok(_) => report.completed += 1,
                    Err(_) => report.failed += 1,
                }
                tracing::warn!(job = %job.id, was = state.as_str(), completed = outcome.is_ok(), "resolved a job the daemon left unfinished");
                match taken {
                    // A dump published now: recorded, with the push that follows it, as the
                    // worker would have.
                    Some((cp, push)) => {
                        let next = match (&outcome, push) {
                            (Ok(_), Some(p)) => inner.prepare_push(&cp, &job, p),
                            _ => None,
                        };
                        let outcome = outcome.map(|r| {
                            next.as_ref()
                                .map(|n| JobResult {
                                    push_job: Some(n.id()),
                                    ..Default::default()
                                })
                                .or(r)
                        });
                        inner
                            .end_job_with(job, outcome, Some(state), Some(&cp), next)
                            .await?;
                    }
                    None => {
                        inner.end_job(job, outcome, Some(state)).await?;
                    }
                }
            }
        }
        // Rows of checkpoints whose job is gone (should not happen; belt and braces).
        for mut cp in inner
            .catalog
            .checkpoints_with_status(&[CheckpointStatus::Pending, CheckpointStatus::Running])
            .await?
        {
            if let Ok(anchor) = anchor(&cp) {
                if let Ok(partial) = anchor.open_folder(&anchor.partial_name(), cp.owner_uid) {
                    let _ = answered(&cp, inner.engine.recover_dump(&cp, &partial)).await;
                    keep_only_log(&anchor, &partial);
                }
            }
            record_taken(&mut cp, &Err(restarted.clone()));
            inner.catalog.update_checkpoint(&cp).await?;
            report.failed += 1;
        }
        // One listing of ckptd's own storage: ready rows there are looked up in it rather than
        // opened one by one, and what no row knows is reported from it.
        let root = &inner.cfg().checkpoints_root;
        let listed: Vec<std::fs::DirEntry> = std::fs::read_dir(root)
            .map(|entries| entries.flatten().collect())
            .unwrap_or_default();
        let own_dirs: std::collections::HashSet<std::path::PathBuf> = listed
            .iter()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        // Ready rows a page at a time: a catalog of 100,000 is never held at once.
        let mut after = None;
        loop {
            let page = inner
                .catalog
                .list_checkpoints(&catalog::CheckpointFilter {
                    status: Some(CheckpointStatus::Ready),
                    limit: catalog::MAX_LIMIT,
                    after,
                    ..Default::default()
                })
                .await?;
            for mut cp in page.items {
                // A checkpoint whose images are only in remotes has no directory here.
                let present = || {
                    let dir = std::path::Path::new(&cp.dir);
                    if dir.parent() == Some(root.as_path()) {
                        own_dirs.contains(dir)
                    } else {
                        anchor(&cp).is_ok_and(|a| a.open_folder(a.name(), cp.owner_uid).is_ok())
                    }
                };
                if cp.is_local() && !present() {
                    tracing::warn!(checkpoint = %cp.id, dir = %cp.dir, "the directory of a ready checkpoint is gone: marked missing");
                    cp.status = CheckpointStatus::Missing;
                    inner.catalog.update_checkpoint(&cp).await?;
                    report.missing += 1;
                }
            }
            match page.next.and_then(|n| n.parse().ok()) {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let known = inner.catalog.checkpoint_ids().await?;
        for e in listed {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(STAGING_PREFIX) {
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
        report.unknown_dirs.sort();
        Ok(report)
    }

    /// Whether a checkpoint job's dump has a folder on disk, partial or renamed (a queued job's
    /// never has, unless its start's commit was lost).
    async fn dump_begun(&self, job: &Job) -> Result<bool> {
        if job.kind != JobKind::Checkpoint {
            return Ok(false);
        }
        let Some(cp) = self
            .inner
            .catalog
            .checkpoint(&job.checkpoint_id.to_string())
            .await?
        else {
            return Ok(false);
        };
        let Ok(anchor) = anchor(&cp) else {
            return Ok(false);
        };
        Ok([anchor.partial_name(), anchor.name().to_owned()]
            .iter()
            .any(|name| anchor.open_folder(name, cp.owner_uid).is_ok()))
    }

    /// The outcome of a job that was running when the daemon stopped.
    pub(super) async fn recover_job(
        &self,
        job: &Job,
        restarted: &Error,
        criu_wait: Duration,
    ) -> Result<Recovered> {
        let inner = &self.inner;
        let Some(mut cp) = inner
            .catalog
            .checkpoint(&job.checkpoint_id.to_string())
            .await?
        else {
            return Ok((Err(restarted.clone()), None));
        };
        if matches!(job.kind, JobKind::Push | JobKind::Pull) {
            // A transfer does not outlive the daemon. A pull's staging directory is removed
            // below; a push's multipart upload is aborted (in the background, asked again while
            // the server does not answer).
            if job.kind == JobKind::Push {
                self.abort_left_upload(job).await;
            }
            return Ok((Err(restarted.clone()), None));
        }
        match job.kind {
            JobKind::Migrate => {
                let result = self.recover_migration(&mut cp, restarted).await;
                if cp.status != ckptd_api::CheckpointStatus::Ready {
                    let _ = inner.catalog.delete_checkpoint(cp.id).await;
                    return Ok((result, None));
                }
                return Ok((result, Some((cp, None))));
            }
            JobKind::Receive => {
                return Ok((self.recover_receive(&cp, job, restarted).await, None));
            }
            _ => {}
        }
        let Ok(anchor) = anchor(&cp) else {
            return Ok((Err(restarted.clone()), None));
        };
        match job.kind {
            JobKind::Migrate | JobKind::Receive => unreachable!("handled above"),
            JobKind::Push | JobKind::Pull => unreachable!("handled above"),
            JobKind::Checkpoint => {
                let partial_name = anchor.partial_name();
                // A runtime's checkpoint (Podman's, containerd's) goes on without the daemon, and
                // holds the container until its CRIU ends.
                let left = inner.engine.left_runc_checkpoints(&cp);
                end_left(&cp, left, criu_wait, container::LeftRunc::Checkpoint).await;
                wait_for_leftover_criu(&anchor.real_sibling(&partial_name), criu_wait).await;
                // Each folder held, never followed through a symlink, the owner's or root's.
                let partial = anchor.open_folder(&partial_name, cp.owner_uid);
                let done = anchor
                    .open_folder(anchor.name(), cp.owner_uid)
                    .ok()
                    .filter(|f| f.has_file("pstree.img"));
                // A dump CRIU finished while no daemon watched is published only from a folder
                // nobody but root could change meanwhile: in a member's directory the member
                // could have swapped in images of its own, so there the target is let run and
                // the job fails.
                let trusted = anchor.parent_owner().is_ok_and(|uid| uid == 0);
                let untrusted = || {
                    Error::internal(
                        "ckptd restarted before the checkpoint was published, and its images \
                         are in a directory its owner can change, so they are not trusted; the \
                         process was left running",
                    )
                    .with_hint("take the checkpoint again")
                };
                let result = if let Ok(partial) = partial {
                    match answered(&cp, inner.engine.recover_dump(&cp, &partial)).await {
                        Some(out) if !trusted => {
                            inner.engine.release(&out.stopped, false).await;
                            keep_only_log(&anchor, &partial);
                            Err(untrusted())
                        }
                        Some(out) => {
                            inner
                                .publish(
                                    out,
                                    anchor,
                                    partial,
                                    cp.owner_uid,
                                    &never_stop(),
                                    crate::telemetry::target_label(&cp.target),
                                )
                                .await
                        }
                        None => {
                            keep_only_log(&anchor, &partial);
                            Err(restarted.clone())
                        }
                    }
                } else if let Some(done) = done {
                    // Renamed (so durable) but not yet recorded: end what the dump stopped.
                    match answered(&cp, inner.engine.recover_dump(&cp, &done)).await {
                        Some(out) if !trusted => {
                            inner.engine.release(&out.stopped, false).await;
                            let _ = done.clear(&[crate::criu::DUMP_LOG]);
                            Err(untrusted())
                        }
                        Some(out) => {
                            inner.engine.release(&out.stopped, true).await;
                            Ok(Taken {
                                stats: out.stats,
                                size: done.size().unwrap_or(0),
                                container: out.container,
                                criu_config: out.criu_config,
                                terminal: out.terminal,
                                members: out.members,
                            })
                        }
                        None => Err(restarted.clone()),
                    }
                } else {
                    Err(restarted.clone())
                };
                record_taken(&mut cp, &result);
                let push = inner
                    .catalog
                    .job_with_request(job.id)
                    .await?
                    .and_then(|(_, r)| serde_json::from_value::<CheckpointWork>(r).ok())
                    .and_then(|w| w.push);
                Ok((result.map(|_| None), Some((cp, push))))
            }
            JobKind::Restore => {
                let request = inner.catalog.job_with_request(job.id).await?;
                let work: Option<RestoreWork> = request
                    .as_ref()
                    .and_then(|(_, r)| serde_json::from_value(r.clone()).ok());
                let into = work.as_ref().and_then(|w| w.into.as_ref());
                // A runtime's restore (Docker's start, containerd's task start, Podman's) goes on
                // without the daemon, and holds the container until its CRIU ends.
                let left = inner.engine.left_runc_restores(&cp, into);
                end_left(&cp, left, criu_wait, container::LeftRunc::Restore).await;
                wait_for_leftover_criu(anchor.real(), criu_wait).await;
                // The CRIU that ended with the daemon may have left its cgroup yard mounted.
                if let Ok(folder) = anchor.open_folder(anchor.name(), cp.owner_uid) {
                    if let Err(e) = folder.detach_criu_yards() {
                        tracing::warn!(checkpoint = %cp.name, error = %e, "cannot unmount the cgroup yard CRIU left");
                    }
                }
                if request.is_none() {
                    return Ok((Err(restarted.clone()), None));
                }
                let recovered = answered(
                    &cp,
                    inner
                        .engine
                        .recover_restore(&cp, into, &restore_log_name(job.id)),
                )
                .await;
                if let (None, Some(started)) = (&recovered, job.started_at) {
                    let removed = inner.engine.remove_left_restore(&cp, into, started);
                    let _ = tokio::time::timeout(container::ANSWER_AFTER_STOP, removed).await;
                }
                Ok((recovered.map(Some).ok_or_else(|| restarted.clone()), None))
            }
        }
    }
}

impl Service {
    /// Aborts the multipart upload a push killed with the daemon had started.
    async fn abort_left_upload(&self, job: &Job) {
        let Ok(Some((_, request))) = self.inner.catalog.job_with_request(job.id).await else {
            return;
        };
        let Ok(work) = serde_json::from_value::<super::remote::PushWork>(request) else {
            return;
        };
        let Some((key, id)) = work.upload else { return };
        match self.inner.cfg().remotes.get(&work.remote) {
            Ok(r) => {
                tracing::warn!(remote = %work.remote, %key, "aborting the upload of a push the daemon's stop interrupted");
                r.abort(&key, &id);
            }
            Err(_) => {
                tracing::warn!(remote = %work.remote, %key, "a push the daemon's stop interrupted left an upload in a remote no longer configured")
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
    /// Pushes left queued, queued again.
    pub requeued: usize,
    /// Ready checkpoints whose images are gone.
    pub missing: usize,
    /// Directories in the checkpoints root that no row knows.
    pub unknown_dirs: Vec<String>,
}

/// Waits (bounded) until no CRIU (or runc) that outlived the daemon still works in `partial`.
/// Only the process ckptd started counts: it leads its own process group. Helpers it forked
/// that are left without it cannot finish anything (seen: a stopped orphan CRIU helper) and are
/// killed.
/// How a job that was running ended: its outcome and, for a checkpoint job, its checkpoint as
/// recovered and the push to queue after it.
type Recovered = (
    Result<Option<JobResult>>,
    Option<(ckptd_api::Checkpoint, Option<super::remote::PushWork>)>,
);

impl Service {
    /// Puts a push the daemon left `from` (queued or running) back on the queue, queued, with
    /// its reservation; a running one's upload is aborted first. False when it cannot be (the
    /// queue is full, or its checkpoint is in use).
    async fn requeue(&self, job: &Job, from: JobState) -> Result<bool> {
        let inner = &self.inner;
        let Ok(reservation) =
            inner.reserve_checkpoint(job.checkpoint_id, &job.checkpoint_id.to_string())
        else {
            return Ok(false);
        };
        let Some(permit) = inner.queue.slot() else {
            inner.release(reservation);
            return Ok(false);
        };
        if from == JobState::Running {
            self.abort_left_upload(job).await;
            let mut again = job.clone();
            again.state = JobState::Queued;
            again.started_at = None;
            if !inner.catalog.update_job_if(&again, from).await? {
                inner.release(reservation);
                return Ok(false);
            }
        }
        permit.send(job.id);
        Ok(true)
    }
}

/// Waits for, then ends, the runcs a runtime still runs for `cp`'s interrupted job, which
/// `found` finds (`container::end_left_runcs`); finding them is bounded as `answered` bounds a
/// recovery.
async fn end_left(
    cp: &ckptd_api::Checkpoint,
    found: impl std::future::Future<Output = Option<crate::engine::LeftRuncs>>,
    wait: Duration,
    left: container::LeftRunc,
) {
    if let Some(find) = answered(cp, found).await {
        let what = format!("checkpoint {}'s job", cp.name);
        container::end_left_runcs(&find, &what, wait, left).await;
    }
}

/// What an engine's recovery of checkpoint `cp` answers, or None when it has not answered
/// within `container::ANSWER_AFTER_STOP` (a container runtime that does not answer must not keep
/// the daemon from starting).
async fn answered<T>(
    cp: &ckptd_api::Checkpoint,
    recovery: impl std::future::Future<Output = Option<T>>,
) -> Option<T> {
    tokio::time::timeout(container::ANSWER_AFTER_STOP, recovery)
        .await
        .unwrap_or_else(|_| {
            tracing::error!(checkpoint = %cp.name, "the container runtime did not answer the recovery of an interrupted job; it is recorded as failed");
            None
        })
}

pub(super) async fn wait_for_leftover_criu(partial: &Path, limit: Duration) {
    // CRIU names its image directory through the descriptor the previous daemon held
    // (`/proc/<pid>/fd/<n>/<name>.partial`, or `CKPTD_IMAGES` for an owner's CRIU): the directory's
    // own name is what every such run mentions.
    let needle = format!(
        "/{}",
        partial.file_name().unwrap_or_default().to_string_lossy()
    );
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let me = std::process::id() as i32;
        let mut procs: Vec<sys::ProcStat> = sys::processes_mentioning(&needle)
            .into_iter()
            .filter(|&p| p != me)
            .filter_map(sys::proc_stat)
            .filter(|s| !s.is_zombie())
            .collect();
        // Only what ckptd started counts: a CRIU or runc, and what runs in the process group
        // one of them leads (ckptd starts each as a group leader). The name is a checkpoint's,
        // which a member may choose: any other process that mentions it is neither waited for
        // nor signalled.
        let started = |s: &sys::ProcStat| matches!(s.comm.as_str(), "criu" | "runc");
        let groups: std::collections::HashSet<i32> = procs
            .iter()
            .filter(|s| started(s) && s.pid == s.pgrp)
            .map(|s| s.pgrp)
            .collect();
        procs.retain(|s| started(s) || groups.contains(&s.pgrp));
        // What a runc started names the folder nowhere (runc hands its CRIU neither its command
        // line nor its environment): its CRIU and CRIU's action scripts are found as the
        // runc's descendants in the group it leads.
        let mut below_runc: Vec<(i32, i32)> = procs
            .iter()
            .filter(|s| s.comm == "runc" && groups.contains(&s.pgrp))
            .map(|s| (s.pid, s.pgrp))
            .collect();
        while let Some((pid, pgrp)) = below_runc.pop() {
            for child in sys::children(pid) {
                if procs.iter().any(|p| p.pid == child) {
                    continue;
                }
                if let Some(c) = sys::proc_stat(child).filter(|c| c.pgrp == pgrp && !c.is_zombie())
                {
                    below_runc.push((c.pid, pgrp));
                    procs.push(c);
                }
            }
        }
        // A runc whose CRIU is gone cannot finish: its dump is lost, and it may wait forever
        // for a CRIU helper that holds its end of the connection (seen: `runc checkpoint` hung
        // with its CRIU killed). Like a leader that is not there at all, it does not count.
        let alive_leader = |s: &&sys::ProcStat| {
            s.pid == s.pgrp
                && (s.comm != "runc" || procs.iter().any(|c| c.ppid == s.pid && c.comm == "criu"))
        };
        let left: Vec<i32> = procs.iter().filter(alive_leader).map(|s| s.pid).collect();
        let timed_out = tokio::time::Instant::now() >= deadline;
        if left.is_empty() || timed_out {
            // What is left cannot finish, or took longer than the wait: a dump CRIU completed
            // now, with no daemon to release it, would leave its target stopped. The job is
            // resolved as interrupted; the target resumes when CRIU goes.
            // Each by pid and start time, signalled through a pidfd: never a pid reused since.
            let all: Vec<sys::TaskId> = procs
                .iter()
                .filter_map(|s| sys::TaskId::of(s.pid))
                .collect();
            if all.is_empty() {
                return;
            }
            let pids: Vec<i32> = all.iter().map(|t| t.pid).collect();
            if timed_out {
                // SIGTERM first: CRIU then takes its parasite out of the target, which a
                // SIGKILL mid-dump can leave to crash it.
                tracing::error!(?pids, path = %needle, "CRIU still runs after the wait; ending it and resolving the job");
                sys::signal_tasks(&all, rustix::process::Signal::TERM);
                let grace = tokio::time::Instant::now() + Duration::from_secs(5);
                while tokio::time::Instant::now() < grace && all.iter().any(sys::TaskId::alive) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            } else {
                tracing::warn!(?pids, path = %needle, "ending what a dead CRIU left behind");
            }
            sys::signal_tasks(&all, rustix::process::Signal::KILL);
            return;
        }
        tracing::info!(?left, path = %needle, "waiting for a CRIU that outlived the daemon");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
