//! The external worker's `long-running-command` as any client may call it: started here as a
//! standalone activity by the Temporal CLI, with Go's two `json/plain` payloads or bad ones.

use std::{process::Command, time::Duration};

use crate::support::{DevServer, ProcBuilder, bin, test_dir};

/// `temporal activity execute` of `long-running-command` with these raw JSON arguments; waits
/// for the activity's end and returns (success, CLI output).
fn execute(server: &DevServer, task_queue: &str, args: &[&str]) -> (bool, String) {
    let mut command = Command::new("timeout");
    command.args([
        "60",
        "temporal",
        "activity",
        "execute",
        "--address",
        &server.address(),
        "--activity-id",
        &format!("job-{}", uuid::Uuid::new_v4().simple()),
        "--type",
        tea_contract::LONG_RUNNING_ACTIVITY,
        "--task-queue",
        task_queue,
        "--start-to-close-timeout",
        "1m",
    ]);
    for arg in args {
        command.args(["--input", arg]);
    }
    let output = command.output().expect("run the temporal CLI");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A bad argument fails the activity at once and for good (non-retryable, naming the
/// argument), where an argument the SDK could not decode would be retried forever; Go's
/// encoding still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_arguments_fail_the_activity_at_once_naming_the_argument() {
    let dir = test_dir("job-args");
    let server = DevServer::start(&dir).await;
    let task_queue = format!("job-args-{}", uuid::Uuid::new_v4().simple());
    let _worker = ProcBuilder::new(bin("external-worker"), dir.join("external-worker.log"))
        .env("TEMPORAL_ADDRESS", server.address())
        .env("EXTERNAL_TASK_QUEUE", &task_queue)
        .env("IDLE_TIMEOUT", "0")
        .spawn();
    let (ok, output) = execute(&server, &task_queue, &["100000000", "1000000000"]);
    assert!(ok, "Go's two integer payloads: {output}");
    for (args, expected) in [
        (
            &["-5", "1000000000"][..],
            "argument `duration` must not be negative",
        ),
        (
            &["100000000", "\"soon\""][..],
            "argument `heartbeat_timeout`: invalid duration",
        ),
        (
            &["{\"secs\":1,\"nanos\":0}", "1"][..],
            "argument `duration` must be a duration",
        ),
        (&["100000000"][..], "expected two payloads"),
    ] {
        let started = std::time::Instant::now();
        let (ok, output) = execute(&server, &task_queue, args);
        assert!(!ok, "{args:?} must fail: {output}");
        assert!(output.contains(expected), "{args:?}: {output}");
        // Retried, it would still be running when the CLI's 60 s ran out.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}
