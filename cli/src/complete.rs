//! Dynamic shell completion (`source <(COMPLETE=bash ckpt)`): checkpoint, schedule, job and
//! remote names come from the daemon as the user types. The daemon is the one `CKPTD_SOCKET`
//! names (or the default socket); one that does not answer within a second completes nothing.

use std::time::Duration;

use ckptd_api::query::{CheckpointQuery, JobQuery};
use ckptd_api::{Client, JobState};
use clap_complete::engine::CompletionCandidate;

/// Asks the daemon, briefly: completion must never hang a shell.
fn ask<T, F, Fut>(f: F) -> Vec<T>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Vec<T>>,
{
    let socket = std::env::var("CKPTD_SOCKET").unwrap_or_else(|_| "/run/ckptd.sock".into());
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), f(Client::new(socket)))
            .await
            .unwrap_or_default()
    })
}

fn candidate(value: String, help: String) -> CompletionCandidate {
    CompletionCandidate::new(value).help(Some(help.into()))
}

/// The checkpoints' names, newest first, each with its status and target.
pub fn checkpoints() -> Vec<CompletionCandidate> {
    ask(|c| async move {
        let q = CheckpointQuery {
            limit: Some(ckptd_api::query::MAX_LIMIT),
            ..Default::default()
        };
        c.list_checkpoints(&q)
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|cp| {
                        let help = format!(
                            "{} {}",
                            cp.status.as_str(),
                            crate::render::target_text(&cp.target)
                        );
                        candidate(cp.name, help)
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The schedules' names, each with its cron.
pub fn schedules() -> Vec<CompletionCandidate> {
    ask(|c| async move {
        c.schedules()
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|s| candidate(s.name, s.effective_cron))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The ids of the jobs queued or running: the ones to wait for or cancel.
pub fn jobs() -> Vec<CompletionCandidate> {
    ask(|c| async move {
        let mut out = Vec::new();
        for state in [JobState::Running, JobState::Queued] {
            let q = JobQuery {
                state: Some(state),
                ..Default::default()
            };
            if let Ok(l) = c.jobs(&q).await {
                out.extend(l.items.into_iter().map(|j| {
                    let help = format!("{} {}", j.kind.as_str(), j.state.as_str());
                    candidate(j.id.to_string(), help)
                }));
            }
        }
        out
    })
}

/// The remotes the daemon is configured with.
pub fn remotes() -> Vec<CompletionCandidate> {
    ask(|c| async move {
        c.remotes()
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|r| candidate(r.name, format!("bucket {}", r.bucket)))
                    .collect()
            })
            .unwrap_or_default()
    })
}
