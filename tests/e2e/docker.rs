//! The pattern end to end through the Docker provider, on the real engine: the external-worker
//! image built from the top-level Dockerfile runs one container per run.
//!
//! The image is `temporal-external-activity/external-worker:dev` (override with
//! `TEA_E2E_DOCKER_IMAGE`), which `.ci/packaging` builds from the Dockerfile and keeps; build it
//! by hand with `docker build -t temporal-external-activity/external-worker:dev .`. Where no
//! engine, no such image or no `docker-registry` is at hand, these tests say that they were
//! skipped and why, except under `REQUIRE_DOCKER=1` (CI), where that is a failure. The resume
//! test runs a shell job: it adds this machine's shell to that image once, as
//! `tea-test/external-worker-sh:<image ID>`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use bollard::Docker;
use futures::TryStreamExt;
use tea_compute::docker::{
    OWNER_LABEL,
    testing::{docker_required, engine_or_skip, remove_owned},
};
use tea_contract::{CREATE_ACTIVITY, WorkflowInput};
use tea_harness::temporal::DevServerOptions;
use tea_starter::{RunEnd, RunHandle};
use temporalio_common::protos::temporal::api::{
    enums::v1::RetryState, history::v1::history_event::Attributes,
};

use crate::resume;
use crate::support::{
    self, DevServer, Proc, history,
    run::{self, RUN_TIMEOUT, pending_job},
    test_dir, unique, wait_for,
};

/// The image the tests run, unless `TEA_E2E_DOCKER_IMAGE` names another.
const DEFAULT_IMAGE: &str = "temporal-external-activity/external-worker:dev";

