//! Local-process provider: one `external-worker` OS process per run, or any other worker
//! (`LOCAL_WORKER_COMMAND`: a Python worker, a Go one).
//!
//! Each unit of compute is a process started from [`LocalConfig::worker_bin`] (with
//! [`LocalConfig::worker_args`]) with the spec's environment (the same variables a
//! DigitalOcean app would get), as the leader of a session
//! of its own: the jobs it runs stay in that session (in process groups of their own), so
//! delete ends every process of the unit, even when the worker itself was killed, by killing
//! what is left of the session. A job's process that starts a session of its own (`setsid`,
//! a daemon's double fork) leaves it: the worker kills such processes while it lives (they
//! are its descendants; it is their subreaper), but once the worker is SIGKILLed nothing
//! finds them.
//!
//! Delete first sends SIGTERM to the worker alone, which stops its job (SIGTERM, SIGKILL after
//! the job kill grace) and reports; it SIGKILLs the session only after the worker's
//! [`Meta::stop_grace_ms`], at least the job kill grace plus [`LocalConfig::report_margin`], so
//! the two grace periods do not race.
//!
//! Creating a provider makes this process non-dumpable: the jobs run as this user, and must
//! not read this process's environment (`/proc/<pid>/environ`: the Temporal API key, the job
//! secrets, a DigitalOcean token) or attach to it.
//! Everything the provider knows lives on disk under [`LocalConfig::state_dir`], so a
//! workflow-worker that is killed and restarted finds, adopts and deletes what an earlier
//! process started:
//!
//! ```text
//! <state_dir>/<name>/meta.json     name, pid, /proc start time, created_at, worker_bin, owner,
//!                                  session, stop grace
//! <state_dir>/<name>/worker.log    stdout + stderr of the worker (appended)
//! <state_dir>/<name>/exit_status   exit status, when the worker exited while we owned it
//! <state_dir>/.locks/<name>.lock   flock serialising processes working on one name
//! <state_dir>/logs/<name>.log      the worker's log, kept after delete
//! ```
//!
//! `owner` in `meta.json` is the ownership mark: [`LocalProvider::list_ours`] lists only
//! directories with a generated name whose `meta.json` carries this provider's owner, create
//! refuses to adopt (or replace) a unit marked by another owner or by none, and delete refuses
//! to stop one marked by another owner.
//! Several workflow-workers of different deployments may share one state directory.
//!
//! A run's resources are a request checked against this machine (its CPUs and memory), as
//! Kubernetes schedules requests; they are not enforced as limits. GPUs and sizes are refused.
//!
//! A recorded process counts as alive when `/proc/<pid>/stat` exists, is not a zombie and its
//! start time matches the recorded one (so a reused pid is never mistaken for our worker).
//!
//! Here: the provider and its lifecycle. Beside it: `spawn.rs` (starting a worker), `stop.rs`
//! (stopping one for delete), `process.rs` (signals, sessions, the child's environment,
//! reaping), `state.rs` (the state directory) and `config.rs`.

mod config;
mod machine;
mod process;
mod spawn;
mod state;
mod stop;
#[cfg(test)]
mod tests;

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use tea_runtime::procfs::is_alive;

pub use config::{DEFAULT_KILL_GRACE, LocalConfig, WORKER_BIN_NAME, WORKER_REPORT_MARGIN};
pub use state::Meta;

use crate::{
    ComputeHandle, ComputeOwner, ComputeProvider, ComputeSpec, ComputeSummary, Deleted,
    FoundCompute, ProviderError, Readiness, UnitSize,
    naming::{is_generated_name, is_portable_name},
    sizing::{self, Unsupported},
};
use state::{
    LOG_FILE, LOGS_DIR, NameLocks, append_line, io_err, keep_log, last_lines, read_exit, read_meta,
    remove_dir,
};
use stop::wait_reaped;

/// How many of the last log lines a `Failed` readiness quotes.
const LOG_LINES_IN_FAILURE: usize = 5;

/// Runs external workers as local processes; see the [module documentation](self).
pub struct LocalProvider {
    cfg: LocalConfig,
    owner: ComputeOwner,
    locks: NameLocks,
    /// Replaces the current environment as the base of the workers' environment (tests).
    parent_env: Option<Vec<(OsString, OsString)>>,
}

impl LocalProvider {
    /// A provider over `cfg`, creating the state directory if needed. Everything it starts is
    /// marked with `owner`; only units with that mark are listed, adopted or deleted.
    pub fn new(cfg: LocalConfig, owner: ComputeOwner) -> Result<Self, ProviderError> {
        // The jobs of the workers run as this user: keep them out of this process's
        // environment and memory (root still can: CAP_SYS_PTRACE).
        if let Err(e) = nix::sys::prctl::set_dumpable(false) {
            tracing::warn!(error = %e, "cannot make this process non-dumpable: jobs running as this user could read its environment");
        }
        fs::create_dir_all(&cfg.state_dir).map_err(|e| {
            ProviderError::permanent(format!(
                "local provider: cannot create state directory {}: {e}",
                cfg.state_dir.display()
            ))
        })?;
        Ok(Self {
            cfg,
            owner,
            locks: NameLocks::default(),
            parent_env: None,
        })
    }

