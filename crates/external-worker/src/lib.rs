//! The external worker: an activity-only Temporal worker that polls one task queue (the run's
//! unique queue, from EXTERNAL_TASK_QUEUE) and runs `long-running-command` there.
//!
//! [`job`] owns the activity itself; [`command`] runs a user's command as a child process
//! group with its output, progress and result (for the command activity); [`worker`] owns building, running and stopping the worker;
//! [`deadman`] stops it by itself when nobody needs it any more.

pub mod command;
pub mod deadman;
pub mod job;
pub mod worker;
