//! Fault injection: checkpoints and restores of a process and a runc container, each hit at
//! random (seeded: `FAULT_SEED=N` repeats a run) by a fault at the worst moment: CRIU held at
//! the action where the images are written or the tree is made, and then the daemon killed
//! (kill -9) or stopped (SIGTERM), CRIU or runc killed, or the job cancelled. After every round:
//! no target frozen, paused, half-restored or lost; no job left queued or running; no staging
//! directory or mount left; every ready checkpoint has its images (and the ones restored restore). At the
//! end, the catalog passes `PRAGMA integrity_check`.

use std::path::Path;
use std::time::Duration;

use ckptd_api::{
    CheckpointStatus, CreateCheckpoint, JobState, RestoreRequest, Target as ApiTarget,
};
use ckptd_tests::{
    alive, proc_state, unique_id, wait_until, Bundle, Container, ContainerStdio, Daemon, Pause,
    Target, CONTAINER_LOOPER,
};

/// Rounds per run: about 2 s each.
const ROUNDS: usize = 24;

/// splitmix64: a seeded sequence, nothing to install.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() % from.len() as u64) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    KillDaemon,
    StopDaemon,
    KillCriu,
    /// The runc that runs CRIU (containers only).
    KillRunc,
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// While CRIU has written the images (`post-dump`).
    Dump,
    /// While CRIU has made the tree and not yet resumed it (`post-restore`).
    Restore,
}

/// The two targets, each with a way to tell that it runs.
struct Targets {
    process: Target,
    bundle: Bundle,
    container: Container,
}

impl Targets {
    fn api(&self, container: bool) -> ApiTarget {
        if container {
            ApiTarget::Container {
                id: self.container.id.clone(),
                runtime: ckptd_api::Runtime::Runc,
                root: None,
                bundle: None,
                namespace: None,
            }
        } else {
            ApiTarget::Process {
                pid: self.process.pid,
            }
        }
    }

    /// Whether the target exists now (running, frozen or half-made: not gone).
    fn exists(&self, container: bool) -> bool {
        if container {
            self.container.status().is_some()
        } else {
            alive(self.process.pid) && proc_state(self.process.pid) != Some('Z')
        }
    }

    /// The target runs: not frozen, not paused, its output growing.
    fn assert_runs(&self, container: bool, what: &str) {
        if container {
            assert_eq!(
                self.container.status().as_deref(),
                Some("running"),
                "{what}: the container"
            );
            let before = self.bundle.out_lines().len();
            wait_until(&format!("{what}: the container's output to grow"), || {
                self.bundle.out_lines().len() > before
            });
        } else {
            let pid = self.process.pid;
            assert!(
                alive(pid) && !matches!(proc_state(pid), Some('T' | 'Z' | 't')),
                "{what}: the process is {:?}",
                proc_state(pid)
            );
            assert!(
                self.process.is_progressing(Duration::from_secs(3)),
                "{what}: the process does not run"
            );
        }
    }
}

