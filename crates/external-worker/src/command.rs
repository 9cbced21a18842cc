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

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    checkpoint::{
        ATTEMPT_ENV, CHECKPOINT_FILE_ENV, Checkpoints, DEFAULT_CHECKPOINT_BYTES, RESUME_FILE_ENV,
        write_resume_file,
    },
    mask::Secrets,
    tree::JobGroup,
};

/// Environment variable naming the file the job may write its progress to.
pub const PROGRESS_FILE_ENV: &str = "TEA_PROGRESS_FILE";
/// Environment variable naming the file the job may write its JSON result to.
pub const RESULT_FILE_ENV: &str = "TEA_RESULT_FILE";

/// The longest output line kept whole; longer lines are cut (and counted in full).
const MAX_LINE_BYTES: usize = 16 * 1024;

/// How long killing what is left of a job may take before the runner gives up on it.
const KILL_CONFIRM: Duration = Duration::from_secs(5);

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
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
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
    fn of(status: ExitStatus) -> Exit {
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

/// Counters and the tail, written by the stream readers.
#[derive(Debug, Default)]
struct Output {
    stdout_lines: u64,
    stderr_lines: u64,
    bytes: u64,
    tail: VecDeque<OutputLine>,
    tail_bytes: usize,
}

impl Output {
    fn push(&mut self, stream: Stream, line: String, raw_len: usize, limit: usize) {
        match stream {
            Stream::Stdout => self.stdout_lines += 1,
            Stream::Stderr => self.stderr_lines += 1,
        }
        self.bytes += raw_len as u64;
        self.tail_bytes += line.len();
        self.tail.push_back(OutputLine { stream, line });
        while self.tail_bytes > limit {
            match self.tail.pop_front() {
                Some(old) => self.tail_bytes -= old.line.len(),
                None => break,
            }
        }
    }
}

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

fn read_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    which: Stream,
    output: Arc<Mutex<Output>>,
    tail_limit: usize,
    secrets: Arc<Secrets>,
    log_line: Arc<impl Fn(Stream, &str) + Send + Sync + 'static>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match read_line_bounded(&mut reader, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(raw_len) => {
                    let cut = buf.len() < raw_len;
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    let text = String::from_utf8_lossy(&buf);
                    let line = if cut {
                        secrets.mask_cut(&text)
                    } else {
                        secrets.mask(&text).into_owned()
                    };
                    log_line(which, &line);
                    output
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(which, line, raw_len, tail_limit);
                }
            }
        }
    })
}

/// Reads one line, keeping at most [`MAX_LINE_BYTES`] of it in `buf`; returns the line's
/// full length in bytes (0 at the end of the stream).
async fn read_line_bounded(
    reader: &mut (impl AsyncBufReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        total += used;
        reader.consume(used);
        if done {
            return Ok(total);
        }
    }
}

fn read_report(path: &Path, secrets: &Secrets) -> Option<JobReport> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() > 4096 {
        return None;
    }
    let mut report: JobReport = serde_json::from_slice(&bytes).ok()?;
    report.fraction = report
        .fraction
        .filter(|f| f.is_finite())
        .map(|f| f.clamp(0.0, 1.0));
    if let Some(message) = &mut report.message {
        *message = secrets.mask(message).into_owned();
    }
    if let Some(message) = &mut report.message
        && message.len() > 512
    {
        let mut end = 512;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    Some(report)
}

