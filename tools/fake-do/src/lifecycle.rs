//! Deployment lifecycle and worker processes: one task per app moves its deployment through
//! `PENDING_DEPLOY -> DEPLOYING -> ACTIVE | ERROR` and then runs the app's first worker as a
//! local child process (own process group, `kill_on_drop`, parent-death signal on Linux),
//! restarting it when it exits by itself, and stopping it (SIGTERM, grace, SIGKILL, reap) when
//! the app is deleted or the fake shuts down.

use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::model::Phase;
use crate::state::{AppTask, Shared, WorkerExit, rfc3339};

/// Environment variable prefixes of the fake's own environment that workers do not inherit,
/// so that only the app's envs configure Temporal / DigitalOcean access (and the fake's token
/// never reaches a worker).
pub const STRIPPED_ENV_PREFIXES: &[&str] = &["TEMPORAL_", "DIGITALOCEAN_", "FAKE_DO_"];

/// How to start an app's worker.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_file: Option<PathBuf>,
    app_name: String,
}

/// Starts the lifecycle task of a freshly created app.
pub(crate) fn spawn_app_task(shared: &Arc<Shared>, app_id: String) -> AppTask {
    let (stop, rx) = watch::channel(false);
    let handle = tokio::spawn(run_app(shared.clone(), app_id, rx));
    AppTask { stop, handle }
}

/// Stops an app's task and waits until its worker process (if any) is gone and reaped.
pub(crate) async fn stop_app_task(shared: &Shared, task: AppTask) {
    let _ = task.stop.send(true);
    let mut handle = task.handle;
    let limit = shared.cfg.kill_grace + Duration::from_secs(5);
    if tokio::time::timeout(limit, &mut handle).await.is_err() {
        // Should not happen (terminate() escalates to SIGKILL); dropping the task drops the
        // Child, and kill_on_drop kills it.
        tracing::warn!("app task did not stop in time; aborting it");
        handle.abort();
        let _ = handle.await;
    }
}

/// Resolves when a stop was requested (or the stop sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps for `d` unless stopped first; returns false when stopped.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stopped(stop) => false,
    }
}

/// Sets the app's deployment phase; false if the app is gone.
fn set_phase(shared: &Shared, app_id: &str, phase: Phase) -> bool {
    let mut st = shared.lock();
    let Some(app) = st.app_mut(app_id) else {
        return false;
    };
    app.deployment.phase = phase;
    app.deployment.updated_at = Utc::now();
    true
}

async fn run_app(shared: Arc<Shared>, app_id: String, mut stop: watch::Receiver<bool>) {
    if !pause(shared.step_delay(), &mut stop).await
        || !set_phase(&shared, &app_id, Phase::Deploying)
    {
        return;
    }
    let rollout = shared
        .lock()
        .app(&app_id)
        .and_then(|a| a.deployment.running_while_deploying);
    if let Some(hold) = rollout {
        // The container runs while the deployment still reads DEPLOYING.
        let Some(launch) = launch_of(&shared, &app_id) else {
            return;
        };
        let mut promote_stop = stop.clone();
        let promote = async {
            if pause(hold, &mut promote_stop).await {
                finish_deployment(&shared, &app_id);
            }
        };
        tokio::join!(supervise(&shared, &app_id, &launch, &mut stop), promote);
        return;
    }
    if !pause(shared.step_delay(), &mut stop).await {
        return;
    }
    if finish_deployment(&shared, &app_id) == Some(Phase::Active)
        && let Some(launch) = launch_of(&shared, &app_id)
    {
        supervise(&shared, &app_id, &launch, &mut stop).await;
    }
}

/// Ends the app's deployment in `ACTIVE` (or `ERROR` under a `DeploymentError` fault); the
/// phase it ended in, or `None` when the app is gone.
fn finish_deployment(shared: &Shared, app_id: &str) -> Option<Phase> {
    let mut st = shared.lock();
    let app = st.app_mut(app_id)?;
    let phase = if app.deployment.fail {
        Phase::Error
    } else {
        Phase::Active
    };
    app.deployment.phase = phase;
    app.deployment.updated_at = Utc::now();
    tracing::info!(app_id = %app_id, app = %app.name, phase = phase.as_str(), "deployment finished");
    Some(phase)
}

/// How to start the app's worker, when the fake runs workers and the app has one.
fn launch_of(shared: &Shared, app_id: &str) -> Option<Launch> {
    let st = shared.lock();
    let app = st.app(app_id)?;
    match (&shared.cfg.worker_command, &app.first_worker) {
        (Some((program, args)), Some(_)) => Some(Launch {
            program: program.clone(),
            args: args.clone(),
            env: app.run_env.clone(),
            log_file: app.log_file.clone(),
            app_name: app.name.clone(),
        }),
        _ => None,
    }
}

