//! Checkpoints in remotes: push and pull jobs, restores that pull first, copies deleted by
//! name. The bucket side (keys, streams, encryption) is `crate::remote`'s.
//!
//! A pull catalogues nothing until its images are verified and published: a checkpoint the pull
//! creates is `pending` while it runs and is removed if the pull fails, so a bad object or a
//! cancelled pull leaves no row; a daemon killed mid-pull leaves it `failed` (start-up
//! reconciliation) and its staging directory is removed.

use std::path::Path;

use ckptd_api::{
    Advice, Checkpoint, CheckpointStatus, Job, JobKind, JobResult, Location, PullRequest,
    RemoteCheckpoint, RemoteCopy, RestoreRequest,
};
use serde::{Deserialize, Serialize};

use super::admit::new_job;
use super::*;
use crate::archive::Manifest;
use crate::auth::{forbidden, Caller};
use crate::catalog;
use crate::error::{Error, Result};
use crate::stop::StopSignal;
use crate::sys;

/// What a push job needs beyond its checkpoint, stored with the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PushWork {
    pub remote: String,
    pub keep_local: bool,
    /// A registry's image tag (the checkpoint's name when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A registry image's layout (Podman's for a Podman checkpoint, else ckptd's, when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ckptd_api::ArchiveFormat>,
    /// The multipart upload in progress (key, upload id), recorded as soon as it starts so that
    /// a daemon killed mid-push aborts it at its next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<(String, String)>,
}

/// What a pull (or a restore that pulls first) needs, stored with the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PullWork {
    pub copy: RemoteCopy,
    /// The pull created the checkpoint's row: it goes if the pull fails.
    pub created_row: bool,
}

fn admin_only(caller: &Caller, what: &str) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(forbidden(format!(
            "uid {} may not {what}: a remote's objects belong to every host that shares it, and \
             restoring images runs the code and credentials they hold, so only root brings them in \
             or removes them",
            caller.uid
        )))
    }
}

impl Service {
    /// The remotes as configured now.
    pub fn remotes(&self) -> crate::remote::Remotes {
        self.inner.cfg().remotes.clone()
    }

