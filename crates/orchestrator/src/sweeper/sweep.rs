//! One sweep: list this owner's compute, decide which units no running run owns (or which
//! outlived `MAX_COMPUTE_LIFETIME`), delete them a few at a time within the deadline, and
//! report every outcome.

use std::{collections::HashSet, time::SystemTime};

use anyhow::anyhow;
use futures::StreamExt;
use tea_compute::{ComputeProvider, ComputeSummary, Deleted, ProviderError, naming};
use tea_contract::WORKFLOW_TYPE;
use temporalio_client::Client;
use tokio::time::Instant;

use super::{
    DELETE_CONCURRENCY, PAST_LIFETIME, SweepFailure, SweepOptions, SweepReport, SweptCompute,
};
use crate::runs::running_runs_by_compute_name;

/// Sweeps once: list, decide, delete (unless dry run; at most [`DELETE_CONCURRENCY`] at a
/// time, none started after `deadline`), report. A failed delete is reported in
/// [`SweepReport::failed`] and does not stop the sweep; only a failure to list is an error.
pub async fn sweep_once(
    provider: &dyn ComputeProvider,
    client: &Client,
    options: &SweepOptions,
    deadline: Option<Instant>,
) -> anyhow::Result<SweepReport> {
    let compute = provider
        .list_ours(naming::COMPUTE_NAME_PREFIX)
        .await
        .map_err(|e| anyhow!("listing {} compute failed: {e}", provider.kind()))?;
    let owned = names_owned_by_running_runs(client).await?;
    let mut report = SweepReport {
        provider: provider.kind().to_owned(),
        owner: provider.owner().to_string(),
        dry_run: options.dry_run,
        ..Default::default()
    };
    let doomed = decide(&mut report, compute, &owned, options, SystemTime::now());
    if options.dry_run {
        for (unit, reason) in doomed {
            tracing::info!(compute = %unit.name, id = %unit.id, %reason, "sweeper would delete (dry run)");
            report.deleted.push(SweptCompute {
                name: unit.name,
                id: unit.id,
                reason,
                outcome: None,
            });
        }
        return Ok(report);
    }
    let delete = move |id: String| async move { provider.delete(&id).await };
    delete_all(&mut report, doomed, delete, deadline).await;
    Ok(report)
}

/// Counts `compute` into `report` and returns the units to delete, each with the reason: not
/// owned by a running run and not younger than the grace period (unknown age counts as old).
fn decide(
    report: &mut SweepReport,
    compute: Vec<ComputeSummary>,
    owned: &HashSet<String>,
    options: &SweepOptions,
    now: SystemTime,
) -> Vec<(ComputeSummary, String)> {
    report.examined = compute.len();
    let mut doomed = Vec::new();
    for unit in compute {
        let age = unit.age(now);
        if owned.contains(&unit.name) {
            // The run tears its compute down at the lifetime; the grace period on top gives it
            // that chance before the sweeper steps in.
            let overdue = options.max_lifetime.zip(age).filter(|(limit, age)| {
                *age > limit.as_duration() + options.grace_period.as_duration()
            });
            let Some((limit, age)) = overdue else {
                report.owned_by_running_runs += 1;
                continue;
            };
            let reason = format!(
                "{PAST_LIFETIME} of {} (age {}s) though its run is still running: the run did \
                 not tear it down",
                humantime::format_duration(limit.as_duration()),
                age.as_secs()
            );
            doomed.push((unit, reason));
            continue;
        }
        // Unknown age counts as old: better to sweep than to leak forever.
        if age.is_some_and(|age| age < options.grace_period.as_duration()) {
            report.within_grace_period += 1;
            continue;
        }
        let reason = format!(
            "no running {WORKFLOW_TYPE} run owns it (its run is closed or unknown); age {}",
            age.map(|a| format!("{}s", a.as_secs()))
                .unwrap_or_else(|| "unknown".into())
        );
        doomed.push((unit, reason));
    }
    doomed
}

/// Deletes `doomed` with `delete`, [`DELETE_CONCURRENCY`] at a time, none started after
/// `deadline`; every outcome goes into `report` (deleted or failed), sorted by name.
async fn delete_all<F, Fut>(
    report: &mut SweepReport,
    doomed: Vec<(ComputeSummary, String)>,
    delete: F,
    deadline: Option<Instant>,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Deleted, ProviderError>>,
{
    let delete = &delete;
    let mut results = futures::stream::iter(doomed)
        .map(|(unit, reason)| async move {
            let outcome = delete_before(delete(unit.id.clone()), deadline).await;
            (unit, reason, outcome)
        })
        .buffer_unordered(DELETE_CONCURRENCY);
    while let Some((unit, reason, outcome)) = results.next().await {
        match outcome {
            Ok(outcome) => {
                tracing::warn!(compute = %unit.name, id = %unit.id, %reason, ?outcome, "sweeper deleted leaked compute");
                report.deleted.push(SweptCompute {
                    name: unit.name,
                    id: unit.id,
                    reason,
                    outcome: Some(outcome),
                });
            }
            Err(error) => {
                tracing::error!(compute = %unit.name, id = %unit.id, %error, "sweeper could not delete leaked compute; going on with the others");
                report.failed.push(SweepFailure {
                    name: unit.name,
                    id: unit.id,
                    error,
                });
            }
        }
    }
    report.deleted.sort_by(|a, b| a.name.cmp(&b.name));
    report.failed.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Runs one delete, giving up at `deadline` (a delete not started by then is not attempted).
async fn delete_before(
    delete: impl Future<Output = Result<Deleted, ProviderError>>,
    deadline: Option<Instant>,
) -> Result<Deleted, String> {
    let Some(deadline) = deadline else {
        return delete.await.map_err(|e| e.to_string());
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("not attempted: the sweep ran out of time".to_owned());
    }
    match tokio::time::timeout(left, delete).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "delete not finished when the sweep ran out of time ({}s left)",
            left.as_secs()
        )),
    }
}

