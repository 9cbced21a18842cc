//! The Kubernetes provider's settings and how they are read from the environment (`K8S_*`).
//!
//! The cluster itself is found the standard way, by `kube::Client::try_default` when the
//! provider first calls it: `KUBECONFIG` (or `~/.kube/config`) and its current context, else the
//! in-cluster service account. What can be checked without a connection is checked here, so a
//! worker whose configuration cannot work stops at start, saying which setting is wrong.

use std::{collections::BTreeMap, ffi::OsString, path::PathBuf, time::Duration};

use k8s_openapi::api::core::v1::Toleration;

use crate::ProviderError;

/// How long a pod may take to stop after SIGTERM before the kubelet kills it.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a finished Job stays before the cluster deletes it (a backstop: the run deletes it).
pub const DEFAULT_TTL_AFTER_FINISHED: Duration = Duration::from_secs(3600);
/// How long an image that fails to pull is given before readiness reports the failure.
pub const DEFAULT_IMAGE_PULL_GRACE: Duration = Duration::from_secs(30);
/// How long one request to the API server may go unanswered (`K8S_REQUEST_TIMEOUT`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The user the worker runs as when `K8S_RUN_AS_USER` does not say (distroless `nonroot`).
pub const DEFAULT_RUN_AS_USER: i64 = 65532;
/// How much longer than `MAX_COMPUTE_LIFETIME` the cluster lets a Job run: the run's own
/// teardown at the lifetime comes first, the cluster's deadline is the backstop.
pub const LIFETIME_MARGIN: Duration = Duration::from_secs(300);

/// Configuration of the Kubernetes provider.
#[derive(Clone, Debug, PartialEq)]
pub struct KubernetesConfig {
    /// The namespace of every Job, pod and Secret (`K8S_NAMESPACE`); `None`: the kubeconfig
    /// context's, else the service account's, else `default`.
    pub namespace: Option<String>,
    /// Where the logs of deleted pods are kept, one file per unit of compute.
    pub log_dir: PathBuf,
    /// The pods' service account (`K8S_SERVICE_ACCOUNT`); its token is never mounted.
    pub service_account: Option<String>,
    /// Node labels a pod must match (`K8S_NODE_SELECTOR=disktype=ssd,zone=a`).
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of each pod (`K8S_TOLERATIONS`, a JSON list as in a pod spec).
    pub tolerations: Vec<Toleration>,
    /// Secrets to pull the image with (`K8S_IMAGE_PULL_SECRETS=regcred,other`).
    pub image_pull_secrets: Vec<String>,
    /// CPU of each pod, requested and its limit (`K8S_CPU`, a quantity: `500m`, `2`).
    pub cpu: Option<String>,
    /// Memory of each pod, requested and its limit (`K8S_MEMORY`: `512Mi`, `2Gi`).
    pub memory: Option<String>,
    /// The numeric user the worker runs as (`K8S_RUN_AS_USER`, not 0).
    pub run_as_user: i64,
    /// The pods' termination grace period (`K8S_STOP_GRACE`).
    pub stop_grace: Duration,
    /// How long a finished Job stays (`K8S_TTL_AFTER_FINISHED`).
    pub ttl_after_finished: Duration,
    /// How long an image may fail to pull before readiness fails (`K8S_IMAGE_PULL_GRACE`).
    pub image_pull_grace: Duration,
    /// The cluster's deadline of each Job: `MAX_COMPUTE_LIFETIME` plus [`LIFETIME_MARGIN`].
    pub active_deadline: Option<Duration>,
    /// How long one request may go unanswered (`K8S_REQUEST_TIMEOUT`); a whole call, the
    /// client's own retries included, gets [`CALL_TIMEOUT_REQUESTS`] times this.
    pub request_timeout: Duration,
}

/// How many request timeouts one API call may take, the client's own retries included.
pub const CALL_TIMEOUT_REQUESTS: u32 = 4;

impl KubernetesConfig {
    /// A configuration with the defaults, keeping logs under `log_dir`.
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        Self {
            namespace: None,
            log_dir: log_dir.into(),
            service_account: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            image_pull_secrets: Vec::new(),
            cpu: None,
            memory: None,
            run_as_user: DEFAULT_RUN_AS_USER,
            stop_grace: DEFAULT_STOP_GRACE,
            ttl_after_finished: DEFAULT_TTL_AFTER_FINISHED,
            image_pull_grace: DEFAULT_IMAGE_PULL_GRACE,
            active_deadline: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Configuration from the environment (see docs/configuration.md, "Kubernetes").
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::from_lookup(|key| std::env::var_os(key))
    }

