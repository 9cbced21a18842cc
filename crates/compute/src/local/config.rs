//! The local provider's settings and how they are read from the environment (`LOCAL_*`,
//! `EXTERNAL_WORKER_BIN`), including where the `external-worker` binary is found, or which
//! other command (`LOCAL_WORKER_COMMAND`: any SDK's worker) runs as each unit instead.

use std::{
    ffi::OsString,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::ProviderError;

/// File name of the worker binary looked up next to the current executable and on `PATH`.
pub const WORKER_BIN_NAME: &str = "external-worker";

/// How long [`ComputeProvider::delete`] waits after SIGTERM before SIGKILL, by default (never
/// less than the worker's job kill grace plus [`WORKER_REPORT_MARGIN`]).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// What delete adds to a worker's job kill grace (`JOB_KILL_GRACE`) before it SIGKILLs the
/// worker: the time the worker needs, after its job is gone, to report and exit.
pub const WORKER_REPORT_MARGIN: Duration = Duration::from_secs(5);

/// Configuration of the local provider.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Directory holding one subdirectory per unit of compute (created if missing).
    pub state_dir: PathBuf,
    /// The program to start as each unit: the `external-worker` binary, or the first word of
    /// `LOCAL_WORKER_COMMAND`.
    pub worker_bin: PathBuf,
    /// Arguments of [`Self::worker_bin`] (from `LOCAL_WORKER_COMMAND`; none for ours).
    pub worker_args: Vec<String>,
    /// How long delete waits after SIGTERM before SIGKILL (at least a worker's job kill grace
    /// plus [`Self::report_margin`]).
    pub kill_grace: Duration,
    /// What delete adds to a worker's job kill grace before SIGKILL ([`WORKER_REPORT_MARGIN`]).
    pub report_margin: Duration,
}

impl LocalConfig {
    /// A configuration with the default kill grace ([`DEFAULT_KILL_GRACE`]).
    pub fn new(state_dir: impl Into<PathBuf>, worker_bin: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            worker_bin: worker_bin.into(),
            worker_args: Vec::new(),
            kill_grace: DEFAULT_KILL_GRACE,
            report_margin: WORKER_REPORT_MARGIN,
        }
    }

    /// Configuration from the environment:
    ///
    /// - `LOCAL_STATE_DIR`, else `$XDG_STATE_HOME/temporal-external-activity/local`, else
    ///   `$HOME/.local/state/temporal-external-activity/local`, else
    ///   `/tmp/temporal-external-activity/local`;
    /// - `LOCAL_WORKER_COMMAND` (any program and its arguments: a JSON array of strings, or
    ///   words separated by spaces; the program a path or a name on `PATH`), else
    ///   `EXTERNAL_WORKER_BIN` (must be an executable file), else `external-worker` next to the
    ///   current executable, else `external-worker` on `PATH`;
    /// - `LOCAL_KILL_GRACE` (humantime, e.g. `5s`; default 10 s).
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::from_lookup(|key| std::env::var_os(key), std::env::current_exe().ok())
    }

    /// [`Self::from_env`] over an arbitrary variable lookup and current executable.
    pub(super) fn from_lookup(
        get: impl Fn(&str) -> Option<OsString>,
        current_exe: Option<PathBuf>,
    ) -> Result<Self, ProviderError> {
        let get = |key: &str| get(key).filter(|v| !v.is_empty());
        const APP_DIR: &str = "temporal-external-activity/local";

        let state_dir = if let Some(dir) = get("LOCAL_STATE_DIR") {
            PathBuf::from(dir)
        } else if let Some(xdg) = get("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
        {
            xdg.join(APP_DIR)
        } else if let Some(home) = get("HOME") {
            PathBuf::from(home).join(".local/state").join(APP_DIR)
        } else {
            PathBuf::from("/tmp").join(APP_DIR)
        };

        let command = get("LOCAL_WORKER_COMMAND")
            .map(|command| worker_command(&command.to_string_lossy(), get("PATH")))
            .transpose()?;
        if command.is_some() && get("EXTERNAL_WORKER_BIN").is_some() {
            return Err(ProviderError::permanent(
                "LOCAL_WORKER_COMMAND and EXTERNAL_WORKER_BIN are both set: set one (the \
                 command runs instead of the external-worker binary)",
            ));
        }
        let (worker_bin, worker_args) = match (command, get("EXTERNAL_WORKER_BIN")) {
            (Some(command), _) => command,
            (None, Some(bin)) => {
                let bin = PathBuf::from(bin);
                if !is_executable(&bin) {
                    return Err(ProviderError::permanent(format!(
                        "EXTERNAL_WORKER_BIN={}: not an executable file",
                        bin.display()
                    )));
                }
                (bin, Vec::new())
            }
            (None, None) => {
                let bin =
                    find_worker_bin(current_exe.as_deref(), get("PATH")).ok_or_else(|| {
                        ProviderError::permanent(format!(
                            "no `{WORKER_BIN_NAME}` binary next to the current executable or on \
                         PATH: build it with `cargo build --bin {WORKER_BIN_NAME}`, or set \
                         EXTERNAL_WORKER_BIN or LOCAL_WORKER_COMMAND"
                        ))
                    })?;
                (bin, Vec::new())
            }
        };

        let kill_grace = match get("LOCAL_KILL_GRACE") {
            None => DEFAULT_KILL_GRACE,
            Some(raw) => {
                let text = raw.to_string_lossy();
                humantime::parse_duration(&text).map_err(|e| {
                    ProviderError::permanent(format!(
                        "LOCAL_KILL_GRACE={text}: not a duration like `5s` or `500ms`: {e}"
                    ))
                })?
            }
        };

        Ok(Self {
            state_dir,
            worker_bin,
            worker_args,
            kill_grace,
            report_margin: WORKER_REPORT_MARGIN,
        })
    }
}

