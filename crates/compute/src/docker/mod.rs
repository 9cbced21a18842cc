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

mod config;
mod limits;
mod secrets;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bollard::{
    Docker,
    errors::Error as EngineError,
    models::{ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig},
    query_parameters::{
        CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
        LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
        UploadToContainerOptionsBuilder,
    },
};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

pub use config::{DEFAULT_NETWORK, DEFAULT_PULL_TIMEOUT, DEFAULT_STOP_GRACE, DockerConfig};

use crate::{
    ComputeHandle, ComputeOwner, ComputeProvider, ComputeSpec, ComputeSummary, Deleted,
    FoundCompute, ImageRef, ProviderError, Readiness, UnitSize, naming::is_portable_name,
};

/// Label holding the ownership mark.
pub const OWNER_LABEL: &str = "io.github.temporal-external-activity.owner";
/// Label holding the compute name.
pub const COMPUTE_LABEL: &str = "io.github.temporal-external-activity.compute";

/// Host name mapped to the host on every network but `host`.
pub const HOST_ALIAS: &str = "host.docker.internal";

/// How long delete waits for a container the engine is already removing to be gone.
const REMOVE_CONFIRM: Duration = Duration::from_secs(30);
/// How long an adopting create waits for a container whose name is taken to be inspectable.
const NAME_RESERVED_WAIT: Duration = Duration::from_secs(10);
/// Interval of the polls of a removal in progress.
const POLL: Duration = Duration::from_millis(100);
/// Per-request timeout of engine calls (a stop adds its grace).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How many of the last log lines a `Failed` readiness quotes.
const LOG_LINES_IN_FAILURE: usize = 5;

