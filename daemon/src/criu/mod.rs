//! A toolkit for CRIU, knowing nothing of jobs, runtimes or HTTP: probing it (`probe`), running
//! it and programs that drive it (`run`), interpreting its logs (`log`), reading its images
//! (`images`), and the flags and options file every run shares (`Criu`).
//!
//! Why the command line and not the RPC (swrk) interface: every job is one `criu` process whose
//! exact argv is recorded with its error, so an operator can re-run it by hand; CRIU's log file
//! says more than RPC's `cr_errno` (the infamous "type NOTIFY errno 0"); there are no generated
//! protobuf bindings to keep in step with CRIU's rpc.proto; a CRIU crash takes down one job, not a
//! shared service. The cost, one fork+exec per job, is noise next to a dump.

pub mod images;
pub mod log;
mod probe;
mod run;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use ckptd_api::{CheckpointOptions, DumpStats};
use tokio::process::Command;

pub use crate::auth::Account;
use crate::error::{Error, Result};

pub use log::{DUMP_DONE, DUMP_LOG};
pub use probe::{CriuProbe, FEATURES};
pub use run::run_logged;

/// The CRIU this daemon runs: the probed binary, its log level and options file.
pub struct Criu {
    probe: CriuProbe,
    log_level: u8,
    /// The daemon-wide CRIU options file (`criu_config`), passed with `--config`.
    config_file: Option<PathBuf>,
}

/// CRIU's own default options file, read on every command-line run.
const CRIU_DEFAULT_CONF: &str = "/etc/criu/default.conf";

impl Criu {
    pub fn new(probe: CriuProbe, log_level: u8, config_file: Option<PathBuf>) -> Self {
        Self {
            probe,
            log_level,
            config_file,
        }
    }

    /// The CRIU version recorded with each checkpoint.
    pub fn version(&self) -> Option<String> {
        self.probe.version.clone()
    }

    pub fn probe(&self) -> &CriuProbe {
        &self.probe
    }

    pub fn log_level(&self) -> u8 {
        self.log_level
    }

    /// The CRIU binary, or why no checkpoint can be taken.
    pub fn usable(&self) -> Result<&Path> {
        match (&self.probe.path, self.probe.check_ok) {
            (Some(p), true) => Ok(p),
            (Some(p), false) => Err(Error::unavailable(format!(
                "CRIU at {} failed `criu check` when ckptd started, so no checkpoint can be taken",
                p.display()
            ))
            .with(
                "criu_check",
                self.probe.check_output.clone().unwrap_or_default(),
            )
            .with_hint("run `make setup` (it builds CRIU >= 4.2), then restart ckptd")),
            (None, _) => Err(Error::unavailable("CRIU is not installed")
                .with_hint("run `make setup`, or set criu_path in the config file")),
        }
    }

    /// The options file a command-line CRIU run reads (besides its arguments).
    pub fn options_file(&self) -> Option<String> {
        self.config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| {
                Path::new(CRIU_DEFAULT_CONF)
                    .exists()
                    .then(|| CRIU_DEFAULT_CONF.to_owned())
            })
    }

    /// CRIU's flags for the checkpoint options (shared by `criu` and `runc` runs).
    pub fn option_flags(o: &CheckpointOptions, args: &mut Vec<String>) {
        for (on, flag) in [
            (o.tcp_established, "--tcp-established"),
            (o.ext_unix_sk, "--ext-unix-sk"),
            (o.file_locks, "--file-locks"),
            (o.shell_job, "--shell-job"),
        ] {
            if on {
                args.push(flag.into());
            }
        }
    }

    pub fn command(&self, criu: &Path, args: &[String]) -> Command {
        let mut cmd = Command::new(criu);
        self.finish(&mut cmd, args, false);
        cmd
    }

    /// A CRIU run over the image directory `images`, which CRIU reaches through the descriptor
    /// it inherits (`ImagesFd::path`): the path stays valid if ckptd dies meanwhile, and nothing
    /// on the way to it is looked up again. For root's checkpoints, CRIU itself. For a non-root
    /// owner, CRIU runs with the owner's uid, gid and groups (`setpriv`, util-linux) and
    /// `--unprivileged`, holding only the ambient capabilities of `OWNER_CAPS`: it can read and
    /// write only what the owner can, so a path or an image the owner controls never reaches a
    /// root CRIU (the owner could not traverse ckptd's storage either: the descriptor is its
    /// only way in).
    pub fn command_in(
        &self,
        criu: &Path,
        args: &[String],
        images: &ImagesFd,
        owner: Option<&Account>,
    ) -> Command {
        let mut cmd = match owner {
            None => Command::new(criu),
            Some(o) => {
                let caps = OWNER_CAPS
                    .iter()
                    .fold("-all".to_owned(), |acc, c| format!("{acc},+{c}"));
                let mut cmd = Command::new("setpriv");
                cmd.arg("--reuid")
                    .arg(o.uid.to_string())
                    .arg("--regid")
                    .arg(o.gid.to_string());
                if o.groups.is_empty() {
                    cmd.arg("--clear-groups");
                } else {
                    let groups: Vec<String> = o.groups.iter().map(u32::to_string).collect();
                    cmd.arg("--groups").arg(groups.join(","));
                }
                cmd.arg("--inh-caps")
                    .arg(&caps)
                    .arg("--ambient-caps")
                    .arg(&caps)
                    .arg("--")
                    .arg(criu);
                cmd
            }
        };
        self.finish(&mut cmd, args, owner.is_some());
        // After `finish`, which gives CRIU a null standard input the images may replace.
        images.inherit(&mut cmd);
        cmd
    }

    fn finish(&self, cmd: &mut Command, args: &[String], unprivileged: bool) {
        if let Some(c) = &self.config_file {
            cmd.arg("--config").arg(c);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if unprivileged {
            cmd.arg("--unprivileged");
        }
    }
}

