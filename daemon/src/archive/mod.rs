//! Checkpoint archives: a tar stream of a checkpoint's files with `manifest.json` last, whole
//! compressed with zstd (multi-threaded), gzip, or not at all.
//!
//! Layout: every regular file of the checkpoint directory at the archive's top level (CRIU and
//! runc image directories are flat; a group's members' files under `<index>/`), then
//! `manifest.json`: what the checkpoint is (target,
//! options, labels, container record, statistics), where it was taken (CRIU version, kernel,
//! architecture) and the size and sha256 of every file. The manifest comes last so that both
//! sides work in one pass: the exporter hashes while it streams each file, the importer hashes
//! while it writes each file, then compares.
//!
//! Import is hostile-input parsing: only regular files with a plain name (no `/`, no `..`, not
//! absolute, no NUL; or `<index>/<plain name>` for a group's member, in a folder the importer
//! makes) are accepted, each created new (`O_EXCL | O_NOFOLLOW`, mode 0600) in a
//! private staging directory; links, devices, FIFOs and directories are refused; a byte limit
//! applies to what is written; duplicates are refused; the file set must equal the manifest's
//! exactly, size and sha256 included. The caller removes the staging directory on any error.

use std::collections::{BTreeMap, BTreeSet};

pub use ckptd_api::Compression;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::{DateTime, Utc};
use ckptd_api::{CheckpointOptions, ContainerRecord, DumpStats, Target};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

pub mod container;
pub mod kubernetes;

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT: &str = "ckptd-archive/1";
/// Most files an archive may hold (a CRIU image directory has a few per process).
const MAX_FILES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    pub target: Target,
    pub options: CheckpointOptions,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub criu_version: Option<String>,
    #[serde(default)]
    pub container: Option<ContainerRecord>,
    #[serde(default)]
    pub stats: Option<DumpStats>,
    /// An imported container checkpoint archive's origin, carried along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ckptd_api::Origin>,
    pub kernel: String,
    pub arch: String,
    pub ckptd_version: String,
    pub files: Vec<FileEntry>,
    /// A group checkpoint's members; their files are listed as `<index>/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<ckptd_api::GroupMember>,
}

impl Manifest {
    /// The manifest of a ready checkpoint's archive (`files` is filled in as it is written).
    pub fn of(cp: &ckptd_api::Checkpoint) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            name: cp.name.clone(),
            target: cp.target.clone(),
            options: cp.options,
            labels: cp.labels.clone(),
            created_at: cp.created_at,
            criu_version: cp.criu_version.clone(),
            container: cp.container.clone(),
            stats: cp.stats,
            origin: cp.origin.clone(),
            kernel: crate::sys::kernel_release(),
            arch: arch(),
            ckptd_version: env!("CARGO_PKG_VERSION").into(),
            files: vec![],
            members: cp.members.clone(),
        }
    }
}

/// A group member's file in an archive, `<index>/<plain name>` (index below the group's
/// largest size, written as Rust writes it: `0`, never `00`): its index and name.
pub fn member_file(entry: &str) -> Option<(usize, &str)> {
    let (index, name) = entry.split_once('/')?;
    let i: usize = index.parse().ok()?;
    (crate::sys::is_member_name(index) && i < ckptd_api::MAX_GROUP_MEMBERS && plain_name(name))
        .then_some((i, name))
}

/// A plain file name: no directory part, no `..`, nothing hidden in it.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name != MANIFEST
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= 255
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    h
}

/// zstd's job size in multi-threaded mode (see `export`).
const JOB_SIZE: u32 = 1 << 20;

/// Writes the archive of `dir` to `out`. `manifest` is completed with the files' list.
pub fn export(
    dir: &Path,
    mut manifest: Manifest,
    compression: Compression,
    out: impl Write,
) -> io::Result<()> {
    compress(compression, out, |w| write_tar(dir, &mut manifest, w))
}

