//! `ckptd-stats IMAGES`: CRIU's dump statistics of a folder of images (its `stats-dump`), read
//! as the daemon reads them (`ckptd::criu::images::read_dump_stats`), for the by-hand side of
//! scripts/bench_container.sh, whose `runc checkpoint` leaves them in its image path.
//!
//! Prints `FROZEN_US MEMWRITE_US PAGES_WRITTEN`.

use std::path::PathBuf;

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: ckptd-stats IMAGES")?,
    );
    let s = ckptd::criu::images::read_dump_stats(&dir)
        .with_context(|| format!("the dump statistics in {}", dir.display()))?;
    println!(
        "{} {} {}",
        s.frozen_time_us, s.memwrite_time_us, s.pages_written
    );
    Ok(())
}
