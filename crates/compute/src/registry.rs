//! The one place that knows every provider: one [`Provider`] entry each (its name, a line for
//! `--help`, its default deploy timeout, how its settings are read from the environment), and
//! [`PROVIDERS`], the list of them. The workflow-worker's command line, each provider's
//! [`ComputeProvider::kind`], the provider-named error messages and the README's providers table
//! all follow from these entries; adding a provider is its module plus one entry here (see
//! CONTRIBUTING.md, "Adding a compute provider").

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{ComputeOwner, ComputeProvider, ProviderError};

/// One provider, as the rest of the workspace knows it.
pub struct Provider {
    /// The name `COMPUTE_PROVIDER` takes; also the provider's [`ComputeProvider::kind`].
    pub name: &'static str,
    /// What one unit of compute is, for `--help` (lowercase, no final period).
    pub about: &'static str,
    /// How long new compute may take to be reported running before the attempt is torn down
    /// and counted as lost, unless `DEPLOY_TIMEOUT` says otherwise; the provider's
    /// [`ComputeProvider::default_deploy_timeout`].
    pub default_deploy_timeout: Duration,
    /// Reads and checks the provider's settings from the environment (before any connection
    /// is made).
    pub from_env: fn() -> Result<Box<dyn ProviderSettings>, ProviderError>,
}

/// A local process per run (the embedded default).
pub static LOCAL: Provider = Provider {
    name: "local",
    about: "a process per run",
    // A local process is running as soon as it is spawned.
    default_deploy_timeout: Duration::from_secs(60),
    from_env: || Ok(Box::new(crate::local::LocalConfig::from_env()?)),
};

/// A DigitalOcean App Platform app per run (needs DIGITALOCEAN_ACCESS_TOKEN).
pub static DIGITALOCEAN: Provider = Provider {
    name: "digitalocean",
    about: "an App Platform app per run",
    // App Platform pulls the image and rolls out the deployment: minutes, not seconds.
    default_deploy_timeout: Duration::from_secs(15 * 60),
    from_env: || {
        Ok(Box::new(
            crate::digitalocean::DigitalOceanConfig::from_env()?
        ))
    },
};

/// A container per run on a Docker Engine (`DOCKER_HOST`, else the local socket).
pub static DOCKER: Provider = Provider {
    name: "docker",
    about: "a container per run on a Docker Engine",
    // A container runs within seconds once its image is there; the budget covers a pull.
    default_deploy_timeout: Duration::from_secs(300),
    from_env: || Ok(Box::new(crate::docker::DockerConfig::from_env()?)),
};

/// A Job per run on a Kubernetes cluster (`KUBECONFIG`, else the in-cluster service account).
pub static KUBERNETES: Provider = Provider {
    name: "kubernetes",
    about: "a Job per run on a Kubernetes cluster",
    // Scheduling, perhaps a node scale-up and an image pull: minutes at most.
    default_deploy_timeout: Duration::from_secs(300),
    from_env: || Ok(Box::new(crate::kubernetes::KubernetesConfig::from_env()?)),
};

/// Every provider, in the order `--help` lists them.
pub static PROVIDERS: &[&Provider] = &[&LOCAL, &DIGITALOCEAN, &DOCKER, &KUBERNETES];

/// The provider `COMPUTE_PROVIDER` chooses when unset.
pub static DEFAULT: &Provider = &LOCAL;

