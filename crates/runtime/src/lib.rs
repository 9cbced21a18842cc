//! Process plumbing shared by the three binaries: logging set-up, the Temporal connection from
//! the standard client environment, the SDK runtime, shutdown signals, and the kernel's table
//! of processes ([`procfs`]: whether a process is alive).
//!
//! Kept in one place so every binary reads LOG_LEVEL, RUST_LOG and the TEMPORAL_* variables the
//! same way, and none of them ever prints a credential.

pub mod cli;
mod logging;
pub mod metrics;
pub mod procfs;
mod temporal;

pub use logging::{LogFormat, init_logging};
pub use metrics::Metrics;
pub use temporal::{
    ConnectionSummary, WorkerProcess, build_id, connect, new_runtime, run_description, run_status,
    shutdown_signal, start_worker_process,
};
