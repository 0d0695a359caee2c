//! Members of the socket group as real users (useradd) with real peer credentials: clients and
//! targets run under `setpriv` as those users. The fixture of the authorization and member
//! boundary tests.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::{json, Value};

use crate::{Daemon, Target};

/// A group and users created for this test, removed at the end.
pub struct Accounts {
    pub group: String,
    pub users: Vec<String>,
}

impl Accounts {
    pub fn create() -> Accounts {
        // Unique per test, also between tests of one binary running at once.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let group = format!("ckt{n}");
        let run = |args: &[&str]| {
            let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
            assert!(st.success(), "{args:?}");
        };
        run(&["groupadd", &group]);
        let member = format!("cka{n}");
        let outsider = format!("ckb{n}");
        run(&[
            "useradd",
            "-M",
            "-N",
            "-s",
            "/usr/sbin/nologin",
            "-G",
            &group,
            &member,
        ]);
        run(&["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", &outsider]);
        Accounts {
            group,
            users: vec![member, outsider],
        }
    }

    pub fn ids(&self, user: &str) -> (u32, u32) {
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").arg(flag).arg(user).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        (id("-u"), id("-g"))
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).status();
        }
        let _ = Command::new("groupdel").arg(&self.group).status();
    }
}

/// `curl` over the daemon's socket as `user`: (HTTP status, body), or None when it cannot connect.
pub fn curl_as(
    d: &Daemon,
    acc: &Accounts,
    user: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let (uid, gid) = acc.ids(user);
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        &uid.to_string(),
        "--regid",
        &gid.to_string(),
        "--init-groups",
        "curl",
    ]);
    curl(cmd, d, method, path, body)
}

/// `curl` over the daemon's socket as root: (HTTP status, body).
pub fn curl_as_root(
    d: &Daemon,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    curl(Command::new("curl"), d, method, path, body)
}

/// Runs `cmd` (curl, or a wrapper whose arguments end in `curl`) on `method path` with `body`.
fn curl(
    mut cmd: Command,
    d: &Daemon,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    cmd.args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&d.socket)
        .args(["-X", method]);
    if let Some(b) = body {
        cmd.args(["-d", &b.to_string()]);
    }
    let out = cmd.arg(format!("http://ckptd{path}")).output().unwrap();
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    Some((
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}

/// The shared fixture: two users (alice in the socket group, bob outside it), a daemon whose
/// allowed_dirs is `allowed` (root's, 1777 as a shared parent would be), and alice's own
/// directory inside it.
pub struct Fixture {
    pub acc: Accounts,
    pub d: Daemon,
    pub alice: String,
    pub bob: String,
    pub alice_uid: u32,
    pub alice_gid: u32,
    pub dir: tempfile::TempDir,
    pub allowed: std::path::PathBuf,
    pub mine: std::path::PathBuf,
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture::with_config("").await
    }

    /// With more lines of configuration (e.g. a `criu_config`).
    pub async fn with_config(extra: &str) -> Fixture {
        let acc = Accounts::create();
        let (alice, bob) = (acc.users[0].clone(), acc.users[1].clone());
        let (alice_uid, alice_gid) = acc.ids(&alice);
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::set_permissions(&allowed, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        let mine = allowed.join(&alice);
        std::fs::create_dir(&mine).unwrap();
        chown(&mine, alice_uid, alice_gid);
        let toml = dir.path().join("ckptd.toml");
        std::fs::write(
            &toml,
            format!("allowed_dirs = [\"{}\"]\n{extra}", allowed.display()),
        )
        .unwrap();
        let d = Daemon::start_with(&[
            "--socket-group",
            &acc.group,
            "--config",
            toml.to_str().unwrap(),
        ])
        .await;
        // Let the users reach the socket's directory and the allowed one.
        for p in [d.dir.path(), dir.path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fixture {
            acc,
            d,
            alice,
            bob,
            alice_uid,
            alice_gid,
            dir,
            allowed,
            mine,
        }
    }

    /// `curl` as alice.
    pub fn alice(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        curl_as(&self.d, &self.acc, &self.alice, method, path, body).expect("alice connects")
    }

    /// `curl` as root.
    pub fn root(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        curl_as_root(&self.d, method, path, body).expect("root connects")
    }

    /// Runs `sh -c script` as alice and checks it succeeded.
    pub fn sh_as_alice(&self, script: &str) {
        let st = Command::new("setpriv")
            .args([
                "--reuid",
                &self.alice_uid.to_string(),
                "--regid",
                &self.alice_gid.to_string(),
                "--init-groups",
                "sh",
                "-c",
                script,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "as alice: {script}");
    }

    /// A process of alice's that counts on its stdout (a file of hers), as the looper does.
    /// `extra` is Python run first (e.g. opening a file it then holds); `setpriv` may add flags.
    pub fn alice_counter(&self, name: &str, extra: &str, setpriv: &[&str]) -> Target {
        let out = self.d.dir.path().join(format!("{name}.out"));
        std::fs::File::create(&out).unwrap();
        chown(&out, self.alice_uid, self.alice_gid);
        let script = format!(
            "import time\n{extra}\ni=0\nwhile True:\n    print(i, flush=True); i+=1; time.sleep(0.05)"
        );
        let uid = self.alice_uid.to_string();
        let gid = self.alice_gid.to_string();
        let mut argv = vec!["setpriv", "--reuid", &uid, "--regid", &gid];
        if setpriv.is_empty() {
            argv.push("--init-groups");
        }
        argv.extend_from_slice(setpriv);
        argv.extend_from_slice(&["/usr/bin/python3", "-c", &script]);
        let t = Target::spawn(&argv, &out);
        t.wait_for_lines(2);
        t
    }
}

pub fn chown(p: &std::path::Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

pub fn proc_(p: i32) -> Value {
    json!({"kind": "process", "pid": p})
}
