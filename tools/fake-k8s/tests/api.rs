//! The fake cluster over HTTP: the official schemas refuse what a real API server refuses,
//! failures answer the real `Status` bodies, and the control plane enforces what the provider
//! relies on (one pod per Job, deadlines, TTL, garbage collection, foreground deletion).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tea_fake_k8s::{FakeK8s, FakeK8sConfig, Kind};

const NS: &str = "api-test";
const JOBS: &str = "/apis/batch/v1/namespaces/api-test/jobs";

async fn fake(label: &str) -> (FakeK8s, reqwest::Client) {
    let dir = std::env::temp_dir().join(format!("fake-k8s-{label}-{}", std::process::id()));
    let cfg = FakeK8sConfig::new(dir)
        .with_image("sleeper:1", "/bin/sleep", ["infinity"])
        .with_image("done:1", "/bin/true", Vec::<String>::new());
    (
        FakeK8s::start(cfg).await.expect("fake with schemas"),
        reqwest::Client::new(),
    )
}

fn job(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "worker", "image": image}]
        }}}
    })
}

async fn send(
    client: &reqwest::Client,
    fake: &FakeK8s,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, format!("{}{path}", fake.base_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn create_bodies_are_checked_against_the_strict_official_schemas() {
    let (fake, client) = fake("schemas").await;
    let mut bad = job("with-typo", "sleeper:1");
    bad["spec"]["backofLimit"] = json!(0);
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!(3);
    let (status, body) = send(&client, &fake, reqwest::Method::POST, JOBS, Some(bad)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["kind"], "Status");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Job.batch \"with-typo\" is invalid"),
        "{message}"
    );
    assert!(
        message.contains("backofLimit"),
        "an unknown field is refused: {message}"
    );
    assert!(
        message.contains("imagePullPolicy"),
        "a wrong type is refused: {message}"
    );
    assert!(fake.names(Kind::Job, NS).is_empty());

    let (status, created) = send(
        &client,
        &fake,
        reqwest::Method::POST,
        JOBS,
        Some(job("good", "sleeper:1")),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(
        created["metadata"]["uid"].is_string()
            && created["metadata"]["resourceVersion"].is_string()
    );
    let (status, body) = send(
        &client,
        &fake,
        reqwest::Method::POST,
        JOBS,
        Some(job("good", "sleeper:1")),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (409, Some("AlreadyExists")),
        "{body}"
    );
    assert_eq!(body["message"], "jobs.batch \"good\" already exists");
    let (status, body) = send(
        &client,
        &fake,
        reqwest::Method::GET,
        &format!("{JOBS}/nothing"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (404, Some("NotFound")),
        "{body}"
    );
    assert_eq!(
        body["details"],
        json!({"name": "nothing", "group": "batch", "kind": "jobs"})
    );
    fake.shutdown().await;
}

#[test]
fn without_the_schemas_the_fake_does_not_start() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cfg = FakeK8sConfig::new(std::env::temp_dir().join("fake-k8s-no-schemas"));
    cfg.schema_dir = Some("/nonexistent/kubernetes-json-schema".into());
    let err = runtime
        .block_on(FakeK8s::start(cfg))
        .err()
        .expect("no schemas, no fake");
    assert!(
        format!("{err:#}").contains("pip install kubernetes-validate=="),
        "{err:#}"
    );
}

#[tokio::test]
async fn the_job_controller_runs_one_pod_and_enforces_the_deadline_and_the_ttl() {
    let (fake, client) = fake("controller").await;
    let mut deadline = job("deadline", "sleeper:1");
    deadline["spec"]["activeDeadlineSeconds"] = json!(1);
    let mut ttl = job("ttl", "done:1");
    ttl["spec"]["ttlSecondsAfterFinished"] = json!(0);
    for body in [deadline, ttl] {
        let (status, b) = send(&client, &fake, reqwest::Method::POST, JOBS, Some(body)).await;
        assert_eq!(status, 201, "{b}");
    }
    until("the deadline's pod runs", || {
        fake.pods_started()
            .iter()
            .any(|p| p.starts_with("deadline-"))
    })
    .await;
    until("the deadline fails the Job and removes its pod", || {
        let job = fake
            .objects(Kind::Job, NS)
            .into_iter()
            .find(|j| j["metadata"]["name"] == "deadline");
        let failed = job.is_some_and(|j| {
            j["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Failed" && c["reason"] == "DeadlineExceeded")
        });
        failed
            && !fake
                .names(Kind::Pod, NS)
                .iter()
                .any(|p| p.starts_with("deadline-"))
    })
    .await;
    until("the TTL deletes the finished Job and its pod", || {
        !fake.names(Kind::Job, NS).contains(&"ttl".to_owned())
            && !fake
                .names(Kind::Pod, NS)
                .iter()
                .any(|p| p.starts_with("ttl-"))
    })
    .await;
    fake.shutdown().await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_the_pod_and_owned_objects_are_collected() {
    let (fake, client) = fake("gc").await;
    let (_, created) = send(
        &client,
        &fake,
        reqwest::Method::POST,
        JOBS,
        Some(job("owner", "sleeper:1")),
    )
    .await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "owned", "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "owner", "uid": uid}]},
        "data": {"K": "dg=="}
    });
    let (status, b) = send(
        &client,
        &fake,
        reqwest::Method::POST,
        "/api/v1/namespaces/api-test/secrets",
        Some(secret),
    )
    .await;
    assert_eq!(status, 201, "{b}");
    until("the pod runs", || {
        fake.pods_started().iter().any(|p| p.starts_with("owner-"))
    })
    .await;
    let (status, deleting) = send(
        &client,
        &fake,
        reqwest::Method::DELETE,
        &format!("{JOBS}/owner"),
        Some(
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"}),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        deleting["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    until("the Job, its pod and its Secret go", || {
        fake.names(Kind::Job, NS).is_empty()
            && fake.names(Kind::Pod, NS).is_empty()
            && fake.names(Kind::Secret, NS).is_empty()
    })
    .await;
    fake.shutdown().await;
}
