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
    DEAD_MAN_ACTION_ENV, EXTERNAL_TASK_QUEUE_ENV, GoDuration, OWNER_RUN_ID_ENV,
    OWNER_WORKFLOW_ID_ENV, TEMPORAL_ENV_ONLY_ENV,
};
use tea_runtime::Metrics;
use temporalio_client::{grpc::WorkflowService, tonic};

use crate::capacity::{AcquireRequest, RunRef, capacity_workflow_id, send_acquire};
use crate::operator::{Refuser, UnitClaim, claim_unit, refusal};
use temporalio_common::envconfig::{
    ClientConfigProfile, DataSource, LoadClientConfigProfileOptions, load_client_config_profile,
};
use temporalio_common::protos::temporal::api::{
    common::v1::WorkflowExecution,
    enums::v1::{PendingActivityState, TaskQueueKind, TaskQueueType},
    taskqueue::v1::TaskQueue,
    workflowservice::v1::{DescribeTaskQueueRequest, DescribeWorkflowExecutionRequest},
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
    /// How long the run waited for a slot under `MAX_CONCURRENT_COMPUTE` before this, its
    /// first create (workflow time), for the `tea_capacity_wait_duration` metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_waited: Option<GoDuration>,
}

/// Result of `Create`: identifiers only (the original stored the whole app, secrets included).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedCompute {
    pub handle: ComputeHandle,
    pub task_queue: String,
    pub provider: String,
    /// How long `WaitForAppBuild` waits for the provider to report the compute running (absent
    /// in histories recorded before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_timeout: Option<GoDuration>,
    /// The longest this compute may live (`MAX_COMPUTE_LIFETIME`); the workflow tears it down
    /// then, even mid-job. Absent when unlimited (and in histories recorded before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<GoDuration>,
    /// What the unit costs per second in USD, where the provider knows it (for the run's
    /// cost estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_second: Option<f64>,
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

pub use tea_contract::WaitProgress;

/// Input of `Delete`: by ID when known, else by name (a create that failed may have stored it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteComputeInput {
    pub compute_name: String,
    pub compute_id: Option<String>,
    /// Why the unit is deleted, when it is more than the run's ordinary teardown (absent in
    /// histories recorded before it existed, and for an ordinary teardown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DeleteReason>,
}

/// Why `Delete` deletes a unit, beyond "its run is done with it".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// The unit reached `MAX_COMPUTE_LIFETIME` while its run still used it: the run's lifetime
    /// timer fired. Counted in `tea_compute_lifetime_kills_total{by="workflow"}` once removed.
    LifetimeExceeded,
    /// An operator asked for it (`compute delete`, see [`crate::operator_delete`]).
    Operator,
}

/// Who deleted a unit for outliving `MAX_COMPUTE_LIFETIME`: the `by` label of
/// `tea_compute_lifetime_kills_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifetimeKiller {
    /// The run itself, when its lifetime timer fired.
    Workflow,
    /// The sweeper, for a unit whose run did not tear it down in time.
    Sweeper,
}

/// Counts `kills` units deleted for outliving `MAX_COMPUTE_LIFETIME` (`dry_run`: a sweep that
/// only reported them).
pub fn count_lifetime_kills(
    metrics: &Metrics,
    provider: &str,
    by: LifetimeKiller,
    dry_run: bool,
    kills: u64,
) {
    let by = match by {
        LifetimeKiller::Workflow => "workflow",
        LifetimeKiller::Sweeper => "sweeper",
    };
    metrics.count(
        "tea_compute_lifetime_kills",
        "Compute deleted for outliving MAX_COMPUTE_LIFETIME, by the run's own lifetime timer \
         (by=workflow) or by the sweeper under a run that did not act (by=sweeper)",
        &[
            ("provider", provider.to_owned()),
            ("dry_run", dry_run.to_string()),
            ("by", by.to_owned()),
        ],
        kills,
    );
}

/// Result of `Delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedCompute {
    pub compute_name: String,
    pub compute_id: Option<String>,
    pub outcome: Deleted,
    /// The provider that deleted it (absent in histories recorded before it was reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// How `WaitForAppBuild` waits: polls exponentially from `initial` to `max`, for at most
/// `deploy_timeout` (the provider's default when `None`) until the provider reports the
/// compute running.
#[derive(Clone, Copy, Debug)]
pub struct PollBackoff {
    pub initial: Duration,
    pub max: Duration,
    pub deploy_timeout: Option<Duration>,
}

impl Default for PollBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(30),
            deploy_timeout: None,
        }
    }
}

