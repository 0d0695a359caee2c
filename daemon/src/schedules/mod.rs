//! Schedules: periodic checkpoints of one target, each followed by a retention pass; and the
//! expiry of checkpoints created with `expires_in`.
//!
//! One task runs the clock. Each schedule stores an anchor: its next run is the first cron slot
//! after it. Creating a schedule, and changing its cron or enabling it, set the anchor to now;
//! a run sets it to the newest slot at or before now. So a daemon that was down over several
//! slots runs the schedule once at start, not once per missed slot, and a re-enabled schedule
//! does not catch up on the time it was disabled.
//!
//! A run is an ordinary checkpoint job submitted as the schedule's owner, named
//! `<schedule>-<UTC timestamp>` and labelled `schedule=<name>`. A target that has gone away (or
//! any other refusal) marks the run failed and emits `schedule.failed`; the schedule stays.
//! When the job ends, the run's result is recorded and the schedule's retention applied. The
//! same retention runs for every schedule on a timer, together with the expiry of checkpoints.

pub mod cron;
pub mod retention;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ckptd_api::{
    Checkpoint, CheckpointStatus, CreateCheckpoint, CreateSchedule, Job, JobState, List,
    RetentionItem, RetentionPlan, RunStatus, Schedule, ScheduleOptions, ScheduleRun,
    UpdateSchedule,
};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::auth::Caller;
use crate::catalog::{self, Catalog, ScheduleRow};
use crate::error::{Error, ErrorKind, Result};
use crate::service::{validate, RunEnded, RunOf, Service};

/// What retention keeps and prunes in one location.
type Plan = (Vec<RetentionItem>, Vec<RetentionItem>);

/// The label every scheduled checkpoint carries.
pub const LABEL: &str = "schedule";

/// How long a run of the clock waits for a slot in a full job queue before it counts as failed.
const QUEUE_WAIT: Duration = Duration::from_secs(60);

/// Longest schedule name: room for `-<timestamp>` and a clash suffix in a checkpoint name.
const MAX_NAME: usize = 100;

#[derive(Clone)]
pub struct Schedules {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Service,
    /// The schedules' own rows, and the checkpoints retention and expiry look at.
    catalog: Catalog,
    /// Wakes the clock when a schedule changes.
    changed: Notify,
    /// How often retention and expiry run besides after each scheduled checkpoint.
    interval: Duration,
    /// One retention or expiry pass at a time.
    pass: tokio::sync::Mutex<()>,
    /// How long a failed checkpoint (its row and CRIU's log) is kept.
    keep_failed: Duration,
    /// Failed runs in a row after which a schedule is disabled (0: never).
    max_failures: u32,
    /// Bumped by every change or deletion of a schedule through the API: a run of the clock
    /// fired from rows read before reads its schedule again (`Schedules::fire`).
    edits: AtomicU64,
}

/// How often a change through the API is re-applied when another one came first.
const EDIT_TRIES: usize = 3;

fn not_found(reference: &str) -> Error {
    Error::not_found(format!("no schedule with id or name {reference:?}"))
        .with_advice(ckptd_api::Advice::ListSchedules)
}

impl Schedules {
    pub fn new(
        jobs: Service,
        catalog: Catalog,
        interval: Duration,
        keep_failed: Duration,
        max_failures: u32,
    ) -> Schedules {
        Schedules {
            inner: Arc::new(Inner {
                jobs,
                catalog,
                changed: Notify::new(),
                interval,
                pass: tokio::sync::Mutex::new(()),
                keep_failed,
                max_failures,
                edits: AtomicU64::new(0),
            }),
        }
    }

    fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The time between a schedule's next two runs (its interval, for an alert on a schedule
    /// that has not succeeded within twice it).
    pub fn interval(s: &Schedule) -> Option<chrono::Duration> {
        let spec = cron::parse(&s.cron, &s.name).ok()?;
        let first = spec.next_after(&chrono::Utc::now())?;
        let second = spec.next_after(&first)?;
        Some(second - first)
    }

