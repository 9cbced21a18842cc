//! The compute capacity cap (`MAX_CONCURRENT_COMPUTE`): a Temporal-native semaphore, one
//! `ComputeCapacity` workflow per deployment owner ([`capacity_workflow_id`]).
//!
//! A `TriggerExternalWorkflow` run (under the `compute-capacity` patch, when the cap is set)
//! asks for a slot before it creates compute: its `RequestCapacity` activity sends `acquire`
//! with signal-with-start, so the semaphore exists whenever someone waits. The semaphore keeps
//! the holders (in grant order) and a FIFO queue of requesters, and grants by signalling the
//! requester run `capacity-granted` while holders < cap. A run sends `release` once its compute
//! is confirmed deleted. Both signals are idempotent.
//!
//! The count is workflow state, in Temporal's history: it survives worker restarts and cannot
//! drift the way an in-memory counter would. A run that closes without releasing (terminated,
//! timed out, or whose Delete failed) is dropped by the liveness check: while anything is held
//! or queued, every `check_every` an activity describes those runs and drops the closed ones.
//! The semaphore continues-as-new with its state when its history grows, and completes after
//! [`IDLE_FOR`] with nothing held or queued (the next acquire starts it again). Cancelling it
//! only makes it continue-as-new with its state.

use std::{collections::VecDeque, time::Duration};

use anyhow::anyhow;
use futures::{
    StreamExt,
    future::{Either, select},
};
use serde::{Deserialize, Serialize};
use tea_compute::ComputeOwner;
use tea_contract::GoDuration;
use temporalio_common::{RetryPolicy, protos::temporal::api::enums::v1::WorkflowExecutionStatus};
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, CancellableFuture, ContinueAsNewOptions, SignalWorkflowOptions,
    SyncWorkflowContext, TimerResult, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextView, WorkflowResult,
    activities::{ActivityContext, ActivityError},
};

use crate::workflow::TriggerExternalWorkflow;

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

/// `acquire`: a slot for `run`, under the sender's cap and liveness interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireRequest {
    pub run: RunRef,
    /// The sender's `MAX_CONCURRENT_COMPUTE`; the latest acquire's cap is in force.
    pub cap: u32,
    /// How often holders and waiters are checked for runs that closed without releasing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_every: Option<GoDuration>,
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
}

impl CapacityState {
    fn acquire(&mut self, request: AcquireRequest) {
        self.cap = request.cap;
        if request.check_every.is_some() {
            self.check_every = request.check_every;
        }
        let run = request.run;
        if self.holders.contains(&run) {
            // Its grant may have been lost: grant again.
            if !self.to_notify.contains(&run) {
                self.to_notify.push(run);
            }
        } else if !self.queue.contains(&run) {
            self.queue.push_back(run);
        }
        self.grant();
    }

    fn release(&mut self, run: &RunRef) {
        self.holders.retain(|h| h != run);
        self.queue.retain(|q| q != run);
        self.to_notify.retain(|n| n != run);
        self.grant();
    }

    /// Moves waiters to holders, in order, while there is room.
    fn grant(&mut self) {
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
}

/// The semaphore workflow.
#[workflow]
#[derive(Default)]
pub struct ComputeCapacity {
    state: CapacityState,
    /// False until the run has taken its start state: signals delivered with the first task
    /// (signal-with-start, or buffered at continue-as-new) wait in `early` until then, so that
    /// nothing is granted against a state that is not yet the real one.
    started: bool,
    early: Vec<Message>,
}

/// A signal received before the run took its start state.
enum Message {
    Acquire(AcquireRequest),
    Release(RunRef),
}

#[workflow_methods]
impl ComputeCapacity {
    #[run(name = "ComputeCapacity")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        start: CapacityState,
    ) -> WorkflowResult<CapacityState> {
        ctx.state_mut(|s| {
            s.state = start;
            s.started = true;
            for message in std::mem::take(&mut s.early) {
                match message {
                    Message::Acquire(request) => s.state.acquire(request),
                    Message::Release(run) => s.state.release(&run),
                }
            }
            s.state.grant();
        });
        let mut check: Option<
            std::pin::Pin<Box<dyn CancellableFuture<Output = TimerResult> + '_>>,
        > = None;
        loop {
            notify_granted(ctx).await;
            // A cancelled semaphore carries on with its state in a fresh run: its holders and
            // waiters must not be forgotten.
            if ctx.continue_as_new_suggested()
                || ctx.history_length() > MAX_HISTORY_EVENTS
                || ctx.cancellation_token().is_cancelled()
            {
                if let Some(timer) = check.take() {
                    timer.cancel();
                }
                let state = ctx.state(|s| s.state.clone());
                ctx.continue_as_new(state, ContinueAsNewOptions::default())?;
            }
            if !ctx.state(|s| s.state.busy()) {
                if let Some(timer) = check.take() {
                    timer.cancel();
                }
                let idle = Box::pin(ctx.timer(IDLE_FOR));
                let woken = Box::pin(
                    ctx.wait_condition(|s| s.state.busy() || !s.state.to_notify.is_empty()),
                );
                match select(woken, idle).await {
                    Either::Left((_, idle)) => idle.cancel(),
                    Either::Right(_) => {
                        if !ctx.state(|s| s.state.busy() || !s.state.to_notify.is_empty()) {
                            return Ok(ctx.state(|s| s.state.clone()));
                        }
                    }
                }
                continue;
            }
            let every = ctx.state(|s| s.state.check_every());
            let timer = check.get_or_insert_with(|| Box::pin(ctx.timer(every)));
            let woken = Box::pin(ctx.wait_condition(|s| !s.state.to_notify.is_empty()));
            let fired = matches!(select(woken, timer.as_mut()).await, Either::Right(_));
            if fired {
                check = None;
                drop_closed_runs(ctx).await;
            }
        }
    }

