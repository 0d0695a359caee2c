//! Remotes: `ckpt remotes`, `ckpt push`, `ckpt pull`, `ckpt ls --remote`, `ckpt rm-remote`.

use ckptd_api::{Client, ClientError, PullRequest};

use crate::args::{PullArgs, PushArgs};
use crate::commands::follow::{finish_checkpoint, follow_to_success, print_queued, printed};
use crate::render::{ago, print_json};
use crate::table::{human_bytes, Table};
use crate::Failed;

pub async fn list(client: &Client, json: bool) -> Result<(), ClientError> {
    let remotes = client.remotes().await?.items;
    if json {
        print_json(&remotes);
        return Ok(());
    }
    if remotes.is_empty() {
        println!(
            "no remote is configured: add a [remotes.NAME] (S3 bucket) or [registries.NAME] (OCI \
             registry) table to ckptd's configuration"
        );
        return Ok(());
    }
    let mut t = Table::new(&["NAME", "KIND", "WHERE", "ENDPOINT", "ENCRYPTED", "STATUS"]);
    for r in remotes {
        let place = match &r.repository {
            Some(repo) => repo.clone(),
            None if r.prefix.is_empty() => r.bucket,
            None => format!("{}/{}", r.bucket, r.prefix),
        };
        let enc = match (r.encrypted, r.can_decrypt) {
            (true, true) => "yes",
            (true, false) => "yes (no identity here)",
            (false, _) => "no",
        };
        let status = match r.error {
            Some(e) => format!("unreachable: {e}"),
            None => "ok".into(),
        };
        t.row(vec![r.name, r.kind, place, r.endpoint, enc.into(), status]);
    }
    print!("{t}");
    Ok(())
}

pub async fn ls(client: &Client, remote: &str, quiet: bool, json: bool) -> Result<(), ClientError> {
    let items = client.remote_checkpoints(remote).await?.items;
    if json {
        print_json(&items);
    } else if quiet {
        for i in items {
            println!("{}", i.checkpoint.name);
        }
    } else {
        let mut t = Table::new(&["NAME", "ID", "TARGET", "CREATED", "SIZE", "FROM"]);
        for i in items {
            let c = i.checkpoint;
            t.row(vec![
                c.name,
                c.id.to_string(),
                c.target.key(),
                ago(&c.created_at),
                human_bytes(i.object.size_bytes),
                i.pushed_from,
            ]);
        }
        print!("{t}");
    }
    Ok(())
}

pub async fn push(client: &Client, a: PushArgs) -> Result<(), ClientError> {
    let job = client
        .push_with(
            &a.reference,
            &ckptd_api::query::PushQuery {
                remote: a.remote.clone(),
                tag: a.tag.clone(),
                format: a.format,
                keep_local: !a.drop_local,
                wait: false,
            },
        )
        .await?;
    let job = follow_to_success(client, job, a.no_wait).await?;
    if a.json {
        print_json(&job);
    } else if a.no_wait {
        print_queued(&job);
    } else if let Some(c) = job.result.as_ref().and_then(|r| r.remote_copy.as_ref()) {
        println!(
            "pushed {} to {}: {} ({}{})",
            a.reference,
            c.remote,
            c.key,
            human_bytes(c.size_bytes),
            if c.encrypted { ", encrypted" } else { "" }
        );
    } else {
        println!("job {} {}", job.id, job.state.as_str());
    }
    Ok(())
}

pub async fn pull(client: &Client, a: PullArgs) -> Result<(), ClientError> {
    let req = PullRequest { name: a.name };
    let out = client.pull(&a.remote, &a.reference, &req, false).await?;
    finish_checkpoint(client, out, a.no_wait, a.json).await
}

/// Each failure is reported as it happens; the exit code says whether any failed.
pub async fn rm(client: &Client, remote: &str, references: Vec<String>) -> Result<(), Failed> {
    let mut failed = false;
    for r in references {
        failed |= printed(&r, client.delete_remote_checkpoint(remote, &r).await).is_some();
    }
    if failed {
        Err(Failed::Reported)
    } else {
        Ok(())
    }
}
