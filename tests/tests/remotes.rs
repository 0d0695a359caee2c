//! Remotes end to end: real daemons (two "hosts" with their own sockets and state), the real
//! CRIU, a real S3 server (moto) with SigV4-signed requests, real age encryption.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ckptd_api::{CheckpointStatus, CreateCheckpoint, JobState, Location, PullRequest, Target};
use ckptd_tests::{alive, wait_until, Daemon, S3Server};

/// A daemon configuration with `remotes` (TOML tables after `[remotes.NAME]`).
fn config(dir: &Path, file: &str, remotes: &[(&str, String)]) -> PathBuf {
    let mut text = String::from("retention_interval_secs = 1\n");
    for (name, body) in remotes {
        text.push_str(&format!("[remotes.{name}]\n{body}\n"));
    }
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

fn remote(s3: &S3Server, bucket: &str, creds: &Path, extra: &str) -> String {
    format!(
        "endpoint = \"{}\"\nbucket = \"{bucket}\"\ncredentials_file = \"{}\"\n{extra}",
        s3.endpoint,
        creds.display()
    )
}

async fn host(conf: &Path) -> Daemon {
    Daemon::start_with(&["--config", conf.to_str().unwrap()]).await
}

fn create(pid: i32, name: &str) -> CreateCheckpoint {
    ckptd_tests::checkpoint(Some(Target::Process { pid }), name)
}

fn archive_keys(s3: &S3Server, bucket: &str) -> Vec<String> {
    s3.objects(bucket)
        .into_iter()
        .filter(|k| k.contains("/archive."))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_pushed_by_one_host_is_restored_by_another() {
    let s3 = S3Server::start(&["shared"]);
    let dir = tempfile::tempdir().unwrap();
    let creds = s3.credentials_file("creds", None);
    let r = remote(&s3, "shared", &creds, "");
    let a = host(&config(dir.path(), "a.toml", &[("shared", r.clone())])).await;
    let b = host(&config(dir.path(), "b.toml", &[("shared", r)])).await;
    let infos = a.client.remotes().await.unwrap().items;
    assert_eq!(infos.len(), 1);
    assert!(infos[0].reachable, "{infos:?}");
    assert_eq!(infos[0].credentials, "file");

    let mut t = ckptd_tests::counter(dir.path(), "counter", 1);
    let mut req = create(t.pid, "travels");
    req.labels.insert("app".into(), "counter".into());
    req.push_to = Some("shared".into());
    req.keep_local = Some(false);
    let made = a.client.create_checkpoint(&req, true).await.unwrap();
    let push = made
        .job
        .result
        .and_then(|r| r.push_job)
        .expect("a push job follows");
    let push = a.wait_ended(&push.to_string()).await;
    assert_eq!(push.state, JobState::Succeeded, "{:?}", push.error);
    let cp = a.client.checkpoint("travels").await.unwrap();
    assert_eq!(cp.status, CheckpointStatus::Ready);
    assert!(!cp.is_local(), "keep_local false: {:?}", cp.locations);
    let copy = cp
        .remote_copy("shared")
        .expect("the copy is recorded")
        .clone();
    assert!(!Path::new(&cp.dir).exists(), "the local images are dropped");
    wait_until("the checkpointed process to end", || !alive(t.pid));
    t.reap();
    let stopped_at = t.lines().len();

    // The other host sees it, with the checkpoint's fields, and restores it in one request.
    let listed = b.client.remote_checkpoints("shared").await.unwrap().items;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].checkpoint.id, cp.id);
    assert_eq!(listed[0].checkpoint.name, "travels");
    assert_eq!(listed[0].checkpoint.target, Target::Process { pid: t.pid });
    assert_eq!(listed[0].checkpoint.labels["app"], "counter");
    assert_eq!(listed[0].checkpoint.stats, cp.stats);
    assert_eq!(listed[0].object, copy);
    let job = b
        .client
        .restore_from_remote("shared", "travels", &Default::default(), true)
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    t.wait_for_lines(stopped_at + 5);
    t.assert_contiguous();
    let on_b = b.client.checkpoint("travels").await.unwrap();
    assert!(
        on_b.is_local() && on_b.remote_copy("shared").is_some(),
        "{:?}",
        on_b.locations
    );

    // Deleting a row never deletes remote data; deleting with remote_copies does.
    b.client.delete_checkpoint("travels").await.unwrap();
    assert_eq!(archive_keys(&s3, "shared").len(), 1);
    let metrics = a.client.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains(&format!(
            "ckptd_remote_bytes_total{{direction=\"push\",remote=\"shared\"}} {}",
            copy.size_bytes
        )),
        "{metrics}"
    );
    // The copy counts where it is stored.
    assert!(
        metrics.contains(&format!(
            "ckptd_storage_used_bytes{{location=\"remote:shared\"}} {}\n",
            copy.size_bytes
        )),
        "{metrics}"
    );
    a.client
        .delete_checkpoint_everywhere("travels")
        .await
        .unwrap();
    assert_eq!(s3.objects("shared"), Vec::<String>::new());
    assert!(b
        .client
        .remote_checkpoints("shared")
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_remote_holds_no_plaintext_and_needs_the_identity() {
    let s3 = S3Server::start(&["sealed"]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("age.key");
    let out = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen (make setup installs age)");
    assert!(out.status.success());
    let public = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_owned))
        .unwrap();
    let creds = s3.credentials_file("creds", None);
    let sealed = remote(
        &s3,
        "sealed",
        &creds,
        &format!("age_recipients = [\"{public}\"]\n"),
    );
    let a = host(&config(dir.path(), "a.toml", &[("sealed", sealed.clone())])).await;
    let b_conf = config(dir.path(), "b.toml", &[("sealed", sealed.clone())]);
    let mut b = host(&b_conf).await;

    let mut t = ckptd_tests::counter(dir.path(), "counter", 1);
    let mut req = create(t.pid, "sealed-one");
    req.push_to = Some("sealed".into());
    req.keep_local = Some(false);
    let made = a.client.create_checkpoint(&req, true).await.unwrap();
    let push = made.job.result.and_then(|r| r.push_job).unwrap();
    let push = a.wait_ended(&push.to_string()).await;
    assert_eq!(push.state, JobState::Succeeded, "{:?}", push.error);
    let copy = push.result.and_then(|r| r.remote_copy).unwrap();
    assert!(
        copy.encrypted && copy.key.ends_with(".tar.zst.age"),
        "{copy:?}"
    );
    wait_until("the checkpointed process to end", || !alive(t.pid));
    t.reap();
    let stopped_at = t.lines().len();

    let object = s3.get("sealed", &copy.key);
    assert!(object.starts_with(b"age-encryption.org/v1"));
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(
        !has(&object, b"ckptd-secret-marker"),
        "the marker is in the object"
    );
    assert!(
        !has(&object, b"inventory.img"),
        "a file name is in the object"
    );
    // The same object, decrypted with the identity, is the archive and holds the marker.
    let enc = dir.path().join("object.age");
    std::fs::write(&enc, &object).unwrap();
    let plain = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i {} {} | zstd -dc",
            key.display(),
            enc.display()
        ))
        .output()
        .unwrap();
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert!(has(&plain.stdout, b"inventory.img"));
    assert!(has(&plain.stdout, b"ckptd-secret-marker"));

    // Without the identity: refused at once, with what to do.
    let e = b
        .client
        .restore_from_remote("sealed", "sealed-one", &Default::default(), true)
        .await
        .unwrap_err();
    let (status, info) = e.api_error().unwrap();
    assert_eq!(status.as_u16(), 403, "{info:?}");
    assert!(info.message.contains("encrypted"), "{}", info.message);
    assert!(
        info.hint().unwrap_or("").contains("age_identity_file"),
        "{info:?}"
    );
    assert!(b
        .client
        .list_checkpoints(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty());

    // With it: restored, and the process counts on.
    config(
        dir.path(),
        "b.toml",
        &[(
            "sealed",
            format!("{sealed}age_identity_file = \"{}\"\n", key.display()),
        )],
    );
    b.restart().await;
    let job = b
        .client
        .restore_from_remote("sealed", "sealed-one", &Default::default(), true)
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    t.wait_for_lines(stopped_at + 5);
    t.assert_contiguous();
}