/// Every compute name a running run may own (any attempt).
async fn names_owned_by_running_runs(client: &Client) -> anyhow::Result<HashSet<String>> {
    Ok(running_runs_by_compute_name(client)
        .await?
        .into_keys()
        .collect())
}

/// One line naming every unit a sweep failed to delete and why.
pub fn failure_summary(report: &SweepReport) -> String {
    let units: Vec<String> = report
        .failed
        .iter()
        .map(|f| format!("{} ({}): {}", f.name, f.id, f.error))
        .collect();
    format!(
        "sweep deleted {} unit(s) but failed on {}: {}",
        report.deleted.len(),
        report.failed.len(),
        units.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tea_contract::GoDuration;

    use super::*;

    fn unit(name: &str, created_at: Option<&str>) -> ComputeSummary {
        ComputeSummary {
            id: format!("id-{name}"),
            name: name.to_owned(),
            created_at: created_at.map(str::to_owned),
        }
    }

    #[test]
    fn decide_spares_running_runs_and_young_compute() {
        let now = humantime::parse_rfc3339("2026-01-01T12:00:00Z").unwrap();
        let owned: HashSet<String> = ["running".to_owned()].into();
        let options = SweepOptions::default();
        let mut report = SweepReport::default();
        let doomed = decide(
            &mut report,
            vec![
                unit("running", Some("2026-01-01T00:00:00Z")),
                unit("young", Some("2026-01-01T11:55:00Z")),
                unit("old", Some("2026-01-01T11:00:00Z")),
                unit("unknown-age", None),
            ],
            &owned,
            &options,
            now,
        );
        assert_eq!(report.examined, 4);
        assert_eq!(report.owned_by_running_runs, 1);
        assert_eq!(report.within_grace_period, 1);
        let names: Vec<&str> = doomed.iter().map(|(u, _)| u.name.as_str()).collect();
        assert_eq!(names, ["old", "unknown-age"]);
        assert!(doomed[0].1.contains("age 3600s"), "{}", doomed[0].1);
        assert!(doomed[1].1.contains("age unknown"), "{}", doomed[1].1);
    }

    #[test]
    fn decide_reads_offsets_and_deletes_running_runs_units_past_the_lifetime() {
        let now = humantime::parse_rfc3339("2026-01-01T12:00:00Z").unwrap();
        let owned: HashSet<String> = ["stuck".to_owned(), "in-time".to_owned()].into();
        let options = SweepOptions {
            max_lifetime: Some(GoDuration::from_secs(3600)),
            ..SweepOptions::default()
        };
        let mut report = SweepReport::default();
        let doomed = decide(
            &mut report,
            vec![
                // chrono's RFC 3339 (the local provider's): +00:00 and nanoseconds.
                unit("young", Some("2026-01-01T11:55:00.123456789+00:00")),
                unit("stuck", Some("2026-01-01T10:49:00+00:00")),
                unit("in-time", Some("2026-01-01T10:51:00Z")),
            ],
            &owned,
            &options,
            now,
        );
        assert_eq!(report.within_grace_period, 1, "a +00:00 age is read");
        assert_eq!(report.owned_by_running_runs, 1, "within lifetime + grace");
        let names: Vec<&str> = doomed.iter().map(|(u, _)| u.name.as_str()).collect();
        assert_eq!(names, ["stuck"]);
        assert!(
            doomed[0].1.contains("maximum compute lifetime of 1h"),
            "{}",
            doomed[0].1
        );
        let swept = SweptCompute {
            name: "stuck".into(),
            id: "stuck".into(),
            reason: doomed[0].1.clone(),
            outcome: None,
        };
        assert!(swept.past_lifetime());
    }

    #[tokio::test]
    async fn delete_all_goes_on_past_failures_with_bounded_concurrency() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let in_flight = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let doomed: Vec<(ComputeSummary, String)> = (0..30)
            .map(|i| (unit(&format!("u{i:02}"), None), "test".to_owned()))
            .collect();
        let delete = |id: String| {
            let (in_flight, peak) = (&in_flight, &peak);
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if id.ends_with('3') {
                    Err(ProviderError::transient(format!("{id}: injected 500")))
                } else {
                    Ok(Deleted::Removed)
                }
            }
        };
        let mut report = SweepReport::default();
        delete_all(&mut report, doomed, delete, None).await;
        assert_eq!(report.deleted.len(), 27);
        let failed: Vec<&str> = report.failed.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(failed, ["u03", "u13", "u23"]);
        assert!(report.failed[0].error.contains("injected 500"));
        assert_eq!(peak.load(Ordering::SeqCst), DELETE_CONCURRENCY);
        assert!(failure_summary(&report).contains("u13 (id-u13): id-u13: injected 500"));
    }

    #[tokio::test]
    async fn delete_all_reports_what_the_deadline_cut_off() {
        let doomed: Vec<(ComputeSummary, String)> = (0..3)
            .map(|i| (unit(&format!("u{i}"), None), "test".to_owned()))
            .collect();
        let delete = |_id: String| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Deleted::Removed)
        };
        let mut report = SweepReport::default();
        let deadline = Instant::now() + Duration::from_millis(50);
        delete_all(&mut report, doomed, delete, Some(deadline)).await;
        assert!(report.deleted.is_empty());
        assert_eq!(report.failed.len(), 3);
        assert!(
            report
                .failed
                .iter()
                .all(|f| f.error.contains("ran out of time")),
            "{:?}",
            report.failed
        );
    }
}