    /// Queues a push of a ready local checkpoint to `remote`.
    pub async fn submit_push(
        &self,
        caller: &Caller,
        reference: &str,
        remote: &str,
        (tag, format): (Option<String>, Option<ckptd_api::ArchiveFormat>),
        keep_local: bool,
    ) -> Result<Job> {
        let _admitting = self.admitting()?;
        let inner = &self.inner;
        let r = inner.cfg().remotes.get(remote)?;
        match &tag {
            Some(_) if !r.is_registry() => {
                return Err(Error::invalid(format!(
                    "tag: remote {} is a bucket, whose objects are named by checkpoint id; a tag \
                     is for a registry's images",
                    r.name
                )))
            }
            Some(t) if !crate::remote::registry::valid_tag(t) => {
                return Err(Error::invalid(format!(
                    "tag {t:?} is not a valid image tag: 1-128 letters, digits, '_', '.' and '-', \
                     not starting with '.' or '-'"
                )))
            }
            _ => {}
        }
        match format {
            Some(f) if f != ckptd_api::ArchiveFormat::Ckptd && !r.is_registry() => {
                return Err(Error::invalid(format!(
                    "format: remote {} is a bucket, which holds ckptd's archives; format={f} is \
                     for a registry's images",
                    r.name
                )))
            }
            _ => {}
        }
        let cp = self.checkpoint(caller, reference).await?;
        refuse_group(&cp, format.unwrap_or_default())?;
        if cp.status != CheckpointStatus::Ready {
            return Err(Error::conflict(format!(
                "checkpoint {} is {}; only a ready checkpoint can be pushed",
                cp.name,
                cp.status.as_str()
            )));
        }
        if !cp.is_local() {
            return Err(Error::conflict(format!(
                "checkpoint {}'s images are not on this host (only in {}); there is nothing to push",
                cp.name,
                cp.remote_copies()
                    .map(|c| c.remote.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(c) = cp.remote_copy(&r.name) {
            return Err(Error::conflict(format!(
                "checkpoint {} is already in remote {} ({}, pushed {})",
                cp.name, r.name, c.key, c.pushed_at
            ))
            .with_advice(Advice::DeleteRemoteCopy {
                remote: r.name.clone(),
                checkpoint: cp.id.to_string(),
            }));
        }
        let job = new_job(JobKind::Push, cp.id, caller.uid);
        let work = PushWork {
            remote: r.name.clone(),
            keep_local,
            upload: None,
            tag,
            format,
        };
        self.enqueue_on(&cp, job, &work).await
    }

    /// Queues `job` on checkpoint `cp` (held against deletes until it ends).
    async fn enqueue_on(&self, cp: &Checkpoint, job: Job, work: &impl Serialize) -> Result<Job> {
        let reservation = self.inner.reserve_checkpoint(cp.id, &cp.name)?;
        self.inner.enqueue(reservation, job, work).await
    }

    /// What a remote holds.
    pub async fn remote_checkpoints(
        &self,
        caller: &Caller,
        remote: &str,
    ) -> Result<Vec<RemoteCheckpoint>> {
        admin_only(caller, "list a remote")?;
        self.inner.cfg().remotes.get(remote)?.list().await
    }

    /// One checkpoint a remote holds.
    pub async fn remote_checkpoint(
        &self,
        caller: &Caller,
        remote: &str,
        reference: &str,
    ) -> Result<RemoteCheckpoint> {
        admin_only(caller, "read a remote")?;
        self.inner.cfg().remotes.get(remote)?.find(reference).await
    }

    /// The checkpoint `reference` of `remote`, ready to be pulled by `caller`: its row here (new
    /// and `pending`, or the one this host has), the copy, and whether the pull made the row.
    async fn prepare_pull(
        &self,
        caller: &Caller,
        remote: &str,
        reference: &str,
        name: Option<String>,
    ) -> Result<(Checkpoint, RemoteCopy, bool)> {
        let _admitting = self.admitting()?;
        admin_only(caller, "pull checkpoints")?;
        let found = self.remote_checkpoint(caller, remote, reference).await?;
        self.inner
            .cfg()
            .remotes
            .get(remote)?
            .can_pull(&found.object)?;
        let copy = found.object.clone();
        let (cp, created_row) = self.pull_target(caller, found, name).await?;
        Ok((cp, copy, created_row))
    }

    /// Queues a pull: the checkpoint is catalogued (`pending`) and its images fetched.
    pub async fn submit_pull(
        &self,
        caller: &Caller,
        remote: &str,
        reference: &str,
        req: PullRequest,
    ) -> Result<(Checkpoint, Job)> {
        let (cp, copy, created_row) = self
            .prepare_pull(caller, remote, reference, req.name)
            .await?;
        if cp.is_local() {
            return Err(Error::conflict(format!(
                "checkpoint {} is already on this host, with its images",
                cp.name
            ))
            .with_advice(Advice::ShowCheckpoint {
                checkpoint: cp.name.clone(),
            }));
        }
        let job = new_job(JobKind::Pull, cp.id, caller.uid);
        let work = PullWork { copy, created_row };
        match self.enqueue_on(&cp, job, &work).await {
            Ok(job) => Ok((cp, job)),
            Err(e) => {
                self.drop_created(&cp, created_row).await;
                Err(e)
            }
        }
    }

    /// Queues a restore of a checkpoint a remote holds: catalogued, pulled, then restored, in
    /// one job.
    pub async fn submit_remote_restore(
        &self,
        caller: &Caller,
        remote: &str,
        reference: &str,
        req: RestoreRequest,
    ) -> Result<Job> {
        let (cp, _, created_row) = self.prepare_pull(caller, remote, reference, None).await?;
        let result = if cp.is_local() {
            self.submit_restore(caller, &cp.id.to_string(), req).await
        } else {
            self.submit_restore_pulling(caller, &cp, req, remote, created_row)
                .await
        };
        if result.is_err() {
            self.drop_created(&cp, created_row).await;
        }
        result
    }

    /// The row a pull fills: the checkpoint's own row when this host has it (its images dropped
    /// after a push, or gone), else a new `pending` row made from the remote's record.
    async fn pull_target(
        &self,
        caller: &Caller,
        found: RemoteCheckpoint,
        name: Option<String>,
    ) -> Result<(Checkpoint, bool)> {
        let inner = &self.inner;
        let copy = found.object.clone();
        if let Some(mut cp) = inner
            .catalog
            .checkpoint(&found.checkpoint.id.to_string())
            .await?
        {
            match cp.status {
                CheckpointStatus::Ready if cp.is_local() => return Ok((cp, false)),
                CheckpointStatus::Ready | CheckpointStatus::Missing => {
                    if cp.remote_copy(&copy.remote).is_none() {
                        cp.locations.push(Location::Remote(copy));
                    }
                    return Ok((cp, false));
                }
                CheckpointStatus::Failed => inner.catalog.delete_checkpoint(cp.id).await?,
                CheckpointStatus::Pending | CheckpointStatus::Running => {
                    return Err(Error::conflict(format!(
                        "checkpoint {} is {} here: a job is already bringing it in",
                        cp.name,
                        cp.status.as_str()
                    ))
                    .with_advice(Advice::WaitForRunningJobs))
                }
            }
        }
        let name = name.unwrap_or_else(|| found.checkpoint.name.clone());
        validate::name(&name)?;
        self.refuse_taken(&name)
            .await
            .map_err(|e| e.with_advice(Advice::PullAsOtherName))?;
        let src = found.checkpoint;
        let cp = Checkpoint {
            id: src.id,
            name,
            target: src.target,
            status: CheckpointStatus::Pending,
            created_at: src.created_at,
            completed_at: None,
            dir: inner
                .cfg()
                .checkpoints_root
                .join(src.id.to_string())
                .display()
                .to_string(),
            size_bytes: src.size_bytes,
            options: src.options,
            labels: src.labels,
            criu_version: src.criu_version,
            criu_config: None,
            container: src.container,
            stats: src.stats,
            error: None,
            owner_uid: caller.uid,
            expires_at: None,
            locations: vec![Location::Remote(copy)],
            origin: src.origin,
            // Commands named by a remote's record are never run here.
            hooks: None,
            terminal: None,
            members: src.members,
        };
        inner.catalog.insert_checkpoint(&cp).await?;
        Ok((cp, true))
    }

    async fn drop_created(&self, cp: &Checkpoint, created: bool) {
        if created {
            if let Err(e) = self.inner.catalog.delete_checkpoint(cp.id).await {
                tracing::error!(checkpoint = %cp.id, error = %e, "cannot remove the row of a refused pull");
            }
        }
    }

    /// Queues a restore of a checkpoint whose images are only in a remote: the job pulls first.
    pub(super) async fn submit_restore_pulling(
        &self,
        caller: &Caller,
        cp: &Checkpoint,
        req: RestoreRequest,
        remote: &str,
        created_row: bool,
    ) -> Result<Job> {
        let copy = cp.remote_copy(remote).cloned().ok_or_else(|| {
            Error::conflict(format!(
                "checkpoint {} has no copy in remote {remote}",
                cp.name
            ))
        })?;
        self.queue_restore(caller, cp, req, Some(PullWork { copy, created_row }))
            .await
    }

    /// Deletes a checkpoint's copy in a remote; the local row (if any) forgets it, and goes if
    /// it then has its images nowhere.
    pub async fn delete_remote_checkpoint(
        &self,
        caller: &Caller,
        remote: &str,
        reference: &str,
    ) -> Result<()> {
        admin_only(caller, "delete a remote's checkpoints")?;
        let r = self.inner.cfg().remotes.get(remote)?;
        let found = r.find(reference).await?;
        let local = self
            .inner
            .catalog
            .checkpoint(&found.checkpoint.id.to_string())
            .await?;
        match local {
            Some(cp) => self.forget_copy(&cp, remote).await,
            None => {
                r.delete(
                    found.checkpoint.id,
                    &found.object.key,
                    Some(&found.object.sha256),
                )
                .await?;
                tracing::info!(remote, checkpoint = %found.checkpoint.id, "remote copy deleted");
                self.inner.metrics.remote.deleted(remote);
                Ok(())
            }
        }
    }

    /// Deletes the copy of `cp` in `remote` and records that; a row left with no images
    /// anywhere is removed.
    pub async fn forget_copy(&self, cp: &Checkpoint, remote: &str) -> Result<()> {
        let inner = &self.inner;
        let r = inner.cfg().remotes.get(remote)?;
        let reservation = inner.reserve_checkpoint(cp.id, &cp.name)?;
        let result = async {
            let mut cp = inner
                .catalog
                .checkpoint(&cp.id.to_string())
                .await?
                .ok_or_else(|| Error::not_found("the checkpoint is gone"))?;
            let copy = cp.remote_copy(remote).cloned();
            let key = copy
                .as_ref()
                .map_or_else(|| r.archive_key(cp.id).to_string(), |c| c.key.clone());
            r.delete(cp.id, &key, copy.as_ref().map(|c| c.sha256.as_str()))
                .await?;
            cp.locations
                .retain(|l| !matches!(l, Location::Remote(c) if c.remote == remote));
            if cp.locations.is_empty() && cp.status == CheckpointStatus::Ready {
                inner.catalog.delete_checkpoint(cp.id).await?;
                inner.events.checkpoint("checkpoint.deleted", &cp);
            } else {
                inner.catalog.update_checkpoint(&cp).await?;
            }
            tracing::info!(remote, checkpoint = %cp.name, "remote copy deleted");
            inner.metrics.remote.deleted(remote);
            inner.events.checkpoint("remote.deleted", &cp);
            Ok(())
        }
        .await;
        inner.release(reservation);
        result
    }

    /// Drops a checkpoint's local images, keeping its row: its copies in remotes remain.
    pub async fn drop_local(&self, cp: &Checkpoint) -> Result<()> {
        let inner = &self.inner;
        let reservation = inner.reserve_checkpoint(cp.id, &cp.name)?;
        let result = inner.drop_local_images(cp.id).await;
        inner.release(reservation);
        result
    }
}

impl Inner {
    /// Records that a checkpoint's images are no longer here, then removes them. Refused for a
    /// checkpoint with no remote copy (its images would be gone everywhere).
    pub(super) async fn drop_local_images(&self, id: uuid::Uuid) -> Result<()> {
        let Some(mut cp) = self.catalog.checkpoint(&id.to_string()).await? else {
            return Ok(());
        };
        if cp.remote_copies().next().is_none() {
            return Err(Error::conflict(format!(
                "checkpoint {} has no copy in a remote; its local images are its only ones",
                cp.name
            )));
        }
        cp.locations
            .retain(|l| !matches!(l, Location::Local { .. }));
        // The row first: a crash in between leaves files no row claims, never a row that
        // claims files that are gone.
        self.catalog.update_checkpoint(&cp).await?;
        read::remove_images(&cp)
    }

    /// A push job: the archive into the remote, the copy onto the checkpoint, and, without
    /// `keep_local`, the local images dropped once the copy is durable.
    pub(super) async fn run_push(
        &self,
        cp: &Checkpoint,
        work: PushWork,
        job: uuid::Uuid,
        stop: StopSignal,
    ) -> Result<Option<JobResult>> {
        let r = self.cfg().remotes.get(&work.remote)?;
        // The folder is held for the whole push: the archive reads it through its descriptor.
        let (anchor, folder) = folder(cp)?;
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let recording = {
            let catalog = self.catalog.clone();
            let mut work = work.clone();
            tokio::spawn(async move {
                if let Ok(upload) = started_rx.await {
                    work.upload = Some(upload);
                    let value = serde_json::to_value(&work).expect("serializes");
                    if let Err(e) = catalog.set_job_request(job, &value).await {
                        tracing::warn!(%job, error = %e, "cannot record the push's upload id");
                    }
                }
            })
        };
        let pushed = r
            .push(
                folder.path(),
                Manifest::of(cp),
                cp,
                &crate::remote::PushOptions {
                    tag: work.tag.clone(),
                    format: work.format,
                    progress: self.transfer_progress(job),
                },
                stop,
                started_tx,
            )
            .await
            .inspect_err(|e| {
                self.metrics.remote.failed(&r.name, "push", e);
                self.events.checkpoint("remote.push_failed", cp);
            });
        let _ = recording.await;
        let pushed = pushed?;
        drop((anchor, folder));
        let mut now = self
            .catalog
            .checkpoint(&cp.id.to_string())
            .await?
            .ok_or_else(|| Error::not_found("the checkpoint was deleted during its push"))?;
        now.locations
            .retain(|l| !matches!(l, Location::Remote(c) if c.remote == r.name));
        now.locations.push(Location::Remote(pushed.copy.clone()));
        self.catalog.update_checkpoint(&now).await?;
        self.metrics
            .remote
            .transferred(&r.name, "push", pushed.copy.size_bytes, pushed.secs);
        tracing::info!(remote = %r.name, key = %pushed.copy.key, bytes = pushed.copy.size_bytes, secs = pushed.secs, "pushed");
        self.events.checkpoint("remote.pushed", &now);
        if !work.keep_local {
            self.drop_local_images(cp.id).await?;
            if let Some(cp) = self.catalog.checkpoint(&cp.id.to_string()).await? {
                self.events.checkpoint("checkpoint.local_dropped", &cp);
            }
        }
        Ok(Some(JobResult {
            remote_copy: Some(pushed.copy),
            ..Default::default()
        }))
    }

    /// Pulls a checkpoint's images into its directory and marks it ready. A row the pull created
    /// is removed when it fails.
    pub(super) async fn run_pull(
        &self,
        cp: &mut Checkpoint,
        work: &PullWork,
        job: uuid::Uuid,
        stop: StopSignal,
    ) -> Result<()> {
        let result = self.pull_into(cp, work, job, stop).await;
        if let Err(e) = &result {
            self.metrics.remote.failed(&work.copy.remote, "pull", e);
            self.events.checkpoint("remote.pull_failed", cp);
            if work.created_row {
                if let Err(e) = self.catalog.delete_checkpoint(cp.id).await {
                    tracing::error!(checkpoint = %cp.id, error = %e, "cannot remove the row of a failed pull");
                }
            }
        }
        result
    }

    async fn pull_into(
        &self,
        cp: &mut Checkpoint,
        work: &PullWork,
        job: uuid::Uuid,
        stop: StopSignal,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let r = self.cfg().remotes.get(&work.copy.remote)?;
        // The object's size is known: a pull's progress has its total.
        self.set_estimate(job, work.copy.size_bytes);
        let root = &self.cfg().checkpoints_root;
        let staging = root.join(format!("{STAGING_PREFIX}{job}"));
        std::fs::create_dir(&staging)
            .map_err(|e| Error::io("cannot create the pull's directory", &staging, &e))?;
        let guard = StagingDir(Some(staging.clone()));
        let (manifest, bytes) = match r
            .pull(
                &work.copy,
                &staging,
                (self.cfg().import_max_bytes, self.transfer_progress(job)),
                stop,
            )
            .await?
        {
            crate::archive::Import::Ckptd(i) => (i.manifest, i.bytes),
            // Podman's or CRI-O's layout (a checkpoint image): the row's target and origin came
            // from the image's annotations; its container record and statistics come from its
            // own files, as an import's do.
            crate::archive::Import::Container(f) => {
                let bytes = f.bytes;
                let m = crate::runtime::foreign_manifest(f, &staging)?;
                if work.created_row {
                    cp.container = m.container.clone();
                    cp.stats = m.stats;
                }
                (m, bytes)
            }
        };
        crate::criu::images::check_checkpoint_restorable(&staging, manifest.members.len())
            .map_err(|e| {
                Error::new(
                    crate::error::ErrorKind::RemoteFailed,
                    format!(
                        "the object {} is not a restorable checkpoint: {e}",
                        work.copy.key
                    ),
                )
            })?;
        let here = crate::archive::arch();
        if manifest.arch != here {
            return Err(Error::target_unavailable(format!(
                "checkpoint {} was taken on {}, this machine is {here}; CRIU restores on the same \
                 architecture only",
                cp.name, manifest.arch
            )));
        }
        // Pulled images live in the checkpoints root, whatever directory they were taken in.
        let dir = root.join(cp.id.to_string());
        let owner = cp.owner_uid;
        let d = dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if owner != 0 {
                // A member's CRIU restores it, as that member: its images are its own (a
                // group's members' folders and their files too).
                fn give(dir: &Path, owner: u32) -> std::io::Result<()> {
                    for e in std::fs::read_dir(dir)? {
                        let e = e?;
                        if e.file_type()?.is_dir() {
                            give(&e.path(), owner)?;
                        }
                        std::os::unix::fs::lchown(e.path(), Some(owner), None)?;
                    }
                    Ok(())
                }
                give(&staging, owner)?;
                std::os::unix::fs::lchown(&staging, Some(owner), None)?;
            }
            sys::fsync_dir_tree(&staging)?;
            if std::fs::symlink_metadata(&d).is_ok() {
                sys::remove_dir_tree(&d)?;
            }
            std::fs::rename(&staging, &d)?;
            sys::fsync_dir(d.parent().unwrap_or(Path::new("/")))
        })
        .await
        .map_err(|e| Error::internal(format!("the pull task failed: {e}")))?
        .map_err(|e| Error::io("cannot publish the pulled images", &dir, &e))?;
        guard.keep();
        cp.dir = dir.display().to_string();
        // A group's members as its verified archive records them.
        cp.members = manifest.members;
        cp.status = CheckpointStatus::Ready;
        cp.completed_at = cp.completed_at.or(Some(catalog::now()));
        cp.size_bytes = bytes;
        if cp.remote_copy(&work.copy.remote).is_none() {
            cp.locations.push(Location::Remote(work.copy.clone()));
        }
        cp.locations
            .retain(|l| !matches!(l, Location::Local { .. }));
        cp.locations.insert(
            0,
            Location::Local {
                dir: cp.dir.clone(),
            },
        );
        self.catalog.update_checkpoint(cp).await?;
        let secs = started.elapsed().as_secs_f64();
        self.metrics
            .remote
            .transferred(&work.copy.remote, "pull", work.copy.size_bytes, secs);
        tracing::info!(remote = %work.copy.remote, checkpoint = %cp.name, bytes = work.copy.size_bytes, secs, "pulled");
        self.events.checkpoint("remote.pulled", cp);
        Ok(())
    }
}

/// Removes a pull's staging directory unless it was published.
struct StagingDir(Option<std::path::PathBuf>);

impl StagingDir {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = sys::remove_dir_tree(&p) {
                tracing::error!(dir = %p.display(), error = %e, "cannot remove a refused pull");
            }
        }
    }
}
