//! What a Job and its pod say about a unit's progress, as the kubelet and the Job controller
//! report it: a pure reading of their status into a [`Verdict`], which the provider completes
//! (the last log lines of a failure, whether a missing Secret is still to come).

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ContainerStateTerminated, Pod},
};

use crate::Readiness;

/// What a unit's Job and pod say, before the provider completes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The readiness as it is.
    Plain(Readiness),
    /// Failed; the last log lines of `pod` (when there is one) belong in the reason.
    Failed {
        phase: String,
        reason: String,
        pod: Option<String>,
    },
    /// The kubelet could not start the container because the Secret `secret` was not there:
    /// pending if it is there now (the kubelet retries), failed if it is still missing.
    SecretMissing { secret: String, message: String },
}

fn pending(phase: &str, detail: Option<String>) -> Verdict {
    Verdict::Plain(Readiness::Pending {
        phase: phase.to_owned(),
        detail,
    })
}

/// The pod of `job` among `pods`: one whose controller is this Job (its UID), the newest.
pub fn pod_of<'a>(job: &Job, pods: &'a [Pod]) -> Option<&'a Pod> {
    let uid = job.metadata.uid.as_deref()?;
    pods.iter()
        .filter(|pod| {
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .max_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Reads the Job and its pod (see [`pod_of`]) at `now`; `pull_grace` is how long an image may
/// fail to pull before that is a failure, `secret` the name of the unit's Secret.
pub fn verdict(
    job: &Job,
    pod: Option<&Pod>,
    now: DateTime<Utc>,
    pull_grace: Duration,
    secret: &str,
) -> Verdict {
    let pod_name = pod.and_then(|p| p.metadata.name.clone());
    let status = job.status.clone().unwrap_or_default();
    for condition in status.conditions.iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        let said = || {
            let mut said = condition.reason.clone().unwrap_or_default();
            if let Some(message) = condition.message.as_deref().filter(|m| !m.is_empty()) {
                said.push_str(&format!(": {message}"));
            }
            said
        };
        match condition.type_.as_str() {
            "Failed" | "FailureTarget" => {
                let mut reason = format!("the Job failed ({})", said());
                if let Some(pod) = pod {
                    reason.push_str(&format!("; {}", pod_end(pod)));
                }
                return Verdict::Failed {
                    phase: "Failed".to_owned(),
                    reason,
                    pod: pod_name,
                };
            }
            "Complete" | "SuccessCriteriaMet" => {
                let mut reason = "the worker exited: the Job is complete".to_owned();
                if let Some(pod) = pod {
                    reason.push_str(&format!("; {}", pod_end(pod)));
                }
                return Verdict::Failed {
                    phase: "Complete".to_owned(),
                    reason,
                    pod: pod_name,
                };
            }
            _ => {}
        }
    }
    let Some(pod) = pod else {
        if status.failed.unwrap_or(0) > 0 {
            return Verdict::Failed {
                phase: "Failed".to_owned(),
                reason: "the Job's pod failed and is gone".to_owned(),
                pod: None,
            };
        }
        return pending(
            "Creating",
            Some("the Job controller has not made its pod yet".into()),
        );
    };
    let pod_status = pod.status.clone().unwrap_or_default();
    let phase = pod_status.phase.clone().unwrap_or_else(|| "Pending".into());
    let container = pod_status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == super::manifest::CONTAINER);
    let state = container.and_then(|c| c.state.clone()).unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        // Deleted out of band (or evicted): it never runs again, and the Job replaces nothing.
        return Verdict::Failed {
            phase: "Terminating".to_owned(),
            reason: pod_end(pod),
            pod: pod_name,
        };
    }
    match phase.as_str() {
        "Succeeded" | "Failed" => {
            return Verdict::Failed {
                phase,
                reason: pod_end(pod),
                pod: pod_name,
            };
        }
        "Running" if state.running.is_some() => {
            return Verdict::Plain(Readiness::Ready {
                phase: "Running".to_owned(),
            });
        }
        _ => {}
    }
    if let Some(terminated) = &state.terminated {
        return Verdict::Failed {
            phase: "Terminated".to_owned(),
            reason: format!("the worker's container {}", terminated_words(terminated)),
            pod: pod_name,
        };
    }
    let unschedulable = pod_status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(condition) = unschedulable {
        let message = condition.message.clone().unwrap_or_default();
        return pending(
            "Unschedulable",
            Some(format!("the scheduler cannot place its pod: {message}")),
        );
    }
    let Some(waiting) = state.waiting else {
        return pending(&phase, None);
    };
    let reason = waiting.reason.unwrap_or_default();
    let message = waiting.message.unwrap_or_default();
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let age = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| u64::try_from(now.timestamp() - t.0.as_second()).ok())
        .map(Duration::from_secs)
        .unwrap_or_default();
    match reason.as_str() {
        "ErrImagePull" | "ImagePullBackOff" | "CreateContainerError" | "RunContainerError"
            if age < pull_grace =>
        {
            pending(&reason, Some(message))
        }
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
            Verdict::Failed {
                phase: reason.clone(),
                reason: format!("image {image} cannot be pulled ({reason}): {message}"),
                pod: None,
            }
        }
        "CreateContainerConfigError"
            if message.contains(&format!("secret \"{secret}\" not found")) =>
        {
            Verdict::SecretMissing {
                secret: secret.to_owned(),
                message,
            }
        }
        "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
            Verdict::Failed {
                phase: reason.clone(),
                reason: format!(
                    "the kubelet cannot start the worker's container ({reason}): {message}"
                ),
                pod: None,
            }
        }
        _ => pending(&reason, (!message.is_empty()).then_some(message)),
    }
}

/// How a pod ended, in words: the pod's own reason (`Evicted`) and its container's end.
pub fn pod_end(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let mut words = format!(
        "pod {} {}",
        pod.metadata.name.as_deref().unwrap_or("?"),
        status.phase.as_deref().unwrap_or("Unknown")
    );
    if let Some(reason) = &status.reason {
        words.push_str(&format!(" ({reason}"));
        if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
            words.push_str(&format!(": {message}"));
        }
        words.push(')');
    }
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.clone());
    if let Some(terminated) = terminated {
        words.push_str(&format!(
            "; its container {}",
            terminated_words(&terminated)
        ));
    }
    if pod.metadata.deletion_timestamp.is_some() {
        words.push_str("; it is being deleted");
    }
    words
}

fn terminated_words(t: &ContainerStateTerminated) -> String {
    let mut words = format!("exited with code {}", t.exit_code);
    if let Some(reason) = &t.reason {
        words.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = t.message.as_deref().filter(|m| !m.is_empty()) {
        words.push_str(&format!(": {message}"));
    }
    words
}
