//! The run's attempts, each on a fresh unit of compute: create (or adopt) it, use it within its
//! lifetime, and delete it whatever happened.
//!
//! `Create` runs detached from workflow cancellation (so the workflow always learns what
//! exists), and once it has returned every path goes through `Delete`, also detached. A create
//! that failed after the provider stored the unit is covered by deleting by name; a job that
//! completed on such a unit is still the run's result.

use std::time::{Duration, SystemTime};

use futures::future::{Either, select};
use tea_compute::{ImageRef, naming};
use tea_contract::{GoDuration, UnitUsage, WorkflowInput};
use temporalio_sdk::{
    ActivityExecutionError, CancellableFuture, MemoValue, TimerResult, WorkflowCancellationToken,
    WorkflowContext, WorkflowTermination,
};

use super::job::{OwnFailure, QueuedJob, use_compute};
use super::options::{activity_options, delete_options};
use super::resume;
use super::{
    BodyEnd, Phase, RunOutcome, TriggerExternalWorkflow, cancelled, describe, enter, fail,
    fail_as_activity, workflow_time_since,
};
use crate::activities::{
    CreateComputeInput, CreatedCompute, DeleteComputeInput, DeleteReason, DeletedCompute,
    ProvisioningActivities,
};

/// How one compute attempt ended.
enum AttemptEnd {
    Completed(Box<RunOutcome>),
    Cancelled,
    /// The compute died or never became ready; it has been deleted: try fresh compute.
    ComputeLost(String),
    /// Retrying on fresh compute cannot help (or cleanup failed): fail the run (with the
    /// user's own activity's failure, when that is why).
    Fatal(String, Option<Box<OwnFailure>>),
}

