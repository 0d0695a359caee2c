//! A runc bundle for a checkpoint taken elsewhere in the container checkpoint layout (a kubelet's
//! checkpoint by CRI-O or containerd), so that it restores outside Kubernetes as a runc
//! container: what CRI-O does before its `runc restore` (formats.md), from a root filesystem the
//! caller supplies (the container's image, unpacked).
//!
//! [`check`] says, before anything is written and before CRIU runs, what cannot be restored
//! here: namespaces the container joined (a pod's network namespace), mounts whose sources are
//! not on this host and that `bind.mounts` does not say how to recreate. [`build`] then makes
//! the bundle: a copy of the root filesystem, `rootfs-diff.tar` applied (plain or gzip, as
//! containerd writes it), `deleted.files` removed, missing bind-mount sources created as
//! `bind.mounts` records them, and `config.json` from `spec.dump` with the bundle's root.
//!
//! The archive's files are untrusted: a `rootfs-diff.tar` entry with an absolute path or `..`,
//! or one that would be written through a symlink leading out of the root filesystem, and a
//! `deleted.files` path with `..` or through such a symlink, refuse the whole restore; nothing
//! is written outside the bundle but the bind-mount sources `bind.mounts` names (absolute,
//! normalized paths outside /proc, /sys and /dev, created empty, never over anything).

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The most of `spec.dump`, `bind.mounts` or `deleted.files` that is read.
const MAX_JSON: u64 = 16 << 20;

fn refused(message: impl Into<String>) -> Error {
    Error::invalid(message)
        .with_hint("the checkpoint archive's files are refused as they are; nothing was restored")
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>> {
    let f = match crate::sys::open_regular(&dir.join(name)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refused(format!("cannot read the checkpoint's {name}: {e}"))),
    };
    let mut text = Vec::new();
    f.take(MAX_JSON)
        .read_to_end(&mut text)
        .map_err(|e| refused(format!("cannot read the checkpoint's {name}: {e}")))?;
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        refused(format!(
            "the checkpoint's {name} is not what the layout says: {e}"
        ))
    })
}

/// One entry of CRI-O's `bind.mounts`.
#[derive(Debug, Clone, Deserialize)]
pub struct BindMount {
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub file_type: String,
    #[serde(default)]
    pub permissions: u32,
}

/// Whether a checkpoint directory holds a checkpoint of the container layout that needs a
/// bundle built (its OCI spec, `spec.dump`).
pub fn has_spec(cp_dir: &Path) -> bool {
    cp_dir.join("spec.dump").is_file()
}

/// An absolute path without `.`, `..` or empty components.
fn normal_absolute(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() || p.contains('\0') {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    Some(out)
}

/// Sources ckptd never creates, whatever `bind.mounts` says.
fn forbidden_source(p: &Path) -> bool {
    p == Path::new("/") || ["/proc", "/sys", "/dev"].iter().any(|r| p.starts_with(r))
}

/// What cannot be restored on this host, in words for the caller, read from the checkpoint's
/// `spec.dump` and `bind.mounts`: an empty list when the restore can go ahead.
pub fn problems(cp_dir: &Path) -> Result<Vec<String>> {
    let spec: Value = read_json(cp_dir, "spec.dump")?
        .ok_or_else(|| refused("the checkpoint has no spec.dump (its OCI runtime spec)"))?;
    let binds: Vec<BindMount> = read_json(cp_dir, "bind.mounts")?.unwrap_or_default();
    let mut out = Vec::new();
    let namespaces = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for ns in namespaces {
        if let Some(path) = ns
            .get("path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        {
            let kind = ns.get("type").and_then(Value::as_str).unwrap_or("?");
            out.push(format!(
                "the container joined an existing {kind} namespace ({path}), its pod's: a pod's \
                 namespaces are not restored outside the pod"
            ));
        }
    }
    let mounts = spec
        .get("mounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for m in mounts {
        let bind = m.get("type").and_then(Value::as_str) == Some("bind")
            || m.get("options")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"));
        let (Some(source), Some(dest)) = (
            m.get("source").and_then(Value::as_str),
            m.get("destination").and_then(Value::as_str),
        ) else {
            continue;
        };
        if !bind || Path::new(source).exists() {
            continue;
        }
        match binds.iter().find(|b| b.source == source) {
            Some(b) => match normal_absolute(&b.source) {
                Some(p) if !forbidden_source(&p) => {}
                _ => out.push(format!(
                    "bind.mounts names {:?} as the source of {}: not an absolute, normalized \
                     path outside /proc, /sys and /dev",
                    b.source, b.destination
                )),
            },
            None => out.push(format!(
                "the volume mounted at {dest} comes from {source}, which is not on this host \
                 (and bind.mounts does not say how to recreate it)"
            )),
        }
    }
    Ok(out)
}

/// Refuses a restore `problems` finds, with the list.
pub fn check(cp_dir: &Path, checkpoint: &str) -> Result<()> {
    let found = problems(cp_dir)?;
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::target_unavailable(format!(
        "checkpoint {checkpoint} cannot be restored on this host: {}",
        found.join("; ")
    ))
    .with("problems", found))
}

