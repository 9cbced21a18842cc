//! Building and running the activity-only worker, and stopping it once, gracefully.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, anyhow};
use tea_runtime::Metrics;
use temporalio_client::Client;
use temporalio_common::worker::WorkerDeploymentOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::{
    command::Limits,
    deadman::{self, DeadManAction, DeadManConfig},
    job::{JobActivities, JobTracker},
    mask::Secrets,
    tree,
};

/// How the external worker runs.
#[derive(Clone, Debug)]
pub struct ExternalWorkerConfig {
    /// The queue to poll: the run's unique queue.
    pub task_queue: String,
    /// How long a running job may go on after shutdown starts before it is cancelled.
    pub graceful_shutdown: Duration,
    /// When the worker stops by itself.
    pub dead_man: DeadManConfig,
    /// Where job metrics go.
    pub metrics: Metrics,
    /// Bounds on a user's command (output tail, result size, kill grace).
    pub job_limits: Limits,
    /// What is masked in a user's command's output, progress and result.
    pub secrets: Secrets,
}

/// The longest the SDK may hold back a recorded heartbeat. This worker runs one job at a time,
/// so sending its heartbeats at the job's own pace costs the server little.
const MAX_HEARTBEAT_THROTTLE: Duration = Duration::from_secs(1);

/// Runs the worker until `shutdown` resolves (then drains gracefully) or the worker fails.
pub async fn run(
    runtime: &Runtime,
    client: Client,
    config: &ExternalWorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tracker = Arc::new(JobTracker::default());
    let options = WorkerOptions::new(config.task_queue.clone())
        .register_activities(
            JobActivities::new(Arc::clone(&tracker), config.metrics.clone())
                .with_limits(config.job_limits)
                .with_secrets(config.secrets.clone()),
        )
        .deployment_options(WorkerDeploymentOptions::from_build_id(
            tea_runtime::build_id(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        ))
        .graceful_shutdown_period(config.graceful_shutdown)
        // The job records a heartbeat every half heartbeat timeout: send each one as it comes
        // (the SDK would otherwise hold them back to 0.8 x the timeout, leaving a fifth of it
        // as slack for a loaded machine or network), at most one a second.
        .max_heartbeat_throttle_interval(MAX_HEARTBEAT_THROTTLE)
        .build();
    let watchdog = deadman::watch(
        config.dead_man.clone(),
        Arc::clone(&tracker),
        client.clone(),
    );
    let mut worker = Worker::new(runtime, client, options)
        .map_err(|e| anyhow!("could not create the external worker: {e}"))?;
    let shutdown_handle = worker.shutdown_handle();
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = {
        let stopping = Arc::clone(&stopping);
        move || {
            stopping.store(true, Ordering::SeqCst);
            shutdown_handle();
        }
    };
    let action = config.dead_man.action;
    let jobs = Arc::clone(&tracker);
    // Resolves once the process may end: at once after a shutdown signal or an `exit` of the
    // switch; after the shutdown signal (the compute's deletion) when the switch parks.
    let signal_task = tokio::spawn(async move {
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down the external worker");
                jobs.stop_jobs();
                stop();
            }
            reason = watchdog => {
                tracing::info!(%reason, ?action, "dead-man switch: stopping the external worker");
                stop();
                if action == DeadManAction::Park {
                    tracing::info!(
                        "parked: no longer polling; staying down until the compute is deleted"
                    );
                    shutdown.await;
                    tracing::info!("shutdown signal while parked");
                }
            }
        }
    });
    tracing::info!(task_queue = %config.task_queue, "external worker polling");
    let result = worker.run().await.context("external worker failed");
    drop(worker);
    // Every job has been stopped; whatever a job left behind goes now.
    tree::kill_descendants().await;
    if result.is_ok() && stopping.load(Ordering::SeqCst) {
        // Stopped by the signal task: wait until it says the process may end.
        let _ = signal_task.await;
    } else {
        signal_task.abort();
    }
    result
}
