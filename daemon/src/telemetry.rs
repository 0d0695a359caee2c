//! What ckptd tells dashboards: a stream of events (server-sent over `/v1/events`) and
//! Prometheus metrics (`/metrics`). Workers publish without ever waiting: events go to a bounded
//! broadcast channel (a consumer that falls behind is dropped); metrics are the `prometheus`
//! crate's counters and histograms (atomics), written in the text format 0.0.4 by its encoder.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ckptd_api::{Checkpoint, Event, Job, Schedule};
use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::sync::broadcast;

/// Events buffered per subscriber before it counts as too slow and is dropped; also how many
/// recent events are held for clients that reconnect with `Last-Event-ID`.
pub const EVENT_BUFFER: usize = 1024;

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// The last `EVENT_BUFFER` events and the next id; sending and subscribing take this lock,
    /// so a backlog and the live stream after it neither overlap nor leave a gap.
    held: Arc<Mutex<(VecDeque<Event>, u64)>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(EVENT_BUFFER).0,
            held: Arc::new(Mutex::new((VecDeque::with_capacity(EVENT_BUFFER), 1))),
        }
    }
}

/// What a subscriber gets: the held events after the id it had seen, then the live stream.
pub struct Subscription {
    pub backlog: Vec<Event>,
    /// Events after the id it had seen that are no longer held (it reconnected too late).
    pub missed: u64,
    pub live: broadcast::Receiver<Event>,
}

impl Events {
    pub fn job(&self, kind: &str, job: &Job) {
        self.send(kind, Some(job.clone()), None, None);
    }
    pub fn checkpoint(&self, kind: &str, cp: &Checkpoint) {
        self.send(kind, None, Some(cp.clone()), None);
    }
    pub fn schedule(&self, kind: &str, s: &Schedule) {
        self.send(kind, None, None, Some(s.clone()));
    }
    /// `request.refused`: a request for a change answered with an error.
    pub fn refusal(&self, r: ckptd_api::Refusal) {
        self.send_event("request.refused", |ev| ev.refusal = Some(r));
    }
    fn send(
        &self,
        kind: &str,
        job: Option<Job>,
        checkpoint: Option<Checkpoint>,
        schedule: Option<Schedule>,
    ) {
        self.send_event(kind, |ev| {
            ev.job = job;
            ev.checkpoint = checkpoint;
            ev.schedule = schedule;
        });
    }
    fn send_event(&self, kind: &str, fill: impl FnOnce(&mut Event)) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut ev = Event {
            id: held.1,
            kind: kind.to_owned(),
            time: crate::catalog::now(),
            job: None,
            checkpoint: None,
            schedule: None,
            refusal: None,
        };
        fill(&mut ev);
        held.1 += 1;
        if held.0.len() == EVENT_BUFFER {
            held.0.pop_front();
        }
        held.0.push_back(ev.clone());
        // No subscriber is not an error; a full buffer drops the slow subscriber, not the event.
        let _ = self.tx.send(ev);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// The live stream, after the held events from `since` on (`?since=`): the daemon's
    /// history of the last `EVENT_BUFFER` events since it started.
    pub fn subscribe_since(&self, since: chrono::DateTime<chrono::Utc>) -> Subscription {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.tx.subscribe();
        Subscription {
            backlog: held.0.iter().filter(|e| e.time >= since).cloned().collect(),
            missed: 0,
            live,
        }
    }

    /// The live stream, after the held events newer than `after` (a client's `Last-Event-ID`).
    pub fn subscribe_after(&self, after: Option<u64>) -> Subscription {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.tx.subscribe();
        let Some(after) = after else {
            return Subscription {
                backlog: Vec::new(),
                missed: 0,
                live,
            };
        };
        let backlog: Vec<Event> = held.0.iter().filter(|e| e.id > after).cloned().collect();
        let oldest = held.0.front().map_or(held.1, |e| e.id);
        Subscription {
            backlog,
            missed: oldest.saturating_sub(after + 1),
            live,
        }
    }
}

/// Upper bounds of the duration histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Upper bounds of the size histograms, in bytes (1 MiB to 64 GiB).
pub const SIZE_BUCKETS: [f64; 9] = [
    1048576.0,
    8388608.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
    17179869184.0,
    34359738368.0,
    68719476736.0,
];

