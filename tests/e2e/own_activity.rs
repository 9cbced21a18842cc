//! The user's own activity end to end (local provider): each unit is the Python example worker
//! (`examples/python-worker`, with `temporalio` from PyPI, started by `LOCAL_WORKER_COMMAND`,
//! no binary of ours), the run names its activity and typed arguments, and gets its typed
//! result or its failure; a lost unit is replaced, the activity resuming there from the lost
//! unit's last heartbeat when the run asks; the Python caller example runs the workflow as a
//! child. Needs a Python with `temporalio` (`TEA_PYTHON`, else `python3`): without it the
//! tests fail and name the install command.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tea_compute::local;
use tea_contract::{JobOutcome, Resources, Resumed, ResumedFrom, WorkflowInput, json_payload};
use tea_starter::{RunEnd, RunHandle};
use temporalio_client::{
    WorkflowCancelOptions, WorkflowFetchHistoryOptions, WorkflowGetResultOptions,
    WorkflowStartOptions, errors::WorkflowGetResultError,
};
use temporalio_common::{
    UntypedWorkflow,
    data_converters::RawValue,
    protos::temporal::api::{
        common::v1::Payload,
        enums::v1::RetryState,
        failure::v1::{Failure, failure::FailureInfo},
        history::v1::{HistoryEvent, history_event::Attributes},
    },
};

use crate::{
    local::{Fixture, UnitWorker},
    support::{
        Proc, ProcBuilder, bin, pid_alive,
        run::{self, RUN_TIMEOUT, pending_job},
        wait_for,
    },
};

/// What installs the Python SDK these tests need (the version the examples pin).
const PYTHON_HINT: &str = "pip install temporalio==1.35.0";

/// The example's activity.
const ACTIVITY: &str = "summarize_dataset";

/// The Python interpreter that has `temporalio`: `TEA_PYTHON`, else `python3` on `PATH`,
/// resolved to its real path (a unit gets no shims' settings, only `PATH`).
fn python() -> String {
    let candidate = std::env::var("TEA_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let probe = std::process::Command::new(&candidate)
        .args(["-c", "import sys, temporalio; print(sys.executable)"])
        .output();
    match probe {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "{candidate} has no `temporalio` package ({}): install it with `{PYTHON_HINT}` (or \
             set TEA_PYTHON to a Python that has it)",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "no Python ({candidate}: {e}): install Python 3 and `{PYTHON_HINT}`, or set \
             TEA_PYTHON"
        ),
    }
}

/// A file of the examples.
fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path)
}

/// A dev server and a workflow-worker whose units are the Python example worker (the local
/// provider's fixture), with more settings in `env`.
async fn start(test: &str, env: &[(&str, &str)]) -> Fixture {
    let worker_py = example("python-worker/worker.py").display().to_string();
    let command = serde_json::to_string(&[python(), "-u".to_owned(), worker_py])
        .expect("the command as JSON");
    Fixture::start_with(test, UnitWorker::Command(&command), env).await
}

/// The run's input: the example's activity (or `activity`) with `args`, and where to resume
/// as its last argument (the example takes it).
fn input(activity: &str, args: Vec<Value>) -> WorkflowInput {
    WorkflowInput {
        job_duration: None,
        activity: Some(activity.to_owned()),
        activity_args: Some(args),
        activity_resume: Some(true),
        ..run::input("1s")
    }
}

/// The example's two arguments: a dataset of `rows` rows, read `batch` at a time, `pause`
/// seconds per batch.
fn summarize(rows: i64, batch: u32, pause: f64) -> Vec<Value> {
    vec![
        json!({"name": "orders", "rows": rows}),
        json!({"batch_size": batch, "seconds_per_batch": pause}),
    ]
}

async fn start_run(fx: &Fixture, test: &str, input: WorkflowInput) -> RunHandle {
    let id = format!("{test}-{}", uuid::Uuid::new_v4().simple());
    tea_starter::start(&fx.server.client().await, &fx.task_queue, &id, input)
        .await
        .expect("start the run")
}

async fn history(handle: &RunHandle) -> Vec<HistoryEvent> {
    handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .expect("the run's history")
}

/// The run's failure, as its closing event records it.
async fn run_failure(handle: &RunHandle) -> Failure {
    history(handle)
        .await
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::WorkflowExecutionFailedEventAttributes(failed)) => failed.failure,
            _ => None,
        })
        .expect("a failed run")
}

/// How many units of compute the run's provider has had (it keeps each one's log).
fn units_ever(fx: &Fixture) -> usize {
    fx.kept_logs().len() + fx.compute_dirs().len()
}

