//! A full run through the local provider with zero pauses and a zero-length job: start request
//! to result as the client sees it, and the run's phases from its history.
//!
//! Phases: provision = `Create` scheduled to completed; ready = `WaitForAppBuild` scheduled to
//! completed; job dispatch = `long-running-command` scheduled to started; teardown = `Delete`
//! scheduled to completed; server total = run started to run completed.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tea_contract::{
    CREATE_ACTIVITY, DELETE_ACTIVITY, LONG_RUNNING_ACTIVITY, WAIT_FOR_APP_BUILD_ACTIVITY,
};
use tea_starter::RunEnd;

use crate::{
    history,
    setup::{self, Bins, Env, stop},
    stats::{fmt_duration, median, percentile},
    table::Table,
};

const SECTION: &str = "full cycle";
const OVERHEAD_TARGET: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Samples {
    client: Vec<Duration>,
    server: Vec<Duration>,
    provision: Vec<Duration>,
    ready: Vec<Duration>,
    dispatch: Vec<Duration>,
    teardown: Vec<Duration>,
}

pub async fn run(bins: &Bins, env: &Env, samples: usize, table: &mut Table) -> anyhow::Result<()> {
    let queue = env.queue("cycle");
    let mut worker = env.local_workflow_worker(bins, &queue)?;
    let result = measure(env, &queue, samples).await;
    stop(&mut worker, Duration::from_secs(15)).await;
    let s = result.with_context(|| format!("workflow-worker: {}", worker.output()))?;

    let med = median(&s.client);
    table.check(
        SECTION,
        format!("start request to result, median of {samples}"),
        fmt_duration(med),
        format!("<= {}", fmt_duration(OVERHEAD_TARGET)),
        med <= OVERHEAD_TARGET,
    );
    table.info(
        SECTION,
        format!("start request to result, p95 of {samples}"),
        fmt_duration(percentile(&s.client, 95.0)),
    );
    for (name, values) in [
        ("run started to completed (server)", &s.server),
        ("provision (Create)", &s.provision),
        ("ready (WaitForAppBuild)", &s.ready),
        ("job dispatch (scheduled to started)", &s.dispatch),
        ("teardown (Delete)", &s.teardown),
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
    Ok(())
}

async fn measure(env: &Env, queue: &str, samples: usize) -> anyhow::Result<Samples> {
    let mut s = Samples::default();
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
        let phase = |d: Option<Duration>, what: &str| {
            d.with_context(|| format!("run {id}: no {what} in the history"))
        };
        s.client.push(client);
        s.server.push(phase(times.total(), "run start or close")?);
        s.provision
            .push(phase(times.scheduled_to_closed(CREATE_ACTIVITY), "Create")?);
        s.ready.push(phase(
            times.scheduled_to_closed(WAIT_FOR_APP_BUILD_ACTIVITY),
            "WaitForAppBuild",
        )?);
        s.dispatch.push(phase(
            times.scheduled_to_started(LONG_RUNNING_ACTIVITY),
            "job start",
        )?);
        s.teardown
            .push(phase(times.scheduled_to_closed(DELETE_ACTIVITY), "Delete")?);
        eprintln!("  full cycle {i}/{samples}: {}", fmt_duration(client));
    }
    Ok(s)
}
