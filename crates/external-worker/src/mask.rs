//! Masking secrets in what a job reports, as CI systems do: the values of the worker's secret
//! variables (those its provider named in [`tea_contract::SECRET_NAMES_ENV`]: the job's
//! secrets from `JOB_SECRET_ENV`) and of its own Temporal credentials (API key, TLS client
//! key, gRPC metadata) are replaced with [`MASK`] in every line of output before the line
//! reaches the worker's log, a heartbeat, the output tail, the result or a failure message,
//! and likewise in the job's progress message and JSON result.
//!
//! What is masked and what is not:
//! - each line of output on its own: a secret printed whole on one line is masked; one split
//!   across two lines (or across two writes with a newline between) is not. The tail and the
//!   failure message keep whole lines, so they never split a masked value;
//! - a line longer than the runner keeps is cut; a cut through a secret leaves its start at
//!   the end of the kept part, which is masked as well when it is at least [`MIN_LEN`] long;
//! - a multi-line value (a PEM key) is masked line by line, its `-----BEGIN/END` armour
//!   excepted;
//! - values shorter than [`MIN_LEN`] characters are not masked (masking `1` or `yes`
//!   everywhere would garble the output and tell what the value is);
//! - a secret the job transforms (base64, reversed, one character per line) is not
//!   recognised.

use std::{borrow::Cow, collections::HashMap, fmt};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Values (and lines of multi-line values) shorter than this many characters are not masked.
pub const MIN_LEN: usize = 4;