    /// The schedules `caller` may see, as the metrics show them.
    pub async fn gauges(&self, caller: &Caller) -> Result<Vec<crate::telemetry::ScheduleGauge>> {
        let kept: std::collections::HashMap<String, u64> = self
            .inner
            .jobs
            .kept_by_schedule()
            .await?
            .into_iter()
            .collect();
        let secs = |t: DateTime<Utc>| t.timestamp_micros() as f64 / 1e6;
        Ok(self
            .list(caller)
            .await?
            .items
            .into_iter()
            .map(|sc| crate::telemetry::ScheduleGauge {
                kept: kept.get(&sc.name).copied().unwrap_or(0),
                interval: Self::interval(&sc).map(|d| d.num_milliseconds() as f64 / 1e3),
                enabled: sc.enabled,
                last_success: sc.last_success_at.map(secs),
                last_failure: sc.last_failure_at.map(secs),
                consecutive_failures: sc.consecutive_failures,
                next_run: sc.next_run_at.map(secs),
                name: sc.name,
            })
            .collect())
    }

    /// The API's view of a stored schedule.
    fn view(row: ScheduleRow) -> Schedule {
        let spec = cron::parse(&row.cron, &row.name);
        let (effective_cron, next_run_at) = match &spec {
            Ok(s) => (
                s.effective.clone(),
                row.enabled.then(|| s.next_after(&row.anchor_at)).flatten(),
            ),
            Err(_) => (row.cron.clone(), None),
        };
        Schedule {
            id: row.id,
            name: row.name,
            target: row.target,
            cron: row.cron,
            effective_cron,
            options: row.options,
            retention: row.retention,
            enabled: row.enabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
            next_run_at,
            last_run: row.last_run,
            owner_uid: row.owner_uid,
            consecutive_failures: row.consecutive_failures,
            disabled_reason: row.disabled_reason,
            last_success_at: row.last_success_at,
            last_failure_at: row.last_failure_at,
        }
    }

    /// What every write checks: the cron, the retention rules, the options and, with
    /// `check_target`, that `caller` may checkpoint the target and that it is there now (a typo is
    /// caught at once). A change that keeps the target does not re-check it: a schedule whose
    /// target has gone can still be disabled or given other retention.
    async fn validate(&self, caller: &Caller, row: &ScheduleRow, check_target: bool) -> Result<()> {
        cron::parse(&row.cron, &row.name)?;
        retention::Rules::from_api(&row.retention)?;
        let o = &row.options;
        validate::labels(&o.labels)?;
        if o.labels.contains_key(LABEL) {
            return Err(Error::invalid(format!(
                "the label {LABEL:?} is set by ckptd on every scheduled checkpoint; use another key"
            )));
        }
        if let Some(e) = &o.expires_in {
            validate::duration("expires_in", e)?;
        }
        if let Some(h) = &o.hooks {
            validate::hooks(h, &row.target, false)?;
        }
        match &o.push_to {
            Some(r) => {
                self.inner.jobs.remotes().named("options.push_to", r)?;
            }
            None if !o.keep_local => {
                return Err(Error::invalid(
                    "\"keep_local\": false needs \"push_to\": the images would be nowhere",
                ))
            }
            None => {}
        }
        let dir = o
            .checkpoint_dir
            .as_deref()
            .map(validate::checkpoint_dir)
            .transpose()?;
        if !check_target {
            return Ok(());
        }
        self.inner
            .jobs
            .check_checkpoint(caller, &row.target, &o.criu(), dir.as_deref())
            .await
            .map(drop)
    }

