//! Resuming a job on a fresh unit from what its lost unit last recorded.
//!
//! What a lost attempt leaves is its job's last heartbeat: Temporal keeps it when the unit dies
//! (the heartbeat timeout's `last_heartbeat_details`), and the external worker hands it back
//! when the unit shuts down and stops the job (the details of a retryable
//! [`WORKER_SHUTDOWN_FAILURE`]). The run keeps the resume point in its state and gives it to
//! the next attempt's job:
//! - a command's heartbeats carry its checkpoint (`CommandProgress::checkpoint`): the next
//!   `run-command` gets it as `CommandJob::resume` (its `TEA_RESUME_FILE`);
//! - the timed job's heartbeats carry how long it has worked (`JobProgress::elapsed`): the next
//!   `long-running-command` is asked to work only for what is left (its two arguments keep
//!   their wire format). A worker whose heartbeats do not say (the Go worker) starts over;
//! - the user's own activity (`activity`) resumes when the run asks (`activity_resume`):
//!   Temporal hands heartbeat details only to retries of the same activity (on the same,
//!   now dead, queue), so the next unit's activity gets the lost attempt's first heartbeat
//!   detail as an extra, last argument, the payload untouched as its SDK encoded it (`null`
//!   when there is nothing to resume from). Without `activity_resume` it starts over.
//!
//! Only a lost unit resumes: a job that failed on its own (a non-zero exit, a non-retryable
//! failure), ran out of time (start-to-close) or was cancelled leaves no resume point. A unit
//! is lost when its job's heartbeats stop, when its worker never takes the job
//! (schedule-to-start: an own activity retried on a dead unit's queue ends so, its heartbeat
//! details kept) or when its worker shuts down under it. An attempt lost before its job sent a
//! heartbeat (a unit that never came up) keeps the previous point. Only activity inputs
//! change: the command sequence is the baseline's.

use std::time::Duration;

use futures::{FutureExt, future::LocalBoxFuture};
use tea_contract::{
    GoDuration, JobProgress, Resumed, ResumedFrom, WORKER_SHUTDOWN_FAILURE, WorkflowInput,
    decode_json, json_payload,
};
use temporalio_common::{
    error::{IncomingError, TimeoutType},
    protos::temporal::api::common::v1::Payload,
};
use temporalio_sdk::{ActivityExecutionError, WorkflowContext};

use super::TriggerExternalWorkflow;

/// Where the next attempt's job resumes, kept in the run's state.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum ResumePoint {
    /// The checkpoint the command last wrote.
    Checkpoint {
        from_attempt: u32,
        value: serde_json::Value,
    },
    /// How long the timed job has worked, over all attempts so far.
    Elapsed {
        from_attempt: u32,
        elapsed: Duration,
    },
    /// The own activity's first heartbeat detail, as its SDK encoded it.
    HeartbeatDetail { from_attempt: u32, payload: Payload },
}

/// What an attempt's job is given: its attempt, and where it resumes (if anywhere).
#[derive(Clone, Debug)]
pub(super) struct JobResume {
    pub attempt: u32,
    pub point: Option<ResumePoint>,
}

impl JobResume {
    /// The checkpoint a command resumes from.
    pub fn checkpoint(&self) -> Option<serde_json::Value> {
        match &self.point {
            Some(ResumePoint::Checkpoint { value, .. }) => Some(value.clone()),
            _ => None,
        }
    }

    /// The own activity's extra, last argument: where it resumes, `null` when nowhere.
    pub fn heartbeat_detail(&self) -> Payload {
        match &self.point {
            Some(ResumePoint::HeartbeatDetail { payload, .. }) => payload.clone(),
            _ => json_payload(&serde_json::Value::Null),
        }
    }

    /// How long the timed job still has to work, of `total`.
    pub fn time_left(&self, total: Duration) -> Duration {
        match &self.point {
            Some(ResumePoint::Elapsed { elapsed, .. }) => total.saturating_sub(*elapsed),
            _ => total,
        }
    }

