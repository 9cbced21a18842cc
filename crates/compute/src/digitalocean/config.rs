//! Configuration of the DigitalOcean provider: defaults, environment variables and validation.
//!
//! The access token lives in [`AccessToken`], whose `Debug` output is redacted, so a config can be
//! logged with `{:?}` without leaking it.

use std::fmt;
use std::time::Duration;

use reqwest::Url;

use crate::ProviderError;
use crate::naming::is_portable_name;

/// Default API base URL.
pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";
/// Default instance size: 1 shared vCPU, 512 MiB (the current replacement of `basic-xxs`).
pub const DEFAULT_INSTANCE_SIZE_SLUG: &str = "apps-s-1vcpu-0.5gb";
/// Default name of the one worker component of each app.
pub const DEFAULT_COMPONENT_NAME: &str = "external-worker";

/// Environment variable holding the API token (required).
pub const ENV_ACCESS_TOKEN: &str = "DIGITALOCEAN_ACCESS_TOKEN";
/// Environment variable overriding the API base URL.
pub const ENV_API_URL: &str = "DIGITALOCEAN_API_URL";
/// Environment variable overriding the instance size slug.
pub const ENV_INSTANCE_SIZE_SLUG: &str = "DIGITALOCEAN_INSTANCE_SIZE_SLUG";
/// Environment variable selecting the region (`ams`, `nyc`, ...); unset means nearest.
pub const ENV_REGION: &str = "DIGITALOCEAN_REGION";
/// Environment variable overriding the worker component name.
pub const ENV_COMPONENT_NAME: &str = "DIGITALOCEAN_COMPONENT_NAME";
/// Environment variable overriding the per-request timeout, in whole seconds.
pub const ENV_REQUEST_TIMEOUT_SECS: &str = "DIGITALOCEAN_REQUEST_TIMEOUT_SECS";
/// Environment variable overriding the monthly price of the instance size (USD), for cost
/// estimates (default: [`super::pricing`]'s table).
pub const ENV_USD_PER_MONTH: &str = "DIGITALOCEAN_USD_PER_MONTH";
/// Environment variable overriding the attempts per API call.
pub const ENV_MAX_ATTEMPTS: &str = "DIGITALOCEAN_MAX_ATTEMPTS";

/// Regions the App Platform spec lists (others are accepted with a warning).
pub const KNOWN_REGIONS: &[&str] = &[
    "atl", "nyc", "sfo", "tor", "ams", "fra", "lon", "blr", "sgp", "syd",
];

/// Legacy instance size slugs the spec marks deprecated.
const DEPRECATED_SLUGS: &[&str] = &[
    "basic-xxs",
    "basic-xs",
    "basic-s",
    "basic-m",
    "professional-xs",
    "professional-s",
    "professional-m",
    "professional-1l",
    "professional-l",
    "professional-xl",
];

/// A DigitalOcean API token. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Everything the DigitalOcean provider needs.
#[derive(Clone, Debug)]
pub struct DigitalOceanConfig {
    /// API base URL, without the `/v2` (default [`DEFAULT_API_URL`]).
    pub api_url: String,
    pub token: AccessToken,
    /// Worker instance size (default [`DEFAULT_INSTANCE_SIZE_SLUG`]).
    pub instance_size_slug: String,
    /// App region; `None` lets DigitalOcean pick the nearest.
    pub region: Option<String>,
    /// Name of the worker component inside each app.
    pub component_name: String,
    /// Timeout of one HTTP request (connect + response + body).
    pub request_timeout: Duration,
    /// Attempts per API call, retries included (at least 1).
    pub max_attempts: u32,
    /// First backoff step for 5xx/transport errors (full jitter, doubling per attempt).
    pub base_backoff: Duration,
    /// Longest backoff step.
    pub max_backoff: Duration,
    /// Longest server-requested wait (`Retry-After`, `ratelimit-reset`) honoured in-call; a
    /// longer one ends the call with a transient error so the caller can reschedule.
    pub max_retry_wait: Duration,
    /// Monthly price of one worker of this size in USD, for cost estimates; `None` when
    /// neither the table nor `DIGITALOCEAN_USD_PER_MONTH` knows it.
    pub usd_per_month: Option<f64>,
    /// How long `delete` polls for the app to disappear before giving up (transient error).
    pub delete_confirm_timeout: Duration,
    /// Longest pause between two delete-confirmation polls.
    pub delete_poll_max_interval: Duration,
}

