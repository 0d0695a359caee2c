//! Moving checkpoints: export as an archive, import an archive, adopt an image directory made
//! outside ckptd. None of these runs CRIU or touches a target, so none is a job: export streams
//! while the request lasts, import and adopt answer with the new ready checkpoint.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ckptd_api::{AdoptRequest, Checkpoint, CheckpointStatus, ContainerRecord, Target};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::archive::{self, Manifest};
use crate::auth::{forbidden, Caller};
use crate::catalog;
use crate::criu::images;
use crate::error::{Error, ErrorKind, Result};
use crate::service::{validate, Service, STAGING_PREFIX};
use crate::sys;
use ckptd_api::query::ArchiveQuery;
use ckptd_api::ArchiveFormat;

/// Removes a staging directory unless the import was published.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if let Err(e) = sys::remove_dir_tree(&p) {
                tracing::error!(dir = %p.display(), error = %e, "cannot remove a refused import");
            }
        }
    }
}

/// A checkpoint of a Podman container that holds Podman's configuration of it.
fn is_podman(cp: &Checkpoint) -> bool {
    matches!(
        cp.target,
        Target::Container {
            runtime: ckptd_api::Runtime::Podman,
            ..
        }
    ) && archive::container::has_engine_files(Path::new(&cp.dir))
}

fn admin_only(caller: &Caller, what: &str) -> Result<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(forbidden(format!(
            "uid {} may not {what}: restoring images runs the code and credentials they hold, so \
             only root brings images into ckptd",
            caller.uid
        )))
    }
}

/// Export, import and adopt, over the service's catalog and events.
#[derive(Clone)]
pub struct Portability {
    service: Service,
}

impl Portability {
    pub fn new(service: Service) -> Portability {
        Portability { service }
    }

