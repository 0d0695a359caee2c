//! OCI registries as remotes: a checkpoint pushed is a **checkpoint image**, the layout Podman
//! makes with `podman container checkpoint --create-image` and restores with `podman container
//! restore IMAGE`, in the configured repository under a tag.
//!
//! An image is a manifest (OCI image manifest), a minimal image configuration and one layer: the
//! checkpoint as an archive, gzip-compressed (level 1: CRIU's pages are the bulk, and the layer is
//! made while it uploads). Which archive depends on who must restore it:
//!
//! - a checkpoint of a Podman container that holds Podman's configuration: Podman's layout (the
//!   `--export` archive), with Podman's `io.podman.annotations.checkpoint.*` annotations, so
//!   `podman container restore REGISTRY/REPO:TAG` restores it;
//! - any other checkpoint: ckptd's own archive (files and a manifest with every file's sha256),
//!   which only ckptd restores.
//!
//! Either way the manifest carries `io.ckptd.checkpoint` (the checkpoint's record: what `ckpt ls
//! --registry` shows and a pull catalogues) and `io.ckptd.layout`. A layer encrypted to the
//! registry's age recipients has ckptd's own media type: Podman and CRI-O cannot restore it.
//!
//! Pulls are by digest (the copy records the manifest's), and both digests are checked against
//! the bytes: a registry that answers other bytes than were pushed is refused. The layer is
//! streamed through the archive import's rules (plain names, no links, size limit), Podman's own
//! images included (recognised by `io.podman.annotations.checkpoint.name`).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ckptd_api::{Checkpoint, CheckpointStatus, RemoteCheckpoint, RemoteCopy, RemoteInfo, Target};
use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::transfer::{stopped, Hashing, Sink, StopFlag};
use super::{read_secret_file, valid_name, Backend, Pushed, Remote};
use crate::archive::{self, Compression, Import, Manifest};
use crate::config::RegistrySpec;
use crate::error::{Error, ErrorKind, Result};
use crate::stop::StopSignal;
use ckptd_api::ArchiveFormat;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// A gzip layer encrypted with age (ckptd to ckptd only).
pub const LAYER_GZIP_AGE: &str = "application/vnd.ckptd.checkpoint.layer.v1.tar+gzip+age";

/// Podman's annotations of a checkpoint image (libpod/define/annotations.go).
pub const PODMAN_NAME: &str = "io.podman.annotations.checkpoint.name";
/// CRI-O's: a checkpoint image is one whose manifest names its container so.
pub const CRIO_NAME: &str = "io.kubernetes.cri-o.annotations.checkpoint.name";
const PODMAN_PREFIX: &str = "io.podman.annotations.checkpoint.";
/// ckptd's: the checkpoint's record, and which archive the layer holds.
pub const CKPTD_RECORD: &str = "io.ckptd.checkpoint";
pub const CKPTD_LAYOUT: &str = "io.ckptd.layout";
const CREATED: &str = "org.opencontainers.image.created";

/// The most of a manifest ckptd reads (a checkpoint image's is a few KiB).
const MAX_MANIFEST: usize = 4 << 20;
/// Tags a listing reads, and manifests fetched at once while listing.
const MAX_LISTED: usize = 1000;
const LIST_CONCURRENCY: usize = 8;
/// Chunks of a blob upload (each a PATCH).
const UPLOAD_CHUNK: usize = 8 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    username: String,
    password: String,
}

/// A configured registry: the client, its credentials and the repository.
pub struct Registry {
    client: Client,
    /// For what the registry client lacks (deletes), with the same trust.
    http: reqwest::Client,
    scheme: &'static str,
    auth: RegistryAuth,
    /// `host[:port]`, as references name it.
    host: String,
    repository: String,
}

/// The record `io.ckptd.checkpoint` holds: the checkpoint as the pushing host had it (without
/// locations: the image's own digest cannot be in it) and that host's name.
#[derive(Serialize, Deserialize)]
struct Record {
    checkpoint: Checkpoint,
    pushed_from: String,
}

/// Whether a repository name is one the distribution spec allows (lowercase components
/// separated by `/`).
fn valid_repository(r: &str) -> bool {
    let component = |c: &str| {
        !c.is_empty()
            && c.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && c.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
            && c.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    };
    r.len() <= 255 && r.split('/').all(component)
}

