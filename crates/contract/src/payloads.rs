//! Payload types of the external job: the long-running activity's signature and its heartbeat
//! details. The workflow input has a module of its own ([`crate::input`]).

use serde::{Deserialize, Serialize};
use temporalio_macros::activity_definitions;
use temporalio_sdk::activities::ActivityError;

use temporalio_common::protos::temporal::api::common::v1::Payload;

use crate::{GoDuration, decode_json, duration_value, json_payload};

/// Progress the external worker reports with each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    pub elapsed: GoDuration,
    pub remaining: GoDuration,
}

/// Argument of [`crate::RUN_COMMAND_ACTIVITY`]: the user's job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandJob {
    /// Program and arguments (no shell).
    pub command: Vec<String>,
    /// Non-secret variables for the job (secrets are in the compute's own environment).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The activity's heartbeat timeout: the runner heartbeats at half of it.
    pub heartbeat_timeout: GoDuration,
    /// The run's compute attempt this job runs in (1 on the first unit): the job's
    /// `TEA_ATTEMPT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The checkpoint the job last wrote on a unit that was lost, to resume from: the job's
    /// `TEA_RESUME_FILE` holds it. Absent on the first unit and when no checkpoint was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<serde_json::Value>,
}

/// One line of the job's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutputLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

/// Heartbeat details of [`crate::RUN_COMMAND_ACTIVITY`]: where the job is (bounded: the tail holds
/// at most a few KiB).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandProgress {
    pub elapsed: GoDuration,
    pub stdout_lines: u64,
    pub stderr_lines: u64,
    pub output_bytes: u64,
    /// The last lines of output.
    pub tail: Vec<JobOutputLine>,
    /// Fraction done (0 to 1), when the job reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// The job's own progress message, when it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last checkpoint the job wrote (or the one it resumed from, until it writes one): a
    /// fresh unit resumes from it when this one is lost. NOT secret: it is in the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<serde_json::Value>,
    /// Why the job's latest checkpoint file was not taken (too large, not JSON, holding a
    /// secret); `checkpoint` is still the previous one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_error: Option<String>,
}

/// Result of [`crate::RUN_COMMAND_ACTIVITY`] when the job exited 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub exit_code: i32,
    pub duration: GoDuration,
    pub stdout_lines: u64,
    pub stderr_lines: u64,
    pub output_bytes: u64,
    /// The last lines of output (bounded).
    pub output_tail: Vec<JobOutputLine>,
    /// The JSON the job wrote to its result file (bounded), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
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

    /// Runs the user's command as a child process group and reports its output and progress
    /// in heartbeats. A non-zero exit fails the activity non-retryably (the job failed, not
    /// the compute).
    #[activity(name = "run-command")]
    pub fn run_command(job: CommandJob) -> Result<CommandResult, ActivityError> {
        unimplemented!()
    }
}

/// Decodes `long-running-command`'s two arguments (`duration`, `heartbeat_timeout`) from raw
/// payloads, as leniently as the workflow input (see [`crate::input`]); the error names the
/// argument, for a non-retryable activity failure.
pub fn decode_long_running_args(payloads: &[Payload]) -> Result<(GoDuration, GoDuration), String> {
    let [duration, heartbeat_timeout] = payloads else {
        return Err(format!(
            "invalid arguments: expected two payloads (duration, heartbeat_timeout), got {}",
            payloads.len()
        ));
    };
    let decode = |name: &str, payload: &Payload| {
        let value = decode_json(payload).map_err(|e| format!("invalid argument `{name}`: {e}"))?;
        duration_value(&format!("argument `{name}`"), &value)
    };
    Ok((
        decode("duration", duration)?,
        decode("heartbeat_timeout", heartbeat_timeout)?,
    ))
}

/// An own activity's arguments as its worker's SDK reads them: each argument its own
/// `json/plain` payload, as every SDK's default converter writes one.
pub fn activity_arg_payloads(args: &[serde_json::Value]) -> Vec<Payload> {
    args.iter().map(json_payload).collect()
}

/// An own activity's return value from its result payloads: `None` for nothing or `null`. A
/// payload that is not JSON (`binary/plain` bytes, protobuf) is refused, naming its encoding:
/// the run's result is JSON.
pub fn decode_activity_result(payloads: &[Payload]) -> Result<Option<serde_json::Value>, String> {
    let Some(first) = payloads.first() else {
        return Ok(None);
    };
    let value = decode_json(first)
        .map_err(|e| format!("its result cannot be the run's result (a JSON value): {e}"))?;
    Ok(Some(value).filter(|v| !v.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_running_args_decode_go_payloads_and_name_bad_ones() {
        let go = |json: &str| Payload {
            metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
            data: json.as_bytes().to_vec(),
            ..Default::default()
        };
        let (duration, heartbeat) =
            decode_long_running_args(&[go("4000000000"), go("2000000000")]).unwrap();
        assert_eq!(duration, GoDuration::from_secs(4));
        assert_eq!(heartbeat, GoDuration::from_secs(2));
        for (payloads, expected) in [
            (vec![go("1")], "expected two payloads"),
            (vec![go("-1"), go("1")], "`duration` must not be negative"),
            (
                vec![go("1"), go("{}")],
                "`heartbeat_timeout` must be a duration",
            ),
            (
                vec![go("1"), go("x")],
                "`heartbeat_timeout`: the payload is not valid JSON",
            ),
        ] {
            let err = decode_long_running_args(&payloads).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn own_activity_arguments_are_one_json_payload_each_and_results_decode() {
        let args = [
            serde_json::json!("Hello"),
            serde_json::json!({"name": "World", "n": 2}),
        ];
        let payloads = activity_arg_payloads(&args);
        assert_eq!(payloads.len(), 2);
        assert_eq!(payloads[1].metadata["encoding"], b"json/plain");
        assert_eq!(decode_json(&payloads[1]).unwrap(), args[1]);
        assert_eq!(
            decode_activity_result(&payloads[..1]).unwrap(),
            Some(serde_json::json!("Hello"))
        );
        assert_eq!(decode_activity_result(&[]).unwrap(), None);
        let none = Payload {
            metadata: [("encoding".to_owned(), b"binary/null".to_vec())].into(),
            ..Default::default()
        };
        assert_eq!(decode_activity_result(&[none]).unwrap(), None);
        let bytes = Payload {
            metadata: [("encoding".to_owned(), b"binary/plain".to_vec())].into(),
            data: vec![1, 2],
            ..Default::default()
        };
        let err = decode_activity_result(&[bytes]).unwrap_err();
        assert!(err.contains("binary/plain"), "{err}");
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
