//! `ckpt create`, `ls`, `inspect`, `rm`, `restore`, `logs`.

use ckptd_api::query::CheckpointQuery;
use ckptd_api::{Advice, Client, ClientError, CreateCheckpoint, RestoreRequest, Runtime, Target};
use clap::CommandFactory;

use crate::args::{Cli, CreateArgs, LsArgs, RestoreArgs, TargetArgs};
use crate::commands::follow::{finish_checkpoint, follow_to_success, print_queued, printed};
use crate::render::{checkpoint_table, inspect_text, job_outcome, print_json};
use crate::Failed;

/// Sends a request about `t`'s target: a container named without `--runtime` is runc's, or
/// else the one runtime's that has a container of that name (the daemon's advice says which).
pub async fn in_found_runtime<T, F, Fut>(t: &TargetArgs, send: F) -> Result<T, ClientError>
where
    F: Fn(Target) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let first = send(t.target()).await;
    if t.runtime.is_some() {
        return first;
    }
    match first.as_ref().err().and_then(|e| e.api_error()?.1.advice()) {
        Some(Advice::UseRuntime { runtime, container }) if container == t.target => {
            eprintln!("ckpt: {container} is a {runtime} container (--runtime {runtime})");
            send(t.target_in(runtime)).await
        }
        _ => first,
    }
}

pub async fn create(client: &Client, a: CreateArgs) -> Result<(), ClientError> {
    let req = CreateCheckpoint {
        target: None,
        name: a.name,
        leave_running: a.leave_running,
        tcp_established: a.flags.criu.tcp_established,
        ext_unix_sk: a.flags.criu.ext_unix_sk,
        file_locks: a.flags.criu.file_locks,
        shell_job: a.flags.criu.shell_job,
        checkpoint_dir: a.flags.checkpoint_dir,
        labels: a.flags.labels.into_iter().collect(),
        expires_in: a.flags.expires_in,
        push_to: a.flags.push_to,
        keep_local: a.flags.drop_local.then_some(false),
        hooks: a.flags.hooks.hooks(),
    };
    // Queued at once; followed here so that a terminal shows progress.
    let out = in_found_runtime(&a.target, |target| {
        let req = CreateCheckpoint {
            target: Some(target),
            ..req.clone()
        };
        async move { client.create_checkpoint(&req, false).await }
    })
    .await?;
    finish_checkpoint(client, out, a.no_wait, a.json).await
}

pub async fn ls(client: &Client, a: LsArgs) -> Result<(), ClientError> {
    if let Some(remote) = &a.remote {
        return crate::commands::remotes::ls(client, remote, a.quiet, a.json).await;
    }
    let mut labels: Vec<String> = a
        .schedule
        .map(|s| format!("schedule={s}"))
        .into_iter()
        .collect();
    labels.extend(a.labels.into_iter().map(|(k, v)| format!("{k}={v}")));
    let q = CheckpointQuery {
        pid: a.pid,
        container: a.container,
        status: a.status,
        labels,
        limit: Some(a.limit.clamp(1, ckptd_api::query::MAX_LIMIT)),
        after: None,
    };
    let list = client.list_checkpoints(&q).await?;
    if a.json {
        print_json(&list.items);
    } else if a.quiet {
        for c in &list.items {
            println!("{}", c.name);
        }
    } else {
        // The name gives way first on a narrow terminal (--wide: nothing is cut).
        let width = if a.wide {
            None
        } else {
            crate::table::terminal_width()
        };
        print!("{}", checkpoint_table(&list.items, a.wide).fit(width, 0));
    }
    Ok(())
}

