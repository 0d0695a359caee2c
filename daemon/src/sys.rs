//! Small, safe wrappers over what ckptd reads from the kernel: /proc entries of target processes
//! and the filesystem operations that make checkpoint images durable.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// Lets `cmd`'s child inherit descriptor `fd` (ckptd opens everything close-on-exec).
pub fn inherit_fd(cmd: &mut tokio::process::Command, fd: std::os::fd::RawFd) {
    // SAFETY: fcntl is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Reads /proc/PID/stat; `None` when no such process exists.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    stat_of(pid).map(ProcStat::from)
}

/// /proc/PID/stat, the file alone: procfs's `Process` would open and fstat /proc/PID first, and
/// a target's admission reads several of these (BENCHMARKS.md, "Cost growth"). Read into a
/// buffer and parsed by procfs from there: its `from_file` reads the file with `File`'s
/// `read_to_end`, which asks for the file's size and position first (`statx`, `lseek`: two more
/// system calls a read, 26 of each a scheduled run). The file is a line of at most 52 numbers
/// and a name of 64 bytes, well within the buffer; one that fills it is not trusted.
fn stat_of(pid: i32) -> Option<procfs::process::Stat> {
    const MAX: usize = 2048;
    let mut buf = [0u8; MAX];
    let text = read_proc(pid, "stat", &mut buf)?;
    if text.len() == MAX {
        return None;
    }
    procfs::FromRead::from_read(text).ok()
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

/// Reads /proc/PID/`file` into `buf`, up to its size: what the kernel writes there is not the
/// target's to choose, but it is bounded all the same.
fn read_proc<'b>(pid: i32, file: &str, buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let mut f = File::open(format!("/proc/{pid}/{file}")).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match io::Read::read(&mut f, &mut buf[n..]) {
            Ok(0) => break,
            Ok(r) => n += r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(&buf[..n])
}

/// The numbers of named lines of /proc/PID/status (`Tgid`, `RssAnon`, ...; sizes in kB), from
/// one bounded read. procfs's `Status` parses all fifty-odd lines into a map of strings, and a
/// target's admission reads a status for each of its processes: that parse was most of the
/// check's cost (BENCHMARKS.md, "Cost growth").
fn status_numbers<const N: usize>(pid: i32, keys: [&str; N]) -> Option<[Option<u64>; N]> {
    let mut buf = [0u8; 4096];
    let text = String::from_utf8_lossy(read_proc(pid, "status", &mut buf)?);
    let mut out = [None; N];
    let mut left = N;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if let Some(i) = keys.iter().position(|k| *k == key) {
            out[i] = value.split_whitespace().next().and_then(|v| v.parse().ok());
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    Some(out)
}

/// The thread group (process) a task id belongs to: itself for a process, its process for a
/// thread. /proc answers for thread ids too, though it does not list them.
pub fn tgid(pid: i32) -> Option<i32> {
    status_numbers(pid, ["Tgid"])?[0].and_then(|t| i32::try_from(t).ok())
}

/// `pid` and its ancestors, up to pid 1, from each one's parent in /proc/PID/stat.
fn self_and_ancestors_of(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut pid = pid;
    while let Some(parent) = stat_of(pid).map(|st| st.ppid) {
        if parent <= 0 || out.contains(&parent) {
            break;
        }
        out.push(parent);
        pid = parent;
    }
    out
}

/// The daemon's own pid and every ancestor's, up to pid 1.
pub fn self_and_ancestors() -> Vec<i32> {
    self_and_ancestors_of(std::process::id() as i32)
}

/// The daemon's own pid and its ancestors' as the first call found them, each with its start
/// time (clock ticks after boot). The daemon's ancestors can only become fewer (an orphan is
/// adopted by a subreaper or init, both already among them), so the list holds every ancestor of
/// now; a pid of it is the same process as then only while its start time is the same.
fn first_ancestors() -> &'static [(i32, u64)] {
    static FIRST: std::sync::OnceLock<Vec<(i32, u64)>> = std::sync::OnceLock::new();
    FIRST.get_or_init(|| {
        self_and_ancestors()
            .into_iter()
            .filter_map(|p| stat_of(p).map(|st| (p, st.starttime)))
            .collect()
    })
}

/// Whether `pid` is the daemon or one of its ancestors: a pid found among the first ones is
/// checked again against a fresh list, which an ancestor that died and whose pid was reused is
/// not in.
pub fn is_self_or_ancestor(pid: i32) -> bool {
    first_ancestors().iter().any(|&(p, _)| p == pid) && self_and_ancestors().contains(&pid)
}

/// Whether `pid` descends from `ancestor` (is below it, not it), walking up from `pid`'s parent:
/// as many reads of /proc as `pid` is deep, however many threads and children `ancestor` has.
pub fn descends_from(pid: i32, ancestor: i32) -> bool {
    let above = self_and_ancestors_of(pid);
    above[1..].contains(&ancestor)
}

/// Whether `pid` is below the daemon (one of its helpers: a CRIU, a runc, a reader of their
/// output). Walking up from `pid`, the first of the daemon's ancestors met, if it is still the
/// process it was (`first_ancestors`, same start time), settles it: above it there are only the
/// daemon's ancestors, never the daemon. A target started beside the daemon, by the same service
/// manager or shell, costs two reads of /proc, not one for each level up to pid 1 (the admission
/// and the dump each check: BENCHMARKS.md, "Cost growth"). A changed ancestor falls back to the
/// whole walk (`descends_from`).
pub fn is_below_self(pid: i32) -> bool {
    let me = std::process::id() as i32;
    let first = first_ancestors();
    let mut seen = vec![pid];
    let mut at = pid;
    while let Some(parent) = stat_of(at).map(|st| st.ppid) {
        if parent == me {
            return true;
        }
        if parent <= 0 || seen.contains(&parent) {
            return false;
        }
        if let Some(&(_, start)) = first.iter().find(|&&(p, _)| p == parent && p != me) {
            return match stat_of(parent) {
                Some(st) if st.starttime == start => false,
                _ => descends_from(pid, me),
            };
        }
        seen.push(parent);
        at = parent;
    }
    false
}

