//! The `ckpt` CLI against the real daemon: output, exit codes, the daemon's message on stderr.

use std::process::{Command, Output};

use ckptd_tests::{
    unique_id, wait_until, workspace_binary, Bundle, Container, ContainerStdio, Daemon, Target,
    CONTAINER_LOOPER,
};

fn ckpt(d: &Daemon, args: &[&str]) -> Output {
    d.ckpt(args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn ckpt_create_ls_inspect_rm_and_exit_codes() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "cli", 0, false);
    let pid = t.pid.to_string();

    let out = ckpt(
        &d,
        &[
            "create",
            &pid,
            "cli1",
            "--leave-running",
            "--label",
            "app=cli",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("cli1  ready  "),
        "{}",
        text(&out.stdout)
    );

    let out = ckpt(&d, &["ls", "--label", "app=cli"]);
    assert!(out.status.success());
    let ls = text(&out.stdout);
    assert!(
        ls.lines()
            .nth(1)
            .is_some_and(|l| l.contains("cli1") && l.contains("ready")),
        "{ls}"
    );

    let out = ckpt(&d, &["ls", "--json", "--pid", &pid]);
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(items[0]["name"], "cli1");

    let out = ckpt(&d, &["inspect", "cli1", "--json"]);
    let cp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cp["status"], "ready");
    assert_eq!(cp["labels"]["app"], "cli");
    // Tables show an id's first 8 characters, --wide the whole id.
    let id = cp["id"].as_str().unwrap();
    let ls = text(&ckpt(&d, &["ls"]).stdout);
    assert!(ls.contains(&id[..8]) && !ls.contains(id), "{ls}");
    let ls = text(&ckpt(&d, &["ls", "--wide"]).stdout);
    assert!(ls.contains(id), "{ls}");
    // For people: one field per line; a time read alone is RFC 3339 in UTC with its zone.
    let human = text(&ckpt(&d, &["inspect", "cli1"]).stdout);
    let created = human
        .lines()
        .find_map(|l| l.strip_prefix("Created:"))
        .unwrap()
        .trim();
    let (at, ago) = created.split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z') && at.len() == 20,
        "{created}"
    );
    assert!(ago.ends_with("ago)"), "{created}");
    assert!(human.contains("Status:       ready"), "{human}");
    assert!(human.contains("Labels:       app=cli"), "{human}");
    assert!(
        human.contains(&format!("Target:       pid {pid}")),
        "{human}"
    );

    // A refusal: exit 1, the daemon's code, message and hint on stderr.
    let out = ckpt(&d, &["create", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("forbidden: pid 1 is the init process"),
        "{}",
        text(&out.stderr)
    );

    // Hints name ckpt's commands, not the API's routes.
    let out = ckpt(&d, &["inspect", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("hint: list checkpoints with `ckpt ls`"),
        "{err}"
    );
    assert!(!err.contains("GET /v1"), "{err}");
    let out = ckpt(&d, &["cancel", "00000000-0000-0000-0000-000000000000"]);
    assert!(
        text(&out.stderr).contains("`ckpt jobs`"),
        "{}",
        text(&out.stderr)
    );

    // A daemon that is not there: what to start, not an HTTP error.
    let out = Command::new(workspace_binary("ckpt"))
        .args(["--socket", "/nonexistent/ckptd.sock", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("is ckptd running?"), "{err}");
    assert!(err.contains("systemctl start ckptd.socket"), "{err}");
    assert!(!err.contains("sudo"), "{err}");
    assert!(!err.contains("make run"), "{err}");

    // A CRIU failure: exit 1 with the hint and CRIU's error lines.
    let tcp = Target::python(d.dir.path(), "clitcp", 0, true);
    let out = ckpt(&d, &["create", &tcp.pid.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    // The hint in ckpt's words: the flag to add, not the API's JSON field.
    assert!(
        err.contains("hint:") && err.contains("retry with --tcp-established"),
        "{err}"
    );
    assert!(!err.contains("\"tcp_established\""), "{err}");
    assert!(err.contains("Connected TCP socket"), "{err}");

    // Usage errors: exit 2.
    assert_eq!(ckpt(&d, &["create"]).status.code(), Some(2));
    assert_eq!(
        ckpt(&d, &["create", &pid, "--label", "novalue"])
            .status
            .code(),
        Some(2)
    );

    let out = ckpt(&d, &["rm", "cli1"]);
    assert!(out.status.success());
    let out = ckpt(&d, &["inspect", "cli1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not_found"));
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\n{}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The seed's flow from the command line: checkpoint (the target stops), restore in place (it
/// continues where it stopped), jobs, logs and the schedule commands.
#[tokio::test]
async fn ckpt_restore_jobs_logs_schedules_and_completions() {
    let d = Daemon::start().await;
    let mut t = Target::looper(d.dir.path());
    let pid = t.pid.to_string();
    let out = ok(&ckpt(&d, &["create", &pid, "seed", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["checkpoint"]["status"], "ready");
    assert_eq!(v["job"]["state"], "succeeded");
    t.reap();
    assert!(!t.is_progressing(std::time::Duration::from_millis(500)));

    let out = ok(&ckpt(&d, &["restore", "seed"]));
    assert_eq!(out.trim(), format!("restored: pid {pid}"));
    assert!(t.is_progressing(std::time::Duration::from_secs(3)));
    t.assert_contiguous();

    let jobs = ok(&ckpt(&d, &["jobs"]));
    let header = jobs.lines().next().unwrap();
    assert!(
        header.starts_with("JOB") && header.contains("STATE"),
        "{jobs}"
    );
    assert!(
        jobs.lines().any(|l| l.contains("restore")
            && l.contains("succeeded")
            && l.contains(&format!("pid {pid}"))),
        "{jobs}"
    );
    let logs = ok(&ckpt(&d, &["logs", "seed"]));
    assert!(
        logs.contains("dump.log") && logs.contains("restore-"),
        "{logs}"
    );
    // Restoring a process that runs again: the pid is in use, exit 1 with the reason.
    let out = ckpt(&d, &["restore", "seed"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("kill {pid}")), "{err}");
    assert!(
        !err.contains("another process") && !err.contains("container"),
        "{err}"
    );

    // Schedules.
    let add = ok(&ckpt(
        &d,
        &[
            "schedule",
            "add",
            "nightly",
            &pid,
            "--cron",
            "@daily",
            "--keep-daily",
            "7",
            "--keep-last",
            "2",
        ],
    ));
    assert!(add.contains("nightly") && add.contains("daily=7"), "{add}");
    // Dynamic completion: names come from the daemon CKPTD_SOCKET names, as the user types.
    let complete = |line: &[&str]| {
        let out = Command::new(workspace_binary("ckpt"))
            .env("COMPLETE", "fish")
            .env("CKPTD_SOCKET", &d.socket)
            .arg("--")
            .args(line)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let names = complete(&["ckpt", "restore", "se"]);
    assert!(names.contains(&format!("seed\tready pid {pid}")), "{names}");
    let names = complete(&["ckpt", "schedule", "run", ""]);
    assert!(names.contains("nightly\t"), "{names}");
    let run = ok(&ckpt(&d, &["schedule", "run", "nightly"]));
    assert!(
        run.starts_with("nightly-2") && run.contains(" ready "),
        "{run}"
    );
    let ls = ok(&ckpt(&d, &["schedule", "ls"]));
    assert!(ls.contains("succeeded"), "{ls}");
    let plan = ok(&ckpt(&d, &["schedule", "retention", "nightly"]));
    assert!(
        plan.contains("keep") && plan.contains("newest ready checkpoint"),
        "{plan}"
    );
    let only = ok(&ckpt(&d, &["ls", "--schedule", "nightly", "--json"]));
    let items: serde_json::Value = serde_json::from_str(&only).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1);
    ok(&ckpt(&d, &["schedule", "disable", "nightly"]));
    let off: serde_json::Value = serde_json::from_str(&ok(&ckpt(
        &d,
        &["schedule", "inspect", "nightly", "--json"],
    )))
    .unwrap();
    assert_eq!(off["enabled"], false);
    let human = ok(&ckpt(&d, &["schedule", "inspect", "nightly"]));
    assert!(
        human.contains("Enabled:        no\n") && human.contains("Name:           nightly"),
        "{human}"
    );
    let bad = ckpt(&d, &["schedule", "add", "x", &pid, "--cron", "99 * * * *"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("invalid_request: invalid cron"),
        "{}",
        text(&bad.stderr)
    );
    assert_eq!(
        ckpt(&d, &["schedule", "add", "x", &pid]).status.code(),
        Some(2)
    );
    ok(&ckpt(&d, &["schedule", "rm", "nightly"]));
    assert_eq!(
        ckpt(&d, &["schedule", "rm", "nightly"]).status.code(),
        Some(1)
    );

    let bash = ok(&ckpt(&d, &["completions", "bash"]));
    assert!(
        bash.contains("_ckpt()") && bash.contains("schedule"),
        "completion script"
    );
}

/// A container target from the command line, restored into a new container.
#[tokio::test]
async fn ckpt_container_checkpoint_and_restore_into_a_new_container() {
    let d = Daemon::start().await;
    let bundle = Bundle::busybox(&d.dir.path().join("b1"), CONTAINER_LOOPER, |_| {});
    let id = unique_id("cli-ct");
    let _c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("output", || bundle.out_lines().len() >= 3);
    let out = ok(&ckpt(&d, &["create", &id, "ctcli", "--leave-running"]));
    assert!(out.starts_with("ctcli  ready"), "{out}");
    let ls = ok(&ckpt(&d, &["ls", "--container", &id]));
    assert!(ls.contains(&format!("runc {id}")), "{ls}");

    let copy = bundle.copy_to(&d.dir.path().join("b2"));
    let clone_id = unique_id("cli-clone");
    let clone = Container::adopt(&clone_id);
    let out = ok(&ckpt(
        &d,
        &[
            "restore",
            "ctcli",
            "--into",
            &clone_id,
            "--bundle",
            copy.dir.to_str().unwrap(),
        ],
    ));
    assert!(out.contains(&format!("container {clone_id}")), "{out}");
    assert_eq!(clone.status().as_deref(), Some("running"));
    // --into needs --bundle: a usage error.
    assert_eq!(
        ckpt(&d, &["restore", "ctcli", "--into", "x"]).status.code(),
        Some(2)
    );
}

/// A process whose controlling terminal (a tmux pane's) none of its tree holds open cannot be
/// given a terminal back at restore (CRIU names the terminal by a descriptor of it): it is
/// refused at checkpoint time with why and what to do, in the CLI. (A process that holds its
/// terminal is checkpointed with it: tests/tests/terminals.rs.)
#[tokio::test]
async fn a_process_whose_terminal_cannot_be_given_back_is_refused_with_what_to_do() {
    let d = Daemon::start().await;
    let session = unique_id("ckt");
    let st = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            // In the pane's session, its stdio away from the terminal, which the pane's own
            // process (not of its tree) keeps open.
            "sleep 600 </dev/null >/dev/null 2>&1 & exec sleep 601",
        ])
        .status()
        .expect("tmux (make setup installs it)");
    assert!(st.success());
    let out = Command::new("tmux")
        .args(["list-panes", "-t", &session, "-F", "#{pane_pid}"])
        .output()
        .unwrap();
    let pane = text(&out.stdout).trim().to_owned();
    let mut pid = String::new();
    ckptd_tests::wait_until("the pane's background sleep", || {
        pid = std::fs::read_to_string(format!("/proc/{pane}/task/{pane}/children"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        !pid.is_empty()
    });
    let out = ckpt(&d, &["create", &pid, "--shell-job"]);
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("has a controlling terminal that no process of its tree holds open"),
        "{err}"
    );
    assert!(err.contains("setsid -f"), "{err}");
    assert!(
        d.client
            .list_checkpoints(&ckptd_tests::q(""))
            .await
            .unwrap()
            .items
            .is_empty(),
        "a checkpoint was created"
    );
}

/// What a newcomer meets: output piped into head, several rm at once, export without -o,
/// ls -q, and what create says when it stops the target.
#[tokio::test]
async fn everyday_cli_behaviour() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "everyday", 0, false);
    let pid = t.pid.to_string();
    let out = ckpt(&d, &["create", &pid, "keep", "--leave-running"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    let out = ckpt(&d, &["create", &pid, "stopping"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("stopped pid {pid}; restore it with: ckpt restore stopping")
    );

    // ls -q: the names, nothing else.
    let out = ckpt(&d, &["ls", "-q"]);
    assert_eq!(text(&out.stdout), "stopping\nkeep\n");

    // Piped into a reader that stops early: no panic, ended by SIGPIPE like any Unix tool.
    let sh = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} --socket {} logs keep | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
            workspace_binary("ckpt").display(),
            d.socket.display()
        ))
        .output()
        .unwrap();
    assert!(
        !text(&sh.stderr).contains("panicked"),
        "{}",
        text(&sh.stderr)
    );
    assert!(
        ["0", "141"].contains(&text(&sh.stdout).trim()),
        "{}",
        text(&sh.stdout)
    );

    // rm: each failure once, the others still removed, exit 1.
    let out = ckpt(&d, &["rm", "nope", "keep"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "keep\n");
    let err = text(&out.stderr);
    assert_eq!(err.matches("no checkpoint").count(), 1, "{err}");

    // export without -o: NAME.tar.zst in the current directory, 0600; never over a file.
    let work = tempfile::tempdir().unwrap();
    let export = |args: &[&str]| {
        Command::new(workspace_binary("ckpt"))
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .current_dir(work.path())
            .output()
            .unwrap()
    };
    let out = export(&["export", "stopping"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = work.path().join("stopping.tar.zst");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = export(&["export", "stopping"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
}

/// `ckpt jobs` names each job's checkpoint and target, and on a narrow terminal (a tmux pane
/// 60 columns wide) its lines fit; `events` lines name the checkpoint too.
#[tokio::test]
async fn ckpt_jobs_names_checkpoints_and_fits_the_terminal() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "jobsview", 0, false);
    let pid = t.pid.to_string();
    let out = ckpt(
        &d,
        &[
            "create",
            &pid,
            "a-rather-long-checkpoint-name-for-a-narrow-terminal",
            "--leave-running",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ckpt(&d, &["jobs", "--kind", "checkpoint", "--limit", "5"]);
    let table = text(&out.stdout);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("a-rather-long-checkpoint-name-for-a-narrow-terminal")
            && row.contains(&format!("pid {pid}"))
            && row.contains("succeeded"),
        "{table}"
    );

    let session = unique_id("ckj");
    let shown = d.dir.path().join("shown.txt");
    let cmd = format!(
        "{} --socket {} jobs; sleep 30",
        workspace_binary("ckpt").display(),
        d.socket.display()
    );
    let st = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-x",
            "60",
            "-y",
            "10",
            "-s",
            &session,
            &cmd,
        ])
        .env_remove("COLUMNS")
        .status()
        .expect("tmux");
    assert!(st.success());
    let mut screen = String::new();
    wait_until("ckpt jobs on the terminal", || {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .unwrap();
        screen = text(&o.stdout);
        screen.contains("succeeded")
    });
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    std::fs::write(&shown, &screen).unwrap();
    for line in screen.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.chars().count() <= 60,
            "a line wider than the terminal: {line:?}\n{screen}"
        );
        assert!(!line.ends_with('\\'), "{screen}");
    }
    let row = screen.lines().find(|l| l.contains("succeeded")).unwrap();
    assert!(row.contains("a-rathe…"), "{screen}");
}

/// `ckpt schedule set --target` moves a schedule to another process; `schedule rm` of a missing
/// one and a real one reports the failure once and removes the other.
#[tokio::test]
async fn ckpt_schedule_set_target_and_rm() {
    let d = Daemon::start().await;
    let a = Target::python(d.dir.path(), "sched-a", 0, false);
    let b = Target::python(d.dir.path(), "sched-b", 0, false);
    let out = ckpt(
        &d,
        &[
            "schedule",
            "add",
            "moving",
            &a.pid.to_string(),
            "--cron",
            "@daily",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ckpt(
        &d,
        &["schedule", "set", "moving", "--target", &b.pid.to_string()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = d.client.schedule("moving").await.unwrap();
    assert_eq!(
        s.target,
        ckptd_tests::api::Target::Process { pid: b.pid },
        "{s:?}"
    );
    let out = ckpt(&d, &["schedule", "rm", "nope", "moving"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "moving\n");
    assert_eq!(
        text(&out.stderr).matches("no schedule").count(),
        1,
        "{}",
        text(&out.stderr)
    );
}

/// A reference typed with a space, a `/`, a `?` or a `%` stays one reference: ckpt says no
/// such checkpoint, in its words, and never panics or asks for something else.
#[tokio::test]
async fn references_with_odd_characters_are_one_reference() {
    let d = Daemon::start().await;
    for reference in ["a b", "a/b", "../info", "x?y=1", "100%", "ü"] {
        for cmd in [
            &["inspect"][..],
            &["rm"],
            &["logs"],
            &["restore"],
            &["schedule", "rm"],
        ] {
            let mut args = cmd.to_vec();
            args.push(reference);
            let out = ckpt(&d, &args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert!(
                err.contains(&format!("{reference:?}")) || err.contains(reference),
                "{args:?} names what was typed: {err}"
            );
        }
    }
}

/// Refusals a CLI user meets name `ckpt` commands and flags, never the API's routes and JSON
/// fields: each checked in its CLI form against the real daemon. `--no-wait` prints the job's
/// id alone; Ctrl-C on a wait lets go of the job and says how to follow or cancel it; `--json`
/// errors are JSON.
#[tokio::test]
async fn hints_name_ckpt_commands_and_flags() {
    let pause = ckptd_tests::Pause::new();
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), pause.config_line()).unwrap();
    let d = Daemon::start_with(&["--config", cfg.path().to_str().unwrap()]).await;
    let mut t = Target::python(d.dir.path(), "hints", 0, false);
    let pid = t.pid.to_string();
    ok(&ckpt(&d, &["create", &pid, "held"]));
    t.reap();

    let refused = |args: &[&str], says: &str, hint: &str| {
        let out = ckpt(&d, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        let h = err
            .lines()
            .find_map(|l| l.strip_prefix("hint: "))
            .unwrap_or_else(|| panic!("{args:?} gave no hint: {err}"));
        assert!(h.contains(hint), "{args:?}: {h}");
        for api in [
            "/v1/",
            "GET ",
            "PATCH ",
            "\": ",
            "\"root\"",
            "checkpoint_dir",
            "?name=",
        ] {
            assert!(!h.contains(api), "{args:?} tells a CLI user {api:?}: {h}");
        }
    };

    // rm while a restore holds the checkpoint: named as the user named it, not by its id.
    pause.arm("post-restore");
    let out = ok(&ckpt(&d, &["restore", "held", "--no-wait"]));
    let job = out.trim().to_owned();
    assert!(
        uuid::Uuid::parse_str(&job).is_ok() && out.lines().count() == 1,
        "--no-wait printed {out:?}, not one line with the job's id"
    );
    pause.reached("post-restore");
    // Ctrl-C on a wait: exit 130, the job goes on, and how to follow or cancel it.
    let waiting = Command::new(workspace_binary("ckpt"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["jobs", "wait", &job])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    ckptd_tests::signal(waiting.id() as i32, libc::SIGINT);
    let out = waiting.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    for want in [
        format!("job {job} (restore) goes on in the daemon"),
        format!("ckpt jobs wait {job}"),
        format!("ckpt cancel {job}"),
    ] {
        assert!(err.contains(&want), "{want}: {err}");
    }
    refused(
        &["rm", "held"],
        "checkpoint held is in use by a job",
        "`ckpt jobs --state running`",
    );
    pause.release(true);
    assert_eq!(
        ok(&ckpt(&d, &["jobs", "wait", &job])),
        format!("job {job} succeeded\n")
    );

    // --json: the error is JSON too, its hint in ckpt's words.
    let out = ckpt(&d, &["inspect", "nope", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    assert_eq!(err["error"]["code"], "not_found", "{err}");
    assert_eq!(
        err["error"]["details"]["hint"], "list checkpoints with `ckpt ls`",
        "{err}"
    );

    refused(
        &["create", "no-such-container", "--root", "/run/ckpt-hints"],
        "no container \"no-such-container\" is known to runc --root /run/ckpt-hints",
        "`runc --root /run/ckpt-hints list`; if it runs under another runc root, give --root DIR",
    );
    refused(
        &["push", "held", "--remote", "nowhere"],
        "there is no remote \"nowhere\"",
        "`ckpt remotes` lists them",
    );
    refused(
        &["export", "held", "--format", "podman", "-o", "-"],
        "format=podman is for checkpoints of Podman containers",
        "leave --format out",
    );
    let file = d.dir.path().join("held.tar.zst");
    ok(&ckpt(&d, &["export", "held", "-o", file.to_str().unwrap()]));
    refused(
        &["import", file.to_str().unwrap()],
        "held",
        "import it under another name (--name NAME)",
    );
    ok(&ckpt(
        &d,
        &[
            "schedule",
            "add",
            "nightly",
            &pid,
            "--cron",
            "@daily",
            "--disabled",
        ],
    ));
    refused(
        &["schedule", "add", "nightly", &pid, "--cron", "@daily"],
        "a schedule named \"nightly\" already exists",
        "ckpt schedule set nightly",
    );
}

/// `ckpt events --since` replays what the daemon holds from then on, before the live stream;
/// a request for a change that was refused is an event (`request.refused`), a read is not.
#[tokio::test]
async fn events_since_replays_history_and_refusals_are_events() {
    let d = Daemon::start().await;
    let t = Target::python(d.dir.path(), "evsince", 0, false);
    let pid = t.pid.to_string();
    ok(&ckpt(&d, &["create", &pid, "before", "--leave-running"]));
    let refused = ckpt(&d, &["create", "2147483647", "nobody"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(ckpt(&d, &["inspect", "nope"]).status.code(), Some(1));

    // The first lines of `ckpt events --since 1m [--json]`, read until `until` holds.
    let first_lines = |args: &[&str], until: &dyn Fn(&[String]) -> bool| {
        use std::io::BufRead;
        let mut child = Command::new(workspace_binary("ckpt"))
            .arg("--socket")
            .arg(&d.socket)
            .args(["events", "--since", "1m"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                if tx.send(l.unwrap()).is_err() {
                    return;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !until(&lines) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(e) => panic!("{e}: events so far: {lines:#?}"),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        lines
    };
    let json = first_lines(&["--json"], &|l| {
        l.iter().any(|l| l.contains("request.refused"))
    });
    let events: Vec<serde_json::Value> = json
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "checkpoint.ready" && e["checkpoint"]["name"] == "before"),
        "the history before the command ran: {json:#?}"
    );
    let r = events
        .iter()
        .find(|e| e["type"] == "request.refused")
        .unwrap();
    assert_eq!(r["refusal"]["method"], "POST", "{r}");
    assert_eq!(r["refusal"]["path"], "/v1/checkpoints", "{r}");
    assert_eq!(r["refusal"]["uid"], 0, "{r}");
    assert_eq!(r["refusal"]["error"]["code"], "target_unavailable", "{r}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "request.refused")
            .count(),
        1,
        "a GET that found nothing is not an event: {json:#?}"
    );
    let plain = first_lines(&[], &|l| l.iter().any(|l| l.contains("request.refused")));
    let line = plain
        .iter()
        .find(|l| l.contains("request.refused"))
        .unwrap();
    assert!(
        line.contains("POST /v1/checkpoints (uid 0): target_unavailable: "),
        "{line}"
    );

    let bad = ckpt(&d, &["events", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("neither an RFC 3339 time"),
        "{}",
        text(&bad.stderr)
    );
}

/// A daemon that stops reading an upload (its socket shut for reading: a write to it is
/// EPIPE, and SIGPIPE) leaves `ckpt` an error to say, not a silent death by SIGPIPE (exit
/// 141, nothing on stderr; seen once under load when a daemon answered an import early).
/// Output piped into `head` still ends ckpt by SIGPIPE (`everyday_cli_behaviour`).
#[tokio::test]
async fn an_upload_the_daemon_stops_reading_is_an_error_said_not_a_sigpipe() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("half.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let archive = dir.path().join("big.tar");
    std::fs::write(&archive, vec![0u8; 16 << 20]).unwrap();
    let (gone, wait) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut head = [0u8; 256];
        let _ = c.read(&mut head).unwrap();
        c.shutdown(std::net::Shutdown::Read).unwrap();
        // Open for writing a while (ckpt's next write of the body meets the shut socket at
        // once), then closed: ckpt, told of the broken write, may wait for an answer.
        let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
    });
    let out = Command::new(workspace_binary("ckpt"))
        .arg("--socket")
        .arg(&socket)
        .arg("import")
        .arg(&archive)
        .output()
        .unwrap();
    // The server may have given up waiting already (ckpt slower than 2 s under load).
    let _ = gone.send(());
    server.join().unwrap();
    assert_eq!(
        out.status.signal(),
        None,
        "ckpt was killed by a signal: {:?}",
        out.status
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("ckpt: "),
        "{}",
        text(&out.stderr)
    );
}
