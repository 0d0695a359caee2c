//! Following a queued job to its end and printing what it made: shared by every command that
//! queues one (checkpoints, restores, schedule runs, pushes and pulls, imports).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use ckptd_api::{CheckpointAndJob, Client, ClientError, ErrorInfo, Job, JobState, StatusCode};

use crate::render::{print_json, report};
use crate::table::human_bytes;

/// Follows a job to its end (unless `no_wait`); its error when it did not succeed.
pub async fn follow_to_success(
    client: &Client,
    job: Job,
    no_wait: bool,
) -> Result<Job, ClientError> {
    if no_wait {
        return Ok(job);
    }
    let job = follow(client, job).await?;
    if job.state != JobState::Succeeded {
        return Err(job_failed(&job));
    }
    say_failed_hooks(&job);
    Ok(job)
}

/// A post hook's failure undoes nothing, but is said (on stderr).
fn say_failed_hooks(job: &Job) {
    for h in job.result.iter().flat_map(|r| &r.hooks).filter(|h| !h.ok) {
        eprintln!(
            "ckpt: the {} hook failed: {}{}",
            h.hook,
            h.error.as_deref().unwrap_or("it failed"),
            match h.output.trim() {
                "" => String::new(),
                out => format!("\n{out}"),
            }
        );
    }
}

