//! The sweeper: the guarantee behind the guarantee. In-workflow cleanup cannot cover runs that
//! were terminated or timed out (Temporal runs no workflow code then), nor a Delete that gave
//! up. The sweeper lists this deployment's compute and deletes every unit that no running
//! `TriggerExternalWorkflow` run owns, once it is older than a grace period.
//!
//! Two kinds of ownership, both checked:
//! - which deployment: the provider lists only compute with a generated name carrying its
//!   owner mark ([`tea_compute::ComputeOwner::claim`], the check `compute delete` runs too);
//!   foreign or unmarked compute is never seen, so never deleted;
//! - which run: compute names derive from the run ID and attempt (see
//!   [`tea_compute::naming`]), so the set of names the running runs may own is known exactly.
//!
//! A sweep keeps going: a unit whose delete fails (or is not reached before the deadline) is
//! reported in [`SweepReport::failed`] and the others are still deleted, up to
//! [`DELETE_CONCURRENCY`] at a time. The sweep activity fails (retryably) after reporting when
//! anything failed.
//!
//! It runs as `SweepLeakedCompute`, started by one Temporal Schedule per deployment owner
//! ([`schedule_id`]), and once from the command line (`workflow-worker sweep`). Workers with a
//! sweep interval create or update their owner's schedule; a worker without one leaves it
//! alone. Only [`remove_schedule`] (`workflow-worker delete-sweep-schedule`) removes it.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context, anyhow};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tea_compute::{ComputeOwner, ComputeProvider, ComputeSummary, Deleted, ProviderError, naming};
use tea_contract::{GoDuration, WORKFLOW_TYPE};
use tea_runtime::Metrics;
use temporalio_client::{
    Client,
    schedules::{
        CreateScheduleOptions, ScheduleAction, ScheduleError, ScheduleOverlapPolicy, ScheduleSpec,
    },
    tonic,
};
use temporalio_common::RetryPolicy;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, WorkflowContext, WorkflowResult,
    activities::{ActivityContext, ActivityError},
};
use tokio::time::Instant;

use crate::activities::{LifetimeKiller, count_lifetime_kills};

/// Workflow type of the sweep.
pub const SWEEP_WORKFLOW_TYPE: &str = "SweepLeakedCompute";
/// Start of every sweep schedule ID; the rest names the owner (see [`schedule_id`]).
pub const SWEEP_SCHEDULE_ID_PREFIX: &str = "external-activity-compute-sweeper";
/// Start-to-close timeout of the sweep activity.
pub const SWEEP_ACTIVITY_TIMEOUT: Duration = Duration::from_secs(600);
/// Heartbeat timeout of the sweep activity (it heartbeats while it works).
pub const SWEEP_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// Deletes a sweep runs at once.
pub const DELETE_CONCURRENCY: usize = 8;
/// Time kept in hand before the activity's deadline to report.
const DEADLINE_MARGIN: Duration = Duration::from_secs(30);

/// The ID of `owner`'s sweep schedule (and of the workflows it starts):
/// `external-activity-compute-sweeper-<owner>` (see [`ComputeOwner::id_component`]).
pub fn schedule_id(owner: &ComputeOwner) -> String {
    format!("{SWEEP_SCHEDULE_ID_PREFIX}-{}", owner.id_component())
}

/// What a sweep does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepOptions {
    /// Compute younger than this is left alone (its run may not be visible yet).
    pub grace_period: GoDuration,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// The owner whose compute this sweep is for (set by the schedule). A worker of another
    /// owner refuses the sweep instead of sweeping its own compute in its place.
    #[serde(default)]
    pub owner: Option<String>,
    /// `MAX_COMPUTE_LIFETIME`: a unit older than this plus the grace period is deleted even
    /// though a running run owns it (that run did not tear it down: it is stuck, or its
    /// workflow-worker is gone). `None`: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<GoDuration>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            grace_period: GoDuration::from_secs(600),
            dry_run: false,
            owner: None,
            max_lifetime: None,
        }
    }
}

/// Why a sweep grace period shorter than the deploy timeout (`deploy_timeout`, named by
/// `deploy_timeout_from`) is allowed, for the start-up log; `None` when it is not shorter.
///
/// Allowed because the grace period does not protect deployments: a unit whose run is running
/// is never swept, deploying or not (its name derives from the run ID, and every name a
/// running run may own is spared whatever its age, up to `MAX_COMPUTE_LIFETIME`). The grace
/// period only covers the moment a just-started run takes to show as running in Temporal's
/// visibility store; a unit whose run has closed is of no use to anyone, however far its
/// deployment got. (The defaults differ the other way round on DigitalOcean: 10m of grace,
/// 15m to deploy.)
pub fn grace_shorter_than_deploy_note(
    grace: Duration,
    deploy_timeout: Duration,
    deploy_timeout_from: &str,
) -> Option<String> {
    (grace < deploy_timeout).then(|| {
        format!(
            "SWEEP_GRACE_PERIOD ({}) is shorter than the deploy timeout ({}, {deploy_timeout_from}): \
             allowed, the sweeper never deletes a unit whose run is running, deploying or not; \
             the grace period only has to cover the delay before a new run shows as running in \
             Temporal's visibility, so keep it above that delay on your Temporal service",
            humantime::format_duration(grace),
            humantime::format_duration(deploy_timeout)
        )
    })
}