/// A family of histograms by label values (bounded ones: kinds, runtimes, never ids).
pub struct HistogramFamily(HistogramVec);

impl HistogramFamily {
    fn new(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> Self {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        HistogramFamily(HistogramVec::new(opts, labels).expect("a valid histogram"))
    }

    /// `labels`: the values, in the order of the family's label names.
    pub fn observe(&self, labels: &[&str], v: f64) {
        self.0.with_label_values(labels).observe(v);
    }
}

/// An unlabelled duration histogram (seconds, `BUCKETS`); all zeros until observed.
pub struct Histogram(prometheus::Histogram);

impl Histogram {
    fn new(name: &str, help: &str) -> Self {
        let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
        Histogram(prometheus::Histogram::with_opts(opts).expect("a valid histogram"))
    }

    pub fn observe(&self, secs: f64) {
        self.0.observe(secs);
    }
}

/// A family of counters by label values (bounded ones).
pub struct CounterFamily(IntCounterVec);

impl CounterFamily {
    fn new(name: &str, help: &str, labels: &[&str]) -> Self {
        CounterFamily(IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter"))
    }

    /// `labels`: the values, in the order of the family's label names.
    pub fn inc(&self, labels: &[&str]) {
        self.0.with_label_values(labels).inc();
    }
}

/// Counters by result: succeeded, failed, cancelled (each shown from 0).
pub struct ByResult(IntCounterVec);

impl ByResult {
    fn new(name: &str, help: &str) -> Self {
        let v = IntCounterVec::new(Opts::new(name, help), &["result"]).expect("a valid counter");
        for r in ["succeeded", "failed", "cancelled"] {
            v.with_label_values(&[r]);
        }
        ByResult(v)
    }

