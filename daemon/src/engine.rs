//! The seam between the service and the programs that do the work: the `Engine` trait and the
//! specs it takes, nothing else. The service owns the catalog, durability and state transitions;
//! an engine validates targets and writes or reads images. `runtime::Engines` picks the engine
//! of each target; unit tests of the service use a fake.

use std::future::Future;
use std::pin::Pin;

use ckptd_api::{
    Checkpoint, CheckpointOptions, ContainerRecord, DumpStats, JobResult, RuntimeInfo, Target,
};

pub use crate::auth::Account;
use crate::error::Result;
pub use crate::stop::{never_stop, StopReason, StopSignal};
pub use crate::sys::Folder;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Finds the runc restores (runc's pid and start time) a runtime runs for one container, each
/// time it is called (`Engine::left_runc_restores`).
pub type LeftRuncs = Box<dyn Fn() -> Vec<crate::sys::TaskId> + Send + Sync>;

/// What a dump left frozen instead of ending it, so that it ends only once the images are
/// durable (and carries on if they cannot be made so).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Stopped {
    /// `leave_running`: nothing to end.
    #[default]
    Nothing,
    /// Tasks CRIU left stopped (`--leave-stopped`), as the kernel listed them (pid and start
    /// time), never as the images name them: a member can write its images.
    Tasks(Vec<crate::sys::TaskId>),
    /// A container left paused; `paused_by_us` says whether a failure should resume it.
    Container {
        container: ContainerHandle,
        paused_by_us: bool,
    },
    /// A group's members, each frozen before any was dumped: all ended, or all let run, together.
    Group(Vec<Stopped>),
}

/// One container of a runtime, as the runtime names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerHandle {
    pub runtime: ckptd_api::Runtime,
    /// The runtime's id of the container (Docker: its full id).
    pub id: String,
    /// runc's `--root`, where the runtime keeps its state (None: its default).
    pub root: Option<String>,
}

/// What a dump produced.
#[derive(Debug, Default)]
pub struct DumpOutput {
    pub stats: Option<DumpStats>,
    pub stopped: Stopped,
    pub container: Option<ContainerRecord>,
    /// The CRIU options file the dump used.
    pub criu_config: Option<String>,
    /// A process tree's controlling terminal, by the key CRIU names it (`tty[RDEV:DEV]`): it
    /// was dumped as a shell job, and its restore needs a terminal for that key.
    pub terminal: Option<String>,
    /// A group's members, as each one's dump recorded it.
    pub members: Vec<ckptd_api::GroupMember>,
}

pub struct DumpSpec<'a> {
    pub target: &'a Target,
    pub options: CheckpointOptions,
    /// Where the images go (the checkpoint's `.partial` folder, held).
    pub images: &'a Folder,
    /// Log file name, created inside `images`.
    pub log_name: &'a str,
    /// A non-root owner, whose CRIU runs as that owner (None: root's).
    pub owner: Option<Account>,
    pub stop: StopSignal,
    /// A group's member waiting for the group's freeze: CRIU stops at its pre-dump barrier
    /// before it seizes anything (`runtime::group`).
    pub barrier: Option<Barrier>,
}

/// The variable that makes ckptd's binary the barrier (`runtime::group::run_barrier`) when CRIU
/// runs it as an action script: the descriptors, `READY,GO`, in CRIU.
pub const BARRIER_ENV: &str = "CKPTD_GROUP_BARRIER";

/// A group's barrier in a member's CRIU: its pre-dump action script (ckptd's own binary, which
/// the environment makes `group::run_barrier`) writes a byte on `ready`, then waits for the
/// group's word on `go` (`g`: go on; anything else, or the daemon gone: CRIU gives up before
/// touching the target).
pub struct Barrier {
    /// The action script: ckptd's binary.
    pub script: std::path::PathBuf,
    /// The write end CRIU's script says it is ready on (through CRIU's /proc/PID/fd).
    pub ready: std::os::fd::OwnedFd,
    /// The read end CRIU's script waits on.
    pub go: std::os::fd::OwnedFd,
}

impl Barrier {
    /// CRIU's argument naming the barrier as its action script.
    pub fn hand_to(&self, args: &mut Vec<String>) {
        args.push("--action-script".into());
        args.push(self.script.display().to_string());
    }

