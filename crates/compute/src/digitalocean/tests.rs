//! Tests of the provider against the fake App Platform API (`tea-fake-do`) in process: the
//! requests it sends, retries, adoption after failed creates, ownership, deletion, pagination
//! and the mapping of deployment phases; then the provider contract (`conformance`). The fake
//! counts and logs every request, so each test checks what reached the API, not only what the
//! provider says. Connection errors need no server.

use std::time::{Duration, Instant};

use serde_json::json;
use tea_fake_do::{FakeDo, FakeDoConfig, Fault, Op, Phase, SeedApps};

use super::*;
use crate::naming::compute_name;
use crate::{EnvVar, ImageRef};

const TOKEN: &str = "dop_v1_test_token";
const OWNER: &str = "test-ns/test-queue";

fn owner() -> ComputeOwner {
    ComputeOwner::new(OWNER).unwrap()
}

/// The fake for these tests: no worker processes, and deployments that take a step only once
/// an hour, so that an app stays in the phase a test finds it in.
fn fake_config() -> FakeDoConfig {
    FakeDoConfig::new(TOKEN).with_step_delay(Duration::from_secs(3600))
}

async fn start() -> (FakeDo, DigitalOceanProvider) {
    start_with(fake_config()).await
}

async fn start_with(cfg: FakeDoConfig) -> (FakeDo, DigitalOceanProvider) {
    let fake = FakeDo::start(cfg).await.expect("fake App Platform API");
    let p = provider(&fake, |_| {});
    (fake, p)
}

/// A provider of the fake's API with quick retries and delete polls, changed by `adjust`.
fn provider(fake: &FakeDo, adjust: impl FnOnce(&mut DigitalOceanConfig)) -> DigitalOceanProvider {
    let mut cfg = DigitalOceanConfig::new(AccessToken::new(TOKEN));
    cfg.api_url = fake.base_url();
    cfg.region = Some("ams".into());
    cfg.request_timeout = Duration::from_secs(5);
    cfg.base_backoff = Duration::from_millis(1);
    cfg.max_backoff = Duration::from_millis(5);
    cfg.delete_confirm_timeout = Duration::from_secs(5);
    cfg.delete_poll_max_interval = Duration::from_millis(10);
    adjust(&mut cfg);
    DigitalOceanProvider::new(cfg, owner()).unwrap()
}

/// The request id the fake answered the last request for `op` with.
fn last_request_id(fake: &FakeDo, op: Op) -> String {
    fake.request_log()
        .iter()
        .rev()
        .find(|r| r.op == op)
        .map(|r| r.request_id.clone())
        .unwrap_or_else(|| panic!("no {op:?} request reached the fake"))
}

/// The id of the only deployment of app `id`.
fn deployment_of(fake: &FakeDo, id: &str) -> String {
    fake.snapshot()
        .app(id)
        .unwrap_or_else(|| panic!("app {id} is not there"))
        .deployment_id
        .clone()
}

fn spec(name: &str) -> ComputeSpec {
    ComputeSpec {
        name: name.into(),
        image: ImageRef {
            registry: "reg".into(),
            repository: "external".into(),
            tag: "v1".into(),
        },
        env: vec![
            EnvVar {
                key: "EXTERNAL_TASK_QUEUE".into(),
                value: name.into(),
                secret: false,
            },
            EnvVar {
                key: "TEMPORAL_API_KEY".into(),
                value: "s3cret".into(),
                secret: true,
            },
        ],
        resources: Default::default(),
    }
}

