//! `ckpt top` in a real terminal (tmux): what an operator watching it sees after a CRIU failure,
//! with a schedule, while a job runs; and `q` ends it. (The bytes-written column of a running
//! checkpoint is drawn in `ckpt`'s unit test: a checkpoint's dump is too quick here to catch.)

use std::process::Command;
use std::time::{Duration, Instant};

use ckptd_api::{CreateSchedule, RestoreRequest, Retention, ScheduleOptions, Target as ApiTarget};
use ckptd_tests::{Daemon, Target};

/// A tmux session of its own; killed on drop.
struct Tmux(String);

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", name])
            .status();
        let st = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "160",
                "-y",
                "50",
                command,
            ])
            .status()
            .expect("tmux (make setup installs it)");
        assert!(st.success());
        Tmux(name.to_owned())
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows all of `wanted`.
    async fn wait_for(&self, wanted: &[&str], secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if wanted.iter().all(|w| s.contains(w)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {wanted:?}:\n{s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[tokio::test]
async fn ckpt_top_shows_running_jobs_failures_schedules_and_storage() {
    let d = Daemon::start().await;
    let top = Tmux::start(
        &format!("ckpt-top-{}", std::process::id()),
        &format!(
            "{} --socket {} top",
            ckptd_tests::workspace_binary("ckpt").display(),
            d.socket.display()
        ),
    );
    top.wait_for(&["ckpt top", "workers 0/", "Storage", "state_dir:"], 20)
        .await;

    // A CRIU failure: listed with its hint, in ckpt's words (the flag, not the JSON field).
    let _tcp = d.failing_tcp_checkpoint("top-tcp").await;
    let screen = top
        .wait_for(
            &[
                "Last failures",
                "checkpoint top-tcp",
                "retry with --tcp-established",
            ],
            20,
        )
        .await;
    assert!(!screen.contains("\"tcp_established\""), "{screen}");

    // A schedule: its cron and next run.
    let looper = Target::python(d.dir.path(), "top-loop", 1, false);
    d.client
        .create_schedule(&CreateSchedule {
            name: "top-hourly".into(),
            target: ApiTarget::Process { pid: looper.pid },
            cron: "0 * * * *".into(),
            options: ScheduleOptions::default(),
            retention: Retention::default(),
            enabled: true,
        })
        .await
        .unwrap();
    top.wait_for(
        &[
            "top-hourly",
            &format!("pid {}", looper.pid),
            "0 * * * *",
            "in ",
        ],
        20,
    )
    .await;

    // A job while it runs: a restore in place waits for its pid, which the checkpointed
    // process (killed by the checkpoint, not reaped yet) still holds; it is in the Running table
    // until the test reaps it, then in the events.
    let mut zombie = Target::python(d.dir.path(), "top-zombie", 1, false);
    zombie.wait_for_lines(2);
    d.client
        .create_checkpoint(
            &ckptd_tests::checkpoint(Some(ApiTarget::Process { pid: zombie.pid }), "top-zombie"),
            true,
        )
        .await
        .expect("checkpoint");
    let job = d
        .client
        .restore("top-zombie", &RestoreRequest::default(), false)
        .await
        .unwrap();
    let id = job.id.to_string();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let screen = top.screen();
        let row = screen.lines().find(|l| l.contains(&id[..8])).unwrap_or("");
        if row.contains("restore")
            && row.contains("top-zombie")
            && row.contains(&format!("pid {}", zombie.pid))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running restore's row never showed:\n{screen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    zombie.reap();
    top.wait_for(&["job.succeeded", &format!("job {id} (restore)")], 30)
        .await;

    // q ends it.
    let st = Command::new("tmux")
        .args(["send-keys", "-t", &top.0, "q"])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while top.alive() {
        assert!(Instant::now() < deadline, "q did not end ckpt top");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
