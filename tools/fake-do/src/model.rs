//! JSON types of the App Platform API as the fake serves them (App, Deployment, progress
//! steps, list pagination, delete and error bodies), following `do-apps-openapi.yaml`.
//!
//! They also implement `Deserialize`, so tests can decode responses with them. Optional
//! fields are omitted when absent, as the real API does.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The DO error body: `{"id","message","request_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub id: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Error `id` for an HTTP status (a short code, as the spec describes).
pub fn error_id_for(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "request_entity_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        429 => "too_many_requests",
        500..=599 => "server_error",
        _ => "error",
    }
}

/// `apps_deployment_phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    Unknown,
    PendingBuild,
    Building,
    PendingDeploy,
    Deploying,
    Active,
    Superseded,
    Error,
    Canceled,
}

impl Phase {
    /// Whether the phase is final for a deployment.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Active | Phase::Superseded | Phase::Error | Phase::Canceled
        )
    }

    /// The wire name, e.g. `PENDING_DEPLOY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Unknown => "UNKNOWN",
            Phase::PendingBuild => "PENDING_BUILD",
            Phase::Building => "BUILDING",
            Phase::PendingDeploy => "PENDING_DEPLOY",
            Phase::Deploying => "DEPLOYING",
            Phase::Active => "ACTIVE",
            Phase::Superseded => "SUPERSEDED",
            Phase::Error => "ERROR",
            Phase::Canceled => "CANCELED",
        }
    }
}

/// `apps_deployment_progress_step_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    Unknown,
    Pending,
    Running,
    Error,
    Success,
}

/// `apps_deployment_progress_step_reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReason {
    pub code: String,
    pub message: String,
}

/// `apps_deployment_progress_step`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StepReason>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `apps_deployment_progress`; zero counters are omitted like upstream examples do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending_steps: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub running_steps: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub success_steps: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub error_steps: u32,
    #[serde(default)]
    pub total_steps: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

/// `apps_deployment_worker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentComponent {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_commit_hash: Option<String>,
}

/// `apps_deployment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Value>,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_last_updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<DeploymentComponent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// `apps_region` (with the fields the live API also returns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub slug: String,
    pub label: String,
    pub flag: String,
    pub continent: String,
    #[serde(default)]
    pub data_centers: Vec<String>,
}

/// `app`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uuid: Option<String>,
    pub spec: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_deployment_created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deployment: Option<Deployment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress_deployment: Option<Deployment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_deployment: Option<Deployment>,
}

/// `{"app": App}` (create and get).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppResponse {
    pub app: App,
}

/// `links.pages`: absolute URLs, each present only when meaningful.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pages {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

/// `links`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    pub pages: Pages,
}

/// `meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub total: u64,
}

/// `apps_response` (list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppsResponse {
    pub apps: Vec<App>,
    pub links: Links,
    pub meta: Meta,
}

/// `{"deployment": Deployment}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentResponse {
    pub deployment: Deployment,
}

/// `{"id": "<deleted app id>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub id: String,
}

/// The region object for a slug (App Platform's own labels; unknown slugs pass through).
pub fn region_for(slug: &str) -> Region {
    let (label, flag, continent, dcs): (&str, &str, &str, &[&str]) = match slug {
        "ams" => ("Amsterdam", "netherlands", "Europe", &["ams3"]),
        "nyc" => ("New York", "usa", "North America", &["nyc1", "nyc3"]),
        "sfo" => ("San Francisco", "usa", "North America", &["sfo3"]),
        "tor" => ("Toronto", "canada", "North America", &["tor1"]),
        "fra" => ("Frankfurt", "germany", "Europe", &["fra1"]),
        "lon" => ("London", "uk", "Europe", &["lon1"]),
        "blr" => ("Bangalore", "india", "Asia", &["blr1"]),
        "sgp" => ("Singapore", "singapore", "Asia", &["sgp1"]),
        "syd" => ("Sydney", "australia", "Australia", &["syd1"]),
        "atl" => ("Atlanta", "usa", "North America", &["atl1"]),
        _ => (slug, "", "", &[]),
    };
    Region {
        slug: slug.to_string(),
        label: label.to_string(),
        flag: flag.to_string(),
        continent: continent.to_string(),
        data_centers: dcs.iter().map(|s| s.to_string()).collect(),
    }
}