/// The external-worker image to run, or `None` (skipped) when the engine or the image is
/// missing; a panic instead under `REQUIRE_DOCKER=1`.
async fn engine_and_image(test: &str) -> Option<(Docker, String)> {
    let docker = engine_or_skip(test).await?;
    let image = std::env::var("TEA_E2E_DOCKER_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned());
    if docker.inspect_image(&image).await.is_ok() {
        return Some((docker, image));
    }
    let why = format!(
        "the image {image} is not on the engine: build it with `docker build -t {image} .` \
         (or scripts/docker-base-images.sh first where no registry is reachable)"
    );
    if docker_required() {
        panic!("{test}: REQUIRE_DOCKER=1 but {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

/// A dev server, and a workflow-worker using the Docker provider with containers on
/// `network` (the host's when `None`), for runs of one test.
struct Fixture {
    dir: PathBuf,
    server: DevServer,
    worker: Proc,
    task_queue: String,
    owner: String,
    docker: Docker,
    image: String,
}

impl Fixture {
    async fn start(test: &str, docker: Docker, image: String, network: Option<String>) -> Fixture {
        Self::start_with_env(test, docker, image, network, &[]).await
    }

    /// Like [`Fixture::start`], with more settings for the workflow-worker.
    async fn start_with_env(
        test: &str,
        docker: Docker,
        image: String,
        network: Option<String>,
        env: &[(&str, &str)],
    ) -> Fixture {
        let dir = test_dir(test);
        let options = DevServerOptions {
            // Containers on a bridge network reach the host's bridge address, not its loopback.
            ip: network.as_ref().map(|_| "0.0.0.0".to_owned()),
            ..Default::default()
        };
        let server = DevServer::try_start(&dir, options)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let task_queue = format!("wf-{test}-{unique}");
        let owner = format!("tea-e2e/{test}-{unique}");
        let mut worker =
            support::workflow_worker(&dir, &server, &task_queue, "workflow-worker.log")
                .env("COMPUTE_PROVIDER", "docker")
                .env("COMPUTE_OWNER", &owner)
                .env(
                    "DOCKER_LOG_DIR",
                    dir.join("docker-logs").display().to_string(),
                )
                .env("DOCKER_STOP_GRACE", "2s");
        if let Some(network) = &network {
            worker = worker.env("DOCKER_NETWORK", network).env(
                "DOCKER_TEMPORAL_ADDRESS",
                format!("host.docker.internal:{}", server.port),
            );
        }
        for (key, value) in env {
            worker = worker.env(key, *value);
        }
        Fixture {
            worker: worker.spawn(),
            dir,
            server,
            task_queue,
            owner,
            docker,
            image,
        }
    }

    /// Input running the fixture's image (`registry` empty: the engine's own).
    fn input(&self, job: &str) -> WorkflowInput {
        let (repository, tag) = self.image.rsplit_once(':').expect("image has a tag");
        WorkflowInput {
            registry: String::new(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            ..run::input(job)
        }
    }

    async fn start_run(&self, test: &str, input: WorkflowInput) -> RunHandle {
        let id = unique(test);
        tea_starter::start(&self.server.client().await, &self.task_queue, &id, input)
            .await
            .expect("start the workflow")
    }

    /// Names of this fixture's containers (running or not).
    async fn containers(&self) -> Vec<String> {
        let filter = format!("{OWNER_LABEL}={}", self.owner);
        let filters = std::collections::HashMap::from([("label".to_owned(), vec![filter])]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .expect("list containers")
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .map(|n| n.trim_start_matches('/').to_owned())
            .collect()
    }

    /// Waits for the run's job to be running; returns its container's name.
    async fn job_container(&self, handle: &RunHandle) -> String {
        wait_for("the job to start", RUN_TIMEOUT, || pending_job(handle)).await;
        let containers = self.containers().await;
        let [name] = containers.as_slice() else {
            panic!("one container during the job, found {containers:?}");
        };
        name.clone()
    }

    fn kept_logs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("docker-logs"))
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Removes whatever containers of this fixture are left, then fails if there were any.
    async fn assert_nothing_left(&self) {
        let left = remove_owned(&self.docker, &self.owner).await;
        assert!(left.is_empty(), "containers left behind: {left:?}");
    }
}

impl Drop for Fixture {
    /// Whatever a failed test left: its containers go, whatever happened.
    fn drop(&mut self) {
        remove_with_cli(&format!("label={OWNER_LABEL}={}", self.owner));
    }
}

/// A network of a test's own, labelled as ours; it and its containers go when dropped.
struct TestNetwork(String);

impl TestNetwork {
    fn create() -> TestNetwork {
        let name = unique("tea-e2e");
        let label = "io.github.temporal-external-activity.test=network";
        docker_cli(&["network", "create", "--label", label, &name]);
        TestNetwork(name)
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        remove_with_cli(&format!("network={}", self.0));
        let _ = Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

/// Forcibly removes the containers `docker ps -a --filter <filter>` lists (for `Drop`, where
/// nothing can be awaited).
fn remove_with_cli(filter: &str) {
    let Ok(out) = Command::new("docker")
        .args(["ps", "-aq", "--filter", filter])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}

/// A loopback registry: Debian's `docker-registry` (the CNCF distribution server) on a port it
/// picks, storing under `dir`; killed when dropped.
struct Registry {
    child: std::process::Child,
    log: PathBuf,
    /// `127.0.0.1:<port>`, known once [`Registry::wait_ready`] has returned.
    address: String,
}

impl Registry {
    fn start(dir: &Path) -> Option<Registry> {
        let program = ["/usr/bin/docker-registry", "/usr/bin/registry"]
            .into_iter()
            .find(|p| Path::new(p).is_file());
        let Some(program) = program else {
            let why = "no registry server: install Debian's docker-registry package";
            if docker_required() {
                panic!("REQUIRE_DOCKER=1 but {why}");
            }
            eprintln!("SKIPPED registry test: {why}");
            return None;
        };
        // Port 0: the registry binds a free port itself and logs which (a port found free
        // here could be taken before it binds it).
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.join("registry-data").display()
            ),
        )
        .expect("registry config");
        let log_path = dir.join("registry.log");
        let log = std::fs::File::create(&log_path).expect("registry log");
        let child = Command::new(program)
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        Some(Registry {
            child,
            log: log_path,
            address: String::new(),
        })
    }

    /// Waits until the registry says where it listens and answers there.
    async fn wait_ready(&mut self) {
        let log = self.log.clone();
        self.address = wait_for(
            "the registry's address",
            Duration::from_secs(30),
            || async {
                let text = std::fs::read_to_string(&log).ok()?;
                let (_, rest) = text.split_once("listening on ")?;
                Some(rest.split(['"', ' ', '\n']).next()?.to_owned())
            },
        )
        .await;
        let url = format!("http://{}/v2/", self.address);
        wait_for(
            "the registry to answer",
            Duration::from_secs(30),
            || async {
                let response = reqwest::get(&url).await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the docker CLI (tests only: the provider never does) and fails on an error.
fn docker_cli(args: &[&str]) {
    docker_output(args);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_image_pushed_to_a_registry_is_pulled_and_runs_a_full_run() {
    let test = "docker-registry-run";
    let Some((docker, image)) = engine_and_image(test).await else {
        return;
    };
    let dir = test_dir(test);
    let Some(mut registry) = Registry::start(&dir) else {
        return;
    };
    registry.wait_ready().await;

    // Build, push, deploy, as on DigitalOcean: the engine keeps no copy under the pushed name,
    // so the provider has to pull it from the registry.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let pushed = format!("{}/tea-e2e/external-worker:{tag}", registry.address);
    docker_cli(&["tag", &image, &pushed]);
    docker_cli(&["push", "--quiet", &pushed]);
    docker_cli(&["rmi", &pushed]);
    assert!(
        docker.inspect_image(&pushed).await.is_err(),
        "{pushed} is still local"
    );

    let fx = Fixture::start(test, docker.clone(), image, None).await;
    let mut input = fx.input("2s");
    input.registry = registry.address.clone();
    input.repository = "tea-e2e/external-worker".into();
    input.tag = tag;
    let handle = fx.start_run(test, input).await;
    let end = run::finish(&handle, &fx.worker).await;
    let pulled = docker.inspect_image(&pushed).await.is_ok();
    let _ = docker
        .remove_image(
            &pushed,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
    assert!(
        matches!(end, RunEnd::Completed(_)),
        "run ended {end}; worker: {}",
        fx.worker.output()
    );
    assert!(pulled, "the provider pulled {pushed} from the registry");
    let logs = fx.kept_logs();
    assert_eq!(logs.len(), 1, "one container, its log kept: {logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap_or_default();
    assert!(
        log.contains("long running command finished"),
        "container log: {log}"
    );
    fx.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_run_naming_a_missing_image_fails_at_once_naming_it() {
    let test = "docker-missing-image";
    let Some((docker, image)) = engine_and_image(test).await else {
        return;
    };
    let fx = Fixture::start(test, docker, image, None).await;
    let mut input = fx.input("2s");
    // Nothing listens on the discard port: the pull fails at once.
    input.registry = "127.0.0.1:9".into();
    input.repository = "tea-e2e/never-built".into();
    input.tag = "nope".into();
    let handle = fx.start_run(test, input).await;
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Failed(message) = &end else {
        panic!("expected a failure, the run ended {end}");
    };
    assert!(
        message.contains("127.0.0.1:9/tea-e2e/never-built:nope"),
        "the failure names the image: {message}"
    );
    // At once, not after retries: the run's only Create failed for good on its first attempt.
    let events = history::events(&handle).await;
    let creates: Vec<i64> = history::scheduled(&events, CREATE_ACTIVITY)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let [create] = creates.as_slice() else {
        panic!("one Create, not one per attempt: {creates:?}");
    };
    let failed = events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ActivityTaskFailedEventAttributes(a))
                if a.scheduled_event_id == *create =>
            {
                Some(a.clone())
            }
            _ => None,
        })
        .expect("the Create failed");
    assert_eq!(
        failed.retry_state(),
        RetryState::NonRetryableFailure,
        "{failed:?}"
    );
    fx.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cancel_mid_job_removes_the_container() {
    let test = "docker-cancel";
    let Some((docker, image)) = engine_and_image(test).await else {
        return;
    };
    let fx = Fixture::start(test, docker, image, None).await;
    let handle = fx.start_run(test, fx.input("10m")).await;
    let container = fx.job_container(&handle).await;
    let end = run::cancel_and_finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    assert!(
        fx.docker.inspect_container(&container, None).await.is_err(),
        "container {container} still exists"
    );
    fx.assert_nothing_left().await;
}

/// A run's resources are its container's limits, as the engine reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_run_s_resources_are_its_container_s_limits() {
    let test = "docker-resources";
    let Some((docker, image)) = engine_and_image(test).await else {
        return;
    };
    let fx = Fixture::start(test, docker, image, None).await;
    let input = WorkflowInput {
        resources: Some(tea_contract::Resources {
            cpu: Some(tea_contract::Cpus::from_millis(500)),
            memory: Some(256 << 20),
            ..Default::default()
        }),
        ..fx.input("10m")
    };
    let handle = fx.start_run(test, input).await;
    let container = fx.job_container(&handle).await;
    let host = fx
        .docker
        .inspect_container(&container, None)
        .await
        .expect("inspect")
        .host_config
        .expect("a host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(256 << 20));
    let end = run::cancel_and_finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    fx.assert_nothing_left().await;
}

/// The container's secrets (the Temporal API key, a job secret) are not in its configuration,
/// where `docker inspect` shows them: the worker took them from the file the provider put in
/// and deleted it before it polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_secrets_reach_the_worker_in_a_file_it_deletes_not_in_the_configuration() {
    const API_KEY: &str = "tea-e2e-docker-api-key";
    const SECRET: &str = "tea-e2e-docker-job-secret";
    let test = "docker-secrets";
    let Some((docker, image)) = engine_and_image(test).await else {
        return;
    };
    let env = [
        ("TEMPORAL_API_KEY", API_KEY),
        ("TEMPORAL_TLS", "false"),
        ("JOB_SECRET_ENV", "JOB_TEST_SECRET"),
        ("JOB_TEST_SECRET", SECRET),
    ];
    let fx = Fixture::start_with_env(test, docker, image, None, &env).await;
    let handle = fx.start_run(test, fx.input("10m")).await;
    let container = fx.job_container(&handle).await;

    let inspected = fx
        .docker
        .inspect_container(&container, None)
        .await
        .expect("inspect");
    let shown = format!("{inspected:?}");
    for secret in [API_KEY, SECRET] {
        assert!(
            !shown.contains(secret),
            "{secret} is in the container's configuration"
        );
    }
    let vars = inspected.config.and_then(|c| c.env).unwrap_or_default();
    assert!(
        vars.iter().any(|v| v.starts_with("TEA_SECRETS_FILE=")),
        "{vars:?}"
    );
    // The worker polled (the job runs), so it had started: the file is gone.
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new()
        .path("/.tea-secrets/env.json")
        .build();
    let download = fx
        .docker
        .download_from_container(&container, Some(options))
        .try_collect::<Vec<_>>()
        .await;
    assert!(
        download.is_err(),
        "the secrets file is still in the container"
    );

    let end = run::cancel_and_finish(&handle, &fx.worker).await;
    assert!(matches!(end, RunEnd::Cancelled), "run ended {end}");
    fx.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_mid_job_gives_fresh_compute_and_both_containers_go() {
    let test = "docker-kill";
    let Some((docker, image)) = engine_and_image(test).await else {
        return;
    };
    let fx = Fixture::start(test, docker, image, None).await;
    let handle = fx.start_run(test, fx.input(run::OBSERVABLE_JOB)).await;
    let first = fx.job_container(&handle).await;
    fx.docker
        .kill_container(&first, None)
        .await
        .expect("docker kill");
    let outcome = run::completed(&handle, &fx.worker).await;
    assert_eq!(outcome.attempts, 2, "one replacement container");
    assert_ne!(outcome.compute_name, first);
    assert_eq!(
        fx.kept_logs().len(),
        2,
        "both containers deleted, logs kept"
    );
    fx.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_container_cut_off_the_network_is_replaced_and_removed() {
    let test = "docker-disconnect";
    let Some((docker, image)) = engine_and_image(test).await else {
        return;
    };
    let network = TestNetwork::create();
    let fx = Fixture::start(test, docker, image, Some(network.0.clone())).await;
    let handle = fx.start_run(test, fx.input(run::OBSERVABLE_JOB)).await;
    let first = fx.job_container(&handle).await;
    docker_cli(&["network", "disconnect", &network.0, &first]);
    let end = run::finish(&handle, &fx.worker).await;
    let first_gone = fx.docker.inspect_container(&first, None).await.is_err();
    let left = remove_owned(&fx.docker, &fx.owner).await;
    let network_removed = fx.docker.remove_network(&network.0).await;
    let RunEnd::Completed(outcome) = &end else {
        panic!("run ended {end}; worker: {}", fx.worker.output());
    };
    assert_eq!(outcome.attempts, 2, "re-provisioned once");
    assert!(first_gone, "the disconnected container {first} was removed");
    assert!(left.is_empty(), "containers left behind: {left:?}");
    network_removed.expect("remove the test network");
}

/// `base` (an external-worker image, which has no shell) with this machine's `/bin/sh`,
/// `sleep` and `mv` and the libraries they load added: what the counting job of the resume
/// tests runs. Made once per base image (tagged after its ID) by committing a container of
/// `base` with the files copied in; no builder, no registry.
fn with_a_shell(base: &str) -> String {
    let id = docker_output(&["image", "inspect", "--format", "{{.Id}}", base]);
    let short = id
        .trim()
        .trim_start_matches("sha256:")
        .get(..12)
        .unwrap_or("unknown");
    let image = format!("tea-test/external-worker-sh:{short}");
    if Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .is_ok_and(|out| out.status.success())
    {
        return image;
    }
    let files = tea_compute::docker::testing::rootfs_of(&["/bin/sh", "/bin/sleep", "/bin/mv"])
        .unwrap_or_else(|e| panic!("the shell's files: {e}"));
    let label = format!("{}=shell-image", tea_compute::docker::testing::TEST_LABEL);
    let container = docker_output(&["create", "--label", &label, base]);
    let container = container.trim();
    let mut copy = Command::new("docker")
        .args(["cp", "-", &format!("{container}:/")])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run docker cp");
    std::io::Write::write_all(&mut copy.stdin.take().expect("docker cp's stdin"), &files)
        .expect("copy the shell's files");
    let copied = copy.wait().expect("docker cp");
    let committed = copied
        .success()
        .then(|| docker_output(&["commit", container, &image]));
    docker_cli(&["rm", "-f", container]);
    committed.unwrap_or_else(|| panic!("docker cp into {container} failed"));
    image
}

/// Runs the docker CLI (tests only: the provider never does) and returns its output; fails on
/// an error.
fn docker_output(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_killed_with_its_container_resumes_in_a_fresh_one_from_its_last_checkpoint() {
    let test = "docker-resumed-command";
    let Some((docker, image)) = engine_and_image(test).await else {
        return;
    };
    let fx = Fixture::start(test, docker, with_a_shell(&image), None).await;
    let input = resume::counting_input(fx.input("1s"), true);
    let handle = fx.start_run(test, input.clone()).await;
    let first = fx.job_container(&handle).await;
    // About two thirds in.
    resume::wait_for_checkpoint(&handle, resume::STEPS * 4 / 7).await;
    fx.docker
        .kill_container(&first, None)
        .await
        .expect("docker kill");

    let outcome = run::completed(&handle, &fx.worker).await;
    let logs = resume::read_all(fx.kept_logs());
    let from = resume::assert_resumed(
        &outcome,
        resume::first_unit_log(&logs),
        resume::steps_per_heartbeat(&input),
    );
    resume::assert_status_says_resumed(&handle, from).await;
    fx.assert_nothing_left().await;
}
