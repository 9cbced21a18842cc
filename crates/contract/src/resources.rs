//! What a run asks of its unit of compute: the input's `resources` object (CPUs, memory, GPUs,
//! a provider's own size name), how it is decoded from any client's JSON, and how it is named
//! in messages. Which provider can honour what, and how, is the providers' business
//! (`tea_compute`); here is only what was asked.
//!
//! Decoding is as strict as the rest of the input: unknown fields are refused, types checked,
//! names matched case-insensitively. CPUs may be fractional down to a thousandth (`0.5`,
//! `"250m"` is not accepted: write `0.25`). Memory is a whole number of bytes or a string with
//! an explicit unit, decimal (`kB`, `MB`, `GB`, `TB`) or binary (`KiB`, `MiB`, `GiB`, `TiB`,
//! or Kubernetes' `Ki`, `Mi`, `Gi`, `Ti`). Single letters (`512m`, `2g`) are refused: Docker
//! reads `m` as MiB, Kubernetes as thousandths.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::input::describe;

/// The most CPUs a run may ask for, whatever the provider (operators bound it further with
/// the workflow-worker's `MAX_RUN_CPUS`).
pub const MAX_CPUS: u32 = 1024;
/// The most GPUs a run may ask for.
pub const MAX_GPUS: u32 = 64;

/// A number of CPUs, fractional to a thousandth; on the wire a JSON number (`0.5`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus {
    millis: u64,
}

impl Cpus {
    /// `millis` thousandths of a CPU.
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    /// Thousandths of a CPU (Kubernetes' millicores).
    pub const fn millis(self) -> u64 {
        self.millis
    }

    /// Billionths of a CPU (Docker's `NanoCPUs`).
    pub const fn nanos(self) -> u64 {
        self.millis * 1_000_000
    }

    pub fn as_f64(self) -> f64 {
        self.millis as f64 / 1000.0
    }

    /// From a JSON number; `None` when it is not positive, finer than a thousandth or above
    /// [`MAX_CPUS`].
    fn from_f64(cpus: f64) -> Option<Self> {
        let millis = (cpus * 1000.0).round();
        let exact = ((cpus * 1000.0) - millis).abs() < 1e-6;
        (cpus > 0.0 && exact && millis <= f64::from(MAX_CPUS) * 1000.0).then_some(Self {
            millis: millis as u64,
        })
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

impl Serialize for Cpus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let cpus = f64::deserialize(deserializer)?;
        Self::from_f64(cpus)
            .ok_or_else(|| serde::de::Error::custom(format!("not a CPU count: {cpus}")))
    }
}

/// What a run asks of its unit of compute (input field `resources`). Every field is optional;
/// a provider refuses, before anything is created, a field it cannot honour.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs (fractional allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpus>,
    /// Memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// GPUs (a count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// A provider's own size name (App Platform's instance size slug).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// Every field [`Resources`] has, as spelled on the wire.
const FIELDS: [&str; 4] = ["cpu", "memory", "gpu", "size"];

impl Resources {
    /// Nothing asked: the provider's default size.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The CPUs, memory and GPUs asked, each as it reads: `0.5 CPU`, `256 MiB`, `1 GPU`.
    pub fn amounts(&self) -> Vec<String> {
        let cpu = self.cpu.map(|cpu| format!("{cpu} CPU"));
        let memory = self.memory.map(format_bytes);
        let gpu = self.gpu.map(|gpu| format!("{gpu} GPU"));
        [cpu, memory, gpu].into_iter().flatten().collect()
    }

    /// Decodes the input's `resources` object; the error names the field (`resources.cpu`).
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let object: &Map<String, Value> = value.as_object().ok_or_else(|| {
            format!(
                "field `resources` must be an object with `cpu`, `memory`, `gpu` or `size`, got {}",
                describe(value)
            )
        })?;
        let mut resources = Resources::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in object {
            let Some(field) = FIELDS.iter().copied().find(|f| f.eq_ignore_ascii_case(key)) else {
                return Err(format!(
                    "unknown field `resources.{key}` (known fields: {})",
                    FIELDS.join(", ")
                ));
            };
            if seen.contains(&field) {
                return Err(format!("field `resources.{field}` is given twice"));
            }
            seen.push(field);
            if value.is_null() {
                continue;
            }
            match field {
                "cpu" => resources.cpu = Some(cpu_value(value)?),
                "memory" => resources.memory = Some(memory_value(value)?),
                "gpu" => resources.gpu = Some(gpu_value(value)?).filter(|gpus| *gpus > 0),
                "size" => resources.size = Some(size_value(value)?),
                _ => unreachable!("every name in FIELDS is matched above"),
            }
        }
        if resources.size.is_some() && (resources.cpu.is_some() || resources.memory.is_some()) {
            return Err(
                "field `resources.size` names a whole size: give either it or \
                        `resources.cpu`/`resources.memory`, not both"
                    .to_owned(),
            );
        }
        Ok(resources)
    }
}

/// What was asked, for messages and logs: `0.5 CPU, 256 MiB, 1 GPU`.
impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .size
            .iter()
            .map(|size| format!("size {size}"))
            .collect();
        parts.extend(self.amounts());
        if parts.is_empty() {
            parts.push("the provider's default size".to_owned());
        }
        f.write_str(&parts.join(", "))
    }
}

/// Bytes in the largest binary unit that divides them (`256 MiB`, `1536 MiB`, `100 B`).
pub fn format_bytes(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} B")
}

