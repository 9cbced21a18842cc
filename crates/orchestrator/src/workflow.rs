//! `TriggerExternalWorkflow`: pause, provision compute, run the job on the compute's unique
//! queue, and deprovision the compute whatever happened — success, failure or cancellation.
//!
//! Cleanup is designed in, not deferred: `Create` runs detached from workflow cancellation (so
//! the workflow always learns what exists), and once it has returned, every path goes through
//! `Delete`, which also runs detached. A create that failed after the provider stored the
//! compute is covered by deleting by name.
//!
//! Versioning: runs last hours, and a workflow-worker deployed while they are in flight replays
//! their histories with the new code. Every change to the command sequence is guarded by a
//! patch ([`BOUNDED_WAITS_PATCH`] and its successors: `ctx.patched(ID)` is true for runs that
//! first executed the new code, false on replay of older histories, which keep the old
//! behaviour). The replay tests (`tests/replay.rs`) replay recorded histories of every earlier
//! version; CONTRIBUTING.md, "Changing the workflow", says how to ship a change.

use std::time::Duration;

use tea_compute::{ImageRef, naming};
use tea_contract::{CommandJob, CommandResult, ExternalActivities, GoDuration, WorkflowInput};
use temporalio_common::{
    ActivityCloseTimeouts, RetryPolicy, data_converters::RawValue, error::IncomingError,
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityCancellationType, ActivityExecutionError, ActivityOptions, ApplicationFailure,
    LocalActivityOptions, MemoValue, SignalWorkflowOptions, SyncWorkflowContext, TimerResult,
    WorkflowCancellationToken, WorkflowContext, WorkflowContextView, WorkflowResult,
    WorkflowTermination,
};

use crate::activities::{
    CapacityRequested, CreateComputeInput, CreatedCompute, DeleteComputeInput, DeleteReason,
    DeletedCompute, ProvisioningActivities, Reassertion, RequestCapacityInput, WaitForComputeInput,
    WaitProgress,
};
use crate::capacity::{ComputeCapacity, RunRef};

// What clients see of a run lives in the contract, so that a client needs no workflow code.
pub use tea_contract::{Phase, PhaseEntry, RunOutcome, RunStatus};

/// Patch (2026-11): strict input, every wait has a deadline, and cancellation is checked between
/// attempts. Under it: the input is decoded and validated by today's rules (runs started before
/// keep the first version's, so that replay decides as they did); no new compute is provisioned
/// once the run is cancelled; the job's start-to-close follows its duration instead of the
/// original's fixed hour; `WaitForAppBuild` is bounded by the provider's deploy timeout plus the
/// worker start timeout.
pub const BOUNDED_WAITS_PATCH: &str = "bounded-waits";

/// Patch (2026-11): a run whose input has a `command` runs it with `run-command` instead of
/// the original's `long-running-command`, and its result carries the job's.
pub const RUN_COMMAND_PATCH: &str = "run-command";

/// Patch (2026-11): a unit of compute lives at most `MAX_COMPUTE_LIFETIME` (when the
/// workflow-worker sets it; `Create` reports it): a timer from the unit's creation races the
/// deployment wait and the job, and when it fires first they are cancelled, the unit is torn
/// down and the run fails ("exceeded the maximum compute lifetime of ...").
pub const COMPUTE_LIFETIME_PATCH: &str = "compute-lifetime";

/// Patch (2026-11): `MAX_CONCURRENT_COMPUTE`. Before its first `Create`, the run asks
/// (`RequestCapacity`) for a slot of its owner's semaphore (see [`crate::capacity`]) when the
/// workflow-worker caps compute, waits for `capacity-granted` (phase `waiting_for_capacity`),
/// holds the slot across its attempts, and releases it once its last compute is confirmed
/// deleted (a run whose Delete failed keeps it: the unit may still exist; the semaphore's
/// liveness check frees it when the run closes).
pub const COMPUTE_CAPACITY_PATCH: &str = "compute-capacity";

/// Patch (2026-11): fewer round trips per run. `RequestCapacity` runs as a local activity
/// (inside the workflow task, no activity dispatch and no extra workflow task) and tells the
/// provider's deploy timeout; the job is then queued on the compute's queue in the same
/// workflow task as `Create` (see [`QueuedJob`]), and `WaitForAppBuild` runs beside it: the job
/// starts as soon as the compute's worker polls, before the workflow has seen `Create` end. A
/// failed `Create` or a deployment that fails first cancels the still-queued job (fresh
/// compute may then be tried, as before); a job that ends first cancels the wait. Without a
/// deploy timeout from `RequestCapacity`, the job is scheduled with the wait instead.
pub const QUICK_START_PATCH: &str = "quick-start";

/// Patch (2026-12): the capacity semaphore is soft state; the runs are the truth. A capped run
/// (under [`QUICK_START_PATCH`]) re-asserts, every `CAPACITY_CHECK_INTERVAL` (told by
/// `RequestCapacity`, so recorded in history): its request while it waits (`RequestCapacity`
/// again, so that a queue entry lost to a reset of the run, a terminated semaphore or one
/// served elsewhere is made again), and its slot while it holds one (`RequestCapacity` with
/// `reassert: holding`, so that a semaphore that lost its state counts it; from the grant
/// until the release, through cancellation and cleanup). See [`crate::capacity`].
pub const CAPACITY_REASSERT_PATCH: &str = "capacity-reassert";

/// Patch (2026-12): a job that completed is never thrown away. When `Create` finally fails
/// after the job queued beside it ([`QUICK_START_PATCH`]; under [`CAPACITY_REASSERT_PATCH`]) has completed, the unit is deleted by
/// name and the run reports the job's result, instead of failing as if nothing ran.
pub const FINISHED_JOB_KEPT_PATCH: &str = "finished-job-kept";

