//! A run's resources on the Docker Engine: CPUs as the container's `NanoCPUs`, memory as its
//! `Memory` limit, GPUs as a device request (what `docker run --gpus N` sends), each in place
//! of the provider's `DOCKER_CPUS`/`DOCKER_MEMORY` when the run asks. Sizes are refused (an
//! engine has none); so are GPUs on an engine without the `nvidia` runtime (the NVIDIA
//! Container Toolkit), and memory below the engine's minimum.

use bollard::{Docker, models::DeviceRequest, models::HostConfig};
use tea_contract::{Cpus, Resources};

use super::{DockerConfig, engine_error};
use crate::{
    ProviderError, UnitSize,
    sizing::{self, Unsupported, refusal},
};

/// The least memory the engine accepts for a container (`docker run --memory`).
pub(super) const MIN_MEMORY: u64 = 6 << 20;

/// What the engine creates for `asked`: the run's limits, else the provider's defaults.
/// `engine` is asked about its runtimes when the run asks for GPUs (give it then).
pub(super) async fn fit(
    provider: &str,
    cfg: &DockerConfig,
    engine: Option<&Docker>,
    asked: &Resources,
) -> Result<UnitSize, ProviderError> {
    sizing::refuse_unsupported(
        provider,
        asked,
        &[Unsupported {
            field: "size",
            why: "a Docker Engine has no sizes; ask for `cpu` and `memory`",
        }],
    )?;
    if let Some(memory) = asked.memory.filter(|m| *m < MIN_MEMORY) {
        return Err(refusal(
            provider,
            "memory",
            &tea_contract::format_bytes(memory),
            "the engine's minimum is 6 MiB",
        ));
    }
    if let (Some(gpus), Some(engine)) = (asked.gpu, engine) {
        let info = engine
            .info()
            .await
            .map_err(|e| engine_error("asking the engine about its runtimes", e))?;
        let nvidia = info.runtimes.is_some_and(|r| r.contains_key("nvidia"));
        if !nvidia {
            return Err(refusal(
                provider,
                "gpu",
                &format!("{gpus} GPU"),
                "its engine has no `nvidia` runtime (install the NVIDIA Container Toolkit)",
            ));
        }
    }
    let default_cpus = cfg
        .nano_cpus
        .and_then(|nanos| u64::try_from(nanos / 1_000_000).ok())
        .map(Cpus::from_millis);
    let default_memory = cfg.memory_bytes.and_then(|m| u64::try_from(m).ok());
    Ok(UnitSize {
        cpu: asked.cpu.or(default_cpus),
        memory: asked.memory.or(default_memory),
        gpu: asked.gpu,
        ..Default::default()
    })
}

/// Sets the container's limits for `asked` (the provider's defaults where it asks none).
pub(super) fn apply(host: &mut HostConfig, cfg: &DockerConfig, asked: &Resources) {
    host.nano_cpus = asked
        .cpu
        .and_then(|cpu| i64::try_from(cpu.nanos()).ok())
        .or(cfg.nano_cpus);
    host.memory = asked
        .memory
        .and_then(|m| i64::try_from(m).ok())
        .or(cfg.memory_bytes);
    if let Some(gpus) = asked.gpu {
        host.device_requests = Some(vec![DeviceRequest {
            count: Some(i64::from(gpus)),
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            ..Default::default()
        }]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_s_limits_replace_the_provider_s_defaults() {
        let cfg = DockerConfig {
            memory_bytes: Some(1 << 30),
            nano_cpus: Some(2_000_000_000),
            ..DockerConfig::new("/tmp/unused")
        };
        let mut host = HostConfig::default();
        apply(&mut host, &cfg, &Resources::default());
        assert_eq!(
            (host.nano_cpus, host.memory),
            (Some(2_000_000_000), Some(1 << 30))
        );
        assert_eq!(host.device_requests, None);
        let asked = Resources {
            cpu: Some(Cpus::from_millis(500)),
            memory: Some(256 << 20),
            gpu: Some(2),
            ..Default::default()
        };
        apply(&mut host, &cfg, &asked);
        assert_eq!(
            (host.nano_cpus, host.memory),
            (Some(500_000_000), Some(256 << 20))
        );
        let [request] = host.device_requests.as_deref().expect("a GPU request") else {
            panic!("one device request");
        };
        assert_eq!(request.count, Some(2));
        assert_eq!(request.capabilities, Some(vec![vec!["gpu".to_owned()]]));
    }
}
