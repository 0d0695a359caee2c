use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What is checkpointed: a process tree (by the pid of its root), a container, or a group of
/// them taken at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    Process {
        #[serde(deserialize_with = "json_integer")]
        pid: i32,
    },
    Container {
        id: String,
        #[serde(default)]
        runtime: Runtime,
        /// The runtime's state directory (runc's `--root`); its default when left out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root: Option<String>,
        /// Bundle directory: only when restoring into a new container.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bundle: Option<String>,
        /// containerd's namespace (`k8s.io` on a Kubernetes node); the daemon's
        /// `containerd_namespace` when left out. containerd containers only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
    },
    /// Several process trees and runc containers checkpointed together: all frozen before any
    /// is dumped, dumped in parallel, ended (or resumed) together; restored together.
    Group { targets: Vec<Target> },
}

/// An i32 as JSON Schema counts integers: `42` and also `42.0` (a number with no fraction).
fn json_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    let v = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i,
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e18 => f as i64,
        _ => {
            return Err(D::Error::custom(format!(
                "invalid value: {n}, expected an integer"
            )))
        }
    };
    i32::try_from(v)
        .map_err(|_| D::Error::custom(format!("invalid value: integer `{v}`, expected i32")))
}

/// An optional u32 counted as JSON Schema counts integers (`3` and `3.0`).
fn json_u32_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let v = match (n.as_u64(), n.as_f64()) {
        (Some(i), _) => i,
        (None, Some(f)) if f.fract() == 0.0 && (0.0..1e18).contains(&f) => f as u64,
        _ => {
            return Err(D::Error::custom(format!(
                "invalid value: {n}, expected a non-negative integer"
            )))
        }
    };
    u32::try_from(v)
        .map(Some)
        .map_err(|_| D::Error::custom(format!("invalid value: integer `{v}`, expected u32")))
}

/// The container runtime of a container target.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Runtime {
    /// runc, driving CRIU itself; its state directory in the target's `root`.
    #[default]
    Runc,
    /// A Docker container through the Docker Engine API (experimental mode).
    Docker,
    /// A Podman container through Podman's REST API (`podman system service`).
    Podman,
    /// A containerd container (a Kubernetes node's, or `ctr run`'s) through containerd's gRPC
    /// API, in the target's `namespace`.
    Containerd,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Refuses a runtime ckptd does not drive with the reason, not only the list.
impl<'de> Deserialize<'de> for Runtime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "runtime {s:?} is not supported; ckptd drives runc, docker and podman (crun on \
                 Debian 12 has no CRIU support)"
            ))
        })
    }
}

/// The most members a group target takes.
pub const MAX_GROUP_MEMBERS: usize = 16;

