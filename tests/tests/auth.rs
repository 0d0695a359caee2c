//! Who may do what, with real users the test creates (useradd) and real peer credentials:
//! clients and targets run under `setpriv` as those users. Each attack a socket-group member
//! could try is a scenario of its own, so each failure names itself.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use ckptd_tests::members::{chown, curl_as, proc_, Fixture};
use ckptd_tests::{alive, Target};
use serde_json::{json, Value};

/// What, method, path, body, expected status, expected words in the message.
type Case = (
    &'static str,
    &'static str,
    String,
    Option<Value>,
    u16,
    &'static str,
);

/// One at a time: the connection flood measures how fast root is answered, and every test makes
/// real users and a daemon of its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Who may do what.
#[tokio::test]
async fn who_may_do_what() {
    let _one = ONE_AT_A_TIME.lock().await;
    matrix(&Fixture::new().await).await;
}

/// A member checkpoints and restores its own process, CRIU running as the member.
#[tokio::test]
async fn a_member_checkpoints_and_restores_its_own_process_as_itself() {
    let _one = ONE_AT_A_TIME.lock().await;
    member_round_trip(&Fixture::new().await).await;
}

/// A checkpoint_dir re-pointed through a symlink after the checkpoint leads nowhere.
#[tokio::test]
async fn a_checkpoint_dir_re_pointed_through_a_symlink_leads_nowhere() {
    let _one = ONE_AT_A_TIME.lock().await;
    repointed_checkpoint_dir(&Fixture::new().await).await;
}

/// A file of the process swapped for a symlink to a root-only file is not opened.
#[tokio::test]
async fn a_file_swapped_for_a_symlink_to_a_root_only_file_is_not_opened() {
    let _one = ONE_AT_A_TIME.lock().await;
    swapped_file_is_not_opened(&Fixture::new().await).await;
}

/// A process holding a group the member is not in is not the member's.
#[tokio::test]
async fn a_process_holding_a_group_the_member_is_not_in_is_not_its() {
    let _one = ONE_AT_A_TIME.lock().await;
    foreign_group(&Fixture::new().await).await;
}

/// A member's connection flood leaves root's health answering.
#[tokio::test]
async fn a_member_s_connection_flood_leaves_root_answered() {
    let _one = ONE_AT_A_TIME.lock().await;
    connection_flood(&Fixture::new().await).await;
}

