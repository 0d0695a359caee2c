//! Admission: a request becomes a queued job, or is refused with nothing created. Validation,
//! authorization, the target check, the space check, the name, the reservation and the queue slot
//! come first; the catalog rows and the queue entry are written last, together.

use std::path::{Path, PathBuf};

use ckptd_api::Advice;
use ckptd_api::{
    Checkpoint, CheckpointOptions, CheckpointStatus, CreateCheckpoint, Job, JobKind, JobState,
    RestoreRequest, Target,
};
use uuid::Uuid;

use super::*;
use crate::auth::Caller;
use crate::catalog::{self};

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

impl Service {
    /// Whether `caller` may checkpoint `target` (into `dir`, as `validate::checkpoint_dir`
    /// normalized it), and the target is there to be checkpointed now: the checks
    /// `submit_checkpoint` makes before it creates anything. Returns the directory's real path,
    /// the one to store: authorized on the path as written first, then resolved without symlinks
    /// and checked for ownership.
    pub async fn check_checkpoint(
        &self,
        caller: &Caller,
        target: &Target,
        options: &ckptd_api::CheckpointOptions,
        dir: Option<&Path>,
    ) -> Result<Option<PathBuf>> {
        let policy = &self.inner.cfg().policy;
        policy.check_checkpoint(caller, target, dir)?;
        let real = dir.map(validate::resolve_dir).transpose()?;
        if let Some(r) = &real {
            policy.check_dir_owner(caller, r)?;
        }
        // What can be said from the request alone first, then what asks the runtime.
        self.inner.engine.check_options(target, options)?;
        self.inner.engine.check_target(target).await?;
        Ok(real)
    }

    /// Names of the form a schedule's runs use (`S-YYYYMMDDTHHMMSSZ[-N]`) are kept for schedule
    /// S: a member may give one only for a schedule of its own, so nobody can take a run's
    /// names ahead of it. Root may give any name.
    async fn refuse_scheduled_name(&self, caller: &Caller, name: &str) -> Result<()> {
        let Some(schedule) = validate::scheduled_name(name) else {
            return Ok(());
        };
        if caller.is_admin() {
            return Ok(());
        }
        let owner = self
            .inner
            .catalog
            .schedule(schedule)
            .await?
            .map(|s| s.owner_uid);
        if owner == Some(caller.uid) {
            return Ok(());
        }
        Err(crate::auth::forbidden(format!(
            "names of the form {schedule}-YYYYMMDDTHHMMSSZ are kept for the runs of schedule \
             {schedule:?}, which is not yours"
        ))
        .with_hint("choose a name without a timestamp suffix, or leave the name out"))
    }

    /// A member's checkpoints and their bytes stay within `member_max_checkpoints` and
    /// `member_max_bytes` (with `estimate` more to come); root is not limited.
    async fn check_member_storage(&self, caller: &Caller, estimate: u64) -> Result<()> {
        if caller.is_admin() {
            return Ok(());
        }
        let limits = &self.inner.cfg().policy.limits;
        let (count, bytes) = self.inner.catalog.owner_usage(caller.uid).await?;
        if count >= limits.checkpoints {
            return Err(crate::auth::forbidden(format!(
                "uid {} has {count} checkpoints, the most one member may keep \
                 (member_max_checkpoints = {})",
                caller.uid, limits.checkpoints
            ))
            .with_advice(Advice::ListCheckpoints));
        }
        if let Some(max) = limits.bytes.filter(|m| bytes + estimate > *m) {
            return Err(crate::auth::forbidden(format!(
                "uid {}'s checkpoints take {bytes} bytes and this one would add about {estimate}: \
                 more than the {max} bytes one member may use (member_max_bytes)",
                caller.uid
            ))
            .with_hint("delete checkpoints you no longer need, then retry"));
        }
        Ok(())
    }

    /// Validates a checkpoint request and queues its job. Nothing is created when it is refused.
    pub async fn submit_checkpoint(
        &self,
        caller: &Caller,
        req: CreateCheckpoint,
    ) -> Result<(Checkpoint, Job)> {
        self.submit_checkpoint_of(caller, req, None).await
    }

