//! End to end: the real ckptd binary, over its real socket, checkpointing and restoring real
//! process trees with the real CRIU.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ckptd_api::{
    CheckpointStatus, CreateCheckpoint, JobState, RestoreRequest, Target as ApiTarget,
};
use ckptd_tests::{alive, criu_locks, proc_state, Daemon, Target};
use serde_json::{json, Value};

fn process(pid: i32) -> Option<ApiTarget> {
    Some(ApiTarget::Process { pid })
}

#[tokio::test]
async fn looper_checkpoint_list_restore_delete() {
    let d = Daemon::start().await;
    let mut looper = Target::looper(d.dir.path());
    let pid = looper.pid;

    // Checkpoint: the looper stops and its output stops growing.
    let created = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(process(pid), "looper1"), true)
        .await
        .expect("checkpoint");
    let cp = created.checkpoint;
    assert_eq!(cp.status, CheckpointStatus::Ready, "{cp:?}");
    assert_eq!(created.job.state, JobState::Succeeded);
    assert!(cp.size_bytes > 0);
    assert_eq!(
        cp.criu_version.as_deref().map(|v| v >= "4.2"),
        Some(true),
        "{cp:?}"
    );
    let stats = cp.stats.expect("CRIU statistics recorded");
    assert!(
        stats.frozen_time_us > 0 && stats.pages_written > 0,
        "{stats:?}"
    );
    assert!(cp.completed_at.is_some());
    looper.reap();
    assert!(
        !alive(pid),
        "the looper still runs after a checkpoint without leave_running"
    );
    let stopped_at = looper.lines().len();
    assert!(!looper.is_progressing(Duration::from_millis(500)));
    assert_eq!(looper.lines().len(), stopped_at);

    // Images: a 0700 directory with CRIU's images and its log; no partial directory left.
    let dir = std::path::Path::new(&cp.dir);
    assert!(dir.starts_with(&d.state_dir), "{}", cp.dir);
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(dir.join("pstree.img").exists() && dir.join("dump.log").exists());
    assert!(!std::path::Path::new(&format!("{}.partial", cp.dir)).exists());

    // List.
    let list = d
        .client
        .list_checkpoints(&ckptd_tests::q(format!("pid={pid}")))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0], cp);
    assert_eq!(d.client.checkpoint("looper1").await.unwrap(), cp);
    assert_eq!(d.client.checkpoint(&cp.id.to_string()).await.unwrap(), cp);

    // Restore in place: same pid, output continues exactly where it stopped.
    let job = d
        .client
        .restore("looper1", &RestoreRequest::default(), true)
        .await
        .expect("restore");
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.result.as_ref().and_then(|r| r.pid), Some(pid));
    looper.wait_for_lines(stopped_at + 5);
    let n = looper.assert_contiguous();
    assert!(n >= stopped_at + 5);
    assert!(alive(pid));

    // The log route has the dump log, then the restore's.
    let log = d.client.checkpoint_log("looper1").await.unwrap();
    let dump_at = log.find("dump.log ===").expect("dump log");
    let restore_at = log
        .find(&format!("restore-{}.log ===", job.id))
        .expect("restore log");
    assert!(dump_at < restore_at);

    // Delete: images gone, then 404.
    d.client.delete_checkpoint("looper1").await.expect("delete");
    assert!(!dir.exists(), "images still on disk after delete");
    let err = d.client.checkpoint("looper1").await.unwrap_err();
    assert_eq!(err.api_error().unwrap().0.as_u16(), 404);
    let err = d.client.delete_checkpoint("looper1").await.unwrap_err();
    assert_eq!(err.api_error().unwrap().0.as_u16(), 404);
}

#[tokio::test]
async fn leave_running_keeps_the_process_running() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "lr", 0, false);
    let created = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                target: process(t.pid),
                leave_running: true,
                ..Default::default()
            },
            true,
        )
        .await
        .expect("checkpoint");
    assert_eq!(created.checkpoint.status, CheckpointStatus::Ready);
    assert!(created.checkpoint.options.leave_running);
    assert!(
        created.checkpoint.name.starts_with("python3-"),
        "{}",
        created.checkpoint.name
    );
    assert!(alive(t.pid));
    assert_ne!(proc_state(t.pid), Some('T'));
    assert!(
        t.is_progressing(Duration::from_secs(2)),
        "output stopped after a leave_running checkpoint"
    );
}

