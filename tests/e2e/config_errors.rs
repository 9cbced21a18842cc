//! Bad configuration and bad input: one clear line, exit status 2, no hang; and a setting that
//! looks wrong but is allowed says why.

use std::time::Duration;

use crate::{
    local,
    support::{DevServer, ProcBuilder, bin, startup_error, test_dir, unique, wait_for},
};

/// How long a sweep may take to end, and a worker to explain its settings.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn digitalocean_without_a_token_is_a_clear_startup_error() {
    let output = startup_error(
        ProcBuilder::new(bin("workflow-worker"), test_dir("no-token").join("out.log"))
            .env("COMPUTE_PROVIDER", "digitalocean")
            .env("TEMPORAL_ADDRESS", "127.0.0.1:1"),
    )
    .await;
    assert!(output.contains("DIGITALOCEAN_ACCESS_TOKEN"), "{output}");
}

#[tokio::test]
async fn unknown_provider_is_rejected() {
    let output = startup_error(
        ProcBuilder::new(
            bin("workflow-worker"),
            test_dir("bad-provider").join("out.log"),
        )
        .env("COMPUTE_PROVIDER", "kubernetes"),
    )
    .await;
    assert!(output.contains("local"), "lists the choices: {output}");
}

#[tokio::test]
async fn starter_rejects_a_bad_duration_before_connecting() {
    let output = startup_error(
        ProcBuilder::new(bin("starter"), test_dir("bad-duration").join("out.log"))
            .env("JOB_DURATION", "soon")
            .env("TEMPORAL_ADDRESS", "127.0.0.1:1"),
    )
    .await;
    assert!(output.contains("soon"), "{output}");
}

#[tokio::test]
async fn bad_log_level_is_rejected() {
    let output = startup_error(
        ProcBuilder::new(
            bin("external-worker"),
            test_dir("bad-log-level").join("out.log"),
        )
        .env("LOG_LEVEL", "loud"),
    )
    .await;
    assert!(output.contains("LOG_LEVEL"), "{output}");
}

/// The output of a docker-provider workflow-worker with `env` on top, which must stop at
/// start with status 2.
async fn docker_worker_error(test: &str, env: &[(&str, String)]) -> String {
    let dir = test_dir(test);
    let mut builder = ProcBuilder::new(bin("workflow-worker"), dir.join("out.log"))
        .env("COMPUTE_PROVIDER", "docker")
        .env("DOCKER_LOG_DIR", dir.join("logs").display().to_string())
        .env("TEMPORAL_ADDRESS", "127.0.0.1:1");
    for (key, value) in env {
        builder = builder.env(key, value.clone());
    }
    startup_error(builder).await
}

#[tokio::test]
async fn docker_without_a_reachable_engine_is_a_clear_startup_error() {
    let socket = std::env::temp_dir().join("tea-no-such-docker.sock");
    let host = format!("unix://{}", socket.display());
    let output = docker_worker_error("docker-no-engine", &[("DOCKER_HOST", host)]).await;
    assert!(
        output.contains("DOCKER_HOST") && output.contains("tea-no-such-docker.sock"),
        "{output}"
    );
}

#[tokio::test]
async fn docker_with_a_missing_network_is_a_clear_startup_error() {
    let Some(_) = tea_compute::docker::testing::engine_or_skip("docker missing network").await
    else {
        return;
    };
    let network = ("DOCKER_NETWORK", "tea-no-such-network".to_owned());
    let output = docker_worker_error("docker-no-network", &[network]).await;
    assert!(
        output.contains("DOCKER_NETWORK=tea-no-such-network")
            && output.contains("docker network create"),
        "{output}"
    );
}

#[tokio::test]
async fn a_compute_cap_of_zero_is_a_clear_startup_error() {
    let output = startup_error(
        ProcBuilder::new(bin("workflow-worker"), test_dir("cap-zero").join("out.log"))
            .env("MAX_CONCURRENT_COMPUTE", "0")
            .env("TEMPORAL_ADDRESS", "127.0.0.1:1"),
    )
    .await;
    assert!(
        output.contains("MAX_CONCURRENT_COMPUTE must be > 0"),
        "{output}"
    );
}

