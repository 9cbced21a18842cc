//! `workflow-worker`: hosts `TriggerExternalWorkflow` and its provisioning activities on
//! `taskQueueName`, over the compute provider chosen by `--provider` / COMPUTE_PROVIDER.

use tea_runtime::cli::LogArgs;

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use tea_compute::{
    ComputeOwner, ComputeProvider, Deleted, EnvVar,
    registry::{self, Provider, ProviderConfig},
};
use tea_contract::{Cpus, GoDuration, WORKFLOW_TASK_QUEUE};
use tea_orchestrator::{
    activities::{PollBackoff, forwarded_temporal_env, job_secret_env},
    capacity::resources::{self, RunBounds},
    operator::{self, DeleteRoute},
    operator_delete::{Operator, ThroughWorker},
    sweeper::{
        SweepOptions, failure_summary, grace_shorter_than_deploy_note, remove_schedule,
        schedule_id, sweep_once,
    },
    versioning::Versioning,
    worker::{WorkflowWorkerConfig, run},
};
use temporalio_client::Client;

/// Workflow worker for the external-activity pattern. Connects with the standard Temporal client
/// environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*,
/// TEMPORAL_GRPC_META_*, TEMPORAL_PROFILE, temporal.toml); each external worker is given the
/// same resolved connection (API key, client key and gRPC metadata as secrets).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where external workers run: one of the providers in the registry (the help text is
    /// generated from it).
    #[arg(
        long,
        env = "COMPUTE_PROVIDER",
        default_value = registry::DEFAULT.name,
        value_parser = Provider::by_name,
        help = format!("Where external workers run: {}", Provider::help_list()),
    )]
    provider: &'static Provider,
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
    /// and counted as lost (default: the provider's, from the registry).
    #[arg(long, env = "DEPLOY_TIMEOUT", help = deploy_timeout_help())]
    deploy_timeout: Option<GoDuration>,
    /// Comma-separated names of variables of this process to give each unit of compute as
    /// secrets, for the job (e.g. `DB_PASSWORD,S3_KEY`); never logged, never in history.
    #[arg(long, env = "JOB_SECRET_ENV", default_value = "")]
    job_secret_env: String,
    /// How long running activities may continue after SIGTERM.
    #[arg(long, env = "GRACEFUL_SHUTDOWN", default_value = "10s")]
    graceful_shutdown: GoDuration,
    /// This deployment's identity, marked on all compute it creates; only compute with this
    /// mark is listed, swept or deleted by name. Default: `<TEMPORAL_NAMESPACE>/<task queue>`.
    /// Not a secret (stored in plain text with the compute).
    #[arg(long, env = "COMPUTE_OWNER", global = true)]
    compute_owner: Option<String>,
    /// How often this owner's scheduled sweep deletes compute no running run owns. 0: this
    /// worker does not manage the schedule (an existing one stays; see delete-sweep-schedule).
    #[arg(long, env = "SWEEP_INTERVAL", default_value = "5m", global = true)]
    sweep_interval: GoDuration,
    /// Compute younger than this is never swept: the delay a new run may take to show as
    /// running in Temporal's visibility. May be shorter than the deploy timeout (a running
    /// run's compute is never swept, deploying or not; the start-up log says so).
    #[arg(long, env = "SWEEP_GRACE_PERIOD", default_value = "10m", global = true)]
    sweep_grace_period: GoDuration,
    /// Sweeps only report what they would delete.
    #[arg(long, env = "SWEEP_DRY_RUN", global = true)]
    sweep_dry_run: bool,
    /// The longest a unit of compute may live, even mid-job: the run tears it down then and
    /// fails ("exceeded the maximum compute lifetime"); sweeps delete units older than this
    /// plus the grace period whatever their run (e.g. `2h`; default: unlimited).
    #[arg(long, env = "MAX_COMPUTE_LIFETIME", global = true)]
    max_compute_lifetime: Option<GoDuration>,
    /// The most units of this owner's compute that may exist at once: further runs wait
    /// (phase `waiting_for_capacity`) and start first come, first served as units are deleted.
    /// Must be > 0; default: unlimited. Workers of one owner should agree (the latest
    /// request's cap is in force).
    #[arg(long, env = "MAX_CONCURRENT_COMPUTE")]
    max_concurrent_compute: Option<u32>,
    /// The most CPUs one run may ask for in its `resources` (e.g. `4`, `0.5`; default:
    /// what the provider has). A run asking for more, or for a size with more, fails at once.
    #[arg(long, env = "MAX_RUN_CPUS", value_parser = resources::parse_max_cpus)]
    max_run_cpus: Option<Cpus>,
    /// The most memory one run may ask for in its `resources` (bytes, or `8GiB`, `512MiB`;
    /// default: what the provider has). A run asking for more fails at once.
    #[arg(long, env = "MAX_RUN_MEMORY", value_parser = resources::parse_max_memory)]
    max_run_memory: Option<u64>,
    /// How often the capacity semaphore frees slots of runs that closed without releasing
    /// them (terminated, timed out), and how often capped runs re-assert their request or
    /// their slot to it.
    #[arg(long, env = "CAPACITY_CHECK_INTERVAL", default_value = "30s")]
    capacity_check_interval: GoDuration,
    /// Worker Deployment Versioning: the deployment this worker is a version of (the same for
    /// every build). With --worker-build-id the worker is versioned; both unset: unversioned.
    #[arg(long, env = "TEMPORAL_DEPLOYMENT_NAME")]
    deployment_name: Option<String>,
    /// Worker Deployment Versioning: this build's ID (e.g. the image tag or git SHA), unique
    /// per workflow code change. Needs --deployment-name.
    #[arg(long, env = "TEMPORAL_WORKER_BUILD_ID")]
    worker_build_id: Option<String>,
    /// How a versioned worker's runs move between versions: `pinned` (default: a run ends on
    /// the build it started on, no patch needed) or `auto-upgrade` (runs move to the current
    /// version; changes still need patches). Only with versioning.
    #[arg(long, env = "TEMPORAL_VERSIONING_BEHAVIOR")]
    versioning_behavior: Option<String>,
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
    /// Sweep once: delete this owner's compute that no running run owns, print the report
    /// (a table; `--json` for machines), exit (status 1 when any delete failed).
    Sweep {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// See and remove this owner's compute by hand.
    #[command(subcommand)]
    Compute(ComputeCommand),
    /// Remove this owner's sweep schedule (the fleet's scheduled sweeps stop) and exit.
    DeleteSweepSchedule,
}

