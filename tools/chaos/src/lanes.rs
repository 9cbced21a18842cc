//! One lane per compute provider: a workflow-worker process on its own task queue (restartable
//! with the same environment), for DigitalOcean the in-process fake API and an observer that
//! records every app it sees, for Docker a network of the chaos run's own and an observer of
//! the engine's container events, the live units of compute, and the final sweep.
//!
//! Each lane's account (fake DigitalOcean API, local state directory, the Docker engine) also
//! holds compute that is not the lane's: seeded foreign apps and lookalikes (`ext-api`, our
//! name shape without our mark or with another owner's). They must all survive the chaos and
//! the sweep.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, anyhow};
use nix::{sys::signal::kill, unistd::Pid};
use tea_compute::naming::compute_name;
use tea_contract::WorkflowInput;
use tea_fake_do::{FakeDo, FakeDoConfig, Fault, SeedApps, Signal};
use tea_harness::{Proc, ProcBuilder, pid_alive};
use tokio::task::JoinHandle;

use crate::{bins::Bins, docker::DockerLane, say};

/// Token of the fake DigitalOcean API (never a real one).
const DO_TOKEN: &str = "dop_v1_chaos_fake_token";
/// How long a killed workflow-worker may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the observer records the fake's apps.
const OBSERVE_EVERY: Duration = Duration::from_millis(100);

/// A compute provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Local,
    DigitalOcean,
    Docker,
}

impl Kind {
    /// Short name for IDs and queues.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::DigitalOcean => "do",
            Kind::Docker => "docker",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Local => "local",
            Kind::DigitalOcean => "digitalocean",
            Kind::Docker => "docker",
        })
    }
}

/// A unit of compute that exists now.
#[derive(Clone, Debug)]
pub struct Unit {
    pub name: String,
    /// App ID (DigitalOcean), container ID (Docker) or the name (local).
    pub id: String,
    /// Pid of its running external worker, if one runs (local and DigitalOcean).
    pub pid: Option<u32>,
    /// Whether its external worker runs (a live process, a running container).
    pub running: bool,
}

/// App ID -> app name of every app the observer saw.
pub type Seen = Arc<Mutex<BTreeMap<String, String>>>;

/// The fake DigitalOcean API and its observer.
pub struct Fake {
    pub api: Arc<FakeDo>,
    pub seen: Seen,
    pub log_dir: PathBuf,
    observer: JoinHandle<()>,
}

/// What every lane is started with.
pub struct Setup<'a> {
    /// The chaos run's directory.
    pub dir: &'a Path,
    /// Where the local lane keeps its compute.
    pub local_state_dir: &'a Path,
    pub bins: &'a Bins,
    /// The dev server's address for processes on this host.
    pub address: &'a str,
    /// The dev server's port (containers reach it through the host's bridge address).
    pub port: u16,
    /// Foreign apps seeded into the fake DigitalOcean account.
    pub foreign_apps: u32,
    /// The engine (docker lane only).
    pub docker: Option<&'a bollard::Docker>,
    /// The image of the docker lane's runs.
    pub docker_image: &'a str,
}

/// One provider's workflow-worker (and fake API, or Docker network).
pub struct Lane {
    pub kind: Kind,
    pub queue: String,
    pub dir: PathBuf,
    /// Where the local provider keeps its compute (local lane only).
    pub state_dir: PathBuf,
    bin: PathBuf,
    env: Vec<(String, String)>,
    worker: Option<Proc>,
    worker_starts: u32,
    sweeps: u32,
    pub fake: Option<Fake>,
    /// After `worker`: dropped (its containers and network removed) once the worker is killed.
    pub docker: Option<DockerLane>,
    /// Names of the compute in this lane's account that is not the lane's (seeded).
    pub foreign: BTreeSet<String>,
}

