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
                    .and_then(|a| a.open_folder(&a.partial_name(), cp.owner_uid).ok())
                    .and_then(|f| f.size().ok())
                    .unwrap_or(0);
                job.progress = Some(ckptd_api::JobProgress {
                    bytes_written,
                    bytes_estimated: self.inner.estimate(job.id),
                });
            }
        }
        if job.state == JobState::Running
            && matches!(job.kind, JobKind::Push | JobKind::Pull | JobKind::Migrate)
        {
            // Bytes sent (a push: compressed, so no total is known; a live migration: images
            // and pages, of about the target's memory) or read (a pull: of the object, whose
            // size is known).
            if let Some(bytes_written) = self.inner.transferred(job.id) {
                job.progress = Some(ckptd_api::JobProgress {
                    bytes_written,
                    bytes_estimated: self.inner.estimate(job.id),
                });
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
        let mut finished = self.inner.queue.finished();
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
        let (_anchor, folder) = folder(&cp)?;
        let processes = tokio::task::spawn_blocking(move || {
            // A group's: each member's tree, in the group's order.
            let members = match cp.target {
                Target::Group { .. } => folder
                    .member_folders()
                    .and_then(|names| names.iter().map(|n| folder.member(n)).collect())
                    .map_err(|e| Error::internal(e.to_string()))?,
                _ => Vec::new(),
            };
            let read = |f: &crate::sys::Folder| {
                crate::criu::images::read_processes(&f.path())
                    .map_err(|e| shown_paths(Error::internal(e.to_string()), f))
            };
            if members.is_empty() {
                return read(&folder);
            }
            let mut all = Vec::new();
            for m in &members {
                all.extend(read(m)?);
            }
            Ok(all)
        })
        .await
        .map_err(|e| Error::internal(format!("reading the images failed: {e}")))?
        .map_err(|e| {
            // Images that cannot be read are the checkpoint's state, not the daemon's fault.
            Error::conflict(format!(
                "cannot read checkpoint {}'s process tree: {}",
                cp.name, e.message
            ))
            .with_hint("its images are damaged; take a new checkpoint")
        })?;
        Ok(ckptd_api::ProcessTree { processes })
    }

    pub async fn logs(&self, caller: &Caller, reference: &str) -> Result<String> {
        let cp = self.checkpoint(caller, reference).await?;
        let anchor = anchor(&cp)?;
        // The checkpoint's folder, or its `.partial` twin while a dump runs, held; each log is
        // read through it without following a symlink, only when it is the owner's file, and
        // only its last MAX_LOG_READ bytes: a member can write its own checkpoint_dir, and
        // root reads them.
        let opened = match anchor.open_folder(anchor.name(), cp.owner_uid) {
            Ok(f) if f.has_file(DUMP_LOG) => Ok(f),
            Ok(f) => anchor
                .open_folder(&anchor.partial_name(), cp.owner_uid)
                .or(Ok(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                anchor.open_folder(&anchor.partial_name(), cp.owner_uid)
            }
            Err(e) => Err(e),
        };
        let folder = opened.map_err(|e| {
            publish::folder_error(
                e,
                &cp,
                "cannot read the logs of checkpoint",
                Path::new(&cp.dir),
            )
        })?;
        let mut out = String::new();
        let mut append = |name: &str| {
            if let Ok((text, cut)) = folder.read_tail(name, sys::MAX_LOG_READ) {
                out.push_str(&format!(
                    "=== {} ===\n",
                    folder.shown().join(name).display()
                ));
                if cut {
                    out.push_str(&format!(
                        "[... earlier lines left out: only the last {} MiB are shown]\n",
                        sys::MAX_LOG_READ >> 20
                    ));
                }
                out.push_str(&text);
            }
        };
        append(DUMP_LOG);
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
                append(&name);
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

    /// Removes a checkpoint's images and its row. Refused while a job uses it. `forget`: the row
    /// only, nothing on disk touched (a replaced directory that ckptd will not reach through).
    pub async fn delete_checkpoint(
        &self,
        caller: &Caller,
        reference: &str,
        forget: bool,
    ) -> Result<()> {
        let cp = self.checkpoint(caller, reference).await?;
        self.delete_as_read(cp, forget).await
    }

    /// `delete_checkpoint` of a checkpoint its caller has just read from the catalog (the
    /// daemon's own passes: retention, expiry), without reading it again.
    pub async fn delete_as_read(&self, cp: Checkpoint, forget: bool) -> Result<()> {
        let inner = &self.inner;
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
        let reservation = inner.reserve_for_delete(cp.id, &cp.name)?;
        // Off the request threads: unlinking a GiB of images waits on the filesystem's journal
        // (up to ~0.2 s while other images are written back), which would stall every request
        // queued behind it on that thread (BENCHMARKS.md, API under load).
        let doomed = cp.clone();
        let removed = if forget {
            Ok(())
        } else {
            tokio::task::spawn_blocking(move || remove_images(&doomed))
                .await
                .unwrap_or_else(|e| {
                    Err(Error::internal(format!("removing the images failed: {e}")))
                })
        };
        let result = match removed {
            Ok(()) => inner.catalog.delete_checkpoint(cp.id).await,
            Err(e) => Err(e),
        };
        inner.release(reservation);
        if result.is_ok() {
            if forget {
                tracing::info!(checkpoint = %cp.id, name = %cp.name, dir = %cp.dir, "checkpoint forgotten; its directory was left as it is");
            }
            tracing::info!(checkpoint = %cp.id, name = %cp.name, "checkpoint deleted");
            inner.events.checkpoint("checkpoint.deleted", &cp);
        }
        result
    }
}

/// Removes a checkpoint's folder (and a partial one) beneath its anchored parent: each opened
/// without following a symlink, only when it is the owner's or root's, emptied through its own
/// descriptor. A path swapped since the checkpoint was taken removes nothing and is a 403 that
/// says so; a parent or folder that is gone has nothing left to remove.
pub(super) fn remove_images(cp: &Checkpoint) -> Result<()> {
    let real = PathBuf::from(&cp.dir);
    let anchor = match sys::AnchoredDir::open(&real) {
        Ok(a) => a,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {
            return Err(anchor(cp).err().unwrap_or_else(|| {
                Error::conflict(format!(
                    "the directory of checkpoint {} changed while it was being deleted",
                    cp.name
                ))
                .with_hint("delete it again")
            }))
        }
    };
    for name in [anchor.partial_name(), anchor.name().to_owned()] {
        anchor.remove_folder(&name, cp.owner_uid).map_err(|e| {
            let shown = anchor.real_sibling(&name);
            match publish::folder_error(e, cp, "cannot remove the checkpoint directory", &shown) {
                e if e.kind == crate::error::ErrorKind::Forbidden => e,
                e => e.with_hint(
                    "fix the directory's permissions or remove it by hand, then delete again",
                ),
            }
        })?;
    }
    Ok(())
}

impl Service {
    /// The socket of the terminal ckptd holds for the restored process `pid`, if `caller` may
    /// attach to it: root, or the process's own user (a member attaches only to its own).
    pub fn terminal(&self, caller: &Caller, pid: i32) -> Result<PathBuf> {
        let none = || {
            Error::not_found(format!(
                "pid {pid} has no terminal held by ckptd (only a process restored from a \
                 checkpoint of a program with a terminal has one)"
            ))
        };
        let root = sys::TaskId::of(pid).ok_or_else(none)?;
        let owner = procfs::process::Process::new(pid)
            .and_then(|p| p.status())
            .map(|st| st.ruid)
            .map_err(|_| none())?;
        if !caller.is_admin() && owner != caller.uid {
            return Err(crate::auth::forbidden(format!(
                "pid {pid} is not yours; a member attaches only to its own processes"
            )));
        }
        self.inner.engine.terminal_socket(root).ok_or_else(none)
    }
}