async fn matrix(f: &Fixture) {
    let d = &f.d;
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(md.mode() & 0o777, 0o660);
    let group_gid = {
        let o = Command::new("getent")
            .args(["group", &f.acc.group])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split(':')
            .nth(2)
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(md.gid(), group_gid);

    // Outside the group: cannot connect at all.
    assert!(
        curl_as(d, &f.acc, &f.bob, "GET", "/v1/health", None).is_none(),
        "a non-member connected"
    );

    let alice_proc = f.alice_counter("matrix", "", &[]);
    let root_proc = Target::python(d.dir.path(), "rootproc", 0, false);
    d.client
        .send_json(
            hyper::Method::POST,
            "/v1/checkpoints?wait=true",
            &json!({"target": proc_(root_proc.pid), "name": "roots", "leave_running": true}),
        )
        .await
        .unwrap();
    // Inside the allowed dirs, but root's; and a symlink of alice's to her own directory.
    let roots_dir = f.allowed.join("roots-dir");
    std::fs::create_dir(&roots_dir).unwrap();
    let link = f.allowed.join(format!("{}-link", f.alice));
    f.sh_as_alice(&format!("ln -s {} {}", f.mine.display(), link.display()));
    std::fs::create_dir_all(f.mine.join("sub")).unwrap();
    chown(&f.mine.join("sub"), f.alice_uid, f.alice_gid);

    let post = |b: Value| Some(b);
    let cases: Vec<Case> = vec![
        (
            "own process",
            "POST",
            "/v1/checkpoints?wait=true".into(),
            post(json!({"target": proc_(alice_proc.pid), "name": "alices", "leave_running": true})),
            201,
            "",
        ),
        (
            "root's process",
            "POST",
            "/v1/checkpoints".into(),
            post(json!({"target": proc_(root_proc.pid)})),
            403,
            "runs as uid 0",
        ),
        (
            "pid 1",
            "POST",
            "/v1/checkpoints".into(),
            post(json!({"target": proc_(1)})),
            403,
            "runs as uid 0",
        ),
        (
            "an import",
            "POST",
            "/v1/checkpoints/import".into(),
            post(json!({})),
            403,
            "only root brings images into ckptd",
        ),
        (
            "an adoption",
            "POST",
            "/v1/checkpoints/adopt".into(),
            post(json!({"dir": "/tmp"})),
            403,
            "only root brings images into ckptd",
        ),
        (
            "a container",
            "POST",
            "/v1/checkpoints".into(),
            post(json!({"target": {"kind": "container", "id": "x"}})),
            403,
            "containers are root's",
        ),
        (
            "checkpoint_dir elsewhere",
            "POST",
            "/v1/checkpoints".into(),
            post(
                json!({"target": proc_(alice_proc.pid), "checkpoint_dir": f.dir.path().join("elsewhere")}),
            ),
            403,
            "allowed_dirs",
        ),
        (
            // Refused before anything is looked at: the same answer whether it exists or not.
            "checkpoint_dir under /root, not looked at",
            "POST",
            "/v1/checkpoints".into(),
            post(
                json!({"target": proc_(alice_proc.pid), "checkpoint_dir": "/root/surely-not-there"}),
            ),
            403,
            "may not write checkpoints to /root/surely-not-there: non-root callers",
        ),
        (
            "checkpoint_dir allowed but root's",
            "POST",
            "/v1/checkpoints".into(),
            post(json!({"target": proc_(alice_proc.pid), "checkpoint_dir": roots_dir})),
            403,
            "belongs to uid 0",
        ),
        (
            "checkpoint_dir through her symlink, with a trailing /.",
            "POST",
            "/v1/checkpoints".into(),
            post(
                json!({"target": proc_(alice_proc.pid), "checkpoint_dir": format!("{}/.", link.display())}),
            ),
            422,
            "symlink",
        ),
        (
            "checkpoint_dir below her symlink",
            "POST",
            "/v1/checkpoints".into(),
            post(json!({"target": proc_(alice_proc.pid), "checkpoint_dir": link.join("sub")})),
            422,
            "reached through a symlink",
        ),
        (
            "checkpoint_dir her own",
            "POST",
            "/v1/checkpoints?wait=true".into(),
            post(
                json!({"target": proc_(alice_proc.pid), "name": "alices2", "leave_running": true, "checkpoint_dir": f.mine}),
            ),
            201,
            "",
        ),
        (
            "see root's",
            "GET",
            "/v1/checkpoints/roots".into(),
            None,
            404,
            "no checkpoint",
        ),
        (
            "delete root's",
            "DELETE",
            "/v1/checkpoints/roots".into(),
            None,
            404,
            "no checkpoint",
        ),
        (
            "restore root's",
            "POST",
            "/v1/checkpoints/roots/restore".into(),
            None,
            404,
            "no checkpoint",
        ),
        (
            "root's log",
            "GET",
            "/v1/checkpoints/roots/log".into(),
            None,
            404,
            "no checkpoint",
        ),
    ];
    let mut failures = Vec::new();
    for (what, m, path, body, status, has) in cases {
        let got = curl_as(d, &f.acc, &f.alice, m, &path, body);
        let ok = got.as_ref().is_some_and(|(s, b)| {
            *s == status
                && (has.is_empty()
                    || b["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(has)))
        });
        if !ok {
            failures.push(format!("{what}: {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The dump in her own directory is hers, written by a CRIU running as her.
    let img = f.mine.join("alices2");
    assert_eq!(std::fs::metadata(&img).unwrap().uid(), f.alice_uid);
    assert_eq!(
        std::fs::metadata(img.join("pstree.img")).unwrap().uid(),
        f.alice_uid
    );

    // Alice lists only her own; root sees everyone's.
    let (_, list) = f.alice("GET", "/v1/checkpoints", None);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alices2", "alices"]);
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["owner_uid"] == f.alice_uid));
    let (_, jobs) = f.alice("GET", "/v1/jobs", None);
    let jobs = jobs["items"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter().all(|j| j["owner_uid"] == f.alice_uid),
        "{jobs:?}"
    );
    assert!(
        d.client.checkpoint("roots").await.is_ok(),
        "root's checkpoint was deleted by alice"
    );
    // Alice may delete her own.
    let (s, _) = f.alice("DELETE", "/v1/checkpoints/alices2", None);
    assert_eq!(s, 204);
    assert!(!img.exists());
    for n in ["alices", "roots"] {
        d.client.delete_checkpoint(n).await.unwrap();
    }
}

/// Alice checkpoints her own counter (it stops), restores it, and it carries on as her from the
/// next number: on this host a root CRIU could do neither (it cannot read her rlimits).
async fn member_round_trip(f: &Fixture) {
    let mut t = f.alice_counter("roundtrip", "", &[]);
    let (s, b) = f.alice(
        "POST",
        "/v1/checkpoints?wait=true",
        Some(json!({"target": proc_(t.pid), "name": "alices3"})),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["checkpoint"]["status"], "ready", "{b}");
    t.reap();
    let stopped = t.lines().len();
    let (s, b) = f.alice("POST", "/v1/checkpoints/alices3/restore?wait=true", None);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["job"]["state"], "succeeded", "{b}");
    assert!(alive(t.pid));
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid)).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&f.alice_uid.to_string())),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("CapEff:") && l.ends_with("0000000000000000")),
        "the restored process holds capabilities: {status}"
    );
    ckptd_tests::wait_until("the restored counter writes on", || {
        t.lines().len() > stopped + 5
    });
    t.assert_contiguous();
    ckptd_tests::signal(t.pid, 9);
    f.d.client.delete_checkpoint("alices3").await.unwrap();
}

