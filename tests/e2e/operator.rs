//! The operator's commands on the real binary (local provider): `compute list` shows the unit
//! with the run that owns it, `compute delete` refuses a unit under a running run and deletes
//! it with `--cancel-run` through the run's own teardown; a unit no run owns is deleted by the
//! workflow-worker (`OperatorDeleteCompute`: counted in its metrics, recorded in Temporal),
//! and without a workflow-worker the command fails at once, leaving `--direct`.

use std::time::Duration;

use tea_orchestrator::operator_delete::{
    OperatorDeleteCompute, OperatorDeleteOutcome, OperatorDeleteRequest,
};
use tea_starter::RunEnd;
use temporalio_client::WorkflowGetResultOptions;

use crate::{
    local::{Fixture, terminate_and_wait_for_its_worker, workflow_worker},
    metrics::{counter, free_metrics_addr},
    support::{Proc, bin, pid_alive, run},
};

/// Runs `workflow-worker <args>` with the fixture's settings; returns its exit success and
/// output.
async fn operator(fx: &Fixture, args: &[&str]) -> (bool, String) {
    let log = format!("operator-{}.log", uuid::Uuid::new_v4().simple());
    let mut command: Proc = {
        let mut builder = workflow_worker(
            &fx.dir,
            &fx.server,
            &fx.task_queue,
            &bin("external-worker"),
            &log,
        )
        .env("LOG_LEVEL", "error");
        for arg in args {
            builder = builder.arg(*arg);
        }
        builder.spawn()
    };
    let status = command.wait(Duration::from_secs(120)).await;
    (status.success(), command.output())
}

/// The only unit's name, as `compute list --json` shows it.
async fn only_unit(fx: &Fixture) -> String {
    let (ok, json) = operator(fx, &["compute", "list", "--json"]).await;
    assert!(ok, "compute list failed: {json}");
    let rows: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("compute list --json printed no JSON ({e}): {json}"));
    let [unit] = rows.as_array().expect("an array of units").as_slice() else {
        panic!("one unit: {rows}");
    };
    unit["name"].as_str().expect("name").to_owned()
}

/// The audit record's workflow ID in `compute delete`'s output (`... workflow <id>)`).
fn recorded_as(output: &str) -> String {
    let (_, rest) = output
        .split_once("workflow tea-operator-delete-")
        .unwrap_or_else(|| panic!("no OperatorDeleteCompute workflow named: {output}"));
    let id: String = rest.chars().take_while(|c| *c != ')').collect();
    format!("tea-operator-delete-{id}")
}