impl Target {
    /// A short, stable key naming the target; at most one job per key runs at a time.
    pub fn key(&self) -> String {
        match self {
            Target::Process { pid } => format!("process:{pid}"),
            Target::Container {
                id,
                runtime,
                namespace: Some(ns),
                ..
            } => format!("container:{runtime}:{ns}/{id}"),
            Target::Container { id, runtime, .. } => format!("container:{runtime}:{id}"),
            Target::Group { targets } => format!(
                "group:{}",
                targets
                    .iter()
                    .map(Target::key)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// The targets a checkpoint of this one takes: a group's members, or itself.
    pub fn members(&self) -> &[Target] {
        match self {
            Target::Group { targets } => targets,
            one => std::slice::from_ref(one),
        }
    }
}

/// CRIU options recorded with a checkpoint (and reused by default at restore).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointOptions {
    #[serde(default)]
    pub leave_running: bool,
    #[serde(default)]
    pub tcp_established: bool,
    #[serde(default)]
    pub ext_unix_sk: bool,
    #[serde(default)]
    pub file_locks: bool,
    #[serde(default)]
    pub shell_job: bool,
}

/// What a container checkpoint recorded of its container, so that a restore in place needs
/// nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub bundle: String,
    /// sha256 of the bundle's config.json at checkpoint time.
    pub config_sha256: String,
    /// The container has a terminal: a restore needs a `console_socket`.
    pub terminal: bool,
    /// Where its stdin, stdout and stderr pointed (runc's descriptors.json).
    pub stdio: Vec<String>,
}

/// CRIU's own statistics of a dump, read from its `stats-dump` image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpStats {
    pub freezing_time_us: u64,
    pub frozen_time_us: u64,
    pub memdump_time_us: u64,
    pub memwrite_time_us: u64,
    pub pages_written: u64,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CheckpointStatus {
    Pending,
    Running,
    Ready,
    Failed,
    /// Was ready, but its images are gone from disk (found at daemon start).
    Missing,
}

impl CheckpointStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: Uuid,
    pub name: String,
    pub target: Target,
    pub status: CheckpointStatus,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub dir: String,
    pub size_bytes: u64,
    pub options: CheckpointOptions,
    pub labels: BTreeMap<String, String>,
    pub criu_version: Option<String>,
    /// The CRIU options file the dump used, if any.
    #[serde(default)]
    pub criu_config: Option<String>,
    /// Container checkpoints: the container's bundle, config digest, terminal and stdio.
    #[serde(default)]
    pub container: Option<ContainerRecord>,
    pub stats: Option<DumpStats>,
    pub error: Option<ErrorInfo>,
    /// uid of the caller that created it (0: root). Only root and the owner see it.
    #[serde(default)]
    pub owner_uid: u32,
    /// When the expiry timer deletes it (`expires_in` at create).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Where its images are: here (`local`, while they are on this host's disk) and each remote
    /// that holds a copy. A ready checkpoint with no `local` entry is restored by pulling first.
    #[serde(default)]
    pub locations: Vec<Location>,
    /// Imported container checkpoint archives (Podman's and Kubernetes' layout): the engine,
    /// container, image, pod and namespace the archive names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The hooks given at checkpoint time; its restores run `post_restore` and
    /// `post_restore_signal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
    /// A process tree that had a controlling terminal: the key CRIU names it by
    /// (`tty[RDEV:DEV]`). It was dumped as a shell job; each restore gives it a new terminal
    /// that ckptd holds (`ckpt attach PID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<String>,
    /// A group checkpoint's members, in the order of its target's `targets`: each one's images
    /// are in the folder `<dir>/<index>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<GroupMember>,
}

/// One member of a group checkpoint, as its dump recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub target: Target,
    /// A container member's bundle, config digest, terminal and stdio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<DumpStats>,
}

/// One process of a checkpoint's tree, read from its images (`pstree.img`, `core-N.img`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointProcess {
    pub pid: i32,
    /// The parent's pid (0 for the tree's root).
    pub ppid: i32,
    /// The kernel's name of the process (`comm`, at most 15 bytes).
    pub command: String,
    pub threads: u32,
    /// It had exited and was not reaped yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zombie: bool,
}

/// `GET /v1/checkpoints/{ref}/processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessTree {
    /// Root first, each process after its parent.
    pub processes: Vec<CheckpointProcess>,
}

/// Where an imported container checkpoint archive was taken, as its `config.dump` and the
/// annotations of its `spec.dump` say (what `checkpointctl show` reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The engine that wrote the archive: `podman`, `cri-o` or `containerd`.
    pub engine: String,
    /// The container's name (Kubernetes: its name in the pod).
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The image the container ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// When the engine checkpointed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpointed_at: Option<DateTime<Utc>>,
}

impl Checkpoint {
    /// Whether the images are on this host's disk.
    pub fn is_local(&self) -> bool {
        self.locations
            .iter()
            .any(|l| matches!(l, Location::Local { .. }))
    }

    /// The copy on remote `name`, if there is one.
    pub fn remote_copy(&self, name: &str) -> Option<&RemoteCopy> {
        self.locations.iter().find_map(|l| match l {
            Location::Remote(c) if c.remote == name => Some(c),
            _ => None,
        })
    }

    /// Every remote copy.
    pub fn remote_copies(&self) -> impl Iterator<Item = &RemoteCopy> {
        self.locations.iter().filter_map(|l| match l {
            Location::Remote(c) => Some(c),
            Location::Local { .. } => None,
        })
    }
}

/// One place a checkpoint's images are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Location {
    /// On this host's disk, in `dir`.
    Local { dir: String },
    /// An object in a remote (an S3 bucket named in the daemon's configuration).
    Remote(RemoteCopy),
}

/// A checkpoint's archive in a remote: the object `key`, its size and sha256 (of the bytes
/// stored, encrypted or not), and when it was pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCopy {
    pub remote: String,
    pub key: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub pushed_at: DateTime<Utc>,
    /// Encrypted to the remote's age recipients: only a host with an identity can pull it.
    #[serde(default)]
    pub encrypted: bool,
}

