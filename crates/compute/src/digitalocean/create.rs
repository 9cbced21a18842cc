//! Creating a run's app, or adopting it: the create is sent at once (one request however many
//! apps the account holds); only a failure that may have created the app anyway (5xx, timeout,
//! connection error, name conflict) looks the name up and adopts what it finds, and only an
//! app carrying this provider's owner mark.

use std::collections::HashSet;

use reqwest::Method;

use super::{
    DigitalOceanProvider, OWNER_ENV,
    http::CallError,
    model::{App, AppEnvelope, WorkerSettings, create_request},
    stats::Operation,
};
use crate::{ComputeHandle, ComputeSpec, ErrorKind, ProviderError, naming::is_portable_name};

impl DigitalOceanProvider {
    /// Creates the app of `spec`, or adopts it when a failed create may have created it.
    pub(super) async fn create_app(
        &self,
        spec: &ComputeSpec,
    ) -> Result<ComputeHandle, ProviderError> {
        Self::check_spec(spec)?;
        let size = crate::ComputeProvider::fit(self, &spec.resources).await?;
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

    pub(super) fn adopt(
        &self,
        spec: &ComputeSpec,
        app: &App,
    ) -> Result<ComputeHandle, ProviderError> {
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
    pub(super) async fn adopt_after_failed_create(
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

    pub(super) fn check_spec(spec: &ComputeSpec) -> Result<(), ProviderError> {
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
pub(super) fn may_have_created(e: &CallError, name: &str) -> bool {
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
