//! Counting compute after the sweep: created, left running, duplicated, and external-worker
//! processes still alive; and the guard that kills every external worker of this chaos run
//! when the command ends, however it ends.
//!
//! Definitions (also printed under the table):
//! - compute created: local, distinct compute names the provider ever used (kept logs of
//!   deleted compute plus live directories); DigitalOcean, apps the fake ever stored; Docker,
//!   containers with the lane's owner label the engine created (its events, and every listing).
//! - compute left running: units that still exist after the sweep (local directories,
//!   DigitalOcean apps, Docker containers of the lane's owner, running or not), plus
//!   external-worker processes of this chaos run that belong to none.
//! - duplicate compute: a compute name that got a second unit after its first was deleted.
//!   Local: a `starting` line after a `deleted` line in the name's log, or a name that has both
//!   a kept log (deleted) and a live directory. DigitalOcean: more than one app ID under one
//!   name, from the fake's apps polled every 100 ms plus its per-app log files. Docker: more
//!   than one container ID under one name. (Two units with one name at the same time are
//!   impossible: the name is a lock directory locally, a 409 on DigitalOcean and on the
//!   engine. A worker restarted in place under the same name is not a duplicate.)

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use nix::{sys::signal::killpg, unistd::Pid};
use tea_fake_do::Signal;
use tea_harness::pid_alive;

use crate::lanes::{Kind, Lane};

/// What was measured for one lane.
#[derive(Clone, Debug, Default)]
pub struct Measure {
    pub created: u64,
    /// Local: external-worker processes started (a dead worker may be restarted under its
    /// name by a retried create); Docker: container starts.
    pub process_starts: Option<u64>,
    /// Units that still exist.
    pub units_left: usize,
    /// External-worker processes still alive (belonging to a unit or not; Docker: running
    /// containers).
    pub processes_alive: usize,
    /// Alive processes that belong to no existing unit.
    pub orphan_processes: usize,
    pub duplicates: usize,
    pub duplicate_names: Vec<String>,
    /// DigitalOcean only: apps stored that the observer never saw (their names are unknown, so
    /// duplicates among them cannot be ruled out).
    pub unobserved: u64,
    pub left_names: Vec<String>,
    /// Seeded foreign or lookalike compute that was deleted (must be 0).
    pub foreign_deleted: usize,
}

impl Measure {
    /// Compute left running, as reported.
    pub fn left_running(&self) -> usize {
        self.units_left + self.orphan_processes
    }
}

pub use tea_compute::local::{compute_dirs as local_dirs, recorded_pid as meta_pid};

/// An external-worker process of this chaos run.
#[derive(Clone, Debug)]
pub struct WorkerProcess {
    pub pid: u32,
    pub queue: String,
    /// Started by the local provider (its environment names the local state directory).
    pub local: bool,
}

/// External-worker processes alive now whose environment points at the dev server `address`.
///
/// External workers are non-dumpable (so a job cannot read their credentials): only root
/// (CAP_SYS_PTRACE) reads their environment. Run as another user, this fails rather than
/// count none of them.
pub fn external_workers(
    address: &str,
    local_state_dir: &Path,
) -> anyhow::Result<Vec<WorkerProcess>> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Ok(Vec::new());
    };
    let address_var = format!("TEMPORAL_ADDRESS={address}");
    let state_var = format!("LOCAL_STATE_DIR={}", local_state_dir.display());
    let mut workers = Vec::new();
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
    {
        let environ = match std::fs::read(format!("/proc/{pid}/environ")) {
            Ok(environ) => environ,
            Err(e)
                if e.kind() == std::io::ErrorKind::PermissionDenied && is_external_worker(pid) =>
            {
                anyhow::bail!(
                    "cannot read the environment of external-worker process {pid} (it is \
                     non-dumpable, to keep its credentials from jobs): run chaos as root"
                );
            }
            Err(_) => continue,
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let has = |var: &str| vars.contains(&var.as_bytes());
        if !has(&address_var) {
            continue;
        }
        let Some(queue) = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"EXTERNAL_TASK_QUEUE="))
            .map(|q| String::from_utf8_lossy(q).into_owned())
        else {
            continue;
        };
        if pid_alive(pid) {
            workers.push(WorkerProcess {
                pid,
                queue,
                local: has(&state_var),
            });
        }
    }
    Ok(workers)
}

/// Whether `pid` runs a binary named `external-worker` (its command line is readable by all).
fn is_external_worker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        program.ends_with(b"/external-worker") || program == b"external-worker"
    })
}

/// Kills every external worker of this chaos run (by its dev server address) when dropped.
pub struct StrayGuard {
    address: String,
}

impl StrayGuard {
    pub fn new(address: String) -> Self {
        StrayGuard { address }
    }
}

