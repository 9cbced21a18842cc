//! The on-disk state of the local provider: one directory per compute name holding
//! `meta.json`, `worker.log` and (once the worker has exited under our watch) `exit_status`,
//! plus per-name lock files under `.locks/` and kept logs under `logs/`.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use serde::{Deserialize, Serialize};

use crate::ProviderError;

/// Name of the directory (inside the state directory) where logs of deleted workers are kept.
pub(crate) const LOGS_DIR: &str = "logs";
/// Name of the directory (inside the state directory) holding the per-name lock files.
pub(crate) const LOCKS_DIR: &str = ".locks";
pub(crate) const META_FILE: &str = "meta.json";
pub(crate) const LOG_FILE: &str = "worker.log";
pub(crate) const EXIT_FILE: &str = "exit_status";

/// What `meta.json` records about the running worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The compute name (also the directory name).
    pub name: String,
    /// Process ID of the worker (leader of its own process group, and of its own session when
    /// [`Self::session`]).
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` at spawn, to tell our process from a reused pid.
    pub start_time: u64,
    /// RFC 3339 time the compute was first created (kept across restarts of a crashed worker).
    pub created_at: String,
    /// RFC 3339 time the current process was started.
    #[serde(default)]
    pub started_at: Option<String>,
    /// The binary that was started.
    pub worker_bin: PathBuf,
    /// The owner mark: the deployment that created this unit ([`crate::ComputeOwner`]).
    /// Absent in state written before marks existed: such a unit is nobody's.
    #[serde(default)]
    pub owner: Option<String>,
    /// Whether the worker was started as the leader of a session of its own (the session ID is
    /// its pid): every process of its jobs is in that session unless it started one of its
    /// own, and delete kills what is left of it. False in state written before: only the
    /// worker's process group is signalled.
    #[serde(default)]
    pub session: bool,
    /// How long delete waits after SIGTERM before SIGKILL, in milliseconds: at least the
    /// worker's own job kill grace plus the time to report, so the worker stops its job and
    /// reports before it is killed. Absent in state written before: the provider's kill grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_ms: Option<u64>,
}

/// What the reaper thread records when a worker it owned exits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub pid: u32,
    pub status: String,
}

pub(crate) fn io_err(what: &str, path: &Path, e: &io::Error) -> ProviderError {
    ProviderError::transient(format!("local provider: {what} {}: {e}", path.display()))
}

/// Read `meta.json` of `dir`: `Ok(None)` when it does not exist or cannot be parsed (a
/// directory left by a create that died before its process started).
pub(crate) fn read_meta(dir: &Path) -> Result<Option<Meta>, ProviderError> {
    let path = dir.join(META_FILE);
    match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable local meta.json");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", &path, &e)),
    }
}

/// Write `bytes` to `dir/file` atomically (temporary file, fsync, rename).
pub(crate) fn write_atomic(dir: &Path, file: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{file}.tmp"));
    let target = dir.join(file);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &target)
}

pub(crate) fn write_meta(dir: &Path, meta: &Meta) -> Result<(), ProviderError> {
    let bytes = serde_json::to_vec_pretty(meta)
        .map_err(|e| ProviderError::permanent(format!("local provider: encoding meta: {e}")))?;
    write_atomic(dir, META_FILE, &bytes).map_err(|e| io_err("writing meta in", dir, &e))
}

/// The exit status recorded for `pid` in `dir`, if the reaper recorded one for that pid.
pub(crate) fn read_exit(dir: &Path, pid: u32) -> Option<String> {
    let bytes = fs::read(dir.join(EXIT_FILE)).ok()?;
    let record: ExitRecord = serde_json::from_slice(&bytes).ok()?;
    (record.pid == pid).then_some(record.status)
}

pub(crate) fn write_exit(dir: &Path, pid: u32, status: &str) -> io::Result<()> {
    let record = ExitRecord {
        pid,
        status: status.to_owned(),
    };
    let bytes = serde_json::to_vec(&record).map_err(io::Error::other)?;
    write_atomic(dir, EXIT_FILE, &bytes)
}

/// Open `path` for appending, creating it.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Append one line to a log file (best effort: a log line is never worth failing a call).
pub(crate) fn append_line(path: &Path, line: &str) {
    if let Ok(mut f) = open_append(path) {
        let _ = writeln!(f, "{line}");
    }
}

/// Up to `n` last lines of the file at `path` (reading at most its last 64 KiB).
pub(crate) fn last_lines(path: &Path, n: usize) -> Vec<String> {
    const TAIL: u64 = 64 * 1024;
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if start > 0 && !lines.is_empty() {
        // The first line is probably cut.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| (*l).to_owned()).collect()
}

/// Move `log` to `target`, appending when `target` already exists.
pub(crate) fn keep_log(log: &Path, target: &Path) -> io::Result<()> {
    if !log.exists() {
        return Ok(());
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    if !target.exists() {
        return fs::rename(log, target);
    }
    let mut out = open_append(target)?;
    io::copy(&mut File::open(log)?, &mut out)?;
    fs::remove_file(log)
}

/// Remove `dir` and everything in it, retrying a few times: a reaper thread may still be
/// writing `exit_status` into it while it is being removed.
pub(crate) fn remove_dir(dir: &Path) -> io::Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match fs::remove_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("remove_dir_all failed")))
}

/// In-process mutexes, one per name, so two tasks of one process never work on a name at once.
#[derive(Default)]
pub(crate) struct NameLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds both the in-process mutex and the cross-process `flock` of one name.
pub(crate) struct NameGuard {
    _flock: Flock<File>,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

impl NameLocks {
    /// Lock `name` against other tasks of this process and other processes sharing
    /// `state_dir`. The lock files are never removed (removing a lock file that another process
    /// is waiting on would let two processes hold "the" lock).
    pub(crate) async fn lock(
        &self,
        state_dir: &Path,
        name: &str,
    ) -> Result<NameGuard, ProviderError> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(name.to_owned()).or_default())
        };
        let local = mutex.lock_owned().await;
        let locks = state_dir.join(LOCKS_DIR);
        let path = locks.join(format!("{name}.lock"));
        let flock = tokio::task::spawn_blocking(move || -> Result<Flock<File>, ProviderError> {
            fs::create_dir_all(&locks).map_err(|e| io_err("creating", &locks, &e))?;
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| io_err("opening lock file", &path, &e))?;
            loop {
                match Flock::lock(file, FlockArg::LockExclusive) {
                    Ok(lock) => return Ok(lock),
                    Err((f, Errno::EINTR)) => file = f,
                    Err((_, errno)) => {
                        return Err(ProviderError::transient(format!(
                            "local provider: locking {}: {errno}",
                            path.display()
                        )));
                    }
                }
            }
        })
        .await
        .map_err(|e| {
            ProviderError::transient(format!("local provider: lock task failed: {e}"))
        })??;
        Ok(NameGuard {
            _flock: flock,
            _local: local,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_returns_the_tail() {
        let dir = std::env::temp_dir().join(format!("tea-local-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("log");
        fs::write(&path, "a\nb\n\nc\nd\ne\nf\ng\n").expect("write");
        assert_eq!(last_lines(&path, 5), ["c", "d", "e", "f", "g"]);
        assert_eq!(last_lines(&dir.join("missing"), 5), Vec::<String>::new());
        let _ = fs::remove_dir_all(&dir);
    }
}
