//! Kubernetes checkpoint archives (a kubelet's, in CRI-O's and containerd's flavours), made from
//! a real ckptd checkpoint of a runc container the way those engines write them, imported into
//! ckptd and restored outside Kubernetes as runc containers: a new bundle built from the image's
//! root filesystem, the archive's root filesystem changes, deletions and bind-mount sources.

use std::path::{Path, PathBuf};
use std::process::Command;

use ckptd_api::{CheckpointStatus, CreateCheckpoint, RestoreRequest, Target as ApiTarget};
use ckptd_tests::{
    assert_counts, read_lines, unique_id, wait_until, Bundle, Container, ContainerStdio, Daemon,
    CONTAINER_LOOPER,
};

/// Writes a Kubernetes checkpoint archive of checkpoint directory `cp` (taken of `bundle`'s
/// container) at `out`, in `flavour` (`crio` or `containerd`); `hostile` adds a bad entry.
fn kube_archive(cp: &Path, bundle: &Path, volume: &Path, flavour: &str, hostile: &str, out: &Path) {
    let py = r#"
import io, json, os, sys, tarfile, gzip, time
cp, bundle, volume, flavour, hostile, out = sys.argv[1:7]
spec = json.load(open(os.path.join(bundle, 'config.json')))
if flavour == 'crio':
    spec['annotations'] = {
        'io.container.manager': 'cri-o',
        'io.kubernetes.cri-o.Metadata': json.dumps({'name': 'counter'}),
        'io.kubernetes.cri-o.Annotations': json.dumps({}),
        'io.kubernetes.container.name': 'counter',
        'io.kubernetes.pod.name': 'web-0',
        'io.kubernetes.pod.namespace': 'shop',
    }
else:
    spec['annotations'] = {
        'io.kubernetes.cri.container-name': 'counter',
        'io.kubernetes.cri.sandbox-name': 'web-0',
        'io.kubernetes.cri.sandbox-namespace': 'shop',
    }
config = {'id': 'k8s-1', 'name': 'k8s_counter_web-0_shop', 'rootfsImageName': 'localhost/busybox:latest',
          'checkpointedTime': '2026-12-02T10:00:00Z'}
# rootfs-diff.tar: what the container changed (its out.log), plain for CRI-O, gzip for containerd.
diff = io.BytesIO()
with tarfile.open(fileobj=diff, mode='w') as d:
    d.add(os.path.join(bundle, 'rootfs', 'out.log'), arcname='out.log')
    if hostile == 'diff-dotdot':
        i = tarfile.TarInfo('../../escape'); data = b'x'; i.size = 1
        d.addfile(i, io.BytesIO(data))
    if hostile == 'diff-symlink':
        i = tarfile.TarInfo('evil'); i.type = tarfile.SYMTYPE; i.linkname = volume
        d.addfile(i)
        i = tarfile.TarInfo('evil/escape'); data = b'x'; i.size = 1
        d.addfile(i, io.BytesIO(data))
    if hostile == 'bomb':
        i = tarfile.TarInfo('zeros'); i.size = 320 << 20
        d.addfile(i, io.BytesIO(bytes(i.size)))
diff = diff.getvalue()
if flavour == 'containerd' or hostile == 'bomb':
    diff = gzip.compress(diff)
if hostile == 'hooks':
    spec['hooks'] = {'prestart': [{'path': '/bin/sh', 'args': ['sh', '-c', 'id > ' + volume + '/hook-ran']}],
                     'createRuntime': [{'path': '/bin/sh', 'args': ['sh', '-c', 'id > ' + volume + '/hook-ran']}]}
if hostile == 'privileged':
    for s in ('bounding', 'effective', 'permitted'):
        spec['process']['capabilities'][s] = spec['process']['capabilities'].get(s, []) + ['CAP_SYS_ADMIN']
deleted = ['/etc/stale'] + (['/../../etc/hostname'] if hostile == 'deleted-outside' else [])
t = tarfile.open(out, 'w')
def add(name, data, mode=0o600):
    i = tarfile.TarInfo(name); i.size = len(data); i.mode = mode; i.mtime = time.time()
    t.addfile(i, io.BytesIO(data))
d = tarfile.TarInfo('checkpoint'); d.type = tarfile.DIRTYPE; d.mode = 0o700
t.addfile(d)
for f in sorted(os.listdir(cp)):
    p = os.path.join(cp, f)
    data = open(p, 'rb').read()
    if f in ('dump.log', 'stats-dump'):
        add(f, data)
    elif not f.endswith('.log'):
        add('checkpoint/' + f, data)
add('config.dump', json.dumps(config).encode())
add('spec.dump', json.dumps(spec).encode())
add('rootfs-diff.tar', diff)
if flavour == 'crio':
    add('deleted.files', json.dumps(deleted).encode())
    add('bind.mounts', json.dumps([{'source': volume, 'destination': '/data', 'file_type': 'directory',
                                    'permissions': 0o755}]).encode())
else:
    add('deleted.files', json.dumps(deleted).encode())
    add('status', json.dumps({'Pid': 1, 'Reason': 'checkpointed'}).encode())
t.close()
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(py)
        .arg(cp)
        .arg(bundle)
        .arg(volume)
        .arg(flavour)
        .arg(hostile)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success(), "python for the {flavour} archive");
}

