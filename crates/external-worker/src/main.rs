//! `external-worker`: polls the run's unique task queue and runs `long-running-command`.

use tea_runtime::cli::LogArgs;

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use tea_contract::{DEFAULT_EXTERNAL_TASK_QUEUE, DEFAULT_JOB_KILL_GRACE, GoDuration};
use tea_external_worker::{
    command::Limits,
    deadman::{DeadManAction, DeadManConfig},
    mask::Secrets,
    secrets_file, tree,
    worker::{ExternalWorkerConfig, run},
};

/// Activity-only Temporal worker for the external job. Connects with the standard Temporal
/// client environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS,
/// temporal.toml profiles).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Task queue to poll (the run's unique queue).
    #[arg(long, env = "EXTERNAL_TASK_QUEUE", default_value = DEFAULT_EXTERNAL_TASK_QUEUE)]
    task_queue: String,
    /// How long a running job may continue after SIGTERM before it is cancelled.
    #[arg(long, env = "GRACEFUL_SHUTDOWN", default_value = "10s")]
    graceful_shutdown: GoDuration,
    /// Stop by itself after this long without a job (0 = never).
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "15m")]
    idle_timeout: GoDuration,
    /// Workflow ID of the run that owns this worker: stop once that run is closed.
    #[arg(long, env = "OWNER_WORKFLOW_ID")]
    owner_workflow_id: Option<String>,
    /// Run ID of the owning run (with --owner-workflow-id).
    #[arg(long, env = "OWNER_RUN_ID")]
    owner_run_id: Option<String>,
    /// How often the dead-man switch checks idleness and the owning run.
    #[arg(long, env = "DEAD_MAN_CHECK_INTERVAL", default_value = "30s")]
    dead_man_check_interval: GoDuration,
    /// What the dead-man switch does: `exit`, or `park` (stop polling, stay down until
    /// SIGTERM) on platforms that restart exited processes. Set by the provider.
    #[arg(long, env = "DEAD_MAN_ACTION", default_value = "exit")]
    dead_man_action: DeadManAction,
    /// How long a user's command has between SIGTERM and SIGKILL when it is cancelled or the
    /// worker shuts down.
    #[arg(long, env = "JOB_KILL_GRACE", default_value_t = GoDuration(DEFAULT_JOB_KILL_GRACE))]
    job_kill_grace: GoDuration,
    /// Serve Prometheus metrics (the SDK's worker metrics and ours) on this address.
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> ExitCode {
    // First, while this is the only thread: nothing below may see the process dumpable, and
    // setting environment variables is only sound before other threads exist.
    let hardened = tree::harden();
    let secrets = secrets_file::take();
    if let Ok(secrets) = &secrets {
        for (key, value) in secrets {
            // SAFETY: no other thread exists yet (the runtime is built below).
            unsafe { std::env::set_var(key, value) };
        }
    }
    let args = Args::parse();
    if let Err(code) = args.log.init("external-worker") {
        return code;
    }
    if let Err(e) = hardened {
        tracing::warn!("{e}; a job running as this user could read this worker's credentials");
    }
    if let Err(e) = secrets {
        tracing::error!("{e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_main(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_main(args: Args) -> anyhow::Result<()> {
    if args.task_queue.trim().is_empty() {
        anyhow::bail!("EXTERNAL_TASK_QUEUE must not be empty");
    }
    let tea_runtime::WorkerProcess {
        runtime,
        client,
        metrics,
    } = tea_runtime::start_worker_process(args.metrics_addr).await?;
    let config = ExternalWorkerConfig {
        task_queue: args.task_queue,
        graceful_shutdown: Duration::from(args.graceful_shutdown),
        dead_man: DeadManConfig {
            idle_timeout: Some(args.idle_timeout.as_duration()).filter(|d| !d.is_zero()),
            owner_workflow_id: args.owner_workflow_id.filter(|id| !id.trim().is_empty()),
            owner_run_id: args.owner_run_id.filter(|id| !id.trim().is_empty()),
            check_interval: args.dead_man_check_interval.as_duration(),
            action: args.dead_man_action,
        },
        metrics,
        job_limits: Limits {
            kill_grace: args.job_kill_grace.as_duration(),
            ..Limits::default()
        },
        secrets: Secrets::of_this_process(),
    };
    run(&runtime, client, &config, tea_runtime::shutdown_signal()).await
}
