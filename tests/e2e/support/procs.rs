//! Running the project's binaries as real processes with their output in log files.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::process::{Child, Command};

/// Environment every spawned process starts from: ours minus Temporal, DigitalOcean and log
/// settings, so only what a test sets configures it.
fn clean_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| {
            !(k.starts_with("TEMPORAL_")
                || k.starts_with("DIGITALOCEAN_")
                || k.starts_with("LOCAL_")
                || k == "RUST_LOG"
                || k == "LOG_LEVEL"
                || k == "COMPUTE_PROVIDER"
                || k == "EXTERNAL_WORKER_BIN")
        })
        .collect()
}

/// Builder for a [`Proc`].
pub struct ProcBuilder {
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    log: PathBuf,
}

impl ProcBuilder {
    pub fn new(program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: clean_env(),
            log: log.into(),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }

    pub fn spawn(self) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("process log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", self.program.display()));
        Proc {
            child,
            log: self.log,
        }
    }
}

/// A running process whose stdout and stderr go to `log`; killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn output(&self) -> String {
        read(&self.log)
    }

    /// Waits for the process to exit, failing the test after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for process failed: {e}"),
            Err(_) => panic!(
                "process did not exit within {timeout:?}; its output:\n{}",
                self.output()
            ),
        }
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
