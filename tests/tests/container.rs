//! End to end with real runc containers (busybox-static rootfs built by the test), the real
//! daemon and the real CRIU.

use std::time::Duration;

use ckptd_api::{CheckpointStatus, CreateCheckpoint, RestoreRequest, Target as ApiTarget};
use ckptd_tests::{
    assert_counts, read_lines, unique_id, wait_until, Bundle, Container, ContainerStdio, Daemon,
    CONTAINER_LOOPER, CONTAINER_LOOPER_STDOUT,
};
use hyper::Method;
use serde_json::{json, Value};

fn container(id: &str) -> Option<ApiTarget> {
    Some(ApiTarget::Container {
        id: id.into(),
        runtime: ckptd_api::Runtime::Runc,
        root: None,
        bundle: None,
        namespace: None,
    })
}

fn into(id: &str, bundle: &Bundle) -> Option<ApiTarget> {
    Some(ApiTarget::Container {
        id: id.into(),
        runtime: ckptd_api::Runtime::Runc,
        root: None,
        bundle: Some(bundle.dir.display().to_string()),
        namespace: None,
    })
}

fn grows(lines: impl Fn() -> usize) -> bool {
    let before = lines();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        if lines() > before {
            return true;
        }
    }
    false
}

/// Docker's whole flow, including what fails in Docker: checkpoint into a custom directory,
/// restore in place, and restore the same images into a new container from a copied bundle.
#[tokio::test]
async fn checkpoint_restore_in_place_and_into_a_new_container() {
    let d = Daemon::start().await;
    let bundle = Bundle::busybox(&d.dir.path().join("b1"), CONTAINER_LOOPER, |_| {});
    let id = unique_id("looper");
    let c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 3);
    let custom = tempfile::tempdir().unwrap();

    let created = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                checkpoint_dir: Some(custom.path().display().to_string()),
                ..ckptd_tests::checkpoint(container(&id), "ct1")
            },
            true,
        )
        .await
        .expect("container checkpoint");
    let cp = created.checkpoint;
    assert_eq!(cp.status, CheckpointStatus::Ready);
    assert_eq!(std::path::Path::new(&cp.dir), custom.path().join("ct1"));
    let rec = cp.container.as_ref().expect("container record");
    assert_eq!(std::path::Path::new(&rec.bundle), bundle.dir);
    assert_eq!(rec.config_sha256.len(), 64);
    assert!(!rec.terminal);
    assert_eq!(rec.stdio, ["/dev/null", "/dev/null", "/dev/null"]);
    let stats = cp.stats.expect("CRIU statistics");
    assert!(
        stats.pages_written > 0 && stats.frozen_time_us > 0,
        "{stats:?}"
    );
    assert!(cp.size_bytes > 0);
    // It stopped: runc no longer knows it, and its output stopped growing.
    assert_eq!(c.status(), None);
    let stopped_at = bundle.out_lines().len();
    assert!(!grows(|| bundle.out_lines().len()));

    // The container filter of the list (and custom-dir checkpoints are listed).
    let list = d
        .client
        .list_checkpoints(&ckptd_tests::q(format!("container={id}")))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].id, cp.id);
    assert!(d
        .client
        .list_checkpoints(&ckptd_tests::q("container=nope"))
        .await
        .unwrap()
        .items
        .is_empty());

    // Copy the bundle as it is now (its out.log as the images expect it).
    let copy = bundle.copy_to(&d.dir.path().join("b2"));

    // Restore in place.
    let job = d
        .client
        .restore("ct1", &RestoreRequest::default(), true)
        .await
        .expect("restore in place");
    let result = job.result.unwrap();
    assert_eq!(result.container.as_deref(), Some(id.as_str()));
    assert!(result.pid.unwrap() > 0);
    assert_eq!(c.status().as_deref(), Some("running"));

    // Restore the same images into a new container (Docker answers this with an error).
    let clone_id = unique_id("looper-clone");
    let clone = Container::adopt(&clone_id);
    let job = d
        .client
        .restore(
            "ct1",
            &RestoreRequest {
                target: into(&clone_id, &copy),
                ..Default::default()
            },
            true,
        )
        .await
        .expect("restore into a new container");
    assert_eq!(
        job.result.unwrap().container.as_deref(),
        Some(clone_id.as_str())
    );
    assert_eq!(clone.status().as_deref(), Some("running"));

    // Both run, and both outputs are contiguous from 0.
    wait_until("both outputs to grow", || {
        bundle.out_lines().len() > stopped_at + 5 && copy.out_lines().len() > stopped_at + 5
    });
    assert_counts(&bundle.out_lines(), "the original");
    assert_counts(&copy.out_lines(), "the clone");

    // Restoring over a running container: 409, before any job is queued.
    let err = d
        .client
        .restore("ct1", &RestoreRequest::default(), false)
        .await
        .unwrap_err();
    let (status, e) = err.api_error().unwrap();
    assert_eq!(status.as_u16(), 409, "{e:?}");
    assert!(e.message.contains("already exists"));
    let err = d
        .client
        .restore(
            "ct1",
            &RestoreRequest {
                target: into(&clone_id, &copy),
                ..Default::default()
            },
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.api_error().unwrap().0.as_u16(), 409);
    // A missing bundle: 422.
    let missing = Bundle {
        dir: d.dir.path().join("no-such-bundle"),
    };
    let err = d
        .client
        .restore(
            "ct1",
            &RestoreRequest {
                target: into(&unique_id("x"), &missing),
                ..Default::default()
            },
            false,
        )
        .await
        .unwrap_err();
    let (status, e) = err.api_error().unwrap();
    assert_eq!(status.as_u16(), 422, "{e:?}");
    assert!(e.message.contains("config.json"));

    // The log route has the dump and both restores.
    let log = d.client.checkpoint_log("ct1").await.unwrap();
    assert_eq!(
        log.matches("=== ").count(),
        3,
        "{}",
        &log[..200.min(log.len())]
    );

    // Delete removes only the checkpoint's own folder.
    d.client.delete_checkpoint("ct1").await.unwrap();
    assert!(!custom.path().join("ct1").exists());
    assert!(custom.path().exists());
}

