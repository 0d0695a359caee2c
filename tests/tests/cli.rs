//! The `ckpt` CLI against the real daemon: output, exit codes, the daemon's message on stderr.

use std::process::{Command, Output};

use ckptd_tests::{workspace_binary, Daemon, Target};

fn ckpt(d: &Daemon, args: &[&str]) -> Output {
    Command::new(workspace_binary("ckpt"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("run ckpt")
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
        text(&out.stdout).starts_with("cli1 ready "),
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

    let out = ckpt(&d, &["inspect", "cli1"]);
    let cp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cp["status"], "ready");
    assert_eq!(cp["labels"]["app"], "cli");

    // A refusal: exit 1, the daemon's code, message and hint on stderr.
    let out = ckpt(&d, &["create", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("forbidden: pid 1 is the init process"),
        "{}",
        text(&out.stderr)
    );

    // A CRIU failure: exit 1 with the hint and CRIU's error lines.
    let tcp = Target::python(d.dir.path(), "clitcp", 0, true);
    let out = ckpt(&d, &["create", &tcp.pid.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("hint:") && err.contains("tcp_established"),
        "{err}"
    );
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
