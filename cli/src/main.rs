//! `ckpt`: the command-line client of ckptd. Tables for people, `--json` for scripts.
//! Exit codes: 0 success, 1 the daemon refused or the job failed (its message, hint and CRIU's
//! error lines on stderr), 2 usage errors.

mod table;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ckptd_api::{
    Checkpoint, CheckpointAndJob, Client, ClientError, CreateCheckpoint, CreateSchedule, Job,
    JobState, RestoreRequest, Retention, Schedule, ScheduleOptions, Target, UpdateSchedule,
};
use clap::{Args, CommandFactory, Parser, Subcommand};

use table::{human_bytes, Table};

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Checkpoint and restore process trees and containers through ckptd",
    after_help = "TARGET is a pid (digits) or a container id. Exit codes: 0 success, 1 failure \
                  (the daemon's message and hint on stderr), 2 usage error."
)]
struct Cli {
    /// ckptd's API socket.
    #[arg(
        long,
        env = "CKPTD_SOCKET",
        default_value = "/run/ckptd.sock",
        global = true
    )]
    socket: String,
    #[command(subcommand)]
    command: Command,
}

/// A process or container target on the command line.
#[derive(Args, Clone)]
struct TargetArgs {
    /// A pid (digits) or a container id.
    target: String,
    /// The container runtime (containers only).
    #[arg(long, default_value = "runc")]
    runtime: String,
    /// The runtime's state directory (runc's --root; containers only).
    #[arg(long)]
    root: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> Target {
        match self.target.parse::<i32>() {
            Ok(pid) if self.target.bytes().all(|b| b.is_ascii_digit()) => Target::Process { pid },
            _ => Target::Container {
                id: self.target.clone(),
                runtime: self.runtime.clone(),
                root: self.root.clone(),
                bundle: None,
            },
        }
    }
}

/// CRIU's options that a checkpoint records and its restores reuse.
#[derive(Args, Clone, Default)]
struct CriuFlags {
    /// Dump and restore established TCP connections.
    #[arg(long)]
    tcp_established: bool,
    /// Allow unix sockets whose peer is outside the tree.
    #[arg(long)]
    ext_unix_sk: bool,
    /// Dump and restore file locks.
    #[arg(long)]
    file_locks: bool,
    /// The tree is attached to a terminal or session outside it.
    #[arg(long)]
    shell_job: bool,
}

impl CriuFlags {
    fn options(&self, leave_running: bool) -> ckptd_api::CheckpointOptions {
        ckptd_api::CheckpointOptions {
            leave_running,
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            file_locks: self.file_locks,
            shell_job: self.shell_job,
        }
    }
}

#[derive(Args, Clone, Default)]
struct DumpFlags {
    #[command(flatten)]
    criu: CriuFlags,
    /// Existing directory in which the checkpoint's own folder is created.
    #[arg(long)]
    checkpoint_dir: Option<String>,
    /// Label key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Delete the checkpoint this long after it is taken (90s, 30m, 12h, 7d, 2w, 1d12h).
    #[arg(long)]
    expires_in: Option<String>,
}

#[derive(Args, Clone, Default)]
struct RetentionFlags {
    /// Keep the newest N.
    #[arg(long)]
    keep_last: Option<u32>,
    /// Keep the newest of each of the last N hours.
    #[arg(long)]
    keep_hourly: Option<u32>,
    #[arg(long)]
    keep_daily: Option<u32>,
    #[arg(long)]
    keep_weekly: Option<u32>,
    #[arg(long)]
    keep_monthly: Option<u32>,
    /// Keep everything within this long of the newest (36h, 7d).
    #[arg(long)]
    keep_within: Option<String>,
}

