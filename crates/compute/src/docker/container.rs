//! The container of a unit: its environment (the Temporal address containers use, secrets
//! split off into a file), the create body (labels, network, init, limits), putting the secrets
//! file in, adopting a container a create found in place, and confirming one is gone.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bollard::{
    Docker,
    models::{ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig},
    query_parameters::UploadToContainerOptionsBuilder,
};

use super::{
    COMPUTE_LABEL, DockerProvider, HOST_ALIAS, OWNER_LABEL,
    engine::{engine_error, status_of},
    secrets,
};
use crate::{ComputeHandle, ComputeSpec, ProviderError};

/// How long delete waits for a container the engine is already removing to be gone.
const REMOVE_CONFIRM: Duration = Duration::from_secs(30);
/// How long an adopting create waits for a container whose name is taken to be inspectable.
const NAME_RESERVED_WAIT: Duration = Duration::from_secs(10);
/// Interval of the polls of a removal in progress.
const POLL: Duration = Duration::from_millis(100);
/// The secret variables of a container, for its secrets file (never printed).
pub(super) struct SecretsFile(std::collections::BTreeMap<String, String>);

impl DockerProvider {
    /// The container's environment (the spec's, with the Temporal address containers use),
    /// and what goes into its secrets file when its secrets do not go into the environment.
    pub(super) fn container_env(
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
    pub(super) async fn upload_secrets(
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

    pub(super) fn container_body(
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
            super::limits::apply(host, &self.cfg, &spec.resources);
        }
        body
    }

    /// Adopts the container `name` that a create found in place (ours, or an error).
    /// `found` is the container when the caller has just inspected it; `secrets` the archive of
    /// its secrets file, put in before a container that was never started is started.
    pub(super) async fn adopt(
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

    /// Polls until the container is gone; an error once [`REMOVE_CONFIRM`] passes.
    pub(super) async fn confirm_gone(
        &self,
        docker: &Docker,
        name: &str,
    ) -> Result<(), ProviderError> {
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

/// Whether a `host:port` address names the loopback interface.
pub(super) fn is_loopback_address(address: &str) -> bool {
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
pub(super) fn mark_of(container: &ContainerInspectResponse) -> Option<&str> {
    container
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|labels| labels.get(OWNER_LABEL))
        .map(String::as_str)
}

pub(super) fn state_of(container: &ContainerInspectResponse) -> Option<ContainerStateStatusEnum> {
    container.state.as_ref().and_then(|s| s.status)
}

pub(super) fn short_id(id: &Option<String>) -> String {
    id.as_deref()
        .map(|id| id.chars().take(12).collect())
        .unwrap_or_else(|| "?".to_owned())
}