    pub async fn create(&self, caller: &Caller, req: CreateSchedule) -> Result<Schedule> {
        validate::name(&req.name).map_err(|_| {
            Error::invalid(format!(
                "invalid schedule name {:?}: 1-{MAX_NAME} characters of letters, digits, '_', \
                 '.' and '-', starting with a letter or digit, and not a UUID",
                req.name
            ))
        })?;
        if req.name.len() > MAX_NAME {
            return Err(Error::invalid(format!(
                "schedule name {:?} is longer than {MAX_NAME} characters (its checkpoints add a \
                 timestamp to it)",
                req.name
            )));
        }
        let now = catalog::now();
        let row = ScheduleRow {
            id: Uuid::new_v4(),
            name: req.name,
            target: req.target,
            cron: req.cron,
            options: req.options,
            retention: req.retention,
            enabled: req.enabled,
            created_at: now,
            updated_at: now,
            anchor_at: now,
            last_run: None,
            owner_uid: caller.uid,
            consecutive_failures: 0,
            disabled_reason: None,
            last_success_at: None,
            last_failure_at: None,
            target_start: None,
        };
        self.validate(caller, &row, true).await?;
        let mut row = row;
        // The schedule is for the process there now: known by its start time from here on.
        row.target_start = crate::service::target_start(&row.target);
        if !caller.is_admin() {
            let max = self.inner.jobs.config().policy.limits.schedules;
            let have = self.catalog().schedules(Some(caller.uid)).await?.len();
            if have >= max {
                return Err(crate::auth::forbidden(format!(
                    "uid {} has {have} schedules, the most one member may (member_max_schedules = {max})",
                    caller.uid
                ))
                .with_hint("delete a schedule you no longer need, then retry"));
            }
        }
        self.catalog().insert_schedule(&row).await?;
        let s = Self::view(row);
        tracing::info!(schedule = %s.name, cron = %s.effective_cron, target = %s.target.key(), "schedule created");
        self.inner.jobs.events().schedule("schedule.created", &s);
        self.inner.changed.notify_one();
        Ok(s)
    }

    async fn row(&self, caller: &Caller, reference: &str) -> Result<ScheduleRow> {
        self.catalog()
            .schedule(reference)
            .await?
            .filter(|s| caller.can_see(s.owner_uid))
            .ok_or_else(|| not_found(reference))
    }

    pub async fn get(&self, caller: &Caller, reference: &str) -> Result<Schedule> {
        Ok(Self::view(self.row(caller, reference).await?))
    }

    pub async fn list(&self, caller: &Caller) -> Result<List<Schedule>> {
        let rows = self.catalog().schedules(caller.owner_filter()).await?;
        Ok(List {
            items: rows.into_iter().map(Self::view).collect(),
            next: None,
        })
    }

    pub async fn update(
        &self,
        caller: &Caller,
        reference: &str,
        req: UpdateSchedule,
    ) -> Result<Schedule> {
        // Written only if nobody changed the schedule through the API since it was read here,
        // and then only the columns a caller owns: a run recorded meanwhile (its anchor, its
        // outcome, its count of failures) stands. Read again and re-applied if another change
        // came first.
        for _ in 0..EDIT_TRIES {
            let mut row = self.row(caller, reference).await?;
            let read_at = row.updated_at;
            let now = catalog::now();
            let resets = catalog::ScheduleResets {
                anchor: req.cron.as_ref().is_some_and(|c| *c != row.cron)
                    || req.enabled.is_some_and(|e| e && !row.enabled),
                // Enabled again: the count of failures starts afresh.
                failures: req.enabled == Some(true),
                target_start: req.target.as_ref().is_some_and(|t| *t != row.target),
            };
            let new_dir = req
                .options
                .as_ref()
                .is_some_and(|o| o.checkpoint_dir != row.options.checkpoint_dir);
            if let Some(t) = &req.target {
                row.target = t.clone();
            }
            if resets.target_start {
                row.target_start = crate::service::target_start(&row.target);
            }
            if let Some(c) = &req.cron {
                row.cron = c.clone();
            }
            if let Some(o) = &req.options {
                row.options = o.clone();
            }
            if let Some(r) = &req.retention {
                row.retention = r.clone();
            }
            if let Some(e) = req.enabled {
                row.enabled = e;
            }
            if resets.anchor {
                row.anchor_at = now;
            }
            row.updated_at = now;
            self.validate(caller, &row, resets.target_start || new_dir)
                .await?;
            let Some(row) = self.catalog().edit_schedule(&row, &read_at, resets).await? else {
                continue; // changed or deleted meanwhile: the next read says which
            };
            self.inner.edits.fetch_add(1, Ordering::SeqCst);
            let s = Self::view(row);
            self.inner.jobs.events().schedule("schedule.updated", &s);
            self.inner.changed.notify_one();
            return Ok(s);
        }
        Err(Error::conflict(format!(
            "schedule {reference:?} was changed by other requests while this change was made, \
             {EDIT_TRIES} times in a row; nothing of this change was written"
        ))
        .with_hint("retry: a change is applied to the schedule as it is then"))
    }