/// Patch (2026-12): the compute lifetime is measured from when `Create` was scheduled, no
/// later than the unit's creation, instead of from when `Create` returned: a slow or
/// rate-limited create no longer lets a unit outlive `MAX_COMPUTE_LIFETIME` by the time it
/// took, so the workflow tears the unit down before the sweeper, which measures from the
/// provider's creation time plus its grace period, would.
pub const LIFETIME_FROM_CREATE_PATCH: &str = "lifetime-from-create";

/// Activity timeouts and retries of the original.
const START_TO_CLOSE: Duration = Duration::from_secs(3600);

/// Slack on top of what a bounded wait needs, for scheduling and retries.
const DEADLINE_MARGIN: Duration = Duration::from_secs(300);

fn retry_policy() -> RetryPolicy {
    provider_call_retry_policy(5)
}

/// How a call to the provider is retried: from 1 s, doubling, at most 30 s apart, at most
/// `maximum_attempts` attempts (the operator's delete uses it too).
pub(crate) fn provider_call_retry_policy(maximum_attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(30))
        .maximum_attempts(maximum_attempts)
        .build()
}

/// Options for a provisioning activity; `detached` ones ignore workflow cancellation.
fn activity_options(heartbeat_timeout: Duration, detached: bool) -> ActivityOptions {
    let mut options = ActivityOptions::with_start_to_close_timeout(START_TO_CLOSE)
        .heartbeat_timeout(heartbeat_timeout)
        .retry_policy(retry_policy())
        .build();
    if detached {
        options.cancellation_token = Some(WorkflowCancellationToken::new());
    }
    options
}

/// `RequestCapacity` is one quick call (it does not heartbeat), detached from cancellation.
fn request_capacity_options() -> ActivityOptions {
    let mut options = ActivityOptions::with_start_to_close_timeout(REQUEST_CAPACITY_TIMEOUT)
        .retry_policy(retry_policy())
        .build();
    options.cancellation_token = Some(WorkflowCancellationToken::new());
    options
}

/// The same call as a local activity ([`QUICK_START_PATCH`]): each attempt bounded, retried
/// as the activity was, detached from cancellation.
fn request_capacity_local_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .retry_policy(retry_policy())
        .start_to_close_timeout(Duration::from_secs(10))
        .schedule_to_close_timeout(REQUEST_CAPACITY_TIMEOUT)
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// How long asking for a compute slot may take, retries included.
const REQUEST_CAPACITY_TIMEOUT: Duration = Duration::from_secs(60);

/// Delete is the guarantee: retried until it succeeds or fails for a reason retrying can't fix.
fn delete_options(heartbeat_timeout: Duration) -> ActivityOptions {
    let mut options = activity_options(heartbeat_timeout, true);
    options.retry_policy = Some(
        RetryPolicy::builder()
            .initial_interval(Duration::from_secs(1))
            .backoff_coefficient(2.0)
            .maximum_interval(Duration::from_secs(60))
            .maximum_attempts(0)
            .build(),
    );
    options
}

#[workflow]
#[derive(Default)]
pub struct TriggerExternalWorkflow {
    status: RunStatus,
    /// The capacity semaphore granted this run a slot.
    granted: bool,
    /// A unit of compute of this run may exist (from `Create` until a `Delete` succeeded).
    unit_may_exist: bool,
    /// How long this run waited for its slot ([`QUICK_START_PATCH`]: told to its first
    /// `Create`, which counts it).
    capacity_waited: Option<Duration>,
}

/// Which patches this run executes under (fixed at its start).
#[derive(Clone, Copy, Debug)]
struct Versions {
    /// [`BOUNDED_WAITS_PATCH`].
    bounded: bool,
    /// [`RUN_COMMAND_PATCH`].
    commands: bool,
    /// [`COMPUTE_LIFETIME_PATCH`].
    lifetime: bool,
    /// [`COMPUTE_CAPACITY_PATCH`].
    capacity: bool,
    /// [`QUICK_START_PATCH`].
    quick: bool,
    /// [`CAPACITY_REASSERT_PATCH`].
    reassert: bool,
    /// [`FINISHED_JOB_KEPT_PATCH`].
    keep_finished_job: bool,
    /// [`LIFETIME_FROM_CREATE_PATCH`].
    lifetime_from_create: bool,
}

/// How one compute attempt ended.
enum AttemptEnd {
    Completed(Box<RunOutcome>),
    Cancelled,
    /// The compute died or never became ready; it has been deleted: try fresh compute.
    ComputeLost(String),
    /// Retrying on fresh compute cannot help (or cleanup failed): fail the run.
    Fatal(String),
}

/// How the part between create and delete ended.
enum BodyEnd {
    /// With the user's command's result, when the run had one.
    Completed(Option<CommandResult>),
    Cancelled,
    Failed {
        message: String,
        fresh_compute_helps: bool,
        /// The compute reached its maximum lifetime: its teardown is a lifetime kill.
        lifetime_exceeded: bool,
    },
}