fn aggregate(children: &[Step]) -> StepStatus {
    if children.iter().any(|s| s.status == StepStatus::Error) {
        StepStatus::Error
    } else if children.iter().any(|s| s.status == StepStatus::Running) {
        StepStatus::Running
    } else if children.iter().all(|s| s.status == StepStatus::Success) {
        StepStatus::Success
    } else if children.iter().any(|s| s.status == StepStatus::Success) {
        StepStatus::Running
    } else {
        StepStatus::Pending
    }
}

fn leaf(name: &str, status: StepStatus) -> Step {
    Step {
        name: name.into(),
        status,
        component_name: None,
        message_base: None,
        reason: None,
        steps: vec![],
    }
}

fn parent(name: &str, steps: Vec<Step>) -> Step {
    Step {
        status: aggregate(&steps),
        steps,
        ..leaf(name, StepStatus::Pending)
    }
}

/// The progress of an image deployment (no build stage) in `phase`, with the worker
/// component `worker` (if any). On `ERROR` the worker's `wait` step fails with `reason`.
pub fn progress_for(phase: Phase, worker: Option<&str>, reason: Option<&StepReason>) -> Progress {
    use StepStatus::*;
    // Leaf statuses: initialize, worker deploy, worker wait, finalize.
    let [init, deploy, wait, fin] = match phase {
        Phase::Active | Phase::Superseded => [Success; 4],
        Phase::Deploying => [Success, Running, Pending, Pending],
        Phase::Error => [Success, Success, Error, Pending],
        _ => [Pending; 4],
    };
    let mut component_steps = vec![];
    if let Some(w) = worker {
        let deploy_step = Step {
            component_name: Some(w.into()),
            message_base: Some("Deploying worker".into()),
            ..leaf("deploy", deploy)
        };
        let wait_step = Step {
            component_name: Some(w.into()),
            message_base: Some("Waiting for worker".into()),
            reason: (wait == Error).then(|| reason.cloned()).flatten(),
            ..leaf("wait", wait)
        };
        component_steps.push(Step {
            component_name: Some(w.into()),
            ..parent(w, vec![deploy_step, wait_step])
        });
    }
    let mut leaves = vec![init, fin];
    if worker.is_some() {
        leaves.extend([deploy, wait]);
    }
    let count = |s: StepStatus| leaves.iter().filter(|x| **x == s).count() as u32;
    let mut top = parent(
        "deploy",
        vec![
            leaf("initialize", init),
            parent("components", component_steps),
            leaf("finalize", fin),
        ],
    );
    if phase == Phase::Error {
        top.status = Error;
        top.reason = reason.cloned();
    }
    Progress {
        pending_steps: count(Pending),
        running_steps: count(Running),
        success_steps: count(Success),
        error_steps: count(Error),
        total_steps: leaves.len() as u32,
        steps: vec![top],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts() {
        let p = progress_for(Phase::PendingDeploy, Some("w"), None);
        assert_eq!((p.pending_steps, p.total_steps), (4, 4));
        let p = progress_for(Phase::Deploying, Some("w"), None);
        assert_eq!(
            (p.success_steps, p.running_steps, p.pending_steps),
            (1, 1, 2)
        );
        let p = progress_for(Phase::Active, Some("w"), None);
        assert_eq!((p.success_steps, p.total_steps), (4, 4));
        let r = StepReason {
            code: "c".into(),
            message: "m".into(),
        };
        let p = progress_for(Phase::Error, Some("w"), Some(&r));
        assert_eq!(p.error_steps, 1);
        assert_eq!(p.steps[0].status, StepStatus::Error);
        assert_eq!(p.steps[0].reason.as_ref(), Some(&r));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["steps"][0]["status"], "ERROR");
    }
}
