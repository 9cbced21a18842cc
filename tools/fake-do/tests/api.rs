//! HTTP-level tests of the fake's `/v2` API: auth, shapes, validation, pagination, secrets,
//! faults and the admin endpoints.

mod common;

use std::time::Duration;

use common::{Api, TOKEN, create_body, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tea_fake_do::{Fault, Op, REDACTED};
use tea_harness::wait_for;

fn assert_do_error(v: &Value, id: &str) {
    assert_eq!(v["id"], id, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["request_id"].as_str().is_some(), "{v}");
}

fn assert_rate_headers(h: &reqwest::header::HeaderMap) {
    for name in [
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "x-request-id",
    ] {
        assert!(h.get(name).is_some(), "missing header {name}");
    }
    let limit: u64 = h["ratelimit-limit"].to_str().unwrap().parse().unwrap();
    let remaining: u64 = h["ratelimit-remaining"].to_str().unwrap().parse().unwrap();
    assert!(remaining < limit);
}

#[tokio::test]
async fn auth_is_required() {
    let fake = start().await;
    let client = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong"), Some(TOKEN)] {
        let mut req = client.get(format!("{}/v2/apps", fake.base_url()));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_rate_headers(resp.headers());
        let v: Value = resp.json().await.unwrap();
        assert_do_error(&v, "unauthorized");
        assert_eq!(v["message"], "Unable to authenticate you");
    }
    // Unauthenticated requests never reach handlers (no create recorded).
    let resp = client
        .post(format!("{}/v2/apps", fake.base_url()))
        .json(&create_body("no-auth"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(fake.snapshot().total_created, 0);
    assert_eq!(fake.snapshot().request_count("list", 401), 3);
}

#[tokio::test]
async fn create_get_list_delete_round_trip() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (s, h, v) = api
        .call(
            Method::POST,
            "/v2/apps",
            Some(&create_body("external-app-1")),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_rate_headers(&h);
    let app = &v["app"];
    let app_id = app["id"].as_str().unwrap().to_string();
    assert_eq!(app["spec"]["name"], "external-app-1");
    assert_eq!(app["spec"]["workers"][0]["image"]["repository"], "external");
    assert_eq!(app["region"]["slug"], "ams");
    assert!(app["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(app.get("active_deployment").is_none());
    let pending = &app["pending_deployment"];
    assert_eq!(pending["phase"], "PENDING_DEPLOY");
    assert_eq!(pending["progress"]["pending_steps"], 4);
    assert_eq!(pending["progress"]["total_steps"], 4);
    let dep_id = pending["id"].as_str().unwrap().to_string();

    let (s, v) = api.get(&format!("/v2/apps/{app_id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["app"]["id"], app_id.as_str());

    // DEPLOYING is observable on the way (step delay 100 ms).
    let seen_deploying = wait_for(
        "a deployment in progress or done",
        Duration::from_secs(5),
        || async {
            let (_, v) = api.get(&format!("/v2/apps/{app_id}")).await;
            let p = v["app"]["in_progress_deployment"]["phase"]
                .as_str()
                .map(str::to_string);
            match p.as_deref() {
                Some("DEPLOYING") => Some(true),
                _ if v["app"]["active_deployment"].is_object() => Some(false),
                _ => None,
            }
        },
    )
    .await;
    let _ = seen_deploying;
    let dep = api.wait_terminal(&app_id, &dep_id).await;
    assert_eq!(dep["phase"], "ACTIVE");
    assert_eq!(dep["progress"]["success_steps"], 4);
    assert_eq!(dep["workers"][0]["name"], "external-worker");
    let (_, v) = api.get(&format!("/v2/apps/{app_id}")).await;
    assert_eq!(v["app"]["active_deployment"]["id"], dep_id.as_str());
    assert!(v["app"].get("pending_deployment").is_none());
    assert!(v["app"].get("in_progress_deployment").is_none());

    let (s, v) = api.get("/v2/apps").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["meta"]["total"], 1);
    assert_eq!(v["apps"][0]["id"], app_id.as_str());
    assert_eq!(v["links"]["pages"], json!({}));

    let (s, v) = api.delete(&app_id).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"id": app_id}));
    let (s, v) = api.get(&format!("/v2/apps/{app_id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_do_error(&v, "not_found");
    let (s, _) = api
        .get(&format!("/v2/apps/{app_id}/deployments/{dep_id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = api.delete(&app_id).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_do_error(&v, "not_found");

    let snap = fake.snapshot();
    assert_eq!(snap.total_created, 1);
    assert!(snap.apps.is_empty());
    assert_eq!(snap.deleted_app_ids, vec![app_id]);
    assert_eq!(snap.request_count("create", 200), 1);
    assert_eq!(snap.request_count("delete", 404), 1);
    assert_eq!(snap.request_count("get_deployment", 404), 1);
}

#[tokio::test]
async fn validation_errors_use_the_do_error_shape() {
    let fake = start().await;
    let api = Api::new(&fake);
    let mut bad_name = create_body("x");
    bad_name["spec"]["name"] = json!("Bad_Name");
    let mut docr_registry = create_body("docr-registry");
    docr_registry["spec"]["workers"][0]["image"]["registry"] = json!("my-registry");
    let mut bad_env = create_body("bad-env");
    bad_env["spec"]["workers"][0]["envs"][0]["key"] = json!("1-BAD");
    let mut bad_slug = create_body("bad-slug");
    bad_slug["spec"]["workers"][0]["instance_size_slug"] = json!("apps-x-huge");
    let mut bad_comp = create_body("bad-comp");
    bad_comp["spec"]["workers"][0]["name"] = json!("w");
    let mut zero = create_body("zero-count");
    zero["spec"]["workers"][0]["instance_count"] = json!(0);
    let mut both = create_body("tag-and-digest");
    both["spec"]["workers"][0]["image"]["digest"] = json!("sha256:abc");
    let mut region = create_body("bad-region");
    region["spec"]["region"] = json!("mars");
    let cases = [
        (bad_name, "name"),
        (docr_registry, "registry"),
        (bad_env, "key"),
        (bad_slug, "instance_size_slug"),
        (bad_comp, "workers[0].name"),
        (zero, "instance_count"),
        (both, "digest"),
        (region, "region"),
        (json!({}), "spec"),
        (json!({"spec": {"region": "ams"}}), "name"),
        (json!([1, 2]), "object"),
    ];
    for (body, needle) in cases {
        let (s, v) = api.create(&body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {v}");
        assert_do_error(&v, "bad_request");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{needle} not in {v}"
        );
    }
    // Malformed JSON: DO error shape, not axum's plain-text rejection.
    let resp = api
        .client
        .post(format!("{}/v2/apps", api.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_do_error(&resp.json().await.unwrap(), "bad_request");
    // Wrong method and unknown path: JSON errors too.
    let (s, h, v) = api.call(Method::PUT, "/v2/apps", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_rate_headers(&h);
    assert_do_error(&v, "method_not_allowed");
    let (s, h, v) = api.call(Method::GET, "/v2/droplets", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_rate_headers(&h);
    assert_do_error(&v, "not_found");

    let snap = fake.snapshot();
    assert_eq!(snap.total_created, 0);
    assert_eq!(snap.create_bodies.len(), 12);
    assert_eq!(snap.request_count("create", 400), 12);
}

#[tokio::test]
async fn deprecated_slug_is_accepted_and_recorded() {
    let fake = start().await;
    let api = Api::new(&fake);
    let mut body = create_body("legacy-slug");
    body["spec"]["workers"][0]["instance_size_slug"] = json!("basic-xxs");
    let (s, v) = api.create(&body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let snap = fake.snapshot();
    assert_eq!(snap.apps[0].deprecated_slugs, vec!["basic-xxs".to_string()]);
}

#[tokio::test]
async fn duplicate_name_is_a_conflict_until_deleted() {
    let fake = start().await;
    let api = Api::new(&fake);
    let (s, v) = api.create(&create_body("dup-app")).await;
    assert_eq!(s, StatusCode::OK);
    let id = v["app"]["id"].as_str().unwrap().to_string();
    let (s, v) = api.create(&create_body("dup-app")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_do_error(&v, "conflict");
    assert_eq!(fake.snapshot().total_created, 1);
    api.delete(&id).await;
    let (s, _) = api.create(&create_body("dup-app")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fake.snapshot().total_created, 2);
}

#[tokio::test]
async fn list_paginates_with_absolute_next_links() {
    let fake = start().await;
    let api = Api::new(&fake);
    let mut ids = vec![];
    for i in 0..5 {
        let (s, v) = api.create(&create_body(&format!("page-app-{i}"))).await;
        assert_eq!(s, StatusCode::OK);
        ids.push(v["app"]["id"].as_str().unwrap().to_string());
    }
    let pages = api
        .list_pages(&format!("{}/v2/apps?per_page=2", api.base))
        .await;
    assert_eq!(pages.len(), 3);
    let mut seen = vec![];
    for v in &pages {
        assert_eq!(v["meta"]["total"], 5);
        for a in v["apps"].as_array().unwrap() {
            seen.push(a["id"].as_str().unwrap().to_string());
        }
        if let Some(next) = v["links"]["pages"]["next"].as_str() {
            assert!(next.starts_with("http://"), "{next}");
        }
    }
    assert!(pages[2]["links"]["pages"]["prev"].is_string());
    assert_eq!(seen, ids);
    let (_, v) = api.get("/v2/apps").await;
    assert_eq!(v["apps"].as_array().unwrap().len(), 5);
    let (_, v) = api.get("/v2/apps?page=9&per_page=2").await;
    assert!(v["apps"].as_array().unwrap().is_empty());
    for bad in ["per_page=0", "per_page=201", "page=0", "page=x"] {
        let (s, v) = api.get(&format!("/v2/apps?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_do_error(&v, "bad_request");
    }
}

#[tokio::test]
async fn secrets_are_never_echoed_in_plain_text() {
    let fake = start().await;
    let api = Api::new(&fake);
    let plain = "plain-secret-value-42";
    let (s, v) = api.create(&create_body("secret-app")).await;
    assert_eq!(s, StatusCode::OK);
    let app_id = v["app"]["id"].as_str().unwrap().to_string();
    let dep_id = v["app"]["pending_deployment"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let envs = &v["app"]["spec"]["workers"][0]["envs"];
    assert_eq!(envs[0]["value"], "secret-app", "GENERAL returned as sent");
    let enc = envs[1]["value"].as_str().unwrap().to_string();
    assert!(enc.starts_with("EV[1:") && enc.ends_with(']'), "{enc}");
    assert_eq!(envs[1]["type"], "SECRET");

    let mut texts = vec![v.to_string()];
    for path in [
        format!("/v2/apps/{app_id}"),
        "/v2/apps".to_string(),
        format!("/v2/apps/{app_id}/deployments/{dep_id}"),
    ] {
        let (s, v) = api.get(&path).await;
        assert_eq!(s, StatusCode::OK);
        texts.push(v.to_string());
    }
    let state = reqwest::get(format!("{}/_fake/state", api.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    texts.push(state);
    for t in &texts {
        assert!(!t.contains(plain), "plain secret leaked: {t}");
    }
    // The encrypted form is stable across reads.
    let (_, v) = api.get(&format!("/v2/apps/{app_id}")).await;
    assert_eq!(
        v["app"]["spec"]["workers"][0]["envs"][1]["value"],
        enc.as_str()
    );

    // Recorded bodies: type and registry as sent, value redacted; raw in-process.
    let snap = fake.snapshot();
    let env = &snap.create_bodies[0]["spec"]["workers"][0]["envs"][1];
    assert_eq!(env["key"], "TEMPORAL_API_KEY");
    assert_eq!(env["type"], "SECRET");
    assert_eq!(env["value"], REDACTED);
    assert!(
        snap.create_bodies[0]["spec"]["workers"][0]["image"]
            .get("registry")
            .is_none()
    );
    assert_eq!(
        fake.raw_create_bodies()[0]["spec"]["workers"][0]["envs"][1]["value"],
        plain
    );
}

#[tokio::test]
async fn rate_limit_fault_scoped_to_create() {
    let fake = start().await;
    let api = Api::new(&fake);
    fake.inject(Fault::RateLimit {
        count: 2,
        retry_after_secs: 7,
        op: Op::Create,
    });
    let (s, _) = api.get("/v2/apps").await;
    assert_eq!(s, StatusCode::OK, "list is not affected");
    for _ in 0..2 {
        let (s, h, v) = api
            .call(Method::POST, "/v2/apps", Some(&create_body("limited")))
            .await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h["retry-after"], "7");
        assert_rate_headers(&h);
        assert_do_error(&v, "too_many_requests");
    }
    let (s, _) = api.create(&create_body("limited")).await;
    assert_eq!(s, StatusCode::OK);
    let snap = fake.snapshot();
    assert_eq!(snap.request_count("create", 429), 2);
    assert_eq!(snap.total_created, 1);
    assert!(snap.pending_faults.is_empty());
}

#[tokio::test]
async fn server_error_fault_via_admin_endpoint() {
    let fake = start().await;
    let api = Api::new(&fake);
    let resp = api
        .client
        .post(format!("{}/_fake/faults", api.base))
        .json(&json!({"kind": "ServerError", "count": 2, "status": 503}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["pending_faults"][0]["count"], 2);
    let (s, v) = api.get("/v2/apps").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_do_error(&v, "server_error");
    let (s, _) = api.create(&create_body("after-503")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        fake.snapshot().total_created,
        0,
        "a 5xx fault changes nothing"
    );
    let (s, _) = api.get("/v2/apps").await;
    assert_eq!(s, StatusCode::OK);
    // Invalid faults are rejected.
    let resp = api
        .client
        .post(format!("{}/_fake/faults", api.base))
        .json(&json!({"kind": "ServerError", "count": 1, "status": 404}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = api
        .client
        .post(format!("{}/_fake/faults", api.base))
        .body("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Clearing.
    fake.inject(Fault::ServerError {
        count: 5,
        status: 500,
        op: Op::Any,
    });
    let resp = api
        .client
        .delete(format!("{}/_fake/faults", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, _) = api.get("/v2/apps").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn create_stores_then_500() {
    let fake = start().await;
    let api = Api::new(&fake);
    fake.inject(Fault::CreateStoresThen500 { count: 1 });
    let (s, v) = api.create(&create_body("stored-anyway")).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_do_error(&v, "server_error");
    // The app exists and deploys; a retry of the same create conflicts.
    let snap = fake.snapshot();
    assert_eq!(snap.total_created, 1);
    let (_, v) = api.get("/v2/apps").await;
    assert_eq!(v["apps"][0]["spec"]["name"], "stored-anyway");
    let (s, _) = api.create(&create_body("stored-anyway")).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let app_id = snap.apps[0].id.clone();
    let dep_id = snap.apps[0].deployment_id.clone();
    assert_eq!(api.wait_terminal(&app_id, &dep_id).await["phase"], "ACTIVE");
}

#[tokio::test]
async fn deployment_error_fault_and_deploy_delay() {
    let fake = start().await;
    let api = Api::new(&fake);
    // DeployDelay over HTTP.
    let resp = api
        .client
        .post(format!("{}/_fake/faults", api.base))
        .json(&json!({"kind": "deploy_delay", "step_delay_ms": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fake.snapshot().step_delay_ms, 30);
    fake.inject(Fault::DeploymentError { count: 1 });
    let (s, v) = api.create(&create_body("doomed-app")).await;
    assert_eq!(s, StatusCode::OK);
    let app_id = v["app"]["id"].as_str().unwrap().to_string();
    let dep_id = v["app"]["pending_deployment"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dep = api.wait_terminal(&app_id, &dep_id).await;
    assert_eq!(dep["phase"], "ERROR");
    assert_eq!(dep["progress"]["error_steps"], 1);
    let step = &dep["progress"]["steps"][0];
    assert_eq!(step["status"], "ERROR");
    assert!(step["reason"]["code"].is_string() && step["reason"]["message"].is_string());
    let (_, v) = api.get(&format!("/v2/apps/{app_id}")).await;
    assert!(v["app"].get("active_deployment").is_none(), "{v}");
    // The next app is fine.
    let (_, v) = api.create(&create_body("fine-app")).await;
    let dep = api
        .wait_terminal(
            v["app"]["id"].as_str().unwrap(),
            v["app"]["pending_deployment"]["id"].as_str().unwrap(),
        )
        .await;
    assert_eq!(dep["phase"], "ACTIVE");
}

#[tokio::test]
async fn propose_validates_without_storing() {
    let fake = start().await;
    let api = Api::new(&fake);
    let body = create_body("proposed-app");
    let (s, _, v) = api
        .call(Method::POST, "/v2/apps/propose", Some(&body))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["app_name_available"], true);
    assert!(!v.to_string().contains("plain-secret-value-42"));
    assert_eq!(fake.snapshot().total_created, 0);
    api.create(&body).await;
    let (_, _, v) = api
        .call(Method::POST, "/v2/apps/propose", Some(&body))
        .await;
    assert_eq!(v["app_name_available"], false);
}

#[tokio::test]
async fn delete_delay_keeps_a_deleted_app_visible_then_404() {
    let fake = start().await;
    let api = Api::new(&fake);
    // Long enough that the reads below surely come before the app is gone.
    fake.inject(Fault::DeleteDelay { delay_ms: 5_000 });
    let (_, _, v) = api
        .call(Method::POST, "/v2/apps", Some(&create_body("slow-delete")))
        .await;
    let id = v["app"]["id"].as_str().unwrap().to_string();
    let path = format!("/v2/apps/{id}");
    let (s, _, _) = api.call(Method::DELETE, &path, None).await;
    assert_eq!(s, StatusCode::OK);
    // Still there for get, list and a repeated delete; the name is still taken.
    let (s, _, _) = api.call(Method::GET, &path, None).await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, list) = api.call(Method::GET, "/v2/apps", None).await;
    assert_eq!(list["meta"]["total"], 1);
    let (s, _, _) = api.call(Method::DELETE, &path, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = api
        .call(Method::POST, "/v2/apps", Some(&create_body("slow-delete")))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let snap = fake.snapshot();
    assert!(snap.apps[0].deleting, "{snap:?}");
    assert_eq!(snap.delete_delay_ms, 5_000);
    assert!(snap.deleted_app_ids.is_empty());
    // Then gone.
    wait_for(
        "the deleted app to read as 404",
        Duration::from_secs(30),
        || async {
            (api.call(Method::GET, &path, None).await.0 == StatusCode::NOT_FOUND).then_some(())
        },
    )
    .await;
    let snap = fake.snapshot();
    assert!(snap.apps.is_empty());
    assert_eq!(snap.deleted_app_ids, [id]);
}

#[tokio::test]
async fn seeded_apps_are_listed_and_deletable_like_any_other() {
    let fake = start().await;
    let api = Api::new(&fake);
    let ids = fake
        .seed(&tea_fake_do::SeedApps::one(
            "ext-api",
            &[("TEA_COMPUTE_OWNER", "someone-else")],
        ))
        .unwrap();
    assert_eq!(ids.len(), 1);
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/_fake/apps", fake.base_url()))
        .json(&json!({"count": 250, "name_prefix": "foreign"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ids"].as_array().unwrap().len(), 250);
    let (_, _, list) = api.call(Method::GET, "/v2/apps?per_page=200", None).await;
    assert_eq!(list["meta"]["total"], 251);
    let first = &list["apps"][0];
    assert_eq!(first["spec"]["name"], "ext-api");
    assert_eq!(
        first["spec"]["envs"],
        json!([{"key": "TEA_COMPUTE_OWNER", "value": "someone-else", "scope": "RUN_TIME", "type": "GENERAL"}])
    );
    assert_eq!(first["active_deployment"]["phase"], "ACTIVE");
    // Seeds are not creates, and a duplicate name is refused.
    let snap = fake.snapshot();
    assert_eq!(snap.total_created, 0);
    assert!(snap.apps.iter().all(|a| a.seeded));
    assert!(
        fake.seed(&tea_fake_do::SeedApps::one("ext-api", &[]))
            .is_err()
    );
    let (s, _, _) = api
        .call(Method::DELETE, &format!("/v2/apps/{}", ids[0]), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fake.snapshot().apps.len(), 250);
}

#[tokio::test]
async fn seeded_apps_can_stand_in_any_deployment_phase() {
    let fake = start().await;
    let api = Api::new(&fake);
    let ids = fake
        .seed(&tea_fake_do::SeedApps::many(2, "stuck").with_phase(tea_fake_do::Phase::Deploying))
        .unwrap();
    let (s, v) = api.get(&format!("/v2/apps/{}", ids[0])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let deployment = &v["app"]["in_progress_deployment"];
    assert_eq!(deployment["phase"], "DEPLOYING", "{v}");
    assert!(v["app"].get("active_deployment").is_none(), "{v}");
    // It stays there (seeded apps have no lifecycle) while an app created after it goes on.
    let dep_id = deployment["id"].as_str().unwrap();
    let (s, created) = api.create(&create_body("goes-on")).await;
    assert_eq!(s, StatusCode::OK, "{created}");
    api.wait_terminal(
        created["app"]["id"].as_str().unwrap(),
        created["app"]["pending_deployment"]["id"].as_str().unwrap(),
    )
    .await;
    let (_, v) = api
        .get(&format!("/v2/apps/{}/deployments/{dep_id}", ids[0]))
        .await;
    assert_eq!(v["deployment"]["phase"], "DEPLOYING", "{v}");
    let snap = fake.snapshot();
    let seeded: Vec<_> = snap.apps.iter().filter(|a| a.seeded).collect();
    assert_eq!(seeded.len(), 2);
    assert!(
        seeded
            .iter()
            .all(|a| a.phase == tea_fake_do::Phase::Deploying),
        "{snap:?}"
    );
    // The admin endpoint takes the phase too.
    let resp = reqwest::Client::new()
        .post(format!("{}/_fake/apps", fake.base_url()))
        .json(&json!({"name": "broken-app", "phase": "ERROR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let snap = fake.snapshot();
    let broken = snap.app_by_name("broken-app").unwrap();
    assert_eq!(broken.phase, tea_fake_do::Phase::Error);
    let (_, v) = api
        .get(&format!(
            "/v2/apps/{}/deployments/{}",
            broken.id, broken.deployment_id
        ))
        .await;
    assert_eq!(
        v["deployment"]["progress"]["steps"][0]["status"], "ERROR",
        "{v}"
    );
}

#[tokio::test]
async fn a_page_cap_serves_fewer_apps_than_asked_with_links_that_keep_per_page() {
    let fake = common::start_with(|cfg| cfg.max_per_page = 2).await;
    let api = Api::new(&fake);
    fake.seed(&tea_fake_do::SeedApps::many(5, "capped"))
        .unwrap();
    let pages = api
        .list_pages(&format!("{}/v2/apps?per_page=200", api.base))
        .await;
    let mut sizes = vec![];
    for v in &pages {
        assert_eq!(v["meta"]["total"], 5);
        sizes.push(v["apps"].as_array().unwrap().len());
        if let Some(next) = v["links"]["pages"]["next"].as_str() {
            assert!(next.ends_with("&per_page=200"), "{next}");
        }
    }
    assert_eq!(sizes, [2, 2, 1]);
    let mut cfg = common::config();
    cfg.max_per_page = 0;
    assert!(tea_fake_do::FakeDo::start(cfg).await.is_err());
}

#[tokio::test]
async fn delete_linger_shows_a_deleted_app_for_exactly_that_many_reads() {
    let fake = start().await;
    let api = Api::new(&fake);
    let ids = fake
        .seed(&tea_fake_do::SeedApps::one("lingering", &[]))
        .unwrap();
    let path = format!("/v2/apps/{}", ids[0]);
    let resp = reqwest::Client::new()
        .post(format!("{}/_fake/faults", fake.base_url()))
        .json(&json!({"kind": "DeleteLinger", "reads": 2}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["delete_linger_reads"], 2, "{body}");
    assert_eq!(api.delete(&ids[0]).await.0, StatusCode::OK);
    // A list page holding it and a get of it use up the two reads; then it is gone.
    let (_, list) = api.get("/v2/apps").await;
    assert_eq!(list["meta"]["total"], 1);
    let snap = fake.snapshot();
    assert!(snap.apps[0].deleting, "{snap:?}");
    assert_eq!(snap.delete_linger_reads, 2);
    assert_eq!(api.get(&path).await.0, StatusCode::OK);
    assert_eq!(api.get(&path).await.0, StatusCode::NOT_FOUND);
    let snap = fake.snapshot();
    assert!(snap.apps.is_empty());
    assert_eq!(snap.deleted_app_ids, ids);
    assert_eq!(snap.requests_for("get"), 2);
    assert_eq!(snap.request_count("get", 404), 1);
}

#[tokio::test]
async fn the_request_log_keeps_headers_query_status_and_request_id() {
    let fake = common::start_with(|cfg| cfg.request_log_limit = 2).await;
    let api = Api::new(&fake);
    api.get("/v2/apps").await;
    let (_, headers, _) = api
        .call(Method::GET, "/v2/apps?page=1&per_page=7", None)
        .await;
    reqwest::Client::new()
        .delete(format!("{}/v2/apps/nope", api.base))
        .header("authorization", "Bearer wrong")
        .header("user-agent", "probe/1")
        .send()
        .await
        .unwrap();
    let log = fake.request_log();
    assert_eq!(log.len(), 2, "{log:?}");
    let (list, delete) = (&log[0], &log[1]);
    assert_eq!(list.op, Op::List);
    assert_eq!(
        (list.method.as_str(), list.path.as_str()),
        ("GET", "/v2/apps")
    );
    assert_eq!(list.query_param("per_page"), Some("7"));
    assert_eq!(list.status, 200);
    assert_eq!(
        Some(list.request_id.as_str()),
        headers["x-request-id"].to_str().ok()
    );
    assert_eq!(
        list.header("Authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!((delete.op, delete.status), (Op::Delete, 401));
    assert_eq!(delete.header("user-agent"), Some("probe/1"));
    // Debug output never shows the token.
    assert!(!format!("{log:?}").contains(TOKEN));
}