    /// A slot for a run (idempotent; a holder asking again is granted again).
    #[signal(name = "acquire")]
    pub fn acquire(&mut self, _ctx: &mut SyncWorkflowContext<Self>, request: AcquireRequest) {
        if self.started {
            self.state.acquire(request);
        } else {
            self.early.push(Message::Acquire(request));
        }
    }

    /// A run gives its slot (or its queue place) back (idempotent).
    #[signal(name = "release")]
    pub fn release(&mut self, _ctx: &mut SyncWorkflowContext<Self>, run: RunRef) {
        if self.started {
            self.state.release(&run);
        } else {
            self.early.push(Message::Release(run));
        }
    }

    /// Cap, holders and queue.
    #[query(name = "state")]
    pub fn state(&self, _ctx: &WorkflowContextView) -> CapacityState {
        self.state.clone()
    }
}

/// Tells every newly granted run; a run that cannot be signalled (closed) loses its slot.
async fn notify_granted(ctx: &WorkflowContext<ComputeCapacity>) {
    loop {
        let pending = ctx.state_mut(|s| std::mem::take(&mut s.state.to_notify));
        if pending.is_empty() {
            return;
        }
        let sends = pending.into_iter().map(|run| {
            let handle = ctx.external_workflow(run.workflow_id.clone(), Some(run.run_id.clone()));
            let options = SignalWorkflowOptions::builder()
                .cancellation_token(WorkflowCancellationToken::new())
                .build();
            async move {
                let sent = handle
                    .signal(TriggerExternalWorkflow::capacity_granted, (), options)
                    .await;
                (run, sent)
            }
        });
        for (run, sent) in futures::future::join_all(sends).await {
            if let Err(e) = sent {
                if !ctx.is_replaying() {
                    tracing::warn!(workflow_id = %run.workflow_id, run_id = %run.run_id, error = %e, "could not grant capacity; dropping the run");
                }
                ctx.state_mut(|s| s.state.release(&run));
            }
        }
    }
}

/// The liveness check: drops holders and waiters whose run has closed.
async fn drop_closed_runs(ctx: &WorkflowContext<ComputeCapacity>) {
    let runs: Vec<RunRef> = ctx.state(|s| {
        s.state
            .holders
            .iter()
            .chain(s.state.queue.iter())
            .cloned()
            .collect()
    });
    if runs.is_empty() {
        return;
    }
    let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
        .retry_policy(RetryPolicy::builder().maximum_attempts(3).build())
        .build();
    match ctx
        .execute_activity(CapacityActivities::closed_runs, runs, options)
        .await
    {
        Ok(closed) => ctx.state_mut(|s| {
            for run in &closed {
                s.state.release(run);
            }
        }),
        Err(e) => {
            if !ctx.is_replaying() {
                tracing::warn!(error = %e, "capacity liveness check failed; trying again later");
            }
        }
    }
}

/// The semaphore's activities.
#[derive(Default)]
pub struct CapacityActivities;

#[activities]
impl CapacityActivities {
    /// Which of `runs` have closed (or are unknown).
    #[activity(name = "CapacityClosedRuns")]
    pub async fn closed_runs(
        self: std::sync::Arc<Self>,
        ctx: ActivityContext,
        runs: Vec<RunRef>,
    ) -> Result<Vec<RunRef>, ActivityError> {
        let client = ctx.client();
        let checks = futures::stream::iter(runs)
            .map(|run| {
                let client = &client;
                async move {
                    match tea_runtime::run_status(client, &run.workflow_id, Some(&run.run_id)).await
                    {
                        Ok(Some(
                            WorkflowExecutionStatus::Running | WorkflowExecutionStatus::Unspecified,
                        )) => Ok(None),
                        Ok(_) => Ok(Some(run)),
                        Err(status) => Err(anyhow!(
                            "describing run {} of {} failed: {}",
                            run.run_id,
                            run.workflow_id,
                            status.message()
                        )),
                    }
                }
            })
            .buffer_unordered(CHECK_CONCURRENCY);
        let results: Vec<_> = checks.collect().await;
        let mut closed = Vec::new();
        for result in results {
            if let Some(run) = result.map_err(ActivityError::from)? {
                closed.push(run);
            }
        }
        Ok(closed)
    }
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

    fn acquire(state: &mut CapacityState, n: u32, cap: u32) {
        state.acquire(AcquireRequest {
            run: run(n),
            cap,
            check_every: None,
        });
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