/// Runs `body` writing into `out` through the compressor.
fn compress(
    compression: Compression,
    out: impl Write,
    body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    match compression {
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, 3)?;
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            enc.multithread(threads)?;
            // Bounded memory whatever the checkpoint's size: zstd's default job for level 3 is
            // 8 MiB, and it keeps about two jobs per worker in flight, each with its input and
            // output (~120 MiB on 2 cores, measured); 1 MiB jobs keep it to a few MiB per worker.
            enc.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
            body(&mut enc)?;
            enc.finish()?.flush()
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            body(&mut enc)?;
            enc.finish()?.flush()
        }
        Compression::None => {
            let mut out = out;
            body(&mut out)?;
            out.flush()
        }
    }
}

/// The regular files of `dir` with plain names (not followed through symlinks; CRIU's image
/// directories are flat), sorted.
fn plain_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            if let Some(n) = entry.file_name().to_str().filter(|n| plain_name(n)) {
                names.push(n.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

fn write_tar(dir: &Path, manifest: &mut Manifest, out: &mut dyn Write) -> io::Result<()> {
    let mut entries: Vec<(std::path::PathBuf, String)> = plain_files(dir)?
        .into_iter()
        .map(|n| (dir.join(&n), n))
        .collect();
    // A group's members: each folder opened beneath the checkpoint's without following a
    // symlink (a member's folder is hers), held while its files are read.
    let mut held = Vec::new();
    for i in 0..manifest.members.len() {
        let member = crate::sys::open_subfolder(dir, &i.to_string())?;
        let path = std::path::PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&member)
        ));
        entries.extend(
            plain_files(&path)?
                .into_iter()
                .map(|n| (path.join(&n), format!("{i}/{n}"))),
        );
        held.push(member);
    }
    let mut tar = tar::Builder::new(out);
    manifest.files = append_files(&mut tar, entries)?;
    drop(held);
    let json = serde_json::to_vec_pretty(&*manifest).map_err(io::Error::other)?;
    tar.append_data(&mut header(json.len() as u64), MANIFEST, json.as_slice())?;
    tar.into_inner()?.flush()
}

/// Appends each `(file, path in the archive)`, hashing as it streams; returns what was written,
/// by path in the archive.
fn append_files(
    tar: &mut tar::Builder<&mut dyn Write>,
    entries: Vec<(std::path::PathBuf, String)>,
) -> io::Result<Vec<FileEntry>> {
    let paths: Vec<std::path::PathBuf> = entries.iter().map(|(f, _)| f.clone()).collect();
    // Files are opened, sized and read ahead on a thread of their own, 1 MiB at a time, while
    // this one hashes, tars and feeds the compressor: the overlap `tar | zstd` gets from being
    // two processes (a cold page cache otherwise leaves the compressor waiting on each read).
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(READ_AHEAD_CHUNKS);
    let reading = std::thread::spawn(move || read_ahead(&paths, &tx));
    let mut written = Vec::with_capacity(entries.len());
    for (path, name) in entries {
        let file = path.display().to_string();
        let size = match rx.recv() {
            Ok(Chunk::Start(size)) => size,
            Ok(Chunk::Failed(e)) => return Err(e),
            _ => return Err(io::Error::other("the archive's reader stopped")),
        };
        let mut h = header(size);
        if name.len() > 99 {
            // A name that needs GNU's long-name entry: the tar crate writes it, reading the
            // file's chunks as they come (never the whole file in memory: a member can make a
            // sparse file of any size).
            let mut reader = ChunkReader {
                rx: &rx,
                chunk: Vec::new(),
                at: 0,
                hash: Sha256::new(),
                got: 0,
                size,
                file: &file,
                ended: false,
            };
            tar.append_data(&mut h, &name, &mut reader)?;
            if !reader.ended || reader.got != size {
                return Err(changed(&file));
            }
            let sha256 = format!("{:x}", reader.hash.finalize());
            written.push(FileEntry { name, size, sha256 });
            continue;
        }
        // The header, then each 1 MiB chunk hashed and handed to the compressor whole (tar's
        // own copy goes 8 KiB at a time), then the padding to 512 bytes.
        h.set_path(&name)?;
        h.set_cksum();
        let w = tar.get_mut();
        w.write_all(h.as_bytes())?;
        let mut hash = Sha256::new();
        let mut got: u64 = 0;
        loop {
            match rx.recv() {
                Ok(Chunk::Data(d)) => {
                    got += d.len() as u64;
                    if got > size {
                        return Err(changed(&file));
                    }
                    hash.update(&d);
                    w.write_all(&d)?;
                }
                Ok(Chunk::End) => break,
                Ok(Chunk::Failed(e)) => return Err(e),
                _ => return Err(io::Error::other("the archive's reader stopped")),
            }
        }
        if got != size {
            return Err(changed(&file));
        }
        let pad = (512 - size % 512) % 512;
        w.write_all(&[0u8; 512][..pad as usize])?;
        written.push(FileEntry {
            name,
            size,
            sha256: format!("{:x}", hash.finalize()),
        });
    }
    drop(rx);
    let _ = reading.join();
    Ok(written)
}

