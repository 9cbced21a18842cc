//! Fault injection: the [`Fault`] kinds tests and chaos scripts can arm, the [`Op`] scope a
//! fault applies to, and the queue of armed faults with their remaining counts.
//!
//! Faults are consumed in the order they were injected: each matching request (or create, or
//! deployment) uses up one unit of the first armed fault that applies to it.

use serde::{Deserialize, Serialize};

/// The API operation a request is for; used to scope faults and to count requests.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Matches every operation (only meaningful as a fault scope).
    #[default]
    Any,
    /// `POST /v2/apps`
    Create,
    /// `GET /v2/apps/{id}`
    Get,
    /// `GET /v2/apps`
    List,
    /// `DELETE /v2/apps/{id}`
    Delete,
    /// `GET /v2/apps/{app_id}/deployments/{deployment_id}`
    GetDeployment,
    /// `POST /v2/apps/propose`
    Propose,
    /// Any other `/v2` path or method (answered 404/405).
    Other,
}

impl Op {
    /// The snake_case name used in JSON and in request counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Any => "any",
            Op::Create => "create",
            Op::Get => "get",
            Op::List => "list",
            Op::Delete => "delete",
            Op::GetDeployment => "get_deployment",
            Op::Propose => "propose",
            Op::Other => "other",
        }
    }

    /// Whether a fault scoped to `self` applies to a request for `actual`.
    pub fn matches(self, actual: Op) -> bool {
        self == Op::Any || self == actual
    }
}

fn default_retry_after() -> u64 {
    1
}

fn default_status() -> u16 {
    500
}

fn default_client_status() -> u16 {
    422
}

/// A fault to inject. JSON form (admin endpoint `POST /_fake/faults`) is internally tagged by
/// `kind`, e.g. `{"kind":"RateLimit","count":2,"retry_after_secs":1,"op":"create"}`;
/// snake_case kind names (`rate_limit`, ...) are accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Fault {
    /// The next `count` matching `/v2` requests answer 429 `too_many_requests` with a
    /// `Retry-After: retry_after_secs` header.
    #[serde(alias = "rate_limit")]
    RateLimit {
        count: u32,
        #[serde(default = "default_retry_after")]
        retry_after_secs: u64,
        #[serde(default)]
        op: Op,
    },
    /// The next `count` matching `/v2` requests answer `status` (a 5xx, default 500) with
    /// `{"id":"server_error",...}`; nothing is changed on the server.
    #[serde(alias = "server_error")]
    ServerError {
        count: u32,
        #[serde(default = "default_status")]
        status: u16,
        #[serde(default)]
        op: Op,
    },
    /// The next `count` matching `/v2` requests answer `status` (a 4xx other than 401 and 429,
    /// default 422) with `{"id":"unprocessable_entity",...}`: a refusal that retrying cannot
    /// fix (a quota reached, a spec the account may not use); nothing is changed on the server.
    #[serde(alias = "client_error")]
    ClientError {
        count: u32,
        #[serde(default = "default_client_status")]
        status: u16,
        #[serde(default)]
        op: Op,
    },
    /// The next `count` matching `/v2` requests that name app `app_id` in their path answer
    /// `status` (a 5xx, default 500); other apps' requests are served. For "the delete of this
    /// one unit keeps failing" scenarios.
    #[serde(alias = "app_server_error")]
    AppServerError {
        app_id: String,
        count: u32,
        #[serde(default = "default_status")]
        status: u16,
        #[serde(default)]
        op: Op,
    },
    /// The next `count` valid creates store the app (and start its deployment) but answer 500.
    #[serde(alias = "create_stores_then_500")]
    CreateStoresThen500 { count: u32 },
    /// The deployments of the next `count` created apps end in phase `ERROR`; no worker process
    /// is started and `active_deployment` stays absent.
    #[serde(alias = "deployment_error")]
    DeploymentError { count: u32 },
    /// The next `count` created apps start their worker as soon as the deployment reaches
    /// `DEPLOYING`, and the deployment stays `DEPLOYING` for `hold_ms` more before it becomes
    /// `ACTIVE`: App Platform runs the new container while it still rolls out (health checks,
    /// a slow region), so a worker can poll, and run a job, before the deployment is reported
    /// ready.
    #[serde(alias = "slow_rollout")]
    SlowRollout { count: u32, hold_ms: u64 },
    /// Changes the delay between deployment phases from now on (not a counted fault).
    #[serde(alias = "deploy_delay")]
    DeployDelay { step_delay_ms: u64 },
    /// Asynchronous delete from now on (not a counted fault): after a `DELETE` is accepted the
    /// app stays visible to get and list for `delay_ms` before it reads as 404, as App Platform
    /// tears apps down in the background. Its worker is stopped at once. 0: immediate.
    #[serde(alias = "delete_delay")]
    DeleteDelay { delay_ms: u64 },
    /// Asynchronous delete counted in reads, from now on (not a counted fault): after a
    /// `DELETE` is accepted the app stays visible for its next `reads` answers that show it (a
    /// get of it or of its deployment, a list page holding it), then reads as 404. For tests
    /// that need an exact number of "still there" answers, which a delay cannot give. With a
    /// `DeleteDelay` too, the app goes when either is over. 0: off.
    #[serde(alias = "delete_linger")]
    DeleteLinger { reads: u32 },
}

