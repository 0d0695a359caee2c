//! Hooks (issue 30): commands run around a checkpoint and a restore, in the target's namespaces
//! as its owner, against the real daemon, real CRIU, real processes and a runc container.
//! An application that flushes its buffered data on `pre_dump` and reconnects to its server on
//! `post_restore_signal`; a failing or hanging `pre_dump` that leaves the target running; a
//! failing `post_dump` that is reported and undoes nothing; a member's hook run as the member;
//! a container's hook inside the container.

use std::io::BufRead;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ckptd_api as api;
use ckptd_tests::*;

/// A server that records the one line each connection sends.
fn server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let said = Arc::new(Mutex::new(Vec::new()));
    let rec = said.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut line = String::new();
            let _ = std::io::BufReader::new(c).read_line(&mut line);
            rec.lock().unwrap().push(line.trim().to_owned());
        }
    });
    (port, said)
}

/// An application that says `hello` to its server at start, counts into an in-memory buffer
/// (and its stdout), writes the buffer to `data` (and `data.flushed`) on SIGUSR1, and says
/// `reconnected` on SIGUSR2.
fn app(dir: &Path, port: u16) -> (Target, std::path::PathBuf) {
    let data = dir.join("data.txt");
    let script = format!(
        r#"
import os, signal, socket, time
def hello(word):
    s = socket.create_connection(("127.0.0.1", {port})); s.sendall((word + "\n").encode()); s.close()
flag = {{"flush": False, "reconnect": False}}
signal.signal(signal.SIGUSR1, lambda *a: flag.__setitem__("flush", True))
signal.signal(signal.SIGUSR2, lambda *a: flag.__setitem__("reconnect", True))
hello("hello")
pending, i = [], 0
while True:
    pending.append(str(i)); print(i, flush=True); i += 1
    if flag["flush"]:
        flag["flush"] = False
        with open("{data}", "a") as f:
            f.write("\n".join(pending) + "\n"); f.flush(); os.fsync(f.fileno())
        pending.clear()
        open("{data}.flushed", "w").close()
    if flag["reconnect"]:
        flag["reconnect"] = False
        hello("reconnected")
    time.sleep(0.05)
"#,
        data = data.display()
    );
    let t = Target::spawn(&["python3", "-c", &script], &dir.join("app.out"));
    t.wait_for_lines(3);
    (t, data)
}

fn run<'a>(job: &'a api::Job, hook: &str) -> &'a api::HookRun {
    job.result
        .as_ref()
        .and_then(|r| r.hooks.iter().find(|h| h.hook == hook))
        .unwrap_or_else(|| panic!("no {hook} run in {job:?}"))
}

