//! Live migration between two daemons (issue 29): the destination daemon runs in a pid
//! namespace of the test's own (another host's pids), both talk over the destination's
//! authenticated TCP listener, with real CRIU and real processes. Faults: the link cut by a
//! relay the test kills, the destination daemon killed, the source daemon killed, each mid-
//! transfer: the workload is then alive and whole on exactly one side, or in a durable
//! checkpoint, and nothing is left frozen or half-populated.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ckptd_api as api;
use ckptd_tests::*;

/// A Python process holding `mib` MiB in which every page carries its own number, the whole
/// summed at start; it counts on its stdout and, whenever `<out>.check` appears, sums its memory
/// again and prints `check ok` or `check BAD` (a page lost or misplaced in transit).
fn marked(dir: &Path, name: &str, mib: usize) -> Target {
    let out = dir.join(format!("{name}.out"));
    let script = format!(
        r#"
import hashlib, os, time
mem = bytearray(os.urandom(4096)) * ({mib} * 256)
for p in range({mib} * 256):
    mem[p * 4096:p * 4096 + 8] = p.to_bytes(8, "little")
want = hashlib.sha256(mem).hexdigest()
trigger = "{out}.check"
i = 0
while True:
    print(i, flush=True)
    i += 1
    if os.path.exists(trigger):
        os.unlink(trigger)
        print("check", "ok" if hashlib.sha256(mem).hexdigest() == want else "BAD", flush=True)
    time.sleep(0.05)
"#,
        out = out.display()
    );
    let t = Target::spawn(&["python3", "-c", &script], &out);
    t.wait_for_lines(2);
    t
}

/// Asks the marked process (wherever it runs now) to check its memory; its answer.
fn check_memory(t: &Target) -> String {
    let before = t.lines().iter().filter(|l| l.starts_with("check")).count();
    std::fs::write(format!("{}.check", t.out.display()), "").unwrap();
    let mut answer = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while answer.is_empty() {
        assert!(Instant::now() < deadline, "no memory check answered");
        let checks: Vec<String> = t
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("check"))
            .collect();
        if checks.len() > before {
            answer = checks[before].clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    answer
}

/// The counter's numbers, each once and in order, with no gap: the process did not run twice
/// and lost nothing.
fn assert_counts_once(t: &Target) -> usize {
    let nums: Vec<u64> = t
        .lines()
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for (i, n) in nums.iter().enumerate() {
        assert_eq!(*n, i as u64, "count out of order at line {i}: {nums:?}");
    }
    nums.len()
}

fn token_file(dir: &Path) -> PathBuf {
    let f = dir.join("token");
    std::fs::write(&f, "live-migration-token-0123456789\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

/// The destination host: a daemon in a pid namespace of its own, with a TCP listener taking
/// the token in `token`.
async fn destination(token: &Path) -> (PidNamespace, Daemon) {
    let ns = PidNamespace::start();
    let b = Daemon::start_in(
        &ns,
        &[
            "--tcp-listen",
            "127.0.0.1:0",
            "--tcp-token-file",
            token.to_str().unwrap(),
        ],
    )
    .await;
    (ns, b)
}

/// Two hosts: `a` here, `b` in its own pid namespace with a TCP listener.
async fn hosts(dir: &Path) -> (Daemon, PidNamespace, Daemon, PathBuf) {
    let token = token_file(dir);
    let a = Daemon::start().await;
    let (ns, b) = destination(&token).await;
    (a, ns, b, token)
}

fn migration(pid: i32, to: &str) -> api::CreateMigration {
    api::CreateMigration {
        target: Some(api::Target::Process { pid }),
        to: to.into(),
        token: "live-migration-token-0123456789".into(),
        ..Default::default()
    }
}

fn gone(pid: i32) -> bool {
    proc_state(pid).is_none_or(|s| s == 'Z')
}

fn wait_gone(what: &str, pid: i32) {
    wait_until(what, || gone(pid));
}

async fn jobs_of(d: &Daemon, kind: api::JobKind) -> Vec<api::Job> {
    d.client
        .jobs(&api::query::JobQuery {
            kind: Some(kind),
            ..Default::default()
        })
        .await
        .unwrap()
        .items
}

/// The marked processes left in the destination's pid namespace.
fn marked_in(ns: &PidNamespace) -> Vec<i32> {
    ns.outer_pids()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("os.urandom"))
                && !gone(*p)
        })
        .collect()
}

