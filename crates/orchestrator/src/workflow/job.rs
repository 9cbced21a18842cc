//! The job on a unit and the quick-start race: the job is queued on the unit's queue (named
//! after the unit, so known before `Create`) in the same workflow task as `Create`, and starts
//! the moment the new worker polls, while the workflow still learns what `Create` made.
//! `WaitForAppBuild` runs beside it once `Create` has returned: a failed wait cancels the job
//! (unless it has completed), an ended job cancels the wait. A `Create` that fails, or a run
//! cancelled meanwhile, withdraws the queued job before the unit is deleted by name.
//!
//! The job is the original's timed `long-running-command`, the user's command (`run-command`)
//! or the user's own activity, scheduled by its type name with its arguments as they came
//! (one `json/plain` payload each): its result is the run's, and its failure (type, message,
//! details, non-retryable flag) the run's failure. Only a heartbeat or schedule-to-start
//! timeout of the own activity, or its worker's shutdown, counts as a lost unit; with
//! `activity_resume` its last argument says where the lost unit left it ([`super::resume`]).

use std::time::Duration;

use futures::{
    FutureExt,
    future::{Either, LocalBoxFuture, select},
};
use tea_contract::{
    ActivityResult, CommandJob, ExternalActivities, GoDuration, JobFailure, JobOutcome,
    WORKER_SHUTDOWN_FAILURE, WorkflowInput, activity_arg_payloads, decode_activity_result,
};
use temporalio_common::{
    ActivityCloseTimeouts, RetryPolicy, UntypedActivity,
    data_converters::{PayloadConversionError, RawValue},
    error::{IncomingError, TimeoutType},
    protos::temporal::api::common::v1::Payload,
};
use temporalio_sdk::{
    ActivityCancellationType, ActivityExecutionError, WorkflowCancellationToken, WorkflowContext,
};

use super::options::{
    DEADLINE_MARGIN, START_TO_CLOSE, activity_options, own_activity_retry_policy,
};
use super::resume::{self, JobResume};
use super::{BodyEnd, Phase, TriggerExternalWorkflow, describe, enter};
use crate::activities::{
    CreatedCompute, ProvisioningActivities, WaitForComputeInput, WaitProgress,
};

/// The job's result: the user's command's or own activity's, or none for the original's timed
/// job.
type JobResult = Result<Option<JobOutcome>, ActivityExecutionError>;

/// The user's own activity's failure, to become the run's.
pub(super) struct OwnFailure {
    pub summary: JobFailure,
    /// Its details, as the activity's SDK encoded them.
    pub details: Vec<Payload>,
}

/// The attempt's job, queued on the unit's queue together with `Create`.
///
/// It may wait in the queue for `Create` (up to [`DEADLINE_MARGIN`]), the deployment and the
/// worker's start. A job that ends before `Create` returns is kept until then. Its
/// cancellation is a child of the attempt's lifetime limit.
pub(super) struct QueuedJob<'a> {
    job: QueuedJobState<'a>,
    token: WorkflowCancellationToken,
}

enum QueuedJobState<'a> {
    Queued(LocalBoxFuture<'a, JobResult>),
    Ended(Box<JobResult>),
}

impl<'a> QueuedJob<'a> {
    /// Schedules the job now (call it right after scheduling `Create`), resuming where
    /// `resume` says.
    pub fn schedule(
        ctx: &'a WorkflowContext<TriggerExternalWorkflow>,
        input: &WorkflowInput,
        task_queue: &str,
        lifetime: &WorkflowCancellationToken,
        deploy_timeout: Duration,
        resume: &JobResume,
    ) -> Self {
        let token = lifetime.child_token();
        let may_wait = DEADLINE_MARGIN + deploy_timeout + input.worker_start_timeout();
        let job = run_job(ctx, input, task_queue, token.clone(), may_wait, resume);
        let job = resume::noting_a_lost_unit(ctx, input, resume, job);
        Self {
            job: QueuedJobState::Queued(job),
            token,
        }
    }

    /// Awaits `create` with the job in flight.
    pub async fn alongside<C: Future>(self, create: C) -> (C::Output, Self) {
        let QueuedJobState::Queued(job) = self.job else {
            return (create.await, self);
        };
        let (created, job) = match select(Box::pin(create), job).await {
            Either::Left((created, job)) => (created, QueuedJobState::Queued(job)),
            Either::Right((ended, create)) => {
                (create.await, QueuedJobState::Ended(Box::new(ended)))
            }
        };
        let token = self.token;
        (created, Self { job, token })
    }