/// Whether `t` is a valid tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub fn valid_tag(t: &str) -> bool {
    t.len() <= 128
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl Remote {
    /// A registry remote from `[registries.NAME]`, its files read and checked. Nothing is sent
    /// to the registry here.
    pub fn registry(name: &str, spec: &RegistrySpec) -> anyhow::Result<Remote> {
        if !valid_name(name) {
            bail!("registry name {name:?}: use letters, digits, '-' and '_' (at most 64)");
        }
        let ctx = |what: &str| format!("registries.{name}: {what}");
        let url = spec.url.trim_end_matches('/');
        let (plain, host) = if let Some(h) = url.strip_prefix("https://") {
            (false, h)
        } else if let Some(h) = url.strip_prefix("http://") {
            if !spec.plain_http {
                bail!(
                    "{}",
                    ctx(&format!(
                        "url {url:?} is plain HTTP, which sends images (process memory) and \
                         credentials unprotected; use https://, or set plain_http = true for a \
                         test registry on loopback"
                    ))
                );
            }
            (true, h)
        } else {
            bail!(
                "{}",
                ctx(&format!(
                    "url {url:?} must start with https:// (or http:// with plain_http = true)"
                ))
            );
        };
        if host.is_empty() || host.contains('/') {
            bail!(
                "{}",
                ctx(&format!(
                    "url {url:?} must be the registry's address alone (https://host[:port]); the \
                     repository goes in `repository`"
                ))
            );
        }
        if !valid_repository(&spec.repository) {
            bail!(
                "{}",
                ctx(&format!(
                    "repository {:?} is not a valid repository name: lowercase letters, digits \
                     and . _ - in components separated by /",
                    spec.repository
                ))
            );
        }
        let (auth, credentials) = match &spec.credentials_file {
            Some(f) => {
                let text = read_secret_file(&ctx("credentials_file"), f)?;
                let c: CredentialsFile = toml::from_str(&text).with_context(|| {
                    format!(
                        "{}: give username and password (TOML)",
                        ctx(&format!("credentials_file {}", f.display()))
                    )
                })?;
                (RegistryAuth::Basic(c.username, c.password), "file")
            }
            None => (RegistryAuth::Anonymous, "anonymous"),
        };
        let mut extra_root_certificates = Vec::new();
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("ckptd/", env!("CARGO_PKG_VERSION")));
        if let Some(f) = &spec.ca_file {
            let pem = std::fs::read(f)
                .with_context(|| ctx(&format!("cannot read ca_file {}", f.display())))?;
            if pem.len() > 1 << 20 || !pem.starts_with(b"-----BEGIN") {
                bail!(
                    "{}",
                    ctx(&format!(
                        "ca_file {} is not a PEM certificate (-----BEGIN CERTIFICATE-----)",
                        f.display()
                    ))
                );
            }
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).with_context(
                || ctx(&format!("ca_file {} is not a PEM certificate", f.display())),
            )?);
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem,
            });
        }
        let (recipients, identities) = super::age_keys(
            &ctx,
            &spec.age_recipients,
            spec.age_identity_file.as_deref(),
        )?;
        let client = Client::new(ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates,
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("ckptd/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        });
        Ok(Remote {
            name: name.to_owned(),
            info: RemoteInfo {
                name: name.to_owned(),
                kind: "registry".into(),
                endpoint: url.to_owned(),
                bucket: String::new(),
                prefix: String::new(),
                repository: Some(spec.repository.clone()),
                region: String::new(),
                addressing: String::new(),
                credentials: credentials.into(),
                encrypted: !recipients.is_empty(),
                can_decrypt: !identities.is_empty(),
                reachable: false,
                error: None,
            },
            backend: Backend::Registry(Arc::new(Registry {
                client,
                http: http
                    .build()
                    .with_context(|| ctx("cannot configure the HTTP client"))?,
                scheme: if plain { "http" } else { "https" },
                auth,
                host: host.to_owned(),
                repository: spec.repository.clone(),
            })),
            prefix: String::new(),
            recipients,
            identities: Arc::new(identities),
            part_size: super::MIN_PART,
            concurrency: 1,
        })
    }
}

/// The HTTP status a failed request stands for: the server's, or the one the registry's error
/// code means.
fn status_of(e: &oci_client::errors::OciDistributionError) -> Option<u16> {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => Some(401),
        E::ServerError { code, .. } => Some(*code),
        E::ImageManifestNotFoundError(_) => Some(404),
        E::RegistryError { envelope, .. } => envelope.errors.iter().find_map(|o| match o.code {
            C::NameUnknown | C::ManifestUnknown | C::BlobUnknown | C::NotFound => Some(404),
            C::Unauthorized => Some(401),
            C::Denied => Some(403),
            C::Toomanyrequests => Some(429),
            _ => None,
        }),
        _ => super::http_status(&super::error_chain(e)),
    }
}

