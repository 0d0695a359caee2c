//! `ckpt jobs`, `cancel`, `events`.

use std::collections::HashMap;
use std::io::Write;

use ckptd_api::query::{CheckpointQuery, JobQuery};
use ckptd_api::{Client, ClientError, Event, Job};
use uuid::Uuid;

use crate::args::JobsArgs;
use crate::render::{ago, event_line, job_outcome, print_json, short_id, target_text};
use crate::table::{terminal_width, Table};

/// The name and target of the checkpoints jobs belong to, asked once each.
#[derive(Default)]
pub struct Names(HashMap<Uuid, (String, String)>);

impl Names {
    /// Every checkpoint the caller can list, in one request.
    async fn load(client: &Client) -> Result<Names, ClientError> {
        let list = client
            .list_checkpoints(&CheckpointQuery {
                limit: Some(ckptd_api::query::MAX_LIMIT),
                ..Default::default()
            })
            .await?;
        Ok(Names(
            list.items
                .into_iter()
                .map(|c| (c.id, (c.name, target_text(&c.target))))
                .collect(),
        ))
    }

    /// A checkpoint's name and target; one not yet known is asked for (a deleted one: its id).
    pub async fn get(&mut self, client: &Client, id: Uuid) -> (String, String) {
        if let Some(n) = self.0.get(&id) {
            return n.clone();
        }
        let n = match client.checkpoint(&id.to_string()).await {
            Ok(c) => (c.name, target_text(&c.target)),
            Err(_) => (id.to_string(), String::new()),
        };
        self.0.insert(id, n.clone());
        n
    }

    fn learn(&mut self, ev: &Event) {
        if let Some(c) = &ev.checkpoint {
            self.0
                .insert(c.id, (c.name.clone(), target_text(&c.target)));
        }
    }
}

fn job_cells(j: &Job, name: &(String, String), wide: bool) -> Vec<String> {
    vec![
        short_id(&j.id, wide),
        j.kind.as_str().to_owned(),
        j.state.as_str().to_owned(),
        name.0.clone(),
        name.1.clone(),
        ago(&j.created_at),
        job_outcome(j),
    ]
}

pub async fn jobs(client: &Client, a: JobsArgs) -> Result<(), ClientError> {
    let list = client
        .jobs(&JobQuery {
            state: a.state,
            kind: a.kind,
            limit: Some(a.limit.clamp(1, ckptd_api::query::MAX_LIMIT)),
            ..Default::default()
        })
        .await?;
    if a.json {
        print_json(&list.items);
    }
    let mut names = Names::load(client).await?;
    let mut table = Table::new(&[
        "JOB",
        "KIND",
        "STATE",
        "CHECKPOINT",
        "TARGET",
        "CREATED",
        "RESULT",
    ]);
    for j in &list.items {
        let n = names.get(client, j.checkpoint_id).await;
        table.row(job_cells(j, &n, a.wide));
    }
    // The checkpoint's name gives way first on a narrow terminal (--wide: nothing is cut).
    let table = table.fit(if a.wide { None } else { terminal_width() }, 3);
    if !a.json {
        print!("{table}");
    }
    if a.watch {
        // Later lines keep the table's columns.
        let widths = table.widths();
        let mut stream = client.event_stream().await?;
        while let Some(next) = futures_util::StreamExt::next(&mut stream).await {
            let (ev, _) = next?;
            names.learn(&ev);
            let Some(j) = &ev.job else { continue };
            if a.json {
                println!("{}", serde_json::to_string(j).unwrap_or_default());
            } else {
                let n = names.get(client, j.checkpoint_id).await;
                println!("{}", table.line(&widths, &job_cells(j, &n, a.wide)));
            }
            let _ = std::io::stdout().flush();
        }
    }
    Ok(())
}

pub async fn cancel(client: &Client, job: &str) -> Result<(), ClientError> {
    let j = client.cancel_job(job).await?;
    println!("job {} {}", j.id, j.state.as_str());
    Ok(())
}

pub async fn events(client: &Client, since: Option<&str>, json: bool) -> Result<(), ClientError> {
    let mut names = Names::default();
    let mut stream = client.event_stream_since(since).await?;
    while let Some(next) = futures_util::StreamExt::next(&mut stream).await {
        let (ev, raw) = next?;
        if json {
            println!("{raw}");
        } else {
            names.learn(&ev);
            // A job's line names its checkpoint.
            let about = match &ev.job {
                Some(j) => Some(names.get(client, j.checkpoint_id).await.0),
                None => None,
            };
            println!("{}", event_line(&ev, about.as_deref()));
        }
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