/// Runs the worker until stopped, restarting it after `restart_delay` whenever it exits.
async fn supervise(
    shared: &Shared,
    app_id: &str,
    launch: &Launch,
    stop: &mut watch::Receiver<bool>,
) {
    loop {
        let restarts = shared.lock().app(app_id).map(|a| a.restarts);
        let Some(restarts) = restarts else {
            return;
        };
        match spawn_worker(launch, restarts) {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                let present = match shared.lock().app_mut(app_id) {
                    Some(app) => {
                        app.worker_pid = Some(pid);
                        true
                    }
                    None => false,
                };
                if !present {
                    terminate(&mut child, shared.cfg.kill_grace).await;
                    return;
                }
                tracing::info!(app_id, pid, restarts, "worker process started");
                tokio::select! {
                    status = child.wait() => {
                        let status = status.ok();
                        tracing::warn!(app_id, pid, ?status, "worker process exited by itself");
                        // Leftovers of its process group go too.
                        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                        record_exit(shared, app_id, pid, status, None, false);
                    }
                    _ = stopped(stop) => {
                        let status = terminate(&mut child, shared.cfg.kill_grace).await;
                        tracing::info!(app_id, pid, ?status, "worker process stopped");
                        record_exit(shared, app_id, pid, status, None, true);
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(app_id, program = %launch.program.display(), error = %e, "cannot start worker process");
                record_exit(shared, app_id, 0, None, Some(e.to_string()), false);
            }
        }
        if !pause(shared.cfg.restart_delay, stop).await {
            return;
        }
        let mut st = shared.lock();
        match st.app_mut(app_id) {
            Some(app) => app.restarts += 1,
            None => return,
        }
    }
}

fn record_exit(
    shared: &Shared,
    app_id: &str,
    pid: u32,
    status: Option<ExitStatus>,
    spawn_error: Option<String>,
    stopped_by_fake: bool,
) {
    use std::os::unix::process::ExitStatusExt;
    let mut st = shared.lock();
    if let Some(app) = st.app_mut(app_id) {
        app.worker_pid = None;
        app.exits.push(WorkerExit {
            pid,
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            spawn_error,
            stopped_by_fake,
            at: rfc3339(Utc::now()),
        });
    }
}

fn spawn_worker(launch: &Launch, restarts: u32) -> std::io::Result<Child> {
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args);
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if STRIPPED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        cmd.env(k, v);
    }
    cmd.envs(launch.env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(Stdio::null());
    match &launch.log_file {
        Some(path) => {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(
                out,
                "=== fake-do: starting worker of app {} at {} (restart {restarts}) ===",
                launch.app_name,
                rfc3339(Utc::now())
            )?;
            let err = out.try_clone()?;
            cmd.stdout(out).stderr(err);
        }
        None => {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
    }
    // Own process group, so that stopping the worker also stops anything it started.
    cmd.process_group(0);
    cmd.kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure only makes the prctl(2) syscall, which is async-signal-safe, and
    // touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            // Dies with the fake even if the fake itself is SIGKILLed: no orphans.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

/// SIGTERM to the worker's process group, up to `grace` to exit, then SIGKILL; always reaps.
async fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let Some(pid) = child.id() else {
        // Already reaped.
        return child.wait().await.ok();
    };
    let group = Pid::from_raw(pid as i32);
    if killpg(group, Signal::SIGTERM).is_err() {
        let _ = child.start_kill();
    }
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!(pid, "worker ignored SIGTERM for {grace:?}; sending SIGKILL");
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    };
    let _ = killpg(group, Signal::SIGKILL);
    status
}

/// Sends `signal` to an app's worker process group (chaos helper); false if none is running.
pub(crate) fn signal_worker(shared: &Shared, app_id: &str, signal: Signal) -> bool {
    let pid = shared.lock().app(app_id).and_then(|a| a.worker_pid);
    match pid {
        Some(pid) => killpg(Pid::from_raw(pid as i32), signal).is_ok(),
        None => false,
    }
}

/// Best-effort synchronous kill of every running worker (used by `Drop`).
pub(crate) fn kill_all_now(shared: &Shared) {
    let mut st = shared.lock();
    for pid in st.apps.iter().filter_map(|a| a.worker_pid) {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    for (_, task) in st.tasks.drain() {
        let _ = task.stop.send(true);
        task.handle.abort();
    }
}
