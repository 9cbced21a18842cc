//! The input fields of a run's own activity (`activity`, `activity_args`,
//! `activity_start_to_close`, `activity_max_attempts`, `activity_resume`): their defaults and
//! limits, how they are decoded, and the rule that they go together and not with a command's
//! fields.

use std::time::Duration;

use serde_json::Value;

use crate::{
    GoDuration, WorkflowInput,
    input::{DEFAULT_COMMAND_TIME_LIMIT, MAX_JOB_DURATION, check_count, check_range, describe},
};

/// Upper bound on `activity_max_attempts`.
pub const MAX_ACTIVITY_ATTEMPTS_LIMIT: u32 = 100;
/// The shortest start-to-close an own activity may have.
pub const MIN_ACTIVITY_START_TO_CLOSE: Duration = Duration::from_secs(1);

/// The input fields only a command job has: refused beside `activity`.
const COMMAND_FIELDS: [&str; 4] = ["command", "env", "workdir", "job_duration"];

impl WorkflowInput {
    /// The own activity's start-to-close per attempt.
    pub fn activity_start_to_close(&self) -> Duration {
        self.activity_start_to_close
            .map_or(DEFAULT_COMMAND_TIME_LIMIT, GoDuration::as_duration)
    }

    /// Attempts of the own activity on one unit.
    pub fn activity_max_attempts(&self) -> u32 {
        self.activity_max_attempts.unwrap_or(1)
    }

    /// Whether the own activity gets where to resume as an extra, last argument.
    pub fn activity_resume(&self) -> bool {
        self.activity_resume.unwrap_or(false)
    }

    /// Checks the own activity's fields: they go together, and not with a command's.
    pub(crate) fn validate_activity(&self) -> Result<(), String> {
        let Some(activity) = &self.activity else {
            let given = [
                ("activity_args", self.activity_args.is_some()),
                (
                    "activity_start_to_close",
                    self.activity_start_to_close.is_some(),
                ),
                (
                    "activity_max_attempts",
                    self.activity_max_attempts.is_some(),
                ),
                ("activity_resume", self.activity_resume.is_some()),
            ];
            return match given.iter().find(|(_, given)| *given) {
                Some((field, _)) => Err(format!(
                    "workflow input field `{field}` needs `activity` (the activity type to run)"
                )),
                None => Ok(()),
            };
        };
        if activity.trim().is_empty() {
            return Err("workflow input field `activity` must not be empty".to_owned());
        }
        let command_fields = [
            self.command.is_some(),
            self.env.is_some(),
            self.workdir.is_some(),
            self.job_duration.is_some(),
        ];
        if let Some((field, _)) = COMMAND_FIELDS
            .iter()
            .zip(command_fields)
            .find(|(_, given)| *given)
        {
            return Err(format!(
                "workflow input field `{field}` belongs to a command job; a run with `activity` \
                 takes `activity_args`, `activity_start_to_close`, `activity_max_attempts` and \
                 `activity_resume`"
            ));
        }
        check_range(
            "activity_start_to_close",
            self.activity_start_to_close(),
            MIN_ACTIVITY_START_TO_CLOSE,
            MAX_JOB_DURATION,
        )?;
        check_count(
            "activity_max_attempts",
            self.activity_max_attempts(),
            MAX_ACTIVITY_ATTEMPTS_LIMIT,
        )
    }
}

pub(crate) fn args_field(value: &Value) -> Result<Vec<Value>, String> {
    value.as_array().cloned().ok_or_else(|| {
        format!(
            "field `activity_args` must be an array of the activity's arguments (JSON values), \
             got {}",
            describe(value)
        )
    })
}