/// The secret variables of a container, for its secrets file (never printed).
struct SecretsFile(std::collections::BTreeMap<String, String>);

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

    /// The container's environment (the spec's, with the Temporal address containers use),
    /// and what goes into its secrets file when its secrets do not go into the environment.
    fn container_env(
        &self,
        spec: &ComputeSpec,
    ) -> Result<(Vec<String>, Option<SecretsFile>), ProviderError> {
        let (plain, file) = secrets::split(spec.worker_env(), self.cfg.secrets_in_env);
        let mut env = Vec::with_capacity(plain.len());
        for var in &plain {
            let value = if var.key == "TEMPORAL_ADDRESS" {
                match &self.cfg.temporal_address {
                    Some(address) => address.clone(),
                    None if self.cfg.network != "host" && is_loopback_address(&var.value) => {
                        return Err(ProviderError::permanent(format!(
                            "the Temporal address {} is a loopback address, which a container \
                             on network {:?} cannot reach: set DOCKER_TEMPORAL_ADDRESS (e.g. \
                             {HOST_ALIAS}:7233, with the server listening on the host's bridge \
                             address) or DOCKER_NETWORK=host",
                            var.value, self.cfg.network
                        )));
                    }
                    None => var.value.clone(),
                }
            } else {
                var.value.clone()
            };
            env.push(format!("{}={value}", var.key));
        }
        Ok((env, (!file.is_empty()).then_some(SecretsFile(file))))
    }

    /// Uploads the secrets file into the created (not yet started) container `name`, owned by
    /// the container's user.
    async fn upload_secrets(
        &self,
        docker: &Docker,
        name: &str,
        file: &SecretsFile,
    ) -> Result<(), ProviderError> {
        let user = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| engine_error(&format!("inspecting container {name}"), e))?
            .config
            .and_then(|c| c.user)
            .unwrap_or_default();
        let owner = secrets::Owner::of_user(&user);
        let options = UploadToContainerOptionsBuilder::new()
            .path("/")
            .copy_uidgid(if owner == secrets::Owner::ByName {
                "true"
            } else {
                "false"
            })
            .build();
        let archive = secrets::archive(&file.0, owner);
        docker
            .upload_to_container(name, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|e| {
                engine_error(
                    &format!("putting the secrets file into container {name}"),
                    e,
                )
            })
    }

    fn container_body(
        &self,
        spec: &ComputeSpec,
        image: &str,
        env: Vec<String>,
    ) -> ContainerCreateBody {
        let labels = HashMap::from([
            (OWNER_LABEL.to_owned(), self.owner.as_str().to_owned()),
            (COMPUTE_LABEL.to_owned(), spec.name.clone()),
        ]);
        let on_host_network = self.cfg.network == "host";
        let mut body = ContainerCreateBody {
            image: Some(image.to_owned()),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.cfg.network.clone()),
                // The host under one name on every network (the engine resolves host-gateway).
                extra_hosts: (!on_host_network).then(|| vec![format!("{HOST_ALIAS}:host-gateway")]),
                // A real init as PID 1: signals are forwarded and orphaned job processes reaped.
                init: Some(true),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Some(host) = body.host_config.as_mut() {
            limits::apply(host, &self.cfg, &spec.resources);
        }
        body
    }

    /// Makes sure the engine has `image`, pulling it when it does not. A pull that fails is a
    /// permanent error naming the image: waiting will not make it appear.
    async fn ensure_image(&self, docker: &Docker, image: &str) -> Result<(), ProviderError> {
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(engine_error(&format!("inspecting image {image}"), e)),
        }
        let (repository, tag) = split_reference(image);
        tracing::info!(image, "image not on the engine; pulling it");
        let started = Instant::now();
        let pull = docker
            .create_image(
                Some(
                    CreateImageOptionsBuilder::new()
                        .from_image(repository)
                        .tag(tag)
                        .build(),
                ),
                None,
                None,
            )
            .try_for_each(|_| async { Ok(()) });
        match tokio::time::timeout(self.cfg.pull_timeout, pull).await {
            Ok(Ok(())) => {
                tracing::info!(image, elapsed = ?started.elapsed(), "image pulled");
                Ok(())
            }
            Ok(Err(e)) if is_connection_error(&e) => {
                Err(engine_error(&format!("pulling image {image}"), e))
            }
            Ok(Err(e)) => Err(ProviderError::permanent(format!(
                "image {image} is not on the Docker engine and pulling it failed: {}",
                engine_message(&e)
            ))),
            Err(_) => Err(ProviderError::permanent(format!(
                "image {image} is not on the Docker engine and pulling it did not finish within {}",
                humantime::format_duration(self.cfg.pull_timeout)
            ))),
        }
    }

    /// Adopts the container `name` that a create found in place (ours, or an error).
    /// `found` is the container when the caller has just inspected it; `secrets` the archive of
    /// its secrets file, put in before a container that was never started is started.
    async fn adopt(
        &self,
        docker: &Docker,
        name: &str,
        found: Option<ContainerInspectResponse>,
        secrets: Option<&SecretsFile>,
    ) -> Result<ComputeHandle, ProviderError> {
        // The engine reserves a name before the container it names can be inspected: a
        // concurrent create's container shows up shortly.
        let deadline = Instant::now() + NAME_RESERVED_WAIT;
        let container = match found {
            Some(container) => container,
            None => loop {
                match docker.inspect_container(name, None).await {
                    Ok(container) => break container,
                    Err(e) if status_of(&e) == Some(404) && Instant::now() < deadline => {
                        tokio::time::sleep(POLL).await;
                    }
                    Err(e) if status_of(&e) == Some(404) => {
                        return Err(ProviderError::transient(format!(
                            "container {name} is in place (create answered 409) but could not be \
                             inspected within {}",
                            humantime::format_duration(NAME_RESERVED_WAIT)
                        )));
                    }
                    Err(e) => return Err(engine_error(&format!("inspecting container {name}"), e)),
                }
            },
        };
        self.check_mark(name, &container, "adopt")?;
        if state_of(&container) == Some(ContainerStateStatusEnum::CREATED) {
            // Created by an earlier attempt that stopped before starting it (perhaps before
            // it put the secrets file in).
            if let Some(file) = secrets {
                self.upload_secrets(docker, name, file).await?;
            }
            docker
                .start_container(name, None)
                .await
                .map_err(|e| engine_error(&format!("starting container {name}"), e))?;
        }
        tracing::info!(name, id = %short_id(&container.id), "adopted container");
        Ok(ComputeHandle {
            id: name.to_owned(),
            name: name.to_owned(),
            revision: container.id.as_ref().map(|_| short_id(&container.id)),
            adopted: true,
        })
    }

    /// The last `lines` lines of the container's log, joined with ` | `.
    async fn log_tail(&self, docker: &Docker, name: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let chunks: Vec<String> = docker
            .logs(name, Some(options))
            .filter_map(|chunk| async move { chunk.ok().map(|c| c.to_string()) })
            .collect()
            .await;
        let text = chunks.concat();
        let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if tail.is_empty() {
            "(none)".to_owned()
        } else {
            tail.join(" | ")
        }
    }

    /// Copies the container's whole log to [`Self::kept_log_path`], with a closing line (see
    /// [`write_kept_log`]: two deletes of one unit never mix their copies).
    async fn keep_log(
        &self,
        docker: &Docker,
        name: &str,
        id: &str,
        how: &str,
    ) -> std::io::Result<PathBuf> {
        let path = self.kept_log_path(name);
        let header =
            format!("=== log of container {name} ({id}), kept by the docker compute provider");
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        write_kept_log(&path, &header, docker.logs(name, Some(options)), how).await?;
        Ok(path)
    }

    /// Polls until the container is gone; an error once [`REMOVE_CONFIRM`] passes.
    async fn confirm_gone(&self, docker: &Docker, name: &str) -> Result<(), ProviderError> {
        let deadline = Instant::now() + REMOVE_CONFIRM;
        loop {
            match docker.inspect_container(name, None).await {
                Err(e) if status_of(&e) == Some(404) => return Ok(()),
                Err(e) => {
                    return Err(engine_error(
                        &format!("confirming container {name} is gone"),
                        e,
                    ));
                }
                Ok(_) if Instant::now() >= deadline => {
                    return Err(ProviderError::transient(format!(
                        "container {name} still exists {} after it was removed",
                        humantime::format_duration(REMOVE_CONFIRM)
                    )));
                }
                Ok(_) => tokio::time::sleep(POLL).await,
            }
        }
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

/// Writes a kept log to `path`: the `header` line, every chunk of `log`, and a closing line
/// saying when and `how` the unit was deleted. It is written to a temporary file of its own in
/// the same directory and renamed into place, so two deletes of one unit (a run's teardown and
/// an operator's, or two workflow-workers) each write a whole copy and the kept log is one of
/// them, never the two interleaved; a copy whose log could not be read to its end does not
/// replace one already kept. The temporary file is removed on failure.
async fn write_kept_log<B, E>(
    path: &Path,
    header: &str,
    log: impl Stream<Item = Result<B, E>>,
    how: &str,
) -> std::io::Result<()>
where
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let (dir, file) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(file)) => (dir, file.to_string_lossy()),
        _ => {
            return Err(std::io::Error::other(format!(
                "no file name in {}",
                path.display()
            )));
        }
    };
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file}.{}-{write}.tmp", std::process::id()));
    let written = async {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        writeln!(out, "{header}")?;
        let mut complete = true;
        futures::pin_mut!(log);
        while let Some(chunk) = log.next().await {
            match chunk {
                Ok(chunk) => out.write_all(chunk.as_ref())?,
                Err(e) => {
                    writeln!(out, "=== the log could not be read to its end: {e}")?;
                    complete = false;
                    break;
                }
            }
        }
        writeln!(
            out,
            "=== {} deleted: {how}",
            chrono::Utc::now().to_rfc3339()
        )?;
        out.sync_all()?;
        if complete || !path.exists() {
            std::fs::rename(&tmp, path)?;
        }
        Ok(())
    }
    .await;
    // Renamed: gone already. Otherwise (failed, or a partial copy not kept) it goes now.
    let _ = std::fs::remove_file(&tmp);
    written
}