    /// Cancels the job, unless it has ended, and waits until it has; the job's result when
    /// it completed all the same (before or while it was withdrawn).
    pub async fn withdraw(self, reason: &str) -> Option<Option<JobOutcome>> {
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

/// Waits until the unit is ready while its queued job runs. `cancel`, when given, cancels the
/// wait and the job instead of the run's own cancellation (the lifetime limit's token).
pub(super) async fn use_compute(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    created: &CreatedCompute,
    cancel: Option<&WorkflowCancellationToken>,
    queued: QueuedJob<'_>,
) -> BodyEnd {
    let heartbeat_timeout = input.heartbeat_timeout();
    let own = input.activity.as_deref();
    enter(ctx, Phase::Deploying);
    let job = match queued.job {
        // It ended before `Create` returned: nothing to wait for.
        QueuedJobState::Ended(job) => {
            if job.is_ok() {
                enter(ctx, Phase::Running);
            }
            return job_end(ctx, own, *job);
        }
        QueuedJobState::Queued(job) => job,
    };
    let mut wait_options = activity_options(heartbeat_timeout, false);
    // Retries included, the wait ends by then: a deployment that never finishes is lost.
    let schedule_to_close =
        created.deploy_timeout.as_duration() + input.worker_start_timeout() + DEADLINE_MARGIN;
    wait_options.close_timeouts = ActivityCloseTimeouts::ScheduleAndStartToClose {
        schedule_to_close,
        start_to_close: START_TO_CLOSE.min(schedule_to_close),
    };
    let parent = cancel.cloned().unwrap_or_else(|| ctx.cancellation_token());
    let wait_token = parent.child_token();
    wait_options.cancellation_token = Some(wait_token.clone());
    let wait = ctx.execute_activity(
        ProvisioningActivities::wait_for_app_build,
        WaitForComputeInput {
            handle: created.handle.clone(),
            task_queue: created.task_queue.clone(),
            heartbeat_timeout: GoDuration(heartbeat_timeout),
            worker_start_timeout: GoDuration(input.worker_start_timeout()),
        },
        wait_options,
    );
    let tokens = (&wait_token, &queued.token);
    wait_and_run_together(ctx, own, Box::pin(wait), job, tokens).await
}

/// `WaitForAppBuild` and the job (`own`: the user's own activity type, if it is one), both in
/// flight. The job starts when the unit's worker polls, whether or not the wait has noticed
/// yet; each token (the wait's, the job's) cancels its own activity.
async fn wait_and_run_together<W, J>(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    own: Option<&str>,
    wait: W,
    job: J,
    (wait_token, job_token): (&WorkflowCancellationToken, &WorkflowCancellationToken),
) -> BodyEnd
where
    W: Future<Output = Result<WaitProgress, ActivityExecutionError>> + Unpin,
    J: Future<Output = JobResult> + Unpin,
{
    match select(wait, job).await {
        Either::Left((Ok(_), job)) => {
            enter(ctx, Phase::Running);
            job_end(ctx, own, job.await)
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
            job_end(ctx, own, job)
        }
    }
}

/// The job on the unit's queue: the user's own activity, the user's command, or the original's
/// timed job, resuming where `resume` says. It may wait `may_wait` in the queue for the unit's
/// worker; `cancel` cancels it.
fn run_job<'a>(
    ctx: &'a WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    task_queue: &str,
    cancel: WorkflowCancellationToken,
    may_wait: Duration,
    resume: &JobResume,
) -> LocalBoxFuture<'a, JobResult> {
    let heartbeat_timeout = input.heartbeat_timeout();
    let mut job_options = activity_options(heartbeat_timeout, false);
    job_options.task_queue = Some(task_queue.to_owned());
    job_options.schedule_to_start_timeout = Some(may_wait);
    job_options.cancellation_type = ActivityCancellationType::TryCancel;
    // A job of many hours must not time out at a fixed hour.
    job_options.close_timeouts = ActivityCloseTimeouts::StartToClose(input.job_start_to_close());
    // Retrying on the same queue cannot outlive a dead worker (nobody polls it any more): the
    // workflow retries the job on fresh compute instead.
    job_options.retry_policy = Some(RetryPolicy::builder().maximum_attempts(1).build());
    job_options.cancellation_token = Some(cancel);
    if let Some(activity) = &input.activity {
        // Its own time limit and attempts on this unit (with the last attempt's heartbeat
        // details); a unit lost meanwhile is noticed at the attempt's heartbeat timeout.
        job_options.close_timeouts =
            ActivityCloseTimeouts::StartToClose(input.activity_start_to_close());
        job_options.retry_policy = Some(own_activity_retry_policy(input.activity_max_attempts()));
        let mut args = activity_arg_payloads(input.activity_args.as_deref().unwrap_or_default());
        if input.activity_resume() {
            // Where it resumes: the lost unit's last heartbeat detail, or `null`.
            args.push(resume.heartbeat_detail());
        }
        let job = ctx.execute_activity(
            UntypedActivity::new(activity.clone()),
            RawValue::new(args),
            job_options,
        );
        let activity = activity.clone();
        return async move {
            let returned = job.await?;
            let result = decode_activity_result(&returned.payloads).map_err(|e| {
                ActivityExecutionError::Serialization(PayloadConversionError::EncodingError(
                    e.into(),
                ))
            })?;
            Ok(Some(JobOutcome::Activity(ActivityResult {
                activity,
                result,
            })))
        }
        .boxed_local();
    }
    match &input.command {
        Some(command) => {
            // The unit is deleted only once the job's processes are gone.
            job_options.cancellation_type = ActivityCancellationType::WaitCancellationCompleted;
            let job = ctx.execute_activity(
                ExternalActivities::run_command,
                CommandJob {
                    command: command.clone(),
                    env: input.env.clone().unwrap_or_default(),
                    workdir: input.workdir.clone(),
                    heartbeat_timeout: GoDuration(heartbeat_timeout),
                    attempt: Some(resume.attempt),
                    resume: resume.checkpoint(),
                },
                job_options,
            );
            async move { job.await.map(|result| Some(JobOutcome::Command(result))) }.boxed_local()
        }
        None => {
            let job = ctx.execute_activity(
                ExternalActivities::long_running_command,
                (
                    GoDuration(resume.time_left(input.job_duration())),
                    GoDuration(heartbeat_timeout),
                ),
                job_options,
            );
            async move { job.await.map(|()| None) }.boxed_local()
        }
    }
}

