//! Secret handling: "encrypts" `SECRET` env values and image `registry_credentials` on first
//! submission (responses only ever carry the `EV[1:...]` form), remembers the plain values
//! server-side only, derives the plain run-time environment of a worker, and redacts secrets
//! from recorded request bodies.
//!
//! The "encryption" is an opaque random token mapped to the plain value in memory: it never
//! contains or derives from the plain text, so it cannot leak it.

use std::collections::HashMap;

use rand::RngCore;
use serde_json::Value;

const COMPONENT_KINDS: &[&str] = &["services", "workers", "jobs", "static_sites", "functions"];
/// Replacement for secret values in recorded request bodies.
pub const REDACTED: &str = "[REDACTED]";

/// Maps encrypted tokens to their plain values. Never serialised, never logged.
#[derive(Default)]
pub(crate) struct Vault {
    plain_by_cipher: HashMap<String, String>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault({} secrets)", self.plain_by_cipher.len())
    }
}

/// Whether a value already has the encrypted form (e.g. sent back from an earlier response).
pub fn looks_encrypted(v: &str) -> bool {
    v.starts_with("EV[") && v.ends_with(']')
}

impl Vault {
    /// Returns a fresh encrypted token for `plain`.
    pub fn encrypt(&mut self, plain: &str) -> String {
        let mut bytes = [0u8; 30];
        rand::rng().fill_bytes(&mut bytes);
        let cipher = format!("EV[1:{}]", base64(&bytes));
        self.plain_by_cipher
            .insert(cipher.clone(), plain.to_string());
        cipher
    }

    /// The plain value of a token this vault issued.
    pub fn reveal(&self, cipher: &str) -> Option<&str> {
        self.plain_by_cipher.get(cipher).map(String::as_str)
    }

    /// Encrypts a value unless it already is a token; returns (stored form, plain value).
    /// An encrypted token this vault does not know is kept as is (its plain value is unknown,
    /// so the token itself is what the worker gets).
    fn seal(&mut self, value: &str) -> (String, String) {
        if looks_encrypted(value) {
            let plain = self.reveal(value).unwrap_or(value).to_string();
            (value.to_string(), plain)
        } else {
            (self.encrypt(value), value.to_string())
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn is_secret(env: &serde_json::Map<String, Value>) -> bool {
    env.get("type").and_then(Value::as_str) == Some("SECRET")
}

fn is_run_time(env: &serde_json::Map<String, Value>) -> bool {
    env.get("scope").and_then(Value::as_str) != Some("BUILD_TIME")
}

/// Calls `f(component_name, env)` for every env definition (app-level ones with `None`).
fn for_each_env(
    spec: &mut Value,
    mut f: impl FnMut(Option<&str>, &mut serde_json::Map<String, Value>),
) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(envs)) = spec.get_mut("envs") {
        for env in envs.iter_mut().filter_map(Value::as_object_mut) {
            f(None, env);
        }
    }
    for kind in COMPONENT_KINDS {
        let Some(Value::Array(comps)) = spec.get_mut(*kind) else {
            continue;
        };
        for comp in comps.iter_mut().filter_map(Value::as_object_mut) {
            let name = comp
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(Value::Array(envs)) = comp.get_mut("envs") {
                for env in envs.iter_mut().filter_map(Value::as_object_mut) {
                    f(Some(&name), env);
                }
            }
        }
    }
}

/// Calls `f` on every image `registry_credentials` string of the spec.
fn for_each_credentials(spec: &mut Value, mut f: impl FnMut(&mut Value)) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    for kind in COMPONENT_KINDS {
        let Some(Value::Array(comps)) = spec.get_mut(*kind) else {
            continue;
        };
        for comp in comps.iter_mut() {
            if let Some(creds) = comp.pointer_mut("/image/registry_credentials")
                && creds.is_string()
            {
                f(creds);
            }
        }
    }
}

