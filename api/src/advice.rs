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
    /// The checkpoint's filesystem is full: free space, or dump to a directory on a larger one.
    MoreSpace,
    /// The checkpoint's folder exists already: another name, or another directory.
    OtherNameOrDir,
    /// The directory is not one the caller may use: the daemon's storage, or an allowed one.
    UseOwnStorage,
    /// The directory is not the caller's own: one the caller made, or the daemon's storage.
    UseOwnDirectory,
    /// runc does not know the container under this root (`None`: runc's default).
    RuncRoot {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root: Option<String>,
    },
    /// The restore needs a bundle (config.json and rootfs) for the new container.
    GiveBundle,
    /// The recorded bundle's config.json changed since the dump.
    BundleChanged,
    /// A Kubernetes checkpoint restored into a new runc container needs the image's rootfs.
    GiveRootfs,
    /// A container already has the name: free it with `command`, or restore into another name.
    FreeContainerName { command: String },
    /// A lazy restore cannot be done here: restore all memory up front.
    WithoutLazy,
    /// `format=podman` is for Podman checkpoints: ckptd's own archive fits any.
    WithoutFormat,
    /// The archive's checkpoint name is taken here: import under another.
    ImportAsOtherName,
    /// The remote copy's name is taken here: pull under another.
    PullAsOtherName,
    /// The remote holds the checkpoint already: delete its copy to push again.
    DeleteRemoteCopy { remote: String, checkpoint: String },
    /// The remote holds no such checkpoint: list what it holds.
    ListRemoteCheckpoints { remote: String },
    /// The daemon has no such remote: configure it; the remotes it has are listed.
    ConfigureRemote,
    /// The remote refused or did not answer: check it, then run the job again.
    CheckRemote { credentials: bool },
    /// A schedule has the name: choose another, or change that schedule.
    ChangeSchedule { schedule: String },
    /// The schedule's pid is another process now: point it at the right one, or delete it.
    RetargetSchedule { schedule: String },
    /// Advice of a newer daemon that this client does not know; `details.hint` phrases it.
    #[serde(other)]
    Unknown,
}

/// Who reads a hint, and so whose words it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// An API client: routes, JSON fields and query parameters.
    Api,
    /// The `ckpt` CLI: commands and flags.
    Cli,
}

impl Advice {
    /// The advice in the API's words: what `details.hint` says.
    pub fn api_text(&self) -> String {
        self.text(Caller::Api).unwrap_or_default()
    }