#[tokio::test]
async fn async_jobs_long_poll_labels_and_filters() {
    let d = Daemon::start().await;
    let a = Target::python(d.dir.path(), "a", 0, false);
    let b = Target::python(d.dir.path(), "b", 0, false);
    let mut ids = Vec::new();
    for (t, app, name) in [(&a, "web", "a1"), (&b, "db", "b1"), (&a, "web", "a2")] {
        let resp = d
            .client
            .send_json(
                hyper::Method::POST,
                "/v1/checkpoints",
                &json!({"target": {"kind": "process", "pid": t.pid}, "name": name,
                        "leave_running": true, "labels": {"app": app, "tier": "x"}}),
            )
            .await
            .unwrap();
        assert_eq!(resp.status.as_u16(), 202, "{}", resp.text());
        let body: Value = resp.json().unwrap();
        let job_id = body["job"]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            resp.location.as_deref(),
            Some(format!("/v1/jobs/{job_id}").as_str())
        );
        assert!(matches!(
            body["job"]["state"].as_str(),
            Some("queued" | "running" | "succeeded")
        ));
        // Long-poll until the job ends.
        let job = d
            .client
            .job(&job_id, Some(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        ids.push(job.checkpoint_id);
    }
    let names = |q: &str| {
        let c = d.client.clone();
        let q = q.to_owned();
        async move {
            c.list_checkpoints(&ckptd_tests::q(&q))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("").await, ["a2", "b1", "a1"], "newest first");
    assert_eq!(names("label=app=web").await, ["a2", "a1"]);
    assert_eq!(names("label=app=web&label=tier=x").await, ["a2", "a1"]);
    assert_eq!(names("label=app=nope").await, Vec::<String>::new());
    assert_eq!(names(&format!("pid={}", b.pid)).await, ["b1"]);
    assert_eq!(names("status=ready").await.len(), 3);
    assert_eq!(names("status=failed").await.len(), 0);
    // Paging with the cursor.
    let p1 = d
        .client
        .list_checkpoints(&ckptd_tests::q("limit=2"))
        .await
        .unwrap();
    assert_eq!(p1.items.len(), 2);
    let p2 = d
        .client
        .list_checkpoints(&ckptd_tests::q(format!(
            "limit=2&after={}",
            p1.next.unwrap()
        )))
        .await
        .unwrap();
    assert_eq!(
        p2.items.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["a1"]
    );
    assert!(p2.next.is_none());
    // Jobs list and filters.
    let jobs = d
        .client
        .jobs(&ckptd_tests::q("kind=checkpoint&state=succeeded"))
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 3);
    assert!(d
        .client
        .jobs(&ckptd_tests::q("kind=restore"))
        .await
        .unwrap()
        .items
        .is_empty());
    let labels = &d.client.checkpoint("b1").await.unwrap().labels;
    assert_eq!(
        labels,
        &BTreeMap::from([
            ("app".to_owned(), "db".to_owned()),
            ("tier".to_owned(), "x".to_owned())
        ])
    );
}

#[tokio::test]
async fn catalog_is_identical_after_a_daemon_restart() {
    let mut d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "r", 0, false);
    for name in ["r1", "r2"] {
        d.client
            .create_checkpoint(
                &CreateCheckpoint {
                    leave_running: true,
                    labels: BTreeMap::from([("k".into(), name.into())]),
                    ..ckptd_tests::checkpoint(process(t.pid), name)
                },
                true,
            )
            .await
            .expect("checkpoint");
    }
    // And a failed one: its error must survive too.
    let tcp = Target::python(d.dir.path(), "rt", 0, true);
    let e = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(process(tcp.pid), "r3"), true)
        .await
        .unwrap_err();
    let (_, info) = e.api_error().unwrap();
    assert_eq!(info.code, "criu_failed", "{e}");
    // The command can be run by hand: it names the checkpoint's folder, not a descriptor.
    let command = info.details["command"].as_str().unwrap();
    let cp = d.client.checkpoint("r3").await.unwrap();
    assert!(!command.contains("/proc/"), "{command}");
    assert!(command.contains(&format!("-D {}", cp.dir)), "{command}");
    let before = d.client.get("/v1/checkpoints").await.unwrap().text();
    let jobs_before = d.client.get("/v1/jobs").await.unwrap().text();
    let one_before = d.client.get("/v1/checkpoints/r3").await.unwrap().text();
    d.restart().await;
    assert_eq!(
        d.client.get("/v1/checkpoints").await.unwrap().text(),
        before
    );
    assert_eq!(d.client.get("/v1/jobs").await.unwrap().text(), jobs_before);
    assert_eq!(
        d.client.get("/v1/checkpoints/r3").await.unwrap().text(),
        one_before
    );
    let v: Value = serde_json::from_str(&before).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn tcp_connection_fails_with_hint_then_succeeds_with_tcp_established() {
    let d = Daemon::start().await;
    let mut t = Target::python(d.dir.path(), "tcp", 0, true);
    let err = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(process(t.pid), "tcp1"), true)
        .await
        .unwrap_err();
    let (status, e) = err.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 500, "{e:?}");
    assert_eq!(e.code, "criu_failed");
    assert!(e.message.contains("Connected TCP socket"), "{}", e.message);
    assert!(
        e.log_tail()
            .iter()
            .any(|l| l.contains("Connected TCP socket")),
        "{:?}",
        e.log_tail()
    );
    assert!(
        !e.log_tail().iter().any(|l| l.contains("RLIMIT_NOFILE")),
        "harmless noise quoted: {:?}",
        e.log_tail()
    );
    assert!(
        e.hint().unwrap().contains("tcp_established"),
        "{:?}",
        e.hint()
    );
    // The process lives on, not frozen, not stopped.
    assert!(alive(t.pid));
    assert_ne!(proc_state(t.pid), Some('T'));
    assert!(
        t.is_progressing(Duration::from_secs(2)),
        "target frozen after a failed dump"
    );
    // The failed checkpoint is recorded with its error and log; its images are gone.
    let cp = d.client.checkpoint("tcp1").await.unwrap();
    assert_eq!(cp.status, CheckpointStatus::Failed);
    assert_eq!(cp.error.as_ref().unwrap().code, "criu_failed");
    let files: Vec<String> = std::fs::read_dir(&cp.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["dump.log"]);
    assert!(d
        .client
        .checkpoint_log("tcp1")
        .await
        .unwrap()
        .contains("Connected TCP socket"));
    // A failed checkpoint cannot be restored.
    let err = d
        .client
        .restore("tcp1", &RestoreRequest::default(), true)
        .await
        .unwrap_err();
    assert_eq!(err.api_error().unwrap().0.as_u16(), 409);

    // With tcp_established it succeeds, and the restored process's connection works.
    let cp = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                tcp_established: true,
                ..ckptd_tests::checkpoint(process(t.pid), "tcp2")
            },
            true,
        )
        .await
        .expect("checkpoint with tcp_established")
        .checkpoint;
    assert!(cp.options.tcp_established);
    t.reap();
    let stopped_at = t.lines().len();
    restores_in_place(&d, "tcp2", &t, stopped_at + 5).await;
}