#[tokio::test]
async fn faults_at_the_worst_moments_lose_nothing_and_leave_nothing_stuck() {
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_205);
    eprintln!("FAULT_SEED={seed}");
    let mut rng = Rng(seed);
    let pause = Pause::new();
    let conf = tempfile::NamedTempFile::new().unwrap();
    // A job that CRIU holds must not time out meanwhile; SIGTERM waits for it.
    std::fs::write(conf.path(), pause.config_line()).unwrap();
    let mut d = Daemon::start_with(&["--config", conf.path().to_str().unwrap()]).await;
    let criu_conf = pause.criu_conf().display().to_string();
    let bundle = Bundle::busybox(&d.dir.path().join("faults"), CONTAINER_LOOPER, |cfg| {
        cfg["annotations"] = serde_json::json!({"org.criu.config": criu_conf});
    });
    let id = unique_id("faults");
    let container = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("the container's output", || bundle.out_lines().len() >= 2);
    let mut t = Targets {
        process: Target::python(d.dir.path(), "faults", 8, false),
        bundle,
        container,
    };

    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..ROUNDS {
        let container = rng.next().is_multiple_of(3);
        let leave_running = rng.next().is_multiple_of(2);
        let phase = if leave_running {
            Phase::Dump
        } else {
            rng.pick(&[Phase::Dump, Phase::Restore])
        };
        let mut faults = vec![
            Fault::None,
            Fault::KillDaemon,
            Fault::StopDaemon,
            Fault::KillCriu,
            Fault::Cancel,
        ];
        if container && phase == Phase::Restore {
            faults.push(Fault::KillRunc);
        }
        let fault = rng.pick(&faults);
        let what = format!(
            "round {round} (FAULT_SEED={seed}): {} {} {phase:?} {fault:?}",
            if container { "container" } else { "process" },
            if leave_running {
                "leave_running"
            } else {
                "stop"
            }
        );
        eprintln!("{what}");
        *seen.entry(format!("{phase:?} {fault:?}")).or_default() += 1;
        let name = format!("f{round}");
        let req = CreateCheckpoint {
            target: Some(t.api(container)),
            name: Some(name.clone()),
            leave_running,
            ..Default::default()
        };

        let mut job = if phase == Phase::Dump {
            pause.arm("post-dump");
            let made = d.client.create_checkpoint(&req, false).await.unwrap();
            made.job
        } else {
            let made = d.client.create_checkpoint(&req, true).await.unwrap();
            assert_eq!(made.checkpoint.status, CheckpointStatus::Ready, "{what}");
            if !container {
                t.process.reap();
            }
            pause.arm("post-restore");
            d.client
                .restore(&name, &RestoreRequest::default(), false)
                .await
                .unwrap()
        };
        let action = if phase == Phase::Dump {
            "post-dump"
        } else {
            "post-restore"
        };
        let criu = pause.reached(action);
        match fault {
            Fault::None => pause.release(true),
            Fault::KillDaemon => {
                let finishes = rng.next().is_multiple_of(2);
                d.crash(|| pause.release(finishes)).await;
            }
            Fault::StopDaemon => {
                ckptd_tests::signal(d.pid(), libc::SIGTERM);
                pause.release(true);
                let status = d.stop().await;
                assert!(status.success(), "{what}: {status}\n{}", d.log());
                d.restart_after_stop().await;
            }
            Fault::KillCriu => {
                ckptd_tests::signal(criu, libc::SIGKILL);
            }
            Fault::KillRunc => {
                ckptd_tests::signal(parent_of(criu), libc::SIGKILL);
            }
            Fault::Cancel => {
                d.client.cancel_job(&job.id.to_string()).await.unwrap();
            }
        }
        job = d
            .wait_job(&job.id.to_string(), |j| j.state.is_finished())
            .await;
        pause.release(true);
        if fault == Fault::None {
            assert_eq!(job.state, JobState::Succeeded, "{what}: {job:?}");
        }
        eprintln!("  the job ended {:?}", job.state);

        // Nothing lost: a target a fault left gone comes back from its checkpoint.
        if !t.exists(container) {
            if !container {
                t.process.reap();
            }
            let cp = d.client.checkpoint(&name).await.unwrap();
            assert_eq!(
                cp.status,
                CheckpointStatus::Ready,
                "{what}: the target is gone and its checkpoint is not ready\n{}",
                d.log()
            );
            let r = d
                .client
                .restore(&name, &RestoreRequest::default(), true)
                .await
                .unwrap_or_else(|e| panic!("{what}: the restore that brings it back: {e}"));
            assert_eq!(r.state, JobState::Succeeded, "{what}");
        }
        t.assert_runs(container, &what);
        assert_settled(&d, &what).await;
    }
    eprintln!("faults seen: {seen:?}");
    assert!(
        seen.len() >= 6,
        "the seed exercised too few faults: {seen:?}"
    );

    let status = d.stop().await;
    assert!(status.success());
    let catalog = d.state_dir.join("catalog.db");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])",
            catalog.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A job's start is committed without waiting for the disk (a kill -9 loses nothing; a power
