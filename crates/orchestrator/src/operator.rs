//! What an operator sees and does by hand: `compute list` (this owner's compute, the run that
//! owns each unit, that run's phase and the unit's age), `compute delete` (refused under a
//! running run unless that run is cancelled first, so its own teardown deletes the unit), and
//! the sweep's report as a table.
//!
//! Everything here goes through the provider's `list_ours` (so only this owner's compute is
//! ever shown or deleted) and through Temporal for the runs; nothing is cached. The delete
//! itself is carried out by the workflow-worker ([`crate::operator_delete`]: counted, and
//! recorded in Temporal), or with `--direct` by this command.

use std::{
    collections::HashMap,
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use anyhow::{Context, anyhow, bail};
use futures::{StreamExt, stream};
use serde::Serialize;
use tea_compute::{ComputeProvider, Deleted, naming};
use tea_contract::{
    MAX_COMPUTE_ATTEMPTS_LIMIT, Phase, StatusQuery, TriggerExternalWorkflowClient, WORKFLOW_TYPE,
};
use temporalio_client::{
    Client, WorkflowCancelOptions, WorkflowDescribeOptions, WorkflowExecutionStatus,
    WorkflowListOptions, WorkflowQueryOptions,
};

use crate::{
    operator_delete::{OperatorDeleteOutcome, ThroughWorker, delete_through_worker},
    sweeper::SweepReport,
};

/// How many owner runs `compute list` queries at once.
const PHASE_QUERIES_AT_ONCE: usize = 16;

/// How long `compute list` waits for one run's `status` query (no workflow-worker: no answer).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval of the polls while a cancelled run tears down.
const POLL: Duration = Duration::from_millis(250);

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

/// The running `TriggerExternalWorkflow` runs, by every compute name each may own.
pub async fn running_runs_by_compute_name(
    client: &Client,
) -> anyhow::Result<HashMap<String, (String, String)>> {
    let query = format!("WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'");
    let mut runs = client.list_workflows(query, WorkflowListOptions::default());
    let mut names = HashMap::new();
    while let Some(run) = runs.next().await {
        let run = run.context("listing running workflow runs failed")?;
        for attempt in 1..=MAX_COMPUTE_ATTEMPTS_LIMIT {
            names.insert(
                naming::compute_name(run.run_id(), attempt),
                (run.id().to_owned(), run.run_id().to_owned()),
            );
        }
    }
    Ok(names)
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
                        phase: run_phase(client, &workflow_id).await,
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

async fn run_phase(client: &Client, workflow_id: &str) -> Option<Phase> {
    let handle = client.get_workflow_handle::<TriggerExternalWorkflowClient>(workflow_id);
    let query = handle.query(StatusQuery, (), WorkflowQueryOptions::default());
    match tokio::time::timeout(QUERY_TIMEOUT, query).await {
        Ok(Ok(status)) => Some(status.phase),
        _ => None,
    }
}

/// `rows` as an aligned table, with a header; a line saying so when there are none.
pub fn compute_table(rows: &[ComputeRow]) -> String {
    if rows.is_empty() {
        return "no compute of this owner\n".to_owned();
    }
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            let (run, status, phase) = match &row.owner_run {
                Some(run) => (
                    format!("{} ({})", run.workflow_id, run.run_id),
                    "running".to_owned(),
                    run.phase
                        .map(|p| serde_plain(&p))
                        .unwrap_or_else(|| "? (no answer)".to_owned()),
                ),
                None => (
                    "-".to_owned(),
                    "none running".to_owned(),
                    "orphan: swept after the grace period".to_owned(),
                ),
            };
            [
                row.name.clone(),
                row.provider.clone(),
                run,
                status,
                phase,
                row.age_secs
                    .map(format_age)
                    .unwrap_or_else(|| "?".to_owned()),
            ]
        })
        .collect();
    table(
        [
            "NAME",
            "PROVIDER",
            "OWNER RUN",
            "RUN STATUS",
            "PHASE",
            "AGE",
        ],
        &cells,
    )
}

/// What `compute delete` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum DeleteOutcome {
    /// No running run owned it; deleted directly.
    Deleted(Deleted),
    /// Its run was cancelled and its teardown deleted it.
    DeletedByItsRun { workflow_id: String },
    /// Its run was cancelled and closed, but the unit was still there: deleted directly.
    DeletedAfterItsRunClosed {
        workflow_id: String,
        outcome: Deleted,
    },
}

