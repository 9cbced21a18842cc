//! The external worker: an activity-only Temporal worker that polls one task queue (the run's
//! unique queue, from EXTERNAL_TASK_QUEUE) and runs `long-running-command` there.
//!
//! [`job`] owns the activities; [`command`] runs a user's command as a child process group
//! with its output, progress and result (for the command activity); [`tree`] finds and kills
//! every process of a job and hardens the worker process; [`mask`] masks secrets in what a job
//! reports; [`secrets_file`] takes secrets a provider delivered in a file; [`worker`] owns
//! building, running and stopping the worker; [`deadman`] stops it by itself when nobody needs
//! it any more.

pub mod checkpoint;
pub mod command;
pub mod deadman;
pub mod job;
pub mod mask;
pub mod secrets_file;
pub mod tree;
pub mod worker;