    /// Starts streaming a ready checkpoint as an archive; the receiver yields the body.
    pub async fn export(
        &self,
        caller: &Caller,
        reference: &str,
        query: ArchiveQuery,
    ) -> Result<(Checkpoint, mpsc::Receiver<io::Result<Bytes>>)> {
        let compression = query.compression;
        let cp = self.service.checkpoint(caller, reference).await?;
        if cp.status != CheckpointStatus::Ready {
            return Err(Error::conflict(format!(
                "checkpoint {} is {}; only ready checkpoints can be exported",
                cp.name,
                cp.status.as_str()
            )));
        }
        crate::service::refuse_group(&cp, query.format)?;
        if query.format == ArchiveFormat::Podman && !is_podman(&cp) {
            return Err(Error::conflict(format!(
                "checkpoint {} is not of a Podman container, or holds no Podman configuration \
                 (config.dump, spec.dump): format=podman is for checkpoints of Podman containers",
                cp.name
            ))
            .with_advice(ckptd_api::Advice::WithoutFormat));
        }
        let manifest = Manifest::of(&cp);
        // Not deleted while it streams (and not started while a delete runs).
        let hold = self.service.hold_for_reading(&cp)?;
        // Read through the directory's parent opened without following a symlink, held for
        // the whole stream.
        let (anchor, folder) = crate::service::folder(&cp)?;
        // The container layout's files made for this archive, before the answer starts: a
        // checkpoint that cannot be written so is a 409, not a cut-off stream.
        let extra = match query.format {
            ArchiveFormat::Ckptd => None,
            ArchiveFormat::Podman => Some(vec![]),
            ArchiveFormat::Kubernetes => {
                let (c, dir) = (cp.clone(), folder.path());
                Some(
                    tokio::task::spawn_blocking(move || archive::kubernetes::extras(&c, &dir))
                        .await
                        .map_err(|e| Error::internal(format!("export task failed: {e}")))??,
                )
            }
        };
        let name = cp.name.clone();
        let service = self.service.clone();
        let rx = archive::stream(move |w| {
            // Held until the stream ends: every file is read through the folder's descriptor,
            // and the checkpoint is not deleted meanwhile.
            let _held = (&anchor, &hold);
            let dir = folder.path();
            let started = std::time::Instant::now();
            let written = match extra {
                Some(extra) => archive::container::export(&dir, &extra, compression, w),
                None => archive::export(&dir, manifest, compression, w),
            };
            match &written {
                Ok(()) => {
                    tracing::info!(checkpoint = %name, ?compression, secs = started.elapsed().as_secs_f64(), "exported");
                    service.count_transfer("export", None);
                }
                // The reader went away: not the daemon's failure.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    service.count_transfer("export", Some("cancelled"))
                }
                Err(_) => service.count_transfer("export", Some("internal")),
            }
            written
        });
        Ok((cp, rx))
    }

    /// Unpacks, verifies and publishes an archive as a new ready checkpoint. Nothing of a
    /// refused archive stays on disk.
    pub async fn import(
        &self,
        caller: &Caller,
        body: impl tokio::io::AsyncRead + Send + Unpin + 'static,
        name: Option<String>,
    ) -> Result<Checkpoint> {
        let imported = self.import_archive(caller, body, name).await;
        self.service
            .count_transfer("import", imported.as_ref().err().map(|e| e.kind.code()));
        imported
    }

    async fn import_archive(
        &self,
        caller: &Caller,
        body: impl tokio::io::AsyncRead + Send + Unpin + 'static,
        name: Option<String>,
    ) -> Result<Checkpoint> {
        self.service.refuse_if_shutting_down()?;
        admin_only(caller, "import archives")?;
        let limit = self.service.config().import_max_bytes;
        if let Some(n) = &name {
            validate::name(n)?;
            self.refuse_taken_name(n).await?;
        }
        let id = Uuid::new_v4();
        let root = self.service.config().checkpoints_root.clone();
        let staging_dir = root.join(format!("{STAGING_PREFIX}{id}"));
        std::fs::create_dir(&staging_dir)
            .map_err(|e| Error::io("cannot create the import directory", &staging_dir, &e))?;
        let mut staging = Staging(Some(staging_dir.clone()));
        let s = staging_dir.clone();
        let imported = tokio::task::spawn_blocking(move || {
            archive::import_any(tokio_util::io::SyncIoBridge::new(body), &s, limit)
        })
        .await
        .map_err(|e| Error::internal(format!("import task failed: {e}")))??;
        let (m, bytes) = match imported {
            archive::Import::Ckptd(i) => (i.manifest, i.bytes),
            archive::Import::Container(f) => {
                let bytes = f.bytes;
                (crate::runtime::foreign_manifest(f, &staging_dir)?, bytes)
            }
        };
        // Hashes prove the files are the ones listed, not that they make a checkpoint: an archive
        // of only inventory.img would import as ready and then fail to restore.
        crate::criu::images::check_checkpoint_restorable(&staging_dir, m.members.len()).map_err(
            |e| {
                Error::invalid(format!("the archive is not a restorable checkpoint: {e}"))
                    .with_hint("export the checkpoint again from a ready checkpoint")
            },
        )?;
        let here = archive::arch();
        if m.arch != here {
            return Err(Error::target_unavailable(format!(
                "the archive was taken on {}, this machine is {here}; CRIU restores on the same \
                 architecture only",
                m.arch
            )));
        }
        let name = match name {
            Some(n) => n,
            None => {
                validate::name(&m.name)?;
                self.refuse_taken_name(&m.name).await?;
                m.name.clone()
            }
        };
        validate::labels(&m.labels)?;
        let dir = root.join(id.to_string());
        let d = dir.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            sys::fsync_dir_tree(&staging_dir)?;
            std::fs::rename(&staging_dir, &d)?;
            sys::fsync_dir(d.parent().unwrap_or(Path::new("/")))
        })
        .await
        .map_err(|e| Error::internal(format!("import task failed: {e}")))?
        .map_err(|e| Error::io("cannot publish the imported images", &dir, &e))?;
        // Published under its final name: from here the directory is the checkpoint's.
        staging.0 = Some(dir.clone());
        let cp = Checkpoint {
            id,
            name,
            target: m.target,
            status: CheckpointStatus::Ready,
            created_at: m.created_at,
            completed_at: Some(catalog::now()),
            dir: dir.display().to_string(),
            size_bytes: bytes,
            options: m.options,
            labels: m.labels,
            criu_version: m.criu_version,
            criu_config: None,
            container: m.container,
            stats: m.stats,
            error: None,
            owner_uid: caller.uid,
            expires_at: None,
            locations: vec![ckptd_api::Location::Local {
                dir: dir.display().to_string(),
            }],
            origin: m.origin,
            // Commands named by an archive are never run here.
            hooks: None,
            terminal: None,
            members: m.members,
        };
        self.service.catalogue(&cp).await?;
        staging.0 = None;
        tracing::info!(checkpoint = %cp.name, id = %cp.id, bytes = cp.size_bytes, "imported");
        self.service.events().checkpoint("checkpoint.imported", &cp);
        Ok(cp)
    }

    async fn refuse_taken_name(&self, name: &str) -> Result<()> {
        self.service
            .refuse_taken(name)
            .await
            .map_err(|e| e.with_advice(ckptd_api::Advice::ImportAsOtherName))
    }

    /// Catalogues an existing image directory in place; from then on ckptd manages it (deleting
    /// the checkpoint deletes the directory).
    pub async fn adopt(&self, caller: &Caller, req: AdoptRequest) -> Result<Checkpoint> {
        admin_only(caller, "adopt image directories")?;
        let dir = validate::checkpoint_dir(&req.dir)?;
        if !dir.exists() {
            return Err(Error::target_unavailable(format!(
                "there is no image directory at {}",
                dir.display()
            ))
            .with_hint("give the directory that `criu dump -D`, `runc checkpoint --image-path` or Docker wrote"));
        }
        let dir = validate::resolve_dir(&dir)?;
        {
            use std::os::unix::fs::MetadataExt;
            let md = std::fs::metadata(&dir)
                .map_err(|e| Error::io("cannot read the image directory", &dir, &e))?;
            if md.uid() != 0 || md.mode() & 0o022 != 0 {
                return Err(Error::target_unavailable(format!(
                    "{} is not a root-owned directory that only root can write; a restore would \
                     refuse it (its images could have been changed by someone else)",
                    dir.display()
                ))
                .with_hint(format!(
                    "if you trust its content: chown root {0} && chmod go-w {0}",
                    dir.display()
                )));
            }
        }
        if !dir.join("inventory.img").is_file() {
            return Err(Error::target_unavailable(format!(
                "{} is not a CRIU image directory (it has no inventory.img)",
                dir.display()
            ))
            .with_hint("give the directory `criu dump -D`, `runc checkpoint --image-path` or Docker's checkpoint wrote"));
        }
        validate::labels(&req.labels)?;
        let (target, container) = adopted_target(&dir, req.target)?;
        let name = match req.name {
            Some(n) => {
                validate::name(&n)?;
                self.refuse_taken_name(&n).await?;
                n
            }
            None => self.adopted_name(&dir).await?,
        };
        let created_at = std::fs::metadata(dir.join("inventory.img"))
            .and_then(|m| m.modified())
            .map(chrono::DateTime::<chrono::Utc>::from)
            .unwrap_or_else(|_| catalog::now());
        let created_at = chrono::DateTime::from_timestamp_micros(created_at.timestamp_micros())
            .unwrap_or(created_at);
        let cp = Checkpoint {
            id: Uuid::new_v4(),
            name,
            target,
            status: CheckpointStatus::Ready,
            created_at,
            completed_at: Some(catalog::now()),
            dir: dir.display().to_string(),
            size_bytes: sys::dir_size(&dir).unwrap_or(0),
            options: req.options,
            labels: req.labels,
            criu_version: None,
            criu_config: None,
            container,
            stats: images::read_dump_stats(&dir).ok(),
            error: None,
            owner_uid: caller.uid,
            expires_at: None,
            locations: vec![ckptd_api::Location::Local {
                dir: dir.display().to_string(),
            }],
            origin: None,
            hooks: None,
            terminal: None,
            members: vec![],
        };
        self.service.catalogue(&cp).await?;
        tracing::info!(checkpoint = %cp.name, dir = %cp.dir, "adopted");
        self.service.events().checkpoint("checkpoint.adopted", &cp);
        Ok(cp)
    }

    /// `<directory name>`, made a valid unused name.
    async fn adopted_name(&self, dir: &Path) -> Result<String> {
        let base = validate::name_from(
            &dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            "adopted-",
        );
        self.service.free_name(&base).await
    }
}

