//! The user's own job: a command run by the external worker on the compute (local provider),
//! with its output, progress, result, exit status, cancellation and secrets.

use std::time::Duration;

use tea_contract::{CommandProgress, WorkflowInput};
use tea_starter::{RunEnd, RunHandle};

use crate::{
    jobs::history_text,
    local::Fixture,
    support::{
        ProcBuilder, bin, history, pid_alive,
        run::{self, RUN_TIMEOUT, pending_job},
        unique, wait_for,
    },
};

/// A secret only the job may see.
const SECRET: &str = "s3cr3t-value-for-the-job";

async fn start(fx: &Fixture, test: &str, command: &[&str]) -> RunHandle {
    let input = WorkflowInput {
        command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
        job_duration: None,
        max_compute_attempts: Some(2),
        ..run::input("1s")
    };
    let id = unique(test);
    tea_starter::start(&fx.server.client().await, &fx.task_queue, &id, input)
        .await
        .expect("start the run")
}

fn sh(script: &str) -> [&str; 3] {
    ["/bin/sh", "-c", script]
}

/// Everything the kept worker logs of this fixture say.
fn worker_logs(fx: &Fixture) -> String {
    fx.kept_logs()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_0_completes_with_its_tail_and_full_output_in_the_log() {
    let fx = Fixture::start("cmd-ok").await;
    let handle = start(
        &fx,
        "cmd-ok",
        &sh("i=1; while [ $i -le 200 ]; do echo \"line $i\"; i=$((i+1)); done"),
    )
    .await;
    let job = run::completed_command(&handle, &fx.worker).await;
    assert_eq!(job.exit_code, 0);
    assert_eq!(job.stdout_lines, 200);
    assert_eq!(
        job.output_tail.last().map(|l| l.line.as_str()),
        Some("line 200")
    );
    let logs = worker_logs(&fx);
    for n in [1, 100, 200] {
        assert!(
            logs.contains(&format!("line {n}")),
            "line {n} not in the worker log"
        );
    }
    assert!(fx.compute_dirs().is_empty(), "compute left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_3_fails_the_run_once_naming_the_code_and_stderr() {
    let fx = Fixture::start("cmd-exit3").await;
    let handle = start(
        &fx,
        "cmd-exit3",
        &sh("echo working; echo 'disk full' >&2; exit 3"),
    )
    .await;
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected a failed run, got {end}");
    };
    assert!(message.contains("exit code 3"), "{message}");
    assert!(message.contains("disk full"), "{message}");
    assert_eq!(fx.kept_logs().len(), 1, "exactly one unit of compute ever");
    assert!(fx.compute_dirs().is_empty(), "compute left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_fails_at_once_without_fresh_compute() {
    let fx = Fixture::start("cmd-missing").await;
    let handle = start(&fx, "cmd-missing", &["no-such-program-tea"]).await;
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected a failed run, got {end}");
    };
    assert!(message.contains("no-such-program-tea"), "{message}");
    assert!(message.contains("not found"), "{message}");
    assert_eq!(fx.kept_logs().len(), 1, "no retry on fresh compute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_a_json_result_reach_the_workflow() {
    let fx = Fixture::start("cmd-progress").await;
    let seen = fx.dir.join("progress-seen");
    let handle = start(
        &fx,
        "cmd-progress",
        &sh(&format!(
            concat!(
                r#"echo '{{"fraction":0.5,"message":"half way"}}' > "$TEA_PROGRESS_FILE"; "#,
                r#"while [ ! -e '{}' ]; do sleep 0.1; done; "#,
                r#"echo '{{"rows":42}}' > "$TEA_RESULT_FILE""#
            ),
            seen.display()
        )),
    )
    .await;
    // The job waits until the test saw its progress in a heartbeat.
    let progress = wait_for("the job's progress in a heartbeat", RUN_TIMEOUT, || async {
        let job = pending_job(&handle).await?;
        let payload = job.heartbeat_details?.payloads.into_iter().next()?;
        let progress: CommandProgress = serde_json::from_slice(&payload.data).ok()?;
        progress.fraction.is_some().then_some(progress)
    })
    .await;
    assert_eq!(progress.fraction, Some(0.5));
    assert_eq!(progress.message.as_deref(), Some("half way"));
    let report = tea_starter::status::report(&fx.server.client().await, &handle.info().workflow_id)
        .await
        .expect("starter status");
    assert!(
        format!("{report:?}").contains("half way"),
        "starter status shows the job's progress: {report:?}"
    );
    std::fs::write(&seen, "").expect("signal the job");
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Completed(outcome) = &end else {
        panic!("run ended {end}");
    };
    assert_eq!(
        outcome.job.as_ref().and_then(|j| j.result().cloned()),
        Some(serde_json::json!({"rows": 42}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_ignoring_sigterm_is_killed_on_cancel_before_the_compute_goes() {
    let fx = Fixture::start_with_env("cmd-cancel", &[("JOB_KILL_GRACE", "1s")]).await;
    let pid_file = fx.dir.join("job.pid");
    let handle = start(
        &fx,
        "cmd-cancel",
        &sh(&format!(
            "trap '' TERM; echo $$ > '{}'; echo started; while :; do sleep 1; done",
            pid_file.display()
        )),
    )
    .await;
    let progress = wait_for("the job's first output", RUN_TIMEOUT, || async {
        let job = pending_job(&handle).await?;
        let payload = job.heartbeat_details?.payloads.into_iter().next()?;
        let progress: CommandProgress = serde_json::from_slice(&payload.data).ok()?;
        (progress.stdout_lines > 0).then_some(progress)
    })
    .await;
    assert_eq!(progress.tail[0].line, "started");
    // Written before "started": the job's own pid, not another run's.
    let job_pid: u32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
        .expect("the job's pid file");
    assert!(pid_alive(job_pid), "the job {job_pid} runs");
    let end = run::cancel_and_finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    assert!(
        !pid_alive(job_pid),
        "the job's process {job_pid} survived the cancel"
    );
    assert!(fx.compute_dirs().is_empty(), "compute left");
    assert!(
        worker_logs(&fx).contains("ignored SIGTERM"),
        "the job was killed after the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_secret_reaches_the_job_and_nothing_else() {
    let fx = Fixture::start_with_env(
        "cmd-secret",
        &[
            ("JOB_SECRET_ENV", "JOB_TEST_DB_PASSWORD"),
            ("JOB_TEST_DB_PASSWORD", SECRET),
            ("LOG_LEVEL", "debug"),
        ],
    )
    .await;
    let handle = start(
        &fx,
        "cmd-secret",
        // Not the value itself in the command: the command is in the run's history.
        &sh(r#"echo "seen=$JOB_TEST_DB_PASSWORD""#),
    )
    .await;
    let job = run::completed_command(&handle, &fx.worker).await;
    // The job had the value: masking replaces exactly the secret values.
    assert_eq!(job.output_tail[0].line, "seen=***");
    assert!(
        !history_text(&handle).await.contains(SECRET),
        "the secret is in history"
    );
    assert!(
        !fx.worker.output().contains(SECRET),
        "the secret is in the workflow-worker log"
    );
    assert!(
        !worker_logs(&fx).contains(SECRET),
        "the secret is in the external worker log"
    );
    let report = tea_starter::status::report(&fx.server.client().await, &handle.info().workflow_id)
        .await
        .expect("status");
    assert!(
        !format!("{report:?}").contains(SECRET),
        "the secret is in starter status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_stays_bounded_and_completes() {
    let fx = Fixture::start("cmd-flood").await;
    // About 40 MB of output, once the sampler below has seen the worker.
    let go = fx.dir.join("flood-go");
    let handle = start(
        &fx,
        "cmd-flood",
        &sh(&format!(
            "while [ ! -e '{}' ]; do sleep 0.1; done; head -c 30000000 /dev/zero | tr '\\0' 'x' | fold -w 100",
            go.display()
        )),
    )
    .await;
    // The external worker's resident memory (KiB), sampled while the job floods it.
    let state_dir = fx.dir.join("compute");
    let units = state_dir.clone();
    let rss = move || {
        tea_compute::local::compute_dirs(&units)
            .into_iter()
            .filter_map(|(_, dir)| {
                let pid = tea_compute::local::recorded_pid(&dir)?;
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .max()
    };
    let first = wait_for("the external worker to run", RUN_TIMEOUT, || {
        let seen = rss();
        async move { seen }
    })
    .await;
    std::fs::write(&go, "").expect("let the job flood");
    let sampler = tokio::spawn(async move {
        let mut peak_kib = first;
        loop {
            peak_kib = peak_kib.max(rss().unwrap_or(0));
            if tea_compute::local::compute_dirs(&state_dir).is_empty() {
                return peak_kib;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let end = tokio::time::timeout(
        RUN_TIMEOUT + Duration::from_secs(60),
        tea_starter::wait(&handle),
    )
    .await
    .expect("the flood run ended")
    .expect("wait");
    let peak_kib = tokio::time::timeout(Duration::from_secs(30), sampler)
        .await
        .expect("the sampler saw the compute go")
        .expect("sampler");
    println!(
        "external worker peak RSS during a 30 MB flood: {} MiB",
        peak_kib / 1024
    );
    // Flat: far below the 30 MB the job wrote (a debug build idles at about 15-25 MiB).
    assert!(peak_kib < 48 * 1024, "peak RSS {} MiB", peak_kib / 1024);
    let RunEnd::Completed(outcome) = &end else {
        panic!("run ended {end}; worker: {}", fx.worker.output());
    };
    let job = outcome
        .job
        .as_ref()
        .and_then(tea_contract::JobOutcome::command)
        .expect("job result");
    assert_eq!(job.stdout_lines, 300_000);
    assert!(job.output_bytes >= 30_000_000);
    let tail_bytes: usize = job.output_tail.iter().map(|l| l.line.len()).sum();
    assert!(tail_bytes <= 4096, "tail of {tail_bytes} bytes");
    let history = history::events(&handle).await;
    let biggest = history
        .iter()
        .map(|e| format!("{e:?}").len())
        .max()
        .unwrap_or(0);
    assert!(biggest < 64 * 1024, "a history event of {biggest} bytes");
}

/// The starter runs a command given after `--`, exits 1 naming the job's exit code when it
/// fails, 0 when it completes, and `starter logs` prints the job's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_starter_runs_a_command_and_prints_its_logs() {
    let fx = Fixture::start("cmd-starter").await;
    let starter = |id: &str, script: &str| {
        ProcBuilder::new(bin("starter"), fx.dir.join(format!("{id}.log")))
            .env("TEMPORAL_ADDRESS", fx.server.address())
            .env("WORKFLOW_TASK_QUEUE", &fx.task_queue)
            .env("PAUSE_DURATION", "200ms")
            .env("HEARTBEAT_TIMEOUT", "5s")
            .arg("--id")
            .arg(id)
            .arg("--env")
            .arg("GREETING=hello")
            .arg("--")
            .arg("/bin/sh")
            .arg("-c")
            .arg(script)
            .spawn()
    };
    let failing = unique("cmd-starter-fail");
    let mut run = starter(
        &failing,
        "echo \"$GREETING\"; echo 'no space left' >&2; exit 3",
    );
    let status = run.wait(RUN_TIMEOUT).await;
    assert_eq!(status.code(), Some(1), "{}", run.output());
    assert!(run.output().contains("exit code 3"), "{}", run.output());

    let passing = unique("cmd-starter-ok");
    let mut run = starter(&passing, "echo \"$GREETING\"; echo world");
    let status = run.wait(RUN_TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "{}", run.output());

    let mut logs = ProcBuilder::new(bin("starter"), fx.dir.join("logs.log"))
        .env("TEMPORAL_ADDRESS", fx.server.address())
        .arg("logs")
        .arg(&passing)
        .spawn();
    let status = logs.wait(RUN_TIMEOUT).await;
    assert!(status.success(), "{}", logs.output());
    let output = logs.output();
    let hello = output.find("hello").expect("the job's first line");
    let world = output.find("world").expect("the job's second line");
    assert!(hello < world, "{output}");
}
