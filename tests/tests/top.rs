//! `ckpt top` in a real terminal (tmux): what an operator watching it sees while a checkpoint
//! runs, after a CRIU failure, with a schedule; and `q` ends it.

use std::process::Command;
use std::time::{Duration, Instant};

use ckptd_api::{
    CreateCheckpoint, CreateSchedule, Retention, ScheduleOptions, Target as ApiTarget,
};
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

    // A CRIU failure: listed with its hint.
    let tcp = Target::python(d.dir.path(), "top-tcp", 1, true);
    d.client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Process { pid: tcp.pid }),
                name: Some("top-tcp".into()),
                leave_running: true,
                ..Default::default()
            },
            true,
        )
        .await
        .expect_err("CRIU refuses the established connection");
    top.wait_for(
        &["Last failures", "checkpoint top-tcp", "tcp_established"],
        20,
    )
    .await;

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

    // A checkpoint while it runs: in the Running table (by its job id), then in the events.
    let big = Target::python(d.dir.path(), "top-big", 768, false);
    let started = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Process { pid: big.pid }),
                name: Some("top-big".into()),
                leave_running: true,
                ..Default::default()
            },
            false,
        )
        .await
        .unwrap();
    let job = started.job.id.to_string();
    // Its row: kind, checkpoint, target and the bytes written so far, growing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let screen = top.screen();
        let row = screen.lines().find(|l| l.contains(&job[..8])).unwrap_or("");
        if row.contains("checkpoint") && row.contains("top-big") && row.contains("MiB") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running checkpoint's row never showed its progress:\n{screen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    top.wait_for(&["job.succeeded", "checkpoint top-big"], 60)
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
