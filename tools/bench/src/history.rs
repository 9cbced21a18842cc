//! Reading a run's history: when each activity was scheduled, started and closed, and when the
//! run started and closed, as wall-clock times of the server (on this machine, the same clock as
//! ours).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tea_starter::RunHandle;
use temporalio_client::WorkflowFetchHistoryOptions;
use temporalio_common::protos::temporal::api::history::v1::{
    HistoryEvent, history_event::Attributes,
};

/// A protobuf timestamp as a wall-clock time.
pub fn system_time(seconds: i64, nanos: i32) -> Option<SystemTime> {
    let secs = u64::try_from(seconds).ok()?;
    let nanos = u32::try_from(nanos).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn event_time(event: &HistoryEvent) -> Option<SystemTime> {
    event
        .event_time
        .as_ref()
        .and_then(|t| system_time(t.seconds, t.nanos))
}

/// One activity execution (all its attempts) in a run.
#[derive(Clone, Debug)]
pub struct ActivityTimes {
    pub name: String,
    pub scheduled: SystemTime,
    pub started: Option<SystemTime>,
    /// Completed, failed, timed out or cancelled.
    pub closed: Option<SystemTime>,
    pub timed_out: bool,
}

/// What the benchmarks need from a run's history.
#[derive(Clone, Debug, Default)]
pub struct RunTimes {
    pub workflow_started: Option<SystemTime>,
    pub workflow_closed: Option<SystemTime>,
    /// In the order they were scheduled.
    pub activities: Vec<ActivityTimes>,
    /// Workflow tasks completed by the workflow-worker (round trips to it).
    pub workflow_tasks: usize,
}

impl RunTimes {
    /// The `n`-th (0-based) execution of activity `name`.
    pub fn activity(&self, name: &str, n: usize) -> Option<&ActivityTimes> {
        self.activities.iter().filter(|a| a.name == name).nth(n)
    }

    /// From `from` to `to` (`None` when either is missing or they are out of order).
    pub fn between(from: Option<SystemTime>, to: Option<SystemTime>) -> Option<Duration> {
        to?.duration_since(from?).ok()
    }
}

/// The run's history so far, reduced to [`RunTimes`].
pub async fn run_times(handle: &RunHandle) -> anyhow::Result<RunTimes> {
    let events = handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .context("fetching the run's history")?;
    Ok(reduce(&events))
}

fn reduce(events: &[HistoryEvent]) -> RunTimes {
    let mut times = RunTimes::default();
    // Scheduled event id -> index in `times.activities`.
    let mut by_id = std::collections::HashMap::new();
    for event in events {
        let Some(at) = event_time(event) else {
            continue;
        };
        let close = |id: i64, timed_out: bool, times: &mut RunTimes| {
            if let Some(&i) = by_id.get(&id) {
                let a: &mut ActivityTimes = &mut times.activities[i];
                a.closed = Some(at);
                a.timed_out = timed_out;
            }
        };
        match &event.attributes {
            Some(Attributes::WorkflowExecutionStartedEventAttributes(_)) => {
                times.workflow_started = Some(at);
            }
            Some(
                Attributes::WorkflowExecutionCompletedEventAttributes(_)
                | Attributes::WorkflowExecutionFailedEventAttributes(_)
                | Attributes::WorkflowExecutionCanceledEventAttributes(_)
                | Attributes::WorkflowExecutionTerminatedEventAttributes(_)
                | Attributes::WorkflowExecutionTimedOutEventAttributes(_),
            ) => times.workflow_closed = Some(at),
            Some(Attributes::WorkflowTaskCompletedEventAttributes(_)) => {
                times.workflow_tasks += 1;
            }
            Some(Attributes::ActivityTaskScheduledEventAttributes(a)) => {
                by_id.insert(event.event_id, times.activities.len());
                times.activities.push(ActivityTimes {
                    name: a
                        .activity_type
                        .as_ref()
                        .map(|t| t.name.clone())
                        .unwrap_or_default(),
                    scheduled: at,
                    started: None,
                    closed: None,
                    timed_out: false,
                });
            }
            Some(Attributes::ActivityTaskStartedEventAttributes(a)) => {
                if let Some(&i) = by_id.get(&a.scheduled_event_id) {
                    let activity: &mut ActivityTimes = &mut times.activities[i];
                    // Events are written when the attempt closes, with the time the last
                    // attempt started.
                    activity.started = Some(at);
                }
            }
            Some(Attributes::ActivityTaskCompletedEventAttributes(a)) => {
                close(a.scheduled_event_id, false, &mut times)
            }
            Some(Attributes::ActivityTaskFailedEventAttributes(a)) => {
                close(a.scheduled_event_id, false, &mut times)
            }
            Some(Attributes::ActivityTaskCanceledEventAttributes(a)) => {
                close(a.scheduled_event_id, false, &mut times)
            }
            Some(Attributes::ActivityTaskTimedOutEventAttributes(a)) => {
                close(a.scheduled_event_id, true, &mut times)
            }
            _ => {}
        }
    }
    times
}
