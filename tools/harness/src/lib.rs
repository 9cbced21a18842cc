//! Running the real parts on one machine: a Temporal dev server (`temporal server start-dev`)
//! on free loopback ports, the project's binaries as processes with their output in log files,
//! and waiting on conditions with deadlines (never sleeping as synchronisation).
//!
//! Shared by the end-to-end tests, the chaos command and the benchmarks, so all of them start
//! and stop things the same way.

pub mod procs;
pub mod temporal;

use std::{future::Future, path::PathBuf, time::Duration};

pub use procs::{Proc, ProcBuilder};
pub use temporal::{DevServer, DevServerOptions, INSTALL_HINT};

/// Polls `probe` until it returns `Some`, or returns an error naming `what` after `timeout`.
pub async fn try_wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`try_wait_for`], panicking on time-out (for tests).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match try_wait_for(what, timeout, probe).await {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    }
}

/// A fresh directory under the system temp dir for one test's or run's files.
pub fn scratch_dir(label: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir()
        .join("tea-harness")
        .join(format!("{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Pids of the live processes whose command line holds `marker` (a zombie's is empty): how a
/// test finds the processes of a job it gave a marker argument.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// Whether a process with this pid exists and has not exited (a zombie has): the product's
/// own check, [`tea_runtime::procfs::is_alive`], without a start time.
pub fn pid_alive(pid: u32) -> bool {
    tea_runtime::procfs::is_alive(pid, None)
}