/// Sends `sig` to each pid, ignoring those that have already gone.
pub fn signal_all(pids: &[i32], sig: nix::sys::signal::Signal) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// fsyncs every regular file directly in `dir` and in its group members' folders (`0`, `1`,
/// ...: directories, never a symlink), then each folder.
pub fn fsync_dir_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_file() {
            open_regular(&entry.path())?.sync_all()?;
        } else if kind.is_dir() && entry.file_name().to_str().is_some_and(is_member_name) {
            fsync_dir_tree(&entry.path())?;
        }
    }
    File::open(dir)?.sync_all()
}

/// How many image files `Folder::fsync_all` holds open at once.
const FSYNC_BATCH: usize = 256;

/// Starts writing `f`'s dirty pages back, without waiting (a hint for the fsync that follows;
/// nothing is promised until then).
fn start_writeback(f: &File) {
    // SAFETY: a valid descriptor; offset 0 and length 0 mean the whole file.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// How much of what the machine has waiting to be written may be someone else's before a
/// `syncfs` of images is not worth it: a small checkpoint's durable step would then wait for
/// that writeback too.
const OTHERS_WRITEBACK: u64 = 4 << 20;

/// Whether a `syncfs` of the filesystem `fd` is on makes its files as durable as an fsync of each
/// does: the local journaling filesystems (ext4, xfs, btrfs commit their journal or
/// transaction and flush the disk's cache) and tmpfs (nothing to write). A FUSE filesystem's
/// syncfs may not reach its own storage, and others are not vouched for: there each file is
/// fsynced.
fn syncfs_is_whole(fd: &OwnedFd) -> bool {
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    const TMPFS: i64 = 0x0102_1994;
    rustix::fs::fstatfs(fd).is_ok_and(|st| matches!(st.f_type, EXT4 | XFS | BTRFS | TMPFS))
}

/// Whether what waits to be written on the whole machine (dirty pages and pages under
/// writeback, /proc/meminfo) is at most `ours` bytes plus a little: then a `syncfs` costs about
/// what fsyncing our own files does, with one flush of the disk's cache instead of one a file.
/// Unknown (no /proc/meminfo) is no.
fn writeback_is_ours(ours: u64) -> bool {
    use procfs::Current;
    procfs::Meminfo::current()
        .is_ok_and(|m| m.dirty.saturating_add(m.writeback) <= ours.saturating_add(OTHERS_WRITEBACK))
}

/// A group member's folder name: its index, as `0`, `1`, ... (never `00`).
pub fn is_member_name(name: &str) -> bool {
    name.parse::<usize>().is_ok_and(|i| i.to_string() == name)
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

/// The parent of a checkpoint's folder, reached from `/` without following any symlink: opened
/// once with `openat2(RESOLVE_NO_SYMLINKS)` and held. The folder itself (and its `.partial`
/// twin) is then reached only as a [`Folder`], opened beneath this descriptor with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: no name below the parent is ever resolved as a path,
/// because a member who owns the parent owns every name in it, the ones ckptd created included.
#[derive(Debug)]
pub struct AnchoredDir {
    parent: OwnedFd,
    name: String,
    real: PathBuf,
}

impl AnchoredDir {
    /// `dir` is the absolute, canonical path the catalog stores. Fails with ELOOP ("Too many
    /// levels of symbolic links") when any of its parent's components is (now) a symlink.
    pub fn open(dir: &Path) -> io::Result<AnchoredDir> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name().and_then(|n| n.to_str()))
        else {
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

    /// The folder's own name (its last path component).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `.partial` twin's name.
    pub fn partial_name(&self) -> String {
        format!("{}.partial", self.name)
    }

    /// The path as the catalog and the user know it, for messages.
    pub fn real(&self) -> &Path {
        &self.real
    }

    /// A name in the parent, as the user knows it, for messages.
    pub fn real_sibling(&self, name: &str) -> PathBuf {
        self.real.parent().unwrap_or(Path::new("/")).join(name)
    }

    /// The owner uid of the held parent.
    pub fn parent_owner(&self) -> io::Result<u32> {
        Ok(rustix::fs::fstat(&self.parent)?.st_uid)
    }

    /// Opens the folder `name` (a single component) beneath the held parent: never through a
    /// symlink, only a directory, and only one owned by `owner` or by root. Anything else is
    /// `PermissionDenied` (a symlink: ELOOP; not a directory: ENOTDIR).
    pub fn open_folder(&self, name: &str, owner: u32) -> io::Result<Folder> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        single_component(name)?;
        let fd = openat2(
            &self.parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| {
            // A symlink there is ENOTDIR to O_DIRECTORY|O_NOFOLLOW: say ELOOP, as for a symlink
            // above it, so that callers tell "a symlink" from "a file".
            use rustix::fs::{statat, AtFlags, FileType};
            let link = statat(&self.parent, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
            if link {
                io::Error::from_raw_os_error(libc::ELOOP)
            } else {
                io::Error::from(e)
            }
        })?;
        let folder = Folder::of(fd, self.real_sibling(name))?;
        if folder.uid != owner && folder.uid != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to uid {}, not to the checkpoint's owner (uid {owner}) nor to root",
                    folder.shown.display(),
                    folder.uid
                ),
            ));
        }
        Ok(folder)
    }

    /// Creates `name` as a fresh 0700 folder (failing if anything is there), holds it, checks
    /// that what is held is the folder this call made (root's, empty: a member racing the
    /// creation can only swap in a folder of its own), then gives it to `owner` (uid, gid).
    pub fn create_folder(&self, name: &str, owner: Option<(u32, u32)>) -> io::Result<Folder> {
        use rustix::fs::{fchown, mkdirat, Gid, Mode, Uid};
        single_component(name)?;
        mkdirat(&self.parent, name, Mode::from_raw_mode(0o700))?;
        let folder = self.open_folder(name, 0)?;
        if folder.uid != 0 || !folder.files()?.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} was replaced while ckptd created it",
                    folder.shown.display()
                ),
            ));
        }
        if let Some((uid, gid)) = owner {
            let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
            fchown(&folder.fd, Some(u), Some(g))?;
            return Folder::of(folder.fd, folder.shown);
        }
        Ok(folder)
    }

    /// Renames `from` to `to` in the held parent, never over an existing entry.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        use rustix::fs::{renameat_with, RenameFlags};
        single_component(from)?;
        single_component(to)?;
        renameat_with(&self.parent, from, &self.parent, to, RenameFlags::NOREPLACE)
            .map_err(io::Error::from)
    }

    /// Removes the folder `name` (owned by `owner` or root) and everything in it, without
    /// following a symlink anywhere; nothing there is fine. A symlink or another user's entry at
    /// `name` is refused and left alone.
    pub fn remove_folder(&self, name: &str, owner: u32) -> io::Result<()> {
        let folder = match self.open_folder(name, owner) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        folder.clear(&[])?;
        self.remove_empty(name, &folder)
    }

    /// Empties the held `folder` (through its descriptor), then removes its name `name` if that
    /// still names it; a name swapped meanwhile is left alone.
    pub fn remove_held(&self, name: &str, folder: &Folder) -> io::Result<()> {
        folder.clear(&[])?;
        self.remove_empty(name, folder)
    }

    /// Removes the empty folder at `name` if it is still `folder`.
    fn remove_empty(&self, name: &str, folder: &Folder) -> io::Result<()> {
        use rustix::fs::{statat, unlinkat, AtFlags};
        let st = statat(&self.parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if (st.st_dev, st.st_ino) != (folder.dev, folder.ino) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} was replaced while it was removed",
                    folder.shown.display()
                ),
            ));
        }
        unlinkat(&self.parent, name, AtFlags::REMOVEDIR).map_err(io::Error::from)
    }

    /// fsyncs the held parent (after a rename in it).
    pub fn fsync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.parent).map_err(io::Error::from)
    }
}