/// The attack of the least-privilege issue: alice checkpoints into her own directory, then
/// re-points its path at a root-only directory through a symlink. Deleting, restoring, exporting
/// or reading the logs of that checkpoint must touch nothing there.
async fn repointed_checkpoint_dir(f: &Fixture) {
    let t = f.alice_counter("repoint", "", &[]);
    let hers = f.allowed.join(format!("{}-swap", f.alice));
    std::fs::create_dir(&hers).unwrap();
    chown(&hers, f.alice_uid, f.alice_gid);
    let (s, b) = f.alice(
        "POST",
        "/v1/checkpoints?wait=true",
        Some(json!({"target": proc_(t.pid), "name": "swapme", "leave_running": true, "checkpoint_dir": hers})),
    );
    assert_eq!(s, 201, "{b}");
    // A root-only directory with an entry of the checkpoint's name.
    let root_only = f.dir.path().join("root-only");
    std::fs::create_dir_all(root_only.join("swapme")).unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(root_only.join("swapme/dump.log"), b"root's secret\n").unwrap();
    f.sh_as_alice(&format!(
        "mv {h} {h}.old && ln -s {r} {h}",
        h = hers.display(),
        r = root_only.display()
    ));

    let (s, b) = f.alice("DELETE", "/v1/checkpoints/swapme", None);
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("symlink"),
        "{b}"
    );
    assert!(
        root_only.join("swapme/dump.log").exists(),
        "root's file was removed"
    );
    let (s, b) = f.alice("GET", "/v1/checkpoints/swapme/log", None);
    assert_eq!(s, 403, "{b}");
    let (s, b) = f.alice("GET", "/v1/checkpoints/swapme/archive", None);
    assert_eq!(s, 403, "{b}");
    let (_, b) = f.alice("POST", "/v1/checkpoints/swapme/restore?wait=true", None);
    assert_eq!(b["error"]["code"], "forbidden", "{b}");
    let left: Vec<_> = std::fs::read_dir(root_only.join("swapme"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["dump.log"],
        "something was written into root's directory"
    );
    assert_eq!(
        std::fs::read(root_only.join("swapme/dump.log")).unwrap(),
        b"root's secret\n"
    );
    // Put back, the checkpoint is whole again and goes with its directory.
    f.sh_as_alice(&format!("rm {h} && mv {h}.old {h}", h = hers.display()));
    let (s, b) = f.alice("DELETE", "/v1/checkpoints/swapme", None);
    assert_eq!(s, 204, "{b}");
    assert!(!hers.join("swapme").exists());
    ckptd_tests::signal(t.pid, 9);
}

