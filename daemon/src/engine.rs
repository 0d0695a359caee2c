//! The seam between job logic and the programs that do the work (CRIU, later OCI runtimes).
//! Jobs own the catalog, durability and state transitions; an engine only validates targets and
//! writes or reads images. `criu::CriuEngine` is the real one; unit tests of job logic use a fake.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use ckptd_api::{CheckpointOptions, DumpStats, JobResult, Target};

use crate::error::Result;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a dump produced.
#[derive(Debug, Default)]
pub struct DumpOutput {
    pub stats: Option<DumpStats>,
    /// Tasks CRIU left stopped (not `leave_running`): killed only once the images are durable,
    /// resumed if they cannot be made durable.
    pub stopped: Vec<i32>,
}

pub struct DumpSpec<'a> {
    pub target: &'a Target,
    pub options: CheckpointOptions,
    /// Where the images go (the checkpoint's `.partial` directory).
    pub images_dir: &'a Path,
    /// Log file name, created inside `images_dir`.
    pub log_name: &'a str,
}

pub struct RestoreSpec<'a> {
    /// The target the checkpoint was taken of.
    pub target: &'a Target,
    pub options: CheckpointOptions,
    pub images_dir: &'a Path,
    pub log_name: &'a str,
    /// A label for messages: the checkpoint's name.
    pub checkpoint_name: &'a str,
}

pub trait Engine: Send + Sync + 'static {
    /// The version recorded with each checkpoint.
    fn version(&self) -> Option<String>;
    /// Refuses, before anything is created, a target that cannot or must not be dumped.
    fn check_target(&self, target: &Target) -> Result<()>;
    fn dump<'a>(&'a self, spec: DumpSpec<'a>) -> BoxFuture<'a, Result<DumpOutput>>;
    fn restore<'a>(&'a self, spec: RestoreSpec<'a>) -> BoxFuture<'a, Result<JobResult>>;
    /// Ends tasks a dump left stopped: kills them (`kill`) or lets them run again.
    fn release_stopped(&self, stopped: &[i32], kill: bool);
}
