//! Integration-style tests of the provider against an in-test mini App Platform server.
//!
//! The server keeps apps in memory, honours pagination and name uniqueness, and can be told to
//! answer the next request of an operation with a fault (optionally after performing it).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::*;
use crate::naming::compute_name;
use crate::{EnvVar, ImageRef};

const TOKEN: &str = "dop_v1_test_token";
const OWNER: &str = "test-ns/test-queue";

fn owner() -> ComputeOwner {
    ComputeOwner::new(OWNER).unwrap()
}

struct Fault {
    status: u16,
    headers: Vec<(&'static str, String)>,
    /// Perform the operation first, then answer with the fault.
    after_effect: bool,
}

impl Fault {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            after_effect: false,
        }
    }
}

#[derive(Default)]
struct Mini {
    addr: Option<SocketAddr>,
    apps: Vec<Value>,
    deployments: HashMap<String, Value>,
    faults: HashMap<&'static str, VecDeque<Fault>>,
    hits: Vec<(&'static str, HeaderMap, HashMap<String, String>)>,
    page_size: usize,
    /// GETs of a deleted app that still return it.
    linger_gets: usize,
    lingering: HashMap<String, (Value, usize)>,
    next_id: u64,
}

type Shared = Arc<Mutex<Mini>>;

impl Mini {
    fn hits(&self, op: &str) -> usize {
        self.hits.iter().filter(|(o, _, _)| *o == op).count()
    }

    fn add_app(&mut self, name: &str, phase: &str) -> (String, String) {
        self.add_app_with_spec(json!({ "name": name }), phase)
    }

    /// An app named `name` whose owner mark is `mark` (`None`: unmarked).
    fn add_marked(&mut self, name: &str, mark: Option<&str>) -> (String, String) {
        let envs: Vec<Value> = mark
            .map(|m| json!({"key": OWNER_ENV, "value": m, "scope": "RUN_TIME", "type": "GENERAL"}))
            .into_iter()
            .collect();
        self.add_app_with_spec(json!({ "name": name, "envs": envs }), "ACTIVE")
    }

    fn add_app_with_spec(&mut self, spec: Value, phase: &str) -> (String, String) {
        self.next_id += 1;
        let id = format!("app-{}", self.next_id);
        let dep = format!("dep-{}", self.next_id);
        let deployment = json!({"id": dep, "phase": phase,
            "progress": {"pending_steps": 6, "total_steps": 6}});
        self.deployments.insert(dep.clone(), deployment.clone());
        self.apps.push(json!({
            "id": id,
            "spec": spec,
            "created_at": "2026-01-01T12:00:00Z",
            "pending_deployment": deployment,
            "some_future_field": {"x": 1}
        }));
        (id, dep)
    }
}

fn error(status: u16, id: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        Json(json!({"id": id, "message": message, "request_id": format!("req-{status}")})),
    )
        .into_response()
}

