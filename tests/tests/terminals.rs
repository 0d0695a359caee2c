//! Terminals (issue 30), tested in tmux: a program started in a tmux pane is checkpointed with
//! its controlling terminal, restored onto a terminal ckptd holds, attached to from another
//! pane with `ckpt attach`, typed into, its answers (and the window size) seen there; detached
//! with ctrl-p ctrl-q it runs on, its output kept in ckptd's log; the daemon killed -9 and
//! restarted, it is attached to again. Real daemon, CRIU and tmux.

use std::process::Command;
use std::time::Duration;

use ckptd_api as api;
use ckptd_tests::*;

/// A tmux server of the test's own (`tmux -L`), killed with everything in it at the end.
struct Tmux {
    name: String,
    /// The user it runs as (uid, gid), when not root: its terminals are that user's.
    user: Option<(u32, u32)>,
    /// The `ckpt` it runs (a copy the user can run, when not root: the clone may be under a
    /// directory only root enters).
    ckpt: std::path::PathBuf,
}

impl Tmux {
    fn new(tag: &str) -> Tmux {
        Tmux {
            name: format!("ckptd-test-{tag}-{}", std::process::id()),
            user: None,
            ckpt: workspace_binary("ckpt"),
        }
    }

    /// A tmux of `user`'s, its `ckpt` a copy in `dir` (a directory the user can reach).
    fn as_user(tag: &str, user: (u32, u32), dir: &std::path::Path) -> Tmux {
        use std::os::unix::fs::PermissionsExt;
        let ckpt = dir.join("ckpt");
        std::fs::copy(workspace_binary("ckpt"), &ckpt).unwrap();
        std::fs::set_permissions(&ckpt, std::fs::Permissions::from_mode(0o755)).unwrap();
        Tmux {
            name: format!("ckptd-test-{tag}-{}", std::process::id()),
            user: Some(user),
            ckpt,
        }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = match self.user {
            None => Command::new("tmux"),
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
                    .args(["--init-groups", "tmux"]);
                c
            }
        };
        // From `/`: the pane starts in tmux's working directory, and a member's cannot be the
        // test's (a clone under /root is not hers to enter, and her program would not start).
        // No configuration file (a member's tmux would read root's, from root's HOME).
        // The panes' shell said: without SHELL in the environment (as under CI), tmux takes the
        // user's login shell, and a member's is nologin, which ends her program at once.
        cmd.current_dir("/")
            .env("SHELL", "/bin/sh")
            .arg("-L")
            .arg(&self.name)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux (make setup installs it)")
    }

    /// A detached session `name` of `cols`x`rows` running `sh -c command`.
    fn session(&self, name: &str, cols: u16, rows: u16, command: &str) {
        let out = self.cmd(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            command,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A session `name` (`cols`x`rows`) running `ckpt attach PID` against the daemon at
    /// `socket`, waiting until it says it is attached.
    fn attach(&self, name: &str, cols: u16, rows: u16, socket: &std::path::Path, pid: i32) {
        self.session(
            name,
            cols,
            rows,
            &format!(
                "CKPTD_SOCKET={} {} attach {pid}; sleep 600",
                socket.display(),
                self.ckpt.display()
            ),
        );
        self.wait_for(name, &format!("attached to pid {pid}"));
    }

    /// Starts `command` (the PROGRAM) in a 100x30 session `name` and types to it once: its pid,
    /// once it has answered.
    fn program(&self, name: &str, command: &str) -> i32 {
        self.session(name, 100, 30, command);
        let pid = self.pane_pid(name);
        self.keys(name, &["first", "Enter"]);
        self.wait_for(name, "got first 0 (100x30)");
        pid
    }

    fn pane_pid(&self, session: &str) -> i32 {
        let out = self.cmd(&["display", "-p", "-t", session, "#{pane_pid}"]);
        let said = String::from_utf8_lossy(&out.stdout);
        said.trim().parse().unwrap_or_else(|_| {
            panic!(
                "no pane pid for session {session} (did its program end?): {said:?} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    /// What the pane shows.
    fn screen(&self, session: &str) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", session]).stdout)
            .into_owned()
    }

    fn wait_for(&self, session: &str, text: &str) {
        let mut seen = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            seen = self.screen(session);
            if seen.contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{text:?} never showed in {session}:\n{seen}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// A program that answers each line typed with `got LINE N (COLSxROWS)` and prints a tick
/// every half second when nothing is typed.
const PROGRAM: &str = r#"
import os, select, sys
i, t = 0, 0
while True:
    if select.select([sys.stdin], [], [], 0.5)[0]:
        l = sys.stdin.readline()
        c, r = os.get_terminal_size()
        print("got", l.strip(), i, f"({c}x{r})", flush=True); i += 1
    else:
        print("tick", t, flush=True); t += 1
"#;

#[tokio::test]
async fn a_terminal_program_is_checkpointed_restored_and_attached_in_tmux() {
    let mut d = Daemon::start().await;
    let tmux = Tmux::new("tty");
    let program = d.dir.path().join("program.py");
    std::fs::write(&program, PROGRAM).unwrap();
    let pid = tmux.program("app", &format!("exec python3 {}", program.display()));

    // Checkpointed with its terminal (a shell job), then ended: the pane closes.
    let out = d.ckpt(&["create", &pid.to_string(), "repl"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let cp = d.client.checkpoint("repl").await.unwrap();
    assert!(
        cp.terminal
            .as_deref()
            .is_some_and(|k| k.starts_with("tty[")),
        "{cp:?}"
    );
    wait_until("the program to end", || {
        proc_state(pid).is_none_or(|s| s == 'Z')
    });
    wait_until("its pid to be free", || proc_state(pid).is_none());

    let out = d.ckpt(&["restore", "repl"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("its terminal is held by ckptd: ckpt attach {pid}")),
        "{said}"
    );
    let job = d.jobs_of(api::JobKind::Restore).await.remove(0);
    let result = job.result.expect("the restore's result");
    assert_eq!(result.pid, Some(pid));
    let _restored = Ended(pid);
    let log = result.output_log.expect("the terminal's log");

    // Attached from another pane (another size): typed into, answered there.
    tmux.attach("viewer", 90, 25, &d.socket, pid);
    tmux.keys("viewer", &["hello", "Enter"]);
    tmux.wait_for("viewer", "got hello 1 (90x25)");
    // A new window size reaches it.
    assert!(tmux
        .cmd(&["resize-window", "-t", "viewer", "-x", "70", "-y", "20"])
        .status
        .success());
    tmux.keys("viewer", &["size", "Enter"]);
    tmux.wait_for("viewer", "got size 2 (70x20)");

    // Detached, it runs on; its output goes on into the log.
    tmux.keys("viewer", &["C-p", "C-q"]);
    tmux.wait_for("viewer", &format!("detached from pid {pid}"));
    let ticks = |text: &str| text.lines().filter(|l| l.starts_with("tick")).count();
    let before = ticks(&std::fs::read_to_string(&log).unwrap());
    wait_until("ticks in the log while detached", || {
        ticks(&std::fs::read_to_string(&log).unwrap()) >= before + 3
    });
    assert_eq!(proc_state(pid).map(|s| s != 'Z'), Some(true));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("got hello 1 (90x25)"), "{logged}");

    // The daemon killed -9 and started again: the terminal's holder is not the daemon, so the
    // program never got a hang-up, and it is found again by its pid.
    d.crash(|| {}).await;
    assert_eq!(proc_state(pid).map(|s| s != 'Z'), Some(true));
    // Attached again: still answering.
    tmux.attach("again", 80, 24, &d.socket, pid);
    tmux.keys("again", &["back", "Enter"]);
    tmux.wait_for("again", "got back 3 (80x24)");
    let ckpt_said = said.to_string();
    assert!(ckpt_said.contains(&log), "{ckpt_said}");
}

/// A restored process the test made, killed when the test ends (its terminal's holder then
/// ends too).
struct Ended(i32);

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

#[tokio::test]
async fn a_member_attaches_only_to_its_own() {
    use ckptd_tests::members::Fixture;
    let f = Fixture::new().await;
    let roots = Target::looper(f.d.dir.path());
    let (code, answer) = f.alice("POST", &format!("/v1/terminals/{}/attach", roots.pid), None);
    assert_eq!(code, 403, "{answer}");
    // Root asking for a process without a held terminal is told so.
    let (code, answer) = f.root("POST", &format!("/v1/terminals/{}/attach", roots.pid), None);
    assert_eq!(code, 404, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no terminal held by ckptd"),
        "{answer}"
    );
    // Her own process without one: 404 too (never 403).
    let hers = f.alice_counter("no-tty", "", &[]);
    let (code, answer) = f.alice("POST", &format!("/v1/terminals/{}/attach", hers.pid), None);
    assert_eq!(code, 404, "{answer}");
}

/// A member's program in a terminal of hers: checkpointed and restored by her (an unprivileged
/// CRIU, onto a terminal that is hers), and attached to by her. Her program on root's terminal
/// is refused, since her CRIU could not give that terminal back.
#[tokio::test]
async fn a_members_terminal_program_is_hers_to_attach_to() {
    use ckptd_tests::members::Fixture;
    let f = Fixture::new().await;
    // Her own tmux: its terminals are hers, as a login's are.
    let tmux = Tmux::as_user("member-tty", (f.alice_uid, f.alice_gid), f.dir.path());
    let program = f.dir.path().join("program.py");
    std::fs::write(&program, PROGRAM).unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let pid = tmux.program(
        "app",
        &format!("exec /usr/bin/python3 {}", program.display()),
    );
    // Her program on root's terminal (root's tmux) cannot be given that terminal back by her
    // CRIU: refused before anything is frozen, saying what to do.
    let roots = Tmux::new("member-on-roots");
    let on_roots = roots.program(
        "app",
        &format!(
            "exec setpriv --reuid {} --regid {} --init-groups /usr/bin/python3 {}",
            f.alice_uid,
            f.alice_gid,
            program.display()
        ),
    );
    let (code, answer) = f.alice(
        "POST",
        "/v1/checkpoints?wait=true",
        Some(serde_json::json!({"target": {"kind": "process", "pid": on_roots}})),
    );
    assert_eq!(code, 422, "{answer}");
    let msg = answer["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("controlling terminal belongs to uid 0"),
        "{msg}"
    );
    roots.keys("app", &["still", "Enter"]);
    roots.wait_for("app", "got still 1 (100x30)");
    drop(roots);
    // On her own terminal: checkpointed, restored, attached to.
    let (code, answer) = f.alice(
        "POST",
        "/v1/checkpoints?wait=true",
        Some(serde_json::json!({"target": {"kind": "process", "pid": pid}, "name": "hers"})),
    );
    assert_eq!(code, 201, "{answer}\n{}", f.d.log());
    wait_until("her program to end", || proc_state(pid).is_none());
    let (code, answer) = f.alice(
        "POST",
        "/v1/checkpoints/hers/restore?wait=true",
        Some(serde_json::json!({})),
    );
    assert_eq!(code, 200, "{answer}\n{}", f.d.log());
    assert_eq!(answer["job"]["result"]["pid"], pid, "{answer}");
    let _restored = Ended(pid);
    // She attaches, as herself.
    tmux.attach("viewer", 90, 25, &f.d.socket, pid);
    tmux.keys("viewer", &["hello", "Enter"]);
    tmux.wait_for("viewer", "got hello 1 (90x25)");
}