/// How `compute delete` removes a unit once no running run owns it.
#[derive(Clone, Debug)]
pub enum DeleteRoute {
    /// Through a workflow-worker (`OperatorDeleteCompute`): counted in
    /// `tea_operator_deletes_total` and recorded in Temporal's history.
    Worker(ThroughWorker),
    /// From this command with its own provider client (`--direct`, when no workflow-worker
    /// runs): neither counted nor recorded.
    Direct,
}

/// What `compute delete` did, and where that is recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeleteDone {
    pub outcome: DeleteOutcome,
    /// The `OperatorDeleteCompute` workflow that carried it out (`None`: `--direct`).
    pub recorded_as: Option<String>,
}

/// Deletes the unit `name` of this owner by `route`. Refused while a running run owns it,
/// unless `cancel_run`: then that run is cancelled, its teardown is waited for (at most
/// `wait`), and the unit is deleted if the teardown left it.
pub async fn delete_compute(
    provider: &dyn ComputeProvider,
    client: &Client,
    name: &str,
    (cancel_run, wait): (bool, Duration),
    route: &DeleteRoute,
) -> anyhow::Result<DeleteDone> {
    let unit = find_unit(provider, name).await?.ok_or_else(|| {
        anyhow!(
            "no compute named {name} belongs to owner {} on the {} provider (see `workflow-worker \
             compute list`)",
            provider.owner(),
            provider.kind()
        )
    })?;
    let runs = running_runs_by_compute_name(client).await?;
    let Some((workflow_id, run_id)) = runs.get(name) else {
        let (outcome, recorded_as) = match route {
            DeleteRoute::Direct => (delete_directly(provider, name, &unit).await?, None),
            DeleteRoute::Worker(worker) => {
                let owner = provider.owner();
                let (deleted, id) =
                    delete_through_worker(client, worker, owner, (name, &unit), None).await?;
                (removed_or_gone(deleted.outcome), Some(id))
            }
        };
        return Ok(DeleteDone {
            outcome: DeleteOutcome::Deleted(outcome),
            recorded_as,
        });
    };
    if !cancel_run {
        bail!(
            "compute {name} belongs to the running run {workflow_id} (run {run_id}); deleting it \
             under the run would fail its job. Pass --cancel-run to cancel that run: its \
             teardown deletes the compute"
        );
    }
    let handle = client.get_workflow_handle::<TriggerExternalWorkflowClient>(workflow_id.clone());
    handle
        .cancel(
            WorkflowCancelOptions::builder()
                .reason(format!("operator: compute delete {name} --cancel-run"))
                .build(),
        )
        .await
        .with_context(|| format!("cancelling run {workflow_id}"))?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let description = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .with_context(|| format!("describing run {workflow_id}"))?;
        let closed = description.run_id() != run_id.as_str()
            || description.status() != WorkflowExecutionStatus::Running;
        if closed {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "run {workflow_id} was cancelled but has not closed within {}; compute {name} \
                 is left to its teardown (look again with `compute list`)",
                humantime::format_duration(wait)
            );
        }
        tokio::time::sleep(POLL).await;
    }
    // Whether its teardown removed it or not, the unit is confirmed gone (by the
    // workflow-worker: counted and recorded with the run it cancelled).
    let (left, recorded_as) = match route {
        DeleteRoute::Direct => match find_unit(provider, name).await? {
            None => (None, None),
            Some(id) => (Some(delete_directly(provider, name, &id).await?), None),
        },
        DeleteRoute::Worker(worker) => {
            let owner = provider.owner();
            let cancelled = Some(workflow_id.clone());
            let (deleted, id) =
                delete_through_worker(client, worker, owner, (name, &unit), cancelled).await?;
            let left =
                (deleted.outcome == OperatorDeleteOutcome::Deleted).then_some(Deleted::Removed);
            (left, Some(id))
        }
    };
    let workflow_id = workflow_id.clone();
    let outcome = match left {
        None => DeleteOutcome::DeletedByItsRun { workflow_id },
        Some(outcome) => DeleteOutcome::DeletedAfterItsRunClosed {
            workflow_id,
            outcome,
        },
    };
    Ok(DeleteDone {
        outcome,
        recorded_as,
    })
}

/// Deletes the unit with this command's own provider client (`--direct`).
async fn delete_directly(
    provider: &dyn ComputeProvider,
    name: &str,
    id: &str,
) -> anyhow::Result<Deleted> {
    provider
        .delete(id)
        .await
        .map_err(|e| anyhow!("deleting {name} failed: {e}"))
}

/// What the workflow-worker's delete did to the unit.
fn removed_or_gone(outcome: OperatorDeleteOutcome) -> Deleted {
    match outcome {
        OperatorDeleteOutcome::Deleted => Deleted::Removed,
        _ => Deleted::AlreadyGone,
    }
}