    /// Removes the schedule. Its checkpoints stay (with their label) until deleted or expired.
    pub async fn delete(&self, caller: &Caller, reference: &str) -> Result<()> {
        let row = self.row(caller, reference).await?;
        self.catalog().delete_schedule(row.id).await?;
        self.inner.edits.fetch_add(1, Ordering::SeqCst);
        tracing::info!(schedule = %row.name, "schedule deleted");
        self.inner
            .jobs
            .events()
            .schedule("schedule.deleted", &Self::view(row));
        self.inner.changed.notify_one();
        Ok(())
    }

    /// Runs the schedule now (enabled or not); its clock is untouched.
    pub async fn run_now(&self, caller: &Caller, reference: &str) -> Result<(Checkpoint, Job)> {
        let row = self.row(caller, reference).await?;
        self.fire(row, None, 0).await
    }

    pub async fn retention_plan(&self, caller: &Caller, reference: &str) -> Result<RetentionPlan> {
        let row = self.row(caller, reference).await?;
        let mut plans = self.plan(&row).await?;
        let (keep, prune) = plans.remove(&None).unwrap_or_default();
        Ok(RetentionPlan {
            schedule: row.name,
            retention: row.retention,
            keep,
            prune,
            remotes: plans
                .into_iter()
                .filter_map(|(loc, (keep, prune))| {
                    Some((loc?, ckptd_api::LocationPlan { keep, prune }))
                })
                .collect(),
        })
    }

    /// The retention plan of each location of the schedule's checkpoints (`plans`).
    async fn plan(&self, row: &ScheduleRow) -> Result<BTreeMap<Option<String>, Plan>> {
        let rules = retention::Rules::from_api(&row.retention)?;
        let checkpoints = self
            .catalog()
            .retention_rows(&row.name, row.owner_uid, Some(&row.created_at))
            .await?;
        Ok(plans(row, &rules, checkpoints))
    }

    /// The schedule of a run the clock fired from `stale`, read again: as it is now if it is
    /// still enabled and due (its anchor the slot it is run for); refused, and not recorded as
    /// a failure, if it was deleted, disabled or re-timed past now meanwhile.
    async fn still_due(&self, stale: &ScheduleRow) -> Result<ScheduleRow> {
        let not_run = |why: &str| {
            Err(Error::conflict(format!(
                "schedule {:?} was {why} while its run waited; not run",
                stale.name
            )))
        };
        let Some(mut row) = self.catalog().schedule(&stale.id.to_string()).await? else {
            return not_run("deleted");
        };
        if !row.enabled {
            return not_run("disabled");
        }
        let now = catalog::now();
        let Ok(spec) = cron::parse(&row.cron, &row.name) else {
            return not_run("given a cron that does not parse");
        };
        match spec.next_after(&row.anchor_at) {
            Some(next) if next <= now => {
                row.anchor_at = spec.latest_until(&now).unwrap_or(next).max(row.anchor_at);
            }
            _ => return not_run("re-timed"),
        }
        if row.target_start.is_none() {
            row.target_start = crate::service::target_start(&row.target);
        }
        Ok(row)
    }

