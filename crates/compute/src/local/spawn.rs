//! Starting a worker: its explicit environment, the leader of a session of its own, its output
//! appended to the unit's log, its pid and `/proc` start time recorded in `meta.json`, and a
//! reaper thread that records its exit status.

use std::{
    ffi::OsString,
    fs,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use tea_runtime::procfs::ProcStat;

use super::{
    LocalProvider, Meta, process,
    process::reap_in_background,
    state::{EXIT_FILE, LOG_FILE, append_line, io_err, open_append, write_exit, write_meta},
};
use crate::{ComputeHandle, ComputeSpec, ProviderError};

impl LocalProvider {
    /// How long delete gives a worker with environment `env` between SIGTERM and SIGKILL: the
    /// provider's kill grace, but never less than the worker's job kill grace plus
    /// [`LocalConfig::report_margin`].
    pub(super) fn stop_grace(&self, env: &[(OsString, OsString)]) -> Duration {
        let job_grace = env
            .iter()
            .rev()
            .find(|(key, _)| key == tea_contract::JOB_KILL_GRACE_ENV)
            .and_then(|(_, value)| value.to_str()?.parse::<tea_contract::GoDuration>().ok())
            .map_or(tea_contract::DEFAULT_JOB_KILL_GRACE, |g| g.as_duration());
        self.cfg.kill_grace.max(job_grace + self.cfg.report_margin)
    }

    /// Start a worker for `spec` in `dir` (the name lock is held by the caller).
    pub(super) fn spawn(
        &self,
        spec: &ComputeSpec,
        dir: &Path,
        previous: Option<&Meta>,
    ) -> Result<ComputeHandle, ProviderError> {
        let name = spec.name.as_str();
        fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, &e))?;
        match fs::remove_file(dir.join(EXIT_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing old exit status in", dir, &e)),
        }

        let log_path = dir.join(LOG_FILE);
        let now = chrono::Utc::now().to_rfc3339();
        append_line(
            &log_path,
            &format!(
                "=== {now} starting {} for {name}",
                self.cfg.describe_command()
            ),
        );
        let stdout = open_append(&log_path).map_err(|e| io_err("opening", &log_path, &e))?;
        let stderr = stdout
            .try_clone()
            .map_err(|e| io_err("duplicating", &log_path, &e))?;

        let parent_env = match &self.parent_env {
            Some(env) => env.clone(),
            None => std::env::vars_os().collect(),
        };
        let env = process::child_env(parent_env, &spec.worker_env());
        let stop_grace = self.stop_grace(&env);
        let mut command = Command::new(&self.cfg.worker_bin);
        command
            .args(&self.cfg.worker_args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: the closure runs in the forked child before exec and makes one
        // async-signal-safe system call (setsid).
        unsafe {
            // The leader of a session (and process group) of its own: its jobs stay in it.
            command.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = command.spawn().map_err(|e| {
            let message = format!(
                "local provider: cannot start {} for {name}: {e}",
                self.cfg.worker_bin.display()
            );
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    ProviderError::permanent(message)
                }
                _ => ProviderError::transient(message),
            }
        })?;
        let pid = child.id();

        // The child is not reaped yet, so its /proc entry exists even if it already exited.
        let recorded = ProcStat::read(pid).map(|stat| Meta {
            name: name.to_owned(),
            pid,
            start_time: stat.start_time,
            created_at: previous.map_or_else(|| now.clone(), |m| m.created_at.clone()),
            started_at: Some(now.clone()),
            worker_bin: self.cfg.worker_bin.clone(),
            owner: Some(self.owner.as_str().to_owned()),
            session: true,
            stop_grace_ms: Some(u64::try_from(stop_grace.as_millis()).unwrap_or(u64::MAX)),
        });
        let written = match &recorded {
            Some(meta) => write_meta(dir, meta),
            None => Err(ProviderError::transient(format!(
                "local provider: cannot read /proc/{pid}/stat of the worker just started for {name}"
            ))),
        };
        if let Err(e) = written {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }

        let reaper_dir = dir.to_path_buf();
        let reaper_name = name.to_owned();
        if let Err(e) = reap_in_background(child, move |pid, status| {
            tracing::info!(name = %reaper_name, pid, %status, "local external worker exited");
            if reaper_dir.is_dir() {
                let _ = write_exit(&reaper_dir, pid, &status);
            }
        }) {
            tracing::warn!(name, pid, error = %e, "cannot start reaper thread for local worker");
        }

        let env_keys: Vec<&str> = spec.env.iter().map(|v| v.key.as_str()).collect();
        tracing::info!(
            name,
            pid,
            worker_bin = %self.cfg.worker_bin.display(),
            log = %log_path.display(),
            ?env_keys,
            restarted = previous.is_some(),
            "started local external worker"
        );
        Ok(ComputeHandle {
            id: name.to_owned(),
            name: name.to_owned(),
            revision: Some(pid.to_string()),
            adopted: false,
        })
    }
}
