//! Schedules, retention and expiry against the real daemon, real CRIU and real processes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ckptd_api::{
    CheckpointStatus, CreateCheckpoint, CreateSchedule, JobState, Retention, RunStatus, Schedule,
    ScheduleOptions, Target as ApiTarget, UpdateSchedule,
};
use ckptd_tests::{Daemon, Target};

/// A daemon whose timer pass (retention of every schedule, expiry) runs every `secs`.
async fn daemon_with_interval(secs: u64) -> Daemon {
    daemon_with_config(&format!("retention_interval_secs = {secs}\n"), &[]).await
}

/// A daemon started with config file `toml` and command-line `args`.
async fn daemon_with_config(toml: &str, args: &[&str]) -> Daemon {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), toml).unwrap();
    // The daemon reads its config at start only; keep the file for restarts.
    let (_, path) = cfg.keep().unwrap();
    let mut all = vec!["--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    Daemon::start_with(&all).await
}

fn schedule(name: &str, pid: i32, cron: &str, retention: Retention) -> CreateSchedule {
    CreateSchedule {
        name: name.into(),
        target: ApiTarget::Process { pid },
        cron: cron.into(),
        options: ScheduleOptions::default(),
        retention,
        enabled: true,
    }
}

async fn labelled(d: &Daemon, name: &str) -> Vec<ckptd_api::Checkpoint> {
    d.client
        .list_checkpoints(&ckptd_tests::q(format!("label=schedule={name}")))
        .await
        .unwrap()
        .items
}