    /// The configuration this provider runs with.
    pub fn config(&self) -> &LocalConfig {
        &self.cfg
    }

    /// The directory of the compute `name` (which may not exist).
    pub fn compute_dir(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join(name)
    }

    /// The log file of the running (or not yet deleted) compute `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.compute_dir(name).join(LOG_FILE)
    }

    /// Where the log of the compute `name` is kept after delete.
    pub fn kept_log_path(&self, name: &str) -> PathBuf {
        self.cfg
            .state_dir
            .join(LOGS_DIR)
            .join(format!("{name}.log"))
    }

    /// Name and pid of every live worker recorded in the state directory.
    pub fn running_pids(&self) -> Vec<(String, u32)> {
        self.compute_names("")
            .into_iter()
            .filter_map(|name| {
                let meta = read_meta(&self.compute_dir(&name)).ok().flatten()?;
                is_alive(meta.pid, Some(meta.start_time)).then_some((name, meta.pid))
            })
            .collect()
    }

    #[cfg(test)]
    fn with_parent_env(mut self, env: Vec<(OsString, OsString)>) -> Self {
        self.parent_env = Some(env);
        self
    }

    /// Sorted names of the compute directories whose name starts with `prefix`.
    fn compute_names(&self, prefix: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.cfg.state_dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n != LOGS_DIR && n.starts_with(prefix) && is_portable_name(n))
            .collect();
        names.sort();
        names
    }

    fn checked_dir(&self, name: &str) -> Result<PathBuf, ProviderError> {
        if is_portable_name(name) {
            Ok(self.compute_dir(name))
        } else {
            Err(ProviderError::permanent(format!(
                "local provider: invalid compute name {name:?} (must match \
                 ^[a-z][a-z0-9-]{{0,30}}[a-z0-9]$)"
            )))
        }
    }

    /// A permanent error when `meta` is not marked with this provider's owner.
    fn check_mark(&self, name: &str, meta: &Meta, doing: &str) -> Result<(), ProviderError> {
        if self.owner.marks(meta.owner.as_deref()) {
            return Ok(());
        }
        Err(ProviderError::permanent(format!(
            "local provider: compute {name} exists but is not ours: its owner mark is {}, this \
             deployment is {:?}; refusing to {doing} it (set COMPUTE_OWNER to tell deployments \
             apart, or remove {} by hand)",
            meta.owner
                .as_deref()
                .map_or_else(|| "absent".to_owned(), |m| format!("{m:?}")),
            self.owner.as_str(),
            self.compute_dir(name).display()
        )))
    }
}

/// How the registry describes and builds the local provider.
#[async_trait]
impl crate::registry::ProviderSettings for LocalConfig {
    fn describe(&self) -> String {
        format!(
            "worker={} state_dir={}",
            self.describe_command(),
            self.state_dir.display()
        )
    }

    fn build(
        self: Box<Self>,
        owner: ComputeOwner,
    ) -> Result<std::sync::Arc<dyn ComputeProvider>, ProviderError> {
        Ok(std::sync::Arc::new(LocalProvider::new(*self, owner)?))
    }
}