    /// The descriptors and the environment the script finds them by, on CRIU's command.
    pub fn pass(&self, cmd: &mut tokio::process::Command) {
        use std::os::fd::AsRawFd;
        let (ready, go) = (self.ready.as_raw_fd(), self.go.as_raw_fd());
        cmd.env(BARRIER_ENV, format!("{ready},{go}"));
        crate::sys::inherit_fd(cmd, ready);
        crate::sys::inherit_fd(cmd, go);
    }
}

pub struct RestoreSpec<'a> {
    pub checkpoint: &'a Checkpoint,
    /// Where to restore: `None` for in place, or a new container.
    pub into: Option<&'a Target>,
    pub options: CheckpointOptions,
    /// The checkpoint's folder, held.
    pub images: &'a Folder,
    /// Log file name, created inside `images`.
    pub log_name: &'a str,
    pub console_socket: Option<&'a str>,
    /// Restore memory lazily (process checkpoints).
    pub lazy: bool,
    /// The checkpoint's non-root owner, whose CRIU runs as that owner (None: root's).
    pub owner: Option<Account>,
    pub stop: StopSignal,
}

/// The source side of a live migration, once CRIU has written everything but memory: it serves
/// the memory over its page-server socket until that socket closes, then exits.
pub struct LazyDump {
    /// What the dump left stopped: it stays so whatever CRIU does next (`--leave-stopped`); the
    /// service ends it or lets it run once it knows where the workload lives.
    pub stopped: Stopped,
    /// CRIU's run (or the runtime's over it), now serving pages.
    pub criu: tokio::process::Child,
    /// When the workload was frozen, if that was before CRIU started (a container paused
    /// through its cgroup); None: at CRIU's first seized task, as its log says.
    pub frozen_at: Option<std::time::Instant>,
}

/// The destination side of a live migration: the tree runs, its memory arriving behind it.
pub struct LazyRestore {
    /// The restored tree's root.
    pub pid: i32,
    /// `ckptd lazy-guard` over `criu lazy-pages`: exits 0 once every page is in, or kills the
    /// tree and exits non-zero if the pages stop coming (even if ckptd itself is gone).
    pub guard: tokio::process::Child,
    /// The container the tree is, which the runtime must remove if the tree is ended.
    pub container: Option<ContainerHandle>,
}

/// The label a live migration's fallback checkpoint carries: its tree was stopped when it was
/// dumped (CRIU restores it stopped), and a restore continues it (SIGCONT).
pub const CONTINUE_LABEL: &str = "io.ckptd.continue";

/// Why a live migration cannot be offered for a target.
pub fn no_live_migration(target: &Target) -> crate::error::Error {
    crate::error::Error::invalid(format!(
        "live migration is offered for processes and runc containers; {} is neither",
        target.key()
    ))
    .with_hint("move it with a checkpoint instead: `ckpt migrate NAME --to HOST:PORT --restore`")
}