/// One unit of compute the sweep deleted (or would have).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweptCompute {
    pub name: String,
    pub id: String,
    pub reason: String,
    /// `None` in a dry run.
    pub outcome: Option<Deleted>,
}

/// How the reason of a unit deleted for outliving `MAX_COMPUTE_LIFETIME` begins.
const PAST_LIFETIME: &str = "older than the maximum compute lifetime";

impl SweptCompute {
    /// Whether it was deleted for outliving `MAX_COMPUTE_LIFETIME` under a running run.
    pub fn past_lifetime(&self) -> bool {
        self.reason.starts_with(PAST_LIFETIME)
    }
}

/// One unit of compute the sweep should have deleted but did not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepFailure {
    pub name: String,
    pub id: String,
    /// Why the delete failed (or that the sweep ran out of time before reaching it).
    pub error: String,
}

/// What a sweep found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub provider: String,
    /// The owner whose compute was examined.
    #[serde(default)]
    pub owner: String,
    pub examined: usize,
    pub owned_by_running_runs: usize,
    pub within_grace_period: usize,
    pub deleted: Vec<SweptCompute>,
    /// Deletes that failed; the sweep went on with the others.
    #[serde(default)]
    pub failed: Vec<SweepFailure>,
    pub dry_run: bool,
}

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
    Ok(crate::operator::running_runs_by_compute_name(client)
        .await?
        .into_keys()
        .collect())
}

/// The sweep as an activity, over the workflow-worker's provider.
pub struct SweepActivities {
    provider: Arc<dyn ComputeProvider>,
    metrics: Metrics,
}

impl SweepActivities {
    pub fn new(provider: Arc<dyn ComputeProvider>, metrics: Metrics) -> Self {
        Self { provider, metrics }
    }
}

#[activities]
impl SweepActivities {
    /// Sweeps this worker's owner's compute, heartbeating while it works; fails (retryably)
    /// after logging the report when any delete failed.
    #[activity(name = "SweepCompute")]
    pub async fn sweep(
        self: Arc<Self>,
        ctx: ActivityContext,
        options: SweepOptions,
    ) -> Result<SweepReport, ActivityError> {
        let ours = self.provider.owner().as_str();
        if let Some(wanted) = options.owner.as_deref().filter(|w| *w != ours) {
            return Err(ActivityError::from(anyhow!(
                "this sweep is for owner {wanted:?} but this worker's provider belongs to \
                 {ours:?}; workers of one task queue must share COMPUTE_OWNER"
            )));
        }
        let info = ctx.info();
        let deadline = info
            .deadline
            .and_then(|d| d.duration_since(SystemTime::now()).ok())
            .unwrap_or(SWEEP_ACTIVITY_TIMEOUT)
            .saturating_sub(DEADLINE_MARGIN);
        let deadline = Instant::now() + deadline;
        let beat_every = info
            .heartbeat_timeout
            .map(|t| (t / 3).max(Duration::from_millis(100)));
        let client = ctx.client();
        let sweep = sweep_once(self.provider.as_ref(), &client, &options, Some(deadline));
        let report = match beat_every {
            None => sweep.await,
            Some(every) => {
                tokio::pin!(sweep);
                loop {
                    tokio::select! {
                        report = &mut sweep => break report,
                        _ = tokio::time::sleep(every) => {
                            ctx.record_heartbeat(()).await.map_err(|e| {
                                ActivityError::from(anyhow!("sweep heartbeat failed: {e}"))
                            })?;
                        }
                        _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
                    }
                }
            }
        }
        .map_err(|e| ActivityError::from(anyhow!("{e:#}")))?;
        tracing::info!(
            owner = %report.owner,
            examined = report.examined,
            deleted = report.deleted.len(),
            failed = report.failed.len(),
            dry_run = report.dry_run,
            "sweep finished"
        );
        let labels = [
            ("provider", report.provider.clone()),
            ("dry_run", report.dry_run.to_string()),
        ];
        self.metrics.count(
            "tea_sweeper_deletions",
            "Leaked compute the sweeper deleted (or would have, in a dry run)",
            &labels,
            report.deleted.len() as u64,
        );
        count_lifetime_kills(
            &self.metrics,
            &report.provider,
            LifetimeKiller::Sweeper,
            report.dry_run,
            report.deleted.iter().filter(|d| d.past_lifetime()).count() as u64,
        );
        self.metrics.count(
            "tea_sweeper_failures",
            "Leaked compute the sweeper failed to delete",
            &labels,
            report.failed.len() as u64,
        );
        if !report.failed.is_empty() {
            let json = serde_json::to_string(&report).unwrap_or_default();
            tracing::error!(report = %json, "sweep finished with failed deletes");
            return Err(ActivityError::from(anyhow!("{}", failure_summary(&report))));
        }
        Ok(report)
    }
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

/// The scheduled sweep: one activity, retried a few times.
#[workflow]
#[derive(Default)]
pub struct SweepLeakedCompute;

#[workflow_methods]
impl SweepLeakedCompute {
    #[run(name = "SweepLeakedCompute")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        options: SweepOptions,
    ) -> WorkflowResult<SweepReport> {
        let report = ctx
            .execute_activity(
                SweepActivities::sweep,
                options,
                ActivityOptions::with_start_to_close_timeout(SWEEP_ACTIVITY_TIMEOUT)
                    .heartbeat_timeout(SWEEP_HEARTBEAT_TIMEOUT)
                    .retry_policy(
                        RetryPolicy::builder()
                            .maximum_attempts(3)
                            .maximum_interval(Duration::from_secs(30))
                            .build(),
                    )
                    .build(),
            )
            .await
            .map_err(|e| ApplicationFailure::new(anyhow!("sweep failed: {e}")))?;
        Ok(report)
    }
}

