//! The one checkpoint flow of every container runtime: freeze, dump leaving it running, make the
//! images durable (the service's `publish`), then release (end it) or recover (let it run again).
//!
//! Why freeze first and dump with `--leave-running`: runc has no `--leave-stopped`, and a
//! runtime's own "checkpoint and exit" kills the container as soon as CRIU is done, before its
//! images are on disk. A container that is to stop is paused (cgroup freezer) for the dump, stays
//! paused while the images are made durable, and is ended only then; if they cannot be made
//! durable, or the dump fails, it is resumed. `leave_running` neither pauses nor ends it.
//!
//! A runtime (runc, Docker, ...) is a small implementation of [`ContainerOps`]: how to pause,
//! resume and end one of its containers, and how to dump it while it stays as it is.

use std::path::Path;

use crate::engine::{BoxFuture, ContainerHandle, DumpSpec, Stopped};
use crate::error::{Error, Result};

/// What a runtime does to one of its containers for the flow.
pub trait ContainerOps: Send + Sync {
    /// Freezes the container (cgroup freezer).
    fn pause<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, Result<()>>;
    /// Thaws it.
    fn resume<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, Result<()>>;
    /// Ends it once its images are durable (the runtime records the exit).
    fn end<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, Result<()>>;
    /// Whether it is paused now (after a crash: whether an interrupted dump left it so).
    fn is_paused<'a>(&'a self, c: &'a ContainerHandle) -> BoxFuture<'a, bool>;
    /// Dumps it into `spec.images.path()`, leaving it as it is (running or paused).
    fn dump<'a>(
        &'a self,
        c: &'a ContainerHandle,
        spec: &'a DumpSpec<'a>,
    ) -> BoxFuture<'a, Result<()>>;
}

/// Freezes (unless `leave_running`, or the container was paused already), dumps, and resumes
/// it if the dump fails. Returns what the service must end once the images are durable.
pub async fn checkpoint(
    ops: &dyn ContainerOps,
    c: ContainerHandle,
    already_paused: bool,
    spec: &DumpSpec<'_>,
) -> Result<Stopped> {
    let pause = !spec.options.leave_running && !already_paused;
    if pause {
        ops.pause(&c).await?;
    }
    if let Err(e) = ops.dump(&c, spec).await {
        // CRIU freezes the container's cgroup for its dump (with --leave-running too): one
        // killed or stopped half-way (a cancel, a timeout, a kill -9) can leave it frozen. A
        // container that was running when this job began runs again, whoever froze it.
        if pause || (!already_paused && ops.is_paused(&c).await) {
            if let Err(r) = ops.resume(&c).await {
                tracing::error!(error = %r, container = %c.id, "cannot resume the container after a failed dump");
            }
        }
        return Err(e);
    }
    Ok(if spec.options.leave_running {
        Stopped::Nothing
    } else {
        Stopped::Container {
            container: c,
            paused_by_us: pause,
        }
    })
}

/// The labels a container made by a restore carries (containerd's, Docker's): the checkpoint's
/// name, and the restore job's log name (one per job), by which a restart's recovery knows the
/// container is the interrupted job's own to remove.
pub const RESTORED_FROM: &str = "io.ckptd.restored-from";
pub const MADE_BY: &str = "io.ckptd.made-by";

/// Whether a container with `labels` was made by the restore job whose log name is `log_name`.
pub fn made_by(labels: &std::collections::HashMap<String, String>, log_name: &str) -> bool {
    labels.get(MADE_BY).map(String::as_str) == Some(log_name)
}

/// After a daemon crash: what a restore into container `name` produced, if the container runs
/// (its main process `pid`): the restore completed.
pub fn restored(running: bool, pid: i32, name: &str) -> Option<ckptd_api::JobResult> {
    running.then(|| ckptd_api::JobResult {
        pid: Some(pid),
        container: Some(name.to_owned()),
        ..Default::default()
    })
}

