//! `workflow-worker`: hosts `TriggerExternalWorkflow` and its provisioning activities on
//! `taskQueueName`, over the compute provider chosen by `--provider` / COMPUTE_PROVIDER.
//!
//! The command line is in `cli.rs`, the subcommands an operator runs by hand in `by_hand.rs`;
//! here: checking the settings, building the provider and running the worker.

mod by_hand;
mod cli;

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use tea_compute::{
    ComputeOwner, ComputeProvider, EnvVar,
    registry::{Provider, ProviderConfig},
};
use tea_contract::GoDuration;
use tea_orchestrator::{
    activities::{PollBackoff, forwarded_temporal_env, job_secret_env},
    capacity::resources::RunBounds,
    sweeper::{SweepOptions, grace_shorter_than_deploy_note, schedule_id},
    versioning::Versioning,
    worker::{WorkflowWorkerConfig, run},
};
use temporalio_client::Client;

use by_hand::{compute_main, delete_schedule_main, sweep_main};
use cli::{Args, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(code) = args.log.init("workflow-worker") {
        return code;
    }
    if args.max_concurrent_compute == Some(0) {
        tracing::error!("MAX_CONCURRENT_COMPUTE must be > 0 (unset it for no limit)");
        return ExitCode::from(2);
    }
    if args.capacity_check_interval.as_duration().is_zero() {
        tracing::error!("CAPACITY_CHECK_INTERVAL must be > 0");
        return ExitCode::from(2);
    }
    let owner = match args.compute_owner.as_deref().map(ComputeOwner::new) {
        None => None,
        Some(Ok(owner)) => Some(owner),
        Some(Err(e)) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let outcome = match args.command {
        // Removing the schedule needs only Temporal, not the provider's settings.
        Some(Command::DeleteSweepSchedule) => delete_schedule_main(&args, owner).await,
        Some(Command::Sweep { json }) => {
            let Some(config) = checked_provider_config(args.provider).await else {
                return ExitCode::from(2);
            };
            sweep_main(&args, (config, owner), json).await
        }
        Some(Command::Compute(ref command)) => {
            let Some(config) = checked_provider_config(args.provider).await else {
                return ExitCode::from(2);
            };
            compute_main(&args, (config, owner), command).await
        }
        Some(Command::Run) | None => {
            let versioning = match Versioning::from_settings(
                args.deployment_name.as_deref(),
                args.worker_build_id.as_deref(),
                args.versioning_behavior.as_deref(),
            ) {
                Ok(versioning) => versioning,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(2);
                }
            };
            let Some(config) = checked_provider_config(args.provider).await else {
                return ExitCode::from(2);
            };
            let config = (config, owner);
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
            run_main(args, config, forwarded_env, versioning).await
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

/// The provider's configuration, checked against the platform where the provider can, or
/// `None` after logging why it is unusable.
async fn checked_provider_config(kind: &'static Provider) -> Option<ProviderConfig> {
    let config = provider_config(kind)
        .inspect_err(|e| tracing::error!("{e:#}"))
        .ok()?;
    match config.preflight().await {
        Ok(Some(about)) => tracing::info!(provider = %kind, "compute platform: {about}"),
        Ok(None) => {}
        Err(e) => {
            tracing::error!("{e}");
            return None;
        }
    }
    Some(config)
}

fn provider_config(kind: &'static Provider) -> anyhow::Result<ProviderConfig> {
    let config = ProviderConfig::from_env(kind)?;
    tracing::info!(provider = %kind, "compute provider: {}", config.describe());
    Ok(config)
}

/// This deployment's owner: `COMPUTE_OWNER`, else derived from the client's namespace and the
/// workflow task queue.
fn owner_of(explicit: Option<ComputeOwner>, client: &Client, task_queue: &str) -> ComputeOwner {
    let owner =
        explicit.unwrap_or_else(|| ComputeOwner::derive(&client.options().namespace, task_queue));
    tracing::info!(%owner, schedule = %schedule_id(&owner), "compute owner");
    owner
}

fn build_provider(
    config: ProviderConfig,
    owner: ComputeOwner,
) -> anyhow::Result<Arc<dyn ComputeProvider>> {
    Ok(config.build(owner)?)
}

async fn run_main(
    args: Args,
    (provider, owner): (ProviderConfig, Option<ComputeOwner>),
    forwarded_env: Vec<EnvVar>,
    versioning: Option<Versioning>,
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
    if args
        .max_compute_lifetime
        .is_some_and(|t| t.as_duration().is_zero())
    {
        anyhow::bail!("MAX_COMPUTE_LIFETIME must be > 0 (unset it for no limit)");
    }
    let tea_runtime::WorkerProcess {
        runtime,
        client,
        metrics,
    } = tea_runtime::start_worker_process(args.metrics_addr).await?;
    let provider = build_provider(provider, owner_of(owner, &client, &args.task_queue))?;
    if !args.sweep_interval.as_duration().is_zero() {
        explain_sweep_grace(&args, provider.as_ref());
    }
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
        max_compute_lifetime: args.max_compute_lifetime.map(GoDuration::as_duration),
        max_concurrent_compute: args.max_concurrent_compute,
        capacity_check_interval: args.capacity_check_interval.as_duration(),
        run_bounds: RunBounds {
            max_cpus: args.max_run_cpus,
            max_memory: args.max_run_memory,
        },
        versioning,
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

/// Logs why a sweep grace period shorter than the deploy timeout is allowed, when it is.
fn explain_sweep_grace(args: &Args, provider: &dyn ComputeProvider) {
    let (deploy_timeout, from) = match args.deploy_timeout {
        Some(timeout) => (timeout.as_duration(), "DEPLOY_TIMEOUT".to_owned()),
        None => (
            provider.default_deploy_timeout(),
            format!("the {} provider's default; DEPLOY_TIMEOUT", provider.kind()),
        ),
    };
    let grace = args.sweep_grace_period.as_duration();
    if let Some(note) = grace_shorter_than_deploy_note(grace, deploy_timeout, &from) {
        tracing::info!("{note}");
    }
}

fn sweep_options(args: &Args) -> SweepOptions {
    SweepOptions {
        grace_period: args.sweep_grace_period,
        dry_run: args.sweep_dry_run,
        owner: None,
        max_lifetime: args
            .max_compute_lifetime
            .filter(|t| !t.as_duration().is_zero()),
    }
}
