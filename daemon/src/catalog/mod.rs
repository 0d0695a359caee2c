//! The SQLite catalog: every checkpoint and job, field for field as the API shows them.
//!
//! Opened in WAL mode with migrations embedded (`sqlx::migrate!`); queries are built at run time
//! so no database is needed to compile. Only this module speaks SQL.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use ckptd_api::{Checkpoint, CheckpointStatus, ErrorInfo, Job, JobKind, JobState, List, Target};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{ConnectOptions, FromRow, QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use crate::error::{Error, Result};

mod batch;
use batch::{Batch, Durability, Tx};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub use ckptd_api::query::{DEFAULT_LIMIT, MAX_LIMIT};

/// `GET /v1/checkpoints` filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointFilter {
    pub pid: Option<i32>,
    pub container: Option<String>,
    pub status: Option<CheckpointStatus>,
    pub labels: Vec<(String, String)>,
    /// Only this owner's (a non-root caller sees only its own).
    pub owner: Option<u32>,
    pub limit: u32,
    /// Cursor: only rows older than this one.
    pub after: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<JobKind>,
    pub checkpoint_id: Option<Uuid>,
    pub owner: Option<u32>,
    pub limit: u32,
    pub after: Option<i64>,
}

#[derive(Clone)]
pub struct Catalog {
    /// Reads. Writes go through `writer` (`Catalog::write`, `batch::Tx`).
    readers: std::sync::Arc<batch::Readers>,
    writer: batch::Writer,
    /// Bumped after every write to the checkpoints table; readers cache lists against it.
    checkpoints_version: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Times are stored as the API prints them; see `now()` for why they round-trip exactly.
pub fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The current time, truncated to microseconds so that stored and served values are identical.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::internal(format!("catalog holds a bad timestamp {s:?}: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("API types serialize")
}

fn from_json<T: DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s)
        .map_err(|e| Error::internal(format!("catalog holds bad {what} JSON: {e}")))
}

/// The detail a name clash on insert carries, so that a generated name can be retried.
pub const NAME_TAKEN: &str = "name_taken";

/// The refusal of a checkpoint name another checkpoint holds.
pub fn name_taken(name: &str) -> Error {
    Error::conflict(format!("a checkpoint named {name:?} already exists"))
        .with_hint("choose another name, or delete the old checkpoint first")
}

fn is_unique_violation(e: &sqlx::Error, index: &str) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation() && d.message().contains(index))
}

/// A failed insert of checkpoint `cp` as the API says it: a name or a directory another
/// checkpoint holds is a conflict.
fn inserting(e: sqlx::Error, cp: &Checkpoint) -> Error {
    if is_unique_violation(&e, "checkpoints.name") {
        return name_taken(&cp.name).with(NAME_TAKEN, true);
    }
    if is_unique_violation(&e, "checkpoints.dir") {
        return Error::conflict(format!(
            "another checkpoint already uses the directory {}",
            cp.dir
        ));
    }
    e.into()
}

/// A row of `checkpoints` as SQLite holds it: JSON columns decoded by `Json`, times and enums as
/// the API writes them.
#[derive(sqlx::FromRow, serde::Deserialize)]
struct CheckpointRow {
    /// The order of insertion: a list's cursor.
    seq: i64,
    id: String,
    name: String,
    target: Json<Target>,
    status: String,
    created_at: String,
    completed_at: Option<String>,
    dir: String,
    size_bytes: i64,
    options: Json<ckptd_api::CheckpointOptions>,
    labels: Json<std::collections::BTreeMap<String, String>>,
    criu_version: Option<String>,
    criu_config: Option<String>,
    container: Option<Json<ckptd_api::ContainerRecord>>,
    stats: Option<Json<ckptd_api::DumpStats>>,
    error: Option<Json<ErrorInfo>>,
    owner_uid: i64,
    expires_at: Option<String>,
    local_images: bool,
    remote_copies: Json<Vec<ckptd_api::RemoteCopy>>,
    origin: Option<Json<ckptd_api::Origin>>,
    hooks: Option<Json<ckptd_api::Hooks>>,
    terminal: Option<String>,
    members: Option<Json<Vec<ckptd_api::GroupMember>>>,
}

/// `locations` as the API shows them: the local directory while a ready checkpoint's images are
/// on disk, then each remote copy.
fn locations(
    status: CheckpointStatus,
    dir: &str,
    local: bool,
    remote: Vec<ckptd_api::RemoteCopy>,
) -> Vec<ckptd_api::Location> {
    let here = (status == CheckpointStatus::Ready && local).then(|| ckptd_api::Location::Local {
        dir: dir.to_owned(),
    });
    here.into_iter()
        .chain(remote.into_iter().map(ckptd_api::Location::Remote))
        .collect()
}

/// A row of `RETENTION_ROWS` or `RETENTION_ROWS_BY_LABEL`.
fn retention_row(r: &SqliteRow) -> Result<RetentionRow> {
    let status: String = r.try_get("status")?;
    let copies: Json<Vec<ckptd_api::RemoteCopy>> = r.try_get("remote_copies")?;
    Ok(RetentionRow {
        id: parse_uuid(&r.try_get::<String, _>("id")?, "checkpoint id")?,
        name: r.try_get("name")?,
        owner_uid: r.try_get::<i64, _>("owner_uid")? as u32,
        created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
        status: CheckpointStatus::parse(&status).ok_or_else(|| {
            Error::internal(format!("bad checkpoint status {status:?} in catalog"))
        })?,
        local_images: r.try_get("local_images")?,
        remotes: copies.0.into_iter().map(|c| c.remote).collect(),
    })
}

fn checkpoint_from_row(row: &SqliteRow) -> Result<Checkpoint> {
    checkpoint_from_stored(CheckpointRow::from_row(row)?)
}

/// A row of `checkpoints` as a JSON object SQLite builds, with the columns of `CheckpointRow`
/// (JSON columns embedded as JSON, the flag as a boolean). It must name every field of
/// `CheckpointRow` (`round_trips_every_field_across_reopen` lists one).
macro_rules! checkpoint_object {
    () => {
        "json_object('seq', seq, 'id', id, \
         'name', name, 'target', json(target), 'status', status, 'created_at', created_at, \
         'completed_at', completed_at, 'dir', dir, 'size_bytes', size_bytes, \
         'options', json(options), 'labels', json(labels), 'criu_version', criu_version, \
         'criu_config', criu_config, 'container', json(container), 'stats', json(stats), \
         'error', json(error), 'owner_uid', owner_uid, 'expires_at', expires_at, \
         'local_images', json(CASE WHEN local_images THEN 'true' ELSE 'false' END), \
         'remote_copies', json(remote_copies), 'origin', json(origin), 'hooks', json(hooks), \
         'terminal', terminal, 'members', json(members))"
    };
}
/// A page of checkpoints as one JSON array of `checkpoint_object!`s, read from the query that
/// follows and its closing parenthesis. One row crosses from sqlx's SQLite thread to the runtime
/// instead of one per checkpoint, each a thread wake-up: a page of 100 took 1.33 ms that way,
/// 0.85-0.89 ms this way (BENCHMARKS.md, API under load).
const CHECKPOINT_PAGE: &str = concat!("SELECT json_group_array(", checkpoint_object!(), ") FROM (");

/// A job's row with its checkpoint's as a JSON object (`checkpoint_object!`), NULL when that is
/// gone: what a worker reads to start the job, one statement instead of two.
/// How many connections the catalog reads through at once (the writer is one more).
const READERS: usize = 4;

const JOB_TO_RUN: &str = concat!(
    "SELECT *, (SELECT ",
    checkpoint_object!(),
    " FROM checkpoints WHERE checkpoints.id = jobs.checkpoint_id) AS checkpoint_object \
     FROM jobs WHERE id = ?"
);

/// A row of `JOB_TO_RUN`: the job, its request and its checkpoint.
fn job_to_run_row(
    r: &sqlx::sqlite::SqliteRow,
) -> Result<(Job, serde_json::Value, Option<Checkpoint>)> {
    let req: String = r.try_get("request")?;
    let cp: Option<String> = r.try_get("checkpoint_object")?;
    let cp = cp
        .map(|j| {
            let stored: CheckpointRow = serde_json::from_str(&j).map_err(|e| {
                Error::internal(format!("bad checkpoint of a job in the catalog: {e}"))
            })?;
            checkpoint_from_stored(stored)
        })
        .transpose()?;
    Ok((job_from_row(r)?, from_json(&req, "job request")?, cp))
}

fn checkpoint_from_stored(r: CheckpointRow) -> Result<Checkpoint> {
    let status = CheckpointStatus::parse(&r.status).ok_or_else(|| {
        Error::internal(format!("bad checkpoint status {:?} in catalog", r.status))
    })?;
    Ok(Checkpoint {
        id: parse_uuid(&r.id, "checkpoint id")?,
        name: r.name,
        target: r.target.0,
        status,
        locations: locations(status, &r.dir, r.local_images, r.remote_copies.0),
        created_at: parse_ts(&r.created_at)?,
        completed_at: opt_ts(r.completed_at)?,
        dir: r.dir,
        size_bytes: r.size_bytes as u64,
        options: r.options.0,
        labels: r.labels.0,
        criu_version: r.criu_version,
        criu_config: r.criu_config,
        container: r.container.map(|j| j.0),
        stats: r.stats.map(|j| j.0),
        error: r.error.map(|j| j.0),
        owner_uid: r.owner_uid as u32,
        expires_at: opt_ts(r.expires_at)?,
        origin: r.origin.map(|j| j.0),
        hooks: r.hooks.map(|j| j.0),
        terminal: r.terminal,
        members: r.members.map(|j| j.0).unwrap_or_default(),
    })
}

/// Whether the row's images are on this host: a ready checkpoint says so by its `local`
/// location, and one with no remote copy has them nowhere else; one not ready yet (pending,
/// running, failed) will have them here, or has its log.
fn local_images(cp: &Checkpoint) -> bool {
    cp.status != CheckpointStatus::Ready || cp.is_local() || cp.remote_copies().next().is_none()
}

fn parse_uuid(s: &str, what: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| Error::internal(format!("bad {what} {s:?} in catalog: {e}")))
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.map(|s| parse_ts(&s)).transpose()
}

/// A schedule as stored; `schedules::` derives `effective_cron` and `next_run_at` from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub name: String,
    pub target: Target,
    pub cron: String,
    pub options: ckptd_api::ScheduleOptions,
    pub retention: ckptd_api::Retention,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub anchor_at: DateTime<Utc>,
    pub last_run: Option<ckptd_api::ScheduleRun>,
    pub owner_uid: u32,
    pub consecutive_failures: u32,
    pub disabled_reason: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    /// The start time of the process target the schedule is for (`sys::TaskId::start`).
    pub target_start: Option<u64>,
}