async fn import(d: &Daemon, file: &Path, name: &str) -> ckptd_api::Checkpoint {
    let f = tokio::fs::File::open(file).await.unwrap();
    d.client
        .import(f, Some(name))
        .await
        .unwrap_or_else(|e| panic!("import of {}: {e}", file.display()))
}

fn restore_req(id: &str, bundle: &Path, rootfs: &Path) -> RestoreRequest {
    RestoreRequest {
        target: Some(ApiTarget::Container {
            id: id.into(),
            runtime: ckptd_api::Runtime::Runc,
            root: None,
            bundle: Some(bundle.display().to_string()),
            namespace: None,
        }),
        rootfs: Some(rootfs.display().to_string()),
        ..Default::default()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Makes CRI-O's archive of checkpoint directory `cp` with the `hostile` change, imports it and
/// restores it as a new runc container from `image`: the bundle's directory, the container's
/// id, and what the restore answered.
async fn restore_hostile(
    d: &Daemon,
    cp: &Path,
    bundle: &Bundle,
    volume: &Path,
    image: &Path,
    hostile: &str,
) -> (
    PathBuf,
    String,
    Result<ckptd_api::Job, ckptd_api::ClientError>,
) {
    let work = d.dir.path();
    let file = work.join(format!("{hostile}.tar"));
    kube_archive(cp, &bundle.dir, volume, "crio", hostile, &file);
    let name = format!("hostile-{hostile}");
    import(d, &file, &name).await;
    let b = work.join(format!("restored-{hostile}"));
    let id = unique_id("k8s-hostile");
    let restored = d
        .client
        .restore(&name, &restore_req(&id, &b, image), true)
        .await;
    (b, id, restored)
}

/// Its out.log counts on contiguously, past `from` lines.
fn counts_on(bundle: &Path, from: usize, what: &str) {
    let log = bundle.join("rootfs/out.log");
    wait_until("the restored container to count on", || {
        read_lines(&log).len() > from + 3
    });
    assert_counts(&read_lines(&log), what);
}

#[tokio::test]
async fn kubernetes_archives_restore_outside_kubernetes_as_runc_containers() {
    // A rootfs-diff.tar may expand to import_max_bytes at most: 256 MiB here.
    let conf = tempfile::tempdir().unwrap();
    let toml = conf.path().join("ckptd.toml");
    std::fs::write(&toml, "import_max_bytes = 268435456\n").unwrap();
    let d = Daemon::start_with(&["--config", toml.to_str().unwrap()]).await;
    let work = d.dir.path().to_owned();
    // The "volume": a host directory bind-mounted at /data, gone on the host that restores.
    let volume = work.join("volume");
    std::fs::create_dir(&volume).unwrap();
    let v = volume.display().to_string();
    let bundle = Bundle::busybox(&work.join("orig"), CONTAINER_LOOPER, |cfg| {
        cfg["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"destination": "/data", "type": "bind", "source": v, "options": ["rbind", "rw"]}));
    });
    // The image, as the restoring host has it: the root filesystem before the container ran,
    // with a file the container had deleted.
    let image = work.join("image");
    copy_dir(&bundle.dir.join("rootfs"), &image);
    std::fs::create_dir_all(image.join("etc")).unwrap();
    std::fs::write(image.join("etc/stale"), b"deleted in the container").unwrap();

    let id = unique_id("k8s");
    let c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 3);
    let cp = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Container {
                    id: id.clone(),
                    runtime: ckptd_api::Runtime::Runc,
                    root: None,
                    bundle: None,
                    namespace: None,
                }),
                name: Some("k8s-src".into()),
                ..Default::default()
            },
            true,
        )
        .await
        .expect("checkpoint of the runc container");
    assert_eq!(cp.checkpoint.status, CheckpointStatus::Ready);
    assert_eq!(c.status(), None);
    let stopped_at = bundle.out_lines().len();

    let crio = work.join("crio.tar");
    let ctrd = work.join("containerd.tar");
    kube_archive(
        Path::new(&cp.checkpoint.dir),
        &bundle.dir,
        &volume,
        "crio",
        "",
        &crio,
    );
    kube_archive(
        Path::new(&cp.checkpoint.dir),
        &bundle.dir,
        &volume,
        "containerd",
        "",
        &ctrd,
    );
    // The restoring host has no such volume.
    std::fs::remove_dir(&volume).unwrap();

    // CRI-O's flavour: imported with where it came from, restored into a new bundle; the
    // bind-mount source is recreated as bind.mounts records it.
    let k1 = import(&d, &crio, "from-crio").await;
    let origin = k1.origin.clone().expect("origin");
    assert_eq!(
        (origin.engine.as_str(), origin.container.as_str()),
        ("cri-o", "counter")
    );
    assert_eq!(origin.pod.as_deref(), Some("web-0"));
    assert_eq!(origin.namespace.as_deref(), Some("shop"));
    assert_eq!(origin.image.as_deref(), Some("localhost/busybox:latest"));
    assert!(
        matches!(&k1.target, ApiTarget::Container { id, runtime: ckptd_api::Runtime::Runc, .. } if id == "counter")
    );
    // `ckpt inspect` says where it came from and lists its process tree.
    let out = Command::new(ckptd_tests::workspace_binary("ckpt"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["inspect", "from-crio"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Origin:       cri-o container counter in pod web-0 (namespace shop), image localhost/busybox:latest"),
        "{text}"
    );
    assert!(text.contains("Processes:\n  [1] sh"), "{text}");
    // In place there is nothing to restore into: said so, with the request that works.
    let e = d
        .client
        .restore("from-crio", &RestoreRequest::default(), true)
        .await
        .unwrap_err();
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 400, "{err}");
    assert!(err.message.contains("rootfs"), "{err}");
    let b1 = work.join("restored-crio");
    let id1 = unique_id("k8s-crio");
    let job = d
        .client
        .restore("from-crio", &restore_req(&id1, &b1, &image), true)
        .await
        .expect("restore of CRI-O's archive as a runc container");
    let _c1 = Container::adopt(&id1);
    assert_eq!(job.result.unwrap().container.as_deref(), Some(id1.as_str()));
    assert!(volume.is_dir(), "bind.mounts' source recreated");
    assert!(
        !b1.join("rootfs/etc/stale").exists(),
        "deleted.files applied"
    );
    assert!(
        image.join("etc/stale").exists(),
        "the image is left as it was"
    );
    counts_on(
        &b1,
        stopped_at,
        "out.log of the container restored from CRI-O's archive",
    );

    // containerd's flavour (gzip rootfs-diff.tar, no bind.mounts): without the volume it cannot
    // be restored, and that is said before CRIU runs; with it, it restores.
    let k2 = import(&d, &ctrd, "from-containerd").await;
    assert_eq!(k2.origin.as_ref().unwrap().engine, "containerd");
    assert_eq!(k2.origin.as_ref().unwrap().pod.as_deref(), Some("web-0"));
    std::fs::remove_dir(&volume).unwrap();
    let b2 = work.join("restored-containerd");
    let id2 = unique_id("k8s-ctrd");
    let e = d
        .client
        .restore("from-containerd", &restore_req(&id2, &b2, &image), true)
        .await
        .unwrap_err();
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 422, "{err}");
    assert!(err.message.contains("/data comes from"), "{err}");
    assert!(!b2.exists(), "nothing was built");
    std::fs::create_dir(&volume).unwrap();
    d.client
        .restore("from-containerd", &restore_req(&id2, &b2, &image), true)
        .await
        .expect("restore of containerd's archive as a runc container");
    let _c2 = Container::adopt(&id2);
    counts_on(
        &b2,
        stopped_at,
        "out.log of the container restored from containerd's archive",
    );

    // Hostile archives: they import (their files are plain), and their restore fails with
    // nothing written outside the bundle and the bundle removed.
    let outside = work.join("volume");
    for hostile in ["diff-dotdot", "diff-symlink", "deleted-outside"] {
        let (b, _, restored) = restore_hostile(
            &d,
            Path::new(&cp.checkpoint.dir),
            &bundle,
            &volume,
            &image,
            hostile,
        )
        .await;
        let e = restored.unwrap_err();
        let (status, err) = e.api_error().expect("an API error");
        assert_eq!(status.as_u16(), 400, "{hostile}: {err}");
        assert!(
            !work.join("escape").exists()
                && !d.dir.path().parent().unwrap().join("escape").exists(),
            "{hostile} wrote outside"
        );
        assert!(
            !outside.join("escape").exists(),
            "{hostile} wrote through a symlink"
        );
        assert!(!b.exists(), "{hostile}: the half-built bundle is removed");
    }

    // A foreign spec that would act on the host (issue 25, attack 5): privileged capabilities
    // refuse the restore before its job; hooks are stripped and never run; a rootfs-diff.tar
    // that expands past import_max_bytes is refused with the bundle removed.
    for hostile in ["privileged", "bomb", "hooks"] {
        let (b, id, restored) = restore_hostile(
            &d,
            Path::new(&cp.checkpoint.dir),
            &bundle,
            &volume,
            &image,
            hostile,
        )
        .await;
        match hostile {
            "privileged" => {
                let e = restored.unwrap_err();
                let (status, err) = e.api_error().expect("an API error");
                assert_eq!(status.as_u16(), 422, "{err}");
                assert!(err.message.contains("CAP_SYS_ADMIN"), "{err}");
                assert!(!b.exists(), "nothing was built");
            }
            "bomb" => {
                let e = restored.unwrap_err();
                let (status, err) = e.api_error().expect("an API error");
                assert_eq!(status.as_u16(), 400, "{err}");
                assert!(
                    err.message.contains("expands past import_max_bytes"),
                    "{err}"
                );
                assert!(!b.exists(), "the half-built bundle is removed");
            }
            _ => {
                let job = restored.expect("a spec with hooks restores, without them");
                let _c = Container::adopt(&id);
                let stripped = &job.result.as_ref().unwrap().stripped;
                assert!(
                    stripped.iter().any(|s| s == "hooks.prestart: /bin/sh")
                        && stripped.iter().any(|s| s == "hooks.createRuntime: /bin/sh"),
                    "{stripped:?}"
                );
                let config = std::fs::read_to_string(b.join("config.json")).unwrap();
                assert!(!config.contains("hook-ran"), "{config}");
                counts_on(&b, stopped_at, "the container restored without its hooks");
                assert!(
                    !volume.join("hook-ran").exists(),
                    "a foreign hook ran on the host"
                );
            }
        }
    }
}

