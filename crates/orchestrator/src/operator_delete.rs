//! `compute delete` carried out by the workflow-worker. The operator's command is short-lived
//! and has nothing to scrape, so it does not delete the unit itself: it starts an
//! `OperatorDeleteCompute` workflow on the workflow-worker's task queue, which runs the same
//! `Delete` activity a run's teardown runs (confirmed gone, retried) on the workflow-worker that
//! holds the provider, and counts the outcome there in `tea_operator_deletes_total{provider,
//! outcome}`. Right before it deletes, that activity checks the unit again: only the unit the
//! operator listed, and only when this workflow-worker's owner claims it
//! ([`crate::operator::claim_unit`]; its owner may differ from the command's). Each delete is
//! also an audit record in Temporal's history: which unit, who asked (user, host, pid; no
//! secrets), when, and how it ended.
//!
//! The workflow ID derives from the owner and the unit's name ([`operator_delete_workflow_id`]),
//! and a request while another one for the same unit runs joins it: two operators deleting one
//! unit share one delete and both see its outcome.
//!
//! The command never hangs ([`delete_through_worker`]): when no workflow-worker picks the
//! workflow up within a short bound it withdraws it (terminates it) and fails, naming the task
//! queue and `--direct` (the delete from the command itself, not counted); then it waits for
//! the outcome at most its own bound.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use tea_compute::{ComputeOwner, Deleted};
use tea_runtime::Metrics;
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowGetResultOptions,
    WorkflowIdConflictPolicy, WorkflowStartOptions, WorkflowTerminateOptions,
};
use temporalio_common::protos::temporal::api::enums::v1::PendingWorkflowTaskState;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, ApplicationFailure, LocalActivityOptions,
    WorkflowContext, WorkflowResult,
    activities::{ActivityContext, ActivityError},
};

use crate::{
    activities::{DeleteComputeInput, DeleteReason, ProvisioningActivities},
    workflow::provider_call_retry_policy,
};

/// Workflow type of an operator's delete.
pub const OPERATOR_DELETE_WORKFLOW_TYPE: &str = "OperatorDeleteCompute";
/// Start of every operator delete's workflow ID; the rest names the owner and the unit.
pub const OPERATOR_DELETE_ID_PREFIX: &str = "tea-operator-delete";
/// The workflow's execution timeout: every attempt of the delete fits in it.
pub const OPERATOR_DELETE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Start-to-close of one attempt of the delete (it heartbeats while the provider works).
const DELETE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DELETE_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
const DELETE_ATTEMPTS: u32 = 3;
/// Interval of the command's polls while it waits for a workflow-worker to pick the delete up.
const PICKUP_POLL: Duration = Duration::from_millis(200);

/// The ID of the workflow deleting `owner`'s unit `compute_name`:
/// `tea-operator-delete-<owner>-<name>`.
pub fn operator_delete_workflow_id(owner: &ComputeOwner, compute_name: &str) -> String {
    format!(
        "{OPERATOR_DELETE_ID_PREFIX}-{}-{compute_name}",
        owner.id_component()
    )
}

/// Who asked for a delete, for the audit record. Not a credential: the OS user name, host
/// name and process ID of the command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// `USER` (else `LOGNAME`) of the command's environment.
    pub user: Option<String>,
    pub host: Option<String>,
    pub pid: u32,
}

impl Operator {
    /// The operator running this process.
    pub fn of_this_process() -> Self {
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
        Self {
            user: var("USER").or_else(|| var("LOGNAME")),
            host: Some(gethostname::gethostname().to_string_lossy().into_owned())
                .filter(|h| !h.is_empty()),
            pid: std::process::id(),
        }
    }
}

impl std::fmt::Display for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{} (pid {})",
            self.user.as_deref().unwrap_or("?"),
            self.host.as_deref().unwrap_or("?"),
            self.pid
        )
    }
}