/// `GET /v1/remotes`: a configured remote (never its credentials) and whether it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteInfo {
    pub name: String,
    /// `bucket` (S3-compatible, `[remotes.NAME]`) or `registry` (OCI, `[registries.NAME]`).
    #[serde(default = "bucket_kind")]
    pub kind: String,
    pub endpoint: String,
    /// The bucket (empty for a registry).
    pub bucket: String,
    /// A registry's repository, where its checkpoint images are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    pub prefix: String,
    pub region: String,
    /// `path` (endpoint/bucket/key) or `virtual` (bucket.endpoint/key).
    pub addressing: String,
    /// Where the credentials come from: `environment` or `file` (never the credentials).
    pub credentials: String,
    /// Pushes are encrypted to age recipients.
    pub encrypted: bool,
    /// This host holds an age identity, so it can pull encrypted checkpoints.
    pub can_decrypt: bool,
    pub reachable: bool,
    /// Why the remote is not reachable, in the server's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn bucket_kind() -> String {
    "bucket".into()
}

/// `GET /v1/remotes/{name}/checkpoints`: a checkpoint a remote holds, read from the record
/// pushed next to its archive: every field of the checkpoint as the pushing host had it (`dir`
/// is that host's), the object, and the host it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteCheckpoint {
    pub checkpoint: Checkpoint,
    pub object: RemoteCopy,
    /// The host name of the daemon that pushed it.
    pub pushed_from: String,
}

/// Body of `POST /v1/remotes/{name}/checkpoints/{ref}` (a pull). Everything is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Catalogue it under this name instead of the one it was pushed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobKind {
    Checkpoint,
    Restore,
    /// Upload a ready checkpoint's archive to a remote.
    Push,
    /// Download a checkpoint from a remote and catalogue it here.
    Pull,
    /// Move a running target to another daemon live (`POST /v1/migrations`): the source's job.
    Migrate,
    /// The destination's side of a live migration: the tree restored at once, its memory
    /// streaming in behind it.
    Receive,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What a finished job produced: the restored tree's root pid (and container id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Where a restored container's stdout/stderr go when they were pipes at checkpoint time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_log: Option<String>,
    /// A checkpoint job with `push_to`: the push job queued after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_job: Option<Uuid>,
    /// A push: the copy it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_copy: Option<RemoteCopy>,
    /// A restore of a foreign checkpoint (a Kubernetes archive): what ckptd left out of its
    /// spec before running it here (its hooks, e.g. `hooks.prestart: /usr/bin/setup`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stripped: Vec<String>,
    /// A live migration (either side): how it went, measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationReport>,
    /// The hooks the job ran, in order (a failed post hook is here, the job succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRun>,
    /// A group's restore: each member's result, in the order of the group's targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<JobResult>,
}

/// What a live migration did, measured by the daemon that reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// `migrated` (running on the destination, ended here), `resumed` (running here again, the
    /// destination's copy ended), `checkpointed` (neither side could tell the other's state:
    /// the workload is in `checkpoint`, here, and ended).
    pub outcome: MigrationOutcome,
    /// The other daemon (`host:port` on the source; the peer's address on the destination).
    pub peer: String,
    /// The other side's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_job: Option<Uuid>,
    /// The restored tree's root pid on the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_pid: Option<i32>,
    /// From the source's freeze to the destination's word that the tree runs (an upper bound
    /// of the downtime: it includes that word's trip back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// From the freeze to the last page in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
    /// Bytes of non-memory images sent before the restore.
    pub image_bytes: u64,
    /// Bytes of memory pages sent after it (the destination's faults and background copy).
    pub page_bytes: u64,
    /// Page requests the source served (faults and background fetches).
    pub page_requests: u64,
    /// `checkpointed`: the checkpoint that holds the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MigrationOutcome {
    #[default]
    Migrated,
    Resumed,
    Checkpointed,
}