/// A name that is one path component: no `/`, not `.` or `..`, not empty.
fn single_component(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

/// The folder `name` directly in the folder at `dir` (a held folder's `/proc/self/fd/N`), opened
/// beneath it without following a symlink, and only if it belongs to that folder's owner or to
/// root: a group member's folder, read by an export.
pub fn open_subfolder(dir: &Path, name: &str) -> io::Result<OwnedFd> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
    single_component(name)?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let parent = openat2(CWD, dir, flags, Mode::empty(), ResolveFlags::empty())?;
    let fd = openat2(
        &parent,
        name,
        flags | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let (owner, uid) = (
        rustix::fs::fstat(&parent)?.st_uid,
        rustix::fs::fstat(&fd)?.st_uid,
    );
    if uid != owner && uid != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {uid}, not to its checkpoint's owner (uid {owner})",
                dir.join(name).display()
            ),
        ));
    }
    Ok(fd)
}

/// A checkpoint's folder held by its own descriptor (`AnchoredDir::open_folder`): every file in
/// it is opened relative to that descriptor, never through a symlink, never blocking on a FIFO,
/// and, in a folder a member owns, only when the file is the member's too (so a hard link to a
/// file the member could not read is refused as well). Reads are bounded. Children (CRIU, runc,
/// tar) get [`Folder::path`], `/proc/<ckptd>/fd/<N>`: the folder itself, whatever its names
/// become; a name joined onto it is resolved by the child, so children given a member's folder
/// run as that member.
#[derive(Debug)]
pub struct Folder {
    fd: OwnedFd,
    uid: u32,
    dev: u64,
    ino: u64,
    shown: PathBuf,
}

impl Folder {
    /// The folder at `dir`, whoever owns it (tests).
    #[cfg(test)]
    pub fn at(dir: &Path) -> io::Result<Folder> {
        use std::os::unix::fs::MetadataExt;
        let a = AnchoredDir::open(dir)?;
        a.open_folder(a.name(), fs::symlink_metadata(dir)?.uid())
    }

    fn of(fd: OwnedFd, shown: PathBuf) -> io::Result<Folder> {
        let st = rustix::fs::fstat(&fd)?;
        Ok(Folder {
            uid: st.st_uid,
            dev: st.st_dev,
            ino: st.st_ino,
            fd,
            shown,
        })
    }

    /// The held folder as a path that resolves to it alone (for children, and for messages
    /// that `shown` replaces).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }

    /// Another descriptor of the folder (close-on-exec), for a child to inherit.
    pub fn dup(&self) -> io::Result<File> {
        Ok(File::from(self.fd.try_clone()?))
    }