/// loss can take the commit back), so after a power loss a dump can read queued with CRIU's
/// work on disk. Such a power loss is played here: CRIU held where the images are written, the
/// daemon killed, CRIU let finish (or fail), and the rows put back as the lost commit leaves
/// them (the job queued, its checkpoint pending). The restart must recover it as a running
/// dump: a finished dump published and its target ended as the job would have, a failed one's
/// target running and its staging removed; never a target left stopped.
#[tokio::test]
async fn a_dump_whose_start_a_power_loss_took_back_is_recovered_as_a_running_one() {
    let pause = Pause::new();
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), pause.config_line()).unwrap();
    let mut d = Daemon::start_with(&["--config", conf.path().to_str().unwrap()]).await;
    let catalog = d.state_dir.join("catalog.db");
    for finishes in [true, false] {
        let name = format!("lost-start-{finishes}");
        let what = format!("CRIU {}", if finishes { "finished" } else { "failed" });
        let mut t = Target::python(d.dir.path(), &name, 8, false);
        let req = CreateCheckpoint {
            target: Some(ApiTarget::Process { pid: t.pid }),
            name: Some(name.clone()),
            ..Default::default()
        };
        pause.arm("post-dump");
        let made = d.client.create_checkpoint(&req, false).await.unwrap();
        let criu = pause.reached("post-dump");
        let job = made.job.id.to_string();
        d.crash(|| {
            pause.release(finishes);
            wait_until("the held CRIU to end", || {
                !alive(criu) || proc_state(criu) == Some('Z')
            });
            forget_start(&catalog, &job);
        })
        .await;
        let ended = d.wait_job(&job, |j| j.state.is_finished()).await;
        let cp = d.client.checkpoint(&name).await.unwrap();
        if finishes {
            assert_eq!(
                ended.state,
                JobState::Succeeded,
                "{what}: {ended:?}\n{}",
                d.log()
            );
            assert_eq!(cp.status, CheckpointStatus::Ready, "{what}");
            wait_until(&format!("{what}: the target ended by the dump"), || {
                !alive(t.pid) || proc_state(t.pid) == Some('Z')
            });
            t.reap();
            let r = d
                .client
                .restore(&name, &RestoreRequest::default(), true)
                .await
                .unwrap_or_else(|e| panic!("{what}: the restore: {e}"));
            assert_eq!(r.state, JobState::Succeeded, "{what}");
        } else {
            assert_eq!(ended.state, JobState::Failed, "{what}: {ended:?}");
            assert_eq!(cp.status, CheckpointStatus::Failed, "{what}");
        }
        assert!(
            alive(t.pid) && !matches!(proc_state(t.pid), Some('T' | 't' | 'Z')),
            "{what}: the target is {:?}\n{}",
            proc_state(t.pid),
            d.log()
        );
        assert!(
            t.is_progressing(Duration::from_secs(3)),
            "{what}: the target does not run"
        );
        assert_settled(&d, &what).await;
        ckptd_tests::signal(t.pid, libc::SIGKILL);
    }
}

/// Puts a job's rows back as they were before its start: what a power loss that took back the
/// start's commit leaves (the daemon is not running).
fn forget_start(catalog: &Path, job: &str) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1])\n\
             n = db.execute(\"UPDATE jobs SET state = 'queued', started_at = NULL WHERE id = ? AND state = 'running'\", (sys.argv[2],)).rowcount\n\
             db.execute(\"UPDATE checkpoints SET status = 'pending' WHERE id = (SELECT checkpoint_id FROM jobs WHERE id = ?)\", (sys.argv[2],))\n\
             db.commit()\n\
             sys.exit(0 if n == 1 else 3)",
            catalog.to_str().unwrap(),
            job,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the job's start could not be taken back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// No job queued or running, no staging directory, and every ready checkpoint's images there.
async fn assert_settled(d: &Daemon, what: &str) {
    for state in ["queued", "running"] {
        let jobs = d
            .client
            .jobs(&ckptd_tests::q(format!("state={state}")))
            .await
            .unwrap()
            .items;
        assert!(jobs.is_empty(), "{what}: jobs left {state}: {jobs:?}");
    }
    let root = d.state_dir.join("checkpoints");
    let partial: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(partial.is_empty(), "{what}: staging left: {partial:?}");
    // A CRIU killed mid-restore mounts nothing that outlives it (its cgroup yard).
    let mounts = ckptd_tests::mounts_under(d.dir.path());
    assert!(mounts.is_empty(), "{what}: left mounted: {mounts:?}");
    // And nothing of a run outlives its job: a runc killed mid-restore left its `criu swrk`
    // waiting for ever in the checkpoint's folder.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(d.dir.path()))
                && std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "criu")
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{what}: CRIU left running: {left:?}");
    for cp in d
        .client
        .list_checkpoints(&ckptd_tests::q("status=ready&limit=1000"))
        .await
        .unwrap()
        .items
    {
        assert!(
            Path::new(&cp.dir).join("pstree.img").exists(),
            "{what}: ready checkpoint {} has no images",
            cp.name
        );
    }
}

/// A process's parent (runc, for the CRIU it runs).
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap()
}
