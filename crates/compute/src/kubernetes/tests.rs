//! Tests of the Kubernetes provider against the fake cluster of `tools/fake-k8s`, over HTTP,
//! with a kubeconfig pointing at it (the fake checks every create body against the official
//! schemas, and fails to start without them).

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::time::Instant;

use async_trait::async_trait;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tea_fake_k8s::{FakeK8s, FakeK8sConfig, Fault, Kind, Op, UNSCHEDULABLE_MESSAGE};

use super::*;
use crate::{EnvVar, ErrorKind, ImageRef, conformance::Subject, naming::compute_name};

const NS: &str = "tea-test";
const SLEEPER: &str = "tea-test/sleeper:stay";
const EXITING: &str = "tea-test/sleeper:exit";
/// Prints its secret and stays up.
const TELLER: &str = "tea-test/teller:v1";

struct Fixture {
    fake: FakeK8s,
    provider: Arc<KubernetesProvider>,
    dir: PathBuf,
}

impl Fixture {
    async fn start(label: &str, cfg: impl FnOnce(&mut KubernetesConfig)) -> Fixture {
        let dir = std::env::temp_dir().join(format!("tea-k8s-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let fake_cfg = FakeK8sConfig::new(dir.join("pods"))
            .with_image(SLEEPER, "/bin/sleep", ["infinity"])
            .with_image(
                EXITING,
                "/bin/sh",
                ["-c", "echo the worker gives up; exit 3"],
            )
            .with_image(
                TELLER,
                "/bin/sh",
                [
                    "-c",
                    "echo \"password is $DB_PASSWORD\"; exec sleep infinity",
                ],
            );
        let fake = FakeK8s::start(fake_cfg)
            .await
            .expect("the fake cluster (with the kubernetes-validate schemas)");
        let kubeconfig = dir.join("kubeconfig");
        fake.write_kubeconfig(&kubeconfig, NS).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig).expect("read kubeconfig"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("kube config");
        let owner =
            ComputeOwner::new(format!("tea-test/{label}-{}", std::process::id())).expect("owner");
        let mut provider_cfg = KubernetesConfig::new(dir.join("kept"));
        provider_cfg.stop_grace = Duration::from_secs(1);
        provider_cfg.image_pull_grace = Duration::from_secs(1);
        cfg(&mut provider_cfg);
        // The client the provider makes for itself, bounded the same way.
        let client = bounded_client(config, provider_cfg.request_timeout).expect("client");
        let provider =
            KubernetesProvider::with_client(provider_cfg, owner, client).expect("provider");
        Fixture {
            fake,
            provider: Arc::new(provider),
            dir,
        }
    }

    fn pods_of(&self, name: &str) -> Vec<Value> {
        self.fake
            .objects(Kind::Pod, NS)
            .into_iter()
            .filter(|p| p["metadata"]["labels"][COMPUTE_LABEL] == name)
            .collect()
    }

    /// Waits until the unit's pod is there and `pred` holds for it; returns it.
    async fn pod_when(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pod) = self.pods_of(name).into_iter().find(|p| pred(p)) {
                return pod;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen; pods {:?}",
                self.pods_of(name)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn readiness_until(
        &self,
        handle: &ComputeHandle,
        what: &str,
        done: impl Fn(&Readiness) -> bool,
    ) -> Readiness {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.provider.readiness(handle).await.expect("readiness");
            if done(&seen) {
                return seen;
            }
            assert!(Instant::now() < deadline, "{what}: not seen; last {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Nothing of the unit is left: no Job, pod or Secret.
    fn assert_gone(&self, name: &str) {
        for kind in [Kind::Job, Kind::Pod, Kind::Secret] {
            let left: Vec<String> = self
                .fake
                .names(kind, NS)
                .into_iter()
                .filter(|n| n.starts_with(name))
                .collect();
            assert!(left.is_empty(), "{kind:?} left of {name}: {left:?}");
        }
    }

    async fn finish(self) {
        self.fake.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spec(name: &str, image: &str) -> ComputeSpec {
    let (repository, tag) = image.rsplit_once(':').expect("tag");
    ComputeSpec {
        name: name.to_owned(),
        resources: Default::default(),
        image: ImageRef {
            registry: String::new(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        },
        env: vec![
            EnvVar {
                key: "EXTERNAL_TASK_QUEUE".into(),
                value: name.to_owned(),
                secret: false,
            },
            EnvVar {
                key: tea_contract::OWNER_RUN_ID_ENV.into(),
                value: "0196f3a2-7c1e-7d3a-9b1f-2a3b4c5d6e7f".into(),
                secret: false,
            },
        ],
    }
}

fn with_secret(mut spec: ComputeSpec, value: &str) -> ComputeSpec {
    spec.env.push(EnvVar {
        key: "DB_PASSWORD".into(),
        value: value.into(),
        secret: true,
    });
    spec
}

fn fresh_name(label: &str) -> String {
    compute_name(&format!("{label}-{:?}", std::time::SystemTime::now()), 1)
}

/// A Job that the provider did not create, marked by `owner` (`None`: no mark at all).
fn foreign_job(name: &str, owner: Option<&str>) -> Value {
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"team": "someone-else"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": SLEEPER}]
        }}}
    });
    if let Some(owner) = owner {
        job["metadata"]["annotations"] = json!({OWNER_ANNOTATION: owner});
    }
    job
}

/// What a client could change of `jobs` (not their status, which the Job controller keeps).
fn what_we_could_change(jobs: &[Value]) -> Vec<Value> {
    jobs.iter()
        .map(|j| {
            let m = &j["metadata"];
            json!([
                m["uid"],
                m["labels"],
                m["annotations"],
                m["deletionTimestamp"],
                j["spec"]
            ])
        })
        .collect()
}

struct KubernetesSubject<'a>(&'a Fixture);

#[async_trait]
impl Subject for KubernetesSubject<'_> {
    fn provider(&self) -> Arc<dyn ComputeProvider> {
        self.0.provider.clone()
    }
    fn spec(&self, name: &str) -> ComputeSpec {
        with_secret(spec(name, SLEEPER), "conformance-secret")
    }
    async fn failing_spec(&self, name: &str) -> ComputeSpec {
        spec(name, EXITING)
    }
    async fn kill(&self, handle: &ComputeHandle) {
        let pod = self
            .0
            .pod_when(&handle.name, "a pod to kill", |_| true)
            .await;
        let pod = pod["metadata"]["name"].as_str().expect("pod name");
        assert!(self.0.fake.delete(Kind::Pod, NS, pod, None), "delete {pod}");
    }
    async fn add_foreign(&self, name: &str) {
        let owner = (name != "ext-api").then_some("someone-else/their-queue");
        self.0
            .fake
            .seed(Kind::Job, NS, foreign_job(name, owner))
            .expect("a foreign Job");
    }
}

#[tokio::test]
async fn conformance() {
    let fx = Fixture::start("conformance", |_| {}).await;
    let result = crate::conformance::run(&KubernetesSubject(&fx)).await;
    let ours = fx.provider.list_ours("").await.expect("list");
    result.expect("the kubernetes provider honours the provider contract");
    assert!(ours.is_empty(), "the suite left units: {ours:?}");
    fx.finish().await;
}

#[tokio::test]
async fn a_job_of_our_name_is_adopted_only_with_our_mark_and_a_foreign_one_is_untouched() {
    let fx = Fixture::start("marks", |_| {}).await;
    for mark in [Some("someone-else/q"), None] {
        let name = fresh_name("foreign");
        fx.fake
            .seed(Kind::Job, NS, foreign_job(&name, mark))
            .expect("seed");
        let before = what_we_could_change(&fx.fake.objects(Kind::Job, NS));
        let err = fx
            .provider
            .create_or_adopt(&spec(&name, SLEEPER))
            .await
            .expect_err("a foreign Job is not adopted");
        assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
        assert!(err.message.contains("not ours"), "{err}");
        let err = fx.provider.delete(&name).await.expect_err("nor deleted");
        assert!(err.message.contains("not ours"), "{err}");
        let after = what_we_could_change(&fx.fake.objects(Kind::Job, NS));
        assert_eq!(after, before, "the foreign Job was changed");
        assert!(
            fx.fake.names(Kind::Secret, NS).is_empty(),
            "a Secret was made for it"
        );
    }
    // Ours is adopted: the same Job, its UID as the revision.
    let name = fresh_name("ours");
    let first = fx
        .provider
        .create_or_adopt(&spec(&name, SLEEPER))
        .await
        .expect("create");
    let again = fx
        .provider
        .create_or_adopt(&spec(&name, SLEEPER))
        .await
        .expect("adopt");
    assert!(again.adopted && !first.adopted);
    assert_eq!(first.revision, again.revision);
    fx.provider.delete(&name).await.expect("delete");
    fx.finish().await;
}

#[tokio::test]
async fn secrets_are_in_a_secret_owned_by_the_job_never_in_the_job() {
    let fx = Fixture::start("secrets", |_| {}).await;
    let name = fresh_name("secrets");
    let handle = fx
        .provider
        .create_or_adopt(&with_secret(spec(&name, TELLER), "hunter22-in-a-secret"))
        .await
        .expect("create");
    let bodies = fx.fake.create_bodies(Kind::Job);
    let job = bodies.last().expect("a Job create body").to_string();
    assert!(!job.contains("hunter22"), "the secret is in the Job: {job}");
    let env = &bodies.last().unwrap()["spec"]["template"]["spec"]["containers"][0]["env"];
    let password = env
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "DB_PASSWORD")
        .expect("DB_PASSWORD in the env");
    assert_eq!(
        password["valueFrom"]["secretKeyRef"],
        json!({"name": name, "key": "DB_PASSWORD", "optional": false})
    );
    let secrets = fx.fake.objects(Kind::Secret, NS);
    let [secret] = secrets.as_slice() else {
        panic!("one Secret: {secrets:?}")
    };
    let refs = &secret["metadata"]["ownerReferences"];
    assert_eq!(refs[0]["kind"], "Job");
    assert_eq!(refs[0]["uid"].as_str(), handle.revision.as_deref());
    // The pod reads it through the reference.
    fx.readiness_until(&handle, "Ready", |r| matches!(r, Readiness::Ready { .. }))
        .await;
    let pod = fx.pods_of(&name).remove(0);
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_dir(fx.dir.join("pods"))
        .unwrap()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains("password is hunter22")
        })
    {
        assert!(
            Instant::now() < deadline,
            "the pod {pod_name} never saw its secret"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        fx.provider.delete(&name).await.expect("delete"),
        Deleted::Removed
    );
    fx.assert_gone(&name);
    fx.finish().await;
}

