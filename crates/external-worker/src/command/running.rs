//! The job's process: started in a process group of its own (without the worker's Temporal
//! credentials, with the progress, result, checkpoint and resume files in a directory of its
//! own, killed with the worker), stopped with a grace period that reaches every process of the job, and finished by
//! collecting what it left.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    process::{Child, Command},
    task::JoinHandle,
    time::Instant,
};

use super::{
    CommandSpec, Exit, Finished, Limits, PROGRESS_FILE_ENV, RESULT_FILE_ENV, Snapshot, SpawnError,
    Stream,
    output::{Output, read_lines, read_report, read_result},
};
use crate::{
    checkpoint::{
        ATTEMPT_ENV, CHECKPOINT_FILE_ENV, Checkpoints, RESUME_FILE_ENV, write_resume_file,
    },
    mask::Secrets,
    tree::JobGroup,
};

/// How long killing what is left of a job may take before the runner gives up on it.
const KILL_CONFIRM: Duration = Duration::from_secs(5);

/// A started command.
pub struct RunningCommand {
    child: Child,
    /// The job's process group; every process of the job is killed when this is dropped.
    group: Option<JobGroup>,
    secrets: Arc<Secrets>,
    started: Instant,
    output: Arc<Mutex<Output>>,
    readers: Vec<JoinHandle<()>>,
    files: JobFiles,
    checkpoints: Mutex<Checkpoints>,
    limits: Limits,
}

/// The job's own directory with its progress, result, checkpoint and resume files; removed
/// when dropped.
struct JobFiles {
    dir: PathBuf,
}