    pub fn add(&self, state: ckptd_api::JobState) {
        use ckptd_api::JobState::*;
        let r = match state {
            Succeeded => "succeeded",
            Failed => "failed",
            Cancelled => "cancelled",
            Queued | Running => return,
        };
        self.0.with_label_values(&[r]).inc();
    }
}

pub struct Metrics {
    /// Everything below, for the exposition.
    registry: Registry,
    pub checkpoints: ByResult,
    pub restores: ByResult,
    pub checkpoint_seconds: Histogram,
    pub restore_seconds: Histogram,
    pub frozen_seconds: Histogram,
    pub bytes_written: IntCounter,
    /// Schedules ckptd disabled after too many failed runs in a row.
    pub schedules_disabled: IntCounter,
    /// Pushes, pulls and deletes of remote copies.
    pub remote: RemoteMetrics,
    /// Jobs ended: (kind, result, code, cause).
    pub jobs: CounterFamily,
    /// Time from a job's creation to its start: (kind).
    pub queue_seconds: HistogramFamily,
    /// Time from a job's start to its end: (kind, target).
    pub job_seconds: HistogramFamily,
    /// Frozen time of ready checkpoints: (target).
    pub target_frozen_seconds: HistogramFamily,
    /// Image size of ready checkpoints: (target).
    pub checkpoint_bytes: HistogramFamily,
    /// Where a checkpoint's time goes: (target, phase: dump, durable, release, catalog).
    pub phase_seconds: HistogramFamily,
    /// Clients on `/v1/events` now.
    pub event_clients: IntGauge,
    /// Answered requests: (route template, status class).
    pub requests: CounterFamily,
    /// Live migrations ended: (direction: out, in; outcome: migrated, resumed, checkpointed).
    pub migrations: CounterFamily,
    /// Live migrations' downtime, freeze to the destination's word that the tree runs.
    pub migration_downtime: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::new(),
            checkpoints: ByResult::new(
                "ckptd_checkpoints_total",
                "Checkpoint jobs ended, by result.",
            ),
            restores: ByResult::new("ckptd_restores_total", "Restore jobs ended, by result."),
            checkpoint_seconds: Histogram::new(
                "ckptd_checkpoint_duration_seconds",
                "Time from a checkpoint job's start to its images being durable.",
            ),
            restore_seconds: Histogram::new(
                "ckptd_restore_duration_seconds",
                "Duration of restore jobs.",
            ),
            frozen_seconds: Histogram::new(
                "ckptd_frozen_seconds",
                "How long targets were frozen, from CRIU's statistics.",
            ),
            bytes_written: IntCounter::new(
                "ckptd_bytes_written_total",
                "Bytes of checkpoint images made durable.",
            )
            .expect("a valid counter"),
            schedules_disabled: IntCounter::new(
                "ckptd_schedules_disabled_total",
                "Schedules disabled by ckptd after schedule_max_failures failed runs in a row.",
            )
            .expect("a valid counter"),
            remote: RemoteMetrics::default(),
            jobs: CounterFamily::new(
                "ckptd_jobs_total",
                "Jobs ended, by kind (checkpoint, restore, push, pull; import and export too, which answer at once), result, error code (empty when it succeeded) and, for CRIU's failures, the cause ckptd recognised in its log (tcp_established, ext_unix_sk, tty, pid_in_use, ...).",
                &["kind", "result", "code", "cause"],
            ),
            queue_seconds: HistogramFamily::new(
                "ckptd_job_queue_seconds",
                "Time jobs waited for a worker, by kind.",
                &["kind"],
                &BUCKETS,
            ),
            job_seconds: HistogramFamily::new(
                "ckptd_job_duration_seconds",
                "Time from a job's start to its end, by kind and target (process, runc, docker, podman).",
                &["kind", "target"],
                &BUCKETS,
            ),
            target_frozen_seconds: HistogramFamily::new(
                "ckptd_checkpoint_frozen_seconds",
                "How long targets were frozen (CRIU's statistics), by target (process, runc, docker, podman).",
                &["target"],
                &BUCKETS,
            ),
            checkpoint_bytes: HistogramFamily::new(
                "ckptd_checkpoint_size_bytes",
                "Image size of ready checkpoints, by target (process, runc, docker, podman).",
                &["target"],
                &SIZE_BUCKETS,
            ),
            phase_seconds: HistogramFamily::new(
                "ckptd_checkpoint_phase_seconds",
                "Where checkpoint jobs' time goes, by target and phase: dump (CRIU or the runtime, the target frozen for part of it), durable (fsync of the images, rename, fsync of the parent), release (ending what the dump left stopped), catalog (recording the result).",
                &["target", "phase"],
                &BUCKETS,
            ),
            event_clients: IntGauge::new(
                "ckptd_event_stream_clients",
                "Clients following /v1/events now.",
            )
            .expect("a valid gauge"),
            requests: CounterFamily::new(
                "ckptd_http_requests_total",
                "Requests answered, by route template and status class (2xx, 4xx, ...).",
                &["route", "code"],
            ),
            migrations: CounterFamily::new(
                "ckptd_migrations_total",
                "Live migrations ended, by direction (out: this daemon was the source; in: the destination) and outcome (migrated; resumed: the workload runs on the source again; checkpointed: it was written to a checkpoint on the source).",
                &["direction", "outcome"],
            ),
            migration_downtime: Histogram::new(
                "ckptd_migration_downtime_seconds",
                "Live migrations' downtime: from the source's freeze to the destination's word that the tree runs.",
            ),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.checkpoints.0.clone()),
            Box::new(m.restores.0.clone()),
            Box::new(m.checkpoint_seconds.0.clone()),
            Box::new(m.restore_seconds.0.clone()),
            Box::new(m.frozen_seconds.0.clone()),
            Box::new(m.bytes_written.clone()),
            Box::new(m.schedules_disabled.clone()),
            Box::new(m.remote.transfers.clone()),
            Box::new(m.remote.bytes.clone()),
            Box::new(m.remote.seconds.clone()),
            Box::new(m.remote.failures.clone()),
            Box::new(m.remote.deletes.clone()),
            Box::new(m.jobs.0.clone()),
            Box::new(m.queue_seconds.0.clone()),
            Box::new(m.job_seconds.0.clone()),
            Box::new(m.target_frozen_seconds.0.clone()),
            Box::new(m.checkpoint_bytes.0.clone()),
            Box::new(m.phase_seconds.0.clone()),
            Box::new(m.event_clients.clone()),
            Box::new(m.requests.0.clone()),
            Box::new(m.migrations.0.clone()),
            Box::new(m.migration_downtime.0.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }
}

/// A target as the metrics' `target` label says it: process, runc, docker or podman.
pub fn target_label(t: &ckptd_api::Target) -> &'static str {
    match t {
        ckptd_api::Target::Process { .. } => "process",
        ckptd_api::Target::Container { runtime, .. } => runtime.as_str(),
        ckptd_api::Target::Group { .. } => "group",
    }
}