#[tokio::test]
async fn checkpoint_dir_puts_images_where_asked_and_restores_from_there() {
    let d = Daemon::start().await;
    let custom = tempfile::tempdir().unwrap();
    let mut t = Target::python(d.dir.path(), "cd", 0, false);
    let cp = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                checkpoint_dir: Some(custom.path().display().to_string()),
                ..ckptd_tests::checkpoint(process(t.pid), "custom1")
            },
            true,
        )
        .await
        .expect("checkpoint")
        .checkpoint;
    assert_eq!(std::path::Path::new(&cp.dir), custom.path().join("custom1"));
    assert!(custom.path().join("custom1/pstree.img").exists());
    assert_eq!(
        d.client
            .list_checkpoints(&ckptd_tests::q(""))
            .await
            .unwrap()
            .items[0]
            .dir,
        cp.dir
    );
    // The same name again: its folder exists, so 409, and nothing new is recorded.
    let other = Target::python(d.dir.path(), "cd2", 0, false);
    let err = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                checkpoint_dir: Some(custom.path().display().to_string()),
                ..ckptd_tests::checkpoint(process(other.pid), "custom1")
            },
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.api_error().unwrap().0.as_u16(), 409, "{err}");
    assert_eq!(
        d.client
            .list_checkpoints(&ckptd_tests::q(""))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    t.reap();
    let stopped_at = t.lines().len();
    restores_in_place(&d, "custom1", &t, stopped_at + 3).await;
    d.client.delete_checkpoint("custom1").await.unwrap();
    assert!(!custom.path().join("custom1").exists());
    assert!(
        custom.path().exists(),
        "delete removed more than the checkpoint's own folder"
    );
}

#[tokio::test]
async fn a_busy_target_gets_409_and_sigterm_lets_the_running_dump_finish() {
    let mut d = Daemon::start().await;
    // 512 MiB: the dump takes long enough for the second request to overlap it.
    let t = Target::python(d.dir.path(), "big", 512, false);
    let first = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(process(t.pid), "big1")
            },
            false,
        )
        .await
        .expect("first checkpoint accepted");
    let err = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(process(t.pid), "big2")
            },
            false,
        )
        .await
        .unwrap_err();
    let (status, e) = err.api_error().unwrap();
    assert_eq!(status.as_u16(), 409, "{e:?}");
    assert!(e.message.contains("one job per target"), "{}", e.message);
    assert!(
        d.client.checkpoint("big2").await.is_err(),
        "a refused request left a row"
    );

    // SIGTERM while the dump runs: the daemon lets it finish, records it, removes its socket.
    // Running, not only taken by a worker: a job still `queued` when SIGTERM comes is ended as
    // "ckptd shut down before the job started", as it should be (seen once on a loaded machine).
    d.wait_job(&first.job.id.to_string(), |j| j.state != JobState::Queued)
        .await;
    let status = d.stop().await;
    assert!(status.success());
    assert!(
        d.log().contains("waiting for running jobs"),
        "SIGTERM did not find the dump running:\n{}",
        d.log()
    );
    assert!(!d.socket.exists(), "socket left behind after SIGTERM");
    d.restart_after_stop().await;
    let job = d.client.job(&first.job.id.to_string(), None).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}\n{}", d.log());
    assert_eq!(
        d.client.checkpoint("big1").await.unwrap().status,
        CheckpointStatus::Ready
    );
    assert!(alive(t.pid) && t.is_progressing(Duration::from_secs(2)));
}

/// Cancel and timeout stop CRIU mid-dump of a 4 GiB process and leave it running, unfrozen.
/// A cancel sent the moment a dump is queued is taken, whatever the job is doing then: queued,
/// just started or dumping. It was refused with "just starting" when it fell between the job's
/// start in the catalog and the registration of its stop (found by the registry tests).
#[tokio::test]
async fn a_cancel_right_after_the_request_is_always_taken() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "quick", 0, false);
    for i in 0..10 {
        let id = dump_leaving_running(&d, &t, &format!("q{i}")).await;
        d.client.cancel_job(&id).await.unwrap();
        assert_ended_leaving_it_running(&d, &id, &t).await;
    }
}

/// Cancels sent one after another from a running dump's first to its end: each is taken,
/// until one says the job has ended. None falls where the job is neither: as its end was
/// being recorded, a cancel was refused as "just starting".
#[tokio::test]
async fn cancels_until_a_dump_ends_are_taken_or_told_it_ended() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "some", 64, false);
    for i in 0..5 {
        let id = dump_leaving_running(&d, &t, &format!("e{i}")).await;
        d.wait_job(&id, |j| j.state != JobState::Queued).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let err = loop {
            if let Err(e) = d.client.cancel_job(&id).await {
                break e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} took cancels for 2 minutes and did not end"
            );
        };
        let (status, err) = err.api_error().expect("an API error");
        assert_eq!(status.as_u16(), 409, "{err:?}");
        assert!(err.message.contains("has already ended"), "{err:?}");
        assert_ended_leaving_it_running(&d, &id, &t).await;
    }
}

/// A `leave_running` dump of `t` named `name`, not waited for: its job's id.
async fn dump_leaving_running(d: &Daemon, t: &Target, name: &str) -> String {
    let req = CreateCheckpoint {
        leave_running: true,
        ..ckptd_tests::checkpoint(process(t.pid), name)
    };
    let out = d.client.create_checkpoint(&req, false).await.unwrap();
    out.job.id.to_string()
}

/// Job `id` ends cancelled or done, and `t` runs on, neither stopped nor killed.
async fn assert_ended_leaving_it_running(d: &Daemon, id: &str, t: &Target) {
    let job = d.wait_ended(id).await;
    assert!(
        matches!(job.state, JobState::Cancelled | JobState::Succeeded),
        "{job:?}"
    );
    assert!(alive(t.pid));
    assert_ne!(proc_state(t.pid), Some('T'));
}

