//! Reservations: one job per target, and no delete of a checkpoint a job reads. Held in memory
//! (a restart ends every job), taken at admission and given back when the job ends.

use ckptd_api::Advice;
use ckptd_api::{Job, JobKind, Target};
use uuid::Uuid;

use super::*;
use crate::error::{Error, ErrorKind, Result};

/// Targets and checkpoints in use: the state this file changes.
#[derive(Default)]
pub(super) struct Reservations {
    busy: Mutex<Busy>,
}

/// Targets and checkpoints that a queued or running job (or a delete) is using.
#[derive(Default)]
pub(super) struct Busy {
    targets: HashMap<String, Uuid>,
    checkpoints: HashSet<Uuid>,
    /// Jobs of non-root owners queued or running, and whose they are (`member_max_jobs`, and
    /// the share of the queue root keeps).
    member_jobs: HashMap<Uuid, u32>,
    /// Exports streaming a checkpoint's images now, by checkpoint.
    readers: HashMap<Uuid, usize>,
    /// Checkpoints being deleted: no export starts on one.
    deleting: HashSet<Uuid>,
    /// What a checkpoint job's images should take, estimated at admission (its progress's
    /// total), by job; given back with the job's reservation.
    estimates: HashMap<Uuid, u64>,
    /// The bytes a push or pull job has sent or read so far (its progress), by job.
    transfers: HashMap<Uuid, crate::remote::Progress>,
}

/// An export reading a checkpoint's images: while it lives, the checkpoint is not deleted.
pub struct ReadHold {
    service: Service,
    checkpoint: Uuid,
}

impl Drop for ReadHold {
    fn drop(&mut self) {
        let mut busy = self.service.inner.busy();
        if let Some(n) = busy.readers.get_mut(&self.checkpoint) {
            *n -= 1;
            if *n == 0 {
                busy.readers.remove(&self.checkpoint);
            }
        }
    }
}

impl Service {
    /// Holds a checkpoint's images for an export: refused (409) while it is being deleted, and a
    /// delete is refused while any hold lives, so an export is never a well-formed archive of a
    /// half-deleted checkpoint.
    pub fn hold_for_reading(&self, cp: &ckptd_api::Checkpoint) -> Result<ReadHold> {
        let mut busy = self.inner.busy();
        if busy.deleting.contains(&cp.id) {
            return Err(Error::conflict(format!(
                "checkpoint {} is being deleted",
                cp.name
            )));
        }
        *busy.readers.entry(cp.id).or_default() += 1;
        Ok(ReadHold {
            service: self.clone(),
            checkpoint: cp.id,
        })
    }
}

impl Inner {
    /// The busy sets; their critical sections cannot panic half-way, so poison is ignored.
    pub(super) fn busy(&self) -> std::sync::MutexGuard<'_, Busy> {
        self.reservations
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Frees whatever job `id` holds, its row unknown (it could not be read).
    pub(super) fn release_job_id(&self, id: Uuid) {
        let mut busy = self.busy();
        busy.targets.retain(|_, j| *j != id);
        busy.member_jobs.remove(&id);
    }
}

impl Inner {
    /// Reserves `target` (and `checkpoint`) for `job` of `owner`. A non-root owner's job also
    /// takes one of its `member_max_jobs` and a slot of the members' share of the queue (all
    /// but `root_reserved_queue_slots`): a member's jobs can never fill the queue for root.
    pub(super) fn reserve(
        &self,
        target: &Target,
        checkpoint: Option<(Uuid, &str)>,
        job: Uuid,
        owner: u32,
    ) -> Result<Reservation> {
        let mut busy = self.busy();
        // A group's members each: a job on one of them and a group job holding it exclude each
        // other.
        let keys: Vec<String> = target.members().iter().map(Target::key).collect();
        if let Some((key, other)) = keys
            .iter()
            .find_map(|k| busy.targets.get(k).map(|j| (k, *j)))
        {
            return Err(Error::conflict(format!(
                "another job ({other}) is already working on {key}; one job per target runs at a time"
            ))
            .with("job_id", other.to_string())
            .with_advice(Advice::WaitForJob { job: other.to_string() }));
        }
        if owner != 0 {
            let cfg = self.cfg();
            let limits = &cfg.policy.limits;
            let mine = busy.member_jobs.values().filter(|o| **o == owner).count();
            if mine >= limits.jobs {
                return Err(Error::new(
                    ErrorKind::QueueFull,
                    format!(
                        "uid {owner} already has {mine} jobs queued or running, the most one \
                         member may (member_max_jobs)"
                    ),
                )
                .with_advice(Advice::WaitForRunningJobs));
            }
            let share = cfg
                .queue_capacity
                .saturating_sub(limits.root_queue_slots)
                .max(1);
            if busy.member_jobs.len() >= share {
                return Err(Error::new(
                    ErrorKind::QueueFull,
                    format!(
                        "the members' share of the job queue is full ({share} jobs queued or \
                         running; root keeps root_reserved_queue_slots = {} of queue_capacity = {})",
                        limits.root_queue_slots, self.cfg().queue_capacity
                    ),
                )
                .with_hint("retry later"));
            }
            busy.member_jobs.insert(job, owner);
        }
        if let Some((c, name)) = checkpoint {
            if busy.checkpoints.contains(&c) {
                return Err(
                    Error::conflict(format!("checkpoint {name} is in use by another job"))
                        .with_advice(Advice::WaitForRunningJobs),
                );
            }
            busy.checkpoints.insert(c);
        }
        for k in &keys {
            busy.targets.insert(k.clone(), job);
        }
        Ok(Reservation {
            targets: keys,
            checkpoint: checkpoint.map(|(c, _)| c),
            job: Some(job),
            deleting: false,
        })
    }

