//! What a user's job leaves behind and what it can reveal (local provider): no process of the
//! job outlives its unit of compute, whether the run is cancelled or the external worker is
//! killed mid-job, and secrets the job prints are masked in everything the run records.

use std::path::Path;

use tea_contract::{CommandProgress, WorkflowInput};
use tea_starter::{RunEnd, RunHandle};
use temporalio_client::WorkflowFetchHistoryOptions;

use crate::{
    local::Fixture,
    support::{
        ProcBuilder, bin, processes_with,
        run::{self, RUN_TIMEOUT, pending_job},
        test_dir, unique, wait_for,
    },
};

async fn start(fx: &Fixture, test: &str, script: &str, attempts: u32) -> RunHandle {
    let input = WorkflowInput {
        command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        job_duration: None,
        max_compute_attempts: Some(attempts),
        ..run::input("1s")
    };
    let id = unique(test);
    tea_starter::start(&fx.server.client().await, &fx.task_queue, &id, input)
        .await
        .expect("start the run")
}

/// The job's progress once a heartbeat shows it printed `line`.
async fn printed(handle: &RunHandle, line: &str) -> CommandProgress {
    wait_for(
        &format!("the job to print {line:?}"),
        RUN_TIMEOUT,
        || async {
            let job = pending_job(handle).await?;
            let payload = job.heartbeat_details?.payloads.into_iter().next()?;
            let progress: CommandProgress = serde_json::from_slice(&payload.data).ok()?;
            progress
                .tail
                .iter()
                .any(|l| l.line == line)
                .then_some(progress)
        },
    )
    .await
}

/// A job whose processes ignore SIGTERM: the first one, a child in its group, and a child
/// that moved to a group of its own (`setpgrp`); with `setsid`, also one in a session of its
/// own. Each carries `marker` in its command line; the job prints `started` once all run.
fn stubborn_job(marker: &str, setsid: bool) -> String {
    let looping = format!("sh -c 'trap \"\" TERM; while :; do sleep 1; done' {marker}");
    let mut script =
        format!("trap '' TERM; {looping} & perl -e 'setpgrp(0,0); exec @ARGV' {looping} & ");
    if setsid {
        script.push_str(&format!("setsid {looping} & "));
    }
    script.push_str("echo started; wait");
    script
}