#[tokio::test]
async fn cancel_and_timeout_of_a_running_dump_leave_the_process_running() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("ckptd.toml");
    std::fs::write(&toml, "job_timeout_secs = 1\n").unwrap();
    let d = Daemon::start_with(&["--config", toml.to_str().unwrap()]).await;
    let t = Target::python(d.dir.path(), "huge", 4096, false);

    // Cancel while CRIU runs.
    let first = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(process(t.pid), "c1"), false)
        .await
        .unwrap();
    let id = first.job.id.to_string();
    d.wait_job(&id, |j| j.state == JobState::Running).await;
    let resp = d
        .client
        .request(hyper::Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(resp.status.as_u16(), 202, "{}", resp.text());
    let job = d
        .client
        .job(&id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert_eq!(job.error.as_ref().unwrap().code, "cancelled");
    assert!(alive(t.pid));
    assert_ne!(proc_state(t.pid), Some('T'));
    assert!(
        t.is_progressing(Duration::from_secs(3)),
        "the target is frozen after a cancel"
    );
    let cp = d.client.checkpoint("c1").await.unwrap();
    assert_eq!(cp.status, CheckpointStatus::Failed);
    let files: Vec<String> = std::fs::read_dir(&cp.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().all(|f| f == "dump.log"),
        "images left after cancel: {files:?}"
    );

    // A dump of 4 GiB takes longer than the 1 s job timeout: stopped, the process carries on.
    let err = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(process(t.pid), "c2"), true)
        .await
        .unwrap_err();
    let (status, e) = err.api_error().unwrap();
    assert_eq!(status.as_u16(), 504, "{e:?}");
    assert_eq!(e.code, "timeout");
    assert!(alive(t.pid));
    assert_ne!(proc_state(t.pid), Some('T'));
    assert!(
        t.is_progressing(Duration::from_secs(3)),
        "the target is frozen after a timeout"
    );
    assert_eq!(
        d.client.checkpoint("c2").await.unwrap().status,
        CheckpointStatus::Failed
    );
}

/// A small tmpfs as checkpoint_dir: a target too big for it is refused up front with 507 and no
/// row; dumps that fill it up mid-way fail cleanly; nothing half-written is ever `ready`.
#[tokio::test]
async fn a_small_filesystem_gets_507_up_front_or_a_clean_failure() {
    let d = Daemon::start().await;
    let mnt = d.dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96m,mode=0700", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _umount = Umount(mnt.clone());
    let dir = Some(mnt.display().to_string());

    // 256 MiB of memory cannot fit in 96 MiB: 507 before anything is created.
    let big = Target::python(d.dir.path(), "big", 256, false);
    let err = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                target: process(big.pid),
                checkpoint_dir: dir.clone(),
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap_err();
    let (status, e) = err.api_error().unwrap();
    assert_eq!(status.as_u16(), 507, "{e:?}");
    assert_eq!(e.code, "insufficient_storage");
    assert!(e.message.contains("MiB are free"), "{}", e.message);
    assert!(d
        .client
        .list_checkpoints(&ckptd_tests::q(""))
        .await
        .unwrap()
        .items
        .is_empty());

    // Two 56 MiB targets each fit alone but not together: dumped at once, the filesystem fills.
    let a = Target::python(d.dir.path(), "a", 56, false);
    let b = Target::python(d.dir.path(), "b", 56, false);
    let mut jobs = Vec::new();
    for (t, name) in [(&a, "fa"), (&b, "fb")] {
        let r = d
            .client
            .create_checkpoint(
                &CreateCheckpoint {
                    leave_running: true,
                    checkpoint_dir: dir.clone(),
                    ..ckptd_tests::checkpoint(process(t.pid), name)
                },
                false,
            )
            .await
            .expect("each fits alone");
        jobs.push(r.job.id.to_string());
    }
    let mut failed = 0;
    for (id, t) in jobs.iter().zip([&a, &b]) {
        let job = d
            .client
            .job(id, Some(Duration::from_secs(120)))
            .await
            .unwrap();
        let cp = d
            .client
            .checkpoint(&job.checkpoint_id.to_string())
            .await
            .unwrap();
        match job.state {
            JobState::Succeeded => {
                assert_eq!(cp.status, CheckpointStatus::Ready);
                assert!(std::path::Path::new(&cp.dir).join("pstree.img").exists());
            }
            JobState::Failed => {
                failed += 1;
                let e = job.error.unwrap();
                assert_eq!(e.code, "insufficient_storage", "{e:?}");
                assert_eq!(cp.status, CheckpointStatus::Failed);
                let files: Vec<String> = std::fs::read_dir(&cp.dir)
                    .map(|r| {
                        r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                assert!(
                    files.iter().all(|f| f == "dump.log"),
                    "half-written images left: {files:?}"
                );
            }
            s => panic!("job ended {s:?}"),
        }
        assert!(alive(t.pid) && t.is_progressing(Duration::from_secs(2)));
    }
    assert!(failed >= 1, "both dumps fit in 96 MiB?");
    let partials: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".partial")
        })
        .collect();
    assert!(partials.is_empty(), "partial directories left");
}

/// A restore that CRIU holds after making the tree (`restore_held`).
struct Held {
    d: Daemon,
    /// The process, checkpointed (and so ended) before the restore.
    t: Target,
    /// The lines it had written when it was checkpointed.
    stopped_at: usize,
    job: ckptd_api::Job,
    /// The CRIU that holds the restore.
    criu: i32,
}

/// A daemon whose CRIU runs `pause`'s script, a process of `mib` MiB checkpointed as `name`,
/// and a restore of it that CRIU holds where the tree is made and not yet resumed.
async fn restore_held(pause: &ckptd_tests::Pause, name: &str, mib: usize) -> Held {
    let d = paused_daemon(pause).await;
    let mut t = Target::python(d.dir.path(), name, mib, false);
    d.client
        .create_checkpoint(&ckptd_tests::checkpoint(process(t.pid), name), true)
        .await
        .expect("checkpoint");
    t.reap();
    let stopped_at = t.lines().len();
    pause.arm("post-restore");
    let job = d
        .client
        .restore(name, &RestoreRequest::default(), false)
        .await
        .unwrap();
    let criu = pause.reached("post-restore");
    Held {
        d,
        t,
        stopped_at,
        job,
        criu,
    }
}

