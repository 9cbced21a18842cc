//! The pattern end to end through the Kubernetes provider, against the fake cluster of
//! `tools/fake-k8s` (reached through a kubeconfig, as a real cluster would be), whose kubelet
//! runs each pod as the real external-worker process.

use std::path::PathBuf;

use tea_compute::kubernetes::COMPUTE_LABEL;
use tea_fake_k8s::{FakeK8s, FakeK8sConfig, Fault, Kind};
use tea_starter::{RunEnd, RunHandle};

use crate::support::{
    self, DevServer, Proc, ProcBuilder, bin,
    run::{self, RUN_TIMEOUT, pending_job},
    startup_error, test_dir, unique, wait_for,
};

const NAMESPACE: &str = "tea-e2e";
/// The image of [`run::input`], which the fake's kubelet runs as the external-worker binary.
const IMAGE: &str = "sje-test-registry/external:latest";

/// A dev server, the fake cluster and a workflow-worker using the kubernetes provider.
struct Fixture {
    dir: PathBuf,
    server: DevServer,
    fake: FakeK8s,
    worker: Proc,
    task_queue: String,
}

impl Fixture {
    async fn start(test: &str) -> Fixture {
        Self::start_with(test, &[]).await
    }

    /// Like [`Fixture::start`], with more settings for the workflow-worker.
    async fn start_with(test: &str, env: &[(&str, &str)]) -> Fixture {
        let dir = test_dir(test);
        let server = DevServer::start(&dir).await;
        let fake = FakeK8s::start(FakeK8sConfig::new(dir.join("pods")).with_image(
            IMAGE,
            bin("external-worker"),
            Vec::<String>::new(),
        ))
        .await
        .expect("the fake cluster (pip install kubernetes-validate for its schemas)");
        let kubeconfig = dir.join("kubeconfig");
        fake.write_kubeconfig(&kubeconfig, NAMESPACE)
            .expect("kubeconfig");
        let task_queue = unique(&format!("wf-{test}"));
        let worker = support::workflow_worker(&dir, &server, &task_queue, "workflow-worker.log")
            .env("COMPUTE_PROVIDER", "kubernetes")
            .env("KUBECONFIG", kubeconfig.display().to_string())
            .env("K8S_LOG_DIR", dir.join("kept-logs").display().to_string())
            .env("K8S_STOP_GRACE", "2s")
            .env("TEMPORAL_TLS", "false")
            // A secret to carry: it must reach the worker through the unit's Secret.
            .env("TEMPORAL_API_KEY", "tak-kubernetes-e2e");
        let worker = env
            .iter()
            .fold(worker, |w, (key, value)| w.env(key, *value))
            .spawn();
        Fixture {
            dir,
            server,
            fake,
            worker,
            task_queue,
        }
    }

    async fn start_run(&self, test: &str, job: &str) -> RunHandle {
        let client = self.server.client().await;
        run::start(&client, &self.task_queue, test, job).await
    }

    /// Nothing of any unit is left: no Job, pod or Secret.
    async fn assert_nothing_left(&self) {
        for kind in [Kind::Job, Kind::Pod, Kind::Secret] {
            let left = self.fake.names(kind, NAMESPACE);
            assert!(left.is_empty(), "{kind:?} left behind: {left:?}");
        }
    }

    fn kept_logs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("kept-logs"))
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_kubernetes_completes_and_leaves_no_job_pod_or_secret() {
    let fx = Fixture::start("k8s-happy").await;
    let handle = fx.start_run("k8s-happy", "2s").await;
    let outcome = run::completed(&handle, &fx.worker).await;
    assert_eq!(outcome.attempts, 1);
    fx.assert_nothing_left().await;
    assert_eq!(fx.fake.pods_started().len(), 1, "one pod ran");
    // The Job never carried the API key; its Secret did, and the worker got it from there.
    let jobs = fx.fake.create_bodies(Kind::Job);
    assert_eq!(jobs.len(), 1);
    assert!(
        !jobs[0].to_string().contains("tak-kubernetes-e2e"),
        "{}",
        jobs[0]
    );
    let secrets = fx.fake.create_bodies(Kind::Secret);
    assert_eq!(secrets.len(), 1, "one Secret, for the API key");
    let logs = fx.kept_logs();
    assert_eq!(logs.len(), 1, "the pod's log is kept: {logs:?}");
    assert!(
        !fx.worker.output().contains("tak-kubernetes-e2e"),
        "the key is in the workflow-worker's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_mid_job_is_replaced_by_a_fresh_unit_and_the_run_completes() {
    let fx = Fixture::start("k8s-pod-deleted").await;
    let handle = fx.start_run("k8s-pod-deleted", run::OBSERVABLE_JOB).await;
    wait_for("the job to start", RUN_TIMEOUT, || pending_job(&handle)).await;
    let pods = fx.fake.objects(Kind::Pod, NAMESPACE);
    let [pod] = pods.as_slice() else {
        panic!("one pod during the job: {pods:?}");
    };
    let first_unit = pod["metadata"]["labels"][COMPUTE_LABEL]
        .as_str()
        .expect("compute label")
        .to_owned();
    let pod_name = pod["metadata"]["name"].as_str().expect("pod name");
    // As `kubectl delete pod` would: the kubelet stops it, and the Job replaces nothing.
    assert!(fx.fake.delete(Kind::Pod, NAMESPACE, pod_name, None));

    let outcome = run::completed(&handle, &fx.worker).await;
    assert_eq!(outcome.attempts, 2, "one fresh unit");
    assert!(
        outcome.compute_name.ends_with("-2"),
        "{}",
        outcome.compute_name
    );
    assert_ne!(outcome.compute_name, first_unit);
    fx.assert_nothing_left().await;
    let started = fx.fake.pods_started();
    assert_eq!(
        started.len(),
        2,
        "the deleted pod and its replacement: {started:?}"
    );
    assert!(started[0].starts_with(&first_unit), "{started:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_waits_out_the_deploy_timeout_and_the_run_names_the_scheduler() {
    let fx = Fixture::start_with("k8s-unschedulable", &[("DEPLOY_TIMEOUT", "2s")]).await;
    let scheduler_says = "0/3 nodes are available: 3 Insufficient memory.";
    fx.fake.inject(Fault::Unschedulable {
        count: 9,
        message: Some(scheduler_says.into()),
    });
    let handle = fx.start_run("k8s-unschedulable", "1s").await;
    let end = run::finish(&handle, &fx.worker).await;
    let RunEnd::Failed(message) = &end else {
        panic!(
            "expected a failed run, got {end}; worker: {}",
            fx.worker.output()
        );
    };
    assert!(message.contains("deploy timeout of 2s"), "{message}");
    assert!(message.contains(scheduler_says), "{message}");
    assert!(fx.fake.pods_started().is_empty(), "no pod ran");
    fx.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_kubeconfig_stops_the_workflow_worker_at_start_saying_so() {
    let dir = test_dir("k8s-no-kubeconfig");
    let missing = dir.join("no-such-kubeconfig");
    let output = startup_error(
        ProcBuilder::new(bin("workflow-worker"), dir.join("out.log"))
            .env("COMPUTE_PROVIDER", "kubernetes")
            .env("KUBECONFIG", missing.display().to_string())
            .env("K8S_LOG_DIR", dir.join("logs").display().to_string())
            .env("TEMPORAL_ADDRESS", "127.0.0.1:1"),
    )
    .await;
    assert!(
        output.contains("kubernetes provider") && output.contains("no-such-kubeconfig"),
        "{output}"
    );
    assert!(output.contains("set KUBECONFIG"), "{output}");
}
