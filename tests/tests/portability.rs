//! Archives, import, adopt and migration between two real daemons, with real CRIU images.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ckptd_api::{
    AdoptRequest, CheckpointStatus, CreateCheckpoint, RestoreRequest, Target as ApiTarget,
};
use ckptd_tests::{
    unique_id, wait_until, workspace_binary, Bundle, Container, ContainerStdio, Daemon, Target,
    CONTAINER_LOOPER,
};

/// Checkpoints the seed's looper on `d` (it stops) and returns it with the checkpoint's name.
async fn stopped_looper(d: &Daemon, name: &str) -> Target {
    let mut t = Target::looper(d.dir.path());
    d.client
        .create_checkpoint(
            &ckptd_tests::checkpoint(Some(ApiTarget::Process { pid: t.pid }), name),
            true,
        )
        .await
        .expect("checkpoint");
    t.reap();
    t
}

async fn export_to(d: &Daemon, name: &str, compression: &str, file: &Path) -> Vec<u8> {
    let mut f = tokio::fs::File::create(file).await.unwrap();
    let n = d
        .client
        .export(
            name,
            ckptd_api::query::ArchiveQuery {
                compression: compression.parse().expect("a compression"),
                format: Default::default(),
            },
            &mut f,
        )
        .await
        .expect("export");
    let bytes = std::fs::read(file).unwrap();
    assert_eq!(bytes.len() as u64, n);
    bytes
}

async fn import_file(
    d: &Daemon,
    file: &Path,
    name: Option<&str>,
) -> Result<ckptd_api::Checkpoint, ckptd_api::ClientError> {
    let f = tokio::fs::File::open(file).await.unwrap();
    d.client.import(f, name).await
}

/// What is in a daemon's checkpoints directory.
fn entries(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.state_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_looper_moves_through_an_archive_to_a_second_daemon_and_continues() {
    let a = Daemon::start().await;
    let b = Daemon::start().await;
    let t = stopped_looper(&a, "move1").await;
    let stopped_at = t.lines().len();
    assert!(!t.is_progressing(std::time::Duration::from_millis(400)));

    let file = a.dir.path().join("move1.tar.zst");
    let bytes = export_to(&a, "move1", "zstd", &file).await;
    assert_eq!(&bytes[..4], [0x28, 0xb5, 0x2f, 0xfd], "zstd by default");
    // The manifest is the last entry and lists every file with its sha256.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc {} | tar -xO manifest.json",
            file.display()
        ))
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest.json");
    assert_eq!(m["format"], "ckptd-archive/1");
    assert_eq!(m["name"], "move1");
    assert_eq!(m["target"]["pid"], t.pid);
    assert!(m["criu_version"].as_str().unwrap().starts_with("4."));
    assert!(m["kernel"].as_str().is_some() && m["arch"].as_str().is_some());
    let files = m["files"].as_array().unwrap();
    assert!(files
        .iter()
        .any(|f| f["name"] == "pstree.img" && f["sha256"].as_str().unwrap().len() == 64));

    let cp = import_file(&b, &file, None).await.expect("import");
    assert_eq!(cp.name, "move1");
    assert_eq!(cp.status, CheckpointStatus::Ready);
    assert_eq!(cp.target, ApiTarget::Process { pid: t.pid });
    assert!(cp.stats.is_some());
    assert!(cp.dir.starts_with(b.state_dir.to_str().unwrap()));
    // The same name again: 409, and nothing is left behind.
    let before = entries(&b);
    let e = import_file(&b, &file, None).await.unwrap_err();
    assert_eq!(e.api_error().unwrap().0.as_u16(), 409);
    assert_eq!(entries(&b), before);

    let job = b
        .client
        .restore("move1", &RestoreRequest::default(), true)
        .await
        .expect("restore on the second daemon");
    assert_eq!(job.result.unwrap().pid, Some(t.pid));
    assert!(t.is_progressing(std::time::Duration::from_secs(3)));
    assert!(t.assert_contiguous() > stopped_at);

    // gzip and plain tar too, imported under new names.
    for (c, magic) in [("gzip", &[0x1f_u8, 0x8b][..]), ("none", &b""[..])] {
        let f = a.dir.path().join(format!("move1.{c}"));
        let bytes = export_to(&a, "move1", c, &f).await;
        assert!(bytes.starts_with(magic));
        if c == "none" {
            assert_eq!(&bytes[257..262], b"ustar");
        }
        let cp = import_file(&b, &f, Some(&format!("move1-{c}")))
            .await
            .expect(c);
        assert_eq!(cp.name, format!("move1-{c}"));
        assert_eq!(cp.status, CheckpointStatus::Ready);
    }
    // A compression the API does not know (the typed client cannot send one).
    let r = a
        .client
        .get("/v1/checkpoints/move1/archive?compression=lz4")
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400, "{}", r.text());
}