/// A daemon whose CRIU runs `pause`'s action script.
async fn paused_daemon(pause: &ckptd_tests::Pause) -> Daemon {
    let cfg = d_config(&pause.config_line());
    Daemon::start_with(&["--config", cfg.to_str().unwrap()]).await
}

/// A dump with tcp_established takes each connection in repair mode and locks it (CRIU's
/// iptables rules) for the kill that ends the tree once the images are durable. Cancelled
/// where CRIU waits after writing the images (CRIU then stopped), the process is let run, and
/// so are its connections: out of repair mode, unlocked (before, its next read failed with
/// EPERM and it died).
#[tokio::test]
async fn a_cancelled_dump_gives_the_process_its_connections_back() {
    let pause = ckptd_tests::Pause::new();
    let d = paused_daemon(&pause).await;
    let t = Target::python(d.dir.path(), "tcp-cancel", 0, true);
    pause.arm("post-dump");
    let created = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                tcp_established: true,
                ..ckptd_tests::checkpoint(process(t.pid), "cut")
            },
            false,
        )
        .await
        .unwrap();
    pause.reached("post-dump");
    let ports = ports_of(t.pid);
    assert_eq!(ports.len(), 2, "the connection's two ends: {ports:?}");
    assert!(
        criu_locks(&ports).len() >= 2,
        "CRIU locked the connection: {:?}",
        criu_locks(&ports)
    );
    let id = created.job.id.to_string();
    d.client.cancel_job(&id).await.unwrap();
    let job = d.wait_ended(&id).await;
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert!(
        t.is_progressing(Duration::from_secs(3)),
        "the process stopped talking: {:?} {}",
        proc_state(t.pid),
        ckptd_tests::tail(&t.lines().join("\n"), 5)
    );
    assert!(alive(t.pid) && proc_state(t.pid) != Some('T'));
    t.assert_contiguous();
    assert_eq!(criu_locks(&ports), Vec::<String>::new());
}

/// The local ports of the TCP sockets process `pid` holds.
fn ports_of(pid: i32) -> Vec<String> {
    let out = std::process::Command::new("ss")
        .args(["-tnpH"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .rsplit_once(':')
                .map(|(_, p)| p.to_owned())
        })
        .collect()
}

/// SIGKILL of the daemon while CRIU finishes a dump of a 1 GiB process (held where the images
/// are written): after a restart the dump that CRIU finished is published, durable, and the
/// process ended as a checkpoint without leave_running ends it; it restores. One CRIU failed
/// at that moment leaves the process running, unfrozen.
#[tokio::test]
async fn kill_9_of_the_daemon_mid_dump_never_loses_the_process() {
    let pause = ckptd_tests::Pause::new();
    let mut d = paused_daemon(&pause).await;
    let mut t = Target::python(d.dir.path(), "k9dump", 1024, false);
    for (name, finishes) in [("k9-fails", false), ("k9", true)] {
        pause.arm("post-dump");
        let created = d
            .client
            .create_checkpoint(&ckptd_tests::checkpoint(process(t.pid), name), false)
            .await
            .unwrap();
        pause.reached("post-dump");
        // Its progress: what CRIU wrote of what the daemon estimated at admission (1 GiB of
        // touched memory, and the interpreter's).
        let running = d
            .client
            .job(&created.job.id.to_string(), None)
            .await
            .unwrap();
        let p = running
            .progress
            .expect("a running checkpoint job's progress");
        let estimated = p.bytes_estimated.expect("the admission's estimate");
        assert!(estimated >= 1 << 30 && p.bytes_written >= 1 << 30, "{p:?}");
        assert!(p.bytes_written < estimated + (estimated >> 3), "{p:?}");
        d.crash(|| pause.release(finishes)).await;

        let job = d
            .client
            .job(&created.job.id.to_string(), None)
            .await
            .unwrap();
        let cp = d.client.checkpoint(name).await.unwrap();
        assert!(
            !std::path::Path::new(&format!("{}.partial", cp.dir)).exists(),
            "partial images left"
        );
        if !finishes {
            assert_eq!(job.state, JobState::Failed, "{}", d.log());
            assert_eq!(cp.status, CheckpointStatus::Failed);
            assert!(alive(t.pid));
            assert_ne!(proc_state(t.pid), Some('T'));
            assert!(
                t.is_progressing(Duration::from_secs(3)),
                "the process is frozen"
            );
            continue;
        }
        assert_eq!(job.state, JobState::Succeeded, "{}", d.log());
        assert_eq!(cp.status, CheckpointStatus::Ready);
        assert!(std::path::Path::new(&cp.dir).join("pstree.img").exists());
        assert!(cp.size_bytes > 1 << 30, "size {}", cp.size_bytes);
        t.reap();
        let stopped_at = t.lines().len();
        restores_in_place(&d, name, &t, stopped_at + 3).await;
    }
}

/// SIGKILL of the daemon while CRIU finishes a restore of a 1 GiB process (held after making
/// the tree): after a restart the restore that CRIU completed is recorded, with its pid, and
/// the process runs on from where it was.
#[tokio::test]
async fn kill_9_of_the_daemon_mid_restore_never_loses_the_process() {
    let pause = ckptd_tests::Pause::new();
    let Held {
        mut d,
        t,
        stopped_at,
        job,
        ..
    } = restore_held(&pause, "k9r", 1024).await;
    d.crash(|| pause.release(true)).await;

    let job = d.client.job(&job.id.to_string(), None).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}\n{}", d.log());
    assert_eq!(job.result.unwrap().pid, Some(t.pid));
    t.wait_for_lines(stopped_at + 3);
    t.assert_contiguous();
    assert_eq!(
        d.client.checkpoint("k9r").await.unwrap().status,
        CheckpointStatus::Ready
    );
}

