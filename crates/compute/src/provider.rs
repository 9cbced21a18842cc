//! The provider trait and the value types that cross it.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{ComputeOwner, UnitSize};

/// The container image an external worker runs from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// Registry name (for DigitalOcean's own registry this is informational only).
    pub registry: String,
    /// Repository inside the registry.
    pub repository: String,
    /// Image tag.
    pub tag: String,
}

/// One environment variable for the external worker.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
    /// Secret values must be stored encrypted by the provider and never logged.
    pub secret: bool,
}

impl fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.secret {
            "<redacted>"
        } else {
            self.value.as_str()
        };
        f.debug_struct("EnvVar")
            .field("key", &self.key)
            .field("value", &value)
            .field("secret", &self.secret)
            .finish()
    }
}

/// Everything a provider needs to start one external worker.
#[derive(Clone, Debug)]
pub struct ComputeSpec {
    /// Unique, provider-valid name derived from the workflow run (see [`crate::naming`]).
    pub name: String,
    pub image: ImageRef,
    pub env: Vec<EnvVar>,
    /// What the run asks of the unit (default: nothing, the provider's default size); the
    /// provider creates what [`ComputeProvider::fit`] answers for it.
    pub resources: tea_contract::Resources,
}

impl ComputeSpec {
    /// The environment every provider gives the worker: the spec's, plus
    /// [`tea_contract::SECRET_NAMES_ENV`] naming its secret variables (when it has any), so the
    /// worker knows which values to mask in a job's output.
    pub fn worker_env(&self) -> Vec<EnvVar> {
        let names_env = tea_contract::SECRET_NAMES_ENV;
        let mut env: Vec<EnvVar> = self
            .env
            .iter()
            .filter(|v| v.key != names_env)
            .cloned()
            .collect();
        let names: Vec<&str> = env
            .iter()
            .filter(|v| v.secret)
            .map(|v| v.key.as_str())
            .collect();
        if !names.is_empty() {
            let value = names.join(",");
            env.push(EnvVar {
                key: names_env.to_owned(),
                value,
                secret: false,
            });
        }
        env
    }

    /// This spec with [`Self::worker_env`] as its environment.
    pub fn for_worker(&self) -> ComputeSpec {
        ComputeSpec {
            env: self.worker_env(),
            ..self.clone()
        }
    }
}

/// What the workflow keeps about a unit of compute: identifiers only, never the spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeHandle {
    /// Provider's identifier (DigitalOcean app ID, local directory name, ...).
    pub id: String,
    /// The compute name (also the unique task queue).
    pub name: String,
    /// Which rollout of the unit the create call started, in the provider's own terms (a
    /// DigitalOcean deployment ID, a local worker's pid), when it has one. Histories from
    /// before the rename call it `deployment_id`.
    #[serde(alias = "deployment_id")]
    pub revision: Option<String>,
    /// True when an existing compute of this name was adopted instead of created.
    pub adopted: bool,
}

/// One observation of a deployment's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Readiness {
    /// Still on its way; `phase` is the provider's own word for where it is.
    Pending {
        phase: String,
        detail: Option<String>,
    },
    /// The provider reports the compute running.
    Ready { phase: String },
    /// The deployment ended without running; it will not become ready by waiting.
    Failed { phase: String, reason: String },
}

/// The result of a delete that succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Deleted {
    /// This call removed it.
    Removed,
    /// It was not there (already deleted, or never existed).
    AlreadyGone,
}

/// A unit of compute found by [`ComputeProvider::list_ours`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeSummary {
    pub id: String,
    pub name: String,
    /// RFC 3339 creation time when the provider knows it.
    pub created_at: Option<String>,
}

impl ComputeSummary {
    /// How old the unit is at `now`: `None` when its creation time is unknown or unreadable
    /// (any RFC 3339 offset is read, `Z` or `+00:00`), or in the future.
    pub fn age(&self, now: std::time::SystemTime) -> Option<std::time::Duration> {
        let created = chrono::DateTime::parse_from_rfc3339(self.created_at.as_deref()?).ok()?;
        now.duration_since(std::time::SystemTime::from(created))
            .ok()
    }
}

/// A unit of compute found by name by [`ComputeProvider::find`], whoever marked it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundCompute {
    pub unit: ComputeSummary,
    /// Its owner mark as stored with it (`None`: it carries none).
    pub mark: Option<String>,
}

