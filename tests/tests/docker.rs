//! Docker containers through ckptd, against a real dockerd (experimental mode, its own data root
//! and socket) that the test starts when it is not already running and stops afterwards. The
//! image is imported from a busybox-static root filesystem (no registry is reachable).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ckptd_api::{CheckpointStatus, CreateCheckpoint, RestoreRequest, Target as ApiTarget};
use ckptd_tests::{wait_until, Daemon, Interrupt};

const SOCKET: &str = "/run/ckptd-test-docker.sock";
/// runc's state of the test dockerd's containers (`<exec-root>/runtime-runc/moby`).
const RUNC_ROOT: &str = "/run/ckptd-test-docker/runtime-runc/moby";
const IMAGE: &str = "ckptd-busybox:2";
const LOOPER: &str = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.2; done";

/// A dockerd for the tests; stopped on drop if the test started it.
struct Dockerd {
    started: Option<std::process::Child>,
    work: tempfile::TempDir,
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{SOCKET}"))
        .args(args)
        .output()
        .expect("docker CLI (make setup installs docker.io)")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Dockerd {
    fn start() -> Dockerd {
        let work = tempfile::tempdir().unwrap();
        // A dockerd of an earlier run that is still stopping: wait for it; a stale pid file of
        // one that is gone: remove it.
        let pidfile = Path::new("/run/ckptd-test-docker.pid");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            if docker(&["info"]).status.success() {
                break;
            }
            if !ckptd_tests::alive(pid) {
                let _ = std::fs::remove_file(pidfile);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dockerd {pid} does not stop"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let running = docker(&["info"]).status.success();
        let started = if running {
            None
        } else {
            let cfg = work.path().join("daemon.json");
            std::fs::write(&cfg, r#"{"experimental": true}"#).unwrap();
            let log = std::fs::File::create(work.path().join("dockerd.log")).unwrap();
            let child = Command::new("dockerd")
                .arg("--config-file")
                .arg(&cfg)
                .args([
                    "--data-root",
                    "/var/lib/ckptd-test-docker",
                    "--exec-root",
                    "/run/ckptd-test-docker",
                    "--pidfile",
                    "/run/ckptd-test-docker.pid",
                    "--host",
                    &format!("unix://{SOCKET}"),
                    "--iptables=false",
                    "--bridge=none",
                ])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("dockerd (make setup installs docker.io)");
            Some(child)
        };
        let mut d = Dockerd { started, work };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !docker(&["info"]).status.success() {
            let log =
                std::fs::read_to_string(d.work.path().join("dockerd.log")).unwrap_or_default();
            if let Some(c) = d.started.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("dockerd exited with {st}:\n{log}");
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dockerd did not answer in 60 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let info = docker_ok(&["info", "--format", "{{.ExperimentalBuild}}"]);
        assert_eq!(info.trim(), "true", "the test dockerd must be experimental");
        if !docker(&["image", "inspect", IMAGE]).status.success() {
            let rootfs = d.work.path().join("rootfs");
            std::fs::create_dir_all(rootfs.join("bin")).unwrap();
            std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
            for a in ["sh", "sleep", "echo", "cat", "nc", "tee"] {
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
            }
            let st = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "tar -C {} -c . | DOCKER_HOST=unix://{SOCKET} docker import - {IMAGE}",
                    rootfs.display()
                ))
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "docker import: {}",
                String::from_utf8_lossy(&st.stderr)
            );
        }
        d
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.started.take() {
            ckptd_tests::signal(c.id() as i32, libc::SIGTERM);
            let _ = c.wait();
        }
    }
}

/// A container the test made; removed on drop.
struct Ctr(String);

impl Ctr {
    fn run(name: &str) -> Ctr {
        Self::run_script(name, LOOPER)
    }
    fn run_script(name: &str, script: &str) -> Ctr {
        let _ = docker(&["rm", "-f", name]);
        docker_ok(&["run", "-d", "--name", name, IMAGE, "/bin/sh", "-c", script]);
        let c = Ctr(name.to_owned());
        wait_until("output", || c.logs().len() >= 3);
        c
    }
    fn create(name: &str) -> Ctr {
        let _ = docker(&["rm", "-f", name]);
        docker_ok(&["create", "--name", name, IMAGE, "/bin/sh", "-c", LOOPER]);
        Ctr(name.to_owned())
    }
    fn logs(&self) -> Vec<String> {
        docker_ok(&["logs", &self.0])
            .lines()
            .map(str::to_owned)
            .collect()
    }
    fn status(&self) -> String {
        docker_ok(&["inspect", "--format", "{{.State.Status}}", &self.0])
            .trim()
            .to_owned()
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

fn target(id: &str) -> Option<ApiTarget> {
    Some(ApiTarget::Container {
        id: id.into(),
        runtime: ckptd_api::Runtime::Docker,
        root: None,
        bundle: None,
        namespace: None,
    })
}

/// Asks for a checkpoint of `target` that must be refused: the API's status and error.
async fn refused(d: &Daemon, target: Option<ApiTarget>) -> (u16, ckptd_api::ErrorInfo) {
    let e = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                target,
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap_err();
    let (status, err) = e
        .api_error()
        .unwrap_or_else(|| panic!("not an API error: {e}"));
    (status.as_u16(), err.clone())
}

fn counts(lines: &[String], what: &str) {
    ckptd_tests::assert_counts(lines, what);
}

/// Whether the container's logs grow within 3 s.
fn grows(c: &Ctr) -> bool {
    let before = c.logs().len();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        if c.logs().len() > before {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn docker_scenarios() {
    let began = std::time::SystemTime::now();
    let _dockerd = Dockerd::start();
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        format!("docker_socket = \"{SOCKET}\"\ndocker_runc_root = \"{RUNC_ROOT}\"\n"),
    )
    .unwrap();
    let mut d = Daemon::start_with(&["--config", cfg.path().to_str().unwrap()]).await;
    ckptd_tests::scenarios(vec![
        (
            "checkpoint1: looper stops, restored in place",
            Box::pin(checkpoint_and_restore_in_place(&d)),
        ),
        (
            "checkpoint2: looper2 in a custom dir, restored into a clone and a new name",
            Box::pin(custom_dir_clone_and_new_name(&d)),
        ),
        ("leave_running", Box::pin(leave_running(&d))),
        ("established TCP", Box::pin(established_tcp(&d))),
        (
            "missing and stopped containers",
            Box::pin(missing_and_stopped(&d)),
        ),
        (
            "a Docker container named without --runtime docker",
            Box::pin(named_without_its_runtime(&d)),
        ),
    ])
    .await;
    // Every restore through Docker had containerd unpack the images into /tmp, and containerd
    // leaves that copy (containerd#10166): the restores removed theirs.
    let left = unpacked_since(began);
    assert!(
        left.is_empty(),
        "copies of checkpoints' images containerd unpacked are left: {left:?}"
    );
    killed_mid_restore(&mut d).await;
    killed_mid_checkpoint(&mut d).await;
    cancelled_mid_checkpoint(&d).await;
    held_restore_interrupted(&mut d, Interrupt::Cancel).await;
    held_restore_interrupted(&mut d, Interrupt::Timeout).await;
    held_restore_interrupted(&mut d, Interrupt::Crash).await;
}

/// Where runc reads the CRIU options of a restore Docker runs.
const RUNC_CONF: &str = "/etc/criu/runc.conf";

/// runc.conf with a line added, put back as it was on drop.
struct RuncConfLine {
    before: Option<String>,
}

impl RuncConfLine {
    /// runc.conf with `pause`'s CRIU options: every CRIU runc runs is held where it is armed.
    fn pausing(pause: &ckptd_tests::Pause) -> RuncConfLine {
        Self::add(
            std::fs::read_to_string(pause.criu_conf())
                .unwrap()
                .trim_end(),
        )
    }
    fn add(line: &str) -> RuncConfLine {
        let before = std::fs::read_to_string(RUNC_CONF).ok();
        std::fs::create_dir_all("/etc/criu").unwrap();
        std::fs::write(
            RUNC_CONF,
            format!("{}{line}\n", before.clone().unwrap_or_default()),
        )
        .unwrap();
        RuncConfLine { before }
    }
}

impl Drop for RuncConfLine {
    fn drop(&mut self) {
        let _ = match &self.before {
            Some(t) => std::fs::write(RUNC_CONF, t),
            None => std::fs::remove_file(RUNC_CONF),
        };
    }
}

/// A restore interrupted while CRIU, under Docker's shim and runc, holds the tree it made before
/// resuming it (any CRIU that does not end: Docker's API has no way to stop a start). Cancelled:
/// the job ends cancelled (it used to wait for Docker for good); past its time, it fails as
/// timed out, the same way. The daemon killed (kill -9): the restart's recovery waits for
/// Docker's start as long as for a CRIU a crash left, then ends that CRIU as a cancel would, and
/// the job fails (the restart used to wait for Docker's inspect, which waits for the start: the
/// daemon never answered). Each way CRIU and the half-made tree
/// are ended, Docker records the container exited, nothing of the images is left in Docker's
/// directory or /tmp, and the checkpoint restores.
async fn held_restore_interrupted(d: &mut Daemon, how: Interrupt) {
    let (name, checkpoint) = match how {
        Interrupt::Cancel => ("ckptd-looper-cancelled", "cancelled-restore"),
        Interrupt::Timeout => ("ckptd-looper-late", "late-restore"),
        Interrupt::Crash => ("ckptd-looper-held", "held-restore"),
    };
    let began = std::time::SystemTime::now();
    let looper = Ctr::run(name);
    d.client
        .create_checkpoint(&ckptd_tests::checkpoint(target(name), checkpoint), true)
        .await
        .expect("docker checkpoint");
    let stopped_at = looper.logs().len();
    let pause = ckptd_tests::Pause::new();
    let conf = RuncConfLine::pausing(&pause);
    d.restore_interrupted_while_held(&pause, checkpoint, &RestoreRequest::default(), how)
        .await;
    drop(conf);
    wait_until("Docker to record the looper ended", || {
        looper.status() == "exited"
    });
    assert!(!grows(&looper), "an interrupted restore runs");
    let linked = linked_copies(&docker_root());
    assert!(linked.is_empty(), "left in Docker's directory: {linked:?}");
    let left = unpacked_since(began);
    assert!(left.is_empty(), "left by containerd: {left:?}");
    d.client
        .restore(checkpoint, &RestoreRequest::default(), true)
        .await
        .expect("the checkpoint restores after the interrupted restore");
    wait_until("logs to continue", || looper.logs().len() > stopped_at + 3);
    counts(
        &looper.logs(),
        "docker logs of the looper restored after an interrupted restore",
    );
}

/// Docker's root directory.
fn docker_root() -> std::path::PathBuf {
    docker_ok(&["info", "--format", "{{.DockerRootDir}}"])
        .trim()
        .into()
}

/// The images ckptd linked into Docker's checkpoints directories, of every container (a restore
/// into a new name links them under the container it made): `ckptd-*` there.
fn linked_copies(root: &Path) -> Vec<std::path::PathBuf> {
    let containers = std::fs::read_dir(root.join("containers"));
    containers
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|c| {
            std::fs::read_dir(c.path().join("checkpoints"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ckptd-"))
        .map(|e| e.path())
        .collect()
}

/// The directories containerd unpacked a checkpoint into for a restore (`/tmp/ctrd-checkpoint*`)
/// since `t`.
fn unpacked_since(t: std::time::SystemTime) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("ctrd-checkpoint")
        })
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= t)
        })
        .map(|e| e.path())
        .collect()
}

/// That `looper` runs, in Docker's record (`running`, not `paused`) and in fact (its logs grow
/// and count on from where they were) `when`.
fn runs_on(d: &Daemon, looper: &Ctr, when: &str) {
    assert_eq!(looper.status(), "running", "{}", d.log());
    let before = looper.logs().len();
    wait_until("the looper's logs to grow", || {
        looper.logs().len() > before + 3
    });
    counts(&looper.logs(), &format!("docker logs of the looper {when}"));
}

/// A daemon killed (kill -9) while CRIU, run through runc on a Docker container that ckptd
/// paused through Docker, holds it at post-dump (its images written, the container frozen): the
/// restart's recovery waits for that CRIU as long as for any a crash left, ends it, and unpauses
/// the container through Docker; the job fails, the looper runs on from where it was, nothing
/// is left mounted, and a checkpoint of it then succeeds.
async fn killed_mid_checkpoint(d: &mut Daemon) {
    const NAME: &str = "ckptd-looper-killed-dump";
    let looper = Ctr::run(NAME);
    let pause = ckptd_tests::Pause::new();
    let conf = RuncConfLine::pausing(&pause);
    d.checkpoint_killed_while_held(
        &pause,
        &ckptd_tests::checkpoint(target(NAME), "killed-dump"),
    )
    .await;
    drop(conf);
    runs_on(d, &looper, "after a killed checkpoint");
    let mounts = ckptd_tests::mounts_under(d.dir.path());
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    d.client
        .create_checkpoint(
            &ckptd_tests::checkpoint(target(NAME), "killed-dump-2"),
            true,
        )
        .await
        .expect("a checkpoint after the killed one");
}

/// A checkpoint cancelled while CRIU, run through runc on a Docker container ckptd paused,
/// holds it at post-dump: the job ends cancelled, CRIU is ended, and the container runs on,
/// `running` in Docker's record too. An ended CRIU leaves the cgroup thawed (it thaws it once it
/// holds the tasks) while Docker still records the pause, and Docker's unpause then failed
/// ("container not paused"): the container ran and Docker showed it paused for good.
async fn cancelled_mid_checkpoint(d: &Daemon) {
    const NAME: &str = "ckptd-looper-cancelled-dump";
    let looper = Ctr::run(NAME);
    let pause = ckptd_tests::Pause::new();
    let conf = RuncConfLine::pausing(&pause);
    pause.arm("post-dump");
    let made = d
        .client
        .create_checkpoint(
            &ckptd_tests::checkpoint(target(NAME), "cancelled-dump"),
            false,
        )
        .await
        .unwrap();
    let criu = pause.reached("post-dump");
    let id = made.job.id.to_string();
    d.client.cancel_job(&id).await.unwrap();
    let job = d.wait_ended(&id).await;
    drop(conf);
    assert_eq!(job.state, ckptd_api::JobState::Cancelled, "{job:?}");
    wait_until("the CRIU held at post-dump to end", || {
        !ckptd_tests::alive(criu) || ckptd_tests::proc_state(criu) == Some('Z')
    });
    runs_on(d, &looper, "after a cancelled checkpoint");
}

/// A daemon killed while Docker starts a container from a checkpoint (the images linked into
/// the container's checkpoints directory under Docker's root, Docker's start not answered yet):
/// the restart settles the job either way, the container running on from where it stopped or
/// not running, and leaves no copy of the images (process memory) in Docker's directory; the
/// checkpoint still restores.
async fn killed_mid_restore(d: &mut Daemon) {
    const NAME: &str = "ckptd-looper-killed";
    let looper = Ctr::run(NAME);
    d.client
        .create_checkpoint(
            &ckptd_tests::checkpoint(target(NAME), "killed-restore"),
            true,
        )
        .await
        .expect("docker checkpoint");
    let stopped_at = looper.logs().len();
    let root = docker_root();
    let has_copy = || !linked_copies(&root).is_empty();
    let job = d
        .restore_killed_when(
            "killed-restore",
            &RestoreRequest::default(),
            "Docker starts the looper from the images",
            has_copy,
            || {
                docker_ok(&["kill", NAME]);
                wait_until("the restored looper to stop", || {
                    looper.status() != "running"
                });
            },
        )
        .await;
    let left = linked_copies(&root);
    assert!(
        left.is_empty(),
        "the images' copy outlived the restart: {left:?}"
    );
    match job.state {
        ckptd_api::JobState::Succeeded => {
            assert_eq!(looper.status(), "running");
        }
        state => {
            assert_eq!(state, ckptd_api::JobState::Failed, "{:?}", job.error);
            assert!(!grows(&looper), "a restore recorded as failed runs");
            d.client
                .restore("killed-restore", &RestoreRequest::default(), true)
                .await
                .expect("the checkpoint restores after the killed restore");
        }
    }
    wait_until("logs to continue", || looper.logs().len() > stopped_at + 3);
    counts(
        &looper.logs(),
        "docker logs of the looper restored after a killed restore",
    );

    // Into a name Docker does not know: the container the restore made goes with a failed
    // job, or runs on from where the checkpoint stopped it.
    const NEW: &str = "ckptd-killed-new";
    let new = Ctr(NEW.to_owned());
    let into = RestoreRequest {
        target: target(NEW),
        ..Default::default()
    };
    let job = d
        .restore_killed_when(
            "killed-restore",
            &into,
            "Docker starts a container the restore made",
            has_copy,
            || {
                docker_ok(&["rm", "-f", NEW]);
            },
        )
        .await;
    assert!(!has_copy(), "the images' copy outlived the restart");
    match job.state {
        ckptd_api::JobState::Succeeded => {
            assert_eq!(new.status(), "running");
            wait_until("its logs", || new.logs().len() > 3);
            let got = new.logs();
            for (i, l) in got.iter().enumerate() {
                assert_eq!(l.trim(), (stopped_at + i).to_string(), "{got:?}");
            }
        }
        state => {
            assert_eq!(state, ckptd_api::JobState::Failed, "{:?}", job.error);
            let gone = docker(&["inspect", NEW]);
            assert!(
                !gone.status.success(),
                "the container the killed restore made is still there: {}",
                String::from_utf8_lossy(&gone.stdout)
            );
        }
    }
}

/// A Docker container named as runc's: the API's answer says Docker has it, in the API's words;
/// `ckpt create NAME` without `--runtime` finds it in Docker, the one runtime that has it.
async fn named_without_its_runtime(d: &Daemon) {
    let c = Ctr::run("ckptd-which");
    let runc = Some(ApiTarget::Container {
        id: c.0.clone(),
        runtime: ckptd_api::Runtime::Runc,
        root: None,
        bundle: None,
        namespace: None,
    });
    let (status, err) = refused(d, runc).await;
    assert_eq!(status, 422);
    assert!(
        err.hint().unwrap().contains("\"runtime\": \"docker\""),
        "{err}"
    );
    // Told runc: refused, with the hint in ckpt's words.
    let out = d.ckpt(&["create", &c.0, "--runtime", "runc"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "hint: docker knows a container named {0}: ckpt create {0} --runtime docker",
            c.0
        )),
        "{stderr}"
    );
    let out = d.ckpt(&["create", &c.0, "which", "--leave-running"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is a docker container (--runtime docker)", c.0)),
        "{stderr}"
    );
    let cp = d.client.checkpoint("which").await.unwrap();
    assert!(
        matches!(
            cp.target,
            ApiTarget::Container {
                runtime: ckptd_api::Runtime::Docker,
                ..
            }
        ),
        "{:?}",
        cp.target
    );
}

/// The seed's first scenario: looper, checkpointed as checkpoint1: it stops and its logs stop;
/// restored, its logs continue from where they stopped.
async fn checkpoint_and_restore_in_place(d: &Daemon) {
    let looper = Ctr::run("ckptd-looper");
    let cp = d
        .client
        .create_checkpoint(
            &ckptd_tests::checkpoint(target("ckptd-looper"), "checkpoint1"),
            true,
        )
        .await
        .expect("docker checkpoint");
    assert_eq!(cp.checkpoint.status, CheckpointStatus::Ready);
    // ckptd ran runc itself on Docker's container: CRIU's statistics and log are there.
    let stats = cp.checkpoint.stats.expect("CRIU statistics");
    assert!(stats.pages_written > 0);
    assert!(Path::new(&cp.checkpoint.dir).join("dump.log").is_file());
    assert!(Path::new(&cp.checkpoint.dir)
        .join("descriptors.json")
        .is_file());
    assert_eq!(looper.status(), "exited", "docker inspect tells the truth");
    assert!(!docker_ok(&["ps", "--format", "{{.Names}}"]).contains("ckptd-looper"));
    let stopped_at = looper.logs().len();
    assert!(!grows(&looper), "its logs stop");
    let job = d
        .client
        .restore("checkpoint1", &RestoreRequest::default(), true)
        .await
        .expect("restore in place");
    assert_eq!(
        job.result.unwrap().container.as_deref(),
        Some("ckptd-looper")
    );
    assert_eq!(looper.status(), "running");
    wait_until("logs to continue", || looper.logs().len() > stopped_at + 3);
    counts(&looper.logs(), "docker logs of the restored looper");
    // Docker's own checkpoints directory is left as it was.
    assert!(
        docker_ok(&["checkpoint", "ls", "ckptd-looper"])
            .lines()
            .count()
            <= 1
    );
    // Restoring onto a running container: 409 with the fix.
    let e = d
        .client
        .restore("checkpoint1", &RestoreRequest::default(), true)
        .await
        .unwrap_err();
    let (status, err) = e.api_error().unwrap();
    assert_eq!(status.as_u16(), 409, "{err}");
    assert!(err.hint().unwrap().contains("docker stop"));
}

/// The seed's second scenario: looper2 into a custom directory, restored into looper-clone (which
/// Docker itself refuses: "custom checkpointdir is not supported"), and into a name Docker does
/// not know.
async fn custom_dir_clone_and_new_name(d: &Daemon) {
    let looper2 = Ctr::run("ckptd-looper2");
    let custom = tempfile::tempdir().unwrap();
    let cp2 = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                checkpoint_dir: Some(custom.path().display().to_string()),
                ..ckptd_tests::checkpoint(target("ckptd-looper2"), "checkpoint2")
            },
            true,
        )
        .await
        .expect("checkpoint into a custom dir")
        .checkpoint;
    assert_eq!(Path::new(&cp2.dir), custom.path().join("checkpoint2"));
    let stopped2 = looper2.logs();
    let clone = Ctr::create("ckptd-looper-clone");
    d.client
        .restore(
            "checkpoint2",
            &RestoreRequest {
                target: target("ckptd-looper-clone"),
                ..Default::default()
            },
            true,
        )
        .await
        .expect("restore into looper-clone");
    assert_eq!(clone.status(), "running");
    wait_until("the clone's logs", || clone.logs().len() > 3);
    let first: usize = clone.logs()[0].trim().parse().unwrap();
    assert_eq!(
        first,
        stopped2.len(),
        "looper-clone continues where looper2 stopped: {:?}",
        clone.logs()
    );

    // Into a name Docker does not know: created from the configuration ckptd recorded with the
    // checkpoint (image, command, host config), then started from the images.
    let created = Ctr("ckptd-looper-new".into());
    let _ = docker(&["rm", "-f", &created.0]);
    let job = d
        .client
        .restore(
            "checkpoint2",
            &RestoreRequest {
                target: target("ckptd-looper-new"),
                ..Default::default()
            },
            true,
        )
        .await
        .expect("restore into a container ckptd creates");
    assert_eq!(
        job.result.unwrap().container.as_deref(),
        Some("ckptd-looper-new")
    );
    assert_eq!(created.status(), "running");
    let image = docker_ok(&["inspect", "--format", "{{.Config.Image}}", &created.0]);
    assert_eq!(image.trim(), IMAGE);
    wait_until("the new container's logs", || created.logs().len() > 3);
    let first: usize = created.logs()[0].trim().parse().unwrap();
    assert_eq!(first, stopped2.len(), "{:?}", created.logs());
}

