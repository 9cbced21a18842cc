//! HTTP surface: the `/v2` App Platform routes (with bearer auth, rate-limit headers, request
//! ids, injected request faults, request counting and logging, and DO-shaped errors for every
//! failure, including axum's own rejections) and the unauthenticated `/_fake/...` admin routes.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, OriginalUri, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::faults::{Fault, Op, RequestFault};
use crate::lifecycle;
use crate::model::{
    AppResponse, AppsResponse, DeleteResponse, DeploymentResponse, ErrorBody, Links, Meta, Pages,
    error_id_for,
};
use crate::secrets;
use crate::state::{
    AppRecord, DEFAULT_PROJECT_ID, DeploymentRecord, RATE_LIMIT_PER_HOUR, RecordedRequest, Shared,
};
use crate::validate;

/// The request id of the current `/v2` request (set by the middleware).
#[derive(Debug, Clone)]
struct RequestId(String);

/// Builds the whole router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let v2 = Router::new()
        .route("/apps", get(list_apps).post(create_app))
        .route("/apps/propose", post(propose))
        .route("/apps/{id}", get(get_app).delete(delete_app))
        .route(
            "/apps/{app_id}/deployments/{deployment_id}",
            get(get_deployment),
        )
        .fallback(v2_fallback)
        .method_not_allowed_fallback(v2_method_not_allowed)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            v2_middleware,
        ));
    Router::new()
        .route("/_fake/state", get(admin_state))
        .route(
            "/_fake/faults",
            get(admin_faults).post(admin_inject).delete(admin_clear),
        )
        .route("/_fake/apps", post(admin_seed))
        .route("/_fake/apps/{id}/signal", post(admin_signal))
        .nest("/v2", v2)
        .fallback(root_fallback)
        .with_state(shared)
}

fn error_response(status: u16, message: impl Into<String>, request_id: Option<&str>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody {
        id: error_id_for(code.as_u16()).to_string(),
        message: message.into(),
        request_id: request_id.map(str::to_string),
    };
    (code, axum::Json(body)).into_response()
}

fn json_ok<T: Serialize>(value: &T) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

/// Which operation a `/v2` request is for (path with or without the `/v2` prefix).
pub(crate) fn classify(method: &Method, path: &str) -> Op {
    let path = path.strip_prefix("/v2").unwrap_or(path);
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method.as_str(), segs.as_slice()) {
        ("POST", ["apps"]) => Op::Create,
        ("GET", ["apps"]) => Op::List,
        ("POST", ["apps", "propose"]) => Op::Propose,
        ("GET", ["apps", _]) => Op::Get,
        ("DELETE", ["apps", _]) => Op::Delete,
        ("GET", ["apps", _, "deployments", _]) => Op::GetDeployment,
        _ => Op::Other,
    }
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .is_some_and(|t| t == token)
}

/// Auth, faults, request id, rate-limit headers, JSON errors, request counting and logging.
async fn v2_middleware(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let rid = Uuid::new_v4().to_string();
    let op = classify(req.method(), req.uri().path());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The log shows the path as requested (this layer sees it without the `/v2` prefix).
    let full_path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| path.clone(), |uri| uri.path().to_string());
    let query = req.uri().query().map(str::to_string);
    let headers: Vec<(String, String)> = if shared.cfg.request_log_limit > 0 {
        req.headers()
            .iter()
            .map(|(k, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), value)
            })
            .collect()
    } else {
        Vec::new()
    };
    let ok_auth = authorized(req.headers(), &shared.cfg.token);
    let now = Utc::now().timestamp();
    let (fault, (remaining, reset)) = {
        let mut st = shared.lock();
        let rate = st.count_rate(now);
        let fault = if ok_auth {
            st.faults.take_request_fault(op, &path)
        } else {
            None
        };
        (fault, rate)
    };
    let mut resp = if !ok_auth {
        error_response(401, "Unable to authenticate you", Some(&rid))
    } else if let Some(fault) = fault {
        match fault {
            RequestFault::RateLimit { retry_after_secs } => {
                let mut r = error_response(429, "API rate limit exceeded.", Some(&rid));
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                r
            }
            RequestFault::ServerError { status } => {
                error_response(status, "Unexpected server-side error", Some(&rid))
            }
            RequestFault::ClientError { status } => error_response(
                status,
                "The request was refused (injected by fake-do)",
                Some(&rid),
            ),
        }
    } else {
        req.extensions_mut().insert(RequestId(rid.clone()));
        next.run(req).await
    };
    resp = ensure_json_error(resp, Some(&rid)).await;
    let status = resp.status().as_u16();
    let h = resp.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(RATE_LIMIT_PER_HOUR));
    h.insert("ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("ratelimit-reset", HeaderValue::from(reset));
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-request-id", v);
    }
    {
        let mut st = shared.lock();
        *st.requests
            .entry(op.as_str().to_string())
            .or_default()
            .entry(status)
            .or_insert(0) += 1;
        let entry = RecordedRequest {
            op,
            method: method.to_string(),
            path: full_path,
            query,
            headers,
            status,
            request_id: rid.clone(),
        };
        st.log_request(shared.cfg.request_log_limit, entry);
    }
    tracing::debug!(%method, %path, op = op.as_str(), status, request_id = %rid, "request");
    resp
}

