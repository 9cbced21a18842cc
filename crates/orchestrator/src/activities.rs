//! Provisioning activities: create (or adopt) the compute, wait until a worker polls its queue,
//! delete it. They run in the workflow-worker, hold the provider client and the secrets, and
//! put only identifiers into workflow history.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tea_compute::{
    ComputeHandle, ComputeProvider, ComputeSpec, Deleted, EnvVar, ErrorKind, ImageRef,
    ProviderError, Readiness, naming,
};
use tea_contract::{
    EXTERNAL_TASK_QUEUE_ENV, FORWARDED_TEMPORAL_ENV, GoDuration, OWNER_RUN_ID_ENV,
    OWNER_WORKFLOW_ID_ENV, SECRET_TEMPORAL_ENV,
};
use tea_runtime::Metrics;
use temporalio_client::{grpc::WorkflowService, tonic};
use temporalio_common::protos::temporal::api::{
    enums::v1::{TaskQueueKind, TaskQueueType},
    taskqueue::v1::TaskQueue,
    workflowservice::v1::DescribeTaskQueueRequest,
};
use temporalio_macros::activities;
use temporalio_sdk::{
    ApplicationFailure,
    activities::{ActivityContext, ActivityError, ActivityInfo},
};

/// Input of `Create`: the name derived from the run and the image. No secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateComputeInput {
    pub compute_name: String,
    pub image: ImageRef,
}

/// Result of `Create`: identifiers only (the original stored the whole app, secrets included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedCompute {
    pub handle: ComputeHandle,
    pub task_queue: String,
    pub provider: String,
}

/// Input of `WaitForAppBuild`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitForComputeInput {
    pub handle: ComputeHandle,
    pub task_queue: String,
    pub heartbeat_timeout: GoDuration,
    /// How long after the provider reports the compute running a worker may take to poll.
    pub worker_start_timeout: GoDuration,
}

/// Heartbeat details of `WaitForAppBuild`: where the deployment is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitProgress {
    pub phase: String,
    pub detail: Option<String>,
    pub worker_polling: bool,
}

/// Input of `Delete`: by ID when known, else by name (a create that failed may have stored it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteComputeInput {
    pub compute_name: String,
    pub compute_id: Option<String>,
}

/// Result of `Delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedCompute {
    pub compute_name: String,
    pub compute_id: Option<String>,
    pub outcome: Deleted,
}

/// How `WaitForAppBuild` polls: exponential from `initial` to `max`.
#[derive(Clone, Copy, Debug)]
pub struct PollBackoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for PollBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(30),
        }
    }
}

impl PollBackoff {
    fn next(&self, current: Duration) -> Duration {
        (current * 3 / 2).clamp(self.initial, self.max)
    }
}

/// The provisioning activities, over one provider shared by every run of this process.
pub struct ProvisioningActivities {
    provider: Arc<dyn ComputeProvider>,
    forwarded_env: Vec<EnvVar>,
    poll: PollBackoff,
    metrics: Metrics,
}

impl ProvisioningActivities {
    /// `forwarded_env` is what every external worker gets besides its queue: see
    /// [`forwarded_temporal_env`].
    pub fn new(
        provider: Arc<dyn ComputeProvider>,
        forwarded_env: Vec<EnvVar>,
        poll: PollBackoff,
        metrics: Metrics,
    ) -> Self {
        Self {
            provider,
            forwarded_env,
            poll,
            metrics,
        }
    }

    /// Records one provisioning step's outcome and duration.
    fn record<T, E>(&self, step: &'static str, started: Instant, result: &Result<T, E>) {
        let labels = [
            ("provider", self.provider.kind().to_owned()),
            ("step", step.to_owned()),
            (
                "outcome",
                if result.is_ok() { "ok" } else { "error" }.to_owned(),
            ),
        ];
        self.metrics.observe(
            "tea_compute_step_duration",
            "Duration of provisioning steps (create, ready, teardown)",
            &labels,
            started.elapsed(),
        );
        self.metrics.count(
            "tea_compute_steps",
            "Provisioning steps by outcome",
            &labels,
            1,
        );
    }