impl LocalConfig {
    /// The program and its arguments, for logs.
    pub fn describe_command(&self) -> String {
        let mut words = vec![self.worker_bin.display().to_string()];
        words.extend(self.worker_args.iter().cloned());
        words.join(" ")
    }
}

/// `LOCAL_WORKER_COMMAND`: a JSON array of strings (`["python3", "worker.py"]`) or words
/// separated by spaces (no quoting); the program resolved to an executable file, on `path`
/// when it names no directory.
fn worker_command(
    command: &str,
    path: Option<OsString>,
) -> Result<(PathBuf, Vec<String>), ProviderError> {
    let invalid =
        |why: String| ProviderError::permanent(format!("LOCAL_WORKER_COMMAND={command:?}: {why}"));
    let words: Vec<String> = if command.trim_start().starts_with('[') {
        serde_json::from_str(command)
            .map_err(|e| invalid(format!("not a JSON array of strings: {e}")))?
    } else {
        command.split_whitespace().map(str::to_owned).collect()
    };
    let Some((program, args)) = words.split_first() else {
        return Err(invalid("no program given".to_owned()));
    };
    let resolved = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| is_executable(p))
    } else {
        path.and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| is_executable(candidate))
        })
    };
    let program = resolved.ok_or_else(|| {
        invalid(format!(
            "{program:?} is not an executable file{}",
            if program.contains('/') {
                ""
            } else {
                " on PATH"
            }
        ))
    })?;
    Ok((program, args.to_vec()))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `external-worker` next to `current_exe` (or one level up when that is cargo's `deps/`
/// directory, as for test binaries), else the first one on `path`.
fn find_worker_bin(current_exe: Option<&Path>, path: Option<OsString>) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = current_exe.and_then(Path::parent) {
        candidates.push(dir.join(WORKER_BIN_NAME));
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(up) = dir.parent()
        {
            candidates.push(up.join(WORKER_BIN_NAME));
        }
    }
    if let Some(path) = path {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(WORKER_BIN_NAME)));
    }
    candidates.into_iter().find(|c| is_executable(c))
}
