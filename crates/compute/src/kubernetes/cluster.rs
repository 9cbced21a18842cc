//! The provider's connection to the cluster: the client of the standard configuration, each
//! call bounded in time, the namespace, the typed APIs of the three kinds it uses, and what
//! the API server's errors mean for the caller.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret},
};
use std::time::Duration;

use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta},
    client::ClientBuilder,
};

use super::{KubernetesConfig, OWNER_ANNOTATION, config::CALL_TIMEOUT_REQUESTS};
use crate::ProviderError;

/// The client and the namespace every object of the provider is in.
pub(super) struct Cluster {
    pub(super) client: Client,
    pub(super) namespace: String,
}

impl Cluster {
    pub(super) fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    pub(super) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    pub(super) fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// The client of the standard configuration: `KUBECONFIG` (or `~/.kube/config`), else the
/// in-cluster service account, bounded as [`bounded_client`] says.
pub(super) async fn connect(request_timeout: Duration) -> Result<Client, ProviderError> {
    let config = kube::Config::infer().await.map_err(|e| {
        ProviderError::permanent(format!(
            "no usable cluster configuration: {e} (set KUBECONFIG to a kubeconfig file, or run \
             in a pod with a service account)"
        ))
    })?;
    bounded_client(config, request_timeout)
}

/// A client of `config` whose every call ends in bounded time: a request unanswered for
/// `request_timeout` fails, and a whole call, kube's own retries of 429/503/504 included, fails
/// after [`CALL_TIMEOUT_REQUESTS`] times that. kube alone sets no read timeout and retries up
/// to 15 times with a backoff growing to 1000 s, waiting whatever `Retry-After` asks: one call
/// could hold an activity for an hour. A call that times out is a transient error: the
/// activity's retry policy tries again.
pub fn bounded_client(
    mut config: kube::Config,
    request_timeout: Duration,
) -> Result<Client, ProviderError> {
    config.read_timeout = Some(request_timeout);
    config.write_timeout = Some(request_timeout);
    config.connect_timeout = Some(request_timeout.min(MAX_CONNECT_TIMEOUT));
    let call_timeout = request_timeout * CALL_TIMEOUT_REQUESTS;
    let builder = ClientBuilder::try_from(config).map_err(|e| {
        ProviderError::permanent(format!("the cluster configuration cannot be used: {e}"))
    })?;
    Ok(builder
        .with_layer(&tower::timeout::TimeoutLayer::new(call_timeout))
        .build())
}

/// The longest wait for a connection to the API server.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn namespace_of(cfg: &KubernetesConfig, client: &Client) -> String {
    cfg.namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned())
}

/// The owner mark an object carries (its [`OWNER_ANNOTATION`]).
pub(super) fn mark_of(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(OWNER_ANNOTATION))
        .map(String::as_str)
}

/// Whether `meta` names the object of UID `uid` among its owners.
pub(super) fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// Deletes `name` (gone already is fine).
pub(super) async fn delete_quietly<K>(api: &Api<K>, name: &str) -> Result<(), ProviderError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if code_of(&e) == Some(404) => Ok(()),
        Err(e) => Err(api_error(&format!("deleting {name}"), e)),
    }
}

pub(super) fn code_of(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The API server's own words for an error.
pub(super) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.reason),
        kube::Error::Service(e) if e.is::<tower::timeout::error::Elapsed>() => format!(
            "no answer in time (a call may take K8S_REQUEST_TIMEOUT times \
             {CALL_TIMEOUT_REQUESTS}, the client's retries of 429, 503 and 504 included)"
        ),
        other => other.to_string(),
    }
}

/// An API error while `doing`: 404 not found; other 4xx but 409/429 permanent (a refusal, a
/// permission); everything else transient (5xx, 429, timeouts, no connection).
pub(super) fn api_error(doing: &str, e: kube::Error) -> ProviderError {
    let message = format!("Kubernetes API error while {doing}: {}", api_message(&e));
    match code_of(&e) {
        Some(404) => ProviderError::not_found(message),
        Some(401 | 403) => ProviderError::permanent(format!(
            "{message} (check the account's credentials and its Role: \
             deploy/kubernetes/rbac.yaml lists what the provider needs)"
        )),
        Some(code) if (400..500).contains(&code) && code != 409 && code != 429 => {
            ProviderError::permanent(message)
        }
        _ => ProviderError::transient(message),
    }
}
