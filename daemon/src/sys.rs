//! Small, safe wrappers over what ckptd reads from the kernel: /proc entries of target processes
//! and the filesystem operations that make checkpoint images durable.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What /proc says of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
    pub flags: u64,
    /// The controlling terminal's device number (0: none).
    pub tty_nr: i32,
}

const PF_KTHREAD: u64 = 0x0020_0000;

impl ProcStat {
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

/// Reads /proc/PID/stat; `None` when no such process exists.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let st = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some(ProcStat::from(st))
}

impl From<procfs::process::Stat> for ProcStat {
    fn from(st: procfs::process::Stat) -> Self {
        ProcStat {
            pid: st.pid,
            comm: st.comm,
            state: st.state,
            ppid: st.ppid,
            pgrp: st.pgrp,
            flags: u64::from(st.flags),
            tty_nr: st.tty_nr,
        }
    }
}

/// The thread group (process) a task id belongs to: itself for a process, its process for a
/// thread. /proc answers for thread ids too, though it does not list them.
pub fn tgid(pid: i32) -> Option<i32> {
    Some(procfs::process::Process::new(pid).ok()?.status().ok()?.tgid)
}

/// The daemon's own pid and every ancestor's, up to pid 1.
pub fn self_and_ancestors() -> Vec<i32> {
    let mut out = vec![std::process::id() as i32];
    let mut pid = out[0];
    while let Some(st) = proc_stat(pid) {
        if st.ppid <= 0 || out.contains(&st.ppid) {
            break;
        }
        out.push(st.ppid);
        pid = st.ppid;
    }
    out
}

/// Sends `sig` to each pid, ignoring those that have already gone.
pub fn signal_all(pids: &[i32], sig: nix::sys::signal::Signal) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// fsyncs every regular file directly in `dir`, then `dir` itself.
pub fn fsync_dir_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            open_regular(&entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}

/// fsyncs a directory (after a rename or create in it).
/// Opens a regular file for reading without following a symlink and without blocking on a FIFO
/// swapped in for it: images in a directory a non-root owner can write are read this way by root.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(f)
}

/// A checkpoint's directory reached from `/` without following any symlink: its parent is opened
/// once with `openat2(RESOLVE_NO_SYMLINKS)` and held, and every later operation goes through
/// `/proc/<ckptd>/fd/<parent>/<name>`, which names exactly that parent whatever happens to the
/// path meanwhile. Children that run as root (CRIU, runc, dockerd) can use the same path.
#[derive(Debug)]
pub struct AnchoredDir {
    parent: OwnedFd,
    name: OsString,
    real: PathBuf,
}

impl AnchoredDir {
    /// `dir` is the absolute, canonical path the catalog stores. Fails with ELOOP ("Too many
    /// levels of symbolic links") when any of its components is (now) a symlink.
    pub fn open(dir: &Path) -> io::Result<AnchoredDir> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no parent directory", dir.display()),
            ));
        };
        let fd = openat2(
            CWD,
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(io::Error::from)?;
        Ok(AnchoredDir {
            parent: fd,
            name: name.to_owned(),
            real: dir.to_owned(),
        })
    }

    /// The held parent, as a path that resolves to it alone.
    pub fn parent(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.parent.as_raw_fd()
        ))
    }

    /// The checkpoint's directory inside the held parent.
    pub fn path(&self) -> PathBuf {
        self.parent().join(&self.name)
    }

    /// A sibling of the checkpoint's directory (its `.partial` twin).
    pub fn sibling(&self, name: &str) -> PathBuf {
        self.parent().join(name)
    }

    /// The path as the catalog and the user know it, for messages.
    pub fn real(&self) -> &Path {
        &self.real
    }

    /// The owner uid of the held parent.
    pub fn parent_owner(&self) -> io::Result<u32> {
        Ok(File::from(self.parent.try_clone()?).metadata()?.uid())
    }
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Total size of the regular files directly in `dir`.
pub fn dir_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let md = entry?.metadata()?;
        if md.is_file() {
            total += md.len();
        }
    }
    Ok(total)
}

/// Bytes available to the daemon on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    space(path).map(|(free, _)| free)
}

/// Bytes available to the daemon, and the size, of the filesystem holding `path`.
pub fn space(path: &Path) -> io::Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    let block = st.fragment_size() as u64;
    Ok((
        st.blocks_available() as u64 * block,
        st.blocks() as u64 * block,
    ))
}

/// Creates `path` as a fresh 0700 directory; fails if anything already exists there.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(path)
}

/// Removes a directory tree, never following a symlink: a symlink at `path` itself is refused.
pub fn remove_dir_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a symlink; refusing to remove through it",
        )),
        Ok(md) if md.is_dir() => fs::remove_dir_all(path), // does not follow inner symlinks
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// This host's name (`uname -n`).
pub fn hostname() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Memory CRIU will write for this tree, roughly: anonymous and shared-memory resident pages of
/// every task (file-backed pages are not dumped).
pub fn tree_dump_estimate(pid: i32) -> u64 {
    process_tree(pid)
        .into_iter()
        .filter_map(|p| procfs::process::Process::new(p).ok()?.status().ok())
        .map(|st| (st.rssanon.unwrap_or(0) + st.rssshmem.unwrap_or(0)) * 1024)
        .sum()
}

