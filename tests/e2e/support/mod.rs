//! Test support: a real Temporal dev server, the project's binaries as real processes, a
//! Temporal client, and waiting on conditions with deadlines (never sleeping as
//! synchronisation).

pub mod procs;
pub mod run;
pub mod temporal;

use std::{future::Future, path::PathBuf, time::Duration};

pub use procs::{Proc, ProcBuilder};
pub use temporal::DevServer;

/// Polls `probe` until it returns `Some`, or fails the test with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh directory for one test's files (logs, state), kept after the test for debugging.
pub fn test_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("tea-e2e")
        .join(format!("{test}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// Path of one of this package's binaries, built by cargo for the tests.
pub fn bin(name: &str) -> PathBuf {
    let path = match name {
        "workflow-worker" => env!("CARGO_BIN_EXE_workflow-worker"),
        "external-worker" => env!("CARGO_BIN_EXE_external-worker"),
        "starter" => env!("CARGO_BIN_EXE_starter"),
        other => panic!("unknown binary {other}"),
    };
    PathBuf::from(path)
}

/// Whether a process with this pid exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}