#[tokio::test]
async fn leave_running_and_pipe_stdio_and_a_second_checkpoint_of_the_restored_container() {
    let d = Daemon::start().await;
    let bundle = Bundle::busybox(&d.dir.path().join("bp"), CONTAINER_LOOPER_STDOUT, |_| {});
    let id = unique_id("piped");
    let piped_out = d.dir.path().join("piped.out");
    let c = Container::run(&bundle, &id, ContainerStdio::Pipe(piped_out.clone()));
    wait_until("output", || read_lines(&piped_out).len() >= 3);

    // leave_running: it keeps going.
    let cp = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(container(&id), "p0")
            },
            true,
        )
        .await
        .expect("leave_running checkpoint")
        .checkpoint;
    assert!(
        cp.container.as_ref().unwrap().stdio[1].starts_with("pipe:"),
        "{:?}",
        cp.container
    );
    assert_eq!(c.status().as_deref(), Some("running"));
    assert!(grows(|| read_lines(&piped_out).len()));

    // Stop it with a checkpoint, restore: its stdout pipe gets a new reader and a log file.
    d.client
        .create_checkpoint(&ckptd_tests::checkpoint(container(&id), "p1"), true)
        .await
        .expect("checkpoint");
    assert_eq!(c.status(), None);
    let job = d
        .client
        .restore("p1", &RestoreRequest::default(), true)
        .await
        .expect("restore");
    let log = job
        .result
        .as_ref()
        .unwrap()
        .output_log
        .clone()
        .expect("output_log for piped stdout");
    assert!(log.starts_with(&d.state_dir.display().to_string()), "{log}");
    wait_until("output in the output log", || {
        read_lines(std::path::Path::new(&log)).len() >= 5
    });
    let mut all = read_lines(&piped_out);
    all.extend(read_lines(std::path::Path::new(&log)));
    assert_counts(&all, "the piped output before and after restore");

    // The restored container has a pipe again, so it can be checkpointed once more.
    let again = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(container(&id), "p2")
            },
            true,
        )
        .await
        .expect("second checkpoint of the restored container");
    assert_eq!(again.checkpoint.status, CheckpointStatus::Ready);
}

