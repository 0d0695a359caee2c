//! `ckpt export`, `import`, `adopt`, `migrate`.

use std::os::unix::fs::OpenOptionsExt;

use ckptd_api::query::ArchiveQuery;
use ckptd_api::{AdoptRequest, Client, ClientError, Compression, JobEnvelope, JobState, Method};
use ckptd_api::{Remote, Runtime, Target};

use crate::args::{AdoptArgs, MigrateArgs};
use crate::commands::follow::job_failed;
use crate::render::{job_outcome, print_json, target_text};
use crate::table::human_bytes;

/// Writes a checkpoint's archive to `output` (`-`: stdout; none: `<name>.tar.zst` and the like
/// in the current directory), created 0600: it holds process memory. A failed export removes
/// what it wrote; an existing file is never overwritten by the default name.
pub async fn export(
    client: &Client,
    reference: &str,
    output: Option<&str>,
    query: ArchiveQuery,
) -> Result<(), ClientError> {
    let compression = query.compression;
    let default;
    let output = match output {
        Some(o) => o,
        None => {
            let name = client.checkpoint(reference).await?.name;
            let ext = match compression {
                Compression::Zstd => "tar.zst",
                Compression::Gzip => "tar.gz",
                Compression::None => "tar",
            };
            default = format!("{name}.{ext}");
            if std::path::Path::new(&default).exists() {
                return Err(ClientError::Io(format!(
                    "{default} already exists; remove it or give -o FILE"
                )));
            }
            &default
        }
    };
    if output == "-" {
        client
            .export(reference, query, &mut tokio::io::stdout())
            .await?;
        return Ok(());
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(output)
        .map_err(|e| ClientError::Io(format!("cannot create {output}: {e}")))?;
    let mut out = tokio::fs::File::from_std(file);
    match client.export(reference, query, &mut out).await {
        Ok(n) => {
            println!("{output}  {}", human_bytes(n));
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(output);
            Err(e)
        }
    }
}

pub async fn import(
    client: &Client,
    file: &str,
    name: Option<&str>,
    json: bool,
) -> Result<(), ClientError> {
    let cp = if file == "-" {
        client.import(tokio::io::stdin(), name).await?
    } else {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| ClientError::Io(format!("cannot open {file}: {e}")))?;
        client.import(f, name).await?
    };
    if json {
        print_json(&cp);
    } else {
        println!(
            "{}  {}  {}  {}",
            cp.name,
            cp.status.as_str(),
            human_bytes(cp.size_bytes),
            cp.dir
        );
    }
    Ok(())
}

pub async fn adopt(client: &Client, a: AdoptArgs) -> Result<(), ClientError> {
    let req = AdoptRequest {
        dir: a.dir,
        name: a.name,
        target: a.container.map(|id| Target::Container {
            id,
            runtime: Runtime::Runc,
            root: None,
            bundle: a.bundle,
            namespace: None,
        }),
        options: a.criu.options(false),
        labels: a.labels.into_iter().collect(),
    };
    let cp = client.adopt(&req).await?;
    if a.json {
        print_json(&cp);
    } else {
        println!(
            "{}  {}  {}  {}",
            cp.name,
            target_text(&cp.target),
            human_bytes(cp.size_bytes),
            cp.dir
        );
    }
    Ok(())
}

pub async fn migrate(client: &Client, a: MigrateArgs) -> Result<(), ClientError> {
    let token = std::fs::read_to_string(&a.token_file).map_err(|e| {
        ClientError::Io(format!("cannot read the token file {}: {e}", a.token_file))
    })?;
    let to = a.to.clone();
    let remote = Remote {
        addr: to.clone(),
        token: token.trim().to_owned(),
    };
    if let Some(via) = &a.via {
        return migrate_via(client, &remote, via, &a).await;
    }
    if a.live {
        return migrate_live(client, remote, &a).await;
    }
    let cp = client
        .migrate(&a.reference, &remote, a.name.as_deref())
        .await?;
    println!(
        "{} imported on {to} as {} ({})",
        a.reference, cp.name, cp.id
    );
    if a.restore {
        let env: JobEnvelope = remote
            .request(
                Method::POST,
                &format!("/v1/checkpoints/{}/restore?wait=true", cp.id),
                http_body_util::Empty::<bytes::Bytes>::new(),
            )
            .await?
            .into_result()?;
        if env.job.state != JobState::Succeeded {
            return Err(job_failed(&env.job));
        }
        println!("restored on {to}: {}", job_outcome(&env.job));
    }
    Ok(())
}