#[workflow_methods]
impl TriggerExternalWorkflow {
    #[run(name = "TriggerExternalWorkflow")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: RawValue,
    ) -> WorkflowResult<RunOutcome> {
        let bounded = ctx.patched(BOUNDED_WAITS_PATCH);
        let commands = bounded && ctx.patched(RUN_COMMAND_PATCH);
        let lifetime = commands && ctx.patched(COMPUTE_LIFETIME_PATCH);
        let capacity = lifetime && ctx.patched(COMPUTE_CAPACITY_PATCH);
        let quick = capacity && ctx.patched(QUICK_START_PATCH);
        let reassert = quick && ctx.patched(CAPACITY_REASSERT_PATCH);
        let keep_finished_job = reassert && ctx.patched(FINISHED_JOB_KEPT_PATCH);
        let versions = Versions {
            bounded,
            commands,
            lifetime,
            capacity,
            quick,
            reassert,
            keep_finished_job,
            lifetime_from_create: keep_finished_job && ctx.patched(LIFETIME_FROM_CREATE_PATCH),
        };
        // Decoded here, not by the SDK: bad input from any client fails the run at once
        // instead of failing workflow tasks forever (see `tea_contract::input`).
        let decoded = if bounded {
            WorkflowInput::from_payloads(&input.payloads)
        } else {
            WorkflowInput::from_payloads_v1(&input.payloads)
        };
        let input = match decoded {
            Ok(input) => input,
            Err(message) => return Err(fail(ctx, message)),
        };
        enter(ctx, Phase::Waiting);
        if !pause(ctx, input.pause()).await {
            return Err(cancelled(ctx));
        }
        let admission = if versions.capacity {
            acquire_capacity(ctx, versions).await?
        } else {
            Admission::default()
        };
        let end = match (&admission.semaphore, admission.reassert_every) {
            (Some(_), Some(every)) => {
                let holder = ctx.clone();
                let body = attempts(ctx, &input, versions, admission.deploy_timeout);
                hold_reasserting(&holder, every, body).await
            }
            _ => attempts(ctx, &input, versions, admission.deploy_timeout).await,
        };
        if let Some(semaphore) = admission.semaphore {
            release_capacity(ctx, &semaphore).await;
        }
        let outcome = end?;
        if !pause(ctx, input.pause()).await {
            return Err(cancelled(ctx));
        }
        enter(ctx, Phase::Done);
        Ok(outcome)
    }

    /// Where the run is: phase, compute, queue, attempt (clients: `tea_contract::StatusQuery`).
    #[query(name = "status")]
    pub fn status(&self, _ctx: &WorkflowContextView) -> RunStatus {
        self.status.clone()
    }

    /// The capacity semaphore gives this run a slot (see [`COMPUTE_CAPACITY_PATCH`]). It has
    /// no argument; any is accepted and ignored, so no client can fail the run's workflow task
    /// with it.
    #[signal(name = "capacity-granted")]
    pub fn capacity_granted(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _input: RawValue) {
        self.granted = true;
    }
}

/// What `RequestCapacity` let the run know before it provisions.
#[derive(Default)]
struct Admission {
    /// The semaphore to release the slot to; `None` when unlimited.
    semaphore: Option<String>,
    /// The provider's deploy timeout, when the workflow-worker told it ([`QUICK_START_PATCH`]).
    deploy_timeout: Option<Duration>,
    /// How often the slot is re-asserted while held ([`CAPACITY_REASSERT_PATCH`]).
    reassert_every: Option<Duration>,
}

/// Asks for a slot and waits for it. Cancelled while waiting: gives the queue place back and
/// ends the run, no compute created.
async fn acquire_capacity(
    ctx: &mut WorkflowContext<TriggerExternalWorkflow>,
    versions: Versions,
) -> Result<Admission, WorkflowTermination> {
    // Detached: whether the request reached the semaphore is always known.
    let request = RequestCapacityInput::default();
    let requested = if versions.quick {
        ctx.execute_local_activity(
            ProvisioningActivities::request_capacity,
            request,
            request_capacity_local_options(),
        )
        .await
    } else {
        ctx.execute_activity(
            ProvisioningActivities::request_capacity,
            request,
            request_capacity_options(),
        )
        .await
    };
    let requested: CapacityRequested = match requested {
        Ok(requested) => requested,
        Err(error) => {
            let message = format!("requesting compute capacity failed: {}", describe(&error));
            return Err(fail(ctx, message));
        }
    };
    let deploy_timeout = requested.deploy_timeout.map(GoDuration::as_duration);
    // A workflow-worker of before told no interval: the default one.
    let reassert_every = versions.reassert.then(|| {
        requested
            .reassert_every
            .map(GoDuration::as_duration)
            .filter(|every| !every.is_zero())
            .unwrap_or(crate::capacity::DEFAULT_CHECK_EVERY)
    });
    let (Some(_), Some(semaphore)) = (requested.cap, requested.semaphore) else {
        return Ok(Admission {
            semaphore: None,
            deploy_timeout,
            reassert_every: None,
        });
    };
    enter(ctx, Phase::WaitingForCapacity);
    let asked_at = ctx.workflow_time();
    let granted = match reassert_every {
        Some(every) => wait_reasserting(ctx, every).await,
        None => ctx.wait_condition(|s| s.granted).await.is_ok(),
    };
    if !granted {
        release_capacity(ctx, &semaphore).await;
        return Err(cancelled(ctx));
    }
    if versions.quick {
        let waited = workflow_time_since(ctx, asked_at);
        ctx.state_mut(|s| s.capacity_waited = waited);
    }
    Ok(Admission {
        semaphore: Some(semaphore),
        deploy_timeout,
        reassert_every,
    })
}