    /// What the job resumes from, as the `tea_job_resumes_total` metric labels it.
    pub fn kind(&self) -> Option<&'static str> {
        self.point.as_ref().map(|point| match point {
            ResumePoint::Checkpoint { .. } => "checkpoint",
            ResumePoint::Elapsed { .. } => "elapsed",
            ResumePoint::HeartbeatDetail { .. } => "heartbeat_details",
        })
    }
}

/// What attempt `attempt`'s job is given; a resume is recorded in the run's status.
pub(super) fn for_attempt(
    ctx: &WorkflowContext<TriggerExternalWorkflow>,
    attempt: u32,
) -> JobResume {
    let point = ctx.state(|s| s.resume.clone());
    if let Some(point) = &point {
        let resumed = match point {
            ResumePoint::Checkpoint {
                from_attempt,
                value,
            } => Resumed {
                attempt,
                from_attempt: *from_attempt,
                from: ResumedFrom::Checkpoint {
                    bytes: serde_json::to_vec(value).map_or(0, |v| v.len() as u64),
                },
            },
            ResumePoint::Elapsed {
                from_attempt,
                elapsed,
            } => Resumed {
                attempt,
                from_attempt: *from_attempt,
                from: ResumedFrom::Elapsed {
                    elapsed: GoDuration(*elapsed),
                },
            },
            ResumePoint::HeartbeatDetail {
                from_attempt,
                payload,
            } => Resumed {
                attempt,
                from_attempt: *from_attempt,
                from: ResumedFrom::HeartbeatDetails {
                    bytes: payload.data.len() as u64,
                },
            },
        };
        if !ctx.is_replaying() {
            tracing::info!(%resumed, "the job resumes on fresh compute");
        }
        ctx.state_mut(|s| s.status.resumes.push(resumed));
    }
    JobResume { attempt, point }
}

/// Which job a run has, as far as resuming it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobKind {
    /// `long-running-command`: resumes by its elapsed time.
    Timed,
    /// `run-command`: resumes from its checkpoint.
    Command,
    /// The user's own activity: resumed across units from its heartbeat details when it
    /// takes them (`activity_resume`), else started over.
    OwnActivity { takes_resume: bool },
}

impl JobKind {
    fn of(input: &WorkflowInput) -> JobKind {
        match (&input.activity, &input.command) {
            (Some(_), _) => JobKind::OwnActivity {
                takes_resume: input.activity_resume(),
            },
            (None, Some(_)) => JobKind::Command,
            (None, None) => JobKind::Timed,
        }
    }
}

/// `job`, noting where the next attempt resumes when it ends with its unit lost.
pub(super) fn noting_a_lost_unit<'a, T: 'a>(
    ctx: &'a WorkflowContext<TriggerExternalWorkflow>,
    input: &WorkflowInput,
    resume: &JobResume,
    job: LocalBoxFuture<'a, Result<T, ActivityExecutionError>>,
) -> LocalBoxFuture<'a, Result<T, ActivityExecutionError>> {
    let kind = JobKind::of(input);
    let job_duration = input.job_duration();
    let resume = resume.clone();
    async move {
        let ended = job.await;
        if let Err(error) = &ended
            && let Some(point) = next_point(&resume, kind, job_duration, error)
        {
            ctx.state_mut(|s| s.resume = Some(point));
        }
        ended
    }
    .boxed_local()
}