impl DigitalOceanConfig {
    /// A config with defaults everywhere except the token.
    pub fn new(token: AccessToken) -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_string(),
            token,
            instance_size_slug: DEFAULT_INSTANCE_SIZE_SLUG.to_string(),
            region: None,
            component_name: DEFAULT_COMPONENT_NAME.to_string(),
            usd_per_month: super::pricing::usd_per_month(DEFAULT_INSTANCE_SIZE_SLUG),
            request_timeout: Duration::from_secs(30),
            max_attempts: 5,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_wait: Duration::from_secs(120),
            delete_confirm_timeout: Duration::from_secs(120),
            delete_poll_max_interval: Duration::from_secs(5),
        }
    }

    /// Reads the process environment (see the `ENV_*` constants) and validates the result.
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`Self::from_env`], reading variables through `lookup` (for tests and embedding).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProviderError> {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let token = get(ENV_ACCESS_TOKEN).ok_or_else(|| {
            ProviderError::permanent(format!(
                "{ENV_ACCESS_TOKEN} is not set or empty: set it to a DigitalOcean personal access \
                 token with the app:create, app:read and app:delete scopes"
            ))
        })?;
        let mut cfg = Self::new(AccessToken::new(token));
        if let Some(url) = get(ENV_API_URL) {
            cfg.api_url = url;
        }
        if let Some(slug) = get(ENV_INSTANCE_SIZE_SLUG) {
            cfg.instance_size_slug = slug;
        }
        cfg.region = get(ENV_REGION);
        if let Some(name) = get(ENV_COMPONENT_NAME) {
            cfg.component_name = name;
        }
        if let Some(secs) = get(ENV_REQUEST_TIMEOUT_SECS) {
            let secs: u64 = secs.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                ProviderError::permanent(format!(
                    "{ENV_REQUEST_TIMEOUT_SECS}={secs:?} is not a positive whole number of seconds"
                ))
            })?;
            cfg.request_timeout = Duration::from_secs(secs);
        }
        cfg.usd_per_month = super::pricing::usd_per_month(&cfg.instance_size_slug);
        if let Some(price) = get(ENV_USD_PER_MONTH) {
            cfg.usd_per_month = Some(
                price
                    .parse::<f64>()
                    .ok()
                    .filter(|p| p.is_finite() && *p >= 0.0)
                    .ok_or_else(|| {
                        ProviderError::permanent(format!(
                            "{ENV_USD_PER_MONTH}={price:?} is not a price in USD like `5` or `12.5`"
                        ))
                    })?,
            );
        }
        if let Some(n) = get(ENV_MAX_ATTEMPTS) {
            cfg.max_attempts = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ProviderError::permanent(format!(
                    "{ENV_MAX_ATTEMPTS}={n:?} is not a positive whole number"
                ))
            })?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the token, URL, slug, region and component name; returns the parsed base URL.
    pub fn validate(&self) -> Result<Url, ProviderError> {
        if self.token.is_empty() {
            return Err(ProviderError::permanent(format!(
                "the DigitalOcean access token is empty: set {ENV_ACCESS_TOKEN}"
            )));
        }
        let url = parse_api_url(&self.api_url)?;
        validate_slug(&self.instance_size_slug)?;
        if let Some(region) = &self.region {
            if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(ProviderError::permanent(format!(
                    "region {region:?} is not a DigitalOcean region slug (one of {})",
                    KNOWN_REGIONS.join(", ")
                )));
            }
            if !KNOWN_REGIONS.contains(&region.as_str()) {
                tracing::warn!(%region, "region is not in the list of known App Platform regions");
            }
        }
        if !is_portable_name(&self.component_name) {
            return Err(ProviderError::permanent(format!(
                "component name {:?} must be 2-32 characters matching ^[a-z][a-z0-9-]{{0,30}}[a-z0-9]$",
                self.component_name
            )));
        }
        if self.max_attempts == 0 {
            return Err(ProviderError::permanent("max_attempts must be at least 1"));
        }
        if self.request_timeout.is_zero() {
            return Err(ProviderError::permanent(
                "request_timeout must be greater than zero",
            ));
        }
        Ok(url)
    }
}

