//! Resumable jobs end to end on the local provider: a job lost with its unit resumes on a fresh
//! unit from the last checkpoint the lost unit sent, and says so in its own output, having
//! repeated at most one heartbeat interval of work; a job stopped by its worker's shutdown
//! resumes from the checkpoint it wrote on SIGTERM; the timed job works only for what was left;
//! a job that failed on its own is not resumed; a job that never checkpoints starts afresh, as
//! before. The Docker and App Platform variants live beside their providers' tests and use the
//! job and the checks here.

use std::time::Duration;

use tea_compute::local;
use tea_contract::{
    CommandProgress, GoDuration, JobProgress, LONG_RUNNING_ACTIVITY, Phase, Resumed, ResumedFrom,
    RunOutcome, RunStatus, WorkflowInput,
};
use tea_starter::{RunEnd, RunHandle};
use temporalio_common::protos::temporal::api::{
    failure::v1::failure::FailureInfo,
    history::v1::{HistoryEvent, history_event::Attributes},
};

use crate::{
    local::Fixture,
    support::{
        history,
        run::{self, RUN_TIMEOUT, pending_job},
        unique, wait_for,
    },
};

/// Steps the counting job takes; each sleeps [`STEP`] (the script's `sleep 0.1`).
pub(crate) const STEPS: u32 = 120;
const STEP: Duration = Duration::from_millis(100);

/// A job that counts to `@STEPS@`, printing each step; with `@CHECKPOINT@` the checkpoint call, it
/// records each step it completed (atomically: another file renamed over the checkpoint file)
/// and resumes from its resume file. On SIGTERM it records where it is and exits.
const COUNTING_JOB: &str = r#"
step=0
if [ -n "${TEA_RESUME_FILE:-}" ]; then
  read -r saved < "$TEA_RESUME_FILE" || true
  step=${saved#*:}
  step=${step%\}}
  echo "resumed from step $step at attempt $TEA_ATTEMPT"
else
  echo "started afresh at attempt $TEA_ATTEMPT"
fi
checkpoint() {
  printf '{"step":%d}' "$step" > "$TEA_CHECKPOINT_FILE.tmp"
  mv "$TEA_CHECKPOINT_FILE.tmp" "$TEA_CHECKPOINT_FILE"
}
trap '@CHECKPOINT@; echo "stopped after step $step"; exit 143' TERM
while [ "$step" -lt @STEPS@ ]; do
  next=$((step + 1))
  sleep 0.1
  step=$next
  echo "step $step"
  @CHECKPOINT@
done
echo "counted to @STEPS@"
"#;

