//! `fake-do` binary: command-line/env configuration of the fake DigitalOcean App Platform API,
//! prints its base URL, serves until Ctrl-C or SIGTERM, then stops every worker process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tea_fake_do::{FakeDo, FakeDoConfig};
use tokio::signal::unix::{SignalKind, signal};

/// Fake DigitalOcean App Platform API (apps create/get/list/delete, deployments) that runs
/// each app's worker as a local process.
#[derive(Parser, Debug)]
#[command(name = "fake-do", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "FAKE_DO_BIND", default_value = "127.0.0.1:8085")]
    bind: SocketAddr,
    /// Bearer token clients must send (required; also read from FAKE_DO_TOKEN).
    #[arg(long, env = "FAKE_DO_TOKEN", hide_env_values = true)]
    token: String,
    /// Delay of each deployment step: milliseconds ("250") or humantime ("1s", "300ms").
    #[arg(long, env = "FAKE_DO_STEP_DELAY", default_value = "1s", value_parser = parse_delay)]
    step_delay: Duration,
    /// Program run for each app's first worker once its deployment is ACTIVE.
    #[arg(long, env = "FAKE_DO_WORKER_COMMAND")]
    worker_command: Option<PathBuf>,
    /// An argument for the worker program (repeatable; `--worker-arg=-c` for dashes).
    #[arg(long = "worker-arg", allow_hyphen_values = true)]
    worker_args: Vec<String>,
    /// More worker arguments after `--`.
    #[arg(last = true)]
    trailing_worker_args: Vec<String>,
    /// Directory for per-app worker logs (default: workers inherit stdout/stderr).
    #[arg(long, env = "FAKE_DO_LOG_DIR")]
    log_dir: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when stopping a worker.
    #[arg(long, env = "FAKE_DO_KILL_GRACE", default_value = "5s", value_parser = parse_delay)]
    kill_grace: Duration,
    /// Delay before restarting a worker that exited by itself.
    #[arg(long, env = "FAKE_DO_RESTART_DELAY", default_value = "1s", value_parser = parse_delay)]
    restart_delay: Duration,
    /// How long a deleted app stays visible before it reads as 404 (asynchronous delete).
    #[arg(long, env = "FAKE_DO_DELETE_DELAY", default_value = "0", value_parser = parse_delay)]
    delete_delay: Duration,
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is neither milliseconds nor a duration like 300ms/1s: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.token.trim().is_empty() {
        anyhow::bail!("--token / FAKE_DO_TOKEN must not be empty");
    }
    if args.worker_command.is_none()
        && !(args.worker_args.is_empty() && args.trailing_worker_args.is_empty())
    {
        anyhow::bail!("worker arguments given without --worker-command");
    }
    let mut cfg = FakeDoConfig::new(args.token);
    cfg.bind = args.bind;
    cfg.step_delay = args.step_delay;
    cfg.log_dir = args.log_dir;
    cfg.kill_grace = args.kill_grace;
    cfg.restart_delay = args.restart_delay;
    cfg.delete_delay = args.delete_delay;
    cfg.worker_command = args.worker_command.map(|program| {
        let mut worker_args = args.worker_args;
        worker_args.extend(args.trailing_worker_args);
        (program, worker_args)
    });
    // Before the base URL is printed: whoever reads it may stop us at once.
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let fake = FakeDo::start(cfg).await?;
    println!("{}", fake.base_url());

    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
    fake.shutdown().await;
    Ok(())
}