/// `tea_operator_deletes_total` of the local provider with `outcome`, from the
/// workflow-worker's metrics at `addr`.
async fn operator_deletes(addr: &str, outcome: &str) -> f64 {
    let labels = [("provider", "local"), ("outcome", outcome)];
    counter(addr, "tea_operator_deletes_total", &labels).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_list_shows_the_owner_run_and_delete_needs_cancel_run() {
    let metrics = free_metrics_addr();
    let fx = Fixture::start_with_env("operator-commands", &[("METRICS_ADDR", &metrics)]).await;
    let (handle, pid) = fx.start_job("operator-commands", "10m").await;
    let workflow_id = handle.info().workflow_id.clone();

    let (ok, json) = operator(&fx, &["compute", "list", "--json"]).await;
    assert!(ok, "compute list failed: {json}");
    let rows: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("compute list --json printed no JSON ({e}): {json}"));
    let rows = rows.as_array().expect("an array of units");
    assert_eq!(rows.len(), 1, "one unit: {rows:?}");
    let unit = &rows[0];
    let name = unit["name"].as_str().expect("name").to_owned();
    assert_eq!(unit["provider"], "local", "{unit}");
    assert_eq!(
        unit["owner_run"]["workflow_id"],
        workflow_id.as_str(),
        "{unit}"
    );
    assert_eq!(unit["owner_run"]["phase"], "running", "{unit}");
    assert!(unit["age_secs"].is_u64(), "{unit}");

    let (ok, table) = operator(&fx, &["compute", "list"]).await;
    assert!(ok, "compute list failed: {table}");
    let line = table
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("{name} not in the table: {table}"));
    assert!(
        line.contains(&workflow_id) && line.contains("running"),
        "{table}"
    );

    // Refused under a running run: nothing is touched.
    let (ok, refusal) = operator(&fx, &["compute", "delete", &name]).await;
    assert!(!ok, "delete under a running run must fail: {refusal}");
    assert!(
        refusal.contains("--cancel-run") && refusal.contains(&workflow_id),
        "{refusal}"
    );
    assert!(pid_alive(pid), "the refused delete stopped the worker");
    assert_eq!(
        fx.compute_dirs().len(),
        1,
        "the refused delete removed the unit"
    );

    let (ok, done) = operator(&fx, &["compute", "delete", &name, "--cancel-run"]).await;
    assert!(ok, "delete --cancel-run failed: {done}");
    assert!(done.contains("its teardown deleted"), "{done}");
    recorded_as(&done);
    let end = run::finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    assert!(!pid_alive(pid), "external worker {pid} still running");
    fx.assert_no_compute_left();

    let (ok, json) = operator(&fx, &["compute", "list", "--json"]).await;
    assert!(
        ok && json.trim() == "[]",
        "nothing listed after the delete: {json}"
    );
    let (ok, missing) = operator(&fx, &["compute", "delete", &name]).await;
    assert!(!ok && missing.contains("no compute named"), "{missing}");
    // The workflow-worker confirmed the run's teardown had removed it, and counted that.
    assert_eq!(operator_deletes(&metrics, "deleted_by_its_run").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_delete_goes_through_the_workflow_worker_and_without_one_fails_at_once() {
    let metrics = free_metrics_addr();
    let mut fx = Fixture::start_with_env("operator-delete", &[("METRICS_ADDR", &metrics)]).await;
    let client = fx.server.client().await;

    // A unit no running run owns: deleted, counted and recorded by the workflow-worker.
    let (handle, pid) = fx.start_job("operator-delete", "10m").await;
    terminate_and_wait_for_its_worker(&handle, pid).await;
    let name = only_unit(&fx).await;
    let (ok, done) = operator(&fx, &["compute", "delete", &name]).await;
    assert!(ok, "compute delete failed: {done}");
    assert!(done.contains(&format!("deleted {name}")), "{done}");
    fx.assert_no_compute_left();
    assert_eq!(operator_deletes(&metrics, "deleted").await, 1.0);
    // The audit record: which unit, who asked, how it ended.
    let record = client.get_workflow_handle::<OperatorDeleteCompute>(recorded_as(&done));
    let result = record
        .get_result(WorkflowGetResultOptions::default())
        .await
        .expect("the delete's result");
    assert_eq!(result.compute_name, name);
    assert_eq!(result.outcome, OperatorDeleteOutcome::Deleted);
    let started = run::start_event(&record).await;
    let input = &started.input.expect("input").payloads[0].data;
    let request: OperatorDeleteRequest = serde_json::from_slice(input).expect("the request");
    assert_eq!(request.compute_name, name);
    assert!(request.requested_by.pid > 0, "{request:?}");
    assert!(request.requested_by.host.is_some(), "{request:?}");
    assert!(
        started.identity.contains("workflow-worker compute"),
        "{}",
        started.identity
    );

    // No workflow-worker: the command fails within its pickup bound, deleting nothing.
    let (handle, pid) = fx.start_job("operator-delete-alone", "10m").await;
    terminate_and_wait_for_its_worker(&handle, pid).await;
    let name = only_unit(&fx).await;
    fx.worker.sigkill();
    let _ = fx.worker.wait(Duration::from_secs(10)).await;
    let (ok, refusal) =
        operator(&fx, &["compute", "delete", &name, "--pickup-timeout", "2s"]).await;
    assert!(!ok, "delete without a workflow-worker must fail: {refusal}");
    assert!(
        refusal.contains("no workflow-worker picked it up within 2s")
            && refusal.contains(&fx.task_queue)
            && refusal.contains("--direct"),
        "{refusal}"
    );
    assert_eq!(
        fx.compute_dirs().len(),
        1,
        "deleted without a workflow-worker"
    );
    let (ok, done) = operator(&fx, &["compute", "delete", &name, "--direct"]).await;
    assert!(ok, "compute delete --direct failed: {done}");
    assert!(
        done.contains(&format!("deleted {name}")) && done.contains("not counted"),
        "{done}"
    );
    fx.assert_no_compute_left();
}