#[tokio::test]
async fn create_sends_headers_and_body_then_second_call_adopts() {
    let (fake, p) = start().await;
    let h = p.create_or_adopt(&spec("ext-one-1")).await.unwrap();
    assert!(!h.adopted);
    let snap = fake.snapshot();
    let app = snap.app_by_name("ext-one-1").expect("the app was created");
    assert_eq!(h.id, app.id);
    assert_eq!(h.revision.as_deref(), Some(app.deployment_id.as_str()));

    let log = fake.request_log();
    let create = log
        .iter()
        .find(|r| r.op == Op::Create)
        .expect("a create request");
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(create.header("authorization"), Some(bearer.as_str()));
    assert_eq!(create.header("content-type"), Some("application/json"));
    assert_eq!(create.header("accept"), Some("application/json"));
    assert!(
        create
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("tea-compute/")),
        "{create:?}"
    );

    // The first create listed nothing; the mark is an app-level GENERAL variable.
    assert_eq!(p.request_stats().total_requests(), 1);
    assert_eq!(
        snap.create_bodies[0]["spec"]["envs"],
        json!([{"key": "TEA_COMPUTE_OWNER", "value": OWNER, "scope": "RUN_TIME", "type": "GENERAL"}])
    );

    // The second create is refused (409) and only then is the name looked up, and adopted.
    let again = p.create_or_adopt(&spec("ext-one-1")).await.unwrap();
    assert!(again.adopted);
    assert_eq!(again.id, h.id);
    assert_eq!(again.revision, h.revision);
    let snap = fake.snapshot();
    assert_eq!(snap.apps.len(), 1);
    assert_eq!(snap.requests_for("create"), 2);
    assert_eq!(snap.request_count("create", 409), 1);
    let stats = p.request_stats();
    assert_eq!(stats.requests(Operation::Create), 2);
    assert_eq!(stats.requests(Operation::List), 1);
}

#[tokio::test]
async fn a_run_s_resources_pick_the_size_its_app_gets_and_its_price() {
    let (fake, p) = start_with(fake_config()).await;
    let mut asked = spec("ext-sized-1");
    asked.resources.cpu = Some(tea_contract::Cpus::from_millis(1000));
    asked.resources.memory = Some(1536 << 20);
    let fitted = p.fit(&asked.resources).await.unwrap();
    assert_eq!(fitted.size.as_deref(), Some("apps-s-1vcpu-2gb"));
    assert_eq!(fitted.usd_per_second, Some(pricing::usd_per_second(25.0)));
    p.create_or_adopt(&asked).await.unwrap();
    let snap = fake.snapshot();
    let slug = &snap.create_bodies[0]["spec"]["workers"][0]["instance_size_slug"];
    assert_eq!(slug, "apps-s-1vcpu-2gb");

    // Nothing asked: the configured size at its configured price.
    let p = provider(&fake, |cfg| cfg.usd_per_month = Some(7.5));
    let fitted = p.fit(&Default::default()).await.unwrap();
    assert_eq!(fitted.size.as_deref(), Some(DEFAULT_INSTANCE_SIZE_SLUG));
    assert_eq!(fitted.usd_per_second, Some(pricing::usd_per_second(7.5)));

    // A GPU: refused before any request.
    let mut gpu = spec("ext-gpu-1");
    gpu.resources.gpu = Some(1);
    let err = p.create_or_adopt(&gpu).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("`resources.gpu`"), "{err}");
    assert_eq!(fake.snapshot().requests_for("create"), 1);
}

#[tokio::test]
async fn create_costs_one_request_however_many_apps_the_account_holds() {
    let (fake, p) = start().await;
    fake.seed(&SeedApps::many(1000, "foreign").with_envs(&[(OWNER_ENV, "someone-else")]))
        .unwrap();
    let name = compute_name("run-o1", 1);
    let h = p.create_or_adopt(&spec(&name)).await.unwrap();
    assert!(!h.adopted);
    let stats = p.request_stats();
    assert_eq!(stats.total_requests(), 1, "{stats:?}");
    assert_eq!(fake.snapshot().requests_for("list"), 0);
}

