//! The provisioning activities' inputs and results, as recorded in workflow history:
//! identifiers, never secrets.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tea_compute::{ComputeHandle, Deleted, ImageRef};
use tea_contract::GoDuration;
use tea_runtime::Metrics;

/// Input of `Create`: the name derived from the run and the image. No secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateComputeInput {
    pub compute_name: String,
    pub image: ImageRef,
    /// How long the run waited for a slot under `MAX_CONCURRENT_COMPUTE` before this, its
    /// first create (workflow time), for the `tea_capacity_wait_duration` metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_waited: Option<GoDuration>,
    /// What this unit's job resumes from after a lost unit (`checkpoint`, `elapsed`), for the
    /// `tea_job_resumes_total` metric. Absent when it starts afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumes_job: Option<String>,
    /// What the run asks of the unit; absent when it asks for none (the provider's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<tea_contract::Resources>,
}

/// Result of `Create`: identifiers only (the original stored the whole app, secrets included).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedCompute {
    pub handle: ComputeHandle,
    pub task_queue: String,
    pub provider: String,
    /// How long `WaitForAppBuild` waits for the provider to report the compute running.
    pub deploy_timeout: GoDuration,
    /// The longest this compute may live (`MAX_COMPUTE_LIFETIME`); the workflow tears it down
    /// then, even mid-job. Absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<GoDuration>,
    /// What the unit costs per second in USD, where the provider knows it (for the run's
    /// cost estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_second: Option<f64>,
    /// The size the provider created for the run's `resources` (absent when it asked none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_size: Option<String>,
}

/// Input of `WaitForAppBuild`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitForComputeInput {
    pub handle: ComputeHandle,
    pub task_queue: String,
    pub heartbeat_timeout: GoDuration,
    /// How long after the provider reports the compute running a worker may take to poll.
    pub worker_start_timeout: GoDuration,
}

pub use tea_contract::WaitProgress;

/// Input of `Delete`: by ID when known, else by name (a create that failed may have stored it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteComputeInput {
    pub compute_name: String,
    pub compute_id: Option<String>,
    /// Why the unit is deleted, when it is more than the run's ordinary teardown (absent for
    /// an ordinary teardown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DeleteReason>,
}

/// Why `Delete` deletes a unit, beyond "its run is done with it".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// The unit reached `MAX_COMPUTE_LIFETIME` while its run still used it: the run's lifetime
    /// timer fired. Counted in `tea_compute_lifetime_kills_total{by="workflow"}` once removed.
    LifetimeExceeded,
    /// An operator asked for it (`compute delete`, see [`crate::operator_delete`]).
    Operator,
}

/// Who deleted a unit for outliving `MAX_COMPUTE_LIFETIME`: the `by` label of
/// `tea_compute_lifetime_kills_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifetimeKiller {
    /// The run itself, when its lifetime timer fired.
    Workflow,
    /// The sweeper, for a unit whose run did not tear it down in time.
    Sweeper,
}

/// Counts `kills` units deleted for outliving `MAX_COMPUTE_LIFETIME` (`dry_run`: a sweep that
/// only reported them).
pub fn count_lifetime_kills(
    metrics: &Metrics,
    provider: &str,
    by: LifetimeKiller,
    dry_run: bool,
    kills: u64,
) {
    let by = match by {
        LifetimeKiller::Workflow => "workflow",
        LifetimeKiller::Sweeper => "sweeper",
    };
    metrics.count(
        "tea_compute_lifetime_kills",
        "Compute deleted for outliving MAX_COMPUTE_LIFETIME, by the run's own lifetime timer \
         (by=workflow) or by the sweeper under a run that did not act (by=sweeper)",
        &[
            ("provider", provider.to_owned()),
            ("dry_run", dry_run.to_string()),
            ("by", by.to_owned()),
        ],
        kills,
    );
}

/// Result of `Delete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedCompute {
    pub compute_name: String,
    pub compute_id: Option<String>,
    pub outcome: Deleted,
    /// The provider that deleted it.
    pub provider: String,
}

/// How `WaitForAppBuild` waits: polls exponentially from `initial` to `max`, for at most
/// `deploy_timeout` (the provider's default when `None`) until the provider reports the
/// compute running.
#[derive(Clone, Copy, Debug)]
pub struct PollBackoff {
    pub initial: Duration,
    pub max: Duration,
    pub deploy_timeout: Option<Duration>,
}

impl Default for PollBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(30),
            deploy_timeout: None,
        }
    }
}

impl PollBackoff {
    pub(super) fn next(&self, current: Duration) -> Duration {
        (current * 3 / 2).clamp(self.initial, self.max)
    }
}

/// Heartbeat details of `Create` and `Delete` while they wait on the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCallProgress {
    pub step: String,
    pub compute_name: String,
    pub waiting: GoDuration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_delete_inputs_omit_the_reason() {
        let ordinary: DeleteComputeInput =
            serde_json::from_str(r#"{"compute_name":"ext-1","compute_id":"app-1"}"#).unwrap();
        assert_eq!(ordinary.reason, None);
        assert!(!serde_json::to_string(&ordinary).unwrap().contains("reason"));
        let kill = DeleteComputeInput {
            reason: Some(DeleteReason::LifetimeExceeded),
            ..ordinary
        };
        let json = serde_json::to_string(&kill).unwrap();
        assert!(json.contains(r#""reason":"lifetime_exceeded""#), "{json}");
        assert_eq!(
            serde_json::from_str::<DeleteComputeInput>(&json).unwrap(),
            kill
        );
    }

    #[test]
    fn poll_backoff_grows_to_its_cap() {
        let b = PollBackoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(30),
            deploy_timeout: None,
        };
        let mut d = b.initial;
        let mut seen = vec![];
        for _ in 0..7 {
            seen.push(d.as_secs());
            d = b.next(d);
        }
        assert_eq!(seen, [5, 7, 11, 16, 25, 30, 30]);
    }
}
