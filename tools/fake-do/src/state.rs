//! The fake's in-memory state: app and deployment records, worker process bookkeeping,
//! recorded create bodies, request counters and log, armed faults, rate-limit window, and the
//! serialisable [`Snapshot`] tests observe. Also the conversion of records to API JSON.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::FakeDoConfig;
use crate::faults::{Fault, FaultQueue, Op};
use crate::model::{self, App, Deployment, DeploymentComponent, Phase, StepReason};
use crate::secrets::{self, Vault};

/// Requests per hour the fake advertises in `ratelimit-limit` (the real per-token limit).
pub const RATE_LIMIT_PER_HOUR: u64 = 5000;
/// The `owner_uuid` of every app.
pub const OWNER_UUID: &str = "5e3bd4c8-4a3b-4c5e-9d5e-0fa4ef0d1a11";
/// The project apps land in when the create request names none.
pub const DEFAULT_PROJECT_ID: &str = "88b72d1a-b78a-4d9f-9090-b53c4399073f";

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One exit of a worker process (or a failure to start it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerExit {
    /// Pid of the process that exited (0 if it could not be started).
    pub pid: u32,
    /// Exit code, if it exited normally.
    pub code: Option<i32>,
    /// Signal number, if it was killed by a signal.
    pub signal: Option<i32>,
    /// Set when the process could not be spawned.
    pub spawn_error: Option<String>,
    /// Whether the fake stopped it (delete/shutdown) rather than it exiting by itself.
    pub stopped_by_fake: bool,
    pub at: String,
}

/// An app as seen by tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSnapshot {
    pub id: String,
    pub name: String,
    pub deployment_id: String,
    /// Current deployment phase, e.g. `"ACTIVE"`.
    pub phase: Phase,
    /// Pid of the running worker process (it is its own process-group leader).
    pub worker_pid: Option<u32>,
    /// How many times the worker was restarted after exiting by itself.
    pub restarts: u32,
    pub exits: Vec<WorkerExit>,
    /// Deprecated `instance_size_slug`s the spec used (accepted, but recorded).
    pub deprecated_slugs: Vec<String>,
    /// Where the worker's stdout/stderr go, if a log directory is configured.
    pub log_file: Option<PathBuf>,
    /// A `DELETE` was accepted and the app is being torn down (still visible; see the
    /// `DeleteDelay` and `DeleteLinger` faults).
    #[serde(default)]
    pub deleting: bool,
    /// Seeded ([`crate::FakeDo::seed`]) rather than created through the API.
    #[serde(default)]
    pub seeded: bool,
}

/// Everything tests can observe (also served as `GET /_fake/state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Apps ever stored by a create (including creates answered 500 by a fault).
    pub total_created: u64,
    /// Current apps in creation order.
    pub apps: Vec<AppSnapshot>,
    /// Ids of deleted apps, in deletion order.
    pub deleted_app_ids: Vec<String>,
    /// Create request bodies as received (valid JSON or not; invalid JSON recorded as a
    /// string), with SECRET env values and registry credentials replaced by `"[REDACTED]"`.
    /// [`crate::FakeDo::raw_create_bodies`] gives them unredacted, in-process only.
    pub create_bodies: Vec<Value>,
    /// `/v2` requests by operation (`create`, `get`, `list`, `delete`, `get_deployment`,
    /// `propose`, `other`) and HTTP status.
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Counted faults still armed, with their remaining counts.
    pub pending_faults: Vec<Fault>,
    /// Current delay between deployment phases.
    pub step_delay_ms: u64,
    /// How long a deleted app stays visible (asynchronous delete); 0: immediate.
    #[serde(default)]
    pub delete_delay_ms: u64,
    /// How many reads a deleted app stays visible for (`DeleteLinger`); 0: not counted.
    #[serde(default)]
    pub delete_linger_reads: u32,
}

impl Snapshot {
    /// The app with this id, if it currently exists.
    pub fn app(&self, id: &str) -> Option<&AppSnapshot> {
        self.apps.iter().find(|a| a.id == id)
    }

