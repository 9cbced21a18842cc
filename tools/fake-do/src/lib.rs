//! `tea-fake-do`: a fake DigitalOcean App Platform API for end-to-end tests and chaos runs.
//!
//! It serves `POST/GET/DELETE /v2/apps[/{id}]`, `GET /v2/apps/{app_id}/deployments/{id}` and
//! `POST /v2/apps/propose` with the real JSON shapes (see `do-apps-openapi.yaml`), bearer auth,
//! rate-limit headers and DO error bodies; moves each app's deployment through
//! `PENDING_DEPLOY -> DEPLOYING -> ACTIVE` on a timer; and, once ACTIVE, runs the app's first
//! worker component as a local child process (a configured command; image fields are only
//! recorded) with the app's env. Faults can be injected in-process ([`FakeDo::inject`]) or via
//! `POST /_fake/faults`; state is observable via [`FakeDo::snapshot`] or `GET /_fake/state`,
//! and the most recent requests (headers included) via [`FakeDo::request_log`], in-process.
//!
//! This module owns the public handle ([`FakeDo`]) and its configuration ([`FakeDoConfig`]).
//!
//! # Behaviour where the spec is silent
//! - Invalid bodies (bad JSON, missing `spec`/`name`, any spec rule) answer **400
//!   `bad_request`** with a message naming the field; duplicate app names answer **409
//!   `conflict`**; unknown ids 404 `not_found`; wrong method 405 `method_not_allowed`.
//! - `registry` set for `DOCR` is rejected (the spec says "must be left empty"); `tag` and
//!   `digest` together are rejected; a component needs exactly one source.
//! - Deprecated `instance_size_slug`s (`basic-xxs`, ...) are accepted (the spec still lists
//!   them, marked deprecated) and recorded in [`AppSnapshot::deprecated_slugs`].
//! - Image apps skip the build: a deployment starts in `PENDING_DEPLOY`, becomes `DEPLOYING`
//!   after one `step_delay` and `ACTIVE` (or `ERROR`) after another. The app shows it as
//!   `pending_deployment` (PENDING_DEPLOY only), `in_progress_deployment` (PENDING_DEPLOY and
//!   DEPLOYING) and `active_deployment` (ACTIVE); a failed deployment is only reachable by id.
//! - `page`/`per_page` outside 1.. / 1-200 answer 400 instead of being clamped. A page holds
//!   at most [`FakeDoConfig::max_per_page`] apps (default 200, so `per_page` is honoured);
//!   `links.pages` then keep the requested `per_page`.
//! - Asynchronous delete (`DeleteDelay`, off by default): the app's worker stops at once, but
//!   the app stays readable and listed (unchanged), its name taken, until the delay is over;
//!   a repeated `DELETE` meanwhile answers 200 again. The spec does not say what App Platform
//!   shows during a teardown; it only says deletion shuts the deployments down. `DeleteLinger`
//!   measures the same teardown in reads of the app instead of time.
//!
//! # Admin endpoints (no auth)
//! - `GET /_fake/state` -> [`Snapshot`] as JSON.
//! - `POST /_fake/faults` with a [`Fault`] as JSON, e.g.
//!   `{"kind":"RateLimit","count":2,"retry_after_secs":1,"op":"create"}`,
//!   `{"kind":"ServerError","count":1,"status":503}`, `{"kind":"CreateStoresThen500","count":1}`,
//!   `{"kind":"DeploymentError","count":1}`, `{"kind":"DeployDelay","step_delay_ms":200}`
//!   -> `{"pending_faults":[...],"step_delay_ms":N}`. `op` is one of `any` (default), `create`,
//!   `get`, `list`, `delete`, `get_deployment`, `propose`.
//!   `{"kind":"DeleteDelay","delay_ms":7000}` (asynchronous delete: a deleted app stays
//!   visible for 7 s), `{"kind":"DeleteLinger","reads":2}` (a deleted app is shown by the next
//!   2 reads of it), `{"kind":"AppServerError","app_id":"...","count":9,"op":"delete"}`,
//!   `{"kind":"SlowRollout","count":1,"hold_ms":20000}` (the worker runs while the deployment
//!   still reads `DEPLOYING` for 20 s),
//!   `{"kind":"ClientError","count":1,"status":422,"op":"create"}` (a refusal retrying cannot
//!   fix)
//!   -> `{"pending_faults":[...],"step_delay_ms":N,"delete_delay_ms":N,"delete_linger_reads":N}`.
//!   A 429 with a long `Retry-After` is `RateLimit` with a large `retry_after_secs`.
//! - `GET /_fake/faults` -> same body; `DELETE /_fake/faults` disarms all counted faults.
//! - `POST /_fake/apps` seeds apps that were not created through the API (someone else's apps
//!   in the same account): `{"name":"ext-api","envs":{"TEA_COMPUTE_OWNER":"other"}}` or
//!   `{"count":1000,"name_prefix":"foreign"}` -> `{"ids":[...]}` (see [`SeedApps`]). Seeded
//!   apps run no worker and are listed, read and deleted like any other; their deployment is
//!   ACTIVE, or stays in the `"phase"` the seed gives (they have no lifecycle).
//! - `POST /_fake/apps/{id}/signal?signal=KILL` (or TERM, INT, ...) signals the app's worker
//!   process group -> `{"signaled":true,"signal":"SIGKILL"}`, 404 if no worker runs.
//!
//! A worker process that exits by itself is restarted after `restart_delay` (App Platform
//! restarts a crashed component); [`AppSnapshot::restarts`] counts the restarts.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use tea_fake_do::{FakeDo, FakeDoConfig, Fault, Op};
//! let fake = FakeDo::start(FakeDoConfig::new("test-token")).await?;
//! let url = fake.base_url(); // http://127.0.0.1:PORT; the API is under {url}/v2
//! fake.inject(Fault::RateLimit { count: 1, retry_after_secs: 1, op: Op::Create });
//! let snap = fake.snapshot();
//! # let _ = (url, snap);
//! fake.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
pub mod faults;
mod lifecycle;
pub mod model;
mod secrets;
mod state;
pub mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{Fault, Op};
pub use lifecycle::STRIPPED_ENV_PREFIXES;
pub use model::Phase;
pub use nix::sys::signal::Signal;
pub use secrets::REDACTED;
pub use state::{AppSnapshot, DEPLOYMENT_FAILURE_MESSAGE, RecordedRequest, Snapshot, WorkerExit};

