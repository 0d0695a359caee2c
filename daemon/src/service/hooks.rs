//! The hooks of a checkpoint job and a restore job (`runtime::hooks` runs them): `pre_dump`
//! before the dump (its failure fails the checkpoint, the target untouched), `post_dump` once it
//! is ready, `post_restore` and `post_restore_signal` after a restore. What ran goes into the
//! job's `result.hooks`; a post hook's failure is reported there and undoes nothing.

use ckptd_api::{Checkpoint, HookRun, Hooks, Target};

use super::Inner;
use crate::error::Result;
use crate::runtime::hooks::{self, HookContext};
use crate::sys;

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
        let root = root.and_then(sys::TaskId::of);
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
        let ctx = self.hook_context(cp, "pre_dump", h, root).await?;
        let run = hooks::run(argv, &ctx).await;
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
        match self.hook_context(cp, "post_dump", h, root).await {
            Ok(ctx) => runs.push(hooks::run(argv, &ctx).await),
            Err(e) => tracing::warn!(checkpoint = %cp.name, error = %e, "post_dump hook not run"),
        }
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
            match self.hook_context(cp, "post_restore", h, pid).await {
                Ok(ctx) if ctx.root.is_some() => runs.push(hooks::run(argv, &ctx).await),
                Ok(_) => runs.push(HookRun {
                    hook: "post_restore".into(),
                    command: argv.clone(),
                    error: Some("the restored tree no longer runs".into()),
                    ..Default::default()
                }),
                Err(e) => {
                    tracing::warn!(checkpoint = %cp.name, error = %e, "post_restore hook not run")
                }
            }
        }
        if let Some(sig) = &h.post_restore_signal {
            runs.push(hooks::signal(pid.and_then(sys::TaskId::of), sig));
        }
    }
}
