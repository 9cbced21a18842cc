//! The pattern end to end through the DigitalOcean provider against the fake App Platform API.

use std::time::Duration;

use serde_json::Value;
use tea_compute::digitalocean::{DEFAULT_INSTANCE_SIZE_SLUG, pricing};
use tea_contract::Phase;
use tea_contract::{JobProgress, LONG_RUNNING_ACTIVITY};
use tea_fake_do::{FakeDo, FakeDoConfig, Fault, Op};
use tea_starter::{RunEnd, RunHandle};
use temporalio_client::WorkflowCancelOptions;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;

use crate::resume;
use crate::support::{
    self, DevServer, Proc, ProcBuilder, bin, history, pid_alive,
    run::{self, RUN_TIMEOUT, pending_job},
    test_dir, unique, wait_for,
};

pub(crate) const DO_TOKEN: &str = "dop_v1_fake_token_for_tests";

/// A fake DigitalOcean API whose apps run the real external-worker, logging under `dir/apps`.
pub(crate) async fn start_fake(dir: &std::path::Path) -> FakeDo {
    let mut config = FakeDoConfig::new(DO_TOKEN)
        .with_worker_command(bin("external-worker"), Vec::<String>::new())
        .with_step_delay(Duration::from_millis(100));
    config.log_dir = Some(dir.join("apps"));
    config.kill_grace = Duration::from_secs(5);
    FakeDo::start(config).await.expect("fake DigitalOcean API")
}

/// The workflow-worker command using the digitalocean provider against `fake`, holding
/// `token`, on `task_queue`, logging to `dir/log`.
pub(crate) fn workflow_worker(
    dir: &std::path::Path,
    server: &DevServer,
    fake: &FakeDo,
    token: &str,
    task_queue: &str,
    log: &str,
) -> ProcBuilder {
    support::workflow_worker(dir, server, task_queue, log)
        .env("COMPUTE_PROVIDER", "digitalocean")
        .env("DIGITALOCEAN_API_URL", fake.base_url())
        .env("DIGITALOCEAN_ACCESS_TOKEN", token)
        .env("TEMPORAL_TLS", "false")
}

/// A dev server, a fake DigitalOcean API whose apps run the real external-worker, and a
/// workflow-worker process using the digitalocean provider, on a queue of this test's own.
struct Fixture {
    dir: std::path::PathBuf,
    server: DevServer,
    fake: FakeDo,
    worker: Proc,
    task_queue: String,
    api_key: String,
}

impl Fixture {
    async fn start(test: &str) -> Fixture {
        Self::start_with_token(test, DO_TOKEN).await
    }

    /// Like [`Fixture::start`], with the workflow-worker holding `token` (the fake accepts only
    /// [`DO_TOKEN`]).
    async fn start_with_token(test: &str, token: &str) -> Fixture {
        Self::start_with(test, token, &[]).await
    }

    /// Like [`Fixture::start_with_token`], with more settings for the workflow-worker.
    async fn start_with(test: &str, token: &str, extra_env: &[(&str, &str)]) -> Fixture {
        let dir = test_dir(test);
        let server = DevServer::start(&dir).await;
        let fake = start_fake(&dir).await;
        let task_queue = unique(&format!("wf-{test}"));
        let api_key = unique("tak");
        let mut worker = workflow_worker(
            &dir,
            &server,
            &fake,
            token,
            &task_queue,
            "workflow-worker.log",
        )
        .env("TEMPORAL_API_KEY", &api_key)
        .env("LOG_LEVEL", "debug");
        for (key, value) in extra_env {
            worker = worker.env(key, *value);
        }
        let worker = worker.spawn();
        Fixture {
            dir,
            server,
            fake,
            worker,
            task_queue,
            api_key,
        }
    }

    async fn start_run(&self, test: &str, job: &str) -> RunHandle {
        let client = self.server.client().await;
        run::start(&client, &self.task_queue, test, job).await
    }

    async fn finish(&self, handle: &RunHandle) -> RunEnd {
        run::finish(handle, &self.worker).await
    }
}

/// The ID of the fake's first app (the run's).
fn first_app(fake: &FakeDo) -> String {
    fake.snapshot()
        .apps
        .first()
        .expect("the run's app")
        .id
        .clone()
}

