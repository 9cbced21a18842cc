//! What a run is doing now: the workflow's `status` query combined with what Temporal knows of
//! its pending activities (the external job's last heartbeat, the deployment's phase).

use serde::{Deserialize, Serialize};
use tea_contract::{
    CommandProgress, JobProgress, LONG_RUNNING_ACTIVITY, RUN_COMMAND_ACTIVITY,
    WAIT_FOR_APP_BUILD_ACTIVITY,
};
use tea_contract::{RunStatus, StatusQuery, WaitProgress};
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
    /// RFC 3339 time of the job's last heartbeat.
    pub last_heartbeat: Option<String>,
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
                report.last_heartbeat = activity.last_heartbeat_time.as_ref().map(|t| {
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::new(
                                u64::try_from(t.seconds).unwrap_or(0),
                                u32::try_from(t.nanos).unwrap_or(0),
                            ),
                    )
                    .to_string()
                });
            }
            Some(WAIT_FOR_APP_BUILD_ACTIVITY) => {
                report.deployment = first.and_then(|p| serde_json::from_slice(&p.data).ok());
            }
            _ => {}
        }
    }
    report.status = handle
        .query(StatusQuery, (), WorkflowQueryOptions::default())
        .await
        .ok();
    Ok(report)
}

/// The run's pending `long-running-command` activity, once a worker has started it.
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
            (name == Some(LONG_RUNNING_ACTIVITY) || name == Some(RUN_COMMAND_ACTIVITY))
                && a.last_started_time.is_some()
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
