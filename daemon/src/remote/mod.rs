//! Remotes: S3-compatible buckets that hold checkpoint archives, shared by any number of ckptd
//! hosts with no coordinator of their own. This module knows buckets, keys, encryption and
//! streams; the jobs that use it (push, pull) are the service's.
//!
//! Layout in a bucket, under the remote's `prefix`:
//!
//! ```text
//! <prefix>/checkpoints/<id>/archive.tar.zst[.age]   the archive GET .../archive streams
//! <prefix>/checkpoints/<id>/checkpoint.json         what listing reads: the checkpoint, the object
//! ```
//!
//! The record is written after the archive's multipart upload completes and deleted before the
//! archive, so a checkpoint is listed only while its archive is whole. Keys use the checkpoint's
//! id: names are unique per host, ids everywhere.
//!
//! The S3 client is `object_store` (the arrow-rs project's): SigV4, multipart uploads with
//! abort, retries with backoff, path-style or virtual-host addressing. Encryption is `age`
//! (X25519 recipients, streamed in 64 KiB authenticated chunks).

pub mod live;
pub mod registry;
mod transfer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ckptd_api::{RemoteCheckpoint, RemoteCopy, RemoteInfo};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::config::{RegistrySpec, RemoteSpec};
use crate::error::{Error, ErrorKind, Result};

pub use transfer::{Pushed, StopFlag};

/// Bytes a push has sent or a pull has read so far (its job's progress).
pub type Progress = Arc<std::sync::atomic::AtomicU64>;

/// How a push goes: a registry's tag and layout (a bucket takes neither), and where it counts
/// the bytes it sends.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub tag: Option<String>,
    pub format: Option<ckptd_api::ArchiveFormat>,
    pub progress: Progress,
}

/// S3's limits: parts of 5 MiB to 5 GiB, at most 10,000 of them.
pub const MIN_PART: u64 = 5 << 20;
pub const MAX_PART: u64 = 5 << 30;
pub const MAX_PARTS: u64 = 10_000;

/// The format of the record next to each archive.
pub const RECORD_FORMAT: &str = "ckptd-remote/1";
const RECORD: &str = "checkpoint.json";
/// The most of a record ckptd reads (a record is a few KiB).
const MAX_RECORD: u64 = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// A configured remote, ready to use.
#[derive(Clone)]
pub struct Remote {
    pub name: String,
    info: RemoteInfo,
    backend: Backend,
    prefix: String,
    recipients: Vec<age::x25519::Recipient>,
    identities: Arc<Vec<age::x25519::Identity>>,
    part_size: u64,
    concurrency: usize,
}

/// Where a remote keeps checkpoints: a bucket (archives and records under keys) or a registry
/// (checkpoint images in a repository).
#[derive(Clone)]
enum Backend {
    Bucket(Arc<AmazonS3>),
    Registry(Arc<registry::Registry>),
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("name", &self.name)
            .field("bucket", &self.info.bucket)
            .finish()
    }
}