    /// Submits one run. `slot`: the cron slot being run (None: a manual run); `edits`: the
    /// count of changes through the API when the clock read `row`.
    async fn fire(
        &self,
        mut row: ScheduleRow,
        slot: Option<DateTime<Utc>>,
        edits: u64,
    ) -> Result<(Checkpoint, Job)> {
        let jobs = &self.inner.jobs;
        // A run of the clock waits (up to QUEUE_WAIT) for a queue slot when the queue is full:
        // schedules due at the same minute can outnumber its slots (1,000 schedules each minute,
        // BENCHMARKS.md), and a run refused only because the others came first would be a
        // failure nobody caused. A run asked for by a caller (runSchedule) is refused at once.
        let waiting_since = tokio::time::Instant::now();
        if row.target_start.is_none() {
            // A schedule made before targets were identities: its first run's process it is.
            row.target_start = crate::service::target_start(&row.target);
        }
        if let Some(slot) = slot {
            row.anchor_at = slot.max(row.anchor_at);
        }
        let (now, result) = loop {
            if slot.is_some() {
                // Room first: an admission refused as `queue_full` has checked the target and
                // its memory for nothing, and was most runs' lot when the minute's runs
                // outnumber the queue (BENCHMARKS.md, "Cost growth").
                let left = QUEUE_WAIT.saturating_sub(waiting_since.elapsed());
                let _ = tokio::time::timeout(left, jobs.queue_room()).await;
                // A schedule changed through the API since the clock read it (disabled,
                // deleted, re-timed while this run waited its turn) runs as it is now, or not.
                if self.inner.edits.load(Ordering::SeqCst) != edits {
                    row = self.still_due(&row).await?;
                }
            }
            let now = catalog::now();
            // The schedule says the run is running in the transaction that creates its job.
            let record = |cp: &Checkpoint, job: &Job| {
                let mut row = row.clone();
                row.last_run = Some(running(now, slot.is_none(), cp, job));
                row
            };
            let owner = Caller::owner(row.owner_uid);
            let submit = |name: String| {
                jobs.submit_checkpoint_of(
                    &owner,
                    request(&row, name),
                    Some(RunOf {
                        schedule: row.id,
                        target_start: row.target_start,
                        record: &record,
                    }),
                )
            };
            // The run's own name is free unless a run of the same second has it: the insert
            // says so, and only then is the catalog read for the next free one (one round trip
            // a run fewer; BENCHMARKS.md, "Cost growth").
            let mut result = submit(checkpoint_name(&row.name, &now)).await;
            if matches!(&result, Err(e) if e.details.contains_key(catalog::NAME_TAKEN)) {
                result = match jobs.free_name(&checkpoint_name(&row.name, &now)).await {
                    Ok(name) => submit(name).await,
                    Err(e) => Err(e),
                };
            }
            if let Err(e) = &mut result {
                e.details.remove(catalog::NAME_TAKEN);
            }
            let left = QUEUE_WAIT.saturating_sub(waiting_since.elapsed());
            match &result {
                // A request took the slot first: wait for the next.
                Err(e) if e.kind == ErrorKind::QueueFull && slot.is_some() && !left.is_zero() => {
                    tracing::debug!(schedule = %row.name, "the job queue is full; the run waits for a slot");
                }
                _ => break (now, result),
            }
        };
        match &result {
            Ok((cp, job)) => {
                tracing::info!(schedule = %row.name, checkpoint = %cp.name, job = %job.id, "scheduled checkpoint started");
                row.last_run = Some(running(now, slot.is_none(), cp, job));
                jobs.events().schedule("schedule.started", &Self::view(row));
            }
            Err(e) if jobs.is_shutting_down() && e.kind == ErrorKind::Unavailable => {}
            Err(e) => {
                let run = ScheduleRun {
                    at: now,
                    status: RunStatus::Failed,
                    manual: slot.is_none(),
                    job_id: None,
                    checkpoint_id: None,
                    checkpoint_name: None,
                    error: Some(e.to_info()),
                };
                // On the schedule as it is now, the slot counted as run: a copy read before a
                // change through the API would undo the change.
                let (anchor, target_start) = (row.anchor_at, row.target_start);
                let max = self.inner.max_failures;
                let recorded = self
                    .catalog()
                    .record_refused_run(row.id, |now_row| {
                        now_row.anchor_at = now_row.anchor_at.max(anchor);
                        now_row.target_start = now_row.target_start.or(target_start);
                        now_row.last_run = Some(run);
                        now_row.last_failure_at = Some(now);
                        now_row.count_failure(max)
                    })
                    .await?;
                tracing::warn!(schedule = %row.name, error = %e, "scheduled checkpoint refused");
                if let Some((now_row, disabled)) = recorded {
                    let view = Self::view(now_row);
                    if disabled {
                        self.announce_disabled(&view);
                    }
                    jobs.events().schedule("schedule.failed", &view);
                }
            }
        }
        result
    }