    /// Reserves a checkpoint for its deletion: as `reserve_checkpoint`, and refused while an
    /// export reads it; no export starts until the reservation is given back.
    pub(super) fn reserve_for_delete(&self, checkpoint: Uuid, name: &str) -> Result<Reservation> {
        let readers = self.busy().readers.get(&checkpoint).copied().unwrap_or(0);
        if readers > 0 {
            return Err(Error::conflict(format!(
                "checkpoint {name} is being exported ({readers} archive stream{} reading it)",
                if readers > 1 { "s" } else { "" }
            ))
            .with_hint("delete it again once the export has ended"));
        }
        let r = self.reserve_checkpoint(checkpoint, name)?;
        let mut busy = self.busy();
        if busy.readers.contains_key(&checkpoint) {
            drop(busy);
            self.release(r);
            return Err(
                Error::conflict(format!("checkpoint {name} is being exported"))
                    .with_hint("delete it again once the export has ended"),
            );
        }
        busy.deleting.insert(checkpoint);
        Ok(Reservation {
            deleting: true,
            ..r
        })
    }

    /// Reserves checkpoint `checkpoint`, called `name` in the refusal: the caller's word for it.
    pub(super) fn reserve_checkpoint(&self, checkpoint: Uuid, name: &str) -> Result<Reservation> {
        let mut busy = self.busy();
        if !busy.checkpoints.insert(checkpoint) {
            return Err(
                Error::conflict(format!("checkpoint {name} is in use by a job"))
                    .with_advice(Advice::WaitForRunningJobs),
            );
        }
        Ok(Reservation {
            targets: Vec::new(),
            checkpoint: Some(checkpoint),
            job: None,
            deleting: false,
        })
    }

    pub(super) fn release(&self, r: Reservation) {
        let mut busy = self.busy();
        for t in r.targets {
            busy.targets.remove(&t);
        }
        if let Some(c) = r.checkpoint {
            busy.checkpoints.remove(&c);
            if r.deleting {
                busy.deleting.remove(&c);
            }
        }
        if let Some(j) = r.job {
            busy.member_jobs.remove(&j);
            busy.estimates.remove(&j);
        }
    }

    /// Records what job `job`'s images should take (bytes), for its progress.
    pub(super) fn set_estimate(&self, job: Uuid, bytes: u64) {
        self.busy().estimates.insert(job, bytes);
    }

    /// The counter job `job` (a push or pull) adds what it sends or reads to, for its progress.
    pub(super) fn transfer_progress(&self, job: Uuid) -> crate::remote::Progress {
        self.busy().transfers.entry(job).or_default().clone()
    }

    /// What push or pull job `job` has moved so far, while it runs.
    pub(super) fn transferred(&self, job: Uuid) -> Option<u64> {
        self.busy()
            .transfers
            .get(&job)
            .map(|p| p.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// What job `job`'s images should take, when it holds a reservation with an estimate.
    pub(super) fn estimate(&self, job: Uuid) -> Option<u64> {
        self.busy().estimates.get(&job).copied()
    }

    /// Releases everything `job` holds: its target, and the checkpoint a restore, push or pull uses.
    pub(super) fn release_job(&self, job: &Job) {
        let mut busy = self.busy();
        busy.targets.retain(|_, j| *j != job.id);
        busy.member_jobs.remove(&job.id);
        busy.estimates.remove(&job.id);
        busy.transfers.remove(&job.id);
        if matches!(job.kind, JobKind::Restore | JobKind::Push | JobKind::Pull) {
            busy.checkpoints.remove(&job.checkpoint_id);
        }
    }
}

/// A reservation of a target (and checkpoint) for one job.
pub(in crate::service) struct Reservation {
    /// The target's key, or a group's members' keys.
    targets: Vec<String>,
    checkpoint: Option<Uuid>,
    job: Option<Uuid>,
    /// A delete's: no export starts meanwhile.
    deleting: bool,
}
