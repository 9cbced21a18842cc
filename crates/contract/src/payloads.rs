//! Payload types of the external job: the long-running activity's signature and its heartbeat
//! details. The workflow input has a module of its own ([`crate::input`]).

use serde::{Deserialize, Serialize};
use temporalio_macros::activity_definitions;
use temporalio_sdk::activities::ActivityError;

use temporalio_common::protos::temporal::api::common::v1::Payload;

use crate::{GoDuration, decode_json, duration_value};

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
    fn activity_name_is_the_go_name() {
        use temporalio_common::ActivityDefinition;
        assert_eq!(
            ExternalActivities::long_running_command.name(),
            crate::LONG_RUNNING_ACTIVITY
        );
    }
}
