//! Tests of the command runner against real `/bin/sh` jobs: exit, output, progress and result,
//! secrets masked, and stops that reach every process of the job.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tea_harness::processes_with;
use tokio::time::Instant;

use super::{output::MAX_LINE_BYTES, *};
use crate::mask::Secrets;

fn sh(script: &str) -> CommandSpec {
    CommandSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

fn quiet(_: Stream, _: &str) {}

/// Taken for writing by a test that needs its job to be the only one running in this
/// process, for reading by every other test.
static ALONE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The lines of the job's output tail.
fn tail_lines(finished: &Finished) -> Vec<&str> {
    finished
        .snapshot
        .tail
        .iter()
        .map(|l| l.line.as_str())
        .collect()
}

fn no_secrets() -> Arc<Secrets> {
    Arc::default()
}

async fn wait_until_it_printed(job: &RunningCommand, lines: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while job.snapshot().stdout_lines < lines {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exit_code_output_tail_and_counts() {
    let _beside_others = ALONE.read().await;
    let spec = sh("echo one; echo two; echo oops >&2; exit 3");
    let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
    let finished = job.wait().await.unwrap();
    assert_eq!(finished.exit, Exit::Code(3));
    assert_eq!(finished.snapshot.stdout_lines, 2);
    assert_eq!(finished.snapshot.stderr_lines, 1);
    assert_eq!(finished.stderr_tail(), ["oops"]);
    assert_eq!(finished.snapshot.output_bytes, 13);
    assert_eq!(finished.exit.to_string(), "exit code 3");
}

#[tokio::test]
async fn the_tail_is_bounded_and_keeps_the_last_lines() {
    let _beside_others = ALONE.read().await;
    let spec = sh("i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done");
    let limits = Limits {
        tail_bytes: 100,
        ..Limits::default()
    };
    let mut job = RunningCommand::spawn(&spec, limits, no_secrets(), quiet).unwrap();
    let finished = job.wait().await.unwrap();
    assert_eq!(finished.snapshot.stdout_lines, 2000);
    let tail = &finished.snapshot.tail;
    assert_eq!(tail.last().unwrap().line, "line-1999");
    assert!(tail.iter().map(|l| l.line.len()).sum::<usize>() <= 100);
}

#[tokio::test]
async fn progress_and_result_files_reach_the_runner() {
    let _beside_others = ALONE.read().await;
    let spec = sh(
        r#"echo '{"fraction":0.5,"message":"half"}' > "$TEA_PROGRESS_FILE"; echo '{"rows":42}' > "$TEA_RESULT_FILE""#,
    );
    let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
    let finished = job.wait().await.unwrap();
    assert!(finished.exit.success());
    let report = finished.snapshot.report.expect("progress");
    assert_eq!(report.fraction, Some(0.5));
    assert_eq!(report.message.as_deref(), Some("half"));
    assert_eq!(finished.result, Some(serde_json::json!({"rows": 42})));
}

#[tokio::test]
async fn a_resumed_job_gets_its_checkpoint_and_attempt_and_its_new_checkpoint_is_taken() {
    let _beside_others = ALONE.read().await;
    let spec = CommandSpec {
        attempt: Some(2),
        resume: Some(serde_json::json!({"count": 40})),
        ..sh(
            r#"echo "attempt=$TEA_ATTEMPT resume=$(cat "$TEA_RESUME_FILE")"
            echo '{"count": 41}' > "$TEA_CHECKPOINT_FILE.tmp"
            mv "$TEA_CHECKPOINT_FILE.tmp" "$TEA_CHECKPOINT_FILE""#,
        )
    };
    let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
    // Before the job wrote one, the checkpoint is the one it resumes from.
    assert_eq!(
        job.snapshot().checkpoint,
        Some(serde_json::json!({"count": 40}))
    );
    let finished = job.wait().await.unwrap();
    assert!(finished.exit.success());
    assert_eq!(tail_lines(&finished), [r#"attempt=2 resume={"count":40}"#]);
    assert_eq!(
        finished.snapshot.checkpoint,
        Some(serde_json::json!({"count": 41}))
    );
    assert_eq!(finished.snapshot.checkpoint_error, None);
}

#[tokio::test]
async fn without_a_checkpoint_to_resume_from_the_resume_file_is_not_set() {
    let _beside_others = ALONE.read().await;
    let spec = CommandSpec {
        attempt: Some(1),
        ..sh(r#"echo "attempt=$TEA_ATTEMPT resume=${TEA_RESUME_FILE:-unset}""#)
    };
    let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
    let finished = job.wait().await.unwrap();
    assert_eq!(tail_lines(&finished), ["attempt=1 resume=unset"]);
    assert_eq!(finished.snapshot.checkpoint, None);
}

#[tokio::test]
async fn an_oversized_result_is_refused_naming_the_limit() {
    let _beside_others = ALONE.read().await;
    let spec = sh(r#"head -c 2000 /dev/zero | tr '\0' 'a' > "$TEA_RESULT_FILE""#);
    let limits = Limits {
        result_bytes: 1000,
        ..Limits::default()
    };
    let mut job = RunningCommand::spawn(&spec, limits, no_secrets(), quiet).unwrap();
    let finished = job.wait().await.unwrap();
    assert_eq!(finished.result, None);
    assert!(
        finished
            .result_error
            .as_deref()
            .unwrap()
            .contains("limit of 1000"),
        "{:?}",
        finished.result_error
    );
}

#[tokio::test]
async fn the_workers_temporal_credentials_do_not_reach_the_job() {
    let _beside_others = ALONE.read().await;
    // SAFETY: set before any thread of this test reads the environment concurrently.
    unsafe { std::env::set_var("TEMPORAL_API_KEY", "worker-k3y") };
    let spec = CommandSpec {
        env: vec![("JOB_VAR".into(), "x".into())],
        ..sh(r#"echo "key=${TEMPORAL_API_KEY:-none} job=$JOB_VAR""#)
    };
    let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
    let finished = job.wait().await.unwrap();
    assert_eq!(finished.snapshot.tail[0].line, "key=none job=x");
}

#[tokio::test]
async fn a_missing_program_is_named() {
    let _beside_others = ALONE.read().await;
    let spec = CommandSpec {
        argv: vec!["no-such-program-tea".into()],
        ..Default::default()
    };
    let err = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet)
        .err()
        .expect("spawn fails");
    assert!(matches!(err, SpawnError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-program-tea"));
}

#[tokio::test]
async fn stop_kills_a_group_that_ignores_sigterm_after_the_grace_period() {
    let _beside_others = ALONE.read().await;
    // The shell ignores SIGTERM, and so does its background child.
    let spec = sh("trap '' TERM; sleep 600 & echo started; wait");
    let limits = Limits {
        kill_grace: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut job = RunningCommand::spawn(&spec, limits, no_secrets(), quiet).unwrap();
    let pgid = job.pgid().expect("pgid");
    wait_until_it_printed(&job, 1).await;
    let started = Instant::now();
    let finished = job.stop().await.unwrap();
    assert_eq!(finished.exit, Exit::Signal(Signal::SIGKILL as i32));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(finished.exit.to_string().contains("SIGKILL"));
    // No process of the group is left.
    let deadline = Instant::now() + Duration::from_secs(5);
    while nix::sys::signal::killpg(pgid, None).is_ok() {
        assert!(
            Instant::now() < deadline,
            "a process of the job's group survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_process_of_the_job_goes_even_those_that_left_its_group_or_session() {
    let _beside_others = ALONE.read().await;
    let marker = format!("tea-tree-{}", uuid::Uuid::new_v4().simple());
    // A child in the group ignoring SIGTERM, one in a group of its own, one in a session
    // of its own (each a shell loop whose command line carries the marker).
    let looping = format!("sh -c 'trap \"\" TERM; while :; do sleep 1; done' {marker}");
    let spec = sh(&format!(
        "{looping} & setsid {looping} & perl -e 'setpgrp(0,0); exec @ARGV' {looping} & \
         echo started; wait"
    ));
    let limits = Limits {
        kill_grace: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut job = RunningCommand::spawn(&spec, limits, no_secrets(), quiet).unwrap();
    wait_until_it_printed(&job, 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&marker).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the job's processes never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let finished = job.stop().await.unwrap();
    // The first process did not trap SIGTERM: it ended by it, the rest was killed.
    assert_eq!(finished.exit, Exit::Signal(Signal::SIGTERM as i32));
    assert_eq!(processes_with(&marker), Vec::<u32>::new());
}

#[tokio::test]
async fn what_a_job_leaves_running_is_killed_when_it_ends() {
    // The job's orphan is told from another job's only while no other job runs.
    let _alone = ALONE.write().await;
    // As the worker runs: its orphans come to it instead of init.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let marker = format!("tea-left-{}", uuid::Uuid::new_v4().simple());
    let spec = sh(&format!(
        "setsid sh -c 'while :; do sleep 1; done' {marker} & echo done"
    ));
    let mut job = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet).unwrap();
    let finished = job.wait().await.unwrap();
    assert!(finished.exit.success());
    assert_eq!(processes_with(&marker), Vec::<u32>::new());
}

#[tokio::test]
async fn a_missing_working_directory_is_named_before_anything_runs() {
    let _beside_others = ALONE.read().await;
    let missing = std::env::temp_dir().join(format!("tea-no-dir-{}", uuid::Uuid::new_v4()));
    let spec = CommandSpec {
        workdir: Some(missing.clone()),
        ..sh("true")
    };
    let err = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet)
        .err()
        .expect("spawn fails");
    assert!(matches!(err, SpawnError::WorkdirMissing { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("working directory {} does not exist", missing.display())
    );
    let file = std::env::current_exe().unwrap();
    let spec = CommandSpec {
        workdir: Some(file.clone()),
        ..sh("true")
    };
    let err = RunningCommand::spawn(&spec, Limits::default(), no_secrets(), quiet)
        .err()
        .expect("spawn fails");
    assert_eq!(
        err.to_string(),
        format!("working directory {} is not a directory", file.display())
    );
}

#[tokio::test]
async fn secrets_are_masked_in_the_log_the_tail_progress_and_result() {
    let _beside_others = ALONE.read().await;
    let secret = "pa55-w0rd-of-the-job";
    let secrets = Arc::new(Secrets::new([secret]));
    let limits = Limits {
        tail_bytes: 2 * MAX_LINE_BYTES,
        ..Limits::default()
    };
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&logged);
    let long = "x".repeat(MAX_LINE_BYTES - 8);
    let spec = CommandSpec {
        env: vec![("THE_SECRET".into(), secret.into())],
        ..sh(&format!(
            r#"echo "out $THE_SECRET"; echo "err $THE_SECRET" >&2; echo "{long}$THE_SECRET";
               echo "{{\"message\":\"at $THE_SECRET\"}}" > "$TEA_PROGRESS_FILE";
               echo "{{\"token\":\"$THE_SECRET\"}}" > "$TEA_RESULT_FILE""#
        ))
    };
    let mut job = RunningCommand::spawn(&spec, limits, secrets, move |_, line| {
        log.lock().unwrap().push(line.to_owned())
    })
    .unwrap();
    let finished = job.wait().await.unwrap();
    assert!(finished.exit.success());
    let text = format!("{finished:?} {:?}", logged.lock().unwrap());
    assert!(!text.contains("pa55"), "{text}");
    let lines = tail_lines(&finished);
    assert!(lines.contains(&"out ***"), "{lines:?}");
    assert_eq!(finished.stderr_tail(), ["err ***"]);
    // Cut at the line limit in the middle of the secret: its start is masked.
    assert!(lines.contains(&format!("{long}***").as_str()));
    assert_eq!(
        finished.snapshot.report.and_then(|r| r.message).as_deref(),
        Some("at ***")
    );
    assert_eq!(finished.result, Some(serde_json::json!({"token": "***"})));
}

#[tokio::test]
async fn every_process_of_the_job_has_the_grace_period_to_end_on_sigterm() {
    let _beside_others = ALONE.read().await;
    // The first process ends at once; its child cleans up for a while first.
    let spec = sh(
        "sh -c 'trap \"sleep 0.3; echo cleaned; exit 0\" TERM; while :; do sleep 0.05; done' & \
         echo started; wait",
    );
    let limits = Limits {
        kill_grace: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut job = RunningCommand::spawn(&spec, limits, no_secrets(), quiet).unwrap();
    wait_until_it_printed(&job, 1).await;
    let finished = job.stop().await.unwrap();
    let lines = tail_lines(&finished);
    assert_eq!(lines.last(), Some(&"cleaned"), "{lines:?}");
}
