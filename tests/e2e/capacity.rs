//! `MAX_CONCURRENT_COMPUTE` end to end through the local provider: runs wait for a slot of
//! their owner's `ComputeCapacity` semaphore, never more units exist than the cap (sampled
//! from the provider's state directory), and the count survives a workflow-worker SIGKILL,
//! cancellation of a waiting run, and termination of a holder.

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
use tea_orchestrator::capacity::{ComputeCapacity, capacity_workflow_id};
use tea_starter::{RunEnd, RunHandle};
use temporalio_client::{
    WorkflowCancelOptions, WorkflowDescribeOptions, WorkflowHandle, WorkflowListOptions,
    WorkflowQueryOptions, WorkflowTerminateOptions,
};

use crate::{
    digitalocean,
    local::{Fixture, workflow_worker},
    support::{
        DevServer, bin,
        run::{self, RUN_TIMEOUT},
        test_dir, wait_for,
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
    let fx = Fixture::start_with_env("cap-cancel", &[("MAX_CONCURRENT_COMPUTE", "1")]).await;
    let (holder, _) = fx.start_job("cap-holder", "10m").await;
    let client = fx.server.client().await;
    let waiting = run::start(&client, &fx.task_queue, "capacity-cancel-waiting", "1s").await;
    waits_for_capacity(&waiting, "the second run").await;
    let next = run::start(&client, &fx.task_queue, "capacity-waited", "1s").await;
    waits_for_capacity(&next, "the third run").await;

    // Cancelling the semaphore only makes it continue as new: holder and queue stay.
    let semaphore = client.get_workflow_handle::<ComputeCapacity>(capacity_workflow_id(
        &ComputeOwner::derive("default", &fx.task_queue),
    ));
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_holder_does_not_leak_its_slot() {
    let env = [
        ("MAX_CONCURRENT_COMPUTE", "1"),
        ("CAPACITY_CHECK_INTERVAL", "1s"),
    ];
    let fx = Fixture::start_with_env("cap-terminate", &env).await;
    let (holder, _) = fx.start_job("cap-terminated", "10m").await;
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
    let task_queue = format!("wf-cap-do-{}", uuid::Uuid::new_v4().simple());
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