#[async_trait]
impl ComputeProvider for LocalProvider {
    fn registry_entry(&self) -> &'static crate::registry::Provider {
        &crate::registry::LOCAL
    }

    fn owner(&self) -> &ComputeOwner {
        &self.owner
    }

    async fn fit(&self, resources: &tea_contract::Resources) -> Result<UnitSize, ProviderError> {
        sizing::refuse_unsupported(
            self.kind(),
            resources,
            &[
                Unsupported {
                    field: "gpu",
                    why: "it runs processes on this machine and gives them no GPUs",
                },
                Unsupported {
                    field: "size",
                    why: "it has no sizes; ask for `cpu` and `memory`",
                },
            ],
        )?;
        machine::check_request(self.kind(), resources)?;
        Ok(UnitSize {
            cpu: resources.cpu,
            memory: resources.memory,
            ..Default::default()
        })
    }

    async fn create_or_adopt(&self, spec: &ComputeSpec) -> Result<ComputeHandle, ProviderError> {
        self.fit(&spec.resources).await?;
        let dir = self.checked_dir(&spec.name)?;
        let _guard = self.locks.lock(&self.cfg.state_dir, &spec.name).await?;
        let previous = read_meta(&dir)?;
        if let Some(meta) = &previous {
            self.check_mark(&spec.name, meta, "adopt or replace")?;
            if is_alive(meta.pid, Some(meta.start_time)) {
                tracing::info!(
                    name = %spec.name,
                    pid = meta.pid,
                    log = %dir.join(LOG_FILE).display(),
                    "adopted running local external worker"
                );
                return Ok(ComputeHandle {
                    id: spec.name.clone(),
                    name: spec.name.clone(),
                    revision: Some(meta.pid.to_string()),
                    adopted: true,
                });
            }
            tracing::warn!(
                name = %spec.name,
                pid = meta.pid,
                "recorded local external worker is gone; starting a new one"
            );
        }
        self.spawn(spec, &dir, previous.as_ref())
    }

    async fn readiness(&self, handle: &ComputeHandle) -> Result<Readiness, ProviderError> {
        let dir = self.checked_dir(&handle.id)?;
        let Some(meta) = read_meta(&dir)? else {
            return Err(ProviderError::not_found(format!(
                "local provider: no compute named {} (no meta.json in {})",
                handle.id,
                dir.display()
            )));
        };
        if is_alive(meta.pid, Some(meta.start_time)) {
            return Ok(Readiness::Ready {
                phase: "RUNNING".into(),
            });
        }
        wait_reaped(meta.pid).await;
        let status = read_exit(&dir, meta.pid)
            .unwrap_or_else(|| "unknown status (it was not started by this process)".to_owned());
        let lines = last_lines(&dir.join(LOG_FILE), LOG_LINES_IN_FAILURE);
        let tail = if lines.is_empty() {
            "(none)".to_owned()
        } else {
            lines.join(" | ")
        };
        Ok(Readiness::Failed {
            phase: "EXITED".into(),
            reason: format!(
                "external worker exited with {status} (pid {}); last log lines: {tail}",
                meta.pid
            ),
        })
    }

    async fn delete(&self, id: &str) -> Result<Deleted, ProviderError> {
        let dir = self.checked_dir(id)?;
        let _guard = self.locks.lock(&self.cfg.state_dir, id).await?;
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(Deleted::AlreadyGone);
        }
        let log_path = dir.join(LOG_FILE);
        let how = match read_meta(&dir)? {
            Some(meta) => {
                // Deleting by ID is explicit (the ID came from a create): refused only for a
                // unit another owner marked. An unmarked one (written before marks existed)
                // belongs to a run of this deployment's older version and is deleted when that
                // run asks.
                if meta.owner.is_some() {
                    self.check_mark(id, &meta, "delete")?;
                }
                self.stop_worker(id, &meta).await?
            }
            None => "was not running".to_owned(),
        };
        append_line(
            &log_path,
            &format!("=== {} deleted: {how}", chrono::Utc::now().to_rfc3339()),
        );
        let kept = self.kept_log_path(id);
        if let Err(e) = keep_log(&log_path, &kept) {
            tracing::warn!(name = id, error = %e, "cannot keep local worker log");
        }
        remove_dir(&dir).map_err(|e| io_err("removing", &dir, &e))?;
        tracing::info!(name = id, log = %kept.display(), how = %how, "deleted local external worker");
        Ok(Deleted::Removed)
    }

    async fn list_ours(&self, prefix: &str) -> Result<Vec<ComputeSummary>, ProviderError> {
        Ok(self
            .compute_names(prefix)
            .into_iter()
            .filter(|name| is_generated_name(name))
            .filter_map(|name| {
                let meta = read_meta(&self.compute_dir(&name)).ok().flatten()?;
                self.owner
                    .claim(&name, meta.owner.as_deref())
                    .is_ok()
                    .then(|| ComputeSummary {
                        id: name.clone(),
                        name,
                        created_at: Some(meta.created_at),
                    })
            })
            .collect())
    }

    async fn find(&self, name: &str) -> Result<Option<FoundCompute>, ProviderError> {
        // No unit can have a name that is not a portable one (nor `..`, nor a path).
        if !is_portable_name(name) || name == LOGS_DIR {
            return Ok(None);
        }
        let dir = self.compute_dir(name);
        if !dir.is_dir() {
            return Ok(None);
        }
        // A directory without a readable `meta.json` carries no mark.
        let meta = read_meta(&dir)?;
        Ok(Some(FoundCompute {
            unit: ComputeSummary {
                id: name.to_owned(),
                name: name.to_owned(),
                created_at: meta.as_ref().map(|m| m.created_at.clone()),
            },
            mark: meta.and_then(|m| m.owner),
        }))
    }
}

/// The units of compute a local state directory holds now: `(name, directory)`, sorted. For
/// tools that watch the provider from outside (tests, benchmarks, the chaos command).
pub fn compute_dirs(state_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            (name != LOGS_DIR && !name.starts_with('.')).then_some((name, p))
        })
        .collect();
    dirs.sort();
    dirs
}

/// The worker pid recorded for the unit of compute in `compute_dir` (alive or not).
pub fn recorded_pid(compute_dir: &Path) -> Option<u32> {
    read_meta(compute_dir).ok().flatten().map(|meta| meta.pid)
}

/// Logs of deleted units of compute, which the provider keeps.
pub fn kept_logs(state_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state_dir.join(LOGS_DIR))
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}
