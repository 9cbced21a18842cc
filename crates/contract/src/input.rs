//! The workflow input: its fields and defaults, the limits a run can work with, and decoding it
//! from raw payloads.
//!
//! The workflow decodes its input itself instead of letting the SDK do it: any client (a Go
//! starter, `temporal workflow start`, another SDK) may send a payload the SDK cannot decode, and
//! an input the SDK fails to decode fails the workflow *task*, which Temporal retries forever
//! while the run stays Running. Decoding here turns every such input into a failed *run*, at
//! once, with a message naming the field and what is wrong with it, before any compute exists.
//!
//! What is accepted: one `json/plain` payload holding a JSON object. Field names match
//! case-insensitively, as Go's `encoding/json` matches them (so a Go struct without JSON tags,
//! sending `Registry`, works). Durations are Go `time.Duration` integers of nanoseconds, or
//! strings such as `"90s"`, `"1h30m"`. `null` counts as absent. Unknown fields are refused: a
//! field this version does not know (a typo, or an option from a newer client) would otherwise
//! be silently ignored and the run would do something else than was asked.
//!
//! The job is one of three: the original's timed `long-running-command` (no job field), the
//! user's `command` (with `env`, `workdir`, `job_duration` as its time limit), or the user's
//! own `activity` (with `activity_args`, `activity_start_to_close`, `activity_max_attempts`,
//! `activity_resume`);
//! the fields of one kind are refused beside the other's. `resources` ([`crate::resources`])
//! goes with any of them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use temporalio_common::{data_converters::RawValue, protos::temporal::api::common::v1::Payload};

use crate::{GoDuration, MAX_ACTIVITY_ATTEMPTS_LIMIT, Resources, activity_input::args_field};

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

/// How long a command may run when the input gives no `job_duration`.
pub const DEFAULT_COMMAND_TIME_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// The longest job a run accepts. Longer jobs should checkpoint and run as several runs.
pub const MAX_JOB_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest pause before provisioning and after the job.
pub const MAX_PAUSE: Duration = Duration::from_secs(24 * 3600);
/// Heartbeat timeouts outside this range cannot work: below it the SDK's heartbeat throttling
/// and a loaded machine fake dead workers; above it a dead worker goes unnoticed for too long.
pub const HEARTBEAT_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));
/// How long a worker may take to poll after its compute is running.
pub const WORKER_START_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));

/// The payload encoding Go, Python and this project use for JSON values.
pub const JSON_ENCODING: &str = "json/plain";

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
    /// The job to run on the compute: program and arguments (no shell). Without it the run
    /// does what the original does: `long-running-command` for `job_duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Variables for the job. NOT secret: they are in the workflow's history; secrets go
    /// through the workflow-worker's `JOB_SECRET_ENV`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// The job's working directory on the compute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The user's own activity to run on the compute instead of a built-in one: its activity
    /// type name, as the unit's worker (in any SDK) registers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    /// The activity's arguments, each its own `json/plain` payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_args: Option<Vec<Value>>,
    /// The activity's start-to-close timeout, per attempt (default
    /// [`DEFAULT_COMMAND_TIME_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_start_to_close: Option<GoDuration>,
    /// Attempts of the activity on the same unit (default 1): Temporal retries a failed
    /// attempt there, with the last attempt's heartbeat details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_max_attempts: Option<u32>,
    /// Whether the activity resumes on fresh compute: it gets one extra, last argument, the
    /// first heartbeat detail its lost unit last recorded (`null` when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_resume: Option<bool>,
    /// What the run asks of its unit of compute (CPUs, memory, GPUs, a size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// Every field [`WorkflowInput`] has, as it is spelled on the wire.