/// Turns any non-JSON error response (axum rejections, 405s) into the DO error shape.
async fn ensure_json_error(resp: Response, rid: Option<&str>) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    let mut out = error_response(status.as_u16(), message, rid);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

async fn v2_fallback(Extension(rid): Extension<RequestId>) -> Response {
    not_found(&rid)
}

async fn v2_method_not_allowed(Extension(rid): Extension<RequestId>) -> Response {
    error_response(405, "Method not allowed for this resource.", Some(&rid.0))
}

async fn root_fallback() -> Response {
    error_response(
        404,
        "The resource you were accessing could not be found.",
        None,
    )
}

fn not_found(rid: &RequestId) -> Response {
    error_response(
        404,
        "The resource you were accessing could not be found.",
        Some(&rid.0),
    )
}

async fn create_app(
    State(shared): State<Arc<Shared>>,
    Extension(rid): Extension<RequestId>,
    body: Bytes,
) -> Response {
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    shared.lock().create_bodies.push(match &parsed {
        Ok(v) => v.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    });
    let body = match parsed {
        Ok(v) => v,
        Err(e) => {
            return error_response(400, format!("invalid JSON request body: {e}"), Some(&rid.0));
        }
    };
    let valid = match validate::validate_create(&body) {
        Ok(v) => v,
        Err(msg) => return error_response(400, msg, Some(&rid.0)),
    };
    let mut spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let name = valid.spec.name.clone();
    let (app, answer_500) = {
        let mut st = shared.lock();
        // Duplicate name: the spec only says names are unique per account and does not
        // document the failure. The fake answers 409 `conflict`, the usual REST status for
        // a uniqueness clash. Either way (409 or some other 4xx) clients must not retry it.
        if st.apps.iter().any(|a| a.name == name) {
            return error_response(
                409,
                format!("app name {name:?} is already in use; app names must be unique"),
                Some(&rid.0),
            );
        }
        let run_env =
            secrets::seal_spec(&mut spec, &mut st.vault, valid.spec.first_worker.as_deref());
        let fail = st.faults.take_deployment_error();
        let running_while_deploying = if fail {
            None
        } else {
            st.faults.take_slow_rollout()
        };
        let now = Utc::now();
        let id = Uuid::new_v4().to_string();
        let log_file = shared
            .cfg
            .log_dir
            .as_ref()
            .map(|d| d.join(crate::app_log_file_name(&name, &id)));
        let record = AppRecord {
            id: id.clone(),
            name: name.clone(),
            spec,
            project_id: valid
                .project_id
                .clone()
                .unwrap_or_else(|| DEFAULT_PROJECT_ID.to_string()),
            region: valid.spec.region.clone().unwrap_or_else(|| "ams".into()),
            created_at: now,
            deployment: DeploymentRecord {
                id: Uuid::new_v4().to_string(),
                phase: crate::model::Phase::PendingDeploy,
                created_at: now,
                updated_at: now,
                fail,
                running_while_deploying,
            },
            first_worker: valid.spec.first_worker.clone(),
            run_env,
            deprecated_slugs: valid.spec.deprecated_slugs.clone(),
            worker_pid: None,
            restarts: 0,
            exits: vec![],
            log_file,
            deleting_until: None,
            deleting_reads_left: None,
            seeded: false,
        };
        let app = record.to_app();
        st.apps.push(record);
        st.total_created += 1;
        let task = lifecycle::spawn_app_task(&shared, id.clone());
        st.tasks.insert(id, task);
        (app, st.faults.take_create_then_500())
    };
    tracing::info!(app_id = %app.id, app = %name, answered_500 = answer_500, "app created");
    if answer_500 {
        return error_response(500, "Unexpected server-side error", Some(&rid.0));
    }
    json_ok(&AppResponse { app })
}