/// Ends what a dump left paused (`kill`, its images durable), or lets it run again: every
/// container engine's `Engine::release`.
pub async fn release(ops: &dyn ContainerOps, stopped: &Stopped, kill: bool) {
    let Stopped::Container {
        container: c,
        paused_by_us,
    } = stopped
    else {
        return;
    };
    let (what, result) = if kill {
        ("end", ops.end(c).await)
    } else if *paused_by_us {
        ("resume", ops.resume(c).await)
    } else {
        return;
    };
    if let Err(e) = result {
        tracing::error!(error = %e, container = %c.id, action = what, "the runtime did not do what the dump's end needs");
    }
}

/// After a daemon crash: a container an interrupted dump (not `leave_running`) left paused runs
/// again. The dump itself is dropped: the container's record cannot be rebuilt reliably.
pub async fn recover(ops: &dyn ContainerOps, c: &ContainerHandle, leave_running: bool) {
    if leave_running || !ops.is_paused(c).await {
        return;
    }
    tracing::warn!(container = %c.id, "resuming a container an interrupted dump left paused");
    if let Err(e) = ops.resume(c).await {
        tracing::error!(error = %e, container = %c.id, "cannot resume the container");
    }
}

/// A container a checkpoint needs running is not (`tool`: the runtime's command, `docker` or
/// `podman`): `target_unavailable`, with the command that starts or unpauses it.
pub fn not_running(tool: &str, id: &str, status: &str, paused: bool) -> Error {
    let mut name = tool.to_owned();
    name[..1].make_ascii_uppercase();
    Error::target_unavailable(format!("{name} container {id} is {status}, not running")).with_hint(
        if paused {
            format!("{tool} unpause {id}")
        } else {
            format!("{tool} start {id}")
        },
    )
}

/// Hard-links the regular files of `from` into a new directory `to` (copies across filesystems):
/// a runtime that restores only from its own directory gets the images without a copy.
pub fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io("cannot create", to, &e))?;
    let entries = std::fs::read_dir(from).map_err(|e| Error::io("cannot read", from, &e))?;
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            link_or_copy_file(&e.path(), &to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Whether `args` are runc's `verb` (`restore`, `checkpoint`) of a container
/// (`runc ... VERB ... ID`): of `id` when given.
pub fn is_runc(args: &[&[u8]], verb: &str, id: Option<&str>) -> bool {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(args[0]))
        .file_name()
        .is_some_and(|n| n == "runc")
        && args.contains(&verb.as_bytes())
        && id.is_none_or(|id| args.last() == Some(&id.as_bytes()))
}

/// The runc `verb`s (`is_runc`, of `id` when given) whose parent is one of root's processes
/// whose command line `parent` matches (a container's shim, or its conmon).
pub fn runcs_under(
    verb: &str,
    id: Option<&str>,
    parent: impl Fn(&[&[u8]]) -> bool,
) -> Vec<crate::sys::TaskId> {
    // The runcs first: most scans (a stop's every 100 ms) find none, and need no second.
    let runcs = crate::sys::root_commands(|args| is_runc(args, verb, id));
    if runcs.is_empty() {
        return runcs;
    }
    let parents: Vec<i32> = crate::sys::root_commands(parent)
        .iter()
        .map(|t| t.pid)
        .collect();
    runcs
        .into_iter()
        .filter(|t| crate::sys::proc_stat(t.pid).is_some_and(|s| parents.contains(&s.ppid)))
        .collect()
}