/// Body of `POST /v1/migrations`: move a running process or runc container to another daemon
/// live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMigration {
    /// A process, or a runc container (root's).
    pub target: Option<Target>,
    /// A runc container only: the container the destination restores it as, when not the same
    /// id and bundle (`{"kind":"container","id":NEW,"bundle":DIR}`, the bundle's path on the
    /// destination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<Target>,
    /// The destination daemon's TCP listener, `host:port`.
    pub to: String,
    /// The destination's bearer token (its `tcp_token_file`); kept in memory only.
    pub token: String,
    /// The name of this side's checkpoint row (the fallback checkpoint, if one is needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub tcp_established: bool,
    #[serde(default)]
    pub ext_unix_sk: bool,
    #[serde(default)]
    pub file_locks: bool,
    #[serde(default)]
    pub shell_job: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: Uuid,
    pub kind: JobKind,
    pub checkpoint_id: Uuid,
    pub state: JobState,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: Option<JobResult>,
    pub error: Option<ErrorInfo>,
    /// uid of the caller that created it (0: root).
    #[serde(default)]
    pub owner_uid: u32,
    /// A running checkpoint job: how far it has got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobProgress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    /// Bytes of images written so far (a checkpoint); sent (a push, compressed); read (a pull).
    pub bytes_written: u64,
    /// What the images should take in all, estimated when the job was queued from the
    /// target's memory (absent when the daemon has no estimate, as after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_estimated: Option<u64>,
}

/// One event of `GET /v1/events`: `type` (e.g. `job.succeeded`, `checkpoint.ready`), `time`, and
/// the object it is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's place in the daemon's sequence (also its SSE `id:`): a client that reconnects
    /// with `Last-Event-ID` gets every event after it that the daemon still holds.
    #[serde(default)]
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// `request.refused`: a request for a change that the daemon refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
}

/// A request for a change (POST, PATCH, PUT, DELETE) that the daemon refused: who asked, what,
/// and the error it was answered with. Seen by root and by the caller that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The caller's uid (0: root, or a TCP token holder).
    pub uid: u32,
    pub error: ErrorInfo,
}

/// The structured error of every 4xx/5xx answer and of failed jobs and checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ErrorInfo {
    pub fn hint(&self) -> Option<&str> {
        self.details.get("hint").and_then(|v| v.as_str())
    }
    /// The advice behind `hint`, for a caller that phrases it in its own words.
    pub fn advice(&self) -> Option<crate::Advice> {
        self.details
            .get("advice")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .filter(|a| *a != crate::Advice::Unknown)
    }
    pub fn log_tail(&self) -> Vec<String> {
        self.details
            .get("log_tail")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(h) = self.hint() {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

/// Body of `POST /v1/checkpoints`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckpoint {
    pub target: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub leave_running: bool,
    #[serde(default)]
    pub tcp_established: bool,
    #[serde(default)]
    pub ext_unix_sk: bool,
    #[serde(default)]
    pub file_locks: bool,
    #[serde(default)]
    pub shell_job: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Delete the checkpoint this long after it is created: `90s`, `30m`, `12h`, `7d`, `2w`,
    /// or a sum such as `1d12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// Push the checkpoint to this remote once it is ready (a push job follows the checkpoint
    /// job; its id is in the checkpoint job's result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_to: Option<String>,
    /// With `push_to`: false drops the local images once the push is durable (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_local: Option<bool>,
    /// Commands run before and after the dump, and after each restore (recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
}

/// Commands run around a checkpoint or a restore, each in the target's namespaces as the
/// target's owner (never as root for a member's target), with a time limit. An argv, not a
/// shell line: `["sh", "-c", "..."]` for one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Before the dump, the target running: its failure (a non-zero exit, a signal, the time
    /// limit) fails the checkpoint, and the target is left running, never frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_dump: Option<Vec<String>>,
    /// Once the checkpoint is ready (its images durable) and the target released: in the
    /// target's namespaces if it still runs (`leave_running`), else as its owner on the host.
    /// Its failure is reported on the job, which succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_dump: Option<Vec<String>>,
    /// After each restore, in the restored tree's namespaces. Its failure is reported on the
    /// job, which succeeds (the tree runs). Recorded with the checkpoint; a restore request's
    /// own `hooks` replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_restore: Option<Vec<String>>,
    /// After each restore (after `post_restore`), this signal to the restored tree's root,
    /// for applications that only need to be told: `SIGUSR2`, `USR2` or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_restore_signal: Option<String>,
    /// Each command's time limit, in seconds (default 30, at most 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

impl Hooks {
    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.pre_dump.is_none()
            && self.post_dump.is_none()
            && self.post_restore.is_none()
            && self.post_restore_signal.is_none()
    }
}