impl PollBackoff {
    fn next(&self, current: Duration) -> Duration {
        (current * 3 / 2).clamp(self.initial, self.max)
    }
}

/// Input of `RequestCapacity`. The run asking is the activity's workflow run; it asks before
/// its first attempt, and holds the slot across all its attempts. Under the
/// `capacity-reassert` patch it asks again while it waits, and re-asserts its slot
/// (`holding`) while it holds one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCapacityInput {
    /// Always 1 (the request comes before the first attempt) and ignored. It is still sent
    /// because workflow-workers of before require it: during a rolling deployment one of them
    /// may take the request of a run started by this version.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// Set when the run asked before: it re-asserts its request or its slot. Workflow-workers
    /// of before ignore it and ask for a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassert: Option<Reassertion>,
}

impl Default for RequestCapacityInput {
    fn default() -> Self {
        Self {
            attempt: first_attempt(),
            reassert: None,
        }
    }
}

/// What a run that asked before re-asserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reassertion {
    /// It still waits for a slot (its queue entry may have been lost): ask again.
    Waiting,
    /// It holds a slot: count it (see [`AcquireRequest::holding`]).
    Holding,
}

fn first_attempt() -> u32 {
    1
}

/// Result of `RequestCapacity`: the cap in force (`None`: unlimited, nothing was requested)
/// and, when capped, the semaphore the run now waits on and releases to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityRequested {
    pub cap: Option<u32>,
    pub semaphore: Option<String>,
    /// How long this workflow-worker's provider may take to deploy a unit (what `Create` will
    /// report), told before `Create` so that the run can queue its job together with `Create`
    /// ([`crate::workflow::QUICK_START_PATCH`]). Absent in histories recorded before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_timeout: Option<GoDuration>,
    /// How often the run re-asserts its request while it waits and its slot while it holds one
    /// (`CAPACITY_CHECK_INTERVAL`; [`crate::workflow::CAPACITY_REASSERT_PATCH`]): recorded
    /// here so that replay never reads it from the environment. Absent when uncapped, and in
    /// histories recorded before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassert_every: Option<GoDuration>,
}

/// Heartbeat details of `Create` and `Delete` while they wait on the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCallProgress {
    pub step: String,
    pub compute_name: String,
    pub waiting: GoDuration,
}

/// The provisioning activities, over one provider shared by every run of this process.
pub struct ProvisioningActivities {
    provider: Arc<dyn ComputeProvider>,
    forwarded_env: Vec<EnvVar>,
    poll: PollBackoff,
    metrics: Metrics,
    max_compute_lifetime: Option<Duration>,
    max_concurrent_compute: Option<u32>,
    capacity_check_every: Duration,
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
            max_concurrent_compute: None,
            capacity_check_every: crate::capacity::DEFAULT_CHECK_EVERY,
        }
    }

    /// Caps the units of compute of this owner that exist at once (`MAX_CONCURRENT_COMPUTE`;
    /// `None`: unlimited); `check_every` is the semaphore's liveness check interval.
    pub fn with_max_concurrent_compute(mut self, cap: Option<u32>, check_every: Duration) -> Self {
        self.max_concurrent_compute = cap;
        self.capacity_check_every = check_every;
        self
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
        }
    }
}

/// This process's resolved Temporal connection (environment, `TEMPORAL_PROFILE`, temporal.toml),
/// as the environment an external worker needs to connect exactly the same way: address,
/// namespace, API key (secret), TLS on or off, client certificate and key (the key secret; files
/// are read and forwarded as data, since the compute does not have them), server CA, server
/// name, host verification, and gRPC metadata (secret: it often carries credentials).
///
/// Fails, naming the setting, when a setting cannot be carried in an environment variable.
pub fn forwarded_temporal_env() -> Result<Vec<EnvVar>, String> {
    let profile = load_client_config_profile(LoadClientConfigProfileOptions::default(), None)
        .map_err(|e| format!("invalid Temporal client configuration: {e}"))?;
    connection_env(profile)
}

