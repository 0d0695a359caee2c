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

/// SIGPIPE. Output piped into `head` ends like any Unix tool's (killed by it), not with a
/// panic; a write to the daemon's socket after the daemon closed it (killed mid-upload, say)
/// is an error like any other (EPIPE, said on stderr), not a silent death (exit 141). Which
/// of the two it is, stdout says: the write end of a pipe whose reader left polls POLLERR.
extern "C" fn on_sigpipe(_: libc::c_int) {
    let mut out = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll, signal and raise are async-signal-safe; `out` is this frame's.
    unsafe {
        if libc::poll(&mut out, 1, 0) > 0 && out.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
}

fn main() -> ExitCode {
    // SAFETY: at the start of main, before any thread exists; the handler is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGPIPE,
            on_sigpipe as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
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
