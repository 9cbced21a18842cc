//! Starting runs, watching them and waiting for their end.

use std::time::Duration;

use tea_contract::{CommandResult, GoDuration, JobOutcome, RunOutcome, WorkflowInput};
use tea_starter::{RunEnd, RunHandle};
use temporalio_client::{
    Client, WorkflowCancelOptions, WorkflowCountOptions, WorkflowFetchHistoryOptions,
    WorkflowHandle,
};
use temporalio_common::{
    HasWorkflowDefinition,
    protos::temporal::api::history::v1::{
        WorkflowExecutionStartedEventAttributes, history_event::Attributes,
    },
};

use tea_harness::{Proc, wait_for};

/// Longest a test run may take end to end.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A job a test is sure to see while it runs, however loaded the machine: with the 5 s
/// heartbeat timeout of [`input`] it must record a heartbeat within 5 s of starting (else its
/// attempt times out), and it runs 10 s longer than that. A test waiting for the running job,
/// or for its first heartbeat, has those 10 s to see it; a shorter job can end first.
pub const OBSERVABLE_JOB: &str = "15s";

/// How long [`OBSERVABLE_JOB`] runs.
pub fn observable_job_duration() -> Duration {
    let job: GoDuration = OBSERVABLE_JOB
        .parse()
        .expect("OBSERVABLE_JOB is a duration");
    job.as_duration()
}

/// Input with short pauses and the given job duration (`4s`, `10m`, ...).
pub fn input(job: &str) -> WorkflowInput {
    WorkflowInput {
        registry: "sje-test-registry".into(),
        repository: "external".into(),
        tag: "latest".into(),
        job_duration: Some(job.parse().expect("job duration")),
        pause: Some(GoDuration::from_millis(200)),
        // Generous for a loaded 2-core CI machine: a spurious heartbeat timeout would make a
        // run provision a second unit of compute and fail the tests that count them.
        heartbeat_timeout: Some(GoDuration::from_secs(5)),
        worker_start_timeout: Some(GoDuration::from_secs(60)),
        max_compute_attempts: None,
        ..Default::default()
    }
}

/// Starts a run under a fresh ID on `task_queue`.
pub async fn start(client: &Client, task_queue: &str, test: &str, job: &str) -> RunHandle {
    let id = crate::unique(test);
    tea_starter::start(client, task_queue, &id, input(job))
        .await
        .expect("start the workflow")
}

/// Waits for the run's end; on a time-out shows the workflow-worker's output.
pub async fn finish(handle: &RunHandle, worker: &Proc) -> RunEnd {
    let end = match tokio::time::timeout(RUN_TIMEOUT, tea_starter::wait(handle)).await {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => panic!("waiting for the run failed: {e:#}"),
        Err(_) => panic!(
            "run did not finish in {RUN_TIMEOUT:?}; workflow-worker output:\n{}",
            worker.output()
        ),
    };
    record_history(handle).await;
    end
}

/// Waits for the run's end, which must be a completion: its outcome (anything else fails the
/// test, showing the workflow-worker's output).
pub async fn completed(handle: &RunHandle, worker: &Proc) -> Box<RunOutcome> {
    match finish(handle, worker).await {
        RunEnd::Completed(outcome) => outcome,
        end => panic!("run ended {end}; worker: {}", worker.output()),
    }
}

/// Waits for the run to complete, panicking on any other end; the result of its command job.
pub async fn completed_command(handle: &RunHandle, worker: &Proc) -> CommandResult {
    let outcome = completed(handle, worker).await;
    match outcome.job {
        Some(JobOutcome::Command(result)) => result,
        job => panic!("a command job's result, got {job:?}"),
    }
}

/// Cancels the run (reason `test`) and waits for its end.
pub async fn cancel_and_finish(handle: &RunHandle, worker: &Proc) -> RunEnd {
    handle
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel");
    finish(handle, worker).await
}

/// Waits until Temporal's visibility, where the sweeper and the operator's commands look for
/// running runs, lists the run as running (`running`) or as closed. It follows the run's state
/// with a lag: a sweep right after a terminate can still take the run for a running one.
pub async fn wait_until_listed(handle: &RunHandle, running: bool) {
    let id = &handle.info().workflow_id;
    let query = format!("WorkflowId = '{id}' AND ExecutionStatus = 'Running'");
    let state = if running { "running" } else { "closed" };
    wait_for(
        &format!("visibility to list {id} as {state}"),
        RUN_TIMEOUT,
        || async {
            let listed = handle
                .client()
                .count_workflows(query.as_str(), WorkflowCountOptions::default())
                .await
                .ok()?;
            ((listed.count() > 0) == running).then_some(())
        },
    )
    .await;
}

/// With `TEA_RECORD_HISTORIES=<dir>`, writes the closed run's history to
/// `<dir>/<test>.json` (the workflow ID without its unique suffix): how the replay tests'
/// histories in `crates/orchestrator/tests/histories/` are made.
async fn record_history(handle: &RunHandle) {
    let id = handle.info().workflow_id.clone();
    let test = id.rsplit_once('-').map_or(id.as_str(), |(test, _)| test);
    record_history_as(handle, test).await;
}

/// With `TEA_RECORD_HISTORIES=<dir>`, writes the history of `handle`'s run (any workflow) to
/// `<dir>/<name>.json`.
pub async fn record_history_as<W: HasWorkflowDefinition>(
    handle: &WorkflowHandle<Client, W>,
    name: &str,
) {
    let Some(dir) = std::env::var_os("TEA_RECORD_HISTORIES") else {
        return;
    };
    let mut json = handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .expect("fetch the run's history");
    json.push(b'\n');
    let path = std::path::Path::new(&dir).join(format!("{name}.json"));
    std::fs::create_dir_all(&dir).expect("create the history directory");
    std::fs::write(&path, json).expect("write the history");
}

/// How `handle`'s run (any workflow) was started: its first event's attributes.
pub async fn start_event<W: HasWorkflowDefinition>(
    handle: &WorkflowHandle<Client, W>,
) -> WorkflowExecutionStartedEventAttributes {
    let events = crate::history::events(handle).await;
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(started)) =
        events.first().and_then(|e| e.attributes.clone())
    else {
        panic!("no start event: {events:?}");
    };
    started
}

pub use tea_starter::status::pending_job;
