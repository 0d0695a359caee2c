//! ckptd as a system daemon: systemd units, socket activation, readiness notification,
//! Prometheus metrics and the event stream, with the real tools.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ckptd_api::{Client, CreateCheckpoint, Target as ApiTarget};
use ckptd_tests::{daemon_binary, signal, wait_until, Daemon, Target};

const VENV_PYTHON: &str = "/var/cache/ckptd-setup/venv/bin/python";

#[test]
fn systemd_analyze_verifies_both_units() {
    let dir = tempfile::tempdir().unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd");
    let service = std::fs::read_to_string(format!("{root}/ckptd.service")).unwrap();
    // verify checks that ExecStart exists: point it at the binary just built.
    let service = service.replace("/usr/local/bin/ckptd", daemon_binary().to_str().unwrap());
    std::fs::write(dir.path().join("ckptd.service"), service).unwrap();
    std::fs::copy(
        format!("{root}/ckptd.socket"),
        dir.path().join("ckptd.socket"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("ckptd.service"))
        .arg(dir.path().join("ckptd.socket"))
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.trim().is_empty(),
        "systemd-analyze verify warned:\n{text}"
    );
}

#[tokio::test]
async fn socket_activation_serves_the_passed_socket_and_binds_none() {
    let dir = tempfile::tempdir().unwrap();
    let passed = dir.path().join("activated.sock");
    let own = dir.path().join("own.sock");
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&passed)
        .arg(daemon_binary())
        .arg("--socket")
        .arg(&own)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate");
    wait_until("the activation socket", || passed.exists());
    // The first connection starts the daemon, which must answer on the socket it was given.
    let client = Client::new(&passed);
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        match client.health().await {
            Ok(h) => break h,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no answer on the passed socket: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(health.status, "ok");
    assert!(!own.exists(), "the daemon bound a socket of its own");
    signal(child.id() as i32, libc::SIGTERM);
    let _ = child.wait();
}

