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

/// The capabilities a container gets from runc, Docker and Podman by default: anything beyond
/// them in a foreign spec is privilege on this host, refused.
const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The namespaces a container must have of its own: without one, it shares the host's.
const OWN_NAMESPACES: [&str; 5] = ["pid", "mount", "network", "ipc", "uts"];

/// Host paths a foreign spec may not bind into a container: the host's root and system
/// directories, the kernel's and devices' file systems, root's home, and the container
/// runtimes' sockets (each of which is root on the host).
fn host_sensitive(p: &Path) -> bool {
    const EXACT: [&str; 16] = [
        "/", "/etc", "/root", "/home", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/var", "/run",
        "/boot", "/opt", "/srv", "/tmp", "/var/run",
    ];
    const UNDER: [&str; 5] = ["/proc", "/sys", "/dev", "/boot", "/root"];
    EXACT.iter().any(|e| p == Path::new(e))
        || UNDER.iter().any(|u| p.starts_with(u))
        || p.extension().is_some_and(|e| e == "sock")
        || p.file_name().is_some_and(|n| n == "ckptd.sock")
}

/// The parts of a foreign OCI spec (`spec.dump`) that would act on this host rather than in the
/// container: privileged capabilities, host devices, host namespaces, an unconfined AppArmor
/// profile or a seccomp filter that allows everything, binds of host system paths. Each is a
/// reason to refuse the restore, in words for the caller. Hooks are not here: they are stripped
/// (`strip_hooks`).
pub fn host_affecting(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        let caps = spec
            .pointer(&format!("/process/capabilities/{set}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in caps.iter().filter_map(Value::as_str) {
            if !DEFAULT_CAPS.contains(&c) && !extra.iter().any(|x| x == c) {
                extra.push(c.to_owned());
            }
        }
    }
    if !extra.is_empty() {
        out.push(format!(
            "the spec grants capabilities beyond a container's defaults ({}): privilege on \
             this host",
            extra.join(", ")
        ));
    }
    let devices: Vec<String> = spec
        .pointer("/linux/devices")
        .and_then(Value::as_array)
        .map(|d| {
            d.iter()
                .filter_map(|x| x.get("path").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if !devices.is_empty() {
        out.push(format!(
            "the spec gives the container host devices ({})",
            devices.join(", ")
        ));
    }
    let every_device = spec
        .pointer("/linux/resources/devices")
        .and_then(Value::as_array)
        .is_some_and(|rules| {
            rules.iter().any(|r| {
                r.get("allow").and_then(Value::as_bool) == Some(true)
                    && r.get("type")
                        .and_then(Value::as_str)
                        .is_none_or(|t| t == "a")
                    && r.get("major").is_none_or(Value::is_null)
                    && r.get("minor").is_none_or(Value::is_null)
            })
        });
    if every_device {
        out.push("the spec allows the container every device of the host".into());
    }
    let namespaces: Vec<String> = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .map(|n| {
            n.iter()
                .filter_map(|x| x.get("type").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let shared: Vec<&str> = OWN_NAMESPACES
        .iter()
        .copied()
        .filter(|k| !namespaces.iter().any(|n| n == k))
        .collect();
    if !shared.is_empty() {
        out.push(format!(
            "the container would share the host's {} namespace{}",
            shared.join(", "),
            if shared.len() > 1 { "s" } else { "" }
        ));
    }
    if spec
        .pointer("/process/apparmorProfile")
        .and_then(Value::as_str)
        == Some("unconfined")
    {
        out.push("the spec runs the container unconfined by AppArmor".into());
    }
    if let Some(seccomp) = spec.pointer("/linux/seccomp").filter(|s| !s.is_null()) {
        let allow_all = seccomp.get("defaultAction").and_then(Value::as_str)
            == Some("SCMP_ACT_ALLOW")
            && seccomp
                .get("syscalls")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if allow_all {
            out.push("the spec's seccomp filter allows every system call".into());
        }
    }
    for m in spec
        .get("mounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let bind = m.get("type").and_then(Value::as_str) == Some("bind")
            || m.get("options")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"));
        let source = m.get("source").and_then(Value::as_str).unwrap_or("");
        if bind && normal_absolute(source).is_some_and(|p| host_sensitive(&p)) {
            out.push(format!(
                "the spec binds the host's {source} into the container at {}",
                m.get("destination").and_then(Value::as_str).unwrap_or("?")
            ));
        }
    }
    out
}

/// Removes the spec's hooks (the origin host's commands, which runc would run as root on this
/// host) and says which were there.
pub fn strip_hooks(spec: &mut Value) -> Vec<String> {
    let Some(hooks) = spec.get("hooks").and_then(Value::as_object).cloned() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (stage, list) in hooks {
        for h in list.as_array().cloned().unwrap_or_default() {
            let path = h.get("path").and_then(Value::as_str).unwrap_or("?");
            out.push(format!("hooks.{stage}: {path}"));
        }
    }
    if let Some(o) = spec.as_object_mut() {
        o.remove("hooks");
    }
    out
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
    let mut out = host_affecting(&spec);
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
/// `cp_dir` from root filesystem `rootfs`; `rootfs-diff.tar` may expand to at most `limit`
/// bytes (`import_max_bytes`). A failed build leaves `bundle` as it found it. What was stripped
/// from the spec (its hooks), for the job to report.
pub fn build(cp_dir: &Path, bundle: &Path, rootfs: &Path, limit: u64) -> Result<Vec<String>> {
    let existed = bundle.exists();
    let built = build_in(cp_dir, bundle, rootfs, limit);
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

fn build_in(cp_dir: &Path, bundle: &Path, rootfs: &Path, limit: u64) -> Result<Vec<String>> {
    let mut spec: Value = read_json(cp_dir, "spec.dump")?
        .ok_or_else(|| refused("the checkpoint has no spec.dump (its OCI runtime spec)"))?;
    // Checked at admission too; again here, on the very file the bundle is built from.
    let refusals = host_affecting(&spec);
    if !refusals.is_empty() {
        return Err(refused(format!(
            "the checkpoint's spec.dump would act on this host: {}",
            refusals.join("; ")
        ))
        .with("problems", refusals));
    }
    let stripped = strip_hooks(&mut spec);
    if !stripped.is_empty() {
        tracing::warn!(?stripped, "stripped the hooks of a foreign spec");
    }
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
    apply_diff(cp_dir, &root, limit)?;
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
    std::fs::write(&config, text).map_err(|e| Error::io("cannot write", &config, &e))?;
    Ok(stripped)
}

/// A reader that fails once more than `left` bytes have come through it: a compressed
/// `rootfs-diff.tar` is bounded by what it expands to, not by its size on disk.
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("it expands past import_max_bytes ({} bytes)", self.limit),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
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

/// Applies `rootfs-diff.tar` (plain, or gzip as containerd writes it) to `root`, reading at most
/// `limit` bytes of the expanded tar.
fn apply_diff(cp_dir: &Path, root: &Path, limit: u64) -> Result<()> {
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
    let mut archive = tar::Archive::new(Bounded {
        inner: reader,
        left: limit,
        limit,
    });
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

    /// The namespaces a container has of its own, as a spec lists them.
    fn own_namespaces() -> Value {
        serde_json::json!(OWN_NAMESPACES
            .iter()
            .map(|t| serde_json::json!({"type": t}))
            .collect::<Vec<_>>())
    }

    /// A checkpoint directory with `spec.dump` (given its own namespaces when it names none).
    fn layout(mut spec: Value, extra: &[(&str, &[u8])]) -> tempfile::TempDir {
        if spec.pointer("/linux/namespaces").is_none() {
            spec["linux"] = serde_json::json!({"namespaces": own_namespaces()});
        }
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
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"},
                                     {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]},
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
    fn foreign_specs_that_would_act_on_the_host_are_refused_and_hooks_stripped() {
        let cases: Vec<(Value, &str)> = vec![
            (
                serde_json::json!({"process": {"capabilities": {"bounding": ["CAP_KILL", "CAP_SYS_ADMIN"]}}}),
                "capabilities beyond a container's defaults (CAP_SYS_ADMIN)",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}],
                                             "devices": [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]}}),
                "host devices (/dev/sda)",
            ),
            (
                serde_json::json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}]}}),
                "share the host's pid namespace",
            ),
            (
                serde_json::json!({"linux": {"namespaces": own_namespaces(),
                                             "resources": {"devices": [{"allow": true, "access": "rwm"}]}}}),
                "every device of the host",
            ),
            (
                serde_json::json!({"process": {"apparmorProfile": "unconfined"}}),
                "unconfined by AppArmor",
            ),
            (
                serde_json::json!({"linux": {"namespaces": own_namespaces(), "seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}}}),
                "allows every system call",
            ),
            (
                serde_json::json!({"mounts": [{"destination": "/host", "type": "bind", "source": "/", "options": ["rbind"]}]}),
                "binds the host's / into the container at /host",
            ),
            (
                serde_json::json!({"mounts": [{"destination": "/var/run/docker.sock", "type": "bind",
                                               "source": "/var/run/docker.sock", "options": ["bind"]}]}),
                "binds the host's /var/run/docker.sock",
            ),
        ];
        for (spec, says) in cases {
            let d = layout(spec, &[]);
            let p = problems(d.path()).unwrap();
            assert!(p.iter().any(|x| x.contains(says)), "{says}: {p:?}");
            let rootfs = tempfile::tempdir().unwrap();
            let bundle = tempfile::tempdir().unwrap();
            let e = build(d.path(), &bundle.path().join("b"), rootfs.path(), 1 << 30).unwrap_err();
            assert!(e.message.contains(says), "{says}: {e}");
            assert!(
                !bundle.path().join("b").exists(),
                "{says}: the bundle stays"
            );
        }
        // Hooks are the origin host's commands: stripped, and said.
        let d = layout(
            serde_json::json!({"hooks": {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "id"]}],
                                         "createRuntime": [{"path": "/usr/bin/setup"}]}}),
            &[],
        );
        assert!(problems(d.path()).unwrap().is_empty());
        let rootfs = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let b = bundle.path().join("b");
        let stripped = build(d.path(), &b, rootfs.path(), 1 << 30).unwrap();
        assert_eq!(
            stripped,
            [
                "hooks.createRuntime: /usr/bin/setup",
                "hooks.prestart: /bin/sh"
            ]
        );
        let config: Value =
            serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
        assert!(config.get("hooks").is_none(), "{config}");
    }

    #[test]
    fn a_diff_is_bounded_by_what_it_expands_to() {
        // 64 MiB of zeros, gzip'd to a few tens of KiB, against a 16 MiB limit.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(64 << 20);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, "zeros", std::io::repeat(0).take(64 << 20))
            .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let d = layout(serde_json::json!({}), &[("rootfs-diff.tar", &bomb)]);
        let rootfs = tempfile::tempdir().unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let b = bundle.path().join("b");
        let e = build(d.path(), &b, rootfs.path(), 16 << 20).unwrap_err();
        assert!(e.message.contains("expands past import_max_bytes"), "{e}");
        assert!(!b.exists(), "the half-built bundle is removed");
        build(d.path(), &b, rootfs.path(), 128 << 20).unwrap();
        assert_eq!(
            std::fs::metadata(b.join("rootfs/zeros")).unwrap().len(),
            64 << 20
        );
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
            let e = build(d.path(), &bundle.path().join("b"), rootfs.path(), 1 << 30).unwrap_err();
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
        let e = build(d.path(), &bundle.path().join("b"), rootfs.path(), 1 << 30).unwrap_err();
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
        build(d.path(), &bundle, rootfs.path(), 1 << 30).unwrap();
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
        let e = build(d.path(), &bundle, rootfs.path(), 1 << 30).unwrap_err();
        assert!(e.message.contains("not empty"), "{e}");
    }
}
