//! Resumable jobs: a 60 s job whose unit is SIGKILLed 40 s in, run once as a command that
//! checkpoints each second and once as the same command without checkpoints. Value: the run's
//! total time (run started to run closed), with and without checkpoints; with them, the fresh
//! unit only does what was left.

use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use tea_contract::{RUN_COMMAND_ACTIVITY, WorkflowInput};
use tea_starter::{RunEnd, RunHandle, status::pending_job};

use crate::{
    history::{self, RunTimes, system_time},
    setup::{self, Bins, Env, stop},
    stats::{fmt_duration, median},
    table::Table,
};

const SECTION: &str = "resume";
/// How long the job works when nothing is lost.
const JOB: Duration = Duration::from_secs(60);
/// How far into the job its unit is killed.
const KILLED_AT: Duration = Duration::from_secs(40);
/// Heartbeat timeout of the benchmark runs: how long the loss takes to notice.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);
/// Allowed on top of the job, the detection and what one heartbeat interval may repeat.
const SLACK: Duration = Duration::from_secs(5);

/// Counts one step a second to 60; with `@CHECKPOINT@` the checkpoint call, it records each
/// step and resumes from its resume file.
const JOB_SCRIPT: &str = r#"
step=0
if [ -n "${TEA_RESUME_FILE:-}" ]; then
  read -r saved < "$TEA_RESUME_FILE" || true
  step=${saved#*:}
  step=${step%\}}
fi
while [ "$step" -lt 60 ]; do
  sleep 1
  step=$((step + 1))
  @CHECKPOINT@
done
"#;
const CHECKPOINT: &str = r#"printf '{"step":%d}' "$step" > "$TEA_CHECKPOINT_FILE.tmp" && mv "$TEA_CHECKPOINT_FILE.tmp" "$TEA_CHECKPOINT_FILE""#;

pub async fn run(bins: &Bins, env: &Env, samples: usize, table: &mut Table) -> anyhow::Result<()> {
    let queue = env.queue("resume");
    let mut worker = env.local_workflow_worker(bins, &queue, None)?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut failure = None;
    'samples: for i in 0..samples {
        for checkpointing in [true, false] {
            match sample(env, &queue, i, checkpointing).await {
                Ok(total) => {
                    eprintln!(
                        "  resume {}/{samples}, {} checkpoints: run took {}",
                        i + 1,
                        if checkpointing { "with" } else { "without" },
                        fmt_duration(total)
                    );
                    if checkpointing {
                        with.push(total);
                    } else {
                        without.push(total);
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break 'samples;
                }
            }
        }
    }
    let left = env.local_compute_dirs();
    stop(&mut worker, Duration::from_secs(15)).await;
    if let Some(e) = failure {
        return Err(e.context(format!("workflow-worker: {}", worker.output())));
    }

    let job = format!(
        "{} job killed {} in (heartbeat timeout {})",
        fmt_duration(JOB),
        fmt_duration(KILLED_AT),
        fmt_duration(HEARTBEAT_TIMEOUT)
    );
    let target = JOB + HEARTBEAT_TIMEOUT + SLACK;
    let with = median(&with);
    table.check(
        SECTION,
        format!("{job}: run time with checkpoints, median of {samples}"),
        fmt_duration(with),
        format!("<= {} (job + timeout + 5 s)", fmt_duration(target)),
        with <= target,
    );
    table.info(
        SECTION,
        format!("{job}: run time without checkpoints, median of {samples}"),
        fmt_duration(median(&without)),
    );
    table.check_nothing_left(SECTION, left.len());
    Ok(())
}

fn input(checkpointing: bool) -> WorkflowInput {
    let script = JOB_SCRIPT.replace("@CHECKPOINT@", if checkpointing { CHECKPOINT } else { ":" });
    WorkflowInput {
        command: Some(vec!["/bin/sh".into(), "-c".into(), script]),
        // A command's time limit: far beyond both runs.
        job_duration: Some(tea_contract::GoDuration::from_secs(600)),
        ..setup::input(Duration::ZERO, JOB, HEARTBEAT_TIMEOUT)
    }
}

/// One run killed `KILLED_AT` into its job; its total time.
async fn sample(env: &Env, queue: &str, i: usize, checkpointing: bool) -> anyhow::Result<Duration> {
    let id = format!("bench-resume-{i}-{}", uuid::Uuid::new_v4().simple());
    let handle = tea_starter::start(&env.client, queue, &id, input(checkpointing)).await?;
    kill_into_the_job(env, &handle).await?;
    let end = tokio::time::timeout(Duration::from_secs(300), tea_starter::wait(&handle))
        .await
        .map_err(|_| anyhow!("the run did not end within 300 s"))??;
    if !matches!(end, RunEnd::Completed(_)) {
        bail!("the run ended {end}");
    }
    let times = history::run_times(&handle).await?;
    if times.activity(RUN_COMMAND_ACTIVITY, 1).is_none() {
        bail!("the job did not run on a second unit");
    }
    RunTimes::between(times.workflow_started, times.workflow_closed)
        .context("the run's start or close time is missing")
}

/// SIGKILLs the run's external worker `KILLED_AT` after its job started (server time).
async fn kill_into_the_job(env: &Env, handle: &RunHandle) -> anyhow::Result<()> {
    let started =
        tea_harness::try_wait_for("the job to start", Duration::from_secs(120), || async {
            let job = pending_job(handle).await?;
            let at = job.last_started_time?;
            system_time(at.seconds, at.nanos)
        })
        .await?;
    let wait = (started + KILLED_AT)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    // The kill is the measurement's own event, at a set time into the job.
    tokio::time::sleep(wait).await;
    env.sigkill_local_external_worker()
}
