//! A run's admission under `MAX_CONCURRENT_COMPUTE`: it asks its owner's capacity semaphore
//! ([`crate::capacity`]) for a slot before its first `Create`, waits for `capacity-granted`,
//! holds the slot across its attempts and gives it back once its last unit is confirmed
//! deleted.
//!
//! The semaphore is soft state; the run is the truth. Every `CAPACITY_CHECK_INTERVAL` (told by
//! `RequestCapacity`, so recorded in history) a waiting run asks again (a queue entry lost to a
//! reset of the run, a terminated semaphore or one served elsewhere is made again), and a
//! holding run re-asserts its slot (`holding`: a semaphore that lost its state counts it), from
//! the grant until the release, through cancellation and cleanup. A run whose `Delete` failed
//! keeps its slot (the unit may still exist); the semaphore's liveness check frees it once the
//! run has closed.

use std::time::Duration;

use futures::future::{Either, select};
use tea_contract::WorkflowInput;
use temporalio_common::{
    error::IncomingError, protos::temporal::api::failure::v1::failure::FailureInfo,
};
use temporalio_sdk::{
    ActivityExecutionError, CancellableFuture, SignalWorkflowOptions, TimerOptions, TimerResult,
    WorkflowCancellationToken, WorkflowContext, WorkflowTermination,
};

use super::options::request_capacity_options;
use super::{
    Phase, TriggerExternalWorkflow, cancelled, describe, enter, fail, workflow_time_since,
};
use crate::capacity::{
    CapacityActivities, CapacityRequested, ComputeCapacity, DEFAULT_CHECK_EVERY, Reassertion,
    RequestCapacityInput, RunRef, resources::RESOURCES_REFUSED,
};

/// What `RequestCapacity` let the run know before it provisions.
pub(super) struct Admission {
    /// The slot the run holds; `None` when compute is not capped.
    pub slot: Option<HeldSlot>,
    /// How long the workflow-worker's provider may take to deploy a unit.
    pub deploy_timeout: Duration,
}

/// A slot of the owner's semaphore, held by this run.
pub(super) struct HeldSlot {
    /// The semaphore's workflow ID, to release the slot to.
    pub semaphore: String,
    /// How often the slot is re-asserted while held.
    pub reassert_every: Duration,
}

/// Asks for a slot (when compute is capped) and waits for it. Cancelled while waiting: gives
/// the queue place back and ends the run, no compute created.
pub(super) async fn admit(
    ctx: &mut WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
) -> Result<Admission, WorkflowTermination> {
    let request = RequestCapacityInput {
        reassert: None,
        resources: input.resources.clone().filter(|r| !r.is_empty()),
    };
    let requested = ctx
        .execute_local_activity(
            CapacityActivities::request_capacity,
            request,
            request_capacity_options(),
        )
        .await;
    let requested: CapacityRequested = match requested {
        Ok(requested) => requested,
        Err(error) => {
            let message = match refusal(&error) {
                // The run's resources cannot be had: say which, nothing else.
                Some(refused) => refused,
                None => format!("requesting compute capacity failed: {}", describe(&error)),
            };
            return Err(fail(ctx, message));
        }
    };
    let deploy_timeout = requested.deploy_timeout.as_duration();
    let Some(slot) = requested.slot else {
        return Ok(Admission {
            slot: None,
            deploy_timeout,
        });
    };
    let reassert_every = match slot.reassert_every.as_duration() {
        every if every.is_zero() => DEFAULT_CHECK_EVERY,
        every => every,
    };
    enter(ctx, Phase::WaitingForCapacity);
    let asked_at = ctx.workflow_time();
    if !wait_reasserting(ctx, reassert_every).await {
        release(ctx, &slot.semaphore).await;
        return Err(cancelled(ctx));
    }
    let waited = workflow_time_since(ctx, asked_at);
    ctx.state_mut(|s| s.capacity_waited = waited);
    Ok(Admission {
        slot: Some(HeldSlot {
            semaphore: slot.semaphore,
            reassert_every,
        }),
        deploy_timeout,
    })
}

/// The message of a refusal of the run's `resources` by `RequestCapacity`, if `error` is one
/// (a local activity's failure is the application failure itself, or wraps it).
fn refusal(error: &ActivityExecutionError) -> Option<String> {
    if let Some(failure) = error.failure()
        && let Some(FailureInfo::ApplicationFailureInfo(info)) = &failure.failure_info
        && info.r#type == RESOURCES_REFUSED
    {
        return Some(failure.message.clone());
    }
    match error.cause() {
        Some(IncomingError::Application(failure))
            if failure.type_name() == Some(RESOURCES_REFUSED) =>
        {
            Some(failure.to_string())
        }
        _ => None,
    }
}

/// Waits for the grant, asking again every `every`; false when the run was cancelled first
/// (a grant that came with the cancellation still counts).
async fn wait_reasserting(ctx: &WorkflowContext<TriggerExternalWorkflow>, every: Duration) -> bool {
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
            Either::Right(_) => return ctx.state(|s| s.granted),
        }
    }
}

/// Runs `body` (the attempts) while re-asserting the held slot every `every`, cancellation or
/// not (cleanup uses the slot too). A re-assertion still in flight when the body ends is
/// awaited, so that the release comes after it.
pub(super) async fn hold_reasserting<T>(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    every: Duration,
    body: impl Future<Output = T>,
) -> T {
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

/// Tells the semaphore again that this run waits or holds a slot (`RequestCapacity` as a local
/// activity, detached from cancellation). A failure only waits for the next time.
async fn reassert(ctx: &WorkflowContext<TriggerExternalWorkflow>, what: Reassertion) {
    let request = RequestCapacityInput {
        reassert: Some(what),
        resources: None,
    };
    let asked = ctx
        .execute_local_activity(
            CapacityActivities::request_capacity,
            request,
            request_capacity_options(),
        )
        .await;
    if let Err(error) = asked
        && !ctx.is_replaying()
    {
        tracing::warn!(?what, error = %describe(&error), "could not re-assert compute capacity; trying again later");
    }
}

/// Gives the slot (or the queue place) back, unless a unit of this run may still exist.
pub(super) async fn release(ctx: &mut WorkflowContext<TriggerExternalWorkflow>, semaphore: &str) {
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
