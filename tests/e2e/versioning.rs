//! Worker Deployment Versioning: two builds of the workflow-worker side by side on one queue and
//! one dev server, rolled out with the Temporal CLI. A run pinned to the old build ends on it
//! after the new build becomes current (its job, on the run's own unversioned queue, still
//! reaches its external worker); new runs go to the new build. The capacity semaphore, which
//! outlives runs, moves to the new build by the documented CLI step.

use std::time::Duration;

use tea_compute::ComputeOwner;
use tea_orchestrator::capacity::capacity_workflow_id;
use tea_starter::{RunEnd, RunHandle};
use temporalio_common::protos::temporal::api::{
    enums::v1::VersioningBehavior,
    history::v1::{HistoryEvent, history_event::Attributes},
};

use crate::{
    capacity::temporal_workflow,
    local,
    support::{
        DevServer, Proc, bin, history,
        run::{self, OBSERVABLE_JOB, pending_job},
        test_dir, unique, wait_for,
    },
};

/// The deployment both builds are versions of.
const DEPLOYMENT: &str = "tea-versioning-test";

/// How long a worker may take to show up in its deployment, and a CLI command to succeed.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// A dev server and a task queue that builds of one deployment share.
struct Deployment {
    dir: std::path::PathBuf,
    server: DevServer,
    task_queue: String,
}

impl Deployment {
    async fn start(test: &str) -> Deployment {
        let dir = test_dir(test);
        let server = DevServer::start(&dir).await;
        let task_queue = unique(&format!("wf-{test}"));
        Deployment {
            dir,
            server,
            task_queue,
        }
    }

    /// A workflow-worker of `build_id` (local provider), with `env` on top; the first build
    /// manages the sweep schedule, later ones leave it alone.
    fn spawn(&self, build_id: &str, env: &[(&str, &str)]) -> Proc {
        let mut worker = local::workflow_worker(
            &self.dir,
            &self.server,
            &self.task_queue,
            &bin("external-worker"),
            &format!("workflow-worker-{build_id}.log"),
        )
        .env("TEMPORAL_DEPLOYMENT_NAME", DEPLOYMENT)
        .env("TEMPORAL_WORKER_BUILD_ID", build_id);
        if build_id != "A" {
            worker = worker.env("SWEEP_INTERVAL", "0");
        }
        for (key, value) in env {
            worker = worker.env(key, *value);
        }
        worker.spawn()
    }