impl Fault {
    /// Checks the fault's parameters; returns a message for the admin endpoint on failure.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Fault::ServerError { status, .. } | Fault::AppServerError { status, .. }
                if !(500..=599).contains(status) =>
            {
                Err(format!("ServerError status must be 500-599, got {status}"))
            }
            Fault::ClientError { status, .. }
                if !(400..=499).contains(status) || matches!(status, 401 | 429) =>
            {
                Err(format!(
                    "ClientError status must be 400-499 (not 401 or 429: use a wrong token or \
                     RateLimit), got {status}"
                ))
            }
            _ => Ok(()),
        }
    }

    fn remaining_mut(&mut self) -> Option<&mut u32> {
        match self {
            Fault::RateLimit { count, .. }
            | Fault::ServerError { count, .. }
            | Fault::ClientError { count, .. }
            | Fault::AppServerError { count, .. }
            | Fault::CreateStoresThen500 { count }
            | Fault::DeploymentError { count }
            | Fault::SlowRollout { count, .. } => Some(count),
            Fault::DeployDelay { .. } | Fault::DeleteDelay { .. } | Fault::DeleteLinger { .. } => {
                None
            }
        }
    }
}

/// What the request middleware must answer instead of serving a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFault {
    RateLimit { retry_after_secs: u64 },
    ServerError { status: u16 },
    ClientError { status: u16 },
}

/// Armed counted faults, in injection order; each entry's count is what remains.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    armed: Vec<Fault>,
}

impl FaultQueue {
    /// Arms a counted fault (ignored if its count is 0 or it is not a counted fault).
    pub fn push(&mut self, mut fault: Fault) {
        if let Some(count) = fault.remaining_mut()
            && *count > 0
        {
            self.armed.push(fault);
        }
    }

    pub fn clear(&mut self) {
        self.armed.clear();
    }

    pub fn pending(&self) -> Vec<Fault> {
        self.armed.clone()
    }

