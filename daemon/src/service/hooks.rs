//! The hooks of a checkpoint job and a restore job (`runtime::hooks` runs them): `pre_dump`
//! before the dump (its failure fails the checkpoint, the target untouched), `post_dump` once it
//! is ready, `post_restore` and `post_restore_signal` after a restore. What ran goes into the
//! job's `result.hooks`; a post hook's failure is reported there and undoes nothing.

use ckptd_api::{Checkpoint, HookRun, Hooks, Target};

use super::Inner;
use crate::error::Result;
use crate::runtime::hooks::{self, HookContext};
use crate::sys;

/// The process a hook of `cp` acts on, by its identity. For a member's checkpoint it must be a
/// tree entirely the member's: the pid of a restored tree comes from the pidfile its CRIU
/// wrote in the member's folder, which the member can rewrite to name anyone's process, and
/// root enters that process's namespaces (and signals it) on the member's behalf.
fn owned_root(cp: &Checkpoint, hook: &str, pid: Option<i32>) -> Result<Option<sys::TaskId>> {
    let Some(root) = pid.and_then(sys::TaskId::of) else {
        return Ok(None);
    };
    if cp.owner_uid != 0 {
        crate::auth::owns_tree(cp.owner_uid, root.pid).map_err(|e| {
            crate::error::Error::forbidden(format!("the {hook} hook was not run: {}", e.message))
        })?;
    }
    Ok(Some(root))
}

/// A hook that could not be run, as the job reports it.
fn not_run(hook: &str, command: Vec<String>, why: String) -> HookRun {
    HookRun {
        hook: hook.into(),
        command,
        error: Some(why),
        ..Default::default()
    }
}

impl Inner {
    /// Where a hook of `cp` runs: in the namespaces of its target's root process while that
    /// runs (a process, a runc container's init), else in ckptd's own; as the target's owner.
    async fn hook_context<'a>(
        &self,
        cp: &'a Checkpoint,
        hook: &'static str,
        h: &Hooks,
        root: Option<i32>,
    ) -> Result<HookContext<'a>> {
        let root = owned_root(cp, hook, root)?;
        // The target's owner: a process's own uid and gid (a member's process that root
        // checkpoints still gets its hooks run as the member), else the checkpoint's owner.
        let of_process = match (&cp.target, root) {
            (Target::Process { .. }, Some(r)) => procfs::process::Process::new(r.pid)
                .and_then(|p| p.status())
                .ok()
                .filter(|st| st.ruid != 0)
                .map(|st| (st.ruid, st.rgid)),
            _ => None,
        };
        let owner = match of_process {
            Some(ids) => Some(ids),
            None => super::owner_account(cp.owner_uid)?.map(|a| (a.uid, a.gid)),
        };
        Ok(HookContext {
            hook,
            checkpoint: &cp.name,
            root,
            owner,
            timeout: hooks::timeout(h),
        })
    }

    /// The running root process of a checkpoint's target (a runc container's init).
    async fn target_root(&self, target: &Target) -> Option<i32> {
        match target {
            Target::Process { pid } => Some(*pid),
            Target::Container { .. } => self.engine.running_pid(target).await,
            Target::Group { .. } => None,
        }
    }

    /// `pre_dump`: Err when it fails (the checkpoint fails; nothing was frozen).
    pub(super) async fn pre_dump(&self, cp: &Checkpoint, runs: &mut Vec<HookRun>) -> Result<()> {
        let Some(h) = cp.hooks.as_ref() else {
            return Ok(());
        };
        let Some(argv) = &h.pre_dump else {
            return Ok(());
        };
        let root = self.target_root(&cp.target).await;
        let run = match self.hook_context(cp, "pre_dump", h, root).await {
            Ok(ctx) => hooks::run(argv, &ctx).await,
            Err(e) => not_run("pre_dump", argv.clone(), e.message),
        };
        tracing::info!(checkpoint = %cp.name, ok = run.ok, ms = run.duration_ms, "pre_dump hook");
        let failed = (!run.ok).then(|| hooks::pre_dump_failed(&run));
        runs.push(run);
        failed.map_or(Ok(()), Err)
    }

    /// `post_dump`, once the checkpoint is ready: in the target's namespaces if it still runs.
    pub(super) async fn post_dump(&self, cp: &Checkpoint, runs: &mut Vec<HookRun>) {
        let Some(h) = cp.hooks.as_ref() else { return };
        let Some(argv) = &h.post_dump else { return };
        let root = if cp.options.leave_running {
            self.target_root(&cp.target).await
        } else {
            None
        };
        runs.push(match self.hook_context(cp, "post_dump", h, root).await {
            Ok(ctx) => hooks::run(argv, &ctx).await,
            Err(e) => not_run("post_dump", argv.clone(), e.message),
        });
    }

    /// `post_restore` then `post_restore_signal`, in the restored tree rooted at `pid`: the
    /// restore's own hooks, else those recorded with the checkpoint.
    pub(super) async fn post_restore(
        &self,
        cp: &Checkpoint,
        own: Option<&Hooks>,
        pid: Option<i32>,
        runs: &mut Vec<HookRun>,
    ) {
        let Some(h) = own.or(cp.hooks.as_ref()) else {
            return;
        };
        if let Some(argv) = &h.post_restore {
            runs.push(match self.hook_context(cp, "post_restore", h, pid).await {
                Ok(ctx) if ctx.root.is_some() => hooks::run(argv, &ctx).await,
                Ok(_) => not_run(
                    "post_restore",
                    argv.clone(),
                    "the restored tree no longer runs".into(),
                ),
                Err(e) => not_run("post_restore", argv.clone(), e.message),
            });
        }
        if let Some(sig) = &h.post_restore_signal {
            runs.push(match owned_root(cp, "post_restore_signal", pid) {
                Ok(root) => hooks::signal(root, sig),
                Err(e) => not_run("post_restore_signal", vec![sig.clone()], e.message),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(owner_uid: u32) -> Checkpoint {
        serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::new_v4(), "name": "c", "target": {"kind": "process", "pid": 1},
            "status": "ready", "created_at": "2026-12-06T00:00:00Z", "completed_at": null,
            "dir": "/x", "size_bytes": 0, "options": {}, "labels": {}, "criu_version": null,
            "stats": null, "error": null, "owner_uid": owner_uid
        }))
        .unwrap()
    }

    /// A member's restored pid is read from a folder the member can write: naming root's
    /// process (this test's) gets no hook run in it and no signal sent to it.
    #[test]
    fn a_members_hooks_never_act_on_a_process_that_is_not_the_members() {
        let me = std::process::id() as i32;
        let e = owned_root(&checkpoint(65534), "post_restore_signal", Some(me)).unwrap_err();
        assert!(
            e.message
                .contains("the post_restore_signal hook was not run"),
            "{e}"
        );
        assert_eq!(
            owned_root(&checkpoint(0), "post_restore", Some(me))
                .unwrap()
                .map(|r| r.pid),
            Some(me)
        );
        assert!(owned_root(&checkpoint(65534), "post_dump", None)
            .unwrap()
            .is_none());
    }
}
