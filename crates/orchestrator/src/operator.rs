//! What an operator sees and does by hand: `compute list` (this owner's compute, the run that
//! owns each unit, that run's phase and the unit's age), `compute delete` (refused under a
//! running run unless that run is cancelled first, so its own teardown deletes the unit), and
//! the sweep's report as a table.
//!
//! Everything here goes through the provider's ownership check ([`ComputeOwner::claim`], the
//! one behind `list_ours` and so the sweeper: only this owner's compute is ever shown or
//! deleted; a unit another owner marked, or none did, is refused naming both owners) and
//! through Temporal for the runs; nothing is cached. A run is cancelled by its run ID, never
//! by its workflow ID alone (a newer run under that ID is not the unit's). The delete itself
//! is carried out by the workflow-worker ([`crate::operator_delete`]: counted, recorded in
//! Temporal, and checked again there with [`claim_unit`]), or with `--direct` by this command.

use std::{
    collections::HashMap,
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use anyhow::{Context, anyhow, bail};
use futures::{StreamExt, stream};
use serde::Serialize;
use tea_compute::{
    ComputeOwner, ComputeProvider, ComputeSummary, Deleted, NotOurs, ProviderError, naming,
};
use tea_contract::{
    MAX_COMPUTE_ATTEMPTS_LIMIT, Phase, StatusQuery, TriggerExternalWorkflowClient, WORKFLOW_TYPE,
};
use temporalio_client::{
    Client, WorkflowCancelOptions, WorkflowDescribeOptions, WorkflowExecutionInfo,
    WorkflowExecutionStatus, WorkflowHandle, WorkflowListOptions, WorkflowQueryOptions,
    errors::WorkflowInteractionError,
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

/// A handle on exactly the run `run_id` of `workflow_id`: a cancel, describe or query through
/// it never reaches a newer run started under the same workflow ID.
pub fn run_handle(
    client: &Client,
    workflow_id: &str,
    run_id: &str,
) -> WorkflowHandle<Client, TriggerExternalWorkflowClient> {
    let info = WorkflowExecutionInfo::builder()
        .namespace(client.options().namespace.clone())
        .workflow_id(workflow_id)
        .run_id(run_id)
        .build();
    WorkflowHandle::new(client.clone(), info)
}

/// What the ownership check made of the unit of a name (see [`claim_unit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitClaim {
    /// This owner's unit.
    Ours(ComputeSummary),
    /// No unit has that name.
    Missing,
    /// A unit has that name but is not this owner's (why, see [`refusal`]). Nothing may act
    /// on it.
    Refused(NotOurs),
}

/// Looks up the unit `name` whoever marked it and runs on it the ownership check the sweeper's
/// listing runs ([`ComputeOwner::claim`], behind every provider's `list_ours`). `compute
/// delete` runs it in the command, and the workflow-worker again right before it deletes.
pub async fn claim_unit(
    provider: &dyn ComputeProvider,
    name: &str,
) -> Result<UnitClaim, ProviderError> {
    let Some(found) = provider.find(name).await? else {
        return Ok(UnitClaim::Missing);
    };
    Ok(match found.claimed_by(provider.owner()) {
        Ok(unit) => UnitClaim::Ours(unit),
        Err(why) => UnitClaim::Refused(why),
    })
}

/// Who refuses to delete a unit that is not its owner's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refuser {
    /// The `compute delete` command.
    Command,
    /// The workflow-worker carrying out the command's delete.
    WorkflowWorker,
}

/// Why `refuser`, of owner `ours`, refuses to delete the unit `name` of the `kind` provider:
/// naming both owners when another one marked it, and what to do.
pub fn refusal(
    refuser: Refuser,
    (kind, ours): (&str, &ComputeOwner),
    name: &str,
    why: &NotOurs,
) -> String {
    let ours = ours.as_str();
    match (why, refuser) {
        (NotOurs::MarkedBy(theirs), Refuser::Command) => format!(
            "compute {name} belongs to another deployment: its owner mark is {theirs:?} and this \
             deployment's owner is {ours:?}; refusing to delete it, nothing was touched (if that \
             deployment is yours, run the command as it: COMPUTE_OWNER={theirs})"
        ),
        (NotOurs::MarkedBy(theirs), Refuser::WorkflowWorker) => format!(
            "compute {name} carries the owner mark {theirs:?} but this workflow-worker's owner is \
             {ours:?}; refusing to delete it, nothing was touched (the command and the \
             workflow-workers of its task queue must share COMPUTE_OWNER)"
        ),
        (NotOurs::Unmarked, _) => format!(
            "compute {name} carries no owner mark, so no deployment of this project created it \
             (this deployment's owner is {ours:?}); refusing to delete it, nothing was touched \
             (remove it by hand on the {kind} provider if it is yours)"
        ),
        (NotOurs::NotGenerated, _) => format!(
            "{name} is not a compute name this project generates (`ext-`, 26 hex digits, \
             `-<attempt>`, as `compute list` shows them); refusing to delete it, nothing was \
             touched"
        ),
    }
}

/// The run that owned a unit, as `compute delete --cancel-run` cancelled it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CancelledRun {
    pub workflow_id: String,
    pub run_id: String,
    /// `false`: the run had closed already (nothing was cancelled).
    pub cancelled: bool,
}

impl std::fmt::Display for CancelledRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (workflow_id, run_id) = (&self.workflow_id, &self.run_id);
        if self.cancelled {
            write!(f, "cancelled run {workflow_id} (run {run_id})")
        } else {
            write!(f, "run {workflow_id} (run {run_id}) had closed already")
        }
    }
}