    /// The folder's path as the user knows it.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// The folder's owner.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Whether `other` holds the same folder (device and inode).
    pub fn same_as(&self, other: &Folder) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }

    /// Opens the regular file `name` for reading: not a symlink, not a FIFO or device, and in
    /// a member's folder only a file of the member's.
    /// Creates a new regular file `name` in the folder (never over anything, never through a
    /// symlink), 0600 and owned by `owner` when given (the folder's owner reads it then).
    pub fn create_file(&self, name: &str, owner: Option<(u32, u32)>) -> io::Result<File> {
        use rustix::fs::{openat, Mode, OFlags};
        single_component(name)?;
        let fd = openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io::Error::from)?;
        if let Some((uid, gid)) = owner {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )?;
        }
        Ok(File::from(fd))
    }

    pub fn open_file(&self, name: &str) -> io::Result<File> {
        use rustix::fs::{openat, Mode, OFlags};
        single_component(name)?;
        let fd = openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        let st = rustix::fs::fstat(&fd)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.shown.join(name).display()),
            ));
        }
        if self.uid != 0 && st.st_uid != self.uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to uid {}, not to the folder's owner (uid {})",
                    self.shown.join(name).display(),
                    st.st_uid,
                    self.uid
                ),
            ));
        }
        Ok(File::from(fd))
    }

    /// The whole of `name` when it is at most `max` bytes; an error (`FileTooLarge`) otherwise.
    pub fn read(&self, name: &str, max: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let f = self.open_file(name)?;
        let mut data = Vec::new();
        f.take(max + 1).read_to_end(&mut data)?;
        if data.len() as u64 > max {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "{} is larger than the {max} bytes ckptd reads of it",
                    self.shown.join(name).display()
                ),
            ));
        }
        Ok(data)
    }

    /// The last `max` bytes of `name` as text (a log), and whether earlier bytes were left out.
    pub fn read_tail(&self, name: &str, max: u64) -> io::Result<(String, bool)> {
        read_tail(self.open_file(name)?, max)
    }

    /// Whether anything (a symlink included) is at `name` in the folder.
    pub fn has(&self, name: &str) -> bool {
        use rustix::fs::{statat, AtFlags};
        single_component(name).is_ok() && statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Whether a regular file `name` is there (not a symlink).
    pub fn has_file(&self, name: &str) -> bool {
        use rustix::fs::{statat, AtFlags, FileType};
        single_component(name).is_ok()
            && statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
    }

    /// The regular files directly in the folder (names and sizes), sorted; symlinks and other
    /// kinds are left out.
    pub fn files(&self) -> io::Result<Vec<(String, u64)>> {
        use rustix::fs::{statat, AtFlags, FileType};
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            if let Ok(st) = statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
                    out.push((name.to_owned(), st.st_size as u64));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Total size of the regular files in the folder.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.files()?.iter().map(|(_, n)| n).sum())
    }

    /// fsyncs every regular file in the folder, and in its members' folders (a group
    /// checkpoint's `<index>` folders, each the folder's owner's), then the folders; the files'
    /// total size (one listing for both: this runs while a dump's target is still stopped).
    ///
    /// When the machine has little else waiting to be written (`writeback_is_ours`), the whole
    /// filesystem is synced at once (`syncfs`, as the by-hand recipe's `sync` does): one journal
    /// commit and one flush of the disk's cache for every file and folder, where an fsync of
    /// each file flushes the cache once per file (14 files of a small process on ext4 here:
    /// 0.72 ms against 1.53 ms, `BENCHMARKS.md`). Otherwise each file is fsynced, so that a
    /// small checkpoint never waits for someone else's gigabytes: writeback of every file is
    /// started first (`sync_file_range`), then each is fsynced, the first fsync then committing
    /// the filesystem's journal for all of them, where fsyncing each in turn committed it once a
    /// file (3.9 ms against 1.9 ms).
    pub fn fsync_all(&self) -> io::Result<u64> {
        self.fsync_all_by(|size| syncfs_is_whole(&self.fd) && writeback_is_ours(size))
    }

    /// `fsync_all`, with `whole` deciding from the files' size whether the filesystem is synced.
    fn fsync_all_by(&self, whole: impl FnOnce(u64) -> bool) -> io::Result<u64> {
        let members = self
            .member_folders()?
            .iter()
            .map(|name| self.member(name))
            .collect::<io::Result<Vec<Folder>>>()?;
        let folders: Vec<&Folder> = std::iter::once(self).chain(&members).collect();
        let mut files = Vec::new();
        for folder in &folders {
            files.extend(
                folder
                    .files()?
                    .into_iter()
                    .map(|(name, n)| (*folder, name, n)),
            );
        }
        let size = files.iter().map(|(_, _, n)| n).sum();
        if whole(size) {
            // The folder's descriptor was opened before CRIU wrote (`create_folder`): a
            // writeback error on the filesystem since then fails the call.
            rustix::fs::syncfs(&self.fd)?;
            return Ok(size);
        }
        // In batches: a tree of many processes has thousands of image files, and each batch's
        // files are held open until they are fsynced.
        for batch in files.chunks(FSYNC_BATCH) {
            let opened = batch
                .iter()
                .map(|(folder, name, _)| {
                    let f = folder.open_file(name)?;
                    start_writeback(&f);
                    Ok(f)
                })
                .collect::<io::Result<Vec<File>>>()?;
            for f in &opened {
                f.sync_all()?;
            }
        }
        for folder in folders.iter().rev() {
            rustix::fs::fsync(&folder.fd)?;
        }
        Ok(size)
    }

    /// The names of the group members' folders in the folder (`0`, `1`, ...: directories,
    /// not symlinks), in index order.
    pub fn member_folders(&self) -> io::Result<Vec<String>> {
        use rustix::fs::{statat, AtFlags, FileType};
        let mut out: Vec<(usize, String)> = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if !is_member_name(name) {
                continue;
            }
            let index: usize = name.parse().unwrap_or_default();
            if statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
            {
                out.push((index, name.to_owned()));
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, n)| n).collect())
    }

    /// The folder as the parent of a folder `name` of its own (a group checkpoint's member,
    /// `<dir>/<index>`), reached only beneath this one's descriptor.
    pub fn within(&self, name: &str) -> io::Result<AnchoredDir> {
        single_component(name)?;
        Ok(AnchoredDir {
            parent: self.fd.try_clone()?,
            name: name.to_owned(),
            real: self.shown.join(name),
        })
    }

    /// The member folder `name` (see `within`), which must be the folder's owner's or root's.
    pub fn member(&self, name: &str) -> io::Result<Folder> {
        self.within(name)?.open_folder(name, self.uid)
    }

    /// Removes a file (or a symlink: the link, never what it points to) from the folder.
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        single_component(name)?;
        rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::empty()).map_err(io::Error::from)
    }

    /// Unmounts and removes the cgroup yards a CRIU killed mid-restore left in the folder, its
    /// work directory: CRIU mounts a tmpfs with every cgroup controller at `.criu.cgyard.XXXXXX`
    /// and takes it down only when it ends on its own. Left mounted, the yard keeps the folder
    /// from being removed (`rm` of the checkpoint failed with EBUSY) and the mounts pile up.
    /// Only in a folder of root's: a member's CRIU runs unprivileged and mounts nothing, and
    /// root acts on no name in a member's folder. Each yard is unmounted through the folder's
    /// descriptor, its last component never followed; how many were is returned.
    pub fn detach_criu_yards(&self) -> io::Result<usize> {
        use rustix::fs::{statx, unlinkat, AtFlags, StatxFlags};
        use rustix::mount::{unmount, UnmountFlags};
        if self.uid != 0 {
            return Ok(0);
        }
        let mnt = |name: &str, flags: AtFlags| {
            statx(&self.fd, name, flags, StatxFlags::MNT_ID).map(|s| s.stx_mnt_id)
        };
        let own = mnt("", AtFlags::EMPTY_PATH)?;
        let yards: Vec<String> = rustix::fs::Dir::read_from(&self.fd)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().ok().map(str::to_owned))
            .filter(|n| n.starts_with(".criu.cgyard.") && single_component(n).is_ok())
            .collect();
        let mut detached = 0;
        for name in yards {
            if mnt(&name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|id| id != own) {
                let at = self.path().join(&name);
                unmount(&at, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW)?;
                detached += 1;
            }
            match unlinkat(&self.fd, name.as_str(), AtFlags::REMOVEDIR) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(detached)
    }

    /// Removes everything in the folder but the names in `keep`: files and symlinks are
    /// unlinked (a symlink, never its target), folders emptied through descriptors of their own,
    /// a cgroup yard a killed CRIU left unmounted first.
    pub fn clear(&self, keep: &[&str]) -> io::Result<()> {
        use rustix::fs::{openat, unlinkat, AtFlags, Mode, OFlags};
        self.detach_criu_yards()?;
        let names: Vec<String> = rustix::fs::Dir::read_from(&self.fd)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().ok().map(str::to_owned))
            .filter(|n| n != "." && n != ".." && !keep.contains(&n.as_str()))
            .collect();
        for name in names {
            match unlinkat(&self.fd, name.as_str(), AtFlags::empty()) {
                Ok(()) => {}
                Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {
                    let fd = openat(
                        &self.fd,
                        name.as_str(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    let inner = Folder::of(fd, self.shown.join(&name))?;
                    inner.clear(&[])?;
                    let st =
                        rustix::fs::statat(&self.fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
                    if (st.st_dev, st.st_ino) == (inner.dev, inner.ino) {
                        unlinkat(&self.fd, name.as_str(), AtFlags::REMOVEDIR)?;
                    }
                }
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The last `max` bytes of a file as text, and whether earlier bytes were left out: a log a
/// member can grow to any size is never read whole.
pub fn read_tail(mut f: File, max: u64) -> io::Result<(String, bool)> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata()?.len();
    let cut = len > max;
    if cut {
        f.seek(SeekFrom::Start(len - max))?;
    }
    // Sized to what is there (never above `max`): `Take` gives `read_to_end` no size hint, so an
    // empty buffer grew from 32 bytes, a read each doubling (ten for a small CRIU log).
    let mut data = Vec::with_capacity(len.min(max) as usize + 1);
    f.take(max).read_to_end(&mut data)?;
    Ok((String::from_utf8_lossy(&data).into_owned(), cut))
}

/// Most of a log ckptd reads back (CRIU's, runc's): the tail of a longer one.
pub const MAX_LOG_READ: u64 = 4 << 20;

/// One process, by pid and start time (clock ticks after boot, /proc/PID/stat): a pid reused by
/// another process later is not the same task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskId {
    pub pid: i32,
    pub start: u64,
}

impl TaskId {
    /// The process now at `pid`, if any (zombies included).
    pub fn of(pid: i32) -> Option<TaskId> {
        let st = stat_of(pid)?;
        Some(TaskId {
            pid,
            start: st.starttime,
        })
    }

    /// Whether `pid` still names this very process.
    pub fn alive(&self) -> bool {
        TaskId::of(self.pid)
            .is_some_and(|t| t == *self && !proc_stat(self.pid).is_some_and(|s| s.is_zombie()))
    }

    /// Sends `sig` to this process only: through a pidfd opened first and checked against the
    /// start time, so a pid reused by another process (root's, say) is never signalled.
    pub fn signal(&self, sig: rustix::process::Signal) -> io::Result<()> {
        rustix::process::pidfd_send_signal(&self.pidfd()?, sig).map_err(io::Error::from)
    }

    /// A pidfd of this very process: opened first, then checked against the start time, so it
    /// never names a process that took the pid since.
    pub fn pidfd(&self) -> io::Result<OwnedFd> {
        let pid = rustix::process::Pid::from_raw(self.pid)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        if TaskId::of(self.pid) != Some(*self) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("pid {} is now another process", self.pid),
            ));
        }
        Ok(fd)
    }
}

