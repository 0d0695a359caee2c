//! Hooks: commands run around a checkpoint or a restore (`pre_dump`, `post_dump`,
//! `post_restore`), and the `post_restore_signal`.
//!
//! A command runs through `nsenter`: in every namespace of the target's root process (`-t PID
//! -a`, entered by root, which only root may do) and then, for a member's target, as the member
//! (`-S UID -G GID`: its uid and gid, no supplementary groups, no capabilities left), so a
//! member's hook never runs as root; in ckptd's own namespaces when the target no longer runs.
//! The working directory is the namespace's `/`, the environment a fixed minimal one plus
//! `CKPTD_HOOK`, `CKPTD_CHECKPOINT` and `CKPTD_PID`. A hook is the owner's own command: it sees
//! nothing the owner could not, so it gets no other check. Its output is kept to its last 4 KiB;
//! it is killed (its process group) at its time limit.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ckptd_api::HookRun;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::sys;

/// A hook's default time limit, and the longest allowed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_TIMEOUT_SECS: u32 = 600;
/// What a hook's run keeps of its output.
const OUTPUT_KEPT: usize = 4096;
/// The environment every hook starts with.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where and as whom a hook runs.
pub struct HookContext<'a> {
    /// `pre_dump`, `post_dump` or `post_restore`.
    pub hook: &'static str,
    pub checkpoint: &'a str,
    /// The target's root process (its namespaces are entered), known by pid and start time;
    /// None: it no longer runs (ckptd's own namespaces).
    pub root: Option<sys::TaskId>,
    /// A member's uid and gid (None: root's target).
    pub owner: Option<(u32, u32)>,
    pub timeout: Duration,
}

/// Refuses hooks that cannot run: empty commands, NULs, an unknown signal, a time limit out of
/// range. `restore` says the hooks are a restore's (no dump hooks then).
pub fn validate(h: &ckptd_api::Hooks, restore: bool) -> Result<()> {
    let commands = [
        ("pre_dump", &h.pre_dump),
        ("post_dump", &h.post_dump),
        ("post_restore", &h.post_restore),
    ];
    for (name, argv) in commands {
        let Some(argv) = argv else { continue };
        if restore && name != "post_restore" {
            return Err(Error::invalid(format!(
                "hooks.{name} belongs to a checkpoint; a restore runs post_restore and \
                 post_restore_signal"
            )));
        }
        if argv.is_empty() {
            return Err(Error::invalid(format!(
                "hooks.{name} is empty; give the command as an argv, e.g. [\"sh\", \"-c\", \"...\"]"
            )));
        }
        if argv.iter().any(|a| a.contains('\0')) || argv.len() > 256 {
            return Err(Error::invalid(format!(
                "hooks.{name} must be at most 256 arguments without NUL"
            )));
        }
    }
    if let Some(s) = &h.post_restore_signal {
        parse_signal(s)?;
    }
    if let Some(t) = h.timeout_seconds {
        if t == 0 || t > MAX_TIMEOUT_SECS {
            return Err(Error::invalid(format!(
                "hooks.timeout_seconds must be 1 to {MAX_TIMEOUT_SECS}, got {t}"
            )));
        }
    }
    Ok(())
}

/// The time limit of each of `h`'s commands.
pub fn timeout(h: &ckptd_api::Hooks) -> Duration {
    h.timeout_seconds
        .map(|s| Duration::from_secs(s.into()))
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// `SIGUSR2`, `USR2` or `12`.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal> {
    use std::str::FromStr;
    let t = s.trim();
    let parsed = match t.parse::<i32>() {
        Ok(n) => nix::sys::signal::Signal::try_from(n).ok(),
        Err(_) => {
            let upper = t.to_ascii_uppercase();
            let name = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            nix::sys::signal::Signal::from_str(&name).ok()
        }
    };
    match parsed {
        Some(sig)
            if sig != nix::sys::signal::Signal::SIGKILL
                && sig != nix::sys::signal::Signal::SIGSTOP =>
        {
            Ok(sig)
        }
        _ => Err(Error::invalid(format!(
            "hooks.post_restore_signal {s:?} is not a signal an application can catch (e.g. \
             SIGUSR2, USR2 or 12)"
        ))),
    }
}