#[tokio::test]
async fn ckpt_migrate_streams_to_another_daemon_over_tcp_and_restores_there() {
    let a = Daemon::start().await;
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "migrate-token-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let b = Daemon::start_with(&[
        "--tcp-listen",
        "127.0.0.1:0",
        "--tcp-token-file",
        token_file.to_str().unwrap(),
    ])
    .await;
    let addr = b.tcp_addr();
    let t = stopped_looper(&a, "mig1").await;
    let stopped_at = t.lines().len();

    let ckpt = |args: &[&str]| {
        Command::new(workspace_binary("ckpt"))
            .arg("--socket")
            .arg(&a.socket)
            .args(args)
            .output()
            .unwrap()
    };
    let wrong = token_dir.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let out = ckpt(&[
        "migrate",
        "mig1",
        "--to",
        &addr,
        "--token-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
    // A peer that does not answer: advice about that host's listener, not about this socket.
    let out = ckpt(&[
        "migrate",
        "mig1",
        "--to",
        "127.0.0.1:1",
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the ckptd at 127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("tcp_listen"), "{err}");
    assert!(
        !err.contains("--socket") && !err.contains("make run"),
        "{err}"
    );

    let out = ckpt(&[
        "migrate",
        "mig1",
        "--to",
        &addr,
        "--token-file",
        token_file.to_str().unwrap(),
        "--restore",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("restored on {addr}: pid {}", t.pid)),
        "{stdout}"
    );
    assert!(t.is_progressing(std::time::Duration::from_secs(3)));
    assert!(t.assert_contiguous() > stopped_at);
    assert_eq!(
        b.client.checkpoint("mig1").await.unwrap().status,
        CheckpointStatus::Ready
    );

    // export / import through files with the CLI.
    let file = a.dir.path().join("mig1.tar.zst");
    let out = ckpt(&["export", "mig1", "-o", file.to_str().unwrap()]);
    assert!(out.status.success());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "archives hold process memory");
    let out = Command::new(workspace_binary("ckpt"))
        .arg("--socket")
        .arg(&b.socket)
        .args(["import", file.to_str().unwrap(), "--name", "mig1-file"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("mig1-file  ready"));
}

#[tokio::test]
async fn a_flipped_byte_is_refused_by_its_checksum() {
    let a = Daemon::start().await;
    let _t = stopped_looper(&a, "flip").await;
    let file = a.dir.path().join("flip.tar");
    let mut bytes = export_to(&a, "flip", "none", &file).await;
    // Flip a byte inside pages-1.img's data (the process's memory).
    let names = Command::new("tar").arg("-tvf").arg(&file).output().unwrap();
    assert!(String::from_utf8_lossy(&names.stdout).contains("pages-1.img"));
    let offset = find_member_data(&bytes, "pages-1.img") + 100;
    bytes[offset] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let before = entries(&a);
    let e = import_file(&a, &file, Some("flipped")).await.unwrap_err();
    let (status, err) = e.api_error().unwrap();
    assert_eq!(status.as_u16(), 400);
    assert!(
        err.message
            .contains("pages-1.img does not match the manifest"),
        "{err}"
    );
    assert_eq!(entries(&a), before, "nothing of the refused archive stays");
    assert!(a.client.checkpoint("flipped").await.is_err());
}

/// Where a tar member's data starts (the 512-byte block after its header).
fn find_member_data(tar: &[u8], name: &str) -> usize {
    let mut off = 0;
    while off + 512 <= tar.len() {
        let h = &tar[off..off + 512];
        let n = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let size = usize::from_str_radix(
            std::str::from_utf8(&h[124..136])
                .unwrap()
                .trim_matches(|c| c == '\0' || c == ' '),
            8,
        )
        .unwrap_or(0);
        if &h[..n] == name.as_bytes() {
            return off + 512;
        }
        off += 512 + size.div_ceil(512) * 512;
    }
    panic!("{name} not in the archive");
}

/// A hostile archive made by Python's tarfile (which writes whatever it is told).
fn hostile(dir: &Path, name: &str, script: &str) -> PathBuf {
    let path = dir.join(format!("{name}.tar"));
    let py = format!(
        r#"
import io, tarfile, json, hashlib
t = tarfile.open({path:?}, "w")
def add(name, data, kind=tarfile.REGTYPE, **kw):
    i = tarfile.TarInfo(name); i.type = kind; i.size = len(data) if kind == tarfile.REGTYPE else 0
    for k, v in kw.items(): setattr(i, k, v)
    t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
def manifest(files):
    m = {{"format": "ckptd-archive/1", "name": "hostile", "target": {{"kind": "process", "pid": 4242}},
         "options": {{}}, "labels": {{}}, "created_at": "2026-11-27T00:00:00Z", "criu_version": "4.2.1",
         "kernel": "x", "arch": __import__("platform").machine(), "ckptd_version": "0",
         "files": [{{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}} for n, d in files]}}
    add("manifest.json", json.dumps(m).encode())
{script}
t.close()
"#,
        path = path.display().to_string()
    );
    let st = Command::new("python3").arg("-c").arg(&py).status().unwrap();
    assert!(st.success(), "python for {name}");
    path
}

/// An upload refused part way (over the import limit) is answered once its body is in: a
/// client that writes all of it before it reads (as curl and hyper may, under load) gets the
/// 413. Answered before, the connection closed under the writer (EPIPE; `ckpt import` was
/// killed by SIGPIPE, and the hostile archives' test failed, under load).
#[tokio::test]
async fn an_upload_over_the_import_limit_is_read_to_its_end_and_answered() {
    use std::io::{Read, Write};
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "import_max_bytes = 1048576\n").unwrap();
    let d = Daemon::start_with(&["--config", cfg.path().to_str().unwrap()]).await;
    // A tar of one 16 MiB file: far more than the socket's buffers hold past the limit.
    let file = hostile(
        d.dir.path(),
        "big",
        "big = b'x' * (16 << 20)\nadd('pages-1.img', big)\nmanifest([('pages-1.img', big)])",
    );
    let body = std::fs::read(&file).unwrap();
    let socket = d.socket.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut c = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        write!(
            c,
            "POST /v1/checkpoints/import HTTP/1.1\r\nHost: ckptd\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        c.write_all(&body).expect("the whole body written");
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("import limit"), "{answer}");
    // A client that waits to be asked for its body (`Expect: 100-continue`, curl's for a
    // large one) and is refused before it is read (a bad name) never sends it.
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_upload}",
        ])
        .arg("--unix-socket")
        .arg(&d.socket)
        .args(["-H", "Expect: 100-continue", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg("http://ckptd/v1/checkpoints/import?name=bad%2Fname")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400 0");
}

#[tokio::test]
async fn hostile_archives_are_refused_with_nothing_written_outside() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "import_max_bytes = 1048576\n").unwrap();
    let d = Daemon::start_with(&["--config", cfg.path().to_str().unwrap()]).await;
    let outside = tempfile::tempdir().unwrap();
    let evil = outside.path().join("evil");
    let work = d.dir.path();
    let cases = [
        ("traversal", format!("add('../../../../{}', b'x')\nmanifest([])", evil.display()), 400, "plain file names"),
        ("absolute", format!("add('{}', b'x')\nmanifest([])", evil.display()), 400, "plain file names"),
        ("subdir", "add('a/b.img', b'x')\nmanifest([])".to_owned(), 400, "plain file names"),
        ("symlink", format!("add('link.img', b'', tarfile.SYMTYPE, linkname='{}')\nmanifest([])", evil.display()), 400, "only regular files"),
        ("hardlink", "add('a.img', b'x')\nadd('b.img', b'', tarfile.LNKTYPE, linkname='a.img')\nmanifest([])".to_owned(), 400, "only regular files"),
        ("device", "add('null.img', b'', tarfile.CHRTYPE, devmajor=1, devminor=3)\nmanifest([])".to_owned(), 400, "only regular files"),
        ("fifo", "add('fifo.img', b'', tarfile.FIFOTYPE)\nmanifest([])".to_owned(), 400, "only regular files"),
        ("directory", "add('dir', b'', tarfile.DIRTYPE)\nmanifest([])".to_owned(), 400, "only regular files"),
        ("oversized", "big = b'x' * (2 << 20)\nadd('pages-1.img', big)\nmanifest([('pages-1.img', big)])".to_owned(), 413, "import limit"),
        ("unlisted", "add('a.img', b'x')\nmanifest([])".to_owned(), 400, "not in its manifest"),
        ("missing", "manifest([('a.img', b'x')])".to_owned(), 400, "missing from the archive"),
        ("duplicate", "add('a.img', b'x')\nadd('a.img', b'x')\nmanifest([('a.img', b'x')])".to_owned(), 400, "twice"),
        ("no-manifest", "add('a.img', b'x')".to_owned(), 400, "no manifest.json"),
        ("garbage", "t.fileobj.write(b'not a tar at all' * 100)".to_owned(), 400, "archive"),
        // Hashes right, but not a checkpoint: it would import as ready and fail to restore.
        ("only-inventory", "inv = b'\\x54\\x50\\x3f\\x58' * 4\nadd('inventory.img', inv)\nmanifest([('inventory.img', inv)])".to_owned(), 400, "not a restorable checkpoint"),
    ];
    let before = entries(&d);
    for (name, script, code, text) in cases {
        let file = hostile(work, name, &script);
        let e = import_file(&d, &file, Some(name)).await.unwrap_err();
        let (status, err) = e.api_error().unwrap_or_else(|| panic!("{name}: {e}"));
        assert_eq!(status.as_u16(), code, "{name}: {err}");
        assert!(err.message.contains(text), "{name}: {err}");
        assert!(!evil.exists(), "{name} wrote outside");
        assert_eq!(entries(&d), before, "{name} left something behind");
    }
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    // Refused imports count, by their code: dashboards see them.
    let metrics = d.client.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains(
            "ckptd_jobs_total{cause=\"\",code=\"payload_too_large\",kind=\"import\",result=\"failed\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(d
        .client
        .list_checkpoints(&ckptd_tests::q(""))
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn adopt_a_hand_made_criu_dump_and_a_runc_checkpoint() {
    let d = Daemon::start().await;
    // `criu dump` by hand, as its documentation shows.
    let mut t = Target::looper(d.dir.path());
    let images = d.dir.path().join("by-hand");
    std::fs::create_dir(&images).unwrap();
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o700)).unwrap();
    let st = Command::new("criu")
        .args(["dump", "-t", &t.pid.to_string(), "-D"])
        .arg(&images)
        .args(["-o", "dump.log", "-v4"])
        .status()
        .unwrap();
    assert!(st.success(), "criu dump by hand");
    t.reap();
    let stopped_at = t.lines().len();

    // Refusals first: not an image directory, writable by others, the wrong pid.
    let empty = d.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let adopt = |dir: &Path, target: Option<ApiTarget>| AdoptRequest {
        dir: dir.display().to_string(),
        target,
        ..Default::default()
    };
    let e = d.client.adopt(&adopt(&empty, None)).await.unwrap_err();
    assert!(
        e.api_error().unwrap().1.message.contains("inventory.img"),
        "{e}"
    );
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = d.client.adopt(&adopt(&images, None)).await.unwrap_err();
    assert_eq!(e.api_error().unwrap().0.as_u16(), 422);
    assert!(e
        .api_error()
        .unwrap()
        .1
        .hint()
        .unwrap()
        .contains("chmod go-w"));
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o700)).unwrap();
    let e = d
        .client
        .adopt(&adopt(&images, Some(ApiTarget::Process { pid: 1 })))
        .await
        .unwrap_err();
    assert_eq!(e.api_error().unwrap().0.as_u16(), 400);

    let cp = d.client.adopt(&adopt(&images, None)).await.expect("adopt");
    assert_eq!(cp.name, "by-hand");
    assert_eq!(cp.target, ApiTarget::Process { pid: t.pid });
    assert_eq!(cp.dir, images.display().to_string());
    assert!(cp.stats.is_some() && cp.size_bytes > 0);
    let e = d.client.adopt(&adopt(&images, None)).await.unwrap_err();
    assert_eq!(e.api_error().unwrap().0.as_u16(), 409, "adopted once only");
    let job = d
        .client
        .restore("by-hand", &RestoreRequest::default(), true)
        .await
        .expect("restore of adopted images");
    assert_eq!(job.result.unwrap().pid, Some(t.pid));
    assert!(t.is_progressing(std::time::Duration::from_secs(3)));
    assert!(t.assert_contiguous() > stopped_at);

    // `runc checkpoint` by hand.
    let bundle = Bundle::busybox(&d.dir.path().join("b1"), CONTAINER_LOOPER, |_| {});
    let id = unique_id("adopt-ct");
    let c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 3);
    let rimages = d.dir.path().join("runc-images");
    let st = Command::new("runc")
        .args(["checkpoint", "--image-path"])
        .arg(&rimages)
        .arg("--work-path")
        .arg(&rimages)
        .arg(&id)
        .status()
        .unwrap();
    assert!(st.success(), "runc checkpoint by hand");
    std::fs::set_permissions(&rimages, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(c.status(), None);
    let stopped_at = bundle.out_lines().len();
    let e = d.client.adopt(&adopt(&rimages, None)).await.unwrap_err();
    assert!(
        e.api_error()
            .unwrap()
            .1
            .message
            .contains("descriptors.json"),
        "{e}"
    );
    let cp = d
        .client
        .adopt(&AdoptRequest {
            name: Some("runc-by-hand".into()),
            ..adopt(
                &rimages,
                Some(ApiTarget::Container {
                    id: id.clone(),
                    runtime: ckptd_api::Runtime::Runc,
                    root: None,
                    bundle: Some(bundle.dir.display().to_string()),
                    namespace: None,
                }),
            )
        })
        .await
        .expect("adopt runc images");
    assert_eq!(
        cp.container.as_ref().unwrap().stdio,
        ["/dev/null", "/dev/null", "/dev/null"]
    );
    d.client
        .restore("runc-by-hand", &RestoreRequest::default(), true)
        .await
        .expect("restore of adopted runc images");
    assert_eq!(c.status().as_deref(), Some("running"));
    wait_until("output to continue", || {
        bundle.out_lines().len() > stopped_at + 3
    });
    ckptd_tests::assert_counts(&bundle.out_lines(), "the restored container's output");
}

