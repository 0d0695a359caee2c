//! What ckptd tells dashboards: a stream of events (server-sent over `/v1/events`) and
//! Prometheus metrics (`/metrics`). Workers publish without ever waiting: events go to a bounded
//! broadcast channel (a consumer that falls behind is dropped), metrics are atomics.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ckptd_api::{Checkpoint, Event, Job, Schedule};
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
    fn send(
        &self,
        kind: &str,
        job: Option<Job>,
        checkpoint: Option<Checkpoint>,
        schedule: Option<Schedule>,
    ) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let ev = Event {
            id: held.1,
            kind: kind.to_owned(),
            time: crate::catalog::now(),
            job,
            checkpoint,
            schedule,
        };
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

/// One histogram's counts.
#[derive(Default, Clone)]
struct HistData {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

/// A family of histograms by label values (bounded ones: kinds, runtimes, never ids).
pub struct HistogramFamily {
    buckets: &'static [f64],
    values: Mutex<std::collections::BTreeMap<Vec<String>, HistData>>,
}

impl HistogramFamily {
    pub const fn new(buckets: &'static [f64]) -> Self {
        HistogramFamily {
            buckets,
            values: Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    pub fn observe(&self, labels: &[&str], v: f64) {
        let mut m = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let h = m
            .entry(labels.iter().map(|l| (*l).to_owned()).collect())
            .or_insert_with(|| HistData {
                counts: vec![0; self.buckets.len()],
                ..Default::default()
            });
        for (i, b) in self.buckets.iter().enumerate() {
            if v <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += v;
    }

    /// `keys`: the label names, in the order `observe` takes their values.
    fn render(&self, name: &str, help: &str, keys: &[&str], out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (values, h) in self.values.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let labels: String = keys
                .iter()
                .zip(values)
                .map(|(k, v)| format!("{k}=\"{}\",", label(v)))
                .collect();
            for (i, b) in self.buckets.iter().enumerate() {
                out.push_str(&format!(
                    "{name}_bucket{{{labels}le=\"{b}\"}} {}\n",
                    h.counts[i]
                ));
            }
            let plain = labels.trim_end_matches(',');
            let braces = |s: &str| {
                if s.is_empty() {
                    String::new()
                } else {
                    format!("{{{s}}}")
                }
            };
            out.push_str(&format!(
                "{name}_bucket{{{labels}le=\"+Inf\"}} {}\n{name}_sum{} {}\n{name}_count{} {}\n",
                h.count,
                braces(plain),
                h.sum,
                braces(plain),
                h.count
            ));
        }
    }
}

/// An unlabelled duration histogram (seconds, `BUCKETS`).
pub struct Histogram(HistogramFamily);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(HistogramFamily::new(&BUCKETS))
    }
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        self.0.observe(&[], secs);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let before = out.len();
        self.0.render(name, help, &[], out);
        if out.len() == before + format!("# HELP {name} {help}\n# TYPE {name} histogram\n").len() {
            // Never observed: zeros, as a histogram always had.
            for b in BUCKETS {
                out.push_str(&format!("{name}_bucket{{le=\"{b}\"}} 0\n"));
            }
            out.push_str(&format!(
                "{name}_bucket{{le=\"+Inf\"}} 0\n{name}_sum 0\n{name}_count 0\n"
            ));
        }
    }
}

/// A family of counters by label values (bounded ones).
#[derive(Default)]
pub struct CounterFamily {
    values: Mutex<std::collections::BTreeMap<Vec<String>, u64>>,
}

impl CounterFamily {
    pub fn inc(&self, labels: &[&str]) {
        let mut m = self.values.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(labels.iter().map(|l| (*l).to_owned()).collect())
            .or_default() += 1;
    }

    fn render(&self, name: &str, help: &str, keys: &[&str], out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (values, n) in self.values.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let labels: Vec<String> = keys
                .iter()
                .zip(values)
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            out.push_str(&format!("{name}{{{}}} {n}\n", labels.join(",")));
        }
    }
}

/// Counters by result: succeeded, failed, cancelled.
#[derive(Default)]
pub struct ByResult {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub cancelled: AtomicU64,
}