fn read_result(
    path: &Path,
    limit: usize,
    secrets: &Secrets,
) -> (Option<serde_json::Value>, Option<String>) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return (None, None);
    };
    if metadata.len() > limit as u64 {
        return (
            None,
            Some(format!(
                "the job's result file is {} bytes, more than the limit of {limit} bytes",
                metadata.len()
            )),
        );
    }
    match std::fs::read(path).map(|bytes| serde_json::from_slice(&bytes)) {
        Ok(Ok(mut value)) => {
            secrets.mask_json(&mut value);
            (Some(value), None)
        }
        Ok(Err(e)) => (
            None,
            Some(format!("the job's result file is not JSON: {e}")),
        ),
        Err(e) => (
            None,
            Some(format!("the job's result file cannot be read: {e}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tea_harness::processes_with;

    fn sh(script: &str) -> CommandSpec {
        CommandSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..Default::default()
        }
    }

    fn quiet(_: Stream, _: &str) {}

    /// Taken for writing by a test that needs its job to be the only one running in this
    /// process, for reading by every other test.
    static ALONE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

    /// The lines of the job's output tail.
    fn tail_lines(finished: &Finished) -> Vec<&str> {
        finished
            .snapshot
            .tail
            .iter()
            .map(|l| l.line.as_str())
            .collect()
    }

    fn no_secrets() -> Arc<Secrets> {
        Arc::default()
    }

    async fn wait_until_it_printed(job: &RunningCommand, lines: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while job.snapshot().stdout_lines < lines {
            assert!(Instant::now() < deadline, "the job never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn exit_code_output_tail_and_counts() {
        let _beside_others = ALONE.read().await;
        let spec = sh("echo one; echo two; echo oops >&2; exit 3");
        let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
        let finished = job.wait().await.unwrap();
        assert_eq!(finished.exit, Exit::Code(3));
        assert_eq!(finished.snapshot.stdout_lines, 2);
        assert_eq!(finished.snapshot.stderr_lines, 1);
        assert_eq!(finished.stderr_tail(), ["oops"]);
        assert_eq!(finished.snapshot.output_bytes, 13);
        assert_eq!(finished.exit.to_string(), "exit code 3");
    }

    #[tokio::test]
    async fn the_tail_is_bounded_and_keeps_the_last_lines() {
        let _beside_others = ALONE.read().await;
        let spec = sh("i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done");
        let limits = Limits {
            tail_bytes: 100,
            ..Limits::default()
        };
        let mut job = RunningCommand::spawn(&spec, limits, no_secrets(), quiet).unwrap();
        let finished = job.wait().await.unwrap();
        assert_eq!(finished.snapshot.stdout_lines, 2000);
        let tail = &finished.snapshot.tail;
        assert_eq!(tail.last().unwrap().line, "line-1999");
        assert!(tail.iter().map(|l| l.line.len()).sum::<usize>() <= 100);
    }

    #[tokio::test]
    async fn progress_and_result_files_reach_the_runner() {
        let _beside_others = ALONE.read().await;
        let spec = sh(
            r#"echo '{"fraction":0.5,"message":"half"}' > "$TEA_PROGRESS_FILE"; echo '{"rows":42}' > "$TEA_RESULT_FILE""#,
        );
        let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
        let finished = job.wait().await.unwrap();
        assert!(finished.exit.success());
        let report = finished.snapshot.report.expect("progress");
        assert_eq!(report.fraction, Some(0.5));
        assert_eq!(report.message.as_deref(), Some("half"));
        assert_eq!(finished.result, Some(serde_json::json!({"rows": 42})));
    }

    #[tokio::test]
    async fn a_resumed_job_gets_its_checkpoint_and_attempt_and_its_new_checkpoint_is_taken() {
        let _beside_others = ALONE.read().await;
        let spec = CommandSpec {
            attempt: Some(2),
            resume: Some(serde_json::json!({"count": 40})),
            ..sh(
                r#"echo "attempt=$TEA_ATTEMPT resume=$(cat "$TEA_RESUME_FILE")"
                echo '{"count": 41}' > "$TEA_CHECKPOINT_FILE.tmp"
                mv "$TEA_CHECKPOINT_FILE.tmp" "$TEA_CHECKPOINT_FILE""#,
            )
        };
        let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
        // Before the job wrote one, the checkpoint is the one it resumes from.
        assert_eq!(
            job.snapshot().checkpoint,
            Some(serde_json::json!({"count": 40}))
        );
        let finished = job.wait().await.unwrap();
        assert!(finished.exit.success());
        assert_eq!(tail_lines(&finished), [r#"attempt=2 resume={"count":40}"#]);
        assert_eq!(
            finished.snapshot.checkpoint,
            Some(serde_json::json!({"count": 41}))
        );
        assert_eq!(finished.snapshot.checkpoint_error, None);
    }

    #[tokio::test]
    async fn without_a_checkpoint_to_resume_from_the_resume_file_is_not_set() {
        let _beside_others = ALONE.read().await;
        let spec = CommandSpec {
            attempt: Some(1),
            ..sh(r#"echo "attempt=$TEA_ATTEMPT resume=${TEA_RESUME_FILE:-unset}""#)
        };
        let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
        let finished = job.wait().await.unwrap();
        assert_eq!(tail_lines(&finished), ["attempt=1 resume=unset"]);
        assert_eq!(finished.snapshot.checkpoint, None);
    }

    #[tokio::test]
    async fn an_oversized_result_is_refused_naming_the_limit() {
        let _beside_others = ALONE.read().await;
        let spec = sh(r#"head -c 2000 /dev/zero | tr '\0' 'a' > "$TEA_RESULT_FILE""#);
        let limits = Limits {
            result_bytes: 1000,
            ..Limits::default()
        };
        let mut job = RunningCommand::spawn(&spec, limits, no_secrets(), quiet).unwrap();
        let finished = job.wait().await.unwrap();
        assert_eq!(finished.result, None);
        assert!(
            finished
                .result_error
                .as_deref()
                .unwrap()
                .contains("limit of 1000"),
            "{:?}",
            finished.result_error
        );
    }

    #[tokio::test]
    async fn the_workers_temporal_credentials_do_not_reach_the_job() {
        let _beside_others = ALONE.read().await;
        // SAFETY: set before any thread of this test reads the environment concurrently.
        unsafe { std::env::set_var("TEMPORAL_API_KEY", "worker-k3y") };
        let spec = CommandSpec {
            env: vec![("JOB_VAR".into(), "x".into())],
            ..sh(r#"echo "key=${TEMPORAL_API_KEY:-none} job=$JOB_VAR""#)
        };
        let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
        let finished = job.wait().await.unwrap();
        assert_eq!(finished.snapshot.tail[0].line, "key=none job=x");
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let _beside_others = ALONE.read().await;
        let spec = CommandSpec {
            argv: vec!["no-such-program-tea".into()],
            ..Default::default()
        };
        let err = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet)
            .err()
            .expect("spawn fails");
        assert!(matches!(err, SpawnError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("no-such-program-tea"));
    }

    #[tokio::test]
    async fn stop_kills_a_group_that_ignores_sigterm_after_the_grace_period() {
        let _beside_others = ALONE.read().await;
        // The shell ignores SIGTERM, and so does its background child.
        let spec = sh("trap '' TERM; sleep 600 & echo started; wait");
        let limits = Limits {
            kill_grace: Duration::from_millis(300),
            ..Limits::default()
        };
        let mut job = RunningCommand::spawn(&spec, limits, no_secrets(), quiet).unwrap();
        let pgid = job.pgid().expect("pgid");
        wait_until_it_printed(&job, 1).await;
        let started = Instant::now();
        let finished = job.stop().await.unwrap();
        assert_eq!(finished.exit, Exit::Signal(Signal::SIGKILL as i32));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(finished.exit.to_string().contains("SIGKILL"));
        // No process of the group is left.
        let deadline = Instant::now() + Duration::from_secs(5);
        while nix::sys::signal::killpg(pgid, None).is_ok() {
            assert!(
                Instant::now() < deadline,
                "a process of the job's group survived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn every_process_of_the_job_goes_even_those_that_left_its_group_or_session() {
        let _beside_others = ALONE.read().await;
        let marker = format!("tea-tree-{}", uuid::Uuid::new_v4().simple());
        // A child in the group ignoring SIGTERM, one in a group of its own, one in a session
        // of its own (each a shell loop whose command line carries the marker).
        let looping = format!("sh -c 'trap \"\" TERM; while :; do sleep 1; done' {marker}");
        let spec = sh(&format!(
            "{looping} & setsid {looping} & perl -e 'setpgrp(0,0); exec @ARGV' {looping} & \
             echo started; wait"
        ));
        let limits = Limits {
            kill_grace: Duration::from_millis(300),
            ..Limits::default()
        };
        let mut job = RunningCommand::spawn(&spec, limits, no_secrets(), quiet).unwrap();
        wait_until_it_printed(&job, 1).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_with(&marker).len() < 3 {
            assert!(
                Instant::now() < deadline,
                "the job's processes never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let finished = job.stop().await.unwrap();
        // The first process did not trap SIGTERM: it ended by it, the rest was killed.
        assert_eq!(finished.exit, Exit::Signal(Signal::SIGTERM as i32));
        assert_eq!(processes_with(&marker), Vec::<u32>::new());
    }

    #[tokio::test]
    async fn what_a_job_leaves_running_is_killed_when_it_ends() {
        // The job's orphan is told from another job's only while no other job runs.
        let _alone = ALONE.write().await;
        // As the worker runs: its orphans come to it instead of init.
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let marker = format!("tea-left-{}", uuid::Uuid::new_v4().simple());
        let spec = sh(&format!(
            "setsid sh -c 'while :; do sleep 1; done' {marker} & echo done"
        ));
        let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
        let finished = job.wait().await.unwrap();
        assert!(finished.exit.success());
        assert_eq!(processes_with(&marker), Vec::<u32>::new());
    }

    #[tokio::test]
    async fn a_missing_working_directory_is_named_before_anything_runs() {
        let _beside_others = ALONE.read().await;
        let missing = std::env::temp_dir().join(format!("tea-no-dir-{}", uuid::Uuid::new_v4()));
        let spec = CommandSpec {
            workdir: Some(missing.clone()),
            ..sh("true")
        };
        let err = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet)
            .err()
            .expect("spawn fails");
        assert!(matches!(err, SpawnError::WorkdirMissing { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("working directory {} does not exist", missing.display())
        );
        let file = std::env::current_exe().unwrap();
        let spec = CommandSpec {
            workdir: Some(file.clone()),
            ..sh("true")
        };
        let err = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet)
            .err()
            .expect("spawn fails");
        assert_eq!(
            err.to_string(),
            format!("working directory {} is not a directory", file.display())
        );
    }

    #[tokio::test]
    async fn secrets_are_masked_in_the_log_the_tail_progress_and_result() {
        let _beside_others = ALONE.read().await;
        let secret = "pa55-w0rd-of-the-job";
        let secrets = Arc::new(Secrets::new([secret]));
        let limits = Limits {
            tail_bytes: 2 * MAX_LINE_BYTES,
            ..Limits::default()
        };
        let logged = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = Arc::clone(&logged);
        let long = "x".repeat(MAX_LINE_BYTES - 8);
        let spec = CommandSpec {
            env: vec![("THE_SECRET".into(), secret.into())],
            ..sh(&format!(
                r#"echo "out $THE_SECRET"; echo "err $THE_SECRET" >&2; echo "{long}$THE_SECRET";
                   echo "{{\"message\":\"at $THE_SECRET\"}}" > "$TEA_PROGRESS_FILE";
                   echo "{{\"token\":\"$THE_SECRET\"}}" > "$TEA_RESULT_FILE""#
            ))
        };
        let mut job = RunningCommand::spawn(&spec, limits, secrets, move |_, line| {
            log.lock().unwrap().push(line.to_owned())
        })
        .unwrap();
        let finished = job.wait().await.unwrap();
        assert!(finished.exit.success());
        let text = format!("{finished:?} {:?}", logged.lock().unwrap());
        assert!(!text.contains("pa55"), "{text}");
        let lines = tail_lines(&finished);
        assert!(lines.contains(&"out ***"), "{lines:?}");
        assert_eq!(finished.stderr_tail(), ["err ***"]);
        // Cut at the line limit in the middle of the secret: its start is masked.
        assert!(lines.contains(&format!("{long}***").as_str()));
        assert_eq!(
            finished.snapshot.report.and_then(|r| r.message).as_deref(),
            Some("at ***")
        );
        assert_eq!(finished.result, Some(serde_json::json!({"token": "***"})));
    }

    #[tokio::test]
    async fn every_process_of_the_job_has_the_grace_period_to_end_on_sigterm() {
        let _beside_others = ALONE.read().await;
        // The first process ends at once; its child cleans up for a while first.
        let spec = sh(
            "sh -c 'trap \"sleep 0.3; echo cleaned; exit 0\" TERM; while :; do sleep 0.05; done' & \
             echo started; wait",
        );
        let limits = Limits {
            kill_grace: Duration::from_secs(10),
            ..Limits::default()
        };
        let mut job = RunningCommand::spawn(&spec, limits, no_secrets(), quiet).unwrap();
        wait_until_it_printed(&job, 1).await;
        let finished = job.stop().await.unwrap();
        let lines = tail_lines(&finished);
        assert_eq!(lines.last(), Some(&"cleaned"), "{lines:?}");
    }
}