/// [`CAPACITY_REASSERT_PATCH`]: waits for the grant, asking again every `every`; false when
/// the run was cancelled first.
async fn wait_reasserting(ctx: &WorkflowContext<TriggerExternalWorkflow>, every: Duration) -> bool {
    use futures::future::{Either, select};
    use temporalio_sdk::CancellableFuture;

    loop {
        let timer = Box::pin(ctx.timer(every));
        let granted = Box::pin(ctx.wait_condition(|s| s.granted));
        match select(granted, timer).await {
            Either::Left((granted, timer)) => {
                timer.cancel();
                timer.await;
                return granted.is_ok();
            }
            Either::Right((TimerResult::Fired, _)) => reassert(ctx, Reassertion::Waiting).await,
            // Cancelled (a grant that came with it still counts, as without the patch).
            Either::Right(_) => return ctx.state(|s| s.granted),
        }
    }
}

/// [`CAPACITY_REASSERT_PATCH`]: runs `body` (the attempts) while re-asserting the held slot
/// every `every`, cancellation or not (cleanup uses the slot too). A re-assertion still in
/// flight when the body ends is awaited, so that the release comes after it.
async fn hold_reasserting<T>(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    every: Duration,
    body: impl Future<Output = T>,
) -> T {
    use futures::future::{Either, select};
    use temporalio_sdk::{CancellableFuture, TimerOptions};

    let mut body = std::pin::pin!(body);
    loop {
        let options = TimerOptions::builder(every)
            .cancellation_token(WorkflowCancellationToken::new())
            .build();
        let timer = Box::pin(ctx.timer(options));
        match select(body.as_mut(), timer).await {
            Either::Left((end, timer)) => {
                timer.cancel();
                timer.await;
                return end;
            }
            Either::Right(_) => {
                let reasserted = Box::pin(reassert(ctx, Reassertion::Holding));
                if let Either::Left((end, reasserted)) = select(body.as_mut(), reasserted).await {
                    reasserted.await;
                    return end;
                }
            }
        }
    }
}

/// [`CAPACITY_REASSERT_PATCH`]: tells the semaphore again that this run waits or holds a slot
/// (`RequestCapacity` as a local activity, detached from cancellation). A failure only waits for
/// the next time.
async fn reassert(ctx: &WorkflowContext<TriggerExternalWorkflow>, what: Reassertion) {
    let request = RequestCapacityInput {
        reassert: Some(what),
        ..Default::default()
    };
    let asked = ctx
        .execute_local_activity(
            ProvisioningActivities::request_capacity,
            request,
            request_capacity_local_options(),
        )
        .await;
    if let Err(error) = asked
        && !ctx.is_replaying()
    {
        tracing::warn!(?what, error = %describe(&error), "could not re-assert compute capacity; trying again later");
    }
}

/// Gives the slot (or the queue place) back, unless a unit of this run may still exist.
async fn release_capacity(ctx: &mut WorkflowContext<TriggerExternalWorkflow>, semaphore: &str) {
    if ctx.state(|s| s.unit_may_exist) {
        return;
    }
    let run = RunRef {
        workflow_id: ctx.workflow_id().to_owned(),
        run_id: ctx.run_id().to_owned(),
    };
    let options = SignalWorkflowOptions::builder()
        .cancellation_token(WorkflowCancellationToken::new())
        .build();
    let sent = ctx
        .external_workflow(semaphore.to_owned(), None)
        .signal(ComputeCapacity::release, run.to_raw(), options)
        .await;
    if let Err(e) = sent
        && !ctx.is_replaying()
    {
        // The semaphore is gone (then it holds nothing of ours) or unreachable: its liveness
        // check frees the slot once this run has closed.
        tracing::warn!(%semaphore, error = %e, "could not release the compute slot");
    }
}

/// The compute attempts; on success the run's outcome (its final pause still to come).
async fn attempts(
    ctx: &mut WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    versions: Versions,
    deploy_timeout: Option<Duration>,
) -> Result<RunOutcome, WorkflowTermination> {
    let bounded = versions.bounded;
    let max_attempts = input.max_compute_attempts();
    let mut failures: Vec<String> = Vec::new();
    for attempt in 1..=max_attempts {
        if bounded && attempt > 1 && ctx.cancellation_token().is_cancelled() {
            // Cancelled while the lost attempt was torn down: provision nothing more.
            return Err(cancelled(ctx));
        }
        match provision_and_run(ctx, input, attempt, versions, deploy_timeout).await {
            AttemptEnd::Completed(outcome) => return Ok(*outcome),
            AttemptEnd::Cancelled => return Err(cancelled(ctx)),
            AttemptEnd::Fatal(message) => {
                failures.push(message);
                return Err(fail(ctx, failures.join("; then ")));
            }
            AttemptEnd::ComputeLost(message) => {
                if !ctx.is_replaying() {
                    tracing::warn!(attempt, max_attempts, %message, "compute lost; provisioning fresh compute");
                }
                failures.push(format!("attempt {attempt}: {message}"));
            }
        }
    }
    Err(fail(
        ctx,
        format!(
            "gave up after {max_attempts} compute attempt(s), each torn down: {}",
            failures.join("; ")
        ),
    ))
}