/// SIGKILL of the daemon *and* of its CRIU (as a machine-wide kill would) while CRIU holds a
/// 1 GiB process whose images it has written: the restart drops the images, and the process
/// runs on, unfrozen.
#[tokio::test]
async fn kill_9_of_the_daemon_and_criu_mid_dump_resumes_the_process() {
    let pause = ckptd_tests::Pause::new();
    let mut d = paused_daemon(&pause).await;
    let t = Target::python(d.dir.path(), "k9both", 1024, false);
    pause.arm("post-dump");
    let created = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(process(t.pid), "k9b"), false)
        .await
        .unwrap();
    let criu = pause.reached("post-dump");
    d.crash(|| {
        ckptd_tests::signal(criu, libc::SIGKILL);
        pause.release(true);
    })
    .await;

    let job = d
        .client
        .job(&created.job.id.to_string(), None)
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert!(job.error.unwrap().message.contains("restarted"));
    let cp = d.client.checkpoint("k9b").await.unwrap();
    assert_eq!(cp.status, CheckpointStatus::Failed);
    assert!(
        !std::path::Path::new(&format!("{}.partial", cp.dir)).exists(),
        "partial images left"
    );
    assert!(alive(t.pid));
    assert_ne!(proc_state(t.pid), Some('T'));
    assert!(
        t.is_progressing(Duration::from_secs(3)),
        "the process is frozen after the restart"
    );
}

/// Images whose directory was replaced are not restored (a restore runs their code).
#[tokio::test]
async fn a_tampered_image_directory_is_not_restored() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "tamper", 0, false);
    let cp = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(process(t.pid), "tam")
            },
            true,
        )
        .await
        .unwrap()
        .checkpoint;
    // Replace the directory with one an unprivileged user owns (the images copied in).
    let dir = std::path::Path::new(&cp.dir);
    let moved = d.dir.path().join("moved");
    std::fs::rename(dir, &moved).unwrap();
    std::fs::create_dir(dir).unwrap();
    for e in std::fs::read_dir(&moved).unwrap().flatten() {
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    let err = d
        .client
        .restore("tam", &RestoreRequest::default(), false)
        .await
        .unwrap_err();
    let (status, e) = err.api_error().unwrap();
    assert_eq!(status.as_u16(), 403, "{e:?}");
    assert!(e.message.contains("tampered"), "{}", e.message);
    assert!(d
        .client
        .jobs(&ckptd_tests::q("kind=restore"))
        .await
        .unwrap()
        .items
        .is_empty());
}

/// Different targets are dumped in parallel up to the worker count, and the API answers while
/// a long dump runs.
#[tokio::test]
async fn different_targets_dump_in_parallel_and_the_api_answers_meanwhile() {
    let d = Daemon::start_with(&["--workers", "2"]).await;
    let a = Target::python(d.dir.path(), "pa", 2048, false);
    let b = Target::python(d.dir.path(), "pb", 2048, false);
    let mut ids = Vec::new();
    for t in [&a, &b] {
        let r = d
            .client
            .create_checkpoint(
                &CreateCheckpoint {
                    target: process(t.pid),
                    leave_running: true,
                    ..Default::default()
                },
                false,
            )
            .await
            .unwrap();
        ids.push(r.job.id.to_string());
    }
    // While the first runs, the API answers (and says it is still running).
    d.wait_job(&ids[0], |j| j.state == JobState::Running).await;
    let health = d.client.health().await.unwrap();
    assert_eq!(health.status, "ok");
    let listed = d
        .client
        .list_checkpoints(&ckptd_tests::q("status=running"))
        .await
        .unwrap();
    assert!(
        !listed.items.is_empty(),
        "the API answered only after the dumps"
    );
    let mut spans = Vec::new();
    for id in &ids {
        let j = d
            .client
            .job(id, Some(Duration::from_secs(120)))
            .await
            .unwrap();
        assert_eq!(j.state, JobState::Succeeded, "{j:?}");
        spans.push((j.started_at.unwrap(), j.finished_at.unwrap()));
    }
    // The two ran at the same time: each started before the other finished.
    assert!(
        spans[0].0 < spans[1].1 && spans[1].0 < spans[0].1,
        "{spans:?}"
    );
}

/// `"lazy": true`: CRIU's lazy pages serve the tree's memory from the images on demand; the tree
/// runs on, its output contiguous, and the page server's log is kept with the restore's.
#[tokio::test]
async fn a_lazy_restore_runs_the_tree_and_serves_its_memory() {
    let d = Daemon::start().await;
    let mut t = Target::python(d.dir.path(), "lazy", 128, false);
    let cp = d
        .client
        .create_checkpoint(
            &ckptd_tests::checkpoint(Some(ApiTarget::Process { pid: t.pid }), "lazy1"),
            true,
        )
        .await
        .unwrap()
        .checkpoint;
    t.reap();
    let stopped_at = t.lines().len();
    let job = d
        .client
        .restore(
            "lazy1",
            &RestoreRequest {
                lazy: true,
                ..Default::default()
            },
            true,
        )
        .await
        .expect("lazy restore");
    assert_eq!(job.result.unwrap().pid, Some(t.pid));
    assert!(t.is_progressing(Duration::from_secs(3)));
    assert!(t.assert_contiguous() > stopped_at);
    let lazy_log = std::path::Path::new(&cp.dir).join(format!("lazy-restore-{}.log", job.id));
    assert!(lazy_log.is_file(), "the lazy-pages log is kept");
    let logs = d.client.checkpoint_log("lazy1").await.unwrap();
    assert!(logs.contains(&format!("lazy-restore-{}.log", job.id)));
    // The page server has exited (all memory is in) by the time the job ends.
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("lazy-pages -D {}", cp.dir)])
        .output()
        .unwrap();
    assert!(out.stdout.is_empty(), "criu lazy-pages still runs");
}

