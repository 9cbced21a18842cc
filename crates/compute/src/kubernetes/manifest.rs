//! What the Kubernetes provider asks the cluster for: the Job of a unit of compute (its hardened
//! pod template, labels and cluster-enforced backstops) and the Secret holding the unit's secret
//! variables, owned by the Job. Pure functions of the spec and the configuration.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::{
    ByteString,
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, Container, EnvVar as PodEnvVar, EnvVarSource, LocalObjectReference,
            PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
            Secret, SecretKeySelector, SecurityContext,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};

use super::config::{KubernetesConfig, is_label_value};
use crate::{ComputeOwner, ComputeSpec};

/// The prefix of this project's label and annotation keys.
pub const KEY_PREFIX: &str = "temporal-external-activity.github.io";
/// Label holding the owner in a label-safe form ([`owner_label_value`]), for selecting.
pub const OWNER_LABEL: &str = "temporal-external-activity.github.io/owner";
/// Annotation holding the owner mark exactly (the [`ComputeOwner`]): what ownership is decided by.
pub const OWNER_ANNOTATION: &str = "temporal-external-activity.github.io/owner";
/// Label holding the compute name (on the Job, its pod and its Secret).
pub const COMPUTE_LABEL: &str = "temporal-external-activity.github.io/compute";
/// Label holding the run ID of the workflow run the unit serves, when it is known.
pub const RUN_LABEL: &str = "temporal-external-activity.github.io/run";
/// The standard label saying which tool manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// This project's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "temporal-external-activity";
/// The name of the worker's container in the pod.
pub const CONTAINER: &str = "worker";

/// The owner as a label value: [`ComputeOwner::id_component`] when it fits (63 characters,
/// alphanumeric at both ends), else its first 54 characters, `-` and 8 hex digits of the
/// owner's SHA-256, so distinct owners keep distinct labels.
pub fn owner_label_value(owner: &ComputeOwner) -> String {
    let clean = owner.id_component();
    if is_label_value(&clean) {
        return clean;
    }
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(owner.as_str().as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut head: String = clean.chars().take(54).collect();
    while head.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        head.pop();
    }
    format!("{head}-{hash}")
}

/// The label selector of everything `owner` made.
pub fn owner_selector(owner: &ComputeOwner) -> String {
    format!("{OWNER_LABEL}={}", owner_label_value(owner))
}

/// The label selector of the pods (and Secret) of the unit `name`.
pub fn compute_selector(name: &str) -> String {
    format!("{COMPUTE_LABEL}={name}")
}

/// The labels of the Job, its pod and its Secret.
fn labels(spec: &ComputeSpec, owner: &ComputeOwner) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (OWNER_LABEL.to_owned(), owner_label_value(owner)),
        (COMPUTE_LABEL.to_owned(), spec.name.clone()),
    ]);
    let run = spec
        .env
        .iter()
        .find(|v| v.key == tea_contract::OWNER_RUN_ID_ENV)
        .map(|v| v.value.as_str())
        .filter(|run| is_label_value(run));
    if let Some(run) = run {
        labels.insert(RUN_LABEL.to_owned(), run.to_owned());
    }
    labels
}

fn metadata(name: &str, spec: &ComputeSpec, owner: &ComputeOwner) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels(spec, owner)),
        annotations: Some(BTreeMap::from([(
            OWNER_ANNOTATION.to_owned(),
            owner.as_str().to_owned(),
        )])),
        ..Default::default()
    }
}

/// The name of the Secret of the unit `name` (the same name: another kind of object).
pub fn secret_name(name: &str) -> String {
    name.to_owned()
}

