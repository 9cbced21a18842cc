//! The operator's commands on the real binary (local provider): `compute list` shows the unit
//! with the run that owns it, `compute delete` refuses a unit under a running run and deletes
//! it with `--cancel-run` through the run's own teardown; a unit no run owns is deleted by the
//! workflow-worker (`OperatorDeleteCompute`: counted in its metrics, recorded in Temporal),
//! and without a workflow-worker the command fails at once, leaving `--direct`. A unit of
//! another owner, or of none, is refused (in the command, and again in the workflow-worker)
//! and survives; `--cancel-run` cancels the unit's run by its run ID, never a newer run under
//! the same workflow ID.

use std::time::Duration;

use tea_compute::{local, naming::compute_name};
use tea_orchestrator::{
    operator,
    operator_delete::{OperatorDeleteCompute, OperatorDeleteOutcome, OperatorDeleteRequest},
};
use tea_starter::{RunEnd, RunHandle};
use temporalio_client::{
    WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowGetResultOptions,
};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;

use crate::{
    local::{Fixture, terminate_and_wait_for_its_worker, workflow_worker},
    metrics::{ANY_METRICS_ADDR, counter, served_at},
    ownership::seed_local_dir,
    support::{
        Proc, bin, history, pid_alive,
        run::{self, RUN_TIMEOUT, pending_job},
        unique, wait_for,
    },
};

/// Runs `workflow-worker <args>` with the fixture's settings; returns its exit success and
/// output.
async fn operator(fx: &Fixture, args: &[&str]) -> (bool, String) {
    operator_with(fx, &[], args).await
}

/// [`operator`] with more settings (`COMPUTE_OWNER`, ...).
async fn operator_with(fx: &Fixture, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
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
        for (key, value) in env {
            builder = builder.env(key, *value);
        }
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
    let fx =
        Fixture::start_with_env("operator-commands", &[("METRICS_ADDR", ANY_METRICS_ADDR)]).await;
    let metrics = served_at(&fx.worker).await;
    let (handle, pid) = fx.start_job("operator-commands", "10m").await;
    run::wait_until_listed(&handle, true).await;
    let workflow_id = handle.info().workflow_id.clone();

    // The job starts the moment the worker polls; the run enters `running` once its
    // WaitForAppBuild has seen that poller too.
    let unit = wait_for(
        "compute list to show the run running",
        RUN_TIMEOUT,
        || async {
            let (ok, json) = operator(&fx, &["compute", "list", "--json"]).await;
            assert!(ok, "compute list failed: {json}");
            let rows: serde_json::Value = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("compute list --json printed no JSON ({e}): {json}"));
            let rows = rows.as_array().expect("an array of units");
            assert_eq!(rows.len(), 1, "one unit: {rows:?}");
            let unit = rows[0].clone();
            (unit["owner_run"]["phase"] == "running").then_some(unit)
        },
    )
    .await;
    let name = unit["name"].as_str().expect("name").to_owned();
    assert_eq!(unit["provider"], "local", "{unit}");
    assert_eq!(
        unit["owner_run"]["workflow_id"],
        workflow_id.as_str(),
        "{unit}"
    );
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
    let record = fx
        .server
        .client()
        .await
        .get_workflow_handle::<OperatorDeleteCompute>(recorded_as(&done));
    run::record_history_as(&record, "operator-delete-by-its-run").await;
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
    let mut fx =
        Fixture::start_with_env("operator-delete", &[("METRICS_ADDR", ANY_METRICS_ADDR)]).await;
    let metrics = served_at(&fx.worker).await;
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
    run::record_history_as(&record, "operator-delete-deleted").await;
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

