//! `chaos`: many runs through the local provider, the fake DigitalOcean API and (when asked)
//! the Docker provider while things break, then one sweep, then a table of what happened and of
//! what was left behind.
//!
//! Not a test: a command that prints a table. It starts a Temporal dev server with a persistent
//! database file, one `workflow-worker` per provider (each on its own task queue), the fake
//! DigitalOcean API in process (its apps run the real `external-worker`), for Docker a bridge
//! network of its own on the machine's engine (containers of the external-worker image), and
//! `--runs` runs split across the providers. While runs are open, every 0.5-2 s (seeded) it
//! does one of: SIGKILL a live external worker (`docker kill` of a container), cut a container
//! off its network mid-job (`docker network disconnect`), SIGKILL the workflow-worker and
//! restart it, restart the Temporal dev server (at most twice), inject 429 (short or longer than
//! the runs' heartbeat timeout) / 503 / failed-deployment faults into the fake, turn on
//! asynchronous delete (a deleted app stays visible for 1-4 s), cancel a run, terminate a run.
//! Each account also holds compute that is not ours (`ext-api`, lookalikes, `--foreign-apps`
//! foreign apps): none of it may be deleted. When every run is closed it runs `workflow-worker
//! sweep` once per provider (grace period 0: terminated runs leave compute only the sweep
//! removes), then counts compute created, swept, left running and duplicated, and removes from
//! the engine every container and network it made.
//!
//! ```sh
//! cargo build --bins --workspace          # workflow-worker, external-worker and chaos
//! target/debug/chaos --runs 6 --seed 1
//! target/debug/chaos --provider local --runs 4 --job-duration 5s
//! target/debug/chaos --provider docker --runs 4 --job-duration 5s
//! ```
//!
//! Options: `--runs N` (default 12, split across providers), `--provider` (alias
//! `--providers`) a comma-separated list of `local`, `digitalocean`, `docker`, or `both` (local
//! and digitalocean, the default) or `all` (the three; docker needs a reachable engine),
//! `--seed S` (default random; printed, rerun with it to get the same event
//! choices), `--job-duration` (default 8s), `--timeout` (whole chaos run, default 10m),
//! `--keep-dir` (keep logs and state; they are also kept when the exit status is 1),
//! `--foreign-apps N` (foreign apps in the fake account, default 100), `--docker-image` (the
//! docker lane's image, default `temporal-external-activity/external-worker:dev`).
//! `TEA_BIN_DIR` names the directory holding `workflow-worker` and `external-worker` (default:
//! next to `chaos`); `TEMPORAL_CLI` the Temporal CLI (default `temporal` on `PATH`);
//! `DOCKER_HOST` the engine (default the local socket).
//!
//! Exit status 0 only when every run reached a closed state, compute left running is 0,
//! duplicate compute is 0, no foreign compute was deleted and everything the chaos run made on
//! the engine was removed; otherwise 1 (130 on Ctrl-C). A docker lane without a reachable
//! engine (or without its image) is an error before anything starts: exit status 1.
//! The table is printed either way.

mod bins;
mod docker;
mod events;
mod lanes;
mod measure;
mod report;
mod runs;

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use rand::{SeedableRng, rngs::StdRng};
use tea_contract::GoDuration;
use tea_harness::{DevServer, DevServerOptions};

use crate::{
    lanes::{Kind, Lane, Setup},
    measure::StrayGuard,
    report::Report,
};

/// When the command started, for the elapsed time in log lines.
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Prints one log line with the wall-clock time and the seconds since the start.
pub fn say(args: std::fmt::Arguments<'_>) {
    let elapsed = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    let now = chrono::Utc::now().format("%H:%M:%S%.3f");
    println!("[{now} +{elapsed:7.2}s] {args}");
}

/// `say!("...", args)`: a timestamped log line.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::say(format_args!($($t)*)) };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProviderChoice {
    Local,
    Digitalocean,
    /// Containers on the machine's Docker Engine (needs one).
    Docker,
    /// local and digitalocean.
    Both,
    /// local, digitalocean and docker.
    All,
}

/// The lanes the choices name, each once, in a fixed order.
fn kinds(choices: &[ProviderChoice]) -> Vec<Kind> {
    let kinds: std::collections::BTreeSet<Kind> = choices
        .iter()
        .flat_map(|choice| match choice {
            ProviderChoice::Local => vec![Kind::Local],
            ProviderChoice::Digitalocean => vec![Kind::DigitalOcean],
            ProviderChoice::Docker => vec![Kind::Docker],
            ProviderChoice::Both => vec![Kind::Local, Kind::DigitalOcean],
            ProviderChoice::All => vec![Kind::Local, Kind::DigitalOcean, Kind::Docker],
        })
        .collect();
    kinds.into_iter().collect()
}

