//! DigitalOcean App Platform provider: one app with one worker component per run.
//!
//! - [`DigitalOceanProvider::create_or_adopt`] creates the app (`POST /v2/apps`) at once: one
//!   request however many apps the account holds. Only when the create fails in a way that may
//!   have created the app anyway (5xx, timeout, connection error, name conflict) does it look
//!   the name up (listing the account) and adopt what it finds, so a unit of compute is never
//!   duplicated. It adopts only an app carrying this provider's owner mark; an app of that
//!   name marked by someone else (or not at all) is a permanent error and is left alone.
//! - Every app carries the owner mark as the app-level `GENERAL` variable
//!   [`OWNER_ENV`]; [`DigitalOceanProvider::list_ours`] keeps only apps with a
//!   generated name and exactly this mark.
//! - [`DigitalOceanProvider::readiness`] maps the deployment phase (`ACTIVE` ready;
//!   `ERROR`/`CANCELED`/`SUPERSEDED` failed; anything else pending).
//! - [`DigitalOceanProvider::delete`] deletes and then polls until the app reads as 404.
//! - Every request goes through one shared retry layer (the private `http` module) and is
//!   counted in [`RequestStats`].
//!
//! - [`DigitalOceanProvider::fit`] picks the instance size for a run's resources (a named
//!   size, or the cheapest that fits its CPUs and memory; see `sizes`), priced from the table.
//!
//! Secrets: the token is redacted in `Debug`, the `Authorization` header is marked sensitive,
//! and only env var keys (never values) are logged.

mod config;
mod http;
mod model;
pub mod pricing;
mod sizes;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, Url};
use tokio::time::Instant;

pub use self::config::{
    AccessToken, DEFAULT_API_URL, DEFAULT_COMPONENT_NAME, DEFAULT_INSTANCE_SIZE_SLUG,
    DigitalOceanConfig, ENV_ACCESS_TOKEN, ENV_API_URL, ENV_COMPONENT_NAME, ENV_INSTANCE_SIZE_SLUG,
    ENV_MAX_ATTEMPTS, ENV_REGION, ENV_REQUEST_TIMEOUT_SECS, KNOWN_REGIONS,
};
use self::http::{ApiClient, CallError};
pub use self::http::{Operation, OperationStats, RequestStats};
use self::model::{
    App, AppEnvelope, AppList, DeploymentEnvelope, WorkerSettings, create_request, readiness_of,
};
use crate::naming::is_portable_name;
use crate::{
    ComputeHandle, ComputeOwner, ComputeProvider, ComputeSpec, ComputeSummary, Deleted, ErrorKind,
    FoundCompute, ProviderError, Readiness, UnitSize,
};

/// App-level env var (type `GENERAL`, scope `RUN_TIME`) holding the owner mark
/// ([`ComputeOwner`]) on every app this provider creates.
pub const OWNER_ENV: &str = "TEA_COMPUTE_OWNER";

/// Apps requested per list page (the API maximum).
const PER_PAGE: u32 = 200;
/// Upper bound on list pages followed, against a server that never stops paging.
const MAX_PAGES: usize = 10_000;

/// [`ComputeProvider`] backed by DigitalOcean App Platform. One instance (and one HTTP client)
/// serves every run.
pub struct DigitalOceanProvider {
    cfg: DigitalOceanConfig,
    owner: ComputeOwner,
    api: ApiClient,
}