impl ScheduleRow {
    /// Counts a failed run; after `max` of them in a row (0: never) the schedule is disabled and
    /// says why (true): a target that has gone away would otherwise fail every slot forever.
    pub fn count_failure(&mut self, max: u32) -> bool {
        self.consecutive_failures += 1;
        if max == 0 || self.consecutive_failures < max || !self.enabled {
            return false;
        }
        self.enabled = false;
        self.disabled_reason = Some(format!(
            "disabled by ckptd after {} failed runs in a row (the last: {}); fix the cause, then \
             enable it again",
            self.consecutive_failures,
            self.last_run
                .as_ref()
                .and_then(|r| r.error.as_ref())
                .map_or("no error recorded", |e| e.message.as_str())
        ));
        true
    }

    /// Records the end of the run that `job` (finished) was: its status and error, the count of
    /// failures in a row, the time of the last success or failure. Whether that disabled the
    /// schedule; None (nothing changed) when its last run is not that job's or already ended.
    pub fn record_end(&mut self, job: &Job, max_failures: u32) -> Option<bool> {
        let run = self
            .last_run
            .as_mut()
            .filter(|r| r.job_id == Some(job.id) && r.status == ckptd_api::RunStatus::Running)?;
        let ok = job.state == JobState::Succeeded;
        run.status = if ok {
            ckptd_api::RunStatus::Succeeded
        } else {
            ckptd_api::RunStatus::Failed
        };
        run.error = job.error.clone();
        if ok {
            self.consecutive_failures = 0;
            self.last_success_at = job.finished_at;
            Some(false)
        } else {
            self.last_failure_at = job.finished_at;
            Some(self.count_failure(max_failures))
        }
    }
}

/// What a change of a schedule through the API resets of the columns its runs write too
/// (`Catalog::edit_schedule`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ScheduleResets {
    /// Its anchor (a new cron, or enabled again: the next slot counts from the change).
    pub anchor: bool,
    /// Its failures in a row and the reason it was disabled (enabled again).
    pub failures: bool,
    /// Its target's start time (a new target).
    pub target_start: bool,
}

/// A job's end and what follows from it, written together (`Catalog::end_job`).
pub struct JobEnd<'a> {
    pub job: &'a Job,
    /// Only if the job is still in this state.
    pub from: Option<JobState>,
    /// The checkpoint a checkpoint job took, as it is now.
    pub checkpoint: Option<&'a Checkpoint>,
    /// A job queued by this one's end, and its request.
    pub then: Option<(&'a Job, &'a serde_json::Value)>,
    /// Failed runs in a row after which a schedule is disabled (0: never).
    pub schedule_max_failures: u32,
}

/// What `Catalog::end_job` wrote besides the job.
pub struct Ended {
    /// The job's checkpoint as it is now.
    pub checkpoint: Option<Checkpoint>,
    /// The schedule whose run the job was, with its outcome recorded, and whether that
    /// disabled it.
    pub run: Option<(ScheduleRow, bool)>,
}

#[derive(sqlx::FromRow)]
struct StoredSchedule {
    id: String,
    name: String,
    target: Json<Target>,
    cron: String,
    options: Json<ckptd_api::ScheduleOptions>,
    retention: Json<ckptd_api::Retention>,
    enabled: bool,
    created_at: String,
    updated_at: String,
    anchor_at: String,
    last_run: Option<Json<ckptd_api::ScheduleRun>>,
    owner_uid: i64,
    consecutive_failures: i64,
    disabled_reason: Option<String>,
    last_success_at: Option<String>,
    last_failure_at: Option<String>,
    target_start: Option<i64>,
}

fn schedule_from_row(row: &SqliteRow) -> Result<ScheduleRow> {
    let r = StoredSchedule::from_row(row)?;
    Ok(ScheduleRow {
        id: parse_uuid(&r.id, "schedule id")?,
        name: r.name,
        target: r.target.0,
        cron: r.cron,
        options: r.options.0,
        retention: r.retention.0,
        enabled: r.enabled,
        created_at: parse_ts(&r.created_at)?,
        updated_at: parse_ts(&r.updated_at)?,
        anchor_at: parse_ts(&r.anchor_at)?,
        last_run: r.last_run.map(|j| j.0),
        owner_uid: r.owner_uid as u32,
        consecutive_failures: r.consecutive_failures.max(0) as u32,
        disabled_reason: r.disabled_reason,
        last_success_at: opt_ts(r.last_success_at)?,
        last_failure_at: opt_ts(r.last_failure_at)?,
        target_start: r.target_start.map(|s| s.max(0) as u64),
    })
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    kind: String,
    checkpoint_id: String,
    state: String,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    result: Option<Json<ckptd_api::JobResult>>,
    error: Option<Json<ErrorInfo>>,
    owner_uid: i64,
}

fn job_from_row(row: &SqliteRow) -> Result<Job> {
    let r = JobRow::from_row(row)?;
    let bad = |what: &str, v: &str| Error::internal(format!("bad job {what} {v:?} in catalog"));
    Ok(Job {
        id: parse_uuid(&r.id, "job id")?,
        kind: JobKind::parse(&r.kind).ok_or_else(|| bad("kind", &r.kind))?,
        checkpoint_id: parse_uuid(&r.checkpoint_id, "job checkpoint_id")?,
        state: JobState::parse(&r.state).ok_or_else(|| bad("state", &r.state))?,
        created_at: parse_ts(&r.created_at)?,
        started_at: opt_ts(r.started_at)?,
        finished_at: opt_ts(r.finished_at)?,
        result: r.result.map(|j| j.0),
        error: r.error.map(|j| j.0),
        owner_uid: r.owner_uid as u32,
        progress: None,
    })
}

/// The end of a list query (`... WHERE <filters>`): the cursor, newest-first order, one row
/// more than `limit` to know whether another page follows (`page`).
fn page_clause(q: &mut QueryBuilder<'_, Sqlite>, after: Option<i64>, limit: u32) {
    if let Some(after) = after {
        q.push(" AND seq < ").push_bind(after);
    }
    q.push(" ORDER BY seq DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
}

/// Items and the cursor for the page after them, when the query found more than `limit`.
fn page<T>(mut rows: Vec<(i64, T)>, limit: u32) -> List<T> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|(seq, _)| seq.to_string())
    } else {
        None
    };
    List {
        items: rows.into_iter().map(|(_, t)| t).collect(),
        next,
    }
}

/// A checkpoint by id or name (`checkpoint`). A name is held by at most one checkpoint that did
/// not fail; failed ones keep theirs (migration 0005): a name finds the live one, else the newest
/// failed one. Both through an index (migration 0010 indexes every name).
const BY_REFERENCE: &str = "SELECT * FROM checkpoints WHERE id = ?1 OR name = ?1 \
                            ORDER BY status = 'failed', seq DESC LIMIT 1";

/// One of a schedule's checkpoints as its retention sees it (`Catalog::retention_rows`).
#[derive(Debug, Clone)]
pub struct RetentionRow {
    pub id: Uuid,
    pub name: String,
    pub owner_uid: u32,
    pub created_at: DateTime<Utc>,
    pub status: CheckpointStatus,
    /// Its images are on this host (a ready one's `local` location).
    pub local_images: bool,
    /// The remotes that hold a copy.
    pub remotes: Vec<String>,
}

impl RetentionRow {
    /// Whether this host's plan covers it: its images are here, or it is not ready yet.
    pub fn here(&self) -> bool {
        self.status != CheckpointStatus::Ready || self.local_images
    }
}

/// What retention reads of a schedule's checkpoints (`retention_rows`), through the same index.
const RETENTION_ROWS: &str = "SELECT id, name, owner_uid, created_at, status, local_images, \
     remote_copies FROM checkpoints WHERE json_extract(labels, '$.schedule') = ? AND owner_uid = ? \
     ORDER BY seq";

/// The same of every schedule's checkpoints at once (`retention_rows_by_label`), a label after
/// another, in the index's order. Labels are text; one that is not (a damaged row) is passed
/// over, as a schedule's own read (`= ?` with its name) passes it over.
const RETENTION_ROWS_BY_LABEL: &str = "SELECT json_extract(labels, '$.schedule') AS schedule, id, \
     name, owner_uid, created_at, status, local_images, remote_copies FROM checkpoints \
     WHERE json_extract(labels, '$.schedule') IS NOT NULL \
     AND json_type(labels, '$.schedule') = 'text' \
     ORDER BY json_extract(labels, '$.schedule'), seq";

/// A schedule's checkpoints (`checkpoints_of_schedule`), through migration 0010's index.
const SCHEDULE_CHECKPOINTS: &str = "SELECT * FROM checkpoints \
     WHERE json_extract(labels, '$.schedule') = ? AND owner_uid = ? ORDER BY seq";