/// A client for the engine `cfg` names (no connection is made yet).
fn connect(cfg: &DockerConfig) -> Result<Docker, ProviderError> {
    let client = match &cfg.docker_host {
        Some(host) => Docker::connect_with_host(host),
        None => Docker::connect_with_local_defaults(),
    }
    .map_err(|e| {
        ProviderError::permanent(format!(
            "DOCKER_HOST={}: cannot use this Docker engine address: {e}",
            cfg.docker_host.as_deref().unwrap_or("(unset)")
        ))
    })?;
    Ok(client.with_timeout(REQUEST_TIMEOUT.max(cfg.stop_grace + Duration::from_secs(60))))
}

/// `client`, its API version lowered to the engine's when the engine is older.
async fn negotiate(client: Docker, cfg: &DockerConfig) -> Result<Docker, ProviderError> {
    client.negotiate_version().await.map_err(|e| {
        ProviderError::transient(format!(
            "cannot reach the Docker engine at {} (DOCKER_HOST): {e}",
            cfg.docker_host.as_deref().unwrap_or("the local socket")
        ))
    })
}

/// Checks `cfg` against the engine before any run: the engine answers and the containers'
/// network exists, so a worker whose configuration cannot work stops at start, saying why.
/// Returns the engine's version and API version for the startup log.
pub async fn preflight(cfg: &DockerConfig) -> Result<String, ProviderError> {
    let docker = negotiate(connect(cfg)?, cfg).await?;
    let version = docker
        .version()
        .await
        .map_err(|e| engine_error("asking the engine its version", e))?;
    if !matches!(cfg.network.as_str(), "host" | "bridge" | "none") {
        match docker.inspect_network(&cfg.network, None).await {
            Ok(_) => {}
            Err(e) if status_of(&e) == Some(404) => {
                return Err(ProviderError::permanent(format!(
                    "DOCKER_NETWORK={}: the engine has no such network (create it with `docker \
                     network create {}`)",
                    cfg.network, cfg.network
                )));
            }
            Err(e) => return Err(engine_error("inspecting the containers' network", e)),
        }
    }
    Ok(format!(
        "Docker Engine {} (API {})",
        version.version.as_deref().unwrap_or("?"),
        docker.client_version()
    ))
}

