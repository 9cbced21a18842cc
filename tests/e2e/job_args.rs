//! The external worker's `long-running-command` as any client may call it: started here as a
//! standalone activity by the Temporal CLI, with Go's two `json/plain` payloads or bad ones.

use std::process::Command;

use crate::support::{DevServer, ProcBuilder, bin, test_dir, unique};

/// `temporal activity execute` of `long-running-command` as `activity_id` with these raw JSON
/// arguments; waits for the activity's end and returns (success, CLI output).
fn execute(
    server: &DevServer,
    task_queue: &str,
    activity_id: &str,
    args: &[&str],
) -> (bool, String) {
    let mut command = Command::new("timeout");
    command.args([
        "60",
        "temporal",
        "activity",
        "execute",
        "--address",
        &server.address(),
        "--activity-id",
        activity_id,
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

/// `temporal activity describe` of the standalone activity `activity_id`, as JSON.
fn describe(server: &DevServer, activity_id: &str) -> serde_json::Value {
    let output = Command::new("temporal")
        .args(["activity", "describe", "--address", &server.address()])
        .args(["--activity-id", activity_id, "--output", "json"])
        .output()
        .expect("run the temporal CLI");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "activity describe printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn activity_id() -> String {
    unique("job")
}

/// A bad argument fails the activity at once and for good (non-retryable, naming the
/// argument), where an argument the SDK could not decode would be retried forever; Go's
/// encoding still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_arguments_fail_the_activity_at_once_naming_the_argument() {
    let dir = test_dir("job-args");
    let server = DevServer::start(&dir).await;
    let task_queue = unique("job-args");
    let _worker = ProcBuilder::new(bin("external-worker"), dir.join("external-worker.log"))
        .env("TEMPORAL_ADDRESS", server.address())
        .env("EXTERNAL_TASK_QUEUE", &task_queue)
        .env("IDLE_TIMEOUT", "0")
        .spawn();
    let (ok, output) = execute(
        &server,
        &task_queue,
        &activity_id(),
        &["100000000", "1000000000"],
    );
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
        let id = activity_id();
        let (ok, output) = execute(&server, &task_queue, &id, args);
        assert!(!ok, "{args:?} must fail: {output}");
        assert!(output.contains(expected), "{args:?}: {output}");
        // For good: its first attempt failed it, not to be retried.
        let described = describe(&server, &id);
        assert_eq!(described["info"]["attempt"], 1, "{args:?}: {described}");
        assert_eq!(
            described["outcome"]["retryState"], "RETRY_STATE_NON_RETRYABLE_FAILURE",
            "{args:?}: {described}"
        );
    }
}
