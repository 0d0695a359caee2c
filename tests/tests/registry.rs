//! OCI registries as remotes, end to end: real daemons (two "hosts"), the real CRIU, a real
//! distribution registry (`docker-registry`) with htpasswd authentication, and skopeo as the
//! independent witness of what the registry holds. Podman's side (its checkpoint images both
//! ways) is in podman.rs, beside its other tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ckptd_api::{CheckpointStatus, JobState, PullRequest, Target};
use ckptd_tests::{alive, wait_until, Daemon, RegistryServer};

fn config(dir: &Path, file: &str, body: &str) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, body).unwrap();
    p
}

async fn host(conf: &Path) -> Daemon {
    Daemon::start_with(&["--config", conf.to_str().unwrap()]).await
}

fn staging_left(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.state_dir.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_image_pushed_by_one_host_is_restored_by_another() {
    let reg = RegistryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let creds = reg.credentials_file("creds", None);
    let section = reg.config("hub", "team/checkpoints", &creds);
    let a = host(&config(dir.path(), "a.toml", &section)).await;
    let b = host(&config(dir.path(), "b.toml", &section)).await;
    let infos = a.client.remotes().await.unwrap().items;
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].kind, "registry");
    assert_eq!(infos[0].repository.as_deref(), Some("team/checkpoints"));
    assert!(infos[0].reachable, "{infos:?}");

    let mut t = ckptd_tests::counter(dir.path(), "counter", 4);
    let cp = a
        .client
        .create_checkpoint(
            &ckptd_tests::checkpoint(Some(Target::Process { pid: t.pid }), "travels"),
            true,
        )
        .await
        .unwrap()
        .checkpoint;
    wait_until("the checkpointed process to end", || !alive(t.pid));
    t.reap();
    let stopped_at = t.lines().len();

    // `ckpt push --registry R --tag T`: a job, then the copy on the checkpoint.
    let out = a.ckpt(&["push", "travels", "--registry", "hub", "--tag", "v1"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("team/checkpoints:v1"), "{said}");
    let copy = a
        .client
        .checkpoint("travels")
        .await
        .unwrap()
        .remote_copy("hub")
        .expect("the copy is recorded")
        .clone();
    assert_eq!(copy.key, "team/checkpoints:v1");

    // What the registry holds, as skopeo reads it: an OCI image of one gzip layer whose
    // manifest names the checkpoint; its digest is the copy's.
    let m = reg.manifest("team/checkpoints:v1");
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(layers[0]["size"].as_u64(), Some(copy.size_bytes));
    assert_eq!(m["annotations"]["io.ckptd.layout"], "ckptd");
    let record: serde_json::Value =
        serde_json::from_str(m["annotations"]["io.ckptd.checkpoint"].as_str().unwrap()).unwrap();
    assert_eq!(record["checkpoint"]["id"], cp.id.to_string());
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
        .arg(format!("{}:{}", reg.user, reg.password))
        .arg(format!("docker://{}/team/checkpoints:v1", reg.host))
        .output()
        .unwrap()
        .stdout;
    assert_eq!(ckptd_tests::sha256_hex(&raw), copy.sha256);

    // The other host lists it (`ckpt ls --registry`), and restores it in one request.
    let out = b.ckpt(&["ls", "--registry", "hub"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains("travels"), "{listed}");
    let items = b.client.remote_checkpoints("hub").await.unwrap().items;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].checkpoint.id, cp.id);
    assert_eq!(items[0].object, copy);
    let out = b.ckpt(&["remotes"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("registry") && said.contains("team/checkpoints"),
        "{said}"
    );
    // `ckpt restore --image HOST/REPOSITORY:TAG`: the registry that serves it, pulled and
    // restored in one job.
    let image = format!("{}/team/checkpoints:v1", reg.host);
    let out = b.ckpt(&["restore", "--image", &image]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = b.ckpt(&["restore", "--image", "elsewhere.example/x:1"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("[registries.NAME]") && said.contains("hub"),
        "{said}"
    );
    t.wait_for_lines(stopped_at + 5);
    t.assert_contiguous();
    let on_b = b.client.checkpoint("travels").await.unwrap();
    assert!(
        on_b.is_local() && on_b.remote_copy("hub").is_some(),
        "{:?}",
        on_b.locations
    );

    // Deleted everywhere: the registry no longer serves the tag.
    a.client
        .delete_checkpoint_everywhere("travels")
        .await
        .unwrap();
    let gone = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
        .arg(format!("{}:{}", reg.user, reg.password))
        .arg(format!("docker://{}/team/checkpoints:v1", reg.host))
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the image is still served");
    assert!(b
        .client
        .remote_checkpoints("hub")
        .await
        .unwrap()
        .items
        .is_empty());
}

/// Wrong credentials, a registry that goes down mid-push, images whose bytes lie about their
/// digests, and a layer that reaches out of its directory: each refused with a clear error,
/// nothing catalogued, nothing left on disk; a retry once the registry is back succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn registry_faults_are_refused_and_leave_nothing() {
    let mut reg = RegistryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let good = reg.credentials_file("good", None);
    let bad = reg.credentials_file("bad", Some("not-the-password"));
    let conf = format!(
        "{}{}",
        reg.config("hub", "faults", &good),
        reg.config("wrong", "faults", &bad)
    );
    let a = host(&config(dir.path(), "a.toml", &conf)).await;
    let b = host(&config(dir.path(), "b.toml", &conf)).await;
    let t = ckptd_tests::counter(dir.path(), "big", 96);
    a.client
        .create_checkpoint(
            &{
                let mut r = ckptd_tests::checkpoint(Some(Target::Process { pid: t.pid }), "big");
                r.leave_running = true;
                r
            },
            true,
        )
        .await
        .unwrap();

    // Wrong credentials: the job fails with the registry's 401 and says to check them.
    let e = a
        .client
        .push("big", "wrong", None, true, true)
        .await
        .unwrap_err();
    let (_, err) = e.api_error().expect("an API error");
    assert_eq!(err.code, "remote_failed", "{err:?}");
    assert_eq!(err.details["status"], 401, "{err:?}");
    assert_eq!(err.details["advice"]["kind"], "check_remote", "{err:?}");
    assert!(a
        .client
        .checkpoint("big")
        .await
        .unwrap()
        .remote_copy("wrong")
        .is_none());

    // Cancelled mid-push: the job ends cancelled, the copy is not recorded.
    let push = a
        .client
        .push("big", "hub", None, true, false)
        .await
        .unwrap();
    a.client.cancel_job(&push.id.to_string()).await.unwrap();
    let cancelled = a.wait_ended(&push.id.to_string()).await;
    assert_eq!(cancelled.state, JobState::Cancelled, "{cancelled:?}");
    assert!(a
        .client
        .checkpoint("big")
        .await
        .unwrap()
        .remote_copy("hub")
        .is_none());

    // Down mid-push: the job fails, the copy is not recorded; back up, a retry succeeds.
    let push = a
        .client
        .push("big", "hub", None, true, false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    reg.down();
    let failed = a.wait_ended(&push.id.to_string()).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let err = failed.error.expect("why it failed");
    assert_eq!(err.code, "remote_failed", "{err:?}");
    assert!(err.message.contains("registry hub"), "{err:?}");
    assert!(a
        .client
        .checkpoint("big")
        .await
        .unwrap()
        .remote_copy("hub")
        .is_none());
    reg.up();
    // The retry, followed: while it runs, its progress counts the bytes sent.
    let retry = a
        .client
        .push("big", "hub", None, true, false)
        .await
        .unwrap();
    let mut sent = 0;
    let retry = loop {
        let j = a.client.job(&retry.id.to_string(), None).await.unwrap();
        if j.state.is_finished() {
            break j;
        }
        if let Some(p) = &j.progress {
            assert!(p.bytes_written >= sent, "{p:?}");
            sent = p.bytes_written;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(retry.state, JobState::Succeeded, "{:?}", retry.error);
    assert!(sent > 0, "no progress was seen while the push ran");
    let copy = retry.result.unwrap().remote_copy.unwrap();

    // A layer altered in the registry's storage: B's pull is refused, nothing catalogued.
    let m = reg.manifest("faults:big");
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    let blob = reg.blob_file(&layer);
    let original = std::fs::read(&blob).unwrap();
    let mut altered = original.clone();
    let mid = altered.len() / 2;
    altered[mid] ^= 0xff;
    std::fs::write(&blob, &altered).unwrap();
    let refused = |what: &'static str| {
        let b = &b;
        async move {
            let e = b
                .client
                .pull("hub", "big", &PullRequest::default(), true)
                .await
                .expect_err(what);
            let (_, err) = e.api_error().expect("an API error");
            assert!(b
                .client
                .list_checkpoints(&Default::default())
                .await
                .unwrap()
                .items
                .is_empty());
            assert!(staging_left(b).is_empty(), "{:?}", staging_left(b));
            err.clone()
        }
    };
    let err = refused("an altered layer").await;
    assert_eq!(err.code, "remote_failed", "{err:?}");
    assert!(err.message.contains("refused"), "{err:?}");
    std::fs::write(&blob, &original).unwrap();

    // A manifest altered in storage: the registry serves bytes whose digest is not the copy's.
    let manifest_blob = reg.blob_file(&copy.sha256);
    let text = std::fs::read_to_string(&manifest_blob).unwrap();
    std::fs::write(&manifest_blob, text.replacen("\"ckptd\"", "\"ckptX\"", 1)).unwrap();
    let err = refused("a lying manifest").await;
    assert_eq!(err.code, "remote_failed", "{err:?}");
    std::fs::write(&manifest_blob, text).unwrap();

    // And the honest image pulls.
    let pulled = b
        .client
        .pull("hub", "big", &PullRequest::default(), true)
        .await
        .unwrap();
    assert_eq!(pulled.checkpoint.status, CheckpointStatus::Ready);

    // A checkpoint image (Podman's annotation) whose layer holds `../escape`: refused.
    let evil = dir.path().join("evil");
    let made = Command::new("python3")
        .arg("-c")
        .arg(EVIL_IMAGE)
        .arg(&evil)
        .status()
        .unwrap();
    assert!(made.success());
    let pushed = Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("{}:{}", reg.user, reg.password))
        .arg(format!("oci:{}:evil", evil.display()))
        .arg(format!("docker://{}/faults:evil", reg.host))
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let c = dir.path().join("c.toml");
    std::fs::write(&c, &conf).unwrap();
    let c = host(&c).await;
    let e = c
        .client
        .pull("hub", "evil", &PullRequest::default(), true)
        .await
        .expect_err("a layer with ../");
    let (_, err) = e.api_error().unwrap();
    assert_eq!(err.code, "remote_failed", "{err:?}");
    assert!(err.message.contains("escape"), "{err:?}");
    assert!(c
        .client
        .list_checkpoints(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(staging_left(&c).is_empty());
    assert!(!dir.path().join("escape").exists() && !c.state_dir.join("escape").exists());
}

/// An OCI layout (argv[1]) of one image tagged `evil`: Podman's checkpoint annotation and a
/// gzip layer whose tar holds `../escape`.
const EVIL_IMAGE: &str = r#"
import gzip, hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
os.makedirs(out + "/blobs/sha256")
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(out + "/blobs/sha256/" + d, "wb").write(data)
    return "sha256:" + d, len(data)
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w") as t:
    for name, data in [("config.dump", b"{}"), ("../escape", b"out")]:
        i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))
tar = raw.getvalue()
layer, lsize = blob(gzip.compress(tar))
config, csize = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}}).encode())
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": csize},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": lsize}],
    "annotations": {"io.podman.annotations.checkpoint.name": "evil"}}).encode()
