//! Docker provider: one container per unit of compute, on a Docker Engine, through its API
//! (`bollard`; never the docker CLI).
//!
//! Each unit is a container named after the compute (so a retried create meets the engine's
//! name uniqueness, answered 409, and adopts), started from the run's image
//! `[registry/]repository:tag` (pulled first when the engine does not have it), with the
//! same environment an App Platform app gets (queue, owner run, Temporal settings), its
//! secrets in a file the worker deletes at start rather than in its environment (see
//! [`secrets`]), and two labels:
//!
//! ```text
//! io.github.temporal-external-activity.owner     the ownership mark (ComputeOwner)
//! io.github.temporal-external-activity.compute   the compute name
//! ```
//!
//! Only containers carrying this provider's owner label are listed, adopted or deleted; a
//! container with our name and another (or no) owner is a permanent error and is left alone.
//! Readiness follows the container's state (`created` is pending, `running` is ready, `exited`
//! or `dead` is failed, with the exit code and the last log lines). Delete stops the container
//! (SIGTERM, then SIGKILL after the stop grace), copies its log to
//! `<log_dir>/<name>.log` (through a temporary file renamed into place: two deletes of one
//! unit never mix their copies), removes it and confirms it is gone.
//!
//! Limits: the run's `resources` (CPUs, memory, GPUs) or else `DOCKER_CPUS`/`DOCKER_MEMORY`,
//! see [`limits`].
//!
//! Networking: containers join [`DockerConfig::network`] (default `host`, so a dev server on the
//! host is reached at the address the workflow-worker uses). On any other network the host's
//! loopback address means the container itself: set [`DockerConfig::temporal_address`] (for
//! example `host.docker.internal:7233`; that name is mapped to the host on every network but
//! `host`), or create fails with a message that says so.
//!
//! Limits: the run's `resources` (CPUs, memory, GPUs) or else `DOCKER_CPUS`/`DOCKER_MEMORY`,
//! see [`limits`].
//!
//! Here: the provider and its lifecycle (create or adopt, readiness, delete, listing). Beside
//! it: `engine.rs` (the connection, preflight, engine errors), `image.rs` (image references,
//! pulling), `container.rs` (environment, create body, secrets file, adopting), `logs.rs`
//! (log tails and kept logs), `secrets.rs` and `config.rs`.

mod config;
mod container;
mod engine;
mod image;
mod limits;
mod logs;
mod secrets;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::{path::PathBuf, time::Duration};

use async_trait::async_trait;
use bollard::{
    Docker,
    models::{ContainerInspectResponse, ContainerStateStatusEnum},
    query_parameters::{
        CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    },
};
use tokio::sync::OnceCell;

pub use config::{DEFAULT_NETWORK, DEFAULT_PULL_TIMEOUT, DEFAULT_STOP_GRACE, DockerConfig};
pub use engine::{list_labelled, preflight};
pub use image::{image_reference, split_reference};

use crate::{
    ComputeHandle, ComputeOwner, ComputeProvider, ComputeSpec, ComputeSummary, Deleted,
    FoundCompute, ProviderError, Readiness, UnitSize, naming::is_portable_name,
};
use container::{mark_of, short_id, state_of};
use engine::{connect, engine_error, engine_message, negotiate, status_of};

/// Label holding the ownership mark.
pub const OWNER_LABEL: &str = "io.github.temporal-external-activity.owner";
/// Label holding the compute name.
pub const COMPUTE_LABEL: &str = "io.github.temporal-external-activity.compute";

/// Host name mapped to the host on every network but `host`.
pub const HOST_ALIAS: &str = "host.docker.internal";

/// How many of the last log lines a `Failed` readiness quotes.
const LOG_LINES_IN_FAILURE: usize = 5;