fn report(job: &api::Job) -> api::MigrationReport {
    job.result
        .as_ref()
        .and_then(|r| r.migration.clone())
        .or_else(|| {
            job.error
                .as_ref()
                .and_then(|e| e.details.get("migration"))
                .and_then(|m| serde_json::from_value(m.clone()).ok())
        })
        .unwrap_or_else(|| panic!("no migration report on {job:?}"))
}

#[tokio::test]
async fn ckpt_migrate_live_moves_a_running_process_and_its_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ns, b, token) = hosts(dir.path()).await;
    let t = marked(a.dir.path(), "marked", 64);
    t.wait_for_lines(5);
    let out = a.ckpt(&[
        "migrate",
        &t.pid.to_string(),
        "--live",
        "--to",
        &b.tcp_addr(),
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.log(),
        b.log()
    );
    assert!(
        said.contains("moved to") && said.contains("downtime"),
        "{said}"
    );
    // The source is gone; the destination's copy counts on where the source stopped.
    wait_gone("the source", t.pid);
    let at = t.lines().len();
    t.wait_for_lines(at + 10);
    assert_eq!(check_memory(&t), "check ok");
    assert_counts_once(&t);

    let out_job = jobs_of(&a, api::JobKind::Migrate).await.remove(0);
    assert_eq!(out_job.state, api::JobState::Succeeded, "{out_job:?}");
    let r = report(&out_job);
    assert_eq!(r.outcome, api::MigrationOutcome::Migrated);
    let dest = r.destination_pid.expect("the destination's pid");
    let outer = ns
        .outer_pid(dest)
        .expect("the moved process on the destination");
    assert!(!gone(outer));
    assert!(
        r.downtime_ms.is_some() && r.total_ms >= r.downtime_ms,
        "{r:?}"
    );
    assert!(r.page_bytes >= 64 << 20, "{r:?}");
    assert!(r.image_bytes > 0 && r.page_requests > 0, "{r:?}");
    assert!(r.peer_job.is_some());
    let in_job = jobs_of(&b, api::JobKind::Receive).await.remove(0);
    assert_eq!(in_job.state, api::JobState::Succeeded, "{in_job:?}");
    assert_eq!(Some(in_job.id), r.peer_job);
    assert_eq!(report(&in_job).destination_pid, Some(dest));
    // Neither side keeps a checkpoint of it: the rows only held the images in transit.
    for d in [&a, &b] {
        let list = d
            .client
            .list_checkpoints(&api::query::CheckpointQuery::default())
            .await
            .unwrap();
        assert!(list.items.is_empty(), "{:?}", list.items);
    }
    let metrics = a.client.get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains(r#"ckptd_migrations_total{direction="out",outcome="migrated"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("ckptd_migration_downtime_seconds_count 1"));
}

#[tokio::test]
async fn a_gibibyte_moves_live_with_every_page_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ns, b, _token) = hosts(dir.path()).await;
    let t = marked(a.dir.path(), "big", 1024);
    let job = a
        .client
        .migrate_live(&migration(t.pid, &b.tcp_addr()), true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", a.log(), b.log()));
    assert_eq!(job.state, api::JobState::Succeeded);
    let r = report(&job);
    wait_gone("the source", t.pid);
    assert!(ns.outer_pid(r.destination_pid.unwrap()).is_some());
    assert!(r.page_bytes >= 1 << 30, "{r:?}");
    assert_eq!(check_memory(&t), "check ok");
    assert_counts_once(&t);
}

/// A TCP relay between the two daemons that the test can cut: it forwards both ways and dies
/// (closing both sides) once `cut_after` bytes went from the source to the destination.
struct Relay {
    child: Child,
    addr: String,
}

