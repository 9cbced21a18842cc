//! The sweeper: the guarantee behind the guarantee. In-workflow cleanup cannot cover runs that
//! were terminated or timed out (Temporal runs no workflow code then), nor a Delete that gave
//! up. The sweeper lists the provider's compute with our name prefix and deletes every unit
//! that no running `TriggerExternalWorkflow` run owns, once it is older than a grace period.
//!
//! Ownership is computed, not stored: compute names derive from the run ID and attempt (see
//! [`tea_compute::naming`]), so the set of names the running runs may own is known exactly.
//!
//! It runs as `SweepLeakedCompute`, started by a Temporal Schedule the workflow-worker keeps
//! up to date, and once from the command line (`workflow-worker sweep`).

use std::{collections::HashSet, sync::Arc, time::Duration};

use anyhow::{Context, anyhow};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tea_compute::{ComputeProvider, Deleted, naming};
use tea_contract::{GoDuration, MAX_COMPUTE_ATTEMPTS_LIMIT, WORKFLOW_TYPE};
use tea_runtime::Metrics;
use temporalio_client::{
    Client, WorkflowListOptions,
    schedules::{
        CreateScheduleOptions, ScheduleAction, ScheduleError, ScheduleOverlapPolicy, ScheduleSpec,
    },
    tonic,
};
use temporalio_common::RetryPolicy;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, WorkflowContext, WorkflowResult,
    activities::{ActivityContext, ActivityError},
};

/// Workflow type of the sweep.
pub const SWEEP_WORKFLOW_TYPE: &str = "SweepLeakedCompute";
/// ID of the schedule that starts it.
pub const SWEEP_SCHEDULE_ID: &str = "external-activity-compute-sweeper";

/// What a sweep does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepOptions {
    /// Compute younger than this is left alone (its run may not be visible yet).
    pub grace_period: GoDuration,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            grace_period: GoDuration::from_secs(600),
            dry_run: false,
        }
    }
}

/// One unit of compute the sweep deleted (or would have).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweptCompute {
    pub name: String,
    pub id: String,
    pub reason: String,
    /// `None` in a dry run.
    pub outcome: Option<Deleted>,
}

/// What a sweep found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub provider: String,
    pub examined: usize,
    pub owned_by_running_runs: usize,
    pub within_grace_period: usize,
    pub deleted: Vec<SweptCompute>,
    pub dry_run: bool,
}

/// Sweeps once: list, decide, delete (unless dry run), report.
pub async fn sweep_once(
    provider: &dyn ComputeProvider,
    client: &Client,
    options: &SweepOptions,
) -> anyhow::Result<SweepReport> {
    let compute = provider
        .list_ours(naming::COMPUTE_NAME_PREFIX)
        .await
        .map_err(|e| anyhow!("listing {} compute failed: {e}", provider.kind()))?;
    let owned = names_owned_by_running_runs(client).await?;
    let now = std::time::SystemTime::now();
    let mut report = SweepReport {
        provider: provider.kind().to_owned(),
        examined: compute.len(),
        dry_run: options.dry_run,
        ..Default::default()
    };
    for unit in compute {
        if owned.contains(&unit.name) {
            report.owned_by_running_runs += 1;
            continue;
        }
        let age = unit
            .created_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .and_then(|created| now.duration_since(created).ok());
        // Unknown age counts as old: better to sweep than to leak forever.
        if age.is_some_and(|age| age < options.grace_period.as_duration()) {
            report.within_grace_period += 1;
            continue;
        }
        let reason = format!(
            "no running {WORKFLOW_TYPE} run owns it (its run is closed or unknown); age {}",
            age.map(|a| format!("{}s", a.as_secs()))
                .unwrap_or_else(|| "unknown".into())
        );
        let outcome = if options.dry_run {
            tracing::info!(compute = %unit.name, id = %unit.id, %reason, "sweeper would delete (dry run)");
            None
        } else {
            let outcome = provider
                .delete(&unit.id)
                .await
                .map_err(|e| anyhow!("deleting leaked compute {} failed: {e}", unit.name))?;
            tracing::warn!(compute = %unit.name, id = %unit.id, %reason, ?outcome, "sweeper deleted leaked compute");
            Some(outcome)
        };
        report.deleted.push(SweptCompute {
            name: unit.name,
            id: unit.id,
            reason,
            outcome,
        });
    }
    Ok(report)
}

