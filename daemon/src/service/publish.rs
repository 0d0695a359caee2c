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
        if cp.owner_uid != 0 {
            for t in cp.target.members() {
                if let Target::Process { pid } = t {
                    auth::owns_tree(cp.owner_uid, *pid)?;
                }
            }
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
        // The `.partial` folder is created and held here; CRIU writes into the held folder
        // whatever its name becomes, and every later step goes through the descriptor.
        let partial_name = anchor.partial_name();
        let partial = anchor
            .create_folder(&partial_name, owner.as_ref().map(|a| (a.uid, a.gid)))
            .map_err(|e| {
                folder_error(
                    e,
                    cp,
                    "cannot create the image directory",
                    &anchor.real_sibling(&partial_name),
                )
            })?;
        let target = crate::telemetry::target_label(&cp.target);
        let started = Instant::now();
        let out = self
            .engine
            .dump(DumpSpec {
                target: &cp.target,
                options: cp.options,
                images: &partial,
                log_name: DUMP_LOG,
                owner,
                stop: stop.clone(),
                barrier: None,
            })
            .await;
        self.phase(target, "dump", started);
        let out = match out {
            Ok(out) => out,
            Err(mut e) => {
                e = criu::log::full_disk(e, &partial);
                keep_only_log(&anchor, &partial);
                if e.details.contains_key("log") {
                    e.details.insert(
                        "log".into(),
                        anchor.real().join(DUMP_LOG).display().to_string().into(),
                    );
                }
                return Err(shown_paths(e, &partial));
            }
        };
        self.publish(out, anchor, partial, cp.owner_uid, &stop, target)
            .await
    }

    /// Makes a finished dump's images durable and publishes them: fsync every file and the
    /// folder, rename `.partial` to the final name (never over anything), fsync the parent,
    /// check that the name now holds the very folder CRIU wrote; only then end what the dump
    /// left stopped. If any of that fails, or a stop is requested, the target carries on and
    /// the images go.
    pub(super) async fn publish(
        &self,
        out: DumpOutput,
        anchor: sys::AnchoredDir,
        partial: sys::Folder,
        owner_uid: u32,
        stop: &StopSignal,
        target: &'static str,
    ) -> Result<Taken> {
        let stopped_now = *stop.borrow();
        if let Some(reason) = stopped_now {
            self.engine.release(&out.stopped, false).await;
            keep_only_log(&anchor, &partial);
            return Err(reason.error());
        }
        let started = Instant::now();
        let durable = tokio::task::spawn_blocking(move || {
            let made = make_durable(&anchor, &partial, owner_uid);
            (made, anchor, partial)
        })
        .await
        .map_err(|e| Error::internal(format!("durability task failed: {e}")))?;
        self.phase(target, "durable", started);
        let (made, anchor, partial) = durable;
        match made {
            Ok(size) => {
                // A stop that came while the images were made durable still wins: the target
                // carries on and the checkpoint is dropped, as the caller asked.
                let stopped_now = *stop.borrow();
                if let Some(reason) = stopped_now {
                    self.engine.release(&out.stopped, false).await;
                    let _ = anchor.remove_held(anchor.name(), &partial);
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
                    terminal: out.terminal,
                    members: out.members,
                })
            }
            Err(e) => {
                // Not durable, or not ours: the target must survive, and nothing of the images
                // stays (removed through the held folder, wherever its name went).
                self.engine.release(&out.stopped, false).await;
                keep_only_log(&anchor, &partial);
                let shown = anchor.real_sibling(&anchor.partial_name());
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    return Err(auth::forbidden(format!(
                        "the image directory {} was replaced while the dump ran: {e}",
                        shown.display()
                    ))
                    .with_hint(
                        "leave the checkpoint's directory alone while its job runs; the process \
                         was left running",
                    ));
                }
                Err(Error::io("cannot make the checkpoint images durable in", &shown, &e)
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
    if anchor.name() == id.as_str() {
        return e;
    }
    // Only the folder ckptd made (its owner's, no symlink) is moved, never over anything.
    let (Some(parent), true) = (
        Path::new(&cp.dir).parent(),
        anchor.open_folder(anchor.name(), cp.owner_uid).is_ok()
            && anchor.rename(anchor.name(), &id).is_ok(),
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
            cp.terminal = done.terminal.clone();
            cp.members = done.members.clone();
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
    pub(super) terminal: Option<String>,
    pub(super) members: Vec<ckptd_api::GroupMember>,
}

/// fsyncs every image and the folder, renames `.partial` to the final name (never over an
/// existing entry), fsyncs the parent, and checks that the final name holds the held folder:
/// a folder swapped in under either name is refused (`PermissionDenied`). The images' size.
fn make_durable(
    anchor: &sys::AnchoredDir,
    partial: &sys::Folder,
    owner_uid: u32,
) -> std::io::Result<u64> {
    let size = partial.fsync_all()?;
    let ours = |name: &str| match anchor.open_folder(name, owner_uid) {
        Ok(f) if f.same_as(partial) => Ok(()),
        Ok(_) => Err(replaced(name, "another folder")),
        Err(e) => Err(replaced(name, &e.to_string())),
    };
    ours(&anchor.partial_name())?;
    anchor.rename(&anchor.partial_name(), anchor.name())?;
    anchor.fsync()?;
    ours(anchor.name())?;
    Ok(size)
}

fn replaced(name: &str, found: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{name} is not the folder ckptd created and CRIU wrote ({found})"),
    )
}

/// After a failed dump: remove the images through the held folder, keep CRIU's log, and give
/// the folder the checkpoint's name when `.partial` still names it (a swapped name is left as
/// it is, and so is anything at the final name).
pub(super) fn keep_only_log(anchor: &sys::AnchoredDir, partial: &sys::Folder) {
    let _ = partial.clear(&[DUMP_LOG]);
    let ours = anchor
        .open_folder(&anchor.partial_name(), partial.uid())
        .is_ok_and(|f| f.same_as(partial));
    if !ours
        || anchor
            .rename(&anchor.partial_name(), anchor.name())
            .is_err()
    {
        let _ = anchor.remove_held(&anchor.partial_name(), partial);
    }
}

/// An error naming a held folder's `/proc` path, told with the path the user knows.
pub fn shown_paths(e: Error, folder: &sys::Folder) -> Error {
    replace_paths(
        e,
        &folder.path().display().to_string(),
        &folder.shown().display().to_string(),
    )
}

/// An error opening a checkpoint's folder, in the caller's words: a symlink, another user's
/// folder or a non-directory where the folder should be is a 403 that says so.
pub fn folder_error(e: std::io::Error, cp: &Checkpoint, what: &str, path: &Path) -> Error {
    let hint = "the checkpoint's directory was replaced since ckptd wrote it; ckptd follows no \
                symlink and reads no other user's files there. Put the directory back, or delete \
                the checkpoint with ?forget=true to drop its record and leave the path alone";
    match e.raw_os_error() {
        Some(libc::ELOOP) => auth::forbidden(format!(
            "{} of checkpoint {} is now a symlink; ckptd follows none",
            path.display(),
            cp.name
        ))
        .with_hint(hint),
        Some(libc::ENOTDIR) => auth::forbidden(format!(
            "{} of checkpoint {} is no longer a directory",
            path.display(),
            cp.name
        ))
        .with_hint(hint),
        _ if e.kind() == std::io::ErrorKind::PermissionDenied => {
            auth::forbidden(format!("{what} {}: {e}", path.display())).with_hint(hint)
        }
        _ => Error::io(what, path, &e),
    }
}
