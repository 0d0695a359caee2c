//! Groups (issue 30): several targets checkpointed at one instant and restored together. A TCP
//! client and its server (two trees), a two-process pipeline, two processes on a Unix socket
//! pair and a runc container, each counting what it gets: a lost or repeated message breaks
//! its count. Real daemon, CRIU, runc.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use ckptd_api as api;
use ckptd_tests::*;

/// Serves one connection: each line it gets is sent back as it is.
const SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
with open(sys.argv[1], "w") as f:
    f.write(str(s.getsockname()[1]))
c, _ = s.accept()
s.close()
f = c.makefile("rwb", buffering=0)
while True:
    line = f.readline()
    if not line:
        break
    f.write(line)
"#;

/// Sends 0, 1, 2, ... to the server, one line every 20 ms, and prints each number once the
/// server has sent it back unchanged (a wrong answer is printed as it is).
const CLIENT: &str = r#"
import socket, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = c.makefile("rwb", buffering=0)
n = 0
while True:
    f.write(b"%d\n" % n)
    back = f.readline().decode().strip()
    print(back if back == str(n) else "BAD %r for %d" % (back, n), flush=True)
    n += 1
    time.sleep(0.02)
"#;

/// A pipeline: the producer writes 0, 1, 2, ... into the pipe; the consumer prints each line it
/// reads.
const PIPELINE: &str = "python3 -c 'import time\ni=0\nwhile True:\n    print(i, flush=True); \
                        i+=1; time.sleep(0.02)' | python3 -c 'import sys\nfor l in sys.stdin:\n    \
                        print(l.strip(), flush=True)'";

/// Two processes of one tree talking over a Unix socket pair: the parent sends 0, 1, 2, ...,
/// the child sends each back, the parent prints what came back (or what went wrong).
const UNIX_PAIR: &str = r#"
import os, socket, time
a, b = socket.socketpair()
if os.fork() == 0:
    a.close()
    f = b.makefile("rwb", buffering=0)
    while True:
        f.write(f.readline())
b.close()
f = a.makefile("rwb", buffering=0)
n = 0
while True:
    f.write(b"%d\n" % n)
    back = f.readline().decode().strip()
    print(back if back == str(n) else "BAD %r for %d" % (back, n), flush=True)
    n += 1
    time.sleep(0.02)
"#;

fn python(dir: &std::path::Path, name: &str, code: &str, args: &[&str]) -> Target {
    let mut argv = vec!["python3", "-c", code];
    argv.extend_from_slice(args);
    Target::spawn(&argv, &dir.join(format!("{name}.out")))
}

/// A connected client and server, the client's answers counting.
fn client_and_server(dir: &std::path::Path) -> (Target, Target) {
    let port_file = dir.join("port");
    let server = python(dir, "server", SERVER, &[port_file.to_str().unwrap()]);
    wait_until("the server's port", || {
        std::fs::read_to_string(&port_file).is_ok_and(|p| !p.is_empty())
    });
    let port = std::fs::read_to_string(&port_file).unwrap();
    let client = python(dir, "client", CLIENT, &[&port]);
    client.wait_for_lines(5);
    (client, server)
}

