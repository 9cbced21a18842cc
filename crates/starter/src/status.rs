//! What a run is doing now: the workflow's `status` query combined with what Temporal knows of
//! its pending activities (the external job's last heartbeat, the deployment's phase); once it
//! has closed, what its job did ([`crate::summary`]) and its result.

use serde::{Deserialize, Serialize};
use tea_contract::{
    CREATE_ACTIVITY, CommandProgress, DELETE_ACTIVITY, JobProgress, LONG_RUNNING_ACTIVITY,
    RUN_COMMAND_ACTIVITY, WAIT_FOR_APP_BUILD_ACTIVITY, decode_json,
};
use tea_contract::{RunOutcome, RunStatus, StatusQuery, WaitProgress};

use crate::summary::JobRun;
use temporalio_client::{Client, WorkflowDescribeOptions, WorkflowHandle, WorkflowQueryOptions};
use temporalio_common::{
    HasWorkflowDefinition, protos::temporal::api::workflow::v1::PendingActivityInfo,
};

/// A snapshot of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunReport {
    pub workflow_id: String,
    pub run_id: String,
    /// Temporal's execution status (`running`, `completed`, `failed`, ...).
    pub execution_status: String,
    /// The workflow's own account (absent when the query could not be answered).
    pub status: Option<RunStatus>,
    /// The deployment's phase while the compute is being readied.
    pub deployment: Option<WaitProgress>,
    /// The job's last heartbeat (the original's timed job).
    pub job: Option<JobProgress>,
    /// The user's command's last heartbeat: output counts, last lines, its own progress.
    pub command: Option<CommandProgress>,
    /// The user's own activity's last heartbeat, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<ActivityProgress>,
    /// RFC 3339 time of the job's last heartbeat.
    pub last_heartbeat: Option<String>,
    /// What the job did, from the run's history, once it has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_run: Option<JobRun>,
    /// The run's result, once it has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
}

/// The user's own activity as it runs: its attempt and the details of its last heartbeat (as
/// JSON, whatever it reports).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityProgress {
    pub activity: String,
    pub attempt: u32,
    pub details: Vec<serde_json::Value>,
}

impl RunReport {
    /// One line for a terminal or a log.
    pub fn one_line(&self) -> String {
        let mut parts = vec![format!("[{}]", self.execution_status)];
        if let Some(status) = &self.status {
            parts.push(format!("phase={}", phase_name(status)));
            if status.attempt > 0 {
                parts.push(format!("attempt={}", status.attempt));
            }
            if let Some(name) = &status.compute_name {
                parts.push(format!("compute={name}"));
            }
            if let Some(resumed) = status.resumes.last() {
                parts.push(resumed.to_string());
            }
        }
        if let Some(deployment) = &self.deployment {
            parts.push(format!("deployment={}", deployment.phase));
        }
        if let Some(job) = &self.job {
            parts.push(format!("job {} done, {} left", job.elapsed, job.remaining));
        }
        if let Some(activity) = &self.activity {
            parts.push(format!("activity {}", activity.activity));
            if activity.attempt > 1 {
                parts.push(format!("attempt {}", activity.attempt));
            }
            if !activity.details.is_empty() {
                let details: Vec<String> = activity.details.iter().map(|d| d.to_string()).collect();
                parts.push(format!("heartbeat {}", details.join(" ")));
            }
        }
        if let Some(command) = &self.command {
            parts.push(format!(
                "job {} in, {} lines",
                command.elapsed,
                command.stdout_lines + command.stderr_lines
            ));
            if let Some(fraction) = command.fraction {
                parts.push(format!("{:.0}%", fraction * 100.0));
            }
            if let Some(message) = &command.message {
                parts.push(message.clone());
            }
            if let Some(refused) = &command.checkpoint_error {
                parts.push(format!("(checkpoint refused: {refused})"));
            }
        }
        parts.join(" ")
    }
}