/// ckptd's own runc checkpoint written as a Kubernetes checkpoint archive (`format=kubernetes`,
/// CRI-O's flavour): the layout checkpointctl reads, with the files the container was writing
/// in `rootfs-diff.tar`; imported and restored from the pristine root filesystem, it counts on.
#[tokio::test]
async fn a_runc_checkpoint_exported_for_kubernetes_restores_from_the_image() {
    let d = Daemon::start().await;
    let work = d.dir.path().to_owned();
    let bundle = Bundle::busybox(&work.join("orig"), CONTAINER_LOOPER, |_| {});
    let image = work.join("image");
    copy_dir(&bundle.dir.join("rootfs"), &image);
    let id = unique_id("k8s-export");
    let _c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 3);
    d.client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Container {
                    id: id.clone(),
                    runtime: ckptd_api::Runtime::Runc,
                    root: None,
                    bundle: None,
                    namespace: None,
                }),
                name: Some("to-k8s".into()),
                ..Default::default()
            },
            true,
        )
        .await
        .expect("checkpoint");
    let stopped_at = bundle.out_lines().len();
    let file = work.join("to-k8s.tar");
    let mut f = tokio::fs::File::create(&file).await.unwrap();
    d.client
        .export(
            "to-k8s",
            ckptd_api::query::ArchiveQuery {
                compression: ckptd_api::Compression::None,
                format: ckptd_api::ArchiveFormat::Kubernetes,
            },
            &mut f,
        )
        .await
        .expect("export format=kubernetes");
    // The layout as checkpointctl needs it, read by Python's tarfile.
    let listed = Command::new("python3")
        .args([
            "-c",
            "import sys, tarfile, io, json\n\
             t = tarfile.open(sys.argv[1])\n\
             names = t.getnames()\n\
             print(names[0], t.getmember(names[0]).isdir())\n\
             spec = json.load(t.extractfile('spec.dump'))\n\
             print(spec['annotations']['io.container.manager'], json.loads(spec['annotations']['io.kubernetes.cri-o.Metadata'])['name'])\n\
             print(' '.join(sorted(n for n in names if '/' not in n and t.getmember(n).isfile())))\n\
             print(' '.join(tarfile.open(fileobj=io.BytesIO(t.extractfile('rootfs-diff.tar').read())).getnames()))",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "checkpoint True", "{text}");
    assert_eq!(lines[1], format!("cri-o {id}"), "{text}");
    assert_eq!(
        lines[2], "bind.mounts config.dump dump.log rootfs-diff.tar spec.dump stats-dump",
        "{text}"
    );
    assert_eq!(
        lines[3], "out.log",
        "the file the container was writing: {text}"
    );

    let cp = import(&d, &file, "from-k8s-export").await;
    assert_eq!(cp.origin.as_ref().unwrap().engine, "cri-o");
    let b = work.join("restored");
    let nid = unique_id("k8s-back");
    d.client
        .restore("from-k8s-export", &restore_req(&nid, &b, &image), true)
        .await
        .expect("restore of the exported archive from the pristine root filesystem");
    let _n = Container::adopt(&nid);
    counts_on(
        &b,
        stopped_at,
        "out.log of the container restored from ckptd's Kubernetes export",
    );

    // A process checkpoint has no OCI spec to write: refused before anything is sent.
    let looper = ckptd_tests::Target::looper(&work);
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
    let e = d
        .client
        .export(
            &p.checkpoint.name,
            ckptd_api::query::ArchiveQuery {
                compression: ckptd_api::Compression::None,
                format: ckptd_api::ArchiveFormat::Kubernetes,
            },
            &mut tokio::io::sink(),
        )
        .await
        .unwrap_err();
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 409, "{err}");
    assert!(err.message.contains("no OCI runtime spec"), "{err}");
}