/// Every compute name a running run may own (any attempt).
async fn names_owned_by_running_runs(client: &Client) -> anyhow::Result<HashSet<String>> {
    let query = format!("WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'");
    let mut runs = client.list_workflows(query, WorkflowListOptions::default());
    let mut names = HashSet::new();
    while let Some(run) = runs.next().await {
        let run = run.context("listing running workflow runs failed")?;
        for attempt in 1..=MAX_COMPUTE_ATTEMPTS_LIMIT {
            names.insert(naming::compute_name(run.run_id(), attempt));
        }
    }
    Ok(names)
}

/// The sweep as an activity, over the workflow-worker's provider.
pub struct SweepActivities {
    provider: Arc<dyn ComputeProvider>,
    metrics: Metrics,
}

impl SweepActivities {
    pub fn new(provider: Arc<dyn ComputeProvider>, metrics: Metrics) -> Self {
        Self { provider, metrics }
    }
}

#[activities]
impl SweepActivities {
    #[activity(name = "SweepCompute")]
    pub async fn sweep(
        self: Arc<Self>,
        ctx: ActivityContext,
        options: SweepOptions,
    ) -> Result<SweepReport, ActivityError> {
        let report = sweep_once(self.provider.as_ref(), &ctx.client(), &options)
            .await
            .map_err(|e| ActivityError::from(anyhow!("{e:#}")))?;
        self.metrics.count(
            "tea_sweeper_deletions",
            "Leaked compute the sweeper deleted (or would have, in a dry run)",
            &[
                ("provider", report.provider.clone()),
                ("dry_run", report.dry_run.to_string()),
            ],
            report.deleted.len() as u64,
        );
        Ok(report)
    }
}

/// The scheduled sweep: one activity, retried a few times.
#[workflow]
#[derive(Default)]
pub struct SweepLeakedCompute;

#[workflow_methods]
impl SweepLeakedCompute {
    #[run(name = "SweepLeakedCompute")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        options: SweepOptions,
    ) -> WorkflowResult<SweepReport> {
        let report = ctx
            .execute_activity(
                SweepActivities::sweep,
                options,
                ActivityOptions::with_start_to_close_timeout(Duration::from_secs(600))
                    .retry_policy(
                        RetryPolicy::builder()
                            .maximum_attempts(3)
                            .maximum_interval(Duration::from_secs(30))
                            .build(),
                    )
                    .build(),
            )
            .await
            .map_err(|e| ApplicationFailure::new(anyhow!("sweep failed: {e}")))?;
        Ok(report)
    }
}

/// Creates the sweep schedule, or updates it to `interval` and `options` when it exists.
pub async fn ensure_schedule(
    client: &Client,
    task_queue: &str,
    interval: Duration,
    options: SweepOptions,
) -> anyhow::Result<()> {
    let action = || {
        ScheduleAction::start_workflow(
            SweepLeakedCompute::run,
            options.clone(),
            task_queue.to_owned(),
            SWEEP_SCHEDULE_ID.to_owned(),
        )
    };
    let created = client
        .create_schedule(
            SWEEP_SCHEDULE_ID,
            CreateScheduleOptions::builder()
                .action(action())
                .spec(ScheduleSpec::from_interval(interval))
                .overlap_policy(ScheduleOverlapPolicy::Skip)
                .build(),
        )
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(ScheduleError::Rpc(status)) if status.code() == tonic::Code::AlreadyExists => {
            let (spec, action) = (ScheduleSpec::from_interval(interval), action());
            client
                .get_schedule_handle(SWEEP_SCHEDULE_ID)
                .update(
                    move |update| {
                        update.set_spec(spec).set_action(action);
                    },
                    Default::default(),
                )
                .await
                .context("updating the sweep schedule failed")
        }
        Err(e) => Err(anyhow!("creating the sweep schedule failed: {e}")),
    }
}

/// Removes the sweep schedule if present (sweeping turned off).
pub async fn remove_schedule(client: &Client) -> anyhow::Result<()> {
    match client
        .get_schedule_handle(SWEEP_SCHEDULE_ID)
        .delete(Default::default())
        .await
    {
        Ok(()) => Ok(()),
        Err(ScheduleError::Rpc(status)) if status.code() == tonic::Code::NotFound => Ok(()),
        Err(e) => Err(anyhow!("removing the sweep schedule failed: {e}")),
    }
}
