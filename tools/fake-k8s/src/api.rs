//! The REST API: the real paths, verbs, query parameters and bodies kube uses for namespaced
//! Jobs (`/apis/batch/v1`), pods, pod logs and Secrets (`/api/v1`), `/version`, and the admin
//! endpoints under `/_fake`. Every create body is checked against the official schema of its
//! kind first (422 `Invalid` naming each field); failures answer the API server's `Status`.

use std::sync::Arc;
use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use serde_json::{Value, json};

use crate::faults::{Fault, Op, take_request_faults};
use crate::store::{self, Kind, Selector, Shared, not_found, status_body};
use crate::{controller, kubelet, validate};

type Shared_ = Arc<Shared>;
type Params = std::collections::HashMap<String, String>;

pub fn router(shared: Arc<Shared>) -> Router {
    let collection = |kind: Kind| {
        any(
            move |s: State<Shared_>,
                  m: Method,
                  Path(ns): Path<String>,
                  q: Query<Params>,
                  b: Bytes| { collection(kind, s, m, ns, q, b) },
        )
    };
    let item = |kind: Kind| {
        any(
            move |s: State<Shared_>,
                  m: Method,
                  Path((ns, name)): Path<(String, String)>,
                  q: Query<Params>,
                  b: Bytes| item(kind, s, m, ns, name, q, b),
        )
    };
    Router::new()
        .route("/version", get(version))
        .route("/api/v1/namespaces/{ns}/pods", collection(Kind::Pod))
        .route("/api/v1/namespaces/{ns}/pods/{name}", item(Kind::Pod))
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
        .route("/api/v1/namespaces/{ns}/secrets", collection(Kind::Secret))
        .route("/api/v1/namespaces/{ns}/secrets/{name}", item(Kind::Secret))
        .route("/apis/batch/v1/namespaces/{ns}/jobs", collection(Kind::Job))
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
            item(Kind::Job),
        )
        .route(
            "/_fake/faults",
            get(get_faults).post(post_fault).delete(clear_faults),
        )
        .route("/_fake/state", get(state))
        .route("/_fake/pods/{ns}/{name}/evict", post(evict))
        .fallback(|| async {
            answer(
                404,
                status_body(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                    Value::Null,
                ),
            )
        })
        .with_state(shared)
}

fn answer(code: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

fn resource_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Job => "jobs",
        Kind::Pod => "pods",
        Kind::Secret => "secrets",
    }
}

/// Applies the armed request faults: a delay, and perhaps an answer in place of the request's.
async fn faults(shared: &Shared, op: Op, resource: &str) -> Option<Response> {
    let (fault, delay) = take_request_faults(&mut shared.lock().faults, op, resource);
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let (code, retry_after) = fault?;
    let (reason, message) = match code {
        429 => (
            "TooManyRequests",
            "Too many requests, please try again later.",
        ),
        409 => (
            "AlreadyExists",
            "the object already exists (injected conflict)",
        ),
        500 => (
            "InternalError",
            "Internal error occurred: injected by the fake cluster",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted",
        ),
        _ => ("InternalError", "injected failure"),
    };
    let mut details = Value::Null;
    if let Some(secs) = retry_after {
        details = json!({"retryAfterSeconds": secs});
    }
    let mut response = answer(code, status_body(code, reason, message, details));
    if let Some(secs) = retry_after
        && let Ok(value) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert("retry-after", value);
    }
    Some(response)
}

async fn version() -> Json<Value> {
    Json(json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "fake",
        "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2",
        "compiler": "gc", "platform": "linux/amd64"
    }))
}

async fn collection(
    kind: Kind,
    State(shared): State<Shared_>,
    method: Method,
    ns: String,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let op = if method == Method::POST {
        Op::Create
    } else {
        Op::List
    };
    if let Some(r) = faults(&shared, op, resource_of(kind)).await {
        return r;
    }
    match method {
        Method::GET => list(&shared, kind, &ns, &params),
        Method::POST => create(&shared, kind, &ns, &body),
        _ => answer(
            405,
            status_body(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Value::Null,
            ),
        ),
    }
}