fn phase_name(status: &RunStatus) -> String {
    serde_json::to_value(status.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{:?}", status.phase))
}

/// Asks Temporal about the latest run of `workflow_id`.
pub async fn report(client: &Client, workflow_id: &str) -> anyhow::Result<RunReport> {
    let handle = crate::handle(client, workflow_id);
    let description = handle
        .describe(WorkflowDescribeOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("could not describe workflow {workflow_id}: {e}"))?;
    let raw = description.raw();
    let info = raw.workflow_execution_info.clone().unwrap_or_default();
    let mut report = RunReport {
        workflow_id: workflow_id.to_owned(),
        run_id: info
            .execution
            .as_ref()
            .map(|e| e.run_id.clone())
            .unwrap_or_default(),
        execution_status: info
            .status()
            .as_str_name()
            .trim_start_matches("WORKFLOW_EXECUTION_STATUS_")
            .to_lowercase(),
        ..Default::default()
    };
    for activity in &raw.pending_activities {
        let name = activity.activity_type.as_ref().map(|t| t.name.as_str());
        let first = activity
            .heartbeat_details
            .as_ref()
            .and_then(|d| d.payloads.first());
        match name {
            Some(LONG_RUNNING_ACTIVITY | RUN_COMMAND_ACTIVITY) => {
                if name == Some(RUN_COMMAND_ACTIVITY) {
                    report.command = first.and_then(|p| serde_json::from_slice(&p.data).ok());
                } else {
                    report.job = first.and_then(|p| serde_json::from_slice(&p.data).ok());
                }
                report.last_heartbeat = heartbeat_time(activity);
            }
            Some(WAIT_FOR_APP_BUILD_ACTIVITY) => {
                report.deployment = first.and_then(|p| serde_json::from_slice(&p.data).ok());
            }
            Some(CREATE_ACTIVITY | DELETE_ACTIVITY) | None => {}
            Some(own) => {
                let details = activity
                    .heartbeat_details
                    .as_ref()
                    .map_or_else(Vec::new, |d| {
                        d.payloads
                            .iter()
                            .filter_map(|p| decode_json(p).ok())
                            .collect()
                    });
                report.activity = Some(ActivityProgress {
                    activity: own.to_owned(),
                    attempt: u32::try_from(activity.attempt).unwrap_or(1),
                    details,
                });
                report.last_heartbeat = heartbeat_time(activity);
            }
        }
    }
    report.status = handle
        .query(StatusQuery, (), WorkflowQueryOptions::default())
        .await
        .ok();
    if report.execution_status != "running" {
        report.job_run = crate::summary::job_run(client, workflow_id).await?;
        if report.execution_status == "completed" {
            report.outcome = crate::outcome(client, workflow_id).await?;
        }
    }
    Ok(report)
}

/// RFC 3339 time of `activity`'s last heartbeat.
fn heartbeat_time(activity: &PendingActivityInfo) -> Option<String> {
    activity.last_heartbeat_time.as_ref().map(|t| {
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH
                + std::time::Duration::new(
                    u64::try_from(t.seconds).unwrap_or(0),
                    u32::try_from(t.nanos).unwrap_or(0),
                ),
        )
        .to_string()
    })
}

/// The run's pending job (the timed job, a command or an own activity), once a worker has
/// started it.
pub async fn pending_job<W: HasWorkflowDefinition>(
    handle: &WorkflowHandle<Client, W>,
) -> Option<PendingActivityInfo> {
    let description = handle
        .describe(WorkflowDescribeOptions::default())
        .await
        .ok()?;
    description
        .raw()
        .pending_activities
        .iter()
        .find(|a| {
            let name = a.activity_type.as_ref().map(|t| t.name.as_str());
            let provisioning = [
                CREATE_ACTIVITY,
                WAIT_FOR_APP_BUILD_ACTIVITY,
                DELETE_ACTIVITY,
            ];
            name.is_some_and(|name| !provisioning.contains(&name)) && a.last_started_time.is_some()
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use tea_contract::{Phase, Resumed, ResumedFrom};

    use super::*;

    #[test]
    fn the_status_line_shows_a_resume_and_a_refused_checkpoint() {
        let report = RunReport {
            execution_status: "running".into(),
            status: Some(RunStatus {
                phase: Phase::Running,
                attempt: 2,
                resumes: vec![Resumed {
                    attempt: 2,
                    from_attempt: 1,
                    from: ResumedFrom::Checkpoint { bytes: 13 },
                }],
                ..Default::default()
            }),
            command: Some(CommandProgress {
                checkpoint_error: Some("the checkpoint file is 70000 bytes".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let line = report.one_line();
        assert!(
            line.contains("attempt=2 resumed from a checkpoint at attempt 2 (13 bytes"),
            "{line}"
        );
        assert!(
            line.contains("(checkpoint refused: the checkpoint file is 70000 bytes)"),
            "{line}"
        );
    }
}