/// Runs one hook command to its end or its time limit.
pub async fn run(argv: &[String], ctx: &HookContext<'_>) -> HookRun {
    let started = Instant::now();
    let mut report = HookRun {
        hook: ctx.hook.to_owned(),
        command: argv.to_vec(),
        ..Default::default()
    };
    let mut cmd = tokio::process::Command::new("nsenter");
    if let Some(root) = ctx.root {
        // Still the process the job knew: a pid reused since is another process's.
        if !root.alive() {
            report.error = Some(format!("the target (pid {}) no longer runs", root.pid));
            return report;
        }
        cmd.arg("-t").arg(root.pid.to_string()).arg("-a");
    }
    if let Some((uid, gid)) = ctx.owner {
        cmd.arg("-S")
            .arg(uid.to_string())
            .arg("-G")
            .arg(gid.to_string());
    }
    cmd.arg("--wd=/")
        .arg("--")
        .args(argv)
        .env_clear()
        .env("PATH", PATH)
        .env("CKPTD_HOOK", ctx.hook)
        .env("CKPTD_CHECKPOINT", ctx.checkpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(root) = ctx.root {
        cmd.env("CKPTD_PID", root.pid.to_string());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(format!("cannot run nsenter: {e}"));
            return report;
        }
    };
    // Both streams into one bounded tail, read while it runs (a full pipe would stall it).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut pipe = pipe;
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut output: Vec<u8> = Vec::new();
    let collect = async {
        while let Some(chunk) = rx.recv().await {
            output.extend_from_slice(&chunk);
            if output.len() > 2 * OUTPUT_KEPT {
                output.drain(..output.len() - OUTPUT_KEPT);
            }
        }
    };
    let waited = tokio::time::timeout(ctx.timeout, async {
        let (status, ()) = tokio::join!(child.wait(), collect);
        status
    })
    .await;
    match waited {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            report.exit_code = status.code();
            report.ok = status.success();
            if let Some(sig) = status.signal() {
                report.error = Some(format!("ended by signal {sig}"));
            } else if !status.success() {
                report.error = Some(format!(
                    "exited with status {}",
                    status.code().unwrap_or(-1)
                ));
            }
        }
        Ok(Err(e)) => report.error = Some(format!("cannot wait for it: {e}")),
        Err(_) => {
            if let Some(pg) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pg as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            report.error = Some(format!(
                "still running after its time limit ({} s); killed",
                ctx.timeout.as_secs()
            ));
        }
    }
    let start = output.len().saturating_sub(OUTPUT_KEPT);
    report.output = String::from_utf8_lossy(&output[start..]).into_owned();
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// Sends the `post_restore_signal` to the restored tree's root.
pub fn signal(root: Option<sys::TaskId>, name: &str) -> HookRun {
    let mut report = HookRun {
        hook: "post_restore_signal".into(),
        command: vec![name.to_owned()],
        ..Default::default()
    };
    let result = parse_signal(name).map_err(|e| e.message).and_then(|sig| {
        let root = root.ok_or_else(|| "the restored tree's root is not known".to_owned())?;
        let sig = rustix::process::Signal::from_named_raw(sig as i32)
            .ok_or_else(|| format!("{name} cannot be sent"))?;
        root.signal(sig)
            .map_err(|e| format!("cannot signal pid {}: {e}", root.pid))
    });
    match result {
        Ok(()) => report.ok = true,
        Err(e) => report.error = Some(e),
    }
    report
}

/// A failed `pre_dump`: the checkpoint's error, with the run in its details.
pub fn pre_dump_failed(run: &HookRun) -> Error {
    Error::target_unavailable(format!(
        "the pre_dump hook failed ({}); nothing was dumped and the target runs on",
        run.error.as_deref().unwrap_or("it failed")
    ))
    .with("hook", serde_json::to_value(run).unwrap_or_default())
    .with_hint("fix the hook (its output is in details.hook.output), or checkpoint without it")
}