/// Input of `OperatorDeleteCompute`: the unit as the command found it among the owner's
/// compute, and who asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorDeleteRequest {
    pub compute_name: String,
    pub compute_id: String,
    /// The owner whose compute the command listed.
    pub owner: String,
    pub requested_by: Operator,
    /// With `--cancel-run`: the workflow ID of the run the operator cancelled first, whose
    /// teardown may already have deleted the unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_run: Option<String>,
    /// The run ID of that run (requests of before did not record it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_run_id: Option<String>,
}

/// How an operator's delete ended: the `outcome` label of `tea_operator_deletes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorDeleteOutcome {
    /// This delete removed the unit.
    Deleted,
    /// The run the operator cancelled had removed it in its teardown.
    DeletedByItsRun,
    /// It was already gone.
    AlreadyGone,
    /// The delete failed (after its retries).
    Failed,
}

impl OperatorDeleteOutcome {
    fn of(request: &OperatorDeleteRequest, deleted: Option<Deleted>) -> Self {
        match (deleted, &request.cancelled_run) {
            (Some(Deleted::Removed), _) => Self::Deleted,
            (Some(Deleted::AlreadyGone), Some(_)) => Self::DeletedByItsRun,
            (Some(Deleted::AlreadyGone), None) => Self::AlreadyGone,
            (None, _) => Self::Failed,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::DeletedByItsRun => "deleted_by_its_run",
            Self::AlreadyGone => "already_gone",
            Self::Failed => "failed",
        }
    }
}

/// Result of `OperatorDeleteCompute` (a failed delete fails the workflow instead).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorDeleted {
    pub compute_name: String,
    pub compute_id: Option<String>,
    pub outcome: OperatorDeleteOutcome,
}

/// An operator's delete of one unit of compute: `Delete`, then the count of its outcome.
#[workflow]
#[derive(Default)]
pub struct OperatorDeleteCompute;

#[workflow_methods]
impl OperatorDeleteCompute {
    #[run(name = "OperatorDeleteCompute")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        request: OperatorDeleteRequest,
    ) -> WorkflowResult<OperatorDeleted> {
        let options = ActivityOptions::with_start_to_close_timeout(DELETE_ATTEMPT_TIMEOUT)
            .heartbeat_timeout(DELETE_HEARTBEAT_TIMEOUT)
            .retry_policy(provider_call_retry_policy(DELETE_ATTEMPTS))
            .build();
        let deleted = ctx
            .execute_activity(
                ProvisioningActivities::delete,
                DeleteComputeInput {
                    compute_name: request.compute_name.clone(),
                    compute_id: Some(request.compute_id.clone()),
                    reason: Some(DeleteReason::Operator),
                },
                options,
            )
            .await;
        let outcome = OperatorDeleteOutcome::of(&request, deleted.as_ref().ok().map(|d| d.outcome));
        // A local activity: counted once, on the workflow-worker that ran the workflow task.
        let counted = ctx
            .execute_local_activity(
                OperatorDeleteActivities::count_operator_delete,
                outcome,
                LocalActivityOptions::builder()
                    .start_to_close_timeout(Duration::from_secs(10))
                    .build(),
            )
            .await;
        if let Err(e) = counted
            && !ctx.is_replaying()
        {
            tracing::warn!(error = %e, "could not count the operator delete");
        }
        match deleted {
            Ok(deleted) => Ok(OperatorDeleted {
                compute_name: deleted.compute_name,
                compute_id: deleted.compute_id,
                outcome,
            }),
            Err(e) => Err(ApplicationFailure::non_retryable(anyhow!(
                "deleting compute {} failed: {}",
                request.compute_name,
                innermost_cause(&e)
            ))
            .into()),
        }
    }
}

/// The activity's own words for why it failed (a refusal names both owners): the innermost
/// message of the failure chain, under the SDK's "Activity task failed" wrappers.
fn innermost_cause(error: &ActivityExecutionError) -> String {
    let Some(mut failure) = error.failure() else {
        return error.to_string();
    };
    while let Some(cause) = failure.cause.as_deref().filter(|c| !c.message.is_empty()) {
        failure = cause;
    }
    failure.message.clone()
}