/// One hook a job ran, as it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    /// `pre_dump`, `post_dump`, `post_restore` or `post_restore_signal`.
    pub hook: String,
    /// What ran (the argv), or the signal sent.
    pub command: Vec<String>,
    pub ok: bool,
    /// The command's exit status, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The end of what it wrote on stdout and stderr (at most 4 KiB).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// Why it failed: the signal that ended it, the time limit, or why it could not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_true(b: &bool) -> bool {
    *b
}

impl CreateCheckpoint {
    pub fn options(&self) -> CheckpointOptions {
        CheckpointOptions {
            leave_running: self.leave_running,
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            file_locks: self.file_locks,
            shell_job: self.shell_job,
        }
    }
}

impl ScheduleOptions {
    /// The CRIU options of each run's checkpoint.
    pub fn criu(&self) -> CheckpointOptions {
        CheckpointOptions {
            leave_running: self.leave_running,
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            file_locks: self.file_locks,
            shell_job: self.shell_job,
        }
    }
}

/// Body of `POST /v1/checkpoints/{ref}/restore`. Options left out default to those the
/// checkpoint was taken with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_established: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_locks: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell_job: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_unix_sk: Option<bool>,
    /// A container with a terminal: the Unix socket that receives its new pty master (runc's
    /// `--console-socket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_socket: Option<String>,
    /// Process checkpoints: restore memory lazily (CRIU's lazy pages over userfaultfd), so the
    /// tree runs before all its memory is read back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lazy: bool,
    /// A checkpoint of the container checkpoint layout (a kubelet's archive imported, or a
    /// Podman checkpoint), restored as a new runc container: the container image's root filesystem, unpacked. ckptd builds the bundle
    /// `target.bundle` from a copy of it, the archive's `rootfs-diff.tar`, `deleted.files`,
    /// `bind.mounts` and `spec.dump`. Root only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    /// `post_restore` and `post_restore_signal` for this restore, instead of those the
    /// checkpoint recorded (`{}`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointAndJob {
    pub checkpoint: Checkpoint,
    pub job: Job,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEnvelope {
    pub job: Job,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriuInfo {
    pub path: Option<String>,
    pub version: Option<String>,
    /// Whether `criu check` passed at daemon start.
    pub check_ok: bool,
    /// What `criu check` printed when it failed (or why it could not run).
    pub check_output: Option<String>,
    /// `criu check --feature X` for the features that matter: uffd (lazy restore),
    /// mem_dirty_track (soft-dirty, incremental dumps), pidfd_store, network_lock_nftables,
    /// tcp_half_closed (TCP repair of half-closed connections).
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
    /// Whether CRIU can keep what it probes of the kernel between runs (`/run/criu.kdat`, which
    /// needs /run on a tmpfs); when false, every CRIU run probes again first (tens of ms).
    #[serde(default)]
    pub kernel_probe_cached: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub name: String,
    /// The binary (runc) or the API socket (Docker).
    pub path: String,
    pub version: Option<String>,
    /// Whether ckptd can use it now (Docker: its API answered).
    #[serde(default = "yes")]
    pub reachable: bool,
    /// Why it cannot be used, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageInfo {
    pub state_dir: String,
    pub checkpoints_dir: String,
    pub free_bytes: u64,
    /// Bytes the ready checkpoints' images take, wherever they are.
    #[serde(default)]
    pub used_bytes: u64,
    /// Directories in the checkpoints root that no checkpoint row knows: reported at start, never
    /// deleted.
    #[serde(default)]
    pub unknown_dirs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub version: String,
    pub kernel: String,
    pub criu: CriuInfo,
    pub runtimes: Vec<RuntimeInfo>,
    pub storage: StorageInfo,
    pub workers: usize,
    pub queue_capacity: usize,
}

fn yes() -> bool {
    true
}

/// The checkpoints a schedule takes: the options of `POST /v1/checkpoints`, except that
/// `leave_running` defaults to true (a schedule that stopped its target would run once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleOptions {
    #[serde(default = "yes")]
    pub leave_running: bool,
    #[serde(default)]
    pub tcp_established: bool,
    #[serde(default)]
    pub ext_unix_sk: bool,
    #[serde(default)]
    pub file_locks: bool,
    #[serde(default)]
    pub shell_job: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<String>,
    /// Added to each checkpoint, besides `schedule=<name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// Push each ready checkpoint to this remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_to: Option<String>,
    /// With `push_to`: false drops the local images once each push is durable.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub keep_local: bool,
    /// Each run's hooks (as a checkpoint's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        Self {
            leave_running: true,
            tcp_established: false,
            ext_unix_sk: false,
            file_locks: false,
            shell_job: false,
            checkpoint_dir: None,
            labels: BTreeMap::new(),
            expires_in: None,
            push_to: None,
            keep_local: true,
            hooks: None,
        }
    }
}