/// The counting job as a command (`/bin/sh -c`), checkpointing or not.
pub(crate) fn counting_job(steps: u32, checkpointing: bool) -> Vec<String> {
    let script = COUNTING_JOB.replace("@STEPS@", &steps.to_string()).replace(
        "@CHECKPOINT@",
        if checkpointing { "checkpoint" } else { ":" },
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// A run of the counting job (no time limit of its own, the usual 5 s heartbeat timeout).
pub(crate) fn counting_input(base: WorkflowInput, checkpointing: bool) -> WorkflowInput {
    WorkflowInput {
        command: Some(counting_job(STEPS, checkpointing)),
        job_duration: None,
        ..base
    }
}

/// The interval the runner heartbeats at: half the heartbeat timeout.
fn heartbeat_interval(input: &WorkflowInput) -> Duration {
    input.heartbeat_timeout() / 2
}

/// Waits until the run's job has heartbeated a checkpoint at `step` or later; returns its step.
pub(crate) async fn wait_for_checkpoint(handle: &RunHandle, step: u32) -> u32 {
    wait_for(
        &format!("a checkpoint at step {step} or later"),
        RUN_TIMEOUT,
        || async {
            let at = last_progress(handle)
                .await?
                .checkpoint?
                .get("step")?
                .as_u64()?;
            let at = u32::try_from(at).ok()?;
            (at >= step).then_some(at)
        },
    )
    .await
}

/// The command's last heartbeat, while it runs.
async fn last_progress(handle: &RunHandle) -> Option<CommandProgress> {
    let job = pending_job(handle).await?;
    serde_json::from_slice(&job.heartbeat_details?.payloads.first()?.data).ok()
}

/// Of the logs of a run's units, the first unit's: the one whose job started afresh at
/// attempt 1.
pub(crate) fn first_unit_log(logs: &[String]) -> &str {
    logs.iter()
        .find(|log| log.contains("started afresh at attempt 1"))
        .unwrap_or_else(|| panic!("no unit's log shows the first attempt's job: {logs:?}"))
}

/// The last step the job printed in a unit's log.
fn last_step_printed(log: &str) -> u32 {
    log.lines()
        .filter(|line| line.contains("job_output"))
        .filter_map(|line| {
            let rest = line.split_once("job_output: step ")?.1;
            rest.split_whitespace().next()?.parse().ok()
        })
        .max()
        .unwrap_or_else(|| panic!("the first unit's job printed no step:\n{log}"))
}

/// The lines of the job's output tail in the run's result.
fn output_lines(outcome: &RunOutcome) -> Vec<&str> {
    let job = outcome
        .job
        .as_ref()
        .and_then(|job| job.command())
        .expect("the command's result");
    job.output_tail.iter().map(|l| l.line.as_str()).collect()
}

/// Checks, with the job's own output, that the run completed on a second unit whose job
/// resumed from the last checkpoint the first unit's job (`first_log`) sent, repeating at most
/// one heartbeat interval of work (`repeated_at_most` steps; 0 when it checkpointed as it
/// stopped), and counted on from there. Returns the step it resumed from.
pub(crate) fn assert_resumed(outcome: &RunOutcome, first_log: &str, repeated_at_most: u32) -> u32 {
    assert_eq!(outcome.attempts, 2, "one fresh unit: {outcome:?}");
    let printed = last_step_printed(first_log);
    let lines = output_lines(outcome);
    let resumed = lines
        .iter()
        .find_map(|line| line.strip_prefix("resumed from step "))
        .unwrap_or_else(|| panic!("the job did not resume: {lines:?}"));
    let from: u32 = resumed
        .strip_suffix(" at attempt 2")
        .and_then(|step| step.parse().ok())
        .unwrap_or_else(|| panic!("unexpected resume line: {resumed:?}"));
    assert!(from > 0, "resumed from zero: {lines:?}");
    // The checkpoint of a step is written after the step is printed.
    assert!(
        from <= printed + 1,
        "resumed from step {from}, after the last step printed ({printed})"
    );
    let repeated = printed.saturating_sub(from);
    assert!(
        repeated <= repeated_at_most,
        "resumed from step {from} of {printed} printed: {repeated} steps repeated, more than \
         {repeated_at_most}"
    );
    let counted: Vec<u32> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("step ")?.parse().ok())
        .collect();
    assert_eq!(
        counted,
        (from + 1..=STEPS).collect::<Vec<_>>(),
        "the resumed job counts on from its checkpoint"
    );
    assert_eq!(lines.last(), Some(&format!("counted to {STEPS}").as_str()));
    from
}

/// The steps one heartbeat interval holds, and one more for a step at its edge.
pub(crate) fn steps_per_heartbeat(input: &WorkflowInput) -> u32 {
    let per_interval = heartbeat_interval(input).as_millis() / STEP.as_millis();
    u32::try_from(per_interval).expect("a small number") + 1
}

/// The run's status: it resumed at attempt 2 from the first attempt's checkpoint at `step`.
pub(crate) async fn assert_status_says_resumed(handle: &RunHandle, step: u32) {
    let status = status_of(handle).await;
    let bytes = serde_json::to_vec(&serde_json::json!({ "step": step }))
        .expect("JSON")
        .len() as u64;
    assert_eq!(
        status.resumes,
        [Resumed {
            attempt: 2,
            from_attempt: 1,
            from: ResumedFrom::Checkpoint { bytes },
        }]
    );
    assert_eq!(status.phase, Phase::Done);
}

/// The run's answer to its `status` query.
async fn status_of(handle: &RunHandle) -> RunStatus {
    let report = tea_starter::status::report(handle.client(), &handle.info().workflow_id)
        .await
        .expect("the run's report");
    report.status.expect("the run's status")
}

/// Starts `input` under a fresh ID from `test`.
async fn start(fx: &Fixture, test: &str, input: WorkflowInput) -> RunHandle {
    tea_starter::start(
        &fx.server.client().await,
        &fx.task_queue,
        &unique(test),
        input,
    )
    .await
    .expect("start the workflow")
}

/// The pid of the run's only external worker.
fn external_worker_pid(fx: &Fixture) -> u32 {
    let dirs = fx.compute_dirs();
    let [dir] = dirs.as_slice() else {
        panic!("one unit of compute during the job: {dirs:?}");
    };
    local::recorded_pid(dir).expect("the unit's pid")
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32")),
        signal,
    )
    .expect("signal the external worker");
}

