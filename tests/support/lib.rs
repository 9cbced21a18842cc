//! Support for the end-to-end tests: the shared harness (dev server, processes, waiting with
//! deadlines) plus what only the tests need: the project's binaries, unique names, the
//! workflow-worker's command, start-up errors, runs and their histories.

pub mod history;
pub mod run;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub use tea_harness::{DevServer, Proc, ProcBuilder, pid_alive, processes_with, wait_for};

/// A fresh directory for one test's files (logs, state), kept after the test for debugging.
pub fn test_dir(test: &str) -> PathBuf {
    tea_harness::scratch_dir(test).expect("create a test directory")
}

/// Path of one of the project's binaries (`workflow-worker`, `external-worker`, `starter`):
/// in `TEA_BIN_DIR` when set, else in the target directory this test executable was built in
/// (`cargo test --workspace` builds them there first: each binary's package has an
/// integration test of its own, which makes cargo build the binary).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("TEA_BIN_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            // <target>/<profile>/deps/<test executable>
            let exe = std::env::current_exe().expect("the test executable's path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .map(PathBuf::from)
                .expect("the test executable's target directory")
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{name} not found in {}: run the tests with `cargo test --workspace` (which builds the \
         binaries), or `cargo build --bins` first",
        dir.display()
    );
    path
}

/// `<prefix>-<32 hex digits>`: a name (task queue, workflow ID) no other test or earlier run
/// of this one uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The workflow-worker command on `task_queue` of `server`, polling deployments quickly,
/// logging to `dir/log`; the caller adds its provider's settings.
pub fn workflow_worker(dir: &Path, server: &DevServer, task_queue: &str, log: &str) -> ProcBuilder {
    ProcBuilder::new(bin("workflow-worker"), dir.join(log))
        .env("TEMPORAL_ADDRESS", server.address())
        .env("WORKFLOW_TASK_QUEUE", task_queue)
        .env("DEPLOY_POLL_INITIAL", "100ms")
        .env("DEPLOY_POLL_MAX", "500ms")
}

/// How long a binary given bad configuration may take to exit.
pub const STARTUP_ERROR_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `command`, a binary given bad configuration or input, to its end: it must exit with
/// status 2 within [`STARTUP_ERROR_TIMEOUT`]. Returns its output, for the caller to check
/// that it says what is wrong.
pub async fn startup_error(command: ProcBuilder) -> String {
    let mut process = command.spawn();
    let status = process.wait(STARTUP_ERROR_TIMEOUT).await;
    let output = process.output();
    assert_eq!(status.code(), Some(2), "{output}");
    output
}
