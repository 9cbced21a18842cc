//! The pattern end to end through the local provider: one real external-worker process per
//! run, adopted and deleted by whichever workflow-worker process is alive.

use std::{path::PathBuf, time::Duration};

use futures::StreamExt;
use tea_compute::local;
use tea_orchestrator::sweeper::{SWEEP_WORKFLOW_TYPE, SweepLeakedCompute};
use tea_starter::{RunEnd, RunHandle};
use temporalio_client::{
    WorkflowCancelOptions, WorkflowGetResultOptions, WorkflowListOptions, WorkflowTerminateOptions,
};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;

use crate::support::{
    self, DevServer, Proc, ProcBuilder, bin, history, pid_alive,
    run::{self, RUN_TIMEOUT, pending_job},
    test_dir, unique, wait_for,
};

/// What each local unit of compute runs.
#[derive(Clone, Copy)]
pub(crate) enum UnitWorker<'a> {
    /// A worker binary (`EXTERNAL_WORKER_BIN`).
    Bin(&'a std::path::Path),
    /// A command, as a JSON array (`LOCAL_WORKER_COMMAND`): any SDK's worker.
    Command(&'a str),
}

/// The workflow-worker command using the local provider with state in `dir/compute`, running
/// `worker_bin` as each unit of compute, on `task_queue`, logging to `dir/log`.
pub(crate) fn workflow_worker(
    dir: &std::path::Path,
    server: &DevServer,
    task_queue: &str,
    worker_bin: &std::path::Path,
    log: &str,
) -> ProcBuilder {
    workflow_worker_running(dir, server, task_queue, UnitWorker::Bin(worker_bin), log)
}

/// Like [`workflow_worker`], running `worker` as each unit of compute.
fn workflow_worker_running(
    dir: &std::path::Path,
    server: &DevServer,
    task_queue: &str,
    worker: UnitWorker<'_>,
    log: &str,
) -> ProcBuilder {
    let command = support::workflow_worker(dir, server, task_queue, log)
        .env("COMPUTE_PROVIDER", "local")
        .env("LOCAL_STATE_DIR", dir.join("compute").display().to_string())
        .env("LOCAL_KILL_GRACE", "5s")
        // Inherited by the local external workers: a fast dead-man switch.
        .env("DEAD_MAN_CHECK_INTERVAL", "200ms");
    match worker {
        UnitWorker::Bin(bin) => command.env("EXTERNAL_WORKER_BIN", bin.display().to_string()),
        UnitWorker::Command(argv) => command.env("LOCAL_WORKER_COMMAND", argv),
    }
}

/// A dev server and a workflow-worker process using the local provider.
pub(crate) struct Fixture {
    pub(crate) dir: PathBuf,
    pub(crate) server: DevServer,
    pub(crate) worker: Proc,
    pub(crate) task_queue: String,
}

impl Fixture {
    pub(crate) async fn start(test: &str) -> Fixture {
        Self::start_with(test, UnitWorker::Bin(&bin("external-worker")), &[]).await
    }

    /// Like [`Fixture::start`], with more settings for the workflow-worker (and, through the
    /// variables it passes on, its external workers).
    pub(crate) async fn start_with_env(test: &str, env: &[(&str, &str)]) -> Fixture {
        Self::start_with(test, UnitWorker::Bin(&bin("external-worker")), env).await
    }

    /// Like [`Fixture::start`], with `worker_bin` run as each unit of compute.
    async fn start_with_worker_bin(test: &str, worker_bin: PathBuf) -> Fixture {
        Self::start_with(test, UnitWorker::Bin(&worker_bin), &[]).await
    }

    /// Like [`Fixture::start_with_env`], with `worker` run as each unit of compute.
    pub(crate) async fn start_with(
        test: &str,
        worker: UnitWorker<'_>,
        env: &[(&str, &str)],
    ) -> Fixture {
        let dir = test_dir(test);
        let server = DevServer::start(&dir).await;
        let task_queue = unique(&format!("wf-{test}"));
        let log = "workflow-worker.log";
        let mut worker = workflow_worker_running(&dir, &server, &task_queue, worker, log);
        for (key, value) in env {
            worker = worker.env(key, *value);
        }
        Fixture {
            worker: worker.spawn(),
            dir,
            server,
            task_queue,
        }
    }

    /// Runs `workflow-worker sweep` once with a zero grace period; returns its JSON report.
    async fn sweep_once(&self, dry_run: bool) -> serde_json::Value {
        self.sweep_with(&[("SWEEP_DRY_RUN", if dry_run { "true" } else { "false" })])
            .await
    }

    /// [`Fixture::sweep_once`] with more settings.
    pub(crate) async fn sweep_with(&self, env: &[(&str, &str)]) -> serde_json::Value {
        let log = format!("sweep-{}.log", uuid::Uuid::new_v4().simple());
        let mut sweep = workflow_worker(
            &self.dir,
            &self.server,
            &self.task_queue,
            &bin("external-worker"),
            &log,
        )
        .env("SWEEP_GRACE_PERIOD", "0")
        .env("LOG_LEVEL", "error");
        for (key, value) in env {
            sweep = sweep.env(key, *value);
        }
        let mut sweep = sweep.arg("sweep").arg("--json").spawn();
        let status = sweep.wait(Duration::from_secs(60)).await;
        assert!(status.success(), "sweep failed: {}", sweep.output());
        serde_json::from_str(&sweep.output())
            .unwrap_or_else(|e| panic!("sweep printed no JSON report ({e}): {}", sweep.output()))
    }

    /// Starts a run and waits until its job runs on an external worker; returns the run and
    /// that worker's pid.
    pub(crate) async fn start_job(&self, test: &str, job: &str) -> (RunHandle, u32) {
        let handle = self.start_run(test, job).await;
        wait_for("the job to start", RUN_TIMEOUT, || pending_job(&handle)).await;
        let pid = self
            .external_worker_pid()
            .expect("one external worker process during the job");
        (handle, pid)
    }

    async fn start_run(&self, test: &str, job: &str) -> RunHandle {
        run::start(&self.server.client().await, &self.task_queue, test, job).await
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("compute")
    }

    /// Live compute directories (one per unit of compute the provider runs).
    pub(crate) fn compute_dirs(&self) -> Vec<PathBuf> {
        local::compute_dirs(&self.state_dir())
            .into_iter()
            .map(|(_, dir)| dir)
            .collect()
    }

    /// Fails when any unit of compute is still there.
    pub(crate) fn assert_no_compute_left(&self) {
        let left = self.compute_dirs();
        assert!(left.is_empty(), "compute left: {left:?}");
    }

    /// Logs of compute that was deleted (the provider keeps them).
    pub(crate) fn kept_logs(&self) -> Vec<PathBuf> {
        local::kept_logs(&self.state_dir())
    }

    /// The pid of the only running external worker.
    fn external_worker_pid(&self) -> Option<u32> {
        let dirs = self.compute_dirs();
        let [dir] = dirs.as_slice() else { return None };
        local::recorded_pid(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_happy_path_runs_a_real_external_worker_process_and_stops_it() {
    let fx = Fixture::start("local-happy").await;
    let (handle, pid) = fx.start_job("local-happy", run::OBSERVABLE_JOB).await;
    assert!(pid_alive(pid));

    let outcome = run::completed(&handle, &fx.worker).await;
    // The unit lived at least as long as the job; a local process has no price.
    let [usage] = outcome.usage.as_slice() else {
        panic!("one unit of usage: {:?}", outcome.usage);
    };
    assert_eq!(usage.compute_name, outcome.compute_name);
    let job = run::observable_job_duration();
    assert!(usage.seconds >= job.as_secs_f64(), "{usage:?}");
    assert_eq!(usage.estimated_cost_usd, None);
    assert!(!pid_alive(pid), "external worker {pid} still running");
    fx.assert_no_compute_left();
    let logs = fx.kept_logs();
    assert_eq!(logs.len(), 1, "exactly one unit of compute: {logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap_or_default();
    assert!(
        log.contains("long running command finished"),
        "external worker log: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cancel_during_the_job_stops_the_process_and_ends_cancelled() {
    let fx = Fixture::start("local-cancel").await;
    let (handle, pid) = fx.start_job("local-cancel", "10m").await;

    let end = run::cancel_and_finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    assert!(
        !pid_alive(pid),
        "external worker {pid} still running after cancel"
    );
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_worker_killed_mid_job_and_restarted_completes_and_leaves_nothing() {
    let mut fx = Fixture::start("local-sigkill").await;
    let (handle, pid) = fx.start_job("local-sigkill", run::OBSERVABLE_JOB).await;

    // SIGKILL: no cleanup code of the workflow-worker runs; the external worker lives on.
    fx.worker.sigkill();
    let status = fx.worker.wait(Duration::from_secs(10)).await;
    assert!(!status.success());
    assert!(
        pid_alive(pid),
        "the external worker must survive its parent's death"
    );

    fx.worker = workflow_worker(
        &fx.dir,
        &fx.server,
        &fx.task_queue,
        &bin("external-worker"),
        "workflow-worker.log",
    )
    .spawn();
    run::completed(&handle, &fx.worker).await;
    assert!(!pid_alive(pid), "external worker {pid} left running");
    fx.assert_no_compute_left();
    assert_eq!(
        fx.kept_logs().len(),
        1,
        "a second unit of compute was started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_external_worker_is_replaced_by_fresh_compute_and_the_run_completes() {
    let fx = Fixture::start("local-dead-worker").await;
    let (handle, first) = fx.start_job("local-dead-worker", run::OBSERVABLE_JOB).await;

    // SIGKILL the external worker: only the heartbeat timeout (5 s here) can notice.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(first).expect("pid fits i32")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the external worker");

    let outcome = run::completed(&handle, &fx.worker).await;
    assert_eq!(outcome.attempts, 2, "one replacement compute");
    assert!(
        outcome.compute_name.ends_with("-2"),
        "{}",
        outcome.compute_name
    );
    assert!(!pid_alive(first));
    fx.assert_no_compute_left();
    assert_eq!(
        fx.kept_logs().len(),
        2,
        "the dead compute and its replacement, both deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_that_never_polls_is_torn_down_and_the_run_fails_after_its_attempts() {
    // A "bad image": it runs, but never polls the run's queue.
    let dir = test_dir("never-polls-bin");
    let never_polls = dir.join("never-polls");
    std::fs::write(&never_polls, "#!/bin/sh\nexec sleep 1000\n").expect("write script");
    std::fs::set_permissions(
        &never_polls,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let fx = Fixture::start_with_worker_bin("local-never-polls", never_polls).await;

    let client = fx.server.client().await;
    let mut input = run::input("1s");
    input.worker_start_timeout = Some(tea_contract::GoDuration::from_secs(2));
    input.max_compute_attempts = Some(2);
    let id = unique("never-polls");
    let handle = tea_starter::start(&client, &fx.task_queue, &id, input)
        .await
        .expect("start");
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected failure, run ended {end}");
    };
    assert!(message.contains("no worker polled"), "{message}");
    assert!(message.contains("gave up after 2"), "{message}");
    fx.assert_no_compute_left();
    assert_eq!(fx.kept_logs().len(), 2, "two attempts, both deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_run_s_external_worker_stops_by_itself() {
    // Terminate runs no workflow code, so no Delete: the worker's dead-man switch must stop it.
    let fx = Fixture::start("local-terminate").await;
    let (handle, pid) = fx.start_job("local-terminate", "10m").await;
    terminate_and_wait_for_its_worker(&handle, pid).await;
}

/// Terminates the run (no workflow code runs, so no Delete: its unit stays, owned by no
/// running run) and waits until Temporal lists the run as closed and its external worker `pid`
/// has stopped by itself (its dead-man switch).
pub(crate) async fn terminate_and_wait_for_its_worker(handle: &RunHandle, pid: u32) {
    handle
        .terminate(WorkflowTerminateOptions::builder().reason("test").build())
        .await
        .expect("terminate");
    run::wait_until_listed(handle, false).await;
    wait_for(
        "the orphaned external worker to stop by itself",
        Duration::from_secs(60),
        || async { (!pid_alive(pid)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_deletes_compute_of_terminated_runs_and_spares_running_ones() {
    let fx = Fixture::start("local-sweep").await;
    let terminated = fx.start_run("local-sweep-terminated", "10m").await;
    wait_for("the first job to start", RUN_TIMEOUT, || {
        pending_job(&terminated)
    })
    .await;
    let running = fx.start_run("local-sweep-running", "10m").await;
    wait_for("the second job to start", RUN_TIMEOUT, || {
        pending_job(&running)
    })
    .await;
    assert_eq!(fx.compute_dirs().len(), 2);

    terminated
        .terminate(WorkflowTerminateOptions::builder().reason("test").build())
        .await
        .expect("terminate");
    run::wait_until_listed(&terminated, false).await;
    run::wait_until_listed(&running, true).await;

    // Dry run: reports the terminated run's compute, deletes nothing.
    let report = fx.sweep_once(true).await;
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["examined"], 2, "{report}");
    assert_eq!(report["owned_by_running_runs"], 1, "{report}");
    let swept = report["deleted"].as_array().expect("deleted list");
    assert_eq!(swept.len(), 1, "{report}");
    assert!(swept[0]["outcome"].is_null());
    assert_eq!(fx.compute_dirs().len(), 2, "a dry run deleted something");

    // Real sweep: only the terminated run's compute goes.
    let report = fx.sweep_once(false).await;
    let swept = report["deleted"].as_array().expect("deleted list");
    assert_eq!(swept.len(), 1, "{report}");
    assert_eq!(swept[0]["outcome"], "Removed", "{report}");
    assert!(
        swept[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no running"),
        "{report}"
    );
    assert_eq!(
        fx.compute_dirs().len(),
        1,
        "the running run's compute must stay"
    );
    assert!(
        pending_job(&running).await.is_some(),
        "the running run's job was disturbed"
    );

    running
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel");
    let end = run::finish(&running, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_sweeper_cleans_up_after_a_terminated_run() {
    let fx = Fixture::start_with_env(
        "local-scheduled-sweep",
        &[("SWEEP_INTERVAL", "2s"), ("SWEEP_GRACE_PERIOD", "0")],
    )
    .await;
    let handle = fx.start_run("local-scheduled-sweep", "10m").await;
    wait_for("the job to start", RUN_TIMEOUT, || pending_job(&handle)).await;
    handle
        .terminate(WorkflowTerminateOptions::builder().reason("test").build())
        .await
        .expect("terminate");
    // The sweep logs each deletion after the provider has removed the compute: wait for both.
    wait_for(
        "the scheduled sweep to delete the compute and log why",
        Duration::from_secs(60),
        || async {
            (fx.compute_dirs().is_empty()
                && fx
                    .worker
                    .output()
                    .contains("sweeper deleted leaked compute"))
            .then_some(())
        },
    )
    .await;
    // The schedule's `SweepLeakedCompute` run that deleted it reports the deletion (and, with
    // `TEA_RECORD_HISTORIES`, is recorded for the replay tests).
    let client = fx.server.client().await;
    let query = format!("WorkflowType = '{SWEEP_WORKFLOW_TYPE}' AND ExecutionStatus = 'Completed'");
    let sweep = wait_for(
        "a completed sweep run that reports the deletion",
        Duration::from_secs(60),
        || async {
            let mut runs = client.list_workflows(query.clone(), WorkflowListOptions::default());
            while let Some(Ok(run)) = runs.next().await {
                let handle = client.get_workflow_handle::<SweepLeakedCompute>(run.id());
                let report = handle
                    .get_result(WorkflowGetResultOptions::default())
                    .await
                    .ok()?;
                if report.deleted.iter().any(|unit| unit.outcome.is_some()) {
                    return Some(handle);
                }
            }
            None
        },
    )
    .await;
    run::record_history_as(&sweep, "sweep-deleted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starter_shows_progress_reports_status_and_cancels_on_interrupt() {
    let fx = Fixture::start("local-starter-ux").await;
    let workflow_id = unique("starter-ux");
    let starter = |log: &str| {
        ProcBuilder::new(bin("starter"), fx.dir.join(log))
            .env("TEMPORAL_ADDRESS", fx.server.address())
            .env("WORKFLOW_TASK_QUEUE", &fx.task_queue)
    };
    let mut waiting = starter("starter.log")
        .env("JOB_DURATION", "10m")
        .env("PAUSE_DURATION", "200ms")
        .env("HEARTBEAT_TIMEOUT", "5s")
        .env("CANCEL_ON_INTERRUPT", "true")
        .arg("--id")
        .arg(&workflow_id)
        .spawn();
    let client = fx.server.client().await;
    let handle = tea_starter::handle(&client, &workflow_id);
    // The job starts as soon as the unit's worker polls, which may be before the workflow has
    // seen the deployment wait end: wait for both the heartbeat and the phase `running`.
    wait_for(
        "the job to heartbeat in phase running",
        RUN_TIMEOUT,
        || async {
            pending_job(&handle).await?.last_heartbeat_time?;
            let report = tea_starter::status::report(&client, &workflow_id)
                .await
                .ok()?;
            (report.status?.phase == tea_contract::Phase::Running).then_some(())
        },
    )
    .await;

    // `starter status --json` while the job runs.
    let mut status = starter("status.log")
        .arg("status")
        .arg(&workflow_id)
        .arg("--json")
        .spawn();
    assert!(
        status.wait(Duration::from_secs(30)).await.success(),
        "{}",
        status.output()
    );
    let report: serde_json::Value = serde_json::from_str(&status.output())
        .unwrap_or_else(|e| panic!("status JSON ({e}): {}", status.output()));
    assert_eq!(report["execution_status"], "running", "{report}");
    assert_eq!(report["status"]["phase"], "running", "{report}");
    assert_eq!(report["status"]["attempt"], 1, "{report}");
    assert!(
        report["status"]["compute_name"]
            .as_str()
            .is_some_and(|n| n.starts_with("ext-")),
        "{report}"
    );
    assert!(
        report["job"]["elapsed"].as_u64().is_some(),
        "job progress from heartbeats: {report}"
    );
    let phases: Vec<&str> = report["status"]["phase_history"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["phase"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        phases,
        ["waiting", "provisioning", "deploying", "running"],
        "{report}"
    );

    // Progress lines (not a terminal: one per change) and the UI link were printed.
    wait_for("a progress line", Duration::from_secs(30), || async {
        waiting.output().contains("phase=running").then_some(())
    })
    .await;
    assert!(
        waiting.output().contains("/namespaces/default/workflows/"),
        "{}",
        waiting.output()
    );

    // Ctrl-C with --cancel-on-interrupt: cancel, wait for teardown, exit 3.
    let pid = waiting.pid().expect("starter pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let exit = waiting.wait(RUN_TIMEOUT).await;
    assert_eq!(exit.code(), Some(3), "{}", waiting.output());
    assert!(
        waiting.output().contains("cancelled"),
        "{}",
        waiting.output()
    );
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_worker_serves_sdk_and_provisioning_metrics() {
    let fx = Fixture::start_with_env(
        "local-metrics",
        &[("METRICS_ADDR", crate::metrics::ANY_METRICS_ADDR)],
    )
    .await;
    let address = crate::metrics::served_at(&fx.worker).await;
    let handle = fx.start_run("local-metrics", "1s").await;
    let end = run::finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Completed(_)), "run ended {end}");

    let url = format!("http://{address}/metrics");
    let body = wait_for("the metrics endpoint", Duration::from_secs(30), || async {
        reqwest::get(&url).await.ok()?.text().await.ok()
    })
    .await;
    for step in ["create", "ready", "teardown"] {
        assert!(
            body.lines()
                .any(|l| l.starts_with("tea_compute_steps_total")
                    && l.contains(&format!("step=\"{step}\""))
                    && l.contains("outcome=\"ok\"")),
            "no {step} step counted:\n{body}"
        );
    }
    assert!(body.contains("tea_compute_step_duration"), "{body}");
    assert!(body.contains("tea_compute_units"), "{body}");
    assert!(
        body.contains("temporal_"),
        "the SDK's worker metrics are missing:\n{body}"
    );
}

/// Runs started by another client (the Temporal CLI) with input the workflow cannot
/// use fail within seconds, naming the problem, and never create compute. Before, the SDK
/// failed to decode such input, and the run stayed Running with its workflow task retried
/// forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_from_the_temporal_cli_fails_the_run_at_once_without_compute() {
    let fx = Fixture::start("local-bad-input").await;
    let client = fx.server.client().await;
    let cases: [(&str, Option<&str>, &str); 4] = [
        (
            "missing-field",
            Some(r#"{"registry":"r","repository":"external"}"#),
            "field `tag` is missing",
        ),
        (
            "string",
            Some(r#""external:latest""#),
            "expected a JSON object",
        ),
        (
            "negative-duration",
            Some(
                r#"{"registry":"r","repository":"external","tag":"latest","job_duration":-5000000000}"#,
            ),
            "`job_duration` must not be negative",
        ),
        ("no-input", None, "none was given"),
    ];
    for (case, input, expected) in cases {
        let workflow_id = unique(&format!("bad-input-{case}"));
        let mut command = std::process::Command::new("temporal");
        command.args([
            "workflow",
            "start",
            "--address",
            &fx.server.address(),
            "--task-queue",
            &fx.task_queue,
            "--type",
            tea_contract::WORKFLOW_TYPE,
            "--workflow-id",
            &workflow_id,
        ]);
        if let Some(input) = input {
            command.args(["--input", input]);
        }
        let output = command.output().expect("run the temporal CLI");
        assert!(
            output.status.success(),
            "temporal workflow start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let handle: RunHandle = tea_starter::handle(&client, &workflow_id);
        let end = tokio::time::timeout(RUN_TIMEOUT, tea_starter::wait(&handle))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{case}: the run did not end; worker: {}",
                    fx.worker.output()
                )
            })
            .expect("wait for the run");
        let RunEnd::Failed(message) = &end else {
            panic!("{case}: expected a failed run, got {end}");
        };
        assert!(message.contains(expected), "{case}: {message}");
        let events = history::events(&handle).await;
        // At once: the first workflow task failed the run, none failed and was retried.
        assert!(
            !events.iter().any(|e| matches!(
                e.attributes,
                Some(Attributes::WorkflowTaskFailedEventAttributes(_))
            )),
            "{case}: a workflow task failed and was retried"
        );
        assert!(
            !events.iter().any(|e| matches!(
                e.attributes,
                Some(Attributes::ActivityTaskScheduledEventAttributes(_))
            )),
            "{case}: an activity was scheduled"
        );
    }
    assert!(
        fx.compute_dirs().is_empty(),
        "compute: {:?}",
        fx.compute_dirs()
    );
    assert!(
        fx.kept_logs().is_empty(),
        "compute was created: {:?}",
        fx.kept_logs()
    );
}

/// A workflow-worker configured only through a Temporal profile (no TEMPORAL_*
/// connection variables) starts external workers that connect the same way. Before, only four
/// environment variables were forwarded, so the worker fell back to localhost:7233 and never
/// polled. Also checks that the job's deadline follows its duration and that a new run's
/// history records the bounded-waits patch marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_worker_connects_as_the_workflow_worker_configured_by_a_profile() {
    let dir = test_dir("local-profile");
    let server = DevServer::start(&dir).await;
    let task_queue = unique("wf-local-profile");
    let config_file = dir.join("temporal.toml");
    std::fs::write(
        &config_file,
        format!(
            "[profile.staging]\naddress = \"{}\"\nnamespace = \"default\"\n\n[profile.staging.grpc_meta]\nx-test-tenant = \"t1\"\n",
            server.address()
        ),
    )
    .expect("write the profile");
    let worker = ProcBuilder::new(bin("workflow-worker"), dir.join("workflow-worker.log"))
        .env("COMPUTE_PROVIDER", "local")
        .env("LOCAL_STATE_DIR", dir.join("compute").display().to_string())
        .env(
            "EXTERNAL_WORKER_BIN",
            bin("external-worker").display().to_string(),
        )
        .env("TEMPORAL_CONFIG_FILE", config_file.display().to_string())
        .env("TEMPORAL_PROFILE", "staging")
        .env("WORKFLOW_TASK_QUEUE", &task_queue)
        .env("DEPLOY_POLL_INITIAL", "100ms")
        .env("DEPLOY_POLL_MAX", "500ms")
        .spawn();
    // One attempt, with the default wait for its worker to poll (ample on a loaded machine).
    let mut input = run::input("2s");
    input.max_compute_attempts = Some(1);
    let handle = tea_starter::start(
        &server.client().await,
        &task_queue,
        &unique("local-profile"),
        input,
    )
    .await
    .expect("start");
    run::completed(&handle, &worker).await;
    let events = history::events(&handle).await;
    let (_, job) = history::scheduled(&events, tea_contract::LONG_RUNNING_ACTIVITY)
        .into_iter()
        .next()
        .expect("the job was scheduled");
    let start_to_close = job.start_to_close_timeout.expect("job start-to-close");
    let expected = run::input("2s").job_start_to_close();
    assert_eq!(
        (start_to_close.seconds, start_to_close.nanos),
        (i64::try_from(expected.as_secs()).unwrap(), 0),
        "the job's deadline follows its duration"
    );
}