/// 1 MiB chunks read ahead of the archiver.
const READ_AHEAD_CHUNKS: usize = 4;
const CHUNK: usize = 1 << 20;

/// What the read-ahead thread sends: per file, its size, its data, its end.
enum Chunk {
    Start(u64),
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

fn read_ahead(paths: &[std::path::PathBuf], tx: &std::sync::mpsc::SyncSender<Chunk>) {
    use std::os::unix::fs::MetadataExt;
    for path in paths {
        let name = path.display();
        let sent = (|| -> io::Result<bool> {
            // In a folder a member owns, only the member's files are read (a hard link to a
            // file the member could not read itself is refused).
            let owner = path
                .parent()
                .and_then(|d| std::fs::metadata(d).ok())
                .map_or(0, |m| m.uid());
            // Not followed through a symlink swapped in since the listing.
            let mut f = crate::sys::open_regular(path)?;
            let uid = f.metadata()?.uid();
            if owner != 0 && uid != owner {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{name} belongs to uid {uid}, not to the folder's owner (uid {owner})"),
                ));
            }
            if tx.send(Chunk::Start(f.metadata()?.len())).is_err() {
                return Ok(false);
            }
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut n = 0;
                while n < CHUNK {
                    match f.read(&mut buf[n..])? {
                        0 => break,
                        k => n += k,
                    }
                }
                if n == 0 {
                    return Ok(tx.send(Chunk::End).is_ok());
                }
                buf.truncate(n);
                if tx.send(Chunk::Data(buf)).is_err() {
                    return Ok(false);
                }
            }
        })();
        match sent {
            Ok(true) => {}
            // The archiver stopped (the client went away): nothing more to read.
            Ok(false) => return,
            Err(e) => {
                let _ = tx.send(Chunk::Failed(e));
                return;
            }
        }
    }
}

fn changed(name: &str) -> io::Error {
    io::Error::other(format!("{name} changed size while it was archived"))
}

/// One file's chunks as a reader, hashed as they are read (for the rare entry the tar crate
/// must write itself): more bytes than the header's size, or fewer, is an error.
struct ChunkReader<'a> {
    rx: &'a std::sync::mpsc::Receiver<Chunk>,
    chunk: Vec<u8>,
    at: usize,
    hash: Sha256,
    got: u64,
    size: u64,
    file: &'a str,
    ended: bool,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Chunk::Data(d)) => {
                    self.got += d.len() as u64;
                    if self.got > self.size {
                        return Err(changed(self.file));
                    }
                    self.hash.update(&d);
                    self.chunk = d;
                    self.at = 0;
                }
                Ok(Chunk::End) if self.got == self.size => self.ended = true,
                Ok(Chunk::End) => return Err(changed(self.file)),
                Ok(Chunk::Failed(e)) => return Err(e),
                _ => return Err(io::Error::other("the archive's reader stopped")),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// What an import produced in the staging directory.
#[derive(Debug)]
pub struct Imported {
    pub manifest: Manifest,
    pub bytes: u64,
}