/// One attempt: create (or adopt) compute, use it, and delete it whatever happened. Under
/// [`QUICK_START_PATCH`], when the provider's `deploy_timeout` is known beforehand, the job is
/// queued on the compute's queue together with `Create` (see [`QueuedJob`]).
async fn provision_and_run(
    ctx: &mut WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    attempt: u32,
    versions: Versions,
    deploy_timeout: Option<Duration>,
) -> AttemptEnd {
    let heartbeat_timeout = input.heartbeat_timeout();
    let compute_name = naming::compute_name(ctx.run_id(), attempt);
    ctx.state_mut(|s| s.status.attempt = attempt);
    enter(ctx, Phase::Provisioning);
    ctx.state_mut(|s| {
        s.status.compute_name = Some(compute_name.clone());
        s.status.compute_id = None;
        s.status.task_queue = None;
    });
    ctx.state_mut(|s| s.unit_may_exist = true);
    // No unit of this attempt can have been created before now (its name is this attempt's).
    let create_scheduled_at = ctx.workflow_time();
    // Detached from cancellation: the workflow always learns what exists before it decides.
    let create = ctx.execute_activity(
        ProvisioningActivities::create,
        CreateComputeInput {
            compute_name: compute_name.clone(),
            image: ImageRef {
                registry: input.registry.clone(),
                repository: input.repository.clone(),
                tag: input.tag.clone(),
            },
            capacity_waited: if attempt == 1 {
                ctx.state(|s| s.capacity_waited).map(GoDuration)
            } else {
                None
            },
        },
        activity_options(heartbeat_timeout, true),
    );
    // The lifetime limit's cancellation, made before the job so that it covers a queued job.
    let lifetime = ctx.cancellation_token().child_token();
    let (created, queued) = match (versions.quick, deploy_timeout) {
        (true, Some(deploy_timeout)) => {
            let queued = QueuedJob::schedule(
                ctx,
                input,
                &compute_name,
                versions,
                &lifetime,
                deploy_timeout,
            );
            queued.alongside(create).await
        }
        _ => (create.await, None),
    };
    let created: CreatedCompute = match created {
        Ok(created) => created,
        Err(error) => {
            let finished = match queued {
                Some(queued) => queued.withdraw("creating the compute failed").await,
                None => None,
            };
            let finished = finished.filter(|_| versions.keep_finished_job);
            if finished.is_some() {
                // The unit ran the job before its creation was reported failed.
                enter(ctx, Phase::Running);
            }
            // The provider may have stored it before failing: delete by name.
            enter(ctx, Phase::Deprovisioning);
            let cleanup = delete(ctx, &compute_name, None, heartbeat_timeout, None).await;
            let mut message = format!(
                "creating compute {compute_name} failed: {}",
                describe(&error)
            );
            return match (cleanup, finished) {
                (Ok(deleted), Some(job)) => {
                    if !ctx.is_replaying() {
                        tracing::warn!(compute = %compute_name, %message, "the job completed on a unit whose creation failed; keeping its result");
                    }
                    AttemptEnd::Completed(Box::new(RunOutcome {
                        compute_name: compute_name.clone(),
                        compute_id: deleted.compute_id.unwrap_or_default(),
                        task_queue: compute_name,
                        provider: deleted.provider.unwrap_or_default(),
                        job_duration: GoDuration(input.job_duration()),
                        deleted: true,
                        attempts: attempt,
                        job,
                        usage: ctx.state(|s| s.status.usage.clone()),
                    }))
                }
                (Ok(_), None) => AttemptEnd::Fatal(message),
                (Err(cleanup_error), _) => {
                    message.push_str(&format!("; cleanup also failed: {cleanup_error}"));
                    AttemptEnd::Fatal(message)
                }
            };
        }
    };
    let created_at = ctx.workflow_time();
    ctx.state_mut(|s| {
        s.status.compute_id = Some(created.handle.id.clone());
        s.status.task_queue = Some(created.task_queue.clone());
        s.status.provider = Some(created.provider.clone());
    });
    // Findable in the Temporal UI: which provider and compute this run uses.
    let memo = [
        ("provider", Some(MemoValue::new(created.provider.clone()))),
        (
            "compute_name",
            Some(MemoValue::new(created.handle.name.clone())),
        ),
        (
            "compute_id",
            Some(MemoValue::new(created.handle.id.clone())),
        ),
    ];
    if let Err(e) = ctx.upsert_memo(memo)
        && !ctx.is_replaying()
    {
        tracing::warn!(error = %e, "could not record the compute in the run's memo");
    }

    // From here on the compute is always deleted.
    let body = if ctx.cancellation_token().is_cancelled() {
        if let Some(queued) = queued {
            let _ = queued.withdraw("the run was cancelled").await;
        }
        BodyEnd::Cancelled
    } else {
        match (versions.lifetime, created.max_lifetime) {
            (true, Some(limit)) => {
                let limit = limit.as_duration();
                // Measured from `Create`'s scheduling, the limit's timer fires no later than
                // `limit` after the unit's creation, as the sweeper measures it.
                let left = if versions.lifetime_from_create {
                    let spent = workflow_time_since(ctx, create_scheduled_at).unwrap_or_default();
                    limit.saturating_sub(spent)
                } else {
                    limit
                };
                use_compute_within(
                    ctx, input, &created, versions, limit, left, lifetime, queued,
                )
                .await
            }
            _ => use_compute(ctx, input, &created, versions, None, queued).await,
        }
    };

    enter(ctx, Phase::Deprovisioning);
    let lifetime_exceeded = matches!(
        body,
        BodyEnd::Failed {
            lifetime_exceeded: true,
            ..
        }
    );
    let deleted = delete(
        ctx,
        &created.handle.name,
        Some(created.handle.id.clone()),
        heartbeat_timeout,
        lifetime_exceeded.then_some(DeleteReason::LifetimeExceeded),
    )
    .await;

    if deleted.is_ok() {
        record_usage(ctx, &created, created_at);
    }
    match (body, deleted) {
        (_, Err(e)) => AttemptEnd::Fatal(format!("deleting compute {compute_name} failed: {e}")),
        (BodyEnd::Cancelled, Ok(_)) => AttemptEnd::Cancelled,
        (
            BodyEnd::Failed {
                message,
                fresh_compute_helps: true,
                ..
            },
            Ok(_),
        ) => AttemptEnd::ComputeLost(message),
        (BodyEnd::Failed { message, .. }, Ok(_)) => AttemptEnd::Fatal(message),
        (BodyEnd::Completed(job), Ok(_)) => AttemptEnd::Completed(Box::new(RunOutcome {
            compute_name: created.handle.name.clone(),
            compute_id: created.handle.id.clone(),
            task_queue: created.task_queue.clone(),
            provider: created.provider.clone(),
            job_duration: GoDuration(input.job_duration()),
            deleted: true,
            attempts: attempt,
            job,
            usage: ctx.state(|s| s.status.usage.clone()),
        })),
    }
}

