//! The workflow-worker process: one Temporal worker on `taskQueueName` hosting the workflow and
//! the provisioning activities, stopped once and gracefully.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::{Context, anyhow};
use tea_compute::{ComputeProvider, EnvVar};
use tea_runtime::Metrics;
use temporalio_client::Client;
use temporalio_sdk::{Runtime, Worker, WorkerOptions, runtime::PollerBehavior};

use crate::{
    activities::{PollBackoff, ProvisioningActivities},
    capacity::{self, CapacityActivities, ComputeCapacity, resources::RunBounds},
    operator_delete::{OperatorDeleteActivities, OperatorDeleteCompute},
    sweeper::{self, SweepActivities, SweepLeakedCompute, SweepOptions},
    versioning::{Versioning, deployment_options},
    workflow::TriggerExternalWorkflow,
};

/// How the workflow-worker runs.
#[derive(Clone, Debug)]
pub struct WorkflowWorkerConfig {
    /// Queue for workflows and provisioning activities (`taskQueueName`).
    pub task_queue: String,
    /// Deployment polling backoff.
    pub poll: PollBackoff,
    /// How long running activities may go on after shutdown starts.
    pub graceful_shutdown: Duration,
    /// How often the owner's sweep schedule runs. `Some`: this worker creates or updates the
    /// schedule. `None`: this worker does not manage it (an existing one is left in place).
    pub sweep_interval: Option<Duration>,
    /// What each scheduled sweep does.
    pub sweep: SweepOptions,
    /// The longest a unit of compute may live, even mid-job (`None`: unlimited).
    pub max_compute_lifetime: Option<Duration>,
    /// The most units of this owner's compute that exist at once (`None`: unlimited).
    pub max_concurrent_compute: Option<u32>,
    /// How often the capacity semaphore checks its holders and waiters for closed runs.
    pub capacity_check_interval: Duration,
    /// The operator's bounds on what one run may ask for (`MAX_RUN_CPUS`, `MAX_RUN_MEMORY`).
    pub run_bounds: RunBounds,
    /// This worker's deployment version (`None`: unversioned).
    pub versioning: Option<Versioning>,
}

impl Default for WorkflowWorkerConfig {
    fn default() -> Self {
        Self {
            task_queue: tea_contract::WORKFLOW_TASK_QUEUE.to_owned(),
            poll: PollBackoff::default(),
            graceful_shutdown: Duration::from_secs(10),
            sweep_interval: Some(Duration::from_secs(300)),
            sweep: SweepOptions::default(),
            max_compute_lifetime: None,
            max_concurrent_compute: None,
            capacity_check_interval: crate::capacity::DEFAULT_CHECK_EVERY,
            run_bounds: RunBounds::default(),
            versioning: None,
        }
    }
}