fn refused(message: impl Into<String>) -> Error {
    Error::invalid(message).with_hint(
        "ckptd imports its own archives (GET /v1/checkpoints/{ref}/archive, `ckpt export`) and \
         container checkpoint archives (`podman container checkpoint --export`, a kubelet's \
         checkpoint, `ckpt export --format podman`), whole and unaltered",
    )
}

/// Counts what is read and fails once `limit` is passed.
struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "the archive is larger than the import limit of {} bytes",
                    self.limit
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn too_large(limit: u64) -> Error {
    Error::new(
        ErrorKind::PayloadTooLarge,
        format!("the archive holds more than the import limit of {limit} bytes"),
    )
    .with_hint("raise import_max_bytes in the daemon's config if this archive is expected")
}

/// Chunks of a streamed archive in flight: a slow reader holds back the archiver, not memory.
const STREAM_CHUNKS: usize = 8;
const STREAM_CHUNK: usize = 256 * 1024;

/// `Write` into a bounded channel of body chunks (blocking: runs on a blocking thread).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(STREAM_CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= STREAM_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Runs `write` (an archiver) on a blocking thread and returns its output as a stream of
/// chunks, for an HTTP body. A failure ends the stream with the error, so that the reader sees
/// a cut-off transfer, never a short archive that looks whole; a reader that goes away stops
/// the archiver.
pub fn stream(
    write: impl FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
) -> tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(STREAM_CHUNK),
        };
        match write(&mut w).and_then(|()| w.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                tracing::warn!("an archive stream was abandoned by its reader")
            }
            Err(e) => {
                tracing::error!(error = %e, "an archive stream failed midway");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    rx
}

/// What the one reader of untrusted archives found, before either layout's rules apply.
struct Unpacked {
    manifest: Option<Manifest>,
    /// Each file by its path in the archive, as staged (at its flat name).
    files: BTreeMap<String, FileEntry>,
    /// Directory entries (container layout only).
    dirs: BTreeSet<String>,
    bytes: u64,
}

