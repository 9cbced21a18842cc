//! `WaitForAppBuild`'s wait: the provider's view of the deployment within the deploy timeout,
//! then a worker polling the unit's queue within the worker start timeout; and whether the
//! run's job has already started on the unit (which makes the unit ready whatever the provider
//! says).

use std::time::Duration;

use tea_compute::Readiness;
use tea_contract::GoDuration;
use temporalio_client::{grpc::WorkflowService, tonic};
use temporalio_common::protos::temporal::api::{
    common::v1::WorkflowExecution,
    enums::v1::{PendingActivityState, TaskQueueKind, TaskQueueType},
    taskqueue::v1::TaskQueue,
    workflowservice::v1::{DescribeTaskQueueRequest, DescribeWorkflowExecutionRequest},
};
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use super::{
    ProvisioningActivities, WaitForComputeInput, WaitProgress, heartbeating, non_retryable,
    provider_failure,
};

impl ProvisioningActivities {
    /// How long the provider may take to report new compute running.
    pub fn deploy_timeout(&self) -> Duration {
        self.poll
            .deploy_timeout
            .unwrap_or_else(|| self.provider.default_deploy_timeout())
    }

    pub(super) async fn wait_until_ready(
        &self,
        ctx: &ActivityContext,
        input: &WaitForComputeInput,
    ) -> Result<WaitProgress, ActivityError> {
        let heartbeat_every =
            (input.heartbeat_timeout.as_duration() / 2).max(Duration::from_millis(100));
        let mut delay = self.poll.initial;
        let deploy_timeout = self.deploy_timeout();
        let deploy_deadline = tokio::time::Instant::now() + deploy_timeout;
        // 1. The provider's view: follow the deployment the create call started, for at most
        //    the deploy timeout (an adopted app whose deployment is gone never gets anywhere).
        let phase = loop {
            let readiness = heartbeating(
                ctx,
                "poll",
                &input.handle.name,
                self.provider.readiness(&input.handle),
            )
            .await?
            .map_err(|e| provider_failure("poll", &input.handle.name, e))?;
            let progress = match readiness {
                Readiness::Ready { phase } => break phase,
                Readiness::Failed { phase, reason } => {
                    return Err(non_retryable(format!(
                        "deployment {} of compute {} ended in {phase}: {reason}",
                        input.handle.revision.as_deref().unwrap_or("?"),
                        input.handle.name
                    )));
                }
                Readiness::Pending { phase, detail } => WaitProgress {
                    phase,
                    detail,
                    worker_polling: false,
                },
            };
            if job_started(ctx, &input.task_queue).await {
                tracing::info!(compute = %input.handle.name, phase = %progress.phase, "the job has started while the deployment is pending: the compute is ready");
                return Ok(job_started_progress());
            }
            if tokio::time::Instant::now() >= deploy_deadline {
                return Err(non_retryable(format!(
                    "compute {} did not become ready within the deploy timeout of {} (last \
                     phase {}{})",
                    input.handle.name,
                    GoDuration(deploy_timeout),
                    progress.phase,
                    progress
                        .detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                )));
            }
            tracing::debug!(compute = %input.handle.name, phase = %progress.phase, "deployment pending");
            ctx.record_heartbeat(progress).await?;
            pause(ctx, delay.min(heartbeat_every)).await?;
            delay = self.poll.next(delay);
        };
        tracing::info!(compute = %input.handle.name, %phase, "deployment running; waiting for a worker to poll");
        // 2. Temporal's view: ready only once a worker polls the unique queue.
        let deadline = tokio::time::Instant::now() + input.worker_start_timeout.as_duration();
        // A worker polls within milliseconds of starting; asking Temporal is cheap: look again
        // soon, then less often.
        let mut delay = Duration::from_millis(10);
        loop {
            if has_activity_poller(ctx, &input.task_queue).await? {
                tracing::info!(compute = %input.handle.name, "external worker is polling");
                return Ok(WaitProgress {
                    phase,
                    detail: None,
                    worker_polling: true,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(non_retryable(format!(
                    "compute {} is running but no worker polled task queue {} within {}",
                    input.handle.name, input.task_queue, input.worker_start_timeout
                )));
            }
            ctx.record_heartbeat(WaitProgress {
                phase: phase.clone(),
                detail: Some("waiting for the worker to poll".into()),
                worker_polling: false,
            })
            .await?;
            pause(ctx, delay.min(heartbeat_every)).await?;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// Sleeps, returning early with a cancellation error when the activity is cancelled.
async fn pause(ctx: &ActivityContext, duration: Duration) -> Result<(), ActivityError> {
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = ctx.cancelled() => Err(ActivityError::cancelled()),
    }
}

/// What the readiness wait reports when it ends because the job has started.
pub(super) fn job_started_progress() -> WaitProgress {
    WaitProgress {
        phase: "RUNNING_JOB".into(),
        detail: Some("the job has started on the compute".into()),
        worker_polling: true,
    }
}

/// Whether this run's job has started on `task_queue` (the compute's own queue): a worker on
/// the compute has taken it. Read from the run's pending activities; a failed lookup counts as
/// "not known to have started" (the caller then decides on the provider's word alone).
pub(super) async fn job_started(ctx: &ActivityContext, task_queue: &str) -> bool {
    let info = ctx.info();
    let (Some(workflow_id), Some(run_id)) = (&info.workflow_id, &info.workflow_run_id) else {
        return false;
    };
    let request = DescribeWorkflowExecutionRequest {
        namespace: info.namespace.clone(),
        execution: Some(WorkflowExecution {
            workflow_id: workflow_id.clone(),
            run_id: run_id.clone(),
        }),
    };
    let mut client = ctx.client();
    let response = match client
        .describe_workflow_execution(tonic::Request::new(request))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::debug!(%task_queue, error = %status.message(), "could not look up whether the job has started");
            return false;
        }
    };
    response.pending_activities.iter().any(|activity| {
        let on_the_compute = match activity
            .activity_options
            .as_ref()
            .and_then(|options| options.task_queue.as_ref())
        {
            Some(queue) => queue.name == task_queue,
            // A server that does not report the options: the job is the run's only activity
            // of these types.
            None => activity.activity_type.as_ref().is_some_and(|t| {
                t.name == tea_contract::LONG_RUNNING_ACTIVITY
                    || t.name == tea_contract::RUN_COMMAND_ACTIVITY
            }),
        };
        on_the_compute && activity.state() == PendingActivityState::Started
    })
}

/// Whether any worker currently polls `task_queue` for activities.
async fn has_activity_poller(
    ctx: &ActivityContext,
    task_queue: &str,
) -> Result<bool, ActivityError> {
    let request = DescribeTaskQueueRequest {
        namespace: ctx.info().namespace.clone(),
        task_queue: Some(TaskQueue {
            name: task_queue.to_owned(),
            kind: TaskQueueKind::Normal as i32,
            ..Default::default()
        }),
        task_queue_type: TaskQueueType::Activity as i32,
        ..Default::default()
    };
    let mut client = ctx.client();
    let response = client
        .describe_task_queue(tonic::Request::new(request))
        .await
        .map_err(|status| {
            ActivityError::from(anyhow::anyhow!(
                "DescribeTaskQueue for {task_queue} failed: {}",
                status.message()
            ))
        })?;
    Ok(!response.into_inner().pollers.is_empty())
}
