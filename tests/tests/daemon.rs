//! The daemon's own life: configuration errors, its socket, restarts.

use std::process::Command;
use std::time::Duration;

use ckptd_api::{CreateCheckpoint, RestoreRequest, Target as ApiTarget};
use ckptd_tests::{alive, daemon_binary, Daemon, Target};

#[test]
fn invalid_configuration_stops_the_start_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let run = |args: &[&str]| {
        Command::new(daemon_binary())
            .args([
                "--socket",
                sock.to_str().unwrap(),
                "--state-dir",
                dir.path().join("st").to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--workers", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("workers must be between 1 and 256"));
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "queue_capacity = \"many\"\n").unwrap();
    let out = run(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid config file") && err.contains("queue_capacity"),
        "{err}"
    );
    let out = run(&["--config", "/nonexistent/ckptd.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
    assert!(!sock.exists(), "a refused start created the socket");
}

#[tokio::test]
async fn a_second_daemon_on_a_live_socket_is_refused_and_a_stale_one_is_replaced() {
    let mut d = Daemon::start().await;
    let out = Command::new(daemon_binary())
        .args([
            "--socket",
            d.socket.to_str().unwrap(),
            "--state-dir",
            d.dir.path().join("other").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another daemon is already serving"));
    assert!(
        d.client.health().await.is_ok(),
        "the refused second daemon broke the first"
    );
    // The socket is root-only from its first moment.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A stale socket (a daemon killed with SIGKILL leaves one) is replaced at the next start.
    let pid = d.pid();
    ckptd_tests::signal(pid, libc::SIGKILL);
    ckptd_tests::wait_until("the daemon to die", || {
        ckptd_tests::proc_state(pid).is_none_or(|s| s == 'Z')
    });
    assert!(d.socket.exists());
    d.kill_and_forget();
    d.restart_after_stop().await;
    assert!(d.client.health().await.is_ok());
}

#[tokio::test]
async fn a_restored_tree_is_not_the_daemons_child_and_outlives_a_restart() {
    let mut d = Daemon::start().await;
    let mut t = Target::python(d.dir.path(), "outlive", 0, false);
    d.client
        .create_checkpoint(
            &ckptd_tests::checkpoint(Some(ApiTarget::Process { pid: t.pid }), "o"),
            true,
        )
        .await
        .expect("checkpoint");
    t.reap();
    let job = d
        .client
        .restore("o", &RestoreRequest::default(), true)
        .await
        .expect("restore");
    assert_eq!(job.result.unwrap().pid, Some(t.pid));
    let ppid = std::fs::read_to_string(format!("/proc/{}/stat", t.pid)).unwrap();
    let ppid: i32 = ppid[ppid.rfind(')').unwrap() + 4..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ppid, d.pid(), "the restored tree is a child of the daemon");
    d.restart().await;
    assert!(alive(t.pid), "the restored process died with the daemon");
    assert!(t.is_progressing(Duration::from_secs(2)));
}

/// The daemon-wide `criu_config` reaches CRIU for process checkpoints and is recorded.
#[tokio::test]
async fn the_daemon_s_criu_config_is_used_for_processes_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("criu.conf");
    std::fs::write(&conf, "file-locks\n").unwrap();
    let toml = dir.path().join("ckptd.toml");
    std::fs::write(&toml, format!("criu_config = \"{}\"\n", conf.display())).unwrap();
    let d = Daemon::start_with(&["--config", toml.to_str().unwrap()]).await;
    let t = Target::python(d.dir.path(), "conf", 0, false);
    let cp = d
        .client
        .create_checkpoint(
            &CreateCheckpoint {
                leave_running: true,
                ..ckptd_tests::checkpoint(Some(ApiTarget::Process { pid: t.pid }), "c")
            },
            true,
        )
        .await
        .expect("checkpoint")
        .checkpoint;
    assert_eq!(cp.criu_config.as_deref(), Some(conf.to_str().unwrap()));
    let log = d.client.checkpoint_log("c").await.unwrap();
    assert!(
        log.contains(&format!("Parsing config file {}", conf.display())),
        "CRIU did not read it"
    );
}

/// The optional TCP listener: off by default, bearer token required, token file must be private.
#[tokio::test]
async fn the_tcp_listener_needs_its_bearer_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();

    // A token file others can read is refused, as is a listener without a token file.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let start = |args: &[&str]| {
        Command::new(daemon_binary())
            .args([
                "--socket",
                dir.path().join("s.sock").to_str().unwrap(),
                "--state-dir",
                dir.path().join("st").to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let out = start(&[
        "--tcp-listen",
        "127.0.0.1:0",
        "--tcp-token-file",
        token_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = start(&["--tcp-listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs tcp_token_file"));
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let d = Daemon::start_with(&[
        "--tcp-listen",
        "127.0.0.1:0",
        "--tcp-token-file",
        token_file.to_str().unwrap(),
    ])
    .await;
    let addr = d.tcp_addr();
    let curl = |auth: Option<&str>, method: &str, path: &str, body: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-s", "-w", "\n%{http_code}", "-X", method]);
        if let Some(a) = auth {
            c.args(["-H", &format!("Authorization: Bearer {a}")]);
        }
        if let Some(b) = body {
            c.args(["-d", b]);
        }
        let out = c.arg(format!("http://{addr}{path}")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    let (code, body) = curl(None, "GET", "/v1/health", None);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
    assert_eq!(
        curl(
            Some("wrong-token-wrong-token-wrong"),
            "GET",
            "/v1/checkpoints",
            None
        )
        .0,
        "401"
    );
    assert_eq!(curl(Some(token), "GET", "/v1/health", None).0, "200");
    // A token holder acts as root.
    let t = Target::python(d.dir.path(), "tcp-api", 0, false);
    let body = format!(
        "{{\"target\":{{\"kind\":\"process\",\"pid\":{}}},\"leave_running\":true}}",
        t.pid
    );
    let (code, out) = curl(
        Some(token),
        "POST",
        "/v1/checkpoints?wait=true",
        Some(&body),
    );
    assert_eq!(code, "201", "{out}");
    assert!(out.contains("\"owner_uid\":0"));

    // A flood of unauthenticated connections from one address: the TCP listener keeps at most
    // its per-peer share, and root's socket answers within 100 ms throughout.
    let flood = tcp_flood(&addr, 3000);
    d.assert_survives_flood(&flood).await;
    drop(flood);
}

/// Starts opening `n` TCP connections to `addr` that send nothing, from a helper process that
/// holds them; its stdout says how many connects succeeded once it is done (the daemon closes
/// those over its limits).
fn tcp_flood(addr: &str, n: usize) -> Target {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    Target::spawn(
        &[
            "/usr/bin/python3",
            "-c",
            &format!(
                "import socket, time\nheld = []\nfor i in range({n}):\n    try:\n        \
                 held.append(socket.create_connection(({host:?}, {port}), timeout=5))\n    \
                 except OSError:\n        pass\nprint(len(held), flush=True)\ntime.sleep(60)\n"
            ),
        ],
        &dir.join("flood.out"),
    )
}

/// The attack of a second daemon on a live daemon's state directory: it must stop at once,
/// saying which daemon holds it, and leave the first one's running job alone.
#[tokio::test]
async fn a_second_daemon_on_the_same_state_dir_stops_before_touching_it() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "busy", 1024, false);
    let (cp, job) = {
        let r = d
            .client
            .send_json(
                hyper::Method::POST,
                "/v1/checkpoints",
                &serde_json::json!({"target": {"kind": "process", "pid": t.pid}, "name": "busy"}),
            )
            .await
            .unwrap();
        let v: serde_json::Value = r.json().unwrap();
        (
            v["checkpoint"]["id"].as_str().unwrap().to_owned(),
            v["job"]["id"].as_str().unwrap().to_owned(),
        )
    };
    d.wait_job(&job, |j| j.state == ckptd_tests::api::JobState::Running)
        .await;
    let out = Command::new(daemon_binary())
        .arg("--socket")
        .arg(d.dir.path().join("second.sock"))
        .arg("--state-dir")
        .arg(&d.state_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "another ckptd (pid {}) is already running on state directory",
            d.pid()
        )),
        "{err}"
    );
    assert!(!d.dir.path().join("second.sock").exists());
    let done = d.wait_job(&job, |j| j.state.is_finished()).await;
    assert_eq!(
        done.state,
        ckptd_tests::api::JobState::Succeeded,
        "{done:?}"
    );
    let cp = d.client.checkpoint(&cp).await.unwrap();
    assert_eq!(cp.status, ckptd_tests::api::CheckpointStatus::Ready);
}

/// Whoever owns the token file can change the token: it must be root's.
#[tokio::test]
async fn a_token_file_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::os::unix::fs::chown(&token_file, Some(65534), None).unwrap();
    let out = Command::new(daemon_binary())
        .args(["--socket", dir.path().join("s.sock").to_str().unwrap()])
        .args(["--state-dir", dir.path().join("st").to_str().unwrap()])
        .args(["--tcp-listen", "127.0.0.1:0", "--tcp-token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to uid 65534") && err.contains("chown root"),
        "{err}"
    );
}

/// `/v1/info` reports the runc the daemon is configured to run (`runc_path`), not the first one
/// in PATH.
#[tokio::test]
async fn info_reports_the_configured_runc() {
    let dir = tempfile::tempdir().unwrap();
    let runc = dir.path().join("my-runc");
    let installed = std::process::Command::new("sh")
        .args(["-c", "command -v runc"])
        .output()
        .unwrap();
    let installed = String::from_utf8(installed.stdout).unwrap();
    std::fs::copy(installed.trim(), &runc).expect("copy runc");
    let toml = dir.path().join("ckptd.toml");
    // And Docker, Podman and containerd sockets where nothing answers: info says so, and why.
    std::fs::write(
        &toml,
        format!(
            "runc_path = \"{}\"\ndocker_socket = \"{}\"\npodman_socket = \"{}\"\n\
             containerd_socket = \"{}\"\n",
            runc.display(),
            dir.path().join("no-docker.sock").display(),
            dir.path().join("no-podman.sock").display(),
            dir.path().join("no-containerd.sock").display()
        ),
    )
    .unwrap();
    let d = Daemon::start_with(&["--config", toml.to_str().unwrap()]).await;
    let info = d.client.info().await.unwrap();
    let names: Vec<&str> = info.runtimes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["runc", "docker", "podman", "containerd"],
        "{:?}",
        info.runtimes
    );
    let r = &info.runtimes[0];
    assert_eq!(r.path, runc.to_str().unwrap());
    assert!(r.reachable && r.error.is_none(), "{r:?}");
    assert!(
        r.version
            .as_deref()
            .is_some_and(|v| v.starts_with("runc version")),
        "{r:?}"
    );
    let docker = &info.runtimes[1];
    assert!(!docker.reachable, "{docker:?}");
    assert!(
        docker
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no socket there")),
        "{docker:?}"
    );
    let podman = &info.runtimes[2];
    assert_eq!(
        (podman.reachable, podman.path.as_str()),
        (false, dir.path().join("no-podman.sock").to_str().unwrap()),
        "{podman:?}"
    );
    assert!(
        podman
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no socket there (is Podman's API service running?)")),
        "{podman:?}"
    );
    let containerd = &info.runtimes[3];
    assert!(!containerd.reachable, "{containerd:?}");
    assert!(
        containerd
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no socket there (is containerd running?)")),
        "{containerd:?}"
    );
}

#[tokio::test]
async fn info_says_whether_criu_can_keep_its_kernel_probe() {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T", "/run"])
        .output()
        .unwrap();
    let run_is_tmpfs = String::from_utf8_lossy(&out.stdout).trim() == "tmpfs";
    let d = Daemon::start().await;
    let info = d.client.info().await.unwrap();
    assert_eq!(
        info.criu.kernel_probe_cached, run_is_tmpfs,
        "{:?}",
        info.criu
    );
    assert_eq!(
        d.log()
            .contains("CRIU cannot keep what it probes of the kernel"),
        !run_is_tmpfs,
        "{}",
        d.log()
    );
}

/// A daemon serving TCP on loopback with the admin token (and a metrics token, when given).
async fn tcp_daemon(dir: &std::path::Path, metrics: Option<&str>) -> (Daemon, String) {
    use std::os::unix::fs::PermissionsExt;
    let write = |name: &str, token: &str| {
        let f = dir.join(name);
        std::fs::write(&f, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        f
    };
    let admin = write("token", ADMIN_TOKEN);
    let mut args = vec![
        "--tcp-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--tcp-token-file".to_owned(),
        admin.display().to_string(),
    ];
    if let Some(m) = metrics {
        args.push("--metrics-token-file".into());
        args.push(write("metrics-token", m).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start_with(&args).await;
    let addr = d.tcp_addr();
    (d, addr)
}

const ADMIN_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// `curl` on the TCP listener with a bearer token: (status, body).
fn tcp_curl(addr: &str, token: Option<&str>, method: &str, path: &str) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-m", "5", "-w", "\n%{http_code}", "-X", method]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = c.arg(format!("http://{addr}{path}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_owned())
}

/// Attack 8 of issue 25: 1,200 connections from 20 loopback addresses that send half a header
/// and hold. Before, they filled max_connections and the token holder was shut out; now they
/// wait in the unauthenticated pool, oldest closed first, and every request of the token
/// holder is answered within a second, throughout.
#[tokio::test]
async fn half_sent_headers_from_many_addresses_never_keep_the_token_holder_out() {
    let dir = tempfile::tempdir().unwrap();
    let (d, addr) = tcp_daemon(dir.path(), None).await;
    let (_, port) = addr.rsplit_once(':').unwrap();
    let flood = Target::spawn(
        &[
            "/usr/bin/python3",
            "-c",
            &format!(
                "import socket, time\nheld = []\nfor a in range(2, 22):\n    for i in range(60):\n        \
                 try:\n            s = socket.socket(); s.settimeout(2); s.bind(('127.0.0.%d' % a, 0))\n            \
                 s.connect(('127.0.0.1', {port})); s.sendall(b'GET /v1/health HTTP/1.1\\r\\nHost: x\\r\\n')\n            \
                 held.append(s)\n        except OSError:\n            pass\nprint(len(held), flush=True)\ntime.sleep(60)\n"
            ),
        ],
        &dir.path().join("flood.out"),
    );
    flood.wait_for_lines(1);
    let opened: usize = flood.lines()[0].trim().parse().unwrap();
    assert!(opened >= 1000, "the flood opened only {opened}");
    for i in 0..20 {
        let started = std::time::Instant::now();
        let (code, body) = tcp_curl(&addr, Some(ADMIN_TOKEN), "GET", "/v1/health");
        assert_eq!(code, 200, "request {i}: {body}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "request {i} took {took:?}");
    }
    assert!(d.open_fds() < 64 + 64, "{} descriptors", d.open_fds());
    ckptd_tests::signal(flood.pid, 9);
}

/// A metrics-only token: GET /metrics and nothing else; the admin token still does everything.
#[tokio::test]
async fn the_metrics_token_reads_metrics_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = "fedcba9876543210fedcba9876543210";
    let (_d, addr) = tcp_daemon(dir.path(), Some(metrics)).await;
    let (code, body) = tcp_curl(&addr, Some(metrics), "GET", "/metrics");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("ckptd_build_info"), "{body}");
    for (method, path) in [
        ("GET", "/v1/checkpoints"),
        ("GET", "/v1/health"),
        ("DELETE", "/v1/checkpoints/x"),
        ("POST", "/metrics"),
    ] {
        let (code, body) = tcp_curl(&addr, Some(metrics), method, path);
        assert_eq!(code, 403, "{method} {path}: {body}");
        assert!(body.contains("metrics token"), "{body}");
    }
    assert_eq!(tcp_curl(&addr, None, "GET", "/metrics").0, 401);
    assert_eq!(
        tcp_curl(&addr, Some(ADMIN_TOKEN), "GET", "/v1/checkpoints").0,
        200
    );
    assert_eq!(tcp_curl(&addr, Some(ADMIN_TOKEN), "GET", "/metrics").0, 200);
}

/// SIGHUP reloads what can change at run time and says what waits for a restart; an invalid
/// file keeps the running configuration; SIGUSR1 is ignored with a word; SIGQUIT stops the
/// daemon gracefully and removes its socket. Before, SIGHUP ended the daemon without a log line
/// and left its socket behind.
#[tokio::test]
async fn sighup_reloads_the_configuration_and_other_signals_are_handled_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ckptd.sock");
    let cfg = dir.path().join("ckptd.toml");
    let log = dir.path().join("daemon.log");
    // Written whole, then renamed: the daemon never reads half a file.
    let write_cfg = |text: &str| {
        let tmp = dir.path().join("ckptd.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
    };
    write_cfg("log = \"warn\"\nmember_max_jobs = 4\n");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(daemon_binary())
        .args(["--socket", sock.to_str().unwrap(), "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--config")
        .arg(&cfg)
        .env_remove("CKPTD_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let client = ckptd_api::Client::new(&sock);
    let read_log = || std::fs::read_to_string(&log).unwrap();
    ckptd_tests::wait_until("the daemon to answer", || sock.exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.health().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "{}", read_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(client.remotes().await.unwrap().items.is_empty());
    assert!(
        !read_log().contains("ckptd listening"),
        "log = \"warn\" let info through:\n{}",
        read_log()
    );

    // A remote added, the log filter and a member limit changed, and workers (a restart's).
    let creds = dir.path().join("creds.toml");
    std::fs::write(&creds, "access_key_id = \"k\"\nsecret_access_key = \"s\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    write_cfg(&format!(
        "log = \"info\"\nmember_max_jobs = 2\nworkers = 1\n\
         [remotes.later]\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"b\"\n\
         credentials_file = \"{}\"\n",
        creds.display()
    ));
    ckptd_tests::signal(pid, libc::SIGHUP);
    ckptd_tests::wait_until("the reload's log line", || {
        read_log().contains("SIGHUP: configuration reloaded")
    });
    let line = read_log()
        .lines()
        .find(|l| l.contains("SIGHUP: configuration reloaded"))
        .unwrap()
        .to_owned();
    for want in [
        "member limits",
        "remotes",
        "log",
        "needs_restart=\"workers\"",
    ] {
        assert!(line.contains(want), "{want}: {line}");
    }
    let remotes = client.remotes().await.unwrap().items;
    assert_eq!(
        remotes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["later"]
    );

    // An invalid file: the running configuration stays, and the log says why.
    write_cfg("queue_capacity = \"many\"\n");
    ckptd_tests::signal(pid, libc::SIGHUP);
    ckptd_tests::wait_until("the refused reload's log line", || {
        read_log().contains("the configuration was not reloaded")
    });
    assert!(read_log().contains("queue_capacity"), "{}", read_log());
    assert_eq!(client.remotes().await.unwrap().items.len(), 1);

    // SIGUSR1 and SIGUSR2 end a process by default; the daemon logs and ignores them.
    ckptd_tests::signal(pid, libc::SIGUSR1);
    ckptd_tests::wait_until("SIGUSR1's log line", || {
        read_log().contains("SIGUSR1 received and ignored")
    });
    assert!(client.health().await.is_ok());

    // SIGQUIT: a graceful stop, its socket removed.
    ckptd_tests::signal(pid, libc::SIGQUIT);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}:\n{}", read_log());
    assert!(read_log().contains("ckptd stopped"), "{}", read_log());
    assert!(!sock.exists(), "SIGQUIT left the socket behind");
}
