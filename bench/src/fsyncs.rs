//! `ckptd-fsyncs IMAGES ROUNDS DIR`: two ways of making a small checkpoint's images durable, on
//! copies of a real checkpoint's folder (IMAGES), for BENCHMARKS.md's fixed cost (issue 31).
//! Each round writes two fresh copies into DIR (untimed, as CRIU writes them: plain writes into
//! the page cache) and times, in alternating order, on the wall clock:
//!
//! - `per_file`: every file's writeback started (`sync_file_range`), then each file fsynced,
//!   then the folder: ckptd's way when other writeback is pending;
//! - `syncfs`: one `syncfs` of the filesystem: ckptd's way when nothing much else waits to be
//!   written (`Folder::fsync_all`).
//!
//! On ext4 an fsync of a file whose journal transaction has already committed still flushes the
//! disk's cache, so the first way flushes it once a file and the second once.
//!
//! Prints `RESULT fsyncs FILES <per_file ms> <syncfs ms>` (medians).

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

/// Writes a copy of every regular file of `from` into a new folder `to` (not fsynced).
fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            fs::write(to.join(e.file_name()), fs::read(e.path())?)?;
        }
    }
    Ok(())
}

fn per_file(dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    for e in fs::read_dir(dir)? {
        let f = File::open(e?.path())?;
        // SAFETY: a valid descriptor; SYNC_FILE_RANGE_WRITE only starts the writeback.
        unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        files.push(f);
    }
    for f in &files {
        f.sync_all()?;
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn syncfs(dir: &Path) -> Result<()> {
    let d = File::open(dir)?;
    // SAFETY: a valid descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, images, rounds, dir] = &args[..] else {
        anyhow::bail!("usage: ckptd-fsyncs IMAGES ROUNDS DIR");
    };
    let rounds: usize = rounds.parse().context("ROUNDS")?;
    let (images, dir) = (PathBuf::from(images), PathBuf::from(dir));
    let files = fs::read_dir(&images)?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
        .count();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (i, way) in [round % 2, 1 - round % 2].into_iter().enumerate() {
            let to = dir.join(format!("r{round}-{i}"));
            copy(&images, &to)?;
            let t = Instant::now();
            if way == 0 {
                per_file(&to)?;
                a.push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                syncfs(&to)?;
                b.push(t.elapsed().as_secs_f64() * 1e3);
            }
            fs::remove_dir_all(&to)?;
        }
    }
    println!("RESULT fsyncs {files} {:.3} {:.3}", median(a), median(b));
    Ok(())
}