#[tokio::test]
async fn host_file_stdio_fails_with_the_mount_hint_and_the_container_keeps_running() {
    let d = Daemon::start().await;
    let bundle = Bundle::busybox(&d.dir.path().join("bh"), CONTAINER_LOOPER_STDOUT, |_| {});
    let id = unique_id("hostfile");
    let out = d.dir.path().join("host.out");
    let c = Container::run(&bundle, &id, ContainerStdio::HostFile(out.clone()));
    wait_until("output", || read_lines(&out).len() >= 2);
    let err = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(container(&id), "h"), true)
        .await
        .unwrap_err();
    let (status, e) = err.api_error().unwrap();
    assert_eq!(status.as_u16(), 500);
    assert_eq!(e.code, "criu_failed");
    assert!(e.message.contains("Can't lookup mount"), "{}", e.message);
    assert!(
        e.hint().unwrap().contains("mount namespace"),
        "{:?}",
        e.hint()
    );
    assert!(
        !e.message.contains("NOTIFY"),
        "runc's opaque message leaked: {}",
        e.message
    );
    // Not left paused, not killed.
    assert_eq!(c.status().as_deref(), Some("running"));
    assert!(grows(|| read_lines(&out).len()));
    let cp = d.client.checkpoint("h").await.unwrap();
    assert_eq!(cp.status, CheckpointStatus::Failed);
    assert!(std::path::Path::new(&cp.dir).join("dump.log").exists());
    assert_eq!(e.details["log"], format!("{}/dump.log", cp.dir));
}

/// The seed's caveats, checked on this kernel: a seccomp filter and an overlayfs rootfs.
#[tokio::test]
async fn seccomp_and_overlayfs_containers_checkpoint_and_restore() {
    let d = Daemon::start().await;
    // seccomp: mkdir fails with EPERM inside the container, before and after restore.
    let bundle = Bundle::busybox(&d.dir.path().join("bs"), CONTAINER_LOOPER, |cfg| {
        cfg["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        });
    });
    let id = unique_id("seccomp");
    let c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 2);
    d.client
        .create_checkpoint(&ckptd_tests::checkpoint(container(&id), "sec"), true)
        .await
        .expect("checkpoint of a seccomp container");
    let job = d
        .client
        .restore("sec", &RestoreRequest::default(), true)
        .await
        .expect("restore");
    let pid = job.result.unwrap().pid.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains("Seccomp:\t2"),
        "seccomp filter lost: {status}"
    );
    let mk = std::process::Command::new("runc")
        .args(["exec", &id, "mkdir", "/x"])
        .output()
        .unwrap();
    assert!(!mk.status.success(), "mkdir allowed after restore");
    wait_until("output after restore", || bundle.out_lines().len() >= 8);
    assert_counts(&bundle.out_lines(), "the seccomp container");
    drop(c);

    // overlayfs root filesystem, as Docker's containers have.
    let ob = Bundle::busybox(&d.dir.path().join("bo"), CONTAINER_LOOPER, |_| {});
    let lower = d.dir.path().join("bo/lower");
    std::fs::rename(ob.dir.join("rootfs"), &lower).unwrap();
    for sub in ["rootfs", "upper", "work"] {
        std::fs::create_dir(ob.dir.join(sub)).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        ob.dir.join("upper").display(),
        ob.dir.join("work").display()
    );
    let m = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(ob.dir.join("rootfs"))
        .status()
        .unwrap();
    assert!(m.success(), "mount overlay");
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _umount = Umount(ob.dir.join("rootfs"));
    let oid = unique_id("overlay");
    let oc = Container::run(&ob, &oid, ContainerStdio::Null);
    wait_until("output", || ob.out_lines().len() >= 2);
    d.client
        .create_checkpoint(&ckptd_tests::checkpoint(container(&oid), "ovl"), true)
        .await
        .expect("checkpoint of an overlayfs container");
    d.client
        .restore("ovl", &RestoreRequest::default(), true)
        .await
        .expect("restore");
    wait_until("output after restore", || ob.out_lines().len() >= 8);
    assert_counts(&ob.out_lines(), "the overlayfs container");
    drop(oc);
}

