//! The capacity activities and the calls they make: `RequestCapacity` (a run asks for a slot by
//! signal-with-start, [`send_acquire`]) and `CapacityCheckRuns` (the semaphore's liveness
//! check: which of its runs have closed, and which were reset into one that runs).

use std::{sync::Arc, time::Duration};

use anyhow::anyhow;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tea_compute::{ComputeOwner, ComputeProvider};
use tea_contract::GoDuration;
use tea_runtime::Metrics;
use temporalio_client::{
    Client, WorkflowIdReusePolicy, WorkflowStartOptions, errors::WorkflowStartError, tonic,
};
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use temporalio_macros::activities;
use temporalio_sdk::{
    ApplicationFailure,
    activities::{ActivityContext, ActivityError},
};

use super::resources::{self, RESOURCES_REFUSED, Refused, RunBounds};
use crate::activities::non_retryable;

use super::{
    AcquireRequest, CHECK_CONCURRENCY, CapacityRequested, CapacityState, ComputeCapacity,
    DEFAULT_CHECK_EVERY, Reassertion, RequestCapacityInput, RunRef, SlotRequested,
    capacity_workflow_id,
};

/// Sends `request` to the semaphore `semaphore` by signal-with-start on `task_queue`: signals
/// it when it runs; otherwise starts it with `request`'s cap and interval, and tells it to
/// recover ([`CapacityState::recovering`]) when its last run ended without handing its state
/// over (terminated, failed, timed out). A semaphore that runs costs one call, as before; one
/// that completed or never ran starts clean, since nothing can hold one of its slots.
pub async fn send_acquire(
    client: &Client,
    task_queue: &str,
    semaphore: &str,
    request: &AcquireRequest,
) -> Result<(), String> {
    let clean = CapacityState {
        cap: request.cap,
        check_every: request.check_every,
        ..Default::default()
    };
    let recovering = CapacityState {
        recovering: true,
        ..clean.clone()
    };
    // Each try is refused only when a closed run of that kind is the last one.
    let tries = [
        (WorkflowIdReusePolicy::RejectDuplicate, &clean),
        (WorkflowIdReusePolicy::AllowDuplicateFailedOnly, &recovering),
        (WorkflowIdReusePolicy::AllowDuplicate, &clean),
    ];
    let mut refused = None;
    for (reuse, start) in tries {
        let options = WorkflowStartOptions::new(task_queue.to_owned(), semaphore.to_owned())
            .id_reuse_policy(reuse)
            .build();
        let sent = client
            .signal_with_start_workflow(
                ComputeCapacity::run,
                start.to_raw(),
                ComputeCapacity::acquire,
                request.to_raw(),
                options,
            )
            .await;
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if already_started(&e) => refused = Some(e),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(refused.map_or_else(String::new, |e| e.to_string()))
}

/// A start refused by the workflow ID reuse policy.
fn already_started(error: &WorkflowStartError) -> bool {
    match error {
        WorkflowStartError::AlreadyStarted { .. } => true,
        WorkflowStartError::Rpc(status) => status.code() == tonic::Code::AlreadyExists,
        _ => false,
    }
}

/// A run the liveness check found closed (or unknown to Temporal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedRun {
    pub run: RunRef,
    /// The run was reset and its reset run (this run ID of the same workflow) still runs: it
    /// takes the closed run's place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_to: Option<String>,
}

/// The capacity activities: `RequestCapacity`, which a run calls (as a local activity) to
/// learn the cap in force and ask for a slot, and the semaphore's liveness check.
pub struct CapacityActivities {
    /// `MAX_CONCURRENT_COMPUTE`; `None`: unlimited.
    cap: Option<u32>,
    /// The semaphore's liveness check interval, and how often runs re-assert.
    check_every: Duration,
    /// The owner's semaphore ([`capacity_workflow_id`]).
    semaphore: String,
    /// How long the provider may take to deploy a unit, told to runs before their `Create`.
    deploy_timeout: Duration,
    /// The provider's kind, the `provider` label of the metrics.
    provider: &'static str,
    /// The provider that sizes runs' units, and the operator's bounds on what a run asks
    /// (`None`: runs that ask for resources are refused, naming why).
    sizing: Option<(std::sync::Arc<dyn ComputeProvider>, RunBounds)>,
    metrics: Metrics,
}

impl CapacityActivities {
    /// For `owner`'s runs on a provider of `provider` kind, which deploys within
    /// `deploy_timeout`; compute capped at `cap` (`None`: unlimited).
    pub fn new(
        owner: &ComputeOwner,
        provider: &'static str,
        deploy_timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            cap: None,
            check_every: DEFAULT_CHECK_EVERY,
            semaphore: capacity_workflow_id(owner),
            deploy_timeout,
            provider,
            sizing: None,
            metrics,
        }
    }

    /// Checks runs' `resources` against `provider` and the operator's `bounds` before
    /// anything is created ([`resources`]).
    pub fn with_sizing(
        mut self,
        provider: std::sync::Arc<dyn ComputeProvider>,
        bounds: RunBounds,
    ) -> Self {
        self.sizing = Some((provider, bounds));
        self
    }

    /// What the provider will create for `asked`, described; a refusal fails the run.
    async fn check_resources(
        &self,
        asked: &tea_contract::Resources,
    ) -> Result<Option<String>, ActivityError> {
        let Some((provider, bounds)) = &self.sizing else {
            return Err(refused(
                "this workflow-worker does not size units per run: `resources` cannot be \
                 honoured"
                    .to_owned(),
            ));
        };
        match resources::check(provider.as_ref(), *bounds, asked).await {
            Ok(size) => {
                tracing::info!(asked = %asked, size = ?size.describe(), "run's resources fit");
                Ok(size.describe())
            }
            Err(Refused::Request(message)) => {
                tracing::info!(%message, "run's resources refused");
                Err(refused(message))
            }
            Err(Refused::Transient(message)) => Err(ActivityError::from(anyhow!(
                "checking the run's resources failed: {message}"
            ))),
        }
    }

    /// Caps the units of compute of this owner that exist at once (`MAX_CONCURRENT_COMPUTE`;
    /// `None`: unlimited); `check_every` is the semaphore's liveness check interval.
    pub fn with_cap(mut self, cap: Option<u32>, check_every: Duration) -> Self {
        self.cap = cap;
        self.check_every = check_every;
        self
    }
}

