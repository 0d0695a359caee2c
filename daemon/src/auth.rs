//! Who may do what. Every request is attributed to the uid the kernel reports for its
//! connection (SO_PEERCRED); the HTTP layer turns that into a `Caller`, and the rules live here.
//!
//! - uid 0 is the administrator: everything.
//! - Any other caller may checkpoint only process trees whose every task runs entirely as its uid
//!   (real, effective, saved and filesystem uids), checked through a pidfd so that a pid reused
//!   during the check is noticed; sees and acts on only the checkpoints and jobs it created
//!   (others' are 404 to it); may not touch containers (runc and its state are root's); may give a
//!   `checkpoint_dir` only under the configured `allowed_dirs`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use ckptd_api::Target;

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Caller {
    /// The daemon itself, and root callers.
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: None,
    };

    /// A caller the kernel could not identify: allowed nothing.
    pub const NOBODY: Caller = Caller {
        uid: u32::MAX,
        gid: u32::MAX,
        pid: None,
    };

    /// A schedule's runs act as the uid that created the schedule.
    pub fn owner(uid: u32) -> Caller {
        Caller {
            uid,
            gid: u32::MAX,
            pid: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.uid == 0
    }

    /// Whether this caller may see (and so act on) something owned by `owner`.
    pub fn can_see(&self, owner: u32) -> bool {
        self.is_admin() || owner == self.uid
    }

    /// The owner filter of this caller's lists: none for root, its own uid for others.
    pub fn owner_filter(&self) -> Option<u32> {
        (!self.is_admin()).then_some(self.uid)
    }
}

/// What a bearer token on the TCP listener grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// `tcp_token_file`'s token: everything, as root.
    Admin,
    /// `metrics_token_file`'s token: GET /metrics, nothing else.
    Metrics,
}

/// The TCP listener's tokens.
#[derive(Clone)]
pub struct Tokens {
    admin: String,
    metrics: Option<String>,
}

impl Tokens {
    pub fn new(admin: String, metrics: Option<String>) -> Tokens {
        Tokens { admin, metrics }
    }

    /// What an `Authorization` header's value grants (compared in constant time).
    pub fn grant(&self, authorization: Option<&str>) -> Option<Grant> {
        let given = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), self.admin.as_bytes()) {
            return Some(Grant::Admin);
        }
        self.metrics
            .as_ref()
            .filter(|m| constant_time_eq(given.as_bytes(), m.as_bytes()))
            .map(|_| Grant::Metrics)
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn forbidden(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Forbidden, message)
}

/// The rules that depend on configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Where non-root callers may put a `checkpoint_dir` (canonical paths).
    pub allowed_dirs: Vec<PathBuf>,
    /// What one non-root owner may use.
    pub limits: crate::config::MemberLimits,
}

impl Policy {
    /// May `caller` checkpoint `target` into `checkpoint_dir`?
    pub fn check_checkpoint(
        &self,
        caller: &Caller,
        target: &Target,
        checkpoint_dir: Option<&Path>,
    ) -> Result<()> {
        if caller.is_admin() {
            return Ok(());
        }
        match target {
            Target::Container { .. } => {
                return Err(forbidden(format!(
                "uid {} may not checkpoint containers: containers are root's (runc and its state \
                     belong to root); ask an administrator",
                caller.uid
            )))
            }
            Target::Process { pid } => owns_tree(caller.uid, *pid)?,
            Target::Group { targets } => {
                for t in targets {
                    self.check_checkpoint(caller, t, None)?;
                }
            }
        }
        if let Some(dir) = checkpoint_dir {
            self.check_dir(caller, dir)?;
        }
        Ok(())
    }

    /// May `caller` restore into `into` (None: in place)?
    pub fn check_restore(&self, caller: &Caller, into: Option<&Target>) -> Result<()> {
        if caller.is_admin() || into.is_none() {
            return Ok(());
        }
        match into {
            Some(Target::Container { .. }) => Err(forbidden(format!(
                "uid {} may not restore into containers: containers are root's",
                caller.uid
            ))),
            _ => Ok(()),
        }
    }

