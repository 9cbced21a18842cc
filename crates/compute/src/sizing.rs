//! Per-run sizes: what a provider creates for a run's [`Resources`] ([`UnitSize`]), and the
//! refusal of a field it cannot honour, named with the provider, before anything exists.
//!
//! Every provider answers [`crate::ComputeProvider::fit`]: the workflow-worker asks it before
//! a run's first `Create` (in `RequestCapacity`) and `create_or_adopt` applies the same answer,
//! so no unit is ever created for a request its provider cannot honour, and nothing asked is
//! silently ignored.

use tea_contract::{Cpus, Resources, format_bytes};

use crate::ProviderError;

/// What a provider creates for a run's resources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitSize {
    /// The provider's own size name, where it has sizes (an App Platform slug).
    pub size: Option<String>,
    /// CPUs the unit gets, where known (checked against `MAX_RUN_CPUS`).
    pub cpu: Option<Cpus>,
    /// Memory in bytes the unit gets, where known (checked against `MAX_RUN_MEMORY`).
    pub memory: Option<u64>,
    /// GPUs the unit gets.
    pub gpu: Option<u32>,
    /// What one unit of this size costs per second in USD, where the platform bills per unit.
    pub usd_per_second: Option<f64>,
}

impl UnitSize {
    /// How the size reads in logs and a run's usage: `apps-s-1vcpu-2gb`, `0.5 CPU, 256 MiB`;
    /// `None` for a provider's default without limits.
    pub fn describe(&self) -> Option<String> {
        // A named size says its CPUs and memory itself.
        let amounts = Resources {
            cpu: self.cpu.filter(|_| self.size.is_none()),
            memory: self.memory.filter(|_| self.size.is_none()),
            gpu: self.gpu,
            size: None,
        };
        let parts: Vec<String> = self.size.iter().cloned().chain(amounts.amounts()).collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// A field of `resources` a provider does not honour, and why.
pub struct Unsupported {
    /// `cpu`, `memory`, `gpu` or `size`.
    pub field: &'static str,
    /// Why not, in the provider's terms (`it has no GPUs to give`).
    pub why: &'static str,
}

/// Refuses the first field of `asked` that `provider` lists as unsupported; the error names
/// the field, what was asked and the provider (a permanent error: asking again cannot help).
pub fn refuse_unsupported(
    provider: &str,
    asked: &Resources,
    unsupported: &[Unsupported],
) -> Result<(), ProviderError> {
    for Unsupported { field, why } in unsupported {
        let value = match *field {
            "cpu" => asked.cpu.map(|cpu| format!("{cpu} CPU")),
            "memory" => asked.memory.map(format_bytes),
            "gpu" => asked.gpu.map(|gpu| format!("{gpu} GPU")),
            "size" => asked.size.clone(),
            _ => None,
        };
        if let Some(value) = value {
            return Err(refusal(provider, field, &value, why));
        }
    }
    Ok(())
}

/// The error for a request `provider` cannot honour: ``resources.gpu` (1 GPU): the local
/// provider cannot honour it: it has no GPUs to give`.
pub fn refusal(provider: &str, field: &str, asked: &str, why: &str) -> ProviderError {
    ProviderError::permanent(format!(
        "workflow input field `resources.{field}` ({asked}): the {provider} provider cannot \
         honour it: {why}"
    ))
}

/// Every field refused: for providers that map no resources (yet). A run that asks for none
/// gets the provider's default size.
pub fn refuse_all(provider: &str, asked: &Resources) -> Result<(), ProviderError> {
    const WHY: &str = "this provider does not size units per run";
    refuse_unsupported(
        provider,
        asked,
        &[
            Unsupported {
                field: "cpu",
                why: WHY,
            },
            Unsupported {
                field: "memory",
                why: WHY,
            },
            Unsupported {
                field: "gpu",
                why: WHY,
            },
            Unsupported {
                field: "size",
                why: WHY,
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_field_what_was_asked_and_the_provider() {
        let asked = Resources {
            memory: Some(256 << 20),
            gpu: Some(2),
            ..Default::default()
        };
        let unsupported = [Unsupported {
            field: "gpu",
            why: "it has no GPUs to give",
        }];
        let err = refuse_unsupported("local", &asked, &unsupported).unwrap_err();
        assert_eq!(
            err.message,
            "workflow input field `resources.gpu` (2 GPU): the local provider cannot honour it: \
             it has no GPUs to give"
        );
        assert!(!err.is_retryable());
        assert!(refuse_unsupported("local", &Resources::default(), &unsupported).is_ok());
        let err = refuse_all("nomad", &asked).unwrap_err();
        assert!(
            err.message.contains("`resources.memory` (256 MiB)"),
            "{err}"
        );
    }

    #[test]
    fn a_size_reads_as_its_name_or_its_limits() {
        let named = UnitSize {
            size: Some("apps-s-1vcpu-2gb".into()),
            cpu: Some(Cpus::from_millis(1000)),
            ..Default::default()
        };
        assert_eq!(named.describe().as_deref(), Some("apps-s-1vcpu-2gb"));
        let limits = UnitSize {
            cpu: Some(Cpus::from_millis(500)),
            memory: Some(256 << 20),
            gpu: Some(1),
            ..Default::default()
        };
        assert_eq!(
            limits.describe().as_deref(),
            Some("0.5 CPU, 256 MiB, 1 GPU")
        );
        assert_eq!(UnitSize::default().describe(), None);
    }
}
