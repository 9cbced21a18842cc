//! Small statistics over samples (median, nearest-rank p95) and `/proc` readings of a process
//! (resident memory, peak resident memory, CPU time).

use std::time::Duration;

/// Median (mean of the two middle values for an even count); zero for no samples.
pub fn median(samples: &[Duration]) -> Duration {
    let sorted = sorted(samples);
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// Nearest-rank percentile `p` (0-100); zero for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let sorted = sorted(samples);
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Largest sample; zero for no samples.
pub fn max(samples: &[Duration]) -> Duration {
    samples.iter().copied().max().unwrap_or_default()
}

fn sorted(samples: &[Duration]) -> Vec<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, ...) in bytes.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Linux's `USER_HZ`: the unit of `utime`/`stime` in `/proc/<pid>/stat`. It is 100 on every
/// Linux ABI this project targets (x86_64, aarch64), whatever the kernel's `CONFIG_HZ`.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU time the process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    // utime and stime are fields 14 and 15.
    stat_ticks(&format!("/proc/{pid}/stat"), 14..16)
}

/// CPU time of this process plus that of its children it has reaped (the fake App Platform
/// API runs in this process and its apps' external workers are its children).
pub fn own_and_children_cpu_time() -> Option<Duration> {
    // utime, stime, cutime and cstime are fields 14 to 17.
    stat_ticks("/proc/self/stat", 14..18)
}

/// The sum of the clock-tick fields `fields` (1-based, as in proc(5)) of a `/proc/<pid>/stat`.
fn stat_ticks(path: &str, fields: std::ops::Range<usize>) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let (_, rest) = stat.rsplit_once(')')?;
    let after_name: Vec<&str> = rest.split_whitespace().collect();
    let ticks = after_name
        .get(fields.start - 3..fields.end - 3)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some(Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS_PER_SEC))
}

/// Busy and total CPU time of the whole machine so far (all cores), from `/proc/stat`.
pub fn machine_cpu_time() -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    // idle and iowait are the 4th and 5th.
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    let secs = |t: u64| Duration::from_secs_f64(t as f64 / CLOCK_TICKS_PER_SEC);
    Some((secs(total - idle), secs(total)))
}

/// Bytes as mebibytes with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A duration in milliseconds (below 1 s) or seconds.
pub fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn median_and_p95() {
        let samples = ms(&(1..=20).collect::<Vec<_>>());
        assert_eq!(median(&samples), Duration::from_micros(10_500));
        assert_eq!(percentile(&samples, 95.0), Duration::from_millis(19));
        assert_eq!(median(&ms(&[3, 1, 2])), Duration::from_millis(2));
        assert_eq!(percentile(&[], 95.0), Duration::ZERO);
        assert_eq!(max(&ms(&[3, 9, 2])), Duration::from_millis(9));
    }

    #[test]
    fn own_process_has_memory_and_cpu() {
        let pid = std::process::id();
        assert!(status_kb(pid, "VmRSS").is_some_and(|b| b > 0));
        assert!(status_kb(pid, "VmHWM").is_some());
        assert!(cpu_time(pid).is_some());
    }
}