/// leave_running: the container runs on, Docker still sees it running.
async fn leave_running(d: &Daemon) {
    let lr = Ctr::run("ckptd-looper-lr");
    d.client
        .create_checkpoint(
            &CreateCheckpoint {
                target: target("ckptd-looper-lr"),
                leave_running: true,
                ..Default::default()
            },
            true,
        )
        .await
        .expect("leave_running");
    assert_eq!(lr.status(), "running");
    assert!(grows(&lr));
    counts(&lr.logs(), "a container left running");
}

/// A container holding an established loopback TCP connection: refused with the hint, then
/// checkpointed with tcp_established, which Docker's own API cannot pass.
async fn established_tcp(d: &Daemon) {
    let tcp = Ctr::run_script(
        "ckptd-looper-tcp",
        "sleep 100000 | nc -l -p 5000 >/dev/null & sleep 0.5; \
         sleep 100000 | nc 127.0.0.1 5000 >/dev/null & \
         i=0; while true; do echo $i; i=$((i+1)); sleep 0.2; done",
    );
    let e = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                target: target("ckptd-looper-tcp"),
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap_err();
    assert!(
        e.api_error()
            .unwrap()
            .1
            .hint()
            .unwrap()
            .contains("tcp_established"),
        "{e}"
    );
    assert_eq!(
        tcp.status(),
        "running",
        "a failed dump leaves the container running"
    );
    d.client
        .create_checkpoint(
            &CreateCheckpoint {
                tcp_established: true,
                ..ckptd_tests::checkpoint(target("ckptd-looper-tcp"), "tcp1")
            },
            true,
        )
        .await
        .expect("tcp_established checkpoint");
    // Docker's restore of established connections fails in CRIU (Docker brings a restored
    // container's network up only after CRIU has run); ckptd says so in CRIU's words, not
    // "criu failed: type NOTIFY errno 0", with CRIU's log kept in the checkpoint's directory.
    let e = d
        .client
        .restore("tcp1", &RestoreRequest::default(), true)
        .await
        .unwrap_err();
    let (status, err) = e.api_error().unwrap();
    assert_eq!(status.as_u16(), 500);
    assert!(err.message.contains("Network is unreachable"), "{err}");
    assert!(!err.message.contains("NOTIFY"), "{err}");
    assert!(err.hint().unwrap().contains("network"), "{err}");
    assert!(Path::new(err.details["log"].as_str().unwrap()).is_file());
    assert_ne!(tcp.status(), "running");
    assert!(
        !Path::new("/etc/criu/runc.conf").exists()
            || !std::fs::read_to_string("/etc/criu/runc.conf")
                .unwrap()
                .contains("ckptd"),
        "runc.conf is put back"
    );
}

/// Errors: no such container, a stopped one.
async fn missing_and_stopped(d: &Daemon) {
    assert_eq!(refused(d, target("ckptd-nope")).await.0, 422);
    let stopped = Ctr::create("ckptd-stopped");
    let (status, err) = refused(d, target(&stopped.0)).await;
    assert_eq!(status, 422);
    assert!(err.hint().unwrap().contains("docker start"), "{err}");
}

/// Docker not reachable: 503 with the fix, in Docker's words.
#[tokio::test]
async fn docker_unreachable() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        "docker_socket = \"/run/ckptd-no-docker.sock\"\n",
    )
    .unwrap();
    let d = Daemon::start_with(&["--config", cfg.path().to_str().unwrap()]).await;
    let (status, err) = refused(&d, target("ckptd-looper")).await;
    assert_eq!(status, 503);
    assert!(err.hint().unwrap().contains("docker_socket"), "{err}");
    assert!(
        err.message
            .starts_with("cannot reach Docker at /run/ckptd-no-docker.sock"),
        "{err}"
    );
    assert!(!err.message.contains("ckptd at"), "{err}");
}
