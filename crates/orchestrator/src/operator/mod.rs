//! What an operator sees and does by hand: `compute list` (this owner's compute, the run that
//! owns each unit, that run's phase and the unit's age), `compute delete` (refused under a
//! running run unless that run is cancelled first, so its own teardown deletes the unit), and
//! the sweep's report as a table.
//!
//! Everything here goes through the provider's ownership check ([`tea_compute::ComputeOwner::claim`], the
//! one behind `list_ours` and so the sweeper: only this owner's compute is ever shown or
//! deleted; a unit another owner marked, or none did, is refused naming both owners) and
//! through Temporal for the runs; nothing is cached. A run is cancelled by its run ID, never
//! by its workflow ID alone (a newer run under that ID is not the unit's). The delete itself
//! is carried out by the workflow-worker ([`crate::operator_delete`]: counted, recorded in
//! Temporal, and checked again there with [`claim_unit`]), or with `--direct` by this command.

mod claim;
mod delete;
mod table;

use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use futures::{StreamExt, stream};
use serde::Serialize;
use tea_compute::{ComputeProvider, naming};
use tea_contract::{Phase, StatusQuery};
use temporalio_client::{Client, WorkflowQueryOptions};

pub use claim::{Refuser, UnitClaim, claim_unit, refusal};
pub use delete::{
    CancelledRun, DeleteDone, DeleteOutcome, DeleteRoute, cancel_run_and_wait, delete_compute,
};
pub use table::{compute_table, sweep_table};

use crate::runs::{run_handle, running_runs_by_compute_name};

/// How many owner runs `compute list` queries at once.
const PHASE_QUERIES_AT_ONCE: usize = 16;

/// How long `compute list` waits for one run's `status` query (no workflow-worker: no answer).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The running run that owns a unit of compute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerRun {
    pub workflow_id: String,
    pub run_id: String,
    /// The run's phase from its `status` query; `None` when it did not answer in time.
    pub phase: Option<Phase>,
}

/// One unit of this owner's compute, as `compute list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComputeRow {
    pub name: String,
    pub id: String,
    pub provider: String,
    /// RFC 3339, when the provider knows it.
    pub created_at: Option<String>,
    pub age_secs: Option<u64>,
    /// `None`: no running run owns it (its run closed, or it is not from a run of ours); the
    /// sweeper deletes it once it is older than the grace period.
    pub owner_run: Option<OwnerRun>,
}

/// This owner's compute, each unit with its owner run (and that run's phase), by name.
pub async fn list_compute(
    provider: &dyn ComputeProvider,
    client: &Client,
) -> anyhow::Result<Vec<ComputeRow>> {
    let units = provider
        .list_ours(naming::COMPUTE_NAME_PREFIX)
        .await
        .map_err(|e| anyhow!("listing {} compute failed: {e}", provider.kind()))?;
    let runs = running_runs_by_compute_name(client).await?;
    let now = SystemTime::now();
    // One `status` query per owned unit, a few at a time: hundreds of units must not take
    // hundreds of query round trips (or timeouts) one after another.
    let mut rows: Vec<ComputeRow> = stream::iter(units)
        .map(|unit| {
            let owner = runs.get(&unit.name).cloned();
            async move {
                let owner_run = match owner {
                    None => None,
                    Some((workflow_id, run_id)) => Some(OwnerRun {
                        phase: run_phase(client, &workflow_id, &run_id).await,
                        workflow_id,
                        run_id,
                    }),
                };
                let age_secs = unit.age(now).map(|age| age.as_secs());
                ComputeRow {
                    name: unit.name,
                    id: unit.id,
                    provider: provider.kind().to_owned(),
                    created_at: unit.created_at,
                    age_secs,
                    owner_run,
                }
            }
        })
        .buffer_unordered(PHASE_QUERIES_AT_ONCE)
        .collect()
        .await;
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

async fn run_phase(client: &Client, workflow_id: &str, run_id: &str) -> Option<Phase> {
    let handle = run_handle(client, workflow_id, run_id);
    let query = handle.query(StatusQuery, (), WorkflowQueryOptions::default());
    match tokio::time::timeout(QUERY_TIMEOUT, query).await {
        Ok(Ok(status)) => Some(status.phase),
        _ => None,
    }
}
