//! `ckpt info` and `ckpt completions`.

use clap::CommandFactory;

use ckptd_api::{Client, ClientError};

use crate::args::Cli;
use crate::render::print_json;
use crate::table::human_bytes;

pub async fn info(client: &Client, json: bool) -> Result<(), ClientError> {
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
        let features: Vec<String> = i
            .criu
            .features
            .iter()
            .map(|(f, on)| format!("{f} {}", if *on { "yes" } else { "no" }))
            .collect();
        if !features.is_empty() {
            println!("features  {}", features.join(", "));
        }
        if i.criu.path.is_some() && !i.criu.kernel_probe_cached {
            println!(
                "warning   /run is not a tmpfs: every CRIU run probes the kernel again first \
                 (tens of ms each); see BENCHMARKS.md"
            );
        }
        for r in &i.runtimes {
            let state = match (&r.error, r.reachable) {
                (Some(e), _) => format!(": unusable: {e}"),
                (None, false) => ": unusable".to_owned(),
                (None, true) => String::new(),
            };
            println!(
                "runtime   {} {} ({}){state}",
                r.name,
                r.version.as_deref().unwrap_or("?"),
                r.path
            );
        }
        println!(
            "storage   {}: {} used by ready checkpoints, {} free",
            i.storage.checkpoints_dir,
            human_bytes(i.storage.used_bytes),
            human_bytes(i.storage.free_bytes)
        );
        println!("workers   {} (queue {})", i.workers, i.queue_capacity);
    }
    Ok(())
}

pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "ckpt", &mut std::io::stdout());
}