/// The Job of the unit `spec` (its name is the compute name): one pod, never restarted nor
/// replaced while it runs, hardened, its secret variables read from the unit's Secret.
pub fn job(spec: &ComputeSpec, image: &str, owner: &ComputeOwner, cfg: &KubernetesConfig) -> Job {
    let env: Vec<PodEnvVar> = spec
        .worker_env()
        .into_iter()
        .map(|var| {
            if var.secret {
                PodEnvVar {
                    name: var.key.clone(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret_name(&spec.name),
                            key: var.key,
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                PodEnvVar {
                    name: var.key,
                    value: Some(var.value),
                    ..Default::default()
                }
            }
        })
        .collect();
    let resources = resource_requirements(&spec.resources, cfg);
    let runtime_default = || SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..Default::default()
    };
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        env: Some(env),
        resources,
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            run_as_non_root: Some(true),
            run_as_user: Some(cfg.run_as_user),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".to_owned()),
        automount_service_account_token: Some(false),
        // Other services' addresses in the worker's environment are of no use to it.
        enable_service_links: Some(false),
        service_account_name: cfg.service_account.clone(),
        node_selector: (!cfg.node_selector.is_empty()).then(|| cfg.node_selector.clone()),
        tolerations: (!cfg.tolerations.is_empty()).then(|| cfg.tolerations.clone()),
        image_pull_secrets: (!cfg.image_pull_secrets.is_empty()).then(|| {
            cfg.image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        termination_grace_period_seconds: Some(seconds(cfg.stop_grace)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(cfg.run_as_user),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let meta = metadata(&spec.name, spec, owner);
    Job {
        metadata: meta.clone(),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            pod_replacement_policy: Some("Failed".to_owned()),
            active_deadline_seconds: cfg.active_deadline.map(seconds),
            ttl_seconds_after_finished: Some(
                i32::try_from(cfg.ttl_after_finished.as_secs()).unwrap_or(i32::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: meta.labels,
                    annotations: meta.annotations,
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Secret of the unit `spec`: its secret variables, owned by its Job (`job_uid`), so the
/// cluster deletes it with the Job. `None` when the unit has no secret variable.
pub fn secret(spec: &ComputeSpec, owner: &ComputeOwner, job_uid: &str) -> Option<Secret> {
    let data: BTreeMap<String, ByteString> = spec
        .worker_env()
        .into_iter()
        .filter(|v| v.secret)
        .map(|v| (v.key, ByteString(v.value.into_bytes())))
        .collect();
    if data.is_empty() {
        return None;
    }
    let mut meta = metadata(&secret_name(&spec.name), spec, owner);
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".to_owned(),
        kind: "Job".to_owned(),
        name: spec.name.clone(),
        uid: job_uid.to_owned(),
        ..Default::default()
    }]);
    Some(Secret {
        metadata: meta,
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        data: Some(data),
        ..Default::default()
    })
}

/// Whether the unit's spec has secret variables (so its pod waits for its Secret).
pub fn has_secrets(spec: &ComputeSpec) -> bool {
    spec.env.iter().any(|v| v.secret)
}

fn seconds(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_labels_are_label_safe_and_distinct() {
        let short = ComputeOwner::new("default/taskQueueName").unwrap();
        assert_eq!(owner_label_value(&short), short.id_component());
        assert!(owner_label_value(&short).starts_with("default-taskQueueName-"));
        let long_a = ComputeOwner::new(format!("ns/{}a", "q".repeat(90))).unwrap();
        let long_b = ComputeOwner::new(format!("ns/{}b", "q".repeat(90))).unwrap();
        for owner in [&short, &long_a, &long_b] {
            assert!(is_label_value(&owner_label_value(owner)), "{owner:?}");
        }
        assert_ne!(owner_label_value(&long_a), owner_label_value(&long_b));
        let plain = ComputeOwner::new("prod").unwrap();
        assert_eq!(owner_label_value(&plain), "prod");
    }
}

/// The container's requests and limits (equal, so the pod is `Guaranteed` and the unit gets
/// exactly what was asked): the run's `resources` where it asked (CPUs in millicores, memory
/// in bytes, GPUs as `nvidia.com/gpu`), else `K8S_CPU`/`K8S_MEMORY`; none when neither.
pub(super) fn resource_requirements(
    asked: &tea_contract::Resources,
    cfg: &KubernetesConfig,
) -> Option<ResourceRequirements> {
    let mut amounts = BTreeMap::new();
    match (asked.cpu, &cfg.cpu) {
        (Some(cpu), _) => {
            amounts.insert("cpu".to_owned(), Quantity(format!("{}m", cpu.millis())));
        }
        (None, Some(cpu)) => {
            amounts.insert("cpu".to_owned(), Quantity(cpu.clone()));
        }
        (None, None) => {}
    }
    match (asked.memory, &cfg.memory) {
        (Some(bytes), _) => {
            amounts.insert("memory".to_owned(), Quantity(bytes.to_string()));
        }
        (None, Some(memory)) => {
            amounts.insert("memory".to_owned(), Quantity(memory.clone()));
        }
        (None, None) => {}
    }
    if let Some(gpu) = asked.gpu {
        amounts.insert(GPU_RESOURCE.to_owned(), Quantity(gpu.to_string()));
    }
    (!amounts.is_empty()).then(|| ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..Default::default()
    })
}

/// The extended resource a GPU request asks for (NVIDIA's device plugin).
pub(super) const GPU_RESOURCE: &str = "nvidia.com/gpu";