fn worker_pid(fake: &FakeDo) -> Option<u32> {
    fake.snapshot().apps.first().and_then(|a| a.worker_pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_runs_the_job_on_its_own_queue_and_deletes_the_app() {
    let fx = Fixture::start("happy").await;
    let workflow_id = unique("happy");
    let job_duration = run::observable_job_duration();
    let mut starter = ProcBuilder::new(bin("starter"), fx.dir.join("starter.log"))
        .env("TEMPORAL_ADDRESS", fx.server.address())
        .env("WORKFLOW_TASK_QUEUE", &fx.task_queue)
        .arg("--id")
        .arg(&workflow_id)
        .env("JOB_DURATION", run::OBSERVABLE_JOB)
        .env("PAUSE_DURATION", "200ms")
        .env("HEARTBEAT_TIMEOUT", "5s")
        .spawn();

    // While the job runs: one app, its worker process up, heartbeats with progress recorded
    // (a job long enough that its first heartbeat is surely seen before it ends).
    let client = fx.server.client().await;
    let handle = tea_starter::handle(&client, &workflow_id);
    let heartbeat = wait_for(
        "a heartbeat with progress from the external worker",
        RUN_TIMEOUT,
        || async {
            let job = pending_job(&handle).await?;
            job.last_heartbeat_time?;
            let payload = job.heartbeat_details?.payloads.into_iter().next()?;
            serde_json::from_slice::<JobProgress>(&payload.data).ok()
        },
    )
    .await;
    assert!(heartbeat.elapsed.as_duration() <= job_duration);
    let pid = worker_pid(&fx.fake).expect("the app's worker process runs during the job");
    assert!(pid_alive(pid));

    let status = starter.wait(RUN_TIMEOUT).await;
    let output = starter.output();
    assert!(
        status.success(),
        "starter failed: {output}\nworker: {}",
        fx.worker.output()
    );
    assert!(output.contains("completed"), "{output}");
    // One app of the default size for at least the job's duration: its cost is estimated at
    // that size's price per second.
    let (seconds, cost) = output
        .split_once(" compute-seconds in 1 unit(s), est. $")
        .and_then(|(before, after)| {
            let seconds: f64 = before.rsplit(' ').next()?.parse().ok()?;
            let cost: f64 = after.split_whitespace().next()?.parse().ok()?;
            Some((seconds, cost))
        })
        .unwrap_or_else(|| panic!("usage and cost: {output}"));
    assert!(seconds >= job_duration.as_secs_f64(), "{output}");
    let per_second = pricing::usd_per_second(
        pricing::usd_per_month(DEFAULT_INSTANCE_SIZE_SLUG).expect("the default size's price"),
    );
    assert!((cost - seconds * per_second).abs() < 1e-6, "{output}");
    assert!(
        output.contains(&workflow_id),
        "starter prints the workflow ID: {output}"
    );

    // Exactly one app ever, none left, its worker process gone.
    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 1, "{snapshot:?}");
    assert!(
        snapshot.apps.is_empty(),
        "app left running: {:?}",
        snapshot.apps
    );
    assert_eq!(snapshot.deleted_app_ids.len(), 1);
    assert!(!pid_alive(pid), "external worker {pid} still running");

    // The create request follows the API spec and sends the key as a SECRET.
    let bodies = fx.fake.raw_create_bodies();
    assert_eq!(bodies.len(), 1);
    let worker_spec = &bodies[0]["spec"]["workers"][0];
    let compute_name = bodies[0]["spec"]["name"]
        .as_str()
        .expect("app name")
        .to_owned();
    assert_eq!(worker_spec["name"], "external-worker");
    assert_eq!(worker_spec["instance_size_slug"], "apps-s-1vcpu-0.5gb");
    assert_eq!(worker_spec["image"]["registry_type"], "DOCR");
    assert!(
        worker_spec["image"].get("registry").is_none(),
        "registry must be empty for DOCR"
    );
    assert_eq!(worker_spec["image"]["repository"], "external");
    let envs: Vec<&Value> = worker_spec["envs"]
        .as_array()
        .expect("envs")
        .iter()
        .collect();
    let env = |key: &str| envs.iter().find(|e| e["key"] == key).copied();
    let key_var = env("TEMPORAL_API_KEY").expect("TEMPORAL_API_KEY forwarded");
    assert_eq!(key_var["type"], "SECRET");
    assert_eq!(key_var["scope"], "RUN_TIME");
    let queue_var = env("EXTERNAL_TASK_QUEUE").expect("queue variable");
    assert_eq!(queue_var["value"], compute_name.as_str());
    assert_eq!(queue_var["type"], "GENERAL");
    assert_eq!(
        env("TEMPORAL_ADDRESS").expect("address forwarded")["value"],
        fx.server.address()
    );
    // App Platform restarts an exited worker: its dead-man switch parks instead of exiting.
    assert_eq!(
        env("DEAD_MAN_ACTION").expect("dead-man action")["value"],
        "park"
    );
    // The worker connects exactly as forwarded, never through a profile of its own.
    assert_eq!(
        env("TEA_TEMPORAL_ENV_ONLY").expect("env-only marker")["value"],
        "true"
    );
    assert_eq!(
        env("TEMPORAL_TLS").expect("TLS setting forwarded")["value"],
        "false"
    );

    // Wire contract: the job was scheduled on the app's queue with two json/plain integers.
    let events = history::events(&handle).await;
    let (_, scheduled) = history::scheduled(&events, LONG_RUNNING_ACTIVITY)
        .into_iter()
        .next()
        .expect("long-running-command scheduled");
    assert_eq!(
        scheduled.task_queue.as_ref().map(|q| q.name.as_str()),
        Some(compute_name.as_str())
    );
    let payloads = scheduled.input.expect("job input").payloads;
    assert_eq!(payloads.len(), 2, "two arguments, two payloads");
    for payload in &payloads {
        assert_eq!(
            payload.metadata.get("encoding").map(Vec::as_slice),
            Some(&b"json/plain"[..])
        );
    }
    assert_eq!(
        payloads[0].data,
        job_duration.as_nanos().to_string().as_bytes(),
        "job duration as Go nanoseconds"
    );
    assert_eq!(
        payloads[1].data, b"5000000000",
        "heartbeat timeout as Go nanoseconds"
    );
    assert!(
        scheduled.schedule_to_start_timeout.is_some(),
        "a schedule-to-start timeout is set"
    );

    // No secret value in history (payloads decoded) or in any log.
    let history_text = crate::jobs::history_text(&handle).await;
    assert!(
        !history_text.contains(&fx.api_key),
        "API key found in workflow history"
    );
    assert!(
        !history_text.contains(DO_TOKEN),
        "DO token found in workflow history"
    );
    let app_logs: String = std::fs::read_dir(fx.dir.join("apps"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        app_logs.contains("long running command finished"),
        "external worker log: {app_logs}"
    );
    for (name, text) in [
        ("workflow-worker", fx.worker.output()),
        ("starter", output),
        ("external-worker", app_logs),
    ] {
        assert!(
            !text.contains(&fx.api_key),
            "API key found in the {name} log"
        );
        assert!(!text.contains(DO_TOKEN), "DO token found in the {name} log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_during_the_job_deletes_the_app_and_stops_its_worker() {
    let fx = Fixture::start("cancel").await;
    let handle = fx.start_run("cancel", "10m").await;
    wait_for(
        "the job to start on the external worker",
        RUN_TIMEOUT,
        || pending_job(&handle),
    )
    .await;
    let pid = worker_pid(&fx.fake).expect("worker process during the job");

    handle
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel");
    let end = fx.finish(&handle).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");

    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 1);
    assert!(
        snapshot.apps.is_empty(),
        "app left running after cancel: {:?}",
        snapshot.apps
    );
    assert!(
        !pid_alive(pid),
        "external worker {pid} still running after cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deployment_fails_the_run_clearly_and_deletes_the_app() {
    let fx = Fixture::start("deploy-error").await;
    // Every attempt's deployment fails: the run provisions fresh compute up to its limit, then
    // fails, each app deleted.
    let attempts = tea_contract::DEFAULT_MAX_COMPUTE_ATTEMPTS;
    fx.fake.inject(Fault::DeploymentError { count: attempts });
    let handle = fx.start_run("deploy-error", "2s").await;
    let end = fx.finish(&handle).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected a failed run, got {end}");
    };
    assert!(
        message.contains("ERROR"),
        "message names the phase: {message}"
    );
    assert!(
        message.contains("deployment"),
        "message says what failed: {message}"
    );
    assert!(
        message.contains(&format!("gave up after {attempts}")),
        "{message}"
    );

    let snapshot = fx.fake.snapshot();
    assert_eq!(
        snapshot.total_created,
        u64::from(attempts),
        "one app per attempt"
    );
    assert!(
        snapshot.apps.is_empty(),
        "app left after failed deployment: {:?}",
        snapshot.apps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_answered_500_after_storing_still_makes_exactly_one_app() {
    let fx = Fixture::start("create-500").await;
    fx.fake.inject(Fault::CreateStoresThen500 { count: 1 });
    let handle = fx.start_run("create-500", "1s").await;
    run::completed(&handle, &fx.worker).await;

    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 1, "a duplicate app was created");
    assert!(
        snapshot.request_count("create", 500) >= 1,
        "the fault was hit: {:?}",
        snapshot.requests
    );
    assert!(
        snapshot.apps.is_empty(),
        "app left running: {:?}",
        snapshot.apps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_without_duplicating_compute() {
    let fx = Fixture::start("api-faults").await;
    fx.fake.inject(Fault::RateLimit {
        count: 2,
        retry_after_secs: 1,
        op: Op::Create,
    });
    fx.fake.inject(Fault::ServerError {
        count: 2,
        status: 503,
        op: Op::GetDeployment,
    });
    fx.fake.inject(Fault::ServerError {
        count: 1,
        status: 500,
        op: Op::Delete,
    });
    let handle = fx.start_run("api-faults", "1s").await;
    run::completed(&handle, &fx.worker).await;

    let snapshot = fx.fake.snapshot();
    assert_eq!(
        snapshot.request_count("create", 429),
        2,
        "{:?}",
        snapshot.requests
    );
    assert_eq!(
        snapshot.request_count("get_deployment", 503),
        2,
        "{:?}",
        snapshot.requests
    );
    assert_eq!(
        snapshot.request_count("delete", 500),
        1,
        "{:?}",
        snapshot.requests
    );
    assert_eq!(snapshot.total_created, 1, "a retry duplicated the app");
    assert!(
        snapshot.apps.is_empty(),
        "app left running: {:?}",
        snapshot.apps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_token_fails_the_run_at_once_with_a_clear_message() {
    let fx = Fixture::start_with_token("bad-token", "dop_v1_not_the_right_token").await;
    let handle = fx.start_run("bad-token", "1s").await;
    let end = fx.finish(&handle).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected a failed run, got {end}");
    };
    assert!(message.contains("401"), "{message}");
    assert!(
        message.contains("DIGITALOCEAN_ACCESS_TOKEN"),
        "says what to fix: {message}"
    );
    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 0);
    assert!(
        snapshot.request_count("create", 401) <= 1,
        "a 401 must not be retried: {:?}",
        snapshot.requests
    );
}

/// A 429 whose Retry-After is longer than the heartbeat timeout (5 s here). The
/// create call waits it out inside one attempt, heartbeating, so the attempt never times out
/// while it still runs (a timed-out attempt's late POST could race its own retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_longer_than_the_heartbeat_timeout_does_not_time_the_create_out() {
    let fx = Fixture::start("long-retry-after").await;
    fx.fake.inject(Fault::RateLimit {
        count: 1,
        retry_after_secs: 8,
        op: Op::Create,
    });
    let handle = fx.start_run("long-retry-after", "1s").await;
    run::completed(&handle, &fx.worker).await;
    let snapshot = fx.fake.snapshot();
    assert_eq!(
        snapshot.request_count("create", 429),
        1,
        "{:?}",
        snapshot.requests
    );
    assert_eq!(snapshot.total_created, 1, "exactly one app ever");
    assert!(snapshot.apps.is_empty(), "left: {:?}", snapshot.apps);
    let events = history::events(&handle).await;
    assert_eq!(
        history::activity_timeouts(&events),
        0,
        "an activity attempt timed out"
    );
}

/// A deployment that never finishes is bounded by the deploy timeout: each attempt
/// is torn down and counted as lost, and the run fails naming the timeout, every app deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_that_never_finishes_is_torn_down_at_the_deploy_timeout() {
    let fx = Fixture::start_with("deploy-timeout", DO_TOKEN, &[("DEPLOY_TIMEOUT", "2s")]).await;
    // Phases advance once an hour from now on: no deployment gets anywhere.
    fx.fake.inject(Fault::DeployDelay {
        step_delay_ms: 3_600_000,
    });
    let handle = fx.start_run("deploy-timeout", "1s").await;
    let end = fx.finish(&handle).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected a failed run, got {end}");
    };
    assert!(message.contains("deploy timeout of 2s"), "{message}");
    let attempts = tea_contract::DEFAULT_MAX_COMPUTE_ATTEMPTS;
    assert!(
        message.contains(&format!("gave up after {attempts}")),
        "{message}"
    );
    let snapshot = fx.fake.snapshot();
    assert_eq!(
        snapshot.total_created,
        u64::from(attempts),
        "one app per attempt"
    );
    assert!(snapshot.apps.is_empty(), "left: {:?}", snapshot.apps);
}

/// A cancel that arrives while a lost attempt's compute is being torn down ends
/// the run CANCELED without provisioning the next attempt's compute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_the_teardown_of_a_lost_attempt_provisions_nothing_more() {
    let fx = Fixture::start("cancel-between-attempts").await;
    let handle = fx.start_run("cancel-between-attempts", "10m").await;
    wait_for("the job to start", RUN_TIMEOUT, || pending_job(&handle)).await;
    let app = first_app(&fx.fake);
    // The teardown's DELETEs are rate limited until the test has cancelled during it (the
    // workflow retries its Delete without limit): the teardown cannot end before it is seen.
    fx.fake.inject(Fault::RateLimit {
        count: 1_000,
        retry_after_secs: 1,
        op: Op::Delete,
    });
    assert!(
        fx.fake
            .signal_worker(&app, nix::sys::signal::Signal::SIGKILL)
    );
    // The lost attempt's teardown.
    wait_for_phase(&fx, &handle, Phase::Deprovisioning).await;
    handle
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel");
    fx.fake.clear_faults();
    let end = fx.finish(&handle).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 1, "no compute after the cancel");
    assert!(snapshot.apps.is_empty(), "left: {:?}", snapshot.apps);
}

/// App Platform restarts a worker process that exits. Once the run that owns an
/// app is terminated, its worker's dead-man switch parks (stops polling, stays up, idle)
/// instead of exiting into a crash loop, and the sweeper deletes the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_run_s_app_worker_parks_instead_of_crash_looping() {
    let dir = test_dir("do-park");
    let server = DevServer::start(&dir).await;
    let mut config = FakeDoConfig::new(DO_TOKEN)
        .with_worker_command(
            bin("external-worker"),
            ["--dead-man-check-interval", "200ms"],
        )
        .with_step_delay(Duration::from_millis(100));
    config.log_dir = Some(dir.join("apps"));
    config.kill_grace = Duration::from_secs(5);
    let fake = FakeDo::start(config).await.expect("fake DigitalOcean API");
    let task_queue = unique("wf-do-park");
    let worker = workflow_worker(
        &dir,
        &server,
        &fake,
        DO_TOKEN,
        &task_queue,
        "workflow-worker.log",
    )
    .env("SWEEP_INTERVAL", "0")
    .spawn();
    let handle = run::start(&server.client().await, &task_queue, "do-park", "10m").await;
    wait_for("the job to start", RUN_TIMEOUT, || pending_job(&handle)).await;
    let app = fake.snapshot().apps.first().expect("the run's app").clone();
    let pid = app.worker_pid.expect("the app's worker runs");
    handle
        .terminate(
            temporalio_client::WorkflowTerminateOptions::builder()
                .reason("test")
                .build(),
        )
        .await
        .expect("terminate");
    let log = app.log_file.clone().expect("the app's log file");
    wait_for("the worker to park", RUN_TIMEOUT, || async {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("parked")
            .then_some(())
    })
    .await;
    // An observation window, not synchronisation: many checks of the switch and the fake's
    // restart delay go by, and the worker is still the same idle process, never restarted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = fake.snapshot();
    let parked = now.app(&app.id).expect("the app still exists until swept");
    assert_eq!(
        parked.restarts, 0,
        "the worker was restarted: {:?}",
        parked.exits
    );
    assert!(
        parked.exits.is_empty(),
        "the worker exited: {:?}",
        parked.exits
    );
    assert_eq!(parked.worker_pid, Some(pid));
    assert!(pid_alive(pid));
    run::wait_until_listed(&handle, false).await;

    let mut sweep = workflow_worker(&dir, &server, &fake, DO_TOKEN, &task_queue, "sweep.log")
        .env("SWEEP_GRACE_PERIOD", "0")
        .env("LOG_LEVEL", "error")
        .arg("sweep")
        .arg("--json")
        .spawn();
    let status = sweep.wait(RUN_TIMEOUT).await;
    assert!(status.success(), "sweep: {}", sweep.output());
    assert!(
        fake.snapshot().apps.is_empty(),
        "the sweeper left the parked app"
    );
    wait_for("the parked worker to stop", RUN_TIMEOUT, || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    drop(worker);
}

/// The user's command through App Platform: it runs on the app's worker, completes with its
/// output, and a job secret travels as a SECRET app variable, absent from history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_on_the_app_and_its_secret_travels_as_a_secret() {
    const SECRET: &str = "do-job-s3cr3t";
    let fx = Fixture::start_with(
        "do-command",
        DO_TOKEN,
        &[
            ("JOB_SECRET_ENV", "JOB_API_TOKEN"),
            ("JOB_API_TOKEN", SECRET),
        ],
    )
    .await;
    let input = tea_contract::WorkflowInput {
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            // Not the value itself in the command: the command is in the run's history.
            r#"echo "token $JOB_API_TOKEN, mode $MODE""#.into(),
        ]),
        env: Some([("MODE".to_owned(), "fast".to_owned())].into()),
        job_duration: None,
        ..run::input("1s")
    };
    let id = unique("do-command");
    let handle = tea_starter::start(&fx.server.client().await, &fx.task_queue, &id, input)
        .await
        .expect("start");
    let job = run::completed_command(&handle, &fx.worker).await;
    // The job had the value: masking replaces exactly the secret values.
    assert_eq!(job.output_tail[0].line, "token ***, mode fast");
    let bodies = fx.fake.raw_create_bodies();
    let envs = bodies[0]["spec"]["workers"][0]["envs"]
        .as_array()
        .expect("envs")
        .clone();
    let secret = envs
        .iter()
        .find(|e| e["key"] == "JOB_API_TOKEN")
        .expect("the job secret is an app variable");
    assert_eq!(secret["type"], "SECRET");
    assert!(
        !crate::jobs::history_text(&handle).await.contains(SECRET),
        "the secret is in history"
    );
    assert!(
        !fx.worker.output().contains(SECRET),
        "the secret is in the log"
    );
    assert!(fx.fake.snapshot().apps.is_empty(), "app left");
}