/// Transfers to and from remotes, by remote and direction (`push`, `pull`).
pub struct RemoteMetrics {
    transfers: IntCounterVec,
    bytes: IntCounterVec,
    seconds: CounterVec,
    /// (remote, direction, reason): the reason is the error's code.
    failures: IntCounterVec,
    deletes: IntCounterVec,
}

impl Default for RemoteMetrics {
    fn default() -> Self {
        let ints = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter")
        };
        RemoteMetrics {
            transfers: ints(
                "ckptd_remote_transfers_total",
                "Pushes and pulls that completed, by remote and direction.",
                &["remote", "direction"],
            ),
            bytes: ints(
                "ckptd_remote_bytes_total",
                "Bytes of checkpoint objects pushed and pulled (as stored: compressed, encrypted).",
                &["remote", "direction"],
            ),
            seconds: CounterVec::new(
                Opts::new(
                    "ckptd_remote_seconds_total",
                    "Seconds spent in completed pushes and pulls.",
                ),
                &["remote", "direction"],
            )
            .expect("a valid counter"),
            failures: ints(
                "ckptd_remote_failures_total",
                "Pushes and pulls that failed, by remote, direction and reason (the error code).",
                &["remote", "direction", "reason"],
            ),
            deletes: ints(
                "ckptd_remote_deletes_total",
                "Remote copies deleted, by remote.",
                &["remote"],
            ),
        }
    }
}

impl RemoteMetrics {
    pub fn transferred(&self, remote: &str, direction: &'static str, bytes: u64, secs: f64) {
        self.transfers.with_label_values(&[remote, direction]).inc();
        self.bytes
            .with_label_values(&[remote, direction])
            .inc_by(bytes);
        self.seconds
            .with_label_values(&[remote, direction])
            .inc_by(secs);
    }

    pub fn failed(&self, remote: &str, direction: &'static str, e: &crate::error::Error) {
        self.failures
            .with_label_values(&[remote, direction, e.kind.code()])
            .inc();
    }

    pub fn deleted(&self, remote: &str) {
        self.deletes.with_label_values(&[remote]).inc();
    }
}

/// Numbers read at scrape time.
pub struct Gauges {
    pub queue_depth: usize,
    pub busy_workers: usize,
    pub workers: usize,
    pub catalog_checkpoints: u64,
    /// Checkpoints by status.
    pub by_status: Vec<(String, u64)>,
    /// Bytes of ready checkpoints by location: `state_dir`, a `checkpoint_dir` root, or
    /// `remote:NAME`.
    pub used_bytes: Vec<(String, u64)>,
    /// Free bytes by local location (the state dir's checkpoints root, each checkpoint_dir root
    /// in use).
    pub free_bytes: Vec<(String, u64)>,
    /// Size of the filesystem of each local location.
    pub size_bytes: Vec<(String, u64)>,
    /// When the daemon started (Unix seconds).
    pub started_at: f64,
    pub criu_version: String,
    pub runc_version: String,
    pub schedules: Vec<ScheduleGauge>,
}

/// One schedule as the metrics show it (its name is the label: the operator bounds them).
pub struct ScheduleGauge {
    pub name: String,
    pub enabled: bool,
    pub last_success: Option<f64>,
    pub last_failure: Option<f64>,
    pub consecutive_failures: u32,
    pub next_run: Option<f64>,
    /// Ready checkpoints it keeps.
    pub kept: u64,
    /// Seconds between its next two runs.
    pub interval: Option<f64>,
}

/// The gauges of one scrape, built as metric families directly (registering a collector per
/// series cost a millisecond per scrape of 200 schedules).
#[derive(Default)]
struct Scrape(Vec<prometheus::proto::MetricFamily>);

