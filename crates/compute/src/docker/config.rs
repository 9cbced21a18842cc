//! The Docker provider's settings and how they are read from the environment (`DOCKER_*`).
//!
//! The engine itself is found as the Docker CLI finds it: `DOCKER_HOST` (`unix://...`,
//! `tcp://...`), else the local socket `/var/run/docker.sock`.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use crate::ProviderError;

/// How long delete lets a container stop after SIGTERM before the engine sends SIGKILL.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// The network containers join by default: the host's, so a worker reaches a Temporal server
/// on the host at the address the workflow-worker uses (`localhost:7233` for a dev server).
pub const DEFAULT_NETWORK: &str = "host";

/// How long pulling one image may take before create gives up.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// The longest stop grace accepted (the engine's stop call must return within a request).
const MAX_STOP_GRACE: Duration = Duration::from_secs(300);

/// Configuration of the Docker provider.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// The engine's address (`DOCKER_HOST`); `None` means the local socket.
    pub docker_host: Option<String>,
    /// Network mode of each container: `host`, `bridge`, or a user-defined network's name.
    pub network: String,
    /// The Temporal address given to containers instead of the workflow-worker's own (for a
    /// network on which the host's loopback address means the container itself).
    pub temporal_address: Option<String>,
    /// Where the logs of removed containers are kept, one file per unit of compute.
    pub log_dir: PathBuf,
    /// How long a container may take to stop after SIGTERM before it is killed.
    pub stop_grace: Duration,
    /// How long pulling the run's image may take.
    pub pull_timeout: Duration,
    /// Memory limit of each container, in bytes (`DOCKER_MEMORY`, e.g. `512m`).
    pub memory_bytes: Option<i64>,
    /// CPU limit of each container, in billionths of a CPU (`DOCKER_CPUS`, e.g. `1.5`).
    pub nano_cpus: Option<i64>,
    /// Whether secrets go into the container's environment (`DOCKER_SECRETS=env`, for images
    /// whose external-worker predates the secrets file) instead of a file deleted at start
    /// (`file`, the default; see the provider's `secrets` module).
    pub secrets_in_env: bool,
}

impl DockerConfig {
    /// A configuration with the defaults, keeping logs under `log_dir`.
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        Self {
            docker_host: None,
            network: DEFAULT_NETWORK.to_owned(),
            temporal_address: None,
            log_dir: log_dir.into(),
            stop_grace: DEFAULT_STOP_GRACE,
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            memory_bytes: None,
            nano_cpus: None,
            secrets_in_env: false,
        }
    }

    /// Configuration from the environment:
    ///
    /// - `DOCKER_HOST`: the engine (default: the local socket);
    /// - `DOCKER_NETWORK`: the containers' network (default `host`);
    /// - `DOCKER_TEMPORAL_ADDRESS`: the Temporal address containers use (default: the
    ///   workflow-worker's own, which must then be reachable from that network);
    /// - `DOCKER_LOG_DIR`, else `$XDG_STATE_HOME/temporal-external-activity/docker/logs`, else
    ///   `$HOME/.local/state/...`, else `/tmp/temporal-external-activity/docker/logs`;
    /// - `DOCKER_STOP_GRACE` (humantime, default 10 s, at most 5 min);
    /// - `DOCKER_PULL_TIMEOUT` (humantime, default 10 min);
    /// - `DOCKER_MEMORY` (`512m`, `2g`, or bytes) and `DOCKER_CPUS` (`0.5`, `2`): limits;
    /// - `DOCKER_SECRETS`: `file` (default) or `env`.
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::from_lookup(|key| std::env::var_os(key))
    }

    /// [`Self::from_env`] over an arbitrary variable lookup.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ProviderError> {
        let get = |key: &str| crate::kept_log::setting(&lookup, key);
        let log_dir = crate::kept_log::log_dir(&lookup, "DOCKER_LOG_DIR", "docker")?;
        let network = get("DOCKER_NETWORK")?.unwrap_or_else(|| DEFAULT_NETWORK.to_owned());
        if !is_network_name(&network) {
            return Err(ProviderError::permanent(format!(
                "DOCKER_NETWORK={network:?}: not a network name (letters, digits, `_`, `.`, \
                 `-`; e.g. `host`, `bridge` or a network made with `docker network create`)"
            )));
        }
        let temporal_address = get("DOCKER_TEMPORAL_ADDRESS")?;
        if let Some(address) = &temporal_address
            && !is_host_port(address)
        {
            return Err(ProviderError::permanent(format!(
                "DOCKER_TEMPORAL_ADDRESS={address:?}: expected host:port, e.g. \
                 host.docker.internal:7233"
            )));
        }

        let duration = |key: &str, default: Duration| -> Result<Duration, ProviderError> {
            match get(key)? {
                None => Ok(default),
                Some(text) => humantime::parse_duration(&text).map_err(|e| {
                    ProviderError::permanent(format!(
                        "{key}={text}: not a duration like `10s` or `2m`: {e}"
                    ))
                }),
            }
        };
        let stop_grace = duration("DOCKER_STOP_GRACE", DEFAULT_STOP_GRACE)?;
        if stop_grace > MAX_STOP_GRACE {
            return Err(ProviderError::permanent(format!(
                "DOCKER_STOP_GRACE={}: at most {} is allowed",
                humantime::format_duration(stop_grace),
                humantime::format_duration(MAX_STOP_GRACE)
            )));
        }
        let pull_timeout = duration("DOCKER_PULL_TIMEOUT", DEFAULT_PULL_TIMEOUT)?;
        if pull_timeout.is_zero() {
            return Err(ProviderError::permanent(
                "DOCKER_PULL_TIMEOUT must be more than zero",
            ));
        }

        let memory_bytes = get("DOCKER_MEMORY")?
            .map(|text| {
                parse_bytes(&text).ok_or_else(|| {
                    ProviderError::permanent(format!(
                        "DOCKER_MEMORY={text}: expected a size like `512m`, `2g` or a number \
                         of bytes (at least 6m, the engine's minimum)"
                    ))
                })
            })
            .transpose()?;
        let nano_cpus = get("DOCKER_CPUS")?
            .map(|text| {
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|cpus| cpus.is_finite() && *cpus >= 0.01 && *cpus <= 1024.0)
                    .map(|cpus| (cpus * 1e9).round() as i64)
                    .ok_or_else(|| {
                        ProviderError::permanent(format!(
                            "DOCKER_CPUS={text}: expected a number of CPUs like `0.5` or `2`"
                        ))
                    })
            })
            .transpose()?;

        let secrets_in_env = match get("DOCKER_SECRETS")?.as_deref() {
            None | Some("file") => false,
            Some("env") => true,
            Some(other) => {
                return Err(ProviderError::permanent(format!(
                    "DOCKER_SECRETS={other:?}: expected `file` (secrets in a file the worker \
                     deletes at start; the default) or `env` (in the container's environment, \
                     visible in `docker inspect`; for images whose external-worker predates \
                     the file)"
                )));
            }
        };

        Ok(Self {
            docker_host: get("DOCKER_HOST")?,
            network,
            temporal_address,
            log_dir,
            stop_grace,
            pull_timeout,
            memory_bytes,
            nano_cpus,
            secrets_in_env,
        })
    }
}