/// A run's resources through App Platform: its app gets the cheapest instance size that fits
/// them, and the run's cost estimate is that size's price, not the configured size's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_s_resources_pick_its_app_s_size_and_its_cost() {
    let fx = Fixture::start("do-resources").await;
    let input = tea_contract::WorkflowInput {
        resources: Some(tea_contract::Resources {
            cpu: Some(tea_contract::Cpus::from_millis(1000)),
            memory: Some(1536 << 20),
            ..Default::default()
        }),
        ..run::input("1s")
    };
    let id = format!("do-resources-{}", uuid::Uuid::new_v4().simple());
    let handle = tea_starter::start(&fx.server.client().await, &fx.task_queue, &id, input)
        .await
        .expect("start");
    let end = fx.finish(&handle).await;
    let RunEnd::Completed(outcome) = &end else {
        panic!("run ended {end}; worker: {}", fx.worker.output());
    };
    let bodies = fx.fake.raw_create_bodies();
    assert_eq!(
        bodies[0]["spec"]["workers"][0]["instance_size_slug"],
        "apps-s-1vcpu-2gb"
    );
    let [usage] = outcome.usage.as_slice() else {
        panic!("one unit: {:?}", outcome.usage);
    };
    assert_eq!(usage.size.as_deref(), Some("apps-s-1vcpu-2gb"));
    let price = tea_compute::digitalocean::pricing::usd_per_second(25.0);
    let cost = usage.estimated_cost_usd.expect("a cost estimate");
    assert!((cost - usage.seconds * price).abs() < 1e-12, "{usage:?}");
    assert!(fx.fake.snapshot().apps.is_empty(), "app left");
}

