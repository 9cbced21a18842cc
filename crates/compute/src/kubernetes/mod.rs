//! Kubernetes provider: one `batch/v1` Job per unit of compute, through the API server (`kube`,
//! rustls; the oldest API version supported is 1.33).
//!
//! Each unit is a Job named after the compute (so a retried create meets the API server's name
//! uniqueness, answered 409, and adopts a Job carrying our owner mark, never another), running
//! one pod that is never restarted nor replaced (`backoffLimit: 0`, `restartPolicy: Never`,
//! `podReplacementPolicy: Failed`), hardened (non-root, no privilege escalation, no
//! capabilities, `RuntimeDefault` seccomp, no service account token), with the cluster's own
//! backstops (`activeDeadlineSeconds` from `MAX_COMPUTE_LIFETIME`, `ttlSecondsAfterFinished`).
//! The unit's secret variables are in a Secret of the same name, created after the Job and owned
//! by it (the cluster deletes it with the Job), read by the pod with `secretKeyRef`: never in
//! the Job. The Job, its pod and its Secret carry the labels of [`manifest`]; the owner mark
//! itself is the annotation [`OWNER_ANNOTATION`].
//!
//! Readiness reads the Job and its pod (the `status` module): running is ready; an image that
//! cannot be pulled (after a short grace), a container the kubelet cannot create, a pod that
//! ended or is being deleted are failures, with the reason and the last log lines; a pod the
//! scheduler cannot place is pending, saying why, until the deploy timeout. Delete keeps the
//! pod's log (`<log_dir>/<name>.log`), deletes the Job in the foreground and returns once
//! neither the Job, nor a pod, nor the Secret of the unit is listed.

mod cluster;
mod config;
pub mod manifest;
mod status;
mod teardown;
#[cfg(test)]
mod tests;

use std::{path::PathBuf, time::Duration};

use async_trait::async_trait;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, LogParams, ObjectMeta, PostParams},
};
use tokio::sync::OnceCell;

use cluster::{
    Cluster, api_error, api_message, code_of, connect, delete_quietly, mark_of, namespace_of,
    owned_by,
};

pub use cluster::bounded_client;
pub use config::{
    CALL_TIMEOUT_REQUESTS, DEFAULT_IMAGE_PULL_GRACE, DEFAULT_REQUEST_TIMEOUT, DEFAULT_STOP_GRACE,
    KubernetesConfig, LIFETIME_MARGIN,
};
pub use manifest::{COMPUTE_LABEL, OWNER_ANNOTATION, OWNER_LABEL, RUN_LABEL};

use crate::{
    ComputeHandle, ComputeOwner, ComputeProvider, ComputeSpec, ComputeSummary, Deleted,
    FoundCompute, ProviderError, Readiness, UnitSize,
    naming::is_portable_name,
    sizing::{self, Unsupported},
};

/// Interval of the polls of a deletion in progress.
const POLL: Duration = Duration::from_millis(200);
/// How long delete waits for the Job and its pod to be gone, beyond the pod's stop grace.
const REMOVE_CONFIRM: Duration = Duration::from_secs(60);
/// How many of the last log lines a `Failed` readiness quotes.
const LOG_LINES_IN_FAILURE: i64 = 5;
/// Page size of list calls.
const PAGE: u32 = 500;

/// Runs external workers as Jobs; see the [module documentation](self).
pub struct KubernetesProvider {
    cfg: KubernetesConfig,
    owner: ComputeOwner,
    /// The cluster, connected on first use.
    cluster: OnceCell<Cluster>,
}

impl KubernetesProvider {
    /// A provider over `cfg` (no connection is made yet), creating the log directory.
    pub fn new(cfg: KubernetesConfig, owner: ComputeOwner) -> Result<Self, ProviderError> {
        std::fs::create_dir_all(&cfg.log_dir).map_err(|e| {
            ProviderError::permanent(format!(
                "cannot create the log directory {}: {e}",
                cfg.log_dir.display()
            ))
        })?;
        Ok(Self {
            cfg,
            owner,
            cluster: OnceCell::new(),
        })
    }

    /// A provider using `client` (its default namespace unless `cfg` names one).
    pub fn with_client(
        cfg: KubernetesConfig,
        owner: ComputeOwner,
        client: Client,
    ) -> Result<Self, ProviderError> {
        let provider = Self::new(cfg, owner)?;
        let namespace = namespace_of(&provider.cfg, &client);
        let _ = provider.cluster.set(Cluster { client, namespace });
        Ok(provider)
    }

