//! Container checkpoint archives: the layout Podman (`podman container checkpoint --export`),
//! CRI-O and containerd (a kubelet's checkpoint) write and checkpointctl reads.
//!
//! The layout (see `docs/architecture.md`, "Container checkpoint archives"): CRIU's image
//! directory as `checkpoint/` (with an explicit directory entry, which checkpointctl needs),
//! beside it the engine's files: `config.dump` (the engine's container configuration),
//! `spec.dump` (the OCI runtime spec, annotations included), `rootfs-diff.tar`,
//! `deleted.files`, `stats-dump`, `dump.log`, ... and `volumes/NAME.tar` for Podman's named
//! volumes.
//!
//! In a ckptd checkpoint directory, flat like every other, each file keeps its name:
//! `checkpoint/X` is `X` (the CRIU images, where every other target's are), the top-level files
//! keep theirs ([`TOP_LEVEL`], none of which CRIU writes), `volumes/NAME.tar` is
//! `volume-NAME.tar`. Reading is `archive::import_any`'s one hostile-input reader; this module
//! says which entries the layout has and what they tell.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{header, plain_files, plain_name, refused, FileEntry};
use crate::error::Result;

/// The layout's directories.
pub const DIRECTORIES: &[&str] = &["checkpoint", "artifacts", "volumes"];

/// The layout's top-level files, by who writes them (formats.md): all of them, then CRI-O's,
/// containerd's and Podman's own.
pub const TOP_LEVEL: &[&str] = &[
    "config.dump",
    "spec.dump",
    "rootfs-diff.tar",
    "deleted.files",
    "stats-dump",
    "dump.log",
    "bind.mounts",
    "container.log",
    "status",
    "status.dump",
    "network.status",
    "devshm-checkpoint.tar",
    "ctr.log",
    "pod.options",
    "pod.dump",
];

/// A named volume's tar (`volumes/NAME.tar` in the archive) in a checkpoint directory.
const VOLUME_PREFIX: &str = "volume-";

/// The most of `config.dump` or `spec.dump` that is read (Podman's are ~25 KiB).
const MAX_METADATA: u64 = 16 << 20;

/// The directory a directory entry names (`checkpoint/` or `checkpoint`), if the layout has it.
pub fn directory(entry: &str) -> Option<&'static str> {
    let d = entry.strip_suffix('/').unwrap_or(entry);
    DIRECTORIES.iter().copied().find(|x| *x == d)
}

/// Where a file entry is staged in the flat checkpoint directory, or None when the entry is not
/// a plain file name, `checkpoint/NAME` or `volumes/NAME.tar`.
pub fn staged_name(entry: &str) -> Option<String> {
    if plain_name(entry) {
        return Some(entry.to_owned());
    }
    if let Some(n) = entry.strip_prefix("checkpoint/") {
        // CRIU never writes the layout's top-level names: one of them inside checkpoint/ would
        // become that file on the way back out.
        return (plain_name(n) && !TOP_LEVEL.contains(&n)).then(|| n.to_owned());
    }
    if let Some(n) = entry.strip_prefix("volumes/") {
        return (plain_name(n) && n.ends_with(".tar")).then(|| format!("{VOLUME_PREFIX}{n}"));
    }
    None
}

/// The engine that wrote an archive, as checkpointctl tells it: the spec annotation
/// `io.container.manager` (`libpod` is Podman, `cri-o` is CRI-O), anything else containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Podman,
    CriO,
    Containerd,
}

impl Engine {
    /// As `Origin.engine` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::CriO => "cri-o",
            Engine::Containerd => "containerd",
        }
    }
}

/// A container checkpoint archive, unpacked into a staging directory and recognised.
#[derive(Debug, Clone)]
pub struct Foreign {
    pub engine: Engine,
    /// The container's name (Kubernetes: the container's name in its pod).
    pub container: String,
    pub container_id: Option<String>,
    pub image: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub checkpointed_at: Option<DateTime<Utc>>,
    /// The bytes written.
    pub bytes: u64,
}