/// The tree below `root` as the kernel has it now, if `root` is still that process: every task
/// whose state is `state` (e.g. 'T', what a dump left stopped) and, given `uid`, that runs as
/// it. Never read from images, which a member can write.
pub fn tree_in_state(root: TaskId, state: char, uid: Option<u32>) -> Vec<TaskId> {
    tree_where(root, uid, |s| s == state)
}

/// The live tasks (not zombies) of the tree at `root` (of `uid`), whatever their state: what a
/// dump without leave_running left to end. Not only those stopped already: CRIU detaches with a
/// SIGSTOP that a task takes when it next runs, so on a busy machine a task of the tree can
/// still be runnable when the dump returns, and would be left stopped for good if it were not
/// listed.
pub fn live_tree(root: TaskId, uid: Option<u32>) -> Vec<TaskId> {
    tree_where(root, uid, |s| !matches!(s, 'Z' | 'X' | 'x'))
}

fn tree_where(root: TaskId, uid: Option<u32>, state: impl Fn(char) -> bool) -> Vec<TaskId> {
    if !root.alive() {
        return Vec::new();
    }
    process_tree(root.pid)
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|s| state(s.state)))
        .filter(|&p| {
            uid.is_none_or(|u| {
                procfs::process::Process::new(p)
                    .and_then(|p| p.uid())
                    .is_ok_and(|x| x == u)
            })
        })
        .filter_map(TaskId::of)
        .collect()
}

