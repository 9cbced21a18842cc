//! Wire types of the App Platform API (the subset this provider uses) and the pure mappings
//! between them and the provider types: the create body and the deployment-phase mapping.
//!
//! Response types are lenient: every field is optional and unknown fields are ignored, because
//! the API marks almost nothing as required.

use serde::{Deserialize, Serialize};

use super::OWNER_ENV;
use crate::{ComputeSpec, Readiness};

// ----- request -----

/// Body of `POST /v2/apps`.
#[derive(Debug, Serialize)]
pub(crate) struct CreateAppRequest<'a> {
    pub spec: AppSpecRequest<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AppSpecRequest<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<&'a str>,
    /// App-level variables: the ownership mark ([`OWNER_ENV`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub envs: Vec<EnvRequest<'a>>,
    pub workers: Vec<WorkerSpecRequest<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct WorkerSpecRequest<'a> {
    pub name: &'a str,
    pub instance_count: u32,
    pub instance_size_slug: &'a str,
    pub image: ImageSourceRequest<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub envs: Vec<EnvRequest<'a>>,
}

/// `registry` is deliberately absent: the spec says to leave it empty for `DOCR`.
#[derive(Debug, Serialize)]
pub(crate) struct ImageSourceRequest<'a> {
    pub registry_type: &'static str,
    pub repository: &'a str,
    pub tag: &'a str,
}

/// `Debug` shows the key and type only, never the value.
#[derive(Serialize)]
pub(crate) struct EnvRequest<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub scope: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl std::fmt::Debug for EnvRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvRequest")
            .field("key", &self.key)
            .field("type", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Settings from the provider config that shape the create body.
pub(crate) struct WorkerSettings<'a> {
    /// The owner mark, stored as the app-level `GENERAL` variable [`OWNER_ENV`].
    pub owner: &'a str,
    pub component_name: &'a str,
    pub instance_size_slug: &'a str,
    pub region: Option<&'a str>,
}

/// The create body for `spec`: one DOCR-image worker, every variable `RUN_TIME`, and the
/// owner mark as an app-level `GENERAL` variable (returned as sent by get and list).
pub(crate) fn create_request<'a>(
    spec: &'a ComputeSpec,
    settings: &WorkerSettings<'a>,
) -> CreateAppRequest<'a> {
    let envs = spec
        .env
        .iter()
        .map(|e| EnvRequest {
            key: &e.key,
            value: &e.value,
            scope: "RUN_TIME",
            kind: if e.secret { "SECRET" } else { "GENERAL" },
        })
        .collect();
    CreateAppRequest {
        spec: AppSpecRequest {
            name: &spec.name,
            region: settings.region,
            envs: vec![EnvRequest {
                key: OWNER_ENV,
                value: settings.owner,
                scope: "RUN_TIME",
                kind: "GENERAL",
            }],
            workers: vec![WorkerSpecRequest {
                name: settings.component_name,
                instance_count: 1,
                instance_size_slug: settings.instance_size_slug,
                image: ImageSourceRequest {
                    registry_type: "DOCR",
                    repository: &spec.image.repository,
                    tag: &spec.image.tag,
                },
                envs,
            }],
        },
    }
}

