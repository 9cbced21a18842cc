//! The `ComputeCapacity` workflow: the semaphore's loop, its signals and its liveness check.
//!
//! Each turn of the loop: notify the granted, continue-as-new if due, then wait for a signal,
//! the liveness check's timer or (with nothing held or queued) the idle timer. Every signal
//! wakes the loop, and a due check or idle end is never postponed by signals. Signals are
//! decoded here: a malformed one is refused with a warning and counted, never a failed
//! workflow task.

use std::{pin::Pin, time::Duration};

use futures::future::{Either, select};
use tea_runtime::Metrics;
use temporalio_common::{
    RetryPolicy, SignalDefinition, UntypedWorkflow, data_converters::RawValue,
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, CancellableFuture, ContinueAsNewOptions, SignalWorkflowOptions,
    SyncWorkflowContext, TimerResult, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextKey, WorkflowContextView, WorkflowResult,
    workflow_interceptors::{
        HandleSignalInput, HandleSignalResult, WorkflowInterceptor, WorkflowInterceptorConstructor,
        WorkflowInterceptorContext, WorkflowInterceptorFuture, WorkflowNext,
    },
};

use super::{
    AcquireRequest, CapacityActivities, CapacityState, GRANTED_SIGNAL, IDLE_FOR,
    MAX_HISTORY_EVENTS, RunRef, decode,
};

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
    /// Signals received by this run (refused ones too): each wakes the loop.
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
            s.started = true;
            for message in std::mem::take(&mut s.early) {
                match message {
                    Message::Acquire(request) => s.state.acquire(request),
                    Message::Release(run) => s.state.release(&run),
                }
            }
            s.state.grant();
        });
        serve(ctx).await
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

/// The loop. Each turn: notify the granted, continue-as-new
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
                drop_closed_runs(ctx).await;
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

/// The requesting run's `capacity-granted` signal, by name: the semaphore needs no code of the
/// workflows it serves.
struct CapacityGranted;

impl SignalDefinition for CapacityGranted {
    type Workflow = UntypedWorkflow;
    type Input = RawValue;

    fn name(&self) -> &str {
        GRANTED_SIGNAL
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
                    .signal(CapacityGranted, RawValue::new(Vec::new()), options)
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

/// The liveness check: drops holders and waiters whose run has closed; a run that was reset
/// is replaced by its reset run instead, so that a reset holder keeps its slot (no other run
/// is granted it while the reset run still holds the compute).
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
    let closed = ctx
        .execute_activity(CapacityActivities::check_runs, runs, options)
        .await;
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
