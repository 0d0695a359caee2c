//! containerd containers through ckptd, against the real containerd (1.6, from the docker.io
//! package `make setup` installs): a private containerd of the test's own (its root, state and
//! socket; no CRI plugin), an image imported from an OCI archive built here (busybox-static,
//! `podman save --format oci-archive`; nothing can be pulled), containers started with
//! `ctr run -d` writing to a log file. `ctr` and that file are the witnesses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ckptd_api::{CheckpointStatus, RestoreRequest, Runtime, Target};
use ckptd_tests::{wait_until, wait_until_else, Daemon, Interrupt, CONTAINER_LOOPER_STDOUT};

const NS: &str = "ckptdtest";
const IMAGE: &str = "localhost/ckptd-busybox:1";

/// A containerd of the test's own; its containers and itself are ended on drop.
struct Containerd {
    child: std::process::Child,
    dir: tempfile::TempDir,
    state: PathBuf,
    socket: PathBuf,
}

impl Containerd {
    fn start() -> Containerd {
        let c = Self::bare();
        c.import_image();
        c
    }

    /// A second node: its own containerd, with the first one's image (the same layers).
    fn start_beside(first: &Containerd) -> Containerd {
        let c = Self::bare();
        c.import_archive(&first.dir.path().join("image.tar"));
        c
    }