async fn propose(
    State(shared): State<Arc<Shared>>,
    Extension(rid): Extension<RequestId>,
    body: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(400, format!("invalid JSON request body: {e}"), Some(&rid.0));
        }
    };
    let Some(spec) = body.get("spec") else {
        return error_response(400, "missing required field \"spec\"", Some(&rid.0));
    };
    let valid = match validate::validate_spec(spec) {
        Ok(v) => v,
        Err(msg) => return error_response(400, msg, Some(&rid.0)),
    };
    let app_id = body.get("app_id").and_then(Value::as_str);
    // Propose never stores anything: secrets are sealed into a throwaway vault.
    let mut spec = spec.clone();
    secrets::seal_spec(&mut spec, &mut Default::default(), None);
    let st = shared.lock();
    let available = !st
        .apps
        .iter()
        .any(|a| a.name == valid.name && Some(a.id.as_str()) != app_id);
    json_ok(&json!({
        "app_name_available": available,
        "app_name_suggestion": if available { Value::Null } else { json!(format!("{}-2", valid.name)) },
        "app_is_static": false,
        "existing_static_apps": "0",
        "max_free_static_apps": "3",
        "spec": spec,
        "app_cost": 5,
    }))
}

async fn get_app(
    State(shared): State<Arc<Shared>>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> Response {
    let app = shared.lock().app_mut(&id).map(|a| {
        a.shown();
        a.to_app()
    });
    match app {
        Some(app) => json_ok(&AppResponse { app }),
        None => not_found(&rid),
    }
}

async fn get_deployment(
    State(shared): State<Arc<Shared>>,
    Extension(rid): Extension<RequestId>,
    Path((app_id, deployment_id)): Path<(String, String)>,
) -> Response {
    let dep = shared
        .lock()
        .app_mut(&app_id)
        .filter(|a| a.deployment.id == deployment_id)
        .map(|a| {
            a.shown();
            a.to_deployment()
        });
    match dep {
        Some(deployment) => json_ok(&DeploymentResponse { deployment }),
        None => not_found(&rid),
    }
}

async fn delete_app(
    State(shared): State<Arc<Shared>>,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> Response {
    let delay = shared.delete_delay();
    let reads = shared.delete_linger_reads();
    let task = {
        let mut st = shared.lock();
        let Some(pos) = st.apps.iter().position(|a| a.id == id) else {
            return not_found(&rid);
        };
        if delay.is_zero() && reads == 0 {
            st.apps.remove(pos);
            st.deleted_app_ids.push(id.clone());
        } else if !st.apps[pos].is_deleting() {
            // Accepted; it stays visible until the background teardown is over (a repeated
            // DELETE meanwhile is accepted again).
            let app = &mut st.apps[pos];
            app.deleting_until = (!delay.is_zero()).then(|| std::time::Instant::now() + delay);
            app.deleting_reads_left = (reads > 0).then_some(reads);
        }
        st.tasks.remove(&id)
    };
    if let Some(task) = task {
        // Answer only once the worker process is gone.
        lifecycle::stop_app_task(&shared, task).await;
    }
    tracing::info!(app_id = %id, "app deleted");
    json_ok(&DeleteResponse { id })
}

/// Parses `page`/`per_page` from a raw query string.
fn parse_paging(query: Option<&str>) -> Result<(u64, u64), String> {
    let (mut page, mut per_page) = (1u64, 20u64);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let parse = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{k} must be a positive integer, got {v:?}"))
        };
        match k {
            "page" => page = parse(v)?,
            "per_page" => per_page = parse(v)?,
            _ => {}
        }
    }
    if page < 1 {
        return Err("page must be >= 1".into());
    }
    if !(1..=200).contains(&per_page) {
        return Err(format!(
            "per_page must be between 1 and 200, got {per_page}"
        ));
    }
    Ok((page, per_page))
}

