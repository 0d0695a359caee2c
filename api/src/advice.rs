//! What to try next after an error, said once as data and phrased by each caller in its own words.
//!
//! The daemon attaches an `Advice` to an error (`details.advice` on the wire) and phrases it for
//! API callers as `details.hint` with [`Advice::api_text`]: routes and JSON fields. The `ckpt` CLI
//! phrases the same advice with `ckpt` commands and flags. A hint that names neither (say,
//! `docker start web`) stays plain text in `details.hint` with no `advice`.

use serde::{Deserialize, Serialize};

/// A CRIU option a caller can turn on for a checkpoint or a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriuOption {
    TcpEstablished,
    ExtUnixSk,
    FileLocks,
    ShellJob,
}

impl CriuOption {
    /// The JSON field of `POST /v1/checkpoints` (and of a restore's body).
    pub fn field(self) -> &'static str {
        match self {
            Self::TcpEstablished => "tcp_established",
            Self::ExtUnixSk => "ext_unix_sk",
            Self::FileLocks => "file_locks",
            Self::ShellJob => "shell_job",
        }
    }

    /// The `ckpt create` / `ckpt restore` flag.
    pub fn flag(self) -> &'static str {
        match self {
            Self::TcpEstablished => "--tcp-established",
            Self::ExtUnixSk => "--ext-unix-sk",
            Self::FileLocks => "--file-locks",
            Self::ShellJob => "--shell-job",
        }
    }
}

/// What to try next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Advice {
    /// Retry with a CRIU option on: `{because}: retry with OPTION[, or {or}][ ({note})]`.
    RetryWith {
        option: CriuOption,
        because: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        or: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// The reference named no checkpoint the caller may see.
    ListCheckpoints,
    /// The id named no job the caller may see.
    ListJobs,
    /// The reference named no schedule the caller may see.
    ListSchedules,
    /// The checkpoint is not ready: its error says why; or take a new one.
    ShowCheckpoint { checkpoint: String },
    /// The whole CRIU log has more than the quoted lines.
    ReadLog { path: String },
    /// Another job holds what this request needs: wait for it, then retry.
    WaitForJob { job: String },
    /// A running job holds what this request needs: wait for the running jobs, then retry.
    WaitForRunningJobs,
    /// The container belongs to another runtime than the one named: name that one.
    UseRuntime {
        runtime: crate::Runtime,
        container: String,
    },
    /// Advice of a newer daemon that this client does not know; `details.hint` phrases it.
    #[serde(other)]
    Unknown,
}

impl Advice {
    /// The advice in the API's words: what `details.hint` says.
    pub fn api_text(&self) -> String {
        match self {
            Advice::RetryWith {
                option,
                because,
                or,
                note,
            } => retry_text(because, &format!("\"{}\": true", option.field()), or, note),
            Advice::ListCheckpoints => "list checkpoints with GET /v1/checkpoints".into(),
            Advice::ListJobs => "list jobs with GET /v1/jobs".into(),
            Advice::ListSchedules => "list schedules with GET /v1/schedules".into(),
            Advice::ShowCheckpoint { checkpoint } => format!(
                "see its error with GET /v1/checkpoints/{checkpoint}, or take a new checkpoint"
            ),
            Advice::ReadLog { path } => {
                format!("read the full CRIU log ({path}) or GET /v1/checkpoints/{{ref}}/log")
            }
            Advice::WaitForJob { job } => {
                format!("wait for it to end (GET /v1/jobs/{job}?wait=60), then retry")
            }
            Advice::WaitForRunningJobs => {
                "wait for the running job (GET /v1/jobs?state=running), then retry".into()
            }
            Advice::UseRuntime { runtime, container } => format!(
                "{runtime} knows a container named {container}: give \"runtime\": \"{runtime}\" in the target"
            ),
            Advice::Unknown => String::new(),
        }
    }
}

/// `{because}: retry with {what}[, or {or}][ ({note})]`: shared by every caller's phrasing.
pub fn retry_text(because: &str, what: &str, or: &Option<String>, note: &Option<String>) -> String {
    let mut s = format!("{because}: retry with {what}");
    if let Some(or) = or {
        s.push_str(", or ");
        s.push_str(or);
    }
    if let Some(note) = note {
        s.push_str(" (");
        s.push_str(note);
        s.push(')');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_tagged_json() {
        let a = Advice::RetryWith {
            option: CriuOption::TcpEstablished,
            because: "the process has an established TCP connection".into(),
            or: None,
            note: Some("the connection is then restored too".into()),
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["kind"], "retry_with");
        assert_eq!(v["option"], "tcp_established");
        assert!(v.get("or").is_none());
        assert_eq!(serde_json::from_value::<Advice>(v).unwrap(), a);
        assert_eq!(
            a.api_text(),
            "the process has an established TCP connection: retry with \"tcp_established\": true \
             (the connection is then restored too)"
        );
    }

    #[test]
    fn a_newer_daemons_advice_is_unknown_not_an_error() {
        let a: Advice = serde_json::from_str(r#"{"kind":"reticulate_splines"}"#).unwrap();
        assert_eq!(a, Advice::Unknown);
    }

    #[test]
    fn every_option_has_a_field_and_a_flag() {
        for o in [
            CriuOption::TcpEstablished,
            CriuOption::ExtUnixSk,
            CriuOption::FileLocks,
            CriuOption::ShellJob,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.field());
            assert_eq!(o.flag(), format!("--{}", o.field().replace('_', "-")));
        }
    }
}