    /// `submit_checkpoint` of a schedule's run: a process that is not the one the schedule was
    /// made for is refused as a stranger, and the schedule records the run with its job.
    pub async fn submit_checkpoint_of(
        &self,
        caller: &Caller,
        req: CreateCheckpoint,
        run: Option<RunOf<'_>>,
    ) -> Result<(Checkpoint, Job)> {
        self.submit_dump(caller, req, run, None).await
    }

    /// A checkpoint job, or with `migrate` a live migration's (`JobKind::Migrate`): the same
    /// admission, the same row (a live migration's checkpoint holds the workload only if the
    /// migration must fall back to a checkpoint).
    pub(super) async fn submit_dump(
        &self,
        caller: &Caller,
        req: CreateCheckpoint,
        run: Option<RunOf<'_>>,
        migrate: Option<(MigrateWork, String)>,
    ) -> Result<(Checkpoint, Job)> {
        let (migrate, token) = match migrate {
            Some((w, t)) => (Some(w), Some(t)),
            None => (None, None),
        };
        let expected = run
            .as_ref()
            .and_then(|r| Some((r.schedule, r.target_start?)));
        let _admitting = self.admitting()?;
        let inner = &self.inner;
        let target = req.target.clone().ok_or_else(|| {
            Error::invalid(
                "the request has no \"target\"; give {\"target\":{\"kind\":\"process\",\"pid\":N}}",
            )
        })?;
        if let Some(n) = &req.name {
            validate::name(n)?;
            // A schedule's run is named by the schedule itself (`Schedules::fire`).
            if run.is_none() {
                self.refuse_scheduled_name(caller, n).await?;
            }
        }
        validate::labels(&req.labels)?;
        if let Some(h) = &req.hooks {
            validate::hooks(h, &target, false)?;
        }
        let expires_in = req
            .expires_in
            .as_deref()
            .map(|d| validate::duration("expires_in", d))
            .transpose()?;
        let push = match &req.push_to {
            Some(r) => Some(remote::PushWork {
                remote: inner.cfg().remotes.named("push_to", r)?.name.clone(),
                keep_local: req.keep_local.unwrap_or(true),
                upload: None,
                tag: None,
                format: None,
            }),
            None if req.keep_local == Some(false) => {
                return Err(Error::invalid(
                    "\"keep_local\": false needs \"push_to\": the images would be nowhere",
                ))
            }
            None => None,
        };
        let custom_dir = req
            .checkpoint_dir
            .as_deref()
            .map(validate::checkpoint_dir)
            .transpose()?;
        // Authorization first: a caller learns nothing about targets it may not touch.
        let custom_dir = self
            .check_checkpoint(caller, &target, &req.options(), custom_dir.as_deref())
            .await?;
        // The target is the process there now, known from here on by its start time too.
        let started = target_start(&target);
        if let (Some((schedule, want)), Target::Process { pid }) = (expected, &target) {
            if started != Some(want) {
                return Err(
                    stranger(*pid, "the process this schedule was made for").with_advice(
                        Advice::RetargetSchedule {
                            schedule: schedule.to_string(),
                        },
                    ),
                );
            }
        }

        let id = Uuid::new_v4();
        let created_at = catalog::now();
        let expires_at = expires_in.map(|d| validate::add_capped(created_at, d));
        let name = match &req.name {
            // A name another checkpoint holds is refused by the insert's unique name
            // (`catalog::name_taken`), not looked up first: one read of the catalog less on every
            // named request (0.23 ms of a job's fixed cost, BENCHMARKS.md). A run's name is its
            // schedule's and the minute's, taken by no other checkpoint but a run of the same
            // second.
            Some(n) => n.clone(),
            None => self.free_name(&default_name(&target, &created_at)).await?,
        };
        let dir = match &custom_dir {
            Some(parent) => {
                let dir = parent.join(&name);
                for p in [dir.clone(), partial_dir(&dir)] {
                    if std::fs::symlink_metadata(&p).is_ok() {
                        return Err(Error::conflict(format!(
                            "{} already exists; ckptd creates the checkpoint's own folder in checkpoint_dir",
                            p.display()
                        ))
                        .with_advice(ckptd_api::Advice::OtherNameOrDir));
                    }
                }
                dir
            }
            None => inner.cfg().checkpoints_root.join(id.to_string()),
        };

        let estimate = inner.engine.dump_estimate(&target).await?;
        self.check_member_storage(caller, estimate).await?;
        check_space(estimate, dir.parent().unwrap_or(&dir))?;

        let kind = if migrate.is_some() {
            JobKind::Migrate
        } else {
            JobKind::Checkpoint
        };
        let job = new_job(kind, id, caller.uid);
        let reservation = inner.reserve(&target, None, job.id, caller.uid)?;
        inner.set_estimate(job.id, estimate);
        let permit = match inner.queue.slot() {
            Some(p) => p,
            None => {
                inner.release(reservation);
                return Err(queue_full(inner.cfg().queue_capacity));
            }
        };
        let checkpoint = Checkpoint {
            id,
            name,
            target,
            status: CheckpointStatus::Pending,
            created_at,
            completed_at: None,
            dir: dir.display().to_string(),
            size_bytes: 0,
            options: req.options(),
            labels: req.labels.clone(),
            criu_version: inner.engine.version(),
            criu_config: None,
            container: None,
            stats: None,
            error: None,
            owner_uid: caller.uid,
            expires_at,
            locations: vec![],
            origin: None,
            hooks: req.hooks.clone(),
            terminal: None,
            members: vec![],
        };
        let mut checkpoint = checkpoint;
        let request = serde_json::to_value(CheckpointWork {
            push,
            target_start: started,
            schedule: run.as_ref().map(|r| r.schedule),
            migrate,
        })
        .expect("serializes");
        let record = |cp: &Checkpoint| run.as_ref().map(|r| (r.record)(cp, &job));
        let mut inserted = inner
            .catalog
            .insert_checkpoint_with_job(&checkpoint, &job, &request, record(&checkpoint).as_ref())
            .await;
        if req.name.is_none()
            && matches!(&inserted, Err(e) if e.details.contains_key(catalog::NAME_TAKEN))
        {
            // Another request without a name took the same generated one (same target, same
            // second) between the check above and this insert: this one gets a suffix.
            checkpoint.name = format!("{}-{}", checkpoint.name, &id.simple().to_string()[..8]);
            if let Some(parent) = &custom_dir {
                checkpoint.dir = parent.join(&checkpoint.name).display().to_string();
            }
            inserted = inner
                .catalog
                .insert_checkpoint_with_job(
                    &checkpoint,
                    &job,
                    &request,
                    record(&checkpoint).as_ref(),
                )
                .await;
        }
        if let Err(mut e) = inserted {
            inner.release(reservation);
            // A schedule's run names itself without reading the catalog first: it is told of a
            // clash, and tries the next free name (`Schedules::fire`).
            if run.is_none() {
                e.details.remove(catalog::NAME_TAKEN);
            }
            return Err(e);
        }
        if let Some(t) = token {
            inner
                .tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.id, t);
        }
        permit.send(job.id);
        inner.events.checkpoint("checkpoint.created", &checkpoint);
        inner.events.job("job.queued", &job);
        tracing::info!(job = %job.id, checkpoint = %checkpoint.id, name = %checkpoint.name, target = %checkpoint.target.key(), "checkpoint queued");
        Ok((checkpoint, job))
    }

    /// Queues a restore of a ready checkpoint. One whose images are only in a remote is pulled
    /// first, by the same job.
    pub async fn submit_restore(
        &self,
        caller: &Caller,
        reference: &str,
        req: RestoreRequest,
    ) -> Result<Job> {
        let _admitting = self.admitting()?;
        let cp = self.checkpoint(caller, reference).await?;
        if cp.status == CheckpointStatus::Ready && !cp.is_local() {
            let remotes = &self.inner.cfg().remotes;
            let Some(copy) = cp.remote_copies().find(|c| remotes.get(&c.remote).is_ok()) else {
                return Err(Error::conflict(format!(
                    "checkpoint {}'s images are only in remotes this daemon no longer has ({})",
                    cp.name,
                    cp.remote_copies()
                        .map(|c| c.remote.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .with_hint("add the remote back to the configuration, or delete the checkpoint"));
            };
            let remote = copy.remote.clone();
            return self
                .submit_restore_pulling(caller, &cp, req, &remote, false)
                .await;
        }
        self.queue_restore(caller, &cp, req, None).await
    }

    /// Queues a restore of `cp`; with `pull`, the job fetches the images first.
    pub(super) async fn queue_restore(
        &self,
        caller: &Caller,
        cp: &Checkpoint,
        req: RestoreRequest,
        pull: Option<remote::PullWork>,
    ) -> Result<Job> {
        let inner = &self.inner;
        inner
            .cfg()
            .policy
            .check_restore(caller, req.target.as_ref())?;
        let pulled_first = pull.is_some() && cp.status == CheckpointStatus::Pending;
        if cp.status != CheckpointStatus::Ready && !pulled_first {
            return Err(Error::conflict(format!(
                "checkpoint {} is {}; only a ready checkpoint can be restored",
                cp.name,
                cp.status.as_str()
            ))
            .with_advice(Advice::ShowCheckpoint {
                checkpoint: cp.name.clone(),
            }));
        }
        if let Some(h) = &req.hooks {
            validate::hooks(h, req.target.as_ref().unwrap_or(&cp.target), true)?;
        }
        inner
            .engine
            .check_restore(cp, req.target.as_ref(), req.console_socket.as_deref())
            .await?;
        let options = CheckpointOptions {
            leave_running: cp.options.leave_running,
            tcp_established: req.tcp_established.unwrap_or(cp.options.tcp_established),
            ext_unix_sk: req.ext_unix_sk.unwrap_or(cp.options.ext_unix_sk),
            file_locks: req.file_locks.unwrap_or(cp.options.file_locks),
            shell_job: req.shell_job.unwrap_or(cp.options.shell_job),
        };
        if req.lazy && !matches!(cp.target, Target::Process { .. }) {
            return Err(Error::invalid(format!(
                "lazy restore is offered for process checkpoints; {} is a container checkpoint",
                cp.name
            )));
        }
        if pull.is_none() {
            check_images_dir(cp)?;
        }
        check_rootfs(caller, cp, &req)?;
        let job = new_job(JobKind::Restore, cp.id, caller.uid);
        // The target being restored is busy: the original, or the new container.
        let destination = req.target.as_ref().unwrap_or(&cp.target);
        let reservation =
            inner.reserve(destination, Some((cp.id, &cp.name)), job.id, caller.uid)?;
        let work = RestoreWork {
            options,
            into: req.target.clone(),
            console_socket: req.console_socket.clone(),
            lazy: req.lazy,
            pull,
            rootfs: req.rootfs.clone(),
            hooks: req.hooks.clone(),
        };
        inner.enqueue(reservation, job, &work).await
    }
}

/// A restore of a container checkpoint archive's checkpoint as a runc container: `rootfs` (root
/// only, an existing directory) goes with a runc target that names a new bundle, which ckptd
/// builds; without it, the bundle must be there already. What cannot be restored here (a pod's
/// namespaces, volumes that are not on this host) is refused now, before the job.
fn check_rootfs(caller: &Caller, cp: &Checkpoint, req: &RestoreRequest) -> Result<()> {
    use crate::runtime::bundle;
    let dir = Path::new(&cp.dir);
    let runc_bundle = match &req.target {
        Some(Target::Container {
            runtime: ckptd_api::Runtime::Runc,
            bundle: Some(b),
            ..
        }) => Some(b.as_str()),
        _ => None,
    };
    let Some(rootfs) = &req.rootfs else {
        if let Some(b) = runc_bundle {
            if bundle::has_spec(dir) && !Path::new(b).join("config.json").exists() {
                return Err(Error::invalid(format!(
                    "checkpoint {} came from a container checkpoint archive, and {b} holds no \
                     bundle",
                    cp.name
                ))
                .with_advice(Advice::GiveRootfs));
            }
        }
        return Ok(());
    };
    if !caller.is_admin() {
        return Err(crate::auth::forbidden(format!(
            "uid {} may not give a rootfs: building a bundle from an archive writes where the \
             archive says, so only root may",
            caller.uid
        )));
    }
    if runc_bundle.is_none() || !bundle::has_spec(dir) {
        return Err(Error::invalid(format!(
            "\"rootfs\" restores a checkpoint imported from a container checkpoint archive as a \
             new runc container: {} is not one, or the restore's target is not              {{\"kind\":\"container\",\"id\":NEW,\"bundle\":DIR}}",
            cp.name
        )));
    }
    let b = Path::new(runc_bundle.unwrap_or_default());
    if !b.is_absolute() || std::fs::read_dir(b).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::conflict(format!(
            "the bundle {} must be an absolute path to a directory that does not exist yet (or \
             is empty): ckptd builds the bundle there",
            b.display()
        )));
    }
    let p = Path::new(rootfs);
    if !p.is_absolute() || !p.is_dir() {
        return Err(Error::invalid(format!(
            "rootfs {rootfs:?} must be an absolute path to a directory (the image's root \
             filesystem, unpacked)"
        )));
    }
    bundle::check(dir, &cp.name)
}

