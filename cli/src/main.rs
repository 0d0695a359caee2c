//! `ckpt`: the command-line client of ckptd. Exit codes: 0 success, 1 the daemon refused or the
//! job failed (its message and hint on stderr), 2 usage errors.

use std::collections::BTreeMap;
use std::process::ExitCode;

use ckptd_api::{Checkpoint, Client, ClientError, CreateCheckpoint, Job, RestoreRequest, Target};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Checkpoint and restore process trees through ckptd"
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

#[derive(Subcommand)]
enum Command {
    /// Checkpoint a process tree (TARGET is its root pid).
    Create {
        target: i32,
        name: Option<String>,
        #[arg(long)]
        leave_running: bool,
        #[arg(long)]
        tcp_established: bool,
        #[arg(long)]
        ext_unix_sk: bool,
        #[arg(long)]
        file_locks: bool,
        #[arg(long)]
        shell_job: bool,
        /// Existing directory in which the checkpoint's folder is created.
        #[arg(long)]
        checkpoint_dir: Option<String>,
        /// Label key=value; repeatable.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Return once the job is queued instead of when it ends.
        #[arg(long)]
        no_wait: bool,
    },
    /// List checkpoints, newest first.
    Ls {
        #[arg(long)]
        pid: Option<i32>,
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        #[arg(long)]
        json: bool,
    },
    /// Show one checkpoint (by id or name).
    Inspect { reference: String },
    /// Delete checkpoints and their images.
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Restore a checkpoint in place.
    Restore {
        reference: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Print CRIU's logs of a checkpoint.
    Logs { reference: String },
    /// List jobs, newest first.
    Jobs {
        #[arg(long)]
        json: bool,
    },
    /// Show the daemon's versions, CRIU, storage and workers.
    Info,
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
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

fn checkpoint_row(c: &Checkpoint) -> String {
    let target = match &c.target {
        Target::Process { pid } => format!("pid {pid}"),
        Target::Container { id, .. } => format!("container {id}"),
    };
    format!(
        "{:<36}  {:<32}  {:<12}  {:<8}  {:>10}  {}",
        c.id,
        c.name,
        target,
        c.status.as_str(),
        c.size_bytes,
        c.created_at.format("%Y-%m-%d %H:%M:%S")
    )
}

fn job_line(j: &Job) -> String {
    let mut s = format!("job {} {} {}", j.id, j.kind.as_str(), j.state.as_str());
    if let Some(pid) = j.result.as_ref().and_then(|r| r.pid) {
        s.push_str(&format!(" pid {pid}"));
    }
    s
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Create {
            target,
            name,
            leave_running,
            tcp_established,
            ext_unix_sk,
            file_locks,
            shell_job,
            checkpoint_dir,
            labels,
            no_wait,
        } => {
            let req = CreateCheckpoint {
                target: Some(Target::Process { pid: target }),
                name,
                leave_running,
                tcp_established,
                ext_unix_sk,
                file_locks,
                shell_job,
                checkpoint_dir,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
            };
            let out = client.create_checkpoint(&req, !no_wait).await?;
            println!(
                "{} {} {}",
                out.checkpoint.name,
                out.checkpoint.status.as_str(),
                out.checkpoint.dir
            );
            println!("{}", job_line(&out.job));
        }
        Command::Ls { pid, labels, json } => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(p) = pid {
                q.push(("pid", p.to_string()));
            }
            for (k, v) in labels {
                q.push(("label", format!("{k}={v}")));
            }
            let list = client.list_checkpoints(&query(&q)).await?;
            if json {
                print_json(&list.items);
            } else {
                println!(
                    "{:<36}  {:<32}  {:<12}  {:<8}  {:>10}  CREATED",
                    "ID", "NAME", "TARGET", "STATUS", "SIZE"
                );
                for c in &list.items {
                    println!("{}", checkpoint_row(c));
                }
            }
        }
        Command::Inspect { reference } => print_json(&client.checkpoint(&reference).await?),
        Command::Rm { references } => {
            for r in references {
                client.delete_checkpoint(&r).await?;
                println!("{r}");
            }
        }
        Command::Restore { reference, no_wait } => {
            let job = client
                .restore(&reference, &RestoreRequest::default(), !no_wait)
                .await?;
            println!("{}", job_line(&job));
        }
        Command::Logs { reference } => print!("{}", client.checkpoint_log(&reference).await?),
        Command::Jobs { json } => {
            let list = client.jobs("").await?;
            if json {
                print_json(&list.items);
            } else {
                for j in &list.items {
                    println!("{}", job_line(j));
                }
            }
        }
        Command::Info => print_json(&client.info().await?),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
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
            ExitCode::FAILURE
        }
    }
}
