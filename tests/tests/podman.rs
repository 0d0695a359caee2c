//! Podman containers through ckptd, against the real Podman (4.3.1 with runc, `make setup`
//! installs it and its containers.conf): Podman's REST API on a socket the test starts
//! (`podman system service`), the image imported from a busybox-static root filesystem (no
//! registry is reachable). `podman ps` and `podman logs` are the witnesses.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ckptd_api::query::ArchiveQuery;
use ckptd_api::{
    ArchiveFormat, CheckpointStatus, CreateCheckpoint, CreateSchedule, RestoreRequest, Retention,
    RunStatus, ScheduleOptions, Target as ApiTarget,
};
use ckptd_tests::{wait_until, Daemon, Interrupt};

const IMAGE: &str = "localhost/ckptd-busybox:1";
const LOOPER: &str = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done";

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("podman (make setup installs it)")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Podman's API service on a socket of the test's own; stopped on drop.
struct Service {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
}

impl Service {
    fn start() -> Service {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("podman system service");
        wait_until("Podman's API socket", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        ensure_image();
        Service {
            child,
            _dir: dir,
            socket,
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The busybox image, imported once from a root filesystem made here.
fn ensure_image() {
    if podman(&["image", "exists", IMAGE]).status.success() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let rootfs = d.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("/bin/busybox");
    for applet in ["sh", "sleep", "echo", "cat", "head", "tr"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let tar = d.path().join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    podman_ok(&["import", "-q", tar.to_str().unwrap(), IMAGE]);
}

/// A Podman container the test started or ckptd restored; removed on drop.
struct Ctr(String);

impl Ctr {
    fn run(name: &str) -> Ctr {
        let _ = podman(&["rm", "-f", name]);
        podman_ok(&["run", "-d", "--name", name, IMAGE, "/bin/sh", "-c", LOOPER]);
        let c = Ctr(name.to_owned());
        wait_until("output", || c.logs().len() >= 3);
        c
    }
    /// `run`, with runc running the CRIU of this container's dumps and restores with `pause`'s
    /// script (the container's `org.criu.config`).
    fn run_held(name: &str, pause: &ckptd_tests::Pause) -> Ctr {
        let _ = podman(&["rm", "-f", name]);
        let annotation = format!("org.criu.config={}", pause.criu_conf().display());
        podman_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--annotation",
            &annotation,
            IMAGE,
            "/bin/sh",
            "-c",
            LOOPER,
        ]);
        let c = Ctr(name.to_owned());
        wait_until("output", || c.logs().len() >= 3);
        c
    }
    fn named(name: &str) -> Ctr {
        let _ = podman(&["rm", "-f", name]);
        Ctr(name.to_owned())
    }
    fn logs(&self) -> Vec<String> {
        podman_ok(&["logs", &self.0])
            .lines()
            .map(str::to_owned)
            .collect()
    }
    fn status(&self) -> String {
        podman_ok(&["inspect", "--format", "{{.State.Status}}", &self.0])
            .trim()
            .to_owned()
    }
    fn id(&self) -> String {
        podman_ok(&["inspect", "--format", "{{.Id}}", &self.0])
            .trim()
            .to_owned()
    }
    /// Its logs count on contiguously from 0, and keep growing.
    fn counts_on(&self, what: &str) {
        let before = self.logs().len();
        wait_until("its logs to grow", || self.logs().len() > before + 3);
        ckptd_tests::assert_counts(&self.logs(), what);
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", &self.0]);
    }
}

fn target(name: &str) -> ApiTarget {
    ApiTarget::Container {
        id: name.into(),
        runtime: ckptd_api::Runtime::Podman,
        root: None,
        bundle: None,
        namespace: None,
    }
}

fn into(name: &str) -> RestoreRequest {
    RestoreRequest {
        target: Some(target(name)),
        ..Default::default()
    }
}

fn running_names() -> String {
    podman_ok(&["ps", "--format", "{{.Names}}"])
}

/// One at a time: the tests share the machine's Podman storage and its container names.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Podman REST service of the test's own and a daemon talking to it; `scenario` runs over
/// the daemon while both live.
async fn with_podman<F: std::future::Future<Output = ()>>(scenario: impl FnOnce(Daemon) -> F) {
    let _one = ONE_AT_A_TIME.lock().await;
    let service = Service::start();
    let d = Daemon::start_with(&["--podman-socket", service.socket.to_str().unwrap()]).await;
    scenario(d).await;
    drop(service);
}

/// A restore in place cancelled while CRIU, under Podman's conmon and runc, holds the tree it
/// made before resuming it (any CRIU that does not end: Podman's API cannot stop a restore, and
/// the job used to wait for Podman for good): the job ends cancelled, CRIU and the half-made
/// tree are ended, the container does not run, and the checkpoint then restores.
#[tokio::test]
async fn a_podman_restore_cancelled_while_criu_holds_the_tree_ends() {
    with_podman(|d| held_restore_interrupted(d, Interrupt::Cancel)).await;
}

/// The same restore with the daemon killed (kill -9) there: the restart's recovery waits for
/// Podman's restore as long as for a CRIU a crash left, then ends that CRIU as a cancel would;
/// the job fails, and the rest as above. The restart used to wait for Podman's inspect, which
/// waits for the container's lock that the restore holds: the daemon never answered.
#[tokio::test]
async fn a_daemon_killed_while_criu_holds_a_podman_restore_starts_again() {
    with_podman(|d| held_restore_interrupted(d, Interrupt::Crash)).await;
}

/// The same restore past its time (`job_timeout_secs`): ended as a cancel ends it, the job
/// failed as timed out, and the rest as above.
#[tokio::test]
async fn a_podman_restore_past_its_time_while_criu_holds_the_tree_ends() {
    with_podman(|d| held_restore_interrupted(d, Interrupt::Timeout)).await;
}

/// An import into a new name (Podman's restore of the exported checkpoint) cancelled while
/// CRIU holds the tree it made: ended as a restore in place is; no container of that name runs,
/// and the checkpoint then restores into that name.
#[tokio::test]
async fn a_podman_import_cancelled_while_criu_holds_the_tree_ends() {
    with_podman(|d| held_restore_interrupted_into(d, Interrupt::Cancel, Some("ckptd-pm-held-new")))
        .await;
}

/// The same import with the daemon killed (kill -9) while CRIU holds the tree: the restart's
/// recovery ends that CRIU, the job fails, and the container Podman's import made is removed.
#[tokio::test]
async fn a_daemon_killed_while_criu_holds_a_podman_import_leaves_no_container() {
    with_podman(|d| held_restore_interrupted_into(d, Interrupt::Crash, Some("ckptd-pm-held-new")))
        .await;
}

/// A checkpoint of a Podman container with the daemon killed (kill -9) while CRIU, under
/// Podman's runc, holds the container at post-dump: the restart's recovery waits for Podman's
/// checkpoint as long as for a CRIU a crash left, then ends that CRIU; the job fails, the
/// container runs on where it was, and a checkpoint of it then succeeds.
#[tokio::test]
async fn a_daemon_killed_while_criu_holds_a_podman_checkpoint_starts_again() {
    with_podman(|mut d| async move {
        let pause = ckptd_tests::Pause::new();
        let name = "ckptd-pm-held-dump";
        let c = Ctr::run_held(name, &pause);
        d.checkpoint_killed_while_held(
            &pause,
            &ckptd_tests::checkpoint(Some(target(name)), "pm-held-dump"),
        )
        .await;
        assert_eq!(c.status(), "running");
        c.counts_on("a container whose checkpoint the daemon's crash cut short");
        d.client
            .create_checkpoint(
                &ckptd_tests::checkpoint(Some(target(name)), "pm-held-dump-2"),
                true,
            )
            .await
            .expect("a checkpoint after the interrupted one");
    })
    .await;
}

async fn held_restore_interrupted(d: Daemon, how: Interrupt) {
    held_restore_interrupted_into(d, how, None).await;
}

/// The restore is in place, or into the new name `new`.
async fn held_restore_interrupted_into(mut d: Daemon, how: Interrupt, new: Option<&str>) {
    let pause = ckptd_tests::Pause::new();
    let name = "ckptd-pm-held";
    let c = Ctr::run_held(name, &pause);
    d.client
        .create_checkpoint(
            &ckptd_tests::checkpoint(Some(target(name)), "pm-held"),
            true,
        )
        .await
        .expect("checkpoint of a Podman container");
    let stopped_at = c.logs().len();
    let (restored, req) = match new {
        Some(new) => (Ctr::named(new), into(new)),
        None => (Ctr(name.to_owned()), RestoreRequest::default()),
    };
    d.restore_interrupted_while_held(&pause, "pm-held", &req, how)
        .await;
    // Restored in place, the container stays, stopped; made by an import, it is removed.
    let (listed, what) = match new {
        Some(_) => (
            podman_ok(&["ps", "-a", "--format", "{{.Names}}"]),
            "is left",
        ),
        None => (podman_ok(&["ps", "--format", "{{.Names}}"]), "runs"),
    };
    assert!(
        !listed.lines().any(|l| l == restored.0),
        "the container of an interrupted restore {what}: {listed}"
    );
    let mounts = ckptd_tests::mounts_under(d.dir.path());
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    d.client
        .restore("pm-held", &req, true)
        .await
        .expect("the checkpoint restores after the interrupted restore");
    assert_eq!(restored.status(), "running");
    wait_until("logs to continue", || {
        restored.logs().len() > stopped_at + 3
    });
}

/// A daemon talking to `service`, with `toml` as its configuration file (kept in the directory
/// returned, which the test holds while the daemon runs).
async fn podman_daemon(service: &Service, toml: &str) -> (Daemon, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("ckptd.toml");
    std::fs::write(&conf, toml).unwrap();
    let d = Daemon::start_with(&[
        "--podman-socket",
        service.socket.to_str().unwrap(),
        "--config",
        conf.to_str().unwrap(),
    ])
    .await;
    (d, work)
}

/// Checkpoint, restore in place and into a new name: exported by Podman's CLI on a pipe.
#[tokio::test]
async fn podman_checkpoint_restore_in_place_and_into_a_new_name() {
    with_podman(|d| async move {
        in_place_and_new_name(&d).await;
        let log = d.log();
        assert!(
            log.contains("Podman's CLI exports the checkpoint on a pipe"),
            "{log}"
        );
        assert!(!log.contains("Podman's API exports"), "{log}");
    })
    .await;
}

/// The same through Podman's API, which exports wherever Podman's CLI is not the service's
/// Podman (here: `podman_path` names no program).
#[tokio::test]
async fn podman_checkpoint_restore_in_place_and_into_a_new_name_through_the_api() {
    let _one = ONE_AT_A_TIME.lock().await;
    let service = Service::start();
    let (d, _conf) = podman_daemon(&service, "podman_path = \"/nonexistent/podman\"\n").await;
    in_place_and_new_name(&d).await;
    let log = d.log();
    assert!(
        log.contains("cannot run /nonexistent/podman")
            && log.contains("Podman's API exports the checkpoint"),
        "{log}"
    );
    assert!(!log.contains("Podman's CLI exports"), "{log}");
    drop(d);
    drop(service);
}

/// The daemon killed -9 while Podman's CLI streams a checkpoint to it: Podman still finishes
/// its checkpoint (ckptd's drain guard reads the rest of the pipe; without it the CLI blocks
/// for ever, holding the container's lock, the container ended and not recorded as
/// checkpointed), and the daemon, started again, gives the container back from Podman's own
/// copy of the images. Nothing of the export is left running.
#[tokio::test]
async fn podman_daemon_killed_mid_export_gives_the_container_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    let service = Service::start();
    let mut d = Daemon::start_with(&["--podman-socket", service.socket.to_str().unwrap()]).await;
    let c = Ctr::run("ckptd-pm-killed");
    // 200 MB in its root filesystem: the last entry of Podman's archive (rootfs-diff.tar).
    podman_ok(&[
        "exec",
        &c.0,
        "/bin/sh",
        "-c",
        "head -c 200000000 /dev/zero > /big",
    ]);
    let before = c.logs().len();
    let job = d
        .client
        .create_checkpoint(
            &ckptd_tests::checkpoint(Some(target(&c.0)), "pm-killed"),
            false,
        )
        .await
        .unwrap()
        .job;
    // Killed while that entry streams in.
    let streaming = || {
        ckptd_tests::files_under(d.dir.path())
            .iter()
            .any(|(p, len)| p.ends_with("rootfs-diff.tar") && *len > 0)
    };
    wait_until("the archive's last entry streaming in", streaming);
    d.crash(|| {}).await;
    wait_until("the container to run again", || c.status() == "running");
    c.counts_on("podman logs of a container given back after the daemon died mid-export");
    assert!(c.logs().len() > before);
    // Podman recorded the checkpoint and restored it: no export left waiting.
    wait_until("Podman's CLI and ckptd's drain guard to end", || {
        let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        !ps.contains("container checkpoint") && !ps.contains("drain-guard")
    });
    let job = d
        .client
        .job(&job.id.to_string(), Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(job.state, ckptd_api::JobState::Failed, "{job:#?}");
    let cp = d.client.checkpoint("pm-killed").await.unwrap();
    assert_eq!(cp.status, CheckpointStatus::Failed, "{cp:#?}");
    drop(c);
    drop(d);
    drop(service);
}

/// Podman's export imported; ckptd's format=podman restored by Podman.
#[tokio::test]
async fn podman_archives_both_ways() {
    with_podman(|d| async move { archives_both_ways(&d).await }).await;
}

/// A schedule of a Podman container, with retention.
#[tokio::test]
async fn podman_schedule_with_retention() {
    with_podman(|d| async move { schedule_with_retention(&d).await }).await;
}

/// Podman's export restored as a runc container.
#[tokio::test]
async fn podman_export_restored_as_a_runc_container() {
    with_podman(|d| async move { podman_export_as_runc(&d).await }).await;
}

/// Checkpoint images through a registry, both ways: ckptd's image restored by Podman, Podman's
/// `--create-image` image restored through ckptd.
#[tokio::test]
async fn podman_checkpoint_images_through_a_registry() {
    let _one = ONE_AT_A_TIME.lock().await;
    let service = Service::start();
    let reg = ckptd_tests::RegistryServer::start();
    let creds = reg.credentials_file("creds", None);
    let (d, _conf) =
        podman_daemon(&service, &reg.config("hub", "podman/checkpoints", &creds)).await;
    let login = format!("{}:{}", reg.user, reg.password);

    // ckptd's checkpoint of a Podman container, pushed as an image: Podman pulls it and
    // restores it as a new container that counts on.
    let c = Ctr::run("ckptd-pm-img");
    d.client
        .create_checkpoint(&ckptd_tests::checkpoint(Some(target(&c.0)), "pm-img"), true)
        .await
        .expect("checkpoint of a Podman container");
    let stopped_at = c.logs().len();
    let job = d
        .client
        .push("pm-img", "hub", Some("v1"), true, true)
        .await
        .expect("push to the registry");
    assert_eq!(job.state, ckptd_api::JobState::Succeeded, "{:?}", job.error);
    let m = reg.manifest("podman/checkpoints:v1");
    assert_eq!(
        m["annotations"]["io.podman.annotations.checkpoint.name"],
        c.0
    );
    assert_eq!(m["annotations"]["io.ckptd.layout"], "podman");
    let image = format!("{}/podman/checkpoints:v1", reg.host);
    podman_ok(&[
        "pull",
        "-q",
        "--tls-verify=false",
        "--creds",
        &login,
        &image,
    ]);
    let by_podman = Ctr::named("ckptd-pm-img-by-podman");
    podman_ok(&["container", "restore", "--name", &by_podman.0, &image]);
    assert_eq!(by_podman.status(), "running");
    // Podman starts a restored-from-image container with a new log: the process's count goes
    // on from the line after the last one it wrote before the checkpoint, without a gap.
    wait_until("the restored container's output", || {
        by_podman.logs().len() >= 4
    });
    let logs = by_podman.logs();
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(
            l.trim(),
            (stopped_at + i).to_string(),
            "{stopped_at}: {logs:?}"
        );
    }
    drop(by_podman);
    let _ = podman(&["rmi", "-f", &image]);

    // Podman's own checkpoint image, pushed with podman push: listed and restored through ckptd.
    let p = Ctr::run("ckptd-pm-made");
    let local = "localhost/ckptd-pm-made-ckpt:1";
    podman_ok(&["container", "checkpoint", "--create-image", local, &p.0]);
    let stopped_at = p.logs().len();
    podman_ok(&[
        "push",
        "-q",
        "--tls-verify=false",
        "--creds",
        &login,
        local,
        &format!("docker://{}/podman/checkpoints:by-podman", reg.host),
    ]);
    let _ = podman(&["rmi", "-f", local]);
    let listed = d.client.remote_checkpoints("hub").await.unwrap().items;
    let made = listed
        .iter()
        .find(|r| r.object.key == "podman/checkpoints:by-podman")
        .unwrap_or_else(|| panic!("Podman's image is listed: {listed:?}"));
    assert_eq!(made.checkpoint.target, target(&p.0));
    let back = Ctr::named("ckptd-pm-made-back");
    let job = d
        .client
        .restore_from_remote("hub", "by-podman", &into(&back.0), true)
        .await
        .expect("restore of Podman's image through ckptd");
    assert_eq!(job.state, ckptd_api::JobState::Succeeded, "{:?}", job.error);
    assert_eq!(back.status(), "running");
    assert!(back.logs().len() >= stopped_at);
    back.counts_on("podman logs of Podman's checkpoint image restored through ckptd");
    let cp = d.client.checkpoint(&made.checkpoint.name).await.unwrap();
    assert_eq!(cp.origin.expect("its origin").engine, "podman");
    drop(d);
    drop(service);
}

async fn in_place_and_new_name(d: &Daemon) {
    let c = Ctr::run("ckptd-pm-looper");
    let id = c.id();
    // An option Podman cannot pass is refused before anything is created: no checkpoint, no job.
    let mut req = ckptd_tests::checkpoint(Some(target(&c.0)), "pm-shell");
    req.shell_job = true;
    let e = d.client.create_checkpoint(&req, true).await.unwrap_err();
    let (status, err) = e.api_error().unwrap();
    assert_eq!(status.as_u16(), 400, "{err:?}");
    assert!(err.message.contains("shell_job"), "{err:?}");
    let q = ckptd_api::query::CheckpointQuery::default();
    assert!(d
        .client
        .list_checkpoints(&q)
        .await
        .unwrap()
        .items
        .is_empty());
    let q = ckptd_api::query::JobQuery::default();
    assert!(d.client.jobs(&q).await.unwrap().items.is_empty());
    // `ckpt create NAME` without --runtime finds the container in Podman, the one runtime that
    // has it.
    let out = d.ckpt(&["create", &c.0, "pm-found", "--leave-running"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("ckptd-pm-looper is a podman container (--runtime podman)"),
        "{err}"
    );
    let found = d.client.checkpoint("pm-found").await.unwrap();
    assert_eq!(found.target, target(&c.0));
    d.client.delete_checkpoint("pm-found").await.unwrap();
    // Podman's state is part of the checkpoint: it says exited and checkpointed.
    let cp = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(Some(target(&c.0)), "pm1"), true)
        .await
        .expect("checkpoint of a Podman container");
    let cp = cp.checkpoint;
    assert_eq!(cp.status, CheckpointStatus::Ready);
    assert!(cp.stats.expect("CRIU's statistics").pages_written > 0);
    let dir = Path::new(&cp.dir);
    for f in [
        "inventory.img",
        "pstree.img",
        "config.dump",
        "spec.dump",
        "dump.log",
    ] {
        assert!(dir.join(f).is_file(), "{f} in the checkpoint");
    }
    assert_eq!(c.status(), "exited");
    assert_eq!(
        podman_ok(&["inspect", "--format", "{{.State.Checkpointed}}", &c.0]).trim(),
        "true"
    );
    assert!(!running_names().contains(&c.0));
    // The process tree its images hold: the container's shell as pid 1.
    let tree = d.client.checkpoint_processes("pm1").await.unwrap();
    assert_eq!(
        (tree.processes[0].pid, tree.processes[0].ppid),
        (1, 0),
        "{tree:?}"
    );
    assert_eq!(tree.processes[0].command, "sh");
    let stopped_at = c.logs().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.logs().len(), stopped_at, "its logs stopped");

    // In place: the same container (same id), its logs continue.
    let job = d
        .client
        .restore("pm1", &RestoreRequest::default(), true)
        .await
        .expect("restore in place");
    let r = job.result.unwrap();
    assert_eq!(r.container.as_deref(), Some(c.0.as_str()));
    assert_eq!(c.status(), "running");
    assert_eq!(c.id(), id, "restored in place, not recreated");
    assert!(running_names().contains(&c.0));
    c.counts_on("podman logs after the restore in place");

    // In place again while it runs: refused before anything is done, with what to do.
    let e = d
        .client
        .restore("pm1", &RestoreRequest::default(), true)
        .await
        .unwrap_err();
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 409, "{err}");
    assert!(err.hint().unwrap().contains("podman stop"), "{err}");