m, msize = blob(manifest)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": m, "size": msize, "annotations": {"org.opencontainers.image.ref.name": "evil"}}]},
    open(out + "/index.json", "w"))
open(out + "/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
"#;

/// A registry with `age_recipients`: the layer is age-encrypted (ckptd's media type), holds no
/// plaintext (the process's marker is not in it, nor a file name), a host without the identity
/// is refused at once with nothing catalogued, and a host with it restores.
#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_registry_holds_no_plaintext_and_needs_the_identity() {
    let reg = RegistryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("age.key");
    let out = Command::new("age-keygen")
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
    let creds = reg.credentials_file("creds", None);
    let sealed = format!(
        "{}age_recipients = [\"{public}\"]\n",
        reg.config("sealed", "sealed", &creds)
    );
    let a = host(&config(dir.path(), "a.toml", &sealed)).await;
    let without = host(&config(dir.path(), "b.toml", &sealed)).await;
    let with = host(&config(
        dir.path(),
        "c.toml",
        &format!("{sealed}age_identity_file = \"{}\"\n", key.display()),
    ))
    .await;

    let mut t = ckptd_tests::counter(dir.path(), "sealed", 1);
    a.client
        .create_checkpoint(
            &ckptd_tests::checkpoint(Some(Target::Process { pid: t.pid }), "sealed-one"),
            true,
        )
        .await
        .unwrap();
    wait_until("the checkpointed process to end", || !alive(t.pid));
    t.reap();
    let stopped_at = t.lines().len();
    let job = a
        .client
        .push("sealed-one", "sealed", None, true, true)
        .await
        .unwrap();
    let copy = job.result.and_then(|r| r.remote_copy).unwrap();
    assert!(copy.encrypted, "{copy:?}");

    let m = reg.manifest("sealed:sealed-one");
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.ckptd.checkpoint.layer.v1.tar+gzip+age"
    );
    let layer = std::fs::read(reg.blob_file(m["layers"][0]["digest"].as_str().unwrap())).unwrap();
    assert!(layer.starts_with(b"age-encryption.org/v1"));
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(
        !has(&layer, b"ckptd-secret-marker"),
        "the marker is in the layer"
    );
    assert!(
        !has(&layer, b"inventory.img"),
        "a file name is in the layer"
    );

    let e = without
        .client
        .restore_from_remote("sealed", "sealed-one", &Default::default(), true)
        .await
        .expect_err("no identity");
    let (status, err) = e.api_error().unwrap();
    assert_eq!(status.as_u16(), 403, "{err:?}");
    assert!(err.message.contains("encrypted"), "{err:?}");
    assert!(without
        .client
        .list_checkpoints(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty());

    let job = with
        .client
        .restore_from_remote("sealed", "sealed-one", &Default::default(), true)
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    t.wait_for_lines(stopped_at + 5);
    t.assert_contiguous();
}

