//! The operator's commands on the real binary (local provider): `compute list` shows the unit
//! with the run that owns it, `compute delete` refuses a unit under a running run and deletes
//! it with `--cancel-run` through the run's own teardown.

use std::time::Duration;

use tea_starter::RunEnd;

use crate::{
    local::{Fixture, workflow_worker},
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_list_shows_the_owner_run_and_delete_needs_cancel_run() {
    let fx = Fixture::start("operator-commands").await;
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
}