/// What a failed registry request says, as an error of `remote`'s (`details.status` when the
/// registry answered with one).
fn failed(remote: &Remote, what: &str, e: oci_client::errors::OciDistributionError) -> Error {
    let text = super::error_chain(&e);
    if let oci_client::errors::OciDistributionError::DigestError(d) = &e {
        // The registry served other bytes than the digest names: not a fault of the link.
        return Error::new(
            ErrorKind::RemoteFailed,
            format!(
                "registry {}: {what}: refused, the registry answered bytes whose digest does not \
                 match: {d}",
                remote.name
            ),
        )
        .with("remote", remote.name.clone())
        .with_hint("the image is damaged or was altered; push it again");
    }
    let status = status_of(&e);
    let kind = if status == Some(404) {
        ErrorKind::NotFound
    } else {
        ErrorKind::RemoteFailed
    };
    let mut err = Error::new(
        kind,
        format!(
            "registry {} ({}) could not {what}: {text}",
            remote.name, remote.info.endpoint
        ),
    )
    .with("remote", remote.name.clone());
    if let Some(s) = status {
        err = err.with("status", s);
    }
    match status {
        Some(401 | 403) => err.with_advice(ckptd_api::Advice::CheckRemote { credentials: true }),
        Some(404) => err.with_advice(ckptd_api::Advice::ListRemoteCheckpoints {
            remote: remote.name.clone(),
        }),
        _ => err.with_advice(ckptd_api::Advice::CheckRemote { credentials: false }),
    }
}

/// An image the registry answered that is not what was asked for or not a checkpoint image
/// ckptd can take: refused, nothing kept.
fn refused(remote: &Remote, what: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::RemoteFailed,
        format!("registry {}: {what} is refused: {why}", remote.name),
    )
    .with("remote", remote.name.clone())
    .with_hint("the image is damaged, was altered, or is not a checkpoint image; push it again")
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// A manifest as ckptd reads it.
#[derive(Deserialize)]
struct ImageManifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    layers: Vec<Descriptor>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Clone)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
}