fn parse_api_url(raw: &str) -> Result<Url, ProviderError> {
    let url = Url::parse(raw).map_err(|e| {
        ProviderError::permanent(format!(
            "DigitalOcean API URL {raw:?} ({ENV_API_URL}) is not a valid URL: {e}"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ProviderError::permanent(format!(
            "DigitalOcean API URL {raw:?} ({ENV_API_URL}) must be an http(s) URL with a host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ProviderError::permanent(format!(
            "DigitalOcean API URL {raw:?} ({ENV_API_URL}) must not have a query or fragment"
        )));
    }
    Ok(url)
}

pub(super) fn validate_slug(slug: &str) -> Result<(), ProviderError> {
    if DEPRECATED_SLUGS.contains(&slug) {
        return Err(ProviderError::permanent(format!(
            "instance size slug {slug:?} is a deprecated legacy plan; use a current one such as \
             {DEFAULT_INSTANCE_SIZE_SLUG:?} ({ENV_INSTANCE_SIZE_SLUG})"
        )));
    }
    let well_formed = slug.len() > "apps-".len()
        && slug.starts_with("apps-")
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !well_formed {
        return Err(ProviderError::permanent(format!(
            "instance size slug {slug:?} ({ENV_INSTANCE_SIZE_SLUG}) is not an App Platform size \
             such as {DEFAULT_INSTANCE_SIZE_SLUG:?} or apps-d-1vcpu-1gb"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ErrorKind;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn missing_or_empty_token_names_the_variable() {
        for pairs in [&[][..], &[(ENV_ACCESS_TOKEN, "  ")][..]] {
            let err = DigitalOceanConfig::from_lookup(env(pairs)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Permanent);
            assert!(err.message.contains(ENV_ACCESS_TOKEN), "{}", err.message);
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let cfg =
            DigitalOceanConfig::from_lookup(env(&[(ENV_ACCESS_TOKEN, "dop_v1_abc")])).unwrap();
        assert_eq!(cfg.api_url, DEFAULT_API_URL);
        assert_eq!(cfg.instance_size_slug, "apps-s-1vcpu-0.5gb");
        assert_eq!(cfg.component_name, "external-worker");
        assert_eq!(cfg.region, None);
        assert_eq!(cfg.max_attempts, 5);

        let cfg = DigitalOceanConfig::from_lookup(env(&[
            (ENV_ACCESS_TOKEN, "dop_v1_abc"),
            (ENV_API_URL, "http://127.0.0.1:8080"),
            (ENV_INSTANCE_SIZE_SLUG, "apps-d-1vcpu-1gb"),
            (ENV_REGION, "ams"),
            (ENV_REQUEST_TIMEOUT_SECS, "7"),
            (ENV_MAX_ATTEMPTS, "2"),
        ]))
        .unwrap();
        assert_eq!(cfg.api_url, "http://127.0.0.1:8080");
        assert_eq!(cfg.instance_size_slug, "apps-d-1vcpu-1gb");
        assert_eq!(cfg.region.as_deref(), Some("ams"));
        assert_eq!(cfg.request_timeout, Duration::from_secs(7));
        assert_eq!(cfg.max_attempts, 2);
        assert_eq!(
            cfg.usd_per_month,
            Some(34.0),
            "the table's price of the size"
        );
    }

    #[test]
    fn the_price_can_be_overridden_and_a_bad_one_is_refused() {
        let with = |price: &str| {
            DigitalOceanConfig::from_lookup(env(&[
                (ENV_ACCESS_TOKEN, "dop_v1_abc"),
                (ENV_USD_PER_MONTH, price),
            ]))
        };
        assert_eq!(with("7.5").expect("a price").usd_per_month, Some(7.5));
        for bad in ["cheap", "-1", "NaN"] {
            let err = with(bad).expect_err(bad);
            assert!(err.message.contains(ENV_USD_PER_MONTH), "{err}");
        }
    }

    #[test]
    fn rejects_bad_url_slug_and_region() {
        for (key, value) in [
            (ENV_API_URL, "not a url"),
            (ENV_API_URL, "ftp://example.com"),
            (ENV_INSTANCE_SIZE_SLUG, "basic-xxs"),
            (ENV_INSTANCE_SIZE_SLUG, "huge"),
            (ENV_REGION, "AMS1"),
            (ENV_MAX_ATTEMPTS, "0"),
        ] {
            let err =
                DigitalOceanConfig::from_lookup(env(&[(ENV_ACCESS_TOKEN, "t"), (key, value)]))
                    .unwrap_err();
            assert_eq!(err.kind, ErrorKind::Permanent, "{key}={value}");
        }
    }

    #[test]
    fn token_is_never_debug_printed() {
        let cfg = DigitalOceanConfig::new(AccessToken::new("dop_v1_supersecret"));
        let shown = format!("{cfg:?} {}", cfg.token);
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