fn fault_response(f: &Fault) -> Response {
    let mut resp = error(f.status, "fault", "injected fault");
    for (k, v) in &f.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// Records the hit and takes the next fault for `op`.
fn enter(
    st: &Shared,
    op: &'static str,
    headers: &HeaderMap,
    query: HashMap<String, String>,
) -> Option<Fault> {
    let mut s = st.lock().unwrap();
    s.hits.push((op, headers.clone(), query));
    s.faults.get_mut(op).and_then(VecDeque::pop_front)
}

fn finish(fault: Option<Fault>, ok: Response) -> Response {
    match fault {
        Some(f) => fault_response(&f),
        None => ok,
    }
}

async fn list(
    State(st): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let fault = enter(&st, "list", &headers, q.clone());
    if fault.as_ref().is_some_and(|f| !f.after_effect) {
        return finish(fault, ().into_response());
    }
    let s = st.lock().unwrap();
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(20);
    let size = per_page.min(s.page_size.max(1));
    let start = (page - 1) * size;
    let apps: Vec<Value> = s.apps.iter().skip(start).take(size).cloned().collect();
    let mut pages = json!({});
    if start + size < s.apps.len() {
        let addr = s.addr.expect("addr set");
        pages["next"] = json!(format!(
            "http://{addr}/v2/apps?page={}&per_page={per_page}",
            page + 1
        ));
    }
    let body = json!({"apps": apps, "links": {"pages": pages}, "meta": {"total": s.apps.len()}});
    finish(fault, Json(body).into_response())
}

async fn create(State(st): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let fault = enter(&st, "create", &headers, HashMap::new());
    if fault.as_ref().is_some_and(|f| !f.after_effect) {
        return finish(fault, ().into_response());
    }
    let mut s = st.lock().unwrap();
    let Some(name) = body["spec"]["name"].as_str() else {
        return error(422, "unprocessable_entity", "spec.name is required");
    };
    if s.apps.iter().any(|a| a["spec"]["name"] == name) {
        return error(
            409,
            "conflict",
            &format!("an app with the name {name} already exists"),
        );
    }
    s.add_app_with_spec(body["spec"].clone(), "PENDING_BUILD");
    let app = s.apps.last().cloned();
    finish(fault, Json(json!({ "app": app })).into_response())
}

async fn get_app(State(st): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let fault = enter(&st, "get", &headers, HashMap::new());
    if fault.is_some() {
        return finish(fault, ().into_response());
    }
    let mut s = st.lock().unwrap();
    if let Some(app) = s.apps.iter().find(|a| a["id"] == id.as_str()) {
        return Json(json!({ "app": app })).into_response();
    }
    if let Some((app, left)) = s.lingering.get_mut(&id)
        && *left > 0
    {
        *left -= 1;
        return Json(json!({ "app": app })).into_response();
    }
    error(
        404,
        "not_found",
        "The resource you were accessing could not be found.",
    )
}

async fn delete_app(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let fault = enter(&st, "delete", &headers, HashMap::new());
    if fault.as_ref().is_some_and(|f| !f.after_effect) {
        return finish(fault, ().into_response());
    }
    let mut s = st.lock().unwrap();
    let Some(pos) = s.apps.iter().position(|a| a["id"] == id.as_str()) else {
        return error(
            404,
            "not_found",
            "The resource you were accessing could not be found.",
        );
    };
    let app = s.apps.remove(pos);
    let linger = s.linger_gets;
    s.lingering.insert(id.clone(), (app, linger));
    finish(fault, Json(json!({ "id": id })).into_response())
}

async fn get_deployment(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path((id, dep)): Path<(String, String)>,
) -> Response {
    let fault = enter(&st, "get_deployment", &headers, HashMap::new());
    if fault.is_some() {
        return finish(fault, ().into_response());
    }
    let s = st.lock().unwrap();
    if !s.apps.iter().any(|a| a["id"] == id.as_str()) {
        return error(404, "not_found", "app not found");
    }
    match s.deployments.get(&dep) {
        Some(d) => Json(json!({ "deployment": d })).into_response(),
        None => error(404, "not_found", "deployment not found"),
    }
}

async fn start(page_size: usize) -> (Shared, DigitalOceanProvider) {
    let st: Shared = Arc::new(Mutex::new(Mini {
        page_size,
        ..Mini::default()
    }));
    let app = Router::new()
        .route("/v2/apps", get(list).post(create))
        .route("/v2/apps/{id}", get(get_app).delete(delete_app))
        .route("/v2/apps/{id}/deployments/{dep}", get(get_deployment))
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    st.lock().unwrap().addr = Some(addr);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut cfg = DigitalOceanConfig::new(AccessToken::new(TOKEN));
    cfg.api_url = format!("http://{addr}");
    cfg.region = Some("ams".into());
    cfg.request_timeout = Duration::from_secs(5);
    cfg.base_backoff = Duration::from_millis(1);
    cfg.max_backoff = Duration::from_millis(5);
    cfg.delete_confirm_timeout = Duration::from_secs(5);
    cfg.delete_poll_max_interval = Duration::from_millis(10);
    (st, DigitalOceanProvider::new(cfg, owner()).unwrap())
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
    }
}