/// A file that holds secrets: root's (or the daemon's), not readable by group or others.
fn read_secret_file(what: &str, path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !path.is_absolute() {
        bail!("{what} must be an absolute path, got {}", path.display());
    }
    let md = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if md.uid() != 0 && md.uid() != me {
        bail!(
            "{what} {} belongs to uid {}; it must be root's: whoever owns it can change it. \
             chown root {0}",
            path.display(),
            md.uid()
        );
    }
    if md.permissions().mode() & 0o077 != 0 {
        bail!(
            "{what} {} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            md.permissions().mode() & 0o777
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// The age recipients (public keys) and identities of `[remotes.NAME]` or `[registries.NAME]`;
/// the identity file is a secret file (root's, mode 600).
#[allow(clippy::type_complexity)]
fn age_keys(
    ctx: &dyn Fn(&str) -> String,
    recipients_text: &[String],
    identity_file: Option<&Path>,
) -> anyhow::Result<(Vec<age::x25519::Recipient>, Vec<age::x25519::Identity>)> {
    let mut recipients = Vec::new();
    for r in recipients_text {
        recipients.push(r.parse::<age::x25519::Recipient>().map_err(|e| {
            anyhow::anyhow!(
                "{}",
                ctx(&format!(
                    "age_recipients entry {r:?} is not an age X25519 public key: {e}"
                ))
            )
        })?);
    }
    let mut identities = Vec::new();
    if let Some(f) = &identity_file {
        let text = read_secret_file(&ctx("age_identity_file"), f)?;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            identities.push(line.parse::<age::x25519::Identity>().map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    ctx(&format!(
                        "age_identity_file {} holds a line that is not an age X25519 \
                 identity (AGE-SECRET-KEY-1...): {e}",
                        f.display()
                    ))
                )
            })?);
        }
        if identities.is_empty() {
            bail!(
                "{}",
                ctx(&format!(
                    "age_identity_file {} holds no identity",
                    f.display()
                ))
            );
        }
    }
    Ok((recipients, identities))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Remote {
    /// Builds a remote from its configuration, reading (and checking) its secret files. Nothing
    /// is sent to the server here.
    pub fn new(name: &str, spec: &RemoteSpec) -> anyhow::Result<Remote> {
        if !valid_name(name) {
            bail!("remote name {name:?}: use letters, digits, '-' and '_' (at most 64)");
        }
        let ctx = |what: &str| format!("remotes.{name}: {what}");
        if spec.bucket.is_empty() {
            bail!("{}", ctx("bucket is empty"));
        }
        let region = spec.region.clone().unwrap_or_else(|| "us-east-1".into());
        let addressing = spec.addressing.clone().unwrap_or_else(|| {
            if spec.endpoint.is_some() {
                "path"
            } else {
                "virtual"
            }
            .into()
        });
        if addressing != "path" && addressing != "virtual" {
            bail!(
                "{}",
                ctx(&format!(
                    "addressing is {addressing:?}; use \"path\" or \"virtual\""
                ))
            );
        }
        let prefix = spec
            .prefix
            .clone()
            .unwrap_or_else(|| "ckptd".into())
            .trim_matches('/')
            .to_owned();
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&spec.bucket)
            .with_region(&region)
            .with_virtual_hosted_style_request(addressing == "virtual")
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120))
                    .with_allow_http(true),
            );
        let endpoint = match &spec.endpoint {
            Some(e) => {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    bail!(
                        "{}",
                        ctx(&format!(
                            "endpoint {e:?} must start with http:// or https://"
                        ))
                    );
                }
                b = b.with_endpoint(e.trim_end_matches('/'));
                e.trim_end_matches('/').to_owned()
            }
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        let credentials =
            match &spec.credentials_file {
                Some(f) => {
                    let text = read_secret_file(&ctx("credentials_file"), f)?;
                    let c: CredentialsFile = toml::from_str(&text).with_context(|| {
                        format!(
                            "{}: give access_key_id and secret_access_key (TOML)",
                            ctx(&format!("credentials_file {}", f.display()))
                        )
                    })?;
                    b = b
                        .with_access_key_id(c.access_key_id)
                        .with_secret_access_key(c.secret_access_key);
                    if let Some(t) = c.session_token {
                        b = b.with_token(t);
                    }
                    "file"
                }
                None => {
                    let id = std::env::var("AWS_ACCESS_KEY_ID").ok();
                    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok();
                    let (Some(id), Some(secret)) = (id, secret) else {
                        bail!(
                        "{}",
                        ctx("no credentials_file, and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY \
                             are not both set in ckptd's environment")
                    );
                    };
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                    if let Ok(t) = std::env::var("AWS_SESSION_TOKEN") {
                        b = b.with_token(t);
                    }
                    "environment"
                }
            };
        let (recipients, identities) = age_keys(
            &ctx,
            &spec.age_recipients,
            spec.age_identity_file.as_deref(),
        )?;
        let part_mib = spec.part_size_mib.unwrap_or(8);
        if !(MIN_PART >> 20..=MAX_PART >> 20).contains(&part_mib) {
            bail!(
                "{}",
                ctx(&format!(
                    "part_size_mib is {part_mib}; S3 takes parts of 5 to 5120 MiB"
                ))
            );
        }
        let concurrency = spec.upload_concurrency.unwrap_or(3);
        if !(1..=64).contains(&concurrency) {
            bail!(
                "{}",
                ctx(&format!("upload_concurrency is {concurrency}; use 1 to 64"))
            );
        }
        let store = b
            .build()
            .with_context(|| ctx("cannot configure the S3 client"))?;
        Ok(Remote {
            name: name.to_owned(),
            info: RemoteInfo {
                name: name.to_owned(),
                kind: "bucket".into(),
                endpoint,
                bucket: spec.bucket.clone(),
                repository: None,
                prefix: prefix.clone(),
                region,
                addressing,
                credentials: credentials.into(),
                encrypted: !recipients.is_empty(),
                can_decrypt: !identities.is_empty(),
                reachable: false,
                error: None,
            },
            backend: Backend::Bucket(Arc::new(store)),
            prefix,
            recipients,
            identities: Arc::new(identities),
            part_size: part_mib << 20,
            concurrency,
        })
    }

    fn key(&self, rest: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rest)
        } else {
            Key::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn checkpoints_prefix(&self) -> Key {
        self.key("checkpoints")
    }

    /// The archive's key of checkpoint `id`, as this host pushes it.
    pub fn archive_key(&self, id: Uuid) -> Key {
        self.archive_key_of(id, !self.recipients.is_empty())
    }

    /// The archive's key of checkpoint `id`, encrypted or not (as any host may have pushed it).
    fn archive_key_of(&self, id: Uuid, encrypted: bool) -> Key {
        let ext = if encrypted { "tar.zst.age" } else { "tar.zst" };
        self.key(&format!("checkpoints/{id}/archive.{ext}"))
    }

    fn record_key(&self, id: Uuid) -> Key {
        self.key(&format!("checkpoints/{id}/{RECORD}"))
    }

    /// What `GET /v1/remotes` shows, after asking the server (a one-key listing).
    pub async fn info(&self) -> RemoteInfo {
        let mut info = self.info.clone();
        let store = match &self.backend {
            Backend::Bucket(s) => s,
            Backend::Registry(r) => return r.info(info).await,
        };
        let probe = async {
            let mut s = store.list(Some(&self.checkpoints_prefix()));
            s.next().await.transpose()
        };
        match tokio::time::timeout(Duration::from_secs(10), probe).await {
            Ok(Ok(_)) => info.reachable = true,
            Ok(Err(e)) => info.error = Some(self.failed("list the bucket", e).message),
            Err(_) => info.error = Some("no answer within 10 s".into()),
        }
        info
    }

    /// The error of a failed request, in the server's words: `details.status` is its HTTP
    /// status when it answered.
    pub fn failed(&self, what: &str, e: object_store::Error) -> Error {
        let text = error_chain(&e);
        // The variants object_store types by status first. The others carry it only in their
        // message: object_store 0.14 keeps the error that has `status()` and `body()`
        // (`client::retry::RetryError`) in a crate-private module, so it cannot be downcast to.
        let typed = match &e {
            object_store::Error::NotFound { .. } => Some(404),
            object_store::Error::AlreadyExists { .. } => Some(409),
            object_store::Error::Precondition { .. } => Some(412),
            object_store::Error::NotModified { .. } => Some(304),
            _ => None,
        };
        let status = typed
            .or_else(|| http_status(&text))
            .or_else(|| status_of_code(&text));
        let kind = match &e {
            object_store::Error::NotFound { .. } => ErrorKind::NotFound,
            _ => ErrorKind::RemoteFailed,
        };
        let mut err = Error::new(
            kind,
            format!(
                "remote {} (bucket {} at {}) could not {what}: {}",
                self.name,
                self.info.bucket,
                self.info.endpoint,
                server_reason(&text)
            ),
        )
        .with("remote", self.name.clone());
        if let Some(s) = status {
            err = err.with("status", s);
        }
        match status {
            Some(401 | 403) => {
                err.with_advice(ckptd_api::Advice::CheckRemote { credentials: true })
            }
            Some(404) => err.with_hint(
                "check the remote's bucket and prefix in the configuration (the bucket must exist)",
            ),
            _ => err.with_advice(ckptd_api::Advice::CheckRemote { credentials: false }),
        }
    }

    /// The checkpoints the bucket holds, newest first, read from their records. Records that
    /// cannot be read are skipped (and logged): one bad object does not hide the rest.
    pub async fn list(&self) -> Result<Vec<RemoteCheckpoint>> {
        let store = match &self.backend {
            Backend::Bucket(s) => s,
            Backend::Registry(r) => return r.list(self).await,
        };
        let keys: Vec<Key> = store
            .list(Some(&self.checkpoints_prefix()))
            .try_filter_map(|m| async move {
                Ok((m.location.filename() == Some(RECORD)).then_some(m.location))
            })
            .try_collect()
            .await
            .map_err(|e| self.failed("list the bucket", e))?;
        let mut out: Vec<RemoteCheckpoint> = futures_util::stream::iter(keys)
            .map(|k| async move { (self.read_record(&k).await, k) })
            .buffer_unordered(8)
            .filter_map(|(r, k)| async move {
                match r {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(remote = %self.name, key = %k, error = %e, "skipping an unreadable checkpoint record");
                        None
                    }
                }
            })
            .collect()
            .await;
        out.sort_by_key(|r| std::cmp::Reverse(r.checkpoint.created_at));
        Ok(out)
    }

    /// Reads and checks one record. Whoever can write the bucket wrote it: it is read only up
    /// to `MAX_RECORD` bytes, must name the checkpoint of its own key, and its object must be that
    /// checkpoint's archive (so a delete never reaches another checkpoint's objects); anything
    /// else is `remote_failed`, saying which.
    async fn read_record(&self, key: &Key) -> Result<RemoteCheckpoint> {
        let bad = |why: String| {
            Error::new(
                ErrorKind::RemoteFailed,
                format!(
                    "remote {}: {key} is not a checkpoint record ckptd can use: {why}",
                    self.name
                ),
            )
            .with_hint("delete that object from the bucket, or push the checkpoint again")
        };
        let got = self
            .bucket()?
            .get(key)
            .await
            .map_err(|e| self.failed("read a checkpoint record", e))?;
        if got.meta.size > MAX_RECORD {
            return Err(bad(format!(
                "it is {} bytes, and a record is at most {MAX_RECORD}",
                got.meta.size
            )));
        }
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.failed("read a checkpoint record", e))?;
        if bytes.len() as u64 > MAX_RECORD {
            return Err(bad(format!("it is larger than {MAX_RECORD} bytes")));
        }
        let r: Record = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if r.format != RECORD_FORMAT {
            return Err(bad(format!(
                "its format is {:?}; this ckptd reads {RECORD_FORMAT:?}",
                r.format
            )));
        }
        let id = r.entry.checkpoint.id;
        if *key != self.record_key(id) {
            return Err(bad(format!(
                "it describes checkpoint {id}, which is not its key's"
            )));
        }
        let archives = [
            self.archive_key_of(id, false),
            self.archive_key_of(id, true),
        ];
        if !archives.iter().any(|a| a.as_ref() == r.entry.object.key) {
            return Err(bad(format!(
                "its object {:?} is not checkpoint {id}'s archive ({})",
                r.entry.object.key, archives[0]
            )));
        }
        // The pushing host may call this bucket by another name: here it is this remote.
        let mut entry = r.entry;
        entry.object.remote = self.name.clone();
        entry.checkpoint.locations = vec![ckptd_api::Location::Remote(entry.object.clone())];
        Ok(entry)
    }

    /// One checkpoint of the bucket, by id or by name (a name several hosts pushed is
    /// ambiguous: the answer lists their ids).
    pub async fn find(&self, reference: &str) -> Result<RemoteCheckpoint> {
        if let Backend::Registry(r) = &self.backend {
            return r.find(self, reference).await;
        }
        if let Ok(id) = reference.parse::<Uuid>() {
            return self.read_record(&self.record_key(id)).await.map_err(|e| {
                if e.kind == ErrorKind::NotFound {
                    self.not_found(reference)
                } else {
                    e
                }
            });
        }
        let mut found: Vec<RemoteCheckpoint> = self
            .list()
            .await?
            .into_iter()
            .filter(|r| r.checkpoint.name == reference)
            .collect();
        match found.len() {
            0 => Err(self.not_found(reference)),
            1 => Ok(found.remove(0)),
            _ => Err(Error::conflict(format!(
                "remote {} holds {} checkpoints named {reference:?} (pushed by different hosts): {}",
                self.name,
                found.len(),
                found
                    .iter()
                    .map(|r| format!("{} from {}", r.checkpoint.id, r.pushed_from))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .with_hint("name it by its id")),
        }
    }

    fn not_found(&self, reference: &str) -> Error {
        Error::not_found(format!(
            "remote {} holds no checkpoint {reference:?}",
            self.name
        ))
        .with_advice(ckptd_api::Advice::ListRemoteCheckpoints {
            remote: self.name.clone(),
        })
    }

    /// Deletes a checkpoint's record, then its archive (a half-deleted one is not listed).
    /// Only checkpoint `id`'s own objects are deleted, whatever key a record named.
    /// A registry's copy is deleted by its manifest's digest (`sha256`), never by what its tag
    /// names now.
    pub async fn delete(&self, id: Uuid, archive: &str, sha256: Option<&str>) -> Result<()> {
        let store = match &self.backend {
            Backend::Bucket(s) => s,
            Backend::Registry(r) => return r.delete(self, archive, sha256).await,
        };
        if ![
            self.archive_key_of(id, false),
            self.archive_key_of(id, true),
        ]
        .iter()
        .any(|k| k.as_ref() == archive)
        {
            return Err(Error::new(
                ErrorKind::RemoteFailed,
                format!(
                    "remote {}: {archive:?} is not checkpoint {id}'s archive; nothing was deleted",
                    self.name
                ),
            ));
        }
        for key in [self.record_key(id), Key::from(archive)] {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("delete the checkpoint's objects", e)),
            }
        }
        Ok(())
    }

    /// Writes the record that makes a pushed archive visible to other hosts.
    async fn write_record(&self, entry: &RemoteCheckpoint) -> Result<()> {
        let json = serde_json::to_vec_pretty(&Record {
            format: RECORD_FORMAT.into(),
            entry: entry.clone(),
        })
        .map_err(|e| Error::internal(format!("cannot encode the record: {e}")))?;
        self.bucket()?
            .put(&self.record_key(entry.checkpoint.id), json.into())
            .await
            .map_err(|e| self.failed("write the checkpoint's record", e))?;
        Ok(())
    }

    /// The bucket of a remote that is one (the S3 side's own steps call this only there).
    fn bucket(&self) -> Result<&Arc<AmazonS3>> {
        match &self.backend {
            Backend::Bucket(s) => Ok(s),
            Backend::Registry(_) => Err(Error::internal(format!(
                "remote {} is a registry, not a bucket",
                self.name
            ))),
        }
    }

    /// Whether this remote is an OCI registry (its copies are checkpoint images).
    pub fn is_registry(&self) -> bool {
        matches!(self.backend, Backend::Registry(_))
    }

    /// Whether pushes are encrypted.
    pub fn encrypts(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// The object key a copy names, as object_store takes it.
    pub fn object(copy: &RemoteCopy) -> Key {
        Key::from(copy.key.as_str())
    }
}