impl ByResult {
    pub fn add(&self, state: ckptd_api::JobState) {
        use ckptd_api::JobState::*;
        let c = match state {
            Succeeded => &self.succeeded,
            Failed => &self.failed,
            Cancelled => &self.cancelled,
            Queued | Running => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (r, c) in [
            ("succeeded", &self.succeeded),
            ("failed", &self.failed),
            ("cancelled", &self.cancelled),
        ] {
            out.push_str(&format!(
                "{name}{{result=\"{r}\"}} {}\n",
                c.load(Ordering::Relaxed)
            ));
        }
    }
}

pub struct Metrics {
    pub checkpoints: ByResult,
    pub restores: ByResult,
    pub checkpoint_seconds: Histogram,
    pub restore_seconds: Histogram,
    pub frozen_seconds: Histogram,
    pub bytes_written: AtomicU64,
    /// Schedules ckptd disabled after too many failed runs in a row.
    pub schedules_disabled: AtomicU64,
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
    pub event_clients: AtomicU64,
    /// Answered requests: (route template, status class).
    pub requests: CounterFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            checkpoints: ByResult::default(),
            restores: ByResult::default(),
            checkpoint_seconds: Histogram::default(),
            restore_seconds: Histogram::default(),
            frozen_seconds: Histogram::default(),
            bytes_written: AtomicU64::new(0),
            schedules_disabled: AtomicU64::new(0),
            remote: RemoteMetrics::default(),
            jobs: CounterFamily::default(),
            queue_seconds: HistogramFamily::new(&BUCKETS),
            job_seconds: HistogramFamily::new(&BUCKETS),
            target_frozen_seconds: HistogramFamily::new(&BUCKETS),
            checkpoint_bytes: HistogramFamily::new(&SIZE_BUCKETS),
            phase_seconds: HistogramFamily::new(&BUCKETS),
            event_clients: AtomicU64::new(0),
            requests: CounterFamily::default(),
        }
    }
}

/// A target as the metrics' `target` label says it: process, runc, docker or podman.
pub fn target_label(t: &ckptd_api::Target) -> &'static str {
    match t {
        ckptd_api::Target::Process { .. } => "process",
        ckptd_api::Target::Container { runtime, .. } => runtime.as_str(),
    }
}

/// (remote, direction).
type Transfer = (String, &'static str);

/// Transfers to and from remotes, by remote and direction (`push`, `pull`).
#[derive(Default)]
pub struct RemoteMetrics {
    /// (remote, direction) -> (transfers, bytes, seconds).
    done: Mutex<std::collections::BTreeMap<Transfer, (u64, u64, f64)>>,
    /// (remote, direction, reason) -> failures; the reason is the error's code.
    failed: Mutex<std::collections::BTreeMap<(String, &'static str, String), u64>>,
    deleted: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl RemoteMetrics {
    pub fn transferred(&self, remote: &str, direction: &'static str, bytes: u64, secs: f64) {
        let mut m = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry((remote.to_owned(), direction)).or_default();
        e.0 += 1;
        e.1 += bytes;
        e.2 += secs;
    }

    pub fn failed(&self, remote: &str, direction: &'static str, e: &crate::error::Error) {
        let mut m = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((remote.to_owned(), direction, e.kind.code().to_owned()))
            .or_default() += 1;
    }

    pub fn deleted(&self, remote: &str) {
        let mut m = self.deleted.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(remote.to_owned()).or_default() += 1;
    }

    fn render(&self, out: &mut String) {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        for (name, help, pick) in [
            (
                "ckptd_remote_transfers_total",
                "Pushes and pulls that completed, by remote and direction.",
                0,
            ),
            (
                "ckptd_remote_bytes_total",
                "Bytes of checkpoint objects pushed and pulled (as stored: compressed, encrypted).",
                1,
            ),
            (
                "ckptd_remote_seconds_total",
                "Seconds spent in completed pushes and pulls.",
                2,
            ),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for ((remote, dir), (n, bytes, secs)) in done.iter() {
                let v = match pick {
                    0 => n.to_string(),
                    1 => bytes.to_string(),
                    _ => secs.to_string(),
                };
                out.push_str(&format!(
                    "{name}{{remote=\"{}\",direction=\"{dir}\"}} {v}\n",
                    label(remote)
                ));
            }
        }
        let name = "ckptd_remote_failures_total";
        out.push_str(&format!(
            "# HELP {name} Pushes and pulls that failed, by remote, direction and reason (the error code).\n# TYPE {name} counter\n"
        ));
        for ((remote, dir, reason), n) in
            self.failed.lock().unwrap_or_else(|e| e.into_inner()).iter()
        {
            out.push_str(&format!(
                "{name}{{remote=\"{}\",direction=\"{dir}\",reason=\"{reason}\"}} {n}\n",
                label(remote)
            ));
        }
        let name = "ckptd_remote_deletes_total";
        out.push_str(&format!(
            "# HELP {name} Remote copies deleted, by remote.\n# TYPE {name} counter\n"
        ));
        for (remote, n) in self
            .deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&format!("{name}{{remote=\"{}\"}} {n}\n", label(remote)));
        }
    }
}

/// The schedules' gauges, one family per field, a series per schedule.
fn render_schedules(schedules: &[ScheduleGauge], out: &mut String) {
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
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for s in schedules {
            if let Some(v) = pick(s) {
                out.push_str(&format!("{name}{{schedule=\"{}\"}} {v}\n", label(&s.name)));
            }
        }
    }
}

/// A label value as the text format needs it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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

