//! What every section needs: the release binaries under test, a scratch directory, the Temporal
//! dev server, workflow-workers configured for the local or the DigitalOcean provider, and
//! run inputs.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use tea_contract::{GoDuration, WorkflowInput};
use tea_harness::{DevServer, Proc, ProcBuilder};
use temporalio_client::Client;

/// The binaries under test.
#[derive(Clone, Debug)]
pub struct Bins {
    pub dir: PathBuf,
    pub workflow_worker: PathBuf,
    pub external_worker: PathBuf,
}

impl Bins {
    /// The binaries in `dir`, or next to this executable; an error naming the build command
    /// when one is missing.
    pub fn locate(dir: Option<PathBuf>) -> anyhow::Result<Bins> {
        let dir = match dir {
            Some(dir) => dir,
            None => std::env::current_exe()
                .context("locating the bench executable")?
                .parent()
                .map(Path::to_path_buf)
                .context("the bench executable has no parent directory")?,
        };
        let bins = Bins {
            workflow_worker: dir.join("workflow-worker"),
            external_worker: dir.join("external-worker"),
            dir,
        };
        for bin in [&bins.workflow_worker, &bins.external_worker] {
            if !bin.is_file() {
                bail!(
                    "{} not found; build the release binaries first with \
                     `cargo build --release --locked --bins` (or pass --bin-dir)",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }
}

/// A dev server and a client for it, with the section's files under `dir`.
pub struct Env {
    pub dir: PathBuf,
    pub server: DevServer,
    pub client: Client,
}

impl Env {
    pub async fn start(root: &Path, section: &str) -> anyhow::Result<Env> {
        let dir = root.join(section);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let server = DevServer::try_start(&dir, Default::default()).await?;
        let client = server
            .try_client()
            .await
            .context("connecting to the dev server")?;
        Ok(Env {
            dir,
            server,
            client,
        })
    }

    /// A fresh queue name for workflows of this section.
    pub fn queue(&self, label: &str) -> String {
        format!("bench-{label}-{}", uuid::Uuid::new_v4().simple())
    }

    /// A workflow-worker using the local provider: compute is an external-worker process.
    /// `max_concurrent_compute` sets `MAX_CONCURRENT_COMPUTE`.
    pub fn local_workflow_worker(
        &self,
        bins: &Bins,
        task_queue: &str,
        max_concurrent_compute: Option<&str>,
    ) -> anyhow::Result<Proc> {
        let log = self.dir.join(format!("workflow-worker-{task_queue}.log"));
        let mut builder = ProcBuilder::new(&bins.workflow_worker, log);
        if let Some(cap) = max_concurrent_compute {
            builder = builder.env("MAX_CONCURRENT_COMPUTE", cap);
        }
        builder
            .env("COMPUTE_PROVIDER", "local")
            .env(
                "LOCAL_STATE_DIR",
                self.local_state_dir().display().to_string(),
            )
            .env(
                "EXTERNAL_WORKER_BIN",
                bins.external_worker.display().to_string(),
            )
            .env("LOCAL_KILL_GRACE", "5s")
            .env("TEMPORAL_ADDRESS", self.server.address())
            .env("WORKFLOW_TASK_QUEUE", task_queue)
            .env("DEPLOY_POLL_INITIAL", "50ms")
            .env("DEPLOY_POLL_MAX", "200ms")
            .env("SWEEP_INTERVAL", "0")
            .try_spawn()
    }

    /// The local provider's state directory (one subdirectory per unit of compute).
    pub fn local_state_dir(&self) -> PathBuf {
        self.dir.join("compute")
    }

    /// Live local compute directories.
    pub fn local_compute_dirs(&self) -> Vec<PathBuf> {
        tea_compute::local::compute_dirs(&self.local_state_dir())
            .into_iter()
            .map(|(_, dir)| dir)
            .collect()
    }

    /// SIGKILLs the only live local external worker.
    pub fn sigkill_local_external_worker(&self) -> anyhow::Result<()> {
        let pid = self
            .local_external_worker_pid()
            .context("no single live external worker during the job")?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| anyhow::anyhow!("killing external worker {pid}: {e}"))
    }

    /// The pid of the only live local external worker.
    pub fn local_external_worker_pid(&self) -> Option<u32> {
        let dirs = self.local_compute_dirs();
        let [dir] = dirs.as_slice() else { return None };
        tea_compute::local::recorded_pid(dir)
    }
}

/// Input of a benchmark run: the given pause, job duration and heartbeat timeout.
pub fn input(pause: Duration, job: Duration, heartbeat_timeout: Duration) -> WorkflowInput {
    WorkflowInput {
        registry: "sje-test-registry".into(),
        repository: "external".into(),
        tag: "latest".into(),
        job_duration: Some(GoDuration(job)),
        pause: Some(GoDuration(pause)),
        heartbeat_timeout: Some(GoDuration(heartbeat_timeout)),
        worker_start_timeout: Some(GoDuration::from_secs(120)),
        max_compute_attempts: None,
        ..Default::default()
    }
}

/// Stops a process: SIGTERM, then SIGKILL after `grace`.
pub async fn stop(proc: &mut Proc, grace: Duration) {
    if let Some(pid) = proc.pid().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if proc.try_wait(grace).await.is_err() {
        proc.sigkill();
        let _ = proc.try_wait(Duration::from_secs(5)).await;
    }
}
