//! Provisioning activities: create (or adopt) the compute, wait until a worker polls its queue,
//! delete it. They run in the workflow-worker, hold the provider client and the secrets, and
//! put only identifiers into workflow history.

mod payloads;
mod readiness;
use readiness::{job_started, job_started_progress};
mod worker_env;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tea_compute::{
    ComputeProvider, ComputeSpec, Deleted, EnvVar, ErrorKind, ProviderError, naming,
};
use tea_contract::{
    DEAD_MAN_ACTION_ENV, EXTERNAL_TASK_QUEUE_ENV, GoDuration, OWNER_RUN_ID_ENV,
    OWNER_WORKFLOW_ID_ENV, TEMPORAL_ENV_ONLY_ENV,
};
use tea_runtime::Metrics;
use temporalio_macros::activities;
use temporalio_sdk::{
    ApplicationFailure,
    activities::{ActivityContext, ActivityError, ActivityInfo},
};

use crate::operator::{Refuser, UnitClaim, claim_unit, refusal};

pub use payloads::{
    CreateComputeInput, CreatedCompute, DeleteComputeInput, DeleteReason, DeletedCompute,
    LifetimeKiller, PollBackoff, ProviderCallProgress, WaitForComputeInput, WaitProgress,
    count_lifetime_kills,
};
pub use worker_env::{forwarded_temporal_env, job_secret_env};

/// The provisioning activities, over one provider shared by every run of this process.
pub struct ProvisioningActivities {
    provider: Arc<dyn ComputeProvider>,
    forwarded_env: Vec<EnvVar>,
    poll: PollBackoff,
    metrics: Metrics,
    max_compute_lifetime: Option<Duration>,
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
            max_compute_lifetime: None,
        }
    }

    /// Limits how long each unit of compute may live (`MAX_COMPUTE_LIFETIME`): `Create` tells
    /// the workflow, which tears the unit down once it is that old, even mid-job.
    pub fn with_max_compute_lifetime(mut self, limit: Option<Duration>) -> Self {
        self.max_compute_lifetime = limit;
        self
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
        let mut env = vec![
            general(EXTERNAL_TASK_QUEUE_ENV, &input.compute_name),
            // The worker connects exactly as forwarded, never through a profile of its own.
            general(TEMPORAL_ENV_ONLY_ENV, "true"),
        ];
        if self.provider.restarts_exited_workers() {
            // An exit would be undone by the platform (a crash loop): stay down instead.
            env.push(general(DEAD_MAN_ACTION_ENV, "park"));
        }
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
            resources: input.resources.clone().unwrap_or_default(),
        }
    }
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
        if !naming::is_portable_name(&input.compute_name) {
            return Err(non_retryable(format!(
                "invalid compute name {:?}: must match {}",
                input.compute_name,
                naming::PORTABLE_NAME_PATTERN
            )));
        }
        if let (Some(waited), 1) = (input.capacity_waited, ctx.info().attempt) {
            self.metrics.observe(
                "tea_capacity_wait_duration",
                "How long runs waited for a compute slot under MAX_CONCURRENT_COMPUTE",
                &[("provider", self.provider.kind().to_owned())],
                waited.as_duration(),
            );
        }
        if let (Some(from), 1) = (&input.resumes_job, ctx.info().attempt) {
            self.metrics.count(
                "tea_job_resumes",
                "Units of compute provisioned to resume a job where a lost unit left it",
                &[
                    ("provider", self.provider.kind().to_owned()),
                    ("from", from.clone()),
                ],
                1,
            );
        }
        let spec = self.spec_for(&input, ctx.info());
        tracing::info!(
            provider = self.provider.kind(),
            compute = %spec.name,
            env_keys = ?spec.env.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            resources = %spec.resources,
            "creating compute"
        );
        let started = Instant::now();
        let created = heartbeating(
            &ctx,
            "create",
            &input.compute_name,
            self.provider.create_or_adopt(&spec),
        )
        .await?;
        self.record("create", started, &created);
        let handle = created.map_err(|e| provider_failure("create", &input.compute_name, e))?;
        tracing::info!(
            compute = %handle.name,
            id = %handle.id,
            adopted = handle.adopted,
            revision = handle.revision.as_deref().unwrap_or(""),
            "compute created"
        );
        // The size created for the run's resources, and its price (the provider's default
        // size's when it asks none).
        let (unit_size, usd_per_second) = match &input.resources {
            Some(asked) if !asked.is_empty() => {
                let size = self
                    .provider
                    .fit(asked)
                    .await
                    .map_err(|e| provider_failure("size", &input.compute_name, e))?;
                (size.describe(), size.usd_per_second)
            }
            _ => (None, self.provider.usd_per_second()),
        };
        Ok(CreatedCompute {
            task_queue: handle.name.clone(),
            handle,
            provider: self.provider.kind().to_owned(),
            deploy_timeout: GoDuration(self.deploy_timeout()),
            max_lifetime: self.max_compute_lifetime.map(GoDuration),
            usd_per_second,
            unit_size,
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
        let mut result = self.wait_until_ready(&ctx, &input).await;
        // Once the job has started on the unit, the unit is ready, whatever the provider says
        // (App Platform can keep a deployment DEPLOYING while its container already runs):
        // failing here would cancel a running job and throw its work away.
        if let Err(error) = &result
            && !matches!(error, ActivityError::Cancelled { .. })
            && job_started(&ctx, &input.task_queue).await
        {
            tracing::info!(compute = %input.handle.name, ?error, "the job has started on the compute: it is ready");
            result = Ok(job_started_progress());
        }
        self.record("ready", started, &result);
        result
    }

    /// Deletes the compute and confirms it is gone. Deleting what is already gone succeeds.
    #[activity(name = "Delete")]
    pub async fn delete(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: DeleteComputeInput,
    ) -> Result<DeletedCompute, ActivityError> {
        let started = Instant::now();
        let name = input.compute_name.clone();
        let reason = input.reason;
        let result = heartbeating(&ctx, "delete", &name, self.delete_compute(input))
            .await
            .and_then(|deleted| deleted);
        self.record("teardown", started, &result);
        // Counted only by the attempt that succeeded, and only when it removed the unit: a
        // unit the sweeper removed first was counted by the sweeper.
        if let (Some(DeleteReason::LifetimeExceeded), Ok(deleted)) = (reason, &result)
            && deleted.outcome == Deleted::Removed
        {
            count_lifetime_kills(
                &self.metrics,
                self.provider.kind(),
                LifetimeKiller::Workflow,
                false,
                1,
            );
        }
        result
    }
}