/// How often each activity type's attempts ended in each way, from the history: `(activity
/// type, "scheduled" | "started" | "completed" | "failed" | "timed_out" | "canceled")`.
pub(crate) fn activity_events(
    events: &[temporalio_common::protos::temporal::api::history::v1::HistoryEvent],
) -> Vec<(String, &'static str)> {
    let mut types = std::collections::HashMap::new();
    let mut out = Vec::new();
    for event in events {
        let (scheduled, what) = match &event.attributes {
            Some(Attributes::ActivityTaskScheduledEventAttributes(a)) => {
                let name = a.activity_type.as_ref().map(|t| t.name.clone());
                types.insert(event.event_id, name.unwrap_or_default());
                (event.event_id, "scheduled")
            }
            Some(Attributes::ActivityTaskStartedEventAttributes(a)) => {
                (a.scheduled_event_id, "started")
            }
            Some(Attributes::ActivityTaskCompletedEventAttributes(a)) => {
                (a.scheduled_event_id, "completed")
            }
            Some(Attributes::ActivityTaskFailedEventAttributes(a)) => {
                (a.scheduled_event_id, "failed")
            }
            Some(Attributes::ActivityTaskTimedOutEventAttributes(a)) => {
                (a.scheduled_event_id, "timed_out")
            }
            Some(Attributes::ActivityTaskCanceledEventAttributes(a)) => {
                (a.scheduled_event_id, "canceled")
            }
            _ => continue,
        };
        out.push((types.get(&scheduled).cloned().unwrap_or_default(), what));
    }
    out
}

