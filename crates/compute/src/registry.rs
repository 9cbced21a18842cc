//! The one place that knows every provider: its name, how its configuration is read from the
//! environment, and how it is built. The workflow-worker's command line asks it; adding a
//! provider means one arm in each match here (see CONTRIBUTING.md, "Adding a compute provider").

use std::{fmt, str::FromStr, sync::Arc};

use crate::{
    ComputeOwner, ComputeProvider, ProviderError,
    digitalocean::{DigitalOceanConfig, DigitalOceanProvider},
    docker::{DockerConfig, DockerProvider},
    local::{LocalConfig, LocalProvider},
};

/// The providers, by the name `COMPUTE_PROVIDER` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    /// A local process per run (the embedded default).
    Local,
    /// A DigitalOcean App Platform app per run (needs DIGITALOCEAN_ACCESS_TOKEN).
    DigitalOcean,
    /// A container per run on a Docker Engine (`DOCKER_HOST`, else the local socket).
    Docker,
}

impl ProviderKind {
    /// Every provider, in the order `--help` lists them.
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Local,
        ProviderKind::DigitalOcean,
        ProviderKind::Docker,
    ];

    /// The name `COMPUTE_PROVIDER` takes.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::DigitalOcean => "digitalocean",
            ProviderKind::Docker => "docker",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<_> = ProviderKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown compute provider {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A provider's configuration, read and checked (before any connection is made).
#[derive(Clone, Debug)]
pub enum ProviderConfig {
    Local(LocalConfig),
    DigitalOcean(DigitalOceanConfig),
    Docker(DockerConfig),
}

impl ProviderConfig {
    /// Reads `kind`'s settings from the environment; the error names the provider and the
    /// setting.
    pub fn from_env(kind: ProviderKind) -> Result<ProviderConfig, ProviderError> {
        let named = |e: ProviderError| ProviderError {
            kind: e.kind,
            message: format!("{kind} provider: {}", e.message),
        };
        Ok(match kind {
            ProviderKind::Local => ProviderConfig::Local(LocalConfig::from_env().map_err(named)?),
            ProviderKind::DigitalOcean => {
                ProviderConfig::DigitalOcean(DigitalOceanConfig::from_env().map_err(named)?)
            }
            ProviderKind::Docker => {
                ProviderConfig::Docker(DockerConfig::from_env().map_err(named)?)
            }
        })
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderConfig::Local(_) => ProviderKind::Local,
            ProviderConfig::DigitalOcean(_) => ProviderKind::DigitalOcean,
            ProviderConfig::Docker(_) => ProviderKind::Docker,
        }
    }

    /// Where this provider puts compute, for the startup log (never a secret).
    pub fn describe(&self) -> String {
        match self {
            ProviderConfig::Local(c) => format!(
                "worker_bin={} state_dir={}",
                c.worker_bin.display(),
                c.state_dir.display()
            ),
            ProviderConfig::DigitalOcean(c) => format!(
                "api_url={} instance_size={} region={}",
                c.api_url,
                c.instance_size_slug,
                c.region.as_deref().unwrap_or("(nearest)")
            ),
            ProviderConfig::Docker(c) => format!(
                "engine={} network={} temporal_address={} log_dir={}",
                c.docker_host.as_deref().unwrap_or("(local socket)"),
                c.network,
                c.temporal_address
                    .as_deref()
                    .unwrap_or("(the worker's own)"),
                c.log_dir.display()
            ),
        }
    }

    /// Checks the configuration against the platform before any run, where the provider can
    /// (Docker: the engine answers and the network exists); `Some` describes what answered.
    /// Others need no check here (their settings were checked when read).
    pub async fn preflight(&self) -> Result<Option<String>, ProviderError> {
        match self {
            ProviderConfig::Docker(c) => {
                crate::docker::preflight(c)
                    .await
                    .map(Some)
                    .map_err(|e| ProviderError {
                        kind: e.kind,
                        message: format!("docker provider: {}", e.message),
                    })
            }
            ProviderConfig::Local(_) | ProviderConfig::DigitalOcean(_) => Ok(None),
        }
    }

    /// Builds the provider, owned by `owner`.
    pub fn build(self, owner: ComputeOwner) -> Result<Arc<dyn ComputeProvider>, ProviderError> {
        let kind = self.kind();
        let named = |e: ProviderError| ProviderError {
            kind: e.kind,
            message: format!("{kind} provider: {}", e.message),
        };
        Ok(match self {
            ProviderConfig::Local(c) => Arc::new(LocalProvider::new(c, owner).map_err(named)?),
            ProviderConfig::DigitalOcean(c) => {
                Arc::new(DigitalOceanProvider::new(c, owner).map_err(named)?)
            }
            ProviderConfig::Docker(c) => Arc::new(DockerProvider::new(c, owner).map_err(named)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_listed() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.name().parse::<ProviderKind>(), Ok(kind));
        }
        assert_eq!(" DigitalOcean ".parse(), Ok(ProviderKind::DigitalOcean));
        let err = "k8s".parse::<ProviderKind>().unwrap_err();
        assert!(err.contains("local, digitalocean, docker"), "{err}");
    }
}
