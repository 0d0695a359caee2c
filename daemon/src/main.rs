use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter};

fn main() {
    // `ckptd lazy-guard ...`: a live migration's guard over `criu lazy-pages`, not the daemon.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(ckptd::runtime::process::GUARD_COMMAND) {
        std::process::exit(ckptd::runtime::process::run_guard(&argv[2..]));
    }
    // CRIU's action script in a group member's dump: the group's barrier.
    if std::env::var_os(ckptd::engine::BARRIER_ENV).is_some() {
        std::process::exit(ckptd::runtime::group::run_barrier());
    }
    // `ckptd drain-guard FD`: the second reader of a Podman export's pipe.
    if argv.get(1).map(String::as_str) == Some(ckptd::runtime::podman::cli::DRAIN_COMMAND) {
        std::process::exit(ckptd::runtime::podman::cli::run_drain(&argv[2..]));
    }
    // `ckptd tty-hold ...`: the holder of a restored process's terminal.
    if argv.get(1).map(String::as_str) == Some(ckptd::runtime::terminal::HOLD_COMMAND) {
        std::process::exit(ckptd::runtime::terminal::run_holder(&argv[2..]));
    }
    let args = ckptd::config::Args::parse();
    let cfg = match ckptd::config::Config::load(args.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ckptd: invalid configuration: {e:#}");
            std::process::exit(2);
        }
    };
    // The filter sits behind a reload layer: SIGHUP sets the configuration's new `log`.
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&cfg.log));
    let json = args.log_format == ckptd::config::LogFormat::Json;
    tracing_subscriber::registry()
        .with(filter)
        .with(json.then(|| {
            fmt::layer()
                .json()
                .with_current_span(true)
                .with_writer(std::io::stderr)
        }))
        // journald and log files get plain text; colours only on a terminal.
        .with((!json).then(|| {
            fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
        }))
        .init();
    let set_log = move |f: &str| -> anyhow::Result<()> {
        let filter = EnvFilter::try_new(f)?;
        handle.reload(filter)?;
        Ok(())
    };
    // Before any thread exists: socket activation reads and clears the environment.
    let activated = match ckptd::systemd::listen_fd() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ckptd: socket activation: {e:#}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The runtime's workers (the threads that serve requests; the blocking pool's threads,
        // which fsync and delete images, never park here) ask for a short slice, once.
        .on_thread_park(|| {
            thread_local!(static ASKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
            if !ASKED.replace(true) {
                let _ = ckptd::sys::request_short_slice();
            }
        })
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(ckptd::run(
        cfg,
        activated,
        ckptd::Reload {
            args,
            set_log: Box::new(set_log),
        },
    )) {
        eprintln!("ckptd: {e:#}");
        std::process::exit(1);
    }
}