/// Before a restore (which runs the images' code with the credentials they record): the images
/// must still be in the directory ckptd made, a real directory owned by root that nobody else can
/// write, so that nobody could have swapped or edited them (a non-root caller may own the
/// `checkpoint_dir` they sit in).
pub(super) fn check_images_dir(cp: &Checkpoint) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let tampered = |why: &str| {
        Error::new(
            ErrorKind::Forbidden,
            format!(
                "refusing to restore checkpoint {}: {} is no longer the private directory its \
                 dump created (it may have been replaced or tampered with){why}",
                cp.name, cp.dir
            ),
        )
        .with_hint("restore only images you trust; delete this checkpoint and take a new one")
    };
    let (_anchor, folder) = folder(cp).map_err(|e| match e.kind {
        ErrorKind::Forbidden => tampered(&format!(": {}", e.message)),
        _ => e,
    })?;
    // The held folder itself (its /proc path resolves to it, not to any name).
    let md = std::fs::metadata(folder.path()).map_err(|e| {
        Error::conflict(format!(
            "the images of checkpoint {} are gone from {}: {e}",
            cp.name, cp.dir
        ))
        .with_hint("delete the checkpoint; it cannot be restored")
    })?;
    // Root's images are used only by a root CRIU and must be root's alone; a member's are used
    // only by a CRIU running as that member, so they may be the member's (its CRIU wrote them).
    let owner_ok = md.uid() == 0 || md.uid() == cp.owner_uid;
    if md.file_type().is_symlink() || !md.is_dir() || !owner_ok || md.mode() & 0o022 != 0 {
        return Err(tampered(""));
    }
    Ok(())
}

