//! Groups (issue 30): several process trees and runc containers checkpointed at one instant.
//! Every member is frozen (its tree SIGSTOPped, its container paused) before any is dumped; the
//! members are dumped in parallel, each into its own folder `<dir>/<index>`, with
//! `--leave-running` (CRIU leaves each as it found it: stopped) and `tcp_established` (a
//! connection between two members is dumped on both ends, neither side moving meanwhile). Then
//! all are ended together once every image set is durable, or let run together (a failure
//! anywhere, or `leave_running`, where they run again as soon as the last dump ends: nothing
//! slow happens while a target is frozen). A restore brings every member back as it was dumped,
//! stopped or paused, and only then lets them all run: no member talks to another that is not
//! back yet. A failed member's restore ends the members already back.

use std::time::Instant;

use ckptd_api::{Checkpoint, CheckpointOptions, DumpStats, GroupMember, JobResult, Target};

use super::Engines;
use crate::criu::DUMP_LOG;
use crate::engine::{Barrier, DumpOutput, DumpSpec, Engine, RestoreSpec, Stopped, BARRIER_ENV};
use crate::error::{Error, Result};
use crate::sys::Folder;

/// The most members a group takes.
pub use ckptd_api::MAX_GROUP_MEMBERS as MAX_MEMBERS;

/// Refuses a group that cannot be taken together, before anything is frozen: fewer than two or
/// more than `MAX_MEMBERS` members, a group inside it, one target named twice.
pub fn check_members(targets: &[Target]) -> Result<()> {
    if !(2..=MAX_MEMBERS).contains(&targets.len()) {
        return Err(Error::invalid(format!(
            "a group has 2 to {MAX_MEMBERS} targets; this one has {}",
            targets.len()
        )));
    }
    for (i, t) in targets.iter().enumerate() {
        if matches!(t, Target::Group { .. }) {
            return Err(Error::invalid(format!(
                "target {i} of the group is a group; list its members instead"
            )));
        }
        if targets[..i].iter().any(|o| o.key() == t.key()) {
            return Err(Error::target_unavailable(format!(
                "the group names {} twice",
                t.key()
            )));
        }
    }
    Ok(())
}

/// Refuses a group two of whose process members are the two ends of one pipe: CRIU gives a
/// pipe back only within one tree, so each would come back with a pipe of its own and the
/// pipeline would be cut. Two trees of one pipeline are one member: their common parent's.
pub fn check_pipes(targets: &[Target]) -> Result<()> {
    type Ends = std::collections::BTreeMap<u64, (bool, bool)>;
    let ends: Vec<(usize, Ends)> = targets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match t {
            Target::Process { pid } => Some((i, crate::sys::tree_pipe_ends(*pid))),
            _ => None,
        })
        .collect();
    for (n, (i, a)) in ends.iter().enumerate() {
        for (j, b) in &ends[n + 1..] {
            let shared = a.iter().find(|(ino, (ar, aw))| {
                b.get(ino)
                    .is_some_and(|(br, bw)| (*ar && *bw) || (*aw && *br))
            });
            if let Some((ino, _)) = shared {
                return Err(Error::target_unavailable(format!(
                    "group members {i} ({}) and {j} ({}) are the two ends of one pipe \
                     (pipe:[{ino}]); CRIU gives a pipe back only within one process tree, so \
                     the restored pipeline would be cut",
                    targets[*i].key(),
                    targets[*j].key()
                ))
                .with_hint(
                    "make the pipeline one member: the pid of the process that started both \
                     (the shell running `a | b`)",
                ));
            }
        }
    }
    Ok(())
}

/// The options each member is dumped and restored with: left as found (the group froze it),
/// and its TCP connections (to other members) taken established.
fn member_options(group: CheckpointOptions) -> CheckpointOptions {
    CheckpointOptions {
        leave_running: true,
        tcp_established: true,
        ..group
    }
}