/// What a non-root owner's CRIU holds: CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE, which
/// `--unprivileged` needs to dump and restore the owner's own processes, and CAP_SETPCAP, which
/// CRIU's restorer needs to put back a bounding set that is not full (measured here: without it a
/// restore dies with "Unable to drop capability 24"). None of them lets it read or write a file
/// the owner cannot.
pub const OWNER_CAPS: [&str; 3] = ["checkpoint_restore", "sys_ptrace", "setpcap"];

/// An image directory opened by ckptd and inherited by CRIU, which names it
/// `/proc/self/fd/<n>`: valid as long as CRIU runs, whatever happens to ckptd or to the path.
pub struct ImagesFd(std::fs::File, PathBuf, Handed);

/// How CRIU gets the images' descriptor.
#[derive(Clone, Copy, PartialEq)]
enum Handed {
    /// At its own number, inherited (a `pre_exec` hook clears close-on-exec: the daemon forks).
    Inherited,
    /// As CRIU's standard input, which a dump never reads: no hook, so the spawn needs no fork
    /// of the daemon (Rust's `Command` uses `posix_spawn`, whose file actions set fd 0).
    Stdin,
}

impl ImagesFd {
    /// A descriptor of the held folder itself (never reopened by a name).
    pub fn of(folder: &crate::sys::Folder) -> std::io::Result<ImagesFd> {
        Ok(ImagesFd(
            folder.dup()?,
            folder.shown().to_owned(),
            Handed::Inherited,
        ))
    }

    /// The same, handed to CRIU as its standard input: for a dump only. A restore must not
    /// (CRIU gives its standard streams to a restored shell job), nor anything run through
    /// runc (runc passes its own to the container).
    pub fn as_stdin_of(folder: &crate::sys::Folder) -> std::io::Result<ImagesFd> {
        Ok(ImagesFd(
            folder.dup()?,
            folder.shown().to_owned(),
            Handed::Stdin,
        ))
    }

    /// The directory as CRIU, which inherits the descriptor, names it.
    pub fn path(&self) -> String {
        use std::os::fd::AsRawFd;
        match self.2 {
            Handed::Inherited => format!("/proc/self/fd/{}", self.0.as_raw_fd()),
            Handed::Stdin => "/proc/self/fd/0".to_owned(),
        }
    }

    /// Lets `cmd`'s child inherit the descriptor (ckptd opens everything close-on-exec).
    pub fn inherit(&self, cmd: &mut Command) {
        use std::os::fd::AsRawFd;
        cmd.env(crate::sys::IMAGES_ENV, &self.1);
        match self.2 {
            Handed::Inherited => crate::sys::inherit_fd(cmd, self.0.as_raw_fd()),
            Handed::Stdin => match self.0.try_clone() {
                Ok(f) => {
                    cmd.stdin(Stdio::from(f));
                }
                // Out of descriptors: CRIU then says it cannot open its images.
                Err(e) => tracing::warn!(error = %e, "cannot hand CRIU the images' descriptor"),
            },
        }
    }
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// CRIU's statistics from `stats-dump` in `dir`, if it could be read.
pub fn dump_stats(dir: &Path) -> Option<DumpStats> {
    match images::read_dump_stats(dir) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no dump statistics");
            None
        }
    }
}