#[tokio::test]
async fn container_requests_that_cannot_work_are_refused_with_reasons() {
    let d = Daemon::start().await;
    let bundle = Bundle::busybox(&d.dir.path().join("be"), CONTAINER_LOOPER, |_| {});
    let id = unique_id("errs");
    let _c = Container::run(&bundle, &id, ContainerStdio::Null);
    // A created but not started container.
    let created_id = unique_id("created");
    let st = std::process::Command::new("runc")
        .args(["create", &created_id])
        .current_dir(&bundle.dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let _created = Container::adopt(&created_id);
    d.client
        .send_json(Method::POST, "/v1/checkpoints?wait=true", &json!({"target": {"kind": "container", "id": id}, "name": "ok", "leave_running": true}))
        .await
        .unwrap();

    let cases: Vec<(&str, Method, String, Value, u16, &str)> = vec![
        (
            "unknown container",
            Method::POST,
            "/v1/checkpoints".into(),
            json!({"target": {"kind": "container", "id": "no-such-container"}}),
            422,
            "no container",
        ),
        (
            "not started",
            Method::POST,
            "/v1/checkpoints".into(),
            json!({"target": {"kind": "container", "id": created_id}}),
            422,
            "is created",
        ),
        (
            "other runtime",
            Method::POST,
            "/v1/checkpoints".into(),
            json!({"target": {"kind": "container", "id": id, "runtime": "crun"}}),
            400,
            "not supported",
        ),
        (
            "bundle at checkpoint",
            Method::POST,
            "/v1/checkpoints".into(),
            json!({"target": {"kind": "container", "id": id, "bundle": "/x"}}),
            400,
            "bundle",
        ),
        (
            "relative root",
            Method::POST,
            "/v1/checkpoints".into(),
            json!({"target": {"kind": "container", "id": id, "root": "run/runc"}}),
            400,
            "absolute",
        ),
        (
            "unknown target field",
            Method::POST,
            "/v1/checkpoints".into(),
            json!({"target": {"kind": "container", "id": id, "image": "x"}}),
            400,
            "unknown field",
        ),
        (
            "restore as a process",
            Method::POST,
            "/v1/checkpoints/ok/restore".into(),
            json!({"target": {"kind": "process", "pid": 5}}),
            400,
            "cannot be restored as a process",
        ),
        (
            "new id without bundle",
            Method::POST,
            "/v1/checkpoints/ok/restore".into(),
            json!({"target": {"kind": "container", "id": "fresh"}}),
            400,
            "needs its \"bundle\"",
        ),
        (
            "console socket without tty",
            Method::POST,
            "/v1/checkpoints/ok/restore".into(),
            json!({"target": {"kind": "container", "id": "fresh2", "bundle": bundle.dir}, "console_socket": "/tmp/x.sock"}),
            400,
            "only for containers with a terminal",
        ),
        (
            "in place over the running container",
            Method::POST,
            "/v1/checkpoints/ok/restore".into(),
            json!({}),
            409,
            "already exists",
        ),
    ];
    let before = d.client.get("/v1/checkpoints").await.unwrap().text();
    let mut failures = Vec::new();
    for (what, m, path, body, status, has) in cases {
        let r = d.client.send_json(m, &path, &body).await.unwrap();
        let b: Value = r.json().unwrap_or(Value::Null);
        let msg = b["error"]["message"].as_str().unwrap_or("");
        if r.status.as_u16() != status || !msg.contains(has) {
            failures.push(format!("{what}: {} {}", r.status, r.text()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        d.client.get("/v1/checkpoints").await.unwrap().text(),
        before
    );
    assert!(
        d.client
            .jobs(&ckptd_tests::q("kind=restore"))
            .await
            .unwrap()
            .items
            .is_empty(),
        "a refused restore queued a job"
    );
}

/// Docker refuses terminal containers; runc can restore them given a console socket.
#[tokio::test]
async fn a_terminal_container_restores_with_a_console_socket() {
    let d = Daemon::start().await;
    let bundle = Bundle::busybox(&d.dir.path().join("bt"), CONTAINER_LOOPER, |cfg| {
        cfg["process"]["terminal"] = true.into();
    });
    let first = ckptd_tests::ConsoleReceiver::start(&d.dir.path().join("console1.sock"));
    let id = unique_id("tty");
    let sock = first.socket.display().to_string();
    let _c = Container::run_with(
        &bundle,
        &id,
        ContainerStdio::Null,
        &["--console-socket", &sock],
    );
    wait_until("output", || bundle.out_lines().len() >= 2);
    let cp = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(container(&id), "tty"), true)
        .await
        .expect("checkpoint of a terminal container")
        .checkpoint;
    assert!(cp.container.unwrap().terminal);

    let err = d
        .client
        .restore("tty", &RestoreRequest::default(), false)
        .await
        .unwrap_err();
    let (status, e) = err.api_error().unwrap();
    assert_eq!(status.as_u16(), 400);
    assert!(e.message.contains("console_socket"), "{}", e.message);

    let second = ckptd_tests::ConsoleReceiver::start(&d.dir.path().join("console2.sock"));
    let req = RestoreRequest {
        console_socket: Some(second.socket.display().to_string()),
        ..Default::default()
    };
    let job = d
        .client
        .restore("tty", &req, true)
        .await
        .expect("restore with a console socket");
    assert_eq!(job.result.unwrap().container.as_deref(), Some(id.as_str()));
    let stopped_at = bundle.out_lines().len();
    wait_until("output after restore", || {
        bundle.out_lines().len() >= stopped_at + 5
    });
    assert_counts(&bundle.out_lines(), "the terminal container");
}

#[tokio::test]
async fn a_new_rootfs_missing_what_the_images_need_gets_criu_s_reason() {
    let d = Daemon::start().await;
    let bundle = Bundle::busybox(&d.dir.path().join("bm"), CONTAINER_LOOPER, |_| {});
    let id = unique_id("src");
    let _c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 2);
    d.client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(container(&id), "m")
            },
            true,
        )
        .await
        .expect("checkpoint");
    let broken = bundle.copy_to(&d.dir.path().join("broken"));
    std::fs::remove_file(broken.dir.join("rootfs/bin/busybox")).unwrap();
    let new_id = unique_id("broken");
    let _n = Container::adopt(&new_id);
    let err = d
        .client
        .restore(
            "m",
            &RestoreRequest {
                target: into(&new_id, &broken),
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap_err();
    let (status, e) = err.api_error().unwrap();
    assert_eq!(status.as_u16(), 500, "{e:?}");
    assert_eq!(e.code, "criu_failed");
    assert!(
        e.message.contains("busybox"),
        "CRIU's reason not quoted: {}",
        e.message
    );
    assert!(!e.log_tail().is_empty());
    assert!(e.hint().unwrap().contains("bin/busybox"), "{:?}", e.hint());
}

#[tokio::test]
async fn another_runc_root_and_a_changed_bundle_config() {
    let d = Daemon::start().await;
    let root = d.dir.path().join("runc-root");
    let bundle = Bundle::busybox(&d.dir.path().join("br"), CONTAINER_LOOPER, |_| {});
    let id = unique_id("rooted");
    let st = std::process::Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["run", "-d", &id])
        .current_dir(&bundle.dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    struct Cleanup(std::path::PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&self.0)
                .args(["delete", "--force", &self.1])
                .status();
        }
    }
    let _cleanup = Cleanup(root.clone(), id.clone());
    wait_until("output", || bundle.out_lines().len() >= 2);
    let target = ApiTarget::Container {
        id: id.clone(),
        runtime: ckptd_api::Runtime::Runc,
        root: Some(root.display().to_string()),
        bundle: None,
        namespace: None,
    };
    // Under the default root it is unknown; under its own root it is found.
    let err = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                target: container(&id),
                ..Default::default()
            },
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.api_error().unwrap().0.as_u16(), 422);
    let cp = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(Some(target), "rooted"), true)
        .await
        .expect("checkpoint under another runc root")
        .checkpoint;
    assert!(
        matches!(&cp.target, ApiTarget::Container { root: Some(r), .. } if std::path::Path::new(r) == root)
    );

    // config.json changed since: a restore in place is refused, saying so.
    let cfg_path = bundle.dir.join("config.json");
    let original = std::fs::read(&cfg_path).unwrap();
    let mut cfg: Value = serde_json::from_slice(&original).unwrap();
    cfg["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push("CHANGED=1".into());
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let err = d
        .client
        .restore("rooted", &RestoreRequest::default(), false)
        .await
        .unwrap_err();
    let (status, e) = err.api_error().unwrap();
    assert_eq!(status.as_u16(), 409, "{e:?}");
    assert!(e.message.contains("config.json changed"), "{}", e.message);
    std::fs::write(&cfg_path, &original).unwrap();

    let job = d
        .client
        .restore("rooted", &RestoreRequest::default(), true)
        .await
        .expect("restore under its root");
    assert_eq!(job.result.unwrap().container.as_deref(), Some(id.as_str()));
    let state = std::process::Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["state", &id])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&state.stdout).contains("\"running\""));
    wait_until("output after restore", || bundle.out_lines().len() >= 8);
    assert_counts(&bundle.out_lines(), "the container under another root");
}

