//! `ckpt top`: a live view of the daemon, redrawn every second and at each event: jobs running
//! (kind, checkpoint, target, elapsed, bytes written so far), the queue, the last failures with their hints, schedules
//! with their next run, storage. Fed by `/v1/events` (each event redraws at once and is listed),
//! `/metrics` (queue, workers, storage by location) and the jobs and schedules routes.

use std::collections::VecDeque;
use std::time::Duration;

use ckptd_api::query::JobQuery;
use ckptd_api::{Client, ClientError, Job, JobState, Schedule};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use crate::commands::jobs::Names;
use crate::render::{self, ago, event_line, short_secs, target_text};
use crate::table::human_bytes;

/// What one redraw shows.
#[derive(Default)]
struct View {
    running: Vec<(Job, String, String)>,
    queued: usize,
    failed: Vec<Failure>,
    schedules: Vec<Schedule>,
    metrics: Vec<prometheus_parse::Sample>,
    events: VecDeque<String>,
    error: Option<String>,
}

const EVENTS_KEPT: usize = 8;

/// One of the last failures: a failed job, or a scheduled run the daemon refused before any
/// job existed (its target gone, a limit reached).
#[derive(Debug, PartialEq)]
struct Failure {
    at: chrono::DateTime<chrono::Utc>,
    /// `checkpoint NAME`, `restore NAME`, `schedule NAME` (a refused run).
    what: String,
    error: Option<ckptd_api::ErrorInfo>,
}

/// The last `n` failures, newest first, each once: failed jobs, and the refused runs that the
/// schedules' last runs record (a run whose job failed is that job, not listed again).
fn last_failures(failed: Vec<(Job, String)>, schedules: &[Schedule], n: usize) -> Vec<Failure> {
    let mut all: Vec<Failure> = failed
        .into_iter()
        .map(|(j, name)| Failure {
            at: j.finished_at.unwrap_or(j.created_at),
            what: format!("{} {name}", j.kind.as_str()),
            error: j.error,
        })
        .collect();
    for s in schedules {
        if let Some(r) = s
            .last_run
            .as_ref()
            .filter(|r| r.status == ckptd_api::RunStatus::Failed && r.job_id.is_none())
        {
            all.push(Failure {
                at: r.at,
                what: format!("schedule {} (run refused)", s.name),
                error: r.error.clone(),
            });
        }
    }
    all.sort_by_key(|f| std::cmp::Reverse(f.at));
    all.truncate(n);
    all
}