/// App Platform can keep a deployment DEPLOYING while its container already runs: here for
/// longer than `DEPLOY_TIMEOUT`, with the worker taking the job meanwhile. A job that started
/// makes the unit ready: the run completes, its job started once, on the one app ever made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_while_the_deployment_still_rolls_out_is_not_thrown_away() {
    let fx = Fixture::start_with(
        "slow-rollout",
        DO_TOKEN,
        &[("DEPLOY_TIMEOUT", "30s"), ("SWEEP_INTERVAL", "0")],
    )
    .await;
    // The deployment reads DEPLOYING for 10 min while its worker runs; the job (35 s) outlasts
    // the deploy timeout (30 s: ample for the worker to start and take the job, which it must
    // do before the wait gives up), which would otherwise end the readiness wait in failure
    // and cancel the running job.
    fx.fake.inject(Fault::SlowRollout {
        count: 1,
        hold_ms: 600_000,
    });
    let handle = fx.start_run("slow-rollout", "35s").await;
    let outcome = run::completed(&handle, &fx.worker).await;
    assert_eq!(outcome.attempts, 1, "{outcome:?}");

    let events = history::events(&handle).await;
    let job: Vec<&str> = activity_events(&events)
        .into_iter()
        .filter(|(activity, _)| activity == LONG_RUNNING_ACTIVITY)
        .map(|(_, what)| what)
        .collect();
    assert_eq!(
        job,
        ["scheduled", "started", "completed"],
        "the job ran once"
    );
    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 1, "exactly one app ever");
    assert!(snapshot.apps.is_empty(), "left: {:?}", snapshot.apps);
    assert!(
        fx.worker.output().contains("the job has started"),
        "the readiness wait ended on the job's start: {}",
        fx.worker.output()
    );
}

