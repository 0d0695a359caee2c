//! Checkpoint archives: a tar stream of a checkpoint's files with `manifest.json` last, whole
//! compressed with zstd (multi-threaded), gzip, or not at all.
//!
//! Layout: every regular file of the checkpoint directory at the archive's top level (CRIU and
//! runc image directories are flat), then `manifest.json`: what the checkpoint is (target,
//! options, labels, container record, statistics), where it was taken (CRIU version, kernel,
//! architecture) and the size and sha256 of every file. The manifest comes last so that both
//! sides work in one pass: the exporter hashes while it streams each file, the importer hashes
//! while it writes each file, then compares.
//!
//! Import is hostile-input parsing: only regular files with a plain name (no `/`, no `..`, not
//! absolute, no NUL) are accepted, each created new (`O_EXCL | O_NOFOLLOW`, mode 0600) in a
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
    pub kernel: String,
    pub arch: String,
    pub ckptd_version: String,
    pub files: Vec<FileEntry>,
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
            kernel: crate::sys::kernel_release(),
            arch: arch(),
            ckptd_version: env!("CARGO_PKG_VERSION").into(),
            files: vec![],
        }
    }
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

/// Hashes what passes through.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
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
    match compression {
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, 3)?;
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            enc.multithread(threads)?;
            // Bounded memory whatever the checkpoint's size: zstd's default job for level 3 is
            // 8 MiB, and it keeps about two jobs per worker in flight, each with its input and
            // output (~120 MiB on 2 cores, measured); 1 MiB jobs keep it to a few MiB per worker.
            enc.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
            write_tar(dir, &mut manifest, &mut enc)?;
            enc.finish()?.flush()
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            write_tar(dir, &mut manifest, &mut enc)?;
            enc.finish()?.flush()
        }
        Compression::None => {
            let mut out = out;
            write_tar(dir, &mut manifest, &mut out)?;
            out.flush()
        }
    }
}

fn write_tar(dir: &Path, manifest: &mut Manifest, out: &mut dyn Write) -> io::Result<()> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Regular files only (not followed through symlinks); CRIU's directories are flat.
        if entry.file_type()?.is_file() {
            if let Some(n) = entry.file_name().to_str().filter(|n| plain_name(n)) {
                names.push(n.to_owned());
            }
        }
    }
    names.sort();
    // Files are opened, sized and read ahead on a thread of their own, 1 MiB at a time, while
    // this one hashes, tars and feeds the compressor: the overlap `tar | zstd` gets from being
    // two processes (a cold page cache otherwise leaves the compressor waiting on each read).
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(READ_AHEAD_CHUNKS);
    let reading = {
        let dir = dir.to_owned();
        let names = names.clone();
        std::thread::spawn(move || read_ahead(&dir, &names, &tx))
    };
    let mut tar = tar::Builder::new(out);
    manifest.files.clear();
    for name in names {
        let size = match rx.recv() {
            Ok(Chunk::Start(size)) => size,
            Ok(Chunk::Failed(e)) => return Err(e),
            _ => return Err(io::Error::other("the archive's reader stopped")),
        };
        let mut h = header(size);
        if name.len() > 99 {
            // A name that needs GNU's long-name entry: the tar crate writes it.
            let data = collect_file(&rx, size, &name)?;
            let sha256 = format!("{:x}", Sha256::digest(&data));
            tar.append_data(&mut h, &name, data.as_slice())?;
            manifest.files.push(FileEntry { name, size, sha256 });
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
                        return Err(changed(&name));
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
            return Err(changed(&name));
        }
        let pad = (512 - size % 512) % 512;
        w.write_all(&[0u8; 512][..pad as usize])?;
        manifest.files.push(FileEntry {
            name,
            size,
            sha256: format!("{:x}", hash.finalize()),
        });
    }
    drop(rx);
    let _ = reading.join();
    let json = serde_json::to_vec_pretty(&*manifest).map_err(io::Error::other)?;
    tar.append_data(&mut header(json.len() as u64), MANIFEST, json.as_slice())?;
    tar.into_inner()?.flush()
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

