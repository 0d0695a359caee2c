//! Publishing a dump: its images are made durable (fsync every file and the directory, rename
//! `.partial` to the final directory, fsync the parent) before the checkpoint is `ready` and before
//! what the dump left stopped is ended. A failed dump keeps only CRIU's log.

use std::path::Path;
use std::time::Instant;

use ckptd_api::{Checkpoint, CheckpointStatus, DumpStats, Target};

use super::*;
use crate::auth::{self};
use crate::catalog::{self};
use crate::criu::{self, DUMP_LOG};
use crate::engine::{DumpOutput, DumpSpec, StopSignal};
use crate::error::{Error, Result};
use crate::sys;

impl Inner {
    /// Dump, make durable, publish.
    pub(super) async fn take_checkpoint(&self, cp: &Checkpoint, stop: StopSignal) -> Result<Taken> {
        // A non-root owner's target is checked again now that the job runs: the tree may have
        // changed (or its pid been reused) since the request.
        if let (Target::Process { pid }, false) = (&cp.target, cp.owner_uid == 0) {
            auth::owns_tree(cp.owner_uid, *pid)?;
        }
        let anchor = anchor(cp)?;
        let owner = owner_account(cp.owner_uid)?;
        // The directory is the owner's: the parent ckptd holds must be, too (a custom
        // checkpoint_dir of a non-root owner), or root's (ckptd's own storage).
        let parent_owner = anchor.parent_owner().map_err(|e| {
            Error::io(
                "cannot read the directory of checkpoint",
                Path::new(&cp.dir),
                &e,
            )
        })?;
        if parent_owner != 0 && parent_owner != cp.owner_uid {
            return Err(auth::forbidden(format!(
                "the directory that holds checkpoint {} now belongs to uid {parent_owner}, not to \
                 its owner (uid {})",
                cp.name, cp.owner_uid
            )));
        }
        let dir = anchor.path();
        let partial = partial_dir(&dir);
        let made = sys::create_private_dir(&partial).and_then(|()| match &owner {
            Some(a) => std::os::unix::fs::lchown(&partial, Some(a.uid), Some(a.gid)),
            None => Ok(()),
        });
        made.map_err(|e| {
            real_paths(
                Error::io("cannot create the image directory", &partial, &e),
                &anchor,
            )
        })?;
        let target = crate::telemetry::target_label(&cp.target);
        let started = Instant::now();
        let out = self
            .engine
            .dump(DumpSpec {
                target: &cp.target,
                options: cp.options,
                images_dir: &partial,
                log_name: DUMP_LOG,
                owner,
                stop: stop.clone(),
            })
            .await;
        self.phase(target, "dump", started);
        let out = match out {
            Ok(out) => out,
            Err(mut e) => {
                e = criu::log::full_disk(e, &partial);
                keep_only_log(&partial, &dir);
                if e.details.contains_key("log") {
                    e.details.insert(
                        "log".into(),
                        dir.join(DUMP_LOG).display().to_string().into(),
                    );
                }
                return Err(real_paths(e, &anchor));
            }
        };
        self.publish(out, &partial, &dir, &stop, target)
            .await
            .map_err(|e| real_paths(e, &anchor))
    }

