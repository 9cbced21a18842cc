//! Test support: the shared harness (dev server, processes, waiting with deadlines) plus what
//! only the tests need: the binaries cargo built for them, and runs.

pub mod run;

use std::path::PathBuf;

pub use tea_harness::{DevServer, Proc, ProcBuilder, pid_alive, wait_for};

/// A fresh directory for one test's files (logs, state), kept after the test for debugging.
pub fn test_dir(test: &str) -> PathBuf {
    tea_harness::scratch_dir(test).expect("create a test directory")
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