fn read_ahead(dir: &Path, names: &[String], tx: &std::sync::mpsc::SyncSender<Chunk>) {
    for name in names {
        let sent = (|| -> io::Result<bool> {
            // Not followed through a symlink swapped in since the listing.
            let mut f = crate::sys::open_regular(&dir.join(name))?;
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

/// One whole file's chunks (for the rare entry the tar crate must write itself).
fn collect_file(
    rx: &std::sync::mpsc::Receiver<Chunk>,
    size: u64,
    name: &str,
) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        match rx.recv() {
            Ok(Chunk::Data(d)) => data.extend_from_slice(&d),
            Ok(Chunk::End) if data.len() as u64 == size => return Ok(data),
            Ok(Chunk::End) => return Err(changed(name)),
            Ok(Chunk::Failed(e)) => return Err(e),
            _ => return Err(io::Error::other("the archive's reader stopped")),
        }
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
        "only archives made by GET /v1/checkpoints/{ref}/archive (or `ckpt export`) are accepted",
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

/// Unpacks an archive (compression recognised by its magic bytes) into `staging`, an existing
/// empty private directory, and verifies it. At most `limit` bytes are read from `input` and at
/// most `limit` bytes written.
pub fn import(input: impl Read, staging: &Path, limit: u64) -> Result<Imported> {
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
    let mut seen: BTreeMap<String, FileEntry> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let mut written: u64 = 0;
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let path = entry.path_bytes().into_owned();
        let name = String::from_utf8(path.clone())
            .map_err(|_| refused("an archive entry's name is not UTF-8"))?;
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular && kind != tar::EntryType::Continuous {
            return Err(refused(format!(
                "the archive holds {name:?}, a {kind:?} entry; only regular files are accepted \
                 (no links, devices, FIFOs or directories)"
            )));
        }
        if name == MANIFEST {
            if manifest.is_some() {
                return Err(refused("the archive holds two manifests"));
            }
            let mut json = Vec::new();
            (&mut entry)
                .take(16 << 20)
                .read_to_end(&mut json)
                .map_err(io_err)?;
            let m: Manifest = serde_json::from_slice(&json)
                .map_err(|e| refused(format!("the archive's manifest is not valid: {e}")))?;
            manifest = Some(m);
            continue;
        }
        if !plain_name(&name) {
            return Err(refused(format!(
                "the archive holds {name:?}; only plain file names are accepted (no absolute \
                 paths, no directories, no '..')"
            )));
        }
        if seen.contains_key(&name) {
            return Err(refused(format!("the archive holds {name:?} twice")));
        }
        if seen.len() >= MAX_FILES {
            return Err(refused(format!(
                "the archive holds more than {MAX_FILES} files"
            )));
        }
        let declared = entry.header().size().map_err(io_err)?;
        if written.saturating_add(declared) > limit {
            return Err(too_large(limit));
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(staging.join(&name))
            .map_err(io_err)?;
        let mut r = Hashing {
            inner: (&mut entry).take(declared),
            hash: Sha256::new(),
            bytes: 0,
        };
        io::copy(&mut r, &mut out).map_err(|e| match io_err(e) {
            e if e.kind == ErrorKind::InvalidRequest => refused(format!("{name}: {}", e.message)),
            e => e,
        })?;
        if r.bytes != declared {
            return Err(refused(format!("{name} is truncated in the archive")));
        }
        written += declared;
        seen.insert(
            name.clone(),
            FileEntry {
                name,
                size: declared,
                sha256: format!("{:x}", r.hash.finalize()),
            },
        );
    }
    let manifest = manifest.ok_or_else(|| refused("the archive has no manifest.json"))?;
    if manifest.format != FORMAT {
        return Err(refused(format!(
            "the archive's format is {:?}; this ckptd reads {FORMAT:?}",
            manifest.format
        )));
    }
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.name.as_str()).collect();
    let present: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
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
        let got = &seen[&f.name];
        if got.size != f.size || got.sha256 != f.sha256 {
            return Err(refused(format!(
                "{} does not match the manifest (sha256 {} and {} bytes, the manifest says {} and \
                 {} bytes): the archive is damaged or was altered",
                f.name, got.sha256, got.size, f.sha256, f.size
            )));
        }
    }
    Ok(Imported {
        manifest,
        bytes: written,
    })
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
            kernel: "6.18".into(),
            arch: arch(),
            ckptd_version: "0.1.0".into(),
            files: vec![],
        }
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