#[tokio::test]
async fn an_app_with_our_name_but_not_our_mark_is_never_adopted() {
    let (fake, p) = start().await;
    let other = compute_name("run-other", 1);
    let unmarked = compute_name("run-unmarked", 1);
    fake.seed(&SeedApps::one(&other, &[(OWNER_ENV, "another/deployment")]))
        .unwrap();
    fake.seed(&SeedApps::one(&unmarked, &[])).unwrap();
    for (name, says) in [(&other, "\"another/deployment\""), (&unmarked, "absent")] {
        let err = p.create_or_adopt(&spec(name)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent, "{}", err.message);
        assert!(err.message.contains("not ours"), "{}", err.message);
        assert!(err.message.contains(says), "{}", err.message);
    }
    let snap = fake.snapshot();
    assert_eq!(snap.apps.len(), 2);
    assert_eq!(snap.requests_for("delete"), 0);
}

#[tokio::test]
async fn the_owner_mark_variable_is_reserved() {
    let (fake, p) = start().await;
    let mut bad = spec("ext-ok-1");
    bad.env.push(EnvVar {
        key: OWNER_ENV.into(),
        value: "forged".into(),
        secret: false,
    });
    let err = p.create_or_adopt(&bad).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("reserved"), "{}", err.message);
    assert!(fake.snapshot().requests.is_empty());
}

#[tokio::test]
async fn retry_on_429_honours_retry_after() {
    let (fake, p) = start().await;
    fake.inject(Fault::RateLimit {
        count: 1,
        retry_after_secs: 1,
        op: Op::List,
    });
    let started = Instant::now();
    let found = p.list_ours("ext-").await.unwrap();
    assert!(found.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited only {:?}",
        started.elapsed()
    );
    let snap = fake.snapshot();
    assert_eq!(snap.requests_for("list"), 2);
    assert_eq!(snap.request_count("list", 429), 1);
    let stats = p.request_stats();
    assert_eq!(stats.status_count(429), 1);
    assert_eq!(stats.status_count(200), 1);
    assert_eq!(stats.total_retries(), 1);
}

#[tokio::test]
async fn too_long_retry_after_gives_up_at_once() {
    let (fake, p) = start().await;
    fake.inject(Fault::RateLimit {
        count: 1,
        retry_after_secs: 3600,
        op: Op::List,
    });
    let err = p.list_ours("ext-").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("3600"), "{}", err.message);
    assert_eq!(fake.snapshot().requests_for("list"), 1);
}

#[tokio::test]
async fn retry_on_500_then_success() {
    let (fake, p) = start().await;
    let ids = fake
        .seed(&SeedApps::one("ext-two-1", &[]).with_phase(Phase::Deploying))
        .unwrap();
    for status in [500, 502] {
        fake.inject(Fault::ServerError {
            count: 1,
            status,
            op: Op::GetDeployment,
        });
    }
    let handle = ComputeHandle {
        id: ids[0].clone(),
        name: "ext-two-1".into(),
        revision: Some(deployment_of(&fake, &ids[0])),
        adopted: false,
    };
    let r = p.readiness(&handle).await.unwrap();
    // The fake's DEPLOYING progress of an app without a worker process: initialize done,
    // finalize pending.
    assert_eq!(
        r,
        Readiness::Pending {
            phase: "DEPLOYING".into(),
            detail: Some("1/2 steps".into())
        }
    );
    let snap = fake.snapshot();
    assert_eq!(snap.requests_for("get_deployment"), 3);
    assert_eq!(snap.request_count("get_deployment", 200), 1);
    assert_eq!(p.request_stats().requests(Operation::GetDeployment), 3);
}

#[tokio::test]
async fn exhausted_retries_are_transient_and_say_so() {
    let (fake, p) = start().await;
    fake.inject(Fault::ServerError {
        count: 5,
        status: 503,
        op: Op::List,
    });
    let err = p.list_ours("ext-").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("after 5 attempts"), "{}", err.message);
    let request_id = last_request_id(&fake, Op::List);
    assert!(err.message.contains(&request_id), "{}", err.message);
    let snap = fake.snapshot();
    assert_eq!(snap.requests_for("list"), 5);
    assert_eq!(snap.request_count("list", 503), 5);
}

