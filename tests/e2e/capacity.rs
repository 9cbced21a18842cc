//! `MAX_CONCURRENT_COMPUTE` end to end through the local provider: runs wait for a slot of
//! their owner's `ComputeCapacity` semaphore, never more units exist than the cap (sampled
//! from the provider's state directory), and the count survives a workflow-worker SIGKILL,
//! cancellation of a waiting run, termination of a holder, malformed signals from any client,
//! a reset of a waiting run and termination of the semaphore itself.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use tea_compute::{ComputeOwner, local};
use tea_contract::{Phase, StatusQuery};
use tea_orchestrator::capacity::{CapacityState, ComputeCapacity, capacity_workflow_id};
use tea_starter::{RunEnd, RunHandle};
use temporalio_client::{
    Client, WorkflowCancelOptions, WorkflowDescribeOptions, WorkflowHandle, WorkflowListOptions,
    WorkflowQueryOptions, WorkflowTerminateOptions,
};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;

use crate::{
    digitalocean,
    local::{Fixture, workflow_worker},
    metrics::{ANY_METRICS_ADDR, counter, served_at},
    support::{
        DevServer, bin, history,
        run::{self, RUN_TIMEOUT, pending_job, record_history_as},
        test_dir, unique, wait_for,
    },
};

/// Counts the provider's units (with `count`) every 20 ms and remembers the most seen at once.
struct Sampler {
    max: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(count: impl Fn() -> usize + Send + 'static) -> Sampler {
        let max = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (max, stop) = (Arc::clone(&max), Arc::clone(&stop));
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let units = count();
                    max.fetch_max(units, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Sampler { max, stop, task }
    }

    /// Stops sampling; the most units seen at once.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the sampler");
        self.max.load(Ordering::Relaxed)
    }
}

/// Samples the local provider's units of `fx`.
fn local_units(fx: &Fixture) -> Sampler {
    let state_dir: PathBuf = fx.dir.join("compute");
    Sampler::start(move || local::compute_dirs(&state_dir).len())
}

/// Starts `count` runs of `job` at once.
async fn start_runs(fx: &Fixture, test: &str, count: usize, job: &str) -> Vec<RunHandle> {
    let client = fx.server.client().await;
    let starts = (0..count).map(|_| run::start(&client, &fx.task_queue, test, job));
    futures::future::join_all(starts).await
}

/// Waits for every run's end (all within `timeout`); how many completed.
async fn completed(fx: &Fixture, handles: &[RunHandle], timeout: Duration) -> usize {
    let waits = handles.iter().map(tea_starter::wait);
    let ends = match tokio::time::timeout(timeout, futures::future::join_all(waits)).await {
        Ok(ends) => ends,
        Err(_) => panic!(
            "runs did not finish in {timeout:?}; workflow-worker output:\n{}",
            fx.worker.output()
        ),
    };
    ends.into_iter()
        .filter(|end| matches!(end, Ok(RunEnd::Completed(_))))
        .count()
}

/// Waits until `run` (named `which` in a failure) is in phase `waiting_for_capacity`.
async fn waits_for_capacity(run: &RunHandle, which: &str) {
    let what = format!("{which} to wait for capacity");
    wait_for(&what, RUN_TIMEOUT, || async {
        (phase(run).await == Some(Phase::WaitingForCapacity)).then_some(())
    })
    .await;
}

/// The run ID of the semaphore's current run.
async fn current_run(
    semaphore: &WorkflowHandle<temporalio_client::Client, ComputeCapacity>,
) -> Option<String> {
    let description = semaphore
        .describe(WorkflowDescribeOptions::default())
        .await
        .ok()?;
    Some(
        description
            .raw_description
            .workflow_execution_info?
            .execution?
            .run_id,
    )
}