/// Reads an archive (compression recognised by its magic bytes) into `staging`, an existing
/// empty private directory: every regular file at its flat name (`container::staged_name`),
/// each created new, no two at the same name. At most `limit` bytes are read from `input` and
/// at most `limit` bytes written. With `hash`, each file's sha256 is taken as it is written
/// (ckptd's own format is verified against its manifest, which comes last); without, its
/// `sha256` is empty (a container archive's files are not listed anywhere to check them
/// against, and hashing 4 GiB costs seconds of CPU while Podman's export runs beside it).
fn unpack(input: impl Read, staging: &Path, limit: u64, hash: bool) -> Result<Unpacked> {
    let io_err = |e: io::Error| -> Error {
        if e.kind() == io::ErrorKind::FileTooLarge {
            too_large(limit)
        } else if e.raw_os_error() == Some(libc::ENOSPC) {
            Error::new(
                ErrorKind::InsufficientStorage,
                "the checkpoints' filesystem filled up during the import",
            )
        } else {
            refused(format!("cannot read the archive: {e}"))
        }
    };
    let mut input = BufReader::with_capacity(
        1 << 20,
        Limited {
            inner: input,
            left: limit,
            limit,
        },
    );
    let magic = input.fill_buf().map_err(io_err)?;
    let reader: Box<dyn Read> = if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(io_err)?)
    } else if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut archive = tar::Archive::new(reader);
    let mut u = Unpacked {
        manifest: None,
        files: BTreeMap::new(),
        dirs: BTreeSet::new(),
        bytes: 0,
    };
    let mut staged: BTreeSet<String> = BTreeSet::new();
    // Large copies: a 4 GiB archive in 8 KiB writes (io::copy's) is half a million calls.
    let mut buf = vec![0u8; 1 << 20];
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let path = entry.path_bytes().into_owned();
        let name = String::from_utf8(path.clone())
            .map_err(|_| refused("an archive entry's name is not UTF-8"))?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Directory {
            match container::directory(&name) {
                Some(d) => {
                    u.dirs.insert(d.to_owned());
                    continue;
                }
                None => {
                    return Err(refused(format!(
                        "the archive holds {name:?}, a directory; only regular files are \
                         accepted, in the directories of Podman's and Kubernetes' layout ({})",
                        container::DIRECTORIES.join("/, ") + "/"
                    )))
                }
            }
        }
        if kind != tar::EntryType::Regular && kind != tar::EntryType::Continuous {
            return Err(refused(format!(
                "the archive holds {name:?}, a {kind:?} entry; only regular files are accepted \
                 (no links, devices, FIFOs or directories)"
            )));
        }
        if name == MANIFEST {
            if u.manifest.is_some() {
                return Err(refused("the archive holds two manifests"));
            }
            let mut json = Vec::new();
            (&mut entry)
                .take(16 << 20)
                .read_to_end(&mut json)
                .map_err(io_err)?;
            let m: Manifest = serde_json::from_slice(&json)
                .map_err(|e| refused(format!("the archive's manifest is not valid: {e}")))?;
            u.manifest = Some(m);
            continue;
        }
        // A group member's file goes to the member's folder, which the importer makes.
        if let Some((i, _)) = member_file(&name) {
            match std::fs::create_dir(staging.join(i.to_string())) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_err(e)),
                _ => {}
            }
        }
        let Some(flat) = member_file(&name)
            .map(|_| name.clone())
            .or_else(|| container::staged_name(&name))
        else {
            return Err(refused(format!(
                "the archive holds {name:?}; only plain file names are accepted (no absolute \
                 paths, no directories, no '..'), and checkpoint/NAME and volumes/NAME.tar of \
                 Podman's and Kubernetes' layout"
            )));
        };
        if !staged.insert(flat.clone()) {
            return Err(refused(format!("the archive holds {name:?} twice")));
        }
        if u.files.len() >= MAX_FILES {
            return Err(refused(format!(
                "the archive holds more than {MAX_FILES} files"
            )));
        }
        let declared = entry.header().size().map_err(io_err)?;
        if u.bytes.saturating_add(declared) > limit {
            return Err(too_large(limit));
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(staging.join(&flat))
            .map_err(io_err)?;
        let mut r = (&mut entry).take(declared);
        let mut hasher = hash.then(Sha256::new);
        let mut copied = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(match io_err(e) {
                        e if e.kind == ErrorKind::InvalidRequest => {
                            refused(format!("{name}: {}", e.message))
                        }
                        e => e,
                    })
                }
            };
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
            out.write_all(&buf[..n]).map_err(io_err)?;
            copied += n as u64;
        }
        if copied != declared {
            return Err(refused(format!("{name} is truncated in the archive")));
        }
        u.bytes += declared;
        u.files.insert(
            name,
            FileEntry {
                name: flat,
                size: declared,
                sha256: hasher
                    .map(|h| format!("{:x}", h.finalize()))
                    .unwrap_or_default(),
            },
        );
    }
    Ok(u)
}

/// Unpacks an archive of ckptd's own format into `staging` (see `unpack`) and verifies it
/// against its manifest.
pub fn import(input: impl Read, staging: &Path, limit: u64) -> Result<Imported> {
    let u = unpack(input, staging, limit, true)?;
    let manifest = u
        .manifest
        .ok_or_else(|| refused("the archive has no manifest.json"))?;
    verify(manifest, &u.files, &u.dirs, u.bytes)
}

/// What `import_any` found: ckptd's own archive, or a container checkpoint archive of Podman's
/// and Kubernetes' layout.
#[derive(Debug)]
pub enum Import {
    Ckptd(Box<Imported>),
    Container(container::Foreign),
}

/// Unpacks either layout into `staging`: an archive with `manifest.json` is ckptd's (and held
/// to it), one without is read as a container checkpoint archive (`container::recognise`).
pub fn import_any(input: impl Read, staging: &Path, limit: u64) -> Result<Import> {
    let u = unpack(input, staging, limit, true)?;
    match u.manifest {
        Some(m) => verify(m, &u.files, &u.dirs, u.bytes).map(|i| Import::Ckptd(Box::new(i))),
        None => container::recognise(&u.files, &u.dirs, staging, u.bytes).map(Import::Container),
    }
}