fn is_network_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_host_port(address: &str) -> bool {
    address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
    })
}

/// `512m`, `2g`, `1048576`, `64k` (binary units, as `docker run --memory`), at least 6 MiB.
fn parse_bytes(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    let text = text.strip_suffix('b').unwrap_or(&text);
    let (digits, unit) = match text.char_indices().last()? {
        (i, 'k') => (&text[..i], 1i64 << 10),
        (i, 'm') => (&text[..i], 1 << 20),
        (i, 'g') => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    let bytes = digits.parse::<i64>().ok()?.checked_mul(unit)?;
    (bytes >= 6 << 20).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<DockerConfig, ProviderError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DockerConfig::from_lookup(|key| {
            vars.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn defaults_work_with_a_dev_server_on_the_host() {
        let cfg = from(&[("HOME", "/home/u")]).expect("defaults");
        assert_eq!(cfg.network, "host");
        assert_eq!(cfg.temporal_address, None);
        assert_eq!(cfg.stop_grace, DEFAULT_STOP_GRACE);
        assert_eq!(
            cfg.log_dir,
            PathBuf::from("/home/u/.local/state/temporal-external-activity/docker/logs")
        );
        assert_eq!((cfg.memory_bytes, cfg.nano_cpus), (None, None));
        assert!(!cfg.secrets_in_env);
        assert!(from(&[("DOCKER_SECRETS", "env")]).unwrap().secrets_in_env);
    }

    #[test]
    fn settings_are_read_and_checked() {
        let cfg = from(&[
            ("DOCKER_NETWORK", "tea-net"),
            ("DOCKER_TEMPORAL_ADDRESS", "host.docker.internal:7233"),
            ("DOCKER_LOG_DIR", "/var/log/tea"),
            ("DOCKER_STOP_GRACE", "3s"),
            ("DOCKER_MEMORY", "512m"),
            ("DOCKER_CPUS", "1.5"),
        ])
        .expect("valid settings");
        assert_eq!(cfg.network, "tea-net");
        assert_eq!(
            cfg.temporal_address.as_deref(),
            Some("host.docker.internal:7233")
        );
        assert_eq!(cfg.log_dir, PathBuf::from("/var/log/tea"));
        assert_eq!(cfg.stop_grace, Duration::from_secs(3));
        assert_eq!(cfg.memory_bytes, Some(512 << 20));
        assert_eq!(cfg.nano_cpus, Some(1_500_000_000));

        for (key, value, says) in [
            ("DOCKER_NETWORK", "bad net", "not a network name"),
            (
                "DOCKER_TEMPORAL_ADDRESS",
                "nohostport",
                "expected host:port",
            ),
            ("DOCKER_STOP_GRACE", "soon", "not a duration"),
            ("DOCKER_STOP_GRACE", "1h", "at most 5m"),
            ("DOCKER_PULL_TIMEOUT", "0s", "more than zero"),
            ("DOCKER_MEMORY", "1k", "expected a size"),
            ("DOCKER_MEMORY", "lots", "expected a size"),
            ("DOCKER_CPUS", "0", "number of CPUs"),
            ("DOCKER_CPUS", "NaN", "number of CPUs"),
            ("DOCKER_SECRETS", "vault", "expected `file`"),
        ] {
            let err = from(&[(key, value)]).expect_err(value);
            assert!(
                err.message.contains(key) && err.message.contains(says),
                "{key}={value}: {err}"
            );
        }
    }
}