    /// The compute's environment: its queue, its owner (for the worker's dead-man switch) and
    /// the forwarded Temporal connection.
    fn spec_for(&self, input: &CreateComputeInput, owner: &ActivityInfo) -> ComputeSpec {
        let general = |key: &str, value: &str| EnvVar {
            key: key.to_owned(),
            value: value.to_owned(),
            secret: false,
        };
        let mut env = vec![general(EXTERNAL_TASK_QUEUE_ENV, &input.compute_name)];
        if let Some(workflow_id) = &owner.workflow_id {
            env.push(general(OWNER_WORKFLOW_ID_ENV, workflow_id));
        }
        if let Some(run_id) = &owner.workflow_run_id {
            env.push(general(OWNER_RUN_ID_ENV, run_id));
        }
        env.extend(self.forwarded_env.iter().cloned());
        ComputeSpec {
            name: input.compute_name.clone(),
            image: input.image.clone(),
            env,
        }
    }
}

/// The Temporal connection variables set (non-empty) in this process's environment, the API key
/// marked secret: what the original forwarded to each app.
pub fn forwarded_temporal_env() -> Vec<EnvVar> {
    forwarded_env_from(|key| std::env::var(key).ok())
}

fn forwarded_env_from(lookup: impl Fn(&str) -> Option<String>) -> Vec<EnvVar> {
    FORWARDED_TEMPORAL_ENV
        .iter()
        .filter_map(|key| {
            let value = lookup(key).filter(|v| !v.is_empty())?;
            Some(EnvVar {
                key: (*key).to_owned(),
                value,
                secret: SECRET_TEMPORAL_ENV.contains(key),
            })
        })
        .collect()
}

#[activities]
impl ProvisioningActivities {
    /// Creates the compute for this run, or adopts it when an earlier attempt already made it.
    #[activity(name = "Create")]
    pub async fn create(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CreateComputeInput,
    ) -> Result<CreatedCompute, ActivityError> {
        if !naming::is_valid_do_name(&input.compute_name) {
            return Err(non_retryable(format!(
                "invalid compute name {:?}: must match ^[a-z][a-z0-9-]{{0,30}}[a-z0-9]$",
                input.compute_name
            )));
        }
        let spec = self.spec_for(&input, ctx.info());
        tracing::info!(
            provider = self.provider.kind(),
            compute = %spec.name,
            env_keys = ?spec.env.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            "creating compute"
        );
        let started = Instant::now();
        let created = self.provider.create_or_adopt(&spec).await;
        self.record("create", started, &created);
        let handle = created.map_err(|e| provider_failure("create", &input.compute_name, e))?;
        tracing::info!(
            compute = %handle.name,
            id = %handle.id,
            adopted = handle.adopted,
            deployment = handle.deployment_id.as_deref().unwrap_or(""),
            "compute created"
        );
        Ok(CreatedCompute {
            task_queue: handle.name.clone(),
            handle,
            provider: self.provider.kind().to_owned(),
        })
    }

    /// Waits until the compute's deployment is running and a worker polls its queue.
    #[activity(name = "WaitForAppBuild")]
    pub async fn wait_for_app_build(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: WaitForComputeInput,
    ) -> Result<WaitProgress, ActivityError> {
        let started = Instant::now();
        let result = self.wait_until_ready(&ctx, &input).await;
        self.record("ready", started, &result);
        result
    }

    /// Deletes the compute and confirms it is gone. Deleting what is already gone succeeds.
    #[activity(name = "Delete")]
    pub async fn delete(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: DeleteComputeInput,
    ) -> Result<DeletedCompute, ActivityError> {
        let started = Instant::now();
        let result = self.delete_compute(input).await;
        self.record("teardown", started, &result);
        result
    }
}