#[tokio::test]
async fn create_sends_headers_and_body_then_second_call_adopts() {
    let (st, p) = start(200).await;
    let h = p.create_or_adopt(&spec("ext-one-1")).await.unwrap();
    assert!(!h.adopted);
    assert_eq!(h.revision.as_deref(), Some("dep-1"));
    assert_eq!(h.id, "app-1");

    {
        let s = st.lock().unwrap();
        let (_, headers, _) = s.hits.iter().find(|(op, _, _)| *op == "create").unwrap();
        assert_eq!(headers["authorization"], format!("Bearer {TOKEN}").as_str());
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["accept"], "application/json");
        assert!(
            headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("tea-compute/")
        );
    }

    // The first create listed nothing; the mark is an app-level GENERAL variable.
    assert_eq!(p.request_stats().total_requests(), 1);
    assert_eq!(
        st.lock().unwrap().apps[0]["spec"]["envs"],
        json!([{"key": "TEA_COMPUTE_OWNER", "value": OWNER, "scope": "RUN_TIME", "type": "GENERAL"}])
    );

    // The second create is refused (409) and only then is the name looked up, and adopted.
    let again = p.create_or_adopt(&spec("ext-one-1")).await.unwrap();
    assert!(again.adopted);
    assert_eq!(again.id, h.id);
    assert_eq!(again.revision, h.revision);
    let s = st.lock().unwrap();
    assert_eq!(s.apps.len(), 1);
    assert_eq!(s.hits("create"), 2);
    let stats = p.request_stats();
    assert_eq!(stats.requests(Operation::Create), 2);
    assert_eq!(stats.requests(Operation::List), 1);
}

#[tokio::test]
async fn create_costs_one_request_however_many_apps_the_account_holds() {
    let (st, p) = start(200).await;
    {
        let mut s = st.lock().unwrap();
        for i in 0..1000 {
            s.add_marked(&format!("foreign-{i}"), Some("someone-else"));
        }
    }
    let name = compute_name("run-o1", 1);
    let h = p.create_or_adopt(&spec(&name)).await.unwrap();
    assert!(!h.adopted);
    let stats = p.request_stats();
    assert_eq!(stats.total_requests(), 1, "{stats:?}");
    assert_eq!(st.lock().unwrap().hits("list"), 0);
}

#[tokio::test]
async fn an_app_with_our_name_but_not_our_mark_is_never_adopted() {
    let (st, p) = start(200).await;
    let other = compute_name("run-other", 1);
    let unmarked = compute_name("run-unmarked", 1);
    {
        let mut s = st.lock().unwrap();
        s.add_marked(&other, Some("another/deployment"));
        s.add_marked(&unmarked, None);
    }
    for (name, says) in [(&other, "\"another/deployment\""), (&unmarked, "absent")] {
        let err = p.create_or_adopt(&spec(name)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent, "{}", err.message);
        assert!(err.message.contains("not ours"), "{}", err.message);
        assert!(err.message.contains(says), "{}", err.message);
    }
    let s = st.lock().unwrap();
    assert_eq!(s.apps.len(), 2);
    assert_eq!(s.hits("delete"), 0);
}

#[tokio::test]
async fn the_owner_mark_variable_is_reserved() {
    let (st, p) = start(200).await;
    let mut bad = spec("ext-ok-1");
    bad.env.push(EnvVar {
        key: OWNER_ENV.into(),
        value: "forged".into(),
        secret: false,
    });
    let err = p.create_or_adopt(&bad).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("reserved"), "{}", err.message);
    assert!(st.lock().unwrap().hits.is_empty());
}

#[tokio::test]
async fn retry_on_429_honours_retry_after() {
    let (st, p) = start(200).await;
    st.lock().unwrap().faults.insert(
        "list",
        VecDeque::from([Fault {
            status: 429,
            headers: vec![("retry-after", "1".into())],
            after_effect: false,
        }]),
    );
    let started = Instant::now();
    let found = p.list_ours("ext-").await.unwrap();
    assert!(found.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited only {:?}",
        started.elapsed()
    );
    assert_eq!(st.lock().unwrap().hits("list"), 2);
    let stats = p.request_stats();
    assert_eq!(stats.status_count(429), 1);
    assert_eq!(stats.status_count(200), 1);
    assert_eq!(stats.total_retries(), 1);
}

#[tokio::test]
async fn too_long_retry_after_gives_up_at_once() {
    let (st, p) = start(200).await;
    st.lock().unwrap().faults.insert(
        "list",
        VecDeque::from([Fault {
            status: 429,
            headers: vec![("retry-after", "3600".into())],
            after_effect: false,
        }]),
    );
    let err = p.list_ours("ext-").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("3600"), "{}", err.message);
    assert_eq!(st.lock().unwrap().hits("list"), 1);
}