#[tokio::test]
async fn a_pod_that_started_before_its_secret_existed_waits_for_it() {
    let fx = Fixture::start("secret-later", |_| {}).await;
    let name = fresh_name("later");
    fx.fake.inject(Fault::Slow {
        count: 1,
        delay_ms: 1500,
        op: Op::Create,
        resource: Some("secrets".into()),
    });
    let provider = fx.provider.clone();
    let spec = with_secret(spec(&name, SLEEPER), "late");
    let create = tokio::spawn(async move { provider.create_or_adopt(&spec).await });
    let pod = fx
        .pod_when(&name, "the pod waiting for its Secret", |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                == "CreateContainerConfigError"
        })
        .await;
    let said = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"].to_string();
    assert!(said.contains("not found"), "{said}");
    let handle = create.await.expect("join").expect("create");
    let ready = fx
        .readiness_until(&handle, "Ready", |r| {
            !matches!(r, Readiness::Pending { .. })
        })
        .await;
    assert!(matches!(ready, Readiness::Ready { .. }), "{ready:?}");
    fx.provider.delete(&name).await.expect("delete");
    fx.finish().await;
}

#[tokio::test]
async fn the_pod_is_hardened_and_the_job_has_the_cluster_s_backstops() {
    let fx = Fixture::start("hardened", |c| {
        c.active_deadline = Some(Duration::from_secs(7500));
        c.cpu = Some("250m".into());
        c.memory = Some("256Mi".into());
        c.service_account = Some("tea-worker".into());
    })
    .await;
    let name = fresh_name("hardened");
    let handle = fx
        .provider
        .create_or_adopt(&spec(&name, SLEEPER))
        .await
        .expect("create");
    let job = fx.fake.objects(Kind::Job, NS).remove(0);
    let spec_ = &job["spec"];
    assert_eq!(spec_["backoffLimit"], 0);
    assert_eq!(spec_["podReplacementPolicy"], "Failed");
    assert_eq!(spec_["activeDeadlineSeconds"], 7500);
    assert_eq!(spec_["ttlSecondsAfterFinished"], 3600);
    let labels = &job["metadata"]["labels"];
    assert_eq!(labels[COMPUTE_LABEL], name.as_str());
    assert_eq!(labels[RUN_LABEL], "0196f3a2-7c1e-7d3a-9b1f-2a3b4c5d6e7f");
    assert_eq!(
        job["metadata"]["annotations"][OWNER_ANNOTATION],
        fx.provider.owner().as_str()
    );
    let pod = fx.pod_when(&name, "the pod", |_| true).await;
    assert_eq!(pod["metadata"]["labels"][OWNER_LABEL], labels[OWNER_LABEL]);
    let pod_spec = &pod["spec"];
    assert_eq!(pod_spec["restartPolicy"], "Never");
    assert_eq!(pod_spec["automountServiceAccountToken"], false);
    assert_eq!(pod_spec["serviceAccountName"], "tea-worker");
    assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod_spec["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod_spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod_spec["containers"][0]["securityContext"];
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["capabilities"]["drop"], json!(["ALL"]));
    let resources = &pod_spec["containers"][0]["resources"];
    assert_eq!(
        resources["limits"],
        json!({"cpu": "250m", "memory": "256Mi"})
    );
    fx.readiness_until(&handle, "Ready", |r| matches!(r, Readiness::Ready { .. }))
        .await;
    fx.provider.delete(&name).await.expect("delete");
    fx.finish().await;
}

