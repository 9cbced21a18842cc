//! A full run through the local provider with zero pauses and a zero-length job: start request
//! to result as the client sees it, and where the time goes, from the run's history.
//!
//! The breakdown follows the run's critical path: start to `Create` scheduled (the first
//! workflow task, with the capacity check), `Create` scheduled to the job started (`Create`,
//! the external worker's start and first poll; the job is queued with `Create`, so it may
//! start before the workflow has seen `Create` end), the job, its end to `Delete` scheduled
//! (a workflow task), `Delete` (stop and confirm the worker gone), and its end to the run
//! closed (the last workflow task). A second pass runs the same cycle under
//! `MAX_CONCURRENT_COMPUTE` (a cap never reached) for the cap's overhead on run start.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use tea_contract::{CREATE_ACTIVITY, DELETE_ACTIVITY, LONG_RUNNING_ACTIVITY};
use tea_starter::RunEnd;

use crate::{
    history::{self, RunTimes},
    setup::{self, Bins, Env, stop},
    stats::{fmt_duration, median, percentile},
    table::Table,
};

const SECTION: &str = "full cycle";
/// The target for the median full cycle, start request to result.
const CYCLE_TARGET: Duration = Duration::from_millis(200);
/// A cap the capped pass never reaches: what it measures is the semaphore's round trips.
const UNREACHED_CAP: &str = "10000";

/// One series of durations per step of the critical path.
#[derive(Default)]
struct Samples {
    client: Vec<Duration>,
    server: Vec<Duration>,
    to_create: Vec<Duration>,
    provision: Vec<Duration>,
    to_job: Vec<Duration>,
    job: Vec<Duration>,
    dispatch: Vec<Duration>,
    to_delete: Vec<Duration>,
    teardown: Vec<Duration>,
    to_close: Vec<Duration>,
    workflow_tasks: Vec<usize>,
}

pub async fn run(bins: &Bins, env: &Env, samples: usize, table: &mut Table) -> anyhow::Result<()> {
    let plain = pass(bins, env, samples, None).await?;
    let capped = pass(bins, env, samples, Some(UNREACHED_CAP)).await?;

    let med = median(&plain.client);
    table.check(
        SECTION,
        format!("start request to result, median of {samples}"),
        fmt_duration(med),
        format!("<= {}", fmt_duration(CYCLE_TARGET)),
        med <= CYCLE_TARGET,
    );
    table.info(
        SECTION,
        format!("start request to result, p95 of {samples}"),
        fmt_duration(percentile(&plain.client, 95.0)),
    );
    for (name, values) in [
        ("run started to completed (server)", &plain.server),
        (
            "start to Create scheduled (first workflow task)",
            &plain.to_create,
        ),
        (
            "Create scheduled to job started (Create, worker start, poll)",
            &plain.to_job,
        ),
        ("  of which Create", &plain.provision),
        ("  of which job scheduled to started", &plain.dispatch),
        ("job (started to completed)", &plain.job),
        (
            "job done to Delete scheduled (workflow task)",
            &plain.to_delete,
        ),
        ("teardown (Delete)", &plain.teardown),
        (
            "Delete done to run closed (last workflow task)",
            &plain.to_close,
        ),
    ] {
        table.info(
            SECTION,
            format!("  {name}, median / p95"),
            format!(
                "{} / {}",
                fmt_duration(median(values)),
                fmt_duration(percentile(values, 95.0))
            ),
        );
    }
    let mut tasks = plain.workflow_tasks.clone();
    tasks.sort_unstable();
    table.info(
        SECTION,
        "  workflow tasks per run, median",
        tasks.get(tasks.len() / 2).copied().unwrap_or(0).to_string(),
    );

    let (plain_start, capped_start) = (median(&plain.to_create), median(&capped.to_create));
    table.info(
        SECTION,
        format!(
            "start to Create scheduled under MAX_CONCURRENT_COMPUTE={UNREACHED_CAP}, median / p95"
        ),
        format!(
            "{} / {}",
            fmt_duration(capped_start),
            fmt_duration(percentile(&capped.to_create, 95.0))
        ),
    );
    table.info(
        SECTION,
        "  the cap's overhead on run start (median, capped minus uncapped)",
        if capped_start >= plain_start {
            fmt_duration(capped_start - plain_start)
        } else {
            format!("-{}", fmt_duration(plain_start - capped_start))
        },
    );
    table.info(
        SECTION,
        "  start request to result under the cap, median",
        fmt_duration(median(&capped.client)),
    );
    Ok(())
}

