//! The `workflow-worker` command line: the worker's settings (each also an environment
//! variable) and the subcommands an operator runs by hand.

use clap::{Parser, Subcommand};
use tea_compute::registry::{self, Provider};
use tea_contract::{Cpus, GoDuration, WORKFLOW_TASK_QUEUE};
use tea_orchestrator::capacity::resources;
use tea_runtime::cli::LogArgs;

/// Workflow worker for the external-activity pattern. Connects with the standard Temporal client
/// environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*,
/// TEMPORAL_GRPC_META_*, TEMPORAL_PROFILE, temporal.toml); each external worker is given the
/// same resolved connection (API key, client key and gRPC metadata as secrets).
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// Where external workers run: one of the providers in the registry (the help text is
    /// generated from it).
    #[arg(
        long,
        env = "COMPUTE_PROVIDER",
        default_value = registry::DEFAULT.name,
        value_parser = Provider::by_name,
        help = format!("Where external workers run: {}", Provider::help_list()),
    )]
    pub(crate) provider: &'static Provider,
    /// Task queue for workflows and provisioning activities.
    #[arg(long, env = "WORKFLOW_TASK_QUEUE", default_value = WORKFLOW_TASK_QUEUE)]
    pub(crate) task_queue: String,
    /// First interval between deployment status polls.
    #[arg(long, env = "DEPLOY_POLL_INITIAL", default_value = "5s")]
    pub(crate) deploy_poll_initial: GoDuration,
    /// Longest interval between deployment status polls.
    #[arg(long, env = "DEPLOY_POLL_MAX", default_value = "30s")]
    pub(crate) deploy_poll_max: GoDuration,
    /// How long new compute may take to be reported running before the attempt is torn down
    /// and counted as lost (default: the provider's, from the registry).
    #[arg(long, env = "DEPLOY_TIMEOUT", help = deploy_timeout_help())]
    pub(crate) deploy_timeout: Option<GoDuration>,
    /// Comma-separated names of variables of this process to give each unit of compute as
    /// secrets, for the job (e.g. `DB_PASSWORD,S3_KEY`); never logged, never in history.
    #[arg(long, env = "JOB_SECRET_ENV", default_value = "")]
    pub(crate) job_secret_env: String,
    /// How long running activities may continue after SIGTERM.
    #[arg(long, env = "GRACEFUL_SHUTDOWN", default_value = "10s")]
    pub(crate) graceful_shutdown: GoDuration,
    /// This deployment's identity, marked on all compute it creates; only compute with this
    /// mark is listed, swept or deleted by name. Default: `<TEMPORAL_NAMESPACE>/<task queue>`.
    /// Not a secret (stored in plain text with the compute).
    #[arg(long, env = "COMPUTE_OWNER", global = true)]
    pub(crate) compute_owner: Option<String>,
    /// How often this owner's scheduled sweep deletes compute no running run owns. 0: this
    /// worker does not manage the schedule (an existing one stays; see delete-sweep-schedule).
    #[arg(long, env = "SWEEP_INTERVAL", default_value = "5m", global = true)]
    pub(crate) sweep_interval: GoDuration,
    /// Compute younger than this is never swept: the delay a new run may take to show as
    /// running in Temporal's visibility. May be shorter than the deploy timeout (a running
    /// run's compute is never swept, deploying or not; the start-up log says so).
    #[arg(long, env = "SWEEP_GRACE_PERIOD", default_value = "10m", global = true)]
    pub(crate) sweep_grace_period: GoDuration,
    /// Sweeps only report what they would delete.
    #[arg(long, env = "SWEEP_DRY_RUN", global = true)]
    pub(crate) sweep_dry_run: bool,
    /// The longest a unit of compute may live, even mid-job: the run tears it down then and
    /// fails ("exceeded the maximum compute lifetime"); sweeps delete units older than this
    /// plus the grace period whatever their run (e.g. `2h`; default: unlimited).
    #[arg(long, env = "MAX_COMPUTE_LIFETIME", global = true)]
    pub(crate) max_compute_lifetime: Option<GoDuration>,
    /// The most units of this owner's compute that may exist at once: further runs wait
    /// (phase `waiting_for_capacity`) and start first come, first served as units are deleted.
    /// Must be > 0; default: unlimited. Workers of one owner should agree (the latest
    /// request's cap is in force).
    #[arg(long, env = "MAX_CONCURRENT_COMPUTE")]
    pub(crate) max_concurrent_compute: Option<u32>,
    /// The most CPUs one run may ask for in its `resources` (e.g. `4`, `0.5`; default:
    /// what the provider has). A run asking for more, or for a size with more, fails at once.
    #[arg(long, env = "MAX_RUN_CPUS", value_parser = resources::parse_max_cpus)]
    pub(crate) max_run_cpus: Option<Cpus>,
    /// The most memory one run may ask for in its `resources` (bytes, or `8GiB`, `512MiB`;
    /// default: what the provider has). A run asking for more fails at once.
    #[arg(long, env = "MAX_RUN_MEMORY", value_parser = resources::parse_max_memory)]
    pub(crate) max_run_memory: Option<u64>,
    /// How often the capacity semaphore frees slots of runs that closed without releasing
    /// them (terminated, timed out), and how often capped runs re-assert their request or
    /// their slot to it.
    #[arg(long, env = "CAPACITY_CHECK_INTERVAL", default_value = "30s")]
    pub(crate) capacity_check_interval: GoDuration,
    /// Worker Deployment Versioning: the deployment this worker is a version of (the same for
    /// every build). With --worker-build-id the worker is versioned; both unset: unversioned.
    #[arg(long, env = "TEMPORAL_DEPLOYMENT_NAME")]
    pub(crate) deployment_name: Option<String>,
    /// Worker Deployment Versioning: this build's ID (e.g. the image tag or git SHA), unique
    /// per workflow code change. Needs --deployment-name.
    #[arg(long, env = "TEMPORAL_WORKER_BUILD_ID")]
    pub(crate) worker_build_id: Option<String>,
    /// How a versioned worker's runs move between versions: `pinned` (default: a run ends on
    /// the build it started on, no patch needed) or `auto-upgrade` (runs move to the current
    /// version; changes still need patches). Only with versioning.
    #[arg(long, env = "TEMPORAL_VERSIONING_BEHAVIOR")]
    pub(crate) versioning_behavior: Option<String>,
    /// Serve Prometheus metrics (the SDK's worker metrics and ours) on this address.
    #[arg(long, env = "METRICS_ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub(crate) log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
pub(crate) enum ComputeCommand {
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
