//! What a run's job did, told truthfully: measured from the run's history (when the job's
//! last attempt started and how long it ran until it closed), with the command's exit code or
//! the activity's outcome and the job's result. The starter's final lines and `starter status`
//! of a closed run both say it this way.

use serde::{Deserialize, Serialize};
use tea_contract::{GoDuration, JobOutcome, RunOutcome};
use temporalio_client::{Client, WorkflowFetchHistoryOptions};
use temporalio_common::protos::temporal::api::{
    failure::v1::{Failure, failure::FailureInfo},
    history::v1::{HistoryEvent, history_event::Attributes},
};

/// How many characters of a result the summary line shows (`--json` shows it whole).
pub const RESULT_SHOWN: usize = 200;

/// The job as Temporal recorded it: its activity's last attempt on the run's last unit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// The activity type (`long-running-command`, `run-command`, or the user's own).
    pub activity: String,
    /// The attempt on its unit (1 unless the activity was retried there).
    pub attempt: u32,
    /// RFC 3339 time the attempt started.
    pub started_at: String,
    /// How long it ran, from its start to its end; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran: Option<GoDuration>,
    /// `completed`, `failed`, `timed out`, `cancelled`, or `running`.
    pub ended: String,
    /// How it failed, when it did: its failure's type and whether it may be retried
    /// (`InvalidDataset, non-retryable`), or the kind of timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The job of the latest run of `workflow_id` as its history records it; `None` when no job
/// started (the run failed or was cancelled first).
pub async fn job_run(client: &Client, workflow_id: &str) -> anyhow::Result<Option<JobRun>> {
    let events = crate::handle(client, workflow_id)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .map_err(|e| anyhow::anyhow!("could not read the history of {workflow_id}: {e}"))?;
    Ok(job_run_in(&events))
}

/// The last job activity (one scheduled on another queue than the run's own: the unit's)
/// that started, in `events`.
pub fn job_run_in(events: &[HistoryEvent]) -> Option<JobRun> {
    let own_queue = events.iter().find_map(|e| match &e.attributes {
        Some(Attributes::WorkflowExecutionStartedEventAttributes(started)) => {
            started.task_queue.as_ref().map(|q| q.name.clone())
        }
        _ => None,
    })?;
    let mut job: Option<(i64, JobRun, Option<std::time::SystemTime>)> = None;
    let mut jobs: Vec<(i64, String)> = Vec::new();
    for event in events {
        let at = event
            .event_time
            .as_ref()
            .and_then(|t| system_time(t.seconds, t.nanos));
        match &event.attributes {
            Some(Attributes::ActivityTaskScheduledEventAttributes(scheduled))
                if scheduled
                    .task_queue
                    .as_ref()
                    .is_some_and(|q| q.name != own_queue) =>
            {
                let activity = scheduled.activity_type.as_ref().map(|t| t.name.clone());
                jobs.push((event.event_id, activity.unwrap_or_default()));
            }
            Some(Attributes::ActivityTaskStartedEventAttributes(started)) => {
                let Some((_, activity)) = jobs
                    .iter()
                    .find(|(id, _)| *id == started.scheduled_event_id)
                else {
                    continue;
                };
                let run = JobRun {
                    activity: activity.clone(),
                    attempt: u32::try_from(started.attempt).unwrap_or(1),
                    started_at: at.map(rfc3339).unwrap_or_default(),
                    ran: None,
                    ended: "running".to_owned(),
                    failure: None,
                };
                job = Some((started.scheduled_event_id, run, at));
            }
            Some(attributes) => {
                let Some((scheduled, ended, failure)) = closed(attributes) else {
                    continue;
                };
                if let Some((id, run, started)) = &mut job
                    && *id == scheduled
                {
                    run.ended = ended.to_owned();
                    run.failure = failure.and_then(failure_kind);
                    run.ran = started
                        .zip(at)
                        .and_then(|(from, to)| to.duration_since(from).ok())
                        .map(GoDuration);
                }
            }
            None => {}
        }
    }
    job.map(|(_, run, _)| run)
}

/// The scheduled event an activity's closing event closes, how it ended, and its failure.
fn closed(attributes: &Attributes) -> Option<(i64, &'static str, Option<&Failure>)> {
    match attributes {
        Attributes::ActivityTaskCompletedEventAttributes(a) => {
            Some((a.scheduled_event_id, "completed", None))
        }
        Attributes::ActivityTaskFailedEventAttributes(a) => {
            Some((a.scheduled_event_id, "failed", a.failure.as_ref()))
        }
        Attributes::ActivityTaskTimedOutEventAttributes(a) => {
            Some((a.scheduled_event_id, "timed out", a.failure.as_ref()))
        }
        Attributes::ActivityTaskCanceledEventAttributes(a) => {
            Some((a.scheduled_event_id, "cancelled", None))
        }
        _ => None,
    }
}

