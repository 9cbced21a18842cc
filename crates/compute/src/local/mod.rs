//! Local-process provider: one external-worker process per run (stub, being written).

use std::{path::PathBuf, time::Duration};

use async_trait::async_trait;

use crate::{
    ComputeHandle, ComputeProvider, ComputeSpec, ComputeSummary, Deleted, ProviderError, Readiness,
};

/// Configuration of the local provider.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    pub state_dir: PathBuf,
    pub worker_bin: PathBuf,
    pub kill_grace: Duration,
}

impl LocalConfig {
    pub fn from_env() -> Result<Self, ProviderError> {
        Err(ProviderError::permanent(
            "local provider not implemented yet",
        ))
    }
}

pub struct LocalProvider {
    _cfg: LocalConfig,
}

impl LocalProvider {
    pub fn new(cfg: LocalConfig) -> Result<Self, ProviderError> {
        Ok(Self { _cfg: cfg })
    }
}

#[async_trait]
impl ComputeProvider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }
    async fn create_or_adopt(&self, _spec: &ComputeSpec) -> Result<ComputeHandle, ProviderError> {
        Err(ProviderError::permanent("not implemented"))
    }
    async fn readiness(&self, _handle: &ComputeHandle) -> Result<Readiness, ProviderError> {
        Err(ProviderError::permanent("not implemented"))
    }
    async fn delete(&self, _id: &str) -> Result<Deleted, ProviderError> {
        Err(ProviderError::permanent("not implemented"))
    }
    async fn list_ours(&self, _prefix: &str) -> Result<Vec<ComputeSummary>, ProviderError> {
        Err(ProviderError::permanent("not implemented"))
    }
}