#[derive(Debug, Subcommand)]
enum ComputeCommand {
    /// List this owner's compute: name, provider, the running run that owns it and its
    /// phase, and age.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete one unit of this owner's compute. Refused, touching nothing, for a unit another
    /// owner marked (naming both owners) or none did, and while a running run owns it, unless
    /// --cancel-run: then that run (by its run ID) is cancelled and its teardown deletes the
    /// unit. The delete is carried out by a workflow-worker (workflow `OperatorDeleteCompute`
    /// on the task queue: counted in tea_operator_deletes_total, recorded in Temporal, the
    /// owner checked again there), unless --direct.
    Delete {
        /// The compute's name (`ext-...`, as `compute list` shows it).
        name: String,
        /// Cancel the running run that owns it (exactly that run, by its run ID: never a newer
        /// run under the same workflow ID) and wait for its teardown.
        #[arg(long)]
        cancel_run: bool,
        /// How long to wait for the cancelled run to close, and for the workflow-worker's
        /// delete to end.
        #[arg(long, default_value = "5m")]
        wait: GoDuration,
        /// How long a workflow-worker may take to pick the delete up; then the command fails
        /// and nothing is deleted.
        #[arg(long, default_value = "15s")]
        pickup_timeout: GoDuration,
        /// Delete from this command with its own provider client, for when no workflow-worker
        /// runs: not counted in tea_operator_deletes_total, not recorded in Temporal.
        #[arg(long)]
        direct: bool,
    },
}

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

