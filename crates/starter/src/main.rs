//! `starter`: starts one `TriggerExternalWorkflow` run (`starter [OPTIONS] -- <program>
//! [args...]` runs that command as the job), prints its IDs and UI link, shows its progress
//! while it runs and prints how it ended; `starter status <id>` reports on a run, `starter
//! logs <id> [--follow]` prints the job's output known to it.
//! Exit status: 0 completed, 1 the job or the run failed, 2 bad input, 3 cancelled or
//! terminated, 130 stopped waiting on Ctrl-C (the run goes on).

use tea_runtime::cli::LogArgs;

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use tea_contract::{GoDuration, WORKFLOW_TASK_QUEUE, WorkflowInput};
use tea_starter::RunEnd;

/// Start a run of the external-activity workflow. Connects with the standard Temporal client
/// environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS, profiles).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Container registry holding the external worker image.
    #[arg(long, env = "IMAGE_REGISTRY", default_value = "sje-test-registry")]
    registry: String,
    /// Repository of the external worker image.
    #[arg(long, env = "IMAGE_REPOSITORY", default_value = "external")]
    repository: String,
    /// Tag of the external worker image.
    #[arg(long, env = "IMAGE_TAG", default_value = "latest")]
    tag: String,
    /// How long the external job runs (e.g. 500ms, 2s, 1m). Default 1m.
    #[arg(long, env = "JOB_DURATION")]
    job_duration: Option<GoDuration>,
    /// Pause before provisioning and after the job. Default 5s.
    #[arg(long, env = "PAUSE_DURATION")]
    pause: Option<GoDuration>,
    /// Heartbeat timeout of every activity. Default 10s.
    #[arg(long, env = "HEARTBEAT_TIMEOUT")]
    heartbeat_timeout: Option<GoDuration>,
    /// How long the job may wait for a worker on its queue before the run tears down. Default 5m.
    #[arg(long, env = "WORKER_START_TIMEOUT")]
    worker_start_timeout: Option<GoDuration>,
    /// Compute a run may provision in turn when a worker dies or never comes up (1-9).
    #[arg(long, env = "MAX_COMPUTE_ATTEMPTS")]
    max_compute_attempts: Option<u32>,
    /// Workflow ID (default: external-activity-<uuid>).
    #[arg(long = "id", env = "WORKFLOW_ID")]
    workflow_id: Option<String>,
    /// Task queue of the workflow-worker.
    #[arg(long, env = "WORKFLOW_TASK_QUEUE", default_value = WORKFLOW_TASK_QUEUE)]
    task_queue: String,
    /// Print the IDs and exit without waiting for the result.
    #[arg(long, conflicts_with = "wait")]
    no_wait: bool,
    /// Wait for the result, showing progress (the default).
    #[arg(long)]
    wait: bool,
    /// On Ctrl-C, cancel the run and wait for its teardown (else only stop waiting).
    #[arg(long, env = "CANCEL_ON_INTERRUPT")]
    cancel_on_interrupt: bool,
    /// Base URL of the Temporal Web UI for the printed link.
    #[arg(long, env = "TEMPORAL_UI_URL")]
    ui_url: Option<String>,
    /// A variable for the job, `KEY=VALUE` (repeatable). NOT secret: it is stored in the
    /// workflow's history; pass secrets with the workflow-worker's JOB_SECRET_ENV.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    job_env: Vec<(String, String)>,
    /// The job's working directory on the compute.
    #[arg(long)]
    workdir: Option<String>,
    /// Run your own activity on the compute instead of a command: its activity type name, as
    /// the worker in the run's image registers it (see docs/own-activity.md).
    #[arg(long, conflicts_with_all = ["job", "job_env", "workdir", "job_duration"])]
    activity: Option<String>,
    /// An argument of the activity, as JSON (repeatable, in order): `--arg '"World"' --arg 2`.
    #[arg(long = "arg", value_name = "JSON", requires = "activity", value_parser = parse_json)]
    activity_args: Vec<serde_json::Value>,
    /// The activity's start-to-close timeout per attempt. Default 24h.
    #[arg(long, requires = "activity")]
    activity_start_to_close: Option<GoDuration>,
    /// Attempts of the activity on its unit (1-100). Default 1.
    #[arg(long, requires = "activity")]
    activity_max_attempts: Option<u32>,
    /// Give the activity where to resume on fresh compute, as one extra, last argument: the
    /// first heartbeat detail its lost unit last recorded, or null (see docs/own-activity.md).
    #[arg(long, requires = "activity")]
    activity_resume: bool,
    /// CPUs the run's unit of compute gets (fractional allowed: 0.5).
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory the run's unit gets: bytes, or with a unit (`512MiB`, `2GiB`, `1.5GB`).
    #[arg(long)]
    memory: Option<String>,
    /// GPUs the run's unit gets.
    #[arg(long)]
    gpu: Option<u32>,
    /// The provider's own size for the run's unit (an App Platform instance size slug).
    #[arg(long)]
    size: Option<String>,
    /// Print how the run ended as JSON, the job's result whole (the IDs and the UI link go to
    /// stderr).
    #[arg(long, conflicts_with = "no_wait")]
    json: bool,
    #[command(flatten)]
    log: LogArgs,
    /// The job to run on the compute, after `--`: program and arguments (no shell). Without
    /// it the job is the original's timed `long-running-command`.
    #[arg(last = true, value_name = "PROGRAM [ARGS]")]
    job: Vec<String>,
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text)
        .map_err(|e| format!("not JSON ({e}); a string argument is quoted: '\"World\"'"))
}