    // Into a new name, while the original runs: a second container from the same checkpoint,
    // with the log up to the checkpoint, counting on from there.
    let copy = Ctr::named("ckptd-pm-copy");
    let job = d
        .client
        .restore("pm1", &into(&copy.0), true)
        .await
        .expect("restore into a new name");
    assert_eq!(
        job.result.unwrap().container.as_deref(),
        Some(copy.0.as_str())
    );
    assert_eq!(copy.status(), "running");
    assert!(copy.logs().len() >= stopped_at);
    copy.counts_on("podman logs of the copy");

    // Into a name another container holds: refused.
    let e = d
        .client
        .restore("pm1", &into(&copy.0), true)
        .await
        .unwrap_err();
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 409, "{err}");
    assert!(err.message.contains("already has a container"), "{err}");

    // leave_running: Podman keeps it running; the checkpoint restores as a third container.
    let cp2 = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(Some(target(&c.0)), "pm2")
            },
            true,
        )
        .await
        .expect("leave_running checkpoint");
    assert_eq!(cp2.checkpoint.status, CheckpointStatus::Ready);
    assert_eq!(c.status(), "running");
    c.counts_on("podman logs of a container checkpointed with leave_running");

    // A container Podman does not have, and a stopped one: refused with Podman's words.
    let e = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(target("ckptd-pm-nope")),
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap_err();
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 422, "{err}");
    assert!(err.message.contains("Podman has no container"), "{err}");
}

