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

/// `ckpt migrate ARGS` on `a`, which must succeed (moving something to `b`): what it said.
fn ckpt_migrate(a: &Daemon, b: &Daemon, args: &[&str]) -> String {
    let out = a.ckpt(&[&["migrate"], args].concat());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.log(),
        b.log()
    );
    said
}

/// Starts migration `req` from `a` to `b`, kills `a` (-9) once `mib` MiB are sent, and waits
/// until `b`'s side has failed (its copy ended with the link). The source's job.
async fn kill_source_mid_transfer(
    a: &mut Daemon,
    b: &Daemon,
    req: &api::CreateMigration,
    mib: u64,
) -> api::Job {
    let sent = a.client.migrate_live(req, false).await.unwrap();
    let running = a
        .wait_job(&sent.id.to_string(), |j| {
            j.progress.is_some_and(|p| p.bytes_written > mib << 20) || j.state.is_finished()
        })
        .await;
    assert!(!running.state.is_finished(), "{running:?}");
    a.kill_and_forget();
    let in_job = b.jobs_of(api::JobKind::Receive).await.remove(0);
    let in_job = b.wait_ended(&in_job.id.to_string()).await;
    assert_eq!(
        in_job.state,
        api::JobState::Failed,
        "{in_job:?}\n{}",
        b.log()
    );
    sent
}

fn gone(pid: i32) -> bool {
    proc_state(pid).is_none_or(|s| s == 'Z')
}