    /// Makes a finished dump's images durable and publishes them: fsync every file and the
    /// directory, rename `.partial` to the final directory, fsync the parent; only then end what
    /// the dump left stopped. If that fails, or a stop is requested, the target carries on and
    /// the images go.
    pub(super) async fn publish(
        &self,
        out: DumpOutput,
        partial: &Path,
        dir: &Path,
        stop: &StopSignal,
        target: &'static str,
    ) -> Result<Taken> {
        let stopped_now = *stop.borrow();
        if let Some(reason) = stopped_now {
            self.engine.release(&out.stopped, false).await;
            keep_only_log(partial, dir);
            return Err(reason.error());
        }
        let p = partial.to_owned();
        let d = dir.to_owned();
        let started = Instant::now();
        let durable = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            sys::fsync_dir_tree(&p)?;
            std::fs::rename(&p, &d)?;
            sys::fsync_dir(d.parent().unwrap_or(Path::new("/")))?;
            sys::dir_size(&d)
        })
        .await
        .map_err(|e| Error::internal(format!("durability task failed: {e}")))?;
        self.phase(target, "durable", started);
        match durable {
            Ok(size) => {
                // A stop that came while the images were made durable still wins: the target
                // carries on and the checkpoint is dropped, as the caller asked.
                let stopped_now = *stop.borrow();
                if let Some(reason) = stopped_now {
                    self.engine.release(&out.stopped, false).await;
                    remove_images(dir);
                    return Err(reason.error());
                }
                let started = Instant::now();
                self.engine.release(&out.stopped, true).await;
                self.phase(target, "release", started);
                Ok(Taken {
                    stats: out.stats,
                    size,
                    container: out.container,
                    criu_config: out.criu_config,
                })
            }
            Err(e) => {
                // Not durable: the target must survive, and nothing half-written stays.
                self.engine.release(&out.stopped, false).await;
                keep_only_log(partial, dir);
                Err(Error::io("cannot make the checkpoint images durable in", partial, &e)
                    .with_hint("check free space and the filesystem's health; the process was left running"))
            }
        }
    }

    /// Records how long one phase of a checkpoint took (`ckptd_checkpoint_phase_seconds`).
    pub(super) fn phase(&self, target: &'static str, phase: &'static str, since: Instant) {
        self.metrics
            .phase_seconds
            .observe(&[target, phase], since.elapsed().as_secs_f64());
    }
}

/// A failed dump in a custom `checkpoint_dir` leaves CRIU's log in `<dir>/<name>`; it moves to
/// `<dir>/<id>` so that the name is free for the retry the error suggests (a failed checkpoint
/// gives its name up). In ckptd's own storage the directory is named by the id already.
/// The error then names the new directory.
pub(super) fn file_failed_under_id(cp: &mut Checkpoint, e: Error) -> Error {
    let id = cp.id.to_string();
    let Ok(anchor) = anchor(cp) else { return e };
    if Path::new(&cp.dir)
        .file_name()
        .is_some_and(|n| n == id.as_str())
    {
        return e;
    }
    let (Some(parent), true) = (
        Path::new(&cp.dir).parent(),
        std::fs::rename(anchor.path(), anchor.sibling(&id)).is_ok(),
    ) else {
        return e;
    };
    let moved = parent.join(&id).display().to_string();
    let e = replace_paths(e, &cp.dir, &moved);
    cp.dir = moved;
    e
}

/// Writes a dump's outcome onto its checkpoint.
pub(super) fn record_taken(cp: &mut Checkpoint, result: &Result<Taken>) {
    cp.completed_at = Some(catalog::now());
    match result {
        Ok(done) => {
            cp.status = CheckpointStatus::Ready;
            cp.stats = done.stats;
            cp.size_bytes = done.size;
            cp.container = done.container.clone();
            cp.criu_config = done.criu_config.clone();
            cp.locations = vec![ckptd_api::Location::Local {
                dir: cp.dir.clone(),
            }];
        }
        Err(e) => {
            cp.status = CheckpointStatus::Failed;
            cp.error = Some(e.to_info());
        }
    }
}

/// What a successful dump records on its checkpoint.
pub(super) struct Taken {
    pub(super) stats: Option<DumpStats>,
    pub(super) size: u64,
    pub(super) container: Option<ckptd_api::ContainerRecord>,
    pub(super) criu_config: Option<String>,
}

/// After a failed dump: remove the images, keep CRIU's log in the checkpoint's directory.
pub(super) fn keep_only_log(partial: &Path, dir: &Path) {
    remove_images(partial);
    if std::fs::rename(partial, dir).is_err() {
        let _ = sys::remove_dir_tree(partial);
    }
}

/// Removes everything in an image directory but CRIU's dump log.
pub(super) fn remove_images(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name() != DUMP_LOG {
                let _ = sys::remove_dir_tree(&e.path());
            }
        }
    }
}