impl Provider {
    /// The provider named `name` (case and surrounding blanks ignored); the error lists the
    /// names there are.
    pub fn by_name(name: &str) -> Result<&'static Provider, String> {
        let wanted = name.trim().to_ascii_lowercase();
        PROVIDERS
            .iter()
            .find(|p| p.name == wanted)
            .copied()
            .ok_or_else(|| {
                let names: Vec<_> = PROVIDERS.iter().map(|p| p.name).collect();
                format!(
                    "unknown compute provider {name:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }

    /// Every provider with its [`about`](Self::about), for `--help`: "`local` (a process per
    /// run), ... or `docker` (...)".
    pub fn help_list() -> String {
        Self::list_for_help(PROVIDERS)
    }

    fn list_for_help(providers: &[&Provider]) -> String {
        let items: Vec<String> = providers
            .iter()
            .map(|p| format!("`{}` ({})", p.name, p.about))
            .collect();
        match items.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    /// Prefixes `e`'s message with this provider's name, so an operator knows whose setting or
    /// call failed.
    pub fn named(&self, e: ProviderError) -> ProviderError {
        ProviderError {
            kind: e.kind,
            message: format!("{} provider: {}", self.name, e.message),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Provider {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// A provider's settings, read and checked: what the registry needs to describe, check and
/// build it. Each provider's configuration type implements it in the provider's module.
#[async_trait]
pub trait ProviderSettings: fmt::Debug + Send + Sync + 'static {
    /// Where this provider puts compute, for the startup log (never a secret).
    fn describe(&self) -> String;

    /// Checks the settings against the platform before any run, where the provider can;
    /// `Some` describes what answered. By default there is nothing to check here (the
    /// settings were checked when read).
    async fn preflight(&self) -> Result<Option<String>, ProviderError> {
        Ok(None)
    }

    /// Builds the provider, owned by `owner`.
    fn build(
        self: Box<Self>,
        owner: ComputeOwner,
    ) -> Result<Arc<dyn ComputeProvider>, ProviderError>;
}

/// A provider's configuration, read and checked (before any connection is made). Every error
/// it returns names the provider.
#[derive(Debug)]
pub struct ProviderConfig {
    provider: &'static Provider,
    settings: Box<dyn ProviderSettings>,
}

impl ProviderConfig {
    /// Reads `provider`'s settings from the environment; the error names the provider and the
    /// setting.
    pub fn from_env(provider: &'static Provider) -> Result<ProviderConfig, ProviderError> {
        let settings = (provider.from_env)().map_err(|e| provider.named(e))?;
        Ok(ProviderConfig { provider, settings })
    }

    pub fn provider(&self) -> &'static Provider {
        self.provider
    }

    /// Where this provider puts compute, for the startup log (never a secret).
    pub fn describe(&self) -> String {
        self.settings.describe()
    }

    /// Checks the configuration against the platform before any run, where the provider can
    /// (Docker: the engine answers and the network exists); `Some` describes what answered.
    pub async fn preflight(&self) -> Result<Option<String>, ProviderError> {
        self.settings
            .preflight()
            .await
            .map_err(|e| self.provider.named(e))
    }

    /// Builds the provider, owned by `owner`.
    pub fn build(self, owner: ComputeOwner) -> Result<Arc<dyn ComputeProvider>, ProviderError> {
        let provider = self.provider;
        self.settings.build(owner).map_err(|e| provider.named(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_listed() {
        for provider in PROVIDERS {
            assert_eq!(Provider::by_name(provider.name), Ok(*provider));
        }
        assert_eq!(Provider::by_name(" DigitalOcean "), Ok(&DIGITALOCEAN));
        let err = Provider::by_name("k8s").unwrap_err();
        assert!(
            err.contains("local, digitalocean, docker, kubernetes"),
            "{err}"
        );
    }

    #[test]
    fn help_lists_every_provider_with_what_it_runs() {
        assert_eq!(
            Provider::list_for_help(&[&LOCAL]),
            "`local` (a process per run)"
        );
        assert_eq!(
            Provider::list_for_help(&[&LOCAL, &DIGITALOCEAN, &DOCKER]),
            "`local` (a process per run), `digitalocean` (an App Platform app per run) or \
             `docker` (a container per run on a Docker Engine)"
        );
        let help = Provider::help_list();
        for provider in PROVIDERS {
            assert!(help.contains(&format!("`{}` ({})", provider.name, provider.about)));
        }
    }

    /// The README's providers table (the first column of the table under "Compute providers")
    /// names exactly the registered providers.
    #[test]
    fn the_readme_table_lists_exactly_the_registered_providers() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).expect("read README.md");
        let section = readme
            .split("\n## Compute providers\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README.md has a \"Compute providers\" section");
        let mut in_table: Vec<&str> = section
            .lines()
            .filter(|l| l.starts_with("| `") && !l.starts_with("| `COMPUTE_PROVIDER`"))
            .filter_map(|l| l.split('`').nth(1))
            .collect();
        in_table.sort_unstable();
        let mut registered: Vec<&str> = PROVIDERS.iter().map(|p| p.name).collect();
        registered.sort_unstable();
        assert_eq!(
            in_table, registered,
            "README.md's providers table must list exactly the providers in registry::PROVIDERS"
        );
    }
}