/// Says which member an error is about.
fn of_member(e: Error, index: usize, target: &Target) -> Error {
    let mut e = e;
    e.message = format!("group member {index} ({}): {}", target.key(), e.message);
    e.with("member", index)
}

/// Every member of a group checkpoint as a checkpoint of its own, in the group's order.
fn member_checkpoints(cp: &Checkpoint) -> Vec<Checkpoint> {
    cp.members
        .iter()
        .enumerate()
        .map(|(i, m)| member_checkpoint(cp, i, m))
        .collect()
}

/// A group member as a checkpoint of its own, for its engine's restore.
fn member_checkpoint(cp: &Checkpoint, index: usize, m: &GroupMember) -> Checkpoint {
    Checkpoint {
        name: format!("{}[{index}]", cp.name),
        target: m.target.clone(),
        dir: format!("{}/{index}", cp.dir),
        container: m.container.clone(),
        stats: m.stats,
        terminal: None,
        members: Vec::new(),
        labels: Default::default(),
        ..cp.clone()
    }
}

impl Engines {
    /// Freezes every member, dumps them in parallel, and leaves them frozen for `publish` to
    /// end (or lets them run again at once with `leave_running`).
    ///
    /// A process member's CRIU is started before the freeze and waits at its pre-dump barrier
    /// (after its start-up, before it seizes anything), so CRIU's start-up is not frozen time;
    /// once every one is there, all members are frozen, the barriers open, and the containers'
    /// dumps start. Without a barrier (ckptd's binary is not one the owner's CRIU may run) every
    /// member is frozen first and every dump starts after.
    pub(super) async fn dump_group(&self, spec: DumpSpec<'_>) -> Result<DumpOutput> {
        let Target::Group { targets } = spec.target else {
            return Err(Error::internal("a single target reached the group's dump"));
        };
        check_members(targets)?;
        let owner_uid = spec.owner.as_ref().map_or(0, |o| o.uid);
        let owner = spec.owner.as_ref().map(|a| (a.uid, a.gid));
        let mut folders: Vec<Folder> = Vec::new();
        for i in 0..targets.len() {
            let name = i.to_string();
            let made = spec
                .images
                .within(&name)
                .and_then(|a| a.create_folder(&name, owner));
            folders.push(made.map_err(|e| {
                Error::io(
                    "cannot create the group member's image folder",
                    &spec.images.shown().join(&name),
                    &e,
                )
            })?);
        }
        let options = member_options(spec.options);
        let member_spec = |i: usize, barrier: Option<Barrier>| DumpSpec {
            target: &targets[i],
            options,
            images: &folders[i],
            log_name: spec.log_name,
            owner: spec.owner.clone(),
            stop: spec.stop.clone(),
            barrier,
        };
        // The process members that wait at a barrier, and the group's ends of their pipes.
        let script = barrier_script(owner_uid);
        let mut gates: Vec<Gate> = Vec::new();
        let mut early = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let (Some(script), Target::Process { .. }) = (&script, t) else {
                continue;
            };
            let (gate, barrier) = Gate::new(i, script)
                .map_err(|e| Error::unavailable(format!("cannot make the group's barrier: {e}")))?;
            gates.push(gate);
            early.push((i, self.for_target(t).dump(member_spec(i, Some(barrier)))));
        }
        let waiting = std::sync::atomic::AtomicUsize::new(0);
        let early_dumps = futures_util::future::join_all(early.into_iter().map(|(i, dump)| {
            let ended = &waiting;
            async move {
                let out = dump.await;
                ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (i, out)
            }
        }));
        let rest = async {
            if let Err(e) = Gate::all_ready(&gates, &waiting, &spec.stop).await {
                Gate::open_all(&gates, false);
                return (Err(e), Vec::new());
            }
            // Every member at once: the group's instant is when the last one has stopped.
            let started = Instant::now();
            let freezes = futures_util::future::join_all(
                targets
                    .iter()
                    .map(|t| self.for_target(t).freeze(t, owner_uid)),
            )
            .await;
            let all_frozen = started.elapsed();
            let failed = freezes
                .iter()
                .enumerate()
                .find_map(|(i, f)| f.as_ref().err().map(|e| (i, e.clone())));
            let frozen: Vec<Stopped> = freezes.into_iter().filter_map(|f| f.ok()).collect();
            if let Some((i, e)) = failed {
                Gate::open_all(&gates, false);
                self.release_all(&frozen, false).await;
                return (Err(Some(of_member(e, i, &targets[i]))), Vec::new());
            }
            Gate::open_all(&gates, true);
            let late =
                targets
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !gates.iter().any(|g| g.member == *i))
                    .map(|(i, t)| async move {
                        (i, self.for_target(t).dump(member_spec(i, None)).await)
                    });
            let late = futures_util::future::join_all(late).await;
            (Ok((frozen, started, all_frozen)), late)
        };
        let (early_outs, (coordinated, late_outs)) = tokio::join!(early_dumps, rest);
        let (frozen, started, all_frozen) = match coordinated {
            Ok(c) => c,
            Err(Some(e)) => return Err(e),
            Err(None) => {
                // A member's CRIU failed before its barrier: its error says why.
                let (i, e) = early_outs
                    .iter()
                    .find_map(|(i, o)| o.as_ref().err().map(|e| (*i, e.clone())))
                    .unwrap_or_else(|| {
                        (
                            0,
                            Error::internal("a group member's dump ended before the freeze"),
                        )
                    });
                keep_member_log(spec.images, &folders[i], spec.log_name, owner);
                return Err(of_member(e, i, &targets[i]));
            }
        };
        let mut outs: Vec<(usize, Result<DumpOutput>)> =
            early_outs.into_iter().chain(late_outs).collect();
        outs.sort_by_key(|(i, _)| *i);
        let dumped = started.elapsed();
        if let Some((i, e)) = outs
            .iter()
            .find_map(|(i, o)| o.as_ref().err().map(|e| (*i, e.clone())))
        {
            self.release_all(&frozen, false).await;
            keep_member_log(spec.images, &folders[i], spec.log_name, owner);
            return Err(of_member(e, i, &targets[i]));
        }
        let outs: Vec<DumpOutput> = outs.into_iter().map(|(_, o)| o.expect("checked")).collect();
        let stopped = if spec.options.leave_running {
            self.release_all(&frozen, false).await;
            Stopped::Nothing
        } else {
            Stopped::Group(frozen)
        };
        let stats: Vec<DumpStats> = outs.iter().filter_map(|o| o.stats).collect();
        let stats = DumpStats {
            freezing_time_us: all_frozen.as_micros() as u64,
            // Until the members run again (leave_running); otherwise they stay frozen until
            // they are ended, once their images are durable.
            frozen_time_us: started.elapsed().as_micros() as u64,
            memdump_time_us: stats.iter().map(|s| s.memdump_time_us).max().unwrap_or(0),
            memwrite_time_us: stats.iter().map(|s| s.memwrite_time_us).max().unwrap_or(0),
            pages_written: stats.iter().map(|s| s.pages_written).sum(),
        };
        tracing::info!(
            members = targets.len(),
            barriers = gates.len(),
            freezing_ms = all_frozen.as_millis() as u64,
            dumped_ms = dumped.as_millis() as u64,
            "group dumped"
        );
        let criu_config = outs.iter().find_map(|o| o.criu_config.clone());
        Ok(DumpOutput {
            stats: Some(stats),
            stopped,
            container: None,
            criu_config,
            terminal: None,
            members: targets
                .iter()
                .zip(outs)
                .map(|(t, o)| GroupMember {
                    target: t.clone(),
                    container: o.container,
                    stats: o.stats,
                })
                .collect(),
        })
    }

    /// Ends (`kill`) or lets run again everything `frozen` holds, members in parallel.
    pub(super) async fn release_all(&self, frozen: &[Stopped], kill: bool) {
        futures_util::future::join_all(frozen.iter().map(|s| self.release(s, kill))).await;
    }

    /// Refuses a restore of a group that cannot work, before the job: it comes back in place,
    /// as a whole, each member as its engine checks it.
    pub(super) async fn check_group_restore(
        &self,
        cp: &Checkpoint,
        into: Option<&Target>,
        console_socket: Option<&str>,
    ) -> Result<()> {
        if into.is_some() || console_socket.is_some() {
            return Err(Error::invalid(format!(
                "checkpoint {} is a group's: it is restored in place, as a whole (leave out \
                 \"target\" and \"console_socket\")",
                cp.name
            )));
        }
        let Target::Group { targets } = &cp.target else {
            return Err(Error::internal(
                "a single checkpoint reached the group's restore",
            ));
        };
        if cp.members.len() != targets.len() {
            return Err(damaged(cp));
        }
        for (i, m) in cp.members.iter().enumerate() {
            let member = member_checkpoint(cp, i, m);
            self.for_target(&m.target)
                .check_restore(&member, None, None)
                .await
                .map_err(|e| of_member(e, i, &m.target))?;
        }
        Ok(())
    }

    /// Restores every member (in parallel), each as it was dumped; then lets them all run.
    pub(super) async fn restore_group(&self, spec: RestoreSpec<'_>) -> Result<JobResult> {
        let cp = spec.checkpoint;
        if spec.lazy {
            return Err(Error::invalid(format!(
                "checkpoint {} is a group's; a lazy restore is offered for process checkpoints",
                cp.name
            )));
        }
        self.check_group_restore(cp, spec.into, spec.console_socket)
            .await?;
        let folders: Vec<Folder> = (0..cp.members.len())
            .map(|i| {
                spec.images.member(&i.to_string()).map_err(|e| {
                    Error::io("cannot open", &spec.images.shown().join(i.to_string()), &e)
                })
            })
            .collect::<Result<_>>()
            .map_err(|e| e.with_hint("take a new checkpoint of the group; this one is damaged"))?;
        let members = member_checkpoints(cp);
        let options = member_options(spec.options);
        let restores = members.iter().zip(&folders).map(|(m, images)| {
            self.for_target(&m.target).restore(RestoreSpec {
                checkpoint: m,
                into: None,
                options,
                images,
                log_name: spec.log_name,
                console_socket: None,
                lazy: false,
                owner: spec.owner.clone(),
                stop: spec.stop.clone(),
            })
        });
        let results = futures_util::future::join_all(restores).await;
        if let Some((i, e)) = results
            .iter()
            .enumerate()
            .find_map(|(i, r)| r.as_ref().err().map(|e| (i, e.clone())))
        {
            // Half a group is not restored: the members already back are ended.
            for (m, r) in members.iter().zip(&results) {
                if let Ok(r) = r {
                    self.end_restored(m, r).await;
                }
            }
            return Err(of_member(e, i, &members[i].target));
        }
        let results: Vec<JobResult> = results.into_iter().map(|r| r.expect("checked")).collect();
        futures_util::future::join_all(members.iter().zip(&results).map(|(m, r)| {
            self.for_target(&m.target)
                .continue_restored(&m.target, r, cp.owner_uid)
        }))
        .await;
        Ok(JobResult {
            members: results,
            ..Default::default()
        })
    }

    /// The runcs a runtime may still run for each member of group checkpoint `cp`, as one:
    /// their restores (`left_runc_restores`), or with `dump` their checkpoints
    /// (`left_runc_checkpoints`).
    pub(super) async fn left_group_runcs(
        &self,
        cp: &Checkpoint,
        dump: bool,
    ) -> Option<crate::engine::LeftRuncs> {
        let mut finders = Vec::new();
        for m in &member_checkpoints(cp) {
            let engine = self.for_target(&m.target);
            let found = if dump {
                engine.left_runc_checkpoints(m).await
            } else {
                engine.left_runc_restores(m, None).await
            };
            finders.extend(found);
        }
        if finders.is_empty() {
            return None;
        }
        let find = move || finders.iter().flat_map(|f| f()).collect();
        Some(Box::new(find) as crate::engine::LeftRuncs)
    }

    /// After a daemon restart, a group restore it cut short: each member's restore is recovered
    /// as its engine recovers one (its pidfile, its container). All back: they are let run (the
    /// restore had not, or not all of them) and the job succeeded. Any missing: the ones back
    /// are ended, as a failed group restore ends them, and the job failed.
    pub(super) async fn recover_group_restore(
        &self,
        cp: &Checkpoint,
        log_name: &str,
    ) -> Option<JobResult> {
        let members = member_checkpoints(cp);
        let mut results = Vec::new();
        for m in &members {
            let r = self
                .for_target(&m.target)
                .recover_restore(m, None, log_name)
                .await;
            tracing::info!(checkpoint = %cp.name, member = %m.target.key(), back = r.is_some(), "group member's restore recovered");
            results.push(r);
        }
        if !members.is_empty() && results.iter().all(Option::is_some) {
            let results: Vec<JobResult> = results.into_iter().flatten().collect();
            for (m, r) in members.iter().zip(&results) {
                self.for_target(&m.target)
                    .continue_restored(&m.target, r, cp.owner_uid)
                    .await;
            }
            return Some(JobResult {
                members: results,
                ..Default::default()
            });
        }
        for (m, r) in members.iter().zip(&results) {
            if let Some(r) = r {
                tracing::warn!(checkpoint = %cp.name, member = %m.target.key(), "ending a member of a group restore the restart cut short");
                self.end_restored(m, r).await;
            }
        }
        None
    }

    /// Ends a member a failed group restore brought back.
    async fn end_restored(&self, member: &Checkpoint, restored: &JobResult) {
        let stopped = match &member.target {
            Target::Container {
                id, runtime, root, ..
            } => Stopped::Container {
                container: crate::engine::ContainerHandle {
                    runtime: *runtime,
                    id: id.clone(),
                    root: root.clone(),
                },
                paused_by_us: false,
            },
            _ => {
                let owner = (member.owner_uid != 0).then_some(member.owner_uid);
                match restored.pid.and_then(crate::sys::TaskId::of) {
                    Some(root) => Stopped::Tasks(crate::sys::live_tree(root, owner)),
                    None => return,
                }
            }
        };
        self.release(&stopped, true).await;
    }
}