fn read_json(dir: &Path, name: &str) -> Result<Value> {
    let f = crate::sys::open_regular(&dir.join(name))
        .map_err(|e| refused(format!("cannot read the archive's {name}: {e}")))?;
    let mut text = Vec::new();
    f.take(MAX_METADATA)
        .read_to_end(&mut text)
        .map_err(|e| refused(format!("cannot read the archive's {name}: {e}")))?;
    match serde_json::from_slice::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(refused(format!(
            "the archive's {name} is not a JSON object"
        ))),
        Err(e) => Err(refused(format!("the archive's {name} is not JSON: {e}"))),
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The archive's engine and container from `config.dump` and `spec.dump` (staged in `dir`),
/// once the entries are those of the layout: `files` by their path in the archive.
pub fn recognise(
    files: &BTreeMap<String, FileEntry>,
    dirs: &BTreeSet<String>,
    dir: &Path,
    bytes: u64,
) -> Result<Foreign> {
    if let Some(member) = files.keys().find(|p| super::member_file(p).is_some()) {
        return Err(refused(format!(
            "the archive holds {member:?}, a group member's file, but no manifest.json: only \
             ckptd's format holds a group"
        )));
    }
    for needed in ["config.dump", "spec.dump"] {
        if !files.contains_key(needed) {
            return Err(refused(format!(
                "the archive has no manifest.json (ckptd's format), nor {needed} (Podman's and \
                 Kubernetes' layout)"
            )));
        }
    }
    if let Some(unknown) = files
        .keys()
        .find(|p| !p.contains('/') && !TOP_LEVEL.contains(&p.as_str()))
    {
        return Err(refused(format!(
            "the archive holds {unknown:?} at its top level, which the container checkpoint \
             layout does not have (its files: {}; CRIU's images go in checkpoint/)",
            TOP_LEVEL.join(", ")
        )));
    }
    if !files.keys().any(|p| p.starts_with("checkpoint/")) && !dirs.contains("checkpoint") {
        return Err(refused(
            "the archive has no checkpoint/ directory: it holds no CRIU images",
        ));
    }
    let config = read_json(dir, "config.dump")?;
    let spec = read_json(dir, "spec.dump")?;
    let annotations = spec.get("annotations").cloned().unwrap_or(Value::Null);
    let note = |k: &str| text(&annotations, k);
    let engine = match note("io.container.manager").as_deref() {
        Some("libpod") => Engine::Podman,
        Some("cri-o") => Engine::CriO,
        _ => Engine::Containerd,
    };
    let (container, pod, namespace) = match engine {
        Engine::Podman => (text(&config, "name"), None, None),
        Engine::CriO => (
            note("io.kubernetes.container.name").or_else(|| text(&config, "name")),
            note("io.kubernetes.pod.name"),
            note("io.kubernetes.pod.namespace"),
        ),
        Engine::Containerd => (
            note("io.kubernetes.cri.container-name").or_else(|| text(&config, "name")),
            note("io.kubernetes.cri.sandbox-name"),
            note("io.kubernetes.cri.sandbox-namespace"),
        ),
    };
    let container = container.ok_or_else(|| {
        refused("the archive's config.dump names no container (its \"name\" is missing)")
    })?;
    let checkpointed_at = text(&config, "checkpointedTime")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(Foreign {
        engine,
        container,
        container_id: text(&config, "id"),
        image: text(&config, "rootfsImageName").or_else(|| text(&config, "rootfsImageRef")),
        pod,
        namespace,
        checkpointed_at,
        bytes,
    })
}

/// Whether a checkpoint directory holds what the layout needs from its engine.
pub fn has_engine_files(dir: &Path) -> bool {
    ["config.dump", "spec.dump"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

/// Where a checkpoint directory's file goes in the layout; None for ckptd's own files (its
/// restore logs), which are not the container's.
pub fn archive_path(file: &str) -> Option<String> {
    if TOP_LEVEL.contains(&file) {
        return Some(file.to_owned());
    }
    if let Some(v) = file.strip_prefix(VOLUME_PREFIX) {
        return Some(format!("volumes/{v}"));
    }
    if file.ends_with(".log") {
        return None;
    }
    Some(format!("checkpoint/{file}"))
}

/// The files of checkpoint directory `dir` with their paths in the layout, by path.
pub fn layout_files(dir: &Path) -> io::Result<Vec<(String, String)>> {
    let mut entries: Vec<(String, String)> = plain_files(dir)?
        .into_iter()
        .filter_map(|f| archive_path(&f).map(|p| (f, p)))
        .collect();
    entries.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(entries)
}

/// Writes checkpoint directory `dir` in the layout (uncompressed tar, as CRI-O writes and
/// Podman's import reads): the `checkpoint/` directory entry first, then every file, then
/// `extra` (made for this archive: `(path, bytes)`, each replacing the directory's file of that
/// path).
pub fn write(dir: &Path, extra: &[(String, Vec<u8>)], out: &mut dyn Write) -> io::Result<()> {
    let entries: Vec<(String, String)> = layout_files(dir)?
        .into_iter()
        .filter(|(_, p)| !extra.iter().any(|(x, _)| x == p))
        .collect();
    let mut tar = tar::Builder::new(out);
    let volumes = entries.iter().any(|(_, p)| p.starts_with("volumes/"));
    for d in ["checkpoint/", "volumes/"] {
        if d == "volumes/" && !volumes {
            continue;
        }
        let mut h = header(0);
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o700);
        tar.append_data(&mut h, d, io::empty())?;
    }
    super::append_files(
        &mut tar,
        entries.into_iter().map(|(f, p)| (dir.join(f), p)).collect(),
    )?;
    for (path, data) in extra {
        tar.append_data(&mut header(data.len() as u64), path, data.as_slice())?;
    }
    tar.into_inner()?.flush()
}

/// `write` through a compressor.
pub fn export(
    dir: &Path,
    extra: &[(String, Vec<u8>)],
    compression: super::Compression,
    out: impl Write,
) -> io::Result<()> {
    super::compress(compression, out, |w| write(dir, extra, w))
}

/// A tar stream's entries as (path, is a directory), in order (the tests' view of `write`).
#[cfg(test)]
pub(crate) fn entries(tar: &[u8]) -> Vec<(String, bool)> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().entry_type().is_dir(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{import_any, Import};
    use crate::error::ErrorKind;

    /// An archive entry: its path, its kind and its data.
    type Entry<'a> = (&'a str, tar::EntryType, &'a [u8]);

    /// A tar of entries, as a hostile or foreign writer makes it.
    fn tar_of(entries: &[Entry]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            // set_path refuses `..` and absolute paths: write the name bytes as a hostile
            // writer would.
            let name: &mut [u8] = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    const F: tar::EntryType = tar::EntryType::Regular;
    const D: tar::EntryType = tar::EntryType::Directory;
    const SPEC: &[u8] = br#"{"annotations":{"io.container.manager":"libpod"}}"#;
    const CONFIG: &[u8] =
        br#"{"id":"abc","name":"web","rootfsImageName":"localhost/busybox:latest","checkpointedTime":"2026-12-02T18:03:23.09Z"}"#;

    fn podman_like() -> Vec<(&'static str, tar::EntryType, &'static [u8])> {
        vec![
            ("artifacts/", D, b""),
            ("config.dump", F, CONFIG),
            ("spec.dump", F, SPEC),
            ("stats-dump", F, b"st"),
            ("ctr.log", F, b"0\n1\n"),
            ("checkpoint/", D, b""),
            ("checkpoint/inventory.img", F, b"inv"),
            ("checkpoint/pages-1.img", F, b"pages"),
            ("volumes/", D, b""),
            ("volumes/data.tar", F, b"vol"),
        ]
    }

    fn import(entries: &[(&str, tar::EntryType, &[u8])]) -> (tempfile::TempDir, Result<Import>) {
        let dst = tempfile::tempdir().unwrap();
        let r = import_any(tar_of(entries).as_slice(), dst.path(), 1 << 20);
        (dst, r)
    }

    #[test]
    fn a_podman_export_is_recognised_and_staged_flat() {
        let (dst, r) = import(&podman_like());
        let Import::Container(f) = r.unwrap() else {
            panic!("not read as a container archive")
        };
        assert_eq!(f.engine, Engine::Podman);
        assert_eq!(f.container, "web");
        assert_eq!(f.container_id.as_deref(), Some("abc"));
        assert_eq!(f.image.as_deref(), Some("localhost/busybox:latest"));
        assert_eq!(
            f.checkpointed_at.unwrap().to_rfc3339(),
            "2026-12-02T18:03:23.090+00:00"
        );
        let mut names: Vec<String> = std::fs::read_dir(dst.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "config.dump",
                "ctr.log",
                "inventory.img",
                "pages-1.img",
                "spec.dump",
                "stats-dump",
                "volume-data.tar"
            ]
        );

        // Written back: the same entries, checkpoint/ as a directory entry first.
        let mut out = Vec::new();
        write(dst.path(), &[], &mut out).unwrap();
        let listed = entries(&out);
        assert_eq!(listed[0], ("checkpoint/".to_owned(), true));
        let files: Vec<&str> = listed
            .iter()
            .filter(|(_, d)| !d)
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(
            files,
            [
                "checkpoint/inventory.img",
                "checkpoint/pages-1.img",
                "config.dump",
                "ctr.log",
                "spec.dump",
                "stats-dump",
                "volumes/data.tar"
            ]
        );
    }

    #[test]
    fn engines_and_kubernetes_names_come_from_the_annotations() {
        let crio_spec: &[u8] = br#"{"annotations":{"io.container.manager":"cri-o","io.kubernetes.container.name":"counter","io.kubernetes.pod.name":"web-0","io.kubernetes.pod.namespace":"shop"}}"#;
        let ctrd_spec: &[u8] = br#"{"annotations":{"io.kubernetes.cri.container-name":"counter","io.kubernetes.cri.sandbox-name":"web-0","io.kubernetes.cri.sandbox-namespace":"shop"}}"#;
        for (spec, engine) in [(crio_spec, Engine::CriO), (ctrd_spec, Engine::Containerd)] {
            let (_d, r) = import(&[
                ("checkpoint/", D, b""),
                ("checkpoint/inventory.img", F, b"inv"),
                ("config.dump", F, br#"{"id":"k1","name":"k8s_counter"}"#),
                ("spec.dump", F, spec),
            ]);
            let Import::Container(f) = r.unwrap() else {
                panic!()
            };
            assert_eq!(f.engine, engine);
            assert_eq!(f.container, "counter");
            assert_eq!(f.pod.as_deref(), Some("web-0"));
            assert_eq!(f.namespace.as_deref(), Some("shop"));
        }
    }

    #[test]
    fn hostile_and_incomplete_archives_are_refused() {
        let base = podman_like();
        let with = |extra: (&'static str, tar::EntryType, &'static [u8])| {
            let mut v = base.clone();
            v.push(extra);
            v
        };
        let cases: Vec<(Vec<Entry>, &str)> = vec![
            (with(("../evil", F, b"x")), "only plain file names"),
            (with(("/etc/evil", F, b"x")), "only plain file names"),
            (
                with(("checkpoint/../../evil", F, b"x")),
                "only plain file names",
            ),
            (
                with(("checkpoint/sub/x.img", F, b"x")),
                "only plain file names",
            ),
            (
                with(("checkpoint/config.dump", F, b"x")),
                "only plain file names",
            ),
            (with(("volumes/../x.tar", F, b"x")), "only plain file names"),
            (with(("etc/", D, b"")), "a directory"),
            (
                with(("checkpoint/link.img", tar::EntryType::Symlink, b"")),
                "only regular files",
            ),
            (with(("inventory.img", F, b"x")), "twice"),
            (with(("pages-2.img", F, b"x")), "at its top level"),
        ];
        for (entries, says) in cases {
            let (dst, r) = import(&entries);
            let e = r.unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidRequest, "{e}");
            assert!(e.message.contains(says), "{says}: {e}");
            // Nothing outside the staging directory.
            assert!(!dst.path().parent().unwrap().join("evil").exists());
        }
        // Without the engine's files, or without images.
        let (_d, r) = import(&[("checkpoint/inventory.img", F, b"inv")]);
        assert!(r.unwrap_err().message.contains("config.dump"));
        let (_d, r) = import(&[("config.dump", F, CONFIG), ("spec.dump", F, SPEC)]);
        assert!(r.unwrap_err().message.contains("no checkpoint/"));
        let (_d, r) = import(&[
            ("checkpoint/", D, b""),
            ("config.dump", F, b"[1]"),
            ("spec.dump", F, SPEC),
        ]);
        assert!(r.unwrap_err().message.contains("not a JSON object"));
    }
}
