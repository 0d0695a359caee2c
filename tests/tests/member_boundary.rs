//! The member boundary (issue 25): a member owns every name below a directory it can write, the
//! folders ckptd created there included, and root must not read, delete or signal through any
//! of them. Each attack is a test of its own, with a real member (useradd), a real daemon and a
//! real CRIU. The swaps "at the worst moment" are made deterministic with CRIU's own hook: a
//! `criu_config` whose `action-script` runs, as the member (the member's CRIU runs as the
//! member), the test's plan at `post-dump`: after CRIU wrote every image, before it exits and
//! before ckptd makes the images durable, publishes them and ends the target.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ckptd_tests::members::{proc_, Fixture};
use ckptd_tests::{proc_state, signal, Target};
use serde_json::json;

/// A fixture whose CRIU runs `plan` (a shell script the test writes, run as the member) at
/// post-dump, when `plan` exists.
struct Hooked {
    f: Fixture,
    plan: PathBuf,
    _hooks: tempfile::TempDir,
}

impl Hooked {
    async fn new() -> Hooked {
        Hooked::with("").await
    }

    /// With more lines of configuration.
    async fn with(extra: &str) -> Hooked {
        let hooks = tempfile::tempdir().unwrap();
        std::fs::set_permissions(hooks.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let plan = hooks.path().join("plan.sh");
        let script = hooks.path().join("action.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" = post-dump ] || exit 0\n\
                 [ -f {p} ] || exit 0\nexec sh -e {p}\n",
                p = plan.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = hooks.path().join("criu.conf");
        std::fs::write(&conf, format!("action-script {}\n", script.display())).unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let f =
            Fixture::with_config(&format!("criu_config = \"{}\"\n{extra}", conf.display())).await;
        Hooked {
            f,
            plan,
            _hooks: hooks,
        }
    }

    /// What the member does at post-dump of the next dump. The plan is replaced whole (written aside, then renamed over it): a CRIU reaching post-dump meanwhile
    /// runs the old plan or the new one, never finds none (the script checks that the plan is
    /// there before it runs it: a plan removed in between failed the dump).
    fn at_post_dump(&self, script: &str) {
        let aside = self.plan.with_extension("new");
        std::fs::write(&aside, script).unwrap();
        std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&aside, &self.plan).unwrap();
    }
}

/// A root-only directory holding files, as a victim of a swap.
fn root_only_dir(parent: &Path, name: &str) -> PathBuf {
    let victim = parent.join(name);
    std::fs::create_dir_all(&victim).unwrap();
    for f in ["a.img", "dump.log", "secret"] {
        std::fs::write(victim.join(f), format!("root's {f}\n")).unwrap();
    }
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
    victim
}

fn assert_untouched(victim: &Path) {
    let mut left: Vec<String> = std::fs::read_dir(victim)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["a.img", "dump.log", "secret"],
        "root's files were touched"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("secret")).unwrap(),
        "root's secret\n"
    );
}

/// An answer `status` with body `b` is the refusal `want` whose message says `says`.
fn refused(status: u16, b: &serde_json::Value, want: u16, says: &str) {
    assert_eq!(status, want, "{b}");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{says:?} not in {b}");
}

/// The member checkpoints `pid` as `name` into its own directory, and it is ready.
fn checkpoint_in_mine(f: &Fixture, pid: i32, name: &str, leave_running: bool) {
    let (s, b) = f.alice(
        "POST",
        "/v1/checkpoints?wait=true",
        Some(
            json!({"target": proc_(pid), "name": name, "leave_running": leave_running,
                    "checkpoint_dir": f.mine}),
        ),
    );
    assert_eq!(s, 201, "{b}");
}

/// A process is running (not stopped by a dump, not dead).
fn assert_running(pid: i32, what: &str) {
    let st = proc_state(pid);
    assert!(
        matches!(st, Some('S') | Some('R') | Some('D')),
        "{what} (pid {pid}) is {st:?}, not running"
    );
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb >> 10
}