/// The fixture's owner: the default, `<namespace>/<task queue>`.
fn fixture_owner(fx: &Fixture) -> String {
    format!("default/{}", fx.task_queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_delete_refuses_a_unit_another_owner_or_nobody_marked_and_it_survives() {
    let fx = Fixture::start("operator-owners").await;
    let ours = fixture_owner(&fx);
    let (handle, pid) = fx.start_job("operator-owners", "10m").await;
    let name = only_unit(&fx).await;

    // Another deployment sharing the state directory: refused whatever the route, before any
    // run is cancelled, naming both owners.
    let intruder = [("COMPUTE_OWNER", "intruder")];
    for extra in [&[][..], &["--direct"], &["--cancel-run"]] {
        let args = [&["compute", "delete", name.as_str()][..], extra].concat();
        let (ok, refusal) = operator_with(&fx, &intruder, &args).await;
        assert!(!ok, "{args:?} of another owner's unit must fail: {refusal}");
        assert!(
            refusal.contains("belongs to another deployment")
                && refusal.contains(&format!("{ours:?}"))
                && refusal.contains("\"intruder\"")
                && refusal.contains("nothing was touched"),
            "{refusal}"
        );
    }
    assert!(pid_alive(pid), "a refused delete stopped the worker");
    assert_eq!(
        fx.compute_dirs().len(),
        1,
        "a refused delete removed the unit"
    );
    let status = handle
        .describe(WorkflowDescribeOptions::default())
        .await
        .expect("describe the run");
    assert_eq!(status.status(), WorkflowExecutionStatus::Running);

    // A unit with our kind of name that nobody marked: refused, left alone.
    let state_dir = fx.dir.join("compute");
    let unmarked = seed_local_dir(&state_dir, &compute_name("nobody-s-run", 1), None);
    let (ok, refusal) = operator(&fx, &["compute", "delete", &unmarked, "--direct"]).await;
    assert!(!ok, "an unmarked unit must not be deleted: {refusal}");
    assert!(
        refusal.contains("carries no owner mark") && refusal.contains(&format!("{ours:?}")),
        "{refusal}"
    );
    assert!(
        state_dir.join(&unmarked).is_dir(),
        "the unmarked unit was removed"
    );

    // The workflow-worker checks again with its own owner: a command run as another owner
    // (whose unit this is) on the fixture's queue gets the delete refused there.
    let theirs = seed_local_dir(&state_dir, &compute_name("their-run", 1), Some("theirs"));
    let (ok, refusal) = operator_with(
        &fx,
        &[("COMPUTE_OWNER", "theirs")],
        &["compute", "delete", &theirs],
    )
    .await;
    assert!(
        !ok,
        "the workflow-worker must refuse another owner's unit: {refusal}"
    );
    assert!(
        refusal.contains("the workflow-worker could not delete")
            && refusal.contains("\"theirs\"")
            && refusal.contains(&format!("{ours:?}"))
            && refusal.contains("must share COMPUTE_OWNER"),
        "{refusal}"
    );
    assert!(
        state_dir.join(&theirs).is_dir(),
        "the other owner's unit was removed"
    );

    let end = run::cancel_and_finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    let left: Vec<String> = tea_compute::local::compute_dirs(&state_dir)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut seeded = vec![unmarked, theirs];
    seeded.sort();
    assert_eq!(left, seeded, "only the seeded units are left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_run_cancels_the_unit_s_run_by_its_run_id_never_a_newer_run_of_its_workflow_id() {
    let fx = Fixture::start("operator-run-id").await;
    let client = fx.server.client().await;
    let workflow_id = unique("operator-run-id");
    let start = || async {
        let handle = tea_starter::start(&client, &fx.task_queue, &workflow_id, run::input("10m"))
            .await
            .expect("start the run");
        wait_for("the job to start", RUN_TIMEOUT, || pending_job(&handle)).await;
        handle
    };
    // The old run leaves its unit behind (terminated: no teardown); a newer run of the same
    // workflow ID has a unit of its own.
    let old = start().await;
    let old_run = old.run_id().expect("run ID").to_owned();
    let old_unit = compute_name(&old_run, 1);
    let old_pid = local::recorded_pid(&fx.dir.join("compute").join(&old_unit)).expect("pid");
    terminate_and_wait_for_its_worker(&old, old_pid).await;
    let new = start().await;
    let new_run = new.run_id().expect("run ID").to_owned();
    let new_unit = compute_name(&new_run, 1);

    // A delete aimed at the old run's unit that listed the old run as running (a race the
    // command cannot rule out): the cancel reaches no run.
    let cancel = operator::cancel_run_and_wait(
        &client,
        (&workflow_id, &old_run),
        &old_unit,
        Duration::from_secs(30),
    )
    .await
    .expect("cancel aimed at the old run");
    assert!(!cancel.cancelled, "{cancel:?}");
    let described = new
        .describe(WorkflowDescribeOptions::default())
        .await
        .expect("describe the newer run");
    assert_eq!(described.status(), WorkflowExecutionStatus::Running);
    assert!(
        !cancel_requested(&new).await,
        "the newer run was asked to cancel"
    );

    // The command: the old unit is nobody's running run's, so it goes without a cancel.
    let (ok, done) = operator(&fx, &["compute", "delete", &old_unit, "--cancel-run"]).await;
    assert!(
        ok && done.contains(&format!("deleted {old_unit}")),
        "{done}"
    );
    assert!(
        !cancel_requested(&new).await,
        "the newer run was asked to cancel"
    );

    // The newer run's unit: that run is cancelled, by its run ID.
    let (ok, done) = operator(&fx, &["compute", "delete", &new_unit, "--cancel-run"]).await;
    assert!(ok, "delete --cancel-run failed: {done}");
    assert!(
        done.contains(&format!("cancelled run {workflow_id} (run {new_run})"))
            && done.contains(&format!("its teardown deleted {new_unit}")),
        "{done}"
    );
    let end = run::finish(&new, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    fx.assert_no_compute_left();
}

/// Whether the run's history holds a cancel request.
async fn cancel_requested(handle: &RunHandle) -> bool {
    history::events(handle).await.iter().any(|e| {
        matches!(
            e.attributes,
            Some(Attributes::WorkflowExecutionCancelRequestedEventAttributes(
                _
            ))
        )
    })
}