async fn archives_both_ways(d: &Daemon) {
    let work = tempfile::tempdir().unwrap();
    // Podman's own export (zstd, its default), imported into ckptd.
    let c = Ctr::run("ckptd-pm-exported");
    let exported = work.path().join("podman-export.tar.zst");
    podman_ok(&[
        "container",
        "checkpoint",
        "--export",
        exported.to_str().unwrap(),
        &c.0,
    ]);
    let stopped_at = c.logs().len();
    let file = tokio::fs::File::open(&exported).await.unwrap();
    let cp = d
        .client
        .import(file, Some("from-podman"))
        .await
        .expect("import of Podman's export");
    assert_eq!(cp.status, CheckpointStatus::Ready);
    let origin = cp.origin.expect("where the archive came from");
    assert_eq!(origin.engine, "podman");
    assert_eq!(origin.container, c.0);
    assert_eq!(origin.image.as_deref(), Some(IMAGE));
    assert_eq!(origin.container_id.as_deref(), Some(c.id().as_str()));
    assert!(cp.stats.is_some(), "CRIU's statistics from stats-dump");
    // Restored by ckptd as a new Podman container.
    let back = Ctr::named("ckptd-pm-imported");
    d.client
        .restore("from-podman", &into(&back.0), true)
        .await
        .expect("restore of the imported archive");
    assert!(back.logs().len() >= stopped_at);
    back.counts_on("podman logs of the imported checkpoint's container");

    // ckptd's format=podman, restored by Podman itself.
    let mine = work.path().join("ckptd-export.tar.zst");
    let mut f = tokio::fs::File::create(&mine).await.unwrap();
    d.client
        .export(
            "from-podman",
            ArchiveQuery {
                format: ArchiveFormat::Podman,
                ..Default::default()
            },
            &mut f,
        )
        .await
        .expect("export format=podman");
    let again = Ctr::named("ckptd-pm-by-podman");
    podman_ok(&[
        "container",
        "restore",
        "--import",
        mine.to_str().unwrap(),
        "--name",
        &again.0,
    ]);
    assert_eq!(again.status(), "running");
    again.counts_on("podman logs of ckptd's export restored by Podman");

    // format=podman of a checkpoint that is not a Podman container's: refused, nothing sent.
    let looper = ckptd_tests::Target::looper(work.path());
    looper.wait_for_lines(2);
    let p = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Process { pid: looper.pid }),
                leave_running: true,
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap();
    let mut sink = tokio::io::sink();
    let e = d
        .client
        .export(
            &p.checkpoint.name,
            ArchiveQuery {
                format: ArchiveFormat::Podman,
                ..Default::default()
            },
            &mut sink,
        )
        .await
        .unwrap_err();
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 409, "{err}");
    assert!(err.message.contains("format=podman"), "{err}");
}