// ----- responses -----

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AppEnvelope {
    pub app: Option<App>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeploymentEnvelope {
    pub deployment: Option<Deployment>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AppList {
    #[serde(default)]
    pub apps: Vec<App>,
    pub links: Option<Links>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Links {
    pub pages: Option<PageLinks>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageLinks {
    pub next: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct App {
    pub id: Option<String>,
    pub spec: Option<AppSpec>,
    pub created_at: Option<String>,
    pub active_deployment: Option<Deployment>,
    pub in_progress_deployment: Option<Deployment>,
    pub pending_deployment: Option<Deployment>,
}

impl App {
    pub fn name(&self) -> Option<&str> {
        self.spec.as_ref().and_then(|s| s.name.as_deref())
    }

    /// The owner mark: the value of the app-level `GENERAL` variable [`OWNER_ENV`], if any.
    /// A `SECRET` one does not count (its value is returned encrypted).
    pub fn owner_mark(&self) -> Option<&str> {
        self.spec
            .as_ref()?
            .envs
            .iter()
            .find(|e| e.key.as_deref() == Some(OWNER_ENV))
            .filter(|e| {
                e.kind
                    .as_deref()
                    .is_none_or(|k| k.eq_ignore_ascii_case("GENERAL"))
            })
            .and_then(|e| e.value.as_deref())
    }

    /// The deployment to watch: pending, else in progress, else active.
    pub fn current_deployment(&self) -> Option<&Deployment> {
        [
            &self.pending_deployment,
            &self.in_progress_deployment,
            &self.active_deployment,
        ]
        .into_iter()
        .flatten()
        .find(|d| d.id.as_deref().is_some_and(|id| !id.is_empty()))
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct AppSpec {
    pub name: Option<String>,
    /// App-level variables (where the owner mark lives).
    #[serde(default)]
    pub envs: Vec<AppEnv>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct AppEnv {
    pub key: Option<String>,
    pub value: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Deployment {
    pub id: Option<String>,
    pub phase: Option<String>,
    pub progress: Option<Progress>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Progress {
    pub total_steps: Option<i64>,
    pub success_steps: Option<i64>,
    pub error_steps: Option<i64>,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub summary_steps: Vec<Step>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Step {
    pub name: Option<String>,
    pub status: Option<String>,
    pub component_name: Option<String>,
    pub reason: Option<StepReason>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct StepReason {
    pub code: Option<String>,
    pub message: Option<String>,
}

/// Error body: `{"id", "message", "request_id"}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ApiErrorBody {
    pub id: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
}

// ----- phase mapping -----

/// Maps one deployment observation onto [`Readiness`].
pub(crate) fn readiness_of(deployment: &Deployment) -> Readiness {
    let phase = deployment
        .phase
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("UNKNOWN")
        .to_ascii_uppercase();
    match phase.as_str() {
        "ACTIVE" => Readiness::Ready { phase },
        "ERROR" | "CANCELED" | "SUPERSEDED" => {
            let reason = failure_reason(deployment).unwrap_or_else(|| {
                let errors = deployment
                    .progress
                    .as_ref()
                    .and_then(|p| p.error_steps)
                    .filter(|n| *n > 0)
                    .map(|n| format!(" ({n} failed steps)"))
                    .unwrap_or_default();
                format!("deployment ended in phase {phase}{errors}")
            });
            Readiness::Failed { phase, reason }
        }
        _ => Readiness::Pending {
            detail: progress_detail(deployment),
            phase,
        },
    }
}

fn progress_detail(deployment: &Deployment) -> Option<String> {
    let progress = deployment.progress.as_ref()?;
    let total = progress.total_steps.filter(|t| *t > 0)?;
    let done = progress.success_steps.unwrap_or(0);
    Some(format!("{done}/{total} steps"))
}

/// The messages of failed steps (or of any step with a reason), joined; `None` when there are none.
fn failure_reason(deployment: &Deployment) -> Option<String> {
    let progress = deployment.progress.as_ref()?;
    let mut failed = Vec::new();
    let mut other = Vec::new();
    for step in progress.steps.iter().chain(&progress.summary_steps) {
        collect_reasons(step, &mut failed, &mut other);
    }
    let mut picked = if failed.is_empty() { other } else { failed };
    picked.dedup();
    (!picked.is_empty()).then(|| picked.join("; "))
}

fn collect_reasons(step: &Step, failed: &mut Vec<String>, other: &mut Vec<String>) {
    let is_error = step
        .status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("ERROR"));
    let message = step.reason.as_ref().and_then(|r| {
        r.message
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .or(r.code.as_deref().filter(|c| !c.trim().is_empty()))
    });
    let label = step
        .component_name
        .as_deref()
        .or(step.name.as_deref())
        .unwrap_or("step");
    match (message, is_error) {
        (Some(m), true) => failed.push(format!("{label}: {}", m.trim())),
        (Some(m), false) => other.push(format!("{label}: {}", m.trim())),
        (None, true) if step.steps.is_empty() => failed.push(format!("{label}: failed")),
        (None, _) => {}
    }
    for child in &step.steps {
        collect_reasons(child, failed, other);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{EnvVar, ImageRef};

    fn spec() -> ComputeSpec {
        ComputeSpec {
            name: "ext-abc-1".into(),
            image: ImageRef {
                registry: "my-registry".into(),
                repository: "external".into(),
                tag: "v1".into(),
            },
            env: vec![
                EnvVar {
                    key: "EXTERNAL_TASK_QUEUE".into(),
                    value: "ext-abc-1".into(),
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

    #[test]
    fn create_body_matches_the_reference() {
        let spec = spec();
        let settings = WorkerSettings {
            owner: "default/taskQueueName",
            component_name: "external-worker",
            instance_size_slug: "apps-s-1vcpu-0.5gb",
            region: Some("ams"),
        };
        let body = serde_json::to_value(create_request(&spec, &settings)).unwrap();
        assert_eq!(
            body,
            json!({"spec": {
                "name": "ext-abc-1",
                "region": "ams",
                "envs": [{"key": "TEA_COMPUTE_OWNER", "value": "default/taskQueueName", "scope": "RUN_TIME", "type": "GENERAL"}],
                "workers": [{
                    "name": "external-worker",
                    "instance_count": 1,
                    "instance_size_slug": "apps-s-1vcpu-0.5gb",
                    "image": {"registry_type": "DOCR", "repository": "external", "tag": "v1"},
                    "envs": [
                        {"key": "EXTERNAL_TASK_QUEUE", "value": "ext-abc-1", "scope": "RUN_TIME", "type": "GENERAL"},
                        {"key": "TEMPORAL_API_KEY", "value": "s3cret", "scope": "RUN_TIME", "type": "SECRET"}
                    ]
                }]
            }})
        );
        let image = &body["spec"]["workers"][0]["image"];
        assert!(image.get("registry").is_none());

        let no_region = WorkerSettings {
            region: None,
            ..settings
        };
        let body = serde_json::to_value(create_request(&spec, &no_region)).unwrap();
        assert!(body["spec"].get("region").is_none());
        let debug = format!("{:?}", create_request(&spec, &no_region));
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn env_keys_follow_the_api_regex() {
        for ok in ["A", "_x", "TEMPORAL_API_KEY", "a1"] {
            assert!(tea_contract::is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B"] {
            assert!(!tea_contract::is_env_var_name(bad), "{bad}");
        }
    }

    fn deployment(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn phases_map_to_readiness() {
        let d = deployment(json!({"id": "d", "phase": "DEPLOYING", "unknown_field": 1,
            "progress": {"success_steps": 3, "running_steps": 1, "pending_steps": 2, "total_steps": 6}}));
        assert_eq!(
            readiness_of(&d),
            Readiness::Pending {
                phase: "DEPLOYING".into(),
                detail: Some("3/6 steps".into())
            }
        );
        assert_eq!(
            readiness_of(&deployment(json!({"id": "d"}))),
            Readiness::Pending {
                phase: "UNKNOWN".into(),
                detail: None
            }
        );
        assert_eq!(
            readiness_of(&deployment(json!({"phase": "ACTIVE"}))),
            Readiness::Ready {
                phase: "ACTIVE".into()
            }
        );
        let d = deployment(
            json!({"phase": "ERROR", "progress": {"error_steps": 1, "total_steps": 6,
            "steps": [
                {"name": "build", "status": "SUCCESS"},
                {"name": "deploy", "status": "ERROR", "steps": [
                    {"name": "worker", "component_name": "external-worker", "status": "ERROR",
                     "reason": {"code": "CrashLoop", "message": "container exited with code 1"}}
                ]}
            ]}}),
        );
        assert_eq!(
            readiness_of(&d),
            Readiness::Failed {
                phase: "ERROR".into(),
                reason: "external-worker: container exited with code 1".into()
            }
        );
        for phase in ["CANCELED", "SUPERSEDED"] {
            match readiness_of(&deployment(json!({"phase": phase}))) {
                Readiness::Failed { phase: p, reason } => {
                    assert_eq!(p, phase);
                    assert!(reason.contains(phase), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn app_picks_pending_then_in_progress_then_active() {
        let app: App = serde_json::from_value(json!({
            "id": "a", "spec": {"name": "n"},
            "active_deployment": {"id": "act"},
            "in_progress_deployment": {"id": "inp"}
        }))
        .unwrap();
        assert_eq!(app.current_deployment().unwrap().id.as_deref(), Some("inp"));
        assert_eq!(app.name(), Some("n"));
        assert_eq!(app.owner_mark(), None);
        let marked: App = serde_json::from_value(json!({"spec": {"name": "n", "envs": [
            {"key": "OTHER", "value": "x"},
            {"key": "TEA_COMPUTE_OWNER", "value": "prod", "scope": "RUN_TIME", "type": "GENERAL"}
        ], "workers": [{"envs": [{"key": "TEA_COMPUTE_OWNER", "value": "component"}]}]}}))
        .unwrap();
        assert_eq!(marked.owner_mark(), Some("prod"));
        let secret: App = serde_json::from_value(json!({"spec": {"envs": [
            {"key": "TEA_COMPUTE_OWNER", "value": "EV[1:abc]", "type": "SECRET"}]}}))
        .unwrap();
        assert_eq!(secret.owner_mark(), None);
        let app: App = serde_json::from_value(json!({"id": "a", "pending_deployment": {"id": "p"},
            "active_deployment": {"id": "act"}}))
        .unwrap();
        assert_eq!(app.current_deployment().unwrap().id.as_deref(), Some("p"));
    }
}
