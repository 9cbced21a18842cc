//! A run's `resources`, checked before any compute exists: by `RequestCapacity`, which runs
//! before a run's first `Create` (and before it asks for a slot), in the workflow-worker that
//! knows the provider. The provider says what it would create or which field it cannot honour
//! ([`tea_compute::ComputeProvider::fit`]); the operator's bounds (`MAX_RUN_CPUS`,
//! `MAX_RUN_MEMORY`) are held against what it would create. A refusal fails the run at once
//! with a message naming the field.

use tea_compute::{ComputeProvider, ErrorKind, UnitSize};
use tea_contract::{Cpus, Resources, format_bytes};

/// The application failure type of a refused request (the run fails with its message alone).
pub const RESOURCES_REFUSED: &str = "ResourcesRefused";

/// The operator's bounds on what one run may ask for (`None`: unbounded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunBounds {
    /// `MAX_RUN_CPUS`.
    pub max_cpus: Option<Cpus>,
    /// `MAX_RUN_MEMORY`, in bytes.
    pub max_memory: Option<u64>,
}

/// Why a request is refused, or that asking the provider failed (worth retrying).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Refused for good: the message names the field.
    Request(String),
    /// The provider could not be asked now (its engine unreachable).
    Transient(String),
}

/// What `provider` would create for `asked`, within `bounds`.
pub async fn check(
    provider: &dyn ComputeProvider,
    bounds: RunBounds,
    asked: &Resources,
) -> Result<UnitSize, Refused> {
    let size = provider.fit(asked).await.map_err(|e| match e.kind {
        ErrorKind::Transient => Refused::Transient(e.message),
        ErrorKind::Permanent | ErrorKind::NotFound => Refused::Request(e.message),
    })?;
    let what =
        |field: &str, value: String| format!("workflow input field `resources.{field}` ({value})");
    if let (Some(cpu), Some(max)) = (size.cpu.or(asked.cpu), bounds.max_cpus)
        && cpu > max
    {
        return Err(Refused::Request(format!(
            "{} is more than this deployment allows a run (MAX_RUN_CPUS={max}){}",
            what("cpu", format!("{cpu} CPU")),
            in_size(&size)
        )));
    }
    if let (Some(memory), Some(max)) = (size.memory.or(asked.memory), bounds.max_memory)
        && memory > max
    {
        return Err(Refused::Request(format!(
            "{} is more than this deployment allows a run (MAX_RUN_MEMORY={}){}",
            what("memory", format_bytes(memory)),
            format_bytes(max),
            in_size(&size)
        )));
    }
    Ok(size)
}

/// ` (size apps-d-2vcpu-8gb)` when the provider maps the request to a named size.
fn in_size(size: &UnitSize) -> String {
    size.size
        .as_deref()
        .map(|name| format!(" (size {name})"))
        .unwrap_or_default()
}

/// `MAX_RUN_CPUS`: a number of CPUs (`4`, `0.5`).
pub fn parse_max_cpus(text: &str) -> Result<Cpus, String> {
    let value: serde_json::Value = text
        .trim()
        .parse::<f64>()
        .map(serde_json::Value::from)
        .map_err(|_| format!("MAX_RUN_CPUS={text}: expected a number of CPUs such as 4 or 0.5"))?;
    serde_json::from_value(value)
        .map_err(|_| format!("MAX_RUN_CPUS={text}: expected a number of CPUs above 0"))
}

/// `MAX_RUN_MEMORY`: bytes, or a size with a unit (`8GiB`, `512MiB`).
pub fn parse_max_memory(text: &str) -> Result<u64, String> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(0) => Err("MAX_RUN_MEMORY must be more than 0".to_owned()),
        Ok(bytes) => Ok(bytes),
        Err(_) => tea_contract::parse_memory(text).map_err(|e| format!("MAX_RUN_MEMORY: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tea_compute::{ComputeOwner, local::LocalConfig, local::LocalProvider};

    use super::*;

    fn local() -> Arc<dyn ComputeProvider> {
        let dir = std::env::temp_dir().join(format!("tea-bounds-{}", std::process::id()));
        let cfg = LocalConfig::new(dir, "/bin/true");
        Arc::new(LocalProvider::new(cfg, ComputeOwner::new("test/bounds").unwrap()).unwrap())
    }

    #[tokio::test]
    async fn a_request_above_the_operator_s_bound_or_the_provider_s_reach_is_refused() {
        let provider = local();
        let bounds = RunBounds {
            max_cpus: Some(Cpus::from_millis(1000)),
            max_memory: Some(512 << 20),
        };
        let asked = |cpu: u64, memory: u64| Resources {
            cpu: Some(Cpus::from_millis(cpu)),
            memory: Some(memory),
            ..Default::default()
        };
        let fitted = check(provider.as_ref(), bounds, &asked(500, 256 << 20)).await;
        assert_eq!(fitted.unwrap().memory, Some(256 << 20));
        let Err(Refused::Request(cpu)) = check(provider.as_ref(), bounds, &asked(1500, 1)).await
        else {
            panic!("more CPUs than MAX_RUN_CPUS");
        };
        assert_eq!(
            cpu,
            "workflow input field `resources.cpu` (1.5 CPU) is more than this deployment allows \
             a run (MAX_RUN_CPUS=1)"
        );
        let Err(Refused::Request(memory)) =
            check(provider.as_ref(), bounds, &asked(500, 1 << 30)).await
        else {
            panic!("more memory than MAX_RUN_MEMORY");
        };
        assert!(memory.contains("(1 GiB)") && memory.contains("MAX_RUN_MEMORY=512 MiB"));
        let gpu = Resources {
            gpu: Some(1),
            ..Default::default()
        };
        let Err(Refused::Request(gpu)) = check(provider.as_ref(), RunBounds::default(), &gpu).await
        else {
            panic!("no GPUs on the local provider");
        };
        assert!(
            gpu.contains("`resources.gpu`") && gpu.contains("local provider"),
            "{gpu}"
        );
    }

    #[test]
    fn bounds_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_max_cpus("2.5"), Ok(Cpus::from_millis(2500)));
        assert!(parse_max_cpus("0").is_err());
        assert!(
            parse_max_cpus("many")
                .unwrap_err()
                .contains("MAX_RUN_CPUS=many")
        );
        assert_eq!(parse_max_memory("8GiB"), Ok(8 << 30));
        assert_eq!(parse_max_memory("1048576"), Ok(1 << 20));
        assert!(parse_max_memory("0").is_err());
        assert!(
            parse_max_memory("8g")
                .unwrap_err()
                .contains("MAX_RUN_MEMORY")
        );
    }
}