impl std::fmt::Debug for DigitalOceanProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigitalOceanProvider")
            .field("cfg", &self.cfg)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl DigitalOceanProvider {
    /// Validates `cfg` and builds the shared HTTP client; everything it creates is marked
    /// with `owner`, and only apps with that mark are listed or adopted.
    pub fn new(cfg: DigitalOceanConfig, owner: ComputeOwner) -> Result<Self, ProviderError> {
        let api = ApiClient::new(&cfg)?;
        Ok(Self { cfg, owner, api })
    }

    /// Shorthand for `DigitalOceanProvider::new(DigitalOceanConfig::from_env()?, owner)`.
    pub fn from_env(owner: ComputeOwner) -> Result<Self, ProviderError> {
        Self::new(DigitalOceanConfig::from_env()?, owner)
    }

    pub fn config(&self) -> &DigitalOceanConfig {
        &self.cfg
    }

    /// A snapshot of the request counters since this provider was built.
    pub fn request_stats(&self) -> RequestStats {
        self.api.stats()
    }

    /// The app named `name`, if any (lists every page).
    async fn find_by_name(&self, name: &str) -> Result<Option<App>, CallError> {
        Ok(self
            .list_all()
            .await?
            .into_iter()
            .find(|app| app.name() == Some(name) && app.id.is_some()))
    }

    /// Every app of the account, following `links.pages.next`.
    async fn list_all(&self) -> Result<Vec<App>, CallError> {
        let first = {
            let mut url = self.api.url(&["apps"]);
            url.query_pairs_mut()
                .append_pair("page", "1")
                .append_pair("per_page", &PER_PAGE.to_string());
            url
        };
        let mut apps = Vec::new();
        let mut seen = HashSet::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            if !seen.insert(url.to_string()) || seen.len() > MAX_PAGES {
                return Err(CallError {
                    status: None,
                    api_message: None,
                    error: ProviderError::transient(format!(
                        "DigitalOcean list: pagination did not terminate (at {})",
                        url.path()
                    )),
                });
            }
            let page: AppList = self
                .api
                .json(Operation::List, Method::GET, url, None)
                .await?;
            apps.extend(page.apps);
            next = page
                .links
                .and_then(|l| l.pages)
                .and_then(|p| p.next)
                .filter(|n| !n.trim().is_empty())
                .map(|n| self.resolve_next(&n));
        }
        Ok(apps)
    }

    /// The URL to request for a `links.pages.next` value. The token is only ever sent to the
    /// configured API origin: a link elsewhere keeps its query but is re-pointed at our URL.
    fn resolve_next(&self, next: &str) -> Url {
        let base = self.api.base();
        match base.join(next) {
            Ok(url) if url.origin() == base.origin() => url,
            parsed => {
                let mut url = self.api.url(&["apps"]);
                url.set_query(parsed.ok().as_ref().and_then(|u| u.query()));
                url
            }
        }
    }

    async fn get_app(&self, id: &str) -> Result<App, CallError> {
        let envelope: AppEnvelope = self
            .api
            .json(
                Operation::Get,
                Method::GET,
                self.api.url(&["apps", id]),
                None,
            )
            .await?;
        envelope.app.ok_or_else(|| CallError {
            status: Some(200),
            api_message: None,
            error: ProviderError::transient(format!(
                "DigitalOcean get app {id}: response had no `app`"
            )),
        })
    }

    fn adopt(&self, spec: &ComputeSpec, app: &App) -> Result<ComputeHandle, ProviderError> {
        if !self.owner.marks(app.owner_mark()) {
            return Err(ProviderError::permanent(format!(
                "DigitalOcean app {:?} (id {}) exists but is not ours: its owner mark {OWNER_ENV} \
                 is {}, this deployment is {:?}; it is neither adopted nor deleted (set \
                 COMPUTE_OWNER to tell deployments apart, or remove that app by hand)",
                spec.name,
                app.id.as_deref().unwrap_or("?"),
                app.owner_mark()
                    .map_or_else(|| "absent".to_owned(), |m| format!("{m:?}")),
                self.owner.as_str()
            )));
        }
        let id = app.id.clone().ok_or_else(|| {
            ProviderError::transient(format!(
                "DigitalOcean app {:?} was listed without an id",
                spec.name
            ))
        })?;
        let deployment_id = app.current_deployment().and_then(|d| d.id.clone());
        tracing::info!(
            name = %spec.name,
            app_id = %id,
            deployment_id = deployment_id.as_deref().unwrap_or("-"),
            "adopted existing DigitalOcean app"
        );
        Ok(ComputeHandle {
            id,
            name: spec.name.clone(),
            revision: deployment_id,
            adopted: true,
        })
    }

    /// After a create failure that may have created the app: look it up by name and adopt
    /// it, or return the create error when it is not there (or the lookup fails too).
    async fn adopt_after_failed_create(
        &self,
        spec: &ComputeSpec,
        failure: CallError,
    ) -> Result<ComputeHandle, ProviderError> {
        tracing::warn!(
            name = %spec.name,
            error = %failure.error,
            "create failed; checking whether the app exists anyway"
        );
        match self.find_by_name(&spec.name).await {
            Ok(Some(app)) => self.adopt(spec, &app),
            Ok(None) => Err(failure.error),
            Err(lookup) => Err(ProviderError {
                kind: failure.error.kind,
                message: format!(
                    "{}; looking the app up afterwards also failed: {}",
                    failure.error.message, lookup.error.message
                ),
            }),
        }
    }

    fn check_spec(spec: &ComputeSpec) -> Result<(), ProviderError> {
        if !is_portable_name(&spec.name) {
            return Err(ProviderError::permanent(format!(
                "compute name {:?} is not a valid DigitalOcean app name (2-32 characters matching \
                 ^[a-z][a-z0-9-]{{0,30}}[a-z0-9]$)",
                spec.name
            )));
        }
        if spec.image.repository.trim().is_empty() || spec.image.tag.trim().is_empty() {
            return Err(ProviderError::permanent(format!(
                "compute {:?}: image repository and tag must be set",
                spec.name
            )));
        }
        let mut keys = HashSet::new();
        for var in &spec.env {
            // The API's `^[_A-Za-z][_A-Za-z0-9]*$`.
            if !tea_contract::is_env_var_name(&var.key) {
                return Err(ProviderError::permanent(format!(
                    "compute {:?}: environment variable key {:?} must match ^[_A-Za-z][_A-Za-z0-9]*$",
                    spec.name, var.key
                )));
            }
            if var.key == OWNER_ENV {
                return Err(ProviderError::permanent(format!(
                    "compute {:?}: environment variable {OWNER_ENV} is reserved for the owner mark",
                    spec.name
                )));
            }
            if !keys.insert(var.key.as_str()) {
                return Err(ProviderError::permanent(format!(
                    "compute {:?}: environment variable {:?} is set twice",
                    spec.name, var.key
                )));
            }
        }
        Ok(())
    }
}