/// What the job's result means for the attempt (`own`: the user's own activity type).
fn job_end(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    own: Option<&str>,
    job: JobResult,
) -> BodyEnd {
    match (job, own) {
        (Ok(result), _) => BodyEnd::Completed(result),
        (Err(error), Some(activity)) => own_activity_failed(ctx, activity, error),
        (Err(error), None) => {
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

/// How an activity failure between create and delete ends the attempt.
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
            own_failure: None,
        }
    }
}

/// How the user's own activity's failure ends the attempt: its own failure fails the run (no
/// fresh compute: it would fail the same way); a heartbeat or schedule-to-start timeout means
/// the unit's worker died or never took it, and a retryable [`WORKER_SHUTDOWN_FAILURE`] (what
/// the Core-based SDKs report for an activity their stopping worker cancelled) that it was
/// stopped: fresh compute may work; any other timeout, or a result that cannot be the run's,
/// fails the run.
fn own_activity_failed(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    activity: &str,
    error: ActivityExecutionError,
) -> BodyEnd {
    let what = format!("the external activity {activity} failed");
    match error.cause() {
        // Its worker shut down under it (the unit is being stopped): fresh compute may work.
        Some(IncomingError::Application(failure))
            if !failure.is_non_retryable()
                && failure.type_name() == Some(WORKER_SHUTDOWN_FAILURE) =>
        {
            body_error(ctx, &what, error, true)
        }
        Some(IncomingError::Application(failure)) if !ctx.cancellation_token().is_cancelled() => {
            let summary = JobFailure {
                activity: activity.to_owned(),
                failure_type: failure.type_name().unwrap_or_default().to_owned(),
                message: failure.to_string(),
                non_retryable: failure.is_non_retryable(),
            };
            let kind = match summary.failure_type.as_str() {
                "" => String::new(),
                kind => format!("{kind}: "),
            };
            BodyEnd::Failed {
                message: format!("{what}: {kind}{}", summary.message),
                fresh_compute_helps: false,
                lifetime_exceeded: false,
                own_failure: Some(Box::new(OwnFailure {
                    summary,
                    details: failure.raw_details().map(<[_]>::to_vec).unwrap_or_default(),
                })),
            }
        }
        Some(IncomingError::Timeout(timeout))
            if matches!(
                timeout.timeout_type(),
                TimeoutType::Heartbeat | TimeoutType::ScheduleToStart
            ) =>
        {
            body_error(ctx, &what, error, true)
        }
        _ if let ActivityExecutionError::Serialization(PayloadConversionError::EncodingError(
            why,
        )) = &error =>
        {
            BodyEnd::Failed {
                message: format!("the external activity {activity} completed, but {why}"),
                fresh_compute_helps: false,
                lifetime_exceeded: false,
                own_failure: None,
            }
        }
        _ => body_error(ctx, &what, error, false),
    }
}
