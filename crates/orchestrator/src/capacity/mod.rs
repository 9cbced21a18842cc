//! The compute capacity cap (`MAX_CONCURRENT_COMPUTE`): a Temporal-native semaphore, one
//! `ComputeCapacity` workflow per deployment owner ([`capacity_workflow_id`]).
//!
//! When the cap is set, a `TriggerExternalWorkflow` run asks for a slot before it creates
//! compute: its `RequestCapacity` activity sends `acquire` with signal-with-start
//! ([`send_acquire`]), so the semaphore exists whenever someone waits. The semaphore keeps the
//! holders (in grant order) and a FIFO queue of requesters, and grants by signalling the
//! requester run [`GRANTED_SIGNAL`] while holders < cap. A run sends `release` once its compute
//! is confirmed deleted. Both signals are idempotent.
//!
//! The semaphore is soft state; the runs are the truth. Its count is workflow state, in
//! Temporal's history: it survives worker restarts and cannot drift the way an in-memory
//! counter would. What it may lose, the runs give back: they re-assert their request every
//! check interval while they wait (`acquire` again) and their slot while they hold one
//! (`acquire` with `holding`: counted whatever the cap, so nobody else is granted until
//! holders < cap). So a waiter whose queue entry was lost (the run was reset, the semaphore
//! terminated) asks again, and a semaphore that starts after its predecessor ended without
//! handing its state over ([`CapacityState::recovering`]) learns its holders before it grants
//! anything. A run that closes without releasing (terminated, timed out, or whose Delete
//! failed) is dropped by the liveness check: while anything is held or queued, every
//! `check_every` an activity describes those runs and drops the closed ones.
//!
//! Signals are decoded by the semaphore itself: a malformed `acquire` or `release` (any client
//! can send one) is refused with a warning and counted in `tea_capacity_signals_refused_total`
//! ([`metrics_interceptor`]); it never fails the workflow task. The semaphore continues-as-new
//! with its state when its history grows, and completes after [`IDLE_FOR`] with nothing held or
//! queued (the next acquire starts it again); every signal makes it look at its history length
//! and a due liveness check runs first, so a steady stream of signals postpones neither.
//! Cancelling it only makes it continue-as-new with its state.
//!
//! `RequestCapacity` also checks a run's `resources` before anything exists ([`resources`]).
//!
//! Here: the identifiers, the signals' and `RequestCapacity`'s payloads and the semaphore's
//! state; the workflow is in [`semaphore`], the activities in [`activities`].

mod activities;
pub mod resources;
mod semaphore;

use std::{collections::VecDeque, time::Duration};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tea_compute::ComputeOwner;
use tea_contract::{GoDuration, decode_json, json_payload};
use temporalio_common::{data_converters::RawValue, protos::temporal::api::common::v1::Payload};

pub use activities::{CapacityActivities, ClosedRun, send_acquire};
pub use semaphore::{ComputeCapacity, metrics_interceptor};

/// The signal a requesting run receives when it is granted a slot (no argument).
pub const GRANTED_SIGNAL: &str = "capacity-granted";

/// Workflow type of the semaphore.
pub const CAPACITY_WORKFLOW_TYPE: &str = "ComputeCapacity";
/// Start of every semaphore's workflow ID; the rest names the owner.
pub const CAPACITY_ID_PREFIX: &str = "tea-capacity";
/// Default interval of the liveness check.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(30);
/// With nothing held or queued for this long, the semaphore completes.
pub const IDLE_FOR: Duration = Duration::from_secs(300);
/// The semaphore continues-as-new once its history is this long (or when Temporal suggests).
const MAX_HISTORY_EVENTS: u32 = 500;
/// Describe calls the liveness check makes at once.
const CHECK_CONCURRENCY: usize = 16;
/// A semaphore that starts [`CapacityState::recovering`] grants nothing for one check interval
/// plus this: every holder re-asserts its slot once per interval, and this covers the time the
/// re-assertion takes (a local activity in one of the run's workflow tasks), so by then it
/// knows them all.
const RECOVERY_MARGIN: Duration = Duration::from_secs(10);