const FIELDS: [&str; 17] = [
    "registry",
    "repository",
    "tag",
    "job_duration",
    "pause",
    "heartbeat_timeout",
    "worker_start_timeout",
    "max_compute_attempts",
    "command",
    "env",
    "workdir",
    "activity",
    "activity_args",
    "activity_start_to_close",
    "activity_max_attempts",
    "activity_resume",
    "resources",
];

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

    /// How long the job may take: `job_duration` (for a command, its time limit: default
    /// [`DEFAULT_COMMAND_TIME_LIMIT`]; for an own activity, its start-to-close).
    pub fn job_time(&self) -> Duration {
        match (&self.command, self.job_duration) {
            _ if self.activity.is_some() => self.activity_start_to_close(),
            (Some(_), None) => DEFAULT_COMMAND_TIME_LIMIT,
            _ => self.job_duration(),
        }
    }

    /// The job's start-to-close: its time plus a tenth of it, at least five minutes (a
    /// heartbeat timeout notices a dead worker long before). An own activity's is exactly its
    /// `activity_start_to_close`.
    pub fn job_start_to_close(&self) -> Duration {
        let job = self.job_time();
        if self.activity.is_some() {
            return job;
        }
        job + (job / 10).max(Duration::from_secs(300))
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
        check_range(
            "job_duration",
            self.job_duration(),
            Duration::ZERO,
            MAX_JOB_DURATION,
        )?;
        check_range("pause", self.pause(), Duration::ZERO, MAX_PAUSE)?;
        let (low, high) = HEARTBEAT_TIMEOUT_RANGE;
        check_range("heartbeat_timeout", self.heartbeat_timeout(), low, high)?;
        let (low, high) = WORKER_START_TIMEOUT_RANGE;
        check_range(
            "worker_start_timeout",
            self.worker_start_timeout(),
            low,
            high,
        )?;
        self.validate_activity()?;
        if self.heartbeat_timeout() >= self.job_start_to_close() {
            let from = match self.activity {
                Some(_) => "activity_start_to_close",
                None => "job_duration",
            };
            return Err(format!(
                "workflow input field `heartbeat_timeout` ({}) must be shorter than the job's \
                 deadline ({}, from `{from}`)",
                GoDuration(self.heartbeat_timeout()),
                GoDuration(self.job_start_to_close())
            ));
        }
        check_count(
            "max_compute_attempts",
            self.max_compute_attempts(),
            MAX_COMPUTE_ATTEMPTS_LIMIT,
        )
    }

    /// The input as the one `json/plain` payload a Go starter sends.
    pub fn to_payload(&self) -> Payload {
        json_payload(self)
    }

    /// The input as the workflow's raw argument (what clients start the workflow with).
    pub fn to_raw(&self) -> RawValue {
        RawValue::new(vec![self.to_payload()])
    }

    /// Decodes and validates the workflow's raw input; the error names the field and the
    /// problem, fit for a failed run's message.
    pub fn from_payloads(payloads: &[Payload]) -> Result<WorkflowInput, String> {
        let object = match payloads {
            [] => return Err(missing_input()),
            [payload] => {
                match decode_json(payload).map_err(|e| format!("invalid workflow input: {e}"))? {
                    Value::Null => return Err(missing_input()),
                    Value::Object(object) => object,
                    other => {
                        return Err(format!(
                            "invalid workflow input: expected a JSON object with `registry`, \
                         `repository` and `tag`, got {}",
                            describe(&other)
                        ));
                    }
                }
            }
            more => {
                return Err(format!(
                    "invalid workflow input: expected one payload (a JSON object), got {}",
                    more.len()
                ));
            }
        };
        let input =
            Self::from_object(object).map_err(|e| format!("invalid workflow input: {e}"))?;
        input.validate()?;
        Ok(input)
    }

    fn from_object(object: Map<String, Value>) -> Result<WorkflowInput, String> {
        let mut input = WorkflowInput::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in object {
            let Some(field) = FIELDS
                .iter()
                .copied()
                .find(|f| f.eq_ignore_ascii_case(&key))
            else {
                return Err(format!(
                    "unknown field `{key}` (known fields: {})",
                    FIELDS.join(", ")
                ));
            };
            if seen.contains(&field) {
                return Err(format!("field `{field}` is given twice"));
            }
            seen.push(field);
            if value.is_null() {
                continue;
            }
            let duration = || duration_value(&format!("field `{field}`"), &value);
            match field {
                "registry" => input.registry = string_field(field, &value)?,
                "repository" => input.repository = string_field(field, &value)?,
                "tag" => input.tag = string_field(field, &value)?,
                "job_duration" => input.job_duration = Some(duration()?),
                "pause" => input.pause = Some(duration()?),
                "heartbeat_timeout" => input.heartbeat_timeout = Some(duration()?),
                "worker_start_timeout" => input.worker_start_timeout = Some(duration()?),
                "max_compute_attempts" => {
                    input.max_compute_attempts =
                        Some(count_field(field, &value, MAX_COMPUTE_ATTEMPTS_LIMIT)?)
                }
                "command" => input.command = Some(command_field(&value)?),
                "env" => input.env = Some(env_field(&value)?),
                "workdir" => input.workdir = Some(string_field(field, &value)?),
                "activity" => input.activity = Some(string_field(field, &value)?),
                "activity_args" => input.activity_args = Some(args_field(&value)?),
                "activity_start_to_close" => input.activity_start_to_close = Some(duration()?),
                "activity_max_attempts" => {
                    input.activity_max_attempts =
                        Some(count_field(field, &value, MAX_ACTIVITY_ATTEMPTS_LIMIT)?)
                }
                "activity_resume" => input.activity_resume = Some(bool_field(field, &value)?),
                "resources" => input.resources = Some(Resources::from_json(&value)?),
                _ => unreachable!("every name in FIELDS is matched above"),
            }
        }
        for required in ["repository", "tag"] {
            if !seen.contains(&required) {
                return Err(format!("field `{required}` is missing"));
            }
        }
        Ok(input)
    }
}