/// Alice's process holds a file of hers open; after the checkpoint she swaps that file for a
/// symlink to a root-only file of the same size. The restore's CRIU runs as alice, so it cannot
/// open root's file: the restore fails, saying why, and no process holds that file.
async fn swapped_file_is_not_opened(f: &Fixture) {
    let data = f.mine.join("data.txt");
    std::fs::write(&data, b"0123456789").unwrap();
    chown(&data, f.alice_uid, f.alice_gid);
    let secret_dir = f.dir.path().join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::set_permissions(&secret_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = secret_dir.join("key");
    std::fs::write(&secret, b"SECRET-KEY").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut t = f.alice_counter(
        "holder",
        &format!("held = open({:?}, 'r+')", data.display().to_string()),
        &[],
    );
    let (s, b) = f.alice(
        "POST",
        "/v1/checkpoints?wait=true",
        Some(json!({"target": proc_(t.pid), "name": "holder"})),
    );
    assert_eq!(s, 201, "{b}");
    t.reap();
    f.sh_as_alice(&format!(
        "rm {d} && ln -s {s} {d}",
        d = data.display(),
        s = secret.display()
    ));
    let (s, b) = f.alice("POST", "/v1/checkpoints/holder/restore?wait=true", None);
    assert_eq!(s, 500, "{b}");
    let e = &b["error"];
    assert_eq!(e["code"], "criu_failed", "{b}");
    let said = e["message"].as_str().unwrap();
    assert!(
        said.contains("data.txt") && said.contains("Permission denied"),
        "{b}"
    );
    // The log it names is where alice knows it, not behind a descriptor ckptd held.
    for path in [&e["details"]["log"], &e["details"]["advice"]["path"]] {
        assert!(
            path.as_str()
                .is_some_and(|p| p.starts_with(f.d.dir.path().to_str().unwrap())),
            "{b}"
        );
    }
    // No process anywhere holds root's file.
    let holders: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read_dir(p.path().join("fd")).ok())
        .flat_map(|fds| fds.flatten())
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == secret))
        .map(|fd| fd.path().display().to_string())
        .collect();
    assert!(holders.is_empty(), "root's file is held open: {holders:?}");
    f.d.client.delete_checkpoint("holder").await.unwrap();
}

async fn foreign_group(f: &Fixture) {
    // Alice's uid, but running with root's group 0, as a setgid program's process would.
    let t = f.alice_counter("setgid", "", &["--groups", "0"]);
    let (s, b) = f.alice(
        "POST",
        "/v1/checkpoints",
        Some(json!({"target": proc_(t.pid)})),
    );
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("group 0"),
        "{b}"
    );
    ckptd_tests::signal(t.pid, 9);
}

/// Alice opens 3,000 connections to the socket and holds them without a request: she keeps at
/// most her per-uid share, the daemon's descriptors stay bounded, and root's health checks
/// answer within 100 ms throughout.
async fn connection_flood(f: &Fixture) {
    let script = format!(
        "import socket, time\nheld = []\nfor i in range(3000):\n    s = socket.socket(socket.AF_UNIX)\n    \
         try:\n        s.connect({:?}); held.append(s)\n    except OSError:\n        pass\n\
         print(len(held), flush=True)\ntime.sleep(60)\n",
        f.d.socket.display().to_string()
    );
    let out = f.d.dir.path().join("flood.out");
    std::fs::File::create(&out).unwrap();
    let uid = f.alice_uid.to_string();
    let gid = f.alice_gid.to_string();
    let flood = Target::spawn(
        &[
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &gid,
            "--init-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ],
        &out,
    );
    f.d.assert_survives_flood(&flood).await;
    ckptd_tests::signal(flood.pid, 9);
}