/// Attack 1 and 9: the member renames its checkpoint's folder away and puts a symlink in its
/// place (to /etc, to a root-only directory). Every read through it (archive, log, processes),
/// by the member and by root, is a 403 that reads nothing; DELETE is a 403 that deletes
/// nothing, and `?forget=true` drops the record leaving the link and its target alone.
#[tokio::test]
async fn a_folder_swapped_for_a_symlink_is_neither_read_nor_deleted() {
    let f = Fixture::new().await;
    let t = f.alice_counter("swapread", "", &[]);
    checkpoint_in_mine(&f, t.pid, "ac1", true);
    let folder = f.mine.join("ac1");
    let victim = root_only_dir(f.dir.path(), "victim");
    for target in [Path::new("/etc"), victim.as_path()] {
        f.sh_as_alice(&format!(
            "if [ -L {d} ]; then rm {d}; else mv {d} {d}.away; fi; ln -s {t} {d}",
            d = folder.display(),
            t = target.display()
        ));
        for path in [
            "/v1/checkpoints/ac1/archive",
            "/v1/checkpoints/ac1/log",
            "/v1/checkpoints/ac1/processes",
        ] {
            let (s, b) = f.alice("GET", path, None);
            assert_eq!(
                s,
                403,
                "alice {path} through a link to {}: {b}",
                target.display()
            );
            assert!(
                b["error"]["message"].as_str().unwrap().contains("symlink"),
                "{b}"
            );
            // Root asking is no different: ckptd does not follow the member's names for root.
            let (root, _) = f.root("GET", path, None);
            assert_eq!(
                root,
                403,
                "root {path} through a link to {}",
                target.display()
            );
        }
        let (s, b) = f.alice("DELETE", "/v1/checkpoints/ac1", None);
        assert_eq!(s, 403, "{b}");
        assert!(
            b["error"]["details"]["hint"]
                .as_str()
                .unwrap()
                .contains("forget=true"),
            "{b}"
        );
        assert_untouched(&victim);
        assert!(Path::new("/etc/hostname").exists());
    }
    // Forgetting drops the record only: the link and what it points to stay.
    let (s, b) = f.alice("DELETE", "/v1/checkpoints/ac1?forget=true", None);
    assert_eq!(s, 204, "{b}");
    let (s, _) = f.alice("GET", "/v1/checkpoints/ac1", None);
    assert_eq!(s, 404);
    assert!(std::fs::symlink_metadata(&folder)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_untouched(&victim);
    signal(t.pid, 9);
}

/// Attack 2: at post-dump the member replaces `<name>.partial` with a symlink to a root-only
/// directory. The images are not published, nothing in root's directory is deleted (neither by
/// the failure's clean-up nor later), the target runs on, and the job says why.
#[tokio::test]
async fn a_partial_folder_swapped_during_the_dump_deletes_nothing_of_roots() {
    let h = Hooked::new().await;
    let f = &h.f;
    let victim = root_only_dir(f.dir.path(), "victim");
    let partial = f.mine.join("ac2.partial");
    for (case, end) in [
        ("the dump goes on", ""),
        ("the dump then fails", "exit 1\n"),
    ] {
        h.at_post_dump(&format!(
            "mv {p} {p}.away\nln -s {v} {p}\n{end}",
            p = partial.display(),
            v = victim.display()
        ));
        let t = f.alice_counter("swappartial", "", &[]);
        let (s, b) = f.alice(
            "POST",
            "/v1/checkpoints?wait=true",
            Some(json!({"target": proc_(t.pid), "name": "ac2", "checkpoint_dir": f.mine})),
        );
        assert!(s == 403 || s == 500, "{case}: {s} {b}");
        let (_, cp) = f.alice("GET", "/v1/checkpoints/ac2", None);
        assert_eq!(cp["status"], "failed", "{case}: {cp}");
        if end.is_empty() {
            assert_eq!(b["error"]["code"], "forbidden", "{case}: {b}");
            assert!(
                b["error"]["message"].as_str().unwrap().contains("replaced"),
                "{case}: {b}"
            );
        }
        assert_untouched(&victim);
        // The target was neither killed nor left stopped.
        ckptd_tests::wait_until("the target runs again", || {
            matches!(proc_state(t.pid), Some('S') | Some('R'))
        });
        assert_running(t.pid, "the member's target");
        // Deleting the failed checkpoint deletes nothing of root's either.
        let (s, b) = f.alice("DELETE", "/v1/checkpoints/ac2?forget=true", None);
        assert_eq!(s, 204, "{b}");
        f.sh_as_alice(&format!(
            "rm -rf {p} {p}.away {m}/ac2 {m}/*-*-*",
            p = partial.display(),
            m = f.mine.display()
        ));
        assert_untouched(&victim);
        signal(t.pid, 9);
    }
}

/// Attack 2 through a cancel: the member swaps `<name>.partial` for a symlink to a root-only
/// directory at post-dump, and the job is cancelled while CRIU still runs: the cancel's clean-up
/// removes nothing of root's, and the target runs on.
#[tokio::test]
async fn a_cancel_after_a_swap_deletes_nothing_of_roots() {
    let h = Hooked::new().await;
    let f = &h.f;
    let victim = root_only_dir(f.dir.path(), "victim");
    let partial = f.mine.join("ac6.partial");
    let swapped = f.mine.join("swapped6");
    h.at_post_dump(&format!(
        "mv {p} {p}.away\nln -s {v} {p}\ntouch {s}\nsleep 30\n",
        p = partial.display(),
        v = victim.display(),
        s = swapped.display()
    ));
    let t = f.alice_counter("cancelled", "", &[]);
    let (s, b) = f.alice(
        "POST",
        "/v1/checkpoints",
        Some(json!({"target": proc_(t.pid), "name": "ac6", "checkpoint_dir": f.mine})),
    );
    assert_eq!(s, 202, "{b}");
    let job = b["job"]["id"].as_str().unwrap().to_owned();
    ckptd_tests::wait_until("the member's swap at post-dump", || swapped.exists());
    let (s, b) = f.alice("POST", &format!("/v1/jobs/{job}/cancel"), None);
    assert_eq!(s, 202, "{b}");
    let (_, b) = f.alice("GET", &format!("/v1/jobs/{job}?wait=60"), None);
    assert_eq!(b["state"], "cancelled", "{b}");
    assert_untouched(&victim);
    ckptd_tests::wait_until("the target runs again", || {
        matches!(proc_state(t.pid), Some('S') | Some('R'))
    });
    signal(t.pid, 9);
}

/// Attack 3: at post-dump, in a dump that stops the target, the member swaps `<name>.partial`
/// for a folder of its own whose forged `pstree.img` names root's process. Nothing is published
/// (the name does not hold the folder CRIU wrote), root's process is not signalled (what a dump
/// stopped is found in the kernel's process table from the target's identity, never in
/// images), and the member's target is resumed.
#[tokio::test]
async fn forged_images_are_neither_published_nor_used_to_kill() {
    let h = Hooked::new().await;
    let f = &h.f;
    let out = f.dir.path().join("roots-sleep.out");
    let mut roots = Target::spawn(&["sleep", "1000"], &out);
    let forged = forged_pstree(f.dir.path(), roots.pid);
    let partial = f.mine.join("ac3.partial");
    h.at_post_dump(&format!(
        "mv {p} {p}.away\nmkdir {p}\ncp {forged} {p}/pstree.img\n",
        p = partial.display(),
        forged = forged.display()
    ));
    let t = f.alice_counter("forged", "", &[]);
    let (s, b) = f.alice(
        "POST",
        "/v1/checkpoints?wait=true",
        Some(json!({"target": proc_(t.pid), "name": "ac3", "checkpoint_dir": f.mine})),
    );
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["code"], "forbidden", "{b}");
    let (_, cp) = f.alice("GET", "/v1/checkpoints/ac3", None);
    assert_eq!(cp["status"], "failed", "{cp}");
    assert_ne!(cp["size_bytes"], 26, "{cp}");
    assert_running(roots.pid, "root's process named by the forged image");
    ckptd_tests::wait_until("the member's target runs again", || {
        matches!(proc_state(t.pid), Some('S') | Some('R'))
    });
    // And it carries on writing.
    let before = t.lines().len();
    ckptd_tests::wait_until("the target writes on", || t.lines().len() > before + 2);
    signal(t.pid, 9);
    signal(roots.pid, 9);
    roots.reap();
}

