//! `ckpt schedule ...`: scheduled checkpoints with retention.

use ckptd_api::{Client, ClientError, CreateSchedule, ScheduleOptions, UpdateSchedule};

use crate::args::{ScheduleAddArgs, ScheduleCommand};
use crate::commands::follow::{finish_checkpoint, printed};
use crate::render::{ago, print_json, schedule_table};
use crate::table::Table;
use crate::Failed;

pub async fn run(client: &Client, cmd: ScheduleCommand) -> Result<(), Failed> {
    match cmd {
        ScheduleCommand::Add(a) => {
            let ScheduleAddArgs {
                name,
                target,
                cron,
                stop,
                flags,
                retention,
                disabled,
                json,
            } = *a;
            let req = CreateSchedule {
                name,
                target: target.target(),
                cron,
                options: ScheduleOptions {
                    leave_running: !stop,
                    tcp_established: flags.criu.tcp_established,
                    ext_unix_sk: flags.criu.ext_unix_sk,
                    file_locks: flags.criu.file_locks,
                    shell_job: flags.criu.shell_job,
                    checkpoint_dir: flags.checkpoint_dir,
                    labels: flags.labels.into_iter().collect(),
                    expires_in: flags.expires_in,
                    push_to: flags.push_to,
                    keep_local: !flags.drop_local,
                    hooks: flags.hooks.hooks(),
                },
                retention: retention.retention(),
                enabled: !disabled,
            };
            let s = crate::commands::checkpoints::in_found_runtime(&target, |target| {
                let req = CreateSchedule {
                    target,
                    ..req.clone()
                };
                async move { client.create_schedule(&req).await }
            })
            .await?;
            if json {
                print_json(&s);
            } else {
                print!("{}", schedule_table(std::slice::from_ref(&s)));
            }
        }
        ScheduleCommand::Ls { json } => {
            let list = client.schedules().await?;
            if json {
                print_json(&list.items);
            } else {
                print!("{}", schedule_table(&list.items));
            }
        }
        ScheduleCommand::Inspect { reference, json } => {
            let s = client.schedule(&reference).await?;
            if json {
                print_json(&s);
            } else {
                println!("{}", crate::render::schedule_text(&s));
            }
        }
        ScheduleCommand::Set {
            reference,
            target,
            runtime,
            root,
            namespace,
            cron,
            retention,
        } => {
            let target = target.map(|target| {
                crate::args::TargetArgs {
                    target,
                    runtime,
                    root,
                    namespace,
                }
                .target()
            });
            let req = UpdateSchedule {
                target,
                cron,
                retention: retention.is_set().then(|| retention.retention()),
                ..Default::default()
            };
            let s = client.update_schedule(&reference, &req).await?;
            print!("{}", schedule_table(std::slice::from_ref(&s)));
        }
        ScheduleCommand::Enable { reference } => set_enabled(client, &reference, true).await?,
        ScheduleCommand::Disable { reference } => set_enabled(client, &reference, false).await?,
        ScheduleCommand::Rm { references } => {
            // Each failure is reported as it happens, once.
            let mut failed = false;
            for r in references {
                failed |= printed(&r, client.delete_schedule(&r).await).is_some();
            }
            if failed {
                return Err(Failed::Reported);
            }
        }
        ScheduleCommand::Run { reference, no_wait } => {
            let out = client.run_schedule(&reference, false).await?;
            finish_checkpoint(client, out, no_wait, false).await?;
        }
        ScheduleCommand::Retention { reference, json } => {
            let plan = client.retention_plan(&reference).await?;
            if json {
                print_json(&plan);
            } else {
                let mut t = Table::new(&["ACTION", "NAME", "STATUS", "CREATED", "WHY"]);
                for (action, items) in [("keep", &plan.keep), ("prune", &plan.prune)] {
                    for i in items {
                        t.row(vec![
                            action.into(),
                            i.name.clone(),
                            i.status.as_str().into(),
                            ago(&i.created_at),
                            i.reasons.join("; "),
                        ]);
                    }
                }
                print!("{t}");
            }
        }
    }
    Ok(())
}

async fn set_enabled(client: &Client, reference: &str, enabled: bool) -> Result<(), ClientError> {
    let req = UpdateSchedule {
        enabled: Some(enabled),
        ..Default::default()
    };
    let s = client.update_schedule(reference, &req).await?;
    print!("{}", schedule_table(std::slice::from_ref(&s)));
    Ok(())
}
