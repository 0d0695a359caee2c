//! Query strings of the API, declared once: the daemon parses them with [`parse`] (strictly: an
//! unknown parameter or a malformed value is an error that names it) and the client writes them
//! with [`encode`]. Repeated keys (`label=a=1&label=b=2`) become lists.

use serde::{Deserialize, Serialize};

use crate::{CheckpointStatus, JobKind, JobState};

/// Most items one page of a list holds.
pub const MAX_LIMIT: u32 = 1000;
/// Items of a page when `limit` is left out.
pub const DEFAULT_LIMIT: u32 = 100;
/// Longest long-poll accepted by `GET /v1/jobs/{id}?wait=SECONDS`.
pub const MAX_WAIT_SECS: u64 = 600;

/// `GET /v1/checkpoints` filters and paging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    #[serde(
        default,
        deserialize_with = "a_pid",
        skip_serializing_if = "Option::is_none"
    )]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CheckpointStatus>,
    /// `key=value`, repeatable: checkpoints with every one of these labels.
    #[serde(default, rename = "label", skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(
        default,
        deserialize_with = "a_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[serde(
        default,
        deserialize_with = "a_cursor",
        skip_serializing_if = "Option::is_none"
    )]
    pub after: Option<i64>,
}

/// `GET /v1/jobs` filters and paging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<JobKind>,
    #[serde(
        default,
        deserialize_with = "a_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<u32>,
    #[serde(
        default,
        deserialize_with = "a_cursor",
        skip_serializing_if = "Option::is_none"
    )]
    pub after: Option<i64>,
}

/// `GET /v1/events`: `since` replays the held events from that time on (an RFC 3339 time, or
/// how long ago: `90s`, `10m`, `2h`, `1d`) before the live stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// `?wait=true` of the routes that start a job: answer when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    #[serde(default, deserialize_with = "flag")]
    pub wait: bool,
}

/// `GET /v1/jobs/{id}?wait=SECONDS`: long-poll until the job ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobWaitQuery {
    #[serde(
        default,
        deserialize_with = "seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub wait: Option<u64>,
}

/// How an archive is compressed.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    /// The archive's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Zstd => "application/zstd",
            Self::Gzip => "application/gzip",
            Self::None => "application/x-tar",
        }
    }
    /// The usual file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Zstd => "tar.zst",
            Self::Gzip => "tar.gz",
            Self::None => "tar",
        }
    }
}

/// The layout of a checkpoint's archive.
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
    strum::Display,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ArchiveFormat {
    /// ckptd's own: every file at the top level (a group's members' under `<index>/`),
    /// `manifest.json` (with every sha256) last.
    #[default]
    Ckptd,
    /// Podman's (`podman container checkpoint --export`), for checkpoints of Podman containers:
    /// `podman container restore --import` restores it.
    Podman,
    /// A kubelet's checkpoint archive in CRI-O's flavour, as checkpointctl reads it, for
    /// checkpoints of runc and Podman containers and imported container checkpoint archives.
    Kubernetes,
}

/// `GET /v1/checkpoints/{ref}/archive?compression=&format=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveQuery {
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub format: ArchiveFormat,
}

/// `POST /v1/checkpoints/import?name=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/checkpoints/{ref}/push?remote=NAME[&keep_local=false][&wait=true]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushQuery {
    pub remote: String,
    /// A registry's image tag (default: the checkpoint's name); buckets take none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A registry image's layout: `podman` (Podman restores it; the default for a Podman
    /// container's checkpoint), `kubernetes` (CRI-O's checkpoint image: a kubelet's archive),
    /// `ckptd` (the default otherwise). Buckets hold ckptd's only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ArchiveFormat>,
    /// False drops the local images once the push is durable.
    #[serde(
        default = "yes",
        deserialize_with = "flag",
        skip_serializing_if = "is_true"
    )]
    pub keep_local: bool,
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub wait: bool,
}

