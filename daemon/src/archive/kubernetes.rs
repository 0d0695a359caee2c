//! `format=kubernetes`: a checkpoint written as a kubelet's checkpoint archive in CRI-O's
//! flavour, the layout checkpointctl reads and CRI-O restores (formats.md): CRIU's images in
//! `checkpoint/` (with its directory entry), `config.dump` (CRI-O's container configuration),
//! `spec.dump` (the OCI spec, with `io.container.manager: cri-o`, the JSON
//! `io.kubernetes.cri-o.Metadata` and `io.kubernetes.cri-o.Annotations` CRI-O parses),
//! `bind.mounts`, `rootfs-diff.tar`, `stats-dump` and `dump.log`.
//!
//! Where each comes from: a checkpoint that came in this layout (Podman's, a kubelet's) has its
//! `spec.dump`, `rootfs-diff.tar` and `deleted.files`; a runc container's spec is its bundle's
//! `config.json` (as long as it is the one checkpointed: same sha256), and its
//! `rootfs-diff.tar` holds what a restore elsewhere must find as it was: the files of its root
//! filesystem the tree had open for writing (CRIU's `files.img`), at the size CRIU recorded.
//! Docker and process checkpoints have no OCI spec ckptd can vouch for: refused.

use std::io::Read;
use std::path::Path;

use ckptd_api::{Checkpoint, Runtime, Target};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The most a generated `rootfs-diff.tar` may hold (it is built in memory).
const MAX_DIFF: u64 = 256 << 20;

fn unfit(cp: &Checkpoint, why: &str) -> Error {
    Error::conflict(format!(
        "checkpoint {} cannot be written as a Kubernetes checkpoint archive: {why}",
        cp.name
    ))
    .with_hint("format=kubernetes is for checkpoints of runc and Podman containers and imported container checkpoint archives")
}

/// The files the layout needs beyond the checkpoint directory's own, by path in the archive
/// (they replace the directory's files of the same path).
pub fn extras(cp: &Checkpoint, dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let record = cp.container.as_ref();
    let (mut spec, bundle) = if dir.join("spec.dump").is_file() {
        (read_json(&dir.join("spec.dump"))?, None)
    } else {
        match (&cp.target, record) {
            (
                Target::Container {
                    runtime: Runtime::Runc,
                    ..
                },
                Some(r),
            ) if !r.bundle.is_empty() => {
                let bundle = Path::new(&r.bundle);
                let path = bundle.join("config.json");
                let bytes = std::fs::read(&path).map_err(|e| {
                    unfit(
                        cp,
                        &format!("its bundle's config.json cannot be read ({e})"),
                    )
                })?;
                if format!("{:x}", Sha256::digest(&bytes)) != r.config_sha256 {
                    return Err(unfit(
                        cp,
                        &format!("{} changed since the checkpoint", path.display()),
                    ));
                }
                let spec = serde_json::from_slice(&bytes)
                    .map_err(|e| unfit(cp, &format!("{} is not JSON ({e})", path.display())))?;
                (spec, Some(bundle.to_owned()))
            }
            _ => return Err(unfit(
                cp,
                "it holds no OCI runtime spec of the container (process and Docker checkpoints)",
            )),
        }
    };
    let (container, image, pod, namespace, id) = match (&cp.origin, &cp.target) {
        (Some(o), _) => (
            o.container.clone(),
            o.image.clone(),
            o.pod.clone(),
            o.namespace.clone(),
            o.container_id.clone(),
        ),
        (None, Target::Container { id, .. }) => (id.clone(), None, None, None, None),
        (None, Target::Process { .. }) => return Err(unfit(cp, "it is a process checkpoint")),
        (None, Target::Group { .. }) => return Err(unfit(cp, "it is a group checkpoint")),
    };
    let original = spec
        .get("annotations")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut notes = original.as_object().cloned().unwrap_or_default();
    let strings = |v: Value| Value::String(v.to_string());
    notes.insert("io.container.manager".into(), "cri-o".into());
    notes.insert(
        "io.kubernetes.cri-o.Metadata".into(),
        strings(json!({"name": container, "attempt": 0})),
    );
    notes.insert("io.kubernetes.cri-o.Annotations".into(), strings(original));
    notes.insert(
        "io.kubernetes.container.name".into(),
        container.clone().into(),
    );
    if let Some(p) = &pod {
        notes.insert("io.kubernetes.pod.name".into(), p.clone().into());
    }
    if let Some(n) = &namespace {
        notes.insert("io.kubernetes.pod.namespace".into(), n.clone().into());
    }
    spec["annotations"] = Value::Object(notes);
    let checkpointed = cp.completed_at.unwrap_or(cp.created_at);
    let config = json!({
        "id": id.unwrap_or_else(|| cp.id.simple().to_string()),
        "name": container,
        "rootfsImage": image.clone().unwrap_or_default(),
        "rootfsImageRef": "",
        "rootfsImageName": image.unwrap_or_default(),
        "runtime": "runc",
        "createdTime": cp.created_at.to_rfc3339(),
        "checkpointedTime": checkpointed.to_rfc3339(),
        "restoredTime": "0001-01-01T00:00:00Z",
        "restored": false,
    });
    let mut out = vec![
        ("config.dump".to_owned(), to_vec(&config)?),
        ("spec.dump".to_owned(), to_vec(&spec)?),
    ];
    if !dir.join("bind.mounts").is_file() {
        out.push(("bind.mounts".into(), to_vec(&bind_mounts(&spec))?));
    }
    if let (Some(bundle), false) = (bundle, dir.join("rootfs-diff.tar").is_file()) {
        out.push((
            "rootfs-diff.tar".into(),
            rootfs_diff(cp, dir, &bundle, &spec)?,
        ));
    }
    Ok(out)
}

