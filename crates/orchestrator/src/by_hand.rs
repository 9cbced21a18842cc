//! The subcommands an operator runs by hand: `sweep` (once, with a report), `compute list`,
//! `compute delete` and `delete-sweep-schedule`.

use tea_compute::{ComputeOwner, Deleted, registry::ProviderConfig};
use tea_orchestrator::{
    operator::{self, DeleteRoute},
    operator_delete::{Operator, ThroughWorker},
    sweeper::{failure_summary, remove_schedule, schedule_id, sweep_once},
};

use crate::{
    build_provider,
    cli::{Args, ComputeCommand},
    explain_sweep_grace, owner_of, sweep_options,
};

pub(crate) async fn sweep_main(
    args: &Args,
    (provider, owner): (ProviderConfig, Option<ComputeOwner>),
    json: bool,
) -> anyhow::Result<()> {
    let (client, _) = tea_runtime::connect().await?;
    let provider = build_provider(provider, owner_of(owner, &client, &args.task_queue))?;
    explain_sweep_grace(args, provider.as_ref());
    let options = sweep_options(args);
    let report = sweep_once(provider.as_ref(), &client, &options, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", operator::sweep_table(&report));
    }
    if !report.failed.is_empty() {
        anyhow::bail!("{}", failure_summary(&report));
    }
    Ok(())
}

pub(crate) async fn delete_schedule_main(
    args: &Args,
    owner: Option<ComputeOwner>,
) -> anyhow::Result<()> {
    let (client, _) = tea_runtime::connect().await?;
    let owner = owner_of(owner, &client, &args.task_queue);
    let id = schedule_id(&owner);
    if remove_schedule(&client, &owner).await? {
        println!("deleted sweep schedule {id}");
    } else {
        println!("no sweep schedule {id}");
    }
    Ok(())
}

pub(crate) async fn compute_main(
    args: &Args,
    (provider, owner): (ProviderConfig, Option<ComputeOwner>),
    command: &ComputeCommand,
) -> anyhow::Result<()> {
    let (mut client, _) = tea_runtime::connect().await?;
    let operator = Operator::of_this_process();
    // Temporal records it with what this command does (a run's cancellation, a delete).
    *client.connection_mut().identity_mut() = format!("{operator} workflow-worker compute");
    let provider = build_provider(provider, owner_of(owner, &client, &args.task_queue))?;
    match command {
        ComputeCommand::List { json } => {
            let rows = operator::list_compute(provider.as_ref(), &client).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", operator::compute_table(&rows));
            }
        }
        ComputeCommand::Delete {
            name,
            cancel_run,
            wait,
            pickup_timeout,
            direct,
        } => {
            let route = if *direct {
                DeleteRoute::Direct
            } else {
                DeleteRoute::Worker(ThroughWorker {
                    task_queue: args.task_queue.clone(),
                    requested_by: operator,
                    pickup_timeout: pickup_timeout.as_duration(),
                    result_timeout: wait.as_duration(),
                })
            };
            let done = operator::delete_compute(
                provider.as_ref(),
                &client,
                name,
                (*cancel_run, wait.as_duration()),
                &route,
            )
            .await?;
            let how = match &done.recorded_as {
                Some(workflow_id) => format!("by a workflow-worker: workflow {workflow_id}"),
                None => "directly: not counted, not recorded in Temporal".to_owned(),
            };
            println!(
                "{} ({how})",
                match done.outcome {
                    operator::DeleteOutcome::Deleted(Deleted::Removed) => format!("deleted {name}"),
                    operator::DeleteOutcome::Deleted(Deleted::AlreadyGone) =>
                        format!("{name} was already gone"),
                    operator::DeleteOutcome::DeletedByItsRun { run } =>
                        format!("{run}; its teardown deleted {name}"),
                    operator::DeleteOutcome::DeletedAfterItsRunClosed { run, .. } =>
                        format!("{run}; it closed, then {name} was deleted"),
                }
            );
        }
    }
    Ok(())
}