    /// [`Self::from_env`] over an arbitrary variable lookup.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ProviderError> {
        let get = |key: &str| {
            crate::kept_log::setting(&lookup, key).map(|v| v.map(|v| v.trim().to_owned()))
        };
        let bad = |key: &str, value: &str, expected: &str| {
            ProviderError::permanent(format!("{key}={value:?}: {expected}"))
        };
        let mut cfg = Self::new(crate::kept_log::log_dir(
            &lookup,
            "K8S_LOG_DIR",
            "kubernetes",
        )?);

        if let Some(ns) = get("K8S_NAMESPACE")? {
            if !is_dns_label(&ns) {
                return Err(bad(
                    "K8S_NAMESPACE",
                    &ns,
                    "not a namespace name (lowercase letters, digits and `-`, at most 63)",
                ));
            }
            cfg.namespace = Some(ns);
        }
        if let Some(sa) = get("K8S_SERVICE_ACCOUNT")? {
            if !is_dns_subdomain(&sa) {
                return Err(bad(
                    "K8S_SERVICE_ACCOUNT",
                    &sa,
                    "not a service account name",
                ));
            }
            cfg.service_account = Some(sa);
        }
        if let Some(text) = get("K8S_NODE_SELECTOR")? {
            for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (key, value) = pair
                    .split_once('=')
                    .filter(|(k, v)| is_label_key(k.trim()) && is_label_value(v.trim()))
                    .ok_or_else(|| {
                        bad(
                            "K8S_NODE_SELECTOR",
                            &text,
                            "expected label=value pairs separated by commas, e.g. \
                             `disktype=ssd,kubernetes.io/arch=amd64`",
                        )
                    })?;
                cfg.node_selector
                    .insert(key.trim().to_owned(), value.trim().to_owned());
            }
        }
        if let Some(text) = get("K8S_TOLERATIONS")? {
            cfg.tolerations = serde_json::from_str(&text).map_err(|e| {
                bad(
                    "K8S_TOLERATIONS",
                    &text,
                    &format!(
                        "expected a JSON list of tolerations as in a pod spec, e.g. \
                         `[{{\"key\":\"dedicated\",\"operator\":\"Equal\",\"value\":\"tea\",\
                         \"effect\":\"NoSchedule\"}}]`: {e}"
                    ),
                )
            })?;
        }
        if let Some(text) = get("K8S_IMAGE_PULL_SECRETS")? {
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !is_dns_subdomain(name) {
                    return Err(bad(
                        "K8S_IMAGE_PULL_SECRETS",
                        &text,
                        "expected Secret names separated by commas",
                    ));
                }
                cfg.image_pull_secrets.push(name.to_owned());
            }
        }
        if let Some(cpu) = get("K8S_CPU")? {
            if !is_quantity(&cpu) {
                return Err(bad(
                    "K8S_CPU",
                    &cpu,
                    "expected a CPU quantity like `500m` or `2`",
                ));
            }
            cfg.cpu = Some(cpu);
        }
        if let Some(memory) = get("K8S_MEMORY")? {
            if !is_quantity(&memory) {
                return Err(bad(
                    "K8S_MEMORY",
                    &memory,
                    "expected a memory quantity like `512Mi` or `2Gi`",
                ));
            }
            cfg.memory = Some(memory);
        }
        if let Some(text) = get("K8S_RUN_AS_USER")? {
            cfg.run_as_user = text
                .parse::<i64>()
                .ok()
                .filter(|uid| (1..=i64::from(u32::MAX)).contains(uid))
                .ok_or_else(|| {
                    bad(
                        "K8S_RUN_AS_USER",
                        &text,
                        "expected a numeric user ID other than 0 (pods run as non-root)",
                    )
                })?;
        }
        let duration = |key: &str| -> Result<Option<Duration>, ProviderError> {
            get(key)?
                .map(|text| {
                    humantime::parse_duration(&text)
                        .map_err(|e| bad(key, &text, &format!("not a duration like `30s`: {e}")))
                })
                .transpose()
        };
        if let Some(grace) = duration("K8S_STOP_GRACE")? {
            cfg.stop_grace = grace;
        }
        if let Some(ttl) = duration("K8S_TTL_AFTER_FINISHED")? {
            cfg.ttl_after_finished = ttl;
        }
        if let Some(grace) = duration("K8S_IMAGE_PULL_GRACE")? {
            cfg.image_pull_grace = grace;
        }
        if let Some(timeout) = duration("K8S_REQUEST_TIMEOUT")? {
            if timeout.is_zero() {
                return Err(bad(
                    "K8S_REQUEST_TIMEOUT",
                    &humantime::format_duration(timeout).to_string(),
                    "must be more than zero",
                ));
            }
            cfg.request_timeout = timeout;
        }
        if let Some(text) = get("MAX_COMPUTE_LIFETIME")? {
            let lifetime: tea_contract::GoDuration = text.parse().map_err(|e| {
                bad(
                    "MAX_COMPUTE_LIFETIME",
                    &text,
                    &format!("not a duration: {e}"),
                )
            })?;
            let lifetime = lifetime.as_duration();
            if !lifetime.is_zero() {
                cfg.active_deadline = Some(lifetime + LIFETIME_MARGIN);
            }
        }
        Ok(cfg)
    }
}

