//! The orchestration side of the pattern, as a library the `workflow-worker` binary, the tests
//! and the benchmarks all drive.
//!
//! - [`workflow`]: `TriggerExternalWorkflow`, which provisions compute, runs the job on the
//!   compute's unique queue and always deprovisions it.
//! - [`activities`]: the provisioning activities (`Create`, `WaitForAppBuild`, `Delete`) over a
//!   [`tea_compute::ComputeProvider`].
//! - [`worker`]: the workflow-worker process: one worker on `taskQueueName` hosting both.
//! - [`versioning`]: the worker's Worker Deployment Versioning settings.
//! - [`sweeper`]: deleting this owner's compute that no running run owns.
//! - [`operator`]: `compute list`, `compute delete` and the sweep report, for people.
//! - [`runs`]: the running runs as Temporal lists them, and the compute names each may own.
//! - [`operator_delete`]: `OperatorDeleteCompute`, an operator's delete carried out (and
//!   counted) by the workflow-worker.

pub mod activities;
pub mod capacity;
pub mod operator;
pub mod operator_delete;
pub mod runs;
pub mod sweeper;
pub mod versioning;
pub mod worker;
pub mod workflow;