impl JobFiles {
    fn create() -> std::io::Result<JobFiles> {
        let dir = std::env::temp_dir().join(format!("tea-job-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(JobFiles { dir })
    }
    fn progress(&self) -> PathBuf {
        self.dir.join("progress.json")
    }
    fn result(&self) -> PathBuf {
        self.dir.join("result.json")
    }
    fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.json")
    }
    fn resume(&self) -> PathBuf {
        self.dir.join("resume.json")
    }
}

impl Drop for JobFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RunningCommand {
    /// Starts `spec` in a process group of its own; each output line, its secrets masked, goes
    /// to `log_line` (and is counted and kept in the tail).
    pub fn spawn(
        spec: &CommandSpec,
        limits: Limits,
        secrets: Arc<Secrets>,
        log_line: impl Fn(Stream, &str) + Send + Sync + 'static,
    ) -> Result<RunningCommand, SpawnError> {
        let Some(program) = spec.argv.first() else {
            return Err(SpawnError::Empty);
        };
        if let Some(dir) = &spec.workdir {
            check_workdir(dir)?;
        }
        let files = JobFiles::create()
            .and_then(|files| {
                if let Some(resume) = &spec.resume {
                    write_resume_file(&files.resume(), resume)?;
                }
                Ok(files)
            })
            .map_err(|source| SpawnError::Other {
                program: program.clone(),
                source,
            })?;
        let mut command = Command::new(program);
        for (key, _) in std::env::vars_os() {
            let bytes = key.as_encoded_bytes();
            if bytes.starts_with(b"TEMPORAL_") || bytes.starts_with(b"TEA_") {
                command.env_remove(&key);
            }
        }
        command
            .args(&spec.argv[1..])
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(PROGRESS_FILE_ENV, files.progress())
            .env(RESULT_FILE_ENV, files.result())
            .env(CHECKPOINT_FILE_ENV, files.checkpoint())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &spec.workdir {
            command.current_dir(dir);
        }
        if let Some(attempt) = spec.attempt {
            command.env(ATTEMPT_ENV, attempt.to_string());
        }
        if spec.resume.is_some() {
            command.env(RESUME_FILE_ENV, files.resume());
        }
        // SAFETY: the closure runs in the forked child before exec and only makes one
        // async-signal-safe system call (prctl).
        unsafe {
            // If this worker dies without stopping the job (SIGKILL), the job's process gets
            // SIGKILL too instead of running on for nobody.
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let (mut child, group) =
            JobGroup::spawn(|| command.spawn(), Child::id).map_err(|source| {
                match source.kind() {
                    std::io::ErrorKind::NotFound => SpawnError::NotFound {
                        program: program.clone(),
                    },
                    _ => SpawnError::Other {
                        program: program.clone(),
                        source,
                    },
                }
            })?;
        let output = Arc::new(Mutex::new(Output::default()));
        let log_line = Arc::new(log_line);
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(read_lines(
                stdout,
                Stream::Stdout,
                Arc::clone(&output),
                limits.tail_bytes,
                Arc::clone(&secrets),
                Arc::clone(&log_line),
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(read_lines(
                stderr,
                Stream::Stderr,
                Arc::clone(&output),
                limits.tail_bytes,
                Arc::clone(&secrets),
                log_line,
            ));
        }
        let checkpoints = Mutex::new(Checkpoints::new(
            files.checkpoint(),
            limits.checkpoint_bytes,
            Arc::clone(&secrets),
            spec.resume.clone(),
        ));
        Ok(RunningCommand {
            child,
            group,
            secrets,
            started: Instant::now(),
            output,
            readers,
            checkpoints,
            files,
            limits,
        })
    }

    /// Where the job is now.
    pub fn snapshot(&self) -> Snapshot {
        let (checkpoint, checkpoint_error) = self
            .checkpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refresh();
        let output = self.output.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            elapsed: self.started.elapsed(),
            stdout_lines: output.stdout_lines,
            stderr_lines: output.stderr_lines,
            output_bytes: output.bytes,
            tail: output.tail.iter().cloned().collect(),
            report: read_report(&self.files.progress(), &self.secrets),
            checkpoint,
            checkpoint_error,
        }
    }

    /// Waits for the job to end by itself.
    pub async fn wait(&mut self) -> std::io::Result<Finished> {
        let status = self.exited().await?;
        Ok(self.finish(status).await)
    }

    /// Resolves when the job's process has exited. Cancel-safe (unlike [`Self::wait`]): use it
    /// in `select!`, then [`Self::finish`].
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops the job: SIGTERM to each of its processes, which have the grace period to end
    /// (all of them, not only the first), then SIGKILL to whatever is left; returns once its
    /// first process has exited, no process of the job is left and its output is read.
    pub async fn stop(&mut self) -> std::io::Result<Finished> {
        let deadline = Instant::now() + self.limits.kill_grace;
        if let Some(group) = &self.group {
            group.signal(Signal::SIGTERM);
        }
        let status = match tokio::time::timeout_at(deadline, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                tracing::warn!(grace = ?self.limits.kill_grace, "job ignored SIGTERM; SIGKILL");
                if let Some(group) = &self.group {
                    group.signal(Signal::SIGKILL);
                }
                self.child.wait().await?
            }
        };
        if let Some(group) = &self.group
            && !group.ended_by(deadline).await
        {
            tracing::warn!(grace = ?self.limits.kill_grace, "processes of the job ignored SIGTERM; SIGKILL");
        }
        Ok(self.finish(status).await)
    }

    /// The job's process group (its first process's pid).
    pub fn pgid(&self) -> Option<Pid> {
        self.group.as_ref().map(JobGroup::pgid)
    }

    /// Collects what the job left once its process has exited: the rest of its output, its
    /// result file. Whatever is left of the job (a background process, one that ignored
    /// SIGTERM, one that left the group) is killed first: the job is over.
    pub async fn finish(&mut self, status: ExitStatus) -> Finished {
        if let Some(group) = &self.group {
            let left = group.kill(KILL_CONFIRM).await;
            if left > 0 {
                tracing::warn!(left, "processes of the job survived SIGKILL");
            }
        }
        // The readers end when every writer of the pipes is gone; a process that keeps them
        // open (one that could not be killed) must not hold the job forever.
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        let (result, result_error) = read_result(
            &self.files.result(),
            self.limits.result_bytes,
            &self.secrets,
        );
        Finished {
            exit: Exit::of(status),
            snapshot: self.snapshot(),
            result,
            result_error,
        }
    }
}

/// Fails when `dir` is not a directory the job can start in, naming it.
fn check_workdir(dir: &Path) -> Result<(), SpawnError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(SpawnError::WorkdirNotADirectory {
            path: dir.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SpawnError::WorkdirMissing {
            path: dir.to_owned(),
        }),
        Err(source) => Err(SpawnError::WorkdirUnusable {
            path: dir.to_owned(),
            source,
        }),
    }
}