    /// The advice in `caller`'s words; `None` for advice this build does not know. The one place
    /// a hint is phrased: each variant says the same thing to both callers.
    pub fn text(&self, caller: Caller) -> Option<String> {
        let api = caller == Caller::Api;
        let pick = |a: String, c: String| if api { a } else { c };
        Some(match self {
            Advice::RetryWith {
                option,
                because,
                or,
                note,
            } => {
                let what = if api {
                    format!("\"{}\": true", option.field())
                } else {
                    option.flag().to_owned()
                };
                retry_text(because, &what, or, note)
            }
            Advice::ListCheckpoints => pick(
                "list checkpoints with GET /v1/checkpoints".into(),
                "list checkpoints with `ckpt ls`".into(),
            ),
            Advice::ListJobs => pick(
                "list jobs with GET /v1/jobs".into(),
                "list jobs with `ckpt jobs`".into(),
            ),
            Advice::ListSchedules => pick(
                "list schedules with GET /v1/schedules".into(),
                "list schedules with `ckpt schedule ls`".into(),
            ),
            Advice::ShowCheckpoint { checkpoint } => format!(
                "see its error with {}, or take a new checkpoint",
                pick(
                    format!("GET /v1/checkpoints/{checkpoint}"),
                    format!("`ckpt inspect {checkpoint}`")
                )
            ),
            Advice::ReadLog { path } => pick(
                format!("read the full CRIU log ({path}) or GET /v1/checkpoints/{{ref}}/log"),
                format!("read the full CRIU log with `ckpt logs NAME` (or {path})"),
            ),
            Advice::WaitForJob { job } => pick(
                format!("wait for it to end (GET /v1/jobs/{job}?wait=60), then retry"),
                format!("wait for job {job} to end (`ckpt jobs wait {job}`), then retry"),
            ),
            Advice::WaitForRunningJobs => pick(
                "wait for the running jobs (GET /v1/jobs?state=running), then retry".into(),
                "wait for the running jobs to end (`ckpt jobs --state running`), then retry".into(),
            ),
            Advice::UseRuntime { runtime, container } => format!(
                "{runtime} knows a container named {container}: {}",
                pick(
                    format!("give \"runtime\": \"{runtime}\" in the target"),
                    format!("ckpt create {container} --runtime {runtime}")
                )
            ),
            Advice::MoreSpace => format!(
                "free space there, or give {} on a larger filesystem",
                pick("a checkpoint_dir".into(), "--checkpoint-dir DIR".into())
            ),
            Advice::OtherNameOrDir => pick(
                "choose another name or checkpoint_dir".into(),
                "choose another NAME or --checkpoint-dir".into(),
            ),
            Advice::UseOwnStorage => format!(
                "leave out {} to use the daemon's own storage, or ask an administrator to add the \
                 directory to allowed_dirs in ckptd's configuration",
                pick("checkpoint_dir".into(), "--checkpoint-dir".into())
            ),
            Advice::UseOwnDirectory => format!(
                "give a directory of your own (mkdir -m 0700 DIR as yourself) inside an \
                 allowed_dirs entry that only root can change, or leave out {}",
                pick("checkpoint_dir".into(), "--checkpoint-dir".into())
            ),
            Advice::RuncRoot { root } => {
                let flag = root
                    .as_deref()
                    .map(|r| format!(" --root {r}"))
                    .unwrap_or_default();
                format!(
                    "list containers with `runc{flag} list`; if it runs under another runc root, \
                     give {}",
                    pick("\"root\" in the target".into(), "--root DIR".into())
                )
            }
            Advice::GiveBundle => format!(
                "give {} the directory that holds the container's config.json and rootfs",
                pick("as the target's \"bundle\"".into(), "--bundle DIR,".into())
            ),
            Advice::BundleChanged => {
                format!(
                "restore the old config.json, or give the bundle explicitly ({}) to restore with \
                 the new one",
                pick("\"bundle\" in the target".into(), "--into ID --bundle DIR".into())
            )
            }
            Advice::GiveRootfs => format!(
                "give {}, the container image's root filesystem unpacked, and ckptd builds the \
                 bundle there",
                pick("\"rootfs\"".into(), "--rootfs DIR".into())
            ),
            Advice::FreeContainerName { command } => format!(
                "{command}, or restore into another name ({})",
                pick("the target's \"id\"".into(), "--into NAME".into())
            ),
            Advice::WithoutLazy => pick(
                "restore without \"lazy\"".into(),
                "restore without --lazy".into(),
            ),
            Advice::WithoutFormat => format!(
                "leave {} out for ckptd's own archive",
                pick("format".into(), "--format".into())
            ),
            Advice::ImportAsOtherName => format!(
                "import it under another name ({}), or delete the old checkpoint first",
                pick("?name=".into(), "--name NAME".into())
            ),
            Advice::PullAsOtherName => format!(
                "pull it under another name ({}), or delete the old checkpoint first",
                pick("{\"name\": \"...\"}".into(), "--name NAME".into())
            ),
            Advice::DeleteRemoteCopy { remote, checkpoint } => format!(
                "delete the remote copy first ({}) to push it again",
                pick(
                    format!("DELETE /v1/remotes/{remote}/checkpoints/{checkpoint}"),
                    format!("ckpt rm-remote --remote {remote} {checkpoint}")
                )
            ),
            Advice::ListRemoteCheckpoints { remote } => format!(
                "{} lists what it holds",
                pick(
                    format!("GET /v1/remotes/{remote}/checkpoints"),
                    format!("`ckpt ls --remote {remote}`")
                )
            ),
            Advice::ConfigureRemote => format!(
                "add a [remotes.NAME] table to the daemon's configuration file; {} lists them",
                pick("GET /v1/remotes".into(), "`ckpt remotes`".into())
            ),
            Advice::CheckRemote { credentials } => {
                let tells = pick("GET /v1/remotes".into(), "`ckpt remotes`".into());
                if *credentials {
                    format!(
                        "check the remote's credentials (credentials_file or AWS_ACCESS_KEY_ID / \
                         AWS_SECRET_ACCESS_KEY) and the bucket's policy; {tells} tells whether \
                         it answers"
                    )
                } else {
                    format!(
                        "{tells} tells whether the remote answers; the job can be run again once \
                         it does"
                    )
                }
            }
            Advice::ChangeSchedule { schedule } => format!(
                "choose another name, or change the existing schedule ({})",
                pick(
                    format!("PATCH /v1/schedules/{schedule}"),
                    format!("ckpt schedule set {schedule}")
                )
            ),
            Advice::RetargetSchedule { schedule } => pick(
                format!(
                    "point the schedule at the process you mean (PATCH /v1/schedules/{schedule} \
                     with a new target), or delete it"
                ),
                format!(
                    "point the schedule at the process you mean (ckpt schedule set {schedule} \
                     --target PID), or delete it (ckpt schedule rm {schedule})"
                ),
            ),
            Advice::Unknown => return None,
        })
    }