/// `--deploy-timeout`'s help, with each registered provider's default.
fn deploy_timeout_help() -> String {
    let defaults: Vec<String> = registry::PROVIDERS
        .iter()
        .map(|p| {
            format!(
                "{} for {}",
                GoDuration::from(p.default_deploy_timeout),
                p.name
            )
        })
        .collect();
    format!(
        "How long new compute may take to be reported running before the attempt is torn down \
         and counted as lost (default: the provider's, {})",
        defaults.join(", ")
    )
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

async fn sweep_main(
    args: &Args,
    (provider, owner): (ProviderConfig, Option<ComputeOwner>),
    json: bool,
) -> anyhow::Result<()> {
    let (client, _) = tea_runtime::connect().await?;
    let provider = build_provider(provider, owner_of(owner, &client, &args.task_queue))?;
    explain_sweep_grace(args, provider.as_ref());
    let options = sweep_options(args);
    let report = sweep_once(provider.as_ref(), &client, &options, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", operator::sweep_table(&report));
    }
    if !report.failed.is_empty() {
        anyhow::bail!("{}", failure_summary(&report));
    }
    Ok(())
}

async fn delete_schedule_main(args: &Args, owner: Option<ComputeOwner>) -> anyhow::Result<()> {
    let (client, _) = tea_runtime::connect().await?;
    let owner = owner_of(owner, &client, &args.task_queue);
    let id = schedule_id(&owner);
    if remove_schedule(&client, &owner).await? {
        println!("deleted sweep schedule {id}");
    } else {
        println!("no sweep schedule {id}");
    }
    Ok(())
}

async fn compute_main(
    args: &Args,
    (provider, owner): (ProviderConfig, Option<ComputeOwner>),
    command: &ComputeCommand,
) -> anyhow::Result<()> {
    let (mut client, _) = tea_runtime::connect().await?;
    let operator = Operator::of_this_process();
    // Temporal records it with what this command does (a run's cancellation, a delete).
    *client.connection_mut().identity_mut() = format!("{operator} workflow-worker compute");
    let provider = build_provider(provider, owner_of(owner, &client, &args.task_queue))?;
    match command {
        ComputeCommand::List { json } => {
            let rows = operator::list_compute(provider.as_ref(), &client).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", operator::compute_table(&rows));
            }
        }
        ComputeCommand::Delete {
            name,
            cancel_run,
            wait,
            pickup_timeout,
            direct,
        } => {
            let route = if *direct {
                DeleteRoute::Direct
            } else {
                DeleteRoute::Worker(ThroughWorker {
                    task_queue: args.task_queue.clone(),
                    requested_by: operator,
                    pickup_timeout: pickup_timeout.as_duration(),
                    result_timeout: wait.as_duration(),
                })
            };
            let done = operator::delete_compute(
                provider.as_ref(),
                &client,
                name,
                (*cancel_run, wait.as_duration()),
                &route,
            )
            .await?;
            let how = match &done.recorded_as {
                Some(workflow_id) => format!("by a workflow-worker: workflow {workflow_id}"),
                None => "directly: not counted, not recorded in Temporal".to_owned(),
            };
            println!(
                "{} ({how})",
                match done.outcome {
                    operator::DeleteOutcome::Deleted(Deleted::Removed) => format!("deleted {name}"),
                    operator::DeleteOutcome::Deleted(Deleted::AlreadyGone) =>
                        format!("{name} was already gone"),
                    operator::DeleteOutcome::DeletedByItsRun { run } =>
                        format!("{run}; its teardown deleted {name}"),
                    operator::DeleteOutcome::DeletedAfterItsRunClosed { run, .. } =>
                        format!("{run}; it closed, then {name} was deleted"),
                }
            );
        }
    }
    Ok(())
}