/// The target of adopted images, and for runc/Docker images the container record a restore
/// needs. runc writes `descriptors.json` next to its images; `criu dump` does not.
fn adopted_target(dir: &Path, given: Option<Target>) -> Result<(Target, Option<ContainerRecord>)> {
    if dir.join("descriptors.json").is_file() {
        let Some(Target::Container {
            id,
            runtime,
            root,
            bundle: Some(bundle),
            ..
        }) = given
        else {
            return Err(Error::invalid(format!(
                "{} holds container images (runc's descriptors.json): give \"target\": \
                 {{\"kind\":\"container\",\"id\":\"...\",\"bundle\":\"/path/to/bundle\"}}",
                dir.display()
            )));
        };
        let config = std::fs::read(Path::new(&bundle).join("config.json")).map_err(|e| {
            Error::target_unavailable(format!("cannot read {bundle}/config.json: {e}"))
        })?;
        let record = crate::runtime::runc::container_record(&bundle, &config, dir);
        return Ok((
            Target::Container {
                id,
                runtime,
                root,
                bundle: None,
                namespace: None,
            },
            Some(record),
        ));
    }
    let pids = images::read_tree_pids(dir).map_err(|e| {
        Error::target_unavailable(format!(
            "cannot read the process tree of {} (pstree.img): {e}",
            dir.display()
        ))
    })?;
    let root = *pids.first().ok_or_else(|| {
        Error::target_unavailable(format!("{}/pstree.img lists no process", dir.display()))
    })?;
    match given {
        None => Ok((Target::Process { pid: root }, None)),
        Some(Target::Process { pid }) if pid == root => Ok((Target::Process { pid }, None)),
        Some(t) => Err(Error::new(
            ErrorKind::InvalidRequest,
            format!(
                "{} holds the process tree of pid {root}, not {}; leave \"target\" out to use it",
                dir.display(),
                t.key()
            ),
        )),
    }
}
