//! Live migration: a running process moved to another daemon with its memory following it
//! (CRIU's lazy migration), over one authenticated connection between the two daemons
//! (`remote::live`). Each side has a job: the source's `migrate` (on a checkpoint row of its
//! own, which becomes a real checkpoint only if the migration must fall back to one) and the
//! destination's `receive`.
//!
//! Where the workload lives is decided by these rules, so that it is never lost and never runs
//! twice:
//! - The source's tree stays stopped, whole, until the source knows the outcome: CRIU dumps it
//!   with `--leave-stopped`, and takes a closed page socket for a finished transfer, so CRIU
//!   never ends or resumes it on its own.
//! - The destination keeps its tree only once every page is in: `criu lazy-pages` runs under
//!   `ckptd lazy-guard`, which kills the tree if the pages stop coming, whether or not ckptd is
//!   still there. It says `whole` or `failed` on the link.
//! - The source ends its tree on `whole`, resumes it on `failed` (the destination's is gone), and
//!   when the link breaks before either, asks the destination's job over a new connection;
//!   if that cannot be had either, it writes the stopped tree to a durable checkpoint here and
//!   ends it (outcome `checkpointed`): the destination may or may not hold a whole copy, and
//!   only a person who can see both hosts should choose.

use std::time::{Duration, Instant};