    /// Tells of a run's end and applies the schedule's retention after it. The outcome is
    /// already recorded, with the job's end (`Catalog::end_job`); after a crash, the timer pass
    /// at start applies the retention this would have.
    async fn run_ended(&self, ended: RunEnded) {
        let row = ended.schedule;
        let kind = if ended.job.state == JobState::Succeeded {
            "schedule.succeeded"
        } else {
            "schedule.failed"
        };
        let view = Self::view(row.clone());
        self.inner.jobs.events().schedule(kind, &view);
        if ended.disabled {
            self.announce_disabled(&view);
        }
        if let Err(e) = self.apply_retention(&row).await {
            tracing::warn!(schedule = %row.name, error = %e, "retention failed");
        }
    }

    fn announce_disabled(&self, view: &Schedule) {
        tracing::warn!(schedule = %view.name, failures = view.consecutive_failures, "schedule disabled after failed runs in a row");
        self.inner.jobs.metrics().schedules_disabled.inc();
        self.inner.jobs.events().schedule("schedule.disabled", view);
    }

    /// Deletes what the schedule's retention prunes, in each location; returns how many went.
    async fn apply_retention(&self, row: &ScheduleRow) -> Result<usize> {
        let _pass = self.inner.pass.lock().await;
        let plans = self.plan(row).await?;
        Ok(self.prune(row, plans).await)
    }

    /// Deletes what `plans` (the schedule's, per location) prune; returns how many went. The
    /// caller holds the pass lock.
    async fn prune(&self, row: &ScheduleRow, plans: BTreeMap<Option<String>, Plan>) -> usize {
        let mut pruned = 0;
        for (location, (_, prune)) in plans {
            for it in prune {
                let why = format!(
                    "pruned by {}'s retention{}: {}",
                    row.name,
                    location
                        .as_ref()
                        .map_or(String::new(), |r| format!(" in remote {r}")),
                    it.reasons.join("; ")
                );
                let gone = match &location {
                    None => self.remove_here(it.checkpoint_id, &it.name, &why).await,
                    Some(r) => self.remove_copy(it.checkpoint_id, &it.name, r, &why).await,
                };
                pruned += usize::from(gone);
            }
        }
        pruned
    }

    /// Deletes checkpoints whose expiry has passed, except those in `protected` (the newest
    /// ready checkpoint of each schedule: a schedule whose runs keep failing must not end up
    /// with nothing), and failed checkpoints older than `keep_failed_secs`. The caller holds
    /// the pass lock.
    async fn expire(&self, protected: &HashSet<Uuid>) -> Result<usize> {
        let now = catalog::now();
        let keep =
            chrono::TimeDelta::from_std(self.inner.keep_failed).unwrap_or(chrono::TimeDelta::MAX);
        let failed_before = now
            .checked_sub_signed(keep)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let expired = self
            .catalog()
            .expired_checkpoints(&now, &failed_before)
            .await?;
        let mut n = 0;
        for cp in expired.into_iter().filter(|c| !protected.contains(&c.id)) {
            let why = match cp.expires_at {
                Some(at) if at <= now => format!("expired (expires_at {at:?})"),
                _ => "a failed checkpoint past keep_failed_secs".to_owned(),
            };
            n += usize::from(self.remove(cp.id, &cp.name, &why).await);
        }
        Ok(n)
    }

    /// Local retention: a checkpoint with copies in remotes loses its local images (the
    /// remotes' own retention decides about the copies); one without is deleted.
    async fn remove_here(&self, id: Uuid, name: &str, why: &str) -> bool {
        let jobs = &self.inner.jobs;
        let outcome = match jobs.checkpoint_by_id(id).await {
            Ok(Some(cp)) if cp.remote_copies().next().is_some() => jobs.drop_local(&cp).await,
            Ok(Some(cp)) => jobs.delete_as_read(cp, false).await,
            Ok(None) => return false,
            Err(e) => Err(e),
        };
        Self::removed(outcome, name, why)
    }

    /// Remote retention: deletes the checkpoint's copy in `remote`.
    async fn remove_copy(&self, id: Uuid, name: &str, remote: &str, why: &str) -> bool {
        let jobs = &self.inner.jobs;
        let outcome = match jobs.checkpoint_by_id(id).await {
            Ok(Some(cp)) => jobs.forget_copy(&cp, remote).await,
            Ok(None) => return false,
            Err(e) => Err(e),
        };
        Self::removed(outcome, name, why)
    }