/// The workflow ID of `owner`'s semaphore: `tea-capacity-<owner>`.
pub fn capacity_workflow_id(owner: &ComputeOwner) -> String {
    format!("{CAPACITY_ID_PREFIX}-{}", owner.id_component())
}

/// One run of `TriggerExternalWorkflow`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    pub workflow_id: String,
    pub run_id: String,
}

impl RunRef {
    /// The `release` signal's argument.
    pub fn to_raw(&self) -> RawValue {
        RawValue::new(vec![json_payload(self)])
    }

    fn validate(&self) -> Result<(), String> {
        if self.workflow_id.is_empty() || self.run_id.is_empty() {
            return Err("`workflow_id` and `run_id` must not be empty".to_owned());
        }
        Ok(())
    }
}

/// `acquire`: a slot for `run`, under the sender's cap and liveness interval. Decoded
/// leniently: fields it does not know (a newer sender's) are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireRequest {
    pub run: RunRef,
    /// The sender's `MAX_CONCURRENT_COMPUTE` (> 0); the latest acquire's cap is in force.
    pub cap: u32,
    /// How often holders and waiters are checked for runs that closed without releasing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_every: Option<GoDuration>,
    /// The run already holds a slot and re-asserts it: it is counted as a holder whatever the
    /// cap (it has compute), and nobody else is granted until holders < cap. Absent: a request
    /// for a slot (first or again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holding: bool,
}

impl AcquireRequest {
    /// The `acquire` signal's argument.
    pub fn to_raw(&self) -> RawValue {
        RawValue::new(vec![json_payload(self)])
    }

    fn validate(&self) -> Result<(), String> {
        if self.cap == 0 {
            return Err("`cap` must be > 0".to_owned());
        }
        self.run.validate().map_err(|e| format!("`run`: {e}"))
    }
}

/// Input of `RequestCapacity`. The run asking is the activity's workflow run; it asks before
/// its first attempt and holds the slot across all its attempts; it asks again while it waits,
/// and re-asserts its slot (`holding`) while it holds one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCapacityInput {
    /// Set when the run asked before: it re-asserts its request or its slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassert: Option<Reassertion>,
    /// The run's `resources`, checked before anything is asked or created (see
    /// [`resources`]); absent when it asks for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<tea_contract::Resources>,
}

/// What a run that asked before re-asserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reassertion {
    /// It still waits for a slot (its queue entry may have been lost): ask again.
    Waiting,
    /// It holds a slot: count it (see [`AcquireRequest::holding`]).
    Holding,
}

/// Result of `RequestCapacity`: what the run must know before it provisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityRequested {
    /// How long this workflow-worker's provider may take to deploy a unit (what `Create` will
    /// report), told before `Create` so that the run can queue its job together with `Create`.
    pub deploy_timeout: GoDuration,
    /// The slot asked for; absent when compute is not capped (nothing was requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotRequested>,
    /// What the provider will create for the run's `resources` (`apps-s-1vcpu-2gb`,
    /// `0.5 CPU, 256 MiB`); absent when the run asks for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_size: Option<String>,
}

/// A slot asked for: the run now waits for [`GRANTED_SIGNAL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRequested {
    /// The semaphore's workflow ID: the run waits on it and releases to it.
    pub semaphore: String,
    /// The cap in force.
    pub cap: u32,
    /// How often the run re-asserts its request while it waits and its slot while it holds
    /// one (`CAPACITY_CHECK_INTERVAL`): recorded here so that replay never reads it from the
    /// environment.
    pub reassert_every: GoDuration,
}

/// The semaphore's state: its input at start and at continue-as-new, and its `state` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityState {
    pub cap: u32,
    /// Runs holding a slot, in grant order.
    pub holders: Vec<RunRef>,
    /// Runs waiting for a slot, first come first served.
    pub queue: VecDeque<RunRef>,
    /// Liveness check interval (default [`DEFAULT_CHECK_EVERY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_every: Option<GoDuration>,
    /// Granted runs not yet told so (carried over continue-as-new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_notify: Vec<RunRef>,
    /// This run started without its predecessor's state (that one was terminated, failed or
    /// timed out, see [`send_acquire`]): runs may hold slots it does not know. It grants
    /// nothing for a check interval plus [`RECOVERY_MARGIN`], while holders re-assert.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovering: bool,
}

