//! The command line: every command, flag and help text of `ckpt`, and nothing that runs.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use clap_complete::engine::ArgValueCandidates;

use ckptd_api::{
    ArchiveFormat, CheckpointOptions, CheckpointStatus, Compression, JobKind, JobState, Retention,
    Runtime, Target,
};
use strum::VariantNames;

use crate::complete;

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Checkpoint and restore process trees and containers through ckptd",
    after_help = "TARGET is a pid (digits) or a container id. Exit codes: 0 success, 1 failure \
                  (the daemon's message and hint on stderr), 2 usage error."
)]
pub struct Cli {
    /// ckptd's API socket.
    #[arg(
        long,
        env = "CKPTD_SOCKET",
        default_value = "/run/ckptd.sock",
        global = true
    )]
    pub socket: String,
    #[command(subcommand)]
    pub command: Command,
}

/// A process or container target on the command line.
#[derive(Args, Clone)]
pub struct TargetArgs {
    /// A pid (digits) or a container id; several, comma-separated (`PID,PID,ID`), are a group
    /// checkpointed together.
    pub target: String,
    /// The container runtime (containers only) [default: runc, or the one runtime that has a
    /// container of that name].
    #[arg(long, value_parser = runtime_arg())]
    pub runtime: Option<Runtime>,
    /// The runtime's state directory (runc's --root; containers only).
    #[arg(long)]
    pub root: Option<String>,
    /// containerd's namespace (`--runtime containerd`) [default: the daemon's
    /// containerd_namespace, k8s.io].
    #[arg(long)]
    pub namespace: Option<String>,
}

impl TargetArgs {
    /// The target, its runtime `--runtime` or else `runtime`.
    pub fn target_in(&self, runtime: Runtime) -> Target {
        let one = |t: &str| match t.parse::<i32>() {
            Ok(pid) if t.bytes().all(|b| b.is_ascii_digit()) => Target::Process { pid },
            _ => Target::Container {
                id: t.to_owned(),
                runtime: self.runtime.unwrap_or(runtime),
                root: self.root.clone(),
                bundle: None,
                namespace: self.namespace.clone(),
            },
        };
        if self.target.contains(',') {
            return Target::Group {
                targets: self.target.split(',').map(one).collect(),
            };
        }
        one(&self.target)
    }

    pub fn target(&self) -> Target {
        self.target_in(Runtime::Runc)
    }
}

/// CRIU's options that a checkpoint records and its restores reuse.
#[derive(Args, Clone, Default)]
pub struct CriuFlags {
    /// Dump and restore established TCP connections.
    #[arg(long)]
    pub tcp_established: bool,
    /// Allow unix sockets whose peer is outside the tree.
    #[arg(long)]
    pub ext_unix_sk: bool,
    /// Dump and restore file locks.
    #[arg(long)]
    pub file_locks: bool,
    /// The tree is attached to a terminal or session outside it.
    #[arg(long)]
    pub shell_job: bool,
}

impl CriuFlags {
    pub fn options(&self, leave_running: bool) -> CheckpointOptions {
        CheckpointOptions {
            leave_running,
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            file_locks: self.file_locks,
            shell_job: self.shell_job,
        }
    }
}

#[derive(Args, Clone, Default)]
pub struct DumpFlags {
    #[command(flatten)]
    pub criu: CriuFlags,
    /// Existing directory in which the checkpoint's own folder is created.
    #[arg(long)]
    pub checkpoint_dir: Option<String>,
    /// Label key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Delete the checkpoint this long after it is taken (90s, 30m, 12h, 7d, 2w, 1d12h).
    #[arg(long)]
    pub expires_in: Option<String>,
    /// Push the checkpoint to this remote once it is ready (see `ckpt remotes`).
    #[arg(long, value_name = "REMOTE", add = ArgValueCandidates::new(complete::remotes))]
    pub push_to: Option<String>,
    /// With --push-to: drop the local images once the push is durable.
    #[arg(long, requires = "push_to")]
    pub drop_local: bool,
    /// Hooks: shell commands run in the target's namespaces as its owner.
    #[command(flatten)]
    pub hooks: HookFlags,
}