/// Runs external workers as containers; see the [module documentation](self).
pub struct DockerProvider {
    cfg: DockerConfig,
    owner: ComputeOwner,
    /// The client, its API version negotiated with the engine on first use.
    engine: OnceCell<Docker>,
    /// The client before negotiation (no connection is made until a call).
    unnegotiated: Docker,
}

impl DockerProvider {
    /// A provider over `cfg` (no connection is made yet), creating the log directory.
    pub fn new(cfg: DockerConfig, owner: ComputeOwner) -> Result<Self, ProviderError> {
        std::fs::create_dir_all(&cfg.log_dir).map_err(|e| {
            ProviderError::permanent(format!(
                "cannot create the log directory {}: {e}",
                cfg.log_dir.display()
            ))
        })?;
        Ok(Self {
            unnegotiated: connect(&cfg)?,
            cfg,
            owner,
            engine: OnceCell::new(),
        })
    }

    /// The configuration this provider runs with.
    pub fn config(&self) -> &DockerConfig {
        &self.cfg
    }

    /// Where the log of the compute `name` is kept after delete.
    pub fn kept_log_path(&self, name: &str) -> PathBuf {
        self.cfg.log_dir.join(format!("{name}.log"))
    }

    /// The engine's client, with the API version both sides speak.
    async fn engine(&self) -> Result<&Docker, ProviderError> {
        self.engine
            .get_or_try_init(|| negotiate(self.unnegotiated.clone(), &self.cfg))
            .await
    }

    fn checked_name<'a>(&self, name: &'a str) -> Result<&'a str, ProviderError> {
        if is_portable_name(name) {
            Ok(name)
        } else {
            Err(ProviderError::permanent(format!(
                "invalid compute name {name:?} (must match ^[a-z][a-z0-9-]{{0,30}}[a-z0-9]$)"
            )))
        }
    }

    /// A permanent error unless `container` carries this provider's owner label.
    fn check_mark(
        &self,
        name: &str,
        container: &ContainerInspectResponse,
        doing: &str,
    ) -> Result<(), ProviderError> {
        let mark = mark_of(container);
        if self.owner.marks(mark) {
            return Ok(());
        }
        Err(ProviderError::permanent(format!(
            "container {name} exists but is not ours: its {OWNER_LABEL} label is {}, this \
             deployment is {:?}; refusing to {doing} it (set COMPUTE_OWNER to tell deployments \
             apart, or remove the container by hand)",
            mark.map_or_else(|| "absent".to_owned(), |m| format!("{m:?}")),
            self.owner.as_str()
        )))
    }
}

/// How the registry describes, checks and builds the Docker provider.
#[async_trait]
impl crate::registry::ProviderSettings for DockerConfig {
    fn describe(&self) -> String {
        format!(
            "engine={} network={} temporal_address={} log_dir={}",
            self.docker_host.as_deref().unwrap_or("(local socket)"),
            self.network,
            self.temporal_address
                .as_deref()
                .unwrap_or("(the worker's own)"),
            self.log_dir.display()
        )
    }

    async fn preflight(&self) -> Result<Option<String>, ProviderError> {
        preflight(self).await.map(Some)
    }

    fn build(
        self: Box<Self>,
        owner: ComputeOwner,
    ) -> Result<std::sync::Arc<dyn ComputeProvider>, ProviderError> {
        Ok(std::sync::Arc::new(DockerProvider::new(*self, owner)?))
    }
}