/// [`use_compute`] within the unit's lifetime `limit`, of which `left` remains: when the
/// lifetime timer fires first, the deployment wait or the job is cancelled, and the attempt
/// fails for good (fresh compute would only hit the same limit).
/// `lifetime` is a child of the run's cancellation (and the parent of a queued job's).
#[allow(clippy::too_many_arguments)]
async fn use_compute_within(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    created: &CreatedCompute,
    versions: Versions,
    limit: Duration,
    left: Duration,
    lifetime: WorkflowCancellationToken,
    queued: Option<QueuedJob<'_>>,
) -> BodyEnd {
    use futures::future::{Either, select};
    use temporalio_sdk::CancellableFuture;

    let timer = Box::pin(ctx.timer(left));
    let body = Box::pin(use_compute(
        ctx,
        input,
        created,
        versions,
        Some(&lifetime),
        queued,
    ));
    match select(body, timer).await {
        Either::Left((body, timer)) => {
            timer.cancel();
            timer.await;
            body
        }
        Either::Right((TimerResult::Fired, body)) => {
            lifetime.cancel_with_reason("the compute reached its maximum lifetime");
            match body.await {
                BodyEnd::Completed(job) => BodyEnd::Completed(job),
                _ if ctx.cancellation_token().is_cancelled() => BodyEnd::Cancelled,
                _ => BodyEnd::Failed {
                    message: format!(
                        "exceeded the maximum compute lifetime of {}",
                        humantime::format_duration(limit)
                    ),
                    fresh_compute_helps: false,
                    lifetime_exceeded: true,
                },
            }
        }
        // The run was cancelled: the body sees it too.
        Either::Right((_, body)) => body.await,
    }
}

/// Adds how long the deleted unit existed (workflow time, so the same on replay) and its
/// estimated cost to the run's usage.
fn record_usage(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    created: &CreatedCompute,
    created_at: Option<std::time::SystemTime>,
) {
    let seconds = workflow_time_since(ctx, created_at).map_or(0.0, |d| d.as_secs_f64());
    let usage = tea_contract::UnitUsage {
        compute_name: created.handle.name.clone(),
        provider: created.provider.clone(),
        seconds,
        estimated_cost_usd: created.usd_per_second.map(|price| price * seconds),
    };
    ctx.state_mut(|s| s.status.usage.push(usage));
}

/// Workflow time from `from` to now (the same on replay); `None` when either is unknown.
fn workflow_time_since(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    from: Option<std::time::SystemTime>,
) -> Option<Duration> {
    from.zip(ctx.workflow_time())
        .and_then(|(from, to)| to.duration_since(from).ok())
}

/// Waits until the compute is ready, then runs the job on its unique queue (under
/// [`QUICK_START_PATCH`]: both at once, the job perhaps already `queued` with `Create`).
/// `cancel`, when given, cancels the wait and the job instead of the run's own cancellation.
async fn use_compute(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    created: &CreatedCompute,
    versions: Versions,
    cancel: Option<&WorkflowCancellationToken>,
    queued: Option<QueuedJob<'_>>,
) -> BodyEnd {
    let bounded = versions.bounded;
    let heartbeat_timeout = input.heartbeat_timeout();
    enter(ctx, Phase::Deploying);
    let mut wait_options = activity_options(heartbeat_timeout, false);
    let deploy_timeout = created.deploy_timeout.map(GoDuration::as_duration);
    if let (true, Some(deploy_timeout)) = (bounded, deploy_timeout) {
        // Retries included, the wait ends by then: a deployment that never finishes is lost.
        let schedule_to_close = deploy_timeout + input.worker_start_timeout() + DEADLINE_MARGIN;
        wait_options.close_timeouts = ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close,
            start_to_close: START_TO_CLOSE.min(schedule_to_close),
        };
    }
    let wait_input = WaitForComputeInput {
        handle: created.handle.clone(),
        task_queue: created.task_queue.clone(),
        heartbeat_timeout: GoDuration(heartbeat_timeout),
        worker_start_timeout: GoDuration(input.worker_start_timeout()),
    };
    if versions.quick {
        let queued = match queued.map(|queued| (queued.job, queued.token)) {
            // It ended before `Create` returned: nothing to wait for.
            Some((QueuedJobState::Ended(job), _)) => {
                if job.is_ok() {
                    enter(ctx, Phase::Running);
                }
                return job_end(ctx, *job);
            }
            Some((QueuedJobState::Queued(job), token)) => Some((job, token)),
            None => None,
        };
        let parent = cancel.cloned().unwrap_or_else(|| ctx.cancellation_token());
        let wait_token = parent.child_token();
        wait_options.cancellation_token = Some(wait_token.clone());
        let wait = ctx.execute_activity(
            ProvisioningActivities::wait_for_app_build,
            wait_input,
            wait_options,
        );
        let (job, job_token) = match queued {
            Some(queued) => queued,
            None => {
                // The job waits in the queue while the compute deploys: it may wait that long
                // too.
                let may_wait =
                    deploy_timeout.unwrap_or(Duration::ZERO) + input.worker_start_timeout();
                let token = parent.child_token();
                let job = run_job(
                    ctx,
                    input,
                    &created.task_queue,
                    versions,
                    Some(token.clone()),
                    may_wait,
                );
                (job, token)
            }
        };
        return wait_and_run_together(ctx, Box::pin(wait), job, &wait_token, &job_token).await;
    }

    wait_options.cancellation_token = cancel.cloned();
    let ready = ctx
        .execute_activity(
            ProvisioningActivities::wait_for_app_build,
            wait_input,
            wait_options,
        )
        .await;
    if let Err(error) = ready {
        // A deployment that failed or a worker that never polled: fresh compute may work.
        return body_error(ctx, "the compute did not become ready", error, true);
    }

    enter(ctx, Phase::Running);
    let job = run_job(
        ctx,
        input,
        &created.task_queue,
        versions,
        cancel.cloned(),
        input.worker_start_timeout(),
    )
    .await;
    job_end(ctx, job)
}