/// Unpacks a container checkpoint archive (Podman's and Kubernetes' layout only) into
/// `staging` and recognises it.
pub fn import_container(
    input: impl Read,
    staging: &Path,
    limit: u64,
) -> Result<container::Foreign> {
    let u = unpack(input, staging, limit, false)?;
    if u.manifest.is_some() {
        return Err(refused(
            "the archive is ckptd's own format, not a container checkpoint archive",
        ));
    }
    container::recognise(&u.files, &u.dirs, staging, u.bytes)
}

/// ckptd's rules: the file set is the manifest's exactly, every size and sha256 as listed.
fn verify(
    manifest: Manifest,
    files: &BTreeMap<String, FileEntry>,
    dirs: &BTreeSet<String>,
    bytes: u64,
) -> Result<Imported> {
    if manifest.format != FORMAT {
        return Err(refused(format!(
            "the archive's format is {:?}; this ckptd reads {FORMAT:?}",
            manifest.format
        )));
    }
    if let Some(d) = dirs.iter().next() {
        return Err(refused(format!(
            "the archive holds the directory {d}/, which ckptd's format does not have"
        )));
    }
    // A group's members' files, and only a group's: each member has some.
    let mut members = BTreeSet::new();
    for f in &manifest.files {
        if let Some((i, _)) = member_file(&f.name) {
            if !matches!(manifest.target, Target::Group { .. }) || i >= manifest.members.len() {
                return Err(refused(format!(
                    "{} is a group member's file, and the archive's manifest has no member {i}",
                    f.name
                )));
            }
            members.insert(i);
        }
    }
    if let Target::Group { targets } = &manifest.target {
        if manifest.members.len() != targets.len() || members.len() != targets.len() {
            return Err(refused(
                "the archive's group does not hold one image set per member of its target",
            ));
        }
    }
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    let present: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    if let Some(missing) = listed.difference(&present).next() {
        return Err(refused(format!(
            "{missing} is listed in the manifest but missing from the archive"
        )));
    }
    if let Some(extra) = present.difference(&listed).next() {
        return Err(refused(format!(
            "{extra} is in the archive but not in its manifest"
        )));
    }
    for f in &manifest.files {
        let got = &files[&f.name];
        if got.size != f.size || got.sha256 != f.sha256 {
            return Err(refused(format!(
                "{} does not match the manifest (sha256 {} and {} bytes, the manifest says {} and \
                 {} bytes): the archive is damaged or was altered",
                f.name, got.sha256, got.size, f.sha256, f.size
            )));
        }
    }
    Ok(Imported { manifest, bytes })
}

