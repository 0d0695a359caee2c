//! `ckpt jobs`, `cancel`, `events`.

use std::io::Write;

use ckptd_api::query::JobQuery;
use ckptd_api::{Client, ClientError, Event, JobState};

use crate::render::{event_line, job_outcome, job_table, print_json};

pub async fn jobs(
    client: &Client,
    state: Option<JobState>,
    watch: bool,
    json: bool,
) -> Result<(), ClientError> {
    let list = client
        .jobs(&JobQuery {
            state,
            ..Default::default()
        })
        .await?;
    if json {
        print_json(&list.items);
    } else {
        print!("{}", job_table(&list.items));
    }
    if watch {
        client
            .events(|ev: Event, _| {
                if let Some(j) = &ev.job {
                    if json {
                        println!("{}", serde_json::to_string(j).unwrap_or_default());
                    } else {
                        println!(
                            "{}  {} {} {}",
                            j.id,
                            j.kind.as_str(),
                            j.state.as_str(),
                            job_outcome(j)
                        );
                    }
                    let _ = std::io::stdout().flush();
                }
                true
            })
            .await?;
    }
    Ok(())
}

pub async fn cancel(client: &Client, job: &str) -> Result<(), ClientError> {
    let j = client.cancel_job(job).await?;
    println!("job {} {}", j.id, j.state.as_str());
    Ok(())
}

pub async fn events(client: &Client, json: bool) -> Result<(), ClientError> {
    client
        .events(|ev: Event, raw| {
            if json {
                println!("{raw}");
            } else {
                println!("{}", event_line(&ev));
            }
            let _ = std::io::stdout().flush();
            true
        })
        .await
}