fn to_vec(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::internal(format!("cannot write JSON: {e}")))
}

fn read_json(path: &Path) -> Result<Value> {
    let mut text = Vec::new();
    crate::sys::open_regular(path)
        .and_then(|f| f.take(16 << 20).read_to_end(&mut text))
        .map_err(|e| Error::io("cannot read", path, &e))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::internal(format!("{} is not JSON: {e}", path.display())))
}

fn is_bind(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("bind")
        || m.get("options")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

/// CRI-O's `bind.mounts`: each bind mount's source as this host has it (directory or file, its
/// permissions), so that a restore elsewhere recreates what is missing.
fn bind_mounts(spec: &Value) -> Value {
    use std::os::unix::fs::PermissionsExt;
    let mounts = spec
        .get("mounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let list: Vec<Value> = mounts
        .iter()
        .filter(|m| is_bind(m))
        .filter_map(|m| {
            let source = m.get("source")?.as_str()?;
            let md = std::fs::metadata(source).ok()?;
            Some(json!({
                "source": source,
                "destination": m.get("destination")?,
                "file_type": if md.is_dir() { "directory" } else { "file" },
                "permissions": md.permissions().mode() & 0o7777,
            }))
        })
        .collect();
    Value::Array(list)
}

/// What a restore elsewhere must find in the root filesystem as it was: the files of the
/// container's root filesystem (not of its mounts) the tree had open for writing, each at the
/// size CRIU recorded.
fn rootfs_diff(cp: &Checkpoint, dir: &Path, bundle: &Path, spec: &Value) -> Result<Vec<u8>> {
    let root = spec
        .pointer("/root/path")
        .and_then(Value::as_str)
        .map(|r| bundle.join(r))
        .ok_or_else(|| unfit(cp, "its spec names no root filesystem"))?;
    let mounted: Vec<String> = spec
        .get("mounts")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("destination")?.as_str().map(str::to_owned))
                .filter(|d| d != "/")
                .collect()
        })
        .unwrap_or_default();
    let files = crate::criu::images::written_files(dir)
        .map_err(|e| Error::internal(format!("cannot read the checkpoint's files.img: {e}")))?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut total = 0u64;
    for (path, size) in files {
        if mounted
            .iter()
            .any(|m| Path::new(&path).starts_with(m.as_str()))
        {
            continue;
        }
        let rel = path.trim_start_matches('/');
        let Ok(f) = crate::sys::open_regular(&root.join(rel)) else {
            continue;
        };
        let md = f
            .metadata()
            .map_err(|e| Error::io("cannot read", &root.join(rel), &e))?;
        // At the size CRIU recorded, what the images expect whatever happened to it since; a
        // log (no size recorded) as it is.
        let size = size.unwrap_or(md.len());
        total += size;
        if total > MAX_DIFF {
            return Err(unfit(
                cp,
                &format!("the files its tree writes hold more than {MAX_DIFF} bytes"),
            ));
        }
        let mut h = tar::Header::new_gnu();
        use std::os::unix::fs::MetadataExt;
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(md.uid().into());
        h.set_gid(md.gid().into());
        h.set_mtime(md.mtime().max(0) as u64);
        let mut data = Vec::with_capacity(size as usize);
        f.take(size)
            .read_to_end(&mut data)
            .map_err(|e| Error::io("cannot read", &root.join(rel), &e))?;
        data.resize(size as usize, 0);
        tar.append_data(&mut h, rel, data.as_slice())
            .map_err(|e| Error::internal(format!("cannot write rootfs-diff.tar: {e}")))?;
    }
    tar.into_inner()
        .map_err(|e| Error::internal(format!("cannot write rootfs-diff.tar: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::container::Engine;

    /// The rules checkpointctl applies to an archive it shows (internal/utils.go,
    /// internal/container.go): an explicit `checkpoint/` directory entry, `config.dump` and
    /// `spec.dump` present, the engine from `io.container.manager`, and for CRI-O the JSON
    /// annotation `io.kubernetes.cri-o.Metadata`; CRI-O's restore also parses
    /// `io.kubernetes.cri-o.Annotations`.
    #[test]
    fn a_kubernetes_export_follows_checkpointctl_s_rules() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("inventory.img"), b"inv").unwrap();
        std::fs::write(d.path().join("pstree.img"), b"ps").unwrap();
        std::fs::write(d.path().join("stats-dump"), b"st").unwrap();
        std::fs::write(d.path().join("dump.log"), b"log").unwrap();
        std::fs::write(
            d.path().join("spec.dump"),
            br#"{"annotations":{"io.container.manager":"libpod","app":"web"},"mounts":[]}"#,
        )
        .unwrap();
        let cp = Checkpoint {
            id: uuid::Uuid::new_v4(),
            name: "c1".into(),
            target: Target::Container {
                id: "web".into(),
                runtime: Runtime::Podman,
                root: None,
                bundle: None,
                namespace: None,
            },
            status: ckptd_api::CheckpointStatus::Ready,
            created_at: chrono::Utc::now(),
            completed_at: None,
            dir: d.path().display().to_string(),
            size_bytes: 0,
            options: Default::default(),
            labels: Default::default(),
            criu_version: None,
            criu_config: None,
            container: None,
            stats: None,
            error: None,
            owner_uid: 0,
            expires_at: None,
            locations: vec![],
            origin: None,
            hooks: None,
            terminal: None,
            members: vec![],
        };
        let extra = extras(&cp, d.path()).unwrap();
        let mut out = Vec::new();
        crate::archive::container::write(d.path(), &extra, &mut out).unwrap();
        let entries = crate::archive::container::entries(&out);
        assert_eq!(entries[0], ("checkpoint/".to_owned(), true));
        for top in [
            "config.dump",
            "spec.dump",
            "stats-dump",
            "dump.log",
            "bind.mounts",
        ] {
            assert!(entries.iter().any(|(p, _)| p == top), "{top}: {entries:?}");
        }
        assert!(entries.iter().any(|(p, _)| p == "checkpoint/inventory.img"));
        assert_eq!(
            entries.iter().filter(|(p, _)| p == "spec.dump").count(),
            1,
            "the generated spec.dump replaces the directory's"
        );
        let spec: Value = extra
            .iter()
            .find(|(p, _)| p == "spec.dump")
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .unwrap();
        let notes = &spec["annotations"];
        assert_eq!(notes["io.container.manager"], "cri-o");
        let meta: Value =
            serde_json::from_str(notes["io.kubernetes.cri-o.Metadata"].as_str().unwrap()).unwrap();
        assert_eq!(meta["name"], "web");
        let orig: Value =
            serde_json::from_str(notes["io.kubernetes.cri-o.Annotations"].as_str().unwrap())
                .unwrap();
        assert_eq!(orig["app"], "web");
        // ckptd's own reader takes it as CRI-O's.
        let staging = tempfile::tempdir().unwrap();
        let f = crate::archive::import_container(out.as_slice(), staging.path(), 1 << 30).unwrap();
        assert_eq!((f.engine, f.container.as_str()), (Engine::CriO, "web"));
    }

    #[test]
    fn process_checkpoints_have_no_spec_to_write() {
        let d = tempfile::tempdir().unwrap();
        let mut cp: Checkpoint = serde_json::from_value(json!({
            "id": uuid::Uuid::new_v4(), "name": "p", "target": {"kind": "process", "pid": 1},
            "status": "ready", "created_at": chrono::Utc::now(), "completed_at": null,
            "dir": d.path(), "size_bytes": 0, "options": {}, "labels": {},
            "criu_version": null, "stats": null, "error": null
        }))
        .unwrap();
        cp.dir = d.path().display().to_string();
        let e = extras(&cp, d.path()).unwrap_err();
        assert!(e.message.contains("no OCI runtime spec"), "{e}");
    }
}
