//! Every bad input gets its status and the API's error body, and leaves nothing behind.

use ckptd_tests::{Daemon, Target};
use hyper::Method;
use serde_json::{json, Value};

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
    message_has: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    body: Option<Value>,
    status: u16,
    code: &'static str,
    message_has: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        body: body.map(|b| serde_json::to_vec(&b).unwrap()),
        status,
        code,
        message_has,
    }
}

fn raw(
    what: &'static str,
    method: Method,
    path: &str,
    body: &[u8],
    status: u16,
    code: &'static str,
    message_has: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        body: Some(body.to_vec()),
        status,
        code,
        message_has,
    }
}

#[tokio::test]
async fn bad_inputs_get_their_status_and_error_body() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "ok", 0, false);
    let pid = t.pid;
    let post = |body: Value| Some(body);
    let proc_ = |p: i32| json!({"kind": "process", "pid": p});

    // Something valid to collide with.
    let good = d
        .client
        .send_json(
            Method::POST,
            "/v1/checkpoints?wait=true",
            &json!({"target": proc_(pid), "name": "taken", "leave_running": true}),
        )
        .await
        .unwrap();
    assert_eq!(good.status.as_u16(), 201, "{}", good.text());
    let good: Value = good.json().unwrap();
    let job_id = good["job"]["id"].as_str().unwrap().to_owned();

    let zombie = std::process::Command::new("true").spawn().unwrap(); // exits, not reaped yet
    let zpid = zombie.id() as i32;
    ckptd_tests::wait_until("the child to be a zombie", || {
        ckptd_tests::proc_state(zpid) == Some('Z')
    });

    let file = d.dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let link = d.dir.path().join("a-link");
    std::os::unix::fs::symlink(d.dir.path(), &link).unwrap();

    let cases = vec![
        case(
            "a namespace for a runtime that has none",
            Method::POST,
            "/v1/checkpoints",
            post(
                json!({"target": {"kind": "container", "runtime": "docker", "id": "web", "namespace": "k8s.io"}}),
            ),
            400,
            "invalid_request",
            "\"namespace\" is containerd's; leave it out for a docker container",
        ),
        case(
            "a containerd namespace containerd would refuse",
            Method::POST,
            "/v1/checkpoints",
            post(
                json!({"target": {"kind": "container", "runtime": "containerd", "id": "web", "namespace": "-x"}}),
            ),
            400,
            "invalid_request",
            "is not a containerd namespace",
        ),
        case(
            "pid 1",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(1)})),
            403,
            "forbidden",
            "init process",
        ),
        case(
            "kernel thread",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(2)})),
            422,
            "target_unavailable",
            "kernel thread",
        ),
        case(
            "the daemon itself",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(d.pid())})),
            403,
            "forbidden",
            "ckptd itself",
        ),
        case(
            "an ancestor of the daemon",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(std::process::id() as i32)})),
            403,
            "forbidden",
            "ancestors",
        ),
        case(
            "unknown pid",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(4_000_000)})),
            422,
            "target_unavailable",
            "no process with pid",
        ),
        case(
            "zombie",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(zpid)})),
            422,
            "target_unavailable",
            "zombie",
        ),
        case(
            "negative pid",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(-5)})),
            400,
            "invalid_request",
            "positive",
        ),
        case(
            "no target",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"name": "x"})),
            400,
            "invalid_request",
            "target",
        ),
        case(
            "unknown target kind",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": {"kind": "vm", "id": "x"}})),
            400,
            "invalid_request",
            "unknown variant",
        ),
        case(
            "unknown field",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "bogus": 1})),
            400,
            "invalid_request",
            "unknown field `bogus`",
        ),
        case(
            "unknown target field",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": {"kind": "process", "pid": pid, "x": 1}})),
            400,
            "invalid_request",
            "unknown field",
        ),
        case(
            "wrong type",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "leave_running": "yes"})),
            400,
            "invalid_request",
            "invalid type",
        ),
        raw(
            "bad JSON",
            Method::POST,
            "/v1/checkpoints",
            b"{\"target\":",
            400,
            "invalid_request",
            "invalid JSON",
        ),
        case(
            "bad name",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "name": "../etc"})),
            400,
            "invalid_request",
            "invalid checkpoint name",
        ),
        case(
            "long name",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "name": "a".repeat(129)})),
            400,
            "invalid_request",
            "invalid checkpoint name",
        ),
        case(
            "uuid name",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "name": "6f1c1b0e-8a44-4d3f-a5a5-0a0b0c0d0e0f"})),
            400,
            "invalid_request",
            "UUID",
        ),
        case(
            "duplicate name",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "name": "taken"})),
            409,
            "conflict",
            "already exists",
        ),
        case(
            "relative checkpoint_dir",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "checkpoint_dir": "tmp/x"})),
            400,
            "invalid_request",
            "absolute",
        ),
        case(
            "checkpoint_dir with ..",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "checkpoint_dir": "/tmp/../etc"})),
            400,
            "invalid_request",
            "..",
        ),
        case(
            "missing checkpoint_dir",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "checkpoint_dir": "/nonexistent/ckptd"})),
            422,
            "target_unavailable",
            "does not exist",
        ),
        case(
            "checkpoint_dir is a file",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "checkpoint_dir": file})),
            422,
            "target_unavailable",
            "not a directory",
        ),
        case(
            "symlinked checkpoint_dir",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "checkpoint_dir": link})),
            422,
            "target_unavailable",
            "symlink",
        ),
        case(
            "bad label",
            Method::POST,
            "/v1/checkpoints",
            post(json!({"target": proc_(pid), "labels": {"": "v"}})),
            400,
            "invalid_request",
            "label key",
        ),
        case(
            "unknown query parameter",
            Method::POST,
            "/v1/checkpoints?wiat=true",
            post(json!({"target": proc_(pid)})),
            400,
            "invalid_request",
            "unknown query parameter",
        ),
        case(
            "bad list filter",
            Method::GET,
            "/v1/checkpoints?status=done",
            None,
            400,
            "invalid_request",
            "status",
        ),
        case(
            "bad limit",
            Method::GET,
            "/v1/checkpoints?limit=5000",
            None,
            400,
            "invalid_request",
            "limit",
        ),
        case(
            "bad label filter",
            Method::GET,
            "/v1/checkpoints?label=novalue",
            None,
            400,
            "invalid_request",
            "key=value",
        ),
        case(
            "unknown checkpoint",
            Method::GET,
            "/v1/checkpoints/nope",
            None,
            404,
            "not_found",
            "no checkpoint",
        ),
        case(
            "delete unknown",
            Method::DELETE,
            "/v1/checkpoints/nope",
            None,
            404,
            "not_found",
            "no checkpoint",
        ),
        case(
            "restore unknown",
            Method::POST,
            "/v1/checkpoints/nope/restore",
            None,
            404,
            "not_found",
            "no checkpoint",
        ),
        case(
            "restore elsewhere",
            Method::POST,
            "/v1/checkpoints/taken/restore",
            post(json!({"target": proc_(pid + 1)})),
            400,
            "invalid_request",
            "restored in place",
        ),
        case(
            "restore unknown field",
            Method::POST,
            "/v1/checkpoints/taken/restore",
            post(json!({"pid": 3})),
            400,
            "invalid_request",
            "unknown field",
        ),
        case(
            "restore with pid in use",
            Method::POST,
            "/v1/checkpoints/taken/restore?wait=true",
            None,
            409,
            "conflict",
            "in use",
        ),
        case(
            "log of unknown",
            Method::GET,
            "/v1/checkpoints/nope/log",
            None,
            404,
            "not_found",
            "no checkpoint",
        ),
        case(
            "unknown job",
            Method::GET,
            "/v1/jobs/6f1c1b0e-8a44-4d3f-a5a5-0a0b0c0d0e0f",
            None,
            404,
            "not_found",
            "no job",
        ),
        case(
            "malformed job id",
            Method::GET,
            "/v1/jobs/xyz",
            None,
            404,
            "not_found",
            "no job",
        ),
        case(
            "bad long-poll",
            Method::GET,
            format!("/v1/jobs/{job_id}?wait=forever"),
            None,
            400,
            "invalid_request",
            "seconds",
        ),
        case(
            "cancel a finished job",
            Method::POST,
            format!("/v1/jobs/{job_id}/cancel"),
            None,
            409,
            "conflict",
            "already ended",
        ),
        case(
            "bad job filter",
            Method::GET,
            "/v1/jobs?kind=backup",
            None,
            400,
            "invalid_request",
            "kind",
        ),
        case(
            "unknown route",
            Method::GET,
            "/v2/checkpoints",
            None,
            404,
            "not_found",
            "no such route",
        ),
        case(
            "wrong method",
            Method::PUT,
            "/v1/checkpoints",
            None,
            405,
            "invalid_request",
            "method not allowed",
        ),
    ];

    let before = d.client.get("/v1/checkpoints").await.unwrap().text();
    let mut failures = Vec::new();
    for c in &cases {
        let resp = d
            .client
            .request(c.method.clone(), &c.path, c.body.clone())
            .await
            .unwrap();
        let body: Result<Value, _> = serde_json::from_slice(&resp.body);
        let ok = resp.status.as_u16() == c.status
            && body.as_ref().is_ok_and(|b| {
                b["error"]["code"] == c.code
                    && b["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(c.message_has))
                    && b["error"]["details"].is_object()
            });
        if !ok {
            failures.push(format!(
                "{}: {} {} -> {} {}",
                c.what,
                c.method,
                c.path,
                resp.status,
                resp.text()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // A body over the 1 MiB limit, sent as users send it (curl, which asks `Expect: 100-continue`
    // first, so the 413 arrives before the body is written).
    let big = d.dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 2 * 1024 * 1024]).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&d.socket)
        .args(["-X", "POST", "--data-binary"])
        .arg(format!("@{}", big.display()))
        .arg("http://ckptd/v1/checkpoints")
        .output()
        .expect("curl (make setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "413", "{text}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    // None of the refused requests created a checkpoint.
    assert_eq!(
        d.client.get("/v1/checkpoints").await.unwrap().text(),
        before
    );
    drop(zombie);
}

/// Found by schemathesis: a pid that happened to be one of ckptd's own CRIU helpers was dumped.
#[tokio::test]
async fn the_daemon_s_own_helpers_are_not_targets() {
    let d = Daemon::start().await;
    // A child of the daemon: the `cat` reading a restored container's output is one; a CRIU of a
    // running job is another. Take whatever child the daemon has while a slow job runs: start a
    // leave_running dump of a 512 MiB process and look for the daemon's children meanwhile.
    let t = Target::python(d.dir.path(), "helper", 512, false);
    let r = d
        .client
        .send_json(
            Method::POST,
            "/v1/checkpoints",
            &json!({"target": {"kind": "process", "pid": t.pid}, "leave_running": true}),
        )
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 202);
    let daemon = d.pid();
    let mut child = None;
    for _ in 0..400 {
        let kids = std::fs::read_to_string(format!("/proc/{daemon}/task/{daemon}/children"))
            .unwrap_or_default();
        let all: Vec<i32> = std::fs::read_dir(format!("/proc/{daemon}/task"))
            .unwrap()
            .flatten()
            .flat_map(|t| {
                std::fs::read_to_string(t.path().join("children"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .chain(kids.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect();
        if let Some(&c) = all.first() {
            child = Some(c);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let child = child.expect("the daemon never ran a helper");
    let resp = d
        .client
        .send_json(
            Method::POST,
            "/v1/checkpoints",
            &json!({"target": {"kind": "process", "pid": child}}),
        )
        .await
        .unwrap();
    let body: Value = resp.json().unwrap();
    // 403 while it runs; 422 if it ended in between.
    assert!(
        matches!(resp.status.as_u16(), 403 | 422),
        "{} {body}",
        resp.status
    );
    if resp.status.as_u16() == 403 {
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("helper process of ckptd"),
            "{body}"
        );
    }
}

/// Found by schemathesis: a thread id of the daemon passed as a pid reached CRIU.
#[tokio::test]
async fn thread_ids_are_not_process_targets() {
    let d = Daemon::start().await;
    let daemon = d.pid();
    let thread: i32 = std::fs::read_dir(format!("/proc/{daemon}/task"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .find(|&t| t != daemon)
        .expect("the daemon has worker threads");
    let resp = d
        .client
        .send_json(
            Method::POST,
            "/v1/checkpoints",
            &json!({"target": {"kind": "process", "pid": thread}}),
        )
        .await
        .unwrap();
    let body: Value = resp.json().unwrap();
    assert_eq!(resp.status.as_u16(), 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("thread of ckptd itself"),
        "{body}"
    );
    // Another process's thread: 422 naming the process.
    let t = Target::spawn(
        &["python3", "-c", "import threading,time\nthreading.Thread(target=lambda: time.sleep(600), daemon=True).start()\nprint(0, flush=True)\ntime.sleep(600)"],
        &d.dir.path().join("threads.out"),
    );
    t.wait_for_lines(1);
    let tid: i32 = std::fs::read_dir(format!("/proc/{}/task", t.pid))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .find(|&x| x != t.pid)
        .expect("a second thread");
    let resp = d
        .client
        .send_json(
            Method::POST,
            "/v1/checkpoints",
            &json!({"target": {"kind": "process", "pid": tid}}),
        )
        .await
        .unwrap();
    let body: Value = resp.json().unwrap();
    assert_eq!(resp.status.as_u16(), 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("thread of process {}", t.pid)),
        "{body}"
    );
}
