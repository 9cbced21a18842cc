//! Shared helpers of the fake-do integration tests: starting a fake, a reference create
//! body and HTTP helpers. Waiting with deadlines, scratch directories and process liveness
//! are the harness's (`tea_harness`).

#![allow(dead_code)]

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tea_fake_do::{FakeDo, FakeDoConfig};
use tea_harness::wait_for;

pub const TOKEN: &str = "dop_v1_test_token";

pub fn config() -> FakeDoConfig {
    let mut cfg = FakeDoConfig::new(TOKEN);
    cfg.step_delay = Duration::from_millis(100);
    cfg.kill_grace = Duration::from_secs(2);
    cfg.restart_delay = Duration::from_millis(100);
    cfg
}

pub async fn start() -> FakeDo {
    start_with(|_| {}).await
}

/// A fake with [`config`] changed by `adjust`.
pub async fn start_with(adjust: impl FnOnce(&mut FakeDoConfig)) -> FakeDo {
    let mut cfg = config();
    adjust(&mut cfg);
    FakeDo::start(cfg).await.expect("fake starts")
}

/// The reference create body (doc example 1) for app `name`.
pub fn create_body(name: &str) -> Value {
    json!({
        "spec": {
            "name": name,
            "region": "ams",
            "workers": [{
                "name": "external-worker",
                "instance_count": 1,
                "instance_size_slug": "apps-s-1vcpu-0.5gb",
                "image": {"registry_type": "DOCR", "repository": "external", "tag": "latest"},
                "envs": [
                    {"key": "EXTERNAL_TASK_QUEUE", "value": name, "scope": "RUN_TIME", "type": "GENERAL"},
                    {"key": "TEMPORAL_API_KEY", "value": "plain-secret-value-42", "scope": "RUN_TIME", "type": "SECRET"}
                ]
            }]
        }
    })
}

pub struct Api {
    pub base: String,
    pub client: Client,
}

impl Api {
    pub fn new(fake: &FakeDo) -> Self {
        Api {
            base: fake.base_url(),
            client: Client::new(),
        }
    }

    /// Authenticated request; returns status, headers and JSON body (Null if not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body read");
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// Lists apps from the absolute URL `first`, following `links.pages.next` to the last page;
    /// returns each page's JSON body in order.
    pub async fn list_pages(&self, first: &str) -> Vec<Value> {
        let mut pages = vec![];
        let mut url = first.to_string();
        loop {
            let resp = self
                .client
                .get(&url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("request sent");
            assert_eq!(resp.status(), StatusCode::OK, "{url}");
            let page: Value = resp.json().await.expect("a JSON page");
            let next = page["links"]["pages"]["next"].as_str().map(str::to_string);
            pages.push(page);
            match next {
                Some(next) => url = next,
                None => return pages,
            }
        }
    }

    pub async fn create(&self, body: &Value) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::POST, "/v2/apps", Some(body)).await;
        (s, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::GET, path, None).await;
        (s, v)
    }

    pub async fn delete(&self, id: &str) -> (StatusCode, Value) {
        let (s, _, v) = self
            .call(Method::DELETE, &format!("/v2/apps/{id}"), None)
            .await;
        (s, v)
    }

    /// Polls the deployment until its phase is terminal; returns the deployment JSON.
    pub async fn wait_terminal(&self, app_id: &str, dep_id: &str) -> Value {
        let path = format!("/v2/apps/{app_id}/deployments/{dep_id}");
        wait_for(
            "a terminal deployment phase",
            Duration::from_secs(10),
            || async {
                let (s, v) = self.get(&path).await;
                assert_eq!(s, StatusCode::OK, "{v}");
                let phase = v["deployment"]["phase"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                ["ACTIVE", "ERROR", "CANCELED", "SUPERSEDED"]
                    .contains(&phase.as_str())
                    .then(|| v["deployment"].clone())
            },
        )
        .await
    }
}