/// Runs through the local provider, the fake DigitalOcean API and Docker containers while
/// killing workers, cutting container networks, restarting Temporal and injecting faults; then
/// sweeps once and reports leaked and duplicate compute. Exit status 0 only when nothing leaked,
/// nothing was duplicated and every run closed.
#[derive(Debug, Parser)]
#[command(name = "chaos", version, about)]
struct Args {
    /// Number of runs, split across the providers.
    #[arg(long, default_value_t = 12)]
    runs: usize,
    /// Which providers to run through (a comma-separated list).
    #[arg(
        long,
        visible_alias = "providers",
        value_enum,
        value_delimiter = ',',
        default_value = "both"
    )]
    provider: Vec<ProviderChoice>,
    /// Seed of the event choices (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long each run's job takes.
    #[arg(long, default_value = "8s")]
    job_duration: GoDuration,
    /// Longest the whole chaos run may take.
    #[arg(long, default_value = "10m")]
    timeout: GoDuration,
    /// Keep the directory with logs and state (it is kept anyway when the exit status is 1).
    #[arg(long)]
    keep_dir: bool,
    /// Foreign apps seeded into the fake DigitalOcean account (besides the lookalikes).
    #[arg(long, default_value_t = 100)]
    foreign_apps: u32,
    /// The image the docker lane's runs use (one the engine has).
    #[arg(long, default_value = docker::DEFAULT_IMAGE)]
    docker_image: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    let args = Args::parse();
    tokio::select! {
        outcome = run(args) => match outcome {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("chaos: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => {
            // Dropping `run` kills the workflow-workers, the fake's workers, the dev server and
            // (StrayGuard) every external worker of this chaos run.
            eprintln!("chaos: interrupted; stopping everything it started");
            ExitCode::from(130)
        }
    }
}

/// The whole chaos run; `Ok(true)` when the exit status is 0.
async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let kinds = kinds(&args.provider);
    // Before anything starts: a docker lane needs an engine.
    let engine = match kinds.contains(&Kind::Docker) {
        true => {
            let engine = docker::connect(docker::docker_host().as_deref()).await?;
            docker::check_image(&engine, &args.docker_image).await?;
            Some(engine)
        }
        false => None,
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let deadline = tokio::time::Instant::now() + args.timeout.as_duration();
    let bins = bins::Bins::locate()?;
    let dir = tea_harness::scratch_dir("chaos")?;
    let names: Vec<String> = kinds.iter().map(Kind::to_string).collect();
    say!(
        "chaos: seed {seed} (rerun with --seed {seed}), {} runs, providers {}, job {}, dir {}",
        args.runs,
        names.join(","),
        args.job_duration,
        dir.display()
    );

    let mut server = DevServer::try_start(
        &dir,
        DevServerOptions {
            db_file: Some(dir.join("temporal.db")),
            // Containers on a bridge network reach the host's bridge address, not loopback.
            ip: engine.as_ref().map(|_| "0.0.0.0".to_owned()),
            ..Default::default()
        },
    )
    .await?;
    let address = server.address();
    say!(
        "temporal dev server on {address} (database {})",
        dir.join("temporal.db").display()
    );
    let local_state_dir = dir.join("local-compute");
    let _strays = StrayGuard::new(address.clone());

    let setup = Setup {
        dir: &dir,
        local_state_dir: &local_state_dir,
        bins: &bins,
        address: &address,
        port: server.port,
        foreign_apps: args.foreign_apps,
        docker: engine.as_ref(),
        docker_image: &args.docker_image,
    };
    let mut lanes = Vec::new();
    for kind in &kinds {
        lanes.push(Lane::start(*kind, &setup).await?);
    }

    let runs = Arc::new(Mutex::new(Vec::new()));
    let input = runs::input(args.job_duration);
    let client = runs::connect_retrying(&address, deadline).await?;
    for i in 0..args.runs {
        let lane = &lanes[i % lanes.len()];
        let id = format!("chaos-{}-{i:03}-{seed}", lane.kind.short());
        let run_id = runs::start(&client, &lane.queue, &id, lane.input(&input)).await?;
        say!("{}: started run {id} (run ID {run_id})", lane.kind);
        runs::lock(&runs).push(runs::Run::new(id, run_id, lane.kind));
    }
    let waiters = runs::spawn_waiters(&runs, &address, deadline);

    let counts = events::chaos(
        &mut rng,
        &mut server,
        &mut lanes,
        &runs,
        events::Budget::for_runs(args.runs),
        deadline,
    )
    .await;
    for waiter in waiters {
        let _ = waiter.await;
    }
    say!("chaos over: every run is closed or the deadline passed; sweeping once per provider");

    let mut report = Report::new(seed, &kinds, &runs::lock(&runs), counts);
    for lane in &mut lanes {
        let swept = lane.sweep().await;
        match &swept {
            Ok(n) => say!("{}: the sweep deleted {n} unit(s) of compute", lane.kind),
            Err(e) => say!("{}: the sweep failed: {e:#}", lane.kind),
        }
        report.set_swept(lane.kind, swept);
    }
    for lane in &lanes {
        let measured = lane.measure(&address, Duration::from_secs(30)).await;
        report.set_measure(lane.kind, measured);
    }
    for lane in lanes {
        let kind = lane.kind;
        report.set_stopped(kind, lane.stop().await);
    }
    drop(server);

    let ok = report.ok();
    report.print();
    if ok && !args.keep_dir {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("logs and state kept in {}", dir.display());
    }
    println!(
        "exit status {}: {}",
        u8::from(!ok),
        if ok {
            "every run closed, no compute left running, no duplicate compute, no foreign compute \
             deleted"
        } else {
            "see the table above"
        }
    );
    Ok(ok)
}
