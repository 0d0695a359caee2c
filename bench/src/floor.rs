//! `ckptd-floor CATALOG IMAGES PID RUNS DIR`: what one scheduled checkpoint's promises cost the
//! kernel and SQLite at the least, for BENCHMARKS.md's schedules goal (issue 31). One thread
//! does, RUNS times, only the system calls and statements that any daemon keeping ckptd's
//! promises must make for a run, with none of ckptd's own machinery (no runtime, no threads
//! handing work to each other, no HTTP, no serde), and times them by its own CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`):
//!
//! - `catalog`: the run's four transactions on a copy of a real catalog (CATALOG, ckptd's
//!   schema and rows; WAL, `synchronous=FULL` as ckptd opens it): the admission's rows, the
//!   start, the end, and the retention's read of the schedule's rows and delete of the run
//!   before;
//! - `target`: the target's check, its /proc stat and status read once (PID);
//! - `spawn`: starting a program (`/bin/true`, posix_spawn as ckptd starts CRIU) and reaping it;
//! - `durable`: the images made durable as ckptd does when nothing much else waits to be written
//!   (one `syncfs`, the folder renamed, its parent fsynced), after they are written untimed as
//!   CRIU writes them (copies of IMAGES, a real small checkpoint's folder);
//! - `prune`: the run before removed (its folder listed, each file unlinked, the folder).
//!
//! Prints `RESULT floor RUNS <ms a run: total catalog target spawn durable prune> <user ms>
//! <system ms>`.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use libsqlite3_sys as ffi;

#[path = "clock.rs"]
mod clock;

/// This thread's CPU time so far, in microseconds.
fn cpu() -> f64 {
    clock::cpu_us(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// This thread's (user, system) CPU time so far, in microseconds, as the kernel splits it.
fn split() -> (f64, f64) {
    // SAFETY: getrusage writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    (us(ru.ru_utime), us(ru.ru_stime))
}

/// Accumulates CPU time per step.
#[derive(Default)]
struct Steps {
    names: Vec<&'static str>,
    us: Vec<f64>,
}

impl Steps {
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t0 = cpu();
        let out = f()?;
        let spent = cpu() - t0;
        match self.names.iter().position(|n| *n == name) {
            Some(i) => self.us[i] += spent,
            None => {
                self.names.push(name);
                self.us.push(spent);
            }
        }
        Ok(out)
    }

    fn total(&self, name: &str) -> f64 {
        self.names
            .iter()
            .position(|n| *n == name)
            .map_or(0.0, |i| self.us[i])
    }
}

struct Db(*mut ffi::sqlite3);

impl Db {
    fn open(path: &Path) -> Result<Db> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())?;
        let mut db = std::ptr::null_mut();
        // SAFETY: sqlite3_open_v2 with a valid C string and out pointer.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                c.as_ptr(),
                &mut db,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX,
                std::ptr::null(),
            )
        };
        let db = Db(db);
        if rc != ffi::SQLITE_OK {
            bail!("cannot open {}: {}", path.display(), db.error());
        }
        db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")?;
        Ok(db)
    }

    fn error(&self) -> String {
        // SAFETY: the handle is open; sqlite3_errmsg returns a C string it owns.
        unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    /// Runs `sql` (any number of statements), discarding rows.
    fn exec(&self, sql: &str) -> Result<()> {
        let c = CString::new(sql)?;
        // SAFETY: a valid handle and C string; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.0,
                c.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            bail!(
                "{}: {}",
                sql.chars().take(80).collect::<String>(),
                self.error()
            );
        }
        Ok(())
    }

    /// The first column of every row of `sql`, as text.
    fn column(&self, sql: &str) -> Result<Vec<String>> {
        let c = CString::new(sql)?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: prepare, step and finalize on a valid handle; text read before the next step.
        unsafe {
            if ffi::sqlite3_prepare_v2(self.0, c.as_ptr(), -1, &mut stmt, std::ptr::null_mut())
                != ffi::SQLITE_OK
            {
                bail!("{sql}: {}", self.error());
            }
            let mut out = Vec::new();
            while ffi::sqlite3_step(stmt) == ffi::SQLITE_ROW {
                let t = ffi::sqlite3_column_text(stmt, 0);
                if !t.is_null() {
                    out.push(CStr::from_ptr(t.cast()).to_string_lossy().into_owned());
                }
            }
            ffi::sqlite3_finalize(stmt);
            Ok(out)
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // SAFETY: closes the handle opened in `open`.
        unsafe { ffi::sqlite3_close(self.0) };
    }
}

