use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let args = ckptd::config::Args::parse();
    let filter = EnvFilter::try_from_env("CKPTD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        ckptd::config::LogFormat::Json => log.json().with_current_span(true).init(),
        // journald and log files get plain text; colours only on a terminal.
        ckptd::config::LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let cfg = match ckptd::config::Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ckptd: invalid configuration: {e:#}");
            std::process::exit(2);
        }
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
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(ckptd::run(cfg, activated)) {
        eprintln!("ckptd: {e:#}");
        std::process::exit(1);
    }
}
