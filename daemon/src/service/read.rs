//! Reads of the catalog on behalf of a caller (who sees only what it may), waiting for jobs, the
//! CRIU logs of a checkpoint, and deleting a checkpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ckptd_api::Advice;
use ckptd_api::{Checkpoint, CheckpointStatus, Job, JobKind, JobState, List};
use uuid::Uuid;

use super::*;
use crate::auth::Caller;
use crate::catalog::{self};
use crate::criu::DUMP_LOG;

use crate::error::{Error, Result};
use crate::sys;

impl Service {
    /// A checkpoint by id or name, if `caller` may see it (others' are "not found" to it).
    pub async fn checkpoint(&self, caller: &Caller, reference: &str) -> Result<Checkpoint> {
        self.inner
            .catalog
            .checkpoint(reference)
            .await?
            .filter(|cp| caller.can_see(cp.owner_uid))
            .ok_or_else(|| {
                Error::not_found(format!("no checkpoint with id or name {reference:?}"))
                    .with_advice(Advice::ListCheckpoints)
            })
    }

    /// A job, if `caller` may see it.
    pub async fn job(&self, caller: &Caller, id: &str) -> Result<Job> {
        let not_found =
            || Error::not_found(format!("no job with id {id:?}")).with_advice(Advice::ListJobs);
        let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
        let mut job = self
            .inner
            .catalog
            .job(uuid)
            .await?
            .filter(|j| caller.can_see(j.owner_uid))
            .ok_or_else(not_found)?;
        if job.state == JobState::Running && job.kind == JobKind::Checkpoint {
            // What CRIU has written so far into the partial directory.
            if let Some(cp) = self
                .inner
                .catalog
                .checkpoint(&job.checkpoint_id.to_string())
                .await?
            {
                let bytes_written = anchor(&cp)
                    .ok()
                    .and_then(|a| sys::dir_size(&partial_dir(&a.path())).ok())
                    .unwrap_or(0);
                job.progress = Some(ckptd_api::JobProgress { bytes_written });
            }
        }
        Ok(job)
    }

    /// The checkpoints `caller` may see.
    pub async fn list_checkpoints(
        &self,
        caller: &Caller,
        mut f: catalog::CheckpointFilter,
    ) -> Result<List<Checkpoint>> {
        f.owner = caller.owner_filter();
        self.inner.catalog.list_checkpoints(&f).await
    }

    /// The jobs `caller` may see.
    pub async fn list_jobs(&self, caller: &Caller, mut f: catalog::JobFilter) -> Result<List<Job>> {
        f.owner = caller.owner_filter();
        self.inner.catalog.list_jobs(&f).await
    }

