//! Replay tests: every committed history of the workflows the workflow-worker hosts
//! (`TriggerExternalWorkflow`, the capacity semaphore `ComputeCapacity`, the operator's
//! `OperatorDeleteCompute` and the scheduled `SweepLeakedCompute`) must replay against today's
//! workflow code without a nondeterminism error. A change to a workflow's command sequence that
//! is not guarded by a patch (`ctx.patched`) fails here, before it can fail the workflow tasks
//! of runs in flight.
//!
//! The histories in `tests/histories/` were recorded from real runs on a dev server by the
//! end-to-end tests (`TEA_RECORD_HISTORIES=<dir> cargo test -p tea-e2e --test e2e`), which
//! name each file after its test's workflow ID. They are kept as
//! `<workflow>-<version>-<path>.json`: `run-0.1.0-happy-local.json` is a run of the baseline
//! that took the happy path on the local provider. Histories stay when the code moves on: they
//! are what runs in flight look like after a deployment. CONTRIBUTING.md, "Changing the
//! workflow", says how to add a version's.

use std::path::{Path, PathBuf};

use tea_orchestrator::{
    capacity::ComputeCapacity, operator_delete::OperatorDeleteCompute, sweeper::SweepLeakedCompute,
    workflow::TriggerExternalWorkflow,
};
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// The paths of `TriggerExternalWorkflow`'s baseline (0.1.0) the guarantee rests on, each
/// recorded at least once.
const BASELINE_RUN_PATHS: &[&str] = &[
    // Completed: the timed job, a command, after a capped wait, a job that started while the
    // deployment still rolled out, a job that completed before its `Create` was reported failed.
    "happy-local",
    "happy-command",
    "happy-capacity-waited",
    "happy-job-started-while-deploying",
    "happy-job-completed-before-create-failed",
    // Cancelled in each phase: the first pause, waiting for a slot, while `Create` ran (the
    // queued job withdrawn), while deploying, while the job ran (timed job, command), while a
    // lost attempt was torn down.
    "cancel-pausing",
    "cancel-waiting-for-capacity",
    "cancel-creating",
    "cancel-deploying",
    "cancel-local",
    "cancel-command",
    "cancel-between-attempts",
    // A fresh unit after a lost one: its worker died, its worker never polled; the job
    // resumed from the lost unit's last heartbeat (a command's checkpoint, after the unit died
    // or after its worker shut down and stopped the job; the timed job's elapsed time); a
    // command without a checkpoint started afresh.
    "reprovision-dead-worker",
    "reprovision-never-polls",
    "reprovision-resumed-command",
    "reprovision-resumed-after-shutdown",
    "reprovision-resumed-timed-job",
    "reprovision-command-afresh",
    // Failed: `Create` refused (the queued job withdrawn), a deployment that failed, the
    // compute lifetime reached (counted from `Create`'s scheduling).
    "failed-create-rejected-token",
    "failed-deployment",
    "failed-lifetime-exceeded",
    "failed-lifetime-counted-from-create",
    // The user's own activity (new input, same baseline: runs naming none take the paths
    // above): completed with its typed result, failed with its own non-retryable failure,
    // named but not registered by the unit's worker, its worker killed and run again on a
    // fresh unit (from the start; resumed from the lost unit's last heartbeat detail, after
    // the unit died or after its worker shut down and the activity gave its progress); as the
    // child of a Python workflow, completed and cancelled with its parent.
    "happy-own-activity",
    "failed-own-activity-non-retryable",
    "failed-own-activity-not-registered",
    "reprovision-own-activity",
    "reprovision-resumed-own-activity",
    "reprovision-resumed-own-activity-after-shutdown",
    "happy-child-of-python",
    "cancel-child-of-python-parent",
    // Resources refused before any compute (by the operator's bound).
    "failed-resources-refused",
];

fn history_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn every_recorded_history_replays_against_todays_workflows() {
    let files = history_files();
    for path in BASELINE_RUN_PATHS {
        assert_recorded(&files, &format!("run-0.1.0-{path}"));
    }
    // The semaphore: started, a waiter cancelled, malformed signals refused, a start that
    // recovered after its predecessor was terminated.
    for path in ["started", "cancel-waiting", "malformed-signals", "rebuilt"] {
        assert_recorded(&files, &format!("semaphore-0.1.0-{path}"));
    }
    // The operator's delete: of a unit no run owns, of one whose run's teardown deleted it.
    for path in ["deleted", "by-its-run"] {
        assert_recorded(&files, &format!("operator-delete-0.1.0-{path}"));
    }
    assert_recorded(&files, "sweep-0.1.0-deleted");
    let mut options = WorkflowReplayerOptions::new().build();
    options
        .register_workflow::<TriggerExternalWorkflow>()
        .expect("register the workflow");
    options
        .register_workflow::<ComputeCapacity>()
        .expect("register the capacity semaphore");
    options
        .register_workflow::<OperatorDeleteCompute>()
        .expect("register the operator's delete");
    options
        .register_workflow::<SweepLeakedCompute>()
        .expect("register the sweep");
    let replayer = WorkflowReplayer::new(options).expect("replayer");
    let mut failures = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let history = WorkflowHistory::from_json(&bytes)
            .unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
        if let Err(e) = replayer.replay_workflow(history).await {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "histories that no longer replay:\n{}",
        failures.join("\n")
    );
}

/// Fails unless a history whose name starts with `prefix` is in `files`.
fn assert_recorded(files: &[PathBuf], prefix: &str) {
    assert!(
        files.iter().any(|f| f
            .file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.starts_with(prefix))),
        "no recorded history {prefix}* in {files:?}"
    );
}