/// runc gives CRIU the container's `org.criu.config` (else /etc/criu/runc.conf); ckptd records it.
#[tokio::test]
async fn the_container_s_criu_options_file_is_used_and_recorded() {
    let d = Daemon::start().await;
    let conf = d.dir.path().join("container-criu.conf");
    std::fs::write(&conf, "tcp-established\n").unwrap();
    let conf_s = conf.display().to_string();
    let bundle = Bundle::busybox(&d.dir.path().join("ba"), CONTAINER_LOOPER, |cfg| {
        cfg["annotations"] = json!({"org.criu.config": conf_s});
    });
    let id = unique_id("annotated");
    let _c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 2);
    let cp = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(container(&id), "ann")
            },
            true,
        )
        .await
        .expect("checkpoint")
        .checkpoint;
    assert_eq!(cp.criu_config.as_deref(), Some(conf.to_str().unwrap()));
    let log = d.client.checkpoint_log("ann").await.unwrap();
    assert!(
        log.contains(&format!("Parsing config file {}", conf.display())),
        "CRIU did not read it"
    );
}

/// kill -9 of runc in the middle of a container restore (its CRIU held after making the tree):
/// the job fails, runc's state of the half-made container and its `criu-root` mount are gone,
/// and the next restore under the same id works.
#[tokio::test]
async fn kill_9_of_runc_mid_restore_leaves_no_runc_state_behind() {
    let pause = ckptd_tests::Pause::new();
    let d = Daemon::start().await;
    let conf = pause.criu_conf().display().to_string();
    let bundle = Bundle::busybox(&d.dir.path().join("bk"), CONTAINER_LOOPER, |cfg| {
        cfg["annotations"] = json!({"org.criu.config": conf});
    });
    let id = unique_id("runck9");
    let _c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 3);
    d.client
        .create_checkpoint(&ckptd_tests::checkpoint(container(&id), "runck9"), true)
        .await
        .expect("checkpoint");
    let state_dir = std::path::Path::new("/run/runc").join(&id);
    assert!(!state_dir.exists(), "the checkpointed container is gone");

    pause.arm("post-restore");
    let job = d
        .client
        .restore("runck9", &RestoreRequest::default(), false)
        .await
        .unwrap();
    let criu = pause.reached("post-restore");
    let stat = std::fs::read_to_string(format!("/proc/{criu}/stat")).unwrap();
    let runc: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{runc}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("restore"),
        "CRIU's parent is runc restore"
    );
    assert!(state_dir.exists(), "runc made its state");
    ckptd_tests::signal(runc, libc::SIGKILL);
    pause.release(true);
    let job = d
        .wait_job(&job.id.to_string(), |j| j.state.is_finished())
        .await;
    assert_eq!(job.state, ckptd_api::JobState::Failed, "{job:?}");
    assert!(
        !state_dir.exists(),
        "runc's state of the half-made container is left"
    );
    assert!(
        bundle.dir.join("rootfs/bin/busybox").exists(),
        "the cleanup went through the rootfs mount"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!("{id}/criu-root")),
        "the criu-root mount is left"
    );

    let before = bundle.out_lines().len();
    let r = d
        .client
        .restore("runck9", &RestoreRequest::default(), true)
        .await
        .expect("the next restore under the same id");
    assert_eq!(r.result.unwrap().container.as_deref(), Some(id.as_str()));
    let _restored = Container::adopt(&id);
    wait_until("the restored container to go on", || {
        bundle.out_lines().len() > before
    });
}