impl ProvisioningActivities {
    async fn delete_compute(
        &self,
        input: DeleteComputeInput,
    ) -> Result<DeletedCompute, ActivityError> {
        let id = match (&input.compute_id, input.reason) {
            (Some(id), Some(DeleteReason::Operator)) => {
                self.operator_target(&input.compute_name, id).await?
            }
            (Some(id), _) => Some(id.clone()),
            (None, _) => self
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
        tracing::info!(compute = %input.compute_name, id = id.as_deref().unwrap_or(""), ?outcome, reason = ?input.reason, "compute deleted");
        Ok(DeletedCompute {
            compute_name: input.compute_name,
            compute_id: id,
            outcome,
            provider: self.provider.kind().to_owned(),
        })
    }
}

impl ProvisioningActivities {
    /// The unit an operator asked to delete, checked right before the delete (the command's
    /// check ran elsewhere, maybe as another owner): refused unless this workflow-worker's
    /// owner claims it ([`claim_unit`]); `None` when it is gone, or when its name now holds
    /// another unit than the one the operator listed (left alone).
    async fn operator_target(&self, name: &str, id: &str) -> Result<Option<String>, ActivityError> {
        let claim = claim_unit(self.provider.as_ref(), name)
            .await
            .map_err(|e| provider_failure("look up", name, e))?;
        match claim {
            UnitClaim::Ours(unit) if unit.id == id => Ok(Some(unit.id)),
            UnitClaim::Ours(unit) => {
                tracing::warn!(compute = %name, listed = %id, now = %unit.id, "the unit the operator listed is gone; its name holds another one, left alone");
                Ok(None)
            }
            UnitClaim::Missing => Ok(None),
            UnitClaim::Refused(why) => {
                let provider = (self.provider.kind(), self.provider.owner());
                Err(non_retryable(refusal(
                    Refuser::WorkflowWorker,
                    provider,
                    name,
                    &why,
                )))
            }
        }
    }
}

/// Awaits a provider call while heartbeating, so a call that legitimately takes longer than the
/// heartbeat timeout (a long `Retry-After`, a slow page of a list, an asynchronous delete) does
/// not time the attempt out while it still runs here, which would let a retry race it.
/// Returns early with a cancellation error when the activity is cancelled (the call is dropped:
/// every provider call is idempotent and safe to abandon).
async fn heartbeating<T>(
    ctx: &ActivityContext,
    step: &str,
    compute_name: &str,
    call: impl Future<Output = T>,
) -> Result<T, ActivityError> {
    let every = ctx
        .info()
        .heartbeat_timeout
        .map(|timeout| (timeout / 3).max(Duration::from_millis(100)))
        .unwrap_or(Duration::from_secs(5));
    let started = Instant::now();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => return Ok(result),
            _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
            _ = ticker.tick() => {
                ctx.record_heartbeat(ProviderCallProgress {
                    step: step.to_owned(),
                    compute_name: compute_name.to_owned(),
                    waiting: GoDuration(started.elapsed()),
                })
                .await?;
            }
        }
    }
}

/// A failure that retrying the activity cannot fix: the workflow sees it at once.
pub(crate) fn non_retryable(message: String) -> ActivityError {
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