/// Unnamed checkpoints of processes with the same command, requested at once, are named after
/// the command and the second: the ones that collide get a suffix, none is refused.
#[tokio::test]
async fn concurrent_unnamed_checkpoints_all_get_a_name() {
    let d = Daemon::start().await;
    let targets: Vec<Target> = (0..4)
        .map(|i| Target::python(d.dir.path(), &format!("same{i}"), 0, false))
        .collect();
    let bodies: Vec<Value> = targets
        .iter()
        .map(|t| json!({"target": {"kind": "process", "pid": t.pid}, "leave_running": true}))
        .collect();
    let requests = bodies.iter().map(|b| {
        d.client
            .send_json(hyper::Method::POST, "/v1/checkpoints", b)
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut names = Vec::new();
    for a in answers {
        let a = a.unwrap();
        assert_eq!(a.status.as_u16(), 202, "{}", a.text());
        let v: Value = a.json().unwrap();
        names.push(v["checkpoint"]["name"].as_str().unwrap().to_owned());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("python3-")), "{names:?}");
}

/// A failed checkpoint gives its name up: the retry its error suggests uses the same name. The
/// failed one stays reachable by id, with CRIU's log under its id (in a custom checkpoint_dir
/// too), until keep_failed_secs has passed.
#[tokio::test]
async fn a_failed_checkpoint_gives_its_name_up_and_is_cleaned_up_later() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        "keep_failed_secs = 3\nretention_interval_secs = 1\n",
    )
    .unwrap();
    let d = Daemon::start_with(&["--config", cfg.path().to_str().unwrap()]).await;
    let t = Target::python(d.dir.path(), "web", 0, true);
    let custom = d.dir.path().join("custom");
    std::fs::create_dir(&custom).unwrap();
    let body = |tcp: bool| {
        json!({"target": {"kind": "process", "pid": t.pid}, "name": "web1", "leave_running": true,
               "tcp_established": tcp, "checkpoint_dir": custom})
    };
    let failed = d
        .client
        .send_json(
            hyper::Method::POST,
            "/v1/checkpoints?wait=true",
            &body(false),
        )
        .await
        .unwrap();
    assert_eq!(failed.status.as_u16(), 500, "{}", failed.text());
    let failed: Value = failed.json().unwrap();
    let hint = failed["error"]["details"]["hint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hint.contains("tcp_established"), "{hint}");
    let failed_cp = d
        .client
        .list_checkpoints(&ckptd_tests::q("status=failed"))
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(failed_cp.name, "web1");
    let failed_dir = custom.join(failed_cp.id.to_string());
    assert_eq!(failed_cp.dir, failed_dir.to_str().unwrap());
    assert!(failed_dir.join("dump.log").is_file());
    assert!(!custom.join("web1").exists());

    // The retry, as the hint says, under the same name.
    let ok = d
        .client
        .send_json(
            hyper::Method::POST,
            "/v1/checkpoints?wait=true",
            &body(true),
        )
        .await
        .unwrap();
    assert_eq!(ok.status.as_u16(), 201, "{}", ok.text());
    let by_name = d.client.checkpoint("web1").await.unwrap();
    assert_eq!(by_name.status, CheckpointStatus::Ready);
    assert_eq!(by_name.dir, custom.join("web1").to_str().unwrap());
    let by_id = d
        .client
        .checkpoint(&failed_cp.id.to_string())
        .await
        .unwrap();
    assert_eq!(by_id.status, CheckpointStatus::Failed);
    // A name a ready checkpoint holds is still refused.
    let taken = d
        .client
        .send_json(hyper::Method::POST, "/v1/checkpoints", &body(true))
        .await
        .unwrap();
    assert_eq!(taken.status.as_u16(), 409, "{}", taken.text());

    // keep_failed_secs later, the failed one and its log are gone; the ready one stays.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = d
            .client
            .list_checkpoints(&ckptd_tests::q(""))
            .await
            .unwrap();
        if left.items.len() == 1 {
            assert_eq!(left.items[0].status, CheckpointStatus::Ready);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{left:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!failed_dir.exists(), "the failed checkpoint's log stayed");
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs at {}", at.display());
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Issue 26: a restore whose images' filesystem is full answered 500 `criu_failed` with an empty
/// log tail and a hint naming a log that could not be written. It is 507 `insufficient_storage`,
/// saying where; once there is room, the same checkpoint restores.
#[tokio::test]
async fn a_restore_on_a_full_filesystem_says_so_and_works_once_there_is_room() {
    let d = Daemon::start().await;
    let small = Tmpfs::mount(&d.dir.path().join("small"), "64m");
    let mut t = Target::python(d.dir.path(), "onfull", 0, false);
    d.client
        .create_checkpoint(
            &CreateCheckpoint {
                checkpoint_dir: Some(small.0.display().to_string()),
                ..ckptd_tests::checkpoint(process(t.pid), "onfull")
            },
            true,
        )
        .await
        .expect("checkpoint into the tmpfs");
    t.reap();
    // Fill what is left.
    let fill = small.0.join("fill");
    let filled = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", &format!("of={}", fill.display())])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        !filled.success(),
        "dd ends only when the filesystem is full"
    );
    let e = d
        .client
        .restore("onfull", &RestoreRequest::default(), true)
        .await
        .unwrap_err();
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 507, "{err:?}");
    assert_eq!(err.code, "insufficient_storage", "{err:?}");
    assert!(err.message.contains(small.0.to_str().unwrap()), "{err:?}");
    assert!(err.details.get("advice").is_none(), "{err:?}");
    std::fs::remove_file(&fill).unwrap();
    let job = d
        .client
        .restore("onfull", &RestoreRequest::default(), true)
        .await
        .expect("restore once there is room");
    let pid = job.result.unwrap().pid.unwrap();
    ckptd_tests::wait_until("the restored process counts on", || {
        t.lines().len() > 2 && alive(pid)
    });
    ckptd_tests::signal(pid, 9);
}