    /// Where the log of the compute `name` is kept after delete.
    pub fn kept_log_path(&self, name: &str) -> PathBuf {
        self.cfg.log_dir.join(format!("{name}.log"))
    }

    async fn cluster(&self) -> Result<&Cluster, ProviderError> {
        self.cluster
            .get_or_try_init(|| async {
                let client = connect(self.cfg.request_timeout).await?;
                let namespace = namespace_of(&self.cfg, &client);
                Ok(Cluster { client, namespace })
            })
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

    /// A permanent error unless `meta` carries this provider's owner mark.
    fn check_mark(&self, kind: &str, meta: &ObjectMeta, doing: &str) -> Result<(), ProviderError> {
        let mark = mark_of(meta);
        if self.owner.marks(mark) {
            return Ok(());
        }
        Err(ProviderError::permanent(format!(
            "{kind} {} exists but is not ours: its {OWNER_ANNOTATION} annotation is {}, this \
             deployment is {:?}; refusing to {doing} it (set COMPUTE_OWNER to tell deployments \
             apart, or remove it by hand)",
            meta.name.as_deref().unwrap_or("?"),
            mark.map_or_else(|| "absent".to_owned(), |m| format!("{m:?}")),
            self.owner.as_str()
        )))
    }

    /// Creates the unit's Secret, owned by its Job (`uid`); one already there is fine when it is
    /// this Job's, replaced when it is ours from an earlier Job of the same name.
    async fn create_secret(
        &self,
        c: &Cluster,
        spec: &ComputeSpec,
        uid: &str,
    ) -> Result<(), ProviderError> {
        let Some(secret) = manifest::secret(spec, &self.owner, uid) else {
            return Ok(());
        };
        let name = manifest::secret_name(&spec.name);
        let secrets = c.secrets();
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(()),
            Err(e) if code_of(&e) == Some(409) => {}
            Err(e) => return Err(api_error(&format!("creating Secret {name}"), e)),
        }
        let existing = secrets
            .get_opt(&name)
            .await
            .map_err(|e| api_error(&format!("reading Secret {name}"), e))?;
        let Some(existing) = existing else {
            return Err(ProviderError::transient(format!(
                "Secret {name} was in place and is gone: retrying"
            )));
        };
        self.check_mark("Secret", &existing.metadata, "use")?;
        if owned_by(&existing.metadata, uid) {
            return Ok(());
        }
        // Ours, from an earlier Job of this name that is gone: the cluster's collector would
        // delete it; do it now and let the retry create this Job's.
        delete_quietly(&secrets, &name).await?;
        Err(ProviderError::transient(format!(
            "Secret {name} of an earlier Job of this name was still there; deleted it, retrying"
        )))
    }

    /// The last lines of the worker's log in `pod`, joined with ` | `.
    async fn log_tail(&self, c: &Cluster, pod: &str) -> String {
        let params = LogParams {
            tail_lines: Some(LOG_LINES_IN_FAILURE),
            ..Default::default()
        };
        let text = c.pods().logs(pod, &params).await.unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            "(none)".to_owned()
        } else {
            lines.join(" | ")
        }
    }

    /// The pods of the unit `name` that carry our mark.
    async fn our_pods(&self, c: &Cluster, name: &str) -> Result<Vec<Pod>, ProviderError> {
        let params = ListParams::default().labels(&manifest::compute_selector(name));
        let pods = c
            .pods()
            .list(&params)
            .await
            .map_err(|e| api_error(&format!("listing the pods of {name}"), e))?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| self.owner.marks(mark_of(&p.metadata)))
            .collect())
    }
}

/// How the registry describes, checks and builds the Kubernetes provider.
#[async_trait]
impl crate::registry::ProviderSettings for KubernetesConfig {
    fn describe(&self) -> String {
        format!(
            "cluster=(KUBECONFIG, else in-cluster) namespace={} log_dir={}",
            self.namespace.as_deref().unwrap_or("(the context's)"),
            self.log_dir.display()
        )
    }