/// Subscribes to the events now (returning once the daemon has answered the subscription, so
/// nothing from here on is missed) and waits in the background for the first of type `kind`
/// (up to `secs`).
async fn first_event(
    d: &Daemon,
    kind: &'static str,
    secs: u64,
) -> tokio::task::JoinHandle<Option<serde_json::Value>> {
    use futures_util::StreamExt;
    let mut stream = d.client.event_stream().await.expect("the event stream");
    tokio::spawn(async move {
        let wait = async {
            while let Some(Ok((_, raw))) = stream.next().await {
                let ev: serde_json::Value = serde_json::from_str(&raw).unwrap();
                if ev["type"] == kind {
                    return Some(ev);
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(secs), wait)
            .await
            .ok()
            .flatten()
    })
}

/// Polls the schedule until `pred` holds (up to `secs`).
async fn wait_schedule(
    d: &Daemon,
    name: &str,
    secs: u64,
    mut pred: impl FnMut(&Schedule) -> bool,
) -> Schedule {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = d.client.schedule(name).await.unwrap();
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "schedule {name} did not get there: {s:#?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_six_field_schedule_with_keep_last_2_leaves_two_ready_checkpoints() {
    // The timer pass is an hour away: what prunes here is the pass after each run.
    let d = daemon_with_interval(3600).await;
    let t = Target::python(d.dir.path(), "every2", 0, false);
    let s = d
        .client
        .create_schedule(&schedule(
            "every2",
            t.pid,
            "*/2 * * * * *",
            Retention {
                keep_last: Some(2),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(s.effective_cron, "*/2 * * * * *");
    assert!(
        s.options.leave_running,
        "schedules leave the target running by default"
    );
    // Slots are whole seconds of the cron, before the first run and after each (a run's anchor
    // is the moment it started, fraction included, and the next slot must not carry it).
    let on_a_slot = |s: &Schedule| {
        if let Some(next) = s.next_run_at {
            assert_eq!(
                next.timestamp_subsec_nanos(),
                0,
                "{next}: not a whole second"
            );
            assert_eq!(next.timestamp() % 2, 0, "{next}: not a slot of */2");
        }
    };
    assert!(s.next_run_at.is_some());
    on_a_slot(&s);

    // Five successful runs, each a new checkpoint.
    let mut done = BTreeSet::new();
    wait_schedule(&d, "every2", 40, |s| {
        on_a_slot(s);
        if let Some(r) = &s.last_run {
            assert_ne!(r.status, RunStatus::Failed, "a run failed: {r:#?}");
            if r.status == RunStatus::Succeeded {
                done.insert(r.checkpoint_name.clone().unwrap());
            }
        }
        done.len() >= 5
    })
    .await;
    let off = d
        .client
        .update_schedule(
            "every2",
            &UpdateSchedule {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!off.enabled && off.next_run_at.is_none());
    wait_schedule(&d, "every2", 30, |s| {
        s.last_run
            .as_ref()
            .is_some_and(|r| r.status != RunStatus::Running)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let kept = loop {
        let kept = labelled(&d, "every2").await;
        if kept.len() == 2 || Instant::now() > deadline {
            break kept;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(kept.len(), 2, "{kept:#?}");
    for cp in &kept {
        assert_eq!(cp.status, CheckpointStatus::Ready);
        assert!(cp.name.starts_with("every2-2"), "{}", cp.name);
        assert_eq!(cp.labels["schedule"], "every2");
        assert!(std::path::Path::new(&cp.dir).is_dir());
    }
    // The pruned ones are gone from disk too: only the two kept directories remain.
    let dirs = std::fs::read_dir(d.state_dir.join("checkpoints"))
        .unwrap()
        .count();
    assert_eq!(dirs, 2);
    // The process was never stopped.
    assert!(t.is_progressing(Duration::from_secs(2)));
    t.assert_contiguous();

    let plan = d.client.retention_plan("every2").await.unwrap();
    assert!(plan.prune.is_empty(), "{plan:#?}");
    assert_eq!(plan.keep.len(), 2);
    assert_eq!(
        plan.keep[0].reasons,
        ["newest ready checkpoint", "last checkpoint"]
    );
    assert_eq!(plan.keep[1].reasons, ["last checkpoint"]);

    // Deleting the schedule keeps its checkpoints.
    d.client.delete_schedule("every2").await.unwrap();
    assert_eq!(labelled(&d, "every2").await.len(), 2);
    let e = d.client.schedule("every2").await.unwrap_err();
    assert_eq!(e.api_error().unwrap().0.as_u16(), 404);
}

#[tokio::test]
async fn a_run_missed_while_the_daemon_was_down_runs_once_at_start() {
    let mut d = daemon_with_interval(3600).await;
    let t = Target::python(d.dir.path(), "missed", 0, false);
    // Two slots, 3 and 5 s from now, both passing while the daemon is down.
    let now = chrono::Utc::now().timestamp();
    let cron = format!("{},{} * * * * *", (now + 3) % 60, (now + 5) % 60);
    d.client
        .create_schedule(&schedule("missed", t.pid, &cron, Retention::default()))
        .await
        .unwrap();
    let status = d.stop().await;
    assert!(status.success());
    assert!(
        chrono::Utc::now().timestamp() < now + 3,
        "the daemon took too long to stop"
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    d.restart_after_stop().await;

    let s = wait_schedule(&d, "missed", 20, |s| {
        s.last_run
            .as_ref()
            .is_some_and(|r| r.status == RunStatus::Succeeded)
    })
    .await;
    let run = s.last_run.unwrap();
    assert!(!run.manual);
    // Once, not once per missed slot: no second run follows (the next slot is a minute away).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cps = labelled(&d, "missed").await;
    assert_eq!(cps.len(), 1, "{cps:#?}");
    let next = d
        .client
        .schedule("missed")
        .await
        .unwrap()
        .next_run_at
        .unwrap();
    assert!(
        next > chrono::Utc::now() + chrono::TimeDelta::seconds(40),
        "{next}"
    );
    assert!(t.is_progressing(Duration::from_secs(2)));
}

#[tokio::test]
async fn a_target_that_went_away_fails_the_run_and_the_schedule_stays() {
    let d = daemon_with_interval(3600).await;
    let mut t = Target::python(d.dir.path(), "gone", 0, false);
    d.client
        .create_schedule(&schedule(
            "gone",
            t.pid,
            "* * * * * *",
            Retention::default(),
        ))
        .await
        .unwrap();
    // Listen for the event before the target goes.
    let events = first_event(&d, "schedule.failed", 20).await;
    ckptd_tests::signal(t.pid, libc::SIGKILL);
    t.reap();

    let ev = events.await.unwrap().expect("a schedule.failed event");
    assert_eq!(ev["schedule"]["name"], "gone");
    assert_eq!(
        ev["schedule"]["last_run"]["error"]["code"], "target_unavailable",
        "{ev}"
    );
    let s = d.client.schedule("gone").await.unwrap();
    assert!(s.enabled, "the schedule stays");
    let run = s.last_run.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.error.unwrap().message.contains(&t.pid.to_string()),
        "the error names the pid"
    );
    assert!(s.next_run_at.is_some());
    // A schedule whose target has gone can still be changed and disabled.
    let off = d
        .client
        .update_schedule(
            "gone",
            &UpdateSchedule {
                enabled: Some(false),
                retention: Some(Retention {
                    keep_last: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("disable a schedule whose target is gone");
    assert!(!off.enabled);
    assert_eq!(off.retention.keep_last, Some(1));
}

#[tokio::test]
async fn checkpoints_expire_and_schedules_are_checked() {
    let d = daemon_with_interval(1).await;
    let t = Target::python(d.dir.path(), "expiring", 0, false);
    let create = |name: &str, expires_in: Option<&str>| CreateCheckpoint {
        leave_running: true,
        expires_in: expires_in.map(str::to_owned),
        ..ckptd_tests::checkpoint(Some(ApiTarget::Process { pid: t.pid }), name)
    };
    let short = d
        .client
        .create_checkpoint(&create("short", Some("2s")), true)
        .await
        .unwrap()
        .checkpoint;
    let expires = short.expires_at.expect("expires_at");
    assert!(expires - short.created_at == chrono::TimeDelta::seconds(2));
    d.client
        .create_checkpoint(&create("forever", None), true)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.client.checkpoint("short").await.is_ok() {
        assert!(Instant::now() < deadline, "short did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!std::path::Path::new(&short.dir).exists());
    assert!(d.client.checkpoint("forever").await.is_ok());
    let e = d
        .client
        .create_checkpoint(&create("bad", Some("7y")), true)
        .await
        .unwrap_err();
    let (status, err) = e.api_error().unwrap();
    assert_eq!(status.as_u16(), 400);
    assert!(err.message.contains("expires_in"), "{err}");

    // What a schedule is checked for, each refusal naming the problem.
    let cases: Vec<(CreateSchedule, u16, &str)> = vec![
        (
            schedule("c1", t.pid, "61 * * * *", Retention::default()),
            400,
            "cron",
        ),
        (
            schedule("c2", t.pid, "@reboot", Retention::default()),
            400,
            "@hourly",
        ),
        (
            schedule("c3", t.pid, "0 0 31 2 *", Retention::default()),
            400,
            "never",
        ),
        (
            schedule(
                "c4",
                t.pid,
                "@daily",
                Retention {
                    keep_within: Some("1y".into()),
                    ..Default::default()
                },
            ),
            400,
            "keep_within",
        ),
        (
            schedule("c5", 4_000_000, "@daily", Retention::default()),
            422,
            "4000000",
        ),
        (
            schedule("-bad", t.pid, "@daily", Retention::default()),
            400,
            "schedule name",
        ),
        (
            CreateSchedule {
                options: ScheduleOptions {
                    labels: [("schedule".to_owned(), "x".to_owned())].into(),
                    ..Default::default()
                },
                ..schedule("c6", t.pid, "@daily", Retention::default())
            },
            400,
            "set by ckptd",
        ),
    ];
    for (req, code, text) in cases {
        let e = d.client.create_schedule(&req).await.unwrap_err();
        let (status, err) = e.api_error().unwrap();
        assert_eq!(status.as_u16(), code, "{}: {err}", req.name);
        assert!(err.message.contains(text), "{}: {err}", req.name);
    }
    let daily = d
        .client
        .create_schedule(&schedule("daily", t.pid, "@daily", Retention::default()))
        .await
        .unwrap();
    // @daily gets a stable minute and hour of its own.
    let fields: Vec<&str> = daily.effective_cron.split(' ').collect();
    assert_eq!(fields.len(), 5);
    assert_eq!(&fields[2..], ["*", "*", "*"]);
    let e = d
        .client
        .create_schedule(&schedule("daily", t.pid, "@hourly", Retention::default()))
        .await
        .unwrap_err();
    assert_eq!(e.api_error().unwrap().0.as_u16(), 409);
    // A manual run: a checkpoint now, named and labelled as a scheduled one.
    let out = d.client.run_schedule("daily", true).await.unwrap();
    assert!(out.checkpoint.name.starts_with("daily-"));
    assert_eq!(out.checkpoint.labels["schedule"], "daily");
    let s = d.client.schedule("daily").await.unwrap();
    assert!(s.last_run.unwrap().manual);
    // Even with an expiry passed, a schedule's newest ready checkpoint is not expired.
    d.client
        .update_schedule(
            "daily",
            &UpdateSchedule {
                options: Some(ScheduleOptions {
                    expires_in: Some("1s".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let first = d
        .client
        .run_schedule("daily", true)
        .await
        .unwrap()
        .checkpoint;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = d
        .client
        .run_schedule("daily", true)
        .await
        .unwrap()
        .checkpoint;
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.client.checkpoint(&first.name).await.is_ok() {
        assert!(Instant::now() < deadline, "{} did not expire", first.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        d.client.checkpoint(&second.name).await.is_ok(),
        "the newest ready checkpoint of a schedule stays"
    );
}

/// A schedule whose target has died stops failing every slot: after schedule_max_failures
/// failed runs in a row it is disabled, with why, an event and a metric; enabling it again
/// starts the count afresh.
/// A run names its checkpoint `<schedule>-<second>` without reading the catalog first; when a
/// checkpoint already has that name, the insert says so and the run takes `-2`.
#[tokio::test]
async fn a_run_whose_name_is_taken_gets_the_next_free_one() {
    let d = daemon_with_interval(3600).await;
    let t = Target::python(d.dir.path(), "twice", 0, false);
    let other = Target::python(d.dir.path(), "other", 0, false);
    d.client
        .create_schedule(&schedule("twice", t.pid, "0 0 1 1 *", Retention::default()))
        .await
        .unwrap();
    // The names a run of this second or of the next ones would take, taken first (root may
    // take them), each a checkpoint of another process.
    let from = chrono::Utc::now().timestamp();
    let mut taken = Vec::new();
    for s in from..from + 30 {
        // Two seconds of names ahead of now: the run below falls in one of them.
        if s > chrono::Utc::now().timestamp() + 2 {
            break;
        }
        let at = chrono::DateTime::from_timestamp(s, 0).unwrap();
        let name = format!("twice-{}", at.format("%Y%m%dT%H%M%SZ"));
        let req = CreateCheckpoint {
            target: Some(ApiTarget::Process { pid: other.pid }),
            name: Some(name.clone()),
            leave_running: true,
            ..Default::default()
        };
        d.client.create_checkpoint(&req, true).await.unwrap();
        taken.push(name);
    }
    let run = d
        .client
        .run_schedule("twice", true)
        .await
        .unwrap()
        .checkpoint;
    let Some(clash) = run.name.strip_suffix("-2") else {
        panic!(
            "{} has no -2 though its second's name was taken: {taken:?}",
            run.name
        );
    };
    assert!(
        taken.iter().any(|n| n == clash),
        "{} among {taken:?}",
        run.name
    );
    assert_eq!(
        d.client.checkpoint(&run.name).await.unwrap().status,
        CheckpointStatus::Ready
    );
    let s = d.client.schedule("twice").await.unwrap();
    let last = s.last_run.unwrap();
    assert_eq!(last.status, RunStatus::Succeeded);
    assert_eq!(last.checkpoint_name.as_deref(), Some(run.name.as_str()));
}

#[tokio::test]
async fn a_schedule_that_keeps_failing_is_disabled_and_says_why() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "schedule_max_failures = 3\n").unwrap();
    let d = Daemon::start_with(&["--config", cfg.path().to_str().unwrap()]).await;
    let mut t = Target::python(d.dir.path(), "dying", 0, false);
    d.client
        .create_schedule(&schedule(
            "dying",
            t.pid,
            "* * * * * *",
            Retention::default(),
        ))
        .await
        .unwrap();
    let events = first_event(&d, "schedule.disabled", 30).await;
    ckptd_tests::signal(t.pid, libc::SIGKILL);
    t.reap();
    let ev = events.await.unwrap().expect("a schedule.disabled event");
    assert_eq!(ev["schedule"]["name"], "dying");
    let s = d.client.schedule("dying").await.unwrap();
    assert!(!s.enabled);
    assert_eq!(s.consecutive_failures, 3);
    assert!(s.next_run_at.is_none());
    let why = s.disabled_reason.expect("disabled_reason");
    assert!(why.contains("after 3 failed runs in a row"), "{why}");
    assert!(
        why.contains(&t.pid.to_string()),
        "the last error names the pid: {why}"
    );
    // `ckpt schedule ls` and `ckpt schedule inspect` say why, for people.
    let ckpt = |args: &[&str]| {
        let out = d.ckpt(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ls = ckpt(&["schedule", "ls"]);
    let row = ls.lines().find(|l| l.starts_with("dying")).unwrap();
    assert!(row.contains(&format!("no: {why}")), "{ls}");
    let inspect = ckpt(&["schedule", "inspect", "dying"]);
    for want in [
        format!("Enabled:        no: {why}"),
        "Failures:       3 in a row".to_owned(),
        format!("Target:         pid {}", t.pid),
        "Next run:       -".to_owned(),
    ] {
        assert!(inspect.contains(&want), "{want}:\n{inspect}");
    }
    // No run after it was disabled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        d.client
            .schedule("dying")
            .await
            .unwrap()
            .consecutive_failures,
        3
    );
    let last_failure = s.last_failure_at.expect("last_failure_at");
    let metrics = d.client.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("\nckptd_schedules_disabled_total 1\n"),
        "{metrics}"
    );
    // Per schedule, for dashboards and alerts: failures in a row, disabled, when it last failed,
    // and no next run while disabled.
    for line in [
        "ckptd_schedule_consecutive_failures{schedule=\"dying\"} 3\n".to_owned(),
        "ckptd_schedule_enabled{schedule=\"dying\"} 0\n".to_owned(),
        format!(
            "ckptd_schedule_last_failure_timestamp_seconds{{schedule=\"dying\"}} {}\n",
            last_failure.timestamp_micros() as f64 / 1e6
        ),
    ] {
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    assert!(
        !metrics.contains("ckptd_schedule_next_run_timestamp_seconds{schedule=\"dying\"}"),
        "{metrics}"
    );
    let again = d
        .client
        .update_schedule(
            "dying",
            &UpdateSchedule {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(again.enabled);
    assert_eq!(again.consecutive_failures, 0);
    assert!(again.disabled_reason.is_none());
}

/// A schedule made again under a deleted one's name does not prune the old one's checkpoints.
#[tokio::test]
async fn a_new_schedule_with_an_old_name_does_not_inherit_its_checkpoints() {
    let d = daemon_with_interval(3600).await;
    let t = Target::python(d.dir.path(), "reborn", 0, false);
    let keep_one = Retention {
        keep_last: Some(1),
        ..Default::default()
    };
    d.client
        .create_schedule(&schedule("reborn", t.pid, "@yearly", keep_one.clone()))
        .await
        .unwrap();
    let old = d
        .client
        .run_schedule("reborn", true)
        .await
        .unwrap()
        .checkpoint;
    d.client.delete_schedule("reborn").await.unwrap();
    d.client
        .create_schedule(&schedule("reborn", t.pid, "@yearly", keep_one))
        .await
        .unwrap();
    d.client.run_schedule("reborn", true).await.unwrap();
    d.client.run_schedule("reborn", true).await.unwrap();
    let plan = d.client.retention_plan("reborn").await.unwrap();
    assert!(
        plan.keep
            .iter()
            .chain(&plan.prune)
            .all(|i| i.checkpoint_id != old.id),
        "{plan:#?}"
    );
    assert!(d.client.checkpoint(&old.id.to_string()).await.is_ok());
    // Retention runs after each run's job ends: the older of the new two goes, the old one stays.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = labelled(&d, "reborn").await;
        if left.len() == 2 {
            assert!(left.iter().any(|c| c.id == old.id), "{left:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "{left:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The timer's pass applies each schedule's retention as it stands, without a run: a rule
/// made stricter prunes at the next pass, only among the schedule's own checkpoints (not a
/// deleted namesake's), and leaves other schedules' alone. The pass reads every schedule's
/// checkpoints in one statement, a label at a time.
#[tokio::test]
async fn the_timers_pass_applies_a_stricter_retention_without_a_run() {
    let d = daemon_with_interval(1).await;
    let t = Target::python(d.dir.path(), "swept", 0, false);
    let keep = |n| Retention {
        keep_last: Some(n),
        ..Default::default()
    };
    d.client
        .create_schedule(&schedule("swept", t.pid, "@yearly", keep(3)))
        .await
        .unwrap();
    let old = d
        .client
        .run_schedule("swept", true)
        .await
        .unwrap()
        .checkpoint;
    d.client.delete_schedule("swept").await.unwrap();
    d.client
        .create_schedule(&schedule("swept", t.pid, "@yearly", keep(3)))
        .await
        .unwrap();
    d.client
        .create_schedule(&schedule("other", t.pid, "@yearly", Retention::default()))
        .await
        .unwrap();
    let mut ours = Vec::new();
    for _ in 0..3 {
        ours.push(
            d.client
                .run_schedule("swept", true)
                .await
                .unwrap()
                .checkpoint,
        );
        d.client.run_schedule("other", true).await.unwrap();
    }
    // Three of its own kept, and two passes of the timer since prune nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(labelled(&d, "swept").await.len(), 4);
    d.client
        .update_schedule(
            "swept",
            &UpdateSchedule {
                retention: Some(keep(1)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left: BTreeSet<_> = labelled(&d, "swept")
            .await
            .into_iter()
            .map(|c| c.id)
            .collect();
        if left.len() == 2 {
            assert_eq!(left, BTreeSet::from([old.id, ours[2].id]), "{}", d.log());
            break;
        }
        assert!(Instant::now() < deadline, "{left:?}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for gone in &ours[..2] {
        assert!(!std::path::Path::new(&gone.dir).exists(), "{}", gone.dir);
    }
    assert_eq!(labelled(&d, "other").await.len(), 3);
    assert!(
        d.log().contains("pruned by swept's retention"),
        "{}",
        d.log()
    );
}

#[tokio::test]
async fn schedules_due_together_wait_for_a_queue_slot_rather_than_fail() {
    // One worker and a queue of one: three schedules due at the same second outnumber the slots
    // (as 1,000 schedules each minute outnumber the default 64). Each run waits its turn.
    let d = daemon_with_config(
        "retention_interval_secs = 3600\nqueue_capacity = 1\n",
        &["--workers", "1"],
    )
    .await;
    let targets: Vec<Target> = (0..3)
        .map(|i| Target::python(d.dir.path(), &format!("together{i}"), 0, false))
        .collect();
    for (i, t) in targets.iter().enumerate() {
        d.client
            .create_schedule(&schedule(
                &format!("together{i}"),
                t.pid,
                "*/10 * * * * *",
                Retention::default(),
            ))
            .await
            .unwrap();
    }
    for i in 0..3 {
        let s = wait_schedule(&d, &format!("together{i}"), 40, |s| {
            s.last_run
                .as_ref()
                .is_some_and(|r| r.status == RunStatus::Succeeded)
        })
        .await;
        assert!(
            s.last_failure_at.is_none() && s.consecutive_failures == 0,
            "a run of together{i} failed: {s:#?}\n{}",
            d.log()
        );
    }
    // Each waited for room before its admission: none was checked and then refused as
    // `queue_full` (nothing else asks for jobs here, so no request takes a slot first).
    assert!(
        !d.log().contains("the job queue is full"),
        "a run was admitted into a full queue:\n{}",
        d.log()
    );
}

/// A schedule disabled while its run waits its turn in a crowded minute stays disabled and is
/// not run: the clock fired it from rows read before the change, and used to write that copy
/// back, enabled, with the run.
#[tokio::test]
async fn a_schedule_disabled_while_its_run_waits_for_the_queue_is_not_run_nor_enabled_again() {
    let d = daemon_with_config(
        "retention_interval_secs = 3600\nqueue_capacity = 1\n",
        &["--workers", "1"],
    )
    .await;
    let names = ["first", "second", "waiting"];
    let targets: Vec<Target> = names
        .iter()
        .map(|name| Target::python(d.dir.path(), name, 0, false))
        .collect();
    // All three due at one second, 6 s from now: none is created after the clock's read.
    use chrono::Timelike;
    let second = (chrono::Utc::now() + chrono::Duration::seconds(6)).second();
    for (name, t) in names.iter().zip(&targets) {
        let name = *name;
        let mut s = schedule(
            name,
            t.pid,
            &format!("{second} * * * * *"),
            Retention::default(),
        );
        if name != "waiting" {
            // The first run holds the one worker for 4 s, the second the one queue slot: the
            // third waits for room all that time.
            s.options.hooks = Some(ckptd_api::Hooks {
                pre_dump: Some(vec!["sleep".into(), "4".into()]),
                ..Default::default()
            });
        }
        d.client.create_schedule(&s).await.unwrap();
    }
    // The second run admitted: the first runs its hook, the third waits for room.
    wait_schedule(&d, "second", 40, |s| s.last_run.is_some()).await;
    let waiting = d.client.schedule("waiting").await.unwrap();
    assert!(
        waiting.last_run.is_none(),
        "the third run was admitted before the first ended: {waiting:#?}\n{}",
        d.log()
    );
    let off = d
        .client
        .update_schedule(
            "waiting",
            &UpdateSchedule {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!off.enabled);
    // Both runs before it end; the waiting one was not run, and the schedule is still off.
    for name in &names[..2] {
        wait_schedule(&d, name, 40, |s| {
            s.last_run
                .as_ref()
                .is_some_and(|r| r.status == RunStatus::Succeeded)
        })
        .await;
    }
    let log = d.log();
    assert!(
        log.contains("schedule \"waiting\" was disabled while its run waited; not run"),
        "the waiting run did not see the change:\n{log}"
    );
    let after = d.client.schedule("waiting").await.unwrap();
    assert!(
        !after.enabled && after.last_run.is_none() && after.last_failure_at.is_none(),
        "{after:#?}\n{log}"
    );
    assert!(labelled(&d, "waiting").await.is_empty());
}

/// Spawns `sleep 1000` at exactly `pid` (through ns_last_pid, as CRIU does), retrying while
/// other processes take the pid first.
fn spawn_at_pid(pid: i32, dir: &std::path::Path) -> Target {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let t = Target::spawn(&["sleep", "1000"], &dir.join("stranger.out"));
        if t.pid == pid {
            return t;
        }
        ckptd_tests::signal(t.pid, 9);
    }
    panic!("could not start a process at pid {pid}");
}

/// "A schedule follows a bare pid" (issue 25): after its target died, a process given the same
/// pid is a stranger: the run is refused, saying so, and the stranger is not touched. A
/// restore in place by ckptd keeps the process the schedule's target (same pid, new start time).
#[tokio::test]
async fn a_schedule_refuses_a_stranger_at_its_targets_pid_and_follows_a_restore() {
    let d = Daemon::start().await;
    let dir = d.dir.path().to_owned();
    // Followed through a restore: its run stops it, the restore brings it back, the next run
    // takes it again.
    let mut kept = Target::python(&dir, "kept", 0, false);
    d.client
        .create_schedule(&CreateSchedule {
            options: ScheduleOptions {
                leave_running: false,
                ..Default::default()
            },
            ..schedule("follows", kept.pid, "0 0 1 1 *", Retention::default())
        })
        .await
        .unwrap();
    let first = d.client.run_schedule("follows", true).await.unwrap();
    assert_eq!(first.checkpoint.status, CheckpointStatus::Ready);
    kept.reap();
    d.client
        .restore(&first.checkpoint.name, &Default::default(), true)
        .await
        .expect("restore in place");
    let again = d.client.run_schedule("follows", true).await.unwrap();
    assert_eq!(
        again.checkpoint.status,
        CheckpointStatus::Ready,
        "{again:?}"
    );

    // A stranger at a dead target's pid.
    let mut gone = Target::python(&dir, "gone", 0, false);
    d.client
        .create_schedule(&schedule(
            "stranger",
            gone.pid,
            "0 0 1 1 *",
            Retention::default(),
        ))
        .await
        .unwrap();
    let pid = gone.pid;
    ckptd_tests::signal(pid, 9);
    gone.reap();
    let stranger = spawn_at_pid(pid, &dir);
    let e = d.client.run_schedule("stranger", true).await.unwrap_err();
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 422, "{err:?}");
    assert!(
        err.message
            .contains("is no longer the process this schedule was made for"),
        "{err:?}"
    );
    assert!(
        labelled(&d, "stranger").await.is_empty(),
        "a checkpoint of the stranger was made"
    );
    assert!(matches!(
        ckptd_tests::proc_state(pid),
        Some('S') | Some('R')
    ));
    let s = d.client.schedule("stranger").await.unwrap();
    assert_eq!(s.consecutive_failures, 1, "{s:?}");
    ckptd_tests::signal(pid, 9);
    drop(stranger);
}

/// kill -9 of the daemon while a scheduled run's job runs (CRIU held after writing the images):
/// after the restart the run's outcome is on the schedule, as the job ended. A run that failed
/// counts toward disabling; one that succeeded resets the count and the schedule's retention
/// follows it. Neither is left `running`.
#[tokio::test]
async fn a_run_cut_short_by_kill_9_is_recorded_with_its_job_at_restart() {
    let pause = ckptd_tests::Pause::new();
    let mut d = daemon_with_config(
        &format!(
            "retention_interval_secs = 3600\nschedule_max_failures = 2\n{}",
            pause.config_line()
        ),
        &[],
    )
    .await;
    let t = Target::python(d.dir.path(), "cut", 0, false);
    let mut s = schedule(
        "cut",
        t.pid,
        "0 0 1 1 *",
        Retention {
            keep_last: Some(1),
            ..Default::default()
        },
    );
    s.options.leave_running = true;
    d.client.create_schedule(&s).await.unwrap();
    let first = d.client.run_schedule("cut", true).await.unwrap();
    assert_eq!(first.checkpoint.status, CheckpointStatus::Ready);

    // CRIU finished (the images are written) or failed: the daemon dies as it waits for it.
    for ok in [false, true] {
        pause.arm("post-dump");
        let run = d.client.run_schedule("cut", false).await.unwrap();
        pause.reached("post-dump");
        assert_eq!(
            d.client
                .schedule("cut")
                .await
                .unwrap()
                .last_run
                .unwrap()
                .job_id,
            Some(run.job.id),
            "the schedule knows its run from the moment its job exists"
        );
        d.crash(|| pause.release(ok)).await;

        let job = d.client.job(&run.job.id.to_string(), None).await.unwrap();
        let s = d.client.schedule("cut").await.unwrap();
        let last = s.last_run.clone().unwrap();
        assert_eq!(last.job_id, Some(run.job.id));
        if ok {
            assert_eq!(job.state, JobState::Succeeded, "{}", d.log());
            assert_eq!(last.status, RunStatus::Succeeded, "{s:#?}");
            assert_eq!(s.consecutive_failures, 0);
            assert!(s.last_success_at >= job.finished_at);
            // keep_last 1: the first run's checkpoint goes; the one the crash cut short stays.
            let ready: Vec<_> = wait_ready(&d, "cut", 1).await;
            assert_eq!(ready, std::slice::from_ref(&run.checkpoint.name));
        } else {
            assert_eq!(job.state, JobState::Failed, "{}", d.log());
            assert_eq!(last.status, RunStatus::Failed, "{s:#?}");
            assert!(last.error.unwrap().message.contains("restarted"));
            assert_eq!(s.consecutive_failures, 1);
            assert_eq!(s.last_failure_at, job.finished_at);
            assert!(s.enabled);
        }
        assert!(
            t.is_progressing(Duration::from_secs(2)),
            "the target is stuck"
        );
    }
}

/// The names of `schedule`'s ready checkpoints once there are `n` (up to 20 s).
async fn wait_ready(d: &Daemon, schedule: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready: Vec<String> = labelled(d, schedule)
            .await
            .into_iter()
            .filter(|c| c.status == CheckpointStatus::Ready)
            .map(|c| c.name)
            .collect();
        if ready.len() == n {
            return ready;
        }
        assert!(Instant::now() < deadline, "{ready:?}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