/// Attack 3 with a kill -9 at the worst moment: at post-dump the member swaps in a folder with
/// a forged `pstree.img` (naming root's process) and a log that says the dump finished, and the
/// daemon is killed while CRIU still runs. The restarted daemon publishes nothing from a folder
/// the member could change, signals nothing the images name, and lets the target run on.
#[tokio::test]
async fn a_restart_after_a_kill_publishes_nothing_the_member_swapped_in() {
    let mut h = Hooked::new().await;
    let out = h.f.dir.path().join("roots-sleep2.out");
    let mut roots = Target::spawn(&["sleep", "1000"], &out);
    let forged = forged_pstree(h.f.dir.path(), roots.pid);
    let partial = h.f.mine.join("ac5.partial");
    let swapped = h.f.mine.join("swapped");
    h.at_post_dump(&format!(
        "mv {p} {p}.away\nmkdir {p}\ncp {forged} {p}/pstree.img\n\
         echo 'Dumping finished successfully' > {p}/dump.log\ntouch {s}\nsleep 4\n",
        p = partial.display(),
        forged = forged.display(),
        s = swapped.display()
    ));
    let t = h.f.alice_counter("killed", "", &[]);
    let (s, b) = h.f.alice(
        "POST",
        "/v1/checkpoints",
        Some(json!({"target": proc_(t.pid), "name": "ac5", "checkpoint_dir": h.f.mine})),
    );
    assert_eq!(s, 202, "{b}");
    ckptd_tests::wait_until("the member's swap at post-dump", || swapped.exists());
    h.f.d.kill_and_forget();
    h.f.d.restart_after_stop().await;
    let (_, cp) = h.f.alice("GET", "/v1/checkpoints/ac5", None);
    assert_eq!(cp["status"], "failed", "{cp}");
    assert!(
        cp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not trusted"),
        "{cp}"
    );
    assert_running(roots.pid, "root's process named by the forged image");
    ckptd_tests::wait_until("the member's target runs again", || {
        matches!(proc_state(t.pid), Some('S') | Some('R'))
    });
    signal(t.pid, 9);
    signal(roots.pid, 9);
    roots.reap();
}

