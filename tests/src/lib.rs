//! Harness for ckptd's end-to-end tests: the real daemon binary on a private socket and state
//! directory, real target processes, the real CRIU. Nothing here fakes CRIU.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use ckptd_api as api;

pub mod members;

/// One scenario of `scenarios`: a boxed future over the shared fixtures.
pub type Scenario<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// A checkpoint request of `target` named `name`, everything else at its default; a test sets
/// what it needs with struct update syntax:
/// `CreateCheckpoint { leave_running: true, ..checkpoint(target, "x") }`.
pub fn checkpoint(
    target: impl Into<Option<api::Target>>,
    name: impl Into<String>,
) -> api::CreateCheckpoint {
    api::CreateCheckpoint {
        target: target.into(),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Runs scenarios that share costly fixtures (a dockerd, real users) one after another. Each runs
/// even when an earlier one failed; the test then fails naming every scenario that failed, with
/// its panic message, so one broken scenario never hides the others.
pub async fn scenarios(list: Vec<(&'static str, Scenario<'_>)>) {
    use futures_util::FutureExt;
    let total = list.len();
    let mut failed = Vec::new();
    for (name, scenario) in list {
        eprintln!("--- scenario: {name}");
        if let Err(panic) = std::panic::AssertUnwindSafe(scenario).catch_unwind().await {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panicked".into());
            failed.push(format!("{name}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} scenarios failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// A list query written as its query string (`"pid=4&label=a=b"`), parsed as the daemon would.
pub fn q<T: serde::de::DeserializeOwned>(query: impl AsRef<str>) -> T {
    ckptd_api::query::parse(query.as_ref()).expect("a valid query string")
}
use ckptd_api::Client;

/// A binary of this workspace (target/<profile>/NAME, beside the test's deps dir). `cargo test`
/// does not rebuild another crate's binary, so the first call in a test process builds both
/// binaries: a test never runs a stale one.
pub fn workspace_binary(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build", "--quiet", "-p", "ckptd", "--bin", "ckptd", "-p", "ckpt", "--bin", "ckpt",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the binaries");
        assert!(
            status.success(),
            "building the ckptd and ckpt binaries failed"
        );
    });
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing after cargo build",
        bin.display()
    );
    bin
}

pub fn daemon_binary() -> PathBuf {
    workspace_binary("ckptd")
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub client: Client,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Runs inside this pid namespace (`PidNamespace`), entered with nsenter.
    ns_init: Option<i32>,
}

/// A pid namespace (and mount namespace with its own /proc) of the test's making, held by a
/// small reaping init: a second "host" whose restored processes get the pids they had on the
/// first, as they would on another machine.
pub struct PidNamespace {
    holder: Child,
    /// The namespace's init, as the test's namespace numbers it.
    pub init: i32,
}

impl PidNamespace {
    pub fn start() -> PidNamespace {
        let holder = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", "python3", "-c"])
            .arg("import os, time\nwhile True:\n    try:\n        os.wait()\n    except ChildProcessError:\n        time.sleep(0.2)")
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let h = holder.id();
        let mut init = None;
        wait_until("the pid namespace's init", || {
            init = std::fs::read_to_string(format!("/proc/{h}/task/{h}/children"))
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse().ok());
            init.is_some()
        });
        PidNamespace {
            holder,
            init: init.unwrap(),
        }
    }

    /// Every process in the namespace, as the test's namespace numbers them.
    pub fn outer_pids(&self) -> Vec<i32> {
        let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/pid", self.init)) else {
            return Vec::new();
        };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|p| {
                std::fs::read_link(format!("/proc/{p}/ns/pid"))
                    .ok()
                    .as_ref()
                    == Some(&ns)
            })
            .collect()
    }

    /// The pid, in the test's namespace, of the process this namespace calls `pid`.
    pub fn outer_pid(&self, pid: i32) -> Option<i32> {
        for p in self.outer_pids() {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let inner = status
                .lines()
                .find(|l| l.starts_with("NSpid:"))
                .and_then(|l| l.split_whitespace().last()?.parse::<i32>().ok());
            if inner == Some(pid) {
                return Some(p);
            }
        }
        None
    }
}