/// A Podman looper exported by Podman, imported, and restored outside Podman as a runc
/// container from the image's root filesystem (`podman image mount`): its output continues
/// exactly where it stopped. With Podman's default network the container joined a network
/// namespace Podman made, which is said before anything runs.
async fn podman_export_as_runc(d: &Daemon) {
    let work = tempfile::tempdir().unwrap();
    let c = Ctr::named("ckptd-pm-to-runc");
    podman_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &c.0,
        IMAGE,
        "/bin/sh",
        "-c",
        LOOPER,
    ]);
    wait_until("output", || c.logs().len() >= 3);
    let exported = work.path().join("export.tar.gz");
    podman_ok(&[
        "container",
        "checkpoint",
        "--compress",
        "gzip",
        "--export",
        exported.to_str().unwrap(),
        &c.0,
    ]);
    let last: usize = c.logs().last().unwrap().trim().parse().unwrap();
    let f = tokio::fs::File::open(&exported).await.unwrap();
    d.client
        .import(f, Some("podman-to-runc"))
        .await
        .expect("import of Podman's gzip export");
    let rootfs = podman_ok(&["image", "mount", IMAGE]).trim().to_owned();
    let bundle = work.path().join("bundle");
    let id = ckptd_tests::unique_id("from-podman");
    let job = d
        .client
        .restore(
            "podman-to-runc",
            &RestoreRequest {
                target: Some(ApiTarget::Container {
                    id: id.clone(),
                    runtime: ckptd_api::Runtime::Runc,
                    root: None,
                    bundle: Some(bundle.display().to_string()),
                    namespace: None,
                }),
                rootfs: Some(rootfs.clone()),
                ..Default::default()
            },
            true,
        )
        .await;
    let job = job.expect("restore of Podman's checkpoint as a runc container");
    let _runc = ckptd_tests::Container::adopt(&id);
    let log = std::path::PathBuf::from(job.result.unwrap().output_log.expect("its output log"));
    wait_until("output after the restore", || {
        ckptd_tests::read_lines(&log).len() >= 3
    });
    let lines = ckptd_tests::read_lines(&log);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            l.trim(),
            (last + 1 + i).to_string(),
            "the runc container's output continues where Podman's stopped: {lines:?}"
        );
    }

    // With Podman's own network, the container joined a namespace that is not restored outside
    // Podman: refused before the job, in those words.
    let bridged = Ctr::run("ckptd-pm-bridged");
    let exported = work.path().join("bridged.tar");
    podman_ok(&[
        "container",
        "checkpoint",
        "--export",
        exported.to_str().unwrap(),
        &bridged.0,
    ]);
    let f = tokio::fs::File::open(&exported).await.unwrap();
    d.client.import(f, Some("bridged")).await.unwrap();
    let e = d
        .client
        .restore(
            "bridged",
            &RestoreRequest {
                target: Some(ApiTarget::Container {
                    id: ckptd_tests::unique_id("bridged"),
                    runtime: ckptd_api::Runtime::Runc,
                    root: None,
                    bundle: Some(work.path().join("b2").display().to_string()),
                    namespace: None,
                }),
                rootfs: Some(rootfs),
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap_err();
    let _ = podman(&["image", "unmount", IMAGE]);
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 422, "{err}");
    assert!(err.message.contains("network namespace"), "{err}");
    assert!(!work.path().join("b2").exists());
}