/// kill -9 of the CRIU that runc runs for a container's dump, at the moment the images are
/// written (the container frozen): the job fails at once as a CRIU failure, the container runs
/// on, not paused, and the next checkpoint of it works.
#[tokio::test]
async fn kill_9_of_runc_s_criu_mid_dump_leaves_the_container_running() {
    let pause = ckptd_tests::Pause::new();
    let d = Daemon::start().await;
    let conf = pause.criu_conf().display().to_string();
    let bundle = Bundle::busybox(&d.dir.path().join("bd"), CONTAINER_LOOPER, |cfg| {
        cfg["annotations"] = json!({"org.criu.config": conf});
    });
    let id = unique_id("criuk9");
    let c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 3);
    pause.arm("post-dump");
    let made = d
        .client
        .create_checkpoint(&ckptd_tests::checkpoint(container(&id), "criuk9"), false)
        .await
        .unwrap();
    let criu = pause.reached("post-dump");
    ckptd_tests::signal(criu, libc::SIGKILL);
    let job = d
        .wait_job(&made.job.id.to_string(), |j| j.state.is_finished())
        .await;
    pause.release(true);
    assert_eq!(job.state, ckptd_api::JobState::Failed, "{job:?}");
    let e = job.error.unwrap();
    assert_eq!(e.code, "criu_failed", "{e:?}");
    assert_eq!(c.status().as_deref(), Some("running"));
    assert!(
        grows(|| bundle.out_lines().len()),
        "the container does not run"
    );
    let again = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(container(&id), "criuk9-again")
            },
            true,
        )
        .await
        .expect("the next checkpoint");
    assert_eq!(again.checkpoint.status, CheckpointStatus::Ready);
}

