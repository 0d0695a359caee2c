//! Reads the few CRIU image files ckptd needs: `stats-dump` (CRIU's timing statistics) and
//! `pstree.img` (every pid of the dumped tree). A CRIU image is two 32-bit magics followed by
//! entries, each a little-endian u32 length and a protobuf message, decoded with `prost` from
//! the messages below (the fields ckptd reads of CRIU's `stats.proto` and `pstree.proto`; prost
//! skips the others, which keeps it forward compatible).

use std::path::Path;

use ckptd_api::DumpStats;
use prost::Message;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid CRIU image: {why}")]
    Corrupt { path: String, why: String },
}

/// CRIU's `stats_entry` (stats.proto).
#[derive(Clone, PartialEq, Message)]
struct StatsEntry {
    #[prost(message, optional, tag = "1")]
    dump: Option<DumpStatsEntry>,
}

/// CRIU's `dump_stats_entry`: times in microseconds.
#[derive(Clone, PartialEq, Message)]
struct DumpStatsEntry {
    #[prost(uint64, tag = "1")]
    freezing_time: u64,
    #[prost(uint64, tag = "2")]
    frozen_time: u64,
    #[prost(uint64, tag = "3")]
    memdump_time: u64,
    #[prost(uint64, tag = "4")]
    memwrite_time: u64,
    #[prost(uint64, tag = "7")]
    pages_written: u64,
}

/// CRIU's `pstree_entry` (pstree.proto).
#[derive(Clone, PartialEq, Message)]
struct PstreeEntry {
    #[prost(uint32, tag = "1")]
    pid: u32,
    #[prost(uint32, tag = "2")]
    ppid: u32,
    #[prost(uint32, repeated, tag = "5")]
    threads: Vec<u32>,
}

/// The most of one metadata image (pstree, core, files, stats) ckptd reads.
const MAX_IMAGE_READ: u64 = 64 << 20;

/// The entries of an image, each decoded as `M`.
fn read_entries<M: Message + Default>(path: &Path) -> Result<Vec<M>, ImageError> {
    let data = read_image(path)?;
    entries(path, &data)?
        .into_iter()
        .map(|e| M::decode(e).map_err(|e| corrupt(path, e.to_string())))
        .collect()
}

fn corrupt(path: &Path, why: String) -> ImageError {
    ImageError::Corrupt {
        path: path.display().to_string(),
        why,
    }
}

/// The whole of an image file, at most `MAX_IMAGE_READ` bytes.
fn read_image(path: &Path) -> Result<Vec<u8>, ImageError> {
    // Not followed through a symlink, nor blocked on a FIFO: an owner's images are its own.
    // Bounded: a member can grow its own images to any size. In a member's folder, only the
    // member's own files (a hard link to another's is refused).
    crate::sys::open_regular(path)
        .and_then(|f| {
            use std::os::unix::fs::MetadataExt;
            let folder = path.parent().map(std::fs::metadata).transpose()?;
            let uid = f.metadata()?.uid();
            if let Some(owner) = folder.map(|m| m.uid()).filter(|o| *o != 0 && *o != uid) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("it belongs to uid {uid}, not to the folder's owner (uid {owner})"),
                ));
            }
            let mut d = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_IMAGE_READ + 1), &mut d)?;
            if d.len() as u64 > MAX_IMAGE_READ {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!(
                        "larger than the {} MiB ckptd reads of an image",
                        MAX_IMAGE_READ >> 20
                    ),
                ));
            }
            Ok(d)
        })
        .map_err(|source| ImageError::Read {
            path: path.display().to_string(),
            source,
        })
}

/// The entries of an image's bytes (after its two magics), each still encoded.
fn entries<'a>(path: &Path, data: &'a [u8]) -> Result<Vec<&'a [u8]>, ImageError> {
    let mut rest = data
        .get(8..)
        .ok_or_else(|| corrupt(path, "shorter than its magic".into()))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (size, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt(path, "truncated entry size".into()))?;
        let len = u32::from_le_bytes(*size) as usize;
        let entry = tail
            .get(..len)
            .ok_or_else(|| corrupt(path, "truncated entry".into()))?;
        out.push(entry);
        rest = &tail[len..];
    }
    Ok(out)
}