fn wait_gone(what: &str, pid: i32) {
    wait_until(what, || gone(pid));
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
    let said = ckpt_migrate(
        &a,
        &b,
        &[
            &t.pid.to_string(),
            "--live",
            "--to",
            &b.tcp_addr(),
            "--token-file",
            token.to_str().unwrap(),
        ],
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

    let out_job = a.jobs_of(api::JobKind::Migrate).await.remove(0);
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
    let in_job = b.jobs_of(api::JobKind::Receive).await.remove(0);
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
        Self::start_with(to, cut_after, false)
    }

    /// With `only_first`, it cuts the first connection alone and relays later ones whole (the
    /// source can then ask the destination how its side ended).
    fn start_with(to: &str, cut_after: u64, only_first: bool) -> Relay {
        let (host, port) = to.rsplit_once(':').unwrap();
        let only_first = if only_first { "True" } else { "False" };
        let script = format!(
            r#"
import os, socket, sys, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(8)
print(srv.getsockname()[1], flush=True)
sent = [0]
def pump(a, b, count):
    while True:
        try:
            d = a.recv(1 << 16)
        except OSError:
            return
        if not d:
            try: b.shutdown(socket.SHUT_WR)
            except OSError: pass
            return
        b.sendall(d)
        if count:
            sent[0] += len(d)
            if sent[0] > {cut_after}:
                if not {only_first}:
                    os._exit(0)
                for s in (a, b):
                    s.shutdown(socket.SHUT_RDWR); s.close()
                return
first = True
while True:
    c, _ = srv.accept()
    d = socket.create_connection(("{host}", {port}))
    threading.Thread(target=pump, args=(c, d, first), daemon=True).start()
    threading.Thread(target=pump, args=(d, c, False), daemon=True).start()
    first = False
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
    let job = a.jobs_of(api::JobKind::Migrate).await.remove(0);
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
    // The destination's side is not cancelled there: it ends with its migration.
    let in_job = b.jobs_of(api::JobKind::Receive).await.remove(0);
    let e = b
        .client
        .cancel_job(&in_job.id.to_string())
        .await
        .expect_err("a receive job ends with its migration");
    let (status, err) = e.api_error().expect("an API error");
    assert_eq!(status.as_u16(), 409, "{err:?}");
    assert!(err.message.contains("receives a live migration"), "{err:?}");
    assert!(
        err.hint()
            .unwrap_or("")
            .contains(&format!("POST /v1/jobs/{}/cancel", sent.id)),
        "{err:?}"
    );
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
    // The destination's copy dies with the link; the source's stays stopped, whole.
    let sent = kill_source_mid_transfer(&mut a, &b, &migration(t.pid, &b.tcp_addr()), 64).await;
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
    assert!(f.d.jobs_of(api::JobKind::Migrate).await.is_empty());
    let at = t.lines().len();
    t.wait_for_lines(at + 3);
    assert_counts_once(&t);
}

/// A container looper holding `mib` MiB in a shell variable (every byte an `a`): it counts into
/// /out.log and, when /check appears, prints the variable's length, which a page lost in transit
/// (read as zeros) would shorten.
fn container_marked(mib: usize) -> String {
    format!(
        "exec >>/out.log 2>&1; \
         x=$(busybox head -c {} /dev/zero | busybox tr '\\0' a); i=0; \
         while true; do echo $i; i=$((i+1)); \
         if [ -e /check ]; then busybox rm /check; echo len ${{#x}}; fi; sleep 0.1; done",
        mib << 20
    )
}

/// The source container's bundle in `dir/src` (a marked looper of `mib` MiB), and in `dir/dst`
/// the bundle the destination restores it from: its own config.json, the same root directory
/// (the same image on another host).
fn container_bundles(dir: &Path, mib: usize) -> (Bundle, PathBuf) {
    let src = Bundle::busybox(&dir.join("src"), &container_marked(mib), |_| {});
    let dst = dir.join("dst");
    std::fs::create_dir(&dst).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.dir.join("config.json")).unwrap()).unwrap();
    cfg["root"]["path"] = src.dir.join("rootfs").display().to_string().into();
    std::fs::write(dst.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    (src, dst)
}

/// Asks the marked container (wherever it runs) for its memory's length: all of it is there.
fn assert_container_memory(src: &Bundle, mib: usize) {
    let asked = src
        .out_lines()
        .iter()
        .filter(|l| l.starts_with("len"))
        .count();
    std::fs::write(src.dir.join("rootfs/check"), "").unwrap();
    wait_until("the memory check", || {
        src.out_lines()
            .iter()
            .filter(|l| l.starts_with("len"))
            .count()
            > asked
    });
    let answer = src
        .out_lines()
        .into_iter()
        .filter(|l| l.starts_with("len"))
        .nth(asked)
        .unwrap();
    assert_eq!(
        answer,
        format!("len {}", mib << 20),
        "the container's memory differs"
    );
}

/// A live migration of runc container `id` into `moved` (bundle `dst`) on the destination.
fn container_migration(id: &str, moved: &str, dst: &Path, to: &str) -> api::CreateMigration {
    let container = |id: &str, bundle: Option<String>| api::Target::Container {
        id: id.to_owned(),
        runtime: api::Runtime::Runc,
        root: None,
        bundle,
        namespace: None,
    };
    api::CreateMigration {
        target: Some(container(id, None)),
        into: Some(container(moved, Some(dst.display().to_string()))),
        ..migration(0, to)
    }
}

/// A marked runc container running on the source, and the container it is to become on the
/// destination (removed, wherever it runs, when the test ends).
struct LiveContainer {
    id: String,
    moved: String,
    src: Bundle,
    dst: PathBuf,
    c: Container,
    there: Container,
}

impl LiveContainer {
    /// Runs a `mib` MiB marked container named after `name` and waits until it counts.
    fn start(dir: &Path, ns: &PidNamespace, name: &str, mib: usize) -> LiveContainer {
        let id = format!("{name}-{}", std::process::id());
        let moved = format!("{id}-moved");
        let (src, dst) = container_bundles(dir, mib);
        let c = Container::run(&src, &id, ContainerStdio::Null);
        let there = Container::adopt_in(ns, &moved);
        wait_until("the container's count", || {
            container_counts(&src).len() >= 5
        });
        LiveContainer {
            id,
            moved,
            src,
            dst,
            c,
            there,
        }
    }
}

/// The container's count lines (its /out.log without the length answers).
fn container_counts(b: &Bundle) -> Vec<String> {
    b.out_lines()
        .into_iter()
        .filter(|l| !l.starts_with("len"))
        .collect()
}

/// A runc container moved live with `ckpt migrate ID --live --into NEW --bundle DIR`. On one
/// machine the destination restores it under another id (both daemons share runc's root and
/// the cgroup tree), from a bundle of its own whose root is the same directory: the container
/// on another host with the same image.
#[tokio::test]
async fn ckpt_migrate_live_moves_a_runc_container() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ns, b, token) = hosts(dir.path()).await;
    let LiveContainer {
        id,
        moved,
        src,
        dst,
        c,
        there,
    } = LiveContainer::start(dir.path(), &ns, "ckptdtest-live", 32);

    let said = ckpt_migrate(
        &a,
        &b,
        &[
            &id,
            "--live",
            "--into",
            &moved,
            "--bundle",
            dst.to_str().unwrap(),
            "--to",
            &b.tcp_addr(),
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    assert!(
        said.contains(&format!("container {id} moved to"))
            && said.contains(&format!("container {moved} there")),
        "{said}"
    );
    // The source container is gone; the destination's counts on where it stopped.
    assert_eq!(c.status(), None, "the source container is still there");
    assert_eq!(there.status().as_deref(), Some("running"), "{}", b.log());
    let at = container_counts(&src).len();
    wait_until("the moved container's count", || {
        container_counts(&src).len() >= at + 10
    });
    assert_counts(&container_counts(&src), "the container's count");
    assert_container_memory(&src, 32);

    let out_job = a.jobs_of(api::JobKind::Migrate).await.remove(0);
    let in_job = b.jobs_of(api::JobKind::Receive).await.remove(0);
    assert_eq!(out_job.state, api::JobState::Succeeded, "{out_job:?}");
    assert_eq!(in_job.state, api::JobState::Succeeded, "{in_job:?}");
    let r = report(&out_job);
    assert_eq!(r.outcome, api::MigrationOutcome::Migrated);
    assert_eq!(r.peer_job, Some(in_job.id));
    eprintln!("the container's migration: {r:?}");
    let down = r.downtime_ms.expect("a downtime");
    assert!(down <= r.total_ms.unwrap(), "{r:?}");
    assert!(r.page_bytes > 32 << 20, "{r:?}");
    let result = in_job.result.unwrap();
    assert_eq!(result.container.as_deref(), Some(moved.as_str()));
    // No checkpoint is left on either side.
    for d in [&a, &b] {
        let left = d
            .client
            .list_checkpoints(&Default::default())
            .await
            .unwrap();
        assert!(left.items.is_empty(), "{:?}", left.items);
    }
}

/// The count of a container after a fallback: in order and without a gap, except for one step
/// back (the destination's copy may have run ahead before it was ended).
fn assert_container_counts_resumed(b: &Bundle) {
    let nums: Vec<u64> = container_counts(b)
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let rewinds = nums.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1 || w[1] <= w[0]) && rewinds <= 1,
        "the container's count has a gap or went back more than once: {nums:?}"
    );
}