fn missing_input() -> String {
    "invalid workflow input: none was given; expected a JSON object with `registry`, \
     `repository` and `tag`"
        .to_owned()
}

pub(crate) fn check_range(
    field: &str,
    value: Duration,
    low: Duration,
    high: Duration,
) -> Result<(), String> {
    if value < low || value > high {
        return Err(format!(
            "workflow input field `{field}` must be between {} and {}, got {}",
            GoDuration(low),
            GoDuration(high),
            GoDuration(value)
        ));
    }
    Ok(())
}

/// A `json/plain` payload of `value` (serialising our own types cannot fail).
pub fn json_payload<T: Serialize>(value: &T) -> Payload {
    Payload {
        metadata: [("encoding".to_owned(), JSON_ENCODING.as_bytes().to_vec())].into(),
        data: serde_json::to_vec(value).unwrap_or_default(),
        ..Default::default()
    }
}

/// The JSON value of a `json/plain` payload; `binary/null` (what SDKs send for a missing
/// value) reads as `null`. Any other encoding is refused, naming it.
pub fn decode_json(payload: &Payload) -> Result<Value, String> {
    let encoding = payload
        .metadata
        .get("encoding")
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default();
    match encoding.as_str() {
        JSON_ENCODING => serde_json::from_slice(&payload.data)
            .map_err(|e| format!("the payload is not valid JSON: {e}")),
        "binary/null" => Ok(Value::Null),
        other => Err(format!(
            "payload encoding {other:?} is not supported; send {JSON_ENCODING:?} (JSON)"
        )),
    }
}

/// What a JSON value is, for error messages (the kind, and the value when it is short).
pub fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let text = value.to_string();
    if text.chars().count() <= 40 && !matches!(value, Value::Array(_) | Value::Object(_)) {
        format!("{kind} ({text})")
    } else {
        kind.to_owned()
    }
}

fn string_field(field: &str, value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("field `{field}` must be a string, got {}", describe(value)))
}

fn bool_field(field: &str, value: &Value) -> Result<bool, String> {
    value.as_bool().ok_or_else(|| {
        format!(
            "field `{field}` must be true or false, got {}",
            describe(value)
        )
    })
}

/// Whether `name` is a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*` (what
/// POSIX shells and App Platform accept). The one rule for job variables, job secrets and the
/// variables a provider sets.
pub fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

fn command_field(value: &Value) -> Result<Vec<String>, String> {
    let expected = "field `command` must be a non-empty array of strings (program, then \
                    arguments; no shell)";
    let items = value
        .as_array()
        .ok_or_else(|| format!("{expected}, got {}", describe(value)))?;
    let argv = items
        .iter()
        .map(|item| item.as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| format!("{expected}, got an array with a non-string"))?;
    match argv.first() {
        Some(program) if !program.trim().is_empty() => Ok(argv),
        _ => Err(format!("{expected}; the program is missing")),
    }
}

fn env_field(value: &Value) -> Result<std::collections::BTreeMap<String, String>, String> {
    let object = value.as_object().ok_or_else(|| {
        format!(
            "field `env` must be an object of string values, got {}",
            describe(value)
        )
    })?;
    let mut env = std::collections::BTreeMap::new();
    for (key, value) in object {
        if !is_env_var_name(key) {
            return Err(format!(
                "field `env`: {key:?} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"
            ));
        }
        let value = value.as_str().ok_or_else(|| {
            format!(
                "field `env`: {key} must be a string, got {}",
                describe(value)
            )
        })?;
        env.insert(key.clone(), value.to_owned());
    }
    Ok(env)
}

/// A whole number for `field`, whose values run from 1 to `limit`.
pub(crate) fn count_field(field: &str, value: &Value, limit: u32) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            format!(
                "field `{field}` must be a whole number from 1 to {limit}, got {}",
                describe(value)
            )
        })
}

/// Checks that `field`'s `value` runs from 1 to `limit`.
pub(crate) fn check_count(field: &str, value: u32, limit: u32) -> Result<(), String> {
    if !(1..=limit).contains(&value) {
        return Err(format!(
            "workflow input field `{field}` must be between 1 and {limit}, got {value}"
        ));
    }
    Ok(())
}

