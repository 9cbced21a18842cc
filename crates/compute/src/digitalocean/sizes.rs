//! A run's resources on App Platform: the instance size its worker gets. `size` names one
//! (it must be in the dated table of [`super::pricing`], so that its CPUs, memory and price
//! are known); `cpu` and `memory` pick the cheapest size that has them; nothing asked keeps
//! the configured size (`DIGITALOCEAN_INSTANCE_SIZE_SLUG`). App Platform has no GPU sizes.

use tea_contract::{Resources, format_bytes};

use super::pricing::{PRICES_AS_OF, SIZES, instance_size, smallest_fitting};
use crate::{
    ProviderError,
    sizing::{self, Unsupported, refusal},
};

/// The slug of the size `asked` gets on App Platform; `configured` when it asks nothing.
pub(super) fn fit(
    provider: &str,
    configured: &str,
    asked: &Resources,
) -> Result<String, ProviderError> {
    sizing::refuse_unsupported(
        provider,
        asked,
        &[Unsupported {
            field: "gpu",
            why: "App Platform has no GPU instance sizes",
        }],
    )?;
    if let Some(size) = &asked.size {
        if instance_size(size).is_none() {
            return Err(refusal(
                provider,
                "size",
                size,
                &format!(
                    "not an App Platform instance size in the table (as of {PRICES_AS_OF}): {}",
                    slugs()
                ),
            ));
        }
        return Ok(size.clone());
    }
    if asked.cpu.is_none() && asked.memory.is_none() {
        return Ok(configured.to_owned());
    }
    match smallest_fitting(asked.cpu, asked.memory) {
        Some(size) => Ok(size.slug.to_owned()),
        None => {
            let (field, value) = match (asked.cpu, asked.memory) {
                (Some(cpu), _) if smallest_fitting(Some(cpu), None).is_none() => {
                    ("cpu", format!("{cpu} CPU"))
                }
                (_, Some(memory)) => ("memory", format_bytes(memory)),
                (Some(cpu), None) => ("cpu", format!("{cpu} CPU")),
                (None, None) => unreachable!("checked above"),
            };
            let largest = SIZES.iter().max_by_key(|s| (s.cpus, s.memory_mib));
            Err(refusal(
                provider,
                field,
                &value,
                &format!(
                    "no App Platform instance size is that large (the largest, as of \
                     {PRICES_AS_OF}: {})",
                    largest.map_or("none", |s| s.slug)
                ),
            ))
        }
    }
}

fn slugs() -> String {
    SIZES.iter().map(|s| s.slug).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use tea_contract::Cpus;

    use super::*;

    const CONFIGURED: &str = "apps-s-1vcpu-0.5gb";

    #[test]
    fn a_request_maps_to_a_size_of_the_table() {
        let fit = |asked: Resources| fit("digitalocean", CONFIGURED, &asked);
        assert_eq!(fit(Resources::default()).unwrap(), CONFIGURED);
        let asked = Resources {
            cpu: Some(Cpus::from_millis(1000)),
            memory: Some(2 << 30),
            ..Default::default()
        };
        assert_eq!(fit(asked).unwrap(), "apps-s-1vcpu-2gb");
        let named = Resources {
            size: Some("apps-d-4vcpu-16gb".into()),
            ..Default::default()
        };
        assert_eq!(fit(named).unwrap(), "apps-d-4vcpu-16gb");
    }

    #[test]
    fn what_app_platform_has_not_is_refused_naming_the_field() {
        let cases = [
            (
                Resources {
                    gpu: Some(1),
                    ..Default::default()
                },
                "`resources.gpu` (1 GPU): the digitalocean provider cannot honour it: App \
                 Platform has no GPU instance sizes",
            ),
            (
                Resources {
                    size: Some("apps-x-huge".into()),
                    ..Default::default()
                },
                "`resources.size` (apps-x-huge)",
            ),
            (
                Resources {
                    cpu: Some(Cpus::from_millis(16_000)),
                    memory: Some(1 << 30),
                    ..Default::default()
                },
                "`resources.cpu` (16 CPU)",
            ),
            (
                Resources {
                    cpu: Some(Cpus::from_millis(1000)),
                    memory: Some(64 << 30),
                    ..Default::default()
                },
                "`resources.memory` (64 GiB): the digitalocean provider cannot honour it: no \
                 App Platform instance size is that large (the largest, as of 2026-11: \
                 apps-d-8vcpu-32gb)",
            ),
        ];
        for (asked, expected) in cases {
            let err = fit("digitalocean", CONFIGURED, &asked).unwrap_err();
            assert!(err.message.contains(expected), "{err}");
        }
    }
}
