//! Guardrails an operator sets (local provider): `MAX_COMPUTE_LIFETIME` tears a unit down
//! mid-job, fails the run clearly and counts the kill; a run that ends in time is untouched;
//! and the sweep deletes a unit past the lifetime whose run cannot act (its workflow-worker is
//! gone).

use std::time::Duration;

use tea_starter::RunEnd;

use crate::{
    local::Fixture,
    metrics::{ANY_METRICS_ADDR, counter, served_at},
    support::{pid_alive, run},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_past_the_maximum_lifetime_is_torn_down_and_the_run_fails_clearly() {
    // Long enough for the job to start and be seen running before the unit's time is up.
    let fx = Fixture::start_with_env(
        "lifetime-kill",
        &[
            ("MAX_COMPUTE_LIFETIME", "15s"),
            ("METRICS_ADDR", ANY_METRICS_ADDR),
        ],
    )
    .await;
    let metrics = served_at(&fx.worker).await;
    let (handle, pid) = fx.start_job("lifetime-kill", "10m").await;
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected a failure, the run ended {end}");
    };
    assert!(
        message.contains("exceeded the maximum compute lifetime of 15s"),
        "{message}"
    );
    assert!(!pid_alive(pid), "external worker {pid} still running");
    fx.assert_no_compute_left();
    assert_eq!(
        fx.kept_logs().len(),
        1,
        "no fresh compute after a lifetime kill"
    );
    // Counted once, by the workflow's own teardown, where the workflow-worker is scraped.
    let kills = counter(
        &metrics,
        "tea_compute_lifetime_kills_total",
        &[
            ("provider", "local"),
            ("by", "workflow"),
            ("dry_run", "false"),
        ],
    )
    .await;
    assert_eq!(kills, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_within_the_maximum_lifetime_completes() {
    let fx = Fixture::start_with_env("lifetime-ok", &[("MAX_COMPUTE_LIFETIME", "10m")]).await;
    let client = fx.server.client().await;
    let handle = run::start(&client, &fx.task_queue, "lifetime-ok", "2s").await;
    let end = run::finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Completed(_)), "run ended {end}");
    fx.assert_no_compute_left();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_a_unit_past_the_lifetime_whose_run_cannot_act() {
    let mut fx = Fixture::start("lifetime-sweep").await;
    let (handle, pid) = fx.start_job("lifetime-sweep", "10m").await;
    run::wait_until_listed(&handle, true).await;
    // The run stays open, but nothing acts for it any more.
    fx.worker.sigkill();
    let _ = fx.worker.wait(Duration::from_secs(10)).await;

    // Younger than the lifetime: the running run keeps it.
    let report = fx.sweep_with(&[("MAX_COMPUTE_LIFETIME", "1h")]).await;
    assert_eq!(report["owned_by_running_runs"], 1, "{report}");
    assert!(pid_alive(pid));

    // Any age is past a lifetime of 1ms: no waiting for time to pass.
    let report = fx.sweep_with(&[("MAX_COMPUTE_LIFETIME", "1ms")]).await;
    let deleted = report["deleted"].as_array().expect("deleted");
    assert_eq!(deleted.len(), 1, "{report}");
    let reason = deleted[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("maximum compute lifetime of 1ms"),
        "{reason}"
    );
    assert!(!pid_alive(pid), "external worker {pid} still running");
    fx.assert_no_compute_left();
}