/// The text of each of the files at `paths` (units' logs).
pub(crate) fn read_all(paths: impl IntoIterator<Item = std::path::PathBuf>) -> Vec<String> {
    paths
        .into_iter()
        .map(|path| std::fs::read_to_string(path).unwrap_or_default())
        .collect()
}

/// The logs the local provider kept of the run's deleted units.
fn kept_logs(fx: &Fixture) -> Vec<String> {
    read_all(fx.kept_logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_killed_with_its_unit_resumes_on_a_fresh_unit_from_its_last_checkpoint() {
    let fx = Fixture::start_with_env(
        "local-resumed-command",
        &[("METRICS_ADDR", crate::metrics::ANY_METRICS_ADDR)],
    )
    .await;
    let input = counting_input(run::input("1s"), true);
    let handle = start(&fx, "local-resumed-command", input.clone()).await;
    // About two thirds in: SIGKILL, so only the heartbeat timeout notices.
    wait_for_checkpoint(&handle, STEPS * 4 / 7).await;
    signal(external_worker_pid(&fx), nix::sys::signal::Signal::SIGKILL);

    let outcome = run::completed(&handle, &fx.worker).await;
    let logs = kept_logs(&fx);
    let from = assert_resumed(&outcome, first_unit_log(&logs), steps_per_heartbeat(&input));
    assert_status_says_resumed(&handle, from).await;
    let metrics = crate::metrics::served_at(&fx.worker).await;
    let resumes = crate::metrics::counter(
        &metrics,
        "tea_job_resumes_total",
        &[("provider", "local"), ("from", "checkpoint")],
    )
    .await;
    assert_eq!(resumes, 1.0);
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_stopped_by_its_worker_s_shutdown_resumes_from_what_it_wrote_on_sigterm() {
    let fx = Fixture::start("local-resumed-after-shutdown").await;
    let input = counting_input(run::input("1s"), true);
    let handle = start(&fx, "local-resumed-after-shutdown", input).await;
    wait_for_checkpoint(&handle, STEPS / 2).await;
    // What a drained node or a replaced container gets: the worker stops the job (SIGTERM),
    // which records where it is, and hands that back with its failure.
    signal(external_worker_pid(&fx), nix::sys::signal::Signal::SIGTERM);

    let outcome = run::completed(&handle, &fx.worker).await;
    let logs = kept_logs(&fx);
    let first = first_unit_log(&logs);
    assert!(first.contains("stopped after step"), "{first}");
    let from = assert_resumed(&outcome, first, 0);
    assert_status_says_resumed(&handle, from).await;
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_non_zero_is_not_resumed() {
    let fx = Fixture::start("local-checkpointed-exit").await;
    let input = WorkflowInput {
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            r#"echo '{"step": 3}' > "$TEA_CHECKPOINT_FILE"; sleep 3; exit 3"#.into(),
        ]),
        job_duration: None,
        ..run::input("1s")
    };
    let handle = start(&fx, "local-checkpointed-exit", input).await;
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected the run to fail, it ended {end}");
    };
    assert!(message.contains("exit code 3"), "{message}");
    assert_eq!(fx.kept_logs().len(), 1, "no fresh unit for a failed job");
    assert_eq!(status_of(&handle).await.resumes, []);
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_never_checkpoints_starts_afresh_on_the_fresh_unit() {
    let fx = Fixture::start("local-afresh-command").await;
    let input = counting_input(run::input("1s"), false);
    let handle = start(&fx, "local-afresh-command", input).await;
    wait_for("a third of the steps", RUN_TIMEOUT, || async {
        (last_progress(&handle).await?.stdout_lines > u64::from(STEPS / 3)).then_some(())
    })
    .await;
    signal(external_worker_pid(&fx), nix::sys::signal::Signal::SIGKILL);

    let outcome = run::completed(&handle, &fx.worker).await;
    assert_eq!(outcome.attempts, 2);
    let lines = output_lines(&outcome);
    assert!(lines.contains(&"started afresh at attempt 2"), "{lines:?}");
    assert_eq!(lines.last(), Some(&format!("counted to {STEPS}").as_str()));
    assert_eq!(status_of(&handle).await.resumes, []);
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timed_job_killed_with_its_unit_works_only_for_what_was_left() {
    let fx = Fixture::start("local-resumed-timed-job").await;
    let handle = start(
        &fx,
        "local-resumed-timed-job",
        run::input(run::OBSERVABLE_JOB),
    )
    .await;
    wait_for("the job to work 5 s", RUN_TIMEOUT, || async {
        let job = pending_job(&handle).await?;
        let details = job.heartbeat_details?;
        let progress: JobProgress = serde_json::from_slice(&details.payloads.first()?.data).ok()?;
        (progress.elapsed.as_duration() >= Duration::from_secs(5)).then_some(())
    })
    .await;
    signal(external_worker_pid(&fx), nix::sys::signal::Signal::SIGKILL);

    let outcome = run::completed(&handle, &fx.worker).await;
    assert_eq!(outcome.attempts, 2);
    let events = history::events(&handle).await;
    let worked = last_heartbeat_before_the_timeout(&events);
    let asked = timed_job_durations(&events);
    let total = run::observable_job_duration();
    assert_eq!(
        asked,
        [total, total - worked],
        "the fresh unit's job works for what was left after {worked:?}"
    );
    assert_eq!(
        status_of(&handle).await.resumes,
        [Resumed {
            attempt: 2,
            from_attempt: 1,
            from: ResumedFrom::Elapsed {
                elapsed: GoDuration(worked),
            },
        }]
    );
    fx.assert_no_compute_left();
}

/// The elapsed time in the last heartbeat of the timed job that timed out.
fn last_heartbeat_before_the_timeout(events: &[HistoryEvent]) -> Duration {
    let timed_out = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ActivityTaskTimedOutEventAttributes(a)) => a.failure.clone(),
            _ => None,
        })
        .expect("the lost unit's job timed out");
    let payloads = match timed_out.failure_info {
        Some(FailureInfo::TimeoutFailureInfo(info)) => info.last_heartbeat_details,
        _ => None,
    }
    .expect("the timeout carries the last heartbeat");
    let progress: JobProgress =
        serde_json::from_slice(&payloads.payloads[0].data).expect("JobProgress");
    progress.elapsed.as_duration()
}

/// The duration each scheduled timed job was asked to work, in order.
fn timed_job_durations(events: &[HistoryEvent]) -> Vec<Duration> {
    history::scheduled(events, LONG_RUNNING_ACTIVITY)
        .into_iter()
        .map(|(_, scheduled)| {
            let input = scheduled.input.expect("the timed job's arguments");
            let nanos: u64 = serde_json::from_slice(&input.payloads[0].data).expect("nanoseconds");
            Duration::from_nanos(nanos)
        })
        .collect()
}
