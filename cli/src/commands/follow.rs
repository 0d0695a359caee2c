//! Following a queued job to its end and printing what it made: shared by every command that
//! queues one (checkpoints, restores, schedule runs, pushes and pulls, imports).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use ckptd_api::{
    CheckpointAndJob, Client, ClientError, ErrorInfo, Job, JobState, StatusCode, Target,
};

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
    Ok(job)
}

/// Waits for a job, drawing a live progress line on stderr when it is a terminal.
pub async fn follow(client: &Client, job: Job) -> Result<Job, ClientError> {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut job = job;
    while !job.state.is_finished() {
        // A terminal gets a line that moves four times a second; otherwise long-poll, which
        // answers the moment the job ends.
        job = if tty {
            tokio::time::sleep(Duration::from_millis(250)).await;
            client.job(&job.id.to_string(), None).await?
        } else {
            client
                .job(&job.id.to_string(), Some(Duration::from_secs(60)))
                .await?
        };
        if tty && !job.state.is_finished() {
            let bytes = job
                .progress
                .map(|p| format!(", {} written", human_bytes(p.bytes_written)))
                .unwrap_or_default();
            eprint!(
                "\r\x1b[2K{} {} {:.1}s{bytes}",
                job.kind.as_str(),
                job.state.as_str(),
                start.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprint!("\r\x1b[2K");
    }
    Ok(job)
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
    }
    if json {
        print_json(&out);
    } else {
        let c = &out.checkpoint;
        println!(
            "{}  {}  {}  {}",
            c.name,
            c.status.as_str(),
            human_bytes(c.size_bytes),
            c.dir
        );
        if no_wait {
            println!("job {} {}", out.job.id, out.job.state.as_str());
        } else if !c.options.leave_running {
            // Without --leave-running the target is gone now: say so, and how to get it back.
            let what = match &c.target {
                Target::Process { pid } => format!("pid {pid}"),
                Target::Container { id, .. } => format!("container {id}"),
            };
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
