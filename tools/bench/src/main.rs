//! `bench`: benchmarks of the release binaries on a real Temporal dev server, printed as one
//! table (metric, value, target, verdict).
//!
//! Sections (each starts its own dev server; `--only` runs one):
//! - `worker`: external-worker cold start to first task, idle RSS, binary sizes ([`worker`]);
//! - `cycle`: full run through the local provider with zero pauses and a zero-length job
//!   ([`cycle`]);
//! - `scale`: many runs at once through the fake DigitalOcean API ([`scale`]);
//! - `dead-worker`: SIGKILL of the external worker mid-job until re-provisioning
//!   ([`deadworker`]);
//! - `resume`: a 60 s job killed 40 s in, with and without checkpoints ([`resume`]).
//!
//! Build the binaries under test first: `cargo build --release --locked --bins`, then
//! `cargo run --release --locked -p tea-bench`. The binaries are looked up next to the bench
//! executable unless `--bin-dir` says otherwise.

mod cycle;
mod deadworker;
mod history;
mod resume;
mod scale;
mod setup;
mod stats;
mod table;
mod worker;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, ValueEnum};

use crate::{
    setup::{Bins, Env},
    table::Table,
};

/// Benchmarks the release binaries on a real Temporal dev server and prints one table.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Directory holding the release `workflow-worker` and `external-worker` (default: next to
    /// this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Samples for the cold-start and full-cycle medians.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Runs started at once in the scale section.
    #[arg(long, default_value_t = 1_000)]
    scale_runs: usize,
    /// Apps of someone else's seeded into the fake account in the scale section.
    #[arg(long, default_value_t = 1_000)]
    foreign_apps: u32,
    /// Kills in the dead-worker section.
    #[arg(long, default_value_t = 3)]
    dead_worker_samples: usize,
    /// Pairs of runs (with and without checkpoints) in the resume section.
    #[arg(long, default_value_t = 1)]
    resume_samples: usize,
    /// Run only this section.
    #[arg(long, value_enum)]
    only: Option<Section>,
    /// Also write the table as markdown to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Section {
    Worker,
    Cycle,
    Scale,
    DeadWorker,
    Resume,
}

impl Section {
    const ALL: [Section; 5] = [
        Section::Worker,
        Section::Cycle,
        Section::Scale,
        Section::DeadWorker,
        Section::Resume,
    ];

    fn name(self) -> &'static str {
        match self {
            Section::Worker => "worker",
            Section::Cycle => "cycle",
            Section::Scale => "scale",
            Section::DeadWorker => "dead-worker",
            Section::Resume => "resume",
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(table) if table.misses() == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<Table> {
    anyhow::ensure!(args.samples > 0, "--samples must be at least 1");
    anyhow::ensure!(
        args.resume_samples > 0,
        "--resume-samples must be at least 1"
    );
    let bins = Bins::locate(args.bin_dir.clone())?;
    let root = tea_harness::scratch_dir("bench")?;
    eprintln!(
        "bench: binaries from {}, files under {}",
        bins.dir.display(),
        root.display()
    );
    let mut table = Table::default();
    table.info("machine", "CPUs / model", machine());
    table.info(
        "machine",
        "load average (1/5/15 min) at start",
        load_average(),
    );
    let sections: Vec<Section> = match args.only {
        Some(only) => vec![only],
        None => Section::ALL.to_vec(),
    };
    for section in sections {
        eprintln!("bench: section {}", section.name());
        let result = async {
            let env = Env::start(&root, section.name()).await?;
            match section {
                Section::Worker => worker::run(&bins, &env, args.samples, &mut table).await,
                Section::Cycle => cycle::run(&bins, &env, args.samples, &mut table).await,
                Section::Scale => {
                    scale::run(&bins, &env, args.scale_runs, args.foreign_apps, &mut table).await
                }
                Section::DeadWorker => {
                    deadworker::run(&bins, &env, args.dead_worker_samples, &mut table).await
                }
                Section::Resume => resume::run(&bins, &env, args.resume_samples, &mut table).await,
            }
        }
        .await;
        if let Err(e) = result {
            eprintln!("bench: section {} failed: {e:#}", section.name());
            table.failed(section.name(), &e);
        }
        table.info(
            section.name(),
            "  load average (1/5/15 min) after the section",
            load_average(),
        );
    }
    println!("{}", table.to_text());
    if let Some(out) = &args.out {
        std::fs::write(out, table.to_markdown())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
        eprintln!("bench: wrote {}", out.display());
    }
    Ok(table)
}

/// Logical CPUs and the CPU model from `/proc/cpuinfo`.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} x {model}")
}

/// The first three fields of `/proc/loadavg`: how busy the machine was (other processes
/// included), to judge how noisy the timings are.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