impl RetentionFlags {
    fn retention(&self) -> Retention {
        Retention {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_within: self.keep_within.clone(),
        }
    }
    fn is_set(&self) -> bool {
        self.retention() != Retention::default()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Checkpoint a process tree or a container.
    Create {
        #[command(flatten)]
        target: TargetArgs,
        /// Unique name (default: <command or container>-<UTC timestamp>).
        name: Option<String>,
        /// Keep the target running after the dump.
        #[arg(long)]
        leave_running: bool,
        #[command(flatten)]
        flags: DumpFlags,
        /// Return once the job is queued instead of when it ends.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// List checkpoints, newest first.
    Ls {
        #[arg(long)]
        pid: Option<i32>,
        #[arg(long)]
        container: Option<String>,
        /// pending, running, ready, failed or missing.
        #[arg(long)]
        status: Option<String>,
        /// Only those of this schedule (label schedule=NAME).
        #[arg(long)]
        schedule: Option<String>,
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// At most this many (the daemon pages by 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show one checkpoint (by id or name).
    Inspect {
        reference: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete checkpoints and their images.
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Restore a checkpoint: in place, or a container checkpoint into a new container.
    Restore {
        reference: String,
        /// Restore a container checkpoint into another container: a new runc container with
        /// this id (needs --bundle), or an existing stopped Docker container (--runtime docker).
        #[arg(long)]
        into: Option<String>,
        /// The runtime of --into.
        #[arg(long, default_value = "runc", requires = "into")]
        runtime: String,
        /// The new container's bundle (config.json and rootfs).
        #[arg(long, requires = "into")]
        bundle: Option<String>,
        /// runc's --root for the new container.
        #[arg(long, requires = "into")]
        root: Option<String>,
        /// A Unix socket to receive a terminal container's pty master.
        #[arg(long)]
        console_socket: Option<String>,
        #[arg(long)]
        tcp_established: bool,
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print CRIU's logs of a checkpoint.
    Logs { reference: String },
    /// Write a checkpoint's archive (tar with a manifest of sha256 sums) to a file (mode 0600).
    Export {
        reference: String,
        /// The file to write; `-` for standard output.
        #[arg(short, long)]
        output: String,
        #[arg(long, default_value = "zstd", value_parser = ["zstd", "gzip", "none"])]
        compression: String,
    },
    /// Import an archive as a new ready checkpoint (root only; compression is detected).
    Import {
        /// The archive; `-` for standard input.
        file: String,
        /// Name it this instead of the name in the archive.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Catalogue an image directory made by `criu dump`, `runc checkpoint` or Docker (root only).
    Adopt {
        dir: String,
        #[arg(long)]
        name: Option<String>,
        /// runc/Docker images: the container id to restore them as (with --bundle).
        #[arg(long, requires = "bundle")]
        container: Option<String>,
        /// runc/Docker images: the bundle (config.json and rootfs) to restore them with.
        #[arg(long, requires = "container")]
        bundle: Option<String>,
        /// The options the images were dumped with (restores reuse them).
        #[command(flatten)]
        criu: CriuFlags,
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        #[arg(long)]
        json: bool,
    },
    /// Move a checkpoint to another ckptd: its archive streamed into that daemon's import over
    /// its TCP listener (tcp_listen + tcp_token_file there).
    Migrate {
        reference: String,
        /// The other daemon's TCP listener, host:port.
        #[arg(long)]
        to: String,
        /// A file holding the other daemon's bearer token.
        #[arg(long, env = "CKPTD_TOKEN_FILE")]
        token_file: String,
        /// Name it this on the other daemon.
        #[arg(long)]
        name: Option<String>,
        /// Restore it there once imported.
        #[arg(long)]
        restore: bool,
    },
    /// List jobs, newest first; --watch follows them as they change.
    Jobs {
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running job.
    Cancel { job: String },
    /// Follow the daemon's events (jobs, checkpoints, schedules) until interrupted.
    Events {
        /// One JSON event per line.
        #[arg(long)]
        json: bool,
    },
    /// Scheduled checkpoints with retention.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Show the daemon's versions, CRIU, storage and workers.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Create a schedule: `ckpt schedule add NAME TARGET --cron '0 */6 * * *' --keep-last 4`.
    Add {
        name: String,
        #[command(flatten)]
        target: TargetArgs,
        /// 5 fields, 6 with seconds first, or @hourly/@daily/@weekly/@monthly (UTC).
        #[arg(long)]
        cron: String,
        /// Stop (kill) the target after each dump instead of leaving it running.
        #[arg(long)]
        stop: bool,
        #[command(flatten)]
        flags: DumpFlags,
        #[command(flatten)]
        retention: RetentionFlags,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        #[arg(long)]
        json: bool,
    },
    /// List schedules with their next and last runs.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one schedule.
    Inspect { reference: String },
    /// Change a schedule's cron or retention.
    Set {
        reference: String,
        #[arg(long)]
        cron: Option<String>,
        #[command(flatten)]
        retention: RetentionFlags,
    },
    /// Enable a schedule (its clock restarts from now).
    Enable { reference: String },
    /// Disable a schedule.
    Disable { reference: String },
    /// Delete schedules (their checkpoints stay).
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Run a schedule now.
    Run {
        reference: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Preview what retention would keep and prune, and why.
    Retention {
        reference: String,
        #[arg(long)]
        json: bool,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("label {s:?} must be key=value"))
}

fn query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'=' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("\"{e}\""))
    );
}

fn target_text(t: &Target) -> String {
    match t {
        Target::Process { pid } => format!("pid {pid}"),
        Target::Container { id, runtime, .. } => format!("{runtime} {id}"),
    }
}

/// "3m ago", or "in 5s" for a time to come.
fn ago(t: &chrono::DateTime<chrono::Utc>) -> String {
    let ms = (chrono::Utc::now() - *t).num_milliseconds();
    if ms < 0 {
        // Round up: a run due in 0.4 s is "in 1s", not "0s ago".
        format!("in {}", short_secs((-ms + 999) / 1000))
    } else {
        format!("{} ago", short_secs(ms / 1000))
    }
}

fn short_secs(s: i64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn checkpoint_table(items: &[Checkpoint]) -> Table {
    let mut t = Table::new(&["NAME", "TARGET", "STATUS", "SIZE", "CREATED", "ID"]);
    for c in items {
        t.row(vec![
            c.name.clone(),
            target_text(&c.target),
            c.status.as_str().to_owned(),
            human_bytes(c.size_bytes),
            ago(&c.created_at),
            c.id.to_string(),
        ]);
    }
    t
}

fn job_table(items: &[Job]) -> Table {
    let mut t = Table::new(&["JOB", "KIND", "STATE", "CHECKPOINT", "CREATED", "RESULT"]);
    for j in items {
        t.row(vec![
            j.id.to_string(),
            j.kind.as_str().to_owned(),
            j.state.as_str().to_owned(),
            j.checkpoint_id.to_string(),
            ago(&j.created_at),
            job_outcome(j),
        ]);
    }
    t
}

fn job_outcome(j: &Job) -> String {
    if let Some(e) = &j.error {
        return e.to_string();
    }
    match &j.result {
        Some(r) => {
            let mut parts = Vec::new();
            if let Some(pid) = r.pid {
                parts.push(format!("pid {pid}"));
            }
            if let Some(c) = &r.container {
                parts.push(format!("container {c}"));
            }
            parts.join(", ")
        }
        None => String::new(),
    }
}

fn inspect_text(c: &Checkpoint) -> String {
    let mut out = Vec::new();
    let mut kv = |k: &str, v: String| out.push(format!("{k:<14}{v}"));
    kv("Name:", c.name.clone());
    kv("ID:", c.id.to_string());
    kv("Target:", target_text(&c.target));
    kv("Status:", c.status.as_str().to_owned());
    kv("Created:", c.created_at.to_rfc3339());
    if let Some(t) = c.completed_at {
        kv("Completed:", t.to_rfc3339());
    }
    if let Some(t) = c.expires_at {
        kv("Expires:", format!("{} ({})", t.to_rfc3339(), ago(&t)));
    }
    kv("Directory:", c.dir.clone());
    kv("Size:", human_bytes(c.size_bytes));
    let o = &c.options;
    let opts: Vec<&str> = [
        (o.leave_running, "leave_running"),
        (o.tcp_established, "tcp_established"),
        (o.ext_unix_sk, "ext_unix_sk"),
        (o.file_locks, "file_locks"),
        (o.shell_job, "shell_job"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect();
    kv(
        "Options:",
        if opts.is_empty() {
            "-".into()
        } else {
            opts.join(", ")
        },
    );
    if !c.labels.is_empty() {
        let l: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        kv("Labels:", l.join(", "));
    }
    if let Some(v) = &c.criu_version {
        kv("CRIU:", v.clone());
    }
    if let Some(s) = &c.stats {
        kv(
            "Frozen:",
            format!(
                "{:.3} s ({} pages written)",
                s.frozen_time_us as f64 / 1e6,
                s.pages_written
            ),
        );
    }
    if let Some(r) = &c.container {
        kv("Bundle:", r.bundle.clone());
    }
    if let Some(e) = &c.error {
        kv("Error:", e.to_string());
        for l in e.log_tail() {
            out.push(format!("              {l}"));
        }
    }
    out.join("\n")
}

fn schedule_table(items: &[Schedule]) -> Table {
    let mut t = Table::new(&["NAME", "TARGET", "CRON", "ENABLED", "NEXT", "LAST", "KEEP"]);
    for s in items {
        let last = match &s.last_run {
            Some(r) => {
                let mut l = format!("{:?} {}", r.status, ago(&r.at)).to_lowercase();
                if let Some(e) = &r.error {
                    l.push_str(&format!(": {}", e.message));
                }
                l
            }
            None => "-".into(),
        };
        t.row(vec![
            s.name.clone(),
            target_text(&s.target),
            s.effective_cron.clone(),
            if s.enabled { "yes" } else { "no" }.into(),
            s.next_run_at.map(|t| ago(&t)).unwrap_or_else(|| "-".into()),
            last,
            retention_text(&s.retention),
        ]);
    }
    t
}

fn retention_text(r: &Retention) -> String {
    let mut parts = Vec::new();
    for (n, label) in [
        (r.keep_last, "last"),
        (r.keep_hourly, "hourly"),
        (r.keep_daily, "daily"),
        (r.keep_weekly, "weekly"),
        (r.keep_monthly, "monthly"),
    ] {
        if let Some(n) = n.filter(|n| *n > 0) {
            parts.push(format!("{label}={n}"));
        }
    }
    if let Some(w) = &r.keep_within {
        parts.push(format!("within={w}"));
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(",")
    }
}

/// Waits for a job, drawing a live progress line on stderr when it is a terminal.
async fn follow(client: &Client, job: Job) -> Result<Job, ClientError> {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut job = job;
    while !job.state.is_finished() {
        // A terminal gets a line that moves four times a second; otherwise long-poll, which
        // answers the moment the job ends.
        job = if tty {
            tokio::time::sleep(Duration::from_millis(250)).await;
            client.job(&job.id.to_string(), None).await?
        } else {
            client
                .job(&job.id.to_string(), Some(Duration::from_secs(60)))
                .await?
        };
        if tty && !job.state.is_finished() {
            let bytes = job
                .progress
                .map(|p| format!(", {} written", human_bytes(p.bytes_written)))
                .unwrap_or_default();
            eprint!(
                "\r\x1b[2K{} {} {:.1}s{bytes}",
                job.kind.as_str(),
                job.state.as_str(),
                start.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprint!("\r\x1b[2K");
    }
    Ok(job)
}

/// A job that ended without success, as the daemon's error.
fn job_failed(job: &Job) -> ClientError {
    ClientError::Api {
        status: ckptd_api::StatusCode::INTERNAL_SERVER_ERROR,
        error: job.error.clone().unwrap_or_else(|| ckptd_api::ErrorInfo {
            code: "internal".into(),
            message: format!("job {} ended {}", job.id, job.state.as_str()),
            details: Default::default(),
        }),
    }
}

/// Queues a checkpoint (create or schedule run), then follows it unless `no_wait`.
async fn finish_checkpoint(
    client: &Client,
    out: CheckpointAndJob,
    no_wait: bool,
    json: bool,
) -> Result<(), ClientError> {
    let mut out = out;
    if !no_wait {
        let job = follow(client, out.job).await?;
        out.checkpoint = client.checkpoint(&out.checkpoint.id.to_string()).await?;
        out.job = job;
        if out.job.state != JobState::Succeeded {
            return Err(job_failed(&out.job));
        }
    }
    if json {
        print_json(&out);
    } else {
        let c = &out.checkpoint;
        println!(
            "{}  {}  {}  {}",
            c.name,
            c.status.as_str(),
            human_bytes(c.size_bytes),
            c.dir
        );
        if no_wait {
            println!("job {} {}", out.job.id, out.job.state.as_str());
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Create {
            target,
            name,
            leave_running,
            flags,
            no_wait,
            json,
        } => {
            let req = CreateCheckpoint {
                target: Some(target.target()),
                name,
                leave_running,
                tcp_established: flags.criu.tcp_established,
                ext_unix_sk: flags.criu.ext_unix_sk,
                file_locks: flags.criu.file_locks,
                shell_job: flags.criu.shell_job,
                checkpoint_dir: flags.checkpoint_dir,
                labels: flags.labels.into_iter().collect::<BTreeMap<_, _>>(),
                expires_in: flags.expires_in,
            };
            // Queued at once; followed here so that a terminal shows progress.
            let out = client.create_checkpoint(&req, false).await?;
            finish_checkpoint(&client, out, no_wait, json).await?;
        }
        Command::Ls {
            pid,
            container,
            status,
            schedule,
            labels,
            limit,
            json,
        } => {
            let mut q: Vec<(&str, String)> = vec![("limit", limit.clamp(1, 1000).to_string())];
            if let Some(p) = pid {
                q.push(("pid", p.to_string()));
            }
            if let Some(c) = container {
                q.push(("container", c));
            }
            if let Some(s) = status {
                q.push(("status", s));
            }
            if let Some(s) = schedule {
                q.push(("label", format!("schedule={s}")));
            }
            for (k, v) in labels {
                q.push(("label", format!("{k}={v}")));
            }
            let list = client.list_checkpoints(&query(&q)).await?;
            if json {
                print_json(&list.items);
            } else {
                print!("{}", checkpoint_table(&list.items));
            }
        }
        Command::Inspect { reference, json } => {
            let c = client.checkpoint(&reference).await?;
            if json {
                print_json(&c);
            } else {
                println!("{}", inspect_text(&c));
            }
        }
        Command::Rm { references } => {
            let mut failed = None;
            for r in references {
                failed = printed(&r, client.delete_checkpoint(&r).await).or(failed);
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Command::Restore {
            reference,
            into,
            runtime,
            bundle,
            root,
            console_socket,
            tcp_established,
            no_wait,
            json,
        } => {
            if into.is_some() && runtime == "runc" && bundle.is_none() {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "--into a new runc container needs --bundle DIR (its config.json and rootfs)",
                    )
                    .exit();
            }
            let target = into.map(|id| Target::Container {
                id,
                runtime,
                root,
                bundle,
            });
            let req = RestoreRequest {
                target,
                tcp_established: tcp_established.then_some(true),
                console_socket,
                ..Default::default()
            };
            let mut job = client.restore(&reference, &req, false).await?;
            if !no_wait {
                job = follow(&client, job).await?;
                if job.state != JobState::Succeeded {
                    return Err(job_failed(&job));
                }
            }
            if json {
                print_json(&job);
            } else if no_wait {
                println!("job {} {}", job.id, job.state.as_str());
            } else {
                println!("restored: {}", job_outcome(&job));
                if let Some(log) = job.result.as_ref().and_then(|r| r.output_log.clone()) {
                    println!("output: {log}");
                }
            }
        }
        Command::Logs { reference } => print!("{}", client.checkpoint_log(&reference).await?),
        Command::Export {
            reference,
            output,
            compression,
        } => export(&client, &reference, &output, &compression).await?,
        Command::Import { file, name, json } => {
            let cp = if file == "-" {
                client.import(tokio::io::stdin(), name.as_deref()).await?
            } else {
                let f = tokio::fs::File::open(&file)
                    .await
                    .map_err(|e| ClientError::Io(format!("cannot open {file}: {e}")))?;
                client.import(f, name.as_deref()).await?
            };
            if json {
                print_json(&cp);
            } else {
                println!(
                    "{}  {}  {}  {}",
                    cp.name,
                    cp.status.as_str(),
                    human_bytes(cp.size_bytes),
                    cp.dir
                );
            }
        }
        Command::Adopt {
            dir,
            name,
            container,
            bundle,
            criu,
            labels,
            json,
        } => {
            let req = ckptd_api::AdoptRequest {
                dir,
                name,
                target: container.map(|id| Target::Container {
                    id,
                    runtime: "runc".into(),
                    root: None,
                    bundle,
                }),
                options: criu.options(false),
                labels: labels.into_iter().collect(),
            };
            let cp = client.adopt(&req).await?;
            if json {
                print_json(&cp);
            } else {
                println!(
                    "{}  {}  {}  {}",
                    cp.name,
                    target_text(&cp.target),
                    human_bytes(cp.size_bytes),
                    cp.dir
                );
            }
        }
        Command::Migrate {
            reference,
            to,
            token_file,
            name,
            restore,
        } => {
            let token = std::fs::read_to_string(&token_file).map_err(|e| {
                ClientError::Io(format!("cannot read the token file {token_file}: {e}"))
            })?;
            let remote = ckptd_api::Remote {
                addr: to.clone(),
                token: token.trim().to_owned(),
            };
            let cp = client.migrate(&reference, &remote, name.as_deref()).await?;
            println!("{} imported on {to} as {} ({})", reference, cp.name, cp.id);
            if restore {
                let env: ckptd_api::JobEnvelope = remote
                    .request(
                        ckptd_api::Method::POST,
                        &format!("/v1/checkpoints/{}/restore?wait=true", cp.id),
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    )
                    .await?
                    .into_result()?;
                if env.job.state != JobState::Succeeded {
                    return Err(job_failed(&env.job));
                }
                println!("restored on {to}: {}", job_outcome(&env.job));
            }
        }
        Command::Jobs { state, watch, json } => {
            let q = state
                .map(|s| format!("state={}", encode(&s)))
                .unwrap_or_default();
            let list = client.jobs(&q).await?;
            if json {
                print_json(&list.items);
            } else {
                print!("{}", job_table(&list.items));
            }
            if watch {
                client
                    .events(|data| {
                        let Ok(ev) = serde_json::from_str::<serde_json::Value>(data) else {
                            return true;
                        };
                        if let Some(job) = ev.get("job") {
                            if json {
                                println!("{job}");
                            } else if let Ok(j) = serde_json::from_value::<Job>(job.clone()) {
                                println!(
                                    "{}  {} {} {}",
                                    j.id,
                                    j.kind.as_str(),
                                    j.state.as_str(),
                                    job_outcome(&j)
                                );
                            }
                            let _ = std::io::stdout().flush();
                        }
                        true
                    })
                    .await?;
            }
        }
        Command::Cancel { job } => {
            let j = client.cancel_job(&job).await?;
            println!("job {} {}", j.id, j.state.as_str());
        }
        Command::Events { json } => {
            client
                .events(|data| {
                    if json {
                        println!("{data}");
                    } else {
                        println!("{}", event_line(data));
                    }
                    let _ = std::io::stdout().flush();
                    true
                })
                .await?;
        }
        Command::Schedule(cmd) => schedule(&client, cmd).await?,
        Command::Info { json } => {
            let i = client.info().await?;
            if json {
                print_json(&i);
            } else {
                println!("ckptd     {}", i.version);
                println!("kernel    {}", i.kernel);
                println!(
                    "criu      {} ({}){}",
                    i.criu.version.as_deref().unwrap_or("?"),
                    i.criu.path.as_deref().unwrap_or("not found"),
                    if i.criu.check_ok {
                        ""
                    } else {
                        ", criu check FAILED"
                    }
                );
                for r in &i.runtimes {
                    println!(
                        "runtime   {} {} ({})",
                        r.name,
                        r.version.as_deref().unwrap_or("?"),
                        r.path
                    );
                }
                println!(
                    "storage   {} ({} free)",
                    i.storage.checkpoints_dir,
                    human_bytes(i.storage.free_bytes)
                );
                println!("workers   {} (queue {})", i.workers, i.queue_capacity);
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ckpt", &mut std::io::stdout());
        }
    }
    Ok(())
}

/// Writes a checkpoint's archive to `output` (`-`: stdout), created 0600: it holds process memory.
/// A failed export removes what it wrote.
async fn export(
    client: &Client,
    reference: &str,
    output: &str,
    compression: &str,
) -> Result<(), ClientError> {
    if output == "-" {
        client
            .export(reference, compression, &mut tokio::io::stdout())
            .await?;
        return Ok(());
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(output)
        .map_err(|e| ClientError::Io(format!("cannot create {output}: {e}")))?;
    let mut out = tokio::fs::File::from_std(file);
    match client.export(reference, compression, &mut out).await {
        Ok(n) => {
            println!("{output}  {}", human_bytes(n));
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(output);
            Err(e)
        }
    }
}

/// One line for an event: time, type, and what it is about.
fn event_line(data: &str) -> String {
    let Ok(ev) = serde_json::from_str::<serde_json::Value>(data) else {
        return data.to_owned();
    };
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let kind = s(&ev, "type").unwrap_or_default();
    let time = s(&ev, "time").unwrap_or_default();
    let about = if let Some(j) = ev.get("job") {
        format!(
            "job {} ({})",
            s(j, "id").unwrap_or_default(),
            s(j, "kind").unwrap_or_default()
        )
    } else if let Some(c) = ev.get("checkpoint") {
        format!("checkpoint {}", s(c, "name").unwrap_or_default())
    } else if let Some(sc) = ev.get("schedule") {
        let mut t = format!("schedule {}", s(sc, "name").unwrap_or_default());
        if let Some(e) = sc
            .get("last_run")
            .and_then(|r| r.get("error"))
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
        {
            t.push_str(&format!(": {e}"));
        }
        t
    } else {
        String::new()
    };
    format!("{time}  {kind:<20} {about}")
}

async fn schedule(client: &Client, cmd: ScheduleCommand) -> Result<(), ClientError> {
    match cmd {
        ScheduleCommand::Add {
            name,
            target,
            cron,
            stop,
            flags,
            retention,
            disabled,
            json,
        } => {
            let req = CreateSchedule {
                name,
                target: target.target(),
                cron,
                options: ScheduleOptions {
                    leave_running: !stop,
                    tcp_established: flags.criu.tcp_established,
                    ext_unix_sk: flags.criu.ext_unix_sk,
                    file_locks: flags.criu.file_locks,
                    shell_job: flags.criu.shell_job,
                    checkpoint_dir: flags.checkpoint_dir,
                    labels: flags.labels.into_iter().collect(),
                    expires_in: flags.expires_in,
                },
                retention: retention.retention(),
                enabled: !disabled,
            };
            let s = client.create_schedule(&req).await?;
            if json {
                print_json(&s);
            } else {
                print!("{}", schedule_table(std::slice::from_ref(&s)));
            }
        }
        ScheduleCommand::Ls { json } => {
            let list = client.schedules().await?;
            if json {
                print_json(&list.items);
            } else {
                print!("{}", schedule_table(&list.items));
            }
        }
        ScheduleCommand::Inspect { reference } => print_json(&client.schedule(&reference).await?),
        ScheduleCommand::Set {
            reference,
            cron,
            retention,
        } => {
            let req = UpdateSchedule {
                cron,
                retention: retention.is_set().then(|| retention.retention()),
                ..Default::default()
            };
            let s = client.update_schedule(&reference, &req).await?;
            print!("{}", schedule_table(std::slice::from_ref(&s)));
        }
        ScheduleCommand::Enable { reference } => set_enabled(client, &reference, true).await?,
        ScheduleCommand::Disable { reference } => set_enabled(client, &reference, false).await?,
        ScheduleCommand::Rm { references } => {
            let mut failed = None;
            for r in references {
                failed = printed(&r, client.delete_schedule(&r).await).or(failed);
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        ScheduleCommand::Run { reference, no_wait } => {
            let out = client.run_schedule(&reference, false).await?;
            finish_checkpoint(client, out, no_wait, false).await?;
        }
        ScheduleCommand::Retention { reference, json } => {
            let plan = client.retention_plan(&reference).await?;
            if json {
                print_json(&plan);
            } else {
                let mut t = Table::new(&["ACTION", "NAME", "STATUS", "CREATED", "WHY"]);
                for (action, items) in [("keep", &plan.keep), ("prune", &plan.prune)] {
                    for i in items {
                        t.row(vec![
                            action.into(),
                            i.name.clone(),
                            i.status.as_str().into(),
                            ago(&i.created_at),
                            i.reasons.join("; "),
                        ]);
                    }
                }
                print!("{t}");
            }
        }
    }
    Ok(())
}

async fn set_enabled(client: &Client, reference: &str, enabled: bool) -> Result<(), ClientError> {
    let req = UpdateSchedule {
        enabled: Some(enabled),
        ..Default::default()
    };
    let s = client.update_schedule(reference, &req).await?;
    print!("{}", schedule_table(std::slice::from_ref(&s)));
    Ok(())
}

/// For commands over several references: prints the reference that worked, reports the error
/// of one that did not (and returns it), so that one failure does not stop the others.
fn printed(reference: &str, r: Result<(), ClientError>) -> Option<ClientError> {
    match r {
        Ok(()) => {
            println!("{reference}");
            None
        }
        Err(e) => {
            report(&e);
            Some(e)
        }
    }
}

fn report(e: &ClientError) {
    match e.api_error() {
        Some((_, err)) => {
            eprintln!("ckpt: {}: {}", err.code, err.message);
            if let Some(h) = err.hint() {
                eprintln!("hint: {h}");
            }
            for l in err.log_tail() {
                eprintln!("  {l}");
            }
        }
        None => eprintln!("ckpt: {e}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ckpt: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
