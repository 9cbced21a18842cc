//! Operating-system details of the local provider: signalling a worker's process group and
//! killing its session, building the child's environment and reaping children of this process.
//! Whether a recorded worker is still the one we started is [`tea_runtime::procfs::is_alive`].

use std::{
    collections::HashSet,
    ffi::{OsStr, OsString},
    os::unix::ffi::OsStrExt,
    process::Child,
    sync::{LazyLock, Mutex},
};

use nix::{
    errno::Errno,
    sys::signal::{self, Signal},
    unistd::Pid,
};

use tea_runtime::procfs::{self, ProcStat};

use crate::EnvVar;

/// Send `sig` to the process group led by `pid` (every worker is started as the leader of its
/// own group), falling back to the pid alone if there is no such group. A process that is
/// already gone is not an error.
pub(crate) fn signal_group(pid: u32, sig: Signal) -> Result<(), Errno> {
    let Ok(raw) = i32::try_from(pid) else {
        return Err(Errno::EINVAL);
    };
    if raw <= 1 {
        // Never signal init, every process (-1) or our own group (0).
        return Err(Errno::EINVAL);
    }
    let pid = Pid::from_raw(raw);
    match signal::killpg(pid, sig) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => match signal::kill(pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The live processes of the session `sid` now, other than this process.
fn session_members(sid: u32) -> Vec<u32> {
    let me = std::process::id();
    procfs::processes()
        .into_iter()
        .filter(|p| p.pid != me && p.session == sid && !p.has_exited())
        .map(|p| p.pid)
        .collect()
}

/// SIGKILLs every process left in the session of the worker `leader` (started at
/// `leader_start` as the leader of a session of its own): the worker itself and whatever of
/// its jobs is left, even processes that moved to process groups of their own. Not those
/// that started sessions of their own (`setsid`). Returns how many processes it signalled.
///
/// Never this process's own session. A session id outlives its leader only while a process
/// is still in the session (the kernel does not reuse the number until then), so a live
/// process with the leader's pid and another start time means the session is gone and the
/// id now names someone else's: nothing is signalled.
pub(crate) fn kill_session(leader: u32, leader_start: u64) -> usize {
    if leader <= 1 || nix::unistd::getsid(None).is_ok_and(|own| own.as_raw() as u32 == leader) {
        return 0;
    }
    if ProcStat::read(leader).is_some_and(|s| s.start_time != leader_start) {
        return 0;
    }
    let members = session_members(leader);
    for pid in &members {
        if let Ok(raw) = i32::try_from(*pid) {
            let _ = signal::kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
    members.len()
}

/// Whether any process but this one is left in the session `sid` of a worker started at
/// `leader_start` (see [`kill_session`] for how a reused id is told).
pub(crate) fn session_alive(sid: u32, leader_start: u64) -> bool {
    if ProcStat::read(sid).is_some_and(|s| s.start_time != leader_start) {
        return false;
    }
    !session_members(sid).is_empty()
}

/// Whether an environment variable of the parent reaches the worker. The worker's environment
/// is explicit, like an App Platform app's: its spec (queue, owner, the forwarded Temporal
/// connection) plus only these: the basics a process needs (`PATH`, locale, time zone, temp
/// dir), log settings, and the external worker's own tuning knobs. Nothing else is inherited:
/// not `HOME` (a temporal.toml profile there could redirect the worker), not the parent's
/// Temporal, DigitalOcean or workflow-worker settings, not its secrets.
pub(crate) fn is_inherited(key: &OsStr) -> bool {
    const NAMES: [&[u8]; 15] = [
        b"PATH",
        b"LANG",
        b"TZ",
        b"TMPDIR",
        b"RUST_BACKTRACE",
        b"RUST_LOG",
        b"LOG_LEVEL",
        b"LOG_FORMAT",
        b"NO_COLOR",
        // The external worker's own settings (see `external-worker --help`).
        b"IDLE_TIMEOUT",
        b"GRACEFUL_SHUTDOWN",
        b"DEAD_MAN_CHECK_INTERVAL",
        b"DEAD_MAN_ACTION",
        b"JOB_KILL_GRACE",
        b"SSL_CERT_FILE",
    ];
    let bytes = key.as_bytes();
    bytes.starts_with(b"LC_") || NAMES.contains(&bytes)
}

/// The complete environment of a worker: the parent's [`is_inherited`] variables, then the
/// spec's variables (which win over inherited ones).
pub(crate) fn child_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    spec: &[EnvVar],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = parent
        .into_iter()
        .filter(|(key, _)| is_inherited(key))
        .filter(|(key, _)| !spec.iter().any(|v| OsStr::new(&v.key) == key))
        .collect();
    env.extend(
        spec.iter()
            .map(|v| (OsString::from(&v.key), OsString::from(&v.value))),
    );
    env
}

/// Pids of children of this process whose reaper thread has not finished yet. Global because
/// pids are per process, not per provider instance.
static REAPING: LazyLock<Mutex<HashSet<u32>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

fn reaping() -> std::sync::MutexGuard<'static, HashSet<u32>> {
    REAPING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a reaper thread of this process still owns `pid`.
pub(crate) fn is_being_reaped(pid: u32) -> bool {
    reaping().contains(&pid)
}

/// Wait for `child` on a background thread so it never lingers as a zombie, then hand its exit
/// status (as text, e.g. `exit status: 3`) to `on_exit`.
pub(crate) fn reap_in_background(
    mut child: Child,
    on_exit: impl FnOnce(u32, String) + Send + 'static,
) -> std::io::Result<()> {
    let pid = child.id();
    reaping().insert(pid);
    let spawned = std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let status = match child.wait() {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown status (wait failed: {e})"),
            };
            on_exit(pid, status);
            reaping().remove(&pid);
        });
    match spawned {
        Ok(_) => Ok(()),
        Err(e) => {
            reaping().remove(&pid);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_env_is_explicit_and_lets_the_spec_win() {
        let parent = [
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("XDG_CONFIG_HOME", "/root/.config"),
            ("TEMPORAL_PROFILE", "prod"),
            ("DB_PASSWORD", "hunter2"),
            ("LC_ALL", "C.UTF-8"),
            ("DEAD_MAN_CHECK_INTERVAL", "1s"),
            ("TEMPORAL_ADDRESS", "parent:7233"),
            ("TEMPORAL_LEAK", "x"),
            ("DIGITALOCEAN_TOKEN", "tok"),
            ("LOCAL_STATE_DIR", "/s"),
            ("EXTERNAL_WORKER_BIN", "/w"),
            ("EXTERNAL_TASK_QUEUE", "old"),
            ("METRICS_ADDR", "127.0.0.1:9090"),
            ("SWEEP_INTERVAL", "5m"),
            ("COMPUTE_PROVIDER", "local"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let spec = [
            EnvVar {
                key: "TEMPORAL_ADDRESS".into(),
                value: "spec:7233".into(),
                secret: false,
            },
            EnvVar {
                key: "EXTERNAL_TASK_QUEUE".into(),
                value: "q".into(),
                secret: true,
            },
        ];
        let env = child_env(parent, &spec);
        let get = |k: &str| {
            env.iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("PATH"), ["/bin"]);
        assert_eq!(get("LC_ALL"), ["C.UTF-8"]);
        assert_eq!(get("DEAD_MAN_CHECK_INTERVAL"), ["1s"]);
        assert_eq!(get("TEMPORAL_ADDRESS"), ["spec:7233"]);
        assert_eq!(get("EXTERNAL_TASK_QUEUE"), ["q"]);
        for gone in [
            "HOME",
            "XDG_CONFIG_HOME",
            "TEMPORAL_PROFILE",
            "DB_PASSWORD",
            "METRICS_ADDR",
            "SWEEP_INTERVAL",
            "COMPUTE_PROVIDER",
            "TEMPORAL_LEAK",
            "DIGITALOCEAN_TOKEN",
            "LOCAL_STATE_DIR",
            "EXTERNAL_WORKER_BIN",
        ] {
            assert!(get(gone).is_empty(), "{gone}");
        }
    }
}
