//! Replay tests: every committed history of `TriggerExternalWorkflow` and of the capacity
//! semaphore `ComputeCapacity` must replay against today's workflow code without a
//! nondeterminism error. A change to the workflow's command
//! sequence that is not guarded by a patch (`ctx.patched`) fails here, before it can fail the
//! workflow tasks of runs in flight.
//!
//! The histories in `tests/histories/` were recorded from real runs on a dev server by the
//! end-to-end tests (`TEA_RECORD_HISTORIES=<dir> cargo test --test e2e`). Histories of older
//! workflow versions stay: they are what runs in flight look like after a deployment. Files
//! are named `<version>-<scenario>.json`, the semaphore's `semaphore-<version>-<scenario>.json`
//! (a semaphore runs for as long as its owner has runs: a deployment always replays one).

use std::path::{Path, PathBuf};

use tea_orchestrator::{capacity::ComputeCapacity, workflow::TriggerExternalWorkflow};
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

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
async fn every_recorded_history_replays_against_todays_workflow() {
    let files = history_files();
    // The scenarios the guarantee rests on, for every workflow version: v1 is the port as
    // first shipped, v2 runs under the `bounded-waits` patch, v3 under `run-command` too, v4
    // under `compute-lifetime` too (with and without a lifetime set, and one it ended), v5
    // under `compute-capacity` too (uncapped, and capped runs that waited for a slot), v6
    // under `quick-start` too (the capacity check a local activity, the job queued on the
    // compute's queue together with `Create`: a failed create or deployment cancels it while
    // queued), v7 under `capacity-reassert` too (capped runs re-assert their request while
    // they wait and their slot while they hold it: through a terminated semaphore, and a
    // reset while waiting), v8 under `finished-job-kept` and `lifetime-from-create` too (a job
    // that completed before its `Create` failed is the run's result; a job that started while
    // the deployment still rolled out made the unit ready; the lifetime counted from `Create`'s
    // scheduling).
    for version in ["v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8"] {
        for scenario in [
            "happy",
            "cancel",
            "reprovision",
            "failed-create",
            "failed-deployment",
        ] {
            assert_recorded(&files, &format!("{version}-{scenario}"));
        }
    }
    // The semaphore: v1 as first shipped (the loop before `capacity-recovery`), v2 under it
    // (refused malformed signals, re-asserted holders, a start that recovered).
    for version in ["v1", "v2"] {
        for scenario in ["started", "cancel-waiting"] {
            assert_recorded(&files, &format!("semaphore-{version}-{scenario}"));
        }
    }
    let mut options = WorkflowReplayerOptions::new().build();
    options
        .register_workflow::<TriggerExternalWorkflow>()
        .expect("register the workflow");
    options
        .register_workflow::<ComputeCapacity>()
        .expect("register the capacity semaphore");
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
