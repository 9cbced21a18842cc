//! Scale: many runs started at once through the fake DigitalOcean API, whose apps run the
//! release external-worker as local processes; one release workflow-worker serves them all.
//! Measures wall time, runs per second, the workflow-worker's CPU time and peak memory,
//! provider API requests per run with `foreign_apps` apps of someone else's in the account
//! (creating must not cost more with them), and compute left running afterwards.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tea_fake_do::{FakeDo, FakeDoConfig, SeedApps};
use tea_harness::{Proc, ProcBuilder, pid_alive};
use tea_starter::RunEnd;
use tokio::task::JoinSet;

use crate::{
    setup::{self, Bins, Env, stop},
    stats::{self, fmt_duration, mib},
    table::Table,
};

const SECTION: &str = "scale";
const TOKEN: &str = "bench-do-token";
/// Deployment step delay of the fake (PENDING_DEPLOY -> DEPLOYING -> ACTIVE).
const STEP_DELAY: Duration = Duration::from_millis(200);
const JOB: Duration = Duration::from_secs(1);
/// Longest the whole batch may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(900);
/// The target for the workflow-worker's peak memory under the batch.
const RSS_TARGET_MIB: u64 = 64;

pub async fn run(
    bins: &Bins,
    env: &Env,
    runs: usize,
    foreign_apps: u32,
    table: &mut Table,
) -> anyhow::Result<()> {
    let mut config = FakeDoConfig::new(TOKEN)
        .with_worker_command(&bins.external_worker, Vec::<String>::new())
        .with_step_delay(STEP_DELAY);
    config.kill_grace = Duration::from_secs(2);
    config.log_dir = Some(env.dir.join("apps"));
    let fake = FakeDo::start(config).await?;
    fake.seed(&SeedApps::many(foreign_apps, "foreign"))?;
    let queue = env.queue("scale");
    let worker = ProcBuilder::new(&bins.workflow_worker, env.dir.join("workflow-worker.log"))
        .env("COMPUTE_PROVIDER", "digitalocean")
        .env("DIGITALOCEAN_API_URL", fake.base_url())
        .env("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
        .env("TEMPORAL_ADDRESS", env.server.address())
        .env("WORKFLOW_TASK_QUEUE", &queue)
        .env("DEPLOY_POLL_INITIAL", "500ms")
        .env("DEPLOY_POLL_MAX", "2s")
        .env("SWEEP_INTERVAL", "0")
        .try_spawn();
    let mut worker = match worker {
        Ok(worker) => worker,
        Err(e) => {
            fake.shutdown().await;
            return Err(e);
        }
    };
    let result = measure(env, &fake, &worker, &queue, (runs, foreign_apps), table).await;
    stop(&mut worker, Duration::from_secs(15)).await;
    fake.shutdown().await;
    result.with_context(|| format!("workflow-worker: {}", tail(&worker.output(), 40)))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn measure(
    env: &Env,
    fake: &FakeDo,
    worker: &Proc,
    queue: &str,
    (runs, foreign_apps): (usize, u32),
    table: &mut Table,
) -> anyhow::Result<()> {
    let pid = worker.pid().context("the workflow-worker is not running")?;
    tea_harness::try_wait_for(
        "the workflow-worker to poll",
        Duration::from_secs(60),
        || async {
            worker
                .output()
                .contains("workflow worker polling")
                .then_some(())
        },
    )
    .await?;
    let server_pid = env.server.pid().context("the dev server is not running")?;
    let cpu = CpuReadings::take(pid, server_pid)?;

    let began = Instant::now();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let mut set = JoinSet::new();
    for i in 0..runs {
        let client = env.client.clone();
        let queue = queue.to_owned();
        let started_tx = started_tx.clone();
        set.spawn(async move {
            let id = format!("bench-scale-{i}-{}", uuid::Uuid::new_v4().simple());
            let input = setup::input(Duration::ZERO, JOB, Duration::from_secs(10));
            let handle = tea_starter::start(&client, &queue, &id, input).await?;
            let _ = started_tx.send(began.elapsed());
            tea_starter::wait(&handle).await
        });
    }
    drop(started_tx);
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut worker_pids = BTreeSet::new();
    let mut peak_workers = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let deadline = tokio::time::sleep(BATCH_TIMEOUT);
    tokio::pin!(deadline);
    let mut done = 0;
    while !set.is_empty() {
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                done += 1;
                match joined {
                    Ok(Ok(end)) => {
                        let kind = match end {
                            RunEnd::Completed(_) => "completed".to_owned(),
                            other => other.to_string(),
                        };
                        *ends.entry(kind).or_default() += 1;
                    }
                    Ok(Err(e)) => errors.push(format!("{e:#}")),
                    Err(e) => errors.push(format!("run task failed: {e}")),
                }
                if done % 50 == 0 || done == runs {
                    eprintln!("  scale: {done}/{runs} runs ended after {}", fmt_duration(began.elapsed()));
                }
            }
            _ = ticker.tick() => {
                let snap = fake.snapshot();
                let live: Vec<u32> = snap.apps.iter().filter_map(|a| a.worker_pid).collect();
                peak_workers = peak_workers.max(live.len());
                worker_pids.extend(live);
            }
            _ = &mut deadline => {
                set.abort_all();
                bail!("{} of {runs} runs still open after {BATCH_TIMEOUT:?}", runs - done);
            }
        }
    }
    let wall = began.elapsed();
    let used = CpuReadings::take(pid, server_pid)?.since(&cpu);
    let peak_rss = stats::status_kb(pid, "VmHWM").context("reading the workflow-worker's VmHWM")?;
    let mut last_start = Duration::ZERO;
    let mut accepted = 0usize;
    while let Ok(at) = started_rx.try_recv() {
        last_start = last_start.max(at);
        accepted += 1;
    }

    let snap = fake.snapshot();
    let completed = ends.get("completed").copied().unwrap_or(0);
    let mut requests: BTreeMap<&str, u64> = BTreeMap::new();
    for (op, statuses) in &snap.requests {
        *requests.entry(op.as_str()).or_default() += statuses.values().sum::<u64>();
    }
    let total_requests: u64 = requests.values().sum();
    // Compute the fake still holds, and worker processes seen during the batch still alive.
    // Deleted apps' workers get SIGTERM and at most the fake's kill grace (2 s) to exit.
    let left_apps = snap.apps.iter().filter(|a| !a.seeded).count();
    let foreign_left = snap.apps.iter().filter(|a| a.seeded).count();
    let _ = tea_harness::try_wait_for(
        "deleted apps' worker processes to exit",
        Duration::from_secs(5),
        || async { worker_pids.iter().all(|&p| !pid_alive(p)).then_some(()) },
    )
    .await;
    let left_pids = worker_pids.iter().filter(|&&p| pid_alive(p)).count();

    let others: Vec<String> = ends
        .iter()
        .filter(|(k, _)| k.as_str() != "completed")
        .map(|(k, n)| format!("{n} {k}"))
        .chain(errors.iter().take(3).cloned())
        .collect();
    table.check(
        SECTION,
        format!("{runs} runs started at once: completed"),
        if others.is_empty() {
            format!("{completed}/{runs}")
        } else {
            format!("{completed}/{runs} ({})", others.join("; "))
        },
        format!("{runs}/{runs}"),
        completed == runs,
    );
    table.info(
        SECTION,
        "  wall time, first start to last result",
        fmt_duration(wall),
    );
    table.info(
        SECTION,
        "  runs per second",
        format!("{:.2}", runs as f64 / wall.as_secs_f64()),
    );
    table.info(
        SECTION,
        "  start requests accepted per second (all started after)",
        format!(
            "{:.1} ({accepted} in {})",
            accepted as f64 / last_start.as_secs_f64().max(0.001),
            fmt_duration(last_start)
        ),
    );
    let cores = |d: Duration| d.as_secs_f64() / wall.as_secs_f64();
    table.info(
        SECTION,
        "  CPU time during the batch: workflow-worker / Temporal server / fake API + external workers",
        format!(
            "{:.1} s / {:.1} s / {:.1} s",
            used.workflow_worker.as_secs_f64(),
            used.server.as_secs_f64(),
            used.bench_and_children.as_secs_f64()
        ),
    );
    let consumers = [
        ("the Temporal dev server", used.server),
        (
            "the external workers (and the fake API)",
            used.bench_and_children,
        ),
        ("the workflow-worker", used.workflow_worker),
    ];
    let busiest = consumers
        .iter()
        .max_by_key(|(_, d)| *d)
        .map_or("?", |(name, _)| *name);
    table.info(
        SECTION,
        "  cores busy on average: machine / workflow-worker (of all)",
        format!(
            "{:.2} of {:.0} / {:.2}",
            cores(used.machine_busy),
            used.machine_total.as_secs_f64() / wall.as_secs_f64(),
            cores(used.workflow_worker)
        ),
    );
    table.info(
        SECTION,
        "  saturates first",
        format!(
            "{} ({:.0}% of the machine's busy CPU)",
            if cores(used.machine_busy)
                > 0.9 * used.machine_total.as_secs_f64() / wall.as_secs_f64()
            {
                format!("CPU, most of it {busiest}")
            } else {
                format!("not CPU-bound; the biggest consumer is {busiest}")
            },
            100.0
                * consumers
                    .iter()
                    .map(|(_, d)| *d)
                    .max()
                    .unwrap_or_default()
                    .as_secs_f64()
                / used.machine_busy.as_secs_f64().max(0.001)
        ),
    );
    table.check(
        SECTION,
        "workflow-worker peak RSS (VmHWM)",
        mib(peak_rss),
        format!("<= {RSS_TARGET_MIB}.0 MiB"),
        peak_rss <= RSS_TARGET_MIB * 1024 * 1024,
    );
    table.info(
        SECTION,
        format!("  provider API requests per run ({foreign_apps} foreign apps in the account)"),
        format!(
            "{:.1} ({})",
            total_requests as f64 / runs.max(1) as f64,
            requests
                .iter()
                .map(|(op, n)| format!("{op} {:.1}", *n as f64 / runs.max(1) as f64))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    table.info(
        SECTION,
        "  external-worker processes alive at once, peak (sampled)",
        format!("{peak_workers} (of {} started)", worker_pids.len()),
    );
    let mut units: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, id) in tea_fake_do::apps_with_logs(&env.dir.join("apps")) {
        units.entry(name).or_default().insert(id);
    }
    let duplicated: usize = units.values().map(|ids| ids.len() - 1).sum();
    let fresh = units.keys().filter(|name| !name.ends_with("-1")).count();
    table.check(
        SECTION,
        "compute duplicated (a name that got a second app)",
        duplicated.to_string(),
        "0",
        duplicated == 0,
    );
    table.info(
        SECTION,
        "  apps created / of them fresh compute for a lost job (attempt 2 or later)",
        format!("{} / {fresh}", snap.total_created),
    );
    table.check(
        SECTION,
        "foreign apps deleted",
        (foreign_apps as usize - foreign_left.min(foreign_apps as usize)).to_string(),
        "0",
        foreign_left == foreign_apps as usize,
    );
    table.check(
        SECTION,
        "compute left running afterwards (apps + worker processes)",
        format!(
            "{} ({left_apps} apps, {left_pids} processes)",
            left_apps + left_pids
        ),
        "0",
        left_apps + left_pids == 0,
    );
    Ok(())
}

/// CPU time used so far by each part of the batch, and by the whole machine.
#[derive(Clone, Copy, Debug)]
struct CpuReadings {
    workflow_worker: Duration,
    server: Duration,
    bench_and_children: Duration,
    machine_busy: Duration,
    machine_total: Duration,
}

impl CpuReadings {
    fn take(workflow_worker: u32, server: u32) -> anyhow::Result<CpuReadings> {
        let (machine_busy, machine_total) =
            stats::machine_cpu_time().context("reading /proc/stat")?;
        Ok(CpuReadings {
            workflow_worker: stats::cpu_time(workflow_worker)
                .context("reading the workflow-worker's CPU time")?,
            server: stats::cpu_time(server).context("reading the dev server's CPU time")?,
            bench_and_children: stats::own_and_children_cpu_time()
                .context("reading this process's CPU time")?,
            machine_busy,
            machine_total,
        })
    }

    /// What was used between `before` and these readings.
    fn since(&self, before: &CpuReadings) -> CpuReadings {
        CpuReadings {
            workflow_worker: self.workflow_worker.saturating_sub(before.workflow_worker),
            server: self.server.saturating_sub(before.server),
            bench_and_children: self
                .bench_and_children
                .saturating_sub(before.bench_and_children),
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
            machine_total: self.machine_total.saturating_sub(before.machine_total),
        }
    }
}