/// A tree holding a zombie (a child that exited and is never reaped): CRIU writes a core image
/// and no memory for it, and the archive imports (it once failed, `mm-<pid>.img` missing, when the
/// looper's `sleep` happened to be a zombie at the dump).
#[tokio::test]
async fn a_tree_with_a_zombie_exports_and_imports() {
    let a = Daemon::start().await;
    let t = Target::spawn(
        &["sh", "-c", "true & exec sleep 1000"],
        &a.dir.path().join("zombie.out"),
    );
    wait_until("the child to be a zombie", || {
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", t.pid, t.pid))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .any(|c| ckptd_tests::proc_state(c) == Some('Z'))
    });
    let made = a
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(Some(ApiTarget::Process { pid: t.pid }), "with-zombie")
            },
            true,
        )
        .await
        .expect("checkpoint");
    assert_eq!(made.checkpoint.status, CheckpointStatus::Ready);
    let dir = Path::new(&made.checkpoint.dir);
    let mm = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("mm-")
        })
        .count();
    let cores = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("core-")
        })
        .count();
    assert_eq!(
        (cores, mm),
        (2, 1),
        "two tasks, memory for the live one only"
    );
    let file = a.dir.path().join("with-zombie.tar.zst");
    export_to(&a, "with-zombie", "zstd", &file).await;
    let cp = import_file(&a, &file, Some("with-zombie-2"))
        .await
        .expect("import of a tree with a zombie");
    assert_eq!(cp.status, CheckpointStatus::Ready);
}