    /// Waits until the deployment knows `build_id` (its workers have polled), then makes it
    /// current, as an operator rolls out.
    async fn make_current(&self, build_id: &str) {
        wait_for(
            &format!("build {build_id} in deployment {DEPLOYMENT}"),
            ROLLOUT_TIMEOUT,
            || async { has_version(&self.server, build_id).then_some(()) },
        )
        .await;
        set_current_version(&self.server, build_id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_run_ends_on_its_build_after_the_next_build_becomes_current() {
    let deployment = Deployment::start("versioning").await;
    let worker_a = deployment.spawn("A", &[]);
    let worker_b = deployment.spawn("B", &[]);
    deployment.make_current("A").await;
    let client = deployment.server.client().await;
    let queue = &deployment.task_queue;
    let first = run::start(&client, queue, "versioning-first", OBSERVABLE_JOB).await;
    wait_for("the first run's job to start", run::RUN_TIMEOUT, || {
        pending_job(&first)
    })
    .await;
    deployment.make_current("B").await;
    // Whatever the first run does from here happened after the switch.
    let switched_at = history::events(&first)
        .await
        .last()
        .map_or(0, |event| event.event_id);
    let second = run::start(&client, queue, "versioning-second", "1s").await;

    assert_completed(&first, &worker_a).await;
    assert_completed(&second, &worker_b).await;

    let first_tasks = workflow_tasks(&history::events(&first).await);
    assert_all_on(&first_tasks, "A", "the first run");
    assert!(
        first_tasks.iter().any(|(id, _, _)| *id > switched_at),
        "the first run completed workflow tasks after build B became current: {first_tasks:?}"
    );
    assert_all_on(
        &workflow_tasks(&history::events(&second).await),
        "B",
        "the second run",
    );
}

/// The capacity semaphore is pinned to the build that started it and outlives runs; the
/// documented rollout step (`temporal workflow update-options ... auto_upgrade`) moves it to
/// the current build, so capped runs still start once the old build's workers are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_semaphore_moves_to_the_current_build_with_update_options() {
    let deployment = Deployment::start("versioning-capacity").await;
    let capped = [("MAX_CONCURRENT_COMPUTE", "1")];
    let mut worker_a = deployment.spawn("A", &capped);
    deployment.make_current("A").await;
    let client = deployment.server.client().await;
    let queue = &deployment.task_queue;
    let first = run::start(&client, queue, "versioning-capacity-first", "1s").await;
    assert_completed(&first, &worker_a).await;

    let worker_b = deployment.spawn("B", &capped);
    deployment.make_current("B").await;
    let owner = ComputeOwner::derive("default", queue);
    let semaphore = capacity_workflow_id(&owner);
    temporal_workflow(
        &deployment.server,
        &[
            "update-options",
            "--workflow-id",
            &semaphore,
            "--versioning-override-behavior",
            "auto_upgrade",
        ],
    );
    worker_a.sigkill();
    worker_a.wait(ROLLOUT_TIMEOUT).await;

    let second = run::start(&client, queue, "versioning-capacity-second", "1s").await;
    assert_completed(&second, &worker_b).await;
    assert_all_on(
        &workflow_tasks(&history::events(&second).await),
        "B",
        "the second run",
    );
}

/// Waits for the run's end and fails unless it completed.
async fn assert_completed(handle: &RunHandle, worker: &Proc) {
    let end = run::finish(handle, worker).await;
    assert!(
        matches!(end, RunEnd::Completed(_)),
        "{} ended {end}; its build's output:\n{}",
        handle.info().workflow_id,
        worker.output()
    );
}

/// Fails unless every workflow task of the run was completed by `build_id` of the deployment,
/// pinned.
fn assert_all_on(tasks: &[(i64, String, VersioningBehavior)], build_id: &str, run: &str) {
    assert!(!tasks.is_empty(), "{run} completed no workflow task");
    for (id, on, behavior) in tasks {
        assert_eq!(on, build_id, "{run}: workflow task {id}: {tasks:?}");
        assert_eq!(
            *behavior,
            VersioningBehavior::Pinned,
            "{run}: workflow task {id}: {tasks:?}"
        );
    }
}

/// Each completed workflow task: its event ID, the build ID of the deployment version that
/// completed it (empty when none of [`DEPLOYMENT`]) and its versioning behaviour.
fn workflow_tasks(events: &[HistoryEvent]) -> Vec<(i64, String, VersioningBehavior)> {
    events
        .iter()
        .filter_map(|event| match &event.attributes {
            Some(Attributes::WorkflowTaskCompletedEventAttributes(done)) => {
                let build_id = done
                    .deployment_version
                    .as_ref()
                    .filter(|v| v.deployment_name == DEPLOYMENT)
                    .map(|v| v.build_id.clone())
                    .unwrap_or_default();
                Some((event.event_id, build_id, done.versioning_behavior()))
            }
            _ => None,
        })
        .collect()
}

/// Whether `temporal worker deployment describe` lists `build_id` as a version of
/// [`DEPLOYMENT`].
fn has_version(server: &DevServer, build_id: &str) -> bool {
    let Some(described) = temporal_worker_deployment(server, &["describe", "--name", DEPLOYMENT])
    else {
        return false;
    };
    let Ok(described) = serde_json::from_str::<serde_json::Value>(&described) else {
        return false;
    };
    described["versionSummaries"]
        .as_array()
        .is_some_and(|versions| versions.iter().any(|v| v["BuildID"] == build_id))
}

/// Makes `build_id` the deployment's current version, as an operator rolls out: retried until
/// the server takes it (a version must have been polled recently).
async fn set_current_version(server: &DevServer, build_id: &str) {
    let args = [
        "set-current-version",
        "--deployment-name",
        DEPLOYMENT,
        "--build-id",
        build_id,
        "--yes",
    ];
    wait_for(
        &format!("build {build_id} to become the current version"),
        ROLLOUT_TIMEOUT,
        || async { temporal_worker_deployment(server, &args) },
    )
    .await;
}

/// `temporal worker deployment <args>` against `server`, JSON output; its stdout, or `None`
/// when it failed.
fn temporal_worker_deployment(server: &DevServer, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("temporal")
        .args(["worker", "deployment"])
        .args(args)
        .args(["--address", &server.address(), "--output", "json"])
        .output()
        .expect("run the temporal CLI");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}