impl View {
    fn gauge(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|s| s.metric == name)
            .and_then(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    fn by_location(&self, name: &str) -> Vec<(String, f64)> {
        self.metrics
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => {
                    Some((s.labels.get("location").unwrap_or("").to_owned(), v))
                }
                _ => None,
            })
            .collect()
    }

    async fn refresh(&mut self, client: &Client, names: &mut Names) {
        match self.load(client, names).await {
            Ok(()) => self.error = None,
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    async fn load(&mut self, client: &Client, names: &mut Names) -> Result<(), ClientError> {
        let q = |state, limit| JobQuery {
            state: Some(state),
            limit: Some(limit),
            ..Default::default()
        };
        let running = client.jobs(&q(JobState::Running, 50)).await?.items;
        self.running.clear();
        for j in running {
            let (name, target) = names.get(client, j.checkpoint_id).await;
            // One job's answer carries its progress (bytes written so far); the list's does not.
            let j = client.job(&j.id.to_string(), None).await.unwrap_or(j);
            self.running.push((j, name, target));
        }
        self.queued = client.jobs(&q(JobState::Queued, 500)).await?.items.len();
        let mut failed = Vec::new();
        for j in client.jobs(&q(JobState::Failed, 5)).await?.items {
            let (name, _) = names.get(client, j.checkpoint_id).await;
            failed.push((j, name));
        }
        self.schedules = client.schedules().await?.items;
        self.failed = last_failures(failed, &self.schedules, 5);
        let text = client.get("/metrics").await?.text();
        self.metrics = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .map(|s| s.samples)
            .unwrap_or_default();
        Ok(())
    }

    fn draw(&self, f: &mut Frame) {
        let [head, running, failures, schedules, storage, events] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Min(5),
            Constraint::Length(8),
            Constraint::Min(5),
            Constraint::Length(5),
            Constraint::Length(EVENTS_KEPT as u16 + 2),
        ])
        .areas(f.area());
        let busy = self.gauge("ckptd_busy_workers").unwrap_or(0.0);
        let workers = self.gauge("ckptd_workers").unwrap_or(0.0);
        let up = self
            .gauge("ckptd_start_time_seconds")
            .map(|t| short_secs(chrono::Utc::now().timestamp() - t as i64))
            .unwrap_or_default();
        let mut title = format!(
            "workers {busy}/{workers} busy · queued {} · up {up} · q quits, r refreshes",
            self.queued
        );
        if let Some(e) = &self.error {
            title = format!("cannot reach ckptd: {e}");
        }
        f.render_widget(
            Paragraph::new(title).block(Block::default().borders(Borders::ALL).title("ckpt top")),
            head,
        );
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let rows = self.running.iter().map(|(j, name, target)| {
            let elapsed = j
                .started_at
                .map(|t| short_secs((chrono::Utc::now() - t).num_seconds()))
                .unwrap_or_default();
            Row::new(vec![
                j.kind.as_str().to_owned(),
                name.clone(),
                target.clone(),
                elapsed,
                j.progress
                    .map(|p| human_bytes(p.bytes_written))
                    .unwrap_or_default(),
                j.id.to_string()[..8].to_owned(),
            ])
        });
        f.render_widget(
            Table::new(
                rows,
                [
                    Constraint::Length(11),
                    Constraint::Percentage(30),
                    Constraint::Percentage(20),
                    Constraint::Length(8),
                    Constraint::Length(11),
                    Constraint::Length(9),
                ],
            )
            .header(
                Row::new(vec![
                    "KIND",
                    "CHECKPOINT",
                    "TARGET",
                    "ELAPSED",
                    "WRITTEN",
                    "JOB",
                ])
                .style(bold),
            )
            .block(Block::default().borders(Borders::ALL).title("Running")),
            running,
        );
        let failed: Vec<Line> = self
            .failed
            .iter()
            .map(|f| {
                let e = f.error.as_ref();
                let hint = e.and_then(render::hint).unwrap_or_default();
                Line::from(format!(
                    "{} {}: {}{}",
                    ago(&f.at),
                    f.what,
                    e.map(|e| e.message.as_str()).unwrap_or(""),
                    if hint.is_empty() {
                        String::new()
                    } else {
                        format!(" → {hint}")
                    }
                ))
            })
            .collect();
        f.render_widget(
            Paragraph::new(failed).wrap(Wrap { trim: true }).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title("Last failures"),
            ),
            failures,
        );
        let rows = self.schedules.iter().map(|s| {
            Row::new(vec![
                s.name.clone(),
                target_text(&s.target),
                if s.enabled {
                    s.effective_cron.clone()
                } else {
                    "disabled".into()
                },
                s.next_run_at.map(|t| ago(&t)).unwrap_or_else(|| "-".into()),
                s.last_run
                    .as_ref()
                    .map(|r| format!("{:?} {}", r.status, ago(&r.at)).to_lowercase())
                    .unwrap_or_else(|| "-".into()),
                s.consecutive_failures.to_string(),
            ])
        });
        f.render_widget(
            Table::new(
                rows,
                [
                    Constraint::Percentage(20),
                    Constraint::Percentage(20),
                    Constraint::Percentage(20),
                    Constraint::Length(10),
                    Constraint::Percentage(20),
                    Constraint::Length(8),
                ],
            )
            .header(
                Row::new(vec!["SCHEDULE", "TARGET", "CRON", "NEXT", "LAST", "FAILED"]).style(bold),
            )
            .block(Block::default().borders(Borders::ALL).title("Schedules")),
            schedules,
        );
        let free = self.by_location("ckptd_storage_free_bytes");
        let lines: Vec<Line> = self
            .by_location("ckptd_storage_used_bytes")
            .into_iter()
            .map(|(loc, used)| {
                let free = free
                    .iter()
                    .find(|(l, _)| *l == loc)
                    .map(|(_, f)| format!(", {} free", human_bytes(*f as u64)))
                    .unwrap_or_default();
                Line::from(format!("{loc}: {} used{free}", human_bytes(used as u64)))
            })
            .collect();
        f.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("Storage")),
            storage,
        );
        let lines: Vec<Line> = self.events.iter().map(|e| Line::from(e.as_str())).collect();
        f.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("Events")),
            events,
        );
    }
}

/// Puts the terminal back as it was, whatever ends the view.
struct Screen;

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

enum Input {
    Quit,
    Refresh,
    Event(String),
}