/// The worker's unit has the job's processes: the first, and one per child.
async fn wait_for_the_job_s_processes(marker: &str, count: usize) {
    wait_for("the job's processes", RUN_TIMEOUT, || async {
        (processes_with(marker).len() >= count).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_external_worker_s_job_leaves_no_process_once_its_unit_is_deleted() {
    let fx = Fixture::start("jobs-worker-killed").await;
    let marker = unique("tea-e2e-killed");
    let handle = start(&fx, "jobs-worker-killed", &stubborn_job(&marker, false), 1).await;
    printed(&handle, "started").await;
    // The shell and its two children.
    wait_for_the_job_s_processes(&marker, 3).await;
    let [dir]: [std::path::PathBuf; 1] = fx.compute_dirs().try_into().expect("one unit of compute");
    let worker = tea_compute::local::recorded_pid(&dir).expect("the worker's pid");

    // SIGKILL: nothing of the worker runs any more; only the kernel's parent-death signal
    // reaches the job's first process.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(worker).expect("pid fits i32")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the external worker");

    // One attempt: the heartbeat timeout fails the run, after its unit is deleted.
    let end = run::finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Failed(_)), "run ended {end}");
    fx.assert_no_compute_left();
    // Delete confirmed the worker's session empty before the run ended: nothing to wait for.
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "processes of the job outlived its unit"
    );
    let kept = fx
        .kept_logs()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<String>();
    assert!(
        kept.contains("processes of its jobs left after it were killed"),
        "{kept}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_leaves_no_process_even_one_that_left_its_group_or_session() {
    let fx = Fixture::start_with_env("jobs-cancel", &[("JOB_KILL_GRACE", "1s")]).await;
    let marker = unique("tea-e2e-cancel");
    let handle = start(&fx, "jobs-cancel", &stubborn_job(&marker, true), 2).await;
    printed(&handle, "started").await;
    // The shell and its three children.
    wait_for_the_job_s_processes(&marker, 4).await;

    let end = run::cancel_and_finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    fx.assert_no_compute_left();
    // The worker killed them all (the session's own child too) before the job ended.
    assert_eq!(
        processes_with(&marker),
        Vec::<u32>::new(),
        "processes of the job outlived it"
    );
}

/// A job secret (`JOB_SECRET_ENV`).
const DB_PASSWORD: &str = "db-pa55word-for-the-e2e-job";
/// The Temporal API key of the workflow-worker, forwarded to the external worker as a secret
/// (the dev server ignores it; TLS stays off with `TEMPORAL_TLS=false`).
const API_KEY: &str = "tea-e2e-api-key-0123456789";

/// The run's history as JSON, followed by every payload's data decoded (the JSON carries
/// payloads in base64): what a search for a secret in history must look at.
pub(crate) async fn history_text(handle: &RunHandle) -> String {
    let json = handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .expect("history");
    with_payloads_decoded(&json)
}

/// `json`, then every base64 `data` field in it decoded.
fn with_payloads_decoded(json: &[u8]) -> String {
    fn walk(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    if let (true, Some(text)) = (key == "data", v.as_str()) {
                        out.push_str(&String::from_utf8_lossy(&base64_decode(text)));
                        out.push('\n');
                    }
                    walk(v, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = String::from_utf8_lossy(json).into_owned();
    let value: serde_json::Value = serde_json::from_slice(json).expect("history JSON");
    walk(&value, &mut out);
    out
}

/// Standard base64 (padding optional); characters outside the alphabet are skipped.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let Some(v) = ALPHABET.iter().position(|a| *a == c) else {
            continue;
        };
        buffer = (buffer << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

/// Every file under `dir`, with the first one that holds `needle`.
fn file_holding(dir: &Path, needle: &str) -> Option<String> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).ok()?.flatten().map(|e| e.path()));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            return Some(path.display().to_string());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_a_job_prints_are_masked_in_history_logs_and_status() {
    let fx = Fixture::start_with_env(
        "jobs-masked",
        &[
            ("JOB_SECRET_ENV", "JOB_TEST_DB_PASSWORD"),
            ("JOB_TEST_DB_PASSWORD", DB_PASSWORD),
            ("TEMPORAL_API_KEY", API_KEY),
            ("TEMPORAL_TLS", "false"),
            ("LOG_LEVEL", "debug"),
        ],
    )
    .await;
    // The key reaches the job only as a file the test wrote (the job does not inherit the
    // worker's credentials): outside the test's directory, whose files are searched below.
    let outside = test_dir("jobs-masked-key");
    std::fs::write(outside.join("key"), API_KEY).expect("write the key");
    let seen = outside.join("seen");
    let script = format!(
        r#"k=$(cat {key}); for s in "$JOB_TEST_DB_PASSWORD" "$k"; do echo "out $s"; echo "err $s" >&2; done
           printf '{{"message":"at %s"}}' "$k" > "$TEA_PROGRESS_FILE"; echo printed
           while [ ! -e {seen} ]; do sleep 0.1; done; exit 3"#,
        key = outside.join("key").display(),
        seen = seen.display(),
    );
    let handle = start(&fx, "jobs-masked", &script, 1).await;
    let progress = printed(&handle, "printed").await;
    let heartbeat = format!("{progress:?}");
    assert!(
        heartbeat.contains("out ***") && heartbeat.contains("at ***"),
        "{heartbeat}"
    );

    let status = |name: &str| {
        ProcBuilder::new(bin("starter"), fx.dir.join(format!("{name}.log")))
            .env("TEMPORAL_ADDRESS", fx.server.address())
            .arg("status")
            .arg(&handle.info().workflow_id)
            .spawn()
    };
    let mut running = status("status-running");
    assert!(
        running.wait(RUN_TIMEOUT).await.success(),
        "{}",
        running.output()
    );
    assert!(running.output().contains("***"), "{}", running.output());

    std::fs::write(&seen, "").expect("let the job end");
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected a failed run, got {end}");
    };
    assert!(message.contains("err ***"), "{message}");
    let mut ended = status("status-ended");
    assert!(
        ended.wait(RUN_TIMEOUT).await.success(),
        "{}",
        ended.output()
    );

    let history = handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await
        .expect("history");
    let history = with_payloads_decoded(&history);
    assert!(
        history.contains("err ***"),
        "the masked lines are in history"
    );
    for secret in [DB_PASSWORD, API_KEY] {
        assert!(!history.contains(secret), "{secret} is in the history");
        assert_eq!(
            file_holding(&fx.dir, secret),
            None,
            "{secret} is in a file of the test"
        );
        for output in [running.output(), ended.output()] {
            assert!(
                !output.contains(secret),
                "{secret} in starter status: {output}"
            );
        }
    }
}
