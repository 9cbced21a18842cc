//! The compute capacity cap (`MAX_CONCURRENT_COMPUTE`): a Temporal-native semaphore, one
//! `ComputeCapacity` workflow per deployment owner ([`capacity_workflow_id`]).
//!
//! A `TriggerExternalWorkflow` run (under the `compute-capacity` patch, when the cap is set)
//! asks for a slot before it creates compute: its `RequestCapacity` activity sends `acquire`
//! with signal-with-start ([`send_acquire`]), so the semaphore exists whenever someone waits.
//! The semaphore keeps the holders (in grant order) and a FIFO queue of requesters, and grants
//! by signalling the requester run `capacity-granted` while holders < cap. A run sends `release`
//! once its compute is confirmed deleted. Both signals are idempotent.
//!
//! The semaphore is soft state; the runs are the truth. Its count is workflow state, in
//! Temporal's history: it survives worker restarts and cannot drift the way an in-memory
//! counter would. What it may lose, the runs give back: runs under the `capacity-reassert`
//! patch re-assert their request every check interval while they wait (`acquire` again) and
//! their slot while they hold one (`acquire` with `holding`: counted whatever the cap, so
//! nobody else is granted until holders < cap). So a waiter whose queue entry was lost (the run
//! was reset, the semaphore terminated) asks again, and a semaphore that starts after its
//! predecessor ended without handing its state over ([`CapacityState::recovering`]) learns its
//! holders before it grants anything. A run that closes without releasing (terminated, timed
//! out, or whose Delete failed) is dropped by the liveness check: while anything is held or
//! queued, every `check_every` an activity describes those runs and drops the closed ones.
//!
//! Signals are decoded by the semaphore itself: a malformed `acquire` or `release` (any client
//! can send one) is refused with a warning and counted in `tea_capacity_signals_refused_total`
//! ([`metrics_interceptor`]); it never fails the workflow task. The semaphore continues-as-new
//! with its state when its history grows, and completes after [`IDLE_FOR`] with nothing held or
//! queued (the next acquire starts it again). Under [`CAPACITY_RECOVERY_PATCH`] every signal
//! makes it look at its history length and a due liveness check runs first, so a steady stream
//! of signals postpones neither. Cancelling it only makes it continue-as-new with its state.

use std::{collections::VecDeque, pin::Pin, time::Duration};

use anyhow::anyhow;
use futures::{
    StreamExt,
    future::{Either, select},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tea_compute::ComputeOwner;
use tea_contract::{GoDuration, decode_json, json_payload};
use tea_runtime::Metrics;
use temporalio_client::{
    Client, WorkflowIdReusePolicy, WorkflowStartOptions, errors::WorkflowStartError, tonic,
};
use temporalio_common::{
    RetryPolicy,
    data_converters::RawValue,
    protos::temporal::api::{common::v1::Payload, enums::v1::WorkflowExecutionStatus},
};
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, CancellableFuture, ContinueAsNewOptions, SignalWorkflowOptions,
    SyncWorkflowContext, TimerResult, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextKey, WorkflowContextView, WorkflowResult,
    activities::{ActivityContext, ActivityError},
    workflow_interceptors::{
        HandleSignalInput, HandleSignalResult, WorkflowInterceptor, WorkflowInterceptorConstructor,
        WorkflowInterceptorContext, WorkflowInterceptorFuture, WorkflowNext,
    },
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
/// A semaphore that starts [`CapacityState::recovering`] grants nothing for one check interval
/// plus this: every holder re-asserts its slot once per interval, and this covers the time the
/// re-assertion takes (a local activity in one of the run's workflow tasks), so by then it
/// knows them all.
const RECOVERY_MARGIN: Duration = Duration::from_secs(10);

/// Patch (2026-12) of `ComputeCapacity`: housekeeping that signals cannot postpone (every
/// signal wakes the loop to look at the history length, and a due liveness check runs before
/// anything else), and recovery: a semaphore started [`CapacityState::recovering`] grants
/// nothing until its holders had time to re-assert. Semaphore runs that started before keep
/// the loop they started with.
pub const CAPACITY_RECOVERY_PATCH: &str = "capacity-recovery";

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
    /// Signals received by this run (refused ones too): each wakes the loop
    /// ([`CAPACITY_RECOVERY_PATCH`]).
    signals: u64,
}

