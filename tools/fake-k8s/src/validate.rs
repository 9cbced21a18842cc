//! What the API server checks in a create body before storing it: the official schema of its
//! kind (strict: an unknown field is refused), then the rules the schema cannot say (names,
//! the namespace, a Job's restart policy, a Secret's keys and base64 values).

use serde_json::Value;

use crate::store::{Kind, Shared};

/// Every violation as `(field, message)`; empty when the body may be stored.
pub fn check(
    shared: &Shared,
    kind: Kind,
    ns: &str,
    object: &Value,
) -> Result<(), Vec<(String, String)>> {
    let mut causes: Vec<(String, String)> = Vec::new();
    if let Err(errors) = shared.schemas.check(kind.name(), object) {
        for error in errors {
            let (field, message) = error.split_once(": ").unwrap_or(("<root>", &error));
            causes.push((field.to_owned(), message.to_owned()));
        }
    }
    let mut cause = |field: &str, message: String| causes.push((field.to_owned(), message));
    if let Some(v) = object["apiVersion"]
        .as_str()
        .filter(|v| *v != kind.api_version())
    {
        cause(
            "apiVersion",
            format!("Invalid value: {v:?}: expected {}", kind.api_version()),
        );
    }
    if let Some(k) = object["kind"].as_str().filter(|k| *k != kind.name()) {
        cause(
            "kind",
            format!("Invalid value: {k:?}: expected {}", kind.name()),
        );
    }
    match object["metadata"]["name"].as_str() {
        None | Some("") => cause(
            "metadata.name",
            "Required value: name or generateName is required".into(),
        ),
        Some(name) if !is_dns_subdomain(name) || (kind == Kind::Job && name.len() > 63) => cause(
            "metadata.name",
            format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case \
                 alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
                 character"
            ),
        ),
        Some(_) => {}
    }
    if let Some(other) = object["metadata"]["namespace"]
        .as_str()
        .filter(|n| *n != ns)
    {
        cause(
            "metadata.namespace",
            format!("Invalid value: {other:?}: does not match the namespace of the request ({ns})"),
        );
    }
    match kind {
        Kind::Job => {
            let policy = object["spec"]["template"]["spec"]["restartPolicy"].as_str();
            if !matches!(policy, Some("Never" | "OnFailure")) {
                cause(
                    "spec.template.spec.restartPolicy",
                    format!(
                        "Unsupported value: {policy:?}: supported values: \"OnFailure\", \"Never\""
                    ),
                );
            }
            let containers = object["spec"]["template"]["spec"]["containers"].as_array();
            if containers.is_none_or(|c| c.is_empty()) {
                cause("spec.template.spec.containers", "Required value".into());
            }
        }
        Kind::Secret => {
            for (key, value) in object["data"].as_object().into_iter().flatten() {
                if !is_config_key(key) {
                    cause(
                        &format!("data[{key}]"),
                        format!(
                            "Invalid value: {key:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
                        ),
                    );
                }
                if value.as_str().is_none_or(|v| decode_base64(v).is_none()) {
                    cause(&format!("data[{key}]"), "Invalid value: not base64".into());
                }
            }
        }
        Kind::Pod => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}

fn is_dns_label(label: &str) -> bool {
    let b = label.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Standard base64 (with padding), as the API server reads a Secret's data.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' && i >= 2 {
                pad += 1;
                0
            } else if pad > 0 {
                return None;
            } else {
                ALPHABET.iter().position(|&a| a == c)? as u32
            };
            n = (n << 6) | v;
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// Standard base64 with padding.
pub fn encode_base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for text in ["", "a", "ab", "abc", "hunter22", "secret value\n"] {
            let encoded = encode_base64(text.as_bytes());
            assert_eq!(
                decode_base64(&encoded).as_deref(),
                Some(text.as_bytes()),
                "{encoded}"
            );
        }
        assert_eq!(encode_base64(b"hunter22"), "aHVudGVyMjI=");
        assert_eq!(decode_base64("not base64!"), None);
    }
}
