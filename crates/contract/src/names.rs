//! Names fixed by the original Go implementation; changing any of them breaks interop.

use std::time::Duration;

/// Workflow type registered by the workflow-worker and started by the starter.
pub const WORKFLOW_TYPE: &str = "TriggerExternalWorkflow";

/// Task queue the workflow-worker polls for workflows and provisioning activities.
pub const WORKFLOW_TASK_QUEUE: &str = "taskQueueName";

/// Activity type run by the external worker on the run's unique queue.
pub const LONG_RUNNING_ACTIVITY: &str = "long-running-command";

/// Activity type that runs the user's command on the external worker (see `CommandJob`).
pub const RUN_COMMAND_ACTIVITY: &str = "run-command";

/// Provisioning activity names (Go registers struct methods under their method names).
pub const CREATE_ACTIVITY: &str = "Create";
pub const WAIT_FOR_APP_BUILD_ACTIVITY: &str = "WaitForAppBuild";
pub const DELETE_ACTIVITY: &str = "Delete";

/// Environment variable naming the queue an external worker polls.
pub const EXTERNAL_TASK_QUEUE_ENV: &str = "EXTERNAL_TASK_QUEUE";

/// Environment variables naming the workflow run that owns an external worker (its
/// dead-man switch stops the worker once that run is closed).
pub const OWNER_WORKFLOW_ID_ENV: &str = "OWNER_WORKFLOW_ID";
pub const OWNER_RUN_ID_ENV: &str = "OWNER_RUN_ID";

/// Queue an external worker polls when [`EXTERNAL_TASK_QUEUE_ENV`] is unset.
pub const DEFAULT_EXTERNAL_TASK_QUEUE: &str = "externalTaskQueue";

/// Set to `true` on every unit of compute: the external worker takes its Temporal connection
/// from its environment only (what the workflow-worker forwarded), never from a temporal.toml
/// profile the compute may happen to have.
pub const TEMPORAL_ENV_ONLY_ENV: &str = "TEA_TEMPORAL_ENV_ONLY";

/// What the external worker's dead-man switch does when it fires: `exit` (the default), or
/// `park` on platforms that restart exited processes (stop polling and stay down, idle, until
/// the compute is deleted), so a worker whose run is gone does not crash-loop.
pub const DEAD_MAN_ACTION_ENV: &str = "DEAD_MAN_ACTION";

/// Set by every compute provider on the external worker: the comma-separated names of the
/// variables it was given as secrets (job secrets, the Temporal API key and client key). The
/// worker masks their values in whatever a job prints.
pub const SECRET_NAMES_ENV: &str = "TEA_SECRET_NAMES";

/// Set by a provider that hands the external worker its secrets in a file instead of its
/// environment (Docker: the environment shows in `docker inspect`): the path of a JSON object
/// of variable names to values, which the worker moves into its environment and deletes
/// before it connects.
pub const SECRETS_FILE_ENV: &str = "TEA_SECRETS_FILE";

/// The external worker's setting: how long a job has between SIGTERM and SIGKILL when it is
/// cancelled or the worker stops. A provider that stops a worker gives it at least this long
/// (and the time to report) before it kills it.
pub const JOB_KILL_GRACE_ENV: &str = "JOB_KILL_GRACE";

/// [`JOB_KILL_GRACE_ENV`] when it is not set.
pub const DEFAULT_JOB_KILL_GRACE: Duration = Duration::from_secs(10);

/// Type of the retryable failure the external worker ends a job with when it shuts down (the
/// compute is going away) and stops the job: its details are the job's last progress, with
/// its checkpoint, so that the run resumes the job on fresh compute from there.
pub const WORKER_SHUTDOWN_FAILURE: &str = "WorkerShutdown";
