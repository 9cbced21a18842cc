//! The `long-running-command` activity: work for a given duration, heartbeating progress.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tea_contract::{GoDuration, JobProgress, decode_long_running_args};
use tea_runtime::Metrics;
use temporalio_common::data_converters::RawValue;
use temporalio_macros::activities;
use temporalio_sdk::{
    ApplicationFailure,
    activities::{ActivityContext, ActivityError},
};
use tokio::time::{Instant, MissedTickBehavior};

/// Shortest heartbeat interval, whatever the caller asks for.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// What the dead-man switch needs to know: jobs in flight and when the last one ended.
#[derive(Debug)]
pub struct JobTracker {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Default for JobTracker {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }
}

impl JobTracker {
    /// How long no job has been running, or `None` while one runs.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        Some(since.elapsed())
    }

    fn begin(self: &Arc<Self>) -> JobGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        JobGuard(Arc::clone(self))
    }
}

/// Marks a job finished when dropped, whatever way the activity ends.
struct JobGuard(Arc<JobTracker>);

impl Drop for JobGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The activities this worker registers: only the long-running job.
#[derive(Default)]
pub struct JobActivities {
    tracker: Arc<JobTracker>,
    metrics: Metrics,
}

impl JobActivities {
    pub fn new(tracker: Arc<JobTracker>, metrics: Metrics) -> Self {
        Self { tracker, metrics }
    }

    fn record(&self, outcome: &'static str, elapsed: Duration) {
        let labels = [("outcome", outcome.to_owned())];
        self.metrics.count(
            "tea_jobs",
            "Jobs run by this worker, by outcome",
            &labels,
            1,
        );
        self.metrics
            .observe("tea_job_duration", "How long jobs ran", &labels, elapsed);
    }
}

#[activities]
impl JobActivities {
    /// Works for `duration`, recording a heartbeat with [`JobProgress`] every
    /// `heartbeat_timeout / 2`, and stops early when the activity is cancelled.
    ///
    /// Takes its two arguments (`duration`, `heartbeat_timeout`) raw and decodes them itself:
    /// arguments the SDK could not decode would fail every attempt as retryable; here a bad
    /// argument fails the activity non-retryably, naming it.
    #[activity(name = "long-running-command")]
    pub async fn long_running_command(
        self: Arc<Self>,
        ctx: ActivityContext,
        args: RawValue,
    ) -> Result<(), ActivityError> {
        let (duration, heartbeat_timeout) =
            decode_long_running_args(&args.payloads).map_err(|message| {
                tracing::error!(%message, "refusing long running command");
                ActivityError::application(ApplicationFailure::non_retryable(anyhow::anyhow!(
                    message
                )))
            })?;
        let _running = self.tracker.begin();
        let info = ctx.info();
        tracing::info!(
            workflow_id = info.workflow_id.as_deref().unwrap_or(""),
            activity_id = %info.activity_id,
            attempt = info.attempt,
            duration = %duration,
            "started long running command"
        );
        let total = duration.as_duration();
        let started = Instant::now();
        let deadline = started + total;
        let mut heartbeat = tokio::time::interval(heartbeat_interval(heartbeat_timeout));
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = ctx.cancelled() => {
                    tracing::info!(elapsed = ?started.elapsed(), "long running command cancelled");
                    self.record("cancelled", started.elapsed());
                    return Err(ActivityError::cancelled());
                }
                _ = heartbeat.tick() => {
                    let elapsed = started.elapsed().min(total);
                    let progress = JobProgress {
                        elapsed: GoDuration(elapsed),
                        remaining: GoDuration(total - elapsed),
                    };
                    if let Err(e) = ctx.record_heartbeat(progress).await {
                        self.record("error", started.elapsed());
                        return Err(e.into());
                    }
                }
            }
        }
        tracing::info!(duration = %duration, "long running command finished");
        self.record("completed", started.elapsed());
        Ok(())
    }
}

/// Heartbeat every half heartbeat timeout, as the original does; with no timeout, every 5 s.
pub fn heartbeat_interval(heartbeat_timeout: GoDuration) -> Duration {
    let half = heartbeat_timeout.as_duration() / 2;
    if half.is_zero() {
        Duration::from_secs(5)
    } else {
        half.max(MIN_HEARTBEAT_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use temporalio_common::ActivityDefinition;

    #[test]
    fn registered_name_matches_the_contract() {
        assert_eq!(
            JobActivities::long_running_command.name(),
            tea_contract::LONG_RUNNING_ACTIVITY
        );
        assert_eq!(
            JobActivities::long_running_command.name(),
            tea_contract::ExternalActivities::long_running_command.name()
        );
    }

    #[test]
    fn tracker_reports_idle_only_without_running_jobs() {
        let tracker = Arc::new(JobTracker::default());
        assert!(tracker.idle_for().is_some());
        let guard = tracker.begin();
        assert_eq!(tracker.idle_for(), None);
        drop(guard);
        assert!(
            tracker
                .idle_for()
                .is_some_and(|d| d < Duration::from_secs(5))
        );
    }

    #[test]
    fn heartbeat_interval_is_half_the_timeout() {
        assert_eq!(
            heartbeat_interval(GoDuration::from_secs(10)),
            Duration::from_secs(5)
        );
        assert_eq!(
            heartbeat_interval(GoDuration::from_millis(10)),
            MIN_HEARTBEAT_INTERVAL
        );
        assert_eq!(
            heartbeat_interval(GoDuration::default()),
            Duration::from_secs(5)
        );
    }
}