pub trait Engine: Send + Sync + 'static {
    /// The CRIU version recorded with each checkpoint.
    fn version(&self) -> Option<String>;
    /// Refuses, before anything is created, a target that cannot or must not be dumped.
    fn check_target<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>>;
    /// Refuses, before anything is created, CRIU options the target's runtime cannot honour.
    fn check_options(&self, _target: &Target, _options: &CheckpointOptions) -> Result<()> {
        Ok(())
    }
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
    /// The socket of the terminal ckptd holds for the restored tree rooted at `root`, if it
    /// holds one (`runtime::terminal`).
    fn terminal_socket(&self, _root: crate::sys::TaskId) -> Option<std::path::PathBuf> {
        None
    }
    /// The root process of a container target while it runs (its init, as the host numbers it),
    /// whose namespaces a hook enters; None when it does not run or the runtime does not say.
    fn running_pid<'a>(&'a self, _target: &'a Target) -> BoxFuture<'a, Option<i32>> {
        Box::pin(async { None })
    }
    /// Live migration, before anything is frozen: refuses a target that cannot move live, and
    /// gives a container's record (its bundle and config digest), which the destination checks
    /// before it accepts.
    fn check_live<'a>(
        &'a self,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Option<ContainerRecord>>> {
        Box::pin(async move { Err(no_live_migration(target)) })
    }
    /// After the source daemon's crash mid-migration: what the migration left stopped (its
    /// tree, or its paused container), or None when nothing is (it runs, or is gone).
    fn live_leftover<'a>(
        &'a self,
        _target: &'a Target,
        _owner_uid: u32,
    ) -> BoxFuture<'a, Option<Stopped>> {
        Box::pin(async { None })
    }
    /// Live migration, source side: CRIU dumps everything but memory into `spec.images`, then
    /// serves the memory over `pages` (its page-server socket) until that closes. Returns once
    /// the images are written. The tree is left stopped whatever happens to the transfer.
    fn dump_lazy<'a>(
        &'a self,
        spec: DumpSpec<'a>,
        _pages: std::os::fd::OwnedFd,
    ) -> BoxFuture<'a, Result<LazyDump>> {
        Box::pin(async move { Err(no_live_migration(spec.target)) })
    }
    /// Live migration, destination side: restores the tree from `spec.images` at once, its
    /// memory fetched over `pages` by a guarded `criu lazy-pages`.
    fn restore_lazy<'a>(
        &'a self,
        spec: RestoreSpec<'a>,
        _pages: std::os::fd::OwnedFd,
    ) -> BoxFuture<'a, Result<LazyRestore>> {
        Box::pin(async move { Err(no_live_migration(&spec.checkpoint.target)) })
    }
    /// Ends what a dump left frozen (`kill`), or lets it run again.
    fn release<'a>(&'a self, stopped: &'a Stopped, kill: bool) -> BoxFuture<'a, ()>;
    /// Stops the target where it is, before a group's dumps (every member is frozen before any
    /// is dumped): a process tree by a SIGSTOP to each of its tasks, a runc container by its
    /// cgroup freezer. `release` ends it or lets it run again.
    fn freeze<'a>(&'a self, target: &'a Target, _owner_uid: u32) -> BoxFuture<'a, Result<Stopped>> {
        Box::pin(async move {
            Err(crate::error::Error::invalid(format!(
                "{} cannot be a member of a group: a group takes processes and runc containers",
                target.key()
            )))
        })
    }
    /// A group's restore leaves each member as it was dumped (stopped, or paused); once every
    /// member is back, this lets the member that `restored` made run.
    fn continue_restored<'a>(
        &'a self,
        _target: &'a Target,
        _restored: &'a JobResult,
        _owner_uid: u32,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// The container runtimes behind this engine and whether each can be used now.
    fn runtimes(&self) -> BoxFuture<'_, Vec<RuntimeInfo>> {
        Box::pin(async { Vec::new() })
    }
    /// Whether this engine's runtime knows a container `id` (to tell a caller who named the
    /// wrong runtime which one has it).
    fn knows<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async { false })
    }
    /// After a daemon crash: a dump of `checkpoint` that CRIU finished in `images` (to be
    /// published), or None, having let the target run again.
    fn recover_dump<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        images: &'a Folder,
    ) -> BoxFuture<'a, Option<DumpOutput>>;
    /// After a daemon crash, before `recover_restore`: how to find the runc restores a container
    /// runtime may still run for a restore of `checkpoint` (into `into`). A runtime's restore
    /// waits for runc, which waits for CRIU, and no runtime's API stops one: the recovery waits
    /// for them as for a CRIU a crash left, then ends their CRIU as a stop would
    /// (`container::end_left_runcs`). None for an engine whose restores are its own CRIU's.
    fn left_runc_restores<'a>(
        &'a self,
        _checkpoint: &'a Checkpoint,
        _into: Option<&'a Target>,
    ) -> BoxFuture<'a, Option<LeftRuncs>> {
        Box::pin(async { None })
    }
    /// After a daemon crash, before `recover_dump`: how to find the runc checkpoint a container
    /// runtime may still run for a dump of `checkpoint` (Podman's, containerd's: not started by
    /// ckptd, so not found as ckptd's own CRIU and runc are, as leaders of their process groups),
    /// which the recovery waits for and ends as it does `left_runc_restores`. None for an
    /// engine whose dumps ckptd runs itself.
    fn left_runc_checkpoints<'a>(
        &'a self,
        _checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Option<LeftRuncs>> {
        Box::pin(async { None })
    }
    /// After a daemon crash, when `recover_restore` found that the restore (its job started at
    /// `started`) did not complete: removes what the runtime made for it and left, as the job
    /// would have (Podman keeps the container a failed import made).
    fn remove_left_restore<'a>(
        &'a self,
        _checkpoint: &'a Checkpoint,
        _into: Option<&'a Target>,
        _started: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    /// After a daemon crash: what restore job `log_name` produced if it completed.
    fn recover_restore<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
        into: Option<&'a Target>,
        log_name: &'a str,
    ) -> BoxFuture<'a, Option<JobResult>>;
}
