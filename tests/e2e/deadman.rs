//! The external worker's dead-man switch: it stops by itself when idle too long or when the run
//! that owns it is closed, so compute cannot work on for nobody.

use std::time::Duration;

use crate::support::{DevServer, ProcBuilder, bin, test_dir, wait_for};

const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_external_worker_exits_by_itself() {
    let dir = test_dir("deadman-idle");
    let server = DevServer::start(&dir).await;
    let mut worker = ProcBuilder::new(bin("external-worker"), dir.join("external-worker.log"))
        .env("TEMPORAL_ADDRESS", server.address())
        .env(
            "EXTERNAL_TASK_QUEUE",
            format!("idle-{}", uuid::Uuid::new_v4().simple()),
        )
        .env("IDLE_TIMEOUT", "1s")
        .env("DEAD_MAN_CHECK_INTERVAL", "100ms")
        .spawn();
    let status = worker.wait(EXIT_TIMEOUT).await;
    assert!(status.success(), "{}", worker.output());
    assert!(
        worker.output().contains("no job for"),
        "{}",
        worker.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_worker_whose_owner_run_does_not_exist_exits_by_itself() {
    let dir = test_dir("deadman-owner");
    let server = DevServer::start(&dir).await;
    let mut worker = ProcBuilder::new(bin("external-worker"), dir.join("external-worker.log"))
        .env("TEMPORAL_ADDRESS", server.address())
        .env(
            "EXTERNAL_TASK_QUEUE",
            format!("owner-{}", uuid::Uuid::new_v4().simple()),
        )
        .env("IDLE_TIMEOUT", "0")
        .env("OWNER_WORKFLOW_ID", "no-such-workflow")
        .env("DEAD_MAN_CHECK_INTERVAL", "100ms")
        .spawn();
    let status = worker.wait(EXIT_TIMEOUT).await;
    assert!(status.success(), "{}", worker.output());
    assert!(worker.output().contains("not found"), "{}", worker.output());
}

/// Where the platform restarts an exited process (App Platform), the switch parks
/// the worker instead: it stops polling and stays up, idle, until SIGTERM (the compute's
/// deletion), rather than exiting into a crash loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_external_worker_stays_down_until_sigterm() {
    let dir = test_dir("deadman-park");
    let server = DevServer::start(&dir).await;
    let mut worker = ProcBuilder::new(bin("external-worker"), dir.join("external-worker.log"))
        .env("TEMPORAL_ADDRESS", server.address())
        .env(
            "EXTERNAL_TASK_QUEUE",
            format!("park-{}", uuid::Uuid::new_v4().simple()),
        )
        .env("IDLE_TIMEOUT", "0")
        .env("OWNER_WORKFLOW_ID", "no-such-workflow")
        .env("DEAD_MAN_CHECK_INTERVAL", "100ms")
        .env("DEAD_MAN_ACTION", "park")
        .spawn();
    wait_for("the worker to park", EXIT_TIMEOUT, || async {
        worker.output().contains("parked").then_some(())
    })
    .await;
    // An observation window, not synchronisation: twenty checks of the switch go by and the
    // parked worker is still there.
    let exited = worker.try_wait(Duration::from_secs(2)).await;
    assert!(
        exited.is_err(),
        "a parked worker exited: {}",
        worker.output()
    );
    let pid = worker.pid().expect("worker pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the parked worker");
    let status = worker.wait(EXIT_TIMEOUT).await;
    assert!(status.success(), "{}", worker.output());
    assert!(
        worker.output().contains("shutdown signal while parked"),
        "{}",
        worker.output()
    );
}