#[activities]
impl CapacityActivities {
    /// Checks the run's `resources` (a refusal fails the run before anything exists), then
    /// tells the cap in force and the provider's deploy timeout; when capped, asks this owner's
    /// semaphore for a slot for this run, or re-asserts the slot it holds (`holding`):
    /// signal-with-start `acquire`, idempotent, so retries are safe ([`send_acquire`]). A run
    /// that asked then waits for `capacity-granted`.
    #[activity(name = "RequestCapacity")]
    pub async fn request_capacity(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RequestCapacityInput,
    ) -> Result<CapacityRequested, ActivityError> {
        let deploy_timeout = GoDuration(self.deploy_timeout);
        let unit_size = match &input.resources {
            Some(asked) if !asked.is_empty() => self.check_resources(asked).await?,
            _ => None,
        };
        let Some(cap) = self.cap else {
            return Ok(CapacityRequested {
                deploy_timeout,
                slot: None,
                unit_size,
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
        let semaphore = &self.semaphore;
        let request = AcquireRequest {
            run: RunRef {
                workflow_id,
                run_id,
            },
            cap,
            check_every: Some(GoDuration(self.check_every)),
            holding: input.reassert == Some(Reassertion::Holding),
        };
        send_acquire(&ctx.client(), &info.task_queue, semaphore, &request)
            .await
            .map_err(|e| {
                ActivityError::from(anyhow!("asking {semaphore} for a compute slot failed: {e}"))
            })?;
        if let Some(reassert) = input.reassert {
            tracing::debug!(%semaphore, cap, ?reassert, "compute capacity re-asserted");
        } else {
            tracing::info!(%semaphore, cap, "compute capacity requested");
            self.metrics.count(
                "tea_capacity_waits",
                "Runs that asked for a compute slot under MAX_CONCURRENT_COMPUTE",
                &[("provider", self.provider.to_owned())],
                1,
            );
        }
        Ok(CapacityRequested {
            deploy_timeout,
            slot: Some(SlotRequested {
                semaphore: semaphore.clone(),
                cap,
                reassert_every: GoDuration(self.check_every),
            }),
            unit_size,
        })
    }

    /// Which of `runs` have closed (or are unknown), and which of those were reset into a run
    /// that still runs.
    #[activity(name = "CapacityCheckRuns")]
    pub async fn check_runs(
        self: Arc<Self>,
        ctx: ActivityContext,
        runs: Vec<RunRef>,
    ) -> Result<Vec<ClosedRun>, ActivityError> {
        Ok(closed_runs(&ctx.client(), runs).await?)
    }
}

/// A run's resources refused for good: the run fails with `message` alone.
fn refused(message: String) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(message)
            .type_name(RESOURCES_REFUSED.to_owned())
            .non_retryable(true)
            .build(),
    )
}

/// The closed ones of `runs`, described [`CHECK_CONCURRENCY`] at a time.
async fn closed_runs(client: &Client, runs: Vec<RunRef>) -> anyhow::Result<Vec<ClosedRun>> {
    let checks = futures::stream::iter(runs)
        .map(|run| closed_run(client, run))
        .buffer_unordered(CHECK_CONCURRENCY);
    let results: Vec<_> = checks.collect().await;
    let mut closed = Vec::new();
    for result in results {
        closed.extend(result?);
    }
    Ok(closed)
}

/// `run`, when it has closed (with its reset run, if it was reset into one that runs).
async fn closed_run(client: &Client, run: RunRef) -> anyhow::Result<Option<ClosedRun>> {
    let failed = |run_id: &str, status: tonic::Status| {
        anyhow!(
            "describing run {run_id} of {} failed: {}",
            run.workflow_id,
            status.message()
        )
    };
    let open = |status: Option<WorkflowExecutionStatus>| {
        matches!(
            status,
            Some(WorkflowExecutionStatus::Running | WorkflowExecutionStatus::Unspecified)
        )
    };
    let description = tea_runtime::run_description(client, &run.workflow_id, Some(&run.run_id))
        .await
        .map_err(|status| failed(&run.run_id, status))?;
    let status = description.as_ref().map(|description| {
        description
            .workflow_execution_info
            .as_ref()
            .map(|info| info.status())
            .unwrap_or(WorkflowExecutionStatus::Unspecified)
    });
    if open(status) {
        return Ok(None);
    }
    let reset = description
        .and_then(|description| description.workflow_extended_info)
        .map(|info| info.reset_run_id)
        .filter(|reset| !reset.is_empty() && *reset != run.run_id);
    let mut reset_to = None;
    if let Some(reset) = reset {
        let status = tea_runtime::run_status(client, &run.workflow_id, Some(&reset))
            .await
            .map_err(|status| failed(&reset, status))?;
        reset_to = open(status).then_some(reset);
    }
    Ok(Some(ClosedRun { run, reset_to }))
}
