//! What clients see of a run: its result, the answer of its `status` query, the deployment's
//! progress, and the client-side definitions to start a run and query it. A client (the
//! starter, another service) needs only these, not the workflow's code.

use serde::{Deserialize, Serialize};
use temporalio_common::{
    HasWorkflowDefinition, QueryDefinition, WorkflowDefinition, data_converters::RawValue,
};

use crate::{CommandResult, GoDuration, WORKFLOW_TYPE};

/// How a run's own activity failed (runs with `activity`): the failure the activity raised,
/// which is also the run's failure (type, message, details, non-retryable flag).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    /// The activity type that failed.
    pub activity: String,
    /// The failure's type (an exception's class name, an `ApplicationError`'s `type`); empty
    /// when it has none.
    pub failure_type: String,
    pub message: String,
    pub non_retryable: bool,
}

/// What the run's job did: the user's command or the user's own activity (none for the
/// original's timed job). On the wire the command's result as it always was, or the
/// activity's `{"activity", "result"}`: either way `job.result` is what the job returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JobOutcome {
    Command(CommandResult),
    Activity(ActivityResult),
}

impl JobOutcome {
    /// The user's command's result, when the job was a command.
    pub fn command(&self) -> Option<&CommandResult> {
        match self {
            JobOutcome::Command(command) => Some(command),
            JobOutcome::Activity(_) => None,
        }
    }

    /// What the job returned: the command's result file, the activity's return value.
    pub fn result(&self) -> Option<&serde_json::Value> {
        match self {
            JobOutcome::Command(command) => command.result.as_ref(),
            JobOutcome::Activity(activity) => activity.result.as_ref(),
        }
    }
}

/// The result of a run's own activity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityResult {
    /// The activity type that ran.
    pub activity: String,
    /// Its return value (absent when it returned nothing or `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// Where a run is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Waiting,
    /// Waiting for a slot under `MAX_CONCURRENT_COMPUTE` (first come, first served).
    WaitingForCapacity,
    Provisioning,
    Deploying,
    Running,
    Deprovisioning,
    Done,
    Failed,
    Cancelled,
}

/// When a run entered a phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseEntry {
    pub phase: Phase,
    pub attempt: u32,
    /// RFC 3339 workflow time.
    pub at: String,
}

/// Answer of the `status` query.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub phase: Phase,
    /// Every phase the run entered, in order, with its time.
    pub phase_history: Vec<PhaseEntry>,
    pub attempt: u32,
    pub compute_name: Option<String>,
    pub compute_id: Option<String>,
    pub task_queue: Option<String>,
    pub provider: Option<String>,
    pub error: Option<String>,
    /// How the run's own activity failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_failure: Option<JobFailure>,
    /// Every unit of compute the run has used and deleted so far.
    #[serde(default)]
    pub usage: Vec<UnitUsage>,
    /// Each attempt whose job resumed from what a lost unit last recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumes: Vec<Resumed>,
}

/// A job that resumed on a fresh unit from the last heartbeat its lost unit sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    /// The attempt (unit of compute) the job resumed on.
    pub attempt: u32,
    /// The lost attempt whose last heartbeat it resumed from.
    pub from_attempt: u32,
    /// What it resumed from.
    pub from: ResumedFrom,
}

/// What a job resumed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumedFrom {
    /// The command's checkpoint (`TEA_CHECKPOINT_FILE`), of this many bytes of JSON.
    Checkpoint { bytes: u64 },
    /// The timed job's elapsed time: it works only for what is left.
    Elapsed { elapsed: GoDuration },
    /// The own activity's last heartbeat detail (its extra, last argument), of this many bytes
    /// as its SDK encoded it.
    HeartbeatDetails { bytes: u64 },
}

impl std::fmt::Display for Resumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.from {
            ResumedFrom::Checkpoint { bytes } => write!(
                f,
                "resumed from a checkpoint at attempt {} ({bytes} bytes, from attempt {})",
                self.attempt, self.from_attempt
            ),
            ResumedFrom::Elapsed { elapsed } => write!(
                f,
                "resumed after {elapsed} of work at attempt {} (from attempt {})",
                self.attempt, self.from_attempt
            ),
            ResumedFrom::HeartbeatDetails { bytes } => write!(
                f,
                "resumed from the last heartbeat details at attempt {} ({bytes} bytes, from \
                 attempt {})",
                self.attempt, self.from_attempt
            ),
        }
    }
}

/// Result of a completed run: what ran where, and that it was deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub compute_name: String,
    pub compute_id: String,
    pub task_queue: String,
    pub provider: String,
    pub job_duration: GoDuration,
    pub deleted: bool,
    /// Compute attempts the run used (more than one when a worker died or never came up).
    pub attempts: u32,
    /// What the user's command or own activity did (runs with a `command` or an
    /// `activity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobOutcome>,
    /// The compute each attempt used and for how long (absent in results of runs from before
    /// it was recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<UnitUsage>,
}