/// Every container, running or not, matching the label filter `label` or `label=value` (also
/// for tooling that watches the engine: the chaos command, the tests).
pub async fn list_labelled(
    docker: &Docker,
    filter: &str,
) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
    let filters = HashMap::from([("label".to_owned(), vec![filter.to_owned()])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker.list_containers(Some(options)).await
}

/// `[registry/]repository:tag`; an empty registry means an image of the engine (or Docker
/// Hub's, as `docker pull` would).
pub fn image_reference(image: &ImageRef) -> Result<String, ProviderError> {
    let registry = image.registry.trim().trim_end_matches('/');
    let bad = |what: &str, value: &str| {
        ProviderError::permanent(format!(
            "invalid image {what} {value:?}: use lowercase letters, digits and `._-/` (and `:` \
             for a registry's port)"
        ))
    };
    let ok = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b"._-/".contains(&b)
                    || extra.contains(&b)
            })
    };
    if !registry.is_empty() && !ok(registry, b":") {
        return Err(bad("registry", registry));
    }
    if !ok(&image.repository, b"") {
        return Err(bad("repository", &image.repository));
    }
    let tag_ok = !image.tag.is_empty()
        && image.tag.len() <= 128
        && image
            .tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !tag_ok {
        return Err(ProviderError::permanent(format!(
            "invalid image tag {:?}: use letters, digits and `._-` (at most 128)",
            image.tag
        )));
    }
    Ok(if registry.is_empty() {
        format!("{}:{}", image.repository, image.tag)
    } else {
        format!("{registry}/{}:{}", image.repository, image.tag)
    })
}

/// `registry/repo:tag` as (`registry/repo`, `tag`): the tag is after the last `:` that follows
/// the last `/` (a registry's port is not a tag); `latest` when there is none.
pub fn split_reference(image: &str) -> (&str, &str) {
    let after_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[after_slash..].rfind(':') {
        Some(i) => (&image[..after_slash + i], &image[after_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// Whether a `host:port` address names the loopback interface.
fn is_loopback_address(address: &str) -> bool {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The container's owner mark (its [`OWNER_LABEL`]), if it carries one.
fn mark_of(container: &ContainerInspectResponse) -> Option<&str> {
    container
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|labels| labels.get(OWNER_LABEL))
        .map(String::as_str)
}

fn state_of(container: &ContainerInspectResponse) -> Option<ContainerStateStatusEnum> {
    container.state.as_ref().and_then(|s| s.status)
}

fn short_id(id: &Option<String>) -> String {
    id.as_deref()
        .map(|id| id.chars().take(12).collect())
        .unwrap_or_else(|| "?".to_owned())
}

fn status_of(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own words for an error (its message, without bollard's wrapping).
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        EngineError::DockerStreamError { error } => error.trim().to_owned(),
        other => other.to_string(),
    }
}

/// Whether the call never got an answer from the engine (worth retrying).
fn is_connection_error(e: &EngineError) -> bool {
    !matches!(
        e,
        EngineError::DockerResponseServerError { .. } | EngineError::DockerStreamError { .. }
    )
}

/// An engine error while `doing`: 4xx but 404/409/429 are permanent (a bad request, a
/// permission), everything else transient (5xx, timeouts, no connection).
fn engine_error(doing: &str, e: EngineError) -> ProviderError {
    let message = format!("Docker engine error while {doing}: {}", engine_message(&e));
    match status_of(&e) {
        Some(404) => ProviderError::not_found(message),
        Some(code) if (400..500).contains(&code) && code != 409 && code != 429 => {
            ProviderError::permanent(message)
        }
        _ => ProviderError::transient(message),
    }
}