/// A workflow-worker capping compute at one unit, checking (and re-asserting) every second,
/// with `env` besides, and a run (`holder`) holding that unit with a 10-minute job.
async fn one_slot_held(test: &str, holder: &str, env: &[(&str, &str)]) -> (Fixture, RunHandle) {
    let mut all = vec![
        ("MAX_CONCURRENT_COMPUTE", "1"),
        ("CAPACITY_CHECK_INTERVAL", "1s"),
    ];
    all.extend_from_slice(env);
    let fx = Fixture::start_with_env(test, &all).await;
    let (holder, _) = fx.start_job(holder, "10m").await;
    (fx, holder)
}

/// The handle of `fx`'s semaphore (its latest run).
fn semaphore(fx: &Fixture, client: &Client) -> WorkflowHandle<Client, ComputeCapacity> {
    client.get_workflow_handle::<ComputeCapacity>(capacity_workflow_id(&ComputeOwner::derive(
        "default",
        &fx.task_queue,
    )))
}

/// The semaphore's state, from its `state` query.
async fn semaphore_state(
    semaphore: &WorkflowHandle<Client, ComputeCapacity>,
) -> Option<CapacityState> {
    semaphore
        .query(ComputeCapacity::state, (), WorkflowQueryOptions::default())
        .await
        .ok()
}