/// Creates `owner`'s sweep schedule ([`schedule_id`]), or updates it to `interval` and
/// `options` when it exists. Other owners' schedules are not touched.
pub async fn ensure_schedule(
    client: &Client,
    task_queue: &str,
    owner: &ComputeOwner,
    interval: Duration,
    options: SweepOptions,
) -> anyhow::Result<()> {
    let id = schedule_id(owner);
    let options = SweepOptions {
        owner: Some(owner.to_string()),
        ..options
    };
    let action = || {
        ScheduleAction::start_workflow(
            SweepLeakedCompute::run,
            options.clone(),
            task_queue.to_owned(),
            id.clone(),
        )
    };
    let created = client
        .create_schedule(
            &id,
            CreateScheduleOptions::builder()
                .action(action())
                .spec(ScheduleSpec::from_interval(interval))
                .overlap_policy(ScheduleOverlapPolicy::Skip)
                .build(),
        )
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(ScheduleError::Rpc(status)) if status.code() == tonic::Code::AlreadyExists => {
            let (spec, action) = (ScheduleSpec::from_interval(interval), action());
            client
                .get_schedule_handle(&id)
                .update(
                    move |update| {
                        update.set_spec(spec).set_action(action);
                    },
                    Default::default(),
                )
                .await
                .with_context(|| format!("updating the sweep schedule {id} failed"))
        }
        Err(e) => Err(anyhow!("creating the sweep schedule {id} failed: {e}")),
    }
}

/// Removes `owner`'s sweep schedule; returns whether it existed. An explicit operator action
/// (`workflow-worker delete-sweep-schedule`): a worker's configuration never removes it.
pub async fn remove_schedule(client: &Client, owner: &ComputeOwner) -> anyhow::Result<bool> {
    let id = schedule_id(owner);
    match client
        .get_schedule_handle(&id)
        .delete(Default::default())
        .await
    {
        Ok(()) => Ok(true),
        Err(ScheduleError::Rpc(status)) if status.code() == tonic::Code::NotFound => Ok(false),
        Err(e) => Err(anyhow!("removing the sweep schedule {id} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_ids_name_the_owner_and_stay_distinct() {
        let owner = |s: &str| ComputeOwner::new(s).unwrap();
        assert_eq!(
            schedule_id(&owner("prod")),
            "external-activity-compute-sweeper-prod"
        );
        let slash = schedule_id(&owner("default/taskQueueName"));
        assert!(
            slash.starts_with("external-activity-compute-sweeper-default-taskQueueName-"),
            "{slash}"
        );
        assert_ne!(slash, schedule_id(&owner("default-taskQueueName")));
    }

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

    #[test]
    fn a_grace_shorter_than_the_deploy_timeout_is_explained_with_both_values() {
        let minute = Duration::from_secs(60);
        let note = grace_shorter_than_deploy_note(Duration::ZERO, minute, "DEPLOY_TIMEOUT")
            .expect("explained");
        assert!(
            note.starts_with("SWEEP_GRACE_PERIOD (0s) is shorter than the deploy timeout (1m, DEPLOY_TIMEOUT): allowed"),
            "{note}"
        );
        assert_eq!(grace_shorter_than_deploy_note(minute, minute, "x"), None);
        assert_eq!(
            grace_shorter_than_deploy_note(2 * minute, minute, "x"),
            None
        );
    }

    #[test]
    fn old_reports_and_options_still_decode() {
        let options: SweepOptions =
            serde_json::from_str(r#"{"grace_period": 1000, "dry_run": false}"#).unwrap();
        assert_eq!(options.owner, None);
        let report: SweepReport = serde_json::from_str(
            r#"{"provider":"local","examined":0,"owned_by_running_runs":0,
                "within_grace_period":0,"deleted":[],"dry_run":true}"#,
        )
        .unwrap();
        assert!(report.failed.is_empty());
    }
}