/// A pstree.img of one entry naming `pid`: 8 bytes of magic, then a 4-byte size and the
/// PstreeEntry (field 1, pid, a varint); readable by the member.
fn forged_pstree(dir: &Path, pid: i32) -> PathBuf {
    let forged = dir.join(format!("forged-{pid}.img"));
    let mut entry = vec![0x08u8];
    let mut v = pid as u32;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            entry.push(b);
            break;
        }
        entry.push(b | 0x80);
    }
    let mut img = vec![0u8; 8];
    img.extend_from_slice(&(entry.len() as u32).to_le_bytes());
    img.extend_from_slice(&entry);
    std::fs::write(&forged, &img).unwrap();
    std::fs::set_permissions(&forged, std::fs::Permissions::from_mode(0o644)).unwrap();
    forged
}

/// Attack 3's other half: a dump whose tree forked a child keeps knowing it from the kernel:
/// without a swap, the checkpoint is ready and every task of the tree, and nothing else, ends.
#[tokio::test]
async fn release_ends_exactly_the_tree_the_dump_stopped() {
    let f = Fixture::new().await;
    let out = f.dir.path().join("bystander.out");
    let mut bystander = Target::spawn(&["sleep", "1000"], &out);
    let t = f.alice_counter(
        "parent",
        "import subprocess\nchild = subprocess.Popen(['sleep', '1000'])",
        &[],
    );
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", t.pid)).unwrap();
    let child: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    checkpoint_in_mine(&f, t.pid, "tree", false);
    for pid in [t.pid, child] {
        ckptd_tests::wait_until("the dumped tree ends", || {
            proc_state(pid).is_none_or(|s| s == 'Z')
        });
    }
    assert_running(bystander.pid, "a process outside the tree");
    signal(bystander.pid, 9);
    bystander.reap();
}