/// The link cut while the container's memory moves (the destination still reachable): the
/// destination removes its half-made container and says so when asked, and the container
/// runs whole on the source again (or, if CRIU's page server was cut mid-request, CRIU's own
/// resume; either way `resumed`).
#[tokio::test]
async fn a_runc_container_survives_a_link_cut_mid_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ns, b, _token) = hosts(dir.path()).await;
    let LiveContainer {
        id,
        moved,
        src,
        dst,
        c,
        there,
    } = LiveContainer::start(dir.path(), &ns, "ckptdtest-livecut", 32);

    let relay = Relay::start_with(&b.tcp_addr(), 8 << 20, true);
    let req = container_migration(&id, &moved, &dst, &relay.addr);
    let job = a.client.migrate_live(&req, true).await;
    assert!(job.is_err(), "{job:?}");
    let job = a.jobs_of(api::JobKind::Migrate).await.remove(0);
    assert_eq!(job.state, api::JobState::Failed, "{job:?}");
    let r = report(&job);
    eprintln!("after the cut: {job:?}");
    wait_until(
        "the destination's half-made container to be removed",
        || there.status().is_none(),
    );
    assert_eq!(r.outcome, api::MigrationOutcome::Resumed, "{r:?}");
    assert_eq!(c.status().as_deref(), Some("running"));
    let at = container_counts(&src).len();
    wait_until("the count to go on", || {
        container_counts(&src).len() >= at + 5
    });
    assert_container_counts_resumed(&src);
    assert_container_memory(&src, 32);
    let in_job = b.wait_ended(&r.peer_job.unwrap().to_string()).await;
    assert_eq!(in_job.state, api::JobState::Failed, "{in_job:?}");
    drop(relay);
}