/// A runtime's restore `work` (Docker's start from a checkpoint, containerd's task start), which
/// waits for runc, which waits for CRIU however long CRIU takes: no runtime's API stops it, so
/// a CRIU that never ended held the job for good. A stop of the job (a cancel, its timeout) runs
/// `end_criu` (which ends the CRIU the runtime's runc runs, and the tree it made, and says how
/// many runc restores it found), again until the runtime answers, for at most
/// `ANSWER_AFTER_STOP`: runc then fails on its own and undoes what it made (its state, the
/// cgroup, the `criu-root` mount), and the runtime records the failure. Work that had succeeded
/// before the stop reached CRIU is a success.
pub async fn stoppable<T>(
    work: impl std::future::Future<Output = Result<T>>,
    stop: &crate::engine::StopSignal,
    what: &str,
    end_criu: impl Fn() -> usize,
) -> Result<T> {
    tokio::pin!(work);
    let mut stop = stop.clone();
    let stopped = async move { stop.wait_for(Option::is_some).await.ok().and_then(|r| *r) };
    let reason = tokio::select! {
        r = &mut work => return r,
        r = stopped => match r {
            Some(r) => r,
            // No stop can come any more.
            None => return work.await,
        },
    };
    let deadline = tokio::time::Instant::now() + ANSWER_AFTER_STOP;
    let mut ended = 0;
    loop {
        let found = end_criu();
        if found > 0 && ended == 0 {
            tracing::warn!(what, reason = ?reason, "stopping a restore: ended the CRIU runc ran for it");
        }
        ended += found;
        match tokio::time::timeout(std::time::Duration::from_millis(100), &mut work).await {
            Ok(Ok(t)) => return Ok(t),
            Ok(Err(e)) => {
                tracing::info!(what, error = %e.message, "the restore stopped");
                return Err(reason.error());
            }
            Err(_) if tokio::time::Instant::now() >= deadline => {
                tracing::error!(what, runc_restores_ended = ended, "the runtime did not answer a restore whose CRIU was ended (or no runc restore of it was found); the job ends, the runtime's restore goes on");
                return Err(reason.error());
            }
            Err(_) => {}
        }
    }
}

/// How long a runtime has to answer a restore whose CRIU was ended: runc fails at once then.
pub const ANSWER_AFTER_STOP: std::time::Duration = std::time::Duration::from_secs(30);

/// What a runc a crash left was doing, which says how its CRIU is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftRunc {
    /// A restore: its CRIU and the half-made tree are killed (`end_runc_restores`).
    Restore,
    /// A checkpoint: its CRIU gets a SIGTERM first (it then takes its parasite out of the
    /// target, which a SIGKILL mid-dump can leave to crash it), a SIGKILL after `TERM_GRACE`.
    Checkpoint,
}