use state::Shared;

/// Configuration of a fake server.
#[derive(Clone)]
pub struct FakeDoConfig {
    /// The bearer token every `/v2` request must carry. Never logged.
    pub token: String,
    /// Listen address; port 0 picks a free port (default `127.0.0.1:0`).
    pub bind: SocketAddr,
    /// Delay of each deployment step (PENDING_DEPLOY -> DEPLOYING -> ACTIVE); default 1 s.
    pub step_delay: Duration,
    /// Program and arguments run for an app's first worker once its deployment is ACTIVE.
    /// `None`: no process is started (deployments still become ACTIVE).
    pub worker_command: Option<(PathBuf, Vec<String>)>,
    /// Directory for per-app worker logs (`<app-name>-<app-id>.log`, stdout and stderr
    /// appended); `None`: workers inherit the fake's stdout/stderr.
    pub log_dir: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when stopping a worker; default 5 s.
    pub kill_grace: Duration,
    /// Delay before restarting a worker that exited by itself; default 1 s.
    pub restart_delay: Duration,
    /// How long a deleted app stays visible before it reads as 404 (asynchronous delete);
    /// default 0 (gone when the `DELETE` is answered). Also set by the `DeleteDelay` fault.
    pub delete_delay: Duration,
    /// Most apps a list page holds, 1-200; default 200 (the API's largest `per_page`, so every
    /// `per_page` is honoured). Lower, a larger `per_page` is served in pages of this size, as
    /// by a server that caps pages: a few apps then exercise a client's pagination.
    pub max_per_page: u64,
    /// How many of the most recent `/v2` requests [`FakeDo::request_log`] keeps; default 1,000;
    /// 0: none.
    pub request_log_limit: usize,
}

impl std::fmt::Debug for FakeDoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDoConfig")
            .field("token", &"<redacted>")
            .field("bind", &self.bind)
            .field("step_delay", &self.step_delay)
            .field("worker_command", &self.worker_command)
            .field("log_dir", &self.log_dir)
            .field("kill_grace", &self.kill_grace)
            .field("restart_delay", &self.restart_delay)
            .field("delete_delay", &self.delete_delay)
            .field("max_per_page", &self.max_per_page)
            .field("request_log_limit", &self.request_log_limit)
            .finish()
    }
}