/// A signal received before the run took its start state.
enum Message {
    Acquire(AcquireRequest),
    Release(RunRef),
}

/// A pending workflow timer of the semaphore's loop.
type Timer<'a> = Pin<Box<dyn CancellableFuture<Output = TimerResult> + 'a>>;

#[workflow_methods]
impl ComputeCapacity {
    #[run(name = "ComputeCapacity")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        start: RawValue,
    ) -> WorkflowResult<CapacityState> {
        let recovery = ctx.patched(CAPACITY_RECOVERY_PATCH);
        let start = match decode::<CapacityState>(&start.payloads) {
            Ok(start) => start,
            Err(error) => {
                // Not ours (any client can start this ID): whoever holds a slot re-asserts it.
                if !ctx.is_replaying() {
                    tracing::warn!(%error, "malformed capacity semaphore start state; starting empty, recovering");
                }
                CapacityState {
                    recovering: true,
                    ..Default::default()
                }
            }
        };
        ctx.state_mut(|s| {
            s.state = start;
            s.state.recovering &= recovery;
            s.started = true;
            for message in std::mem::take(&mut s.early) {
                match message {
                    Message::Acquire(request) => s.state.acquire(request),
                    Message::Release(run) => s.state.release(&run),
                }
            }
            s.state.grant();
        });
        if recovery {
            serve(ctx).await
        } else {
            serve_before_recovery(ctx).await
        }
    }

    /// A slot for a run (idempotent; a waiter asking again keeps its place, a holder asking
    /// again is granted again, a holder re-asserting with `holding` is counted).
    #[signal(name = "acquire")]
    pub fn acquire(&mut self, ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.signals += 1;
        let request = decode::<AcquireRequest>(&input.payloads)
            .and_then(|request| request.validate().map(|()| request));
        match request {
            Ok(request) if self.started => self.state.acquire(request),
            Ok(request) => self.early.push(Message::Acquire(request)),
            Err(error) => refuse(ctx, "acquire", &error),
        }
    }

    /// A run gives its slot (or its queue place) back (idempotent).
    #[signal(name = "release")]
    pub fn release(&mut self, ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.signals += 1;
        let run = decode::<RunRef>(&input.payloads).and_then(|run| run.validate().map(|()| run));
        match run {
            Ok(run) if self.started => self.state.release(&run),
            Ok(run) => self.early.push(Message::Release(run)),
            Err(error) => refuse(ctx, "release", &error),
        }
    }

    /// Cap, holders and queue.
    #[query(name = "state")]
    pub fn state(&self, _ctx: &WorkflowContextView) -> CapacityState {
        self.state.clone()
    }
}

/// A malformed signal changes nothing: a warning (not on replay) and
/// `tea_capacity_signals_refused_total{signal}`.
fn refuse(ctx: &SyncWorkflowContext<ComputeCapacity>, signal: &'static str, error: &str) {
    if ctx.is_replaying() {
        return;
    }
    tracing::warn!(
        semaphore = ctx.workflow_id(),
        signal,
        %error,
        "refused a malformed capacity signal; it changes nothing"
    );
    if let Some(metrics) = ctx.context_value::<WorkerMetrics>() {
        metrics.count(
            "tea_capacity_signals_refused",
            "Malformed signals the capacity semaphore refused",
            &[("signal", signal.to_owned())],
            1,
        );
    }
}

/// The workflow-worker's metrics, reachable from workflow code while a signal is handled.
struct WorkerMetrics;

impl WorkflowContextKey for WorkerMetrics {
    type Value = Metrics;
}

/// Gives signal handlers the workflow-worker's `metrics` (the semaphore counts refused signals
/// with them; without this interceptor, as in replay, nothing is counted). Register it with
/// `WorkerOptions::register_workflow_interceptors`.
pub fn metrics_interceptor(metrics: Metrics) -> WorkflowInterceptorConstructor {
    WorkflowInterceptorConstructor::new(move |_: &WorkflowContextView| MetricsForSignals {
        metrics: metrics.clone(),
    })
}

