//! `workflow-worker`: hosts `TriggerExternalWorkflow` and its provisioning activities on
//! `taskQueueName`, over the compute provider chosen by `--provider` / COMPUTE_PROVIDER.

#[path = "logging_args.rs"]
mod logging_args;
use logging_args::LogArgs;

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::anyhow;
use clap::{Parser, Subcommand, ValueEnum};
use tea_compute::{
    ComputeProvider, EnvVar,
    digitalocean::{DigitalOceanConfig, DigitalOceanProvider},
    local::{LocalConfig, LocalProvider},
};
use tea_contract::{GoDuration, WORKFLOW_TASK_QUEUE};
use tea_orchestrator::{
    activities::{PollBackoff, forwarded_temporal_env, job_secret_env},
    sweeper::{SweepOptions, sweep_once},
    worker::{WorkflowWorkerConfig, run},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProviderKind {
    /// A local process per run (the embedded default).
    Local,
    /// A DigitalOcean App Platform app per run (needs DIGITALOCEAN_ACCESS_TOKEN).
    Digitalocean,
}

/// Workflow worker for the external-activity pattern. Connects with the standard Temporal client
/// environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*,
/// TEMPORAL_GRPC_META_*, TEMPORAL_PROFILE, temporal.toml); each external worker is given the
/// same resolved connection (API key, client key and gRPC metadata as secrets).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where external workers run.
    #[arg(long, env = "COMPUTE_PROVIDER", value_enum, default_value = "local")]
    provider: ProviderKind,
    /// Task queue for workflows and provisioning activities.
    #[arg(long, env = "WORKFLOW_TASK_QUEUE", default_value = WORKFLOW_TASK_QUEUE)]
    task_queue: String,
    /// First interval between deployment status polls.
    #[arg(long, env = "DEPLOY_POLL_INITIAL", default_value = "5s")]
    deploy_poll_initial: GoDuration,
    /// Longest interval between deployment status polls.
    #[arg(long, env = "DEPLOY_POLL_MAX", default_value = "30s")]
    deploy_poll_max: GoDuration,
    /// How long new compute may take to be reported running before the attempt is torn down
    /// and counted as lost (default: the provider's, 15m for digitalocean, 1m for local).
    #[arg(long, env = "DEPLOY_TIMEOUT")]
    deploy_timeout: Option<GoDuration>,
    /// Comma-separated names of variables of this process to give each unit of compute as
    /// secrets, for the job (e.g. `DB_PASSWORD,S3_KEY`); never logged, never in history.
    #[arg(long, env = "JOB_SECRET_ENV", default_value = "")]
    job_secret_env: String,
    /// How long running activities may continue after SIGTERM.
    #[arg(long, env = "GRACEFUL_SHUTDOWN", default_value = "10s")]
    graceful_shutdown: GoDuration,
    /// How often the scheduled sweep deletes compute no running run owns (0 = no schedule).
    #[arg(long, env = "SWEEP_INTERVAL", default_value = "5m", global = true)]
    sweep_interval: GoDuration,
    /// Compute younger than this is never swept.
    #[arg(long, env = "SWEEP_GRACE_PERIOD", default_value = "10m", global = true)]
    sweep_grace_period: GoDuration,
    /// Sweeps only report what they would delete.
    #[arg(long, env = "SWEEP_DRY_RUN", global = true)]
    sweep_dry_run: bool,
    /// Serve Prometheus metrics (the SDK's worker metrics and ours) on this address.
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the worker (the default).
    Run,
    /// Sweep once: delete compute that no running run owns, print the report as JSON, exit.
    Sweep,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(code) = args.log.init("workflow-worker") {
        return code;
    }
    let provider = match build_provider(args.provider) {
        Ok(provider) => provider,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let outcome = match args.command {
        Some(Command::Sweep) => sweep_main(&args, provider).await,
        Some(Command::Run) | None => {
            // What external workers will connect with: refused now, not at every run.
            let forwarded_env = forwarded_temporal_env().and_then(|mut env| {
                env.extend(job_secret_env(&args.job_secret_env, |key| {
                    std::env::var(key).ok()
                })?);
                Ok(env)
            });
            let forwarded_env = match forwarded_env {
                Ok(env) => env,
                Err(e) => {
                    tracing::error!("cannot start external workers with this configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            run_main(args, provider, forwarded_env).await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build_provider(kind: ProviderKind) -> anyhow::Result<Arc<dyn ComputeProvider>> {
    let provider: Arc<dyn ComputeProvider> = match kind {
        ProviderKind::Digitalocean => {
            let config = DigitalOceanConfig::from_env()
                .map_err(|e| anyhow!("digitalocean provider: {e}"))?;
            tracing::info!(
                api_url = %config.api_url,
                instance_size = %config.instance_size_slug,
                region = config.region.as_deref().unwrap_or("(nearest)"),
                "compute provider: digitalocean"
            );
            Arc::new(
                DigitalOceanProvider::new(config)
                    .map_err(|e| anyhow!("digitalocean provider: {e}"))?,
            )
        }
        ProviderKind::Local => {
            let config = LocalConfig::from_env().map_err(|e| anyhow!("local provider: {e}"))?;
            tracing::info!(
                worker_bin = %config.worker_bin.display(),
                state_dir = %config.state_dir.display(),
                "compute provider: local"
            );
            Arc::new(LocalProvider::new(config).map_err(|e| anyhow!("local provider: {e}"))?)
        }
    };
    Ok(provider)
}

async fn run_main(
    args: Args,
    provider: Arc<dyn ComputeProvider>,
    forwarded_env: Vec<EnvVar>,
) -> anyhow::Result<()> {
    if args.deploy_poll_initial.as_duration().is_zero()
        || args.deploy_poll_max < args.deploy_poll_initial
    {
        anyhow::bail!("DEPLOY_POLL_INITIAL must be > 0 and not above DEPLOY_POLL_MAX");
    }
    if args
        .deploy_timeout
        .is_some_and(|t| t.as_duration().is_zero())
    {
        anyhow::bail!("DEPLOY_TIMEOUT must be > 0");
    }
    let tea_runtime::WorkerProcess {
        runtime,
        client,
        metrics,
    } = tea_runtime::start_worker_process(args.metrics_addr).await?;
    let config = WorkflowWorkerConfig {
        task_queue: args.task_queue.clone(),
        poll: PollBackoff {
            initial: args.deploy_poll_initial.as_duration(),
            max: args.deploy_poll_max.as_duration(),
            deploy_timeout: args.deploy_timeout.map(GoDuration::as_duration),
        },
        graceful_shutdown: Duration::from(args.graceful_shutdown),
        sweep_interval: Some(args.sweep_interval.as_duration()).filter(|d| !d.is_zero()),
        sweep: sweep_options(&args),
    };
    run(
        &runtime,
        client,
        provider,
        forwarded_env,
        &config,
        metrics,
        tea_runtime::shutdown_signal(),
    )
    .await
}

fn sweep_options(args: &Args) -> SweepOptions {
    SweepOptions {
        grace_period: args.sweep_grace_period,
        dry_run: args.sweep_dry_run,
    }
}

async fn sweep_main(args: &Args, provider: Arc<dyn ComputeProvider>) -> anyhow::Result<()> {
    let (client, _) = tea_runtime::connect().await?;
    let report = sweep_once(provider.as_ref(), &client, &sweep_options(args)).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