/// A registry over HTTPS whose certificate a CA of its own signed: trusted through `ca_file`
/// (push, list and pull work), refused without it (a certificate error, in `GET /v1/remotes`
/// and in the push job, nothing sent); and a layer larger than `import_max_bytes` is refused
/// (413) before anything is catalogued.
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_registry_is_trusted_through_its_ca_file_and_limits_hold() {
    let reg = RegistryServer::start_tls();
    let dir = tempfile::tempdir().unwrap();
    let creds = reg.credentials_file("creds", None);
    let trusted = reg.config("hub", "tls", &creds);
    assert!(trusted.contains("ca_file") && reg.url.starts_with("https://"));
    let untrusted = format!(
        "[registries.hub]\nurl = \"{}\"\nrepository = \"tls\"\ncredentials_file = \"{}\"\n",
        reg.url,
        creds.display()
    );
    let a = host(&config(dir.path(), "a.toml", &trusted)).await;
    let stranger = host(&config(dir.path(), "s.toml", &untrusted)).await;
    let small = host(&config(
        dir.path(),
        "b.toml",
        &format!("import_max_bytes = 100000\n{trusted}"),
    ))
    .await;

    let info = stranger.client.remotes().await.unwrap().items;
    assert!(!info[0].reachable, "{info:?}");
    assert!(
        info[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("certificate"),
        "{info:?}"
    );
    let info = a.client.remotes().await.unwrap().items;
    assert!(info[0].reachable, "{info:?}");

    let t = ckptd_tests::counter(dir.path(), "tls", 2);
    for d in [&a, &stranger] {
        d.client
            .create_checkpoint(
                &{
                    let mut r =
                        ckptd_tests::checkpoint(Some(Target::Process { pid: t.pid }), "over-tls");
                    r.leave_running = true;
                    r
                },
                true,
            )
            .await
            .unwrap();
    }
    let e = stranger
        .client
        .push("over-tls", "hub", None, true, true)
        .await
        .expect_err("an untrusted certificate");
    let (_, err) = e.api_error().unwrap();
    assert_eq!(err.code, "remote_failed", "{err:?}");
    assert!(err.message.contains("certificate"), "{err:?}");

    let job = a
        .client
        .push("over-tls", "hub", None, true, true)
        .await
        .expect("push over TLS");
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    assert_eq!(
        a.client
            .remote_checkpoints("hub")
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Larger than import_max_bytes: 413 before the job, nothing catalogued, nothing left.
    let e = small
        .client
        .pull("hub", "over-tls", &PullRequest::default(), true)
        .await
        .expect_err("the layer is larger than import_max_bytes");
    let (status, err) = e.api_error().unwrap();
    assert_eq!(status.as_u16(), 413, "{err:?}");
    assert!(err.message.contains("import_max_bytes"), "{err:?}");
    assert!(small
        .client
        .list_checkpoints(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(staging_left(&small).is_empty());
}

/// A schedule that pushes each checkpoint to a registry, with `keep_last: 2`: retention applies
/// to the registry's copies as to a bucket's, deleting the images it prunes (by digest), so the
/// repository ends with two checkpoint images, the two rows keep.
#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_pushing_to_a_registry_keeps_the_last_two_images() {
    let reg = RegistryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let creds = reg.credentials_file("creds", None);
    let conf = format!(
        "retention_interval_secs = 1\n{}",
        reg.config("hub", "scheduled", &creds)
    );
    let a = host(&config(dir.path(), "a.toml", &conf)).await;
    let t = ckptd_tests::counter(dir.path(), "scheduled", 1);
    a.client
        .create_schedule(
            &serde_json::from_value(serde_json::json!({
                "name": "every2s",
                "target": {"kind": "process", "pid": t.pid},
                "cron": "*/2 * * * * *",
                "options": {"push_to": "hub", "keep_local": false, "leave_running": true},
                "retention": {"keep_last": 2}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
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
    tokio::time::sleep(Duration::from_secs(4)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let images = loop {
        let images = a.client.remote_checkpoints("hub").await.unwrap().items;
        if images.len() == 2 || std::time::Instant::now() > deadline {
            break images;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(images.len(), 2, "{images:?}");
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
        let copy = c.remote_copy("hub").expect("its image");
        assert!(
            images.iter().any(|i| i.object.sha256 == copy.sha256),
            "{copy:?} is not in the registry"
        );
    }
}