/// The record next to an archive.
#[derive(Serialize, Deserialize)]
struct Record {
    format: String,
    #[serde(flatten)]
    entry: RemoteCheckpoint,
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// The HTTP status in object_store's message ("... status 403 Forbidden ...").
fn http_status(text: &str) -> Option<u16> {
    let i = text.find("status ")?;
    text[i + 7..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
        .filter(|s| (100..600).contains(s))
}

/// The HTTP status S3 answers with each of its common error codes (object_store does not always
/// keep the status in its message).
fn status_of_code(text: &str) -> Option<u16> {
    const CODES: [(&str, u16); 8] = [
        ("SignatureDoesNotMatch", 403),
        ("InvalidAccessKeyId", 403),
        ("AccessDenied", 403),
        ("ExpiredToken", 400),
        ("NoSuchBucket", 404),
        ("NoSuchKey", 404),
        ("NoSuchUpload", 404),
        ("SlowDown", 503),
    ];
    CODES
        .iter()
        .find(|(c, _)| text.contains(&format!("<Code>{c}</Code>")) || text.contains(c))
        .map(|&(_, s)| s)
}

/// The server's own words when it sent an S3 error document (`<Code>` and `<Message>`), else
/// the client's message.
fn server_reason(text: &str) -> String {
    let tag = |t: &str| -> Option<String> {
        let open = format!("<{t}>");
        let i = text.find(&open)? + open.len();
        let j = text[i..].find("</")? + i;
        Some(text[i..j].to_owned())
    };
    match (tag("Code"), tag("Message"), http_status(text)) {
        (Some(c), Some(m), Some(s)) => format!("{s} {c}: {m}"),
        (Some(c), Some(m), None) => format!("{c}: {m}"),
        _ => text.to_owned(),
    }
}

/// The configured remotes by name.
#[derive(Clone, Default, Debug)]
pub struct Remotes {
    by_name: Arc<BTreeMap<String, Remote>>,
}

impl Remotes {
    pub fn new(
        specs: &BTreeMap<String, RemoteSpec>,
        registries: &BTreeMap<String, RegistrySpec>,
    ) -> anyhow::Result<Remotes> {
        let mut by_name = BTreeMap::new();
        for (name, spec) in specs {
            by_name.insert(name.clone(), Remote::new(name, spec)?);
        }
        for (name, spec) in registries {
            if by_name.contains_key(name) {
                bail!(
                    "registries.{name}: a remote has that name too; remotes and registries share \
                     one set of names (a checkpoint's copy names the one it is in)"
                );
            }
            by_name.insert(name.clone(), Remote::registry(name, spec)?);
        }
        Ok(Remotes {
            by_name: Arc::new(by_name),
        })
    }

    /// The remote named `name`, as configured now (a reload does not change a copy held).
    pub fn get(&self, name: &str) -> Result<Remote> {
        self.by_name.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
            Error::not_found(format!(
                "there is no remote {name:?} in ckptd's configuration ({})",
                if known.is_empty() {
                    "none is configured".to_owned()
                } else {
                    format!("configured: {}", known.join(", "))
                }
            ))
            .with_advice(ckptd_api::Advice::ConfigureRemote)
        })
    }