/// A job that completed is never thrown away. The create call stores the app but answers 500,
/// and its lookup of the app waits out a `Retry-After` of 110 s while the app's worker runs the
/// job (queued with `Create`). Once the job has completed, the lookup is armed to be refused for
/// good (422) and the workflow-worker is killed and started again: `Create`'s next attempt is
/// refused, so `Create` fails. The run reports the job's result, and the app is deleted by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_completed_before_its_create_failed_is_the_runs_result() {
    let mut fx =
        Fixture::start_with("create-fails-late", DO_TOKEN, &[("SWEEP_INTERVAL", "0")]).await;
    fx.fake.inject(Fault::CreateStoresThen500 { count: 1 });
    fx.fake.inject(Fault::RateLimit {
        count: 1,
        retry_after_secs: 110,
        op: Op::List,
    });
    let handle = fx.start_run("create-fails-late", "1s").await;
    let activities = wait_for("the job to complete", RUN_TIMEOUT, || async {
        let activities = activity_events(&history::events(&handle).await);
        activities
            .contains(&(LONG_RUNNING_ACTIVITY.to_owned(), "completed"))
            .then_some(activities)
    })
    .await;
    assert!(
        !activities.iter().any(|(activity, what)| activity == "Create"
            && matches!(*what, "completed" | "failed")),
        "Create ended before the job did (its lookup waits 110 s): {activities:?}"
    );
    fx.fake.inject(Fault::ClientError {
        count: 1,
        status: 422,
        op: Op::List,
    });
    // The waiting create attempt dies with its workflow-worker; the next one is refused.
    fx.worker.sigkill();
    fx.worker = workflow_worker(
        &fx.dir,
        &fx.server,
        &fx.fake,
        DO_TOKEN,
        &fx.task_queue,
        "workflow-worker-restarted.log",
    )
    .env("TEMPORAL_API_KEY", &fx.api_key)
    .env("SWEEP_INTERVAL", "0")
    .env("LOG_LEVEL", "debug")
    .spawn();
    let outcome = run::completed(&handle, &fx.worker).await;
    assert_eq!(outcome.attempts, 1, "{outcome:?}");
    assert!(outcome.deleted, "{outcome:?}");
    assert_eq!(outcome.provider, "digitalocean", "{outcome:?}");
    let activities = activity_events(&history::events(&handle).await);
    assert!(
        activities.contains(&("Create".to_owned(), "failed")),
        "Create failed: {activities:?}"
    );
    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 1, "exactly one app ever");
    assert!(snapshot.apps.is_empty(), "left: {:?}", snapshot.apps);
    assert!(
        snapshot.request_count("list", 422) == 1,
        "the refusal was hit: {:?}",
        snapshot.requests
    );
}