/// A TCP proxy in front of the S3 server: `down` drops every connection and refuses new ones
/// (the server "dies"), `up` serves again on the same port.
struct Proxy {
    port: u16,
    to: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(to: u16) -> Proxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let mut p = Proxy {
            port,
            to,
            task: None,
        };
        p.serve(l);
        p
    }

    fn serve(&mut self, l: tokio::net::TcpListener) {
        let to = self.to;
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut c, _)) = l.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                    }
                });
            }
        }));
    }

    fn down(&mut self) {
        // Aborting the task drops the listener and, with its JoinSet, every connection.
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn up(&mut self) {
        let l = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(l);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_leave_nothing_behind() {
    let s3 = S3Server::start(&["shared"]);
    let dir = tempfile::tempdir().unwrap();
    let creds = s3.credentials_file("creds", None);
    let wrong = s3.credentials_file("wrong", Some("not-the-secret"));
    let mut proxy = Proxy::start(s3.port).await;
    let via_proxy = format!(
        "endpoint = \"http://127.0.0.1:{}\"\nbucket = \"shared\"\ncredentials_file = \"{}\"\n",
        proxy.port,
        creds.display()
    );
    let mut a = host(&config(
        dir.path(),
        "a.toml",
        &[
            ("shared", remote(&s3, "shared", &creds, "")),
            ("wrong", remote(&s3, "shared", &wrong, "")),
            ("nobucket", remote(&s3, "missing", &creds, "")),
            ("flaky", via_proxy),
        ],
    ))
    .await;
    let mut b = host(&config(
        dir.path(),
        "b.toml",
        &[("shared", remote(&s3, "shared", &creds, ""))],
    ))
    .await;
    let t = ckptd_tests::counter(dir.path(), "counter", 192);
    let mut req = create(t.pid, "big");
    req.leave_running = true;
    let made = a.client.create_checkpoint(&req, true).await.unwrap();
    assert_eq!(made.job.state, JobState::Succeeded);
    let local_only = vec![Location::Local {
        dir: made.checkpoint.dir.clone(),
    }];

    // Wrong credentials: the server's 403 and its reason; nothing recorded, nothing stored.
    let job = a
        .client
        .push("big", "wrong", None, true, true)
        .await
        .unwrap_err();
    let (status, info) = job.api_error().unwrap();
    assert_eq!(status.as_u16(), 502, "{info:?}");
    assert_eq!(info.code, "remote_failed");
    assert_eq!(info.details.get("status"), Some(&403.into()), "{info:?}");
    assert!(
        info.message.contains("SignatureDoesNotMatch"),
        "{}",
        info.message
    );
    // A bucket that does not exist.
    let e = a
        .client
        .push("big", "nobucket", None, true, true)
        .await
        .unwrap_err();
    let (_, info) = e.api_error().unwrap();
    assert_eq!(info.details.get("status"), Some(&404.into()), "{info:?}");
    assert!(info.message.contains("NoSuchBucket"), "{}", info.message);
    assert_eq!(
        a.client.checkpoint("big").await.unwrap().locations,
        local_only
    );
    assert!(s3.objects("shared").is_empty());

    // The server dies mid-push: the job fails and says so; once the server is back the upload
    // is aborted (no parts left), nothing is listed, and a retry succeeds.
    let push = a
        .client
        .push("big", "flaky", None, true, false)
        .await
        .unwrap();
    wait_until("the upload to start", || !s3.uploads("shared").is_empty());
    proxy.down();
    let failed = a.wait_ended(&push.id.to_string()).await;
    assert_eq!(failed.state, JobState::Failed);
    let err = failed.error.unwrap();
    assert_eq!(err.code, "remote_failed", "{err:?}");
    assert!(err.message.contains("remote flaky"), "{}", err.message);
    proxy.up().await;
    wait_until("the failed push's upload to be aborted", || {
        s3.uploads("shared").is_empty()
    });
    assert!(
        s3.objects("shared").is_empty(),
        "{:?}",
        s3.objects("shared")
    );
    assert_eq!(
        a.client.checkpoint("big").await.unwrap().locations,
        local_only
    );
    let retry = a
        .client
        .push("big", "flaky", None, true, true)
        .await
        .unwrap();
    assert_eq!(retry.state, JobState::Succeeded, "{:?}", retry.error);

    // The daemon killed mid-pull: after its restart nothing half-imported is ready, and no
    // staging directory is left.
    let (cp, pull) = b
        .client
        .pull("shared", "big", &PullRequest::default(), false)
        .await
        .map(|r| (r.checkpoint, r.job))
        .unwrap();
    assert_eq!(cp.status, CheckpointStatus::Pending);
    let root = b.state_dir.join("checkpoints");
    let staging = root.join(format!(".import-{}", pull.id));
    wait_until("the pull to write", || {
        std::fs::read_dir(&staging).is_ok_and(|mut d| d.next().is_some())
    });
    ckptd_tests::signal(b.pid(), libc::SIGKILL);
    b.kill_and_forget();
    b.restart_after_stop().await;
    let after = b.client.checkpoint("big").await.unwrap();
    assert_eq!(after.status, CheckpointStatus::Failed, "{after:?}");
    assert!(!staging.exists());
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "{:?}",
        std::fs::read_dir(&root).unwrap().collect::<Vec<_>>()
    );

    // A corrupted object (one byte flipped): refused, naming the file, nothing catalogued.
    let key = a
        .client
        .checkpoint("big")
        .await
        .unwrap()
        .remote_copy("flaky")
        .unwrap()
        .key
        .clone();
    let size = s3.get("shared", &key).len();
    s3.flip("shared", &key, size / 2);
    let pulled = b
        .client
        .pull("shared", "big", &PullRequest::default(), true)
        .await
        .unwrap_err();
    let (_, info) = pulled.api_error().unwrap();
    assert_eq!(info.code, "remote_failed", "{info:?}");
    assert!(info.message.contains("pages-"), "{}", info.message);
    assert!(info.message.contains("sha256"), "{}", info.message);
    assert!(
        b.client.checkpoint("big").await.is_err(),
        "a refused pull catalogues nothing"
    );
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);

    // The pushing daemon killed mid-push: its next start aborts the upload it had begun and
    // pushes again, from the start.
    let push = a
        .client
        .push("big", "shared", None, true, false)
        .await
        .unwrap();
    wait_until("the upload to start", || !s3.uploads("shared").is_empty());
    let restarted_at = chrono::Utc::now();
    a.crash(|| {}).await;
    let push = a.wait_ended(&push.id.to_string()).await;
    assert_eq!(
        push.state,
        JobState::Succeeded,
        "{:?}\n{}",
        push.error,
        a.log()
    );
    assert!(
        push.started_at.unwrap() > restarted_at,
        "the push ran again after the restart: {push:?}"
    );
    wait_until("the killed push's upload to be aborted", || {
        s3.uploads("shared").is_empty()
    });
    assert!(a
        .client
        .checkpoint("big")
        .await
        .unwrap()
        .remote_copy("shared")
        .is_some());
    assert!(alive(t.pid));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_pushing_with_keep_last_2_leaves_two_remote_copies() {
    let s3 = S3Server::start(&["shared"]);
    let dir = tempfile::tempdir().unwrap();
    let creds = s3.credentials_file("creds", None);
    let a = host(&config(
        dir.path(),
        "a.toml",
        &[("shared", remote(&s3, "shared", &creds, ""))],
    ))
    .await;
    let t = ckptd_tests::counter(dir.path(), "counter", 1);
    let s = a
        .client
        .create_schedule(
            &serde_json::from_value(serde_json::json!({
                "name": "every2s",
                "target": {"kind": "process", "pid": t.pid},
                "cron": "*/2 * * * * *",
                "options": {"push_to": "shared", "keep_local": false},
                "retention": {"keep_last": 2}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(s.options.push_to.as_deref(), Some("shared"));
    let pushes = || async {
        a.client
            .jobs(&ckptd_tests::q("kind=push&state=succeeded&limit=100"))
            .await
            .unwrap()
            .items
            .len()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pushes().await < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than 4 pushes in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.client
        .update_schedule(
            "every2s",
            &serde_json::from_value(serde_json::json!({"enabled": false})).unwrap(),
        )
        .await
        .unwrap();
    // Let running jobs end and a retention pass or two run.
    tokio::time::sleep(Duration::from_secs(4)).await;
    wait_until("two remote copies", || {
        archive_keys(&s3, "shared").len() == 2
    });
    let rows = a
        .client
        .list_checkpoints(&Default::default())
        .await
        .unwrap()
        .items;
    let ready: Vec<_> = rows
        .iter()
        .filter(|c| c.status == CheckpointStatus::Ready)
        .collect();
    assert_eq!(ready.len(), 2, "{rows:?}");
    for c in ready {
        assert!(!c.is_local(), "{:?}", c.locations);
        assert!(archive_keys(&s3, "shared").contains(&c.remote_copy("shared").unwrap().key));
    }
    let plan = a.client.retention_plan("every2s").await.unwrap();
    assert_eq!(plan.remotes["shared"].keep.len(), 2, "{plan:?}");
    assert!(t.is_progressing(Duration::from_secs(2)));
}

#[tokio::test(flavor = "multi_thread")]
async fn ckpt_pushes_lists_and_migrates_via_a_remote() {
    use std::os::unix::fs::PermissionsExt;
    let s3 = S3Server::start(&["shared"]);
    let dir = tempfile::tempdir().unwrap();
    let creds = s3.credentials_file("creds", None);
    let r = remote(&s3, "shared", &creds, "");
    let a = host(&config(dir.path(), "a.toml", &[("shared", r.clone())])).await;
    let token = dir.path().join("token");
    std::fs::write(&token, "via-token-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let b_conf = config(dir.path(), "b.toml", &[("shared", r)]);
    let b = Daemon::start_with(&[
        "--config",
        b_conf.to_str().unwrap(),
        "--tcp-listen",
        "127.0.0.1:0",
        "--tcp-token-file",
        token.to_str().unwrap(),
    ])
    .await;
    let addr = b.tcp_addr();
    let ckpt = |socket: &Path, args: &[&str]| {
        let out = std::process::Command::new(ckptd_tests::workspace_binary("ckpt"))
            .arg("--socket")
            .arg(socket)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, out) = ckpt(&a.socket, &["remotes"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("shared") && out.contains(" ok"), "{out}");

    let mut t = ckptd_tests::counter(dir.path(), "counter", 1);
    let pid = t.pid.to_string();
    let (code, out) = ckpt(&a.socket, &["create", &pid, "moved"]);
    assert_eq!(code, Some(0), "{out}");
    wait_until("the checkpointed process to end", || !alive(t.pid));
    t.reap();
    let stopped_at = t.lines().len();
    let (code, out) = ckpt(&a.socket, &["push", "moved", "--remote", "shared"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("pushed moved to shared"), "{out}");
    let (code, out) = ckpt(&b.socket, &["ls", "--remote", "shared"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("moved"), "{out}");
    // A remote this daemon does not have: the error names the configured ones.
    let (code, out) = ckpt(&a.socket, &["push", "moved", "--remote", "nope"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("configured: shared"), "{out}");

    let (code, out) = ckpt(
        &a.socket,
        &[
            "migrate",
            "moved",
            "--via",
            "shared",
            "--to",
            &addr,
            "--token-file",
            token.to_str().unwrap(),
            "--restore",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("restored on {addr}: pid {}", t.pid)),
        "{out}"
    );
    t.wait_for_lines(stopped_at + 5);
    t.assert_contiguous();

    // `ckpt create --push-to` waits for the push and says where it went; `ckpt restore NAME`
    // on a host that never had it finds it in the one remote that holds it and pulls it first.
    let mut t = ckptd_tests::counter(dir.path(), "counter2", 1);
    let pid = t.pid.to_string();
    let (code, out) = ckpt(
        &a.socket,
        &["create", &pid, "moved2", "--push-to", "shared"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("pushed to shared: "), "{out}");
    let (_, json) = ckpt(&a.socket, &["inspect", "moved2", "--json"]);
    assert!(
        json.contains("\"remote\": \"shared\""),
        "pushed when create returned: {json}"
    );
    wait_until("the checkpointed process to end", || !alive(t.pid));
    t.reap();
    let stopped_at = t.lines().len();
    let (code, out) = ckpt(&b.socket, &["restore", "moved2"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("moved2 is not here but in remote shared: pulling it first")
            && out.contains(&format!("restored: pid {}", t.pid)),
        "{out}"
    );
    t.wait_for_lines(stopped_at + 5);
    t.assert_contiguous();
    // One nobody has: the daemon's not-found stands.
    let (code, out) = ckpt(&b.socket, &["restore", "nowhere"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not_found"), "{out}");
}

/// Attack 6 of issue 25: whoever can write the bucket writes records. Three 48 MiB records, a
/// record whose object is another checkpoint's archive, and one whose target has no `kind`: a
/// list shows the real checkpoints only and stays small in memory, each bad record is
/// `remote_failed` saying why, and deleting the forged one removes nothing of the real one.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_bucket_is_read_bounded_and_deletes_only_its_own_objects() {
    let s3 = S3Server::start(&["hostile"]);
    let dir = tempfile::tempdir().unwrap();
    let creds = s3.credentials_file("creds", None);
    let conf = config(
        dir.path(),
        "a.toml",
        &[("r", remote(&s3, "hostile", &creds, ""))],
    );
    let d = host(&conf).await;
    let mut t = ckptd_tests::counter(dir.path(), "real", 4);
    let real = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                push_to: Some("r".into()),
                ..create(t.pid, "real")
            },
            true,
        )
        .await
        .unwrap();
    let push = real.job.result.as_ref().and_then(|r| r.push_job).unwrap();
    assert_eq!(
        d.wait_ended(&push.to_string()).await.state,
        JobState::Succeeded
    );
    let id = real.checkpoint.id;
    let record_key = s3
        .objects("hostile")
        .into_iter()
        .find(|k| k.ends_with(&format!("checkpoints/{id}/checkpoint.json")))
        .expect("the pushed record");
    let prefix = record_key
        .strip_suffix(&format!("checkpoints/{id}/checkpoint.json"))
        .unwrap()
        .to_owned();
    let record: serde_json::Value =
        serde_json::from_slice(&s3.get("hostile", &record_key)).unwrap();
    let real_archive = record["object"]["key"].as_str().unwrap().to_owned();
    let put = |key: String, body: Vec<u8>| {
        let f = dir.path().join("object");
        std::fs::write(&f, body).unwrap();
        s3.put("hostile", &key, &f);
    };
    // Three records of 48 MiB each.
    for _ in 0..3 {
        let fake = uuid::Uuid::new_v4();
        let mut big = record.clone();
        big["checkpoint"]["id"] = fake.to_string().into();
        big["pad"] = "x".repeat(48 << 20).into();
        put(
            format!("{prefix}checkpoints/{fake}/checkpoint.json"),
            serde_json::to_vec(&big).unwrap(),
        );
    }
    // A record of its own id whose object is the real checkpoint's archive.
    let forged = uuid::Uuid::new_v4();
    let mut f = record.clone();
    f["checkpoint"]["id"] = forged.to_string().into();
    f["checkpoint"]["name"] = "forged".into();
    put(
        format!("{prefix}checkpoints/{forged}/checkpoint.json"),
        serde_json::to_vec(&f).unwrap(),
    );
    // A record whose target has no kind.
    let kindless = uuid::Uuid::new_v4();
    let mut k = record.clone();
    k["checkpoint"]["id"] = kindless.to_string().into();
    k["checkpoint"]["target"]
        .as_object_mut()
        .unwrap()
        .remove("kind");
    put(
        format!("{prefix}checkpoints/{kindless}/checkpoint.json"),
        serde_json::to_vec(&k).unwrap(),
    );

    let listed = d.client.remote_checkpoints("r").await.unwrap();
    let names: Vec<&str> = listed
        .items
        .iter()
        .map(|r| r.checkpoint.name.as_str())
        .collect();
    assert_eq!(names, ["real"], "{listed:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        hwm_kb < 120 << 10,
        "listing took the daemon to {} MiB",
        hwm_kb >> 10
    );
    for (bad, says) in [(forged, "is not checkpoint"), (kindless, "kind")] {
        let e = d
            .client
            .delete_remote_checkpoint("r", &bad.to_string())
            .await
            .unwrap_err();
        let (status, err) = e.api_error().expect("an API error");
        assert_eq!(status.as_u16(), 502, "{err:?}");
        assert_eq!(err.code, "remote_failed", "{err:?}");
        assert!(err.message.contains(says), "{err:?}");
    }
    assert!(
        s3.objects("hostile").contains(&real_archive),
        "the real checkpoint's archive was deleted through a forged record"
    );
    ckptd_tests::signal(t.pid, 9);
    t.reap();
}

/// `push_to` is recorded with the checkpoint's end, so kill -9 of the daemon while CRIU finishes
/// the dump does not forget it: the restart publishes the images and queues the push. (A push
/// cut short is pushed again: `faults_leave_nothing_behind`.)
#[tokio::test(flavor = "multi_thread")]
async fn push_to_survives_kill_9_of_the_daemon() {
    let s3 = S3Server::start(&["kept"]);
    let dir = tempfile::tempdir().unwrap();
    let creds = s3.credentials_file("creds", None);
    let pause = ckptd_tests::Pause::new();
    let conf = dir.path().join("conf.toml");
    std::fs::write(
        &conf,
        format!(
            "{}[remotes.kept]\n{}\n",
            pause.config_line(),
            remote(&s3, "kept", &creds, "")
        ),
    )
    .unwrap();
    let mut d = host(&conf).await;
    let t = ckptd_tests::counter(dir.path(), "pushed", 48);
    let mut req = create(t.pid, "pushed");
    req.leave_running = true;
    req.push_to = Some("kept".into());

    // kill -9 while CRIU has written the images and waits to end.
    pause.arm("post-dump");
    let made = d.client.create_checkpoint(&req, false).await.unwrap();
    pause.reached("post-dump");
    d.crash(|| pause.release(true)).await;
    let job = d.client.job(&made.job.id.to_string(), None).await.unwrap();
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{:?}\n{}",
        job.error,
        d.log()
    );
    let push = job
        .result
        .and_then(|r| r.push_job)
        .expect("the push follows");

    let push = d.wait_ended(&push.to_string()).await;
    assert_eq!(
        push.state,
        JobState::Succeeded,
        "{:?}\n{}",
        push.error,
        d.log()
    );
    let cp = d.client.checkpoint("pushed").await.unwrap();
    assert!(cp.remote_copy("kept").is_some(), "{:?}", cp.locations);
    assert_eq!(archive_keys(&s3, "kept").len(), 1);
    assert!(t.is_progressing(Duration::from_secs(2)));
}