/// Attack 4: a member's files are read bounded or streamed. A 3 GiB sparse `dump.log` gives the
/// log's tail, marked as cut; a 640 MiB sparse image with a name over 99 characters is exported
/// without being held in memory (which took the daemon past 640 MiB before).
#[tokio::test]
async fn a_members_huge_files_are_read_bounded() {
    let f = Fixture::new().await;
    let t = f.alice_counter("bounded", "", &[]);
    checkpoint_in_mine(&f, t.pid, "ac4", true);
    signal(t.pid, 9);
    let folder = f.mine.join("ac4");
    f.sh_as_alice(&format!(
        "echo '(00.1) the last line' >> {d}/dump.log && truncate -s 3G {d}/dump.log && \
         echo '(00.2) really the last line' >> {d}/dump.log && truncate -s 640M {d}/{long}",
        d = folder.display(),
        long = "x".repeat(120)
    ));
    let pid = f.d.pid();
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&f.d.socket)
        .arg("http://ckptd/v1/checkpoints/ac4/log")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n200"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    assert!(text.contains("earlier lines left out"), "no cut marker");
    assert!(text.contains("really the last line"));
    assert!(text.len() < 8 << 20, "{} bytes of log", text.len());
    let rss = peak_rss_mib(pid);
    assert!(rss < 300, "reading the log took the daemon to {rss} MiB");
    // The archive streams the long-named file.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "--unix-socket",
        ])
        .arg(&f.d.socket)
        .arg("http://ckptd/v1/checkpoints/ac4/archive?compression=zstd")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.starts_with("200 "), "{said}");
    let rss = peak_rss_mib(pid);
    assert!(rss < 300, "exporting took the daemon to {rss} MiB");
}