use ckptd_api::{
    Checkpoint, CheckpointStatus, CreateCheckpoint, CreateMigration, Job, JobKind, JobResult,
    JobState, MigrationOutcome, MigrationReport, Target,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::*;
use crate::auth::Caller;
use crate::catalog;
use crate::criu::DUMP_LOG;
use crate::engine::{DumpSpec, RestoreSpec, StopSignal};
use crate::error::{Error, ErrorKind, Result};
use crate::remote::live::{self, Kind};
use crate::stop::never_stop;
use crate::sys;

/// How long the other side may stay silent during the handshake.
const HANDSHAKE: Duration = Duration::from_secs(30);
use crate::engine::CONTINUE_LABEL;

/// What the link tells the job's main loop.
enum Word {
    Running(i32),
    Whole,
    Failed(ckptd_api::ErrorInfo),
    Abort,
    /// The link ended or broke.
    Closed(String),
}

/// The two relay tasks of a link and its writer, ended together.
struct Relay {
    to_link: mpsc::Sender<(Kind, bytes::Bytes)>,
    words: mpsc::Receiver<Word>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Page bytes sent to the link, and page-server bytes received from it.
    sent: Arc<std::sync::atomic::AtomicU64>,
    received: Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    /// Relays CRIU's page socket (`local`) over the link, and the link's other frames to
    /// `words`.
    fn start<R, W>(
        mut rd: R,
        mut wr: W,
        local: std::os::unix::net::UnixStream,
    ) -> std::io::Result<Relay>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use std::sync::atomic::Ordering::Relaxed;
        local.set_nonblocking(true)?;
        let local = tokio::net::UnixStream::from_std(local)?;
        let (mut local_rd, mut local_wr) = local.into_split();
        let (to_link, mut outbox) = mpsc::channel::<(Kind, bytes::Bytes)>(64);
        let (tell, words) = mpsc::channel::<Word>(16);
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer_tell = tell.clone();
        let writer = tokio::spawn(async move {
            while let Some((kind, body)) = outbox.recv().await {
                if let Err(e) = live::write_frame(&mut wr, kind, &body).await {
                    let _ = writer_tell.send(Word::Closed(e.to_string())).await;
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        let pages_out = to_link.clone();
        let counted = sent.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match local_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        counted.fetch_add(n as u64, Relaxed);
                        let body = bytes::Bytes::copy_from_slice(&buf[..n]);
                        if pages_out.send((Kind::Pages, body)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let got = received.clone();
        let link = tokio::spawn(async move {
            loop {
                let frame = match live::read_frame(&mut rd).await {
                    Ok(Some(f)) => f,
                    Ok(None) => {
                        let _ = tell
                            .send(Word::Closed(
                                "the other daemon closed the connection".into(),
                            ))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tell.send(Word::Closed(e.to_string())).await;
                        return;
                    }
                };
                let word = match frame.kind {
                    Kind::Pages => {
                        got.fetch_add(frame.body.len() as u64, Relaxed);
                        if local_wr.write_all(&frame.body).await.is_err() {
                            // CRIU's side is gone; its end is the job's to tell.
                        }
                        continue;
                    }
                    Kind::Running => match frame.json::<live::Running>() {
                        Ok(r) => Word::Running(r.pid),
                        Err(e) => Word::Closed(e.message),
                    },
                    Kind::Whole => Word::Whole,
                    Kind::Abort => Word::Abort,
                    Kind::Failed => match frame.json::<ckptd_api::ErrorInfo>() {
                        Ok(info) => Word::Failed(info),
                        Err(e) => Word::Closed(e.message),
                    },
                    other => Word::Closed(format!("an unexpected {other:?} frame")),
                };
                let last = matches!(word, Word::Closed(_));
                if tell.send(word).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Relay {
            to_link,
            words,
            tasks: vec![writer, reader, link],
            sent,
            received,
        })
    }

    /// Sends a word; false if the link is gone.
    async fn say(&self, kind: Kind, body: bytes::Bytes) -> bool {
        self.to_link.send((kind, body)).await.is_ok()
    }

    /// Ends the relay: CRIU's page socket closes (and the link, once what was said is sent).
    async fn end(self) {
        let Relay { to_link, tasks, .. } = self;
        drop(to_link);
        let mut tasks = tasks.into_iter();
        let writer = tasks.next();
        for t in tasks {
            t.abort();
        }
        if let Some(w) = writer {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
    }
}

fn protocol_error(peer: &str, what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("the live migration's link with {peer} failed: {what}"),
    )
}

/// Reads the next frame of the handshake, within `HANDSHAKE`.
async fn next_frame<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    peer: &str,
) -> Result<live::Frame> {
    match tokio::time::timeout(HANDSHAKE, live::read_frame(rd)).await {
        Err(_) => Err(protocol_error(
            peer,
            format!("no word within {} s", HANDSHAKE.as_secs()),
        )),
        Ok(Err(e)) => Err(protocol_error(peer, e)),
        Ok(Ok(None)) => Err(protocol_error(
            peer,
            "the other daemon closed the connection",
        )),
        Ok(Ok(Some(f))) => Ok(f),
    }
}

/// "host:port" with a port.
fn check_address(to: &str) -> Result<()> {
    let ok = to
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "\"to\" must be the destination daemon's HOST:PORT (its tcp_listen), got {to:?}"
        )))
    }
}

/// The container a runc container is restored as on the destination: a runc container with
/// an absolute bundle (the destination checks the rest: the bundle, the id free).
fn check_into(into: &Target) -> Result<()> {
    match into {
        Target::Container {
            runtime: ckptd_api::Runtime::Runc,
            bundle: Some(b),
            ..
        } if b.starts_with('/') => Ok(()),
        _ => Err(Error::invalid(
            "\"into\" must be a runc container with its bundle on the destination: \
             {\"kind\":\"container\",\"id\":NEW,\"bundle\":\"/ABSOLUTE/DIR\"}",
        )),
    }
}

impl Service {
    /// Validates a live migration and queues its job (on a checkpoint row of this side).
    pub async fn submit_migration(
        &self,
        caller: &Caller,
        req: CreateMigration,
    ) -> Result<(Checkpoint, Job)> {
        check_address(&req.to)?;
        if req.token.trim().is_empty() {
            return Err(Error::invalid(
                "\"token\" is empty; give the destination's token (its tcp_token_file)",
            ));
        }
        match (&req.target, &req.into) {
            (Some(Target::Process { .. }), None) => {}
            (Some(Target::Process { .. }), Some(_)) => {
                return Err(Error::invalid(
                    "\"into\" names the container a runc container is restored as; a process \
                     is restored as itself",
                ))
            }
            (Some(Target::Container { runtime: ckptd_api::Runtime::Runc, .. }), into) => {
                if let Some(into) = into {
                    check_into(into)?;
                }
            }
            (Some(t), _) => return Err(crate::engine::no_live_migration(t)),
            (None, _) => return Err(Error::invalid(
                "the request has no \"target\"; give {\"target\":{\"kind\":\"process\",\"pid\":N}} \
                 or {\"target\":{\"kind\":\"container\",\"id\":ID}}",
            )),
        }
        let target = req.target.clone().expect("checked above");
        // Whose process it is first: a caller learns nothing about targets it may not touch.
        self.check_checkpoint(
            caller,
            &target,
            &ckptd_api::CheckpointOptions::default(),
            None,
        )
        .await?;
        if caller.is_admin() {
            // Refused before a job: what the target cannot do live (a paused or terminal
            // container, a process gone).
            self.inner.engine.check_live(&target).await?;
        } else {
            // CRIU 4.2 leaves userfaultfd out of an unprivileged run altogether (kerndat.c: "If
            // running as non-root uffd_open() fails ... Just ignore uffd"), and a member's tree
            // is restored by an unprivileged CRIU, never by root's (its images are the
            // member's). So `criu lazy-pages` cannot serve it on the destination.
            return Err(Error::invalid(
                "live migration is root's only: the destination restores a member's process with \
                 an unprivileged CRIU, and CRIU (4.2) offers lazy pages only to a privileged one",
            )
            .with_hint(
                "move it with a checkpoint instead (it is stopped while its images move): \
                 ckpt create PID NAME, then ckpt migrate NAME --to HOST:PORT --restore",
            ));
        }
        let create = CreateCheckpoint {
            target: req.target.clone(),
            name: req.name.clone(),
            tcp_established: req.tcp_established,
            ext_unix_sk: req.ext_unix_sk,
            file_locks: req.file_locks,
            shell_job: req.shell_job,
            labels: req.labels.clone(),
            ..Default::default()
        };
        self.submit_dump(
            caller,
            create,
            None,
            Some((
                MigrateWork {
                    to: req.to.clone(),
                    into: req.into.clone(),
                },
                req.token.trim().to_owned(),
            )),
        )
        .await
    }

    /// The destination's side, on a connection upgraded from `POST /v1/migrations/incoming`
    /// (root's: the listener's token).
    pub async fn receive_migration<IO>(&self, io: IO, mut peer: String)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(io);
        let hello = match next_frame(&mut rd, &peer).await {
            Ok(f) if f.kind == Kind::Hello => f.json::<live::Hello>(),
            Ok(f) => Err(protocol_error(
                &peer,
                format!("a {:?} frame before Hello", f.kind),
            )),
            Err(e) => Err(e),
        };
        let into = hello.as_ref().ok().and_then(|h| h.into.clone());
        let admitted = match hello {
            Ok(h) => {
                if !h.host.is_empty() {
                    peer = format!("{} (job {})", h.host, h.source_job);
                }
                self.admit_incoming(&h).await
            }
            Err(e) => Err(e),
        };
        let (mut cp, job) = match admitted {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "live migration refused");
                let _ =
                    live::write_frame(&mut wr, Kind::Failed, &live::json_body(&e.to_info())).await;
                return;
            }
        };
        let accept = live::Accept {
            job: job.id,
            checkpoint: cp.id,
        };
        let started = Instant::now();
        let result = match live::write_frame(&mut wr, Kind::Accept, &live::json_body(&accept)).await
        {
            Ok(()) => {
                self.inner
                    .receive(&cp, into.as_ref(), &job, &peer, rd, wr)
                    .await
            }
            Err(e) => Err(protocol_error(&peer, e)),
        };
        let inner = &self.inner;
        if let Err(e) = &result {
            tracing::warn!(%peer, job = %job.id, error = %e, "live migration in failed");
        } else {
            tracing::info!(%peer, job = %job.id, secs = started.elapsed().as_secs_f64(), "live migration in succeeded");
        }
        // The row only held the images' folder: the tree, if any, is what remains.
        cp.status = CheckpointStatus::Failed;
        cp.completed_at = Some(catalog::now());
        let _ = inner
            .end_job_with(
                job,
                result.map(Some),
                Some(JobState::Running),
                Some(&cp),
                None,
            )
            .await;
        drop_row(inner, &cp).await;
    }

    /// The destination's checks, and its checkpoint row and `receive` job (running).
    async fn admit_incoming(&self, hello: &live::Hello) -> Result<(Checkpoint, Job)> {
        let _admitting = self.admitting()?;
        let inner = &self.inner;
        if hello.arch != std::env::consts::ARCH {
            return Err(Error::invalid(format!(
                "the source runs on {}, this host on {}: CRIU's images do not cross architectures",
                hello.arch,
                std::env::consts::ARCH
            )));
        }
        let src = &hello.checkpoint;
        match (&src.target, &hello.into) {
            (Target::Process { .. }, None) => {}
            (
                Target::Container {
                    runtime: ckptd_api::Runtime::Runc,
                    ..
                },
                into,
            ) => {
                if let Some(into) = into {
                    check_into(into)?;
                }
            }
            _ => return Err(crate::engine::no_live_migration(&src.target)),
        }
        if src.owner_uid != 0 {
            // As the source does: a member's tree is restored only by an unprivileged CRIU,
            // which CRIU 4.2 gives no lazy pages.
            return Err(Error::invalid(format!(
                "the process belongs to uid {}: a member's process cannot be migrated live \
                 (it would be restored by an unprivileged CRIU, which has no lazy pages)",
                src.owner_uid
            ))
            .with_hint("move it with a checkpoint: ckpt migrate NAME --to HOST:PORT --restore"));
        }
        let id = Uuid::new_v4();
        let name = if self.refuse_taken(&src.name).await.is_ok() {
            src.name.clone()
        } else {
            format!("{}-{}", src.name, &id.simple().to_string()[..8])
        };
        let now = catalog::now();
        let cp = Checkpoint {
            id,
            name,
            // As it will run here.
            target: hello.into.clone().unwrap_or_else(|| src.target.clone()),
            status: CheckpointStatus::Running,
            created_at: now,
            completed_at: None,
            dir: inner
                .cfg()
                .checkpoints_root
                .join(id.to_string())
                .display()
                .to_string(),
            size_bytes: 0,
            options: src.options,
            labels: src.labels.clone(),
            criu_version: src.criu_version.clone(),
            criu_config: None,
            container: src.container.clone(),
            stats: None,
            error: None,
            owner_uid: src.owner_uid,
            expires_at: None,
            locations: vec![],
            origin: None,
            hooks: None,
            terminal: None,
            members: vec![],
        };
        if cp.container.is_some() {
            // The bundle here, the id free, no terminal: refused before the source freezes.
            let mut asked = cp.clone();
            asked.target = src.target.clone();
            inner
                .engine
                .check_restore(&asked, hello.into.as_ref(), None)
                .await?;
        }
        let mut job = admit::new_job(JobKind::Receive, id, 0);
        job.state = JobState::Running;
        job.started_at = Some(now);
        let request = serde_json::json!({ "source_job": hello.source_job });
        inner
            .catalog
            .insert_checkpoint_with_job(&cp, &job, &request, None)
            .await?;
        inner.events.job("job.running", &job);
        Ok((cp, job))
    }
}