/// The daemon killed (kill -9) while the CRIU runc runs for a container's dump holds it at
/// post-dump (the container paused, its images written): the restart finds that runc and its
/// CRIU (runc hands CRIU nothing that names the images' folder), waits for them as for any CRIU
/// a crash left, then ends them; the job fails, the container runs on, not paused, nothing is
/// left mounted, and the next checkpoint of it works. The restart used to find neither, so a
/// CRIU that did not end held the container for good.
#[tokio::test]
async fn a_daemon_killed_while_runc_s_criu_holds_a_checkpoint_lets_the_container_run_on() {
    let pause = ckptd_tests::Pause::new();
    let mut d = Daemon::start().await;
    let conf = pause.criu_conf().display().to_string();
    let bundle = Bundle::busybox(&d.dir.path().join("bk"), CONTAINER_LOOPER, |cfg| {
        cfg["annotations"] = json!({"org.criu.config": conf});
    });
    let id = unique_id("killed-held");
    let c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 3);
    d.checkpoint_killed_while_held(
        &pause,
        &ckptd_tests::checkpoint(container(&id), "killed-held"),
    )
    .await;
    assert_eq!(c.status().as_deref(), Some("running"), "{}", d.log());
    let before = bundle.out_lines().len();
    wait_until("the container to go on", || {
        bundle.out_lines().len() > before + 3
    });
    let mounts = ckptd_tests::mounts_under(d.dir.path());
    assert!(mounts.is_empty(), "left mounted: {mounts:?}");
    let again = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(container(&id), "killed-held-again")
            },
            true,
        )
        .await
        .expect("the next checkpoint");
    assert_eq!(again.checkpoint.status, CheckpointStatus::Ready);
}