fn damaged(cp: &Checkpoint) -> Error {
    Error::internal(format!(
        "checkpoint {} is damaged: its members' records do not match its group",
        cp.name
    ))
    .with_hint("take a new checkpoint of the group; this one cannot be restored")
}

/// After a member's failed dump: its CRIU log becomes the group's (the folder keeps only that
/// one, at its top), so the error's `log` shows why.
fn keep_member_log(group: &Folder, member: &Folder, log_name: &str, owner: Option<(u32, u32)>) {
    let Ok((text, _)) = member.read_tail(log_name, 4 << 20) else {
        return;
    };
    let _ = group.remove_file(DUMP_LOG);
    if let Ok(mut f) = group.create_file(DUMP_LOG, owner) {
        use std::io::Write;
        let _ = f.write_all(text.as_bytes());
    }
}

/// How long a group waits for its members' CRIUs to reach their barriers.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// ckptd's binary as the members' barrier, for root's groups. CRIU runs an action script with
/// only its standard descriptors, so the script reaches the barrier's pipes through its
/// parent's (`/proc/<criu>/fd/N`); a member's CRIU holds capabilities, which makes it
/// non-dumpable and those links closed to its own script: a member's group is frozen before
/// its CRIUs start instead (their start-up is then frozen time too).
fn barrier_script(owner_uid: u32) -> Option<std::path::PathBuf> {
    (owner_uid == 0)
        .then(|| std::env::current_exe().ok())
        .flatten()
}