impl Relay {
    fn start(to: &str, cut_after: u64) -> Relay {
        let (host, port) = to.rsplit_once(':').unwrap();
        let script = format!(
            r#"
import os, socket, sys, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(8)
print(srv.getsockname()[1], flush=True)
sent = [0]
def pump(a, b, count):
    while True:
        d = a.recv(1 << 16)
        if not d:
            b.shutdown(socket.SHUT_WR); return
        b.sendall(d)
        if count:
            sent[0] += len(d)
            if sent[0] > {cut_after}:
                os._exit(0)
while True:
    c, _ = srv.accept()
    d = socket.create_connection(("{host}", {port}))
    threading.Thread(target=pump, args=(c, d, True), daemon=True).start()
    threading.Thread(target=pump, args=(d, c, False), daemon=True).start()
"#
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        Relay {
            child,
            addr: format!("127.0.0.1:{}", line.trim()),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// After a fault: the destination's copy is gone, and the workload is either running on the
/// source again or in a ready checkpoint there (then restored here to show it is whole).
/// The counter's numbers after a fallback: in order and without a gap, except for one step
/// back to where the source was frozen, if the destination's copy ran ahead before it was ended
/// (what it did is not undone; the workload carries on from the source's state).
fn assert_counts_resumed(t: &Target) {
    let nums: Vec<u64> = t
        .lines()
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut rewinds = 0;
    for w in nums.windows(2) {
        if w[1] != w[0] + 1 {
            rewinds += 1;
            assert!(w[1] <= w[0], "a gap in the count: {nums:?}");
        }
    }
    assert!(
        rewinds <= 1,
        "the count went back {rewinds} times: {nums:?}"
    );
    assert_eq!(nums.first(), Some(&0));
}

async fn assert_whole_on_one_side(a: &Daemon, ns: &PidNamespace, t: &mut Target, job: &api::Job) {
    assert_eq!(job.state, api::JobState::Failed, "{job:?}");
    let r = report(job);
    eprintln!("after the fault: {job:?}");
    wait_until("the destination's half-made copy to be ended", || {
        marked_in(ns).is_empty()
    });
    match r.outcome {
        api::MigrationOutcome::Resumed => {
            assert!(r.checkpoint.is_none());
            let at = t.lines().len();
            t.wait_for_lines(at + 5);
            assert_eq!(proc_state(t.pid).map(|s| s != 'T' && s != 'Z'), Some(true));
        }
        api::MigrationOutcome::Checkpointed => {
            wait_gone("the source, once checkpointed", t.pid);
            // Its pid must be free for the restore in place: reap our child.
            t.reap();
            let name = r.checkpoint.clone().expect("the checkpoint's name");
            let cp = a.client.checkpoint(&name).await.unwrap();
            assert_eq!(cp.status, api::CheckpointStatus::Ready, "{cp:?}");
            let restored = a
                .client
                .restore(&name, &api::RestoreRequest::default(), true)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
            assert_eq!(restored.state, api::JobState::Succeeded);
            let at = t.lines().len();
            t.wait_for_lines(at + 5);
        }
        api::MigrationOutcome::Migrated => panic!("a failed job reports a migration: {r:?}"),
    }
    assert_eq!(check_memory(t), "check ok");
    assert_counts_resumed(t);
}

#[tokio::test]
async fn a_link_cut_mid_transfer_leaves_the_workload_whole_on_one_side() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ns, b, _token) = hosts(dir.path()).await;
    let mut t = marked(a.dir.path(), "cut", 512);
    let relay = Relay::start(&b.tcp_addr(), 96 << 20);
    let job = a
        .client
        .migrate_live(&migration(t.pid, &relay.addr), true)
        .await;
    // A failed job answers with its error.
    assert!(job.is_err(), "{job:?}");
    let job = jobs_of(&a, api::JobKind::Migrate).await.remove(0);
    assert_whole_on_one_side(&a, &ns, &mut t, &job).await;
    let in_job = b
        .wait_ended(&report(&job).peer_job.unwrap().to_string())
        .await;
    assert_eq!(in_job.state, api::JobState::Failed, "{in_job:?}");
}

#[tokio::test]
async fn the_destination_daemon_killed_mid_transfer_leaves_the_workload_whole_on_one_side() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ns, mut b, _token) = hosts(dir.path()).await;
    let mut t = marked(a.dir.path(), "dkill", 512);
    let sent = a
        .client
        .migrate_live(&migration(t.pid, &b.tcp_addr()), false)
        .await
        .unwrap();
    a.wait_job(&sent.id.to_string(), |j| {
        j.progress.is_some_and(|p| p.bytes_written > 64 << 20) || j.state.is_finished()
    })
    .await;
    b.kill_and_forget();
    let job = a.wait_ended(&sent.id.to_string()).await;
    assert_whole_on_one_side(&a, &ns, &mut t, &job).await;
    // Its restart finds the interrupted receive and records it failed.
    b.restart_after_stop().await;
    let in_job = b
        .wait_ended(&report(&job).peer_job.unwrap().to_string())
        .await;
    assert_eq!(in_job.state, api::JobState::Failed, "{in_job:?}");
}

