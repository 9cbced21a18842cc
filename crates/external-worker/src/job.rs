//! The `long-running-command` activity: work for a given duration, heartbeating progress.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tea_contract::{
    CommandJob, CommandProgress, CommandResult, GoDuration, JobOutputLine, JobProgress,
    WORKER_SHUTDOWN_FAILURE, decode_long_running_args,
};

use crate::{
    command::{CommandSpec, Exit, Limits, RunningCommand, Snapshot, Stream},
    mask::Secrets,
    tree,
};
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
    /// Set once the worker shuts down: running commands stop at once.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Default for JobTracker {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl JobTracker {
    /// Stops every running command now (SIGTERM to each of its processes, SIGKILL after the
    /// grace), as the worker shuts down: the compute is going away, and a job must not
    /// outlive its worker.
    pub fn stop_jobs(&self) {
        self.stopping.send_replace(true);
    }

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

/// The activities this worker registers: the original's long-running job and the user's
/// command.
#[derive(Default)]
pub struct JobActivities {
    tracker: Arc<JobTracker>,
    metrics: Metrics,
    limits: Limits,
    /// Masked in everything a user's command reports.
    secrets: Arc<Secrets>,
}

impl JobActivities {
    pub fn new(tracker: Arc<JobTracker>, metrics: Metrics) -> Self {
        Self {
            tracker,
            metrics,
            limits: Limits::default(),
            secrets: Arc::default(),
        }
    }

    /// With these secrets masked in a user's command's output, progress and result.
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = Arc::new(secrets);
        self
    }

    /// With these bounds on the user's command (tail, result size, kill grace).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
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
                // In this order: a job already over ends without one more heartbeat (which
                // the SDK would send before the completion, one round trip more).
                biased;
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

    /// Runs the user's command (see [`crate::command`]): output streamed to this worker's log,
    /// progress in heartbeats, a non-zero exit a non-retryable failure naming the exit and the
    /// last lines of stderr; cancelled, it stops every process of the job first. Secrets are
    /// masked in all it reports (see [`crate::mask`]).
    #[activity(name = "run-command")]
    pub async fn run_command(
        self: Arc<Self>,
        ctx: ActivityContext,
        args: RawValue,
    ) -> Result<CommandResult, ActivityError> {
        let job: CommandJob = match args.payloads.as_slice() {
            [payload] => serde_json::from_slice(&payload.data).map_err(|e| {
                job_failure(
                    "InvalidArgument",
                    format!("invalid run-command argument: {e}"),
                )
            })?,
            other => {
                return Err(job_failure(
                    "InvalidArgument",
                    format!("run-command takes one argument, got {}", other.len()),
                ));
            }
        };
        if job.command.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(job_failure(
                "InvalidArgument",
                "run-command: the command is empty".into(),
            ));
        }
        let _running = self.tracker.begin();
        let started = Instant::now();
        let result = self.run_user_command(&ctx, job).await;
        let outcome = match &result {
            Ok(_) => "completed",
            Err(ActivityError::Cancelled { .. }) => "cancelled",
            Err(_) => "failed",
        };
        self.record(outcome, started.elapsed());
        result
    }
}