/// Waits for a job, drawing a live progress line on stderr when it is a terminal.
pub async fn follow(client: &Client, job: Job) -> Result<Job, ClientError> {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    // A restore's line says how much it reads: the checkpoint's images.
    let images = if tty && job.kind == ckptd_api::JobKind::Restore {
        client
            .checkpoint(&job.checkpoint_id.to_string())
            .await
            .ok()
            .map(|c| c.size_bytes)
    } else {
        None
    };
    let mut job = job;
    while !job.state.is_finished() {
        // A terminal gets a line that moves four times a second; otherwise long-poll, which
        // answers the moment the job ends.
        let next = async {
            if tty {
                tokio::time::sleep(Duration::from_millis(250)).await;
                client.job(&job.id.to_string(), None).await
            } else {
                client
                    .job(&job.id.to_string(), Some(Duration::from_secs(60)))
                    .await
            }
        };
        job = tokio::select! {
            next = next => next?,
            _ = tokio::signal::ctrl_c() => interrupted(&job, tty),
        };
        if tty && !job.state.is_finished() {
            eprint!("\r\x1b[2K{}", progress_line(&job, start.elapsed(), images));
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprint!("\r\x1b[2K");
    }
    Ok(job)
}

/// The live line of a job being waited for: its kind, state and time, what it has written of
/// the daemon's estimate (a percentage, never 100 before the end: an estimate can be short),
/// or for a restore how much it reads.
pub fn progress_line(job: &Job, elapsed: Duration, images: Option<u64>) -> String {
    let mut line = format!(
        "{} {} {:.1}s",
        job.kind.as_str(),
        job.state.as_str(),
        elapsed.as_secs_f64()
    );
    match (job.progress, images) {
        (Some(p), _) => match p.bytes_estimated.filter(|t| *t > 0) {
            Some(total) => line.push_str(&format!(
                ", {} of ~{} ({}%)",
                human_bytes(p.bytes_written),
                human_bytes(total),
                (p.bytes_written.saturating_mul(100) / total).min(99)
            )),
            None => line.push_str(&format!(", {} written", human_bytes(p.bytes_written))),
        },
        (None, Some(bytes)) => line.push_str(&format!(", {} of images", human_bytes(bytes))),
        (None, None) => {}
    }
    line
}

/// Ctrl-C while waiting: the job goes on in the daemon; say which, and how to follow or cancel
/// it. Exits 130, as a shell does for a command ended by SIGINT.
fn interrupted(job: &Job, tty: bool) -> ! {
    if tty {
        eprint!("\r\x1b[2K");
    }
    eprintln!(
        "ckpt: stopped waiting; job {id} ({kind}) goes on in the daemon\n\
         follow it: ckpt jobs wait {id}\n\
         cancel it: ckpt cancel {id}",
        id = job.id,
        kind = job.kind.as_str()
    );
    std::process::exit(130)
}

/// `--no-wait`: the queued job's id, one line on stdout for scripts; how to follow it on a
/// terminal's stderr.
pub fn print_queued(job: &Job) {
    println!("{}", job.id);
    if std::io::stderr().is_terminal() {
        eprintln!("queued; follow it with: ckpt jobs wait {}", job.id);
    }
}

/// Waits for the job `id` (`ckpt jobs wait`): its end, or its error when it did not succeed.
pub async fn wait(client: &Client, id: &str, json: bool) -> Result<(), ClientError> {
    let job = client.job(id, None).await?;
    let job = follow_to_success(client, job, false).await?;
    if json {
        print_json(&job);
    } else {
        println!("job {} {}", job.id, job.state.as_str());
    }
    Ok(())
}

/// A job that ended without success, as the daemon's error.
pub fn job_failed(job: &Job) -> ClientError {
    ClientError::Api {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        error: job.error.clone().unwrap_or_else(|| ErrorInfo {
            code: "internal".into(),
            message: format!("job {} ended {}", job.id, job.state.as_str()),
            details: Default::default(),
        }),
    }
}

/// Queues a checkpoint (create or schedule run), then follows it unless `no_wait`.
pub async fn finish_checkpoint(
    client: &Client,
    out: CheckpointAndJob,
    no_wait: bool,
    json: bool,
) -> Result<(), ClientError> {
    let mut out = out;
    if !no_wait {
        let job = follow(client, out.job).await?;
        out.checkpoint = client.checkpoint(&out.checkpoint.id.to_string()).await?;
        out.job = job;
        if out.job.state != JobState::Succeeded {
            return Err(job_failed(&out.job));
        }
        say_failed_hooks(&out.job);
        // With push_to, the push that follows is part of what was asked: wait for it too.
        if let Some(push) = out.job.result.as_ref().and_then(|r| r.push_job) {
            let push = follow_to_success(client, client.job(&push.to_string(), None).await?, false)
                .await?;
            out.checkpoint = client.checkpoint(&out.checkpoint.id.to_string()).await?;
            if !json {
                if let Some(c) = push.result.as_ref().and_then(|r| r.remote_copy.as_ref()) {
                    eprintln!(
                        "pushed to {}: {} ({}{})",
                        c.remote,
                        c.key,
                        human_bytes(c.size_bytes),
                        if c.encrypted { ", encrypted" } else { "" }
                    );
                }
            }
        }
    }
    if json {
        print_json(&out);
    } else if no_wait {
        print_queued(&out.job);
    } else {
        let c = &out.checkpoint;
        println!(
            "{}  {}  {}  {}",
            c.name,
            c.status.as_str(),
            human_bytes(c.size_bytes),
            c.dir
        );
        if !c.options.leave_running {
            // Without --leave-running the target is gone now: say so, and how to get it back.
            let what = crate::render::target_words(&c.target);
            eprintln!("stopped {what}; restore it with: ckpt restore {}", c.name);
        }
    }
    Ok(())
}

/// For commands over several references: prints the reference that worked, reports the error
/// of one that did not (and returns it), so that one failure does not stop the others.
pub fn printed(reference: &str, r: Result<(), ClientError>) -> Option<ClientError> {
    match r {
        Ok(()) => {
            println!("{reference}");
            None
        }
        Err(e) => {
            report(&e);
            Some(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: &str, progress: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": "390be939-8cdb-4d56-9d4d-3b0d6a1c2f11", "kind": kind,
            "checkpoint_id": "00000000-0000-0000-0000-000000000001", "state": "running",
            "created_at": chrono::Utc::now(), "started_at": chrono::Utc::now(),
            "finished_at": null, "result": null, "error": null, "progress": progress
        }))
        .unwrap()
    }

    #[test]
    fn progress_shows_a_total_and_a_percentage_when_the_daemon_estimates_one() {
        let t = Duration::from_millis(2300);
        let p = |written: u64, estimated: Option<u64>| serde_json::json!({"bytes_written": written, "bytes_estimated": estimated});
        assert_eq!(
            progress_line(&job("checkpoint", p(512 << 20, Some(1 << 30))), t, None),
            "checkpoint running 2.3s, 512.0 MiB of ~1.0 GiB (50%)"
        );
        // An estimate that fell short never shows 100% (or more) before the end.
        assert_eq!(
            progress_line(&job("checkpoint", p(3 << 30, Some(1 << 30))), t, None),
            "checkpoint running 2.3s, 3.0 GiB of ~1.0 GiB (99%)"
        );
        assert_eq!(
            progress_line(&job("checkpoint", p(5 << 20, None)), t, None),
            "checkpoint running 2.3s, 5.0 MiB written"
        );
        assert_eq!(
            progress_line(&job("restore", serde_json::Value::Null), t, Some(1 << 30)),
            "restore running 2.3s, 1.0 GiB of images"
        );
    }
}