/// What `compute delete` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum DeleteOutcome {
    /// No running run owned it; deleted directly.
    Deleted(Deleted),
    /// Its run was cancelled and its teardown deleted it.
    DeletedByItsRun { run: CancelledRun },
    /// Its run was cancelled and closed, but the unit was still there: deleted directly.
    DeletedAfterItsRunClosed { run: CancelledRun, outcome: Deleted },
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
            "no compute named {name} on the {} provider (`workflow-worker compute list` shows \
             owner {}'s)",
            provider.kind(),
            provider.owner()
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
    let run = cancel_run_and_wait(client, (workflow_id, run_id.as_str()), name, wait).await?;
    // Whether its teardown removed it or not, the unit is confirmed gone (by the
    // workflow-worker: counted and recorded with the run it cancelled).
    let (left, recorded_as) = match route {
        DeleteRoute::Direct => match find_unit(provider, name).await? {
            None => (None, None),
            Some(id) => (Some(delete_directly(provider, name, &id).await?), None),
        },
        DeleteRoute::Worker(worker) => {
            let owner = provider.owner();
            let cancelled = Some((run.workflow_id.clone(), run.run_id.clone()));
            let (deleted, id) =
                delete_through_worker(client, worker, owner, (name, &unit), cancelled).await?;
            let left =
                (deleted.outcome == OperatorDeleteOutcome::Deleted).then_some(Deleted::Removed);
            (left, Some(id))
        }
    };
    let outcome = match left {
        None => DeleteOutcome::DeletedByItsRun { run },
        Some(outcome) => DeleteOutcome::DeletedAfterItsRunClosed { run, outcome },
    };
    Ok(DeleteDone {
        outcome,
        recorded_as,
    })
}

/// Cancels exactly the run `run_id` of `workflow_id`, the run that owned the unit `name` (a
/// newer run under the same workflow ID is never cancelled: it does not own the unit, whose
/// name derives from the run ID), and waits at most `wait` for it to close. A run that has
/// closed already is not an error (nor cancelled): its unit is no longer under a running run.
pub async fn cancel_run_and_wait(
    client: &Client,
    (workflow_id, run_id): (&str, &str),
    name: &str,
    wait: Duration,
) -> anyhow::Result<CancelledRun> {
    let handle = run_handle(client, workflow_id, run_id);
    let running = || async {
        match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(description) => Ok(description.status() == WorkflowExecutionStatus::Running),
            // Exactly this run is asked for: not found means it is gone (out of retention).
            Err(WorkflowInteractionError::NotFound(_)) => Ok(false),
            Err(e) => {
                Err(e).with_context(|| format!("describing run {workflow_id} (run {run_id})"))
            }
        }
    };
    let mut cancelled = CancelledRun {
        workflow_id: workflow_id.to_owned(),
        run_id: run_id.to_owned(),
        cancelled: false,
    };
    if !running().await? {
        return Ok(cancelled);
    }
    // The server takes a cancel of a run that has closed meanwhile as a no-op.
    handle
        .cancel(
            WorkflowCancelOptions::builder()
                .reason(format!("operator: compute delete {name} --cancel-run"))
                .build(),
        )
        .await
        .with_context(|| format!("cancelling run {workflow_id} (run {run_id})"))?;
    cancelled.cancelled = true;
    let deadline = tokio::time::Instant::now() + wait;
    while running().await? {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "run {workflow_id} (run {run_id}) was cancelled but has not closed within {}; \
                 compute {name} is left to its teardown (look again with `compute list`)",
                humantime::format_duration(wait)
            );
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(cancelled)
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

/// The provider ID of this owner's unit `name`, if it exists; an error when a unit of that
/// name is not this owner's ([`claim_unit`]).
async fn find_unit(provider: &dyn ComputeProvider, name: &str) -> anyhow::Result<Option<String>> {
    let claim = claim_unit(provider, name).await.map_err(|e| {
        anyhow!(
            "looking up {name} on the {} provider failed: {e}",
            provider.kind()
        )
    })?;
    match claim {
        UnitClaim::Ours(unit) => Ok(Some(unit.id)),
        UnitClaim::Missing => Ok(None),
        UnitClaim::Refused(why) => {
            let provider = (provider.kind(), provider.owner());
            bail!("{}", refusal(Refuser::Command, provider, name, &why))
        }
    }
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
    fn refusals_name_both_owners_and_what_to_do() {
        let ours = ComputeOwner::new("prod").unwrap();
        let say = |refuser, why| refusal(refuser, ("docker", &ours), "ext-1", &why);
        let theirs = || NotOurs::MarkedBy("staging".into());
        let command = say(Refuser::Command, theirs());
        assert!(
            command
                .contains(r#"its owner mark is "staging" and this deployment's owner is "prod""#)
                && command.contains("COMPUTE_OWNER=staging"),
            "{command}"
        );
        let worker = say(Refuser::WorkflowWorker, theirs());
        assert!(
            worker.contains(r#""staging" but this workflow-worker's owner is "prod""#),
            "{worker}"
        );
        let unmarked = say(Refuser::Command, NotOurs::Unmarked);
        assert!(
            unmarked.contains("no owner mark") && unmarked.contains("docker provider"),
            "{unmarked}"
        );
        for text in [
            command,
            worker,
            unmarked,
            say(Refuser::Command, NotOurs::NotGenerated),
        ] {
            assert!(text.contains("nothing was touched"), "{text}");
        }
    }

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