    /// Expiry: deletes the checkpoint and every copy it has in remotes (expires_in was asked
    /// for it, wherever it went).
    async fn remove(&self, id: Uuid, name: &str, why: &str) -> bool {
        let jobs = &self.inner.jobs;
        let outcome = match jobs.checkpoint_by_id(id).await {
            Ok(Some(cp)) => jobs.delete_everywhere(&Caller::ROOT, &cp, false).await,
            Ok(None) => return false,
            Err(e) => Err(e),
        };
        Self::removed(outcome, name, why)
    }

    /// Logs a retention or expiry removal; true if it happened. One deleted meanwhile, or in use
    /// by a job, is left to the next pass.
    fn removed(outcome: Result<()>, name: &str, why: &str) -> bool {
        match outcome {
            Ok(()) => {
                tracing::info!(checkpoint = %name, "{why}");
                true
            }
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Conflict) => false,
            Err(e) => {
                tracing::warn!(checkpoint = %name, error = %e, "deleting failed ({why})");
                false
            }
        }
    }

    /// Retention for every schedule, then expiry. Every schedule's checkpoints are read in one
    /// statement (`Catalog::retention_rows_by_label`), a label at a time, and only the
    /// schedules whose plan prunes something are acted on: a pass over 1,000 schedules is one
    /// round trip to the catalog, not 1,000 (BENCHMARKS.md, "Cost growth").
    async fn sweep(&self) {
        let _pass = self.inner.pass.lock().await;
        let schedules = match self.catalog().schedules(None).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the schedules");
                return;
            }
        };
        let by_name: std::collections::HashMap<&str, &ScheduleRow> =
            schedules.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut protected = HashSet::new();
        let mut work = Vec::new();
        let read = self
            .catalog()
            .retention_rows_by_label(|label, rows| {
                let Some(&s) = by_name.get(label) else {
                    return; // its schedule is gone: its checkpoints stay until deleted or expired
                };
                let rows: Vec<_> = rows
                    .into_iter()
                    .filter(|r| r.owner_uid == s.owner_uid)
                    .collect();
                let newest = rows
                    .iter()
                    .filter(|r| r.status == CheckpointStatus::Ready)
                    .max_by_key(|r| r.created_at);
                protected.extend(newest.map(|r| r.id));
                match retention::Rules::from_api(&s.retention) {
                    Ok(rules) => {
                        // Only what goes is kept until the read ends, not what stays.
                        let prunes: BTreeMap<_, Plan> = plans(s, &rules, rows)
                            .into_iter()
                            .filter(|(_, (_, prune))| !prune.is_empty())
                            .map(|(location, (_, prune))| (location, (Vec::new(), prune)))
                            .collect();
                        if !prunes.is_empty() {
                            work.push((s, prunes));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(schedule = %s.name, error = %e, "retention failed");
                    }
                }
            })
            .await;
        if let Err(e) = read {
            // Without each schedule's newest ready checkpoint to spare, expiry waits too.
            tracing::warn!(error = %e, "cannot read the schedules' checkpoints; retention and expiry wait for the next pass");
            return;
        }
        for (s, plans) in work {
            self.prune(s, plans).await;
        }
        if let Err(e) = self.expire(&protected).await {
            tracing::warn!(error = %e, "expiry failed");
        }
    }

    /// Starts the clock; it ends when `stopping` turns true.
    pub fn start(&self, mut stopping: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        if let Some(mut ends) = self.inner.jobs.run_ends() {
            let this = self.clone();
            tokio::spawn(async move {
                while let Some(ended) = ends.recv().await {
                    this.run_ended(ended).await;
                }
            });
        }
        let this = self.clone();
        tokio::spawn(async move {
            let interval = this.inner.interval;
            let mut next_sweep = tokio::time::Instant::now();
            loop {
                let mut wake = tokio::time::Instant::now() + interval;
                match this.due().await {
                    Ok(Some(d)) => wake = wake.min(tokio::time::Instant::now() + d),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read the schedules"),
                }
                if tokio::time::Instant::now() >= next_sweep {
                    this.sweep().await;
                    next_sweep = tokio::time::Instant::now() + interval;
                }
                wake = wake.min(next_sweep);
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = this.inner.changed.notified() => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        })
    }

    /// Runs every schedule whose next slot has come; returns how long until the next one.
    async fn due(&self) -> Result<Option<Duration>> {
        let mut soonest: Option<Duration> = None;
        let edits = self.inner.edits.load(Ordering::SeqCst);
        for row in self.catalog().schedules(None).await? {
            if !row.enabled {
                continue;
            }
            let spec = match cron::parse(&row.cron, &row.name) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(schedule = %row.name, error = %e, "schedule has a bad cron; skipped");
                    continue;
                }
            };
            let Some(next) = spec.next_after(&row.anchor_at) else {
                continue;
            };
            let now = catalog::now();
            if next <= now {
                // Missed slots (the daemon was down) collapse into this one run.
                let slot = spec.latest_until(&now).unwrap_or(next);
                if let Err(e) = self.fire(row, Some(slot), edits).await {
                    tracing::debug!(error = %e, "run not started");
                }
                // Its next slot is after `now`; the caller loops again at once for it.
                soonest = Some(Duration::ZERO);
            } else {
                let wait = (next - now).to_std().unwrap_or_default();
                soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
            }
        }
        Ok(soonest)
    }
}