/// Whether a failed create may nevertheless have created the app (so look before failing).
fn may_have_created(e: &CallError, name: &str) -> bool {
    if e.kind() == ErrorKind::Transient {
        return true;
    }
    match e.status {
        Some(409) => true,
        Some(400 | 422) => e.api_message.as_deref().is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            m.contains(name)
                || (m.contains("name")
                    && ["already", "taken", "exist", "in use", "unique", "conflict"]
                        .iter()
                        .any(|w| m.contains(w)))
        }),
        _ => false,
    }
}

/// How the registry describes and builds the DigitalOcean provider.
#[async_trait]
impl crate::registry::ProviderSettings for DigitalOceanConfig {
    fn describe(&self) -> String {
        format!(
            "api_url={} instance_size={} region={}",
            self.api_url,
            self.instance_size_slug,
            self.region.as_deref().unwrap_or("(nearest)")
        )
    }

    fn build(
        self: Box<Self>,
        owner: ComputeOwner,
    ) -> Result<std::sync::Arc<dyn ComputeProvider>, ProviderError> {
        Ok(std::sync::Arc::new(DigitalOceanProvider::new(
            *self, owner,
        )?))
    }
}

#[async_trait]
impl ComputeProvider for DigitalOceanProvider {
    fn registry_entry(&self) -> &'static crate::registry::Provider {
        &crate::registry::DIGITALOCEAN
    }

    fn owner(&self) -> &ComputeOwner {
        &self.owner
    }

    /// The instance size's price by the second (App Platform bills by the second).
    fn usd_per_second(&self) -> Option<f64> {
        self.cfg.usd_per_month.map(pricing::usd_per_second)
    }

    /// App Platform restarts a component whose process exits.
    fn restarts_exited_workers(&self) -> bool {
        true
    }

    /// An instance size: the run's `size`, the smallest that fits its `cpu` and `memory`, or
    /// the configured one; priced from the table (the configured size at its configured price).
    async fn fit(&self, resources: &tea_contract::Resources) -> Result<UnitSize, ProviderError> {
        let slug = sizes::fit(self.kind(), &self.cfg.instance_size_slug, resources)?;
        let known = pricing::instance_size(&slug);
        let usd_per_month = if slug == self.cfg.instance_size_slug {
            self.cfg.usd_per_month
        } else {
            known.map(|s| s.usd_per_month)
        };
        Ok(UnitSize {
            cpu: known.map(|s| tea_contract::Cpus::from_millis(s.cpus * 1000)),
            memory: known.map(|s| s.memory_mib << 20),
            usd_per_second: usd_per_month.map(pricing::usd_per_second),
            size: Some(slug),
            gpu: None,
        })
    }

    async fn create_or_adopt(&self, spec: &ComputeSpec) -> Result<ComputeHandle, ProviderError> {
        Self::check_spec(spec)?;
        let size = self.fit(&spec.resources).await?;
        let slug = size.size.as_deref().unwrap_or(&self.cfg.instance_size_slug);
        // No lookup first: a lookup lists the whole account. The name is unique per account,
        // so a create of an existing name fails (409) and the lookup happens only then.
        let settings = WorkerSettings {
            owner: self.owner.as_str(),
            component_name: &self.cfg.component_name,
            instance_size_slug: slug,
            region: self.cfg.region.as_deref(),
        };
        let worker_spec = spec.for_worker();
        let body = serde_json::to_vec(&create_request(&worker_spec, &settings)).map_err(|e| {
            ProviderError::permanent(format!("cannot encode the create request: {e}"))
        })?;
        let env_keys: Vec<&str> = spec.env.iter().map(|e| e.key.as_str()).collect();
        let secret_keys: Vec<&str> = spec
            .env
            .iter()
            .filter(|e| e.secret)
            .map(|e| e.key.as_str())
            .collect();
        tracing::info!(
            name = %spec.name,
            owner = %self.owner,
            repository = %spec.image.repository,
            tag = %spec.image.tag,
            slug,
            region = self.cfg.region.as_deref().unwrap_or("-"),
            ?env_keys,
            ?secret_keys,
            "creating DigitalOcean app"
        );

        let created: Result<AppEnvelope, CallError> = self
            .api
            .json(
                Operation::Create,
                Method::POST,
                self.api.url(&["apps"]),
                Some(body),
            )
            .await;
        let app = match created {
            Ok(AppEnvelope { app: Some(app) }) if app.id.is_some() => app,
            Ok(_) => {
                // A 200 without an app id: the app may exist; the lookup settles it.
                let e = CallError {
                    status: Some(200),
                    api_message: None,
                    error: ProviderError::transient(format!(
                        "DigitalOcean create {:?}: response had no app id",
                        spec.name
                    )),
                };
                return self.adopt_after_failed_create(spec, e).await;
            }
            Err(e) if may_have_created(&e, &spec.name) => {
                return self.adopt_after_failed_create(spec, e).await;
            }
            Err(e) => return Err(e.into()),
        };
        let id = app.id.clone().unwrap_or_default();
        // The spec guarantees pending_deployment is the deployment this call started.
        let deployment_id = app
            .pending_deployment
            .as_ref()
            .and_then(|d| d.id.clone())
            .or_else(|| app.current_deployment().and_then(|d| d.id.clone()));
        tracing::info!(
            name = %spec.name,
            app_id = %id,
            deployment_id = deployment_id.as_deref().unwrap_or("-"),
            "created DigitalOcean app"
        );
        Ok(ComputeHandle {
            id,
            name: spec.name.clone(),
            revision: deployment_id,
            adopted: false,
        })
    }

    async fn readiness(&self, handle: &ComputeHandle) -> Result<Readiness, ProviderError> {
        let deployment_id = match handle.revision.as_deref().filter(|d| !d.is_empty()) {
            Some(d) => d.to_string(),
            None => {
                let app = self.get_app(&handle.id).await?;
                match app.current_deployment() {
                    Some(d) if d.phase.is_some() => return Ok(readiness_of(d)),
                    Some(d) => d.id.clone().unwrap_or_default(),
                    None => {
                        return Ok(Readiness::Pending {
                            phase: "NO_DEPLOYMENT".into(),
                            detail: Some("the app has no deployment yet".into()),
                        });
                    }
                }
            }
        };
        let url = self
            .api
            .url(&["apps", &handle.id, "deployments", &deployment_id]);
        let envelope: DeploymentEnvelope = self
            .api
            .json(Operation::GetDeployment, Method::GET, url, None)
            .await?;
        let deployment = envelope.deployment.ok_or_else(|| {
            ProviderError::transient(format!(
                "DigitalOcean deployment {deployment_id} of app {}: response had no `deployment`",
                handle.id
            ))
        })?;
        Ok(readiness_of(&deployment))
    }

    async fn delete(&self, id: &str) -> Result<Deleted, ProviderError> {
        if id.trim().is_empty() {
            return Err(ProviderError::permanent(
                "cannot delete a DigitalOcean app with an empty id",
            ));
        }
        let url = self.api.url(&["apps", id]);
        match self
            .api
            .send(Operation::Delete, Method::DELETE, url, None)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::info!(app_id = %id, "DigitalOcean app already gone");
                return Ok(Deleted::AlreadyGone);
            }
            Err(e) => return Err(e.into()),
        }

        let timeout = self.cfg.delete_confirm_timeout;
        let deadline = Instant::now() + timeout;
        let max_pause = self
            .cfg
            .delete_poll_max_interval
            .max(Duration::from_millis(1));
        let mut pause = self
            .cfg
            .base_backoff
            .clamp(Duration::from_millis(1), max_pause);
        loop {
            let last = match self.get_app(id).await {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    tracing::info!(app_id = %id, "DigitalOcean app deleted");
                    return Ok(Deleted::Removed);
                }
                Ok(_) => "it still exists".to_string(),
                Err(e) if e.kind() == ErrorKind::Transient => e.error.message,
                Err(e) => return Err(e.into()),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(ProviderError::transient(format!(
                    "DigitalOcean app {id}: delete accepted but not confirmed within {}s ({last})",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(max_pause);
        }
    }

    fn api_request_counts(&self) -> Vec<(String, u16, u64)> {
        let stats = self.request_stats();
        let mut counts = Vec::new();
        for (op, op_stats) in &stats.operations {
            for (status, n) in &op_stats.statuses {
                counts.push((op.as_str().to_owned(), *status, *n));
            }
            if op_stats.transport_errors > 0 {
                counts.push((op.as_str().to_owned(), 0, op_stats.transport_errors));
            }
        }
        counts
    }

    async fn list_ours(&self, prefix: &str) -> Result<Vec<ComputeSummary>, ProviderError> {
        let apps = self.list_all().await?;
        Ok(apps
            .into_iter()
            .filter_map(|app| {
                let name = app.name()?.to_string();
                let id = app.id.clone()?;
                let ours =
                    name.starts_with(prefix) && self.owner.claim(&name, app.owner_mark()).is_ok();
                ours.then(|| ComputeSummary {
                    id,
                    name,
                    created_at: created_at(&app),
                })
            })
            .collect())
    }

    async fn find(&self, name: &str) -> Result<Option<FoundCompute>, ProviderError> {
        let Some(app) = self.find_by_name(name).await? else {
            return Ok(None);
        };
        Ok(Some(FoundCompute {
            unit: ComputeSummary {
                id: app.id.clone().unwrap_or_default(),
                name: name.to_owned(),
                created_at: created_at(&app),
            },
            mark: app.owner_mark().map(str::to_owned),
        }))
    }
}

/// The app's creation time, when the API gave a real one.
fn created_at(app: &App) -> Option<String> {
    app.created_at
        .clone()
        .filter(|t| !t.is_empty() && !t.starts_with("0001-01-01"))
}