/// Issue 26: an export during a DELETE answered 200 with a well-formed archive that lacked the
/// page images. A checkpoint being exported is not deleted (409, saying so), and is deleted once
/// the export has ended.
#[tokio::test]
async fn a_checkpoint_being_exported_is_not_deleted_under_it() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "exported", 64, false);
    d.client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(Some(ApiTarget::Process { pid: t.pid }), "exp1")
            },
            true,
        )
        .await
        .unwrap();
    let out = d.dir.path().join("slow.tar");
    // A reader that takes its time: 2 MB/s of an archive of more than 64 MiB.
    let mut reader = Command::new("curl")
        .args(["-s", "--limit-rate", "2M", "-o"])
        .arg(&out)
        .arg("--unix-socket")
        .arg(&d.socket)
        .arg("http://ckptd/v1/checkpoints/exp1/archive?compression=none")
        .spawn()
        .unwrap();
    wait_until("the export to start", || {
        std::fs::metadata(&out).is_ok_and(|m| m.len() > 0)
    });
    let e = d.client.delete_checkpoint("exp1").await.unwrap_err();
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 409, "{err:?}");
    assert!(err.message.contains("being exported"), "{err:?}");
    assert!(d.client.checkpoint("exp1").await.is_ok());
    // The reader goes away: the export ends, and the delete goes through.
    let _ = reader.kill();
    let _ = reader.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match d.client.delete_checkpoint("exp1").await {
            Ok(()) => break,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the delete stayed refused after the export ended: {e}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ckptd_tests::signal(t.pid, 9);
}
