//! `compute delete`: refused while a running run owns the unit, unless that run is cancelled
//! first (exactly that run, by its run ID) and its teardown waited for; the unit is then
//! removed through a workflow-worker (`OperatorDeleteCompute`: counted and recorded) or, with
//! `--direct`, by this command's own provider client.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use tea_compute::{ComputeProvider, Deleted};
use temporalio_client::{
    Client, WorkflowCancelOptions, WorkflowDescribeOptions, WorkflowExecutionStatus,
    errors::WorkflowInteractionError,
};

use super::claim::{Refuser, UnitClaim, claim_unit, refusal};
use crate::{
    operator_delete::{OperatorDeleteOutcome, ThroughWorker, delete_through_worker},
    runs::{run_handle, running_runs_by_compute_name},
};

/// Interval of the polls while a cancelled run tears down.
const POLL: Duration = Duration::from_millis(250);

/// The run that owned a unit, as `compute delete --cancel-run` cancelled it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CancelledRun {
    pub workflow_id: String,
    pub run_id: String,
    /// `false`: the run had closed already (nothing was cancelled).
    pub cancelled: bool,
}

impl std::fmt::Display for CancelledRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (workflow_id, run_id) = (&self.workflow_id, &self.run_id);
        if self.cancelled {
            write!(f, "cancelled run {workflow_id} (run {run_id})")
        } else {
            write!(f, "run {workflow_id} (run {run_id}) had closed already")
        }
    }
}

/// What `compute delete` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum DeleteOutcome {
    /// No running run owned it; deleted directly.
    Deleted(Deleted),
    /// Its run was cancelled and its teardown deleted it.
    DeletedByItsRun { run: CancelledRun },
    /// Its run was cancelled and closed, but the unit was still there: deleted directly.
    DeletedAfterItsRunClosed { run: CancelledRun, outcome: Deleted },
}

/// How `compute delete` removes a unit once no running run owns it.
#[derive(Clone, Debug)]
pub enum DeleteRoute {
    /// Through a workflow-worker (`OperatorDeleteCompute`): counted in
    /// `tea_operator_deletes_total` and recorded in Temporal's history.
    Worker(ThroughWorker),
    /// From this command with its own provider client (`--direct`, when no workflow-worker
    /// runs): neither counted nor recorded.
    Direct,
}

/// What `compute delete` did, and where that is recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeleteDone {
    pub outcome: DeleteOutcome,
    /// The `OperatorDeleteCompute` workflow that carried it out (`None`: `--direct`).
    pub recorded_as: Option<String>,
}

/// Deletes the unit `name` of this owner by `route`. Refused while a running run owns it,
/// unless `cancel_run`: then that run is cancelled, its teardown is waited for (at most
/// `wait`), and the unit is deleted if the teardown left it.
pub async fn delete_compute(
    provider: &dyn ComputeProvider,
    client: &Client,
    name: &str,
    (cancel_run, wait): (bool, Duration),
    route: &DeleteRoute,
) -> anyhow::Result<DeleteDone> {
    let unit = find_unit(provider, name).await?.ok_or_else(|| {
        anyhow!(
            "no compute named {name} on the {} provider (`workflow-worker compute list` shows \
             owner {}'s)",
            provider.kind(),
            provider.owner()
        )
    })?;
    let runs = running_runs_by_compute_name(client).await?;
    let Some((workflow_id, run_id)) = runs.get(name) else {
        let (outcome, recorded_as) = match route {
            DeleteRoute::Direct => (delete_directly(provider, name, &unit).await?, None),
            DeleteRoute::Worker(worker) => {
                let owner = provider.owner();
                let (deleted, id) =
                    delete_through_worker(client, worker, owner, (name, &unit), None).await?;
                (removed_or_gone(deleted.outcome), Some(id))
            }
        };
        return Ok(DeleteDone {
            outcome: DeleteOutcome::Deleted(outcome),
            recorded_as,
        });
    };
    if !cancel_run {
        bail!(
            "compute {name} belongs to the running run {workflow_id} (run {run_id}); deleting it \
             under the run would fail its job. Pass --cancel-run to cancel that run: its \
             teardown deletes the compute"
        );
    }
    let run = cancel_run_and_wait(client, (workflow_id, run_id.as_str()), name, wait).await?;
    // Whether its teardown removed it or not, the unit is confirmed gone (by the
    // workflow-worker: counted and recorded with the run it cancelled).
    let (left, recorded_as) = match route {
        DeleteRoute::Direct => match find_unit(provider, name).await? {
            None => (None, None),
            Some(id) => (Some(delete_directly(provider, name, &id).await?), None),
        },
        DeleteRoute::Worker(worker) => {
            let owner = provider.owner();
            let cancelled = Some((run.workflow_id.clone(), run.run_id.clone()));
            let (deleted, id) =
                delete_through_worker(client, worker, owner, (name, &unit), cancelled).await?;
            let left =
                (deleted.outcome == OperatorDeleteOutcome::Deleted).then_some(Deleted::Removed);
            (left, Some(id))
        }
    };
    let outcome = match left {
        None => DeleteOutcome::DeletedByItsRun { run },
        Some(outcome) => DeleteOutcome::DeletedAfterItsRunClosed { run, outcome },
    };
    Ok(DeleteDone {
        outcome,
        recorded_as,
    })
}