/// CRIU's dump statistics (StatsEntry.dump, a DumpStatsEntry).
pub fn read_dump_stats(images: &Path) -> Result<DumpStats, ImageError> {
    let path = images.join("stats-dump");
    let corrupt = |why: &str| ImageError::Corrupt {
        path: path.display().to_string(),
        why: why.into(),
    };
    let entries: Vec<StatsEntry> = read_entries(&path)?;
    let entry = entries
        .into_iter()
        .next()
        .ok_or_else(|| corrupt("no entry"))?;
    let d = entry.dump.ok_or_else(|| corrupt("no dump statistics"))?;
    Ok(DumpStats {
        freezing_time_us: d.freezing_time,
        frozen_time_us: d.frozen_time,
        memdump_time_us: d.memdump_time,
        memwrite_time_us: d.memwrite_time,
        pages_written: d.pages_written,
    })
}

/// Whether `images` holds what a restore needs: inventory.img, a pstree.img naming the tree, and
/// for every process its core, mm and pagemap images (and a core image for every thread). Says
/// which file is missing; a directory that passes can still fail in CRIU, but not for want of
/// a whole kind of image.
/// `check_restorable` of a checkpoint's images: its own, or each of its `members`' folders
/// (`<images>/<index>`) for a group's.
pub fn check_checkpoint_restorable(images: &Path, members: usize) -> Result<(), ImageError> {
    if members == 0 {
        return check_restorable(images);
    }
    (0..members).try_for_each(|i| check_restorable(&images.join(i.to_string())))
}

pub fn check_restorable(images: &Path) -> Result<(), ImageError> {
    let missing = |name: String| ImageError::Corrupt {
        path: images.join(&name).display().to_string(),
        why: "missing: the images are not a whole checkpoint".into(),
    };
    if !images.join("inventory.img").is_file() {
        return Err(missing("inventory.img".into()));
    }
    let path = images.join("pstree.img");
    let entries = read_entries::<PstreeEntry>(&path)?;
    if entries.is_empty() {
        return Err(ImageError::Corrupt {
            path: path.display().to_string(),
            why: "no process in the tree".into(),
        });
    }
    let mut with_memory = Vec::new();
    for e in entries {
        let core = format!("core-{}.img", e.pid);
        if !images.join(&core).is_file() {
            return Err(missing(core));
        }
        // A zombie (a child that had exited and was not reaped yet) has a core image and no
        // memory: CRIU writes neither mm nor pagemap for it.
        let dead = read_entries::<CoreEntry>(&images.join(&core))?
            .first()
            .and_then(|c| c.tc.as_ref())
            .is_some_and(|tc| tc.task_state == TASK_DEAD);
        if dead {
            continue;
        }
        for kind in ["mm", "pagemap"] {
            let name = format!("{kind}-{}.img", e.pid);
            if !images.join(&name).is_file() {
                return Err(missing(name));
            }
        }
        with_memory.push(e.pid);
        for t in e.threads {
            let name = format!("core-{t}.img");
            if !images.join(&name).is_file() {
                return Err(missing(name));
            }
        }
    }
    check_pages(images, &with_memory)
}

/// CRIU's `pagemap_head` (pagemap.proto): the first entry of a pagemap image, naming the pages
/// image (`pages-<pages_id>.img`) its entries' pages are in.
#[derive(Clone, PartialEq, Message)]
struct PagemapHead {
    #[prost(uint32, tag = "1")]
    pages_id: u32,
}

/// CRIU's `pagemap_entry`: a run of pages at `vaddr`. Older images have no `flags` and no
/// `nr_pages` (only `in_parent` and `compat_nr_pages`); read as CRIU reads them
/// (`init_compat_pagemap_entry` in pagemap.c).
#[derive(Clone, PartialEq, Message)]
struct PagemapEntry {
    #[prost(uint32, tag = "2")]
    compat_nr_pages: u32,
    #[prost(bool, optional, tag = "3")]
    in_parent: Option<bool>,
    #[prost(uint32, optional, tag = "4")]
    flags: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    nr_pages: Option<u64>,
}

/// CRIU's PE_PRESENT (pagemap.h): the entry's pages are in the pages image, one after another
/// in the entries' order. Pages in a parent (PE_PARENT) or served lazily (PE_LAZY alone) are not.
const PE_PRESENT: u32 = 1 << 2;

impl PagemapEntry {
    /// How many of its pages the pages image holds.
    fn present_pages(&self) -> u64 {
        // An entry in the parent keeps the flags it has (none in older images); one without
        // flags is present.
        let flags = match (self.in_parent, self.flags) {
            (Some(true), f) => f.unwrap_or(0),
            (_, None) => PE_PRESENT,
            (_, Some(f)) => f,
        };
        if flags & PE_PRESENT == 0 {
            return 0;
        }
        self.nr_pages.unwrap_or(u64::from(self.compat_nr_pages))
    }
}