/// `DELETE /v1/checkpoints/{ref}?remote_copies=true`: also delete its copies in remotes.
/// `forget=true`: drop the record only, touching nothing on disk (for a directory that was
/// replaced, which ckptd will not reach through).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub remote_copies: bool,
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "is_false")]
    pub forget: bool,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// A query-string flag: `true`, `1` or a bare `wait` / `wait=` are on; `false` and `0` off.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    use serde::de::Error;
    let v = String::deserialize(d)?;
    match v.as_str() {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(D::Error::custom(format!("{v:?} is not true or false"))),
    }
}

/// A number in a query string, refused with what it should have been.
fn number<'de, D, T>(d: D, what: &str) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
{
    use serde::de::Error;
    let v = String::deserialize(d)?;
    v.parse()
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{v:?} is not {what}")))
}

fn a_pid<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    number(d, "a pid")
}

fn a_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    number(d, "a number")
}

fn a_cursor<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    number(d, "a cursor from a previous page's \"next\"")
}

fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    number(d, "a number of seconds")
}

/// Why a query string was refused, in the API's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// Parses a query string (without the `?`) strictly; an error names the parameter.
pub fn parse<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, QueryError> {
    let de = serde_html_form::Deserializer::from_bytes(query.as_bytes());
    serde_path_to_error::deserialize(de).map_err(|e| {
        let param = e.path().to_string();
        let inner = e.into_inner().to_string();
        QueryError(match inner.strip_prefix("unknown field ") {
            Some(rest) => format!(
                "unknown query parameter {}",
                rest.replacen(", expected", "; this route takes", 1)
                    .replacen("there are no fields", "this route takes none", 1)
            ),
            None if param != "." => format!("query parameter {param}: {inner}"),
            None => format!("invalid query string: {inner}"),
        })
    })
}

/// The query string (without the `?`) of `q`; empty when every field is left out.
pub fn encode<T: Serialize>(q: &T) -> String {
    serde_html_form::to_string(q).expect("query structs serialize")
}

/// `path?query`, or `path` when the query is empty.
pub fn with_query<T: Serialize>(path: &str, q: &T) -> String {
    match encode(q) {
        s if s.is_empty() => path.to_owned(),
        s => format!("{path}?{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_labels_round_trip_and_are_encoded() {
        let q = CheckpointQuery {
            status: Some(CheckpointStatus::Missing),
            labels: vec!["app=web".into(), "tier=a b&c".into()],
            limit: Some(5),
            ..Default::default()
        };
        let s = encode(&q);
        assert_eq!(
            s,
            "status=missing&label=app%3Dweb&label=tier%3Da+b%26c&limit=5"
        );
        assert_eq!(parse::<CheckpointQuery>(&s).unwrap(), q);
        assert_eq!(
            with_query("/v1/checkpoints", &CheckpointQuery::default()),
            "/v1/checkpoints"
        );
    }

    #[test]
    fn unknown_parameters_are_named() {
        let e = parse::<WaitQuery>("wiat=true").unwrap_err();
        assert!(e.0.starts_with("unknown query parameter `wiat`"), "{e}");
        assert!(e.0.contains("this route takes `wait`"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_not_ignored() {
        for q in ["status=done", "pid=x", "limit=-1", "after=z"] {
            assert!(parse::<CheckpointQuery>(q).is_err(), "{q}");
        }
        let e = parse::<JobQuery>("state=finished").unwrap_err();
        assert!(
            e.0.starts_with("query parameter state: unknown variant `finished`"),
            "{e}"
        );
        let e = parse::<JobWaitQuery>("wait=forever").unwrap_err();
        assert!(e.0.starts_with("query parameter wait:"), "{e}");
        assert!(parse::<ArchiveQuery>("compression=xz").is_err());
    }

    #[test]
    fn wait_flags_read_as_before() {
        for (q, want) in [
            ("wait=true", true),
            ("wait=1", true),
            ("wait=", true),
            ("wait", true),
        ] {
            assert_eq!(parse::<WaitQuery>(q).unwrap().wait, want, "{q}");
        }
        for q in ["wait=false", "wait=0", ""] {
            assert!(!parse::<WaitQuery>(q).unwrap().wait, "{q}");
        }
        assert!(parse::<WaitQuery>("wait=yes").is_err());
    }
}