impl Lane {
    /// Starts the lane: for DigitalOcean the fake API first, for Docker the network and the
    /// foreign containers, then the workflow-worker.
    pub async fn start(kind: Kind, setup: &Setup<'_>) -> anyhow::Result<Lane> {
        let Setup {
            dir,
            local_state_dir,
            bins,
            address,
            foreign_apps,
            ..
        } = *setup;
        let lane_dir = dir.join(kind.to_string());
        std::fs::create_dir_all(&lane_dir)
            .with_context(|| format!("creating {}", lane_dir.display()))?;
        let suffix = uuid_suffix();
        let queue = format!("chaos-wf-{}-{suffix}", kind.short());
        let mut env: Vec<(String, String)> = vec![
            ("TEMPORAL_ADDRESS".into(), address.into()),
            ("WORKFLOW_TASK_QUEUE".into(), queue.clone()),
            ("DEPLOY_POLL_INITIAL".into(), "200ms".into()),
            ("DEPLOY_POLL_MAX".into(), "1s".into()),
            ("SWEEP_INTERVAL".into(), "0".into()),
            // Inherited by the local external workers: a fast dead-man switch.
            ("DEAD_MAN_CHECK_INTERVAL".into(), "1s".into()),
            (
                "EXTERNAL_WORKER_BIN".into(),
                path_str(&bins.external_worker),
            ),
        ];
        let foreign;
        let mut docker = None;
        let fake = match kind {
            Kind::Local => {
                foreign = seed_local(local_state_dir)?;
                env.push(("COMPUTE_OWNER".into(), owner(kind)));
                env.push(("COMPUTE_PROVIDER".into(), "local".into()));
                env.push(("LOCAL_KILL_GRACE".into(), "3s".into()));
                env.push(("LOCAL_STATE_DIR".into(), path_str(local_state_dir)));
                None
            }
            Kind::Docker => {
                let engine = setup
                    .docker
                    .ok_or_else(|| anyhow!("the docker lane has no Docker engine"))?;
                let lane = DockerLane::start(engine.clone(), setup.docker_image, &suffix).await?;
                foreign = lane.foreign.clone();
                env.extend([
                    ("COMPUTE_OWNER".into(), lane.owner.clone()),
                    ("COMPUTE_PROVIDER".into(), "docker".into()),
                    ("DOCKER_NETWORK".into(), lane.network.clone()),
                    (
                        "DOCKER_TEMPORAL_ADDRESS".into(),
                        format!("{}:{}", tea_compute::docker::HOST_ALIAS, setup.port),
                    ),
                    (
                        "DOCKER_LOG_DIR".into(),
                        path_str(&lane_dir.join("containers")),
                    ),
                    ("DOCKER_STOP_GRACE".into(), "2s".into()),
                ]);
                docker = Some(lane);
                None
            }
            Kind::DigitalOcean => {
                let log_dir = lane_dir.join("apps");
                let mut config = FakeDoConfig::new(DO_TOKEN)
                    .with_worker_command(&bins.external_worker, Vec::<String>::new())
                    .with_step_delay(Duration::from_millis(200));
                config.log_dir = Some(log_dir.clone());
                let api = Arc::new(FakeDo::start(config).await?);
                say!("digitalocean: fake API on {}", api.base_url());
                foreign = seed_do(&api, foreign_apps)?;
                env.push(("COMPUTE_OWNER".into(), owner(kind)));
                env.push(("COMPUTE_PROVIDER".into(), "digitalocean".into()));
                env.push(("DIGITALOCEAN_API_URL".into(), api.base_url()));
                env.push(("DIGITALOCEAN_ACCESS_TOKEN".into(), DO_TOKEN.into()));
                let seen = Seen::default();
                let observer = tokio::spawn(observe(api.clone(), seen.clone()));
                Some(Fake {
                    api,
                    seen,
                    log_dir,
                    observer,
                })
            }
        };
        let mut lane = Lane {
            kind,
            queue,
            dir: lane_dir,
            state_dir: local_state_dir.to_path_buf(),
            bin: bins.workflow_worker.clone(),
            env,
            worker: None,
            worker_starts: 0,
            sweeps: 0,
            fake,
            docker,
            foreign,
        };
        lane.spawn_worker()?;
        Ok(lane)
    }

    fn command(&self, log: PathBuf) -> ProcBuilder {
        self.env
            .iter()
            .fold(ProcBuilder::new(&self.bin, log), |b, (k, v)| b.env(k, v))
    }

    /// The workflow-worker's log file (all its incarnations, appended).
    pub fn worker_log(&self) -> PathBuf {
        self.dir.join("workflow-worker.log")
    }

    /// Starts the workflow-worker (again).
    pub fn spawn_worker(&mut self) -> anyhow::Result<()> {
        self.worker_starts += 1;
        let log = self.worker_log();
        append(
            &log,
            &format!(
                "=== chaos: starting workflow-worker #{} at {}",
                self.worker_starts,
                chrono::Utc::now().to_rfc3339()
            ),
        );
        let proc = self.command(log).try_spawn()?;
        say!(
            "{}: workflow-worker #{} started (pid {})",
            self.kind,
            self.worker_starts,
            proc.pid().map_or_else(|| "?".into(), |p| p.to_string())
        );
        self.worker = Some(proc);
        Ok(())
    }