impl Scrape {
    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.family(name, help, &[], [(vec![], v)]);
    }

    /// A gauge family by `labels`, a series per set of values given; none given, no family.
    fn family<'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl IntoIterator<Item = (Vec<&'a str>, f64)>,
    ) {
        use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
        let mut metrics = Vec::new();
        for (values, x) in series {
            let mut pairs: Vec<LabelPair> = labels
                .iter()
                .zip(values)
                .map(|(k, v)| {
                    let mut p = LabelPair::default();
                    p.set_name((*k).to_owned());
                    p.set_value(v.to_owned());
                    p
                })
                .collect();
            pairs.sort_by(|a, b| a.name().cmp(b.name()));
            let mut g = prometheus::proto::Gauge::default();
            g.set_value(x);
            let mut m = Metric::default();
            m.set_label(pairs);
            m.set_gauge(g);
            metrics.push(m);
        }
        if metrics.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_owned());
        f.set_help(help.to_owned());
        f.set_field_type(MetricType::GAUGE);
        f.set_metric(metrics);
        self.0.push(f);
    }
}

impl Metrics {
    /// The Prometheus text exposition format (version 0.0.4), written by the `prometheus`
    /// crate: the counters and histograms kept here, and the gauges of this scrape (`g`).
    pub fn render(&self, g: &Gauges) -> String {
        let mut s = Scrape::default();
        s.gauge(
            "ckptd_queue_depth",
            "Jobs waiting for a worker.",
            g.queue_depth as f64,
        );
        s.gauge(
            "ckptd_busy_workers",
            "Workers running a job.",
            g.busy_workers as f64,
        );
        s.gauge("ckptd_workers", "Workers configured.", g.workers as f64);
        s.gauge(
            "ckptd_catalog_checkpoints",
            "Checkpoints in the catalog.",
            g.catalog_checkpoints as f64,
        );
        s.family(
            "ckptd_checkpoints",
            "Checkpoints in the catalog, by status.",
            &["status"],
            g.by_status
                .iter()
                .map(|(status, n)| (vec![status.as_str()], *n as f64)),
        );
        for (name, help, values) in [
            (
                "ckptd_storage_used_bytes",
                "Bytes of ready checkpoints by location: state_dir, a checkpoint_dir root, or remote:NAME (objects as stored).",
                &g.used_bytes,
            ),
            (
                "ckptd_storage_free_bytes",
                "Free bytes where checkpoints go, by location: state_dir (its checkpoints root) and each checkpoint_dir root in use.",
                &g.free_bytes,
            ),
            (
                "ckptd_storage_size_bytes",
                "Size of the filesystem of each local location (for the share that is free).",
                &g.size_bytes,
            ),
        ] {
            s.family(
                name,
                help,
                &["location"],
                values.iter().map(|(l, v)| (vec![l.as_str()], *v as f64)),
            );
        }
        render_schedules(&mut s, &g.schedules);
        s.gauge(
            "ckptd_start_time_seconds",
            "When the daemon started, in Unix seconds (uptime: time() - this).",
            g.started_at,
        );
        s.family(
            "ckptd_build_info",
            "ckptd's version, and the CRIU and runc it runs.",
            &["version", "criu", "runc"],
            [(
                vec![
                    env!("CARGO_PKG_VERSION"),
                    g.criu_version.as_str(),
                    g.runc_version.as_str(),
                ],
                1.0,
            )],
        );
        let mut families = self.registry.gather();
        families.extend(s.0);
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# the metrics could not be written: {e}\n"))
    }
}