impl FakeDoConfig {
    /// Defaults with the given token.
    pub fn new(token: impl Into<String>) -> Self {
        FakeDoConfig {
            token: token.into(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            step_delay: Duration::from_secs(1),
            worker_command: None,
            log_dir: None,
            kill_grace: Duration::from_secs(5),
            restart_delay: Duration::from_secs(1),
            delete_delay: Duration::ZERO,
            max_per_page: 200,
            request_log_limit: 1000,
        }
    }

    /// Sets the worker command (builder style).
    pub fn with_worker_command<I, S>(mut self, program: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.worker_command = Some((program.into(), args.into_iter().map(Into::into).collect()));
        self
    }

    /// Sets the deployment step delay (builder style).
    pub fn with_step_delay(mut self, d: Duration) -> Self {
        self.step_delay = d;
        self
    }
}

/// A running fake server. Dropping it stops the server and SIGKILLs all worker processes;
/// [`FakeDo::shutdown`] does the same gracefully (SIGTERM, grace period, SIGKILL).
pub struct FakeDo {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

pub(crate) fn apply_fault(shared: &Shared, fault: Fault) {
    match fault {
        Fault::DeployDelay { step_delay_ms } => {
            shared.set_step_delay(Duration::from_millis(step_delay_ms));
        }
        Fault::DeleteDelay { delay_ms } => {
            shared.set_delete_delay(Duration::from_millis(delay_ms));
        }
        Fault::DeleteLinger { reads } => shared.set_delete_linger_reads(reads),
        other => shared.lock().faults.push(other),
    }
}

/// Apps to seed into the account without going through the API: either one app (`name`) or
/// `count` apps named `<name_prefix>-<i>`, all with the app-level `GENERAL` `envs`. Their
/// deployment is in `phase` (default `ACTIVE`) and stays there: seeded apps have no lifecycle.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeedApps {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub envs: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub name_prefix: Option<String>,
    #[serde(default)]
    pub phase: Option<Phase>,
}

impl SeedApps {
    /// One app named `name` with app-level env `envs`.
    pub fn one(name: impl Into<String>, envs: &[(&str, &str)]) -> Self {
        SeedApps {
            name: Some(name.into()),
            envs: envs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    /// `count` apps named `<prefix>-<i>`.
    pub fn many(count: u32, prefix: impl Into<String>) -> Self {
        SeedApps {
            count: Some(count),
            name_prefix: Some(prefix.into()),
            ..Default::default()
        }
    }

    /// The same apps with app-level env `envs` (builder style).
    pub fn with_envs(mut self, envs: &[(&str, &str)]) -> Self {
        self.envs = envs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self
    }

    /// The same apps with their deployment in `phase` (builder style).
    pub fn with_phase(mut self, phase: Phase) -> Self {
        self.phase = Some(phase);
        self
    }
}

/// Stores the apps `seed` describes (no worker, no lifecycle); their ids, or why not.
pub(crate) fn seed_apps(shared: &Shared, seed: &SeedApps) -> Result<Vec<String>, String> {
    let names: Vec<String> = match (&seed.name, seed.count) {
        (Some(name), None) => vec![name.clone()],
        (None, Some(count)) => {
            let prefix = seed.name_prefix.as_deref().unwrap_or("foreign");
            (0..count).map(|i| format!("{prefix}-{i}")).collect()
        }
        _ => return Err("give either `name` or `count` (with `name_prefix`)".into()),
    };
    let envs: Vec<serde_json::Value> = seed
        .envs
        .iter()
        .map(|(k, v)| {
            serde_json::json!({"key": k, "value": v, "scope": "RUN_TIME", "type": "GENERAL"})
        })
        .collect();
    let phase = seed.phase.unwrap_or(Phase::Active);
    let mut st = shared.lock();
    let mut ids = Vec::with_capacity(names.len());
    for name in names {
        let spec = serde_json::json!({
            "name": name,
            "envs": envs,
            "workers": [{
                "name": "worker",
                "instance_count": 1,
                "instance_size_slug": "apps-s-1vcpu-0.5gb",
                "image": {"registry_type": "DOCR", "repository": "someone-elses", "tag": "v1"}
            }]
        });
        let valid = validate::validate_spec(&spec)
            .map_err(|e| format!("seeded app {name:?} is not a valid app: {e}"))?;
        if st.apps.iter().any(|a| a.name == valid.name) {
            return Err(format!("app name {:?} is already in use", valid.name));
        }
        let now = chrono::Utc::now();
        let id = uuid::Uuid::new_v4().to_string();
        st.apps.push(state::AppRecord {
            id: id.clone(),
            name: valid.name.clone(),
            spec,
            project_id: state::DEFAULT_PROJECT_ID.to_string(),
            region: "ams".into(),
            created_at: now,
            deployment: state::DeploymentRecord {
                id: uuid::Uuid::new_v4().to_string(),
                phase,
                created_at: now,
                updated_at: now,
                fail: phase == Phase::Error,
                running_while_deploying: None,
            },
            first_worker: None,
            run_env: Vec::new(),
            deprecated_slugs: Vec::new(),
            worker_pid: None,
            restarts: 0,
            exits: Vec::new(),
            log_file: None,
            deleting_until: None,
            deleting_reads_left: None,
            seeded: true,
        });
        ids.push(id);
    }
    Ok(ids)
}

impl FakeDo {
    /// Seeds apps that were not created through the API (see [`SeedApps`]); returns their ids.
    pub fn seed(&self, seed: &SeedApps) -> anyhow::Result<Vec<String>> {
        seed_apps(&self.shared, seed).map_err(|e| anyhow::anyhow!(e))
    }

    /// Binds the listener and starts serving (must be called inside a tokio runtime).
    pub async fn start(cfg: FakeDoConfig) -> anyhow::Result<FakeDo> {
        anyhow::ensure!(!cfg.token.is_empty(), "the fake-do token must not be empty");
        if let Some((program, _)) = &cfg.worker_command {
            anyhow::ensure!(
                !program.as_os_str().is_empty(),
                "worker command program is empty"
            );
        }
        anyhow::ensure!(
            (1..=200).contains(&cfg.max_per_page),
            "max_per_page must be 1-200, got {}",
            cfg.max_per_page
        );
        if let Some(dir) = &cfg.log_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating log dir {}", dir.display()))?;
        }
        let listener = tokio::net::TcpListener::bind(cfg.bind)
            .await
            .with_context(|| format!("binding {}", cfg.bind))?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let shared = Shared::new(cfg, format!("http://{addr}"));
        let router = api::router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "fake-do server failed");
            }
        });
        tracing::info!(url = %shared.base_url, "fake-do listening");
        Ok(FakeDo {
            shared,
            addr,
            stop_server: Some(tx),
            server: Some(server),
        })
    }

    /// `http://127.0.0.1:PORT` (no `/v2`; use it as the DO API base URL).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Arms a fault (or, for `DeployDelay`, changes the step delay now).
    pub fn inject(&self, fault: Fault) {
        apply_fault(&self.shared, fault);
    }

    /// Disarms all pending counted faults.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Current observable state.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// Create request bodies exactly as received, secrets included (in-process only; the
    /// HTTP state endpoint and [`Snapshot::create_bodies`] redact them).
    pub fn raw_create_bodies(&self) -> Vec<Value> {
        self.shared.lock().create_bodies.clone()
    }

    /// The most recent `/v2` requests, oldest first (at most
    /// [`FakeDoConfig::request_log_limit`]), headers as received: the `Authorization` header
    /// carries the token, so this is in-process only (and [`RecordedRequest`]'s `Debug` hides
    /// it).
    pub fn request_log(&self) -> Vec<RecordedRequest> {
        self.shared.lock().request_log.iter().cloned().collect()
    }

    /// Sends `signal` to the worker process group of app `app_id` (chaos helper); false if no
    /// worker is running for it. The worker is restarted after `restart_delay` if it dies.
    pub fn signal_worker(&self, app_id: &str, signal: Signal) -> bool {
        lifecycle::signal_worker(&self.shared, app_id, signal)
    }

    /// Polls the state every 20 ms until `pred` holds (returning that snapshot) or `timeout`
    /// passes (returning `None`).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Snapshot) -> bool,
    ) -> Option<Snapshot> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let snap = self.snapshot();
            if pred(&snap) {
                return Some(snap);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server, then stops every worker (SIGTERM, grace, SIGKILL) and waits for them.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(2), &mut server)
                .await
                .is_err()
        {
            server.abort();
        }
        let tasks: Vec<_> = self
            .shared
            .lock()
            .tasks
            .drain()
            .map(|(_, task)| task)
            .collect();
        let mut set = tokio::task::JoinSet::new();
        for task in tasks {
            let shared = self.shared.clone();
            set.spawn(async move { lifecycle::stop_app_task(&shared, task).await });
        }
        while set.join_next().await.is_some() {}
        tracing::info!("fake-do shut down");
    }
}

impl Drop for FakeDo {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        lifecycle::kill_all_now(&self.shared);
    }
}

/// The file name of app `id`'s worker log in [`FakeDoConfig::log_dir`].
pub fn app_log_file_name(app_name: &str, app_id: &str) -> String {
    format!("{app_name}-{app_id}.log")
}

/// Every app the fake stored with a worker log in `log_dir`, as (app name, app ID), read back
/// from the log files' names (one file per app, kept after the app is deleted).
pub fn apps_with_logs(log_dir: &std::path::Path) -> Vec<(String, String)> {
    // `<name>-<id>.log`, the ID a UUID (36 characters).
    const ID_LEN: usize = 36;
    let mut apps = Vec::new();
    for entry in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
        let file = entry.file_name();
        let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".log")) else {
            continue;
        };
        let Some(split) =
            (stem.len().checked_sub(ID_LEN + 1)).filter(|&at| at > 0 && stem.is_char_boundary(at))
        else {
            continue;
        };
        let (name, id) = stem.split_at(split);
        apps.push((name.to_owned(), id[1..].to_owned()));
    }
    apps
}

#[cfg(test)]
mod tests {
    #[test]
    fn handle_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::FakeDo>();
        check::<super::Snapshot>();
    }
}