fn cpu_value(value: &Value) -> Result<Cpus, String> {
    value.as_f64().and_then(Cpus::from_f64).ok_or_else(|| {
        format!(
            "field `resources.cpu` must be a number of CPUs above 0, at most {MAX_CPUS}, in \
             thousandths at the finest (0.5, 2), got {}",
            describe(value)
        )
    })
}

fn gpu_value(value: &Value) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= MAX_GPUS)
        .ok_or_else(|| {
            format!(
                "field `resources.gpu` must be a whole number of GPUs from 0 to {MAX_GPUS}, got {}",
                describe(value)
            )
        })
}

fn size_value(value: &Value) -> Result<String, String> {
    match value.as_str() {
        Some(size)
            if !size.is_empty()
                && size.len() <= 64
                && size
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') =>
        {
            Ok(size.to_owned())
        }
        _ => Err(format!(
            "field `resources.size` must be a provider's size name (letters, digits, `-`, `.`, \
             `_`; at most 64), got {}",
            describe(value)
        )),
    }
}

/// The units a memory string may carry, and their sizes in bytes.
const MEMORY_UNITS: [(&str, u64); 13] = [
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("ki", 1 << 10),
    ("mi", 1 << 20),
    ("gi", 1 << 30),
    ("ti", 1 << 40),
];

fn memory_value(value: &Value) -> Result<u64, String> {
    let expected = "field `resources.memory` must be a whole number of bytes above 0 or a string \
                    with a unit such as \"512MiB\", \"2GiB\", \"1.5GB\"";
    let bytes = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(text) => return parse_memory(text).map_err(|e| format!("{expected}: {e}")),
        _ => None,
    };
    bytes
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{expected}, got {}", describe(value)))
}

/// `"512MiB"`, `"1.5 GB"`, `"2Gi"` in bytes.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let Some((_, size)) = MEMORY_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(if unit.is_empty() {
            format!("{text:?} has no unit (a bare number is bytes: send it as a JSON number)")
        } else {
            format!(
                "{text:?}: unknown unit {unit:?} (decimal kB, MB, GB, TB or binary KiB, MiB, \
                 GiB, TiB, Ki, Mi, Gi, Ti; single letters are ambiguous)"
            )
        });
    };
    let bytes = (number * *size as f64).round();
    if bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<Resources, String> {
        Resources::from_json(&serde_json::from_str(json).expect("JSON"))
    }

    #[test]
    fn cpus_memory_and_gpus_decode_with_their_units() {
        let asked = decode(r#"{"cpu":0.5,"memory":"256MiB","gpu":1}"#).unwrap();
        assert_eq!(asked.cpu, Some(Cpus::from_millis(500)));
        assert_eq!(asked.cpu.unwrap().nanos(), 500_000_000);
        assert_eq!(asked.memory, Some(256 << 20));
        assert_eq!(asked.gpu, Some(1));
        assert_eq!(asked.to_string(), "0.5 CPU, 256 MiB, 1 GPU");
        for (text, bytes) in [
            ("1.5GB", 1_500_000_000),
            ("2Gi", 2 << 30),
            (" 512 mib ", 512 << 20),
            ("100b", 100),
            ("1kB", 1000),
        ] {
            assert_eq!(parse_memory(text), Ok(bytes), "{text}");
        }
        assert_eq!(
            decode(r#"{"memory":1048576}"#).unwrap().memory,
            Some(1 << 20)
        );
        assert_eq!(
            decode(r#"{"gpu":0,"size":null}"#).unwrap(),
            Resources::default()
        );
        assert_eq!(
            decode(r#"{"Size":"apps-d-1vcpu-2gb"}"#)
                .unwrap()
                .size
                .as_deref(),
            Some("apps-d-1vcpu-2gb")
        );
    }

    #[test]
    fn the_wire_form_round_trips() {
        let asked = decode(r#"{"cpu":2.25,"memory":"1GiB"}"#).unwrap();
        let json = serde_json::to_value(&asked).unwrap();
        assert_eq!(json, serde_json::json!({"cpu": 2.25, "memory": 1u64 << 30}));
        assert_eq!(serde_json::from_value::<Resources>(json).unwrap(), asked);
    }

    #[test]
    fn bad_requests_are_refused_naming_the_field() {
        for (json, expected) in [
            ("5", "field `resources` must be an object"),
            (r#"{"cpus":1}"#, "unknown field `resources.cpus`"),
            (r#"{"cpu":0}"#, "`resources.cpu` must be a number"),
            (r#"{"cpu":-1}"#, "`resources.cpu` must be a number"),
            (r#"{"cpu":0.0001}"#, "thousandths"),
            (r#"{"cpu":"2"}"#, "`resources.cpu` must be a number"),
            (r#"{"cpu":5000}"#, "at most 1024"),
            (r#"{"memory":"512m"}"#, "single letters are ambiguous"),
            (r#"{"memory":"512"}"#, "has no unit"),
            (r#"{"memory":"lots"}"#, "does not start with a number"),
            (r#"{"memory":0}"#, "`resources.memory` must be"),
            (r#"{"memory":-5}"#, "`resources.memory` must be"),
            (r#"{"gpu":1.5}"#, "`resources.gpu` must be a whole number"),
            (r#"{"gpu":100}"#, "from 0 to 64"),
            (r#"{"size":""}"#, "`resources.size` must be"),
            (r#"{"size":"a b"}"#, "`resources.size` must be"),
            (r#"{"size":"s","cpu":1}"#, "not both"),
            (r#"{"cpu":1,"CPU":2}"#, "`resources.cpu` is given twice"),
        ] {
            let err = decode(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }
}
