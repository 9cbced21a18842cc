//! The HTTP layer every API call goes through: headers, one shared retry loop, error
//! classification and request counting (the counters in `stats.rs`, the waits between
//! attempts in `waits.rs`).
//!
//! Retry policy (after godo's, plus jitter): transport errors, 408, 429 and every 5xx except
//! 501 are retried up to `max_attempts`. A 429 (or 503) waits for `Retry-After` (seconds or
//! HTTP date) or, without it, until `ratelimit-reset` when `ratelimit-remaining` is 0; a wait
//! longer than `max_retry_wait` ends the call with a transient error instead. Everything else
//! backs off with full jitter (`random(0, min(max_backoff, base_backoff * 2^n))`).
//! 401/403 and other 4xx are permanent, 404 is not-found. Messages carry the API's `message`
//! and `request_id` (body or `x-request-id`), never the token or request bodies.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::config::{DigitalOceanConfig, ENV_ACCESS_TOKEN};
use super::model::ApiErrorBody;
use super::stats::{Operation, RequestStats};
use super::waits::{full_jitter, parse_retry_after_header, ratelimit_reset_wait};
use crate::{ErrorKind, ProviderError};

/// A failed call: the provider error plus what the caller may need to decide about it.
#[derive(Debug)]
pub(crate) struct CallError {
    /// Last HTTP status, if a response was received.
    pub status: Option<u16>,
    /// The API's `message`, if any.
    pub api_message: Option<String>,
    pub error: ProviderError,
}