/// What a migration moves, as its messages name it.
fn workload(target: &Target) -> String {
    match target {
        Target::Process { pid } => format!("the process (pid {pid})"),
        Target::Container { id, .. } => format!("the container {id}"),
        Target::Group { .. } => "the group".into(),
    }
}

/// A tree a live dump left stopped is dumped stopped, and CRIU restores it so: its
/// checkpoint's restore continues it (`CONTINUE_LABEL`). A container was paused instead (its
/// restore runs it).
async fn mark_stopped(inner: &Inner, cp: &mut Checkpoint) -> Result<()> {
    if matches!(cp.target, Target::Process { .. }) {
        cp.labels.insert(CONTINUE_LABEL.into(), "true".into());
        inner.catalog.set_labels(cp).await?;
    }
    Ok(())
}

/// Removes a migration's row and its folder (what the job left there).
pub(super) async fn drop_row(inner: &Inner, cp: &Checkpoint) {
    if let Ok(anchor) = anchor(cp) {
        for name in [anchor.partial_name(), anchor.name().to_owned()] {
            if let Ok(f) = anchor.open_folder(&name, cp.owner_uid) {
                let _ = f.detach_criu_yards();
                let _ = f.clear(&[]);
                let _ = anchor.remove_held(&name, &f);
            }
        }
    }
    if let Err(e) = inner.catalog.delete_checkpoint(cp.id).await {
        tracing::warn!(checkpoint = %cp.id, error = %e, "cannot remove a migration's row");
    }
}

