//! The connection to the Docker Engine: the client for `DOCKER_HOST` (or the local socket), its
//! API version negotiated with the engine, the start-up preflight, listing by label, and how
//! an engine error becomes a [`ProviderError`] (permanent, transient or not found).

use std::{collections::HashMap, time::Duration};

use bollard::{
    Docker, errors::Error as EngineError, query_parameters::ListContainersOptionsBuilder,
};

use super::DockerConfig;
use crate::ProviderError;

/// Per-request timeout of engine calls (a stop adds its grace).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// A client for the engine `cfg` names (no connection is made yet).
pub(super) fn connect(cfg: &DockerConfig) -> Result<Docker, ProviderError> {
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
pub(super) async fn negotiate(client: Docker, cfg: &DockerConfig) -> Result<Docker, ProviderError> {
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

pub(super) fn status_of(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own words for an error (its message, without bollard's wrapping).
pub(super) fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        EngineError::DockerStreamError { error } => error.trim().to_owned(),
        other => other.to_string(),
    }
}

/// Whether the call never got an answer from the engine (worth retrying).
pub(super) fn is_connection_error(e: &EngineError) -> bool {
    !matches!(
        e,
        EngineError::DockerResponseServerError { .. } | EngineError::DockerStreamError { .. }
    )
}

/// An engine error while `doing`: 4xx but 404/409/429 are permanent (a bad request, a
/// permission), everything else transient (5xx, timeouts, no connection).
pub(super) fn engine_error(doing: &str, e: EngineError) -> ProviderError {
    let message = format!("Docker engine error while {doing}: {}", engine_message(&e));
    match status_of(&e) {
        Some(404) => ProviderError::not_found(message),
        Some(code) if (400..500).contains(&code) && code != 409 && code != 429 => {
            ProviderError::permanent(message)
        }
        _ => ProviderError::transient(message),
    }
}