/// The compute lifetime counts from `Create`'s scheduling, as the sweeper counts from the
/// unit's creation: a create held 6 s by a 429 leaves the unit at most 14 s of its 20 s
/// lifetime, so it is torn down within 20 s of its creation, not 20 s after the create
/// returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compute_lifetime_counts_the_time_its_create_took() {
    let fx = Fixture::start_with(
        "lifetime-slow-create",
        DO_TOKEN,
        &[("MAX_COMPUTE_LIFETIME", "20s"), ("SWEEP_INTERVAL", "0")],
    )
    .await;
    fx.fake.inject(Fault::RateLimit {
        count: 1,
        retry_after_secs: 6,
        op: Op::Create,
    });
    let handle = fx.start_run("lifetime-slow-create", "10m").await;
    let end = fx.finish(&handle).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected a lifetime kill, the run ended {end}");
    };
    assert!(
        message.contains("exceeded the maximum compute lifetime of 20s"),
        "{message}"
    );
    let timers: Vec<Duration> = history::events(&handle)
        .await
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::TimerStartedEventAttributes(t)) => t
                .start_to_fire_timeout
                .and_then(|d| Duration::try_from(d).ok()),
            _ => None,
        })
        .collect();
    let lifetime_timer = timers
        .iter()
        .copied()
        .find(|d| *d > Duration::from_secs(1))
        .unwrap_or_else(|| panic!("no lifetime timer in {timers:?}"));
    assert!(
        lifetime_timer <= Duration::from_secs(14),
        "the lifetime timer ({lifetime_timer:?}) did not count the 6 s the create took"
    );
    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 1, "exactly one app ever");
    assert!(snapshot.apps.is_empty(), "left: {:?}", snapshot.apps);
}

/// Waits until `handle`'s run is in `phase` (its status query).
async fn wait_for_phase(fx: &Fixture, handle: &RunHandle, phase: Phase) {
    let client = fx.server.client().await;
    let workflow_id = handle.info().workflow_id.clone();
    wait_for(
        &format!("the run to reach {phase:?}"),
        RUN_TIMEOUT,
        || async {
            let report = tea_starter::status::report(&client, &workflow_id)
                .await
                .ok()?;
            (report.status?.phase == phase).then_some(())
        },
    )
    .await;
}

