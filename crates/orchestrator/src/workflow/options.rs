//! How the workflows call their activities: timeouts, retry policies and cancellation of each
//! call. Shared by `TriggerExternalWorkflow` and the operator's delete
//! ([`crate::operator_delete`]), so that a unit is always deleted the same way.

use std::time::Duration;

use tea_contract::WORKER_SHUTDOWN_FAILURE;
use temporalio_common::RetryPolicy;
use temporalio_sdk::{ActivityOptions, LocalActivityOptions, WorkflowCancellationToken};

/// Start-to-close of a provisioning activity (each heartbeats, so a lost worker is noticed at
/// its heartbeat timeout long before).
pub(crate) const START_TO_CLOSE: Duration = Duration::from_secs(3600);

/// Slack on top of what a bounded wait needs, for scheduling and retries.
pub(crate) const DEADLINE_MARGIN: Duration = Duration::from_secs(300);

/// How long asking for a compute slot may take, retries included.
const REQUEST_CAPACITY_TIMEOUT: Duration = Duration::from_secs(60);

/// How a call to the provider is retried: from 1 s, doubling, at most 30 s apart, at most
/// `maximum_attempts` attempts.
pub(crate) fn provider_call_retry_policy(maximum_attempts: u32) -> RetryPolicy {
    doubling_retry_policy(Duration::from_secs(30), maximum_attempts, &[])
}

/// How the user's own activity is retried on its unit: `maximum_attempts` in all, from 1 s,
/// doubling, at most a minute apart. A [`WORKER_SHUTDOWN_FAILURE`] is not retried there: the
/// unit's worker has stopped, so a retry would only wait in a queue nobody polls until its
/// schedule-to-start; the run takes it as a lost unit at once and goes on with fresh compute.
pub(crate) fn own_activity_retry_policy(maximum_attempts: u32) -> RetryPolicy {
    doubling_retry_policy(
        Duration::from_secs(60),
        maximum_attempts,
        &[WORKER_SHUTDOWN_FAILURE],
    )
}

/// Retries from 1 s, doubling up to `maximum_interval`, `maximum_attempts` in all; failures of
/// the `non_retryable` types are not retried.
fn doubling_retry_policy(
    maximum_interval: Duration,
    maximum_attempts: u32,
    non_retryable: &[&str],
) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(maximum_interval)
        .maximum_attempts(maximum_attempts)
        .non_retryable_error_types(non_retryable.iter().copied())
        .build()
}

/// The retry policy of `Create`, `WaitForAppBuild` and `RequestCapacity`.
fn retry_policy() -> RetryPolicy {
    provider_call_retry_policy(5)
}

/// Options for a provisioning activity; `detached` ones ignore workflow cancellation.
pub(crate) fn activity_options(heartbeat_timeout: Duration, detached: bool) -> ActivityOptions {
    let mut options = ActivityOptions::with_start_to_close_timeout(START_TO_CLOSE)
        .heartbeat_timeout(heartbeat_timeout)
        .retry_policy(retry_policy())
        .build();
    if detached {
        options.cancellation_token = Some(WorkflowCancellationToken::new());
    }
    options
}

/// `RequestCapacity` runs as a local activity (inside the workflow task: no activity dispatch
/// and no extra workflow task): each attempt bounded, retried, detached from cancellation so
/// that whether the request reached the semaphore is always known.
pub(crate) fn request_capacity_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .retry_policy(retry_policy())
        .start_to_close_timeout(Duration::from_secs(10))
        .schedule_to_close_timeout(REQUEST_CAPACITY_TIMEOUT)
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// Delete is the guarantee: detached from cancellation, retried until it succeeds or fails for
/// a reason retrying can't fix.
pub(crate) fn delete_options(heartbeat_timeout: Duration) -> ActivityOptions {
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