/// Whether the pages image of each of the tree's processes `pids` (`pagemap-<pid>.img` names
/// it) is exactly as long as the pages its pagemap marks present, a page each. CRIU's restore
/// does not stop at the end of a short pages image: its restorer reads the pages with `preadv`
/// until every one is read, and a read at the end of the file returns 0 and advances nothing
/// (`restorer.c`), so the half-restored task spins at full CPU for good and CRIU waits for it
/// (seen with CRIU 4.2.1 here: a `pages-1.img` cut to 0 bytes, 14 minutes at 98% CPU until
/// killed). A cut image is refused before CRIU.
///
/// Only the tree's own pagemaps count: a folder may hold others that CRIU does not read (Podman
/// exports a container's earlier checkpoint's images with the new ones, whose pages ids they
/// share). Shared memory's pagemaps (`pagemap-shmem-<id>.img`, named from the mm images) are not
/// checked: CRIU reads those pages itself and fails on a short read.
pub fn check_pages(images: &Path, pids: &[u32]) -> Result<(), ImageError> {
    let page = rustix::param::page_size() as u64;
    // Bytes each pages image should hold, and which pagemap named it first.
    let mut expected: std::collections::BTreeMap<u32, (u64, String)> = Default::default();
    // A few KiB each: bounded together as one image is (a member writes its own images).
    let mut read = 0u64;
    for pid in pids {
        let name = format!("pagemap-{pid}.img");
        let path = images.join(&name);
        let data = read_image(&path)?;
        read += data.len() as u64;
        if read > MAX_IMAGE_READ {
            return Err(corrupt(
                &path,
                format!(
                    "the tree's pagemaps together are larger than the {} MiB ckptd reads of them",
                    MAX_IMAGE_READ >> 20
                ),
            ));
        }
        let mut es = entries(&path, &data)?.into_iter();
        let head = es
            .next()
            .ok_or_else(|| corrupt(&path, "no pagemap head".into()))?;
        let head = PagemapHead::decode(head).map_err(|e| corrupt(&path, e.to_string()))?;
        let mut pages = 0u64;
        for e in es {
            let e = PagemapEntry::decode(e).map_err(|e| corrupt(&path, e.to_string()))?;
            pages = pages.saturating_add(e.present_pages());
        }
        let slot = expected.entry(head.pages_id).or_insert_with(|| (0, name));
        slot.0 = slot.0.saturating_add(pages.saturating_mul(page));
    }
    for (id, (bytes, named_by)) in expected {
        let name = format!("pages-{id}.img");
        let path = images.join(&name);
        let held = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => return Err(corrupt(&path, "not a regular file".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && bytes == 0 => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt(
                    &path,
                    format!("missing, where {named_by} names {bytes} bytes of pages in it"),
                ))
            }
            Err(source) => {
                return Err(ImageError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        if held != bytes {
            return Err(corrupt(
                &path,
                format!(
                    "it holds {held} bytes where {named_by} names {bytes} bytes of pages (the \
                     file was cut short or written to since the dump)"
                ),
            ));
        }
    }
    Ok(())
}

/// The part of CRIU's `core_entry` (core.proto) read here: the task's state.
#[derive(Clone, PartialEq, prost::Message)]
struct CoreEntry {
    #[prost(message, optional, tag = "3")]
    tc: Option<TaskCoreEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TaskCoreEntry {
    #[prost(uint32, tag = "1")]
    task_state: u32,
    #[prost(string, tag = "6")]
    comm: String,
}

/// CRIU's TASK_DEAD (compel's task-state.h): a zombie.
const TASK_DEAD: u32 = 2;

/// The dumped tree's processes, root first, as `checkpointctl inspect --ps-tree` shows them: pid,
/// parent, command (the kernel's 16-byte `comm`), threads, and whether it was a zombie.
pub fn read_processes(images: &Path) -> Result<Vec<ckptd_api::CheckpointProcess>, ImageError> {
    let path = images.join("pstree.img");
    let mut out = Vec::new();
    for e in read_entries::<PstreeEntry>(&path)? {
        let tc = read_entries::<CoreEntry>(&images.join(format!("core-{}.img", e.pid)))?
            .into_iter()
            .next()
            .and_then(|c| c.tc);
        out.push(ckptd_api::CheckpointProcess {
            pid: e.pid as i32,
            ppid: e.ppid as i32,
            command: tc.as_ref().map(|t| t.comm.clone()).unwrap_or_default(),
            threads: e.threads.len().max(1) as u32,
            zombie: tc.is_some_and(|t| t.task_state == TASK_DEAD),
        });
    }
    Ok(out)
}

/// CRIU's `file_entry` (fdinfo.proto): the regular files of `files.img`.
#[derive(Clone, PartialEq, Message)]
struct FileEntry {
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(message, optional, tag = "3")]
    reg: Option<RegFileEntry>,
}

/// CRIU's `reg_file_entry` (regfile.proto).
#[derive(Clone, PartialEq, Message)]
struct RegFileEntry {
    #[prost(uint32, tag = "2")]
    flags: u32,
    #[prost(string, tag = "6")]
    name: String,
    #[prost(uint64, optional, tag = "8")]
    size: Option<u64>,
}

/// The regular files the dumped tree had open for writing, with the size CRIU recorded (none
/// for a file open write-only with O_APPEND, a log, whose size CRIU does not check): the files
/// a restore elsewhere must find as they were (paths as the tree saw them, absolute).
pub fn written_files(images: &Path) -> Result<Vec<(String, Option<u64>)>, ImageError> {
    const REG: u32 = 1;
    let path = images.join("files.img");
    let mut out: Vec<(String, Option<u64>)> = Vec::new();
    for e in read_entries::<FileEntry>(&path)? {
        let Some(r) = e.reg.filter(|_| e.kind == REG) else {
            continue;
        };
        let writable = r.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32;
        if writable && r.name.starts_with('/') && !out.iter().any(|(n, _)| *n == r.name) {
            out.push((r.name, r.size));
        }
    }
    Ok(out)
}

/// Every pid and thread id of the dumped tree, root first.
pub fn read_tree_pids(images: &Path) -> Result<Vec<i32>, ImageError> {
    let path = images.join("pstree.img");
    let mut pids = Vec::new();
    for entry in read_entries::<PstreeEntry>(&path)? {
        for pid in std::iter::once(entry.pid).chain(entry.threads) {
            let pid = pid as i32;
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    if pids.is_empty() {
        return Err(ImageError::Corrupt {
            path: path.display().to_string(),
            why: "no process in the tree".into(),
        });
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bytes of a real stats-dump and pstree.img written by CRIU 4.2.1 on this project's machine.
    const STATS: &[u8] = &[
        0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x22, 0x00, 0x00, 0x00, 0x0a, 0x20, 0x08,
        0xbc, 0x36, 0x10, 0xd7, 0x62, 0x18, 0xe6, 0x0a, 0x20, 0x88, 0x03, 0x28, 0x6a, 0x30, 0x00,
        0x38, 0x3e, 0x40, 0x00, 0x48, 0x00, 0x50, 0x0c, 0x58, 0x0c, 0x60, 0x00, 0x68, 0x00, 0x70,
        0x00,
    ];
    const PSTREE: &[u8] = &[
        0x19, 0x43, 0x56, 0x54, 0x30, 0x30, 0x27, 0x50, 0x0e, 0x00, 0x00, 0x00, 0x08, 0xe6, 0x33,
        0x10, 0x00, 0x18, 0xe6, 0x33, 0x20, 0xe6, 0x33, 0x28, 0xe6, 0x33, 0x0f, 0x00, 0x00, 0x00,
        0x08, 0xa7, 0x34, 0x10, 0xe6, 0x33, 0x18, 0xe6, 0x33, 0x20, 0xe6, 0x33, 0x28, 0xa7, 0x34,
    ];

    #[test]
    fn reads_real_stats_dump() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("stats-dump"), STATS).unwrap();
        let s = read_dump_stats(d.path()).unwrap();
        assert_eq!(s.freezing_time_us, 6972);
        assert_eq!(s.frozen_time_us, 12631);
        assert_eq!(s.memdump_time_us, 1382);
        assert_eq!(s.memwrite_time_us, 392);
        assert_eq!(s.pages_written, 62);
    }

    #[test]
    fn reads_real_pstree() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pstree.img"), PSTREE).unwrap();
        assert_eq!(read_tree_pids(d.path()).unwrap(), vec![6630, 6695]);
    }

    /// An image file of `entries` (a magic's 8 bytes first, then each entry's length and bytes).
    fn write_image(path: &Path, entries: &[Vec<u8>]) {
        let mut data = vec![0u8; 8];
        for e in entries {
            data.extend((e.len() as u32).to_le_bytes());
            data.extend(e);
        }
        std::fs::write(path, data).unwrap();
    }

    fn pagemap(pages_id: u32, entries: &[PagemapEntry]) -> Vec<Vec<u8>> {
        std::iter::once(PagemapHead { pages_id }.encode_to_vec())
            .chain(entries.iter().map(Message::encode_to_vec))
            .collect()
    }

    fn run(nr: u64, flags: Option<u32>) -> PagemapEntry {
        PagemapEntry {
            compat_nr_pages: nr as u32,
            in_parent: None,
            flags,
            nr_pages: Some(nr),
        }
    }

    #[test]
    fn pages_images_must_hold_what_their_pagemaps_name() {
        const PE_PARENT: u32 = 1;
        const PE_LAZY: u32 = 2;
        let page = rustix::param::page_size();
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        // A process's pagemap: present runs, a run in the parent, a lazy run (not in the file),
        // and an entry of an older CRIU (no flags: present; in_parent: not).
        write_image(
            &dir.join("pagemap-10.img"),
            &pagemap(
                1,
                &[
                    run(3, Some(PE_PRESENT)),
                    run(5, Some(PE_PARENT)),
                    run(7, Some(PE_LAZY)),
                    run(2, Some(PE_PRESENT | PE_LAZY)),
                    PagemapEntry {
                        compat_nr_pages: 4,
                        in_parent: None,
                        flags: None,
                        nr_pages: None,
                    },
                    PagemapEntry {
                        compat_nr_pages: 6,
                        in_parent: Some(true),
                        flags: None,
                        nr_pages: None,
                    },
                ],
            ),
        );
        // Another process's pagemap, its own pages image.
        write_image(
            &dir.join("pagemap-12.img"),
            &pagemap(2, &[run(1, Some(PE_PRESENT))]),
        );
        // A pagemap with nothing present needs no pages image.
        write_image(
            &dir.join("pagemap-11.img"),
            &pagemap(3, &[run(9, Some(PE_LAZY))]),
        );
        // A pagemap of a process not in the tree (an earlier dump's, which Podman exports along)
        // sharing a pages id is not read.
        write_image(
            &dir.join("pagemap-99.img"),
            &pagemap(1, &[run(50, Some(PE_PRESENT))]),
        );
        let tree = [10, 11, 12];
        std::fs::write(dir.join("pages-1.img"), vec![0u8; 9 * page]).unwrap();
        std::fs::write(dir.join("pages-2.img"), vec![0u8; page]).unwrap();
        check_pages(dir, &tree).unwrap();

        for (len, said) in [
            (0, "holds 0 bytes where pagemap-10.img names 36864 bytes"),
            (9 * page - 1, "holds 36863 bytes"),
            (9 * page + 1, "holds 36865 bytes"),
        ] {
            std::fs::write(dir.join("pages-1.img"), vec![0u8; len]).unwrap();
            let e = check_pages(dir, &tree).unwrap_err().to_string();
            assert!(e.contains("pages-1.img") && e.contains(said), "{len}: {e}");
        }
        std::fs::write(dir.join("pages-1.img"), vec![0u8; 9 * page]).unwrap();
        std::fs::remove_file(dir.join("pages-2.img")).unwrap();
        let e = check_pages(dir, &tree).unwrap_err().to_string();
        assert!(
            e.contains("pages-2.img") && e.contains("missing") && e.contains("pagemap-12.img"),
            "{e}"
        );
        std::os::unix::fs::symlink(dir.join("pages-1.img"), dir.join("pages-2.img")).unwrap();
        let e = check_pages(dir, &tree).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_file(dir.join("pages-2.img")).unwrap();
        std::fs::write(dir.join("pages-2.img"), vec![0u8; page]).unwrap();
        // A pagemap that is not one, or is not there.
        std::fs::write(dir.join("pagemap-13.img"), [0u8; 4]).unwrap();
        let e = check_pages(dir, &[10, 13]).unwrap_err().to_string();
        assert!(e.contains("pagemap-13.img") && e.contains("magic"), "{e}");
        let e = check_pages(dir, &[10, 14]).unwrap_err().to_string();
        assert!(e.contains("pagemap-14.img"), "{e}");
    }

    #[test]
    fn truncated_image_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        for n in 0..STATS.len() {
            std::fs::write(d.path().join("stats-dump"), &STATS[..n]).unwrap();
            let _ = read_dump_stats(d.path());
        }
        std::fs::write(d.path().join("stats-dump"), &STATS[..20]).unwrap();
        assert!(read_dump_stats(d.path()).is_err());
    }
}