/// A DNS-1123 label: what a namespace or a Job name must be.
pub(crate) fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253.
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// A label value: at most 63 of `A-Za-z0-9._-`, beginning and ending alphanumeric (or empty).
pub(crate) fn is_label_value(value: &str) -> bool {
    let b = value.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')))
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name like a non-empty value.
pub(crate) fn is_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    (prefix.is_empty() || is_dns_subdomain(prefix)) && !name.is_empty() && is_label_value(name)
}

/// A resource quantity as the API accepts it: a positive decimal number and an optional suffix.
fn is_quantity(text: &str) -> bool {
    const SUFFIXES: [&str; 13] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| text.strip_suffix(s))
        .unwrap_or(text);
    !number.is_empty()
        && number.bytes().filter(|b| *b == b'.').count() <= 1
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.parse::<f64>().is_ok_and(|n| n > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<KubernetesConfig, ProviderError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        KubernetesConfig::from_lookup(|key| {
            vars.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn defaults_are_hardened_and_bounded() {
        let cfg = from(&[("HOME", "/home/u")]).expect("defaults");
        assert_eq!(cfg.namespace, None);
        assert_eq!(cfg.run_as_user, DEFAULT_RUN_AS_USER);
        assert_eq!(cfg.active_deadline, None);
        assert_eq!(
            cfg.log_dir,
            PathBuf::from("/home/u/.local/state/temporal-external-activity/kubernetes/logs")
        );
        let cfg = from(&[("MAX_COMPUTE_LIFETIME", "2h")]).expect("lifetime");
        assert_eq!(
            cfg.active_deadline,
            Some(Duration::from_secs(7200) + LIFETIME_MARGIN)
        );
    }

    #[test]
    fn settings_are_read_and_checked() {
        let cfg = from(&[
            ("K8S_NAMESPACE", "tea-runs"),
            ("K8S_SERVICE_ACCOUNT", "tea-worker"),
            (
                "K8S_NODE_SELECTOR",
                "disktype=ssd, kubernetes.io/arch=amd64",
            ),
            (
                "K8S_TOLERATIONS",
                r#"[{"key":"dedicated","operator":"Equal","value":"tea","effect":"NoSchedule"}]"#,
            ),
            ("K8S_IMAGE_PULL_SECRETS", "regcred,other"),
            ("K8S_CPU", "500m"),
            ("K8S_MEMORY", "512Mi"),
            ("K8S_RUN_AS_USER", "1000"),
            ("K8S_STOP_GRACE", "3s"),
            ("K8S_REQUEST_TIMEOUT", "10s"),
        ])
        .expect("valid settings");
        assert_eq!(cfg.namespace.as_deref(), Some("tea-runs"));
        assert_eq!(cfg.node_selector.len(), 2);
        assert_eq!(cfg.node_selector["kubernetes.io/arch"], "amd64");
        assert_eq!(cfg.tolerations[0].key.as_deref(), Some("dedicated"));
        assert_eq!(cfg.image_pull_secrets, ["regcred", "other"]);
        assert_eq!(
            (cfg.cpu.as_deref(), cfg.memory.as_deref()),
            (Some("500m"), Some("512Mi"))
        );
        assert_eq!(cfg.run_as_user, 1000);
        assert_eq!(cfg.stop_grace, Duration::from_secs(3));
        assert_eq!(cfg.request_timeout, Duration::from_secs(10));

        for (key, value, says) in [
            ("K8S_NAMESPACE", "Tea_Runs", "not a namespace name"),
            ("K8S_NODE_SELECTOR", "ssd", "label=value pairs"),
            ("K8S_TOLERATIONS", "dedicated", "JSON list of tolerations"),
            ("K8S_IMAGE_PULL_SECRETS", "Reg Cred", "Secret names"),
            ("K8S_CPU", "lots", "CPU quantity"),
            ("K8S_MEMORY", "-1Gi", "memory quantity"),
            ("K8S_RUN_AS_USER", "0", "other than 0"),
            ("K8S_RUN_AS_USER", "nobody", "numeric user"),
            ("K8S_STOP_GRACE", "soon", "not a duration"),
            ("K8S_REQUEST_TIMEOUT", "0s", "more than zero"),
            ("MAX_COMPUTE_LIFETIME", "forever", "not a duration"),
        ] {
            let err = from(&[(key, value)]).expect_err(value);
            assert!(
                err.message.contains(key) && err.message.contains(says),
                "{key}={value}: {err}"
            );
        }
    }
}
