//! Compute (and task queue) names derived from a workflow run.
//!
//! DigitalOcean app names are 2-32 characters matching `^[a-z][a-z0-9-]{0,30}[a-z0-9]$` and
//! unique per account. A name derived from the run ID (plus the provisioning attempt) is the
//! same every time an activity is retried, which is what lets a retried create adopt instead of
//! duplicating, and it never collides with another run's.

/// Every compute name this project creates starts with this prefix.
pub const COMPUTE_NAME_PREFIX: &str = "ext-";

/// The longest name DigitalOcean accepts.
pub const MAX_NAME_LEN: usize = 32;

/// Name for the compute of `attempt` (1-based) of the run `run_id`.
///
/// The name is the prefix, as many hexadecimal digits of the SHA-256 of the run ID as fit
/// (26 for a one-digit attempt: 104 bits, so distinct runs do not collide), and the attempt.
/// Hashing rather than truncating matters: run IDs may be time-ordered UUIDs whose leading
/// digits are shared by every run started in the same millisecond.
pub fn compute_name(run_id: &str, attempt: u32) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;

    let suffix = format!("-{attempt}");
    let room = MAX_NAME_LEN - COMPUTE_NAME_PREFIX.len() - suffix.len();
    let mut digits = String::with_capacity(64);
    for byte in Sha256::digest(run_id.as_bytes()) {
        let _ = write!(digits, "{byte:02x}");
    }
    digits.truncate(room);
    format!("{COMPUTE_NAME_PREFIX}{digits}{suffix}")
}

/// Whether `name` has exactly the shape [`compute_name`] generates: the prefix, as many
/// lowercase hexadecimal digits as fit, `-`, and an attempt number >= 1 without leading zeros
/// (`ext-` + 26 hex digits + `-1` for attempts 1-9). A name that merely starts with the prefix
/// (`ext-api`, `ext-foo-1`) is not one of ours.
pub fn is_generated_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(COMPUTE_NAME_PREFIX) else {
        return false;
    };
    let Some((digits, attempt)) = rest.rsplit_once('-') else {
        return false;
    };
    let attempt_ok = !attempt.is_empty()
        && !attempt.starts_with('0')
        && attempt.len() <= 9
        && attempt.bytes().all(|b| b.is_ascii_digit());
    attempt_ok
        && name.len() == MAX_NAME_LEN
        && digits.len() == MAX_NAME_LEN - COMPUTE_NAME_PREFIX.len() - 1 - attempt.len()
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The portable name rule every provider accepts, as a pattern for messages (it implies 2-32
/// characters): DigitalOcean's app and component name rule, the strictest of our providers';
/// valid as a directory name, a DNS label and a container name.
pub const PORTABLE_NAME_PATTERN: &str = "^[a-z][a-z0-9-]{0,30}[a-z0-9]$";

/// Whether `name` follows the portable name rule, [`PORTABLE_NAME_PATTERN`].
pub fn is_portable_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (2..=MAX_NAME_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_lowercase() | bytes[bytes.len() - 1].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_from_uuid_run_id_is_valid_and_stable() {
        let run = "0196F3A2-7c1e-7d3a-9b1f-2a3b4c5d6e7f";
        let a = compute_name(run, 1);
        assert_eq!(a, compute_name(run, 1));
        assert!(is_portable_name(&a), "{a}");
        assert_eq!(a.len(), MAX_NAME_LEN);
        assert!(a.starts_with(COMPUTE_NAME_PREFIX));
        assert_ne!(a, compute_name(run, 2));
        assert!(is_portable_name(&compute_name(run, 12)));
    }

    #[test]
    fn distinct_runs_get_distinct_names() {
        let a = compute_name("5f1f6a6e-0000-4000-8000-000000000001", 1);
        let b = compute_name("5f1f6a6e-0000-4000-8000-000000000002", 1);
        assert_ne!(a, b);
    }

    #[test]
    fn generated_names_are_recognised_exactly() {
        let run = "0196f3a2-7c1e-7d3a-9b1f-2a3b4c5d6e7f";
        for attempt in [1, 2, 9, 10, 12] {
            let name = compute_name(run, attempt);
            assert!(is_generated_name(&name), "{name}");
        }
        let ours = compute_name(run, 1);
        let lookalikes = [
            "ext-api".to_owned(),
            "ext-foo-1".to_owned(),
            ours.replace("ext-", "exp-"),
            ours.to_uppercase(),
            format!("{}-0", &ours[..ours.len() - 2]),
            format!("{ours}0"),
            format!("{}-01", &ours[..ours.len() - 3]),
            ours[..ours.len() - 1].to_owned(),
            format!("ext-{}-1", "g".repeat(26)),
            format!("ext-{}-1", "a".repeat(25)),
        ];
        for bad in &lookalikes {
            assert!(!is_generated_name(bad), "{bad}");
        }
    }

    #[test]
    fn validator_follows_the_do_regex() {
        for ok in ["ab", "external-worker", "a1", "ext-123-1"] {
            assert!(is_portable_name(ok), "{ok}");
        }
        for bad in ["a", "1abc", "abc-", "Abc", "ab_c", &"a".repeat(33)] {
            assert!(!is_portable_name(bad), "{bad}");
        }
    }
}
