use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let args = ckptd::config::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CKPTD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // journald and log files get plain text; colours only on a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cfg = match ckptd::config::Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ckptd: invalid configuration: {e:#}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(ckptd::run(cfg)) {
        eprintln!("ckptd: {e:#}");
        std::process::exit(1);
    }
}