/// Where the job resumes after it ended with `error` in attempt `resume.attempt`, when the
/// error says its unit was lost and its last heartbeat says where it was.
fn next_point(
    resume: &JobResume,
    kind: JobKind,
    job_duration: Duration,
    error: &ActivityExecutionError,
) -> Option<ResumePoint> {
    let last = lost_unit_heartbeat(error)?.first()?;
    let from_attempt = resume.attempt;
    match kind {
        JobKind::OwnActivity { takes_resume } => {
            takes_resume.then(|| ResumePoint::HeartbeatDetail {
                from_attempt,
                payload: last.clone(),
            })
        }
        JobKind::Command => {
            let progress = decode_json(last).ok()?;
            let value = progress.get("checkpoint").filter(|v| !v.is_null())?.clone();
            Some(ResumePoint::Checkpoint {
                from_attempt,
                value,
            })
        }
        JobKind::Timed => {
            let progress: JobProgress = serde_json::from_value(decode_json(last).ok()?).ok()?;
            // The attempt worked on what was left after the previous ones.
            let before = job_duration - resume.time_left(job_duration);
            Some(ResumePoint::Elapsed {
                from_attempt,
                elapsed: (before + progress.elapsed.as_duration()).min(job_duration),
            })
        }
    }
}

/// The last heartbeat details of a job whose unit was lost: it stopped heartbeating (the unit
/// died), its worker never took it (only a retry on a dead unit's queue has details then) or
/// its worker shut down and stopped it (a retryable [`WORKER_SHUTDOWN_FAILURE`], whose details
/// our worker fills; an SDK's own has none unless the activity raised it). `None` for any
/// other end.
fn lost_unit_heartbeat(error: &ActivityExecutionError) -> Option<&[Payload]> {
    if let Some(timeout) = error.as_timeout() {
        return match timeout.timeout_type() {
            TimeoutType::Heartbeat | TimeoutType::ScheduleToStart => {
                timeout.raw_last_heartbeat_details()
            }
            _ => None,
        };
    }
    match error.cause() {
        Some(IncomingError::Application(failure))
            if !failure.is_non_retryable()
                && failure.type_name() == Some(WORKER_SHUTDOWN_FAILURE) =>
        {
            failure.raw_details()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tea_contract::json_payload;
    use temporalio_common::{
        data_converters::{
            DefaultFailureConverter, FailureConverter, PayloadConverter, SerializationContextData,
        },
        protos::temporal::api::{
            common::v1::Payloads,
            enums::v1::TimeoutType as ProtoTimeoutType,
            failure::v1::{
                ActivityFailureInfo, ApplicationFailureInfo, Failure, TimeoutFailureInfo,
                failure::FailureInfo,
            },
        },
    };

    use super::*;

    /// The job's failure as the workflow sees it: an activity failure caused by `cause`.
    fn job_failed(
        cause: FailureInfo,
        heartbeat: Option<serde_json::Value>,
    ) -> ActivityExecutionError {
        let details = heartbeat.map(|value| Payloads {
            payloads: vec![json_payload(&value)],
        });
        let cause_info = match cause {
            FailureInfo::TimeoutFailureInfo(mut info) => {
                info.last_heartbeat_details = details;
                FailureInfo::TimeoutFailureInfo(info)
            }
            FailureInfo::ApplicationFailureInfo(mut info) => {
                info.details = details;
                FailureInfo::ApplicationFailureInfo(info)
            }
            other => other,
        };
        let failure = Failure {
            message: "activity failed".into(),
            failure_info: Some(FailureInfo::ActivityFailureInfo(
                ActivityFailureInfo::default(),
            )),
            cause: Some(Box::new(Failure {
                message: "cause".into(),
                failure_info: Some(cause_info),
                ..Default::default()
            })),
            ..Default::default()
        };
        let decoded = DefaultFailureConverter::default()
            .to_error(
                failure,
                &PayloadConverter::default(),
                &SerializationContextData::None,
            )
            .expect("decode the failure");
        let IncomingError::Activity(activity) = decoded else {
            panic!("expected an activity failure, got {decoded:?}");
        };
        ActivityExecutionError::Failed(activity)
    }

    fn timed_out(
        kind: ProtoTimeoutType,
        heartbeat: Option<serde_json::Value>,
    ) -> ActivityExecutionError {
        job_failed(
            FailureInfo::TimeoutFailureInfo(TimeoutFailureInfo {
                timeout_type: kind.into(),
                last_heartbeat_details: None,
            }),
            heartbeat,
        )
    }

    fn application(
        type_name: &str,
        non_retryable: bool,
        details: Option<serde_json::Value>,
    ) -> ActivityExecutionError {
        job_failed(
            FailureInfo::ApplicationFailureInfo(ApplicationFailureInfo {
                r#type: type_name.into(),
                non_retryable,
                ..Default::default()
            }),
            details,
        )
    }

    fn first(attempt: u32) -> JobResume {
        JobResume {
            attempt,
            point: None,
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_command_lost_by_heartbeat_timeout_resumes_from_its_last_checkpoint() {
        let heartbeat = json!({"elapsed": 1, "stdout_lines": 3, "stderr_lines": 0,
            "output_bytes": 9, "tail": [], "checkpoint": {"count": 40}});
        let error = timed_out(ProtoTimeoutType::Heartbeat, Some(heartbeat));
        assert_eq!(
            next_point(&first(1), JobKind::Command, MINUTE, &error),
            Some(ResumePoint::Checkpoint {
                from_attempt: 1,
                value: json!({"count": 40}),
            })
        );
    }

    #[test]
    fn a_command_stopped_by_its_worker_s_shutdown_resumes_from_the_failure_s_details() {
        let progress = json!({"checkpoint": [1, 2]});
        let error = application(WORKER_SHUTDOWN_FAILURE, false, Some(progress));
        assert_eq!(
            next_point(&first(2), JobKind::Command, MINUTE, &error),
            Some(ResumePoint::Checkpoint {
                from_attempt: 2,
                value: json!([1, 2]),
            })
        );
    }

    #[test]
    fn only_a_lost_unit_leaves_a_resume_point() {
        let progress = json!({"checkpoint": {"count": 40}, "elapsed": 1, "remaining": 1});
        for (why, error) in [
            (
                "a job that failed on its own",
                application("JobFailed", true, Some(progress.clone())),
            ),
            (
                "another retryable failure",
                application("Other", false, Some(progress.clone())),
            ),
            (
                "a job out of time",
                timed_out(ProtoTimeoutType::StartToClose, Some(progress.clone())),
            ),
            (
                "a unit lost before its first heartbeat",
                timed_out(ProtoTimeoutType::Heartbeat, None),
            ),
            (
                "a heartbeat without a checkpoint",
                timed_out(ProtoTimeoutType::Heartbeat, Some(json!({"elapsed": 5}))),
            ),
            (
                "a null checkpoint",
                timed_out(
                    ProtoTimeoutType::Heartbeat,
                    Some(json!({"checkpoint": null})),
                ),
            ),
        ] {
            assert_eq!(
                next_point(&first(1), JobKind::Command, MINUTE, &error),
                None,
                "{why}"
            );
        }
    }

    #[test]
    fn the_timed_job_resumes_by_what_all_attempts_worked() {
        let lost_at = |elapsed: u64| {
            timed_out(
                ProtoTimeoutType::Heartbeat,
                Some(json!({"elapsed": elapsed * 1_000_000_000u64, "remaining": 0})),
            )
        };
        let after_first = next_point(&first(1), JobKind::Timed, MINUTE, &lost_at(40));
        assert_eq!(
            after_first,
            Some(ResumePoint::Elapsed {
                from_attempt: 1,
                elapsed: Duration::from_secs(40),
            })
        );
        let second = JobResume {
            attempt: 2,
            point: after_first,
        };
        assert_eq!(second.time_left(MINUTE), Duration::from_secs(20));
        assert_eq!(second.checkpoint(), None);
        // The second attempt worked 15 s of the 20 s left.
        assert_eq!(
            next_point(&second, JobKind::Timed, MINUTE, &lost_at(15)),
            Some(ResumePoint::Elapsed {
                from_attempt: 2,
                elapsed: Duration::from_secs(55),
            })
        );
        // Never more than the job: what is left is then nothing.
        let done =
            next_point(&second, JobKind::Timed, MINUTE, &lost_at(30)).map(|point| JobResume {
                attempt: 3,
                point: Some(point),
            });
        assert_eq!(done.map(|r| r.time_left(MINUTE)), Some(Duration::ZERO));
    }

    const OWN: JobKind = JobKind::OwnActivity { takes_resume: true };

    #[test]
    fn an_own_activity_that_takes_it_resumes_from_its_first_heartbeat_detail_as_sent() {
        let detail = json!({"batch": 12, "of": 30});
        for (how, error) in [
            (
                "heartbeats stopped",
                timed_out(ProtoTimeoutType::Heartbeat, Some(detail.clone())),
            ),
            (
                "retried on a dead unit's queue",
                timed_out(ProtoTimeoutType::ScheduleToStart, Some(detail.clone())),
            ),
            (
                "its worker shut down, the activity giving its progress",
                application(WORKER_SHUTDOWN_FAILURE, false, Some(detail.clone())),
            ),
        ] {
            assert_eq!(
                next_point(&first(2), OWN, MINUTE, &error),
                Some(ResumePoint::HeartbeatDetail {
                    from_attempt: 2,
                    payload: json_payload(&detail),
                }),
                "{how}"
            );
        }
        let resume = JobResume {
            attempt: 3,
            point: next_point(
                &first(2),
                OWN,
                MINUTE,
                &timed_out(ProtoTimeoutType::Heartbeat, Some(detail.clone())),
            ),
        };
        assert_eq!(resume.heartbeat_detail(), json_payload(&detail));
        assert_eq!(resume.kind(), Some("heartbeat_details"));
        // Nothing to resume from: the extra argument is `null`.
        assert_eq!(
            first(1).heartbeat_detail(),
            json_payload(&serde_json::Value::Null)
        );
    }

    #[test]
    fn an_own_activity_resumes_only_from_a_lost_unit_and_only_when_it_takes_it() {
        let detail = json!({"batch": 12});
        let lost = timed_out(ProtoTimeoutType::Heartbeat, Some(detail.clone()));
        assert_eq!(
            next_point(
                &first(1),
                JobKind::OwnActivity {
                    takes_resume: false
                },
                MINUTE,
                &lost
            ),
            None
        );
        for (why, error) in [
            (
                "its own failure",
                application("InvalidDataset", false, Some(detail.clone())),
            ),
            (
                "an SDK's shutdown failure, which has no details",
                application(WORKER_SHUTDOWN_FAILURE, false, None),
            ),
            (
                "out of time",
                timed_out(ProtoTimeoutType::StartToClose, Some(detail.clone())),
            ),
            (
                "lost before its first heartbeat",
                timed_out(ProtoTimeoutType::Heartbeat, None),
            ),
        ] {
            assert_eq!(next_point(&first(1), OWN, MINUTE, &error), None, "{why}");
        }
        let own = |resume| WorkflowInput {
            activity: Some("export".into()),
            activity_resume: resume,
            ..Default::default()
        };
        assert_eq!(JobKind::of(&own(Some(true))), OWN);
        assert_eq!(
            JobKind::of(&own(None)),
            JobKind::OwnActivity {
                takes_resume: false
            }
        );
    }

    #[test]
    fn a_timed_job_whose_heartbeats_do_not_say_starts_over() {
        // The Go worker's heartbeats carry no `elapsed`.
        let error = timed_out(ProtoTimeoutType::Heartbeat, Some(json!("working")));
        assert_eq!(next_point(&first(1), JobKind::Timed, MINUTE, &error), None);
        assert_eq!(first(2).time_left(MINUTE), MINUTE);
    }
}