impl FoundCompute {
    /// The unit when `owner` may act on it ([`ComputeOwner::claim`]), else why not.
    pub fn claimed_by(self, owner: &ComputeOwner) -> Result<ComputeSummary, crate::NotOurs> {
        owner.claim(&self.unit.name, self.mark.as_deref())?;
        Ok(self.unit)
    }
}

/// How an error should be treated by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying later (rate limit, 5xx, timeout, connection error).
    Transient,
    /// Retrying will not help (bad credentials, invalid spec, permission).
    Permanent,
    /// The named compute does not exist.
    NotFound,
}

/// A provider failure, with a message fit for operators (never containing secrets).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ProviderError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::NotFound,
            message: message.into(),
        }
    }
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

/// Somewhere external workers can run. One instance serves every run of a worker process,
/// on behalf of one deployment: its [`ComputeOwner`], given when the provider is built.
///
/// # Guarantees
/// - Every unit of compute [`create_or_adopt`](Self::create_or_adopt) creates carries this
///   provider's owner mark, stored with the compute where [`list_ours`](Self::list_ours) reads it.
/// - [`create_or_adopt`](Self::create_or_adopt) adopts an existing unit of the same name only
///   when it carries this owner's mark; one with another mark, or none, is a permanent error
///   and is left untouched.
/// - [`list_ours`](Self::list_ours) returns only compute whose name is exactly a generated name
///   ([`crate::naming::is_generated_name`]) **and** whose mark equals this provider's owner.
///   Foreign compute (`ext-api`, an app named like ours but unmarked or marked by another
///   owner) is never returned, so nothing built on `list_ours` (the sweeper, delete-by-name,
///   metrics) ever deletes or counts it. Each provider decides with [`ComputeOwner::claim`].
/// - [`find`](Self::find) returns the unit of exactly that name whoever marked it, with its
///   mark, so a caller can say whose it is; nothing acts on it unless
///   [`FoundCompute::claimed_by`] this provider's owner.
///
/// - Concurrent [`create_or_adopt`](Self::create_or_adopt) calls for one name leave one unit:
///   the platform's name uniqueness (App Platform and the Docker Engine answer 409) or an
///   exclusive create (the local state directory) decides, and the loser adopts.
/// - Read-your-writes: once `create_or_adopt` returned, [`list_ours`](Self::list_ours) and
///   [`readiness`](Self::readiness) see the unit; once [`delete`](Self::delete) returned, the
///   unit is gone (a delete the platform finishes asynchronously is waited for, bounded).
/// - [`ComputeSummary::created_at`] is given whenever the platform knows it. The sweeper
///   treats a missing one as old (sweepable after its other checks): better swept than leaked.
/// - [`Readiness::Failed`] means waiting will not help (the rollout failed, the process died):
///   the workflow tears the unit down and provisions fresh compute. A `NotFound` error from
///   `readiness` means the unit vanished (deleted out of band): the same.
///
/// # Errors
/// [`ErrorKind::Transient`] is retried by the activity's retry policy (rate limits, 5xx,
/// timeouts, connection errors; each call's own retries are bounded); `Permanent` fails the
/// step at once (bad credentials, an invalid spec, a foreign unit with our name); `NotFound`
/// is for a unit that does not exist. Messages are fit for operators and never hold a secret.
///
/// # Time budget
/// Every call returns within minutes at most (the activities heartbeat while they wait, so a
/// long call does not time out): `create_or_adopt` and `delete` within their bounded retries
/// plus, for `delete`, the confirmation wait; `readiness` is one observation (callers poll,
/// bounded by the deploy timeout); `list_ours` pages through the account (its cost grows with
/// the number of units, so the run's own steps never call it but for delete-by-name).
///
/// # Assumptions
/// - [`delete`](Self::delete) is only given IDs that this provider's `create_or_adopt` or
///   `list_ours` returned (the DigitalOcean provider does not re-read the mark before deleting;
///   the local and Docker providers do, and refuse a unit marked by another owner).
/// - Every workflow-worker of one deployment (one workflow task queue) uses the same owner.
#[async_trait]
pub trait ComputeProvider: Send + Sync + 'static {
    /// This provider's entry in the registry, where its name and defaults are written.
    fn registry_entry(&self) -> &'static crate::registry::Provider;

    /// Short provider name for logs (`digitalocean`, `docker`, `local`): its registry entry's.
    fn kind(&self) -> &'static str {
        self.registry_entry().name
    }

    /// The deployment this provider works for; its mark is on everything it creates.
    fn owner(&self) -> &ComputeOwner;

    /// Create the compute, or adopt an existing one with the same name and this owner's mark.
    /// Must be idempotent: calling it twice with the same spec leaves exactly one unit of
    /// compute. A unit of the same name with another (or no) mark is a permanent error.
    async fn create_or_adopt(&self, spec: &ComputeSpec) -> Result<ComputeHandle, ProviderError>;

    /// One observation of the deployment's progress (callers poll with backoff).
    async fn readiness(&self, handle: &ComputeHandle) -> Result<Readiness, ProviderError>;

    /// Delete by provider ID and confirm it is gone. Deleting something already gone succeeds.
    async fn delete(&self, id: &str) -> Result<Deleted, ProviderError>;

    /// Every unit of compute this provider owns whose name starts with `prefix`: generated
    /// names only, marked with this provider's owner (see the trait's guarantees).
    async fn list_ours(&self, prefix: &str) -> Result<Vec<ComputeSummary>, ProviderError>;

    /// The unit named exactly `name` with its owner mark, whoever marked it (`None`: no unit
    /// has that name). For callers that must say whose a unit is before they act on it (the
    /// operator's delete): act only on what [`FoundCompute::claimed_by`] this owner. Costs what
    /// a look-up by name costs on the platform (on App Platform: a list of the account).
    async fn find(&self, name: &str) -> Result<Option<FoundCompute>, ProviderError>;

    /// Cumulative API request counts by (operation, status), for metrics; status 0 counts
    /// attempts that got no response. Providers without a remote API report none.
    fn api_request_counts(&self) -> Vec<(String, u16, u64)> {
        Vec::new()
    }

    /// How long new compute may take to be reported running before the attempt is torn down
    /// and counted as lost (overridable with `DEPLOY_TIMEOUT`): its registry entry's.
    fn default_deploy_timeout(&self) -> std::time::Duration {
        self.registry_entry().default_deploy_timeout
    }

    /// What one unit costs per second in USD, for the estimate in each run's result; `None`
    /// where the platform does not bill per unit (local processes, a Docker Engine of yours).
    fn usd_per_second(&self) -> Option<f64> {
        None
    }

    /// What this provider creates for a run asking `resources`, or a permanent error naming
    /// the field it cannot honour and this provider. Asked before a run's first unit exists,
    /// and applied by [`create_or_adopt`](Self::create_or_adopt) (which refuses the same
    /// requests). Nothing asked may be ignored: the default refuses every field, so a
    /// provider that maps none still gives runs that ask for nothing its default size.
    async fn fit(&self, resources: &tea_contract::Resources) -> Result<UnitSize, ProviderError> {
        crate::sizing::refuse_all(self.kind(), resources)?;
        Ok(UnitSize {
            usd_per_second: self.usd_per_second(),
            ..Default::default()
        })
    }

    /// Whether the platform restarts a worker process that exits (App Platform does): then a
    /// worker that is no longer needed must stay down instead of exiting, or it crash-loops.
    fn restarts_exited_workers(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_is_told_the_names_of_its_secret_variables() {
        let var = |key: &str, secret: bool| EnvVar {
            key: key.into(),
            value: format!("value of {key}"),
            secret,
        };
        let spec = ComputeSpec {
            name: "ext-x-1".into(),
            image: ImageRef {
                registry: String::new(),
                repository: "r".into(),
                tag: "t".into(),
            },
            env: vec![
                var("TEMPORAL_ADDRESS", false),
                var("TEMPORAL_API_KEY", true),
                var("DB_PASSWORD", true),
                // A stale one from the caller is replaced, never doubled.
                var(tea_contract::SECRET_NAMES_ENV, false),
            ],
            resources: Default::default(),
        };
        let env = spec.for_worker().env;
        let names: Vec<(&str, &str, bool)> = env
            .iter()
            .map(|v| (v.key.as_str(), v.value.as_str(), v.secret))
            .filter(|(k, _, _)| *k == tea_contract::SECRET_NAMES_ENV)
            .collect();
        assert_eq!(
            names,
            [(
                tea_contract::SECRET_NAMES_ENV,
                "TEMPORAL_API_KEY,DB_PASSWORD",
                false
            )]
        );
        assert_eq!(env.len(), 4);
        let plain = ComputeSpec {
            env: vec![var("TEMPORAL_ADDRESS", false)],
            ..spec
        };
        assert_eq!(plain.worker_env().len(), 1);
    }
}