/// Counts operators' deletes on the workflow-worker (where `METRICS_ADDR` is scraped).
pub struct OperatorDeleteActivities {
    provider: String,
    metrics: Metrics,
}

impl OperatorDeleteActivities {
    pub fn new(provider: &str, metrics: Metrics) -> Self {
        Self {
            provider: provider.to_owned(),
            metrics,
        }
    }
}

#[activities]
impl OperatorDeleteActivities {
    #[activity(name = "CountOperatorDelete")]
    pub async fn count_operator_delete(
        self: std::sync::Arc<Self>,
        _ctx: ActivityContext,
        outcome: OperatorDeleteOutcome,
    ) -> Result<(), ActivityError> {
        self.metrics.count(
            "tea_operator_deletes",
            "Compute deleted by an operator (`workflow-worker compute delete`), by outcome",
            &[
                ("provider", self.provider.clone()),
                ("outcome", outcome.label().to_owned()),
            ],
            1,
        );
        Ok(())
    }
}

/// Where and how long the command waits for the workflow-worker's delete.
#[derive(Clone, Debug)]
pub struct ThroughWorker {
    /// The workflow-worker's task queue (`WORKFLOW_TASK_QUEUE`).
    pub task_queue: String,
    /// Who asks.
    pub requested_by: Operator,
    /// How long a workflow-worker may take to pick the delete up.
    pub pickup_timeout: Duration,
    /// How long the delete may take once picked up.
    pub result_timeout: Duration,
}

/// Has the workflow-worker delete `owner`'s unit `compute_name` (ID `compute_id`; with
/// `--cancel-run`, `cancelled_run` is the workflow and run ID of the run cancelled first) and
/// waits for the outcome; returns it with the workflow's ID (the audit record). Fails, never hangs,
/// when no workflow-worker picks it up within `pickup_timeout` (the workflow is withdrawn) or
/// the delete does not end within `result_timeout` (it goes on).
pub async fn delete_through_worker(
    client: &Client,
    route: &ThroughWorker,
    owner: &ComputeOwner,
    (compute_name, compute_id): (&str, &str),
    cancelled_run: Option<(String, String)>,
) -> anyhow::Result<(OperatorDeleted, String)> {
    let workflow_id = operator_delete_workflow_id(owner, compute_name);
    let (cancelled_run, cancelled_run_id) = cancelled_run.unzip();
    let request = OperatorDeleteRequest {
        compute_name: compute_name.to_owned(),
        compute_id: compute_id.to_owned(),
        owner: owner.to_string(),
        requested_by: route.requested_by.clone(),
        cancelled_run,
        cancelled_run_id,
    };
    let options = WorkflowStartOptions::new(route.task_queue.clone(), workflow_id.clone())
        // Another operator's delete of this unit in progress: wait for that one.
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .execution_timeout(OPERATOR_DELETE_TIMEOUT)
        .build();
    let handle = client
        .start_workflow(OperatorDeleteCompute::run, request, options)
        .await
        .with_context(|| format!("starting the delete of {compute_name} ({workflow_id})"))?;
    let deadline = tokio::time::Instant::now() + route.pickup_timeout;
    loop {
        let description = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .with_context(|| format!("describing {workflow_id}"))?;
        if picked_up(&description) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let reason = format!(
                "no workflow-worker picked it up within {}",
                humantime::format_duration(route.pickup_timeout)
            );
            let withdrawn = handle
                .terminate(WorkflowTerminateOptions::builder().reason(&reason).build())
                .await;
            // Not withdrawn: it was picked up (and maybe done) meanwhile; wait for it.
            if withdrawn.is_ok() {
                bail!(
                    "{reason}: compute {compute_name} was not deleted. Is a workflow-worker \
                     running on task queue {} in namespace {} (the same WORKFLOW_TASK_QUEUE and \
                     Temporal settings as this command)? Start one and try again, or pass \
                     --direct to delete from here (not counted in tea_operator_deletes_total)",
                    route.task_queue,
                    client.options().namespace
                );
            }
            break;
        }
        tokio::time::sleep(PICKUP_POLL).await;
    }
    let result = tokio::time::timeout(
        route.result_timeout,
        handle.get_result(WorkflowGetResultOptions::default()),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "the workflow-worker's delete of {compute_name} has not ended within {}; it goes \
             on: follow it with `temporal workflow describe --workflow-id {workflow_id}` or \
             `workflow-worker compute list`",
            humantime::format_duration(route.result_timeout)
        )
    })?
    .map_err(|e| {
        anyhow!("the workflow-worker could not delete {compute_name} ({workflow_id}): {e:#}")
    })?;
    Ok((result, workflow_id))
}

