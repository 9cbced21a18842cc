//! Names fixed by the original Go implementation; changing any of them breaks interop.

/// Workflow type registered by the workflow-worker and started by the starter.
pub const WORKFLOW_TYPE: &str = "TriggerExternalWorkflow";

/// Task queue the workflow-worker polls for workflows and provisioning activities.
pub const WORKFLOW_TASK_QUEUE: &str = "taskQueueName";

/// Activity type run by the external worker on the run's unique queue.
pub const LONG_RUNNING_ACTIVITY: &str = "long-running-command";

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

/// Name of the worker component inside a DigitalOcean app.
pub const WORKER_COMPONENT_NAME: &str = "external-worker";

/// Temporal connection variables forwarded from the workflow-worker to the compute, in order.
pub const FORWARDED_TEMPORAL_ENV: [&str; 4] = [
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_TLS",
    "TEMPORAL_API_KEY",
];

/// Of the forwarded variables, those whose values are secrets.
pub const SECRET_TEMPORAL_ENV: [&str; 1] = ["TEMPORAL_API_KEY"];