/// The machine's architecture as `uname -m` says it.
pub fn arch() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            name: "x".into(),
            target: Target::Process { pid: 42 },
            options: CheckpointOptions::default(),
            labels: BTreeMap::new(),
            created_at: Utc::now(),
            criu_version: Some("4.2.1".into()),
            container: None,
            stats: None,
            origin: None,
            kernel: "6.18".into(),
            arch: arch(),
            ckptd_version: "0.1.0".into(),
            files: vec![],
            members: vec![],
        }
    }

    fn member(pid: i32) -> ckptd_api::GroupMember {
        ckptd_api::GroupMember {
            target: Target::Process { pid },
            container: None,
            stats: None,
        }
    }

    #[test]
    fn a_group_travels_whole_and_only_as_a_group() {
        let src = tempfile::tempdir().unwrap();
        for i in ["0", "1"] {
            std::fs::create_dir(src.path().join(i)).unwrap();
            std::fs::write(src.path().join(i).join("inventory.img"), i).unwrap();
        }
        let group = Manifest {
            target: Target::Group {
                targets: vec![Target::Process { pid: 1 }, Target::Process { pid: 2 }],
            },
            members: vec![member(1), member(2)],
            ..manifest()
        };
        let mut buf = Vec::new();
        export(src.path(), group.clone(), Compression::None, &mut buf).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let got = import(buf.as_slice(), dst.path(), 1 << 30).unwrap();
        let names: Vec<_> = got.manifest.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["0/inventory.img", "1/inventory.img"]);
        assert_eq!(
            std::fs::read(dst.path().join("1/inventory.img")).unwrap(),
            b"1"
        );
        assert_eq!(got.manifest.members.len(), 2);

        // The same files under a manifest that is no group's: refused.
        let mut tar = tar::Builder::new(Vec::new());
        for f in &got.manifest.files {
            tar.append_data(&mut header(1), &f.name, &b"0"[..]).unwrap();
        }
        let mut single = manifest();
        single.files = got.manifest.files.clone();
        let json = serde_json::to_vec(&single).unwrap();
        tar.append_data(&mut header(json.len() as u64), MANIFEST, json.as_slice())
            .unwrap();
        let dst = tempfile::tempdir().unwrap();
        let e = import(tar.into_inner().unwrap().as_slice(), dst.path(), 1 << 30).unwrap_err();
        assert!(e.message.contains("is a group member's file"), "{e}");
        // Not a member's index as ckptd writes it, nor one beyond a group's size.
        for bad in ["00/inventory.img", "16/inventory.img", "0/../x", "0/sub/x"] {
            assert_eq!(member_file(bad), None, "{bad}");
        }

        // A member's folder swapped for a symlink: the export fails rather than follow it.
        std::fs::remove_dir_all(src.path().join("1")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("secret"), b"root's").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), src.path().join("1")).unwrap();
        let mut buf = Vec::new();
        assert!(export(src.path(), group, Compression::None, &mut buf).is_err());
    }

    #[test]
    fn round_trip_in_every_compression() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("pages-1.img"), vec![7u8; 300_000]).unwrap();
        std::fs::write(src.path().join("inventory.img"), b"inv").unwrap();
        // A name longer than a tar header holds (GNU long-name entry).
        let long = "x".repeat(120);
        std::fs::write(src.path().join(&long), b"long").unwrap();
        std::fs::create_dir(src.path().join("sub")).unwrap();
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let mut buf = Vec::new();
            export(src.path(), manifest(), c, &mut buf).unwrap();
            let dst = tempfile::tempdir().unwrap();
            let got = import(buf.as_slice(), dst.path(), 1 << 30).unwrap();
            assert_eq!(got.bytes, 300_007);
            let names: Vec<_> = got.manifest.files.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["inventory.img", "pages-1.img", long.as_str()]);
            assert_eq!(std::fs::read(dst.path().join(&long)).unwrap(), b"long");
            // Every file as `tar` itself reads it.
            let plain = match c {
                Compression::Zstd => zstd::decode_all(buf.as_slice()).unwrap(),
                Compression::Gzip => {
                    let mut v = Vec::new();
                    flate2::read::GzDecoder::new(buf.as_slice())
                        .read_to_end(&mut v)
                        .unwrap();
                    v
                }
                Compression::None => buf.clone(),
            };
            let listed: Vec<String> = tar::Archive::new(plain.as_slice())
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
            assert_eq!(
                listed,
                ["inventory.img", "pages-1.img", long.as_str(), MANIFEST]
            );
            assert_eq!(
                std::fs::read(dst.path().join("pages-1.img")).unwrap(),
                vec![7u8; 300_000]
            );
            // Too small a limit: refused as too large.
            let dst = tempfile::tempdir().unwrap();
            let e = import(buf.as_slice(), dst.path(), 1000).unwrap_err();
            assert_eq!(e.kind, ErrorKind::PayloadTooLarge, "{c:?}: {e}");
        }
    }

    #[test]
    fn a_flipped_byte_is_refused() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("pages-1.img"), vec![7u8; 10_000]).unwrap();
        let mut buf = Vec::new();
        export(src.path(), manifest(), Compression::None, &mut buf).unwrap();
        // The file's data starts after its 512-byte header.
        buf[512 + 5000] ^= 0xff;
        let dst = tempfile::tempdir().unwrap();
        let e = import(buf.as_slice(), dst.path(), 1 << 30).unwrap_err();
        assert!(e.message.contains("does not match the manifest"), "{e}");
    }
}