/// Builds the bundle at `bundle` (absent, or an empty directory) for checkpoint directory
/// `cp_dir` from root filesystem `rootfs`. A failed build leaves `bundle` as it found it.
pub fn build(cp_dir: &Path, bundle: &Path, rootfs: &Path) -> Result<()> {
    let existed = bundle.exists();
    let built = build_in(cp_dir, bundle, rootfs);
    if built.is_err() {
        let undone = if existed {
            std::fs::read_dir(bundle).and_then(|d| {
                d.flatten()
                    .try_for_each(|e| crate::sys::remove_dir_tree(&e.path()))
            })
        } else {
            crate::sys::remove_dir_tree(bundle)
        };
        if let Err(e) = undone {
            tracing::error!(bundle = %bundle.display(), error = %e, "cannot remove a bundle whose build failed");
        }
    }
    built
}

fn build_in(cp_dir: &Path, bundle: &Path, rootfs: &Path) -> Result<()> {
    let mut spec: Value = read_json(cp_dir, "spec.dump")?
        .ok_or_else(|| refused("the checkpoint has no spec.dump (its OCI runtime spec)"))?;
    let deleted: Vec<String> = read_json(cp_dir, "deleted.files")?.unwrap_or_default();
    let binds: Vec<BindMount> = read_json(cp_dir, "bind.mounts")?.unwrap_or_default();
    match std::fs::read_dir(bundle).map(|mut d| d.next().is_none()) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::conflict(format!(
                "the bundle directory {} is not empty; ckptd builds the bundle itself",
                bundle.display()
            ))
            .with_hint("name a directory that does not exist yet"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(bundle).map_err(|e| Error::io("cannot create", bundle, &e))?
        }
        Err(e) => return Err(Error::io("cannot read", bundle, &e)),
    }
    let root = bundle.join("rootfs");
    copy_tree(rootfs, &root)?;
    apply_diff(cp_dir, &root)?;
    for p in &deleted {
        remove_inside(&root, p)?;
    }
    for b in &binds {
        recreate_source(b)?;
    }
    spec["root"] = serde_json::json!({
        "path": root.display().to_string(),
        "readonly": spec.pointer("/root/readonly").and_then(Value::as_bool).unwrap_or(false),
    });
    let config = bundle.join("config.json");
    let text = serde_json::to_vec_pretty(&spec)
        .map_err(|e| Error::internal(format!("cannot write the bundle's config.json: {e}")))?;
    std::fs::write(&config, text).map_err(|e| Error::io("cannot write", &config, &e))
}

/// `cp -a --reflink=auto SRC/. DST` (owners, modes, links, special files as they are).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io("cannot create", to, &e))?;
    let out = std::process::Command::new("cp")
        .args(["-a", "--reflink=auto", "--"])
        .arg(from.join("."))
        .arg(to)
        .output()
        .map_err(|e| Error::internal(format!("cannot run cp: {e}")))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "cannot copy the root filesystem {} into the bundle: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Applies `rootfs-diff.tar` (plain, or gzip as containerd writes it) to `root`.