/// `ckpt migrate PID|CONTAINER --live`: one job here, one there; progress while the memory
/// moves.
async fn migrate_live(client: &Client, to: Remote, a: &MigrateArgs) -> Result<(), ClientError> {
    use std::io::IsTerminal;
    let container = |id: &str, bundle: Option<&String>| ckptd_api::Target::Container {
        id: id.to_owned(),
        runtime: ckptd_api::Runtime::Runc,
        root: None,
        bundle: bundle.cloned(),
        namespace: None,
    };
    let target = match a.reference.parse::<i32>() {
        Ok(pid) if a.reference.bytes().all(|b| b.is_ascii_digit()) => {
            if a.into.is_some() {
                return Err(ClientError::Io(
                    "--into names the container a runc container is restored as; a process \
                     is restored as itself (drop --into and --bundle)"
                        .into(),
                ));
            }
            ckptd_api::Target::Process { pid }
        }
        _ => container(&a.reference, None),
    };
    let what = crate::render::target_words(&target);
    let req = ckptd_api::CreateMigration {
        target: Some(target),
        into: a.into.as_deref().map(|id| container(id, a.bundle.as_ref())),
        to: to.addr.clone(),
        token: to.token.clone(),
        name: a.name.clone(),
        tcp_established: a.tcp_established,
        ..Default::default()
    };
    let mut job = client.migrate_live(&req, false).await?;
    if a.no_wait {
        println!("{}", job.id);
        return Ok(());
    }
    let tty = std::io::stderr().is_terminal();
    while !job.state.is_finished() {
        job = client
            .job(&job.id.to_string(), Some(std::time::Duration::from_secs(1)))
            .await?;
        if let (true, Some(p)) = (tty, job.progress) {
            eprint!(
                "\rmoving {what} to {}: {} sent   ",
                to.addr,
                human_bytes(p.bytes_written)
            );
        }
    }
    if tty {
        eprintln!();
    }
    if job.state != JobState::Succeeded {
        return Err(job_failed(&job));
    }
    let m = job
        .result
        .as_ref()
        .and_then(|r| r.migration.clone())
        .unwrap_or_default();
    let there = match job.result.as_ref().and_then(|r| r.container.as_deref()) {
        Some(id) => format!("container {id}"),
        None => format!(
            "pid {}",
            m.destination_pid.map_or("?".into(), |p| p.to_string())
        ),
    };
    println!(
        "{what} moved to {}: {there} there; downtime {} ms, all memory in after {} ms ({} of images, {} of pages)",
        to.addr,
        m.downtime_ms.unwrap_or(0),
        m.total_ms.unwrap_or(0),
        human_bytes(m.image_bytes),
        human_bytes(m.page_bytes),
    );
    Ok(())
}

/// `ckpt migrate --via REMOTE`: push here (unless the remote already holds the checkpoint),
/// then, on the other daemon, pull it, or pull and restore it in one job.
async fn migrate_via(
    client: &Client,
    other: &Remote,
    via: &str,
    a: &MigrateArgs,
) -> Result<(), ClientError> {
    let cp = client.checkpoint(&a.reference).await?;
    if cp.remote_copy(via).is_none() {
        let job = client.push(&a.reference, via, None, true, true).await?;
        if job.state != JobState::Succeeded {
            return Err(job_failed(&job));
        }
        println!("{} pushed to {via}", cp.name);
    }
    let to = &a.to;
    let json = |v: serde_json::Value| http_body_util::Full::new(bytes::Bytes::from(v.to_string()));
    if a.restore {
        let env: JobEnvelope = other
            .request(
                Method::POST,
                &format!("/v1/remotes/{via}/checkpoints/{}/restore?wait=true", cp.id),
                json(serde_json::json!({})),
            )
            .await?
            .into_result()?;
        if env.job.state != JobState::Succeeded {
            return Err(job_failed(&env.job));
        }
        println!(
            "pulled from {via} and restored on {to}: {}",
            job_outcome(&env.job)
        );
    } else {
        let body = match &a.name {
            Some(n) => serde_json::json!({ "name": n }),
            None => serde_json::json!({}),
        };
        let out: ckptd_api::CheckpointAndJob = other
            .request(
                Method::POST,
                &format!("/v1/remotes/{via}/checkpoints/{}?wait=true", cp.id),
                json(body),
            )
            .await?
            .into_result()?;
        println!(
            "{} pulled from {via} on {to} as {} ({})",
            a.reference, out.checkpoint.name, out.checkpoint.id
        );
    }
    Ok(())
}
