//! Dead-worker detection: SIGKILL the external worker mid-job (right after a heartbeat reached
//! the server, the worst moment) and measure how long until the workflow schedules `Create` for
//! fresh compute, against the heartbeat timeout.

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tea_contract::{CREATE_ACTIVITY, LONG_RUNNING_ACTIVITY};
use tea_starter::{RunHandle, status::pending_job};
use temporalio_client::WorkflowCancelOptions;
use temporalio_common::protos::temporal::api::workflow::v1::PendingActivityInfo;

use crate::{
    history::{self, system_time},
    setup::{self, Bins, Env, stop},
    stats::{fmt_duration, max, median},
    table::Table,
};

const SECTION: &str = "dead-worker";
/// Heartbeat timeout of the benchmark runs.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);
/// Allowed on top of the heartbeat timeout.
const SLACK: Duration = Duration::from_secs(2);

struct Sample {
    /// Kill to the job's heartbeat time-out event.
    timed_out: Duration,
    /// Kill to the second `Create` being scheduled.
    reprovision: Duration,
    /// Last heartbeat the server had to the kill.
    since_heartbeat: Duration,
}

pub async fn run(bins: &Bins, env: &Env, samples: usize, table: &mut Table) -> anyhow::Result<()> {
    let queue = env.queue("dead");
    let mut worker = env.local_workflow_worker(bins, &queue, None)?;
    let mut results = Vec::new();
    let mut failure = None;
    for i in 0..samples {
        match sample(env, &queue, i).await {
            Ok(s) => {
                eprintln!(
                    "  dead worker {}/{samples}: re-provisioning {} after the kill (kill {} after \
                     the last heartbeat)",
                    i + 1,
                    fmt_duration(s.reprovision),
                    fmt_duration(s.since_heartbeat)
                );
                results.push(s);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let left = env.local_compute_dirs();
    stop(&mut worker, Duration::from_secs(15)).await;
    if let Some(e) = failure {
        return Err(e.context(format!("workflow-worker: {}", worker.output())));
    }

    let target = HEARTBEAT_TIMEOUT + SLACK;
    let reprovision: Vec<_> = results.iter().map(|s| s.reprovision).collect();
    let timed_out: Vec<_> = results.iter().map(|s| s.timed_out).collect();
    let worst = max(&reprovision);
    table.check(
        SECTION,
        format!(
            "SIGKILL to re-provisioning, worst of {} (heartbeat timeout {})",
            results.len(),
            fmt_duration(HEARTBEAT_TIMEOUT)
        ),
        fmt_duration(worst),
        format!("<= {} (timeout + 2 s)", fmt_duration(target)),
        worst <= target,
    );
    table.info(
        SECTION,
        "  SIGKILL to re-provisioning, median",
        fmt_duration(median(&reprovision)),
    );
    table.info(
        SECTION,
        "  SIGKILL to heartbeat time-out event, median / worst",
        format!(
            "{} / {}",
            fmt_duration(median(&timed_out)),
            fmt_duration(max(&timed_out))
        ),
    );
    table.check_nothing_left(SECTION, left.len());
    Ok(())
}

fn heartbeat_after_start(job: &PendingActivityInfo) -> Option<SystemTime> {
    let started = job.last_started_time.as_ref()?;
    let beat = job.last_heartbeat_time.as_ref()?;
    let started = system_time(started.seconds, started.nanos)?;
    let beat = system_time(beat.seconds, beat.nanos)?;
    (beat.duration_since(started).ok()? >= Duration::from_millis(500)).then_some(beat)
}

async fn sample(env: &Env, queue: &str, i: usize) -> anyhow::Result<Sample> {
    let id = format!("bench-dead-{i}-{}", uuid::Uuid::new_v4().simple());
    let input = setup::input(Duration::ZERO, Duration::from_secs(60), HEARTBEAT_TIMEOUT);
    let handle = tea_starter::start(&env.client, queue, &id, input).await?;
    let result = kill_and_watch(env, &handle).await;
    let _ = handle
        .cancel(WorkflowCancelOptions::builder().reason("bench").build())
        .await;
    let end = tokio::time::timeout(Duration::from_secs(60), tea_starter::wait(&handle)).await;
    let sample = result?;
    match end {
        Ok(Ok(_)) => Ok(sample),
        Ok(Err(e)) => Err(e.context("waiting for the cancelled run")),
        Err(_) => bail!("the cancelled run did not end within 60 s"),
    }
}

async fn kill_and_watch(env: &Env, handle: &RunHandle) -> anyhow::Result<Sample> {
    // Kill right after a heartbeat other than the first reached the server: the detection
    // then needs the whole heartbeat timeout.
    let beat = tea_harness::try_wait_for(
        "a heartbeat of the running job",
        Duration::from_secs(60),
        || async {
            let job = pending_job(handle).await?;
            heartbeat_after_start(&job)
        },
    )
    .await?;
    let killed = SystemTime::now();
    env.sigkill_local_external_worker()?;

    let times = tea_harness::try_wait_for(
        "the workflow to schedule Create for fresh compute",
        Duration::from_secs(60),
        || async {
            let times = history::run_times(handle).await.ok()?;
            times.activity(CREATE_ACTIVITY, 1)?;
            Some(times)
        },
    )
    .await?;
    let second = times
        .activity(CREATE_ACTIVITY, 1)
        .context("no second Create")?;
    let job = times
        .activity(LONG_RUNNING_ACTIVITY, 0)
        .context("no job in the history")?;
    if !job.timed_out {
        bail!("the first job did not end by a time-out");
    }
    let after_kill = |t: Option<SystemTime>| -> anyhow::Result<Duration> {
        t.context("missing event time")?
            .duration_since(killed)
            .context("event before the kill")
    };
    Ok(Sample {
        timed_out: after_kill(job.closed)?,
        reprovision: after_kill(Some(second.scheduled))?,
        since_heartbeat: killed.duration_since(beat).unwrap_or_default(),
    })
}