#[tokio::test]
async fn retry_on_500_then_success() {
    let (st, p) = start(200).await;
    let (id, dep) = {
        let mut s = st.lock().unwrap();
        let ids = s.add_app("ext-two-1", "DEPLOYING");
        s.faults.insert(
            "get_deployment",
            VecDeque::from([Fault::status(500), Fault::status(502)]),
        );
        ids
    };
    let handle = ComputeHandle {
        id,
        name: "ext-two-1".into(),
        revision: Some(dep),
        adopted: false,
    };
    let r = p.readiness(&handle).await.unwrap();
    assert_eq!(
        r,
        Readiness::Pending {
            phase: "DEPLOYING".into(),
            detail: Some("0/6 steps".into())
        }
    );
    assert_eq!(st.lock().unwrap().hits("get_deployment"), 3);
    assert_eq!(p.request_stats().requests(Operation::GetDeployment), 3);
}

#[tokio::test]
async fn exhausted_retries_are_transient_and_say_so() {
    let (st, p) = start(200).await;
    st.lock()
        .unwrap()
        .faults
        .insert("list", (0..5).map(|_| Fault::status(503)).collect());
    let err = p.list_ours("ext-").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("after 5 attempts"), "{}", err.message);
    assert!(err.message.contains("req-503"), "{}", err.message);
    assert_eq!(st.lock().unwrap().hits("list"), 5);
}

#[tokio::test]
async fn unauthorized_is_permanent_without_retry() {
    let (st, p) = start(200).await;
    st.lock()
        .unwrap()
        .faults
        .insert("create", VecDeque::from([Fault::status(401)]));
    let err = p.create_or_adopt(&spec("ext-three-1")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("DIGITALOCEAN_ACCESS_TOKEN"),
        "{}",
        err.message
    );
    assert!(err.message.contains("401"), "{}", err.message);
    assert!(err.message.contains("req-401"), "{}", err.message);
    assert!(!err.message.contains(TOKEN));
    let s = st.lock().unwrap();
    assert_eq!(s.hits("create"), 1);
    assert_eq!(s.hits("list"), 0);
}

#[tokio::test]
async fn create_answered_500_after_storing_is_adopted() {
    let (st, p) = start(200).await;
    st.lock().unwrap().faults.insert(
        "create",
        VecDeque::from([Fault {
            status: 500,
            headers: Vec::new(),
            after_effect: true,
        }]),
    );
    let h = p.create_or_adopt(&spec("ext-four-1")).await.unwrap();
    assert!(h.adopted);
    assert_eq!(h.revision.as_deref(), Some("dep-1"));
    let s = st.lock().unwrap();
    assert_eq!(s.apps.len(), 1);
    assert_eq!(s.apps[0]["id"], h.id.as_str());
}

#[tokio::test]
async fn create_failing_once_without_retries_is_adopted_by_lookup() {
    let (st, mut p) = start(200).await;
    p = {
        let mut cfg = p.config().clone();
        cfg.max_attempts = 1;
        DigitalOceanProvider::new(cfg, owner()).unwrap()
    };
    st.lock().unwrap().faults.insert(
        "create",
        VecDeque::from([Fault {
            status: 504,
            headers: Vec::new(),
            after_effect: true,
        }]),
    );
    let h = p.create_or_adopt(&spec("ext-five-1")).await.unwrap();
    assert!(h.adopted);
    let s = st.lock().unwrap();
    assert_eq!(s.apps.len(), 1);
    assert_eq!(s.hits("create"), 1);
}

#[tokio::test]
async fn validation_error_is_permanent_with_the_api_message() {
    let (st, p) = start(200).await;
    st.lock()
        .unwrap()
        .faults
        .insert("create", VecDeque::from([Fault::status(422)]));
    let err = p.create_or_adopt(&spec("ext-six-1")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("injected fault"), "{}", err.message);
    assert_eq!(st.lock().unwrap().hits("create"), 1);
}

#[tokio::test]
async fn invalid_spec_is_rejected_before_any_request() {
    let (st, p) = start(200).await;
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
    assert!(st.lock().unwrap().hits.is_empty());
}

