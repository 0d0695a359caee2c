//! Job logic with a fake engine: state transitions, durability steps, queue and target limits,
//! cancel, reconcile. The real engine is proven end to end in the tests crate.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex as StdMutex;

use ckptd_api::{
    Checkpoint, CheckpointStatus, CreateCheckpoint, JobResult, JobState, RestoreRequest, Target,
};
use tokio::sync::Semaphore;

use super::*;

/// The task the fake engine's dumps leave stopped.
const FAKE_TASK: crate::sys::TaskId = crate::sys::TaskId {
    pid: 4242,
    start: 1,
};
use crate::auth::Caller;
use crate::criu::{DUMP_DONE, DUMP_LOG};
use crate::engine::{BoxFuture, DumpOutput, DumpSpec, Engine, RestoreSpec, Stopped};
use crate::error::ErrorKind;

/// Writes a fake image and log; fails when told to; can be held at the start of a dump.
#[derive(Default)]
struct FakeEngine {
    fail_dump: AtomicBool,
    gate: Option<Semaphore>,
    /// Holds a submission in its admission (in `dump_estimate`), telling `estimating` first.
    estimate_gate: Option<Semaphore>,
    estimating: tokio::sync::Notify,
    released: StdMutex<Vec<(Stopped, bool)>>,
}

impl Engine for FakeEngine {
    fn version(&self) -> Option<String> {
        Some("fake".into())
    }
    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match target {
                Target::Process { pid } if *pid > 0 => Ok(()),
                _ => Err(Error::target_unavailable("no such target")),
            }
        })
    }
    fn check_restore<'a>(
        &'a self,
        _: &'a Checkpoint,
        into: Option<&'a Target>,
        _: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match into {
                None => Ok(()),
                Some(_) => Err(Error::invalid("restored in place only")),
            }
        })
    }
    fn dump_estimate<'a>(&'a self, _: &'a Target) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            if let Some(g) = &self.estimate_gate {
                self.estimating.notify_one();
                drop(g.acquire().await.expect("gate"));
            }
            Ok(4096)
        })
    }
    fn dump<'a>(&'a self, spec: DumpSpec<'a>) -> BoxFuture<'a, Result<DumpOutput>> {
        Box::pin(async move {
            if let Some(g) = &self.gate {
                let mut stop = spec.stop.clone();
                let stopped = tokio::select! {
                    p = g.acquire() => {
                        drop(p.expect("gate"));
                        None
                    }
                    r = stop.wait_for(Option::is_some) => r.ok().and_then(|r| *r),
                };
                if let Some(reason) = stopped {
                    return Err(reason.error());
                }
            }
            std::fs::write(spec.images.path().join(spec.log_name), b"log line\n").unwrap();
            std::fs::write(spec.images.path().join("pages-1.img"), vec![7u8; 4096]).unwrap();
            if self.fail_dump.load(Ordering::SeqCst) {
                // As CRIU ends the log of a failed dump.
                std::fs::write(
                    spec.images.path().join(spec.log_name),
                    b"log line\n(00.1) Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
                )
                .unwrap();
                return Err(Error::new(ErrorKind::CriuFailed, "fake dump failed").with_hint("h"));
            }
            let stopped = if spec.options.leave_running {
                Stopped::Nothing
            } else {
                Stopped::Tasks(vec![FAKE_TASK])
            };
            Ok(DumpOutput {
                stats: Some(Default::default()),
                stopped,
                ..Default::default()
            })
        })
    }
    fn restore<'a>(&'a self, _spec: RestoreSpec<'a>) -> BoxFuture<'a, Result<JobResult>> {
        Box::pin(async move {
            Ok(JobResult {
                pid: Some(4242),
                ..Default::default()
            })
        })
    }
    fn recover_dump<'a>(
        &'a self,
        _: &'a Checkpoint,
        images: &'a crate::sys::Folder,
    ) -> BoxFuture<'a, Option<DumpOutput>> {
        // A fake dump "finished" when its log says so.
        let done = std::fs::read_to_string(images.path().join(DUMP_LOG))
            .unwrap_or_default()
            .contains(DUMP_DONE);
        Box::pin(async move {
            done.then(|| DumpOutput {
                stopped: Stopped::Tasks(vec![FAKE_TASK]),
                ..Default::default()
            })
        })
    }
    fn recover_restore<'a>(
        &'a self,
        _: &'a Checkpoint,
        _: Option<&'a Target>,
        _: &'a str,
    ) -> BoxFuture<'a, Option<JobResult>> {
        Box::pin(async { None })
    }
    fn release<'a>(&'a self, stopped: &'a Stopped, kill: bool) -> BoxFuture<'a, ()> {
        self.released.lock().unwrap().push((stopped.clone(), kill));
        Box::pin(async {})
    }
}