async fn list_apps(
    State(shared): State<Arc<Shared>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (page, per_page) = match parse_paging(query.as_deref()) {
        Ok(p) => p,
        Err(msg) => return error_response(400, msg, Some(&rid.0)),
    };
    let base = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_else(|| shared.base_url.clone());
    // A server capping pages serves fewer than asked; its links keep the requested per_page.
    let size = per_page.min(shared.cfg.max_per_page);
    let mut st = shared.lock();
    let total = st.apps.len() as u64;
    let last_page = total.div_ceil(size).max(1);
    let apps = st
        .apps
        .iter_mut()
        .skip((page - 1).saturating_mul(size) as usize)
        .take(size as usize)
        .map(|a| {
            a.shown();
            a.to_app()
        })
        .collect();
    drop(st);
    let url = |p: u64| format!("{base}/v2/apps?page={p}&per_page={per_page}");
    let pages = Pages {
        first: (page > 1).then(|| url(1)),
        prev: (page > 1).then(|| url((page - 1).min(last_page))),
        next: (page < last_page).then(|| url(page + 1)),
        last: (page < last_page).then(|| url(last_page)),
    };
    json_ok(&AppsResponse {
        apps,
        links: Links { pages },
        meta: Meta { total },
    })
}

async fn admin_state(State(shared): State<Arc<Shared>>) -> Response {
    json_ok(&shared.snapshot())
}

fn faults_body(shared: &Shared) -> Value {
    json!({
        "pending_faults": shared.lock().faults.pending(),
        "step_delay_ms": shared.step_delay().as_millis() as u64,
        "delete_delay_ms": shared.delete_delay().as_millis() as u64,
        "delete_linger_reads": shared.delete_linger_reads(),
    })
}

async fn admin_faults(State(shared): State<Arc<Shared>>) -> Response {
    json_ok(&faults_body(&shared))
}

async fn admin_inject(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error_response(400, format!("invalid fault: {e}"), None),
    };
    if let Err(msg) = fault.check() {
        return error_response(400, msg, None);
    }
    crate::apply_fault(&shared, fault);
    json_ok(&faults_body(&shared))
}

async fn admin_clear(State(shared): State<Arc<Shared>>) -> Response {
    shared.lock().faults.clear();
    json_ok(&faults_body(&shared))
}

/// `POST /_fake/apps/{id}/signal?signal=KILL`: signal the app's worker process group.
async fn admin_signal(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let name = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("signal="))
        .unwrap_or("KILL")
        .to_ascii_uppercase();
    let full = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    let Ok(signal) = full.parse::<nix::sys::signal::Signal>() else {
        return error_response(400, format!("unknown signal {full:?}"), None);
    };
    if lifecycle::signal_worker(&shared, &id, signal) {
        json_ok(&json!({"signaled": true, "signal": full}))
    } else {
        error_response(404, "no running worker for that app", None)
    }
}

/// `POST /_fake/apps`: seed apps that were not created through the API (see
/// [`crate::SeedApps`]) -> `{"ids": [...]}`.
async fn admin_seed(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let seed: crate::SeedApps = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error_response(400, format!("invalid seed: {e}"), None),
    };
    match crate::seed_apps(&shared, &seed) {
        Ok(ids) => json_ok(&json!({ "ids": ids })),
        Err(msg) => error_response(400, msg, None),
    }
}