impl CallError {
    fn new(status: Option<u16>, api_message: Option<String>, error: ProviderError) -> Self {
        Self {
            status,
            api_message,
            error,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.error.kind
    }
}

impl From<CallError> for ProviderError {
    fn from(e: CallError) -> Self {
        e.error
    }
}

#[derive(Clone, Debug)]
struct RetryPolicy {
    max_attempts: u32,
    base_backoff: Duration,
    max_backoff: Duration,
    max_retry_wait: Duration,
}

/// Shared HTTP client with auth headers, retries and counters.
pub(crate) struct ApiClient {
    http: reqwest::Client,
    base: Url,
    policy: RetryPolicy,
    stats: Mutex<RequestStats>,
}

/// One attempt's verdict.
enum Verdict {
    Done(Vec<u8>),
    Retry { wait: Duration, error: CallError },
    Fail(CallError),
}

impl ApiClient {
    pub fn new(cfg: &DigitalOceanConfig) -> Result<Self, ProviderError> {
        let base = cfg.validate()?;
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", cfg.token.expose())).map_err(|_| {
                ProviderError::permanent(format!(
                    "{ENV_ACCESS_TOKEN} contains characters not allowed in an HTTP header"
                ))
            })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("tea-compute/", env!("CARGO_PKG_VERSION"))),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ProviderError::permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            policy: RetryPolicy {
                max_attempts: cfg.max_attempts.max(1),
                base_backoff: cfg.base_backoff,
                max_backoff: cfg.max_backoff.max(cfg.base_backoff),
                max_retry_wait: cfg.max_retry_wait,
            },
            stats: Mutex::new(RequestStats::default()),
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `base` + `/v2/...segments`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v2").extend(segments);
        }
        url
    }

    pub fn stats(&self) -> RequestStats {
        self.stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn record(&self, op: Operation, status: Option<u16>) {
        let mut stats = self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let s = stats.operations.entry(op).or_default();
        s.requests += 1;
        match status {
            Some(code) => *s.statuses.entry(code).or_insert(0) += 1,
            None => s.transport_errors += 1,
        }
    }

    fn record_retry(&self, op: Operation) {
        let mut stats = self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        stats.operations.entry(op).or_default().retries += 1;
    }

    /// Sends the request and decodes a JSON 2xx body into `T`. A body that does not decode is
    /// a transient error (the request may still have taken effect).
    pub async fn json<T: DeserializeOwned>(
        &self,
        op: Operation,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<T, CallError> {
        let what = describe(op, &method, &url);
        let bytes = self.send(op, method, url, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CallError::new(
                Some(200),
                None,
                ProviderError::transient(format!(
                    "{what}: could not decode the response body: {e}"
                )),
            )
        })
    }

    /// The retry loop shared by every call. Returns the body of a 2xx response.
    pub async fn send(
        &self,
        op: Operation,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, CallError> {
        let what = describe(op, &method, &url);
        let max = self.policy.max_attempts;
        let mut attempt = 1;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            tracing::debug!(op = %op, %method, path = url.path(), attempt, "DigitalOcean request");
            let verdict = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match response.bytes().await {
                        Ok(bytes) => {
                            self.record(op, Some(status.as_u16()));
                            self.judge(&what, attempt, status, &headers, &bytes)
                        }
                        Err(e) => {
                            self.record(op, None);
                            self.judge_transport(&what, attempt, &e)
                        }
                    }
                }
                Err(e) => {
                    self.record(op, None);
                    self.judge_transport(&what, attempt, &e)
                }
            };
            match verdict {
                Verdict::Done(bytes) => return Ok(bytes),
                Verdict::Fail(e) => return Err(e),
                Verdict::Retry { error, .. } if attempt >= max => {
                    let mut error = error;
                    error.error.message =
                        format!("{} (gave up after {attempt} attempts)", error.error.message);
                    return Err(error);
                }
                Verdict::Retry { wait, error } => {
                    tracing::warn!(
                        op = %op,
                        attempt,
                        max_attempts = max,
                        wait_ms = wait.as_millis() as u64,
                        error = %error.error,
                        "DigitalOcean request failed; retrying"
                    );
                    self.record_retry(op);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        full_jitter(
            self.policy.base_backoff,
            self.policy.max_backoff,
            attempt,
            &mut rand::rng(),
        )
    }

    fn judge_transport(&self, what: &str, attempt: u32, e: &reqwest::Error) -> Verdict {
        let detail = error_chain(e);
        if e.is_builder() || e.is_redirect() {
            return Verdict::Fail(CallError::new(
                None,
                None,
                ProviderError::permanent(format!("{what}: {detail}")),
            ));
        }
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "transport error"
        };
        Verdict::Retry {
            wait: self.backoff(attempt),
            error: CallError::new(
                None,
                None,
                ProviderError::transient(format!("{what}: {kind}: {detail}")),
            ),
        }
    }

    fn judge(
        &self,
        what: &str,
        attempt: u32,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Verdict {
        if status.is_success() {
            return Verdict::Done(body.to_vec());
        }
        let code = status.as_u16();
        let api = parse_error_body(body);
        let request_id = api.request_id.clone().or_else(|| {
            headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        let mut detail = format!("HTTP {code}");
        if let Some(id) = api.id.as_deref().filter(|s| !s.is_empty()) {
            detail.push_str(&format!(" {id}"));
        }
        if let Some(message) = api.message.as_deref().filter(|s| !s.is_empty()) {
            detail.push_str(&format!(": {message}"));
        }
        if let Some(rid) = &request_id {
            detail.push_str(&format!(" (request_id {rid})"));
        }
        let error = |kind: ErrorKind, message: String| {
            CallError::new(
                Some(code),
                api.message.clone(),
                ProviderError { kind, message },
            )
        };
        match code {
            401 | 403 => Verdict::Fail(error(
                ErrorKind::Permanent,
                format!(
                    "{what}: DigitalOcean rejected the access token ({detail}): check that \
                     {ENV_ACCESS_TOKEN} is valid and has the app:create, app:read and \
                     app:delete scopes"
                ),
            )),
            404 => Verdict::Fail(error(ErrorKind::NotFound, format!("{what}: {detail}"))),
            429 | 503 => {
                let now = SystemTime::now();
                let server_wait = parse_retry_after_header(headers, now).or_else(|| {
                    (code == 429)
                        .then(|| ratelimit_reset_wait(headers, now))
                        .flatten()
                });
                match server_wait {
                    Some(wait) if wait > self.policy.max_retry_wait => Verdict::Fail(error(
                        ErrorKind::Transient,
                        format!(
                            "{what}: {detail}; the API asks to wait {}s, longer than the \
                                 {}s allowed in one call",
                            wait.as_secs(),
                            self.policy.max_retry_wait.as_secs()
                        ),
                    )),
                    Some(wait) => Verdict::Retry {
                        wait,
                        error: error(ErrorKind::Transient, format!("{what}: {detail}")),
                    },
                    None => Verdict::Retry {
                        wait: self.backoff(attempt),
                        error: error(ErrorKind::Transient, format!("{what}: {detail}")),
                    },
                }
            }
            408 | 500..=599 if code != 501 => Verdict::Retry {
                wait: self.backoff(attempt),
                error: error(ErrorKind::Transient, format!("{what}: {detail}")),
            },
            _ => Verdict::Fail(error(ErrorKind::Permanent, format!("{what}: {detail}"))),
        }
    }
}

fn describe(op: Operation, method: &Method, url: &Url) -> String {
    format!("DigitalOcean {op} ({method} {})", url.path())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The error body, or the raw (truncated) text as `message` when it is not JSON.
fn parse_error_body(body: &[u8]) -> ApiErrorBody {
    if let Ok(parsed) = serde_json::from_slice::<ApiErrorBody>(body) {
        return parsed;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = (!text.is_empty()).then(|| text.chars().take(300).collect());
    ApiErrorBody {
        message,
        ..ApiErrorBody::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_json_error_body_becomes_the_message() {
        let parsed = parse_error_body(b"<html>bad gateway</html>");
        assert_eq!(parsed.message.as_deref(), Some("<html>bad gateway</html>"));
        let parsed = parse_error_body(br#"{"id":"not_found","message":"nope","request_id":"r-1"}"#);
        assert_eq!(parsed.id.as_deref(), Some("not_found"));
        assert_eq!(parsed.request_id.as_deref(), Some("r-1"));
    }
}