/// Cancels exactly the run `run_id` of `workflow_id`, the run that owned the unit `name` (a
/// newer run under the same workflow ID is never cancelled: it does not own the unit, whose
/// name derives from the run ID), and waits at most `wait` for it to close. A run that has
/// closed already is not an error (nor cancelled): its unit is no longer under a running run.
pub async fn cancel_run_and_wait(
    client: &Client,
    (workflow_id, run_id): (&str, &str),
    name: &str,
    wait: Duration,
) -> anyhow::Result<CancelledRun> {
    let handle = run_handle(client, workflow_id, run_id);
    let running = || async {
        match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(description) => Ok(description.status() == WorkflowExecutionStatus::Running),
            // Exactly this run is asked for: not found means it is gone (out of retention).
            Err(WorkflowInteractionError::NotFound(_)) => Ok(false),
            Err(e) => {
                Err(e).with_context(|| format!("describing run {workflow_id} (run {run_id})"))
            }
        }
    };
    let mut cancelled = CancelledRun {
        workflow_id: workflow_id.to_owned(),
        run_id: run_id.to_owned(),
        cancelled: false,
    };
    if !running().await? {
        return Ok(cancelled);
    }
    // The server takes a cancel of a run that has closed meanwhile as a no-op.
    handle
        .cancel(
            WorkflowCancelOptions::builder()
                .reason(format!("operator: compute delete {name} --cancel-run"))
                .build(),
        )
        .await
        .with_context(|| format!("cancelling run {workflow_id} (run {run_id})"))?;
    cancelled.cancelled = true;
    let deadline = tokio::time::Instant::now() + wait;
    while running().await? {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "run {workflow_id} (run {run_id}) was cancelled but has not closed within {}; \
                 compute {name} is left to its teardown (look again with `compute list`)",
                humantime::format_duration(wait)
            );
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(cancelled)
}

/// Deletes the unit with this command's own provider client (`--direct`).
async fn delete_directly(
    provider: &dyn ComputeProvider,
    name: &str,
    id: &str,
) -> anyhow::Result<Deleted> {
    provider
        .delete(id)
        .await
        .map_err(|e| anyhow!("deleting {name} failed: {e}"))
}

/// What the workflow-worker's delete did to the unit.
fn removed_or_gone(outcome: OperatorDeleteOutcome) -> Deleted {
    match outcome {
        OperatorDeleteOutcome::Deleted => Deleted::Removed,
        _ => Deleted::AlreadyGone,
    }
}

/// The provider ID of this owner's unit `name`, if it exists; an error when a unit of that
/// name is not this owner's ([`claim_unit`]).
async fn find_unit(provider: &dyn ComputeProvider, name: &str) -> anyhow::Result<Option<String>> {
    let claim = claim_unit(provider, name).await.map_err(|e| {
        anyhow!(
            "looking up {name} on the {} provider failed: {e}",
            provider.kind()
        )
    })?;
    match claim {
        UnitClaim::Ours(unit) => Ok(Some(unit.id)),
        UnitClaim::Missing => Ok(None),
        UnitClaim::Refused(why) => {
            let provider = (provider.kind(), provider.owner());
            bail!("{}", refusal(Refuser::Command, provider, name, &why))
        }
    }
}