/// 507 when the images (about `estimate` bytes) would not fit where they go.
pub(super) fn check_space(estimate: u64, parent: &Path) -> Result<()> {
    let free = sys::free_bytes(parent)
        .map_err(|e| Error::io("cannot read the free space of", parent, &e))?;
    let needed = estimate + estimate / 10 + sys::SPACE_MARGIN;
    if free < needed {
        return Err(Error::new(
            ErrorKind::InsufficientStorage,
            format!(
                "not enough space for the images in {}: the target holds about {} MiB of memory, \
                 which needs about {} MiB; {} MiB are free",
                parent.display(),
                estimate >> 20,
                needed >> 20,
                free >> 20
            ),
        )
        .with("needed_bytes", needed)
        .with("free_bytes", free)
        .with_advice(ckptd_api::Advice::MoreSpace));
    }
    Ok(())
}

pub(super) fn queue_full(capacity: usize) -> Error {
    Error::new(
        ErrorKind::QueueFull,
        format!("the job queue is full ({capacity} jobs wait for a worker)"),
    )
    .with_hint("retry later, or raise queue_capacity / workers in the config")
}

pub(super) fn new_job(kind: JobKind, checkpoint_id: Uuid, owner_uid: u32) -> Job {
    Job {
        owner_uid,
        id: Uuid::new_v4(),
        kind,
        checkpoint_id,
        state: JobState::Queued,
        created_at: catalog::now(),
        started_at: None,
        finished_at: None,
        result: None,
        error: None,
        progress: None,
    }
}

/// `<comm>-<UTC timestamp>`, e.g. `looper-20261127T101500Z`.
pub(super) fn default_name(target: &Target, at: &chrono::DateTime<chrono::Utc>) -> String {
    let base = match target {
        Target::Process { pid } => sys::proc_stat(*pid)
            .map(|s| s.comm)
            .unwrap_or_else(|| format!("pid{pid}")),
        Target::Container { id, .. } => id.clone(),
        Target::Group { .. } => "group".into(),
    };
    let base = validate::name_from(&base, "p");
    format!("{base}-{}", at.format("%Y%m%dT%H%M%SZ"))
}