/// The compute attempts; on success the run's outcome (its final pause still to come).
pub(super) async fn attempts(
    ctx: &mut WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    deploy_timeout: Duration,
) -> Result<RunOutcome, WorkflowTermination> {
    let max_attempts = input.max_compute_attempts();
    let mut failures: Vec<String> = Vec::new();
    for attempt in 1..=max_attempts {
        if attempt > 1 && ctx.cancellation_token().is_cancelled() {
            // Cancelled while the lost attempt was torn down: provision nothing more.
            return Err(cancelled(ctx));
        }
        match provision_and_run(ctx, input, attempt, deploy_timeout).await {
            AttemptEnd::Completed(outcome) => return Ok(*outcome),
            AttemptEnd::Cancelled => return Err(cancelled(ctx)),
            AttemptEnd::Fatal(message, own_failure) => {
                failures.push(message);
                let message = failures.join("; then ");
                return Err(match own_failure {
                    Some(failure) => fail_as_activity(ctx, message, *failure),
                    None => fail(ctx, message),
                });
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

/// One attempt: create (or adopt) compute with the job queued beside it, use it, and delete it
/// whatever happened.
async fn provision_and_run(
    ctx: &mut WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    attempt: u32,
    deploy_timeout: Duration,
) -> AttemptEnd {
    let heartbeat_timeout = input.heartbeat_timeout();
    let compute_name = naming::compute_name(ctx.run_id(), attempt);
    ctx.state_mut(|s| s.status.attempt = attempt);
    enter(ctx, Phase::Provisioning);
    ctx.state_mut(|s| {
        s.status.compute_name = Some(compute_name.clone());
        s.status.compute_id = None;
        s.status.task_queue = None;
        s.unit_may_exist = true;
    });
    let resume = resume::for_attempt(ctx, attempt);
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
            resumes_job: resume.kind().map(str::to_owned),
            resources: input.resources.clone().filter(|r| !r.is_empty()),
        },
        activity_options(heartbeat_timeout, true),
    );
    // The lifetime limit's cancellation, made before the job so that it covers the queued job.
    let lifetime = ctx.cancellation_token().child_token();
    let queued = QueuedJob::schedule(
        ctx,
        input,
        &compute_name,
        &lifetime,
        deploy_timeout,
        &resume,
    );
    let (created, queued) = queued.alongside(create).await;
    let created: CreatedCompute = match created {
        Ok(created) => created,
        Err(error) => {
            return create_failed(ctx, input, attempt, &compute_name, error, queued).await;
        }
    };
    let created_at = ctx.workflow_time();
    ctx.state_mut(|s| {
        s.status.compute_id = Some(created.handle.id.clone());
        s.status.task_queue = Some(created.task_queue.clone());
        s.status.provider = Some(created.provider.clone());
    });
    record_in_memo(ctx, &created);

    // From here on the compute is always deleted.
    let body = if ctx.cancellation_token().is_cancelled() {
        let _ = queued.withdraw("the run was cancelled").await;
        BodyEnd::Cancelled
    } else {
        match created.max_lifetime {
            Some(limit) => {
                let limit = limit.as_duration();
                // Measured from `Create`'s scheduling, the limit's timer fires no later than
                // `limit` after the unit's creation, as the sweeper measures it.
                let spent = workflow_time_since(ctx, create_scheduled_at).unwrap_or_default();
                let left = limit.saturating_sub(spent);
                use_compute_within(ctx, input, &created, limit, left, lifetime, queued).await
            }
            None => use_compute(ctx, input, &created, None, queued).await,
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
        (_, Err(e)) => {
            AttemptEnd::Fatal(format!("deleting compute {compute_name} failed: {e}"), None)
        }
        (BodyEnd::Cancelled, Ok(_)) => AttemptEnd::Cancelled,
        (
            BodyEnd::Failed {
                message,
                fresh_compute_helps: true,
                ..
            },
            Ok(_),
        ) => AttemptEnd::ComputeLost(message),
        (
            BodyEnd::Failed {
                message,
                own_failure,
                ..
            },
            Ok(_),
        ) => AttemptEnd::Fatal(message, own_failure),
        (BodyEnd::Completed(job), Ok(_)) => AttemptEnd::Completed(Box::new(RunOutcome {
            compute_name: created.handle.name.clone(),
            compute_id: created.handle.id.clone(),
            task_queue: created.task_queue.clone(),
            provider: created.provider.clone(),
            job_duration: configured_job_duration(input),
            deleted: true,
            attempts: attempt,
            job,
            usage: ctx.state(|s| s.status.usage.clone()),
        })),
    }
}

/// `Create` failed for good: withdraws the queued job and deletes the unit by name (the
/// provider may have stored it before failing). A job that completed on it all the same is
/// the run's result.
async fn create_failed(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    attempt: u32,
    compute_name: &str,
    error: ActivityExecutionError,
    queued: QueuedJob<'_>,
) -> AttemptEnd {
    let finished = queued.withdraw("creating the compute failed").await;
    if finished.is_some() {
        // The unit ran the job before its creation was reported failed.
        enter(ctx, Phase::Running);
    }
    enter(ctx, Phase::Deprovisioning);
    let heartbeat_timeout = input.heartbeat_timeout();
    let cleanup = delete(ctx, compute_name, None, heartbeat_timeout, None).await;
    let mut message = format!(
        "creating compute {compute_name} failed: {}",
        describe(&error)
    );
    match (cleanup, finished) {
        (Ok(deleted), Some(job)) => {
            if !ctx.is_replaying() {
                tracing::warn!(compute = %compute_name, %message, "the job completed on a unit whose creation failed; keeping its result");
            }
            AttemptEnd::Completed(Box::new(RunOutcome {
                compute_name: compute_name.to_owned(),
                compute_id: deleted.compute_id.unwrap_or_default(),
                task_queue: compute_name.to_owned(),
                provider: deleted.provider,
                job_duration: configured_job_duration(input),
                deleted: true,
                attempts: attempt,
                job,
                usage: ctx.state(|s| s.status.usage.clone()),
            }))
        }
        (Ok(_), None) => AttemptEnd::Fatal(message, None),
        (Err(cleanup_error), _) => {
            message.push_str(&format!("; cleanup also failed: {cleanup_error}"));
            AttemptEnd::Fatal(message, None)
        }
    }
}

/// The job's configured duration, for the run's result: the timed job's `job_duration` (also
/// given for a command, as it always was), an own activity's start-to-close.
fn configured_job_duration(input: &WorkflowInput) -> GoDuration {
    match input.activity {
        Some(_) => GoDuration(input.job_time()),
        None => GoDuration(input.job_duration()),
    }
}

/// Findable in the Temporal UI: which provider and unit this run uses.
fn record_in_memo(ctx: &WorkflowContext<TriggerExternalWorkflow>, created: &CreatedCompute) {
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
}

/// [`use_compute`] within the unit's lifetime `limit`, of which `left` remains: when the
/// lifetime timer fires first, the deployment wait or the job is cancelled, and the attempt
/// fails for good (fresh compute would only hit the same limit). `lifetime` is a child of the
/// run's cancellation (and the parent of the queued job's).
async fn use_compute_within(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    created: &CreatedCompute,
    limit: Duration,
    left: Duration,
    lifetime: WorkflowCancellationToken,
    queued: QueuedJob<'_>,
) -> BodyEnd {
    let timer = Box::pin(ctx.timer(left));
    let body = Box::pin(use_compute(ctx, input, created, Some(&lifetime), queued));
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
                    own_failure: None,
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
    created_at: Option<SystemTime>,
) {
    let seconds = workflow_time_since(ctx, created_at).map_or(0.0, |d| d.as_secs_f64());
    let usage = UnitUsage {
        compute_name: created.handle.name.clone(),
        provider: created.provider.clone(),
        seconds,
        estimated_cost_usd: created.usd_per_second.map(|price| price * seconds),
        size: created.unit_size.clone(),
    };
    ctx.state_mut(|s| s.status.usage.push(usage));
}

/// Deletes the unit (by ID when known, else by name) and confirms it is gone.
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