/// Hooks given as shell lines (each runs as `sh -c LINE`, in the target's namespaces, as its
/// owner).
#[derive(Args, Clone, Default)]
pub struct HookFlags {
    /// Before the dump; if it fails, nothing is dumped and the target runs on.
    #[arg(long, value_name = "SHELL")]
    pub pre_dump: Option<String>,
    /// Once the checkpoint is ready (a failure is reported, the checkpoint kept).
    #[arg(long, value_name = "SHELL")]
    pub post_dump: Option<String>,
    /// After each restore of the checkpoint (recorded with it).
    #[arg(long, value_name = "SHELL")]
    pub post_restore: Option<String>,
    /// After each restore, this signal to the restored tree's root (SIGUSR2, USR2, 12).
    #[arg(long, value_name = "SIGNAL")]
    pub post_restore_signal: Option<String>,
    /// Each hook's time limit in seconds [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub hook_timeout: Option<u32>,
}

impl HookFlags {
    /// The hooks, None when no flag was given.
    pub fn hooks(&self) -> Option<ckptd_api::Hooks> {
        let sh = |l: &Option<String>| {
            l.as_ref()
                .map(|l| vec!["sh".to_owned(), "-c".to_owned(), l.clone()])
        };
        let h = ckptd_api::Hooks {
            pre_dump: sh(&self.pre_dump),
            post_dump: sh(&self.post_dump),
            post_restore: sh(&self.post_restore),
            post_restore_signal: self.post_restore_signal.clone(),
            timeout_seconds: self.hook_timeout,
        };
        (!h.is_empty() || h.timeout_seconds.is_some()).then_some(h)
    }
}

#[derive(Args, Clone, Default)]
pub struct RetentionFlags {
    /// Keep the newest N.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Keep the newest of each of the last N hours.
    #[arg(long)]
    pub keep_hourly: Option<u32>,
    /// Keep the newest of each of the last N days (UTC).
    #[arg(long)]
    pub keep_daily: Option<u32>,
    /// Keep the newest of each of the last N ISO weeks.
    #[arg(long)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest of each of the last N months.
    #[arg(long)]
    pub keep_monthly: Option<u32>,
    /// Keep everything within this long of the newest (36h, 7d).
    #[arg(long)]
    pub keep_within: Option<String>,
}