    async fn preflight(&self) -> Result<Option<String>, ProviderError> {
        let client = connect(self.request_timeout).await?;
        let namespace = namespace_of(self, &client);
        let version = client.apiserver_version().await.map_err(|e| {
            api_error(
                "asking the API server its version (is the cluster reachable?)",
                e,
            )
        })?;
        let jobs: Api<Job> = Api::namespaced(client, &namespace);
        jobs.list(&ListParams::default().limit(1))
            .await
            .map_err(|e| {
                api_error(
                    &format!(
                        "listing Jobs in namespace {namespace} (the account needs the Role of \
                     deploy/kubernetes/rbac.yaml)"
                    ),
                    e,
                )
            })?;
        Ok(Some(format!(
            "Kubernetes {}.{} ({}), namespace {namespace}",
            version.major, version.minor, version.git_version
        )))
    }

    fn build(
        self: Box<Self>,
        owner: ComputeOwner,
    ) -> Result<std::sync::Arc<dyn ComputeProvider>, ProviderError> {
        Ok(std::sync::Arc::new(KubernetesProvider::new(*self, owner)?))
    }
}

#[async_trait]
impl ComputeProvider for KubernetesProvider {
    fn registry_entry(&self) -> &'static crate::registry::Provider {
        &crate::registry::KUBERNETES
    }

    fn owner(&self) -> &ComputeOwner {
        &self.owner
    }

    /// The run's CPUs, memory and GPUs become the container's requests and limits (the
    /// cluster schedules the pod on a node that has them, or it stays unschedulable until the
    /// deploy timeout names the scheduler's reason); a cluster has no sizes of its own.
    async fn fit(&self, resources: &tea_contract::Resources) -> Result<UnitSize, ProviderError> {
        sizing::refuse_unsupported(
            self.kind(),
            resources,
            &[Unsupported {
                field: "size",
                why: "a cluster has no named sizes; ask for `cpu`, `memory` and `gpu`",
            }],
        )?;
        Ok(UnitSize {
            cpu: resources.cpu,
            memory: resources.memory,
            gpu: resources.gpu,
            ..Default::default()
        })
    }

    async fn create_or_adopt(&self, spec: &ComputeSpec) -> Result<ComputeHandle, ProviderError> {
        self.fit(&spec.resources).await?;
        let name = self.checked_name(&spec.name)?;
        let image = crate::docker::image_reference(&spec.image)?;
        let c = self.cluster().await?;
        if manifest::has_secrets(spec) {
            // A Secret of this name that is not ours would give the pod its values: refuse
            // before anything is created.
            let secret_name = manifest::secret_name(name);
            if let Some(existing) = c
                .secrets()
                .get_opt(&secret_name)
                .await
                .map_err(|e| api_error(&format!("reading Secret {secret_name}"), e))?
            {
                self.check_mark("Secret", &existing.metadata, "use")?;
            }
        }
        let job = manifest::job(spec, &image, &self.owner, &self.cfg);
        let jobs = c.jobs();
        let (job, adopted) = match jobs.create(&PostParams::default(), &job).await {
            Ok(job) => (job, false),
            Err(e) if code_of(&e) == Some(409) => {
                let existing = jobs
                    .get_opt(name)
                    .await
                    .map_err(|e| api_error(&format!("reading Job {name}"), e))?
                    .ok_or_else(|| {
                        ProviderError::transient(format!(
                            "Job {name} was in place (create answered 409) and is gone: retrying"
                        ))
                    })?;
                self.check_mark("Job", &existing.metadata, "adopt")?;
                (existing, true)
            }
            Err(e) if code_of(&e) == Some(422) => {
                return Err(ProviderError::permanent(format!(
                    "the API server refused Job {name} (image {image}): {}",
                    api_message(&e)
                )));
            }
            Err(e) => return Err(api_error(&format!("creating Job {name}"), e)),
        };
        let uid = job.metadata.uid.clone().ok_or_else(|| {
            ProviderError::transient(format!("Job {name} has no UID in the API server's answer"))
        })?;
        // The Job stays (marked) on failure: the caller deletes it by name.
        self.create_secret(c, spec, &uid).await?;
        let env_keys: Vec<&str> = spec.env.iter().map(|v| v.key.as_str()).collect();
        let namespace = &c.namespace;
        tracing::info!(
            name,
            uid,
            image,
            namespace,
            adopted,
            ?env_keys,
            "Job in place"
        );
        Ok(ComputeHandle {
            id: name.to_owned(),
            name: name.to_owned(),
            revision: Some(uid),
            adopted,
        })
    }

    async fn readiness(&self, handle: &ComputeHandle) -> Result<Readiness, ProviderError> {
        let name = self.checked_name(&handle.id)?;
        let c = self.cluster().await?;
        let job = c
            .jobs()
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("reading Job {name}"), e))?
            .ok_or_else(|| ProviderError::not_found(format!("no Job named {name}")))?;
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Readiness::Failed {
                phase: "Terminating".into(),
                reason: format!("Job {name} is being deleted"),
            });
        }
        let pods = self.our_pods(c, name).await?;
        let pod = status::pod_of(&job, &pods);
        let secret = manifest::secret_name(name);
        let now = chrono::Utc::now();
        Ok(
            match status::verdict(&job, pod, now, self.cfg.image_pull_grace, &secret) {
                status::Verdict::Plain(readiness) => readiness,
                status::Verdict::Failed { phase, reason, pod } => {
                    let reason = match pod {
                        Some(pod) => {
                            let tail = self.log_tail(c, &pod).await;
                            format!("{reason}; last log lines: {tail}")
                        }
                        None => reason,
                    };
                    Readiness::Failed { phase, reason }
                }
                status::Verdict::SecretMissing { secret, message } => {
                    let there = c
                        .secrets()
                        .get_opt(&secret)
                        .await
                        .map_err(|e| api_error(&format!("reading Secret {secret}"), e))?;
                    if there.is_some() {
                        Readiness::Pending {
                            phase: "CreateContainerConfigError".into(),
                            detail: Some(format!(
                                "its Secret {secret} was created after the pod: the kubelet retries"
                            )),
                        }
                    } else {
                        Readiness::Failed {
                            phase: "CreateContainerConfigError".into(),
                            reason: format!("its Secret {secret} is missing: {message}"),
                        }
                    }
                }
            },
        )
    }

    async fn delete(&self, id: &str) -> Result<Deleted, ProviderError> {
        let name = self.checked_name(id)?;
        let c = self.cluster().await?;
        let jobs = c.jobs();
        let job = jobs
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("reading Job {name}"), e))?;
        let Some(job) = job else {
            let leftovers = !self.our_pods(c, name).await?.is_empty();
            self.confirm_gone(c, name).await?;
            return Ok(if leftovers {
                Deleted::Removed
            } else {
                Deleted::AlreadyGone
            });
        };
        self.check_mark("Job", &job.metadata, "delete")?;
        let pods = self.our_pods(c, name).await?;
        if let Some(pod) = status::pod_of(&job, &pods) {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let how = format!("the Job was deleted ({})", status::pod_end(pod));
            match self.keep_log(c, name, &pod_name, &how).await {
                Ok(path) => tracing::debug!(name, log = %path.display(), "pod log kept"),
                Err(e) => tracing::warn!(name, error = %e, "cannot keep the pod's log"),
            }
        }
        match jobs.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(e) if code_of(&e) == Some(404) => {}
            Err(e) => return Err(api_error(&format!("deleting Job {name}"), e)),
        }
        self.confirm_gone(c, name).await?;
        tracing::info!(name, log = %self.kept_log_path(name).display(), "deleted Job");
        Ok(Deleted::Removed)
    }

    async fn list_ours(&self, prefix: &str) -> Result<Vec<ComputeSummary>, ProviderError> {
        let c = self.cluster().await?;
        let mut params = ListParams::default()
            .labels(&manifest::owner_selector(&self.owner))
            .limit(PAGE);
        let mut units = Vec::new();
        loop {
            let page = c
                .jobs()
                .list(&params)
                .await
                .map_err(|e| api_error("listing Jobs", e))?;
            for job in page.items {
                let Some(name) = job.metadata.name.clone() else {
                    continue;
                };
                // Selected by the owner label; claimed by the exact mark.
                if name.starts_with(prefix)
                    && self.owner.claim(&name, mark_of(&job.metadata)).is_ok()
                {
                    units.push(ComputeSummary {
                        id: name.clone(),
                        name,
                        created_at: job.metadata.creation_timestamp.map(|t| t.0.to_string()),
                    });
                }
            }
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        units.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(units)
    }

    async fn find(&self, name: &str) -> Result<Option<FoundCompute>, ProviderError> {
        if !is_portable_name(name) {
            return Ok(None);
        }
        let c = self.cluster().await?;
        let job = c
            .jobs()
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("reading Job {name}"), e))?;
        Ok(job.map(|job| FoundCompute {
            mark: mark_of(&job.metadata).map(str::to_owned),
            unit: ComputeSummary {
                id: name.to_owned(),
                name: name.to_owned(),
                created_at: job.metadata.creation_timestamp.map(|t| t.0.to_string()),
            },
        }))
    }
}