impl Metrics {
    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::new();
        self.checkpoints.render(
            "ckptd_checkpoints_total",
            "Checkpoint jobs ended, by result.",
            &mut out,
        );
        self.restores.render(
            "ckptd_restores_total",
            "Restore jobs ended, by result.",
            &mut out,
        );
        self.checkpoint_seconds.render(
            "ckptd_checkpoint_duration_seconds",
            "Time from a checkpoint job's start to its images being durable.",
            &mut out,
        );
        self.restore_seconds.render(
            "ckptd_restore_duration_seconds",
            "Duration of restore jobs.",
            &mut out,
        );
        self.frozen_seconds.render(
            "ckptd_frozen_seconds",
            "How long targets were frozen, from CRIU's statistics.",
            &mut out,
        );
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        gauge(
            &mut out,
            "ckptd_bytes_written_total",
            "Bytes of checkpoint images made durable.",
            "counter",
            self.bytes_written.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "ckptd_schedules_disabled_total",
            "Schedules disabled by ckptd after schedule_max_failures failed runs in a row.",
            "counter",
            self.schedules_disabled.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "ckptd_queue_depth",
            "Service waiting for a worker.",
            "gauge",
            g.queue_depth.to_string(),
        );
        gauge(
            &mut out,
            "ckptd_busy_workers",
            "Workers running a job.",
            "gauge",
            g.busy_workers.to_string(),
        );
        gauge(
            &mut out,
            "ckptd_workers",
            "Workers configured.",
            "gauge",
            g.workers.to_string(),
        );
        gauge(
            &mut out,
            "ckptd_catalog_checkpoints",
            "Checkpoints in the catalog.",
            "gauge",
            g.catalog_checkpoints.to_string(),
        );
        self.remote.render(&mut out);
        self.jobs.render(
            "ckptd_jobs_total",
            "Jobs ended, by kind (checkpoint, restore, push, pull; import and export too, which answer at once), result, error code (empty when it succeeded) and, for CRIU's failures, the cause ckptd recognised in its log (tcp_established, ext_unix_sk, tty, pid_in_use, ...).",
            &["kind", "result", "code", "cause"],
            &mut out,
        );
        self.queue_seconds.render(
            "ckptd_job_queue_seconds",
            "Time jobs waited for a worker, by kind.",
            &["kind"],
            &mut out,
        );
        self.job_seconds.render(
            "ckptd_job_duration_seconds",
            "Time from a job's start to its end, by kind and target (process, runc, docker, podman).",
            &["kind", "target"],
            &mut out,
        );
        self.target_frozen_seconds.render(
            "ckptd_checkpoint_frozen_seconds",
            "How long targets were frozen (CRIU's statistics), by target (process, runc, docker, podman).",
            &["target"],
            &mut out,
        );
        self.checkpoint_bytes.render(
            "ckptd_checkpoint_size_bytes",
            "Image size of ready checkpoints, by target (process, runc, docker, podman).",
            &["target"],
            &mut out,
        );
        self.phase_seconds.render(
            "ckptd_checkpoint_phase_seconds",
            "Where checkpoint jobs' time goes, by target and phase: dump (CRIU or the runtime, the target frozen for part of it), durable (fsync of the images, rename, fsync of the parent), release (ending what the dump left stopped), catalog (recording the result).",
            &["target", "phase"],
            &mut out,
        );
        out.push_str("# HELP ckptd_checkpoints Checkpoints in the catalog, by status.\n# TYPE ckptd_checkpoints gauge\n");
        for (status, n) in &g.by_status {
            out.push_str(&format!(
                "ckptd_checkpoints{{status=\"{}\"}} {n}\n",
                label(status)
            ));
        }
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
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for (location, v) in values {
                out.push_str(&format!("{name}{{location=\"{}\"}} {v}\n", label(location)));
            }
        }
        render_schedules(&g.schedules, &mut out);
        self.requests.render(
            "ckptd_http_requests_total",
            "Requests answered, by route template and status class (2xx, 4xx, ...).",
            &["route", "code"],
            &mut out,
        );
        gauge(
            &mut out,
            "ckptd_event_stream_clients",
            "Clients following /v1/events now.",
            "gauge",
            self.event_clients.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "ckptd_start_time_seconds",
            "When the daemon started, in Unix seconds (uptime: time() - this).",
            "gauge",
            g.started_at.to_string(),
        );
        out.push_str(&format!(
            "# HELP ckptd_build_info ckptd's version, and the CRIU and runc it runs.\n# TYPE ckptd_build_info gauge\nckptd_build_info{{version=\"{}\",criu=\"{}\",runc=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            label(&g.criu_version),
            label(&g.runc_version)
        ));
        out
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
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(0.03);
        h.observe(3.0);
        let mut s = String::new();
        h.render("x", "h", &mut s);
        assert!(s.contains("x_bucket{le=\"0.025\"} 0\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.05\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"5\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 2\n"), "{s}");
        assert!(s.contains("x_count 2\n"), "{s}");
    }
}