/// How long a CRIU a SIGTERM ended has to go before a SIGKILL.
const TERM_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// After a daemon crash: the runcs `find` finds (a runtime's restore or checkpoint the killed
/// daemon had asked for) are given `wait` to end on their own, as a CRIU a crash left is (what
/// completes is then recorded as such), and are then stopped as a job's stop stops them: their
/// CRIU ended as `left` says, again every 100 ms until runc is gone, for at most
/// `ANSWER_AFTER_STOP`. Until then the runtime holds the container (Docker's inspect of it waits
/// for its start, Podman's for its checkpoint), and the recovery with it. How many runcs were
/// found to end.
pub async fn end_left_runcs(
    find: &crate::engine::LeftRuncs,
    what: &str,
    wait: std::time::Duration,
    left: LeftRunc,
) -> usize {
    let waited = tokio::time::Instant::now();
    while !find().is_empty() && waited.elapsed() < wait {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let ending = tokio::time::Instant::now();
    let mut ended = 0;
    loop {
        let runcs = find();
        if runcs.is_empty() {
            return ended;
        }
        if ended == 0 {
            tracing::error!(
                what,
                waited_secs = wait.as_secs(),
                "a runc the daemon's crash left still runs after the wait; ending the CRIU it runs"
            );
        }
        if ending.elapsed() >= ANSWER_AFTER_STOP {
            tracing::error!(
                what,
                "runc did not end with its CRIU; the recovery goes on without it"
            );
            return ended;
        }
        ended = ended.max(runcs.len());
        match left {
            LeftRunc::Checkpoint if ending.elapsed() < TERM_GRACE => {
                for runc in &runcs {
                    let criu: Vec<crate::sys::TaskId> = crate::sys::children(runc.pid)
                        .into_iter()
                        .filter_map(crate::sys::TaskId::of)
                        .collect();
                    crate::sys::signal_tasks(&criu, rustix::process::Signal::TERM);
                }
            }
            _ => {
                end_runc_restores(&runcs);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Ends the CRIU of each runc restore in `runcs` and the tree it made: runc's children both
/// (CRIU starts the tree as runc's child), leaving runc. How many there were.
pub fn end_runc_restores(runcs: &[crate::sys::TaskId]) -> usize {
    for runc in runcs {
        crate::sys::end_children(*runc);
    }
    runcs.len()
}

/// Hard-links `from` at `to` (replacing what is there), or copies it across filesystems.
pub fn link_or_copy_file(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(|err| Error::io("cannot copy an image", to, &err))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ckptd_api::{CheckpointOptions, Runtime};

    use super::*;
    use crate::error::{Error, ErrorKind};

    /// Records what the flow asks of the runtime; the dump fails when told to.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<&'static str>>,
        fail_dump: bool,
        paused: bool,
    }

    impl Recorder {
        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap().clone()
        }
        fn call(&self, what: &'static str) {
            self.calls.lock().unwrap().push(what);
        }
    }

    impl ContainerOps for Recorder {
        fn pause<'a>(&'a self, _: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                self.call("pause");
                Ok(())
            })
        }
        fn resume<'a>(&'a self, _: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                self.call("resume");
                Ok(())
            })
        }
        fn end<'a>(&'a self, _: &'a ContainerHandle) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                self.call("end");
                Ok(())
            })
        }
        fn is_paused<'a>(&'a self, _: &'a ContainerHandle) -> BoxFuture<'a, bool> {
            Box::pin(async move { self.paused })
        }
        fn dump<'a>(
            &'a self,
            _: &'a ContainerHandle,
            _: &'a DumpSpec<'a>,
        ) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                self.call("dump");
                if self.fail_dump {
                    Err(Error::new(ErrorKind::CriuFailed, "no"))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn handle() -> ContainerHandle {
        ContainerHandle {
            runtime: Runtime::Runc,
            id: "c1".into(),
            root: None,
        }
    }

    fn spec(leave_running: bool) -> DumpSpec<'static> {
        DumpSpec {
            target: Box::leak(Box::new(ckptd_api::Target::Process { pid: 1 })),
            options: CheckpointOptions {
                leave_running,
                ..Default::default()
            },
            images: Box::leak(Box::new(crate::sys::Folder::at(Path::new("/tmp")).unwrap())),
            log_name: "dump.log",
            owner: None,
            stop: crate::stop::never_stop(),
            barrier: None,
        }
    }

    #[tokio::test]
    async fn a_stopping_dump_pauses_and_leaves_the_end_to_the_service() {
        let r = Recorder::default();
        let s = checkpoint(&r, handle(), false, &spec(false)).await.unwrap();
        assert_eq!(r.calls(), ["pause", "dump"]);
        assert_eq!(
            s,
            Stopped::Container {
                container: handle(),
                paused_by_us: true
            }
        );
        release(&r, &s, true).await;
        assert_eq!(r.calls(), ["pause", "dump", "end"]);
    }

    #[tokio::test]
    async fn a_failed_dump_resumes_what_it_paused_and_only_that() {
        let r = Recorder {
            fail_dump: true,
            ..Default::default()
        };
        checkpoint(&r, handle(), false, &spec(false))
            .await
            .unwrap_err();
        assert_eq!(r.calls(), ["pause", "dump", "resume"]);
        // Paused by someone else: left paused.
        let r = Recorder {
            fail_dump: true,
            ..Default::default()
        };
        checkpoint(&r, handle(), true, &spec(false))
            .await
            .unwrap_err();
        assert_eq!(r.calls(), ["dump"]);
    }

    #[tokio::test]
    async fn a_dump_that_failed_with_the_container_frozen_lets_it_run_again() {
        // leave_running: ckptd did not pause it, but the CRIU that failed left it frozen.
        let r = Recorder {
            fail_dump: true,
            paused: true,
            ..Default::default()
        };
        checkpoint(&r, handle(), false, &spec(true))
            .await
            .unwrap_err();
        assert_eq!(r.calls(), ["dump", "resume"]);
        // Frozen before the job began: left so.
        let r = Recorder {
            fail_dump: true,
            paused: true,
            ..Default::default()
        };
        checkpoint(&r, handle(), true, &spec(true))
            .await
            .unwrap_err();
        assert_eq!(r.calls(), ["dump"]);
    }

    #[tokio::test]
    async fn leave_running_never_pauses_or_ends() {
        let r = Recorder::default();
        let s = checkpoint(&r, handle(), false, &spec(true)).await.unwrap();
        assert_eq!(s, Stopped::Nothing);
        assert_eq!(r.calls(), ["dump"]);
        // Not durable: resume only what the dump paused.
        release(&r, &s, false).await;
        assert_eq!(r.calls(), ["dump"]);
    }

    #[tokio::test]
    async fn recovery_resumes_only_a_paused_container_of_a_stopping_dump() {
        let r = Recorder {
            paused: true,
            ..Default::default()
        };
        recover(&r, &handle(), true).await;
        assert!(r.calls().is_empty());
        recover(&r, &handle(), false).await;
        assert_eq!(r.calls(), ["resume"]);
        let r = Recorder::default();
        recover(&r, &handle(), false).await;
        assert!(r.calls().is_empty());
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait() {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let work = async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Err::<(), _>(Error::internal("runc failed"))
        };
        let t = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            tx.send_replace(Some(crate::engine::StopReason::Cancelled));
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        let e = stoppable(work, &rx, "test", || {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            0
        })
        .await
        .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Cancelled);
        assert!(calls.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        t.abort();
    }

    /// A stand-in for a runc restore a crash left: a shell waiting for its child (runc waits
    /// for CRIU), found while it lives, and ended by ending its child.
    fn left_runc(script: &str) -> (std::process::Child, crate::engine::LeftRuncs) {
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .unwrap();
        let runc = crate::sys::TaskId::of(child.id() as i32).unwrap();
        let find = move || {
            if runc.alive() {
                vec![runc]
            } else {
                Vec::new()
            }
        };
        (child, Box::new(find))
    }

    #[tokio::test]
    async fn a_left_restore_that_ends_within_the_wait_is_not_ended() {
        let (mut runc, find) = left_runc("sleep 0.3; true");
        let ended = end_left_runcs(
            &find,
            "test",
            std::time::Duration::from_secs(10),
            LeftRunc::Restore,
        )
        .await;
        assert_eq!(ended, 0);
        assert!(runc.wait().unwrap().success(), "it ended on its own");
    }

    #[tokio::test]
    async fn a_left_restore_still_there_after_the_wait_has_its_criu_ended() {
        let (mut runc, find) = left_runc("sleep 600; exit 3");
        let began = std::time::Instant::now();
        let ended = end_left_runcs(
            &find,
            "test",
            std::time::Duration::from_millis(300),
            LeftRunc::Restore,
        )
        .await;
        assert_eq!(ended, 1);
        assert!(began.elapsed() >= std::time::Duration::from_millis(300));
        assert!(began.elapsed() < std::time::Duration::from_secs(20));
        // The child ended, so the shell went on, as runc fails once its CRIU is gone.
        assert_eq!(runc.wait().unwrap().code(), Some(3));
    }

    /// `left_runc` whose child, its "CRIU", runs `trap ACTION TERM`; returned once the trap is
    /// set, so that no signal comes before it.
    fn left_criu_trapping(action: &str) -> (std::process::Child, crate::engine::LeftRuncs) {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let script = format!(
            "(trap {action} TERM; touch {}; while :; do sleep 0.05; done); exit $?",
            ready.display()
        );
        let left = left_runc(&script);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !ready.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the trap was never set"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        left
    }

    #[tokio::test]
    async fn a_left_checkpoint_has_its_criu_ended_by_a_sigterm_first() {
        // Its "CRIU" exits 7 on a SIGTERM; a SIGKILL would leave the shell 137.
        let (mut runc, find) = left_criu_trapping("'exit 7'");
        let ended = end_left_runcs(
            &find,
            "test",
            std::time::Duration::from_millis(200),
            LeftRunc::Checkpoint,
        )
        .await;
        assert_eq!(ended, 1);
        assert_eq!(runc.wait().unwrap().code(), Some(7));
    }

    #[tokio::test]
    async fn a_left_checkpoint_whose_criu_ignores_sigterm_is_killed_after_the_grace() {
        let (mut runc, find) = left_criu_trapping("''");
        let began = std::time::Instant::now();
        let ended = end_left_runcs(
            &find,
            "test",
            std::time::Duration::from_millis(100),
            LeftRunc::Checkpoint,
        )
        .await;
        assert_eq!(ended, 1);
        assert!(began.elapsed() >= TERM_GRACE);
        assert_eq!(runc.wait().unwrap().code(), Some(137));
    }
}
