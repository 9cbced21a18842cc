//! `TriggerExternalWorkflow`: pause, provision compute, run the job on the compute's unique
//! queue, and deprovision the compute whatever happened: success, failure or cancellation.
//!
//! This module holds the run's entry, its status query and the capacity grant; the parts of a
//! run live beside it:
//! - [`admission`]: the slot under `MAX_CONCURRENT_COMPUTE`, asked for, held and released;
//! - [`attempt`]: each attempt on a fresh unit, from `Create` to `Delete`, within its lifetime;
//! - [`job`]: the job queued beside `Create` and raced against the readiness wait;
//! - [`resume`]: where a job resumes on a fresh unit after its unit was lost;
//! - [`options`]: how each activity is called (timeouts, retries, cancellation).
//!
//! Versioning: runs last hours, and a workflow-worker deployed while they are in flight
//! replays their histories with the new code. This is the baseline of the first release
//! (0.1.0): it calls no patch. Every later change to the command sequence is guarded by a
//! patch (`ctx.patched(ID)`: true for runs that first executed the new code, false on replay
//! of older histories, which keep the old behaviour) or shipped with Worker Deployment
//! Versioning (runs pinned to the build that started them, see [`crate::versioning`]). The
//! replay tests (`tests/replay.rs`) replay recorded histories of every path of the baseline;
//! CONTRIBUTING.md, "Changing the workflow", says how to ship a change.

mod admission;
mod attempt;
mod job;
pub(crate) mod options;
mod resume;

use std::time::{Duration, SystemTime};

use tea_contract::{JobOutcome, WorkflowInput};
use temporalio_common::data_converters::RawValue;

use job::OwnFailure;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ApplicationFailure, SyncWorkflowContext, TimerResult, WorkflowContext,
    WorkflowContextView, WorkflowResult, WorkflowTermination,
};

pub(crate) use options::provider_call_retry_policy;
// What clients see of a run lives in the contract, so that a client needs no workflow code.
pub use tea_contract::{Phase, PhaseEntry, RunOutcome, RunStatus};

#[workflow]
#[derive(Default)]
pub struct TriggerExternalWorkflow {
    status: RunStatus,
    /// The capacity semaphore granted this run a slot.
    granted: bool,
    /// A unit of compute of this run may exist (from `Create` until a `Delete` succeeded).
    unit_may_exist: bool,
    /// How long this run waited for its slot (told to its first `Create`, which counts it).
    capacity_waited: Option<Duration>,
    /// Where the next attempt's job resumes, after a lost unit's job recorded where it was.
    resume: Option<resume::ResumePoint>,
}

/// How the part of an attempt between create and delete ended.
enum BodyEnd {
    /// With the user's command's or own activity's result, when the run had one.
    Completed(Option<JobOutcome>),
    Cancelled,
    Failed {
        message: String,
        fresh_compute_helps: bool,
        /// The compute reached its maximum lifetime: its teardown is a lifetime kill.
        lifetime_exceeded: bool,
        /// The user's own activity failed: its failure becomes the run's.
        own_failure: Option<Box<OwnFailure>>,
    },
}

#[workflow_methods]
impl TriggerExternalWorkflow {
    #[run(name = "TriggerExternalWorkflow")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: RawValue,
    ) -> WorkflowResult<RunOutcome> {
        // Decoded here, not by the SDK: bad input from any client fails the run at once
        // instead of failing workflow tasks forever (see `tea_contract::input`).
        let input = match WorkflowInput::from_payloads(&input.payloads) {
            Ok(input) => input,
            Err(message) => return Err(fail(ctx, message)),
        };
        enter(ctx, Phase::Waiting);
        if !pause(ctx, input.pause()).await {
            return Err(cancelled(ctx));
        }
        let admission = admission::admit(ctx, &input).await?;
        let end = match &admission.slot {
            Some(slot) => {
                let holder = ctx.clone();
                let body = attempt::attempts(ctx, &input, admission.deploy_timeout);
                admission::hold_reasserting(&holder, slot.reassert_every, body).await
            }
            None => attempt::attempts(ctx, &input, admission.deploy_timeout).await,
        };
        if let Some(slot) = admission.slot {
            admission::release(ctx, &slot.semaphore).await;
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

    /// The capacity semaphore gives this run a slot (see [`crate::capacity`]; its name is
    /// [`crate::capacity::GRANTED_SIGNAL`]). It has no argument; any is accepted and ignored,
    /// so no client can fail the run's workflow task with it.
    #[signal(name = "capacity-granted")]
    pub fn capacity_granted(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _input: RawValue) {
        self.granted = true;
    }
}

/// Workflow time from `from` to now (the same on replay); `None` when either is unknown.
fn workflow_time_since(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    from: Option<SystemTime>,
) -> Option<Duration> {
    from.zip(ctx.workflow_time())
        .and_then(|(from, to)| to.duration_since(from).ok())
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

/// Fails the run with the user's own activity's failure: its type, message, details and
/// non-retryable flag (`message`, with what the run went through, is the status's error).
fn fail_as_activity(
    ctx: &mut WorkflowContext<TriggerExternalWorkflow>,
    message: String,
    failure: OwnFailure,
) -> WorkflowTermination {
    let OwnFailure { summary, details } = failure;
    let run_failure = ApplicationFailure::builder(summary.message.clone())
        .maybe_type_name(Some(summary.failure_type.clone()).filter(|t| !t.is_empty()))
        .non_retryable(summary.non_retryable)
        .maybe_details((!details.is_empty()).then(|| RawValue::new(details)))
        .build();
    ctx.state_mut(|s| {
        s.status.error = Some(message);
        s.status.job_failure = Some(summary);
    });
    enter(ctx, Phase::Failed);
    WorkflowTermination::failed_application(run_failure)
}

#[cfg(test)]
mod tests {
    use temporalio_common::SignalDefinition;

    use super::TriggerExternalWorkflow;

    #[test]
    fn the_semaphore_grants_with_the_signal_the_run_handles() {
        assert_eq!(
            TriggerExternalWorkflow::capacity_granted.name(),
            crate::capacity::GRANTED_SIGNAL
        );
    }
}