impl Drop for StrayGuard {
    fn drop(&mut self) {
        // Any state dir: only the address matters for killing.
        let workers = external_workers(&self.address, Path::new("/nonexistent"));
        for worker in workers.unwrap_or_default() {
            if let Ok(pid) = i32::try_from(worker.pid) {
                // Each worker leads its own process group (local provider and fake alike).
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Marker lines the local provider writes into a compute's log.
fn local_log_events(text: &str) -> Vec<bool> {
    // true = starting, false = deleted
    text.lines()
        .filter(|l| l.starts_with("=== "))
        .filter_map(|l| {
            if l.contains(" deleted: ") {
                Some(false)
            } else if l.contains(" starting ") {
                Some(true)
            } else {
                None
            }
        })
        .collect()
}

impl Lane {
    /// Measures after the sweep, first waiting up to `settle` for compute being stopped to go;
    /// an error when the lane's compute cannot be listed (the engine does not answer).
    pub async fn measure(&self, address: &str, settle: Duration) -> anyhow::Result<Measure> {
        let _ = tea_harness::try_wait_for("compute to be gone", settle, || async {
            let m = self.measure_now(address).await.ok()?;
            (m.units_left == 0 && m.processes_alive == 0).then_some(())
        })
        .await;
        self.measure_now(address).await
    }

    async fn measure_now(&self, address: &str) -> anyhow::Result<Measure> {
        let local_state_dir = self.state_dir.as_path();
        let procs: Vec<WorkerProcess> = match self.kind {
            // Containers' workers are the containers: counted below.
            Kind::Docker => Vec::new(),
            kind => external_workers(address, local_state_dir)?
                .into_iter()
                .filter(|p| p.local == (kind == Kind::Local))
                .collect(),
        };
        let units = self.live_units().await?;
        let unit_names: BTreeSet<&str> = units.iter().map(|u| u.name.as_str()).collect();
        let mut m = Measure {
            units_left: units.len(),
            processes_alive: procs.len(),
            orphan_processes: procs
                .iter()
                .filter(|p| !unit_names.contains(p.queue.as_str()))
                .count(),
            left_names: units.iter().map(|u| u.name.clone()).collect(),
            foreign_deleted: self.foreign_deleted().await?,
            ..Measure::default()
        };
        if let Some(docker) = &self.docker {
            let created = docker.created();
            m.created = created.containers;
            m.process_starts = Some(created.starts);
            m.processes_alive = units.iter().filter(|u| u.running).count();
            m.duplicates = created.duplicates.iter().map(|(_, n)| n - 1).sum();
            m.duplicate_names = created
                .duplicates
                .iter()
                .map(|(name, n)| format!("{name} ({n} containers)"))
                .collect();
            return Ok(m);
        }
        match &self.fake {
            None => {
                let logs_dir = local_state_dir.join("logs");
                let mut names: BTreeSet<String> = BTreeSet::new();
                let mut starts = 0u64;
                let live: BTreeMap<String, PathBuf> = local_dirs(local_state_dir)
                    .into_iter()
                    .filter(|(name, _)| !self.foreign.contains(name))
                    .collect();
                for (name, dir) in &live {
                    names.insert(name.clone());
                    let text = std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default();
                    starts += local_log_events(&text).iter().filter(|s| **s).count() as u64;
                }
                for entry in std::fs::read_dir(&logs_dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    let Some(name) = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(".log"))
                    else {
                        continue;
                    };
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let events = local_log_events(&text);
                    starts += events.iter().filter(|s| **s).count() as u64;
                    let recreated =
                        events.iter().skip_while(|s| **s).any(|s| *s) || live.contains_key(name);
                    if recreated {
                        m.duplicate_names.push(name.to_owned());
                    }
                    names.insert(name.to_owned());
                }
                m.created = names.len() as u64;
                m.process_starts = Some(starts);
            }
            Some(fake) => {
                let snapshot = fake.api.snapshot();
                let mut ids_by_name: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                let mut add = |id: &str, name: &str| {
                    if self.foreign.contains(name) {
                        return;
                    }
                    ids_by_name
                        .entry(name.to_owned())
                        .or_default()
                        .insert(id.to_owned());
                };
                for app in &snapshot.apps {
                    add(&app.id, &app.name);
                }
                for (id, name) in fake.seen.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    add(id, name);
                }
                for (name, id) in tea_fake_do::apps_with_logs(&fake.log_dir) {
                    add(&id, &name);
                }
                let observed: usize = ids_by_name.values().map(BTreeSet::len).sum();
                m.created = snapshot.total_created;
                m.unobserved = snapshot.total_created.saturating_sub(observed as u64);
                for (name, ids) in &ids_by_name {
                    if ids.len() > 1 {
                        m.duplicate_names
                            .push(format!("{name} ({} apps)", ids.len()));
                        m.duplicates += ids.len() - 1;
                    }
                }
            }
        }
        if self.kind == Kind::Local {
            m.duplicates = m.duplicate_names.len();
        }
        Ok(m)
    }
}