/// Whether `path` (not followed if a symlink) is a mount point: its mount differs from its
/// parent's. (A bind mount from the same filesystem has the same device, so the device says
/// nothing.) False when it does not exist.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let parent = path.parent().unwrap_or(Path::new("/"));
    let mnt = |p: &Path| {
        statx(CWD, p, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::MNT_ID)
            .map(|s| s.stx_mnt_id)
            .map_err(io::Error::from)
    };
    match mnt(path) {
        Ok(id) => Ok(id != mnt(parent)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Now, in the unit of `TaskId::start` (clock ticks after boot): a task started later has a start
/// at least this.
pub fn boot_ticks() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let now = t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128;
    (now * u128::from(procfs::ticks_per_second()) / 1_000_000_000) as u64
}

/// The live tree at `root` as the kernel has it, each task that started at or after `since` and
/// runs as `uid`: what a restore begun at `since` made there (the pid was free when it began).
/// Zombies are left out: they are already dead.
pub fn newborn_tasks(root: i32, since: u64, uid: u32) -> Vec<TaskId> {
    process_tree(root)
        .into_iter()
        .filter_map(TaskId::of)
        .filter(|t| {
            t.start >= since
                && t.alive()
                && procfs::process::Process::new(t.pid)
                    .and_then(|p| p.uid())
                    .is_ok_and(|u| u == uid)
        })
        .collect()
}

/// Sends `sig` to each task that is still itself (`TaskId::signal`), skipping those gone.
/// Ends the live tree below `root` (only `uid`'s tasks when given): stopped first, so that
/// nothing new is forked between the listing and the kill.
pub fn end_tree(root: TaskId, uid: Option<u32>) {
    signal_tasks(&live_tree(root, uid), rustix::process::Signal::STOP);
    signal_tasks(&live_tree(root, uid), rustix::process::Signal::KILL);
}

pub fn signal_tasks(tasks: &[TaskId], sig: rustix::process::Signal) {
    for t in tasks {
        if let Err(e) = t.signal(sig) {
            tracing::debug!(pid = t.pid, error = %e, "not signalled");
        }
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
        .filter_map(|p| status_numbers(p, ["RssAnon", "RssShmem"]))
        .map(|[anon, shmem]| (anon.unwrap_or(0) + shmem.unwrap_or(0)) * 1024)
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

/// Set on every CRIU and runc ckptd runs over an image directory (which they name only through a
/// descriptor; runc hands it on to its CRIU): the directory's path, so that a daemon restarted
/// after a crash can find them.
pub const IMAGES_ENV: &str = "CKPTD_IMAGES";

/// The most of a process's command line `root_commands` reads (a runtime's are a few hundred
/// bytes).
const CMDLINE_MAX: usize = 8192;

/// Root's processes (real and effective uid 0, which no member's process has) whose command
/// line, split into its arguments (the program first, never empty) and read bounded, `matches`.
/// Each is named with its start time, so a pid reused later is never signalled.
pub fn root_commands(matches: impl Fn(&[&[u8]]) -> bool) -> Vec<TaskId> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let task = TaskId::of(pid)?;
            let status = procfs::process::Process::new(pid).ok()?.status().ok()?;
            if status.ruid != 0 || status.euid != 0 {
                return None;
            }
            let mut buf = [0u8; CMDLINE_MAX];
            let raw = read_proc(pid, "cmdline", &mut buf)?;
            let args: Vec<&[u8]> = raw
                .strip_suffix(&[0])
                .unwrap_or(raw)
                .split(|b| *b == 0)
                .collect();
            (!args[0].is_empty() && matches(&args)).then_some(task)
        })
        .collect()
}

/// Whether `args` hold `flag` followed by `value`.
pub fn has_arg(args: &[&[u8]], flag: &str, value: &[u8]) -> bool {
    args.windows(2)
        .any(|w| w[0] == flag.as_bytes() && w[1] == value)
}

/// Ends the tree below each child of `parent` (still its child once named by its start time:
/// never a pid reused since), leaving `parent` itself.
pub fn end_children(parent: TaskId) {
    if !parent.alive() {
        return;
    }
    for child in children(parent.pid) {
        if let Some(t) =
            TaskId::of(child).filter(|_| proc_stat(child).is_some_and(|s| s.ppid == parent.pid))
        {
            end_tree(t, None);
        }
    }
}

/// The children of process `pid` (of each of its threads).
pub fn children(pid: i32) -> Vec<i32> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.tasks())
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|t| t.children().unwrap_or_default())
        .map(|c| c as i32)
        .collect()
}

/// Whether process `pid` waits for its vfork child to exec or exit: uninterruptible ('D'), in
/// `kernel_clone` (measured on 6.18 with a child stopped before its exec).
pub fn is_vfork_parent(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state == 'D')
        && procfs::process::Process::new(pid)
            .and_then(|p| p.wchan())
            .is_ok_and(|w| w == "kernel_clone")
}

