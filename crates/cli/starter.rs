//! `starter`: starts one `TriggerExternalWorkflow` run, prints its IDs, waits and prints how it
//! ended. Exit status: 0 completed, 1 failed, 2 bad input, 3 cancelled or terminated.

use std::process::ExitCode;

use clap::Parser;
use tea_contract::{GoDuration, WORKFLOW_TASK_QUEUE, WorkflowInput};
use tea_runtime::LogFormat;

/// Start a run of the external-activity workflow. Connects with the standard Temporal client
/// environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS, profiles).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Container registry holding the external worker image.
    #[arg(long, env = "IMAGE_REGISTRY", default_value = "sje-test-registry")]
    registry: String,
    /// Repository of the external worker image.
    #[arg(long, env = "IMAGE_REPOSITORY", default_value = "external")]
    repository: String,
    /// Tag of the external worker image.
    #[arg(long, env = "IMAGE_TAG", default_value = "latest")]
    tag: String,
    /// How long the external job runs (e.g. 500ms, 2s, 1m). Default 1m.
    #[arg(long, env = "JOB_DURATION")]
    job_duration: Option<GoDuration>,
    /// Pause before provisioning and after the job. Default 5s.
    #[arg(long, env = "PAUSE_DURATION")]
    pause: Option<GoDuration>,
    /// Heartbeat timeout of every activity. Default 10s.
    #[arg(long, env = "HEARTBEAT_TIMEOUT")]
    heartbeat_timeout: Option<GoDuration>,
    /// How long the job may wait for a worker on its queue before the run tears down. Default 5m.
    #[arg(long, env = "WORKER_START_TIMEOUT")]
    worker_start_timeout: Option<GoDuration>,
    /// Compute a run may provision in turn when a worker dies or never comes up (1-9).
    #[arg(long, env = "MAX_COMPUTE_ATTEMPTS")]
    max_compute_attempts: Option<u32>,
    /// Workflow ID (default: external-activity-<uuid>).
    #[arg(long = "id", env = "WORKFLOW_ID")]
    workflow_id: Option<String>,
    /// Task queue of the workflow-worker.
    #[arg(long, env = "WORKFLOW_TASK_QUEUE", default_value = WORKFLOW_TASK_QUEUE)]
    task_queue: String,
    /// Print the IDs and exit without waiting for the result.
    #[arg(long)]
    no_wait: bool,
    /// Log level: trace, debug, info, warn, error (RUST_LOG wins when set).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format: pretty or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = tea_runtime::init_logging(Some(&args.log_level), args.log_format) {
        eprintln!("starter: {e:#}");
        return ExitCode::from(2);
    }
    let input = WorkflowInput {
        registry: args.registry.clone(),
        repository: args.repository.clone(),
        tag: args.tag.clone(),
        job_duration: args.job_duration,
        pause: args.pause,
        heartbeat_timeout: args.heartbeat_timeout,
        worker_start_timeout: args.worker_start_timeout,
        max_compute_attempts: args.max_compute_attempts,
    };
    if let Err(e) = input.validate() {
        eprintln!("starter: {e}");
        return ExitCode::from(2);
    }
    match run(args, input).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("starter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, input: WorkflowInput) -> anyhow::Result<u8> {
    let (client, _) = tea_runtime::connect().await?;
    let workflow_id = args
        .workflow_id
        .unwrap_or_else(|| format!("external-activity-{}", uuid_v4()));
    let handle = tea_starter::start(&client, &args.task_queue, &workflow_id, input).await?;
    println!(
        "Started workflow: WorkflowID {} RunID {}",
        handle.info().workflow_id,
        handle.info().run_id.as_deref().unwrap_or("")
    );
    if args.no_wait {
        return Ok(0);
    }
    let end = tea_starter::wait(&handle).await?;
    println!("Workflow result: {end}");
    Ok(end.exit_code())
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}
