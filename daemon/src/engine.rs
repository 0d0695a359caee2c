//! The seam between job logic and the programs that do the work: CRIU for process trees
//! (`criu::CriuEngine`), runc for containers (`runtime::runc::RuncEngine`). Jobs own the catalog,
//! durability and state transitions; an engine validates targets and writes or reads images.
//! `Engines` sends each target to its engine. Unit tests of job logic use a fake.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use ckptd_api::{Checkpoint, CheckpointOptions, ContainerRecord, DumpStats, JobResult, Target};

use crate::criu::CriuEngine;
use crate::error::{Error, Result};
use crate::runtime::runc::RuncEngine;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a running job is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    TimedOut(std::time::Duration),
}

impl StopReason {
    pub fn error(self) -> Error {
        match self {
            StopReason::Cancelled => Error::new(
                crate::error::ErrorKind::Cancelled,
                "the job was cancelled while it ran; CRIU was stopped and the target left running",
            ),
            StopReason::TimedOut(d) => Error::new(
                crate::error::ErrorKind::Timeout,
                format!(
                    "the job ran longer than {} s and was stopped; the target was left running",
                    d.as_secs()
                ),
            )
            .with_hint("raise job_timeout_secs in the config for very large targets or slow disks"),
        }
    }
}

/// Tells a running job's engine to stop: set once, by a cancel or the job's timeout.
pub type StopSignal = tokio::sync::watch::Receiver<Option<StopReason>>;

/// A signal that never fires (for work that cannot be stopped, and for tests).
pub fn never_stop() -> StopSignal {
    let (tx, rx) = tokio::sync::watch::channel(None);
    std::mem::forget(tx);
    rx
}

/// What a dump left frozen instead of ending it, so that it ends only once the images are
/// durable (and carries on if they cannot be made so).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Stopped {
    /// `leave_running`: nothing to end.
    #[default]
    Nothing,
    /// Tasks CRIU left stopped (`--leave-stopped`).
    Tasks(Vec<i32>),
    /// A container left paused; `paused_by_us` says whether a failure should resume it.
    Container {
        id: String,
        root: Option<String>,
        paused_by_us: bool,
    },
    /// A Docker container ckptd paused for the dump (Docker's full id).
    Docker { id: String },
}

/// What a dump produced.
#[derive(Debug, Default)]
pub struct DumpOutput {
    pub stats: Option<DumpStats>,
    pub stopped: Stopped,
    pub container: Option<ContainerRecord>,
    /// The CRIU options file the dump used.
    pub criu_config: Option<String>,
}

pub struct DumpSpec<'a> {
    pub target: &'a Target,
    pub options: CheckpointOptions,
    /// Where the images go (the checkpoint's `.partial` directory).
    pub images_dir: &'a Path,
    /// Log file name, created inside `images_dir`.
    pub log_name: &'a str,
    pub stop: StopSignal,
}

pub struct RestoreSpec<'a> {
    pub checkpoint: &'a Checkpoint,
    /// Where to restore: `None` for in place, or a new container.
    pub into: Option<&'a Target>,
    pub options: CheckpointOptions,
    pub images_dir: &'a Path,
    /// Log file name, created inside `images_dir`.
    pub log_name: &'a str,
    pub console_socket: Option<&'a str>,
    /// Restore memory lazily (process checkpoints).
    pub lazy: bool,
    pub stop: StopSignal,
}

pub trait Engine: Send + Sync + 'static {
    /// The CRIU version recorded with each checkpoint.
    fn version(&self) -> Option<String>;
    /// Refuses, before anything is created, a target that cannot or must not be dumped.
    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>>;
    /// Refuses, before a job is queued, a restore that cannot work (wrong target, id taken, ...).
    fn check_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        console_socket: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>>;
    /// Roughly how many bytes a dump of the target writes (its memory), for the space check.
    fn dump_estimate<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<u64>>;
    fn dump<'a>(&'a self, spec: DumpSpec<'a>) -> BoxFuture<'a, Result<DumpOutput>>;
    fn restore<'a>(&'a self, spec: RestoreSpec<'a>) -> BoxFuture<'a, Result<JobResult>>;
    /// Ends what a dump left frozen (`kill`), or lets it run again.
    fn release<'a>(&'a self, stopped: &'a Stopped, kill: bool) -> BoxFuture<'a, ()>;
    /// After a daemon crash: a dump of `checkpoint` that CRIU finished in `images` (to be
    /// published), or None, having let the target run again.
    fn recover_dump<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        images: &'a Path,
    ) -> BoxFuture<'a, Option<DumpOutput>>;
    /// After a daemon crash: what restore job `log_name` produced if it completed.
    fn recover_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        log_name: &'a str,
    ) -> BoxFuture<'a, Option<JobResult>>;
}

/// The line CRIU logs only once a dump has fully succeeded (after the final state switch and
/// the statistics).
pub const DUMP_DONE: &str = "Dumping finished successfully";

/// Process trees to CRIU, containers to their runtime.
pub struct Engines {
    pub criu: std::sync::Arc<CriuEngine>,
    pub runc: RuncEngine,
    pub docker: crate::runtime::docker::DockerEngine,
}

impl Engines {
    fn for_target(&self, target: &Target) -> &dyn Engine {
        match target {
            Target::Process { .. } => &*self.criu,
            Target::Container { runtime, .. } if runtime == "docker" => &self.docker,
            Target::Container { .. } => &self.runc,
        }
    }
}

impl Engine for Engines {
    fn version(&self) -> Option<String> {
        self.criu.version()
    }
    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>> {
        self.for_target(target).check_target(target)
    }
    fn check_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        console_socket: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        if let Some(t) = into {
            if std::mem::discriminant(t) != std::mem::discriminant(&checkpoint.target) {
                return Box::pin(async move {
                    Err(Error::invalid(format!(
                        "checkpoint {} is of a {}; it cannot be restored as a {}",
                        checkpoint.name,
                        kind_name(&checkpoint.target),
                        kind_name(t)
                    )))
                });
            }
        }
        self.for_target(&checkpoint.target)
            .check_restore(checkpoint, into, console_socket)
    }
    fn dump_estimate<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<u64>> {
        self.for_target(target).dump_estimate(target)
    }
    fn dump<'a>(&'a self, spec: DumpSpec<'a>) -> BoxFuture<'a, Result<DumpOutput>> {
        self.for_target(spec.target).dump(spec)
    }
    fn restore<'a>(&'a self, spec: RestoreSpec<'a>) -> BoxFuture<'a, Result<JobResult>> {
        self.for_target(&spec.checkpoint.target).restore(spec)
    }
    fn release<'a>(&'a self, stopped: &'a Stopped, kill: bool) -> BoxFuture<'a, ()> {
        match stopped {
            Stopped::Container { .. } => self.runc.release(stopped, kill),
            Stopped::Docker { .. } => self.docker.release(stopped, kill),
            _ => self.criu.release(stopped, kill),
        }
    }
    fn recover_dump<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        images: &'a Path,
    ) -> BoxFuture<'a, Option<DumpOutput>> {
        self.for_target(&checkpoint.target)
            .recover_dump(checkpoint, images)
    }
    fn recover_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        log_name: &'a str,
    ) -> BoxFuture<'a, Option<JobResult>> {
        self.for_target(&checkpoint.target)
            .recover_restore(checkpoint, into, log_name)
    }
}

fn kind_name(t: &Target) -> &'static str {
    match t {
        Target::Process { .. } => "process",
        Target::Container { .. } => "container",
    }
}