/// Attack 7: callers cannot crowd each other out. A member may not take the names a root
/// schedule's runs will use; its jobs, checkpoints and schedules are limited; its jobs never take
/// the queue slots root keeps; and its /metrics shows nothing of root's schedules or directories.
#[tokio::test]
async fn members_cannot_crowd_out_root_or_each_other() {
    let h = Hooked::with(
        "workers = 1\nqueue_capacity = 4\nroot_reserved_queue_slots = 2\nmember_max_jobs = 2\n\
         member_max_checkpoints = 4\nmember_max_schedules = 1\n",
    )
    .await;
    let f = &h.f;
    let root_dir = f.dir.path().join("roots-checkpoints");
    std::fs::create_dir(&root_dir).unwrap();
    let roots = Target::python(f.d.dir.path(), "roots", 0, false);
    let (s, b) = f.root(
        "POST",
        "/v1/schedules",
        Some(
            json!({"name": "rootsched", "target": proc_(roots.pid), "cron": "0 0 1 1 *",
               "options": {"leave_running": true, "checkpoint_dir": root_dir}}),
        ),
    );
    assert_eq!(s, 201, "{b}");
    // The names of root's runs are not the member's to take.
    let t1 = f.alice_counter("crowd1", "", &[]);
    for name in ["rootsched-20261205T093000Z", "rootsched-20261205T093000Z-2"] {
        let (s, b) = f.alice(
            "POST",
            "/v1/checkpoints",
            Some(json!({"target": proc_(t1.pid), "name": name, "leave_running": true})),
        );
        refused(s, &b, 403, "kept for the runs of schedule");
    }
    let (s, b) = f.root("POST", "/v1/schedules/rootsched/run?wait=true", None);
    assert_eq!(s, 201, "root's run: {b}");

    // One schedule each.
    let (s, b) = f.alice(
        "POST",
        "/v1/schedules",
        Some(
            json!({"name": "mine1", "target": proc_(t1.pid), "cron": "0 0 1 1 *",
                    "options": {"leave_running": true}}),
        ),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = f.alice(
        "POST",
        "/v1/schedules",
        Some(json!({"name": "mine2", "target": proc_(t1.pid), "cron": "0 0 1 1 *"})),
    );
    refused(s, &b, 403, "member_max_schedules");

    // Two jobs at once: the first holds the only worker (its CRIU waits at post-dump), the
    // second waits for it; a third is refused, and root's own job still finds a slot.
    h.at_post_dump("sleep 3\n");
    let t2 = f.alice_counter("crowd2", "", &[]);
    let t3 = f.alice_counter("crowd3", "", &[]);
    let mut jobs = Vec::new();
    for t in [&t1, &t2] {
        let (s, b) = f.alice(
            "POST",
            "/v1/checkpoints",
            Some(json!({"target": proc_(t.pid), "leave_running": true})),
        );
        assert_eq!(s, 202, "{b}");
        jobs.push(b["job"]["id"].as_str().unwrap().to_owned());
    }
    let (s, b) = f.alice(
        "POST",
        "/v1/checkpoints",
        Some(json!({"target": proc_(t3.pid), "leave_running": true})),
    );
    refused(s, &b, 429, "member_max_jobs");
    let (s, b) = f.root(
        "POST",
        "/v1/checkpoints",
        Some(json!({"target": proc_(roots.pid), "leave_running": true})),
    );
    assert_eq!(s, 202, "root is not crowded out: {b}");
    h.at_post_dump("");
    for id in &jobs {
        let (_, b) = f.alice("GET", &format!("/v1/jobs/{id}?wait=60"), None);
        assert_eq!(b["state"], "succeeded", "{b}");
    }
    // Four checkpoints each: two made above, two more, then no more.
    for (i, t) in [&t1, &t2].iter().enumerate() {
        let (s, b) = f.alice(
            "POST",
            "/v1/checkpoints?wait=true",
            Some(
                json!({"target": proc_(t.pid), "name": format!("more{i}"), "leave_running": true}),
            ),
        );
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = f.alice(
        "POST",
        "/v1/checkpoints",
        Some(json!({"target": proc_(t3.pid), "leave_running": true})),
    );
    refused(s, &b, 403, "member_max_checkpoints");

    // The member's metrics show its own schedule, not root's, nor root's directory.
    let metrics = |as_alice: bool| {
        let mut cmd = std::process::Command::new("setpriv");
        if as_alice {
            cmd.args([
                "--reuid",
                &f.alice_uid.to_string(),
                "--regid",
                &f.alice_gid.to_string(),
                "--init-groups",
            ]);
        }
        let out = cmd
            .args(["curl", "-s", "--unix-socket"])
            .arg(&f.d.socket)
            .arg("http://ckptd/metrics")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let hers = metrics(true);
    assert!(hers.contains("schedule=\"mine1\""), "{hers}");
    assert!(!hers.contains("rootsched"), "alice sees root's schedule");
    assert!(
        !hers.contains(root_dir.to_str().unwrap()),
        "alice sees root's checkpoint_dir"
    );
    let roots_view = metrics(false);
    assert!(roots_view.contains("rootsched") && roots_view.contains("mine1"));
    for t in [t1, t2, t3, roots] {
        signal(t.pid, 9);
    }
}