#[tokio::test]
async fn readiness_and_stopping_are_notified() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let sock = dir.path().join("ckptd.sock");
    let mut child = Command::new(daemon_binary())
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("NOTIFY_SOCKET", &notify)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = listener.recv(&mut buf).expect("a notification");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    // Ready means ready: the API answers now.
    assert_eq!(Client::new(&sock).health().await.unwrap().status, "ok");
    signal(child.id() as i32, libc::SIGTERM);
    let n = listener.recv(&mut buf).expect("a stopping notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn metrics_parse_with_prometheus_and_count_a_checkpoint() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "metrics", 16, false);
    d.client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Process { pid: t.pid }),
                leave_running: true,
                ..Default::default()
            },
            true,
        )
        .await
        .expect("checkpoint");
    // A job CRIU fails: an established TCP connection without tcp_established.
    let _tcp = d.failing_tcp_checkpoint("metrics-tcp").await;
    let resp = d.client.get("/metrics").await.unwrap();
    assert_eq!(resp.status.as_u16(), 200);
    assert!(resp
        .content_type
        .as_deref()
        .unwrap_or("")
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text();
    // The reference parser (python prometheus-client) reads it; print the samples we check.
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
want = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        if s.name == "ckptd_checkpoints_total" and s.labels.get("result") == "succeeded":
            want["ok"] = s.value
        if s.name == "ckptd_frozen_seconds_count":
            want["frozen"] = s.value
        if s.name == "ckptd_bytes_written_total":
            want["bytes"] = s.value
        if s.name == "ckptd_build_info" and s.labels.get("criu"):
            want["build"] = s.value
        if s.name == "ckptd_jobs_total" and s.labels == {"kind": "checkpoint", "result": "succeeded", "code": "", "cause": ""}:
            want["jobs_ok"] = s.value
        if s.name == "ckptd_jobs_total" and s.labels == {"kind": "checkpoint", "result": "failed", "code": "criu_failed", "cause": "tcp_established"}:
            want["jobs_criu"] = s.value
        if s.name == "ckptd_job_queue_seconds_count" and s.labels == {"kind": "checkpoint"}:
            want["queued"] = s.value
        if s.name == "ckptd_job_duration_seconds_count" and s.labels == {"kind": "checkpoint", "target": "process"}:
            want["duration"] = s.value
        if s.name == "ckptd_checkpoint_frozen_seconds_count" and s.labels == {"target": "process"}:
            want["frozen_by"] = s.value
        if s.name == "ckptd_checkpoint_size_bytes_count" and s.labels == {"target": "process"}:
            want["size_by"] = s.value
        if s.name == "ckptd_checkpoints" and s.labels == {"status": "ready"}:
            want["ready"] = s.value
        if s.name == "ckptd_storage_used_bytes" and s.labels == {"location": "state_dir"}:
            want["used"] = s.value
        if s.name == "ckptd_storage_free_bytes" and s.labels == {"location": "state_dir"}:
            want["free"] = s.value
        if s.name == "ckptd_start_time_seconds":
            want["start"] = s.value
        if s.name == "ckptd_http_requests_total" and s.labels == {"route": "/v1/checkpoints", "code": "2xx"}:
            want["created"] = s.value
        if s.name == "ckptd_http_requests_total" and s.labels == {"route": "/v1/checkpoints", "code": "5xx"}:
            want["failed_req"] = s.value
print(want["ok"], want["frozen"], want["bytes"], want["build"], want["jobs_ok"], want["jobs_criu"],
      want["queued"], want["duration"], want["frozen_by"], want["size_by"], want["ready"], want["used"],
      want["free"], want["start"], want["created"], want["failed_req"])
"#;
    let mut py = Command::new(VENV_PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the setup's venv python (make setup)");
    use std::io::Write;
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vals: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(vals[0], 1.0, "{text}");
    assert_eq!(vals[1], 1.0);
    assert!(
        vals[2] > 16.0 * 1024.0 * 1024.0,
        "bytes written {}",
        vals[2]
    );
    assert_eq!(vals[3], 1.0);
    // The jobs by kind, result and code; their waits and durations; by target.
    assert_eq!(&vals[4..11], &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0], "{text}");
    assert!(vals[11] > 16.0 * 1024.0 * 1024.0, "used {}", vals[11]);
    assert!(vals[12] > 0.0 && vals[13] > 1.7e9, "{text}");
    // Requests by route template and status class: the good checkpoint (201) and the one whose
    // job CRIU failed (answered with the job's error status).
    assert_eq!(&vals[14..16], &[1.0, 1.0], "{text}");
    for name in [
        "ckptd_restores_total",
        "ckptd_checkpoint_duration_seconds_bucket",
        "ckptd_queue_depth",
        "ckptd_busy_workers",
        "ckptd_catalog_checkpoints 2",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
}

#[tokio::test]
async fn an_event_stream_client_sees_a_job_succeed() {
    let d = Daemon::start().await;
    let out_path = d.dir.path().join("events.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut curl = Command::new("curl")
        .args(["-sN", "--unix-socket"])
        .arg(&d.socket)
        .arg("http://ckptd/v1/events")
        .stdout(out)
        .spawn()
        .unwrap();
    // Subscribed once the daemon's first comment has arrived.
    wait_until("the stream's first comment", || {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .starts_with(": connected")
    });
    let t = Target::python(d.dir.path(), "sse", 0, false);
    let created = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Process { pid: t.pid }),
                leave_running: true,
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap();
    wait_until("the job.succeeded event", || {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .contains("\"type\":\"job.succeeded\"")
    });
    let _ = curl.kill();
    let _ = curl.wait();
    let events: Vec<serde_json::Value> = BufReader::new(std::fs::File::open(&out_path).unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            l.strip_prefix("data:")
                .map(|d| serde_json::from_str(d.trim()).unwrap())
        })
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "checkpoint.created",
            "job.queued",
            "job.running",
            "job.succeeded",
            "checkpoint.ready"
        ],
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["time"].is_string()));
    assert_eq!(events[3]["job"]["id"], created.job.id.to_string());
    assert_eq!(events[4]["checkpoint"]["status"], "ready");
    // Each event carries its SSE id, the same as its "id", in sequence.
    let text = std::fs::read_to_string(&out_path).unwrap();
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|i| i.trim().parse().unwrap())
        .collect();
    let data_ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, data_ids);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");

    // A client that reconnects with Last-Event-ID gets what happened while it was away, once.
    let last = ids[1];
    let t2 = Target::python(d.dir.path(), "sse2", 0, false);
    d.client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Process { pid: t2.pid }),
                leave_running: true,
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap();
    let again = Command::new("curl")
        .args(["-sN", "--max-time", "2", "-H"])
        .arg(format!("Last-Event-ID: {last}"))
        .arg("--unix-socket")
        .arg(&d.socket)
        .arg("http://ckptd/v1/events")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&again.stdout);
    let replayed: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|i| i.trim().parse().unwrap())
        .collect();
    let expected: Vec<u64> = (last + 1..=last + 8).collect();
    assert_eq!(replayed, expected, "{text}");
}

#[tokio::test]
async fn the_watchdog_is_fed_and_json_logs_carry_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let sock = dir.path().join("ckptd.sock");
    let log = dir.path().join("daemon.log");
    let mut child = Command::new(daemon_binary())
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--log-format", "json"])
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // READY=1, then WATCHDOG=1 at least twice (every 200 ms).
    let mut buf = [0u8; 512];
    let mut watchdogs = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while watchdogs < 2 {
        assert!(Instant::now() < deadline, "no watchdog notifications");
        let n = listener.recv(&mut buf).expect("a notification");
        if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
            watchdogs += 1;
        }
    }
    // A job's log lines are JSON objects whose span names the job and its target.
    let client = Client::new(&sock);
    let t = Target::python(dir.path(), "jsonlog", 0, false);
    let created = client
        .create_checkpoint(
            &CreateCheckpoint {
                target: Some(ApiTarget::Process { pid: t.pid }),
                leave_running: true,
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap();
    signal(child.id() as i32, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    let job_line = lines
        .iter()
        .find(|l| l["fields"]["message"] == "job succeeded")
        .unwrap_or_else(|| panic!("no job line in:\n{text}"));
    assert_eq!(job_line["span"]["id"], created.job.id.to_string());
    assert_eq!(job_line["span"]["target"], format!("process:{}", t.pid));
}
