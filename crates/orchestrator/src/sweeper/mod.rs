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

mod schedule;
mod sweep;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tea_compute::Deleted;
use tea_contract::GoDuration;

pub use schedule::{
    SweepActivities, SweepLeakedCompute, ensure_schedule, remove_schedule, schedule_id,
};
pub use sweep::{failure_summary, sweep_once};

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

#[cfg(test)]
mod tests {
    use super::*;

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
