//! The dead-man switch: an external worker stops by itself when nobody needs it any more, so
//! compute whose owner is gone (terminated run, crashed orchestration) does not work on for
//! nothing.
//!
//! Two triggers, checked every `check_interval`: no job for `idle_timeout`, or the workflow run
//! that owns this worker (OWNER_WORKFLOW_ID / OWNER_RUN_ID) is closed or unknown.
//!
//! What it then does is [`DeadManAction`]: exit, or, on platforms that restart an exited
//! process (App Platform), park: stop polling and stay down, idle, until the compute is
//! deleted (by the sweeper), instead of crash-looping.

use std::{sync::Arc, time::Duration};

use temporalio_client::Client;
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;

use crate::job::JobTracker;

/// What the worker does once the switch fires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeadManAction {
    /// Stop polling and exit.
    #[default]
    Exit,
    /// Stop polling and stay down until SIGTERM (the compute's deletion).
    Park,
}

impl std::str::FromStr for DeadManAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "exit" => Ok(DeadManAction::Exit),
            "park" => Ok(DeadManAction::Park),
            other => Err(format!(
                "invalid dead-man action {other:?}: expected `exit` or `park`"
            )),
        }
    }
}

/// When the worker should stop by itself, and how.
#[derive(Clone, Debug, Default)]
pub struct DeadManConfig {
    /// Stop after this long without a job; `None` never.
    pub idle_timeout: Option<Duration>,
    /// The run that owns this worker: stop once it is closed.
    pub owner_workflow_id: Option<String>,
    pub owner_run_id: Option<String>,
    /// How often to check.
    pub check_interval: Duration,
    /// Exit, or park.
    pub action: DeadManAction,
}

/// Why the switch fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    Idle(Duration),
    OwnerClosed(String),
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Idle(d) => write!(f, "no job for {}", humantime_secs(*d)),
            StopReason::OwnerClosed(state) => write!(f, "the owning workflow run is {state}"),
        }
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Resolves when the worker should stop; never resolves when nothing is configured.
pub async fn watch(config: DeadManConfig, tracker: Arc<JobTracker>, client: Client) -> StopReason {
    if config.idle_timeout.is_none() && config.owner_workflow_id.is_none() {
        return std::future::pending().await;
    }
    let mut ticker = tokio::time::interval(config.check_interval.max(Duration::from_millis(50)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let (Some(limit), Some(idle)) = (config.idle_timeout, tracker.idle_for())
            && idle >= limit
        {
            return StopReason::Idle(idle);
        }
        if let Some(workflow_id) = &config.owner_workflow_id
            && let Some(state) =
                owner_closed(&client, workflow_id, config.owner_run_id.as_deref()).await
        {
            return StopReason::OwnerClosed(state);
        }
    }
}

/// `Some(state)` when the owning run is closed or does not exist; `None` while it runs or when
/// Temporal cannot be asked right now (a transient error must not stop a working worker).
async fn owner_closed(client: &Client, workflow_id: &str, run_id: Option<&str>) -> Option<String> {
    match tea_runtime::run_status(client, workflow_id, run_id).await {
        Ok(Some(WorkflowExecutionStatus::Running | WorkflowExecutionStatus::Unspecified)) => None,
        Ok(Some(closed)) => Some(
            closed
                .as_str_name()
                .trim_start_matches("WORKFLOW_EXECUTION_STATUS_")
                .to_lowercase(),
        ),
        Ok(None) => Some("not found".to_owned()),
        Err(status) => {
            tracing::debug!(error = %status.message(), "could not check the owning workflow run");
            None
        }
    }
}