/// The retention plan of each location of the schedule's checkpoints, given their rows (only
/// its owner's, and those taken since it was created, count): this host (`None`: the
/// checkpoints whose images are here, and those not ready yet) and each remote (the ready
/// checkpoints with a copy there). The same rules apply to each, independently.
fn plans(
    row: &ScheduleRow,
    rules: &retention::Rules,
    checkpoints: Vec<catalog::RetentionRow>,
) -> BTreeMap<Option<String>, Plan> {
    let item = |cp: &catalog::RetentionRow| RetentionItem {
        checkpoint_id: cp.id,
        name: cp.name.clone(),
        created_at: cp.created_at,
        status: cp.status,
        reasons: vec![],
    };
    let mut locations: BTreeMap<Option<String>, Vec<RetentionItem>> = BTreeMap::new();
    locations.insert(None, Vec::new());
    // A schedule deleted and made again under the same name does not inherit the old one's
    // checkpoints: only those taken since this one was created are its own.
    let own = checkpoints
        .iter()
        .filter(|cp| cp.owner_uid == row.owner_uid && cp.created_at >= row.created_at);
    for cp in own {
        if cp.here() {
            locations.entry(None).or_default().push(item(cp));
        }
        for r in &cp.remotes {
            locations.entry(Some(r.clone())).or_default().push(item(cp));
        }
    }
    drop(checkpoints);
    locations
        .into_iter()
        .map(|(loc, items)| (loc, retention::plan(items, rules)))
        .collect()
}

/// A run's checkpoint name, `<schedule>-<UTC timestamp>`; `-2`, `-3`... is added when a run in
/// the same second has it (`Service::free_name`).
fn checkpoint_name(schedule: &str, at: &DateTime<Utc>) -> String {
    format!("{schedule}-{}", at.format("%Y%m%dT%H%M%SZ"))
}

/// A run whose job is queued.
fn running(at: DateTime<Utc>, manual: bool, cp: &Checkpoint, job: &Job) -> ScheduleRun {
    ScheduleRun {
        at,
        status: RunStatus::Running,
        manual,
        job_id: Some(job.id),
        checkpoint_id: Some(cp.id),
        checkpoint_name: Some(cp.name.clone()),
        error: None,
    }
}

/// The checkpoint request of one run.
fn request(row: &ScheduleRow, name: String) -> CreateCheckpoint {
    let o: &ScheduleOptions = &row.options;
    let mut labels = o.labels.clone();
    labels.insert(LABEL.to_owned(), row.name.clone());
    CreateCheckpoint {
        target: Some(row.target.clone()),
        name: Some(name),
        leave_running: o.leave_running,
        tcp_established: o.tcp_established,
        ext_unix_sk: o.ext_unix_sk,
        file_locks: o.file_locks,
        shell_job: o.shell_job,
        checkpoint_dir: o.checkpoint_dir.clone(),
        labels,
        expires_in: o.expires_in.clone(),
        push_to: o.push_to.clone(),
        keep_local: Some(o.keep_local),
        hooks: o.hooks.clone(),
    }
}