    /// The app with this name, if it currently exists.
    pub fn app_by_name(&self, name: &str) -> Option<&AppSnapshot> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// Number of `/v2` requests for `op` answered with `status`.
    pub fn request_count(&self, op: &str, status: u16) -> u64 {
        self.requests
            .get(op)
            .and_then(|m| m.get(&status))
            .copied()
            .unwrap_or(0)
    }

    /// Number of `/v2` requests for `op`, whatever their status.
    pub fn requests_for(&self, op: &str) -> u64 {
        self.requests.get(op).map_or(0, |m| m.values().sum())
    }
}

/// One `/v2` request as the fake received and answered it (see
/// [`crate::FakeDo::request_log`]). Headers are kept as received, `Authorization` included, so
/// the log is in-process only; `Debug` redacts that header.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The operation the request was for.
    pub op: Op,
    pub method: String,
    /// The path, e.g. `/v2/apps/{id}`.
    pub path: String,
    /// The raw query string, if any (e.g. `page=1&per_page=200`).
    pub query: Option<String>,
    /// Header names (lower case) and values in the order received; non-UTF-8 bytes are
    /// replaced.
    pub headers: Vec<(String, String)>,
    /// The status the fake answered.
    pub status: u16,
    /// The request id the fake answered with (`x-request-id` and the error body's
    /// `request_id`).
    pub request_id: String,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name` (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

impl std::fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if k.eq_ignore_ascii_case("authorization") {
                    secrets::REDACTED
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("RecordedRequest")
            .field("op", &self.op)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .field("status", &self.status)
            .field("request_id", &self.request_id)
            .finish()
    }
}

pub(crate) struct DeploymentRecord {
    pub id: String,
    pub phase: Phase,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set by a `DeploymentError` fault: the deployment ends in `ERROR`.
    pub fail: bool,
    /// Set by a `SlowRollout` fault: the worker starts at `DEPLOYING`, and the deployment
    /// stays there this long before it becomes `ACTIVE`.
    pub running_while_deploying: Option<std::time::Duration>,
}

/// Deliberately not `Debug`: `run_env` holds plain secret values.
pub(crate) struct AppRecord {
    pub id: String,
    pub name: String,
    /// Spec as stored: as sent, with secrets encrypted.
    pub spec: Value,
    pub project_id: String,
    pub region: String,
    pub created_at: DateTime<Utc>,
    pub deployment: DeploymentRecord,
    pub first_worker: Option<String>,
    /// Plain run-time env of the first worker (secrets decrypted). Memory only.
    pub run_env: Vec<(String, String)>,
    pub deprecated_slugs: Vec<String>,
    pub worker_pid: Option<u32>,
    pub restarts: u32,
    pub exits: Vec<WorkerExit>,
    pub log_file: Option<PathBuf>,
    /// Set once a `DELETE` is accepted under a delete delay: when the app disappears.
    pub deleting_until: Option<std::time::Instant>,
    /// Set once a `DELETE` is accepted under `DeleteLinger`: how many more answers show it.
    pub deleting_reads_left: Option<u32>,
    pub seeded: bool,
}

/// The `reason.message` of a failed deployment's failing steps (the deployment's top step and
/// its worker's `wait` step); the `reason.code` is `DeployContainerExitNonZero`.
pub const DEPLOYMENT_FAILURE_MESSAGE: &str = "Your deploy failed because your container exited \
     with a non-zero exit code (injected by fake-do: a DeploymentError fault or an app seeded in \
     phase ERROR).";

pub(crate) fn failure_reason() -> StepReason {
    StepReason {
        code: "DeployContainerExitNonZero".into(),
        message: DEPLOYMENT_FAILURE_MESSAGE.into(),
    }
}

impl AppRecord {
    pub fn to_deployment(&self) -> Deployment {
        let d = &self.deployment;
        let reason = failure_reason();
        Deployment {
            id: d.id.clone(),
            spec: Some(self.spec.clone()),
            phase: d.phase,
            phase_last_updated_at: Some(rfc3339(d.updated_at)),
            created_at: Some(rfc3339(d.created_at)),
            updated_at: Some(rfc3339(d.updated_at)),
            cause: Some("app created".into()),
            tier_slug: Some("basic".into()),
            workers: self
                .first_worker
                .iter()
                .map(|w| DeploymentComponent {
                    name: w.clone(),
                    source_commit_hash: None,
                })
                .collect(),
            progress: Some(model::progress_for(
                d.phase,
                self.first_worker.as_deref(),
                (d.phase == Phase::Error).then_some(&reason),
            )),
        }
    }

    pub fn to_app(&self) -> App {
        let dep = self.to_deployment();
        let phase = self.deployment.phase;
        App {
            id: self.id.clone(),
            owner_uuid: Some(OWNER_UUID.into()),
            spec: self.spec.clone(),
            created_at: Some(rfc3339(self.created_at)),
            updated_at: Some(rfc3339(self.deployment.updated_at)),
            last_deployment_created_at: Some(rfc3339(self.deployment.created_at)),
            region: Some(model::region_for(&self.region)),
            tier_slug: Some("basic".into()),
            project_id: Some(self.project_id.clone()),
            active_deployment: (phase == Phase::Active).then(|| dep.clone()),
            in_progress_deployment: matches!(phase, Phase::PendingDeploy | Phase::Deploying)
                .then(|| dep.clone()),
            pending_deployment: (phase == Phase::PendingDeploy).then_some(dep),
        }
    }

    pub fn snapshot(&self) -> AppSnapshot {
        AppSnapshot {
            id: self.id.clone(),
            name: self.name.clone(),
            deployment_id: self.deployment.id.clone(),
            phase: self.deployment.phase,
            worker_pid: self.worker_pid,
            restarts: self.restarts,
            exits: self.exits.clone(),
            deprecated_slugs: self.deprecated_slugs.clone(),
            log_file: self.log_file.clone(),
            deleting: self.is_deleting(),
            seeded: self.seeded,
        }
    }

    /// Whether a `DELETE` was accepted and the app is still being torn down.
    pub fn is_deleting(&self) -> bool {
        self.deleting_until.is_some() || self.deleting_reads_left.is_some()
    }

    /// Whether its teardown is over (it must disappear now).
    fn is_torn_down(&self, now: std::time::Instant) -> bool {
        self.deleting_until.is_some_and(|t| t <= now) || self.deleting_reads_left == Some(0)
    }

    /// Counts an answer that shows this app against its `DeleteLinger` reads, if any.
    pub fn shown(&mut self) {
        if let Some(left) = &mut self.deleting_reads_left {
            *left = left.saturating_sub(1);
        }
    }
}

/// A running per-app lifecycle task (deployment progression, then worker supervision).
pub(crate) struct AppTask {
    pub stop: watch::Sender<bool>,
    pub handle: JoinHandle<()>,
}

#[derive(Default)]
pub(crate) struct State {
    pub apps: Vec<AppRecord>,
    pub deleted_app_ids: Vec<String>,
    pub total_created: u64,
    /// Raw (unredacted) create bodies.
    pub create_bodies: Vec<Value>,
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    /// The most recent `/v2` requests (at most `FakeDoConfig::request_log_limit`).
    pub request_log: VecDeque<RecordedRequest>,
    pub faults: FaultQueue,
    pub vault: Vault,
    /// Unix seconds of the `/v2` requests of the last hour.
    pub rate_window: VecDeque<i64>,
    pub tasks: HashMap<String, AppTask>,
}

impl State {
    pub fn app(&self, id: &str) -> Option<&AppRecord> {
        self.apps.iter().find(|a| a.id == id)
    }

    pub fn app_mut(&mut self, id: &str) -> Option<&mut AppRecord> {
        self.apps.iter_mut().find(|a| a.id == id)
    }

    /// Removes the apps whose asynchronous delete is over.
    fn purge_deleted(&mut self) {
        let now = std::time::Instant::now();
        if !self.apps.iter().any(|a| a.is_torn_down(now)) {
            return;
        }
        let (gone, kept): (Vec<AppRecord>, Vec<AppRecord>) = std::mem::take(&mut self.apps)
            .into_iter()
            .partition(|a| a.is_torn_down(now));
        self.apps = kept;
        self.deleted_app_ids.extend(gone.into_iter().map(|a| a.id));
    }

    /// Appends to the request log, dropping the oldest entries beyond `limit` (0: no log).
    pub fn log_request(&mut self, limit: usize, request: RecordedRequest) {
        if limit == 0 {
            return;
        }
        while self.request_log.len() >= limit {
            self.request_log.pop_front();
        }
        self.request_log.push_back(request);
    }

    /// Counts one request in the rolling hour; returns (remaining, reset epoch seconds).
    pub fn count_rate(&mut self, now: i64) -> (u64, i64) {
        while self.rate_window.front().is_some_and(|t| *t <= now - 3600) {
            self.rate_window.pop_front();
        }
        self.rate_window.push_back(now);
        let remaining = RATE_LIMIT_PER_HOUR.saturating_sub(self.rate_window.len() as u64);
        let reset = self.rate_window.front().map_or(now, |t| t + 3600);
        (remaining, reset)
    }
}

/// State shared by the HTTP handlers, the lifecycle tasks and the [`crate::FakeDo`] handle.
pub(crate) struct Shared {
    pub cfg: FakeDoConfig,
    pub state: Mutex<State>,
    pub step_delay: Mutex<Duration>,
    pub delete_delay: Mutex<Duration>,
    /// Reads a deleted app stays visible for (`DeleteLinger`); 0: not counted.
    pub delete_linger_reads: Mutex<u32>,
    /// `http://host:port` the server is reachable at.
    pub base_url: String,
}