/// The schedules' gauges, one family per field, a series per schedule.
fn render_schedules(s: &mut Scrape, schedules: &[ScheduleGauge]) {
    type Pick = fn(&ScheduleGauge) -> Option<f64>;
    let families: [(&str, &str, Pick); 7] = [
        (
            "ckptd_schedule_interval_seconds",
            "Seconds between the schedule's next two runs.",
            |s| s.interval,
        ),
        (
            "ckptd_schedule_last_success_timestamp_seconds",
            "When the schedule's last run succeeded (Unix seconds); absent until one has.",
            |s| s.last_success,
        ),
        (
            "ckptd_schedule_last_failure_timestamp_seconds",
            "When the schedule's last run failed (Unix seconds); absent until one has.",
            |s| s.last_failure,
        ),
        (
            "ckptd_schedule_consecutive_failures",
            "Failed runs in a row (a success resets it).",
            |s| Some(f64::from(s.consecutive_failures)),
        ),
        (
            "ckptd_schedule_next_run_timestamp_seconds",
            "When the schedule runs next (Unix seconds); absent while it is disabled.",
            |s| s.next_run,
        ),
        (
            "ckptd_schedule_checkpoints",
            "Ready checkpoints the schedule keeps.",
            |s| Some(s.kept as f64),
        ),
        (
            "ckptd_schedule_enabled",
            "1 while the schedule is enabled, 0 once disabled (by hand or after failures).",
            |s| Some(if s.enabled { 1.0 } else { 0.0 }),
        ),
    ];
    for (name, help, pick) in families {
        s.family(
            name,
            help,
            &["schedule"],
            schedules
                .iter()
                .filter_map(|g| pick(g).map(|v| (vec![g.name.as_str()], v))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnecting_subscriber_gets_what_it_missed_once() {
        let ev = Events::default();
        let cp = |n: &str| ckptd_api::Schedule {
            name: n.into(),
            ..serde_json::from_value(serde_json::json!({
                "id": "00000000-0000-0000-0000-000000000000", "name": "x",
                "target": {"kind": "process", "pid": 1}, "cron": "@hourly",
                "effective_cron": "0 * * * *", "enabled": true, "options": {},
                "retention": {}, "owner_uid": 0, "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z", "next_run_at": null, "last_run": null
            }))
            .unwrap()
        };
        ev.schedule("schedule.created", &cp("a"));
        ev.schedule("schedule.created", &cp("b"));
        let mut first = ev.subscribe_after(None);
        assert!(first.backlog.is_empty());
        ev.schedule("schedule.created", &cp("c"));
        assert_eq!(first.live.try_recv().unwrap().id, 3);
        let again = ev.subscribe_after(Some(1));
        let ids: Vec<u64> = again.backlog.iter().map(|e| e.id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(again.missed, 0);
        for _ in 0..EVENT_BUFFER {
            ev.schedule("schedule.updated", &cp("c"));
        }
        let late = ev.subscribe_after(Some(1));
        assert_eq!(late.backlog.len(), EVENT_BUFFER);
        assert_eq!(late.missed, 2);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_labels_escaped() {
        let m = Metrics::default();
        m.checkpoint_seconds.observe(0.03);
        m.checkpoint_seconds.observe(3.0);
        m.requests.inc(&["/v1/a\"b", "2xx"]);
        let s = m.render(&Gauges {
            queue_depth: 0,
            busy_workers: 0,
            workers: 1,
            catalog_checkpoints: 0,
            by_status: vec![],
            used_bytes: vec![],
            free_bytes: vec![],
            size_bytes: vec![],
            started_at: 0.0,
            criu_version: String::new(),
            runc_version: String::new(),
            schedules: vec![],
        });
        let x = "ckptd_checkpoint_duration_seconds";
        assert!(
            s.contains(&format!("{x}_bucket{{le=\"0.025\"}} 0\n")),
            "{s}"
        );
        assert!(s.contains(&format!("{x}_bucket{{le=\"0.05\"}} 1\n")), "{s}");
        assert!(s.contains(&format!("{x}_bucket{{le=\"5\"}} 2\n")), "{s}");
        assert!(s.contains(&format!("{x}_bucket{{le=\"+Inf\"}} 2\n")), "{s}");
        assert!(s.contains(&format!("{x}_count 2\n")), "{s}");
        // Never observed: zeros, as a histogram always has.
        assert!(
            s.contains("ckptd_restore_duration_seconds_count 0\n"),
            "{s}"
        );
        assert!(
            s.contains("ckptd_checkpoints_total{result=\"cancelled\"} 0\n"),
            "{s}"
        );
        assert!(
            s.contains("ckptd_http_requests_total{code=\"2xx\",route=\"/v1/a\\\"b\"} 1\n"),
            "{s}"
        );
    }
}