/// The secret values to mask, longest first (so a secret containing another is masked whole).
/// Never printed: its `Debug` shows only how many values it holds.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    /// Masks each of `values` (each line of a multi-line one; see the module documentation).
    pub fn new(values: impl IntoIterator<Item = impl AsRef<str>>) -> Secrets {
        let mut kept: Vec<String> = values
            .into_iter()
            .flat_map(|v| {
                v.as_ref()
                    .lines()
                    .map(|l| l.trim_end_matches('\r').to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|l| l.chars().count() >= MIN_LEN && !is_pem_armour(l))
            .collect();
        kept.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        kept.dedup();
        Secrets { values: kept }
    }

    /// The secrets of this worker process: the variables named in
    /// [`tea_contract::SECRET_NAMES_ENV`] and the Temporal credentials it connects with (from
    /// the same environment and, unless [`tea_contract::TEMPORAL_ENV_ONLY_ENV`] says
    /// otherwise, configuration file as the connection). A client key given as a path is read.
    pub fn of_this_process() -> Secrets {
        Secrets::of_env(&std::env::vars().collect())
    }

    /// [`Self::of_this_process`] for the environment `env`.
    pub fn of_env(env: &HashMap<String, String>) -> Secrets {
        let mut values: Vec<String> = Vec::new();
        if let Some(names) = env.get(tea_contract::SECRET_NAMES_ENV) {
            values.extend(
                names
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .filter_map(|n| env.get(n).cloned()),
            );
        }
        values.extend(temporal_credentials(env));
        Secrets::new(values)
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `line` with every secret in it replaced by [`MASK`].
    pub fn mask<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let mut line = Cow::Borrowed(line);
        for secret in &self.values {
            if line.contains(secret.as_str()) {
                line = Cow::Owned(line.replace(secret.as_str(), MASK));
            }
        }
        line
    }

    /// Like [`Self::mask`], for a line that was cut: a start of a secret (at least
    /// [`MIN_LEN`] characters) at its very end is masked too.
    pub fn mask_cut(&self, line: &str) -> String {
        let mut line = self.mask(line).into_owned();
        for secret in &self.values {
            let cut = secret
                .char_indices()
                .map(|(i, _)| i)
                .skip(MIN_LEN)
                .filter(|i| line.ends_with(&secret[..*i]))
                .last();
            if let Some(len) = cut {
                line.truncate(line.len() - len);
                line.push_str(MASK);
            }
        }
        line
    }

    /// Masks every string (and object key) in `value`.
    pub fn mask_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(masked) = self.mask(s) {
                    *s = masked;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.mask_json(&mut v);
                    map.insert(self.mask(&key).into_owned(), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// A PEM `-----BEGIN ...-----` or `-----END ...-----` line: the same in every key.
fn is_pem_armour(line: &str) -> bool {
    (line.starts_with("-----BEGIN ") || line.starts_with("-----END ")) && line.ends_with("-----")
}

/// The credentials of this process's Temporal connection, resolved as the client resolves
/// them (see `tea_runtime::connect`).
fn temporal_credentials(env: &HashMap<String, String>) -> Vec<String> {
    use temporalio_common::envconfig::{
        DataSource, LoadClientConfigProfileOptions, load_client_config_profile,
    };
    let env_only = env
        .get(tea_contract::TEMPORAL_ENV_ONLY_ENV)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let mut options = LoadClientConfigProfileOptions::default();
    options.disable_file = env_only;
    // A configuration the client cannot load fails the connection anyway; then at least the
    // variables themselves are masked.
    let Ok(profile) = load_client_config_profile(options, Some(env)) else {
        return env
            .iter()
            .filter(|(k, _)| {
                *k == "TEMPORAL_API_KEY"
                    || *k == "TEMPORAL_TLS_CLIENT_KEY_DATA"
                    || k.starts_with("TEMPORAL_GRPC_META_")
            })
            .map(|(_, v)| v.clone())
            .collect();
    };
    let mut values: Vec<String> = profile.api_key.into_iter().collect();
    if let Some(key) = profile.tls.and_then(|tls| tls.client_key) {
        let bytes = match key {
            DataSource::Path(path) => std::fs::read(path).unwrap_or_default(),
            DataSource::Data(bytes) => bytes,
            _ => Vec::new(),
        };
        values.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    values.extend(profile.grpc_meta.into_values());
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_is_masked_longest_first() {
        let secrets = Secrets::new(["hunter22", "hunter22-and-more", "abc", ""]);
        assert_eq!(
            secrets.mask("pw=hunter22 again hunter22; long=hunter22-and-more"),
            "pw=*** again ***; long=***"
        );
        assert!(matches!(secrets.mask("nothing here"), Cow::Borrowed(_)));
        // Shorter than MIN_LEN: left alone, by design.
        assert_eq!(secrets.mask("abc"), "abc");
        assert_eq!(format!("{secrets:?}"), "Secrets(2 values)");
    }

    #[test]
    fn a_multi_line_value_is_masked_line_by_line_without_its_armour() {
        let pem = "-----BEGIN PRIVATE KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
        let secrets = Secrets::new([pem, "-----not-armour"]);
        assert_eq!(secrets.mask("pw -----not-armour"), "pw ***");
        assert_eq!(
            secrets.mask("-----BEGIN PRIVATE KEY-----"),
            "-----BEGIN PRIVATE KEY-----"
        );
        assert_eq!(secrets.mask("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "***");
        assert_eq!(secrets.mask("x BKcwggSjAgEAAoIBAQC7 y"), "x *** y");
    }

    #[test]
    fn a_secret_cut_at_the_end_of_a_kept_line_is_masked() {
        let secrets = Secrets::new(["s3cr3t-value"]);
        assert_eq!(secrets.mask_cut("aaaa s3cr3t-va"), "aaaa ***");
        assert_eq!(secrets.mask_cut("aaaa s3cr3t-value"), "aaaa ***");
        // Too short a start to tell from ordinary text.
        assert_eq!(secrets.mask_cut("aaaa s3c"), "aaaa s3c");
        assert_eq!(secrets.mask_cut("nothing"), "nothing");
    }

    #[test]
    fn json_strings_and_keys_are_masked() {
        let secrets = Secrets::new(["tok-1234"]);
        let mut value = serde_json::json!({
            "token": "tok-1234", "list": ["a tok-1234 b", 3, null], "tok-1234": true
        });
        secrets.mask_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({"token": "***", "list": ["a *** b", 3, null], "***": true})
        );
    }

    #[test]
    fn the_named_secrets_and_the_temporal_credentials_are_masked() {
        let key = std::env::temp_dir().join(format!("tea-mask-key-{}", std::process::id()));
        std::fs::write(
            &key,
            "-----BEGIN KEY-----\nkey-file-line\n-----END KEY-----\n",
        )
        .unwrap();
        let env: HashMap<String, String> = [
            (
                tea_contract::SECRET_NAMES_ENV,
                "MASK_TEST_A, MASK_TEST_B,,NOT_SET",
            ),
            ("MASK_TEST_A", "value-of-a"),
            ("MASK_TEST_B", "value-of-b"),
            ("MASK_TEST_C", "value-of-c"),
            ("TEMPORAL_API_KEY", "the-api-key"),
            ("TEMPORAL_TLS", "false"),
            ("TEMPORAL_TLS_CLIENT_KEY_PATH", key.to_str().unwrap()),
            ("TEMPORAL_GRPC_META_X_TENANT", "tenant-credential"),
            (tea_contract::TEMPORAL_ENV_ONLY_ENV, "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let secrets = Secrets::of_env(&env);
        std::fs::remove_file(&key).unwrap();
        assert_eq!(
            secrets.mask("value-of-a value-of-b value-of-c the-api-key tenant-credential"),
            "*** *** value-of-c *** ***"
        );
        assert_eq!(secrets.mask("key-file-line"), "***");
    }
}