fn apply_diff(cp_dir: &Path, root: &Path) -> Result<()> {
    let path = cp_dir.join("rootfs-diff.tar");
    let f = match crate::sys::open_regular(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("cannot read", &path, &e)),
    };
    let mut input = BufReader::new(f);
    let gzip = input
        .fill_buf()
        .map_err(|e| Error::io("cannot read", &path, &e))?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let bad = |e: std::io::Error| refused(format!("rootfs-diff.tar cannot be applied: {e}"));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.into_owned();
        if name.is_absolute()
            || name
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
        {
            return Err(refused(format!(
                "rootfs-diff.tar holds {}: an absolute path or '..', which would reach out of \
                 the root filesystem",
                name.display()
            )));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
            return Err(refused(format!(
                "rootfs-diff.tar holds {}, a {kind:?} entry; files, directories and links only",
                name.display()
            )));
        }
        // tar checks that each parent, resolved, stays inside `root`: nothing is written
        // through a symlink that leads out.
        entry.unpack_in(root).map_err(|e| {
            // tar's error wraps the cause: say the innermost one.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            refused(format!(
                "rootfs-diff.tar's {} cannot be written: {e}: {cause}",
                name.display()
            ))
        })?;
    }
    Ok(())
}

/// Removes `path` (from `deleted.files`, absolute in the container) inside `root`, never
/// through a symlink that leads out of it.
fn remove_inside(root: &Path, path: &str) -> Result<()> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_)))
        || path.contains('\0')
        || rel.as_os_str().is_empty()
    {
        return Err(refused(format!(
            "deleted.files names {path:?}: only normalized paths inside the root filesystem \
             (no '..')"
        )));
    }
    let target = root.join(rel);
    let parent = target.parent().unwrap_or(root);
    let (Ok(canon_parent), Ok(canon_root)) = (parent.canonicalize(), root.canonicalize()) else {
        // Its directory is not there: nothing to delete.
        return Ok(());
    };
    if !canon_parent.starts_with(&canon_root) {
        return Err(refused(format!(
            "deleted.files names {path:?}, which lies through a symlink out of the root filesystem"
        )));
    }
    let target = canon_parent.join(target.file_name().unwrap_or_default());
    match std::fs::symlink_metadata(&target) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(&target),
        Ok(_) => std::fs::remove_file(&target),
        Err(_) => Ok(()),
    }
    .map_err(|e| Error::io("cannot delete", &target, &e))
}