/// `Write` that hashes what passes (an uncompressed layer's diff id).
struct DiffId<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for DiffId<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hash.update(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Registry {
    fn tagged(&self, tag: &str) -> Reference {
        Reference::with_tag(self.host.clone(), self.repository.clone(), tag.to_owned())
    }

    fn by_digest(&self, hex: &str) -> Reference {
        Reference::with_digest(
            self.host.clone(),
            self.repository.clone(),
            format!("sha256:{hex}"),
        )
    }

    /// The copy's key, `repository:tag`.
    fn key(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
    }

    /// The tag of a copy's key of this registry's repository.
    fn tag_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.repository)?.strip_prefix(':')
    }

    /// `GET /v1/remotes`: reachable when the repository's tag list answers (an empty or new
    /// repository's 404 included: the registry answered and took the credentials).
    pub async fn info(&self, mut info: RemoteInfo) -> RemoteInfo {
        let repo = self.tagged("latest");
        let probe = self.client.list_tags(&repo, &self.auth, Some(1), None);
        match tokio::time::timeout(Duration::from_secs(10), probe).await {
            Ok(Ok(_)) => info.reachable = true,
            Ok(Err(e)) if status_of(&e) == Some(404) => info.reachable = true,
            Ok(Err(e)) => info.error = Some(super::error_chain(&e)),
            Err(_) => info.error = Some("no answer within 10 s".into()),
        }
        info
    }

    /// The manifest `reference` names, its digest checked against its bytes (and against
    /// `expect` when the reference is a digest).
    async fn manifest(
        &self,
        remote: &Remote,
        reference: &Reference,
        expect: Option<&str>,
    ) -> Result<(ImageManifest, String)> {
        let shown = reference.whole();
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &[OCI_MANIFEST, DOCKER_MANIFEST])
            .await
            .map_err(|e| failed(remote, &format!("read the manifest of {shown}"), e))?;
        if bytes.len() > MAX_MANIFEST {
            return Err(refused(
                remote,
                &shown,
                format!(
                    "its manifest is {} bytes (at most {MAX_MANIFEST})",
                    bytes.len()
                ),
            ));
        }
        let digest = sha256_hex(&bytes);
        if let Some(want) = expect {
            if digest != want {
                return Err(refused(
                    remote,
                    &shown,
                    format!(
                        "the registry answered a manifest whose sha256 is {digest}, not {want}"
                    ),
                ));
            }
        }
        let m: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
            refused(
                remote,
                &shown,
                format!("its manifest is not an image manifest: {e}"),
            )
        })?;
        if let Some(t) = &m.media_type {
            if t != OCI_MANIFEST && t != DOCKER_MANIFEST {
                return Err(refused(remote, &shown, format!("its manifest is a {t}")));
            }
        }
        Ok((m, digest))
    }

    /// The checkpoint an image is, from its manifest: ckptd's record, or a checkpoint of the
    /// Podman container Podman's annotations name. None for an image that is no checkpoint.
    fn entry(
        &self,
        remote: &Remote,
        tag: &str,
        m: &ImageManifest,
        digest: &str,
    ) -> Option<RemoteCheckpoint> {
        let layer = m.layers.first()?;
        let encrypted = layer.media_type == LAYER_GZIP_AGE;
        let created = m
            .annotations
            .get(CREATED)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let copy = RemoteCopy {
            remote: remote.name.clone(),
            key: self.key(tag),
            size_bytes: layer.size,
            sha256: digest.to_owned(),
            pushed_at: created.unwrap_or_else(crate::catalog::now),
            encrypted,
        };
        let (mut checkpoint, pushed_from) = if let Some(r) = m
            .annotations
            .get(CKPTD_RECORD)
            .and_then(|r| serde_json::from_str::<Record>(r).ok())
        {
            let mut c = r.checkpoint;
            if m.annotations.get(CKPTD_LAYOUT).map(String::as_str) == Some("kubernetes") {
                // CRI-O's layout: pulled, it is what a kubelet's archive imports as (a runc
                // container made from the image's root filesystem), whatever it was taken of.
                let container = m.annotations.get(CRIO_NAME).cloned().unwrap_or_default();
                let foreign = foreign_checkpoint("cri-o", &container, tag, digest, m, created);
                c.target = foreign.target;
                c.origin = foreign.origin;
                c.container = None;
            }
            (c, r.pushed_from)
        } else {
            let (engine, container) = match m.annotations.get(PODMAN_NAME) {
                Some(c) => ("podman", c.clone()),
                None => ("cri-o", m.annotations.get(CRIO_NAME)?.clone()),
            };
            (
                foreign_checkpoint(engine, &container, tag, digest, m, created),
                String::new(),
            )
        };
        checkpoint.locations = vec![ckptd_api::Location::Remote(copy.clone())];
        Some(RemoteCheckpoint {
            checkpoint,
            object: copy,
            pushed_from,
        })
    }

    /// The checkpoint images of the repository, newest first: every tag's manifest read (at
    /// most 1000 tags); images that are not checkpoints are left out.
    pub async fn list(&self, remote: &Remote) -> Result<Vec<RemoteCheckpoint>> {
        let tags = match self
            .client
            .list_tags(&self.tagged("latest"), &self.auth, Some(MAX_LISTED), None)
            .await
        {
            Ok(t) => t.tags,
            // A repository nothing was pushed to yet.
            Err(e) if status_of(&e) == Some(404) => vec![],
            Err(e) => return Err(failed(remote, "list the repository's tags", e)),
        };
        let read = futures_util::stream::iter(tags.into_iter().take(MAX_LISTED))
            .map(|tag| async move {
                let got = self.manifest(remote, &self.tagged(&tag), None).await;
                (tag, got)
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for (tag, got) in read {
            match got {
                Ok((m, digest)) => out.extend(self.entry(remote, &tag, &m, &digest)),
                Err(e) => {
                    tracing::warn!(registry = %remote.name, %tag, error = %e.message, "skipping a tag that cannot be read")
                }
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.object.pushed_at));
        Ok(out)
    }

    /// One checkpoint image, by tag, by `sha256:` digest, or by checkpoint id.
    pub async fn find(&self, remote: &Remote, reference: &str) -> Result<RemoteCheckpoint> {
        let not_found = || {
            Error::not_found(format!(
                "registry {} holds no checkpoint image {reference:?} in {}",
                remote.name, self.repository
            ))
            .with_advice(ckptd_api::Advice::ListRemoteCheckpoints {
                remote: remote.name.clone(),
            })
        };
        if let Ok(id) = reference.parse::<Uuid>() {
            return self
                .list(remote)
                .await?
                .into_iter()
                .find(|r| r.checkpoint.id == id)
                .ok_or_else(not_found);
        }
        let tag = self.tag_of(reference).unwrap_or(reference);
        if let Some(hex) = tag.strip_prefix("sha256:") {
            // The tag a digest is listed under, when it has one.
            return self
                .list(remote)
                .await?
                .into_iter()
                .find(|r| r.object.sha256 == hex)
                .ok_or_else(not_found);
        }
        if !valid_tag(tag) {
            return Err(Error::invalid(format!(
                "{reference:?} is not a tag, a sha256: digest or a checkpoint id"
            )));
        }
        let (m, digest) = match self.manifest(remote, &self.tagged(tag), None).await {
            Err(e) if e.kind == ErrorKind::NotFound => return Err(not_found()),
            r => r?,
        };
        self.entry(remote, tag, &m, &digest).ok_or_else(|| {
            Error::conflict(format!(
                "{}:{tag} in registry {} is not a checkpoint image (no {CKPTD_RECORD} or \
                 {PODMAN_NAME} annotation)",
                self.repository, remote.name
            ))
        })
    }

    /// Deletes the image copy `key` (`repository:tag`) recorded with manifest digest `sha256`:
    /// by that digest (`DELETE /v2/<repository>/manifests/<digest>`), so a tag pushed again
    /// since names another image that stays. An image already gone is fine.
    pub async fn delete(&self, remote: &Remote, key: &str, sha256: Option<&str>) -> Result<()> {
        let Some(hex) = sha256 else {
            return Ok(());
        };
        if self.tag_of(key).is_none()
            || hex.len() != 64
            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::conflict(format!(
                "registry {}: {key} is not an image of repository {}; nothing was deleted",
                remote.name, self.repository
            )));
        }
        let reference = self.by_digest(hex);
        let token = self
            .client
            .auth(&reference, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| failed(remote, "sign in for a delete", e))?;
        let url = format!(
            "{}://{}/v2/{}/manifests/sha256:{hex}",
            self.scheme, self.host, self.repository
        );
        let mut req = self.http.delete(&url);
        req = match (&token, &self.auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            _ => req,
        };
        let answer = req.send().await.map_err(|e| {
            Error::new(
                ErrorKind::RemoteFailed,
                format!(
                    "registry {} ({}) could not delete {key}: {}",
                    remote.name,
                    remote.info.endpoint,
                    super::error_chain(&e)
                ),
            )
            .with("remote", remote.name.clone())
            .with_advice(ckptd_api::Advice::CheckRemote { credentials: false })
        })?;
        let status = answer.status().as_u16();
        match status {
            200..=299 | 404 => Ok(()),
            _ => {
                let body = answer.text().await.unwrap_or_default();
                let mut err = Error::new(
                    ErrorKind::RemoteFailed,
                    format!(
                        "registry {} ({}) could not delete {key}: HTTP {status} {}",
                        remote.name,
                        remote.info.endpoint,
                        body.chars().take(300).collect::<String>().trim()
                    ),
                )
                .with("remote", remote.name.clone())
                .with("status", status);
                err = match status {
                    401 | 403 => {
                        err.with_advice(ckptd_api::Advice::CheckRemote { credentials: true })
                    }
                    405 => err.with_hint(
                        "the registry does not allow deletes: enable them in its configuration \
                         (distribution: storage.delete.enabled: true)",
                    ),
                    _ => err.with_advice(ckptd_api::Advice::CheckRemote { credentials: false }),
                };
                Err(err)
            }
        }
    }

    /// Pushes checkpoint `cp` (its images in `dir`) as a checkpoint image tagged `tag`: the
    /// layer is made and uploaded in one stream (no temporary file), then the configuration,
    /// then the manifest, which makes the image visible.
    pub async fn push(
        &self,
        remote: &Remote,
        dir: PathBuf,
        manifest: Manifest,
        cp: &Checkpoint,
        options: &super::PushOptions,
        mut stop: StopSignal,
    ) -> Result<Pushed> {
        let started = std::time::Instant::now();
        let format = options.format;
        let tag = options.tag.clone().unwrap_or_else(|| cp.name.clone());
        if !valid_tag(&tag) {
            return Err(Error::invalid(format!(
                "tag {tag:?} is not a valid image tag: letters, digits, '_', '.' and '-', at most \
                 128, not starting with '.' or '-'"
            )));
        }
        let reference = self.tagged(&tag);
        self.client
            .auth(&reference, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| failed(remote, "sign in for a push", e))?;
        let podman = is_podman_layout(cp, &dir);
        let layout = match format {
            None if podman => ArchiveFormat::Podman,
            None => ArchiveFormat::Ckptd,
            Some(ArchiveFormat::Podman) if !podman => {
                return Err(Error::conflict(format!(
                    "checkpoint {} is not of a Podman container, or holds no Podman \
                     configuration (config.dump, spec.dump): format=podman is for checkpoints \
                     of Podman containers",
                    cp.name
                ))
                .with_advice(ckptd_api::Advice::WithoutFormat))
            }
            Some(f) => f,
        };
        // CRI-O's files, made before anything is sent: a checkpoint that cannot be written so
        // fails here, with nothing uploaded.
        let extra = match layout {
            ArchiveFormat::Kubernetes => {
                let (c, d) = (cp.clone(), dir.clone());
                tokio::task::spawn_blocking(move || archive::kubernetes::extras(&c, &d))
                    .await
                    .map_err(|e| Error::internal(format!("the layer task failed: {e}")))??
            }
            _ => vec![],
        };
        // The held folder (the path names its descriptor), for Podman's annotations below.
        let held = dir.clone();
        let (tx, rx) = mpsc::channel::<Bytes>(2);
        let recipients = remote.recipients.clone();
        let producer = tokio::task::spawn_blocking(move || -> io::Result<String> {
            let mut sink = Sink::new(tx, UPLOAD_CHUNK);
            let diff = {
                let write_layer = |out: &mut dyn Write| -> io::Result<String> {
                    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                    let mut tar = DiffId {
                        inner: gz,
                        hash: Sha256::new(),
                    };
                    match layout {
                        ArchiveFormat::Ckptd => {
                            archive::export(&dir, manifest, Compression::None, &mut tar)?
                        }
                        _ => archive::container::export(&dir, &extra, Compression::None, &mut tar)?,
                    }
                    tar.inner.finish()?;
                    Ok(format!("{:x}", tar.hash.finalize()))
                };
                if recipients.is_empty() {
                    write_layer(&mut sink)?
                } else {
                    let enc = age::Encryptor::with_recipients(
                        recipients.iter().map(|r| r as &dyn age::Recipient),
                    )
                    .map_err(io::Error::other)?;
                    let mut w = enc.wrap_output(&mut sink)?;
                    let d = write_layer(&mut w)?;
                    w.finish()?;
                    d
                }
            };
            sink.flush()?;
            Ok(diff)
        });
        let sent = options.progress.clone();
        let body = futures_util::stream::unfold(rx, move |mut rx| {
            let sent = sent.clone();
            async move {
                let b = rx.recv().await?;
                sent.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Some((Ok(b), rx))
            }
        });
        // Boxed, so that dropping it drops the stream's receiver: a producer blocked on a full
        // channel then gets BrokenPipe and ends.
        let mut upload = Box::pin(self.client.push_blob_stream_chunked(&reference, body));
        let uploaded = tokio::select! {
            u = &mut upload => u.map_err(|e| failed(remote, &format!("upload the layer of {}", reference.whole()), e)),
            _ = stop.changed() => Err(stopped(*stop.borrow(), "push")),
        };
        drop(upload);
        let produced = producer
            .await
            .map_err(|e| Error::internal(format!("the layer task failed: {e}")))?;
        let layer = uploaded?;
        let diff_id = produced.map_err(|e| {
            Error::internal(format!(
                "cannot read the checkpoint's images for the push: {e}"
            ))
        })?;
        let now = crate::catalog::now();
        let config = serde_json::json!({
            "created": now,
            "architecture": oci_arch(),
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
            "history": [{"created": now, "created_by": concat!("ckptd ", env!("CARGO_PKG_VERSION"))}],
        });
        let config = serde_json::to_vec(&config).expect("serializes");
        let config_digest = format!("sha256:{}", sha256_hex(&config));
        self.client
            .push_blob(&reference, config.clone(), &config_digest)
            .await
            .map_err(|e| failed(remote, "upload the image configuration", e))?;
        let encrypted = !remote.recipients.is_empty();
        let mut annotations = match layout {
            ArchiveFormat::Podman => podman_annotations(&held, cp),
            ArchiveFormat::Kubernetes => std::collections::BTreeMap::from([(
                CRIO_NAME.to_owned(),
                match &cp.target {
                    Target::Container { id, .. } => id.clone(),
                    Target::Process { pid } => pid.to_string(),
                    Target::Group { .. } => cp.name.clone(),
                },
            )]),
            ArchiveFormat::Ckptd => std::collections::BTreeMap::new(),
        };
        let mut listed = cp.clone();
        listed.locations = vec![];
        let record = Record {
            checkpoint: listed,
            pushed_from: crate::sys::hostname(),
        };
        annotations.insert(
            CKPTD_RECORD.into(),
            serde_json::to_string(&record).expect("serializes"),
        );
        annotations.insert(CKPTD_LAYOUT.into(), layout.to_string());
        annotations.insert(CREATED.into(), now.to_rfc3339());
        let image = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{
                "mediaType": if encrypted { LAYER_GZIP_AGE } else { LAYER_GZIP },
                "digest": layer.blob_digest,
                "size": layer.size,
            }],
            "annotations": annotations,
        });
        let image = serde_json::to_vec(&image).expect("serializes");
        let digest = sha256_hex(&image);
        self.client
            .push_manifest_raw(
                &reference,
                image,
                http::HeaderValue::from_static(OCI_MANIFEST),
            )
            .await
            .map_err(|e| {
                failed(
                    remote,
                    &format!("write the manifest of {}", reference.whole()),
                    e,
                )
            })?;
        Ok(Pushed {
            copy: RemoteCopy {
                remote: remote.name.clone(),
                key: self.key(&tag),
                size_bytes: layer.size,
                sha256: digest,
                pushed_at: now,
                encrypted,
            },
            secs: started.elapsed().as_secs_f64(),
        })
    }

    /// Streams the image `copy` names (by its manifest's digest) into `staging` through the
    /// archive import, checking the manifest's and the layer's digests against their bytes and
    /// the layer against its size and `limit`.
    pub async fn pull(
        &self,
        remote: &Remote,
        copy: &RemoteCopy,
        staging: &Path,
        (limit, progress): (u64, super::Progress),
        mut stop: StopSignal,
    ) -> Result<Import> {
        let reference = self.by_digest(&copy.sha256);
        let shown = format!("{}@sha256:{}", copy.key, copy.sha256);
        self.client
            .auth(&reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| failed(remote, "sign in for a pull", e))?;
        let (m, _) = self
            .manifest(remote, &reference, Some(&copy.sha256))
            .await?;
        let [layer] = m.layers.as_slice() else {
            return Err(refused(
                remote,
                &shown,
                format!(
                    "a checkpoint image has one layer; this one has {}",
                    m.layers.len()
                ),
            ));
        };
        let kind = layer.media_type.as_str();
        if ![LAYER_GZIP, DOCKER_LAYER_GZIP, LAYER_TAR, LAYER_GZIP_AGE].contains(&kind) {
            return Err(refused(remote, &shown, format!("its layer is a {kind}")));
        }
        if layer.size > limit {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "the layer of {shown} is {} bytes, more than import_max_bytes ({limit})",
                    layer.size
                ),
            )
            .with_hint("raise import_max_bytes in the config if the image is trusted"));
        }
        let Some(want) = layer.digest.strip_prefix("sha256:").map(str::to_owned) else {
            return Err(refused(
                remote,
                &shown,
                format!("its layer's digest {} is not sha256", layer.digest),
            ));
        };
        let encrypted = kind == LAYER_GZIP_AGE;
        if encrypted && remote.identities.is_empty() {
            remote.can_pull(&RemoteCopy {
                encrypted: true,
                ..copy.clone()
            })?;
        }
        let blob = self
            .client
            .pull_blob_stream(&reference, layer.digest.as_str())
            .await
            .map_err(|e| failed(remote, &format!("read the layer of {shown}"), e))?;
        let reader =
            tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(blob.stream));
        let flag: StopFlag = Arc::default();
        let identities = remote.identities.clone();
        let staging = staging.to_owned();
        let size = layer.size;
        let gzip = kind != LAYER_TAR;
        let f = flag.clone();
        let work = tokio::task::spawn_blocking(move || -> Result<(Import, String, u64)> {
            // Never more than the manifest said: a registry that streams on is cut off.
            let mut r = Hashing::new(reader.take(size + 1), f).counting(progress);
            let damaged = |e: io::Error| Error::invalid(format!("the layer cannot be read: {e}"));
            let imported = {
                let plain: Box<dyn Read + '_> = if encrypted {
                    let d =
                        age::Decryptor::new_buffered(io::BufReader::new(&mut r)).map_err(|e| {
                            Error::invalid(format!("the layer is not an age file: {e}"))
                        })?;
                    Box::new(
                        d.decrypt(identities.iter().map(|i| i as &dyn age::Identity))
                            .map_err(|e| match e {
                                age::DecryptError::NoMatchingKeys => Error::forbidden(
                                    "none of this host's age identities can decrypt the image: \
                                     it was encrypted to other recipients",
                                ),
                                e => Error::invalid(format!("the layer cannot be decrypted: {e}")),
                            })?,
                    )
                } else {
                    Box::new(&mut r)
                };
                let tar: Box<dyn Read + '_> = if gzip {
                    Box::new(flate2::read::MultiGzDecoder::new(plain))
                } else {
                    plain
                };
                archive::import_any(tar, &staging, limit)?
            };
            io::copy(&mut r, &mut io::sink()).map_err(damaged)?;
            let (hash, bytes) = r.finish();
            Ok((imported, hash, bytes))
        });
        let (imported, hash, bytes) = super::transfer::pulled(work, &flag, &mut stop)
            .await
            .map_err(|e| {
                if e.kind == ErrorKind::InvalidRequest {
                    refused(remote, &shown, e.message)
                } else {
                    e
                }
            })?;
        if hash != want || bytes != size {
            return Err(refused(
                remote,
                &shown,
                format!(
                    "its layer is {bytes} bytes with sha256 {hash}; the manifest says {size} \
                     bytes with sha256 {want}"
                ),
            ));
        }
        Ok(imported)
    }
}