/// `starter status <id>`'s output.
async fn starter_status(fx: &Fixture, id: &str) -> String {
    let log = fx
        .dir
        .join(format!("status-{}.log", uuid::Uuid::new_v4().simple()));
    let mut status = ProcBuilder::new(bin("starter"), log)
        .env("TEMPORAL_ADDRESS", fx.server.address())
        .arg("status")
        .arg(id)
        .spawn();
    let exit = status.wait(RUN_TIMEOUT).await;
    assert!(exit.success(), "{}", status.output());
    status.output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_activity_gets_its_typed_arguments_and_its_typed_result_is_the_run_s() {
    let fx = start("happy-own-activity", &[]).await;
    let mut asked = input(ACTIVITY, summarize(1000, 50, 0.4));
    asked.resources = Some(Resources {
        cpu: Some(tea_contract::Cpus::from_millis(500)),
        memory: Some(256 << 20),
        ..Default::default()
    });
    let handle = start_run(&fx, "happy-own-activity", asked).await;
    let id = handle.info().workflow_id.clone();

    // Its heartbeats, as `starter status` shows them.
    wait_for("a heartbeat of the activity", RUN_TIMEOUT, || async {
        let job = pending_job(&handle).await?;
        job.heartbeat_details.filter(|d| !d.payloads.is_empty())
    })
    .await;
    let status = starter_status(&fx, &id).await;
    assert!(
        status.contains(&format!("activity {ACTIVITY}"))
            && status.contains("heartbeat {\"batch\":"),
        "{status}"
    );

    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Completed(outcome) = &end else {
        panic!("run ended {end}; worker: {}", fx.worker.output());
    };
    let Some(JobOutcome::Activity(job)) = &outcome.job else {
        panic!("an activity's result: {outcome:?}");
    };
    assert_eq!(job.activity, ACTIVITY);
    let result = job.result.as_ref().expect("the activity's result");
    assert_eq!(result["dataset"], "orders");
    assert_eq!(result["rows"], 1000);
    assert_eq!(result["batches"], 20);
    assert_eq!(
        result["checksum"].as_str().map(str::len),
        Some(16),
        "{result}"
    );
    // Its size, as the provider took it.
    let [usage] = outcome.usage.as_slice() else {
        panic!("one unit: {:?}", outcome.usage);
    };
    assert_eq!(usage.size.as_deref(), Some("0.5 CPU, 256 MiB"));
    fx.assert_no_compute_left();

    // Both arguments went as JSON payloads of their own.
    let inputs = scheduled_inputs(&handle).await;
    let [scheduled] = inputs.as_slice() else {
        panic!("the activity scheduled once: {inputs:?}");
    };
    assert_eq!(scheduled.len(), 3, "two arguments and where to resume");
    assert_eq!(scheduled[1].metadata["encoding"], b"json/plain");
    assert_eq!(scheduled[2], json_payload(&Value::Null));

    // A finished run's status says what ran, for how long, and what it returned.
    let status = starter_status(&fx, &id).await;
    assert!(
        status.contains(&format!("job: activity {ACTIVITY} ran ")) && status.contains("completed"),
        "{status}"
    );
    assert!(status.contains("result: {\"batches\":20"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_activity_s_non_retryable_failure_is_the_run_s_with_one_unit() {
    let fx = start("failed-own-activity-non-retryable", &[]).await;
    let handle = start_run(
        &fx,
        "failed-own-activity-non-retryable",
        input(ACTIVITY, summarize(-5, 10, 0.0)),
    )
    .await;
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Failed(message) = &end else {
        panic!("run ended {end}");
    };
    assert!(
        message.contains("dataset orders has a negative row count"),
        "{message}"
    );
    let failure = run_failure(&handle).await;
    assert_eq!(failure.message, "dataset orders has a negative row count");
    let Some(FailureInfo::ApplicationFailureInfo(info)) = &failure.failure_info else {
        panic!("an application failure: {failure:?}");
    };
    assert_eq!(info.r#type, "InvalidDataset");
    assert!(info.non_retryable);
    let details = info.details.as_ref().expect("the failure's details");
    let detail: Value = serde_json::from_slice(&details.payloads[0].data).expect("JSON");
    assert_eq!(detail, json!({"rows": -5}));
    let status = handle
        .query(
            tea_contract::StatusQuery,
            (),
            temporalio_client::WorkflowQueryOptions::default(),
        )
        .await
        .expect("status");
    let job_failure = status.job_failure.expect("the job's failure in the status");
    assert_eq!(job_failure.failure_type, "InvalidDataset");
    let shown = starter_status(&fx, &handle.info().workflow_id).await;
    assert!(
        shown.contains(&format!("job: activity {ACTIVITY} ran "))
            && shown.contains("failed (InvalidDataset, non-retryable)"),
        "{shown}"
    );
    assert_eq!(units_ever(&fx), 1, "one unit of compute, ever");
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_the_named_activity_fails_the_run_at_once() {
    let fx = start("failed-own-activity-not-registered", &[]).await;
    let started = Instant::now();
    let handle = start_run(
        &fx,
        "failed-own-activity-not-registered",
        input("no_such_activity", vec![json!(1)]),
    )
    .await;
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Failed(message) = &end else {
        panic!("run ended {end}");
    };
    assert!(
        message.contains("no_such_activity") && message.contains("is not registered"),
        "{message}"
    );
    // Within its first attempt: far from the schedule-to-start and start-to-close timeouts.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let failure = run_failure(&handle).await;
    let Some(FailureInfo::ApplicationFailureInfo(info)) = &failure.failure_info else {
        panic!("an application failure: {failure:?}");
    };
    assert_eq!(info.r#type, "NotFoundError");
    assert_eq!(units_ever(&fx), 1, "one unit of compute, ever");
    fx.assert_no_compute_left();
}

/// The inputs the run scheduled its activity with, one per attempt, in order.
async fn scheduled_inputs(handle: &RunHandle) -> Vec<Vec<Payload>> {
    history(handle)
        .await
        .into_iter()
        .filter_map(|e| match e.attributes {
            Some(Attributes::ActivityTaskScheduledEventAttributes(a))
                if a.activity_type.as_ref().is_some_and(|t| t.name == ACTIVITY) =>
            {
                Some(a.input.map(|i| i.payloads).unwrap_or_default())
            }
            _ => None,
        })
        .collect()
}

/// The batch the server last recorded in the running activity's heartbeat.
async fn recorded_batch(handle: &RunHandle) -> Option<u64> {
    let details = pending_job(handle).await?.heartbeat_details?;
    let detail: Value = serde_json::from_slice(&details.payloads.first()?.data).ok()?;
    detail["batch"].as_u64()
}

/// Batches of the example's activity in the resuming tests (a quarter second each), and the
/// batch the server must have recorded before the unit is lost.
const BATCHES: u64 = 120;
const LOST_AT: u64 = 40;

/// Starts a run of the example's activity over [`BATCHES`] (`attempts` on each unit) and, once
/// the server has recorded a heartbeat at batch [`LOST_AT`] or later, sends `signal` to the
/// unit's worker: the run's handle, the batch seen recorded, and the worker's PID.
async fn lose_the_unit(
    fx: &Fixture,
    test: &str,
    attempts: u32,
    signal: nix::sys::signal::Signal,
) -> (RunHandle, u64, nix::unistd::Pid) {
    let rows = i64::try_from(BATCHES * 10).expect("rows");
    let asked = WorkflowInput {
        activity_max_attempts: Some(attempts),
        ..input(ACTIVITY, summarize(rows, 10, 0.25))
    };
    let handle = start_run(fx, test, asked).await;
    let seen = wait_for(
        &format!("a heartbeat at batch {LOST_AT}"),
        RUN_TIMEOUT,
        || async {
            recorded_batch(&handle)
                .await
                .filter(|batch| *batch >= LOST_AT)
        },
    )
    .await;
    let dirs = fx.compute_dirs();
    let [dir] = dirs.as_slice() else {
        panic!("one unit: {dirs:?}");
    };
    let pid = local::recorded_pid(dir).expect("the unit's pid");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
    nix::sys::signal::kill(pid, signal).expect("signal the unit's worker");
    (handle, seen, pid)
}

/// The run completed on its second unit: the result of the example's activity there.
async fn completed_on_a_second_unit(fx: &Fixture, handle: &RunHandle) -> Value {
    let end = run::finish(handle, &fx.worker).await;
    let RunEnd::Completed(outcome) = &end else {
        panic!("run ended {end}; worker: {}", fx.worker.output());
    };
    assert_eq!(outcome.attempts, 2);
    assert_eq!(outcome.usage.len(), 2, "{:?}", outcome.usage);
    fx.assert_no_compute_left();
    outcome
        .job
        .as_ref()
        .and_then(|j| j.result())
        .cloned()
        .expect("the activity's result")
}

/// The second unit's activity got, as its last argument, the first one's last heartbeat
/// detail, exactly as the Python SDK encoded it (the first got `null`), and the run's status
/// says so. Returns the batch it says.
async fn assert_handed_the_last_heartbeat(handle: &RunHandle) -> u64 {
    let inputs = scheduled_inputs(handle).await;
    let [first, second] = inputs.as_slice() else {
        panic!("two attempts' inputs: {inputs:?}");
    };
    assert_eq!(first.len(), 3, "two arguments and where to resume");
    assert_eq!(first[2], json_payload(&Value::Null));
    assert_eq!(second.len(), 3);
    assert_eq!(second[..2], first[..2], "the same arguments");
    let handed: Value = serde_json::from_slice(&second[2].data).expect("JSON");
    let status = tea_starter::status::report(handle.client(), &handle.info().workflow_id)
        .await
        .expect("the run's report")
        .status
        .expect("the run's status");
    assert_eq!(
        status.resumes,
        [Resumed {
            attempt: 2,
            from_attempt: 1,
            from: ResumedFrom::HeartbeatDetails {
                bytes: second[2].data.len() as u64,
            },
        }]
    );
    handed["batch"].as_u64().expect("a batch")
}

/// The second unit's activity (`result`) started at the `handed` batch: never before what the
/// server had recorded when the test looked (`seen`), never the whole job.
fn assert_started_at(result: &Value, handed: u64, seen: u64) {
    assert!(
        (seen..BATCHES).contains(&handed),
        "handed batch {handed}, seen {seen}"
    );
    assert_eq!(result["started_at_batch"], handed, "{result}");
    assert_eq!(result["batches"], BATCHES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_activity_killed_with_its_unit_resumes_from_its_last_heartbeat_on_a_fresh_unit() {
    let test = "reprovision-resumed-own-activity";
    let fx = start(test, &[]).await;
    let (handle, seen, pid) = lose_the_unit(&fx, test, 1, nix::sys::signal::Signal::SIGKILL).await;

    let result = completed_on_a_second_unit(&fx, &handle).await;
    // What the server had recorded when the unit died.
    let handed = assert_handed_the_last_heartbeat(&handle).await;
    assert_started_at(&result, handed, seen);
    assert!(!pid_alive(u32::try_from(pid.as_raw()).unwrap_or(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_activity_stopped_by_its_worker_s_shutdown_resumes_from_the_progress_it_gave() {
    let test = "reprovision-resumed-own-activity-after-shutdown";
    let fx = start(test, &[]).await;
    // A drained node, a redeployed app: the unit's worker is told to stop. The activity may
    // be retried on its unit, but not after its worker stopped: no retry waits there for a
    // worker that is gone.
    let (handle, seen, _) = lose_the_unit(&fx, test, 3, nix::sys::signal::Signal::SIGTERM).await;

    let result = completed_on_a_second_unit(&fx, &handle).await;
    // The activity failed as `WorkerShutdown` with the batch it had reached, not retried on
    // its unit: the run went on from there.
    let failed = history(&handle)
        .await
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(Attributes::ActivityTaskFailedEventAttributes(failed)) => Some(failed),
            _ => None,
        })
        .expect("the first unit's activity failed");
    assert_eq!(failed.retry_state(), RetryState::NonRetryableFailure);
    let stopped = failed
        .failure
        .and_then(|failure| match failure.failure_info {
            Some(FailureInfo::ApplicationFailureInfo(info)) => Some(info),
            _ => None,
        })
        .expect("the first attempt's application failure");
    assert_eq!(stopped.r#type, "WorkerShutdown");
    let given: Value = serde_json::from_slice(
        &stopped
            .details
            .and_then(|d| d.payloads.into_iter().next())
            .expect("the failure's details")
            .data,
    )
    .expect("JSON");
    let handed = assert_handed_the_last_heartbeat(&handle).await;
    assert_eq!(given["batch"], handed);
    assert_started_at(&result, handed, seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_the_provider_or_the_operator_cannot_grant_fail_the_run_before_any_compute() {
    let fx = start("failed-resources-refused", &[("MAX_RUN_MEMORY", "512MiB")]).await;
    let cases = [
        (
            Resources {
                gpu: Some(1),
                ..Default::default()
            },
            "workflow input field `resources.gpu` (1 GPU): the local provider cannot honour it",
        ),
        (
            Resources {
                memory: Some(1 << 30),
                ..Default::default()
            },
            "workflow input field `resources.memory` (1 GiB) is more than this deployment \
             allows a run (MAX_RUN_MEMORY=512 MiB)",
        ),
    ];
    for (resources, expected) in cases {
        let mut asked = input(ACTIVITY, summarize(10, 10, 0.0));
        asked.resources = Some(resources);
        let handle = start_run(&fx, "failed-resources-refused", asked).await;
        let end = run::finish(&handle, &fx.worker).await;
        let RunEnd::Failed(message) = &end else {
            panic!("run ended {end}");
        };
        // Only what is wrong with the request: the field, and who refuses it.
        assert!(message.starts_with(expected), "{message}");
        let events = history(&handle).await;
        let scheduled = events.iter().any(|e| {
            matches!(
                e.attributes,
                Some(Attributes::ActivityTaskScheduledEventAttributes(_))
            )
        });
        assert!(!scheduled, "no activity (no Create) was scheduled");
    }
    assert_eq!(units_ever(&fx), 0, "no unit of compute, ever");
}

/// The Python caller example's workflow, `OffloadSummary`, hosted by `caller.py worker` on a
/// queue of its own.
struct Caller {
    process: Proc,
    queue: String,
}

fn start_caller(fx: &Fixture) -> Caller {
    let queue = format!("caller-{}", uuid::Uuid::new_v4().simple());
    let process = ProcBuilder::new(python(), fx.dir.join("caller.log"))
        .arg("-u")
        .arg(example("python-caller/caller.py").display().to_string())
        .arg("worker")
        .env("TEMPORAL_ADDRESS", fx.server.address())
        .env("CALLER_TASK_QUEUE", &queue)
        .spawn();
    Caller { process, queue }
}

/// The caller's request: the example's dataset, on this fixture's workflow-worker.
fn offload_request(fx: &Fixture, rows: i64, pause: f64) -> RawValue {
    RawValue::new(vec![json_payload(&json!({
        "dataset": "orders",
        "rows": rows,
        "batch_size": 10,
        "seconds_per_batch": pause,
        "workflow_task_queue": fx.task_queue,
        "resources": {"cpu": 0.5, "memory": "128MiB"},
    }))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_workflow_runs_the_workflow_as_a_child_and_gets_the_activity_s_result() {
    let fx = start("python-caller", &[]).await;
    let caller = start_caller(&fx);
    let client = fx.server.client().await;
    let id = format!("python-caller-{}", uuid::Uuid::new_v4().simple());
    let parent = client
        .start_workflow(
            UntypedWorkflow::new("OffloadSummary"),
            offload_request(&fx, 50, 0.0),
            WorkflowStartOptions::new(caller.queue.clone(), id.clone()).build(),
        )
        .await
        .expect("start the caller's workflow");
    let summary = tokio::time::timeout(
        RUN_TIMEOUT,
        parent.get_result(WorkflowGetResultOptions::default()),
    )
    .await
    .unwrap_or_else(|_| panic!("no result in time; caller: {}", caller.process.output()))
    .expect("the caller's result");
    let summary: Value = serde_json::from_slice(&summary.payloads[0].data).expect("JSON");
    assert_eq!(summary["dataset"], "orders");
    assert_eq!(summary["batches"], 5);
    let child = tea_starter::handle(&client, &format!("{id}-offload"));
    run::record_history_as(&child, "happy-child-of-python").await;
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_python_parent_cancels_the_child_and_deletes_its_compute() {
    let fx = start("python-caller-cancel", &[]).await;
    let caller = start_caller(&fx);
    let client = fx.server.client().await;
    let id = format!("python-caller-cancel-{}", uuid::Uuid::new_v4().simple());
    let parent = client
        .start_workflow(
            UntypedWorkflow::new("OffloadSummary"),
            offload_request(&fx, 10_000, 1.0),
            WorkflowStartOptions::new(caller.queue.clone(), id.clone()).build(),
        )
        .await
        .expect("start the caller's workflow");
    let child = tea_starter::handle(&client, &format!("{id}-offload"));
    wait_for("the child's activity to run", RUN_TIMEOUT, || {
        pending_job(&child)
    })
    .await;
    assert_eq!(fx.compute_dirs().len(), 1, "the child's unit runs");

    parent
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel the parent");
    let parent_end = tokio::time::timeout(
        RUN_TIMEOUT,
        parent.get_result(WorkflowGetResultOptions::default()),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the parent did not end; caller: {}",
            caller.process.output()
        )
    });
    assert!(
        matches!(parent_end, Err(WorkflowGetResultError::Cancelled { .. })),
        "{parent_end:?}"
    );
    let child_end = tea_starter::wait(&child).await.expect("the child's end");
    assert!(matches!(child_end, RunEnd::Cancelled), "{child_end}");
    run::record_history_as(&child, "cancel-child-of-python-parent").await;
    fx.assert_no_compute_left();
    assert_eq!(units_ever(&fx), 1);
}
