//! Faults a test arms, in-process ([`crate::FakeK8s::inject`]) or with `POST /_fake/faults`:
//! answers the API server gives under load or trouble (429 with `Retry-After`, 5xx, a 409 for
//! a name nothing holds, a slow answer), and what the cluster does to pods (an image that
//! cannot be pulled, a pod the scheduler cannot place). Counted faults fire on the next
//! matching requests or pods, then disarm.

use serde::{Deserialize, Serialize};

/// Which requests a fault applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    #[default]
    Any,
    Create,
    Get,
    List,
    Delete,
    Log,
}

/// What the resource of a request is, for a fault's `resource`: `jobs`, `pods`, `secrets`.
pub type Resource = Option<String>;

/// A fault to inject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Fault {
    /// The next `count` matching requests are answered `status` with the API server's `Status`
    /// body (429 `TooManyRequests` with `Retry-After`, 500 `InternalError`, 503
    /// `ServiceUnavailable`, 409 `AlreadyExists`, ...) without being served.
    Status {
        count: u32,
        status: u16,
        #[serde(default)]
        op: Op,
        #[serde(default)]
        resource: Resource,
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// The next `count` matching requests are answered after `delay_ms`.
    Slow {
        count: u32,
        delay_ms: u64,
        #[serde(default)]
        op: Op,
        #[serde(default)]
        resource: Resource,
    },
    /// The next `count` pods created cannot pull their image (`ErrImagePull`, then
    /// `ImagePullBackOff`), whatever it is.
    ImagePullFailure { count: u32 },
    /// The next `count` pods created are never scheduled (`PodScheduled` false,
    /// `Unschedulable`, with `message` or the default scheduler's usual words).
    Unschedulable {
        count: u32,
        #[serde(default)]
        message: Option<String>,
    },
}

/// The scheduler's words for a pod that fits no node, by default.
pub const UNSCHEDULABLE_MESSAGE: &str = "0/1 nodes are available: 1 Insufficient cpu. \
     preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";

impl Fault {
    fn applies(op: Op, resource: &Resource, to: Op, to_resource: &str) -> bool {
        (op == Op::Any || op == to) && resource.as_deref().is_none_or(|r| r == to_resource)
    }
}

/// The request-level faults that fire for a request `op` on `resource`: a status to answer
/// with (and its `Retry-After`), and a delay. Each consumes one of its count.
pub fn take_request_faults(
    faults: &mut Vec<Fault>,
    op: Op,
    resource: &str,
) -> (Option<(u16, Option<u64>)>, Option<u64>) {
    let mut answer = None;
    let mut delay = None;
    for fault in faults.iter_mut() {
        match fault {
            Fault::Status {
                count,
                status,
                op: f_op,
                resource: f_res,
                retry_after_secs,
            } if answer.is_none() && *count > 0 && Fault::applies(*f_op, f_res, op, resource) => {
                *count -= 1;
                answer = Some((*status, *retry_after_secs));
            }
            Fault::Slow {
                count,
                delay_ms,
                op: f_op,
                resource: f_res,
            } if delay.is_none() && *count > 0 && Fault::applies(*f_op, f_res, op, resource) => {
                *count -= 1;
                delay = Some(*delay_ms);
            }
            _ => {}
        }
    }
    faults.retain(|f| {
        !matches!(
            f,
            Fault::Status { count: 0, .. } | Fault::Slow { count: 0, .. }
        )
    });
    (answer, delay)
}

/// What happens to a new pod: its image cannot be pulled; the scheduler's message if it
/// cannot be placed. Each consumes one of its count.
pub fn take_pod_faults(faults: &mut Vec<Fault>) -> (bool, Option<String>) {
    let mut pull_fails = false;
    let mut unschedulable = None;
    for fault in faults.iter_mut() {
        match fault {
            Fault::ImagePullFailure { count } if !pull_fails && *count > 0 => {
                *count -= 1;
                pull_fails = true;
            }
            Fault::Unschedulable { count, message } if unschedulable.is_none() && *count > 0 => {
                *count -= 1;
                unschedulable = Some(
                    message
                        .clone()
                        .unwrap_or_else(|| UNSCHEDULABLE_MESSAGE.to_owned()),
                );
            }
            _ => {}
        }
    }
    faults.retain(|f| {
        !matches!(
            f,
            Fault::ImagePullFailure { count: 0 } | Fault::Unschedulable { count: 0, .. }
        )
    });
    (pull_fails, unschedulable)
}
