//! Reading a run's history: its events, the activities it scheduled (by type), how their
//! attempts ended.

use temporalio_client::{Client, WorkflowFetchHistoryOptions, WorkflowHandle};
use temporalio_common::{
    HasWorkflowDefinition,
    protos::temporal::api::history::v1::{
        ActivityTaskScheduledEventAttributes, HistoryEvent, history_event::Attributes,
    },
};

/// Every event of the history of `handle`'s run (any workflow) so far.
pub async fn events<W: HasWorkflowDefinition>(
    handle: &WorkflowHandle<Client, W>,
) -> Vec<HistoryEvent> {
    handle
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await
        .expect("the run's history")
}

/// The activities of type `activity_type` the run scheduled, in order: each scheduled event's
/// ID and attributes.
pub fn scheduled(
    events: &[HistoryEvent],
    activity_type: &str,
) -> Vec<(i64, ActivityTaskScheduledEventAttributes)> {
    events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(Attributes::ActivityTaskScheduledEventAttributes(a))
                if a.activity_type.as_ref().map(|t| t.name.as_str()) == Some(activity_type) =>
            {
                Some((e.event_id, a.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Activity attempts that timed out.
pub fn activity_timeouts(events: &[HistoryEvent]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(
                e.attributes,
                Some(Attributes::ActivityTaskTimedOutEventAttributes(_))
            )
        })
        .count()
}