/// Whether the run's job (`long-running-command`) ever started on a worker.
async fn job_started(handle: &RunHandle) -> bool {
    let events = history::events(handle).await;
    let scheduled: Vec<i64> = history::scheduled(&events, LONG_RUNNING_ACTIVITY)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    events.iter().any(|e| {
        matches!(&e.attributes,
            Some(Attributes::ActivityTaskStartedEventAttributes(a))
                if scheduled.contains(&a.scheduled_event_id))
    })
}

/// A run cancelled during its first pause ends CANCELED before it creates anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_the_first_pause_creates_nothing() {
    let fx = Fixture::start("cancel-pausing").await;
    let client = fx.server.client().await;
    let mut input = run::input("1s");
    input.pause = Some(tea_contract::GoDuration::from_secs(600));
    let id = unique("cancel-pausing");
    let handle = tea_starter::start(&client, &fx.task_queue, &id, input)
        .await
        .expect("start");
    wait_for_phase(&fx, &handle, Phase::Waiting).await;
    handle
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel");
    let end = fx.finish(&handle).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    assert_eq!(fx.fake.snapshot().total_created, 0, "nothing was created");
}

/// A cancel while `Create` is still in flight: the workflow waits to learn what exists, then
/// withdraws the job it queued beside `Create` (which never starts) and deletes the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_creating_withdraws_the_queued_job_and_deletes_the_app() {
    let fx = Fixture::start("cancel-creating").await;
    // Creates are refused (429, retried after 1 s) until the test has cancelled.
    fx.fake.inject(Fault::RateLimit {
        count: 1_000,
        retry_after_secs: 1,
        op: Op::Create,
    });
    let handle = fx.start_run("cancel-creating", "10m").await;
    wait_for("a create to be refused", RUN_TIMEOUT, || async {
        (fx.fake.snapshot().request_count("create", 429) > 0).then_some(())
    })
    .await;
    handle
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel");
    // The cancel request is in the run's history once the call returns: only now may the
    // create succeed.
    fx.fake.clear_faults();
    let end = fx.finish(&handle).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    assert!(!job_started(&handle).await, "the withdrawn job started");
    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 1, "one app, created once");
    assert!(snapshot.apps.is_empty(), "left: {:?}", snapshot.apps);
}

/// A cancel while the deployment rolls out (no worker yet): the wait and the queued job are
/// cancelled and the app is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_deploying_deletes_the_app() {
    let fx = Fixture::start("cancel-deploying").await;
    // Phases advance once an hour from now on: the deployment never gets anywhere.
    fx.fake.inject(Fault::DeployDelay {
        step_delay_ms: 3_600_000,
    });
    let handle = fx.start_run("cancel-deploying", "10m").await;
    wait_for_phase(&fx, &handle, Phase::Deploying).await;
    handle
        .cancel(WorkflowCancelOptions::builder().reason("test").build())
        .await
        .expect("cancel");
    let end = fx.finish(&handle).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    assert!(
        !job_started(&handle).await,
        "the job started without a worker"
    );
    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 1);
    assert!(snapshot.apps.is_empty(), "left: {:?}", snapshot.apps);
}

/// A command whose app's worker is killed resumes on a fresh app from the last checkpoint the
/// lost app's job sent (App Platform restarts the killed worker, but the job it ran is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_app_worker_is_killed_resumes_on_a_fresh_app_from_its_last_checkpoint() {
    let fx = Fixture::start("do-resumed-command").await;
    let input = resume::counting_input(run::input("1s"), true);
    let handle = tea_starter::start(
        &fx.server.client().await,
        &fx.task_queue,
        &unique("do-resumed-command"),
        input.clone(),
    )
    .await
    .expect("start");
    // About two thirds in.
    resume::wait_for_checkpoint(&handle, resume::STEPS * 4 / 7).await;
    let app = first_app(&fx.fake);
    assert!(
        fx.fake
            .signal_worker(&app, nix::sys::signal::Signal::SIGKILL)
    );

    let outcome = run::completed(&handle, &fx.worker).await;
    let logs = resume::read_all(
        std::fs::read_dir(fx.dir.join("apps"))
            .expect("the apps' logs")
            .filter_map(|entry| Some(entry.ok()?.path())),
    );
    let from = resume::assert_resumed(
        &outcome,
        resume::first_unit_log(&logs),
        resume::steps_per_heartbeat(&input),
    );
    resume::assert_status_says_resumed(&handle, from).await;
    let snapshot = fx.fake.snapshot();
    assert_eq!(snapshot.total_created, 2, "one fresh app");
    assert!(snapshot.apps.is_empty(), "left: {:?}", snapshot.apps);
}