/// Creates a missing bind-mount source as `bind.mounts` records it (an empty directory or file).
fn recreate_source(b: &BindMount) -> Result<()> {
    let Some(p) = normal_absolute(&b.source).filter(|p| !forbidden_source(p)) else {
        return Err(refused(format!(
            "bind.mounts names {:?}: not an absolute, normalized path outside /proc, /sys and /dev",
            b.source
        )));
    };
    if std::fs::symlink_metadata(&p).is_ok() {
        return Ok(());
    }
    let mode = if b.permissions == 0 {
        0o755
    } else {
        b.permissions & 0o777
    };
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let made = if b.file_type == "directory" {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&p)
    } else {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, &e))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map(|_| ())
    };
    made.map_err(|e| Error::io("cannot recreate a bind-mount source", &p, &e))?;
    tracing::info!(source = %p.display(), destination = %b.destination, "recreated a bind-mount source");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(spec: Value, extra: &[(&str, &[u8])]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("spec.dump"), spec.to_string()).unwrap();
        for (n, data) in extra {
            std::fs::write(d.path().join(n), data).unwrap();
        }
        d
    }

    fn diff_with(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            let data: &[u8] = if kind.is_file() { b"data" } else { b"" };
            h.set_size(data.len() as u64);
            let name: &mut [u8] = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if !link.is_empty() {
                let l: &mut [u8] = &mut h.as_old_mut().linkname;
                l[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn pods_namespaces_and_missing_volumes_are_named_before_anything_runs() {
        let spec = serde_json::json!({
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "/nonexistent/ckptd/vol", "options": ["rbind"]},
                {"destination": "/etc/hosts", "type": "bind", "source": "/nonexistent/ckptd/hosts", "options": ["bind"]},
            ]
        });
        let binds = br#"[{"source":"/nonexistent/ckptd/hosts","destination":"/etc/hosts","file_type":"file","permissions":420}]"#;
        let d = layout(spec, &[("bind.mounts", binds)]);
        let p = problems(d.path()).unwrap();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("network namespace (/var/run/netns/cni-1)"),
            "{p:?}"
        );
        assert!(
            p[1].contains("/data comes from /nonexistent/ckptd/vol"),
            "{p:?}"
        );
        let e = check(d.path(), "k1").unwrap_err();
        assert!(e.message.contains("cannot be restored on this host"), "{e}");
    }

    #[test]
    fn hostile_diffs_and_deletions_are_refused_with_nothing_written_outside() {
        let outside = tempfile::tempdir().unwrap();
        let evil = outside.path().display().to_string();
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (
                diff_with(&[("../escape", tar::EntryType::Regular, "")]),
                "[]",
                "'..'",
            ),
            (
                diff_with(&[("/abs", tar::EntryType::Regular, "")]),
                "[]",
                "absolute",
            ),
            (
                diff_with(&[
                    ("link", tar::EntryType::Symlink, &evil),
                    ("link/escape", tar::EntryType::Regular, ""),
                ]),
                "[]",
                "outside of destination",
            ),
            (
                diff_with(&[("dev", tar::EntryType::Char, "")]),
                "[]",
                "files, directories and links only",
            ),
            (diff_with(&[]), "[\"/../escape\"]", "no '..'"),
        ];
        for (diff, deleted, says) in cases {
            let d = layout(
                serde_json::json!({"root": {"path": "rootfs"}}),
                &[
                    ("rootfs-diff.tar", &diff),
                    ("deleted.files", deleted.as_bytes()),
                ],
            );
            let rootfs = tempfile::tempdir().unwrap();
            std::fs::write(rootfs.path().join("kept"), b"k").unwrap();
            let bundle = tempfile::tempdir().unwrap();
            let e = build(d.path(), &bundle.path().join("b"), rootfs.path()).unwrap_err();
            assert!(e.message.contains(says), "{says}: {e}");
            assert!(
                std::fs::read_dir(outside.path()).unwrap().next().is_none(),
                "{says}: something was written outside"
            );
        }
        // A deletion through a symlink out of the root filesystem.
        std::fs::write(outside.path().join("victim"), b"v").unwrap();
        let d = layout(
            serde_json::json!({}),
            &[
                (
                    "rootfs-diff.tar",
                    &diff_with(&[("out", tar::EntryType::Symlink, &evil)]),
                ),
                ("deleted.files", b"[\"/out/victim\"]"),
            ],
        );
        let rootfs = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let e = build(d.path(), &bundle.path().join("b"), rootfs.path()).unwrap_err();
        assert!(e.message.contains("symlink out of"), "{e}");
        assert!(outside.path().join("victim").exists());
    }

    #[test]
    fn a_bundle_is_built_from_the_rootfs_the_diff_and_the_deletions() {
        let d = layout(
            serde_json::json!({"root": {"path": "/var/lib/elsewhere", "readonly": false}, "process": {"args": ["sh"]}}),
            &[
                (
                    "rootfs-diff.tar",
                    &diff_with(&[("etc/new", tar::EntryType::Regular, "")]),
                ),
                ("deleted.files", b"[\"/etc/stale\"]"),
            ],
        );
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        std::fs::write(rootfs.path().join("etc/stale"), b"s").unwrap();
        std::fs::write(rootfs.path().join("etc/kept"), b"k").unwrap();
        let b = tempfile::tempdir().unwrap();
        let bundle = b.path().join("bundle");
        build(d.path(), &bundle, rootfs.path()).unwrap();
        assert_eq!(
            std::fs::read(bundle.join("rootfs/etc/new")).unwrap(),
            b"data"
        );
        assert!(bundle.join("rootfs/etc/kept").exists());
        assert!(!bundle.join("rootfs/etc/stale").exists());
        assert!(
            rootfs.path().join("etc/stale").exists(),
            "the given rootfs is left as it is"
        );
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_eq!(
            cfg["root"]["path"],
            bundle.join("rootfs").display().to_string()
        );
        assert_eq!(cfg["process"]["args"][0], "sh");
        // A bundle directory with something in it is not overwritten.
        let e = build(d.path(), &bundle, rootfs.path()).unwrap_err();
        assert!(e.message.contains("not empty"), "{e}");
    }
}