/// Replaces every secret in a (validated) spec by its encrypted form and returns the plain
/// run-time environment of component `worker`: app-level envs overridden by the component's
/// own, `BUILD_TIME`-only ones left out, SECRET ones decrypted.
pub(crate) fn seal_spec(
    spec: &mut Value,
    vault: &mut Vault,
    worker: Option<&str>,
) -> Vec<(String, String)> {
    let mut app_level: Vec<(String, String)> = Vec::new();
    let mut component: Vec<(String, String)> = Vec::new();
    for_each_env(spec, |comp, env| {
        let key = env
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let value = env
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let plain = if is_secret(env) && env.get("value").is_some_and(Value::is_string) {
            let (stored, plain) = vault.seal(&value);
            env.insert("value".into(), Value::String(stored));
            plain
        } else {
            value
        };
        if !is_run_time(env) {
            return;
        }
        match comp {
            None => app_level.push((key, plain)),
            Some(c) if Some(c) == worker => component.push((key, plain)),
            Some(_) => {}
        }
    });
    for_each_credentials(spec, |creds| {
        if let Some(s) = creds.as_str() {
            let (stored, _) = vault.seal(s);
            *creds = Value::String(stored);
        }
    });
    let mut out = app_level;
    for (k, v) in component {
        out.retain(|(ok, _)| *ok != k);
        out.push((k, v));
    }
    out
}

/// A copy of a request body with SECRET env values and registry credentials redacted.
/// A body that was not valid JSON (recorded as a string) is replaced by a placeholder, since
/// it cannot be redacted selectively.
pub fn redact_body(body: &Value) -> Value {
    if let Value::String(raw) = body {
        return Value::String(format!("[unparseable body, {} bytes]", raw.len()));
    }
    let mut body = body.clone();
    if let Some(spec) = body.get_mut("spec") {
        for_each_env(spec, |_, env| {
            if is_secret(env) && env.get("value").is_some_and(Value::is_string) {
                env.insert("value".into(), Value::String(REDACTED.into()));
            }
        });
        for_each_credentials(spec, |creds| *creds = Value::String(REDACTED.into()));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_known_vectors() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn seal_encrypts_secrets_and_builds_run_env() {
        let mut vault = Vault::default();
        let mut spec = json!({
            "name": "app-one",
            "envs": [{"key": "SHARED", "value": "app"}, {"key": "OVERRIDE", "value": "app"}],
            "workers": [{
                "name": "w1",
                "envs": [
                    {"key": "TEMPORAL_API_KEY", "value": "s3cret-value", "type": "SECRET", "scope": "RUN_TIME"},
                    {"key": "OVERRIDE", "value": "worker"},
                    {"key": "BUILD_ONLY", "value": "b", "scope": "BUILD_TIME"}
                ]
            }]
        });
        let env = seal_spec(&mut spec, &mut vault, Some("w1"));
        let stored = spec
            .pointer("/workers/0/envs/0/value")
            .and_then(Value::as_str)
            .unwrap();
        assert!(looks_encrypted(stored));
        assert!(!spec.to_string().contains("s3cret-value"));
        assert_eq!(vault.reveal(stored), Some("s3cret-value"));
        assert!(env.contains(&("TEMPORAL_API_KEY".into(), "s3cret-value".into())));
        assert!(env.contains(&("OVERRIDE".into(), "worker".into())));
        assert!(env.contains(&("SHARED".into(), "app".into())));
        assert!(!env.iter().any(|(k, _)| k == "BUILD_ONLY"));

        // Sending the encrypted form back keeps it and still resolves the plain value.
        let mut again = json!({"name": "app-two", "workers": [{"name": "w1", "envs": [
            {"key": "K", "value": stored, "type": "SECRET"}]}]});
        let env = seal_spec(&mut again, &mut vault, Some("w1"));
        assert_eq!(env, vec![("K".to_string(), "s3cret-value".to_string())]);
        assert_eq!(
            again
                .pointer("/workers/0/envs/0/value")
                .and_then(Value::as_str),
            Some(stored)
        );
    }
}