/// What a stalled conversation leaves to see: both ends' state and what they wait in, the
/// connection's TCP state, any connection lock CRIU left behind, the ends of the daemon's log
/// and of its CRIU logs.
fn conversation_report(client: &Target, server: &Target, d: &Daemon) -> String {
    let sh = |cmd: &str| {
        std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut out = String::new();
    for (name, t) in [("client", client), ("server", server)] {
        out += &format!(
            "{name} {}: state {:?}, waiting in {:?}\n",
            t.pid,
            proc_state(t.pid),
            std::fs::read_to_string(format!("/proc/{}/wchan", t.pid)).unwrap_or_default()
        );
    }
    out += &format!(
        "client's last lines: {}\n",
        tail(&client.lines().join("\n"), 3)
    );
    out += &format!(
        "ss -tnoi:\n{}\n",
        sh("ss -tnoi state all '( dst 127.0.0.1 )'")
    );
    out += &format!("CRIU's locks left:\n{}\n", sh("iptables -S | grep -i c114"));
    out + &tails_under(d.dir.path(), ".log", 30)
}

/// A group of the processes `pids`, in that order.
fn processes(pids: &[i32]) -> api::Target {
    api::Target::Group {
        targets: pids
            .iter()
            .map(|&pid| api::Target::Process { pid })
            .collect(),
    }
}

fn running(pid: i32) -> bool {
    proc_state(pid).is_some_and(|s| !matches!(s, 'Z' | 'T' | 't'))
}

#[tokio::test]
async fn a_tcp_client_and_server_a_pipeline_and_a_unix_socket_pair_are_checkpointed_and_restored_together(
) {
    let d = Daemon::start().await;
    let dir = d.dir.path();
    let (mut client, mut server) = client_and_server(dir);
    let mut pipeline = Target::spawn(&["sh", "-c", PIPELINE], &dir.join("pipeline.out"));
    pipeline.wait_for_lines(5);
    let mut pair = python(dir, "pair", UNIX_PAIR, &[]);
    pair.wait_for_lines(5);
    let pids = [server.pid, client.pid, pipeline.pid, pair.pid];

    // The pipeline's two processes as two members would come back with a pipe each: refused,
    // before anything is frozen, saying what to give instead.
    let ends: Vec<String> =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", pipeline.pid))
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    let out = d.ckpt(&["create", &ends.join(","), "cut"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(said.contains("are the two ends of one pipe"), "{said}");
    assert!(said.contains("the shell running `a | b`"), "{said}");

    // One checkpoint of the four, through `ckpt`: a group.
    let targets = pids.map(|p| p.to_string()).join(",");
    let out = d.ckpt(&["create", &targets, "talk"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let cp = d.client.checkpoint("talk").await.unwrap();
    assert_eq!(cp.target, processes(&pids), "{cp:?}");
    assert_eq!(cp.members.len(), 4, "{cp:?}");
    assert!(cp.members.iter().all(|m| m.stats.is_some()), "{cp:?}");
    for i in 0..4 {
        assert!(
            std::path::Path::new(&cp.dir)
                .join(i.to_string())
                .join("inventory.img")
                .is_file(),
            "member {i}'s images in {}",
            cp.dir
        );
    }
    // Each one's tree, in the group's order.
    let tree = d.client.checkpoint_processes("talk").await.unwrap();
    assert_eq!(tree.processes[0].pid, server.pid, "{tree:?}");
    assert!(
        tree.processes.iter().any(|p| p.pid == client.pid),
        "{tree:?}"
    );
    // `ckpt inspect` shows each member, `ckpt ls` what it is.
    let inspected = String::from_utf8_lossy(&d.ckpt(&["inspect", "talk"]).stdout).into_owned();
    assert!(
        inspected.contains(&format!("Member 2:     pid {}: dumped in", pids[2]))
            && inspected.contains(&format!("images in {}/2", cp.dir)),
        "{inspected}"
    );
    let listed = String::from_utf8_lossy(&d.ckpt(&["ls"]).stdout).into_owned();
    assert!(
        listed.contains(&format!("group of pid {}, pid {}", pids[0], pids[1])),
        "{listed}"
    );
    // Ended together once the images were durable.
    for t in [&mut server, &mut client, &mut pipeline, &mut pair] {
        t.reap();
        assert_eq!(proc_state(t.pid), None, "pid {} still there", t.pid);
    }
    let counted = (
        client.lines().len(),
        pipeline.lines().len(),
        pair.lines().len(),
    );
    // The connection between the client and the server is left as CRIU's own ending of a tree
    // leaves it: both ends closed in repair mode (no FIN, no RST: no socket of it lingers)
    // and locked until the restore (CRIU's rules, two for each end).
    let port = std::fs::read_to_string(dir.join("port")).unwrap();
    assert_eq!(
        criu_locks(std::slice::from_ref(&port)).len(),
        4,
        "{:?}",
        criu_locks(std::slice::from_ref(&port))
    );
    assert_eq!(sockets_on(&port), "", "sockets of the ended connection");

    // Restored together: every one back at its pid, the conversation going on.
    let out = d.ckpt(&["restore", "talk"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    assert!(
        said.contains(&format!(
            "group of pid {}; pid {}; pid {}; pid {}",
            pids[0], pids[1], pids[2], pids[3]
        )),
        "{said}"
    );
    for pid in pids {
        assert!(
            running(pid),
            "pid {pid} is not running: {:?}",
            proc_state(pid)
        );
    }
    wait_until("the client's conversation to go on", || {
        client.lines().len() >= counted.0 + 20
    });
    wait_until("the pipeline to go on", || {
        pipeline.lines().len() >= counted.1 + 20
    });
    wait_until("the Unix socket pair to go on", || {
        pair.lines().len() >= counted.2 + 20
    });
    // Nothing lost, nothing repeated, no wrong answer: 0, 1, 2, ... on all three.
    client.assert_contiguous();
    pipeline.assert_contiguous();
    pair.assert_contiguous();
    // Each end's restore unlocked its own end.
    assert_eq!(
        criu_locks(std::slice::from_ref(&port)),
        Vec::<String>::new()
    );
}

/// The TCP sockets, in any state, on `port` (`ss`'s lines, without its header).
/// The sockets of the test's connection: both ends on 127.0.0.1, one of them at `port`. (By
/// port alone, another test's TIME-WAIT sockets between other loopback addresses that had the
/// same port number were counted as this connection's.)
fn sockets_on(port: &str) -> String {
    let filter =
        format!("( sport = :{port} or dport = :{port} ) and src 127.0.0.1 and dst 127.0.0.1");
    let out = std::process::Command::new("ss")
        .args(["-tanH", &filter])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Spawns `sleep` the way dash runs each command and `posix_spawn` does, by vfork, with the
/// child's standard input the FIFO named on the command line: the child blocks opening it,
/// before its exec, and the parent waits in the kernel meanwhile. Then counts.
const SPAWNER: &str = r#"
import os, sys, time
print("spawning", flush=True)
os.posix_spawn("/bin/sleep", ["sleep", "1000"], dict(os.environ),
               file_actions=[(os.POSIX_SPAWN_OPEN, 0, sys.argv[1], os.O_RDONLY, 0)])
i = 0
while True:
    print(i, flush=True); i += 1; time.sleep(0.05)
"#;

/// A member in the middle of a vfork: its parent cannot take a SIGSTOP until the child has
/// exec'd, so a child stopped before its exec held the parent for good and the group failed
/// ("could not be stopped within 5 s", seen with a looping `sh` on a loaded machine). The
/// child is let go on to its exec, then both are frozen and the group is taken.
#[tokio::test]
async fn a_member_in_the_middle_of_a_vfork_is_frozen_once_its_child_has_execd() {
    let d = Daemon::start().await;
    let dir = d.dir.path();
    let gate = dir.join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let spawner = python(dir, "spawner", SPAWNER, &[gate.to_str().unwrap()]);
    spawner.wait_for_lines(1);
    wait_until("the spawner to wait for its vfork child", || {
        proc_state(spawner.pid) == Some('D')
    });
    let other = Target::looper(dir);
    let job = d
        .client
        .create_checkpoint(
            &checkpoint(processes(&[spawner.pid, other.pid]), "vfork"),
            false,
        )
        .await
        .unwrap()
        .job;
    // The group waits for the child's exec; the child gets the FIFO's other end a moment later
    // (a writer opens only once a reader waits: the child, running on).
    std::thread::sleep(Duration::from_millis(500));
    let mut opened = None;
    wait_until("the vfork child to open its end of the FIFO", || {
        opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&gate)
            .ok();
        opened.is_some()
    });
    let job = d.wait_ended(&job.id.to_string()).await;
    assert_eq!(job.state, api::JobState::Succeeded, "{:?}", job.error);
    let cp = d.client.checkpoint("vfork").await.unwrap();
    assert_eq!(cp.members.len(), 2, "{cp:?}");
}

#[tokio::test]
async fn a_group_whose_second_member_fails_to_dump_leaves_both_running() {
    let d = Daemon::start().await;
    let dir = d.dir.path();
    let first = Target::looper(dir);
    // The second holds a Unix socket whose peer (the test) is outside the group: CRIU refuses
    // to dump it without ext_unix_sk.
    let path = dir.join("peer.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let second = python(
        dir,
        "second",
        "import socket, sys, time\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
         i = 0\nwhile True:\n    print(i, flush=True); i += 1; time.sleep(0.05)",
        &[path.to_str().unwrap()],
    );
    second.wait_for_lines(2);
    let _peer = listener.accept().unwrap();

    let err = d
        .client
        .create_checkpoint(
            &checkpoint(processes(&[first.pid, second.pid]), "half"),
            true,
        )
        .await
        .unwrap_err();
    let (_, e) = err.api_error().expect("an API error");
    assert_eq!(e.code, "criu_failed", "{e:?}");
    assert!(
        e.message
            .starts_with(&format!("group member 1 (process:{}): ", second.pid)),
        "{e:?}"
    );
    assert_eq!(e.details["member"], 1, "{e:?}");
    // Both run on: the first, frozen and dumped already, was let go too.
    for t in [&first, &second] {
        assert!(running(t.pid), "pid {} is {:?}", t.pid, proc_state(t.pid));
        assert!(
            t.is_progressing(Duration::from_secs(3)),
            "pid {} stopped",
            t.pid
        );
    }
    let cp = d.client.checkpoint("half").await.unwrap();
    assert_eq!(cp.status, api::CheckpointStatus::Failed);
    // The failed member's CRIU log is the checkpoint's log.
    let log = d.client.checkpoint_log("half").await.unwrap();
    assert!(log.contains("unix"), "{log}");
    first.assert_contiguous();
    second.assert_contiguous();
}

#[tokio::test]
async fn a_process_and_a_runc_container_are_frozen_together_and_come_back_together() {
    let d = Daemon::start().await;
    let dir = d.dir.path();
    let bundle = Bundle::busybox(&dir.join("b"), CONTAINER_LOOPER, |_| {});
    let id = unique_id("grouped");
    let _c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("the container's output", || bundle.out_lines().len() >= 3);
    let mut looper = Target::looper(dir);
    let group = api::Target::Group {
        targets: vec![
            api::Target::Process { pid: looper.pid },
            api::Target::Container {
                id: id.clone(),
                runtime: api::Runtime::Runc,
                root: None,
                bundle: None,
                namespace: None,
            },
        ],
    };
    let cp = d
        .client
        .create_checkpoint(&checkpoint(group.clone(), "pair"), true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert_eq!(cp.checkpoint.status, api::CheckpointStatus::Ready);
    let cp = d.client.checkpoint("pair").await.unwrap();
    assert!(cp.members[1].container.is_some(), "{cp:?}");
    // Both ended: the container deleted, the process killed.
    looper.reap();
    assert_eq!(proc_state(looper.pid), None);
    let status = Command::new("runc").args(["state", &id]).output().unwrap();
    assert!(!status.status.success(), "the container is still there");
    let (before_c, before_p) = (bundle.out_lines().len(), looper.lines().len());

    let job = d
        .client
        .restore("pair", &api::RestoreRequest::default(), true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let result = job
        .result
        .unwrap_or_else(|| panic!("{:?}\n{}", job.error, d.log()));
    assert_eq!(result.members.len(), 2, "{result:?}");
    assert_eq!(result.members[0].pid, Some(looper.pid), "{result:?}");
    // Both run again (the container is not left paused).
    let state = Command::new("runc").args(["state", &id]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state["status"], "running", "{state}");
    wait_until("both to go on", || {
        bundle.out_lines().len() >= before_c + 5 && looper.lines().len() >= before_p + 5
    });
    assert_counts(&bundle.out_lines(), "the container's output");
    looper.assert_contiguous();
}

use std::process::Command;

#[tokio::test]
async fn a_schedule_of_a_group_keeps_its_last_checkpoint_and_its_archive_holds_the_group() {
    let d = Daemon::start().await;
    let dir = d.dir.path();
    let a = Target::looper(dir);
    let b = counter(dir, "b", 1);
    let group = processes(&[a.pid, b.pid]);
    d.client
        .create_schedule(&api::CreateSchedule {
            name: "pair".into(),
            target: group.clone(),
            cron: "0 0 1 1 *".into(),
            options: Default::default(),
            retention: api::Retention {
                keep_last: Some(1),
                ..Default::default()
            },
            enabled: true,
        })
        .await
        .unwrap();
    let first = d.client.run_schedule("pair", true).await.unwrap();
    let second = d.client.run_schedule("pair", true).await.unwrap();
    assert_eq!(second.checkpoint.target, group);
    // keep_last 1: the group's checkpoints count as one each; the older one and its members'
    // images are gone.
    wait_until("retention to drop the first", || {
        !std::path::Path::new(&first.checkpoint.dir).exists()
    });
    let listed = d
        .client
        .list_checkpoints(&Default::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "{listed:?}");
    assert_eq!(listed.items[0].members.len(), 2);
    // Both ran on (a schedule's checkpoints leave their targets running).
    for t in [&a, &b] {
        assert!(
            t.is_progressing(Duration::from_secs(3)),
            "pid {} stopped",
            t.pid
        );
    }
    // An archive holds the group (each member's images under its index): imported under
    // another name, it is the same group, its trees readable.
    let archive = dir.join("pair.tar.zst");
    let out = d.ckpt(&[
        "export",
        &second.checkpoint.name,
        "-o",
        archive.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.ckpt(&["import", archive.to_str().unwrap(), "--name", "pair-copy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = d.client.checkpoint("pair-copy").await.unwrap();
    assert_eq!(copy.target, group);
    assert_eq!(copy.members, listed.items[0].members);
    assert_eq!(
        d.client.checkpoint_processes("pair-copy").await.unwrap(),
        d.client
            .checkpoint_processes(&second.checkpoint.name)
            .await
            .unwrap()
    );
    // Podman's layout holds one container's images: refused, saying so.
    let out = d.ckpt(&[
        "export",
        &second.checkpoint.name,
        "--format",
        "podman",
        "-o",
        dir.join("pair-podman.tar").to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(said.contains("holds one container's images"), "{said}");
    // Deleted with its members' folders.
    let out = d.ckpt(&["rm", &second.checkpoint.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!std::path::Path::new(&second.checkpoint.dir).exists());
    a.assert_contiguous();
    b.assert_contiguous();
}

#[tokio::test]
async fn a_daemon_killed_while_a_group_is_frozen_lets_every_member_run_again() {
    let mut d = Daemon::start().await;
    let dir = d.dir.path().to_owned();
    let small = Target::looper(&dir);
    // Big enough that its dump takes a while: the daemon dies while both are frozen.
    let big = counter(&dir, "big", 384);
    let req = checkpoint(processes(&[small.pid, big.pid]), "cut-short");
    d.client.create_checkpoint(&req, false).await.unwrap();
    wait_until("both members to be frozen", || {
        proc_state(small.pid) == Some('T') && proc_state(big.pid) == Some('T')
    });
    d.crash(|| {}).await;
    for t in [&small, &big] {
        assert!(running(t.pid), "pid {} is {:?}", t.pid, proc_state(t.pid));
        assert!(
            t.is_progressing(Duration::from_secs(3)),
            "pid {} stopped",
            t.pid
        );
    }
    let cp = d.client.checkpoint("cut-short").await.unwrap();
    assert_eq!(cp.status, api::CheckpointStatus::Failed, "{cp:?}");
    small.assert_contiguous();
    big.assert_contiguous();
}

/// The same with a runc container among the members: the daemon dies while the container is
/// paused (a group pauses its containers) and its process member stopped. The restart lets both
/// run: the container resumed, not left paused, its count going on.
#[tokio::test]
async fn a_daemon_killed_while_a_group_with_a_container_is_frozen_lets_both_run_again() {
    let mut d = Daemon::start().await;
    let dir = d.dir.path().to_owned();
    let bundle = Bundle::busybox(&dir.join("b"), CONTAINER_LOOPER, |_| {});
    let id = unique_id("frozen");
    let _c = Container::run(&bundle, &id, ContainerStdio::Null);
    wait_until("the container's output", || bundle.out_lines().len() >= 3);
    // Big enough that its dump takes a while: the daemon dies while both are frozen.
    let big = counter(&dir, "big", 384);
    let group = api::Target::Group {
        targets: vec![
            api::Target::Process { pid: big.pid },
            api::Target::Container {
                id: id.clone(),
                runtime: api::Runtime::Runc,
                root: None,
                bundle: None,
                namespace: None,
            },
        ],
    };
    d.client
        .create_checkpoint(&checkpoint(group, "cut-short"), false)
        .await
        .unwrap();
    let status = || {
        let out = Command::new("runc").args(["state", &id]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    wait_until("both members to be frozen", || {
        proc_state(big.pid) == Some('T') && status() == "paused"
    });
    d.crash(|| {}).await;
    assert_eq!(status(), "running", "{}", d.log());
    assert!(
        running(big.pid),
        "pid {} is {:?}",
        big.pid,
        proc_state(big.pid)
    );
    assert!(
        big.is_progressing(Duration::from_secs(3)),
        "pid {} stopped",
        big.pid
    );
    let before = bundle.out_lines().len();
    wait_until("the container to go on", || {
        bundle.out_lines().len() >= before + 3
    });
    let cp = d.client.checkpoint("cut-short").await.unwrap();
    assert_eq!(cp.status, api::CheckpointStatus::Failed, "{cp:?}");
    assert_counts(&bundle.out_lines(), "the container's output");
    big.assert_contiguous();
}

#[tokio::test]
async fn a_member_groups_her_own_processes_and_none_of_anyone_elses() {
    use ckptd_tests::members::Fixture;
    let f = Fixture::new().await;
    let roots = Target::looper(f.d.dir.path());
    let mut one = f.alice_counter("one", "", &[]);
    let mut two = f.alice_counter("two", "", &[]);
    let group = |pids: &[i32]| {
        serde_json::json!({"target": {"kind": "group", "targets":
            pids.iter().map(|p| serde_json::json!({"kind": "process", "pid": p})).collect::<Vec<_>>()},
            "name": "hers"})
    };
    // Root's process in her group: refused, and nothing of hers was frozen.
    let (code, answer) = f.alice(
        "POST",
        "/v1/checkpoints?wait=true",
        Some(group(&[one.pid, roots.pid])),
    );
    assert_eq!(code, 403, "{answer}");
    assert!(one.is_progressing(Duration::from_secs(2)));
    // Her own two: taken by her CRIU, into folders of hers, and restored by her.
    let (code, answer) = f.alice(
        "POST",
        "/v1/checkpoints?wait=true",
        Some(group(&[one.pid, two.pid])),
    );
    assert_eq!(code, 201, "{answer}\n{}", f.d.log());
    let dir = std::path::PathBuf::from(answer["checkpoint"]["dir"].as_str().unwrap());
    use std::os::unix::fs::MetadataExt;
    for i in ["0", "1"] {
        let m = std::fs::metadata(dir.join(i)).unwrap();
        assert_eq!(m.uid(), f.alice_uid, "member folder {i}");
    }
    one.reap();
    two.reap();
    let (code, answer) = f.alice(
        "POST",
        "/v1/checkpoints/hers/restore?wait=true",
        Some(serde_json::json!({})),
    );
    assert_eq!(code, 200, "{answer}\n{}", f.d.log());
    assert_eq!(
        answer["job"]["result"]["members"][1]["pid"], two.pid,
        "{answer}"
    );
    for t in [&one, &two] {
        assert!(running(t.pid), "pid {} is {:?}", t.pid, proc_state(t.pid));
        assert!(
            t.is_progressing(Duration::from_secs(3)),
            "pid {} stopped",
            t.pid
        );
    }
    one.assert_contiguous();
    two.assert_contiguous();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_pushed_by_one_host_is_restored_by_another_and_talks_on() {
    let s3 = S3Server::start(&["groups"]);
    let dir = tempfile::tempdir().unwrap();
    let creds = s3.credentials_file("creds", None);
    let conf = dir.path().join("ckptd.toml");
    std::fs::write(
        &conf,
        format!(
            "[remotes.shared]\nendpoint = \"{}\"\nbucket = \"groups\"\ncredentials_file = \"{}\"\n",
            s3.endpoint,
            creds.display()
        ),
    )
    .unwrap();
    let a = Daemon::start_with(&["--config", conf.to_str().unwrap()]).await;
    let b = Daemon::start_with(&["--config", conf.to_str().unwrap()]).await;
    let (mut client, mut server) = client_and_server(dir.path());
    let group = processes(&[server.pid, client.pid]);
    // Checkpointed on a, pushed, its local images dropped.
    let made = a
        .client
        .create_checkpoint(
            &api::CreateCheckpoint {
                push_to: Some("shared".into()),
                keep_local: Some(false),
                ..checkpoint(group.clone(), "pair")
            },
            true,
        )
        .await
        .unwrap();
    let push = made
        .job
        .result
        .and_then(|r| r.push_job)
        .expect("a push job");
    let push = a.wait_ended(&push.to_string()).await;
    assert_eq!(push.state, api::JobState::Succeeded, "{:?}", push.error);
    for t in [&mut client, &mut server] {
        t.reap();
    }
    let counted = client.lines().len();

    // b finds the group in the bucket, with its members, and restores it in one request.
    let listed = b.client.remote_checkpoints("shared").await.unwrap().items;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].checkpoint.target, group);
    assert_eq!(listed[0].checkpoint.members.len(), 2);
    let job = b
        .client
        .restore_from_remote("shared", "pair", &Default::default(), true)
        .await
        .unwrap();
    assert_eq!(job.state, api::JobState::Succeeded, "{:?}", job.error);
    let on_b = b.client.checkpoint("pair").await.unwrap();
    assert_eq!(on_b.members, listed[0].checkpoint.members);
    wait_until_else(
        "the conversation to go on from b's restore",
        || client.lines().len() >= counted + 20,
        || conversation_report(&client, &server, &b),
    );
    client.assert_contiguous();
}

#[tokio::test]
async fn a_daemon_killed_during_a_group_restore_leaves_no_member_stopped() {
    let mut d = Daemon::start().await;
    let dir = d.dir.path().to_owned();
    let mut small = Target::looper(&dir);
    // Big enough that its restore takes a while: the daemon dies with the small one back,
    // stopped, waiting for the other.
    let mut big = counter(&dir, "big", 256);
    let group = processes(&[small.pid, big.pid]);
    d.client
        .create_checkpoint(&checkpoint(group, "both"), true)
        .await
        .unwrap();
    small.reap();
    big.reap();
    let job = d
        .client
        .restore("both", &api::RestoreRequest::default(), false)
        .await
        .unwrap();
    wait_until("the small member to be back", || {
        proc_state(small.pid).is_some_and(|s| s != 'Z')
    });
    d.crash(|| {}).await;
    // Resolved at start-up: both back and running (the job succeeded), or neither left (the
    // one back was ended, the job failed). Never a member stopped for good.
    let gone = |pid: i32| proc_state(pid).is_none_or(|s| s == 'Z');
    let job = d.wait_ended(&job.id.to_string()).await;
    match job.state {
        api::JobState::Succeeded => {
            for t in [&small, &big] {
                assert!(running(t.pid), "pid {} is {:?}", t.pid, proc_state(t.pid));
                assert!(
                    t.is_progressing(Duration::from_secs(3)),
                    "pid {} stopped",
                    t.pid
                );
            }
            assert_eq!(job.result.expect("a result").members.len(), 2);
        }
        state => {
            eprintln!(
                "job {state:?} {:?}; small {:?}, big {:?}\n{}",
                job.error,
                proc_state(small.pid),
                proc_state(big.pid),
                d.log()
            );
            wait_until("the members back to be ended", || {
                gone(small.pid) && gone(big.pid)
            });
            assert_eq!(state, api::JobState::Failed, "{:?}", job.error);
        }
    }
    small.assert_contiguous();
    big.assert_contiguous();
}