/// Whether a workflow-worker has taken the workflow's first task (or it has ended anyway).
fn picked_up(description: &temporalio_client::WorkflowExecutionDescription) -> bool {
    if description.status() != WorkflowExecutionStatus::Running {
        return true;
    }
    match &description.raw().pending_workflow_task {
        Some(task) => task.state() == PendingWorkflowTaskState::Started,
        // No task pending: the first one was completed (start, scheduled, then more events).
        None => description.history_length() > 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cancelled_run: Option<&str>) -> OperatorDeleteRequest {
        OperatorDeleteRequest {
            compute_name: "ext-1".into(),
            compute_id: "app-1".into(),
            owner: "default/q".into(),
            requested_by: Operator {
                user: Some("alice".into()),
                host: Some("ops-1".into()),
                pid: 42,
            },
            cancelled_run: cancelled_run.map(str::to_owned),
            cancelled_run_id: cancelled_run.map(|_| "run-1".to_owned()),
        }
    }

    #[test]
    fn outcomes_say_who_removed_the_unit() {
        let direct = request(None);
        let cancelled = request(Some("nightly-export"));
        for (request, deleted, expected) in [
            (
                &direct,
                Some(Deleted::Removed),
                OperatorDeleteOutcome::Deleted,
            ),
            (
                &direct,
                Some(Deleted::AlreadyGone),
                OperatorDeleteOutcome::AlreadyGone,
            ),
            (
                &cancelled,
                Some(Deleted::AlreadyGone),
                OperatorDeleteOutcome::DeletedByItsRun,
            ),
            (
                &cancelled,
                Some(Deleted::Removed),
                OperatorDeleteOutcome::Deleted,
            ),
            (&direct, None, OperatorDeleteOutcome::Failed),
        ] {
            assert_eq!(OperatorDeleteOutcome::of(request, deleted), expected);
        }
        assert_eq!(
            OperatorDeleteOutcome::DeletedByItsRun.label(),
            "deleted_by_its_run"
        );
    }

    #[test]
    fn the_workflow_id_names_owner_and_unit_and_the_audit_record_no_secret() {
        let owner = ComputeOwner::new("prod").unwrap();
        assert_eq!(
            operator_delete_workflow_id(&owner, "ext-abc-1"),
            "tea-operator-delete-prod-ext-abc-1"
        );
        let json = serde_json::to_value(request(None)).unwrap();
        assert_eq!(json["requested_by"]["user"], "alice");
        assert!(json.get("cancelled_run").is_none(), "{json}");
        assert!(json.get("cancelled_run_id").is_none(), "{json}");
        let old: OperatorDeleteRequest = serde_json::from_value(serde_json::json!({
            "compute_name": "ext-1", "compute_id": "app-1", "owner": "default/q",
            "requested_by": {"user": null, "host": null, "pid": 1},
            "cancelled_run": "nightly-export",
        }))
        .expect("a request of before the run ID still decodes");
        assert_eq!(old.cancelled_run_id, None);
        assert_eq!(
            request(None).requested_by.to_string(),
            "alice@ops-1 (pid 42)"
        );
    }
}