/// kill -9 of CRIU in the middle of a restore (its tree made, not yet resumed): the job fails,
/// nothing of the half-made tree is left holding the target's pid, the checkpoint stays ready,
/// and the next restore brings the process back.
#[tokio::test]
async fn kill_9_of_criu_mid_restore_leaves_no_half_restored_tree() {
    let pause = ckptd_tests::Pause::new();
    let Held {
        d,
        t,
        stopped_at,
        job,
        criu,
    } = restore_held(&pause, "halfmade", 16).await;
    assert!(
        alive(t.pid) && proc_state(t.pid) != Some('Z'),
        "the tree is made, waiting to be resumed"
    );
    ckptd_tests::signal(criu, libc::SIGKILL);
    let job = d
        .wait_job(&job.id.to_string(), |j| j.state.is_finished())
        .await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    ckptd_tests::wait_until("the half-made tree to end", || {
        !alive(t.pid) || proc_state(t.pid) == Some('Z')
    });
    assert_eq!(
        d.client.checkpoint("halfmade").await.unwrap().status,
        CheckpointStatus::Ready
    );
    // The cgroup yard the killed CRIU mounted in the checkpoint's folder is taken down.
    let mounts = ckptd_tests::mounts_under(d.dir.path());
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    restores_in_place(&d, "halfmade", &t, stopped_at + 3).await;
    // And the checkpoint deletes whole.
    let dir = d.client.checkpoint("halfmade").await.unwrap().dir;
    d.client.delete_checkpoint("halfmade").await.unwrap();
    assert!(!std::path::Path::new(&dir).exists(), "{dir} is left");
}

/// A checkpoint whose pages image was cut short (a disk that lost the file's end, a copy that
/// stopped) is refused before CRIU sees it, with the file named: CRIU 4.2.1's restore of it
/// never ends (its restorer spins at full CPU on the short read, and CRIU waits for it). Put
/// whole again, the same checkpoint restores.
#[tokio::test]
async fn images_cut_short_are_refused_before_criu_and_restore_once_whole() {
    let d = Daemon::start().await;
    let mut t = Target::python(d.dir.path(), "cut", 8, false);
    t.wait_for_lines(3);
    let cp = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(process(t.pid), "cut"), true)
        .await
        .unwrap()
        .checkpoint;
    t.reap();
    let stopped_at = t.lines().len();
    let dir = std::path::Path::new(&cp.dir);
    let pages = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("pages-") && n.ends_with(".img"))
        .expect("a pages image");
    let whole = std::fs::read(dir.join(&pages)).unwrap();
    assert!(whole.len() > 8 << 20, "{pages}: {} bytes", whole.len());
    for cut in [0, whole.len() / 2, whole.len() - 4096] {
        std::fs::write(dir.join(&pages), &whole[..cut]).unwrap();
        let job = d
            .client
            .restore("cut", &RestoreRequest::default(), false)
            .await
            .unwrap();
        let job = d.wait_ended(&job.id.to_string()).await;
        assert_eq!(job.state, JobState::Failed, "cut to {cut}: {job:?}");
        let e = job.error.unwrap();
        assert_eq!(e.code, "conflict", "cut to {cut}: {e:?}");
        for said in [
            "checkpoint cut cannot be restored: its images are damaged",
            &format!("{}/{pages}", cp.dir),
            &format!("holds {cut} bytes"),
        ] {
            assert!(e.message.contains(said), "cut to {cut}: {said:?} in {e:?}");
        }
        assert!(
            !alive(t.pid) || proc_state(t.pid) == Some('Z'),
            "cut to {cut}: a task at the checkpoint's pid"
        );
        assert_eq!(
            d.client.checkpoint("cut").await.unwrap().status,
            CheckpointStatus::Ready
        );
    }
    std::fs::write(dir.join(&pages), &whole).unwrap();
    restores_in_place(&d, "cut", &t, stopped_at + 3).await;
}

/// Restores checkpoint `name` of process `t` in place (waiting): it comes back at its own pid and
/// writes on from where it was, past line `lines`, without a gap.
async fn restores_in_place(d: &Daemon, name: &str, t: &Target, lines: usize) {
    let job = d
        .client
        .restore(name, &RestoreRequest::default(), true)
        .await
        .unwrap_or_else(|e| panic!("restore {name}: {e}"));
    assert_eq!(job.result.unwrap().pid, Some(t.pid));
    t.wait_for_lines(lines);
    t.assert_contiguous();
}

/// A daemon configuration file holding `text` (kept for restarts).
fn d_config(text: &str) -> std::path::PathBuf {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), text).unwrap();
    cfg.keep().unwrap().1
}

/// A CRIU that outlived a crashed daemon and still runs when the restart's wait for it ends
/// (`job_timeout_secs` bounds it) is ended, not left to finish a dump no daemon would release:
/// the job fails, the process runs on, unfrozen, and nothing of that CRIU is left.
#[tokio::test]
async fn a_criu_still_running_after_the_restart_s_wait_is_ended_and_the_target_runs() {
    let pause = ckptd_tests::Pause::new();
    let cfg = d_config(&format!("job_timeout_secs = 3\n{}", pause.config_line()));
    let mut d = Daemon::start_with(&["--config", cfg.to_str().unwrap()]).await;
    let t = Target::python(d.dir.path(), "outlived", 16, false);
    pause.arm("post-dump");
    let created = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(process(t.pid), "outlived"), false)
        .await
        .unwrap();
    let criu = pause.reached("post-dump");
    // CRIU stays held: the restart waits for it, then ends it.
    d.crash(|| {}).await;
    let job = d
        .client
        .job(&created.job.id.to_string(), None)
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    ckptd_tests::wait_until("the held CRIU to be ended", || {
        proc_state(criu).is_none_or(|s| s == 'Z')
    });
    assert!(alive(t.pid));
    assert_ne!(proc_state(t.pid), Some('T'));
    assert!(
        t.is_progressing(Duration::from_secs(3)),
        "the process is frozen"
    );
    let cp = d.client.checkpoint("outlived").await.unwrap();
    assert!(
        !std::path::Path::new(&format!("{}.partial", cp.dir)).exists(),
        "partial images left"
    );
    pause.release(true);
}