impl Catalog {
    /// Opens (creating if needed) the catalog at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> anyhow::Result<Catalog> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let mut conn = opts
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the catalog {}: {e}", path.display()))?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the catalog {}: {e}", path.display()))?;
        Ok(Catalog {
            readers: std::sync::Arc::new(batch::Readers::new(opts.clone(), READERS)),
            writer: batch::writer(conn, opts),
            checkpoints_version: Default::default(),
        })
    }

    pub async fn close(&self) {
        batch::close(&self.writer).await;
        self.readers.close().await;
    }

    /// Changes whenever a checkpoint row is written: a list read at version V is current as
    /// long as the version is still V. Bumped after the write commits and before the writer's
    /// caller learns of it, so a client sees its own writes.
    pub fn checkpoints_version(&self) -> u64 {
        self.checkpoints_version
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn checkpoints_changed(&self) {
        self.checkpoints_version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Inserts a checkpoint that no job takes (an import or an adopted directory).
    pub async fn insert_checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        let mut b = Batch::new();
        Self::insert_checkpoint_in(&mut b, cp);
        self.write(b).await.map_err(|e| inserting(e, cp))?;
        self.checkpoints_changed();
        Ok(())
    }

    /// A connection for a read.
    async fn reader(&self) -> std::result::Result<batch::Reader<'_>, sqlx::Error> {
        self.readers.get().await
    }

    /// `b` as one transaction, in one round trip to SQLite's thread (a read after a write
    /// too: `start_queued_job`).
    async fn write(&self, b: Batch<'_>) -> std::result::Result<Vec<batch::Done>, sqlx::Error> {
        Tx::new(&self.writer).await?.commit(b).await
    }

    /// `write`, committed without waiting for the disk (`Durability::Lazy`).
    async fn write_lazily(
        &self,
        b: Batch<'_>,
    ) -> std::result::Result<Vec<batch::Done>, sqlx::Error> {
        Tx::with(&self.writer, Durability::Lazy)
            .await?
            .commit(b)
            .await
    }

    /// Inserts a new checkpoint and the job that will take it, in one transaction; with
    /// `run`, the schedule whose run it is, saying so.
    pub async fn insert_checkpoint_with_job(
        &self,
        cp: &Checkpoint,
        job: &Job,
        request: &serde_json::Value,
        run: Option<&ScheduleRow>,
    ) -> Result<()> {
        let mut b = Batch::new();
        Self::insert_checkpoint_in(&mut b, cp);
        Self::insert_job_in(&mut b, job, request);
        if let Some(row) = run {
            Self::record_run_start_in(&mut b, row);
        }
        self.write(b).await.map_err(|e| inserting(e, cp))?;
        self.checkpoints_changed();
        Ok(())
    }

    fn insert_checkpoint_in<'q>(b: &mut Batch<'q>, cp: &'q Checkpoint) {
        let (pid, container) = match &cp.target {
            Target::Process { pid } => (Some(*pid), None),
            Target::Container { id, .. } => (None, Some(id.clone())),
            Target::Group { .. } => (None, None),
        };
        let kind = match &cp.target {
            Target::Process { .. } => "process",
            Target::Container { .. } => "container",
            Target::Group { .. } => "group",
        };
        b.push(
            "INSERT INTO checkpoints (id, name, target_kind, target_pid, target_id, target, status, \
             created_at, completed_at, dir, size_bytes, options, labels, criu_version, stats, error, \
             container, criu_config, owner_uid, expires_at, local_images, remote_copies, origin, \
             hooks, terminal, members) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
             ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(cp.id.to_string())
        .bind(&cp.name)
        .bind(kind)
        .bind(pid)
        .bind(container)
        .bind(to_json(&cp.target))
        .bind(cp.status.as_str())
        .bind(ts(&cp.created_at))
        .bind(cp.completed_at.as_ref().map(ts))
        .bind(&cp.dir)
        .bind(cp.size_bytes as i64)
        .bind(to_json(&cp.options))
        .bind(to_json(&cp.labels))
        .bind(&cp.criu_version)
        .bind(cp.stats.as_ref().map(to_json))
        .bind(cp.error.as_ref().map(to_json))
        .bind(cp.container.as_ref().map(to_json))
        .bind(&cp.criu_config)
        .bind(i64::from(cp.owner_uid))
        .bind(cp.expires_at.as_ref().map(ts))
        .bind(local_images(cp))
        .bind(to_json(&cp.remote_copies().cloned().collect::<Vec<_>>()))
        .bind(cp.origin.as_ref().map(to_json))
        .bind(cp.hooks.as_ref().map(to_json))
        .bind(&cp.terminal)
        .bind((!cp.members.is_empty()).then(|| to_json(&cp.members)));
    }

    pub async fn insert_job(&self, job: &Job, request: &serde_json::Value) -> Result<()> {
        let mut b = Batch::new();
        Self::insert_job_in(&mut b, job, request);
        self.write(b).await?;
        Ok(())
    }

    fn insert_job_in(b: &mut Batch<'_>, job: &Job, request: &serde_json::Value) {
        b.push(
            "INSERT INTO jobs (id, kind, checkpoint_id, state, created_at, started_at, finished_at, \
             request, result, error, owner_uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(job.id.to_string())
        .bind(job.kind.as_str())
        .bind(job.checkpoint_id.to_string())
        .bind(job.state.as_str())
        .bind(ts(&job.created_at))
        .bind(job.started_at.as_ref().map(ts))
        .bind(job.finished_at.as_ref().map(ts))
        .bind(request.to_string())
        .bind(job.result.as_ref().map(to_json))
        .bind(job.error.as_ref().map(to_json))
        .bind(i64::from(job.owner_uid));
    }

    /// Writes a checkpoint's mutable fields (status, completion, size, stats, error).
    pub async fn update_checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        let mut b = Batch::new();
        Self::update_checkpoint_in(&mut b, cp, "");
        self.write(b).await?;
        self.checkpoints_changed();
        Ok(())
    }

    /// The update of a checkpoint's mutable fields; `and` (empty, or ` AND ` and a condition
    /// with its values bound after the call) narrows it.
    fn update_checkpoint_in<'q>(b: &mut Batch<'q>, cp: &'q Checkpoint, and: &str) {
        b.push(&format!(
            "UPDATE checkpoints SET status = ?, completed_at = ?, size_bytes = ?, criu_version = ?, \
             stats = ?, error = ?, container = ?, criu_config = ?, dir = ?, local_images = ?, \
             remote_copies = ?, terminal = ?, members = ? WHERE id = ?{and}"
        ))
        .bind(cp.status.as_str())
        .bind(cp.completed_at.as_ref().map(ts))
        .bind(cp.size_bytes as i64)
        .bind(&cp.criu_version)
        .bind(cp.stats.as_ref().map(to_json))
        .bind(cp.error.as_ref().map(to_json))
        .bind(cp.container.as_ref().map(to_json))
        .bind(&cp.criu_config)
        .bind(&cp.dir)
        .bind(local_images(cp))
        .bind(to_json(&cp.remote_copies().cloned().collect::<Vec<_>>()))
        .bind(&cp.terminal)
        .bind((!cp.members.is_empty()).then(|| to_json(&cp.members)))
        .bind(cp.id.to_string());
    }

    /// Replaces a checkpoint's labels (a live migration's fallback marks its checkpoint).
    pub async fn set_labels(&self, cp: &Checkpoint) -> Result<()> {
        let mut b = Batch::new();
        b.push("UPDATE checkpoints SET labels = ? WHERE id = ?")
            .bind(to_json(&cp.labels))
            .bind(cp.id.to_string());
        self.write(b).await?;
        self.checkpoints_changed();
        Ok(())
    }

    /// Replaces what a job's worker needs (its request), as the job learns more (a push's
    /// multipart upload id).
    pub async fn set_job_request(&self, id: Uuid, request: &serde_json::Value) -> Result<()> {
        let mut b = Batch::new();
        b.push("UPDATE jobs SET request = ? WHERE id = ?")
            .bind(request.to_string())
            .bind(id.to_string());
        self.write(b).await?;
        Ok(())
    }

    /// Writes a job's mutable fields (state, times, result, error).
    pub async fn update_job(&self, job: &Job) -> Result<()> {
        let mut b = Batch::new();
        Self::update_job_in(&mut b, job, None);
        self.write(b).await?;
        Ok(())
    }

    /// Writes a job only if it is still in state `from`; false if another writer moved it first
    /// (a worker claiming a job races with a cancel).
    pub async fn update_job_if(&self, job: &Job, from: JobState) -> Result<bool> {
        let mut b = Batch::new();
        Self::update_job_in(&mut b, job, Some(from));
        Ok(self.write(b).await?[0].changed == 1)
    }

    /// The write of a job (only if it is in state `from`, when given: the statement changes no
    /// row otherwise).
    fn update_job_in(b: &mut Batch<'_>, job: &Job, from: Option<JobState>) {
        let from = from.map(|f| f.as_str());
        b.push(
            "UPDATE jobs SET state = ?, started_at = ?, finished_at = ?, result = ?, \
             error = ? WHERE id = ? AND (? IS NULL OR state = ?)",
        )
        .bind(job.state.as_str())
        .bind(job.started_at.as_ref().map(ts))
        .bind(job.finished_at.as_ref().map(ts))
        .bind(job.result.as_ref().map(to_json))
        .bind(job.error.as_ref().map(to_json))
        .bind(job.id.to_string())
        .bind(from)
        .bind(from);
    }

    /// Records a job's end in one transaction with everything that follows from it: the
    /// checkpoint it took (`checkpoint`; a checkpoint job ended otherwise fails its still
    /// unfinished checkpoint), the job queued after it (`then`: the push of `push_to`), and the
    /// outcome of the schedule run it was (the run's schedule is named in the job's request,
    /// `"schedule"`). None when `from` was given and the job had left that state: nothing
    /// was written.
    pub async fn end_job(&self, end: JobEnd<'_>) -> Result<Option<Ended>> {
        let job = end.job;
        if let (JobKind::Checkpoint, JobState::Succeeded, Some(cp), None) =
            (job.kind, job.state, end.checkpoint, end.then)
        {
            return self.end_dump_that_succeeded(job, end.from, cp).await;
        }
        // Two round trips: the job's end with what the rest depends on read in the same step,
        // then the rest and the commit.
        let mut tx = Tx::new(&self.writer).await?;
        let mut b = Batch::new();
        Self::update_job_in(&mut b, job, end.from);
        let read_checkpoint = end.checkpoint.is_none() && job.kind == JobKind::Checkpoint;
        if read_checkpoint {
            b.push("SELECT * FROM checkpoints WHERE id = ?")
                .bind(job.checkpoint_id.to_string());
        }
        let of_schedule = job.kind == JobKind::Checkpoint;
        if of_schedule {
            // The schedule the job's request names, if any: one statement, not the request
            // read back and then the schedule.
            b.push(
                "SELECT * FROM schedules WHERE id = \
                 (SELECT json_extract(request, '$.schedule') FROM jobs WHERE id = ?)",
            )
            .bind(job.id.to_string());
        }
        let mut read = tx.run(b).await?.into_iter();
        if read.next().map(|d| d.changed) != Some(1) {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut checkpoint = match end.checkpoint {
            Some(cp) => Some(cp.clone()),
            None if read_checkpoint => read
                .next()
                .and_then(|d| d.rows.first().map(checkpoint_from_row))
                .transpose()?,
            None => None,
        };
        let schedule = match of_schedule {
            true => read
                .next()
                .and_then(|d| d.rows.first().map(schedule_from_row))
                .transpose()?,
            false => None,
        };
        let mut changed = end.checkpoint.is_some();
        if let Some(cp) = checkpoint.as_mut() {
            if end.checkpoint.is_none()
                && !matches!(
                    cp.status,
                    CheckpointStatus::Ready | CheckpointStatus::Failed
                )
            {
                cp.status = CheckpointStatus::Failed;
                cp.completed_at = job.finished_at;
                cp.error = job.error.clone();
                changed = true;
            }
        }
        let run = schedule.and_then(|mut row| {
            let disabled = row.record_end(job, end.schedule_max_failures)?;
            Some((row, disabled))
        });
        let mut b = Batch::new();
        if let Some(cp) = checkpoint.as_ref().filter(|_| changed) {
            Self::update_checkpoint_in(&mut b, cp, "");
        }
        if let Some((next, request)) = end.then {
            Self::insert_job_in(&mut b, next, request);
        }
        if let Some((row, _)) = &run {
            Self::update_schedule_in(&mut b, row);
        }
        tx.commit(b).await?;
        if changed {
            self.checkpoints_changed();
        }
        Ok(Some(Ended { checkpoint, run }))
    }

    /// `end_job` of a dump that succeeded (no job after it): one round trip, where an end that
    /// must read first takes two (BENCHMARKS.md, "Cost growth"). The checkpoint and the run of a
    /// schedule it was are written only if the job's end took; the run's record is made in SQL,
    /// as a success needs nothing read first (its count of failures starts again at 0, and it
    /// disables nothing), on the same terms as `ScheduleRow::record_end`: only while the
    /// schedule's last run is this job's, and running.
    async fn end_dump_that_succeeded(
        &self,
        job: &Job,
        from: Option<JobState>,
        cp: &Checkpoint,
    ) -> Result<Option<Ended>> {
        let (id, state) = (job.id.to_string(), job.state.as_str());
        let finished = job.finished_at.as_ref().map(ts);
        let took = "SELECT 1 FROM jobs WHERE id = ? AND state = ? AND finished_at IS ?";
        let mut b = Batch::new();
        Self::update_job_in(&mut b, job, from);
        Self::update_checkpoint_in(&mut b, cp, &format!(" AND EXISTS ({took})"));
        b.bind(id.clone()).bind(state).bind(finished.clone());
        b.push(&format!(
            "UPDATE schedules SET last_run = json_set(last_run, '$.status', ?), \
             consecutive_failures = 0, last_success_at = ? \
             WHERE id = (SELECT json_extract(request, '$.schedule') FROM jobs WHERE id = ? \
             AND EXISTS ({took})) \
             AND json_extract(last_run, '$.job_id') = ? AND json_extract(last_run, '$.status') = ? \
             RETURNING *"
        ))
        .bind("succeeded")
        .bind(finished.clone())
        .bind(id.clone())
        .bind(id.clone())
        .bind(state)
        .bind(finished)
        .bind(id)
        .bind("running");
        let done = self.write(b).await?;
        if done[0].changed != 1 {
            return Ok(None); // nor did the rest: each is written only if the job's end took
        }
        self.checkpoints_changed();
        let run = done[2]
            .rows
            .first()
            .map(schedule_from_row)
            .transpose()?
            .map(|row| (row, false));
        Ok(Some(Ended {
            checkpoint: Some(cp.clone()),
            run,
        }))
    }

    /// A checkpoint by id or by name.
    pub async fn checkpoint(&self, reference: &str) -> Result<Option<Checkpoint>> {
        let row = sqlx::query(BY_REFERENCE)
            .bind(reference)
            .fetch_optional(&mut *self.reader().await?)
            .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    /// Bytes the ready checkpoints' images take.
    pub async fn ready_bytes(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM checkpoints WHERE status = 'ready' \
             AND local_images = 1",
        )
        .fetch_one(&mut *self.reader().await?)
        .await?;
        Ok(n.max(0) as u64)
    }

    pub async fn name_exists(&self, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM checkpoints WHERE name = ? AND status <> 'failed'")
            .bind(name)
            .fetch_optional(&mut *self.reader().await?)
            .await?;
        Ok(row.is_some())
    }

    pub async fn list_checkpoints(&self, f: &CheckpointFilter) -> Result<List<Checkpoint>> {
        let mut q = QueryBuilder::<Sqlite>::new(CHECKPOINT_PAGE);
        q.push("SELECT * FROM checkpoints WHERE 1 = 1");
        if let Some(pid) = f.pid {
            q.push(" AND target_pid = ").push_bind(pid);
        }
        if let Some(c) = &f.container {
            q.push(" AND target_id = ").push_bind(c.clone());
        }
        if let Some(s) = f.status {
            q.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(o) = f.owner {
            q.push(" AND owner_uid = ").push_bind(i64::from(o));
        }
        for (k, v) in &f.labels {
            q.push(" AND EXISTS (SELECT 1 FROM json_each(labels) WHERE key = ")
                .push_bind(k.clone())
                .push(" AND value = ")
                .push_bind(v.clone())
                .push(")");
        }
        page_clause(&mut q, f.after, f.limit);
        q.push(")");
        let json: String = q
            .build_query_scalar()
            .fetch_one(&mut *self.reader().await?)
            .await?;
        let mut rows: Vec<CheckpointRow> = serde_json::from_str(&json).map_err(|e| {
            Error::internal(format!("bad page of checkpoints from the catalog: {e}"))
        })?;
        rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.seq));
        let items = rows
            .into_iter()
            .map(|r| Ok((r.seq, checkpoint_from_stored(r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(page(items, f.limit))
    }

    /// Finishes a list query (`... WHERE <filters>`, `page_clause`) and reads its rows.
    async fn fetch_page<T>(
        &self,
        mut q: QueryBuilder<'_, Sqlite>,
        after: Option<i64>,
        limit: u32,
        from_row: fn(&SqliteRow) -> Result<T>,
    ) -> Result<List<T>> {
        page_clause(&mut q, after, limit);
        let rows = q.build().fetch_all(&mut *self.reader().await?).await?;
        let items = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("seq")?, from_row(r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(page(items, limit))
    }

    pub async fn checkpoints_with_status(
        &self,
        statuses: &[CheckpointStatus],
    ) -> Result<Vec<Checkpoint>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM checkpoints WHERE status IN (");
        let mut sep = q.separated(", ");
        for s in statuses {
            sep.push_bind(s.as_str());
        }
        q.push(") ORDER BY seq");
        let rows = q.build().fetch_all(&mut *self.reader().await?).await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    /// Checkpoints whose expiry has passed and whose job has ended, oldest first.
    /// Checkpoints past their expiry, and failed ones that ended before `failed_before`.
    pub async fn expired_checkpoints(
        &self,
        now: &DateTime<Utc>,
        failed_before: &DateTime<Utc>,
    ) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(
            "SELECT * FROM checkpoints WHERE ((expires_at IS NOT NULL AND expires_at <= ?) \
             OR (status = 'failed' AND completed_at <= ?)) \
             AND status NOT IN ('pending', 'running') ORDER BY seq",
        )
        .bind(ts(now))
        .bind(ts(failed_before))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    /// What a retention plan needs of each of a schedule's checkpoints (created at `since` or
    /// later), read row by row: a few hundred bytes each, never the whole records (a schedule
    /// of 100,000 checkpoints took the daemon to 1.1 GiB that way, BENCHMARKS.md).
    pub async fn retention_rows(
        &self,
        name: &str,
        owner: u32,
        since: Option<&DateTime<Utc>>,
    ) -> Result<Vec<RetentionRow>> {
        use futures_util::TryStreamExt;
        let mut conn = self.reader().await?;
        let mut rows = sqlx::query(RETENTION_ROWS)
            .bind(name)
            .bind(i64::from(owner))
            .fetch(&mut *conn);
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            let row = retention_row(&r)?;
            if since.is_none_or(|s| row.created_at >= *s) {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// The retention rows of every checkpoint that carries the label `schedule`
    /// (schedules::LABEL), one label at a time: `each` gets a label and its rows, every owner's
    /// and of any time, oldest first. One statement for the timer's pass over every schedule,
    /// where a statement per schedule was a round trip per schedule each minute; one label's
    /// rows are in memory at a time.
    pub async fn retention_rows_by_label(
        &self,
        mut each: impl FnMut(&str, Vec<RetentionRow>),
    ) -> Result<()> {
        use futures_util::TryStreamExt;
        let mut conn = self.reader().await?;
        let mut rows = sqlx::query(RETENTION_ROWS_BY_LABEL).fetch(&mut *conn);
        let mut label = String::new();
        let mut group = Vec::new();
        // A label's rows come as one run (the index's order; text compares by bytes), so a
        // plan is never made of part of them.
        while let Some(r) = rows.try_next().await? {
            let l: String = r.try_get("schedule")?;
            if l != label && !group.is_empty() {
                each(&label, std::mem::take(&mut group));
            }
            label = l;
            group.push(retention_row(&r)?);
        }
        if !group.is_empty() {
            each(&label, group);
        }
        Ok(())
    }

    /// The checkpoints of `owner`'s schedule `name` (label `schedule`, schedules::LABEL), oldest
    /// first, through the index on that label (migration 0010).
    pub async fn checkpoints_of_schedule(&self, name: &str, owner: u32) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(SCHEDULE_CHECKPOINTS)
            .bind(name)
            .bind(i64::from(owner))
            .fetch_all(&mut *self.reader().await?)
            .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    pub async fn insert_schedule(&self, s: &ScheduleRow) -> Result<()> {
        let mut b = Batch::new();
        b.push(
            "INSERT INTO schedules (id, name, target, cron, options, retention, enabled, \
             created_at, updated_at, anchor_at, last_run, owner_uid, consecutive_failures, \
             disabled_reason, last_success_at, last_failure_at, target_start) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.to_string())
        .bind(&s.name)
        .bind(to_json(&s.target))
        .bind(&s.cron)
        .bind(to_json(&s.options))
        .bind(to_json(&s.retention))
        .bind(i64::from(s.enabled))
        .bind(ts(&s.created_at))
        .bind(ts(&s.updated_at))
        .bind(ts(&s.anchor_at))
        .bind(s.last_run.as_ref().map(to_json))
        .bind(i64::from(s.owner_uid))
        .bind(i64::from(s.consecutive_failures))
        .bind(&s.disabled_reason)
        .bind(s.last_success_at.as_ref().map(ts))
        .bind(s.last_failure_at.as_ref().map(ts))
        .bind(s.target_start.map(|t| t as i64));
        let res = self.write(b).await;
        match res {
            Err(e) if is_unique_violation(&e, "schedules.name") => Err(Error::conflict(format!(
                "a schedule named {:?} already exists",
                s.name
            ))
            .with_advice(ckptd_api::Advice::ChangeSchedule {
                schedule: s.name.clone(),
            })),
            r => r.map(|_| ()).map_err(Into::into),
        }
    }

    /// Writes a schedule's mutable fields; false if it is gone.
    fn update_schedule_in<'q>(b: &mut Batch<'q>, s: &'q ScheduleRow) {
        b.push(
            "UPDATE schedules SET target = ?, cron = ?, options = ?, retention = ?, enabled = ?, \
             updated_at = ?, anchor_at = ?, last_run = ?, consecutive_failures = ?, \
             disabled_reason = ?, last_success_at = ?, last_failure_at = ?, target_start = ? \
             WHERE id = ?",
        )
        .bind(to_json(&s.target))
        .bind(&s.cron)
        .bind(to_json(&s.options))
        .bind(to_json(&s.retention))
        .bind(i64::from(s.enabled))
        .bind(ts(&s.updated_at))
        .bind(ts(&s.anchor_at))
        .bind(s.last_run.as_ref().map(to_json))
        .bind(i64::from(s.consecutive_failures))
        .bind(&s.disabled_reason)
        .bind(s.last_success_at.as_ref().map(ts))
        .bind(s.last_failure_at.as_ref().map(ts))
        .bind(s.target_start.map(|t| t as i64))
        .bind(s.id.to_string());
    }

    /// A change through the API of the schedule read as `row` (then last changed `read_at`): the
    /// columns a caller owns, and of those a run also writes only what the change resets (the
    /// anchor when it re-times the schedule, the count of failures and the reason when it
    /// enables it, the target's start time when it re-targets it). The schedule as it is after;
    /// None when it was changed through the API or deleted since that read (nothing written).
    pub async fn edit_schedule(
        &self,
        row: &ScheduleRow,
        read_at: &DateTime<Utc>,
        resets: ScheduleResets,
    ) -> Result<Option<ScheduleRow>> {
        let mut b = Batch::new();
        b.push(
            "UPDATE schedules SET target = ?, cron = ?, options = ?, retention = ?, enabled = ?, \
             updated_at = ?, \
             anchor_at = CASE WHEN ? THEN ? ELSE anchor_at END, \
             consecutive_failures = CASE WHEN ? THEN 0 ELSE consecutive_failures END, \
             disabled_reason = CASE WHEN ? THEN NULL ELSE disabled_reason END, \
             target_start = CASE WHEN ? THEN ? ELSE target_start END \
             WHERE id = ? AND updated_at = ? RETURNING *",
        )
        .bind(to_json(&row.target))
        .bind(&row.cron)
        .bind(to_json(&row.options))
        .bind(to_json(&row.retention))
        .bind(i64::from(row.enabled))
        .bind(ts(&row.updated_at))
        .bind(resets.anchor)
        .bind(ts(&row.anchor_at))
        .bind(resets.failures)
        .bind(resets.failures)
        .bind(resets.target_start)
        .bind(row.target_start.map(|t| t as i64))
        .bind(row.id.to_string())
        .bind(ts(read_at));
        let done = self.write(b).await?;
        done.first()
            .and_then(|d| d.rows.first().map(schedule_from_row))
            .transpose()
    }

    /// A run's start, from `row` as the clock (or a manual run) read it: only the columns a run
    /// owns, so that a change made through the API since that read stands. Its run, its anchor
    /// (kept if the schedule's is later: a change of its cron or its enabling re-anchors it at
    /// that moment) and the target's start time if the schedule had none.
    fn record_run_start_in<'q>(b: &mut Batch<'q>, row: &'q ScheduleRow) {
        let anchor = ts(&row.anchor_at);
        b.push(
            "UPDATE schedules SET anchor_at = CASE WHEN julianday(?) > julianday(anchor_at) \
             THEN ? ELSE anchor_at END, last_run = ?, target_start = COALESCE(target_start, ?) \
             WHERE id = ?",
        )
        .bind(anchor.clone())
        .bind(anchor)
        .bind(row.last_run.as_ref().map(to_json))
        .bind(row.target_start.map(|t| t as i64))
        .bind(row.id.to_string());
    }

    /// Records a run refused at its admission on the schedule as it is now (read and written in
    /// one transaction; not the copy the run was fired from, which a change through the API may
    /// have outdated): `record` changes the row and says whether that disabled it. None when the
    /// schedule is gone.
    pub async fn record_refused_run(
        &self,
        id: Uuid,
        record: impl FnOnce(&mut ScheduleRow) -> bool,
    ) -> Result<Option<(ScheduleRow, bool)>> {
        let mut tx = Tx::new(&self.writer).await?;
        let mut b = Batch::new();
        b.push("SELECT * FROM schedules WHERE id = ?")
            .bind(id.to_string());
        let read = tx.run(b).await?;
        let Some(mut row) = read
            .first()
            .and_then(|d| d.rows.first().map(schedule_from_row))
            .transpose()?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let disabled = record(&mut row);
        let mut b = Batch::new();
        Self::update_schedule_in(&mut b, &row);
        tx.commit(b).await?;
        Ok(Some((row, disabled)))
    }

    /// A restore in place by ckptd gave process `pid` of `owner` a new start time: the schedules
    /// of that process follow it (they were made for the process, which lives on).
    pub async fn follow_restored(&self, pid: i32, owner: u32, start: u64) -> Result<()> {
        let mut b = Batch::new();
        b.push(
            "UPDATE schedules SET target_start = ? WHERE owner_uid = ? \
             AND json_extract(target, '$.kind') = 'process' AND json_extract(target, '$.pid') = ?",
        )
        .bind(start as i64)
        .bind(i64::from(owner))
        .bind(i64::from(pid));
        self.write(b).await?;
        Ok(())
    }

    /// A schedule by id or name.
    pub async fn schedule(&self, reference: &str) -> Result<Option<ScheduleRow>> {
        let row = sqlx::query("SELECT * FROM schedules WHERE id = ? OR name = ? LIMIT 1")
            .bind(reference)
            .bind(reference)
            .fetch_optional(&mut *self.reader().await?)
            .await?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    /// Every schedule (of `owner`, when given), oldest first.
    pub async fn schedules(&self, owner: Option<u32>) -> Result<Vec<ScheduleRow>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM schedules WHERE 1 = 1");
        if let Some(o) = owner {
            q.push(" AND owner_uid = ").push_bind(i64::from(o));
        }
        q.push(" ORDER BY seq");
        let rows = q.build().fetch_all(&mut *self.reader().await?).await?;
        rows.iter().map(schedule_from_row).collect()
    }

    pub async fn delete_schedule(&self, id: Uuid) -> Result<()> {
        let mut b = Batch::new();
        b.push("DELETE FROM schedules WHERE id = ?")
            .bind(id.to_string());
        self.write(b).await?;
        Ok(())
    }

    /// Ready checkpoints per schedule (by their `schedule` label).
    pub async fn kept_by_schedule(&self) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT json_extract(labels, '$.schedule') AS s, COUNT(*) AS n FROM checkpoints \
             WHERE status = 'ready' AND json_extract(labels, '$.schedule') IS NOT NULL \
             GROUP BY s",
        )
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("s")?,
                    r.try_get::<i64, _>("n")? as u64,
                ))
            })
            .collect()
    }

    /// Every ready checkpoint's directory, size, whether its images are here, and its remote
    /// copies (for the storage metrics).
    /// Where ready checkpoints (of `owner`, when given) keep their images, and how big they are.
    pub async fn ready_storage(
        &self,
        owner: Option<u32>,
    ) -> Result<Vec<(String, u64, bool, Vec<ckptd_api::RemoteCopy>)>> {
        let rows = sqlx::query(
            "SELECT dir, size_bytes, local_images, remote_copies FROM checkpoints WHERE status = 'ready' \
             AND (? IS NULL OR owner_uid = ?)",
        )
        .bind(owner)
        .bind(owner)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("dir")?,
                    r.try_get::<i64, _>("size_bytes")?.max(0) as u64,
                    r.try_get::<bool, _>("local_images")?,
                    r.try_get::<Json<Vec<ckptd_api::RemoteCopy>>, _>("remote_copies")?
                        .0,
                ))
            })
            .collect()
    }

    /// How many checkpoints (any status) `owner` has, and the bytes its ready ones take.
    pub async fn owner_usage(&self, owner: u32) -> Result<(u64, u64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN status = 'ready' THEN size_bytes END), 0) \
             AS bytes FROM checkpoints WHERE owner_uid = ?",
        )
        .bind(owner)
        .fetch_one(&mut *self.reader().await?)
        .await?;
        Ok((
            row.try_get::<i64, _>("n")?.max(0) as u64,
            row.try_get::<i64, _>("bytes")?.max(0) as u64,
        ))
    }

    /// Checkpoints (of `owner`, when given) by status.
    pub async fn count_by_status(&self, owner: Option<u32>) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM checkpoints WHERE (? IS NULL OR owner_uid = ?) \
             GROUP BY status",
        )
        .bind(owner)
        .bind(owner)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        let mut by_status = Vec::new();
        for r in rows {
            by_status.push((
                r.try_get::<String, _>("status")?,
                r.try_get::<i64, _>("n")? as u64,
            ));
        }
        Ok(by_status)
    }

    pub async fn count_checkpoints(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM checkpoints")
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    /// Every checkpoint id in the catalog.
    pub async fn checkpoint_ids(&self) -> Result<std::collections::HashSet<Uuid>> {
        let rows = sqlx::query("SELECT id FROM checkpoints")
            .fetch_all(&mut *self.reader().await?)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>("id").ok())
            .filter_map(|s| Uuid::parse_str(&s).ok())
            .collect())
    }

    pub async fn delete_checkpoint(&self, id: Uuid) -> Result<()> {
        let mut b = Batch::new();
        b.push("DELETE FROM checkpoints WHERE id = ?")
            .bind(id.to_string());
        self.write(b).await?;
        self.checkpoints_changed();
        Ok(())
    }

    pub async fn job(&self, id: Uuid) -> Result<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *self.reader().await?)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Starts a queued job: `running` from `started_at` if it is still `queued`, and its
    /// checkpoint `running` with it when the job takes it (a dump, a live migration's source),
    /// in one transaction that also reads the job, its request and its checkpoint as they then
    /// are (`JOB_TO_RUN`): one trip to the writer where a read and then the start were two
    /// (BENCHMARKS.md, "Cost growth"). None if the job is gone; with `false` if it was not
    /// queued (cancelled while it waited), and the job as it is.
    ///
    /// Committed lazily (`Durability::Lazy`): a kill -9 of the daemon loses nothing, and what a
    /// power loss could take back is only that the job had started, which no promise rests on:
    /// the job's end commits durably (and the start with it), and reconciliation ends a job it
    /// finds queued as it ends one it finds running (`Service::reconcile`). A millisecond of a
    /// job's fixed cost (BENCHMARKS.md, "The fixed cost of a job").
    pub async fn start_queued_job(
        &self,
        id: Uuid,
        started_at: &DateTime<Utc>,
    ) -> Result<Option<(bool, Job, serde_json::Value, Option<Checkpoint>)>> {
        let (id, at) = (id.to_string(), ts(started_at));
        let mut b = Batch::new();
        b.push(
            "UPDATE jobs SET state = 'running', started_at = ? WHERE id = ? AND state = 'queued'",
        )
        .bind(at.clone())
        .bind(id.clone());
        // Only if the statement before took: the job is now running from this very start.
        b.push(
            "UPDATE checkpoints SET status = 'running' WHERE id = (SELECT checkpoint_id FROM jobs \
             WHERE id = ? AND state = 'running' AND started_at = ? AND kind IN (?, ?))",
        )
        .bind(id.clone())
        .bind(at)
        .bind(JobKind::Checkpoint.as_str())
        .bind(JobKind::Migrate.as_str());
        b.push(JOB_TO_RUN).bind(id);
        let mut done = self.write_lazily(b).await?;
        let started = done[0].changed == 1;
        if done[1].changed == 1 {
            self.checkpoints_changed();
        }
        let Some(r) = done.pop().and_then(|d| d.rows.into_iter().next()) else {
            return Ok(None);
        };
        let (job, request, cp) = job_to_run_row(&r)?;
        Ok(Some((started, job, request, cp)))
    }

    /// A job and the request it was created with.
    pub async fn job_with_request(&self, id: Uuid) -> Result<Option<(Job, serde_json::Value)>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *self.reader().await?)
            .await?;
        row.as_ref()
            .map(|r| {
                let req: String = r.try_get("request")?;
                Ok((job_from_row(r)?, from_json(&req, "job request")?))
            })
            .transpose()
    }

    pub async fn list_jobs(&self, f: &JobFilter) -> Result<List<Job>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM jobs WHERE 1 = 1");
        if let Some(s) = f.state {
            q.push(" AND state = ").push_bind(s.as_str());
        }
        if let Some(k) = f.kind {
            q.push(" AND kind = ").push_bind(k.as_str());
        }
        if let Some(c) = f.checkpoint_id {
            q.push(" AND checkpoint_id = ").push_bind(c.to_string());
        }
        if let Some(o) = f.owner {
            q.push(" AND owner_uid = ").push_bind(i64::from(o));
        }
        self.fetch_page(q, f.after, f.limit, job_from_row).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ckptd_api::{CheckpointOptions, DumpStats, JobResult};

    use super::*;

    fn checkpoint(name: &str, pid: i32) -> Checkpoint {
        Checkpoint {
            id: Uuid::new_v4(),
            name: name.into(),
            target: Target::Process { pid },
            status: CheckpointStatus::Pending,
            created_at: now(),
            completed_at: None,
            dir: format!("/var/lib/ckptd/checkpoints/{name}"),
            size_bytes: 0,
            options: CheckpointOptions::default(),
            labels: BTreeMap::from([("app".into(), name.into())]),
            criu_version: Some("4.2.1".into()),
            criu_config: None,
            container: None,
            stats: None,
            error: None,
            owner_uid: 0,
            expires_at: None,
            locations: vec![],
            origin: None,
            hooks: None,
            terminal: None,
            members: vec![],
        }
    }

    fn job_for(cp: &Checkpoint) -> Job {
        Job {
            id: Uuid::new_v4(),
            kind: JobKind::Checkpoint,
            checkpoint_id: cp.id,
            state: JobState::Queued,
            created_at: now(),
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            owner_uid: 0,
            progress: None,
        }
    }

    async fn open() -> (tempfile::TempDir, Catalog) {
        let d = tempfile::tempdir().unwrap();
        let c = Catalog::open(&d.path().join("catalog.db")).await.unwrap();
        (d, c)
    }

    /// The `synchronous` a transaction commits with, read inside it.
    async fn commits_with(c: &Catalog, d: Durability) -> std::result::Result<i64, sqlx::Error> {
        let mut tx = Tx::with(&c.writer, d).await?;
        let mut b = Batch::new();
        b.push("PRAGMA synchronous");
        let done = tx.run(b).await?;
        tx.rollback().await?;
        Ok(done[0].rows[0].get::<i64, _>(0))
    }

    #[tokio::test]
    async fn a_lazy_commit_never_leaves_a_durable_one_lazy() {
        let (_d, c) = open().await;
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        assert_eq!(commits_with(&c, Durability::Durable).await.unwrap(), FULL);
        assert_eq!(commits_with(&c, Durability::Lazy).await.unwrap(), NORMAL);
        assert_eq!(commits_with(&c, Durability::Durable).await.unwrap(), FULL);
        assert_eq!(commits_with(&c, Durability::Durable).await.unwrap(), FULL);
        // A lazy batch that fails after setting its level, then a plain write.
        let mut b = Batch::new();
        b.push("INSERT INTO no_such_table VALUES (1)");
        let failed = Tx::with(&c.writer, Durability::Lazy)
            .await
            .unwrap()
            .commit(b)
            .await;
        assert!(failed.is_err());
        assert_eq!(commits_with(&c, Durability::Durable).await.unwrap(), FULL);
        // The job's start is lazy, and a write after it durable.
        let cp = checkpoint("lazy", 1);
        let job = job_for(&cp);
        c.insert_checkpoint_with_job(&cp, &job, &serde_json::Value::Null, None)
            .await
            .unwrap();
        let started = c.start_queued_job(job.id, &now()).await.unwrap();
        assert!(matches!(started, Some((true, ..))));
        assert_eq!(commits_with(&c, Durability::Durable).await.unwrap(), FULL);
        assert_eq!(
            c.checkpoint(&cp.id.to_string())
                .await
                .unwrap()
                .unwrap()
                .status,
            CheckpointStatus::Running
        );
    }

    #[tokio::test]
    async fn round_trips_every_field_across_reopen() {
        let (d, c) = open().await;
        let mut cp = checkpoint("a", 10);
        // Written when the row is made, and never changed.
        cp.labels
            .insert("app".into(), "web \"quoted\" \u{e9}".into());
        cp.hooks = Some(ckptd_api::Hooks {
            pre_dump: Some(vec!["/bin/true".into()]),
            ..Default::default()
        });
        let mut job = job_for(&cp);
        c.insert_checkpoint_with_job(&cp, &job, &serde_json::Value::Null, None)
            .await
            .unwrap();
        cp.status = CheckpointStatus::Ready;
        cp.completed_at = Some(now());
        cp.size_bytes = 12345;
        cp.stats = Some(DumpStats {
            freezing_time_us: 1,
            frozen_time_us: 2,
            memdump_time_us: 3,
            memwrite_time_us: 4,
            pages_written: 5,
        });
        cp.container = Some(ckptd_api::ContainerRecord {
            bundle: "/b".into(),
            config_sha256: "ab".into(),
            terminal: false,
            stdio: vec!["/dev/null".into(), "pipe:[1]".into()],
        });
        cp.criu_config = Some("/etc/criu/runc.conf".into());
        cp.terminal = Some("tty".into());
        cp.members = vec![ckptd_api::GroupMember {
            target: Target::Process { pid: 11 },
            container: None,
            stats: None,
        }];
        cp.locations = vec![
            ckptd_api::Location::Local {
                dir: cp.dir.clone(),
            },
            ckptd_api::Location::Remote(ckptd_api::RemoteCopy {
                remote: "s3".into(),
                key: "ckptd/checkpoints/x/archive.tar.zst".into(),
                size_bytes: 99,
                sha256: "ff".into(),
                pushed_at: now(),
                encrypted: true,
            }),
        ];
        c.update_checkpoint(&cp).await.unwrap();
        job.state = JobState::Succeeded;
        job.started_at = Some(now());
        job.finished_at = Some(now());
        job.result = Some(JobResult {
            pid: Some(7),
            ..Default::default()
        });
        c.update_job(&job).await.unwrap();
        c.close().await;

        let c = Catalog::open(&d.path().join("catalog.db")).await.unwrap();
        assert_eq!(c.checkpoint("a").await.unwrap().unwrap(), cp);
        assert_eq!(c.checkpoint(&cp.id.to_string()).await.unwrap().unwrap(), cp);
        assert_eq!(c.job(job.id).await.unwrap().unwrap(), job);
        // Also identical through JSON, as the API serves it.
        let served = serde_json::to_value(c.checkpoint("a").await.unwrap().unwrap()).unwrap();
        assert_eq!(served, serde_json::to_value(&cp).unwrap());
        // And in a list, whose page SQLite builds as JSON (`CHECKPOINT_PAGE`).
        let listed = c
            .list_checkpoints(&CheckpointFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.items, vec![cp.clone()]);
        // And with its job, as a worker reads it when it starts the job (`JOB_TO_RUN`): this
        // one has ended, so it is not started again.
        let (started, read, request, with) =
            c.start_queued_job(job.id, &now()).await.unwrap().unwrap();
        assert!(!started);
        assert_eq!(
            (read, request, with),
            (job.clone(), serde_json::Value::Null, Some(cp.clone()))
        );
        c.delete_checkpoint(cp.id).await.unwrap();
        let (_, _, _, gone) = c.start_queued_job(job.id, &now()).await.unwrap().unwrap();
        assert_eq!(gone, None, "a job whose checkpoint is gone");
        assert!(c
            .start_queued_job(Uuid::new_v4(), &now())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn every_checkpoint_write_changes_the_version_lists_are_cached_against() {
        let (_d, c) = open().await;
        let mut cp = checkpoint("v", 3);
        let v0 = c.checkpoints_version();
        c.insert_checkpoint_with_job(&cp, &job_for(&cp), &serde_json::Value::Null, None)
            .await
            .unwrap();
        let v1 = c.checkpoints_version();
        assert_ne!(v0, v1);
        cp.status = CheckpointStatus::Ready;
        c.update_checkpoint(&cp).await.unwrap();
        let v2 = c.checkpoints_version();
        assert_ne!(v1, v2);
        // Reads and job writes leave it alone.
        c.list_checkpoints(&CheckpointFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
        let mut job = job_for(&cp);
        c.insert_job(&job, &serde_json::Value::Null).await.unwrap();
        job.state = JobState::Running;
        c.update_job(&job).await.unwrap();
        assert_eq!(c.checkpoints_version(), v2);
        c.delete_checkpoint(cp.id).await.unwrap();
        assert_ne!(c.checkpoints_version(), v2);
        let mut other = checkpoint("w", 4);
        other.dir = "/w".into();
        let v3 = c.checkpoints_version();
        c.insert_checkpoint(&other).await.unwrap();
        assert_ne!(c.checkpoints_version(), v3);
    }

    #[tokio::test]
    async fn a_schedules_checkpoints_are_found_by_its_label_through_the_index() {
        let (_d, c) = open().await;
        for (name, schedule, owner) in [
            ("s1", "nightly", 0),
            ("s2", "hourly", 0),
            ("s3", "nightly", 1000),
        ] {
            let mut cp = checkpoint(name, 1);
            cp.dir = format!("/x/{name}");
            cp.owner_uid = owner;
            cp.labels
                .insert(crate::schedules::LABEL.into(), schedule.into());
            c.insert_checkpoint(&cp).await.unwrap();
        }
        let names = |v: Vec<Checkpoint>| v.into_iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(
            names(c.checkpoints_of_schedule("nightly", 0).await.unwrap()),
            ["s1"]
        );
        assert_eq!(
            names(c.checkpoints_of_schedule("nightly", 1000).await.unwrap()),
            ["s3"]
        );
        assert!(c
            .checkpoints_of_schedule("weekly", 0)
            .await
            .unwrap()
            .is_empty());
        // Retention reads the same rows, lightly, and only those since the schedule was made.
        let rows = c.retention_rows("nightly", 0, None).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "s1");
        let later = rows[0].created_at + chrono::TimeDelta::seconds(1);
        assert!(c
            .retention_rows("nightly", 0, Some(&later))
            .await
            .unwrap()
            .is_empty());
        for query in [SCHEDULE_CHECKPOINTS, RETENTION_ROWS] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {query}"))
                    .bind("x")
                    .bind(0)
                    .fetch_all(&mut *c.reader().await.unwrap())
                    .await
                    .unwrap();
            assert!(
                plan.iter().any(|p| p.3.contains("checkpoints_schedule")),
                "not through the index: {plan:?}"
            );
        }
        // The timer's pass reads every schedule's rows in one statement, a label at a time
        // (every owner's), through the same index and in its order (no sort of its own).
        let mut groups = Vec::new();
        c.retention_rows_by_label(|label, rows| {
            let rows: Vec<_> = rows.into_iter().map(|r| (r.name, r.owner_uid)).collect();
            groups.push((label.to_owned(), rows));
        })
        .await
        .unwrap();
        assert_eq!(
            groups,
            [
                ("hourly".to_owned(), vec![("s2".to_owned(), 0)]),
                (
                    "nightly".to_owned(),
                    vec![("s1".to_owned(), 0), ("s3".to_owned(), 1000)]
                ),
            ]
        );
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {RETENTION_ROWS_BY_LABEL}"))
                .fetch_all(&mut *c.reader().await.unwrap())
                .await
                .unwrap();
        assert!(
            plan.iter().any(|p| p.3.contains("checkpoints_schedule"))
                && !plan.iter().any(|p| p.3.contains("TEMP B-TREE")),
            "not through the index, in its order: {plan:?}"
        );
        // A label that is not text (only a damaged row has one: labels are strings) is passed
        // over, as a schedule's own read passes it over; the others are read as before.
        let mut b = Batch::new();
        b.push("UPDATE checkpoints SET labels = json_object('schedule', 7) WHERE name = 's2'");
        c.write(b).await.unwrap();
        let mut labels = Vec::new();
        c.retention_rows_by_label(|label, rows| labels.push((label.to_owned(), rows.len())))
            .await
            .unwrap();
        assert_eq!(labels, [("nightly".to_owned(), 2)]);
    }

    #[tokio::test]
    async fn a_reference_by_id_or_name_reads_no_more_than_its_rows() {
        let (_d, c) = open().await;
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {BY_REFERENCE}"))
                .bind("a")
                .fetch_all(&mut *c.reader().await.unwrap())
                .await
                .unwrap();
        assert!(
            !plan.iter().any(|p| p.3.starts_with("SCAN checkpoints")),
            "a scan of every row: {plan:?}"
        );
    }

    #[tokio::test]
    async fn duplicate_name_is_a_conflict_and_leaves_no_job() {
        let (_d, c) = open().await;
        let a = checkpoint("same", 1);
        c.insert_checkpoint_with_job(&a, &job_for(&a), &serde_json::Value::Null, None)
            .await
            .unwrap();
        let mut b = checkpoint("same", 2);
        b.dir = "/elsewhere".into();
        let jb = job_for(&b);
        let e = c
            .insert_checkpoint_with_job(&b, &jb, &serde_json::Value::Null, None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Conflict, "{e}");
        assert!(c.job(jb.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_start_or_end_that_lost_its_race_writes_nothing_and_keeps_no_connection_busy() {
        let (_d, c) = open().await;
        let mut cp = checkpoint("raced", 1);
        let job = job_for(&cp);
        c.insert_checkpoint_with_job(&cp, &job, &serde_json::Value::Null, None)
            .await
            .unwrap();
        let mut cancelled = job.clone();
        cancelled.state = JobState::Cancelled;
        cancelled.finished_at = Some(now());
        assert!(c.update_job_if(&cancelled, JobState::Queued).await.unwrap());
        // A worker's start from queued comes second: neither the job nor its checkpoint.
        let (took, read, _, _) = c.start_queued_job(job.id, &now()).await.unwrap().unwrap();
        assert!(!took);
        assert_eq!(read, cancelled);
        let mut started = job.clone();
        started.state = JobState::Running;
        started.started_at = Some(now());
        cp.status = CheckpointStatus::Running;
        let status = |c: Catalog| async move {
            let cp = c.checkpoint("raced").await.unwrap().unwrap().status;
            let job = c.job(job.id).await.unwrap().unwrap().state;
            (cp, job)
        };
        assert_eq!(
            status(c.clone()).await,
            (CheckpointStatus::Pending, JobState::Cancelled)
        );
        // An end from running as well, its transaction rolled back.
        let end = JobEnd {
            job: &started,
            from: Some(JobState::Running),
            checkpoint: Some(&cp),
            then: None,
            schedule_max_failures: 3,
        };
        assert!(c.end_job(end).await.unwrap().is_none());
        assert_eq!(
            status(c.clone()).await,
            (CheckpointStatus::Pending, JobState::Cancelled)
        );
        // No connection of the pool (4) was left inside a transaction.
        for i in 0..8 {
            let cp = checkpoint(&format!("after{i}"), 10 + i);
            c.insert_checkpoint_with_job(&cp, &job_for(&cp), &serde_json::Value::Null, None)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_start_marks_the_job_and_its_checkpoint_running_together() {
        let (_d, c) = open().await;
        let mut cp = checkpoint("started", 1);
        let mut job = job_for(&cp);
        let request = serde_json::json!({"push": null});
        c.insert_checkpoint_with_job(&cp, &job, &request, None)
            .await
            .unwrap();
        let at = now();
        let (took, read, req, with) = c.start_queued_job(job.id, &at).await.unwrap().unwrap();
        assert!(took);
        job.state = JobState::Running;
        job.started_at = Some(at);
        cp.status = CheckpointStatus::Running;
        assert_eq!((read, req, with), (job.clone(), request, Some(cp.clone())));
        assert_eq!(c.job(job.id).await.unwrap().unwrap(), job);
        let stored = c.checkpoint("started").await.unwrap().unwrap();
        assert_eq!(stored, cp);
        // Started once only: a second start changes nothing.
        let (again, read, _, _) = c.start_queued_job(job.id, &now()).await.unwrap().unwrap();
        assert!(!again);
        assert_eq!(read, job);

        // A job that does not take its checkpoint (a restore of a ready one) leaves it as it is.
        cp.status = CheckpointStatus::Ready;
        c.update_checkpoint(&cp).await.unwrap();
        let mut restore = job_for(&cp);
        restore.kind = JobKind::Restore;
        c.insert_job(&restore, &serde_json::Value::Null)
            .await
            .unwrap();
        let (took, read, _, with) = c
            .start_queued_job(restore.id, &now())
            .await
            .unwrap()
            .unwrap();
        assert!(took);
        assert_eq!(read.state, JobState::Running);
        assert_eq!(with.unwrap().status, CheckpointStatus::Ready);
    }

    /// A schedule's row with a run of `job` running, as the admission writes it.
    fn running_schedule(cp: &Checkpoint, job: &Job) -> ScheduleRow {
        ScheduleRow {
            id: Uuid::new_v4(),
            name: "nightly".into(),
            target: cp.target.clone(),
            cron: "@daily".into(),
            options: Default::default(),
            retention: Default::default(),
            enabled: true,
            created_at: now(),
            updated_at: now(),
            anchor_at: now(),
            last_run: Some(ckptd_api::ScheduleRun {
                at: now(),
                status: ckptd_api::RunStatus::Running,
                manual: false,
                job_id: Some(job.id),
                checkpoint_id: Some(cp.id),
                checkpoint_name: Some(cp.name.clone()),
                error: None,
            }),
            owner_uid: 0,
            consecutive_failures: 2,
            disabled_reason: None,
            last_success_at: None,
            last_failure_at: Some(now()),
            target_start: Some(7),
        }
    }

    /// The clock fires a run from rows it read earlier; a change through the API in between
    /// stands, and the run's own columns stand against a change read before the run.
    #[tokio::test]
    async fn a_runs_start_and_a_change_through_the_api_leave_each_others_columns() {
        use chrono::Duration as D;
        let (_d, c) = open().await;
        let cp = checkpoint("run", 1);
        let job = job_for(&cp);
        let mut sched = running_schedule(&cp, &job);
        sched.last_run = None;
        sched.anchor_at = now() - D::minutes(5);
        c.insert_schedule(&sched).await.unwrap();
        // What the clock read, fired for a slot a minute ago (a whole second).
        let mut fired = sched.clone();
        let slot = (now() - D::minutes(1)).timestamp();
        fired.anchor_at = DateTime::from_timestamp(slot, 0).unwrap();
        fired.last_run = running_schedule(&cp, &job).last_run;
        fired.target_start = None;
        // Meanwhile disabled through the API.
        let mut edited = sched.clone();
        edited.enabled = false;
        edited.updated_at = now();
        let after_edit = c
            .edit_schedule(&edited, &sched.updated_at, ScheduleResets::default())
            .await
            .unwrap()
            .expect("the edit of the row as read applies");
        assert!(!after_edit.enabled);
        // An edit of a row read before that one writes nothing.
        let mut late = sched.clone();
        late.cron = "@hourly".into();
        let late_resets = ScheduleResets {
            anchor: true,
            ..Default::default()
        };
        assert!(c
            .edit_schedule(&late, &sched.updated_at, late_resets)
            .await
            .unwrap()
            .is_none());
        // The run's start keeps the edit, records the run, moves the anchor to its slot and
        // keeps the target's start time the schedule has.
        c.insert_checkpoint_with_job(&cp, &job, &serde_json::json!({}), Some(&fired))
            .await
            .unwrap();
        let stored = c.schedule("nightly").await.unwrap().unwrap();
        assert!(
            !stored.enabled,
            "the run undid a change made after its read"
        );
        assert_eq!(stored.cron, "@daily");
        assert_eq!(stored.last_run, fired.last_run);
        assert_eq!(stored.anchor_at, fired.anchor_at);
        assert_eq!(stored.target_start, Some(7));
        // Re-timed through the API now (an anchor with microseconds, later than any slot the
        // clock read before): a run fired from the older read keeps that anchor.
        let mut retimed = stored.clone();
        retimed.enabled = true;
        retimed.anchor_at = now();
        retimed.updated_at = retimed.anchor_at;
        let resets = ScheduleResets {
            anchor: true,
            failures: true,
            target_start: false,
        };
        let after = c
            .edit_schedule(&retimed, &stored.updated_at, resets)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.anchor_at, retimed.anchor_at);
        assert_eq!(after.consecutive_failures, 0);
        assert_eq!(
            after.last_run, fired.last_run,
            "the edit kept the run's record"
        );
        let (cp2, job2) = (checkpoint("run2", 1), job_for(&checkpoint("run2", 1)));
        let mut cp2 = cp2;
        cp2.dir = "/x/run2".into();
        c.insert_checkpoint_with_job(&cp2, &job2, &serde_json::json!({}), Some(&fired))
            .await
            .unwrap();
        let stored = c.schedule("nightly").await.unwrap().unwrap();
        assert_eq!(stored.anchor_at, retimed.anchor_at);
        // A refused run is recorded on the row as it is now; a deleted schedule is left alone.
        let (row, disabled) = c
            .record_refused_run(sched.id, |r| {
                r.last_failure_at = Some(now());
                r.count_failure(1)
            })
            .await
            .unwrap()
            .unwrap();
        assert!(disabled && !row.enabled && row.cron == "@daily");
        assert_eq!(c.schedule("nightly").await.unwrap().unwrap(), row);
        c.delete_schedule(sched.id).await.unwrap();
        assert!(c
            .record_refused_run(sched.id, |_| unreachable!("no row to change"))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_dump_that_succeeded_ends_in_one_step_as_record_end_would() {
        let (_d, c) = open().await;
        let mut cp = checkpoint("run", 1);
        let mut job = job_for(&cp);
        let sched = running_schedule(&cp, &job);
        c.insert_schedule(&sched).await.unwrap();
        let request = serde_json::json!({ "schedule": sched.id });
        c.insert_checkpoint_with_job(&cp, &job, &request, Some(&sched))
            .await
            .unwrap();
        let (took, ..) = c.start_queued_job(job.id, &now()).await.unwrap().unwrap();
        assert!(took);
        job.state = JobState::Succeeded;
        job.started_at = c.job(job.id).await.unwrap().unwrap().started_at;
        job.finished_at = Some(now());
        cp.status = CheckpointStatus::Ready;
        cp.completed_at = job.finished_at;
        cp.size_bytes = 4096;
        let end = JobEnd {
            job: &job,
            from: Some(JobState::Running),
            checkpoint: Some(&cp),
            then: None,
            schedule_max_failures: 3,
        };
        let ended = c.end_job(end).await.unwrap().unwrap();
        let mut want = sched.clone();
        assert_eq!(want.record_end(&job, 3), Some(false));
        assert_eq!(ended.run, Some((want.clone(), false)));
        assert_eq!(ended.checkpoint.as_ref(), Some(&cp));
        assert_eq!(c.schedule("nightly").await.unwrap().unwrap(), want);
        // As written, with the location a ready checkpoint's row derives.
        let stored = |c: Catalog| async move {
            let cp = c.checkpoint("run").await.unwrap().unwrap();
            assert_eq!(cp.locations.len(), 1, "{cp:?}");
            Checkpoint {
                locations: vec![],
                ..cp
            }
        };
        assert_eq!(stored(c.clone()).await, cp);
        assert_eq!(c.job(job.id).await.unwrap().unwrap(), job);
        // Ended once: a second end from running takes nothing, and writes nothing.
        let mut later = job.clone();
        later.finished_at = Some(now());
        let mut other = cp.clone();
        other.size_bytes = 1;
        let again = JobEnd {
            job: &later,
            from: Some(JobState::Running),
            checkpoint: Some(&other),
            then: None,
            schedule_max_failures: 3,
        };
        assert!(c.end_job(again).await.unwrap().is_none());
        assert_eq!(stored(c.clone()).await, cp);
        assert_eq!(c.schedule("nightly").await.unwrap().unwrap(), want);

        // A dump that is not the schedule's running run (a newer one started) leaves it as it is.
        let mut cp2 = checkpoint("run2", 1);
        cp2.dir = "/x/run2".into();
        let mut job2 = job_for(&cp2);
        c.insert_checkpoint_with_job(&cp2, &job2, &request, None)
            .await
            .unwrap();
        c.start_queued_job(job2.id, &now()).await.unwrap().unwrap();
        job2.state = JobState::Succeeded;
        job2.finished_at = Some(now());
        cp2.status = CheckpointStatus::Ready;
        let end = JobEnd {
            job: &job2,
            from: Some(JobState::Running),
            checkpoint: Some(&cp2),
            then: None,
            schedule_max_failures: 3,
        };
        assert_eq!(c.end_job(end).await.unwrap().unwrap().run, None);
        assert_eq!(c.schedule("nightly").await.unwrap().unwrap(), want);
    }

    #[tokio::test]
    async fn an_end_without_its_checkpoint_fails_the_unfinished_one_it_reads() {
        let (_d, c) = open().await;
        let cp = checkpoint("unfinished", 1);
        let mut job = job_for(&cp);
        c.insert_checkpoint_with_job(&cp, &job, &serde_json::Value::Null, None)
            .await
            .unwrap();
        job.state = JobState::Failed;
        job.finished_at = Some(now());
        job.error = Some(Error::internal("the worker went away").to_info());
        let end = JobEnd {
            job: &job,
            from: Some(JobState::Queued),
            checkpoint: None,
            then: None,
            schedule_max_failures: 3,
        };
        let ended = c.end_job(end).await.unwrap().unwrap();
        let failed = ended.checkpoint.unwrap();
        assert_eq!(failed.status, CheckpointStatus::Failed);
        assert_eq!(failed.error, job.error);
        let stored = c.checkpoint(&cp.id.to_string()).await.unwrap().unwrap();
        assert_eq!(stored.status, CheckpointStatus::Failed);
        assert_eq!(stored.completed_at, job.finished_at);
        assert_eq!(
            c.job(job.id).await.unwrap().unwrap().state,
            JobState::Failed
        );
    }

    #[tokio::test]
    async fn a_transaction_dropped_half_way_is_rolled_back_and_holds_no_lock() {
        let (_d, c) = open().await;
        let cp = checkpoint("dropped", 1);
        {
            let mut tx = Tx::new(&c.writer).await.unwrap();
            let mut b = Batch::new();
            Catalog::insert_checkpoint_in(&mut b, &cp);
            assert_eq!(tx.run(b).await.unwrap()[0].changed, 1);
        }
        assert!(c.checkpoint("dropped").await.unwrap().is_none());
        // The next write rolls it back first if the task the drop spawned has not yet.
        c.insert_checkpoint(&cp).await.unwrap();
        assert!(c.checkpoint("dropped").await.unwrap().is_some());
    }

    /// Whether SQLite's write lock is free, asked from a pooled connection that does not wait.
    async fn write_lock_free(c: &Catalog) -> bool {
        let mut conn = c.reader().await.unwrap();
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut *conn)
            .await
            .unwrap();
        let free = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .is_ok();
        if free {
            sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
        }
        sqlx::query("PRAGMA busy_timeout = 5000")
            .execute(&mut *conn)
            .await
            .unwrap();
        free
    }

    #[tokio::test]
    async fn a_dropped_transaction_gives_the_write_lock_back_without_another_write() {
        let (_d, c) = open().await;
        let cp = checkpoint("held", 1);
        {
            let mut tx = Tx::new(&c.writer).await.unwrap();
            let mut b = Batch::new();
            Catalog::insert_checkpoint_in(&mut b, &cp);
            tx.run(b).await.unwrap();
            assert!(!write_lock_free(&c).await, "the transaction holds the lock");
        }
        // The task the drop spawned rolls it back: no later write is needed for that.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !write_lock_free(&c).await {
            assert!(
                std::time::Instant::now() < deadline,
                "the lock was never given back"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(c.checkpoint("held").await.unwrap().is_none());
        assert!(!c.writer.lock().await.open);
    }

    #[tokio::test]
    async fn a_batch_refused_half_way_leaves_nothing_and_no_transaction() {
        let (_d, c) = open().await;
        let first = checkpoint("first", 1);
        let job = job_for(&first);
        c.insert_checkpoint_with_job(&first, &job, &serde_json::Value::Null, None)
            .await
            .unwrap();
        // The checkpoint's insert takes, the job's (an id already there) is refused.
        let second = checkpoint("second", 2);
        let mut same_id = job_for(&second);
        same_id.id = job.id;
        c.insert_checkpoint_with_job(&second, &same_id, &serde_json::Value::Null, None)
            .await
            .unwrap_err();
        assert!(c.checkpoint("second").await.unwrap().is_none());
        let third = checkpoint("third", 3);
        c.insert_checkpoint(&third).await.unwrap();
        assert!(c.checkpoint("third").await.unwrap().is_some());
        assert!(write_lock_free(&c).await);
    }

    #[tokio::test]
    async fn a_rollback_that_fails_replaces_the_writer_connection() {
        let (_d, c) = open().await;
        // Marked open with no transaction: ROLLBACK fails ("no transaction is active").
        c.writer.lock().await.open = true;
        let cp = checkpoint("after", 1);
        c.insert_checkpoint(&cp).await.unwrap();
        assert!(c.checkpoint("after").await.unwrap().is_some());
        assert!(!c.writer.lock().await.open);
    }

    #[tokio::test]
    async fn a_read_dropped_half_way_pins_nothing_and_its_connection_serves_the_next() {
        use futures_util::TryStreamExt;
        let (_d, c) = open().await;
        // More rows than sqlx's SQLite thread sends ahead of the reader (its row channel holds
        // 50): a half-read answer leaves that thread inside the statement.
        let many: Vec<Checkpoint> = (0..300).map(|i| checkpoint(&format!("r{i}"), i)).collect();
        let mut b = Batch::new();
        for cp in &many {
            Catalog::insert_checkpoint_in(&mut b, cp);
        }
        c.write(b).await.unwrap();
        // More half-read answers than there are readers: each connection gets one.
        for _ in 0..READERS * 2 {
            let mut conn = c.reader().await.unwrap();
            let mut rows = sqlx::query("SELECT * FROM checkpoints").fetch(&mut *conn);
            assert!(rows.try_next().await.unwrap().is_some());
        }
        assert_eq!(
            c.list_checkpoints(&CheckpointFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .len(),
            10
        );
        // No reader holds a snapshot: a checkpoint of the whole WAL is not kept waiting.
        c.insert_checkpoint(&checkpoint("last", 1)).await.unwrap();
        let mut b = Batch::new();
        b.push("PRAGMA wal_checkpoint(TRUNCATE)");
        let done = c.write(b).await.unwrap();
        let busy: i64 = done[0].rows[0].get(0);
        assert_eq!(busy, 0, "a reader still held a read transaction");
    }

    #[tokio::test]
    async fn a_closed_catalog_refuses_writes() {
        let (_d, c) = open().await;
        c.close().await;
        assert!(c.insert_checkpoint(&checkpoint("late", 1)).await.is_err());
    }

    #[tokio::test]
    async fn lists_newest_first_with_filters_and_cursor() {
        let (_d, c) = open().await;
        for i in 0..5 {
            let mut cp = checkpoint(&format!("c{i}"), 100 + (i % 2));
            if i == 3 {
                cp.status = CheckpointStatus::Failed;
            }
            c.insert_checkpoint_with_job(&cp, &job_for(&cp), &serde_json::Value::Null, None)
                .await
                .unwrap();
        }
        let all = c
            .list_checkpoints(&CheckpointFilter {
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            all.items
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["c4", "c3"]
        );
        let next = all.next.expect("more pages");
        let p2 = c
            .list_checkpoints(&CheckpointFilter {
                limit: 2,
                after: Some(next.parse().unwrap()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            p2.items.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["c2", "c1"]
        );
        let by_pid = c
            .list_checkpoints(&CheckpointFilter {
                pid: Some(101),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_pid.items.len(), 2);
        assert!(by_pid.next.is_none());
        let by_label = c
            .list_checkpoints(&CheckpointFilter {
                labels: vec![("app".into(), "c2".into())],
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_label.items.len(), 1);
        let failed = c
            .list_checkpoints(&CheckpointFilter {
                status: Some(CheckpointStatus::Failed),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(failed.items[0].name, "c3");
    }
}
