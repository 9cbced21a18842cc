//! The sweep as Temporal runs it: the `SweepCompute` activity over the workflow-worker's
//! provider (heartbeating, counted in metrics), the `SweepLeakedCompute` workflow that retries
//! it, and the per-owner Schedule that starts that workflow.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context, anyhow};
use tea_compute::{ComputeOwner, ComputeProvider};
use tea_runtime::Metrics;
use temporalio_client::{
    Client,
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
use tokio::time::Instant;

use super::{
    SWEEP_ACTIVITY_TIMEOUT, SWEEP_HEARTBEAT_TIMEOUT, SWEEP_SCHEDULE_ID_PREFIX, SweepOptions,
    SweepReport, failure_summary, sweep_once,
};
use crate::activities::{LifetimeKiller, count_lifetime_kills};

/// Time kept in hand before the activity's deadline to report.
const DEADLINE_MARGIN: Duration = Duration::from_secs(30);

/// The ID of `owner`'s sweep schedule (and of the workflows it starts):
/// `external-activity-compute-sweeper-<owner>` (see [`ComputeOwner::id_component`]).
pub fn schedule_id(owner: &ComputeOwner) -> String {
    format!("{SWEEP_SCHEDULE_ID_PREFIX}-{}", owner.id_component())
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
    /// Sweeps this worker's owner's compute, heartbeating while it works; fails (retryably)
    /// after logging the report when any delete failed.
    #[activity(name = "SweepCompute")]
    pub async fn sweep(
        self: Arc<Self>,
        ctx: ActivityContext,
        options: SweepOptions,
    ) -> Result<SweepReport, ActivityError> {
        let ours = self.provider.owner().as_str();
        if let Some(wanted) = options.owner.as_deref().filter(|w| *w != ours) {
            return Err(ActivityError::from(anyhow!(
                "this sweep is for owner {wanted:?} but this worker's provider belongs to \
                 {ours:?}; workers of one task queue must share COMPUTE_OWNER"
            )));
        }
        let info = ctx.info();
        let deadline = info
            .deadline
            .and_then(|d| d.duration_since(SystemTime::now()).ok())
            .unwrap_or(SWEEP_ACTIVITY_TIMEOUT)
            .saturating_sub(DEADLINE_MARGIN);
        let deadline = Instant::now() + deadline;
        let beat_every = info
            .heartbeat_timeout
            .map(|t| (t / 3).max(Duration::from_millis(100)));
        let client = ctx.client();
        let sweep = sweep_once(self.provider.as_ref(), &client, &options, Some(deadline));
        let report = match beat_every {
            None => sweep.await,
            Some(every) => {
                tokio::pin!(sweep);
                loop {
                    tokio::select! {
                        report = &mut sweep => break report,
                        _ = tokio::time::sleep(every) => {
                            ctx.record_heartbeat(()).await.map_err(|e| {
                                ActivityError::from(anyhow!("sweep heartbeat failed: {e}"))
                            })?;
                        }
                        _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
                    }
                }
            }
        }
        .map_err(|e| ActivityError::from(anyhow!("{e:#}")))?;
        tracing::info!(
            owner = %report.owner,
            examined = report.examined,
            deleted = report.deleted.len(),
            failed = report.failed.len(),
            dry_run = report.dry_run,
            "sweep finished"
        );
        let labels = [
            ("provider", report.provider.clone()),
            ("dry_run", report.dry_run.to_string()),
        ];
        self.metrics.count(
            "tea_sweeper_deletions",
            "Leaked compute the sweeper deleted (or would have, in a dry run)",
            &labels,
            report.deleted.len() as u64,
        );
        count_lifetime_kills(
            &self.metrics,
            &report.provider,
            LifetimeKiller::Sweeper,
            report.dry_run,
            report.deleted.iter().filter(|d| d.past_lifetime()).count() as u64,
        );
        self.metrics.count(
            "tea_sweeper_failures",
            "Leaked compute the sweeper failed to delete",
            &labels,
            report.failed.len() as u64,
        );
        if !report.failed.is_empty() {
            let json = serde_json::to_string(&report).unwrap_or_default();
            tracing::error!(report = %json, "sweep finished with failed deletes");
            return Err(ActivityError::from(anyhow!("{}", failure_summary(&report))));
        }
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
                ActivityOptions::with_start_to_close_timeout(SWEEP_ACTIVITY_TIMEOUT)
                    .heartbeat_timeout(SWEEP_HEARTBEAT_TIMEOUT)
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

/// Creates `owner`'s sweep schedule ([`schedule_id`]), or updates it to `interval` and
/// `options` when it exists. Other owners' schedules are not touched.
pub async fn ensure_schedule(
    client: &Client,
    task_queue: &str,
    owner: &ComputeOwner,
    interval: Duration,
    options: SweepOptions,
) -> anyhow::Result<()> {
    let id = schedule_id(owner);
    let options = SweepOptions {
        owner: Some(owner.to_string()),
        ..options
    };
    let action = || {
        ScheduleAction::start_workflow(
            SweepLeakedCompute::run,
            options.clone(),
            task_queue.to_owned(),
            id.clone(),
        )
    };
    let created = client
        .create_schedule(
            &id,
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
                .get_schedule_handle(&id)
                .update(
                    move |update| {
                        update.set_spec(spec).set_action(action);
                    },
                    Default::default(),
                )
                .await
                .with_context(|| format!("updating the sweep schedule {id} failed"))
        }
        Err(e) => Err(anyhow!("creating the sweep schedule {id} failed: {e}")),
    }
}

/// Removes `owner`'s sweep schedule; returns whether it existed. An explicit operator action
/// (`workflow-worker delete-sweep-schedule`): a worker's configuration never removes it.
pub async fn remove_schedule(client: &Client, owner: &ComputeOwner) -> anyhow::Result<bool> {
    let id = schedule_id(owner);
    match client
        .get_schedule_handle(&id)
        .delete(Default::default())
        .await
    {
        Ok(()) => Ok(true),
        Err(ScheduleError::Rpc(status)) if status.code() == tonic::Code::NotFound => Ok(false),
        Err(e) => Err(anyhow!("removing the sweep schedule {id} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_ids_name_the_owner_and_stay_distinct() {
        let owner = |s: &str| ComputeOwner::new(s).unwrap();
        assert_eq!(
            schedule_id(&owner("prod")),
            "external-activity-compute-sweeper-prod"
        );
        let slash = schedule_id(&owner("default/taskQueueName"));
        assert!(
            slash.starts_with("external-activity-compute-sweeper-default-taskQueueName-"),
            "{slash}"
        );
        assert_ne!(slash, schedule_id(&owner("default-taskQueueName")));
    }
}