impl CapacityState {
    /// The semaphore's start (or continue-as-new) argument.
    pub fn to_raw(&self) -> RawValue {
        RawValue::new(vec![json_payload(self)])
    }

    fn acquire(&mut self, request: AcquireRequest) {
        self.cap = request.cap;
        if request.check_every.is_some() {
            self.check_every = request.check_every;
        }
        let run = request.run;
        if request.holding {
            // It has compute already: count it, even above the cap.
            self.queue.retain(|q| q != &run);
            if !self.holders.contains(&run) {
                self.holders.push(run);
            }
        } else if self.holders.contains(&run) {
            // Its grant may have been lost: grant again.
            if !self.to_notify.contains(&run) {
                self.to_notify.push(run);
            }
        } else if !self.queue.contains(&run) {
            self.queue.push_back(run);
        }
        self.grant();
    }

    /// `old` was reset into `new`, which takes its place: a holder's slot (granted again: the
    /// reset run may be waiting for it) or a waiter's queue place.
    fn replace(&mut self, old: &RunRef, new: RunRef) {
        self.to_notify.retain(|n| n != old);
        if let Some(i) = self.holders.iter().position(|h| h == old) {
            self.queue.retain(|q| q != &new);
            if self.holders.contains(&new) {
                self.holders.remove(i);
            } else {
                self.holders[i] = new.clone();
            }
            if !self.to_notify.contains(&new) {
                self.to_notify.push(new);
            }
        } else if let Some(i) = self.queue.iter().position(|q| q == old) {
            if self.holders.contains(&new) || self.queue.contains(&new) {
                self.queue.remove(i);
            } else {
                self.queue[i] = new;
            }
        }
        self.grant();
    }

    fn release(&mut self, run: &RunRef) {
        self.holders.retain(|h| h != run);
        self.queue.retain(|q| q != run);
        self.to_notify.retain(|n| n != run);
        self.grant();
    }

    /// Moves waiters to holders, in order, while there is room (none while recovering).
    fn grant(&mut self) {
        if self.recovering {
            return;
        }
        while self.holders.len() < self.cap as usize {
            let Some(run) = self.queue.pop_front() else {
                break;
            };
            self.holders.push(run.clone());
            self.to_notify.push(run);
        }
    }

    fn busy(&self) -> bool {
        !self.holders.is_empty() || !self.queue.is_empty()
    }

    fn check_every(&self) -> Duration {
        self.check_every
            .map(GoDuration::as_duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_CHECK_EVERY)
    }

    /// When the next liveness check is due: after the recovery while recovering.
    fn next_check(&self) -> Duration {
        if self.recovering {
            self.check_every() + RECOVERY_MARGIN
        } else {
            self.check_every()
        }
    }

    /// The holders had their time to re-assert: grant again.
    fn end_recovery(&mut self) {
        if self.recovering {
            self.recovering = false;
            self.grant();
        }
    }
}

