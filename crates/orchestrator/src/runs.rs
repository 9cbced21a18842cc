//! The running `TriggerExternalWorkflow` runs as Temporal lists them: the compute names each
//! may own (what the sweeper spares and `compute delete` refuses to delete under a run), and a
//! handle on exactly one run (never a newer run under the same workflow ID). Shared by the
//! [`crate::operator`] commands and the [`crate::sweeper`].

use std::collections::HashMap;

use anyhow::Context;
use futures::StreamExt;
use tea_compute::naming;
use tea_contract::{MAX_COMPUTE_ATTEMPTS_LIMIT, TriggerExternalWorkflowClient, WORKFLOW_TYPE};
use temporalio_client::{Client, WorkflowExecutionInfo, WorkflowHandle, WorkflowListOptions};

/// The running `TriggerExternalWorkflow` runs, by every compute name each may own.
pub async fn running_runs_by_compute_name(
    client: &Client,
) -> anyhow::Result<HashMap<String, (String, String)>> {
    let query = format!("WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'");
    let mut runs = client.list_workflows(query, WorkflowListOptions::default());
    let mut names = HashMap::new();
    while let Some(run) = runs.next().await {
        let run = run.context("listing running workflow runs failed")?;
        for attempt in 1..=MAX_COMPUTE_ATTEMPTS_LIMIT {
            names.insert(
                naming::compute_name(run.run_id(), attempt),
                (run.id().to_owned(), run.run_id().to_owned()),
            );
        }
    }
    Ok(names)
}

/// A handle on exactly the run `run_id` of `workflow_id`: a cancel, describe or query through
/// it never reaches a newer run started under the same workflow ID.
pub fn run_handle(
    client: &Client,
    workflow_id: &str,
    run_id: &str,
) -> WorkflowHandle<Client, TriggerExternalWorkflowClient> {
    let info = WorkflowExecutionInfo::builder()
        .namespace(client.options().namespace.clone())
        .workflow_id(workflow_id)
        .run_id(run_id)
        .build();
    WorkflowHandle::new(client.clone(), info)
}