/// Runs the workflow-worker until `shutdown` resolves or the worker fails.
pub async fn run(
    runtime: &Runtime,
    client: Client,
    provider: Arc<dyn ComputeProvider>,
    forwarded_env: Vec<EnvVar>,
    config: &WorkflowWorkerConfig,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let kind = provider.kind();
    let sampler = metrics
        .enabled()
        .then(|| tokio::spawn(sample_provider(Arc::clone(&provider), metrics.clone())));
    let owner = provider.owner().clone();
    let schedule = sweeper::schedule_id(&owner);
    match config.sweep_interval {
        Some(interval) => {
            sweeper::ensure_schedule(
                &client,
                &config.task_queue,
                &owner,
                interval,
                config.sweep.clone(),
            )
            .await?;
            tracing::info!(
                %schedule,
                %owner,
                every = ?interval,
                grace_period = %config.sweep.grace_period,
                dry_run = config.sweep.dry_run,
                "compute sweeper scheduled"
            );
        }
        None => {
            tracing::info!(
                %schedule,
                %owner,
                "this worker does not manage the sweep schedule (SWEEP_INTERVAL=0); an existing \
                 one stays in place (remove it with `workflow-worker delete-sweep-schedule`)"
            );
        }
    }
    let activities = ProvisioningActivities::new(
        Arc::clone(&provider),
        forwarded_env,
        config.poll,
        metrics.clone(),
    )
    .with_max_compute_lifetime(config.max_compute_lifetime);
    let capacity =
        CapacityActivities::new(&owner, kind, activities.deploy_timeout(), metrics.clone())
            .with_cap(
                config.max_concurrent_compute,
                config.capacity_check_interval,
            )
            .with_sizing(Arc::clone(&provider), config.run_bounds);
    if let Some(cap) = config.max_concurrent_compute {
        tracing::info!(
            cap,
            semaphore = %capacity::capacity_workflow_id(&owner),
            "compute capped (MAX_CONCURRENT_COMPUTE)"
        );
    }
    let options = WorkerOptions::new(config.task_queue.clone())
        .register_workflow::<TriggerExternalWorkflow>()
        .map_err(|e| anyhow!("could not register the workflow: {e}"))?
        .register_workflow::<SweepLeakedCompute>()
        .map_err(|e| anyhow!("could not register the sweep workflow: {e}"))?
        .register_workflow::<ComputeCapacity>()
        .map_err(|e| anyhow!("could not register the capacity workflow: {e}"))?
        .register_workflow::<OperatorDeleteCompute>()
        .map_err(|e| anyhow!("could not register the operator delete workflow: {e}"))?
        .register_activities(activities)
        .register_activities(capacity)
        .register_activities(OperatorDeleteActivities::new(kind, metrics.clone()))
        .register_activities(SweepActivities::new(provider, metrics.clone()))
        // The capacity semaphore counts the malformed signals it refuses.
        .register_workflow_interceptors(vec![capacity::metrics_interceptor(metrics)])
        .deployment_options(deployment_options(
            config.versioning.as_ref(),
            tea_runtime::build_id(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        ))
        .graceful_shutdown_period(config.graceful_shutdown)
        // New runs' first workflow tasks arrive on the normal (non-sticky) queue. The SDK's
        // default (5 pollers, ratio 0.2) leaves one poller there, the likely cap on run
        // starts (about 11 per second) in the scale benchmark; give it half of 10.
        .workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(10))
        .nonsticky_to_sticky_poll_ratio(0.5)
        .build();
    let mut worker = Worker::new(runtime, client, options)
        .map_err(|e| anyhow!("could not create the workflow worker: {e}"))?;
    let stop = worker.shutdown_handle();
    let signal_task = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down the workflow worker");
        stop();
    });
    match &config.versioning {
        Some(v) => tracing::info!(
            task_queue = %config.task_queue,
            provider = kind,
            deployment = %v.deployment_name,
            build_id = %v.build_id,
            behavior = %v.behavior,
            "workflow worker polling, versioned"
        ),
        None => {
            tracing::info!(task_queue = %config.task_queue, provider = kind, "workflow worker polling")
        }
    }
    let result = worker.run().await.context("workflow worker failed");
    signal_task.abort();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    result
}

/// How often the provider is sampled for the compute-units gauge and API request counters.
const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Exports what only the provider knows: units of our compute up now, and its API requests by
/// operation and status (cumulative counts turned into counter increments).
async fn sample_provider(provider: Arc<dyn ComputeProvider>, metrics: Metrics) {
    let kind = provider.kind().to_owned();
    let mut reported: HashMap<(String, u16), u64> = HashMap::new();
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    loop {
        ticker.tick().await;
        match provider
            .list_ours(tea_compute::naming::COMPUTE_NAME_PREFIX)
            .await
        {
            Ok(units) => metrics.set(
                "tea_compute_units",
                "Units of this deployment's compute (generated name, our owner mark) up now",
                &[("provider", kind.clone())],
                units.len() as u64,
            ),
            Err(e) => tracing::debug!(error = %e, "could not sample compute units"),
        }
        for (operation, status, total) in provider.api_request_counts() {
            let seen = reported.entry((operation.clone(), status)).or_insert(0);
            if total > *seen {
                metrics.count(
                    "tea_provider_api_requests",
                    "Provider API requests by operation and HTTP status (0: no response)",
                    &[
                        ("provider", kind.clone()),
                        ("operation", operation),
                        ("status", status.to_string()),
                    ],
                    total - *seen,
                );
                *seen = total;
            }
        }
    }
}