impl RetentionFlags {
    pub fn retention(&self) -> Retention {
        Retention {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_within: self.keep_within.clone(),
        }
    }
    pub fn is_set(&self) -> bool {
        self.retention() != Retention::default()
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Checkpoint a process tree or a container.
    Create(CreateArgs),
    /// List checkpoints, newest first.
    Ls(LsArgs),
    /// Show one checkpoint (by id or name).
    Inspect {
        /// A checkpoint name or id.
        #[arg(add = ArgValueCandidates::new(complete::checkpoints))]
        reference: String,
        /// Print the checkpoint as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete checkpoints and their images (each named; one that fails does not stop the rest).
    Rm {
        /// Checkpoint names or ids.
        #[arg(required = true, add = ArgValueCandidates::new(complete::checkpoints))]
        references: Vec<String>,
    },
    /// Restore a checkpoint: in place, or a container checkpoint into a new container.
    Restore(RestoreArgs),
    /// Print CRIU's logs of a checkpoint.
    Logs {
        /// A checkpoint name or id.
        #[arg(add = ArgValueCandidates::new(complete::checkpoints))]
        reference: String,
    },
    /// Write a checkpoint's archive (tar with a manifest of sha256 sums) to a file (mode 0600).
    Export {
        /// A checkpoint name or id.
        #[arg(add = ArgValueCandidates::new(complete::checkpoints))]
        reference: String,
        /// The file to write; `-` for standard output [default: NAME.tar.zst, .tar.gz or .tar].
        #[arg(short, long)]
        output: Option<String>,
        /// How the archive is compressed.
        #[arg(long, default_value = "zstd", value_parser = enum_arg::<Compression>(Compression::VARIANTS))]
        compression: Compression,
        /// The archive's layout: ckptd's own; podman (for checkpoints of Podman containers;
        /// `podman container restore --import FILE` restores it); or kubernetes (a kubelet's
        /// checkpoint archive, CRI-O's flavour, as checkpointctl reads it).
        #[arg(long, default_value = "ckptd", value_parser = enum_arg::<ArchiveFormat>(ArchiveFormat::VARIANTS))]
        format: ArchiveFormat,
    },
    /// Import an archive as a new ready checkpoint (root only; compression is detected).
    Import {
        /// The archive; `-` for standard input.
        file: String,
        /// Name it this instead of the name in the archive.
        #[arg(long)]
        name: Option<String>,
        /// Print the new checkpoint as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Catalogue an image directory made by `criu dump`, `runc checkpoint` or Docker (root only).
    Adopt(AdoptArgs),
    /// Move a checkpoint to another ckptd: its archive streamed into that daemon's import over
    /// its TCP listener (tcp_listen + tcp_token_file there).
    Migrate(MigrateArgs),
    /// List the remotes (S3 buckets) the daemon is configured with, and whether each answers.
    Remotes {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upload a checkpoint to a remote: its archive to a bucket, a checkpoint image to a
    /// registry (a job; waits for it unless --no-wait).
    Push(PushArgs),
    /// Download a checkpoint from a remote and catalogue it here (root only).
    Pull(PullArgs),
    /// Delete a checkpoint's copy in a remote (root only); its local images, if any, stay.
    RmRemote {
        /// The remote's name.
        #[arg(long, short, add = ArgValueCandidates::new(complete::remotes))]
        remote: String,
        /// Checkpoint names or ids in the remote.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// List jobs, newest first; --watch follows them as they change; `jobs wait ID` waits for one.
    Jobs(JobsArgs),
    /// Attach this terminal to a restored process's terminal, which ckptd holds (a process
    /// checkpointed with its controlling terminal); detach with ctrl-p ctrl-q.
    Attach {
        /// The restored process's pid (the restore's `pid`).
        pid: i32,
    },
    /// Cancel a queued or running job (its target is left running).
    Cancel {
        /// The job's id.
        #[arg(add = ArgValueCandidates::new(complete::jobs))]
        job: String,
    },
    /// Follow the daemon's events (jobs, checkpoints, schedules, refused requests) until
    /// interrupted.
    Events {
        /// First replay the events the daemon holds from this time on: RFC 3339
        /// (2026-12-05T14:00:00Z) or how long ago (90s, 10m, 2h, 1d).
        #[arg(long)]
        since: Option<String>,
        /// One JSON event per line.
        #[arg(long)]
        json: bool,
    },
    /// Scheduled checkpoints with retention.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Show the daemon's versions, CRIU, storage and workers.
    Info {
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A live view of the daemon: jobs running, the queue, the last failures with their hints,
    /// schedules with their next run, storage, events (q quits).
    Top,
    /// Print a static shell completion script (bash, zsh, fish, elvish, powershell): commands
    /// and flags. `source <(COMPLETE=bash ckpt)` completes names from the daemon too.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// Whether the command was asked for JSON: its errors are then JSON too.
    pub fn json(&self) -> bool {
        match self {
            Command::Create(a) => a.json,
            Command::Ls(a) => a.json,
            Command::Inspect { json, .. }
            | Command::Import { json, .. }
            | Command::Remotes { json }
            | Command::Events { json, .. }
            | Command::Info { json } => *json,
            Command::Restore(a) => a.json,
            Command::Adopt(a) => a.json,
            Command::Push(a) => a.json,
            Command::Pull(a) => a.json,
            Command::Jobs(a) => match &a.command {
                Some(JobsCommand::Wait { json, .. }) => *json,
                None => a.json,
            },
            Command::Schedule(ScheduleCommand::Add(a)) => a.json,
            Command::Schedule(
                ScheduleCommand::Ls { json }
                | ScheduleCommand::Inspect { json, .. }
                | ScheduleCommand::Retention { json, .. },
            ) => *json,
            Command::Schedule(_)
            | Command::Rm { .. }
            | Command::Logs { .. }
            | Command::Export { .. }
            | Command::Migrate(_)
            | Command::RmRemote { .. }
            | Command::Cancel { .. }
            | Command::Attach { .. }
            | Command::Top
            | Command::Completions { .. } => false,
        }
    }
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: Option<JobsCommand>,
    /// Only jobs in this state.
    #[arg(long, value_parser = enum_arg::<JobState>(JobState::VARIANTS))]
    pub state: Option<JobState>,
    /// Only jobs of this kind.
    #[arg(long, value_parser = enum_arg::<JobKind>(JobKind::VARIANTS))]
    pub kind: Option<JobKind>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Full ids and no cut to the terminal's width.
    #[arg(long)]
    pub wide: bool,
    /// Then follow job events as they happen, until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Print the jobs as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Wait for a job to end, with its progress; exit 1 if it failed (its error on stderr).
    Wait {
        /// The job's id (the line `--no-wait` printed, or `ckpt jobs`).
        #[arg(add = ArgValueCandidates::new(complete::jobs))]
        job: String,
        /// Print the job as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Unique name (default: <command or container>-<UTC timestamp>).
    pub name: Option<String>,
    /// Keep the target running after the dump. Without it, the target is stopped once its
    /// images are durable (`ckpt restore NAME` brings it back).
    #[arg(long)]
    pub leave_running: bool,
    #[command(flatten)]
    pub flags: DumpFlags,
    /// Return once the job is queued: print its id, one line (`ckpt jobs wait ID` follows it).
    #[arg(long)]
    pub no_wait: bool,
    /// Print the checkpoint and its job as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct LsArgs {
    /// List what this remote holds (every host's pushes) instead of this host's catalog.
    #[arg(long, visible_alias = "registry", value_name = "NAME", add = ArgValueCandidates::new(complete::remotes), conflicts_with_all = ["pid", "container", "status", "schedule", "labels"])]
    pub remote: Option<String>,
    /// Only checkpoints of this pid.
    #[arg(long)]
    pub pid: Option<i32>,
    /// Only checkpoints of this container.
    #[arg(long)]
    pub container: Option<String>,
    /// Only checkpoints in this status.
    #[arg(long, value_parser = enum_arg::<CheckpointStatus>(CheckpointStatus::VARIANTS))]
    pub status: Option<CheckpointStatus>,
    /// Only those of this schedule (label schedule=NAME).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Only checkpoints with this label key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// At most this many (the daemon pages by 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Names only, one a line.
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
    /// Full ids and no cut to the terminal's width.
    #[arg(long)]
    pub wide: bool,
    /// Print the checkpoints as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A checkpoint name or id.
    #[arg(add = ArgValueCandidates::new(complete::checkpoints), required_unless_present = "image", conflicts_with = "image")]
    pub reference: Option<String>,
    /// A checkpoint image in a configured registry, HOST[:PORT]/REPOSITORY:TAG (ckptd's or
    /// Podman's `--create-image`): pulled, then restored, in one job.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Restore a container checkpoint into another container: a new runc container with
    /// this id (needs --bundle), or a Docker container (a stopped one, or a new name).
    #[arg(long)]
    pub into: Option<String>,
    /// The runtime of --into [default: the checkpoint's own].
    #[arg(long, requires = "into", value_parser = runtime_arg())]
    pub runtime: Option<Runtime>,
    /// The new container's bundle (config.json and rootfs); with --rootfs, a directory ckptd
    /// creates.
    #[arg(long, requires = "into")]
    pub bundle: Option<String>,
    /// A checkpoint imported from a Kubernetes checkpoint archive: the container image's root
    /// filesystem, unpacked; ckptd builds --bundle from it and the archive's root filesystem
    /// changes (root only).
    #[arg(long, requires = "bundle")]
    pub rootfs: Option<String>,
    /// runc's --root for the new container.
    #[arg(long, requires = "into")]
    pub root: Option<String>,
    /// A Unix socket to receive a terminal container's pty master.
    #[arg(long)]
    pub console_socket: Option<String>,
    /// CRIU options for this restore (left out: those the checkpoint was taken with).
    #[command(flatten)]
    pub criu: CriuFlags,
    /// Restore memory on demand (process checkpoints): the tree runs at once, its pages come
    /// in as it touches them.
    #[arg(long)]
    pub lazy: bool,
    /// After the restore, this shell command in the restored tree's namespaces, as its owner
    /// (instead of the checkpoint's recorded post_restore hook).
    #[arg(long, value_name = "SHELL")]
    pub post_restore: Option<String>,
    /// After the restore, this signal to the restored tree's root (instead of the recorded one).
    #[arg(long, value_name = "SIGNAL")]
    pub post_restore_signal: Option<String>,
    /// Run none of the checkpoint's recorded restore hooks.
    #[arg(long, conflicts_with_all = ["post_restore", "post_restore_signal"])]
    pub no_hooks: bool,
    /// Return once the job is queued: print its id, one line (`ckpt jobs wait ID` follows it).
    #[arg(long)]
    pub no_wait: bool,
    /// Print the job as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct AdoptArgs {
    /// The image directory (absolute), made by criu dump, runc checkpoint or Docker.
    pub dir: String,
    /// Name it this (default: from the directory).
    #[arg(long)]
    pub name: Option<String>,
    /// runc/Docker images: the container id to restore them as (with --bundle).
    #[arg(long, requires = "bundle")]
    pub container: Option<String>,
    /// runc/Docker images: the bundle (config.json and rootfs) to restore them with.
    #[arg(long, requires = "container")]
    pub bundle: Option<String>,
    /// The options the images were dumped with (restores reuse them).
    #[command(flatten)]
    pub criu: CriuFlags,
    /// Label key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Print the checkpoint as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct MigrateArgs {
    /// A checkpoint name or id; with --live, the PID of the running process to move, or the id
    /// of the runc container.
    #[arg(add = ArgValueCandidates::new(complete::checkpoints))]
    pub reference: String,
    /// Move the running process or runc container itself, live: it is frozen here, runs there
    /// at once, and its memory follows it over the daemons' connection (CRIU's lazy migration).
    #[arg(long, conflicts_with_all = ["restore", "via"])]
    pub live: bool,
    /// With --live, a runc container: restore it there as this container id (with --bundle)
    /// [default: the same id and bundle].
    #[arg(long, requires = "live", requires = "bundle")]
    pub into: Option<String>,
    /// With --into: the new container's bundle directory on the destination.
    #[arg(long, requires = "into")]
    pub bundle: Option<String>,
    /// With --live: move its established TCP connections too (the same addresses must exist
    /// on the destination).
    #[arg(long, requires = "live")]
    pub tcp_established: bool,
    /// With --live: return once the job is queued; follow it with `ckpt jobs`.
    #[arg(long, requires = "live")]
    pub no_wait: bool,
    /// The other daemon's TCP listener, host:port.
    #[arg(long)]
    pub to: String,
    /// A file holding the other daemon's bearer token.
    #[arg(long, env = "CKPTD_TOKEN_FILE")]
    pub token_file: String,
    /// Name it this on the other daemon.
    #[arg(long)]
    pub name: Option<String>,
    /// Restore it there once imported.
    #[arg(long)]
    pub restore: bool,
    /// Go through this remote (an S3 bucket both daemons have under this name) instead of
    /// streaming the archive between the daemons: push here, then pull (or pull and restore)
    /// there. The other daemon then needs no route to this one.
    #[arg(long, value_name = "REMOTE", add = ArgValueCandidates::new(complete::remotes))]
    pub via: Option<String>,
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: `ckpt schedule add NAME TARGET --cron '0 */6 * * *' --keep-last 4`.
    Add(Box<ScheduleAddArgs>),
    /// List schedules with their next and last runs.
    Ls {
        /// Print the schedules as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one schedule: its target, cron, runs, failures and why it is disabled.
    Inspect {
        /// The schedule's name or id.
        #[arg(add = ArgValueCandidates::new(complete::schedules))]
        reference: String,
        /// Print the schedule as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a schedule's target, cron or retention.
    Set {
        /// The schedule's name or id.
        #[arg(add = ArgValueCandidates::new(complete::schedules))]
        reference: String,
        /// A new target: a pid (digits) or a container id.
        #[arg(long)]
        target: Option<String>,
        /// The new target's runtime (containers only).
        #[arg(long, requires = "target", value_parser = runtime_arg())]
        runtime: Option<Runtime>,
        /// The new target's runtime state directory (runc's --root; containers only).
        #[arg(long, requires = "target")]
        root: Option<String>,
        /// The new target's containerd namespace (`--runtime containerd`).
        #[arg(long, requires = "target")]
        namespace: Option<String>,
        /// A new cron (5 fields, 6 with seconds first, or @hourly/@daily/...; UTC).
        #[arg(long)]
        cron: Option<String>,
        #[command(flatten)]
        retention: RetentionFlags,
    },
    /// Enable a schedule (its clock restarts from now).
    Enable {
        /// The schedule's name or id.
        #[arg(add = ArgValueCandidates::new(complete::schedules))]
        reference: String,
    },
    /// Disable a schedule.
    Disable {
        /// The schedule's name or id.
        #[arg(add = ArgValueCandidates::new(complete::schedules))]
        reference: String,
    },
    /// Delete schedules (their checkpoints stay).
    Rm {
        /// Schedule names or ids.
        #[arg(required = true, add = ArgValueCandidates::new(complete::schedules))]
        references: Vec<String>,
    },
    /// Run a schedule now.
    Run {
        /// The schedule's name or id.
        #[arg(add = ArgValueCandidates::new(complete::schedules))]
        reference: String,
        /// Return once the job is queued: print its id, one line (`ckpt jobs wait ID` follows it).
        #[arg(long)]
        no_wait: bool,
    },
    /// Preview what retention would keep and prune, and why.
    Retention {
        /// The schedule's name or id.
        #[arg(add = ArgValueCandidates::new(complete::schedules))]
        reference: String,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct ScheduleAddArgs {
    /// The schedule's name (it names its checkpoints and labels them schedule=NAME).
    pub name: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// 5 fields, 6 with seconds first, or @hourly/@daily/@weekly/@monthly (UTC).
    #[arg(long)]
    pub cron: String,
    /// Stop (kill) the target after each dump instead of leaving it running.
    #[arg(long)]
    pub stop: bool,
    #[command(flatten)]
    pub flags: DumpFlags,
    #[command(flatten)]
    pub retention: RetentionFlags,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
    /// Print the schedule as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("label {s:?} must be key=value"))
}

/// `--runtime`: one of the runtimes the API knows, listed in `--help` and in the error.
fn runtime_arg() -> impl TypedValueParser<Value = Runtime> {
    enum_arg::<Runtime>(Runtime::VARIANTS)
}

/// A flag whose values are one of the API's enum strings.
fn enum_arg<T>(variants: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(variants).map(|s| match s.parse::<T>() {
        Ok(v) => v,
        Err(_) => unreachable!("{s} is one of the listed values"),
    })
}

#[derive(Args)]
pub struct PushArgs {
    /// A checkpoint name or id.
    #[arg(add = ArgValueCandidates::new(complete::checkpoints))]
    pub reference: String,
    /// The remote to push to, a bucket or a registry (see `ckpt remotes`).
    #[arg(long, short, visible_alias = "registry", add = ArgValueCandidates::new(complete::remotes))]
    pub remote: String,
    /// A registry's image tag (default: the checkpoint's name).
    #[arg(long, short)]
    pub tag: Option<String>,
    /// A registry image's layout: podman (Podman restores it; the default for a Podman
    /// container's checkpoint), kubernetes (CRI-O's checkpoint image), ckptd (the default
    /// otherwise).
    #[arg(long, value_parser = enum_arg::<ArchiveFormat>(ArchiveFormat::VARIANTS))]
    pub format: Option<ArchiveFormat>,
    /// Drop the local images once the push is durable (a restore pulls them back first).
    #[arg(long)]
    pub drop_local: bool,
    /// Return once the job is queued: print its id, one line (`ckpt jobs wait ID` follows it).
    #[arg(long)]
    pub no_wait: bool,
    /// Print the job as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PullArgs {
    /// A checkpoint name or id in the remote (`ckpt ls --remote NAME`).
    pub reference: String,
    /// The remote to pull from.
    #[arg(long, short, add = ArgValueCandidates::new(complete::remotes))]
    pub remote: String,
    /// Catalogue it under this name instead of the one it was pushed with.
    #[arg(long)]
    pub name: Option<String>,
    /// Return once the job is queued: print its id, one line (`ckpt jobs wait ID` follows it).
    #[arg(long)]
    pub no_wait: bool,
    /// Print the checkpoint and job as JSON.
    #[arg(long)]
    pub json: bool,
}