async fn item(
    kind: Kind,
    State(shared): State<Shared_>,
    method: Method,
    ns: String,
    name: String,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    let op = if method == Method::DELETE {
        Op::Delete
    } else {
        Op::Get
    };
    if let Some(r) = faults(&shared, op, resource_of(kind)).await {
        return r;
    }
    let key = (kind, ns, name.clone());
    match method {
        Method::GET => match shared.lock().objects.get(&key) {
            Some(object) => answer(200, object.clone()),
            None => answer(404, not_found(kind, &name)),
        },
        Method::DELETE => {
            let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let policy = options["propagationPolicy"]
                .as_str()
                .or(params.get("propagationPolicy").map(String::as_str))
                .map(str::to_owned);
            let grace = options["gracePeriodSeconds"].as_i64().or(params
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse().ok()));
            match controller::delete(&shared, &key, policy.as_deref(), grace) {
                Ok(body) => answer(200, body),
                Err(body) => answer(body["code"].as_u64().unwrap_or(500) as u16, body),
            }
        }
        _ => answer(
            405,
            status_body(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Value::Null,
            ),
        ),
    }
}

fn list(shared: &Shared, kind: Kind, ns: &str, params: &Params) -> Response {
    let selector = match Selector::parse(params.get("labelSelector").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(e) => return answer(400, status_body(400, "BadRequest", &e, Value::Null)),
    };
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after = params.get("continue").cloned().unwrap_or_default();
    let st = shared.lock();
    let matching: Vec<(String, Value)> = st
        .of_kind(kind, ns)
        .into_iter()
        .filter(|(_, o)| selector.matches(o))
        .filter(|((_, _, name), _)| after.is_empty() || *name > after)
        .map(|((_, _, name), o)| (name, o))
        .collect();
    let more = matching.len() > limit;
    let page: Vec<(String, Value)> = matching.into_iter().take(limit).collect();
    let mut metadata = json!({"resourceVersion": st.list_resource_version()});
    if more && let Some((last, _)) = page.last() {
        metadata["continue"] = json!(last);
        metadata["remainingItemCount"] = json!(0);
    }
    answer(
        200,
        json!({
            "kind": format!("{}List", kind.name()),
            "apiVersion": kind.api_version(),
            "metadata": metadata,
            "items": page.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
        }),
    )
}

fn create(shared: &Arc<Shared>, kind: Kind, ns: &str, body: &[u8]) -> Response {
    let object: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let message = format!("the body of the request was in an unknown format: {e}");
            return answer(400, status_body(400, "BadRequest", &message, Value::Null));
        }
    };
    shared.lock().create_bodies.push((kind, object.clone()));
    let name = store::name(&object).unwrap_or("").to_owned();
    if let Err(causes) = validate::check(shared, kind, ns, &object) {
        tracing::warn!(
            kind = kind.name(),
            name,
            ?causes,
            "refused an invalid create body"
        );
        return answer(422, store::invalid(kind, &name, &causes));
    }
    match controller::create(shared, kind, ns, object) {
        Ok(created) => answer(201, created),
        Err(body) => answer(body["code"].as_u64().unwrap_or(500) as u16, body),
    }
}

async fn pod_log(
    State(shared): State<Shared_>,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Response {
    if let Some(r) = faults(&shared, Op::Log, "pods").await {
        return r;
    }
    let tail = params
        .get("tailLines")
        .and_then(|t| t.parse::<usize>().ok());
    match kubelet::log_of(&shared, &ns, &name, tail) {
        Ok(text) => (StatusCode::OK, [("content-type", "text/plain")], text).into_response(),
        Err(body) => answer(body["code"].as_u64().unwrap_or(500) as u16, body),
    }
}

async fn get_faults(State(shared): State<Shared_>) -> Json<Value> {
    Json(json!({"pending_faults": shared.lock().faults.clone()}))
}

async fn post_fault(State(shared): State<Shared_>, Json(fault): Json<Fault>) -> Json<Value> {
    let mut st = shared.lock();
    st.faults.push(fault);
    Json(json!({"pending_faults": st.faults.clone()}))
}

async fn clear_faults(State(shared): State<Shared_>) -> Json<Value> {
    shared.lock().faults.clear();
    Json(json!({"pending_faults": []}))
}

async fn state(State(shared): State<Shared_>) -> Json<Value> {
    Json(crate::summary(&shared))
}

async fn evict(
    State(shared): State<Shared_>,
    Path((ns, name)): Path<(String, String)>,
    _headers: HeaderMap,
) -> Response {
    if kubelet::evict(&shared, &ns, &name) {
        answer(200, json!({"evicted": name}))
    } else {
        answer(404, not_found(Kind::Pod, &name))
    }
}