/// `pid` and all its descendants, from /proc/PID/task/TID/children (parents before children).
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        for c in children(out[i]) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        i += 1;
    }
    out
}
/// The pipes the tree at `pid` holds open, by inode: whether it holds the read end, and whether
/// the write end (from each descriptor's link mode, as the kernel sets it).
pub fn tree_pipe_ends(pid: i32) -> std::collections::BTreeMap<u64, (bool, bool)> {
    let mut ends = std::collections::BTreeMap::new();
    for p in process_tree(pid) {
        let Ok(fds) = procfs::process::Process::new(p).and_then(|p| p.fd()) else {
            continue;
        };
        for fd in fds.flatten() {
            if let procfs::process::FDTarget::Pipe(ino) = fd.target {
                let e: &mut (bool, bool) = ends.entry(ino).or_default();
                e.0 |= fd.mode & 0o400 != 0;
                e.1 |= fd.mode & 0o200 != 0;
            }
        }
    }
    ends
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

/// The cgroup of `pid` that [`kill_cgroup`] acts on, under `/sys/fs/cgroup`: never one that
/// holds ckptd itself (its own, the root, or any above its own). A pid that has exited (a
/// zombie, as a container's init is between its death and its reaping) reads as the root of a
/// v1 hierarchy: measured, a kill of it from ckptd ended every process of its pid namespace,
/// ckptd with them. A zombie is refused too, before its cgroup is read.
pub fn killable_cgroup(pid: i32) -> io::Result<KillableCgroup> {
    if proc_stat(pid).is_none_or(|s| s.is_zombie()) {
        return Err(io::Error::other(format!("pid {pid} has exited")));
    }
    let groups = procfs::process::Process::new(pid)
        .and_then(|p| p.cgroups())
        .map_err(io::Error::other)?;
    let mine = procfs::process::Process::myself()
        .and_then(|p| p.cgroups())
        .map_err(io::Error::other)?;
    // Whether `path` (of hierarchy `h`) holds ckptd: it is ckptd's cgroup there or above it.
    let holds_me = |h: u32, path: &str| {
        mine.0
            .iter()
            .filter(|g| g.hierarchy == h)
            .any(|g| Path::new(&g.pathname).starts_with(path))
    };
    let under = |mount: &str, path: &str| {
        Path::new("/sys/fs/cgroup")
            .join(mount)
            .join(path.trim_start_matches('/'))
    };
    let refused = |path: &str| {
        io::Error::other(format!(
            "pid {pid}'s cgroup {path} holds ckptd too; it is not killed as a whole"
        ))
    };
    for g in &groups {
        if g.controllers.iter().any(|c| c == "freezer") {
            if holds_me(g.hierarchy, &g.pathname) {
                return Err(refused(&g.pathname));
            }
            return Ok(KillableCgroup::V1Freezer(under("freezer", &g.pathname)));
        }
    }
    for g in &groups {
        let dir = under("", &g.pathname);
        if g.hierarchy == 0 && dir.join("cgroup.kill").exists() {
            if holds_me(0, &g.pathname) {
                return Err(refused(&g.pathname));
            }
            return Ok(KillableCgroup::V2(dir));
        }
    }
    Err(io::Error::other(format!(
        "pid {pid} is in no freezer cgroup (v1) and no cgroup with cgroup.kill (v2)"
    )))
}

/// Freezes every process of a cgroup (`killable_cgroup`'s) as runc's pause does: v2's
/// `cgroup.freeze`, v1's `freezer.state`, then waits (up to `limit`) until the kernel says it is
/// frozen. For a runtime whose own idea of a container's state went wrong (`ContainerOps::resume`
/// of containerd's: a resume of a container its shim says is paused and runc says is not).
pub fn freeze_cgroup(cg: &KillableCgroup, limit: std::time::Duration) -> io::Result<()> {
    let (file, frozen): (PathBuf, fn(&str) -> bool) = match cg {
        KillableCgroup::V2(dir) => {
            std::fs::write(dir.join("cgroup.freeze"), "1")?;
            (dir.join("cgroup.events"), |events| {
                events.lines().any(|l| l.trim() == "frozen 1")
            })
        }
        KillableCgroup::V1Freezer(dir) => {
            std::fs::write(dir.join("freezer.state"), "FROZEN")?;
            (dir.join("freezer.state"), |state| state.trim() == "FROZEN")
        }
    };
    let deadline = std::time::Instant::now() + limit;
    loop {
        if frozen(&std::fs::read_to_string(&file)?) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "{} did not freeze within {} s",
                file.display(),
                limit.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
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

/// The scheduler slice the threads that serve the API ask for.
const SHORT_SLICE_NS: u64 = 100_000;

/// Asks the kernel for a short scheduler slice for the calling thread (`sched_setattr` with a
/// `sched_runtime` under SCHED_OTHER, Linux 6.12 and later). A woken thread whose slice is shorter
/// than the running task's preempts it (EEVDF's PREEMPT_SHORT) instead of waiting for that task's
/// slice to end, which the scheduler notices at its next tick (4 ms at HZ=250); its share of the
/// CPU stays the same. Reset on fork: the threads and programs this thread starts (CRIU, runc,
/// Podman, the blocking pool) run with the default. Older kernels refuse or ignore it, harmlessly.
pub fn request_short_slice() -> io::Result<()> {
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    const SCHED_FLAG_RESET_ON_FORK: u64 = 1;
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: SCHED_FLAG_RESET_ON_FORK,
        nice: 0,
        priority: 0,
        runtime: SHORT_SLICE_NS,
        deadline: 0,
        period: 0,
    };
    // SAFETY: a valid, fully initialized sched_attr of the size it declares; pid 0 is this thread.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Both ways of making a folder durable see the same files (a group's members' too).
    #[test]
    fn a_folder_is_made_durable_file_by_file_or_by_its_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cp");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("pages-1.img"), vec![7u8; 10_000]).unwrap();
        std::fs::create_dir(dir.join("0")).unwrap();
        std::fs::write(dir.join("0").join("core-1.img"), [1u8; 24]).unwrap();
        let folder = super::Folder::at(&dir).unwrap();
        assert_eq!(folder.fsync_all_by(|_| false).unwrap(), 10_024);
        assert_eq!(folder.fsync_all_by(|_| true).unwrap(), 10_024);
        assert_eq!(folder.fsync_all().unwrap(), 10_024);
        // Whose syncfs is vouched for: a local filesystem (ext4 or tmpfs here), never procfs.
        assert!(super::syncfs_is_whole(&folder.fd));
        let proc = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(!super::syncfs_is_whole(&proc.into()));
        // Nothing waits to be written beyond what a machine could hold: ours.
        assert!(super::writeback_is_ours(u64::MAX));
    }

    /// The slice is the calling thread's alone: a program it starts runs with the default.
    #[test]
    fn a_short_slice_is_the_threads_and_not_its_childrens() {
        let slice = |sched: &str| {
            sched
                .lines()
                .find_map(|l| l.strip_prefix("se.slice"))
                .and_then(|v| v.trim_start_matches([' ', ':']).trim().parse::<u64>().ok())
                .expect("se.slice in /proc/.../sched")
        };
        std::thread::spawn(move || {
            request_short_slice().expect("sched_setattr (Linux 6.12 or later)");
            let own = std::fs::read_to_string("/proc/thread-self/sched").unwrap();
            assert_eq!(slice(&own), SHORT_SLICE_NS);
            let child = std::process::Command::new("cat")
                .arg("/proc/self/sched")
                .output()
                .unwrap();
            assert_ne!(
                slice(&String::from_utf8_lossy(&child.stdout)),
                SHORT_SLICE_NS
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_cgroup_that_holds_ckptd_is_never_killable() {
        // Its own cgroup, and a child's in it, hold the caller: refused (in a root cgroup, as
        // the root of every hierarchy).
        assert!(super::killable_cgroup(std::process::id() as i32).is_err());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let refused = super::killable_cgroup(child.id() as i32);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(refused.is_err(), "{refused:?}");
        // An exited one too.
        assert!(super::killable_cgroup(child.id() as i32).is_err());
    }

    use super::*;

    #[test]
    fn mount_points_are_told_by_their_mount_not_their_device() {
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        let d = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(d.path()).unwrap());
        assert!(!is_mount_point(&d.path().join("absent")).unwrap());
    }

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
        assert!(is_self_or_ancestor(me.pid) && is_self_or_ancestor(me.ppid));
        assert!(!is_self_or_ancestor(2), "kthreadd is no ancestor");
    }

    #[test]
    fn a_threads_tgid_is_its_process() {
        let me = std::process::id() as i32;
        assert_eq!(tgid(me), Some(me));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = stopped.recv();
        });
        let live = rx.recv().unwrap();
        assert_ne!(live, me);
        assert_eq!(tgid(live), Some(me));
        stop.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(tgid(i32::MAX), None);
    }

    #[test]
    fn status_numbers_agree_with_procfs() {
        for pid in [std::process::id() as i32, 1, 2] {
            let st = procfs::process::Process::new(pid)
                .unwrap()
                .status()
                .unwrap();
            let [tgid, anon, shmem] = status_numbers(pid, ["Tgid", "RssAnon", "RssShmem"]).unwrap();
            assert_eq!(tgid, Some(st.tgid as u64));
            // A kernel thread has no memory lines; a process's move between the two reads.
            assert_eq!(anon.is_some(), st.rssanon.is_some());
            assert_eq!(shmem.is_some(), st.rssshmem.is_some());
        }
        assert!(status_numbers(i32::MAX, ["Tgid"]).is_none());
    }

    #[test]
    fn read_tail_gives_the_last_max_bytes_and_says_when_it_cut() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        let text: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        let (all, cut) = read_tail(File::open(&p).unwrap(), 1 << 20).unwrap();
        assert_eq!((all.as_str(), cut), (text.as_str(), false));
        let (tail, cut) = read_tail(File::open(&p).unwrap(), 100).unwrap();
        assert_eq!((tail.as_str(), cut), (&text[text.len() - 100..], true));
        std::fs::write(&p, "").unwrap();
        assert_eq!(
            read_tail(File::open(&p).unwrap(), 100).unwrap(),
            (String::new(), false)
        );
    }

    #[test]
    fn stat_of_agrees_with_procfs_even_for_a_name_with_parentheses_and_spaces() {
        // A program whose name (the kernel's `comm`) looks like the end of the field.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("x) (y z");
        std::fs::copy("/bin/sleep", &odd).unwrap();
        let mut child = std::process::Command::new(&odd).arg("60").spawn().unwrap();
        let pid = child.id() as i32;
        for _ in 0..200 {
            if stat_of(pid).is_some_and(|s| s.comm == "x) (y z") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for p in [std::process::id() as i32, 1, 2, pid] {
            let ours = stat_of(p).unwrap();
            let theirs = procfs::process::Process::new(p).unwrap().stat().unwrap();
            assert_eq!(
                (ours.pid, &ours.comm, ours.ppid, ours.starttime, ours.tty_nr),
                (
                    theirs.pid,
                    &theirs.comm,
                    theirs.ppid,
                    theirs.starttime,
                    theirs.tty_nr
                )
            );
        }
        assert_eq!(stat_of(pid).unwrap().comm, "x) (y z");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(stat_of(i32::MAX).is_none());
    }

    #[test]
    fn a_child_descends_from_its_parent_and_not_the_other_way() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let (me, pid) = (std::process::id() as i32, child.id() as i32);
        assert!(descends_from(pid, me));
        assert!(!descends_from(me, pid));
        assert!(!descends_from(me, me), "a process is not below itself");
        assert!(descends_from(me, 1));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!descends_from(pid, me), "a reaped child is gone");
    }

    /// The walk that stops at the daemon's first ancestor met gives what the whole walk gives:
    /// a child and a grandchild are below, an orphan adopted above, this process itself and
    /// its ancestors are not.
    #[test]
    fn below_self_is_told_by_the_first_ancestor_met() {
        use std::io::BufRead;
        let mut sh = std::process::Command::new("sh")
            .args([
                "-c",
                "sleep 60 & echo $!; (setsid sleep 61 & echo $!); wait",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(sh.stdout.take().unwrap()).lines();
        let mut pid = || lines.next().unwrap().unwrap().parse::<i32>().unwrap();
        let (grandchild, orphan) = (pid(), pid());
        let me = std::process::id() as i32;
        // The orphan's subshell has ended once it is reparented.
        let parent = |p: i32| stat_of(p).unwrap().ppid;
        for _ in 0..200 {
            if !descends_from(orphan, me) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(is_below_self(sh.id() as i32) && descends_from(sh.id() as i32, me));
        assert!(is_below_self(grandchild) && descends_from(grandchild, me));
        assert!(!descends_from(orphan, me), "adopted by {}", parent(orphan));
        assert!(!is_below_self(orphan), "adopted by {}", parent(orphan));
        assert!(!is_below_self(me) && !is_below_self(1));
        assert!(!is_below_self(parent(me)));
        assert!(!is_below_self(i32::MAX), "no such process");
        for p in [grandchild, orphan] {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        sh.wait().unwrap();
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