/// A run's resources become the container's requests and limits (the run's over the
/// configured ones), GPUs as `nvidia.com/gpu`, through a create the fake checks against the
/// official schema; a named size is refused before anything exists.
#[tokio::test]
async fn a_run_s_resources_become_the_pod_s_requests_and_limits_and_a_size_is_refused() {
    let fx = Fixture::start("resources", |c| {
        c.cpu = Some("250m".into());
        c.memory = Some("256Mi".into());
    })
    .await;
    let resources = tea_contract::Resources {
        cpu: Some(tea_contract::Cpus::from_millis(1500)),
        memory: Some(512 << 20),
        gpu: Some(1),
        size: None,
    };
    let fitted = fx.provider.fit(&resources).await.expect("fits");
    assert_eq!(fitted.gpu, Some(1));
    let name = fresh_name("resources");
    let mut asked = spec(&name, SLEEPER);
    asked.resources = resources;
    fx.provider.create_or_adopt(&asked).await.expect("create");
    let job = fx.fake.objects(Kind::Job, NS).remove(0);
    let container = &job["spec"]["template"]["spec"]["containers"][0]["resources"];
    let expected = json!({"cpu": "1500m", "memory": "536870912", "nvidia.com/gpu": "1"});
    assert_eq!(container["limits"], expected);
    assert_eq!(container["requests"], expected);
    fx.provider.delete(&name).await.expect("delete");

    let sized = fresh_name("resources-size");
    let mut by_size = spec(&sized, SLEEPER);
    by_size.resources.size = Some("large".into());
    let refused = fx
        .provider
        .create_or_adopt(&by_size)
        .await
        .expect_err("a size is refused");
    assert!(refused.to_string().contains("resources.size"), "{refused}");
    assert!(
        fx.fake.objects(Kind::Job, NS).is_empty(),
        "nothing was created for a refused request"
    );
    fx.finish().await;
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_fast_naming_it() {
    let fx = Fixture::start("pull", |_| {}).await;
    let name = fresh_name("pull");
    let handle = fx
        .provider
        .create_or_adopt(&spec(&name, "registry.example/never-pushed:v9"))
        .await
        .expect("create");
    let started = Instant::now();
    let failed = fx
        .readiness_until(&handle, "Failed", |r| matches!(r, Readiness::Failed { .. }))
        .await;
    let Readiness::Failed { phase, reason } = failed else {
        unreachable!()
    };
    assert!(
        matches!(phase.as_str(), "ErrImagePull" | "ImagePullBackOff"),
        "{phase}"
    );
    assert!(
        reason.contains("registry.example/never-pushed:v9"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "not fast");
    fx.provider.delete(&name).await.expect("delete");
    fx.assert_gone(&name);
    fx.finish().await;
}

#[tokio::test]
async fn an_unschedulable_pod_is_pending_with_the_scheduler_s_message() {
    let fx = Fixture::start("unschedulable", |_| {}).await;
    fx.fake.inject(Fault::Unschedulable {
        count: 1,
        message: None,
    });
    let name = fresh_name("unschedulable");
    let handle = fx
        .provider
        .create_or_adopt(&spec(&name, SLEEPER))
        .await
        .expect("create");
    fx.pod_when(&name, "the pod", |_| true).await;
    for _ in 0..5 {
        match fx.provider.readiness(&handle).await.expect("readiness") {
            Readiness::Pending { phase, detail } => {
                assert_eq!(phase, "Unschedulable");
                assert!(detail.unwrap_or_default().contains(UNSCHEDULABLE_MESSAGE));
            }
            other => panic!("an unschedulable pod is pending, not {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fx.provider.delete(&name).await.expect("delete");
    fx.assert_gone(&name);
    fx.finish().await;
}

#[tokio::test]
async fn delete_keeps_the_log_and_returns_once_everything_is_gone() {
    let fx = Fixture::start("delete", |_| {}).await;
    let name = fresh_name("delete");
    let handle = fx
        .provider
        .create_or_adopt(&spec(&name, EXITING))
        .await
        .expect("create");
    let failed = fx
        .readiness_until(&handle, "Failed", |r| matches!(r, Readiness::Failed { .. }))
        .await;
    let Readiness::Failed { reason, .. } = failed else {
        unreachable!()
    };
    assert!(
        reason.contains("exited with code 3") && reason.contains("the worker gives up"),
        "{reason}"
    );
    assert_eq!(
        fx.provider.delete(&name).await.expect("delete"),
        Deleted::Removed
    );
    fx.assert_gone(&name);
    let log = std::fs::read_to_string(fx.provider.kept_log_path(&name)).expect("kept log");
    assert!(
        log.contains("the worker gives up") && log.contains(&name),
        "{log}"
    );
    assert_eq!(
        fx.provider.delete(&name).await.expect("again"),
        Deleted::AlreadyGone
    );
    fx.finish().await;
}

#[tokio::test]
async fn an_evicted_pod_fails_the_unit_with_the_reason() {
    let fx = Fixture::start("evicted", |_| {}).await;
    let name = fresh_name("evicted");
    let handle = fx
        .provider
        .create_or_adopt(&spec(&name, SLEEPER))
        .await
        .expect("create");
    fx.readiness_until(&handle, "Ready", |r| matches!(r, Readiness::Ready { .. }))
        .await;
    let pod = fx.pods_of(&name).remove(0);
    assert!(fx.fake.evict(NS, pod["metadata"]["name"].as_str().unwrap()));
    let failed = fx
        .readiness_until(&handle, "Failed", |r| matches!(r, Readiness::Failed { .. }))
        .await;
    assert!(format!("{failed:?}").contains("Evicted"), "{failed:?}");
    fx.provider.delete(&name).await.expect("delete");
    fx.assert_gone(&name);
    fx.finish().await;
}

#[tokio::test]
async fn no_call_outlasts_its_time_limit_whatever_the_api_server_asks_or_withholds() {
    let fx = Fixture::start("bounded", |cfg| {
        cfg.request_timeout = Duration::from_secs(1)
    })
    .await;
    let name = fresh_name("bounded");
    let unit = spec(&name, SLEEPER);
    let create = || fx.provider.create_or_adopt(&unit);
    for (what, fault) in [
        (
            "a 429 asking for an hour's wait",
            Fault::Status {
                count: 1,
                status: 429,
                op: Op::Create,
                resource: Some("jobs".into()),
                retry_after_secs: Some(3600),
            },
        ),
        (
            "a create left unanswered for ten minutes",
            Fault::Slow {
                count: 1,
                delay_ms: 600_000,
                op: Op::Create,
                resource: Some("jobs".into()),
            },
        ),
    ] {
        fx.fake.inject(fault);
        let err = tokio::time::timeout(Duration::from_secs(60), create())
            .await
            .unwrap_or_else(|_| panic!("{what}: the call did not end within a minute"))
            .expect_err(what);
        assert_eq!(err.kind, ErrorKind::Transient, "{what}: {err}");
    }
    // The activity's retry then makes the one Job.
    create().await.expect("the retry");
    assert_eq!(fx.fake.names(Kind::Job, NS), std::slice::from_ref(&name));
    fx.provider.delete(&name).await.expect("delete");
    fx.finish().await;
}

#[tokio::test]
async fn rate_limits_are_retried_server_errors_are_transient_and_one_job_is_made() {
    let fx = Fixture::start("transient", |_| {}).await;
    let name = fresh_name("transient");
    let fault = |status: u16| Fault::Status {
        count: 1,
        status,
        op: Op::Create,
        resource: Some("jobs".into()),
        retry_after_secs: Some(1),
    };
    // kube's client retries 429 (after Retry-After) and 503 itself.
    fx.fake.inject(fault(429));
    fx.fake.inject(fault(503));
    fx.provider
        .create_or_adopt(&spec(&name, SLEEPER))
        .await
        .expect("created after retries");
    assert_eq!(fx.fake.names(Kind::Job, NS), std::slice::from_ref(&name));
    // A 500 is the caller's to retry.
    let other = fresh_name("transient-500");
    fx.fake.inject(fault(500));
    let err = fx
        .provider
        .create_or_adopt(&spec(&other, SLEEPER))
        .await
        .expect_err("500");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    fx.provider
        .create_or_adopt(&spec(&other, SLEEPER))
        .await
        .expect("the retry");
    let mut jobs = fx.fake.names(Kind::Job, NS);
    jobs.sort();
    let mut expected = vec![name.clone(), other.clone()];
    expected.sort();
    assert_eq!(jobs, expected);
    fx.provider.delete(&name).await.expect("delete");
    fx.provider.delete(&other).await.expect("delete");
    fx.finish().await;
}