/// Decodes a signal's or the start's argument: one `json/plain` payload; fields it does not
/// know are ignored, a missing field, a wrong type or another encoding is refused.
fn decode<T: DeserializeOwned>(payloads: &[Payload]) -> Result<T, String> {
    let [payload] = payloads else {
        return Err(format!("expected one payload, got {}", payloads.len()));
    };
    serde_json::from_value(decode_json(payload)?).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u32) -> RunRef {
        RunRef {
            workflow_id: format!("wf-{n}"),
            run_id: format!("run-{n}"),
        }
    }

    fn request(state: &mut CapacityState, n: u32, cap: u32, holding: bool) {
        state.acquire(AcquireRequest {
            run: run(n),
            cap,
            check_every: None,
            holding,
        });
    }

    fn acquire(state: &mut CapacityState, n: u32, cap: u32) {
        request(state, n, cap, false);
    }

    fn reassert_holding(state: &mut CapacityState, n: u32, cap: u32) {
        request(state, n, cap, true);
    }

    fn json(text: &str) -> Vec<Payload> {
        vec![Payload {
            metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
            data: text.as_bytes().to_vec(),
            ..Default::default()
        }]
    }

    fn decode_acquire(payloads: &[Payload]) -> Result<AcquireRequest, String> {
        decode::<AcquireRequest>(payloads).and_then(|r| r.validate().map(|()| r))
    }

    #[test]
    fn malformed_signals_are_refused_and_unknown_fields_ignored() {
        let good = r#"{"run":{"workflow_id":"wf-1","run_id":"run-1"},"cap":2}"#;
        assert_eq!(decode_acquire(&json(good)).expect("good").run, run(1));
        let newer = r#"{"run":{"workflow_id":"wf-1","run_id":"run-1","shard":3},"cap":2,"priority":"high"}"#;
        assert_eq!(decode_acquire(&json(newer)).expect("newer").cap, 2);
        for (bad, expected) in [
            ("{}", "missing field `run`"),
            (
                r#"{"run":{"workflow_id":"wf-1","run_id":"run-1"}}"#,
                "missing field `cap`",
            ),
            (
                r#"{"run":{"workflow_id":"wf-1","run_id":"run-1"},"cap":"2"}"#,
                "invalid type",
            ),
            (
                r#"{"run":{"workflow_id":"wf-1","run_id":"run-1"},"cap":0}"#,
                "`cap` must be > 0",
            ),
            (
                r#"{"run":{"workflow_id":"","run_id":"run-1"},"cap":1}"#,
                "must not be empty",
            ),
            ("not json", "not valid JSON"),
        ] {
            let error = decode_acquire(&json(bad)).expect_err(bad);
            assert!(error.contains(expected), "{bad}: {error}");
        }
        assert!(
            decode_acquire(&[])
                .expect_err("none")
                .contains("one payload")
        );
        let two = [json(good), json(good)].concat();
        assert!(
            decode_acquire(&two)
                .expect_err("two")
                .contains("one payload")
        );
        let null = Payload {
            metadata: [("encoding".to_owned(), b"binary/null".to_vec())].into(),
            ..Default::default()
        };
        assert!(decode_acquire(&[null]).is_err());
        let error = decode::<RunRef>(&json(r#""x""#)).expect_err("a string");
        assert!(error.contains("invalid type"), "{error}");
        assert!(decode::<RunRef>(&json("{}")).is_err());
    }

    #[test]
    fn messages_round_trip_and_omit_what_is_unset() {
        let request = AcquireRequest {
            run: run(1),
            cap: 3,
            check_every: None,
            holding: false,
        };
        let raw = request.to_raw();
        assert!(!String::from_utf8_lossy(&raw.payloads[0].data).contains("holding"));
        assert_eq!(decode_acquire(&raw.payloads).expect("decode"), request);
        let holding = AcquireRequest {
            holding: true,
            ..request
        };
        assert_eq!(
            decode_acquire(&holding.to_raw().payloads).expect("decode"),
            holding
        );
        let state = CapacityState::default();
        assert!(!String::from_utf8_lossy(&state.to_raw().payloads[0].data).contains("recovering"));
        assert_eq!(decode::<CapacityState>(&state.to_raw().payloads), Ok(state));
    }

    #[test]
    fn a_holder_reasserting_is_counted_above_the_cap_and_nobody_else_is_granted() {
        let mut state = CapacityState::default();
        acquire(&mut state, 1, 1);
        acquire(&mut state, 2, 1);
        state.to_notify.clear();
        // A semaphore that lost run 3 learns it holds: counted, not notified.
        reassert_holding(&mut state, 3, 1);
        reassert_holding(&mut state, 3, 1);
        assert_eq!(state.holders, [run(1), run(3)]);
        assert!(state.to_notify.is_empty());
        state.release(&run(1));
        assert_eq!(state.queue, [run(2)], "holders (1) are not < cap (1)");
        state.release(&run(3));
        assert_eq!(state.holders, [run(2)]);
        // A holder known only as a waiter moves to the holders.
        acquire(&mut state, 4, 1);
        reassert_holding(&mut state, 4, 1);
        assert_eq!(state.holders, [run(2), run(4)]);
        assert!(state.queue.is_empty());
        // A known holder re-asserting changes nothing.
        state.to_notify.clear();
        reassert_holding(&mut state, 2, 1);
        assert_eq!(state.holders, [run(2), run(4)]);
        assert!(state.to_notify.is_empty());
    }

    #[test]
    fn a_reset_run_takes_the_place_of_the_run_it_replaces() {
        let mut state = CapacityState::default();
        for n in 1..=3 {
            acquire(&mut state, n, 1);
        }
        state.to_notify.clear();
        let reset = |n: u32| RunRef {
            run_id: format!("reset-{n}"),
            ..run(n)
        };
        // A holder's slot goes to its reset run (told again), nobody else is granted.
        state.replace(&run(1), reset(1));
        assert_eq!(state.holders, [reset(1)]);
        assert_eq!(state.to_notify, [reset(1)]);
        assert_eq!(state.queue, [run(2), run(3)]);
        // A waiter's place too, unless its reset run asked already.
        state.replace(&run(3), reset(3));
        assert_eq!(state.queue, [run(2), reset(3)]);
        acquire(&mut state, 20, 1);
        state.replace(
            &run(2),
            RunRef {
                workflow_id: "wf-20".into(),
                run_id: "run-20".into(),
            },
        );
        assert_eq!(state.queue, [reset(3), run(20)]);
        // A reset holder's run that already re-asserted: the old one just goes.
        state.to_notify.clear();
        reassert_holding(&mut state, 4, 1);
        state.replace(&reset(1), run(4));
        assert_eq!(state.holders, [run(4)]);
    }

    #[test]
    fn a_recovering_semaphore_grants_nothing_until_the_recovery_ends() {
        let mut state = CapacityState {
            recovering: true,
            check_every: Some(GoDuration(Duration::from_secs(1))),
            ..Default::default()
        };
        acquire(&mut state, 1, 2);
        reassert_holding(&mut state, 2, 2);
        acquire(&mut state, 3, 2);
        assert_eq!(state.holders, [run(2)]);
        assert_eq!(state.queue, [run(1), run(3)]);
        assert_eq!(state.next_check(), Duration::from_secs(11));
        state.end_recovery();
        assert_eq!(state.holders, [run(2), run(1)]);
        assert_eq!(state.to_notify, [run(1)]);
        assert_eq!(state.next_check(), Duration::from_secs(1));
    }

    #[test]
    fn grants_in_order_up_to_the_cap_and_moves_on_at_release() {
        let mut state = CapacityState::default();
        for n in 1..=4 {
            acquire(&mut state, n, 2);
        }
        assert_eq!(state.holders, [run(1), run(2)]);
        assert_eq!(state.queue, [run(3), run(4)]);
        assert_eq!(state.to_notify, [run(1), run(2)]);
        state.to_notify.clear();
        // Idempotent: a waiter asking again keeps its place, a holder is granted again.
        acquire(&mut state, 3, 2);
        acquire(&mut state, 1, 2);
        assert_eq!(state.queue, [run(3), run(4)]);
        assert_eq!(state.to_notify, [run(1)]);
        state.to_notify.clear();
        state.release(&run(2));
        state.release(&run(2));
        assert_eq!(state.holders, [run(1), run(3)]);
        assert_eq!(state.queue, [run(4)]);
        assert_eq!(state.to_notify, [run(3)]);
        // A waiter leaving gives up its place.
        state.release(&run(4));
        assert!(state.queue.is_empty());
    }

    #[test]
    fn the_latest_cap_is_in_force() {
        let mut state = CapacityState::default();
        for n in 1..=3 {
            acquire(&mut state, n, 3);
        }
        acquire(&mut state, 4, 1);
        assert_eq!(state.cap, 1);
        state.release(&run(1));
        assert_eq!(state.holders.len(), 2, "no grant above the lowered cap");
        assert_eq!(state.queue, [run(4)]);
    }

    #[test]
    fn workflow_ids_name_the_owner() {
        let owner = ComputeOwner::new("team-a/queue").expect("owner");
        assert!(capacity_workflow_id(&owner).starts_with("tea-capacity-"));
    }
}