/// The provider ID of this owner's unit `name`, if it exists.
async fn find_unit(provider: &dyn ComputeProvider, name: &str) -> anyhow::Result<Option<String>> {
    Ok(provider
        .list_ours(name)
        .await
        .map_err(|e| anyhow!("listing {} compute failed: {e}", provider.kind()))?
        .into_iter()
        .find(|u| u.name == name)
        .map(|u| u.id))
}

/// A sweep report for people: a summary line, then what was deleted and what failed.
pub fn sweep_table(report: &SweepReport) -> String {
    let mut out = String::new();
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let _ = writeln!(
        out,
        "sweep of {} compute of owner {}{}: {} examined, {} owned by running runs, {} within the \
         grace period, {} {verb}, {} failed",
        report.provider,
        report.owner,
        if report.dry_run { " (dry run)" } else { "" },
        report.examined,
        report.owned_by_running_runs,
        report.within_grace_period,
        report.deleted.len(),
        report.failed.len()
    );
    let mut cells: Vec<[String; 3]> = report
        .deleted
        .iter()
        .map(|d| {
            let outcome = match d.outcome {
                None => "would delete".to_owned(),
                Some(Deleted::Removed) => "deleted".to_owned(),
                Some(Deleted::AlreadyGone) => "already gone".to_owned(),
            };
            [d.name.clone(), outcome, d.reason.clone()]
        })
        .collect();
    cells.extend(
        report
            .failed
            .iter()
            .map(|f| [f.name.clone(), "FAILED".to_owned(), f.error.clone()]),
    );
    if !cells.is_empty() {
        out.push_str(&table(["NAME", "OUTCOME", "WHY"], &cells));
    }
    out
}

/// Columns padded to their widest cell; the last one is not padded.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn serde_plain(phase: &Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{phase:?}"))
}

/// `42s`, `5m03s`, `2h05m`, `3d04h`.
fn format_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweeper::{SweepFailure, SweptCompute};

    #[test]
    fn ages_read_well() {
        assert_eq!(format_age(7), "7s");
        assert_eq!(format_age(303), "5m03s");
        assert_eq!(format_age(7_500), "2h05m");
        assert_eq!(format_age(273_600), "3d04h");
    }

    #[test]
    fn the_compute_table_names_each_unit_s_run_and_phase() {
        let rows = vec![
            ComputeRow {
                name: "ext-aaaa-1".into(),
                id: "app-1".into(),
                provider: "docker".into(),
                created_at: None,
                age_secs: Some(65),
                owner_run: Some(OwnerRun {
                    workflow_id: "nightly-export".into(),
                    run_id: "r-1".into(),
                    phase: Some(Phase::Running),
                }),
            },
            ComputeRow {
                name: "ext-bbbb-2".into(),
                id: "app-2".into(),
                provider: "docker".into(),
                created_at: None,
                age_secs: None,
                owner_run: None,
            },
        ];
        let text = compute_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("NAME") && lines[0].ends_with("AGE"),
            "{text}"
        );
        assert!(
            lines[1].contains("nightly-export (r-1)")
                && lines[1].contains("running")
                && lines[1].ends_with("1m05s"),
            "{text}"
        );
        assert!(
            lines[2].contains("none running") && lines[2].contains("orphan"),
            "{text}"
        );
        // Aligned: every column starts at the same offset on every line.
        let at = |line: &str| line.find("docker");
        assert_eq!(at(lines[1]), at(lines[2]), "{text}");
        assert_eq!(compute_table(&[]), "no compute of this owner\n");
    }

    #[test]
    fn the_sweep_table_says_what_was_deleted_and_what_failed() {
        let report = SweepReport {
            provider: "local".into(),
            owner: "default/q".into(),
            examined: 3,
            owned_by_running_runs: 1,
            within_grace_period: 0,
            deleted: vec![SweptCompute {
                name: "ext-1".into(),
                id: "ext-1".into(),
                reason: "no running run owns it".into(),
                outcome: Some(Deleted::Removed),
            }],
            failed: vec![SweepFailure {
                name: "ext-2".into(),
                id: "ext-2".into(),
                error: "engine error".into(),
            }],
            dry_run: false,
        };
        let text = sweep_table(&report);
        assert!(text.starts_with("sweep of local compute of owner default/q: 3 examined, 1 owned by running runs, 0 within the grace period, 1 deleted, 1 failed"), "{text}");
        assert!(
            text.contains("ext-1  deleted  no running run owns it"),
            "{text}"
        );
        assert!(text.contains("ext-2  FAILED   engine error"), "{text}");
    }
}