    /// Consumes one unit of the first fault matching `pick`, returning what `pick` extracted.
    fn take<T>(&mut self, pick: impl Fn(&Fault) -> Option<T>) -> Option<T> {
        let idx = self.armed.iter().position(|f| pick(f).is_some())?;
        let out = pick(&self.armed[idx]);
        if let Some(count) = self.armed[idx].remaining_mut() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.armed.remove(idx);
            }
        }
        out
    }

    /// A rate-limit or server-error fault for a `/v2` request to `op` on `path`, if one is
    /// armed.
    pub fn take_request_fault(&mut self, op: Op, path: &str) -> Option<RequestFault> {
        let names_app = |id: &str| path.split('/').any(|seg| seg == id);
        self.take(|f| match *f {
            Fault::AppServerError {
                ref app_id,
                status,
                op: scope,
                ..
            } if scope.matches(op) && names_app(app_id) => {
                Some(RequestFault::ServerError { status })
            }
            Fault::RateLimit {
                retry_after_secs,
                op: scope,
                ..
            } if scope.matches(op) => Some(RequestFault::RateLimit { retry_after_secs }),
            Fault::ServerError {
                status, op: scope, ..
            } if scope.matches(op) => Some(RequestFault::ServerError { status }),
            Fault::ClientError {
                status, op: scope, ..
            } if scope.matches(op) => Some(RequestFault::ClientError { status }),
            _ => None,
        })
    }

    pub fn take_create_then_500(&mut self) -> bool {
        self.take(|f| matches!(f, Fault::CreateStoresThen500 { .. }).then_some(()))
            .is_some()
    }

    pub fn take_deployment_error(&mut self) -> bool {
        self.take(|f| matches!(f, Fault::DeploymentError { .. }).then_some(()))
            .is_some()
    }

    /// How long a new app's deployment stays `DEPLOYING` with its worker running, when a
    /// `SlowRollout` fault is armed.
    pub fn take_slow_rollout(&mut self) -> Option<std::time::Duration> {
        self.take(|f| match *f {
            Fault::SlowRollout { hold_ms, .. } => Some(std::time::Duration::from_millis(hold_ms)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_faults_only_hit_their_op_and_count_down() {
        let mut q = FaultQueue::default();
        q.push(Fault::RateLimit {
            count: 2,
            retry_after_secs: 3,
            op: Op::Create,
        });
        assert_eq!(q.take_request_fault(Op::Get, "/v2/apps/a"), None);
        assert_eq!(
            q.take_request_fault(Op::Create, "/v2/apps"),
            Some(RequestFault::RateLimit {
                retry_after_secs: 3
            })
        );
        assert!(q.take_request_fault(Op::Create, "/v2/apps").is_some());
        assert_eq!(q.take_request_fault(Op::Create, "/v2/apps"), None);
        assert!(q.pending().is_empty());
    }

    #[test]
    fn fault_json_forms() {
        let f: Fault = serde_json::from_str(r#"{"kind":"server_error","count":1}"#).unwrap();
        assert_eq!(
            f,
            Fault::ServerError {
                count: 1,
                status: 500,
                op: Op::Any
            }
        );
        let f: Fault =
            serde_json::from_str(r#"{"kind":"RateLimit","count":1,"op":"get_deployment"}"#)
                .unwrap();
        assert_eq!(
            f,
            Fault::RateLimit {
                count: 1,
                retry_after_secs: 1,
                op: Op::GetDeployment
            }
        );
        assert!(
            Fault::ServerError {
                count: 1,
                status: 404,
                op: Op::Any
            }
            .check()
            .is_err()
        );
        let f: Fault = serde_json::from_str(r#"{"kind":"DeleteDelay","delay_ms":7000}"#).unwrap();
        assert_eq!(f, Fault::DeleteDelay { delay_ms: 7000 });
        let f: Fault = serde_json::from_str(r#"{"kind":"delete_linger","reads":2}"#).unwrap();
        assert_eq!(f, Fault::DeleteLinger { reads: 2 });
    }

    #[test]
    fn app_scoped_faults_hit_only_that_app() {
        let mut q = FaultQueue::default();
        q.push(Fault::AppServerError {
            app_id: "a1".into(),
            count: 2,
            status: 503,
            op: Op::Delete,
        });
        assert_eq!(q.take_request_fault(Op::Delete, "/v2/apps/a2"), None);
        assert_eq!(q.take_request_fault(Op::Get, "/v2/apps/a1"), None);
        assert_eq!(
            q.take_request_fault(Op::Delete, "/v2/apps/a1"),
            Some(RequestFault::ServerError { status: 503 })
        );
        assert!(q.take_request_fault(Op::Delete, "/v2/apps/a1").is_some());
        assert!(q.pending().is_empty());
    }
}
