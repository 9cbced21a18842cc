//! Support for the end-to-end tests: the shared harness (dev server, processes, waiting with
//! deadlines) plus what only the tests need: the project's binaries, and runs.

pub mod run;

use std::path::PathBuf;

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