/// [`QUICK_START_PATCH`]: `WaitForAppBuild` and the job, scheduled in the same workflow task.
/// The job starts when the compute's worker polls, whether or not the wait has noticed yet;
/// a failed wait cancels the job (unless it has already completed), an ended job cancels the
/// wait. Each token cancels its own activity.
async fn wait_and_run_together<W, J>(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    wait: W,
    job: J,
    wait_token: &WorkflowCancellationToken,
    job_token: &WorkflowCancellationToken,
) -> BodyEnd
where
    W: Future<Output = Result<WaitProgress, ActivityExecutionError>> + Unpin,
    J: Future<Output = Result<Option<CommandResult>, ActivityExecutionError>> + Unpin,
{
    use futures::future::{Either, select};

    match select(wait, job).await {
        Either::Left((Ok(_), job)) => {
            enter(ctx, Phase::Running);
            job_end(ctx, job.await)
        }
        Either::Left((Err(error), job)) => {
            job_token.cancel_with_reason("the compute did not become ready");
            match job.await {
                // It finished meanwhile: the run has what it came for.
                Ok(result) => {
                    enter(ctx, Phase::Running);
                    BodyEnd::Completed(result)
                }
                // A deployment that failed or a worker that never polled: fresh compute may
                // work.
                Err(_) => body_error(ctx, "the compute did not become ready", error, true),
            }
        }
        Either::Right((job, wait)) => {
            wait_token.cancel_with_reason("the job has ended");
            // Its end (cancelled, or ready meanwhile) changes nothing.
            let _ = wait.await;
            if job.is_ok() {
                enter(ctx, Phase::Running);
            }
            job_end(ctx, job)
        }
    }
}

/// The job's result: the user's command's, or none for the original's timed job.
type JobResult = Result<Option<CommandResult>, ActivityExecutionError>;

/// [`QUICK_START_PATCH`]: the attempt's job, queued on the compute's queue (named after the
/// compute, so known before `Create`) in the same workflow task as `Create`: it starts the
/// moment the new worker polls, while the workflow still learns what `Create` made.
///
/// It may wait in the queue for `Create` (up to [`DEADLINE_MARGIN`]), the deployment and the
/// worker's start. A `Create` that fails, or a run cancelled meanwhile, withdraws it (cancels
/// it and awaits its end) before the unit is deleted by name; a job that ends before `Create`
/// returns is kept until then. Its cancellation is a child of the attempt's lifetime limit.
struct QueuedJob<'a> {
    job: QueuedJobState<'a>,
    token: WorkflowCancellationToken,
}

enum QueuedJobState<'a> {
    Queued(futures::future::LocalBoxFuture<'a, JobResult>),
    Ended(Box<JobResult>),
}

impl<'a> QueuedJob<'a> {
    /// Schedules the job now (call it right after scheduling `Create`).
    fn schedule(
        ctx: &'a WorkflowContext<TriggerExternalWorkflow>,
        input: &WorkflowInput,
        task_queue: &str,
        versions: Versions,
        lifetime: &WorkflowCancellationToken,
        deploy_timeout: Duration,
    ) -> Self {
        let token = lifetime.child_token();
        let may_wait = DEADLINE_MARGIN + deploy_timeout + input.worker_start_timeout();
        let job = run_job(
            ctx,
            input,
            task_queue,
            versions,
            Some(token.clone()),
            may_wait,
        );
        Self {
            job: QueuedJobState::Queued(job),
            token,
        }
    }

    /// Awaits `create` with the job in flight.
    async fn alongside<C: Future>(self, create: C) -> (C::Output, Option<Self>) {
        use futures::future::{Either, select};

        let QueuedJobState::Queued(job) = self.job else {
            return (create.await, Some(self));
        };
        let (created, job) = match select(Box::pin(create), job).await {
            Either::Left((created, job)) => (created, QueuedJobState::Queued(job)),
            Either::Right((ended, create)) => {
                (create.await, QueuedJobState::Ended(Box::new(ended)))
            }
        };
        let token = self.token;
        (created, Some(Self { job, token }))
    }

    /// Cancels the job, unless it has ended, and waits until it has; the job's result when
    /// it completed all the same (before or while it was withdrawn).
    async fn withdraw(self, reason: &str) -> Option<Option<CommandResult>> {
        let ended = match self.job {
            QueuedJobState::Queued(job) => {
                self.token.cancel_with_reason(reason);
                job.await
            }
            QueuedJobState::Ended(job) => *job,
        };
        ended.ok()
    }
}