    /// The job once it has ended, or as it is when `timeout` runs out. At shutdown, queued jobs
    /// end (cancelled) and running ones are given time to finish, so waiters get a final answer.
    pub async fn wait(&self, caller: &Caller, id: &str, timeout: Duration) -> Result<Job> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut finished = self.inner.finished.subscribe();
        loop {
            let job = self.job(caller, id).await?;
            if job.state.is_finished() {
                return Ok(job);
            }
            tokio::select! {
                _ = finished.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(job),
            }
        }
    }

    /// The CRIU logs of a checkpoint: the dump's, then each restore's, oldest first.
    /// The process tree a ready checkpoint holds, read from its images.
    pub async fn processes(
        &self,
        caller: &Caller,
        reference: &str,
    ) -> Result<ckptd_api::ProcessTree> {
        let cp = self.checkpoint(caller, reference).await?;
        if cp.status != CheckpointStatus::Ready || !cp.is_local() {
            return Err(Error::conflict(format!(
                "checkpoint {} has no images on this host to read (it is {}{})",
                cp.name,
                cp.status.as_str(),
                if cp.is_local() {
                    ""
                } else {
                    ", its images only in remotes"
                }
            )));
        }
        let anchor = anchor(&cp)?;
        let dir = anchor.path();
        let processes =
            tokio::task::spawn_blocking(move || crate::criu::images::read_processes(&dir))
                .await
                .map_err(|e| Error::internal(format!("reading the images failed: {e}")))?
                .map_err(|e| {
                    Error::internal(format!(
                        "cannot read checkpoint {}'s process tree: {e}",
                        cp.name
                    ))
                })?;
        Ok(ckptd_api::ProcessTree { processes })
    }

    pub async fn logs(&self, caller: &Caller, reference: &str) -> Result<String> {
        let cp = self.checkpoint(caller, reference).await?;
        let anchor = anchor(&cp)?;
        let dir = anchor.path();
        let real = PathBuf::from(&cp.dir);
        let mut out = String::new();
        // Logs are read without following a symlink: a non-root owner can write its own
        // checkpoint_dir, and root reads them.
        let mut append = |path: &Path, shown: &Path| {
            let text = sys::open_regular(path).and_then(|mut f| {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut f, &mut t).map(|_| t)
            });
            if let Ok(text) = text {
                out.push_str(&format!("=== {} ===\n{text}", shown.display()));
            }
        };
        if dir.join(DUMP_LOG).exists() {
            append(&dir.join(DUMP_LOG), &real.join(DUMP_LOG));
        } else {
            append(
                &partial_dir(&dir).join(DUMP_LOG),
                &partial_dir(&real).join(DUMP_LOG),
            );
        }
        let restores = self
            .inner
            .catalog
            .list_jobs(&catalog::JobFilter {
                kind: Some(JobKind::Restore),
                checkpoint_id: Some(cp.id),
                limit: catalog::MAX_LIMIT,
                ..Default::default()
            })
            .await?;
        for job in restores.items.iter().rev() {
            let name = restore_log_name(job.id);
            // A lazy restore's page server logs next to it.
            for name in [name.clone(), format!("lazy-{name}")] {
                append(&dir.join(&name), &real.join(&name));
            }
        }
        if out.is_empty() {
            return Err(Error::not_found(format!(
                "checkpoint {} has no CRIU log yet (status {})",
                cp.name,
                cp.status.as_str()
            )));
        }
        Ok(out)
    }

    /// Removes a checkpoint's images and its row. Refused while a job uses it.
    pub async fn delete_checkpoint(&self, caller: &Caller, reference: &str) -> Result<()> {
        let inner = &self.inner;
        let cp = self.checkpoint(caller, reference).await?;
        if matches!(
            cp.status,
            CheckpointStatus::Pending | CheckpointStatus::Running
        ) {
            return Err(Error::conflict(format!(
                "checkpoint {} is {}: its job has not ended",
                cp.name,
                cp.status.as_str()
            ))
            .with_advice(Advice::WaitForRunningJobs));
        }
        let reservation = inner.reserve_checkpoint(cp.id)?;
        // Off the request threads: unlinking a GiB of images waits on the filesystem's journal
        // (up to ~0.2 s while other images are written back), which would stall every request
        // queued behind it on that thread (BENCHMARKS.md, API under load).
        let doomed = cp.clone();
        let removed = tokio::task::spawn_blocking(move || remove_images(&doomed))
            .await
            .unwrap_or_else(|e| Err(Error::internal(format!("removing the images failed: {e}"))));
        let result = match removed {
            Ok(()) => inner.catalog.delete_checkpoint(cp.id).await,
            Err(e) => Err(e),
        };
        inner.release(reservation);
        if result.is_ok() {
            tracing::info!(checkpoint = %cp.id, name = %cp.name, "checkpoint deleted");
            inner.events.checkpoint("checkpoint.deleted", &cp);
        }
        result
    }
}

/// Removes a checkpoint's directory (and a partial one), through its parent opened without
/// following a symlink: a path swapped since the checkpoint was taken removes nothing. A parent
/// that is gone has nothing left to remove.
pub(super) fn remove_images(cp: &Checkpoint) -> Result<()> {
    let real = PathBuf::from(&cp.dir);
    let removed = match sys::AnchoredDir::open(&real) {
        Ok(a) => sys::remove_dir_tree(&partial_dir(&a.path()))
            .and_then(|()| sys::remove_dir_tree(&a.path())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            return Err(anchor(cp).err().unwrap_or_else(|| {
                Error::conflict(format!(
                    "the directory of checkpoint {} changed while it was being deleted",
                    cp.name
                ))
                .with_hint("delete it again")
            }));
        }
    };
    removed.map_err(|e| {
        Error::io("cannot remove the checkpoint directory", &real, &e)
            .with_hint("fix the directory's permissions or remove it by hand, then delete again")
    })
}
