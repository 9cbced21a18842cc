//! Building and running the activity-only worker, and stopping it once, gracefully.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, anyhow};
use tea_runtime::Metrics;
use temporalio_client::Client;
use temporalio_common::worker::WorkerDeploymentOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::{
    deadman::{self, DeadManConfig},
    job::{JobActivities, JobTracker},
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
}

/// Runs the worker until `shutdown` resolves (then drains gracefully) or the worker fails.
pub async fn run(
    runtime: &Runtime,
    client: Client,
    config: &ExternalWorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tracker = Arc::new(JobTracker::default());
    let options = WorkerOptions::new(config.task_queue.clone())
        .register_activities(JobActivities::new(
            Arc::clone(&tracker),
            config.metrics.clone(),
        ))
        .deployment_options(WorkerDeploymentOptions::from_build_id(
            tea_runtime::build_id(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        ))
        .graceful_shutdown_period(config.graceful_shutdown)
        .build();
    let watchdog = deadman::watch(config.dead_man.clone(), tracker, client.clone());
    let mut worker = Worker::new(runtime, client, options)
        .map_err(|e| anyhow!("could not create the external worker: {e}"))?;
    let stop = worker.shutdown_handle();
    let signal_task = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => tracing::info!("shutting down the external worker"),
            reason = watchdog => tracing::info!(%reason, "dead-man switch: stopping the external worker"),
        }
        stop();
    });
    tracing::info!(task_queue = %config.task_queue, "external worker polling");
    let result = worker.run().await.context("external worker failed");
    signal_task.abort();
    result
}