impl Inner {
    /// The destination's work once the source is accepted: the images, the restore, the pages.
    async fn receive<R, W>(
        &self,
        cp: &Checkpoint,
        into: Option<&Target>,
        job: &Job,
        peer: &str,
        mut rd: R,
        wr: W,
    ) -> Result<JobResult>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let anchor = anchor(cp)?;
        let owner = owner_account(cp.owner_uid)?;
        let ids = owner.as_ref().map(|a| (a.uid, a.gid));
        let partial_name = anchor.partial_name();
        let folder = anchor.create_folder(&partial_name, ids).map_err(|e| {
            Error::io(
                "cannot create the image directory",
                &anchor.real_sibling(&partial_name),
                &e,
            )
        })?;
        // The images, each a plain new file, in all at most import_max_bytes.
        let limit = self.cfg().import_max_bytes;
        let mut total = 0u64;
        let mut files = 0usize;
        loop {
            let f = next_frame(&mut rd, peer).await?;
            match f.kind {
                Kind::FilesEnd => break,
                Kind::Failed => return Err(live::peer_error(&f.json()?, peer)),
                Kind::File => {}
                other => {
                    return Err(protocol_error(
                        peer,
                        format!("an unexpected {other:?} frame"),
                    ))
                }
            }
            let head: live::FileHeader = f.json()?;
            files += 1;
            total += head.size;
            if files > 10_000 || total > limit {
                return Err(Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!("the migrated images exceed this daemon's import_max_bytes ({limit})"),
                ));
            }
            if head.name.starts_with('.') || head.name == DUMP_LOG {
                return Err(protocol_error(
                    peer,
                    format!("an image named {:?}", head.name),
                ));
            }
            let mut out = folder.create_file(&head.name, ids).map_err(|e| {
                protocol_error(peer, format!("cannot create image {:?}: {e}", head.name))
            })?;
            let mut left = head.size;
            while left > 0 {
                let d = next_frame(&mut rd, peer).await?;
                if d.kind != Kind::Data || d.body.len() as u64 > left {
                    return Err(protocol_error(
                        peer,
                        format!("image {:?} is not what its header said", head.name),
                    ));
                }
                std::io::Write::write_all(&mut out, &d.body).map_err(|e| {
                    Error::io(
                        "cannot write a migrated image",
                        &folder.shown().join(&head.name),
                        &e,
                    )
                })?;
                left -= d.body.len() as u64;
            }
        }
        let (criu_end, relay_end) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::internal(format!("cannot make a socket pair: {e}")))?;
        let mut relay = Relay::start(rd, wr, relay_end)
            .map_err(|e| Error::internal(format!("cannot relay the pages: {e}")))?;
        let (stop_tx, stop) = tokio::sync::watch::channel(None);
        let log_name = restore_log_name(job.id);
        let restored = self
            .engine
            .restore_lazy(
                RestoreSpec {
                    checkpoint: cp,
                    into,
                    options: cp.options,
                    images: &folder,
                    log_name: &log_name,
                    console_socket: None,
                    lazy: true,
                    owner,
                    stop,
                },
                criu_end.into(),
            )
            .await;
        drop(stop_tx);
        let mut lazy = match restored {
            Ok(l) => l,
            Err(e) => {
                let e = shown_paths(e, &folder);
                relay.say(Kind::Failed, live::json_body(&e.to_info())).await;
                relay.end().await;
                return Err(e);
            }
        };
        let pid = lazy.pid;
        relay
            .say(Kind::Running, live::json_body(&live::Running { pid }))
            .await;
        tracing::info!(%peer, pid, "migrated tree runs; its memory follows");
        let owner_uid = (cp.owner_uid != 0).then_some(cp.owner_uid);
        // Known by its identity from now on (pid and start time): a pid reused later is not it.
        let root = sys::TaskId::of(pid);
        let container = lazy.container.clone();
        let end_tree = || async {
            if let Some(root) = root {
                sys::end_tree(root, owner_uid);
            }
            if let Some(c) = container.clone() {
                // runc removes what is left of it (its state, its cgroup).
                let left = crate::engine::Stopped::Container {
                    container: c,
                    paused_by_us: false,
                };
                self.engine.release(&left, true).await;
            }
        };
        let mut link_gone = None;
        let status = loop {
            tokio::select! {
                s = lazy.guard.wait() => break s.ok(),
                w = relay.words.recv() => match w {
                    Some(Word::Abort) => {
                        end_tree().await;
                        let _ = lazy.guard.start_kill();
                    }
                    Some(Word::Closed(why)) | Some(Word::Failed(ckptd_api::ErrorInfo { message: why, .. })) => {
                        // The pages stop coming: close CRIU's socket, so that lazy-pages fails
                        // now and its guard ends the tree.
                        link_gone = Some(why);
                        for t in &relay.tasks {
                            t.abort();
                        }
                    }
                    None => {
                        link_gone.get_or_insert_with(|| "the link ended".into());
                        for t in &relay.tasks {
                            t.abort();
                        }
                    }
                    Some(_) => {}
                },
            }
        };
        let whole = status.is_some_and(|s| s.success()) && root.is_some_and(|r| r.alive());
        let report = MigrationReport {
            outcome: MigrationOutcome::Migrated,
            peer: peer.to_owned(),
            destination_pid: Some(pid),
            page_bytes: relay.received.load(std::sync::atomic::Ordering::Relaxed),
            image_bytes: total,
            ..Default::default()
        };
        if !whole {
            end_tree().await;
            let why = link_gone.unwrap_or_else(|| "criu lazy-pages failed".into());
            let e = Error::new(
                ErrorKind::CriuFailed,
                format!(
                    "the migrated tree's memory did not all arrive ({why}); the tree (pid {pid}) was \
                     ended here, and the source keeps the workload"
                ),
            )
            .with("log", folder.shown().join(format!("lazy-{log_name}")).display().to_string());
            relay.say(Kind::Failed, live::json_body(&e.to_info())).await;
            relay.end().await;
            return Err(e);
        }
        relay.say(Kind::Whole, bytes::Bytes::new()).await;
        relay.end().await;
        self.metrics
            .migrations
            .inc(&["in", MigrationOutcome::Migrated.into()]);
        Ok(JobResult {
            pid: Some(pid),
            container: lazy.container.map(|c| c.id),
            migration: Some(report),
            ..Default::default()
        })
    }

    /// The source's job: dump all but memory, send it, serve the pages, and end or resume the
    /// tree by the rules at the top of this file.
    pub(super) async fn run_migration(
        &self,
        cp: &mut Checkpoint,
        job: &Job,
        work: MigrateWork,
        stop: StopSignal,
    ) -> Result<Option<JobResult>> {
        let token = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.id)
            .ok_or_else(|| {
                Error::unavailable(
                    "ckptd restarted before this migration started, and the destination's token \
                     is kept in memory only",
                )
                .with_hint("migrate again")
            })?;
        if let (Target::Process { pid }, false) = (&cp.target, cp.owner_uid == 0) {
            crate::auth::owns_tree(cp.owner_uid, *pid)?;
        }
        // A container's record (its bundle, config digest), which the destination checks.
        cp.container = self.engine.check_live(&cp.target).await?;
        let peer = work.to.clone();
        let link = live::connect(&peer, &token, Duration::from_secs(10)).await?;
        let (mut rd, mut wr) = tokio::io::split(link);
        let hello = live::Hello {
            source_job: job.id,
            checkpoint: cp.clone(),
            arch: std::env::consts::ARCH.to_owned(),
            host: sys::hostname(),
            into: work.into.clone(),
        };
        live::write_frame(&mut wr, Kind::Hello, &live::json_body(&hello))
            .await
            .map_err(|e| protocol_error(&peer, e))?;
        let f = next_frame(&mut rd, &peer).await?;
        let accept: live::Accept = match f.kind {
            Kind::Accept => f.json()?,
            Kind::Failed => return Err(live::peer_error(&f.json()?, &peer)),
            other => {
                return Err(protocol_error(
                    &peer,
                    format!("an unexpected {other:?} frame"),
                ))
            }
        };
        let mut report = MigrationReport {
            peer: peer.clone(),
            peer_job: Some(accept.job),
            ..Default::default()
        };
        let it = workload(&cp.target);

        let anchor = anchor(cp)?;
        let owner = owner_account(cp.owner_uid)?;
        let partial_name = anchor.partial_name();
        let partial = anchor
            .create_folder(&partial_name, owner.as_ref().map(|a| (a.uid, a.gid)))
            .map_err(|e| {
                publish::folder_error(
                    e,
                    cp,
                    "cannot create the image directory",
                    &anchor.real_sibling(&partial_name),
                )
            })?;
        let (criu_end, relay_end) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::internal(format!("cannot make a socket pair: {e}")))?;
        let frozen = Instant::now();
        let dumped = self
            .engine
            .dump_lazy(
                DumpSpec {
                    target: &cp.target,
                    options: cp.options,
                    images: &partial,
                    log_name: DUMP_LOG,
                    owner,
                    stop: stop.clone(),
                    barrier: None,
                },
                criu_end.into(),
            )
            .await;
        self.phase("process", "dump", frozen);
        let images_ready = frozen.elapsed();
        let mut lazy = match dumped {
            Ok(l) => l,
            Err(e) => {
                let e = shown_paths(e, &partial);
                let _ =
                    live::write_frame(&mut wr, Kind::Failed, &live::json_body(&e.to_info())).await;
                keep_only_log(&anchor, &partial);
                return Err(e);
            }
        };
        let progress = self.transfer_progress(job.id);
        // Everything but memory, while the tree is stopped: a few MB at most.
        let sent = async {
            let mut buf = vec![0u8; 256 * 1024];
            let mut bytes = 0u64;
            for (name, size) in partial.files().map_err(|e| e.to_string())? {
                if name == DUMP_LOG {
                    continue;
                }
                let head = live::FileHeader {
                    name: name.clone(),
                    size,
                };
                live::write_frame(&mut wr, Kind::File, &live::json_body(&head))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut f =
                    tokio::fs::File::from_std(partial.open_file(&name).map_err(|e| e.to_string())?);
                let mut left = size;
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let n = f.read(&mut buf[..want]).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err(format!("image {name} ended early"));
                    }
                    live::write_frame(&mut wr, Kind::Data, &buf[..n])
                        .await
                        .map_err(|e| e.to_string())?;
                    left -= n as u64;
                    bytes += n as u64;
                    progress.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            live::write_frame(&mut wr, Kind::FilesEnd, &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u64, String>(bytes)
        }
        .await;
        let outcome = match sent {
            Err(why) => {
                // The destination restored nothing: the tree runs on here.
                Err(Word::Closed(why))
            }
            Ok(bytes) => {
                report.image_bytes = bytes;
                Ok(())
            }
        };
        let images_sent = frozen.elapsed();
        let mut relay = match Relay::start(rd, wr, relay_end) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "cannot relay the pages");
                None
            }
        };
        let mut verdict: Option<Word> = match (&outcome, &relay) {
            (Err(_), _) | (_, None) => Some(Word::Closed("the images could not be sent".into())),
            _ => None,
        };
        let mut ran = false;
        let mut running_at: Option<Duration> = None;
        let mut stop = stop.clone();
        let mut stopping = false;
        if let (None, Some(r)) = (&verdict, relay.as_mut()) {
            loop {
                let sent_now = r.sent.load(std::sync::atomic::Ordering::Relaxed);
                progress.store(
                    report.image_bytes + sent_now,
                    std::sync::atomic::Ordering::Relaxed,
                );
                tokio::select! {
                    w = r.words.recv() => match w {
                        Some(Word::Running(pid)) => {
                            report.destination_pid = Some(pid);
                            running_at = Some(frozen.elapsed());
                            ran = true;
                        }
                        Some(Word::Abort) => {}
                        Some(w) => { verdict = Some(w); break; }
                        None => { verdict = Some(Word::Closed("the link ended".into())); break; }
                    },
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        r.say(Kind::Abort, bytes::Bytes::new()).await;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
        if let Some(r) = &relay {
            report.page_bytes = r.sent.load(std::sync::atomic::Ordering::Relaxed);
            report.page_requests =
                r.received.load(std::sync::atomic::Ordering::Relaxed) / live::PSI_BYTES;
        }
        // The freeze began when CRIU seized the first task, by its own clock from its start
        // (CRIU first probes the kernel, the process still running), or when the container was
        // paused: the downtime runs from there to the destination's word.
        let seized = lazy
            .frozen_at
            .map(|at| at.saturating_duration_since(frozen));
        let seized = seized
            .or_else(|| {
                partial
                    .open_file(DUMP_LOG)
                    .ok()
                    .and_then(|f| {
                        // Its head only, bounded: the line comes before any page is dumped.
                        let mut head = Vec::new();
                        std::io::Read::read_to_end(
                            &mut std::io::Read::take(f, 256 * 1024),
                            &mut head,
                        )
                        .ok()?;
                        crate::criu::log::first_seize(&String::from_utf8_lossy(&head))
                    })
                    .map(Duration::from_secs_f64)
            })
            .unwrap_or_default();
        let since_freeze = |d: Duration| d.saturating_sub(seized).as_millis() as u64;
        report.downtime_ms = running_at.map(since_freeze);
        report.total_ms = Some(since_freeze(frozen.elapsed()));
        tracing::info!(
            %peer,
            seized_ms = seized.as_millis() as u64,
            images_ready_ms = since_freeze(images_ready),
            images_sent_ms = since_freeze(images_sent),
            running_ms = ?running_at.map(since_freeze),
            total_ms = ?report.total_ms,
            "live migration's timeline, from the freeze"
        );
        if let Some(r) = relay.take() {
            r.end().await;
        }
        // CRIU's page socket is closed: it ends. At rest (waiting for a request) it takes that
        // for the end of the transfer and leaves the tree stopped; cut off in the middle of a
        // request it fails and resumes the tree itself. Only the first can leave a whole copy
        // on the destination.
        let served = match tokio::time::timeout(Duration::from_secs(30), lazy.criu.wait()).await {
            Ok(status) => status.is_ok_and(|s| s.success()),
            Err(_) => {
                if let Some(pg) = lazy.criu.id() {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pg as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = lazy.criu.wait().await;
                false
            }
        };
        let verdict = match verdict {
            Some(Word::Whole) => Word::Whole,
            Some(Word::Closed(why)) if !served => Word::Closed(format!(
                "{why}; CRIU's page server was cut off in the middle of a request, so the \
                 destination's copy cannot be whole (it ends it) and CRIU resumed {it} here"
            )),
            Some(Word::Closed(why)) if ran => {
                // The destination ran the tree and the link broke: ask it how that ended.
                tracing::warn!(%peer, %why, "the live migration's link broke; asking the destination");
                self.ask_peer(&peer, &token, accept.job)
                    .await
                    .unwrap_or(Word::Closed(why))
            }
            Some(w) => w,
            None => Word::Closed("the link ended".into()),
        };
        // The images in transit go; CRIU's log stays with the row (a failure keeps it), unless
        // the row becomes a checkpoint of its own below.
        if matches!(verdict, Word::Closed(_)) && ran && served {
            let _ = partial.clear(&[]);
            let _ = anchor.remove_held(&partial_name, &partial);
        } else {
            keep_only_log(&anchor, &partial);
        }
        let label = |o: MigrationOutcome| -> &'static str { o.into() };
        match verdict {
            Word::Whole => {
                self.engine.release(&lazy.stopped, true).await;
                report.outcome = MigrationOutcome::Migrated;
                self.metrics.migrations.inc(&["out", label(report.outcome)]);
                if let Some(d) = report.downtime_ms {
                    self.metrics.migration_downtime.observe(d as f64 / 1e3);
                }
                // A container runs there as itself, or as the one it was restored into.
                let container = match (&work.into, &cp.target) {
                    (Some(Target::Container { id, .. }), _)
                    | (None, Target::Container { id, .. }) => Some(id.clone()),
                    _ => None,
                };
                Ok(Some(JobResult {
                    pid: report.destination_pid,
                    container,
                    migration: Some(report),
                    ..Default::default()
                }))
            }
            Word::Failed(info) => {
                // The destination's tree is gone (or never ran): the workload carries on here.
                self.engine.release(&lazy.stopped, false).await;
                report.outcome = MigrationOutcome::Resumed;
                self.metrics.migrations.inc(&["out", label(report.outcome)]);
                Err(live::peer_error(&info, &peer)
                    .with("migration", serde_json::to_value(&report).unwrap_or_default())
                    .with_hint(format!("{it} runs here again, resumed where it was frozen; see the destination's log, then migrate again")))
            }
            Word::Closed(why) if !ran || !served => {
                // The destination never said the tree runs, and without this side its pages
                // cannot all arrive: its guard ends it. Resume here.
                self.engine.release(&lazy.stopped, false).await;
                report.outcome = MigrationOutcome::Resumed;
                self.metrics.migrations.inc(&["out", label(report.outcome)]);
                Err(protocol_error(&peer, why)
                    .with("migration", serde_json::to_value(&report).unwrap_or_default())
                    .with_hint(format!("{it} runs here again, resumed where it was frozen; migrate again once the destination is reachable")))
            }
            _ => {
                // Nobody can say whether the destination holds a whole copy: keep the stopped
                // tree in a durable checkpoint here, then end it.
                report.outcome = MigrationOutcome::Checkpointed;
                report.checkpoint = Some(cp.name.clone());
                mark_stopped(self, cp).await?;
                let taken = self.take_checkpoint(cp, never_stop()).await;
                record_taken(cp, &taken);
                self.metrics.migrations.inc(&["out", label(report.outcome)]);
                let e = match taken {
                    Ok(_) => Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "the link with {peer} broke after {it} started there, and the \
                             destination cannot be asked how that ended; {it} was written \
                             to checkpoint {} here and ended",
                            cp.name
                        ),
                    )
                    .with_hint(format!(
                        "if the destination does not run it, restore it here: ckpt restore {}",
                        cp.name
                    )),
                    Err(e) => {
                        // The tree could not be written: it must not be lost, so it runs here.
                        self.engine.release(&lazy.stopped, false).await;
                        report.outcome = MigrationOutcome::Resumed;
                        report.checkpoint = None;
                        Error::new(
                            ErrorKind::Unavailable,
                            format!(
                                "the link with {peer} broke after {it} started there, and \
                                 its checkpoint here failed ({}); {it} was resumed here \
                                 and may also run on the destination",
                                e.message
                            ),
                        )
                    }
                };
                Err(e.with(
                    "migration",
                    serde_json::to_value(&report).unwrap_or_default(),
                ))
            }
        }
    }

    /// The destination's word on its `receive` job, over a new connection (the link broke):
    /// `Whole` if it succeeded, `Failed` if it ended otherwise; None if it cannot be had within
    /// about 30 s.
    async fn ask_peer(&self, peer: &str, token: &str, job: Uuid) -> Option<Word> {
        let remote = ckptd_api::Remote {
            addr: peer.to_owned(),
            token: token.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let asked = tokio::time::timeout(
                Duration::from_secs(5),
                remote.request(
                    ckptd_api::Method::GET,
                    &format!("/v1/jobs/{job}"),
                    http_body_util::Empty::<bytes::Bytes>::new(),
                ),
            )
            .await;
            if let Ok(Ok(resp)) = asked {
                if let Ok(j) = resp.into_result::<Job>() {
                    match j.state {
                        JobState::Succeeded => return Some(Word::Whole),
                        JobState::Failed | JobState::Cancelled => {
                            return Some(Word::Failed(j.error.unwrap_or_else(|| {
                                Error::unavailable("the destination's job failed").to_info()
                            })))
                        }
                        _ => {}
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        None
    }
}

impl Service {
    /// After a crash: a live migration this daemon was the source of. Its CRIU ended with the
    /// daemon (its page socket closed) and left the tree stopped; the destination's outcome
    /// cannot be known (its token was in memory only), so the stopped tree is written to a
    /// durable checkpoint here and ended. A tree that is not stopped was never frozen or was
    /// resumed: nothing is done to it.
    pub(super) async fn recover_migration(
        &self,
        cp: &mut Checkpoint,
        restarted: &Error,
    ) -> Result<Option<JobResult>> {
        let inner = &self.inner;
        if let Ok(anchor) = anchor(cp) {
            let partial = anchor.partial_name();
            reconcile::wait_for_leftover_criu(
                &anchor.real_sibling(&partial),
                Duration::from_secs(30),
            )
            .await;
            if let Ok(f) = anchor.open_folder(&partial, cp.owner_uid) {
                let _ = f.clear(&[]);
                let _ = anchor.remove_held(&partial, &f);
            }
        }
        let Some(stopped) = inner.engine.live_leftover(&cp.target, cp.owner_uid).await else {
            let runs = match cp.target {
                Target::Process { pid } => sys::proc_stat(pid).is_some_and(|s| s.state != 'Z'),
                Target::Container { .. } | Target::Group { .. } => false,
            };
            return Err(if runs {
                Error::new(
                    ErrorKind::Unavailable,
                    "ckptd restarted during this live migration; the transfer was cut off in the \
                     middle, so the destination ended its copy, and CRIU resumed the process here",
                )
                .with_hint("migrate again")
            } else {
                restarted.clone()
            });
        };
        mark_stopped(inner, cp).await?;
        let taken = inner.take_checkpoint(cp, never_stop()).await;
        record_taken(cp, &taken);
        match taken {
            Ok(_) => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "ckptd restarted during this live migration; whether the destination holds a \
                     whole copy cannot be known, so {} (stopped) was written to checkpoint \
                     {} here and ended",
                    workload(&cp.target),
                    cp.name
                ),
            )
            .with_hint(format!(
                "if the destination does not run it, restore it here: ckpt restore {}",
                cp.name
            ))),
            Err(e) => {
                inner.engine.release(&stopped, false).await;
                Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "ckptd restarted during this live migration and could not checkpoint {} \
                         (stopped): {}; it was resumed here",
                        workload(&cp.target),
                        e.message
                    ),
                ))
            }
        }
    }

    /// After a crash: a live migration this daemon was the destination of. Its guard outlived
    /// the daemon: the tree runs whole if the guard let it live, and is gone otherwise.
    pub(super) async fn recover_receive(
        &self,
        cp: &Checkpoint,
        job: &Job,
        restarted: &Error,
    ) -> Result<Option<JobResult>> {
        let mut result = Err(restarted.clone());
        if let Ok(anchor) = anchor(cp) {
            let partial = anchor.partial_name();
            // The guard decides: it kills the tree unless `criu lazy-pages` brought every page
            // in. Wait (bounded) until it and its CRIU have ended; only then is a live tree
            // whole. Waited for, never signalled.
            let needle = format!("/{partial}");
            let me = std::process::id() as i32;
            let deadline = Instant::now() + Duration::from_secs(30);
            let deciding = || {
                sys::processes_mentioning(&needle).into_iter().any(|p| {
                    p != me
                        && sys::proc_stat(p).is_some_and(|s| {
                            !s.is_zombie() && matches!(s.comm.as_str(), "criu" | "ckptd")
                        })
                })
            };
            while deciding() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let settled = !deciding();
            if let Ok(f) = anchor.open_folder(&partial, cp.owner_uid) {
                let pidfile = crate::runtime::process::pidfile_of(&restore_log_name(job.id));
                let root = f
                    .read(&pidfile, 64)
                    .ok()
                    .and_then(|t| String::from_utf8_lossy(&t).trim().parse::<i32>().ok())
                    .and_then(sys::TaskId::of);
                let container = match &cp.target {
                    Target::Container {
                        id, runtime, root, ..
                    } => Some(crate::engine::ContainerHandle {
                        runtime: *runtime,
                        id: id.clone(),
                        root: root.clone(),
                    }),
                    Target::Process { .. } | Target::Group { .. } => None,
                };
                match root {
                    Some(root) if settled && root.alive() => {
                        result = Ok(Some(JobResult {
                            pid: Some(root.pid),
                            container: container.map(|c| c.id),
                            ..Default::default()
                        }));
                    }
                    // Restored here (it wrote its pid), then ended by its guard: the runtime
                    // removes what is left of the container.
                    _ if settled && f.has(&pidfile) => {
                        if let Some(c) = container {
                            let left = crate::engine::Stopped::Container {
                                container: c,
                                paused_by_us: false,
                            };
                            self.inner.engine.release(&left, true).await;
                        }
                    }
                    _ => {}
                }
            }
        }
        drop_row(&self.inner, cp).await;
        result
    }
}