/// Makes `dir`'s files durable as ckptd does when nothing much else waits to be written (one
/// `syncfs` of the filesystem; `Folder::fsync_all`); then `dir` renamed to `to` and the parent
/// fsynced.
fn durable(dir: &Path, to: &Path) -> Result<()> {
    let d = File::open(dir)?;
    // SAFETY: a valid descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    fs::rename(dir, to)?;
    File::open(to.parent().context("no parent")?)?.sync_all()?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [catalog, images, pid, runs, dir] = args.as_slice() else {
        bail!("usage: ckptd-floor CATALOG IMAGES PID RUNS DIR");
    };
    let runs: usize = runs.parse().context("RUNS")?;
    let dir = PathBuf::from(dir);
    fs::create_dir_all(&dir)?;
    let template: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(images)?
        .map(|e| {
            let p = e?.path();
            let bytes = fs::read(&p)?;
            Ok((PathBuf::from(p.file_name().context("name")?), bytes))
        })
        .collect::<Result<_>>()?;
    let db = Db::open(Path::new(catalog))?;
    // One of the catalog's schedules and its newest ready checkpoint: the runs are its.
    let schedule = db
        .column("SELECT name FROM schedules ORDER BY seq LIMIT 1")?
        .pop()
        .context("the catalog has no schedule")?;
    let mut previous: Option<(String, PathBuf)> = None;
    let (user0, system0) = split();
    let mut untimed = 0.0;
    let mut steps = Steps::default();
    let devnull = File::open("/dev/null")?;
    let mut buf = vec![0u8; 4096];
    let stamp = |i: usize| format!("2026-12-06T00:{:02}:{:02}.000000Z", i / 60 % 60, i % 60);
    for i in 0..runs {
        let id = format!("floor-{i:08}");
        let name = format!("{schedule}-floor-{i}");
        let final_dir = dir.join(&id);
        let partial = dir.join(format!("{id}.partial"));
        let t = stamp(i);
        steps.time("target", || {
            for f in ["stat", "status"] {
                let mut file = File::open(format!("/proc/{pid}/{f}"))?;
                let _ = file.read(&mut buf)?;
            }
            Ok(())
        })?;
        steps.time("catalog", || {
            db.exec(&format!(
                "BEGIN IMMEDIATE; \
                 INSERT INTO checkpoints (id, name, target_kind, target_pid, target, status, created_at, dir, options, labels, criu_version, owner_uid) \
                 VALUES ('{id}', '{name}', 'process', {pid}, '{{\"kind\":\"process\",\"pid\":{pid}}}', 'pending', '{t}', '{d}', \
                 '{{\"leave_running\":true,\"tcp_established\":false,\"ext_unix_sk\":false,\"file_locks\":false,\"shell_job\":false}}', \
                 '{{\"schedule\":\"{schedule}\"}}', '4.2.1', 0); \
                 INSERT INTO jobs (id, kind, checkpoint_id, state, created_at, request, owner_uid) \
                 VALUES ('job-{id}', 'checkpoint', '{id}', 'queued', '{t}', '{{\"schedule\":\"{schedule}\"}}', 0); \
                 UPDATE schedules SET last_run = '{{\"at\":\"{t}\",\"status\":\"running\"}}', anchor_at = '{t}' WHERE name = '{schedule}'; \
                 COMMIT;",
                d = final_dir.display()
            ))
        })?;
        steps.time("catalog", || {
            db.exec(&format!(
                "BEGIN IMMEDIATE; \
                 UPDATE jobs SET state = 'running', started_at = '{t}' WHERE id = 'job-{id}' AND state = 'queued'; \
                 UPDATE checkpoints SET status = 'running' WHERE id = '{id}'; \
                 COMMIT;"
            ))
        })?;
        steps.time("spawn", || {
            let status = Command::new("/bin/true")
                .stdin(devnull.try_clone()?)
                .stdout(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "/bin/true failed");
            Ok(())
        })?;
        // CRIU's part, not timed: the images written.
        let t0 = cpu();
        fs::create_dir(&partial)?;
        for (n, bytes) in &template {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(partial.join(n))
                .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))?;
        }
        untimed += cpu() - t0;
        steps.time("durable", || durable(&partial, &final_dir))?;
        steps.time("catalog", || {
            db.exec(&format!(
                "BEGIN IMMEDIATE; \
                 UPDATE jobs SET state = 'succeeded', finished_at = '{t}' WHERE id = 'job-{id}' AND state = 'running'; \
                 UPDATE checkpoints SET status = 'ready', completed_at = '{t}', size_bytes = 180000, \
                   stats = '{{\"freezing_time_us\":100,\"frozen_time_us\":20000,\"memdump_time_us\":500,\"memwrite_time_us\":300,\"pages_scanned\":100,\"pages_written\":30}}' \
                   WHERE id = '{id}'; \
                 UPDATE schedules SET last_run = '{{\"at\":\"{t}\",\"status\":\"succeeded\"}}', last_success_at = '{t}', consecutive_failures = 0 WHERE name = '{schedule}'; \
                 COMMIT;"
            ))
        })?;
        // Retention (keep_last 1): the schedule's rows read, the run before deleted.
        steps.time("catalog", || {
            db.column(&format!(
                "SELECT id FROM checkpoints WHERE json_extract(labels, '$.schedule') = '{schedule}' AND owner_uid = 0 ORDER BY seq"
            ))?;
            if let Some((prev, _)) = &previous {
                db.exec(&format!("DELETE FROM checkpoints WHERE id = '{prev}'"))?;
            }
            Ok(())
        })?;
        if let Some((_, prev_dir)) = previous.take() {
            steps.time("prune", || Ok(fs::remove_dir_all(&prev_dir)?))?;
        }
        previous = Some((id, final_dir));
    }
    if let Some((_, d)) = previous {
        fs::remove_dir_all(d)?;
    }
    let (user1, system1) = split();
    let n = runs as f64;
    let ms = |v: f64| v / n / 1e3;
    let total: f64 = steps.us.iter().sum();
    print!("RESULT floor {runs} {:.3}", ms(total));
    for s in ["catalog", "target", "spawn", "durable", "prune"] {
        print!(" {:.3}", ms(steps.total(s)));
    }
    // The user/system split of the whole loop, the untimed writes taken out of the system part
    // (they are system calls copying into the page cache).
    println!(
        " {:.3} {:.3}",
        ms(user1 - user0),
        ms(system1 - system0 - untimed)
    );
    Ok(())
}
