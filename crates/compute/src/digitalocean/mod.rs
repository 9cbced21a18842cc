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
//!
//! Here: the provider and its lifecycle. Beside it: `create.rs` (create or adopt), `apps.rs`
//! (listing and looking apps up), `http.rs` (the retry layer, with `waits.rs` and `stats.rs`),
//! `model.rs` (the API's JSON), `config.rs` and `pricing.rs`.

mod apps;
mod config;
mod create;
mod http;
mod model;
pub mod pricing;
mod sizes;
mod stats;
#[cfg(test)]
mod tests;
mod waits;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use tokio::time::Instant;

use self::apps::created_at;
pub use self::config::{
    AccessToken, DEFAULT_API_URL, DEFAULT_COMPONENT_NAME, DEFAULT_INSTANCE_SIZE_SLUG,
    DigitalOceanConfig, ENV_ACCESS_TOKEN, ENV_API_URL, ENV_COMPONENT_NAME, ENV_INSTANCE_SIZE_SLUG,
    ENV_MAX_ATTEMPTS, ENV_REGION, ENV_REQUEST_TIMEOUT_SECS, KNOWN_REGIONS,
};
use self::http::ApiClient;
use self::model::{DeploymentEnvelope, readiness_of};
pub use self::stats::{Operation, OperationStats, RequestStats};
use crate::{
    ComputeHandle, ComputeOwner, ComputeProvider, ComputeSpec, ComputeSummary, Deleted, ErrorKind,
    FoundCompute, ProviderError, Readiness, UnitSize,
};

/// App-level env var (type `GENERAL`, scope `RUN_TIME`) holding the owner mark
/// ([`ComputeOwner`]) on every app this provider creates.
pub const OWNER_ENV: &str = "TEA_COMPUTE_OWNER";

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
        self.create_app(spec).await
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