    /// Every kind of advice, with sample values: for tests that check each caller's words.
    pub fn samples() -> Vec<Advice> {
        let s = |x: &str| x.to_owned();
        vec![
            Advice::RetryWith {
                option: CriuOption::TcpEstablished,
                because: s("the process has an established TCP connection"),
                or: None,
                note: None,
            },
            Advice::ListCheckpoints,
            Advice::ListJobs,
            Advice::ListSchedules,
            Advice::ShowCheckpoint {
                checkpoint: s("web"),
            },
            Advice::ReadLog {
                path: s("/var/lib/ckptd/x/dump.log"),
            },
            Advice::WaitForJob { job: s("0b1c") },
            Advice::WaitForRunningJobs,
            Advice::UseRuntime {
                runtime: crate::Runtime::Docker,
                container: s("web"),
            },
            Advice::MoreSpace,
            Advice::OtherNameOrDir,
            Advice::UseOwnStorage,
            Advice::UseOwnDirectory,
            Advice::RuncRoot {
                root: Some(s("/run/r")),
            },
            Advice::GiveBundle,
            Advice::BundleChanged,
            Advice::GiveRootfs,
            Advice::FreeContainerName {
                command: s("podman stop web"),
            },
            Advice::WithoutLazy,
            Advice::WithoutFormat,
            Advice::ImportAsOtherName,
            Advice::PullAsOtherName,
            Advice::DeleteRemoteCopy {
                remote: s("s3"),
                checkpoint: s("web"),
            },
            Advice::ListRemoteCheckpoints { remote: s("s3") },
            Advice::ConfigureRemote,
            Advice::CheckRemote { credentials: true },
            Advice::CheckRemote { credentials: false },
            Advice::ChangeSchedule {
                schedule: s("nightly"),
            },
            Advice::RetargetSchedule {
                schedule: s("nightly"),
            },
        ]
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

    /// Words only the API has (routes, JSON fields, query parameters) never reach a CLI user,
    /// and `ckpt` commands and flags never reach an API caller.
    #[test]
    fn each_caller_reads_its_own_words() {
        let api_words = [
            "GET ",
            "PATCH ",
            "DELETE ",
            "/v1/",
            "\": ",
            "\"root\"",
            "\"bundle\"",
            "\"id\"",
            "\"rootfs\"",
            "\"lazy\"",
            "\"name\"",
            "?name=",
            "checkpoint_dir",
            " format ",
        ];
        let cli_words = ["ckpt ", "--"];
        for a in Advice::samples() {
            let cli = a.text(Caller::Cli).unwrap();
            let api = a.text(Caller::Api).unwrap();
            assert_ne!(cli, api, "{a:?} says the same to both callers");
            for w in api_words {
                assert!(!cli.contains(w), "{a:?} tells a CLI user {w:?}: {cli}");
            }
            // A tool's own flags (`runc --root R list`) are the same for both.
            let api = api.replace("runc --root", "runc");
            for w in cli_words {
                assert!(!api.contains(w), "{a:?} tells an API caller {w:?}: {api}");
            }
            let v = serde_json::to_value(&a).unwrap();
            assert_eq!(serde_json::from_value::<Advice>(v).unwrap(), a);
        }
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