/// A runc checkpoint pushed to a registry as CRI-O's checkpoint image (`format=kubernetes`: a
/// kubelet's archive as the one gzip layer, `io.kubernetes.cri-o.annotations.checkpoint.name`
/// on the manifest), then pulled by another daemon, which reads it as CRI-O's and restores it
/// from the pristine root filesystem: it counts on.
#[tokio::test(flavor = "multi_thread")]
async fn a_runc_checkpoint_as_a_cri_o_checkpoint_image_restores_from_the_registry() {
    let reg = ckptd_tests::RegistryServer::start();
    let dir = tempfile::tempdir().unwrap();
    let creds = reg.credentials_file("creds", None);
    let conf = dir.path().join("ckptd.toml");
    std::fs::write(&conf, reg.config("hub", "cri-o/checkpoints", &creds)).unwrap();
    let a = Daemon::start_with(&["--config", conf.to_str().unwrap()]).await;
    let b = Daemon::start_with(&["--config", conf.to_str().unwrap()]).await;
    let work = a.dir.path().to_owned();
    let bundle = Bundle::busybox(&work.join("orig"), CONTAINER_LOOPER, |_| {});
    let image = work.join("image");
    copy_dir(&bundle.dir.join("rootfs"), &image);
    let id = unique_id("crio-img");
    let _c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 3);
    a.client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Container {
                    id: id.clone(),
                    runtime: ckptd_api::Runtime::Runc,
                    root: None,
                    bundle: None,
                    namespace: None,
                }),
                name: Some("to-crio".into()),
                ..Default::default()
            },
            true,
        )
        .await
        .expect("checkpoint");
    let stopped_at = bundle.out_lines().len();
    let out = a.ckpt(&[
        "push",
        "to-crio",
        "--registry",
        "hub",
        "--tag",
        "crio",
        "--format",
        "kubernetes",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = reg.manifest("cri-o/checkpoints:crio");
    assert_eq!(
        m["annotations"]["io.kubernetes.cri-o.annotations.checkpoint.name"],
        id.as_str()
    );
    assert_eq!(m["annotations"]["io.ckptd.layout"], "kubernetes");
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    // The layer is a kubelet's archive: checkpoint/ first, CRI-O's spec.
    let layer = reg.blob_file(m["layers"][0]["digest"].as_str().unwrap());
    let listed = Command::new("python3")
        .args([
            "-c",
            "import sys, tarfile, json\n\
             t = tarfile.open(sys.argv[1], 'r:gz')\n\
             names = t.getnames()\n\
             print(names[0], t.getmember(names[0]).isdir())\n\
             print(json.load(t.extractfile('spec.dump'))['annotations']['io.container.manager'])",
        ])
        .arg(&layer)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["checkpoint True", "cri-o"],
        "{text}"
    );

    // A process checkpoint has no OCI spec: format=kubernetes fails its push, nothing tagged.
    let looper = ckptd_tests::Target::looper(&work);
    looper.wait_for_lines(2);
    a.client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Process { pid: looper.pid }),
                name: Some("a-process".into()),
                leave_running: true,
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap();
    let e = a
        .client
        .push_with(
            "a-process",
            &ckptd_api::query::PushQuery {
                remote: "hub".into(),
                tag: Some("nope".into()),
                format: Some(ckptd_api::ArchiveFormat::Kubernetes),
                keep_local: true,
                wait: true,
            },
        )
        .await
        .expect_err("a process has no spec");
    let (_, err) = e.api_error().unwrap();
    assert!(err.message.contains("Kubernetes"), "{err:?}");

    let pulled = b
        .client
        .pull("hub", "crio", &ckptd_api::PullRequest::default(), true)
        .await
        .expect("pull of CRI-O's image");
    assert_eq!(pulled.checkpoint.status, CheckpointStatus::Ready);
    let name = pulled.checkpoint.name.clone();
    let cp = b.client.checkpoint(&name).await.unwrap();
    assert_eq!(cp.origin.as_ref().expect("its origin").engine, "cri-o");
    let restored = b.dir.path().join("restored");
    let nid = unique_id("crio-back");
    b.client
        .restore(&name, &restore_req(&nid, &restored, &image), true)
        .await
        .expect("restore of CRI-O's checkpoint image from the pristine root filesystem");
    let _n = Container::adopt(&nid);
    counts_on(
        &restored,
        stopped_at,
        "out.log of the container restored from CRI-O's checkpoint image",
    );
}
