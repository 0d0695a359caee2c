//! `ckpt`: the command-line client of ckptd. Tables for people, `--json` for scripts.
//! Exit codes: 0 success, 1 the daemon refused or the job failed (its message, hint and CRIU's
//! error lines on stderr), 2 usage errors.
//!
//! `args` declares the command line, `commands` runs each group of commands over the api crate's
//! client, `render` prints (tables, events, errors with hints in `ckpt`'s words).

mod args;
mod commands;
mod complete;
mod render;
mod table;

use std::process::ExitCode;

use ckptd_api::{Client, ClientError};
use clap::Parser;

use args::{Cli, Command};
use commands::{checkpoints, daemon, jobs, portability, remotes, schedules, terminal};

/// How a command failed: with an error still to report, or having reported its own.
pub enum Failed {
    Report(ClientError),
    Reported,
}

impl From<ClientError> for Failed {
    fn from(e: ClientError) -> Self {
        Failed::Report(e)
    }
}

async fn run(cli: Cli) -> Result<(), Failed> {
    let client = Client::new(&cli.socket);
    let c = &client;
    let done = match cli.command {
        Command::Create(a) => checkpoints::create(c, a).await,
        Command::Ls(a) => checkpoints::ls(c, a).await,
        Command::Inspect { reference, json } => checkpoints::inspect(c, &reference, json).await,
        Command::Rm { references } => return checkpoints::rm(c, references).await,
        Command::Restore(a) => checkpoints::restore(c, a).await,
        Command::Logs { reference } => checkpoints::logs(c, &reference).await,
        Command::Export {
            reference,
            output,
            compression,
            format,
        } => {
            let query = ckptd_api::query::ArchiveQuery {
                compression,
                format,
            };
            portability::export(c, &reference, output.as_deref(), query).await
        }
        Command::Import { file, name, json } => {
            portability::import(c, &file, name.as_deref(), json).await
        }
        Command::Adopt(a) => portability::adopt(c, a).await,
        Command::Migrate(a) => portability::migrate(c, a).await,
        Command::Remotes { json } => remotes::list(c, json).await,
        Command::Push(a) => remotes::push(c, a).await,
        Command::Pull(a) => remotes::pull(c, a).await,
        Command::RmRemote { remote, references } => {
            return remotes::rm(c, &remote, references).await
        }
        Command::Jobs(args::JobsArgs {
            command: Some(args::JobsCommand::Wait { job, json }),
            ..
        }) => commands::follow::wait(c, &job, json).await,
        Command::Jobs(a) => jobs::jobs(c, a).await,
        Command::Cancel { job } => jobs::cancel(c, &job).await,
        Command::Attach { pid } => terminal::attach(c, pid).await,
        Command::Events { since, json } => jobs::events(c, since.as_deref(), json).await,
        Command::Schedule(cmd) => return schedules::run(c, cmd).await,
        Command::Info { json } => daemon::info(c, json).await,
        Command::Top => commands::top::top(c).await,
        Command::Completions { shell } => {
            daemon::completions(shell);
            Ok(())
        }
    };
    Ok(done?)
}

fn main() -> ExitCode {
    // Output piped into `head` ends like any Unix tool's (killed by SIGPIPE), not with a panic.
    // SAFETY: at the start of main, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // `COMPLETE=bash ckpt ...`: the shell asks for completions; answered, then exit.
    clap_complete::CompleteEnv::with_factory(<Cli as clap::CommandFactory>::command).complete();
    let cli = Cli::parse();
    let json = cli.command.json();
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
        Err(Failed::Report(e)) if json => {
            render::report_json(&e);
            ExitCode::FAILURE
        }
        Err(Failed::Report(e)) => {
            render::report(&e);
            ExitCode::FAILURE
        }
        Err(Failed::Reported) => ExitCode::FAILURE,
    }
}
