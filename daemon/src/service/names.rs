//! The rules about checkpoint names and about deleting a checkpoint wherever it is, each written
//! once for every caller (requests, imports and adoptions, pulls, schedules, expiry).

use ckptd_api::Checkpoint;
use uuid::Uuid;

use super::*;
use crate::auth::Caller;
use crate::catalog;
use crate::error::Result;

impl Service {
    /// Refuses a name another checkpoint holds (one that did not fail: failed ones keep theirs
    /// without holding it).
    pub async fn refuse_taken(&self, name: &str) -> Result<()> {
        if self.inner.catalog.name_exists(name).await? {
            return Err(catalog::name_taken(name));
        }
        Ok(())
    }

    /// `base` if no checkpoint holds it, else `base-2`, `base-3`, ... and, past a hundred,
    /// `base-<8 random hex digits>`: a name nobody can have taken ahead of the caller.
    pub async fn free_name(&self, base: &str) -> Result<String> {
        let catalog = &self.inner.catalog;
        if !catalog.name_exists(base).await? {
            return Ok(base.to_owned());
        }
        for n in 2..100 {
            let name = format!("{base}-{n}");
            if !catalog.name_exists(&name).await? {
                return Ok(name);
            }
        }
        Ok(format!(
            "{base}-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        ))
    }

    /// Deletes a checkpoint everywhere: its copy in each remote, then its images here and its
    /// row (forgetting the last copy of a checkpoint without local images already removed it).
    /// `forget`: the row only, nothing here read or removed (`delete_checkpoint`).
    pub async fn delete_everywhere(
        &self,
        caller: &Caller,
        cp: &Checkpoint,
        forget: bool,
    ) -> Result<()> {
        let remotes: Vec<String> = cp.remote_copies().map(|c| c.remote.clone()).collect();
        for r in remotes {
            self.forget_copy(cp, &r).await?;
        }
        let Some(now) = self.inner.catalog.checkpoint(&cp.id.to_string()).await? else {
            return Ok(());
        };
        if !caller.can_see(now.owner_uid) {
            // Its error, as a request would get it.
            return self
                .delete_checkpoint(caller, &cp.id.to_string(), forget)
                .await;
        }
        self.delete_as_read(now, forget).await
    }

    /// A checkpoint by id, whoever owns it (for the daemon's own passes: retention, expiry).
    pub async fn checkpoint_by_id(&self, id: Uuid) -> Result<Option<Checkpoint>> {
        self.inner.catalog.checkpoint(&id.to_string()).await
    }

    /// Catalogues a checkpoint that no job takes (an import or an adopted directory).
    pub async fn catalogue(&self, cp: &Checkpoint) -> Result<()> {
        self.inner.catalog.insert_checkpoint(cp).await
    }

    /// Changes whenever a checkpoint row is written (`Catalog::checkpoints_version`): a list
    /// read at version V is current while it is still V.
    pub fn checkpoints_version(&self) -> u64 {
        self.inner.catalog.checkpoints_version()
    }

    /// Ready checkpoints per schedule, for the metrics.
    pub async fn kept_by_schedule(&self) -> Result<Vec<(String, u64)>> {
        self.inner.catalog.kept_by_schedule().await
    }
}