/// Whether the layer is Podman's layout: a checkpoint of a Podman container whose folder holds
/// Podman's configuration (`config.dump`, `spec.dump`).
fn is_podman_layout(cp: &Checkpoint, dir: &Path) -> bool {
    matches!(
        cp.target,
        Target::Container {
            runtime: ckptd_api::Runtime::Podman,
            ..
        }
    ) && archive::container::has_engine_files(dir)
}

/// Podman's annotations of a checkpoint image of `cp`, from its `config.dump` (read bounded):
/// the container's name, and the image its root filesystem comes from.
fn podman_annotations(dir: &Path, cp: &Checkpoint) -> std::collections::BTreeMap<String, String> {
    let mut a = std::collections::BTreeMap::new();
    let name = match &cp.target {
        Target::Container { id, .. } => id.clone(),
        Target::Process { pid } => pid.to_string(),
        Target::Group { .. } => cp.name.clone(),
    };
    let config: serde_json::Value = crate::sys::open_regular(&dir.join("config.dump"))
        .ok()
        .and_then(|f| {
            let mut b = Vec::new();
            f.take(16 << 20).read_to_end(&mut b).ok()?;
            serde_json::from_slice(&b).ok()
        })
        .unwrap_or_default();
    let field = |k: &str| config.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    a.insert(PODMAN_NAME.into(), field("name").unwrap_or(name));
    if let Some(i) = field("rootfsImageName") {
        a.insert(format!("{PODMAN_PREFIX}rawImageName"), i.clone());
        a.insert(format!("{PODMAN_PREFIX}rootfsImageName"), i);
    }
    if let Some(i) = field("rootfsImage") {
        a.insert(format!("{PODMAN_PREFIX}rootfsImageID"), i);
    }
    a.insert(format!("{PODMAN_PREFIX}runtime.name"), "runc".into());
    if let Some(v) = &cp.criu_version {
        a.insert(format!("{PODMAN_PREFIX}criu.version"), v.clone());
    }
    a.insert(format!("{PODMAN_PREFIX}host.arch"), oci_arch().into());
    a
}