#[tokio::test]
async fn unauthorized_is_permanent_without_retry() {
    const WRONG: &str = "dop_v1_revoked_token";
    let (fake, _) = start().await;
    let p = provider(&fake, |cfg| cfg.token = AccessToken::new(WRONG));
    let err = p.create_or_adopt(&spec("ext-three-1")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("DIGITALOCEAN_ACCESS_TOKEN"),
        "{}",
        err.message
    );
    assert!(err.message.contains("401"), "{}", err.message);
    let request_id = last_request_id(&fake, Op::Create);
    assert!(err.message.contains(&request_id), "{}", err.message);
    assert!(!err.message.contains(WRONG));
    let snap = fake.snapshot();
    assert_eq!(snap.requests_for("create"), 1);
    assert_eq!(snap.request_count("create", 401), 1);
    assert_eq!(snap.requests_for("list"), 0);
}

#[tokio::test]
async fn create_answered_500_after_storing_is_adopted() {
    let (fake, p) = start().await;
    fake.inject(Fault::CreateStoresThen500 { count: 1 });
    let h = p.create_or_adopt(&spec("ext-four-1")).await.unwrap();
    assert!(h.adopted);
    let snap = fake.snapshot();
    assert_eq!(snap.apps.len(), 1);
    assert_eq!(snap.apps[0].id, h.id);
    assert_eq!(
        h.revision.as_deref(),
        Some(snap.apps[0].deployment_id.as_str())
    );
}

#[tokio::test]
async fn create_failing_once_without_retries_is_adopted_by_lookup() {
    let (fake, _) = start().await;
    let p = provider(&fake, |cfg| cfg.max_attempts = 1);
    fake.inject(Fault::CreateStoresThen500 { count: 1 });
    let h = p.create_or_adopt(&spec("ext-five-1")).await.unwrap();
    assert!(h.adopted);
    let snap = fake.snapshot();
    assert_eq!(snap.apps.len(), 1);
    assert_eq!(snap.apps[0].id, h.id);
    assert_eq!(snap.requests_for("create"), 1);
}