async fn schedule_with_retention(d: &Daemon) {
    let c = Ctr::run("ckptd-pm-scheduled");
    d.client
        .create_schedule(&CreateSchedule {
            name: "pm-every2".into(),
            target: target(&c.0),
            cron: "*/2 * * * * *".into(),
            options: ScheduleOptions::default(),
            retention: Retention {
                keep_last: Some(2),
                ..Default::default()
            },
            enabled: true,
        })
        .await
        .unwrap();
    let mut done = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while done.len() < 4 {
        let s = d.client.schedule("pm-every2").await.unwrap();
        if let Some(r) = &s.last_run {
            assert_ne!(r.status, RunStatus::Failed, "a run failed: {r:#?}");
            if r.status == RunStatus::Succeeded {
                done.insert(r.checkpoint_name.clone().unwrap());
            }
        }
        assert!(Instant::now() < deadline, "4 runs took too long: {s:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.client.delete_schedule("pm-every2").await.unwrap();
    // Schedules leave the target running: the container counted on through every run.
    assert_eq!(c.status(), "running");
    c.counts_on("podman logs of a container checkpointed every 2 s");
    // Retention runs after each scheduled checkpoint: the newest two are left.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = d
            .client
            .list_checkpoints(&ckptd_tests::q("label=schedule=pm-every2"))
            .await
            .unwrap()
            .items;
        if left.len() == 2 {
            assert!(left.iter().all(|cp| cp.status == CheckpointStatus::Ready));
            break;
        }
        assert!(Instant::now() < deadline, "retention left {}", left.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
