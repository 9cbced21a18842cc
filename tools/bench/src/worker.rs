//! The external worker alone: time from process start until an activity task already waiting
//! on its queue starts, idle resident memory, and binary sizes.
//!
//! Cold start uses a standalone activity (started by the client, no workflow): the bench
//! enqueues `long-running-command` (zero duration) on a fresh queue, then spawns the release
//! external-worker polling that queue and compares the wall clock at spawn with the
//! activity's `last_started_time` from the server (same machine, same clock). "Started" is when
//! the server handed the task to the worker's poll.

use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use tea_contract::{ExternalActivities, GoDuration};
use tea_harness::{Proc, ProcBuilder};
use temporalio_client::{ActivityDescribeOptions, ActivityStartOptions};

use crate::{
    history::system_time,
    setup::{Bins, Env, stop},
    stats::{self, fmt_duration, median, mib, percentile},
    table::Table,
};

const SECTION: &str = "external-worker";

/// Targets: cold start to the first task 30 ms median at most, the stripped binary 12 MiB
/// at most, idle RSS 20 MiB at most.
const COLD_START_TARGET: Duration = Duration::from_millis(30);
const IDLE_RSS_TARGET: u64 = 20 * 1024 * 1024;
const BINARY_SIZE_TARGET: u64 = 12 * 1024 * 1024;

/// How long an idle worker is left alone before its memory is read (a measurement window,
/// not synchronisation).
const IDLE_WINDOW: Duration = Duration::from_secs(2);

pub async fn run(bins: &Bins, env: &Env, samples: usize, table: &mut Table) -> anyhow::Result<()> {
    // One unrecorded warm-up: the first start also pays for reading the binary into the page
    // cache and the server's first use of a queue partition.
    let _ = cold_start_once(bins, env, "warmup").await?;
    let mut cold = Vec::with_capacity(samples);
    let mut phases: [Vec<Duration>; 3] = Default::default();
    for i in 0..samples {
        let s = cold_start_once(bins, env, &i.to_string()).await?;
        eprintln!(
            "  cold start {}/{samples}: {} (connected {}, polling {}, task {})",
            i + 1,
            fmt_duration(s.total),
            opt(s.connected),
            opt(s.polling),
            opt(s.polling.map(|p| s.total.saturating_sub(p)))
        );
        cold.push(s.total);
        if let (Some(connected), Some(polling)) = (s.connected, s.polling) {
            phases[0].push(connected);
            phases[1].push(polling.saturating_sub(connected));
            phases[2].push(s.total.saturating_sub(polling));
        }
    }
    let med = median(&cold);
    table.check(
        SECTION,
        format!("cold start to first task, median of {samples}"),
        fmt_duration(med),
        format!("<= {}", fmt_duration(COLD_START_TARGET)),
        med <= COLD_START_TARGET,
    );
    table.info(
        SECTION,
        format!("cold start to first task, p95 of {samples}"),
        fmt_duration(percentile(&cold, 95.0)),
    );
    if phases[0].len() == samples {
        for (name, values) in [
            (
                "process start to connected (exec, runtime, TCP+gRPC)",
                &phases[0],
            ),
            ("connected to polling (worker init)", &phases[1]),
            ("polling to task started (poll RPC, matching)", &phases[2]),
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
    }

    let rss = idle_rss(bins, env).await?;
    table.check(
        SECTION,
        format!("idle RSS after {}s polling", IDLE_WINDOW.as_secs()),
        mib(rss),
        format!("<= {}", mib(IDLE_RSS_TARGET)),
        rss <= IDLE_RSS_TARGET,
    );

    let size = file_size(&bins.external_worker)?;
    table.check(
        SECTION,
        "external-worker release binary (stripped)",
        mib(size),
        format!("<= {}", mib(BINARY_SIZE_TARGET)),
        size <= BINARY_SIZE_TARGET,
    );
    table.info(
        SECTION,
        "workflow-worker release binary (stripped)",
        mib(file_size(&bins.workflow_worker)?),
    );
    Ok(())
}

fn file_size(path: &std::path::Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

fn spawn_worker(bins: &Bins, env: &Env, queue: &str) -> anyhow::Result<Proc> {
    ProcBuilder::new(
        &bins.external_worker,
        env.dir.join(format!("external-worker-{queue}.log")),
    )
    .env("TEMPORAL_ADDRESS", env.server.address())
    .env("EXTERNAL_TASK_QUEUE", queue)
    .try_spawn()
}

/// One cold start, with when the worker logged its milestones (from its log timestamps, same
/// clock), all from the spawn.
struct ColdStart {
    total: Duration,
    connected: Option<Duration>,
    polling: Option<Duration>,
}

fn opt(d: Option<Duration>) -> String {
    d.map(fmt_duration).unwrap_or_else(|| "?".into())
}

/// When the first log line containing `needle` was written, after `since`.
fn logged_at(log: &str, needle: &str, since: SystemTime) -> Option<Duration> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let stamp = line.split_whitespace().next()?;
    humantime::parse_rfc3339(stamp)
        .ok()?
        .duration_since(since)
        .ok()
}

/// One sample: enqueue the job, start the worker, read when the job started.
async fn cold_start_once(bins: &Bins, env: &Env, label: &str) -> anyhow::Result<ColdStart> {
    let queue = env.queue(&format!("cold-{label}"));
    let options =
        ActivityStartOptions::with_start_to_close_timeout(&queue, &queue, Duration::from_secs(60))
            .build();
    let handle = env
        .client
        .start_activity(
            ExternalActivities::long_running_command,
            (GoDuration::default(), GoDuration::from_secs(10)).into(),
            options,
        )
        .await
        .map_err(|e| anyhow!("starting the standalone activity: {e}"))?;

    let spawned_at = SystemTime::now();
    let mut worker = spawn_worker(bins, env, &queue)?;
    let outcome = tokio::time::timeout(Duration::from_secs(30), handle.result()).await;
    stop(&mut worker, Duration::from_secs(5)).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(anyhow!("the job failed: {e}; worker: {}", worker.output())),
        Err(_) => {
            return Err(anyhow!(
                "the job did not finish in 30 s; worker: {}",
                worker.output()
            ));
        }
    }
    let description = handle
        .describe(ActivityDescribeOptions::default())
        .await
        .map_err(|e| anyhow!("describing the activity: {e}"))?;
    let started = description
        .raw_info()
        .last_started_time
        .as_ref()
        .and_then(|t| system_time(t.seconds, t.nanos))
        .context("the activity has no start time")?;
    let total = started
        .duration_since(spawned_at)
        .context("the activity started before the worker was spawned")?;
    let log = worker.output();
    Ok(ColdStart {
        total,
        connected: logged_at(&log, "connected to Temporal", spawned_at),
        polling: logged_at(&log, "external worker polling", spawned_at),
    })
}

/// Resident memory of an external worker polling an empty queue.
async fn idle_rss(bins: &Bins, env: &Env) -> anyhow::Result<u64> {
    let queue = env.queue("idle");
    let mut worker = spawn_worker(bins, env, &queue)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let rss = worker
        .pid()
        .and_then(|pid| stats::status_kb(pid, "VmRSS"))
        .with_context(|| format!("the idle worker is not running: {}", worker.output()));
    stop(&mut worker, Duration::from_secs(5)).await;
    rss
}