#[tokio::test]
async fn delete_missing_app_is_already_gone() {
    let (st, p) = start(200).await;
    assert_eq!(p.delete("nope").await.unwrap(), Deleted::AlreadyGone);
    assert_eq!(st.lock().unwrap().hits("delete"), 1);
}

#[tokio::test]
async fn delete_polls_until_the_app_is_gone() {
    let (st, p) = start(200).await;
    let (id, _) = {
        let mut s = st.lock().unwrap();
        s.linger_gets = 2;
        s.add_app("ext-seven-1", "ACTIVE")
    };
    assert_eq!(p.delete(&id).await.unwrap(), Deleted::Removed);
    let s = st.lock().unwrap();
    assert_eq!(s.hits("delete"), 1);
    assert_eq!(s.hits("get"), 3);
    assert!(s.apps.is_empty());
}

#[tokio::test]
async fn delete_not_confirmed_by_the_deadline_is_transient() {
    let (st, p) = start(200).await;
    let p = {
        let mut cfg = p.config().clone();
        cfg.delete_confirm_timeout = Duration::from_millis(50);
        DigitalOceanProvider::new(cfg, owner()).unwrap()
    };
    let (id, _) = {
        let mut s = st.lock().unwrap();
        s.linger_gets = usize::MAX;
        s.add_app("ext-eight-1", "ACTIVE")
    };
    let err = p.delete(&id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("not confirmed"), "{}", err.message);
}

#[tokio::test]
async fn list_ours_follows_pages_and_keeps_only_generated_names_with_our_mark() {
    let (st, p) = start(2).await;
    let ours: Vec<String> = (1..=3)
        .map(|i| compute_name(&format!("run-{i}"), 1))
        .collect();
    let foreign = compute_name("run-foreign", 1);
    let unmarked = compute_name("run-unmarked", 2);
    {
        let mut s = st.lock().unwrap();
        s.add_marked("ext-api", Some(OWNER));
        s.add_marked("other-app", Some(OWNER));
        s.add_marked("ext-a-1", Some(OWNER));
        for name in &ours {
            s.add_marked(name, Some(OWNER));
        }
        s.add_marked(&foreign, Some("another/deployment"));
        s.add_marked(&unmarked, None);
    }
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
    let s = st.lock().unwrap();
    assert_eq!(s.hits("list"), 4 * 3);
    for (op, _, q) in &s.hits {
        assert_eq!(*op, "list");
        assert_eq!(q.get("per_page").map(String::as_str), Some("200"));
    }
}

#[tokio::test]
async fn readiness_maps_phases_and_missing_apps() {
    let (st, p) = start(200).await;
    let (id, dep) = st.lock().unwrap().add_app("ext-nine-1", "BUILDING");
    let mut handle = ComputeHandle {
        id: id.clone(),
        name: "ext-nine-1".into(),
        revision: None,
        adopted: true,
    };
    // Without a deployment id the app's pending deployment is used.
    assert!(matches!(
        p.readiness(&handle).await.unwrap(),
        Readiness::Pending { phase, .. } if phase == "BUILDING"
    ));

    handle.revision = Some(dep.clone());
    st.lock().unwrap().deployments.insert(
        dep.clone(),
        json!({"id": dep, "phase": "ERROR", "progress": {"error_steps": 1, "total_steps": 6,
            "steps": [{"name": "deploy", "status": "ERROR",
                       "reason": {"code": "x", "message": "image not found"}}]}}),
    );
    assert_eq!(
        p.readiness(&handle).await.unwrap(),
        Readiness::Failed {
            phase: "ERROR".into(),
            reason: "deploy: image not found".into()
        }
    );
    st.lock()
        .unwrap()
        .deployments
        .insert(dep.clone(), json!({"id": dep, "phase": "ACTIVE"}));
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
    // Bind and drop a listener to get a port nothing listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
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
}

/// The provider contract (`crate::conformance`) against the fake App Platform API
/// (`tea-fake-do`), whose apps run a real process.
mod conformance {
    use std::sync::Arc;

    use async_trait::async_trait;
    use tea_fake_do::{FakeDo, FakeDoConfig, Fault, SeedApps};

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
