//! Payload types: the workflow input, the long-running activity's signature and its heartbeat
//! details.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use temporalio_macros::activity_definitions;
use temporalio_sdk::activities::ActivityError;

use crate::GoDuration;

/// How long the job runs when the input does not say (the original's one minute).
pub const DEFAULT_JOB_DURATION: GoDuration = GoDuration::from_secs(60);
/// The pause before provisioning and after the job (the original's five seconds).
pub const DEFAULT_PAUSE: GoDuration = GoDuration::from_secs(5);
/// Heartbeat timeout of every activity (the original's ten seconds).
pub const DEFAULT_HEARTBEAT_TIMEOUT: GoDuration = GoDuration::from_secs(10);
/// How long the job may wait on its queue for a worker to pick it up before the run tears the
/// compute down (the original waited forever).
pub const DEFAULT_WORKER_START_TIMEOUT: GoDuration = GoDuration::from_secs(300);

/// Compute provisioned in turn, at most, when a worker dies or never comes up.
pub const DEFAULT_MAX_COMPUTE_ATTEMPTS: u32 = 3;
/// Upper bound on `max_compute_attempts` (the attempt is one digit of the compute name).
pub const MAX_COMPUTE_ATTEMPTS_LIMIT: u32 = 9;

/// Input of [`crate::WORKFLOW_TYPE`]. The first three fields are the original's; the rest are
/// optional, so a Go starter sending only `registry`, `repository` and `tag` still works.
/// Durations are Go `time.Duration` integers (nanoseconds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowInput {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_duration: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_start_timeout: Option<GoDuration>,
    /// How many units of compute a run may provision in turn when one dies or never becomes
    /// ready (default [`DEFAULT_MAX_COMPUTE_ATTEMPTS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_compute_attempts: Option<u32>,
}

impl WorkflowInput {
    pub fn job_duration(&self) -> Duration {
        self.job_duration.unwrap_or(DEFAULT_JOB_DURATION).0
    }
    pub fn pause(&self) -> Duration {
        self.pause.unwrap_or(DEFAULT_PAUSE).0
    }
    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
            .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT)
            .0
    }
    pub fn worker_start_timeout(&self) -> Duration {
        self.worker_start_timeout
            .unwrap_or(DEFAULT_WORKER_START_TIMEOUT)
            .0
    }

    pub fn max_compute_attempts(&self) -> u32 {
        self.max_compute_attempts
            .unwrap_or(DEFAULT_MAX_COMPUTE_ATTEMPTS)
    }

    /// Checks what the workflow cannot run with; the message says which field and why.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [("repository", &self.repository), ("tag", &self.tag)] {
            if value.trim().is_empty() {
                return Err(format!("workflow input field `{field}` must not be empty"));
            }
        }
        if self.heartbeat_timeout() < Duration::from_secs(1) {
            return Err("workflow input field `heartbeat_timeout` must be at least 1s".into());
        }
        if self.worker_start_timeout() < Duration::from_secs(1) {
            return Err("workflow input field `worker_start_timeout` must be at least 1s".into());
        }
        if !(1..=MAX_COMPUTE_ATTEMPTS_LIMIT).contains(&self.max_compute_attempts()) {
            return Err(format!(
                "workflow input field `max_compute_attempts` must be between 1 and \
                 {MAX_COMPUTE_ATTEMPTS_LIMIT}"
            ));
        }
        Ok(())
    }
}

/// Progress the external worker reports with each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    pub elapsed: GoDuration,
    pub remaining: GoDuration,
}

/// Activities implemented by the external worker, as the workflow sees them.
pub struct ExternalActivities;

#[activity_definitions]
impl ExternalActivities {
    /// Works for `duration`, heartbeating every `heartbeat_timeout / 2`. Two payloads, each a
    /// `json/plain` integer of nanoseconds, exactly as the Go workflow sends them.
    #[activity(name = "long-running-command")]
    pub fn long_running_command(
        duration: GoDuration,
        heartbeat_timeout: GoDuration,
    ) -> Result<(), ActivityError> {
        unimplemented!()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_starter_input_with_three_fields_still_parses() {
        let input: WorkflowInput = serde_json::from_str(
            r#"{"registry":"sje-test-registry","repository":"external","tag":"latest"}"#,
        )
        .unwrap();
        assert_eq!(input.job_duration(), Duration::from_secs(60));
        assert_eq!(input.pause(), Duration::from_secs(5));
        assert_eq!(input.heartbeat_timeout(), Duration::from_secs(10));
        input.validate().unwrap();
    }

    #[test]
    fn optional_durations_travel_as_go_nanoseconds() {
        let input = WorkflowInput {
            registry: "r".into(),
            repository: "external".into(),
            tag: "latest".into(),
            job_duration: Some(GoDuration::from_millis(500)),
            ..Default::default()
        };
        let json = serde_json::to_value(&input).unwrap();
        assert_eq!(json["job_duration"], 500_000_000);
        assert!(json.get("pause").is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let input = WorkflowInput {
            repository: "".into(),
            tag: "x".into(),
            ..Default::default()
        };
        assert!(input.validate().unwrap_err().contains("repository"));
    }

    #[test]
    fn activity_name_is_the_go_name() {
        use temporalio_common::ActivityDefinition;
        assert_eq!(
            ExternalActivities::long_running_command.name(),
            crate::LONG_RUNNING_ACTIVITY
        );
    }
}