/// The group's side of one member's barrier.
struct Gate {
    member: usize,
    /// Where the member's CRIU says it is ready (non-blocking).
    ready: std::os::fd::OwnedFd,
    /// Where the group says go (or not).
    go: std::os::fd::OwnedFd,
    /// Whether `ready` was heard.
    heard: std::sync::atomic::AtomicBool,
}

impl Gate {
    fn new(member: usize, script: &std::path::Path) -> std::io::Result<(Gate, Barrier)> {
        use nix::fcntl::OFlag;
        let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Only the group's end of `ready` is non-blocking: the script's read of `go` waits.
        rustix::fs::fcntl_setfl(&ready_r, rustix::fs::OFlags::NONBLOCK)?;
        Ok((
            Gate {
                member,
                ready: ready_r,
                go: go_w,
                heard: Default::default(),
            },
            Barrier {
                script: script.to_owned(),
                ready: ready_w,
                go: go_r,
            },
        ))
    }

    /// Waits until every member's CRIU is at its barrier. Fails on a stop, or after
    /// `READY_WITHIN`; with no error of its own (None) when a member's dump ended first (its
    /// CRIU failed before the barrier, and says why).
    async fn all_ready(
        gates: &[Gate],
        ended: &std::sync::atomic::AtomicUsize,
        stop: &crate::engine::StopSignal,
    ) -> std::result::Result<(), Option<Error>> {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            for g in gates {
                let mut b = [0u8; 1];
                if let Ok(1) = rustix::io::read(&g.ready, &mut b) {
                    g.heard.store(true, Ordering::SeqCst);
                }
            }
            if gates.iter().all(|g| g.heard.load(Ordering::SeqCst)) {
                return Ok(());
            }
            if ended.load(Ordering::SeqCst) > 0 {
                return Err(None);
            }
            if let Some(reason) = *stop.borrow() {
                return Err(Some(reason.error()));
            }
            if Instant::now() > deadline {
                let late: Vec<String> = gates
                    .iter()
                    .filter(|g| !g.heard.load(Ordering::SeqCst))
                    .map(|g| g.member.to_string())
                    .collect();
                return Err(Some(Error::unavailable(format!(
                    "the CRIU of group member(s) {} did not get ready within {} s; nothing was \
                     frozen",
                    late.join(", "),
                    READY_WITHIN.as_secs()
                ))));
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Opens every barrier (`go`), or makes every member's CRIU give up.
    fn open_all(gates: &[Gate], go: bool) {
        for g in gates {
            let _ = rustix::io::write(&g.go, if go { b"g" } else { b"x" });
        }
    }
}

/// ckptd's binary run by CRIU as a group member's action script: at `pre-dump` it says it is
/// ready and waits for the group's word (exit 0 on `g`, 1 otherwise: CRIU then gives up before
/// it seizes anything); any other action passes.
pub fn run_barrier() -> i32 {
    use std::io::{Read, Write};
    if std::env::var("CRTOOLS_SCRIPT_ACTION").as_deref() != Ok("pre-dump") {
        return 0;
    }
    let fds: Option<(i32, i32)> = std::env::var(BARRIER_ENV).ok().and_then(|v| {
        let (r, g) = v.split_once(',')?;
        Some((r.parse().ok()?, g.parse().ok()?))
    });
    let Some((ready, go)) = fds else {
        eprintln!("ckptd: {BARRIER_ENV} does not name two descriptors");
        return 1;
    };
    // CRIU (the parent) holds them; the script has only its standard descriptors.
    let parent = std::os::unix::process::parent_id();
    let open = |fd: i32, write: bool| {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(format!("/proc/{parent}/fd/{fd}"))
    };
    let (Ok(mut ready), Ok(mut go)) = (open(ready, true), open(go, false)) else {
        eprintln!("ckptd: cannot reach the group's barrier through CRIU's descriptors");
        return 1;
    };
    if ready.write_all(b"r").is_err() {
        return 1;
    }
    let mut word = [0u8; 1];
    match go.read(&mut word) {
        Ok(1) if word[0] == b'g' => 0,
        _ => 1,
    }
}