/// A duration: Go nanoseconds (an integer) or a string such as `"90s"`. `what` names it in
/// errors (``field `pause` ``, ``argument `duration` ``).
pub fn duration_value(what: &str, value: &Value) -> Result<GoDuration, String> {
    let expected = "a duration: integer nanoseconds (Go's time.Duration) or a string such as \
                    \"90s\" or \"1h30m\"";
    match value {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(nanos), _) if i64::try_from(nanos).is_ok() => {
                Ok(GoDuration(Duration::from_nanos(nanos)))
            }
            (None, Some(negative)) => Err(format!("{what} must not be negative, got {negative}ns")),
            _ => Err(format!(
                "{what} must be {expected}, got {}",
                describe(value)
            )),
        },
        Value::String(s) if s.trim_start().starts_with('-') => {
            Err(format!("{what} must not be negative, got {s:?}"))
        }
        Value::String(s) => s.parse::<GoDuration>().map_err(|e| format!("{what}: {e}")),
        other => Err(format!(
            "{what} must be {expected}, got {}",
            describe(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<WorkflowInput, String> {
        let payload = Payload {
            metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
            data: json.as_bytes().to_vec(),
            ..Default::default()
        };
        WorkflowInput::from_payloads(&[payload])
    }

    #[test]
    fn go_starter_input_with_three_fields_still_parses() {
        let input =
            decode(r#"{"registry":"sje-test-registry","repository":"external","tag":"latest"}"#)
                .unwrap();
        assert_eq!(input.job_duration(), Duration::from_secs(60));
        assert_eq!(input.pause(), Duration::from_secs(5));
        assert_eq!(input.heartbeat_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn field_names_match_case_insensitively_like_go() {
        let input = decode(r#"{"Registry":"r","Repository":"external","Tag":"v1"}"#).unwrap();
        assert_eq!(input.tag, "v1");
    }

    #[test]
    fn own_encoding_round_trips() {
        let input = WorkflowInput {
            registry: "r".into(),
            repository: "external".into(),
            tag: "latest".into(),
            job_duration: Some(GoDuration::from_millis(500)),
            max_compute_attempts: Some(2),
            ..Default::default()
        };
        assert_eq!(
            WorkflowInput::from_payloads(&input.to_raw().payloads).unwrap(),
            input
        );
        let json: Value = serde_json::from_slice(&input.to_payload().data).unwrap();
        assert_eq!(json["job_duration"], 500_000_000);
        assert!(json.get("pause").is_none());
    }

    #[test]
    fn a_command_with_env_and_workdir_decodes() {
        let input = decode(
            r#"{"repository":"e","tag":"t","command":["python3","-c","print(1)"],"env":{"MODE":"fast"},"workdir":"/data"}"#,
        )
        .unwrap();
        assert_eq!(input.command.as_deref().unwrap()[0], "python3");
        assert_eq!(input.env.unwrap()["MODE"], "fast");
        assert_eq!(input.workdir.as_deref(), Some("/data"));
    }

    #[test]
    fn durations_accept_go_nanoseconds_and_strings() {
        let input = decode(
            r#"{"repository":"e","tag":"t","job_duration":"1m30s","pause":0,"heartbeat_timeout":2000000000,"worker_start_timeout":null}"#,
        )
        .unwrap();
        assert_eq!(input.job_duration(), Duration::from_secs(90));
        assert_eq!(input.pause(), Duration::ZERO);
        assert_eq!(input.heartbeat_timeout(), Duration::from_secs(2));
        assert_eq!(input.worker_start_timeout(), Duration::from_secs(300));
    }

    #[test]
    fn bad_input_is_refused_naming_the_problem() {
        let cases: [(&[Payload], &str); 2] = [
            (&[], "none was given"),
            (&[Payload::default(), Payload::default()], "got 2"),
        ];
        for (payloads, expected) in cases {
            let err = WorkflowInput::from_payloads(payloads).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        for (json, expected) in [
            (r#""external""#, "expected a JSON object"),
            ("null", "none was given"),
            ("{", "not valid JSON"),
            (
                r#"{"registry":"r","tag":"t"}"#,
                "field `repository` is missing",
            ),
            (r#"{"repository":"e"}"#, "field `tag` is missing"),
            (
                r#"{"repository":5,"tag":"t"}"#,
                "`repository` must be a string, got a number (5)",
            ),
            (
                r#"{"repository":"e","tag":"t","job_duration":-5}"#,
                "`job_duration` must not be negative",
            ),
            (
                r#"{"repository":"e","tag":"t","pause":"-5s"}"#,
                "`pause` must not be negative",
            ),
            (
                r#"{"repository":"e","tag":"t","pause":"soon"}"#,
                "invalid duration \"soon\"",
            ),
            (
                r#"{"repository":"e","tag":"t","pause":true}"#,
                "`pause` must be a duration",
            ),
            (
                r#"{"repository":"e","tag":"t","job_duration":"400d"}"#,
                "`job_duration` must be between",
            ),
            (
                r#"{"repository":"e","tag":"t","heartbeat_timeout":"10ms"}"#,
                "`heartbeat_timeout` must be between",
            ),
            (
                r#"{"repository":"e","tag":"t","max_compute_attempts":0}"#,
                "`max_compute_attempts` must be between 1 and 9",
            ),
            (
                r#"{"repository":"e","tag":"t","max_compute_attempts":-1}"#,
                "whole number",
            ),
            (
                r#"{"repository":"e","tag":"t","max_compute_attempts":1.5}"#,
                "whole number",
            ),
            (
                r#"{"repository":"e","tag":"t","job_duraton":1}"#,
                "unknown field `job_duraton`",
            ),
            (
                r#"{"repository":"e","tag":"t","Tag":"u"}"#,
                "`tag` is given twice",
            ),
            (
                r#"{"repository":" ","tag":"t"}"#,
                "`repository` must not be empty",
            ),
        ] {
            let err = decode(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn an_own_activity_with_arguments_and_resources_decodes() {
        let input = decode(
            r#"{"repository":"e","tag":"t","activity":"compose_greeting","activity_args":["Hi",{"n":2}],"activity_start_to_close":"10m","activity_max_attempts":3,"activity_resume":true,"resources":{"cpu":0.5,"memory":"256MiB"}}"#,
        )
        .unwrap();
        assert_eq!(input.activity.as_deref(), Some("compose_greeting"));
        assert_eq!(
            input.activity_args,
            Some(vec![Value::from("Hi"), serde_json::json!({"n": 2})])
        );
        assert_eq!(input.job_start_to_close(), Duration::from_secs(600));
        assert_eq!(input.activity_max_attempts(), 3);
        assert!(input.activity_resume());
        let resources = input.resources.clone().unwrap();
        assert_eq!(resources.memory, Some(256 << 20));
        // What the starter sends decodes to the same.
        assert_eq!(
            WorkflowInput::from_payloads(&input.to_raw().payloads).unwrap(),
            input
        );
        // Without them the wire form is what it was.
        let plain: Value =
            serde_json::from_slice(&WorkflowInput::default().to_payload().data).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"registry": "", "repository": "", "tag": ""})
        );
    }

    #[test]
    fn own_activity_fields_go_together_and_not_with_a_command() {
        for (json, expected) in [
            (r#""activity":"""#, "`activity` must not be empty"),
            (r#""activity":5"#, "`activity` must be a string"),
            (r#""activity_args":[1]"#, "`activity_args` needs `activity`"),
            (
                r#""activity_max_attempts":2"#,
                "`activity_max_attempts` needs `activity`",
            ),
            (
                r#""activity_resume":true"#,
                "`activity_resume` needs `activity`",
            ),
            (
                r#""activity":"a","activity_resume":"yes""#,
                "`activity_resume` must be true or false",
            ),
            (
                r#""activity":"a","activity_args":1"#,
                "`activity_args` must be an array",
            ),
            (
                r#""activity":"a","command":["ls"]"#,
                "`command` belongs to a command job",
            ),
            (
                r#""activity":"a","job_duration":"1s""#,
                "`job_duration` belongs to",
            ),
            (
                r#""activity":"a","activity_start_to_close":"0s""#,
                "`activity_start_to_close` must be between",
            ),
            (
                r#""activity":"a","activity_max_attempts":0"#,
                "`activity_max_attempts` must be between 1 and 100",
            ),
            (
                r#""activity":"a","heartbeat_timeout":"1h","activity_start_to_close":"1m""#,
                "shorter than the job's deadline",
            ),
            (
                r#""resources":{"gpu":"one"}"#,
                "`resources.gpu` must be a whole number",
            ),
        ] {
            let json = format!(r#"{{"repository":"e","tag":"t",{json}}}"#);
            let err = decode(&json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn other_encodings_are_named() {
        let payload = Payload {
            metadata: [("encoding".to_owned(), b"binary/protobuf".to_vec())].into(),
            data: vec![1, 2, 3],
            ..Default::default()
        };
        let err = WorkflowInput::from_payloads(&[payload]).unwrap_err();
        assert!(err.contains("binary/protobuf"), "{err}");
    }
}