#[tokio::test]
async fn the_source_daemon_killed_mid_transfer_leaves_the_workload_in_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, ns, b, _token) = hosts(dir.path()).await;
    let mut t = marked(a.dir.path(), "skill", 512);
    let sent = a
        .client
        .migrate_live(&migration(t.pid, &b.tcp_addr()), false)
        .await
        .unwrap();
    let running = a
        .wait_job(&sent.id.to_string(), |j| {
            j.progress.is_some_and(|p| p.bytes_written > 64 << 20) || j.state.is_finished()
        })
        .await;
    assert!(!running.state.is_finished(), "{running:?}");
    a.kill_and_forget();
    // The destination's copy dies with the link; the source's stays stopped, whole.
    let in_job = jobs_of(&b, api::JobKind::Receive).await.remove(0);
    let in_job = b.wait_ended(&in_job.id.to_string()).await;
    assert_eq!(in_job.state, api::JobState::Failed, "{in_job:?}");
    wait_until("the destination's half-made copy to be ended", || {
        marked_in(&ns).is_empty()
    });
    // CRIU at rest when its page socket closed left the tree stopped; cut off mid-request,
    // it resumed it (the destination's copy could not be whole).
    std::thread::sleep(Duration::from_millis(500));
    let stopped = proc_state(t.pid) == Some('T');
    a.restart_after_stop().await;
    let job = a.wait_ended(&sent.id.to_string()).await;
    assert_eq!(job.state, api::JobState::Failed, "{job:?}");
    let msg = &job.error.as_ref().unwrap().message;
    if !stopped {
        assert!(msg.contains("CRIU resumed the process here"), "{msg}");
        let at = t.lines().len();
        t.wait_for_lines(at + 5);
        assert_eq!(check_memory(&t), "check ok");
        assert_counts_resumed(&t);
        return;
    }
    assert!(msg.contains("written to checkpoint"), "{msg}");
    wait_gone("the source, once checkpointed", t.pid);
    t.reap();
    let cps = a
        .client
        .list_checkpoints(&api::query::CheckpointQuery::default())
        .await
        .unwrap()
        .items;
    assert_eq!(cps.len(), 1, "{cps:?}");
    assert_eq!(cps[0].status, api::CheckpointStatus::Ready);
    let restored = a
        .client
        .restore(&cps[0].name, &api::RestoreRequest::default(), true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    assert_eq!(restored.state, api::JobState::Succeeded);
    let at = t.lines().len();
    t.wait_for_lines(at + 5);
    assert_eq!(check_memory(&t), "check ok");
    assert_counts_resumed(&t);
}

#[tokio::test]
async fn a_member_is_told_why_it_cannot_move_even_its_own_process_live() {
    use ckptd_tests::members::{proc_, Fixture};
    let f = Fixture::new().await;
    let token = token_file(f.dir.path());
    let (_ns, b) = destination(&token).await;
    let body = |pid: i32| {
        serde_json::json!({
            "target": proc_(pid),
            "to": b.tcp_addr(),
            "token": "live-migration-token-0123456789",
        })
    };
    // Root's process and another user's are not alice's to move.
    let roots = Target::looper(f.dir.path());
    let (code, answer) = f.alice("POST", "/v1/migrations", Some(body(roots.pid)));
    assert_eq!(code, 403, "{answer}");
    let (bob_uid, bob_gid) = f.acc.ids(&f.bob);
    let bobs = Target::spawn(
        &[
            "setpriv",
            "--reuid",
            &bob_uid.to_string(),
            "--regid",
            &bob_gid.to_string(),
            "--clear-groups",
            "sleep",
            "600",
        ],
        &f.dir.path().join("bob.out"),
    );
    wait_until("bob's process", || {
        std::fs::read_to_string(format!("/proc/{}/status", bobs.pid))
            .is_ok_and(|s| s.contains(&format!("Uid:\t{bob_uid}")))
    });
    let (code, answer) = f.alice("POST", "/v1/migrations", Some(body(bobs.pid)));
    assert_eq!(code, 403, "{answer}");
    // Her own: refused before anything is frozen, saying why and what to do instead (CRIU
    // offers lazy pages to no unprivileged run, and her tree is restored by one).
    let t = f.alice_counter("alice-live", "", &[]);
    let (code, answer) = f.alice("POST", "/v1/migrations", Some(body(t.pid)));
    assert_eq!(code, 400, "{answer}");
    let msg = answer["error"]["message"].as_str().unwrap();
    assert!(msg.contains("unprivileged CRIU"), "{msg}");
    assert!(
        answer["error"]["details"]["hint"]
            .as_str()
            .unwrap()
            .contains("ckpt migrate NAME --to HOST:PORT --restore"),
        "{answer}"
    );
    assert!(jobs_of(&f.d, api::JobKind::Migrate).await.is_empty());
    let at = t.lines().len();
    t.wait_for_lines(at + 3);
    assert_counts_once(&t);
}