    /// SIGKILLs the workflow-worker and waits for it to exit.
    pub async fn kill_worker(&mut self) -> anyhow::Result<()> {
        if let Some(mut proc) = self.worker.take() {
            proc.sigkill();
            proc.try_wait(EXIT_TIMEOUT).await?;
        }
        Ok(())
    }

    /// The exit status when the workflow-worker exited by itself since the last check.
    pub fn exited(&mut self) -> Option<String> {
        let proc = self.worker.as_mut()?;
        match proc.child.try_wait() {
            Ok(Some(status)) => {
                self.worker = None;
                Some(status.to_string())
            }
            Ok(None) => None,
            Err(e) => Some(format!("unknown status ({e})")),
        }
    }

    /// The units of the lane's compute that exist now (foreign compute left out).
    pub async fn live_units(&self) -> anyhow::Result<Vec<Unit>> {
        let mut units = self.all_units().await?;
        units.retain(|u| !self.foreign.contains(&u.name));
        Ok(units)
    }

    /// How many of the seeded foreign units no longer exist (must be 0).
    pub async fn foreign_deleted(&self) -> anyhow::Result<usize> {
        let names: BTreeSet<String> = self
            .all_units()
            .await?
            .into_iter()
            .map(|u| u.name)
            .collect();
        Ok(self.foreign.iter().filter(|n| !names.contains(*n)).count())
    }

    /// Every unit of compute in the lane's account now, foreign ones included.
    async fn all_units(&self) -> anyhow::Result<Vec<Unit>> {
        if let Some(docker) = &self.docker {
            return docker.units().await;
        }
        let unit = |name: String, id: String, pid: Option<u32>| {
            let pid = pid.filter(|p| pid_alive(*p));
            Unit {
                name,
                id,
                pid,
                running: pid.is_some(),
            }
        };
        Ok(match &self.fake {
            Some(fake) => fake
                .api
                .snapshot()
                .apps
                .into_iter()
                .map(|app| unit(app.name, app.id, app.worker_pid))
                .collect(),
            None => crate::measure::local_dirs(&self.state_dir)
                .into_iter()
                .map(|(name, dir)| unit(name.clone(), name, crate::measure::meta_pid(&dir)))
                .collect(),
        })
    }

    /// The run's input for this lane: the docker lane runs its image from the engine.
    pub fn input(&self, input: &WorkflowInput) -> WorkflowInput {
        let mut input = input.clone();
        if let Some(docker) = &self.docker {
            let (repository, tag) = tea_compute::docker::split_reference(&docker.image);
            input.registry = String::new();
            input.repository = repository.to_owned();
            input.tag = tag.to_owned();
        }
        input
    }

    /// Cuts the container of `unit` off its network (docker lane only).
    pub async fn disconnect_unit(&self, unit: &Unit) -> anyhow::Result<()> {
        match &self.docker {
            Some(docker) => docker.disconnect(unit).await,
            None => Err(anyhow!("only the docker lane has a network to cut")),
        }
    }

    /// SIGKILLs the external worker of `unit` (`docker kill` of its container).
    pub async fn kill_unit(&self, unit: &Unit) -> anyhow::Result<()> {
        if let Some(docker) = &self.docker {
            return docker.kill(unit).await;
        }
        match &self.fake {
            Some(fake) => {
                anyhow::ensure!(
                    fake.api.signal_worker(&unit.id, Signal::SIGKILL),
                    "no worker runs for app {}",
                    unit.id
                );
                Ok(())
            }
            None => {
                let pid = unit.pid.ok_or_else(|| anyhow!("no worker runs"))?;
                let pid = i32::try_from(pid).context("pid out of range")?;
                kill(Pid::from_raw(pid), Signal::SIGKILL).context("kill")?;
                Ok(())
            }
        }
    }

    /// Arms a fault in the fake API (DigitalOcean only).
    pub fn inject(&self, fault: Fault) -> bool {
        match &self.fake {
            Some(fake) => {
                fake.api.inject(fault);
                true
            }
            None => false,
        }
    }

    /// Counted faults still armed in the fake API (DigitalOcean only).
    pub fn faults_pending(&self) -> Option<usize> {
        self.fake
            .as_ref()
            .map(|fake| fake.api.snapshot().pending_faults.len())
    }

