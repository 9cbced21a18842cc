//! The external worker's dead-man switch: it stops by itself when idle too long or when the run
//! that owns it is closed, so compute cannot work on for nobody.

use std::time::Duration;

use crate::support::{DevServer, ProcBuilder, bin, test_dir, unique, wait_for};

const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A dev server and the command of an external worker on a queue of its own there, checking
/// its dead-man switch every 100 ms, logging under a directory of `test`'s.
async fn external_worker(test: &str) -> (DevServer, ProcBuilder) {
    let dir = test_dir(test);
    let server = DevServer::start(&dir).await;
    let worker = ProcBuilder::new(bin("external-worker"), dir.join("external-worker.log"))
        .env("TEMPORAL_ADDRESS", server.address())
        .env("EXTERNAL_TASK_QUEUE", unique(test))
        .env("DEAD_MAN_CHECK_INTERVAL", "100ms");
    (server, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_external_worker_exits_by_itself() {
    let (_server, worker) = external_worker("deadman-idle").await;
    let mut worker = worker.env("IDLE_TIMEOUT", "1s").spawn();
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
    let (_server, worker) = external_worker("deadman-owner").await;
    let mut worker = worker
        .env("IDLE_TIMEOUT", "0")
        .env("OWNER_WORKFLOW_ID", "no-such-workflow")
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
    let (_server, worker) = external_worker("deadman-park").await;
    let mut worker = worker
        .env("IDLE_TIMEOUT", "0")
        .env("OWNER_WORKFLOW_ID", "no-such-workflow")
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