/// Processes whose command line mentions `needle` (e.g. a CRIU still writing into a directory).
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter(|p| {
            p.cmdline()
                .is_ok_and(|args| args.iter().any(|a| a.contains(needle)))
                || p.environ().is_ok_and(|env| {
                    env.get(std::ffi::OsStr::new(IMAGES_ENV))
                        .is_some_and(|v| v.to_string_lossy().contains(needle))
                })
        })
        .map(|p| p.pid())
        .collect()
}

/// Set on every CRIU ckptd runs over an image directory (which CRIU names only through an
/// inherited descriptor): the directory's path, so that a daemon restarted after a crash can
/// find that CRIU.
pub const IMAGES_ENV: &str = "CKPTD_IMAGES";

/// `pid` and all its descendants, from /proc/PID/task/TID/children (parents before children).
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let tasks = procfs::process::Process::new(out[i]).and_then(|p| p.tasks());
        for task in tasks.into_iter().flatten().flatten() {
            for c in task.children().unwrap_or_default() {
                let c = c as i32;
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        i += 1;
    }
    out
}
/// Room kept free beyond a dump's estimate: CRIU's own files, the log, and the estimate's slack.
pub const SPACE_MARGIN: u64 = 16 << 20;

/// Where a process's cgroup can be killed as a whole: cgroup v2's `cgroup.kill`, or the cgroup
/// v1 freezer's directory (its processes, and `freezer.state` to thaw them).
#[derive(Debug, PartialEq)]
pub enum KillableCgroup {
    V2(PathBuf),
    V1Freezer(PathBuf),
}

/// The cgroup of `pid` that [`kill_cgroup`] acts on, under `/sys/fs/cgroup`.
pub fn killable_cgroup(pid: i32) -> io::Result<KillableCgroup> {
    let groups = procfs::process::Process::new(pid)
        .and_then(|p| p.cgroups())
        .map_err(io::Error::other)?;
    let under = |mount: &str, path: &str| {
        Path::new("/sys/fs/cgroup")
            .join(mount)
            .join(path.trim_start_matches('/'))
    };
    for g in &groups {
        if g.controllers.iter().any(|c| c == "freezer") {
            return Ok(KillableCgroup::V1Freezer(under("freezer", &g.pathname)));
        }
    }
    for g in &groups {
        let dir = under("", &g.pathname);
        if g.hierarchy == 0 && dir.join("cgroup.kill").exists() {
            return Ok(KillableCgroup::V2(dir));
        }
    }
    Err(io::Error::other(format!(
        "pid {pid} is in no freezer cgroup (v1) and no cgroup with cgroup.kill (v2)"
    )))
}

/// Kills every process of a cgroup at once, frozen or not, and waits (up to `limit`) until none
/// is left in it: v2 writes `cgroup.kill`; v1 sends SIGKILL to each process, then thaws the
/// freezer (a frozen task dies only once thawed). What runc's `delete --force` does, without its
/// retries of removing the cgroup every 10-80 ms while the killed memory is being freed.
pub fn kill_cgroup(cg: &KillableCgroup, limit: std::time::Duration) -> io::Result<()> {
    let dir = match cg {
        KillableCgroup::V2(dir) => {
            std::fs::write(dir.join("cgroup.kill"), "1")?;
            dir
        }
        KillableCgroup::V1Freezer(dir) => {
            for pid in cgroup_procs(dir)? {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::fs::write(dir.join("freezer.state"), "THAWED")?;
            dir
        }
    };
    let deadline = std::time::Instant::now() + limit;
    while !cgroup_procs(dir)?.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("processes still in {} after SIGKILL", dir.display()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

/// The processes in a cgroup (its `cgroup.procs`; exited ones are gone from it even while they
/// wait to be reaped).
fn cgroup_procs(dir: &Path) -> io::Result<Vec<i32>> {
    Ok(std::fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let s = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 3 4 20 0 1 0 100 1000 10 \
                 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        use procfs::FromRead;
        let st = ProcStat::from(procfs::process::Stat::from_read(s.as_bytes()).unwrap());
        assert_eq!(st.pid, 42);
        assert_eq!(st.comm, "a (b) c");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 7);
        assert_eq!(st.pgrp, 42);
        assert_eq!(st.flags, 4194560);
        assert!(!st.is_kernel_thread());
    }

    #[test]
    fn sees_kernel_threads_and_self() {
        // kthreadd is pid 2 on every Linux.
        let k = proc_stat(2).unwrap();
        assert!(k.is_kernel_thread(), "{k:?}");
        let me = proc_stat(std::process::id() as i32).unwrap();
        assert!(!me.is_kernel_thread());
        let anc = self_and_ancestors();
        assert_eq!(anc[0], std::process::id() as i32);
        assert!(anc.contains(&me.ppid));
    }

    #[test]
    fn remove_refuses_symlink() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"x").unwrap();
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(remove_dir_tree(&link).is_err());
        assert!(target.join("keep").exists());
    }
}