#[tokio::test]
async fn pre_dump_flushes_and_post_restore_reconnects() {
    let d = Daemon::start().await;
    let (port, said) = server();
    let (mut t, data) = app(d.dir.path(), port);
    wait_until("the app's hello", || said.lock().unwrap().len() == 1);
    let flushed = format!("{}.flushed", data.display());
    let out = d.ckpt(&[
        "create",
        &t.pid.to_string(),
        "app",
        "--pre-dump",
        &format!("kill -USR1 $CKPTD_PID; while [ ! -e {flushed} ]; do sleep 0.02; done"),
        "--post-restore",
        "echo restored as $(id -u) by $CKPTD_HOOK of $CKPTD_CHECKPOINT",
        "--post-restore-signal",
        "USR2",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    // Flushed by the application before the dump: what it had buffered is on disk, in order.
    let lines = read_lines(&data);
    assert!(!lines.is_empty(), "nothing was flushed");
    assert_counts(&lines, "the flushed data");
    let cp = d.client.checkpoint("app").await.unwrap();
    assert_eq!(cp.status, api::CheckpointStatus::Ready);
    let hooks = cp.hooks.expect("the checkpoint records its hooks");
    assert_eq!(hooks.post_restore_signal.as_deref(), Some("USR2"));
    let taken = d
        .wait_ended(&latest_job(&d, api::JobKind::Checkpoint).await)
        .await;
    assert!(run(&taken, "pre_dump").ok, "{taken:?}");

    wait_until("the target to end", || {
        proc_state(t.pid).is_none_or(|s| s == 'Z')
    });
    t.reap();
    let job = d
        .client
        .restore("app", &api::RestoreRequest::default(), true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(job.state, api::JobState::Succeeded);
    let post = run(&job, "post_restore");
    assert!(post.ok, "{post:?}");
    assert_eq!(post.output.trim(), "restored as 0 by post_restore of app");
    assert!(run(&job, "post_restore_signal").ok, "{job:?}");
    // Told by the signal, the restored application reconnects to its server.
    wait_until("the reconnection", || {
        said.lock().unwrap().iter().any(|l| l == "reconnected")
    });
    let at = t.lines().len();
    t.wait_for_lines(at + 3);
}

async fn latest_job(d: &Daemon, kind: api::JobKind) -> String {
    d.jobs_of(kind).await.first().expect("a job").id.to_string()
}

#[tokio::test]
async fn a_failing_or_hanging_pre_dump_leaves_the_target_running() {
    let d = Daemon::start().await;
    let t = Target::looper(d.dir.path());
    for (flags, says) in [
        (
            vec!["--pre-dump", "echo not now >&2; exit 3"],
            "exited with status 3",
        ),
        (
            vec!["--pre-dump", "sleep 30", "--hook-timeout", "1"],
            "after its time limit (1 s)",
        ),
    ] {
        let mut args = vec!["create".to_owned(), t.pid.to_string()];
        args.extend(flags.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = d.ckpt(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("the pre_dump hook failed") && err.contains(says),
            "{err}"
        );
        let job = d
            .wait_ended(&latest_job(&d, api::JobKind::Checkpoint).await)
            .await;
        let e = job.error.expect("the job's error");
        assert_eq!(e.code, "target_unavailable", "{e:?}");
        if says.contains("status 3") {
            assert_eq!(e.details["hook"]["output"], "not now\n", "{e:?}");
            assert_eq!(e.details["hook"]["exit_code"], 3, "{e:?}");
        }
        // Never frozen: it runs on, counting.
        let at = t.lines().len();
        t.wait_for_lines(at + 3);
        assert_ne!(proc_state(t.pid), Some('T'));
    }
    // No hook process is left behind (the hanging one was killed with its group).
    assert!(
        !std::process::Command::new("pgrep")
            .args(["-f", "^sleep 30$"])
            .status()
            .unwrap()
            .success(),
        "the hanging hook still runs"
    );
    t.assert_contiguous();
}

#[tokio::test]
async fn a_failing_post_dump_is_reported_and_the_checkpoint_kept() {
    let d = Daemon::start().await;
    let t = Target::looper(d.dir.path());
    let out = d.ckpt(&[
        "create",
        &t.pid.to_string(),
        "kept",
        "--leave-running",
        "--post-dump",
        "echo disk full; exit 1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the post_dump hook failed: exited with status 1")
            && err.contains("disk full"),
        "{err}"
    );
    let job = d
        .wait_ended(&latest_job(&d, api::JobKind::Checkpoint).await)
        .await;
    assert_eq!(job.state, api::JobState::Succeeded);
    assert!(!run(&job, "post_dump").ok);
    let cp = d.client.checkpoint("kept").await.unwrap();
    assert_eq!(cp.status, api::CheckpointStatus::Ready);
}

#[tokio::test]
async fn a_members_hook_runs_as_the_member() {
    use ckptd_tests::members::Fixture;
    let f = Fixture::new().await;
    let t = f.alice_counter("hooked", "", &[]);
    let (code, answer) = f.alice(
        "POST",
        "/v1/checkpoints?wait=true",
        Some(serde_json::json!({
            "target": {"kind": "process", "pid": t.pid},
            "leave_running": true,
            "hooks": {"pre_dump": ["sh", "-c", "id -u; id -G; echo $CKPTD_PID"]}
        })),
    );
    assert_eq!(code, 201, "{answer}");
    let hook = &answer["job"]["result"]["hooks"][0];
    assert_eq!(hook["ok"], true, "{answer}");
    assert_eq!(
        hook["output"].as_str().unwrap(),
        format!("{}\n{}\n{}\n", f.alice_uid, f.alice_gid, t.pid),
        "{answer}"
    );
    // Hooks are checked before any job: an empty command, a signal no one can catch.
    for hooks in [
        serde_json::json!({"pre_dump": []}),
        serde_json::json!({"post_restore_signal": "KILL"}),
        serde_json::json!({"pre_dump": ["true"], "timeout_seconds": 0}),
    ] {
        let (code, answer) = f.alice(
            "POST",
            "/v1/checkpoints",
            Some(serde_json::json!({
                "target": {"kind": "process", "pid": t.pid},
                "hooks": hooks
            })),
        );
        assert_eq!(code, 400, "{answer}");
    }
}

#[tokio::test]
async fn a_container_hook_runs_inside_the_container() {
    let d = Daemon::start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = Bundle::busybox(&dir.path().join("b"), CONTAINER_LOOPER, |_| {});
    let id = format!("ckptdtest-hook-{}", std::process::id());
    let _c = Container::run(&b, &id, ContainerStdio::Null);
    let job = d
        .client
        .create_checkpoint(
            &api::CreateCheckpoint {
                target: Some(api::Target::Container {
                    id: id.clone(),
                    runtime: api::Runtime::Runc,
                    root: None,
                    bundle: None,
                    namespace: None,
                }),
                leave_running: true,
                hooks: Some(api::Hooks {
                    pre_dump: Some(vec![
                        "sh".into(),
                        "-c".into(),
                        "cat /proc/sys/kernel/hostname; echo flushed > /flushed".into(),
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let job = d.wait_ended(&job.job.id.to_string()).await;
    let hook = run(&job, "pre_dump");
    assert!(hook.ok, "{hook:?}");
    // The container's host name (runc spec's), and a file in its root filesystem.
    assert_eq!(hook.output.trim(), "runc", "{hook:?}");
    assert_eq!(
        std::fs::read_to_string(b.dir.join("rootfs/flushed")).unwrap(),
        "flushed\n"
    );
}

/// A schedule's hooks run at each of its runs (here one run asked for now, the CLI's flags).
#[tokio::test]
async fn a_schedules_hooks_run_at_each_run() {
    let d = Daemon::start().await;
    let t = Target::looper(d.dir.path());
    let out = d.ckpt(&[
        "schedule",
        "add",
        "hourly",
        &t.pid.to_string(),
        "--cron",
        "0 * * * *",
        "--keep-last",
        "2",
        "--pre-dump",
        "echo run by $CKPTD_HOOK for $CKPTD_CHECKPOINT",
        "--post-dump",
        "echo done",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = d.client.schedule("hourly").await.unwrap();
    let hooks = s.options.hooks.expect("the schedule's hooks");
    assert_eq!(hooks.post_dump.unwrap(), ["sh", "-c", "echo done"]);
    let ran = d.client.run_schedule("hourly", true).await.unwrap();
    let job = d.wait_ended(&ran.job.id.to_string()).await;
    assert_eq!(job.state, api::JobState::Succeeded, "{job:?}");
    let pre = run(&job, "pre_dump");
    assert_eq!(
        pre.output.trim(),
        format!("run by pre_dump for {}", ran.checkpoint.name)
    );
    assert_eq!(run(&job, "post_dump").output.trim(), "done");
    t.assert_contiguous();
}
