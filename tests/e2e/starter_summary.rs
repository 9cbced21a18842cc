//! What the starter says about a run that ended: the job's measured duration, its exit code and
//! its result in the final lines, the same in `starter status` of the closed run, and a UI link
//! on the dev server's UI port.

use crate::{
    local::Fixture,
    support::{ProcBuilder, bin, run::RUN_TIMEOUT},
};

/// A job of 8 s that writes a result.
const JOB: &str = "sleep 8; echo '{\"rows\": 3}' > \"$TEA_RESULT_FILE\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_starter_reports_the_measured_duration_exit_code_and_result_of_a_command() {
    let fx = Fixture::start("starter-summary").await;
    let id = format!("starter-summary-{}", uuid::Uuid::new_v4().simple());
    let starter = |log: &str| {
        ProcBuilder::new(bin("starter"), fx.dir.join(log))
            .env("TEMPORAL_ADDRESS", fx.server.address())
            .env("WORKFLOW_TASK_QUEUE", &fx.task_queue)
            .env("PAUSE_DURATION", "200ms")
            .env("HEARTBEAT_TIMEOUT", "5s")
    };
    let mut run = starter("run.log")
        .arg("--id")
        .arg(&id)
        .arg("--")
        .arg("/bin/sh")
        .arg("-c")
        .arg(JOB)
        .spawn();
    let status = run.wait(RUN_TIMEOUT).await;
    let output = run.output();
    assert_eq!(status.code(), Some(0), "{output}");
    // Measured: 8 s and some milliseconds, not the configured default of a minute.
    assert!(output.contains("Job: command ran 8s"), "{output}");
    assert!(output.contains("exit code 0"), "{output}");
    assert!(output.contains("Job result: {\"rows\":3}"), "{output}");
    let port = fx.server.port + 1000;
    assert!(
        output.contains(&format!(
            "Temporal UI: http://127.0.0.1:{port}/namespaces/default/workflows/{id}"
        )),
        "{output}"
    );

    let mut status = starter("status.log").arg("status").arg(&id).spawn();
    assert!(
        status.wait(RUN_TIMEOUT).await.success(),
        "{}",
        status.output()
    );
    let output = status.output();
    assert!(output.contains("job: command ran 8s"), "{output}");
    assert!(output.contains("exit code 0"), "{output}");
    assert!(output.contains("result: {\"rows\":3}"), "{output}");
}