struct MetricsForSignals {
    metrics: Metrics,
}

impl WorkflowInterceptor for MetricsForSignals {
    fn handle_signal<'a>(
        &'a self,
        ctx: WorkflowInterceptorContext,
        input: HandleSignalInput,
        next: WorkflowNext<
            'a,
            HandleSignalInput,
            WorkflowInterceptorFuture<'a, HandleSignalResult>,
        >,
    ) -> WorkflowInterceptorFuture<'a, HandleSignalResult> {
        // Synchronous handlers (all of ours) run within `next.run`.
        ctx.with_context_value_sync::<WorkerMetrics, _>(self.metrics.clone(), || next.run(input))
    }
}

/// Whether the run should continue-as-new now: its history is long, or it was cancelled (a
/// cancelled semaphore carries on with its state in a fresh run: its holders and waiters must
/// not be forgotten).
fn continue_as_new_due(ctx: &WorkflowContext<ComputeCapacity>) -> bool {
    ctx.continue_as_new_suggested()
        || ctx.history_length() > MAX_HISTORY_EVENTS
        || ctx.cancellation_token().is_cancelled()
}

/// Cancels the loop's timer, if pending.
fn cancel(timer: &mut Option<Timer<'_>>) {
    if let Some(timer) = timer.take() {
        timer.cancel();
    }
}

/// The loop under [`CAPACITY_RECOVERY_PATCH`]. Each turn: notify the granted, continue-as-new
/// if due, then wait for a signal, the liveness check's timer or (with nothing held or queued)
/// the idle timer. Every signal ends the wait, so the history length is looked at after each;
/// the timers are polled first and kept across turns, so a due check or idle end is never
/// postponed by signals. Continue-as-new carries the whole state: signals are applied to it as
/// they are handled, before the loop looks (and a signal that arrives while the task that
/// continues is in flight fails that task's completion, so it is handled and carried on the
/// retry).
async fn serve(ctx: &mut WorkflowContext<ComputeCapacity>) -> WorkflowResult<CapacityState> {
    let mut check: Option<Timer<'_>> = None;
    let mut idle: Option<Timer<'_>> = None;
    loop {
        notify_granted(ctx).await;
        if continue_as_new_due(ctx) {
            cancel(&mut check);
            cancel(&mut idle);
            let state = ctx.state(|s| s.state.clone());
            ctx.continue_as_new(state.to_raw(), ContinueAsNewOptions::default())?;
        }
        let seen = ctx.state(|s| s.signals);
        let woken = Box::pin(
            ctx.wait_condition(move |s| s.signals != seen || !s.state.to_notify.is_empty()),
        );
        if ctx.state(|s| s.state.busy()) {
            cancel(&mut idle);
            let every = ctx.state(|s| s.state.next_check());
            let timer = check.get_or_insert_with(|| Box::pin(ctx.timer(every)));
            // The timer first: when both are ready, the check runs.
            let Some(fired) = timer_first(timer, woken).await else {
                continue;
            };
            check = None;
            if fired {
                ctx.state_mut(|s| s.state.end_recovery());
                drop_closed_runs(ctx, true).await;
            }
        } else {
            cancel(&mut check);
            let timer = idle.get_or_insert_with(|| Box::pin(ctx.timer(IDLE_FOR)));
            let Some(fired) = timer_first(timer, woken).await else {
                continue;
            };
            idle = None;
            let idle_now = ctx.state(|s| !s.state.busy() && s.state.to_notify.is_empty());
            if fired && idle_now {
                return Ok(ctx.state(|s| s.state.clone()));
            }
        }
    }
}

/// Waits for `timer` or `woken`, looking at the timer first: `None` when woken, else whether
/// the timer fired (rather than being cancelled with the workflow).
async fn timer_first(
    timer: &mut Timer<'_>,
    woken: impl std::future::Future<Output = Result<(), temporalio_sdk::WorkflowCancellationError>>
    + Unpin,
) -> Option<bool> {
    match select(timer.as_mut(), woken).await {
        Either::Left((result, _)) => Some(matches!(result, TimerResult::Fired)),
        Either::Right(_) => None,
    }
}