/// The job secrets named by `JOB_SECRET_ENV` (comma-separated variable names of this
/// process): each unit of compute gets them as secrets (App Platform `SECRET`; the local
/// worker's environment), and the job inherits them. Fails, naming the variable, when one is
/// unset or empty, not a valid name, or one the external worker itself uses.
pub fn job_secret_env(
    names: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<EnvVar>, String> {
    let mut env: Vec<EnvVar> = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !tea_contract::is_env_var_name(name) {
            return Err(format!(
                "JOB_SECRET_ENV: {name:?} is not a valid variable name"
            ));
        }
        let reserved = [
            "TEMPORAL_",
            "TEA_",
            "OWNER_",
            "DEAD_MAN_",
            "EXTERNAL_TASK_QUEUE",
        ];
        if reserved.iter().any(|r| name.starts_with(r)) {
            return Err(format!(
                "JOB_SECRET_ENV: {name} is one of the external worker's own settings"
            ));
        }
        if env.iter().any(|e| e.key == name) {
            continue;
        }
        let value = lookup(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            format!("JOB_SECRET_ENV names {name}, but {name} is not set in this environment")
        })?;
        env.push(EnvVar {
            key: name.to_owned(),
            value,
            secret: true,
        });
    }
    Ok(env)
}

fn connection_env(profile: ClientConfigProfile) -> Result<Vec<EnvVar>, String> {
    let var = |key: &str, value: String, secret: bool| EnvVar {
        key: key.to_owned(),
        value,
        secret,
    };
    let data = |setting: &str, source: DataSource| -> Result<String, String> {
        let bytes = match source {
            DataSource::Path(path) => std::fs::read(&path)
                .map_err(|e| format!("cannot read {setting} from {path}: {e}"))?,
            DataSource::Data(bytes) => bytes,
            _ => return Err(format!("{setting}: unsupported data source")),
        };
        String::from_utf8(bytes).map_err(|_| {
            format!("{setting} is not text (PEM): it cannot be forwarded to external workers")
        })
    };
    let tls_on = match &profile.tls {
        Some(tls) => tls.disabled != Some(true),
        None => profile.api_key.is_some(),
    };
    let mut env = vec![
        var(
            "TEMPORAL_ADDRESS",
            profile.address.unwrap_or_else(|| "localhost:7233".into()),
            false,
        ),
        var(
            "TEMPORAL_NAMESPACE",
            profile.namespace.unwrap_or_else(|| "default".into()),
            false,
        ),
        var("TEMPORAL_TLS", tls_on.to_string(), false),
    ];
    if let Some(key) = profile.api_key.filter(|k| !k.is_empty()) {
        env.push(var("TEMPORAL_API_KEY", key, true));
    }
    if let Some(tls) = profile.tls.filter(|_| tls_on) {
        if let Some(cert) = tls.client_cert {
            let value = data("the TLS client certificate", cert)?;
            env.push(var("TEMPORAL_TLS_CLIENT_CERT_DATA", value, false));
        }
        if let Some(key) = tls.client_key {
            let value = data("the TLS client key", key)?;
            env.push(var("TEMPORAL_TLS_CLIENT_KEY_DATA", value, true));
        }
        if let Some(ca) = tls.server_ca_cert {
            let value = data("the TLS server CA certificate", ca)?;
            env.push(var("TEMPORAL_TLS_SERVER_CA_CERT_DATA", value, false));
        }
        if let Some(name) = tls.server_name.filter(|n| !n.is_empty()) {
            env.push(var("TEMPORAL_TLS_SERVER_NAME", name, false));
        }
        if tls.disable_host_verification {
            env.push(var(
                "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION",
                "true".into(),
                false,
            ));
        }
    }
    let mut meta: Vec<_> = profile.grpc_meta.into_iter().collect();
    meta.sort();
    for (header, value) in meta {
        // The worker reads TEMPORAL_GRPC_META_<NAME> back as <name> lowercased, `_` as `-`.
        let header = header.to_ascii_lowercase();
        let representable = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !representable {
            return Err(format!(
                "gRPC metadata header {header:?} cannot be forwarded to external workers (only \
                 letters, digits and `-` survive an environment variable name)"
            ));
        }
        let key = format!(
            "TEMPORAL_GRPC_META_{}",
            header.to_ascii_uppercase().replace('-', "_")
        );
        env.push(var(&key, value, true));
    }
    Ok(env)
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
        let spec = self.spec_for(&input, ctx.info());
        tracing::info!(
            provider = self.provider.kind(),
            compute = %spec.name,
            env_keys = ?spec.env.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
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
        Ok(CreatedCompute {
            task_queue: handle.name.clone(),
            handle,
            provider: self.provider.kind().to_owned(),
            deploy_timeout: Some(GoDuration(self.deploy_timeout())),
            max_lifetime: self.max_compute_lifetime.map(GoDuration),
            usd_per_second: self.provider.usd_per_second(),
        })
    }

    /// The cap in force; when capped, asks this owner's semaphore for a slot for this run, or
    /// re-asserts the slot it holds (`holding`): signal-with-start `acquire`, idempotent, so
    /// retries are safe ([`send_acquire`]). A run that asked then waits for `capacity-granted`.
    #[activity(name = "RequestCapacity")]
    pub async fn request_capacity(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RequestCapacityInput,
    ) -> Result<CapacityRequested, ActivityError> {
        let deploy_timeout = Some(GoDuration(self.deploy_timeout()));
        let Some(cap) = self.max_concurrent_compute else {
            return Ok(CapacityRequested {
                deploy_timeout,
                ..Default::default()
            });
        };
        let info = ctx.info();
        let (Some(workflow_id), Some(run_id)) =
            (info.workflow_id.clone(), info.workflow_run_id.clone())
        else {
            return Err(non_retryable(
                "RequestCapacity runs only for a workflow run".to_owned(),
            ));
        };
        let semaphore = capacity_workflow_id(self.provider.owner());
        let check_every = Some(GoDuration(self.capacity_check_every));
        let request = AcquireRequest {
            run: RunRef {
                workflow_id,
                run_id,
            },
            cap,
            check_every,
            holding: input.reassert == Some(Reassertion::Holding),
        };
        send_acquire(&ctx.client(), &info.task_queue, &semaphore, &request)
            .await
            .map_err(|e| {
                ActivityError::from(anyhow::anyhow!(
                    "asking {semaphore} for a compute slot failed: {e}"
                ))
            })?;
        if let Some(reassert) = input.reassert {
            tracing::debug!(%semaphore, cap, ?reassert, "compute capacity re-asserted");
        } else {
            tracing::info!(%semaphore, cap, "compute capacity requested");
            self.metrics.count(
                "tea_capacity_waits",
                "Runs that asked for a compute slot under MAX_CONCURRENT_COMPUTE",
                &[("provider", self.provider.kind().to_owned())],
                1,
            );
        }
        Ok(CapacityRequested {
            cap: Some(cap),
            semaphore: Some(semaphore),
            deploy_timeout,
            reassert_every: check_every,
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
    /// How long the provider may take to report new compute running.
    fn deploy_timeout(&self) -> Duration {
        self.poll
            .deploy_timeout
            .unwrap_or_else(|| self.provider.default_deploy_timeout())
    }

    async fn wait_until_ready(
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
            provider: Some(self.provider.kind().to_owned()),
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

/// Sleeps, returning early with a cancellation error when the activity is cancelled.
async fn pause(ctx: &ActivityContext, duration: Duration) -> Result<(), ActivityError> {
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = ctx.cancelled() => Err(ActivityError::cancelled()),
    }
}

/// What the readiness wait reports when it ends because the job has started.
fn job_started_progress() -> WaitProgress {
    WaitProgress {
        phase: "RUNNING_JOB".into(),
        detail: Some("the job has started on the compute".into()),
        worker_polling: true,
    }
}

/// Whether this run's job has started on `task_queue` (the compute's own queue): a worker on
/// the compute has taken it. Read from the run's pending activities; a failed lookup counts as
/// "not known to have started" (the caller then decides on the provider's word alone).
async fn job_started(ctx: &ActivityContext, task_queue: &str) -> bool {
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
    use temporalio_common::envconfig::ClientConfigTLS;

    fn keys(env: &[EnvVar]) -> Vec<(&str, bool)> {
        env.iter().map(|e| (e.key.as_str(), e.secret)).collect()
    }

    #[test]
    fn forwards_the_resolved_connection_with_defaults_and_tls_off() {
        let env = connection_env(ClientConfigProfile::default()).unwrap();
        let values: Vec<_> = env
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            values,
            [
                ("TEMPORAL_ADDRESS", "localhost:7233"),
                ("TEMPORAL_NAMESPACE", "default"),
                ("TEMPORAL_TLS", "false"),
            ]
        );
    }

    #[test]
    fn forwards_api_key_mtls_and_metadata_with_secrets_marked() {
        let dir = std::env::temp_dir().join(format!("tea-fwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_path = dir.join("client.key");
        std::fs::write(&key_path, "-----BEGIN PRIVATE KEY-----\nk3y\n").unwrap();
        let mut tls = ClientConfigTLS::default();
        tls.client_cert = Some(DataSource::Data(b"CERT".to_vec()));
        tls.client_key = Some(DataSource::Path(key_path.display().to_string()));
        tls.server_ca_cert = Some(DataSource::Data(b"CA".to_vec()));
        tls.server_name = Some("temporal.internal".into());
        let mut profile = ClientConfigProfile::default();
        profile.address = Some("ns.acct.tmprl.cloud:7233".into());
        profile.namespace = Some("ns.acct".into());
        profile.api_key = Some("ap1-k3y".into());
        profile.tls = Some(tls);
        profile.grpc_meta = [("X-Tenant".to_owned(), "t1".to_owned())].into();
        let env = connection_env(profile).unwrap();
        assert_eq!(
            keys(&env),
            [
                ("TEMPORAL_ADDRESS", false),
                ("TEMPORAL_NAMESPACE", false),
                ("TEMPORAL_TLS", false),
                ("TEMPORAL_API_KEY", true),
                ("TEMPORAL_TLS_CLIENT_CERT_DATA", false),
                ("TEMPORAL_TLS_CLIENT_KEY_DATA", true),
                ("TEMPORAL_TLS_SERVER_CA_CERT_DATA", false),
                ("TEMPORAL_TLS_SERVER_NAME", false),
                ("TEMPORAL_GRPC_META_X_TENANT", true),
            ]
        );
        let value = |k: &str| env.iter().find(|e| e.key == k).map(|e| e.value.clone());
        assert_eq!(value("TEMPORAL_TLS").as_deref(), Some("true"));
        assert!(
            value("TEMPORAL_TLS_CLIENT_KEY_DATA")
                .unwrap()
                .contains("k3y")
        );
        assert!(
            !format!("{env:?}").contains("k3y"),
            "secrets must not show in Debug"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn job_secrets_are_forwarded_as_secrets_and_checked() {
        let lookup = |key: &str| match key {
            "DB_PASSWORD" => Some("hunter2".to_owned()),
            "S3_KEY" => Some("s3cr3t".to_owned()),
            _ => None,
        };
        let env = job_secret_env(" DB_PASSWORD, S3_KEY,,DB_PASSWORD ", lookup).unwrap();
        assert_eq!(keys(&env), [("DB_PASSWORD", true), ("S3_KEY", true)]);
        assert!(!format!("{env:?}").contains("hunter2"));
        for (names, expected) in [
            ("MISSING", "MISSING is not set"),
            ("A-B", "not a valid variable name"),
            ("TEMPORAL_API_KEY", "the external worker's own settings"),
        ] {
            let err = job_secret_env(names, lookup).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        assert!(job_secret_env("", lookup).unwrap().is_empty());
    }

    #[test]
    fn refuses_what_an_environment_variable_cannot_carry() {
        let mut tls = ClientConfigTLS::default();
        tls.client_cert = Some(DataSource::Path("/nonexistent/client.pem".into()));
        let mut unreadable = ClientConfigProfile::default();
        unreadable.tls = Some(tls);
        let err = connection_env(unreadable).unwrap_err();
        assert!(err.contains("/nonexistent/client.pem"), "{err}");
        let mut header = ClientConfigProfile::default();
        header.grpc_meta = [("x_tenant".to_owned(), "t1".to_owned())].into();
        let err = connection_env(header).unwrap_err();
        assert!(err.contains("x_tenant"), "{err}");
    }

    #[test]
    fn delete_inputs_recorded_before_the_reason_still_decode_and_ordinary_ones_omit_it() {
        let old: DeleteComputeInput =
            serde_json::from_str(r#"{"compute_name":"ext-1","compute_id":"app-1"}"#).unwrap();
        assert_eq!(old.reason, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("reason"));
        let kill = DeleteComputeInput {
            reason: Some(DeleteReason::LifetimeExceeded),
            ..old
        };
        let json = serde_json::to_string(&kill).unwrap();
        assert!(json.contains(r#""reason":"lifetime_exceeded""#), "{json}");
        assert_eq!(
            serde_json::from_str::<DeleteComputeInput>(&json).unwrap(),
            kill
        );
    }

    #[test]
    fn request_capacity_input_keeps_the_attempt_earlier_workers_require() {
        let request = RequestCapacityInput::default();
        assert_eq!(serde_json::to_string(&request).unwrap(), r#"{"attempt":1}"#);
        let empty: RequestCapacityInput = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, request);
        let holding = RequestCapacityInput {
            reassert: Some(Reassertion::Holding),
            ..request
        };
        let json = serde_json::to_string(&holding).unwrap();
        assert_eq!(json, r#"{"attempt":1,"reassert":"holding"}"#);
        assert_eq!(
            serde_json::from_str::<RequestCapacityInput>(&json).unwrap(),
            holding
        );
    }

    #[test]
    fn poll_backoff_grows_to_its_cap() {
        let b = PollBackoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(30),
            deploy_timeout: None,
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
