//! Stopping a recorded worker for delete: SIGTERM to the worker alone (it stops its job
//! within its own grace and reports), SIGKILL to its group and session after
//! [`Meta::stop_grace_ms`], then whatever is left of its session; each step confirmed by
//! polling with a deadline.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tea_runtime::procfs::is_alive;

use super::{
    LocalProvider, Meta,
    process::{is_being_reaped, kill_session, session_alive, signal_group},
};
use crate::ProviderError;

/// How long delete waits for a SIGKILLed worker to be gone before reporting a transient error.
const KILL_CONFIRM: Duration = Duration::from_secs(5);

/// How long readiness and delete wait for this process's reaper thread to record an exit.
const REAP_WAIT: Duration = Duration::from_secs(2);

/// Interval of every poll (process gone, reaper done).
const POLL: Duration = Duration::from_millis(50);

/// First interval of the wait for a signalled worker to be gone (doubling up to [`POLL`]).
const FIRST_POLL: Duration = Duration::from_millis(1);

impl LocalProvider {
    /// Stops the worker `meta` records for the unit `id` and every process left in its
    /// session, and waits for this process's reaper; returns how it went, for the log.
    pub(super) async fn stop_worker(&self, id: &str, meta: &Meta) -> Result<String, ProviderError> {
        let mut how = "was not running".to_owned();
        let grace = meta
            .stop_grace_ms
            .map_or(self.cfg.kill_grace, Duration::from_millis);
        if is_alive(meta.pid, Some(meta.start_time)) {
            // The worker alone: it stops its job within its own grace, then reports.
            signal_group(meta.pid, Signal::SIGTERM).map_err(|e| {
                ProviderError::transient(format!(
                    "local provider: SIGTERM to worker {id} (pid {}): {e}",
                    meta.pid
                ))
            })?;
            how = "stopped by SIGTERM".to_owned();
            if !wait_gone(meta, grace).await {
                tracing::warn!(
                    name = id,
                    pid = meta.pid,
                    ?grace,
                    "local external worker ignored SIGTERM; sending SIGKILL"
                );
                if meta.session {
                    kill_session(meta.pid, meta.start_time);
                }
                signal_group(meta.pid, Signal::SIGKILL).map_err(|e| {
                    ProviderError::transient(format!(
                        "local provider: SIGKILL to worker {id} (pid {}): {e}",
                        meta.pid
                    ))
                })?;
                how = format!(
                    "killed by SIGKILL after ignoring SIGTERM for {}",
                    humantime::format_duration(grace)
                );
                if !wait_gone(meta, KILL_CONFIRM).await {
                    return Err(ProviderError::transient(format!(
                        "local provider: worker {id} (pid {}) still alive {} after SIGKILL",
                        meta.pid,
                        humantime::format_duration(KILL_CONFIRM)
                    )));
                }
            }
        }
        if meta.session {
            // What the worker could not stop (it was killed, or died): its jobs' processes.
            let left = kill_session(meta.pid, meta.start_time);
            if left > 0 {
                tracing::warn!(
                    name = id,
                    pid = meta.pid,
                    left,
                    "processes of the worker's jobs outlived it; killed them"
                );
                how.push_str(&format!(
                    "; {left} processes of its jobs left after it were killed"
                ));
                if !wait_session_gone(meta, KILL_CONFIRM).await {
                    return Err(ProviderError::transient(format!(
                        "local provider: processes of worker {id}'s session {} still alive \
                         {} after SIGKILL",
                        meta.pid,
                        humantime::format_duration(KILL_CONFIRM)
                    )));
                }
            }
        }
        wait_reaped(meta.pid).await;
        Ok(how)
    }
}

/// Poll until `done` says so or `limit` passes; true when it did. Looks again soon, then less
/// often: an idle worker exits within milliseconds of SIGTERM.
async fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut interval = FIRST_POLL;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(POLL);
    }
}

/// Poll until the recorded process is gone or `limit` passes; true when it is gone.
async fn wait_gone(meta: &Meta, limit: Duration) -> bool {
    poll_until(limit, || !is_alive(meta.pid, Some(meta.start_time))).await
}

/// Poll until no process is left in the worker's session, or `limit` passes (SIGKILLing
/// each look, as processes may fork while being killed); true when none is left.
async fn wait_session_gone(meta: &Meta, limit: Duration) -> bool {
    poll_until(limit, || {
        if !session_alive(meta.pid, meta.start_time) {
            return true;
        }
        kill_session(meta.pid, meta.start_time);
        false
    })
    .await
}

/// Poll until this process's reaper thread for `pid` (if any) has finished, bounded.
pub(super) async fn wait_reaped(pid: u32) {
    let deadline = Instant::now() + REAP_WAIT;
    let mut interval = FIRST_POLL;
    while is_being_reaped(pid) && Instant::now() < deadline {
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(10));
    }
}