/// The source daemon killed -9 while a container's memory moves: the destination removes its
/// half-made container; the restarted source finds the container paused (whether the
/// destination held a whole copy cannot be known then), writes it to a durable checkpoint and
/// ends it. Restored, it counts on with all its memory.
#[tokio::test]
async fn a_runc_container_survives_its_source_daemon_killed_mid_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, ns, b, _token) = hosts(dir.path()).await;
    let LiveContainer {
        id,
        moved,
        src,
        dst,
        c,
        there,
    } = LiveContainer::start(dir.path(), &ns, "ckptdtest-livekill", 256);
    // The destination's copy dies with the link, and its container is removed.
    let sent = kill_source_mid_transfer(
        &mut a,
        &b,
        &container_migration(&id, &moved, &dst, &b.tcp_addr()),
        32,
    )
    .await;
    wait_until(
        "the destination's half-made container to be removed",
        || there.status().is_none(),
    );
    a.restart_after_stop().await;
    let job = a.wait_ended(&sent.id.to_string()).await;
    assert_eq!(job.state, api::JobState::Failed, "{job:?}");
    let e = job.error.as_ref().unwrap();
    assert!(
        e.message.contains(&format!(
            "the container {id} (stopped) was written to checkpoint"
        )),
        "{e:?}"
    );
    assert_eq!(c.status(), None, "checkpointed, yet still there");
    let cp = a
        .client
        .list_checkpoints(&Default::default())
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(cp.status, api::CheckpointStatus::Ready, "{cp:?}");
    let restored = a
        .client
        .restore(&cp.name, &api::RestoreRequest::default(), true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    assert_eq!(restored.state, api::JobState::Succeeded);
    assert_eq!(c.status().as_deref(), Some("running"));
    let at = container_counts(&src).len();
    wait_until("the count to go on", || {
        container_counts(&src).len() >= at + 5
    });
    assert_container_counts_resumed(&src);
    assert_container_memory(&src, 256);
}

/// After a fault, the source container runs whole again: resumed, or restored from the
/// checkpoint the migration fell back to; its count goes on and all its `mib` MiB are there.
async fn assert_container_kept(
    a: &Daemon,
    lc: &LiveContainer,
    r: &api::MigrationReport,
    mib: usize,
) {
    match r.outcome {
        api::MigrationOutcome::Resumed => {
            assert_eq!(lc.c.status().as_deref(), Some("running"), "{r:?}");
        }
        api::MigrationOutcome::Checkpointed => {
            assert_eq!(lc.c.status(), None, "checkpointed, yet still there");
            let restored = a
                .client
                .restore(
                    r.checkpoint.as_deref().unwrap(),
                    &api::RestoreRequest::default(),
                    true,
                )
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
            assert_eq!(restored.state, api::JobState::Succeeded);
            assert_eq!(lc.c.status().as_deref(), Some("running"));
        }
        api::MigrationOutcome::Migrated => panic!("a failed job reports a migration: {r:?}"),
    }
    let at = container_counts(&lc.src).len();
    wait_until("the count to go on", || {
        container_counts(&lc.src).len() >= at + 5
    });
    assert_container_counts_resumed(&lc.src);
    assert_container_memory(&lc.src, mib);
}

/// The destination daemon killed -9 while a container's memory moves: its guard ends the
/// half-made container's tree, the source keeps the container (resumed, or in a checkpoint
/// when the destination could not be asked), and the restarted destination records its job
/// failed and removes what runc still had of the container.
#[tokio::test]
async fn a_runc_container_survives_its_destination_daemon_killed_mid_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ns, mut b, _token) = hosts(dir.path()).await;
    let lc = LiveContainer::start(dir.path(), &ns, "ckptdtest-livedkill", 256);
    let sent = a
        .client
        .migrate_live(
            &container_migration(&lc.id, &lc.moved, &lc.dst, &b.tcp_addr()),
            false,
        )
        .await
        .unwrap();
    let running = a
        .wait_job(&sent.id.to_string(), |j| {
            j.progress.is_some_and(|p| p.bytes_written > 32 << 20) || j.state.is_finished()
        })
        .await;
    assert!(!running.state.is_finished(), "{running:?}");
    b.kill_and_forget();
    let job = a.wait_ended(&sent.id.to_string()).await;
    assert_eq!(job.state, api::JobState::Failed, "{job:?}");
    let r = report(&job);
    assert_container_kept(&a, &lc, &r, 256).await;
    // The restarted destination: its job failed, nothing of the container left.
    b.restart_after_stop().await;
    let in_job = b.wait_ended(&r.peer_job.unwrap().to_string()).await;
    assert_eq!(in_job.state, api::JobState::Failed, "{in_job:?}");
    wait_until("the destination's container to be removed", || {
        lc.there.status().is_none()
    });
}