/// The checkpoint a Podman or CRI-O image (no ckptd record) is catalogued as until its layer is
/// read (which then says what it is, as an archive import's does): one of the container it
/// names, a Podman container's or a runc container's, with an id made of the image's digest
/// (the same image is the same checkpoint on every host).
fn foreign_checkpoint(
    engine: &str,
    container: &str,
    tag: &str,
    digest: &str,
    m: &ImageManifest,
    created: Option<DateTime<Utc>>,
) -> Checkpoint {
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(digest.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    let when = created.unwrap_or_else(crate::catalog::now);
    Checkpoint {
        id: uuid::Builder::from_custom_bytes(id).into_uuid(),
        name: image_checkpoint_name(container, tag),
        target: Target::Container {
            id: container.to_owned(),
            runtime: if engine == "podman" {
                ckptd_api::Runtime::Podman
            } else {
                ckptd_api::Runtime::Runc
            },
            root: None,
            bundle: None,
            namespace: None,
        },
        status: CheckpointStatus::Ready,
        created_at: when,
        completed_at: Some(when),
        dir: String::new(),
        size_bytes: m.layers.first().map_or(0, |l| l.size),
        options: Default::default(),
        labels: Default::default(),
        criu_version: m
            .annotations
            .get(&format!("{PODMAN_PREFIX}criu.version"))
            .cloned(),
        criu_config: None,
        container: None,
        stats: None,
        error: None,
        owner_uid: 0,
        expires_at: None,
        locations: vec![],
        origin: Some(ckptd_api::Origin {
            engine: engine.into(),
            container: container.to_owned(),
            container_id: None,
            image: m
                .annotations
                .get(&format!("{PODMAN_PREFIX}rootfsImageName"))
                .cloned(),
            pod: None,
            namespace: None,
            checkpointed_at: created,
        }),
        hooks: None,
        terminal: None,
        members: vec![],
    }
}

/// The name a Podman image is catalogued under: `<container>-<tag>` (both are made of a
/// checkpoint name's characters), cut to a name's 128.
fn image_checkpoint_name(container: &str, tag: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let mut name = format!("{}-{}", clean(container), clean(tag));
    name.truncate(128);
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'c');
        name.truncate(128);
    }
    name
}

/// The OCI architecture name of this machine (`amd64`, `arm64`, ...).
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_and_tag_names_follow_the_distribution_spec() {
        assert!(valid_repository("ckptd/checkpoints"));
        assert!(valid_repository("a.b-c_d/e"));
        assert!(!valid_repository("Upper/case"));
        assert!(!valid_repository("trailing/"));
        assert!(!valid_repository("../x"));
        assert!(valid_tag("web-20261205.1"));
        assert!(valid_tag("_x"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("a/b"));
        assert!(!valid_tag(&"a".repeat(129)));
    }
}