/// Runs `temporal workflow <args>` against `server`, as any client or operator can; fails the
/// test when the CLI fails.
pub(crate) fn temporal_workflow(server: &DevServer, args: &[&str]) {
    let output = std::process::Command::new("temporal")
        .arg("workflow")
        .args(args)
        .args(["--address", &server.address()])
        .output()
        .expect("run the temporal CLI");
    assert!(
        output.status.success(),
        "temporal workflow {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Sends `signal` with the raw JSON `input` to the latest run of `workflow_id`.
fn cli_signal(server: &DevServer, workflow_id: &str, signal: &str, input: &str) {
    let args = [
        "signal",
        "--workflow-id",
        workflow_id,
        "--name",
        signal,
        "--input",
        input,
    ];
    temporal_workflow(server, &args);
}

/// Whether the history of `handle`'s run (any workflow) has a failed workflow task.
async fn has_failed_workflow_task<W: temporalio_common::HasWorkflowDefinition>(
    handle: &WorkflowHandle<Client, W>,
) -> bool {
    history::events(handle).await.iter().any(|e| {
        matches!(
            e.attributes,
            Some(Attributes::WorkflowTaskFailedEventAttributes(_))
        )
    })
}

/// The handle of one run of `workflow` (`handle`'s workflow ID).
fn run_of<W: temporalio_common::HasWorkflowDefinition>(
    client: &Client,
    handle: &WorkflowHandle<Client, W>,
    run_id: &str,
) -> WorkflowHandle<Client, W> {
    let mut info = handle.info().clone();
    info.run_id = Some(run_id.to_owned());
    info.first_execution_run_id = None;
    WorkflowHandle::new(client.clone(), info)
}

/// Cancels the semaphore (it continues as new with its state) and, with
/// `TEA_RECORD_HISTORIES`, records the closed run's history as `name`.
async fn record_semaphore(
    client: &Client,
    semaphore: &WorkflowHandle<Client, ComputeCapacity>,
    name: &str,
) {
    let Some(closed) = current_run(semaphore).await else {
        return;
    };
    semaphore
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel the semaphore");
    wait_for("the semaphore to continue as new", RUN_TIMEOUT, || async {
        current_run(semaphore)
            .await
            .filter(|run| *run != closed)
            .map(|_| ())
    })
    .await;
    record_history_as(&run_of(client, semaphore, &closed), name).await;
}

async fn phase(handle: &RunHandle) -> Option<Phase> {
    handle
        .query(StatusQuery, (), WorkflowQueryOptions::default())
        .await
        .ok()
        .map(|status| status.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_runs_at_once_never_exceed_a_cap_of_five_and_all_complete() {
    const RUNS: usize = 200;
    const CAP: usize = 5;
    let fx = Fixture::start_with_env("cap-200", &[("MAX_CONCURRENT_COMPUTE", "5")]).await;
    let sampler = local_units(&fx);
    let started = Instant::now();
    let handles = start_runs(&fx, "cap-200", RUNS, "200ms").await;
    let done = completed(&fx, &handles, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    let max = sampler.finish().await;
    eprintln!("{RUNS} runs under a cap of {CAP}: {elapsed:?}, at most {max} units at once");
    assert_eq!(done, RUNS, "every run completes");
    assert!(max <= CAP, "{max} units existed at once, cap {CAP}");
    assert!(max > 0, "the sampler saw compute");
    fx.assert_no_compute_left();
    assert_eq!(fx.kept_logs().len(), RUNS, "one unit per run");
    // The semaphore's state went through continue-as-new (its history grows with every run).
    let owner = ComputeOwner::derive("default", &fx.task_queue);
    let id = capacity_workflow_id(&owner);
    let client = fx.server.client().await;
    let runs = client
        .list_workflows(
            format!("WorkflowId = '{id}'"),
            WorkflowListOptions::default(),
        )
        .count()
        .await;
    assert!(
        runs > 1,
        "{id} has {runs} run(s): it never continued as new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_survives_a_workflow_worker_sigkill_and_restart() {
    const RUNS: usize = 20;
    const CAP: usize = 2;
    let env = [("MAX_CONCURRENT_COMPUTE", "2")];
    let mut fx = Fixture::start_with_env("cap-sigkill", &env).await;
    let sampler = local_units(&fx);
    let handles = start_runs(&fx, "cap-sigkill", RUNS, "1s").await;
    wait_for("a few runs to finish", RUN_TIMEOUT, || async {
        (fx.kept_logs().len() >= 4).then_some(())
    })
    .await;

    fx.worker.sigkill();
    let status = fx.worker.wait(Duration::from_secs(10)).await;
    assert!(!status.success());
    fx.worker = workflow_worker(
        &fx.dir,
        &fx.server,
        &fx.task_queue,
        &bin("external-worker"),
        "workflow-worker-restarted.log",
    )
    .env("MAX_CONCURRENT_COMPUTE", "2")
    .spawn();

    let done = completed(&fx, &handles, Duration::from_secs(300)).await;
    let max = sampler.finish().await;
    assert_eq!(done, RUNS, "every run completes");
    assert!(max <= CAP, "{max} units existed at once, cap {CAP}");
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_cancelled_ends_without_compute_and_the_queue_moves_on() {
    let (fx, holder) = one_slot_held("cap-cancel", "cap-holder", &[]).await;
    let client = fx.server.client().await;
    let waiting = run::start(&client, &fx.task_queue, "capacity-cancel-waiting", "1s").await;
    waits_for_capacity(&waiting, "the second run").await;
    let next = run::start(&client, &fx.task_queue, "capacity-waited", "1s").await;
    waits_for_capacity(&next, "the third run").await;

    // Cancelling the semaphore only makes it continue as new: holder and queue stay.
    let semaphore = semaphore(&fx, &client);
    let first_run = current_run(&semaphore).await;
    assert!(first_run.is_some(), "the semaphore runs");
    semaphore
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel the semaphore");
    let state = wait_for("the semaphore to carry on", RUN_TIMEOUT, || async {
        let run = current_run(&semaphore).await?;
        if Some(run) == first_run {
            return None;
        }
        semaphore
            .query(ComputeCapacity::state, (), WorkflowQueryOptions::default())
            .await
            .ok()
    })
    .await;
    assert_eq!(
        (state.holders.len(), state.queue.len()),
        (1, 2),
        "{state:?}"
    );
    if let Some(first_run) = &first_run {
        record_history_as(&run_of(&client, &semaphore, first_run), "semaphore-started").await;
    }

    let end = run::cancel_and_finish(&waiting, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "waiting run ended {end}");
    let status = waiting
        .query(StatusQuery, (), WorkflowQueryOptions::default())
        .await
        .expect("status of the cancelled run");
    assert_eq!(
        status.compute_name, None,
        "no compute for a run that waited"
    );
    assert_eq!(fx.compute_dirs().len(), 1, "only the holder's unit");
    assert_eq!(phase(&next).await, Some(Phase::WaitingForCapacity));

    // The holder ends: the slot goes to the next in line.
    holder
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel the holder");
    let end = run::finish(&next, &fx.worker).await;
    assert!(matches!(end, RunEnd::Completed(_)), "next run ended {end}");
    let status = next
        .query(StatusQuery, (), WorkflowQueryOptions::default())
        .await
        .expect("status");
    assert!(
        status
            .phase_history
            .iter()
            .any(|entry| entry.phase == Phase::WaitingForCapacity),
        "{status:?}"
    );
    let end = run::finish(&holder, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "holder ended {end}");
    fx.assert_no_compute_left();
    assert_eq!(
        fx.kept_logs().len(),
        2,
        "the holder's unit and the next run's"
    );
    record_semaphore(&client, &semaphore, "semaphore-cancel-waiting").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_holder_does_not_leak_its_slot() {
    let (fx, holder) = one_slot_held("cap-terminate", "cap-terminated", &[]).await;
    let client = fx.server.client().await;
    let next = run::start(&client, &fx.task_queue, "cap-after-terminate", "1s").await;
    waits_for_capacity(&next, "the second run").await;

    // Terminate runs no workflow code: no release; the liveness check must free the slot.
    holder
        .terminate(WorkflowTerminateOptions::builder().reason("test").build())
        .await
        .expect("terminate");
    let end = run::finish(&next, &fx.worker).await;
    assert!(matches!(end, RunEnd::Completed(_)), "next run ended {end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digitalocean_runs_at_once_never_exceed_the_cap_and_all_complete() {
    const RUNS: usize = 30;
    const CAP: usize = 3;
    let dir = test_dir("cap-do");
    let server = DevServer::start(&dir).await;
    let fake = Arc::new(digitalocean::start_fake(&dir).await);
    let task_queue = unique("wf-cap-do");
    let worker = digitalocean::workflow_worker(
        &dir,
        &server,
        &fake,
        digitalocean::DO_TOKEN,
        &task_queue,
        "workflow-worker.log",
    )
    .env("MAX_CONCURRENT_COMPUTE", "3")
    .spawn();
    let sampler = Sampler::start({
        let fake = Arc::clone(&fake);
        move || fake.snapshot().apps.len()
    });
    let client = server.client().await;
    let starts = (0..RUNS).map(|_| run::start(&client, &task_queue, "cap-do", "200ms"));
    let handles = futures::future::join_all(starts).await;
    let waits = handles.iter().map(tea_starter::wait);
    let Ok(ends) =
        tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(waits)).await
    else {
        panic!(
            "runs did not finish; workflow-worker output:\n{}",
            worker.output()
        );
    };
    let max = sampler.finish().await;
    let done = ends
        .iter()
        .filter(|end| matches!(end, Ok(RunEnd::Completed(_))))
        .count();
    assert_eq!(done, RUNS, "every run completes: {ends:?}");
    assert!(max <= CAP, "{max} apps existed at once, cap {CAP}");
    let snapshot = fake.snapshot();
    assert!(snapshot.apps.is_empty(), "apps left: {:?}", snapshot.apps);
    assert_eq!(snapshot.deleted_app_ids.len(), RUNS, "one app per run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_capacity_signals_are_refused_and_the_semaphore_keeps_serving() {
    let env = [("METRICS_ADDR", ANY_METRICS_ADDR)];
    let (fx, holder) = one_slot_held("cap-malformed", "cap-malformed-holder", &env).await;
    let metrics = served_at(&fx.worker).await;
    let client = fx.server.client().await;
    let semaphore = semaphore(&fx, &client);
    let id = semaphore.info().workflow_id.clone();

    // Any client can send these; a newer sender may add fields.
    cli_signal(&fx.server, &id, "acquire", "{}");
    cli_signal(&fx.server, &id, "release", r#""x""#);
    cli_signal(
        &fx.server,
        &id,
        "acquire",
        r#"{"run":{"workflow_id":"w","run_id":"r"},"cap":0}"#,
    );
    cli_signal(
        &fx.server,
        &id,
        "release",
        r#"{"workflow_id":"w","run_id":"r","why":"done"}"#,
    );
    // The run's own signal takes no argument; one sent anyway is ignored.
    cli_signal(
        &fx.server,
        &holder.info().workflow_id,
        "capacity-granted",
        r#"{"unexpected":true}"#,
    );
    for (signal, refused) in [("acquire", 2.0), ("release", 1.0)] {
        let what = format!("{refused} refused {signal} signal(s) counted");
        wait_for(&what, RUN_TIMEOUT, || async {
            let labels = [("signal", signal)];
            let value = counter(&metrics, "tea_capacity_signals_refused_total", &labels).await;
            (value == refused).then_some(())
        })
        .await;
    }
    let output = fx.worker.output();
    assert!(
        output.contains("refused a malformed capacity signal")
            && output.contains("`cap` must be > 0"),
        "workflow-worker output:\n{output}"
    );

    // Still serving: two capped runs started after them wait, then complete one after the other.
    let first = run::start(&client, &fx.task_queue, "cap-after-malformed", "1s").await;
    let second = run::start(&client, &fx.task_queue, "cap-after-malformed", "1s").await;
    waits_for_capacity(&first, "the first run after them").await;
    waits_for_capacity(&second, "the second run after them").await;
    holder
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel the holder");
    for handle in [&first, &second] {
        let end = run::finish(handle, &fx.worker).await;
        assert!(matches!(end, RunEnd::Completed(_)), "run ended {end}");
    }
    let end = run::finish(&holder, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "holder ended {end}");
    assert!(
        !has_failed_workflow_task(&holder).await,
        "the holder's workflow task failed"
    );
    assert!(
        !has_failed_workflow_task(&semaphore).await,
        "the semaphore's workflow task failed"
    );
    fx.assert_no_compute_left();
    record_semaphore(&client, &semaphore, "semaphore-malformed-signals").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_reset_while_waiting_for_capacity_completes() {
    let (fx, holder) = one_slot_held("cap-reset", "cap-reset-holder", &[]).await;
    let client = fx.server.client().await;
    let waiting = run::start(&client, &fx.task_queue, "capacity-reset-waiting", "1s").await;
    waits_for_capacity(&waiting, "the second run").await;
    let workflow_id = waiting.info().workflow_id.clone();
    let old_run = current_run_of(&waiting).await;

    let reset = [
        "reset",
        "--workflow-id",
        &workflow_id,
        "--type",
        "LastWorkflowTask",
    ];
    temporal_workflow(&fx.server, &[&reset[..], &["--reason", "test"]].concat());
    let reset = tea_starter::handle(&client, &workflow_id);
    let new_run = wait_for("the reset run", RUN_TIMEOUT, || async {
        Some(current_run_of(&reset).await).filter(|run| *run != old_run)
    })
    .await;
    // Temporal links the old run to its reset run: the liveness check follows that link, so a
    // reset holder keeps its slot.
    let old = run_of(&client, &reset, &old_run)
        .describe(WorkflowDescribeOptions::default())
        .await
        .expect("describe the reset run's predecessor");
    let linked = old
        .raw_description
        .workflow_extended_info
        .map(|info| info.reset_run_id);
    assert_eq!(linked.as_deref(), Some(new_run.as_str()));
    // The semaphore learns the new run and forgets the old one (closed by the reset).
    let semaphore = semaphore(&fx, &client);
    wait_for(
        "the semaphore to know the reset run only",
        RUN_TIMEOUT,
        || async {
            let state = semaphore_state(&semaphore).await?;
            let runs: Vec<_> = state.queue.iter().map(|r| r.run_id.clone()).collect();
            (runs == [new_run.clone()]).then_some(())
        },
    )
    .await;

    holder
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel the holder");
    let end = run::finish(&reset, &fx.worker).await;
    assert!(matches!(end, RunEnd::Completed(_)), "reset run ended {end}");
    let end = run::finish(&holder, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "holder ended {end}");
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_semaphore_is_rebuilt_from_the_runs_and_the_cap_holds() {
    const CAP: usize = 2;
    let env = [
        ("MAX_CONCURRENT_COMPUTE", "2"),
        ("CAPACITY_CHECK_INTERVAL", "1s"),
    ];
    let fx = Fixture::start_with_env("cap-rebuilt", &env).await;
    let client = fx.server.client().await;
    let sampler = local_units(&fx);
    let mut holders = Vec::new();
    for _ in 0..CAP {
        let holder = run::start(&client, &fx.task_queue, "capacity-reasserted-holder", "10m").await;
        wait_for("a holder's job to start", RUN_TIMEOUT, || {
            pending_job(&holder)
        })
        .await;
        holders.push(holder);
    }
    let waiters = start_runs(&fx, "capacity-reasserted-waiting", 2, "1s").await;
    for waiter in &waiters {
        waits_for_capacity(waiter, "a waiter").await;
    }
    let semaphore = semaphore(&fx, &client);
    let terminated = current_run(&semaphore).await.expect("the semaphore runs");

    // Its holders and queue go with it; the runs re-assert them.
    semaphore
        .terminate(WorkflowTerminateOptions::builder().reason("test").build())
        .await
        .expect("terminate the semaphore");
    let holder_runs: Vec<String> =
        futures::future::join_all(holders.iter().map(current_run_of)).await;
    let state = wait_for(
        "a new semaphore that knows the holders",
        RUN_TIMEOUT,
        || async {
            let run = current_run(&semaphore)
                .await
                .filter(|run| *run != terminated)?;
            let state = semaphore_state(&semaphore).await?;
            let known = state
                .holders
                .iter()
                .filter(|h| holder_runs.contains(&h.run_id))
                .count();
            (!state.recovering && known == CAP).then_some((run, state))
        },
    )
    .await;
    let (rebuilt, state) = state;
    assert_eq!(state.holders.len(), CAP, "{state:?}");
    assert_eq!(state.queue.len(), 2, "both waiters queued again: {state:?}");
    for waiter in &waiters {
        assert_eq!(phase(waiter).await, Some(Phase::WaitingForCapacity));
    }
    assert_eq!(fx.compute_dirs().len(), CAP, "only the holders' units");
    // It started knowing it had to recover: its predecessor was terminated.
    let started = run::start_event(&run_of(&client, &semaphore, &rebuilt)).await;
    let input = started.input.expect("start input").payloads;
    assert!(
        String::from_utf8_lossy(&input[0].data).contains(r#""recovering":true"#),
        "{input:?}"
    );

    for holder in &holders {
        holder
            .cancel(WorkflowCancelOptions::builder().reason("test").build())
            .await
            .expect("cancel a holder");
    }
    for waiter in &waiters {
        let end = run::finish(waiter, &fx.worker).await;
        assert!(matches!(end, RunEnd::Completed(_)), "waiter ended {end}");
    }
    for holder in &holders {
        let end = run::finish(holder, &fx.worker).await;
        assert!(matches!(end, RunEnd::Cancelled), "holder ended {end}");
    }
    let max = sampler.finish().await;
    assert!(max <= CAP, "{max} units existed at once, cap {CAP}");
    fx.assert_no_compute_left();
    record_semaphore(&client, &semaphore, "semaphore-rebuilt").await;
}

/// The run ID of `handle`'s latest run.
async fn current_run_of(handle: &RunHandle) -> String {
    let description = handle
        .describe(WorkflowDescribeOptions::default())
        .await
        .expect("describe the run");
    description
        .raw_description
        .workflow_execution_info
        .and_then(|info| info.execution)
        .map(|execution| execution.run_id)
        .expect("a run ID")
}