/// Which of a schedule's checkpoints stay, with restic's semantics: each rule keeps the newest
/// checkpoint of each of its last N calendar buckets (UTC) that hold one, the rules are ORed,
/// and the newest ready checkpoint always stays. No rule at all keeps everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "json_u32_opt"
    )]
    pub keep_last: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "json_u32_opt"
    )]
    pub keep_hourly: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "json_u32_opt"
    )]
    pub keep_daily: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "json_u32_opt"
    )]
    pub keep_weekly: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "json_u32_opt"
    )]
    pub keep_monthly: Option<u32>,
    /// Keep every checkpoint taken within this long of the newest one (`36h`, `7d`, `2w`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

/// A schedule's most recent run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRun {
    pub at: DateTime<Utc>,
    pub status: RunStatus,
    /// Started by `POST /v1/schedules/{ref}/run` rather than by the clock.
    #[serde(default)]
    pub manual: bool,
    #[serde(default)]
    pub job_id: Option<Uuid>,
    #[serde(default)]
    pub checkpoint_id: Option<Uuid>,
    #[serde(default)]
    pub checkpoint_name: Option<String>,
    #[serde(default)]
    pub error: Option<ErrorInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: Uuid,
    pub name: String,
    pub target: Target,
    /// As given: 5 fields, 6 with seconds first, or @hourly/@daily/@weekly/@monthly/@yearly.
    pub cron: String,
    /// What runs: the @-forms with this schedule's stable jitter filled in.
    pub effective_cron: String,
    pub options: ScheduleOptions,
    pub retention: Retention,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// None while disabled.
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run: Option<ScheduleRun>,
    #[serde(default)]
    pub owner_uid: u32,
    /// Failed runs in a row (a refused run or a failed job); a success resets it.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Why ckptd disabled the schedule (after `schedule_max_failures` failed runs in a row);
    /// enabling it again clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// When a run last succeeded (its checkpoint ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
    /// When a run last failed (refused, or its job failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<DateTime<Utc>>,
}

/// Body of `POST /v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    pub name: String,
    pub target: Target,
    pub cron: String,
    #[serde(default)]
    pub options: ScheduleOptions,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// Body of `PATCH /v1/schedules/{ref}`: each field given replaces the schedule's (`options` and
/// `retention` as whole objects); the name stays, since its checkpoints carry it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<ScheduleOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionItem {
    pub checkpoint_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub status: CheckpointStatus,
    /// Why it stays (every rule that keeps it), or why it goes.
    pub reasons: Vec<String>,
}

/// `GET /v1/schedules/{ref}/retention`: what the next retention pass would keep and prune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetentionPlan {
    pub schedule: String,
    pub retention: Retention,
    /// The checkpoints whose images are on this host (and those not ready yet).
    pub keep: Vec<RetentionItem>,
    pub prune: Vec<RetentionItem>,
    /// The same rules applied to the copies in each remote the schedule's checkpoints are in:
    /// a pruned copy is deleted from that remote.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remotes: BTreeMap<String, LocationPlan>,
}

/// Retention in one remote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationPlan {
    pub keep: Vec<RetentionItem>,
    pub prune: Vec<RetentionItem>,
}

/// Body of `POST /v1/checkpoints/adopt`: an existing image directory to catalogue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptRequest {
    /// The image directory (absolute): one made by `criu dump`, `runc checkpoint` or Docker.
    pub dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Process images: defaults to the root of the dumped tree. runc/Docker images: needed,
    /// as `{"kind":"container","id":...,"bundle":...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The options the images were dumped with (a restore reuses them).
    #[serde(default)]
    pub options: CheckpointOptions,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