impl JobActivities {
    async fn run_user_command(
        &self,
        ctx: &ActivityContext,
        job: CommandJob,
    ) -> Result<CommandResult, ActivityError> {
        let info = ctx.info();
        let workflow_id = info.workflow_id.clone().unwrap_or_default();
        let attempt = info.attempt;
        let spec = CommandSpec {
            argv: job.command.clone(),
            env: job.env.clone().into_iter().collect(),
            workdir: job.workdir.as_ref().map(Into::into),
            attempt: job.attempt,
            resume: job.resume.clone(),
        };
        tracing::info!(
            %workflow_id,
            attempt,
            program = %job.command.first().map(String::as_str).unwrap_or(""),
            args = job.command.len().saturating_sub(1),
            env_keys = ?job.env.keys().collect::<Vec<_>>(),
            compute_attempt = job.attempt,
            resumes_from_checkpoint = job.resume.is_some(),
            "starting the job's command"
        );
        let log_workflow_id = workflow_id.clone();
        let secrets = Arc::clone(&self.secrets);
        let mut running =
            RunningCommand::spawn(&spec, self.limits, secrets, move |stream, line| {
                tracing::info!(
                    target: "job_output",
                    workflow_id = %log_workflow_id,
                    attempt,
                    stream = ?stream,
                    "{line}"
                );
            })
            .map_err(|e| job_failure("JobNotStarted", format!("the job could not start: {e}")))?;
        let mut heartbeat = tokio::time::interval(heartbeat_interval(job.heartbeat_timeout));
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stopping = self.tracker.stopping.subscribe();
        let status = loop {
            tokio::select! {
                status = running.exited() => break status,
                () = async {
                    if stopping.wait_for(|stop| *stop).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {
                    tracing::warn!(%workflow_id, "the worker is shutting down: stopping the job");
                    let stopped = running.stop().await;
                    tracing::info!(%workflow_id, exit = ?stopped.as_ref().map(|f| f.exit), "job stopped");
                    // Retryable: the compute went away, not the job's fault. Its last progress
                    // (read after it stopped: a checkpoint written on SIGTERM counts) lets the
                    // run resume it on fresh compute.
                    let last = match &stopped {
                        Ok(finished) => progress_of(&finished.snapshot),
                        Err(_) => progress_of(&running.snapshot()),
                    };
                    return Err(ActivityError::application(
                        ApplicationFailure::builder(anyhow::anyhow!(
                            "the external worker shut down (SIGTERM) and stopped the job"
                        ))
                        .type_name(WORKER_SHUTDOWN_FAILURE.to_owned())
                        .details(last)
                        .build(),
                    ));
                }
                _ = ctx.cancelled() => {
                    tracing::info!(%workflow_id, "job cancelled: stopping its processes");
                    let stopped = running.stop().await;
                    tracing::info!(%workflow_id, exit = ?stopped.as_ref().map(|f| f.exit), "job stopped");
                    return Err(ActivityError::cancelled());
                }
                _ = heartbeat.tick() => {
                    tree::reap_orphans();
                    ctx.record_heartbeat(progress_of(&running.snapshot())).await?;
                }
            }
        }
        .map_err(|e| ActivityError::from(anyhow::anyhow!("waiting for the job failed: {e}")))?;
        let finished = running.finish(status).await;
        tracing::info!(%workflow_id, exit = %finished.exit, lines = finished.snapshot.stdout_lines + finished.snapshot.stderr_lines, "job ended");
        if let Some(error) = &finished.result_error {
            return Err(job_failure("JobResultRefused", error.clone()));
        }
        match finished.exit {
            Exit::Code(0) => Ok(CommandResult {
                exit_code: 0,
                duration: GoDuration(finished.snapshot.elapsed),
                stdout_lines: finished.snapshot.stdout_lines,
                stderr_lines: finished.snapshot.stderr_lines,
                output_bytes: finished.snapshot.output_bytes,
                output_tail: tail_of(&finished.snapshot),
                result: finished.result,
            }),
            exit => {
                let stderr = finished.stderr_tail();
                let last = &stderr[stderr.len().saturating_sub(10)..];
                let mut message = format!("the job failed: {exit}");
                if !last.is_empty() {
                    message.push_str(&format!("; last lines of stderr:\n{}", last.join("\n")));
                }
                Err(job_failure("JobFailed", message))
            }
        }
    }
}

/// A failure of the job itself: non-retryable, since fresh compute cannot fix it.
fn job_failure(kind: &str, message: String) -> ActivityError {
    tracing::warn!(%message, "job failed");
    ActivityError::application(
        ApplicationFailure::builder(anyhow::anyhow!(message))
            .type_name(kind.to_owned())
            .non_retryable(true)
            .build(),
    )
}

fn tail_of(snapshot: &Snapshot) -> Vec<JobOutputLine> {
    snapshot
        .tail
        .iter()
        .map(|l| JobOutputLine {
            stream: match l.stream {
                Stream::Stdout => "stdout".into(),
                Stream::Stderr => "stderr".into(),
            },
            line: l.line.clone(),
        })
        .collect()
}

fn progress_of(snapshot: &Snapshot) -> CommandProgress {
    CommandProgress {
        elapsed: GoDuration(snapshot.elapsed),
        stdout_lines: snapshot.stdout_lines,
        stderr_lines: snapshot.stderr_lines,
        output_bytes: snapshot.output_bytes,
        tail: tail_of(snapshot),
        fraction: snapshot.report.as_ref().and_then(|r| r.fraction),
        message: snapshot.report.as_ref().and_then(|r| r.message.clone()),
        checkpoint: snapshot.checkpoint.clone(),
        checkpoint_error: snapshot.checkpoint_error.clone(),
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
        let before_the_end = Instant::now();
        drop(guard);
        // Idle since the job ended, not since the tracker was made.
        let idle = tracker.idle_for().expect("idle once the job ended");
        assert!(idle <= before_the_end.elapsed(), "{idle:?}");
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