impl Drop for PidNamespace {
    fn drop(&mut self) {
        // --kill-child: the init, and with it everything in the namespace, dies with unshare.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl Daemon {
    /// A checkpoint job CRIU fails (code criu_failed, cause tcp_established): a process holding
    /// an established TCP connection, checkpointed, named `name`, without tcp_established. The
    /// process keeps running; it is returned so that the caller holds it.
    pub async fn failing_tcp_checkpoint(&self, name: &str) -> Target {
        let tcp = Target::python(self.dir.path(), name, 1, true);
        self.client
            .create_checkpoint(
                &ckptd_api::CreateCheckpoint {
                    target: Some(ckptd_api::Target::Process { pid: tcp.pid }),
                    name: Some(name.into()),
                    leave_running: true,
                    ..Default::default()
                },
                true,
            )
            .await
            .expect_err("CRIU refuses the established connection");
        tcp
    }

    /// Starts a daemon with its own socket and state directory and waits until it answers.
    pub async fn start() -> Daemon {
        Self::start_with(&[]).await
    }

    pub async fn start_with(args: &[&str]) -> Daemon {
        Self::start_as(args, None).await
    }

    /// A daemon inside `ns` (a second host's pids), with `args`.
    pub async fn start_in(ns: &PidNamespace, args: &[&str]) -> Daemon {
        Self::start_as(args, Some(ns.init)).await
    }

    async fn start_as(args: &[&str], ns_init: Option<i32>) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("ckptd-test-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("ckptd.sock");
        let state_dir = dir.path().join("state");
        let mut d = Daemon {
            client: Client::new(&socket),
            socket,
            state_dir,
            dir,
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            ns_init,
        };
        d.spawn().await;
        d
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The address of the daemon's TCP listener (`--tcp-listen 127.0.0.1:0`), from its log.
    pub fn tcp_addr(&self) -> String {
        self.log()
            .lines()
            .find(|l| l.contains("also serving on TCP"))
            .and_then(|l| l.split("addr=").nth(1))
            .map(|a| a.split_whitespace().next().unwrap().to_owned())
            .expect("the TCP address in the log")
    }

    /// The daemon's pid (in a pid namespace: the ckptd nsenter started, as the test sees it).
    pub fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("running").id();
        if self.ns_init.is_none() {
            return child as i32;
        }
        let mut inner = None;
        wait_until("ckptd under nsenter", || {
            inner = self.nsenter_child();
            inner.is_some()
        });
        inner.unwrap()
    }

    fn nsenter_child(&self) -> Option<i32> {
        let child = self.child.as_ref()?.id();
        std::fs::read_to_string(format!("/proc/{child}/task/{child}/children"))
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
    }

    async fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("daemon log");
        let mut cmd = match self.ns_init {
            Some(init) => {
                let mut c = Command::new("nsenter");
                c.args(["--target", &init.to_string(), "--pid", "--mount", "--"])
                    .arg(daemon_binary());
                c
            }
            None => Command::new(daemon_binary()),
        };
        let child = cmd
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra_args)
            .env("CKPTD_LOG", "info,ckptd=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start ckptd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.client.health().await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ckptd exited at start with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "ckptd did not answer within 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Root's health checks over the socket, `n` of them one after another: each must be
    /// answered within `within` (a flood of other clients must not starve root).
    pub async fn assert_health_answers_within(&self, n: usize, within: Duration) {
        for i in 0..n {
            let started = Instant::now();
            self.client.health().await.expect("health answers");
            let took = started.elapsed();
            assert!(took < within, "health #{i} took {took:?}");
        }
    }

    /// Holds up under `flood`, a helper that opens thousands of connections and prints how many
    /// it opened once done: root's health answers within 100 ms while it connects and after,
    /// and the daemon's descriptors stay within its per-peer limit (64) and a margin.
    pub async fn assert_survives_flood(&self, flood: &Target) {
        self.assert_health_answers_within(50, Duration::from_millis(100))
            .await;
        flood.wait_for_lines(1);
        let said = flood.lines();
        let opened: usize = said[0]
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the flood failed: {said:?}"));
        assert!(opened > 0, "the flood opened nothing");
        assert!(self.open_fds() < 64 + 64, "{} descriptors", self.open_fds());
        self.assert_health_answers_within(20, Duration::from_millis(100))
            .await;
    }

    /// How many descriptors the daemon holds open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("the daemon's /proc")
            .count()
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        signal(self.pid(), libc::SIGTERM);
        let mut child = self.child.take().expect("daemon running");
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ckptd did not stop on SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls a job until `pred` holds (up to 30 s) and returns it.
    pub async fn wait_job(&self, id: &str, pred: impl Fn(&api::Job) -> bool) -> api::Job {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let job = self.client.job(id, None).await.expect("job");
            if pred(&job) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} stayed {:?}", job.state);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The jobs of one kind, newest first.
    pub async fn jobs_of(&self, kind: api::JobKind) -> Vec<api::Job> {
        self.client
            .jobs(&api::query::JobQuery {
                kind: Some(kind),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
    }

    /// Restores `checkpoint` as `req` asks with CRIU held at post-restore by `pause` (a CRIU
    /// that never ends, under whatever runtime runs it) and interrupts the job there as `how`
    /// says. `Interrupt::Cancel`: the job ends cancelled. `Interrupt::Timeout`: the daemon,
    /// started again with `job_timeout_secs = 3` first, fails the job as timed out.
    /// `Interrupt::Crash`: this daemon is killed (kill -9) and started again with
    /// `job_timeout_secs = 3`, which bounds the recovery's wait for a CRIU the crash left; the
    /// job fails as a restart's recovery fails it. Each way the held CRIU is gone, and the
    /// daemon runs on as it was configured. Returns the job.
    pub async fn restore_interrupted_while_held(
        &mut self,
        pause: &Pause,
        checkpoint: &str,
        req: &api::RestoreRequest,
        how: Interrupt,
    ) -> api::Job {
        let config = self.config_file();
        let before = std::fs::read_to_string(&config).unwrap();
        let short_timeout = format!("{before}\njob_timeout_secs = 3\n");
        if how == Interrupt::Timeout {
            std::fs::write(&config, &short_timeout).unwrap();
            self.restart().await;
        }
        pause.arm("post-restore");
        let job = self.client.restore(checkpoint, req, false).await.unwrap();
        let criu = pause.reached("post-restore");
        let job = match how {
            Interrupt::Cancel => {
                self.client.cancel_job(&job.id.to_string()).await.unwrap();
                let job = self.wait_ended(&job.id.to_string()).await;
                assert_eq!(job.state, api::JobState::Cancelled, "{job:?}");
                job
            }
            Interrupt::Timeout => {
                let job = self.wait_ended(&job.id.to_string()).await;
                assert_eq!(job.state, api::JobState::Failed, "{job:?}");
                let error = job.error.as_ref().expect("the job's error");
                assert_eq!(error.code, "timeout", "{error:?}");
                job
            }
            Interrupt::Crash => {
                self.crash(|| std::fs::write(&config, &short_timeout).unwrap())
                    .await;
                let job = self.wait_ended(&job.id.to_string()).await;
                assert_eq!(job.state, api::JobState::Failed, "{job:?}");
                let error = job.error.as_ref().expect("the job's error");
                assert!(error.message.contains("restarted"), "{error:?}");
                job
            }
        };
        if how != Interrupt::Cancel {
            std::fs::write(&config, before).unwrap();
            self.restart().await;
        }
        wait_until("the CRIU held at post-restore to end", || {
            !alive(criu) || proc_state(criu) == Some('Z')
        });
        job
    }

    /// Takes checkpoint `req` with CRIU held at post-dump by `pause` (a CRIU that never ends,
    /// under whatever runtime runs it) and kills this daemon there (kill -9). It is started again
    /// with `job_timeout_secs = 3`, which bounds the recovery's wait for a CRIU the crash left,
    /// then once more as it was. Asserts the job failed as a restart's recovery fails it and the
    /// held CRIU is gone; returns the job.
    pub async fn checkpoint_killed_while_held(
        &mut self,
        pause: &Pause,
        req: &api::CreateCheckpoint,
    ) -> api::Job {
        let config = self.config_file();
        let before = std::fs::read_to_string(&config).unwrap();
        pause.arm("post-dump");
        let job = self.client.create_checkpoint(req, false).await.unwrap().job;
        let criu = pause.reached("post-dump");
        self.crash(|| {
            std::fs::write(&config, format!("{before}\njob_timeout_secs = 3\n")).unwrap()
        })
        .await;
        let job = self.wait_ended(&job.id.to_string()).await;
        assert_eq!(job.state, api::JobState::Failed, "{job:?}");
        std::fs::write(&config, before).unwrap();
        self.restart().await;
        wait_until("the CRIU held at post-dump to end", || {
            !alive(criu) || proc_state(criu) == Some('Z')
        });
        job
    }

    /// The daemon's configuration file: the one `--config` names, or an empty one in its
    /// directory, named to its later starts.
    fn config_file(&mut self) -> PathBuf {
        if let Some(i) = self.extra_args.iter().position(|a| a == "--config") {
            return PathBuf::from(&self.extra_args[i + 1]);
        }
        let path = self.dir.path().join("ckptd.toml");
        std::fs::write(&path, "").unwrap();
        self.extra_args
            .extend(["--config".to_owned(), path.display().to_string()]);
        path
    }

    /// Long-polls job `id` until it has ended (up to 120 s) and returns it.
    pub async fn wait_ended(&self, id: &str) -> api::Job {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job = self
                .client
                .job(id, Some(Duration::from_secs(5)))
                .await
                .expect("job");
            if job.state.is_finished() {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not end");
        }
    }

    /// Restores `checkpoint` as `req` asks and kills this daemon (kill -9, then started again)
    /// once `reached` says `moment` has come; the job as the restart's recovery settles it. A
    /// restore that ended before the moment is undone by `undo` and tried again, up to 5 times.
    pub async fn restore_killed_when(
        &mut self,
        checkpoint: &str,
        req: &api::RestoreRequest,
        moment: &str,
        reached: impl Fn() -> bool,
        undo: impl Fn(),
    ) -> api::Job {
        for _ in 0..5 {
            let job = self.client.restore(checkpoint, req, false).await.unwrap();
            let id = job.id.to_string();
            loop {
                if reached() {
                    self.crash(|| {}).await;
                    return self.wait_ended(&id).await;
                }
                if self
                    .client
                    .job(&id, None)
                    .await
                    .unwrap()
                    .state
                    .is_finished()
                {
                    break;
                }
            }
            undo();
        }
        panic!("no kill fell when {moment} in 5 restores of {checkpoint}");
    }

    /// `ckpt ARGS` against this daemon: the real CLI binary, its output whatever its exit.
    pub fn ckpt(&self, args: &[&str]) -> std::process::Output {
        Command::new(workspace_binary("ckpt"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run ckpt")
    }

    /// Forgets a daemon that the test killed itself (reaping it).
    pub fn kill_and_forget(&mut self) {
        if let Some(p) = self.ns_init.and(self.nsenter_child()) {
            signal(p, libc::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9 of the daemon, `meanwhile` done while it is down, then a start on the same socket
    /// and state directory: a crash at the moment the test chose.
    pub async fn crash(&mut self, meanwhile: impl FnOnce()) {
        self.kill_and_forget();
        meanwhile();
        self.spawn().await;
    }

    /// Starts the daemon again after `stop`, on the same socket and state directory.
    pub async fn restart_after_stop(&mut self) {
        assert!(self.child.is_none(), "daemon still running");
        self.spawn().await;
    }

    pub async fn restart(&mut self) {
        let status = self.stop().await;
        assert!(
            status.success(),
            "ckptd exited with {status}:\n{}",
            self.log()
        );
        self.spawn().await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(p) = self.ns_init.and(self.nsenter_child()) {
            signal(p, libc::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// State letter of a process from /proc/PID/stat, or None once it is gone (or reaped).
pub fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..].trim_start().chars().next()
}

/// A process that counts (one line every 0.05 s) and holds `mib` MiB of random memory (pages
/// that do not compress) and a marker string.
pub fn counter(dir: &Path, name: &str, mib: usize) -> Target {
    let script = format!(
        r#"
import os, time
noise = os.urandom({mib} * 1024 * 1024)
marker = "-".join(["ckptd", "secret", "marker"]) * 64
i = 0
while True:
    print(i, flush=True)
    i += 1
    time.sleep(0.05)
"#
    );
    let t = Target::spawn(
        &["python3", "-c", &script],
        &dir.join(format!("{name}.out")),
    );
    t.wait_for_lines(3);
    t
}

/// The mount points at or below `dir` (from /proc/self/mountinfo): a CRIU killed mid-restore
/// leaves its cgroup yard mounted in its work directory unless the daemon takes it down.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("/proc/self/mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

pub fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// A target process that the test started. Its own session (`setsid`), stdin /dev/null and
/// output to a file, as CRIU wants a tree it can dump without `shell_job`.
pub struct Target {
    pub pid: i32,
    pub out: PathBuf,
    child: Option<Child>,
}

impl Target {
    /// Runs `argv` in a new session with stdout and stderr to `out`.
    pub fn spawn(argv: &[&str], out: &Path) -> Target {
        let f = File::create(out).expect("output file");
        let mut cmd = Command::new("setsid");
        // From `/`: a target run as a member must be able to reach its working directory
        // (CRIU stats it), and the clone may be under a directory only root enters.
        cmd.args(argv)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let child = cmd.spawn().expect("spawn target");
        let pid = child.id() as i32;
        Target {
            pid,
            out: out.to_owned(),
            child: Some(child),
        }
    }

    /// The seed's looper: prints 0, 1, 2, ... one line every 0.1 s.
    pub fn looper(dir: &Path) -> Target {
        let t = Self::spawn(
            &[
                "sh",
                "-c",
                "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done",
            ],
            &dir.join("looper.out"),
        );
        t.wait_for_lines(2);
        t
    }

    /// A Python process that counts like the looper, without forking, and optionally holds
    /// `mib` MiB of touched memory and/or a loopback TCP connection to itself.
    pub fn python(dir: &Path, name: &str, mib: usize, tcp: bool) -> Target {
        let script = format!(
            r#"
import socket, sys, time
mem = bytearray({mib} * 1024 * 1024)
for i in range(0, len(mem), 4096):
    mem[i] = 1
if {tcp}:
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    cli = socket.create_connection(srv.getsockname()); peer, _ = srv.accept()
i = 0
while True:
    if {tcp}:
        cli.sendall(b"x"); assert peer.recv(1) == b"x"
    print(i, flush=True)
    i += 1
    time.sleep(0.05)
"#,
            tcp = if tcp { "True" } else { "False" }
        );
        let t = Self::spawn(
            &["python3", "-c", &script],
            &dir.join(format!("{name}.out")),
        );
        t.wait_for_lines(2);
        t
    }

    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn wait_for_lines(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.lines().len() < n {
            assert!(
                Instant::now() < deadline,
                "target {} printed {} lines, wanted {n}: {:?}",
                self.pid,
                self.lines().len(),
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when the output grows within `within`.
    pub fn is_progressing(&self, within: Duration) -> bool {
        let before = self.lines().len();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            if self.lines().len() > before {
                return true;
            }
        }
        false
    }

    /// Reaps the test's own child once a checkpoint has ended it; the restored tree is no
    /// longer our child (CRIU restores it detached).
    pub fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Checks that the output is exactly 0, 1, 2, ..., n-1: no gap, no repeat.
    pub fn assert_contiguous(&self) -> usize {
        let lines = self.lines();
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(
                l.trim(),
                i.to_string(),
                "line {i} of {} breaks the sequence: {lines:?}",
                self.out.display()
            );
        }
        lines.len()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // The process (or its restored twin, which has the same pid) and its children.
        signal(-self.pid, libc::SIGKILL);
        signal(self.pid, libc::SIGKILL);
        self.reap();
    }
}

/// A container id unique to this test process and call.
pub fn unique_id(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// The looper as a container's process: it opens /out.log itself and counts into it.
pub const CONTAINER_LOOPER: &str =
    "exec >>/out.log 2>&1; i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done";

/// The looper writing to its stdout, whatever runc gave it.
pub const CONTAINER_LOOPER_STDOUT: &str =
    "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done";

/// An OCI bundle: `config.json` from `runc spec` and a busybox-static root filesystem.
pub struct Bundle {
    pub dir: PathBuf,
}

impl Bundle {
    /// Builds a bundle in `dir` running `sh -c script`; `edit` may change config.json.
    pub fn busybox(dir: &Path, script: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Bundle {
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        for d in ["proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("/bin/busybox (busybox-static; make setup installs it)");
        for applet in ["sh", "sleep", "echo", "cat", "mkdir"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let out = Command::new("runc")
            .arg("spec")
            .current_dir(dir)
            .output()
            .expect("runc spec");
        assert!(
            out.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        cfg["process"]["terminal"] = false.into();
        cfg["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        cfg["root"]["readonly"] = false.into();
        edit(&mut cfg);
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        Bundle {
            dir: dir.to_owned(),
        }
    }

    /// A copy of the whole bundle (config and root filesystem) in `dir`.
    pub fn copy_to(&self, dir: &Path) -> Bundle {
        let st = Command::new("cp")
            .arg("-a")
            .arg(&self.dir)
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
        Bundle {
            dir: dir.to_owned(),
        }
    }

    /// Lines the looper wrote to /out.log inside the container.
    pub fn out_lines(&self) -> Vec<String> {
        read_lines(&self.dir.join("rootfs/out.log"))
    }
}

pub fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Checks that `lines` are exactly 0, 1, 2, ...: no gap, no repeat.
pub fn assert_counts(lines: &[String], what: &str) {
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            l.trim(),
            i.to_string(),
            "line {i} of {what} breaks the sequence: {lines:?}"
        );
    }
}

/// Waits until `f()` holds, up to 20 s.
pub fn wait_until(what: &str, f: impl FnMut() -> bool) {
    wait_until_else(what, f, String::new)
}

/// `wait_until`, whose failure also says what `explain` finds then (the state the test could
/// not see change).
pub fn wait_until_else(what: &str, f: impl FnMut() -> bool, explain: impl FnOnce() -> String) {
    wait_until_within(what, Duration::from_secs(20), f, explain)
}

/// `wait_until_else` with a limit of its own: for what takes as long as the machine's load
/// makes it (CRIU writing a GiB reaches its pause in 2 s idle, and took over 20 s with both
/// CPUs busy and the suite's other work running).
pub fn wait_until_within(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on 127.0.0.1 that is free now, for a server a test starts (moto, the registry,
/// Prometheus). It is taken below the kernel's ephemeral range (`ip_local_port_range`), where
/// neither `bind(0)` nor a connect's source port lands. A port `bind(0)` picked and released can
/// be handed to the next `bind(0)` (another test's server, a daemon's `--tcp-listen
/// 127.0.0.1:0`) before the server binds it; and a probe's connect to an ephemeral port no one
/// listens on yet can connect to itself (TCP's simultaneous open, when its source port is that
/// port). Either looks like the server listening: a CI run once failed so, its server refusing
/// the first request after the probe had "connected".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("read /proc/sys/net/ipv4/ip_local_port_range");
    let low: u32 = range
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .expect("the ephemeral range's low end");
    const SPAN: u32 = 10_000;
    assert!(
        low > SPAN + 1024,
        "the ephemeral range starts at {low}: too low to leave test servers room below it"
    );
    let base = low - SPAN;
    // Test binaries run one after another and their tests share this counter: each binary starts
    // at its own offset, so even a port whose server was just stopped is not the next one used.
    let start = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {base}..{low}");
}

/// Waits until `child`, a server a test started, listens on 127.0.0.1:`port` itself: the
/// listening socket must be one of its descriptors, so another server on that port (or a probe
/// connected to itself) is not taken for it. Fails at once, with the end of its log, if it exits
/// first (the port taken after all, a bad config).
pub fn wait_until_serving(what: &str, child: &mut Child, port: u16, log: &Path) {
    wait_until_within(
        &format!("{what} to listen on 127.0.0.1:{port}"),
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                panic!(
                    "{what} exited ({status}) before it listened on 127.0.0.1:{port}; its log \
                     ({}) ends:\n{}",
                    log.display(),
                    tail(&text, 30)
                );
            }
            listens_on(child.id(), port)
        },
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            format!("its log ({}) ends:\n{}", log.display(), tail(&text, 30))
        },
    );
}

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port` (or on every address).
fn listens_on(pid: u32, port: u16) -> bool {
    use procfs::net::TcpState;
    use procfs::process::{FDTarget, Process};
    let Ok(entries) = procfs::net::tcp() else {
        return false;
    };
    let inodes: Vec<u64> = entries
        .iter()
        .filter(|e| {
            e.state == TcpState::Listen
                && e.local_address.port() == port
                && (e.local_address.ip().is_loopback() || e.local_address.ip().is_unspecified())
        })
        .map(|e| e.inode)
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = Process::new(pid as i32).and_then(|p| p.fd()) else {
        return false;
    };
    fds.flatten()
        .any(|fd| matches!(fd.target, FDTarget::Socket(ino) if inodes.contains(&ino)))
}

/// CRIU's connection locks (iptables rules with its mark) from or to any of `ports`.
pub fn criu_locks(ports: &[String]) -> Vec<String> {
    let out = std::process::Command::new("iptables")
        .args(["-w", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.contains("0xc114")
                && ports.iter().any(|p| {
                    l.contains(&format!("--sport {p} ")) || l.contains(&format!("--dport {p} "))
                })
        })
        .map(str::to_owned)
        .collect()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every file under `dir` whose name ends in `suffix`, with its last `n` lines: the CRIU logs
/// a daemon kept, for a failure's report.
pub fn tails_under(dir: &Path, suffix: &str, n: usize) -> String {
    let mut out = String::new();
    for (p, _) in files_under(dir) {
        if p.to_string_lossy().ends_with(suffix) {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out += &format!("--- {}\n{}\n", p.display(), tail(&text, n));
        }
    }
    out
}

/// Every file under `dir` (not following symlinks), with its size.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out
}

/// Where a test container's stdout and stderr go.
pub enum ContainerStdio {
    Null,
    /// A pipe, drained by the test into this file.
    Pipe(PathBuf),
    /// A host file (outside the container's mount namespace).
    HostFile(PathBuf),
}

/// A runc container the test started or that ckptd restored; deleted (killed) on drop.
pub struct Container {
    pub id: String,
    /// The init of the pid namespace it was made in (another host's), if not the test's: runc
    /// knows it by its pid there.
    ns_init: Option<i32>,
}

impl Container {
    pub fn run(bundle: &Bundle, id: &str, stdio: ContainerStdio) -> Container {
        Self::run_with(bundle, id, stdio, &[])
    }

    /// `runc run -d` with extra arguments (e.g. `--console-socket PATH`).
    pub fn run_with(bundle: &Bundle, id: &str, stdio: ContainerStdio, extra: &[&str]) -> Container {
        let mut cmd = Command::new("runc");
        cmd.args(["run", "-d"])
            .args(extra)
            .arg(id)
            .current_dir(&bundle.dir)
            .stdin(Stdio::null());
        match &stdio {
            ContainerStdio::Null => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
            ContainerStdio::HostFile(p) => {
                let f = File::create(p).unwrap();
                cmd.stdout(f.try_clone().unwrap()).stderr(f);
            }
            ContainerStdio::Pipe(_) => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::null());
            }
        }
        let mut child = cmd.spawn().expect("runc run");
        if let ContainerStdio::Pipe(p) = stdio {
            let mut pipe = child.stdout.take().unwrap();
            let mut f = File::create(p).unwrap();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut pipe, &mut f);
            });
        }
        let st = child.wait().unwrap();
        assert!(st.success(), "runc run -d {id} failed");
        let c = Container {
            id: id.to_owned(),
            ns_init: None,
        };
        wait_until("the container to run", || {
            c.status().as_deref() == Some("running")
        });
        c
    }

    /// A container that ckptd restored; the test removes it at the end.
    pub fn adopt(id: &str) -> Container {
        Container {
            id: id.to_owned(),
            ns_init: None,
        }
    }

    /// A container that a daemon in `ns` (another host) restored.
    pub fn adopt_in(ns: &PidNamespace, id: &str) -> Container {
        Container {
            id: id.to_owned(),
            ns_init: Some(ns.init),
        }
    }

    /// `runc ARGS`, in the container's pid namespace.
    fn runc(&self, args: &[&str]) -> Command {
        let mut cmd = match self.ns_init {
            None => Command::new("runc"),
            Some(init) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &init.to_string(), "-p", "-m", "--", "runc"]);
                c
            }
        };
        cmd.args(args);
        cmd
    }

    /// runc's status of it, or None once runc no longer knows it.
    pub fn status(&self) -> Option<String> {
        let out = self.runc(&["state", &self.id]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["status"].as_str().map(str::to_owned)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self
            .runc(&["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A console socket receiver (what runc's `--console-socket` expects): accepts one connection,
/// takes the pty master passed over it, and keeps reading it so the container never blocks.
pub struct ConsoleReceiver {
    pub socket: PathBuf,
    child: Child,
}

impl ConsoleReceiver {
    pub fn start(socket: &Path) -> ConsoleReceiver {
        let script = r#"
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
c, _ = s.accept()
_, fds, _, _ = socket.recv_fds(c, 1024, 1)
while True:
    try:
        if not os.read(fds[0], 4096): time.sleep(0.05)
    except OSError:
        time.sleep(0.05)
"#;
        let child = Command::new("python3")
            .args(["-c", script])
            .arg(socket)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3");
        wait_until("the console socket", || socket.exists());
        ConsoleReceiver {
            socket: socket.to_owned(),
            child,
        }
    }
}

impl Drop for ConsoleReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sha256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// A real OCI registry (the CNCF distribution registry, Debian's `docker-registry`) on
/// 127.0.0.1 with htpasswd (bcrypt) authentication: every request needs the user's password.
/// Its storage is a directory of the test's (so a test can damage a blob). Stopped when dropped.
pub struct RegistryServer {
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`, as image references name it.
    pub host: String,
    pub user: String,
    pub password: String,
    pub dir: tempfile::TempDir,
    /// The CA that signed the server's certificate, when it serves HTTPS (`start_tls`).
    pub ca: Option<PathBuf>,
    child: Option<Child>,
}

impl RegistryServer {
    pub fn start() -> RegistryServer {
        Self::start_with(false)
    }

    /// The same over HTTPS, with a certificate for 127.0.0.1 signed by a CA made here (`ca`).
    pub fn start_tls() -> RegistryServer {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> RegistryServer {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("ckptd-registry-")
            .tempdir()
            .unwrap();
        let password = format!("pw-{}", std::process::id());
        let out = Command::new("htpasswd")
            .args(["-Bbn", "ckptd", &password])
            .output()
            .expect("htpasswd (make setup installs apache2-utils)");
        assert!(out.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
        let root = dir.path().display().to_string();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/storage\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
        );
        let ca = tls.then(|| {
            let sh = |script: &str| {
                let out = Command::new("sh")
                    .arg("-c")
                    .arg(script)
                    .current_dir(dir.path())
                    .output()
                    .expect("openssl");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            sh(
                "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ckptd-test-ca \
                -keyout ca.key -out ca.pem 2>&1 && \
                openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key \
                -out server.csr 2>&1 && \
                printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && \
                openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -days 2 -extfile san.ext -out server.pem 2>&1",
            );
            config.push_str(&format!(
                "  tls:\n    certificate: {root}/server.pem\n    key: {root}/server.key\n"
            ));
            dir.path().join("ca.pem")
        });
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: ckptd-test\n    path: {root}/htpasswd\n"
        ));
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut r = RegistryServer {
            port,
            url: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }),
            host: format!("127.0.0.1:{port}"),
            user: "ckptd".into(),
            password,
            dir,
            ca,
            child: None,
        };
        r.up();
        r
    }

    /// Starts the server (again, on the same port and storage).
    pub fn up(&mut self) {
        let log_path = self.dir.path().join("registry.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (make setup installs it)");
        let mut child = child;
        wait_until_serving("the registry", &mut child, self.port, &log_path);
        self.child = Some(child);
    }

    /// Stops the server (kill -9): requests are refused until `up`.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A credentials file (mode 0600) for a daemon's registry; `password` overrides the real one.
    pub fn credentials_file(&self, name: &str, password: Option<&str>) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "username = \"{}\"\npassword = \"{}\"\n",
                self.user,
                password.unwrap_or(&self.password)
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// `[registries.NAME]` for this server's `repository`: plain HTTP (a test registry), or
    /// HTTPS trusting the server's CA.
    pub fn config(&self, name: &str, repository: &str, credentials: &Path) -> String {
        let trust = match &self.ca {
            Some(ca) => format!("ca_file = \"{}\"\n", ca.display()),
            None => "plain_http = true\n".to_owned(),
        };
        format!(
            "[registries.{name}]\nurl = \"{}\"\nrepository = \"{repository}\"\ncredentials_file = \"{}\"\n{trust}",
            self.url,
            credentials.display()
        )
    }

    /// The file that holds blob `digest` (`sha256:...`) in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `skopeo inspect --raw` of `repository:tag`: the manifest as the registry serves it.
    pub fn manifest(&self, image: &str) -> serde_json::Value {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
            .arg(format!("{}:{}", self.user, self.password))
            .arg(format!("docker://{}/{image}", self.host))
            .output()
            .expect("skopeo (make setup installs it)");
        assert!(
            out.status.success(),
            "skopeo inspect {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("a JSON manifest")
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.down();
    }
}

/// The set-up virtualenv, where `make setup` installs moto's S3 server and boto3.
pub const SETUP_VENV: &str = "/var/cache/ckptd-setup/venv";

/// A real S3-compatible server (moto's standalone server) on 127.0.0.1, with a real IAM user:
/// every request after set-up must be signed (SigV4) with its key. Stopped when dropped.
pub struct S3Server {
    pub endpoint: String,
    pub port: u16,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl S3Server {
    /// Starts the server and makes `buckets`.
    pub fn start(buckets: &[&str]) -> S3Server {
        Self::start_on(free_port(), buckets)
    }

    pub fn start_on(port: u16, buckets: &[&str]) -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("ckptd-s3-")
            .tempdir()
            .unwrap();
        let log_path = dir.path().join("moto.log");
        let log = File::create(&log_path).unwrap();
        let mut child = Command::new(format!("{SETUP_VENV}/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("moto_server (make setup installs it into the set-up virtualenv)");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_until_serving("the S3 server (moto)", &mut child, port, &log_path);
        let mut s = S3Server {
            endpoint,
            port,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            dir,
            child: Some(child),
        };
        let mut args = vec!["setup".to_owned(), s.endpoint.clone()];
        args.extend(buckets.iter().map(|b| b.to_string()));
        let out = s3tool(&args);
        let creds: serde_json::Value = serde_json::from_slice(&out).expect("setup's JSON");
        s.access_key_id = creds["access_key_id"].as_str().unwrap().into();
        s.secret_access_key = creds["secret_access_key"].as_str().unwrap().into();
        s
    }

    /// A credentials file (mode 0600) for a daemon's remote; `secret` overrides the real one.
    pub fn credentials_file(&self, name: &str, secret: Option<&str>) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                self.access_key_id,
                secret.unwrap_or(&self.secret_access_key)
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    fn tool(&self, cmd: &str, bucket: &str, rest: &[&str]) -> Vec<u8> {
        let mut args: Vec<String> = [
            cmd,
            &self.endpoint,
            &self.access_key_id,
            &self.secret_access_key,
            bucket,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(rest.iter().map(|s| s.to_string()));
        s3tool(&args)
    }

    /// Every key in `bucket`.
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        serde_json::from_slice(&self.tool("objects", bucket, &[])).unwrap()
    }

    /// Keys of the multipart uploads in progress in `bucket`.
    pub fn uploads(&self, bucket: &str) -> Vec<String> {
        serde_json::from_slice(&self.tool("uploads", bucket, &[])).unwrap()
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.tool("get", bucket, &[key])
    }

    /// Writes an object whose body is the file `from`, as anyone who can write the bucket can.
    pub fn put(&self, bucket: &str, key: &str, from: &Path) {
        self.tool("put", bucket, &[key, from.to_str().unwrap()]);
    }

    /// Flips one byte of an object.
    pub fn flip(&self, bucket: &str, key: &str, offset: usize) {
        self.tool("flip", bucket, &[key, &offset.to_string()]);
    }

    /// Kills the server at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn s3tool(args: &[String]) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/s3tool.py");
    let out = Command::new(format!("{SETUP_VENV}/bin/python"))
        .arg(script)
        .args(args)
        .output()
        .expect("run s3tool.py");
    assert!(
        out.status.success(),
        "s3tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// How a test interrupts a job it holds (`Daemon::restore_interrupted_while_held`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The job cancelled through the API.
    Cancel,
    /// The job's time (`job_timeout_secs`) run out.
    Timeout,
    /// The daemon killed (kill -9) and started again.
    Crash,
}

/// A fault point inside CRIU: a `criu_config` (give `config_line()` to the daemon) whose
/// `action-script` holds CRIU at one action (`post-dump`, `pre-resume`, ...) once it is armed,
/// until the test lets it go on or fail. The test then acts at that exact moment (kills the
/// daemon, kills CRIU) instead of after a delay whose moment is chance.
pub struct Pause {
    dir: tempfile::TempDir,
}

impl Pause {
    pub fn new() -> Pause {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("ckptd-pause-")
            .tempdir()
            .expect("tempdir");
        // CRIU runs the script as the checkpoint's owner: a member's CRIU too. The script gives
        // up once the test is over (the directory gone) or its CRIU is: never a leftover loop.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let d = dir.path().display();
        let script = dir.path().join("action.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 a=\"$CRTOOLS_SCRIPT_ACTION\"\n\
                 rm \"{d}/arm-$a\" 2>/dev/null || exit 0\n\
                 echo $PPID > \"{d}/reached-$a\"\n\
                 while [ ! -f \"{d}/go\" ]; do\n\
                   [ -d \"{d}\" ] && kill -0 $PPID 2>/dev/null || exit 1\n\
                   sleep 0.02\n\
                 done\n\
                 exit \"$(cat \"{d}/go\")\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("criu.conf"),
            format!("action-script {}\n", script.display()),
        )
        .unwrap();
        std::fs::set_permissions(
            dir.path().join("criu.conf"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Pause { dir }
    }

    /// The CRIU options file that runs the script (a container's `org.criu.config`).
    pub fn criu_conf(&self) -> PathBuf {
        self.dir.path().join("criu.conf")
    }

    /// The daemon's configuration line that makes its CRIU run the script.
    pub fn config_line(&self) -> String {
        format!("criu_config = \"{}\"\n", self.criu_conf().display())
    }

    /// The next time CRIU reaches `action`, it waits there.
    pub fn arm(&self, action: &str) {
        let _ = std::fs::remove_file(self.dir.path().join("go"));
        let _ = std::fs::remove_file(self.dir.path().join(format!("reached-{action}")));
        std::fs::write(self.dir.path().join(format!("arm-{action}")), "").unwrap();
    }

    /// Waits until CRIU waits at `action`; returns the pid of the CRIU that runs the script.
    pub fn reached(&self, action: &str) -> i32 {
        let marker = self.dir.path().join(format!("reached-{action}"));
        let mut pid = None;
        wait_until_within(
            &format!("CRIU to reach {action}"),
            Duration::from_secs(90),
            || {
                pid = std::fs::read_to_string(&marker)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                pid.is_some()
            },
            String::new,
        );
        pid.unwrap()
    }

    /// Lets the waiting CRIU go on (`ok`) or fail at that action.
    pub fn release(&self, ok: bool) {
        let go = self.dir.path().join("go");
        let tmp = self.dir.path().join("go.tmp");
        std::fs::write(&tmp, if ok { "0" } else { "1" }).unwrap();
        std::fs::rename(tmp, go).unwrap();
    }
}

impl Default for Pause {
    fn default() -> Pause {
        Pause::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn every_scenario_runs_and_each_failure_is_named() {
        let ran = AtomicUsize::new(0);
        let r = std::panic::AssertUnwindSafe(super::scenarios(vec![
            ("first", Box::pin(async { panic!("boom one") })),
            (
                "second",
                Box::pin(async {
                    ran.fetch_add(1, Ordering::SeqCst);
                }),
            ),
            ("third", Box::pin(async { panic!("boom three") })),
        ]));
        let err = futures_util::FutureExt::catch_unwind(r).await.unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the one after a failure ran");
        assert!(msg.contains("2 of 3 scenarios failed"), "{msg}");
        assert!(msg.contains("first: boom one"), "{msg}");
        assert!(msg.contains("third: boom three"), "{msg}");
    }
}