impl ProvisioningActivities {
    async fn wait_until_ready(
        &self,
        ctx: &ActivityContext,
        input: &WaitForComputeInput,
    ) -> Result<WaitProgress, ActivityError> {
        let heartbeat_every =
            (input.heartbeat_timeout.as_duration() / 2).max(Duration::from_millis(100));
        let mut delay = self.poll.initial;
        // 1. The provider's view: follow the deployment the create call started.
        let phase = loop {
            let readiness = self
                .provider
                .readiness(&input.handle)
                .await
                .map_err(|e| provider_failure("poll", &input.handle.name, e))?;
            let progress = match readiness {
                Readiness::Ready { phase } => break phase,
                Readiness::Failed { phase, reason } => {
                    return Err(non_retryable(format!(
                        "deployment {} of compute {} ended in {phase}: {reason}",
                        input.handle.deployment_id.as_deref().unwrap_or("?"),
                        input.handle.name
                    )));
                }
                Readiness::Pending { phase, detail } => WaitProgress {
                    phase,
                    detail,
                    worker_polling: false,
                },
            };
            tracing::debug!(compute = %input.handle.name, phase = %progress.phase, "deployment pending");
            ctx.record_heartbeat(progress).await?;
            pause(ctx, delay.min(heartbeat_every)).await?;
            delay = self.poll.next(delay);
        };
        tracing::info!(compute = %input.handle.name, %phase, "deployment running; waiting for a worker to poll");
        // 2. Temporal's view: ready only once a worker polls the unique queue.
        let deadline = tokio::time::Instant::now() + input.worker_start_timeout.as_duration();
        let mut delay = Duration::from_millis(200);
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

    async fn delete_compute(
        &self,
        input: DeleteComputeInput,
    ) -> Result<DeletedCompute, ActivityError> {
        let id = match &input.compute_id {
            Some(id) => Some(id.clone()),
            None => self
                .provider
                .list_ours(&input.compute_name)
                .await
                .map_err(|e| provider_failure("look up", &input.compute_name, e))?
                .into_iter()
                .find(|c| c.name == input.compute_name)
                .map(|c| c.id),
        };
        let outcome = match &id {
            Some(id) => self
                .provider
                .delete(id)
                .await
                .map_err(|e| provider_failure("delete", &input.compute_name, e))?,
            None => Deleted::AlreadyGone,
        };
        tracing::info!(compute = %input.compute_name, id = id.as_deref().unwrap_or(""), ?outcome, "compute deleted");
        Ok(DeletedCompute {
            compute_name: input.compute_name,
            compute_id: id,
            outcome,
        })
    }
}

/// Sleeps, returning early with a cancellation error when the activity is cancelled.
async fn pause(ctx: &ActivityContext, duration: Duration) -> Result<(), ActivityError> {
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = ctx.cancelled() => Err(ActivityError::cancelled()),
    }
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

fn non_retryable(message: String) -> ActivityError {
    ActivityError::application(ApplicationFailure::non_retryable(anyhow::anyhow!(message)))
}

/// Maps a provider error to an activity error: transient ones are retried by Temporal.
fn provider_failure(operation: &str, compute: &str, error: ProviderError) -> ActivityError {
    let message = format!("{operation} of compute {compute} failed: {error}");
    tracing::warn!(%message, kind = ?error.kind, "provider error");
    match error.kind {
        ErrorKind::Transient => ActivityError::from(anyhow::anyhow!(message)),
        ErrorKind::Permanent | ErrorKind::NotFound => non_retryable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_only_non_empty_temporal_vars_and_marks_the_key_secret() {
        let env = forwarded_env_from(|key| match key {
            "TEMPORAL_ADDRESS" => Some("example:7233".into()),
            "TEMPORAL_NAMESPACE" => Some(String::new()),
            "TEMPORAL_API_KEY" => Some("k3y".into()),
            _ => None,
        });
        let keys: Vec<_> = env.iter().map(|e| (e.key.as_str(), e.secret)).collect();
        assert_eq!(
            keys,
            [("TEMPORAL_ADDRESS", false), ("TEMPORAL_API_KEY", true)]
        );
        assert!(!format!("{env:?}").contains("k3y"));
    }

    #[test]
    fn poll_backoff_grows_to_its_cap() {
        let b = PollBackoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(30),
        };
        let mut d = b.initial;
        let mut seen = vec![];
        for _ in 0..7 {
            seen.push(d.as_secs());
            d = b.next(d);
        }
        assert_eq!(seen, [5, 7, 11, 16, 25, 30, 30]);
    }
}