/// How long one unit of compute existed for a run, and what that cost where the provider
/// knows its price.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitUsage {
    pub compute_name: String,
    pub provider: String,
    /// From the end of its `Create` to the end of its `Delete` (workflow time).
    pub seconds: f64,
    /// `seconds` times the provider's per-second price (App Platform: its instance size's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_cost_usd: Option<f64>,
    /// The size the provider created for the run's `resources` (`apps-s-1vcpu-2gb`,
    /// `0.5 CPU, 256 MiB`); absent when the run asked for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// Heartbeat details of `WaitForAppBuild`: where the deployment is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitProgress {
    pub phase: String,
    pub detail: Option<String>,
    pub worker_polling: bool,
}

/// `TriggerExternalWorkflow` as a client starts it: a raw input (the workflow decodes it
/// itself, see [`crate::input`]; build it with [`crate::WorkflowInput::to_raw`]) and a
/// [`RunOutcome`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TriggerExternalWorkflowClient;

impl WorkflowDefinition for TriggerExternalWorkflowClient {
    type Input = RawValue;
    type Output = RunOutcome;
    fn name(&self) -> &str {
        WORKFLOW_TYPE
    }
}

impl HasWorkflowDefinition for TriggerExternalWorkflowClient {
    type Run = Self;
}

/// The workflow's `status` query: where the run is.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatusQuery;

/// Name of the `status` query.
pub const STATUS_QUERY: &str = "status";

impl QueryDefinition for StatusQuery {
    type Workflow = TriggerExternalWorkflowClient;
    type Input = ();
    type Output = RunStatus;
    fn name(&self) -> &str {
        STATUS_QUERY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_reads_as_the_status_line_says_it() {
        let resumed = Resumed {
            attempt: 2,
            from_attempt: 1,
            from: ResumedFrom::Checkpoint { bytes: 12 },
        };
        assert_eq!(
            resumed.to_string(),
            "resumed from a checkpoint at attempt 2 (12 bytes, from attempt 1)"
        );
        let wire = serde_json::to_value(&resumed).expect("serialize");
        assert_eq!(
            wire["from"],
            serde_json::json!({"checkpoint": {"bytes": 12}})
        );
        let timed = Resumed {
            from: ResumedFrom::Elapsed {
                elapsed: GoDuration::from_secs(40),
            },
            ..resumed.clone()
        };
        assert_eq!(
            timed.to_string(),
            "resumed after 40s of work at attempt 2 (from attempt 1)"
        );
        let own = Resumed {
            from: ResumedFrom::HeartbeatDetails { bytes: 20 },
            ..resumed
        };
        assert_eq!(
            own.to_string(),
            "resumed from the last heartbeat details at attempt 2 (20 bytes, from attempt 1)"
        );
        assert_eq!(
            serde_json::to_value(&own).expect("serialize")["from"],
            serde_json::json!({"heartbeat_details": {"bytes": 20}})
        );
    }

    #[test]
    fn a_command_s_result_keeps_its_wire_form_and_an_activity_s_has_its_own() {
        let command = JobOutcome::Command(CommandResult {
            exit_code: 0,
            result: Some(serde_json::json!({"rows": 3})),
            ..Default::default()
        });
        let json = serde_json::to_value(&command).unwrap();
        assert_eq!(
            json,
            serde_json::to_value(CommandResult {
                exit_code: 0,
                result: Some(serde_json::json!({"rows": 3})),
                ..Default::default()
            })
            .unwrap()
        );
        assert_eq!(serde_json::from_value::<JobOutcome>(json).unwrap(), command);
        let activity = JobOutcome::Activity(ActivityResult {
            activity: "compose_greeting".into(),
            result: Some(serde_json::json!({"greeting": "Hello"})),
        });
        let json = serde_json::to_value(&activity).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"activity": "compose_greeting", "result": {"greeting": "Hello"}})
        );
        let decoded: JobOutcome = serde_json::from_value(json).unwrap();
        assert_eq!(
            decoded.result(),
            Some(&serde_json::json!({"greeting": "Hello"}))
        );
        assert_eq!(decoded, activity);
    }

    #[test]
    fn phases_are_snake_case_on_the_wire() {
        let name = serde_json::to_value(Phase::WaitingForCapacity).expect("serialize");
        assert_eq!(name, "waiting_for_capacity");
        let phase: Phase = serde_json::from_value(name).expect("deserialize");
        assert_eq!(phase, Phase::WaitingForCapacity);
    }
}
