//! `fake-k8s` binary: serves a fake Kubernetes cluster (see the library), prints its address,
//! optionally writes a kubeconfig for it, and serves until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tea_fake_k8s::{FakeK8s, FakeK8sConfig};
use tokio::signal::unix::{SignalKind, signal};

/// A fake Kubernetes API server (Jobs, pods, pod logs, Secrets) whose kubelet runs each pod's
/// container as a local process.
#[derive(Parser, Debug)]
#[command(name = "fake-k8s", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "FAKE_K8S_BIND", default_value = "127.0.0.1:8086")]
    bind: SocketAddr,
    /// An image and the program it runs, as `IMAGE=PROGRAM` (repeatable), e.g.
    /// `--image registry.example/external:latest=target/debug/external-worker`.
    #[arg(long = "image", value_parser = parse_image)]
    images: Vec<(String, PathBuf)>,
    /// Directory for the containers' logs.
    #[arg(long, env = "FAKE_K8S_LOG_DIR", default_value = "/tmp/fake-k8s/logs")]
    log_dir: PathBuf,
    /// Write a kubeconfig for the fake here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The namespace of the kubeconfig's context.
    #[arg(long, default_value = "default")]
    namespace: String,
}

fn parse_image(text: &str) -> Result<(String, PathBuf), String> {
    let (image, program) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected IMAGE=PROGRAM"))?;
    if image.is_empty() || program.is_empty() {
        return Err(format!("{text:?}: expected IMAGE=PROGRAM"));
    }
    Ok((image.to_owned(), PathBuf::from(program)))
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
    let mut cfg = FakeK8sConfig::new(args.log_dir);
    cfg.bind = args.bind;
    for (image, program) in args.images {
        cfg = cfg.with_image(&image, program, Vec::<String>::new());
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let fake = FakeK8s::start(cfg).await?;
    if let Some(path) = &args.kubeconfig {
        fake.write_kubeconfig(path, &args.namespace)?;
    }
    println!("{}", fake.base_url());
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
    }
    fake.shutdown().await;
    Ok(())
}