    fn bare() -> Containerd {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        // Short: the shims' sockets live under it.
        let state = PathBuf::from(format!(
            "/run/ckptd-tc-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let config = dir.path().join("config.toml");
        // Its garbage collector runs after every change (containerd's default: after a
        // deletion, or 100 changes), so that whatever ckptd makes and does not hold yet (a
        // snapshot before its container refers to it) is collected in the window, as a busy
        // node's would now and then.
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n\
                 [plugins.\"io.containerd.gc.v1.scheduler\"]\n  mutation_threshold = 1\n  \
                 pause_threshold = 0.5\n",
                dir.path().join("root").display(),
                state.display(),
                socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (make setup installs it with docker.io)");
        let c = Containerd {
            child,
            dir,
            state,
            socket,
        };
        wait_until("containerd's socket", || {
            c.ctr(&["version"]).status.success()
        });
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", NS])
            .args(args)
            .output()
            .expect("ctr")
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The busybox image, as an OCI archive built here and imported.
    fn import_image(&self) {
        let d = self.dir.path();
        let rootfs = d.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("/bin/busybox");
        for applet in ["sh", "sleep", "echo"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let tar = d.join("rootfs.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        run(Command::new("podman")
            .args(["import", "-q"])
            .arg(&tar)
            .arg(IMAGE));
        let oci = d.join("image.tar");
        run(Command::new("podman")
            .args(["save", "-q", "--format", "oci-archive", "-o"])
            .arg(&oci)
            .arg(IMAGE));
        self.import_archive(&oci);
    }

    /// An OCI archive imported (and unpacked) as the test's image.
    fn import_archive(&self, oci: &Path) {
        self.ctr_ok(&[
            "images",
            "import",
            "--base-name",
            "localhost/ckptd-busybox",
            oci.to_str().unwrap(),
        ]);
    }

    /// A looper container whose output goes to `log` (the shim's file logger).
    fn run_looper(&self, id: &str, log: &Path) {
        self.run_looper_with(id, log, &[]);
    }

    /// `run_looper`, with more options of `ctr run`.
    fn run_looper_with(&self, id: &str, log: &Path, options: &[&str]) {
        let uri = format!("file://{}", log.display());
        let mut args = vec!["run", "-d", "--log-uri", &uri];
        args.extend(options);
        args.extend([IMAGE, id, "/bin/sh", "-c", CONTAINER_LOOPER_STDOUT]);
        self.ctr_ok(&args);
        wait_until("its output", || lines(log).len() >= 3);
    }

    /// A looper `source`, checkpointed by `d` as `cd-src` (its task stopped); how many lines
    /// it wrote.
    async fn checkpointed_looper(&self, d: &Daemon) -> usize {
        let log = self.dir.path().join("source.log");
        self.run_looper("source", &log);
        d.client
            .create_checkpoint(&ckptd_tests::checkpoint(target("source"), "cd-src"), true)
            .await
            .expect("checkpoint");
        lines(&log).len()
    }

    /// The leases ckptd holds (a restore into a new container holds its snapshot by one).
    fn ckptd_leases(&self) -> Vec<String> {
        self.ctr_ok(&["leases", "ls", "-q"])
            .lines()
            .filter(|l| l.starts_with("ckptd-"))
            .map(str::to_owned)
            .collect()
    }

    /// The pids of the shims that serve container `id` for this containerd (by the arguments
    /// containerd starts a shim with: its namespace, the container's id and its own address),
    /// whether or not containerd still knows the task.
    fn shims(&self, id: &str) -> Vec<i32> {
        let want = [
            "-namespace".to_owned(),
            NS.to_owned(),
            "-id".to_owned(),
            id.to_owned(),
            "-address".to_owned(),
            self.socket.display().to_string(),
        ];
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args
                .first()
                .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
                && want
                    .windows(2)
                    .step_by(2)
                    .all(|w| args.windows(2).any(|a| a == w))
                && ckptd_tests::proc_state(pid).is_some_and(|s| s != 'Z')
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// The task's status as `ctr tasks ls` shows it (RUNNING, PAUSED, STOPPED).
    fn status(&self, id: &str) -> String {
        self.ctr_ok(&["tasks", "ls"])
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("none")
            .to_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", NS, "tasks", "ls", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr(&["tasks", "kill", "-s", "KILL", id]);
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr(&["tasks", "delete", "-f", id]);
                let _ = self.ctr(&["containers", "rm", id]);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A shim whose task never came to be is not in `tasks ls` and outlives containerd (one
        // was left after a daemon killed mid-restore, in one CI run of three): ended by the
        // address it serves, which is this containerd's alone.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(format!(
                "containerd-shim-runc-v2 .*-address {}",
                self.socket.display()
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Whether a moment of a job has come, as a test sees it in containerd.
type Reached = fn(&Containerd) -> bool;

/// Whether a CRIU runs under one of `shims` now (runc's restore of a task, inside its shim;
/// runc drives CRIU through its RPC, `criu swrk`, so its arguments do not say what it does).
fn criu_under(shims: &[i32]) -> bool {
    let ppid = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            return false;
        };
        std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "criu")
            && std::iter::successors(ppid(pid), |p| ppid(*p))
                .take(4)
                .any(|p| shims.contains(&p))
    })
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The looper's count goes on in `out` from `from` (what it wrote before its checkpoint).
fn assert_counts_on(out: &Path, from: usize, what: &str) {
    wait_until(what, || lines(out).len() >= 5);
    let got = lines(out);
    for (i, l) in got.iter().enumerate() {
        assert_eq!(
            l.trim(),
            (from + i).to_string(),
            "{what}, from {from}: {got:?}"
        );
    }
}

fn target(id: &str) -> Option<Target> {
    Some(Target::Container {
        id: id.into(),
        runtime: Runtime::Containerd,
        root: None,
        bundle: None,
        namespace: Some(NS.into()),
    })
}

/// A containerd looper checkpointed (its task stopped, containerd's record of it kept) and
/// restored in place: containerd's task again, its output contiguous in the same log; one
/// checkpointed with leave_running keeps running; one without a task is refused before any job.
#[tokio::test]
async fn a_containerd_container_is_checkpointed_and_restored_in_place() {
    let cd = Containerd::start();
    let d = Daemon::start_with(&["--containerd-socket", cd.socket.to_str().unwrap()]).await;
    let log = cd.dir.path().join("looper.log");
    cd.run_looper("looper", &log);

    let info = d.client.info().await.unwrap();
    let runtime = info
        .runtimes
        .iter()
        .find(|r| r.name == "containerd")
        .expect("containerd in /v1/info");
    assert!(runtime.reachable, "{runtime:?}");

    // leave_running, from the CLI: the task runs on.
    let out = d.ckpt(&[
        "create",
        "looper",
        "cd-live",
        "--runtime",
        "containerd",
        "--namespace",
        NS,
        "--leave-running",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live = d.client.checkpoint("cd-live").await.unwrap();
    assert_eq!(live.status, CheckpointStatus::Ready);
    assert_eq!(live.target, target("looper").unwrap());
    assert_eq!(cd.status("looper"), "RUNNING");
    let metrics = d.client.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains(
            "ckptd_job_duration_seconds_count{kind=\"checkpoint\",target=\"containerd\"} 1"
        ),
        "{metrics}"
    );

    // Without: the task ends once the images are durable; containerd records the exit.
    let cp = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(target("looper"), "cd1"), true)
        .await
        .expect("checkpoint");
    assert_eq!(cp.checkpoint.status, CheckpointStatus::Ready);
    assert!(
        cp.checkpoint
            .stats
            .expect("CRIU's statistics")
            .pages_written
            > 0,
        "{:?}",
        cp.checkpoint
    );
    assert!(Path::new(&cp.checkpoint.dir)
        .join("inventory.img")
        .is_file());
    // Stopped when the checkpoint answers: a restore right after it finds the task ended.
    assert_eq!(cd.status("looper"), "STOPPED");
    let stopped_at = lines(&log).len();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(lines(&log).len(), stopped_at, "the looper still writes");

    // Restored in place: containerd's task again, counting on in the same log.
    let job = d
        .client
        .restore("cd1", &RestoreRequest::default(), true)
        .await
        .expect("restore");
    let pid = job
        .result
        .as_ref()
        .and_then(|r| r.pid)
        .expect("the restored pid");
    assert_eq!(cd.status("looper"), "RUNNING");
    let tasks = cd.ctr_ok(&["tasks", "ls"]);
    assert!(tasks.contains(&pid.to_string()), "{tasks}");
    wait_until("the restored looper to write", || {
        lines(&log).len() > stopped_at + 5
    });
    ckptd_tests::assert_counts(&lines(&log), "the restored looper");

    // A restore while it runs is refused before any job, saying how to stop it.
    let e = d
        .client
        .restore("cd1", &RestoreRequest::default(), true)
        .await
        .unwrap_err();
    let (status, err) = e.api_error().unwrap();
    assert_eq!(status.as_u16(), 409, "{err:?}");
    assert!(
        err.hint()
            .unwrap_or("")
            .contains("ctr -n ckptdtest tasks kill"),
        "{err:?}"
    );

    // A container without a task: refused, nothing created.
    cd.ctr_ok(&["containers", "create", IMAGE, "idle", "/bin/sh"]);
    let e = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(target("idle"), "cd-idle"), true)
        .await
        .unwrap_err();
    assert_eq!(e.api_error().unwrap().0.as_u16(), 422, "{e}");
    assert!(d.client.checkpoint("cd-idle").await.is_err());
    let _ = cd.ctr(&["containers", "rm", "idle"]);
}

/// A containerd looper checkpointed, then restored into a new container of the same namespace:
/// made from the first one's image, runtime and spec over a new snapshot, its task created from
/// the images; the count goes on in the new container's log (ckptd's), where it stopped. Names
/// that cannot be used are refused before any job.
#[tokio::test]
async fn a_containerd_checkpoint_is_restored_into_a_new_container() {
    let cd = Containerd::start();
    let d = Daemon::start_with(&["--containerd-socket", cd.socket.to_str().unwrap()]).await;
    let stopped_at = cd.checkpointed_looper(&d).await;
    let into = |id: &str, ns: &str| RestoreRequest {
        target: Some(Target::Container {
            id: id.into(),
            runtime: Runtime::Containerd,
            root: None,
            bundle: None,
            namespace: Some(ns.into()),
        }),
        ..Default::default()
    };

    // Refused before any job: its own container, a name containerd has, another namespace.
    let refused = |req: RestoreRequest, status: u16| {
        let d = &d;
        async move {
            let e = d.client.restore("cd-src", &req, true).await.unwrap_err();
            let (s, err) = e.api_error().unwrap();
            assert_eq!(s.as_u16(), status, "{err:?}");
            err.clone()
        }
    };
    refused(into("source", NS), 400).await;
    cd.ctr_ok(&["containers", "create", IMAGE, "taken", "/bin/sh"]);
    let err = refused(into("taken", NS), 409).await;
    assert_eq!(
        err.details["advice"]["command"],
        format!("ctr -n {NS} containers rm taken"),
        "{err:?}"
    );
    refused(into("elsewhere", "other-ns"), 400).await;
    let restores = d
        .client
        .jobs(&ckptd_tests::q("kind=restore"))
        .await
        .unwrap();
    assert!(restores.items.is_empty(), "{:?}", restores.items);

    // `ckpt restore --into NAME`: containerd's, in the checkpoint's namespace.
    let done = d.ckpt(&["restore", "cd-src", "--into", "copy"]);
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let out = PathBuf::from(
        said.lines()
            .find_map(|l| l.strip_prefix("output: "))
            .unwrap_or_else(|| panic!("the new container's log: {said}")),
    );
    assert_eq!(cd.status("copy"), "RUNNING");
    let info = cd.ctr_ok(&["containers", "info", "copy"]);
    assert!(info.contains("io.ckptd.restored-from"), "{info}");
    // The lease that held its snapshot until the container referred to it is dropped.
    assert_eq!(cd.ckptd_leases(), Vec::<String>::new());
    assert_counts_on(&out, stopped_at, "the new container");
    // The source is untouched, and still restores in place.
    assert_eq!(cd.status("source"), "STOPPED");
    d.client
        .restore("cd-src", &RestoreRequest::default(), true)
        .await
        .expect("restore in place");
    assert_eq!(cd.status("source"), "RUNNING");

    // A restore that fails once the container is made (CRIU finds no image of the filesystem
    // context of the container's first process; a missing core image is refused before the
    // container is made, by ckptd's check of the images) leaves nothing of it: no container,
    // no snapshot.
    let dir = d.client.checkpoint("cd-src").await.unwrap().dir;
    std::fs::remove_file(Path::new(&dir).join("fs-1.img")).unwrap();
    let e = d
        .client
        .restore("cd-src", &into("broken", NS), true)
        .await
        .expect_err("CRIU cannot restore without the fs image");
    let (_, err) = e.api_error().expect("an API error");
    assert!(err.message.contains("broken"), "{err:?}");
    wait_until("the failed restore's container and snapshot to go", || {
        !cd.ctr_ok(&["containers", "ls", "-q"])
            .lines()
            .any(|l| l == "broken")
            && !cd.ctr_ok(&["snapshots", "ls"]).contains("broken")
    });
    assert_eq!(cd.ckptd_leases(), Vec::<String>::new());
    let _ = cd.ctr(&["containers", "rm", "taken"]);
}

/// A restore into a new container cancelled while CRIU, in the copy's shim under runc, holds
/// the tree it made (any CRIU that does not end: containerd's task start waits for it, and the
/// job used to wait with it for good): the job ends cancelled, CRIU and the half-made tree are
/// ended, nothing of the copy is left (container, snapshot, lease, shim), and the checkpoint
/// restores into it.
#[tokio::test]
async fn a_restore_cancelled_while_criu_holds_the_tree_ends_and_leaves_nothing() {
    held_restore_interrupted(Interrupt::Cancel).await;
}

/// The same restore with the daemon killed (kill -9) there: the restart's recovery waits for
/// containerd's task start as long as for a CRIU a crash left, then ends that CRIU as a cancel
/// would; the job fails, and the rest as above. The restart used to wait for containerd, whose
/// shim answers nothing of the task while its start runs: the daemon never answered.
#[tokio::test]
async fn a_daemon_killed_while_criu_holds_a_restore_starts_and_leaves_nothing() {
    held_restore_interrupted(Interrupt::Crash).await;
}

/// The same restore past its time (`job_timeout_secs`): ended as a cancel ends it, the job
/// failed as timed out, and the rest as above.
#[tokio::test]
async fn a_restore_past_its_time_while_criu_holds_the_tree_ends_and_leaves_nothing() {
    held_restore_interrupted(Interrupt::Timeout).await;
}

/// A checkpoint with the daemon killed (kill -9) while CRIU, in the container's shim under
/// runc, holds the container at post-dump: the restart's recovery waits for containerd's
/// checkpoint as long as for a CRIU a crash left, then ends that CRIU; the job fails, the
/// container runs on where it was, and a checkpoint of it then succeeds.
#[tokio::test]
async fn a_daemon_killed_while_criu_holds_a_checkpoint_starts_and_the_container_runs_on() {
    let cd = Containerd::start();
    let mut d = Daemon::start_with(&["--containerd-socket", cd.socket.to_str().unwrap()]).await;
    let pause = ckptd_tests::Pause::new();
    let log = cd.dir.path().join("held-dump.log");
    let annotation = format!("org.criu.config={}", pause.criu_conf().display());
    cd.run_looper_with("held-dump", &log, &["--annotation", &annotation]);
    d.checkpoint_killed_while_held(
        &pause,
        &ckptd_tests::checkpoint(target("held-dump"), "cd-held-dump"),
    )
    .await;
    assert_eq!(cd.status("held-dump"), "RUNNING", "{}", d.log());
    let before = lines(&log).len();
    wait_until("its log to grow", || lines(&log).len() > before + 3);
    let mounts = ckptd_tests::mounts_under(d.dir.path());
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    d.client
        .create_checkpoint(
            &ckptd_tests::checkpoint(target("held-dump"), "cd-held-dump-2"),
            true,
        )
        .await
        .expect("a checkpoint after the interrupted one");
    let _ = cd.ctr(&["tasks", "kill", "-s", "KILL", "held-dump"]);
}

async fn held_restore_interrupted(how: Interrupt) {
    // Names of their own: the tests run at once, and runc's state of a namespace is shared.
    let (source, copy, checkpoint) = match how {
        Interrupt::Cancel => ("held", "held-copy", "cd-held"),
        Interrupt::Timeout => ("late", "late-copy", "cd-late"),
        Interrupt::Crash => ("killed", "killed-copy", "cd-killed"),
    };
    let cd = Containerd::start();
    let mut d = Daemon::start_with(&["--containerd-socket", cd.socket.to_str().unwrap()]).await;
    // runc runs the CRIU of this container's dumps and restores with the script (the copy's
    // spec is the source's).
    let pause = ckptd_tests::Pause::new();
    let log = cd.dir.path().join(format!("{source}.log"));
    let annotation = format!("org.criu.config={}", pause.criu_conf().display());
    cd.run_looper_with(source, &log, &["--annotation", &annotation]);
    d.client
        .create_checkpoint(&ckptd_tests::checkpoint(target(source), checkpoint), true)
        .await
        .expect("checkpoint");
    let stopped_at = lines(&log).len();
    let req = RestoreRequest {
        target: target(copy),
        ..Default::default()
    };
    d.restore_interrupted_while_held(&pause, checkpoint, &req, how)
        .await;
    wait_until("nothing of the copy left", || {
        !cd.ctr_ok(&["containers", "ls", "-q"])
            .lines()
            .any(|l| l == copy)
            && !cd.ctr_ok(&["snapshots", "ls"]).contains(copy)
            && cd.shims(copy).is_empty()
    });
    assert_eq!(cd.ckptd_leases(), Vec::<String>::new());
    // CRIU works in the checkpoint's folder: the cgroup yard the ended one mounted there is
    // taken down.
    let mounts = ckptd_tests::mounts_under(d.dir.path());
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    let job = d
        .client
        .restore(checkpoint, &req, true)
        .await
        .expect("the checkpoint restores after the interrupted restore");
    assert_eq!(cd.status(copy), "RUNNING");
    let out = PathBuf::from(job.result.unwrap().output_log.expect("its log"));
    assert_counts_on(
        &out,
        stopped_at,
        "the copy restored after an interrupted restore",
    );
    let _ = cd.ctr(&["tasks", "kill", "-s", "KILL", copy]);
}

/// A daemon killed while it restores into a new container, holding the lease on its snapshot:
/// the restart's recovery settles the job either way, the copy running (containerd finished
/// the restore) or nothing of it left, no shim of containerd's included, and drops the lease.
/// Killed at two moments of the task's creation, whose outcome containerd decides alone: just
/// after containerd started the copy's shim (containerd 1.6 then forgot the shim, running, in 3
/// of 10 tries before the recovery ended such shims), and while CRIU restores the copy in it.
/// Then a restore in place killed as its new shim starts: the source running on, or stopped
/// with no shim left and restoring again.
#[tokio::test]
async fn a_daemon_killed_during_a_restore_into_a_new_container_leaves_it_whole_or_gone() {
    let cd = Containerd::start();
    let mut d = Daemon::start_with(&["--containerd-socket", cd.socket.to_str().unwrap()]).await;
    let stopped_at = cd.checkpointed_looper(&d).await;
    let req = RestoreRequest {
        target: target("copy"),
        ..Default::default()
    };
    let copy_gone = || {
        !cd.ctr_ok(&["containers", "ls", "-q"])
            .lines()
            .any(|l| l == "copy")
            && !cd.ctr_ok(&["snapshots", "ls"]).contains("copy")
    };
    let remove_copy = || {
        let _ = cd.ctr(&["tasks", "kill", "-s", "KILL", "copy"]);
        wait_until("the copy to stop", || cd.status("copy") != "RUNNING");
        cd.ctr_ok(&["tasks", "delete", "copy"]);
        cd.ctr_ok(&["containers", "rm", "copy"]);
        wait_until("the copy's snapshot to go", copy_gone);
    };
    let moments: [(&str, Reached); 2] = [
        ("containerd has started the copy's shim", |cd| {
            !cd.shims("copy").is_empty()
        }),
        ("CRIU restores the copy in its shim", |cd| {
            criu_under(&cd.shims("copy"))
        }),
    ];
    for (moment, reached) in moments {
        let job = d
            .restore_killed_when(
                "cd-src",
                &req,
                moment,
                || !cd.ckptd_leases().is_empty() && reached(&cd),
                remove_copy,
            )
            .await;
        match job.state {
            ckptd_api::JobState::Succeeded => {
                assert_eq!(cd.status("copy"), "RUNNING", "killed when {moment}");
                let out = PathBuf::from(job.result.unwrap().output_log.expect("its log"));
                assert_counts_on(&out, stopped_at, "the copy");
                assert_eq!(cd.shims("copy").len(), 1, "killed when {moment}");
                remove_copy();
            }
            state => {
                assert_eq!(
                    state,
                    ckptd_api::JobState::Failed,
                    "killed when {moment}: {:?}",
                    job.error
                );
                wait_until("what the killed restore made to go", copy_gone);
                wait_until_else(
                    "the killed restore's shim to end",
                    || cd.shims("copy").is_empty(),
                    || format!("killed when {moment}; its shims: {:?}", cd.shims("copy")),
                );
            }
        }
        assert_eq!(
            cd.ckptd_leases(),
            Vec::<String>::new(),
            "killed when {moment}"
        );
    }

    // In place: the checkpoint's own container, whose stopped task the restore deletes before
    // it creates the task again, in a new shim; killed as that shim starts.
    let source_log = cd.dir.path().join("source.log");
    let old_shims = std::cell::RefCell::new(cd.shims("source"));
    let written = std::cell::Cell::new(lines(&source_log).len());
    let job = d
        .restore_killed_when(
            "cd-src",
            &RestoreRequest::default(),
            "the source's new shim started",
            || {
                cd.shims("source")
                    .iter()
                    .any(|p| !old_shims.borrow().contains(p))
            },
            || {
                let _ = cd.ctr(&["tasks", "kill", "-s", "KILL", "source"]);
                wait_until("the source to stop", || cd.status("source") == "STOPPED");
                *old_shims.borrow_mut() = cd.shims("source");
                written.set(lines(&source_log).len());
            },
        )
        .await;
    let written = written.get();
    match job.state {
        ckptd_api::JobState::Succeeded => assert_eq!(cd.status("source"), "RUNNING"),
        state => {
            assert_eq!(
                state,
                ckptd_api::JobState::Failed,
                "in place: {:?}",
                job.error
            );
            wait_until_else(
                "the killed restore in place's shim to end",
                || cd.shims("source").is_empty(),
                || format!("killed in place; its shims: {:?}", cd.shims("source")),
            );
            d.client
                .restore("cd-src", &RestoreRequest::default(), true)
                .await
                .expect("the checkpoint restores in place after the killed restore");
            assert_eq!(cd.status("source"), "RUNNING");
        }
    }
    // What the source wrote since the last try counts on from where the checkpoint stopped it.
    wait_until("the source restored in place to write", || {
        lines(&source_log).len() >= written + 5
    });
    let got = lines(&source_log).split_off(written);
    for (i, l) in got.iter().enumerate() {
        assert_eq!(
            l.trim(),
            (stopped_at + i).to_string(),
            "the source restored in place, from {stopped_at}: {got:?}"
        );
    }
}

/// Kubernetes' move of a container between nodes, through a registry: node A's checkpoint of a
/// containerd looper pushed as a checkpoint image, node A's container gone, and node B (its own
/// containerd and ckptd, the same image) restores it from the image: the container is made again
/// from the record the checkpoint keeps, and counts on from where it stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_containerd_container_moves_to_another_node_through_a_registry() {
    let reg = ckptd_tests::RegistryServer::start();
    let a_node = Containerd::start();
    let b_node = Containerd::start_beside(&a_node);
    let creds = reg.credentials_file("creds", None);
    let conf = a_node.dir.path().join("ckptd.toml");
    std::fs::write(&conf, reg.config("hub", "k8s/checkpoints", &creds)).unwrap();
    let start = |node: &Containerd| {
        let args = [
            "--containerd-socket".to_owned(),
            node.socket.display().to_string(),
            "--config".to_owned(),
            conf.display().to_string(),
        ];
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Daemon::start_with(&args).await
        }
    };
    let a = start(&a_node).await;
    let b = start(&b_node).await;
    let log = a_node.dir.path().join("mover.log");
    a_node.run_looper("mover", &log);
    let cp = a
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(target("mover"), "mv"), true)
        .await
        .expect("checkpoint")
        .checkpoint;
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&cp.dir).join("containerd.json")).unwrap())
            .expect("the container's record");
    assert_eq!(record["image"], IMAGE, "{record}");
    let stopped_at = lines(&log).len();
    let job = a
        .client
        .push("mv", "hub", Some("mover-1"), true, true)
        .await
        .expect("push");
    assert_eq!(job.state, ckptd_api::JobState::Succeeded, "{:?}", job.error);
    // Node A goes away with its container.
    a_node.ctr_ok(&["tasks", "delete", "mover"]);
    a_node.ctr_ok(&["containers", "rm", "mover"]);
    drop(a);

    let image = format!("{}/k8s/checkpoints:mover-1", reg.host);
    let out = b.ckpt(&["restore", "--image", &image]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(b_node.status("mover"), "RUNNING");
    let out_log = PathBuf::from(
        said.lines()
            .find_map(|l| l.strip_prefix("output: "))
            .unwrap_or_else(|| panic!("the container's log on node B: {said}")),
    );
    assert_counts_on(&out_log, stopped_at, "the moved looper");
}