async fn setup(
    engine: FakeEngine,
    queue_capacity: usize,
) -> (tempfile::TempDir, Service, Arc<FakeEngine>) {
    setup_with_timeout(engine, queue_capacity, Duration::from_secs(60)).await
}

async fn setup_with_timeout(
    engine: FakeEngine,
    queue_capacity: usize,
    job_timeout: Duration,
) -> (tempfile::TempDir, Service, Arc<FakeEngine>) {
    let d = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(&d.path().join("catalog.db")).await.unwrap();
    let root = d.path().join("checkpoints");
    std::fs::create_dir(&root).unwrap();
    let engine = Arc::new(engine);
    let jobs = Service::new(
        catalog,
        engine.clone(),
        ServiceConfig {
            checkpoints_root: root,
            queue_capacity,
            job_timeout,
            policy: Policy::default(),
            import_max_bytes: 1 << 30,
            remotes: Default::default(),
            schedule_max_failures: 5,
        },
    );
    (d, jobs, engine)
}

fn req(pid: i32, name: &str) -> CreateCheckpoint {
    CreateCheckpoint {
        target: Some(Target::Process { pid }),
        name: Some(name.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_checkpoint_goes_pending_to_ready_and_kills_only_after_durability() {
    let (_d, jobs, engine) = setup(FakeEngine::default(), 8).await;
    jobs.start(1);
    let (cp, job) = jobs
        .submit_checkpoint(&Caller::ROOT, req(10, "a"))
        .await
        .unwrap();
    assert_eq!(cp.status, CheckpointStatus::Pending);
    assert_eq!(job.state, JobState::Queued);
    let job = jobs
        .wait(&Caller::ROOT, &job.id.to_string(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert!(job.started_at.is_some() && job.finished_at.is_some());
    let cp = jobs.checkpoint(&Caller::ROOT, "a").await.unwrap();
    assert_eq!(cp.status, CheckpointStatus::Ready);
    assert_eq!(cp.size_bytes, 4096 + 9);
    assert!(Path::new(&cp.dir).join("pages-1.img").exists());
    assert!(!partial_dir(Path::new(&cp.dir)).exists());
    assert_eq!(
        *engine.released.lock().unwrap(),
        vec![(Stopped::Tasks(vec![FAKE_TASK]), true)]
    );
}

#[tokio::test]
async fn a_failed_dump_keeps_the_log_drops_the_images_and_records_the_error() {
    let engine = FakeEngine::default();
    engine.fail_dump.store(true, Ordering::SeqCst);
    let (_d, jobs, engine) = setup(engine, 8).await;
    jobs.start(1);
    let (_, job) = jobs
        .submit_checkpoint(&Caller::ROOT, req(10, "f"))
        .await
        .unwrap();
    let job = jobs
        .wait(&Caller::ROOT, &job.id.to_string(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.as_ref().unwrap().code, "criu_failed");
    let cp = jobs.checkpoint(&Caller::ROOT, "f").await.unwrap();
    assert_eq!(cp.status, CheckpointStatus::Failed);
    assert_eq!(cp.error, job.error);
    let files: Vec<_> = std::fs::read_dir(&cp.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, vec![std::ffi::OsString::from(DUMP_LOG)]);
    assert!(
        engine.released.lock().unwrap().is_empty(),
        "a failed dump must not kill"
    );
    // The target is free again.
    engine.fail_dump.store(false, Ordering::SeqCst);
    let (_, job) = jobs
        .submit_checkpoint(&Caller::ROOT, req(10, "f2"))
        .await
        .unwrap();
    assert_eq!(
        jobs.wait(&Caller::ROOT, &job.id.to_string(), Duration::from_secs(10))
            .await
            .unwrap()
            .state,
        JobState::Succeeded
    );
}

#[tokio::test]
async fn full_queue_is_429_and_leaves_no_row() {
    let (_d, jobs, _) = setup(FakeEngine::default(), 1).await; // no workers: the queue fills
    jobs.submit_checkpoint(&Caller::ROOT, req(1, "q1"))
        .await
        .unwrap();
    let e = jobs
        .submit_checkpoint(&Caller::ROOT, req(2, "q2"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::QueueFull);
    assert!(jobs.checkpoint(&Caller::ROOT, "q2").await.is_err());
    // The refused target is not left reserved.
    let e = jobs
        .submit_checkpoint(&Caller::ROOT, req(2, "q3"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::QueueFull);
}

#[tokio::test]
async fn one_job_per_target_the_second_is_409() {
    let (_d, jobs, _) = setup(FakeEngine::default(), 8).await;
    let (_, j1) = jobs
        .submit_checkpoint(&Caller::ROOT, req(5, "b1"))
        .await
        .unwrap();
    let e = jobs
        .submit_checkpoint(&Caller::ROOT, req(5, "b2"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("one job per target"));
    assert_eq!(e.details["job_id"], j1.id.to_string());
    jobs.submit_checkpoint(&Caller::ROOT, req(6, "b3"))
        .await
        .unwrap(); // another target is fine
}

async fn wait_running(jobs: &Service, id: Uuid) {
    for _ in 0..500 {
        if jobs
            .job(&Caller::ROOT, &id.to_string())
            .await
            .unwrap()
            .state
            == JobState::Running
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never ran");
}

#[tokio::test]
async fn queued_and_running_jobs_can_be_cancelled() {
    let engine = FakeEngine {
        gate: Some(Semaphore::new(0)),
        ..Default::default()
    };
    let (_d, jobs, engine) = setup(engine, 8).await;
    jobs.start(1);
    let (_, running) = jobs
        .submit_checkpoint(&Caller::ROOT, req(1, "r"))
        .await
        .unwrap();
    let (_, queued) = jobs
        .submit_checkpoint(&Caller::ROOT, req(2, "q"))
        .await
        .unwrap();
    wait_running(&jobs, running.id).await;

    // Queued: ends at once, its checkpoint failed with the reason.
    let c = jobs
        .cancel(&Caller::ROOT, &queued.id.to_string())
        .await
        .unwrap();
    assert_eq!(c.state, JobState::Cancelled);
    let q = jobs.checkpoint(&Caller::ROOT, "q").await.unwrap();
    assert_eq!(q.status, CheckpointStatus::Failed);
    assert_eq!(q.error.unwrap().code, "cancelled");
    let e = jobs
        .cancel(&Caller::ROOT, &queued.id.to_string())
        .await
        .unwrap_err();
    assert!(e.message.contains("already ended"));

    // Running: asked to stop; the engine sees the signal, the job ends cancelled, nothing is
    // killed, no images stay, and the target is free again.
    let c = jobs
        .cancel(&Caller::ROOT, &running.id.to_string())
        .await
        .unwrap();
    assert_eq!(c.state, JobState::Running);
    let done = jobs
        .wait(
            &Caller::ROOT,
            &running.id.to_string(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Cancelled, "{done:?}");
    assert_eq!(done.error.as_ref().unwrap().code, "cancelled");
    let r = jobs.checkpoint(&Caller::ROOT, "r").await.unwrap();
    assert_eq!(r.status, CheckpointStatus::Failed);
    let files: Vec<_> = std::fs::read_dir(&r.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(files.is_empty(), "images left after cancel: {files:?}");
    assert!(engine
        .released
        .lock()
        .unwrap()
        .iter()
        .all(|(_, kill)| !kill));

    engine.gate.as_ref().unwrap().add_permits(10);
    let (_, again) = jobs
        .submit_checkpoint(&Caller::ROOT, req(1, "r-again"))
        .await
        .unwrap();
    let again = jobs
        .wait(
            &Caller::ROOT,
            &again.id.to_string(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(again.state, JobState::Succeeded);
    // The cancelled queued job was skipped by the worker.
    assert_eq!(
        jobs.job(&Caller::ROOT, &queued.id.to_string())
            .await
            .unwrap()
            .state,
        JobState::Cancelled
    );
}

#[tokio::test]
async fn a_job_running_past_its_timeout_is_stopped() {
    let engine = FakeEngine {
        gate: Some(Semaphore::new(0)),
        ..Default::default()
    };
    let (_d, jobs, _) = setup_with_timeout(engine, 8, Duration::from_millis(200)).await;
    jobs.start(1);
    let (_, job) = jobs
        .submit_checkpoint(&Caller::ROOT, req(1, "slow"))
        .await
        .unwrap();
    let done = jobs
        .wait(&Caller::ROOT, &job.id.to_string(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Failed);
    let err = done.error.unwrap();
    assert_eq!(err.code, "timeout");
    assert!(err.message.contains("left running"), "{}", err.message);
    // The target is free for the next job.
    jobs.submit_checkpoint(&Caller::ROOT, req(1, "slow2"))
        .await
        .unwrap();
}

#[tokio::test]
async fn restore_needs_a_ready_checkpoint_and_reports_the_pid() {
    let (_d, jobs, _) = setup(FakeEngine::default(), 8).await;
    jobs.start(2);
    let (_, job) = jobs
        .submit_checkpoint(&Caller::ROOT, req(3, "c"))
        .await
        .unwrap();
    let e = jobs
        .submit_restore(&Caller::ROOT, "c", RestoreRequest::default())
        .await;
    // Pending (or running): 409 until it is ready.
    if let Err(e) = e {
        assert_eq!(e.kind, ErrorKind::Conflict);
    }
    jobs.wait(&Caller::ROOT, &job.id.to_string(), Duration::from_secs(10))
        .await
        .unwrap();
    let r = jobs
        .submit_restore(&Caller::ROOT, "c", RestoreRequest::default())
        .await
        .unwrap();
    let r = jobs
        .wait(&Caller::ROOT, &r.id.to_string(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(r.state, JobState::Succeeded);
    assert_eq!(r.result.unwrap().pid, Some(4242));
    // Once the restore has ended, the checkpoint can be deleted.
    jobs.delete_checkpoint(&Caller::ROOT, "c", false)
        .await
        .unwrap();
    assert_eq!(
        jobs.checkpoint(&Caller::ROOT, "c").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn reconcile_fails_unfinished_work_and_removes_partial_images() {
    let (d, jobs, _) = setup(FakeEngine::default(), 8).await;
    let (cp, job) = jobs
        .submit_checkpoint(&Caller::ROOT, req(9, "interrupted"))
        .await
        .unwrap();
    // Simulate a crash mid-dump: running rows and a partial directory.
    let partial = partial_dir(Path::new(&cp.dir));
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("pages-1.img"), b"x").unwrap();
    let mut running = job.clone();
    running.state = JobState::Running;
    jobs.catalog().update_job(&running).await.unwrap();
    drop(jobs);
    let catalog = Catalog::open(&d.path().join("catalog.db")).await.unwrap();
    let jobs = Service::new(
        catalog,
        Arc::new(FakeEngine::default()),
        ServiceConfig {
            checkpoints_root: d.path().join("checkpoints"),
            queue_capacity: 8,
            job_timeout: Duration::from_secs(60),
            policy: Policy::default(),
            import_max_bytes: 1 << 30,
            remotes: Default::default(),
            schedule_max_failures: 5,
        },
    );
    let report = jobs.reconcile(Duration::from_secs(1)).await.unwrap();
    let job = jobs.job(&Caller::ROOT, &job.id.to_string()).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.unwrap().message.contains("restarted"));
    assert_eq!(
        jobs.checkpoint(&Caller::ROOT, "interrupted")
            .await
            .unwrap()
            .status,
        CheckpointStatus::Failed
    );
    assert!(!partial.exists());
    assert_eq!(report.failed, 1);
}

#[tokio::test]
async fn reconcile_publishes_a_dump_that_finished_marks_missing_and_reports_unknown_dirs() {
    let (d, jobs, _) = setup(FakeEngine::default(), 8).await;
    let root = d.path().join("checkpoints");
    // A dump CRIU finished while the daemon was down: log says so, images in .partial.
    let (cp, job) = jobs
        .submit_checkpoint(&Caller::ROOT, req(9, "finished"))
        .await
        .unwrap();
    let partial = partial_dir(Path::new(&cp.dir));
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("pages-1.img"), vec![1u8; 100]).unwrap();
    std::fs::write(partial.join(DUMP_LOG), format!("...\n{}\n", DUMP_DONE)).unwrap();
    let mut running = job.clone();
    running.state = JobState::Running;
    jobs.catalog().update_job(&running).await.unwrap();
    // A ready checkpoint whose images vanished.
    let (gone, gone_job) = jobs
        .submit_checkpoint(&Caller::ROOT, req(10, "gone"))
        .await
        .unwrap();
    let mut ready = gone.clone();
    ready.status = CheckpointStatus::Ready;
    jobs.catalog().update_checkpoint(&ready).await.unwrap();
    let mut done = gone_job.clone();
    done.state = JobState::Succeeded;
    jobs.catalog().update_job(&done).await.unwrap();
    // A directory no row knows.
    std::fs::create_dir(root.join("stray")).unwrap();
    drop(jobs);

    let engine = Arc::new(FakeEngine::default());
    let catalog = Catalog::open(&d.path().join("catalog.db")).await.unwrap();
    let jobs = Service::new(
        catalog,
        engine.clone(),
        ServiceConfig {
            checkpoints_root: root.clone(),
            queue_capacity: 8,
            job_timeout: Duration::from_secs(60),
            policy: Policy::default(),
            import_max_bytes: 1 << 30,
            remotes: Default::default(),
            schedule_max_failures: 5,
        },
    );
    let report = jobs.reconcile(Duration::from_secs(1)).await.unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    assert_eq!(report.missing, 1);
    assert_eq!(
        report.unknown_dirs,
        vec![root.join("stray").display().to_string()]
    );
    assert!(
        root.join("stray").exists(),
        "an unknown directory was deleted"
    );
    let job = jobs.job(&Caller::ROOT, &job.id.to_string()).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    let cp = jobs.checkpoint(&Caller::ROOT, "finished").await.unwrap();
    assert_eq!(cp.status, CheckpointStatus::Ready);
    assert!(Path::new(&cp.dir).join("pages-1.img").exists() && !partial.exists());
    // Killed only once published.
    assert_eq!(
        *engine.released.lock().unwrap(),
        vec![(Stopped::Tasks(vec![FAKE_TASK]), true)]
    );
    assert_eq!(
        jobs.checkpoint(&Caller::ROOT, "gone").await.unwrap().status,
        CheckpointStatus::Missing
    );
}

/// Issue 26: a job admitted while the daemon began to shut down (SIGTERM right after a 202) was
/// left `queued` in the catalog. Shutdown waits for admissions in flight, then ends every queued
/// job.
#[tokio::test]
async fn a_job_admitted_as_shutdown_begins_is_not_left_queued() {
    let engine = FakeEngine {
        estimate_gate: Some(Semaphore::new(0)),
        ..Default::default()
    };
    let (_d, jobs, engine) = setup(engine, 8).await;
    let entered = engine.estimating.notified();
    let j = jobs.clone();
    let submit =
        tokio::spawn(async move { j.submit_checkpoint(&Caller::ROOT, req(42, "late")).await });
    entered.await;
    // The submission passed its shutting-down check and is held in its admission.
    let j = jobs.clone();
    let mut shutdown = tokio::spawn(async move { j.shutdown(Duration::from_secs(5)).await });
    // Shutdown waits for it rather than ending the queued jobs without it.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut shutdown)
            .await
            .is_err(),
        "shutdown did not wait for the admission in flight"
    );
    engine.estimate_gate.as_ref().unwrap().add_permits(1);
    let (_, job) = submit
        .await
        .unwrap()
        .expect("admitted before the flag was set");
    shutdown.await.unwrap();
    let job = jobs.job(&Caller::ROOT, &job.id.to_string()).await.unwrap();
    assert_ne!(job.state, JobState::Queued, "{job:?}");
    // And once shutting down, nothing more is admitted.
    let e = jobs
        .submit_checkpoint(&Caller::ROOT, req(43, "later"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
}