/// What kind of failure ended the job: an application failure's type (and whether it may be
/// retried), or which timeout.
fn failure_kind(failure: &Failure) -> Option<String> {
    match &failure.failure_info {
        Some(FailureInfo::ApplicationFailureInfo(info)) => {
            let kind = Some(info.r#type.as_str()).filter(|t| !t.is_empty());
            let retry = if info.non_retryable {
                "non-retryable"
            } else {
                "retryable"
            };
            Some(kind.map_or_else(|| retry.to_owned(), |kind| format!("{kind}, {retry}")))
        }
        Some(FailureInfo::TimeoutFailureInfo(info)) => Some(
            info.timeout_type()
                .as_str_name()
                .trim_start_matches("TIMEOUT_TYPE_")
                .to_lowercase()
                .replace('_', "-")
                + " timeout",
        ),
        _ => None,
    }
}

fn system_time(seconds: i64, nanos: i32) -> Option<std::time::SystemTime> {
    let secs = u64::try_from(seconds).ok()?;
    let nanos = u32::try_from(nanos).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos))
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// What the job did, in one line: `job ran 8s, exit code 0`, `activity compose_greeting ran
/// 1.2s, completed`; from the job's own measure (a command's) or the history's.
pub fn job_line(outcome: Option<&RunOutcome>, run: Option<&JobRun>) -> Option<String> {
    let job = outcome.and_then(|o| o.job.as_ref());
    let ran =
        |measured: Option<GoDuration>| measured.map_or_else(String::new, |d| format!(" ran {d}"));
    match (job, run) {
        (Some(JobOutcome::Command(command)), _) => Some(format!(
            "command{}, exit code {}",
            ran(Some(command.duration)),
            command.exit_code
        )),
        (Some(JobOutcome::Activity(activity)), run) => Some(format!(
            "activity {}{}, completed",
            activity.activity,
            ran(run.and_then(|r| r.ran))
        )),
        (None, Some(run)) => {
            let what = match run.activity.as_str() {
                tea_contract::LONG_RUNNING_ACTIVITY | tea_contract::RUN_COMMAND_ACTIVITY => {
                    "job".to_owned()
                }
                own => format!("activity {own}"),
            };
            let attempt = match run.attempt {
                0 | 1 => String::new(),
                n => format!(" (attempt {n})"),
            };
            let failure = run
                .failure
                .as_ref()
                .map_or_else(String::new, |failure| format!(" ({failure})"));
            Some(format!(
                "{what}{}{attempt}, {}{failure}",
                ran(run.ran),
                run.ended
            ))
        }
        (None, None) => None,
    }
}

/// The job's result, shortened to [`RESULT_SHOWN`] characters.
pub fn result_line(outcome: Option<&RunOutcome>) -> Option<String> {
    let result = outcome?.job.as_ref()?.result()?;
    let text = result.to_string();
    if text.chars().count() <= RESULT_SHOWN {
        return Some(text);
    }
    let shown: String = text.chars().take(RESULT_SHOWN).collect();
    Some(format!(
        "{shown}... ({} characters; --json shows it whole)",
        text.chars().count()
    ))
}

#[cfg(test)]
mod tests {
    use tea_contract::{ActivityResult, CommandResult};

    use super::*;

    fn outcome(job: Option<JobOutcome>) -> RunOutcome {
        RunOutcome {
            compute_name: "ext-a-1".into(),
            compute_id: "ext-a-1".into(),
            task_queue: "ext-a-1".into(),
            provider: "local".into(),
            job_duration: GoDuration::from_secs(60),
            deleted: true,
            attempts: 1,
            job,
            usage: Vec::new(),
        }
    }

    #[test]
    fn a_command_says_what_it_measured_and_its_exit_code() {
        let command = outcome(Some(JobOutcome::Command(CommandResult {
            exit_code: 0,
            duration: GoDuration::from_millis(8_021),
            result: Some(serde_json::json!({"rows": 3})),
            ..Default::default()
        })));
        assert_eq!(
            job_line(Some(&command), None).as_deref(),
            Some("command ran 8s 21ms, exit code 0")
        );
        assert_eq!(
            result_line(Some(&command)).as_deref(),
            Some(r#"{"rows":3}"#)
        );
    }

    #[test]
    fn an_activity_and_the_timed_job_say_what_the_history_measured() {
        let run = JobRun {
            activity: "compose_greeting".into(),
            attempt: 2,
            started_at: "2026-01-01T00:00:00Z".into(),
            ran: Some(GoDuration::from_millis(1_500)),
            ended: "completed".into(),
            failure: None,
        };
        let activity = outcome(Some(JobOutcome::Activity(ActivityResult {
            activity: "compose_greeting".into(),
            result: Some(serde_json::json!("x".repeat(300))),
        })));
        assert_eq!(
            job_line(Some(&activity), Some(&run)).as_deref(),
            Some("activity compose_greeting ran 1s 500ms, completed")
        );
        let shown = result_line(Some(&activity)).unwrap();
        assert!(
            shown.ends_with("... (302 characters; --json shows it whole)"),
            "{shown}"
        );
        let timed = JobRun {
            activity: tea_contract::LONG_RUNNING_ACTIVITY.into(),
            attempt: 1,
            ..run.clone()
        };
        assert_eq!(
            job_line(Some(&outcome(None)), Some(&timed)).as_deref(),
            Some("job ran 1s 500ms, completed")
        );
        let failed = JobRun {
            ended: "failed".into(),
            failure: failure_kind(&Failure {
                failure_info: Some(FailureInfo::ApplicationFailureInfo(Default::default())),
                ..Default::default()
            }),
            ..run
        };
        assert_eq!(
            job_line(None, Some(&failed)).as_deref(),
            Some("activity compose_greeting ran 1s 500ms (attempt 2), failed (retryable)")
        );
    }
}