/// The pod shape: a sandbox container holds the network namespace and an app container joins it
/// (`--with-ns network:/proc/PID/ns/net`, as a pod's containers join their pause container's).
/// The app is checkpointed with that namespace as external and restored into the same sandbox's
/// namespace; once the sandbox is gone, the restore is refused before any job, saying which
/// namespace it needs.
#[tokio::test]
async fn a_container_in_a_pod_sandbox_restores_into_the_sandbox_s_network_namespace() {
    let cd = Containerd::start();
    let d = Daemon::start_with(&["--containerd-socket", cd.socket.to_str().unwrap()]).await;
    cd.ctr_ok(&[
        "run",
        "-d",
        IMAGE,
        "sandbox",
        "/bin/sh",
        "-c",
        "sleep 100000",
    ]);
    let sandbox_pid = || -> i32 {
        cd.ctr_ok(&["tasks", "ls"])
            .lines()
            .find(|l| l.split_whitespace().next() == Some("sandbox"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .expect("the sandbox's pid")
    };
    let netns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let pid = sandbox_pid();
    let log = cd.dir.path().join("app.log");
    cd.ctr_ok(&[
        "run",
        "-d",
        "--with-ns",
        &format!("network:/proc/{pid}/ns/net"),
        "--log-uri",
        &format!("file://{}", log.display()),
        IMAGE,
        "app",
        "/bin/sh",
        "-c",
        CONTAINER_LOOPER_STDOUT,
    ]);
    wait_until("its output", || lines(&log).len() >= 3);
    let cp = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(target("app"), "in-pod"), true)
        .await
        .expect("checkpoint of a container in the sandbox's network namespace");
    assert_eq!(cp.checkpoint.status, CheckpointStatus::Ready);
    let stopped_at = lines(&log).len();
    assert_eq!(cd.status("sandbox"), "RUNNING", "the sandbox is left alone");

    let job = d
        .client
        .restore("in-pod", &RestoreRequest::default(), true)
        .await
        .expect("restore into the sandbox");
    let restored = job.result.and_then(|r| r.pid).expect("the restored pid");
    assert_eq!(cd.status("app"), "RUNNING");
    assert_eq!(
        netns(restored),
        netns(pid),
        "the restored app is in the sandbox's network namespace"
    );
    wait_until("the restored app to write", || {
        lines(&log).len() > stopped_at + 5
    });
    ckptd_tests::assert_counts(&lines(&log), "the restored app");

    // The sandbox gone: a restore is refused before any job, naming the namespace it needs.
    d.client
        .create_checkpoint(&ckptd_tests::checkpoint(target("app"), "in-pod-2"), true)
        .await
        .expect("checkpoint again");
    cd.ctr_ok(&["tasks", "kill", "-s", "KILL", "sandbox"]);
    wait_until("the sandbox to stop", || cd.status("sandbox") == "STOPPED");
    let e = d
        .client
        .restore("in-pod-2", &RestoreRequest::default(), true)
        .await
        .expect_err("the sandbox's namespace is gone");
    let (status, err) = e.api_error().unwrap();
    assert_eq!(status.as_u16(), 422, "{err:?}");
    assert!(
        err.message.contains(&format!("/proc/{pid}/ns/net")),
        "{err:?}"
    );
    let restores = d
        .client
        .jobs(&ckptd_tests::q("kind=restore"))
        .await
        .unwrap();
    assert_eq!(restores.items.len(), 1, "{:?}", restores.items);
}