#[async_trait]
impl ComputeProvider for DockerProvider {
    fn registry_entry(&self) -> &'static crate::registry::Provider {
        &crate::registry::DOCKER
    }

    fn owner(&self) -> &ComputeOwner {
        &self.owner
    }

    async fn fit(&self, resources: &tea_contract::Resources) -> Result<UnitSize, ProviderError> {
        let engine = match resources.gpu {
            Some(_) => Some(self.engine().await?),
            None => None,
        };
        limits::fit(self.kind(), &self.cfg, engine, resources).await
    }

    async fn create_or_adopt(&self, spec: &ComputeSpec) -> Result<ComputeHandle, ProviderError> {
        self.fit(&spec.resources).await?;
        let name = self.checked_name(&spec.name)?;
        let image = image_reference(&spec.image)?;
        let (env, secrets) = self.container_env(spec)?;
        let docker = self.engine().await?;
        // Our container may be in place already (a retried create): adopt it before pulling.
        match docker.inspect_container(name, None).await {
            Ok(container) => {
                return self
                    .adopt(docker, name, Some(container), secrets.as_ref())
                    .await;
            }
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(engine_error(&format!("inspecting container {name}"), e)),
        }
        self.ensure_image(docker, &image).await?;
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let created = match docker
            .create_container(Some(options), self.container_body(spec, &image, env))
            .await
        {
            Ok(created) => created,
            Err(e) if status_of(&e) == Some(409) => {
                return self.adopt(docker, name, None, secrets.as_ref()).await;
            }
            Err(e) if matches!(status_of(&e), Some(400 | 404)) => {
                return Err(ProviderError::permanent(format!(
                    "the Docker engine refused to create container {name} from image {image}: {}",
                    engine_message(&e)
                )));
            }
            Err(e) => return Err(engine_error(&format!("creating container {name}"), e)),
        };
        if let Some(file) = &secrets {
            // The container stays (labelled) on failure: the caller deletes it by name.
            self.upload_secrets(docker, name, file).await?;
        }
        if let Err(e) = docker.start_container(name, None).await {
            // The container stays (labelled): the caller deletes it by name.
            let message = format!(
                "starting container {name} (image {image}): {}",
                engine_message(&e)
            );
            return Err(match status_of(&e) {
                Some(400..=499) => {
                    ProviderError::permanent(format!("the Docker engine refused {message}"))
                }
                _ => ProviderError::transient(message),
            });
        }
        let revision = short_id(&Some(created.id));
        let env_keys: Vec<&str> = spec.env.iter().map(|v| v.key.as_str()).collect();
        tracing::info!(
            name,
            id = %revision,
            image,
            network = %self.cfg.network,
            ?env_keys,
            "started container"
        );
        Ok(ComputeHandle {
            id: name.to_owned(),
            name: name.to_owned(),
            revision: Some(revision),
            adopted: false,
        })
    }

    async fn readiness(&self, handle: &ComputeHandle) -> Result<Readiness, ProviderError> {
        let name = self.checked_name(&handle.id)?;
        let docker = self.engine().await?;
        let container = match docker.inspect_container(name, None).await {
            Ok(container) => container,
            Err(e) if status_of(&e) == Some(404) => {
                return Err(ProviderError::not_found(format!(
                    "no container named {name}"
                )));
            }
            Err(e) => return Err(engine_error(&format!("inspecting container {name}"), e)),
        };
        let state = container.state.clone().unwrap_or_default();
        let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
        Ok(match status {
            ContainerStateStatusEnum::RUNNING => Readiness::Ready {
                phase: "running".into(),
            },
            ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD => {
                let mut reason = format!(
                    "container exited with code {}",
                    state
                        .exit_code
                        .map_or_else(|| "?".to_owned(), |c| c.to_string())
                );
                if state.oom_killed == Some(true) {
                    reason.push_str(" (killed: out of memory)");
                }
                if let Some(error) = state.error.filter(|e| !e.is_empty()) {
                    reason.push_str(&format!("; engine error: {error}"));
                }
                let tail = self.log_tail(docker, name, LOG_LINES_IN_FAILURE).await;
                reason.push_str(&format!("; last log lines: {tail}"));
                Readiness::Failed {
                    phase: status.to_string(),
                    reason,
                }
            }
            other => Readiness::Pending {
                phase: if other == ContainerStateStatusEnum::EMPTY {
                    "unknown".to_owned()
                } else {
                    other.to_string()
                },
                detail: None,
            },
        })
    }

    async fn delete(&self, id: &str) -> Result<Deleted, ProviderError> {
        let name = self.checked_name(id)?;
        let docker = self.engine().await?;
        let container = match docker.inspect_container(name, None).await {
            Ok(container) => container,
            Err(e) if status_of(&e) == Some(404) => return Ok(Deleted::AlreadyGone),
            Err(e) => return Err(engine_error(&format!("inspecting container {name}"), e)),
        };
        self.check_mark(name, &container, "delete")?;
        let mut how = "was not running".to_owned();
        if matches!(
            state_of(&container),
            Some(
                ContainerStateStatusEnum::RUNNING
                    | ContainerStateStatusEnum::RESTARTING
                    | ContainerStateStatusEnum::PAUSED
            )
        ) {
            let grace = self.cfg.stop_grace.as_secs().max(1);
            let options = StopContainerOptionsBuilder::new()
                .t(i32::try_from(grace).unwrap_or(i32::MAX))
                .build();
            match docker.stop_container(name, Some(options)).await {
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(404) => return Ok(Deleted::AlreadyGone),
                Err(e) => return Err(engine_error(&format!("stopping container {name}"), e)),
            }
            how = format!(
                "stopped (SIGTERM, SIGKILL after {})",
                humantime::format_duration(Duration::from_secs(grace))
            );
        }
        let container_id = short_id(&container.id);
        match self.keep_log(docker, name, &container_id, &how).await {
            Ok(path) => tracing::debug!(name, log = %path.display(), "container log kept"),
            Err(e) => tracing::warn!(name, error = %e, "cannot keep the container's log"),
        }
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(name, Some(options)).await {
            Ok(()) => {}
            // Gone already, or being removed by another call: confirmed below either way.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => {}
            Err(e) => return Err(engine_error(&format!("removing container {name}"), e)),
        }
        self.confirm_gone(docker, name).await?;
        tracing::info!(name, id = %container_id, log = %self.kept_log_path(name).display(), how = %how, "deleted container");
        Ok(Deleted::Removed)
    }

    async fn list_ours(&self, prefix: &str) -> Result<Vec<ComputeSummary>, ProviderError> {
        let docker = self.engine().await?;
        let containers = list_labelled(docker, &format!("{OWNER_LABEL}={}", self.owner.as_str()))
            .await
            .map_err(|e| engine_error("listing containers", e))?;
        let mut units: Vec<ComputeSummary> = containers
            .into_iter()
            .filter_map(|c| {
                // The engine filtered by label; claimed again so a filter it ignores (an old
                // engine, a proxy) can never let foreign compute through.
                let mark = c.labels.as_ref().and_then(|l| l.get(OWNER_LABEL));
                let name = c
                    .names
                    .as_ref()?
                    .iter()
                    .map(|n| n.trim_start_matches('/'))
                    .find(|n| {
                        n.starts_with(prefix)
                            && self.owner.claim(n, mark.map(String::as_str)).is_ok()
                    })?
                    .to_owned();
                let created_at = c
                    .created
                    .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
                    .map(|t| t.to_rfc3339());
                Some(ComputeSummary {
                    id: name.clone(),
                    name,
                    created_at,
                })
            })
            .collect();
        units.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(units)
    }

    async fn find(&self, name: &str) -> Result<Option<FoundCompute>, ProviderError> {
        if !is_portable_name(name) {
            return Ok(None);
        }
        let docker = self.engine().await?;
        let container = match docker.inspect_container(name, None).await {
            Ok(container) => container,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(engine_error(&format!("inspecting container {name}"), e)),
        };
        let mark = mark_of(&container).map(str::to_owned);
        Ok(Some(FoundCompute {
            unit: ComputeSummary {
                id: name.to_owned(),
                name: name.to_owned(),
                created_at: container.created,
            },
            mark,
        }))
    }
}
