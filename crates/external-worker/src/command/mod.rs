//! Running the user's command on the compute: a child process in its own process group, its
//! stdout and stderr streamed line by line to this worker's log (so the provider's log store
//! has the whole output) and counted, a bounded tail of the output kept for heartbeats and the
//! result, the job's own progress and JSON result read from files it writes, secrets masked in
//! all of it ([`crate::mask`]), and a stop that reaches every process of the job
//! ([`crate::tree`]).
//!
//! The channel a job reports through is language-neutral: the runner sets
//! [`PROGRESS_FILE_ENV`] and [`RESULT_FILE_ENV`] to paths in a directory of the job's own. The
//! job may (re)write the progress file at any time with `{"fraction": 0.4, "message": "..."}`
//! (both optional) and write its result file once with any JSON value, at most
//! [`Limits::result_bytes`]. Its checkpoint file and the one it resumes from are the
//! [`crate::checkpoint`] channel's.
//!
//! Here: what a job is given and what it leaves. Beside it: `running.rs` (starting, stopping
//! and finishing the job's process) and `output.rs` (its output streams, progress and result
//! files).

mod output;
mod running;
#[cfg(test)]
mod tests;

use std::{path::PathBuf, process::ExitStatus, time::Duration};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

pub use running::RunningCommand;

/// Environment variable naming the file the job may write its progress to.
pub const PROGRESS_FILE_ENV: &str = "TEA_PROGRESS_FILE";
/// Environment variable naming the file the job may write its JSON result to.
pub const RESULT_FILE_ENV: &str = "TEA_RESULT_FILE";

/// What to run. The job inherits the worker's environment (so secrets given to the compute
/// reach it) except the worker's own Temporal connection (`TEMPORAL_*`, `TEA_*`: the API key
/// and client key are the worker's credentials, not the job's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandSpec {
    /// Program and arguments; no shell is involved.
    pub argv: Vec<String>,
    /// Variables added to the worker's environment (secrets included: never logged).
    pub env: Vec<(String, String)>,
    /// Working directory; the worker's own when `None`.
    pub workdir: Option<PathBuf>,
    /// The run's compute attempt, given to the job as `TEA_ATTEMPT`.
    pub attempt: Option<u32>,
    /// The checkpoint to resume from, given to the job in its `TEA_RESUME_FILE`.
    pub resume: Option<serde_json::Value>,
}

/// Bounds on what the runner keeps.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of output kept as the tail (the last whole lines within it).
    pub tail_bytes: usize,
    /// Largest result file accepted.
    pub result_bytes: usize,
    /// How long the job has between SIGTERM and SIGKILL when it is stopped.
    pub kill_grace: Duration,
    /// Largest checkpoint sent.
    pub checkpoint_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            tail_bytes: 4 * 1024,
            result_bytes: 64 * 1024,
            kill_grace: Duration::from_secs(10),
            checkpoint_bytes: crate::checkpoint::DEFAULT_CHECKPOINT_BYTES,
        }
    }
}

/// Progress the job reported about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of output in the tail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    pub stream: Stream,
    pub line: String,
}

/// Where the job is, for heartbeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub stdout_lines: u64,
    pub stderr_lines: u64,
    pub output_bytes: u64,
    /// The last lines of output, at most [`Limits::tail_bytes`] in all.
    pub tail: Vec<OutputLine>,
    /// What the job last wrote to its progress file, if anything readable.
    pub report: Option<JobReport>,
    /// The job's last checkpoint taken (or the one it resumed from).
    pub checkpoint: Option<serde_json::Value>,
    /// Why the checkpoint file as it is now was not taken.
    pub checkpoint_error: Option<String>,
}

/// How the job's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub(crate) fn of(status: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(-1),
        }
    }

    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(signal) => {
                let name = Signal::try_from(signal)
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|_| format!("signal {signal}"));
                write!(f, "killed by {name}")?;
                if signal == Signal::SIGKILL as i32 {
                    f.write_str(" (often the kernel's out-of-memory killer)")?;
                }
                Ok(())
            }
        }
    }
}

/// How the job ended, with what it left.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub exit: Exit,
    pub snapshot: Snapshot,
    /// The job's JSON result, when it wrote a valid one within the limit.
    pub result: Option<serde_json::Value>,
    /// Why a result file that exists was not taken (too large, not JSON).
    pub result_error: Option<String>,
}

impl Finished {
    /// The last lines the job wrote to stderr, for a failure's message.
    pub fn stderr_tail(&self) -> Vec<&str> {
        self.snapshot
            .tail
            .iter()
            .filter(|l| l.stream == Stream::Stderr)
            .map(|l| l.line.as_str())
            .collect()
    }
}

/// Why the command could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no command was given")]
    Empty,
    #[error("working directory {} does not exist", path.display())]
    WorkdirMissing { path: PathBuf },
    #[error("working directory {} is not a directory", path.display())]
    WorkdirNotADirectory { path: PathBuf },
    #[error("working directory {} cannot be used: {source}", path.display())]
    WorkdirUnusable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("program {program:?} was not found (not a path to a file, nor on PATH)")]
    NotFound { program: String },
    #[error("program {program:?} cannot be run: {source}")]
    Other {
        program: String,
        #[source]
        source: std::io::Error,
    },
}