pub async fn inspect(client: &Client, reference: &str, json: bool) -> Result<(), ClientError> {
    let c = client.checkpoint(reference).await?;
    if json {
        print_json(&c);
        return Ok(());
    }
    println!("{}", inspect_text(&c));
    // The tree its images hold, when they are here to read.
    if c.status == ckptd_api::CheckpointStatus::Ready && c.is_local() {
        match client.checkpoint_processes(reference).await {
            Ok(t) => println!(
                "Processes:\n{}",
                crate::render::process_tree_text(&t.processes)
                    .lines()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            Err(e) => println!("Processes:    cannot read them: {e}"),
        }
    }
    Ok(())
}

/// Each failure is reported as it happens; the exit code says whether any failed.
pub async fn rm(client: &Client, references: Vec<String>) -> Result<(), Failed> {
    let mut failed = false;
    for r in references {
        failed |= printed(&r, client.delete_checkpoint(&r).await).is_some();
    }
    if failed {
        Err(Failed::Reported)
    } else {
        Ok(())
    }
}

pub async fn restore(client: &Client, a: RestoreArgs) -> Result<(), ClientError> {
    let image = match &a.image {
        Some(i) => Some(registry_of_image(client, i).await?),
        None => None,
    };
    let reference = a.reference.clone().unwrap_or_default();
    // --into takes the checkpoint's own runtime unless told otherwise: a Docker checkpoint is
    // restored into a Docker container.
    let runtime = match (a.runtime, &a.into) {
        (Some(r), _) => r,
        (None, Some(_)) => match match &image {
            Some((registry, tag)) => client.remote_checkpoint(registry, tag).await?.checkpoint,
            None => client.checkpoint(&reference).await?,
        }
        .target
        {
            Target::Container { runtime, .. } => runtime,
            Target::Process { .. } | Target::Group { .. } => Runtime::Runc,
        },
        (None, None) => Runtime::Runc,
    };
    if a.into.is_some() && runtime == Runtime::Runc && a.bundle.is_none() {
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--into a new runc container needs --bundle DIR (its config.json and rootfs)",
            )
            .exit();
    }
    let target = a.into.map(|id| Target::Container {
        id,
        runtime,
        root: a.root,
        bundle: a.bundle,
        namespace: None,
    });
    // A flag left out keeps the option the checkpoint was taken with.
    let on = |b: bool| b.then_some(true);
    let req = RestoreRequest {
        target,
        tcp_established: on(a.criu.tcp_established),
        ext_unix_sk: on(a.criu.ext_unix_sk),
        file_locks: on(a.criu.file_locks),
        shell_job: on(a.criu.shell_job),
        console_socket: a.console_socket,
        lazy: a.lazy,
        rootfs: a.rootfs,
        hooks: match (a.no_hooks, &a.post_restore, &a.post_restore_signal) {
            (true, _, _) => Some(ckptd_api::Hooks::default()),
            (false, None, None) => None,
            (false, cmd, signal) => Some(ckptd_api::Hooks {
                post_restore: cmd
                    .as_ref()
                    .map(|l| vec!["sh".to_owned(), "-c".to_owned(), l.clone()]),
                post_restore_signal: signal.clone(),
                ..Default::default()
            }),
        },
    };
    let job = match &image {
        Some((registry, tag)) => {
            client
                .restore_from_remote(registry, tag, &req, false)
                .await?
        }
        None => match client.restore(&reference, &req, false).await {
            Err(e) if e.api_error().is_some_and(|(s, _)| s.as_u16() == 404) => {
                restore_from_the_remote_that_has_it(client, &reference, &req, e).await?
            }
            r => r?,
        },
    };
    let job = follow_to_success(client, job, a.no_wait).await?;
    if a.json {
        print_json(&job);
    } else if a.no_wait {
        print_queued(&job);
    } else {
        println!("restored: {}", job_outcome(&job));
        // A process restored onto a terminal ckptd holds (a container's output log is not one).
        if let Some(r) = job.result.as_ref().filter(|r| r.container.is_none()) {
            if let (Some(pid), Some(log)) = (r.pid, &r.output_log) {
                println!("its terminal is held by ckptd: ckpt attach {pid} (its output: {log})");
            }
        }
        if let Some(log) = job.result.as_ref().and_then(|r| r.output_log.clone()) {
            println!("output: {log}");
        }
    }
    Ok(())
}

/// The configured registry that serves image `image` (`HOST[:PORT]/REPOSITORY:TAG`, or
/// `...@sha256:HEX`), and the tag (or digest) to ask it for.
async fn registry_of_image(client: &Client, image: &str) -> Result<(String, String), ClientError> {
    let bad = |why: String| -> ClientError {
        Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, why)
            .exit()
    };
    let (name, tag) = match image.rsplit_once('@') {
        Some((n, d)) => (n, d.to_owned()),
        None => match image.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t.to_owned()),
            _ => (image, "latest".to_owned()),
        },
    };
    let Some((host, repository)) = name.split_once('/') else {
        return Err(bad(format!(
            "--image {image}: give HOST[:PORT]/REPOSITORY:TAG, the registry's address first"
        )));
    };
    let registries: Vec<_> = client
        .remotes()
        .await?
        .items
        .into_iter()
        .filter(|r| r.kind == "registry")
        .collect();
    let serves = |r: &ckptd_api::RemoteInfo| {
        let at = r
            .endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        at == host && r.repository.as_deref() == Some(repository)
    };
    match registries.iter().find(|r| serves(r)) {
        Some(r) => Ok((r.name.clone(), tag)),
        None => Err(bad(format!(
            "--image {image}: no registry of ckptd's configuration serves {host}/{repository} ({}); \
             add a [registries.NAME] table with url = \"https://{host}\" and repository = \"{repository}\" \
             to ckptd's configuration, then systemctl reload ckptd",
            if registries.is_empty() {
                "none is configured".to_owned()
            } else {
                format!(
                    "configured: {}",
                    registries
                        .iter()
                        .map(|r| format!("{} ({}/{})", r.name, r.endpoint, r.repository.as_deref().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ))),
    }
}

/// A checkpoint this host does not know may have been pushed by another: when exactly one
/// remote holds it, pull and restore it from there (one job, as the README promises); when
/// several do, say how to choose. Otherwise the daemon's `not found` stands.
async fn restore_from_the_remote_that_has_it(
    client: &Client,
    reference: &str,
    req: &RestoreRequest,
    not_found: ClientError,
) -> Result<ckptd_api::Job, ClientError> {
    let Ok(remotes) = client.remotes().await else {
        return Err(not_found);
    };
    let mut holding = Vec::new();
    for r in remotes.items {
        let Ok(list) = client.remote_checkpoints(&r.name).await else {
            continue;
        };
        if list
            .items
            .iter()
            .any(|c| c.checkpoint.name == reference || c.checkpoint.id.to_string() == reference)
        {
            holding.push(r.name);
        }
    }
    match &holding[..] {
        [] => Err(not_found),
        [remote] => {
            eprintln!("ckpt: {reference} is not here but in remote {remote}: pulling it first");
            client
                .restore_from_remote(remote, reference, req, false)
                .await
        }
        several => {
            let (status, mut error) = match not_found {
                ClientError::Api { status, error } => (status, error),
                other => return Err(other),
            };
            error.message = format!(
                "{}; remotes {} each hold a checkpoint {reference:?}",
                error.message,
                several.join(", ")
            );
            error.details.remove("advice");
            error.details.insert(
                "hint".into(),
                format!(
                    "pull it from one first: ckpt pull {reference} --remote {}",
                    several[0]
                )
                .into(),
            );
            Err(ClientError::Api { status, error })
        }
    }
}

pub async fn logs(client: &Client, reference: &str) -> Result<(), ClientError> {
    print!("{}", client.checkpoint_log(reference).await?);
    Ok(())
}
