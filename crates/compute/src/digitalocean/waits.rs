//! How long to wait before the next attempt of an API call: full-jitter backoff, the
//! `Retry-After` header (seconds or an HTTP date), and `ratelimit-reset` once the rate limit
//! is used up.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::header::HeaderMap;

/// `random(0, min(cap, base * 2^(attempt-1)))`.
pub(crate) fn full_jitter(
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: &mut impl Rng,
) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(cap);
    let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

pub(crate) fn parse_retry_after_header(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date (IMF-fixdate, RFC 850 or
/// asctime). A date in the past gives zero.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = http_date_epoch_secs(value)?;
    let now = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    Some(Duration::from_secs(u64::try_from(at - now).unwrap_or(0)))
}

fn http_date_epoch_secs(value: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDateTime};
    if let Ok(dt) = DateTime::parse_from_rfc2822(value) {
        return Some(dt.timestamp());
    }
    let formats = ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"];
    formats.iter().find_map(|f| {
        NaiveDateTime::parse_from_str(value, f)
            .ok()
            .map(|dt| dt.and_utc().timestamp())
    })
}

/// When `ratelimit-remaining` is 0, the wait until `ratelimit-reset` (Unix seconds).
pub(crate) fn ratelimit_reset_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header =
        |name: &str| -> Option<i64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    if header("ratelimit-remaining")? > 0 {
        return None;
    }
    let reset = header("ratelimit-reset")?;
    let now = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    let wait = reset - now;
    (wait > 0).then(|| Duration::from_secs(wait.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = at(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(parse_retry_after("29", now), Some(Duration::from_secs(29)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn ratelimit_reset_used_only_when_exhausted() {
        let now = at(1_000);
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::HeaderName::from_bytes(b"RateLimit-Reset").unwrap(),
            HeaderValue::from_static("1010"),
        );
        h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        assert_eq!(ratelimit_reset_wait(&h, now), Some(Duration::from_secs(10)));
        h.insert("ratelimit-remaining", HeaderValue::from_static("3"));
        assert_eq!(ratelimit_reset_wait(&h, now), None);
        h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("ratelimit-reset", HeaderValue::from_static("900"));
        assert_eq!(ratelimit_reset_wait(&h, now), None);
    }

    #[test]
    fn full_jitter_stays_within_the_cap() {
        let mut rng = rand::rng();
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        for attempt in 1..40 {
            let d = full_jitter(base, cap, attempt, &mut rng);
            let bound = (base * 2u32.saturating_pow(attempt - 1).min(1 << 20)).min(cap);
            assert!(d <= bound, "{attempt}: {d:?} > {bound:?}");
        }
    }
}