/// The job on the compute's queue: the user's command, or the original's timed job. It may
/// wait `may_wait` in the queue for the compute's worker; `cancel`, when given, replaces the
/// run's own cancellation.
fn run_job<'a>(
    ctx: &'a WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    task_queue: &str,
    versions: Versions,
    cancel: Option<WorkflowCancellationToken>,
    may_wait: Duration,
) -> futures::future::LocalBoxFuture<'a, JobResult> {
    use futures::FutureExt;

    let heartbeat_timeout = input.heartbeat_timeout();
    let mut job_options = activity_options(heartbeat_timeout, false);
    job_options.task_queue = Some(task_queue.to_owned());
    job_options.schedule_to_start_timeout = Some(may_wait);
    job_options.cancellation_type = ActivityCancellationType::TryCancel;
    if versions.bounded {
        // A job of many hours must not time out at the original's fixed hour.
        job_options.close_timeouts =
            ActivityCloseTimeouts::StartToClose(input.job_start_to_close());
    }
    // Retrying on the same queue cannot outlive a dead worker (nobody polls it any more): the
    // workflow retries the job on fresh compute instead.
    job_options.retry_policy = Some(RetryPolicy::builder().maximum_attempts(1).build());
    job_options.cancellation_token = cancel;
    match (&input.command, versions.commands) {
        (Some(command), true) => {
            // The compute is deleted only once the job's processes are gone.
            job_options.cancellation_type = ActivityCancellationType::WaitCancellationCompleted;
            let job = ctx.execute_activity(
                ExternalActivities::run_command,
                CommandJob {
                    command: command.clone(),
                    env: input.env.clone().unwrap_or_default(),
                    workdir: input.workdir.clone(),
                    heartbeat_timeout: GoDuration(heartbeat_timeout),
                },
                job_options,
            );
            async move { job.await.map(Some) }.boxed_local()
        }
        _ => {
            let job = ctx.execute_activity(
                ExternalActivities::long_running_command,
                (
                    GoDuration(input.job_duration()),
                    GoDuration(heartbeat_timeout),
                ),
                job_options,
            );
            async move { job.await.map(|()| None) }.boxed_local()
        }
    }
}

/// What the job's result means for the attempt.
fn job_end(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    job: Result<Option<CommandResult>, ActivityExecutionError>,
) -> BodyEnd {
    match job {
        Ok(result) => BodyEnd::Completed(result),
        Err(error) => {
            // The job gave up (its command failed, or its arguments were refused): fresh
            // compute would fail the same way.
            let job_gave_up = matches!(
                error.cause(),
                Some(IncomingError::Application(failure)) if failure.is_non_retryable()
            );
            body_error(ctx, "the external job failed", error, !job_gave_up)
        }
    }
}

fn body_error(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    what: &str,
    error: ActivityExecutionError,
    fresh_compute_helps: bool,
) -> BodyEnd {
    if ctx.cancellation_token().is_cancelled()
        || matches!(error, ActivityExecutionError::Cancelled(_))
    {
        BodyEnd::Cancelled
    } else {
        BodyEnd::Failed {
            message: format!("{what}: {}", describe(&error)),
            fresh_compute_helps,
            lifetime_exceeded: false,
        }
    }
}

/// The most specific message in an activity failure chain.
fn describe(error: &ActivityExecutionError) -> String {
    let Some(failure) = error.failure() else {
        return error.to_string();
    };
    let mut message = failure.message.clone();
    let mut cause = failure.cause.as_deref();
    while let Some(inner) = cause {
        if !inner.message.is_empty() {
            message = format!("{message}: {}", inner.message);
        }
        cause = inner.cause.as_deref();
    }
    message
}

async fn delete(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    compute_name: &str,
    compute_id: Option<String>,
    heartbeat_timeout: Duration,
    reason: Option<DeleteReason>,
) -> Result<DeletedCompute, String> {
    let deleted = ctx
        .execute_activity(
            ProvisioningActivities::delete,
            DeleteComputeInput {
                compute_name: compute_name.to_owned(),
                compute_id,
                reason,
            },
            delete_options(heartbeat_timeout),
        )
        .await
        .map_err(|e| describe(&e));
    if deleted.is_ok() {
        ctx.state_mut(|s| s.unit_may_exist = false);
    }
    deleted
}

/// Sleeps on a workflow timer; false when the workflow was cancelled meanwhile.
async fn pause(ctx: &mut WorkflowContext<TriggerExternalWorkflow>, duration: Duration) -> bool {
    if duration.is_zero() {
        return !ctx.cancellation_token().is_cancelled();
    }
    matches!(ctx.timer(duration).await, TimerResult::Fired)
}

fn cancelled(ctx: &mut WorkflowContext<TriggerExternalWorkflow>) -> WorkflowTermination {
    enter(ctx, Phase::Cancelled);
    WorkflowTermination::cancelled()
}

/// Moves the run to `phase`, recording when (workflow time, deterministic on replay).
fn enter(ctx: &WorkflowContext<TriggerExternalWorkflow>, phase: Phase) {
    let at = ctx
        .workflow_time()
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_default();
    ctx.state_mut(|s| {
        s.status.phase = phase;
        s.status.phase_history.push(PhaseEntry {
            phase,
            attempt: s.status.attempt,
            at,
        });
    });
}

fn fail(
    ctx: &mut WorkflowContext<TriggerExternalWorkflow>,
    message: String,
) -> WorkflowTermination {
    ctx.state_mut(|s| s.status.error = Some(message.clone()));
    enter(ctx, Phase::Failed);
    WorkflowTermination::failed_application(ApplicationFailure::non_retryable(anyhow::anyhow!(
        message
    )))
}