/// A sweep grace period shorter than the deploy timeout is allowed (a running run's compute is
/// never swept, deploying or not; the grace only covers visibility's delay): the sweep and a
/// worker managing the schedule start, and their log says why, naming both values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_grace_shorter_than_the_deploy_timeout_is_allowed_and_the_log_says_why() {
    let dir = test_dir("grace-below-deploy");
    let server = DevServer::start(&dir).await;
    let queue = unique("wf-grace");
    let command = |log: &str| {
        local::workflow_worker(&dir, &server, &queue, &bin("external-worker"), log)
            .env("SWEEP_GRACE_PERIOD", "5s")
            .env("SWEEP_INTERVAL", "0")
    };
    let mut sweep = command("sweep.log").arg("sweep").spawn();
    let status = sweep.wait(EXIT_TIMEOUT).await;
    assert!(status.success(), "{}", sweep.output());
    assert!(
        sweep.output().contains(
            "SWEEP_GRACE_PERIOD (5s) is shorter than the deploy timeout (1m, the local \
             provider's default; DEPLOY_TIMEOUT): allowed"
        ),
        "{}",
        sweep.output()
    );

    let worker = command("worker.log")
        .env("SWEEP_INTERVAL", "1m")
        .env("DEPLOY_TIMEOUT", "30s")
        .spawn();
    let said = "SWEEP_GRACE_PERIOD (5s) is shorter than the deploy timeout (30s, DEPLOY_TIMEOUT)";
    wait_for(
        "the worker to explain its grace period",
        EXIT_TIMEOUT,
        || {
            let explained = worker.output().contains(said);
            async move { explained.then_some(()) }
        },
    )
    .await;

    let mut sweep = command("sweep-long.log")
        .env("SWEEP_GRACE_PERIOD", "1m")
        .arg("sweep")
        .spawn();
    let status = sweep.wait(EXIT_TIMEOUT).await;
    assert!(status.success(), "{}", sweep.output());
    assert!(
        !sweep.output().contains("SWEEP_GRACE_PERIOD"),
        "{}",
        sweep.output()
    );
}

/// Half-configured Worker Deployment Versioning stops the workflow-worker before it connects,
/// naming what to set or unset.
#[tokio::test]
async fn half_configured_versioning_is_a_clear_startup_error() {
    type Env = &'static [(&'static str, &'static str)];
    let cases: [(&str, Env, &str); 4] = [
        (
            "only-name",
            &[("TEMPORAL_DEPLOYMENT_NAME", "tea")],
            "TEMPORAL_DEPLOYMENT_NAME is set but TEMPORAL_WORKER_BUILD_ID is not",
        ),
        (
            "only-build",
            &[("TEMPORAL_WORKER_BUILD_ID", "a1")],
            "TEMPORAL_WORKER_BUILD_ID is set but TEMPORAL_DEPLOYMENT_NAME is not",
        ),
        (
            "behavior-unversioned",
            &[("TEMPORAL_VERSIONING_BEHAVIOR", "pinned")],
            "TEMPORAL_VERSIONING_BEHAVIOR is set but versioning is off",
        ),
        (
            "bad-behavior",
            &[
                ("TEMPORAL_DEPLOYMENT_NAME", "tea"),
                ("TEMPORAL_WORKER_BUILD_ID", "a1"),
                ("TEMPORAL_VERSIONING_BEHAVIOR", "sticky"),
            ],
            "use `pinned` (the default) or `auto-upgrade`",
        ),
    ];
    for (case, env, expected) in cases {
        let dir = test_dir(&format!("versioning-{case}"));
        let mut builder = ProcBuilder::new(bin("workflow-worker"), dir.join("out.log"))
            .env("TEMPORAL_ADDRESS", "127.0.0.1:1");
        for (key, value) in env {
            builder = builder.env(key, *value);
        }
        let output = startup_error(builder).await;
        assert!(output.contains(expected), "{case}: {output}");
    }
}
