//! Running the project's binaries as real processes with their output in log files.
//!
//! Every process starts from this process's environment minus the Temporal, DigitalOcean and
//! provider settings, so only what the caller sets configures it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::Context;
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

    /// Starts the process; panics when it cannot (tests).
    pub fn spawn(self) -> Proc {
        let program = self.program.display().to_string();
        self.try_spawn()
            .unwrap_or_else(|e| panic!("could not start {program}: {e:#}"))
    }

    /// Starts the process.
    pub fn try_spawn(self) -> anyhow::Result<Proc> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        Ok(Proc {
            child,
            log: self.log,
        })
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
        match self.try_wait(timeout).await {
            Ok(status) => status,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn try_wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(anyhow::anyhow!("waiting for the process failed: {e}")),
            Err(_) => Err(anyhow::anyhow!(
                "process did not exit within {timeout:?}; its output:\n{}",
                self.output()
            )),
        }
    }

    /// The pid while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