/// `samples` full cycles on a workflow-worker of their own (capped when `cap` is set).
async fn pass(
    bins: &Bins,
    env: &Env,
    samples: usize,
    cap: Option<&str>,
) -> anyhow::Result<Samples> {
    let queue = env.queue(if cap.is_some() {
        "cycle-capped"
    } else {
        "cycle"
    });
    let mut worker = env.local_workflow_worker(bins, &queue, cap)?;
    let result = measure(env, &queue, samples, cap.is_some()).await;
    stop(&mut worker, Duration::from_secs(15)).await;
    result.with_context(|| format!("workflow-worker: {}", worker.output()))
}

async fn measure(env: &Env, queue: &str, samples: usize, capped: bool) -> anyhow::Result<Samples> {
    let mut s = Samples::default();
    let label = if capped { "capped cycle" } else { "full cycle" };
    // One unrecorded warm-up run: worker caches, first queue use, binary in the page cache.
    for i in 0..=samples {
        let id = format!("bench-cycle-{i}-{}", uuid::Uuid::new_v4().simple());
        let input = setup::input(Duration::ZERO, Duration::ZERO, Duration::from_secs(10));
        let began = Instant::now();
        let handle = tea_starter::start(&env.client, queue, &id, input).await?;
        let end = tokio::time::timeout(Duration::from_secs(120), tea_starter::wait(&handle))
            .await
            .context("the run did not finish in 120 s")??;
        let client = began.elapsed();
        if !matches!(end, RunEnd::Completed(_)) {
            bail!("run {id} ended {end}");
        }
        if i == 0 {
            continue;
        }
        let times = history::run_times(&handle).await?;
        record(&mut s, &times, client).with_context(|| format!("run {id}"))?;
        eprintln!("  {label} {i}/{samples}: {}", fmt_duration(client));
    }
    Ok(s)
}

/// Adds one run's steps to the samples.
fn record(s: &mut Samples, times: &RunTimes, client: Duration) -> anyhow::Result<()> {
    let span = |from: Option<SystemTime>, to: Option<SystemTime>, what: &str| {
        RunTimes::between(from, to).with_context(|| format!("no {what} in the history"))
    };
    let create = times.activity(CREATE_ACTIVITY, 0).context("no Create")?;
    let job = times.activity(LONG_RUNNING_ACTIVITY, 0).context("no job")?;
    let delete = times.activity(DELETE_ACTIVITY, 0).context("no Delete")?;
    let (create_scheduled, job_scheduled, delete_scheduled) = (
        Some(create.scheduled),
        Some(job.scheduled),
        Some(delete.scheduled),
    );
    s.client.push(client);
    s.server.push(span(
        times.workflow_started,
        times.workflow_closed,
        "run start or close",
    )?);
    s.to_create.push(span(
        times.workflow_started,
        create_scheduled,
        "Create scheduled",
    )?);
    s.provision
        .push(span(create_scheduled, create.closed, "Create")?);
    s.to_job
        .push(span(create_scheduled, job.started, "job start")?);
    s.dispatch
        .push(span(job_scheduled, job.started, "job start")?);
    s.job.push(span(job.started, job.closed, "job end")?);
    s.to_delete
        .push(span(job.closed, delete_scheduled, "Delete scheduled")?);
    s.teardown
        .push(span(delete_scheduled, delete.closed, "Delete")?);
    s.to_close
        .push(span(delete.closed, times.workflow_closed, "run close")?);
    s.workflow_tasks.push(times.workflow_tasks);
    Ok(())
}