    /// Runs `workflow-worker sweep` once (grace period 0); returns how many units it deleted.
    pub async fn sweep(&mut self) -> anyhow::Result<usize> {
        self.sweeps += 1;
        let log = self.dir.join(format!("sweep-{}.log", self.sweeps));
        let mut sweep = self
            .command(log)
            .env("SWEEP_GRACE_PERIOD", "0")
            .env("LOG_LEVEL", "error")
            .arg("sweep")
            .arg("--json")
            .try_spawn()?;
        let status = sweep.try_wait(Duration::from_secs(120)).await?;
        let output = sweep.output();
        anyhow::ensure!(status.success(), "sweep exited {status}: {output}");
        let start = output
            .find('{')
            .ok_or_else(|| anyhow!("the sweep printed no JSON report: {output}"))?;
        let report: serde_json::Value = serde_json::Deserializer::from_str(&output[start..])
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the sweep printed no JSON report: {output}"))?
            .context("parsing the sweep's JSON report")?;
        let deleted = report["deleted"]
            .as_array()
            .ok_or_else(|| anyhow!("the sweep report has no `deleted` list: {report}"))?;
        for unit in deleted {
            say!(
                "{}: swept {} ({}): {}",
                self.kind,
                unit["name"].as_str().unwrap_or("?"),
                unit["outcome"].as_str().unwrap_or("?"),
                unit["reason"].as_str().unwrap_or("?")
            );
        }
        Ok(deleted
            .iter()
            .filter(|u| u["outcome"].as_str() == Some("Removed"))
            .count())
    }

    /// Stops the workflow-worker and, for DigitalOcean, the fake API and its workers; for
    /// Docker removes every container of the lane (foreign ones too) and its network.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.kill_worker().await;
        if let Some(docker) = &mut self.docker {
            let removed = docker.clean_up().await?;
            say!(
                "docker: removed {} from the engine",
                if removed.is_empty() {
                    "nothing".to_owned()
                } else {
                    removed.join(", ")
                }
            );
        }
        if let Some(fake) = self.fake.take() {
            fake.observer.abort();
            let _ = fake.observer.await;
            match Arc::try_unwrap(fake.api) {
                Ok(api) => api.shutdown().await,
                Err(api) => drop(api),
            }
        }
        Ok(())
    }
}

/// The lane's owner (`COMPUTE_OWNER`).
fn owner(kind: Kind) -> String {
    format!("chaos-{}", kind.short())
}

/// Seeds the fake account with apps that are not the lane's: lookalikes and `count` foreign
/// apps. Returns their names.
fn seed_do(api: &FakeDo, count: u32) -> anyhow::Result<BTreeSet<String>> {
    let ours = owner(Kind::DigitalOcean);
    let other = compute_name("chaos-someone-elses-run", 1);
    let unmarked = compute_name("chaos-unmarked-run", 1);
    let seeds = [
        SeedApps::one("ext-api", &[]),
        SeedApps::one("ext-api-ours", &[("TEA_COMPUTE_OWNER", ours.as_str())]),
        SeedApps::one(other, &[("TEA_COMPUTE_OWNER", "someone-else")]),
        SeedApps::one(unmarked, &[]),
        SeedApps::many(count, "foreign"),
    ];
    for seed in &seeds {
        api.seed(seed)?;
    }
    let names: BTreeSet<String> = api.snapshot().apps.into_iter().map(|a| a.name).collect();
    say!(
        "digitalocean: seeded {} apps that are not ours (lookalikes and foreign apps)",
        names.len()
    );
    Ok(names)
}

/// Seeds the local state directory with units that are not the lane's: `ext-api` and our name
/// shape marked by someone else or by no one. Returns their names.
fn seed_local(state_dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let seeds = [
        ("ext-api".to_owned(), None),
        (
            compute_name("chaos-someone-elses-run", 1),
            Some("someone-else"),
        ),
        (compute_name("chaos-unmarked-run", 1), None),
    ];
    let mut names = BTreeSet::new();
    for (name, mark) in seeds {
        let dir = state_dir.join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let meta = serde_json::json!({
            "name": name, "pid": 1, "start_time": u64::MAX,
            "created_at": "2020-01-01T00:00:00Z", "worker_bin": "/bin/false", "owner": mark,
        });
        std::fs::write(dir.join("meta.json"), meta.to_string())
            .with_context(|| format!("writing {}/meta.json", dir.display()))?;
        names.insert(name);
    }
    say!("local: seeded {} units that are not ours", names.len());
    Ok(names)
}

/// Records every app of the fake it sees, until aborted.
async fn observe(api: Arc<FakeDo>, seen: Seen) {
    loop {
        let snapshot = api.snapshot();
        {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for app in snapshot.apps {
                seen.entry(app.id).or_insert(app.name);
            }
        }
        tokio::time::sleep(OBSERVE_EVERY).await;
    }
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

fn uuid_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Appends a line to a log file (best effort).
fn append(path: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
