//! Go's `time.Duration` on the wire: a JSON integer of nanoseconds.
//!
//! Rust's `std::time::Duration` serializes as `{"secs":..,"nanos":..}`, which a Go worker cannot
//! read. [`GoDuration`] wraps it and serializes as Go does, and parses human forms (`500ms`,
//! `2s`, `1m`) for command lines.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

/// A duration encoded as Go's `time.Duration` (signed 64-bit nanoseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// The longest duration Go can represent (about 292 years).
    pub const MAX: GoDuration = GoDuration(Duration::from_nanos(i64::MAX as u64));

    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// Nanoseconds as Go stores them; `None` when the value does not fit in an `i64`.
    pub fn as_nanos_i64(self) -> Option<i64> {
        i64::try_from(self.0.as_nanos()).ok()
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.as_nanos_i64() {
            Some(nanos) => serializer.serialize_i64(nanos),
            None => Err(serde::ser::Error::custom(
                "duration exceeds Go's time.Duration range (about 292 years)",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let nanos = i64::deserialize(deserializer)?;
        u64::try_from(nanos)
            .map(|n| Self(Duration::from_nanos(n)))
            .map_err(|_| D::Error::custom(format!("negative duration: {nanos}ns")))
    }
}

/// Human form rounded to milliseconds (`1m 30s`, `250ms`).
impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = Duration::from_millis(u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX));
        write!(f, "{}", humantime::format_duration(millis))
    }
}

impl FromStr for GoDuration {
    type Err = String;

    /// Parses `500ms`, `2s`, `1m30s`, `1h`; a bare `0` is zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed == "0" {
            return Ok(Self(Duration::ZERO));
        }
        let parsed = humantime::parse_duration(trimmed).map_err(|e| {
            format!("invalid duration {s:?}: {e} (expected e.g. 500ms, 2s, 1m, 1h30m)")
        })?;
        let value = Self(parsed);
        match value.as_nanos_i64() {
            Some(_) => Ok(value),
            None => Err(format!(
                "invalid duration {s:?}: longer than about 292 years"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_go_nanoseconds() {
        assert_eq!(
            serde_json::to_string(&GoDuration::from_secs(60)).unwrap(),
            "60000000000"
        );
        assert_eq!(
            serde_json::to_string(&GoDuration::from_secs(10)).unwrap(),
            "10000000000"
        );
    }

    #[test]
    fn deserializes_go_nanoseconds_and_rejects_negative() {
        let d: GoDuration = serde_json::from_str("1500000000").unwrap();
        assert_eq!(d.0, Duration::from_millis(1500));
        assert!(serde_json::from_str::<GoDuration>("-1").is_err());
        assert!(serde_json::from_str::<GoDuration>("{\"secs\":1,\"nanos\":0}").is_err());
    }

    #[test]
    fn parses_human_durations() {
        assert_eq!(
            "500ms".parse::<GoDuration>().unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            "2s".parse::<GoDuration>().unwrap().0,
            Duration::from_secs(2)
        );
        assert_eq!(
            "1m".parse::<GoDuration>().unwrap().0,
            Duration::from_secs(60)
        );
        assert_eq!("0".parse::<GoDuration>().unwrap().0, Duration::ZERO);
        let err = "soon".parse::<GoDuration>().unwrap_err();
        assert!(err.contains("expected e.g."), "{err}");
        assert!("400years".parse::<GoDuration>().is_err());
    }

    #[test]
    fn displays_rounded_to_milliseconds() {
        assert_eq!(
            GoDuration(Duration::from_nanos(1_715_315)).to_string(),
            "1ms"
        );
        assert_eq!(GoDuration::from_secs(90).to_string(), "1m 30s");
    }

    #[test]
    fn refuses_to_serialize_beyond_go_range() {
        assert!(serde_json::to_string(&GoDuration(Duration::from_secs(u64::MAX))).is_err());
    }
}