    /// Whether a non-root caller may name `dir` at all: inside `allowed_dirs`, judged on the
    /// path as written (`validate::checkpoint_dir` has normalized it), before anything on disk is
    /// looked at, so a refused caller learns nothing about what exists there.
    fn check_dir(&self, caller: &Caller, dir: &Path) -> Result<()> {
        if self.allowed_dirs.iter().any(|a| dir.starts_with(a)) {
            return Ok(());
        }
        let allowed = if self.allowed_dirs.is_empty() {
            "none are configured".to_owned()
        } else {
            self.allowed_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(forbidden(format!(
            "uid {} may not write checkpoints to {}: non-root callers may use only directories \
             of their own inside the allowed_dirs ({allowed})",
            caller.uid,
            dir.display()
        ))
        .with_advice(ckptd_api::Advice::UseOwnStorage))
    }

    /// Whether `caller` may use the existing directory `dir` (canonical, already inside the
    /// allowed_dirs): a non-root caller must own it, and every directory above it must be root's
    /// and writable by no one else unless sticky (as /srv/ckpt at 1777: there only an entry's
    /// owner can rename it). Together with the symlink-free open at every later use, nobody but
    /// the caller can put anything else at that path.
    pub fn check_dir_owner(&self, caller: &Caller, dir: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        if caller.is_admin() {
            return Ok(());
        }
        let refuse = |why: String| {
            forbidden(format!(
                "uid {} may not write checkpoints to {}: {why}",
                caller.uid,
                dir.display()
            ))
            .with_advice(ckptd_api::Advice::UseOwnDirectory)
        };
        let md = std::fs::symlink_metadata(dir)
            .map_err(|e| refuse(format!("it cannot be read ({e})")))?;
        if md.uid() != caller.uid {
            return Err(refuse(format!(
                "it belongs to uid {}, and a non-root caller may use only its own directories",
                md.uid()
            )));
        }
        for a in dir.ancestors().skip(1) {
            let md = std::fs::symlink_metadata(a)
                .map_err(|e| refuse(format!("{} cannot be read ({e})", a.display())))?;
            let others_write = md.mode() & 0o022 != 0 && md.mode() & 0o1000 == 0;
            if md.uid() != 0 || others_write {
                return Err(refuse(format!(
                    "{} above it can be changed by a user other than root (owner uid {}, mode \
                     {:o}), so what that path names could change under the daemon",
                    a.display(),
                    md.uid(),
                    md.mode() & 0o7777
                )));
            }
        }
        Ok(())
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// A pidfd becomes readable when its process exits.
fn exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().contains(PollFlags::IN)
}

/// A process's uids (real, effective, saved, filesystem), gids (the same four) and
/// supplementary groups.
struct Ids {
    uids: [u32; 4],
    gids: [u32; 4],
    groups: Vec<u32>,
}

fn ids(pid: i32) -> Option<Ids> {
    let st = procfs::process::Process::new(pid).ok()?.status().ok()?;
    Some(Ids {
        uids: [st.ruid, st.euid, st.suid, st.fuid],
        gids: [st.rgid, st.egid, st.sgid, st.fgid],
        groups: st.groups,
    })
}

/// The account of a non-root owner as CRIU runs for it: its uid, primary gid and every group it
/// belongs to, from the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Account {
    pub fn of(uid: u32) -> Result<Account> {
        use nix::unistd::{getgrouplist, Uid, User};
        let none = || {
            forbidden(format!(
                "uid {uid} has no entry in the user database; ckptd runs CRIU with its owner's \
                 uid and groups and cannot tell what they are"
            ))
        };
        let user = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .ok_or_else(none)?;
        let name = std::ffi::CString::new(user.name.as_bytes()).map_err(|_| none())?;
        let mut groups: Vec<u32> = getgrouplist(&name, user.gid)
            .map_err(|_| none())?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        Ok(Account {
            uid,
            gid: user.gid.as_raw(),
            groups,
        })
    }
}

/// Every task of the tree rooted at `pid` runs entirely as `uid` and within its groups (a
/// setgid program's process holds a group its user does not, and so memory the user may not
/// read). The root is held by a pidfd during the check, so a process that exits and whose pid is
/// reused meanwhile is noticed.
pub fn owns_tree(uid: u32, pid: i32) -> Result<()> {
    let gone = || Error::target_unavailable(format!("no process with pid {pid} exists"));
    let pidfd = pidfd_open(pid).ok_or_else(gone)?;
    let account = (uid != 0).then(|| Account::of(uid)).transpose()?;
    for p in sys::process_tree(pid) {
        let Some(ids) = ids(p) else { continue };
        let comm = || sys::proc_stat(p).map(|s| s.comm).unwrap_or_default();
        if ids.uids.iter().any(|&u| u != uid) {
            return Err(forbidden(format!(
                "pid {p} ({}) runs as uid {} (real, effective, saved, fs: {:?}); uid {uid} may \
                 checkpoint only process trees that are entirely its own",
                comm(),
                ids.uids[1],
                ids.uids
            )));
        }
        if let Some(a) = &account {
            let foreign = ids
                .gids
                .iter()
                .chain(&ids.groups)
                .find(|g| !a.groups.contains(g) && **g != a.gid);
            if let Some(g) = foreign {
                return Err(forbidden(format!(
                    "pid {p} ({}) runs with group {g}, which uid {uid} is not a member of; a \
                     non-root caller may checkpoint only processes that run within its own groups",
                    comm()
                )));
            }
        }
    }
    if exited(&pidfd) {
        return Err(gone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_owns_what_root_runs_and_others_do_not() {
        let me = std::process::id() as i32;
        owns_tree(0, me).unwrap();
        let e = owns_tree(1000, me).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert!(e.message.contains("runs as uid 0"), "{}", e.message);
        assert_eq!(
            owns_tree(1000, 4_000_000).unwrap_err().kind,
            ErrorKind::TargetUnavailable
        );
    }

    #[test]
    fn visibility() {
        let alice = Caller {
            uid: 1000,
            gid: 1000,
            pid: None,
        };
        assert!(alice.can_see(1000) && !alice.can_see(0) && !alice.can_see(1001));
        assert!(Caller::ROOT.can_see(1000));
        assert_eq!(alice.owner_filter(), Some(1000));
        assert_eq!(Caller::ROOT.owner_filter(), None);
        assert!(!Caller::NOBODY.can_see(0));
    }

    #[test]
    fn non_root_dirs_must_be_allowed() {
        let d = tempfile::tempdir().unwrap();
        let allowed = d.path().join("ok");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::create_dir(allowed.join("sub")).unwrap();
        let p = Policy {
            allowed_dirs: vec![allowed.canonicalize().unwrap()],
            ..Default::default()
        };
        let alice = Caller {
            uid: 1000,
            gid: 1000,
            pid: None,
        };
        p.check_dir(&alice, &allowed.canonicalize().unwrap().join("sub"))
            .unwrap();
        let e = p.check_dir(&alice, d.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden);
        // Inside the allowed dirs, but root's, not alice's.
        let e = p
            .check_dir_owner(&alice, &allowed.canonicalize().unwrap().join("sub"))
            .unwrap_err();
        assert!(e.message.contains("belongs to uid 0"), "{}", e.message);
        let e = p
            .check_checkpoint(
                &alice,
                &Target::Container {
                    id: "x".into(),
                    runtime: ckptd_api::Runtime::Runc,
                    root: None,
                    bundle: None,
                    namespace: None,
                },
                None,
            )
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden);
    }
}