/// The loop of semaphore runs started before [`CAPACITY_RECOVERY_PATCH`] (their histories
/// replay with it).
async fn serve_before_recovery(
    ctx: &mut WorkflowContext<ComputeCapacity>,
) -> WorkflowResult<CapacityState> {
    let mut check: Option<Timer<'_>> = None;
    loop {
        notify_granted(ctx).await;
        if continue_as_new_due(ctx) {
            if let Some(timer) = check.take() {
                timer.cancel();
            }
            let state = ctx.state(|s| s.state.clone());
            ctx.continue_as_new(state.to_raw(), ContinueAsNewOptions::default())?;
        }
        if !ctx.state(|s| s.state.busy()) {
            if let Some(timer) = check.take() {
                timer.cancel();
            }
            let idle = Box::pin(ctx.timer(IDLE_FOR));
            let woken =
                Box::pin(ctx.wait_condition(|s| s.state.busy() || !s.state.to_notify.is_empty()));
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
            drop_closed_runs(ctx, false).await;
        }
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
                // No argument: zero payloads, as always.
                let sent = handle
                    .signal(
                        TriggerExternalWorkflow::capacity_granted,
                        RawValue::new(Vec::new()),
                        options,
                    )
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

/// The liveness check: drops holders and waiters whose run has closed; with `follow_resets`
/// ([`CAPACITY_RECOVERY_PATCH`]), a run that was reset is replaced by its reset run instead, so
/// that a reset holder keeps its slot (no other run is granted it while the reset run still
/// holds the compute).
async fn drop_closed_runs(ctx: &WorkflowContext<ComputeCapacity>, follow_resets: bool) {
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
    let closed = if follow_resets {
        ctx.execute_activity(CapacityActivities::check_runs, runs, options)
            .await
    } else {
        ctx.execute_activity(CapacityActivities::closed_runs, runs, options)
            .await
            .map(|runs| runs.into_iter().map(ClosedRun::from).collect())
    };
    match closed {
        Ok(closed) => ctx.state_mut(|s| {
            for closed in closed {
                match closed.reset_to {
                    Some(run_id) => {
                        let reset = RunRef {
                            workflow_id: closed.run.workflow_id.clone(),
                            run_id,
                        };
                        s.state.replace(&closed.run, reset);
                    }
                    None => s.state.release(&closed.run),
                }
            }
        }),
        Err(e) => {
            if !ctx.is_replaying() {
                tracing::warn!(error = %e, "capacity liveness check failed; trying again later");
            }
        }
    }
}

/// Sends `request` to the semaphore `semaphore` by signal-with-start on `task_queue`: signals
/// it when it runs; otherwise starts it with `request`'s cap and interval, and tells it to
/// recover ([`CapacityState::recovering`]) when its last run ended without handing its state
/// over (terminated, failed, timed out). A semaphore that runs costs one call, as before; one
/// that completed or never ran starts clean, since nothing can hold one of its slots.
pub async fn send_acquire(
    client: &Client,
    task_queue: &str,
    semaphore: &str,
    request: &AcquireRequest,
) -> Result<(), String> {
    let clean = CapacityState {
        cap: request.cap,
        check_every: request.check_every,
        ..Default::default()
    };
    let recovering = CapacityState {
        recovering: true,
        ..clean.clone()
    };
    // Each try is refused only when a closed run of that kind is the last one.
    let tries = [
        (WorkflowIdReusePolicy::RejectDuplicate, &clean),
        (WorkflowIdReusePolicy::AllowDuplicateFailedOnly, &recovering),
        (WorkflowIdReusePolicy::AllowDuplicate, &clean),
    ];
    let mut refused = None;
    for (reuse, start) in tries {
        let options = WorkflowStartOptions::new(task_queue.to_owned(), semaphore.to_owned())
            .id_reuse_policy(reuse)
            .build();
        let sent = client
            .signal_with_start_workflow(
                ComputeCapacity::run,
                start.to_raw(),
                ComputeCapacity::acquire,
                request.to_raw(),
                options,
            )
            .await;
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if already_started(&e) => refused = Some(e),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(refused.map_or_else(String::new, |e| e.to_string()))
}

/// A start refused by the workflow ID reuse policy.
fn already_started(error: &WorkflowStartError) -> bool {
    match error {
        WorkflowStartError::AlreadyStarted { .. } => true,
        WorkflowStartError::Rpc(status) => status.code() == tonic::Code::AlreadyExists,
        _ => false,
    }
}

/// A run the liveness check found closed (or unknown to Temporal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedRun {
    pub run: RunRef,
    /// The run was reset and its reset run (this run ID of the same workflow) still runs: it
    /// takes the closed run's place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_to: Option<String>,
}

impl From<RunRef> for ClosedRun {
    fn from(run: RunRef) -> Self {
        Self {
            run,
            reset_to: None,
        }
    }
}

/// The semaphore's activities.
#[derive(Default)]
pub struct CapacityActivities;

#[activities]
impl CapacityActivities {
    /// Which of `runs` have closed (or are unknown). Semaphore runs started before
    /// [`CAPACITY_RECOVERY_PATCH`] call it.
    #[activity(name = "CapacityClosedRuns")]
    pub async fn closed_runs(
        self: std::sync::Arc<Self>,
        ctx: ActivityContext,
        runs: Vec<RunRef>,
    ) -> Result<Vec<RunRef>, ActivityError> {
        let closed = closed_runs(&ctx.client(), runs, false).await?;
        Ok(closed.into_iter().map(|closed| closed.run).collect())
    }

    /// Which of `runs` have closed (or are unknown), and which of those were reset into a run
    /// that still runs.
    #[activity(name = "CapacityCheckRuns")]
    pub async fn check_runs(
        self: std::sync::Arc<Self>,
        ctx: ActivityContext,
        runs: Vec<RunRef>,
    ) -> Result<Vec<ClosedRun>, ActivityError> {
        Ok(closed_runs(&ctx.client(), runs, true).await?)
    }
}

/// The closed ones of `runs`, described [`CHECK_CONCURRENCY`] at a time.
async fn closed_runs(
    client: &Client,
    runs: Vec<RunRef>,
    follow_resets: bool,
) -> anyhow::Result<Vec<ClosedRun>> {
    let checks = futures::stream::iter(runs)
        .map(|run| closed_run(client, run, follow_resets))
        .buffer_unordered(CHECK_CONCURRENCY);
    let results: Vec<_> = checks.collect().await;
    let mut closed = Vec::new();
    for result in results {
        closed.extend(result?);
    }
    Ok(closed)
}

/// `run`, when it has closed (with its reset run, if it was reset into one that runs).
async fn closed_run(
    client: &Client,
    run: RunRef,
    follow_resets: bool,
) -> anyhow::Result<Option<ClosedRun>> {
    let failed = |run_id: &str, status: tonic::Status| {
        anyhow!(
            "describing run {run_id} of {} failed: {}",
            run.workflow_id,
            status.message()
        )
    };
    let open = |status: Option<WorkflowExecutionStatus>| {
        matches!(
            status,
            Some(WorkflowExecutionStatus::Running | WorkflowExecutionStatus::Unspecified)
        )
    };
    let description = tea_runtime::run_description(client, &run.workflow_id, Some(&run.run_id))
        .await
        .map_err(|status| failed(&run.run_id, status))?;
    let status = description.as_ref().map(|description| {
        description
            .workflow_execution_info
            .as_ref()
            .map(|info| info.status())
            .unwrap_or(WorkflowExecutionStatus::Unspecified)
    });
    if open(status) {
        return Ok(None);
    }
    let reset = description
        .and_then(|description| description.workflow_extended_info)
        .map(|info| info.reset_run_id)
        .filter(|reset| follow_resets && !reset.is_empty() && *reset != run.run_id);
    let mut reset_to = None;
    if let Some(reset) = reset {
        let status = tea_runtime::run_status(client, &run.workflow_id, Some(&reset))
            .await
            .map_err(|status| failed(&reset, status))?;
        reset_to = open(status).then_some(reset);
    }
    Ok(Some(ClosedRun { run, reset_to }))
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