    /// A remote a request body names (`push_to`): an unknown one is a bad request (400), not a
    /// missing resource.
    pub fn named(&self, field: &str, name: &str) -> Result<Remote> {
        self.get(name).map_err(|mut e| {
            e.kind = ErrorKind::InvalidRequest;
            e.message = format!("{field}: {}", e.message);
            e
        })
    }

    pub fn all(&self) -> impl Iterator<Item = &Remote> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_reason_is_kept() {
        let t = "Client error with status 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(http_status(t), Some(403));
        assert_eq!(
            server_reason(t),
            "403 SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        assert_eq!(server_reason("connection refused"), "connection refused");
    }

    #[test]
    fn bad_configuration_is_refused_with_a_reason() {
        let spec = |f: &dyn Fn(&mut RemoteSpec)| {
            let mut s = RemoteSpec {
                endpoint: Some("http://127.0.0.1:9".into()),
                bucket: "b".into(),
                prefix: None,
                region: None,
                addressing: None,
                credentials_file: None,
                age_recipients: vec![],
                age_identity_file: None,
                part_size_mib: None,
                upload_concurrency: None,
            };
            f(&mut s);
            s
        };
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::write(&creds, "access_key_id = \"a\"\nsecret_access_key = \"b\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Remote::new("r", &spec(&|s| s.credentials_file = Some(creds.clone()))).unwrap_err();
        assert!(
            format!("{e:#}").contains("readable by group or others"),
            "{e:#}"
        );
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = Remote::new("r", &spec(&|s| s.credentials_file = Some(creds.clone()))).unwrap();
        assert_eq!(r.info.addressing, "path");
        assert_eq!(
            r.archive_key(Uuid::nil()).as_ref(),
            "ckptd/checkpoints/00000000-0000-0000-0000-000000000000/archive.tar.zst"
        );
        let e = Remote::new(
            "r",
            &spec(&|s| {
                s.credentials_file = Some(creds.clone());
                s.age_recipients = vec!["age1nope".into()];
            }),
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("not an age X25519 public key"),
            "{e:#}"
        );
        let e = Remote::new(
            "r",
            &spec(&|s| {
                s.credentials_file = Some(creds.clone());
                s.part_size_mib = Some(1);
            }),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("5 to 5120 MiB"), "{e:#}");
        // S3's limits: 8 MiB parts by default, grown so that 10,000 parts hold any checkpoint.
        assert_eq!(r.part_size_for(1 << 30), 8 << 20);
        let huge = 200u64 << 30;
        let part = r.part_size_for(huge);
        assert!((MIN_PART..=MAX_PART).contains(&part));
        assert!(huge.div_ceil(part) < MAX_PARTS, "{part}");
        let e = Remote::new("bad name", &spec(&|_| {})).unwrap_err();
        assert!(format!("{e:#}").contains("letters, digits"), "{e:#}");
    }
}