/// The run's `resources` from `--cpu`, `--memory`, `--gpu` and `--size`, checked as the
/// workflow checks them.
fn resources(args: &Args) -> Result<Option<tea_contract::Resources>, String> {
    let mut asked = serde_json::Map::new();
    if let Some(cpu) = args.cpu {
        asked.insert("cpu".into(), cpu.into());
    }
    if let Some(memory) = &args.memory {
        let memory = match memory.trim().parse::<u64>() {
            Ok(bytes) => bytes.into(),
            Err(_) => memory.clone().into(),
        };
        asked.insert("memory".into(), memory);
    }
    if let Some(gpu) = args.gpu {
        asked.insert("gpu".into(), gpu.into());
    }
    if let Some(size) = &args.size {
        asked.insert("size".into(), size.clone().into());
    }
    if asked.is_empty() {
        return Ok(None);
    }
    tea_contract::Resources::from_json(&asked.into()).map(Some)
}

fn parse_env_pair(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {pair:?}"))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what a run is doing: phase, compute, deployment, job progress.
    Status {
        /// The run's workflow ID.
        workflow_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the job's output known to the run (its last lines; the full output is in the
    /// external worker's log).
    Logs {
        /// The run's workflow ID.
        workflow_id: String,
        /// Keep printing new lines until the run closes.
        #[arg(long, short)]
        follow: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(code) = args.log.init("starter") {
        return code;
    }
    let subcommand = match &args.command {
        Some(Command::Status { workflow_id, json }) => Some(status(workflow_id, *json).await),
        Some(Command::Logs {
            workflow_id,
            follow,
        }) => Some(logs(workflow_id, *follow).await),
        None => None,
    };
    if let Some(result) = subcommand {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("starter: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let input = WorkflowInput {
        registry: args.registry.clone(),
        repository: args.repository.clone(),
        tag: args.tag.clone(),
        job_duration: args.job_duration,
        pause: args.pause,
        heartbeat_timeout: args.heartbeat_timeout,
        worker_start_timeout: args.worker_start_timeout,
        max_compute_attempts: args.max_compute_attempts,
        command: (!args.job.is_empty()).then(|| args.job.clone()),
        env: (!args.job_env.is_empty()).then(|| args.job_env.iter().cloned().collect()),
        workdir: args.workdir.clone(),
        activity: args.activity.clone(),
        activity_args: (!args.activity_args.is_empty()).then(|| args.activity_args.clone()),
        activity_start_to_close: args.activity_start_to_close,
        activity_max_attempts: args.activity_max_attempts,
        activity_resume: args.activity_resume.then_some(true),
        resources: match resources(&args) {
            Ok(resources) => resources,
            Err(e) => {
                eprintln!("starter: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if let Err(e) = input.validate() {
        eprintln!("starter: {e}");
        return ExitCode::from(2);
    }
    match run(args, input).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("starter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, input: WorkflowInput) -> anyhow::Result<u8> {
    let (client, conn) = tea_runtime::connect().await?;
    let workflow_id = args
        .workflow_id
        .clone()
        .unwrap_or_else(|| format!("external-activity-{}", uuid::Uuid::new_v4()));
    let handle = tea_starter::start(&client, &args.task_queue, &workflow_id, input).await?;
    let started = format!(
        "Started workflow: WorkflowID {} RunID {}\nTemporal UI: {}",
        handle.info().workflow_id,
        handle.info().run_id.as_deref().unwrap_or(""),
        tea_starter::ui_link(
            &conn.address,
            &conn.namespace,
            &workflow_id,
            args.ui_url.as_deref()
        )
    );
    match args.json {
        true => eprintln!("{started}"),
        false => println!("{started}"),
    }
    if args.no_wait {
        return Ok(0);
    }
    let progress = show_progress(&client, &workflow_id, args.json);
    tokio::pin!(progress);
    let waiting = tea_starter::wait(&handle);
    tokio::pin!(waiting);
    let end = tokio::select! {
        end = &mut waiting => end?,
        _ = &mut progress => unreachable_progress(),
        _ = tokio::signal::ctrl_c() => {
            clear_line();
            if !args.cancel_on_interrupt {
                println!("Stopped waiting; the run goes on: starter status {workflow_id}");
                return Ok(130);
            }
            println!("Cancelling the run and waiting for its teardown...");
            handle
                .cancel(temporalio_client::WorkflowCancelOptions::builder().reason("starter interrupted").build())
                .await
                .map_err(|e| anyhow::anyhow!("could not cancel the run: {e}"))?;
            tokio::select! {
                end = &mut waiting => end?,
                _ = &mut progress => unreachable_progress(),
            }
        }
    };
    clear_line();
    // What the job did, measured; a history that cannot be read leaves only the end.
    let job_run = tea_starter::summary::job_run(&client, &workflow_id)
        .await
        .unwrap_or_else(|e| {
            eprintln!("starter: {e:#}");
            None
        });
    let outcome = match &end {
        RunEnd::Completed(outcome) => Some(outcome.as_ref()),
        _ => None,
    };
    if args.json {
        let (status, error) = match &end {
            RunEnd::Failed(message) => ("failed", Some(message.clone())),
            RunEnd::Completed(_) => ("completed", None),
            RunEnd::Cancelled => ("cancelled", None),
            RunEnd::Terminated => ("terminated", None),
            RunEnd::TimedOut => ("timed_out", None),
        };
        let report = serde_json::json!({
            "workflow_id": workflow_id,
            "status": status,
            "error": error,
            "job_run": job_run,
            "outcome": outcome,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(end.exit_code());
    }
    println!("Workflow result: {end}");
    if let Some(job) = tea_starter::summary::job_line(outcome, job_run.as_ref()) {
        println!("Job: {job}");
    }
    if let Some(result) = tea_starter::summary::result_line(outcome) {
        println!("Job result: {result}");
    }
    Ok(end.exit_code())
}

fn unreachable_progress() -> ! {
    // `show_progress` loops forever; reaching here would be a bug in it.
    panic!("progress display ended")
}

/// Shows the run's progress until dropped: on a terminal a progress bar (when the job reports
/// its progress) or a spinner with the run's state and the job's latest output line; otherwise
/// a log line per change and the job's new output lines as they arrive.
async fn show_progress(client: &temporalio_client::Client, workflow_id: &str, quiet: bool) {
    const LOG_EVERY: Duration = Duration::from_secs(30);
    if quiet {
        // `--json`: stdout is for the report alone.
        return std::future::pending().await;
    }
    let terminal = std::io::stdout().is_terminal();
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last_state = String::new();
    let mut last_logged = tokio::time::Instant::now();
    let mut printed = OutputCursor::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let Ok(report) = tea_starter::status::report(client, workflow_id).await else {
            continue;
        };
        let line = report.one_line();
        if let Some(bar) = &bar {
            let command = report.command.as_ref();
            match command.and_then(|c| c.fraction) {
                Some(fraction) => {
                    if bar.length().is_none() {
                        bar.set_length(1000);
                        bar.set_style(
                            indicatif::ProgressStyle::with_template("{bar:30} {percent:>3}% {msg}")
                                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                        );
                    }
                    bar.set_position((fraction * 1000.0) as u64);
                }
                None => bar.tick(),
            }
            let last_output = command
                .and_then(|c| c.tail.last())
                .map(|l| format!(" | {}", l.line))
                .unwrap_or_default();
            bar.set_message(format!("{line}{last_output}"));
            continue;
        }
        // Not a terminal: a line when the state changes, else one every LOG_EVERY, and the
        // job's output lines not printed yet.
        let progress_at = [" job ", " heartbeat "]
            .iter()
            .filter_map(|marker| line.find(marker))
            .min()
            .unwrap_or(line.len());
        let state = line[..progress_at].to_owned();
        if state != last_state || last_logged.elapsed() >= LOG_EVERY {
            println!("{line}");
            last_state = state;
            last_logged = tokio::time::Instant::now();
        }
        if let Some(command) = &report.command {
            for output in printed.new_lines(command) {
                println!("  | {output}");
            }
        }
    }
}

/// Which of the job's output lines were printed: the tail in a heartbeat holds the last lines,
/// and the line counts say how many there were in all.
#[derive(Default)]
struct OutputCursor {
    printed: u64,
}

impl OutputCursor {
    fn new_lines<'a>(&mut self, progress: &'a tea_contract::CommandProgress) -> Vec<&'a str> {
        let total = progress.stdout_lines + progress.stderr_lines;
        let tail_start = total.saturating_sub(progress.tail.len() as u64);
        let skip = self.printed.saturating_sub(tail_start) as usize;
        let mut lines = Vec::new();
        if self.printed < tail_start && self.printed > 0 {
            lines.push("...");
        }
        lines.extend(progress.tail.iter().skip(skip).map(|l| l.line.as_str()));
        self.printed = total;
        lines
    }
}

fn clear_line() {
    if std::io::stdout().is_terminal() {
        print!("\r\x1b[2K");
    }
}

/// Prints the job's output known to the run; with `follow`, new lines until the run closes.
async fn logs(workflow_id: &str, follow: bool) -> anyhow::Result<()> {
    let (client, _) = tea_runtime::connect().await?;
    let mut cursor = OutputCursor::default();
    loop {
        let report = tea_starter::status::report(&client, workflow_id).await?;
        if let Some(command) = &report.command {
            for line in cursor.new_lines(command) {
                println!("{line}");
            }
        }
        if report.execution_status != "running" {
            if let Some(error) = report.status.as_ref().and_then(|s| s.error.as_ref()) {
                eprintln!("{error}");
            }
            let outcome = tea_starter::outcome(&client, workflow_id).await?;
            let job = outcome.as_ref().and_then(|o| o.job.as_ref());
            if let Some(tea_contract::JobOutcome::Command(job)) = job {
                let progress = tea_contract::CommandProgress {
                    stdout_lines: job.stdout_lines,
                    stderr_lines: job.stderr_lines,
                    tail: job.output_tail.clone(),
                    ..Default::default()
                };
                for line in cursor.new_lines(&progress) {
                    println!("{line}");
                }
            }
            eprintln!("(run {})", report.execution_status);
            return Ok(());
        }
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn status(workflow_id: &str, json: bool) -> anyhow::Result<()> {
    let (client, _) = tea_runtime::connect().await?;
    let report = tea_starter::status::report(&client, workflow_id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}", report.one_line());
    if let Some(command) = &report.command {
        for line in &command.tail {
            println!("  | {}", line.line);
        }
    }
    if let Some(status) = &report.status {
        for entry in &status.phase_history {
            println!(
                "  {}  attempt {}  {:?}",
                entry.at, entry.attempt, entry.phase
            );
        }
        if let Some(error) = &status.error {
            println!("  error: {error}");
        }
    }
    if let Some(at) = &report.last_heartbeat {
        println!("  last heartbeat: {at}");
    }
    let outcome = report.outcome.as_ref();
    if let Some(job) = tea_starter::summary::job_line(outcome, report.job_run.as_ref()) {
        println!("  job: {job}");
    }
    if let Some(result) = tea_starter::summary::result_line(outcome) {
        println!("  result: {result}");
    }
    Ok(())
}