impl Shared {
    pub fn new(cfg: FakeDoConfig, base_url: String) -> Arc<Self> {
        let step_delay = cfg.step_delay;
        let delete_delay = cfg.delete_delay;
        Arc::new(Shared {
            cfg,
            state: Mutex::new(State::default()),
            step_delay: Mutex::new(step_delay),
            delete_delay: Mutex::new(delete_delay),
            delete_linger_reads: Mutex::new(0),
            base_url,
        })
    }

    /// Locks the state; a poisoned lock is recovered (state stays usable after a panic).
    /// Apps whose asynchronous delete is over are removed first, so every reader (handlers,
    /// snapshots) sees the same moment of disappearance.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.purge_deleted();
        state
    }

    pub fn delete_delay(&self) -> Duration {
        *self.delete_delay.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_delete_delay(&self, d: Duration) {
        *self.delete_delay.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    pub fn delete_linger_reads(&self) -> u32 {
        *self
            .delete_linger_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_delete_linger_reads(&self, reads: u32) {
        *self
            .delete_linger_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = reads;
    }

    pub fn step_delay(&self) -> Duration {
        *self.step_delay.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_step_delay(&self, d: Duration) {
        *self.step_delay.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    pub fn snapshot(&self) -> Snapshot {
        let step_delay_ms = self.step_delay().as_millis() as u64;
        let delete_delay_ms = self.delete_delay().as_millis() as u64;
        let delete_linger_reads = self.delete_linger_reads();
        let st = self.lock();
        Snapshot {
            total_created: st.total_created,
            apps: st.apps.iter().map(AppRecord::snapshot).collect(),
            deleted_app_ids: st.deleted_app_ids.clone(),
            create_bodies: st.create_bodies.iter().map(secrets::redact_body).collect(),
            requests: st.requests.clone(),
            pending_faults: st.faults.pending(),
            step_delay_ms,
            delete_delay_ms,
            delete_linger_reads,
        }
    }
}