#[tokio::test]
async fn validation_error_is_permanent_with_the_api_message() {
    // A region the provider lets through (with a warning) but the API refuses.
    let (fake, _) = start().await;
    let p = provider(&fake, |cfg| cfg.region = Some("mars".into()));
    let err = p.create_or_adopt(&spec("ext-six-1")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message
            .contains(r#"error validating app spec field "region": unknown region "mars""#),
        "{}",
        err.message
    );
    let snap = fake.snapshot();
    assert_eq!(snap.requests_for("create"), 1);
    assert_eq!(snap.request_count("create", 400), 1);
}

#[tokio::test]
async fn invalid_spec_is_rejected_before_any_request() {
    let (fake, p) = start().await;
    let mut bad = spec("Not_Valid");
    assert_eq!(
        p.create_or_adopt(&bad).await.unwrap_err().kind,
        ErrorKind::Permanent
    );
    bad.name = "ext-ok-1".into();
    bad.env[0].key = "BAD-KEY".into();
    assert_eq!(
        p.create_or_adopt(&bad).await.unwrap_err().kind,
        ErrorKind::Permanent
    );
    assert!(fake.snapshot().requests.is_empty());
}

#[tokio::test]
async fn delete_missing_app_is_already_gone() {
    let (fake, p) = start().await;
    assert_eq!(p.delete("nope").await.unwrap(), Deleted::AlreadyGone);
    let snap = fake.snapshot();
    assert_eq!(snap.requests_for("delete"), 1);
    assert_eq!(snap.request_count("delete", 404), 1);
}

#[tokio::test]
async fn delete_polls_until_the_app_is_gone() {
    let (fake, p) = start().await;
    let ids = fake.seed(&SeedApps::one("ext-seven-1", &[])).unwrap();
    // The deleted app is still shown by the next two reads of it.
    fake.inject(Fault::DeleteLinger { reads: 2 });
    assert_eq!(p.delete(&ids[0]).await.unwrap(), Deleted::Removed);
    let snap = fake.snapshot();
    assert_eq!(snap.requests_for("delete"), 1);
    assert_eq!(snap.requests_for("get"), 3);
    assert_eq!(snap.request_count("get", 200), 2);
    assert_eq!(snap.request_count("get", 404), 1);
    assert!(snap.apps.is_empty());
    assert_eq!(snap.deleted_app_ids, ids);
}

#[tokio::test]
async fn delete_not_confirmed_by_the_deadline_is_transient() {
    let (fake, _) = start().await;
    let p = provider(&fake, |cfg| {
        cfg.delete_confirm_timeout = Duration::from_millis(50);
    });
    let ids = fake.seed(&SeedApps::one("ext-eight-1", &[])).unwrap();
    // The teardown outlasts the test.
    fake.inject(Fault::DeleteDelay {
        delay_ms: 3_600_000,
    });
    let err = p.delete(&ids[0]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("not confirmed"), "{}", err.message);
}

#[tokio::test]
async fn list_ours_follows_pages_and_keeps_only_generated_names_with_our_mark() {
    // Pages of two apps, whatever the provider asks for.
    let mut cfg = fake_config();
    cfg.max_per_page = 2;
    let (fake, p) = start_with(cfg).await;
    let ours: Vec<String> = (1..=3)
        .map(|i| compute_name(&format!("run-{i}"), 1))
        .collect();
    let foreign = compute_name("run-foreign", 1);
    let unmarked = compute_name("run-unmarked", 2);
    let seed = |name: &str, mark: Option<&str>| {
        let envs: Vec<(&str, &str)> = mark.map(|m| (OWNER_ENV, m)).into_iter().collect();
        fake.seed(&SeedApps::one(name, &envs)).unwrap();
    };
    seed("ext-api", Some(OWNER));
    seed("other-app", Some(OWNER));
    seed("ext-a-1", Some(OWNER));
    for name in &ours {
        seed(name, Some(OWNER));
    }
    seed(&foreign, Some("another/deployment"));
    seed(&unmarked, None);
    let mut names: Vec<String> = p
        .list_ours("ext-")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();
    let mut expected = ours.clone();
    expected.sort();
    assert_eq!(names, expected);
    // Delete-by-name looks a single name up through the same filter.
    assert_eq!(p.list_ours(&ours[0]).await.unwrap().len(), 1);
    assert!(p.list_ours(&foreign).await.unwrap().is_empty());
    // Eight apps, four pages, three listings; every page asked for the API's largest page.
    let snap = fake.snapshot();
    assert_eq!(snap.requests_for("list"), 4 * 3);
    assert_eq!(snap.requests.len(), 1, "{:?}", snap.requests);
    let log = fake.request_log();
    assert_eq!(log.len(), 4 * 3);
    for r in &log {
        assert_eq!(r.op, Op::List);
        assert_eq!(r.query_param("per_page"), Some("200"), "{r:?}");
    }
}

#[tokio::test]
async fn readiness_maps_phases_and_missing_apps() {
    // Apps created here fail their deployment within a few 20 ms steps; seeded apps stay put.
    let (fake, p) = start_with(fake_config().with_step_delay(Duration::from_millis(20))).await;

    // Without a deployment id the app's pending deployment is used.
    let pending = fake
        .seed(&SeedApps::one("ext-nine-1", &[]).with_phase(Phase::PendingDeploy))
        .unwrap();
    let handle = ComputeHandle {
        id: pending[0].clone(),
        name: "ext-nine-1".into(),
        revision: None,
        adopted: true,
    };
    assert_eq!(
        p.readiness(&handle).await.unwrap(),
        Readiness::Pending {
            phase: "PENDING_DEPLOY".into(),
            detail: Some("0/2 steps".into())
        }
    );
    assert_eq!(p.request_stats().requests(Operation::GetDeployment), 0);

    // A failed deployment, with the reasons of its failed steps.
    fake.inject(Fault::DeploymentError { count: 1 });
    let failed = p.create_or_adopt(&spec("ext-nine-2")).await.unwrap();
    fake.wait_until(Duration::from_secs(10), |s| {
        s.app(&failed.id).is_some_and(|a| a.phase == Phase::Error)
    })
    .await
    .expect("the deployment fails");
    let m = tea_fake_do::DEPLOYMENT_FAILURE_MESSAGE;
    assert_eq!(
        p.readiness(&failed).await.unwrap(),
        Readiness::Failed {
            phase: "ERROR".into(),
            reason: format!("deploy: {m}; {DEFAULT_COMPONENT_NAME}: {m}")
        }
    );

    let active = fake.seed(&SeedApps::one("ext-nine-3", &[])).unwrap();
    let handle = ComputeHandle {
        id: active[0].clone(),
        name: "ext-nine-3".into(),
        revision: Some(deployment_of(&fake, &active[0])),
        adopted: true,
    };
    assert_eq!(
        p.readiness(&handle).await.unwrap(),
        Readiness::Ready {
            phase: "ACTIVE".into()
        }
    );

    let gone = ComputeHandle {
        id: "missing".into(),
        name: "ext-x-1".into(),
        revision: None,
        adopted: false,
    };
    assert_eq!(
        p.readiness(&gone).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn connection_errors_are_retried_then_transient() {
    // A port bound but not listening: connections to it are refused, and no other process
    // can take it while the test runs (a port merely found free could be).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let mut cfg = DigitalOceanConfig::new(AccessToken::new(TOKEN));
    cfg.api_url = format!("http://{addr}");
    cfg.base_backoff = Duration::from_millis(1);
    cfg.max_backoff = Duration::from_millis(2);
    cfg.max_attempts = 3;
    let p = DigitalOceanProvider::new(cfg, owner()).unwrap();
    let err = p.delete("app-1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    let stats = p.request_stats();
    assert_eq!(stats.requests(Operation::Delete), 3);
    assert_eq!(stats.operations[&Operation::Delete].transport_errors, 3);
    drop(socket);
}

/// The provider contract (`crate::conformance`) against the fake App Platform API
/// (`tea-fake-do`), whose apps run a real process.
mod conformance {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::{ComputeHandle, conformance::Subject};

    struct AppPlatform {
        fake: FakeDo,
        provider: Arc<DigitalOceanProvider>,
    }

    #[async_trait]
    impl Subject for AppPlatform {
        fn provider(&self) -> Arc<dyn ComputeProvider> {
            self.provider.clone()
        }
        fn spec(&self, name: &str) -> ComputeSpec {
            spec(name)
        }
        async fn failing_spec(&self, name: &str) -> ComputeSpec {
            self.fake.inject(Fault::DeploymentError { count: 1 });
            spec(name)
        }
        async fn kill(&self, handle: &ComputeHandle) {
            // The app deleted behind our back (another client, the console).
            let response = reqwest::Client::new()
                .delete(format!("{}/v2/apps/{}", self.fake.base_url(), handle.id))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("delete the app out of band");
            assert!(response.status().is_success(), "{response:?}");
        }
        async fn add_foreign(&self, name: &str) {
            self.fake
                .seed(&SeedApps::one(
                    name,
                    &[("TEA_COMPUTE_OWNER", "someone/else")],
                ))
                .expect("another owner's app");
        }
    }

    #[tokio::test]
    async fn the_digitalocean_provider_keeps_the_provider_contract() {
        let config = FakeDoConfig::new(TOKEN)
            .with_worker_command("/bin/sh", ["-c", "exec sleep 1000"])
            .with_step_delay(Duration::from_millis(20));
        let fake = FakeDo::start(config).await.expect("fake App Platform API");
        let mut cfg = DigitalOceanConfig::new(AccessToken::new(TOKEN));
        cfg.api_url = fake.base_url();
        cfg.base_backoff = Duration::from_millis(1);
        cfg.max_backoff = Duration::from_millis(5);
        cfg.delete_poll_max_interval = Duration::from_millis(10);
        let provider = Arc::new(DigitalOceanProvider::new(cfg, owner()).expect("provider"));
        let subject = AppPlatform { fake, provider };
        crate::conformance::run(&subject)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