pub async fn top(client: &Client) -> Result<(), ClientError> {
    // Reach the daemon before the screen changes: an error reads as any other command's.
    client.health().await?;
    let mut names = Names::default();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Input>(64);
    // Keys, read on a thread of their own (crossterm's reads block).
    let keys = tx.clone();
    std::thread::spawn(move || loop {
        use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
        if let Ok(Event::Key(k)) = event::read() {
            let input = match k.code {
                KeyCode::Char('q') | KeyCode::Esc => Input::Quit,
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Input::Quit,
                KeyCode::Char('r') => Input::Refresh,
                _ => continue,
            };
            let quit = matches!(input, Input::Quit);
            if keys.blocking_send(input).is_err() || quit {
                return;
            }
        }
    });
    // Events: each one is listed and redraws the view.
    let events = client.clone();
    tokio::spawn(async move {
        let Ok(mut stream) = events.event_stream().await else {
            return;
        };
        while let Some(Ok((ev, _))) = futures_util::StreamExt::next(&mut stream).await {
            if tx.send(Input::Event(event_line(&ev, None))).await.is_err() {
                return;
            }
        }
    });
    let mut terminal = ratatui::init();
    let _screen = Screen;
    let mut view = View::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            input = rx.recv() => match input {
                None | Some(Input::Quit) => break,
                Some(Input::Refresh) => {}
                Some(Input::Event(line)) => {
                    view.events.push_front(line);
                    view.events.truncate(EVENTS_KEPT);
                }
            },
        }
        view.refresh(client, &mut names).await;
        terminal
            .draw(|f| view.draw(f))
            .map_err(|e| ClientError::Io(format!("cannot draw on the terminal: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;

    fn job(json: serde_json::Value) -> Job {
        serde_json::from_value(json).unwrap()
    }

    fn schedule(name: &str, last_run: serde_json::Value) -> Schedule {
        serde_json::from_value(serde_json::json!({
            "id": "11111111-0180-4f9d-a33a-dcee1fe0206d", "name": name,
            "target": {"kind": "process", "pid": 7}, "cron": "@hourly",
            "effective_cron": "17 * * * *", "options": {}, "retention": {}, "enabled": true,
            "created_at": "2026-12-05T10:00:00Z", "updated_at": "2026-12-05T10:00:00Z",
            "next_run_at": null, "last_run": last_run
        }))
        .unwrap()
    }

    /// A scheduled run refused before any job is among the failures; a run whose job failed
    /// is listed once, as its job.
    #[test]
    fn refused_runs_are_failures_and_each_failure_shows_once() {
        let failed = job(serde_json::json!({
            "id": "5dc932bc-0180-4f9d-a33a-dcee1fe0206d", "kind": "checkpoint",
            "checkpoint_id": "00000000-0000-0000-0000-000000000002", "state": "failed",
            "created_at": "2026-12-05T11:00:00Z", "started_at": null,
            "finished_at": "2026-12-05T11:00:01Z", "result": null,
            "error": {"code": "criu_failed", "message": "CRIU failed", "details": {}}
        }));
        let refused = schedule(
            "gone",
            serde_json::json!({"at": "2026-12-05T12:00:00Z", "status": "failed",
                "error": {"code": "target_unavailable", "message": "no process 7", "details": {}}}),
        );
        let with_job = schedule(
            "hourly",
            serde_json::json!({"at": "2026-12-05T11:00:00Z", "status": "failed",
                "job_id": "5dc932bc-0180-4f9d-a33a-dcee1fe0206d",
                "error": {"code": "criu_failed", "message": "CRIU failed", "details": {}}}),
        );
        let f = last_failures(vec![(failed, "hourly-1".into())], &[refused, with_job], 5);
        let what: Vec<&str> = f.iter().map(|f| f.what.as_str()).collect();
        assert_eq!(what, ["schedule gone (run refused)", "checkpoint hourly-1"]);
        assert_eq!(f[0].error.as_ref().unwrap().message, "no process 7");
    }

    /// What a running checkpoint, a failure and storage look like on a 160x50 terminal.
    #[test]
    fn a_running_checkpoint_shows_its_bytes_written() {
        let running = job(serde_json::json!({
            "id": "390be939-321d-4b88-812b-523b59129c41", "kind": "checkpoint",
            "checkpoint_id": "00000000-0000-0000-0000-000000000001", "state": "running",
            "created_at": chrono::Utc::now(), "started_at": chrono::Utc::now(),
            "finished_at": null, "result": null, "error": null,
            "progress": {"bytes_written": 5 * 1024 * 1024}
        }));
        let failed = job(serde_json::json!({
            "id": "5dc932bc-0180-4f9d-a33a-dcee1fe0206d", "kind": "checkpoint",
            "checkpoint_id": "00000000-0000-0000-0000-000000000002", "state": "failed",
            "created_at": chrono::Utc::now(), "started_at": null, "finished_at": chrono::Utc::now(),
            "result": null,
            "error": {"code": "criu_failed", "message": "CRIU could not dump pid 7",
                      "details": {"hint": "it has a TCP connection: retry with \"tcp_established\": true",
                                  "advice": {"kind": "retry_with", "option": "tcp_established",
                                             "because": "it has a TCP connection"}}}
        }));
        let metrics = "ckptd_storage_used_bytes{location=\"state_dir\"} 1048576\n\
                       ckptd_storage_free_bytes{location=\"state_dir\"} 2097152\n";
        let view = View {
            running: vec![(running, "big".into(), "pid 42".into())],
            failed: last_failures(vec![(failed, "tcp".into())], &[], 5),
            metrics: prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned())))
                .unwrap()
                .samples,
            ..Default::default()
        };
        let mut terminal = ratatui::Terminal::new(TestBackend::new(160, 50)).unwrap();
        terminal.draw(|f| view.draw(f)).unwrap();
        let screen: String = terminal
            .backend()
            .buffer()
            .content()
            .chunks(160)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        let row = screen.lines().find(|l| l.contains("390be939")).unwrap();
        for want in ["checkpoint", "big", "pid 42", "5.0 MiB"] {
            assert!(row.contains(want), "{want}: {row}");
        }
        assert!(
            screen
                .contains("checkpoint tcp: CRIU could not dump pid 7 → it has a TCP connection: retry with --tcp-established"),
            "{screen}"
        );
        assert!(
            screen.contains("state_dir: 1.0 MiB used, 2.0 MiB free"),
            "{screen}"
        );
    }
}
